//! ImageUpdateAutomation: on its interval, and when a selected policy's
//! latest image changes, apply the policies' images to the GitRepository's
//! files under `update.path`, commit and push through the engine (the
//! repository's cache, its lock, the push retries), and write Flux's status.
//! [`decide`] is the whole logic, pure; the run itself is the work.

use super::Context;
use super::conditions;
use super::decision::{Decision, Requeue, Step, notify};
use super::shell::{Kind, elapsed, requested_at};
use crate::api::plan::{self, PushTarget};
use crate::api::{
    BadDuration, GitRepository, ImagePolicy, ImageRef, ImageUpdateAutomation,
    ImageUpdateAutomationStatus, ResourceExt,
};
use crate::engine::EngineError;
use crate::engine::automation::AutomationJob;
use crate::engine::update::CommitRequest;
use crate::git::Signature;
use crate::git::forge::{self, ForgeKind, PullRequest};
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
    pub run: Option<Result<Ran, RunFailure>>,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ran {
    /// The commit pushed (full SHA), when there was something to change.
    pub pushed: Option<String>,
    /// The pushed commit's message.
    pub message: Option<String>,
    /// Flux's `observedSourceRevision`.
    pub source_revision: String,
    /// Whether the push branch differs from the checkout's.
    pub switched: bool,
    pub files: usize,
    pub changes: usize,
    /// The pull request opened or updated after the push (an error: why
    /// not), when one was asked for.
    pub pull_request: Option<Result<PullRequest, String>>,
}

/// Where a run failed, in Flux's terms
/// (image-automation-controller `internal/controller/imageupdateautomation_controller.go`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedAt {
    /// The source manager: credentials, the signing key (Flux's
    /// `SourceManagerFailed`, `failed configuring source manager: …`).
    SourceManager,
    /// `GitOperationFailed`, `failed to checkout source: …`.
    Checkout,
    /// `UpdateFailed`, `failed to apply policies: …`.
    Apply,
    /// `GitOperationFailed`, `failed to update source: …`.
    Update,
    /// The GitRepository and its Secret disagree (a GitHub App Secret
    /// without `provider: github`, or the reverse): Flux's
    /// `InvalidSourceConfiguration`, stalled.
    InvalidSource,
    /// The provider's credentials were refused (a GitHub App's token
    /// exchange): `AuthenticationFailed`, retried. (Flux's
    /// image-automation-controller says `SourceManagerFailed` here;
    /// source-controller, `AuthenticationFailed`.)
    Authentication,
}

/// A run that failed.
#[derive(Debug)]
pub struct RunFailure {
    pub stage: FailedAt,
    pub error: EngineError,
}

/// The work: one run of the automation.
#[derive(Clone, Debug, PartialEq)]
pub struct RunWork {
    pub source: Arc<GitRepository>,
    pub target: PushTarget,
    pub path: String,
    pub author: Signature,
    pub images: BTreeMap<String, ImageRef>,
    /// A pull request to open after a push (`imageauto.dev/pull-request`).
    pub pull_request: Option<PullRequestWork>,
}

/// What an automation asks of its pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestWork {
    /// The branch it goes into.
    pub base: String,
    /// The forge, when the annotation `imageauto.dev/forge` names it.
    pub forge: Option<ForgeKind>,
    /// The last call failed: call again even when nothing is pushed.
    pub pending: bool,
}

/// The condition that holds the pull request's URL (`status.conditions`
/// takes any type in Flux's schema): True with the URL as its message,
/// False with why the last call failed.
pub const PULL_REQUEST_CONDITION: &str = "PullRequest";

/// The pull request an automation asks for, from its annotations, or why
/// the annotations cannot work (stalled: they change with the object).
fn pull_request_of(
    a: &ImageUpdateAutomation,
    push_branch: &str,
) -> Result<Option<PullRequestWork>, String> {
    let Some(base) = a.annotations().get(forge::PULL_REQUEST_ANNOTATION) else {
        return Ok(None);
    };
    let base = base.trim();
    let base = base.strip_prefix("refs/heads/").unwrap_or(base);
    if base.is_empty() {
        return Err(format!(
            "annotation {}: give the base branch the pull requests go into",
            forge::PULL_REQUEST_ANNOTATION
        ));
    }
    if base == push_branch {
        return Err(format!(
            "annotation {}: the base branch '{base}' is the push branch: set spec.git.push.branch to another branch",
            forge::PULL_REQUEST_ANNOTATION
        ));
    }
    let forge = match a.annotations().get(forge::FORGE_ANNOTATION) {
        None => None,
        Some(f) => Some(ForgeKind::parse(f).ok_or_else(|| {
            format!(
                "annotation {}: '{f}' is not github, gitlab or gitea",
                forge::FORGE_ANNOTATION
            )
        })?),
    };
    let pending = a
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == PULL_REQUEST_CONDITION)
        })
        .is_some_and(|c| c.status == "False");
    Ok(Some(PullRequestWork {
        base: base.to_string(),
        forge,
        pending,
    }))
}

/// The next run after `interval`: none for zero, as Flux's
/// `RequeueAfter: 0` (runs come from changes and requests only).
fn every(interval: Duration) -> Requeue {
    if interval.is_zero() {
        Requeue::Never
    } else {
        Requeue::After(interval.max(Duration::from_secs(1)))
    }
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

/// How a reconciliation ends before its run.
enum Short {
    Stalled(&'static str, String),
    Retried(&'static str, String),
}

/// Flux's source manager: what the run needs, or why it cannot start.
fn plan(
    a: &ImageUpdateAutomation,
    snap: &AutomationSnapshot,
    images: BTreeMap<String, ImageRef>,
) -> Result<RunWork, Short> {
    let ns = a.namespace().unwrap_or_default();
    let source_ref = &a.spec.source_ref;
    let invalid = |m: String| {
        Short::Stalled(
            "InvalidSourceConfiguration",
            format!("{m}: invalid source configuration"),
        )
    };
    let failed = |m: String| {
        Short::Retried(
            "SourceManagerFailed",
            format!("failed configuring source manager: {m}"),
        )
    };
    if source_ref.kind != "GitRepository" {
        return Err(invalid(format!(
            "source kind '{}' not supported",
            source_ref.kind
        )));
    }
    let Some(git) = a.spec.git.as_ref() else {
        return Err(invalid(
            "source kind 'GitRepository' necessitates field .spec.git".into(),
        ));
    };
    let (sns, sname) = source_of(a);
    if sns != ns && !snap.cross_namespace_refs {
        return Err(Short::Stalled(
            "AccessDenied",
            format!(
                "can't access 'GitRepository/{sns}/{sname}', cross-namespace references have been blocked"
            ),
        ));
    }
    let Some(source) = snap.source.clone() else {
        return Err(failed(format!(
            "referenced git repository does not exist: gitrepositories.source.toolkit.fluxcd.io \"{sname}\" not found"
        )));
    };
    if let Err(plan::PlanError::Source { message, .. }) = plan::check_source_url(&source.spec.url) {
        return Err(invalid(format!(
            "GitRepository {sns}/{sname}: spec.url {message}"
        )));
    }
    match source.spec.provider.as_deref().unwrap_or("generic") {
        "" | "generic" => {}
        "github" if source.spec.secret_ref.is_none() => {
            return Err(invalid(
                "secretRef with github app data must be specified when provider is set to github"
                    .into(),
            ));
        }
        "github" => {}
        p @ ("azure" | "aws") => {
            return Err(Short::Stalled(
                "InvalidSourceConfiguration",
                format!(
                    "GitRepository {sns}/{sname}: spec.provider '{p}' is not supported by imageauto yet (generic and github are): use a Secret with credentials and provider generic"
                ),
            ));
        }
        p => {
            return Err(invalid(format!(
                "GitRepository {sns}/{sname}: spec.provider '{p}' is not one of generic, github, azure, aws"
            )));
        }
    }
    let target =
        plan::push_target(&a.spec, Some(&source.spec)).map_err(|e| failed(e.to_string()))?;
    let pull_request =
        pull_request_of(a, &target.branch).map_err(|m| Short::Stalled("InvalidPullRequest", m))?;
    let author = Signature {
        name: git
            .commit
            .author
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| git.commit.author.email.clone()),
        email: git.commit.author.email.clone(),
    };
    Ok(RunWork {
        source,
        target,
        path: plan::update_path_within(&a.spec),
        author,
        images,
        pull_request,
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

/// Flux's `PushResult.Summary()`: the push event's message.
fn summary(commit: &str, target: &PushTarget, message: Option<&str>) -> String {
    let short = &commit[..commit.len().min(7)];
    let mut s = format!("pushed commit '{short}' to branch '{}'", target.branch);
    if let Some(r) = &target.refspec {
        s.push_str(&format!(" and refspecs '{r}'"));
    }
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        s.push('\n');
        s.push_str(m);
    }
    s
}

/// Flux's Ready message of an automation.
const READY_MESSAGE: &str = "repository up-to-date";

/// The whole logic of an ImageUpdateAutomation's reconciliation, as Flux's
/// image-automation-controller does it
/// (`internal/controller/imageupdateautomation_controller.go`).
pub fn decide(
    a: &ImageUpdateAutomation,
    snap: &AutomationSnapshot,
    now: &Time,
) -> Step<RunWork, ImageUpdateAutomationStatus> {
    let before = a.status.clone().unwrap_or_default();
    if a.spec.suspend {
        return Step::Done(Decision::unchanged(before));
    }
    let ns = a.namespace().unwrap_or_default();
    let generation = a.meta().generation.unwrap_or(0);
    let requested = requested_at(a);
    let interval = a.spec.interval();
    let mut status = before.clone();
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
    } else if requested.is_some() && requested != before.last_handled_reconcile_at {
        persist = true;
    }
    let finish = |mut status: ImageUpdateAutomationStatus,
                  end: conditions::End<'_>,
                  requeue: Requeue,
                  news: Option<&str>,
                  quiet: &str| {
        status.last_automation_run_time = Some(now.clone());
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
        let note = notify(
            &before.conditions,
            &status.conditions,
            news,
            quiet,
            "Reconcile",
        );
        Step::Done(Decision {
            status,
            notes: vec![note],
            requeue,
            failure,
        })
    };
    let short = |status, s: Short| match s {
        Short::Stalled(r, m) => finish(
            status,
            conditions::End::Stalled(r, &m),
            Requeue::Never,
            None,
            "",
        ),
        Short::Retried(r, m) => finish(
            status,
            conditions::End::Retried(r, &m),
            Requeue::Backoff,
            None,
            "",
        ),
    };
    let interval = match interval {
        Ok(d) => d,
        Err(e) => return short(status, Short::Stalled(BadDuration::REASON, e.to_string())),
    };
    // The selected policies with a latest image, by name.
    let selected =
        match plan::selected_policies(&a.spec, &ns, snap.policies.iter().map(|p| p.as_ref())) {
            Ok(p) => p,
            Err(e) => {
                return short(
                    status,
                    Short::Stalled("InvalidPolicySelector", e.to_string()),
                );
            }
        };
    let mut images: BTreeMap<String, ImageRef> = BTreeMap::new();
    let mut observed: BTreeMap<String, ImageRef> = BTreeMap::new();
    for p in selected {
        if let Some(latest) = p.status.as_ref().and_then(|s| s.latest_ref.clone()) {
            images.insert(format!("{ns}:{}", p.name_any()), latest.clone());
            observed.insert(p.name_any(), latest);
        }
    }
    let work = match plan(a, snap, images) {
        Ok(w) => w,
        Err(s) => return short(status, s),
    };
    let policies_changed = before.observed_policies.as_ref() != Some(&observed);
    let Some(run) = &snap.run else {
        // Nothing new since the last successful run: wait for the
        // interval (Flux checks the remote head then).
        let since = elapsed(&before.last_automation_run_time, now);
        let pr_pending = work.pull_request.as_ref().is_some_and(|p| p.pending);
        let unchanged = !policies_changed
            && !pr_pending
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
        return if persist {
            Step::Persist(status, work)
        } else {
            Step::Work(work)
        };
    };
    match run {
        Err(f) => {
            let (reason, prefix) = match f.stage {
                FailedAt::SourceManager => {
                    ("SourceManagerFailed", "failed configuring source manager")
                }
                FailedAt::Checkout => ("GitOperationFailed", "failed to checkout source"),
                FailedAt::Apply => ("UpdateFailed", "failed to apply policies"),
                FailedAt::Update => ("GitOperationFailed", "failed to update source"),
                FailedAt::Authentication => (
                    "AuthenticationFailed",
                    "failed configuring source manager: failed to configure authentication options",
                ),
                FailedAt::InvalidSource => {
                    let m = f.error.to_string();
                    return finish(
                        status,
                        conditions::End::Stalled("InvalidSourceConfiguration", &m),
                        Requeue::Never,
                        None,
                        "",
                    );
                }
            };
            let m = format!("{prefix}: {}", f.error);
            finish(
                status,
                conditions::End::Retried(reason, &m),
                Requeue::Backoff,
                None,
                "",
            )
        }
        Ok(ran) => {
            let sync_needed = policies_changed
                || ran.switched
                || work.target.refspec.is_some()
                || before.observed_source_revision.as_deref() != Some(ran.source_revision.as_str());
            status.observed_policies = Some(observed);
            status.observed_source_revision = Some(ran.source_revision.clone());
            let news = ran.pushed.as_ref().map(|c| {
                status.last_push_commit = Some(c.clone());
                status.last_push_time = Some(now.clone());
                summary(c, &work.target, ran.message.as_deref())
            });
            let quiet = if sync_needed {
                READY_MESSAGE
            } else {
                "no change since last reconciliation"
            };
            let pr_note = pull_request_outcome(
                &mut status.conditions,
                work.pull_request.as_ref(),
                ran.pull_request.as_ref(),
                &work.target.branch,
                generation,
                now,
            );
            let step = finish(
                status,
                conditions::End::Ready(READY_MESSAGE),
                every(interval),
                news.as_deref(),
                quiet,
            );
            match (step, pr_note) {
                (Step::Done(mut d), Some(note)) => {
                    if note.is_warning() {
                        // The push stands; the pull request is tried again.
                        d.requeue = Requeue::Backoff;
                        d.failure = Some("PullRequestFailed");
                    }
                    d.notes.push(note);
                    Step::Done(d)
                }
                (step, _) => step,
            }
        }
    }
}

/// The pull request's condition and event after a run: opened or updated
/// (an Info event with its URL), failed (a Warning; the push stands), or no
/// longer asked for (the condition goes).
fn pull_request_outcome(
    conditions_: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    asked: Option<&PullRequestWork>,
    result: Option<&Result<PullRequest, String>>,
    head: &str,
    generation: i64,
    now: &Time,
) -> Option<super::decision::Note> {
    use super::decision::Note;
    let Some(asked) = asked else {
        conditions::remove(conditions_, PULL_REQUEST_CONDITION);
        return None;
    };
    let base = &asked.base;
    match result? {
        Ok(pr) => {
            let (reason, verb) = if pr.opened {
                ("PullRequestOpened", "opened")
            } else {
                ("PullRequestUpdated", "updated")
            };
            conditions::set(
                conditions_,
                PULL_REQUEST_CONDITION,
                true,
                reason,
                &pr.url,
                generation,
                now,
            );
            Some(Note::normal(
                reason,
                format!(
                    "{verb} pull request {} from '{head}' into '{base}': {}",
                    pr.number, pr.url
                ),
                "PullRequest",
            ))
        }
        Err(m) => {
            conditions::set(
                conditions_,
                PULL_REQUEST_CONDITION,
                false,
                "PullRequestFailed",
                m,
                generation,
                now,
            );
            Some(Note::warning(
                "PullRequestFailed",
                format!("the push stands, but the pull request into '{base}' failed: {m}"),
                "PullRequest",
            ))
        }
    }
}

impl Kind for ImageUpdateAutomation {
    const KIND: &'static str = "ImageUpdateAutomation";
    type Snapshot = AutomationSnapshot;
    type Work = RunWork;

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
async fn run(ctx: &Context, a: &ImageUpdateAutomation, work: RunWork) -> Result<Ran, RunFailure> {
    let ns = a.namespace().unwrap_or_default();
    let source = &work.source;
    let source_manager = |error| RunFailure {
        stage: FailedAt::SourceManager,
        error,
    };
    let timeout = source.spec.timeout().map_err(|e| RunFailure {
        stage: FailedAt::InvalidSource,
        error: EngineError::Unreadable(e.into()),
    })?;
    let super::secrets::SourceAuth { auth, app } =
        super::secrets::git_auth(&ctx.client, source, timeout, &ctx.github_tokens)
            .await
            .map_err(|e| match e {
                super::secrets::GitAuthError::Invalid(m) => RunFailure {
                    stage: FailedAt::InvalidSource,
                    error: EngineError::Source(m),
                },
                super::secrets::GitAuthError::Authentication(m) => RunFailure {
                    stage: FailedAt::Authentication,
                    error: EngineError::Source(m),
                },
                super::secrets::GitAuthError::Source(e) => source_manager(e),
            })?;
    let forge_auth = auth.clone();
    let commit = a.spec.git.as_ref().map(|g| &g.commit);
    let signer = match commit.and_then(|c| c.signing_key.as_ref()) {
        Some(k) => Some(ctx.signer(&ns, k).await.map_err(source_manager)?),
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
    let result = ctx.engine.update_staged(job).await;
    match &result {
        Ok(r) if r.pushed => ctx.metrics.pushed(true),
        Err(e) if e.stage == crate::engine::automation::Stage::Update => ctx.metrics.pushed(false),
        _ => {}
    }
    let result = result.map_err(|e| RunFailure {
        stage: match e.stage {
            crate::engine::automation::Stage::Checkout => FailedAt::Checkout,
            crate::engine::automation::Stage::Apply => FailedAt::Apply,
            crate::engine::automation::Stage::Update => FailedAt::Update,
        },
        error: e.error,
    })?;
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
    let pull_request = match &work.pull_request {
        Some(pr) if result.pushed || pr.pending => {
            Some(open_pull_request(ctx, &work, pr, &forge_auth, app.as_ref()).await)
        }
        _ => None,
    };
    Ok(Ran {
        pushed: result.commit.clone().filter(|_| result.pushed),
        message: result.message.clone(),
        source_revision: result.source_revision,
        switched: result.switched,
        files: result.files.len(),
        changes: result.files.iter().map(|f| f.changes.len()).sum(),
        pull_request,
    })
}

/// The token a forge's API takes from a GitRepository's credentials: the
/// GitHub App's installation token, else the Secret's `password` (a
/// personal, project or deploy token), else its `bearerToken`.
pub fn forge_token(auth: &crate::git::GitAuth) -> Option<forge::ForgeToken> {
    match (&auth.password, &auth.bearer_token) {
        (Some(p), _) if !p.is_empty() => Some(forge::ForgeToken::Token(p.clone())),
        (_, Some(b)) if !b.is_empty() => Some(forge::ForgeToken::Bearer(b.clone())),
        _ => None,
    }
}

/// Opens or updates the pull request from the push branch into the base,
/// on the GitRepository's forge, with the GitRepository's credentials.
async fn open_pull_request(
    ctx: &Context,
    work: &RunWork,
    pr: &PullRequestWork,
    auth: &crate::git::GitAuth,
    app: Option<&crate::git::github::App>,
) -> Result<PullRequest, String> {
    let source = &work.source;
    let repo = forge::locate(
        &source.spec.url,
        pr.forge,
        app.map(|a| a.base_url.as_str()),
        &format!(
            "annotate the ImageUpdateAutomation with {}: github, gitlab or gitea",
            forge::FORGE_ANNOTATION
        ),
    )
    .map_err(|e| e.to_string())?;
    let token = forge_token(auth).ok_or_else(|| {
        let secret = source
            .spec
            .secret_ref
            .as_ref()
            .map_or("a Secret (spec.secretRef)".to_string(), |r| {
                format!("Secret {}/{}", source.namespace().unwrap_or_default(), r.name)
            });
        format!(
            "no token for {}'s API: {secret} of GitRepository {} needs password (a token that may open pull requests) or bearerToken, or the GitHub App keys with provider: github",
            repo.kind,
            source.name_any()
        )
    })?;
    let (message, changes) = ctx
        .engine
        .pull_request_facts(
            ctx.git_cache(),
            source.spec.url.clone(),
            work.target.branch.clone(),
            pr.base.clone(),
            work.path.clone(),
            work.images.clone(),
        )
        .await;
    let text = forge::pull_request_text(message.as_deref().unwrap_or(""), &changes);
    let http = crate::git::github::http_client(auth.ca_pem.as_deref())?;
    forge::open_or_update(&http, &repo, &token, &work.target.branch, &pr.base, &text)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    //! Each case pins what image-automation-controller's
    //! `internal/controller/imageupdateautomation_controller.go`
    //! (`reconcile`, `notify`) and `internal/source` write for it.
    use super::*;
    use crate::controller::decision::EventSeverity;
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
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    fn work(step: Step<RunWork, ImageUpdateAutomationStatus>) -> RunWork {
        match step {
            Step::Work(w) | Step::Persist(_, w) => w,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn ready(d: &Decision<ImageUpdateAutomationStatus>) -> (String, String, String) {
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn pushed(commit: &str) -> Ran {
        Ran {
            pushed: Some(commit.into()),
            message: Some("Update images\n\n- web".into()),
            source_revision: "main@sha1:abc".into(),
            switched: true,
            files: 1,
            changes: 2,
            pull_request: None,
        }
    }

    #[test]
    fn a_zero_interval_runs_on_changes_only() {
        let a = automation("fleet", "0s", Some("flux-image-updates"));
        let mut snap = snapshot(vec![with_latest("web", "1.2.0")]);
        snap.run = Some(Ok(pushed("0123456789abcdef0123")));
        let d = done(decide(&a, &snap, &at(0)));
        assert_eq!(d.requeue, Requeue::Never);
    }

    #[test]
    fn a_run_with_the_selected_policies_then_nothing_until_something_changes() {
        let mut a = automation("fleet", "1h", Some("flux-image-updates"));
        let mut snap = snapshot(vec![
            with_latest("web", "1.2.0"),
            with_latest("api", "2.0.0"),
        ]);
        let Step::Persist(progress, w) = decide(&a, &snap, &at(0)) else {
            panic!("a first run, after Flux's progress")
        };
        assert_eq!(
            progress.conditions[0].message,
            "processing object: new generation -1 -> 1"
        );
        assert_eq!(w.images.len(), 2);
        assert_eq!(w.images["apps:web"].tag, "1.2.0");
        assert_eq!(w.target.branch, "flux-image-updates");
        assert_eq!(w.path, "", "the repository root");
        snap.run = Some(Ok(pushed("0123456789abcdef0123")));
        let d = done(decide(&a, &snap, &at(0)));
        let s = &d.status;
        assert_eq!(s.last_push_commit.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(s.last_push_time, Some(at(0)));
        assert_eq!(s.observed_source_revision.as_deref(), Some("main@sha1:abc"));
        // Keyed by the policy's name, as Flux's.
        let keys: Vec<&String> = s.observed_policies.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["api", "web"]);
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(3600)));
        // Ready stays "repository up-to-date"; the push is the event.
        assert_eq!(
            ready(&d),
            (
                "True".into(),
                "Succeeded".into(),
                "repository up-to-date".into()
            )
        );
        assert_eq!(d.notes[0].severity, EventSeverity::Info);
        assert_eq!(d.notes[0].reason, "Succeeded");
        assert_eq!(
            d.notes[0].message,
            "pushed commit '0123456' to branch 'flux-image-updates'\nUpdate images\n\n- web"
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
        assert_eq!(work(decide(&a, &fewer, &at(600))).images.len(), 1);
        fewer.run = Some(Ok(Ran {
            pushed: None,
            ..pushed("x")
        }));
        let d = done(decide(&a, &fewer, &at(600)));
        let observed = d.status.observed_policies.as_ref().unwrap();
        assert_eq!(observed.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(ready(&d).2, "repository up-to-date");
        // Ready before and after, no push: Flux's trace.
        assert_eq!(d.notes[0].severity, EventSeverity::Trace);
        assert_eq!(d.notes[0].message, "repository up-to-date");
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
    fn no_change_since_the_last_reconciliation_is_a_trace() {
        let mut a = automation("fleet", "1h", None);
        let mut snap = snapshot(vec![with_latest("web", "1.2.0")]);
        snap.run = Some(Ok(Ran {
            pushed: None,
            switched: false,
            ..pushed("x")
        }));
        a.status = Some(done(decide(&a, &snap, &at(0))).status);
        let d = done(decide(&a, &snap, &at(3600)));
        assert_eq!(d.notes[0].severity, EventSeverity::Trace);
        assert_eq!(d.notes[0].message, "no change since last reconciliation");
        assert_eq!(d.status.last_automation_run_time, Some(at(3600)));
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
        // A request is persisted before the run, as Flux does.
        assert!(matches!(decide(&a, &snap, &at(10)), Step::Persist(..)));
        snap.run = Some(Ok(pushed("def")));
        let d = done(decide(&a, &snap, &at(10)));
        assert_eq!(d.status.last_handled_reconcile_at.as_deref(), Some("now-1"));
    }

    #[test]
    fn failures_stall_or_retry_as_fluxs_do() {
        let a = automation("fleet", "1h", None);
        // The source is missing: the source manager fails, retried.
        let mut snap = snapshot(vec![]);
        snap.source = None;
        let d = done(decide(&a, &snap, &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("SourceManagerFailed"), Requeue::Backoff)
        );
        assert_eq!(
            ready(&d).2,
            "failed configuring source manager: referenced git repository does not exist: gitrepositories.source.toolkit.fluxcd.io \"fleet\" not found"
        );
        assert_eq!(d.status.observed_generation, -1);
        let reconciling = &d.status.conditions[0];
        assert_eq!(
            (reconciling.type_.as_str(), reconciling.reason.as_str()),
            ("Reconciling", "ProgressingWithRetry")
        );
        // Another namespace's source with cross-namespace references off:
        // stalled.
        let mut other = a.clone();
        other.spec.source_ref.namespace = Some("elsewhere".into());
        let mut snap = snapshot(vec![]);
        snap.cross_namespace_refs = false;
        let d = done(decide(&other, &snap, &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("AccessDenied"), Requeue::Never)
        );
        assert_eq!(
            ready(&d).2,
            "can't access 'GitRepository/elsewhere/fleet', cross-namespace references have been blocked"
        );
        assert_eq!(d.status.observed_generation, 1);
        // Not a GitRepository: stalled.
        let mut bucket = a.clone();
        bucket.spec.source_ref.kind = "Bucket".into();
        let d = done(decide(&bucket, &snapshot(vec![]), &at(0)));
        assert_eq!(
            ready(&d),
            (
                "False".into(),
                "InvalidSourceConfiguration".into(),
                "source kind 'Bucket' not supported: invalid source configuration".into()
            )
        );
        // No push branch to infer: Flux's message, retried.
        let mut tagged = a.clone();
        tagged.spec.git.as_mut().unwrap().checkout = Some(crate::api::GitCheckoutSpec {
            reference: crate::api::GitRepositoryRef {
                tag: Some("v1".into()),
                ..Default::default()
            },
        });
        let d = done(decide(&tagged, &snapshot(vec![]), &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("SourceManagerFailed"), Requeue::Backoff)
        );
        assert_eq!(
            ready(&d).2,
            "failed configuring source manager: push spec not provided, and cannot be inferred from .spec.git.checkout.ref or GitRepository .spec.ref"
        );
        // Each stage of the run with its reason and prefix, all retried.
        let stages = [
            (
                FailedAt::SourceManager,
                "SourceManagerFailed",
                "failed configuring source manager: ",
            ),
            (
                FailedAt::Checkout,
                "GitOperationFailed",
                "failed to checkout source: ",
            ),
            (
                FailedAt::Apply,
                "UpdateFailed",
                "failed to apply policies: ",
            ),
            (
                FailedAt::Update,
                "GitOperationFailed",
                "failed to update source: ",
            ),
        ];
        for (stage, reason, prefix) in stages {
            let mut snap = snapshot(vec![with_latest("web", "1.2.0")]);
            snap.run = Some(Err(RunFailure {
                stage,
                error: EngineError::Source("it broke".into()),
            }));
            let d = done(decide(&a, &snap, &at(5)));
            assert_eq!(
                (d.failure, d.requeue),
                (Some(reason), Requeue::Backoff),
                "{stage:?}"
            );
            assert_eq!(ready(&d).2, format!("{prefix}it broke"));
            assert_eq!(d.status.last_automation_run_time, Some(at(5)));
            assert!(d.status.observed_policies.is_none());
            assert!(d.notes[0].is_warning());
        }
        // A policy selector that does not parse: stalled.
        let mut bad = a.clone();
        bad.spec.policy_selector = Some(
            serde_json::from_value(serde_json::json!({
                "matchExpressions": [{"key": "k", "operator": "Bogus", "values": ["v"]}]
            }))
            .unwrap(),
        );
        let d = done(decide(&bad, &snapshot(vec![]), &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("InvalidPolicySelector"), Requeue::Never)
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
        assert!(ready(&d).2.contains("spec.url"), "{:?}", ready(&d));
    }

    #[test]
    fn an_update_path_outside_the_checkout_stays_inside() {
        let mut a = automation("fleet", "1h", None);
        a.spec.update = Some(crate::api::UpdateStrategy {
            path: Some("../../etc".into()),
            ..Default::default()
        });
        let w = work(decide(
            &a,
            &snapshot(vec![with_latest("web", "1.2.0")]),
            &at(0),
        ));
        assert_eq!(w.path, "etc");
    }

    #[test]
    fn a_pull_request_after_the_push_with_its_url_in_a_condition_and_an_event() {
        let mut a = automation("fleet", "1h", Some("flux-image-updates"));
        a.annotations_mut()
            .insert(forge::PULL_REQUEST_ANNOTATION.into(), "main".into());
        let mut snap = snapshot(vec![with_latest("web", "1.2.0")]);
        let w = work(decide(&a, &snap, &at(0)));
        assert_eq!(
            w.pull_request,
            Some(PullRequestWork {
                base: "main".into(),
                forge: None,
                pending: false
            })
        );
        let url = "https://github.com/org/fleet/pull/7";
        snap.run = Some(Ok(Ran {
            pull_request: Some(Ok(PullRequest {
                url: url.into(),
                number: 7,
                opened: true,
            })),
            ..pushed("abc")
        }));
        let d = done(decide(&a, &snap, &at(0)));
        let pr = |d: &Decision<ImageUpdateAutomationStatus>| {
            let c = d
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == PULL_REQUEST_CONDITION)
                .unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        assert_eq!(
            pr(&d),
            ("True".into(), "PullRequestOpened".into(), url.into())
        );
        assert_eq!(ready(&d).0, "True");
        assert_eq!(d.notes.len(), 2);
        assert_eq!(d.notes[1].severity, EventSeverity::Info);
        assert_eq!(d.notes[1].reason, "PullRequestOpened");
        assert_eq!(
            d.notes[1].message,
            format!("opened pull request 7 from 'flux-image-updates' into 'main': {url}")
        );
        assert_eq!(d.requeue, Requeue::After(Duration::from_secs(3600)));
        // A failed call after the push: the push stands (Ready, its
        // commit), a warning, tried again with backoff.
        snap.run = Some(Ok(Ran {
            pull_request: Some(Err("github pull request: 401".into())),
            ..pushed("def")
        }));
        let d = done(decide(&a, &snap, &at(10)));
        assert_eq!(d.status.last_push_commit.as_deref(), Some("def"));
        assert_eq!(ready(&d).0, "True");
        assert_eq!(
            pr(&d),
            (
                "False".into(),
                "PullRequestFailed".into(),
                "github pull request: 401".into()
            )
        );
        assert!(d.notes[1].is_warning());
        assert_eq!(d.requeue, Requeue::Backoff);
        assert_eq!(d.failure, Some("PullRequestFailed"));
        // Nothing changed since, but the pull request is pending: run.
        a.status = Some(d.status);
        snap.run = None;
        assert!(
            work(decide(&a, &snap, &at(20)))
                .pull_request
                .unwrap()
                .pending
        );
        // The annotation gone: so is the condition.
        a.annotations_mut().remove(forge::PULL_REQUEST_ANNOTATION);
        snap.run = Some(Ok(pushed("123")));
        let d = done(decide(&a, &snap, &at(30)));
        assert!(
            !d.status
                .conditions
                .iter()
                .any(|c| c.type_ == PULL_REQUEST_CONDITION)
        );
    }

    #[test]
    fn pull_request_annotations_that_cannot_work_stall() {
        let stalled = |a: &ImageUpdateAutomation| {
            let d = done(decide(a, &snapshot(vec![]), &at(0)));
            assert_eq!(d.requeue, Requeue::Never);
            ready(&d)
        };
        // No push branch of its own: the base would be the push branch.
        let mut a = automation("fleet", "1h", None);
        a.annotations_mut()
            .insert(forge::PULL_REQUEST_ANNOTATION.into(), "main".into());
        let (_, reason, message) = stalled(&a);
        assert_eq!(reason, "InvalidPullRequest");
        assert!(message.contains("is the push branch"), "{message}");
        let mut a = automation("fleet", "1h", Some("updates"));
        a.annotations_mut()
            .insert(forge::PULL_REQUEST_ANNOTATION.into(), "main".into());
        a.annotations_mut()
            .insert(forge::FORGE_ANNOTATION.into(), "bitbucket".into());
        assert!(
            stalled(&a)
                .2
                .contains("'bitbucket' is not github, gitlab or gitea")
        );
        a.annotations_mut()
            .insert(forge::FORGE_ANNOTATION.into(), "GitLab".into());
        let w = work(decide(&a, &snapshot(vec![]), &at(0)));
        assert_eq!(w.pull_request.unwrap().forge, Some(ForgeKind::GitLab));
    }

    #[test]
    fn git_providers_it_cannot_use_stall_naming_the_field() {
        let a = automation("fleet", "1h", None);
        let with = |provider: &str, secret: bool| {
            let mut g = git_repository("fleet", "main");
            g.spec.provider = Some(provider.into());
            if secret {
                g.spec.secret_ref = Some(crate::api::LocalObjectReference { name: "app".into() });
            }
            let mut snap = snapshot(vec![]);
            snap.source = Some(Arc::new(g));
            decide(&a, &snap, &at(0))
        };
        let d = done(with("azure", true));
        assert_eq!(d.requeue, Requeue::Never);
        assert_eq!(ready(&d).1, "InvalidSourceConfiguration");
        assert!(
            ready(&d)
                .2
                .contains("spec.provider 'azure' is not supported")
        );
        let d = done(with("github", false));
        assert_eq!(
            ready(&d).2,
            "secretRef with github app data must be specified when provider is set to github: invalid source configuration"
        );
        assert!(matches!(with("github", true), Step::Persist(..)));
        assert!(matches!(with("generic", false), Step::Persist(..)));
        // The run's own findings: an App Secret under another provider
        // stalls; a refused exchange is AuthenticationFailed, retried.
        let mut snap = snapshot(vec![]);
        snap.run = Some(Err(RunFailure {
            stage: FailedAt::InvalidSource,
            error: EngineError::Source(
                "secretRef 'apps/app' has github app data but provider is not set to github: invalid source configuration".into(),
            ),
        }));
        let d = done(decide(&a, &snap, &at(0)));
        assert_eq!(
            (d.failure, d.requeue),
            (Some("InvalidSourceConfiguration"), Requeue::Never)
        );
        snap.run = Some(Err(RunFailure {
            stage: FailedAt::Authentication,
            error: EngineError::Source("provider github: the GitHub App 1: refused".into()),
        }));
        let d = done(decide(&a, &snap, &at(0)));
        assert_eq!(
            (ready(&d).1.as_str(), d.requeue),
            ("AuthenticationFailed", Requeue::Backoff)
        );
        assert_eq!(
            ready(&d).2,
            "failed configuring source manager: failed to configure authentication options: provider github: the GitHub App 1: refused"
        );
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
