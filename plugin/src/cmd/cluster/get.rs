//! `get`: the image kinds as Flux shows them, once or as they change.

use super::*;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum GetOutput {
    #[default]
    Table,
    Wide,
    Json,
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// repositories, policies, updates or all, and a NAME (Flux's forms too:
    /// image policy NAME, images all)
    #[arg(value_name = "KIND [NAME]", required = true)]
    words: Vec<String>,
    /// Every namespace
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: GetOutput,
    /// After listing, print each change as it happens
    #[arg(short = 'w', long)]
    watch: bool,
    /// Only objects whose condition has this status, such as ready=false (Flux's flag)
    #[arg(long, value_name = "CONDITION=STATUS")]
    status_selector: Option<String>,
    /// Keep metadata.managedFields in -o json|yaml (as kubectl's flag)
    #[arg(long)]
    show_managed_fields: bool,
    #[command(flatten)]
    kube: KubeArgs,
}

/// The kinds and the name `get` asks for.
fn get_target(words: &Words) -> Result<(Vec<ImageKind>, Option<String>)> {
    let p = words.prefix();
    let form = if words.image {
        "get image repository|policy|update [NAME], or get images all"
    } else {
        "get repositories|policies|updates|all [NAME]"
    };
    let Some(kind) = &words.kind else {
        crate::cmd::usage_error("get", format!("give a kind: {form}"));
    };
    let name = match words.names.as_slice() {
        [] => None,
        [name] => Some(name.clone()),
        [name, more @ ..] => crate::cmd::usage_error(
            "get",
            format!(
                "one name at a time: get {p}{kind} {name} (then get {p}{kind} {}), or get {p}{kind} to list them all",
                more.join(", ")
            ),
        ),
    };
    if kind.eq_ignore_ascii_case("all") {
        if let Some(n) = name {
            crate::cmd::usage_error(
                "get",
                format!(
                    "a name goes with one kind: get {p}repository {n}, get {p}policy {n} or get {p}update {n}"
                ),
            );
        }
        return Ok((
            vec![ImageKind::Repository, ImageKind::Policy, ImageKind::Update],
            None,
        ));
    }
    Ok((vec![ImageKind::parse(kind)?], name))
}

/// One row of `get`, as a table shows it; `KIND/NAME` in the first column
/// when several kinds are shown (Flux's `get images all`).
fn get_row(
    kind: ImageKind,
    v: &Value,
    wide: bool,
    all_namespaces: bool,
    prefixed: bool,
) -> Vec<String> {
    let mut r = row(kind, v, wide, all_namespaces);
    if prefixed {
        let i = usize::from(all_namespaces);
        r[i] = format!("{}/{}", kind.lower(), r[i]);
    }
    r
}

pub fn get(args: GetArgs) -> Result<Exit> {
    let words = Words::of(&args.words);
    let (kinds, name) = get_target(&words)?;
    let selector = args.status_selector.as_deref().map(StatusSelector::parse);
    let several = kinds.len() > 1;
    let wide = args.output == GetOutput::Wide;
    let structured = matches!(args.output, GetOutput::Json | GetOutput::Yaml);
    crate::cmd::runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let mut items_all: Vec<Value> = Vec::new();
        // What was shown, by kind, namespace and name: its resourceVersion
        // (a watch prints only what changed since).
        let mut shown: HashMap<(ImageKind, String, String), String> = HashMap::new();
        let mut tables = 0;
        for kind in &kinds {
            let kind = *kind;
            let objects = match &name {
                Some(n) => vec![get_named(&k, kind, n).await?],
                None => {
                    kind.api(&k, args.all_namespaces)
                        .list(&ListParams::default())
                        .await
                        .map_err(|e| explain(e, &format!("listing {}", kind.plural())))?
                        .items
                }
            };
            let mut items = Vec::new();
            for o in objects {
                let v = serde_json::to_value(&o)?;
                shown.insert(key(kind, &v), version_of(&v));
                if selector.as_ref().is_none_or(|s| s.matches(&v)) {
                    items.push(v);
                }
            }
            if structured {
                items_all.extend(items);
                continue;
            }
            if items.is_empty() {
                if !several {
                    eprintln!(
                        "No {} found{}.",
                        kind.plural(),
                        if args.all_namespaces {
                            String::new()
                        } else {
                            format!(" in namespace {}", k.namespace)
                        }
                    );
                }
                continue;
            }
            let mut header = kind.header(wide);
            if args.all_namespaces {
                header.insert(0, "NAMESPACE");
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| get_row(kind, v, wide, args.all_namespaces, several))
                .collect();
            if tables > 0 {
                outln!();
            }
            tables += 1;
            if wide {
                out!("{}", wide_table(&header, &rows));
            } else {
                out!("{}", table(&header, &rows));
            }
        }
        if several && tables == 0 && !structured {
            eprintln!(
                "No image objects found{}.",
                if args.all_namespaces {
                    String::new()
                } else {
                    format!(" in namespace {}", k.namespace)
                }
            );
        }
        if structured {
            let mut list = if name.is_some() && items_all.len() == 1 {
                items_all.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items_all})
            };
            if !args.show_managed_fields {
                without_managed_fields(&mut list);
            }
            if args.output == GetOutput::Json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                out!("{}", serde_norway::to_string(&list)?);
            }
        }
        if !args.watch {
            return Ok(Exit::Ok);
        }
        // Every kind's changes, as they come; each row in its kind's
        // columns, named KIND/NAME when several kinds are watched.
        let mut streams = Vec::new();
        for kind in &kinds {
            let kind = *kind;
            let mut wc = kube::runtime::watcher::Config::default();
            if let Some(n) = &name {
                wc = wc.fields(&format!("metadata.name={n}"));
            }
            streams.push(
                applied(kube::runtime::watcher(
                    kind.api(&k, args.all_namespaces),
                    wc,
                ))
                .map(move |r| (kind, r))
                .boxed(),
            );
        }
        let mut merged = futures::stream::select_all(streams);
        while let Some((kind, ev)) = merged.next().await {
            let o = ev.map_err(|e| anyhow!("watching {}: {e}", kind.plural()))?;
            let mut v = serde_json::to_value(&o)?;
            let version = version_of(&v);
            if shown.insert(key(kind, &v), version.clone()).as_ref() == Some(&version) {
                // Shown already (the watch begins with the listing).
                continue;
            }
            if selector.as_ref().is_some_and(|s| !s.matches(&v)) {
                continue;
            }
            if !args.show_managed_fields {
                without_managed_fields(&mut v);
            }
            match args.output {
                GetOutput::Json => outln!("{}", serde_json::to_string(&v)?),
                GetOutput::Yaml => out!("---\n{}", serde_norway::to_string(&v)?),
                GetOutput::Table | GetOutput::Wide => {
                    let r = get_row(kind, &v, wide, args.all_namespaces, several);
                    let t = if wide {
                        wide_table(&vec![""; r.len()], &[r])
                    } else {
                        table(&vec![""; r.len()], &[r])
                    };
                    if let Some(line) = t.lines().nth(1) {
                        outln!("{line}");
                    }
                }
            }
        }
        Ok(Exit::Ok)
    })
}

/// An object's kind, namespace and name.
fn key(kind: ImageKind, v: &Value) -> (ImageKind, String, String) {
    (
        kind,
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        v["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

fn version_of(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
