//! Receiver (notification.toolkit.fluxcd.io/v1) objects whose resources are
//! ImageRepositories: their `status.webhookPath` and Ready, as Flux's
//! notification-controller writes them. Receivers for other kinds are left
//! to Flux. [`decide`] is the logic, pure; reading the token is the work.

use super::Context;
use super::conditions;
use super::decision::{Decision, Requeue, Step};
use super::receiver::{is_ours, webhook_path};
use super::shell::{Kind, requested_at};
use crate::api::{Receiver, ReceiverStatus, ResourceExt};
use crate::engine::EngineError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;

/// The token of a Receiver's Secret (`token`), or why there is none.
pub async fn token(client: &kube::Client, r: &Receiver) -> Result<String, EngineError> {
    let ns = r.namespace().unwrap_or_default();
    let name = &r.spec.secret_ref.name;
    let data = super::secrets::secret_data(client, &ns, name).await?;
    let t = data
        .get("token")
        .ok_or_else(|| EngineError::Source(format!("Secret {ns}/{name} has no key token")))?;
    String::from_utf8(t.clone())
        .map(|s| s.trim().to_string())
        .map_err(|_| EngineError::Source(format!("Secret {ns}/{name}: token is not text")))
}

/// What [`decide`] reads besides the object: the token, once read.
#[derive(Debug, Default)]
pub struct ReceiverSnapshot {
    pub token: Option<Result<String, EngineError>>,
}

/// The work: read the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadToken;

/// The whole logic of a Receiver's reconciliation.
pub fn decide(
    r: &Receiver,
    snap: &ReceiverSnapshot,
    now: &Time,
) -> Step<ReadToken, ReceiverStatus> {
    let before = r.status.clone().unwrap_or_default();
    if r.spec.suspend {
        return Step::Done(Decision::unchanged(before));
    }
    let Some(token) = &snap.token else {
        return Step::Work(ReadToken);
    };
    let generation = r.meta().generation.unwrap_or(0);
    let mut status = before;
    status.observed_generation = generation;
    if let Some(req) = requested_at(r) {
        status.last_handled_reconcile_at = Some(req);
    }
    match token {
        Ok(t) => {
            let path = webhook_path(t, &r.name_any(), &r.namespace().unwrap_or_default());
            conditions::ready(
                &mut status.conditions,
                &format!("Receiver initialized for path: {path}"),
                generation,
                now,
            );
            status.webhook_path = Some(path);
            Step::Done(Decision::unchanged(status))
        }
        Err(e) => {
            conditions::failed_with(&mut status.conditions, e, generation, now);
            Step::Done(Decision {
                status,
                notes: Vec::new(),
                requeue: Requeue::after_failure(e, None),
                failure: Some(e.reason()),
            })
        }
    }
}

impl Kind for Receiver {
    const KIND: &'static str = "Receiver";
    type Status = ReceiverStatus;
    type Snapshot = ReceiverSnapshot;
    type Work = ReadToken;

    fn status(&self) -> Option<&ReceiverStatus> {
        self.status.as_ref()
    }

    fn cache(ctx: &Context) -> Option<std::sync::Arc<super::watches::Shared<Self>>> {
        ctx.caches.receivers.clone()
    }

    /// Only Receivers whose every resource is an ImageRepository.
    fn handled(&self) -> bool {
        is_ours(self)
    }

    /// Flux's notification-controller owns the Receiver's lifecycle.
    fn finalized() -> bool {
        false
    }

    async fn snapshot(&self, _ctx: &Context) -> ReceiverSnapshot {
        ReceiverSnapshot::default()
    }

    fn decide(&self, snap: &ReceiverSnapshot, now: &Time) -> Step<ReadToken, ReceiverStatus> {
        decide(self, snap, now)
    }

    async fn work(&self, ctx: &Context, snap: &mut ReceiverSnapshot, _work: ReadToken) {
        snap.token = Some(token(&ctx.client, self).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::at;

    fn receiver() -> Receiver {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1",
            "kind": "Receiver",
            "metadata": {"name": "reg", "namespace": "apps", "generation": 2},
            "spec": {
                "type": "generic",
                "secretRef": {"name": "token"},
                "resources": [{"kind": "ImageRepository", "name": "web"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_path_comes_from_the_token() {
        let r = receiver();
        assert_eq!(
            decide(&r, &ReceiverSnapshot::default(), &at(0)),
            Step::Work(ReadToken)
        );
        let snap = ReceiverSnapshot {
            token: Some(Ok("s3cret".into())),
        };
        let Step::Done(d) = decide(&r, &snap, &at(0)) else {
            panic!("a decision")
        };
        let path = webhook_path("s3cret", "reg", "apps");
        assert_eq!(d.status.webhook_path.as_deref(), Some(path.as_str()));
        assert_eq!(d.status.observed_generation, 2);
        assert!(conditions::is_ready(&d.status.conditions));
        assert_eq!(d.requeue, Requeue::Never);
        let snap = ReceiverSnapshot {
            token: Some(Err(EngineError::Source(
                "Secret apps/token not found".into(),
            ))),
        };
        let Step::Done(d) = decide(&r, &snap, &at(0)) else {
            panic!("a decision")
        };
        assert_eq!(
            (d.failure, d.requeue),
            (Some("SourceManagerFailed"), Requeue::Backoff)
        );
    }
}
