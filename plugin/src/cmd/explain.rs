//! `kubectl imageauto explain -f POLICY.yaml --tags FILE|-`

use super::Exit;
use crate::output::{TextOrJson, table};
use crate::output::{out, outln};
use anyhow::{Context, Result, bail};
use automation::api::{
    DEFAULT_EXCLUSION_LIST, ImagePolicy, ImageRepository, Object, ResourceExt, compile_policy,
    load_str,
};
use automation::local::tree::{MAX_FILE_BYTES, read_regular};
use automation::policy::{Exclusions, Explanation};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// File holding the ImagePolicy (and, if it has it, its ImageRepository)
    #[arg(short = 'f', long = "filename", value_name = "POLICY.yaml")]
    file: PathBuf,
    /// Tags to choose from: a file with one tag a line, a JSON list, or
    /// `kubectl imageauto tags -o json` output; `-` reads standard input
    #[arg(long, value_name = "FILE|-")]
    tags: String,
    /// Which ImagePolicy, when the file holds several
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: TextOrJson,
}

/// Reads a tag list: JSON (a list, or an object with `tags`) or one tag a line.
pub fn parse_tags(text: &str, origin: &str) -> Result<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(trimmed)
            .with_context(|| format!("{origin}: looks like JSON but does not parse"))?;
        let list = match &value {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(o) => match o.get("tags") {
                Some(serde_json::Value::Array(a)) => a,
                _ => bail!("{origin}: a JSON object needs a \"tags\" list"),
            },
            _ => bail!("{origin}: expected a JSON list of tags"),
        };
        return list
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                other => bail!("{origin}: tag {i} is {other}, not a string"),
            })
            .collect();
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

fn read_tags(source: &str) -> Result<Vec<String>> {
    let (text, origin) = if source == "-" {
        let mut s = Vec::new();
        std::io::stdin()
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut s)
            .context("cannot read tags from standard input")?;
        if s.len() as u64 > MAX_FILE_BYTES {
            bail!("standard input holds more than {MAX_FILE_BYTES} bytes of tags");
        }
        (s, "standard input".to_string())
    } else {
        (
            read_regular(Path::new(source), MAX_FILE_BYTES)
                .map_err(|e| anyhow::anyhow!("tags file {e}"))?,
            source.to_string(),
        )
    };
    let text = String::from_utf8(text).map_err(|_| anyhow::anyhow!("{origin}: not UTF-8 text"))?;
    let mut tags = parse_tags(&text, &origin)?;
    let before = tags.len();
    let mut shown = Vec::new();
    tags.retain(|t| {
        let ok = automation::registry::reference::valid_tag(t);
        if !ok && shown.len() < 3 {
            shown.push(format!("{t:?}"));
        }
        ok
    });
    if tags.len() < before {
        eprintln!(
            "note: {origin}: {} entr(ies) are not valid tags ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}) and were dropped: {}{}",
            before - tags.len(),
            shown.join(", "),
            if before - tags.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
    Ok(tags)
}

fn describe(o: &Object) -> String {
    match o {
        Object::Repository(r) => format!("ImageRepository {}", r.name_any()),
        Object::Policy(p) => format!("ImagePolicy {}", p.name_any()),
        Object::Automation(a) => format!("ImageUpdateAutomation {}", a.name_any()),
        Object::GitRepository(g) => {
            format!(
                "GitRepository {}",
                g.metadata.name.clone().unwrap_or_default()
            )
        }
    }
}

pub fn run(args: Args) -> Result<Exit> {
    let path = args.file.display().to_string();
    let bytes = read_regular(&args.file, MAX_FILE_BYTES).map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{path}: not UTF-8 text"))?;
    let loaded = load_str(&path, &text);
    let policies: Vec<&ImagePolicy> = loaded
        .objects
        .iter()
        .filter_map(|l| match &l.object {
            Object::Policy(p) => Some(p),
            _ => None,
        })
        .filter(|p| args.name.as_ref().is_none_or(|n| p.name_any() == *n))
        .collect();
    for p in &loaded.problems {
        eprintln!("{}: {p}", p.severity_word());
    }
    let policy = match policies.as_slice() {
        [one] => *one,
        [] => {
            if loaded.errors().next().is_some() {
                bail!("{path}: no ImagePolicy could be read (see the errors above)");
            }
            let found: Vec<String> = loaded.objects.iter().map(|l| describe(&l.object)).collect();
            match &args.name {
                Some(n) => bail!("{path} holds no ImagePolicy named {n:?}"),
                None if found.is_empty() => bail!(
                    "{path} holds no ImagePolicy (apiVersion image.toolkit.fluxcd.io/v1, kind ImagePolicy)"
                ),
                None => bail!(
                    "{path} holds no ImagePolicy; it holds: {}",
                    found.join(", ")
                ),
            }
        }
        many => bail!(
            "{path} holds {} ImagePolicies ({}): name the one to explain",
            many.len(),
            many.iter()
                .map(|p| p.name_any())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let compiled = compile_policy(&policy.spec).map_err(|errs| {
        anyhow::anyhow!(
            "{}",
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let repo_ref = &policy.spec.image_repository_ref;
    let repo_ns = repo_ref.namespace.clone().or_else(|| policy.namespace());
    let repository: Option<&ImageRepository> =
        loaded.objects.iter().find_map(|l| match &l.object {
            Object::Repository(r)
                if r.name_any() == repo_ref.name
                    && (r.namespace().is_none()
                        || repo_ns.is_none()
                        || r.namespace() == repo_ns) =>
            {
                Some(r)
            }
            _ => None,
        });
    let (exclusion_list, exclusion_origin): (Vec<String>, String) = match repository {
        Some(r) => (
            r.spec.exclusion_list.clone(),
            format!("ImageRepository {}", r.name_any()),
        ),
        None => (
            DEFAULT_EXCLUSION_LIST
                .iter()
                .map(|s| s.to_string())
                .collect(),
            format!(
                "the default (ImageRepository {} is not in {path})",
                repo_ref.name
            ),
        ),
    };
    let exclusions = Exclusions::new(&exclusion_list)?;
    let tags = read_tags(&args.tags)?;
    let explanation = compiled.explain(&exclusions, &tags);
    match args.output {
        TextOrJson::Json => {
            outln!("{}", serde_json::to_string_pretty(&explanation)?);
        }
        TextOrJson::Text => out!(
            "{}",
            render_text(&explanation, &policy.name_any(), &exclusion_origin)
        ),
    }
    Ok(if explanation.latest.is_some() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn render_text(e: &Explanation, policy: &str, exclusion_origin: &str) -> String {
    let mut out = String::new();
    match (&e.latest, &e.error) {
        (Some(t), _) => out.push_str(&format!("ImagePolicy {policy} selects: {t}\n")),
        (None, Some(err)) => {
            out.push_str(&format!("ImagePolicy {policy} selects nothing: {err}\n"))
        }
        (None, None) => out.push_str(&format!("ImagePolicy {policy} selects nothing\n")),
    }
    out.push_str(&format!("Exclusion list: {exclusion_origin}\n\n"));
    let winner_first = e
        .tags
        .iter()
        .filter(|t| Some(&t.tag) == e.latest.as_ref())
        .chain(e.tags.iter().filter(|t| Some(&t.tag) != e.latest.as_ref()));
    let rows: Vec<Vec<String>> = winner_first
        .map(|t| {
            vec![
                t.tag.clone(),
                yes_no(t.excluded),
                if t.excluded {
                    "-".to_string()
                } else if t.filtered {
                    "kept".to_string()
                } else {
                    "dropped".to_string()
                },
                t.extracted.clone().unwrap_or_else(|| "-".to_string()),
                yes_no(t.accepted),
                t.reason.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "TAG",
            "EXCLUDED",
            "FILTER",
            "EXTRACTED",
            "ACCEPTED",
            "REASON",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::parse_tags;

    #[test]
    fn tag_lists() {
        assert_eq!(parse_tags("a\n\n b \n# c\n", "x").unwrap(), ["a", "b"]);
        assert_eq!(parse_tags("[\"a\",\"b\"]", "x").unwrap(), ["a", "b"]);
        assert_eq!(parse_tags("{\"tags\":[\"a\"]}", "x").unwrap(), ["a"]);
        assert!(parse_tags("[1]", "x").is_err());
        assert!(parse_tags("{\"x\":1}", "x").is_err());
    }
}
