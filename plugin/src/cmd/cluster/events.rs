//! `events`: the events of the image kinds, newest last, or as they come.

use super::*;

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Only the events of the objects of this name
    #[arg(value_name = "NAME", conflicts_with = "for_object")]
    name: Option<String>,
    /// Only the events of this object: KIND/NAME, such as ImagePolicy/web (Flux's flag)
    #[arg(long = "for", value_name = "KIND/NAME")]
    for_object: Option<String>,
    /// Only events of these types: Normal, Warning (comma-separated; Flux's flag)
    #[arg(long, value_name = "TYPE", value_delimiter = ',')]
    types: Vec<String>,
    /// Every namespace
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// After listing, print each new event as it happens
    #[arg(short = 'w', long)]
    watch: bool,
    #[command(flatten)]
    kube: KubeArgs,
}

/// Which events `events` shows.
struct EventFilter {
    kind: Option<ImageKind>,
    name: Option<String>,
    types: Vec<String>,
}

impl EventFilter {
    fn of(args: &EventsArgs) -> EventFilter {
        let (kind, name) = match &args.for_object {
            Some(f) => {
                let Some((k, n)) = f
                    .split_once('/')
                    .filter(|(k, n)| !k.is_empty() && !n.is_empty())
                else {
                    crate::cmd::usage_error(
                        "events",
                        format!("--for {f:?}: give KIND/NAME, such as ImagePolicy/web"),
                    );
                };
                match ImageKind::parse(k) {
                    Ok(kind) => (Some(kind), Some(n.to_string())),
                    Err(e) => crate::cmd::usage_error("events", format!("--for {f:?}: {e}")),
                }
            }
            None => (None, args.name.clone()),
        };
        let types = args
            .types
            .iter()
            .map(|t| match t.to_ascii_lowercase().as_str() {
                "normal" => "Normal".to_string(),
                "warning" => "Warning".to_string(),
                _ => crate::cmd::usage_error(
                    "events",
                    format!("--types {t:?}: the types are Normal and Warning"),
                ),
            })
            .collect();
        EventFilter { kind, name, types }
    }

    fn matches(&self, e: &k8s_openapi::api::core::v1::Event) -> bool {
        let kind = e.involved_object.kind.as_deref().unwrap_or("");
        let kinds = [ImageKind::Repository, ImageKind::Policy, ImageKind::Update];
        kinds.iter().any(|k| k.name() == kind)
            && self.kind.is_none_or(|k| k.name() == kind)
            && self
                .name
                .as_ref()
                .is_none_or(|n| e.involved_object.name.as_deref() == Some(n.as_str()))
            && (self.types.is_empty()
                || self
                    .types
                    .iter()
                    .any(|t| e.type_.as_deref() == Some(t.as_str())))
    }
}

/// An event's time (for the order) and its row.
fn event_row(e: &k8s_openapi::api::core::v1::Event, all_namespaces: bool) -> (String, Vec<String>) {
    let when = e
        .last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
        .unwrap_or_default();
    let object = format!(
        "{}/{}",
        e.involved_object.kind.clone().unwrap_or_default(),
        e.involved_object.name.clone().unwrap_or_default()
    );
    let mut row = vec![
        age(Some(&when)),
        e.type_.clone().unwrap_or_default(),
        e.reason.clone().unwrap_or_default(),
        object,
        e.message.clone().unwrap_or_default(),
    ];
    if all_namespaces {
        row.insert(0, e.metadata.namespace.clone().unwrap_or_default());
    }
    (when, row)
}

pub fn events(args: EventsArgs) -> Result<Exit> {
    use k8s_openapi::api::core::v1::Event;
    let filter = EventFilter::of(&args);
    crate::cmd::runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let api: Api<Event> = if args.all_namespaces {
            Api::all(k.client.clone())
        } else {
            Api::namespaced(k.client.clone(), &k.namespace)
        };
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| explain(e, "listing events"))?;
        // Each event shown, by uid: its resourceVersion (a repeated event
        // comes back with a new count and time).
        let mut shown: HashMap<String, String> = HashMap::new();
        let mut evs: Vec<(String, Vec<String>)> = Vec::new();
        for e in &list.items {
            shown.insert(
                e.metadata.uid.clone().unwrap_or_default(),
                e.metadata.resource_version.clone().unwrap_or_default(),
            );
            if filter.matches(e) {
                evs.push(event_row(e, args.all_namespaces));
            }
        }
        // Newest last.
        evs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut header = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
        if args.all_namespaces {
            header.insert(0, "NAMESPACE");
        }
        let mut headed = !evs.is_empty();
        if evs.is_empty() {
            eprintln!("No events found.");
        } else {
            let rows: Vec<Vec<String>> = evs.into_iter().map(|(_, r)| r).collect();
            out!("{}", table(&header, &rows));
        }
        if !args.watch {
            return Ok(Exit::Ok);
        }
        let mut stream = applied(kube::runtime::watcher(
            api,
            kube::runtime::watcher::Config::default(),
        ));
        while let Some(e) = stream.next().await {
            let e = e.map_err(|e| anyhow!("watching events: {e}"))?;
            let uid = e.metadata.uid.clone().unwrap_or_default();
            let version = e.metadata.resource_version.clone().unwrap_or_default();
            if shown.insert(uid, version.clone()).as_ref() == Some(&version) || !filter.matches(&e)
            {
                continue;
            }
            let (_, row) = event_row(&e, args.all_namespaces);
            let t = table(&header, &[row]);
            let mut lines = t.lines();
            let head = lines.next().unwrap_or_default();
            if !headed {
                headed = true;
                outln!("{head}");
            }
            for line in lines {
                outln!("{line}");
            }
        }
        Ok(Exit::Ok)
    })
}
