//! Flux `Receiver`s that point at ImageRepositories: the path Flux serves
//! them at, how each sender type proves itself (a token, an HMAC in constant
//! time), and what a payload may say (only "this repository may have new
//! tags": the scan itself decides). Pure; the HTTP side lives in the server.

use crate::api::{Receiver, ReceiverType, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Flux's path for a Receiver: `/hook/` + hex sha256 of token, name and
/// namespace.
pub fn webhook_path(token: &str, name: &str, namespace: &str) -> String {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(name.as_bytes());
    h.update(namespace.as_bytes());
    format!("/hook/{:x}", h.finalize())
}

/// Whether a Receiver is imageauto's to serve: every resource it names is an
/// ImageRepository (others belong to Flux's notification-controller).
pub fn is_ours(r: &Receiver) -> bool {
    !r.spec.resources.is_empty()
        && r.spec.resources.iter().all(|x| {
            x.kind == "ImageRepository"
                && x.api_version
                    .as_deref()
                    .is_none_or(|v| v.starts_with("image.toolkit.fluxcd.io/"))
        })
}

/// Why a request is refused (401, and an event on the Receiver).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the signature header {0} is missing")]
    MissingSignature(&'static str),
    #[error("the signature does not match the body and the Receiver's token")]
    BadSignature,
    #[error("the token header {0} does not match the Receiver's token")]
    BadToken(&'static str),
    #[error("the sender type {0} is not supported for ImageRepositories")]
    Unsupported(&'static str),
}

/// What a request accepted says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The sender's event type (GitHub, GitLab, CDEvents), when it names one.
    pub event: Option<String>,
    /// Whether `spec.events` lets the event through (not: answered 200,
    /// nothing done, as Flux does for a GitHub ping).
    pub wanted: bool,
    /// Repositories the payload says were pushed to (`host/path`,
    /// normalised), when it is a payload that says (possibly none: a
    /// notification of blob uploads only); `None` when it is not (all the
    /// Receiver's resources are triggered).
    pub repositories: Option<Vec<String>>,
}

fn header<'h>(headers: &'h BTreeMap<String, String>, name: &str) -> Option<&'h str> {
    headers.get(&name.to_ascii_lowercase()).map(String::as_str)
}

/// Equality of two byte strings in time that depends on their lengths
/// only, not on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `sig` (hex, after an optional `algo=` prefix) as an HMAC of
/// `body` under `token`.
fn check_hmac(
    sig: &str,
    body: &[u8],
    token: &[u8],
    default: ring::hmac::Algorithm,
) -> Result<(), Refused> {
    let (algo, hex) = match sig.split_once('=') {
        Some(("sha1", h)) => (ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, h),
        Some(("sha256", h)) => (ring::hmac::HMAC_SHA256, h),
        Some(("sha512", h)) => (ring::hmac::HMAC_SHA512, h),
        Some(_) => return Err(Refused::BadSignature),
        None => (default, sig),
    };
    let Some(mac) = decode_hex(hex.trim()) else {
        return Err(Refused::BadSignature);
    };
    let key = ring::hmac::Key::new(algo, token);
    ring::hmac::verify(&key, body, &mac).map_err(|_| Refused::BadSignature)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `spec.events` admits `event` (all when empty; case-insensitive).
fn wanted(events: &[String], event: Option<&str>) -> bool {
    events.is_empty() || event.is_some_and(|e| events.iter().any(|w| w.eq_ignore_ascii_case(e)))
}

/// Verifies a request to a Receiver of type `kind` with `token`, and reads
/// what the payload may tell. Header names are given lower-cased.
pub fn verify(
    kind: ReceiverType,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    token: &[u8],
    events: &[String],
) -> Result<Accepted, Refused> {
    let mut out = Accepted {
        wanted: true,
        repositories: registry_pushes(body),
        ..Accepted::default()
    };
    match kind {
        // The secret path is the proof (as Flux's generic, Docker Hub and
        // Quay receivers).
        ReceiverType::Generic | ReceiverType::Dockerhub | ReceiverType::Quay => {}
        ReceiverType::GenericHmac => {
            let sig =
                header(headers, "X-Signature").ok_or(Refused::MissingSignature("X-Signature"))?;
            check_hmac(sig, body, token, ring::hmac::HMAC_SHA256)?;
        }
        ReceiverType::Github => {
            if let Some(sig) = header(headers, "X-Hub-Signature-256") {
                check_hmac(sig, body, token, ring::hmac::HMAC_SHA256)?;
            } else {
                let sig = header(headers, "X-Hub-Signature")
                    .ok_or(Refused::MissingSignature("X-Hub-Signature-256"))?;
                check_hmac(sig, body, token, ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY)?;
            }
            out.event = header(headers, "X-GitHub-Event").map(str::to_string);
            // A ping proves the hook works; it triggers nothing.
            out.wanted =
                out.event.as_deref() != Some("ping") && wanted(events, out.event.as_deref());
        }
        ReceiverType::Gitlab => {
            let t = header(headers, "X-Gitlab-Token")
                .ok_or(Refused::MissingSignature("X-Gitlab-Token"))?;
            if !same(t.as_bytes(), token) {
                return Err(Refused::BadToken("X-Gitlab-Token"));
            }
            out.event = header(headers, "X-Gitlab-Event").map(str::to_string);
            out.wanted = wanted(events, out.event.as_deref());
        }
        ReceiverType::Harbor => {
            let t = header(headers, "Authorization")
                .ok_or(Refused::MissingSignature("Authorization"))?;
            if !same(t.as_bytes(), token) {
                return Err(Refused::BadToken("Authorization"));
            }
        }
        ReceiverType::Nexus => {
            let sig = header(headers, "X-Nexus-Webhook-Signature")
                .ok_or(Refused::MissingSignature("X-Nexus-Webhook-Signature"))?;
            check_hmac(sig, body, token, ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY)?;
        }
        ReceiverType::Cdevents => {
            out.event = header(headers, "Ce-Type").map(str::to_string);
            out.wanted = wanted(events, out.event.as_deref());
        }
        ReceiverType::Bitbucket => return Err(Refused::Unsupported("bitbucket")),
        ReceiverType::Gcr => return Err(Refused::Unsupported("gcr")),
        ReceiverType::Acr => return Err(Refused::Unsupported("acr")),
    }
    Ok(out)
}

/// The repositories a payload says were pushed to, normalised, from the
/// shapes registries send: the CNCF distribution registry's notification
/// envelope (`events[].action = push`, `target.repository`,
/// `request.host`), Harbor (`event_data.repository.repo_full_name` with
/// the resources' `resource_url`), Docker Hub (`repository.repo_name`),
/// Quay (`docker_url`). `None` for anything else.
pub fn registry_pushes(body: &[u8]) -> Option<Vec<String>> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let known = v["events"].is_array()
        || v["event_data"]["resources"].is_array()
        || v["repository"]["repo_name"].is_string()
        || v["docker_url"].is_string();
    if !known {
        return None;
    }
    let mut out = Vec::new();
    let mut add = |s: &str| {
        if let Some(n) = crate::registry::normalized_repository(s)
            && !out.contains(&n)
        {
            out.push(n);
        }
    };
    if let Some(events) = v["events"].as_array() {
        for e in events {
            // A manifest pushed (under a tag): blob uploads come first and
            // say nothing about tags.
            let manifest = e["target"]["tag"].is_string()
                || e["target"]["mediaType"]
                    .as_str()
                    .is_some_and(|m| m.contains("manifest"));
            if e["action"] != "push" || !manifest {
                continue;
            }
            if let (Some(host), Some(repo)) = (
                e["request"]["host"].as_str(),
                e["target"]["repository"].as_str(),
            ) {
                add(&format!("{host}/{repo}"));
            }
        }
    }
    if let Some(resources) = v["event_data"]["resources"].as_array() {
        for r in resources {
            if let Some(url) = r["resource_url"].as_str() {
                add(url);
            }
        }
    }
    if let Some(name) = v["repository"]["repo_name"].as_str() {
        add(name);
    }
    if let Some(url) = v["docker_url"].as_str() {
        add(url);
    }
    Some(out)
}

/// The namespace and name a Receiver's resource points at (`*` for all,
/// with its `matchLabels`).
pub fn targets(r: &Receiver) -> Vec<(String, String, BTreeMap<String, String>)> {
    let ns = r.namespace().unwrap_or_default();
    r.spec
        .resources
        .iter()
        .filter(|x| x.kind == "ImageRepository")
        .map(|x| {
            (
                x.namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| ns.clone()),
                x.name.clone(),
                x.match_labels.clone(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_hex(algo: ring::hmac::Algorithm, key: &[u8], body: &[u8]) -> String {
        let tag = ring::hmac::sign(&ring::hmac::Key::new(algo, key), body);
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn h(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    #[test]
    fn paths_as_flux_computes_them() {
        // sha256("tokenreceiverns")
        let p = webhook_path("token", "receiver", "ns");
        let mut hsh = Sha256::new();
        hsh.update(b"tokenreceiverns");
        assert_eq!(p, format!("/hook/{:x}", hsh.finalize()));
        assert_eq!(p.len(), 6 + 64);
    }

    #[test]
    fn each_sender_proves_itself() {
        let body = br#"{"events":[{"action":"push","target":{"mediaType":"application/octet-stream","repository":"team/blob"},"request":{"host":"127.0.0.1:5000"}},{"action":"push","target":{"repository":"team/web","tag":"1.1.0"},"request":{"host":"127.0.0.1:5000"}}]}"#;
        let token = b"s3cret";
        let sha256 = hmac_hex(ring::hmac::HMAC_SHA256, token, body);
        let sha1 = hmac_hex(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token, body);
        let ok = verify(
            ReceiverType::GenericHmac,
            &h(&[("X-Signature", &format!("sha256={sha256}"))]),
            body,
            token,
            &[],
        )
        .unwrap();
        assert_eq!(
            ok.repositories,
            Some(vec!["127.0.0.1:5000/team/web".to_string()])
        );
        assert_eq!(
            verify(
                ReceiverType::GenericHmac,
                &h(&[("X-Signature", &format!("sha256={}", "00".repeat(32)))]),
                body,
                token,
                &[]
            ),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(ReceiverType::GenericHmac, &h(&[]), body, token, &[]),
            Err(Refused::MissingSignature("X-Signature"))
        );
        let gh = verify(
            ReceiverType::Github,
            &h(&[
                ("X-Hub-Signature-256", &format!("sha256={sha256}")),
                ("X-GitHub-Event", "package"),
            ]),
            body,
            token,
            &["package".into()],
        )
        .unwrap();
        assert!(gh.wanted);
        let ping = verify(
            ReceiverType::Github,
            &h(&[
                ("X-Hub-Signature-256", &format!("sha256={sha256}")),
                ("X-GitHub-Event", "ping"),
            ]),
            body,
            token,
            &[],
        )
        .unwrap();
        assert!(!ping.wanted);
        assert!(
            verify(
                ReceiverType::Github,
                &h(&[("X-Hub-Signature", &format!("sha1={sha1}"))]),
                body,
                token,
                &[]
            )
            .is_ok()
        );
        assert!(
            verify(
                ReceiverType::Gitlab,
                &h(&[("X-Gitlab-Token", "s3cret")]),
                body,
                token,
                &[]
            )
            .is_ok()
        );
        assert_eq!(
            verify(
                ReceiverType::Gitlab,
                &h(&[("X-Gitlab-Token", "nope")]),
                body,
                token,
                &[]
            ),
            Err(Refused::BadToken("X-Gitlab-Token"))
        );
        assert!(
            verify(
                ReceiverType::Harbor,
                &h(&[("Authorization", "s3cret")]),
                body,
                token,
                &[]
            )
            .is_ok()
        );
        assert!(
            verify(
                ReceiverType::Nexus,
                &h(&[("X-Nexus-Webhook-Signature", &sha1)]),
                body,
                token,
                &[]
            )
            .is_ok()
        );
        assert!(
            verify(
                ReceiverType::Nexus,
                &h(&[("X-Nexus-Webhook-Signature", &sha256)]),
                body,
                token,
                &[]
            )
            .is_err()
        );
        let ce = verify(
            ReceiverType::Cdevents,
            &h(&[("Ce-Type", "dev.cdevents.artifact.published.0.1.1")]),
            body,
            token,
            &["dev.cdevents.artifact.published.0.1.1".into()],
        )
        .unwrap();
        assert!(ce.wanted);
        let other = verify(
            ReceiverType::Cdevents,
            &h(&[("Ce-Type", "dev.cdevents.build.started")]),
            body,
            token,
            &["dev.cdevents.artifact.published.0.1.1".into()],
        )
        .unwrap();
        assert!(!other.wanted);
        assert_eq!(
            verify(ReceiverType::Generic, &h(&[]), b"junk", token, &[])
                .unwrap()
                .repositories,
            None
        );
    }

    #[test]
    fn payloads_say_which_repository() {
        let one = |s: &str| Some(vec![s.to_string()]);
        assert_eq!(
            registry_pushes(br#"{"repository":{"repo_name":"org/app"}}"#),
            one("docker.io/org/app")
        );
        assert_eq!(
            registry_pushes(br#"{"docker_url":"quay.io/org/app"}"#),
            one("quay.io/org/app")
        );
        assert_eq!(
            registry_pushes(br#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[{"resource_url":"harbor.example.com/lib/app:1.0"}]}}"#),
            one("harbor.example.com/lib/app")
        );
        // A pull is not a push: the payload says "nothing"; junk says
        // nothing about repositories at all.
        assert_eq!(
            registry_pushes(br#"{"events":[{"action":"pull","target":{"repository":"x","tag":"1"},"request":{"host":"h:1"}}]}"#),
            Some(vec![])
        );
        assert_eq!(registry_pushes(b"\xff"), None);
        assert_eq!(registry_pushes(b"{}"), None);
    }
}
