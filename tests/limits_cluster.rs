//! Limits on what one tenant's objects may cost the others, on a real
//! kube-apiserver: no tight loop for `interval: 0s` or `1ms`, a registry
//! that never answers holds neither the healthy tenants' scans nor the
//! deletion of its repositories, a GitRepository URL of the controller's own
//! disk is refused, and Receivers answer from the first ready on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry};
use imageauto_tests::serve::{Serve, wait_for};
use serde_json::Value;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn cluster() -> &'static Cluster {
    let c = Cluster::shared();
    c.install_crds();
    c
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn push_tags(reg: &Registry, repo: &str, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, None).push(repo, &tags, true));
}

fn status(c: &Cluster, ns: &str, kind: &str, name: &str) -> Value {
    c.get_json(&["-n", ns, kind, name])["status"].clone()
}

fn ready(v: &Value) -> Option<(String, String, String)> {
    v["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "Ready").then(|| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

/// The sum of a counter's series whose labels contain `labels`.
fn counter(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers
/// (a registry that hangs); stops when dropped.
struct Silent {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        held.push(conn);
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Silent {
            port,
            accepted,
            stop,
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `interval: 0s` is no periodic reconciliation, and `1ms` is floored: no
/// tight loop of scans or digest lookups.
#[test]
fn short_intervals_make_no_loop() {
    let c = cluster();
    let ns = c.namespace("loops");
    let reg = Registry::start(Auth::Anonymous, None);
    push_tags(&reg, "team/web", &["1.0.0", "1.1.0"]);
    let host = reg.host();
    c.apply(&format!(
        r#"apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}}}
spec: {{image: {host}/team/web, interval: 0s, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: web, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: web}}
  digestReflectionPolicy: Always
  interval: 1ms
  policy: {{semver: {{range: '1.x'}}}}
"#
    ));
    let s = Serve::start(bin(), c, &["-n", &ns, "--leader-elect=false"]);
    wait_for(
        Duration::from_secs(60),
        "the policy's digest",
        || {
            status(c, &ns, "imagepolicy", "web")["latestRef"]["digest"]
                .as_str()
                .map(|_| ())
        },
        || s.logs(),
    );
    let before = s.metrics();
    std::thread::sleep(Duration::from_secs(10));
    let after = s.metrics();
    let scans =
        counter(&after, "imageauto_scan_total", "") - counter(&before, "imageauto_scan_total", "");
    let evaluations = counter(&after, "imageauto_reconcile_total", "kind=\"ImagePolicy\"")
        - counter(&before, "imageauto_reconcile_total", "kind=\"ImagePolicy\"");
    assert_eq!(scans, 0.0, "an interval of 0s scanned again\n{after}");
    assert!(
        evaluations <= 12.0,
        "{evaluations} evaluations of a 1ms policy in 10 s\n{after}"
    );
}

/// Five repositories of a registry that never answers take at most half
/// the scan slots: a healthy repository of another namespace is scanned at
/// once; the hung scans end at --max-scan-timeout; deleting them does not
/// wait for their scans.
#[test]
fn a_dead_registry_starves_no_one() {
    let c = cluster();
    let dead_ns = c.namespace("dead");
    let alive_ns = c.namespace("alive");
    let silent = Silent::start();
    let reg = Registry::start(Auth::Anonymous, None);
    push_tags(&reg, "team/web", &["1.0.0"]);
    let mut manifest = String::new();
    for i in 0..5 {
        manifest.push_str(&format!(
            "---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: dead-{i}, namespace: {dead_ns}, labels: {{test: dead-registry}}}}\nspec: {{image: 127.0.0.1:{}/team/dead-{i}, interval: 999999h, insecure: true}}\n",
            silent.port
        ));
    }
    c.apply(&manifest);
    let s = Serve::start(
        bin(),
        c,
        // Every namespace, and only this test's objects (the cluster is
        // shared with the other tests of this file).
        &[
            "--leader-elect=false",
            "--max-scan-timeout",
            "6s",
            "--watch-label-selector",
            "test=dead-registry",
        ],
    );
    // The dead registry has the scans it may have.
    wait_for(
        Duration::from_secs(30),
        "scans of the dead registry",
        || (silent.accepted.load(Ordering::SeqCst) >= 2).then_some(()),
        || s.logs(),
    );
    // Meanwhile a healthy repository elsewhere is scanned at once.
    let t = Instant::now();
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {alive_ns}, labels: {{test: dead-registry}}}}\nspec: {{image: {}/team/web, interval: 1h, insecure: true}}\n",
        reg.host()
    ));
    wait_for(
        Duration::from_secs(10),
        "the healthy scan",
        || {
            (status(c, &alive_ns, "imagerepository", "web")["lastScanResult"]["tagCount"] == 1)
                .then_some(())
        },
        || s.logs(),
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // The hung scans end at the server's bound, not the objects' interval
    // (999999h): the first two fail within a few bounds.
    wait_for(
        Duration::from_secs(30),
        "the first dead scans to fail",
        || {
            let failed = (0..5)
                .filter(|i| {
                    let name = format!("dead-{i}");
                    ready(&status(c, &dead_ns, "imagerepository", &name)).is_some_and(
                        |(st, reason, _)| st == "False" && reason == "ReadOperationFailed",
                    )
                })
                .count();
            (failed >= 2).then_some(())
        },
        || s.logs(),
    );
    // Asked to scan again (the scans hang anew), then deleted: the
    // deletion does not wait for them.
    for i in 0..5 {
        c.kubectl_ok(&[
            "-n",
            &dead_ns,
            "annotate",
            "--overwrite",
            "imagerepository",
            &format!("dead-{i}"),
            "reconcile.fluxcd.io/requestedAt=again",
        ]);
    }
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    let out = c.kubectl(&[
        "-n",
        &dead_ns,
        "delete",
        "imagerepositories",
        "--all",
        "--timeout=20s",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the deletion took {:?}",
        t.elapsed()
    );
}

/// A GitRepository URL naming the controller's own disk is refused by the
/// controller, whatever the CRD lets through, and nothing is written there.
#[test]
fn a_local_path_source_is_refused() {
    // A cluster whose GitRepository kind does not restrict URLs.
    let c = Cluster::start();
    c.install_crds();
    let mut crd = serde_json::to_value(&imageauto_tests::kube::flux_other_crds()[0]).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "GitRepository");
    for v in crd["spec"]["versions"].as_array_mut().unwrap() {
        let url = &mut v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["url"];
        url.as_object_mut().unwrap().remove("pattern");
    }
    c.apply(&crd.to_string());
    let c = &c;
    let ns = c.namespace("local");
    let target = tempfile::tempdir().unwrap();
    let bare = target.path().join("fleet.git");
    std::process::Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&bare)
        .status()
        .unwrap();
    c.apply(&format!(
        r#"apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {ns}}}
spec: {{interval: 1h, url: '{url}', ref: {{branch: main}}}}
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
"#,
        url = bare.display()
    ));
    let s = Serve::start(bin(), c, &["-n", &ns, "--leader-elect=false"]);
    let (_, reason, message) = wait_for(
        Duration::from_secs(30),
        "the refusal",
        || {
            ready(&status(c, &ns, "imageupdateautomation", "fleet"))
                .filter(|(st, _, _)| st == "False")
        },
        || s.logs(),
    );
    assert_eq!(reason, "InvalidSourceConfiguration");
    assert!(message.contains("spec.url"), "{message}");
    let st = status(c, &ns, "imageupdateautomation", "fleet");
    assert!(
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Stalled")
    );
    // Nothing fetched into the controller's caches from there, nothing
    // pushed.
    let refs = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&bare)
        .args(["for-each-ref"])
        .output()
        .unwrap();
    assert!(refs.stdout.is_empty());
}

/// A Receiver answers once its status shows its path (as
/// notification-controller's server looks it up), from the shared watch,
/// and through an apiserver outage: it still knows the Receiver, and says
/// 500 within its bound when the annotation cannot be written (Flux's
/// answer when annotating fails: the sender retries), 200 again after.
#[test]
fn receivers_answer_from_their_status_and_through_an_outage() {
    let c = Cluster::start();
    c.install_crds();
    let ns = c.namespace("hooks");
    c.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: hook, namespace: {ns}}}
data: {{token: {token}}}
---
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {{name: registry, namespace: {ns}}}
spec:
  type: generic
  secretRef: {{name: hook}}
  resources:
    - {{apiVersion: image.toolkit.fluxcd.io/v1, kind: ImageRepository, name: web}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}}}
spec: {{image: 127.0.0.1:1/team/web, interval: 1h, suspend: true}}
"#,
        token = b64("t0ken")
    ));
    let path = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(format!("t0ken{}{}", "registry", ns).as_bytes());
        format!("/hook/{:x}", h.finalize())
    };
    let port = imageauto_tests::free_port();
    let s = Serve::start(
        bin(),
        &c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let post = || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .post(format!("http://127.0.0.1:{port}{path}"))
            .body("{}")
            .send()
            .map(|r| r.status().as_u16())
            .ok()
    };
    wait_for(
        Duration::from_secs(30),
        "the Receiver's path in its status",
        || {
            let st = c.get_json(&["-n", &ns, "receiver", "registry"])["status"].clone();
            (st["webhookPath"] == path.as_str()).then_some(())
        },
        || s.logs(),
    );
    assert_eq!(post(), Some(200), "{}", s.logs());
    // The apiserver away: the Receiver is still known, the annotation
    // cannot be written.
    let c2 = &c;
    std::thread::scope(|scope| {
        scope.spawn(|| c2.pause_apiserver(Duration::from_secs(12)));
        std::thread::sleep(Duration::from_secs(3));
        let started = std::time::Instant::now();
        assert_eq!(post(), Some(500), "{}", s.logs());
        assert!(started.elapsed() < Duration::from_secs(8));
    });
    assert_eq!(post(), Some(200), "{}", s.logs());
}
