//! Registry logins: the `WWW-Authenticate` challenge, the token answer, and
//! what tells credentials apart in the token cache.

use super::*;

/// Tells credentials apart in the token cache without keeping them in it.
pub(super) fn fingerprint(c: Option<&Credentials>) -> String {
    use sha2::Digest;
    let material = match c {
        None => String::new(),
        Some(Credentials::Basic { username, password }) => format!("b:{username}:{password}"),
        Some(Credentials::IdentityToken(t)) => format!("i:{t}"),
        Some(Credentials::RegistryToken(t)) => format!("r:{t}"),
    };
    format!("{:x}", sha2::Sha256::digest(material.as_bytes()))[..16].to_string()
}

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parses `Bearer realm="...",service="...",scope="..."` (quoted or token values).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let k0 = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = rest[k0..i].trim().to_ascii_lowercase();
        i += 1;
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = String::new();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                v.push(b[i] as char);
                i += 1;
            }
            i += 1;
            v
        } else {
            let v0 = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            rest.get(v0..i).unwrap_or("").trim().to_string()
        };
        if !key.is_empty() {
            params.insert(key, value);
        }
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[derive(Deserialize)]
pub(super) struct TokenResponse {
    #[serde(default)]
    pub(super) token: Option<String>,
    #[serde(default)]
    pub(super) access_token: Option<String>,
    #[serde(default)]
    pub(super) expires_in: Option<u64>,
}

/// Most tokens a client keeps (per registry, credential and scope).
pub(super) const MAX_TOKENS: usize = 1024;
