//! A real distribution registry (Debian's `docker-registry`) on 127.0.0.1,
//! with anonymous, htpasswd (behind TLS) or token authentication, and a token
//! issuer for the latter; a CA and certificates made for the test; pushing
//! images over the registry API.

use crate::{Sentinel, require_tool, start_on_free_port};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A CA and a server certificate for 127.0.0.1 and localhost.
pub struct Tls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Tls {
    pub fn new(ca_name: &str) -> Tls {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = CertifiedIssuer::self_signed(params, ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "registry.test");
        let cert = params.signed_by(&key, &ca).unwrap();
        Tls {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// How the registry authenticates.
pub enum Auth {
    Anonymous,
    /// htpasswd basic auth (the registry needs TLS for it).
    Htpasswd {
        user: String,
        password: String,
    },
    /// htpasswd basic auth with several users, over plain HTTP (behind a
    /// TLS front such as [`crate::cloud::Front`]).
    Users(Vec<(String, String)>),
    /// Token auth against a [`TokenIssuer`].
    Token {
        realm: String,
        service: String,
        issuer: String,
        bundle_pem: String,
    },
}

/// A running registry; stopped when dropped.
pub struct Registry {
    pub port: u16,
    pub tls: bool,
    child: Child,
    _sentinel: Sentinel,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(auth: Auth, tls: Option<&Tls>) -> Registry {
        Self::start_with(auth, tls, "")
    }

    /// [`Registry::start`] with more configuration appended (top-level
    /// sections such as `notifications:`).
    pub fn start_with(auth: Auth, tls: Option<&Tls>, extra: &str) -> Registry {
        Self::start_in(None, auth, tls, extra)
    }

    /// An anonymous registry over plain HTTP whose storage is `data`, kept
    /// after it stops (the benchmarks fill one once).
    pub fn start_keeping(data: &Path) -> Registry {
        Self::start_in(Some(data), Auth::Anonymous, None, "")
    }

    fn start_in(data: Option<&Path>, auth: Auth, tls: Option<&Tls>, extra: &str) -> Registry {
        let bin = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:PORT\n  secret: test-secret\n",
            data.display()
        );
        if let Some(t) = tls {
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, &t.cert_pem).unwrap();
            std::fs::write(&key, &t.key_pem).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        match auth {
            Auth::Anonymous => {}
            Auth::Htpasswd { user, password } => {
                let htpasswd = require_tool("htpasswd", "apache2-utils");
                let out = Command::new(htpasswd)
                    .args(["-Bbn", &user, &password])
                    .output()
                    .unwrap();
                assert!(out.status.success());
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    file.display()
                ));
            }
            Auth::Users(users) => {
                let htpasswd = require_tool("htpasswd", "apache2-utils");
                let mut lines = Vec::new();
                for (user, password) in users {
                    let out = Command::new(&htpasswd)
                        .args(["-Bbn", &user, &password])
                        .output()
                        .unwrap();
                    assert!(out.status.success());
                    lines.extend(String::from_utf8_lossy(&out.stdout).trim().bytes());
                    lines.push(b'\n');
                }
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, lines).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    file.display()
                ));
            }
            Auth::Token {
                realm,
                service,
                issuer,
                bundle_pem,
            } => {
                let bundle = dir.path().join("bundle.pem");
                std::fs::write(&bundle, bundle_pem).unwrap();
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                    bundle.display()
                ));
            }
        }
        config.push_str(extra);
        let cfg = dir.path().join("config.yml");
        let (port, child) = start_on_free_port(|port| {
            std::fs::write(
                &cfg,
                config.replace("127.0.0.1:PORT", &format!("127.0.0.1:{port}")),
            )
            .unwrap();
            Command::new(&bin)
                .arg("serve")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry starts")
        });
        Registry {
            port,
            tls: tls.is_some(),
            _sentinel: Sentinel::watch(child.id()),
            child,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.port
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes small images under `tags` to `repository`, over the registry API.
/// Returns the manifest digest of each tag. `auth` is an Authorization value.
pub struct Pusher {
    pub base: String,
    pub client: reqwest::Client,
    pub auth: Option<String>,
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

impl Pusher {
    pub fn new(base: &str, ca_pem: Option<&str>, auth: Option<String>) -> Pusher {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = ca_pem {
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        }
        Pusher {
            base: base.to_string(),
            client: b.build().unwrap(),
            auth,
        }
    }

    fn req(&self, m: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(m, url);
        match &self.auth {
            Some(a) => r.header("Authorization", a),
            None => r,
        }
    }

    async fn blob(&self, repository: &str, data: &[u8]) -> String {
        let digest = sha(data);
        let url = format!("{}/v2/{repository}/blobs/uploads/", self.base);
        let resp = self.req(reqwest::Method::POST, &url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 202, "blob upload start");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let mut put = reqwest::Url::parse(&self.base)
            .unwrap()
            .join(&location)
            .unwrap();
        put.query_pairs_mut().append_pair("digest", &digest);
        let resp = self
            .req(reqwest::Method::PUT, put.as_str())
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "blob upload: {}", resp.status());
        digest
    }

    /// Pushes one image per tag (each with its own config, so digests differ
    /// when `distinct`), returning the manifest digests.
    pub async fn push(&self, repository: &str, tags: &[String], distinct: bool) -> Vec<String> {
        let layer = b"not really a tarball".to_vec();
        let layer_digest = self.blob(repository, &layer).await;
        let mut shared: Option<(Vec<u8>, String)> = None;
        let mut digests = Vec::new();
        for tag in tags {
            let manifest = match (&shared, distinct) {
                (Some((m, _)), false) => m.clone(),
                _ => {
                    let config = format!(
                        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Labels\":{{\"tag\":\"{tag}\"}}}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}"
                    );
                    let config_digest = self.blob(repository, config.as_bytes()).await;
                    let m = format!(
                        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_digest}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{layer_digest}\",\"size\":{}}}]}}",
                        config.len(),
                        layer.len()
                    );
                    let m = m.into_bytes();
                    shared = Some((m.clone(), sha(&m)));
                    m
                }
            };
            let url = format!("{}/v2/{repository}/manifests/{tag}", self.base);
            let resp = self
                .req(reqwest::Method::PUT, &url)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest.clone())
                .send()
                .await
                .unwrap();
            let status = resp.status();
            assert!(
                status.is_success(),
                "manifest {tag}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
            digests.push(sha(&manifest));
        }
        digests
    }
}

/// A token issuer for the registry's `auth: token`: answers
/// `GET /token?service=&scope=` with an ES256 JWT the registry verifies
/// against the bundle, after checking the Basic credentials.
pub struct TokenIssuer {
    pub port: u16,
    pub bundle_pem: String,
    pub issuer: String,
    pub service: String,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TokenIssuer {
    pub fn start(user: &str, password: &str) -> TokenIssuer {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "token-signer");
        let cert = params.self_signed(&key).unwrap();
        let pkcs8 = key.serialize_der();
        let x5c = STANDARD.encode(cert.der());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let (issuer, service) = ("test-issuer".to_string(), "test-registry".to_string());
        let handle = {
            let stop = stop.clone();
            let (issuer, service) = (issuer.clone(), service.clone());
            std::thread::spawn(move || {
                let rng = ring::rand::SystemRandom::new();
                let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pkcs8,
                    &rng,
                )
                .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    conn.set_nonblocking(false).unwrap();
                    let Some(req) = read_request(&mut conn) else {
                        continue;
                    };
                    if req.header("authorization").as_deref() != Some(expected.as_str()) {
                        respond(&mut conn, 401, &[], b"{\"details\":\"bad credentials\"}");
                        continue;
                    }
                    let scopes: Vec<String> = req.query("scope");
                    let access: Vec<String> = scopes
                        .iter()
                        .filter_map(|s| {
                            let mut p = s.splitn(3, ':');
                            let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
                            let actions: Vec<String> =
                                actions.split(',').map(|a| format!("\"{a}\"")).collect();
                            Some(format!(
                                "{{\"type\":\"{t}\",\"name\":\"{name}\",\"actions\":[{}]}}",
                                actions.join(",")
                            ))
                        })
                        .collect();
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let header =
                        format!("{{\"typ\":\"JWT\",\"alg\":\"ES256\",\"x5c\":[\"{x5c}\"]}}");
                    let claims = format!(
                        "{{\"iss\":\"{issuer}\",\"sub\":\"test\",\"aud\":\"{service}\",\"exp\":{},\"nbf\":{},\"iat\":{now},\"jti\":\"{now}-{}\",\"access\":[{}]}}",
                        now + 300,
                        now - 10,
                        req.path.len(),
                        access.join(",")
                    );
                    let signing_input = format!(
                        "{}.{}",
                        URL_SAFE_NO_PAD.encode(header),
                        URL_SAFE_NO_PAD.encode(claims)
                    );
                    let sig = signer.sign(&rng, signing_input.as_bytes()).unwrap();
                    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
                    let body = format!("{{\"token\":\"{jwt}\",\"expires_in\":300}}");
                    respond(
                        &mut conn,
                        200,
                        &[("Content-Type", "application/json")],
                        body.as_bytes(),
                    );
                }
            })
        };
        TokenIssuer {
            port,
            bundle_pem: cert.pem(),
            issuer,
            service,
            stop,
            handle: Some(handle),
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Fetches a token with push rights, for seeding the registry.
    pub async fn push_token(&self, user: &str, password: &str, repository: &str) -> String {
        let url = format!(
            "{}?service={}&scope=repository:{repository}:pull,push",
            self.realm(),
            self.service
        );
        let v: serde_json::Value = reqwest::Client::new()
            .get(url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        format!("Bearer {}", v["token"].as_str().unwrap())
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A parsed HTTP/1.1 request (line and headers; the body is not read).
pub struct Request {
    pub method: String,
    pub path: String,
    pub query_string: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// All values of a query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Vec<String> {
        self.query_string
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(h);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn read_request(conn: &mut std::net::TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let (path, query_string) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    Some(Request {
        method,
        path,
        query_string,
        headers,
        body,
    })
}

pub fn respond(conn: &mut std::net::TcpStream, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
}

/// A small HTTP server for what no real registry here produces (pagination
/// with Link headers, 429s): `handler` answers each request.
pub struct FakeServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// A response: status, headers, body.
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

impl FakeServer {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + 'static) -> FakeServer {
        Self::start_on("127.0.0.1:0", handler)
    }

    /// [`FakeServer::start`] on a given address (`169.254.169.254:80`
    /// inside a test's network namespace, say).
    pub fn start_on(
        addr: &str,
        handler: impl Fn(&Request) -> Reply + Send + 'static,
    ) -> FakeServer {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    conn.set_nonblocking(false).unwrap();
                    let Some(req) = read_request(&mut conn) else {
                        continue;
                    };
                    let (status, headers, body) = handler(&req);
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    respond(&mut conn, status, &h, &body);
                }
            })
        };
        FakeServer {
            port,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Writes a Docker config.json with `auth` for `host` and returns its path.
pub fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    let auth = STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}"),
    )
    .unwrap();
    path
}
