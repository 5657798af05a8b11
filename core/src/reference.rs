//! Image references, normalised as Docker does: `nginx` is
//! `docker.io/library/nginx`, `localhost:5000/app` keeps its host.

use std::fmt;

/// Docker Hub's registry name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's canonical name, as Flux shows it in `canonicalImageName`.
pub const DOCKER_HUB_CANONICAL: &str = "index.docker.io";
/// Where Docker Hub's API answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (with port), normalised (`docker.io` for Docker Hub).
    pub registry: String,
    /// Repository path in the registry (`library/nginx`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// The name as it was written, without tag or digest (`nginx`,
    /// `ghcr.io/org/app`): what a marker receives as the image's name.
    pub written: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not a valid image reference: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let last = b[b.len() - 1];
    if !last.is_ascii_lowercase() && !last.is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or a run of `-`.
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let run = &b[start..i];
        let ok = run == b"." || run == b"_" || run == b"__" || run.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Whether `t` is a tag the distribution spec allows:
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`. Anything else a registry sends is not
/// a tag and is never written into a file or shown raw.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// A registry host: DNS labels of letters, digits and `-` separated by `.`
/// (or a bracketed IPv6 address), with an optional `:port`.
fn valid_host(h: &str) -> bool {
    let valid_port =
        |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = h.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let ip_ok = !ip.is_empty() && ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        return ip_ok && (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port));
    }
    let host = match h.rsplit_once(':') {
        Some((host, port)) if valid_port(port) => host,
        Some(_) => return false,
        None => h,
    };
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// A digest: `algorithm:encoded`, the algorithm of lower-case letters and
/// digits joined by `+ . _ -`, the encoded part hex (at least 32 digits).
pub fn valid_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    alg_ok && hex.len() >= 32 && hex.len() <= 256 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Reference {
    /// Parses `[registry/]repository[:tag][@digest]`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.contains("://") {
            return Err(err("a reference has no scheme"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() || *c == ' ')
        {
            return Err(err(&format!(
                "{:?} is not allowed: a reference is ASCII letters, digits and . _ - / : @",
                c
            )));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(err(
                        "the digest is not ALGORITHM:HEX (such as sha256:0f1e...)",
                    ));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(err("the tag may hold letters, digits, _ . - (at most 128)"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_host(first) {
                    return Err(err(
                        "the registry host is DNS labels (letters, digits, -) with an optional :port",
                    ));
                }
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == DOCKER_HUB_CANONICAL {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if registry.chars().any(|c| c.is_ascii_uppercase()) && registry != "localhost" {
            // Hosts are case-insensitive, but Docker refuses upper case too.
            return Err(err("the registry host must be lower case"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !repository.split('/').all(valid_component) {
            return Err(err(
                "path components are lower-case letters and digits, separated by . _ __ or -",
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
            written: name.to_string(),
        })
    }

    /// `registry/repository`, as Docker normalises it (`docker.io/library/nginx`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The canonical name Flux shows (`index.docker.io/library/nginx`).
    pub fn canonical_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            format!("{DOCKER_HUB_CANONICAL}/{}", self.repository)
        } else {
            self.name()
        }
    }

    /// The host the registry API answers on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The normalised repository name of an image reference, without tag or
/// digest; `None` when it does not parse.
pub fn normalized_repository(s: &str) -> Option<String> {
    Reference::parse(s).ok().map(|r| r.name())
}

/// An image reference as written into a file by the automation.
#[derive(
    serde::Serialize,
    serde::Deserialize,
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    schemars::JsonSchema,
)]
pub struct ImageRef {
    /// The image repository, as the ImageRepository's `spec.image` says it.
    pub name: String,
    /// The tag the policy selected.
    pub tag: String,
    /// The manifest digest of the tag, when digest reflection is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl ImageRef {
    /// `name:tag`, or `name:tag@digest` when a digest is known.
    pub fn reference(&self) -> String {
        match &self.digest {
            Some(d) if !d.is_empty() => format!("{}:{}@{}", self.name, self.tag, d),
            _ => format!("{}:{}", self.name, self.tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let r = Reference::parse("nginx").unwrap();
        assert_eq!(r.name(), "docker.io/library/nginx");
        assert_eq!(r.canonical_name(), "index.docker.io/library/nginx");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("index.docker.io/library/alpine:3.19").unwrap();
        assert_eq!(r.name(), "docker.io/library/alpine");
        assert_eq!(r.tag.as_deref(), Some("3.19"));
        let r = Reference::parse("stefanprodan/podinfo").unwrap();
        assert_eq!(r.name(), "docker.io/stefanprodan/podinfo");
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost:5000", "app")
        );
        assert_eq!(r.tag, None);
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("ghcr.io/org/app:v1@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.written, "ghcr.io/org/app");
        assert_eq!(Reference::parse("nginx:1").unwrap().written, "nginx");
        assert!(Reference::parse("[::1]:5000/app").is_ok());
        let r = Reference::parse("127.0.0.1:5000/a/b-c__d.e").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
    }

    #[test]
    fn tags() {
        for ok in ["1", "v1.2.3", "_x", "A-b.c_D", &"x".repeat(128)] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a\nb",
            "a: b",
            "a\u{2028}",
            "x@sha256:aa",
            "\u{1b}[31m",
            &"x".repeat(129),
        ] {
            assert!(!valid_tag(bad), "{bad:?}");
        }
    }

    #[test]
    fn invalid() {
        for bad in [
            "",
            "https://ghcr.io/x",
            "Ghcr/Org",
            "x:",
            "x:-1",
            "a//b",
            "a/-b",
            "x@sha",
            "x@sha256:abc",
            "ghcr.io/Org/app",
            "ghcr.io/org/äpp",
            "ghcr.io/org/app:1\n2",
            "gh\u{0}cr.io/x",
            "bad_host.io/x",
            "[::1/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
