//! Front end 2: kube-runtime controllers for the three kinds, over the same
//! engine as `reconcile --local`. Configuration comes from the cluster
//! (objects, Secrets, ServiceAccounts, GitRepositories); scans, selection,
//! commits and pushes are the engine's. Status is written as Flux writes it
//! (conditions, lastScanResult, latestRef, lastPushCommit, ...), with a merge
//! patch under this controller's field manager, and only when it changes.

pub mod conditions;
pub mod lease;
pub mod metrics;
pub mod secrets;
pub mod store;

mod automation;
mod policy;
pub mod receiver;
mod receivers;
mod repository;
pub use receivers::token as receivers_token;

use crate::api::{ImagePolicy, ImageRepository, ImageUpdateAutomation, ResourceExt};
use crate::engine::{Engine, EngineError};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use metrics::Metrics;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::TagStore;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "imageauto";

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch this namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Reconcile only objects with these labels (sharding across instances).
    pub label_selector: Option<String>,
    /// Scanned tags and Git caches live here.
    pub storage: PathBuf,
    /// Reconciliations at once, per kind.
    pub concurrency: u16,
    /// Whether policies may use ImageRepositories of other namespaces (and
    /// automations GitRepositories of others).
    pub cross_namespace_refs: bool,
    /// How long to wait before trying again when a dependency is not ready.
    pub requeue_dependency: Duration,
    /// This instance's name in events (the pod's name).
    pub instance: String,
    /// Where automation runs leave the index of the image fields of their
    /// checkout (for the admission webhook's marker check); none when no
    /// webhook is served.
    pub markers: Option<Arc<MarkerIndex>>,
    /// Changes that reach an automation within this window make one run
    /// (one fetch, one commit).
    pub batch_window: Duration,
}

/// The image fields of each automation's last checkout: (file, container)
/// pairs by automation (`namespace`, `name`). Written by the automation
/// controller after each run; read, without I/O, by the webhook's view.
/// An automation's (`namespace`, `name`) entries: (file, container).
type MarkerEntries =
    std::collections::BTreeMap<(String, String), Vec<(String, crate::lint::IndexedContainer)>>;

#[derive(Default)]
pub struct MarkerIndex {
    entries: std::sync::Mutex<MarkerEntries>,
    /// Wakes whoever rebuilds a view from the index.
    pub changed: tokio::sync::Notify,
}

impl std::fmt::Debug for MarkerIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkerIndex")
            .field("automations", &self.lock().len())
            .finish()
    }
}

impl MarkerIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, MarkerEntries> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Replaces an automation's entries (when they differ).
    pub fn set(
        &self,
        automation: (String, String),
        entries: Vec<(String, crate::lint::IndexedContainer)>,
    ) {
        let mut m = self.lock();
        if m.get(&automation) != Some(&entries) {
            m.insert(automation, entries);
            drop(m);
            self.changed.notify_one();
        }
    }

    /// Every entry, with its automation.
    pub fn all(&self) -> Vec<((String, String), String, crate::lint::IndexedContainer)> {
        self.lock()
            .iter()
            .flat_map(|(a, v)| {
                v.iter()
                    .map(move |(f, c)| (a.clone(), f.clone(), c.clone()))
            })
            .collect()
    }
}

/// Why a reconciliation failed in a way its status cannot say (the API
/// refused a status write, say): retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {object}: {message}")]
    Kube {
        kind: &'static str,
        object: String,
        message: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Shared by the reconcilers.
pub struct Context {
    pub client: Client,
    pub engine: Arc<Engine>,
    pub options: Options,
    pub metrics: Arc<Metrics>,
    pub tags: TagStore,
    pub recorder: Recorder,
    pub repositories: Store<ImageRepository>,
    pub policies: Store<ImagePolicy>,
    pub automations: Store<ImageUpdateAutomation>,
    /// Failing objects: for the backoff, and to keep a reconciliation that
    /// our own status write triggered from retrying at once.
    failures: std::sync::Mutex<HashMap<String, Failure>>,
}

/// An object's run of failures.
struct Failure {
    count: u32,
    /// No new attempt before this, unless the object changes.
    until: std::time::Instant,
    generation: i64,
    request: Option<String>,
}

impl Context {
    /// Where Git caches live.
    pub fn git_cache(&self) -> PathBuf {
        self.options.storage.join("git")
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failure>> {
        match self.failures.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The delay before retrying `key` after another failure: 5 s doubling
    /// to 5 min, with ±20% jitter, so that failing objects neither hot-loop
    /// nor retry in lockstep. Until then, [`Context::waiting`] holds back
    /// attempts, unless the object's spec or reconcile request changes.
    pub fn backoff(&self, key: &str, generation: i64, request: &Option<String>) -> Duration {
        let mut f = self.failures();
        let entry = f.entry(key.to_string()).or_insert(Failure {
            count: 0,
            until: std::time::Instant::now(),
            generation,
            request: request.clone(),
        });
        entry.count = entry.count.saturating_add(1);
        let base = Duration::from_secs(5).saturating_mul(1 << entry.count.min(6).saturating_sub(1));
        let delay = jitter(base.min(Duration::from_secs(300)));
        entry.until = std::time::Instant::now() + delay;
        entry.generation = generation;
        entry.request.clone_from(request);
        delay
    }

    /// How long `key` still waits after a failure, when nothing about it
    /// changed since (a reconciliation our own status write triggered).
    pub fn waiting(
        &self,
        key: &str,
        generation: i64,
        request: &Option<String>,
    ) -> Option<Duration> {
        let f = self.failures();
        let e = f.get(key)?;
        let now = std::time::Instant::now();
        (e.generation == generation && &e.request == request && e.until > now)
            .then(|| e.until - now)
    }

    /// Forgets `key`'s failures after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures().remove(key);
    }

    /// Publishes an event about `obj`; a failure to publish is logged, not
    /// an error of the reconciliation.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(cut(&note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %secrets::api_error(&e), "cannot publish an event");
        }
    }

    /// Writes `status` with a merge patch on the status subresource.
    pub async fn patch_status<K>(
        &self,
        obj: &K,
        kind: &'static str,
        status: serde_json::Value,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.meta().name.clone().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        api.patch_status(
            &name,
            &pp,
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::Kube {
            kind,
            object: format!("{ns}/{name}"),
            message: format!("cannot write the status: {}", secrets::api_error(&e)),
        })
    }
}

/// A string cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `d` ± 20%, from the clock's nanoseconds (no need for a cryptographic RNG).
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let factor = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
    d.mul_f64(factor)
}

/// `ns/name` of an object.
pub(crate) fn key<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The reconcile request an object carries, if any.
pub(crate) fn requested_at<K: ResourceExt>(obj: &K) -> Option<String> {
    obj.annotations()
        .get(crate::api::RECONCILE_REQUEST_ANNOTATION)
        .cloned()
}

/// What follows a failure: a transient one is retried with backoff; one
/// whose cause lies outside the object ([`EngineError::lies_elsewhere`]) is
/// looked at again at the object's `interval`; any other waits for the
/// object to change (Stalled).
pub(crate) fn after_failure<K: ResourceExt>(
    ctx: &Context,
    obj: &K,
    e: &EngineError,
    interval: Option<Duration>,
) -> Action {
    let generation = obj.meta().generation.unwrap_or(0);
    let wait = ctx.backoff(&key(obj), generation, &requested_at(obj));
    match interval {
        _ if e.is_transient() => Action::requeue(wait),
        Some(i) if e.lies_elsewhere() => Action::requeue(jitter(i.max(wait))),
        _ => Action::await_change(),
    }
}

/// The wait left after a failure, when the object did not change since.
pub(crate) fn still_waiting<K: ResourceExt>(ctx: &Context, obj: &K) -> Option<Action> {
    ctx.waiting(
        &key(obj),
        obj.meta().generation.unwrap_or(0),
        &requested_at(obj),
    )
    .map(Action::requeue)
}

fn error_policy<K>(obj: Arc<K>, e: &Error, ctx: Arc<Context>) -> Action
where
    K: ResourceExt,
{
    let k = key(obj.as_ref());
    tracing::warn!(object = %k, "{e}");
    let wait = ctx.backoff(
        &k,
        obj.meta().generation.unwrap_or(0),
        &requested_at(obj.as_ref()),
    );
    Action::requeue(wait)
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the three controllers until `stop` turns true: then each finishes
/// the reconciliations under way (a Git push included) and returns.
/// `ready` turns true once the three caches are filled.
pub async fn run(
    client: Client,
    engine: Arc<Engine>,
    options: Options,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    let tags = TagStore::open(&options.storage).map_err(|e| {
        Error::Engine(EngineError::Internal(format!(
            "the storage folder {} cannot be used: {e}",
            options.storage.display()
        )))
    })?;
    let mut wc = watcher::Config::default();
    if let Some(l) = &options.label_selector {
        wc = wc.labels(l);
    }
    let config = ControllerConfig::default().concurrency(options.concurrency.max(1));
    let repositories = Controller::new(
        api::<ImageRepository>(&client, &options.namespace),
        wc.clone(),
    )
    .with_config(config.clone());
    let policies = Controller::new(api::<ImagePolicy>(&client, &options.namespace), wc.clone())
        .with_config(config.clone());
    let automations = Controller::new(
        api::<ImageUpdateAutomation>(&client, &options.namespace),
        wc.clone(),
    )
    .with_config(config.clone().debounce(options.batch_window));
    let receiver_config = config;
    let ctx = Arc::new(Context {
        client: client.clone(),
        engine,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "imageauto".into(),
                instance: Some(options.instance.clone()),
            },
        ),
        metrics,
        tags,
        repositories: repositories.store(),
        policies: policies.store(),
        automations: automations.store(),
        options: options.clone(),
        failures: std::sync::Mutex::new(HashMap::new()),
    });
    // A policy follows its repository's scans; an automation its
    // namespace's policies.
    let policy_store = ctx.policies.clone();
    let policies = policies.watches(
        api::<ImageRepository>(&client, &options.namespace),
        wc.clone(),
        move |repo: ImageRepository| {
            let (rns, rname) = (repo.namespace().unwrap_or_default(), repo.name_any());
            policy_store
                .state()
                .into_iter()
                .filter(|p| crate::api::plan::repository_of(p) == (rns.clone(), rname.clone()))
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let automation_store = ctx.automations.clone();
    let automations = automations.watches(
        api::<ImagePolicy>(&client, &options.namespace),
        wc.clone(),
        move |p: ImagePolicy| {
            let ns = p.namespace();
            automation_store
                .state()
                .into_iter()
                .filter(|a| a.namespace() == ns)
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    {
        let (r, p, a) = (
            ctx.repositories.clone(),
            ctx.policies.clone(),
            ctx.automations.clone(),
        );
        tokio::spawn(async move {
            // The stores' readiness wakes one waiter only (the controller's
            // own runner): poll it instead of waiting on it.
            loop {
                let done = filled(&r).await && filled(&p).await && filled(&a).await;
                if done {
                    tracing::info!("caches synced: ready");
                    ready.store(true, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let r = repositories
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(repository::reconcile, error_policy, ctx.clone())
        .for_each(|r| log_result("ImageRepository", r));
    let p = policies
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(policy::reconcile, error_policy, ctx.clone())
        .for_each(|r| log_result("ImagePolicy", r));
    let a = automations
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(automation::reconcile, error_policy, ctx.clone())
        .for_each(|r| log_result("ImageUpdateAutomation", r));
    // Receivers (Flux's notification kind) get their path and Ready, when
    // the kind exists in the cluster.
    let rapi: Api<crate::api::Receiver> = api(&client, &options.namespace);
    let receivers = match rapi.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Some(
            Controller::new(rapi, wc)
                .with_config(receiver_config)
                .graceful_shutdown_on(stopped(stop.clone()))
                .run(receivers::reconcile, error_policy, ctx.clone())
                .for_each(|r| log_result("Receiver", r)),
        ),
        Err(_) => {
            tracing::info!(
                "no Receiver kind in the cluster: registry events come only through other receivers"
            );
            None
        }
    };
    let receivers = async move {
        if let Some(r) = receivers {
            r.await;
        }
    };
    futures::future::join4(r, p, a, receivers).await;
    Ok(())
}

/// Whether a store holds its first listing (polled: a store's readiness
/// wakes only one waiter, the controller's own runner).
async fn filled<K>(s: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    tokio::time::timeout(Duration::from_millis(50), s.wait_until_ready())
        .await
        .is_ok_and(|r| r.is_ok())
}

/// What the controller stream reports besides reconciliations (which log
/// their own failures): watch errors, queue problems.
async fn log_result<T>(
    kind: &'static str,
    r: Result<T, kube::runtime::controller::Error<Error, watcher::Error>>,
) {
    match r {
        Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        Err(other) => tracing::warn!(kind, "controller: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
        assert_eq!(cut("héllo", 2), "h…");
        assert_eq!(cut("ok", 5), "ok");
    }
}
