//! Git on libgit2: fetch into a cache, resolve Flux's checkout references,
//! commit file updates without a working tree, push with rejection detection,
//! and authentication from a Flux GitRepository Secret's keys (SSH with
//! mandatory host key verification, HTTPS basic or bearer, a CA).

mod child;
pub mod forge;
pub mod github;
pub mod known_hosts;
pub mod sign;

use crate::api::GitRepositoryRef;
pub use crate::api::display_url;
use crate::policy::{Range, Version};
use base64::Engine;
pub use child::{serve_network_request, set_network_runner, terminate_children};
use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, Oid, PushOptions, RemoteCallbacks,
    Repository,
};
use known_hosts::{HostKeyCheck, KnownHosts, host_name};
pub use sign::{KeyFormat, SignError, Signer};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    /// A network operation that makes no progress for this long (no answer
    /// to the connection, no data) is abandoned with an error;
    /// [`DEFAULT_IDLE_TIMEOUT`] when `None`.
    pub idle_timeout: Option<Duration>,
}

/// How long a Git network operation may go without progress.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
            .field("idle_timeout", &self.idle_timeout)
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
            idle_timeout: None,
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
    #[error(
        "{url}: no progress for {seconds}s: the server accepted the connection but stopped answering; the operation was abandoned"
    )]
    Timeout { url: String, seconds: u64 },
    /// [`terminate_children`] ended the operation (or it would have started
    /// after it): the process is shutting down.
    #[error("{url}: cancelled: the process is shutting down")]
    Cancelled { url: String },
    #[error("{0}")]
    Repo(String),
    #[error("{0} not found")]
    RefNotFound(String),
    #[error("{0}")]
    Secret(String),
    /// The commit could not be signed: nothing was committed.
    #[error("cannot sign the commit with the signing key: {0}")]
    Signing(#[from] SignError),
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
    /// What the server said on the side band (`remote: ...` lines: a
    /// hook's reasons), capped.
    remote_messages: String,
}

/// Progress of a network operation, shared with the thread that watches it:
/// the callbacks stamp each sign of life, and stop the operation once the
/// watcher gave up on it.
#[derive(Default)]
struct Activity {
    started: Option<Instant>,
    /// Milliseconds after `started` of the last sign of life.
    last: AtomicU64,
    abandoned: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Some(Instant::now()),
            ..Activity::default()
        })
    }

    /// Records progress; false once the operation was abandoned.
    fn alive(&self) -> bool {
        if let Some(s) = self.started {
            let ms = u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        !self.abandoned.load(Ordering::Relaxed)
    }

    fn idle_for(&self) -> Duration {
        let Some(s) = self.started else {
            return Duration::ZERO;
        };
        s.elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// Runs a network operation on its own thread and waits for it while it
/// makes progress. An operation idle for longer than `idle` (a server that
/// accepts the connection and never answers) is abandoned: the caller gets
/// [`GitError::Timeout`] at once, and the operation stops at its next
/// callback, if one ever comes (in a process of [`set_network_runner`]'s,
/// the process ends instead). (libgit2's own socket timeouts can only be
/// set through an unsafe global option; this keeps the process free of it.)
fn watched<T: Send + 'static>(
    url: &str,
    idle: Duration,
    op: impl FnOnce(Arc<Activity>) -> Result<T, GitError> + Send + 'static,
) -> Result<T, GitError> {
    watched_with(url, idle, op, &mut || {})
}

/// [`watched`], calling `beat` when the operation made progress since the
/// last call (checked every tenth of a second).
fn watched_with<T: Send + 'static>(
    url: &str,
    idle: Duration,
    op: impl FnOnce(Arc<Activity>) -> Result<T, GitError> + Send + 'static,
    beat: &mut dyn FnMut(),
) -> Result<T, GitError> {
    let activity = Activity::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let a = activity.clone();
    std::thread::Builder::new()
        .name("git-network".into())
        .spawn(move || {
            let _ = tx.send(op(a));
        })
        .map_err(|e| GitError::Repo(format!("cannot start a thread for Git: {e}")))?;
    let mut beaten = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => return r,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(GitError::Repo(format!(
                    "{}: the Git operation ended without a result",
                    display_url(url)
                )));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if child::terminated() {
                    activity.abandoned.store(true, Ordering::Relaxed);
                    return Err(GitError::Cancelled {
                        url: display_url(url),
                    });
                }
                let last = activity.last.load(Ordering::Relaxed);
                if beaten != Some(last) {
                    beaten = Some(last);
                    beat();
                }
                if activity.idle_for() > idle {
                    activity.abandoned.store(true, Ordering::Relaxed);
                    return Err(GitError::Timeout {
                        url: display_url(url),
                        seconds: idle.as_secs(),
                    });
                }
            }
        }
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// The callbacks for one remote operation.
fn callbacks<'a>(
    auth: &'a GitAuth,
    url: &'a str,
    state: &'a RefCell<CallbackState>,
    activity: &'a Activity,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let (host, port) = url_host(url);
    let url_has_password = reqwest::Url::parse(url).is_ok_and(|u| u.password().is_some());
    cb.transfer_progress(move |_| activity.alive());
    cb.push_transfer_progress(move |_, _, _| {
        activity.alive();
    });
    cb.sideband_progress(move |text| {
        let mut st = state.borrow_mut();
        if st.remote_messages.len() < 4096 {
            st.remote_messages
                .push_str(&String::from_utf8_lossy(text).replace('\r', "\n"));
        }
        activity.alive()
    });
    cb.pack_progress(move |_, _, _| {
        activity.alive();
    });
    cb.update_tips(move |_, _, _| activity.alive());
    cb.credentials(move |_url, username_from_url, allowed| {
        if !activity.alive() {
            return Err(git2::Error::from_str("abandoned"));
        }
        let mut st = state.borrow_mut();
        st.credential_attempts += 1;
        let attempt = st.credential_attempts;
        drop(st);
        if attempt > 4 {
            return Err(git2::Error::from_str(
                "the server refused every credential offered",
            ));
        }
        // libgit2 tries a URL's own user and password first, and asks here
        // only once the server refused them.
        if url_has_password && allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(git2::Error::from_str(
                "the server refused the user name and password written in the URL",
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
        activity.alive();
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
        activity.alive();
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
    if message_is_abandoned(&e) {
        return GitError::Remote {
            url: display_url(url),
            message: "abandoned after no progress".into(),
        };
    }
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
        || message.contains("refused the user name and password")
        || message.contains("no credentials")
        || message.contains("failed to acquire username/password")
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

fn message_is_abandoned(e: &git2::Error) -> bool {
    e.message() == "abandoned" || e.code() == git2::ErrorCode::User
}

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
fn remove_lock_files(dir: &Path, deep: bool) {
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

/// The HTTP header that carries a bearer token, when the auth has one.
fn bearer_header(auth: &GitAuth) -> Option<String> {
    auth.bearer_token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}"))
}

/// Fetches `refspecs` from `url` into `repo` (all branches to
/// `refs/remotes/origin/*` and all tags when `refspecs` is empty). The
/// operation runs with its own handle on the repository, in a child process
/// when a runner is set ([`set_network_runner`]), else on a thread of its
/// own, and is abandoned when it makes no progress for the auth's idle
/// timeout.
pub fn fetch(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    refspecs: &[String],
) -> Result<(), GitError> {
    let git_dir = repo.path().to_path_buf();
    let (url_owned, auth_owned) = (url.to_string(), auth.clone());
    let specs: Vec<String> = if refspecs.is_empty() {
        vec![
            "+refs/heads/*:refs/remotes/origin/*".to_string(),
            "+refs/tags/*:refs/tags/*".to_string(),
        ]
    } else {
        refspecs.to_vec()
    };
    if let Some(runner) = child::runner() {
        let op = child::Operation::Fetch { refspecs: specs };
        return child::run_in_child(runner, op, &git_dir, url, auth, child::BACKSTOP_MARGIN);
    }
    watched(url, idle(auth), move |activity| {
        let repo = Repository::open(&git_dir).map_err(|e| GitError::repo("repository", e))?;
        fetch_now(&repo, &url_owned, &auth_owned, &specs, &activity)
    })
}

fn idle(auth: &GitAuth) -> Duration {
    auth.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)
}

fn fetch_now(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    specs: &[String],
    activity: &Activity,
) -> Result<(), GitError> {
    let state = RefCell::new(CallbackState::default());
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| GitError::repo(&display_url(url), e))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(auth, url, &state, activity));
    // Tags come only through the refspecs (a checkout by tag or semver asks
    // for them); no automatic tag following.
    opts.download_tags(git2::AutotagOption::None);
    // Remote-tracking branches deleted on the remote go here too: a cache
    // must not build on a branch that no longer exists.
    opts.prune(git2::FetchPrune::On);
    let header = bearer_header(auth);
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    opts.custom_headers(&headers);
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
    /// The full reference Flux records for the checkout (`refs/heads/main`,
    /// `refs/tags/v1.2.0`, a `name` as given); empty for a bare commit.
    pub reference: String,
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
    if is_local(url) {
        return push_local(repo, url, refspecs, options, idle(auth));
    }
    let git_dir = repo.path().to_path_buf();
    let (url_owned, auth_owned) = (url.to_string(), auth.clone());
    let (specs, options) = (refspecs.to_vec(), options.clone());
    if let Some(runner) = child::runner() {
        let op = child::Operation::Push {
            refspecs: specs,
            options,
        };
        return child::run_in_child(runner, op, &git_dir, url, auth, child::BACKSTOP_MARGIN);
    }
    watched(url, idle(auth), move |activity| {
        let repo = Repository::open(&git_dir).map_err(|e| GitError::repo("repository", e))?;
        push_now(&repo, &url_owned, &auth_owned, &specs, &options, &activity)
    })
}

fn push_now(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    refspecs: &[String],
    options: &BTreeMap<String, String>,
    activity: &Activity,
) -> Result<(), GitError> {
    let state = RefCell::new(CallbackState::default());
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| GitError::repo(&display_url(url), e))?;
    let mut opts = PushOptions::new();
    opts.remote_callbacks(callbacks(auth, url, &state, activity));
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
    match rejected.into_iter().next() {
        Some((refname, message)) => {
            let said: Vec<String> = state
                .borrow()
                .remote_messages
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            let message = if said.is_empty() {
                message
            } else {
                format!("{message}: {}", said.join("; "))
            };
            Err(rejection(url, refname, message))
        }
        None => Ok(()),
    }
}

/// A rejected reference: a non-fast-forward (the branch moved), or a refusal
/// (a hook, a protected branch).
fn rejection(url: &str, refname: String, message: String) -> GitError {
    {
        let m = message.to_lowercase();
        if m.contains("non-fast-forward")
            || m.contains("fetch first")
            || m.contains("stale")
            || m.contains("failed to update ref")
            || m.contains("cannot lock ref")
        {
            return GitError::NonFastForward {
                url: display_url(url),
                refname,
            };
        }
        GitError::Rejected {
            url: display_url(url),
            refname,
            message,
        }
    }
}

/// Whether `url` names a repository on this machine (a path or `file://`),
/// which libgit2 reaches without a server, and so without running the
/// remote's hooks.
pub fn is_local(url: &str) -> bool {
    if url.starts_with("file://") {
        return true;
    }
    if url.contains("://") {
        return false;
    }
    // scp-like `host:path` has a colon before any slash.
    let before_slash = url.split('/').next().unwrap_or(url);
    !before_slash.contains(':') || url.starts_with('/') || url.starts_with('.')
}

/// Pushes to a repository on this machine with git itself, whose local
/// transport runs the remote's hooks (pre-receive, update) as a server
/// would: a push a hook refuses is reported as refused.
fn push_local(
    repo: &Repository,
    url: &str,
    refspecs: &[String],
    options: &BTreeMap<String, String>,
    idle: Duration,
) -> Result<(), GitError> {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("--git-dir")
        .arg(repo.path())
        .args(["push", "--porcelain", "--no-verify"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    for (k, v) in options {
        cmd.arg("--push-option");
        cmd.arg(if v.is_empty() {
            k.clone()
        } else {
            format!("{k}={v}")
        });
    }
    cmd.arg(url).args(refspecs);
    let shown = display_url(url);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| GitError::Remote {
            url: shown.clone(),
            message: format!(
                "the remote is a folder on this machine; pushing there runs its hooks through the git program, which cannot be started ({e}): install git"
            ),
        })?;
    // git says nothing until it is done: the limit is on the whole push
    // (hooks take their time), and git is killed past it.
    let limit = idle.max(Duration::from_secs(600));
    let out = match child::supervise(child, None, limit, false) {
        Ok(out) => out,
        Err(child::Stop::Quiet) => {
            return Err(GitError::Timeout {
                url: shown,
                seconds: limit.as_secs(),
            });
        }
        Err(child::Stop::Cancelled) => return Err(GitError::Cancelled { url: shown }),
        Err(child::Stop::Io(e)) => {
            return Err(GitError::Remote {
                url: shown,
                message: format!("git push: {e}"),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Porcelain lines: FLAG \t FROM:TO \t SUMMARY (REASON); `!` is a rejection.
    for line in stdout.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(flag), Some(spec), summary) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if flag == "!" {
            let refname = spec.rsplit(':').next().unwrap_or(spec).to_string();
            let summary = summary.unwrap_or("");
            let hook = stderr
                .lines()
                .filter_map(|l| l.strip_prefix("remote: "))
                .collect::<Vec<_>>()
                .join("; ");
            let message = if hook.is_empty() {
                summary.to_string()
            } else {
                format!("{summary}: {hook}")
            };
            return Err(rejection(url, refname, message));
        }
    }
    if !out.status.success() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(GitError::Remote {
            url: shown,
            message: format!("git push failed: {}", last.trim()),
        });
    }
    Ok(())
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
    fn revisions_as_flux_spells_them() {
        let c = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(
            flux_revision("refs/heads/main", c),
            "main@sha1:0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(
            flux_revision("refs/tags/v1.2.0", c),
            format!("v1.2.0@sha1:{c}")
        );
        assert_eq!(
            flux_revision("refs/heads/team/x", c),
            format!("team/x@sha1:{c}")
        );
        // Flux keeps what follows the second slash, whatever the namespace.
        assert_eq!(
            flux_revision("refs/pull/1/head", c),
            format!("1/head@sha1:{c}")
        );
        assert_eq!(flux_revision("", c), format!("sha1:{c}"));
    }

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
    fn opening_a_cache_removes_stale_lock_files() {
        let cache = tempfile::tempdir().unwrap();
        let dir = open_cache(cache.path(), "https://example.com/r.git")
            .unwrap()
            .path()
            .to_path_buf();
        let locks = [
            "packed-refs.lock",
            "FETCH_HEAD.lock",
            "refs/remotes/origin/main.lock",
            "refs/tags/v1.lock",
        ];
        std::fs::create_dir_all(dir.join("refs/remotes/origin")).unwrap();
        for l in locks {
            std::fs::write(dir.join(l), "").unwrap();
        }
        std::fs::write(dir.join("refs/remotes/origin/main"), "x").unwrap();
        let again = open_cache(cache.path(), "https://example.com/r.git").unwrap();
        assert_eq!(again.path(), dir);
        for l in locks {
            assert!(!dir.join(l).exists(), "{l} is still there");
        }
        assert!(dir.join("refs/remotes/origin/main").exists());
        assert!(dir.join("HEAD").exists());
    }

    #[test]
    fn urls_lose_passwords() {
        assert_eq!(
            display_url("https://bot:s3cr3t@git.example.com/r.git"),
            "https://***@git.example.com/r.git"
        );
        assert_eq!(
            display_url("https://ghp_T0KEN@github.com/org/r.git"),
            "https://***@github.com/org/r.git"
        );
        assert_eq!(display_url("ssh://git@h:22/r"), "ssh://***@h:22/r");
        assert_eq!(display_url("https://h/r.git"), "https://h/r.git");
        assert_eq!(display_url("T0KEN@h:org/r.git"), "***@h:org/r.git");
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
