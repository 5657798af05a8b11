//! OpenSSH `known_hosts`: plain and hashed host patterns, `[host]:port`,
//! negations and wildcards. Used to verify SSH host keys, which is mandatory.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What the known hosts say about a host's key.
#[derive(Debug, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// A line for this host has this exact key.
    Match,
    /// The host is listed, but with other keys (possibly changed: refuse).
    Mismatch,
    /// The host is not listed at all.
    Unknown,
}

struct Entry {
    patterns: String,
    key_type: String,
    key: Vec<u8>,
}

/// A parsed `known_hosts`.
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// The name a host has in known_hosts: `host`, or `[host]:port` off port 22.
pub fn host_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_string(),
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn hashed_match(pattern: &str, name: &str) -> bool {
    // |1|base64(salt)|base64(HMAC-SHA1(salt, name))
    let mut parts = pattern.trim_start_matches("|1|").split('|');
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

impl KnownHosts {
    pub fn parse(text: &str) -> KnownHosts {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or("");
            // Markers such as @revoked or @cert-authority: not host keys.
            if first.starts_with('@') {
                continue;
            }
            let (Some(key_type), Some(key)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(key) = STANDARD.decode(key) else {
                continue;
            };
            if first.is_empty() {
                first = "";
            }
            entries.push(Entry {
                patterns: first.to_string(),
                key_type: key_type.to_string(),
                key,
            });
        }
        KnownHosts { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn matches(patterns: &str, name: &str) -> bool {
        if patterns.starts_with("|1|") {
            return hashed_match(patterns, name);
        }
        let mut matched = false;
        for p in patterns.split(',') {
            if let Some(neg) = p.strip_prefix('!') {
                if glob(neg, name) {
                    return false;
                }
            } else if glob(p, name) {
                matched = true;
            }
        }
        matched
    }

    /// Checks `key` (the raw key blob) of type `key_type` (`ssh-ed25519`, ...)
    /// for host `name` (as [`host_name`] writes it).
    pub fn check(&self, name: &str, key_type: &str, key: &[u8]) -> HostKeyCheck {
        let mut same_type_listed = false;
        for e in &self.entries {
            if !Self::matches(&e.patterns, name) {
                continue;
            }
            if e.key == key && (e.key_type == key_type || key_type.is_empty()) {
                return HostKeyCheck::Match;
            }
            same_type_listed |= e.key_type == key_type;
        }
        // Only a listed key of the same type that differs is a changed key;
        // a host listed with other key types does not know this one.
        if same_type_listed {
            HostKeyCheck::Mismatch
        } else {
            HostKeyCheck::Unknown
        }
    }

    /// The key types listed for `name`, for messages.
    pub fn listed_types(&self, name: &str) -> Vec<String> {
        let mut t: Vec<String> = self
            .entries
            .iter()
            .filter(|e| Self::matches(&e.patterns, name))
            .map(|e| e.key_type.clone())
            .collect();
        t.dedup();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hashed_ports_and_negation() {
        let key = STANDARD.encode(b"key-bytes");
        let other = STANDARD.encode(b"other-key");
        // A hashed entry for "hashed.example.com".
        let salt = b"0123456789abcdefghij";
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
        let h = ring::hmac::sign(&k, b"hashed.example.com");
        let hashed = format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(h.as_ref())
        );
        let text = format!(
            "# comment\ngithub.com,140.82.121.4 ssh-ed25519 {key}\n[127.0.0.1]:2222 ssh-ed25519 {key}\n{hashed} ssh-rsa {key}\n*.corp,!bad.corp ssh-ed25519 {key}\n@revoked * ssh-rsa {other}\n"
        );
        let kh = KnownHosts::parse(&text);
        assert_eq!(
            kh.check("github.com", "ssh-ed25519", b"key-bytes"),
            HostKeyCheck::Match
        );
        assert_eq!(
            kh.check("github.com", "ssh-ed25519", b"other-key"),
            HostKeyCheck::Mismatch
        );
        // Listed with another key type only: not known, not changed.
        assert_eq!(
            kh.check("github.com", "ecdsa-sha2-nistp256", b"key-bytes"),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            kh.check(
                &host_name("127.0.0.1", Some(2222)),
                "ssh-ed25519",
                b"key-bytes"
            ),
            HostKeyCheck::Match
        );
        assert_eq!(
            kh.check(
                &host_name("127.0.0.1", Some(22)),
                "ssh-ed25519",
                b"key-bytes"
            ),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            kh.check("hashed.example.com", "ssh-rsa", b"key-bytes"),
            HostKeyCheck::Match
        );
        assert_eq!(
            kh.check("git.corp", "ssh-ed25519", b"key-bytes"),
            HostKeyCheck::Match
        );
        assert_eq!(
            kh.check("bad.corp", "ssh-ed25519", b"key-bytes"),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            kh.check("gitlab.com", "ssh-ed25519", b"key-bytes"),
            HostKeyCheck::Unknown
        );
    }
}
