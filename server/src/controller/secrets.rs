//! What the controllers read from Secrets and ServiceAccounts: registry
//! credentials (`secretRef`, the ServiceAccount's imagePullSecrets), TLS
//! material (`certSecretRef`), a proxy (`proxySecretRef`), the Git
//! credentials of a GitRepository, and an automation's commit signing key.
//! Errors name the Secret and the key, never a value.

use crate::api::Provider;
use crate::api::{GitRepository, ImageRepository, ResourceExt, SigningKey};
use crate::engine::{Engine, EngineError, RegistryAccess};
use crate::git::{GitAuth, KeyFormat, Signer, github, sign};
use crate::registry::Keychain;
use crate::registry::cloud::{CloudLogins, ServiceAccountIdentity};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A Secret's `data` with the `stringData` keys it lacks, taken out of it.
pub fn data_of(s: &mut Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.take().unwrap_or_default() {
        data.entry(k).or_insert_with(|| v.into_bytes());
    }
    data
}

/// A Secret's data (values decoded), or why it cannot be read.
pub async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, EngineError> {
    let mut secret: Secret = get(client, namespace, name)
        .await
        .map_err(|why| EngineError::Source(format!("Secret {namespace}/{name} {why}")))?;
    Ok(data_of(&mut secret))
}

/// Why an object could not be had.
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error("not found")]
    NotFound,
    #[error("cannot be read: {0}")]
    Unreadable(String),
}

/// One namespaced object, or why it could not be had.
async fn get<K>(client: &Client, namespace: &str, name: &str) -> Result<K, Unavailable>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(object)) => Ok(object),
        Ok(None) => Err(Unavailable::NotFound),
        Err(e) => Err(Unavailable::Unreadable(api_error(&e))),
    }
}

/// A Kubernetes API error without the request body.
pub fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

fn text(data: &BTreeMap<String, Vec<u8>>, keys: &[&str]) -> Option<Vec<u8>> {
    keys.iter().find_map(|k| data.get(*k).cloned())
}

/// How to reach an ImageRepository's registry: credentials from its
/// `spec.provider`'s cloud login when it names one (then, as in Flux, the
/// `secretRef` and imagePullSecrets are not read, and `serviceAccountName`
/// names the ServiceAccount whose cloud identity logs in, behind the
/// ObjectLevelWorkloadIdentity gate), else from its `secretRef` and its
/// ServiceAccount's imagePullSecrets; TLS from its
/// `certSecretRef` (`ca.crt`, `tls.crt`, `tls.key`, or the older `caFile`,
/// `certFile`, `keyFile`), a proxy from its `proxySecretRef`.
pub async fn registry_access(
    client: &Client,
    cloud: &CloudLogins,
    repo: &ImageRepository,
    timeout: Option<std::time::Duration>,
) -> Result<RegistryAccess, EngineError> {
    let ns = repo.namespace().unwrap_or_default();
    let spec = &repo.spec;
    let mut keychain = Keychain::default();
    if spec.provider != Provider::Generic {
        keychain = cloud_keychain(client, cloud, repo).await?;
    } else if let Some(r) = &spec.secret_ref {
        let data = secret_data(client, &ns, &r.name).await?;
        keychain = Keychain::from_secret_data(&data, &format!("Secret {ns}/{}", r.name))
            .map_err(|e| EngineError::Unreadable(e.into()))?;
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty() && spec.provider == Provider::Generic)
    {
        let account: ServiceAccount = get(client, &ns, sa)
            .await
            .map_err(|why| EngineError::Source(format!("ServiceAccount {ns}/{sa} {why}")))?;
        for s in account.image_pull_secrets.unwrap_or_default() {
            let data = secret_data(client, &ns, &s.name).await?;
            let k = Keychain::from_secret_data(&data, &format!("Secret {ns}/{}", s.name))
                .map_err(|e| EngineError::Unreadable(e.into()))?;
            keychain.merge(k);
        }
    }
    let mut access = RegistryAccess {
        insecure: spec.insecure,
        timeout,
        keychain,
        ..RegistryAccess::default()
    };
    if let Some(r) = &spec.cert_secret_ref {
        let data = secret_data(client, &ns, &r.name).await?;
        access.ca_pem = text(&data, &["ca.crt", "caFile"]);
        access.client_cert_pem = text(&data, &["tls.crt", "certFile"]);
        access.client_key_pem = text(&data, &["tls.key", "keyFile"]);
        if access.client_cert_pem.is_some() != access.client_key_pem.is_some() {
            return Err(EngineError::Source(format!(
                "Secret {ns}/{}: tls.crt and tls.key go together",
                r.name
            )));
        }
    }
    if let Some(r) = &spec.proxy_secret_ref {
        let data = secret_data(client, &ns, &r.name).await?;
        access.proxy = Some(proxy_url(&data, &format!("{ns}/{}", r.name))?);
    }
    Ok(access)
}

/// The cloud login of an ImageRepository's registry: the controller's own
/// identity, or the one of the ServiceAccount it names (a token from the
/// TokenRequest API for the provider's audiences).
async fn cloud_keychain(
    client: &Client,
    cloud: &CloudLogins,
    repo: &ImageRepository,
) -> Result<Keychain, EngineError> {
    let ns = repo.namespace().unwrap_or_default();
    let reference = crate::registry::Reference::parse(&repo.spec.image)
        .map_err(|e| EngineError::Unreadable(e.into()))?;
    let registry = reference.registry.clone();
    let mut identity = None;
    if let Some(sa) = repo
        .spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        if !cloud.object_level() {
            return Err(EngineError::Source(format!(
                "{}; spec.serviceAccountName {sa:?} with spec.provider {} asks for object-level workload identity: start serve with --feature-gates=ObjectLevelWorkloadIdentity=true, or remove spec.serviceAccountName to use the controller's identity",
                crate::registry::cloud::GATE_OFF,
                provider_name(repo.spec.provider),
            )));
        }
        // Flux's wording: the API's answer, or "not found".
        let account: ServiceAccount = get(client, &ns, sa).await.map_err(|why| {
            let why = match why {
                Unavailable::Unreadable(answer) => answer,
                Unavailable::NotFound => why.to_string(),
            };
            EngineError::Source(format!("failed to get service account '{ns}/{sa}': {why}"))
        })?;
        identity = Some(ServiceAccountIdentity {
            namespace: ns.clone(),
            name: sa.to_string(),
            annotations: account.metadata.annotations.unwrap_or_default(),
        });
    }
    let token = |audiences: Vec<String>| {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let name = identity
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        async move {
            let request = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(audiences),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            };
            api.create_token_request(&name, &PostParams::default(), &request)
                .await
                .map_err(|e| api_error(&e))?
                .status
                .and_then(|s| s.token)
                .ok_or_else(|| "the TokenRequest has no status".to_string())
        }
    };
    let creds = cloud
        .credentials(repo.spec.provider, &registry, identity.as_ref(), token)
        .await
        .map_err(|e| EngineError::Unreadable(e.into()))?;
    let mut keychain = Keychain::default();
    if let Some(c) = creds {
        keychain.insert(reference.api_host(), c);
    }
    Ok(keychain)
}

fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Generic => "generic",
        Provider::Aws => "aws",
        Provider::Azure => "azure",
        Provider::Gcp => "gcp",
    }
}

/// A proxy URL from a Flux proxy Secret (`address`, `username`, `password`).
fn proxy_url(data: &BTreeMap<String, Vec<u8>>, secret: &str) -> Result<String, EngineError> {
    let s = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let address = s("address").ok_or_else(|| {
        EngineError::Source(format!("Secret {secret}: the proxy Secret needs address"))
    })?;
    let mut url = reqwest::Url::parse(&address)
        .map_err(|_| EngineError::Source(format!("Secret {secret}: address is not a URL")))?;
    if let Some(u) = s("username") {
        let _ = url.set_username(&u);
        let _ = url.set_password(s("password").as_deref());
    }
    Ok(url.to_string())
}

/// Why a GitRepository's credentials cannot be had.
#[derive(Debug)]
pub enum GitAuthError {
    /// The GitRepository and its Secret disagree (Flux's
    /// `ErrInvalidSourceConfiguration`): stalled until one changes.
    Invalid(String),
    /// The provider's credentials were refused or cannot be made (a GitHub
    /// App's exchange): `AuthenticationFailed`, retried.
    Authentication(String),
    /// The Secret cannot be read (it may yet appear), or its keys are wrong.
    Source(EngineError),
}

/// A GitRepository's Git credentials, and the GitHub App they came from.
#[derive(Debug)]
pub struct SourceAuth {
    pub auth: GitAuth,
    pub app: Option<github::App>,
}

/// Git credentials from a GitRepository's Secret (`identity`, `known_hosts`,
/// `username`/`password`, `bearerToken`, `ca.crt`); with `provider: github`,
/// an installation token of the Secret's GitHub App as the password of
/// `x-access-token` (from `tokens`, reused while it lasts), as Flux's
/// image-automation-controller does (`internal/source/git.go`,
/// `getAuthOpts`): a GitHub App Secret under another provider, or
/// `provider: github` without one, is an invalid source configuration.
pub async fn git_auth(
    client: &Client,
    source: &GitRepository,
    idle_timeout: Option<std::time::Duration>,
    tokens: &github::Tokens,
) -> Result<SourceAuth, GitAuthError> {
    let ns = source.namespace().unwrap_or_default();
    let invalid = |m: String| GitAuthError::Invalid(format!("{m}: invalid source configuration"));
    let provider = source.spec.provider.as_deref().unwrap_or("generic");
    let data = match &source.spec.secret_ref {
        Some(r) => Some((
            secret_data(client, &ns, &r.name)
                .await
                .map_err(GitAuthError::Source)?,
            format!("Secret {ns}/{}", r.name),
        )),
        None => None,
    };
    let mut auth = match &data {
        Some((d, shown)) => {
            GitAuth::from_secret_data(d, shown).map_err(|e| GitAuthError::Source(e.into()))?
        }
        None => GitAuth::default(),
    };
    let mut app = None;
    match (provider, &data) {
        ("github", None) => {
            return Err(invalid(
                "secretRef with github app data must be specified when provider is set to github"
                    .into(),
            ));
        }
        ("github", Some((d, shown))) => {
            if !github::has_app_data(d) {
                return Err(invalid(
                    "secretRef with github app data must be specified when provider is set to github"
                        .into(),
                ));
            }
            let settings = github::AppSettings::from_secret_data(d);
            let a = github::App::new(&settings, &github::SECRET_KEYS, shown)
                .map_err(|e| GitAuthError::Authentication(format!("provider github: {e}")))?;
            let token = tokens
                .token(&a)
                .await
                .map_err(|e| GitAuthError::Authentication(e.to_string()))?;
            auth.username = Some(github::ACCESS_TOKEN_USERNAME.to_string());
            auth.password = Some(token.token);
            auth.bearer_token = None;
            app = Some(a);
        }
        (_, Some((d, _))) if d.contains_key(github::KEY_APP_ID) => {
            let name = source
                .spec
                .secret_ref
                .as_ref()
                .map(|r| r.name.as_str())
                .unwrap_or_default();
            return Err(invalid(format!(
                "secretRef '{ns}/{name}' has github app data but provider is not set to github"
            )));
        }
        _ => {}
    }
    if source.spec.url.starts_with("ssh://") && auth.known_hosts.is_none() {
        return Err(GitAuthError::Source(EngineError::Source(format!(
            "GitRepository {ns}/{}: an ssh:// URL needs a Secret with identity and known_hosts (spec.secretRef)",
            source.name_any()
        ))));
    }
    auth.idle_timeout = idle_timeout;
    Ok(SourceAuth { auth, app })
}

/// The key an automation signs its commits with, from the Secret its
/// `spec.git.commit.signingKey.secretRef` names (in the automation's
/// namespace): `git.asc` (OpenPGP) or `git.ssh` (SSH), with `passphrase`;
/// with `type: ssh`, Flux's `identity` and `password` too (see
/// [`sign::from_secret_data`]). A missing Secret may yet appear (an
/// [`EngineError::Source`], retried); a key that cannot sign is an
/// [`EngineError::SigningKey`], tried again at the automation's interval
/// (Secrets are not watched: a reconcile request is seen at once).
/// The key is unlocked on a blocking thread (its passphrase derivation is
/// deliberately slow).
pub async fn signer(
    client: &Client,
    engine: &Engine,
    namespace: &str,
    key: &SigningKey,
) -> Result<Arc<Signer>, EngineError> {
    let name = &key.secret_ref.name;
    let data = secret_data(client, namespace, name).await?;
    let wanted = key.key_type.map(KeyFormat::from);
    let shown = format!("Secret {namespace}/{name}");
    engine
        .blocking(move || sign::from_secret_data(&data, wanted, &shown))
        .await?
        .map(Arc::new)
        .map_err(EngineError::UnusableSigningKey)
}
