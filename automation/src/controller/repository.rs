//! ImageRepository: scan on the interval (or a reconcile request, or when
//! the image or the exclusion list changed, or nothing is stored), keep the
//! tags on disk, write Flux's status.

use super::conditions;
use super::store::StoredScan;
use super::{Context, Error, after_failure, key, requested_at, secrets, still_waiting};
use crate::api::{FINALIZER, ImageRepository, ImageRepositoryStatus, ResourceExt, ScanResult};
use crate::engine::EngineError;
use crate::registry::Reference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIND: &str = "ImageRepository";

pub async fn reconcile(repo: Arc<ImageRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&repo, &ctx).await;
    let reason = match &result {
        Ok((_, Some(e))) => Some(e.reason()),
        Err(_) => Some("StatusWriteFailed"),
        _ => None,
    };
    ctx.metrics.reconciled(KIND, started.elapsed(), reason);
    result.map(|(a, _)| a)
}

/// The time elapsed since a scan.
fn since(t: &Option<Time>) -> Option<Duration> {
    let t = t.as_ref()?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let d = now.duration_since(t.0);
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

async fn set_finalizers(
    ctx: &Context,
    repo: &ImageRepository,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<ImageRepository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": repo.resource_version(),
        }
    });
    let pp = PatchParams {
        field_manager: Some(super::FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch(&repo.name_any(), &pp, &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| Error::Kube {
            kind: KIND,
            object: key(repo),
            message: format!("cannot update the finalizers: {}", secrets::api_error(&e)),
        })
}

async fn reconcile_inner(
    repo: &ImageRepository,
    ctx: &Context,
) -> Result<(Action, Option<EngineError>), Error> {
    let (ns, name) = (repo.namespace().unwrap_or_default(), repo.name_any());
    let k = key(repo);
    let finalizers = repo.finalizers().to_vec();
    // Deleted: drop the stored tags, then let the object go.
    if repo.meta().deletion_timestamp.is_some() {
        ctx.tags.remove(&ns, &name);
        if finalizers.iter().any(|f| f == FINALIZER) {
            let rest = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
            set_finalizers(ctx, repo, rest).await?;
        }
        return Ok((Action::await_change(), None));
    }
    if !finalizers.iter().any(|f| f == FINALIZER) {
        let mut with = finalizers.clone();
        with.push(FINALIZER.to_string());
        // The patch brings the object back with the finalizer.
        set_finalizers(ctx, repo, with).await?;
        return Ok((Action::await_change(), None));
    }
    if repo.spec.suspend {
        return Ok((Action::await_change(), None));
    }
    if let Some(wait) = still_waiting(ctx, repo) {
        return Ok((wait, None));
    }
    let generation = repo.meta().generation.unwrap_or(0);
    let before = repo.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let requested = requested_at(repo);
    let interval = crate::api::parse_duration(&repo.spec.interval);
    let timeout = repo
        .spec
        .timeout
        .as_deref()
        .and_then(crate::api::parse_duration)
        .or(interval)
        .map(|t| t.max(Duration::from_secs(1)));
    let uid = repo.uid().unwrap_or_default();
    let stored = ctx.tags.load(&ns, &name, &uid);
    // What can never work as written.
    let checked = (|| -> Result<(Reference, Duration), EngineError> {
        crate::api::validate::check_image(&repo.spec.image).map_err(|m| {
            EngineError::Reference(crate::registry::ReferenceError {
                reference: repo.spec.image.clone(),
                reason: m,
            })
        })?;
        let reference = Reference::parse(&repo.spec.image)?;
        crate::policy::Exclusions::new(&repo.spec.exclusion_list)
            .map_err(|e| EngineError::InvalidPolicy(format!("spec.exclusionList: {e}")))?;
        let interval = interval.ok_or_else(|| {
            EngineError::InvalidPolicy(format!(
                "spec.interval {:?} is not a duration",
                repo.spec.interval
            ))
        })?;
        Ok((reference, interval))
    })();
    let (outcome, action) = match checked {
        Err(e) => {
            let a = after_failure(ctx, repo, &e, None);
            (Err(e), a)
        }
        Ok((reference, interval)) => {
            let canonical = reference.canonical_name();
            let elapsed = status
                .last_scan_result
                .as_ref()
                .and_then(|s| since(&s.scan_time));
            let due = stored.is_none()
                || status.last_scan_result.is_none()
                || (requested.is_some() && requested != status.last_handled_reconcile_at)
                || stored.as_ref().is_some_and(|s| {
                    s.image != repo.spec.image || s.exclusion_list != repo.spec.exclusion_list
                })
                || status.canonical_image_name.as_deref() != Some(canonical.as_str())
                || elapsed.is_none_or(|e| e >= interval)
                || !conditions::is_ready(&status.conditions)
                || before.observed_generation != generation;
            if !due {
                let left = interval.saturating_sub(elapsed.unwrap_or_default());
                (Ok(None), Action::requeue(left.max(Duration::from_secs(1))))
            } else {
                match scan(ctx, repo, timeout).await {
                    Ok(result) => {
                        let changed = stored.as_ref().map(|s| s.revision.as_str())
                            != Some(result.revision.as_str());
                        let save = ctx.tags.save(
                            &ns,
                            &name,
                            &StoredScan {
                                uid: uid.clone(),
                                image: repo.spec.image.clone(),
                                revision: result.revision.clone(),
                                exclusion_list: repo.spec.exclusion_list.clone(),
                                tags: result.tags.clone(),
                            },
                        );
                        match save {
                            Err(e) => {
                                let e = EngineError::Internal(format!(
                                    "the scanned tags cannot be stored in {}: {e}",
                                    ctx.options.storage.display()
                                ));
                                let a = after_failure(ctx, repo, &e, Some(interval));
                                (Err(e), a)
                            }
                            Ok(()) => {
                                status.last_scan_result = Some(ScanResult {
                                    revision: result.revision.clone(),
                                    tag_count: result.tags.len() as i64,
                                    scan_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                                    latest_tags: result.latest_tags.clone(),
                                });
                                status.canonical_image_name = Some(canonical);
                                status.observed_exclusion_list = repo.spec.exclusion_list.clone();
                                (Ok(Some((result, changed))), Action::requeue(interval))
                            }
                        }
                    }
                    Err(e) => {
                        let a = after_failure(ctx, repo, &e, Some(interval));
                        (Err(e), a)
                    }
                }
            }
        }
    };
    let error = match outcome {
        Ok(scanned) => {
            ctx.succeeded(&k);
            if let Some((result, changed)) = scanned {
                let message = format!(
                    "successful scan: found {} tags with checksum {}",
                    result.tags.len(),
                    result.revision
                );
                conditions::ready(&mut status.conditions, &message, generation);
                if changed {
                    let mut note = message.clone();
                    if result.invalid > 0 {
                        note.push_str(&format!(
                            "; {} tag(s) outside the tag grammar were dropped",
                            result.invalid
                        ));
                    }
                    ctx.event(repo, false, "Succeeded", note, "Scan").await;
                }
            }
            None
        }
        Err(e) => {
            conditions::failed(
                &mut status.conditions,
                e.reason(),
                &e.to_string(),
                e.is_transient(),
                generation,
            );
            ctx.event(repo, true, e.reason(), e.to_string(), "Scan")
                .await;
            Some(e)
        }
    };
    status.observed_generation = generation;
    if requested.is_some() {
        status.last_handled_reconcile_at = requested;
    }
    if status_changed(&before, &status) {
        let v = serde_json::to_value(&status).map_err(|e| Error::Kube {
            kind: KIND,
            object: k.clone(),
            message: e.to_string(),
        })?;
        ctx.patch_status(repo, KIND, v).await?;
    }
    Ok((action, error))
}

fn status_changed(a: &ImageRepositoryStatus, b: &ImageRepositoryStatus) -> bool {
    !conditions::same(&a.conditions, &b.conditions)
        || a.observed_generation != b.observed_generation
        || a.canonical_image_name != b.canonical_image_name
        || a.last_scan_result != b.last_scan_result
        || a.observed_exclusion_list != b.observed_exclusion_list
        || a.last_handled_reconcile_at != b.last_handled_reconcile_at
}

async fn scan(
    ctx: &Context,
    repo: &ImageRepository,
    timeout: Option<Duration>,
) -> Result<crate::registry::ScanResult, EngineError> {
    let started = Instant::now();
    let access = secrets::registry_access(&ctx.client, repo, timeout).await?;
    let result = ctx
        .engine
        .scan(&repo.spec.image, &repo.spec.exclusion_list, &access)
        .await;
    ctx.metrics
        .observe("imageauto_scan_duration_seconds", &[], started.elapsed());
    ctx.metrics.inc(
        "imageauto_scan_total",
        &[(
            "result",
            match &result {
                Ok(_) => "success",
                Err(e) => e.reason(),
            },
        )],
    );
    result
}
