//! Real signers' and verifiers' tools for commit signatures: Debian's GnuPG
//! (keys made with `gpg --quick-gen-key` in a GNUPGHOME of their own, and
//! `git verify-commit` through it) and OpenSSH's `ssh-keygen` (keys, and
//! `git verify-commit` with `gpg.format=ssh` and an allowed-signers file).

use crate::require_tool;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The user id (and SSH principal) of the test keys.
pub const SIGNER_EMAIL: &str = "bot@example.com";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A GNUPGHOME of its own; its gpg-agent is stopped when dropped.
pub struct Gpg {
    pub home: tempfile::TempDir,
}

impl Default for Gpg {
    fn default() -> Self {
        Self::new()
    }
}

impl Gpg {
    pub fn new() -> Gpg {
        require_tool("gpg", "gnupg");
        // gpg-agent's socket path must stay short: a folder under /tmp.
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
        ]);
        c
    }

    /// Makes a key (`algo`: rsa3072, ed25519, nistp256; `usage`: sign or
    /// cert; `expire`: never, 1d, seconds=N) and returns its fingerprint.
    /// `faked_time` (`20200101T000000`) makes it in the past.
    pub fn generate(
        &self,
        algo: &str,
        usage: &str,
        expire: &str,
        passphrase: Option<&str>,
        faked_time: Option<&str>,
    ) -> String {
        let mut c = self.cmd();
        c.args(["--passphrase", passphrase.unwrap_or("")]);
        if let Some(t) = faked_time {
            c.arg("--faked-system-time").arg(format!("{t}!"));
        }
        c.args([
            "--quick-gen-key",
            &format!("Bot <{SIGNER_EMAIL}>"),
            algo,
            usage,
            expire,
        ]);
        run(&mut c);
        let out = run(self.cmd().args(["--with-colons", "--list-secret-keys"]));
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        // The primary key's fingerprint follows its `sec` line; the newest
        // key comes last.
        let mut fpr = None;
        let mut after_sec = false;
        for l in listing.lines() {
            if l.starts_with("sec:") {
                after_sec = true;
            } else if after_sec && l.starts_with("fpr:") {
                fpr = l.split(':').nth(9).map(str::to_string);
                after_sec = false;
            }
        }
        fpr.expect("a fingerprint")
    }

    /// The armored secret key, protected by the passphrase it has.
    pub fn export_secret(&self, fingerprint: &str, passphrase: Option<&str>) -> String {
        let out = run(self.cmd().args([
            "--passphrase",
            passphrase.unwrap_or(""),
            "--armor",
            "--export-secret-keys",
            fingerprint,
        ]));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn export_public(&self, fingerprint: &str) -> String {
        let out = run(self.cmd().args(["--armor", "--export", fingerprint]));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn import(&self, armored: &str) {
        let f = self.home.path().join("import.asc");
        std::fs::write(&f, armored).unwrap();
        run(self.cmd().arg("--import").arg(&f));
    }

    /// Revokes the key with the revocation certificate gpg made with it.
    pub fn revoke(&self, fingerprint: &str) {
        let rev = self
            .home
            .path()
            .join("openpgp-revocs.d")
            .join(format!("{fingerprint}.rev"));
        let text = std::fs::read_to_string(&rev).unwrap();
        // gpg writes it with a ':' before the armor, against accidents.
        self.import(&text.replace(":-----BEGIN", "-----BEGIN"));
    }

    /// `git verify-commit REV` in `repo` against this keyring.
    pub fn verify_commit(&self, repo: &Path, rev: &str) -> Output {
        Command::new("git")
            .args(["-c", "gpg.program=gpg", "verify-commit", "-v", rev])
            .current_dir(repo)
            .env("GNUPGHOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An OpenSSH key pair made by ssh-keygen.
pub struct SshSigningKey {
    _dir: tempfile::TempDir,
    pub private: PathBuf,
    pub public: String,
}

impl SshSigningKey {
    /// `kind`: ed25519, ecdsa (P-256), rsa (3072 bits).
    pub fn new(kind: &str, passphrase: Option<&str>) -> SshSigningKey {
        require_tool("ssh-keygen", "openssh-client");
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("key");
        let mut c = Command::new("ssh-keygen");
        c.args([
            "-q",
            "-t",
            kind,
            "-C",
            SIGNER_EMAIL,
            "-N",
            passphrase.unwrap_or(""),
        ])
        .arg("-f")
        .arg(&private);
        match kind {
            "ecdsa" => {
                c.args(["-b", "256"]);
            }
            "rsa" => {
                c.args(["-b", "3072"]);
            }
            _ => {}
        }
        run(&mut c);
        let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
        SshSigningKey {
            _dir: dir,
            private,
            public: public.trim().to_string(),
        }
    }

    pub fn private_text(&self) -> String {
        std::fs::read_to_string(&self.private).unwrap()
    }

    /// `git verify-commit REV` with `gpg.format=ssh`, this key the only
    /// allowed signer (principal [`SIGNER_EMAIL`], namespace git).
    pub fn verify_commit(&self, repo: &Path, rev: &str) -> Output {
        let allowed = self._dir.path().join("allowed_signers");
        std::fs::write(
            &allowed,
            format!("{SIGNER_EMAIL} namespaces=\"git\" {}\n", self.public),
        )
        .unwrap();
        Command::new("git")
            .args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("gpg.ssh.allowedSignersFile={}", allowed.display()))
            .args(["verify-commit", "-v", rev])
            .current_dir(repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// The `gpgsig` header of a commit, as the object holds it (continuation
/// lines with their leading space).
pub fn gpgsig_header(repo: &Path, rev: &str) -> String {
    let out = run(Command::new("git")
        .args(["cat-file", "commit", rev])
        .current_dir(repo));
    let raw = String::from_utf8(out.stdout).unwrap();
    let mut header = String::new();
    let mut inside = false;
    for line in raw.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with("gpgsig ") {
            inside = true;
        } else if !line.starts_with(' ') {
            inside = false;
        }
        if inside {
            header.push_str(line);
            header.push('\n');
        }
    }
    header
}
