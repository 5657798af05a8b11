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

mod transport;
mod tree;
mod urls;

pub use transport::*;
pub use tree::*;
pub use urls::*;

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

/// What went wrong with Git. Never carries a credential. Crosses the pipe
/// from a network runner as JSON (the variants a fetch or a push can end
/// with; see `child::sendable`).
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    #[serde(skip)]
    Cancelled { url: String },
    #[error("{0}")]
    Repo(String),
    #[error("{0} not found")]
    RefNotFound(String),
    #[error("{0}")]
    Secret(String),
    /// The commit could not be signed: nothing was committed.
    #[error("cannot sign the commit with the signing key: {0}")]
    #[serde(skip)]
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
