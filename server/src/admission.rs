//! The admission webhook inside `serve`: the view its rules read (policies,
//! repositories, namespace labels, and the published marker index), built
//! from the process's shared watches and rebuilt on change, never fetched
//! per request; the workloads that make others (Deployments, ReplicaSets,
//! StatefulSets, DaemonSets, Jobs, CronJobs), from watches of their own
//! that keep only what the rule needs ([`OwnerObject`]) in an
//! [`OwnerIndex`] changed in place; and the rules' outcomes as metrics.

use crate::controller::markers::Reader;
use crate::controller::metrics::Metrics;
use crate::controller::watches::{Caches, Shared};
use futures::StreamExt;
use kube::api::ApiResource;
use kube::core::{DynamicResourceScope, ObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use webhook::{
    MarkerLookup, MemoryView, ObjectKey, Observer, OwnerIndex, SharedView, WorkloadContainer,
    WorkloadOwner,
};

/// Counts and times admission answers on /metrics.
pub struct MetricsObserver(pub Arc<Metrics>);

impl Observer for MetricsObserver {
    fn observe(&self, rule: webhook::Rule, outcome: webhook::Outcome, elapsed: Duration) {
        self.0.admitted(rule.name(), outcome.name(), elapsed);
    }
}

/// Wakes `changed` on every change a cache reports.
fn forward<K>(cache: &Arc<Shared<K>>, changed: Arc<Notify>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let mut rx = cache.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    changed.notify_one()
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// A workload that makes others, as its watch reads it: name, namespace,
/// uid and resourceVersion (which the watcher resumes from), and the
/// containers of its pod template. Everything else in the object is
/// skipped while it is parsed, never kept.
#[derive(Clone, Debug, Deserialize)]
struct OwnerObject {
    #[serde(deserialize_with = "small_meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<OwnerSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaFields {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
}

fn small_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = MetaFields::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    })
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerSpec {
    template: Option<PodTemplate>,
    job_template: Option<JobTemplate>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct JobTemplate {
    spec: Option<JobTemplateSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct JobTemplateSpec {
    template: Option<PodTemplate>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct PodTemplate {
    spec: Option<PodTemplateSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodTemplateSpec {
    containers: Option<Vec<TemplateContainer>>,
    init_containers: Option<Vec<TemplateContainer>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct TemplateContainer {
    name: Option<String>,
    image: Option<String>,
}

impl Resource for OwnerObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl OwnerObject {
    /// What the rule keeps of it; `None` without a namespace, name or uid.
    fn project(&self, kind: &str) -> Option<WorkloadOwner> {
        let meta = &self.metadata;
        let template = self.spec.as_ref().and_then(|s| match kind {
            "CronJob" => s
                .job_template
                .as_ref()
                .and_then(|j| j.spec.as_ref())
                .and_then(|j| j.template.as_ref()),
            _ => s.template.as_ref(),
        });
        let mut images: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if let Some(spec) = template.and_then(|t| t.spec.as_ref()) {
            for c in spec
                .containers
                .iter()
                .chain(&spec.init_containers)
                .flatten()
            {
                if let (Some(name), Some(image)) = (&c.name, &c.image) {
                    images
                        .entry(name.clone())
                        .or_default()
                        .insert(image.clone());
                }
            }
        }
        Some(WorkloadOwner {
            kind: kind.to_string(),
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            images,
        })
    }
}

/// The owner kinds whose version is the same on every cluster the
/// controller supports; CronJobs are found by [`cronjob_resource`].
const OWNER_KINDS: [(&str, &str, &str); 5] = [
    ("apps", "Deployment", "deployments"),
    ("apps", "ReplicaSet", "replicasets"),
    ("apps", "StatefulSet", "statefulsets"),
    ("apps", "DaemonSet", "daemonsets"),
    ("batch", "Job", "jobs"),
];

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The version the cluster serves CronJobs in: `batch/v1` (Kubernetes
/// 1.21 and later), else `batch/v1beta1` (up to 1.24). Every version shows
/// the same objects, so one watch sees them all. Asked again after a
/// failure, until the apiserver answers; `None` when it serves neither.
async fn cronjob_resource(client: &Client) -> Option<ApiResource> {
    let mut wait = Duration::from_secs(1);
    loop {
        let mut failed = None;
        for version in ["v1", "v1beta1"] {
            match client
                .list_api_group_resources(&format!("batch/{version}"))
                .await
            {
                Ok(list) if list.resources.iter().any(|r| r.name == "cronjobs") => {
                    tracing::info!("CronJobs watched in batch/{version}");
                    return Some(resource("batch", version, "CronJob", "cronjobs"));
                }
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => failed = Some(e),
            }
        }
        let Some(e) = failed else {
            tracing::warn!("the cluster serves no CronJobs (batch/v1, batch/v1beta1)");
            return None;
        };
        tracing::warn!("discovering the CronJob version: {e}; trying again in {wait:?}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Keeps `index` current with the objects of `ar` (in `namespace`, or
/// all); `synced` turns true once the first listing is in.
async fn watch_owners(
    client: Client,
    ar: ApiResource,
    namespace: Option<String>,
    index: Arc<OwnerIndex>,
    synced: watch::Sender<bool>,
) {
    let api: Api<OwnerObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let kind = ar.kind.clone();
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listing = Vec::new();
    let mut warned = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(o)) => listing.extend(o.project(&kind)),
            Ok(watcher::Event::InitDone) => {
                index.replace_kind(&kind, listing.drain(..));
                synced.send_replace(true);
                warned = false;
            }
            Ok(watcher::Event::Apply(o)) => {
                if let Some(owner) = o.project(&kind) {
                    index.insert(owner);
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                if let Some(owner) = o.project(&kind) {
                    index.remove(&kind, &owner.namespace, &owner.name, &owner.uid);
                }
            }
            Err(e) => {
                // The watcher retries with backoff; say it once per outage.
                if !warned {
                    tracing::warn!(
                        kind = %kind,
                        "watch: {}",
                        crate::controller::watches::watch_failure(&e)
                    );
                    warned = true;
                }
            }
        }
    }
}

/// Starts the owner watches, filling `index`; the receiver turns true once
/// every one holds its first listing.
fn start_owner_watches(
    client: Client,
    namespace: Option<String>,
    index: Arc<OwnerIndex>,
) -> Vec<watch::Receiver<bool>> {
    let mut synced = Vec::new();
    for (group, kind, plural) in OWNER_KINDS {
        let (tx, rx) = watch::channel(false);
        synced.push(rx);
        tokio::spawn(watch_owners(
            client.clone(),
            resource(group, "v1", kind, plural),
            namespace.clone(),
            index.clone(),
            tx,
        ));
    }
    let (tx, rx) = watch::channel(false);
    synced.push(rx);
    tokio::spawn(async move {
        match cronjob_resource(&client).await {
            Some(ar) => watch_owners(client, ar, namespace, index, tx).await,
            None => {
                tx.send_replace(true);
            }
        }
    });
    synced
}

/// What the admission view is built with, besides the caches.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// False with `serve --no-cross-namespace-refs`.
    pub cross_namespace_refs: bool,
    /// The controller's own namespace: its workloads are never judged.
    pub controller_namespace: String,
    /// The one namespace the watches cover, or all.
    pub namespace: Option<String>,
}

/// The view as the caches hold it now.
fn build(
    caches: &Caches,
    reader: &Reader,
    owners: &Arc<OwnerIndex>,
    options: &ViewOptions,
) -> MemoryView {
    let ns_labels = caches
        .namespaces
        .state()
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect::<Vec<_>>();
    let entries = caches
        .markers
        .as_ref()
        .map(|m| reader.entries(m, &caches.automations))
        .unwrap_or_default()
        .into_iter()
        .map(|((ans, aname), file, c)| {
            (
                WorkloadContainer {
                    kind: c.kind,
                    namespace: c.namespace,
                    name: c.name,
                    container: c.container,
                },
                MarkerLookup {
                    file,
                    line: c.line,
                    policy: c.policy,
                    automation: ObjectKey::new(ans, aname),
                    kustomization: None,
                },
            )
        })
        .collect::<Vec<_>>();
    MemoryView::with_cross_namespace_refs(
        caches.policies.state().iter().map(|p| p.as_ref().clone()),
        caches
            .repositories
            .state()
            .iter()
            .map(|r| r.as_ref().clone()),
        ns_labels,
        entries,
        options.cross_namespace_refs,
    )
    .with_owner_index(owners.clone())
    .with_controller_namespace(options.controller_namespace.clone())
}

/// The view, kept current from the shared caches and the owner watches
/// (started here), and whether it is complete: true once it was built from
/// caches that all hold their first listing (the marker index and every
/// owner kind included).
pub fn keep_view(
    client: Client,
    caches: Arc<Caches>,
    options: ViewOptions,
) -> (Arc<SharedView>, watch::Receiver<bool>) {
    let owners = Arc::new(OwnerIndex::default());
    let view = Arc::new(SharedView::new(
        MemoryView::with_cross_namespace_refs(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            options.cross_namespace_refs,
        )
        .with_owner_index(owners.clone())
        .with_controller_namespace(options.controller_namespace.clone()),
    ));
    let owners_synced = start_owner_watches(client, options.namespace.clone(), owners.clone());
    let (complete_tx, complete) = watch::channel(false);
    let changed = Arc::new(Notify::new());
    forward(&caches.policies, changed.clone());
    forward(&caches.repositories, changed.clone());
    forward(&caches.namespaces, changed.clone());
    forward(&caches.automations, changed.clone());
    if let Some(m) = &caches.markers {
        forward(m, changed.clone());
    }
    let shared = view.clone();
    tokio::spawn(async move {
        let reader = Reader::default();
        caches.wait_synced().await;
        for mut s in owners_synced {
            let _ = s.wait_for(|s| *s).await;
        }
        shared.store(build(&caches, &reader, &owners, &options));
        complete_tx.send_replace(true);
        tracing::info!(owners = owners.len(), "admission view complete");
        loop {
            changed.notified().await;
            // Coalesce a burst of events into one rebuild.
            tokio::time::sleep(Duration::from_millis(100)).await;
            shared.store(build(&caches, &reader, &owners, &options));
        }
    });
    (view, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_read_as_the_rule_needs_it() {
        let deployment: OwnerObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps", "uid": "u1",
                         "resourceVersion": "42", "labels": {"a": "b"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "initContainers": [{"name": "init", "image": "busybox:1"}],
                "containers": [{"name": "web", "image": "nginx:1"}, {"name": "noimage"}]}}},
            "status": {"replicas": 2}
        }))
        .unwrap();
        assert_eq!(deployment.resource_version().as_deref(), Some("42"));
        assert!(deployment.metadata.annotations.is_none());
        let o = deployment.project("Deployment").unwrap();
        assert_eq!(
            (o.namespace.as_str(), o.name.as_str(), o.uid.as_str()),
            ("apps", "web", "u1")
        );
        assert!(o.makes("web", "nginx:1") && o.makes("init", "busybox:1"));
        assert_eq!(o.images.len(), 2);

        let cron: OwnerObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "nightly", "namespace": "apps", "uid": "u2"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "report", "image": "report:1"}]}}}}}
        }))
        .unwrap();
        assert!(cron.project("CronJob").unwrap().makes("report", "report:1"));
        // Read as another kind, the CronJob has no pod template.
        assert!(cron.project("Job").unwrap().images.is_empty());

        let bare: OwnerObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": "apps"}, "spec": null
        }))
        .unwrap();
        assert!(bare.project("Job").is_none(), "no uid");
    }
}
