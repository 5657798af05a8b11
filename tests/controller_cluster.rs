//! The controllers' contracts on a real kube-apiserver, seen from outside:
//! status written whole (a field that goes away goes), Flux's finalizer
//! released on every kind, watches that wake only what changed, readiness
//! that means the webhook knows the cluster, one marker index for every
//! replica, and one leader at a time through a partition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{HttpsGit, Repos, git, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::proxy::Proxy;
use imageauto_tests::registry::{Auth, FakeServer, Pusher, Registry, Tls};
use imageauto_tests::serve::{Launch, Serve, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn cluster() -> &'static Cluster {
    let c = Cluster::shared();
    c.install_crds();
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Pushes `tags` of `repo`, each its own image; returns their digests.
fn push_tags(reg: &Registry, repo: &str, tags: &[&str]) -> Vec<String> {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, None).push(repo, &tags, true))
}

fn status(c: &Cluster, ns: &str, kind: &str, name: &str) -> Value {
    c.get_json(&["-n", ns, kind, name])["status"].clone()
}

fn condition(v: &Value, type_: &str) -> Option<(String, String, String)> {
    v["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == type_).then(|| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

fn annotate(c: &Cluster, ns: &str, kind: &str, name: &str, value: &str) {
    c.kubectl_ok(&[
        "-n",
        ns,
        "annotate",
        "--overwrite",
        kind,
        name,
        &format!("reconcile.fluxcd.io/requestedAt={value}"),
    ]);
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: REG/team/web:1.0.0 # {\"$imagepolicy\": \"NS:web\"}\n        - name: api\n          image: REG/team/api:1.0.0 # {\"$imagepolicy\": \"NS:api\"}\n";

/// A fleet in Git over HTTPS, a registry with `team/web` and `team/api`,
/// and the objects of one namespace: a GitRepository with its Secret, a
/// repository and a policy per image, and an automation.
struct Fleet {
    ns: String,
    reg: Registry,
    bare: PathBuf,
    /// Digests of team/web's tags, in the order pushed.
    web_digests: Vec<String>,
    repos: Repos,
    _git: HttpsGit,
}

impl Fleet {
    fn new(c: &Cluster, prefix: &str, digest_policy: &str, automation_interval: &str) -> Fleet {
        let ns = c.namespace(prefix);
        let reg = Registry::start(Auth::Anonymous, None);
        let web_digests = push_tags(&reg, "team/web", &["1.0.0", "1.1.0"]);
        push_tags(&reg, "team/api", &["1.0.0", "1.3.0"]);
        let host = reg.host();
        let repos = Repos::new();
        let file = WEB.replace("REG", &host).replace("NS", &ns);
        let bare = repos.create("fleet", &[("apps/web.yaml", &file)]);
        let tls = Tls::new("git CA");
        let gitd = HttpsGit::start(repos.dir.path(), "bot", "s3cret-git-pass", &tls);
        c.apply(&format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: fleet-auth, namespace: {ns}}}
data: {{username: {u}, password: {p}, ca.crt: {ca}}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {ns}}}
spec: {{interval: 1m, url: '{url}', ref: {{branch: main}}, secretRef: {{name: fleet-auth}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}}}
spec: {{image: {host}/team/web, interval: 1h, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: api, namespace: {ns}}}
spec: {{image: {host}/team/api, interval: 1h, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: web, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: web}}
  digestReflectionPolicy: {digest_policy}
  policy: {{semver: {{range: '1.x'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: api, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: api}}
  policy: {{semver: {{range: '1.x'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: fleet, namespace: {ns}}}
spec:
  interval: {automation_interval}
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    commit: {{author: {{name: imageauto, email: imageauto@example.com}}}}
    push: {{branch: flux-image-updates}}
  update: {{path: ./apps, strategy: Setters}}
"#,
            u = b64("bot"),
            p = b64("s3cret-git-pass"),
            ca = b64(&tls.ca_pem),
            url = gitd.url("fleet"),
        ));
        Fleet {
            ns,
            reg,
            bare,
            web_digests,
            repos,
            _git: gitd,
        }
    }

    fn pushed_file(&self) -> String {
        git_text(&self.bare, &["show", "flux-image-updates:apps/web.yaml"])
    }

    fn last_push(&self, c: &Cluster) -> Option<String> {
        status(c, &self.ns, "imageupdateautomation", "fleet")["lastPushCommit"]
            .as_str()
            .map(str::to_string)
    }
}

/// A switch from IfNotPresent to Never drops `latestRef.digest` (a merge
/// patch would have kept it), and the next commit writes no digest; a
/// deleted policy leaves `observedPolicies`; Flux's finalizer goes with
/// each kind's deletion.
#[test]
fn a_digest_that_goes_never_reaches_git_and_deletions_are_released() {
    let c = cluster();
    let f = Fleet::new(c, "digests", "IfNotPresent", "1h");
    let ns = &f.ns;
    let host = f.reg.host();
    let serve = Serve::start(bin(), c, &["-n", ns, "--leader-elect=false"]);
    let explain = || {
        format!(
            "{}\n{}",
            c.kubectl_ok(&[
                "-n",
                ns,
                "get",
                "imagerepositories,imagepolicies,imageupdateautomations",
                "-o",
                "yaml"
            ]),
            serve.logs()
        )
    };
    // The digest of 1.1.0 reaches Git with its tag.
    let want = format!("{host}/team/web:1.1.0@{}", f.web_digests[1]);
    wait_for(
        Duration::from_secs(90),
        "the push with the digest",
        || {
            f.last_push(c)?;
            f.pushed_file().contains(&want).then_some(())
        },
        explain,
    );
    // Every kind carries Flux's finalizer.
    for (kind, name) in [
        ("imagerepository", "web"),
        ("imagepolicy", "web"),
        ("imageupdateautomation", "fleet"),
    ] {
        let fin = c.get_json(&["-n", ns, kind, name])["metadata"]["finalizers"].clone();
        assert_eq!(fin, serde_json::json!(["finalizers.fluxcd.io"]), "{kind}");
    }
    // Switched to Never: the digest leaves the status...
    c.kubectl_ok(&[
        "-n",
        ns,
        "patch",
        "imagepolicy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"digestReflectionPolicy":"Never"}}"#,
    ]);
    let latest = wait_for(
        Duration::from_secs(60),
        "the policy without a digest",
        || {
            let s = status(c, ns, "imagepolicy", "web");
            (s["observedGeneration"] == 2).then(|| s["latestRef"].clone())
        },
        explain,
    );
    assert_eq!(latest["tag"], "1.1.0");
    assert!(latest.get("digest").is_none(), "{latest}");
    // ... and a new tag is written without one.
    push_tags(&f.reg, "team/web", &["1.2.0"]);
    annotate(c, ns, "imagerepository", "web", "new-tag");
    wait_for(
        Duration::from_secs(60),
        "the push of 1.2.0",
        || {
            let file = f.pushed_file();
            file.contains(&format!("image: {host}/team/web:1.2.0 #"))
                .then_some(file)
        },
        explain,
    );
    assert!(!f.pushed_file().contains('@'), "{}", f.pushed_file());
    // A deleted policy: its finalizer is released, and it leaves the
    // automation's observedPolicies.
    let observed = status(c, ns, "imageupdateautomation", "fleet")["observedPolicies"].clone();
    assert!(
        observed.get("api").is_some() || observed.get(format!("{ns}:api")).is_some(),
        "{observed}"
    );
    let t = Instant::now();
    c.kubectl_ok(&["-n", ns, "delete", "imagepolicy", "api", "--timeout=20s"]);
    assert!(t.elapsed() < Duration::from_secs(20));
    wait_for(
        Duration::from_secs(30),
        "observedPolicies without api",
        || {
            let o = status(c, ns, "imageupdateautomation", "fleet")["observedPolicies"].clone();
            let keys: Vec<String> = o.as_object()?.keys().cloned().collect();
            (keys.len() == 1 && !keys.iter().any(|k| k.ends_with("api"))).then_some(())
        },
        explain,
    );
    // The other kinds go too, within seconds.
    for (kind, name) in [
        ("imageupdateautomation", "fleet"),
        ("imagerepository", "web"),
        ("imagepolicy", "web"),
    ] {
        let t = Instant::now();
        c.kubectl_ok(&["-n", ns, "delete", kind, name, "--timeout=20s"]);
        assert!(t.elapsed() < Duration::from_secs(20), "{kind}");
    }
    drop(f);
}

/// Objects Flux's controllers reconciled carry its finalizer; suspended or
/// not, imageauto releases it when they are deleted (the `install
/// --take-over` case).
#[test]
fn objects_flux_finalized_are_released() {
    let c = cluster();
    let ns = c.namespace("taken");
    c.apply(&format!(
        r#"apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}, finalizers: [finalizers.fluxcd.io]}}
spec: {{image: 127.0.0.1:1/team/web, interval: 1h, suspend: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: web, namespace: {ns}, finalizers: [finalizers.fluxcd.io]}}
spec:
  imageRepositoryRef: {{name: web}}
  policy: {{semver: {{range: '1.x'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: fleet, namespace: {ns}, finalizers: [finalizers.fluxcd.io]}}
spec:
  interval: 1h
  suspend: true
  sourceRef: {{kind: GitRepository, name: missing}}
  git:
    commit: {{author: {{email: bot@example.com}}}}
    push: {{branch: main}}
"#
    ));
    let serve = Serve::start(bin(), c, &["-n", &ns, "--leader-elect=false"]);
    for (kind, name) in [
        ("imagepolicy", "web"),
        ("imageupdateautomation", "fleet"),
        ("imagerepository", "web"),
    ] {
        let t = Instant::now();
        let out = c.kubectl(&["-n", &ns, "delete", kind, name, "--timeout=20s"]);
        assert!(
            out.status.success(),
            "{kind}: {}\n{}",
            text(&out.stderr),
            serve.logs()
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{kind}");
    }
}

/// How many times `serve` reconciled `kind` `ns/name` (its debug log).
fn reconciles(serve: &Serve, kind: &str, ns: &str, name: &str) -> usize {
    let object = format!("object={ns}/{name}");
    let kind = format!("kind=\"{kind}\"");
    serve
        .logs()
        .lines()
        .filter(|l| l.contains(" reconciled") && l.contains(&object) && l.contains(&kind))
        .count()
}

/// A status write wakes nothing; a policy whose latest image did not move
/// wakes no automation; a changed GitRepository branch and a fixed Secret
/// are acted on within seconds (every interval here is an hour or more).
#[test]
fn watches_wake_only_what_changed() {
    let c = cluster();
    let f = Fleet::new(c, "wakes", "Never", "1h");
    let ns = f.ns.clone();
    // An idle repository with a short interval, counted alone.
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: idle, namespace: {ns}}}\nspec: {{image: {}/team/api, interval: 15s, insecure: true}}\n",
        f.reg.host()
    ));
    let storage = tempfile::tempdir().unwrap();
    let serve = Serve::launch(
        bin(),
        c,
        &Launch {
            // Retries slow enough that only the Secret's watch can explain
            // a run within seconds of its fix.
            extra: &["-n", &ns, "--leader-elect=false", "--min-retry-delay", "5s"],
            storage: &storage.path().join("s"),
            rust_log: Some("info,imageauto_server::controller::shell=debug"),
            ..Launch::default()
        },
        None,
    );
    serve.wait_ready(Duration::from_secs(30));
    let explain = || {
        format!(
            "{}\n{}",
            c.kubectl_ok(&[
                "-n",
                &ns,
                "get",
                "imagerepositories,imagepolicies,imageupdateautomations,gitrepositories",
                "-o",
                "yaml"
            ]),
            serve.logs()
        )
    };
    let first = wait_for(
        Duration::from_secs(90),
        "the first push",
        || f.last_push(c),
        explain,
    );
    // One reconciliation per interval of the idle repository, no more: its
    // own status writes (a scan every 15 s) wake nothing.
    wait_for(
        Duration::from_secs(30),
        "the idle repository's scan",
        || {
            status(c, &ns, "imagerepository", "idle")["lastScanResult"]["scanTime"]
                .as_str()
                .map(|_| ())
        },
        explain,
    );
    let before = reconciles(&serve, "ImageRepository", &ns, "idle");
    let automation_before = reconciles(&serve, "ImageUpdateAutomation", &ns, "fleet");
    // A policy changed in a way that keeps its latest image: it is
    // reconciled, the automation is not woken.
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "imagepolicy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"policy":{"semver":{"range":">=1.0.0 <9.0.0"}}}}"#,
    ]);
    wait_for(
        Duration::from_secs(30),
        "the policy's new generation",
        || (status(c, &ns, "imagepolicy", "web")["observedGeneration"] == 2).then_some(()),
        explain,
    );
    std::thread::sleep(Duration::from_secs(45));
    let after = reconciles(&serve, "ImageRepository", &ns, "idle");
    assert!(
        (2..=4).contains(&(after - before)),
        "{} reconciliations of an idle repository with a 15 s interval in 45 s\n{}",
        after - before,
        serve.logs()
    );
    assert_eq!(
        reconciles(&serve, "ImageUpdateAutomation", &ns, "fleet"),
        automation_before,
        "a policy whose latest image did not move woke the automation\n{}",
        serve.logs()
    );
    // The GitRepository's branch changes: the automation runs on it at once.
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["clone", "-q", f.bare.to_str().unwrap(), "."]);
    git(work.path(), &["checkout", "-q", "-b", "release"]);
    git(work.path(), &["push", "-q", "origin", "release"]);
    let release = git_text(&f.bare, &["rev-parse", "release"]);
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "gitrepository",
        "fleet",
        "--type=merge",
        "-p",
        r#"{"spec":{"ref":{"branch":"release"}}}"#,
    ]);
    let t = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "a run on the new branch",
        || {
            let s = status(c, &ns, "imageupdateautomation", "fleet");
            (s["observedSourceRevision"] == format!("release@sha1:{release}")).then_some(())
        },
        explain,
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    // A wrong password: the automation fails. Fixed in the Secret: it runs
    // within seconds, long before any retry or interval would.
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "secret",
        "fleet-auth",
        "--type=merge",
        "-p",
        &format!(r#"{{"data":{{"password":"{}"}}}}"#, b64("wrong")),
    ]);
    push_tags(&f.reg, "team/web", &["1.5.0"]);
    annotate(c, &ns, "imagerepository", "web", "while-broken");
    wait_for(
        Duration::from_secs(60),
        "the failure with the wrong password",
        || {
            let (st, _, _) = condition(&status(c, &ns, "imageupdateautomation", "fleet"), "Ready")?;
            (st == "False").then_some(())
        },
        explain,
    );
    // Let the backoff grow past what the test waits for afterwards (5 s,
    // then 10 s, then 20 s, each ±20%: the third retry is 28 s or more
    // after the first failure).
    std::thread::sleep(Duration::from_secs(20));
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "secret",
        "fleet-auth",
        "--type=merge",
        "-p",
        &format!(r#"{{"data":{{"password":"{}"}}}}"#, b64("s3cret-git-pass")),
    ]);
    let t = Instant::now();
    let second = wait_for(
        Duration::from_secs(7),
        "the push after the Secret was fixed",
        || f.last_push(c).filter(|p| *p != first),
        explain,
    );
    assert!(t.elapsed() < Duration::from_secs(7));
    assert!(git_text(&f.bare, &["show", &format!("{second}:apps/web.yaml")]).contains("web:1.5.0"));
    assert!(!serve.logs().contains("s3cret-git-pass"));
}

/// The configuration `install --webhook-url` makes, pointing at `addr`.
fn install_webhook(c: &Cluster, addr: &str, ca: &Path) {
    let out = Command::new(bin())
        .args([
            "install",
            "--wait=false",
            "--crds=false",
            "--image",
            "example.com/imageauto:test",
        ])
        .args(["--webhook-url", &format!("https://{addr}")])
        .arg("--ca-file")
        .arg(ca)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn deployment(ns: &str, name: &str, image: &str, labels: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n{labels}spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n        - name: {name}\n          image: {image}\n"
    )
}

/// Killed with SIGKILL and started again: at the first 200 of /readyz the
/// webhook already knows every policy (400 in 20 namespaces).
#[test]
fn at_the_first_ready_after_a_kill_the_webhook_knows_the_cluster() {
    let c = Cluster::start();
    c.install_crds();
    let certs = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", imageauto_tests::free_port());
    let cert_dir = certs.path().to_str().unwrap().to_string();
    let args = [
        "--leader-elect=false",
        "--webhook-addr",
        addr.as_str(),
        "--cert-dir",
        cert_dir.as_str(),
    ];
    let storage = tempfile::tempdir().unwrap();
    let mut first = Serve::start_with_storage(bin(), &c, &args, &storage.path().join("s"), None);
    install_webhook(&c, &addr, &certs.path().join("ca.crt"));
    let mut manifest = String::new();
    let mut namespaces = Vec::new();
    for i in 0..20 {
        let ns = c.labelled_namespace("gov", &[("imageauto.dev/enforce", "deny")]);
        manifest.push_str(&format!(
            "---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: app, namespace: {ns}}}\nspec: {{image: ghcr.io/org/app-{i}, interval: 1h, suspend: true}}\n"
        ));
        for j in 0..20 {
            manifest.push_str(&format!(
                "---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {{name: p-{j}, namespace: {ns}}}\nspec:\n  imageRepositoryRef: {{name: app}}\n  policy: {{semver: {{range: '1.x'}}}}\n"
            ));
        }
        namespaces.push(ns);
    }
    let out = c.kubectl_stdin("admin", &["create", "-f", "-"], &manifest);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last = namespaces.last().unwrap().clone();
    // The first instance sees them.
    wait_for(
        Duration::from_secs(60),
        "the webhook to know the policies",
        || {
            let o = c.kubectl_stdin(
                "admin",
                &["apply", "-f", "-"],
                &deployment(&last, "probe", "ghcr.io/org/app-19:1.0.0", ""),
            );
            o.status.success().then_some(())
        },
        || first.logs(),
    );
    c.kubectl_ok(&["-n", &last, "delete", "deployment", "probe"]);
    first.kill();
    let second = Serve::launch(
        bin(),
        &c,
        &Launch {
            extra: &args,
            storage: &storage.path().join("s"),
            ..Launch::default()
        },
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !second.ready() {
        assert!(Instant::now() < deadline, "never ready:\n{}", second.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // At once: a governed Deployment is admitted, an ungoverned one refused
    // by name.
    let governed = c.kubectl_stdin(
        "admin",
        &["apply", "-f", "-"],
        &deployment(&last, "web", "ghcr.io/org/app-19:1.0.0", ""),
    );
    assert!(
        governed.status.success(),
        "{}\n{}",
        text(&governed.stderr),
        second.logs()
    );
    let other = c.kubectl_stdin(
        "admin",
        &["apply", "-f", "-"],
        &deployment(&namespaces[3], "miner", "evil.io/miner:latest", ""),
    );
    assert!(!other.status.success(), "an ungoverned image was admitted");
    let said = text(&other.stderr);
    assert!(said.contains("evil.io/miner"), "{said}");
    assert!(!said.contains("not known to imageauto yet"), "{said}");
}

/// An AdmissionReview of a Deployment applied by Flux's kustomize-controller.
fn review(ns: &str, image: &str) -> String {
    let object = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": ns,
            "labels": {
                "kustomize.toolkit.fluxcd.io/name": "apps",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system"
            }
        },
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}
            }
        }
    });
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": ns,
            "name": "web",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:flux-system:kustomize-controller"},
            "object": object
        }
    })
    .to_string()
}

/// Sends a review to a webhook at `port` whose CA is in `ca`; returns
/// (allowed, message).
fn ask(port: u16, ca: &Path, body: &str) -> (bool, String) {
    let pem = std::fs::read(ca).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let v: Value = client
        .post(format!("https://127.0.0.1:{port}/validate/workloads"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    (
        v["response"]["allowed"].as_bool().unwrap(),
        v["response"]["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// Two replicas with leader election: the follower answers a review as the
/// leader does, from the marker index the leader published; once the
/// automation is deleted, neither holds its index against anyone.
#[test]
fn a_follower_answers_as_the_leader_from_the_published_marker_index() {
    let c = Cluster::start();
    c.install_crds();
    let lease_ns = c.namespace("controller");
    let (ca_a, ca_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (imageauto_tests::free_port(), imageauto_tests::free_port());
    let start = |port: u16, certs: &Path| {
        Serve::start(
            bin(),
            &c,
            &[
                "--leader-elect=true",
                "--leader-election-namespace",
                &lease_ns,
                "--webhook-addr",
                &format!("127.0.0.1:{port}"),
                "--cert-dir",
                certs.to_str().unwrap(),
            ],
        )
    };
    let a = start(port_a, ca_a.path());
    let b = start(port_b, ca_b.path());
    let leads = |s: &Serve| s.logs().contains("leader: starting the controllers");
    wait_for(
        Duration::from_secs(30),
        "a leader",
        || (leads(&a) || leads(&b)).then_some(()),
        || format!("{}\n{}", a.logs(), b.logs()),
    );
    let ns = c.labelled_namespace("marked", &[("imageauto.dev/enforce", "deny")]);
    let reg = Registry::start(Auth::Anonymous, None);
    push_tags(&reg, "team/web", &["1.0.0"]);
    let image = format!("{}/team/web", reg.host());
    let repos = Repos::new();
    // The fleet's file for this Deployment has no marker.
    let file = deployment(&ns, "web", &format!("{image}:1.0.0"), "");
    repos.create("fleet", &[("apps/web.yaml", &file)]);
    let tls = Tls::new("git CA");
    let gitd = HttpsGit::start(repos.dir.path(), "bot", "pw", &tls);
    c.apply(&format!(
        r#"apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}}}
spec: {{image: {image}, interval: 1h, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: web, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: web}}
  policy: {{semver: {{range: '1.x'}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: git, namespace: {ns}}}
data: {{username: {u}, password: {p}, ca.crt: {ca}}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {ns}}}
spec: {{interval: 1m, url: '{url}', ref: {{branch: main}}, secretRef: {{name: git}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: fleet, namespace: {ns}}}
spec:
  interval: 1h
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    commit: {{author: {{email: bot@example.com}}}}
    push: {{branch: main}}
  update: {{path: ./apps}}
"#,
        u = b64("bot"),
        p = b64("pw"),
        ca = b64(&tls.ca_pem),
        url = gitd.url("fleet"),
    ));
    let body = review(&ns, &format!("{image}:1.0.0"));
    let explain = || format!("{}\n{}", a.logs(), b.logs());
    // Both replicas refuse, naming the file and line, with one answer.
    let (said_a, said_b) = wait_for(
        Duration::from_secs(90),
        "both replicas to judge by the index",
        || {
            let (ok_a, msg_a) = ask(port_a, &ca_a.path().join("ca.crt"), &body);
            let (ok_b, msg_b) = ask(port_b, &ca_b.path().join("ca.crt"), &body);
            (!ok_a && !ok_b && msg_a.contains("apps/web.yaml:") && msg_b.contains("apps/web.yaml:"))
                .then_some((msg_a, msg_b))
        },
        explain,
    );
    assert_eq!(said_a, said_b);
    assert!(said_a.contains(&format!("{ns}:web")), "{said_a}");
    let index = c.kubectl_ok(&[
        "-n",
        &lease_ns,
        "get",
        "configmaps",
        "-l",
        "imageauto.dev/marker-index=true",
        "-o",
        "name",
    ]);
    assert_eq!(index.lines().count(), 1, "{index}");
    // The automation deleted: its index goes, and neither replica holds it
    // against the workload any more (the policy still governs the image).
    c.kubectl_ok(&[
        "-n",
        &ns,
        "delete",
        "imageupdateautomation",
        "fleet",
        "--timeout=20s",
    ]);
    wait_for(
        Duration::from_secs(30),
        "both replicas to admit",
        || {
            let (ok_a, _) = ask(port_a, &ca_a.path().join("ca.crt"), &body);
            let (ok_b, _) = ask(port_b, &ca_b.path().join("ca.crt"), &body);
            (ok_a && ok_b).then_some(())
        },
        explain,
    );
    wait_for(
        Duration::from_secs(30),
        "the index deleted",
        || {
            c.kubectl_ok(&[
                "-n",
                &lease_ns,
                "get",
                "configmaps",
                "-l",
                "imageauto.dev/marker-index=true",
                "-o",
                "name",
            ])
            .trim()
            .is_empty()
            .then_some(())
        },
        explain,
    );
}

/// `imageauto_leader` of a serve (its metrics listener is not behind the
/// proxy).
fn leader_metric(s: &Serve) -> Option<bool> {
    let m = s.metrics();
    let line = m.lines().find(|l| l.starts_with("imageauto_leader "))?;
    Some(line.trim_end().ends_with(" 1"))
}

/// A leader cut off from the apiserver stops within the renew deadline;
/// the other replica takes over only after that, and pushes the next
/// change once.
#[test]
fn a_partitioned_leader_steps_down_before_another_leads() {
    let c = cluster();
    let f = Fleet::new(c, "partition", "Never", "1h");
    let ns = f.ns.clone();
    let proxy = Proxy::start(format!("127.0.0.1:{}", c.port).parse().unwrap());
    let via = c.kubeconfig_via(&format!("https://127.0.0.1:{}", proxy.port));
    let args = [
        "-n",
        ns.as_str(),
        "--leader-elect=true",
        "--leader-election-namespace",
        ns.as_str(),
    ];
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Serve::launch(
        bin(),
        c,
        &Launch {
            extra: &args,
            storage: &sa.path().join("s"),
            kubeconfig: Some(&via),
            ..Launch::default()
        },
        None,
    );
    a.wait_ready(Duration::from_secs(30));
    let explain = || format!("A:\n{}\nB:\n{}", a.logs(), "");
    wait_for(
        Duration::from_secs(30),
        "A to lead",
        || (leader_metric(&a) == Some(true)).then_some(()),
        explain,
    );
    let b = Serve::start_with_storage(bin(), c, &args, &sb.path().join("s"), None);
    let explain = || format!("A:\n{}\nB:\n{}", a.logs(), b.logs());
    let first = wait_for(
        Duration::from_secs(90),
        "A's push",
        || f.last_push(c),
        explain,
    );
    let pushes_before = git_text(
        &f.bare,
        &["rev-list", "--count", "main..flux-image-updates"],
    );
    assert_eq!(leader_metric(&b), Some(false));
    proxy.cut();
    let cut = Instant::now();
    let (mut a_stopped, mut b_started) = (None, None);
    while cut.elapsed() < Duration::from_secs(40) && b_started.is_none() {
        let (la, lb) = (leader_metric(&a), leader_metric(&b));
        assert!(
            !(la == Some(true) && lb == Some(true)),
            "two leaders at {:?} after the cut\n{}",
            cut.elapsed(),
            explain()
        );
        if la == Some(false) && a_stopped.is_none() {
            a_stopped = Some(cut.elapsed());
        }
        if lb == Some(true) {
            b_started = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let a_stopped = a_stopped.unwrap_or_else(|| panic!("A kept leading\n{}", explain()));
    let b_started = b_started.unwrap_or_else(|| panic!("B never led\n{}", explain()));
    assert!(
        a_stopped <= Duration::from_secs(13),
        "A stopped after {a_stopped:?}"
    );
    assert!(a_stopped < b_started, "{a_stopped:?} {b_started:?}");
    assert!(a.logs().contains("lost the lease"), "{}", a.logs());
    // A reconciles nothing more; B pushes the next change, once.
    let a_reconciled = a
        .metrics()
        .lines()
        .filter(|l| l.starts_with("imageauto_reconcile_total"))
        .collect::<Vec<_>>()
        .join("\n");
    push_tags(&f.reg, "team/web", &["1.7.0"]);
    annotate(c, &ns, "imagerepository", "web", "after-the-cut");
    let second = wait_for(
        Duration::from_secs(60),
        "B's push",
        || f.last_push(c).filter(|p| *p != first),
        explain,
    );
    assert!(git_text(&f.bare, &["show", &format!("{second}:apps/web.yaml")]).contains("web:1.7.0"));
    let pushes_after = git_text(
        &f.bare,
        &["rev-list", "--count", "main..flux-image-updates"],
    );
    assert_eq!(
        pushes_after.parse::<u32>().unwrap(),
        pushes_before.parse::<u32>().unwrap() + 1
    );
    let a_reconciled_now = a
        .metrics()
        .lines()
        .filter(|l| l.starts_with("imageauto_reconcile_total"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        a_reconciled, a_reconciled_now,
        "A reconciled after it lost the Lease"
    );
    drop(f.repos);
}

/// `--events-addr`: events reach a stand-in for notification-controller's
/// event server in Flux's format (fluxcd/pkg `runtime/events/recorder.go`,
/// `apis/event/v1beta1`): the push event with Flux's summary and the commit
/// message, the scan and the policy's events from
/// image-reflector-controller, and no trace.
#[test]
fn events_reach_notification_controller_in_fluxs_format() {
    let c = cluster();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Value)>::new()));
    let r = received.clone();
    let sink = FakeServer::start(move |req| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        r.lock()
            .unwrap()
            .push((req.header("content-type").unwrap_or_default(), body));
        (202, vec![], Vec::new())
    });
    let f = Fleet::new(c, "events", "Never", "1h");
    let ns = f.ns.clone();
    let serve = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--events-addr",
            &format!("http://127.0.0.1:{}/", sink.port),
        ],
    );
    let commit = wait_for(
        Duration::from_secs(90),
        "the push",
        || f.last_push(c),
        || serve.logs(),
    );
    let find = |kind: &str, start: &str| {
        received
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| {
                e["involvedObject"]["kind"] == kind
                    && e["message"].as_str().is_some_and(|m| m.starts_with(start))
            })
            .cloned()
    };
    let (content_type, push) = wait_for(
        Duration::from_secs(30),
        "the push event at the sink",
        || find("ImageUpdateAutomation", "pushed commit"),
        || format!("{:?}\n{}", received.lock().unwrap(), serve.logs()),
    );
    assert_eq!(content_type, "application/json");
    let message = git_text(&f.bare, &["log", "-1", "--format=%B", &commit]);
    assert_eq!(
        push["message"].as_str().unwrap().trim_end(),
        format!(
            "pushed commit '{}' to branch 'flux-image-updates'\n{}",
            &commit[..7],
            message.trim_end()
        )
    );
    assert_eq!(push["reason"], "Succeeded");
    assert_eq!(push["severity"], "info");
    assert_eq!(push["reportingController"], "image-automation-controller");
    let uid = c.get_json(&["-n", &ns, "imageupdateautomation", "fleet"])["metadata"]["uid"].clone();
    assert_eq!(push["involvedObject"]["uid"], uid);
    assert_eq!(push["involvedObject"]["namespace"], ns.as_str());
    assert_eq!(
        push["involvedObject"]["apiVersion"],
        "image.toolkit.fluxcd.io/v1"
    );
    assert!(push["involvedObject"]["resourceVersion"].is_string());
    assert!(push["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let (_, scan) = find("ImageRepository", "successful scan: found 2 tags").unwrap();
    assert_eq!(scan["reportingController"], "image-reflector-controller");
    let host = f.reg.host();
    let (_, policy) = find(
        "ImagePolicy",
        &format!("Latest image tag for {host}/team/web resolved to 1.1.0"),
    )
    .unwrap();
    assert_eq!(policy["severity"], "info");
    // Traces stay Kubernetes events.
    assert!(
        received
            .lock()
            .unwrap()
            .iter()
            .all(|(_, e)| !e["message"].as_str().unwrap_or("").starts_with("no change")),
        "{:?}",
        received.lock().unwrap()
    );
    drop(f);
}
