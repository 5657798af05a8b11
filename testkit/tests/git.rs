//! The Git module against real servers: git daemon, sshd with a deploy key
//! and known_hosts, git http-backend behind lighttpd with basic auth over TLS.
//! Pushes to a branch, to a new branch, with a refspec and options; a push a
//! hook refuses; a concurrent writer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automation::api::{GitRepositoryRef, ImageRef};
use automation::git::{self, GitAuth, GitError, Signature};
use automation::local::push::{Plan, execute, execute_with};
use imageauto_tests::git::{GitDaemon, HttpsGit, Repos, SshKey, Sshd, git, git_text};
use imageauto_tests::registry::Tls;
use std::collections::BTreeMap;
use std::path::Path;

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: ghcr.io/org/web:1.0.0 # {\"$imagepolicy\": \"apps:web\"}\n";

fn images(tag: &str) -> BTreeMap<String, ImageRef> {
    BTreeMap::from([(
        "apps:web".to_string(),
        ImageRef {
            name: "ghcr.io/org/web".into(),
            tag: tag.into(),
            digest: None,
        },
    )])
}

fn author() -> Signature {
    Signature {
        name: "imageauto".into(),
        email: "imageauto@example.com".into(),
    }
}

/// Fetch, resolve, commit the setters' result, push to `branch`.
fn round_trip(url: &str, auth: &GitAuth, branch: &str) -> Result<String, GitError> {
    let cache = tempfile::tempdir().unwrap();
    let repo = git::open_cache(cache.path(), url)?;
    git::fetch(&repo, url, auth, &[])?;
    let co = git::resolve(
        &repo,
        &GitRepositoryRef {
            branch: Some("main".into()),
            ..Default::default()
        },
        "origin",
    )?;
    let files = git::tree_files(&repo, co.commit, "", &|n| n.ends_with(".yaml"))?;
    let text = String::from_utf8(files[0].content.clone()).unwrap();
    let new = automation::setters::apply(&text, &images("2.0.0"))
        .unwrap()
        .text
        .unwrap();
    let commit = git::commit_files(
        &repo,
        co.commit,
        &[(files[0].path.clone(), new.into_bytes(), files[0].mode)],
        &author(),
        "Update web to 2.0.0",
        None,
    )?;
    repo.reference(&format!("refs/heads/{branch}"), commit, true, "test")
        .unwrap();
    git::push(
        &repo,
        url,
        auth,
        &[format!("refs/heads/{branch}:refs/heads/{branch}")],
        &BTreeMap::new(),
    )?;
    // A second run fetches into the same cache instead of cloning again.
    let again = git::open_cache(cache.path(), url)?;
    git::fetch(&again, url, auth, &[])?;
    assert!(
        again
            .find_reference(&format!("refs/remotes/origin/{branch}"))
            .is_ok()
    );
    Ok(commit.to_string())
}

fn shown(bare: &Path, rev: &str, path: &str) -> String {
    git_text(bare, &["show", &format!("{rev}:{path}")])
}

#[test]
fn git_daemon_push_to_branches_refspecs_and_options() {
    let repos = Repos::new();
    let bare = repos.create("fleet", &[("apps/web.yaml", DEPLOY)]);
    // The server records push options.
    Repos::hook(
        &bare,
        "pre-receive",
        "i=0; while [ $i -lt \"${GIT_PUSH_OPTION_COUNT:-0}\" ]; do eval echo \\$GIT_PUSH_OPTION_$i >> push-options; i=$((i+1)); done",
    );
    let daemon = GitDaemon::start(repos.dir.path());
    let url = daemon.url("fleet");
    let commit = round_trip(&url, &GitAuth::default(), "main").unwrap();
    assert_eq!(git_text(&bare, &["rev-parse", "main"]), commit);
    assert!(shown(&bare, "main", "apps/web.yaml").contains("web:2.0.0"));
    let log = git_text(
        &bare,
        &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "main"],
    );
    assert_eq!(
        log,
        "imageauto <imageauto@example.com>|imageauto <imageauto@example.com>|Update web to 2.0.0"
    );

    // A new branch, plus a refspec and push options, through the plan as
    // `reconcile --local --push` runs it.
    let checkout = tempfile::tempdir().unwrap();
    git(checkout.path(), &["clone", "-q", &url, "."]);
    git(checkout.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    let mut plan = Plan::without_automation(checkout.path(), checkout.path(), true);
    plan.branch = Some("flux-image-updates".into());
    plan.refspec = Some("refs/heads/flux-image-updates:refs/heads/release".into());
    plan.push_options = BTreeMap::from([
        ("ci.skip".to_string(), String::new()),
        ("topic".to_string(), "images".to_string()),
    ]);
    plan.author = Some(author());
    let out = execute(&plan, &images("3.0.0"), &GitAuth::default()).unwrap();
    assert!(out.pushed, "{out:?}");
    let pushed = out.commit.unwrap();
    assert_eq!(
        git_text(&bare, &["rev-parse", "flux-image-updates"]),
        pushed
    );
    assert_eq!(git_text(&bare, &["rev-parse", "release"]), pushed);
    // Built on the checkout (main's first commit), not on main's tip.
    assert!(shown(&bare, "flux-image-updates", "apps/web.yaml").contains("web:3.0.0"));
    let options = std::fs::read_to_string(bare.join("push-options")).unwrap();
    assert!(
        options.contains("ci.skip") && options.contains("topic=images"),
        "{options}"
    );
    // The user's checkout stays on its branch, untouched.
    assert_eq!(
        git_text(checkout.path(), &["rev-parse", "--abbrev-ref", "HEAD"]),
        "main"
    );
    assert_eq!(git_text(checkout.path(), &["status", "--porcelain"]), "");

    // Nothing to change: no commit.
    let again = execute(&plan, &images("3.0.0"), &GitAuth::default()).unwrap();
    assert_eq!(again.commit, None);
}

#[test]
fn rejected_and_non_fast_forward_pushes_are_errors() {
    let repos = Repos::new();
    let bare = repos.create("fleet", &[("apps/web.yaml", DEPLOY)]);
    let daemon = GitDaemon::start(repos.dir.path());
    let url = daemon.url("fleet");
    Repos::hook(&bare, "pre-receive", "echo 'protected branch' >&2; exit 1");
    let e = round_trip(&url, &GitAuth::default(), "main").unwrap_err();
    assert!(matches!(e, GitError::Rejected { .. }), "{e}");
    assert!(e.to_string().contains("refs/heads/main"), "{e}");
    std::fs::remove_file(bare.join("hooks/pre-receive")).unwrap();

    // Someone pushes to main between our fetch and our push.
    let cache = tempfile::tempdir().unwrap();
    let repo = git::open_cache(cache.path(), &url).unwrap();
    git::fetch(&repo, &url, &GitAuth::default(), &[]).unwrap();
    let co = git::resolve(&repo, &GitRepositoryRef::default(), "origin").err();
    assert!(co.is_some(), "master does not exist: resolve must say so");
    let base = repo
        .find_reference("refs/remotes/origin/main")
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id();
    let other = tempfile::tempdir().unwrap();
    git(other.path(), &["clone", "-q", &url, "."]);
    std::fs::write(other.path().join("README"), "hello\n").unwrap();
    git(other.path(), &["add", "."]);
    git(other.path(), &["commit", "-qm", "concurrent"]);
    git(other.path(), &["push", "-q", "origin", "main"]);
    let commit = git::commit_files(
        &repo,
        base,
        &[("x.yaml".into(), b"a: 1\n".to_vec(), 0o100644)],
        &author(),
        "mine",
        None,
    )
    .unwrap();
    repo.reference("refs/heads/main", commit, true, "test")
        .unwrap();
    let e = git::push(
        &repo,
        &url,
        &GitAuth::default(),
        &["refs/heads/main:refs/heads/main".into()],
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(matches!(e, GitError::NonFastForward { .. }), "{e}");
}

#[test]
fn a_concurrent_writer_is_retried_on_the_new_tip() {
    let repos = Repos::new();
    let bare = repos.create("fleet", &[("apps/web.yaml", DEPLOY)]);
    let daemon = GitDaemon::start(repos.dir.path());
    let url = daemon.url("fleet");
    let checkout = tempfile::tempdir().unwrap();
    git(checkout.path(), &["clone", "-q", &url, "."]);
    let mut plan = Plan::without_automation(checkout.path(), checkout.path(), true);
    plan.branch = Some("auto".into());
    plan.author = Some(author());
    // `auto` exists on the remote: we build on it.
    git(checkout.path(), &["push", "-q", "origin", "main:auto"]);
    let writer = tempfile::tempdir().unwrap();
    git(writer.path(), &["clone", "-q", "-b", "auto", &url, "."]);
    let mut attempts = Vec::new();
    let out = execute_with(
        &plan,
        &images("4.0.0"),
        &GitAuth::default(),
        &mut |attempt| {
            attempts.push(attempt);
            if attempt == 0 {
                std::fs::write(writer.path().join("NOTES"), "concurrent\n").unwrap();
                git(writer.path(), &["add", "."]);
                git(writer.path(), &["commit", "-qm", "concurrent"]);
                git(writer.path(), &["push", "-q", "origin", "auto"]);
            }
        },
    )
    .unwrap();
    assert_eq!(attempts, [0, 1]);
    assert!(out.pushed);
    assert!(
        out.notes.iter().any(|n| n.contains("moved")),
        "{:?}",
        out.notes
    );
    // Our commit sits on top of the concurrent one, with both changes.
    assert_eq!(
        git_text(&bare, &["log", "-1", "--format=%s", "auto~1"]),
        "concurrent"
    );
    assert!(shown(&bare, "auto", "apps/web.yaml").contains("web:4.0.0"));
    assert_eq!(shown(&bare, "auto", "NOTES"), "concurrent");
}

#[test]
fn ssh_with_deploy_key_and_known_hosts() {
    let repos = Repos::new();
    let bare = repos.create("fleet", &[("apps/web.yaml", DEPLOY)]);
    let deploy = SshKey::new("ed25519");
    let sshd = Sshd::start(&deploy.public);
    let url = sshd.url(&bare);
    let auth = GitAuth {
        identity: Some(deploy.private.clone()),
        identity_pub: Some(deploy.public.clone()),
        known_hosts: Some(sshd.known_hosts()),
        ..GitAuth::default()
    };
    let commit = round_trip(&url, &auth, "main").unwrap();
    assert_eq!(git_text(&bare, &["rev-parse", "main"]), commit);

    // A host key that is not the server's: refused, and said so.
    let other = SshKey::new("ed25519");
    let mut parts = other.public.split_whitespace();
    let wrong = GitAuth {
        known_hosts: Some(format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        )),
        ..auth.clone()
    };
    let e = round_trip(&url, &wrong, "main").unwrap_err();
    assert!(matches!(e, GitError::HostKey { .. }), "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");
    // A host known_hosts does not list.
    let unknown = GitAuth {
        known_hosts: Some("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOm2\n".into()),
        ..auth.clone()
    };
    let e = round_trip(&url, &unknown, "main").unwrap_err();
    assert!(e.to_string().contains("not in known_hosts"), "{e}");
    // A key the server does not accept.
    let stranger = SshKey::new("ed25519");
    let bad = GitAuth {
        identity: Some(stranger.private.clone()),
        identity_pub: Some(stranger.public.clone()),
        ..auth.clone()
    };
    let e = round_trip(&url, &bad, "main").unwrap_err();
    assert!(
        matches!(e, GitError::Auth { .. } | GitError::Remote { .. }),
        "{e}"
    );
    assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
}

#[test]
fn https_with_basic_auth_and_a_ca() {
    let repos = Repos::new();
    let bare = repos.create("fleet", &[("apps/web.yaml", DEPLOY)]);
    let tls = Tls::new("git test CA");
    let server = HttpsGit::start(repos.dir.path(), "bot", "s3cret-pass", &tls);
    let url = server.url("fleet");
    let auth = GitAuth {
        username: Some("bot".into()),
        password: Some("s3cret-pass".into()),
        ca_pem: Some(tls.ca_pem.clone().into_bytes()),
        ..GitAuth::default()
    };
    let commit = round_trip(&url, &auth, "main").unwrap();
    assert_eq!(git_text(&bare, &["rev-parse", "main"]), commit);
    let wrong = GitAuth {
        password: Some("nope-nope".into()),
        ..auth.clone()
    };
    let e = round_trip(&url, &wrong, "main").unwrap_err();
    assert!(!e.to_string().contains("nope-nope"), "{e}");
    assert!(
        matches!(e, GitError::Auth { .. } | GitError::Remote { .. }),
        "{e}"
    );
    // A password written in the URL that the server refuses: said plainly,
    // and neither the password nor the user shows.
    let in_url = url.replacen("https://", "https://bot:wr0ng-pass@", 1);
    let e = round_trip(
        &in_url,
        &GitAuth {
            username: None,
            password: None,
            ..auth.clone()
        },
        "main",
    )
    .unwrap_err();
    assert!(matches!(e, GitError::Auth { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("refused the user name and password written in the URL"),
        "{e}"
    );
    assert!(!e.to_string().contains("wr0ng-pass"), "{e}");
    assert!(!e.to_string().contains("failed to acquire"), "{e}");
    let other_ca = Tls::new("another CA");
    let untrusted = GitAuth {
        ca_pem: Some(other_ca.ca_pem.into_bytes()),
        ..auth.clone()
    };
    let e = round_trip(&url, &untrusted, "main").unwrap_err();
    assert!(e.to_string().contains("not trusted"), "{e}");
}
