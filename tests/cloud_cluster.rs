//! Cloud identity in the cluster: `serve` scanning Amazon ECR with
//! `spec.provider: aws` (the seed setup's ImageRepository), with the
//! controller's own identity (IRSA's environment) and with a
//! ServiceAccount's (object-level workload identity, behind its gate),
//! then committing the tag it picked and pushing it with a GitHub App's
//! installation token (the seed's GitRepository, `provider: github`) to a
//! branch a pull request is opened from. All inside a network namespace
//! where the ECR host name resolves to loopback: the registry is Debian's
//! docker-registry behind a TLS front at that name, STS and ECR are moto's,
//! Git is git http-backend taking only the App's newest token, the App and
//! pull request API a stand-in checking the App's JWT, the cluster a real
//! kube-apiserver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use imageauto_tests::cloud::{Front, Moto, isolated, tls_for};
use imageauto_tests::forge::{AppKey, StandIn, leaks, pem_body_lines};
use imageauto_tests::git::{HttpsGit, Repos, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use imageauto_tests::serve::{Launch, Serve, wait_for};
use serde_json::Value;
use std::time::Duration;

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// What moto's ECR hands the role's account.
const ECR_PASSWORD: &str = "123456789012-auth-token";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn condition(c: &Cluster, ns: &str, kind: &str, name: &str) -> Option<(String, String, String)> {
    let v: Value = c.get_json(&["-n", ns, kind, name]);
    v["status"]["conditions"].as_array()?.iter().find_map(|x| {
        (x["type"] == "Ready").then(|| {
            (
                x["status"].as_str().unwrap_or("").to_string(),
                x["reason"].as_str().unwrap_or("").to_string(),
                x["message"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

/// The automation's PullRequest condition.
fn pull_request(c: &Cluster, ns: &str) -> Option<(String, String, String)> {
    let v = c.get_json(&["-n", ns, "imageupdateautomation", "fleet"]);
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PullRequest")
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
}

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: apps\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: ECR/team/app:1.0.0 # {\"$imagepolicy\": \"NS:app\"}\n";

#[test]
fn ecr_repositories_scan_with_the_clouds_identity() {
    if !isolated(
        "ecr_repositories_scan_with_the_clouds_identity",
        &[ECR],
        &[],
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("irsa-token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJpcnNhIn0.c2ln").unwrap();
    let moto = Moto::start();
    let reg = Registry::start(Auth::Users(vec![("AWS".into(), ECR_PASSWORD.into())]), None);
    let tags: Vec<String> = ["1.0.0", "1.1.0", "1.2.0"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    tokio::runtime::Runtime::new().unwrap().block_on(
        Pusher::new(
            &reg.url(),
            None,
            Some(format!("Basic {}", b64(&format!("AWS:{ECR_PASSWORD}")))),
        )
        .push("team/app", &tags, true),
    );
    let tls = tls_for(&[ECR]);
    let ca = work.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let _front = Front::start(&tls, &[], reg.port);

    let c = Cluster::shared();
    c.install_crds();
    let ns = c.namespace("ecr");
    let repos = Repos::new();
    let bare = repos.create(
        "fleet",
        &[(
            "apps/app.yaml",
            &DEPLOY.replace("ECR", ECR).replace("NS", &ns),
        )],
    );
    let git_tls = Tls::new("git CA");
    // Git takes no password: only the App's newest installation token.
    let gitd = HttpsGit::start(repos.dir.path(), "nobody", "not-a-token", &git_tls);
    let key = AppKey::new();
    let app = StandIn::app(&key, &gitd.users, Duration::from_secs(3600));
    // The seed's Secret, as `flux create secret githubapp` writes it.
    c.apply(&app.app_secret(&ns, &key, &git_tls.ca_pem));
    c.apply(&format!(
        r#"apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {ns}}}
spec: {{interval: 1m, url: '{url}', ref: {{branch: main}}, provider: github, secretRef: {{name: github-app}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: app, namespace: {ns}}}
spec:
  image: {ECR}/team/app
  interval: 5m
  provider: aws
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: app, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: app}}
  policy: {{semver: {{range: '1.x'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata:
  name: fleet
  namespace: {ns}
  annotations: {{imageauto.dev/pull-request: main}}
spec:
  interval: 5m
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    checkout: {{ref: {{branch: main}}}}
    commit:
      author: {{name: imageauto, email: imageauto@example.com}}
      messageTemplate: "Update app images"
    push: {{branch: image-updates}}
  update: {{path: ./apps, strategy: Setters}}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ecr-reader
  namespace: {ns}
  annotations: {{eks.amazonaws.com/role-arn: 'arn:aws:iam::123456789012:role/ecr-reader'}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: no-role, namespace: {ns}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: by-account, namespace: {ns}}}
spec: {{image: {ECR}/team/app, interval: 5m, provider: aws, serviceAccountName: ecr-reader}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: no-role, namespace: {ns}}}
spec: {{image: {ECR}/team/app, interval: 5m, provider: aws, serviceAccountName: no-role}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: not-ecr, namespace: {ns}}}
spec: {{image: ghcr.io/org/app, interval: 5m, provider: aws}}
"#,
        url = gitd.url("fleet"),
    ));

    let env = [
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/imageauto".to_string(),
        ),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_ENDPOINT_URL", moto.url()),
        ("SSL_CERT_FILE", ca.display().to_string()),
    ];
    let storage = work.path().join("storage");
    // First without the gate: a ServiceAccount's identity is refused with
    // Flux's message, the controller's own identity works.
    let serve = Serve::launch(
        bin(),
        c,
        &Launch {
            extra: &["--leader-elect=false"],
            storage: &storage,
            env: &env,
            ..Launch::default()
        },
        None,
    );
    serve.wait_ready(Duration::from_secs(30));
    let ready = |name: &str, want: &str| {
        wait_for(
            Duration::from_secs(60),
            &format!("ImageRepository {name} {want}"),
            || condition(c, &ns, "imagerepository", name).filter(|(s, _, _)| s == want),
            || {
                format!(
                    "{:?}\n{}",
                    c.get_json(&["-n", &ns, "imagerepository", name])["status"],
                    serve.logs()
                )
            },
        )
    };
    ready("app", "True");
    let (_, reason, message) = ready("by-account", "False");
    assert_eq!(reason, "AuthenticationFailed", "{message}");
    assert!(
        message.starts_with("failed to configure authentication options: ObjectLevelWorkloadIdentity feature gate is not enabled"),
        "{message}"
    );
    let (_, reason, message) = ready("not-ecr", "False");
    assert_eq!(reason, "AuthenticationFailed");
    assert!(
        message.contains("invalid AWS registry: 'ghcr.io'. must match"),
        "{message}"
    );
    let status = c.get_json(&["-n", &ns, "imagerepository", "app"])["status"].clone();
    assert_eq!(status["lastScanResult"]["tagCount"], 3, "{status}");

    // The policy picks 1.2.0; the automation pushes it with the App's
    // token to image-updates and opens a pull request into main.
    let url = wait_for(
        Duration::from_secs(60),
        "the push and the pull request",
        || {
            // The condition first: the branch exists once it is there.
            let (status, reason, message) = pull_request(c, &ns)?;
            let shown = git_text(&bare, &["show", "image-updates:apps/app.yaml"]);
            (shown.contains(&format!("{ECR}/team/app:1.2.0"))
                && status == "True"
                && reason == "PullRequestOpened")
                .then_some(message)
        },
        || {
            format!(
                "{:?}\n{:#?}\n{}",
                c.get_json(&["-n", &ns, "imageupdateautomation", "fleet"])["status"],
                app.requests(),
                serve.logs()
            )
        },
    );
    assert_eq!(url, "https://forge.example/git/fleet/pull/7");
    assert!(
        git_text(&bare, &["show", "main:apps/app.yaml"]).contains("team/app:1.0.0"),
        "main is left to the pull request"
    );
    assert!(app.jwt_problems().is_empty(), "{:?}", app.jwt_problems());
    assert_eq!(app.tokens().len(), 1);
    let pulls = app.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        ("image-updates", "main")
    );
    assert_eq!(pulls[0].title, "Update app images");
    assert!(
        pulls[0].body.contains("team/app:1.2.0"),
        "{}",
        pulls[0].body
    );
    drop(serve);

    // With the gate: the ServiceAccount's role through STS; a
    // ServiceAccount naming no role is Flux's error.
    let serve = Serve::launch(
        bin(),
        c,
        &Launch {
            extra: &[
                "--leader-elect=false",
                "--feature-gates=ObjectLevelWorkloadIdentity=true",
            ],
            storage: &storage,
            env: &env,
            ..Launch::default()
        },
        None,
    );
    serve.wait_ready(Duration::from_secs(30));
    c.kubectl_ok(&[
        "-n",
        &ns,
        "annotate",
        "--overwrite",
        "imagerepository",
        "by-account",
        "reconcile.fluxcd.io/requestedAt=gate-on",
    ]);
    c.kubectl_ok(&[
        "-n",
        &ns,
        "annotate",
        "--overwrite",
        "imagerepository",
        "no-role",
        "reconcile.fluxcd.io/requestedAt=gate-on",
    ]);
    let ready = |name: &str, want: &str| {
        wait_for(
            Duration::from_secs(60),
            &format!("ImageRepository {name} {want}"),
            || condition(c, &ns, "imagerepository", name).filter(|(s, _, _)| s == want),
            || {
                format!(
                    "{:?}\n{}",
                    c.get_json(&["-n", &ns, "imagerepository", name])["status"],
                    serve.logs()
                )
            },
        )
    };
    ready("by-account", "True");
    let (_, reason, message) = ready("no-role", "False");
    assert_eq!(reason, "AuthenticationFailed");
    assert!(
        message.contains("invalid eks.amazonaws.com/role-arn annotation: ''. must match"),
        "{message}"
    );

    // No credential anywhere the user can see.
    let events = c.kubectl_ok(&["-n", &ns, "get", "events", "-o", "json"]);
    let statuses = c.kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "imagerepositories,imagepolicies,imageupdateautomations",
        "-o",
        "json",
    ]);
    let tokens = app.tokens();
    let key_lines = pem_body_lines(&key.private_pem);
    for shown in [&events, &statuses, &serve.logs()] {
        assert!(!shown.contains(ECR_PASSWORD), "the ECR password leaked");
        assert!(!shown.contains("irsa-token") || !shown.contains("eyJzdWIiOiJpcnNhIn0"));
        let secrets = tokens.iter().chain(&key_lines).map(String::as_str);
        assert_eq!(leaks(shown, secrets), None, "the App's token or key leaked");
    }
}
