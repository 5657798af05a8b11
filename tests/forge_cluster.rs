//! In the cluster: a GitRepository with `provider: github` and a GitHub App
//! Secret, an ImageUpdateAutomation annotated for pull requests. `serve`
//! pushes with the App's installation token to the real `git http-backend`
//! (which takes only the newest token), renews the token once it expired,
//! opens one pull request and updates it, and says so in an event, in the
//! `PullRequest` condition and in `get updates -o wide`; a refused exchange
//! is `AuthenticationFailed`. The App's API and the pull requests are a
//! stand-in that checks the JWT by the App's public key. No token or key
//! text reaches a status, an event, a log or the plugin's output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::forge::{AppKey, StandIn, leaks, pem_body_lines};
use imageauto_tests::git::{HttpsGit, Repos, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use imageauto_tests::serve::{Serve, wait_for};
use serde_json::Value;
use std::process::Command;
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

fn condition(v: &Value, type_: &str) -> Option<(String, String, String)> {
    v["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == type_).then(|| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

fn request(c: &Cluster, ns: &str, kind: &str, value: &str) {
    c.kubectl_ok(&[
        "-n",
        ns,
        "annotate",
        "--overwrite",
        kind,
        "web",
        &format!("reconcile.fluxcd.io/requestedAt={value}"),
    ]);
}

#[test]
fn a_github_app_pushes_renews_its_token_and_one_pull_request_is_opened_and_updated() {
    let c = Cluster::shared();
    c.install_crds();
    let ns = c.namespace("ghapp");
    let reg = Registry::start(Auth::Anonymous, None);
    push_tags(&reg, "team/web", &["1.0.0", "1.1.0"]);
    let host = reg.host();
    let repos = Repos::new();
    let file = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: apps}}\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: {host}/team/web:1.0.0 # {{\"$imagepolicy\": \"{ns}:web\"}}\n"
    );
    let bare = repos.create("fleet", &[("apps/web.yaml", &file)]);
    let tls = Tls::new("git CA");
    let gitd = HttpsGit::start(repos.dir.path(), "nobody", "not-a-token", &tls);
    let key = AppKey::new();
    // Short tokens: the second run must renew one.
    let app = StandIn::app(&key, &gitd.users, Duration::from_secs(5));
    c.apply(&app.app_secret(&ns, &key, &tls.ca_pem));
    c.apply(&format!(
        r#"apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {ns}}}
spec: {{interval: 1m, url: '{url}', ref: {{branch: main}}, provider: github, secretRef: {{name: github-app}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}}}
spec: {{image: {host}/team/web, interval: 1h, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: web, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: web}}
  policy: {{semver: {{range: '1.x'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata:
  name: web
  namespace: {ns}
  annotations: {{imageauto.dev/pull-request: main}}
spec:
  interval: 1h
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    commit:
      author: {{name: imageauto, email: imageauto@example.com}}
      messageTemplate: "Update web\n\nAutomated image update.\n"
    push: {{branch: image-updates}}
  update: {{path: ./apps, strategy: Setters}}
"#,
        url = gitd.url("fleet"),
    ));
    let serve = Serve::start(bin(), c, &["-n", &ns, "--leader-elect=false"]);
    let automation = || c.get_json(&["-n", &ns, "imageupdateautomation", "web"]);
    let explain = || {
        format!(
            "{}\n{:#?}\n{}",
            serde_json::to_string_pretty(&automation()).unwrap(),
            app.requests(),
            serve.logs()
        )
    };
    let pushed = || git_text(&bare, &["show", "image-updates:apps/web.yaml"]);
    // Pushed with the token, the pull request opened.
    let url = wait_for(
        Duration::from_secs(90),
        "the push and the pull request",
        || {
            let a = automation();
            let (status, reason, message) = condition(&a, "PullRequest")?;
            (status == "True" && reason == "PullRequestOpened").then_some(message)
        },
        explain,
    );
    assert_eq!(url, "https://forge.example/git/fleet/pull/7");
    assert!(pushed().contains("team/web:1.1.0"));
    assert!(app.jwt_problems().is_empty(), "{:?}", app.jwt_problems());
    assert_eq!(app.tokens().len(), 1);
    let opened = app
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/repos/git/fleet/pulls")
        .unwrap();
    assert_eq!(opened.json()["head"], "image-updates");
    assert_eq!(opened.json()["base"], "main");
    assert_eq!(opened.json()["title"], "Update web");
    // The event with its URL.
    let events = c.get_json(&["-n", &ns, "events"]);
    let event = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "PullRequestOpened")
        .unwrap_or_else(|| panic!("no PullRequestOpened event: {events}"));
    assert_eq!(event["type"], "Normal");
    let note = event["message"]
        .as_str()
        .or(event["note"].as_str())
        .unwrap();
    assert!(
        note.contains("opened pull request 7 from 'image-updates' into 'main': https://forge.example/git/fleet/pull/7"),
        "{note}"
    );
    // get updates -o wide shows it.
    let wide = Command::new(bin())
        .args(["get", "updates", "-n", &ns, "-o", "wide"])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&wide.stdout).into_owned();
    assert!(wide.status.success(), "{table}");
    assert!(
        table.lines().next().unwrap().ends_with("PULL REQUEST"),
        "{table}"
    );
    assert!(
        table.contains("https://forge.example/git/fleet/pull/7"),
        "{table}"
    );

    // The token expired (5 s): the next run asks for a new one before it
    // pushes (Git takes only the newest), and updates the same request.
    std::thread::sleep(Duration::from_secs(6));
    push_tags(&reg, "team/web", &["1.2.0"]);
    request(c, &ns, "imagerepository", "renew");
    wait_for(
        Duration::from_secs(90),
        "the second push and the update",
        || {
            let a = automation();
            let (status, reason, _) = condition(&a, "PullRequest")?;
            (pushed().contains("team/web:1.2.0")
                && status == "True"
                && reason == "PullRequestUpdated")
                .then_some(())
        },
        explain,
    );
    assert_eq!(app.tokens().len(), 2, "a second exchange after expiry");
    assert_eq!(app.pulls().len(), 1, "never a second pull request");
    assert!(app.pulls()[0].body.contains("team/web:1.2.0"));
    assert_eq!(
        app.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/repos/git/fleet/pulls")
            .count(),
        1
    );

    // The installation refused: AuthenticationFailed, naming the provider
    // and what to check; nothing pushed.
    app.set_refuse(true);
    std::thread::sleep(Duration::from_secs(5));
    push_tags(&reg, "team/web", &["1.3.0"]);
    request(c, &ns, "imagerepository", "refused");
    let (_, _, message) = wait_for(
        Duration::from_secs(90),
        "AuthenticationFailed",
        || {
            let a = automation();
            let ready = condition(&a, "Ready")?;
            (ready.1 == "AuthenticationFailed").then_some(ready)
        },
        explain,
    );
    assert!(
        message.starts_with(
            "failed configuring source manager: failed to configure authentication options: provider github: the GitHub App 4242"
        ),
        "{message}"
    );
    assert!(message.contains("check githubAppID (4242)"), "{message}");
    assert!(!pushed().contains("1.3.0"));

    // No token, no key: not in the status, the events, the logs, the output.
    let mut secrets = pem_body_lines(&key.private_pem);
    secrets.extend(app.tokens());
    let everything = format!(
        "{}\n{}\n{}\n{}",
        automation(),
        c.get_json(&["-n", &ns, "events"]),
        serve.logs(),
        table
    );
    if let Some(s) = leaks(&everything, secrets.iter().map(String::as_str)) {
        panic!("a secret ({s}…) leaked:\n{everything}");
    }
}
