//! Real Git servers on 127.0.0.1: `git daemon --enable=receive-pack`, `sshd`
//! with a deploy key, and `git http-backend` behind lighttpd with basic auth
//! over TLS. Each stops when dropped.

use crate::registry::Tls;
use crate::{Sentinel, require_tool, start_on_free_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Runs git with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn git_text(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git(dir, args).stdout)
        .trim()
        .to_string()
}

/// A folder of bare repositories, seeded from the files given.
pub struct Repos {
    pub dir: tempfile::TempDir,
}

impl Repos {
    pub fn new() -> Repos {
        Repos {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Creates `name.git` with one commit on `main` holding `files`.
    pub fn create(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let bare = self.dir.path().join(format!("{name}.git"));
        git(
            self.dir.path(),
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(&bare, &["config", "receive.advertisePushOptions", "true"]);
        git(&bare, &["config", "http.receivepack", "true"]);
        let seed = tempfile::tempdir().unwrap();
        git(seed.path(), &["init", "-q", "-b", "main"]);
        for (path, content) in files {
            let p = seed.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(seed.path(), &["add", "."]);
        git(seed.path(), &["commit", "-qm", "seed"]);
        git(seed.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
        bare
    }

    /// Installs a hook script (`pre-receive`, ...) in a bare repository.
    pub fn hook(bare: &Path, name: &str, script: &str) {
        let p = bare.join("hooks").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Default for Repos {
    fn default() -> Self {
        Self::new()
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `git daemon --enable=receive-pack` serving a folder. The daemon's own
/// program is run (`git daemon` would run it as a child of its own, which
/// outlives a kill of `git`).
pub struct GitDaemon {
    pub port: u16,
    child: Child,
    _sentinel: Sentinel,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        require_tool("git", "git");
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git runs");
        let daemon =
            PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        assert!(daemon.exists(), "no {}", daemon.display());
        let (port, child) = start_on_free_port(|port| {
            Command::new(&daemon)
                .args([
                    "--export-all",
                    "--enable=receive-pack",
                    "--listen=127.0.0.1",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("git daemon starts")
        });
        GitDaemon {
            port,
            _sentinel: Sentinel::watch(child.id()),
            child,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// An SSH key pair made with ssh-keygen.
pub struct SshKey {
    pub private: String,
    pub public: String,
}

impl SshKey {
    pub fn new(kind: &str) -> SshKey {
        let keygen = require_tool("ssh-keygen", "openssh-client");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let out = Command::new(keygen)
            .args(["-q", "-t", kind, "-N", "", "-C", "imageauto-test", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SshKey {
            private: std::fs::read_to_string(&path).unwrap(),
            public: std::fs::read_to_string(path.with_extension("pub")).unwrap(),
        }
    }
}

/// sshd on a high port, accepting one deploy key for the current user.
pub struct Sshd {
    pub port: u16,
    pub host_key: SshKey,
    pub user: String,
    child: Child,
    _sentinel: Sentinel,
    _dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start(deploy_key_pub: &str) -> Sshd {
        let sshd = require_tool("sshd", "openssh-server");
        let dir = tempfile::tempdir().unwrap();
        let host_key = SshKey::new("ed25519");
        let hk = dir.path().join("host_key");
        std::fs::write(&hk, &host_key.private).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let auth = dir.path().join("authorized_keys");
        std::fs::write(&auth, deploy_key_pub).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let config = dir.path().join("sshd_config");
        let settings = format!(
            "ListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel ERROR\n",
            hk.display(),
            auth.display(),
            dir.path().join("sshd.pid").display()
        );
        // Privilege separation needs this folder.
        let _ = std::fs::create_dir_all("/run/sshd");
        let (port, child) = start_on_free_port(|port| {
            std::fs::write(&config, format!("Port {port}\n{settings}")).unwrap();
            Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sshd starts")
        });
        Sshd {
            port,
            host_key,
            user,
            _sentinel: Sentinel::watch(child.id()),
            child,
            _dir: dir,
        }
    }

    /// The known_hosts line for this server.
    pub fn known_hosts(&self) -> String {
        let mut parts = self.host_key.public.split_whitespace();
        let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    pub fn url(&self, bare: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            bare.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// `git http-backend` behind lighttpd, with basic auth, over TLS.
pub struct HttpsGit {
    pub port: u16,
    /// lighttpd's user file (`user:password` lines), read at each request:
    /// rewrite it to change the credentials it takes.
    pub users: std::path::PathBuf,
    child: Child,
    _sentinel: Sentinel,
    _dir: tempfile::TempDir,
}

impl HttpsGit {
    pub fn start(repos: &Path, user: &str, password: &str, tls: &Tls) -> HttpsGit {
        Self::start_with_api(repos, user, password, tls, None)
    }

    /// [`HttpsGit::start`], with `/api/` passed on to a forge's API on
    /// `api_port` (a stand-in on 127.0.0.1), as a forge serves both on
    /// one host.
    pub fn start_with_api(
        repos: &Path,
        user: &str,
        password: &str,
        tls: &Tls,
        api_port: Option<u16>,
    ) -> HttpsGit {
        let lighttpd = require_tool("lighttpd", "lighttpd lighttpd-mod-openssl");
        let backend = require_tool("git-http-backend", "git");
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("server.pem");
        std::fs::write(&pem, format!("{}{}", tls.cert_pem, tls.key_pem)).unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, format!("{user}:{password}\n")).unwrap();
        let config = dir.path().join("lighttpd.conf");
        let settings = format!(
            r#"server.modules = ("mod_access", "mod_alias", "mod_auth", "mod_authn_file", "mod_cgi", "mod_setenv", "mod_openssl", "mod_proxy")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.errorlog = "{log}"
ssl.engine = "enable"
ssl.pemfile = "{pem}"
auth.backend = "plain"
auth.backend.plain.userfile = "{users}"
auth.require = ("/git" => ("method" => "basic", "realm" => "git-test", "require" => "valid-user"))
alias.url = ("/git" => "{backend}")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "{repos}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
"#,
            root = dir.path().display(),
            log = dir.path().join("error.log").display(),
            pem = pem.display(),
            users = users.display(),
            backend = backend.display(),
            repos = repos.display(),
        );
        let settings = match api_port {
            // The API's paths pass as sent (GitLab's project path is one
            // segment, `group%2Fproject`).
            Some(p) => format!(
                "{settings}server.http-parseopts = (\"url-normalize\" => \"disable\")\n$HTTP[\"url\"] =~ \"^/api/\" {{\n  proxy.server = (\"\" => ((\"host\" => \"127.0.0.1\", \"port\" => {p})))\n}}\n"
            ),
            None => settings,
        };
        let (port, child) = start_on_free_port(|port| {
            std::fs::write(&config, format!("server.port = {port}\n{settings}")).unwrap();
            Command::new(&lighttpd)
                .args(["-D", "-f"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("lighttpd starts")
        });
        HttpsGit {
            port,
            users,
            _sentinel: Sentinel::watch(child.id()),
            child,
            _dir: dir,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/git/{name}.git", self.port)
    }
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
