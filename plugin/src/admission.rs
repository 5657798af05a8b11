//! The admission webhook inside `serve`: the view its rules read (policies,
//! repositories, namespace labels, and the automations' marker index), kept
//! in memory by watches and rebuilt on change, never fetched per request;
//! and the rules' outcomes as metrics.

use automation::api::{ImagePolicy, ImageRepository};
use automation::controller::MarkerIndex;
use automation::controller::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use webhook::{MarkerLookup, MemoryView, ObjectKey, Observer, SharedView, WorkloadContainer};

/// Counts and times admission answers on /metrics.
pub struct MetricsObserver(pub Arc<Metrics>);

impl Observer for MetricsObserver {
    fn observe(&self, rule: webhook::Rule, outcome: webhook::Outcome, elapsed: Duration) {
        self.0.inc(
            "imageauto_admission_total",
            &[("rule", rule.name()), ("result", outcome.name())],
        );
        self.0.observe(
            "imageauto_admission_duration_seconds",
            &[("rule", rule.name())],
            elapsed,
        );
    }
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs a reflector for `api` and signals `changed` on every event.
fn reflect<K>(api: Api<K>, changed: Arc<tokio::sync::Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!("admission view: watch: {e}"),
            }
        }
    });
    reader
}

/// The view, kept current: watches for policies and repositories (in the
/// controllers' scope), every namespace's labels, and the marker index.
pub fn keep_view(
    client: Client,
    namespace: Option<String>,
    cross_namespace_refs: bool,
    markers: Option<Arc<MarkerIndex>>,
) -> Arc<SharedView> {
    let view = Arc::new(SharedView::new(MemoryView::with_cross_namespace_refs(
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        cross_namespace_refs,
    )));
    let changed = Arc::new(tokio::sync::Notify::new());
    let policies: Store<ImagePolicy> = reflect(api(&client, &namespace), changed.clone());
    let repositories: Store<ImageRepository> = reflect(api(&client, &namespace), changed.clone());
    let namespaces: Store<Namespace> = reflect(Api::all(client), changed.clone());
    if let Some(m) = &markers {
        let (m, c) = (m.clone(), changed.clone());
        tokio::spawn(async move {
            loop {
                m.changed.notified().await;
                c.notify_one();
            }
        });
    }
    let shared = view.clone();
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            // Coalesce a burst of events into one rebuild.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let ns_labels = namespaces
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect::<Vec<_>>();
            let entries = markers
                .as_ref()
                .map(|m| m.all())
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
            let v = MemoryView::with_cross_namespace_refs(
                policies.state().iter().map(|p| p.as_ref().clone()),
                repositories.state().iter().map(|r| r.as_ref().clone()),
                ns_labels,
                entries,
                cross_namespace_refs,
            );
            shared.store(v);
        }
    });
    view
}
