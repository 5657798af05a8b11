//! Committing and pushing an automation's changes from a checkout.
//!
//! The setters run on the files of the base commit (not the working tree)
//! and the commit is built in the object database, so the push branch can
//! differ from the branch checked out. When it is the branch checked out,
//! the working tree and index follow the commit (the touched files must be
//! unmodified). A push the server refuses is an error; when the push branch
//! moved on the remote meanwhile, the setters are applied again on its new
//! tip and the push retried, a bounded number of times.

use super::tree::{FileChanges, Rewrite, is_manifest_name, write_atomically};
use crate::api::{GitRepository, GitRepositoryRef, ImageRef, ImageUpdateAutomation, ResourceExt};
use crate::git::{self, GitAuth, GitError, Signature};
use git2::{Oid, Repository};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How many times a push is retried after the branch moved on the remote.
pub const PUSH_RETRIES: usize = 3;

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
        }
    }

    /// An ImageUpdateAutomation's commit and push settings.
    pub fn for_automation(
        repo_root: &Path,
        a: &ImageUpdateAutomation,
        source: Option<&GitRepository>,
        path: &str,
        push: bool,
    ) -> Result<Plan, String> {
        let Some(g) = &a.spec.git else {
            return Err("spec.git is not set: the automation says nothing about committing".into());
        };
        // Flux: the automation's checkout ref, else the GitRepository's.
        let checkout = g
            .checkout
            .as_ref()
            .map(|c| c.reference.clone())
            .or_else(|| source.and_then(|s| s.spec.reference.clone()));
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        let checkout_branch = checkout
            .as_ref()
            .and_then(|r| r.branch.clone())
            .filter(|b| !b.is_empty());
        let not_a_branch = checkout
            .as_ref()
            .is_some_and(|r| set(&r.commit) || set(&r.name) || set(&r.tag) || set(&r.semver));
        let push_branch = g
            .push
            .as_ref()
            .and_then(|p| p.branch.clone())
            .filter(|b| !b.is_empty());
        // Push branch: push.branch, else the checkout branch; a checkout by
        // tag, commit or semver gives none (Flux stalls there); no checkout
        // reference at all is Flux's default branch, master.
        let branch = match (push_branch, checkout_branch) {
            (Some(b), _) => Some(b),
            (None, Some(b)) if !not_a_branch => Some(b),
            (None, _) if not_a_branch => {
                return Err("the checkout is not a branch, and spec.git.push.branch is not set: there is no branch to push to".into());
            }
            (None, _) => Some("master".to_string()),
        };
        let author = &g.commit.author;
        Ok(Plan {
            repo_root: repo_root.to_path_buf(),
            path: crate::api::validate::normalize_update_path(path)?,
            push,
            branch,
            checkout,
            refspec: g
                .push
                .as_ref()
                .and_then(|p| p.refspec.clone())
                .filter(|r| !r.is_empty()),
            push_options: g
                .push
                .as_ref()
                .and_then(|p| p.options.clone())
                .unwrap_or_default(),
            author: Some(Signature {
                name: author
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| author.email.clone()),
                email: author.email.clone(),
            }),
            template: g.commit.message_template.clone(),
            values: g.commit.message_template_values.clone().unwrap_or_default(),
            automation: (a.namespace().unwrap_or_default(), a.name_any()),
            remote: "origin".into(),
        })
    }
}

fn err(e: GitError) -> String {
    e.to_string()
}

/// The commit message for `files`: the automation's template over Flux's
/// data (file names relative to the update path, as Flux gives them), or the
/// default message when there is no template.
fn message(
    plan: &Plan,
    files: &[FileChanges],
    images: &BTreeMap<String, ImageRef>,
) -> Result<String, String> {
    let prefix = if plan.path.is_empty() {
        String::new()
    } else {
        format!("{}/", plan.path)
    };
    let changes: Vec<(String, crate::setters::Change)> = files
        .iter()
        .flat_map(|f| {
            let path = f.path.to_string_lossy().replace('\\', "/");
            let rel = path.strip_prefix(&prefix).unwrap_or(&path).to_string();
            f.changes.iter().map(move |c| (rel.clone(), c.clone()))
        })
        .collect();
    let input = crate::template::TemplateInput::new(
        plan.automation.0.clone(),
        plan.automation.1.clone(),
        changes,
        images.clone(),
        plan.values.clone(),
    );
    crate::template::render(plan.template.as_deref().unwrap_or(""), &input)
        .map_err(|e| e.to_string())
}

/// What a worker made of one file.
enum Rewritten {
    Changed(FileChanges, git::TreeEntry),
    Note(String),
}

/// Applies the setters to the manifests under `plan.path` in `base`, writing
/// the new blobs; files are read and rewritten by a few threads, each with
/// its own handle on the repository.
fn apply_on(
    repo: &Repository,
    base: Oid,
    plan: &Plan,
    images: &BTreeMap<String, ImageRef>,
    notes: &mut Vec<String>,
) -> Result<(Vec<FileChanges>, Vec<git::TreeEntry>), String> {
    let entries = git::tree_entries(repo, base, &plan.path, &is_manifest_name).map_err(err)?;
    let git_dir = repo.path().to_path_buf();
    let results = super::par::map_with(
        &entries,
        super::par::workers(),
        || Repository::open(&git_dir).map_err(|e| e.message().to_string()),
        |repo, e| -> Result<Option<Rewritten>, String> {
            let repo = repo.as_ref().map_err(Clone::clone)?;
            let blob = repo
                .find_blob(e.id)
                .map_err(|x| format!("{}: {}", e.path, x.message()))?;
            match super::tree::rewrite(blob.content(), images) {
                Rewrite::NoMarkers | Rewrite::Unchanged(_) => Ok(None),
                Rewrite::Refused(reason) => {
                    Ok(Some(Rewritten::Note(format!("{}: {reason}", e.path))))
                }
                Rewrite::Changed(a, before) => {
                    let after = a.text.unwrap_or_default();
                    let id = repo
                        .blob(after.as_bytes())
                        .map_err(|x| format!("{}: {}", e.path, x.message()))?;
                    Ok(Some(Rewritten::Changed(
                        FileChanges {
                            path: PathBuf::from(&e.path),
                            changes: a.changes,
                            before,
                            after,
                        },
                        git::TreeEntry {
                            path: e.path.clone(),
                            id,
                            mode: e.mode,
                        },
                    )))
                }
            }
        },
    );
    let mut changed = Vec::new();
    let mut blobs = Vec::new();
    for r in results {
        match r? {
            Some(Rewritten::Changed(f, b)) => {
                changed.push(f);
                blobs.push(b);
            }
            Some(Rewritten::Note(n)) => notes.push(n),
            None => {}
        }
    }
    Ok((changed, blobs))
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

/// Commits (and pushes) the plan's changes. Returns what changed; no commit
/// when nothing did.
pub fn execute(
    plan: &Plan,
    images: &BTreeMap<String, ImageRef>,
    auth: &GitAuth,
) -> Result<PushOutcome, String> {
    execute_with(plan, images, auth, &mut |_| {})
}

/// [`execute`], calling `before_push(attempt)` right before each push (tests
/// use it to play a concurrent writer).
pub fn execute_with(
    plan: &Plan,
    images: &BTreeMap<String, ImageRef>,
    auth: &GitAuth,
    before_push: &mut dyn FnMut(usize),
) -> Result<PushOutcome, String> {
    let repo = Repository::open(&plan.repo_root).map_err(|e| {
        format!(
            "{}: not a Git checkout: {}",
            plan.repo_root.display(),
            e.message()
        )
    })?;
    let head = repo
        .head()
        .map_err(|e| format!("{}: no HEAD: {}", plan.repo_root.display(), e.message()))?;
    let head_branch = head
        .is_branch()
        .then(|| head.shorthand().ok().map(str::to_string))
        .flatten();
    let head_commit = head
        .peel_to_commit()
        .map_err(|e| format!("HEAD: {}", e.message()))?
        .id();
    let branch = plan
        .branch
        .clone()
        .or(head_branch.clone())
        .ok_or("HEAD is detached and no push branch is set (spec.git.push.branch)")?;
    let on_current = head_branch.as_deref() == Some(branch.as_str());
    let url = if plan.push {
        let r = repo
            .find_remote(&plan.remote)
            .map_err(|_| format!("the checkout has no remote {:?} to push to", plan.remote))?;
        let u = r
            .url()
            .map_err(|_| format!("remote {} has no URL", plan.remote))?
            .to_string();
        git::fetch(&repo, &u, auth, &fetch_specs(plan)).map_err(err)?;
        Some(u)
    } else {
        None
    };
    let local_ref = format!("refs/heads/{branch}");
    let tracking = format!("refs/remotes/{}/{branch}", plan.remote);
    let mut outcome = PushOutcome {
        branch: branch.clone(),
        ..PushOutcome::default()
    };
    let mut retries: Vec<String> = Vec::new();
    for attempt in 0..=PUSH_RETRIES {
        let base = if on_current {
            head_commit
        } else if let Some(t) = plan.push.then(|| find_ref(&repo, &tracking)).flatten() {
            t
        } else if let Some(l) = find_ref(&repo, &local_ref) {
            l
        } else if let Some(c) = plan
            .checkout
            .as_ref()
            .and_then(|r| resolve_checkout(&repo, r, &plan.remote))
        {
            c
        } else {
            head_commit
        };
        if !on_current
            && attempt == 0
            && let Some(local) = find_ref(&repo, &local_ref)
            && local != base
            && !repo.graph_descendant_of(base, local).unwrap_or(false)
        {
            return Err(format!(
                "the local branch {branch} has commits that {} does not: push or remove them first",
                if plan.push {
                    tracking.as_str()
                } else {
                    "the base"
                }
            ));
        }
        let mut notes = Vec::new();
        let (files, blobs) = apply_on(&repo, base, plan, images, &mut notes)?;
        outcome.notes = retries.clone();
        outcome.notes.extend(notes);
        if files.is_empty() {
            outcome.files = files;
            return Ok(outcome);
        }
        let author = match &plan.author {
            Some(a) => a.clone(),
            None => {
                let s = repo.signature().map_err(|_| {
                    "no commit author: set spec.git.commit.author, or git config user.name and user.email".to_string()
                })?;
                Signature {
                    name: s.name().unwrap_or("").to_string(),
                    email: s.email().unwrap_or("").to_string(),
                }
            }
        };
        let msg = message(plan, &files, images)?;
        let commit = git::commit_blobs(&repo, base, &blobs, &author, &msg).map_err(err)?;
        if on_current {
            // The working tree will follow the branch: only over unmodified
            // files (their content is still the base's).
            for f in &files {
                let on_disk = std::fs::read(plan.repo_root.join(&f.path)).map_err(|e| {
                    format!("{}: cannot read the checkout's copy: {e}", f.path.display())
                })?;
                if on_disk != f.before.as_bytes() {
                    return Err(format!(
                        "{} has uncommitted changes: commit or stash them, or run without --commit",
                        f.path.display()
                    ));
                }
            }
        }
        // The branch takes the commit (a refspec may name it); a push that
        // fails puts it back where it was, so that a refused push leaves no
        // commit behind and the next run tries again.
        let previous = find_ref(&repo, &local_ref);
        repo.reference(&local_ref, commit, true, "imageauto: update images")
            .map_err(|e| format!("{local_ref}: {}", e.message()))?;
        let restore = || match previous {
            Some(p) => {
                let _ = repo.reference(&local_ref, p, true, "imageauto: push failed");
            }
            None => {
                if let Ok(mut r) = repo.find_reference(&local_ref) {
                    let _ = r.delete();
                }
            }
        };
        outcome.files = files;
        if let Some(url) = &url {
            let mut specs = vec![format!("{local_ref}:{local_ref}")];
            if let Some(r) = &plan.refspec {
                specs.push(r.clone());
            }
            before_push(attempt);
            match git::push(&repo, url, auth, &specs, &plan.push_options) {
                Ok(()) => {
                    let _ = repo.reference(&tracking, commit, true, "imageauto: pushed");
                    outcome.pushed = true;
                }
                Err(GitError::NonFastForward { .. }) if !on_current && attempt < PUSH_RETRIES => {
                    restore();
                    retries.push(format!(
                        "{branch} moved on the remote: applied the changes again on its new tip"
                    ));
                    git::fetch(&repo, url, auth, &fetch_specs(plan)).map_err(err)?;
                    // Our commit was never published: start over from the remote.
                    if let Some(t) = find_ref(&repo, &tracking) {
                        let _ = repo.reference(&local_ref, t, true, "imageauto: retry");
                    }
                    continue;
                }
                Err(e) => {
                    restore();
                    return Err(e.to_string());
                }
            }
        }
        if on_current {
            // The working tree and index follow the commit: the files are
            // replaced atomically (a few threads: the kernel's work
            // overlaps), then recorded in the index with their stat data so
            // that Git sees them unchanged without hashing them again.
            let pairs: Vec<(&FileChanges, &git::TreeEntry)> =
                outcome.files.iter().zip(&blobs).collect();
            let written = super::par::map_with(
                &pairs,
                4,
                || (),
                |_, (f, b)| -> Result<git2::IndexEntry, String> {
                    let full = plan.repo_root.join(&b.path);
                    write_atomically(&full, &f.after).map_err(|e| format!("{}: {e}", b.path))?;
                    index_entry(&full, &b.path, b.id, b.mode)
                        .map_err(|e| format!("{}: {e}", b.path))
                },
            );
            let mut index = repo
                .index()
                .map_err(|e| format!("index: {}", e.message()))?;
            for entry in written {
                let entry = entry?;
                index.add(&entry).map_err(|e| {
                    format!("{}: {}", String::from_utf8_lossy(&entry.path), e.message())
                })?;
            }
            index
                .write()
                .map_err(|e| format!("index: {}", e.message()))?;
        }
        outcome.commit = Some(commit.to_string());
        return Ok(outcome);
    }
    Err(format!(
        "{branch} kept moving on the remote: gave up after {} attempts",
        PUSH_RETRIES + 1
    ))
}
