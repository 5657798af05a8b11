//! `kubectl imageauto reconcile --local` end to end: a real registry, a real
//! Git server, a checkout holding Flux manifests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{GitDaemon, Repos, git, git_text};
use imageauto_tests::registry::{Auth, Pusher, Registry};
use std::path::Path;
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn reconcile(dir: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .args(["reconcile", "--local"])
        .args(extra)
        .current_dir(dir)
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

fn push_tags(reg: &Registry, repo: &str, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, None).push(repo, &tags, false));
}

fn config(reg: &str, extra_policy: &str) -> String {
    format!(
        r#"apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: flux-system}}
spec:
  interval: 1m
  url: git://example.invalid/fleet.git
  ref: {{branch: main}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: flux-system}}
spec:
  image: {reg}/team/web
  interval: 5m
  insecure: true
---
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImagePolicy
metadata: {{name: web, namespace: flux-system}}
spec:
  imageRepositoryRef: {{name: web}}
  policy:
    semver:
      range: '>=1.0.0 <2.0.0'
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: api, namespace: flux-system}}
spec:
  image: {reg}/team/api
  interval: 5m
  insecure: true
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: api, namespace: flux-system}}
spec:
  imageRepositoryRef: {{name: api}}
  filterTags:
    pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$'
    extract: '$ts'
  policy:
    numerical: {{order: asc}}
{extra_policy}---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: fleet, namespace: flux-system}}
spec:
  interval: 30m
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    checkout: {{ref: {{branch: main}}}}
    commit:
      author: {{name: imageauto, email: imageauto@example.com}}
      messageTemplate: 'Update images'
    push: {{branch: flux-image-updates}}
  update: {{path: ./apps, strategy: Setters}}
"#
    )
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: apps\n\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: REG/team/web:1.0.0 # {\"$imagepolicy\": \"flux-system:web\"}\n";
const API: &str = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: api, namespace: apps}\nspec:\n  values:\n    image:\n      repository: REG/team/api # {\"$imagepolicy\": \"flux-system:api:name\"}\n      tag: main-0000000-1 # {\"$imagepolicy\": \"flux-system:api:tag\"}\n";

struct World {
    reg: Registry,
    _daemon: GitDaemon,
    repos: Repos,
    bare: std::path::PathBuf,
    checkout: tempfile::TempDir,
}

fn world(extra_policy: &str) -> World {
    let reg = Registry::start(Auth::Anonymous, None);
    push_tags(
        &reg,
        "team/web",
        &["1.0.0", "1.2.3", "1.10.0", "2.0.0-rc.1", "v1.3.0", "2.0.0"],
    );
    push_tags(
        &reg,
        "team/api",
        &[
            "main-abc1234-1700000000",
            "main-def5678-1700000500",
            "main-0a1b2c3-999",
            "latest",
        ],
    );
    let host = reg.host();
    let repos = Repos::new();
    let bare = repos.create(
        "fleet",
        &[
            ("clusters/prod/images.yaml", &config(&host, extra_policy)),
            ("apps/web.yaml", &WEB.replace("REG", &host)),
            ("apps/api.yaml", &API.replace("REG", &host)),
        ],
    );
    let daemon = GitDaemon::start(repos.dir.path());
    let checkout = tempfile::tempdir().unwrap();
    git(checkout.path(), &["clone", "-q", &daemon.url("fleet"), "."]);
    World {
        reg,
        _daemon: daemon,
        repos,
        bare,
        checkout,
    }
}

#[test]
fn push_to_the_automation_branch() {
    let w = world("");
    let out = reconcile(w.checkout.path(), &["--push"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let host = w.reg.host();
    assert!(
        stdout.contains(&format!("flux-system:web  {host}/team/web:1.10.0")),
        "{stdout}"
    );
    assert!(stdout.contains("apps/api.yaml:8"), "{stdout}");
    assert!(stderr.contains("pushed to flux-image-updates"), "{stderr}");
    let web = git_text(&w.bare, &["show", "flux-image-updates:apps/web.yaml"]);
    assert_eq!(
        web,
        WEB.replace("REG", &host)
            .replace("web:1.0.0", "web:1.10.0")
            .trim_end()
    );
    let api = git_text(&w.bare, &["show", "flux-image-updates:apps/api.yaml"]);
    assert!(api.contains("tag: main-def5678-1700000500 #"), "{api}");
    let log = git_text(
        &w.bare,
        &["log", "-1", "--format=%an <%ae>%n%B", "flux-image-updates"],
    );
    assert!(
        log.starts_with("imageauto <imageauto@example.com>\nUpdate images"),
        "{log}"
    );
    // main is untouched, and so is the checkout.
    assert_eq!(
        git_text(&w.bare, &["rev-parse", "main"]),
        git_text(w.checkout.path(), &["rev-parse", "HEAD"])
    );
    assert_eq!(git_text(w.checkout.path(), &["status", "--porcelain"]), "");
    // A second run finds nothing to do and makes no commit.
    let before = git_text(&w.bare, &["rev-parse", "flux-image-updates"]);
    let out = reconcile(w.checkout.path(), &["--push"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing to change"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        git_text(&w.bare, &["rev-parse", "flux-image-updates"]),
        before
    );
    drop(w.repos);
}

#[test]
fn dry_run_write_and_commit() {
    let w = world("");
    let out = reconcile(w.checkout.path(), &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("--- a/apps/web.yaml"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(git_text(w.checkout.path(), &["status", "--porcelain"]), "");
    // Default: write the files.
    let out = reconcile(w.checkout.path(), &["-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = v["automations"][0]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{v}");
    assert_eq!(v["policies"][1]["latestRef"]["tag"], "1.10.0", "{v}");
    let status = git_text(w.checkout.path(), &["status", "--porcelain"]);
    assert!(
        status.contains("M apps/web.yaml") && status.contains("M apps/api.yaml"),
        "{status}"
    );
    git(w.checkout.path(), &["checkout", "-q", "--", "."]);
    // --commit: a commit on the push branch, not pushed.
    let out = reconcile(w.checkout.path(), &["--commit"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let local = git_text(
        w.checkout.path(),
        &["log", "-1", "--format=%s", "flux-image-updates"],
    );
    assert_eq!(local, "Update images");
    let remote_branches = git_text(&w.bare, &["branch", "--list"]);
    assert!(
        !remote_branches.contains("flux-image-updates"),
        "{remote_branches}"
    );
}

#[test]
fn one_failure_does_not_stop_the_rest() {
    let broken = "---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {name: gone, namespace: flux-system}\nspec: {image: 127.0.0.1:1/nothing/here, interval: 5m, insecure: true}\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: gone, namespace: flux-system}\nspec:\n  imageRepositoryRef: {name: gone}\n  policy: {semver: {range: '*'}}\n";
    let w = world(broken);
    let out = reconcile(w.checkout.path(), &["--push"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ImageRepository flux-system/gone") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
    // The working policies were still applied and pushed.
    let web = git_text(&w.bare, &["show", "flux-image-updates:apps/web.yaml"]);
    assert!(web.contains("web:1.10.0"), "{web}");
}

#[test]
fn without_an_automation_every_marker_is_updated() {
    let w = world("");
    let images = w.checkout.path().join("clusters/prod/images.yaml");
    let text_now = std::fs::read_to_string(&images).unwrap();
    let cut = text_now
        .find("---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageUpdateAutomation")
        .unwrap();
    std::fs::write(&images, &text_now[..cut]).unwrap();
    let out = reconcile(w.checkout.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let web = std::fs::read_to_string(w.checkout.path().join("apps/web.yaml")).unwrap();
    assert!(web.contains("web:1.10.0"), "{web}");
}

#[test]
fn an_update_path_outside_the_checkout_is_refused() {
    let w = world("");
    let images = w.checkout.path().join("clusters/prod/images.yaml");
    let t = std::fs::read_to_string(&images)
        .unwrap()
        .replace("path: ./apps", "path: ../../etc");
    std::fs::write(&images, t).unwrap();
    let out = reconcile(w.checkout.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("spec.update.path"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn committing_on_the_branch_checked_out_updates_the_checkout() {
    let w = world("");
    let images = w.checkout.path().join("clusters/prod/images.yaml");
    let t = std::fs::read_to_string(&images)
        .unwrap()
        .replace("push: {branch: flux-image-updates}", "push: {branch: main}");
    std::fs::write(&images, t).unwrap();
    git(w.checkout.path(), &["commit", "-qam", "push to main"]);
    // A local change to a file the automation would touch: refused, nothing moves.
    let web = w.checkout.path().join("apps/web.yaml");
    let original = std::fs::read_to_string(&web).unwrap();
    std::fs::write(&web, format!("{original}# local edit\n")).unwrap();
    let head = git_text(w.checkout.path(), &["rev-parse", "HEAD"]);
    let out = reconcile(w.checkout.path(), &["--commit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("apps/web.yaml has uncommitted changes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(git_text(w.checkout.path(), &["rev-parse", "HEAD"]), head);
    std::fs::write(&web, &original).unwrap();
    // Clean: the commit lands on main and the checkout follows it.
    let out = reconcile(w.checkout.path(), &["--push"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(git_text(w.checkout.path(), &["status", "--porcelain"]), "");
    assert_ne!(git_text(w.checkout.path(), &["rev-parse", "HEAD"]), head);
    assert!(
        std::fs::read_to_string(&web)
            .unwrap()
            .contains("web:1.10.0")
    );
    assert_eq!(
        git_text(&w.bare, &["rev-parse", "main"]),
        git_text(w.checkout.path(), &["rev-parse", "HEAD"])
    );
}

#[test]
fn a_new_push_branch_starts_from_the_checkout_reference() {
    let w = world("");
    // The user works on a branch of their own; the automation checks out main.
    git(w.checkout.path(), &["checkout", "-q", "-b", "feature"]);
    std::fs::write(w.checkout.path().join("NOTES.md"), "work in progress\n").unwrap();
    git(w.checkout.path(), &["add", "."]);
    git(w.checkout.path(), &["commit", "-qm", "feature work"]);
    let out = reconcile(w.checkout.path(), &["--push"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let parent = git_text(&w.bare, &["rev-parse", "flux-image-updates~1"]);
    assert_eq!(parent, git_text(&w.bare, &["rev-parse", "main"]));
    assert_eq!(
        git_text(w.checkout.path(), &["rev-parse", "--abbrev-ref", "HEAD"]),
        "feature"
    );
}

#[test]
fn suspended_objects_are_skipped_not_failed() {
    let w = world("");
    let images = w.checkout.path().join("clusters/prod/images.yaml");
    let t = std::fs::read_to_string(&images).unwrap().replace(
        "metadata: {name: api, namespace: flux-system}\nspec:\n  imageRepositoryRef: {name: api}",
        "metadata: {name: api, namespace: flux-system}\nspec:\n  suspend: true\n  imageRepositoryRef: {name: api}",
    );
    std::fs::write(&images, t).unwrap();
    let out = reconcile(w.checkout.path(), &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ImagePolicy flux-system:api is suspended"),
        "{stderr}"
    );
    let api = std::fs::read_to_string(w.checkout.path().join("apps/api.yaml")).unwrap();
    assert!(api.contains("main-0000000-1"), "{api}");
    let web = std::fs::read_to_string(w.checkout.path().join("apps/web.yaml")).unwrap();
    assert!(web.contains("web:1.10.0"), "{web}");
}

/// Refs of a bare repository, `name sha` per line.
fn refs(bare: &Path) -> String {
    git_text(bare, &["for-each-ref", "--format=%(refname) %(objectname)"])
}

#[test]
fn a_broken_automation_stops_itself_and_nothing_takes_its_place() {
    for (what, from, to) in [
        ("path outside", "path: ./apps", "path: ../.."),
        ("absolute path", "path: ./apps", "path: /etc"),
        (
            "unknown field",
            "strategy: Setters}",
            "strategy: Setters, strategyy: x}",
        ),
        (
            "template that does not parse",
            "messageTemplate: 'Update images'",
            "messageTemplate: 'Update {{ .Nope '",
        ),
    ] {
        let w = world("");
        let images = w.checkout.path().join("clusters/prod/images.yaml");
        let t = std::fs::read_to_string(&images).unwrap().replace(from, to);
        std::fs::write(&images, t).unwrap();
        git(w.checkout.path(), &["commit", "-qam", what]);
        git(w.checkout.path(), &["push", "-q", "origin", "main"]);
        let before = refs(&w.bare);
        let head = git_text(w.checkout.path(), &["rev-parse", "HEAD"]);
        let out = reconcile(w.checkout.path(), &["--push"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        // A path outside the checkout loads (Flux reads it from the root in
        // the cluster, and the loader warns), but the command line refuses
        // to run it.
        let refused = if what.contains("path") {
            "error: ImageUpdateAutomation flux-system/fleet: spec.update.path: "
        } else {
            "ImageUpdateAutomation flux-system/fleet: this ImageUpdateAutomation does not load"
        };
        assert!(stderr.contains(refused), "{what}: {stderr}");
        assert!(!stderr.contains("pushed to"), "{what}: {stderr}");
        // Nothing pushed, nothing committed, nothing written.
        assert_eq!(refs(&w.bare), before, "{what}");
        assert_eq!(git_text(w.checkout.path(), &["rev-parse", "HEAD"]), head);
        assert_eq!(git_text(w.checkout.path(), &["status", "--porcelain"]), "");
        assert_eq!(
            git_text(
                w.checkout.path(),
                &["branch", "--list", "flux-image-updates"]
            ),
            ""
        );
    }
}

#[test]
fn a_file_that_does_not_parse_may_hold_an_automation() {
    let w = world("");
    std::fs::write(
        w.checkout.path().join("clusters/prod/more.yaml"),
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageUpdateAutomation\nmetadata: {name: x\n",
    )
    .unwrap();
    // Without the valid automation, the broken file must not let every
    // marker be updated in its place.
    let images = w.checkout.path().join("clusters/prod/images.yaml");
    let t = std::fs::read_to_string(&images).unwrap();
    let cut = t
        .find("---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageUpdateAutomation")
        .unwrap();
    std::fs::write(&images, &t[..cut]).unwrap();
    let out = reconcile(w.checkout.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let web = std::fs::read_to_string(w.checkout.path().join("apps/web.yaml")).unwrap();
    assert!(web.contains("web:1.0.0"), "{web}");
}

#[test]
fn a_local_folder_remote_runs_its_hooks() {
    let w = world("");
    // A checkout whose origin is the bare repository's folder.
    let local = tempfile::tempdir().unwrap();
    git(
        local.path(),
        &["clone", "-q", w.bare.to_str().unwrap(), "."],
    );
    Repos::hook(
        &w.bare,
        "pre-receive",
        "echo 'protected: no pushes from bots' >&2\nexit 1",
    );
    let before = refs(&w.bare);
    let out = reconcile(local.path(), &["--push"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rejected"), "{stderr}");
    assert!(
        stderr.contains("protected: no pushes from bots"),
        "{stderr}"
    );
    assert!(!stderr.contains("pushed to"), "{stderr}");
    assert_eq!(refs(&w.bare), before);
    // A hook that accepts (and records that it ran): the push lands.
    let ran = w.repos.dir.path().join("hook-ran");
    Repos::hook(&w.bare, "pre-receive", &format!("cat > {}", ran.display()));
    let out = reconcile(local.path(), &["--push"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("pushed to flux-image-updates"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&ran)
            .unwrap()
            .contains("refs/heads/flux-image-updates")
    );
    let web = git_text(&w.bare, &["show", "flux-image-updates:apps/web.yaml"]);
    assert!(web.contains("web:1.10.0"), "{web}");
}

#[test]
fn a_git_server_that_never_answers_is_abandoned() {
    let w = world("");
    let stall = imageauto_tests::Stall::start(None);
    git(
        w.checkout.path(),
        &[
            "remote",
            "set-url",
            "origin",
            &format!("http://127.0.0.1:{}/fleet.git", stall.port),
        ],
    );
    let out = reconcile(w.checkout.path(), &["--push", "--git-timeout", "2s"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no progress for 2s"), "{stderr}");
}

#[test]
fn a_token_in_the_url_never_shows() {
    let w = world("");
    git(
        w.checkout.path(),
        &[
            "remote",
            "set-url",
            "origin",
            "https://ghp_S3CRETT0KEN@127.0.0.1:1/fleet.git",
        ],
    );
    for mode in [&["--push"][..], &["--push", "-o", "json"]] {
        let out = reconcile(w.checkout.path(), mode);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(!all.contains("S3CRETT0KEN"), "{all}");
        assert!(all.contains("https://***@127.0.0.1:1/fleet.git"), "{all}");
    }
}

#[test]
fn tags_outside_the_grammar_never_reach_a_file() {
    let server = imageauto_tests::registry::FakeServer::start(|_| {
        let body = serde_json::json!({"name": "team/evil", "tags": [
            "1.0.0", "1.2.0", "9.9.9\nimage: evil", "zz: x", "z\u{2028}", "\u{1b}[31mz",
        ]})
        .to_string();
        (200, vec![], body.into_bytes())
    });
    let extra = format!(
        "---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: evil, namespace: flux-system}}\nspec: {{image: 127.0.0.1:{}/team/evil, interval: 5m, insecure: true}}\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {{name: evil, namespace: flux-system}}\nspec:\n  imageRepositoryRef: {{name: evil}}\n  policy: {{alphabetical: {{order: asc}}}}\n",
        server.port
    );
    let w = world(&extra);
    std::fs::write(
        w.checkout.path().join("apps/evil.yaml"),
        "image:\n  tag: 1.0.0 # {\"$imagepolicy\": \"flux-system:evil:tag\"}\n",
    )
    .unwrap();
    let out = reconcile(w.checkout.path(), &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("4 tag(s) from the registry are not valid tags"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(w.checkout.path().join("apps/evil.yaml")).unwrap(),
        "image:\n  tag: 1.2.0 # {\"$imagepolicy\": \"flux-system:evil:tag\"}\n"
    );
}

fn reconcile_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(["reconcile", "--local"])
        .args(extra)
        .current_dir(dir)
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .env_remove("IMAGEAUTO_SIGNING_PASSPHRASE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn push_signed_with_an_openpgp_key_file() {
    use imageauto_tests::signing::Gpg;
    let w = world("");
    let gpg = Gpg::new();
    let fpr = gpg.generate("ed25519", "sign", "never", Some("open sesame"), None);
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("signing.asc");
    std::fs::write(&key, gpg.export_secret(&fpr, Some("open sesame"))).unwrap();
    let key = key.to_str().unwrap();
    // A wrong passphrase: exit 1, said clearly, the passphrase never
    // shown, nothing written or pushed.
    let before = refs(&w.bare);
    let out = reconcile_with_env(
        w.checkout.path(),
        &["--push", "--signing-key", key],
        &[("IMAGEAUTO_SIGNING_PASSPHRASE", "close sesame")],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "--signing-key {key}: the passphrase does not unlock the OpenPGP private key ($IMAGEAUTO_SIGNING_PASSPHRASE)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("close sesame") && !stdout.contains("close sesame"));
    assert_eq!(refs(&w.bare), before);
    assert_eq!(git_text(w.checkout.path(), &["status", "--porcelain"]), "");
    // No passphrase: said what to set.
    let out = reconcile_with_env(w.checkout.path(), &["--push", "--signing-key", key], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("none was given: set $IMAGEAUTO_SIGNING_PASSPHRASE"),
        "{}",
        text(&out.stderr)
    );
    // The right one: the pushed commit verifies.
    let out = reconcile_with_env(
        w.checkout.path(),
        &["--push", "--signing-key", key],
        &[("IMAGEAUTO_SIGNING_PASSPHRASE", "open sesame")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verified = gpg.verify_commit(&w.bare, "flux-image-updates");
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    assert!(text(&verified.stderr).contains("Good signature"));
}

#[test]
fn an_automation_that_names_a_signing_secret_signs_with_it_or_commits_nothing() {
    use base64::Engine;
    use imageauto_tests::signing::SshSigningKey;
    let w = world("");
    let images = w.checkout.path().join("clusters/prod/images.yaml");
    let t = std::fs::read_to_string(&images).unwrap().replace(
        "      messageTemplate: 'Update images'\n",
        "      messageTemplate: 'Update images'\n      signingKey: {secretRef: {name: commit-signing}}\n",
    );
    std::fs::write(&images, t).unwrap();
    // Without the key: refused, nothing pushed unsigned.
    let before = refs(&w.bare);
    let out = reconcile(w.checkout.path(), &["--push"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("spec.git.commit.signingKey names Secret flux-system/commit-signing"),
        "{stderr}"
    );
    assert_eq!(refs(&w.bare), before);
    // The Secret as a file: an SSH key under git.ssh, with its passphrase.
    let key = SshSigningKey::new("ecdsa", Some("pa55 phrase"));
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: commit-signing\n  namespace: flux-system\ndata:\n  git.ssh: {}\nstringData:\n  passphrase: pa55 phrase\n",
        base64::engine::general_purpose::STANDARD.encode(key.private_text())
    );
    let files = tempfile::tempdir().unwrap();
    let secret_file = files.path().join("secret.yaml");
    std::fs::write(&secret_file, secret).unwrap();
    let out = reconcile(
        w.checkout.path(),
        &["--push", "--signing-secret", secret_file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verified = key.verify_commit(&w.bare, "flux-image-updates");
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    // A wrong passphrase in the Secret: the automation fails with the
    // reason, the passphrase is not shown.
    let wrong = std::fs::read_to_string(&secret_file)
        .unwrap()
        .replace("pa55 phrase", "not it at all");
    std::fs::write(&secret_file, wrong).unwrap();
    // Showing or writing the changes commits nothing: no key needed.
    let out = reconcile(w.checkout.path(), &["--dry-run", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = reconcile(
        w.checkout.path(),
        &[
            "--commit",
            "-o",
            "json",
            "--signing-secret",
            secret_file.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["automations"][0]["reason"], "InvalidSigningKey", "{v}");
    assert!(
        v["automations"][0]["error"]
            .as_str()
            .unwrap()
            .contains("Secret flux-system/commit-signing: git.ssh: the passphrase does not unlock the SSH private key"),
        "{v}"
    );
    assert!(!stdout.contains("not it at all") && !stderr.contains("not it at all"));
}

/// Files are named as the user reaches them from the working directory, as
/// lint and set name them: the folder given, joined with the path under it;
/// from inside a subfolder, relative to it.
#[test]
fn paths_are_shown_from_the_working_directory() {
    let w = world("");
    let parent = w.checkout.path().parent().unwrap();
    let name = w.checkout.path().file_name().unwrap().to_str().unwrap();
    let out = Command::new(bin())
        .args(["reconcile", "--local", name, "--dry-run"])
        .current_dir(parent)
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{name}/apps/api.yaml:8")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("--- a/{name}/apps/api.yaml\n")),
        "{stdout}"
    );
    // From inside apps/, the whole checkout given as `..`.
    let out = Command::new(bin())
        .args(["reconcile", "--local", "..", "-o", "json", "--dry-run"])
        .current_dir(w.checkout.path().join("apps"))
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = v["automations"][0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["file"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"../apps/api.yaml"), "{v}");
}
