//! The admission webhook inside `serve`: the view its rules read (policies,
//! repositories, namespace labels, and the published marker index), built
//! from the process's shared watches and rebuilt on change, never fetched
//! per request; and the rules' outcomes as metrics.

use automation::controller::markers::Reader;
use automation::controller::metrics::Metrics;
use automation::controller::watches::{Caches, Shared};
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
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

/// The view as the caches hold it now.
fn build(caches: &Caches, reader: &Reader, cross_namespace_refs: bool) -> MemoryView {
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
        cross_namespace_refs,
    )
}

/// The view, kept current from the shared caches, and whether it is
/// complete: true once it was built from caches that all hold their first
/// listing (the marker index included).
pub fn keep_view(
    caches: Arc<Caches>,
    cross_namespace_refs: bool,
) -> (Arc<SharedView>, watch::Receiver<bool>) {
    let view = Arc::new(SharedView::new(MemoryView::with_cross_namespace_refs(
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        cross_namespace_refs,
    )));
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
        shared.store(build(&caches, &reader, cross_namespace_refs));
        complete_tx.send_replace(true);
        tracing::info!("admission view complete");
        loop {
            changed.notified().await;
            // Coalesce a burst of events into one rebuild.
            tokio::time::sleep(Duration::from_millis(100)).await;
            shared.store(build(&caches, &reader, cross_namespace_refs));
        }
    });
    (view, complete)
}
