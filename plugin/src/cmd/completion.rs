//! Shell completion: `completion bash|zsh|fish|powershell` prints a script
//! for `kubectl-imageauto`; `__complete WORDS...` answers kubectl's plugin
//! completion (the `kubectl_complete-imageauto` script on PATH), with object
//! names from the cluster.

use crate::cli::{Cli, Outcome};
use crate::output::outln;
use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// bash, zsh, fish or powershell
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: Args) -> Result<Outcome> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "kubectl-imageauto", &mut script);
    crate::output::write_stdout_bytes(&script);
    Ok(Outcome::Ok)
}

#[derive(clap::Args, Debug)]
pub struct CompleteArgs {
    /// The words after `kubectl imageauto`; the last one is being completed
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    words: Vec<String>,
}

/// Cobra's "no file completion" directive, which kubectl expects last.
const NO_FILES: &str = ":4";

/// Commands whose second word is a kind, and the kinds they take.
fn kinds_of(command: &str) -> &'static [&'static str] {
    match command {
        "get" => &["repositories", "policies", "updates", "all"],
        "reconcile" => &["repository", "policy", "update"],
        "suspend" | "resume" => &["repository", "update"],
        "tree" => &["update"],
        _ => &[],
    }
}

fn names(kind: &str, namespace: Option<String>) -> Vec<String> {
    let Ok(kind) = crate::cmd::cluster::Kind::parse(kind) else {
        return Vec::new();
    };
    let kube = crate::connect::KubeArgs {
        namespace,
        ..Default::default()
    };
    automation::registry::tls::install_crypto_provider();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(async move {
        let Ok(k) = kube.connect().await else {
            return Vec::new();
        };
        crate::cmd::cluster::names(&k, kind).await
    })
}

pub fn complete(args: CompleteArgs) -> Result<Outcome> {
    let words = args.words;
    let (current, before) = match words.split_last() {
        Some((c, b)) => (c.clone(), b.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let namespace = before
        .iter()
        .position(|w| w == "-n" || w == "--namespace")
        .and_then(|i| before.get(i + 1).cloned());
    // The words that are not flags nor flag values.
    let mut positional: Vec<&String> = Vec::new();
    let mut skip = false;
    for w in &before {
        if skip {
            skip = false;
        } else if matches!(
            w.as_str(),
            "-n" | "--namespace" | "--context" | "--kubeconfig" | "-o" | "--output" | "--timeout"
        ) {
            skip = true;
        } else if !w.starts_with('-') {
            positional.push(w);
        }
    }
    let candidates: Vec<String> = match positional.as_slice() {
        [] => Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect(),
        [command] => kinds_of(command).iter().map(|s| s.to_string()).collect(),
        [command, kind] if !kinds_of(command).is_empty() => names(kind, namespace),
        _ => Vec::new(),
    };
    for c in candidates.iter().filter(|c| c.starts_with(&current)) {
        outln!("{c}");
    }
    outln!("{NO_FILES}");
    Ok(Outcome::Ok)
}
