//! From tag pushed to commit pushed, for `bench/receiver-latency.sh`: a real
//! kube-apiserver, Debian's docker-registry notifying a Flux Receiver served
//! by the release binary, a Git server over HTTPS. Pushes N tags one after
//! another and measures, for each, the time until the commit holding it is
//! on the Git server (intervals are 1h: no polling helps). Then floods the
//! receiver for a few seconds and reports what it absorbed and its RSS.
//!
//!     receiver-latency BIN PUSHES FLOOD_SECONDS
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{HttpsGit, Repos};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use imageauto_tests::serve::{Launch, Serve};
use sha2::Digest;
use std::time::{Duration, Instant};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn show(bare: &std::path::Path, spec: &str) -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["show", spec])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, bin, pushes, flood] = args.as_slice() else {
        panic!("usage: receiver-latency BIN PUSHES FLOOD_SECONDS");
    };
    let (pushes, flood): (usize, u64) = (pushes.parse().unwrap(), flood.parse().unwrap());
    let c = Cluster::start();
    c.install_crds();
    let ns = c.namespace("latency");
    let rport = imageauto_tests::free_port();
    let hook = {
        let mut h = sha2::Sha256::new();
        h.update(format!("bench-tokenregistry{ns}"));
        format!("/hook/{:x}", h.finalize())
    };
    let reg = Registry::start_with(
        Auth::Anonymous,
        None,
        &format!(
            "notifications:\n  endpoints:\n    - name: imageauto\n      url: http://127.0.0.1:{rport}{hook}\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n      ignore:\n        actions: [pull]\n"
        ),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pusher = Pusher::new(&reg.url(), None, None);
    rt.block_on(pusher.push("team/web", &["1.0.0".to_string()], false));
    let host = reg.host();
    let repos = Repos::new();
    let bare = repos.create(
        "fleet",
        &[(
            "web.yaml",
            &format!("image: {host}/team/web:1.0.0 # {{\"$imagepolicy\": \"{ns}:web\"}}\n"),
        )],
    );
    let tls = Tls::new("git CA");
    let git = HttpsGit::start(repos.dir.path(), "bot", "pw", &tls);
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
  resources: [{{kind: ImageRepository, name: '*', matchLabels: {{}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: git, namespace: {ns}}}
data: {{username: {u}, password: {p}, ca.crt: {ca}}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {ns}}}
spec: {{interval: 1h, url: '{url}', ref: {{branch: main}}, secretRef: {{name: git}}}}
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
metadata: {{name: fleet, namespace: {ns}}}
spec:
  interval: 1h
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    commit: {{author: {{email: bot@example.com}}}}
    push: {{branch: main}}
"#,
        token = b64("bench-token"),
        u = b64("bot"),
        p = b64("pw"),
        ca = b64(&tls.ca_pem),
        url = git.url("fleet"),
    ));
    let storage = tempfile::tempdir().unwrap();
    let receiver_addr = format!("127.0.0.1:{rport}");
    let serve = Serve::launch(
        bin,
        &c,
        &Launch {
            extra: &[
                "--leader-elect=false",
                "-n",
                &ns,
                "--receiver-addr",
                &receiver_addr,
            ],
            storage: &storage.path().join("storage"),
            rust_log: Some("warn,kubectl_imageauto=info"),
            ..Launch::default()
        },
        None,
    );
    let pid = serve.pid().expect("serve runs");
    // Settled: the Receiver served, the first scan done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get_json(&["-n", &ns, "receiver", "registry"])["status"]["webhookPath"] != hook.as_str()
    {
        assert!(
            Instant::now() < deadline,
            "the Receiver was not initialized"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut latencies = Vec::new();
    for i in 1..=pushes {
        let tag = format!("1.{i}.0");
        let started = Instant::now();
        rt.block_on(pusher.push("team/web", std::slice::from_ref(&tag), false));
        loop {
            if show(&bare, "main:web.yaml").contains(&format!(":{tag} ")) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{tag} never reached Git"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        latencies.push(started.elapsed().as_secs_f64());
    }
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "tag pushed -> commit on the Git server, {pushes} pushes: p50 {:.2} s, p95 {:.2} s, max {:.2} s (Flux with its default intervals: up to 5m scan + 1m automation by polling; imageauto polling with 1h intervals would wait up to 1h)",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.95),
        sorted[sorted.len() - 1]
    );
    // A flood of events at the receiver: 8 clients, keep-alive, for FLOOD s.
    let url = format!("http://127.0.0.1:{rport}{hook}");
    let body = format!(
        r#"{{"events":[{{"action":"push","target":{{"repository":"team/web","tag":"x"}},"request":{{"host":"{host}"}}}}]}}"#
    );
    let until = Instant::now() + Duration::from_secs(flood);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            while Instant::now() < until {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let (mut ok, mut limited, mut other) = (0u64, 0u64, 0u64);
                while Instant::now() < until {
                    match client
                        .post(&url)
                        .body(body.clone())
                        .send()
                        .map(|r| r.status().as_u16())
                    {
                        Ok(200) => ok += 1,
                        Ok(429) => limited += 1,
                        _ => other += 1,
                    }
                }
                (ok, limited, other)
            })
        })
        .collect();
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for t in threads {
        let (a, b, c) = t.join().unwrap();
        ok += a;
        limited += b;
        other += c;
    }
    let _ = watcher.join();
    let total = ok + limited + other;
    println!(
        "flood: {:.0} requests/s answered for {flood} s ({ok} accepted and coalesced, {limited} rate-limited with 429, {other} other); serve's RSS under the flood peaked at {:.1} MiB",
        total as f64 / flood as f64,
        peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    );
    drop(serve);
}
