//! A stand-in for the forge APIs imageauto calls, on 127.0.0.1 (no real
//! GitHub, GitLab or Gitea is reachable here): the GitHub App endpoints
//! (installation lookup by owner, installation tokens, checking the JWT's
//! RS256 signature with the App's public key and its iat/exp/iss as GitHub
//! does), and the pull request endpoints of GitHub (`/repos/...`, or under
//! `/api/v3`), GitLab (`/api/v4/projects/...`) and Gitea (`/api/v1/repos/...`),
//! each checking its own authentication header. Every request is recorded
//! for the tests to assert on. Stops when dropped.

use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A GitHub App's key pair, made with openssl for one test.
pub struct AppKey {
    /// PKCS#1 PEM, as GitHub hands it out.
    pub private_pem: String,
    /// PKCS#1 RSAPublicKey DER, for ring's verification.
    pub public_der: Vec<u8>,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl AppKey {
    pub fn new() -> AppKey {
        let openssl = crate::require_tool("openssl", "openssl");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pem");
        let ok = std::process::Command::new(&openssl)
            .args(["genrsa", "-traditional", "-out"])
            .arg(&path)
            .arg("2048")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genrsa");
        let public = dir.path().join("pub.der");
        let ok = std::process::Command::new(&openssl)
            .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
            .arg(&path)
            .arg("-out")
            .arg(&public)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl rsa -RSAPublicKey_out");
        AppKey {
            private_pem: std::fs::read_to_string(&path).unwrap(),
            public_der: std::fs::read(&public).unwrap(),
            path,
            _dir: dir,
        }
    }
}

impl Default for AppKey {
    fn default() -> Self {
        Self::new()
    }
}

/// One request the stand-in answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// With the query.
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The App the stand-in plays GitHub for.
pub struct AppSide {
    pub id: u64,
    pub installation_id: u64,
    /// The organization it is installed on.
    pub owner: String,
    pub public_der: Vec<u8>,
    /// How long the tokens it issues last.
    pub token_lifetime: Duration,
    /// Refuse every exchange (a revoked installation).
    pub refuse: bool,
    /// lighttpd's user file: each new token replaces it
    /// (`x-access-token:<token>`), so only the newest token opens Git.
    pub users_file: Option<PathBuf>,
}

/// A pull request the stand-in holds.
#[derive(Clone, Debug)]
pub struct Pull {
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub kind: &'static str,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    app: Option<AppSide>,
    tokens: Vec<String>,
    /// The token the pull request endpoints take (none: the App's newest).
    api_token: Option<String>,
    pulls: Vec<Pull>,
    jwt_problems: Vec<String>,
}

pub struct StandIn {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// RFC 3339, UTC, whole seconds (what GitHub writes).
fn rfc3339(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

impl StandIn {
    pub fn start(app: Option<AppSide>, api_token: Option<&str>) -> StandIn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            app,
            api_token: api_token.map(str::to_string),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || serve(conn, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StandIn {
            port,
            state,
            stop,
            handle: Some(handle),
        }
    }

    /// The stand-in for App 4242, installed on the owner `git`
    /// (installation 99), whose tokens last `token_lifetime` and are the
    /// only password of the Git server whose user file is `users_file`.
    pub fn app(key: &AppKey, users_file: &Path, token_lifetime: Duration) -> StandIn {
        StandIn::start(
            Some(AppSide {
                id: 4242,
                installation_id: 99,
                owner: "git".into(),
                public_der: key.public_der.clone(),
                token_lifetime,
                refuse: false,
                users_file: Some(users_file.to_path_buf()),
            }),
            None,
        )
    }

    /// The Secret `github-app` of [`StandIn::app`]'s App, as `flux create
    /// secret githubapp --app-id --app-installation-owner
    /// --app-private-key` writes it, with this stand-in's API root
    /// (`githubAppBaseURL`) and the Git server's CA.
    pub fn app_secret(&self, ns: &str, key: &AppKey, git_ca_pem: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: github-app, namespace: {ns}}}\ndata:\n  githubAppID: {}\n  githubAppInstallationOwner: {}\n  githubAppPrivateKey: {}\n  githubAppBaseURL: {}\n  ca.crt: {}\n",
            b64("4242"),
            b64("git"),
            b64(&key.private_pem),
            b64(&self.url()),
            b64(git_ca_pem),
        )
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Installation tokens issued, oldest first.
    pub fn tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens.clone()
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.state.lock().unwrap().pulls.clone()
    }

    /// Why JWTs were refused.
    pub fn jwt_problems(&self) -> Vec<String> {
        self.state.lock().unwrap().jwt_problems.clone()
    }

    pub fn set_refuse(&self, refuse: bool) {
        if let Some(a) = self.state.lock().unwrap().app.as_mut() {
            a.refuse = refuse;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: std::net::TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let mut rec = Recorded {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
    };
    let (status, answer) = {
        let mut st = state.lock().unwrap();
        let r = route(&mut st, &rec);
        rec.status = r.0;
        st.requests.push(rec);
        r
    };
    let text = answer.to_string();
    let reason = match status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        _ => "Other",
    };
    let _ = write!(
        writer,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = writer.flush();
}

fn json(status: u16, v: serde_json::Value) -> (u16, serde_json::Value) {
    (status, v)
}

fn message(status: u16, m: &str) -> (u16, serde_json::Value) {
    json(status, serde_json::json!({"message": m}))
}

/// Checks the App's JWT as GitHub does: RS256 by the App's key, `iss` the
/// App's id, issued in the past, expiring in the future, at most 10
/// minutes apart.
fn check_jwt(app: &AppSide, auth: Option<&str>) -> Result<(), String> {
    let jwt = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("no Bearer JWT")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err("not three parts".into());
    };
    let d = |x: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| "not base64url".to_string())
    };
    let header: serde_json::Value =
        serde_json::from_slice(&d(h)?).map_err(|_| "header not JSON")?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &app.public_der,
    );
    key.verify(format!("{h}.{c}").as_bytes(), &d(s)?)
        .map_err(|_| "signature does not verify with the App's public key".to_string())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&d(c)?).map_err(|_| "claims not JSON")?;
    let iss = match &claims["iss"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if iss != app.id.to_string() {
        return Err(format!("iss {iss}"));
    }
    let (iat, exp) = (
        claims["iat"].as_u64().ok_or("no iat")?,
        claims["exp"].as_u64().ok_or("no exp")?,
    );
    let t = now();
    if iat > t + 1 {
        return Err("iat in the future".into());
    }
    if exp <= t {
        return Err("expired".into());
    }
    if exp > t + 600 || exp - iat > 600 {
        return Err("exp too far ahead".into());
    }
    Ok(())
}

fn route(st: &mut State, r: &Recorded) -> (u16, serde_json::Value) {
    let (path, query) = r.path.split_once('?').unwrap_or((r.path.as_str(), ""));
    let q = |k: &str| {
        query.split('&').find_map(|kv| {
            let (a, b) = kv.split_once('=')?;
            (a == k).then(|| b.replace("%3A", ":").replace("%2F", "/"))
        })
    };
    let auth = r.header("authorization");
    // The App's endpoints.
    if path.ends_with("/installation") || path.starts_with("/app/") {
        let Some(app) = st.app.as_ref() else {
            return message(404, "Not Found");
        };
        if let Err(e) = check_jwt(app, auth) {
            st.jwt_problems.push(e);
            return message(401, "A JSON web token could not be decoded");
        }
        if app.refuse {
            return message(401, "Bad credentials: the installation was suspended");
        }
        if let Some(rest) = path.strip_prefix("/orgs/") {
            let owner = rest.trim_end_matches("/installation");
            return if owner == app.owner {
                json(200, serde_json::json!({"id": app.installation_id}))
            } else {
                message(404, "Not Found")
            };
        }
        if path.starts_with("/users/") {
            return message(404, "Not Found");
        }
        let want = format!("/app/installations/{}/access_tokens", app.installation_id);
        if r.method == "POST" && path == want {
            let token = format!("ghs_{:016x}{:08x}", rand_u64(), st.tokens.len());
            let expires = now() + app.token_lifetime.as_secs();
            if let Some(f) = &app.users_file {
                std::fs::write(f, format!("x-access-token:{token}\n")).unwrap();
            }
            st.tokens.push(token.clone());
            return json(
                201,
                serde_json::json!({"token": token, "expires_at": rfc3339(expires)}),
            );
        }
        return message(404, "Not Found");
    }
    // Pull requests: the kind from the API's prefix.
    let (kind, rest) = if let Some(p) = path.strip_prefix("/api/v4") {
        ("gitlab", p)
    } else if let Some(p) = path.strip_prefix("/api/v1") {
        ("gitea", p)
    } else {
        ("github", path.strip_prefix("/api/v3").unwrap_or(path))
    };
    let token = st
        .api_token
        .clone()
        .or_else(|| st.tokens.last().cloned())
        .unwrap_or_default();
    let authorized = match kind {
        "github" => auth == Some(&format!("Bearer {token}")),
        "gitlab" => r.header("private-token") == Some(token.as_str()),
        _ => auth == Some(&format!("token {token}")),
    };
    if !authorized {
        return message(401, "Bad credentials");
    }
    let body = r.json();
    let page = |kind: &str, n: u64| match kind {
        "gitlab" => format!("https://forge.example/git/fleet/-/merge_requests/{n}"),
        _ => format!("https://forge.example/git/fleet/pull/{n}"),
    };
    let show = |p: &Pull| match p.kind {
        "gitlab" => {
            serde_json::json!({"iid": p.number, "web_url": page("gitlab", p.number), "source_branch": p.head, "target_branch": p.base, "title": p.title})
        }
        _ => {
            serde_json::json!({"number": p.number, "html_url": page(p.kind, p.number), "head": {"ref": p.head}, "base": {"ref": p.base}, "title": p.title})
        }
    };
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let listing = matches!(segs.last(), Some(&"pulls") | Some(&"merge_requests"));
    let numbered = segs.len() >= 2
        && matches!(segs[segs.len() - 2], "pulls" | "merge_requests")
        && segs[segs.len() - 1].parse::<u64>().is_ok();
    match (r.method.as_str(), listing, numbered) {
        ("GET", true, _) => {
            let (head, base) = match kind {
                "github" => (
                    q("head").map(|h| h.split_once(':').map_or(h.clone(), |(_, b)| b.to_string())),
                    q("base"),
                ),
                "gitlab" => (q("source_branch"), q("target_branch")),
                _ => (None, None),
            };
            let list: Vec<serde_json::Value> = st
                .pulls
                .iter()
                .filter(|p| p.kind == kind)
                .filter(|p| head.as_ref().is_none_or(|h| *h == p.head))
                .filter(|p| base.as_ref().is_none_or(|b| *b == p.base))
                .map(show)
                .collect();
            json(200, serde_json::Value::Array(list))
        }
        ("POST", true, _) => {
            let (head, base, desc) = match kind {
                "gitlab" => ("source_branch", "target_branch", "description"),
                _ => ("head", "base", "body"),
            };
            let (head, base) = (
                body[head].as_str().unwrap_or("").to_string(),
                body[base].as_str().unwrap_or("").to_string(),
            );
            if st
                .pulls
                .iter()
                .any(|p| p.kind == kind && p.head == head && p.base == base)
            {
                return message(if kind == "github" { 422 } else { 409 }, "already exists");
            }
            let pull = Pull {
                number: st.pulls.len() as u64 + 7,
                head,
                base,
                title: body["title"].as_str().unwrap_or("").to_string(),
                body: body[desc].as_str().unwrap_or("").to_string(),
                kind,
            };
            let v = show(&pull);
            st.pulls.push(pull);
            json(201, v)
        }
        ("PATCH" | "PUT", _, true) => {
            let n: u64 = segs[segs.len() - 1].parse().unwrap_or(0);
            let desc = if kind == "gitlab" {
                "description"
            } else {
                "body"
            };
            match st
                .pulls
                .iter_mut()
                .find(|p| p.kind == kind && p.number == n)
            {
                Some(p) => {
                    p.title = body["title"].as_str().unwrap_or("").to_string();
                    p.body = body[desc].as_str().unwrap_or("").to_string();
                    let v = show(p);
                    json(200, v)
                }
                None => message(404, "Not Found"),
            }
        }
        _ => message(404, "Not Found"),
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// Whether any of `secrets` (each at least 8 characters) appears in `text`.
pub fn leaks<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> Option<String> {
    secrets
        .into_iter()
        .filter(|s| s.len() >= 8)
        .find(|s| text.contains(*s))
        .map(|s| s.chars().take(12).collect())
}

/// The base64 body of a PEM key (what a leak of the key would show).
pub fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect()
}

/// Reads a file for assertions, empty when it is not there.
pub fn read_or_empty(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
