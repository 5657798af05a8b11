//! `kubectl imageauto tags` against real registries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls, docker_config};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn push(reg: &Registry, ca: Option<&str>, auth: Option<String>, repo: &str, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), ca, auth).push(repo, &tags, false));
}

#[test]
fn lists_tags_newest_looking_first() {
    let reg = Registry::start(Auth::Anonymous, None);
    push(
        &reg,
        None,
        None,
        "app",
        &["1.0.0", "1.10.0", "1.2.3", "v1.3.0", "x.sig"],
    );
    let image = format!("{}/app", reg.host());
    let out = run(&["tags", &image, "--insecure"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "x.sig\nv1.3.0\n1.2.3\n1.10.0\n1.0.0\n");
    let out = run(&[
        "tags",
        &image,
        "--insecure",
        "-o",
        "json",
        "--exclude",
        "^.*\\.sig$",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tagCount"], 4);
    assert_eq!(v["tags"][0], "v1.3.0");
    assert_eq!(v["canonicalImageName"], image);
    // Flux's revision: the Adler-32, in decimal, of the JSON list of the
    // tags as stored (descending), `["v1.3.0","1.2.3","1.10.0","1.0.0"]`.
    assert_eq!(v["revision"], "2093221552");
    // The JSON feeds `explain --tags`.
    let dir = tempfile::tempdir().unwrap();
    let tags = dir.path().join("tags.json");
    std::fs::write(&tags, &out.stdout).unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: p}\nspec:\n  imageRepositoryRef: {name: r}\n  policy: {semver: {range: '>=1.0.0'}}\n").unwrap();
    let out = run(&[
        "explain",
        "-f",
        policy.to_str().unwrap(),
        "--tags",
        tags.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["latest"], "1.10.0");
    // A missing repository: exit 1, named.
    let out = run(&["tags", &format!("{}/nope", reg.host()), "--insecure"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("repository nope not found") && err.contains(&reg.host()),
        "{err}"
    );
}

#[test]
fn basic_auth_tls_and_wrong_credentials() {
    let tls = Tls::new("imageauto test CA");
    let reg = Registry::start(
        Auth::Htpasswd {
            user: "ci".into(),
            password: "correct-horse".into(),
        },
        Some(&tls),
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:correct-horse")
    );
    push(&reg, Some(&tls.ca_pem), Some(basic), "app", &["1.0.0"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let image = format!("{}/app", reg.host());
    let good = docker_config(dir.path(), &reg.host(), "ci", "correct-horse");
    let out = run(&[
        "tags",
        &image,
        "--ca-file",
        ca.to_str().unwrap(),
        "--docker-config",
        good.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1.0.0\n");
    // $DOCKER_CONFIG is read too.
    let out = Command::new(bin())
        .args(["tags", &image, "--ca-file", ca.to_str().unwrap()])
        .env("DOCKER_CONFIG", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let bad_dir = tempfile::tempdir().unwrap();
    let bad = docker_config(bad_dir.path(), &reg.host(), "ci", "battery-staple");
    let out = run(&[
        "tags",
        &image,
        "--ca-file",
        ca.to_str().unwrap(),
        "--docker-config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("authentication failed") && err.contains("test-realm"),
        "{err}"
    );
    assert!(
        !err.contains("battery-staple") && !err.contains("correct-horse"),
        "{err}"
    );

    // No CA given: the certificate is named.
    let out = run(&["tags", &image, "--docker-config", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("CN=registry.test") && err.contains("--ca-file"),
        "{err}"
    );
}
