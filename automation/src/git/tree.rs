//! The repository side: the cache of a remote, checkouts, trees, and
//! commits of changed files.

use super::*;

/// A bare repository in `cache` for `url`, reused between runs. The caller
/// holds the URL's lock ([`crate::engine::Engine::lock_repository`]): no
/// one else writes there, so the lock files found there are stale (those
/// of an operation killed in its middle, which would make every later
/// update of the reference fail) and are removed.
pub fn open_cache(cache: &Path, url: &str) -> Result<Repository, GitError> {
    use sha2::Digest;
    let id = format!("{:x}", sha2::Sha256::digest(url.as_bytes()));
    let dir = cache.join(&id[..24]);
    if dir.join("HEAD").is_file() {
        remove_lock_files(&dir, false);
        remove_lock_files(&dir.join("refs"), true);
        return Repository::open_bare(&dir)
            .map_err(|e| GitError::repo(&dir.display().to_string(), e));
    }
    std::fs::create_dir_all(&dir).map_err(|e| GitError::Repo(format!("{}: {e}", dir.display())))?;
    Repository::init_bare(&dir).map_err(|e| GitError::repo(&dir.display().to_string(), e))
}

/// Removes the `*.lock` files in `dir` (`packed-refs.lock`, `HEAD.lock`,
/// `FETCH_HEAD.lock`, ...), and under it with `deep` (`refs/`). Best effort:
/// one that stays makes the Git operation that needs it fail and say so.
pub(super) fn remove_lock_files(dir: &Path, deep: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else {
            continue;
        };
        if kind.is_dir() && deep {
            remove_lock_files(&e.path(), true);
        } else if kind.is_file() && e.file_name().as_encoded_bytes().ends_with(b".lock") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Where a checkout starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    pub commit: Oid,
    /// The branch, when the reference is one.
    pub branch: Option<String>,
    /// The full reference Flux records for the checkout (`refs/heads/main`,
    /// `refs/tags/v1.2.0`, a `name` as given); empty for a bare commit.
    pub reference: String,
    /// What was asked for, for messages (`branch main`, `tag v1`, ...).
    pub description: String,
}

pub(super) fn peel(repo: &Repository, refname: &str) -> Result<Oid, GitError> {
    let r = repo
        .find_reference(refname)
        .map_err(|_| GitError::RefNotFound(refname.to_string()))?;
    r.peel_to_commit()
        .map(|c| c.id())
        .map_err(|e| GitError::repo(refname, e))
}

/// Resolves a Flux checkout reference in a fetched repository, with Flux's
/// precedence: commit > name > tag > semver > branch; `master` when empty.
/// Branches are read from `refs/remotes/{remote}/`.
pub fn resolve(
    repo: &Repository,
    reference: &GitRepositoryRef,
    remote: &str,
) -> Result<Checkout, GitError> {
    if let Some(c) = reference.commit.as_deref().filter(|c| !c.is_empty()) {
        let oid =
            Oid::from_str(c).map_err(|_| GitError::Repo(format!("commit {c:?} is not a SHA")))?;
        repo.find_commit(oid)
            .map_err(|_| GitError::RefNotFound(format!("commit {c}")))?;
        let branch = reference.branch.clone().filter(|b| !b.is_empty());
        // Flux names a commit checkout by its `name`, else its branch.
        let full = match (reference.name.as_deref().filter(|n| !n.is_empty()), &branch) {
            (Some(n), _) => n.to_string(),
            (None, Some(b)) => format!("refs/heads/{b}"),
            (None, None) => String::new(),
        };
        return Ok(Checkout {
            commit: oid,
            branch,
            reference: full,
            description: format!("commit {c}"),
        });
    }
    if let Some(name) = reference.name.as_deref().filter(|n| !n.is_empty()) {
        let local = match name.strip_prefix("refs/heads/") {
            Some(b) => format!("refs/remotes/{remote}/{b}"),
            None => name.to_string(),
        };
        return Ok(Checkout {
            commit: peel(repo, &local)?,
            branch: name.strip_prefix("refs/heads/").map(str::to_string),
            reference: name.to_string(),
            description: format!("reference {name}"),
        });
    }
    if let Some(tag) = reference.tag.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Checkout {
            commit: peel(repo, &format!("refs/tags/{tag}"))?,
            branch: None,
            reference: format!("refs/tags/{tag}"),
            description: format!("tag {tag}"),
        });
    }
    if let Some(range) = reference.semver.as_deref().filter(|s| !s.is_empty()) {
        let r = Range::parse(range)
            .map_err(|e| GitError::Repo(format!("ref.semver {range:?}: {e}")))?;
        let names = repo
            .tag_names(None)
            .map_err(|e| GitError::repo("tags", e))?;
        let mut best: Option<(String, Version<'static>)> = None;
        for t in names.iter().flatten().flatten() {
            let Ok(v) = Version::parse_tag(t) else {
                continue;
            };
            if !r.matches(&v) {
                continue;
            }
            let v = Version {
                major: v.major,
                minor: v.minor,
                patch: v.patch,
                pre: v.pre.into_owned().into(),
                metadata: v.metadata.into_owned().into(),
            };
            if best
                .as_ref()
                .is_none_or(|(_, b)| v.compare(b) == std::cmp::Ordering::Greater)
            {
                best = Some((t.to_string(), v));
            }
        }
        let (tag, _) =
            best.ok_or_else(|| GitError::RefNotFound(format!("a tag within {range:?}")))?;
        return Ok(Checkout {
            commit: peel(repo, &format!("refs/tags/{tag}"))?,
            branch: None,
            reference: format!("refs/tags/{tag}"),
            description: format!("tag {tag} (semver {range})"),
        });
    }
    let branch = reference
        .branch
        .clone()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "master".to_string());
    Ok(Checkout {
        commit: peel(repo, &format!("refs/remotes/{remote}/{branch}"))
            .map_err(|_| GitError::RefNotFound(format!("branch {branch}")))?,
        description: format!("branch {branch}"),
        reference: format!("refs/heads/{branch}"),
        branch: Some(branch),
    })
}

/// A commit as Flux's `git.Commit.String()` spells it: the reference's
/// short name and the hash (`main@sha1:abc…`, `v1.2.0@sha1:abc…`), or the
/// hash alone (`sha1:abc…`) for a reference of fewer than three parts (a
/// bare commit). The short name is what follows the second `/`
/// (`refs/pull/1/head` gives `1/head`, as Flux's does).
pub fn flux_revision(reference: &str, commit: Oid) -> String {
    let parts: Vec<&str> = reference.splitn(3, '/').collect();
    match parts.as_slice() {
        [_, _, short] => format!("{short}@sha1:{commit}"),
        _ => format!("sha1:{commit}"),
    }
}

/// A regular file of a commit's tree.
#[derive(Clone, Debug)]
pub struct TreeEntry {
    /// Path from the repository root, `/`-separated.
    pub path: String,
    pub id: Oid,
    pub mode: i32,
}

/// libgit2's process-wide checks that cost a hash per object read and a
/// lookup per tree entry written, set once for the process: objects read
/// back are not re-hashed (git itself does not re-hash on read either; `git
/// fsck` does), and tree entries are not looked up again, because every
/// entry written here is a blob this process has just written or one of the
/// base tree's own. On the engine's path of 11,000 files these checks were
/// an eighth of the CPU time.
pub fn tune() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        git2::opts::strict_hash_verification(false);
        git2::opts::strict_object_creation(false);
    });
}

/// The regular files under `dir` (a `/`-separated path, empty for the root)
/// of `commit`'s tree whose names `keep` accepts. Symbolic links are not
/// followed (they are not regular files).
pub fn tree_entries(
    repo: &Repository,
    commit: Oid,
    dir: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<TreeEntry>, GitError> {
    tune();
    let commit = repo
        .find_commit(commit)
        .map_err(|e| GitError::repo("commit", e))?;
    let root = commit.tree().map_err(|e| GitError::repo("tree", e))?;
    let dir = dir.trim_matches('/');
    let tree = if dir.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(dir))
            .map_err(|_| GitError::RefNotFound(format!("path {dir} in commit {}", commit.id())))?;
        repo.find_tree(entry.id()).map_err(|_| {
            GitError::Repo(format!("{dir} is not a folder in commit {}", commit.id()))
        })?
    };
    let mut out = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        let Ok(name) = entry.name() else {
            return git2::TreeWalkResult::Ok;
        };
        let mode = entry.filemode();
        if entry.kind() == Some(git2::ObjectType::Blob)
            && (mode == 0o100644 || mode == 0o100755)
            && keep(name)
        {
            let rel = format!("{parent}{name}");
            out.push(TreeEntry {
                path: if dir.is_empty() {
                    rel
                } else {
                    format!("{dir}/{rel}")
                },
                id: entry.id(),
                mode,
            });
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| GitError::repo("tree walk", e))?;
    Ok(out)
}

/// A file of a commit's tree, with its content.
#[derive(Clone, Debug)]
pub struct TreeFile {
    /// Path from the repository root, `/`-separated.
    pub path: String,
    pub content: Vec<u8>,
    pub mode: i32,
}

/// [`tree_entries`] with the files' contents.
pub fn tree_files(
    repo: &Repository,
    commit: Oid,
    dir: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<TreeFile>, GitError> {
    tree_entries(repo, commit, dir, keep)?
        .into_iter()
        .map(|e| {
            let blob = repo
                .find_blob(e.id)
                .map_err(|x| GitError::repo(&e.path, x))?;
            Ok(TreeFile {
                path: e.path,
                content: blob.content().to_vec(),
                mode: e.mode,
            })
        })
        .collect()
}

/// A file to write in a commit: path, content, mode (`0o100644`/`0o100755`).
pub type FileUpdate = (String, Vec<u8>, i32);

/// Commits `files` (path, content, mode) on top of `parent` without a
/// working tree, as `author` (author and committer, now), signed with
/// `signer` when there is one. Returns the commit.
pub fn commit_files(
    repo: &Repository,
    parent: Oid,
    files: &[FileUpdate],
    author: &Signature,
    message: &str,
    signer: Option<&Signer>,
) -> Result<Oid, GitError> {
    let blobs = files
        .iter()
        .map(|(path, content, mode)| {
            let id = repo.blob(content).map_err(|e| GitError::repo(path, e))?;
            Ok(TreeEntry {
                path: path.clone(),
                id,
                mode: *mode,
            })
        })
        .collect::<Result<Vec<_>, GitError>>()?;
    commit_blobs(repo, parent, &blobs, author, message, signer)
}

/// Commits blobs already written (path, blob id, mode) on top of `parent`.
/// With a `signer`, the commit carries its signature in the `gpgsig` header,
/// as `git commit -S` writes it (OpenPGP, or SSHSIG for `gpg.format=ssh`);
/// a signature that cannot be made is an error, and nothing is committed.
pub fn commit_blobs(
    repo: &Repository,
    parent: Oid,
    files: &[TreeEntry],
    author: &Signature,
    message: &str,
    signer: Option<&Signer>,
) -> Result<Oid, GitError> {
    tune();
    let parent = repo
        .find_commit(parent)
        .map_err(|e| GitError::repo("parent commit", e))?;
    let base = parent.tree().map_err(|e| GitError::repo("tree", e))?;
    let mut builder = git2::build::TreeUpdateBuilder::new();
    for f in files {
        let mode = if f.mode == 0o100755 {
            git2::FileMode::BlobExecutable
        } else {
            git2::FileMode::Blob
        };
        builder.upsert(f.path.as_str(), f.id, mode);
    }
    let tree_id = builder
        .create_updated(repo, &base)
        .map_err(|e| GitError::repo("tree", e))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| GitError::repo("tree", e))?;
    let sig = git2::Signature::now(&author.name, &author.email).map_err(|e| {
        GitError::Repo(format!(
            "commit author {:?} <{}>: {}",
            author.name,
            author.email,
            e.message()
        ))
    })?;
    let Some(signer) = signer else {
        return repo
            .commit(None, &sig, &sig, message, &tree, &[&parent])
            .map_err(|e| GitError::repo("commit", e));
    };
    let buffer = repo
        .commit_create_buffer(&sig, &sig, message, &tree, &[&parent])
        .map_err(|e| GitError::repo("commit", e))?;
    // The author and the message are Rust strings, the rest is ASCII.
    let content = buffer
        .as_str()
        .map_err(|_| GitError::Repo("commit: the commit object is not UTF-8".into()))?;
    let signature = signer.sign(content.as_bytes())?;
    // git writes the header without the signature's final newline.
    repo.commit_signed(content, signature.trim_end_matches('\n'), Some("gpgsig"))
        .map_err(|e| GitError::repo("signed commit", e))
}
