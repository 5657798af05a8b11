//! ImageRepository: scan on the interval (or a reconcile request, or when
//! the image or the exclusion list changed, or nothing is stored), keep the
//! tags on disk, write Flux's status. [`decide`] is the whole logic, pure;
//! the impl of [`Kind`] gathers its snapshot and does its work.

use super::Context;
use super::conditions;
use super::decision::{Decision, Requeue, Step, go_duration, notify};
use super::shell::{Kind, elapsed, requested_at};
use super::store::StoredScan;
use crate::api::{BadDuration, ImageRepository, ImageRepositoryStatus, ResourceExt, ScanResult};
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
    pub tag_count: usize,
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

/// Why a scan did not happen or failed.
#[derive(Debug)]
pub enum ScanFailure {
    /// The credentials, certificates or proxy could not be read (Flux:
    /// `AuthenticationFailed`, `failed to configure authentication
    /// options: …`).
    Access(EngineError),
    /// The registry's answer, or none (Flux: `ReadOperationFailed`, `scan
    /// failed: …`).
    Scan(EngineError),
    /// Every slot of the registry host is taken: tried again shortly.
    Busy,
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
    pub scan: Option<Result<Scanned, ScanFailure>>,
}

/// The work: scan the registry (and store the tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanWork {
    /// The whole scan's timeout (`spec.timeout`, else the interval).
    pub timeout: Option<Duration>,
}

/// The exclusion list in force: `spec.exclusionList`, or Flux's default
/// `^.*\.sig$` when it is empty.
pub fn exclusion_list(repo: &ImageRepository) -> Vec<String> {
    if repo.spec.exclusion_list.is_empty() {
        vec!["^.*\\.sig$".to_string()]
    } else {
        repo.spec.exclusion_list.clone()
    }
}

/// The scan's timeout ([`ImageRepositorySpec::scan_timeout`]), at most
/// `max`.
///
/// [`ImageRepositorySpec::scan_timeout`]: crate::api::ImageRepositorySpec::scan_timeout
pub fn bounded(timeout: Duration, max: Option<Duration>) -> Duration {
    max.map_or(timeout, |m| timeout.min(m))
}

/// How long a scan waits for a slot of its registry's host.
pub const SLOT_WAIT: Duration = Duration::from_secs(2);

/// How soon a scan whose registry had no free slot is tried again.
pub const BUSY_RETRY: Duration = Duration::from_secs(3);

/// Flux's reasons for a scan now (`shouldScan`), or how long until the
/// next one.
fn should_scan(
    repo: &ImageRepository,
    snap: &RepositorySnapshot,
    canonical: &str,
    interval: Duration,
    now: &Time,
) -> Result<&'static str, Duration> {
    let status = repo.status.clone().unwrap_or_default();
    let Some(last) = &status.last_scan_result else {
        return Ok("first scan");
    };
    if let Some(r) = requested_at(repo)
        && Some(&r) != status.last_handled_reconcile_at.as_ref()
    {
        return Ok("reconcile requested");
    }
    if status.canonical_image_name.as_deref() != Some(canonical) {
        return Ok("new image name");
    }
    let mut want = exclusion_list(repo);
    let mut seen = status.observed_exclusion_list.clone();
    want.sort();
    seen.sort();
    want.dedup();
    seen.dedup();
    if want != seen {
        return Ok("updated exclusion list");
    }
    // The tags on disk are this object's, of this image and list.
    let stored = snap
        .stored
        .as_ref()
        .filter(|s| s.image == repo.spec.image && s.exclusion_list == repo.spec.exclusion_list);
    if stored.is_none_or(|s| s.tag_count == 0) {
        return Ok("no tags in database");
    }
    let since = elapsed(&last.scan_time, now).unwrap_or(interval);
    let when = interval.saturating_sub(since);
    if when < Duration::from_secs(1) {
        return Ok("triggered by interval");
    }
    Err(when)
}

/// The whole logic of an ImageRepository's reconciliation, as Flux's
/// image-reflector-controller does it
/// (`internal/controller/imagerepository_controller.go`).
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
    let c = &mut status.conditions;
    conditions::progress(c, conditions::IN_PROGRESS, false, generation, now);
    if generation != before.observed_generation {
        let m = format!(
            "processing object: new generation {} -> {generation}",
            before.observed_generation
        );
        conditions::progress(c, &m, false, generation, now);
    }
    let finish = |mut status: ImageRepositoryStatus,
                  end: conditions::End<'_>,
                  requeue: Requeue,
                  quiet: &str| {
        if conditions::finish(&mut status.conditions, end, generation, now) {
            status.observed_generation = generation;
        }
        if requested.is_some() {
            status.last_handled_reconcile_at.clone_from(&requested);
        }
        let failure = match end {
            conditions::End::Ready(_) => None,
            conditions::End::Stalled(r, _) | conditions::End::Retried(r, _) => Some(r),
        };
        let note = notify(&before.conditions, &status.conditions, None, quiet, "Scan");
        Step::Done(Decision {
            status,
            notes: vec![note],
            requeue,
            failure,
        })
    };
    let reference = match crate::api::validate::check_image(&repo.spec.image)
        .map_err(|m| crate::registry::ReferenceError {
            reference: repo.spec.image.clone(),
            reason: m,
        })
        .and_then(|()| Reference::parse(&repo.spec.image))
    {
        Ok(r) => r,
        Err(e) => {
            let m = e.to_string();
            return finish(
                status,
                conditions::End::Stalled("ImageURLInvalid", &m),
                Requeue::Never,
                "",
            );
        }
    };
    let durations = repo
        .spec
        .interval()
        .and_then(|i| Ok((i, repo.spec.scan_timeout()?)));
    let (interval, scan_timeout) = match durations {
        Ok(d) => d,
        Err(e) => {
            return finish(
                status,
                conditions::End::Stalled(BadDuration::REASON, &e.to_string()),
                Requeue::Never,
                "",
            );
        }
    };
    let canonical = reference.canonical_name();
    let Some(scan) = &snap.scan else {
        return match should_scan(repo, snap, &canonical, interval, now) {
            Ok(reason) => {
                // An empty store turns Ready Unknown, so that the policies
                // waiting on it see a transition.
                let drift = reason == "no tags in database";
                conditions::progress(
                    &mut status.conditions,
                    &format!("scanning: {reason}"),
                    drift,
                    generation,
                    now,
                );
                Step::Persist(
                    status,
                    ScanWork {
                        timeout: Some(bounded(scan_timeout, snap.max_timeout)),
                    },
                )
            }
            Err(when) => {
                // Nothing to scan yet: Ready as the last scan left it.
                let last = before.last_scan_result.clone().unwrap_or_default();
                let message = format!(
                    "successful scan: found {} tags with checksum {}",
                    last.tag_count, last.revision
                );
                let quiet = format!(
                    "no change in repository configuration since last scan, next scan in {}",
                    go_duration(when)
                );
                let requeue = if interval.is_zero() {
                    Requeue::Never
                } else {
                    Requeue::After(when)
                };
                finish(status, conditions::End::Ready(&message), requeue, &quiet)
            }
        };
    };
    match scan {
        Err(ScanFailure::Busy) => Step::Done(Decision {
            requeue: Requeue::Around(BUSY_RETRY),
            ..Decision::unchanged(before)
        }),
        Err(ScanFailure::Access(e)) => {
            let m = format!("failed to configure authentication options: {e}");
            finish(
                status,
                conditions::End::Retried("AuthenticationFailed", &m),
                Requeue::Backoff,
                "",
            )
        }
        Err(ScanFailure::Scan(e)) => {
            let m = format!("scan failed: {e}");
            finish(
                status,
                conditions::End::Retried("ReadOperationFailed", &m),
                Requeue::Backoff,
                "",
            )
        }
        Ok(result) => {
            let unchanged = before
                .last_scan_result
                .as_ref()
                .is_some_and(|l| l.revision == result.revision);
            status.last_scan_result = Some(ScanResult {
                revision: result.revision.clone(),
                tag_count: result.tag_count as i64,
                scan_time: Some(now.clone()),
                latest_tags: result.latest_tags.clone(),
            });
            status.canonical_image_name = Some(canonical);
            status.observed_exclusion_list = exclusion_list(repo);
            let message = format!(
                "successful scan: found {} tags with checksum {}",
                result.tag_count, result.revision
            );
            let next = format!("next scan in {}", go_duration(interval));
            let quiet = if unchanged {
                format!("tags did not change, {next}")
            } else {
                format!("successful scan, {next}")
            };
            finish(
                status,
                conditions::End::Ready(&message),
                Requeue::every(interval),
                &quiet,
            )
        }
    }
}

impl Kind for ImageRepository {
    const KIND: &'static str = "ImageRepository";
    type Snapshot = RepositorySnapshot;
    type Work = ScanWork;

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
                tag_count: s.tags.len(),
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
) -> Result<Scanned, ScanFailure> {
    let access = super::secrets::registry_access(&ctx.client, &ctx.cloud, repo, timeout)
        .await
        .map_err(ScanFailure::Access)?;
    let started = Instant::now();
    let result = ctx
        .engine
        .scan_with(
            &repo.spec.image,
            &exclusion_list(repo),
            &access,
            crate::engine::Slot::Within(super::repository::SLOT_WAIT),
        )
        .await;
    if matches!(result, Err(EngineError::Busy(_))) {
        return Err(ScanFailure::Busy);
    }
    ctx.metrics.scanned(
        match &result {
            Ok(_) => "success",
            Err(e) => e.reason(),
        },
        started.elapsed(),
    );
    let result = result.map_err(ScanFailure::Scan)?;
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
        .await
        .map_err(ScanFailure::Scan)?
        .map_err(|e| {
            ScanFailure::Scan(EngineError::Internal(format!(
                "failed to set tags in {}: {e}",
                ctx.options.storage.display()
            )))
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
    //! Each case pins what image-reflector-controller's
    //! `internal/controller/imagerepository_controller.go` (`reconcile`,
    //! `shouldScan`, `notify`) and fluxcd/pkg's
    //! `runtime/reconcile/result.go` write for it.
    use super::*;
    use crate::controller::decision::EventSeverity;
    use crate::controller::testing::{at, repository};

    fn done(step: Step<ScanWork, ImageRepositoryStatus>) -> Decision<ImageRepositoryStatus> {
        match step {
            Step::Done(d) => d,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    fn persisted(step: Step<ScanWork, ImageRepositoryStatus>) -> (ImageRepositoryStatus, ScanWork) {
        match step {
            Step::Persist(s, w) => (s, w),
            other => panic!("expected the progress and a scan, got {other:?}"),
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

    fn stored(repo: &ImageRepository, revision: &str, count: usize) -> Option<StoredMeta> {
        Some(StoredMeta {
            image: repo.spec.image.clone(),
            exclusion_list: repo.spec.exclusion_list.clone(),
            revision: revision.into(),
            tag_count: count,
        })
    }

    fn conditions(s: &ImageRepositoryStatus) -> Vec<(&str, &str, &str, &str)> {
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

    /// The object after a successful scan at `t`.
    fn after_scan(mut repo: ImageRepository, t: &Time) -> ImageRepository {
        let snap = RepositorySnapshot {
            scan: Some(Ok(scanned("r1", 2))),
            ..Default::default()
        };
        repo.status = Some(done(decide(&repo, &snap, t)).status);
        repo
    }

    #[test]
    fn a_new_object_is_scanned_with_fluxs_progress_then_status() {
        let repo = repository("ghcr.io/org/web", "5m", 1);
        let (progress, work) = persisted(decide(&repo, &RepositorySnapshot::default(), &at(0)));
        assert_eq!(work.timeout, Some(Duration::from_secs(300)));
        assert_eq!(
            conditions(&progress),
            [
                ("Reconciling", "True", "Progressing", "scanning: first scan"),
                ("Ready", "Unknown", "Progressing", "scanning: first scan")
            ]
        );
        assert_eq!(progress.observed_generation, -1);
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                scan: Some(Ok(scanned("r1", 2))),
                ..Default::default()
            },
            &at(0),
        ));
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(300)));
        assert_eq!(d.failure, None);
        let s = &d.status;
        assert_eq!(s.observed_generation, 1);
        assert_eq!(s.canonical_image_name.as_deref(), Some("ghcr.io/org/web"));
        // An empty exclusion list is Flux's default.
        assert_eq!(s.observed_exclusion_list, ["^.*\\.sig$"]);
        let r = s.last_scan_result.as_ref().unwrap();
        assert_eq!((r.tag_count, r.revision.as_str()), (2, "r1"));
        assert_eq!(
            conditions(s),
            [(
                "Ready",
                "True",
                "Succeeded",
                "successful scan: found 2 tags with checksum r1"
            )]
        );
        // Became ready: a Normal event with the Ready message.
        assert_eq!(d.notes.len(), 1);
        assert_eq!(d.notes[0].severity, EventSeverity::Info);
        assert_eq!(
            d.notes[0].message,
            "successful scan: found 2 tags with checksum r1"
        );
    }

    #[test]
    fn nothing_to_scan_until_the_interval_or_a_request() {
        let mut repo = after_scan(repository("ghcr.io/org/web", "5m", 1), &at(0));
        let snap = RepositorySnapshot {
            stored: stored(&repo, "r1", 2),
            ..Default::default()
        };
        // One minute later: what is left of the interval, no write, a
        // trace event.
        let d = done(decide(&repo, &snap, &at(60)));
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(240)));
        assert_eq!(Some(&d.status), repo.status.as_ref());
        assert_eq!(d.notes[0].severity, EventSeverity::Trace);
        assert_eq!(
            d.notes[0].message,
            "no change in repository configuration since last scan, next scan in 4m0s"
        );
        // A second left is not yet less than one: no scan; none left: scan.
        assert!(matches!(decide(&repo, &snap, &at(299)), Step::Done(_)));
        let (p, _) = persisted(decide(&repo, &snap, &at(300)));
        assert_eq!(p.conditions[0].message, "scanning: triggered by interval");
        // A reconcile request: scan now, and record it.
        repo.annotations_mut().insert(
            crate::api::RECONCILE_REQUEST_ANNOTATION.into(),
            "now-1".into(),
        );
        let (p, _) = persisted(decide(&repo, &snap, &at(60)));
        assert_eq!(p.conditions[0].message, "scanning: reconcile requested");
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                stored: stored(&repo, "r1", 2),
                scan: Some(Ok(scanned("r1", 2))),
                ..Default::default()
            },
            &at(60),
        ));
        assert_eq!(d.status.last_handled_reconcile_at.as_deref(), Some("now-1"));
        // Ready before and after with the same message: a trace.
        assert_eq!(d.notes[0].severity, EventSeverity::Trace);
        assert_eq!(d.notes[0].message, "tags did not change, next scan in 5m0s");
        repo.status = Some(d.status);
        assert!(matches!(decide(&repo, &snap, &at(61)), Step::Done(_)));
        // Another image: scan.
        let mut moved = repo.clone();
        moved.spec.image = "ghcr.io/org/api".into();
        let (p, _) = persisted(decide(&moved, &snap, &at(61)));
        assert_eq!(p.conditions[0].message, "scanning: new image name");
        // The tags gone from the store: scan, Ready turned Unknown.
        let (p, _) = persisted(decide(&repo, &RepositorySnapshot::default(), &at(61)));
        assert_eq!(
            conditions(&p)[1],
            (
                "Ready",
                "Unknown",
                "Progressing",
                "scanning: no tags in database"
            )
        );
        // A new generation alone is no reason to scan (Flux's shouldScan):
        // it is observed, nothing else changes.
        repo.meta_mut().generation = Some(2);
        let d = done(decide(&repo, &snap, &at(61)));
        assert_eq!(d.status.observed_generation, 2);
        assert_eq!(
            d.status.last_scan_result,
            repo.status.as_ref().unwrap().last_scan_result
        );
    }

    #[test]
    fn new_tags_are_an_event() {
        let repo = after_scan(repository("ghcr.io/org/web", "5m", 1), &at(0));
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                stored: stored(&repo, "r1", 2),
                scan: Some(Ok(scanned("r2", 3))),
                ..Default::default()
            },
            &at(300),
        ));
        assert_eq!(d.notes[0].severity, EventSeverity::Info);
        assert_eq!(
            d.notes[0].message,
            "successful scan: found 3 tags with checksum r2"
        );
    }

    #[test]
    fn suspended_does_nothing() {
        let mut repo = repository("ghcr.io/org/web", "5m", 1);
        repo.spec.suspend = true;
        let d = done(decide(&repo, &RepositorySnapshot::default(), &at(0)));
        assert_eq!(d, Decision::unchanged(ImageRepositoryStatus::default()));
    }

    #[test]
    fn a_bad_image_stalls_and_failures_are_retried_with_fluxs_reasons() {
        let repo = repository("https://ghcr.io/org/web", "5m", 3);
        let d = done(decide(&repo, &RepositorySnapshot::default(), &at(0)));
        assert_eq!(
            (d.requeue, d.failure),
            (Requeue::Never, Some("ImageURLInvalid"))
        );
        let c = conditions(&d.status);
        assert_eq!(
            (c[0].0, c[0].1, c[0].2),
            ("Stalled", "True", "ImageURLInvalid")
        );
        assert_eq!(
            (c[1].0, c[1].1, c[1].2),
            ("Ready", "False", "ImageURLInvalid")
        );
        assert_eq!(d.status.observed_generation, 3);
        assert!(d.notes[0].is_warning());
        // A registry that refuses the credentials: a scan failure, retried,
        // the generation not observed.
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
                scan: Some(Err(ScanFailure::Scan(e))),
                ..Default::default()
            },
            &at(0),
        ));
        assert_eq!(
            (d.requeue, d.failure),
            (Requeue::Backoff, Some("ReadOperationFailed"))
        );
        let c = conditions(&d.status);
        assert_eq!(
            (c[0].0, c[0].2, c[0].3),
            (
                "Reconciling",
                "ProgressingWithRetry",
                "processing object: new generation -1 -> 1"
            )
        );
        assert!(c[1].3.starts_with("scan failed: "), "{}", c[1].3);
        assert_eq!(d.status.observed_generation, -1);
        assert!(d.status.last_scan_result.is_none());
        // A Secret that cannot be read: AuthenticationFailed.
        let d = done(decide(
            &repo,
            &RepositorySnapshot {
                scan: Some(Err(ScanFailure::Access(EngineError::Source(
                    "Secret apps/pull not found".into(),
                )))),
                ..Default::default()
            },
            &at(0),
        ));
        assert_eq!(d.failure, Some("AuthenticationFailed"));
        assert_eq!(
            d.status.conditions[1].message,
            "failed to configure authentication options: Secret apps/pull not found"
        );
    }

    #[test]
    fn the_scan_timeout_is_bounded_and_a_busy_host_changes_nothing() {
        let repo = repository("ghcr.io/org/web", "999999h", 1);
        let snap = RepositorySnapshot {
            max_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        let (_, w) = persisted(decide(&repo, &snap, &at(0)));
        assert_eq!(w.timeout, Some(Duration::from_secs(120)));
        let mut short = repo.clone();
        short.spec.timeout = Some("30s".into());
        let t = short.spec.scan_timeout().unwrap();
        assert_eq!(
            bounded(t, Some(Duration::from_secs(120))),
            Duration::from_secs(30)
        );
        let busy = RepositorySnapshot {
            scan: Some(Err(ScanFailure::Busy)),
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
                scan: Some(Ok(scanned("r1", 2))),
                ..Default::default()
            },
            &at(0),
        ));
        assert_eq!(d.requeue, Requeue::Never);
    }
}
