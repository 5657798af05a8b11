//! What the cloud identity tests run against, all on loopback inside a
//! network namespace of their own:
//!
//! - [`isolated`]: runs the calling test again inside `unshare --user
//!   --map-root-user --net --mount`, with loopback up, 169.254.169.254 (the
//!   clouds' metadata address) on it, and an `/etc/hosts` of the test's own
//!   that sends the cloud host names (`<account>.dkr.ecr.<region>.amazonaws.com`,
//!   `*.azurecr.io`, `*-docker.pkg.dev`, `metadata.google.internal`, …)
//!   to loopback: the clients resolve the real names, nothing is bypassed,
//!   and nothing leaves the namespace.
//! - [`Front`]: lighttpd with TLS on 127.0.0.1:443 (a certificate for
//!   those names), routing URL prefixes to stand-ins (the ACR exchange at
//!   the registry's own host) and everything else to a real registry.
//! - [`Moto`]: moto's server (AWS's STS and ECR APIs).

use crate::registry::Tls;
use crate::{Sentinel, require_tool, start_on_free_port};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Set in the child that runs inside the namespace.
const INSIDE: &str = "IMAGEAUTO_TEST_NETNS";

/// Whether this process runs inside the namespace [`isolated`] made.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Runs the test `test` (its full path as libtest names it, such as
/// `ecr_provider`) of this test binary again inside a new network
/// namespace in which `names` resolve to 127.0.0.1 and `env` is set;
/// returns true in that child (the test goes on with its body), and false
/// in the parent once the child passed (the parent fails when it did not).
pub fn isolated(test: &str, names: &[&str], env: &[(&str, String)]) -> bool {
    if inside() {
        return true;
    }
    let unshare = require_tool("unshare", "util-linux");
    require_tool("ip", "iproute2");
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for n in names {
        text.push_str(&format!("127.0.0.1 {n}\n"));
    }
    text.push_str("169.254.169.254 metadata.google.internal\n");
    std::fs::write(&hosts, text).unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = r#"set -e
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
mount --bind "$1" /etc/hosts
shift
exec "$@""#;
    let mut cmd = Command::new(unshare);
    cmd.args(["--user", "--map-root-user", "--net", "--mount", "--fork"])
        .args(["sh", "-c", script, "sh"])
        .arg(&hosts)
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        // Nothing of the machine's cloud setup reaches the child.
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} inside its network namespace failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    false
}

/// A CA and a server certificate for `names` (and 127.0.0.1, localhost).
pub fn tls_for(names: &[&str]) -> Tls {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "cloud test CA");
    let ca = CertifiedIssuer::self_signed(params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sans.push("127.0.0.1".into());
    sans.push("localhost".into());
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("front"),
    );
    let cert = params.signed_by(&key, &ca).unwrap();
    Tls {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// lighttpd with TLS on 127.0.0.1:443 (inside the namespace, where the
/// test is root): requests whose path starts with one of `routes`'
/// prefixes go to that route's port, the others to `default_port`, all on
/// 127.0.0.1 over plain HTTP. Stopped when dropped.
pub struct Front {
    child: Child,
    _sentinel: Sentinel,
    _dir: tempfile::TempDir,
}

impl Front {
    pub fn start(tls: &Tls, routes: &[(&str, u16)], default_port: u16) -> Front {
        assert!(
            inside(),
            "the front binds 443: only inside the test's namespace"
        );
        let lighttpd = require_tool("lighttpd", "lighttpd lighttpd-mod-openssl");
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("server.pem");
        std::fs::write(&pem, format!("{}{}", tls.cert_pem, tls.key_pem)).unwrap();
        let mut conf = format!(
            r#"server.modules = ("mod_proxy", "mod_openssl")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = 443
server.errorlog = "{log}"
ssl.engine = "enable"
ssl.pemfile = "{pem}"
server.stream-request-body = 0
"#,
            root = dir.path().display(),
            log = dir.path().join("error.log").display(),
            pem = pem.display(),
        );
        for (i, (prefix, port)) in routes.iter().enumerate() {
            let cond = format!(
                "$HTTP[\"url\"] =~ \"^{}\" {{\n  proxy.server = (\"\" => ((\"host\" => \"127.0.0.1\", \"port\" => {port})))\n}}\n",
                prefix.replace('.', "\\\\.")
            );
            if i == 0 {
                conf.push_str(&cond);
            } else {
                conf.push_str("else ");
                conf.push_str(&cond);
            }
        }
        let fallback = format!(
            "{{\n  proxy.server = (\"\" => ((\"host\" => \"127.0.0.1\", \"port\" => {default_port})))\n}}\n"
        );
        if routes.is_empty() {
            conf.push_str(&format!("$HTTP[\"url\"] =~ \"^/\" {fallback}"));
        } else {
            conf.push_str(&format!("else {fallback}"));
        }
        let config = dir.path().join("lighttpd.conf");
        std::fs::write(&config, conf).unwrap();
        let child = Command::new(&lighttpd)
            .args(["-D", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lighttpd starts");
        crate::wait_for_port(443);
        Front {
            _sentinel: Sentinel::watch(child.id()),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's server: where `make test` installs it (a virtualenv in
/// `~/.cache/imageauto/moto`), `$IMAGEAUTO_MOTO_SERVER`, or PATH.
pub fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("IMAGEAUTO_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cache/imageauto/moto/bin/moto_server");
        if p.is_file() {
            return p;
        }
    }
    require_tool(
        "moto_server",
        "moto[server] (make moto: a virtualenv in ~/.cache/imageauto/moto)",
    )
}

/// moto's server on 127.0.0.1 (AWS's APIs: STS, ECR). Stopped when dropped.
pub struct Moto {
    pub port: u16,
    child: Child,
    _sentinel: Sentinel,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = moto_server();
        let (port, child) = start_on_free_port(|port| {
            Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts")
        });
        Moto {
            port,
            _sentinel: Sentinel::watch(child.id()),
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where [`tls_env`] leaves the certificate for the child.
const TLS_DIR: &str = "IMAGEAUTO_TEST_TLS_DIR";

/// For a test whose child needs TLS at the clouds' names with a CA its
/// clients trust from the start (`SSL_CERT_FILE` is read once): made in
/// the parent, before [`isolated`], into `dir`; the environment to give
/// the child. The child gets the certificate back with [`tls_from_env`].
pub fn tls_env(names: &[&str], dir: &Path) -> Vec<(&'static str, String)> {
    let tls = tls_for(names);
    std::fs::write(dir.join("ca.pem"), &tls.ca_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &tls.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &tls.key_pem).unwrap();
    vec![
        ("SSL_CERT_FILE", dir.join("ca.pem").display().to_string()),
        (TLS_DIR, dir.display().to_string()),
    ]
}

/// In the child: the certificate [`tls_env`] made.
pub fn tls_from_env() -> Tls {
    let dir =
        PathBuf::from(std::env::var_os(TLS_DIR).expect("tls_env gave the child its certificate"));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    Tls {
        ca_pem: read("ca.pem"),
        cert_pem: read("cert.pem"),
        key_pem: read("key.pem"),
    }
}
