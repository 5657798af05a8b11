//! A real Kubernetes API server on 127.0.0.1: Debian's etcd and a
//! kube-apiserver 1.20 built from Debian's source package
//! (`tests/cluster/build-kube-apiserver.sh`, run by `make kube-apiserver`).
//! No kubelet and no controller-manager: objects are stored, validated and
//! admitted, never run.
//!
//! Authentication is a static token file with two users: `admin` (group
//! `system:masters`) and `viewer` (no roles until a test grants some).
//! Authorization is RBAC.
//!
//! Each server runs under a small `sh` watchdog that holds the read end of a
//! pipe whose write end only this process holds: when the [`Cluster`] is
//! dropped, or the test process exits in any way (a static that is never
//! dropped, a panic, SIGKILL), the pipe closes and the watchdog stops the
//! server (SIGTERM, then SIGKILL after 10 s).

use crate::repo_dir;
use crate::require_tool;
use automation::api::{
    CustomResourceExt, GitRepository, Receiver, ResourceExt, strip_null_enum_values,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The kube-apiserver version `make kube-apiserver` builds.
pub const KUBE_VERSION: &str = "1.20.2";

/// How long a server may take to become ready (the machine may be busy
/// compiling meanwhile).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The names of imageauto's CRDs (`manifests/crds`, see
/// [`Cluster::install_crds`]).
pub const IMAGE_CRDS: [&str; 3] = [
    "imagerepositories.image.toolkit.fluxcd.io",
    "imagepolicies.image.toolkit.fluxcd.io",
    "imageupdateautomations.image.toolkit.fluxcd.io",
];

/// The names of the Flux-style CRDs ([`flux_style_crds`], installed by
/// [`Cluster::install_flux_style_crds`]).
pub const FLUX_STYLE_CRDS: [&str; 5] = [
    "imagerepositories.image.toolkit.fluxcd.io",
    "imagepolicies.image.toolkit.fluxcd.io",
    "imageupdateautomations.image.toolkit.fluxcd.io",
    "gitrepositories.source.toolkit.fluxcd.io",
    "receivers.notification.toolkit.fluxcd.io",
];

/// The first of the two CEL rules Flux's ImagePolicy CRD carries on its spec
/// (`spec.interval` only with `digestReflectionPolicy: Always`).
pub const IMAGE_POLICY_CEL_RULE: &str = "!has(self.interval) || (has(self.digestReflectionPolicy) && self.digestReflectionPolicy == 'Always')";

/// The folder of imageauto's CRDs and their kustomization.
pub fn crds_dir() -> PathBuf {
    repo_dir().join("manifests").join("crds")
}

/// The folder of Flux's own CRDs of the image kinds, copied from Flux's
/// repositories (its README says from where).
pub fn flux_crds_dir() -> PathBuf {
    repo_dir().join("tests/golden/flux-crds")
}

/// Flux's own CRDs of the three image kinds (`tests/golden/flux-crds`), in
/// the order of [`IMAGE_CRDS`]: v1 served alone, with CEL rules
/// (`x-kubernetes-validations`) that a 1.20 apiserver drops.
pub fn flux_image_crds() -> Vec<CustomResourceDefinition> {
    [
        "imagerepositories",
        "imagepolicies",
        "imageupdateautomations",
    ]
    .iter()
    .map(|plural| {
        let path = flux_crds_dir().join(format!("image.toolkit.fluxcd.io_{plural}.yaml"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a CRD: {e}", path.display()))
    })
    .collect()
}

/// The CRDs a cluster with Flux already has, for the contract "a cluster
/// that holds Flux's own CRDs works unchanged": Flux's CRDs of the three
/// image kinds ([`flux_image_crds`]), plus the kinds other Flux controllers
/// own that imageauto reads, GitRepository and Receiver (generated from
/// automation's types), in the order of [`FLUX_STYLE_CRDS`].
pub fn flux_style_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = flux_image_crds();
    crds.extend(flux_other_crds());
    crds
}

/// GitRepository and Receiver: the kinds of Flux's source and notification
/// controllers that imageauto reads, generated from automation's types.
pub fn flux_other_crds() -> Vec<CustomResourceDefinition> {
    [GitRepository::crd(), Receiver::crd()]
        .into_iter()
        .map(|mut crd| {
            strip_null_enum_values(&mut crd);
            crd
        })
        .collect()
}

/// CRDs as one manifest (a `v1` List, in JSON) for `kubectl apply -f -`.
pub fn crds_manifest(crds: &[CustomResourceDefinition]) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": crds}).to_string()
}

/// The CRD set a cluster holds (a cluster holds one of them: they share names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrdSet {
    /// `manifests/crds`.
    Ours,
    /// [`flux_style_crds`].
    FluxStyle,
}

/// The cached kube-apiserver: `$IMAGEAUTO_KUBE_APISERVER`, else
/// `${IMAGEAUTO_CACHE:-$HOME/.cache/imageauto}/kube-apiserver-1.20.2/kube-apiserver`.
pub fn kube_apiserver_path() -> PathBuf {
    if let Some(p) = std::env::var_os("IMAGEAUTO_KUBE_APISERVER") {
        return PathBuf::from(p);
    }
    let cache = match std::env::var_os("IMAGEAUTO_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache")
            .join("imageauto"),
    };
    cache
        .join(format!("kube-apiserver-{KUBE_VERSION}"))
        .join("kube-apiserver")
}

/// The kube-apiserver binary, or a panic saying how to build it.
pub fn require_kube_apiserver() -> PathBuf {
    let p = kube_apiserver_path();
    assert!(
        p.is_file(),
        "kube-apiserver is missing at {}: run `make kube-apiserver` (it builds it from Debian's \
         kubernetes source package, about 4 minutes), or set IMAGEAUTO_KUBE_APISERVER",
        p.display()
    );
    p
}

/// The watchdog: `sh -c WATCHDOG sh CLEANUP LOG PROGRAM ARGS...`. It runs the
/// program with its output in LOG and stops it when its own stdin (a pipe
/// from the test process) reaches end of file, or on SIGTERM/SIGINT/SIGHUP.
/// It exits when the program does, removing the folder CLEANUP if that holds
/// the file [`REMOVE_MARK`] by then (so a failed start leaves it alone).
const WATCHDOG: &str = r#"cleanup=$1; log=$2; shift 2
exec 3<&0
"$@" </dev/null >>"$log" 2>&1 &
server=$!
{ read -r _ <&3; kill -TERM "$server" 2>/dev/null; sleep 10; kill -KILL "$server" 2>/dev/null; } &
guard=$!
exec 3<&-
trap 'kill -TERM "$server" 2>/dev/null' TERM INT HUP
while kill -0 "$server" 2>/dev/null; do wait "$server"; done
kill "$guard" 2>/dev/null
if [ -n "$cleanup" ] && [ -e "$cleanup/.remove-when-stopped" ]; then rm -rf "$cleanup"; fi
"#;

/// See [`WATCHDOG`].
const REMOVE_MARK: &str = ".remove-when-stopped";

/// A server process under the watchdog.
struct Guarded {
    child: Child,
    /// The write end of the watchdog's stdin: closing it stops the server.
    lifeline: Option<ChildStdin>,
    log: PathBuf,
}

impl Guarded {
    fn spawn(program: &Path, args: &[String], log: &Path, cleanup: Option<&Path>) -> Guarded {
        debug_assert!(WATCHDOG.contains(REMOVE_MARK));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(cleanup.map(Path::as_os_str).unwrap_or_default())
            .arg(log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts");
        let lifeline = child.stdin.take();
        Guarded {
            child,
            lifeline,
            log: log.to_path_buf(),
        }
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Stops the server (closing the lifeline) and waits for the watchdog.
    fn stop(&mut self) {
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Random hex (a token, a suffix).
fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_ports(n: usize) -> Vec<u16> {
    // Held together, so the ports differ.
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// A running etcd and kube-apiserver; both stop when it is dropped (or when
/// the test process exits).
pub struct Cluster {
    /// `https://127.0.0.1:PORT`
    pub server: String,
    pub port: u16,
    /// A kubeconfig with the CA, users `admin` and `viewer`, and contexts of
    /// the same names (`admin` current).
    pub kubeconfig: PathBuf,
    /// The admin's bearer token (group `system:masters`).
    pub token: String,
    /// The bearer token of user `viewer` (group `imageauto:viewers`), who
    /// has no roles until a test binds some.
    pub viewer_token: String,
    /// The PEM bundle to trust for `server`: the apiserver's self-signed
    /// serving certificate and its CA, from `--cert-dir` (use
    /// `reqwest::Certificate::from_pem_bundle`).
    pub ca_pem: String,
    /// `http://127.0.0.1:PORT` of etcd.
    pub etcd_url: String,
    /// Where the cluster keeps its files (logs, certificates, etcd data).
    pub dir: PathBuf,
    kubectl: PathBuf,
    crds: OnceLock<CrdSet>,
    // Stopped in this order: the apiserver, then etcd, then the folder goes.
    apiserver: Guarded,
    etcd: Guarded,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts etcd and kube-apiserver on free 127.0.0.1 ports and waits until
    /// the apiserver's /readyz says ok.
    pub fn start() -> Cluster {
        let apiserver_bin = require_kube_apiserver();
        let etcd_bin = require_tool("etcd", "etcd-server");
        let kubectl = require_tool("kubectl", "kubernetes-client");
        let tmp = tempfile::Builder::new()
            .prefix("imageauto-kube-")
            .tempdir()
            .expect("a temporary folder");
        let dir = tmp.path().to_path_buf();
        // etcd's watchdog removes the folder once etcd has stopped: the
        // folder of a cluster in a static (never dropped) or of a killed test
        // process goes too.
        let (etcd, etcd_url) = start_etcd(&etcd_bin, &dir);

        let token = random_hex(16);
        let viewer_token = random_hex(16);
        let token_file = dir.join("tokens.csv");
        std::fs::write(
            &token_file,
            format!(
                "{token},admin,admin,\"system:masters\"\n{viewer_token},viewer,viewer,\"imageauto:viewers\"\n"
            ),
        )
        .expect("token file written");

        // The service account signing key pair (1.20 requires one; it reads
        // only PUBLIC KEY blocks from --service-account-key-file).
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        let key = rcgen::KeyPair::generate().expect("a key pair");
        std::fs::write(&sa_key, key.serialize_pem()).expect("service account key written");
        std::fs::write(&sa_pub, key.public_key_pem()).expect("service account key written");

        let cert_dir = dir.join("certs");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_ports(1)[0];
            let args: Vec<String> = vec![
                "--bind-address=127.0.0.1".to_string(),
                "--advertise-address=127.0.0.1".to_string(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", cert_dir.display()),
                format!("--etcd-servers={etcd_url}"),
                format!("--token-auth-file={}", token_file.display()),
                "--authorization-mode=RBAC".to_string(),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
                "--service-cluster-ip-range=10.0.0.0/24".to_string(),
                // No controller-manager: no token controller to create the
                // `default` service accounts Pods would need.
                "--disable-admission-plugins=ServiceAccount".to_string(),
                // No kubelets or nodes to reconcile the `kubernetes`
                // Service's endpoints with (127.0.0.1 would not validate).
                "--endpoint-reconciler-type=none".to_string(),
                "--profiling=false".to_string(),
            ];
            let log = dir.join(format!("kube-apiserver-{port}.log"));
            let mut apiserver = Guarded::spawn(&apiserver_bin, &args, &log, None);
            match wait_apiserver_ready(&mut apiserver, port, &cert_dir, &token) {
                Ok(ca_pem) => {
                    let server = format!("https://127.0.0.1:{port}");
                    let kubeconfig = dir.join("kubeconfig");
                    write_kubeconfig(&kubeconfig, &server, &ca_pem, &token, &viewer_token);
                    return Cluster {
                        server,
                        port,
                        kubeconfig,
                        token,
                        viewer_token,
                        ca_pem,
                        etcd_url,
                        dir,
                        kubectl,
                        crds: OnceLock::new(),
                        apiserver,
                        etcd,
                        _tmp: tmp,
                    };
                }
                Err(why) => {
                    apiserver.stop();
                    last_log = format!("{why}\n{}", apiserver.log_tail());
                    // Another process took the port meanwhile: try another.
                    if !last_log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("kube-apiserver did not become ready: {last_log}");
    }

    /// One cluster for the whole test process (started on first use, stopped
    /// by the watchdogs when the process exits). Tests sharing it should work
    /// in their own [`Cluster::namespace`].
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(Self::start)
    }

    /// Freezes the apiserver (SIGSTOP) for `d`, then lets it go on
    /// (SIGCONT): clients see a server that stops answering, as in an
    /// outage, and the same server afterwards.
    pub fn pause_apiserver(&self, d: std::time::Duration) {
        let pid = self.apiserver.child.id().to_string();
        let signal = |sig: &str| {
            let ok = Command::new("pkill")
                .args([sig, "-P", &pid, "kube-apiserver"])
                .status()
                .expect("pkill runs")
                .success();
            assert!(ok, "no kube-apiserver under the watchdog {pid}");
        };
        signal("-STOP");
        std::thread::sleep(d);
        signal("-CONT");
    }

    /// Runs `kubectl` (as admin) against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in("admin", args, None)
    }

    /// Runs `kubectl` as `user` (`admin` or `viewer`: the kubeconfig's
    /// contexts).
    pub fn kubectl_as(&self, user: &str, args: &[&str]) -> Output {
        self.kubectl_in(user, args, None)
    }

    /// Runs `kubectl` as `user` with `stdin` as its input (for `-f -`).
    pub fn kubectl_stdin(&self, user: &str, args: &[&str], stdin: &str) -> Output {
        self.kubectl_in(user, args, Some(stdin))
    }

    fn kubectl_in(&self, context: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context")
            .arg(context)
            // Discovery is cached per host:port for 10 minutes: a cache per
            // cluster, so a port reused later never sees stale API groups.
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let Some(input) = stdin else {
            cmd.stdin(Stdio::null());
            return cmd.output().expect("kubectl runs");
        };
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_string();
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("kubectl finishes");
        let _ = writer.join();
        out
    }

    /// Runs `kubectl` as admin, panics unless it succeeds, returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let text = self.kubectl_ok(&all);
        serde_json::from_str(&text).expect("kubectl prints JSON")
    }

    /// Applies manifests as admin (`kubectl apply --validate=false -f -`) and
    /// panics unless that succeeds. Client-side validation is off because a
    /// 1.20 server's schema knows no `x-kubernetes-validations` (CEL), which
    /// Flux's CRDs (and the Flux-style ones of the tests) carry; the server
    /// drops the field and still checks the rest of the schema.
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_stdin("admin", &["apply", "--validate=false", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}{}\n--- manifest ---\n{yaml}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Applies a manifest file or a folder of them (as [`Cluster::apply`]).
    pub fn apply_path(&self, path: &Path) {
        let p = path.to_string_lossy();
        self.kubectl_ok(&["apply", "--validate=false", "-f", &p]);
    }

    /// Applies imageauto's CRDs, the files of `manifests/crds` through their
    /// kustomization (`kubectl apply -k`), once per cluster, and waits until
    /// each is Established. A cluster holds these or the Flux-style CRDs,
    /// not both: for the other set, start another [`Cluster`].
    pub fn install_crds(&self) {
        self.install(CrdSet::Ours, || {
            let names: Vec<String> = automation::api::crds()
                .iter()
                .map(|c| c.name_any())
                .collect();
            assert_eq!(
                names, IMAGE_CRDS,
                "IMAGE_CRDS is out of step with automation::api::crds()"
            );
            let dir = crds_dir();
            self.kubectl_ok(&["apply", "--validate=false", "-k", &dir.to_string_lossy()]);
            self.wait_established(&IMAGE_CRDS);
            // The kinds of Flux's other controllers that imageauto reads, as
            // a cluster running Flux has them.
            let others = flux_other_crds();
            self.apply(&crds_manifest(&others));
            let names: Vec<String> = others.iter().map(|c| c.name_any()).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            self.wait_established(&names);
        });
    }

    /// Applies the Flux-style CRDs ([`flux_style_crds`]: Flux's own for the
    /// image kinds) once per cluster, and waits until each is Established.
    /// The 1.20 apiserver drops their CEL rules (see [`Cluster::apply`]). A
    /// cluster holds these or imageauto's CRDs.
    pub fn install_flux_style_crds(&self) {
        self.install(CrdSet::FluxStyle, || {
            let crds = flux_style_crds();
            let names: Vec<String> = crds.iter().map(|c| c.name_any()).collect();
            assert_eq!(
                names, FLUX_STYLE_CRDS,
                "FLUX_STYLE_CRDS is out of step with flux_style_crds()"
            );
            self.apply(&crds_manifest(&crds));
            self.wait_established(&FLUX_STYLE_CRDS);
        });
    }

    fn install(&self, set: CrdSet, install: impl FnOnce()) {
        let installed = *self.crds.get_or_init(|| {
            install();
            set
        });
        assert_eq!(
            installed, set,
            "this cluster already holds the other CRD set; start another Cluster"
        );
    }

    /// Waits (up to 60 s) until the named CRDs are Established.
    pub fn wait_established(&self, crds: &[&str]) {
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        let names: Vec<String> = crds.iter().map(|c| format!("crd/{c}")).collect();
        args.extend(names.iter().map(String::as_str));
        self.kubectl_ok(&args);
    }

    /// Creates a namespace with a fresh name (`PREFIX-N-RANDOM`) and returns
    /// the name. Namespaces are not deleted: without a controller-manager a
    /// deleted namespace stays Terminating.
    pub fn namespace(&self, prefix: &str) -> String {
        let name = self.namespace_name(prefix);
        self.kubectl_ok(&["create", "namespace", &name]);
        name
    }

    fn namespace_name(&self, prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut base: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        base.truncate(40);
        let base = base.trim_matches('-');
        let base = if base.is_empty() { "test" } else { base };
        format!("{base}-{n}-{}", random_hex(3))
    }

    /// [`Cluster::namespace`] created with `labels` in the same request: the
    /// apiserver never sees it without them (a label added afterwards
    /// reaches its webhook namespace selector a moment later).
    pub fn labelled_namespace(&self, prefix: &str, labels: &[(&str, &str)]) -> String {
        let name = self.namespace_name(prefix);
        let mut yaml =
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n");
        for (k, v) in labels {
            yaml.push_str(&format!("    {k}: \"{v}\"\n"));
        }
        let out = self.kubectl_stdin("admin", &["create", "-f", "-"], &yaml);
        assert!(
            out.status.success(),
            "kubectl create namespace {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    /// A kubeconfig like [`Cluster::kubeconfig`] whose server is `server`
    /// (`https://127.0.0.1:PORT` of a proxy in front of the apiserver: the
    /// apiserver's certificate covers 127.0.0.1).
    pub fn kubeconfig_via(&self, server: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig read");
        let path = self.dir.join(format!("kubeconfig-via-{}", random_hex(4)));
        std::fs::write(&path, text.replace(&self.server, server)).expect("kubeconfig written");
        path
    }

    /// The last lines of the apiserver's log (for failure messages).
    pub fn apiserver_log(&self) -> String {
        self.apiserver.log_tail()
    }

    /// The last lines of etcd's log.
    pub fn etcd_log(&self) -> String {
        self.etcd.log_tail()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.apiserver.stop();
        self.etcd.stop();
    }
}

/// Starts etcd on two free ports (client, peer), retrying on others when it
/// does not come up; returns it and its client URL.
fn start_etcd(bin: &Path, dir: &Path) -> (Guarded, String) {
    let mut last = String::new();
    for attempt in 0..5 {
        let ports = free_ports(2);
        let (client, peer) = (
            format!("http://127.0.0.1:{}", ports[0]),
            format!("http://127.0.0.1:{}", ports[1]),
        );
        let data = dir.join(format!("etcd-{attempt}"));
        let args: Vec<String> = vec![
            "--name=test".into(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=test={peer}"),
            "--initial-cluster-state=new".into(),
            "--logger=zap".into(),
            "--log-level=warn".into(),
        ];
        let log = dir.join(format!("etcd-{attempt}.log"));
        let mut etcd = Guarded::spawn(bin, &args, &log, Some(dir));
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline && !etcd.exited() {
            if std::net::TcpStream::connect(("127.0.0.1", ports[0])).is_ok() {
                std::fs::write(dir.join(REMOVE_MARK), "").expect("mark written");
                return (etcd, client);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd.stop();
        last = etcd.log_tail();
    }
    panic!("etcd did not start after 5 attempts: {last}");
}

/// Polls /readyz with the admin token, trusting the certificate the
/// apiserver wrote to its cert dir, until it answers `ok`. Returns that PEM.
fn wait_apiserver_ready(
    apiserver: &mut Guarded,
    port: u16,
    cert_dir: &Path,
    token: &str,
) -> Result<String, String> {
    let cert_file = cert_dir.join("apiserver.crt");
    let url = format!("https://127.0.0.1:{port}/readyz");
    // A runtime of its own, on a thread of its own: callers may be inside a
    // tokio runtime already.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut last = String::from("no answer");
            while Instant::now() < deadline {
                if apiserver.exited() {
                    return Err(format!("kube-apiserver exited ({last})"));
                }
                std::thread::sleep(Duration::from_millis(200));
                let Ok(pem) = std::fs::read_to_string(&cert_file) else {
                    continue;
                };
                let Ok(certs) = reqwest::Certificate::from_pem_bundle(pem.as_bytes()) else {
                    continue;
                };
                let mut builder = reqwest::Client::builder()
                    .tls_built_in_root_certs(false)
                    .timeout(Duration::from_secs(5));
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("reqwest client: {e}"))?;
                let answer = rt.block_on(async {
                    let resp = client.get(&url).bearer_auth(token).send().await?;
                    let status = resp.status();
                    Ok::<_, reqwest::Error>((status, resp.text().await?))
                });
                match answer {
                    Ok((status, body)) if status.is_success() && body.trim() == "ok" => {
                        return Ok(pem);
                    }
                    Ok((status, body)) => last = format!("{status}: {body}"),
                    Err(e) => last = format!("{e:?}"),
                }
            }
            Err(format!(
                "kube-apiserver not ready after {READY_TIMEOUT:?}: {last}"
            ))
        })
        .join()
        .unwrap_or_else(|_| Err("the readiness probe panicked".to_string()))
    })
}

fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, token: &str, viewer_token: &str) {
    let ca = STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {token}
- name: viewer
  user:
    token: {viewer_token}
contexts:
- name: admin
  context:
    cluster: test
    user: admin
- name: viewer
  context:
    cluster: test
    user: viewer
current-context: admin
"
    );
    std::fs::write(path, text).expect("kubeconfig written");
}
