pub mod cluster;
pub mod completion;
pub mod explain;
pub mod git_network;
pub mod install;
pub mod lint;
pub mod reconcile;
pub mod serve;
pub mod set;
pub mod tags;

/// The runtime of a command that talks to the cluster: two workers, the
/// process's TLS provider installed.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    automation::registry::tls::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))
}
