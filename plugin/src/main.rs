//! `kubectl imageauto`: keeps container image tags in GitOps repositories current.
#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
