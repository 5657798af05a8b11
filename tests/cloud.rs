//! Cloud registry logins (`--provider aws|gcp|azure`) through the binary,
//! each test inside a network namespace of its own where the clouds' host
//! names resolve to loopback: the registry is a real one (Debian's
//! docker-registry, htpasswd, behind a TLS front at the cloud host name);
//! AWS is moto's server (STS and ECR); GCP's metadata server and Entra ID
//! and the ACR exchange are stand-ins that check what the real services
//! require.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use imageauto_tests::cloud::{Front, Moto, isolated, tls_for};
use imageauto_tests::forge::{AppKey, StandIn, leaks, pem_body_lines};
use imageauto_tests::git::{HttpsGit, Repos, git, git_text};
use imageauto_tests::registry::{Auth, FakeServer, Pusher, Registry, Reply, Request};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const GAR: &str = "europe-west1-docker.pkg.dev";
const ACR: &str = "imageauto.azurecr.io";
const NAMES: &[&str] = &[ECR, GAR, ACR];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The binary with only the given environment (and PATH), HOME in `home`.
fn run(home: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn push(reg: &Registry, user: &str, password: &str, repo: &str, tags: &[&str]) {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, Some(auth)).push(repo, &tags, false));
}

/// What moto's ECR hands the account of the role.
const ECR_PASSWORD: &str = "123456789012-auth-token";

/// ECR as IRSA's environment reaches it: moto's STS and ECR, a registry
/// that takes moto's password for `team/app` (with `tags`), behind a TLS
/// front at the ECR host name; `env` is what the binary needs.
struct Ecr {
    env: Vec<(&'static str, String)>,
    _moto: Moto,
    _reg: Registry,
    _front: Front,
}

impl Ecr {
    fn start(home: &Path, tags: &[&str]) -> Ecr {
        let token_file = home.join("token");
        std::fs::write(
            &token_file,
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6aW1hZ2VhdXRvIn0.c2ln",
        )
        .unwrap();
        let moto = Moto::start();
        let reg = Registry::start(Auth::Users(vec![("AWS".into(), ECR_PASSWORD.into())]), None);
        push(&reg, "AWS", ECR_PASSWORD, "team/app", tags);
        let tls = tls_for(NAMES);
        let ca = home.join("ca.pem");
        std::fs::write(&ca, &tls.ca_pem).unwrap();
        let front = Front::start(&tls, &[], reg.port);
        let env = vec![
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
        Ecr {
            env,
            _moto: moto,
            _reg: reg,
            _front: front,
        }
    }
}

fn reply(status: u16, body: &str) -> Reply {
    (
        status,
        vec![("Content-Type".into(), "application/json".into())],
        body.as_bytes().to_vec(),
    )
}

fn form(req: &Request) -> Vec<(String, String)> {
    let body = text(&req.body);
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let r = Request {
                method: String::new(),
                path: String::new(),
                query_string: format!("x={v}"),
                headers: Vec::new(),
                body: Vec::new(),
            };
            (k.to_string(), r.query("x").pop().unwrap_or_default())
        })
        .collect()
}

fn field(form: &[(String, String)], k: &str) -> String {
    form.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// ECR through IRSA's environment, as EKS's webhook sets it: the SDK's
/// default chain exchanges the web identity token at STS, ECR gives the
/// registry password; the scan lists the tags. Without the provider the
/// registry refuses; with it on another registry, Flux's error.
#[test]
fn ecr_with_irsa_environment() {
    let home = tempfile::tempdir().unwrap();
    if !isolated("ecr_with_irsa_environment", NAMES, &[]) {
        return;
    }
    let ecr = Ecr::start(home.path(), &["1.0.0", "1.2.0", "1.10.0"]);
    let (env, password) = (ecr.env.clone(), ECR_PASSWORD);
    let image = format!("{ECR}/team/app");
    let out = run(home.path(), &env, &["tags", &image, "--provider", "aws"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["1.2.0", "1.10.0", "1.0.0"],
        "{stderr}"
    );
    assert!(!stdout.contains(password) && !stderr.contains(password));

    // The registry does want credentials.
    let out = run(home.path(), &env, &["tags", &image]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("401") || stderr.to_lowercase().contains("auth"),
        "{stderr}"
    );

    // Flux's error for a registry that is not ECR.
    let out = run(
        home.path(),
        &env,
        &["tags", "ghcr.io/org/app", "--provider", "aws"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid AWS registry: 'ghcr.io'. must match"),
        "{stderr}"
    );
}

/// The seed setup from a checkout: an ImageRepository with `provider:
/// aws` scanned with IRSA's identity, the tag pushed with a GitHub App's
/// installation token (Git takes nothing else) to the automation's push
/// branch, and a pull request into main opened, by `reconcile --local
/// --push --pull-request main`; no password, token or key in its output.
#[test]
fn the_seed_setup_from_a_checkout() {
    let home = tempfile::tempdir().unwrap();
    if !isolated("the_seed_setup_from_a_checkout", NAMES, &[]) {
        return;
    }
    let ecr = Ecr::start(home.path(), &["1.0.0", "1.1.0", "2.0.0"]);
    let password = ECR_PASSWORD;

    let manifests = format!(
        r#"apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: app, namespace: flux-system}}
spec: {{image: {ECR}/team/app, interval: 5m, provider: aws}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: app, namespace: flux-system}}
spec:
  imageRepositoryRef: {{name: app}}
  policy: {{semver: {{range: 1.x}}}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: flux-system}}
spec: {{interval: 1m, url: 'https://github.com/git/fleet', ref: {{branch: main}}, provider: github, secretRef: {{name: github-app}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: fleet, namespace: flux-system}}
spec:
  interval: 5m
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    commit:
      author: {{name: imageauto, email: imageauto@example.com}}
      messageTemplate: "Update app images"
    push: {{branch: image-updates}}
  update: {{path: ./apps, strategy: Setters}}
"#
    );
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app, namespace: apps}}\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {ECR}/team/app:1.0.0 # {{\"$imagepolicy\": \"flux-system:app\"}}\n"
    );
    let repos = Repos::new();
    let bare = repos.create(
        "fleet",
        &[
            ("apps/app.yaml", &deploy),
            ("clusters/images.yaml", &manifests),
        ],
    );
    let git_tls = imageauto_tests::registry::Tls::new("git CA");
    let git_ca = home.path().join("git-ca.pem");
    std::fs::write(&git_ca, &git_tls.ca_pem).unwrap();
    let gitd = HttpsGit::start(repos.dir.path(), "nobody", "not-a-token", &git_tls);
    let key = AppKey::new();
    let app = StandIn::app(&key, &gitd.users, Duration::from_secs(3600));
    let checkout = tempfile::tempdir().unwrap();
    git(
        checkout.path(),
        &["clone", "-q", bare.to_str().unwrap(), "."],
    );
    git(
        checkout.path(),
        &["remote", "set-url", "origin", &gitd.url("fleet")],
    );
    let mut env = ecr.env.clone();
    env.push(("GIT_CONFIG_NOSYSTEM", "1".to_string()));
    let dir = checkout.path().to_str().unwrap().to_string();
    let out = run(
        home.path(),
        &env,
        &[
            "reconcile",
            "--local",
            &dir,
            "--push",
            "--pull-request",
            "main",
            "--git-ca-file",
            git_ca.to_str().unwrap(),
            "--github-app-id",
            "4242",
            "--github-app-installation-owner",
            "git",
            "--github-app-private-key",
            key.path.to_str().unwrap(),
            "--github-app-base-url",
            &app.url(),
        ],
    );
    let both = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{both}");
    let pushed = git_text(&bare, &["show", "image-updates:apps/app.yaml"]);
    assert!(
        pushed.contains(&format!("{ECR}/team/app:1.1.0")),
        "{pushed}\n{both}"
    );
    assert!(
        git_text(&bare, &["show", "main:apps/app.yaml"]).contains("team/app:1.0.0"),
        "main is left to the pull request"
    );
    assert!(
        both.contains("pull request 7 opened: https://forge.example/git/fleet/pull/7"),
        "{both}"
    );
    assert!(app.jwt_problems().is_empty(), "{:?}", app.jwt_problems());
    let pulls = app.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        ("image-updates", "main")
    );
    assert!(
        pulls[0].body.contains("team/app:1.1.0"),
        "{}",
        pulls[0].body
    );
    let mut secrets = pem_body_lines(&key.private_pem);
    secrets.extend(app.tokens());
    secrets.push(password.to_string());
    assert_eq!(leaks(&both, secrets.iter().map(String::as_str)), None);
}

/// A refused ECR login names the provider, the call, AWS's error code and
/// what to check; no credential is in it.
#[test]
fn ecr_refusal_says_what_to_check() {
    let home = tempfile::tempdir().unwrap();
    if !isolated("ecr_refusal_says_what_to_check", NAMES, &[]) {
        return;
    }
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "a.b.c").unwrap();
    let moto = Moto::start();
    let ecr = FakeServer::start(|req: &Request| {
        assert_eq!(
            req.header("x-amz-target").as_deref(),
            Some("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken")
        );
        assert!(
            req.header("authorization")
                .unwrap_or_default()
                .starts_with("AWS4-HMAC-SHA256")
        );
        (
            400,
            vec![("Content-Type".into(), "application/x-amz-json-1.1".into())],
            br#"{"__type":"AccessDeniedException","message":"User: arn:aws:sts::123456789012:assumed-role/imageauto/x is not authorized to perform: ecr:GetAuthorizationToken"}"#.to_vec(),
        )
    });
    let env = vec![
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/imageauto".to_string(),
        ),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_ENDPOINT_URL_STS", moto.url()),
        (
            "AWS_ENDPOINT_URL_ECR",
            format!("http://127.0.0.1:{}", ecr.port),
        ),
        ("AWS_MAX_ATTEMPTS", "1".to_string()),
    ];
    let out = run(
        home.path(),
        &env,
        &["tags", &format!("{ECR}/team/app"), "--provider", "aws"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for want in [
        "provider aws",
        "ECR GetAuthorizationToken",
        "AccessDeniedException",
        "not authorized to perform: ecr:GetAuthorizationToken",
        "IRSA",
    ] {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
    }
}

/// Artifact Registry with the metadata server's token (GKE Workload
/// Identity): the stand-in at 169.254.169.254 wants `Metadata-Flavor:
/// Google`, as the real one does.
#[test]
fn artifact_registry_with_metadata_server() {
    let home = tempfile::tempdir().unwrap();
    if !isolated("artifact_registry_with_metadata_server", NAMES, &[]) {
        return;
    }
    let access_token = "ya29.test-access-token";
    let asked = Arc::new(Mutex::new(0));
    let _metadata = {
        let asked = asked.clone();
        FakeServer::start_on("169.254.169.254:80", move |req: &Request| {
            if req.header("metadata-flavor").as_deref() != Some("Google") {
                return reply(403, "{}");
            }
            assert_eq!(
                req.header("host").as_deref(),
                Some("metadata.google.internal")
            );
            match req.path.as_str() {
                "/computeMetadata/v1/instance/service-accounts/default/token" => {
                    *asked.lock().unwrap() += 1;
                    reply(
                        200,
                        &format!(
                            r#"{{"access_token":"{access_token}","expires_in":3599,"token_type":"Bearer"}}"#
                        ),
                    )
                }
                _ => reply(404, "{}"),
            }
        })
    };
    let reg = Registry::start(
        Auth::Users(vec![("oauth2accesstoken".into(), access_token.into())]),
        None,
    );
    push(
        &reg,
        "oauth2accesstoken",
        access_token,
        "proj/repo/app",
        &["2.0.0", "2.1.0"],
    );
    let tls = tls_for(NAMES);
    let ca = home.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let _front = Front::start(&tls, &[], reg.port);
    let env = vec![("SSL_CERT_FILE", ca.display().to_string())];
    let out = run(
        home.path(),
        &env,
        &["tags", &format!("{GAR}/proj/repo/app"), "--provider", "gcp"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["2.1.0", "2.0.0"]);
    assert_eq!(*asked.lock().unwrap(), 1);
    assert!(!stderr.contains(access_token));
}

/// ACR with Azure workload identity: the projected token is the client
/// assertion at Entra ID (a stand-in checking the form), whose token the
/// registry's `/oauth2/exchange` (a stand-in at the registry's own host,
/// behind the same front) trades for a refresh token, the registry's
/// password for the user 00000000-0000-0000-0000-000000000000.
#[test]
fn acr_with_workload_identity() {
    let home = tempfile::tempdir().unwrap();
    if !isolated("acr_with_workload_identity", NAMES, &[]) {
        return;
    }
    let federated = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Zmx1eC1zeXN0ZW06aW1hZ2VhdXRvIn0.c2ln";
    let token_file = home.path().join("azure-identity-token");
    std::fs::write(&token_file, federated).unwrap();
    let entra_token = "entra-access-token";
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3 * 3600;
    let refresh = format!(
        "{}.{}.sig",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(r#"{{"exp":{exp}}}"#))
    );
    let entra = FakeServer::start(move |req: &Request| {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/tenant-1/oauth2/v2.0/token");
        let f = form(req);
        assert_eq!(field(&f, "grant_type"), "client_credentials");
        assert_eq!(field(&f, "client_id"), "client-1");
        assert_eq!(
            field(&f, "scope"),
            "https://containerregistry.azure.net/.default"
        );
        assert_eq!(
            field(&f, "client_assertion_type"),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        if field(&f, "client_assertion") != federated {
            return reply(
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS700211: No matching federated identity record found"}"#,
            );
        }
        reply(
            200,
            &format!(
                r#"{{"access_token":"{entra_token}","expires_in":3599,"token_type":"Bearer"}}"#
            ),
        )
    });
    let exchanges = Arc::new(Mutex::new(0));
    let exchange = {
        let (refresh, exchanges) = (refresh.clone(), exchanges.clone());
        FakeServer::start(move |req: &Request| {
            assert_eq!(
                (req.method.as_str(), req.path.as_str()),
                ("POST", "/oauth2/exchange")
            );
            let f = form(req);
            assert_eq!(field(&f, "grant_type"), "access_token");
            assert_eq!(field(&f, "service"), ACR);
            assert_eq!(field(&f, "access_token"), entra_token);
            *exchanges.lock().unwrap() += 1;
            reply(200, &format!(r#"{{"refresh_token":"{refresh}"}}"#))
        })
    };
    let user = "00000000-0000-0000-0000-000000000000";
    let reg = Registry::start(Auth::Users(vec![(user.into(), refresh.clone())]), None);
    push(&reg, user, &refresh, "app", &["3.0.0", "3.1.0"]);
    let tls = tls_for(NAMES);
    let ca = home.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let _front = Front::start(&tls, &[("/oauth2/", exchange.port)], reg.port);
    let mut env = vec![
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AZURE_CLIENT_ID", "client-1".to_string()),
        ("AZURE_TENANT_ID", "tenant-1".to_string()),
        (
            "AZURE_AUTHORITY_HOST",
            format!("http://127.0.0.1:{}/", entra.port),
        ),
        ("SSL_CERT_FILE", ca.display().to_string()),
    ];
    let out = run(
        home.path(),
        &env,
        &["tags", &format!("{ACR}/app"), "--provider", "azure"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["3.1.0", "3.0.0"]);
    assert_eq!(*exchanges.lock().unwrap(), 1);
    assert!(!stderr.contains(&refresh) && !stderr.contains(entra_token));

    // A federated token Entra ID does not know: its error, and what to check.
    std::fs::write(&token_file, "another.token.here").unwrap();
    env.retain(|(k, _)| *k != "SSL_CERT_FILE");
    env.push(("SSL_CERT_FILE", ca.display().to_string()));
    let out = run(
        home.path(),
        &env,
        &["tags", &format!("{ACR}/app"), "--provider", "azure"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for want in [
        "provider azure",
        "invalid_client",
        "AADSTS700211",
        "azure.workload.identity/client-id",
    ] {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
    }
    assert!(!stderr.contains("another.token.here"));
}
