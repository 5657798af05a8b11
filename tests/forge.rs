//! `reconcile --local --push --pull-request main`: pushes with a GitHub
//! App's installation token to the real `git http-backend` (behind
//! lighttpd, over TLS, taking only the newest token), and pull requests on
//! GitHub, GitLab and Gitea. The forges' APIs are stand-ins (no forge is
//! reachable here) that check what the real ones check: the App's JWT by
//! its public key, each forge's token header; every request is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::forge::{AppKey, StandIn, leaks, pem_body_lines};
use imageauto_tests::git::{HttpsGit, Repos, git, git_text};
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn push_tags(reg: &Registry, repo: &str, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, None).push(repo, &tags, true));
}

/// A registry with team/web, a fleet repository served by lighttpd over
/// TLS (`/api/` passed to `api_port` when given), and a checkout of it
/// whose origin is the HTTPS URL.
struct World {
    reg: Registry,
    bare: PathBuf,
    checkout: tempfile::TempDir,
    home: tempfile::TempDir,
    ca: PathBuf,
    git: HttpsGit,
    _repos: Repos,
    _tls: Tls,
}

const FILES: &str = r#"apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: web, namespace: flux-system}
spec: {image: REG/team/web, interval: 1h, insecure: true}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: web, namespace: flux-system}
spec:
  imageRepositoryRef: {name: web}
  policy: {semver: {range: '1.x'}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet, namespace: flux-system}
spec: {interval: 1m, url: 'URL', ref: {branch: main}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {name: fleet, namespace: flux-system}
spec:
  interval: 1h
  sourceRef: {kind: GitRepository, name: fleet}
  git:
    commit:
      author: {name: imageauto, email: imageauto@example.com}
      messageTemplate: "Update web\n\nAutomated image update.\n"
    push: {branch: image-updates}
  update: {path: ./apps, strategy: Setters}
"#;

impl World {
    fn new(user: &str, password: &str, api_port: Option<u16>) -> World {
        let reg = Registry::start(Auth::Anonymous, None);
        push_tags(&reg, "team/web", &["1.0.0", "1.1.0"]);
        let host = reg.host();
        let repos = Repos::new();
        let web = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: apps}}\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: {host}/team/web:1.0.0 # {{\"$imagepolicy\": \"flux-system:web\"}}\n"
        );
        // The URL is known once the server runs: the GitRepository's is
        // not used by a local run (it pushes to origin).
        let bare = repos.create(
            "fleet",
            &[
                ("apps/web.yaml", &web),
                (
                    "clusters/images.yaml",
                    &FILES
                        .replace("REG", &host)
                        .replace("URL", "https://git.example.com/git/fleet.git"),
                ),
            ],
        );
        let tls = Tls::new("git CA");
        let gitd = HttpsGit::start_with_api(repos.dir.path(), user, password, &tls, api_port);
        let checkout = tempfile::tempdir().unwrap();
        git(
            checkout.path(),
            &["clone", "-q", bare.to_str().unwrap(), "."],
        );
        git(
            checkout.path(),
            &["remote", "set-url", "origin", &gitd.url("fleet")],
        );
        let home = tempfile::tempdir().unwrap();
        let ca = home.path().join("ca.pem");
        std::fs::write(&ca, &tls.ca_pem).unwrap();
        World {
            reg,
            bare,
            checkout,
            home,
            ca,
            git: gitd,
            _repos: repos,
            _tls: tls,
        }
    }

    fn reconcile(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.args(["reconcile", "--local", "--push", "--pull-request", "main"])
            .arg("--git-ca-file")
            .arg(&self.ca)
            .args(extra)
            .current_dir(self.checkout.path())
            // No user's git configuration, credential helpers or keys.
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_PASSWORD")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn pushed_file(&self) -> String {
        git_text(&self.bare, &["show", "image-updates:apps/web.yaml"])
    }
}

fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn no_secrets(out: &str, secrets: &[String]) {
    if let Some(s) = leaks(out, secrets.iter().map(String::as_str)) {
        panic!("a secret ({s}…) is in the output:\n{out}");
    }
}

#[test]
fn a_github_app_pushes_then_one_pull_request_is_opened_and_updated() {
    let key = AppKey::new();
    // Git takes only the App's newest token once the App issued one.
    let w0 = World::new("nobody", "not-the-token", None);
    let app = StandIn::app(&key, &w0.git.users, Duration::from_secs(3600));
    let w = w0;
    let base = app.url();
    let flags = [
        "--github-app-id",
        "4242",
        "--github-app-installation-owner",
        "git",
        "--github-app-private-key",
        key.path.to_str().unwrap(),
        "--github-app-base-url",
        &base,
    ];
    let o = w.reconcile(&flags, &[]);
    let out = both(&o);
    assert!(o.status.success(), "{out}");
    assert!(w.pushed_file().contains("team/web:1.1.0"), "{out}");
    assert!(
        out.contains("pull request 7 opened: https://forge.example/git/fleet/pull/7"),
        "{out}"
    );
    assert!(app.jwt_problems().is_empty(), "{:?}", app.jwt_problems());
    let r = app.requests();
    let calls: Vec<(String, String, u16)> = r
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET".into(), "/orgs/git/installation".into(), 200),
            (
                "POST".into(),
                "/app/installations/99/access_tokens".into(),
                201
            ),
            (
                "GET".into(),
                "/repos/git/fleet/pulls?state=open&head=git%3Aimage-updates&base=main&per_page=100"
                    .into(),
                200
            ),
            ("POST".into(), "/repos/git/fleet/pulls".into(), 201),
        ]
    );
    let token = app.tokens()[0].clone();
    let create = &r[3];
    assert_eq!(
        create.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(create.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(create.header("x-github-api-version"), Some("2022-11-28"));
    let body = create.json();
    assert_eq!(body["head"], "image-updates");
    assert_eq!(body["base"], "main");
    assert_eq!(body["title"], "Update web");
    let text = body["body"].as_str().unwrap();
    assert!(text.starts_with("Automated image update."), "{text}");
    assert!(text.contains("`apps/web.yaml:9`"), "{text}");
    assert!(
        text.contains("team/web:1.1.0` | `flux-system:web`"),
        "{text}"
    );
    let mut secrets = pem_body_lines(&key.private_pem);
    secrets.push(token.clone());
    no_secrets(&out, &secrets);

    // A new tag: pushed again, the same pull request updated; the App
    // from its Secret's manifest this time, as `flux create secret
    // githubapp` writes it.
    push_tags(&w.reg, "team/web", &["1.2.0"]);
    let secret = w.home.path().join("github-app.json");
    std::fs::write(
        &secret,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "github-app", "namespace": "flux-system"},
            "stringData": {
                "githubAppID": "4242",
                "githubAppInstallationOwner": "git",
                "githubAppPrivateKey": key.private_pem,
                "githubAppBaseURL": base,
            }
        })
        .to_string(),
    )
    .unwrap();
    let o = w.reconcile(&["--github-app-secret", secret.to_str().unwrap()], &[]);
    let out = both(&o);
    assert!(o.status.success(), "{out}");
    assert!(w.pushed_file().contains("team/web:1.2.0"), "{out}");
    assert!(out.contains("pull request 7 updated"), "{out}");
    let r = app.requests();
    let last: Vec<(String, String)> = r[r.len() - 2..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(last[1], ("PATCH".into(), "/repos/git/fleet/pulls/7".into()));
    assert_eq!(app.pulls().len(), 1, "never a second pull request");
    assert!(app.pulls()[0].body.contains("team/web:1.2.0"));
    // Both tokens never show.
    secrets.extend(app.tokens());
    no_secrets(&out, &secrets);

    // The App's installation refused: a clear error, no push, no secret.
    app.set_refuse(true);
    push_tags(&w.reg, "team/web", &["1.3.0"]);
    let o = w.reconcile(&flags, &[]);
    let out = both(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("provider github: the GitHub App 4242"),
        "{out}"
    );
    assert!(out.contains("check githubAppID (4242)"), "{out}");
    assert!(!w.pushed_file().contains("1.3.0"));
    no_secrets(&out, &secrets);
    let j = w.reconcile(&[&flags[..], &["-o", "json"]].concat(), &[]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["automations"][0]["reason"], "AuthenticationFailed", "{v}");
}

#[test]
fn pull_requests_on_gitlab_gitea_and_github_with_the_git_token() {
    let token = "glpat-s3cret-forge-token";
    for (forge, create_path, list_path, update) in [
        (
            "gitlab",
            "/api/v4/projects/git%2Ffleet/merge_requests",
            "/api/v4/projects/git%2Ffleet/merge_requests?state=opened&source_branch=image-updates&target_branch=main",
            ("PUT", "/api/v4/projects/git%2Ffleet/merge_requests/7"),
        ),
        (
            "gitea",
            "/api/v1/repos/git/fleet/pulls",
            "/api/v1/repos/git/fleet/pulls?state=open&limit=50&page=1",
            ("PATCH", "/api/v1/repos/git/fleet/pulls/7"),
        ),
        (
            "github",
            "/api/v3/repos/git/fleet/pulls",
            "/api/v3/repos/git/fleet/pulls?state=open&head=git%3Aimage-updates&base=main&per_page=100",
            ("PATCH", "/api/v3/repos/git/fleet/pulls/7"),
        ),
    ] {
        let api = StandIn::start(None, Some(token));
        let w = World::new("bot", token, Some(api.port));
        let args = ["--forge", forge, "--git-username", "bot"];
        let env = [("GIT_PASSWORD", token)];
        let o = w.reconcile(&args, &env);
        let out = both(&o);
        assert!(o.status.success(), "{forge}: {out}");
        assert!(w.pushed_file().contains("team/web:1.1.0"), "{forge}: {out}");
        assert!(out.contains("pull request 7 opened"), "{forge}: {out}");
        let r = api.requests();
        let calls: Vec<(&str, &str, u16)> = r
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.status))
            .collect();
        assert_eq!(
            calls,
            [("GET", list_path, 200), ("POST", create_path, 201)],
            "{forge}"
        );
        let create = &r[1];
        match forge {
            "gitlab" => {
                assert_eq!(create.header("private-token"), Some(token));
                let b = create.json();
                assert_eq!(
                    (
                        b["source_branch"].as_str(),
                        b["target_branch"].as_str(),
                        b["title"].as_str()
                    ),
                    (Some("image-updates"), Some("main"), Some("Update web"))
                );
                assert!(b["description"].as_str().unwrap().contains("1.1.0"));
            }
            "gitea" => {
                assert_eq!(
                    create.header("authorization"),
                    Some(format!("token {token}").as_str())
                );
                let b = create.json();
                assert_eq!(
                    (b["head"].as_str(), b["base"].as_str()),
                    (Some("image-updates"), Some("main"))
                );
                assert!(b["body"].as_str().unwrap().contains("1.1.0"));
            }
            _ => {
                assert_eq!(
                    create.header("authorization"),
                    Some(format!("Bearer {token}").as_str())
                );
            }
        }
        no_secrets(&out, &[token.to_string()]);
        // Again after a new tag: updated, never a second.
        push_tags(&w.reg, "team/web", &["1.2.0"]);
        let o = w.reconcile(&args, &env);
        let out = both(&o);
        assert!(o.status.success(), "{forge}: {out}");
        let r = api.requests();
        let last = r.last().unwrap();
        assert_eq!(
            (last.method.as_str(), last.path.as_str()),
            update,
            "{forge}"
        );
        assert!(last.body.contains("1.2.0"), "{forge}: {}", last.body);
        assert_eq!(api.pulls().len(), 1, "{forge}");
        assert!(!r.iter().skip(2).any(|r| r.method == "POST"), "{forge}");
        no_secrets(&out, &[token.to_string()]);
    }
}

#[test]
fn an_unknown_forge_says_how_to_name_it_and_the_push_stands() {
    let w = World::new("bot", "pw-s3cret-1234", None);
    let o = w.reconcile(
        &["--git-username", "bot"],
        &[("GIT_PASSWORD", "pw-s3cret-1234")],
    );
    let out = both(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(w.pushed_file().contains("team/web:1.1.0"), "{out}");
    assert!(
        out.contains(
            "the push stands, but the pull request failed: cannot tell which forge serves 127.0.0.1"
        ),
        "{out}"
    );
    assert!(
        out.contains("give --forge github, gitlab or gitea"),
        "{out}"
    );
    no_secrets(&out, &["pw-s3cret-1234".to_string()]);
}

#[test]
fn app_flags_that_cannot_work_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    std::fs::write(&key, "-----BEGIN RSA PRIVATE KEY-----\ns3cret-key-body\n").unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(bin())
            .args(["reconcile", "--local", "--push"])
            .args(args)
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (o.status.code(), both(&o))
    };
    let (code, out) = run(&[
        "--github-app-id",
        "my-app",
        "--github-app-installation-id",
        "1",
        "--github-app-private-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("--github-app-id \"my-app\" is not an App id"),
        "{out}"
    );
    let (_, out) = run(&[
        "--github-app-id",
        "1",
        "--github-app-private-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        out.contains("give --github-app-installation-id or --github-app-installation-owner"),
        "{out}"
    );
    let (_, out) = run(&[
        "--github-app-id",
        "1",
        "--github-app-installation-owner",
        "org",
        "--github-app-private-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        out.contains("--github-app-private-key: not a PEM private key"),
        "{out}"
    );
    assert!(!out.contains("s3cret-key-body"), "{out}");
    // --pull-request needs --push.
    let o = Command::new(bin())
        .args(["reconcile", "--local", "--pull-request", "main"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
}
