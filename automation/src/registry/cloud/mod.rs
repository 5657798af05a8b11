//! Registry logins from a cloud identity, as Flux's image-reflector-controller
//! does them with `spec.provider` (fluxcd/pkg `auth/{aws,gcp,azure}`): no
//! static secret, a short-lived registry credential from the identity the
//! process runs with (the pod's, through IRSA, EKS Pod Identity, GKE
//! Workload Identity or Azure Workload Identity; else the machine's),
//! cached until shortly before it expires.
//!
//! - `aws`: an ECR host gets a token from ECR's `GetAuthorizationToken`,
//!   with credentials from AWS's default chain (environment, web identity
//!   token file through STS, container credentials, instance metadata),
//!   through AWS's own SDK; user `AWS`.
//! - `gcp`: an Artifact Registry or GCR host gets an access token from the
//!   metadata server, or by workload identity federation from a credentials
//!   file (`GOOGLE_APPLICATION_CREDENTIALS` of type `external_account`);
//!   user `oauth2accesstoken`.
//! - `azure`: an ACR host gets an Entra ID token (workload identity, else
//!   managed identity through IMDS), exchanged at the registry's
//!   `/oauth2/exchange` for a refresh token; user
//!   `00000000-0000-0000-0000-000000000000`.
//!
//! Hosts are matched with Flux's patterns: a provider given an image of
//! another registry is Flux's error (`invalid AWS registry: '…'. must
//! match …`).

mod aws;
mod azure;
mod gcp;

use super::Credentials;
pub use crate::api::Provider;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Flux's patterns of the registries of each provider
/// (fluxcd/pkg `auth/aws/provider.go`, `auth/gcp/provider.go`,
/// `auth/azure/provider.go`).
pub const AWS_REGISTRY_PATTERN: &str = r"([0-9+]*).dkr[.-]ecr(?:-fips)?\.([^/.]*)\.(amazonaws\.com[.cn]*|amazonaws\.eu|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov|on\.aws)";
pub const GCP_REGISTRY_PATTERN: &str =
    r"^(((.+\.)?gcr\.io)|(.+-docker\.pkg\.dev)|(docker\.s3nsregistry\.fr))$";
pub const AZURE_REGISTRY_PATTERN: &str = r"^.+\.(azurecr\.io|azurecr\.cn|azurecr\.de|azurecr\.us)$";

/// Why no cloud login.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The image is not of the provider's registries (Flux's message).
    #[error("invalid {provider} registry: '{registry}'. must match {pattern}")]
    NotItsRegistry {
        provider: &'static str,
        registry: String,
        pattern: &'static str,
    },
    /// A ServiceAccount's identity was asked for with the gate off.
    #[error("{GATE_OFF}")]
    Gate,
    /// The ServiceAccount's annotations or token do not give an identity.
    #[error("{detail}")]
    ServiceAccount {
        namespace: String,
        name: String,
        detail: String,
    },
    /// The identity could not be had, or the exchange was refused.
    #[error("provider {provider}: {step}: {detail}; check {hint}")]
    Login {
        provider: &'static str,
        step: &'static str,
        detail: String,
        hint: &'static str,
    },
}

impl CloudError {
    fn login(
        provider: &'static str,
        step: &'static str,
        detail: impl Into<String>,
        hint: &'static str,
    ) -> Self {
        CloudError::Login {
            provider,
            step,
            detail: detail.into(),
            hint,
        }
    }
}

/// What a login gives: a registry credential and when it expires (when
/// the service says so, in the future).
#[derive(Clone)]
struct Login {
    username: String,
    password: String,
    expires: Option<SystemTime>,
}

/// Renewed this long before the service says the credential expires.
const EARLY: Duration = Duration::from_secs(5 * 60);
/// Kept at most this long, whatever the service says.
const LONGEST: Duration = Duration::from_secs(6 * 3600);

/// The ECR region of an ECR host, or Flux's error.
pub fn aws_region(registry: &str) -> Result<String, CloudError> {
    let re = regex::Regex::new(AWS_REGISTRY_PATTERN).map_err(|e| {
        CloudError::login("aws", "the ECR host pattern", e.to_string(), "the program")
    })?;
    re.captures(registry)
        .and_then(|c| c.get(2))
        .map(|m| m.as_str().to_string())
        .ok_or_else(|| CloudError::NotItsRegistry {
            provider: "AWS",
            registry: registry.to_string(),
            pattern: AWS_REGISTRY_PATTERN,
        })
}

/// Checks that `registry` is one of `provider`'s (Flux's patterns).
pub fn check_registry(provider: Provider, registry: &str) -> Result<(), CloudError> {
    let (name, pattern) = match provider {
        Provider::Generic => return Ok(()),
        Provider::Aws => return aws_region(registry).map(|_| ()),
        Provider::Gcp => ("GCP", GCP_REGISTRY_PATTERN),
        Provider::Azure => ("Azure", AZURE_REGISTRY_PATTERN),
    };
    let matches = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(registry));
    if matches {
        Ok(())
    } else {
        Err(CloudError::NotItsRegistry {
            provider: name,
            registry: registry.to_string(),
            pattern,
        })
    }
}

/// A ServiceAccount whose cloud identity a login uses (Flux's object-level
/// workload identity): its annotations name the identity
/// (`eks.amazonaws.com/role-arn`; `azure.workload.identity/client-id` and
/// `azure.workload.identity/tenant-id`; `iam.gke.io/gcp-service-account`
/// and `gcp.auth.fluxcd.io/workload-identity-provider`), and a Kubernetes
/// token issued for it (TokenRequest, for the provider's audiences) proves
/// it to the cloud.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccountIdentity {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
}

impl ServiceAccountIdentity {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// Flux's message when a ServiceAccount's identity is asked for while the
/// gate is off (fluxcd/pkg `auth/feature_gates.go`).
pub const GATE_OFF: &str = "ObjectLevelWorkloadIdentity feature gate is not enabled";

type Key = (Provider, String, Option<ServiceAccountIdentity>);

/// The logins of this process, cached by provider, registry host and
/// ServiceAccount.
pub struct CloudLogins {
    http: reqwest::Client,
    /// Whether objects may name a ServiceAccount whose identity is used
    /// (`--feature-gates=ObjectLevelWorkloadIdentity=true`).
    object_level: bool,
    cache: Mutex<HashMap<Key, (Login, SystemTime)>>,
}

impl Default for CloudLogins {
    fn default() -> Self {
        Self::new(false)
    }
}

impl std::fmt::Debug for CloudLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudLogins")
            .field("object_level", &self.object_level)
            .finish_non_exhaustive()
    }
}

impl CloudLogins {
    pub fn new(object_level: bool) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        // The system's roots (and SSL_CERT_FILE); without a usable store the
        // logins fail with TLS errors that name the host.
        if let Ok((tls, _)) = super::tls::client_config(None, None, None) {
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder.build().unwrap_or_default();
        CloudLogins {
            http,
            object_level,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether objects' ServiceAccounts may be used.
    pub fn object_level(&self) -> bool {
        self.object_level
    }

    fn cached(&self, key: &Key, now: SystemTime) -> Option<Login> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(_, until)| now < *until)
            .map(|(l, _)| l.clone())
    }

    /// The audiences a Kubernetes token for `sa` must carry for
    /// `provider` (fluxcd/pkg `GetAudiences`), after checking that its
    /// annotations name an identity.
    pub async fn audiences(
        &self,
        provider: Provider,
        sa: &ServiceAccountIdentity,
    ) -> Result<Vec<String>, CloudError> {
        match provider {
            Provider::Generic => Ok(Vec::new()),
            Provider::Aws => {
                aws::role_arn(sa)?;
                Ok(vec!["sts.amazonaws.com".to_string()])
            }
            Provider::Azure => {
                azure::identity(sa)?;
                Ok(vec!["api://AzureADTokenExchange".to_string()])
            }
            Provider::Gcp => gcp::audiences(&self.http, sa).await,
        }
    }

    /// The registry credential of `provider` for `registry` (a host, with
    /// a port when it has one), from the cache while it is good. With `sa`,
    /// the ServiceAccount's identity: `token` is asked for a Kubernetes
    /// token with the given audiences when a login is needed.
    pub async fn credentials<F, Fut>(
        &self,
        provider: Provider,
        registry: &str,
        sa: Option<&ServiceAccountIdentity>,
        token: F,
    ) -> Result<Option<Credentials>, CloudError>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<String, String>>,
    {
        if provider == Provider::Generic {
            return Ok(None);
        }
        check_registry(provider, registry)?;
        if sa.is_some() && !self.object_level {
            return Err(CloudError::Gate);
        }
        let key = (provider, registry.to_string(), sa.cloned());
        let now = SystemTime::now();
        let login = match self.cached(&key, now) {
            Some(l) => l,
            None => {
                let subject = match sa {
                    Some(sa) => {
                        let audiences = self.audiences(provider, sa).await?;
                        let t = token(audiences).await.map_err(|detail| {
                            CloudError::ServiceAccount {
                                namespace: sa.namespace.clone(),
                                name: sa.name.clone(),
                                detail: format!(
                                    "failed to create kubernetes token for service account '{}/{}': {detail}",
                                    sa.namespace, sa.name
                                ),
                            }
                        })?;
                        Some((sa, t))
                    }
                    None => None,
                };
                let l = match provider {
                    Provider::Aws => aws::login(registry, subject).await?,
                    Provider::Gcp => gcp::login(&self.http, subject).await?,
                    Provider::Azure => azure::login(&self.http, registry, subject).await?,
                    Provider::Generic => return Ok(None),
                };
                if let Some(until) = keep_until(l.expires, now) {
                    self.cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, (l.clone(), until));
                }
                l
            }
        };
        Ok(Some(Credentials::Basic {
            username: login.username,
            password: login.password,
        }))
    }

    /// Forgets the logins for `registry` (a refused credential is fetched
    /// anew next time).
    pub fn forget(&self, provider: Provider, registry: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, r, _), _| !(*p == provider && r == registry));
    }
}

/// A ServiceAccount's Kubernetes token, with its identity.
type Subject<'a> = Option<(&'a ServiceAccountIdentity, String)>;

/// How long a login is kept: until shortly before it expires, never past
/// [`LONGEST`]; not at all when the service gives no expiry in the future
/// (a stand-in's token dated in the past is not trusted).
fn keep_until(expires: Option<SystemTime>, now: SystemTime) -> Option<SystemTime> {
    let expires = expires.filter(|e| *e > now)?;
    let left = expires.duration_since(now).ok()?;
    let early = EARLY.min(left / 2);
    Some(now + (left - early).min(LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_matched_with_fluxs_patterns() {
        assert_eq!(
            aws_region("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap(),
            "us-east-1"
        );
        assert_eq!(
            aws_region("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com").unwrap(),
            "us-gov-west-1"
        );
        assert_eq!(
            aws_region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap(),
            "cn-north-1"
        );
        let e = aws_region("ghcr.io").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("invalid AWS registry: 'ghcr.io'. must match {AWS_REGISTRY_PATTERN}")
        );
        for ok in ["gcr.io", "eu.gcr.io", "europe-west1-docker.pkg.dev"] {
            check_registry(Provider::Gcp, ok).unwrap();
        }
        assert!(
            check_registry(Provider::Gcp, "ghcr.io")
                .unwrap_err()
                .to_string()
                .starts_with("invalid GCP registry: 'ghcr.io'")
        );
        check_registry(Provider::Azure, "myreg.azurecr.io").unwrap();
        assert!(check_registry(Provider::Azure, "azurecr.io").is_err());
        check_registry(Provider::Generic, "anything").unwrap();
    }

    #[test]
    fn logins_are_kept_until_shortly_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(keep_until(Some(now + 12 * hour), now), Some(now + 6 * hour));
        assert_eq!(keep_until(Some(now + hour), now), Some(now + hour - EARLY));
        // A short life: renewed halfway.
        assert_eq!(
            keep_until(Some(now + Duration::from_secs(60)), now),
            Some(now + Duration::from_secs(30))
        );
        // In the past, or none: not kept.
        assert_eq!(keep_until(Some(now - hour), now), None);
        assert_eq!(keep_until(None, now), None);
    }
}
