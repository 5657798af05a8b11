//! Shell completion. `completion bash|zsh|fish` prints a script that asks
//! the program itself what to offer (`kubectl-imageauto __complete
//! WORDS...`): commands, kinds, flags and their values, and the names of
//! objects and namespaces in the cluster. `completion powershell` prints
//! clap's static script (commands and flags). `kubectl_complete-imageauto`
//! (on PATH) answers kubectl's own plugin completion through the same
//! `__complete`.

use super::{Cli, Exit};
use crate::output::outln;
use anyhow::Result;
use clap::CommandFactory;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// bash, zsh, fish or powershell
    #[arg(value_enum)]
    shell: Shell,
}

/// bash: `source <(kubectl-imageauto completion bash)`.
const BASH: &str = r#"# bash completion for kubectl-imageauto: the program itself answers
# (kubectl-imageauto __complete WORDS...) with commands, kinds, flags and
# their values, and the names of objects and namespaces in the cluster.
#   source <(kubectl-imageauto completion bash)
_kubectl_imageauto() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local IFS=$'\n'
    local out
    out=$(kubectl-imageauto __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return 0
    local directive=${out##*$'\n'}
    directive=${directive#:}
    local candidates=
    [[ $out == *$'\n'* ]] && candidates=${out%$'\n'*}
    COMPREPLY=()
    if [[ -n $candidates ]]; then
        COMPREPLY=($(compgen -W "$candidates" -- "$cur"))
    elif (( (directive & 4) == 0 )); then
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -F _kubectl_imageauto kubectl-imageauto
"#;

/// zsh: `source <(kubectl-imageauto completion zsh)` after compinit, or the
/// script saved as `_kubectl-imageauto` in a folder of `$fpath`.
const ZSH: &str = r#"#compdef kubectl-imageauto
# zsh completion for kubectl-imageauto: the program itself answers
# (kubectl-imageauto __complete WORDS...) with commands, kinds, flags and
# their values, and the names of objects and namespaces in the cluster.
#   source <(kubectl-imageauto completion zsh)     (after compinit)
# or save it as _kubectl-imageauto in a folder of $fpath.
_kubectl-imageauto() {
    local -a lines candidates
    local directive
    lines=("${(@f)$(kubectl-imageauto __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    directive=${lines[-1]#:}
    candidates=("${(@)lines[1,-2]}")
    if (( ${#candidates} )); then
        compadd -Q -- "${candidates[@]}"
    elif (( (directive & 4) == 0 )); then
        _files
    fi
}
if [ "$funcstack[1]" = "_kubectl-imageauto" ]; then
    _kubectl-imageauto "$@"
else
    compdef _kubectl-imageauto kubectl-imageauto
fi
"#;

/// fish: `kubectl-imageauto completion fish | source`, or the script saved
/// as `~/.config/fish/completions/kubectl-imageauto.fish`.
const FISH: &str = r#"# fish completion for kubectl-imageauto: the program itself answers
# (kubectl-imageauto __complete WORDS...) with commands, kinds, flags and
# their values, and the names of objects and namespaces in the cluster.
#   kubectl-imageauto completion fish | source
function __kubectl_imageauto_complete
    set -l args (commandline -opc)
    set -e args[1]
    set -l out (kubectl-imageauto __complete $args (commandline -ct) 2>/dev/null)
    test (count $out) -gt 0; or return
    set -l directive (string replace -r '^:' '' -- $out[-1])
    set -e out[-1]
    if test (count $out) -gt 0
        printf '%s\n' $out
    else if test (math "bitand($directive, 4)") -eq 0
        __fish_complete_path (commandline -ct)
    end
end
complete -c kubectl-imageauto -f -a '(__kubectl_imageauto_complete)'
"#;

pub fn run(args: Args) -> Result<Exit> {
    let script = match args.shell {
        Shell::Bash => BASH.as_bytes().to_vec(),
        Shell::Zsh => ZSH.as_bytes().to_vec(),
        Shell::Fish => FISH.as_bytes().to_vec(),
        Shell::Powershell => {
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(
                clap_complete::Shell::PowerShell,
                &mut cmd,
                "kubectl-imageauto",
                &mut script,
            );
            script
        }
    };
    crate::output::write_stdout_bytes(&script);
    Ok(Exit::Ok)
}

#[derive(clap::Args, Debug)]
pub struct CompleteArgs {
    /// The words after `kubectl imageauto`; the last one is being completed
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    words: Vec<String>,
}

/// Cobra's directives, which kubectl's plugin completion and the scripts
/// read on the last line: no file completion after the candidates...
const NO_FILES: &str = ":4";
/// ...or the shell's file completion when there is no candidate.
const FILES: &str = ":0";

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

/// What the cluster is asked with: the connection flags typed so far.
#[derive(Default)]
struct Typed {
    namespace: Option<String>,
    kubeconfig: Option<String>,
    context: Option<String>,
}

impl Typed {
    fn kube(&self) -> crate::connect::KubeArgs {
        crate::connect::KubeArgs {
            conn: crate::connect::ConnArgs {
                kubeconfig: self.kubeconfig.clone().map(Into::into),
                context: self.context.clone(),
            },
            namespace: self.namespace.clone(),
        }
    }

    /// Runs `f` against the cluster; nothing when it cannot be reached
    /// (completion never waits long, never fails).
    fn ask<F, Fut>(&self, f: F) -> Vec<String>
    where
        F: FnOnce(crate::connect::Kube) -> Fut,
        Fut: std::future::Future<Output = Vec<String>>,
    {
        let kube = self.kube();
        automation::registry::tls::install_crypto_provider();
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Vec::new();
        };
        rt.block_on(async move {
            let ask = async {
                match kube.connect().await {
                    Ok(k) => f(k).await,
                    Err(_) => Vec::new(),
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(5), ask)
                .await
                .unwrap_or_default()
        })
    }
}

fn object_names(kind: &str, typed: &Typed) -> Vec<String> {
    let Ok(kind) = crate::cmd::cluster::ImageKind::parse(kind) else {
        return Vec::new();
    };
    typed.ask(|k| async move { crate::cmd::cluster::names(&k, kind).await })
}

fn namespace_names(typed: &Typed) -> Vec<String> {
    use k8s_openapi::api::core::v1::Namespace;
    typed.ask(|k| async move {
        let api: kube::Api<Namespace> = kube::Api::all(k.client.clone());
        api.list(&kube::api::ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|n| n.metadata.name)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The flags of a subcommand, long and short, as typed.
fn flags(sub: &clap::Command) -> Vec<String> {
    let mut out = Vec::new();
    for a in sub
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
    {
        if let Some(l) = a.get_long() {
            out.push(format!("--{l}"));
        }
        if let Some(s) = a.get_short() {
            out.push(format!("-{s}"));
        }
    }
    out.push("--help".into());
    out
}

/// The flag of `sub` that `word` names, when it takes a value in the next
/// word (not `--flag=value`).
fn value_flag<'a>(sub: &'a clap::Command, word: &str) -> Option<&'a clap::Arg> {
    let arg = if let Some(long) = word.strip_prefix("--") {
        if long.contains('=') {
            return None;
        }
        sub.get_arguments().find(|a| a.get_long() == Some(long))
    } else {
        let mut chars = word.strip_prefix('-')?.chars();
        let short = chars.next()?;
        if chars.next().is_some() {
            return None;
        }
        sub.get_arguments().find(|a| a.get_short() == Some(short))
    }?;
    arg.get_action().takes_values().then_some(arg)
}

/// What to offer for the value of `arg`, and whether files may be
/// offered when nothing is.
fn flag_values(arg: &clap::Arg, typed: &Typed) -> (Vec<String>, bool) {
    let id = arg.get_id().as_str();
    let long = arg.get_long().unwrap_or("");
    if long.contains("namespace") {
        return (namespace_names(typed), false);
    }
    if id == "context" {
        let conn = crate::connect::ConnArgs {
            kubeconfig: typed.kubeconfig.clone().map(Into::into),
            context: None,
        };
        return (conn.context_names(), false);
    }
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !possible.is_empty() {
        return (possible, false);
    }
    let file = arg.get_value_names().is_some_and(|names| {
        names
            .iter()
            .any(|n| matches!(n.as_str(), "FILE" | "DIR" | "PATH"))
    });
    (Vec::new(), file)
}

pub fn complete(args: CompleteArgs) -> Result<Exit> {
    let words = args.words;
    let (current, before) = match words.split_last() {
        Some((c, b)) => (c.clone(), b.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let root = Cli::command();
    let sub = before
        .first()
        .and_then(|w| root.find_subcommand(w))
        .filter(|s| !s.is_hide_set());
    // The words that are neither flags nor flag values, and the
    // connection flags typed so far.
    let mut positional: Vec<&String> = Vec::new();
    let mut typed = Typed::default();
    let mut i = 1;
    while let Some(sub) = sub
        && i < before.len()
    {
        let w = &before[i];
        if let Some(arg) = value_flag(sub, w) {
            let value = before.get(i + 1).cloned();
            match arg.get_id().as_str() {
                "namespace" => typed.namespace = value,
                "kubeconfig" => typed.kubeconfig = value,
                "context" => typed.context = value,
                _ => {}
            }
            i += 2;
            continue;
        }
        if !w.starts_with('-') {
            positional.push(w);
        }
        i += 1;
    }
    let (candidates, files): (Vec<String>, bool) = match sub {
        None if before.is_empty() => (
            root.get_subcommands()
                .filter(|c| !c.is_hide_set())
                .map(|c| c.get_name().to_string())
                .collect(),
            false,
        ),
        None => (Vec::new(), false),
        Some(sub) => {
            let previous = before.last().filter(|_| before.len() > 1);
            if let Some(arg) = previous.and_then(|p| value_flag(sub, p)) {
                flag_values(arg, &typed)
            } else if current.starts_with('-') {
                (flags(sub), false)
            } else {
                let command = sub.get_name();
                let kinds = kinds_of(command);
                // Flux's `image` word before the kind.
                let rest: Vec<&String> = match positional.split_first() {
                    Some((first, rest)) if matches!(first.as_str(), "image" | "images") => {
                        rest.to_vec()
                    }
                    _ => positional.clone(),
                };
                match rest.as_slice() {
                    _ if kinds.is_empty() => (Vec::new(), true),
                    [] => (kinds.iter().map(|s| s.to_string()).collect(), false),
                    [kind] if !(command == "get" && kind.as_str() == "all") => {
                        (object_names(kind, &typed), false)
                    }
                    _ => (Vec::new(), false),
                }
            }
        }
    };
    let mut text = String::new();
    for c in candidates.iter().filter(|c| c.starts_with(&current)) {
        text.push_str(c);
        text.push('\n');
    }
    crate::output::write_stdout(format_args!("{text}"));
    outln!("{}", if files { FILES } else { NO_FILES });
    Ok(Exit::Ok)
}
