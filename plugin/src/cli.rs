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
    /// Print the version
    Version,
}

/// What a command reports back: success, or failure/findings (exit 1).
pub enum Outcome {
    Ok,
    Failed,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Explain(args) => cmd::explain::run(args),
        Command::Set(args) => cmd::set::run(args),
        Command::Lint(args) => cmd::lint::run(args),
        Command::Tags(args) => cmd::tags::run(args),
        Command::Reconcile(args) => cmd::reconcile::run_cmd(args),
        Command::Version => {
            println!("kubectl-imageauto {}", env!("CARGO_PKG_VERSION"));
            Ok(Outcome::Ok)
        }
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
