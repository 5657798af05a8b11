//! ImagePolicy: the latest image of its ImageRepository's stored tags (and
//! its digest, as `digestReflectionPolicy` says), re-evaluated when the
//! repository's scan changes (a watch) and on `interval` with `Always`.

use super::{Context, Error, after_failure, conditions, key, requested_at, secrets, still_waiting};
use crate::api::plan;
use crate::api::{
    DigestReflectionPolicy, ImagePolicy, ImagePolicyStatus, ImageRef, ResourceExt, compile_policy,
};
use crate::engine::{EngineError, RegistryAccess};
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::Action;
use kube::{Api, Resource};
use std::sync::Arc;
use std::time::Instant;

const KIND: &str = "ImagePolicy";

pub async fn reconcile(policy: Arc<ImagePolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&policy, &ctx).await;
    let reason = match &result {
        Ok((_, Some(e))) => Some(e.reason()),
        Err(_) => Some("StatusWriteFailed"),
        _ => None,
    };
    ctx.metrics.reconciled(KIND, started.elapsed(), reason);
    result.map(|(a, _)| a)
}

/// The labels of a namespace (for `accessFrom`).
async fn namespace_labels(
    ctx: &Context,
    ns: &str,
) -> Result<std::collections::BTreeMap<String, String>, EngineError> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(n)) => Ok(n.metadata.labels.unwrap_or_default()),
        Ok(None) => Ok(Default::default()),
        Err(e) => Err(EngineError::Source(format!(
            "Namespace {ns} cannot be read: {}",
            secrets::api_error(&e)
        ))),
    }
}

/// The latest image, or why there is none (and whether to wait for a
/// dependency rather than back off).
async fn evaluate(
    ctx: &Context,
    policy: &ImagePolicy,
    previous: Option<&ImageRef>,
) -> Result<ImageRef, EngineError> {
    let ns = policy.namespace().unwrap_or_default();
    compile_policy(&policy.spec).map_err(|errs| {
        EngineError::InvalidPolicy(
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let (rns, rname) = plan::repository_of(policy);
    if rns != ns && !ctx.options.cross_namespace_refs {
        return Err(EngineError::AccessDenied(format!(
            "spec.imageRepositoryRef: ImageRepository {rns}/{rname} is in another namespace, and cross-namespace references are switched off (--no-cross-namespace-refs)"
        )));
    }
    // Read now, not from a cache: the scan that triggered this evaluation
    // may not have reached the cache yet.
    let rapi: Api<crate::api::ImageRepository> = Api::namespaced(ctx.client.clone(), &rns);
    let repo = rapi
        .get_opt(&rname)
        .await
        .map_err(|e| {
            EngineError::Source(format!(
                "ImageRepository {rns}/{rname} cannot be read: {}",
                secrets::api_error(&e)
            ))
        })?
        .ok_or_else(|| {
            EngineError::DependencyNotReady(format!("ImageRepository {rns}/{rname} not found"))
        })?;
    if rns != ns {
        let labels = namespace_labels(ctx, &ns).await?;
        if !plan::access_allowed(&repo, &ns, &labels, true) {
            return Err(EngineError::AccessDenied(format!(
                "ImageRepository {rns}/{rname} does not allow policies from namespace {ns} (its spec.accessFrom)"
            )));
        }
    }
    let scanned = repo
        .status
        .as_ref()
        .is_some_and(|s| s.last_scan_result.is_some());
    let stored = ctx
        .tags
        .load(&rns, &rname, &repo.uid().unwrap_or_default())
        .filter(|s| s.image == repo.spec.image);
    let Some(stored) = stored.filter(|_| scanned) else {
        return Err(EngineError::DependencyNotReady(format!(
            "ImageRepository {rns}/{rname} has no scan yet"
        )));
    };
    let access = if policy.spec.digest_reflection_policy == DigestReflectionPolicy::Never {
        RegistryAccess::default()
    } else {
        let timeout = repo
            .spec
            .timeout
            .as_deref()
            .and_then(crate::api::parse_duration)
            .or_else(|| crate::api::parse_duration(&repo.spec.interval));
        secrets::registry_access(&ctx.client, &repo, timeout).await?
    };
    ctx.engine
        .latest(
            &policy.spec,
            &repo.spec.image,
            &stored.tags,
            &access,
            previous,
        )
        .await
}

fn describe(r: &ImageRef) -> String {
    format!("{}:{}", r.name, r.tag)
}

async fn reconcile_inner(
    policy: &ImagePolicy,
    ctx: &Context,
) -> Result<(Action, Option<EngineError>), Error> {
    if policy.spec.suspend {
        return Ok((Action::await_change(), None));
    }
    if let Some(wait) = still_waiting(ctx, policy) {
        return Ok((wait, None));
    }
    let k = key(policy);
    let generation = policy.meta().generation.unwrap_or(0);
    let requested = requested_at(policy);
    let before = policy.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let interval = policy
        .spec
        .interval
        .as_deref()
        .and_then(crate::api::parse_duration)
        .filter(|_| policy.spec.digest_reflection_policy == DigestReflectionPolicy::Always);
    let (action, error) = match evaluate(ctx, policy, before.latest_ref.as_ref()).await {
        Ok(latest) => {
            ctx.succeeded(&k);
            let mut message = format!(
                "Latest image tag for {} resolved to {}",
                latest.name, latest.tag
            );
            if let Some(d) = &latest.digest {
                message.push_str(&format!(" with digest {d}"));
            }
            if before.latest_ref.as_ref() != Some(&latest) {
                status.observed_previous_ref = before.latest_ref.clone();
                let note = match &before.latest_ref {
                    Some(old) => format!(
                        "Latest image tag for {} updated from {} to {}",
                        latest.name, old.tag, latest.tag
                    ),
                    None => message.clone(),
                };
                ctx.event(policy, false, "Succeeded", note, "Evaluate")
                    .await;
            }
            if let Some(prev) = &status.observed_previous_ref {
                message.push_str(&format!(" (previously {})", describe(prev)));
            }
            status.latest_ref = Some(latest);
            conditions::ready(&mut status.conditions, &message, generation);
            let action = match interval {
                Some(i) => Action::requeue(i),
                None => Action::await_change(),
            };
            (action, None)
        }
        Err(e) => {
            conditions::failed(
                &mut status.conditions,
                e.reason(),
                &e.to_string(),
                e.is_transient(),
                generation,
            );
            let action = match &e {
                // Waiting for the repository: the watch brings it back, and
                // a periodic retry covers what no watch sees.
                EngineError::DependencyNotReady(_) => {
                    Action::requeue(super::jitter(ctx.options.requeue_dependency))
                }
                _ => after_failure(ctx, policy, &e, None),
            };
            if before.conditions.iter().all(|c| c.message != e.to_string()) {
                ctx.event(policy, true, e.reason(), e.to_string(), "Evaluate")
                    .await;
            }
            (action, Some(e))
        }
    };
    status.observed_generation = generation;
    if requested.is_some() {
        status.last_handled_reconcile_at = requested;
    }
    if changed(&before, &status) {
        let v = serde_json::to_value(&status).map_err(|e| Error::Kube {
            kind: KIND,
            object: k,
            message: e.to_string(),
        })?;
        ctx.patch_status(policy, KIND, v).await?;
    }
    Ok((action, error))
}

fn changed(a: &ImagePolicyStatus, b: &ImagePolicyStatus) -> bool {
    !conditions::same(&a.conditions, &b.conditions)
        || a.observed_generation != b.observed_generation
        || a.latest_ref != b.latest_ref
        || a.observed_previous_ref != b.observed_previous_ref
        || a.last_handled_reconcile_at != b.last_handled_reconcile_at
}
