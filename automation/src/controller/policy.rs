//! ImagePolicy: the latest image of its ImageRepository's stored tags (and
//! its digest, as `digestReflectionPolicy` says), re-evaluated when the
//! repository's scan changes (a watch) and on `interval` with `Always`.
//! [`decide`] is the whole logic, pure.

use super::Context;
use super::conditions;
use super::decision::{Decision, Note, Requeue, Step};
use super::shell::{Kind, requested_at};
use crate::api::plan;
use crate::api::{
    DigestReflectionPolicy, ImagePolicy, ImagePolicyStatus, ImageRef, ImageRepository, ResourceExt,
    compile_policy,
};
use crate::engine::{EngineError, RegistryAccess};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What [`decide`] reads besides the object.
#[derive(Debug)]
pub struct PolicySnapshot {
    /// Whether policies may use ImageRepositories of other namespaces.
    pub cross_namespace_refs: bool,
    /// How long to wait for a repository that is missing or not scanned.
    pub dependency_retry: Duration,
    /// The ImageRepository it refers to, when it exists.
    pub repository: Option<Arc<ImageRepository>>,
    /// The labels of the policy's namespace (for `accessFrom`).
    pub namespace_labels: BTreeMap<String, String>,
    /// The repository's stored tags (scanned for that object and image).
    pub tags: Option<Vec<String>>,
    /// The digest looked up in this reconciliation, once looked up.
    pub digest: Option<Result<String, EngineError>>,
}

/// The work: look up the digest of the selected tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestWork {
    pub tag: String,
}

fn invalid(errs: Vec<crate::api::FieldError>) -> EngineError {
    EngineError::InvalidPolicy(
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Why there is no latest image: found now, or in the snapshot's lookup.
enum Failure<'a> {
    Now(EngineError),
    Looked(&'a EngineError),
}

impl From<EngineError> for Failure<'_> {
    fn from(e: EngineError) -> Self {
        Failure::Now(e)
    }
}

impl std::ops::Deref for Failure<'_> {
    type Target = EngineError;
    fn deref(&self) -> &EngineError {
        match self {
            Failure::Now(e) => e,
            Failure::Looked(e) => e,
        }
    }
}

/// The latest image, or the work to do first, or why there is none.
fn evaluate<'s>(
    policy: &ImagePolicy,
    snap: &'s PolicySnapshot,
) -> Result<Result<ImageRef, DigestWork>, Failure<'s>> {
    let ns = policy.namespace().unwrap_or_default();
    let spec = &policy.spec;
    if spec.digest_reflection_policy == DigestReflectionPolicy::Always
        && spec.interval.as_deref().is_none_or(str::is_empty)
    {
        return Err(Failure::Now(EngineError::IntervalNotConfigured(
            "spec.interval must be set when spec.digestReflectionPolicy is Always".into(),
        )));
    }
    compile_policy(spec).map_err(invalid)?;
    let (rns, rname) = plan::repository_of(policy);
    if rns != ns && !snap.cross_namespace_refs {
        return Err(Failure::Now(EngineError::AccessDenied(format!(
            "spec.imageRepositoryRef: ImageRepository {rns}/{rname} is in another namespace, and cross-namespace references are switched off (--no-cross-namespace-refs)"
        ))));
    }
    let Some(repo) = snap.repository.as_ref() else {
        return Err(Failure::Now(EngineError::DependencyNotReady(format!(
            "ImageRepository {rns}/{rname} not found"
        ))));
    };
    if rns != ns && !plan::access_allowed(repo, &ns, &snap.namespace_labels, true) {
        return Err(Failure::Now(EngineError::AccessDenied(format!(
            "ImageRepository {rns}/{rname} does not allow policies from namespace {ns} (its spec.accessFrom)"
        ))));
    }
    let scanned = repo
        .status
        .as_ref()
        .is_some_and(|s| s.last_scan_result.is_some());
    let Some(tags) = snap.tags.as_ref().filter(|_| scanned) else {
        return Err(Failure::Now(EngineError::DependencyNotReady(format!(
            "ImageRepository {rns}/{rname} has no scan yet"
        ))));
    };
    let tag = crate::engine::select(spec, tags)?;
    let previous = policy.status.as_ref().and_then(|s| s.latest_ref.as_ref());
    let name = repo.spec.image.clone();
    let known = match spec.digest_reflection_policy {
        DigestReflectionPolicy::Never => {
            return Ok(Ok(ImageRef {
                name,
                tag,
                digest: None,
            }));
        }
        DigestReflectionPolicy::IfNotPresent => previous
            .filter(|p| p.name == name && p.tag == tag)
            .and_then(|p| p.digest.clone())
            .filter(|d| !d.is_empty()),
        DigestReflectionPolicy::Always => None,
    };
    let digest = match (known, &snap.digest) {
        (Some(d), _) => d,
        (None, None) => return Ok(Err(DigestWork { tag })),
        (None, Some(Ok(d))) => d.clone(),
        (None, Some(Err(e))) => return Err(Failure::Looked(e)),
    };
    Ok(Ok(ImageRef {
        name,
        tag,
        digest: Some(digest),
    }))
}

fn describe(r: &ImageRef) -> String {
    format!("{}:{}", r.name, r.tag)
}

/// The whole logic of an ImagePolicy's reconciliation.
pub fn decide(
    policy: &ImagePolicy,
    snap: &PolicySnapshot,
    now: &Time,
) -> Step<DigestWork, ImagePolicyStatus> {
    let before = policy.status.clone().unwrap_or_default();
    if policy.spec.suspend {
        return Step::Done(Decision::unchanged(before));
    }
    let generation = policy.meta().generation.unwrap_or(0);
    let mut status = before.clone();
    status.observed_generation = generation;
    if let Some(r) = requested_at(policy) {
        status.last_handled_reconcile_at = Some(r);
    }
    let interval = policy
        .spec
        .interval
        .as_deref()
        .and_then(crate::api::parse_duration)
        .filter(|_| policy.spec.digest_reflection_policy == DigestReflectionPolicy::Always);
    match evaluate(policy, snap) {
        Ok(Err(work)) => Step::Work(work),
        Ok(Ok(latest)) => {
            let mut notes = Vec::new();
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
                notes.push(Note::normal(conditions::SUCCEEDED, note, "Evaluate"));
            }
            if let Some(prev) = &status.observed_previous_ref {
                message.push_str(&format!(" (previously {})", describe(prev)));
            }
            status.latest_ref = Some(latest);
            conditions::ready(&mut status.conditions, &message, generation, now);
            Step::Done(Decision {
                status,
                notes,
                requeue: interval.map_or(Requeue::Never, Requeue::every),
                failure: None,
            })
        }
        // The registry's slots are all taken: nothing is known, nothing
        // written.
        Err(e) if matches!(&*e, EngineError::Busy(_)) => Step::Done(Decision {
            requeue: Requeue::Around(super::repository::BUSY_RETRY),
            ..Decision::unchanged(before)
        }),
        Err(e) => {
            conditions::failed_with(&mut status.conditions, &e, generation, now);
            let requeue = match &*e {
                // Waiting for the repository: the watch brings it back, and
                // a periodic retry covers what no watch sees.
                EngineError::DependencyNotReady(_) => Requeue::Around(snap.dependency_retry),
                _ => Requeue::after_failure(&e, None),
            };
            let message = e.to_string();
            let notes = if before.conditions.iter().all(|c| c.message != message) {
                vec![Note::warning(e.reason(), message, "Evaluate")]
            } else {
                Vec::new()
            };
            Step::Done(Decision {
                status,
                notes,
                requeue,
                failure: Some(e.reason()),
            })
        }
    }
}

impl Kind for ImagePolicy {
    const KIND: &'static str = "ImagePolicy";
    type Status = ImagePolicyStatus;
    type Snapshot = PolicySnapshot;
    type Work = DigestWork;

    fn status(&self) -> Option<&ImagePolicyStatus> {
        self.status.as_ref()
    }

    fn cache(ctx: &Context) -> Option<Arc<super::watches::Shared<Self>>> {
        Some(ctx.caches.policies.clone())
    }

    async fn snapshot(&self, ctx: &Context) -> PolicySnapshot {
        let ns = self.namespace().unwrap_or_default();
        let (rns, rname) = plan::repository_of(self);
        let repository = ctx.caches.repositories.get(&rns, &rname);
        let tags = match &repository {
            Some(repo) => {
                let (uid, image, store) = (
                    repo.uid().unwrap_or_default(),
                    repo.spec.image.clone(),
                    ctx.tags.clone(),
                );
                ctx.engine
                    .blocking(move || {
                        store
                            .load(&rns, &rname, &uid)
                            .filter(|s| s.image == image)
                            .map(|s| s.tags)
                    })
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        PolicySnapshot {
            cross_namespace_refs: ctx.options.cross_namespace_refs,
            dependency_retry: ctx.options.requeue_dependency,
            repository,
            namespace_labels: ctx.caches.namespace_labels(&ns).unwrap_or_default(),
            tags,
            digest: None,
        }
    }

    fn decide(&self, snap: &PolicySnapshot, now: &Time) -> Step<DigestWork, ImagePolicyStatus> {
        decide(self, snap, now)
    }

    async fn work(&self, ctx: &Context, snap: &mut PolicySnapshot, work: DigestWork) {
        let result = match &snap.repository {
            Some(repo) => digest(ctx, repo, &work.tag).await,
            None => Err(EngineError::Internal("the repository went away".into())),
        };
        snap.digest = Some(result);
    }
}

async fn digest(ctx: &Context, repo: &ImageRepository, tag: &str) -> Result<String, EngineError> {
    let timeout = super::repository::timeout(repo, Some(ctx.options.max_scan_timeout));
    let access: RegistryAccess =
        super::secrets::registry_access(&ctx.client, repo, timeout).await?;
    ctx.engine
        .digest_with(&repo.spec.image, tag, &access, crate::engine::Slot::Now)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{at, policy, repository};

    fn snapshot(repo: Option<ImageRepository>, tags: &[&str]) -> PolicySnapshot {
        PolicySnapshot {
            cross_namespace_refs: true,
            dependency_retry: Duration::from_secs(30),
            repository: repo.map(Arc::new),
            namespace_labels: BTreeMap::new(),
            tags: Some(tags.iter().map(|t| t.to_string()).collect()),
            digest: None,
        }
    }

    fn scanned_repo() -> ImageRepository {
        let mut r = repository("ghcr.io/org/web", "5m", 1);
        r.metadata.namespace = Some("apps".into());
        r.status = Some(crate::api::ImageRepositoryStatus {
            last_scan_result: Some(crate::api::ScanResult::default()),
            ..Default::default()
        });
        r
    }

    fn done(step: Step<DigestWork, ImagePolicyStatus>) -> Decision<ImagePolicyStatus> {
        match step {
            Step::Done(d) => d,
            Step::Work(w) => panic!("expected a decision, got work {w:?}"),
        }
    }

    const TAGS: [&str; 3] = ["1.0.0", "1.1.0", "2.0.0"];

    #[test]
    fn selects_the_latest_and_records_the_previous() {
        let mut p = policy("web", ">=1.0.0 <2.0.0", "Never");
        let snap = snapshot(Some(scanned_repo()), &TAGS);
        let d = done(decide(&p, &snap, &at(0)));
        let latest = d.status.latest_ref.clone().unwrap();
        assert_eq!((latest.tag.as_str(), latest.digest), ("1.1.0", None));
        assert_eq!(d.requeue, Requeue::Never);
        assert_eq!(d.notes.len(), 1);
        assert_eq!(
            d.status.conditions[0].message,
            "Latest image tag for ghcr.io/org/web resolved to 1.1.0"
        );
        p.status = Some(d.status);
        // Nothing new: nothing to write, no event.
        let again = done(decide(&p, &snap, &at(10)));
        assert_eq!(Some(&again.status), p.status.as_ref());
        assert!(again.notes.is_empty());
        // A new tag: the previous one is kept.
        let snap = snapshot(Some(scanned_repo()), &["1.0.0", "1.1.0", "1.2.0"]);
        let d = done(decide(&p, &snap, &at(20)));
        assert_eq!(
            d.status.observed_previous_ref.as_ref().unwrap().tag,
            "1.1.0"
        );
        assert!(
            d.status.conditions[0]
                .message
                .ends_with("(previously ghcr.io/org/web:1.1.0)")
        );
        assert_eq!(d.notes.len(), 1);
    }

    #[test]
    fn digests_follow_the_reflection_policy() {
        let repo = scanned_repo();
        // IfNotPresent: looked up once, then kept while the tag stays.
        let mut p = policy("web", "1.x", "IfNotPresent");
        let mut snap = snapshot(Some(repo.clone()), &TAGS);
        assert_eq!(
            decide(&p, &snap, &at(0)),
            Step::Work(DigestWork {
                tag: "1.1.0".into()
            })
        );
        snap.digest = Some(Ok("sha256:aaa".into()));
        let d = done(decide(&p, &snap, &at(0)));
        assert_eq!(
            d.status.latest_ref.as_ref().unwrap().digest.as_deref(),
            Some("sha256:aaa")
        );
        p.status = Some(d.status.clone());
        let snap = snapshot(Some(repo.clone()), &TAGS);
        let d = done(decide(&p, &snap, &at(5)));
        assert_eq!(
            d.status.latest_ref.as_ref().unwrap().digest.as_deref(),
            Some("sha256:aaa")
        );
        // A new tag: looked up again.
        let snap2 = snapshot(Some(repo.clone()), &["1.0.0", "1.2.0"]);
        assert!(matches!(decide(&p, &snap2, &at(6)), Step::Work(_)));
        // Switched to Never: the digest goes, whatever the status held (it
        // must never reach Git under another tag).
        p.spec.digest_reflection_policy = DigestReflectionPolicy::Never;
        let d = done(decide(&p, &snap, &at(7)));
        assert_eq!(d.status.latest_ref.as_ref().unwrap().digest, None);
        assert_eq!(
            d.status.conditions[0].message,
            "Latest image tag for ghcr.io/org/web resolved to 1.1.0 (previously ghcr.io/org/web:1.1.0)"
        );
        // Always: looked up at every reconciliation, requeued at its interval.
        let mut p = policy("web", "1.x", "Always");
        p.spec.interval = Some("10m".into());
        let mut snap = snapshot(Some(repo.clone()), &TAGS);
        assert!(matches!(decide(&p, &snap, &at(0)), Step::Work(_)));
        snap.digest = Some(Ok("sha256:bbb".into()));
        let d = done(decide(&p, &snap, &at(0)));
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(600)));
        p.status = Some(d.status);
        assert!(matches!(
            decide(&p, &snapshot(Some(repo.clone()), &TAGS), &at(600)),
            Step::Work(_)
        ));
        // Always without an interval: Flux's IntervalNotConfigured, stalled.
        p.spec.interval = None;
        let d = done(decide(&p, &snapshot(Some(repo), &TAGS), &at(0)));
        assert_eq!(d.failure, Some("IntervalNotConfigured"));
        assert_eq!(d.requeue, Requeue::Never);
        assert!(d.status.conditions.iter().any(|c| c.type_ == "Stalled"));
    }

    #[test]
    fn a_failed_lookup_is_retried() {
        let p = policy("web", "1.x", "Always");
        let mut snap = snapshot(Some(scanned_repo()), &TAGS);
        snap.digest = Some(Err(EngineError::Source(
            "Secret apps/pull not found".into(),
        )));
        let mut p2 = p.clone();
        p2.spec.interval = Some("1m".into());
        let d = done(decide(&p2, &snap, &at(0)));
        assert_eq!(d.requeue, Requeue::Backoff);
        assert!(d.status.latest_ref.is_none());
    }

    #[test]
    fn dependencies_missing_not_ready_or_refused() {
        let p = policy("web", "1.x", "Never");
        // Missing: waits for it, around the retry period.
        let d = done(decide(&p, &snapshot(None, &TAGS), &at(0)));
        assert_eq!(d.failure, Some("DependencyNotReady"));
        assert_eq!(d.requeue, Requeue::Around(Duration::from_secs(30)));
        assert_eq!(d.notes.len(), 1);
        // The same failure again: no second event.
        let mut p2 = p.clone();
        p2.status = Some(d.status.clone());
        assert!(
            done(decide(&p2, &snapshot(None, &TAGS), &at(1)))
                .notes
                .is_empty()
        );
        // Not scanned yet.
        let mut unscanned = scanned_repo();
        unscanned.status = None;
        let d = done(decide(&p, &snapshot(Some(unscanned), &TAGS), &at(0)));
        assert!(d.status.conditions[0].message.contains("has no scan yet"));
        // Another namespace: accessFrom decides.
        let mut other = policy("web", "1.x", "Never");
        other.metadata.namespace = Some("team".into());
        other.spec.image_repository_ref.namespace = Some("apps".into());
        let d = done(decide(
            &other,
            &snapshot(Some(scanned_repo()), &TAGS),
            &at(0),
        ));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("AccessDenied"), Requeue::Never)
        );
        let mut open = scanned_repo();
        open.spec.access_from = Some(crate::api::AccessFrom {
            namespace_selectors: vec![crate::api::NamespaceSelector {
                match_labels: BTreeMap::from([("team".to_string(), "web".to_string())]),
            }],
        });
        let mut snap = snapshot(Some(open), &TAGS);
        snap.namespace_labels = BTreeMap::from([("team".to_string(), "web".to_string())]);
        assert_eq!(done(decide(&other, &snap, &at(0))).failure, None);
        snap.cross_namespace_refs = false;
        assert_eq!(
            done(decide(&other, &snap, &at(0))).failure,
            Some("AccessDenied")
        );
        // A range that never parses: stalled.
        let bad = policy("web", "not a range", "Never");
        let d = done(decide(&bad, &snapshot(Some(scanned_repo()), &TAGS), &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("InvalidPolicy"), Requeue::Never)
        );
        // Nothing in range: retried.
        let none = policy("web", ">=5.0.0", "Never");
        let d = done(decide(
            &none,
            &snapshot(Some(scanned_repo()), &TAGS),
            &at(0),
        ));
        assert_eq!(d.requeue, Requeue::Backoff);
    }

    #[test]
    fn a_busy_registry_changes_nothing() {
        let mut p = policy("web", "1.x", "Always");
        p.spec.interval = Some("1m".into());
        let mut snap = snapshot(Some(scanned_repo()), &TAGS);
        snap.digest = Some(Err(EngineError::Busy("ghcr.io".into())));
        let d = done(decide(&p, &snap, &at(0)));
        assert_eq!(
            d.requeue,
            Requeue::Around(crate::controller::repository::BUSY_RETRY)
        );
        assert_eq!(d.status, ImagePolicyStatus::default());
        assert!(d.notes.is_empty());
    }

    #[test]
    fn suspended_does_nothing() {
        let mut p = policy("web", "1.x", "Never");
        p.spec.suspend = true;
        let d = done(decide(&p, &snapshot(None, &TAGS), &at(0)));
        assert_eq!(d, Decision::unchanged(ImagePolicyStatus::default()));
    }
}
