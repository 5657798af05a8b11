//! GitHub App authentication for Git over HTTPS (`spec.provider: github` on
//! a GitRepository), as Flux's controllers do it through fluxcd/pkg
//! `auth/githubapp/client.go` (e2cfd1a), which source-controller
//! (`internal/controller/gitrepository_controller.go`, `getAuthOpts`) and
//! image-automation-controller (`internal/source/git.go`, `getAuthOpts`)
//! call with the GitRepository Secret's data:
//!
//! - the Secret's keys `githubAppID`, `githubAppInstallationID` or
//!   `githubAppInstallationOwner` (one of the two, not both),
//!   `githubAppPrivateKey` (PEM) and `githubAppBaseURL` (GitHub
//!   Enterprise; the API root, used as given);
//! - a JWT signed RS256 with the App's key, `iss` the App's id;
//! - without an installation id, the installation is looked up by owner,
//!   as an organization first (`GET /orgs/{owner}/installation`), then as a
//!   user (`GET /users/{owner}/installation`);
//! - an installation token from `POST /app/installations/{id}/access_tokens`,
//!   cached until 80% of its lifetime has passed (at most an hour: fluxcd/pkg
//!   `cache/token.go`), used as the password of user `x-access-token`.
//!
//! The JWT is two base64url parts and an RS256 signature over them: ring,
//! the process's only crypto provider, signs it. Neither the key, the JWT
//! nor the token ever appears in an error or in `Debug` output.

use base64::Engine as _;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KEY_APP_ID: &str = "githubAppID";
pub const KEY_INSTALLATION_OWNER: &str = "githubAppInstallationOwner";
pub const KEY_INSTALLATION_ID: &str = "githubAppInstallationID";
pub const KEY_PRIVATE_KEY: &str = "githubAppPrivateKey";
pub const KEY_BASE_URL: &str = "githubAppBaseURL";
/// The user name that goes with an installation token over HTTPS.
pub const ACCESS_TOKEN_USERNAME: &str = "x-access-token";
/// The API of github.com.
pub const DEFAULT_BASE_URL: &str = "https://api.github.com";

/// Every key of a GitHub App Secret.
const APP_KEYS: [&str; 5] = [
    KEY_APP_ID,
    KEY_INSTALLATION_OWNER,
    KEY_INSTALLATION_ID,
    KEY_PRIVATE_KEY,
    KEY_BASE_URL,
];

/// What went wrong with a GitHub App. Never carries the key, a JWT or a
/// token.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The App's settings cannot work as written (a key missing, an id that
    /// is not a number, a private key that does not parse): nothing changes
    /// until they do.
    #[error("{0}")]
    Invalid(String),
    /// GitHub refused the exchange, or could not be reached.
    #[error("{0}")]
    Exchange(String),
}

/// Which installation of the App.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Installation {
    Id(u64),
    /// The account (organization or user) the App is installed on.
    Owner(String),
}

/// A GitHub App, ready to sign.
#[derive(Clone)]
pub struct App {
    pub id: u64,
    pub installation: Installation,
    /// The API root, without a trailing `/`.
    pub base_url: String,
    /// A CA for the API (the Secret's `ca.crt`), besides the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Where the settings come from, for messages (`Secret ns/name`).
    pub origin: String,
    key: Arc<RsaKeyPair>,
    /// sha256 of the PEM key: the cache tells Apps apart by it.
    key_digest: [u8; 32],
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("installation", &self.installation)
            .field("base_url", &self.base_url)
            .field("origin", &self.origin)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Whether a Secret's data holds any GitHub App key (Flux's
/// `HasGitHubAppData`).
pub fn has_app_data(data: &BTreeMap<String, Vec<u8>>) -> bool {
    APP_KEYS.iter().any(|k| data.contains_key(*k))
}

/// The settings of an App, as text, before they are checked.
#[derive(Clone, Debug, Default)]
pub struct AppSettings {
    pub app_id: Option<String>,
    pub installation_id: Option<String>,
    pub installation_owner: Option<String>,
    /// PEM; never shown.
    pub private_key: Option<Vec<u8>>,
    pub base_url: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
}

impl AppSettings {
    /// The App keys of a GitHub App Secret (as `flux create secret
    /// githubapp` writes it), with its `ca.crt`.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> AppSettings {
        let text = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(v).trim().to_string())
        };
        AppSettings {
            app_id: text(KEY_APP_ID),
            installation_id: text(KEY_INSTALLATION_ID),
            installation_owner: text(KEY_INSTALLATION_OWNER),
            private_key: data.get(KEY_PRIVATE_KEY).cloned(),
            base_url: text(KEY_BASE_URL),
            ca_pem: data.get("ca.crt").cloned(),
        }
    }
}

impl App {
    /// Checks the settings as fluxcd/pkg's `githubapp.New` does: an App id,
    /// one of installation id and owner, a private key that parses.
    /// `names` says how the user sets each (`githubAppID` in a Secret,
    /// `--github-app-id` on the command line); `origin` where they come
    /// from.
    pub fn new(s: &AppSettings, names: &AppKeyNames, origin: &str) -> Result<App, AppError> {
        let invalid = |m: String| AppError::Invalid(format!("{origin}: {m}"));
        let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
        let id = match s.app_id.as_deref().filter(|v| !v.is_empty()) {
            None => {
                return Err(invalid(format!(
                    "{} is missing: give the GitHub App's numeric id (the App's settings page shows it as App ID)",
                    names.app_id
                )));
            }
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                invalid(format!(
                    "{} {v:?} is not an App id: give the numeric App ID, not the App's name or client id",
                    names.app_id
                ))
            })?,
        };
        let installation = match (empty(&s.installation_id), empty(&s.installation_owner)) {
            (true, true) => {
                return Err(invalid(format!(
                    "give {} or {}: which installation of the App to use",
                    names.installation_id, names.installation_owner
                )));
            }
            (false, false) => {
                return Err(invalid(format!(
                    "give only one of {} and {}",
                    names.installation_id, names.installation_owner
                )));
            }
            (false, true) => {
                let v = s.installation_id.as_deref().unwrap_or_default();
                Installation::Id(v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid(format!(
                        "{} {v:?} is not an installation id: give the number at the end of the installation's settings URL",
                        names.installation_id
                    ))
                })?)
            }
            (true, false) => Installation::Owner(s.installation_owner.clone().unwrap_or_default()),
        };
        let pem = s
            .private_key
            .as_deref()
            .filter(|k| !k.iter().all(u8::is_ascii_whitespace))
            .ok_or_else(|| {
                invalid(format!(
                    "{} is missing: give the App's private key (the .pem file GitHub generated)",
                    names.private_key
                ))
            })?;
        let key = parse_key(pem).map_err(|m| invalid(format!("{}: {m}", names.private_key)))?;
        let base_url = match s.base_url.as_deref().filter(|u| !u.is_empty()) {
            None => DEFAULT_BASE_URL.to_string(),
            Some(u) => {
                let parsed = reqwest::Url::parse(u).ok().filter(|p| {
                    matches!(p.scheme(), "http" | "https")
                        && p.host_str().is_some()
                        && p.username().is_empty()
                        && p.password().is_none()
                });
                if parsed.is_none() {
                    return Err(invalid(format!(
                        "{} {u:?} is not an http(s) URL: give the API root, such as https://github.example.com/api/v3",
                        names.base_url
                    )));
                }
                u.trim_end_matches('/').to_string()
            }
        };
        use sha2::Digest;
        Ok(App {
            id,
            installation,
            base_url,
            ca_pem: s.ca_pem.clone(),
            origin: origin.to_string(),
            key: Arc::new(key),
            key_digest: sha2::Sha256::digest(pem).into(),
        })
    }

    /// A JWT for the App at `now` (seconds since the epoch).
    pub fn jwt(&self, now: u64) -> Result<String, AppError> {
        let claims = Claims::at(self.id, now);
        sign_jwt(&self.key, &claims).map_err(|m| AppError::Invalid(format!("{}: {m}", self.origin)))
    }

    fn cache_key(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.id.to_string());
        h.update([0]);
        match &self.installation {
            Installation::Id(i) => h.update(format!("id={i}")),
            Installation::Owner(o) => h.update(format!("owner={o}")),
        }
        h.update([0]);
        h.update(&self.base_url);
        h.update([0]);
        h.update(self.key_digest);
        h.finalize().into()
    }
}

/// How the user names each setting where they come from.
#[derive(Clone, Copy, Debug)]
pub struct AppKeyNames {
    pub app_id: &'static str,
    pub installation_id: &'static str,
    pub installation_owner: &'static str,
    pub private_key: &'static str,
    pub base_url: &'static str,
}

/// The keys of a GitHub App Secret.
pub const SECRET_KEYS: AppKeyNames = AppKeyNames {
    app_id: KEY_APP_ID,
    installation_id: KEY_INSTALLATION_ID,
    installation_owner: KEY_INSTALLATION_OWNER,
    private_key: KEY_PRIVATE_KEY,
    base_url: KEY_BASE_URL,
};

/// An RSA private key in PEM: PKCS#1 (`BEGIN RSA PRIVATE KEY`, what GitHub
/// hands out) or PKCS#8.
fn parse_key(pem: &[u8]) -> Result<RsaKeyPair, String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        "not a PEM private key: give the .pem file GitHub generated for the App, whole".to_string()
    })?;
    let key = match &der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => return Err("not an RSA key: GitHub Apps sign with RSA keys".into()),
    };
    key.map_err(|e| {
        format!("the RSA key cannot sign ({e}): GitHub App keys are RSA of 2048 bits or more")
    })
}

/// The claims of an App's JWT.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Issued at: 60 s in the past, for clocks that drift (GitHub's
    /// advice; Flux takes 30 s).
    pub iat: u64,
    /// Expires 2 minutes after it was issued, as Flux's: the JWT serves only
    /// the exchange (GitHub refuses more than 10 minutes ahead).
    pub exp: u64,
    /// The App's id.
    pub iss: String,
}

impl Claims {
    pub fn at(app_id: u64, now: u64) -> Claims {
        let iat = now.saturating_sub(60);
        Claims {
            iat,
            exp: iat + 120,
            iss: app_id.to_string(),
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.claims.signature`, RS256.
fn sign_jwt(key: &RsaKeyPair, claims: &Claims) -> Result<String, String> {
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let input = format!("{header}.{}", b64url(&body));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "the key could not sign the App's JWT".to_string())?;
    Ok(format!("{input}.{}", b64url(&sig)))
}

/// An installation token and when GitHub says it expires.
#[derive(Clone)]
pub struct InstallationToken {
    pub token: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

impl fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Installation tokens by App and installation, reused until 80% of their
/// lifetime has passed (Flux's `TokenCache`), at most an hour.
#[derive(Default)]
pub struct Tokens {
    cached: Mutex<HashMap<[u8; 32], (InstallationToken, Instant)>>,
    exchanges: AtomicU64,
}

/// The longest a token is reused (fluxcd/pkg `cache.TokenMaxDuration`).
const MAX_REUSE: Duration = Duration::from_secs(3600);

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long a token that expires at `expires_at` may be reused from `now`
/// (seconds since the epoch): 80% of what is left, at most an hour; none
/// when it is already expired.
pub fn reuse_for(expires_at: i64, now: u64) -> Option<Duration> {
    let left = expires_at.checked_sub(i64::try_from(now).ok()?)?;
    let left = u64::try_from(left).ok().filter(|l| *l > 0)?;
    Some(Duration::from_millis(left.saturating_mul(800)).min(MAX_REUSE))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // Single inserts and removals: the map stays consistent.
        Err(p) => p.into_inner(),
    }
}

impl Tokens {
    /// The App installation's token: the cached one while it may be reused,
    /// else a new one from GitHub.
    pub async fn token(&self, app: &App) -> Result<InstallationToken, AppError> {
        let key = app.cache_key();
        if let Some((t, until)) = lock(&self.cached).get(&key)
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let t = exchange(app).await?;
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        match reuse_for(t.expires_at, now_secs()) {
            Some(d) => {
                lock(&self.cached).insert(key, (t.clone(), Instant::now() + d));
            }
            None => {
                lock(&self.cached).remove(&key);
            }
        }
        Ok(t)
    }

    /// How many tokens were asked of GitHub.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }
}

/// An HTTP client for a forge's API: the system roots plus `ca_pem`, ring.
pub fn http_client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    crate::registry::tls::install_crypto_provider();
    let (tls, _) = crate::registry::tls::client_config(ca_pem, None, None)
        .map_err(|e| format!("ca.crt: {e}"))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("imageauto/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.without_url().to_string())
}

/// What GitHub said, from a JSON error body (`message`), cut short and
/// without `secret` in it.
pub(crate) fn said(body: &str, secrets: &[&str]) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let mut m = match v.as_ref().and_then(|v| v.get("message")) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => v
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_default(),
    };
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        m = m.replace(s, "***");
    }
    let m: String = m.chars().filter(|c| !c.is_control()).take(300).collect();
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

/// The most of an answer's body that is read: a forge's answers here are
/// small JSON documents; a larger body is cut, never held whole.
const MAX_BODY: usize = 1 << 20;

/// An answer's body as text, at most [`MAX_BODY`] bytes of it.
pub(crate) async fn read_capped(mut r: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The installation token, from GitHub: the JWT, the installation (by owner
/// when there is no id), the token.
async fn exchange(app: &App) -> Result<InstallationToken, AppError> {
    let http = http_client(app.ca_pem.as_deref())
        .map_err(|m| AppError::Invalid(format!("{}: {m}", app.origin)))?;
    let jwt = app.jwt(now_secs())?;
    let what = "provider github: the GitHub App";
    let check = format!(
        "check githubAppID ({}), that githubAppPrivateKey is a current private key of that App, and that the App is installed on the repository's owner (githubAppInstallationID or githubAppInstallationOwner) in {}",
        app.id, app.origin
    );
    let send = |req: reqwest::RequestBuilder| {
        req.bearer_auth(&jwt)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send()
    };
    let unreachable = |url: &str, e: reqwest::Error| {
        let e = e.without_url();
        let chain = crate::errors::with_causes(e.to_string(), std::error::Error::source(&e));
        AppError::Exchange(format!(
            "{what} {}: {url} cannot be reached: {chain}",
            app.id
        ))
    };
    let id = match &app.installation {
        Installation::Id(i) => *i,
        Installation::Owner(owner) => {
            let mut refused = Vec::new();
            let mut found = None;
            for kind in ["orgs", "users"] {
                let url = format!("{}/{kind}/{owner}/installation", app.base_url);
                let r = send(http.get(&url))
                    .await
                    .map_err(|e| unreachable(&url, e))?;
                let status = r.status();
                let body = read_capped(r).await;
                if status.is_success() {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    found = v["id"].as_u64();
                    if found.is_some() {
                        break;
                    }
                }
                refused.push(format!(
                    "GET {url}: {}{}",
                    status.as_u16(),
                    said(&body, &[&jwt])
                ));
            }
            found.ok_or_else(|| {
                AppError::Exchange(format!(
                    "{what} {} has no installation on {owner:?} ({}): {check}",
                    app.id,
                    refused.join("; ")
                ))
            })?
        }
    };
    let url = format!("{}/app/installations/{id}/access_tokens", app.base_url);
    let r = send(http.post(&url))
        .await
        .map_err(|e| unreachable(&url, e))?;
    let status = r.status();
    let body = read_capped(r).await;
    if !status.is_success() {
        return Err(AppError::Exchange(format!(
            "{what} {}: the installation token was refused: POST {url}: {}{}: {check}",
            app.id,
            status.as_u16(),
            said(&body, &[&jwt])
        )));
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let token = v["token"].as_str().filter(|t| !t.is_empty());
    let expires = v["expires_at"]
        .as_str()
        .and_then(|e| e.parse::<k8s_openapi::jiff::Timestamp>().ok());
    match (token, expires) {
        (Some(t), Some(e)) => Ok(InstallationToken {
            token: t.to_string(),
            expires_at: e.as_second(),
        }),
        _ => Err(AppError::Exchange(format!(
            "{what} {}: POST {url} answered {} without a token and its expires_at",
            app.id,
            status.as_u16()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2048-bit RSA key (PKCS#1, as GitHub hands them out), made for
    /// these tests only.
    fn test_key() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&path)
            .arg("2048")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genrsa");
        std::fs::read(path).unwrap()
    }

    fn settings(key: &[u8]) -> AppSettings {
        AppSettings {
            app_id: Some("123".into()),
            installation_id: Some("456".into()),
            private_key: Some(key.to_vec()),
            ..AppSettings::default()
        }
    }

    #[test]
    fn claims_are_issued_a_minute_ago_and_expire_soon() {
        let c = Claims::at(123, 1_800_000_000);
        assert_eq!(c.iss, "123");
        assert_eq!(c.iat, 1_800_000_000 - 60);
        assert!(c.exp > 1_800_000_000 && c.exp - c.iat <= 600, "{c:?}");
    }

    #[test]
    fn the_jwt_is_rs256_and_verifies_with_the_public_key() {
        let pem = test_key();
        let app = App::new(&settings(&pem), &SECRET_KEYS, "Secret ns/app").unwrap();
        let jwt = app.jwt(1_800_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let d = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        let header: serde_json::Value = serde_json::from_slice(&d(parts[0])).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: Claims = serde_json::from_slice(&d(parts[1])).unwrap();
        assert_eq!(claims, Claims::at(123, 1_800_000_000));
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            app.key.public().as_ref().to_vec(),
        );
        public
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &d(parts[2]),
            )
            .unwrap();
        assert!(!format!("{app:?}").contains("BEGIN"));
    }

    #[test]
    fn settings_are_checked_as_fluxs_and_name_the_key() {
        let pem = test_key();
        let e = |s: AppSettings| {
            App::new(&s, &SECRET_KEYS, "Secret ns/app")
                .unwrap_err()
                .to_string()
        };
        let mut s = settings(&pem);
        s.app_id = None;
        assert!(e(s).contains("githubAppID is missing"));
        let mut s = settings(&pem);
        s.app_id = Some("my-app".into());
        assert!(e(s).contains("\"my-app\" is not an App id"));
        let mut s = settings(&pem);
        s.installation_owner = Some("org".into());
        assert!(e(s).contains("only one of"));
        let mut s = settings(&pem);
        s.installation_id = None;
        assert!(e(s).contains("githubAppInstallationID or githubAppInstallationOwner"));
        let mut s = settings(&pem);
        s.private_key = Some(b"-----BEGIN RSA PRIVATE KEY-----\nnope\n".to_vec());
        let m = e(s);
        assert!(m.starts_with("Secret ns/app: githubAppPrivateKey:"), "{m}");
        assert!(!m.contains("nope"), "{m}");
        let mut s = settings(&pem);
        s.base_url = Some("ftp://x".into());
        assert!(e(s).contains("githubAppBaseURL"));
        let mut s = settings(&pem);
        s.base_url = Some("https://ghe.example.com/api/v3/".into());
        s.installation_id = None;
        s.installation_owner = Some("org".into());
        let app = App::new(&s, &SECRET_KEYS, "x").unwrap();
        assert_eq!(app.base_url, "https://ghe.example.com/api/v3");
        assert_eq!(app.installation, Installation::Owner("org".into()));
        let app = App::new(&settings(&pem), &SECRET_KEYS, "x").unwrap();
        assert_eq!(app.base_url, DEFAULT_BASE_URL);
    }

    #[test]
    fn tokens_are_reused_for_four_fifths_of_their_life() {
        assert_eq!(
            reuse_for(1000 + 3600, 1000),
            Some(Duration::from_secs(2880))
        );
        assert_eq!(reuse_for(1000 + 10, 1000), Some(Duration::from_secs(8)));
        assert_eq!(reuse_for(1000 + 7200, 1000), Some(MAX_REUSE));
        assert_eq!(reuse_for(1000, 1000), None);
        assert_eq!(reuse_for(10, 1000), None);
    }

    #[test]
    fn what_github_said_leaves_secrets_out() {
        assert_eq!(
            said(
                r#"{"message":"Bad credentials for abcdefgh123"}"#,
                &["abcdefgh123"]
            ),
            ": Bad credentials for ***"
        );
        assert_eq!(said("not json", &[]), "");
    }
}
