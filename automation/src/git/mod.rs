//! Git on libgit2: fetch into a cache, resolve Flux's checkout references,
//! commit file updates without a working tree, push with rejection detection,
//! and authentication from a Flux GitRepository Secret's keys (SSH with
//! mandatory host key verification, HTTPS basic or bearer, a CA).

pub mod known_hosts;

use crate::api::GitRepositoryRef;
use crate::policy::{Range, Version};
use base64::Engine;
use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, Oid, PushOptions, RemoteCallbacks,
    Repository,
};
use known_hosts::{HostKeyCheck, KnownHosts, host_name};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// How to authenticate to a Git server: the keys of a Flux GitRepository
/// Secret, and/or the user's environment (ssh-agent, default keys, git
/// credential helpers, `~/.ssh/known_hosts`).
#[derive(Clone, Default)]
pub struct GitAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    /// PEM private key (`identity`).
    pub identity: Option<String>,
    /// OpenSSH public key (`identity.pub`).
    pub identity_pub: Option<String>,
    /// `known_hosts`: required for SSH.
    pub known_hosts: Option<String>,
    /// A PEM CA for HTTPS (`ca.crt`).
    pub ca_pem: Option<Vec<u8>>,
    /// Also try ssh-agent, `~/.ssh/id_*`, git credential helpers and
    /// `~/.ssh/known_hosts` (the local command line; never in the cluster).
    pub use_environment: bool,
}

impl fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("known_hosts", &self.known_hosts.is_some())
            .field("ca", &self.ca_pem.is_some())
            .field("use_environment", &self.use_environment)
            .finish()
    }
}

impl GitAuth {
    /// Reads a Flux GitRepository Secret's data: `identity`, `identity.pub`,
    /// `known_hosts`, `password`, `username`, `bearerToken`, `ca.crt`.
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
        secret: &str,
    ) -> Result<Self, GitError> {
        let text = |k: &str| -> Result<Option<String>, GitError> {
            data.get(k)
                .map(|v| {
                    String::from_utf8(v.clone())
                        .map_err(|_| GitError::Secret(format!("{secret}: {k} is not UTF-8 text")))
                })
                .transpose()
        };
        let auth = GitAuth {
            username: text("username")?,
            password: text("password")?,
            bearer_token: text("bearerToken")?,
            identity: text("identity")?,
            identity_pub: text("identity.pub")?,
            known_hosts: text("known_hosts")?,
            ca_pem: data.get("ca.crt").cloned(),
            use_environment: false,
        };
        if auth.identity.is_some() && auth.known_hosts.is_none() {
            return Err(GitError::Secret(format!(
                "{secret}: has an SSH identity but no known_hosts: host keys must be verified"
            )));
        }
        Ok(auth)
    }
}

/// What went wrong with Git. Never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{url}: {message}")]
    Remote { url: String, message: String },
    #[error("{url}: authentication failed: {message}")]
    Auth { url: String, message: String },
    #[error("{host}: {message}")]
    HostKey { host: String, message: String },
    #[error("{url}: the push of {refname} was rejected: {message}")]
    Rejected {
        url: String,
        refname: String,
        message: String,
    },
    #[error("{url}: the push of {refname} is not a fast-forward: the branch moved on the remote")]
    NonFastForward { url: String, refname: String },
    #[error("{0}")]
    Repo(String),
    #[error("{0} not found")]
    RefNotFound(String),
    #[error("{0}")]
    Secret(String),
}

impl GitError {
    fn repo(context: &str, e: git2::Error) -> Self {
        GitError::Repo(format!("{context}: {}", e.message()))
    }
}

/// Author and committer of the commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub email: String,
}

/// Host and port of a Git URL (`ssh://git@host:2222/x`, `git@host:x`,
/// `https://host/x`).
pub fn url_host(url: &str) -> (String, Option<u16>) {
    let rest = match url.split_once("://") {
        Some((_, r)) => r,
        None => url,
    };
    let authority = rest.split(['/']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    // scp-like `host:path` has no port.
    if !url.contains("://") {
        return (authority.split(':').next().unwrap_or("").to_string(), None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h.trim_matches(['[', ']']).to_string(), p.parse().ok())
        }
        _ => (authority.trim_matches(['[', ']']).to_string(), None),
    }
}

#[derive(Default)]
struct CallbackState {
    credential_attempts: u32,
    host_key_error: Option<String>,
    rejected: Vec<(String, String)>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// The callbacks for one remote operation.
fn callbacks<'a>(
    auth: &'a GitAuth,
    url: &'a str,
    state: &'a RefCell<CallbackState>,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let (host, port) = url_host(url);
    cb.credentials(move |_url, username_from_url, allowed| {
        let mut st = state.borrow_mut();
        st.credential_attempts += 1;
        let attempt = st.credential_attempts;
        drop(st);
        if attempt > 4 {
            return Err(git2::Error::from_str(
                "the server refused every credential offered",
            ));
        }
        let user = username_from_url
            .map(str::to_string)
            .or_else(|| auth.username.clone())
            .unwrap_or_else(|| "git".to_string());
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(&user);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            if let Some(key) = &auth.identity {
                return Cred::ssh_key_from_memory(
                    &user,
                    auth.identity_pub.as_deref(),
                    key,
                    auth.password.as_deref(),
                );
            }
            if auth.use_environment {
                if attempt == 1 && std::env::var_os("SSH_AUTH_SOCK").is_some() {
                    return Cred::ssh_key_from_agent(&user);
                }
                if let Some(h) = home() {
                    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                        let key = h.join(".ssh").join(name);
                        if key.is_file() {
                            return Cred::ssh_key(&user, None, &key, None);
                        }
                    }
                }
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
                return Cred::userpass_plaintext(u, p);
            }
            if auth.use_environment
                && let Ok(config) = git2::Config::open_default()
            {
                return Cred::credential_helper(&config, url, username_from_url);
            }
        }
        Err(git2::Error::from_str("no credentials for this remote"))
    });
    cb.certificate_check(move |cert, _hostname| {
        if let Some(hk) = cert.as_hostkey() {
            let name = host_name(&host, port);
            let known = match (&auth.known_hosts, auth.use_environment) {
                (Some(k), _) => Some(k.clone()),
                (None, true) => home()
                    .and_then(|h| std::fs::read_to_string(h.join(".ssh/known_hosts")).ok()),
                (None, false) => None,
            };
            let fail = |msg: String| {
                state.borrow_mut().host_key_error = Some(msg.clone());
                Err(git2::Error::from_str(&msg))
            };
            let Some(known) = known else {
                return fail(format!(
                    "no known_hosts to verify the host key of {name} against: give known_hosts"
                ));
            };
            let Some(key) = hk.hostkey() else {
                return fail(format!("the SSH server {name} sent no host key"));
            };
            let key_type = hk.hostkey_type().map(|t| t.name()).unwrap_or("");
            let kh = KnownHosts::parse(&known);
            return match kh.check(&name, key_type, key) {
                HostKeyCheck::Match => Ok(CertificateCheckStatus::CertificateOk),
                HostKeyCheck::Mismatch => fail(format!(
                    "the host key of {name} ({key_type}) does not match known_hosts: it changed, or someone is in the middle; refusing"
                )),
                HostKeyCheck::Unknown => {
                    let listed = kh.listed_types(&name);
                    if listed.is_empty() {
                        fail(format!(
                            "{name} is not in known_hosts: add its host key ({key_type}) to known_hosts"
                        ))
                    } else {
                        fail(format!(
                            "{name} offered a {key_type} host key, but known_hosts lists only {} for it: add its {key_type} key",
                            listed.join(", ")
                        ))
                    }
                }
            };
        }
        if let (Some(x509), Some(ca)) = (cert.as_x509(), &auth.ca_pem) {
            return match verify_with_ca(x509.data(), ca, &host) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(msg) => {
                    state.borrow_mut().host_key_error = Some(msg.clone());
                    Err(git2::Error::from_str(&msg))
                }
            };
        }
        Ok(CertificateCheckStatus::CertificatePassthrough)
    });
    cb.push_update_reference(move |refname, status| {
        if let Some(msg) = status {
            state
                .borrow_mut()
                .rejected
                .push((refname.to_string(), msg.to_string()));
        }
        Ok(())
    });
    cb
}

/// Verifies a server certificate against `ca_pem` for `host` (webpki).
fn verify_with_ca(der: &[u8], ca_pem: &[u8], host: &str) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca.crt does not parse: {e}"))?;
    let anchors: Vec<_> = cas
        .iter()
        .filter_map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .ok()
                .map(|a| a.to_owned())
        })
        .collect();
    if anchors.is_empty() {
        return Err("ca.crt holds no usable CA certificate".into());
    }
    let leaf = CertificateDer::from(der.to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("the server certificate does not parse: {e}"))?;
    let describe = || crate::registry::tls::describe_certificate(der).unwrap_or_default();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| {
        format!(
            "the server certificate ({}) is not trusted by ca.crt: {e}",
            describe()
        )
    })?;
    let name =
        ServerName::try_from(host.to_string()).map_err(|_| format!("{host} is not a host name"))?;
    ee.verify_is_valid_for_subject_name(&name).map_err(|e| {
        format!(
            "the server certificate ({}) is not valid for {host}: {e}",
            describe()
        )
    })
}

fn remote_error(url: &str, e: git2::Error, state: &RefCell<CallbackState>) -> GitError {
    if let Some(msg) = state.borrow_mut().host_key_error.take() {
        let (host, port) = url_host(url);
        return GitError::HostKey {
            host: host_name(&host, port),
            message: msg,
        };
    }
    let message = e.message().to_string();
    if e.class() == git2::ErrorClass::Ssh
        && (message.contains("authentication") || message.contains("credentials"))
        || e.code() == git2::ErrorCode::Auth
        || message.contains("refused every credential")
        || message.contains("no credentials")
        || message.contains("401")
    {
        return GitError::Auth {
            url: display_url(url),
            message,
        };
    }
    GitError::Remote {
        url: display_url(url),
        message,
    }
}

/// A bare repository in `cache` for `url`, reused between runs.
pub fn open_cache(cache: &Path, url: &str) -> Result<Repository, GitError> {
    use sha2::Digest;
    let id = format!("{:x}", sha2::Sha256::digest(url.as_bytes()));
    let dir = cache.join(&id[..24]);
    if dir.join("HEAD").is_file() {
        return Repository::open_bare(&dir)
            .map_err(|e| GitError::repo(&dir.display().to_string(), e));
    }
    std::fs::create_dir_all(&dir).map_err(|e| GitError::Repo(format!("{}: {e}", dir.display())))?;
    Repository::init_bare(&dir).map_err(|e| GitError::repo(&dir.display().to_string(), e))
}

/// The HTTP header that carries a bearer token, when the auth has one.
fn bearer_header(auth: &GitAuth) -> Option<String> {
    auth.bearer_token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}"))
}

/// Fetches `refspecs` from `url` into `repo` (all branches to
/// `refs/remotes/origin/*` and all tags when `refspecs` is empty).
pub fn fetch(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    refspecs: &[String],
) -> Result<(), GitError> {
    let state = RefCell::new(CallbackState::default());
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| GitError::repo(&display_url(url), e))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(auth, url, &state));
    opts.download_tags(git2::AutotagOption::All);
    let header = bearer_header(auth);
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    opts.custom_headers(&headers);
    let default = [
        "+refs/heads/*:refs/remotes/origin/*".to_string(),
        "+refs/tags/*:refs/tags/*".to_string(),
    ];
    let specs = if refspecs.is_empty() {
        &default[..]
    } else {
        refspecs
    };
    remote
        .fetch(specs, Some(&mut opts), None)
        .map_err(|e| remote_error(url, e, &state))
}

/// Where a checkout starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    pub commit: Oid,
    /// The branch, when the reference is one.
    pub branch: Option<String>,
    /// What was asked for, for messages (`branch main`, `tag v1`, ...).
    pub description: String,
}

fn peel(repo: &Repository, refname: &str) -> Result<Oid, GitError> {
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
        return Ok(Checkout {
            commit: oid,
            branch: reference.branch.clone().filter(|b| !b.is_empty()),
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
            description: format!("reference {name}"),
        });
    }
    if let Some(tag) = reference.tag.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Checkout {
            commit: peel(repo, &format!("refs/tags/{tag}"))?,
            branch: None,
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
        branch: Some(branch),
    })
}

/// A regular file of a commit's tree.
#[derive(Clone, Debug)]
pub struct TreeEntry {
    /// Path from the repository root, `/`-separated.
    pub path: String,
    pub id: Oid,
    pub mode: i32,
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
/// working tree, as `author` (author and committer, now). Returns the commit.
pub fn commit_files(
    repo: &Repository,
    parent: Oid,
    files: &[FileUpdate],
    author: &Signature,
    message: &str,
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
    commit_blobs(repo, parent, &blobs, author, message)
}

/// Commits blobs already written (path, blob id, mode) on top of `parent`.
pub fn commit_blobs(
    repo: &Repository,
    parent: Oid,
    files: &[TreeEntry],
    author: &Signature,
    message: &str,
) -> Result<Oid, GitError> {
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
    repo.commit(None, &sig, &sig, message, &tree, &[&parent])
        .map_err(|e| GitError::repo("commit", e))
}

/// Pushes `refspecs` (`src:dst`, sources are local references) to `url` with
/// push options (`key=value`). A reference the server rejects (a hook, a
/// non-fast-forward) is an error: libgit2 reports those only through a
/// callback, and its own result is Ok.
pub fn push(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    refspecs: &[String],
    options: &BTreeMap<String, String>,
) -> Result<(), GitError> {
    let state = RefCell::new(CallbackState::default());
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| GitError::repo(&display_url(url), e))?;
    let mut opts = PushOptions::new();
    opts.remote_callbacks(callbacks(auth, url, &state));
    let header = bearer_header(auth);
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    opts.custom_headers(&headers);
    let push_options: Vec<String> = options
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    let push_options: Vec<&str> = push_options.iter().map(String::as_str).collect();
    if !push_options.is_empty() {
        opts.remote_push_options(&push_options);
    }
    let dst = |spec: &str| spec.rsplit(':').next().unwrap_or(spec).to_string();
    if let Err(e) = remote.push(refspecs, Some(&mut opts)) {
        let msg = e.message().to_lowercase();
        if msg.contains("fast-forward")
            || msg.contains("fastforward")
            || msg.contains("not present locally")
        {
            return Err(GitError::NonFastForward {
                url: display_url(url),
                refname: refspecs.first().map(|s| dst(s)).unwrap_or_default(),
            });
        }
        return Err(remote_error(url, e, &state));
    }
    let rejected = std::mem::take(&mut state.borrow_mut().rejected);
    if let Some((refname, message)) = rejected.into_iter().next() {
        let m = message.to_lowercase();
        if m.contains("non-fast-forward")
            || m.contains("fetch first")
            || m.contains("stale")
            || m.contains("failed to update ref")
            || m.contains("cannot lock ref")
        {
            return Err(GitError::NonFastForward {
                url: display_url(url),
                refname,
            });
        }
        return Err(GitError::Rejected {
            url: display_url(url),
            refname,
            message,
        });
    }
    Ok(())
}

/// `ssh://`/`https://` URL with user info removed, for messages.
pub fn display_url(url: &str) -> String {
    if !url.contains("://") {
        // scp-like `user@host:path` holds no password.
        return url.to_string();
    }
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        // Unparsable: it may hold anything, so show only the scheme.
        Err(_) => format!(
            "{}://<unparsable URL>",
            url.split("://").next().unwrap_or("")
        ),
    }
}

/// Decodes a base64 value of a Kubernetes Secret's `data`.
pub fn decode_secret_value(v: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            url_host("ssh://git@127.0.0.1:2222/repo.git"),
            ("127.0.0.1".into(), Some(2222))
        );
        assert_eq!(
            url_host("git@github.com:org/repo.git"),
            ("github.com".into(), None)
        );
        assert_eq!(
            url_host("https://user:pw@git.example.com/r.git"),
            ("git.example.com".into(), None)
        );
        assert_eq!(
            url_host("https://127.0.0.1:8443/r.git"),
            ("127.0.0.1".into(), Some(8443))
        );
        assert_eq!(
            url_host("git://127.0.0.1:9418/r"),
            ("127.0.0.1".into(), Some(9418))
        );
    }

    #[test]
    fn errors_do_not_show_passwords_in_urls() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let url = "http://bot:s3cr3t-pw@127.0.0.1:1/r.git";
        let e = fetch(&repo, url, &GitAuth::default(), &[]).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }

    #[test]
    fn urls_lose_passwords() {
        assert_eq!(
            display_url("https://bot:s3cr3t@git.example.com/r.git"),
            "https://bot@git.example.com/r.git"
        );
        assert_eq!(display_url("ssh://git@h:22/r"), "ssh://git@h:22/r");
        assert!(!display_url("https://u:pa/ss@git.example.com/r.git").contains("ss@"));
        assert_eq!(
            display_url("git@github.com:org/r.git"),
            "git@github.com:org/r.git"
        );
    }

    #[test]
    fn secrets_need_known_hosts_with_identity() {
        let mut d = BTreeMap::new();
        d.insert(
            "identity".to_string(),
            b"-----BEGIN OPENSSH PRIVATE KEY-----".to_vec(),
        );
        assert!(GitAuth::from_secret_data(&d, "s").is_err());
        d.insert("known_hosts".to_string(), b"h ssh-ed25519 AAAA".to_vec());
        let a = GitAuth::from_secret_data(&d, "s").unwrap();
        assert!(!format!("{a:?}").contains("BEGIN"));
    }
}
