//! The commands, their flags as clap reads them, and what they share: the
//! outcome of a command, usage errors, durations.

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

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-imageauto",
    bin_name = "kubectl imageauto",
    version,
    about = "Keep container image tags in GitOps repositories current (Flux image automation API)",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show, for every tag, why an ImagePolicy picks it or not
    Explain(explain::Args),
    /// Write known images into the marked fields of a folder, without a registry
    Set(set::Args),
    /// Run the automation: scan, select, rewrite markers, commit, push
    Reconcile(reconcile::Args),
    /// List the tags of an image repository, newest-looking first
    Tags(tags::Args),
    /// Check markers and image manifests (for pre-commit and CI)
    Lint(lint::Args),
    /// The in-cluster process: the controllers, /metrics, /healthz, /readyz
    Serve(serve::Args),
    /// List ImageRepositories, ImagePolicies or ImageUpdateAutomations, as Flux shows them
    Get(cluster::GetArgs),
    /// Stop reconciling a repository or an update (spec.suspend)
    Suspend(cluster::SuspendArgs),
    /// Reconcile a suspended repository or update again, and wait for it
    Resume(cluster::SuspendArgs),
    /// The events of the image kinds, newest last
    Events(cluster::EventsArgs),
    /// An automation, its GitRepository, its policies and their repositories, with their state
    Tree(cluster::TreeArgs),
    /// Install the CRDs, RBAC, the controller, the webhook and its certificate
    Install(install::InstallArgs),
    /// Remove what install applied (the CRDs and your objects stay, unless --delete-crds)
    Uninstall(install::UninstallArgs),
    /// Print the version of the plugin, and of the controller in the cluster
    Version(install::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell)
    Completion(completion::Args),
    /// Completion candidates for kubectl's plugin completion (kubectl_complete-imageauto)
    #[command(name = "__complete", hide = true)]
    Complete(completion::CompleteArgs),
    /// Runs one network Git operation for this program's own processes
    #[command(name = git_network::NAME, hide = true)]
    GitNetwork,
}

/// Exits with a usage error (status 2) of the subcommand `sub`, printed as
/// clap prints its own (with that subcommand's usage line).
pub fn usage_error(sub: &str, msg: String) -> ! {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build();
    match cmd.find_subcommand_mut(sub) {
        Some(s) => s.error(clap::error::ErrorKind::InvalidValue, msg).exit(),
        None => cmd.error(clap::error::ErrorKind::InvalidValue, msg).exit(),
    }
}

/// A command-line duration (Go syntax: `30s`, `2m`, `1h30m`), between 1
/// second and 24 hours; anything else is a usage error (exit 2).
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    let d = automation::api::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 30s, 2m or 1h30m"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?} is too short: at least 1s"));
    }
    if d > std::time::Duration::from_secs(24 * 3600) {
        return Err(format!("{s:?} is too long: at most 24h"));
    }
    Ok(d)
}

/// What a command reports back: success, or failure/findings (exit 1).
pub enum Exit {
    Ok,
    Failed,
}

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
