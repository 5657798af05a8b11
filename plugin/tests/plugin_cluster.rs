//! `kubectl imageauto` against a real kube-apiserver, through kubectl's own
//! plugin discovery (the binary on PATH): install and uninstall, get,
//! reconcile, suspend and resume, events, tree, version, completion, and
//! the errors a user meets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{HttpsGit, Repos, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use imageauto_tests::serve::{Serve, wait_for};
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
    // A second install is a no-op.
    ok(plugin(
        &c,
        &["install", "--image", "example.com/imageauto:test"],
    ));
    assert_eq!(versions(&c), first);
    // The webhook configuration carries the CA of the certificate Secret.
    let vwc = c.get_json(&["validatingwebhookconfiguration", "imageauto"]);
    let secret = c.get_json(&["-n", "imageauto-system", "secret", "imageauto-webhook-cert"]);
    assert_eq!(
        vwc["webhooks"][0]["clientConfig"]["caBundle"],
        secret["data"]["ca.crt"]
    );
    // A user's object, then uninstall: the object and the CRDs stay, the
    // webhook configuration is gone.
    let ns = c.namespace("user");
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {ns}, finalizers: [finalizers.fluxcd.io]}}\nspec: {{image: ghcr.io/org/web, interval: 5m}}\n"
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
    // --delete-crds asks first.
    let o = plugin(&c, &["uninstall", "--delete-crds"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(both(&o).contains("not confirmed"), "{}", both(&o));
    c.kubectl_ok(&["get", "crd", "imagepolicies.image.toolkit.fluxcd.io"]);
    ok(plugin(&c, &["uninstall", "--delete-crds", "--yes"]));
    assert!(
        !c.kubectl(&["get", "crd", "imagepolicies.image.toolkit.fluxcd.io"])
            .status
            .success()
    );
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
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: flux-system}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: image-reflector-controller, namespace: flux-system}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: irc}}\n  template:\n    metadata: {labels: {app: irc}}\n    spec: {containers: [{name: c, image: ghcr.io/fluxcd/image-reflector-controller:v1.0.0}]}\n",
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
    std::thread::sleep(Duration::from_secs(2));
    ok(plugin(c, &["suspend", "repository", "web", "-n", &b]));
    std::thread::sleep(Duration::from_secs(2));
    let _ = watch.kill();
    let watched = watch.wait_with_output().unwrap();
    let lines: Vec<String> = text(&watched.stdout).lines().map(str::to_string).collect();
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(lines.last().unwrap().contains("true"), "{lines:?}");
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
    drop(serve);
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
    let check = Command::new("bash")
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
}
