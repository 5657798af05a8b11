//! The plugin against a cluster: `get`, `reconcile KIND NAME`, `suspend`,
//! `resume`, `events`, `tree update NAME`. Columns and messages read like
//! `flux get image ...`, and work the same when Flux's own controllers write
//! the status.

use crate::cli::Outcome;
use crate::connect::{Kube, KubeArgs, age, explain};
use crate::output::{printable, table};
use anyhow::{Result, anyhow, bail};
use automation::api::{
    GitRepository, ImagePolicy, ImageRepository, ImageUpdateAutomation,
    RECONCILE_REQUEST_ANNOTATION, ResourceExt,
};
use clap::ValueEnum;
use futures::StreamExt;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The kinds the plugin works with, by the names users type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Repository,
    Policy,
    Update,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "repository" | "repositories" | "repo" | "imagerepository" | "imagerepositories"
            | "imgrepo" | "imagerepo" => Kind::Repository,
            "policy" | "policies" | "imagepolicy" | "imagepolicies" | "imgpol" | "imagepol" => {
                Kind::Policy
            }
            "update"
            | "updates"
            | "imageupdateautomation"
            | "imageupdateautomations"
            | "automation"
            | "automations"
            | "iua"
            | "imgupd"
            | "imgauto" => Kind::Update,
            other => bail!("{other:?} is not a kind here: use repository, policy or update"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Repository => "ImageRepository",
            Kind::Policy => "ImagePolicy",
            Kind::Update => "ImageUpdateAutomation",
        }
    }

    fn resource(self) -> ApiResource {
        match self {
            Kind::Repository => ApiResource::erase::<ImageRepository>(&()),
            Kind::Policy => ApiResource::erase::<ImagePolicy>(&()),
            Kind::Update => ApiResource::erase::<ImageUpdateAutomation>(&()),
        }
    }

    fn api(self, k: &Kube, all: bool) -> Api<DynamicObject> {
        let ar = self.resource();
        if all {
            Api::all_with(k.client.clone(), &ar)
        } else {
            Api::namespaced_with(k.client.clone(), &k.namespace, &ar)
        }
    }

    fn header(self, wide: bool) -> Vec<&'static str> {
        let mut h = match self {
            Kind::Repository => vec!["NAME", "LAST SCAN", "TAGS", "SUSPENDED", "READY", "MESSAGE"],
            Kind::Policy => vec!["NAME", "LATEST IMAGE", "READY", "MESSAGE"],
            Kind::Update => vec![
                "NAME",
                "LAST RUN",
                "LAST PUSH",
                "SUSPENDED",
                "READY",
                "MESSAGE",
            ],
        };
        if wide {
            match self {
                Kind::Repository => h.insert(1, "IMAGE"),
                Kind::Policy => h.insert(1, "REPOSITORY"),
                Kind::Update => {
                    h.insert(1, "SOURCE");
                    h.push("PULL REQUEST");
                }
            }
        }
        h
    }
}

fn ready_of(o: &Value) -> (String, String) {
    let conds = o["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match conds.iter().find(|c| c["type"] == "Ready") {
        Some(c) => (
            c["status"].as_str().unwrap_or("Unknown").to_string(),
            c["message"].as_str().unwrap_or("").to_string(),
        ),
        None => ("Unknown".into(), "waiting to be reconciled".into()),
    }
}

/// The pull request of an automation (`imageauto.dev/pull-request`): its
/// URL, from the `PullRequest` condition the controller writes, or why the
/// last call failed.
fn pull_request_of(o: &Value) -> String {
    let conds = o["status"]["conditions"].as_array();
    match conds.and_then(|c| c.iter().find(|c| c["type"] == "PullRequest")) {
        Some(c) if c["status"] == "True" => c["message"].as_str().unwrap_or("-").to_string(),
        Some(c) => {
            let m = c["message"].as_str().unwrap_or("");
            let first: String = m.lines().next().unwrap_or("").chars().take(80).collect();
            format!("failed: {first}")
        }
        None => "-".to_string(),
    }
}

fn row(kind: Kind, o: &Value, wide: bool, namespaced: bool) -> Vec<String> {
    let s = &o["status"];
    let spec = &o["spec"];
    let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
    let (ready, message) = ready_of(o);
    let suspended = spec["suspend"].as_bool().unwrap_or(false).to_string();
    let mut r = match kind {
        Kind::Repository => vec![
            name,
            age(s["lastScanResult"]["scanTime"].as_str()),
            s["lastScanResult"]["tagCount"]
                .as_i64()
                .map_or("-".into(), |n| n.to_string()),
            suspended,
            ready,
            message,
        ],
        Kind::Policy => vec![
            name,
            match (
                s["latestRef"]["name"].as_str(),
                s["latestRef"]["tag"].as_str(),
            ) {
                (Some(n), Some(t)) => format!("{n}:{t}"),
                _ => "-".into(),
            },
            ready,
            message,
        ],
        Kind::Update => vec![
            name,
            age(s["lastAutomationRunTime"].as_str()),
            s["lastPushCommit"]
                .as_str()
                .map_or("-".into(), |c| c.chars().take(12).collect()),
            suspended,
            ready,
            message,
        ],
    };
    if wide {
        let extra = match kind {
            Kind::Repository => spec["image"].as_str().unwrap_or("").to_string(),
            Kind::Policy => spec["imageRepositoryRef"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            Kind::Update => spec["sourceRef"]["name"].as_str().unwrap_or("").to_string(),
        };
        r.insert(1, extra);
        if kind == Kind::Update {
            r.push(pull_request_of(o));
        }
    }
    if namespaced {
        r.insert(
            0,
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    r
}

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
    /// repositories, policies, updates, or all
    #[arg(value_name = "KIND")]
    kind: String,
    /// One object by name
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Every namespace
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: GetOutput,
    /// After listing, print each change as it happens
    #[arg(short = 'w', long)]
    watch: bool,
    #[command(flatten)]
    kube: KubeArgs,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    automation::registry::tls::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the runtime: {e}"))
}

pub fn get(args: GetArgs) -> Result<Outcome> {
    let kinds = if args.kind == "all" {
        vec![Kind::Repository, Kind::Policy, Kind::Update]
    } else {
        vec![Kind::parse(&args.kind)?]
    };
    if args.name.is_some() && kinds.len() > 1 {
        bail!("a name goes with one kind: get repository NAME, get policy NAME or get update NAME");
    }
    runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let mut items_all = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let api = kind.api(&k, args.all_namespaces);
            let items =
                match &args.name {
                    Some(n) => vec![api.get(n).await.map_err(|e| {
                        explain(e, &format!("{} {}/{n}", kind.name(), k.namespace))
                    })?],
                    None => {
                        api.list(&ListParams::default())
                            .await
                            .map_err(|e| explain(e, &format!("listing {}s", kind.name())))?
                            .items
                    }
                };
            match args.output {
                GetOutput::Json | GetOutput::Yaml => items_all.extend(items),
                GetOutput::Table | GetOutput::Wide => {
                    let wide = args.output == GetOutput::Wide;
                    if kinds.len() > 1 {
                        if i > 0 {
                            println!();
                        }
                        println!("{}:", kind.name());
                    }
                    if items.is_empty() {
                        eprintln!(
                            "No {}s found{}.",
                            kind.name(),
                            if args.all_namespaces {
                                String::new()
                            } else {
                                format!(" in namespace {}", k.namespace)
                            }
                        );
                        continue;
                    }
                    let mut header = kind.header(wide);
                    if args.all_namespaces {
                        header.insert(0, "NAMESPACE");
                    }
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|o| {
                            let v = serde_json::to_value(o).unwrap_or_default();
                            row(*kind, &v, wide, args.all_namespaces)
                        })
                        .collect();
                    print!("{}", table(&header, &rows));
                }
            }
        }
        match args.output {
            GetOutput::Json | GetOutput::Yaml => {
                let list = if args.name.is_some() && items_all.len() == 1 {
                    serde_json::to_value(&items_all[0])?
                } else {
                    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items_all})
                };
                if args.output == GetOutput::Json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    print!("{}", serde_norway::to_string(&list)?);
                }
            }
            _ => {}
        }
        if args.watch {
            let kind = kinds[0];
            let api = kind.api(&k, args.all_namespaces);
            let mut wc = kube::runtime::watcher::Config::default();
            if let Some(n) = &args.name {
                wc = wc.fields(&format!("metadata.name={n}"));
            }
            let wide = args.output == GetOutput::Wide;
            let mut stream = kube::runtime::watcher(api, wc)
                .applied_objects_compat()
                .boxed();
            let mut first = true;
            while let Some(ev) = stream.next().await {
                let o = ev.map_err(|e| anyhow!("watching {}s: {e}", kind.name()))?;
                if first {
                    // The listing above showed the current state.
                    first = false;
                    continue;
                }
                let v = serde_json::to_value(&o)?;
                match args.output {
                    GetOutput::Json => println!("{}", serde_json::to_string(&v)?),
                    GetOutput::Yaml => print!("---\n{}", serde_norway::to_string(&v)?),
                    _ => {
                        let r = row(kind, &v, wide, args.all_namespaces);
                        let t = table(&vec![""; r.len()], &[r]);
                        print!(
                            "{}",
                            t.lines()
                                .nth(1)
                                .map(|l| format!("{l}\n"))
                                .unwrap_or_default()
                        );
                    }
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
        }
        Ok(Outcome::Ok)
    })
}

/// Stream adapter: the objects of every event (the runtime's
/// `applied_objects`, which needs the `WatchStreamExt` trait).
trait Applied {
    fn applied_objects_compat(
        self,
    ) -> futures::stream::BoxStream<'static, Result<DynamicObject, kube::runtime::watcher::Error>>;
}

impl<S> Applied for S
where
    S: futures::Stream<
            Item = Result<
                kube::runtime::watcher::Event<DynamicObject>,
                kube::runtime::watcher::Error,
            >,
        > + Send
        + 'static,
{
    fn applied_objects_compat(
        self,
    ) -> futures::stream::BoxStream<'static, Result<DynamicObject, kube::runtime::watcher::Error>>
    {
        use kube::runtime::WatchStreamExt;
        self.applied_objects().boxed()
    }
}

#[derive(clap::Args, Debug)]
pub struct ReconcileTarget {
    /// How long to wait for the controller
    #[arg(long, default_value = "2m", value_parser = crate::cli::duration_arg)]
    pub timeout: Duration,
    /// Reconcile the update's GitRepository first (requested of Flux's source controller)
    #[arg(long)]
    pub with_source: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// A reconcile request: the annotation Flux's controllers watch.
fn request_value() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn annotate(api: &Api<DynamicObject>, name: &str, value: &str) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "metadata": {"annotations": {RECONCILE_REQUEST_ANNOTATION: value}}
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Waits until the controller handled `value` (`status.lastHandledReconcileAt`).
async fn handled(
    api: &Api<DynamicObject>,
    name: &str,
    value: &str,
    timeout: Duration,
    what: &str,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let o = api.get(name).await.map_err(|e| explain(e, what))?;
        let v = serde_json::to_value(&o)?;
        if v["status"]["lastHandledReconcileAt"] == value {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not reconciled within {}: is the controller running? (kubectl imageauto version shows it)",
                crate::connect::human_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub fn reconcile(kind: &str, name: &str, t: ReconcileTarget) -> Result<Outcome> {
    let kind = Kind::parse(kind)?;
    runtime()?.block_on(async {
        let k = t.kube.connect().await?;
        let api = kind.api(&k, false);
        let what = format!("{} {}/{name}", kind.name(), k.namespace);
        let o = api.get(name).await.map_err(|e| explain(e, &what))?;
        let v = serde_json::to_value(&o)?;
        // Flux's controllers and imageauto's leave a suspended object alone,
        // reconcile requests included: waiting for one would only time out.
        if v["spec"]["suspend"] == true {
            let resume = match kind {
                Kind::Repository => format!("kubectl imageauto resume repository {name}"),
                Kind::Update => format!("kubectl imageauto resume update {name}"),
                Kind::Policy => "set its spec.suspend to false".into(),
            };
            eprintln!("✗ {what} is suspended: {resume} to reconcile it");
            return Ok(Outcome::Failed);
        }
        if t.with_source && kind == Kind::Update {
            let src = v["spec"]["sourceRef"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let sns = v["spec"]["sourceRef"]["namespace"]
                .as_str()
                .unwrap_or(&k.namespace)
                .to_string();
            let sapi: Api<DynamicObject> = Api::namespaced_with(
                k.client.clone(),
                &sns,
                &ApiResource::erase::<GitRepository>(&()),
            );
            let value = request_value();
            annotate(&sapi, &src, &value)
                .await
                .map_err(|e| explain(e, &format!("GitRepository {sns}/{src}")))?;
            eprintln!("► requested GitRepository {sns}/{src}");
        }
        // A push shows in lastPushCommit (Flux's Ready message stays
        // "repository up-to-date"), whoever's controller made it.
        let pushed_before = v["status"]["lastPushCommit"].as_str().map(str::to_string);
        let value = request_value();
        annotate(&api, name, &value)
            .await
            .map_err(|e| explain(e, &what))?;
        eprintln!("► reconciling {what}");
        let v = handled(&api, name, &value, t.timeout, &what).await?;
        let (ready, message) = ready_of(&v);
        let s = &v["status"];
        let result = match kind {
            Kind::Repository => format!(
                "✔ scan fetched {} tags",
                s["lastScanResult"]["tagCount"].as_i64().unwrap_or(0)
            ),
            Kind::Policy => format!(
                "✔ latest image {}:{}",
                s["latestRef"]["name"].as_str().unwrap_or("?"),
                s["latestRef"]["tag"].as_str().unwrap_or("?")
            ),
            Kind::Update => match s["lastPushCommit"].as_str() {
                Some(c) if pushed_before.as_deref() != Some(c) => format!("✔ pushed commit {c}"),
                Some(c) => format!("✔ nothing to do: {message} (last pushed commit {c})"),
                None => format!("✔ nothing to do: {message}"),
            },
        };
        if ready != "True" {
            eprintln!("✗ {what} is not ready: {}", printable(&message));
            return Ok(Outcome::Failed);
        }
        println!("{}", printable(&result));
        Ok(Outcome::Ok)
    })
}

#[derive(clap::Args, Debug)]
pub struct SuspendArgs {
    /// repository or update
    #[arg(value_name = "KIND")]
    kind: String,
    /// The object (or --all)
    #[arg(value_name = "NAME", required_unless_present = "all")]
    name: Option<String>,
    /// Every object of the kind in the namespace
    #[arg(long, conflicts_with = "name")]
    all: bool,
    /// How long resume waits for the next reconciliation
    #[arg(long, default_value = "2m", value_parser = crate::cli::duration_arg)]
    timeout: Duration,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn suspend(args: SuspendArgs, suspend: bool) -> Result<Outcome> {
    let kind = Kind::parse(&args.kind)?;
    if kind == Kind::Policy {
        bail!(
            "policies are suspended through their repository or automation: suspend repository NAME or suspend update NAME"
        );
    }
    runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let api = kind.api(&k, false);
        let names: Vec<String> = match &args.name {
            Some(n) => vec![n.clone()],
            None => api
                .list(&ListParams::default())
                .await
                .map_err(|e| explain(e, &format!("listing {}s", kind.name())))?
                .items
                .iter()
                .map(|o| o.name_any())
                .collect(),
        };
        let mut failed = false;
        for name in names {
            let what = format!("{} {}/{name}", kind.name(), k.namespace);
            let mut patch = serde_json::json!({"spec": {"suspend": suspend}});
            let value = request_value();
            if !suspend {
                // Resumed objects reconcile at once, as Flux's do.
                patch["metadata"] =
                    serde_json::json!({"annotations": {RECONCILE_REQUEST_ANNOTATION: value}});
            }
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| explain(e, &what))?;
            if suspend {
                println!("✔ {what} suspended");
                continue;
            }
            eprintln!("► resumed {what}, waiting for it to reconcile");
            match handled(&api, &name, &value, args.timeout, &what).await {
                Ok(v) => {
                    let (ready, message) = ready_of(&v);
                    if ready == "True" {
                        println!("✔ {what} resumed: {}", printable(&message));
                    } else {
                        eprintln!("✗ {what} resumed, not ready: {}", printable(&message));
                        failed = true;
                    }
                }
                Err(e) => {
                    eprintln!("✗ {e}");
                    failed = true;
                }
            }
        }
        Ok(if failed { Outcome::Failed } else { Outcome::Ok })
    })
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Only the events of this object
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Every namespace
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn events(args: EventsArgs) -> Result<Outcome> {
    use k8s_openapi::api::core::v1::Event;
    runtime()?.block_on(async {
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
        let kinds = ["ImageRepository", "ImagePolicy", "ImageUpdateAutomation"];
        let mut evs: Vec<(String, Vec<String>)> = list
            .items
            .into_iter()
            .filter(|e| {
                kinds.contains(&e.involved_object.kind.as_deref().unwrap_or(""))
                    && args
                        .name
                        .as_ref()
                        .is_none_or(|n| e.involved_object.name.as_deref() == Some(n.as_str()))
            })
            .map(|e| {
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
                if args.all_namespaces {
                    row.insert(0, e.metadata.namespace.clone().unwrap_or_default());
                }
                (when, row)
            })
            .collect();
        // Newest last.
        evs.sort_by(|a, b| a.0.cmp(&b.0));
        if evs.is_empty() {
            eprintln!("No events found.");
            return Ok(Outcome::Ok);
        }
        let mut header = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
        if args.all_namespaces {
            header.insert(0, "NAMESPACE");
        }
        let rows: Vec<Vec<String>> = evs.into_iter().map(|(_, r)| r).collect();
        print!("{}", table(&header, &rows));
        Ok(Outcome::Ok)
    })
}

#[derive(clap::Args, Debug)]
pub struct TreeArgs {
    /// update
    #[arg(value_name = "KIND")]
    kind: String,
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    kube: KubeArgs,
}

fn mark(ready: &str) -> &'static str {
    match ready {
        "True" => "✔",
        "False" => "✗",
        _ => "…",
    }
}

pub fn tree(args: TreeArgs) -> Result<Outcome> {
    if Kind::parse(&args.kind)? != Kind::Update {
        bail!("tree shows an automation: tree update NAME");
    }
    runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let ns = k.namespace.clone();
        let autos: Api<ImageUpdateAutomation> = Api::namespaced(k.client.clone(), &ns);
        let what = format!("ImageUpdateAutomation {ns}/{}", args.name);
        let a = autos.get(&args.name).await.map_err(|e| explain(e, &what))?;
        let av = serde_json::to_value(&a)?;
        let (r, m) = ready_of(&av);
        println!(
            "{} ImageUpdateAutomation/{ns}/{}  {}",
            mark(&r),
            args.name,
            printable(&m)
        );
        let sns = a
            .spec
            .source_ref
            .namespace
            .clone()
            .unwrap_or_else(|| ns.clone());
        let sname = a.spec.source_ref.name.clone();
        let sources: Api<DynamicObject> = Api::namespaced_with(
            k.client.clone(),
            &sns,
            &ApiResource::erase::<GitRepository>(&()),
        );
        match sources.get_opt(&sname).await {
            Ok(Some(s)) => {
                let sv = serde_json::to_value(&s)?;
                let (r, m) = ready_of(&sv);
                println!(
                    "├── {} GitRepository/{sns}/{sname}  {}  {}",
                    mark(&r),
                    sv["spec"]["url"].as_str().unwrap_or(""),
                    printable(&m)
                );
            }
            Ok(None) => println!("├── ✗ GitRepository/{sns}/{sname}  not found"),
            Err(e) => println!(
                "├── ? GitRepository/{sns}/{sname}  {}",
                explain(e, "reading it")
            ),
        }
        let policies: Api<ImagePolicy> = Api::namespaced(k.client.clone(), &ns);
        let list = policies
            .list(&ListParams::default())
            .await
            .map_err(|e| explain(e, "listing ImagePolicies"))?
            .items;
        let selected = automation::api::plan::selected_policies(&a.spec, &ns, &list)
            .map_err(|e| anyhow!("{what}: {e}"))?;
        let n = selected.len();
        for (i, p) in selected.into_iter().enumerate() {
            let last = i + 1 == n;
            let pv = serde_json::to_value(p)?;
            let (r, m) = ready_of(&pv);
            println!(
                "{} {} ImagePolicy/{ns}/{}  {}",
                if last { "└──" } else { "├──" },
                mark(&r),
                p.name_any(),
                printable(&m)
            );
            let (rns, rname) = automation::api::plan::repository_of(p);
            let repos: Api<DynamicObject> = Api::namespaced_with(
                k.client.clone(),
                &rns,
                &ApiResource::erase::<ImageRepository>(&()),
            );
            let prefix = if last {
                "    └──"
            } else {
                "│   └──"
            };
            match repos.get_opt(&rname).await {
                Ok(Some(rp)) => {
                    let rv = serde_json::to_value(&rp)?;
                    let (r, m) = ready_of(&rv);
                    println!(
                        "{prefix} {} ImageRepository/{rns}/{rname}  {}",
                        mark(&r),
                        printable(&m)
                    );
                }
                Ok(None) => println!("{prefix} ✗ ImageRepository/{rns}/{rname}  not found"),
                Err(e) => println!(
                    "{prefix} ? ImageRepository/{rns}/{rname}  {}",
                    explain(e, "reading it")
                ),
            }
        }
        if n == 0 {
            println!("└── (no ImagePolicy of {ns} is selected)");
        }
        Ok(Outcome::Ok)
    })
}

/// The names of a kind's objects in the namespace (for completion); none
/// when the cluster does not answer.
pub async fn names(k: &Kube, kind: Kind) -> Vec<String> {
    kind.api(k, false)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|o| o.name_any()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_column_is_cut_at_a_character() {
        // Anyone who may write the status may write any string there.
        let o = serde_json::json!({
            "metadata": {"name": "fleet"},
            "spec": {},
            "status": {"lastPushCommit": "0123456789aé€xyz"}
        });
        let r = row(Kind::Update, &o, false, false);
        assert_eq!(r[2], "0123456789aé");
        let o = serde_json::json!({"metadata": {"name": "fleet"}, "spec": {}});
        assert_eq!(row(Kind::Update, &o, false, false)[2], "-");
    }
}
