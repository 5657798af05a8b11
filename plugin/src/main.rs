//! `kubectl imageauto`: keeps container image tags in GitOps repositories current.
#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod connect;
mod logging;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    automation::yaml::install_quiet_reader_hook();
    // Network Git operations run in a child process of this program, killed
    // when it stops making progress: a thread stuck in libgit2 on a server
    // that never answers cannot be stopped, a process can. Without the path
    // of this program they run on threads of this process instead.
    if let Ok(exe) = std::env::current_exe() {
        automation::git::set_network_runner(exe, vec![cmd::git_network::NAME.into()]);
    }
    cli::run()
}

/// On SIGINT, SIGTERM or SIGHUP, removes the temporary files of writes in
/// progress before the process ends, so that no partial file is left behind
/// (a file is replaced only by a rename of a complete one).
pub fn remove_temporaries_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            // Exits while no temporary file can be created.
            automation::local::tree::remove_temporary_files_and(|| std::process::exit(128 + sig));
        }
    });
}
