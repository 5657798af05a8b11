//! What a registry call can fail with, and what the registry said.

use super::*;

/// What went wrong talking to a registry. Names the registry, the repository
/// and what happened; never a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}: {repository}: authentication failed ({status}){}{}", realm.as_ref().map(|r| format!(", refused by {r}")).unwrap_or_default(), hint)]
    Unauthorized {
        registry: String,
        repository: String,
        status: u16,
        realm: Option<String>,
        hint: String,
    },
    #[error("{registry}: repository {repository} not found")]
    NotFound {
        registry: String,
        repository: String,
    },
    #[error("{registry}: {repository}: tag {tag} not found")]
    TagNotFound {
        registry: String,
        repository: String,
        tag: String,
    },
    #[error("{registry}: TLS failed: {detail}")]
    Tls { registry: String, detail: String },
    #[error("{registry}: {repository}: no answer within {timeout:?}")]
    Timeout {
        registry: String,
        repository: String,
        timeout: Duration,
    },
    #[error("{registry}: cannot connect: {detail}")]
    Connect { registry: String, detail: String },
    #[error("{registry}: {repository}: still rate limited ({status}) after {attempts} attempts")]
    RateLimited {
        registry: String,
        repository: String,
        status: u16,
        attempts: u32,
    },
    #[error(
        "{registry}: {repository}: rate limited ({status}); the registry asks to wait {asked}s, longer than the {timeout:?} left for this operation: try again later, or raise the timeout"
    )]
    RateLimitWait {
        registry: String,
        repository: String,
        status: u16,
        asked: u64,
        timeout: Duration,
    },
    #[error("{registry}: {repository}: more than {cap} tags; raise the tag cap or exclude tags")]
    TooManyTags {
        registry: String,
        repository: String,
        cap: usize,
    },
    #[error("{registry}: {repository}: more than {cap} pages of tags")]
    TooManyPages {
        registry: String,
        repository: String,
        cap: usize,
    },
    #[error("{registry}: {repository}: the tag list pages loop back to {url}")]
    PageLoop {
        registry: String,
        repository: String,
        url: String,
    },
    #[error("{registry}: a response body exceeds {cap} bytes")]
    BodyTooLarge { registry: String, cap: usize },
    #[error("{registry}: {repository}: {status}: {message}")]
    Http {
        registry: String,
        repository: String,
        status: u16,
        message: String,
    },
    #[error("{registry}: {repository}: unexpected response: {detail}")]
    InvalidResponse {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] TlsConfigError),
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("HTTP client setup: {0}")]
    Setup(String),
}

/// What kind of failure a [`RegistryError`] is, for status reasons and
/// retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryErrorKind {
    /// The registry refused the credentials, or asked for some.
    AuthenticationFailed,
    /// No such repository or tag.
    NotFound,
    /// A setting of this side is wrong (TLS, a proxy): retrying alone does
    /// not help.
    InvalidConfiguration,
    /// Anything else on the way (network, the registry's answer).
    ReadOperationFailed,
}

impl RegistryError {
    pub fn kind(&self) -> RegistryErrorKind {
        match self {
            RegistryError::Unauthorized { .. } => RegistryErrorKind::AuthenticationFailed,
            RegistryError::NotFound { .. } | RegistryError::TagNotFound { .. } => {
                RegistryErrorKind::NotFound
            }
            RegistryError::TlsConfig(_) | RegistryError::Proxy(_) | RegistryError::Setup(_) => {
                RegistryErrorKind::InvalidConfiguration
            }
            _ => RegistryErrorKind::ReadOperationFailed,
        }
    }
}

/// A rustls error inside `e`, looking through `io::Error` wrappers (whose
/// `source()` skips the error they wrap).
pub(super) fn find_rustls_error(e: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r.clone());
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    find_rustls_error(inner)
}

#[derive(Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
pub(super) struct ErrorItem {
    #[serde(default)]
    pub(super) code: String,
    #[serde(default)]
    pub(super) message: String,
}
