//! The Kubernetes test ground itself: etcd and a kube-apiserver 1.20 on
//! 127.0.0.1 (see `imageauto_tests::kube`) take Flux's real CRDs, store and
//! validate Flux objects, let a status be written through the status
//! subresource, enforce RBAC, and stop with the test process even when it
//! is killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::kube::{Cluster, FLUX_CRDS};
use serde_json::Value;
use std::time::{Duration, Instant};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn flux_objects_round_trip() {
    let c = Cluster::shared();
    c.install_flux_crds();
    for crd in FLUX_CRDS {
        let v = c.get_json(&["crd", crd]);
        let served: Vec<&str> = v["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["served"] == true)
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(served.contains(&"v1"), "{crd} serves v1: {served:?}");
    }

    let ns = c.namespace("round-trip");
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: podinfo
  namespace: {ns}
spec:
  image: ghcr.io/stefanprodan/podinfo
  interval: 5m
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: podinfo
  namespace: {ns}
spec:
  imageRepositoryRef:
    name: podinfo
  policy:
    semver:
      range: '>=6.0.0 <7.0.0'
"
    ));

    let repo = c.get_json(&["-n", &ns, "imagerepository", "podinfo"]);
    assert_eq!(repo["apiVersion"], "image.toolkit.fluxcd.io/v1");
    assert_eq!(repo["spec"]["image"], "ghcr.io/stefanprodan/podinfo");
    assert_eq!(repo["spec"]["interval"], "5m");
    // Defaults from Flux's schema are applied by the server.
    assert_eq!(repo["spec"]["provider"], "generic");
    assert_eq!(repo["spec"]["exclusionList"][0], "^.*\\.sig$");

    let policy = c.get_json(&["-n", &ns, "imagepolicy", "podinfo"]);
    assert_eq!(policy["spec"]["imageRepositoryRef"]["name"], "podinfo");
    assert_eq!(
        policy["spec"]["policy"]["semver"]["range"],
        ">=6.0.0 <7.0.0"
    );
    assert_eq!(policy["spec"]["digestReflectionPolicy"], "Never");

    // The schema is enforced: an interval that is not a duration is refused.
    let bad = c.kubectl_stdin(
        "admin",
        &["apply", "--validate=false", "-f", "-"],
        &format!(
            "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: bad
  namespace: {ns}
spec:
  image: ghcr.io/stefanprodan/podinfo
  interval: soon
"
        ),
    );
    assert!(!bad.status.success(), "an invalid interval was accepted");
    assert!(stderr(&bad).contains("spec.interval"), "{}", stderr(&bad));

    // Status goes through the status subresource, as a controller writes it.
    let status = r#"{"status":{"canonicalImageName":"ghcr.io/stefanprodan/podinfo","observedGeneration":1,"lastScanResult":{"tagCount":3,"scanTime":"2024-01-02T03:04:05Z","latestTags":["6.1.0","6.0.1","6.0.0"]},"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","message":"successful scan: found 3 tags","lastTransitionTime":"2024-01-02T03:04:05Z","observedGeneration":1}]}}"#;
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "imagerepository",
        "podinfo",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    let repo = c.get_json(&["-n", &ns, "imagerepository", "podinfo"]);
    assert_eq!(repo["status"]["lastScanResult"]["tagCount"], 3);
    assert_eq!(repo["status"]["lastScanResult"]["latestTags"][0], "6.1.0");
    assert_eq!(repo["status"]["conditions"][0]["reason"], "Succeeded");
    assert_eq!(
        repo["status"]["canonicalImageName"],
        "ghcr.io/stefanprodan/podinfo"
    );
    // A status in the main resource is ignored (the subresource owns it).
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "imagerepository",
        "podinfo",
        "--type=merge",
        "-p",
        r#"{"status":{"lastScanResult":{"tagCount":99}}}"#,
    ]);
    let repo = c.get_json(&["-n", &ns, "imagerepository", "podinfo"]);
    assert_eq!(repo["status"]["lastScanResult"]["tagCount"], 3);
}

#[test]
fn cel_rules_are_dropped_not_refused() {
    // ImagePolicy and GitRepository carry x-kubernetes-validations, which a
    // 1.20 server does not know: it stores the CRDs without them.
    let c = Cluster::shared();
    c.install_flux_crds();
    let crd = c.get_json(&["crd", "imagepolicies.image.toolkit.fluxcd.io"]);
    let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].to_string();
    assert!(schema.contains("digestReflectionPolicy"));
    assert!(
        !schema.contains("x-kubernetes-validations"),
        "the server kept the CEL rules"
    );
    let ns = c.namespace("cel");
    // The rule (interval only with digestReflectionPolicy Always) is not
    // enforced here.
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: p
  namespace: {ns}
spec:
  imageRepositoryRef:
    name: r
  interval: 1m
  policy:
    alphabetical:
      order: asc
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: g
  namespace: {ns}
spec:
  url: http://127.0.0.1:1/repo.git
  interval: 1m
  ref:
    branch: main
"
    ));
    let git = c.get_json(&["-n", &ns, "gitrepository", "g"]);
    assert_eq!(git["spec"]["timeout"], "60s");
}

#[test]
fn rbac_applies_to_the_viewer() {
    let c = Cluster::shared();
    c.install_flux_crds();
    let ns = c.namespace("rbac");
    let manifest = format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: r
  namespace: {ns}
spec:
  image: example.com/app
  interval: 1m
"
    );
    let out = c.kubectl_stdin("viewer", &["create", "-f", "-"], &manifest);
    assert!(!out.status.success(), "the viewer created an object");
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
    let out = c.kubectl_as("viewer", &["-n", &ns, "get", "imagerepositories"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));

    // A Role the test grants takes effect: read, still not write.
    c.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: read-images
  namespace: {ns}
rules:
- apiGroups: [image.toolkit.fluxcd.io]
  resources: [imagerepositories]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: viewer-reads-images
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: read-images
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: viewer
"
    ));
    c.apply(&manifest);
    let out = c.kubectl_as(
        "viewer",
        &["-n", &ns, "get", "imagerepository", "r", "-o", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spec"]["image"], "example.com/app");
    let out = c.kubectl_as("viewer", &["-n", &ns, "delete", "imagerepository", "r"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
}

#[test]
fn the_api_answers_rust_clients_with_the_token_and_ca() {
    let c = Cluster::shared();
    let (ca, server, token, viewer) = (
        c.ca_pem.clone(),
        c.server.clone(),
        c.token.clone(),
        c.viewer_token.clone(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut b = reqwest::Client::builder().tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(ca.as_bytes()).unwrap() {
            b = b.add_root_certificate(cert);
        }
        let client = b.build().unwrap();
        let v: Value = client
            .get(format!("{server}/version"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["gitVersion"], "v1.20.2");
        let resp = client
            .get(format!("{server}/api/v1/namespaces"))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403);
        let resp = client
            .get(format!("{server}/api/v1/namespaces"))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    });
}

/// Set by [`servers_stop_when_the_test_process_dies`] for the child it runs.
const CHILD_ENV: &str = "IMAGEAUTO_KUBE_SMOKE_ORPHAN";

/// Not a test on its own: in the child process of
/// [`servers_stop_when_the_test_process_dies`], starts the shared cluster
/// (a static, never dropped), prints its ports and folder and aborts.
#[test]
fn orphan_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let c = Cluster::shared();
    let etcd_port = c.etcd_url.rsplit(':').next().unwrap().to_string();
    println!("PORTS {} {etcd_port}", c.port);
    println!("DIR {}", c.dir.display());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn servers_stop_when_the_test_process_dies() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "orphan_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the child aborts");
    let ports: Vec<u16> = stdout
        .lines()
        .find_map(|l| l.split_once("PORTS ").map(|(_, p)| p))
        .unwrap_or_else(|| panic!("no ports from the child: {stdout}{}", stderr(&out)))
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ports.iter().any(|p| listening(*p)) {
        assert!(
            Instant::now() < deadline,
            "servers still listen on {ports:?} 30 s after the test process died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The shared cluster's folder is removed by etcd's watchdog.
    let dir = std::path::PathBuf::from(
        stdout
            .lines()
            .find_map(|l| l.split_once("DIR ").map(|(_, d)| d))
            .expect("the child prints its folder"),
    );
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was left behind",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dropped_cluster_stops() {
    let c = Cluster::start();
    let port = c.port;
    let etcd_port: u16 = c.etcd_url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = c.dir.clone();
    assert!(listening(port) && listening(etcd_port));
    drop(c);
    assert!(!listening(port), "the apiserver still listens");
    assert!(!listening(etcd_port), "etcd still listens");
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
