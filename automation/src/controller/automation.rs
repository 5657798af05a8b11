//! ImageUpdateAutomation: on its interval, and when a selected policy's
//! latest image changes, apply the policies' images to the GitRepository's
//! files under `update.path`, commit and push through the engine (the
//! repository's cache, its lock, the push retries), and write Flux's status.
//! [`decide`] is the whole logic, pure; the run itself is the work.

use super::Context;
use super::conditions;
use super::decision::{Decision, Note, Requeue, Step};
use super::shell::{Kind, elapsed, requested_at};
use crate::api::plan::{self, PushTarget};
use crate::api::{
    GitRepository, ImagePolicy, ImageRef, ImageUpdateAutomation, ImageUpdateAutomationStatus,
    ResourceExt,
};
use crate::engine::EngineError;
use crate::engine::automation::AutomationJob;
use crate::engine::update::CommitRequest;
use crate::git::Signature;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What [`decide`] reads besides the object.
#[derive(Debug)]
pub struct AutomationSnapshot {
    /// Whether automations may use GitRepositories of other namespaces.
    pub cross_namespace_refs: bool,
    /// The GitRepository `spec.sourceRef` names, when it exists.
    pub source: Option<Arc<GitRepository>>,
    /// The ImagePolicies of the automation's namespace.
    pub policies: Vec<Arc<ImagePolicy>>,
    /// The run made in this reconciliation, once made.
    pub run: Option<Result<Ran, EngineError>>,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ran {
    /// The commit pushed (full SHA), when there was something to change.
    pub pushed: Option<String>,
    /// Flux's `observedSourceRevision`.
    pub source_revision: String,
    pub files: usize,
    pub changes: usize,
}

/// The work: one run of the automation.
#[derive(Clone, Debug, PartialEq)]
pub struct RunWork {
    pub source: Arc<GitRepository>,
    pub target: PushTarget,
    pub path: String,
    pub author: Signature,
    pub images: BTreeMap<String, ImageRef>,
}

/// The automation's interval (10 minutes when it does not parse, at least
/// a second).
fn interval(a: &ImageUpdateAutomation) -> Duration {
    crate::api::parse_duration(&a.spec.interval)
        .unwrap_or(Duration::from_secs(600))
        .max(Duration::from_secs(1))
}

/// The GitRepository's namespace and name.
pub fn source_of(a: &ImageUpdateAutomation) -> (String, String) {
    let ns = a.namespace().unwrap_or_default();
    let r = &a.spec.source_ref;
    (
        r.namespace.clone().filter(|n| !n.is_empty()).unwrap_or(ns),
        r.name.clone(),
    )
}

/// What the run needs, or why it cannot start.
fn plan(a: &ImageUpdateAutomation, snap: &AutomationSnapshot) -> Result<RunWork, EngineError> {
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
    let (sns, sname) = source_of(a);
    if sns != ns && !snap.cross_namespace_refs {
        return Err(EngineError::AccessDenied(format!(
            "spec.sourceRef: GitRepository {sns}/{sname} is in another namespace, and cross-namespace references are switched off (--no-cross-namespace-refs)"
        )));
    }
    let source = snap
        .source
        .clone()
        .ok_or_else(|| EngineError::Source(format!("GitRepository {sns}/{sname} not found")))?;
    plan::check_source_url(&source.spec.url).map_err(|e| match e {
        plan::PlanError::Source { message, .. } => EngineError::Plan(plan::PlanError::Source {
            field: "spec.sourceRef",
            message: format!("GitRepository {sns}/{sname}: spec.url {message}"),
        }),
        other => EngineError::Plan(other),
    })?;
    let target = plan::push_target(&a.spec, Some(&source.spec))?;
    let path = plan::update_path(&a.spec)?;
    let selected = plan::selected_policies(&a.spec, &ns, snap.policies.iter().map(|p| p.as_ref()))?;
    let images: BTreeMap<String, ImageRef> = selected
        .into_iter()
        .filter_map(|p| {
            let latest = p.status.as_ref()?.latest_ref.clone()?;
            Some((format!("{ns}:{}", p.name_any()), latest))
        })
        .collect();
    // push_target refuses a spec without `git`.
    let commit = a.spec.git.as_ref().map(|g| &g.commit).ok_or_else(|| {
        EngineError::Plan(plan::PlanError::Source {
            field: "spec.git",
            message: "not set".into(),
        })
    })?;
    let author = Signature {
        name: commit
            .author
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| commit.author.email.clone()),
        email: commit.author.email.clone(),
    };
    Ok(RunWork {
        source,
        target,
        path,
        author,
        images,
    })
}

/// Whether the last run checked out what the target names now: a branch
/// checkout (`<branch>@sha1:...`) whose branch changed (in the
/// GitRepository, say) must run again before the interval is up. Other
/// checkouts are compared at the interval.
fn same_checkout(target: &PushTarget, observed: Option<&str>) -> bool {
    let Some(r) = &target.checkout else {
        return true;
    };
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    match r.branch.as_deref().filter(|b| !b.is_empty()) {
        Some(b) if !(set(&r.commit) || set(&r.name) || set(&r.tag) || set(&r.semver)) => {
            observed.is_some_and(|o| o.starts_with(&format!("{b}@sha1:")))
        }
        _ => true,
    }
}

/// The whole logic of an ImageUpdateAutomation's reconciliation.
pub fn decide(
    a: &ImageUpdateAutomation,
    snap: &AutomationSnapshot,
    now: &Time,
) -> Step<RunWork, ImageUpdateAutomationStatus> {
    let before = a.status.clone().unwrap_or_default();
    if a.spec.suspend {
        return Step::Done(Decision::unchanged(before));
    }
    let generation = a.meta().generation.unwrap_or(0);
    let requested = requested_at(a);
    let interval = interval(a);
    let mut status = before.clone();
    status.observed_generation = generation;
    if requested.is_some() {
        status.last_handled_reconcile_at.clone_from(&requested);
    }
    let fail = |mut status: ImageUpdateAutomationStatus, e: &EngineError| {
        conditions::failed_with(&mut status.conditions, e, generation, now);
        let message = e.to_string();
        let notes = if before.conditions.iter().all(|c| c.message != message) {
            vec![Note::warning(e.reason(), message, "Reconcile")]
        } else {
            Vec::new()
        };
        Step::Done(Decision {
            status,
            notes,
            requeue: Requeue::after_failure(e, Some(interval)),
            failure: Some(e.reason()),
        })
    };
    let work = match plan(a, snap) {
        Ok(w) => w,
        Err(e) => return fail(status, &e),
    };
    let Some(run) = &snap.run else {
        // Nothing new since the last successful run: wait for the
        // interval (Flux checks the remote head then).
        let since = elapsed(&before.last_automation_run_time, now);
        let unchanged = before.observed_policies.as_ref() == Some(&work.images)
            && same_checkout(&work.target, before.observed_source_revision.as_deref())
            && conditions::is_ready(&before.conditions)
            && before.observed_generation == generation
            && (requested.is_none() || requested == before.last_handled_reconcile_at)
            && since.is_some_and(|e| e < interval);
        if unchanged {
            let left = interval.saturating_sub(since.unwrap_or_default());
            return Step::Done(Decision {
                requeue: Requeue::After(left.max(Duration::from_secs(1))),
                ..Decision::unchanged(before)
            });
        }
        return Step::Work(work);
    };
    status.last_automation_run_time = Some(now.clone());
    match run {
        Err(e) => fail(status, e),
        Ok(ran) => {
            status.observed_policies = Some(work.images);
            status.observed_source_revision = Some(ran.source_revision.clone());
            let branch = &work.target.branch;
            let mut notes = Vec::new();
            let message = match &ran.pushed {
                Some(c) => {
                    status.last_push_commit = Some(c.clone());
                    status.last_push_time = Some(now.clone());
                    notes.push(Note::normal(
                        conditions::SUCCEEDED,
                        format!(
                            "Committed and pushed commit {c} to branch {branch}: {} change(s) in {} file(s)",
                            ran.changes, ran.files
                        ),
                        "Push",
                    ));
                    format!("pushed commit {} to branch {branch}", &c[..c.len().min(12)])
                }
                None => "repository up-to-date".to_string(),
            };
            conditions::ready(&mut status.conditions, &message, generation, now);
            Step::Done(Decision {
                status,
                notes,
                requeue: Requeue::After(interval),
                failure: None,
            })
        }
    }
}

impl Kind for ImageUpdateAutomation {
    const KIND: &'static str = "ImageUpdateAutomation";
    type Status = ImageUpdateAutomationStatus;
    type Snapshot = AutomationSnapshot;
    type Work = RunWork;

    fn status(&self) -> Option<&ImageUpdateAutomationStatus> {
        self.status.as_ref()
    }

    fn cache(ctx: &Context) -> Option<Arc<super::watches::Shared<Self>>> {
        Some(ctx.caches.automations.clone())
    }

    async fn snapshot(&self, ctx: &Context) -> AutomationSnapshot {
        let ns = self.namespace().unwrap_or_default();
        let (sns, sname) = source_of(self);
        AutomationSnapshot {
            cross_namespace_refs: ctx.options.cross_namespace_refs,
            source: ctx.caches.sources.get(&sns, &sname),
            policies: ctx
                .caches
                .policies
                .state()
                .into_iter()
                .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
                .collect(),
            run: None,
        }
    }

    fn decide(
        &self,
        snap: &AutomationSnapshot,
        now: &Time,
    ) -> Step<RunWork, ImageUpdateAutomationStatus> {
        decide(self, snap, now)
    }

    async fn work(&self, ctx: &Context, snap: &mut AutomationSnapshot, work: RunWork) {
        snap.run = Some(run(ctx, self, work).await);
    }

    async fn cleanup(&self, ctx: &Context) {
        if let Some(ns) = &ctx.options.markers_namespace {
            super::markers::remove(&ctx.client, ns, self).await;
        }
    }
}

/// The run: credentials, the signing key, the engine's commit and push,
/// and the marker index published.
async fn run(ctx: &Context, a: &ImageUpdateAutomation, work: RunWork) -> Result<Ran, EngineError> {
    let ns = a.namespace().unwrap_or_default();
    let source = &work.source;
    let timeout = source
        .spec
        .timeout
        .as_deref()
        .and_then(crate::api::parse_duration);
    let auth = super::secrets::git_auth(&ctx.client, source, timeout).await?;
    let commit = a.spec.git.as_ref().map(|g| &g.commit);
    let signer = match commit.and_then(|c| c.signing_key.as_ref()) {
        Some(k) => Some(ctx.signer(&ns, k).await?),
        None => None,
    };
    let job = AutomationJob {
        cache_dir: ctx.git_cache(),
        url: source.spec.url.clone(),
        auth,
        target: work.target.clone(),
        commit: CommitRequest {
            path: work.path.clone(),
            author: work.author.clone(),
            template: commit.and_then(|c| c.message_template.clone()),
            values: commit
                .and_then(|c| c.message_template_values.clone())
                .unwrap_or_default(),
            automation: (ns, a.name_any()),
            signer,
        },
        images: work.images.clone(),
        dry_run: false,
        index_markers: ctx.options.markers_namespace.is_some(),
        fence: ctx.fence.clone(),
    };
    let result = ctx.engine.update(job).await;
    match &result {
        Ok(r) if r.pushed => ctx
            .metrics
            .inc("imageauto_git_push_total", &[("result", "pushed")]),
        Err(EngineError::Git(_)) => ctx
            .metrics
            .inc("imageauto_git_push_total", &[("result", "failed")]),
        _ => {}
    }
    let result = result?;
    if let Some(mns) = &ctx.options.markers_namespace
        && let Err(e) = super::markers::publish(
            &ctx.client,
            mns,
            ctx.caches.markers.as_deref(),
            a,
            &result.markers,
        )
        .await
    {
        tracing::warn!(automation = %super::shell::key(a), "{e}");
    }
    Ok(Ran {
        pushed: result.commit.clone().filter(|_| result.pushed),
        source_revision: result.source_revision,
        files: result.files.len(),
        changes: result.files.iter().map(|f| f.changes.len()).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{at, automation, git_repository, policy};

    fn with_latest(name: &str, tag: &str) -> Arc<ImagePolicy> {
        let mut p = policy(name, "1.x", "Never");
        p.status = Some(crate::api::ImagePolicyStatus {
            latest_ref: Some(ImageRef {
                name: format!("ghcr.io/org/{name}"),
                tag: tag.into(),
                digest: None,
            }),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn snapshot(policies: Vec<Arc<ImagePolicy>>) -> AutomationSnapshot {
        AutomationSnapshot {
            cross_namespace_refs: true,
            source: Some(Arc::new(git_repository("fleet", "main"))),
            policies,
            run: None,
        }
    }

    fn done(
        step: Step<RunWork, ImageUpdateAutomationStatus>,
    ) -> Decision<ImageUpdateAutomationStatus> {
        match step {
            Step::Done(d) => d,
            Step::Work(w) => panic!("expected a decision, got work {w:?}"),
        }
    }

    fn pushed(commit: &str) -> Ran {
        Ran {
            pushed: Some(commit.into()),
            source_revision: "main@sha1:abc".into(),
            files: 1,
            changes: 2,
        }
    }

    #[test]
    fn a_run_with_the_selected_policies_then_nothing_until_something_changes() {
        let mut a = automation("fleet", "1h", Some("flux-image-updates"));
        let mut snap = snapshot(vec![
            with_latest("web", "1.2.0"),
            with_latest("api", "2.0.0"),
        ]);
        let Step::Work(work) = decide(&a, &snap, &at(0)) else {
            panic!("a first run")
        };
        assert_eq!(work.images.len(), 2);
        assert_eq!(work.images["apps:web"].tag, "1.2.0");
        assert_eq!(work.target.branch, "flux-image-updates");
        assert_eq!(work.path, "", "the repository root");
        snap.run = Some(Ok(pushed("0123456789abcdef0123")));
        let d = done(decide(&a, &snap, &at(0)));
        let s = &d.status;
        assert_eq!(s.last_push_commit.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(s.observed_source_revision.as_deref(), Some("main@sha1:abc"));
        assert_eq!(s.observed_policies.as_ref().unwrap().len(), 2);
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(3600)));
        assert_eq!(d.notes.len(), 1);
        assert_eq!(
            s.conditions[0].message,
            "pushed commit 0123456789ab to branch flux-image-updates"
        );
        a.status = Some(d.status);
        // Ten minutes on, the same images: nothing to do before the interval.
        let snap = snapshot(vec![
            with_latest("web", "1.2.0"),
            with_latest("api", "2.0.0"),
        ]);
        let d = done(decide(&a, &snap, &at(600)));
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(3000)));
        assert_eq!(Some(&d.status), a.status.as_ref());
        // A policy moved: run. A policy deleted: run, and it leaves
        // observedPolicies.
        let moved = snapshot(vec![
            with_latest("web", "1.3.0"),
            with_latest("api", "2.0.0"),
        ]);
        assert!(matches!(decide(&a, &moved, &at(600)), Step::Work(_)));
        let mut fewer = snapshot(vec![with_latest("web", "1.2.0")]);
        let Step::Work(work) = decide(&a, &fewer, &at(600)) else {
            panic!("a run after a deletion")
        };
        assert_eq!(work.images.len(), 1);
        fewer.run = Some(Ok(Ran {
            pushed: None,
            ..pushed("x")
        }));
        let d = done(decide(&a, &fewer, &at(600)));
        let observed = d.status.observed_policies.as_ref().unwrap();
        assert_eq!(observed.keys().collect::<Vec<_>>(), ["apps:web"]);
        assert_eq!(d.status.conditions[0].message, "repository up-to-date");
        assert!(d.notes.is_empty());
        // The interval elapsed: run (Flux looks at the remote then).
        assert!(matches!(decide(&a, &snap, &at(3600)), Step::Work(_)));
        // The GitRepository now names another branch: run at once.
        let mut moved_source = snapshot(vec![
            with_latest("web", "1.2.0"),
            with_latest("api", "2.0.0"),
        ]);
        moved_source.source = Some(Arc::new(git_repository("fleet", "release")));
        let mut on_source = a.clone();
        on_source.spec.git.as_mut().unwrap().checkout = None;
        assert!(matches!(
            decide(&on_source, &moved_source, &at(600)),
            Step::Work(_)
        ));
        let same_source = snapshot(vec![
            with_latest("web", "1.2.0"),
            with_latest("api", "2.0.0"),
        ]);
        assert!(matches!(
            decide(&on_source, &same_source, &at(600)),
            Step::Done(_)
        ));
    }

    #[test]
    fn a_reconcile_request_runs_now() {
        let mut a = automation("fleet", "1h", None);
        let mut snap = snapshot(vec![with_latest("web", "1.2.0")]);
        snap.run = Some(Ok(pushed("abc")));
        a.status = Some(done(decide(&a, &snap, &at(0))).status);
        snap.run = None;
        a.annotations_mut().insert(
            crate::api::RECONCILE_REQUEST_ANNOTATION.into(),
            "now-1".into(),
        );
        assert!(matches!(decide(&a, &snap, &at(10)), Step::Work(_)));
        snap.run = Some(Ok(pushed("def")));
        let d = done(decide(&a, &snap, &at(10)));
        assert_eq!(d.status.last_handled_reconcile_at.as_deref(), Some("now-1"));
    }

    #[test]
    fn failures_stall_or_retry_as_their_cause_says() {
        let a = automation("fleet", "1h", None);
        // The source is missing: retried.
        let mut snap = snapshot(vec![]);
        snap.source = None;
        let d = done(decide(&a, &snap, &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("SourceManagerFailed"), Requeue::Backoff)
        );
        // Another namespace's source with cross-namespace references off.
        let mut other = a.clone();
        other.spec.source_ref.namespace = Some("elsewhere".into());
        let mut snap = snapshot(vec![]);
        snap.cross_namespace_refs = false;
        let d = done(decide(&other, &snap, &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("AccessDenied"), Requeue::Never)
        );
        // A push rejected: retried with backoff, the run time recorded.
        let mut snap = snapshot(vec![with_latest("web", "1.2.0")]);
        snap.run = Some(Err(EngineError::Git(
            crate::git::GitError::NonFastForward {
                url: "https://git.example.com/fleet".into(),
                refname: "refs/heads/main".into(),
            },
        )));
        let d = done(decide(&a, &snap, &at(5)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("GitOperationFailed"), Requeue::Backoff)
        );
        assert_eq!(d.status.last_automation_run_time, Some(at(5)));
        assert!(d.status.observed_policies.is_none());
        assert_eq!(d.notes.len(), 1);
        // A signing key that cannot sign: at the interval, not sooner.
        snap.run = Some(Err(EngineError::SigningKey("wrong passphrase".into())));
        let d = done(decide(&a, &snap, &at(5)));
        assert_eq!(
            d.requeue,
            Requeue::BackoffAtLeast(Duration::from_secs(3600))
        );
        // A source URL of the controller's own disk: stalled, whatever the
        // CRD allowed.
        let mut local = snapshot(vec![]);
        let mut g = git_repository("fleet", "main");
        g.spec.url = "/var/lib/imageauto".into();
        local.source = Some(Arc::new(g));
        let d = done(decide(&a, &local, &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("InvalidSourceConfiguration"), Requeue::Never)
        );
        assert!(
            d.status.conditions[0].message.contains("spec.url"),
            "{:?}",
            d.status.conditions
        );
        // A policy selector that does not parse: stalled.
        let mut bad = a.clone();
        bad.spec.policy_selector = Some(
            serde_json::from_value(serde_json::json!({
                "matchExpressions": [{"key": "k", "operator": "Bogus", "values": ["v"]}]
            }))
            .unwrap(),
        );
        let d = done(decide(&bad, &snapshot(vec![]), &at(0)));
        assert_eq!(d.requeue, Requeue::Never);
        assert!(d.failure.is_some());
    }

    #[test]
    fn suspended_does_nothing() {
        let mut a = automation("fleet", "1h", None);
        a.spec.suspend = true;
        let d = done(decide(&a, &snapshot(vec![]), &at(0)));
        assert_eq!(
            d,
            Decision::unchanged(ImageUpdateAutomationStatus::default())
        );
    }
}
