//! Registry credentials from a Docker `config.json` or a Kubernetes
//! `kubernetes.io/dockerconfigjson` Secret. No credential helper is run.
//! Credentials never appear in `Debug` output or in error messages.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// What to authenticate with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or access token used as a password).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
    /// A bearer token to send as it is (`registrytoken`).
    RegistryToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credentials::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("{source_name}: not a Docker config JSON ({detail})")]
    Json { source_name: String, detail: String },
    #[error("{source_name}: the auth of {registry} is not base64 of user:password")]
    Auth {
        source_name: String,
        registry: String,
    },
    #[error("{source_name}: the Secret has neither .dockerconfigjson nor .dockercfg")]
    NoDockerConfig { source_name: String },
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

/// Registry hosts Docker Hub answers to.
const DOCKER_HUB_ALIASES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// `https://index.docker.io/v1/` -> `docker.io`; `ghcr.io/` -> `ghcr.io`.
pub fn normalize_host(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        "docker.io".to_string()
    } else {
        host
    }
}

/// Credentials by registry host.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keychain {
    entries: BTreeMap<String, Credentials>,
    /// Hosts whose credentials live in a helper (not run).
    helpers: Vec<String>,
}

impl fmt::Debug for Keychain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keychain")
            .field("hosts", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keychain {
    /// Parses a Docker `config.json`; `source_name` names it in errors.
    pub fn from_docker_config(json: &[u8], source_name: &str) -> Result<Self, CredentialsError> {
        let config: DockerConfig =
            serde_json::from_slice(json).map_err(|e| CredentialsError::Json {
                source_name: source_name.to_string(),
                detail: format!("line {} column {}", e.line(), e.column()),
            })?;
        let mut k = Keychain::default();
        for (registry, entry) in config.auths {
            if let Some(c) = Self::entry(source_name, &registry, entry)? {
                k.entries.insert(normalize_host(&registry), c);
            }
        }
        if config.creds_store.is_some() {
            k.helpers.push("*".into());
        }
        k.helpers
            .extend(config.cred_helpers.keys().map(|h| normalize_host(h)));
        Ok(k)
    }

    /// The older `.dockercfg` format: the `auths` map at the top level.
    fn from_dockercfg(json: &[u8], source_name: &str) -> Result<Self, CredentialsError> {
        let auths: BTreeMap<String, AuthEntry> =
            serde_json::from_slice(json).map_err(|e| CredentialsError::Json {
                source_name: source_name.to_string(),
                detail: format!("line {} column {}", e.line(), e.column()),
            })?;
        let mut k = Keychain::default();
        for (registry, entry) in auths {
            if let Some(c) = Self::entry(source_name, &registry, entry)? {
                k.entries.insert(normalize_host(&registry), c);
            }
        }
        Ok(k)
    }

    fn entry(
        source_name: &str,
        registry: &str,
        e: AuthEntry,
    ) -> Result<Option<Credentials>, CredentialsError> {
        if let Some(t) = e.registrytoken.filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::RegistryToken(t)));
        }
        if let Some(t) = e.identitytoken.filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::IdentityToken(t)));
        }
        if let (Some(u), Some(p)) = (&e.username, &e.password)
            && !u.is_empty()
        {
            return Ok(Some(Credentials::Basic {
                username: u.clone(),
                password: p.clone(),
            }));
        }
        let Some(auth) = e.auth.filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let bad = || CredentialsError::Auth {
            source_name: source_name.to_string(),
            registry: registry.to_string(),
        };
        let decoded = STANDARD.decode(auth.trim()).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
        Ok(Some(Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }))
    }

    /// Reads a Kubernetes `kubernetes.io/dockerconfigjson` (or legacy
    /// `kubernetes.io/dockercfg`) Secret's data (already base64-decoded).
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
        source_name: &str,
    ) -> Result<Self, CredentialsError> {
        if let Some(json) = data.get(".dockerconfigjson") {
            return Self::from_docker_config(json, source_name);
        }
        if let Some(json) = data.get(".dockercfg") {
            return Self::from_dockercfg(json, source_name);
        }
        Err(CredentialsError::NoDockerConfig {
            source_name: source_name.to_string(),
        })
    }

    /// Adds `other`'s entries; ours win where both have a host.
    pub fn merge(&mut self, other: Keychain) {
        for (h, c) in other.entries {
            self.entries.entry(h).or_insert(c);
        }
        self.helpers.extend(other.helpers);
    }

    /// Sets the credentials of a registry host (a cloud login), over any
    /// other.
    pub fn insert(&mut self, registry: &str, credentials: Credentials) {
        self.entries.insert(normalize_host(registry), credentials);
    }

    /// Credentials for a registry host (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn lookup(&self, registry: &str) -> Option<&Credentials> {
        self.entries.get(&normalize_host(registry))
    }

    /// Whether the config sends `registry`'s credentials to a helper, which is
    /// not run: said in authentication errors.
    pub fn uses_helper(&self, registry: &str) -> bool {
        let h = normalize_host(registry);
        self.helpers.iter().any(|x| x == "*" || *x == h)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_forms() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpzM2NyM3Q="},
            "ghcr.io": {"username": "bot", "password": "ghp_x"},
            "registry.example.com:5000": {"identitytoken": "refresh"},
            "quay.io": {"registrytoken": "bearer"},
            "empty.example.com": {}
        }, "credHelpers": {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"}}"#;
        let k = Keychain::from_docker_config(json, "config.json").unwrap();
        assert_eq!(
            k.lookup("docker.io"),
            Some(&Credentials::Basic {
                username: "user".into(),
                password: "s3cr3t".into()
            })
        );
        assert_eq!(k.lookup("registry-1.docker.io"), k.lookup("docker.io"));
        assert!(matches!(
            k.lookup("ghcr.io"),
            Some(Credentials::Basic { .. })
        ));
        assert!(matches!(
            k.lookup("registry.example.com:5000"),
            Some(Credentials::IdentityToken(_))
        ));
        assert!(matches!(
            k.lookup("quay.io"),
            Some(Credentials::RegistryToken(_))
        ));
        assert_eq!(k.lookup("empty.example.com"), None);
        assert!(k.uses_helper("123.dkr.ecr.eu-west-1.amazonaws.com"));
        let debug = format!("{:?} {:?}", k, k.lookup("ghcr.io"));
        assert!(
            !debug.contains("ghp_x") && !debug.contains("s3cr3t"),
            "{debug}"
        );
    }

    #[test]
    fn errors_do_not_carry_secrets() {
        let e =
            Keychain::from_docker_config(br#"{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}"#, "c")
                .unwrap_err();
        assert_eq!(
            e,
            CredentialsError::Auth {
                source_name: "c".into(),
                registry: "r.io".into()
            }
        );
        let e = Keychain::from_docker_config(br#"{"auths": {"r.io": {"auth": "s3cr3t!"}}}"#, "c")
            .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"));
        let e = Keychain::from_docker_config(b"{\"auths\": [s3cr3t", "c").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn secrets() {
        let mut data = BTreeMap::new();
        data.insert(
            ".dockerconfigjson".to_string(),
            br#"{"auths": {"ghcr.io": {"auth": "dTpw"}}}"#.to_vec(),
        );
        let k = Keychain::from_secret_data(&data, "secret apps/regcred").unwrap();
        assert!(k.lookup("ghcr.io").is_some());
        let mut legacy = BTreeMap::new();
        legacy.insert(
            ".dockercfg".to_string(),
            br#"{"ghcr.io": {"auth": "dTpw"}}"#.to_vec(),
        );
        assert!(
            Keychain::from_secret_data(&legacy, "s")
                .unwrap()
                .lookup("ghcr.io")
                .is_some()
        );
        assert!(Keychain::from_secret_data(&BTreeMap::new(), "s").is_err());
    }
}
