//! ImagePolicy: the latest image of its ImageRepository's stored tags (and
//! its digest, as `digestReflectionPolicy` says), re-evaluated when the
//! repository's scan changes (a watch) and on `interval` with `Always`.
//! [`decide`] is the whole logic, pure.

use super::Context;
use super::conditions;
use super::decision::{Decision, Requeue, Step, go_duration, notify};
use super::shell::{Kind, requested_at};
use crate::api::plan;
use crate::api::{
    BadDuration, DigestReflectionPolicy, ImagePolicy, ImagePolicyStatus, ImageRef, ImageRepository,
    ResourceExt, compile_policy,
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
    /// How long to wait for a repository that has no tags yet.
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

/// How a policy's reconciliation ends short of a latest image.
enum Short {
    /// Flux's `MarkStalled`.
    Stalled(&'static str, String),
    /// Ready=False, retried with backoff.
    Retried(&'static str, String),
    /// Ready=False, looked at again after the dependency interval.
    Waiting(String),
    /// The digest is to be looked up first.
    Lookup(DigestWork),
    /// The registry has no free slot: nothing known, nothing written.
    Busy,
}

/// Flux's `getImageRepository` and its access check, as the
/// `failed to get the referred ImageRepository: …` failure when it fails.
fn repository<'s>(
    policy: &ImagePolicy,
    snap: &'s PolicySnapshot,
) -> Result<&'s ImageRepository, Short> {
    let ns = policy.namespace().unwrap_or_default();
    let (rns, rname) = plan::repository_of(policy);
    let failed = |reason: &'static str, m: String| {
        Short::Retried(
            reason,
            format!("failed to get the referred ImageRepository: {m}"),
        )
    };
    if rns != ns && !snap.cross_namespace_refs {
        return Err(failed(
            "AccessDenied",
            format!(
                "cannot access 'ImageRepository/{rns}/{rname}', cross-namespace references have been blocked"
            ),
        ));
    }
    let Some(repo) = snap.repository.as_deref() else {
        return Err(failed(
            "DependencyNotReady",
            format!(
                "referenced ImageRepository does not exist: imagerepositories.image.toolkit.fluxcd.io \"{rname}\" not found"
            ),
        ));
    };
    if rns != ns && !plan::access_allowed(repo, &ns, &snap.namespace_labels, true) {
        let why = if repo.spec.access_from.is_none() {
            format!("'{rns}/{rname}' can't be accessed due to missing ACL labels on 'accessFrom'")
        } else {
            format!(
                "'{rns}/{rname}' can't be accessed due to ACL labels mismatch on namespace '{ns}'"
            )
        };
        return Err(failed("AccessDenied", format!("access denied: {why}")));
    }
    Ok(repo)
}

/// The latest image, or how the reconciliation ends without one.
fn evaluate(policy: &ImagePolicy, snap: &PolicySnapshot) -> Result<ImageRef, Short> {
    let spec = &policy.spec;
    let repo = repository(policy, snap)?;
    if let Err(e) = crate::api::validate::check_image(&repo.spec.image) {
        return Err(Short::Stalled("ImageURLInvalid", e));
    }
    if let Err(errs) = compile_policy(spec) {
        let message = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Short::Stalled(
            "InvalidPolicy",
            format!("invalid policy: {message}"),
        ));
    }
    let Some(tags) = snap.tags.as_ref().filter(|t| !t.is_empty()) else {
        return Err(Short::Waiting(format!(
            "retrying in {} error: no tags in database",
            go_duration(Duration::from_secs(
                snap.dependency_retry.as_secs_f64().round() as u64
            ))
        )));
    };
    let tag = match crate::engine::select(spec, tags) {
        Ok(t) => t,
        Err(EngineError::InvalidPolicy(m)) => {
            return Err(Short::Stalled(
                "InvalidPolicy",
                format!("invalid policy: {m}"),
            ));
        }
        Err(e) => return Err(Short::Retried("Failure", e.to_string())),
    };
    let previous = policy.status.as_ref().and_then(|s| s.latest_ref.as_ref());
    let mut latest = ImageRef {
        name: repo.spec.image.clone(),
        tag,
        digest: None,
    };
    let fetch = match spec.digest_reflection_policy {
        DigestReflectionPolicy::Never => false,
        DigestReflectionPolicy::IfNotPresent => {
            match previous.filter(|p| p.name == latest.name && p.tag == latest.tag) {
                Some(p) if p.digest.as_deref().is_some_and(|d| !d.is_empty()) => {
                    latest.digest.clone_from(&p.digest);
                    false
                }
                _ => true,
            }
        }
        DigestReflectionPolicy::Always => true,
    };
    if fetch {
        match &snap.digest {
            None => return Err(Short::Lookup(DigestWork { tag: latest.tag })),
            Some(Err(EngineError::Busy(_))) => return Err(Short::Busy),
            Some(Err(e)) => {
                return Err(Short::Retried(
                    "Failed",
                    format!("failed fetching digest of {}: {e}", latest.reference()),
                ));
            }
            Some(Ok(d)) => latest.digest = Some(d.clone()),
        }
    }
    Ok(latest)
}

/// Flux's `composeImagePolicyReadyMessage`.
fn ready_message(status: &ImagePolicyStatus) -> String {
    let Some(latest) = &status.latest_ref else {
        return String::new();
    };
    let mut m = format!(
        "Latest image tag for {} resolved to {}",
        latest.name, latest.tag
    );
    if let Some(d) = latest.digest.as_deref().filter(|d| !d.is_empty()) {
        m.push_str(&format!(" with digest {d}"));
    }
    if let Some(prev) = status
        .observed_previous_ref
        .as_ref()
        .filter(|p| *p != latest)
    {
        m.push_str(&format!(" (previously {}:{}", prev.name, prev.tag));
        if let Some(d) = prev.digest.as_deref().filter(|d| !d.is_empty()) {
            m.push_str(&format!("@{d}"));
        }
        m.push(')');
    }
    m
}

/// The policy's requeue interval: with `Always`, its interval (10 minutes
/// when unset or zero, as Flux's `GetInterval`); none otherwise.
fn requeue_interval(policy: &ImagePolicy, interval: Option<Duration>) -> Option<Duration> {
    (policy.spec.digest_reflection_policy == DigestReflectionPolicy::Always).then(|| {
        interval
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(600))
    })
}

/// The whole logic of an ImagePolicy's reconciliation, as Flux's
/// image-reflector-controller does it
/// (`internal/controller/imagepolicy_controller.go`).
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
    let requested = requested_at(policy);
    let mut status = before.clone();
    let finish = |mut status: ImagePolicyStatus,
                  end: conditions::End<'_>,
                  requeue: Requeue,
                  failure: Option<&'static str>| {
        if conditions::finish(&mut status.conditions, end, generation, now) {
            status.observed_generation = generation;
        }
        if requested.is_some() {
            status.last_handled_reconcile_at.clone_from(&requested);
        }
        let quiet = ready_message(&status);
        let note = notify(
            &before.conditions,
            &status.conditions,
            None,
            &quiet,
            "Evaluate",
        );
        Step::Done(Decision {
            status,
            notes: vec![note],
            requeue,
            failure,
        })
    };
    // Checked before any progress, as Flux's validation is.
    if policy.spec.digest_reflection_policy == DigestReflectionPolicy::Always
        && policy.spec.interval.as_deref().is_none_or(str::is_empty)
    {
        return finish(
            status,
            conditions::End::Stalled(
                "IntervalNotConfigured",
                "spec.interval must be set when spec.digestReflectionPolicy is set to 'Always'",
            ),
            Requeue::Never,
            Some("IntervalNotConfigured"),
        );
    }
    let interval = match policy.spec.interval() {
        Ok(i) => i,
        Err(e) => {
            return finish(
                status,
                conditions::End::Stalled(BadDuration::REASON, &e.to_string()),
                Requeue::Never,
                Some(BadDuration::REASON),
            );
        }
    };
    let c = &mut status.conditions;
    conditions::progress(c, conditions::IN_PROGRESS, false, generation, now);
    let mut persist = false;
    if generation != before.observed_generation {
        let m = format!(
            "processing object: new generation {} -> {generation}",
            before.observed_generation
        );
        conditions::progress(c, &m, false, generation, now);
        persist = true;
    }
    match evaluate(policy, snap) {
        Err(Short::Lookup(work)) if persist => Step::Persist(status, work),
        Err(Short::Lookup(work)) => Step::Work(work),
        Err(Short::Busy) => Step::Done(Decision {
            requeue: Requeue::Around(super::repository::BUSY_RETRY),
            ..Decision::unchanged(before)
        }),
        Err(Short::Stalled(reason, m)) => finish(
            status,
            conditions::End::Stalled(reason, &m),
            Requeue::Never,
            Some(reason),
        ),
        Err(Short::Retried(reason, m)) => finish(
            status,
            conditions::End::Retried(reason, &m),
            Requeue::Backoff,
            Some(reason),
        ),
        Err(Short::Waiting(m)) => finish(
            status,
            conditions::End::Retried("DependencyNotReady", &m),
            Requeue::Around(snap.dependency_retry),
            Some("DependencyNotReady"),
        ),
        Ok(latest) => {
            if before.latest_ref.as_ref() != Some(&latest) {
                status.observed_previous_ref = before.latest_ref.clone();
                status.latest_ref = Some(latest);
            }
            let message = ready_message(&status);
            let requeue = requeue_interval(policy, interval).map_or(Requeue::Never, Requeue::every);
            finish(status, conditions::End::Ready(&message), requeue, None)
        }
    }
}

impl Kind for ImagePolicy {
    const KIND: &'static str = "ImagePolicy";
    type Snapshot = PolicySnapshot;
    type Work = DigestWork;

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
    // A repository whose durations do not parse has stalled: no scan, no
    // tags, no policy reaching this lookup.
    let timeout = repo
        .spec
        .scan_timeout()
        .ok()
        .map(|t| super::repository::bounded(t, Some(ctx.options.max_scan_timeout)));
    let access: RegistryAccess =
        super::secrets::registry_access(&ctx.client, &ctx.cloud, repo, timeout).await?;
    ctx.engine
        .digest_with(
            &repo.spec.image,
            tag,
            &access,
            crate::engine::Slot::Within(super::repository::SLOT_WAIT),
        )
        .await
}

#[cfg(test)]
mod tests {
    //! Each case pins what image-reflector-controller's
    //! `internal/controller/imagepolicy_controller.go` writes for it.
    use super::*;
    use crate::controller::decision::EventSeverity;
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
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    fn ready(d: &Decision<ImagePolicyStatus>) -> (String, String, String) {
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
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
        assert_eq!(d.status.observed_generation, 1);
        assert_eq!(
            ready(&d),
            (
                "True".into(),
                "Succeeded".into(),
                "Latest image tag for ghcr.io/org/web resolved to 1.1.0".into()
            )
        );
        assert_eq!(d.notes[0].severity, EventSeverity::Info);
        p.status = Some(d.status);
        // Nothing new: nothing to write, a trace.
        let again = done(decide(&p, &snap, &at(10)));
        assert_eq!(Some(&again.status), p.status.as_ref());
        assert_eq!(again.notes[0].severity, EventSeverity::Trace);
        // A new tag: the previous one is kept and named, and the new Ready
        // message is an event.
        let snap = snapshot(Some(scanned_repo()), &["1.0.0", "1.1.0", "1.2.0"]);
        let d = done(decide(&p, &snap, &at(20)));
        assert_eq!(
            d.status.observed_previous_ref.as_ref().unwrap().tag,
            "1.1.0"
        );
        let message = "Latest image tag for ghcr.io/org/web resolved to 1.2.0 (previously ghcr.io/org/web:1.1.0)";
        assert_eq!(ready(&d).2, message);
        assert_eq!(
            (d.notes[0].severity, d.notes[0].message.as_str()),
            (EventSeverity::Info, message)
        );
    }

    #[test]
    fn digests_follow_the_reflection_policy() {
        let repo = scanned_repo();
        // IfNotPresent: looked up once, then kept while the tag stays.
        let mut p = policy("web", "1.x", "IfNotPresent");
        let mut snap = snapshot(Some(repo.clone()), &TAGS);
        let Step::Persist(progress, work) = decide(&p, &snap, &at(0)) else {
            panic!("a lookup, after the progress of a new generation")
        };
        assert_eq!(
            work,
            DigestWork {
                tag: "1.1.0".into()
            }
        );
        assert_eq!(
            progress.conditions[0].message,
            "processing object: new generation -1 -> 1"
        );
        snap.digest = Some(Ok("sha256:aaa".into()));
        let d = done(decide(&p, &snap, &at(0)));
        assert_eq!(
            d.status.latest_ref.as_ref().unwrap().digest.as_deref(),
            Some("sha256:aaa")
        );
        assert_eq!(
            ready(&d).2,
            "Latest image tag for ghcr.io/org/web resolved to 1.1.0 with digest sha256:aaa"
        );
        p.status = Some(d.status.clone());
        let snap = snapshot(Some(repo.clone()), &TAGS);
        let d = done(decide(&p, &snap, &at(5)));
        assert_eq!(
            d.status.latest_ref.as_ref().unwrap().digest.as_deref(),
            Some("sha256:aaa")
        );
        // A new tag: looked up again (no new generation: no progress write).
        let snap2 = snapshot(Some(repo.clone()), &["1.0.0", "1.2.0"]);
        assert_eq!(
            decide(&p, &snap2, &at(6)),
            Step::Work(DigestWork {
                tag: "1.2.0".into()
            })
        );
        // Switched to Never: the digest goes, whatever the status held (it
        // must never reach Git under another tag).
        p.spec.digest_reflection_policy = DigestReflectionPolicy::Never;
        p.meta_mut().generation = Some(2);
        let d = done(decide(&p, &snap, &at(7)));
        assert_eq!(d.status.latest_ref.as_ref().unwrap().digest, None);
        assert_eq!(
            ready(&d).2,
            "Latest image tag for ghcr.io/org/web resolved to 1.1.0 (previously ghcr.io/org/web:1.1.0@sha256:aaa)"
        );
        assert_eq!(d.status.observed_generation, 2);
        // Always: looked up at every reconciliation, requeued at its interval.
        let mut p = policy("web", "1.x", "Always");
        p.spec.interval = Some("10m".into());
        let mut snap = snapshot(Some(repo.clone()), &TAGS);
        assert!(matches!(decide(&p, &snap, &at(0)), Step::Persist(..)));
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
        assert_eq!(
            ready(&d),
            (
                "False".into(),
                "IntervalNotConfigured".into(),
                "spec.interval must be set when spec.digestReflectionPolicy is set to 'Always'"
                    .into()
            )
        );
        assert!(d.status.conditions.iter().any(|c| c.type_ == "Stalled"));
    }

    #[test]
    fn a_failed_lookup_is_retried_and_a_busy_registry_changes_nothing() {
        let mut p = policy("web", "1.x", "Always");
        p.spec.interval = Some("1m".into());
        let mut snap = snapshot(Some(scanned_repo()), &TAGS);
        snap.digest = Some(Err(EngineError::Source(
            "Secret apps/pull not found".into(),
        )));
        let d = done(decide(&p, &snap, &at(0)));
        assert_eq!((d.requeue, d.failure), (Requeue::Backoff, Some("Failed")));
        assert_eq!(
            ready(&d).2,
            "failed fetching digest of ghcr.io/org/web:1.1.0: Secret apps/pull not found"
        );
        assert!(d.status.latest_ref.is_none());
        assert!(d.notes[0].is_warning());
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
    fn dependencies_missing_not_ready_or_refused() {
        let p = policy("web", "1.x", "Never");
        // Missing: Flux's DependencyNotReady, retried.
        let d = done(decide(&p, &snapshot(None, &TAGS), &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("DependencyNotReady"), Requeue::Backoff)
        );
        assert_eq!(
            ready(&d).2,
            "failed to get the referred ImageRepository: referenced ImageRepository does not exist: imagerepositories.image.toolkit.fluxcd.io \"web\" not found"
        );
        // No tags yet: waits for the dependency interval.
        let d = done(decide(&p, &snapshot(Some(scanned_repo()), &[]), &at(0)));
        assert_eq!(d.requeue, Requeue::Around(Duration::from_secs(30)));
        assert_eq!(ready(&d).2, "retrying in 30s error: no tags in database");
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
            (Some("AccessDenied"), Requeue::Backoff)
        );
        assert_eq!(
            ready(&d).2,
            "failed to get the referred ImageRepository: access denied: 'apps/web' can't be accessed due to missing ACL labels on 'accessFrom'"
        );
        let mut open = scanned_repo();
        open.spec.access_from = Some(crate::api::AccessFrom {
            namespace_selectors: vec![crate::api::NamespaceSelector {
                match_labels: BTreeMap::from([("team".to_string(), "web".to_string())]),
            }],
        });
        let mut snap = snapshot(Some(open), &TAGS);
        assert!(
            ready(&done(decide(&other, &snap, &at(0))))
                .2
                .contains("ACL labels mismatch on namespace 'team'")
        );
        snap.namespace_labels = BTreeMap::from([("team".to_string(), "web".to_string())]);
        assert_eq!(done(decide(&other, &snap, &at(0))).failure, None);
        snap.cross_namespace_refs = false;
        let d = done(decide(&other, &snap, &at(0)));
        assert_eq!(
            ready(&d).2,
            "failed to get the referred ImageRepository: cannot access 'ImageRepository/apps/web', cross-namespace references have been blocked"
        );
        // A range that never parses: stalled.
        let bad = policy("web", "not a range", "Never");
        let d = done(decide(&bad, &snapshot(Some(scanned_repo()), &TAGS), &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("InvalidPolicy"), Requeue::Never)
        );
        assert!(
            ready(&d).2.starts_with("invalid policy: "),
            "{:?}",
            ready(&d)
        );
        // Nothing in range: Flux's Failure, retried.
        let none = policy("web", ">=5.0.0", "Never");
        let d = done(decide(
            &none,
            &snapshot(Some(scanned_repo()), &TAGS),
            &at(0),
        ));
        assert_eq!((d.failure, d.requeue), (Some("Failure"), Requeue::Backoff));
    }

    #[test]
    fn suspended_does_nothing() {
        let mut p = policy("web", "1.x", "Never");
        p.spec.suspend = true;
        let d = done(decide(&p, &snapshot(None, &TAGS), &at(0)));
        assert_eq!(d, Decision::unchanged(ImagePolicyStatus::default()));
    }
}
