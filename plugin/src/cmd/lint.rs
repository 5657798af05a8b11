//! `kubectl imageauto lint [PATH...]`: the marker lint, for pre-commit and CI.

use super::Exit;
use crate::output::TextOrJson;
use crate::output::outln;
use crate::output::printable;
use anyhow::{Context, Result};
use automation::api::Severity;
use automation::lint::{Finding, lint};
use automation::local::tree::{MAX_FILE_BYTES, manifest_files, read_regular};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and folders to lint (default: the current folder)
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Files or folders whose ImagePolicies and ImageRepositories count as
    /// defined, without being linted (for hooks that pass only changed files)
    #[arg(long = "policies", value_name = "PATH")]
    policies: Vec<PathBuf>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: TextOrJson,
}

/// Reads the manifests of `paths`: files as given, folders walked.
fn read_all(
    paths: &[PathBuf],
    out: &mut Vec<(String, String)>,
    errors: &mut Vec<Finding>,
) -> Result<()> {
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        let files = if meta.is_dir() {
            let listing = manifest_files(p, p)?;
            for n in &listing.not_read {
                eprintln!(
                    "note: {}: {}",
                    printable(&display_path(p, &n.path, true)),
                    n.reason
                );
            }
            listing.files
        } else {
            vec![p.clone()]
        };
        for f in files {
            let shown = display_path(p, &f, meta.is_dir());
            match read_regular(&f, MAX_FILE_BYTES).map(String::from_utf8) {
                Ok(Ok(text)) => out.push((shown, text)),
                Ok(Err(_)) => errors.push(Finding {
                    file: shown,
                    line: 1,
                    column: 1,
                    severity: Severity::Error,
                    message: "not UTF-8 text".into(),
                    rule: "encoding",
                }),
                Err(e) => anyhow::bail!("{e}"),
            }
        }
    }
    Ok(())
}

/// A path as the user gave it (folder + relative path inside it).
fn display_path(given: &Path, file: &Path, is_dir: bool) -> String {
    if !is_dir {
        return given.display().to_string();
    }
    let base = given.canonicalize().unwrap_or_else(|_| given.to_path_buf());
    match file.strip_prefix(&base) {
        Ok(rel) if given == Path::new(".") => rel.display().to_string(),
        Ok(rel) => given.join(rel).display().to_string(),
        Err(_) => file.display().to_string(),
    }
}

pub fn run(args: Args) -> Result<Exit> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    let mut findings = Vec::new();
    read_all(&paths, &mut files, &mut findings)?;
    let mut definitions = Vec::new();
    read_all(&args.policies, &mut definitions, &mut Vec::new())?;
    findings.extend(lint(&files, &definitions));
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    match args.output {
        TextOrJson::Json => outln!("{}", serde_json::to_string_pretty(&findings)?),
        TextOrJson::Text => {
            for f in &findings {
                outln!("{}", printable(&f.to_string()));
            }
            if !findings.is_empty() {
                eprintln!(
                    "{errors} error(s), {warnings} warning(s) in {} file(s)",
                    files.len()
                );
            }
        }
    }
    Ok(if errors > 0 { Exit::Failed } else { Exit::Ok })
}
