//! `kubectl imageauto set NS:POLICY=IMAGE[:TAG][@DIGEST] ... [PATH]`: write
//! known results into the marked fields, without asking a registry.

use super::Exit;
use crate::output::{TextOrJson, printable, table};
use crate::output::{out, outln};
use anyhow::Result;
use automation::api::ImageRef;
use automation::local::{TreeReport, update_tree};
use automation::registry::Reference;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Assignments NS:POLICY=IMAGE[:TAG][@DIGEST], then the folder or file to
    /// update (default: the current folder)
    #[arg(
        required = true,
        value_name = "NS:POLICY=IMAGE[:TAG][@DIGEST]... [PATH]"
    )]
    args: Vec<String>,
    /// Print a unified diff of what would change; write nothing
    #[arg(long)]
    dry_run: bool,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: TextOrJson,
}

/// Splits `IMAGE[:TAG][@DIGEST]`, checked against the reference grammar
/// (lower-case repository path, a host of DNS labels, a tag of
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, a digest `ALGORITHM:HEX`). The name
/// is kept as written (`nginx` stays `nginx`).
pub fn parse_image(s: &str) -> Result<ImageRef, String> {
    let r = Reference::parse(s).map_err(|e| e.to_string())?;
    Ok(ImageRef {
        name: r.written,
        tag: r.tag.unwrap_or_default(),
        digest: r.digest,
    })
}

/// `NS:POLICY=IMAGE[:TAG][@DIGEST]`.
pub fn parse_assignment(s: &str) -> Result<(String, ImageRef), String> {
    let Some((policy, image)) = s.split_once('=') else {
        return Err(format!("{s:?} is not NS:POLICY=IMAGE:TAG"));
    };
    let ok = policy
        .split_once(':')
        .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'));
    if !ok {
        return Err(format!(
            "{policy:?} is not NAMESPACE:POLICY (as in the marker {{\"$imagepolicy\": \"NAMESPACE:POLICY\"}})"
        ));
    }
    let image = parse_image(image).map_err(|e| format!("in {s:?}: {e}"))?;
    if image.tag.is_empty() && image.digest.is_none() {
        return Err(format!(
            "{s:?} names no tag or digest: write {policy}=IMAGE:TAG (or IMAGE@DIGEST)"
        ));
    }
    Ok((policy.to_string(), image))
}

fn usage_error(msg: String) -> ! {
    super::usage_error("set", msg)
}

pub fn run(args: Args) -> Result<Exit> {
    let mut images = BTreeMap::new();
    let mut path: Option<PathBuf> = None;
    let count = args.args.len();
    for (i, a) in args.args.iter().enumerate() {
        if a.contains('=') {
            match parse_assignment(a) {
                Ok((k, v)) => {
                    if images.insert(k.clone(), v).is_some() {
                        usage_error(format!("{k} is assigned twice"));
                    }
                }
                Err(e) => usage_error(e),
            }
        } else if i + 1 == count {
            path = Some(PathBuf::from(a));
        } else {
            usage_error(format!(
                "{a:?} is not an assignment NS:POLICY=IMAGE:TAG; the path goes last"
            ));
        }
    }
    if images.is_empty() {
        usage_error("give at least one assignment NS:POLICY=IMAGE:TAG".into());
    }
    let path = path.unwrap_or_else(|| PathBuf::from("."));
    let root = if path.is_file() {
        path.parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    } else {
        path.clone()
    };
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    let mut report = update_tree(&root, &path, &images, !args.dry_run)?;
    // Paths as `lint` and every other command prints them: relative to the
    // working directory, the way the user named the folder.
    if root != Path::new(".") {
        for f in &mut report.files {
            f.path = root.join(&f.path);
        }
        for s in &mut report.skipped {
            s.path = root.join(&s.path);
        }
        for n in &mut report.not_read {
            n.path = root.join(&n.path);
        }
    }
    let unmatched: Vec<&String> = images
        .keys()
        .filter(|k| !report.matched.contains(*k))
        .collect();
    match args.output {
        TextOrJson::Json => print_json(&report, &unmatched),
        TextOrJson::Text if args.dry_run => print_diff(&report),
        TextOrJson::Text => print_text(&report),
    }
    for s in &report.skipped {
        eprintln!(
            "error: {}: {}",
            printable(&s.path.display().to_string()),
            printable(&s.reason)
        );
    }
    for n in &report.not_read {
        eprintln!(
            "note: {}: {}",
            printable(&n.path.display().to_string()),
            n.reason
        );
    }
    for u in &unmatched {
        eprintln!(
            "error: no marker names {u} under {} (markers look like # {{\"$imagepolicy\": \"{u}\"}})",
            path.display()
        );
    }
    if args.output == TextOrJson::Text {
        let verb = if args.dry_run {
            "would change"
        } else {
            "changed"
        };
        eprintln!(
            "{} {verb} in {} of {} files with markers",
            plural(report.changes(), "value"),
            report.files.len(),
            report.files_with_markers
        );
    }
    Ok(if report.skipped.is_empty() && unmatched.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn print_text(report: &TreeReport) {
    let rows: Vec<Vec<String>> = report
        .files
        .iter()
        .flat_map(|f| {
            f.changes.iter().map(move |c| {
                vec![
                    format!("{}:{}", f.path.display(), c.line),
                    c.object.as_ref().map_or("-".into(), ToString::to_string),
                    c.setter.clone(),
                    c.old_value.clone(),
                    c.new_value.clone(),
                ]
            })
        })
        .collect();
    if !rows.is_empty() {
        out!(
            "{}",
            table(&["FILE:LINE", "OBJECT", "SETTER", "OLD", "NEW"], &rows)
        );
    }
}

fn print_diff(report: &TreeReport) {
    out!("{}", crate::output::unified_diffs(&report.files));
}

fn print_json(report: &TreeReport, unmatched: &[&String]) {
    let changes: Vec<serde_json::Value> = report
        .files
        .iter()
        .flat_map(|f| {
            f.changes.iter().map(move |c| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("file".into(), json!(f.path.display().to_string()));
                }
                v
            })
        })
        .collect();
    let skipped: Vec<serde_json::Value> = report
        .skipped
        .iter()
        .map(|s| json!({"file": s.path.display().to_string(), "reason": s.reason}))
        .collect();
    let out = json!({"changes": changes, "skipped": skipped, "unmatched": unmatched});
    outln!(
        "{}",
        serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images() {
        let i = parse_image("ghcr.io/org/app:1.2.3").unwrap();
        assert_eq!(
            (i.name.as_str(), i.tag.as_str()),
            ("ghcr.io/org/app", "1.2.3")
        );
        let i = parse_image("localhost:5000/app").unwrap();
        assert_eq!(
            (i.name.as_str(), i.tag.as_str()),
            ("localhost:5000/app", "")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let i = parse_image(&format!("localhost:5000/app:v1@{d}")).unwrap();
        assert_eq!(i.tag, "v1");
        assert_eq!(i.digest.as_deref(), Some(d.as_str()));
        assert!(parse_image("app:-bad").is_err());
        assert!(parse_image("app@md5").is_err());
        assert!(parse_assignment("podinfo=x:1").is_err());
        assert!(parse_assignment("ns:p=x:1").is_ok());
    }
}
