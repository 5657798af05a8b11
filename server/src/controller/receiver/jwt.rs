//! JSON Web Tokens as the two token-carrying Receiver types check them:
//! generic-oidc (coreos/go-oidc's `Verifier.Verify`, used by
//! notification-controller `internal/server/receiver_oidc.go`) and gcr
//! (`google.golang.org/api/idtoken`'s `Validate`, used by `authenticateGCRRequest`
//! in `receiver_handlers.go`). Signatures RS256 and ES256, with ring; keys
//! from a JWKS fetched over HTTP(S) and kept a few minutes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A key of a JWKS.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    #[serde(default)]
    pub kid: Option<String>,
    pub kty: String,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// A token split into its parts, not verified yet.
pub struct Token<'t> {
    alg: String,
    kid: Option<String>,
    signed: &'t str,
    signature: Vec<u8>,
    /// The payload, as JSON.
    pub claims: serde_json::Value,
}

/// Splits a compact JWS and decodes its header and payload.
pub fn parse(token: &str) -> Result<Token<'_>, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err("malformed jwt, expected 3 parts".into());
    };
    let header = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|e| format!("malformed jwt header: {e}"))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| format!("malformed jwt header: {e}"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|e| format!("malformed jwt payload: {e}"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|e| format!("failed to unmarshal claims: {e}"))?;
    if !claims.is_object() {
        return Err("failed to unmarshal claims: not an object".into());
    }
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("malformed jwt signature: {e}"))?;
    let signed = token
        .rsplit_once('.')
        .map(|(signed, _)| signed)
        .unwrap_or_default();
    Ok(Token {
        alg: header.alg,
        kid: header.kid,
        signed,
        signature,
        claims,
    })
}

fn b64(field: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(field.as_deref()?).ok()
}

/// Whether `key` signed `t` (with the token's algorithm, if the key allows
/// it).
fn signed_by(t: &Token<'_>, key: &Jwk) -> bool {
    if key.alg.as_deref().is_some_and(|a| a != t.alg) {
        return false;
    }
    match (t.alg.as_str(), key.kty.as_str()) {
        ("RS256", "RSA") => {
            let (Some(n), Some(e)) = (b64(&key.n), b64(&key.e)) else {
                return false;
            };
            ring::signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    t.signed.as_bytes(),
                    &t.signature,
                )
                .is_ok()
        }
        ("ES256", "EC") if key.crv.as_deref() == Some("P-256") => {
            let (Some(x), Some(y)) = (b64(&key.x), b64(&key.y)) else {
                return false;
            };
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(t.signed.as_bytes(), &t.signature)
            .is_ok()
        }
        _ => false,
    }
}

/// Checks the signature against `keys`: those with the token's `kid`, or
/// all when it names none.
pub fn verify_signature(t: &Token<'_>, keys: &[Jwk], algs: &[&str]) -> Result<(), String> {
    if !algs.contains(&t.alg.as_str()) {
        return Err(format!(
            "id token signed with unsupported algorithm, expected {algs:?} got {:?}",
            t.alg
        ));
    }
    let candidates = keys
        .iter()
        .filter(|k| t.kid.is_none() || k.kid.is_none() || k.kid == t.kid);
    for k in candidates {
        if signed_by(t, k) {
            return Ok(());
        }
    }
    Err("failed to verify signature: failed to verify id token signature".into())
}

/// A claim that is a number of seconds since the epoch.
fn seconds(claims: &serde_json::Value, name: &str) -> Option<f64> {
    claims.get(name).and_then(serde_json::Value::as_f64)
}

/// Whether `aud` (a string or a list of them) holds `want`.
pub fn audience_holds(claims: &serde_json::Value, want: &str) -> bool {
    match claims.get("aud") {
        Some(serde_json::Value::String(s)) => s == want,
        Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(want)),
        _ => false,
    }
}

fn audience_text(claims: &serde_json::Value) -> String {
    match claims.get("aud") {
        Some(serde_json::Value::String(s)) => format!("[{s:?}]"),
        Some(serde_json::Value::Array(a)) => format!(
            "[{}]",
            a.iter()
                .map(|x| format!("{:?}", x.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => "[]".into(),
    }
}

/// go-oidc's claim checks, in its order: issuer, audience, expiry, not
/// before (with its five minutes of leeway).
pub fn check_oidc_claims(
    claims: &serde_json::Value,
    issuer: &str,
    audience: &str,
    now: f64,
) -> Result<(), String> {
    let iss = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
    if iss != issuer {
        return Err(format!(
            "oidc: id token issued by a different provider, expected {issuer:?} got {iss:?}"
        ));
    }
    if !audience_holds(claims, audience) {
        return Err(format!(
            "oidc: expected audience {audience:?} got {}",
            audience_text(claims)
        ));
    }
    let exp = seconds(claims, "exp").unwrap_or(0.0);
    if now > exp {
        return Err("oidc: token is expired".into());
    }
    if let Some(nbf) = seconds(claims, "nbf")
        && now + 300.0 < nbf
    {
        return Err("oidc: current time before the nbf (not before) time".into());
    }
    Ok(())
}

/// idtoken's claim checks (audience, then expiry with its clock skew of
/// 10 s), then Flux's: the issuer is Google's, the email is the Secret's
/// and verified.
pub fn check_gcr_claims(
    claims: &serde_json::Value,
    audience: &str,
    email: &str,
    now: f64,
) -> Result<(), String> {
    if !audience_holds(claims, audience) {
        let got = match claims.get("aud") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => "<unknown>".into(),
        };
        return Err(format!(
            "invalid ID token: audience is '{got}', want '{audience}': idtoken: audience provided does not match aud claim in the JWT"
        ));
    }
    let exp = seconds(claims, "exp").unwrap_or(0.0);
    if now > exp + 10.0 {
        return Err("invalid ID token: idtoken: token expired".into());
    }
    let iss = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
    if iss != "accounts.google.com" && iss != "https://accounts.google.com" {
        return Err(format!(
            "token issuer is '{iss}', want 'accounts.google.com' or 'https://accounts.google.com'"
        ));
    }
    let got = claims.get("email").and_then(|v| v.as_str()).unwrap_or("");
    if got != email {
        return Err(format!("token email is '{got}', want '{email}'"));
    }
    if claims.get("email_verified").and_then(|v| v.as_bool()) != Some(true) {
        return Err(format!("token email '{got}' is not verified"));
    }
    Ok(())
}

/// The unverified `iss` of a token, to pick its provider (Flux's
/// `unverifiedTokenIssuer`).
pub fn unverified_issuer(token: &str) -> Result<String, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [_, p, _] = parts.as_slice() else {
        return Err("token is not a JWT".into());
    };
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|e| format!("failed to decode token payload: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| format!("failed to parse token payload: {e}"))?;
    match v.get("iss").and_then(|i| i.as_str()) {
        Some(i) if !i.is_empty() => Ok(i.to_string()),
        _ => Err("token is missing the 'iss' claim".into()),
    }
}

/// The seconds since the epoch now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long fetched keys and discovery documents are used.
const KEEP: Duration = Duration::from_secs(300);
/// A token whose `kid` is not among the kept keys fetches them again, but
/// not more often than this.
const REFETCH: Duration = Duration::from_secs(10);
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 1 << 20;

#[derive(Clone)]
struct Provider {
    jwks_uri: String,
    algs: Vec<String>,
}

/// Fetches and keeps JWKS and OIDC discovery documents.
pub struct KeySets {
    client: reqwest::Client,
    keys: Mutex<HashMap<String, (Instant, Vec<Jwk>)>>,
    providers: Mutex<HashMap<String, (Instant, Provider)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeySets {
    pub fn new() -> Result<KeySets, String> {
        let (tls, _) = crate::registry::tls::client_config(None, None, None)
            .map_err(|e| format!("TLS: {e}"))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(KeySets {
            client,
            keys: Mutex::new(HashMap::new()),
            providers: Mutex::new(HashMap::new()),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                return Err(format!("{url}: the document is larger than 1 MiB"));
            }
        }
        if !status.is_success() {
            return Err(format!("{url}: {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    }

    /// The keys at `url`: kept ones, unless `fresh` asks for a new fetch
    /// (done at most every [`REFETCH`]).
    pub async fn keys(&self, url: &str, fresh: bool) -> Result<Vec<Jwk>, String> {
        if let Some((at, keys)) = lock(&self.keys).get(url) {
            let age = at.elapsed();
            if age < KEEP && (!fresh || age < REFETCH) {
                return Ok(keys.clone());
            }
        }
        let set: JwkSet = self.get_json(url).await?;
        lock(&self.keys).insert(url.to_string(), (Instant::now(), set.keys.clone()));
        Ok(set.keys)
    }

    /// Verifies `t` against the keys at `url`, fetching them again once
    /// when none matches (a rotation).
    pub async fn verify(&self, t: &Token<'_>, url: &str, algs: &[&str]) -> Result<(), String> {
        let keys = self.keys(url, false).await?;
        match verify_signature(t, &keys, algs) {
            Ok(()) => Ok(()),
            Err(_) => {
                let keys = self.keys(url, true).await?;
                verify_signature(t, &keys, algs)
            }
        }
    }

    /// OIDC discovery of `issuer` (go-oidc's `NewProvider`): its JWKS and
    /// signing algorithms; the document's issuer must be `issuer`.
    async fn provider(&self, issuer: &str) -> Result<Provider, String> {
        if let Some((at, p)) = lock(&self.providers).get(issuer)
            && at.elapsed() < KEEP
        {
            return Ok(p.clone());
        }
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
            #[serde(default)]
            id_token_signing_alg_values_supported: Vec<String>,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let d: Discovery = self.get_json(&url).await?;
        if d.issuer != issuer {
            return Err(format!(
                "oidc: issuer did not match the issuer returned by provider, expected {issuer:?} got {:?}",
                d.issuer
            ));
        }
        let p = Provider {
            jwks_uri: d.jwks_uri,
            algs: if d.id_token_signing_alg_values_supported.is_empty() {
                vec!["RS256".into()]
            } else {
                d.id_token_signing_alg_values_supported
            },
        };
        lock(&self.providers).insert(issuer.to_string(), (Instant::now(), p.clone()));
        Ok(p)
    }

    /// go-oidc's `Verify` for a token of `issuer` with `audience`: the
    /// verified claims.
    pub async fn verify_oidc(
        &self,
        raw: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<serde_json::Value, String> {
        let p = self.provider(issuer).await.map_err(|e| {
            format!("failed to initialize OIDC provider for issuer {issuer:?}: {e}")
        })?;
        let t = parse(raw).map_err(|e| format!("failed to verify OIDC token: oidc: {e}"))?;
        check_oidc_claims(&t.claims, issuer, audience, now())
            .map_err(|e| format!("failed to verify OIDC token: {e}"))?;
        let algs: Vec<&str> = p.algs.iter().map(String::as_str).collect();
        self.verify(&t, &p.jwks_uri, &algs)
            .await
            .map_err(|e| format!("failed to verify OIDC token: oidc: {e}"))?;
        Ok(t.claims)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Signs tokens with a key made for the test.
    use super::*;

    pub struct Signer {
        key: ring::signature::RsaKeyPair,
        pub kid: String,
    }

    impl Signer {
        /// A new RSA key, made by openssl (PKCS#1, DER).
        pub fn new(kid: &str) -> Signer {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-outform",
                    "DER",
                ])
                .output()
                .expect("openssl");
            assert!(out.status.success(), "openssl genpkey failed");
            Signer {
                key: ring::signature::RsaKeyPair::from_der(&out.stdout).unwrap(),
                kid: kid.into(),
            }
        }

        pub fn jwk(&self) -> serde_json::Value {
            let c = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.key.public());
            let (n, e) = (c.n, c.e);
            serde_json::json!({
                "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)
            })
        }

        pub fn sign(&self, claims: &serde_json::Value) -> String {
            let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let mut sig = vec![0u8; self.key.public().modulus_len()];
            self.key
                .sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signed.as_bytes(),
                    &mut sig,
                )
                .unwrap();
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Signer;
    use super::*;

    #[test]
    fn signatures_and_claims_as_go_oidc_checks_them() {
        let s = Signer::new("k1");
        let other = Signer::new("k2");
        let keys: Vec<Jwk> = serde_json::from_value(serde_json::json!([s.jwk()])).unwrap();
        let claims = serde_json::json!({
            "iss": "http://127.0.0.1:1", "aud": "notification-controller",
            "exp": now() + 60.0, "sub": "ci"
        });
        let good = s.sign(&claims);
        let t = parse(&good).unwrap();
        assert_eq!(verify_signature(&t, &keys, &["RS256"]), Ok(()));
        assert!(verify_signature(&t, &keys, &["ES256"]).is_err());
        // Another key, or the payload changed after signing.
        let forged = other.sign(&claims);
        let t2 = parse(&forged).unwrap();
        assert!(verify_signature(&t2, &keys, &["RS256"]).is_err());
        let (h, rest) = good.split_once('.').unwrap();
        let sig = rest.split_once('.').unwrap().1;
        let swapped = format!(
            "{h}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::json!({"iss": "x"}).to_string())
        );
        assert!(verify_signature(&parse(&swapped).unwrap(), &keys, &["RS256"]).is_err());
        // Claims.
        let now = now();
        assert_eq!(
            check_oidc_claims(
                &claims,
                "http://127.0.0.1:1",
                "notification-controller",
                now
            ),
            Ok(())
        );
        assert!(
            check_oidc_claims(
                &claims,
                "http://127.0.0.1:2",
                "notification-controller",
                now
            )
            .unwrap_err()
            .contains("issued by a different provider")
        );
        assert!(
            check_oidc_claims(&claims, "http://127.0.0.1:1", "other", now)
                .unwrap_err()
                .contains("expected audience")
        );
        assert!(
            check_oidc_claims(
                &claims,
                "http://127.0.0.1:1",
                "notification-controller",
                now + 120.0
            )
            .unwrap_err()
            .contains("expired")
        );
        assert_eq!(
            unverified_issuer(&good).as_deref(),
            Ok("http://127.0.0.1:1")
        );
        assert!(unverified_issuer("a.b").is_err());
        // Google's for gcr.
        let g = serde_json::json!({
            "iss": "https://accounts.google.com", "aud": "https://hook",
            "exp": now + 60.0, "email": "push@p.iam.gserviceaccount.com", "email_verified": true
        });
        assert_eq!(
            check_gcr_claims(&g, "https://hook", "push@p.iam.gserviceaccount.com", now),
            Ok(())
        );
        assert_eq!(
            check_gcr_claims(&g, "https://hook", "other@x", now),
            Err("token email is 'push@p.iam.gserviceaccount.com', want 'other@x'".into())
        );
        assert!(
            check_gcr_claims(&g, "https://other", "push@p.iam.gserviceaccount.com", now)
                .unwrap_err()
                .starts_with("invalid ID token: audience is 'https://hook', want 'https://other'")
        );
    }
}
