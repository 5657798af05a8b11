//! The Git half of a run, on any repository (a bare cache in the cluster, a
//! user's checkout on the command line) from a base commit: the setters over
//! the files under the update path, the commit message, the commit, and the
//! push with its retry when the branch moved on the remote. Blocking: call it
//! through [`super::Engine::blocking`] from async code.

use super::EngineError;
use crate::api::ImageRef;
use crate::git::{self, GitAuth, GitError, Signature, Signer};
use crate::setters::{FileChanges, is_manifest_name};
use crate::setters::{Images, Rewrite, rewrite};
use git2::{Oid, Repository};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// How many times a push is retried after the branch moved on the remote.
pub const PUSH_RETRIES: usize = 3;

/// What to commit: the update path, the author, the message template.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    /// Folder to update, relative to the repository root (`/`-separated,
    /// empty for the root).
    pub path: String,
    pub author: Signature,
    pub template: Option<String>,
    pub values: BTreeMap<String, String>,
    /// `namespace`, `name` of the automation (empty without one).
    pub automation: (String, String),
    /// Signs every commit made (each attempt's, after a retry too); none:
    /// the commits are not signed.
    pub signer: Option<Arc<Signer>>,
}

/// Where to push: the branch (and a refspec after it), with push options.
#[derive(Clone, Debug)]
pub struct PushRequest {
    pub url: String,
    pub auth: GitAuth,
    pub branch: String,
    pub refspec: Option<String>,
    pub options: BTreeMap<String, String>,
    /// The remote-tracking name the repository fetches into (`origin`).
    pub remote: String,
}

/// The setters' result over a tree: changed files and their new blobs.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    pub files: Vec<FileChanges>,
    pub blobs: Vec<git::TreeEntry>,
    /// Files left as they were, and why.
    pub notes: Vec<String>,
}

/// Applies the setters to the manifests under `path` in `base`'s tree and
/// writes the new blobs. Files are read and rewritten in parallel (rayon),
/// each worker with its own handle on the repository. A rewrite that does
/// not read back as intended is refused for its file (a note), never
/// committed.
pub fn prepare(
    repo: &Repository,
    base: Oid,
    path: &str,
    images: &BTreeMap<String, ImageRef>,
) -> Result<Prepared, EngineError> {
    prepare_with(repo, base, path, images, &rewrite)
}

/// A file rewrite: [`rewrite`], or a stand-in in tests.
pub type Rewriter<'a> = dyn Fn(&[u8], &Images) -> Rewrite + Sync + 'a;

/// [`prepare`] with another rewrite function: a test seam.
#[doc(hidden)]
pub fn prepare_with(
    repo: &Repository,
    base: Oid,
    path: &str,
    images: &BTreeMap<String, ImageRef>,
    rewrite: &Rewriter<'_>,
) -> Result<Prepared, EngineError> {
    let entries = git::tree_entries(repo, base, path, &is_manifest_name)?;
    let git_dir = repo.path().to_path_buf();
    enum Done {
        Changed(FileChanges, git::TreeEntry),
        Note(String),
    }
    let results: Vec<Result<Option<Done>, EngineError>> = entries
        .par_iter()
        .map_init(
            || Repository::open(&git_dir).map_err(|e| e.message().to_string()),
            |handle, e| {
                let repo = handle
                    .as_ref()
                    .map_err(|m| EngineError::Git(GitError::Repo(m.clone())))?;
                let blob = repo.find_blob(e.id).map_err(|x| EngineError::Update {
                    path: e.path.clone(),
                    message: x.message().to_string(),
                })?;
                Ok(match rewrite(blob.content(), images) {
                    Rewrite::NoMarkers | Rewrite::Unchanged(_) => None,
                    Rewrite::Refused(reason) => Some(Done::Note(format!("{}: {reason}", e.path))),
                    Rewrite::Changed(a, before) => {
                        let after = a.text.unwrap_or_default();
                        let id = repo
                            .blob(after.as_bytes())
                            .map_err(|x| EngineError::Update {
                                path: e.path.clone(),
                                message: x.message().to_string(),
                            })?;
                        Some(Done::Changed(
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
                        ))
                    }
                })
            },
        )
        .collect();
    let mut out = Prepared::default();
    for r in results {
        match r? {
            Some(Done::Changed(f, b)) => {
                out.files.push(f);
                out.blobs.push(b);
            }
            Some(Done::Note(n)) => out.notes.push(n),
            None => {}
        }
    }
    Ok(out)
}

/// The commit message for `files`: the automation's template over Flux's
/// data (file names relative to the update path, as Flux gives them), or the
/// default message when there is no template.
pub fn message(
    req: &CommitRequest,
    files: &[FileChanges],
    images: &BTreeMap<String, ImageRef>,
) -> Result<String, EngineError> {
    let prefix = if req.path.is_empty() {
        String::new()
    } else {
        format!("{}/", req.path)
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
        req.automation.0.clone(),
        req.automation.1.clone(),
        changes,
        images.clone(),
        req.values.clone(),
    );
    Ok(crate::template::render(
        req.template.as_deref().unwrap_or(""),
        &input,
    )?)
}

/// What [`commit_and_push`] did.
#[derive(Clone, Debug, Default)]
pub struct CommitOutcome {
    /// The changes committed (empty: nothing to change, no commit).
    pub prepared: Prepared,
    pub commit: Option<Oid>,
    /// The commit's message, when a commit was made.
    pub message: Option<String>,
    pub pushed: bool,
    /// What happened on the way (retries on a moved branch).
    pub notes: Vec<String>,
}

/// What a front end decides in [`commit_and_push`].
pub trait Steps {
    /// The commit to build on, at each attempt (the remote's branch tip
    /// after a retry).
    fn base(&mut self, repo: &Repository, attempt: usize) -> Result<Oid, EngineError>;

    /// Last checks before the commit is made visible (the command line
    /// refuses to move a branch over a modified working tree).
    fn check(&mut self, _prepared: &Prepared) -> Result<(), EngineError> {
        Ok(())
    }

    /// Whether a push the remote refused as a non-fast-forward is tried
    /// again on the new tip.
    fn retries(&self) -> bool {
        true
    }

    /// Right before each push (tests play a concurrent writer here).
    fn before_push(&mut self, _attempt: usize) {}

    /// Whether this process may still push, asked right before each push
    /// (a controller that lost, or may have lost, its leader Lease may
    /// not): an error leaves the branch where it was.
    fn may_push(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}

fn find_ref(repo: &Repository, name: &str) -> Option<Oid> {
    repo.find_reference(name)
        .ok()
        .and_then(|r| r.peel_to_commit().ok())
        .map(|c| c.id())
}

/// The whole Git half: from each attempt's base, apply the setters, render
/// the message, commit as the author, point `refs/heads/BRANCH` at the
/// commit and, with `push`, push it (then the refspec). A non-fast-forward
/// refetches the branch and starts again from its new tip, up to
/// [`PUSH_RETRIES`] times. A push that fails puts the branch back where it
/// was, so a refused push leaves no commit behind and the next run tries
/// again. No commit when nothing changes. With a signer, every commit made
/// is signed; one that cannot be is an error, and nothing is pushed.
pub fn commit_and_push(
    repo: &Repository,
    req: &CommitRequest,
    images: &BTreeMap<String, ImageRef>,
    branch: &str,
    push: Option<&PushRequest>,
    steps: &mut dyn Steps,
) -> Result<CommitOutcome, EngineError> {
    let local_ref = format!("refs/heads/{branch}");
    let mut outcome = CommitOutcome::default();
    for attempt in 0..=PUSH_RETRIES {
        let base = steps.base(repo, attempt)?;
        let prepared = prepare(repo, base, &req.path, images)?;
        if prepared.files.is_empty() {
            outcome.prepared = prepared;
            return Ok(outcome);
        }
        steps.check(&prepared)?;
        let msg = message(req, &prepared.files, images)?;
        let commit = git::commit_blobs(
            repo,
            base,
            &prepared.blobs,
            &req.author,
            &msg,
            req.signer.as_deref(),
        )?;
        outcome.message = Some(msg.clone());
        let previous = find_ref(repo, &local_ref);
        repo.reference(&local_ref, commit, true, "imageauto: update images")
            .map_err(|e| GitError::Repo(format!("{local_ref}: {}", e.message())))?;
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
        outcome.prepared = prepared;
        outcome.commit = Some(commit);
        let Some(p) = push else {
            return Ok(outcome);
        };
        let mut specs = vec![format!("{local_ref}:{local_ref}")];
        if let Some(r) = &p.refspec {
            specs.push(r.clone());
        }
        steps.before_push(attempt);
        if let Err(e) = steps.may_push() {
            restore();
            return Err(e);
        }
        match git::push(repo, &p.url, &p.auth, &specs, &p.options) {
            Ok(()) => {
                let tracking = format!("refs/remotes/{}/{branch}", p.remote);
                let _ = repo.reference(&tracking, commit, true, "imageauto: pushed");
                outcome.pushed = true;
                return Ok(outcome);
            }
            Err(GitError::NonFastForward { .. }) if steps.retries() && attempt < PUSH_RETRIES => {
                restore();
                outcome.commit = None;
                outcome.message = None;
                outcome.notes.push(format!(
                    "{branch} moved on the remote: applied the changes again on its new tip"
                ));
                git::fetch(
                    repo,
                    &p.url,
                    &p.auth,
                    &[format!("+{local_ref}:refs/remotes/{}/{branch}", p.remote)],
                )?;
            }
            Err(e) => {
                restore();
                return Err(e.into());
            }
        }
    }
    Err(EngineError::Git(GitError::Repo(format!(
        "{branch} kept moving on the remote: gave up after {} attempts",
        PUSH_RETRIES + 1
    ))))
}

/// What a pull request from `head` into `base` brings, from the
/// remote-tracking branches `refs/remotes/{remote}/...` the run fetched:
/// the message of the head's tip, and each value the images change in the
/// base's files under `path` (what merging it changes; none when the base
/// is not there). Best effort: what cannot be read is left out.
pub fn pull_request_facts(
    repo: &Repository,
    remote: &str,
    head: &str,
    base: &str,
    path: &str,
    images: &BTreeMap<String, ImageRef>,
) -> (Option<String>, Vec<git::forge::ChangeLine>) {
    let tip = |b: &str| {
        repo.find_reference(&format!("refs/remotes/{remote}/{b}"))
            .ok()
            .and_then(|r| r.peel_to_commit().ok())
    };
    let message = tip(head).and_then(|c| c.message().ok().map(str::to_string));
    let changes = tip(base)
        .and_then(|c| prepare(repo, c.id(), path, images).ok())
        .map(|p| {
            p.files
                .iter()
                .flat_map(|f| {
                    f.changes.iter().map(move |c| git::forge::ChangeLine {
                        file: f.path.display().to_string(),
                        line: c.line,
                        old: c.old_value.clone(),
                        new: c.new_value.clone(),
                        setter: c.setter.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    (message, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setters::{Applied, apply, rewrite_with};

    fn images() -> BTreeMap<String, ImageRef> {
        [(
            "ns:web".to_string(),
            ImageRef {
                name: "ghcr.io/org/web".into(),
                tag: "2.0.0".into(),
                digest: None,
            },
        )]
        .into()
    }

    const FILE: &str =
        "spec:\n  image: ghcr.io/org/web:1.0.0 # {\"$imagepolicy\": \"ns:web\"}\n  other: keep\n";

    fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Repository, Oid) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let mut tb = git2::build::TreeUpdateBuilder::new();
        for (p, c) in files {
            let id = repo.blob(c.as_bytes()).unwrap();
            tb.upsert(*p, id, git2::FileMode::Blob);
        }
        let empty = repo.treebuilder(None).unwrap().write().unwrap();
        let empty = repo.find_tree(empty).unwrap();
        let tree = tb.create_updated(&repo, &empty).unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let c = repo.commit(None, &sig, &sig, "init", &tree, &[]).unwrap();
        drop(tree);
        drop(empty);
        (dir, repo, c)
    }

    #[test]
    fn prepare_rewrites_only_under_the_path() {
        let (_d, repo, base) = repo_with(&[("apps/a.yaml", FILE), ("other/b.yaml", FILE)]);
        let p = prepare(&repo, base, "apps", &images()).unwrap();
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files[0].path, PathBuf::from("apps/a.yaml"));
        assert!(p.files[0].after.contains("web:2.0.0"));
        let all = prepare(&repo, base, "", &images()).unwrap();
        assert_eq!(all.files.len(), 2);
    }

    #[test]
    fn a_rewrite_that_reads_back_wrong_is_refused() {
        let (_d, repo, base) = repo_with(&[("apps/a.yaml", FILE)]);
        // A setter that breaks the document beside the value it changes.
        let broken = |text: &str, images: &BTreeMap<String, ImageRef>| {
            let mut a: Applied = apply(text, images)?;
            a.text = a.text.map(|t| t.replace("other: keep", "other: [keep"));
            Ok(a)
        };
        let wrong_value = |text: &str, images: &BTreeMap<String, ImageRef>| {
            let mut a: Applied = apply(text, images)?;
            a.text = a.text.map(|t| t.replace("web:2.0.0", "web:6.6.6"));
            Ok(a)
        };
        let other_value = |text: &str, images: &BTreeMap<String, ImageRef>| {
            let mut a: Applied = apply(text, images)?;
            a.text = a.text.map(|t| t.replace("keep", "kept"));
            Ok(a)
        };
        for (what, setter) in [
            ("another structure", &broken as &crate::setters::Setter<'_>),
            ("reads as", &wrong_value),
            ("not to change", &other_value),
        ] {
            let rw = |b: &[u8], i: &BTreeMap<String, ImageRef>| rewrite_with(b, i, setter);
            let p = prepare_with(&repo, base, "", &images(), &rw).unwrap();
            assert!(p.files.is_empty(), "{what}");
            assert_eq!(p.notes.len(), 1, "{what}");
            assert!(
                p.notes[0].starts_with("apps/a.yaml: left as it was"),
                "{}",
                p.notes[0]
            );
            assert!(p.notes[0].contains(what), "{what}: {}", p.notes[0]);
        }
    }
}
