//! ImageUpdateAutomation: on its interval, and when a selected policy's
//! latest image changes, apply the policies' images to the GitRepository's
//! files under `update.path`, commit and push through the engine (the
//! repository's cache, its lock, the push retries), and write Flux's status.

use super::{Context, Error, after_failure, conditions, key, requested_at, secrets, still_waiting};
use crate::api::plan;
use crate::api::{
    GitRepository, ImagePolicy, ImageRef, ImageUpdateAutomation, ImageUpdateAutomationStatus,
    ResourceExt,
};
use crate::engine::EngineError;
use crate::engine::automation::AutomationJob;
use crate::engine::update::CommitRequest;
use crate::git::Signature;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, Resource};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIND: &str = "ImageUpdateAutomation";

pub async fn reconcile(a: Arc<ImageUpdateAutomation>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&a, &ctx).await;
    let reason = match &result {
        Ok((_, Some(e))) => Some(e.reason()),
        Err(_) => Some("StatusWriteFailed"),
        _ => None,
    };
    ctx.metrics.reconciled(KIND, started.elapsed(), reason);
    result.map(|(a, _)| a)
}

fn since(t: &Option<Time>) -> Option<Duration> {
    let t = t.as_ref()?;
    let d = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

/// What the run needs from the cluster, or why it cannot start.
async fn prepare(
    ctx: &Context,
    a: &ImageUpdateAutomation,
) -> Result<(AutomationJob, BTreeMap<String, ImageRef>), EngineError> {
    let ns = a.namespace().unwrap_or_default();
    let source_ref = &a.spec.source_ref;
    if !source_ref.kind.is_empty() && source_ref.kind != "GitRepository" {
        return Err(EngineError::Plan(plan::PlanError::Source {
            field: "spec.sourceRef.kind",
            message: format!(
                "{:?} is not supported: the source is a GitRepository",
                source_ref.kind
            ),
        }));
    }
    let sns = source_ref
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ns.clone());
    if sns != ns && !ctx.options.cross_namespace_refs {
        return Err(EngineError::AccessDenied(format!(
            "spec.sourceRef: GitRepository {sns}/{} is in another namespace, and cross-namespace references are switched off (--no-cross-namespace-refs)",
            source_ref.name
        )));
    }
    let api: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &sns);
    let source = api
        .get_opt(&source_ref.name)
        .await
        .map_err(|e| {
            EngineError::Source(format!(
                "GitRepository {sns}/{} cannot be read: {}",
                source_ref.name,
                secrets::api_error(&e)
            ))
        })?
        .ok_or_else(|| {
            EngineError::Source(format!("GitRepository {sns}/{} not found", source_ref.name))
        })?;
    let target = plan::push_target(&a.spec, Some(&source.spec))?;
    let path = plan::update_path(&a.spec)?;
    // Read now, not from a cache: the change that triggered this run may
    // not have reached the cache yet.
    let papi: Api<ImagePolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let policies = papi
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| {
            EngineError::Source(format!(
                "the ImagePolicies of {ns} cannot be listed: {}",
                secrets::api_error(&e)
            ))
        })?
        .items;
    let selected = plan::selected_policies(&a.spec, &ns, &policies)?;
    let images: BTreeMap<String, ImageRef> = selected
        .into_iter()
        .filter_map(|p| {
            let latest = p.status.as_ref()?.latest_ref.clone()?;
            Some((format!("{ns}:{}", p.name_any()), latest))
        })
        .collect();
    let timeout = source
        .spec
        .timeout
        .as_deref()
        .and_then(crate::api::parse_duration);
    let auth = secrets::git_auth(&ctx.client, &source, timeout).await?;
    // push_target refuses a spec without `git`.
    let commit = a.spec.git.as_ref().map(|g| &g.commit).ok_or_else(|| {
        EngineError::Plan(plan::PlanError::Source {
            field: "spec.git",
            message: "not set".into(),
        })
    })?;
    let signer = match &commit.signing_key {
        Some(k) => Some(secrets::signer(&ctx.client, &ctx.engine, &ns, k).await?),
        None => None,
    };
    let author = Signature {
        name: commit
            .author
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| commit.author.email.clone()),
        email: commit.author.email.clone(),
    };
    let job = AutomationJob {
        cache_dir: ctx.git_cache(),
        url: source.spec.url.clone(),
        auth,
        target,
        commit: CommitRequest {
            path,
            author,
            template: commit.message_template.clone(),
            values: commit.message_template_values.clone().unwrap_or_default(),
            automation: (ns, a.name_any()),
            signer,
        },
        images: images.clone(),
        dry_run: false,
        index_markers: ctx.options.markers.is_some(),
    };
    Ok((job, images))
}

async fn reconcile_inner(
    a: &ImageUpdateAutomation,
    ctx: &Context,
) -> Result<(Action, Option<EngineError>), Error> {
    if a.spec.suspend {
        return Ok((Action::await_change(), None));
    }
    if let Some(wait) = still_waiting(ctx, a) {
        return Ok((wait, None));
    }
    let k = key(a);
    let generation = a.meta().generation.unwrap_or(0);
    let requested = requested_at(a);
    let before = a.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let interval = crate::api::parse_duration(&a.spec.interval)
        .unwrap_or(Duration::from_secs(600))
        .max(Duration::from_secs(1));
    let (action, error) = match prepare(ctx, a).await {
        Err(e) => {
            let action = after_failure(ctx, a, &e, Some(interval));
            (action, Some(e))
        }
        Ok((job, images)) => {
            // Nothing new since the last successful run: wait for the
            // interval (Flux checks the remote head then).
            let elapsed = since(&before.last_automation_run_time);
            let unchanged = before.observed_policies.as_ref() == Some(&images)
                && conditions::is_ready(&before.conditions)
                && before.observed_generation == generation
                && (requested.is_none() || requested == before.last_handled_reconcile_at)
                && elapsed.is_some_and(|e| e < interval);
            if unchanged {
                let left = interval.saturating_sub(elapsed.unwrap_or_default());
                return Ok((Action::requeue(left.max(Duration::from_secs(1))), None));
            }
            let branch = job.target.branch.clone();
            match ctx.engine.update(job).await {
                Ok(result) => {
                    ctx.succeeded(&k);
                    if let Some(index) = &ctx.options.markers {
                        index.set(
                            (a.namespace().unwrap_or_default(), a.name_any()),
                            result.markers.clone(),
                        );
                    }
                    let now = Time(k8s_openapi::jiff::Timestamp::now());
                    status.last_automation_run_time = Some(now.clone());
                    status.observed_policies = Some(images);
                    status.observed_source_revision = Some(result.source_revision.clone());
                    let message = match (&result.commit, result.pushed) {
                        (Some(c), true) => {
                            status.last_push_commit = Some(c.clone());
                            status.last_push_time = Some(now);
                            ctx.metrics
                                .inc("imageauto_git_push_total", &[("result", "pushed")]);
                            let changes: usize = result.files.iter().map(|f| f.changes.len()).sum();
                            let note = format!(
                                "Committed and pushed commit {c} to branch {branch}: {changes} change(s) in {} file(s)",
                                result.files.len()
                            );
                            ctx.event(a, false, "Succeeded", note, "Push").await;
                            format!("pushed commit {} to branch {branch}", &c[..c.len().min(12)])
                        }
                        _ => "repository up-to-date".to_string(),
                    };
                    conditions::ready(&mut status.conditions, &message, generation);
                    (Action::requeue(interval), None)
                }
                Err(e) => {
                    if matches!(e, EngineError::Git(_)) {
                        ctx.metrics
                            .inc("imageauto_git_push_total", &[("result", "failed")]);
                    }
                    status.last_automation_run_time =
                        Some(Time(k8s_openapi::jiff::Timestamp::now()));
                    let action = after_failure(ctx, a, &e, Some(interval));
                    (action, Some(e))
                }
            }
        }
    };
    if let Some(e) = &error {
        conditions::failed(
            &mut status.conditions,
            e.reason(),
            &e.to_string(),
            e.is_transient(),
            generation,
        );
        if before.conditions.iter().all(|c| c.message != e.to_string()) {
            ctx.event(a, true, e.reason(), e.to_string(), "Reconcile")
                .await;
        }
    }
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
        ctx.patch_status(a, KIND, v).await?;
    }
    Ok((action, error))
}

fn changed(a: &ImageUpdateAutomationStatus, b: &ImageUpdateAutomationStatus) -> bool {
    !conditions::same(&a.conditions, &b.conditions)
        || a.observed_generation != b.observed_generation
        || a.last_automation_run_time != b.last_automation_run_time
        || a.last_push_commit != b.last_push_commit
        || a.observed_policies != b.observed_policies
        || a.observed_source_revision != b.observed_source_revision
        || a.last_handled_reconcile_at != b.last_handled_reconcile_at
}
