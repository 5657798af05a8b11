//! The plugin against a cluster: `get`, `reconcile KIND NAME`, `suspend`,
//! `resume`, `events`, `tree update NAME`. Columns and messages read like
//! `flux get image ...`, and work the same when Flux's own controllers write
//! the status.

use crate::cmd::Exit;
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

mod events;
mod get;
mod reconcile;
mod suspend;
mod tree;

pub use events::{EventsArgs, events};
pub use get::{GetArgs, get};
pub use reconcile::{ReconcileTarget, reconcile};
pub use suspend::{SuspendArgs, suspend};
pub use tree::{TreeArgs, tree};

/// The kinds the plugin works with, by the names users type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Repository,
    Policy,
    Update,
}

/// Every word that names a kind (compared without case), as `kubectl`
/// and `flux` users type them.
const KIND_WORDS: &[(&str, ImageKind)] = &[
    ("repository", ImageKind::Repository),
    ("repositories", ImageKind::Repository),
    ("repo", ImageKind::Repository),
    ("repos", ImageKind::Repository),
    ("imagerepository", ImageKind::Repository),
    ("imagerepositories", ImageKind::Repository),
    ("imgrepo", ImageKind::Repository),
    ("imagerepo", ImageKind::Repository),
    ("policy", ImageKind::Policy),
    ("policies", ImageKind::Policy),
    ("imagepolicy", ImageKind::Policy),
    ("imagepolicies", ImageKind::Policy),
    ("imgpol", ImageKind::Policy),
    ("imagepol", ImageKind::Policy),
    ("update", ImageKind::Update),
    ("updates", ImageKind::Update),
    ("imageupdateautomation", ImageKind::Update),
    ("imageupdateautomations", ImageKind::Update),
    ("automation", ImageKind::Update),
    ("automations", ImageKind::Update),
    ("iua", ImageKind::Update),
    ("imgupd", ImageKind::Update),
    ("imgauto", ImageKind::Update),
];

impl ImageKind {
    pub fn parse(s: &str) -> Result<ImageKind> {
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
            ImageKind::Repository => "ImageRepository",
            ImageKind::Policy => "ImagePolicy",
            ImageKind::Update => "ImageUpdateAutomation",
        }
    }

    /// The kind's plural, as messages say it.
    pub fn plural(self) -> &'static str {
        match self {
            ImageKind::Repository => "ImageRepositories",
            ImageKind::Policy => "ImagePolicies",
            ImageKind::Update => "ImageUpdateAutomations",
        }
    }

    /// The word of the kind in `KIND/NAME` (Flux's `get images all` rows).
    fn lower(self) -> &'static str {
        match self {
            ImageKind::Repository => "imagerepository",
            ImageKind::Policy => "imagepolicy",
            ImageKind::Update => "imageupdateautomation",
        }
    }

    pub fn resource(self) -> ApiResource {
        match self {
            ImageKind::Repository => ApiResource::erase::<ImageRepository>(&()),
            ImageKind::Policy => ApiResource::erase::<ImagePolicy>(&()),
            ImageKind::Update => ApiResource::erase::<ImageUpdateAutomation>(&()),
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
            ImageKind::Repository => {
                vec!["NAME", "LAST SCAN", "TAGS", "SUSPENDED", "READY", "MESSAGE"]
            }
            ImageKind::Policy => vec!["NAME", "LATEST IMAGE", "READY", "MESSAGE"],
            ImageKind::Update => vec![
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
                ImageKind::Repository => h.insert(1, "IMAGE"),
                ImageKind::Policy => h.insert(1, "REPOSITORY"),
                ImageKind::Update => {
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
            && ImageKind::parse(k).is_ok()
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
            crate::cmd::usage_error(
                command,
                format!("give a kind and a name: {command} {p}{kinds} NAME"),
            );
        };
        match self.names.as_slice() {
            [name] => (kind.clone(), name.clone()),
            [] => crate::cmd::usage_error(
                command,
                format!("give the name of the object: {command} {p}{kind} NAME"),
            ),
            [name, more @ ..] => crate::cmd::usage_error(
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
async fn get_named(k: &Kube, kind: ImageKind, name: &str) -> Result<DynamicObject> {
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
            _ => crate::cmd::usage_error(
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

fn row(kind: ImageKind, o: &Value, wide: bool, namespaced: bool) -> Vec<String> {
    let s = &o["status"];
    let spec = &o["spec"];
    let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
    let (ready, message) = ready_of(o);
    let suspended = spec["suspend"].as_bool().unwrap_or(false).to_string();
    let mut r = match kind {
        ImageKind::Repository => vec![
            name,
            age(s["lastScanResult"]["scanTime"].as_str()),
            s["lastScanResult"]["tagCount"]
                .as_i64()
                .map_or("-".into(), |n| n.to_string()),
            suspended,
            ready,
            message,
        ],
        ImageKind::Policy => vec![
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
        ImageKind::Update => vec![
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
            ImageKind::Repository => spec["image"].as_str().unwrap_or("").to_string(),
            ImageKind::Policy => spec["imageRepositoryRef"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            ImageKind::Update => spec["sourceRef"]["name"].as_str().unwrap_or("").to_string(),
        };
        r.insert(1, extra);
        if kind == ImageKind::Update {
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

/// The objects of every event of a watch, boxed (the runtime's
/// `applied_objects`).
fn applied<K: Send + 'static>(
    events: impl futures::Stream<
        Item = Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>,
    > + Send
    + 'static,
) -> futures::stream::BoxStream<'static, Result<K, kube::runtime::watcher::Error>> {
    use kube::runtime::WatchStreamExt;
    events.applied_objects().boxed()
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

/// The names of a kind's objects in the namespace (for completion); none
/// when the cluster does not answer.
pub async fn names(k: &Kube, kind: ImageKind) -> Vec<String> {
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
        let r = row(ImageKind::Update, &o, false, false);
        assert_eq!(r[2], "0123456789aé");
        let o = serde_json::json!({"metadata": {"name": "fleet"}, "spec": {}});
        assert_eq!(row(ImageKind::Update, &o, false, false)[2], "-");
    }
}
