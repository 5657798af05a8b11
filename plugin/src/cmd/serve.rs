//! `kubectl imageauto serve`: the in-cluster process. The three controllers
//! (leader-elected through a Lease), /metrics, /healthz and /readyz, each
//! listener on its own address.
//!
//! On SIGTERM (or SIGINT) every listener stops accepting and closes its
//! port at once (a new process can bind it while the connections this one
//! accepted finish), the Git operations under way are killed
//! (`automation::git::terminate_children`: they run in child processes),
//! and the controllers finish or drop the rest within `--shutdown-grace`.

use super::Exit;
use anyhow::{Context as _, Result, bail};
use automation::engine::{Engine, EngineOptions, Fence};
use clap::ValueEnum;
use imageauto_server::controller::metrics::Metrics;
use imageauto_server::controller::watches::{CacheScope, Caches};
use imageauto_server::controller::{self, ControllerOptions};
use imageauto_server::health::Health;
use imageauto_server::leadership::{Work, lead, lease_name, shut_down};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account)
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Watch every namespace (set false, or give -n, to watch one)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    watch_all_namespaces: bool,
    /// The one namespace to watch
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Reconcile only objects with these labels (shard objects across several instances)
    #[arg(long, value_name = "SELECTOR")]
    watch_label_selector: Option<String>,
    /// Folder for the scanned tags and the Git caches (rebuildable)
    #[arg(long, value_name = "DIR", default_value = "/data")]
    storage_path: PathBuf,
    /// Prometheus metrics listener
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// /healthz, /readyz and /version listener
    #[arg(long, default_value = "0.0.0.0:9440")]
    health_addr: SocketAddr,
    /// Admission webhook listener (TLS)
    #[arg(long, value_name = "ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// The webhook's tls.crt and tls.key (reloaded on change); an empty folder gets a generated CA and certificate
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Registry and Receiver events listener (HTTP)
    #[arg(long, value_name = "ADDR")]
    receiver_addr: Option<SocketAddr>,
    /// The JWKS that verifies the tokens of gcr Receivers (Google's Pub/Sub push tokens)
    #[arg(long, value_name = "URL", default_value = imageauto_server::controller::receiver::verify::GOOGLE_JWKS_URL)]
    receiver_gcr_jwks_url: String,
    /// Policy changes reaching an automation within this window make one commit
    #[arg(long, default_value = "500ms", value_parser = window_arg)]
    batch_window: Duration,
    /// Elect a leader through a Lease: only the leader reconciles
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the Lease and of the published marker index (default: the pod's namespace, else imageauto-system)
    #[arg(long, value_name = "NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Reconciliations at once, per kind (a registry host gets at most half of them)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrent: u16,
    /// The longest a scan or a digest lookup may take, whatever an object's spec.timeout or interval say
    #[arg(long, default_value = "2m", value_parser = super::duration_arg)]
    max_scan_timeout: Duration,
    /// Also post every event to notification-controller's event server at this URL (Flux's flag)
    #[arg(long, value_name = "URL")]
    events_addr: Option<String>,
    /// The first retry delay after a failure; it doubles with each failure in a row (Flux's flag)
    #[arg(long, default_value = "750ms", value_parser = retry_arg)]
    min_retry_delay: Duration,
    /// The longest retry delay after failures (Flux's flag)
    #[arg(long, default_value = "15m", value_parser = retry_arg)]
    max_retry_delay: Duration,
    /// Feature gates, as Flux's controllers take them (GATE=true|false,...);
    /// ObjectLevelWorkloadIdentity lets an ImageRepository with a cloud
    /// provider log in with its serviceAccountName's identity
    #[arg(long, value_name = "GATES", value_parser = gates_arg, default_value = "")]
    feature_gates: Gates,
    /// Refuse references to ImageRepositories and GitRepositories of other namespaces
    #[arg(long)]
    no_cross_namespace_refs: bool,
    /// Log format
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
    /// Retry after this long when a dependency is not ready
    #[arg(long, default_value = "30s", value_parser = super::duration_arg)]
    requeue_dependency: Duration,
    /// Time allowed to finish the work under way after SIGTERM
    #[arg(long, default_value = "25s", value_parser = super::duration_arg)]
    shutdown_grace: Duration,
}

/// The feature gates this controller knows (all off by default, as in Flux).
#[derive(Clone, Debug, Default)]
pub struct Gates {
    object_level_workload_identity: bool,
}

const KNOWN_GATES: &[&str] = &["ObjectLevelWorkloadIdentity"];

/// `--feature-gates`: `NAME=BOOL` pairs, comma-separated.
fn gates_arg(s: &str) -> Result<Gates, String> {
    let mut gates = Gates::default();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected NAME=true or NAME=false"))?;
        let on = match value.trim() {
            "true" | "True" | "TRUE" | "1" | "t" | "T" => true,
            "false" | "False" | "FALSE" | "0" | "f" | "F" => false,
            other => {
                return Err(format!(
                    "{name}: {other:?} is not a boolean (true or false)"
                ));
            }
        };
        match name.trim() {
            "ObjectLevelWorkloadIdentity" => gates.object_level_workload_identity = on,
            other => {
                return Err(format!(
                    "unknown feature gate {other:?}; known gates: {}",
                    KNOWN_GATES.join(", ")
                ));
            }
        }
    }
    Ok(gates)
}

/// A retry delay: a Go duration from 10ms to 24h.
fn retry_arg(s: &str) -> Result<Duration, String> {
    let d = automation::api::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 750ms or 15m"))?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(24 * 3600) {
        return Err(format!("{s:?}: give a delay from 10ms to 24h"));
    }
    Ok(d)
}

/// A batch window: a Go duration from 0 to 1 minute.
fn window_arg(s: &str) -> Result<Duration, String> {
    let d = automation::api::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 500ms or 2s"))?;
    if d > Duration::from_secs(60) {
        return Err(format!("{s:?} is too long: at most 1m"));
    }
    Ok(d)
}

/// The namespace this pod runs in, when it runs in a cluster.
fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

async fn client(args: &Args) -> Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no cluster configuration: give --kubeconfig, set $KUBECONFIG, or run in a pod",
        )?,
    };
    if config.accept_invalid_certs {
        tracing::warn!(
            server = %config.cluster_url,
            "the kubeconfig sets insecure-skip-tls-verify: the apiserver's certificate is not verified (give its CA as certificate-authority-data to verify it)"
        );
    }
    kube::Client::try_from(config).context("cannot make a Kubernetes client")
}

pub fn run(args: Args) -> Result<Exit> {
    crate::logging::init_server(args.log_format == LogFormat::Json);
    automation::registry::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let served = rt.block_on(serve(args));
    // Dropping the runtime would wait for every blocking task to return;
    // one stuck in I/O past the grace is left to the process's exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(Exit::Ok)
}

/// The controller's own namespace: where its Lease and the marker index
/// live (`--leader-election-namespace`, else the pod's namespace, else
/// `imageauto-system`).
fn controller_namespace(args: &Args) -> String {
    args.leader_election_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .or_else(pod_namespace)
        .unwrap_or_else(|| "imageauto-system".into())
}

async fn serve(args: Args) -> Result<()> {
    let namespace = match (&args.namespace, args.watch_all_namespaces) {
        (Some(ns), _) => Some(ns.clone()),
        (None, true) => None,
        (None, false) => pod_namespace(),
    };
    if !args.watch_all_namespaces && namespace.is_none() {
        bail!("--watch-all-namespaces=false needs -n NAMESPACE (or a pod's namespace)");
    }
    if let Some(s) = &args.watch_label_selector {
        controller::watches::LabelSelector::parse(s)
            .map_err(|e| anyhow::anyhow!("--watch-label-selector: {e}"))?;
    }
    std::fs::create_dir_all(&args.storage_path).with_context(|| {
        format!(
            "--storage-path {}: cannot create the folder",
            args.storage_path.display()
        )
    })?;
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let instance = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "imageauto".into());
    let own_namespace = controller_namespace(&args);
    let markers_namespace = args.webhook_addr.is_some().then(|| own_namespace.clone());
    let options = ControllerOptions {
        label_selector: args.watch_label_selector.clone(),
        storage: args.storage_path.clone(),
        concurrency: args.concurrent,
        cross_namespace_refs: !args.no_cross_namespace_refs,
        requeue_dependency: args.requeue_dependency,
        instance: instance.clone(),
        markers_namespace: markers_namespace.clone(),
        batch_window: args.batch_window,
        max_scan_timeout: args.max_scan_timeout,
        events_addr: args.events_addr.clone(),
        retry: (
            args.min_retry_delay,
            args.max_retry_delay.max(args.min_retry_delay),
        ),
        object_level_workload_identity: args.feature_gates.object_level_workload_identity,
    };
    if let Some(url) = &args.events_addr {
        let u = controller::events::check_url(url).map_err(anyhow::Error::msg)?;
        tracing::info!(events = %u, "events also go to notification-controller");
    }
    // A registry host gets at most half the reconciliations at once: one
    // that never answers cannot take every slot from the others.
    let engine = Arc::new(Engine::new(EngineOptions {
        per_host: usize::from(args.concurrent / 2).max(1),
        ..EngineOptions::default()
    }));
    // Turns true on SIGTERM: the listeners stop accepting, the controllers
    // finish.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let servers = imageauto_server::health::start(
        args.metrics_addr,
        args.health_addr,
        metrics.clone(),
        health.clone(),
        stop_rx.clone(),
    )
    .await?;
    tracing::info!(
        metrics = %servers.metrics, health = %servers.health,
        "imageauto {} serving", env!("CARGO_PKG_VERSION")
    );
    // One watch per kind for the whole process: the controllers (on the
    // leader), the admission view and the receivers all read them.
    let caches = Arc::new(
        Caches::start(
            &client,
            &CacheScope {
                namespace: namespace.clone(),
                markers_namespace,
            },
        )
        .await,
    );
    let mut view_complete = None;
    if let Some(addr) = args.webhook_addr {
        let Some(dir) = args.cert_dir.clone() else {
            bail!(
                "--webhook-addr needs --cert-dir DIR (tls.crt and tls.key, or an empty folder for a generated certificate)"
            );
        };
        let (view, complete) = imageauto_server::admission::keep_view(
            client.clone(),
            caches.clone(),
            imageauto_server::admission::ViewOptions {
                cross_namespace_refs: options.cross_namespace_refs,
                controller_namespace: own_namespace.clone(),
                namespace: namespace.clone(),
            },
        );
        view_complete = Some(complete);
        let ns = std::env::var("POD_NAMESPACE")
            .ok()
            .or_else(pod_namespace)
            .unwrap_or_else(|| "imageauto-system".into());
        let mut config = webhook::ServerConfig::new(addr, dir);
        config.dns_names = vec![
            "imageauto".into(),
            format!("imageauto.{ns}"),
            format!("imageauto.{ns}.svc"),
            format!("imageauto.{ns}.svc.cluster.local"),
        ];
        let server = webhook::Server::bind(
            config,
            view,
            Arc::new(imageauto_server::admission::MetricsObserver(
                metrics.clone(),
            )),
        )
        .await?;
        tracing::info!(webhook = %server.local_addr(), "admission webhook serving");
        let mut rx = stop_rx.clone();
        tokio::spawn(server.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
    }
    if let Some(addr) = args.receiver_addr {
        let local = imageauto_server::controller::receiver::http::start(
            addr,
            client.clone(),
            caches.clone(),
            metrics.clone(),
            imageauto_server::controller::receiver::http::ReceiverOptions {
                cross_namespace_refs: options.cross_namespace_refs,
                gcr_jwks_url: args.receiver_gcr_jwks_url.clone(),
            },
            stop_rx.clone(),
        )
        .await?;
        tracing::info!(receiver = %local, "receiver serving");
    }
    // Ready once the caches are synced (the receivers read their paths
    // from them) and the admission view is complete, leader or not.
    {
        let (caches, health) = (caches.clone(), health.clone());
        tokio::spawn(async move {
            caches.wait_synced().await;
            for mut done in view_complete.into_iter() {
                let _ = done.wait_for(|c| *c).await;
            }
            health.ready.store(true, Ordering::Relaxed);
            tracing::info!("caches synced: ready");
        });
    }
    let terminate = terminate_signal();
    let result = if args.leader_elect {
        let lease_name = lease_name(args.watch_label_selector.as_deref());
        tracing::info!(lease = %format!("{own_namespace}/{lease_name}"), "leader election");
        lead(
            Work {
                client,
                engine,
                options,
                metrics,
                caches,
            },
            &own_namespace,
            &lease_name,
            &instance,
            stop_rx,
            stop_tx,
            terminate,
            args.shutdown_grace,
        )
        .await
        .map_err(anyhow::Error::from)
    } else {
        let work = tokio::spawn(controller::run(
            client,
            engine,
            options,
            metrics,
            caches,
            Fence::open(),
            stop_rx,
        ));
        terminate.await;
        shut_down(&stop_tx);
        match tokio::time::timeout(args.shutdown_grace, work).await {
            Ok(Ok(r)) => r.map_err(anyhow::Error::from),
            Ok(Err(e)) => Err(anyhow::anyhow!("the controllers stopped: {e}")),
            Err(_) => {
                tracing::warn!("the work under way did not finish in time: abandoned");
                Ok(())
            }
        }
    };
    tracing::info!("stopped");
    result
}

/// SIGTERM or SIGINT.
async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
