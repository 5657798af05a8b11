//! `kubectl imageauto serve` at scale, for `bench/serve-scale.sh`: a real
//! kube-apiserver with R ImageRepositories of T tags each and R ImagePolicies,
//! a minimal tag-list server (every repository answers T tags), and the
//! release binary. Reports the time until every policy is resolved, the
//! steady-state RSS, and the CPU used while idle (interval 1h) over a window.
//!
//!     serve-scale BIN REPOSITORIES TAGS IDLE_SECONDS
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::kube::Cluster;
use imageauto_tests::serve::{Launch, Serve};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Answers every `GET /v2/<repo>/tags/list` with the same `tags` tags.
fn tag_server(tags: usize) -> u16 {
    let body = serde_json::json!({
        "name": "x",
        "tags": (0..tags).map(|i| format!("1.{}.{}", i / 100, i % 100)).collect::<Vec<_>>(),
    })
    .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                    }
                    let (status, b) = if line.contains("/tags/list") {
                        ("200 OK", body.as_str())
                    } else {
                        ("404 Not Found", "{}")
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    );
                    if conn.write_all(head.as_bytes()).is_err()
                        || conn.write_all(b.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, bin, repos, tags, idle] = args.as_slice() else {
        panic!("usage: serve-scale BIN REPOSITORIES TAGS IDLE_SECONDS");
    };
    let (repos, tags, idle): (usize, usize, u64) = (
        repos.parse().unwrap(),
        tags.parse().unwrap(),
        idle.parse().unwrap(),
    );
    let cluster = Cluster::start();
    cluster.install_crds();
    let ns = cluster.namespace("scale");
    let port = tag_server(tags);
    let mut items = Vec::new();
    for i in 0..repos {
        items.push(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
            "metadata": {"name": format!("r{i}"), "namespace": ns},
            "spec": {"image": format!("127.0.0.1:{port}/team/app-{i}"), "interval": "1h", "insecure": true}
        }));
        items.push(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": format!("p{i}"), "namespace": ns},
            "spec": {"imageRepositoryRef": {"name": format!("r{i}")}, "policy": {"semver": {"range": ">=1.0.0"}}}
        }));
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let storage = tempfile::tempdir().unwrap();
    let applied = Instant::now();
    cluster.apply(&list);
    let serve = Serve::launch(
        bin,
        &cluster,
        &Launch {
            extra: &["--leader-elect=false", "-n", &ns],
            storage: storage.path(),
            rust_log: Some("warn,kubectl_imageauto=info"),
            ..Launch::default()
        },
        None,
    );
    let pid = serve.pid().expect("serve runs");
    let resolved = loop {
        let v = cluster.get_json(&["-n", &ns, "imagepolicies"]);
        let done = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"]["latestRef"]["tag"].is_string())
            .count();
        if done == repos {
            break applied.elapsed();
        }
        if applied.elapsed() > Duration::from_secs(600) {
            panic!("only {done} of {repos} policies resolved in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Let the status writes' echoes settle, then measure.
    std::thread::sleep(Duration::from_secs(10));
    let rss = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let hwm = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let ticks = cpu_ticks(pid) - t0;
    let rss_after = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let stored: u64 = walk_size(&storage.path().join("tags"));
    println!(
        "{repos} ImageRepositories x {tags} tags ({} tags), {repos} ImagePolicies: all resolved {:.1} s after apply; \
RSS {:.1} MiB steady ({:.1} MiB after the idle window, peak {:.1} MiB); idle CPU {:.2}% of one core over {idle} s; tags on disk {:.1} MiB",
        repos * tags,
        resolved.as_secs_f64(),
        rss as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        hwm as f64 / 1024.0,
        ticks as f64 / (idle as f64 * 100.0) * 100.0,
        stored as f64 / (1 << 20) as f64,
    );
    drop(serve);
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += walk_size(&p);
        } else {
            n += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    n
}
