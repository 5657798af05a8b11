//! Receiver (notification.toolkit.fluxcd.io/v1) objects whose resources are
//! ImageRepositories: their `status.webhookPath` and Ready, as Flux's
//! notification-controller writes them. Receivers for other kinds are left
//! to Flux.

use super::receiver::{is_ours, webhook_path};
use super::{Context, Error, after_failure, conditions, key, requested_at, secrets, still_waiting};
use crate::api::{Receiver, ReceiverStatus, ResourceExt};
use crate::engine::EngineError;
use kube::Resource;
use kube::runtime::controller::Action;
use std::sync::Arc;

const KIND: &str = "Receiver";

/// The token of a Receiver's Secret (`token`), or why there is none.
pub async fn token(ctx_client: &kube::Client, r: &Receiver) -> Result<String, EngineError> {
    let ns = r.namespace().unwrap_or_default();
    let name = &r.spec.secret_ref.name;
    let data = secrets::secret_data(ctx_client, &ns, name).await?;
    let t = data
        .get("token")
        .ok_or_else(|| EngineError::Source(format!("Secret {ns}/{name} has no key token")))?;
    String::from_utf8(t.clone())
        .map(|s| s.trim().to_string())
        .map_err(|_| EngineError::Source(format!("Secret {ns}/{name}: token is not text")))
}

pub async fn reconcile(r: Arc<Receiver>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !is_ours(&r) || r.spec.suspend {
        return Ok(Action::await_change());
    }
    if let Some(wait) = still_waiting(&ctx, r.as_ref()) {
        return Ok(wait);
    }
    let k = key(r.as_ref());
    let generation = r.meta().generation.unwrap_or(0);
    let before = r.status.clone().unwrap_or_default();
    let mut status: ReceiverStatus = before.clone();
    let action = match token(&ctx.client, &r).await {
        Ok(t) => {
            ctx.succeeded(&k);
            let path = webhook_path(&t, &r.name_any(), &r.namespace().unwrap_or_default());
            conditions::ready(
                &mut status.conditions,
                &format!("Receiver initialized for path: {path}"),
                generation,
            );
            status.webhook_path = Some(path);
            Action::await_change()
        }
        Err(e) => {
            conditions::failed(
                &mut status.conditions,
                e.reason(),
                &e.to_string(),
                e.is_transient(),
                generation,
            );
            after_failure(&ctx, r.as_ref(), &e, None)
        }
    };
    status.observed_generation = generation;
    if let Some(req) = requested_at(r.as_ref()) {
        status.last_handled_reconcile_at = Some(req);
    }
    let changed = !conditions::same(&before.conditions, &status.conditions)
        || before.webhook_path != status.webhook_path
        || before.observed_generation != status.observed_generation
        || before.last_handled_reconcile_at != status.last_handled_reconcile_at;
    if changed {
        let v = serde_json::to_value(&status).map_err(|e| Error::Kube {
            kind: KIND,
            object: k.clone(),
            message: e.to_string(),
        })?;
        ctx.patch_status(r.as_ref(), KIND, v).await?;
    }
    Ok(action)
}
