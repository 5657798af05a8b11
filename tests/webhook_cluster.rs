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
    certs: tempfile::TempDir,
    /// The URL install points the webhook at.
    webhook_url: String,
    reg: Registry,
}

/// `install` as [`ground`] runs it, with `extra` arguments.
fn install(g: &Ground, extra: &[&str]) -> Output {
    Command::new(bin())
        .args([
            "install",
            "--wait=false",
            "--crds=false",
            "--image",
            "example.com/imageauto:test",
        ])
        .args(["--webhook-url", &g.webhook_url])
        .arg("--ca-file")
        .arg(g.certs.path().join("ca.crt"))
        .arg("--kubeconfig")
        .arg(&g.cluster.kubeconfig)
        .args(extra)
        .output()
        .unwrap()
}

fn ground() -> &'static Ground {
    static G: OnceLock<Ground> = OnceLock::new();
    G.get_or_init(|| {
        let cluster = Cluster::start();
        cluster.install_crds();
        let certs = tempfile::tempdir().unwrap();
        let port = imageauto_tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let serve = Serve::start(
            bin(),
            &cluster,
            &[
                "--leader-elect=false",
                "--webhook-addr",
                &addr,
                "--cert-dir",
                certs.path().to_str().unwrap(),
            ],
        );
        let reg = Registry::start(Auth::Anonymous, None);
        let g = Ground {
            cluster,
            serve,
            certs,
            webhook_url: format!("https://{addr}"),
            reg,
        };
        // The configuration install makes, pointed at this serve.
        let out = install(&g, &[]);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        g
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

/// `kubectl create -f -` as `user` (`admin`, or another impersonated by
/// admin): create, not apply, since the controllers' roles (bootstrapped by
/// the apiserver) may create but not get.
fn create_as(c: &Cluster, user: &str, yaml: &str) -> Output {
    let as_user = format!("--as={user}");
    let mut args = vec!["create", "--validate=false", "-f", "-"];
    if user != "admin" {
        args.insert(0, &as_user);
    }
    for _ in 0..50 {
        let o = c.kubectl_stdin("admin", &args, yaml);
        if !text(&o.stderr).contains("not known to imageauto yet") {
            return o;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the webhook never learnt the namespace");
}

const RS_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";
const DEPLOYMENT_CONTROLLER: &str = "system:serviceaccount:kube-system:deployment-controller";

/// A Pod with one container, `legacy`.
fn owned_pod(ns: &str, name: &str, owner: (&str, &str, &str), image: &str) -> String {
    let (kind, owner_name, uid) = owner;
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  ownerReferences:\n    - {{apiVersion: apps/v1, kind: {kind}, name: {owner_name}, uid: {uid}, controller: true}}\nspec:\n  containers:\n    - name: legacy\n      image: {image}\n"
    )
}

fn owned_replicaset(ns: &str, name: &str, deployment: (&str, &str), image: &str) -> String {
    let (owner_name, uid) = deployment;
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {name}\n  namespace: {ns}\n  ownerReferences:\n    - {{apiVersion: apps/v1, kind: Deployment, name: {owner_name}, uid: {uid}, controller: true}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {owner_name}}}}}\n  template:\n    metadata: {{labels: {{app: {owner_name}}}}}\n    spec:\n      containers:\n        - name: {owner_name}\n          image: {image}\n"
    )
}

#[test]
fn a_pod_naming_an_owner_that_does_not_exist_is_refused() {
    let g = ground();
    let c = &g.cluster;
    let ns = namespace(c, "forged", Some("deny"));
    let ghost = (
        "ReplicaSet",
        "web-5d4f8b",
        "6f1f9a1e-0000-4000-8000-00000000dead",
    );
    // As a user, and as the ReplicaSet controller itself.
    let o = apply(c, &owned_pod(&ns, "miner", ghost, "evil.io/miner:latest"));
    assert!(!o.status.success(), "admitted: {}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "names ReplicaSet web-5d4f8b as its controller, but imageauto knows no ReplicaSet {ns}/web-5d4f8b"
        )),
        "{err}"
    );
    assert!(err.contains("evil.io/miner:latest"), "{err}");
    let o = create_as(
        c,
        RS_CONTROLLER,
        &owned_pod(&ns, "miner", ghost, "evil.io/miner:latest"),
    );
    assert!(!o.status.success(), "admitted: {}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("evil.io/miner"),
        "{}",
        text(&o.stderr)
    );
    // A StatefulSet that does not exist either.
    let o = apply(
        c,
        &owned_pod(
            &ns,
            "miner",
            ("StatefulSet", "db", "6f1f9a1e-0000-4000-8000-00000000beef"),
            "evil.io/miner:latest",
        ),
    );
    assert!(!o.status.success(), "admitted: {}", text(&o.stdout));
    assert!(
        c.kubectl(&["-n", &ns, "get", "pod", "miner"]).status.code() != Some(0),
        "the Pod exists"
    );
}

#[test]
fn a_real_owner_is_believed_only_for_its_own_images_and_controller() {
    let g = ground();
    let c = &g.cluster;
    let ns = namespace(c, "owners", Some("deny"));
    // Exempt on the Deployment only: its ReplicaSet and Pods are admitted
    // for it, never judged on their own.
    let o = apply(
        c,
        &deployment(
            &ns,
            "legacy",
            "quay.io/old/thing:2",
            "  annotations: {imageauto.dev/exempt: \"vendor image\"}\n",
        ),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let uid = c.get_json(&["-n", &ns, "deployment", "legacy"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    // The real Deployment's uid, other images: refused, by whoever.
    for user in [DEPLOYMENT_CONTROLLER, "admin"] {
        let o = create_as(
            c,
            user,
            &owned_replicaset(&ns, "legacy-evil", ("legacy", &uid), "evil.io/miner:latest"),
        );
        assert!(!o.status.success(), "{user}: admitted");
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!(
                "the pod template of Deployment {ns}/legacy gives container \"legacy\" no image \"evil.io/miner:latest\""
            )),
            "{err}"
        );
    }
    // Its own images, from a user (even a cluster admin): judged on its
    // own, refused.
    let rs = owned_replicaset(&ns, "legacy-1", ("legacy", &uid), "quay.io/old/thing:2");
    let o = create_as(c, "admin", &rs);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("the request comes from \"admin\""),
        "{}",
        text(&o.stderr)
    );
    // From the Deployment controller: admitted (once the view holds the
    // Deployment: a controller tries again too).
    wait_for(
        Duration::from_secs(30),
        "the ReplicaSet admitted for its Deployment",
        || {
            let o = create_as(c, DEPLOYMENT_CONTROLLER, &rs);
            o.status.success().then_some(())
        },
        || g.serve.logs(),
    );
    let rs_uid = c.get_json(&["-n", &ns, "replicaset", "legacy-1"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    // Its Pod, made by the ReplicaSet controller: admitted; with the
    // ReplicaSet's uid and a miner: refused.
    let owner = ("ReplicaSet", "legacy-1", rs_uid.as_str());
    wait_for(
        Duration::from_secs(30),
        "the Pod admitted for its ReplicaSet",
        || {
            let o = create_as(
                c,
                RS_CONTROLLER,
                &owned_pod(&ns, "legacy-1-x", owner, "quay.io/old/thing:2"),
            );
            o.status.success().then_some(())
        },
        || g.serve.logs(),
    );
    let o = create_as(
        c,
        RS_CONTROLLER,
        &owned_pod(&ns, "legacy-1-y", owner, "evil.io/miner:latest"),
    );
    assert!(!o.status.success(), "admitted");
    assert!(
        text(&o.stderr).contains("no image \"evil.io/miner:latest\""),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_batch_v1beta1_cronjob_is_judged() {
    let g = ground();
    let c = &g.cluster;
    let ns = namespace(c, "cron", Some("deny"));
    let cron = |name: &str, image: &str| {
        format!(
            "apiVersion: batch/v1beta1\nkind: CronJob\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  schedule: '0 3 * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n            - name: report\n              image: {image}\n"
        )
    };
    let o = apply(c, &cron("report", "ghcr.io/org/report:1.0.0"));
    assert!(!o.status.success(), "admitted: {}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains("container \"report\"") && err.contains("ghcr.io/org/report:1.0.0"),
        "{err}"
    );
    govern(c, &ns, "report", "ghcr.io/org/report");
    wait_for(
        Duration::from_secs(30),
        "the governed CronJob admitted",
        || {
            apply(c, &cron("report", "ghcr.io/org/report:1.0.0"))
                .status
                .success()
                .then_some(())
        },
        || g.serve.logs(),
    );
}

/// Waits until the view holds every namespace change made before now: a
/// namespace labelled deny after them is known (the watch reports changes
/// in order) and an ungoverned Deployment there is refused.
fn wait_view_caught_up(g: &Ground) {
    let c = &g.cluster;
    let marker = namespace(c, "caught-up", Some("deny"));
    let o = apply(c, &deployment(&marker, "probe", "ghcr.io/org/probe:1", ""));
    assert!(!o.status.success(), "{}", text(&o.stdout));
}

#[test]
fn kube_system_and_the_controllers_namespace_are_not_judged_when_labelled() {
    let g = ground();
    let c = &g.cluster;
    // Kubernetes 1.20's namespaces have no kubernetes.io/metadata.name
    // label: the configuration's selector sends both to the webhook.
    for ns in ["kube-system", "imageauto-system"] {
        let labels = c.get_json(&["namespace", ns])["metadata"]["labels"].clone();
        assert!(
            labels.get("kubernetes.io/metadata.name").is_none(),
            "{labels}"
        );
        c.kubectl_ok(&[
            "label",
            "--overwrite",
            "namespace",
            ns,
            "imageauto.dev/enforce=deny",
        ]);
    }
    wait_view_caught_up(g);
    for ns in ["kube-system", "imageauto-system"] {
        let o = apply(
            c,
            &deployment(ns, "vendor-agent", "quay.io/vendor/agent:3", ""),
        );
        assert!(o.status.success(), "{ns}: {}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("Warning"), "{}", text(&o.stderr));
        c.kubectl_ok(&["-n", ns, "delete", "deployment", "vendor-agent"]);
        c.kubectl_ok(&["label", "namespace", ns, "imageauto.dev/enforce-"]);
    }
}

#[test]
fn policies_of_a_namespace_labelled_cluster_govern_other_namespaces() {
    let g = ground();
    let c = &g.cluster;
    // Flux's layout: the policies in their own namespace, no accessFrom.
    let flux = namespace(c, "flux-system", None);
    govern(c, &flux, "shared", "ghcr.io/org/shared");
    let apps = namespace(c, "apps", Some("deny"));
    let workload = deployment(&apps, "shared", "ghcr.io/org/shared:1.0.0", "");
    let o = apply(c, &workload);
    assert!(!o.status.success(), "admitted: {}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(err.contains(&format!("--policy-namespace {flux}")), "{err}");
    // install --policy-namespace labels it, and says so.
    let out = install(g, &["--policy-namespace", &flux]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!(
            "Namespace {flux} labelled imageauto.dev/policies=cluster"
        )),
        "{}",
        text(&out.stdout)
    );
    let labels = c.get_json(&["namespace", &flux])["metadata"]["labels"].clone();
    assert_eq!(labels["imageauto.dev/policies"], "cluster", "{labels}");
    wait_for(
        Duration::from_secs(30),
        "the workload governed by the labelled namespace's policy",
        || apply(c, &workload).status.success().then_some(()),
        || g.serve.logs(),
    );
    // Only what that namespace's policies track.
    let o = apply(
        c,
        &deployment(&apps, "other", "ghcr.io/org/other:1.0.0", ""),
    );
    assert!(!o.status.success(), "admitted: {}", text(&o.stdout));
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
