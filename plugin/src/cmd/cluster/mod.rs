//! The plugin against a cluster: `get`, `reconcile KIND NAME`, `suspend`,
//! `resume`, `events`, `tree update NAME`. Columns and messages read like
//! `flux get image ...`, and work the same when Flux's own controllers write
//! the status.

use super::Exit;
use crate::connect::{Kube, KubeArgs, age, explain};
use crate::output::{out, outln};
use crate::output::{printable, table, wide_table};
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
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The kinds the plugin works with, by the names users type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Repository,
    Policy,
    Update,
}

/// Every word that names a kind (compared without case), as `kubectl`
/// and `flux` users type them.
const KIND_WORDS: &[(&str, Kind)] = &[
    ("repository", Kind::Repository),
    ("repositories", Kind::Repository),
    ("repo", Kind::Repository),
    ("repos", Kind::Repository),
    ("imagerepository", Kind::Repository),
    ("imagerepositories", Kind::Repository),
    ("imgrepo", Kind::Repository),
    ("imagerepo", Kind::Repository),
    ("policy", Kind::Policy),
    ("policies", Kind::Policy),
    ("imagepolicy", Kind::Policy),
    ("imagepolicies", Kind::Policy),
    ("imgpol", Kind::Policy),
    ("imagepol", Kind::Policy),
    ("update", Kind::Update),
    ("updates", Kind::Update),
    ("imageupdateautomation", Kind::Update),
    ("imageupdateautomations", Kind::Update),
    ("automation", Kind::Update),
    ("automations", Kind::Update),
    ("iua", Kind::Update),
    ("imgupd", Kind::Update),
    ("imgauto", Kind::Update),
];

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        let lower = s.to_ascii_lowercase();
        if let Some((_, k)) = KIND_WORDS.iter().find(|(w, _)| *w == lower) {
            return Ok(*k);
        }
        match nearest(&lower, KIND_WORDS.iter().map(|(w, _)| *w)) {
            Some(w) => bail!(
                "{s:?} is not a kind here: did you mean {w}? (use repository, policy or update)"
            ),
            None => bail!("{s:?} is not a kind here: use repository, policy or update"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Repository => "ImageRepository",
            Kind::Policy => "ImagePolicy",
            Kind::Update => "ImageUpdateAutomation",
        }
    }

    /// The kind's plural, as messages say it.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Repository => "ImageRepositories",
            Kind::Policy => "ImagePolicies",
            Kind::Update => "ImageUpdateAutomations",
        }
    }

    /// The word of the kind in `KIND/NAME` (Flux's `get images all` rows).
    fn lower(self) -> &'static str {
        match self {
            Kind::Repository => "imagerepository",
            Kind::Policy => "imagepolicy",
            Kind::Update => "imageupdateautomation",
        }
    }

    pub fn resource(self) -> ApiResource {
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

/// The word of `candidates` nearest to `word` (at most two edits away, and
/// fewer than half its letters), for "did you mean".
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let distance = |a: &str, b: &str| -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    };
    candidates
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= 2 && *d * 2 < word.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The words after a command (`get`, `reconcile`, `suspend`, `resume`,
/// `tree`): `KIND [NAME...]`, kubectl's `KIND/NAME`, and Flux's forms with
/// `image` (or `images`) in front: `get image policy NAME`, `get images
/// all`, `reconcile image update NAME`, `suspend image repository NAME`.
pub struct Words {
    /// Flux's `image` word was there.
    pub image: bool,
    pub kind: Option<String>,
    pub names: Vec<String>,
}

impl Words {
    pub fn of(words: &[String]) -> Words {
        let (image, rest) = match words.split_first() {
            Some((first, rest)) if matches!(first.as_str(), "image" | "images") => (true, rest),
            _ => (false, words),
        };
        let mut rest = rest.to_vec();
        if let Some((k, n)) = rest.first().and_then(|w| w.split_once('/'))
            && Kind::parse(k).is_ok()
            && !n.is_empty()
        {
            let (k, n) = (k.to_string(), n.to_string());
            rest.splice(0..1, [k, n]);
        }
        let kind = (!rest.is_empty()).then(|| rest.remove(0));
        Words {
            image,
            kind,
            names: rest,
        }
    }

    /// `image ` when the user wrote Flux's form, to answer in it.
    fn prefix(&self) -> &'static str {
        if self.image { "image " } else { "" }
    }

    /// The kind and the one name of `COMMAND KIND NAME`, or a usage error
    /// (exit 2) that shows the form to use.
    pub fn kind_and_name(&self, command: &str, kinds: &str) -> (String, String) {
        let p = self.prefix();
        let Some(kind) = &self.kind else {
            super::usage_error(
                command,
                format!("give a kind and a name: {command} {p}{kinds} NAME"),
            );
        };
        match self.names.as_slice() {
            [name] => (kind.clone(), name.clone()),
            [] => super::usage_error(
                command,
                format!("give the name of the object: {command} {p}{kind} NAME"),
            ),
            [name, more @ ..] => super::usage_error(
                command,
                format!(
                    "one name at a time: {command} {p}{kind} {name} (then {command} {p}{kind} {})",
                    more.join(", ")
                ),
            ),
        }
    }
}

/// A named object of `kind` in `k`'s namespace. When it is not there, the
/// error says so and where an object of that name exists instead.
async fn get_named(k: &Kube, kind: Kind, name: &str) -> Result<DynamicObject> {
    match kind.api(k, false).get(name).await {
        Ok(o) => Ok(o),
        Err(e) => Err(not_found(k, &kind.resource(), kind.name(), name, e).await),
    }
}

/// The error of a request about `KIND NAME` in `k`'s namespace: when the
/// object does not exist, `KIND NS/NAME not found` and where it exists
/// instead; else as [`explain`] says it.
async fn not_found(
    k: &Kube,
    ar: &ApiResource,
    kind: &str,
    name: &str,
    e: kube::Error,
) -> anyhow::Error {
    let what = format!("{kind} {}/{name}", k.namespace);
    if !crate::connect::object_missing(&e) {
        return explain(e, &what);
    }
    let elsewhere = crate::connect::found_elsewhere(k, ar, name).await;
    anyhow!("{what} not found{elsewhere}")
}

/// `--status-selector COND=STATUS` (Flux's flag): objects whose condition
/// of that type (any case) has that status.
#[derive(Clone, Debug)]
struct StatusSelector {
    condition: String,
    status: String,
}

impl StatusSelector {
    fn parse(s: &str) -> StatusSelector {
        match s.split_once('=') {
            Some((c, st)) if !c.trim().is_empty() && !st.trim().is_empty() => StatusSelector {
                condition: c.trim().to_string(),
                status: st.trim().to_string(),
            },
            _ => super::usage_error(
                "get",
                format!("--status-selector {s:?}: give CONDITION=STATUS, such as ready=false"),
            ),
        }
    }

    fn matches(&self, o: &Value) -> bool {
        o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(&self.condition))
                    && c["status"]
                        .as_str()
                        .is_some_and(|st| st.eq_ignore_ascii_case(&self.status))
            })
    }
}

/// Removes `metadata.managedFields` of an object, or of each item of a
/// list (as `kubectl get -o yaml` hides them without
/// `--show-managed-fields`).
fn without_managed_fields(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            without_managed_fields(item);
        }
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
fn get_target(words: &Words) -> Result<(Vec<Kind>, Option<String>)> {
    let p = words.prefix();
    let form = if words.image {
        "get image repository|policy|update [NAME], or get images all"
    } else {
        "get repositories|policies|updates|all [NAME]"
    };
    let Some(kind) = &words.kind else {
        super::usage_error("get", format!("give a kind: {form}"));
    };
    let name = match words.names.as_slice() {
        [] => None,
        [name] => Some(name.clone()),
        [name, more @ ..] => super::usage_error(
            "get",
            format!(
                "one name at a time: get {p}{kind} {name} (then get {p}{kind} {}), or get {p}{kind} to list them all",
                more.join(", ")
            ),
        ),
    };
    if kind.eq_ignore_ascii_case("all") {
        if let Some(n) = name {
            super::usage_error(
                "get",
                format!(
                    "a name goes with one kind: get {p}repository {n}, get {p}policy {n} or get {p}update {n}"
                ),
            );
        }
        return Ok((vec![Kind::Repository, Kind::Policy, Kind::Update], None));
    }
    Ok((vec![Kind::parse(kind)?], name))
}

/// One row of `get`, as a table shows it; `KIND/NAME` in the first column
/// when several kinds are shown (Flux's `get images all`).
fn get_row(kind: Kind, v: &Value, wide: bool, all_namespaces: bool, prefixed: bool) -> Vec<String> {
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
    super::runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let mut items_all: Vec<Value> = Vec::new();
        // What was shown, by kind, namespace and name: its resourceVersion
        // (a watch prints only what changed since).
        let mut shown: HashMap<(Kind, String, String), String> = HashMap::new();
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
                kube::runtime::watcher(kind.api(&k, args.all_namespaces), wc)
                    .applied_objects_compat()
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
fn key(kind: Kind, v: &Value) -> (Kind, String, String) {
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

/// Stream adapter: the Events of a watch of Events.
trait AppliedEvents {
    fn applied_objects_events(
        self,
    ) -> futures::stream::BoxStream<
        'static,
        Result<k8s_openapi::api::core::v1::Event, kube::runtime::watcher::Error>,
    >;
}

impl<S> AppliedEvents for S
where
    S: futures::Stream<
            Item = Result<
                kube::runtime::watcher::Event<k8s_openapi::api::core::v1::Event>,
                kube::runtime::watcher::Error,
            >,
        > + Send
        + 'static,
{
    fn applied_objects_events(
        self,
    ) -> futures::stream::BoxStream<
        'static,
        Result<k8s_openapi::api::core::v1::Event, kube::runtime::watcher::Error>,
    > {
        use kube::runtime::WatchStreamExt;
        self.applied_objects().boxed()
    }
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
    #[arg(long, default_value = "2m", value_parser = super::duration_arg)]
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

pub fn reconcile(kind: &str, name: &str, t: ReconcileTarget) -> Result<Exit> {
    let kind = Kind::parse(kind)?;
    super::runtime()?.block_on(async {
        let k = t.kube.connect().await?;
        let api = kind.api(&k, false);
        let what = format!("{} {}/{name}", kind.name(), k.namespace);
        let o = get_named(&k, kind, name).await?;
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
            return Ok(Exit::Failed);
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
            return Ok(Exit::Failed);
        }
        outln!("{}", printable(&result));
        Ok(Exit::Ok)
    })
}

#[derive(clap::Args, Debug)]
pub struct SuspendArgs {
    /// repository or update, and the object's NAME (or --all); Flux's form
    /// too: image update NAME
    #[arg(value_name = "KIND [NAME]", required = true)]
    words: Vec<String>,
    /// Every object of the kind in the namespace
    #[arg(long)]
    all: bool,
    /// How long resume waits for the next reconciliation
    #[arg(long, default_value = "2m", value_parser = super::duration_arg)]
    timeout: Duration,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn suspend(args: SuspendArgs, suspend: bool) -> Result<Exit> {
    let command = if suspend { "suspend" } else { "resume" };
    let words = Words::of(&args.words);
    let p = words.prefix();
    let Some(kind_word) = words.kind.clone() else {
        super::usage_error(
            command,
            format!("give a kind and a name: {command} {p}repository|update NAME (or --all)"),
        );
    };
    let name = match (words.names.as_slice(), args.all) {
        ([], true) => None,
        ([name], false) => Some(name.clone()),
        ([], false) => super::usage_error(
            command,
            format!(
                "give the name of the object: {command} {p}{kind_word} NAME, or {command} {p}{kind_word} --all"
            ),
        ),
        (_, true) => super::usage_error(
            command,
            format!("--all goes without a name: {command} {p}{kind_word} --all"),
        ),
        ([name, more @ ..], false) => super::usage_error(
            command,
            format!(
                "one name at a time: {command} {p}{kind_word} {name} (then {command} {p}{kind_word} {}), or {command} {p}{kind_word} --all",
                more.join(", ")
            ),
        ),
    };
    let kind = Kind::parse(&kind_word)?;
    if kind == Kind::Policy {
        bail!(
            "policies are suspended through their repository or automation: {command} repository NAME or {command} update NAME"
        );
    }
    super::runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let api = kind.api(&k, false);
        let names: Vec<String> = match &name {
            Some(n) => vec![n.clone()],
            None => api
                .list(&ListParams::default())
                .await
                .map_err(|e| explain(e, &format!("listing {}", kind.plural())))?
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
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                return Err(not_found(&k, &kind.resource(), kind.name(), &name, e).await);
            }
            if suspend {
                outln!("✔ {what} suspended");
                continue;
            }
            eprintln!("► resumed {what}, waiting for it to reconcile");
            match handled(&api, &name, &value, args.timeout, &what).await {
                Ok(v) => {
                    let (ready, message) = ready_of(&v);
                    if ready == "True" {
                        outln!("✔ {what} resumed: {}", printable(&message));
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
        Ok(if failed { Exit::Failed } else { Exit::Ok })
    })
}

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
    kind: Option<Kind>,
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
                    super::usage_error(
                        "events",
                        format!("--for {f:?}: give KIND/NAME, such as ImagePolicy/web"),
                    );
                };
                match Kind::parse(k) {
                    Ok(kind) => (Some(kind), Some(n.to_string())),
                    Err(e) => super::usage_error("events", format!("--for {f:?}: {e}")),
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
                _ => super::usage_error(
                    "events",
                    format!("--types {t:?}: the types are Normal and Warning"),
                ),
            })
            .collect();
        EventFilter { kind, name, types }
    }

    fn matches(&self, e: &k8s_openapi::api::core::v1::Event) -> bool {
        let kind = e.involved_object.kind.as_deref().unwrap_or("");
        let kinds = [Kind::Repository, Kind::Policy, Kind::Update];
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
    super::runtime()?.block_on(async {
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
        let mut stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default())
            .applied_objects_events()
            .boxed();
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

#[derive(clap::Args, Debug)]
pub struct TreeArgs {
    /// update, and the automation's NAME
    #[arg(value_name = "KIND NAME", required = true)]
    words: Vec<String>,
    /// Output format: text, or json (Flux's `tree -o json` shape, with each object's Ready state)
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: crate::output::TextOrJson,
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

/// An object of a tree and what it depends on.
struct Node {
    group: &'static str,
    kind: &'static str,
    namespace: String,
    name: String,
    /// Its Ready status and message; `None` when it was not found, or
    /// could not be read (the message says why).
    ready: Option<String>,
    message: String,
    /// A GitRepository's URL.
    url: Option<String>,
    children: Vec<Node>,
}

impl Node {
    fn new(group: &'static str, kind: &'static str, namespace: &str, name: &str) -> Node {
        Node {
            group,
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            ready: None,
            message: "not found".into(),
            url: None,
            children: Vec::new(),
        }
    }

    fn with_state(mut self, v: &Value) -> Node {
        let (r, m) = ready_of(v);
        self.ready = Some(r);
        self.message = m;
        self
    }

    /// The node as Flux's `tree -o json` writes it (`resource` with
    /// Namespace, Name and GroupKind; `resources` for what it depends on),
    /// with its Ready state.
    fn json(&self) -> Value {
        let mut v = serde_json::json!({
            "resource": {
                "Namespace": self.namespace,
                "Name": self.name,
                "GroupKind": {"Group": self.group, "Kind": self.kind}
            },
            "ready": self.ready,
            "message": self.message,
        });
        if let Some(u) = &self.url {
            v["url"] = Value::String(u.clone());
        }
        if !self.children.is_empty() {
            v["resources"] = Value::Array(self.children.iter().map(Node::json).collect());
        }
        v
    }

    fn line(&self) -> String {
        let mark = match self.ready.as_deref() {
            Some(r) => mark(r),
            None if self.message == "not found" => "✗",
            None => "?",
        };
        let url = self
            .url
            .as_ref()
            .map(|u| format!("  {u}"))
            .unwrap_or_default();
        format!(
            "{mark} {}/{}/{}{url}  {}",
            self.kind,
            self.namespace,
            self.name,
            printable(&self.message)
        )
    }
}

const IMAGE_GROUP: &str = "image.toolkit.fluxcd.io";
const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";

pub fn tree(args: TreeArgs) -> Result<Exit> {
    let words = Words::of(&args.words);
    let (kind, name) = words.kind_and_name("tree", "update");
    if Kind::parse(&kind)? != Kind::Update {
        bail!("tree shows an automation: tree update NAME");
    }
    super::runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let ns = k.namespace.clone();
        let autos: Api<ImageUpdateAutomation> = Api::namespaced(k.client.clone(), &ns);
        let what = format!("ImageUpdateAutomation {ns}/{name}");
        let a = match autos.get(&name).await {
            Ok(a) => a,
            Err(e) => {
                return Err(
                    not_found(&k, &Kind::Update.resource(), Kind::Update.name(), &name, e).await,
                );
            }
        };
        let av = serde_json::to_value(&a)?;
        let mut root = Node::new(IMAGE_GROUP, "ImageUpdateAutomation", &ns, &name).with_state(&av);
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
        let source = Node::new(SOURCE_GROUP, "GitRepository", &sns, &sname);
        root.children.push(match sources.get_opt(&sname).await {
            Ok(Some(s)) => {
                let sv = serde_json::to_value(&s)?;
                let mut n = source.with_state(&sv);
                n.url = Some(sv["spec"]["url"].as_str().unwrap_or("").to_string());
                n
            }
            Ok(None) => source,
            Err(e) => Node {
                message: explain(e, "reading it").to_string(),
                ..source
            },
        });
        let policies: Api<ImagePolicy> = Api::namespaced(k.client.clone(), &ns);
        let list = policies
            .list(&ListParams::default())
            .await
            .map_err(|e| explain(e, "listing ImagePolicies"))?
            .items;
        let selected = automation::api::plan::selected_policies(&a.spec, &ns, &list)
            .map_err(|e| anyhow!("{what}: {e}"))?;
        for p in selected {
            let pv = serde_json::to_value(p)?;
            let mut pn = Node::new(IMAGE_GROUP, "ImagePolicy", &ns, &p.name_any()).with_state(&pv);
            let (rns, rname) = automation::api::plan::repository_of(p);
            let repos: Api<DynamicObject> = Api::namespaced_with(
                k.client.clone(),
                &rns,
                &ApiResource::erase::<ImageRepository>(&()),
            );
            let rn = Node::new(IMAGE_GROUP, "ImageRepository", &rns, &rname);
            pn.children.push(match repos.get_opt(&rname).await {
                Ok(Some(rp)) => rn.with_state(&serde_json::to_value(&rp)?),
                Ok(None) => rn,
                Err(e) => Node {
                    message: explain(e, "reading it").to_string(),
                    ..rn
                },
            });
            root.children.push(pn);
        }
        if args.output == crate::output::TextOrJson::Json {
            outln!("{}", serde_json::to_string_pretty(&root.json())?);
            return Ok(Exit::Ok);
        }
        let mut text = format!("{}\n", root.line());
        let n = root.children.len();
        for (i, child) in root.children.iter().enumerate() {
            // The GitRepository always has policies (or a note) after it.
            let last = i + 1 == n && n > 1;
            text.push_str(&format!(
                "{} {}\n",
                if last { "└──" } else { "├──" },
                child.line()
            ));
            for grandchild in &child.children {
                let prefix = if last {
                    "    └──"
                } else {
                    "│   └──"
                };
                text.push_str(&format!("{prefix} {}\n", grandchild.line()));
            }
        }
        if n == 1 {
            text.push_str(&format!("└── (no ImagePolicy of {ns} is selected)\n"));
        }
        out!("{text}");
        Ok(Exit::Ok)
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
