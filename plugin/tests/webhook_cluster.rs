//! The admission webhook through a real kube-apiserver: `serve` outside the
//! cluster with `--webhook-addr`, its generated certificate, and the
//! ValidatingWebhookConfiguration that `install --webhook-url` makes; then
//! `kubectl apply` as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{HttpsGit, Repos, git, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use imageauto_tests::serve::{Serve, wait_for};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One cluster for this file, with serve and the webhook configuration.
struct Ground {
    cluster: Cluster,
    serve: Serve,
    _certs: tempfile::TempDir,
    reg: Registry,
}

fn ground() -> &'static Ground {
    static G: OnceLock<Ground> = OnceLock::new();
    G.get_or_init(|| {
        let cluster = Cluster::start();
        cluster.install_crds();
        let certs = tempfile::tempdir().unwrap();
        let port = imageauto_tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let serve = serve_webhook(&cluster, &addr, certs.path());
        install_webhook(&cluster, &addr, certs.path());
        let reg = Registry::start(Auth::Anonymous, None);
        Ground {
            cluster,
            serve,
            _certs: certs,
            reg,
        }
    })
}

/// serve with its webhook on `addr` and its certificate in `certs`.
fn serve_webhook(cluster: &Cluster, addr: &str, certs: &std::path::Path) -> Serve {
    Serve::start(
        bin(),
        cluster,
        &[
            "--leader-elect=false",
            "--webhook-addr",
            addr,
            "--cert-dir",
            certs.to_str().unwrap(),
        ],
    )
}

/// The configuration install makes, pointed at the serve on `addr`.
fn install_webhook(cluster: &Cluster, addr: &str, certs: &std::path::Path) {
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
        .arg(certs.join("ca.crt"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn apply(c: &Cluster, yaml: &str) -> Output {
    // The webhook answers 503 until its view knows a new namespace.
    for _ in 0..50 {
        let o = c.kubectl_stdin("admin", &["apply", "--validate=false", "-f", "-"], yaml);
        if !text(&o.stderr).contains("not known to imageauto yet") {
            return o;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the webhook never learnt the namespace");
}

fn namespace(c: &Cluster, prefix: &str, mode: Option<&str>) -> String {
    match mode {
        Some(m) => c.labelled_namespace(prefix, &[("imageauto.dev/enforce", m)]),
        None => c.namespace(prefix),
    }
}

fn deployment(ns: &str, name: &str, image: &str, extra_meta: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n{extra_meta}spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n        - name: {name}\n          image: {image}\n"
    )
}

/// An ImageRepository and ImagePolicy for `image` in `ns`.
fn govern(c: &Cluster, ns: &str, name: &str, image: &str) {
    let o = apply(
        c,
        &format!(
            "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{image: {image}, interval: 1h}}\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  imageRepositoryRef: {{name: {name}}}\n  policy: {{semver: {{range: '1.x'}}}}\n"
        ),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// Waits until the webhook's view has the policy (a governed workload is
/// admitted), by trying a throwaway workload.
fn wait_governed(c: &Cluster, ns: &str, image: &str) {
    wait_for(
        Duration::from_secs(30),
        "the webhook to see the policy",
        || {
            let o = apply(c, &deployment(ns, "probe", image, ""));
            o.status.success().then_some(())
        },
        || ground().serve.logs(),
    );
    c.kubectl_ok(&["-n", ns, "delete", "deployment", "probe"]);
}

#[test]
fn deny_namespaces_refuse_what_no_policy_governs() {
    let g = ground();
    let c = &g.cluster;
    let ns = namespace(c, "deny", Some("deny"));
    govern(c, &ns, "web", "ghcr.io/org/web");
    wait_governed(c, &ns, "ghcr.io/org/web:1.0.0");
    // Ungoverned: refused, with the container, the image and the fix.
    let o = apply(c, &deployment(&ns, "api", "ghcr.io/org/api:1.0.0", ""));
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("api") && err.contains("ghcr.io/org/api:1.0.0"),
        "{err}"
    );
    assert!(
        err.contains("ImagePolicy") && err.contains("imageauto.dev/exempt"),
        "{err}"
    );
    // Governed: admitted.
    let o = apply(c, &deployment(&ns, "web", "ghcr.io/org/web:1.0.0", ""));
    assert!(o.status.success(), "{}", text(&o.stderr));
    // An UPDATE that only scales: admitted.
    c.kubectl_ok(&["-n", &ns, "scale", "deployment", "web", "--replicas=3"]);
    // Exempt: admitted, with the reason in a warning kubectl prints.
    let o = apply(
        c,
        &deployment(
            &ns,
            "legacy",
            "quay.io/old/thing:2",
            "  annotations: {imageauto.dev/exempt: \"vendor image, pinned on purpose\"}\n",
        ),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("vendor image, pinned on purpose"),
        "{}",
        text(&o.stderr)
    );
    // An empty reason is refused.
    let o = apply(
        c,
        &deployment(
            &ns,
            "noreason",
            "quay.io/old/thing:2",
            "  annotations: {imageauto.dev/exempt: \"\"}\n",
        ),
    );
    assert!(!o.status.success());
    // A Pod whose init container nothing governs.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: {ns}}}\nspec:\n  initContainers: [{{name: setup, image: busybox:1.36}}]\n  containers: [{{name: web, image: ghcr.io/org/web:1.0.0}}]\n"
    );
    let o = apply(c, &pod);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("setup") && text(&o.stderr).contains("busybox"),
        "{}",
        text(&o.stderr)
    );
    // nginx is docker.io/library/nginx.
    govern(c, &ns, "nginx", "docker.io/library/nginx");
    wait_governed(c, &ns, "nginx:1.25");
}

#[test]
fn warn_namespaces_admit_with_warnings_and_others_are_untouched() {
    let g = ground();
    let c = &g.cluster;
    let warn = namespace(c, "warn", Some("warn"));
    let o = apply(c, &deployment(&warn, "api", "ghcr.io/org/api:1.0.0", ""));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("Warning") && err.contains("ghcr.io/org/api:1.0.0"),
        "{err}"
    );
    let plain = namespace(c, "plain", None);
    let o = apply(c, &deployment(&plain, "api", "ghcr.io/org/api:1.0.0", ""));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("Warning"), "{}", text(&o.stderr));
}

#[test]
fn broken_image_kinds_are_refused_with_their_field() {
    let g = ground();
    let c = &g.cluster;
    let ns = namespace(c, "kinds", None);
    for (spec, field) in [
        (
            "policy: {semver: {range: 'not a range'}}",
            "spec.policy.semver.range",
        ),
        (
            "filterTags: {pattern: '([a-z'}\n  policy: {alphabetical: {order: asc}}",
            "spec.filterTags.pattern",
        ),
    ] {
        let o = apply(
            c,
            &format!(
                "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {{name: broken, namespace: {ns}}}\nspec:\n  imageRepositoryRef: {{name: x}}\n  {spec}\n"
            ),
        );
        assert!(!o.status.success(), "{spec}");
        assert!(text(&o.stderr).contains(field), "{}", text(&o.stderr));
    }
}

#[test]
fn the_marker_check_names_the_file_and_line() {
    let g = ground();
    let c = &g.cluster;
    let ns = namespace(c, "markers", Some("deny"));
    let tags: Vec<String> = vec!["1.0.0".into()];
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&g.reg.url(), None, None).push("team/web", &tags, false));
    let image = format!("{}/team/web", g.reg.host());
    let o = apply(
        c,
        &format!(
            "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{image: {image}, interval: 1h, insecure: true}}\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  imageRepositoryRef: {{name: web}}\n  policy: {{semver: {{range: '1.x'}}}}\n"
        ),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The fleet's file for this Deployment has no marker.
    let repos = Repos::new();
    let file = deployment(&ns, "web", &format!("{image}:1.0.0"), "");
    let bare = repos.create("fleet", &[("apps/web.yaml", &file)]);
    let tls = Tls::new("git CA");
    let gitd = HttpsGit::start(repos.dir.path(), "bot", "pw", &tls);
    let o = apply(
        c,
        &format!(
            r#"apiVersion: v1
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
        ),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let flux_labels = "  labels: {kustomize.toolkit.fluxcd.io/name: apps, kustomize.toolkit.fluxcd.io/namespace: flux-system}\n";
    let applied = deployment(&ns, "web", &format!("{image}:1.0.0"), flux_labels);
    // Once the automation has run (and indexed its checkout), a CREATE is
    // judged against the file. (An UPDATE that keeps the image is not
    // judged: a workload admitted before the index existed is deleted.)
    wait_for(
        Duration::from_secs(60),
        "the automation's run",
        || {
            let st = c.get_json(&["-n", &ns, "imageupdateautomation", "fleet"])["status"].clone();
            st["lastAutomationRunTime"].is_string().then_some(())
        },
        || g.serve.logs(),
    );
    let refused = wait_for(
        Duration::from_secs(60),
        "the marker check to refuse",
        || {
            let o = apply(c, &applied);
            if o.status.success() {
                c.kubectl_ok(&["-n", &ns, "delete", "deployment", "web"]);
                return None;
            }
            text(&o.stderr)
                .contains("apps/web.yaml:")
                .then(|| text(&o.stderr))
        },
        || g.serve.logs(),
    );
    assert!(refused.contains("apps/web.yaml:14"), "{refused}");
    assert!(refused.contains(&format!("{ns}:web")), "{refused}");
    // The marker added in Git, the automation fetched: admitted.
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["clone", "-q", bare.to_str().unwrap(), "."]);
    let marked = file.replace(
        &format!("image: {image}:1.0.0"),
        &format!("image: {image}:1.0.0 # {{\"$imagepolicy\": \"{ns}:web\"}}"),
    );
    std::fs::write(work.path().join("apps/web.yaml"), marked).unwrap();
    git(
        work.path(),
        &[
            "-c",
            "user.name=u",
            "-c",
            "user.email=u@x",
            "commit",
            "-qam",
            "marker",
        ],
    );
    git(work.path(), &["push", "-q", "origin", "HEAD:main"]);
    assert!(git_text(&bare, &["show", "main:apps/web.yaml"]).contains("$imagepolicy"));
    c.kubectl_ok(&[
        "-n",
        &ns,
        "annotate",
        "--overwrite",
        "imageupdateautomation",
        "fleet",
        "reconcile.fluxcd.io/requestedAt=marker-added",
    ]);
    wait_for(
        Duration::from_secs(60),
        "the marked workload admitted",
        || apply(c, &applied).status.success().then_some(()),
        || g.serve.logs(),
    );
    let m = g.serve.metrics();
    assert!(
        m.contains("imageauto_admission_total{rule=\"workloads\",result=\"deny\"}"),
        "{m}"
    );
}

#[test]
fn the_admission_server_rejects_junk_and_stays_up() {
    let g = ground();
    let _ = Stdio::null();
    // Straight at the server, no apiserver: plain HTTP on the TLS port.
    let addr = g
        .serve
        .logs()
        .lines()
        .find_map(|l| {
            l.split("webhook=")
                .nth(1)
                .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("the webhook's address in the log");
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let answer = g.serve.get(port, "/validate/workloads");
    assert!(answer.as_ref().is_none_or(|(s, _)| *s == 400), "{answer:?}");
    // Still answering through the apiserver.
    let c = &g.cluster;
    let ns = namespace(c, "after", Some("deny"));
    let o = apply(c, &deployment(&ns, "api", "ghcr.io/org/api:1.0.0", ""));
    assert!(!o.status.success());
}

/// 2,000 slow clients on the webhook's port, from the apiserver's own
/// address (127.0.0.1: the per-peer cap does not tell them apart, only
/// what each connection does): 1,000 that say nothing (half of them after
/// a TLS handshake) and 1,000 that send a request head a byte every half
/// second, each connecting again up to three times once closed. Before,
/// 400 of them filled the 256 slots and the apiserver's calls timed out.
/// A cluster of its own, and serve restarted before the slow clients come:
/// the apiserver has no kept-alive connection to the webhook then, and its
/// reviews need new ones. Both connection counts fit this process's
/// open-file limit, which the test checks rather than raises.
#[test]
fn slow_clients_cannot_switch_enforcement_off() {
    use imageauto_tests::slow::{Plan, SlowClients, open_files_limit};
    let limit = open_files_limit().expect("the open-file limit");
    assert!(
        limit >= 3000,
        "2,000 client connections need an open-file limit of 3,000 or more here (ulimit -n is {limit})"
    );
    let c = Cluster::start();
    c.install_crds();
    let certs = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", imageauto_tests::free_port());
    let mut first = serve_webhook(&c, &addr, certs.path());
    install_webhook(&c, &addr, certs.path());
    let ns = namespace(&c, "slow", Some("deny"));
    govern(&c, &ns, "web", "ghcr.io/org/web");
    wait_for(
        Duration::from_secs(30),
        "the webhook to see the policy",
        || {
            let o = apply(&c, &deployment(&ns, "probe", "ghcr.io/org/web:1.0.0", ""));
            o.status.success().then_some(())
        },
        || first.logs(),
    );
    // The apiserver's connections to the webhook end with this process.
    assert!(first.terminate(Duration::from_secs(30)).is_some());
    let serve = serve_webhook(&c, &addr, certs.path());
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let plan = Plan {
        path: "/validate/workloads".into(),
        rounds: 3,
        pause: Duration::from_secs(2),
        ..Plan::new(addr.parse().unwrap(), Some(ca), 1000, 1000)
    };
    let slow = SlowClients::start(plan);
    slow.wait_tried(2000, Duration::from_secs(120));
    // Meanwhile the apiserver's reviews are answered, rightly, within its
    // 5 s timeout: a timeout would refuse both with "failed calling
    // webhook".
    for i in 0..3 {
        let o = apply(
            &c,
            &deployment(&ns, &format!("api-{i}"), "ghcr.io/org/api:1.0.0", ""),
        );
        let err = text(&o.stderr);
        assert!(!o.status.success(), "an ungoverned image was admitted");
        assert!(
            err.contains("ghcr.io/org/api:1.0.0") && err.contains("ImagePolicy"),
            "not the webhook's own refusal: {err}\n{}",
            serve.logs()
        );
        let o = apply(
            &c,
            &deployment(&ns, &format!("web-{i}"), "ghcr.io/org/web:1.0.0", ""),
        );
        assert!(o.status.success(), "{}\n{}", text(&o.stderr), serve.logs());
    }
    let seen = slow.stop();
    // The slow clients did reach the server, and it let them go.
    assert!(seen.opened >= 2000, "{seen:?}");
    assert!(seen.closed_by_server >= 1800, "{seen:?}");
}
