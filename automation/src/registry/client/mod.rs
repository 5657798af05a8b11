//! An OCI distribution client: tag lists (paginated), manifest digests, the
//! `WWW-Authenticate` challenge flow (Bearer tokens, Basic), retries on 429
//! and 503, and caps on pages, tags and body sizes.

use super::credentials::{Credentials, Keychain};
use super::reference::Reference;
use super::tls::{RefusedCertificate, TlsConfigError, client_config, describe_certificate};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

mod auth;
mod errors;
mod paging;

pub use auth::*;
pub use errors::*;
pub use paging::*;

/// The manifest media types asked for when reading a digest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How the client talks to registries.
#[derive(Clone)]
pub struct ClientOptions {
    /// Plain HTTP (ImageRepository `spec.insecure`).
    pub insecure: bool,
    /// A PEM CA bundle trusted besides the system roots (`ca.crt`).
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM client certificate and key (`tls.crt`, `tls.key`).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// An HTTP(S) proxy URL (may hold credentials; never shown).
    pub proxy: Option<String>,
    /// Timeout of one request (ImageRepository `spec.timeout`).
    pub timeout: Duration,
    /// Tags asked for per page (`n`).
    pub page_size: usize,
    pub max_pages: usize,
    pub max_tags: usize,
    /// Largest response body read.
    pub max_body_bytes: usize,
    /// Retries after 429 or 503.
    pub max_retries: u32,
    /// First backoff when no Retry-After is given; doubles each time.
    pub backoff: Duration,
    /// Longest single wait, Retry-After included.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("insecure", &self.insecure)
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_cert_pem.is_some())
            .field(
                "client_key",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("proxy", &self.proxy.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("page_size", &self.page_size)
            .field("max_pages", &self.max_pages)
            .field("max_tags", &self.max_tags)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            ca_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            proxy: None,
            timeout: Duration::from_secs(60),
            page_size: 1000,
            max_pages: 1000,
            max_tags: 500_000,
            max_body_bytes: 64 << 20,
            max_retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A registry client. Cheap to share; caches tokens per registry and scope.
pub struct Client {
    http: reqwest::Client,
    options: ClientOptions,
    refused: RefusedCertificate,
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

struct Ctx<'a> {
    registry: &'a str,
    repository: &'a str,
    credentials: Option<&'a Credentials>,
    helper_note: bool,
    /// When the whole operation (pages, retries and waits) must be over.
    deadline: Instant,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Self, RegistryError> {
        super::tls::install_crypto_provider();
        let (tls, refused) = client_config(
            options.ca_pem.as_deref(),
            options.client_cert_pem.as_deref(),
            options.client_key_pem.as_deref(),
        )?;
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("imageauto/", env!("CARGO_PKG_VERSION")));
        if let Some(p) = &options.proxy {
            let proxy = reqwest::Proxy::all(p.as_str())
                .map_err(|_| RegistryError::Proxy("the proxy address is not a URL".into()))?;
            b = b.proxy(proxy);
        }
        let http = b
            .build()
            .map_err(|e| RegistryError::Setup(e.without_url().to_string()))?;
        Ok(Self {
            http,
            options,
            refused,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn base(&self, r: &Reference) -> Result<Url, RegistryError> {
        let scheme = if self.options.insecure {
            "http"
        } else {
            "https"
        };
        Url::parse(&format!("{scheme}://{}/", r.api_host()))
            .map_err(|_| RegistryError::Setup(format!("{} is not a host name", r.api_host())))
    }

    fn transport_error(&self, ctx: &Ctx<'_>, e: reqwest::Error) -> RegistryError {
        let registry = ctx.registry.to_string();
        if e.is_timeout() {
            return RegistryError::Timeout {
                registry,
                repository: ctx.repository.to_string(),
                timeout: self.options.timeout,
            };
        }
        // The innermost cause says what happened (refused, DNS, TLS).
        let mut chain = Vec::new();
        let mut tls_error: Option<rustls::Error> = None;
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            chain.push(s.to_string());
            if let Some(r) = find_rustls_error(s) {
                tls_error = Some(r);
            }
            src = s.source();
        }
        let root = chain.last().cloned().unwrap_or_default();
        if let Some(t) = tls_error {
            let host = match ctx.registry.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
                _ => ctx.registry,
            };
            let cert = self
                .refused
                .lock()
                .ok()
                .and_then(|mut s| {
                    s.remove(host.trim_matches(['[', ']'])).or_else(|| {
                        (host == super::reference::DOCKER_HUB)
                            .then(|| s.remove(super::reference::DOCKER_HUB_API))
                            .flatten()
                    })
                })
                .and_then(|der| describe_certificate(&der));
            let detail = match (&t, cert) {
                (_, Some(c)) => format!(
                    "{t}; the server presented a certificate with {c}: trust its CA with the ImageRepository's spec.certSecretRef (a Secret with ca.crt), or --ca-file on the command line"
                ),
                (rustls::Error::InvalidMessage(_), None) => format!(
                    "{t}: the server does not answer TLS; for a plain-HTTP registry set the ImageRepository's spec.insecure: true, or give --insecure on the command line"
                ),
                (_, None) => t.to_string(),
            };
            return RegistryError::Tls { registry, detail };
        }
        if e.is_connect() {
            return RegistryError::Connect {
                registry,
                detail: root,
            };
        }
        let detail = if e.is_redirect() {
            format!("the registry redirects without end ({root})")
        } else {
            format!("the answer is not understood as HTTP ({root})")
        };
        RegistryError::InvalidResponse {
            registry,
            repository: ctx.repository.to_string(),
            detail,
        }
    }

    async fn read_body(
        &self,
        ctx: &Ctx<'_>,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, RegistryError> {
        let cap = self.options.max_body_bytes;
        if resp.content_length().is_some_and(|l| l as usize > cap) {
            return Err(RegistryError::BodyTooLarge {
                registry: ctx.registry.to_string(),
                cap,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(ctx, e))?
        {
            if body.len() + chunk.len() > cap {
                return Err(RegistryError::BodyTooLarge {
                    registry: ctx.registry.to_string(),
                    cap,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Gets a token (or Basic header) for `challenge`.
    async fn authorize(
        &self,
        ctx: &Ctx<'_>,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let unauthorized = |status: u16, realm: Option<String>| {
            let hint = match (ctx.credentials, ctx.helper_note) {
                (None, true) => ": the Docker config sends this registry to a credential helper, which imageauto does not run; put the credentials in auths".to_string(),
                (None, false) => ": no credentials for this registry: set the ImageRepository's spec.secretRef (a kubernetes.io/dockerconfigjson Secret), or give --docker-config on the command line".to_string(),
                (Some(_), _) => ": check the credentials".to_string(),
            };
            RegistryError::Unauthorized {
                registry: ctx.registry.to_string(),
                repository: ctx.repository.to_string(),
                status,
                realm,
                hint,
            }
        };
        match challenge.scheme.as_str() {
            "basic" => match ctx.credentials {
                Some(Credentials::Basic { username, password }) => Ok(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{username}:{password}"))
                )),
                Some(Credentials::RegistryToken(t)) => Ok(format!("Bearer {t}")),
                _ => Err(unauthorized(401, challenge.params.get("realm").cloned())),
            },
            "bearer" => {
                if let Some(Credentials::RegistryToken(t)) = ctx.credentials {
                    return Ok(format!("Bearer {t}"));
                }
                let realm = challenge.params.get("realm").cloned().ok_or_else(|| {
                    RegistryError::InvalidResponse {
                        registry: ctx.registry.to_string(),
                        repository: ctx.repository.to_string(),
                        detail: "a Bearer challenge without realm".into(),
                    }
                })?;
                let key = (
                    format!("{}#{}", ctx.registry, fingerprint(ctx.credentials)),
                    scope.to_string(),
                );
                if let Ok(cache) = self.tokens.lock()
                    && let Some((t, until)) = cache.get(&key)
                    && Instant::now() < *until
                {
                    return Ok(format!("Bearer {t}"));
                }
                let mut url = Url::parse(&realm).map_err(|_| RegistryError::InvalidResponse {
                    registry: ctx.registry.to_string(),
                    repository: ctx.repository.to_string(),
                    detail: format!("the token realm {realm:?} of the challenge is not a URL"),
                })?;
                let service = challenge.params.get("service").cloned().unwrap_or_default();
                let req = match ctx.credentials {
                    Some(Credentials::IdentityToken(refresh)) => {
                        let form = [
                            ("grant_type", "refresh_token"),
                            ("refresh_token", refresh.as_str()),
                            ("service", service.as_str()),
                            ("scope", scope),
                            ("client_id", "imageauto"),
                        ];
                        self.http.post(url.clone()).form(&form)
                    }
                    creds => {
                        {
                            let mut q = url.query_pairs_mut();
                            if !service.is_empty() {
                                q.append_pair("service", &service);
                            }
                            q.append_pair("scope", scope);
                        }
                        let r = self.http.get(url.clone());
                        match creds {
                            Some(Credentials::Basic { username, password }) => {
                                r.basic_auth(username, Some(password))
                            }
                            _ => r,
                        }
                    }
                };
                let resp = req.send().await.map_err(|e| self.transport_error(ctx, e))?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    url.set_query(None);
                    return Err(unauthorized(status.as_u16(), Some(url.to_string())));
                }
                if !status.is_success() {
                    url.set_query(None);
                    return Err(RegistryError::Http {
                        registry: ctx.registry.to_string(),
                        repository: ctx.repository.to_string(),
                        status: status.as_u16(),
                        message: format!("the token service {url} answered {status}"),
                    });
                }
                let body = self.read_body(ctx, resp).await?;
                let t: TokenResponse =
                    serde_json::from_slice(&body).map_err(|_| RegistryError::InvalidResponse {
                        registry: ctx.registry.to_string(),
                        repository: ctx.repository.to_string(),
                        detail: "the token service answered something other than a token".into(),
                    })?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| RegistryError::InvalidResponse {
                        registry: ctx.registry.to_string(),
                        repository: ctx.repository.to_string(),
                        detail: "the token service answered without a token".into(),
                    })?;
                let ttl =
                    Duration::from_secs(t.expires_in.unwrap_or(60).saturating_sub(10).max(10));
                if let Ok(mut cache) = self.tokens.lock() {
                    // Bounded: expired tokens go first, then the cache
                    // starts over (a token is cheap to get again).
                    if cache.len() >= MAX_TOKENS {
                        let now = Instant::now();
                        cache.retain(|_, (_, until)| *until > now);
                        if cache.len() >= MAX_TOKENS {
                            cache.clear();
                        }
                    }
                    cache.insert(key, (token.clone(), Instant::now() + ttl));
                }
                Ok(format!("Bearer {token}"))
            }
            other => Err(RegistryError::InvalidResponse {
                registry: ctx.registry.to_string(),
                repository: ctx.repository.to_string(),
                detail: format!("unsupported authentication scheme {other}"),
            }),
        }
    }

    /// Sends a request, answering one authentication challenge and retrying
    /// on 429 and 503.
    async fn send(
        &self,
        ctx: &Ctx<'_>,
        method: Method,
        url: &Url,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let scope = format!("repository:{}:pull", ctx.repository);
        let cache_key = (
            format!("{}#{}", ctx.registry, fingerprint(ctx.credentials)),
            scope.clone(),
        );
        let mut auth: Option<String> = None;
        if let Ok(cache) = self.tokens.lock()
            && let Some((t, until)) = cache.get(&cache_key)
            && Instant::now() < *until
        {
            auth = Some(format!("Bearer {t}"));
        }
        let mut challenged = false;
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            let resp = req.send().await.map_err(|e| self.transport_error(ctx, e))?;
            let status = resp.status();
            match status {
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    // A cached token the registry no longer takes: get a new one.
                    if let Ok(mut cache) = self.tokens.lock() {
                        cache.remove(&cache_key);
                    }
                    let challenge = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge)
                        .ok_or_else(|| RegistryError::Unauthorized {
                            registry: ctx.registry.to_string(),
                            repository: ctx.repository.to_string(),
                            status: 401,
                            realm: None,
                            hint: String::new(),
                        })?;
                    auth = Some(self.authorize(ctx, &challenge, &scope).await?);
                    continue;
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    let realm = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge)
                        .and_then(|c| c.params.get("realm").cloned());
                    return Err(RegistryError::Unauthorized {
                        registry: ctx.registry.to_string(),
                        repository: ctx.repository.to_string(),
                        status: status.as_u16(),
                        realm,
                        hint: if ctx.credentials.is_some() {
                            ": check the credentials and their access to this repository".into()
                        } else {
                            ": no credentials for this registry: set the ImageRepository's spec.secretRef (a kubernetes.io/dockerconfigjson Secret), or give --docker-config on the command line".into()
                        },
                    });
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    if attempt >= self.options.max_retries {
                        return Err(RegistryError::RateLimited {
                            registry: ctx.registry.to_string(),
                            repository: ctx.repository.to_string(),
                            status: status.as_u16(),
                            attempts: attempt + 1,
                        });
                    }
                    let asked = retry_after(resp.headers());
                    let wait = asked
                        .unwrap_or_else(|| {
                            self.options.backoff.saturating_mul(1 << attempt.min(16))
                        })
                        .min(self.options.max_backoff);
                    let left = ctx.deadline.saturating_duration_since(Instant::now());
                    if wait >= left {
                        return Err(RegistryError::RateLimitWait {
                            registry: ctx.registry.to_string(),
                            repository: ctx.repository.to_string(),
                            status: status.as_u16(),
                            asked: asked.unwrap_or(wait).as_secs(),
                            timeout: self.options.timeout,
                        });
                    }
                    attempt += 1;
                    tracing::warn!(
                        registry = ctx.registry,
                        repository = ctx.repository,
                        status = status.as_u16(),
                        "{}: {}: {} ({}): waiting {}s before retry {attempt} of {}{}",
                        ctx.registry,
                        ctx.repository,
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            "rate limited"
                        } else {
                            "unavailable"
                        },
                        status.as_u16(),
                        wait.as_secs_f64().ceil(),
                        self.options.max_retries,
                        match asked {
                            Some(a) if a > wait =>
                                format!(" (Retry-After asked {}s; capped)", a.as_secs()),
                            Some(_) => " (Retry-After)".to_string(),
                            None => String::new(),
                        }
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                s if s.is_success() => return Ok(resp),
                s => {
                    let body = self.read_body(ctx, resp).await.unwrap_or_default();
                    let message = serde_json::from_slice::<ErrorBody>(&body)
                        .ok()
                        .and_then(|b| b.errors.into_iter().next())
                        .map(|e| format!("{}: {}", e.code, e.message))
                        .unwrap_or_else(|| s.canonical_reason().unwrap_or("").to_string());
                    if s == StatusCode::NOT_FOUND {
                        return Err(RegistryError::NotFound {
                            registry: ctx.registry.to_string(),
                            repository: ctx.repository.to_string(),
                        });
                    }
                    return Err(RegistryError::Http {
                        registry: ctx.registry.to_string(),
                        repository: ctx.repository.to_string(),
                        status: s.as_u16(),
                        message,
                    });
                }
            }
        }
    }

    /// Every tag of the repository, in the registry's order.
    pub async fn list_tags(
        &self,
        reference: &Reference,
        keychain: &Keychain,
    ) -> Result<Vec<String>, RegistryError> {
        self.list_tags_with(reference, keychain, |_, _| {}).await
    }

    /// [`Client::list_tags`], calling `progress(pages, tags)` after each page.
    pub async fn list_tags_with(
        &self,
        reference: &Reference,
        keychain: &Keychain,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<String>, RegistryError> {
        let ctx = self.ctx(reference, keychain);
        let timeout = self.options.timeout;
        match tokio::time::timeout(timeout, self.list_tags_in(&ctx, reference, &mut progress)).await
        {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Timeout {
                registry: ctx.registry.to_string(),
                repository: ctx.repository.to_string(),
                timeout,
            }),
        }
    }

    fn ctx<'a>(&self, reference: &'a Reference, keychain: &'a Keychain) -> Ctx<'a> {
        Ctx {
            registry: &reference.registry,
            repository: &reference.repository,
            credentials: keychain.lookup(&reference.registry),
            helper_note: keychain.uses_helper(&reference.registry),
            deadline: Instant::now() + self.options.timeout,
        }
    }

    async fn list_tags_in(
        &self,
        ctx: &Ctx<'_>,
        reference: &Reference,
        progress: &mut impl FnMut(usize, usize),
    ) -> Result<Vec<String>, RegistryError> {
        let base = self.base(reference)?;
        let mut url = base
            .join(&format!("v2/{}/tags/list", reference.repository))
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("n", &self.options.page_size.to_string());
        let mut seen = HashSet::new();
        let mut tags = Vec::new();
        let mut pages = 0;
        loop {
            if !seen.insert(url.to_string()) {
                return Err(RegistryError::PageLoop {
                    registry: ctx.registry.to_string(),
                    repository: ctx.repository.to_string(),
                    url: url.path().to_string(),
                });
            }
            pages += 1;
            if pages > self.options.max_pages {
                return Err(RegistryError::TooManyPages {
                    registry: ctx.registry.to_string(),
                    repository: ctx.repository.to_string(),
                    cap: self.options.max_pages,
                });
            }
            let resp = self.send(ctx, Method::GET, &url, None).await?;
            let next = link_next(resp.headers(), &url);
            let body = self.read_body(ctx, resp).await?;
            let page =
                decode_tags_page(&body).map_err(|detail| RegistryError::InvalidResponse {
                    registry: ctx.registry.to_string(),
                    repository: ctx.repository.to_string(),
                    detail,
                })?;
            tags.extend(page);
            if tags.len() > self.options.max_tags {
                return Err(RegistryError::TooManyTags {
                    registry: ctx.registry.to_string(),
                    repository: ctx.repository.to_string(),
                    cap: self.options.max_tags,
                });
            }
            progress(pages, tags.len());
            match next {
                Some(n) if n.origin() == url.origin() => url = n,
                Some(n) => {
                    return Err(RegistryError::InvalidResponse {
                        registry: ctx.registry.to_string(),
                        repository: ctx.repository.to_string(),
                        detail: format!(
                            "the next page is on another host ({}); not followed",
                            n.host_str().unwrap_or("?")
                        ),
                    });
                }
                None => break,
            }
        }
        Ok(tags)
    }

    /// The manifest digest of `reference`'s tag (HEAD, with the OCI and Docker
    /// manifest types accepted).
    pub async fn digest(
        &self,
        reference: &Reference,
        keychain: &Keychain,
    ) -> Result<String, RegistryError> {
        let ctx = self.ctx(reference, keychain);
        let timeout = self.options.timeout;
        match tokio::time::timeout(timeout, self.digest_in(&ctx, reference)).await {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Timeout {
                registry: ctx.registry.to_string(),
                repository: ctx.repository.to_string(),
                timeout,
            }),
        }
    }

    async fn digest_in(
        &self,
        ctx: &Ctx<'_>,
        reference: &Reference,
    ) -> Result<String, RegistryError> {
        let tag = reference.tag.as_deref().unwrap_or("latest");
        let url = self
            .base(reference)?
            .join(&format!("v2/{}/manifests/{tag}", reference.repository))
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        let resp = match self
            .send(ctx, Method::HEAD, &url, Some(MANIFEST_ACCEPT))
            .await
        {
            Err(RegistryError::NotFound {
                registry,
                repository,
            }) => {
                return Err(RegistryError::TagNotFound {
                    registry,
                    repository,
                    tag: tag.to_string(),
                });
            }
            other => other?,
        };
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if !super::reference::valid_digest(d) {
                return Err(RegistryError::InvalidResponse {
                    registry: ctx.registry.to_string(),
                    repository: ctx.repository.to_string(),
                    detail: format!(
                        "the Docker-Content-Digest header {:?} is not a digest",
                        d.chars().take(100).collect::<String>()
                    ),
                });
            }
            return Ok(d.to_string());
        }
        // No digest header: read the manifest and hash it.
        let resp = self
            .send(ctx, Method::GET, &url, Some(MANIFEST_ACCEPT))
            .await?;
        let body = self.read_body(ctx, resp).await?;
        use sha2::Digest;
        Ok(format!("sha256:{:x}", sha2::Sha256::digest(&body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#).unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/nginx:pull");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        let c = parse_challenge("Bearer realm=https://x/token, service=reg").unwrap();
        assert_eq!(c.params["service"], "reg");
    }

    #[test]
    fn links() {
        let base = Url::parse("https://r.example.com/v2/a/tags/list?n=2").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            "</v2/a/tags/list?last=b&n=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            link_next(&h, &base).unwrap().as_str(),
            "https://r.example.com/v2/a/tags/list?last=b&n=2"
        );
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            "<https://r.example.com/x>; rel=\"prev\"".parse().unwrap(),
        );
        assert_eq!(link_next(&h, &base), None);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(100)));
    }
}
