//! The command line's run: kubectl's conventions (`-o`, exit 0 ok, 1
//! failed or findings, 2 usage); the commands and their flags are
//! [`cmd`]'s.

use crate::cmd::{self, Cli, Command, Exit};
use clap::Parser;
use std::process::ExitCode;

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
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::Failed) => ExitCode::from(1),
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
