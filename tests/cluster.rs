//! `kubectl imageauto serve` against a real kube-apiserver (and etcd), a real
//! registry and a real Git server over HTTPS: the manifests users already
//! have, applied with kubectl, scanned, resolved, committed and pushed, with
//! the status and events Flux writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::{HttpsGit, Repos, git_text};
use imageauto_tests::kube::Cluster;
use imageauto_tests::registry::{Auth, Pusher, Registry, Tls};
use imageauto_tests::serve::{Serve, wait_for};
use serde_json::Value;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn cluster() -> &'static Cluster {
    let c = Cluster::shared();
    c.install_crds();
    c
}

fn push_tags(reg: &Registry, repo: &str, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Pusher::new(&reg.url(), None, None).push(repo, &tags, false));
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: apps\n\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: REG/team/web:1.0.0 # {\"$imagepolicy\": \"NS:web\"}\n";
const API: &str = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: api, namespace: apps}\nspec:\n  values:\n    image:\n      repository: REG/team/api # {\"$imagepolicy\": \"NS:api:name\"}\n      tag: main-0000000-1 # {\"$imagepolicy\": \"NS:api:tag\"}\n";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The seed-style objects: a Secret and a GitRepository for the fleet over
/// HTTPS, two repositories and policies (semver; numerical over extracted
/// timestamps), and a v1beta1 automation with an `.Updated` template.
fn manifests(ns: &str, reg: &str, git_url: &str, ca: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: fleet-auth, namespace: {ns}}}
type: Opaque
data:
  username: {user}
  password: {password}
  ca.crt: {ca}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {ns}}}
spec:
  interval: 1m
  url: {git_url}
  ref: {{branch: main}}
  secretRef: {{name: fleet-auth}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {ns}}}
spec:
  image: {reg}/team/web
  interval: 1h
  insecure: true
---
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImagePolicy
metadata: {{name: web, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: web}}
  policy:
    semver:
      range: '>=1.0.0 <2.0.0'
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: api, namespace: {ns}}}
spec:
  image: {reg}/team/api
  interval: 1h
  insecure: true
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: api, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: api}}
  filterTags:
    pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$'
    extract: '$ts'
  policy:
    numerical: {{order: asc}}
---
apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageUpdateAutomation
metadata: {{name: fleet, namespace: {ns}}}
spec:
  interval: 1h
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    checkout: {{ref: {{branch: main}}}}
    commit:
      author: {{name: imageauto, email: imageauto@example.com}}
      messageTemplate: |
        Update images
        {{{{ range .Updated.Images }}}}- {{{{ . }}}}
        {{{{ end }}}}
    push: {{branch: flux-image-updates}}
  update: {{path: ./apps, strategy: Setters}}
"#,
        user = b64("bot"),
        password = b64("s3cret-git-pass"),
        ca = b64(ca),
    )
}

fn status(c: &Cluster, ns: &str, kind: &str, name: &str) -> Value {
    c.get_json(&["-n", ns, kind, name])["status"].clone()
}

fn ready(v: &Value) -> Option<(String, String, String)> {
    v["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "Ready").then(|| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

#[test]
fn the_seed_manifests_are_scanned_resolved_committed_and_pushed() {
    seed_scenario(cluster(), false);
}

/// The same with Flux's own CRD shape in force (v1 served alone, CEL rules
/// the 1.20 apiserver drops): serve needs none of ours.
#[test]
fn with_flux_style_crds_in_force() {
    let c = Cluster::start();
    c.install_flux_style_crds();
    seed_scenario(&c, true);
}

fn seed_scenario(c: &Cluster, flux_style: bool) {
    let ns = c.namespace("seed");
    let reg = Registry::start(Auth::Anonymous, None);
    push_tags(
        &reg,
        "team/web",
        &["1.0.0", "1.2.3", "1.10.0", "2.0.0-rc.1", "v1.3.0", "2.0.0"],
    );
    push_tags(
        &reg,
        "team/api",
        &[
            "main-abc1234-1700000000",
            "main-def5678-1700000500",
            "main-0a1b2c3-999",
            "latest",
        ],
    );
    let host = reg.host();
    let repos = Repos::new();
    let web = WEB.replace("REG", &host).replace("NS", &ns);
    let api = API.replace("REG", &host).replace("NS", &ns);
    let bare = repos.create("fleet", &[("apps/web.yaml", &web), ("apps/api.yaml", &api)]);
    let tls = Tls::new("git CA");
    let git = HttpsGit::start(repos.dir.path(), "bot", "s3cret-git-pass", &tls);
    let mut m = manifests(&ns, &host, &git.url("fleet"), &tls.ca_pem);
    if flux_style {
        // Flux 1.2 serves v1 alone.
        m = m.replace("/v1beta2", "/v1").replace("/v1beta1", "/v1");
    }
    c.apply(&m);
    let serve = Serve::start(bin(), c, &["-n", &ns, "--leader-elect=false"]);
    let explain = || {
        format!(
            "{}\n{}",
            c.kubectl_ok(&[
                "-n",
                &ns,
                "get",
                "imagerepositories,imagepolicies,imageupdateautomations",
                "-o",
                "yaml"
            ]),
            serve.logs()
        )
    };
    // The automation pushes once both policies resolved.
    let commit = wait_for(
        Duration::from_secs(90),
        "the automation's first push",
        || {
            let s = status(c, &ns, "imageupdateautomation", "fleet");
            let pushed = s["lastPushCommit"].as_str()?.to_string();
            let observed = s["observedPolicies"].as_object()?;
            (observed.len() == 2).then_some(pushed)
        },
        explain,
    );
    assert_eq!(
        git_text(&bare, &["rev-parse", "flux-image-updates"]),
        commit
    );
    // Exactly the marked values changed.
    let pushed_web = git_text(&bare, &["show", "flux-image-updates:apps/web.yaml"]);
    assert_eq!(
        pushed_web,
        web.replace("web:1.0.0", "web:1.10.0").trim_end()
    );
    let pushed_api = git_text(&bare, &["show", "flux-image-updates:apps/api.yaml"]);
    assert_eq!(
        pushed_api,
        api.replace("main-0000000-1", "main-def5678-1700000500")
            .trim_end()
    );
    // One commit per run: both values in one, or each in its own when the
    // policies resolved apart; never more.
    let log = git_text(
        &bare,
        &[
            "log",
            "--format=%an <%ae>%n%B%x00",
            "main..flux-image-updates",
        ],
    );
    let messages: Vec<&str> = log
        .split('\0')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    assert!((1..=2).contains(&messages.len()), "{log}");
    for m in &messages {
        assert!(
            m.starts_with("imageauto <imageauto@example.com>\nUpdate images"),
            "{m}"
        );
    }
    assert!(log.contains(&format!("- {host}/team/web:1.10.0")), "{log}");
    assert!(
        log.contains(&format!("- {host}/team/api:main-def5678-1700000500")),
        "{log}"
    );
    let first_pushes = messages.len();
    // Flux's status.
    let repo = status(c, &ns, "imagerepository", "web");
    assert_eq!(repo["lastScanResult"]["tagCount"], 6);
    assert_eq!(repo["canonicalImageName"], format!("{host}/team/web"));
    assert_eq!(
        repo["observedExclusionList"],
        serde_json::json!(["^.*\\.sig$"])
    );
    assert_eq!(repo["observedGeneration"], 1);
    let (st, reason, msg) = ready(&repo).unwrap();
    assert_eq!((st.as_str(), reason.as_str()), ("True", "Succeeded"));
    assert!(
        msg.starts_with("successful scan: found 6 tags with checksum "),
        "{msg}"
    );
    let pol = status(c, &ns, "imagepolicy", "web");
    assert_eq!(pol["latestRef"]["name"], format!("{host}/team/web"));
    assert_eq!(pol["latestRef"]["tag"], "1.10.0");
    let (_, _, msg) = ready(&pol).unwrap();
    assert_eq!(
        msg,
        format!("Latest image tag for {host}/team/web resolved to 1.10.0")
    );
    let auto = status(c, &ns, "imageupdateautomation", "fleet");
    let main = git_text(&bare, &["rev-parse", "main"]);
    assert_eq!(auto["observedSourceRevision"], format!("main@sha1:{main}"));
    assert_eq!(auto["observedPolicies"]["web"]["tag"], "1.10.0");
    assert!(auto["lastPushTime"].is_string());
    // Events, as kubectl shows them.
    let events = c.kubectl_ok(&["-n", &ns, "get", "events", "-o", "json"]);
    // Flux's push event: the summary, then the commit message.
    let short = &commit[..7];
    assert!(
        events.contains(&format!(
            "pushed commit '{short}' to branch 'flux-image-updates'\\nUpdate images"
        )),
        "{events}"
    );
    assert!(events.contains("Latest image tag for"), "{events}");
    // A new tag, and a reconcile request: a second commit, with no interval
    // elapsing (all intervals are 1h).
    push_tags(&reg, "team/web", &["1.11.0"]);
    c.kubectl_ok(&[
        "-n",
        &ns,
        "annotate",
        "--overwrite",
        "imagerepository",
        "web",
        "reconcile.fluxcd.io/requestedAt=now-1",
    ]);
    let second = wait_for(
        Duration::from_secs(60),
        "the second push",
        || {
            let s = status(c, &ns, "imageupdateautomation", "fleet");
            let p = s["lastPushCommit"].as_str()?.to_string();
            (p != commit).then_some(p)
        },
        explain,
    );
    assert_eq!(
        git_text(&bare, &["rev-parse", "flux-image-updates"]),
        second
    );
    assert!(git_text(&bare, &["show", "flux-image-updates:apps/web.yaml"]).contains("web:1.11.0"));
    let repo = status(c, &ns, "imagerepository", "web");
    assert_eq!(repo["lastHandledReconcileAt"], "now-1");
    assert_eq!(repo["lastScanResult"]["tagCount"], 7);
    let pol = status(c, &ns, "imagepolicy", "web");
    assert_eq!(pol["observedPreviousRef"]["tag"], "1.10.0");
    // The metrics saw it all.
    let m = serve.metrics();
    assert!(
        m.contains(&format!(
            "imageauto_git_push_total{{result=\"pushed\"}} {}",
            first_pushes + 1
        )),
        "{m}"
    );
    assert_eq!(
        git_text(&bare, &["rev-list", "--count", "main..flux-image-updates"]),
        (first_pushes + 1).to_string()
    );
    assert!(
        m.contains("imageauto_reconcile_total{kind=\"ImagePolicy\",result=\"success\"}"),
        "{m}"
    );
    // No credential anywhere.
    for text in [serve.logs(), explain(), events] {
        assert!(!text.contains("s3cret-git-pass"));
    }
    drop(repos);
}

/// A world for the resilience tests: a registry with tags, a fleet over
/// HTTPS, the seed manifests in a fresh namespace.
struct World {
    ns: String,
    reg: Registry,
    bare: std::path::PathBuf,
    _git: HttpsGit,
    _repos: Repos,
}

fn world(c: &Cluster, prefix: &str) -> World {
    let ns = c.namespace(prefix);
    let reg = Registry::start(Auth::Anonymous, None);
    push_tags(&reg, "team/web", &["1.0.0", "1.10.0"]);
    push_tags(&reg, "team/api", &["main-abc1234-1700000000"]);
    let host = reg.host();
    let repos = Repos::new();
    let web = WEB.replace("REG", &host).replace("NS", &ns);
    let api = API.replace("REG", &host).replace("NS", &ns);
    let bare = repos.create("fleet", &[("apps/web.yaml", &web), ("apps/api.yaml", &api)]);
    let tls = Tls::new("git CA");
    let git = HttpsGit::start(repos.dir.path(), "bot", "s3cret-git-pass", &tls);
    c.apply(&manifests(&ns, &host, &git.url("fleet"), &tls.ca_pem));
    World {
        ns,
        reg,
        bare,
        _git: git,
        _repos: repos,
    }
}

fn pushed(c: &Cluster, ns: &str) -> Option<String> {
    status(c, ns, "imageupdateautomation", "fleet")["lastPushCommit"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn killed_mid_run_it_converges_without_a_duplicate_commit() {
    let c = cluster();
    let w = world(c, "kill");
    let storage = tempfile::tempdir().unwrap();
    let mut s = Serve::start_with_storage(
        bin(),
        c,
        &["-n", &w.ns, "--leader-elect=false"],
        &storage.path().join("s"),
        None,
    );
    // Killed as soon as a policy has resolved: the automation's run is
    // starting or under way.
    wait_for(
        Duration::from_secs(60),
        "a resolved policy",
        || {
            status(c, &w.ns, "imagepolicy", "web")["latestRef"]["tag"]
                .as_str()
                .map(|_| ())
        },
        || s.logs(),
    );
    s.kill();
    let s = Serve::start_with_storage(
        bin(),
        c,
        &["-n", &w.ns, "--leader-elect=false"],
        &storage.path().join("s"),
        None,
    );
    // Converged: both policies observed, Ready. The push may be the killed
    // process's (then the restarted one finds nothing to change, and, as
    // Flux's, records no push of its own) or the restarted one's.
    wait_for(
        Duration::from_secs(90),
        "the automation to converge after the restart",
        || {
            let s = status(c, &w.ns, "imageupdateautomation", "fleet");
            let converged = s["observedPolicies"].as_object()?.len() == 2
                && ready(&s).is_some_and(|(st, _, _)| st == "True");
            converged.then_some(())
        },
        || {
            format!(
                "{}\n{}",
                c.kubectl_ok(&[
                    "-n",
                    &w.ns,
                    "get",
                    "imagerepositories,imagepolicies,imageupdateautomations",
                    "-o",
                    "yaml"
                ]),
                s.logs()
            )
        },
    );
    // One commit on top of main, holding both changes.
    assert_eq!(
        git_text(
            &w.bare,
            &["rev-list", "--count", "main..flux-image-updates"]
        ),
        "1",
        "{}",
        git_text(&w.bare, &["log", "--oneline", "flux-image-updates"])
    );
    let tip = git_text(&w.bare, &["rev-parse", "flux-image-updates"]);
    let files = git_text(&w.bare, &["show", "--stat", "--format=", &tip]);
    assert!(
        files.contains("apps/web.yaml") && files.contains("apps/api.yaml"),
        "{files}"
    );
    if let Some(recorded) = pushed(c, &w.ns) {
        assert_eq!(recorded, tip);
    }
    // Every stored scan reads whole; no temporary file is left.
    let tags = storage.path().join("s/tags");
    for ns in std::fs::read_dir(&tags).unwrap().flatten() {
        for f in std::fs::read_dir(ns.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp-"), "{name}");
            let v: Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
            assert!(v["tags"].is_array(), "{name}");
        }
    }
    // A reconcile request on the automation with nothing new: no commit.
    c.kubectl_ok(&[
        "-n",
        &w.ns,
        "annotate",
        "--overwrite",
        "imageupdateautomation",
        "fleet",
        "reconcile.fluxcd.io/requestedAt=again",
    ]);
    wait_for(
        Duration::from_secs(30),
        "the request handled",
        || {
            let st = status(c, &w.ns, "imageupdateautomation", "fleet");
            (st["lastHandledReconcileAt"] == "again").then_some(())
        },
        || s.logs(),
    );
    assert_eq!(
        git_text(
            &w.bare,
            &["rev-list", "--count", "main..flux-image-updates"]
        ),
        "1"
    );
    drop(w.reg);
}

#[test]
fn with_leader_election_only_the_leader_writes() {
    let c = cluster();
    let w = world(c, "leader");
    let args = [
        "-n",
        w.ns.as_str(),
        "--leader-elect=true",
        "--leader-election-namespace",
        w.ns.as_str(),
    ];
    let a = Serve::start(bin(), c, &args);
    let b = Serve::start(bin(), c, &args);
    wait_for(
        Duration::from_secs(90),
        "a push by the leader",
        || pushed(c, &w.ns),
        || format!("{}\n---\n{}", a.logs(), b.logs()),
    );
    let leads = |s: &Serve| s.logs().contains("leader: starting the controllers");
    assert!(
        leads(&a) ^ leads(&b),
        "exactly one leads:\n{}\n---\n{}",
        a.logs(),
        b.logs()
    );
    let lease = c.get_json(&["-n", &w.ns, "lease", "imageauto-controller"]);
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    // The follower takes over when the leader dies.
    let (mut leader, follower) = if leads(&a) { (a, b) } else { (b, a) };
    leader.kill();
    wait_for(
        Duration::from_secs(60),
        "the follower to take over",
        || leads(&follower).then_some(()),
        || follower.logs(),
    );
    let lease = c.get_json(&["-n", &w.ns, "lease", "imageauto-controller"]);
    assert_ne!(lease["spec"]["holderIdentity"].as_str().unwrap(), holder);
    // And works: a new tag reaches Git.
    push_tags(&w.reg, "team/web", &["1.11.0"]);
    c.kubectl_ok(&[
        "-n",
        &w.ns,
        "annotate",
        "--overwrite",
        "imagerepository",
        "web",
        "reconcile.fluxcd.io/requestedAt=takeover",
    ]);
    wait_for(
        Duration::from_secs(60),
        "a push by the new leader",
        || {
            git_text(&w.bare, &["show", "flux-image-updates:apps/web.yaml"])
                .contains("web:1.11.0")
                .then_some(())
        },
        || follower.logs(),
    );
    // SIGTERM: the lease is released on the way out.
    let mut follower = follower;
    let status = follower.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", follower.logs());
    assert!(
        follower.logs().contains("released the lease"),
        "{}",
        follower.logs()
    );
}

#[test]
fn an_apiserver_outage_is_recovered_without_a_restart() {
    let c = Cluster::start();
    c.install_crds();
    let w = world(&c, "outage");
    let s = Serve::start(bin(), &c, &["-n", &w.ns, "--leader-elect=false"]);
    wait_for(
        Duration::from_secs(90),
        "the first push",
        || pushed(&c, &w.ns),
        || s.logs(),
    );
    c.pause_apiserver(Duration::from_secs(10));
    push_tags(&w.reg, "team/web", &["1.11.0"]);
    c.kubectl_ok(&[
        "-n",
        &w.ns,
        "annotate",
        "--overwrite",
        "imagerepository",
        "web",
        "reconcile.fluxcd.io/requestedAt=after-outage",
    ]);
    wait_for(
        Duration::from_secs(120),
        "a push after the outage",
        || {
            git_text(&w.bare, &["show", "flux-image-updates:apps/web.yaml"])
                .contains("web:1.11.0")
                .then_some(())
        },
        || s.logs(),
    );
}

#[test]
fn bad_input_gets_its_condition_and_no_credential_shows() {
    let c = cluster();
    let w = world(c, "bad");
    let ns = &w.ns;
    let tls = Tls::new("registry CA");
    let secure = Registry::start(
        Auth::Htpasswd {
            user: "puller".into(),
            password: "right-password".into(),
        },
        Some(&tls),
    );
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        secure.host(),
        b64("puller:WR0NG-PASSW0RD-123")
    );
    // A GitRepository whose server refuses every push.
    let refusing = Repos::new();
    let rbare = refusing.create(
        "fleet",
        &[(
            "apps/web.yaml",
            &WEB.replace("REG", &w.reg.host()).replace("NS", ns),
        )],
    );
    Repos::hook(&rbare, "pre-receive", "echo 'protected branch' >&2\nexit 1");
    let rtls = Tls::new("refusing git CA");
    let rgit = HttpsGit::start(refusing.dir.path(), "bot", "s3cret-git-pass", &rtls);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: wrong-creds, namespace: {ns}}}
type: kubernetes.io/dockerconfigjson
data:
  .dockerconfigjson: {dockerconfig}
---
apiVersion: v1
kind: Secret
metadata: {{name: registry-ca, namespace: {ns}}}
data:
  ca.crt: {ca}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: unreachable, namespace: {ns}}}
spec: {{image: 127.0.0.1:1/nothing/here, interval: 1h, insecure: true, timeout: 5s}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: wrongcreds, namespace: {ns}}}
spec:
  image: {secure}/team/app
  interval: 1h
  secretRef: {{name: wrong-creds}}
  certSecretRef: {{name: registry-ca}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: nosecret, namespace: {ns}}}
spec:
  image: {secure}/team/app
  interval: 1h
  secretRef: {{name: does-not-exist}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: badimage, namespace: {ns}}}
spec: {{image: 'https://ghcr.io/org/app', interval: 1h}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: badrange, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: web}}
  policy: {{semver: {{range: 'not a range'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: norepo, namespace: {ns}}}
spec:
  imageRepositoryRef: {{name: nothing-here}}
  policy: {{semver: {{range: '*'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: nosource, namespace: {ns}}}
spec:
  interval: 1h
  sourceRef: {{kind: GitRepository, name: missing}}
  git:
    commit: {{author: {{email: bot@example.com}}}}
    push: {{branch: auto}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: refusing, namespace: {ns}}}
spec:
  interval: 1m
  url: {rurl}
  ref: {{branch: main}}
  secretRef: {{name: fleet-auth-refusing}}
---
apiVersion: v1
kind: Secret
metadata: {{name: fleet-auth-refusing, namespace: {ns}}}
data:
  username: {user}
  password: {password}
  ca.crt: {rca}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: refused, namespace: {ns}}}
spec:
  interval: 1h
  sourceRef: {{kind: GitRepository, name: refusing}}
  git:
    commit: {{author: {{email: bot@example.com}}}}
    push: {{branch: auto}}
  update: {{path: ./apps}}
"#,
        dockerconfig = b64(&config),
        ca = b64(&tls.ca_pem),
        secure = secure.host(),
        rurl = rgit.url("fleet"),
        rca = b64(&rtls.ca_pem),
        user = b64("bot"),
        password = b64("s3cret-git-pass"),
    ));
    let s = Serve::start(bin(), c, &["-n", ns, "--leader-elect=false"]);
    let reason_of = |kind: &str, name: &str| {
        ready(&status(c, ns, kind, name)).map(|(st, reason, _)| (st, reason))
    };
    // Flux's reasons (image-reflector-controller
    // internal/controller/imagerepository_controller.go: a scan that fails,
    // a 401 included, is ReadOperationFailed; credentials that cannot be
    // read are AuthenticationFailed; imagepolicy_controller.go;
    // image-automation-controller imageupdateautomation_controller.go).
    let expect = [
        ("imagerepository", "unreachable", "ReadOperationFailed"),
        ("imagerepository", "wrongcreds", "ReadOperationFailed"),
        ("imagerepository", "nosecret", "AuthenticationFailed"),
        ("imagerepository", "badimage", "ImageURLInvalid"),
        ("imagepolicy", "badrange", "InvalidPolicy"),
        ("imagepolicy", "norepo", "DependencyNotReady"),
        ("imageupdateautomation", "nosource", "SourceManagerFailed"),
        ("imageupdateautomation", "refused", "GitOperationFailed"),
    ];
    for (kind, name, reason) in expect {
        wait_for(
            Duration::from_secs(90),
            &format!("{kind} {name} to say {reason}"),
            || (reason_of(kind, name) == Some(("False".into(), reason.into()))).then_some(()),
            || format!("{:?}\n{}", status(c, ns, kind, name), s.logs()),
        );
    }
    // Permanent problems stall; transient ones retry.
    let stalled = |kind: &str, name: &str| {
        status(c, ns, kind, name)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Stalled" && c["status"] == "True")
    };
    assert!(stalled("imagerepository", "badimage"));
    assert!(stalled("imagepolicy", "badrange"));
    assert!(!stalled("imagerepository", "unreachable"));
    // The working objects kept working.
    wait_for(
        Duration::from_secs(90),
        "the good automation's push",
        || pushed(c, ns),
        || s.logs(),
    );
    // The messages say what happened, and no credential is anywhere.
    let all = format!(
        "{}\n{}\n{}",
        c.kubectl_ok(&[
            "-n",
            ns,
            "get",
            "imagerepositories,imagepolicies,imageupdateautomations",
            "-o",
            "yaml"
        ]),
        c.kubectl_ok(&["-n", ns, "get", "events", "-o", "yaml"]),
        s.logs()
    );
    assert!(
        all.contains("Secret") && all.contains("does-not-exist"),
        "{all}"
    );
    assert!(all.contains("protected branch"), "{all}");
    for secret in ["WR0NG-PASSW0RD-123", "s3cret-git-pass", "right-password"] {
        assert!(!all.contains(secret), "{secret} shows");
    }
    drop(secure);
}

#[test]
fn access_from_digests_suspend_service_accounts_and_shards() {
    let c = cluster();
    let images = c.namespace("images");
    let apps = c.namespace("apps");
    let tls = Tls::new("registry CA");
    let reg = Registry::start(
        Auth::Htpasswd {
            user: "puller".into(),
            password: "pull-pass".into(),
        },
        Some(&tls),
    );
    let pusher_auth = Some(format!("Basic {}", b64("puller:pull-pass")));
    let tags: Vec<String> = ["1.0.0", "1.1.0"].iter().map(|t| t.to_string()).collect();
    let digests = tokio::runtime::Runtime::new().unwrap().block_on(
        Pusher::new(&reg.url(), Some(&tls.ca_pem), pusher_auth).push("team/web", &tags, true),
    );
    let host = reg.host();
    let config = format!(
        r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
        b64("puller:pull-pass")
    );
    c.kubectl_ok(&["label", "namespace", &apps, "team=web"]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: pull, namespace: {images}}}
type: kubernetes.io/dockerconfigjson
data: {{.dockerconfigjson: {dc}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: ca, namespace: {images}}}
data: {{ca.crt: {ca}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: scanner, namespace: {images}}}
imagePullSecrets: [{{name: pull}}]
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: web, namespace: {images}, labels: {{shard: a}}}}
spec:
  image: {host}/team/web
  interval: 1h
  serviceAccountName: scanner
  certSecretRef: {{name: ca}}
  accessFrom:
    namespaceSelectors: [{{matchLabels: {{team: web}}}}]
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {{name: paused, namespace: {images}, labels: {{shard: a}}}}
spec:
  image: {host}/team/web
  interval: 1h
  suspend: true
  serviceAccountName: scanner
  certSecretRef: {{name: ca}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: web, namespace: {apps}, labels: {{shard: a}}}}
spec:
  imageRepositoryRef: {{name: web, namespace: {images}}}
  digestReflectionPolicy: Always
  interval: 1h
  policy: {{semver: {{range: '1.x'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: stranger, namespace: {images}, labels: {{shard: a}}}}
spec:
  imageRepositoryRef: {{name: web}}
  policy: {{semver: {{range: '1.x'}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {{name: other-shard, namespace: {apps}, labels: {{shard: b}}}}
spec:
  imageRepositoryRef: {{name: web, namespace: {images}}}
  policy: {{semver: {{range: '1.x'}}}}
"#,
        dc = b64(&config),
        ca = b64(&tls.ca_pem),
    ));
    // A third namespace, not selected by accessFrom.
    let outside = c.namespace("outside");
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {{name: web, namespace: {outside}, labels: {{shard: a}}}}\nspec:\n  imageRepositoryRef: {{name: web, namespace: {images}}}\n  policy: {{semver: {{range: '1.x'}}}}\n"
    ));
    // One instance for shard a, watching every namespace.
    let s = Serve::start(
        bin(),
        c,
        &["--leader-elect=false", "--watch-label-selector", "shard=a"],
    );
    let explain = || s.logs();
    // Credentials from the ServiceAccount, the CA from certSecretRef.
    wait_for(
        Duration::from_secs(60),
        "the scan with the ServiceAccount's pull secret",
        || {
            let r = status(c, &images, "imagerepository", "web");
            (r["lastScanResult"]["tagCount"] == 2).then_some(())
        },
        explain,
    );
    // accessFrom admits apps; the digest is reflected.
    let pol = wait_for(
        Duration::from_secs(60),
        "the cross-namespace policy",
        || {
            let p = status(c, &apps, "imagepolicy", "web");
            p["latestRef"]["digest"].is_string().then_some(p)
        },
        explain,
    );
    assert_eq!(pol["latestRef"]["tag"], "1.1.0");
    assert_eq!(pol["latestRef"]["digest"], digests[1]);
    let (_, _, msg) = ready(&pol).unwrap();
    assert!(
        msg.ends_with(&format!("resolved to 1.1.0 with digest {}", digests[1])),
        "{msg}"
    );
    // accessFrom refuses a namespace it does not select.
    wait_for(
        Duration::from_secs(60),
        "AccessDenied outside",
        || {
            let (st, reason, _) = ready(&status(c, &outside, "imagepolicy", "web"))?;
            (st == "False" && reason == "AccessDenied").then_some(())
        },
        explain,
    );
    // The same namespace needs no accessFrom.
    wait_for(
        Duration::from_secs(60),
        "the same-namespace policy",
        || {
            status(c, &images, "imagepolicy", "stranger")["latestRef"]["tag"]
                .as_str()
                .map(|_| ())
        },
        explain,
    );
    // Suspended: never scanned.
    assert!(status(c, &images, "imagerepository", "paused")["lastScanResult"].is_null());
    // Another shard's object is left to another instance.
    assert!(
        c.get_json(&["-n", &apps, "imagepolicy", "other-shard"])["status"]["conditions"].is_null(),
        "an object of another shard was reconciled"
    );
    // A reconcile request on a suspended object does nothing; resumed, it scans.
    c.kubectl_ok(&[
        "-n",
        &images,
        "patch",
        "imagerepository",
        "paused",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    wait_for(
        Duration::from_secs(60),
        "the resumed repository's scan",
        || {
            (status(c, &images, "imagerepository", "paused")["lastScanResult"]["tagCount"] == 2)
                .then_some(())
        },
        explain,
    );
    assert!(!s.logs().contains("pull-pass"));
}

/// (Re)creates the Secret `signing` from files, so that neither the key nor
/// the passphrase is ever on a command line or in a manifest a failure
/// would print.
fn signing_secret(c: &Cluster, ns: &str, key_name: &str, key: &str, passphrase: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (k, p) = (dir.path().join("key"), dir.path().join("passphrase"));
    std::fs::write(&k, key).unwrap();
    std::fs::write(&p, passphrase).unwrap();
    c.kubectl_ok(&[
        "-n",
        ns,
        "delete",
        "secret",
        "signing",
        "--ignore-not-found",
    ]);
    c.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "signing",
        &format!("--from-file={key_name}={}", k.display()),
        &format!("--from-file=passphrase={}", p.display()),
    ]);
}

fn request(c: &Cluster, ns: &str, kind: &str, name: &str, value: &str) {
    c.kubectl_ok(&[
        "-n",
        ns,
        "annotate",
        "--overwrite",
        kind,
        name,
        &format!("reconcile.fluxcd.io/requestedAt={value}"),
    ]);
}

/// `spec.git.commit.signingKey` in the cluster: the Secret's `git.asc`
/// (OpenPGP) or `git.ssh` (SSH) and `passphrase`. A wrong passphrase leaves
/// the automation not Ready with Flux's reason for a signing key that cannot
/// be read, SourceManagerFailed (image-automation-controller
/// internal/source/git.go, resolveSigner, inside the source manager), pushes nothing
/// and shows the passphrase nowhere; once the Secret is right, the next run
/// at the automation's interval pushes a commit `git verify-commit`
/// accepts; with an SSH key in its place, the next commit is SSH-signed.
#[test]
fn commits_are_signed_with_the_key_of_the_automation_secret() {
    use imageauto_tests::signing::{Gpg, SIGNER_EMAIL, SshSigningKey};
    let c = cluster();
    let w = world(c, "sign");
    let gpg = Gpg::new();
    let pass = "pgp-passphrase-5c1e";
    let wrong = "not-the-passphrase-77a0";
    let fpr = gpg.generate("ed25519", "sign", "never", Some(pass), None);
    let armored = gpg.export_secret(&fpr, Some(pass));
    let verifier = Gpg::new();
    verifier.import(&gpg.export_public(&fpr));
    signing_secret(c, &w.ns, "git.asc", &armored, wrong);
    // The committer is the key's user, for SSH's allowed-signers lookup.
    c.kubectl_ok(&[
        "-n",
        &w.ns,
        "patch",
        "imageupdateautomation",
        "fleet",
        "--type",
        "merge",
        "-p",
        &format!(
            r#"{{"spec":{{"interval":"3s","git":{{"commit":{{"author":{{"email":"{SIGNER_EMAIL}"}},"signingKey":{{"secretRef":{{"name":"signing"}}}}}}}}}}}}"#
        ),
    ]);
    let s = Serve::start(bin(), c, &["-n", &w.ns, "--leader-elect=false"]);
    let (_, _, message) = wait_for(
        Duration::from_secs(90),
        "Ready=False SourceManagerFailed",
        || {
            let r = ready(&status(c, &w.ns, "imageupdateautomation", "fleet"))?;
            (r.0 == "False" && r.1 == "SourceManagerFailed").then_some(r)
        },
        || s.logs(),
    );
    assert!(
        message.starts_with("failed configuring source manager: ")
            && message.contains("signingKey"),
        "{message}"
    );
    let events = c.kubectl_ok(&["-n", &w.ns, "get", "events", "-o", "json"]);
    for text in [&message, &s.logs(), &events] {
        assert!(
            !text.contains(wrong) && !text.contains(pass),
            "a passphrase shows"
        );
    }
    let branch = std::process::Command::new("git")
        .args([
            "rev-parse",
            "--verify",
            "-q",
            "refs/heads/flux-image-updates",
        ])
        .current_dir(&w.bare)
        .output()
        .unwrap();
    assert!(
        !branch.status.success(),
        "pushed with a key it could not use"
    );

    // The right passphrase: seen at the automation's interval, with no
    // request and no change to the automation.
    signing_secret(c, &w.ns, "git.asc", &armored, pass);
    let first = wait_for(
        Duration::from_secs(90),
        "a signed push",
        || pushed(c, &w.ns),
        || s.logs(),
    );
    let out = verifier.verify_commit(&w.bare, "flux-image-updates");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Good signature"), "{said}");
    assert_eq!(
        git_text(&w.bare, &["rev-parse", "flux-image-updates"]),
        first
    );

    // An SSH key in the Secret's place signs the next commit.
    let ssh = SshSigningKey::new("ed25519", Some("ssh-passphrase-9d2b"));
    signing_secret(
        c,
        &w.ns,
        "git.ssh",
        &ssh.private_text(),
        "ssh-passphrase-9d2b",
    );
    push_tags(&w.reg, "team/web", &["1.11.0"]);
    request(c, &w.ns, "imagerepository", "web", "new-tag");
    let second = wait_for(
        Duration::from_secs(90),
        "an SSH-signed push",
        || pushed(c, &w.ns).filter(|p| *p != first),
        || s.logs(),
    );
    assert_eq!(
        git_text(&w.bare, &["rev-parse", "flux-image-updates"]),
        second
    );
    let out = ssh.verify_commit(&w.bare, "flux-image-updates");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Good \"git\" signature"), "{said}");
    let web = git_text(&w.bare, &["show", "flux-image-updates:apps/web.yaml"]);
    assert!(web.contains("web:1.11.0"), "{web}");
    drop(w.reg);
}

/// The `__git-network` children of a process (its network Git
/// operations), by pid.
fn git_children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command's closing parenthesis: state, ppid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains("__git-network") {
            out.push(pid);
        }
    }
    out
}

/// Whether a process runs (a zombie, ended but not reaped, does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// A Git server that accepts the connection and never answers, with a 5
/// minute timeout on the GitRepository and a 5 minute grace: SIGTERM kills
/// the fetch under way and serve exits at once (before, it waited for the
/// fetch).
#[test]
fn sigterm_kills_a_git_fetch_stuck_on_a_dead_server() {
    let c = cluster();
    let ns = c.namespace("stuck");
    let dead = imageauto_tests::Stall::start(None);
    c.apply(&format!(
        r#"apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: fleet, namespace: {ns}}}
spec: {{interval: 1h, timeout: 5m, url: 'http://127.0.0.1:{port}/fleet.git', ref: {{branch: main}}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {{name: fleet, namespace: {ns}}}
spec:
  interval: 1h
  sourceRef: {{kind: GitRepository, name: fleet}}
  git:
    commit: {{author: {{email: bot@example.com}}}}
  update: {{path: ./}}
"#,
        port = dead.port
    ));
    let mut s = Serve::start(
        bin(),
        c,
        &["-n", &ns, "--leader-elect=false", "--shutdown-grace", "5m"],
    );
    let pid = s.pid().unwrap();
    let fetch = wait_for(
        Duration::from_secs(60),
        "a Git fetch stuck on the dead server",
        || {
            let children = git_children(pid);
            (dead.accepted() > 0 && !children.is_empty()).then(|| children[0])
        },
        || s.logs(),
    );
    let status = s.terminate(Duration::from_secs(60));
    let logs = s.logs();
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not end well within its grace: {status:?}\n{logs}"
    );
    assert!(!running(fetch), "the Git child {fetch} outlived serve");
    assert!(
        logs.contains("Git operations under way cancelled"),
        "{logs}"
    );
}

/// While a serve shuts down (its scan hangs on a registry that never
/// answers; its grace is a minute) with a request still open on its
/// receiver, a new serve binds the same four ports; the old one still
/// answers the request it had.
#[test]
fn a_new_serve_binds_the_same_ports_while_the_old_one_shuts_down() {
    use imageauto_tests::serve::Launch;
    use std::io::{Read, Write};
    let c = cluster();
    let ns = c.namespace("restart");
    let dead = imageauto_tests::Stall::start(None);
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{image: 127.0.0.1:{}/team/web, interval: 1h, timeout: 2m, insecure: true}}\n",
        dead.port
    ));
    let free = imageauto_tests::free_port;
    let (metrics, health, webhook, receiver) = (free(), free(), free(), free());
    let certs = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let (webhook_addr, receiver_addr) = (
        format!("127.0.0.1:{webhook}"),
        format!("127.0.0.1:{receiver}"),
    );
    let extra = [
        "-n",
        &ns,
        "--leader-elect=false",
        "--shutdown-grace",
        "60s",
        "--webhook-addr",
        &webhook_addr,
        "--cert-dir",
        certs.path().to_str().unwrap(),
        "--receiver-addr",
        &receiver_addr,
    ];
    let launch = |dir: &str| {
        Serve::launch(
            bin(),
            c,
            &Launch {
                extra: &extra,
                storage: &storage.path().join(dir),
                ports: Some((metrics, health)),
                ..Launch::default()
            },
            None,
        )
    };
    let old = launch("old");
    old.wait_ready(Duration::from_secs(60));
    wait_for(
        Duration::from_secs(60),
        "the scan to hang on the dead registry",
        || (dead.accepted() > 0).then_some(()),
        || old.logs(),
    );
    // A request on the old serve's receiver, its body half sent.
    let mut open = std::net::TcpStream::connect(("127.0.0.1", receiver)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    open.write_all(
        b"POST /hook/0123 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20\r\n\r\n{\"event\":",
    )
    .unwrap();
    let old_pid = old.pid().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &old_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The new one binds all four ports while the old one is shutting down.
    let new = launch("new");
    wait_for(
        Duration::from_secs(30),
        "the new serve's listeners",
        || new.logs().contains("receiver serving").then_some(()),
        || format!("new:\n{}\nold:\n{}", new.logs(), old.logs()),
    );
    assert!(
        running(old_pid),
        "the old serve ended already:\n{}",
        old.logs()
    );
    // The old one answers the request it had (the path is unknown: 404).
    open.write_all(b"\"push\"}    ").unwrap();
    let mut answer = String::new();
    let _ = open.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
    new.wait_ready(Duration::from_secs(60));
    let logs = new.logs();
    assert!(!logs.contains("already in use"), "{logs}");
    assert_eq!(new.get(health, "/readyz").map(|r| r.0), Some(200), "{logs}");
}
