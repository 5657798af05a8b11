//! A Receiver's status as notification-controller's `ReceiverReconciler`
//! writes it (`internal/controller/receiver_controller.go`): the
//! configuration checks that stall it (`InvalidCELExpression`,
//! `ValidationFailed`), the token read from its Secret as stored
//! (`TokenNotFound` and no `webhookPath` without one), `webhookPath` and
//! `Receiver initialized for path: …`, the events, and a new look every
//! `spec.interval`. [`decide`] is the logic, pure; reading the Secret is
//! the work.

use super::cel::{ClaimsProcessor, Expression, Output};
use super::{filter_variables, is_ours, webhook_path};
use crate::api::{BadDuration, Receiver, ReceiverStatus, ReceiverType, ResourceExt};
use crate::controller::Context;
use crate::controller::conditions::{self, End};
use crate::controller::decision::{Decision, Note, Requeue, Step, go_duration};
use crate::controller::shell::{Kind, requested_at};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Resource};
use std::collections::BTreeMap;
use std::time::Duration;

/// Flux's reasons.
pub const TOKEN_NOT_FOUND: &str = "TokenNotFound";
pub const INVALID_CEL_EXPRESSION: &str = "InvalidCELExpression";
pub const VALIDATION_FAILED: &str = "ValidationFailed";
/// `meta.FailedReason`: the event of a reconciliation that returned an
/// error.
pub const FAILED: &str = "Failed";
/// Flux's Reconciling message while it reads the token.
pub const IN_PROGRESS: &str = "Reconciliation in progress";
const TERMINAL: &str = "Reconciliation failed terminally due to configuration error";

/// A Secret's data, or Flux's message for why it cannot be read
/// (`secrets "NAME" not found`).
pub async fn secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get(name).await {
        Ok(mut s) => Ok(crate::controller::secrets::data_of(&mut s)),
        Err(kube::Error::Api(s)) => Err(s.message),
        Err(e) => Err(e.to_string()),
    }
}

/// Flux's `token`: the Secret's `token` as stored (empty for a Receiver
/// without a Secret: generic-oidc), or its message.
pub async fn token(client: &kube::Client, r: &Receiver) -> Result<Vec<u8>, String> {
    let Some(sr) = &r.spec.secret_ref else {
        return Ok(Vec::new());
    };
    let ns = r.namespace().unwrap_or_default();
    let data = secret(client, &ns, &sr.name).await.map_err(|e| {
        format!(
            "unable to read token from secret '{ns}/{}' error: {e}",
            sr.name
        )
    })?;
    data.get("token").cloned().ok_or_else(|| {
        format!(
            "invalid '{ns}/{}' secret data: required fields 'token'",
            sr.name
        )
    })
}

/// The configuration checks Flux makes before the token, each a terminal
/// failure: the CEL filters, the generic-oidc invariants of its CRD, the
/// providers (`receiver_claims.go`). `(reason, message)`.
pub fn check_spec(r: &Receiver) -> Result<Duration, (&'static str, String)> {
    let interval = r
        .spec
        .interval()
        .map_err(|e| (BadDuration::REASON, e.to_string()))?;
    let vars = filter_variables(r);
    if !r.spec.resource_filter.is_empty() {
        Expression::compile(&r.spec.resource_filter, vars, Output::Bool).map_err(|e| {
            (
                INVALID_CEL_EXPRESSION,
                format!("invalid resourceFilter expression: {e}"),
            )
        })?;
    }
    for (i, x) in r.spec.resources.iter().enumerate() {
        if x.filter.is_empty() {
            continue;
        }
        Expression::compile(&x.filter, vars, Output::Bool).map_err(|e| {
            (
                INVALID_CEL_EXPRESSION,
                format!(
                    "invalid filter expression for resources[{i}] (kind={:?}, name={:?}): {e}",
                    x.kind, x.name
                ),
            )
        })?;
    }
    let oidc = r.spec.receiver_type == ReceiverType::GenericOidc;
    let invariant = if oidc && r.spec.oidc_providers.is_empty() {
        Some("generic-oidc receiver requires at least one oidcProvider")
    } else if !oidc && !r.spec.oidc_providers.is_empty() {
        Some("oidcProviders can only be set when type is generic-oidc")
    } else if oidc && r.spec.secret_ref.is_some() {
        Some("secretRef cannot be set when type is generic-oidc")
    } else if !oidc && r.spec.secret_ref.is_none() {
        Some("secretRef is required when type is not generic-oidc")
    } else {
        None
    };
    if let Some(m) = invariant {
        return Err((VALIDATION_FAILED, m.to_string()));
    }
    if r.spec.receiver_type == ReceiverType::Unknown {
        return Err((
            VALIDATION_FAILED,
            "the receiver type is not one imageauto serves".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in r.spec.oidc_providers.iter().enumerate() {
        let url = &p.issuer_url;
        let fail = |m: String| Err((VALIDATION_FAILED, m));
        if url.is_empty() {
            return fail(format!("oidcProviders[{i}]: issuerURL is required"));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return fail(format!(
                "oidcProviders[{i}]: issuerURL {url:?} must start with http:// or https://"
            ));
        }
        if !seen.insert(url.clone()) {
            return fail(format!("oidcProviders[{i}]: duplicate issuerURL {url:?}"));
        }
        if p.validations.is_empty() {
            return fail(format!(
                "oidcProviders[{i}] (issuerURL={url:?}): at least one validation is required; without validations any caller able to obtain a token from this issuer can trigger the Receiver"
            ));
        }
        for (j, v) in p.variables.iter().enumerate() {
            if v.name.is_empty() {
                return fail(format!(
                    "oidcProviders[{i}] (issuerURL={url:?}): variables[{j}]: name is required"
                ));
            }
            if v.expression.is_empty() {
                return fail(format!(
                    "oidcProviders[{i}] (issuerURL={url:?}): variables[{j}] (name={:?}): expression is required",
                    v.name
                ));
            }
        }
        for (j, v) in p.validations.iter().enumerate() {
            if v.expression.is_empty() {
                return fail(format!(
                    "oidcProviders[{i}] (issuerURL={url:?}): validations[{j}]: expression is required"
                ));
            }
            if v.message.is_empty() {
                return fail(format!(
                    "oidcProviders[{i}] (issuerURL={url:?}): validations[{j}]: message is required"
                ));
            }
        }
    }
    for (i, p) in r.spec.oidc_providers.iter().enumerate() {
        ClaimsProcessor::new(p).map_err(|e| {
            (
                INVALID_CEL_EXPRESSION,
                format!("oidcProviders[{i}] (issuerURL={:?}): {e}", p.issuer_url),
            )
        })?;
    }
    Ok(interval)
}

/// What [`decide`] reads besides the object: the token, once read.
#[derive(Debug, Default)]
pub struct ReceiverSnapshot {
    pub token: Option<Result<Vec<u8>, String>>,
}

/// The work: read the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadToken;

/// Flux's deferred `patch`: `lastHandledReconcileAt`; Ready=True drops
/// Reconciling and moves `observedGeneration`.
fn patch(r: &Receiver, status: &mut ReceiverStatus) {
    if let Some(req) = requested_at(r) {
        status.last_handled_reconcile_at = Some(req);
    }
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::READY && c.status == "True");
    if ready {
        conditions::remove(&mut status.conditions, conditions::RECONCILING);
        status.observed_generation = r.meta().generation.unwrap_or(0);
    }
}

/// The whole logic of a Receiver's reconciliation.
pub fn decide(
    r: &Receiver,
    snap: &ReceiverSnapshot,
    now: &Time,
) -> Step<ReadToken, ReceiverStatus> {
    let mut status = r.status.clone().unwrap_or_default();
    let generation = r.meta().generation.unwrap_or(0);
    if r.spec.suspend {
        patch(r, &mut status);
        return Step::Done(Decision::unchanged(status));
    }
    let every = match check_spec(r) {
        Ok(interval) => interval,
        Err((reason, e)) => {
            let message = format!("{TERMINAL}: {e}");
            conditions::finish(
                &mut status.conditions,
                End::Stalled(reason, &message),
                generation,
                now,
            );
            status.observed_generation = generation;
            patch(r, &mut status);
            return Step::Done(Decision {
                status,
                notes: vec![Note::warning(reason, message, "Reconcile")],
                requeue: Requeue::Never,
                failure: Some(reason),
            });
        }
    };
    let token = match (&snap.token, &r.spec.secret_ref) {
        (Some(t), _) => t.clone(),
        (None, None) => Ok(Vec::new()),
        (None, Some(_)) => return Step::Work(ReadToken),
    };
    conditions::remove(&mut status.conditions, conditions::STALLED);
    conditions::set(
        &mut status.conditions,
        conditions::RECONCILING,
        true,
        conditions::PROGRESSING,
        IN_PROGRESS,
        generation,
        now,
    );
    match token {
        Ok(t) => {
            let path = webhook_path(&t, &r.name_any(), &r.namespace().unwrap_or_default());
            let message = format!("Receiver initialized for path: {path}");
            conditions::finish(
                &mut status.conditions,
                End::Ready(&message),
                generation,
                now,
            );
            status.webhook_path = Some(path);
            patch(r, &mut status);
            Step::Done(Decision {
                status,
                notes: vec![Note::normal(
                    conditions::SUCCEEDED,
                    format!(
                        "Reconciliation finished, next run in {}",
                        go_duration(every)
                    ),
                    "Reconcile",
                )],
                requeue: Requeue::every(every),
                failure: None,
            })
        }
        Err(e) => {
            conditions::finish(
                &mut status.conditions,
                End::Retried(TOKEN_NOT_FOUND, &e),
                generation,
                now,
            );
            status.webhook_path = None;
            patch(r, &mut status);
            Step::Done(Decision {
                status,
                notes: vec![Note::warning(FAILED, e, "Reconcile")],
                requeue: Requeue::Backoff,
                failure: Some(TOKEN_NOT_FOUND),
            })
        }
    }
}

impl Kind for Receiver {
    const KIND: &'static str = "Receiver";
    type Snapshot = ReceiverSnapshot;
    type Work = ReadToken;

    fn cache(ctx: &Context) -> Option<std::sync::Arc<crate::controller::watches::Shared<Self>>> {
        ctx.caches.receivers.get()
    }

    /// Only Receivers whose every resource is an ImageRepository.
    fn handled(&self) -> bool {
        is_ours(self)
    }

    /// Flux's notification-controller owns the Receiver's lifecycle (and
    /// its finalizer).
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

    fn receiver(spec: serde_json::Value) -> Receiver {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1",
            "kind": "Receiver",
            "metadata": {"name": "reg", "namespace": "apps", "generation": 2},
            "spec": spec
        }))
        .unwrap()
    }

    fn generic() -> Receiver {
        receiver(serde_json::json!({
            "type": "generic", "secretRef": {"name": "token"},
            "resources": [{"kind": "ImageRepository", "name": "web"}]
        }))
    }

    fn kinds(s: &ReceiverStatus) -> Vec<(&str, &str, &str, &str)> {
        s.conditions
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.message.as_str(),
                )
            })
            .collect()
    }

    /// internal/controller/receiver_controller.go `reconcile` and `patch`.
    #[test]
    fn the_path_comes_from_the_token_as_stored() {
        let r = generic();
        assert_eq!(
            decide(&r, &ReceiverSnapshot::default(), &at(0)),
            Step::Work(ReadToken)
        );
        let snap = ReceiverSnapshot {
            token: Some(Ok(b"s3cret\n".to_vec())),
        };
        let Step::Done(d) = decide(&r, &snap, &at(0)) else {
            panic!("a decision")
        };
        let path = webhook_path(b"s3cret\n", "reg", "apps");
        assert_eq!(d.status.webhook_path.as_deref(), Some(path.as_str()));
        assert_eq!(d.status.observed_generation, 2);
        let msg = format!("Receiver initialized for path: {path}");
        assert_eq!(
            kinds(&d.status),
            [("Ready", "True", "Succeeded", msg.as_str())]
        );
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(600)));
        assert_eq!(
            d.notes,
            [Note::normal(
                "Succeeded",
                "Reconciliation finished, next run in 10m0s",
                "Reconcile"
            )]
        );
        // The Secret gone: TokenNotFound, no path, retried.
        let mut r2 = r.clone();
        r2.status = Some(d.status.clone());
        let e = "unable to read token from secret 'apps/token' error: secrets \"token\" not found";
        let snap = ReceiverSnapshot {
            token: Some(Err(e.into())),
        };
        let Step::Done(d) = decide(&r2, &snap, &at(5)) else {
            panic!("a decision")
        };
        assert_eq!(d.status.webhook_path, None);
        assert_eq!(
            kinds(&d.status),
            [
                (
                    "Reconciling",
                    "True",
                    "ProgressingWithRetry",
                    "Reconciliation in progress"
                ),
                ("Ready", "False", "TokenNotFound", e)
            ]
        );
        assert_eq!(d.status.observed_generation, 2, "kept from before");
        assert_eq!(
            (d.failure, d.requeue),
            (Some("TokenNotFound"), Requeue::Backoff)
        );
        assert_eq!(d.notes, [Note::warning("Failed", e, "Reconcile")]);
    }

    #[test]
    fn bad_configurations_stall_as_fluxs_mark_terminal() {
        let r = receiver(serde_json::json!({
            "type": "generic", "secretRef": {"name": "token"},
            "resourceFilter": "res.metadata.name",
            "resources": [{"kind": "ImageRepository", "name": "web"}]
        }));
        let Step::Done(d) = decide(&r, &ReceiverSnapshot::default(), &at(0)) else {
            panic!("a decision")
        };
        let m = "Reconciliation failed terminally due to configuration error: invalid resourceFilter expression: CEL expression output type mismatch: expected bool, got dyn";
        assert_eq!(
            kinds(&d.status),
            [
                ("Stalled", "True", "InvalidCELExpression", m),
                ("Ready", "False", "InvalidCELExpression", m)
            ]
        );
        assert_eq!(d.status.observed_generation, 2);
        assert_eq!(d.requeue, Requeue::Never);
        let r = receiver(serde_json::json!({
            "type": "generic-oidc", "secretRef": {"name": "token"},
            "oidcProviders": [{"issuerURL": "https://x", "validations": [{"expression": "true", "message": "m"}]}],
            "resources": [{"kind": "ImageRepository", "name": "web"}]
        }));
        let Step::Done(d) = decide(&r, &ReceiverSnapshot::default(), &at(0)) else {
            panic!("a decision")
        };
        assert_eq!(
            d.status.conditions[1].message,
            "Reconciliation failed terminally due to configuration error: secretRef cannot be set when type is generic-oidc"
        );
        // generic-oidc without a Secret: the path of an empty token.
        let r = receiver(serde_json::json!({
            "type": "generic-oidc",
            "oidcProviders": [{"issuerURL": "https://x", "validations": [{"expression": "claims.sub == 'a'", "message": "m"}]}],
            "resources": [{"kind": "ImageRepository", "name": "web"}]
        }));
        let Step::Done(d) = decide(&r, &ReceiverSnapshot::default(), &at(0)) else {
            panic!("a decision")
        };
        assert_eq!(
            d.status.webhook_path,
            Some(webhook_path(b"", "reg", "apps"))
        );
        // A filter reading claims on another type.
        let r = receiver(serde_json::json!({
            "type": "generic", "secretRef": {"name": "token"},
            "resources": [{"kind": "ImageRepository", "name": "web", "filter": "claims.sub == 'a'"}]
        }));
        let Step::Done(d) = decide(&r, &ReceiverSnapshot::default(), &at(0)) else {
            panic!("a decision")
        };
        assert!(
            d.status.conditions[1].message.starts_with(
                "Reconciliation failed terminally due to configuration error: invalid filter expression for resources[0] (kind=\"ImageRepository\", name=\"web\"): failed to parse the CEL expression"
            ),
            "{}",
            d.status.conditions[1].message
        );
    }

    #[test]
    fn an_unknown_type_is_never_ready() {
        let r = receiver(serde_json::json!({
            "type": "carrier-pigeon", "secretRef": {"name": "token"},
            "resources": [{"kind": "ImageRepository", "name": "web"}]
        }));
        assert_eq!(r.spec.receiver_type, ReceiverType::Unknown);
        let snap = ReceiverSnapshot {
            token: Some(Ok(b"t".to_vec())),
        };
        let Step::Done(d) = decide(&r, &snap, &at(0)) else {
            panic!("a decision")
        };
        assert!(!conditions::is_ready(&d.status.conditions));
        assert_eq!(d.status.conditions[0].reason, "ValidationFailed");
        assert_eq!(d.status.webhook_path, None);
    }

    #[test]
    fn a_suspended_receiver_is_left_as_it_is() {
        let mut r = generic();
        r.spec.suspend = true;
        let Step::Done(d) = decide(&r, &ReceiverSnapshot::default(), &at(0)) else {
            panic!("a decision")
        };
        assert_eq!(d.status, ReceiverStatus::default());
        assert!(d.notes.is_empty());
    }
}
