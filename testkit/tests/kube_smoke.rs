//! The Kubernetes test ground itself: etcd and a kube-apiserver 1.20 on
//! 127.0.0.1 (see `imageauto_tests::kube`) take Flux's own CRDs (v1 only,
//! with CEL rules) and imageauto's (`manifests/crds`, which also serve the
//! deprecated versions), store and validate Flux objects, let a
//! status be written through the status subresource, enforce RBAC, and stop
//! with the test process even when it is killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::kube::{
    Cluster, FLUX_STYLE_CRDS, IMAGE_CRDS, IMAGE_POLICY_CEL_RULE, flux_style_crds,
};
use serde_json::Value;
use std::time::{Duration, Instant};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The names of the versions the cluster's CRD `crd` serves.
fn served_versions(c: &Cluster, crd: &str) -> Vec<String> {
    let v = c.get_json(&["crd", crd]);
    v["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn flux_objects_round_trip() {
    let c = Cluster::shared();
    c.install_flux_style_crds();
    for crd in FLUX_STYLE_CRDS {
        assert_eq!(served_versions(c, crd), ["v1"], "{crd} serves v1 alone");
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
    // Flux's ImagePolicy CRD carries x-kubernetes-validations, which a 1.20
    // server does not know: it stores the CRD without them.
    let sent = flux_style_crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == "ImagePolicy")
        .unwrap();
    let sent_policy = serde_json::to_string(&sent).unwrap();
    assert!(sent_policy.contains("x-kubernetes-validations"));
    assert!(sent_policy.contains(&serde_json::to_string(IMAGE_POLICY_CEL_RULE).unwrap()));
    let c = Cluster::shared();
    c.install_flux_style_crds();
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

/// kubectl as admin, with its stdout and stderr; panics unless it succeeds.
fn kubectl_both(c: &Cluster, args: &[&str], stdin: &str) -> (String, String) {
    let out = c.kubectl_stdin("admin", args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

#[test]
fn our_crds_serve_the_old_versions_as_v1_with_flux_columns() {
    // imageauto's CRDs and the Flux-style ones share names: a cluster of its own.
    let c = Cluster::start();
    c.install_crds();
    for crd in IMAGE_CRDS {
        let served = served_versions(&c, crd);
        let want: &[&str] = if crd.starts_with("imageupdateautomations.") {
            &["v1", "v1beta2", "v1beta1"]
        } else {
            &["v1", "v1beta2"]
        };
        assert_eq!(served, want, "{crd}");
    }

    let ns = c.namespace("versions");
    let (_, warnings) = kubectl_both(
        &c,
        &["apply", "--validate=false", "-f", "-"],
        &format!(
            "apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImageRepository
metadata:
  name: podinfo
  namespace: {ns}
spec:
  image: ghcr.io/stefanprodan/podinfo
  interval: 5m
---
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImagePolicy
metadata:
  name: podinfo
  namespace: {ns}
spec:
  imageRepositoryRef:
    name: podinfo
  filterTags:
    pattern: '^6\\.'
  policy:
    semver:
      range: 6.x
---
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImageUpdateAutomation
metadata:
  name: beta2
  namespace: {ns}
spec:
  interval: 30m
  sourceRef:
    name: fleet
  git:
    commit:
      author:
        email: bot@example.com
---
apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageUpdateAutomation
metadata:
  name: beta1
  namespace: {ns}
spec:
  interval: 1h
  sourceRef:
    kind: GitRepository
    name: fleet
  git:
    checkout:
      ref:
        branch: main
    commit:
      author:
        name: bot
        email: bot@example.com
    push:
      branch: auto
  update:
    path: ./clusters
"
        ),
    );
    // The server warns about each deprecated version it was sent.
    for w in [
        "v1beta2 ImageRepository is deprecated, upgrade to v1",
        "v1beta2 ImagePolicy is deprecated, upgrade to v1",
        "v1beta2 ImageUpdateAutomation is deprecated, upgrade to v1",
        "v1beta1 ImageUpdateAutomation is deprecated, upgrade to v1",
    ] {
        assert!(warnings.contains(w), "no warning {w:?} in {warnings}");
    }

    // Read back as v1, with the same fields and v1's schema defaults.
    let repo = c.get_json(&[
        "-n",
        &ns,
        "imagerepositories.v1.image.toolkit.fluxcd.io",
        "podinfo",
    ]);
    assert_eq!(repo["apiVersion"], "image.toolkit.fluxcd.io/v1");
    assert_eq!(repo["spec"]["image"], "ghcr.io/stefanprodan/podinfo");
    assert_eq!(repo["spec"]["exclusionList"][0], "^.*\\.sig$");
    assert_eq!(repo["spec"]["provider"], "generic");
    let policy = c.get_json(&[
        "-n",
        &ns,
        "imagepolicies.v1.image.toolkit.fluxcd.io",
        "podinfo",
    ]);
    assert_eq!(policy["apiVersion"], "image.toolkit.fluxcd.io/v1");
    assert_eq!(policy["spec"]["policy"]["semver"]["range"], "6.x");
    assert_eq!(policy["spec"]["filterTags"]["pattern"], "^6\\.");
    assert_eq!(policy["spec"]["digestReflectionPolicy"], "Never");
    let beta2 = c.get_json(&[
        "-n",
        &ns,
        "imageupdateautomations.v1.image.toolkit.fluxcd.io",
        "beta2",
    ]);
    assert_eq!(beta2["apiVersion"], "image.toolkit.fluxcd.io/v1");
    assert_eq!(beta2["spec"]["interval"], "30m");
    assert_eq!(beta2["spec"]["sourceRef"]["kind"], "GitRepository");
    assert_eq!(beta2["spec"]["update"]["strategy"], "Setters");
    let beta1 = c.get_json(&[
        "-n",
        &ns,
        "imageupdateautomations.v1.image.toolkit.fluxcd.io",
        "beta1",
    ]);
    assert_eq!(beta1["apiVersion"], "image.toolkit.fluxcd.io/v1");
    assert_eq!(beta1["spec"]["git"]["checkout"]["ref"]["branch"], "main");
    assert_eq!(beta1["spec"]["git"]["commit"]["author"]["name"], "bot");
    assert_eq!(beta1["spec"]["git"]["push"]["branch"], "auto");
    assert_eq!(beta1["spec"]["update"]["path"], "./clusters");
    assert_eq!(beta1["spec"]["update"]["strategy"], "Setters");
    // Every stored object reads back whole as the types' v1.
    for (kind, v) in [
        ("ImageRepository", &repo),
        ("ImagePolicy", &policy),
        ("ImageUpdateAutomation", &beta2),
        ("ImageUpdateAutomation", &beta1),
    ] {
        let text = serde_json::to_string(v).unwrap();
        let loaded = automation::api::load_str("cluster.json", &text);
        assert_eq!(loaded.objects.len(), 1, "{kind}: {:?}", loaded.problems);
        assert_eq!(loaded.objects[0].object.kind(), kind);
    }
    // And an old version still reads back as itself.
    let old = c.get_json(&[
        "-n",
        &ns,
        "imageupdateautomations.v1beta1.image.toolkit.fluxcd.io",
        "beta2",
    ]);
    assert_eq!(old["apiVersion"], "image.toolkit.fluxcd.io/v1beta1");
    assert_eq!(old["spec"]["interval"], "30m");

    // Flux's columns: IMAGE and TAG from the policy's status.
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "imagepolicy",
        "podinfo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":1,"latestRef":{"name":"ghcr.io/stefanprodan/podinfo","tag":"6.5.4"},"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","message":"Latest image tag for ghcr.io/stefanprodan/podinfo resolved to 6.5.4","lastTransitionTime":"2024-01-02T03:04:05Z"}]}}"#,
    ]);
    let table = c.kubectl_ok(&["-n", &ns, "get", "imagepolicies"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "IMAGE", "TAG", "READY", "STATUS", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        [
            "podinfo",
            "ghcr.io/stefanprodan/podinfo",
            "6.5.4",
            "True",
            "Latest"
        ],
        "{table}"
    );
    // "Last scan" and "Last run" have Flux's priority 1: shown by -o wide.
    let header = |args: &[&str]| -> Vec<String> {
        let table = c.kubectl_ok(args);
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        header(&["-n", &ns, "get", "imagerepositories"]),
        ["NAME", "IMAGE", "TAGS", "READY", "STATUS", "AGE"]
    );
    assert_eq!(
        header(&["-n", &ns, "get", "imagerepositories", "-o", "wide"]),
        [
            "NAME", "IMAGE", "TAGS", "READY", "STATUS", "LAST", "SCAN", "AGE"
        ]
    );
    assert_eq!(
        header(&["-n", &ns, "get", "imageupdateautomations"]),
        ["NAME", "READY", "STATUS", "AGE"]
    );
    assert_eq!(
        header(&["-n", &ns, "get", "imageupdateautomations", "-o", "wide"]),
        ["NAME", "READY", "STATUS", "LAST", "RUN", "AGE"]
    );
    // Short names and Flux's categories.
    let names = c.kubectl_ok(&["-n", &ns, "get", "fluxcd-images", "-o", "name"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "imagepolicy.image.toolkit.fluxcd.io/podinfo",
            "imagerepository.image.toolkit.fluxcd.io/podinfo",
            "imageupdateautomation.image.toolkit.fluxcd.io/beta1",
            "imageupdateautomation.image.toolkit.fluxcd.io/beta2",
        ]
    );
    for short in [
        "imgrepo",
        "imagerepo",
        "imgpol",
        "imagepol",
        "iua",
        "imgupd",
        "imgauto",
    ] {
        c.kubectl_ok(&["-n", &ns, "get", short]);
    }
}

#[test]
fn rbac_applies_to_the_viewer() {
    let c = Cluster::shared();
    c.install_flux_style_crds();
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
