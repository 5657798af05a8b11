//! The admission webhook of the whole `kubectl imageauto serve` under load,
//! for `bench/admission-load.sh`: a real kube-apiserver holding 500
//! ImageRepositories (suspended: nothing is scanned) and 500 ImagePolicies
//! in a namespace labelled `imageauto.dev/enforce: deny`; serve (the
//! release binary) with its webhook on 127.0.0.1, measured once idle (its
//! policies wait for scans that never come: `--requeue-dependency 1h`
//! keeps them from trying again every 30 s during the runs, as resolved
//! policies would not either); `hey` posting a Deployment
//! CREATE review (two governed containers: admitted) over TLS at 1,000
//! reviews/s. Alone, then with 2,000 slow clients on the same port from
//! the same address (1,000 that say nothing, half of them after a TLS
//! handshake, and 1,000 sending a request head a byte every half second),
//! each connecting again once closed: 15 s later (slowloris's default
//! pace), then 2 s later (1,000 new connections a second). Prints the
//! latencies, errors, serve's RSS and open descriptors, and what the slow
//! clients saw. With ECHO_PORT, the same load against the bare peer there
//! (`webhook`'s `admission_load echo`) before and after, for the same
//! machine's conditions.
//!
//!     admission-load BIN DURATION BODY_FILE [ECHO_PORT]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::kube::Cluster;
use imageauto_tests::serve::{Launch, Serve};
use imageauto_tests::slow::{Plan, SlowClients, memory_kib, open_files};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const POLICIES: usize = 500;

fn body(ns: &str) -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "svc-7", "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "svc-7", "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": "svc"}}, "template": {
                    "metadata": {"labels": {"app": "svc"}},
                    "spec": {"containers": [
                        {"name": "app", "image": "ghcr.io/acme/app-7:1.2.3"},
                        {"name": "proxy", "image": "ghcr.io/acme/app-499:1.0.0"}]}}}
            },
            "dryRun": false
        }
    })
    .to_string()
}

/// What `hey` reported.
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
}

fn hey(port: u16, duration: &str, body: &str) -> Run {
    let out = Command::new("hey")
        .args(["-z", duration, "-c", "20", "-q", "50", "-host", "localhost"])
        .args(["-m", "POST", "-T", "application/json", "-D", body])
        .arg(format!("https://127.0.0.1:{port}/validate/workloads"))
        .output()
        .expect("hey runs (make deps installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let secs = |label: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {label:?} in hey's output:\n{text}"))
    };
    let mut ok = 0;
    let mut errors = 0;
    let mut section = "";
    for l in text.lines() {
        let t = l.trim();
        if t.ends_with("distribution:") {
            section = if t.starts_with("Status code") {
                "status"
            } else if t.starts_with("Error") {
                "error"
            } else {
                ""
            };
            continue;
        }
        let Some(rest) = t.strip_prefix('[') else {
            continue;
        };
        let (key, rest) = rest.split_once(']').unwrap_or(("", ""));
        let n: u64 = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match section {
            "status" if key == "200" => ok += n,
            "status" | "error" => errors += n,
            _ => {}
        }
    }
    Run {
        rps: secs("Requests/sec:"),
        p50_ms: secs("50% in") * 1000.0,
        p99_ms: secs("99% in") * 1000.0,
        ok,
        errors,
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Waits until the process is idle (under 5% of a core over 2 s): the
/// controllers' first pass over the objects is done. Returns how long.
fn settle(pid: u32) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        let t0 = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(2));
        if cpu_ticks(pid) - t0 < 10 {
            break;
        }
    }
    start.elapsed()
}

/// A run's figures: what hey saw, serve's peak RSS (KiB) and descriptors,
/// and serve's CPU over the run (share of one core).
struct Measured {
    run: Run,
    rss: u64,
    fds: usize,
    cpu: f64,
}

/// Samples serve's RSS, descriptors and CPU while hey runs.
fn measured(pid: u32, f: impl FnOnce() -> Run) -> Measured {
    let (t0, start) = (cpu_ticks(pid), Instant::now());
    let (run, rss, fds) = sampled(pid, f);
    let cpu = (cpu_ticks(pid) - t0) as f64 / 100.0 / start.elapsed().as_secs_f64();
    Measured { run, rss, fds, cpu }
}

/// Samples serve's RSS and descriptors while `f` runs: the peaks.
fn sampled<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64, usize) {
    let done = Arc::new(AtomicBool::new(false));
    let (rss, fds) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, rss, fds) = (done.clone(), rss.clone(), fds.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                rss.fetch_max(memory_kib(pid, "VmRSS"), Ordering::Relaxed);
                fds.fetch_max(open_files(pid) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let out = f();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (
        out,
        rss.load(Ordering::Relaxed),
        fds.load(Ordering::Relaxed) as usize,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bin, duration, body_file, echo) = match args.as_slice() {
        [_, bin, duration, body] => (bin, duration, body, None),
        [_, bin, duration, body, echo] => (bin, duration, body, Some(echo.parse::<u16>().unwrap())),
        _ => panic!("usage: admission-load BIN DURATION BODY_FILE [ECHO_PORT]"),
    };
    let cluster = Cluster::start();
    cluster.install_crds();
    let ns = cluster.labelled_namespace("shop", &[("imageauto.dev/enforce", "deny")]);
    let mut items = Vec::new();
    for i in 0..POLICIES {
        items.push(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
            "metadata": {"name": format!("app-{i}"), "namespace": ns},
            "spec": {"image": format!("ghcr.io/acme/app-{i}"), "interval": "1h", "suspend": true}
        }));
        items.push(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": format!("app-{i}"), "namespace": ns},
            "spec": {"imageRepositoryRef": {"name": format!("app-{i}")}, "policy": {"semver": {"range": "1.x"}}}
        }));
    }
    cluster.apply(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
    );
    std::fs::write(body_file, body(&ns)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let mut serve = Serve::launch(
        bin,
        &cluster,
        &Launch {
            extra: &[
                "--leader-elect=false",
                "--requeue-dependency",
                "1h",
                "--cert-dir",
                &certs.display().to_string(),
                "--webhook-addr",
                "127.0.0.1:0",
            ],
            storage: &dir.path().join("storage"),
            // Quiet but for where it listens.
            rust_log: Some("warn,kubectl_imageauto=info"),
            ..Launch::default()
        },
        None,
    );
    let pid = serve.pid().expect("serve runs");
    let webhook = loop {
        if let Some(a) = serve.logged_addr("webhook") {
            break a.port();
        }
        assert!(serve.running(), "serve stopped:\n{}", serve.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    // Ready, and the view holds every policy: the review is admitted.
    let ca = loop {
        if let Ok(ca) = std::fs::read(dir.path().join("certs/ca.crt")) {
            break ca;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    loop {
        let allowed = client
            .post(format!("https://localhost:{webhook}/validate/workloads"))
            .body(body(&ns))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|v| v["response"]["allowed"] == true);
        if allowed {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the webhook never admitted the review"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let settled = settle(pid);
    let idle_fds = open_files(pid);

    // Warm-up: connections, caches, the allocator.
    let _ = hey(webhook, "5s", body_file);
    let echo_before = echo.map(|p| hey(p, duration, body_file));
    let alone = measured(pid, || hey(webhook, duration, body_file));
    let mut attacked = Vec::new();
    for pause in [15, 2] {
        let plan = Plan {
            path: "/validate/workloads".into(),
            rounds: 60 / pause + 1,
            pause: Duration::from_secs(pause as u64),
            ..Plan::new(
                format!("127.0.0.1:{webhook}").parse().unwrap(),
                Some(ca.clone()),
                1000,
                1000,
            )
        };
        let slow = SlowClients::start(plan);
        slow.wait_tried(2000, Duration::from_secs(60));
        let m = measured(pid, || hey(webhook, duration, body_file));
        attacked.push((pause, m, slow.stop()));
    }
    let echo_after = echo.map(|p| hey(p, duration, body_file));

    let line = |what: &str, m: &Measured| {
        let r = &m.run;
        println!(
            "{what}: {:.0} reviews/s, p50 {:.2} ms, p99 {:.2} ms, {} answered 200, {} errors; serve's CPU {:.0}% of a core, RSS peak {:.1} MiB, descriptors peak {} (idle {idle_fds})",
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.ok,
            r.errors,
            m.cpu * 100.0,
            m.rss as f64 / 1024.0,
            m.fds
        );
    };
    println!(
        "serve's admission webhook, workload rule, {POLICIES} ImagePolicies in a real kube-apiserver (serve idle {:.0} s after ready), hey -z {duration} -c 20 -q 50 over TLS:",
        settled.as_secs_f64()
    );
    line("  alone", &alone);
    for (pause, m, seen) in &attacked {
        line(
            &format!(
                "  with 1,000 idle + 1,000 slow-header clients, back {pause} s after each close"
            ),
            m,
        );
        println!(
            "    the slow clients: {} connections opened, {} closed by serve, {} refused or timed out at connect",
            seen.opened, seen.closed_by_server, seen.failed
        );
    }
    for (when, run) in [("before", &echo_before), ("after", &echo_after)] {
        if let Some(r) = run {
            println!(
                "  the bare axum + rustls peer, same load, {when}: p50 {:.2} ms, p99 {:.2} ms, {} errors",
                r.p50_ms, r.p99_ms, r.errors
            );
        }
    }
    let aim = |r: &Run| r.p99_ms < 5.0 && r.errors == 0;
    let verdict = |r: &Run| if aim(r) { "met" } else { "MISSED" };
    println!(
        "  aim p99 < 5 ms, no errors: {} alone, {} / {} under the slow clients (15 s / 2 s)",
        verdict(&alone.run),
        verdict(&attacked[0].1.run),
        verdict(&attacked[1].1.run)
    );
    drop(serve);
}
