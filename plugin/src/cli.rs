//! The command line: kubectl's conventions (`-o`, exit 0 ok, 1 failed or
//! findings, 2 usage).

use crate::cmd;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    Explain(cmd::explain::Args),
    /// Write known images into the marked fields of a folder, without a registry
    Set(cmd::set::Args),
    /// Run the automation: scan, select, rewrite markers, commit, push
    Reconcile(cmd::reconcile::Args),
    /// List the tags of an image repository, newest-looking first
    Tags(cmd::tags::Args),
    /// Check markers and image manifests (for pre-commit and CI)
    Lint(cmd::lint::Args),
    /// The in-cluster process: the controllers, /metrics, /healthz, /readyz
    Serve(cmd::serve::Args),
    /// List ImageRepositories, ImagePolicies or ImageUpdateAutomations, as Flux shows them
    Get(cmd::cluster::GetArgs),
    /// Stop reconciling a repository or an update (spec.suspend)
    Suspend(cmd::cluster::SuspendArgs),
    /// Reconcile a suspended repository or update again, and wait for it
    Resume(cmd::cluster::SuspendArgs),
    /// The events of the image kinds, newest last
    Events(cmd::cluster::EventsArgs),
    /// An automation, its GitRepository, its policies and their repositories, with their state
    Tree(cmd::cluster::TreeArgs),
    /// Install the CRDs, RBAC, the controller, the webhook and its certificate
    Install(cmd::install::InstallArgs),
    /// Remove what install applied (the CRDs and your objects stay, unless --delete-crds)
    Uninstall(cmd::install::UninstallArgs),
    /// Print the version of the plugin, and of the controller in the cluster
    Version(cmd::install::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell)
    Completion(cmd::completion::Args),
    /// Completion candidates for kubectl's plugin completion (kubectl_complete-imageauto)
    #[command(name = "__complete", hide = true)]
    Complete(cmd::completion::CompleteArgs),
    /// Runs one network Git operation for this program's own processes
    #[command(name = cmd::git_network::NAME, hide = true)]
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
pub enum Outcome {
    Ok,
    Failed,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::GitNetwork) {
        // No logging, no signal handling: stdout holds the answer only.
        cmd::git_network::run();
    }
    // The server has its own logs and its own shutdown; the commands
    // remove their temporary files when a signal ends them.
    if !matches!(cli.command, Command::Serve(_)) {
        crate::logging::init_cli();
        crate::remove_temporaries_on_signals();
    }
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Set(args) => cmd::set::run(args),
        Command::Lint(args) => cmd::lint::run(args),
        Command::Tags(args) => cmd::tags::run(args),
        Command::Reconcile(args) => cmd::reconcile::run_cmd(args),
        Command::Get(args) => cmd::cluster::get(args),
        Command::Suspend(args) => cmd::cluster::suspend(args, true),
        Command::Resume(args) => cmd::cluster::suspend(args, false),
        Command::Events(args) => cmd::cluster::events(args),
        Command::Tree(args) => cmd::cluster::tree(args),
        Command::Install(args) => cmd::install::install(args),
        Command::Uninstall(args) => cmd::install::uninstall(args),
        Command::Version(args) => cmd::install::version(args),
        Command::Completion(args) => cmd::completion::run(args),
        Command::Complete(args) => cmd::completion::complete(args),
        Command::GitNetwork => cmd::git_network::run(),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", crate::output::printable(&error_text(&e)));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, each cause once: a cause whose text
/// the message already holds (a library error that prints its source) is
/// not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_are_not_repeated() {
        let io = std::io::Error::from_raw_os_error(20);
        let e = anyhow::Error::new(io).context("cannot read x");
        let t = super::error_text(&e);
        assert_eq!(t.matches("os error 20").count(), 1, "{t}");
        assert!(t.starts_with("cannot read x: "), "{t}");
    }
}
