//! ImageRepository: scan on the interval (or a reconcile request, or when
//! the image or the exclusion list changed, or nothing is stored), keep the
//! tags on disk, write Flux's status. [`decide`] is the whole logic, pure;
//! the impl of [`Kind`] gathers its snapshot and does its work.

use super::Context;
use super::conditions;
use super::decision::{Decision, Note, Requeue, Step};
use super::shell::{Kind, elapsed, requested_at};
use super::store::StoredScan;
use crate::api::{ImageRepository, ImageRepositoryStatus, ResourceExt, ScanResult};
use crate::engine::EngineError;
use crate::registry::Reference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the last scan on disk was made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredMeta {
    pub image: String,
    pub exclusion_list: Vec<String>,
    pub revision: String,
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    pub revision: String,
    pub tag_count: usize,
    pub latest_tags: Vec<String>,
    /// Tags outside the tag grammar, dropped.
    pub invalid: usize,
}

/// What [`decide`] reads besides the object.
#[derive(Debug, Default)]
pub struct RepositorySnapshot {
    /// The longest a scan may take (`serve --max-scan-timeout`), whatever
    /// `spec.timeout` or the interval say; none when `None`.
    pub max_timeout: Option<Duration>,
    /// The last scan stored for this object (same uid).
    pub stored: Option<StoredMeta>,
    /// The scan made in this reconciliation, once made (and stored).
    pub scan: Option<Result<Scanned, EngineError>>,
}

/// The work: scan the registry (and store the tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanWork {
    /// The whole scan's timeout (`spec.timeout`, else the interval).
    pub timeout: Option<Duration>,
}

/// What can never work as written: the reference, the exclusion list, the
/// interval.
fn check(repo: &ImageRepository) -> Result<(Reference, Duration), EngineError> {
    crate::api::validate::check_image(&repo.spec.image).map_err(|m| {
        EngineError::Reference(crate::registry::ReferenceError {
            reference: repo.spec.image.clone(),
            reason: m,
        })
    })?;
    let reference = Reference::parse(&repo.spec.image)?;
    crate::policy::Exclusions::new(&repo.spec.exclusion_list)
        .map_err(|e| EngineError::InvalidPolicy(format!("spec.exclusionList: {e}")))?;
    let interval = crate::api::parse_duration(&repo.spec.interval).ok_or_else(|| {
        EngineError::InvalidPolicy(format!(
            "spec.interval {:?} is not a duration",
            repo.spec.interval
        ))
    })?;
    Ok((reference, interval))
}

/// The scan's timeout: `spec.timeout`, else the interval, at least 1 s
/// and at most `max`.
pub fn timeout(repo: &ImageRepository, max: Option<Duration>) -> Option<Duration> {
    let t = repo
        .spec
        .timeout
        .as_deref()
        .and_then(crate::api::parse_duration)
        .or_else(|| crate::api::parse_duration(&repo.spec.interval))
        .map(|t| t.max(Duration::from_secs(1)));
    match (t, max) {
        (Some(t), Some(m)) => Some(t.min(m)),
        (None, m) => m,
        (t, None) => t,
    }
}

/// How soon a scan whose registry has no free slot is tried again.
pub const BUSY_RETRY: Duration = Duration::from_secs(5);

/// The whole logic of an ImageRepository's reconciliation.
pub fn decide(
    repo: &ImageRepository,
    snap: &RepositorySnapshot,
    now: &Time,
) -> Step<ScanWork, ImageRepositoryStatus> {
    let before = repo.status.clone().unwrap_or_default();
    if repo.spec.suspend {
        return Step::Done(Decision::unchanged(before));
    }
    let generation = repo.meta().generation.unwrap_or(0);
    let requested = requested_at(repo);
    let mut status = before.clone();
    status.observed_generation = generation;
    if requested.is_some() {
        status.last_handled_reconcile_at.clone_from(&requested);
    }
    let fail = |mut status: ImageRepositoryStatus, e: &EngineError, interval: Option<Duration>| {
        conditions::failed_with(&mut status.conditions, e, generation, now);
        Step::Done(Decision {
            status,
            notes: vec![Note::warning(e.reason(), e.to_string(), "Scan")],
            requeue: Requeue::after_failure(e, interval),
            failure: Some(e.reason()),
        })
    };
    let (reference, interval) = match check(repo) {
        Ok(c) => c,
        Err(e) => return fail(status, &e, None),
    };
    let canonical = reference.canonical_name();
    let Some(scan) = &snap.scan else {
        let since = before
            .last_scan_result
            .as_ref()
            .and_then(|s| elapsed(&s.scan_time, now));
        let due = snap.stored.is_none()
            || before.last_scan_result.is_none()
            || (requested.is_some() && requested != before.last_handled_reconcile_at)
            || snap.stored.as_ref().is_some_and(|s| {
                s.image != repo.spec.image || s.exclusion_list != repo.spec.exclusion_list
            })
            || before.canonical_image_name.as_deref() != Some(canonical.as_str())
            || since.is_none_or(|e| e >= interval)
            || !conditions::is_ready(&before.conditions)
            || before.observed_generation != generation;
        if due {
            return Step::Work(ScanWork {
                timeout: timeout(repo, snap.max_timeout),
            });
        }
        let left = interval.saturating_sub(since.unwrap_or_default());
        return Step::Done(Decision {
            requeue: if interval.is_zero() {
                Requeue::Never
            } else {
                Requeue::After(left.max(Duration::from_secs(1)))
            },
            ..Decision::unchanged(before)
        });
    };
    match scan {
        // The host's slots are all taken: nothing is known, nothing written.
        Err(EngineError::Busy(_)) => Step::Done(Decision {
            requeue: Requeue::Around(BUSY_RETRY),
            ..Decision::unchanged(before)
        }),
        Err(e) => fail(status, e, Some(interval)),
        Ok(result) => {
            let changed =
                snap.stored.as_ref().map(|s| s.revision.as_str()) != Some(result.revision.as_str());
            status.last_scan_result = Some(ScanResult {
                revision: result.revision.clone(),
                tag_count: result.tag_count as i64,
                scan_time: Some(now.clone()),
                latest_tags: result.latest_tags.clone(),
            });
            status.canonical_image_name = Some(canonical);
            status.observed_exclusion_list = repo.spec.exclusion_list.clone();
            let message = format!(
                "successful scan: found {} tags with checksum {}",
                result.tag_count, result.revision
            );
            conditions::ready(&mut status.conditions, &message, generation, now);
            let mut notes = Vec::new();
            if changed {
                let mut note = message;
                if result.invalid > 0 {
                    note.push_str(&format!(
                        "; {} tag(s) outside the tag grammar were dropped",
                        result.invalid
                    ));
                }
                notes.push(Note::normal(conditions::SUCCEEDED, note, "Scan"));
            }
            Step::Done(Decision {
                status,
                notes,
                requeue: Requeue::every(interval),
                failure: None,
            })
        }
    }
}

impl Kind for ImageRepository {
    const KIND: &'static str = "ImageRepository";
    type Status = ImageRepositoryStatus;
    type Snapshot = RepositorySnapshot;
    type Work = ScanWork;

    fn status(&self) -> Option<&ImageRepositoryStatus> {
        self.status.as_ref()
    }

    fn cache(ctx: &Context) -> Option<Arc<super::watches::Shared<Self>>> {
        Some(ctx.caches.repositories.clone())
    }

    async fn snapshot(&self, ctx: &Context) -> RepositorySnapshot {
        let (ns, name, uid) = (
            self.namespace().unwrap_or_default(),
            self.name_any(),
            self.uid().unwrap_or_default(),
        );
        let tags = ctx.tags.clone();
        let stored = ctx
            .engine
            .blocking(move || tags.load(&ns, &name, &uid))
            .await
            .ok()
            .flatten()
            .map(|s| StoredMeta {
                image: s.image,
                exclusion_list: s.exclusion_list,
                revision: s.revision,
            });
        RepositorySnapshot {
            max_timeout: Some(ctx.options.max_scan_timeout),
            stored,
            scan: None,
        }
    }

    fn decide(
        &self,
        snap: &RepositorySnapshot,
        now: &Time,
    ) -> Step<ScanWork, ImageRepositoryStatus> {
        decide(self, snap, now)
    }

    async fn work(&self, ctx: &Context, snap: &mut RepositorySnapshot, work: ScanWork) {
        snap.scan = Some(scan(ctx, self, work.timeout).await);
    }

    async fn cleanup(&self, ctx: &Context) {
        let (ns, name) = (self.namespace().unwrap_or_default(), self.name_any());
        let tags = ctx.tags.clone();
        let _ = ctx.engine.blocking(move || tags.remove(&ns, &name)).await;
    }
}

/// Scans the registry and stores the tags.
async fn scan(
    ctx: &Context,
    repo: &ImageRepository,
    timeout: Option<Duration>,
) -> Result<Scanned, EngineError> {
    let started = Instant::now();
    let result = async {
        let access = super::secrets::registry_access(&ctx.client, repo, timeout).await?;
        ctx.engine
            .scan_with(
                &repo.spec.image,
                &repo.spec.exclusion_list,
                &access,
                crate::engine::Slot::Now,
            )
            .await
    }
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
    let result = result?;
    let (ns, name) = (repo.namespace().unwrap_or_default(), repo.name_any());
    let stored = StoredScan {
        uid: repo.uid().unwrap_or_default(),
        image: repo.spec.image.clone(),
        revision: result.revision.clone(),
        exclusion_list: repo.spec.exclusion_list.clone(),
        tags: result.tags.clone(),
    };
    let tags = ctx.tags.clone();
    ctx.engine
        .blocking(move || tags.save(&ns, &name, &stored))
        .await?
        .map_err(|e| {
            EngineError::Internal(format!(
                "the scanned tags cannot be stored in {}: {e}",
                ctx.options.storage.display()
            ))
        })?;
    Ok(Scanned {
        revision: result.revision,
        tag_count: result.tags.len(),
        latest_tags: result.latest_tags,
        invalid: result.invalid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{at, repository};

    fn done(step: Step<ScanWork, ImageRepositoryStatus>) -> Decision<ImageRepositoryStatus> {
        match step {
            Step::Done(d) => d,
            Step::Work(w) => panic!("expected a decision, got work {w:?}"),
        }
    }

    fn scanned(revision: &str, count: usize) -> Scanned {
        Scanned {
            revision: revision.into(),
            tag_count: count,
            latest_tags: vec!["2.0.0".into(), "1.0.0".into()],
            invalid: 0,
        }
    }

    /// The status after a successful scan at `t`.
    fn after_scan(
        repo: &ImageRepository,
        t: &Time,
        stored: Option<StoredMeta>,
    ) -> ImageRepositoryStatus {
        let snap = RepositorySnapshot {
            stored,
            scan: Some(Ok(scanned("r1", 2))),
            ..Default::default()
        };
        done(decide(repo, &snap, t)).status
    }

    #[test]
    fn a_new_generation_scans_and_reports_flux_s_status() {
        let repo = repository("ghcr.io/org/web", "5m", 1);
        let t = at(0);
        assert_eq!(
            decide(&repo, &RepositorySnapshot::default(), &t),
            Step::Work(ScanWork {
                timeout: Some(Duration::from_secs(300))
            })
        );
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                stored: None,
                scan: Some(Ok(scanned("r1", 2))),
                ..Default::default()
            },
            &t,
        ));
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(300)));
        assert_eq!(d.failure, None);
        let s = &d.status;
        assert_eq!(s.observed_generation, 1);
        assert_eq!(s.canonical_image_name.as_deref(), Some("ghcr.io/org/web"));
        let r = s.last_scan_result.as_ref().unwrap();
        assert_eq!((r.tag_count, r.revision.as_str()), (2, "r1"));
        assert_eq!(r.scan_time.as_ref(), Some(&t));
        let ready = &s.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "True", "Succeeded")
        );
        assert_eq!(
            ready.message,
            "successful scan: found 2 tags with checksum r1"
        );
        // A new revision is an event; the same one is not.
        assert_eq!(d.notes.len(), 1);
        let stored = Some(StoredMeta {
            image: "ghcr.io/org/web".into(),
            exclusion_list: repo.spec.exclusion_list.clone(),
            revision: "r1".into(),
        });
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                stored,
                scan: Some(Ok(scanned("r1", 2))),
                ..Default::default()
            },
            &t,
        ));
        assert!(d.notes.is_empty());
    }

    #[test]
    fn nothing_to_do_until_the_interval_or_a_request() {
        let mut repo = repository("ghcr.io/org/web", "5m", 1);
        let stored = StoredMeta {
            image: "ghcr.io/org/web".into(),
            exclusion_list: repo.spec.exclusion_list.clone(),
            revision: "r1".into(),
        };
        repo.status = Some(after_scan(&repo, &at(0), Some(stored.clone())));
        let snap = RepositorySnapshot {
            stored: Some(stored.clone()),
            scan: None,
            ..Default::default()
        };
        // One minute later: what is left of the interval, and no write.
        let d = done(decide(&repo, &snap, &at(60)));
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(240)));
        assert_eq!(Some(&d.status), repo.status.as_ref());
        assert!(d.notes.is_empty());
        // The interval elapsed: scan.
        assert!(matches!(decide(&repo, &snap, &at(300)), Step::Work(_)));
        // A reconcile request: scan now, and record it.
        repo.annotations_mut().insert(
            crate::api::RECONCILE_REQUEST_ANNOTATION.into(),
            "now-1".into(),
        );
        assert!(matches!(decide(&repo, &snap, &at(60)), Step::Work(_)));
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                stored: Some(stored.clone()),
                scan: Some(Ok(scanned("r1", 2))),
                ..Default::default()
            },
            &at(60),
        ));
        assert_eq!(d.status.last_handled_reconcile_at.as_deref(), Some("now-1"));
        repo.status = Some(d.status);
        assert!(matches!(decide(&repo, &snap, &at(61)), Step::Done(_)));
        // Another image than the stored tags': scan.
        let mut moved = repo.clone();
        moved.spec.image = "ghcr.io/org/api".into();
        assert!(matches!(decide(&moved, &snap, &at(61)), Step::Work(_)));
        // A new generation: scan.
        repo.meta_mut().generation = Some(2);
        assert!(matches!(decide(&repo, &snap, &at(61)), Step::Work(_)));
    }

    #[test]
    fn suspended_does_nothing() {
        let mut repo = repository("ghcr.io/org/web", "5m", 1);
        repo.spec.suspend = true;
        let d = done(decide(&repo, &RepositorySnapshot::default(), &at(0)));
        assert_eq!(d, Decision::unchanged(ImageRepositoryStatus::default()));
    }

    #[test]
    fn what_can_never_work_stalls_and_what_may_pass_is_retried() {
        let repo = repository("https://ghcr.io/org/web", "5m", 3);
        let d = done(decide(&repo, &RepositorySnapshot::default(), &at(0)));
        assert_eq!(d.requeue, Requeue::Never);
        assert_eq!(d.failure, Some("ImageURLInvalid"));
        let types: Vec<(&str, &str)> = d
            .status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, [("Ready", "False"), ("Stalled", "True")]);
        assert_eq!(d.status.observed_generation, 3);
        assert!(d.notes[0].warning);
        // A registry that refuses the credentials: retried with backoff.
        let repo = repository("ghcr.io/org/web", "5m", 1);
        let e = EngineError::Registry(crate::registry::RegistryError::Unauthorized {
            registry: "ghcr.io".into(),
            repository: "org/web".into(),
            status: 401,
            realm: None,
            hint: String::new(),
        });
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                stored: None,
                scan: Some(Err(e)),
                ..Default::default()
            },
            &at(0),
        ));
        assert_eq!(d.requeue, Requeue::Backoff);
        assert_eq!(d.failure, Some("AuthenticationFailed"));
        assert!(d.status.conditions.iter().any(|c| c.type_ == "Reconciling"));
        assert!(d.status.last_scan_result.is_none());
    }

    #[test]
    fn the_scan_timeout_is_bounded_and_a_busy_host_changes_nothing() {
        let repo = repository("ghcr.io/org/web", "999999h", 1);
        let snap = RepositorySnapshot {
            max_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        assert_eq!(
            decide(&repo, &snap, &at(0)),
            Step::Work(ScanWork {
                timeout: Some(Duration::from_secs(120))
            })
        );
        let mut short = repo.clone();
        short.spec.timeout = Some("30s".into());
        assert_eq!(
            timeout(&short, Some(Duration::from_secs(120))),
            Some(Duration::from_secs(30))
        );
        let busy = RepositorySnapshot {
            scan: Some(Err(EngineError::Busy("ghcr.io".into()))),
            ..Default::default()
        };
        let d = done(decide(&repo, &busy, &at(0)));
        assert_eq!(
            d,
            Decision {
                requeue: Requeue::Around(BUSY_RETRY),
                ..Decision::unchanged(ImageRepositoryStatus::default())
            }
        );
    }

    #[test]
    fn an_interval_of_zero_makes_no_loop() {
        let repo = repository("ghcr.io/org/web", "0s", 1);
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                stored: None,
                scan: Some(Ok(scanned("r1", 2))),
                ..Default::default()
            },
            &at(0),
        ));
        assert_eq!(d.requeue, Requeue::Never);
    }
}
