//! `kubectl imageauto` against a real kube-apiserver, through kubectl's own
//! plugin discovery (the binary on PATH): install and uninstall, get,
//! reconcile, suspend and resume, events, tree, version, completion, and
//! the errors a user meets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{HttpsGit, Repos, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use imageauto_tests::serve::{Launch, Serve, wait_for};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn bin_dir() -> &'static Path {
    Path::new(bin()).parent().unwrap()
}

fn path() -> String {
    format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap())
}

/// `kubectl imageauto ARGS` as a user runs it, as admin (or `user`).
fn plugin_as(c: &Cluster, user: &str, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("imageauto")
        .args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("PATH", path())
        .args(["--context", user])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn plugin(c: &Cluster, args: &[&str]) -> Output {
    plugin_as(c, "admin", args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn both(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", both(&o));
    text(&o.stdout)
}

/// Every object install makes, with its resourceVersion.
fn versions(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for args in [
        &[
            "get",
            "crd",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}",
        ][..],
        &[
            "get",
            "clusterrole,clusterrolebinding",
            "imageauto-controller",
            "-o",
            "jsonpath={range .items[*]}{.kind}={.metadata.resourceVersion} {end}",
        ],
        &[
            "-n",
            "imageauto-system",
            "get",
            "serviceaccount,service,deployment,secret,role,rolebinding",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}",
        ],
        &[
            "get",
            "validatingwebhookconfiguration",
            "imageauto",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    ] {
        out.push(c.kubectl_ok(args));
    }
    out
}

#[test]
fn install_again_changes_nothing_and_uninstall_keeps_user_objects() {
    let c = Cluster::start();
    let out = plugin(&c, &["install", "--image", "example.com/imageauto:test"]);
    let s = ok(out);
    assert!(
        s.contains("CRD imagepolicies.image.toolkit.fluxcd.io applied"),
        "{s}"
    );
    // A 1.20 apiserver knows no CEL rules (and refuses a server-side apply
    // that names them): ImagePolicy's go, the other CRDs have none.
    assert!(
        s.contains("CRD imagepolicies.image.toolkit.fluxcd.io applied, without its CEL rules"),
        "{s}"
    );
    assert!(
        s.contains("CRD imagerepositories.image.toolkit.fluxcd.io applied\n"),
        "{s}"
    );
    assert!(s.contains("no nodes"), "{s}");
    let first = versions(&c);
    // A second install is a no-op, and says so object by object.
    let again = ok(plugin(
        &c,
        &["install", "--image", "example.com/imageauto:test"],
    ));
    assert_eq!(versions(&c), first);
    assert!(!again.contains(" applied"), "{again}");
    for what in [
        "CRD imagepolicies.image.toolkit.fluxcd.io unchanged",
        "Deployment imageauto-system/imageauto unchanged",
        "ValidatingWebhookConfiguration imageauto unchanged",
        "Secret imageauto-system/imageauto-webhook-cert unchanged",
    ] {
        assert!(again.contains(what), "{what}: {again}");
    }
    // The webhook configuration carries the CA of the certificate Secret.
    let vwc = c.get_json(&["validatingwebhookconfiguration", "imageauto"]);
    let secret = c.get_json(&["-n", "imageauto-system", "secret", "imageauto-webhook-cert"]);
    assert_eq!(
        vwc["webhooks"][0]["clientConfig"]["caBundle"],
        secret["data"]["ca.crt"]
    );
    // A user's objects, then uninstall: the objects and the CRDs stay, the
    // webhook configuration is gone.
    let ns = c.namespace("user");
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {ns}, finalizers: [finalizers.fluxcd.io]}}\nspec: {{image: ghcr.io/org/web, interval: 5m}}\n"
    ));
    // The controller's finalizer is on every kind (Flux's contract).
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {{name: web, namespace: {ns}, finalizers: [finalizers.fluxcd.io]}}\nspec: {{imageRepositoryRef: {{name: web}}, policy: {{semver: {{range: '1.x'}}}}}}\n"
    ));
    let s = ok(plugin(&c, &["uninstall"]));
    assert!(s.contains("CRDs and your objects kept"), "{s}");
    assert!(
        !c.kubectl(&["get", "validatingwebhookconfiguration", "imageauto"])
            .status
            .success()
    );
    assert!(
        !c.kubectl(&["-n", "imageauto-system", "get", "deployment", "imageauto"])
            .status
            .success()
    );
    c.kubectl_ok(&["-n", &ns, "get", "imagerepository", "web"]);
    // The finalizer went with the controller: the object can be deleted.
    c.kubectl_ok(&[
        "-n",
        &ns,
        "delete",
        "imagerepository",
        "web",
        "--timeout=20s",
    ]);
    // --delete-crds asks first, counting what goes with the CRDs.
    let o = plugin(&c, &["uninstall", "--delete-crds"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(both(&o).contains("not confirmed"), "{}", both(&o));
    assert!(both(&o).contains("(1 object(s))"), "{}", both(&o));
    c.kubectl_ok(&["get", "crd", "imagepolicies.image.toolkit.fluxcd.io"]);
    let s = ok(plugin(&c, &["uninstall", "--delete-crds", "--yes"]));
    assert!(s.contains("CRDs deleted (1 object(s) with them)"), "{s}");
    // The policy's finalizer went with the controller: nothing holds the
    // CRD (a CRD is Terminating while objects with a finalizer remain).
    wait_for(
        Duration::from_secs(30),
        "the ImagePolicy CRD to be gone",
        || {
            (!c.kubectl(&["get", "crd", "imagepolicies.image.toolkit.fluxcd.io"])
                .status
                .success())
            .then_some(())
        },
        || {
            c.kubectl_ok(&[
                "get",
                "crd",
                "imagepolicies.image.toolkit.fluxcd.io",
                "-o",
                "yaml",
            ])
        },
    );
    // The namespace install made is Terminating (this apiserver has no
    // namespace controller to finish it): installing again says so, and
    // applies nothing.
    let o = plugin(&c, &["install", "--wait=false"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        text(&o.stderr).contains("namespace imageauto-system is being deleted"),
        "{}",
        both(&o)
    );
    assert!(!text(&o.stderr).contains("RBAC"), "{}", both(&o));
    assert_eq!(text(&o.stdout), "");
    assert!(
        !c.kubectl(&["get", "crd", "imagepolicies.image.toolkit.fluxcd.io"])
            .status
            .success()
    );
}

#[test]
fn install_checks_its_command_line_before_applying_anything() {
    let c = Cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "this is no certificate\n").unwrap();
    let garbage_pem = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage_pem,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, Tls::new("webhook CA").ca_pem).unwrap();
    let ns = "install-checked";
    for (args, says) in [
        (
            vec![
                "--webhook-url",
                "https://127.0.0.1:9443",
                "--ca-file",
                not_pem.to_str().unwrap(),
            ],
            "has no PEM certificate",
        ),
        (
            vec![
                "--webhook-url",
                "https://127.0.0.1:9443",
                "--ca-file",
                garbage_pem.to_str().unwrap(),
            ],
            "garbage.pem",
        ),
        (
            vec![
                "--webhook-url",
                "http://127.0.0.1:9443",
                "--ca-file",
                ca.to_str().unwrap(),
            ],
            "over HTTPS only",
        ),
        (
            vec![
                "--webhook-url",
                "https://user@127.0.0.1:9443",
                "--ca-file",
                ca.to_str().unwrap(),
            ],
            "refuses a user",
        ),
    ] {
        for dry_run in [true, false] {
            let mut all = vec!["install", "-n", ns, "--wait=false"];
            all.extend(&args);
            if dry_run {
                all.push("--dry-run");
            }
            let o = plugin(c, &all);
            assert_eq!(o.status.code(), Some(1), "{all:?}: {}", both(&o));
            let err = text(&o.stderr);
            assert!(err.contains(says), "{all:?}: {err}");
            assert!(err.contains("--"), "names the flag: {err}");
            assert_eq!(text(&o.stdout), "", "{all:?}");
        }
    }
    // Nothing was applied.
    assert!(!c.kubectl(&["get", "namespace", ns]).status.success());
    // -n is the install namespace (as flux install's --namespace).
    let yaml = ok(plugin(
        c,
        &["install", "-n", "tools", "--dry-run", "--crds=false"],
    ));
    let objects = docs(&yaml);
    assert!(
        objects
            .iter()
            .any(|v| v["kind"] == "Deployment" && v["metadata"]["namespace"] == "tools")
    );
    assert!(!yaml.contains("imageauto-system"), "{yaml}");
    let yaml = ok(plugin(
        c,
        &[
            "install",
            "--namespace",
            "tools",
            "--dry-run",
            "--crds=false",
        ],
    ));
    assert!(!yaml.contains("imageauto-system"), "{yaml}");
}

#[test]
fn the_dry_run_is_what_the_server_accepts_and_what_is_checked_in() {
    let c = Cluster::shared();
    let o = plugin(c, &["install", "--dry-run", "-o", "yaml"]);
    let yaml = ok(o);
    // A server dry run cannot create the namespace for the objects that
    // go in it: it exists here, as it does on a second install.
    let _ = c.kubectl(&["create", "namespace", "imageauto-system"]);
    let applied = c.kubectl_stdin(
        "admin",
        &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
        &yaml,
    );
    assert!(applied.status.success(), "{}", both(&applied));
    // manifests/install holds the same objects (for GitOps users): its
    // kustomization takes the CRDs from manifests/crds.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut checked_in = Vec::new();
    for f in [
        "image.toolkit.fluxcd.io_imagerepositories.yaml",
        "image.toolkit.fluxcd.io_imagepolicies.yaml",
        "image.toolkit.fluxcd.io_imageupdateautomations.yaml",
    ] {
        checked_in.extend(docs(
            &std::fs::read_to_string(root.join("crds").join(f)).unwrap(),
        ));
    }
    checked_in.extend(docs(
        &std::fs::read_to_string(root.join("install/imageauto.yaml")).unwrap(),
    ));
    let kustomization = std::fs::read_to_string(root.join("install/kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains("../crds") && kustomization.contains("imageauto.yaml"),
        "{kustomization}"
    );
    assert!(
        checked_in == docs(&yaml),
        "manifests/install (with manifests/crds) differs from install --dry-run: run make manifests"
    );
}

/// The documents of a YAML stream, as JSON values.
fn docs(s: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(s)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn flux_crds_are_kept_and_flux_controllers_are_not_run_over() {
    let c = Cluster::start();
    c.install_flux_style_crds();
    let before = c.kubectl_ok(&[
        "get",
        "crd",
        "imagepolicies.image.toolkit.fluxcd.io",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    // Flux's image controllers run: refused, unless --take-over.
    c.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: flux-system}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: image-reflector-controller\n  namespace: flux-system\n  labels: {kustomize.toolkit.fluxcd.io/name: flux-system, kustomize.toolkit.fluxcd.io/namespace: flux-system}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: irc}}\n  template:\n    metadata: {labels: {app: irc}}\n    spec: {containers: [{name: c, image: ghcr.io/fluxcd/image-reflector-controller:v1.0.0}]}\n",
    );
    // A user's object of Flux's CRDs.
    c.apply(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {name: podinfo, namespace: flux-system}\nspec: {image: ghcr.io/stefanprodan/podinfo, interval: 5m}\n",
    );
    let o = plugin(&c, &["install", "--wait=false"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        both(&o).contains("flux-system/image-reflector-controller"),
        "{}",
        both(&o)
    );
    assert!(both(&o).contains("--take-over"), "{}", both(&o));
    let s = ok(plugin(&c, &["install", "--wait=false", "--take-over"]));
    assert!(
        s.contains("scaled Flux's flux-system/image-reflector-controller to 0"),
        "{s}"
    );
    assert_eq!(
        c.kubectl_ok(&[
            "-n",
            "flux-system",
            "get",
            "deployment",
            "image-reflector-controller",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "0"
    );
    assert!(
        s.contains(
            "CRD imagepolicies.image.toolkit.fluxcd.io found (installed by someone else): kept"
        ),
        "{s}"
    );
    let after = c.kubectl_ok(&[
        "get",
        "crd",
        "imagepolicies.image.toolkit.fluxcd.io",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_eq!(before, after);
    // What --take-over did is recorded on the Deployment, and Flux's own
    // kustomize-controller would undo it: said.
    assert!(s.contains("it ran 2"), "{s}");
    assert!(
        s.contains("Flux's Kustomization flux-system/flux-system applies flux-system/image-reflector-controller"),
        "{s}"
    );
    let replicas = || {
        c.kubectl_ok(&[
            "-n",
            "flux-system",
            "get",
            "deployment",
            "image-reflector-controller",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.annotations.imageauto\\.dev/replicas-before-take-over}",
        ])
    };
    assert_eq!(replicas(), "0 2");
    // uninstall --delete-crds: Flux's CRDs and the objects stay; Flux's
    // controller runs again as before.
    let s = ok(plugin(&c, &["uninstall", "--delete-crds", "--yes"]));
    for crd in [
        "imagepolicies.image.toolkit.fluxcd.io",
        "imagerepositories.image.toolkit.fluxcd.io",
        "imageupdateautomations.image.toolkit.fluxcd.io",
    ] {
        assert!(
            s.contains(&format!("CRD {crd} kept: installed by someone else")),
            "{s}"
        );
        c.kubectl_ok(&["get", "crd", crd]);
    }
    assert!(!s.contains("CRDs deleted"), "{s}");
    assert!(!s.contains("CustomResourceDefinition"), "{s}");
    c.kubectl_ok(&["-n", "flux-system", "get", "imagerepository", "podinfo"]);
    assert!(
        s.contains("scaled Flux's flux-system/image-reflector-controller back to 2 replica(s)"),
        "{s}"
    );
    assert_eq!(replicas(), "2 ", "the annotation goes too");
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn get_reconcile_suspend_resume_events_tree_and_version() {
    let c = Cluster::shared();
    c.install_crds();
    let (a, b) = (c.namespace("one"), c.namespace("two"));
    let reg = Registry::start(Auth::Anonymous, None);
    let tags: Vec<String> = ["1.0.0", "1.1.0"].iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, None).push("team/web", &tags, false));
    let host = reg.host();
    let repos = Repos::new();
    let bare = repos.create(
        "fleet",
        &[(
            "apps/web.yaml",
            &format!("spec:\n  image: {host}/team/web:1.0.0 # {{\"$imagepolicy\": \"{a}:web\"}}\n"),
        )],
    );
    let tls = Tls::new("git CA");
    let git = HttpsGit::start(repos.dir.path(), "bot", "pw", &tls);
    for ns in [&a, &b] {
        c.apply(&format!(
            r#"apiVersion: image.toolkit.fluxcd.io/v1
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
"#
        ));
    }
    c.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: git, namespace: {a}}}
data: {{username: {u}, password: {p}, ca.crt: {ca}}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {a}}}
spec: {{interval: 1m, url: '{url}', ref: {{branch: main}}, secretRef: {{name: git}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: fleet, namespace: {a}}}
spec:
  interval: 1h
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    commit: {{author: {{email: bot@example.com}}}}
    push: {{branch: auto}}
"#,
        u = b64("bot"),
        p = b64("pw"),
        ca = b64(&tls.ca_pem),
        url = git.url("fleet"),
    ));
    // serve outside the cluster, for both namespaces.
    let serve = Serve::start(bin(), c, &["--leader-elect=false"]);
    wait_for(
        Duration::from_secs(60),
        "the first push",
        || {
            git_text(&bare, &["branch", "--list", "auto"])
                .contains("auto")
                .then_some(())
        },
        || serve.logs(),
    );
    // get, in one namespace and in all, as tables and as JSON.
    let t = ok(plugin(c, &["get", "policies", "-n", &a]));
    let header = t.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("LATEST IMAGE") && header.contains("READY"),
        "{t}"
    );
    assert!(t.contains(&format!("{host}/team/web:1.1.0")), "{t}");
    let t = ok(plugin(c, &["get", "repositories", "-A"]));
    assert!(t.lines().next().unwrap().starts_with("NAMESPACE"), "{t}");
    assert!(t.contains(&a) && t.contains(&b), "{t}");
    assert!(
        t.lines().any(|l| l.contains(&a) && l.contains(" 2 ")),
        "{t}"
    );
    let t = ok(plugin(c, &["get", "updates", "-n", &a, "-o", "wide"]));
    assert!(t.contains("LAST PUSH") && t.contains("fleet"), "{t}");
    let json = ok(plugin(c, &["get", "policies", "-A", "-o", "json"]));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "List");
    assert!(v["items"].as_array().unwrap().len() >= 2);
    // It round-trips: the server takes it back as it is.
    let back = c.kubectl_stdin("admin", &["apply", "--dry-run=server", "-f", "-"], &json);
    assert!(back.status.success(), "{}", both(&back));
    // reconcile update NAME: the pushed commit.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, None).push(
            "team/web",
            &["1.2.0".to_string()],
            false,
        ));
    ok(plugin(c, &["reconcile", "repository", "web", "-n", &a]));
    let policy_out = ok(plugin(c, &["reconcile", "policy", "web", "-n", &a]));
    assert!(policy_out.contains("web:1.2.0"), "{policy_out}");
    let out = ok(plugin(
        c,
        &["reconcile", "update", "fleet", "-n", &a, "--timeout", "60s"],
    ));
    let tip = git_text(&bare, &["rev-parse", "auto"]);
    assert!(out.contains(&tip), "{out} (tip {tip})");
    // --watch prints a change.
    let mut watch = Command::new("kubectl")
        .args(["imageauto", "get", "repositories", "-n", &b, "--watch"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("PATH", path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let mut read_until = |want: &dyn Fn(&str) -> bool, what: &str| loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => {
                let hit = want(&l);
                lines.push(l);
                if hit {
                    return lines.clone();
                }
            }
            Err(_) => panic!("get --watch printed no {what}: {lines:?}"),
        }
    };
    // The listing first, then the change.
    read_until(&|l| l.starts_with("web "), "row of web");
    ok(plugin(c, &["suspend", "repository", "web", "-n", &b]));
    let lines = read_until(
        &|l| l.starts_with("web ") && l.contains("true"),
        "suspended row",
    );
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(lines.len() >= 3, "{lines:?}");
    // suspend / resume.
    let susp = c.get_json(&["-n", &b, "imagerepository", "web"]);
    assert_eq!(susp["spec"]["suspend"], true);
    let r = ok(plugin(c, &["resume", "repository", "web", "-n", &b]));
    assert!(r.contains("resumed"), "{r}");
    assert_eq!(
        c.get_json(&["-n", &b, "imagerepository", "web"])["spec"]["suspend"],
        false
    );
    // events, newest last.
    let e = ok(plugin(c, &["events", "-n", &a]));
    assert!(e.lines().next().unwrap().contains("REASON"), "{e}");
    assert!(e.contains("ImageUpdateAutomation/fleet"), "{e}");
    // tree.
    let tr = ok(plugin(c, &["tree", "update", "fleet", "-n", &a]));
    assert!(
        tr.contains("GitRepository/")
            && tr.contains("ImagePolicy/")
            && tr.contains("ImageRepository/"),
        "{tr}"
    );
    // version: the client always; the server is not installed here.
    let v = plugin(c, &["version"]);
    assert!(
        both(&v).contains(&format!(
            "client: kubectl-imageauto {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        both(&v)
    );
    assert!(both(&v).contains("not installed"), "{}", both(&v));
    let v = plugin(c, &["version", "-o", "json"]);
    assert_eq!(v.status.code(), Some(1), "{}", both(&v));
    let j: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(j["client"], env!("CARGO_PKG_VERSION"));
    assert!(j["server"].is_null(), "{j}");
    flux_forms_and_outputs(c, &a, &b, &host);
    drop(serve);
}

/// A command that runs until dropped (`--watch`), its output gathered.
struct Watching {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Watching {
    fn start(c: &Cluster, args: &[&str]) -> Watching {
        let mut child = Command::new("kubectl")
            .arg("imageauto")
            .args(args)
            .env("KUBECONFIG", &c.kubeconfig)
            .env("PATH", path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Watching { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What Flux users type and expect, on the objects `serve` reconciled in
/// namespaces `a` (with the automation) and `b`.
fn flux_forms_and_outputs(c: &Cluster, a: &str, b: &str, host: &str) {
    // flux's word forms: `get images all`, `get image policy NAME`, ...
    let all = ok(plugin(c, &["get", "images", "all", "-n", a]));
    let tables: Vec<&str> = all.split("\n\n").collect();
    assert_eq!(tables.len(), 3, "{all}");
    assert!(
        tables[0]
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("imagerepository/web "),
        "{all}"
    );
    assert!(
        tables[1]
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("imagepolicy/web "),
        "{all}"
    );
    assert!(
        tables[2]
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("imageupdateautomation/fleet "),
        "{all}"
    );
    // The same rows (ages aside: a second may pass between the two).
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names(&ok(plugin(c, &["get", "all", "-n", a]))), names(&all));
    let one = ok(plugin(c, &["get", "image", "policy", "web", "-n", a]));
    assert!(one.contains(&format!("{host}/team/web:1.2.0")), "{one}");
    assert_eq!(ok(plugin(c, &["get", "imagepolicy/web", "-n", a])), one);
    let out = ok(plugin(
        c,
        &["reconcile", "image", "repository", "web", "-n", a],
    ));
    assert!(out.contains("scan fetched 3 tags"), "{out}");
    let out = ok(plugin(c, &["suspend", "image", "update", "fleet", "-n", a]));
    assert!(out.contains("suspended"), "{out}");
    // reconcile on a suspended object answers at once.
    let started = std::time::Instant::now();
    let o = plugin(c, &["reconcile", "image", "update", "fleet", "-n", a]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(text(&o.stderr).contains("is suspended"), "{}", both(&o));
    assert!(started.elapsed() < Duration::from_secs(20));
    let out = ok(plugin(c, &["resume", "image", "update", "fleet", "-n", a]));
    assert!(out.contains("resumed"), "{out}");
    // A wrong form: the right one, exit 2 (a misused command line).
    for (args, says) in [
        (&["get", "images"][..], "get images all"),
        (
            &["get", "image", "policy", "web", "other"],
            "one name at a time: get image policy web",
        ),
        (
            &["reconcile", "image", "update"],
            "reconcile image update NAME",
        ),
        (&["suspend", "image", "update"], "suspend image update NAME"),
        (&["tree", "update"], "tree update NAME"),
    ] {
        let o = plugin(c, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", both(&o));
        assert!(text(&o.stderr).contains(says), "{args:?}: {}", both(&o));
        assert!(
            !text(&o.stderr).contains("unexpected argument"),
            "{}",
            both(&o)
        );
    }
    let o = plugin(c, &["get", "image", "polcy"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        text(&o.stderr).contains("did you mean policy?"),
        "{}",
        both(&o)
    );
    // --status-selector, as flux's.
    let t = ok(plugin(
        c,
        &["get", "policies", "-A", "--status-selector", "ready=true"],
    ));
    assert!(t.contains(a) && t.contains(b), "{t}");
    let o = plugin(
        c,
        &["get", "policies", "-A", "--status-selector", "ready=false"],
    );
    assert!(o.status.success(), "{}", both(&o));
    assert!(!text(&o.stdout).contains(a), "{}", both(&o));
    // -o yaml|json without managedFields, unless asked for.
    let y = ok(plugin(c, &["get", "policy", "web", "-n", a, "-o", "yaml"]));
    assert!(!y.contains("managedFields"), "{y}");
    let y = ok(plugin(
        c,
        &[
            "get",
            "policy",
            "web",
            "-n",
            a,
            "-o",
            "yaml",
            "--show-managed-fields",
        ],
    ));
    assert!(y.contains("managedFields"), "{y}");
    let j = ok(plugin(c, &["get", "all", "-n", a, "-o", "json"]));
    assert!(!j.contains("managedFields"), "{j}");
    // tree -o json: Flux's shape.
    let j: Value = serde_json::from_str(&ok(plugin(
        c,
        &["tree", "update", "fleet", "-n", a, "-o", "json"],
    )))
    .unwrap();
    assert_eq!(j["resource"]["GroupKind"]["Kind"], "ImageUpdateAutomation");
    assert_eq!(j["resource"]["Name"], "fleet");
    assert_eq!(
        j["resources"][0]["resource"]["GroupKind"]["Kind"],
        "GitRepository"
    );
    assert_eq!(
        j["resources"][1]["resources"][0]["resource"]["GroupKind"]["Kind"],
        "ImageRepository"
    );
    assert_eq!(j["resources"][1]["ready"], "True");
    // A name given in the wrong namespace: where it is.
    let elsewhere = c.namespace("elsewhere");
    let o = plugin(c, &["get", "update", "fleet", "-n", &elsewhere]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        text(&o.stderr).contains(&format!("not found; found in {a}: add -n {a}")),
        "{}",
        both(&o)
    );
    let o = plugin(c, &["reconcile", "policy", "web", "-n", &elsewhere]);
    assert!(
        text(&o.stderr).contains(&format!("found in {}: add -n NAMESPACE", {
            let mut two = [a, b];
            two.sort();
            two.join(", ")
        })),
        "{}",
        both(&o)
    );
    let o = plugin(c, &["get", "policies", "-n", &elsewhere]);
    assert!(o.status.success(), "{}", both(&o));
    assert!(
        text(&o.stderr).contains(&format!("No ImagePolicies found in namespace {elsewhere}")),
        "{}",
        both(&o)
    );
    // events: --for, --types, and --watch.
    let e = ok(plugin(
        c,
        &["events", "-n", a, "--for", "ImageUpdateAutomation/fleet"],
    ));
    assert!(e.contains("ImageUpdateAutomation/fleet"), "{e}");
    assert!(!e.contains("ImagePolicy/"), "{e}");
    let o = plugin(c, &["events", "-n", a, "--types", "Warning"]);
    assert!(o.status.success(), "{}", both(&o));
    assert!(!text(&o.stdout).contains(" Normal "), "{}", both(&o));
    let o = plugin(c, &["events", "--types", "Loud"]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    let watch = |args: &[&str]| Watching::start(c, args);
    let events = watch(&[
        "events",
        "-n",
        b,
        "--watch",
        "--for",
        "ImageRepository/second",
    ]);
    // get all --watch: each row keeps its kind and its kind's columns.
    let rows = watch(&["get", "all", "-n", b, "--watch"]);
    let listed = ok(plugin(c, &["get", "all", "-n", b]));
    wait_for(
        Duration::from_secs(20),
        "the watch's listing",
        || (rows.output().lines().count() >= listed.lines().count()).then_some(()),
        || rows.output(),
    );
    // A new tag: a new scan result (an event), a new latest image.
    tokio::runtime::Runtime::new().unwrap().block_on(
        Pusher::new(&format!("http://{host}"), None, None).push(
            "team/web",
            &["1.3.0".to_string()],
            false,
        ),
    );
    ok(plugin(c, &["reconcile", "repository", "web", "-n", b]));
    ok(plugin(c, &["reconcile", "policy", "web", "-n", b]));
    c.kubectl_ok(&["-n", b, "annotate", "imagepolicy", "web", "seen=yes"]);
    let latest = format!("{host}/team/web:1.3.0");
    wait_for(
        Duration::from_secs(30),
        "the new policy and scan rows",
        || {
            let out = rows.output();
            let watched: Vec<&str> = out.lines().skip(listed.lines().count()).collect();
            (watched
                .iter()
                .any(|l| l.starts_with("imagepolicy/web ") && l.contains(&latest))
                && watched
                    .iter()
                    .any(|l| l.starts_with("imagerepository/web ") && l.contains("found 4 tags")))
            .then_some(())
        },
        || rows.output(),
    );
    let out = rows.output();
    assert!(
        out.lines()
            .skip(listed.lines().count())
            .all(|l| l.starts_with("imagerepository/web ") || l.starts_with("imagepolicy/web ")),
        "{out}"
    );
    // A new object's first scan: its event, as it happens.
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: second, namespace: {b}}}\nspec: {{image: {host}/team/web, interval: 1h, insecure: true}}\n"
    ));
    wait_for(
        Duration::from_secs(30),
        "the new object's event",
        || events.output().contains("found 4 tags").then_some(()),
        || {
            format!(
                "{}\n--- events -n {b}:\n{}",
                events.output(),
                both(&plugin(c, &["events", "-n", b]))
            )
        },
    );
    let out = events.output();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("LAST SEEN"), "{out}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains("ImageRepository/second")),
        "{out}"
    );
    drop(rows);
    drop(events);
    // A closed stdout ends a cluster command quietly.
    for args in [
        &["tree", "update", "fleet", "-n", a][..],
        &["get", "all", "-A"],
        &["events", "-A"],
    ] {
        let mut child = Command::new(bin())
            .args(args)
            .env("KUBECONFIG", &c.kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(141),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn bad_input_is_one_line_that_says_what_to_do() {
    let c = Cluster::shared();
    // No cluster reachable.
    let dead = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        dead.path(),
        "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: x, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let o = Command::new("kubectl")
        .args(["imageauto", "get", "policies"])
        .env("KUBECONFIG", dead.path())
        .env("PATH", path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let err = text(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach the cluster"), "{err}");
    // $KUBECONFIG as kubectl reads it: a list, its missing files skipped.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let list = format!("{}:{}", missing.display(), c.kubeconfig.display());
    let o = Command::new("kubectl")
        .args(["imageauto", "version"])
        .env("KUBECONFIG", &list)
        .env("PATH", path())
        .output()
        .unwrap();
    assert!(both(&o).contains("server: not installed"), "{}", both(&o));
    let o = Command::new(bin())
        .args(["get", "policies"])
        .env(
            "KUBECONFIG",
            format!(
                "{}:{}",
                missing.display(),
                dir.path().join("other.yaml").display()
            ),
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("none of the files $KUBECONFIG names exists"),
        "{}",
        both(&o)
    );
    // Kubeconfig errors name the file plainly, on one line.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Config\nclusters: [ {name: x\n").unwrap();
    for file in [&missing, &bad] {
        let o = Command::new(bin())
            .args(["get", "policies", "--kubeconfig"])
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!("kubeconfig {}", file.display())),
            "{err}"
        );
        for artefact in ["'\"", "\\n", "-->", "<input>"] {
            assert!(!err.contains(artefact), "{artefact}: {err}");
        }
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A name that does not exist.
    c.install_crds();
    let ns = c.namespace("bad");
    let o = plugin(c, &["reconcile", "policy", "nope", "-n", &ns]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(text(&o.stderr).contains("not found"), "{}", both(&o));
    // A verb RBAC forbids.
    let o = plugin_as(c, "viewer", &["get", "policies", "-n", &ns]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(text(&o.stderr).contains("forbidden"), "{}", both(&o));
    assert!(!text(&o.stderr).contains("panicked"));
    // A kind that is not one.
    let o = plugin(c, &["get", "pods"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        text(&o.stderr).contains("use repository, policy or update"),
        "{}",
        both(&o)
    );
}

#[test]
fn no_crds_installed_says_so() {
    let c = Cluster::start();
    let o = plugin(&c, &["get", "policies"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        text(&o.stderr).contains("kubectl imageauto install"),
        "{}",
        both(&o)
    );
}

#[test]
fn completion_scripts_load_and_complete_names() {
    let c = Cluster::shared();
    c.install_crds();
    let ns = c.namespace("compl");
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: podinfo, namespace: {ns}}}\nspec: {{image: ghcr.io/org/podinfo, interval: 5m}}\n"
    ));
    // The bash script loads and offers the subcommands.
    let script = ok(Command::new(bin())
        .args(["completion", "bash"])
        .output()
        .unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.bash");
    std::fs::write(&file, script).unwrap();
    // The script asks the program, on PATH.
    let check = Command::new("bash")
        .env("PATH", path())
        .arg("-c")
        .arg(format!(
            "source {}; fn=$(complete -p kubectl-imageauto | sed 's/.*-F \\([^ ]*\\) .*/\\1/'); COMP_WORDS=(kubectl-imageauto re); COMP_CWORD=1; COMP_LINE='kubectl-imageauto re'; COMP_POINT=${{#COMP_LINE}}; $fn kubectl-imageauto re kubectl-imageauto; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    let offered = text(&check.stdout);
    assert!(
        offered.contains("reconcile") && offered.contains("resume"),
        "{offered}{}",
        text(&check.stderr)
    );
    for shell in ["zsh", "fish", "powershell"] {
        assert!(
            !ok(Command::new(bin())
                .args(["completion", shell])
                .output()
                .unwrap())
            .is_empty()
        );
    }
    // kubectl's plugin completion: the kubectl_complete-imageauto script.
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugin/kubectl_complete-imageauto");
    let tools = tempfile::tempdir().unwrap();
    std::fs::copy(&helper, tools.path().join("kubectl_complete-imageauto")).unwrap();
    let p = format!("{}:{}", tools.path().display(), path());
    let o = Command::new("kubectl")
        .args([
            "__complete",
            "imageauto",
            "reconcile",
            "repository",
            "-n",
            &ns,
            "",
        ])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("PATH", &p)
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(
        out.lines().any(|l| l == "podinfo"),
        "{out}{}",
        text(&o.stderr)
    );
    let o = Command::new("kubectl")
        .args(["__complete", "imageauto", "sus"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("PATH", &p)
        .output()
        .unwrap();
    assert!(
        text(&o.stdout).lines().any(|l| l == "suspend"),
        "{}",
        text(&o.stdout)
    );
    // Flux's `image` word, flags and their values, namespaces.
    let o = Command::new("kubectl")
        .args([
            "__complete",
            "imageauto",
            "get",
            "image",
            "repository",
            "-n",
            &ns,
            "pod",
        ])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("PATH", &p)
        .output()
        .unwrap();
    assert!(
        text(&o.stdout).lines().any(|l| l == "podinfo"),
        "{}",
        text(&o.stdout)
    );
    complete_shells(c, &ns);
}

/// The scripts of `completion bash|zsh|fish`, loaded in each shell, ask
/// the program (on PATH) and offer object names from the cluster.
fn complete_shells(c: &Cluster, ns: &str) {
    let dir = tempfile::tempdir().unwrap();
    let script = |shell: &str| {
        let file = dir.path().join(format!("imageauto.{shell}"));
        std::fs::write(
            &file,
            ok(Command::new(bin())
                .args(["completion", shell])
                .output()
                .unwrap()),
        )
        .unwrap();
        file
    };
    let shell = |program: &str, code: String| {
        let o = Command::new(program)
            .arg("-c")
            .arg(code)
            .env("KUBECONFIG", &c.kubeconfig)
            .env("PATH", path())
            .output()
            .unwrap();
        format!("{}{}", text(&o.stdout), text(&o.stderr))
    };
    // bash: COMPREPLY of the function the script registers.
    let bash = script("bash");
    let reply = |words: &str| {
        shell(
            "bash",
            format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _kubectl_imageauto; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                bash.display()
            ),
        )
    };
    let r = reply(&format!(
        "kubectl-imageauto reconcile repository -n {ns} ''"
    ));
    assert_eq!(r.trim(), "podinfo", "{r}");
    let r = reply(&format!("kubectl-imageauto get image repo -n {ns} po"));
    assert_eq!(r.trim(), "podinfo", "{r}");
    let r = reply("kubectl-imageauto get --status");
    assert_eq!(r.trim(), "--status-selector", "{r}");
    let r = reply("kubectl-imageauto get policies -o ''");
    assert_eq!(
        r.split_whitespace().collect::<Vec<_>>(),
        ["table", "wide", "json", "yaml"],
        "{r}"
    );
    let r = reply(&format!("kubectl-imageauto get policies -n {}", &ns[..4]));
    assert!(r.lines().any(|l| l == ns), "{r}");
    // zsh: the function the script defines, with compadd standing in for
    // the completion system's builtin (it prints what it is given).
    let zsh = script("zsh");
    let r = shell(
        "zsh",
        format!(
            "autoload -U compinit && compinit -u -D; source {}; compadd() {{ shift 2; print -l -- \"$@\" }}; _files() {{ print FILES }}; words=(kubectl-imageauto suspend repository -n {ns} ''); CURRENT=6; _kubectl-imageauto",
            zsh.display()
        ),
    );
    assert_eq!(r.trim(), "podinfo", "{r}");
    // fish: its own completion of a command line.
    let fish = script("fish");
    let r = shell(
        "fish",
        format!(
            "source {}; complete -C 'kubectl-imageauto resume repository -n {ns} '",
            fish.display()
        ),
    );
    assert_eq!(r.trim(), "podinfo", "{r}");
    let r = shell(
        "fish",
        format!(
            "source {}; complete -C 'kubectl-imageauto recon'",
            fish.display()
        ),
    );
    assert_eq!(r.trim(), "reconcile", "{r}");
}

/// `serve`'s log says things once, plainly: a kubeconfig that skips TLS
/// verification (not kube's "Server cert bypassed" at every connection),
/// a refused watch (its message and code, not a Status dumped), and
/// "released the lease" only by the replica that held it.
#[test]
fn serve_logs_say_things_once_and_plainly() {
    let c = Cluster::shared();
    c.install_crds();
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let insecure = dir.path().join("insecure.kubeconfig");
    let lines: Vec<String> = original
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("certificate-authority-data:") {
                "    insecure-skip-tls-verify: true".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&insecure, lines.join("\n") + "\n").unwrap();
    let viewer = dir.path().join("viewer.kubeconfig");
    std::fs::write(
        &viewer,
        original.replace("current-context: admin", "current-context: viewer"),
    )
    .unwrap();
    let start = |kubeconfig: &Path, storage: &str, extra: &[&str]| {
        Serve::launch(
            bin(),
            c,
            &Launch {
                extra,
                storage: &dir.path().join(storage),
                kubeconfig: Some(kubeconfig),
                // What a user asks for: info, kube's logs included.
                rust_log: Some("info"),
                ..Launch::default()
            },
            None,
        )
    };
    let s = start(&insecure, "insecure", &["--leader-elect=false"]);
    s.wait_ready(Duration::from_secs(60));
    // Serve logs "caches synced: ready" once every watch has listed: by
    // then the client was made (and warned about) and every connection of
    // the start (which kube's TLS client would log) was opened. The log is
    // read in order, so once that line is read, so is all that came before.
    wait_for(
        Duration::from_secs(30),
        "the log line of readiness",
        || s.logs().contains("caches synced: ready").then_some(()),
        || s.logs(),
    );
    let logs = s.logs();
    assert_eq!(
        logs.matches("insecure-skip-tls-verify").count(),
        1,
        "{logs}"
    );
    assert!(!logs.contains("bypassed"), "{logs}");
    drop(s);
    let s = start(&viewer, "viewer", &["--leader-elect=false"]);
    wait_for(
        Duration::from_secs(30),
        "a refused watch in the log",
        || s.logs().contains("watch: cannot list").then_some(()),
        || s.logs(),
    );
    let logs = s.logs();
    assert!(logs.contains("(403 Forbidden)"), "{logs}");
    assert!(!logs.contains("Status {"), "{logs}");
    drop(s);
    // Two replicas: the one that never led says nothing of releasing.
    let ns = c.namespace("lease");
    let args = [
        "-n",
        ns.as_str(),
        "--leader-election-namespace",
        ns.as_str(),
    ];
    let one = start(&c.kubeconfig, "one", &args);
    one.wait_ready(Duration::from_secs(60));
    wait_for(
        Duration::from_secs(30),
        "a leader",
        || {
            one.logs()
                .contains("leader: starting the controllers")
                .then_some(())
        },
        || one.logs(),
    );
    let mut two = start(&c.kubeconfig, "two", &args);
    two.wait_ready(Duration::from_secs(60));
    assert!(
        two.terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        two.logs()
    );
    assert!(!two.logs().contains("released the lease"), "{}", two.logs());
    assert!(!two.logs().contains("leader: starting"), "{}", two.logs());
    let mut one = one;
    assert!(
        one.terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        one.logs()
    );
    assert!(one.logs().contains("released the lease"), "{}", one.logs());
}

/// In the cluster, a hint names the object's field first, the command
/// line's flag second.
#[test]
fn hints_in_the_cluster_name_the_spec_field_first() {
    let c = Cluster::shared();
    c.install_crds();
    let ns = c.namespace("hint");
    // A plain-HTTP registry, without spec.insecure.
    let reg = Registry::start(Auth::Anonymous, None);
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: plain, namespace: {ns}}}\nspec: {{image: {}/team/web, interval: 1h}}\n",
        reg.host()
    ));
    let serve = Serve::start(bin(), c, &["--leader-elect=false", "-n", &ns]);
    let message = wait_for(
        Duration::from_secs(60),
        "the scan to fail",
        || {
            let v = c.get_json(&["-n", &ns, "imagerepository", "plain"]);
            let m = v["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "False")?["message"]
                .as_str()?
                .to_string();
            m.contains("TLS").then_some(m)
        },
        || serve.logs(),
    );
    let field = message
        .find("spec.insecure: true")
        .unwrap_or_else(|| panic!("{message}"));
    let flag = message
        .find("--insecure")
        .unwrap_or_else(|| panic!("{message}"));
    assert!(field < flag, "{message}");
    // get -o wide shows the whole message.
    let t = ok(plugin(
        c,
        &["get", "repository", "plain", "-n", &ns, "-o", "wide"],
    ));
    assert!(t.contains(&message), "{t}\n{message}");
}
