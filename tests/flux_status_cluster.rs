//! `kubectl imageauto get`, `tree` and `reconcile` on objects whose status
//! Flux's own controllers wrote: the objects of
//! `tests/golden/flux-status/objects.yaml` (each status as Flux's
//! image-reflector-controller, image-automation-controller and
//! source-controller write it; the file says where in Flux's code), in a
//! cluster holding imageauto's CRDs and in one holding Flux's own
//! (`tests/golden/flux-crds`). The tables, trees and outcomes are compared
//! whole with the expected ones.
//!
//! `reconcile` waits for a controller: here the test writes the status in
//! Flux's order (a progress patch with `Reconciling`, then the final patch
//! that also sets `lastHandledReconcileAt`), as Flux's reconcilers do
//! (`runtime/reconcile/result.go` of fluxcd/pkg writes the request's value
//! with the final patch only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::kube::Cluster;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The moment the fixtures' status stands at (their header says so).
const FIXTURE_TIME: &str = "2025-06-01T12:00:00Z";

/// The status fields that hold a time (metav1.Time) in the fixtures.
const TIME_FIELDS: [&str; 5] = [
    "lastTransitionTime",
    "scanTime",
    "lastAutomationRunTime",
    "lastPushTime",
    "lastUpdateTime",
];

fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kubectl-imageauto"))
        .parent()
        .unwrap()
}

/// `kubectl imageauto ARGS -n NS` as a user runs it (kubectl finds the
/// plugin on PATH).
fn plugin(c: &Cluster, ns: &str, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("imageauto")
        .args(args)
        .args(["-n", ns, "--context", "admin"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env(
            "PATH",
            format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap()),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The plugin's stdout; it must succeed.
fn ok(c: &Cluster, ns: &str, args: &[&str]) -> String {
    let o = plugin(c, ns, args);
    assert!(
        o.status.success(),
        "kubectl imageauto {args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// The fixtures, as JSON values.
fn fixtures() -> Vec<Value> {
    use serde::Deserialize;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/flux-status/objects.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    serde_norway::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Moves every time of a status by `by`.
fn shift_times(v: &mut Value, by: SignedDuration) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(s) if TIME_FIELDS.contains(&k.as_str()) => {
                        let t: Timestamp = s.parse().unwrap();
                        *s = t.checked_add(by).unwrap().to_string();
                    }
                    _ => shift_times(v, by),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| shift_times(i, by)),
        _ => {}
    }
}

/// `plural.group` of a fixture's kind, for kubectl.
fn resource(kind: &str) -> &'static str {
    match kind {
        "ImageRepository" => "imagerepositories.image.toolkit.fluxcd.io",
        "ImagePolicy" => "imagepolicies.image.toolkit.fluxcd.io",
        "ImageUpdateAutomation" => "imageupdateautomations.image.toolkit.fluxcd.io",
        "GitRepository" => "gitrepositories.source.toolkit.fluxcd.io",
        other => panic!("no fixture kind {other}"),
    }
}

/// Writes a status through the status subresource (a JSON merge patch, as
/// Flux's patch helper sends it).
fn write_status(c: &Cluster, ns: &str, kind: &str, name: &str, status: &Value) {
    let patch = json!({ "status": status }).to_string();
    c.kubectl_ok(&[
        "-n",
        ns,
        "patch",
        resource(kind),
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// Applies every fixture into `ns`: the object without its status, then
/// the status with its times moved to now.
fn load(c: &Cluster, ns: &str) {
    let anchor: Timestamp = FIXTURE_TIME.parse().unwrap();
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    let by = now.duration_since(anchor);
    for mut doc in fixtures() {
        let status = doc.as_object_mut().unwrap().remove("status");
        doc["metadata"]["namespace"] = json!(ns);
        c.apply(&doc.to_string());
        if let Some(mut status) = status {
            shift_times(&mut status, by);
            let kind = doc["kind"].as_str().unwrap();
            let name = doc["metadata"]["name"].as_str().unwrap();
            write_status(c, ns, kind, name, &status);
        }
    }
}

const MSG_PODINFO_REPO: &str = "successful scan: found 16 tags with checksum 3976730759";
const MSG_PRIVATE_REPO: &str =
    "failed to configure authentication options: secrets \"ghcr-auth\" not found";
const MSG_PODINFO: &str = "Latest image tag for ghcr.io/stefanprodan/podinfo resolved to 6.5.4 (previously ghcr.io/stefanprodan/podinfo:6.5.3)";
const MSG_PINNED: &str = "Latest image tag for ghcr.io/stefanprodan/podinfo resolved to 6.4.1 with digest sha256:9f3e4b5d0c1f6a7e8b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182";
const MSG_BROKEN: &str = "invalid policy: improper constraint: latest";
const MSG_PRIVATE: &str = "retrying in 30s error: no tags in database";
const MSG_STAGING: &str = "failed configuring source manager: referenced git repository does not exist: gitrepositories.source.toolkit.fluxcd.io \"staging\" not found";
const MSG_FLEET_SOURCE: &str =
    "stored artifact for revision 'main@sha1:4f1c2bd0e3a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4'";

/// Rows as the plugin's tables align them: columns two spaces apart, as
/// wide as their widest cell, the last one not padded.
fn table(rows: &[&[&str]]) -> String {
    let mut widths = vec![0; rows[0].len()];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn repositories(wide: bool) -> String {
    repositories_as(wide, None)
}

/// With `kind`: as `get all` shows them (NAME as KIND/NAME).
fn repositories_as(wide: bool, kind: Option<&str>) -> String {
    let rows: [[&str; 7]; 5] = [
        [
            "NAME",
            "IMAGE",
            "LAST SCAN",
            "TAGS",
            "SUSPENDED",
            "READY",
            "MESSAGE",
        ],
        [
            "fresh",
            "ghcr.io/org/fresh",
            "-",
            "-",
            "false",
            "Unknown",
            "waiting to be reconciled",
        ],
        [
            "paused",
            "ghcr.io/org/paused",
            "2d3h",
            "2",
            "true",
            "True",
            "successful scan: found 2 tags with checksum 494928712",
        ],
        [
            "podinfo",
            "ghcr.io/stefanprodan/podinfo",
            "10h",
            "16",
            "false",
            "True",
            MSG_PODINFO_REPO,
        ],
        [
            "private",
            "ghcr.io/org/private",
            "-",
            "-",
            "false",
            "False",
            MSG_PRIVATE_REPO,
        ],
    ];
    narrowed(&rows, wide, kind)
}

fn policies(wide: bool) -> String {
    policies_as(wide, None)
}

fn policies_as(wide: bool, kind: Option<&str>) -> String {
    let rows: [[&str; 5]; 5] = [
        ["NAME", "REPOSITORY", "LATEST IMAGE", "READY", "MESSAGE"],
        ["broken", "podinfo", "-", "False", MSG_BROKEN],
        [
            "podinfo",
            "podinfo",
            "ghcr.io/stefanprodan/podinfo:6.5.4",
            "True",
            MSG_PODINFO,
        ],
        [
            "podinfo-pinned",
            "podinfo",
            "ghcr.io/stefanprodan/podinfo:6.4.1",
            "True",
            MSG_PINNED,
        ],
        ["private", "private", "-", "False", MSG_PRIVATE],
    ];
    narrowed(&rows, wide, kind)
}

fn updates(wide: bool) -> String {
    updates_as(wide, None)
}

fn updates_as(wide: bool, kind: Option<&str>) -> String {
    let rows: [[&str; 7]; 3] = [
        [
            "NAME",
            "SOURCE",
            "LAST RUN",
            "LAST PUSH",
            "SUSPENDED",
            "READY",
            "MESSAGE",
        ],
        [
            "fleet",
            "fleet",
            "20h",
            "4f1c2bd0e3a8",
            "false",
            "True",
            "repository up-to-date",
        ],
        [
            "staging",
            "staging",
            "11h",
            "-",
            "false",
            "False",
            MSG_STAGING,
        ],
    ];
    // -o wide adds the pull request (imageauto's extension): none in
    // status Flux wrote.
    narrowed_with(&rows, wide, kind, wide.then_some("PULL REQUEST"))
}

/// The table of rows whose second column shows only with `-o wide`.
fn narrowed<const N: usize>(rows: &[[&str; N]], wide: bool, kind: Option<&str>) -> String {
    narrowed_with(rows, wide, kind, None)
}

/// As [`narrowed`], with a last column titled `extra` whose cells are `-`.
fn narrowed_with<const N: usize>(
    rows: &[[&str; N]],
    wide: bool,
    kind: Option<&str>,
    extra: Option<&str>,
) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r: Vec<String> = r.iter().map(|c| c.to_string()).collect();
            if !wide {
                r.remove(1);
            }
            if let (Some(k), true) = (kind, i > 0) {
                r[0] = format!("{k}/{}", r[0]);
            }
            if let Some(title) = extra {
                r.push(if i == 0 { title } else { "-" }.to_string());
            }
            r
        })
        .collect();
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let refs: Vec<&[&str]> = rows.iter().map(Vec::as_slice).collect();
    table(&refs)
}

fn expected_trees(ns: &str) -> (String, String) {
    let fleet = format!(
        "✔ ImageUpdateAutomation/{ns}/fleet  repository up-to-date
├── ✔ GitRepository/{ns}/fleet  https://github.com/org/fleet  {MSG_FLEET_SOURCE}
├── ✔ ImagePolicy/{ns}/podinfo  {MSG_PODINFO}
│   └── ✔ ImageRepository/{ns}/podinfo  {MSG_PODINFO_REPO}
└── ✔ ImagePolicy/{ns}/podinfo-pinned  {MSG_PINNED}
    └── ✔ ImageRepository/{ns}/podinfo  {MSG_PODINFO_REPO}
"
    );
    let staging = format!(
        "✗ ImageUpdateAutomation/{ns}/staging  {MSG_STAGING}
├── ✗ GitRepository/{ns}/staging  not found
├── ✗ ImagePolicy/{ns}/broken  {MSG_BROKEN}
│   └── ✔ ImageRepository/{ns}/podinfo  {MSG_PODINFO_REPO}
├── ✔ ImagePolicy/{ns}/podinfo  {MSG_PODINFO}
│   └── ✔ ImageRepository/{ns}/podinfo  {MSG_PODINFO_REPO}
├── ✔ ImagePolicy/{ns}/podinfo-pinned  {MSG_PINNED}
│   └── ✔ ImageRepository/{ns}/podinfo  {MSG_PODINFO_REPO}
└── ✗ ImagePolicy/{ns}/private  {MSG_PRIVATE}
    └── ✗ ImageRepository/{ns}/private  {MSG_PRIVATE_REPO}
"
    );
    (fleet, staging)
}

/// Plays Flux's controller for one reconcile request of `name`: waits for
/// the request annotation, writes `progress` (Flux's progress patch:
/// Reconciling, no lastHandledReconcileAt yet), waits a while so that the
/// plugin sees it, then writes `done` with `lastHandledReconcileAt` set to
/// the request's value.
fn flux_handles(c: &Cluster, ns: &str, kind: &str, name: &str, progress: Value, mut done: Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        let o = c.get_json(&["-n", ns, resource(kind), name]);
        let requested = &o["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"];
        if requested.is_string() && *requested != o["status"]["lastHandledReconcileAt"] {
            break requested.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no reconcile request on {kind} {name}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    write_status(c, ns, kind, name, &progress);
    std::thread::sleep(Duration::from_millis(1500));
    done["lastHandledReconcileAt"] = value;
    write_status(c, ns, kind, name, &done);
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": 1, "lastTransitionTime": Timestamp::now().to_string()
    })
}

/// `kubectl imageauto reconcile ARGS` while Flux's stand-in handles it.
fn reconcile(
    c: &Cluster,
    ns: &str,
    args: &[&str],
    (kind, name): (&str, &str),
    progress: Value,
    done: Value,
) -> Output {
    std::thread::scope(|s| {
        let flux = s.spawn(|| flux_handles(c, ns, kind, name, progress, done));
        let mut all = vec!["reconcile"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--timeout", "60s"]);
        let out = plugin(c, ns, &all);
        flux.join().unwrap();
        out
    })
}

fn scenario(c: &Cluster) {
    let ns = c.namespace("flux-status");
    load(c, &ns);

    // get, each kind, as table and wide; get all.
    assert_eq!(ok(c, &ns, &["get", "repositories"]), repositories(false));
    assert_eq!(
        ok(c, &ns, &["get", "repositories", "-o", "wide"]),
        repositories(true)
    );
    assert_eq!(ok(c, &ns, &["get", "policies"]), policies(false));
    assert_eq!(
        ok(c, &ns, &["get", "policies", "-o", "wide"]),
        policies(true)
    );
    assert_eq!(ok(c, &ns, &["get", "updates"]), updates(false));
    assert_eq!(ok(c, &ns, &["get", "updates", "-o", "wide"]), updates(true));
    // get all, as flux get images all: a table per kind, NAME as KIND/NAME.
    let all = format!(
        "{}\n{}\n{}",
        repositories_as(false, Some("imagerepository")),
        policies_as(false, Some("imagepolicy")),
        updates_as(false, Some("imageupdateautomation"))
    );
    assert_eq!(ok(c, &ns, &["get", "all"]), all);
    assert_eq!(ok(c, &ns, &["get", "images", "all"]), all);

    // tree: what each automation depends on, with Flux's Ready messages.
    let (fleet, staging) = expected_trees(&ns);
    assert_eq!(ok(c, &ns, &["tree", "update", "fleet"]), fleet);
    assert_eq!(ok(c, &ns, &["tree", "update", "staging"]), staging);

    // reconcile on a suspended object: Flux's controllers leave it alone,
    // requests included; said at once, and nothing is requested.
    let started = Instant::now();
    let out = plugin(c, &ns, &["reconcile", "repository", "paused"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr),
        format!(
            "✗ ImageRepository {ns}/paused is suspended: kubectl imageauto resume repository paused to reconcile it\n"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let paused = c.get_json(&["-n", &ns, resource("ImageRepository"), "paused"]);
    assert!(
        paused["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].is_null(),
        "{paused}"
    );

    // reconcile repository: the scan's tag count once Flux handled it.
    let ready_repo = condition("Ready", "True", "Succeeded", MSG_PODINFO_REPO);
    let out = reconcile(
        c,
        &ns,
        &["repository", "podinfo"],
        ("ImageRepository", "podinfo"),
        json!({"conditions": [
            condition("Reconciling", "True", "Progressing", "scanning: reconcile requested"),
            ready_repo,
        ]}),
        json!({
            "conditions": [condition("Ready", "True", "Succeeded",
                "successful scan: found 17 tags with checksum 2870548979")],
            "lastScanResult": {"tagCount": 17, "revision": "2870548979",
                "scanTime": Timestamp::now().to_string()}
        }),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "✔ scan fetched 17 tags\n");

    // reconcile policy: the latest image.
    let out = reconcile(
        c,
        &ns,
        &["policy", "podinfo"],
        ("ImagePolicy", "podinfo"),
        json!({"conditions": [
            condition("Reconciling", "True", "Progressing", "reconciliation in progress"),
            condition("Ready", "True", "Succeeded", MSG_PODINFO),
        ]}),
        json!({
            "conditions": [condition("Ready", "True", "Succeeded",
                "Latest image tag for ghcr.io/stefanprodan/podinfo resolved to 6.5.5 (previously ghcr.io/stefanprodan/podinfo:6.5.4)")],
            "latestRef": {"name": "ghcr.io/stefanprodan/podinfo", "tag": "6.5.5"},
            "observedPreviousRef": {"name": "ghcr.io/stefanprodan/podinfo", "tag": "6.5.4"}
        }),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "✔ latest image ghcr.io/stefanprodan/podinfo:6.5.5\n"
    );

    // reconcile update: Flux's Ready message stays "repository up-to-date";
    // a push shows in lastPushCommit. While Flux works, Ready is still the
    // previous run's True: only lastHandledReconcileAt says it is done.
    let pushed = "0c3e2ab1f9d84c7e6b5a4f3e2d1c0b9a8f7e6d5c";
    let up_to_date = || condition("Ready", "True", "Succeeded", "repository up-to-date");
    let progress = || {
        json!({
            "conditions": [
                condition("Reconciling", "True", "Progressing", "reconciliation in progress"),
                up_to_date(),
            ],
            "lastAutomationRunTime": Timestamp::now().to_string()
        })
    };
    let done = || {
        json!({
            "conditions": [up_to_date()],
            "lastPushCommit": pushed,
            "lastPushTime": Timestamp::now().to_string(),
            "observedSourceRevision": format!("main@sha1:{pushed}"),
            "observedPolicies": {
                "podinfo": {"name": "ghcr.io/stefanprodan/podinfo", "tag": "6.5.5"},
                "podinfo-pinned": {"name": "ghcr.io/stefanprodan/podinfo", "tag": "6.4.1",
                    "digest": "sha256:9f3e4b5d0c1f6a7e8b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182"}
            }
        })
    };
    let fleet = ("ImageUpdateAutomation", "fleet");
    let out = reconcile(c, &ns, &["update", "fleet"], fleet, progress(), done());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("✔ pushed commit {pushed}\n"));
    // Again, nothing new to push.
    let out = reconcile(c, &ns, &["update", "fleet"], fleet, progress(), done());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("✔ nothing to do: repository up-to-date (last pushed commit {pushed})\n")
    );
    // A failure Flux retries: Reconciling stays (ProgressingWithRetry) and
    // Ready is False; the request is handled all the same.
    let failing = json!({"conditions": [
        condition("Reconciling", "True", "ProgressingWithRetry", "processing object: new generation -1 -> 1"),
        condition("Ready", "False", "SourceManagerFailed", MSG_STAGING),
    ]});
    let out = reconcile(
        c,
        &ns,
        &["update", "staging"],
        ("ImageUpdateAutomation", "staging"),
        json!({"conditions": [
            condition("Reconciling", "True", "Progressing", "processing object: new generation -1 -> 1"),
            condition("Ready", "Unknown", "Progressing", "processing object: new generation -1 -> 1"),
        ]}),
        failing,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains(&format!(
            "✗ ImageUpdateAutomation {ns}/staging is not ready: {MSG_STAGING}\n"
        )),
        "{}",
        text(&out.stderr)
    );

    // After Flux's push: the tables show the new commit and tag.
    let t = ok(c, &ns, &["get", "updates"]);
    assert!(t.contains("0c3e2ab1f9d8"), "{t}");
    let t = ok(c, &ns, &["get", "policies"]);
    assert!(t.contains("ghcr.io/stefanprodan/podinfo:6.5.5"), "{t}");
}

#[test]
fn flux_written_status_with_our_crds() {
    let c = Cluster::shared();
    c.install_crds();
    scenario(c);
}

#[test]
fn flux_written_status_with_fluxs_crds() {
    let c = Cluster::start();
    c.install_flux_style_crds();
    scenario(&c);
}
