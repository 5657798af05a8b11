//! How each sender type proves a request, as notification-controller's
//! `validate` (`internal/server/receiver_handlers.go`) checks it: the
//! headers, the HMACs (in constant time), the bodies decoded as its Go
//! structs decode them, the events of `spec.events`, and the tokens of
//! generic-oidc and gcr. An error is a 400; its message never holds the
//! token.

use super::cel::ClaimsProcessor;
use super::jwt::{self, KeySets};
use crate::api::{Receiver, ReceiverType, ResourceExt};
use std::collections::BTreeMap;

/// A request as the checks read it.
pub struct Request<'a> {
    /// Header names lower-cased, each with its first value (Go's
    /// `Header.Get`).
    pub headers: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// A header's value, empty when absent (as Go's `Header.Get`).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    }
}

/// A request that proved itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Validated {
    /// generic-oidc: the verified claims, for the filters' `claims`.
    pub claims: Option<serde_json::Value>,
    /// What the filters' `req` reads: the body, or what Flux puts in its
    /// place (GitHub's form `payload`, gcr's unwrapped event).
    pub payload: Vec<u8>,
}

/// Why a request is refused (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refused(m: impl Into<String>) -> Refused {
    Refused(m.into())
}

/// Flux's default JWKS of Google's ID tokens (`idtoken`'s RS256 certs).
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// Where keys come from, for the token-carrying types.
pub struct Keys<'a> {
    pub sets: &'a KeySets,
    /// The JWKS of gcr's Pub/Sub tokens ([`GOOGLE_JWKS_URL`] unless set).
    pub gcr_jwks_url: &'a str,
}

/// Equality in time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// go-github's `ValidateSignature`: `sha1=`, `sha256=` or `sha512=` and the
/// hex HMAC of the body under the token.
pub fn validate_signature(signature: &str, body: &[u8], token: &[u8]) -> Result<(), Refused> {
    if signature.is_empty() {
        return Err(refused("missing signature"));
    }
    let Some((prefix, mac)) = signature.split_once('=') else {
        return Err(refused("error parsing signature"));
    };
    let algo = match prefix {
        "sha1" => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "sha256" => ring::hmac::HMAC_SHA256,
        "sha512" => ring::hmac::HMAC_SHA512,
        other => return Err(refused(format!("unknown hash type prefix: {other:?}"))),
    };
    let mac = decode_hex(mac).ok_or_else(|| refused("error decoding signature"))?;
    ring::hmac::verify(&ring::hmac::Key::new(algo, token), body, &mac)
        .map_err(|_| refused("payload signature check failed"))
}

/// go-github's `ValidatePayload`: the content type (JSON, or a form whose
/// `payload` is the JSON), then the signature of `X-Hub-Signature-256`,
/// else `X-Hub-Signature`, when there is one or a token. Returns the
/// payload.
fn validate_payload(r: &Request<'_>, token: &[u8]) -> Result<Vec<u8>, Refused> {
    let mut signature = r.header("X-Hub-Signature-256");
    if signature.is_empty() {
        signature = r.header("X-Hub-Signature");
    }
    let content_type =
        media_type(r.header("Content-Type")).ok_or_else(|| refused("mime: no media type"))?;
    let payload = match content_type.as_str() {
        "application/json" => r.body.to_vec(),
        "application/x-www-form-urlencoded" => form_value(r.body, "payload")?,
        other => {
            return Err(refused(format!(
                "webhook request has unsupported Content-Type {other:?}"
            )));
        }
    };
    if !token.is_empty() || !signature.is_empty() {
        validate_signature(signature, r.body, token)?;
    }
    Ok(payload)
}

/// Go's `mime.ParseMediaType`'s media type, lower-cased; `None` when
/// there is none.
pub(crate) fn media_type(v: &str) -> Option<String> {
    let t = v.split(';').next()?.trim().to_ascii_lowercase();
    let ok =
        t.split_once('/').is_some_and(|(a, b)| {
            let token = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&c))
            };
            token(a) && token(b)
        }) || (!t.is_empty() && !t.contains('/') && t.bytes().all(|c| c.is_ascii_alphanumeric()));
    ok.then_some(t)
}

/// The first value of `key` in a URL-encoded form (empty when absent).
fn form_value(body: &[u8], key: &str) -> Result<Vec<u8>, Refused> {
    let text = std::str::from_utf8(body).map_err(|_| refused("invalid form body"))?;
    for pair in text.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k)? == key.as_bytes() {
            return percent_decode(v);
        }
    }
    Ok(Vec::new())
}

fn percent_decode(s: &str) -> Result<Vec<u8>, Refused> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| refused("invalid URL escape in the form body"))?;
                out.push(h);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// `spec.events` lets `event` through: all when empty, else one equal to
/// it but for case (Go's `strings.EqualFold`).
fn allowed(events: &[String], event: &str, what: &str) -> Result<(), Refused> {
    if events.is_empty()
        || events
            .iter()
            .any(|e| e.to_lowercase() == event.to_lowercase())
    {
        Ok(())
    } else {
        Err(refused(format!("the {what} {event:?} is not authorised")))
    }
}

/// The shape of a Go struct a body is decoded into.
enum Shape {
    Str,
    Strings,
    Time,
    Obj(&'static [(&'static str, Shape)]),
}

/// Whether `v` decodes into `shape` as Go's `encoding/json` decodes it:
/// null into anything, keys matched to fields regardless of case, unknown
/// keys ignored, a wrong type an error.
fn fits(v: &serde_json::Value, shape: &Shape) -> Result<(), String> {
    use serde_json::Value as V;
    match (shape, v) {
        (_, V::Null) => Ok(()),
        (Shape::Str, V::String(_)) => Ok(()),
        (Shape::Time, V::String(s)) => s
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map(|_| ())
            .map_err(|_| format!("parsing time {s:?} as RFC 3339")),
        (Shape::Strings, V::Array(a)) => a
            .iter()
            .try_for_each(|x| fits(x, &Shape::Str))
            .map_err(|_| "cannot unmarshal into []string".to_string()),
        (Shape::Obj(fields), V::Object(o)) => {
            for (k, x) in o {
                if let Some((name, f)) =
                    fields.iter().find(|(name, _)| name.eq_ignore_ascii_case(k))
                {
                    fits(x, f).map_err(|e| format!("field {name}: {e}"))?;
                }
            }
            Ok(())
        }
        (_, other) => Err(format!(
            "cannot unmarshal {} into a Go value of another type",
            match other {
                V::Bool(_) => "bool",
                V::Number(_) => "number",
                V::String(_) => "string",
                V::Array(_) => "array",
                _ => "object",
            }
        )),
    }
}

/// `json.NewDecoder(body).Decode(&v)`: the first JSON value of the body.
fn decode_first(body: &[u8], shape: &Shape) -> Result<serde_json::Value, String> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    match values.next() {
        None => Err("EOF".into()),
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(v)) => fits(&v, shape).map(|()| v),
    }
}

/// `json.Unmarshal(body, &v)`: the whole body one JSON value.
fn unmarshal(body: &[u8], shape: &Shape) -> Result<serde_json::Value, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    fits(&v, shape).map(|()| v)
}

const QUAY: Shape = Shape::Obj(&[("docker_url", Shape::Str), ("updated_tags", Shape::Strings)]);
const DOCKERHUB: Shape = Shape::Obj(&[
    ("push_data", Shape::Obj(&[("tag", Shape::Str)])),
    ("repository", Shape::Obj(&[("repo_url", Shape::Str)])),
]);
const NEXUS: Shape = Shape::Obj(&[("action", Shape::Str), ("repositoryName", Shape::Str)]);
const ACR: Shape = Shape::Obj(&[
    ("action", Shape::Str),
    (
        "target",
        Shape::Obj(&[("repository", Shape::Str), ("tag", Shape::Str)]),
    ),
]);
const GCR_PUSH: Shape = Shape::Obj(&[(
    "message",
    Shape::Obj(&[
        ("data", Shape::Str),
        ("messageId", Shape::Str),
        ("publishTime", Shape::Time),
        ("subscription", Shape::Str),
    ]),
)]);
const GCR_DATA: Shape = Shape::Obj(&[
    ("action", Shape::Str),
    ("digest", Shape::Str),
    ("tag", Shape::Str),
]);

/// A CDEvent as the CDEvents SDK (v0.4) reads one: a `context` with its
/// id, source, a `dev.cdevents.<subject>.<predicate>.<version>` type and
/// an RFC 3339 timestamp, and a `subject` with an id.
fn cdevent(body: &[u8]) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let ctx = v
        .get("context")
        .filter(|c| c.is_object())
        .ok_or("the context is missing")?;
    let text = |o: &serde_json::Value, k: &str| {
        o.get(k)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{k} is required"))
    };
    text(ctx, "id")?;
    text(ctx, "source")?;
    let ty = text(ctx, "type")?;
    let parts: Vec<&str> = ty.split('.').collect();
    let known = parts.len() >= 7
        && parts[0] == "dev"
        && parts[1] == "cdevents"
        && parts[2..4]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric()))
        && parts[4..7].iter().all(|p| {
            p.parse::<u32>().is_ok()
                || p.split_once('-')
                    .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        });
    if !known {
        return Err(format!("cannot parse the event type {ty:?}"));
    }
    fits(&serde_json::json!(text(ctx, "timestamp")?), &Shape::Time)?;
    let subject = v
        .get("subject")
        .filter(|s| s.is_object())
        .ok_or("the subject is missing")?;
    text(subject, "id")?;
    Ok(())
}

/// Verifies `request` for Receiver `r`; `secret` is the data of its
/// Secret when it names one (already read: a Secret that cannot be read is
/// refused before).
pub async fn validate(
    r: &Receiver,
    secret: Option<&BTreeMap<String, Vec<u8>>>,
    request: &Request<'_>,
    keys: &Keys<'_>,
) -> Result<Validated, Refused> {
    let token: &[u8] = match (&r.spec.secret_ref, secret) {
        (Some(sr), Some(data)) => data.get("token").map(Vec::as_slice).ok_or_else(|| {
            refused(format!(
                "invalid \"{}/{}\" secret data: required field 'token'",
                r.namespace().unwrap_or_default(),
                sr.name
            ))
        })?,
        (Some(sr), None) => {
            return Err(refused(format!(
                "unable to read secret, error: unable to read secret \"{}/{}\"",
                r.namespace().unwrap_or_default(),
                sr.name
            )));
        }
        (None, _) => b"",
    };
    let body = request.body;
    let events = &r.spec.events;
    let plain = |payload: &[u8]| Validated {
        claims: None,
        payload: payload.to_vec(),
    };
    match r.spec.receiver_type {
        ReceiverType::Generic => Ok(plain(body)),
        ReceiverType::GenericOidc => {
            let claims = validate_oidc(r, request, keys.sets).await?;
            Ok(Validated {
                claims: Some(claims),
                payload: body.to_vec(),
            })
        }
        ReceiverType::GenericHmac => {
            validate_signature(request.header("X-Signature"), body, token)
                .map_err(|e| refused(format!("unable to validate HMAC signature: {e}")))?;
            Ok(plain(body))
        }
        ReceiverType::Github => {
            let payload = validate_payload(request, token).map_err(|e| {
                refused(format!("the GitHub signature header is invalid, err: {e}"))
            })?;
            allowed(events, request.header("X-GitHub-Event"), "GitHub event")?;
            Ok(plain(&payload))
        }
        ReceiverType::Gitlab => {
            if !constant_time_eq(request.header("X-Gitlab-Token").as_bytes(), token) {
                return Err(refused(
                    "the X-Gitlab-Token header value does not match the receiver token",
                ));
            }
            allowed(events, request.header("X-Gitlab-Event"), "GitLab event")?;
            Ok(plain(body))
        }
        ReceiverType::Cdevents => {
            cdevent(body).map_err(|e| refused(format!("unable to validate CDEvent event: {e}")))?;
            allowed(events, request.header("Ce-Type"), "CDEvent")?;
            Ok(plain(body))
        }
        ReceiverType::Bitbucket => {
            let payload = validate_payload(request, token).map_err(|e| {
                refused(format!(
                    "the Bitbucket server signature header is invalid, err: {e}"
                ))
            })?;
            allowed(
                events,
                request.header("X-Event-Key"),
                "Bitbucket server event",
            )?;
            Ok(plain(&payload))
        }
        ReceiverType::Quay => {
            decode_first(body, &QUAY)
                .map_err(|e| refused(format!("cannot decode Quay webhook payload: {e}")))?;
            Ok(plain(body))
        }
        ReceiverType::Harbor => {
            if !constant_time_eq(request.header("Authorization").as_bytes(), token) {
                return Err(refused(
                    "the Harbor Authorization header value does not match the receiver token",
                ));
            }
            Ok(plain(body))
        }
        ReceiverType::Dockerhub => {
            decode_first(body, &DOCKERHUB)
                .map_err(|_| refused("cannot decode DockerHub webhook payload"))?;
            Ok(plain(body))
        }
        ReceiverType::Gcr => {
            let event = validate_gcr(secret, request, keys).await?;
            Ok(plain(&event))
        }
        ReceiverType::Nexus => {
            let signature = request.header("X-Nexus-Webhook-Signature");
            if signature.is_empty() {
                return Err(refused("the Nexus signature is missing from header"));
            }
            let mac = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token),
                body,
            );
            if !constant_time_eq(signature.as_bytes(), hex(mac.as_ref()).as_bytes()) {
                return Err(refused("invalid Nexus signature"));
            }
            unmarshal(body, &NEXUS)
                .map_err(|e| refused(format!("cannot decode Nexus webhook payload: {e}")))?;
            Ok(plain(body))
        }
        ReceiverType::Acr => {
            decode_first(body, &ACR)
                .map_err(|e| refused(format!("cannot decode ACR webhook payload: {e}")))?;
            Ok(plain(body))
        }
        ReceiverType::Unknown => Err(refused("recevier type is not supported")),
    }
}

/// Flux's `validateGenericOIDC` (`receiver_oidc.go`): the bearer token's
/// issuer picks the provider; the token is verified against the issuer's
/// keys and audience; then the provider's CEL validations.
async fn validate_oidc(
    r: &Receiver,
    request: &Request<'_>,
    sets: &KeySets,
) -> Result<serde_json::Value, Refused> {
    if r.spec.oidc_providers.is_empty() {
        return Err(refused(
            "generic-oidc receiver has no oidcProviders configured",
        ));
    }
    let raw = request
        .header("Authorization")
        .strip_prefix("Bearer ")
        .ok_or_else(|| refused("the Authorization header is missing or malformed"))?
        .trim();
    if raw.is_empty() {
        return Err(refused(
            "the Authorization header is missing a bearer token",
        ));
    }
    let iss = jwt::unverified_issuer(raw)
        .map_err(|e| refused(format!("failed to parse bearer token: {e}")))?;
    let provider = r
        .spec
        .oidc_providers
        .iter()
        .find(|p| p.issuer_url == iss)
        .ok_or_else(|| refused(format!("no oidcProvider configured for issuer {iss:?}")))?;
    let claims = sets
        .verify_oidc(raw, &provider.issuer_url, provider.audience())
        .await
        .map_err(refused)?;
    let processor = ClaimsProcessor::new(provider).map_err(|e| {
        refused(format!(
            "invalid oidcProvider configuration for issuer {:?}: {e}",
            provider.issuer_url
        ))
    })?;
    processor.evaluate(&claims).map_err(refused)?;
    Ok(claims)
}

/// Flux's gcr: the Secret's `email` and `audience`, the Pub/Sub push's
/// bearer token (Google's, for that service account and audience), then
/// the push envelope whose `message.data` is the registry's event in
/// base64. Returns the event as Flux re-encodes it.
async fn validate_gcr(
    secret: Option<&BTreeMap<String, Vec<u8>>>,
    request: &Request<'_>,
    keys: &Keys<'_>,
) -> Result<Vec<u8>, Refused> {
    let Some(secret) = secret else {
        return Err(refused("secretRef is required for GCR receivers"));
    };
    let text = |k: &str| {
        secret
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let email = text("email");
    if email.is_empty() {
        return Err(refused(
            "invalid secret data: required field 'email' for GCR receiver",
        ));
    }
    let audience = text("audience");
    if audience.is_empty() {
        return Err(refused(
            "invalid secret data: required field 'audience' for GCR receiver",
        ));
    }
    let authenticate = async {
        let raw = request
            .header("Authorization")
            .strip_prefix("Bearer ")
            .ok_or("the Authorization header is missing or malformed".to_string())?;
        let t = jwt::parse(raw).map_err(|e| format!("invalid ID token: idtoken: {e}"))?;
        jwt::check_gcr_claims(&t.claims, &audience, &email, jwt::now())?;
        keys.sets
            .verify(&t, keys.gcr_jwks_url, &["RS256", "ES256"])
            .await
            .map_err(|e| format!("invalid ID token: idtoken: {e}"))
    };
    authenticate
        .await
        .map_err(|e| refused(format!("cannot authenticate GCR request: {e}")))?;
    let push = decode_first(request.body, &GCR_PUSH)
        .map_err(|e| refused(format!("cannot decode GCR webhook payload: {e}")))?;
    use base64::Engine;
    let data = push["message"]["data"].as_str().unwrap_or("");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap_or_default();
    let d = unmarshal(&raw, &GCR_DATA)
        .map_err(|e| refused(format!("cannot decode GCR webhook body: {e}")))?;
    let field = |k: &str| {
        d.as_object()
            .and_then(|o| o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let event = serde_json::json!({
        "action": field("action"),
        "digest": field("digest"),
        "tag": field("tag"),
    });
    Ok(event.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    fn mac(algo: ring::hmac::Algorithm, key: &[u8], body: &[u8]) -> String {
        hex(ring::hmac::sign(&ring::hmac::Key::new(algo, key), body).as_ref())
    }

    fn receiver(t: &str, events: &[&str]) -> Receiver {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1",
            "kind": "Receiver",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"type": t, "events": events, "secretRef": {"name": "s"},
                     "resources": [{"kind": "ImageRepository", "name": "web"}]}
        }))
        .unwrap()
    }

    fn check(
        t: &str,
        events: &[&str],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Validated, Refused> {
        let secret: BTreeMap<String, Vec<u8>> = [("token".to_string(), b"s3cret".to_vec())].into();
        let sets = KeySets::new().unwrap();
        let keys = Keys {
            sets: &sets,
            gcr_jwks_url: "http://127.0.0.1:1/certs",
        };
        let headers = h(headers);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(validate(
            &receiver(t, events),
            Some(&secret),
            &Request {
                headers: &headers,
                body,
            },
            &keys,
        ))
    }

    /// The cases of notification-controller
    /// `internal/server/receiver_handler_test.go` (`Test_handlePayload`):
    /// each sender's proof, and what makes Flux answer 400.
    #[test]
    fn each_sender_type_as_fluxs_validate() {
        let body = br#"{"repository":{"repo_name":"team/web"}}"#;
        let key = b"s3cret";
        let s256 = mac(ring::hmac::HMAC_SHA256, key, body);
        let s1 = mac(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key, body);
        let json = ("Content-Type", "application/json");
        // generic: the path is the proof.
        assert!(check("generic", &[], &[], b"junk").is_ok());
        // generic-hmac: a prefix is required.
        assert!(
            check(
                "generic-hmac",
                &[],
                &[("X-Signature", &format!("sha256={s256}"))],
                body
            )
            .is_ok()
        );
        assert!(
            check(
                "generic-hmac",
                &[],
                &[("X-Signature", &format!("sha1={s1}"))],
                body
            )
            .is_ok()
        );
        assert_eq!(
            check("generic-hmac", &[], &[("X-Signature", &s256)], body),
            Err(refused(
                "unable to validate HMAC signature: error parsing signature"
            ))
        );
        assert!(
            check(
                "generic-hmac",
                &[],
                &[("X-Signature", &format!("md5={s256}"))],
                body
            )
            .is_err()
        );
        assert!(check("generic-hmac", &[], &[], body).is_err());
        // github: the content type, then the signature; ping is an event
        // like any other.
        let sig = format!("sha256={s256}");
        assert!(
            check(
                "github",
                &[],
                &[
                    json,
                    ("X-Hub-Signature-256", &sig),
                    ("X-GitHub-Event", "ping")
                ],
                body
            )
            .is_ok()
        );
        assert_eq!(
            check(
                "github",
                &["push"],
                &[
                    json,
                    ("X-Hub-Signature-256", &sig),
                    ("X-GitHub-Event", "ping")
                ],
                body
            ),
            Err(refused("the GitHub event \"ping\" is not authorised"))
        );
        assert!(
            check(
                "github",
                &["PUSH"],
                &[
                    json,
                    ("X-Hub-Signature-256", &sig),
                    ("X-GitHub-Event", "push")
                ],
                body
            )
            .is_ok()
        );
        assert!(
            check(
                "github",
                &[],
                &[json, ("X-Hub-Signature", &format!("sha1={s1}"))],
                body
            )
            .is_ok()
        );
        assert!(
            check("github", &[], &[("X-Hub-Signature-256", &sig)], body).is_err(),
            "no content type"
        );
        assert!(
            check(
                "github",
                &[],
                &[
                    ("Content-Type", "text/plain"),
                    ("X-Hub-Signature-256", &sig)
                ],
                body
            )
            .is_err()
        );
        assert!(check("github", &[], &[json], body).is_err(), "no signature");
        // A form: the signature is over the form, the payload its field.
        let form = b"payload=%7B%22a%22%3A1%7D";
        let fsig = format!("sha256={}", mac(ring::hmac::HMAC_SHA256, key, form));
        assert_eq!(
            check(
                "github",
                &[],
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("X-Hub-Signature-256", &fsig)
                ],
                form
            )
            .unwrap()
            .payload,
            br#"{"a":1}"#
        );
        // gitlab, harbor: the token as it is.
        assert!(
            check(
                "gitlab",
                &["Push Hook"],
                &[
                    ("X-Gitlab-Token", "s3cret"),
                    ("X-Gitlab-Event", "push hook")
                ],
                body
            )
            .is_ok()
        );
        assert!(
            check(
                "gitlab",
                &["Tag Push Hook"],
                &[
                    ("X-Gitlab-Token", "s3cret"),
                    ("X-Gitlab-Event", "Push Hook")
                ],
                body
            )
            .is_err()
        );
        assert!(check("gitlab", &[], &[("X-Gitlab-Token", "s3cret ")], body).is_err());
        assert!(check("harbor", &[], &[("Authorization", "s3cret")], body).is_ok());
        assert!(check("harbor", &[], &[("Authorization", "Bearer s3cret")], body).is_err());
        // bitbucket: GitHub's checks, its own event header.
        assert!(
            check(
                "bitbucket",
                &["repo:refs_changed"],
                &[
                    json,
                    ("X-Hub-Signature", &format!("sha256={s256}")),
                    ("X-Event-Key", "repo:refs_changed")
                ],
                body
            )
            .is_ok()
        );
        assert!(
            check(
                "bitbucket",
                &["repo:refs_changed"],
                &[
                    json,
                    ("X-Hub-Signature", &format!("sha256={s256}")),
                    ("X-Event-Key", "pr:opened")
                ],
                body
            )
            .is_err()
        );
        // nexus: exactly the lowercase hex HMAC-SHA1, and a body that
        // decodes.
        assert!(check("nexus", &[], &[("X-Nexus-Webhook-Signature", &s1)], body).is_ok());
        assert!(
            check(
                "nexus",
                &[],
                &[("X-Nexus-Webhook-Signature", &s1.to_uppercase())],
                body
            )
            .is_err()
        );
        assert!(
            check(
                "nexus",
                &[],
                &[("X-Nexus-Webhook-Signature", &format!("sha1={s1}"))],
                body
            )
            .is_err()
        );
        let junk = b"not json";
        let junk_sig = mac(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key, junk);
        assert!(
            check(
                "nexus",
                &[],
                &[("X-Nexus-Webhook-Signature", &junk_sig)],
                junk
            )
            .is_err()
        );
        // quay, dockerhub, acr: bodies as Go decodes them.
        assert!(
            check(
                "quay",
                &[],
                &[],
                br#"{"docker_url":"quay.io/o/a","updated_tags":["1"]}"#
            )
            .is_ok()
        );
        assert!(
            check(
                "quay",
                &[],
                &[],
                br#"{"Docker_Url":"quay.io/o/a"} trailing"#
            )
            .is_ok()
        );
        assert!(check("quay", &[], &[], br#"{"docker_url":1}"#).is_err());
        assert!(check("quay", &[], &[], b"").is_err());
        assert!(check("quay", &[], &[], b"[]").is_err());
        assert!(
            check(
                "dockerhub",
                &[],
                &[],
                br#"{"push_data":{"tag":"1"},"repository":{"repo_url":"u"}}"#
            )
            .is_ok()
        );
        assert!(check("dockerhub", &[], &[], br#"{"push_data":"x"}"#).is_err());
        assert!(
            check(
                "acr",
                &[],
                &[],
                br#"{"action":"push","target":{"repository":"r","tag":"1"}}"#
            )
            .is_ok()
        );
        assert!(check("acr", &[], &[], b"junk").is_err());
        // cdevents: the test's event of receiver_handler_test.go.
        let ce = br#"{"context":{"version":"0.3.0","id":"5555","source":"github","timestamp":"2023-12-07T14:51:29.908479495Z","type":"dev.cdevents.change.merged.0.2.0"},"subject":{"type":"change","id":"5555"}}"#;
        assert!(
            check(
                "cdevents",
                &["cd.change.merged.v1"],
                &[("Ce-Type", "cd.change.merged.v1")],
                ce
            )
            .is_ok()
        );
        assert!(
            check(
                "cdevents",
                &["cd.environment.modified.v1"],
                &[("Ce-Type", "cd.change.merged.v1")],
                ce
            )
            .is_err()
        );
        assert!(check("cdevents", &[], &[], b"{}").is_err());
        // gcr without a bearer token, or an email in the Secret.
        assert_eq!(
            check("gcr", &[], &[], body),
            Err(refused(
                "invalid secret data: required field 'email' for GCR receiver"
            ))
        );
    }

    #[test]
    fn the_token_is_used_as_stored() {
        // A token with a trailing newline (`echo token | kubectl create
        // secret ... --from-file`): the header must carry the newline too.
        let secret: BTreeMap<String, Vec<u8>> =
            [("token".to_string(), b"s3cret\n".to_vec())].into();
        let sets = KeySets::new().unwrap();
        let keys = Keys {
            sets: &sets,
            gcr_jwks_url: GOOGLE_JWKS_URL,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = receiver("harbor", &[]);
        let run = |v: &str| {
            let headers = h(&[("Authorization", v)]);
            rt.block_on(validate(
                &r,
                Some(&secret),
                &Request {
                    headers: &headers,
                    body: b"{}",
                },
                &keys,
            ))
        };
        assert!(run("s3cret").is_err());
        let no_token: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let headers = h(&[]);
        let e = rt
            .block_on(validate(
                &r,
                Some(&no_token),
                &Request {
                    headers: &headers,
                    body: b"{}",
                },
                &keys,
            ))
            .unwrap_err();
        assert_eq!(e.0, "invalid \"ns/s\" secret data: required field 'token'");
    }
}
