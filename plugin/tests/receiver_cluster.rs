//! Registry events through `serve --receiver-addr`: the real registry's
//! notifications to a Flux Receiver's path reach Git with no interval
//! elapsing; every sender type proves itself or is refused; a hundred
//! policies changing at once make one commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{HttpsGit, Repos, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use imageauto_tests::serve::{Serve, wait_for};
use sha2::Digest;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn path(token: &str, name: &str, ns: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(format!("{token}{name}{ns}"));
    format!("/hook/{:x}", h.finalize())
}

fn push(reg: &Registry, repo: &str, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, None).push(repo, &tags, false));
}

/// `git show SPEC` in a bare repository; empty while SPEC does not exist.
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

fn cluster() -> &'static Cluster {
    let c = Cluster::shared();
    c.install_crds();
    c
}

/// A fleet repository over HTTPS, with its Secret and GitRepository in `ns`.
fn fleet(c: &Cluster, ns: &str, files: &[(&str, &str)]) -> (Repos, std::path::PathBuf, HttpsGit) {
    let repos = Repos::new();
    let bare = repos.create("fleet", files);
    let tls = Tls::new("git CA");
    let git = HttpsGit::start(repos.dir.path(), "bot", "pw", &tls);
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: git, namespace: {ns}}}\ndata: {{username: {}, password: {}, ca.crt: {}}}\n---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: {ns}}}\nspec: {{interval: 1h, url: '{}', ref: {{branch: main}}, secretRef: {{name: git}}}}\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageUpdateAutomation\nmetadata: {{name: fleet, namespace: {ns}}}\nspec:\n  interval: 1h\n  sourceRef: {{kind: GitRepository, name: fleet}}\n  git:\n    commit: {{author: {{email: bot@example.com}}}}\n    push: {{branch: auto}}\n",
        b64("bot"),
        b64("pw"),
        b64(&tls.ca_pem),
        git.url("fleet")
    ));
    (repos, bare, git)
}

#[test]
fn a_pushed_tag_reaches_git_through_the_registrys_notifications() {
    let c = cluster();
    let ns = c.namespace("notify");
    let rport = imageauto_tests::free_port();
    let hook = path("notify-token", "registry", &ns);
    let reg = Registry::start_with(
        Auth::Anonymous,
        None,
        &format!(
            "notifications:\n  endpoints:\n    - name: imageauto\n      url: http://127.0.0.1:{rport}{hook}\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
        ),
    );
    push(&reg, "team/web", &["1.0.0"]);
    let host = reg.host();
    let (_repos, bare, _git) = fleet(
        c,
        &ns,
        &[(
            "web.yaml",
            &format!("image: {host}/team/web:1.0.0 # {{\"$imagepolicy\": \"{ns}:web\"}}\n"),
        )],
    );
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
    - {{apiVersion: image.toolkit.fluxcd.io/v1, kind: ImageRepository, name: '*'}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}}}
spec: {{image: {host}/team/web, interval: 1h, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: other, namespace: {ns}}}
spec: {{image: {host}/team/other, interval: 1h, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: web, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: web}}
  policy: {{semver: {{range: '1.x'}}}}
"#,
        token = b64("notify-token"),
    ));
    push(&reg, "team/other", &["0.1.0"]);
    let s = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            &format!("127.0.0.1:{rport}"),
        ],
    );
    // The Receiver's status, as Flux writes it.
    wait_for(
        Duration::from_secs(30),
        "the Receiver's webhookPath",
        || {
            let st = c.get_json(&["-n", &ns, "receiver", "registry"])["status"].clone();
            (st["webhookPath"] == hook.as_str()).then_some(())
        },
        || s.logs(),
    );
    // The first scans ran at start: the policy is at 1.0.0.
    wait_for(
        Duration::from_secs(60),
        "the first scan",
        || {
            let st = c.get_json(&["-n", &ns, "imagepolicy", "web"])["status"].clone();
            (st["latestRef"]["tag"] == "1.0.0").then_some(())
        },
        || s.logs(),
    );
    // The registry retries what it could not deliver before serve started:
    // let that backlog drain.
    std::thread::sleep(Duration::from_secs(4));
    let other_scan = c.get_json(&["-n", &ns, "imagerepository", "other"])["status"]["lastScanResult"]["scanTime"].clone();
    // A new tag: the registry tells the receiver, and the commit follows.
    let started = std::time::Instant::now();
    push(&reg, "team/web", &["1.1.0"]);
    wait_for(
        Duration::from_secs(60),
        "the commit of 1.1.0",
        || {
            show(&bare, "auto:web.yaml")
                .contains("team/web:1.1.0")
                .then_some(())
        },
        || s.logs(),
    );
    eprintln!("tag pushed to commit pushed: {:?}", started.elapsed());
    // Only the pushed repository was scanned again.
    let after = c.get_json(&["-n", &ns, "imagerepository", "other"])["status"]["lastScanResult"]["scanTime"].clone();
    assert_eq!(
        other_scan,
        after,
        "the other repository was scanned again\n{}",
        s.logs()
    );
    let m = s.metrics();
    assert!(
        m.contains("imageauto_receiver_events_total{result=\"accepted\"}"),
        "{m}"
    );
}

/// POSTs `body` with `headers` to the receiver; returns the status.
fn post(port: u16, path: &str, headers: &[(&str, String)], body: &str) -> u16 {
    let client = reqwest::blocking::Client::new();
    let mut r = client
        .post(format!("http://127.0.0.1:{port}{path}"))
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.send().map(|r| r.status().as_u16()).unwrap_or(0)
}

fn hmac(key: &str, body: &str, algo: ring::hmac::Algorithm) -> String {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(algo, key.as_bytes()), body.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_sender_type_proves_itself_or_is_refused() {
    let c = cluster();
    let ns = c.namespace("senders");
    let rport = imageauto_tests::free_port();
    let types = [
        "generic-hmac",
        "github",
        "gitlab",
        "harbor",
        "nexus",
        "dockerhub",
        "quay",
        "cdevents",
        "generic",
    ];
    let mut yaml = String::new();
    for t in types {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {t}, namespace: {ns}}}\ndata: {{token: {}}}\n---\napiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: {t}, namespace: {ns}}}\nspec:\n  type: {t}\n  secretRef: {{name: {t}}}\n  resources: [{{kind: ImageRepository, name: web}}]\n---\n",
            b64(&format!("tok-{t}"))
        ));
    }
    yaml.push_str(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{image: 127.0.0.1:1/team/web, interval: 1h, insecure: true}}\n"
    ));
    c.apply(&yaml);
    let s = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            &format!("127.0.0.1:{rport}"),
        ],
    );
    let p = |t: &str| path(&format!("tok-{t}"), t, &ns);
    // The table fills from the Receivers.
    wait_for(
        Duration::from_secs(30),
        "the receiver to know its Receivers",
        || (post(rport, &p("generic"), &[], "{}") == 200).then_some(()),
        || s.logs(),
    );
    let body = r#"{"repository":{"repo_name":"team/web"}}"#;
    let sha256 = |t: &str| hmac(&format!("tok-{t}"), body, ring::hmac::HMAC_SHA256);
    let sha1 = |t: &str| {
        hmac(
            &format!("tok-{t}"),
            body,
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        )
    };
    type Headers<'a> = Vec<(&'a str, String)>;
    let cases: Vec<(&str, Headers, Headers)> = vec![
        (
            "generic-hmac",
            vec![("X-Signature", format!("sha256={}", sha256("generic-hmac")))],
            vec![("X-Signature", format!("sha256={}", "0".repeat(64)))],
        ),
        (
            "github",
            vec![
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", sha256("github")),
                ),
                ("X-GitHub-Event", "package".into()),
            ],
            vec![
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", sha256("gitlab")),
                ),
                ("X-GitHub-Event", "package".into()),
            ],
        ),
        (
            "gitlab",
            vec![
                ("X-Gitlab-Token", "tok-gitlab".into()),
                ("X-Gitlab-Event", "Push Hook".into()),
            ],
            vec![("X-Gitlab-Token", "tok-harbor".into())],
        ),
        (
            "harbor",
            vec![("Authorization", "tok-harbor".into())],
            vec![("Authorization", "Bearer tok-harbor".into())],
        ),
        (
            "nexus",
            vec![("X-Nexus-Webhook-Signature", sha1("nexus"))],
            vec![("X-Nexus-Webhook-Signature", sha1("github"))],
        ),
    ];
    for (t, good, forged) in cases {
        assert_eq!(post(rport, &p(t), &good, body), 200, "{t} with its proof");
        assert_eq!(post(rport, &p(t), &forged, body), 401, "{t} forged");
        assert_eq!(post(rport, &p(t), &[], body), 401, "{t} without proof");
    }
    // The path is the proof for these.
    for t in ["dockerhub", "quay", "generic"] {
        assert_eq!(post(rport, &p(t), &[], body), 200, "{t}");
    }
    assert_eq!(
        post(
            rport,
            &p("cdevents"),
            &[("Ce-Type", "dev.cdevents.artifact.published.0.1.1".into())],
            body
        ),
        200
    );
    // Unknown paths say nothing.
    assert_eq!(post(rport, "/hook/0000", &[], body), 404);
    assert_eq!(post(rport, "/anything", &[], body), 404);
    // A body over the cap.
    assert_eq!(post(rport, &p("generic"), &[], &"x".repeat(2 << 20)), 413);
    // Refusals leave an event on the Receiver.
    let events = c.kubectl_ok(&["-n", &ns, "get", "events", "-o", "yaml"]);
    assert!(
        events.contains("ValidationFailed") && events.contains("Receiver"),
        "{events}"
    );
    // No token in the logs.
    for t in types {
        assert!(!s.logs().contains(&format!("tok-{t}")));
    }
}

#[test]
fn a_hundred_policies_changing_at_once_make_one_commit() {
    let c = cluster();
    let ns = c.namespace("batch");
    let reg = Registry::start(Auth::Anonymous, None);
    let host = reg.host();
    let n = 100;
    for i in 0..n {
        push(&reg, &format!("team/app-{i}"), &["1.0.0"]);
    }
    let file: String = (0..n)
        .map(|i| {
            format!("app{i}: {host}/team/app-{i}:1.0.0 # {{\"$imagepolicy\": \"{ns}:app-{i}\"}}\n")
        })
        .collect();
    let (_repos, bare, _git) = fleet(c, &ns, &[("apps.yaml", &file)]);
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str(&format!(
            "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: app-{i}, namespace: {ns}}}\nspec: {{image: {host}/team/app-{i}, interval: 1h, insecure: true}}\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {{name: app-{i}, namespace: {ns}}}\nspec:\n  imageRepositoryRef: {{name: app-{i}}}\n  policy: {{semver: {{range: '1.x'}}}}\n---\n"
        ));
    }
    c.apply(&yaml);
    let s = Serve::start(bin(), c, &["-n", &ns, "--leader-elect=false"]);
    wait_for(
        Duration::from_secs(120),
        "every policy at 1.0.0",
        || {
            let v = c.get_json(&["-n", &ns, "imagepolicies"]);
            let done = v["items"]
                .as_array()?
                .iter()
                .filter(|p| p["status"]["latestRef"]["tag"] == "1.0.0")
                .count();
            (done == n).then_some(())
        },
        || s.logs(),
    );
    // Let the automation settle (nothing to change yet).
    std::thread::sleep(Duration::from_secs(2));
    let before = git_text(&bare, &["rev-list", "--count", "--all"]);
    for i in 0..n {
        push(&reg, &format!("team/app-{i}"), &["1.1.0"]);
    }
    // Every repository asked to scan at once.
    c.kubectl_ok(&[
        "-n",
        &ns,
        "annotate",
        "--overwrite",
        "imagerepositories",
        "--all",
        "reconcile.fluxcd.io/requestedAt=burst",
    ]);
    wait_for(
        Duration::from_secs(120),
        "all 100 changes on the branch",
        || {
            let f = show(&bare, "auto:apps.yaml");
            (f.matches(":1.1.0").count() == n).then_some(())
        },
        || s.logs(),
    );
    let commits: usize = git_text(&bare, &["rev-list", "--count", "--all"])
        .parse()
        .unwrap();
    let before: usize = before.parse().unwrap();
    assert_eq!(
        commits - before,
        1,
        "{}",
        git_text(&bare, &["log", "--oneline", "--all"])
    );
}

/// One request on `s` (kept alive): the status and the body, or `None`
/// when the connection is closed first.
fn exchange(s: &mut std::net::TcpStream, head: &str, body: &[u8]) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    s.flush().ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((h, rest)) = text.split_once("\r\n\r\n") {
            let len: usize = h
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if rest.len() >= len {
                let status = h.split_whitespace().nth(1)?.parse().ok()?;
                return Some((status, rest.to_string()));
            }
        }
    }
}

/// 10,000 half-sent requests on the receiver's port (a bounded loop, held
/// open by this test; that fits its open-file limit, which it checks):
/// serve keeps at most its cap of them, so its descriptors, its health
/// endpoints, the webhook and the receiver itself are untouched; memory
/// stays near where it was. Before, 19,960 of them took every descriptor.
/// Then bodies over the cap get their 413 before the connection ends.
#[test]
fn half_sent_requests_cannot_starve_the_process() {
    use imageauto_tests::slow::{memory_kib, open_files, open_files_limit};
    use std::io::Write;
    let c = cluster();
    let ns = c.namespace("flood");
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tok, namespace: {ns}}}\ndata: {{token: {}}}\n---\napiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: hook, namespace: {ns}}}\nspec:\n  type: generic\n  secretRef: {{name: tok}}\n  resources: [{{kind: ImageRepository, name: web}}]\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{image: 127.0.0.1:1/team/web, interval: 1h, insecure: true}}\n",
        b64("tok-flood")
    ));
    let (rport, wport) = (imageauto_tests::free_port(), imageauto_tests::free_port());
    let certs = tempfile::tempdir().unwrap();
    let s = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            &format!("127.0.0.1:{rport}"),
            "--webhook-addr",
            &format!("127.0.0.1:{wport}"),
            "--cert-dir",
            certs.path().to_str().unwrap(),
        ],
    );
    let hook = path("tok-flood", "hook", &ns);
    wait_for(
        Duration::from_secs(30),
        "the receiver to know its Receiver",
        || (post(rport, &hook, &[], "{}") == 200).then_some(()),
        || s.logs(),
    );
    let pid = s.pid().unwrap();
    let (fds_before, rss_before) = (open_files(pid), memory_kib(pid, "VmRSS"));
    let n = 10_000;
    let limit = open_files_limit().expect("the open-file limit");
    assert!(
        limit >= n as u64 + 1000,
        "{n} client connections need an open-file limit of {} or more here (ulimit -n is {limit})",
        n + 1000
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{rport}").parse().unwrap();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    let mut most_fds = 0;
    for i in 0..n {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut t) => {
                // Half a head, or a whole head and a tenth of the body.
                let half: &[u8] = if i % 2 == 0 {
                    b"POST /hook/0123 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"
                } else {
                    b"POST /hook/0123 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"event"
                };
                let _ = t.write_all(half);
                held.push(t);
            }
            Err(_) => failed += 1,
        }
        if i % 500 == 0 {
            most_fds = most_fds.max(open_files(pid));
        }
    }
    assert!(held.len() > n / 2, "{failed} of {n} connections failed");
    most_fds = most_fds.max(open_files(pid));
    // The receiver holds at most its 256 connections.
    assert!(
        most_fds < fds_before + 256 + 64,
        "serve had {most_fds} descriptors open (from {fds_before})"
    );
    // While the flood is held: health, readiness, the webhook, the hook.
    assert_eq!(s.get(s.health_port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(s.get(s.health_port, "/readyz").map(|r| r.0), Some(200));
    let answer = s.get(wport, "/validate/workloads");
    assert_eq!(
        answer.map(|r| r.0),
        Some(400),
        "the webhook's HTTPS-only answer"
    );
    assert_eq!(post(rport, &hook, &[], "{}"), 200);
    let rss = memory_kib(pid, "VmRSS");
    assert!(
        rss < rss_before + 64 * 1024,
        "RSS went from {rss_before} KiB to {rss} KiB"
    );
    assert!(!s.logs().contains("Too many open files"), "{}", s.logs());
    drop(held);

    // A body over the 1 MiB cap: 413, read to its end, and the same
    // connection goes on.
    let mut t = std::net::TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let big = vec![b'x'; 2 << 20];
    let head = format!(
        "POST {hook} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let (status, text) = exchange(&mut t, &head, &big).expect("an answer to the big body");
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("larger than 1048576 bytes"), "{text}");
    let head = format!("POST {hook} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(exchange(&mut t, &head, b"{}").map(|r| r.0), Some(200));
    // One declared past what is read and dropped (16 MiB): 413 without
    // reading it, and the connection closes once the client stops sending
    // (its first 2 MiB are read and dropped meanwhile, so that the answer
    // is not lost to a reset).
    let mut t = std::net::TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head =
        format!("POST {hook} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 104857600\r\n\r\n");
    let (status, _) = exchange(&mut t, &head, &big).expect("an answer before the close");
    assert_eq!(status, 413);
    assert!(
        exchange(&mut t, &head, b"").is_none(),
        "the connection is closed"
    );
}
