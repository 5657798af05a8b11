//! Signed commits through the engine, checked by the real verifiers: keys
//! made by Debian's GnuPG and OpenSSH's ssh-keygen, commits pushed to a git
//! daemon, and `git verify-commit` (gpg with the public key imported, or
//! `gpg.format=ssh` with an allowed-signers file) on what the server holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automation::api::plan::PushTarget;
use automation::api::{GitRepositoryRef, ImageRef};
use automation::engine::automation::{AutomationJob, run_blocking, run_blocking_with};
use automation::engine::update::CommitRequest;
use automation::git::{GitAuth, SignError, Signature, Signer};
use imageauto_tests::git::{GitDaemon, Repos, git, git_text};
use imageauto_tests::signing::{Gpg, SIGNER_EMAIL, SshSigningKey, gpgsig_header};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: ghcr.io/org/web:1.0.0 # {\"$imagepolicy\": \"apps:web\"}\n";

fn images(tag: &str) -> BTreeMap<String, ImageRef> {
    [(
        "apps:web".to_string(),
        ImageRef {
            name: "ghcr.io/org/web".into(),
            tag: tag.into(),
            digest: None,
        },
    )]
    .into()
}

struct World {
    _repos: Repos,
    bare: std::path::PathBuf,
    daemon: GitDaemon,
    cache: tempfile::TempDir,
}

fn world() -> World {
    let repos = Repos::new();
    let bare = repos.create("fleet", &[("apps/web/deploy.yaml", DEPLOY)]);
    let daemon = GitDaemon::start(repos.dir.path());
    World {
        _repos: repos,
        bare,
        daemon,
        cache: tempfile::tempdir().unwrap(),
    }
}

fn job(w: &World, branch: &str, signer: Option<Signer>) -> AutomationJob {
    AutomationJob {
        cache_dir: w.cache.path().to_path_buf(),
        url: w.daemon.url("fleet"),
        auth: GitAuth::default(),
        target: PushTarget {
            checkout: Some(GitRepositoryRef {
                branch: Some("main".into()),
                ..GitRepositoryRef::default()
            }),
            branch: branch.to_string(),
            refspec: None,
            options: BTreeMap::new(),
        },
        commit: CommitRequest {
            path: "apps".into(),
            author: Signature {
                name: "Bot".into(),
                email: SIGNER_EMAIL.into(),
            },
            template: None,
            values: BTreeMap::new(),
            automation: ("apps".into(), "fleet".into()),
            signer: signer.map(Arc::new),
        },
        images: images("2.0.0"),
        dry_run: false,
        index_markers: false,
        fence: Default::default(),
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The header as `git commit -S` writes it: the armor's lines, each after
/// the first indented by one space, the blank line kept as a lone space.
fn assert_git_shape(header: &str, label: &str, width: usize) {
    let lines: Vec<&str> = header.lines().collect();
    assert_eq!(
        lines[0],
        format!("gpgsig -----BEGIN {label}-----"),
        "{header}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        format!(" -----END {label}-----"),
        "{header}"
    );
    assert!(lines[1..].iter().all(|l| l.starts_with(' ')), "{header}");
    assert!(
        lines[1..].iter().all(|l| l.len() <= width + 1),
        "lines wider than {width}: {header}"
    );
    assert!(!header.contains('\r'));
}

/// A pushed branch's tip, with the file updated and a signature.
fn assert_pushed(w: &World, branch: &str) {
    let web = git_text(
        &w.bare,
        &["show", &format!("{branch}:apps/web/deploy.yaml")],
    );
    assert!(web.contains("web:2.0.0"), "{web}");
}

#[test]
fn openpgp_keys_of_each_type_sign_commits_that_git_verifies() {
    let w = world();
    let verifier = Gpg::new();
    for algo in ["rsa3072", "ed25519", "nistp256"] {
        for passphrase in [None, Some("correct horse battery")] {
            let gpg = Gpg::new();
            let fpr = gpg.generate(algo, "sign", "never", passphrase, None);
            let secret = gpg.export_secret(&fpr, passphrase);
            assert!(secret.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
            verifier.import(&gpg.export_public(&fpr));
            let signer =
                Signer::from_key(secret.as_bytes(), passphrase.map(str::as_bytes)).unwrap();
            assert_eq!(signer.public(), fpr, "{algo}");
            let branch = format!("auto-{algo}-{}", passphrase.is_some());
            let result = run_blocking(&job(&w, &branch, Some(signer))).unwrap();
            assert!(result.pushed, "{algo}");
            assert_pushed(&w, &branch);
            let out = verifier.verify_commit(&w.bare, &branch);
            let said = stderr(&out);
            assert!(out.status.success(), "{algo} {passphrase:?}: {said}");
            assert!(
                said.contains(&format!("Good signature from \"Bot <{SIGNER_EMAIL}>\"")),
                "{algo}: {said}"
            );
            assert!(said.contains(&fpr[fpr.len() - 16..]), "{algo}: {said}");
            assert_git_shape(&gpgsig_header(&w.bare, &branch), "PGP SIGNATURE", 64);
        }
    }
}

#[test]
fn the_header_has_the_shape_git_commit_dash_s_gives_it() {
    // A commit signed by git and gpg themselves, and one of ours, with the
    // same key: the same header shape, and both verify.
    let w = world();
    let gpg = Gpg::new();
    let fpr = gpg.generate("ed25519", "sign", "never", None, None);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["clone", "-q", &w.daemon.url("fleet"), "."]);
    let mut c = std::process::Command::new("git");
    c.current_dir(work.path())
        .env("GNUPGHOME", gpg.home.path())
        .args([
            "-c",
            "gpg.program=gpg",
            "-c",
            &format!("user.signingkey={fpr}"),
        ])
        .args([
            "-c",
            "user.name=Bot",
            "-c",
            &format!("user.email={SIGNER_EMAIL}"),
        ])
        .args(["commit", "-q", "-S", "--allow-empty", "-m", "by git"]);
    assert!(c.status().unwrap().success());
    let theirs = gpgsig_header(work.path(), "HEAD");
    let signer = Signer::from_key(gpg.export_secret(&fpr, None).as_bytes(), None).unwrap();
    run_blocking(&job(&w, "auto", Some(signer))).unwrap();
    let ours = gpgsig_header(&w.bare, "auto");
    assert_git_shape(&theirs, "PGP SIGNATURE", 64);
    assert_git_shape(&ours, "PGP SIGNATURE", 64);
    // Blank line after the armor header, a checksum line before the end.
    let second = |h: &str| h.lines().nth(1).unwrap().to_string();
    assert_eq!(second(&ours), second(&theirs));
    let crc = |h: &str| h.lines().rev().nth(1).unwrap().starts_with(" =");
    assert_eq!(crc(&ours), crc(&theirs), "{ours}\n{theirs}");
    assert!(gpg.verify_commit(&w.bare, "auto").status.success());
    assert!(gpg.verify_commit(work.path(), "HEAD").status.success());
}

#[test]
fn ssh_keys_of_each_type_sign_commits_that_git_verifies() {
    let w = world();
    for (kind, passphrase) in [
        ("ed25519", None),
        ("ecdsa", None),
        ("rsa", None),
        ("ed25519", Some("s3cret phrase")),
    ] {
        let key = SshSigningKey::new(kind, passphrase);
        let signer =
            Signer::from_key(key.private_text().as_bytes(), passphrase.map(str::as_bytes)).unwrap();
        let branch = format!("auto-{kind}-{}", passphrase.is_some());
        let result =
            run_blocking(&job(&w, &branch, Some(signer))).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(result.pushed);
        assert_pushed(&w, &branch);
        let out = key.verify_commit(&w.bare, &branch);
        let said = stderr(&out);
        assert!(out.status.success(), "{kind}: {said}");
        assert!(
            said.contains(&format!("Good \"git\" signature for {SIGNER_EMAIL}")),
            "{kind}: {said}"
        );
        // ssh-keygen -Y sign wraps at 70 columns.
        assert_git_shape(&gpgsig_header(&w.bare, &branch), "SSH SIGNATURE", 70);
        // Another key does not verify it.
        let other = SshSigningKey::new("ed25519", None);
        assert!(!other.verify_commit(&w.bare, &branch).status.success());
    }
}

#[test]
fn a_commit_made_again_after_the_branch_moved_is_signed_again() {
    let w = world();
    let url = w.daemon.url("fleet");
    git(&w.bare, &["branch", "auto", "main"]);
    let other = tempfile::tempdir().unwrap();
    git(other.path(), &["clone", "-q", &url, "."]);
    git(other.path(), &["checkout", "-q", "auto"]);
    let gpg = Gpg::new();
    let fpr = gpg.generate("ed25519", "sign", "never", Some("pw"), None);
    let signer =
        Signer::from_key(gpg.export_secret(&fpr, Some("pw")).as_bytes(), Some(b"pw")).unwrap();
    let ssh = SshSigningKey::new("ed25519", None);
    let ssh_signer = Signer::from_key(ssh.private_text().as_bytes(), None).unwrap();
    for (branch, signer) in [("auto", signer), ("auto-ssh", ssh_signer)] {
        if branch != "auto" {
            git(&w.bare, &["branch", branch, "main"]);
            git(other.path(), &["fetch", "-q", "origin"]);
            git(
                other.path(),
                &["checkout", "-q", "-b", branch, &format!("origin/{branch}")],
            );
        }
        let mut moved = 0;
        let result = run_blocking_with(&job(&w, branch, Some(signer)), &mut |attempt| {
            if attempt == 0 {
                std::fs::write(other.path().join("README"), format!("{branch}\n")).unwrap();
                git(other.path(), &["add", "README"]);
                git(other.path(), &["commit", "-qm", "other"]);
                git(other.path(), &["push", "-q", "origin", branch]);
                moved += 1;
            }
        })
        .unwrap();
        assert_eq!(moved, 1);
        assert!(result.pushed);
        assert!(
            result
                .notes
                .iter()
                .any(|n| n.contains("moved on the remote")),
            "{:?}",
            result.notes
        );
        // Ours is on top of the other writer's commit, and signed.
        let log = git_text(&w.bare, &["log", "--format=%s", branch]);
        assert_eq!(log.lines().nth(1), Some("other"), "{log}");
        let out = if branch == "auto" {
            gpg.verify_commit(&w.bare, branch)
        } else {
            ssh.verify_commit(&w.bare, branch)
        };
        assert!(out.status.success(), "{branch}: {}", stderr(&out));
    }
}

fn assert_nothing_pushed(bare: &Path, branch: &str) {
    assert!(
        git_text(bare, &["branch", "--list", branch]).is_empty(),
        "{branch} was pushed"
    );
}

#[test]
fn a_key_that_expires_before_the_commit_signs_nothing_and_nothing_is_pushed() {
    let w = world();
    let gpg = Gpg::new();
    // Expired long ago: refused when read.
    let old = gpg.generate("ed25519", "sign", "1d", None, Some("20200101T000000"));
    let e = Signer::from_key(gpg.export_secret(&old, None).as_bytes(), None).unwrap_err();
    assert!(matches!(e, SignError::Expired { .. }), "{e}");
    assert!(
        e.to_string().contains(&old) && e.to_string().contains("2020"),
        "{e}"
    );
    // Valid when read, expired when the commit is made: the commit is not
    // made, nothing is pushed, and the error says why.
    let gpg = Gpg::new();
    let fpr = gpg.generate("ed25519", "sign", "seconds=3", None, None);
    let signer = Signer::from_key(gpg.export_secret(&fpr, None).as_bytes(), None).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let e = run_blocking(&job(&w, "auto", Some(signer))).unwrap_err();
    assert_eq!((e.reason(), e.is_transient()), ("InvalidSigningKey", false));
    assert!(e.to_string().contains("expired"), "{e}");
    assert_nothing_pushed(&w.bare, "auto");
}

#[test]
fn wrong_passphrases_revoked_keys_and_keys_that_cannot_sign_are_refused() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("ed25519", "sign", "never", Some("the right one"), None);
    let secret = gpg.export_secret(&fpr, Some("the right one"));
    let e = Signer::from_key(secret.as_bytes(), Some(b"a wrong one")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the passphrase does not unlock the OpenPGP private key"
    );
    let e = Signer::from_key(secret.as_bytes(), None).unwrap_err();
    assert!(e.to_string().contains("protected by a passphrase"), "{e}");
    // Revoked with the certificate gpg made with the key.
    gpg.revoke(&fpr);
    let e = Signer::from_key(
        gpg.export_secret(&fpr, Some("the right one")).as_bytes(),
        Some(b"the right one"),
    )
    .unwrap_err();
    assert!(matches!(e, SignError::Revoked { .. }), "{e}");
    assert!(e.to_string().contains(&fpr), "{e}");
    // A primary key that only certifies, without a signing subkey.
    let gpg = Gpg::new();
    let cert = gpg.generate("ed25519", "cert", "never", None, None);
    let e = Signer::from_key(gpg.export_secret(&cert, None).as_bytes(), None).unwrap_err();
    assert!(matches!(e, SignError::CannotSign { .. }), "{e}");
    // The same, with a signing subkey added: the subkey signs.
    let out = gpg
        .cmd()
        .args([
            "--passphrase",
            "",
            "--quick-add-key",
            &cert,
            "ed25519",
            "sign",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let signer = Signer::from_key(gpg.export_secret(&cert, None).as_bytes(), None).unwrap();
    assert!(signer.description().contains("signing subkey"));
    let w = world();
    run_blocking(&job(&w, "auto", Some(signer))).unwrap();
    let out = gpg.verify_commit(&w.bare, "auto");
    assert!(out.status.success(), "{}", stderr(&out));
    // An SSH key with a wrong passphrase.
    let ssh = SshSigningKey::new("ed25519", Some("right"));
    let e = Signer::from_key(ssh.private_text().as_bytes(), Some(b"wrong")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the passphrase does not unlock the SSH private key"
    );
}
