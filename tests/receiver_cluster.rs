//! Registry events through `serve --receiver-addr`: the real registry's
//! notifications to a Flux Receiver's path reach Git with no interval
//! elapsing; every sender type proves itself or is refused with Flux's
//! answers; the Receiver's status, its filters and its tokens as
//! notification-controller v1.9.3 has them (each test names the file of
//! Flux's it follows); a hundred policies changing at once make one
//! commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{HttpsGit, Repos, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, FakeServer, Pusher, Registry, Tls};
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
            "notifications:\n  endpoints:\n    - name: imageauto\n      url: http://127.0.0.1:{rport}{hook}\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n      ignore:\n        actions: [pull]\n"
        ),
    );
    // Until serve listens, a stand-in on the receiver's port takes the
    // registry's notifications of the first pushes, so that none is left
    // for the registry to deliver again once serve is up.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = {
        let seen = seen.clone();
        FakeServer::start_on(&format!("127.0.0.1:{rport}"), move |req| {
            // Without the blanks the registry indents its JSON with.
            let body = String::from_utf8_lossy(&req.body);
            seen.lock()
                .unwrap()
                .extend(body.chars().filter(|c| !c.is_whitespace()));
            (200, Vec::new(), Vec::new())
        })
    };
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
    - {{apiVersion: image.toolkit.fluxcd.io/v1, kind: ImageRepository, name: '*', matchLabels: {{}}}}
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
    // The registry sends its events in order: the last push's tag event
    // means every earlier one was delivered too.
    wait_for(
        Duration::from_secs(30),
        "the registry's notification of team/other:0.1.0",
        || {
            let seen = seen.lock().unwrap();
            (seen.contains("\"repository\":\"team/other\"") && seen.contains("\"tag\":\"0.1.0\""))
                .then_some(())
        },
        || seen.lock().unwrap().clone(),
    );
    drop(sink);
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
    // Only the pushed repository was scanned again (the extension: the
    // payload names it among the Receiver's).
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

/// Sends `body` with `headers` to the receiver with `method`; returns the
/// status (0 when there is no answer).
fn send(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let client = reqwest::blocking::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = client
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .body(body.to_vec());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.send().map(|r| r.status().as_u16()).unwrap_or(0)
}

/// POSTs `body` with `headers` to the receiver; returns the status.
fn post(port: u16, path: &str, headers: &[(&str, String)], body: &str) -> u16 {
    send(port, "POST", path, headers, body.as_bytes())
}

fn hmac(key: &str, body: &str, algo: ring::hmac::Algorithm) -> String {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(algo, key.as_bytes()), body.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until Receiver `name` shows `path` and is Ready.
fn wait_served(c: &Cluster, s: &Serve, ns: &str, name: &str, path: &str) {
    wait_for(
        Duration::from_secs(30),
        &format!("Receiver {name} Ready at its path"),
        || {
            let st = c.get_json(&["-n", ns, "receiver", name])["status"].clone();
            let ready = st["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (ready && st["webhookPath"] == path).then_some(())
        },
        || s.logs(),
    );
}

/// The `reconcile.fluxcd.io/requestedAt` of an ImageRepository.
fn requested_at(c: &Cluster, ns: &str, name: &str) -> serde_json::Value {
    c.get_json(&["-n", ns, "imagerepository", name])["metadata"]["annotations"]
        ["reconcile.fluxcd.io/requestedAt"]
        .clone()
}

/// Every sender type proves itself as notification-controller's `validate`
/// (internal/server/receiver_handlers.go) checks it, or gets its 400.
#[test]
fn every_sender_type_proves_itself_or_is_refused() {
    let c = cluster();
    let ns = c.namespace("senders");
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
        "bitbucket",
        "acr",
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
            "127.0.0.1:0",
        ],
    );
    let rport = s
        .logged_addr("receiver")
        .expect("the receiver's address")
        .port();
    let p = |t: &str| path(&format!("tok-{t}"), t, &ns);
    for t in types {
        wait_served(c, &s, &ns, t, &p(t));
    }
    let body = r#"{"repository":{"repo_name":"team/web"}}"#;
    let sha256 = |t: &str| hmac(&format!("tok-{t}"), body, ring::hmac::HMAC_SHA256);
    let sha1 = |t: &str| {
        hmac(
            &format!("tok-{t}"),
            body,
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        )
    };
    let json = || ("Content-Type", "application/json".to_string());
    type Headers<'a> = Vec<(&'a str, String)>;
    let cases: Vec<(&str, Headers, Headers)> = vec![
        (
            "generic-hmac",
            vec![("X-Signature", format!("sha256={}", sha256("generic-hmac")))],
            // Flux's HMAC needs its prefix.
            vec![("X-Signature", sha256("generic-hmac"))],
        ),
        (
            "github",
            vec![
                json(),
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", sha256("github")),
                ),
                ("X-GitHub-Event", "package".into()),
            ],
            // The right signature without a content type.
            vec![
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", sha256("github")),
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
            vec![("X-Nexus-Webhook-Signature", sha1("nexus").to_uppercase())],
        ),
        (
            "bitbucket",
            vec![
                json(),
                ("X-Hub-Signature", format!("sha256={}", sha256("bitbucket"))),
                ("X-Event-Key", "repo:refs_changed".into()),
            ],
            vec![
                json(),
                ("X-Hub-Signature", format!("sha256={}", sha256("github"))),
            ],
        ),
    ];
    for (t, good, forged) in cases {
        assert_eq!(post(rport, &p(t), &good, body), 200, "{t} with its proof");
        assert_eq!(post(rport, &p(t), &forged, body), 400, "{t} forged");
        assert_eq!(post(rport, &p(t), &[], body), 400, "{t} without proof");
    }
    // GitHub's ping is an event like any other (no special case in Flux).
    let ping = vec![
        json(),
        (
            "X-Hub-Signature-256",
            format!("sha256={}", sha256("github")),
        ),
        ("X-GitHub-Event", "ping".into()),
    ];
    assert_eq!(post(rport, &p("github"), &ping, body), 200);
    // The path is the proof for these; their bodies must decode as Flux's
    // structs.
    for t in ["dockerhub", "quay", "generic", "acr"] {
        assert_eq!(post(rport, &p(t), &[], body), 200, "{t}");
    }
    for t in ["dockerhub", "quay", "acr"] {
        assert_eq!(post(rport, &p(t), &[], "not json"), 400, "{t} junk");
    }
    assert_eq!(post(rport, &p("generic"), &[], "not json"), 200);
    // The CDEvent of Flux's receiver_handler_test.go.
    let ce = r#"{"context":{"version":"0.3.0","id":"5555","source":"github","timestamp":"2023-12-07T14:51:29.908479495Z","type":"dev.cdevents.change.merged.0.2.0"},"subject":{"type":"change","id":"5555"}}"#;
    assert_eq!(
        post(
            rport,
            &p("cdevents"),
            &[("Ce-Type", "cd.change.merged.v1".into())],
            ce
        ),
        200
    );
    assert_eq!(post(rport, &p("cdevents"), &[], body), 400);
    // Any method Flux's mux takes.
    for m in ["GET", "PUT", "DELETE", "PATCH"] {
        assert_eq!(send(rport, m, &p("generic"), &[], b"{}"), 200, "{m}");
    }
    // Unknown paths, and the path with a query (Flux matches the request
    // URI as sent).
    assert_eq!(post(rport, "/hook/0000", &[], body), 404);
    assert_eq!(post(rport, "/anything", &[], body), 404);
    assert_eq!(
        post(rport, &format!("{}?a=b", p("generic")), &[], body),
        404
    );
    // Flux's cap (internal/server/limits.go): 3 MiB is taken, one byte
    // more is not.
    let cap = 3 * 1024 * 1024;
    assert_eq!(
        send(rport, "POST", &p("generic"), &[], &vec![b'x'; cap]),
        200
    );
    assert_eq!(
        send(rport, "POST", &p("generic"), &[], &vec![b'x'; cap + 1]),
        413
    );
    // Refusals write nothing about the Receivers: Flux only logs them.
    let events = c.get_json(&["-n", &ns, "events"]);
    let warnings: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "Warning" && e["involvedObject"]["kind"] == "Receiver")
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    // No token in the logs.
    for t in types {
        assert!(!s.logs().contains(&format!("tok-{t}")));
    }
}

/// The answers of notification-controller's `handlePayload`
/// (internal/server/receiver_handlers.go): 503 suspended or not Ready, 400
/// for an event not in `spec.events`, 500 when a resource cannot be
/// annotated (missing, another namespace under
/// `--no-cross-namespace-refs`, `*` without `matchLabels`); and a flood
/// refused before anything is verified or written.
#[test]
fn answers_as_fluxs_handle_payload() {
    let c = cluster();
    let ns = c.namespace("answers");
    let other = c.namespace("answers-other");
    let receiver = |name: &str, t: &str, extra: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{token: {}}}\n---\napiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  type: {t}\n  secretRef: {{name: {name}}}\n{extra}  resources: {resources}\n---\n",
            b64(&format!("tok-{name}"))
        )
    };
    let mut yaml = String::new();
    yaml.push_str(&receiver(
        "ok",
        "generic",
        "",
        "[{kind: ImageRepository, name: web}]",
    ));
    yaml.push_str(&receiver(
        "paused",
        "generic",
        "",
        "[{kind: ImageRepository, name: web}]",
    ));
    yaml.push_str(&receiver(
        "gh",
        "github",
        "  events: [push]\n",
        "[{kind: ImageRepository, name: web}]",
    ));
    yaml.push_str(&receiver(
        "missing",
        "generic",
        "",
        "[{kind: ImageRepository, name: web}, {kind: ImageRepository, name: nowhere}]",
    ));
    yaml.push_str(&receiver(
        "cross",
        "generic",
        "",
        &format!("[{{kind: ImageRepository, name: web, namespace: {other}}}]"),
    ));
    yaml.push_str(&receiver(
        "wild",
        "generic",
        "",
        "[{kind: ImageRepository, name: '*'}]",
    ));
    yaml.push_str(&receiver(
        "flooded",
        "generic-hmac",
        "",
        "[{kind: ImageRepository, name: quiet}]",
    ));
    for (n, space) in [
        ("web", ns.as_str()),
        ("quiet", ns.as_str()),
        ("web", other.as_str()),
    ] {
        yaml.push_str(&format!(
            "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: {n}, namespace: {space}}}\nspec: {{image: 127.0.0.1:1/team/{n}, interval: 1h, insecure: true}}\n---\n"
        ));
    }
    c.apply(&yaml);
    let s = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--no-cross-namespace-refs",
            "--receiver-addr",
            "127.0.0.1:0",
        ],
    );
    let rport = s
        .logged_addr("receiver")
        .expect("the receiver's address")
        .port();
    let p = |name: &str| path(&format!("tok-{name}"), name, &ns);
    for name in ["ok", "paused", "gh", "missing", "cross", "wild", "flooded"] {
        wait_served(c, &s, &ns, name, &p(name));
    }
    assert_eq!(post(rport, &p("ok"), &[], "{}"), 200);
    assert!(requested_at(c, &ns, "web").is_string());
    // Suspended: 503, its status as it was.
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "receiver",
        "paused",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    wait_for(
        Duration::from_secs(10),
        "a 503 from the suspended Receiver",
        || (post(rport, &p("paused"), &[], "{}") == 503).then_some(()),
        || s.logs(),
    );
    // Not Ready (a filter that does not compile stalls it; its path
    // stays): 503.
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "receiver",
        "ok",
        "--type=merge",
        "-p",
        r#"{"spec":{"resourceFilter":"res.metadata.name"}}"#,
    ]);
    wait_for(
        Duration::from_secs(20),
        "a 503 from the stalled Receiver",
        || (post(rport, &p("ok"), &[], "{}") == 503).then_some(()),
        || s.logs(),
    );
    let st = c.get_json(&["-n", &ns, "receiver", "ok"])["status"].clone();
    assert_eq!(st["webhookPath"], p("ok").as_str());
    // An event not listed: 400.
    let body = "{}";
    let gh = |event: &str| {
        vec![
            ("Content-Type", "application/json".to_string()),
            (
                "X-Hub-Signature-256",
                format!("sha256={}", hmac("tok-gh", body, ring::hmac::HMAC_SHA256)),
            ),
            ("X-GitHub-Event", event.to_string()),
        ]
    };
    assert_eq!(post(rport, &p("gh"), &gh("ping"), body), 400);
    assert_eq!(post(rport, &p("gh"), &gh("Push"), body), 200);
    // A resource that is not there, one in another namespace under
    // --no-cross-namespace-refs, `*` without matchLabels: 500.
    assert_eq!(post(rport, &p("missing"), &[], body), 500);
    assert_eq!(post(rport, &p("cross"), &[], body), 500);
    assert!(requested_at(c, &other, "web").is_null());
    assert_eq!(post(rport, &p("wild"), &[], body), 500);
    // A flood of forged requests: refused at the rate limit or at the
    // signature, and nothing written (no annotation, no event).
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let code = post(
            rport,
            &p("flooded"),
            &[("X-Signature", format!("sha256={}", "0".repeat(64)))],
            body,
        );
        *codes.entry(code).or_insert(0) += 1;
    }
    assert_eq!(
        codes.keys().copied().collect::<Vec<u16>>(),
        [400, 429],
        "{codes:?}"
    );
    assert!(requested_at(c, &ns, "quiet").is_null());
    let events = c.get_json(&["-n", &ns, "events"]);
    let about: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "flooded" || e["regarding"]["name"] == "flooded")
        .filter(|e| e["reason"] != "Succeeded")
        .collect();
    assert!(about.is_empty(), "{about:?}");
    let m = s.metrics();
    assert!(
        m.contains("imageauto_receiver_events_total{result=\"rate-limited\"}"),
        "{m}"
    );
}

/// The status notification-controller's `ReceiverReconciler` writes
/// (internal/controller/receiver_controller.go): `TokenNotFound` and no
/// path without the Secret, `Receiver initialized for path: …` with it,
/// the token as stored (a trailing newline is part of it), a rotation
/// followed through the Secret's watch, `spec.interval` honoured.
#[test]
fn status_as_fluxs_receiver_controller() {
    let c = cluster();
    let ns = c.namespace("rstatus");
    c.apply(&format!(
        "apiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: hook, namespace: {ns}}}\nspec:\n  type: generic\n  interval: 2s\n  secretRef: {{name: tok}}\n  resources: [{{kind: ImageRepository, name: web}}]\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{image: 127.0.0.1:1/team/web, interval: 1h, insecure: true}}\n"
    ));
    let s = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            "127.0.0.1:0",
        ],
    );
    let rport = s
        .logged_addr("receiver")
        .expect("the receiver's address")
        .port();
    let conditions = || {
        let st = c.get_json(&["-n", &ns, "receiver", "hook"])["status"].clone();
        let conds: Vec<(String, String, String, String)> = st["conditions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["type"].as_str().unwrap_or("").to_string(),
                            c["status"].as_str().unwrap_or("").to_string(),
                            c["reason"].as_str().unwrap_or("").to_string(),
                            c["message"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (st, conds)
    };
    let missing =
        format!("unable to read token from secret '{ns}/tok' error: secrets \"tok\" not found");
    wait_for(
        Duration::from_secs(30),
        "TokenNotFound",
        || {
            let (st, conds) = conditions();
            (st["webhookPath"].is_null()
                && conds
                    == [
                        (
                            "Reconciling".into(),
                            "True".into(),
                            "ProgressingWithRetry".into(),
                            "Reconciliation in progress".into(),
                        ),
                        (
                            "Ready".into(),
                            "False".into(),
                            "TokenNotFound".into(),
                            missing.clone(),
                        ),
                    ])
            .then_some(())
        },
        || format!("{:?}\n{}", conditions(), s.logs()),
    );
    // A Secret without `token`.
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tok, namespace: {ns}}}\ndata: {{other: {}}}\n",
        b64("x")
    ));
    let no_key = format!("invalid '{ns}/tok' secret data: required fields 'token'");
    wait_for(
        Duration::from_secs(30),
        "the message of a Secret without token",
        || {
            let (_, conds) = conditions();
            conds
                .iter()
                .any(|c| c.2 == "TokenNotFound" && c.3 == no_key)
                .then_some(())
        },
        || format!("{:?}\n{}", conditions(), s.logs()),
    );
    // The token as stored, with its newline.
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tok, namespace: {ns}}}\ndata: {{token: {}}}\n",
        b64("first\n")
    ));
    let first = path("first\n", "hook", &ns);
    wait_served(c, &s, &ns, "hook", &first);
    let (st, conds) = conditions();
    assert_eq!(
        conds,
        [(
            "Ready".into(),
            "True".into(),
            "Succeeded".into(),
            format!("Receiver initialized for path: {first}")
        )]
    );
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(post(rport, &first, &[], "{}"), 200);
    assert_eq!(post(rport, &path("first", "hook", &ns), &[], "{}"), 404);
    // Rotation: the new path is served, the old one is gone.
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tok, namespace: {ns}}}\ndata: {{token: {}}}\n",
        b64("second")
    ));
    let second = path("second", "hook", &ns);
    wait_served(c, &s, &ns, "hook", &second);
    assert_eq!(post(rport, &second, &[], "{}"), 200);
    assert_eq!(post(rport, &first, &[], "{}"), 404);
    // Every 2 s, with Flux's event.
    let count = || {
        s.metrics()
            .lines()
            .find(|l| {
                l.starts_with("imageauto_reconcile_total{kind=\"Receiver\",result=\"success\"}")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // A Receiver at the default interval (10m): its rotated token can only
    // come through the Secret's watch.
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tok2, namespace: {ns}}}\ndata: {{token: {}}}\n---\napiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: watched, namespace: {ns}}}\nspec:\n  type: generic\n  secretRef: {{name: tok2}}\n  resources: [{{kind: ImageRepository, name: web}}]\n",
        b64("w1")
    ));
    wait_served(c, &s, &ns, "watched", &path("w1", "watched", &ns));
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tok2, namespace: {ns}}}\ndata: {{token: {}}}\n",
        b64("w2")
    ));
    wait_served(c, &s, &ns, "watched", &path("w2", "watched", &ns));
    assert_eq!(post(rport, &path("w2", "watched", &ns), &[], "{}"), 200);
    // Two more reconciliations at the 2 s interval, with no request.
    let before = count();
    wait_for(
        Duration::from_secs(20),
        "two reconciliations at the interval",
        || (count() >= before + 2.0).then_some(()),
        || format!("{before} -> {}\n{}", count(), s.logs()),
    );
    let events = c.kubectl_ok(&["-n", &ns, "get", "events"]);
    assert!(
        events.contains("Reconciliation finished, next run in 2s"),
        "{events}"
    );
    assert!(!s.logs().contains("second"));
}

/// `resourceFilter` and `resources[].filter` as CEL over `res` and `req`
/// (internal/server/receiver_resource_filter.go): both must accept; a
/// body that is not JSON content leaves `req` empty; an expression that
/// fails to evaluate is a 500. Named resources in another namespace are
/// annotated (no --no-cross-namespace-refs).
#[test]
fn filters_and_resources_as_flux_annotates_them() {
    let c = cluster();
    let ns = c.namespace("filters");
    let other = c.namespace("filters-other");
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tok, namespace: {ns}}}\ndata: {{token: {}}}\n---\napiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: hook, namespace: {ns}}}\nspec:\n  type: generic\n  secretRef: {{name: tok}}\n  resourceFilter: \"req.action == 'go'\"\n  resources:\n    - {{kind: ImageRepository, name: '*', matchLabels: {{team: alpha}}, filter: \"res.metadata.name != 'b'\"}}\n    - {{kind: ImageRepository, name: d, namespace: {other}}}\n---\n",
        b64("tok-filters")
    );
    for (n, team, space) in [
        ("a", "alpha", &ns),
        ("b", "alpha", &ns),
        ("c", "beta", &ns),
        ("d", "alpha", &other),
    ] {
        yaml.push_str(&format!(
            "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: {n}, namespace: {space}, labels: {{team: {team}}}}}\nspec: {{image: 127.0.0.1:1/team/{n}, interval: 1h, insecure: true}}\n---\n"
        ));
    }
    c.apply(&yaml);
    let s = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            "127.0.0.1:0",
        ],
    );
    let rport = s
        .logged_addr("receiver")
        .expect("the receiver's address")
        .port();
    let hook = path("tok-filters", "hook", &ns);
    wait_served(c, &s, &ns, "hook", &hook);
    let json = [("Content-Type", "application/json".to_string())];
    assert_eq!(post(rport, &hook, &json, r#"{"action":"no"}"#), 200);
    for (n, space) in [("a", &ns), ("b", &ns), ("c", &ns), ("d", &other)] {
        assert!(requested_at(c, space, n).is_null(), "{n}");
    }
    assert_eq!(post(rport, &hook, &json, r#"{"action":"go"}"#), 200);
    let annotated: Vec<bool> = [("a", &ns), ("b", &ns), ("c", &ns), ("d", &other)]
        .iter()
        .map(|(n, space)| requested_at(c, space, n).is_string())
        .collect();
    assert_eq!(annotated, [true, false, false, true]);
    // Not JSON content: `req` is {}, `req.action` has no such key: 500.
    assert_eq!(post(rport, &hook, &[], r#"{"action":"go"}"#), 500);
    // JSON content that is not JSON: 500.
    assert_eq!(post(rport, &hook, &json, "junk"), 500);
}

/// A loopback OIDC issuer (discovery and JWKS) and Google's JWKS stand-in,
/// signing RS256 tokens with a key this test makes (openssl).
struct Issuer {
    url: String,
    key: ring::signature::RsaKeyPair,
}

fn rsa_key() -> ring::signature::RsaKeyPair {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-outform",
            "DER",
        ])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    ring::signature::RsaKeyPair::from_der(&out.stdout).unwrap()
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Issuer {
    fn start() -> Issuer {
        use std::io::{Read, Write};
        let key = rsa_key();
        let c = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
        let jwks =
            serde_json::json!({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "test",
            "n": b64url(&c.n), "e": b64url(&c.e)}]})
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let discovery = serde_json::json!({"issuer": url, "jwks_uri": format!("{url}/jwks"),
            "id_token_signing_alg_values_supported": ["RS256"]})
        .to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let (status, body) = match path.as_str() {
                    "/.well-known/openid-configuration" => ("200 OK", discovery.clone()),
                    "/jwks" | "/certs" => ("200 OK", jwks.clone()),
                    _ => ("404 Not Found", String::new()),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Issuer { url, key }
    }

    fn sign_with(key: &ring::signature::RsaKeyPair, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "test"});
        let signed = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{signed}.{}", b64url(&sig))
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        Self::sign_with(&self.key, claims)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// generic-oidc (internal/server/receiver_oidc.go, receiver_claims.go):
/// the token verified against its issuer's JWKS and audience, the
/// provider's CEL validations, the claims in the filter; gcr
/// (`authenticateGCRRequest` in receiver_handlers.go): Google's token for
/// the Secret's email and audience (its JWKS here a loopback stand-in set
/// with --receiver-gcr-jwks-url), then the Pub/Sub envelope.
#[test]
fn oidc_and_gcr_tokens_are_verified() {
    let c = cluster();
    let ns = c.namespace("tokens");
    let issuer = Issuer::start();
    let iss = issuer.url.clone();
    c.apply(&format!(
        r#"apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {{name: oidc, namespace: {ns}}}
spec:
  type: generic-oidc
  oidcProviders:
    - issuerURL: {iss}
      variables: [{{name: owner, expression: claims.repository_owner}}]
      validations: [{{expression: "vars.owner == 'team'", message: "the owner must be team"}}]
  resourceFilter: "claims.repository == res.metadata.name"
  resources: [{{kind: ImageRepository, name: '*', matchLabels: {{}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: gcr, namespace: {ns}}}
stringData: {{token: tok-gcr, email: push@project.iam.gserviceaccount.com, audience: https://hooks.example.com}}
---
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {{name: gcr, namespace: {ns}}}
spec:
  type: gcr
  secretRef: {{name: gcr}}
  resources: [{{kind: ImageRepository, name: gcr}}]
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}}}
spec: {{image: 127.0.0.1:1/team/web, interval: 1h, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: db, namespace: {ns}}}
spec: {{image: 127.0.0.1:1/team/db, interval: 1h, insecure: true}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: gcr, namespace: {ns}}}
spec: {{image: 127.0.0.1:1/team/gcr, interval: 1h, insecure: true}}
"#
    ));
    let s = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            "127.0.0.1:0",
            "--receiver-gcr-jwks-url",
            &format!("{iss}/certs"),
        ],
    );
    let rport = s
        .logged_addr("receiver")
        .expect("the receiver's address")
        .port();
    // generic-oidc has no Secret: its path is that of an empty token.
    let oidc = path("", "oidc", &ns);
    wait_served(c, &s, &ns, "oidc", &oidc);
    let claims = |owner: &str, exp: u64, aud: &str| {
        serde_json::json!({"iss": iss, "aud": aud, "sub": "ci", "exp": exp, "iat": now(),
            "repository_owner": owner, "repository": "web"})
    };
    let bearer = |t: String| vec![("Authorization", format!("Bearer {t}"))];
    let good = issuer.sign(&claims("team", now() + 300, "notification-controller"));
    assert_eq!(post(rport, &oidc, &bearer(good.clone()), "{}"), 200);
    // The claims' filter: only `web`.
    assert!(requested_at(c, &ns, "web").is_string());
    assert!(requested_at(c, &ns, "db").is_null());
    // A validation that fails, an expired token, another audience, another
    // key, no token: 400.
    for (what, token) in [
        (
            "owner",
            issuer.sign(&claims("other", now() + 300, "notification-controller")),
        ),
        (
            "expired",
            issuer.sign(&claims("team", now() - 60, "notification-controller")),
        ),
        (
            "audience",
            issuer.sign(&claims("team", now() + 300, "someone-else")),
        ),
        (
            "key",
            Issuer::sign_with(
                &rsa_key(),
                &claims("team", now() + 300, "notification-controller"),
            ),
        ),
    ] {
        assert_eq!(post(rport, &oidc, &bearer(token), "{}"), 400, "{what}");
    }
    assert_eq!(post(rport, &oidc, &[], "{}"), 400);
    // gcr.
    let gcr = path("tok-gcr", "gcr", &ns);
    wait_served(c, &s, &ns, "gcr", &gcr);
    let google = |email: &str, verified: bool| {
        issuer.sign(&serde_json::json!({"iss": "https://accounts.google.com", "aud": "https://hooks.example.com",
            "email": email, "email_verified": verified, "exp": now() + 300, "iat": now()}))
    };
    let data =
        b64(r#"{"action":"INSERT","digest":"gcr.io/p/app@sha256:00","tag":"gcr.io/p/app:1.0.0"}"#);
    let envelope = format!(
        r#"{{"message":{{"data":"{data}","messageId":"1","publishTime":"2026-12-05T10:00:00Z"}},"subscription":"s"}}"#
    );
    assert_eq!(
        post(
            rport,
            &gcr,
            &bearer(google("push@project.iam.gserviceaccount.com", true)),
            &envelope
        ),
        200
    );
    assert!(requested_at(c, &ns, "gcr").is_string());
    assert_eq!(
        post(
            rport,
            &gcr,
            &bearer(google("other@project.iam.gserviceaccount.com", true)),
            &envelope
        ),
        400
    );
    assert_eq!(
        post(
            rport,
            &gcr,
            &bearer(google("push@project.iam.gserviceaccount.com", false)),
            &envelope
        ),
        400
    );
    assert_eq!(
        post(
            rport,
            &gcr,
            &bearer(google("push@project.iam.gserviceaccount.com", true)),
            "junk"
        ),
        400
    );
    assert!(!s.logs().contains(&good), "a token in the logs");
}

/// The Receiver kind installed after serve started: noticed, its
/// Receivers reconciled and served (a cluster of its own, without the
/// kind at first).
#[test]
fn a_receiver_kind_installed_later_is_served() {
    use imageauto_tests::kube::{crds_dir, crds_manifest, flux_other_crds};
    let c = Cluster::start();
    c.kubectl_ok(&[
        "apply",
        "--validate=false",
        "-k",
        &crds_dir().to_string_lossy(),
    ]);
    c.wait_established(&imageauto_tests::kube::IMAGE_CRDS);
    let others = flux_other_crds();
    c.apply(&crds_manifest(&others[..1]));
    c.wait_established(&["gitrepositories.source.toolkit.fluxcd.io"]);
    let ns = c.namespace("later");
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{image: 127.0.0.1:1/team/web, interval: 1h, insecure: true}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tok, namespace: {ns}}}\ndata: {{token: {}}}\n",
        b64("tok-later")
    ));
    let s = Serve::start(
        bin(),
        &c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            "127.0.0.1:0",
        ],
    );
    let rport = s
        .logged_addr("receiver")
        .expect("the receiver's address")
        .port();
    let hook = path("tok-later", "hook", &ns);
    assert_eq!(post(rport, &hook, &[], "{}"), 404);
    c.apply(&crds_manifest(&others[1..]));
    c.wait_established(&["receivers.notification.toolkit.fluxcd.io"]);
    c.apply(&format!(
        "apiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: hook, namespace: {ns}}}\nspec:\n  type: generic\n  secretRef: {{name: tok}}\n  resources: [{{kind: ImageRepository, name: web}}]\n"
    ));
    wait_served(&c, &s, &ns, "hook", &hook);
    assert_eq!(post(rport, &hook, &[], "{}"), 200);
    assert!(requested_at(&c, &ns, "web").is_string());
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
    // The automation has run with every policy at 1.0.0 (nothing to
    // change yet).
    wait_for(
        Duration::from_secs(120),
        "the automation's run over all 100 policies",
        || {
            let st = c.get_json(&["-n", &ns, "imageupdateautomation", "fleet"])["status"].clone();
            let observed = st["observedPolicies"].as_object()?;
            let all = observed.len() == n && observed.values().all(|p| p["tag"] == "1.0.0");
            all.then_some(())
        },
        || s.logs(),
    );
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
    let certs = tempfile::tempdir().unwrap();
    let s = Serve::start(
        bin(),
        c,
        &[
            "-n",
            &ns,
            "--leader-elect=false",
            "--receiver-addr",
            "127.0.0.1:0",
            "--webhook-addr",
            "127.0.0.1:0",
            "--cert-dir",
            certs.path().to_str().unwrap(),
        ],
    );
    let rport = s
        .logged_addr("receiver")
        .expect("the receiver's address")
        .port();
    let wport = s
        .logged_addr("webhook")
        .expect("the webhook's address")
        .port();
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

    // A body over Flux's 3 MiB cap: 413, read to its end, and the same
    // connection goes on.
    let mut t = std::net::TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let big = vec![b'x'; 4 << 20];
    let head = format!(
        "POST {hook} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let (status, text) = exchange(&mut t, &head, &big).expect("an answer to the big body");
    assert_eq!(status, 413, "{text}");
    let head = format!("POST {hook} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(exchange(&mut t, &head, b"{}").map(|r| r.0), Some(200));
    // One declared past what is read and dropped (16 MiB): 413 without
    // reading it, and the connection closes once the client stops sending
    // (its first 4 MiB are read and dropped meanwhile, so that the answer
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
