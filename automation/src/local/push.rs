//! Committing and pushing an automation's changes from a user's checkout:
//! what is about the checkout (its HEAD, the base it builds on, its working
//! tree and index) around the engine's commit and push
//! ([`crate::engine::update`]).
//!
//! The setters run on the files of the base commit (not the working tree)
//! and the commit is built in the object database, so the push branch can
//! differ from the branch checked out. When it is the branch checked out,
//! the working tree and index follow the commit (the touched files must be
//! unmodified), after the push when there is one.

use super::tree::{FileChanges, write_atomically};
use crate::api::plan::{self, PushTarget};
use crate::api::{GitRepository, GitRepositoryRef, ImageRef, ImageUpdateAutomation, ResourceExt};
use crate::engine::EngineError;
use crate::engine::update::{self, CommitRequest, Prepared, PushRequest, Steps};
use crate::git::{self, GitAuth, GitError, Signature, Signer};
use git2::{Oid, Repository};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::engine::update::PUSH_RETRIES;

/// What to commit and where to push.
#[derive(Clone, Debug)]
pub struct Plan {
    pub repo_root: PathBuf,
    /// Folder to update, relative to the repository root (`/`-separated).
    pub path: String,
    pub push: bool,
    /// The branch to commit to; the checked-out branch when `None`.
    pub branch: Option<String>,
    /// Where a push branch that does not exist yet starts (the automation's
    /// or the GitRepository's checkout reference); HEAD when `None`.
    pub checkout: Option<GitRepositoryRef>,
    pub refspec: Option<String>,
    pub push_options: BTreeMap<String, String>,
    /// Author and committer; git's `user.name`/`user.email` when `None`.
    pub author: Option<Signature>,
    pub template: Option<String>,
    pub values: BTreeMap<String, String>,
    /// `namespace`, `name` of the automation (empty without one).
    pub automation: (String, String),
    pub remote: String,
    /// Signs the commits; none: they are not signed.
    pub signer: Option<Arc<Signer>>,
}

/// What [`execute`] did.
#[derive(Clone, Debug, Default)]
pub struct PushOutcome {
    pub files: Vec<FileChanges>,
    pub commit: Option<String>,
    pub branch: String,
    pub pushed: bool,
    pub notes: Vec<String>,
}

fn rel_path(root: &Path, dir: &Path) -> String {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.strip_prefix(&root)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default()
}

impl Plan {
    /// Every marker under `dir`, committed on the checked-out branch with
    /// git's own author and the default message.
    pub fn without_automation(repo_root: &Path, dir: &Path, push: bool) -> Plan {
        Plan {
            repo_root: repo_root.to_path_buf(),
            path: rel_path(repo_root, dir),
            push,
            branch: None,
            checkout: None,
            refspec: None,
            push_options: BTreeMap::new(),
            author: None,
            template: None,
            values: BTreeMap::new(),
            automation: (String::new(), String::new()),
            remote: "origin".into(),
            signer: None,
        }
    }

    /// An ImageUpdateAutomation's commit and push settings (Flux's rules,
    /// from [`plan`]).
    pub fn for_automation(
        repo_root: &Path,
        a: &ImageUpdateAutomation,
        source: Option<&GitRepository>,
        push: bool,
    ) -> Result<Plan, EngineError> {
        let PushTarget {
            checkout,
            branch,
            refspec,
            options,
        } = plan::push_target(&a.spec, source.map(|s| &s.spec))?;
        let path = plan::update_path(&a.spec)?;
        let g = a.spec.git.as_ref().ok_or_else(|| {
            EngineError::Plan(plan::PlanError::Source {
                field: "spec.git",
                message: "not set: the automation says nothing about committing".into(),
            })
        })?;
        let (author, template, values) = (
            &g.commit.author,
            g.commit.message_template.clone(),
            g.commit.message_template_values.clone().unwrap_or_default(),
        );
        Ok(Plan {
            repo_root: repo_root.to_path_buf(),
            path,
            push,
            branch: Some(branch),
            checkout,
            refspec,
            push_options: options,
            author: Some(Signature {
                name: author
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| author.email.clone()),
                email: author.email.clone(),
            }),
            template,
            values,
            automation: (a.namespace().unwrap_or_default(), a.name_any()),
            remote: "origin".into(),
            signer: None,
        })
    }
}

/// An index entry for a file just written, with its stat data.
fn index_entry(full: &Path, path: &str, id: Oid, mode: i32) -> std::io::Result<git2::IndexEntry> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(full)?;
    // The index stores 32-bit times and sizes (Git truncates the same way).
    let time = |secs: i64, nanos: i64| git2::IndexTime::new(secs as i32, nanos as u32);
    Ok(git2::IndexEntry {
        ctime: time(m.ctime(), m.ctime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        dev: m.dev() as u32,
        ino: m.ino() as u32,
        mode: mode as u32,
        uid: m.uid(),
        gid: m.gid(),
        file_size: m.size() as u32,
        id,
        flags: path.len().min(0xfff) as u16,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    })
}

/// What a user's checkout fetches: branches (into remote-tracking refs), and
/// tags only when the checkout reference needs them, without overwriting
/// local tags.
fn fetch_specs(plan: &Plan) -> Vec<String> {
    let mut specs = vec![format!("+refs/heads/*:refs/remotes/{}/*", plan.remote)];
    let tags = plan.checkout.as_ref().is_some_and(|r| {
        r.tag.as_deref().is_some_and(|t| !t.is_empty())
            || r.semver.as_deref().is_some_and(|t| !t.is_empty())
    });
    if tags {
        specs.push("refs/tags/*:refs/tags/*".to_string());
    }
    specs
}

/// The commit a checkout reference names in the checkout: the remote's
/// branch, else a local one.
fn resolve_checkout(repo: &Repository, r: &GitRepositoryRef, remote: &str) -> Option<Oid> {
    git::resolve(repo, r, remote)
        .ok()
        .map(|c| c.commit)
        .or_else(|| {
            r.branch
                .as_deref()
                .and_then(|b| find_ref(repo, &format!("refs/heads/{b}")))
        })
}

fn find_ref(repo: &Repository, name: &str) -> Option<Oid> {
    repo.find_reference(name)
        .ok()
        .and_then(|r| r.peel_to_commit().ok())
        .map(|c| c.id())
}

fn repo_error(context: &str, e: git2::Error) -> EngineError {
    EngineError::Git(GitError::Repo(format!("{context}: {}", e.message())))
}

/// The checkout's side of the engine's loop.
struct Checkout<'p> {
    plan: &'p Plan,
    branch: String,
    on_current: bool,
    head_commit: Oid,
    before_push: &'p mut dyn FnMut(usize),
}

impl Steps for Checkout<'_> {
    fn base(&mut self, repo: &Repository, attempt: usize) -> Result<Oid, EngineError> {
        let local_ref = format!("refs/heads/{}", self.branch);
        let tracking = format!("refs/remotes/{}/{}", self.plan.remote, self.branch);
        let base = if self.on_current {
            self.head_commit
        } else if let Some(t) = self.plan.push.then(|| find_ref(repo, &tracking)).flatten() {
            t
        } else if let Some(l) = find_ref(repo, &local_ref) {
            l
        } else if let Some(c) = self
            .plan
            .checkout
            .as_ref()
            .and_then(|r| resolve_checkout(repo, r, &self.plan.remote))
        {
            c
        } else {
            self.head_commit
        };
        if !self.on_current
            && attempt == 0
            && let Some(local) = find_ref(repo, &local_ref)
            && local != base
            && !repo.graph_descendant_of(base, local).unwrap_or(false)
        {
            return Err(EngineError::Source(format!(
                "the local branch {} has commits that {} does not: push or remove them first",
                self.branch,
                if self.plan.push {
                    tracking.as_str()
                } else {
                    "the base"
                }
            )));
        }
        Ok(base)
    }

    fn check(&mut self, prepared: &Prepared) -> Result<(), EngineError> {
        if !self.on_current {
            return Ok(());
        }
        // The working tree will follow the branch: only over unmodified
        // files (their content is still the base's).
        for f in &prepared.files {
            let path = f.path.display().to_string();
            let on_disk = std::fs::read(self.plan.repo_root.join(&f.path)).map_err(|e| {
                EngineError::Update {
                    path: path.clone(),
                    message: format!("cannot read the checkout's copy: {e}"),
                }
            })?;
            if on_disk != f.before.as_bytes() {
                return Err(EngineError::Source(format!(
                    "{path} has uncommitted changes: commit or stash them, or run without --commit"
                )));
            }
        }
        Ok(())
    }

    fn retries(&self) -> bool {
        // Rebuilding the branch checked out would move the user's HEAD.
        !self.on_current
    }

    fn before_push(&mut self, attempt: usize) {
        (self.before_push)(attempt);
    }
}

/// Commits (and pushes) the plan's changes. Returns what changed; no commit
/// when nothing did.
pub fn execute(
    plan: &Plan,
    images: &BTreeMap<String, ImageRef>,
    auth: &GitAuth,
) -> Result<PushOutcome, EngineError> {
    execute_with(plan, images, auth, &mut |_| {})
}

/// [`execute`], calling `before_push(attempt)` right before each push (tests
/// use it to play a concurrent writer).
pub fn execute_with(
    plan: &Plan,
    images: &BTreeMap<String, ImageRef>,
    auth: &GitAuth,
    before_push: &mut dyn FnMut(usize),
) -> Result<PushOutcome, EngineError> {
    let root = plan.repo_root.display().to_string();
    let repo = Repository::open(&plan.repo_root)
        .map_err(|e| EngineError::Source(format!("{root}: not a Git checkout: {}", e.message())))?;
    let head = repo
        .head()
        .map_err(|e| EngineError::Source(format!("{root}: no HEAD: {}", e.message())))?;
    let head_branch = head
        .is_branch()
        .then(|| head.shorthand().ok().map(str::to_string))
        .flatten();
    let head_commit = head
        .peel_to_commit()
        .map_err(|e| repo_error("HEAD", e))?
        .id();
    let branch = plan.branch.clone().or(head_branch.clone()).ok_or_else(|| {
        EngineError::Source(
            "HEAD is detached and no push branch is set (spec.git.push.branch)".into(),
        )
    })?;
    let on_current = head_branch.as_deref() == Some(branch.as_str());
    let push = if plan.push {
        let r = repo.find_remote(&plan.remote).map_err(|_| {
            EngineError::Source(format!(
                "the checkout has no remote {:?} to push to",
                plan.remote
            ))
        })?;
        let url = r
            .url()
            .map_err(|_| EngineError::Source(format!("remote {} has no URL", plan.remote)))?
            .to_string();
        git::fetch(&repo, &url, auth, &fetch_specs(plan))?;
        Some(PushRequest {
            url,
            auth: auth.clone(),
            branch: branch.clone(),
            refspec: plan.refspec.clone(),
            options: plan.push_options.clone(),
            remote: plan.remote.clone(),
        })
    } else {
        None
    };
    let author = match &plan.author {
        Some(a) => a.clone(),
        None => {
            let s = repo.signature().map_err(|_| {
                EngineError::Source(
                    "no commit author: set spec.git.commit.author, or git config user.name and user.email"
                        .into(),
                )
            })?;
            Signature {
                name: s.name().unwrap_or("").to_string(),
                email: s.email().unwrap_or("").to_string(),
            }
        }
    };
    let req = CommitRequest {
        path: plan.path.clone(),
        author,
        template: plan.template.clone(),
        values: plan.values.clone(),
        automation: plan.automation.clone(),
        signer: plan.signer.clone(),
    };
    let mut steps = Checkout {
        plan,
        branch: branch.clone(),
        on_current,
        head_commit,
        before_push,
    };
    let done = update::commit_and_push(&repo, &req, images, &branch, push.as_ref(), &mut steps)?;
    let mut notes = done.notes;
    notes.extend(done.prepared.notes.iter().cloned());
    if let (Some(s), Some(_)) = (&plan.signer, &done.commit) {
        notes.push(format!("signed with {}", s.description()));
    }
    if on_current && done.commit.is_some() {
        update_worktree_and_index(&repo, plan, &done.prepared)?;
    }
    Ok(PushOutcome {
        files: done.prepared.files,
        commit: done.commit.map(|c| c.to_string()),
        branch,
        pushed: done.pushed,
        notes,
    })
}

/// The working tree and index follow the commit on the branch checked out:
/// the files are replaced atomically (in parallel: the kernel's work
/// overlaps), then recorded in the index with their stat data so that Git
/// sees them unchanged without hashing them again.
fn update_worktree_and_index(
    repo: &Repository,
    plan: &Plan,
    prepared: &Prepared,
) -> Result<(), EngineError> {
    let write = || -> Vec<Result<git2::IndexEntry, EngineError>> {
        prepared
            .files
            .par_iter()
            .zip(prepared.blobs.par_iter())
            .map(|(f, b)| {
                let full = plan.repo_root.join(&b.path);
                let err = |e: std::io::Error| EngineError::Update {
                    path: b.path.clone(),
                    message: e.to_string(),
                };
                write_atomically(&full, &f.after).map_err(err)?;
                index_entry(&full, &b.path, b.id, b.mode).map_err(err)
            })
            .collect()
    };
    let written = match super::tree::write_pool() {
        Some(pool) => pool.install(write),
        None => write(),
    };
    let mut index = repo.index().map_err(|e| repo_error("index", e))?;
    for entry in written {
        let entry = entry?;
        index
            .add(&entry)
            .map_err(|e| repo_error(&String::from_utf8_lossy(&entry.path), e))?;
    }
    index.write().map_err(|e| repo_error("index", e))
}
