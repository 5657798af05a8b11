//! An automation run the way a controller does it: in a bare repository
//! cache per Git URL (fetched, never re-cloned), under the URL's lock, from
//! the checkout reference or the push branch's tip, then the shared commit
//! and push of [`super::update`].

use super::update::{self, CommitRequest, PushRequest, Steps};
use super::{Engine, EngineError};
use crate::api::ImageRef;
use crate::api::plan::PushTarget;
use crate::git::{self, GitAuth, GitError};
use crate::setters::FileChanges;
use git2::{Oid, Repository};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct AutomationJob {
    /// Where the bare repository caches live (one folder per URL).
    pub cache_dir: PathBuf,
    pub url: String,
    pub auth: GitAuth,
    pub target: PushTarget,
    pub commit: CommitRequest,
    /// The selected policies' latest images, by `ns:name`.
    pub images: BTreeMap<String, ImageRef>,
    /// Only look: apply the setters and report, but commit and push nothing.
    pub dry_run: bool,
    /// Also index the workloads' image fields under the update path, with
    /// their markers, as the result's `markers` (for the admission webhook).
    pub index_markers: bool,
    /// Asked right before each push: whether this process may still push.
    pub fence: super::Fence,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct AutomationResult {
    pub files: Vec<FileChanges>,
    /// The commit pushed (full SHA), when there was something to change.
    pub commit: Option<String>,
    pub pushed: bool,
    /// Flux's `observedSourceRevision`: the checkout as Flux's
    /// `Commit.String()` spells it (`main@sha1:…`, `v1.2.0@sha1:…`,
    /// `sha1:…` for a bare commit), or, after a push to the checkout branch
    /// itself, the pushed commit on it.
    pub source_revision: String,
    /// The pushed commit's message.
    pub message: Option<String>,
    /// Whether the push branch differs from the checkout's branch (Flux's
    /// "switch branch").
    pub switched: bool,
    pub notes: Vec<String>,
    /// With `index_markers`: each workload container's image field under
    /// the update path (file relative to the repository root), as the
    /// branch holds them after the run.
    pub markers: Vec<(String, crate::workloads::IndexedContainer)>,
}

/// The image fields of the workloads under `path` in `commit`'s tree.
fn index_markers(
    repo: &Repository,
    commit: Oid,
    path: &str,
) -> Result<Vec<(String, crate::workloads::IndexedContainer)>, EngineError> {
    use rayon::prelude::*;
    let entries = git::tree_entries(repo, commit, path, &crate::setters::is_manifest_name)?;
    let git_dir = repo.path().to_path_buf();
    Ok(entries
        .par_iter()
        .map_init(
            || Repository::open(&git_dir).ok(),
            |handle, e| {
                let Some(repo) = handle.as_ref() else {
                    return Vec::new();
                };
                let Ok(blob) = repo.find_blob(e.id) else {
                    return Vec::new();
                };
                let Ok(text) = std::str::from_utf8(blob.content()) else {
                    return Vec::new();
                };
                if !text.contains("image") {
                    return Vec::new();
                }
                crate::workloads::marker_index(text)
                    .into_iter()
                    .map(|c| (e.path.clone(), c))
                    .collect()
            },
        )
        .flatten()
        .collect())
}

/// The cache's side of the loop: build on the push branch when the remote
/// has it (Flux builds upon it), else on the checkout reference.
struct CachedCheckout<'a> {
    branch: String,
    checkout: Oid,
    before_push: &'a mut dyn FnMut(usize),
    fence: super::Fence,
}

impl Steps for CachedCheckout<'_> {
    fn before_push(&mut self, attempt: usize) {
        (self.before_push)(attempt);
    }

    fn may_push(&mut self) -> Result<(), EngineError> {
        if self.fence.is_open() {
            Ok(())
        } else {
            Err(EngineError::Internal(
                "this replica no longer holds the leader Lease: nothing was pushed".into(),
            ))
        }
    }

    fn base(&mut self, repo: &Repository, _attempt: usize) -> Result<Oid, EngineError> {
        let tracking = format!("refs/remotes/origin/{}", self.branch);
        Ok(repo
            .find_reference(&tracking)
            .ok()
            .and_then(|r| r.peel_to_commit().ok())
            .map_or(self.checkout, |c| c.id()))
    }
}

/// What to fetch into the cache: every branch (pruned), and tags when the
/// checkout reference is a tag or a semver range.
fn fetch_specs(target: &PushTarget) -> Vec<String> {
    let mut specs = vec!["+refs/heads/*:refs/remotes/origin/*".to_string()];
    if target.checkout.as_ref().is_some_and(|r| {
        r.tag.as_deref().is_some_and(|t| !t.is_empty())
            || r.semver.as_deref().is_some_and(|t| !t.is_empty())
            || r.name
                .as_deref()
                .is_some_and(|n| !n.starts_with("refs/heads/"))
    }) {
        specs.push("+refs/tags/*:refs/tags/*".to_string());
        if let Some(n) = target.checkout.as_ref().and_then(|r| r.name.clone())
            && n.starts_with("refs/")
            && !n.starts_with("refs/heads/")
            && !n.starts_with("refs/tags/")
        {
            specs.push(format!("+{n}:{n}"));
        }
    }
    specs
}

/// Where in a run a failure happened (Flux reports each differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Fetching and checking out the source.
    Checkout,
    /// Applying the policies to the files.
    Apply,
    /// Committing (the message, the signature) and pushing.
    Update,
}

/// A run's failure, with its stage.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct StageError {
    pub stage: Stage,
    #[source]
    pub error: EngineError,
}

impl StageError {
    fn at(stage: Stage) -> impl Fn(EngineError) -> StageError {
        move |error| StageError { stage, error }
    }
}

/// The run itself, blocking (call it through [`Engine::update`]).
pub fn run_blocking(job: &AutomationJob) -> Result<AutomationResult, EngineError> {
    run_blocking_with(job, &mut |_| {})
}

/// [`run_blocking`], calling `before_push(attempt)` right before each push:
/// a test seam, to move the branch on the remote meanwhile.
#[doc(hidden)]
pub fn run_blocking_with(
    job: &AutomationJob,
    before_push: &mut dyn FnMut(usize),
) -> Result<AutomationResult, EngineError> {
    run_staged(job, before_push).map_err(|e| e.error)
}

/// [`run_blocking_with`], saying where a failure happened.
pub fn run_staged(
    job: &AutomationJob,
    before_push: &mut dyn FnMut(usize),
) -> Result<AutomationResult, StageError> {
    let checkout_failed = StageError::at(Stage::Checkout);
    let repo = git::open_cache(&job.cache_dir, &job.url).map_err(|e| checkout_failed(e.into()))?;
    git::fetch(&repo, &job.url, &job.auth, &fetch_specs(&job.target))
        .map_err(|e| checkout_failed(e.into()))?;
    let reference = job.target.checkout.clone().unwrap_or_default();
    let checkout = git::resolve(&repo, &reference, "origin")
        .map_err(|e| match e {
            GitError::RefNotFound(what) => EngineError::Git(GitError::RefNotFound(format!(
                "{what} in {}",
                git::display_url(&job.url)
            ))),
            e => e.into(),
        })
        .map_err(&checkout_failed)?;
    let switched = checkout.branch.as_deref() != Some(job.target.branch.as_str());
    let mut result = AutomationResult {
        source_revision: git::flux_revision(&checkout.reference, checkout.commit),
        switched,
        ..AutomationResult::default()
    };
    let mut steps = CachedCheckout {
        branch: job.target.branch.clone(),
        checkout: checkout.commit,
        before_push,
        fence: job.fence.clone(),
    };
    if job.dry_run {
        let base = steps.base(&repo, 0).map_err(&checkout_failed)?;
        let prepared = update::prepare(&repo, base, &job.commit.path, &job.images)
            .map_err(StageError::at(Stage::Apply))?;
        result.notes = prepared.notes;
        result.files = prepared.files;
        if job.index_markers {
            result.markers =
                index_markers(&repo, base, &job.commit.path).map_err(&checkout_failed)?;
        }
        return Ok(result);
    }
    let push = PushRequest {
        url: job.url.clone(),
        auth: job.auth.clone(),
        branch: job.target.branch.clone(),
        refspec: job.target.refspec.clone(),
        options: job.target.options.clone(),
        remote: "origin".into(),
    };
    let done = update::commit_and_push(
        &repo,
        &job.commit,
        &job.images,
        &job.target.branch,
        Some(&push),
        &mut steps,
    )
    .map_err(|e| {
        // The setters' refusals are Flux's "apply policies" stage; the
        // message, the signature and the push its "update source".
        let stage = match e {
            EngineError::Update { .. } | EngineError::FilesNotUpdated(_) => Stage::Apply,
            _ => Stage::Update,
        };
        StageError { stage, error: e }
    })?;
    result.notes = done.notes;
    result.notes.extend(done.prepared.notes);
    result.files = done.prepared.files;
    result.commit = done.commit.map(|c| c.to_string());
    result.message = done.message;
    result.pushed = done.pushed;
    if let Some(c) = done.commit.filter(|_| done.pushed && !switched) {
        result.source_revision =
            git::flux_revision(&format!("refs/heads/{}", job.target.branch), c);
    }
    if job.index_markers {
        let tip = match done.commit {
            Some(c) => c,
            None => steps.base(&repo, 0).map_err(&checkout_failed)?,
        };
        result.markers = index_markers(&repo, tip, &job.commit.path).map_err(&checkout_failed)?;
    }
    Ok(result)
}

impl Engine {
    /// [`update::pull_request_facts`] in the URL's cache (under its lock),
    /// after a run fetched it.
    pub async fn pull_request_facts(
        &self,
        cache_dir: PathBuf,
        url: String,
        head: String,
        base: String,
        path: String,
        images: BTreeMap<String, ImageRef>,
    ) -> (Option<String>, Vec<git::forge::ChangeLine>) {
        let guard = self.lock_repository(&url).await;
        self.blocking(move || {
            let _guard = guard;
            match git::open_cache(&cache_dir, &url) {
                Ok(repo) => {
                    update::pull_request_facts(&repo, "origin", &head, &base, &path, &images)
                }
                Err(_) => (None, Vec::new()),
            }
        })
        .await
        .unwrap_or_default()
    }

    /// Runs an automation on the URL's cache, under the URL's lock, on a
    /// blocking thread. The lock is held until the run ends on that thread,
    /// also when this future is dropped before (a caller's timeout): the
    /// next run on the cache waits for the Git work still going on in it.
    pub async fn update(&self, job: AutomationJob) -> Result<AutomationResult, EngineError> {
        self.update_staged(job).await.map_err(|e| e.error)
    }

    /// [`Engine::update`], saying where a failure happened.
    pub async fn update_staged(&self, job: AutomationJob) -> Result<AutomationResult, StageError> {
        let guard = self.lock_repository(&job.url).await;
        self.blocking(move || {
            let _guard = guard;
            run_staged(&job, &mut |_| {})
        })
        .await
        .map_err(StageError::at(Stage::Update))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GitRepositoryRef;
    use crate::engine::EngineOptions;
    use crate::git::Signature;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A TCP server that accepts connections, counts them, and never
    /// answers.
    fn silent() -> (u16, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                held.push(conn);
                a.fetch_add(1, Ordering::SeqCst);
            }
        });
        (port, accepted)
    }

    fn job(cache: &std::path::Path, url: &str, idle: Duration) -> AutomationJob {
        AutomationJob {
            cache_dir: cache.to_path_buf(),
            url: url.to_string(),
            auth: GitAuth {
                idle_timeout: Some(idle),
                ..GitAuth::default()
            },
            target: PushTarget {
                checkout: Some(GitRepositoryRef {
                    branch: Some("main".into()),
                    ..GitRepositoryRef::default()
                }),
                branch: "main".into(),
                refspec: None,
                options: BTreeMap::new(),
            },
            commit: CommitRequest {
                path: String::new(),
                author: Signature {
                    name: "imageauto".into(),
                    email: "imageauto@example.com".into(),
                },
                template: None,
                values: BTreeMap::new(),
                automation: (String::new(), String::new()),
                signer: None,
            },
            images: BTreeMap::new(),
            dry_run: false,
            index_markers: false,
            fence: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_lock_outlives_a_dropped_caller_until_the_git_work_ends() {
        let (port, accepted) = silent();
        let url = format!("http://127.0.0.1:{port}/fleet.git");
        let cache = tempfile::tempdir().unwrap();
        let idle = Duration::from_secs(2);
        let engine = Arc::new(Engine::new(EngineOptions::default()));
        let (e, j) = (engine.clone(), job(cache.path(), &url, idle));
        let start = Instant::now();
        let run = tokio::spawn(async move { e.update(j).await });
        // The fetch is waiting on the server.
        while accepted.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "no connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The caller gives up on the run; the run goes on on its thread.
        run.abort();
        assert!(run.await.unwrap_err().is_cancelled());
        let early =
            tokio::time::timeout(Duration::from_millis(300), engine.lock_repository(&url)).await;
        assert!(
            early.is_err(),
            "the lock was free while the fetch still ran"
        );
        // It is free once the fetch ended (abandoned at the idle timeout).
        let late = tokio::time::timeout(Duration::from_secs(10), engine.lock_repository(&url))
            .await
            .expect("the lock is free after the run");
        assert!(start.elapsed() >= idle, "{:?}", start.elapsed());
        drop(late);
    }
}
