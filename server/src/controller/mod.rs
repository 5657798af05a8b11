//! Front end 2: kube-runtime controllers for the three kinds (and Flux's
//! Receivers), over the same engine as `reconcile --local`.
//!
//! One design for every kind, the way the webhook is built (pure rules over
//! a read-only view):
//! - a pure decision per kind ([`repository::decide`], [`policy::decide`],
//!   [`automation::decide`], [`receiver::decide`]): from the object, a
//!   snapshot of what it depends on and the time, the whole status, the
//!   events and the requeue, or the work to do first;
//! - one reconcile shell ([`shell`]) that does the I/O for every kind:
//!   finalizers, snapshots from the caches, the work, the status by
//!   server-side apply, events, metrics, backoff;
//! - shared watches ([`watches`]): one reflector per kind for the process,
//!   read by the controllers, the admission view and the receivers, with
//!   predicates so that a status write never wakes its own object.

pub mod conditions;
pub mod decision;
pub mod events;
pub mod lease;
pub mod markers;
pub mod metrics;
pub mod secrets;
pub mod shell;
pub mod store;
pub mod watches;

pub mod automation;
pub mod policy;
pub mod receiver;
pub mod repository;
#[cfg(test)]
pub(crate) mod testing;

use crate::api::{
    GitRepository, ImagePolicy, ImageRepository, ImageUpdateAutomation, Receiver, ResourceExt,
    SigningKey,
};
use crate::engine::{Engine, EngineError, Fence};
use crate::git::Signer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use metrics::Metrics;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::TagStore;
use watches::{Caches, LabelSelector, Shared, changed, reconcile_property};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "imageauto";

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
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
    /// Where automation runs publish the index of the image fields of their
    /// checkout (for the admission webhook's marker check; see
    /// [`markers`]); none when no webhook is served.
    pub markers_namespace: Option<String>,
    /// Changes that reach an automation within this window make one run
    /// (one fetch, one commit).
    pub batch_window: Duration,
    /// The longest a scan or a digest lookup may take, whatever the
    /// object's `spec.timeout` or interval say (`--max-scan-timeout`).
    pub max_scan_timeout: Duration,
    /// notification-controller's event server (`--events-addr`).
    pub events_addr: Option<String>,
    /// The retry backoff after a failure: from the first delay, doubling,
    /// to the last (Flux's `--min-retry-delay`, `--max-retry-delay`).
    pub retry: (Duration, Duration),
    /// Objects may name a ServiceAccount whose cloud identity logs in
    /// (`--feature-gates=ObjectLevelWorkloadIdentity=true`, as Flux gates it).
    pub object_level_workload_identity: bool,
}

/// Why a reconciliation failed in a way its status cannot say (the API
/// refused a status write, say): retried with backoff. Or why the
/// controllers cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused a call; `source` tells a 404 from a 409.
    #[error("{kind} {object}: cannot {action}: {}", secrets::api_error(source))]
    Kube {
        kind: &'static str,
        object: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    /// kube's finalizer helper refused the object (no name, say).
    #[error("{kind} {object}: {source}")]
    Finalizer {
        kind: &'static str,
        object: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A decision that kept asking for more work.
    #[error("{kind} {object}: the reconciliation asked for work again and again")]
    Endless { kind: &'static str, object: String },
    /// A status that does not serialise.
    #[error("{kind} {object}: the status cannot be written as JSON")]
    Encode {
        kind: &'static str,
        object: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the storage folder {path} cannot be used")]
    Storage {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--watch-label-selector: {0}")]
    Selector(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Shared by the reconcilers.
pub struct Context {
    pub client: Client,
    pub engine: Arc<Engine>,
    pub options: ControllerOptions,
    pub metrics: Arc<Metrics>,
    pub tags: TagStore,
    pub recorder: Recorder,
    pub caches: Arc<Caches>,
    /// Whether this replica may still push (it holds the Lease).
    pub fence: Fence,
    /// Events also go to notification-controller, when set.
    pub poster: Option<events::Poster>,
    /// Registry logins of cloud identities (`spec.provider`), cached.
    pub cloud: Arc<crate::registry::cloud::CloudLogins>,
    /// Failures in a row, by object: the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Unlocked signing keys by Secret (namespace, name), with the Secret's
    /// resourceVersion: the (deliberately slow) passphrase derivation runs
    /// once per version of the Secret, not once per run.
    signers: Mutex<HashMap<SecretKey, (String, Arc<Signer>)>>,
    /// GitHub App installation tokens (`provider: github`), reused while
    /// they last.
    pub github_tokens: crate::git::github::Tokens,
}

/// A Secret's namespace and name.
type SecretKey = (String, String);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // The maps stay consistent (single inserts and removals).
        Err(p) => p.into_inner(),
    }
}

impl Context {
    /// Where Git caches live.
    pub fn git_cache(&self) -> PathBuf {
        self.options.storage.join("git")
    }

    /// The delay before retrying `key` after another failure, as Flux's
    /// rate limiter (fluxcd/pkg `runtime/controller/rate_limiter.go`): the
    /// first delay (750 ms), doubling with each failure in a row, to the
    /// last (15 min).
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = lock(&self.failures);
        let count = f.entry(key.to_string()).or_insert(0);
        let delay = retry_delay(*count, self.options.retry);
        *count = count.saturating_add(1);
        delay
    }

    /// Forgets `key`'s failures (after a success, or when it is deleted).
    pub fn forget(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// Publishes an event about `obj`; a failure to publish is logged, not
    /// an error of the reconciliation.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, note: &decision::Note) {
        let ev = Event {
            type_: if note.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.clone(),
            note: Some(cut(&note.message, 1000)),
            action: note.action.to_string(),
            secondary: None,
        };
        // notification-controller records its Receivers' events in the
        // cluster only: they are not posted to its own event server.
        if let Some(p) = &self.poster
            && K::kind(&()) != "Receiver"
            && let Some(e) = events::flux_event(
                obj,
                note,
                &self.options.instance,
                &k8s_openapi::jiff::Timestamp::now(),
            )
        {
            p.post(e);
        }
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %secrets::api_error(&e), "cannot publish an event");
        }
    }

    /// The key an automation signs with, from the Secret its signingKey
    /// names: unlocked once per version of the Secret.
    pub async fn signer(
        &self,
        namespace: &str,
        key: &SigningKey,
    ) -> Result<Arc<Signer>, EngineError> {
        let name = key.secret_ref.name.clone();
        let id = (namespace.to_string(), name.clone());
        let version = self
            .caches
            .secrets
            .get(namespace, &name)
            .and_then(|s| s.resource_version());
        if let Some(v) = &version
            && let Some((cv, s)) = lock(&self.signers).get(&id)
            && cv == v
        {
            return Ok(s.clone());
        }
        let signer = secrets::signer(&self.client, &self.engine, namespace, key).await?;
        if let Some(v) = version {
            lock(&self.signers).insert(id, (v, signer.clone()));
        }
        Ok(signer)
    }
}

/// The delay before the retry after `failures` earlier failures in a row:
/// `first` doubled that many times, at most `last`.
pub fn retry_delay(failures: u32, (first, last): (Duration, Duration)) -> Duration {
    first.saturating_mul(1u32 << failures.min(30)).min(last)
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

fn error_policy<K: ResourceExt>(obj: Arc<K>, e: &Error, ctx: Arc<Context>) -> Action {
    let k = shell::key(obj.as_ref());
    tracing::warn!(object = %k, "{e}");
    Action::requeue(ctx.backoff(&k))
}

/// The secrets an ImageRepository reads (its ServiceAccount's pull secrets
/// aside: a changed ServiceAccount is seen at the next scan).
fn repository_secrets(r: &ImageRepository) -> impl Iterator<Item = &str> {
    [
        r.spec.secret_ref.as_ref(),
        r.spec.cert_secret_ref.as_ref(),
        r.spec.proxy_secret_ref.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.name.as_str())
}

/// Runs the controllers until `stop` turns true: then each finishes the
/// reconciliations under way and returns. The caches must be running
/// already; the controllers start once they are synced.
pub async fn run(
    client: Client,
    engine: Arc<Engine>,
    options: ControllerOptions,
    metrics: Arc<Metrics>,
    caches: Arc<Caches>,
    fence: Fence,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    let tags = TagStore::open(&options.storage).map_err(|source| Error::Storage {
        path: options.storage.clone(),
        source,
    })?;
    let selector = match &options.label_selector {
        Some(s) => Some(LabelSelector::parse(s).map_err(Error::Selector)?),
        None => None,
    };
    caches.wait_synced().await;
    if let Some(m) = &caches.markers {
        markers::prune(&client, m, &caches.automations).await;
    }
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
        caches: caches.clone(),
        fence,
        poster: match &options.events_addr {
            Some(url) => Some(
                events::Poster::start(url).map_err(|e| Error::Engine(EngineError::Internal(e)))?,
            ),
            None => None,
        },
        cloud: Arc::new(crate::registry::cloud::CloudLogins::new(
            options.object_level_workload_identity,
        )),
        options: options.clone(),
        failures: Mutex::new(HashMap::new()),
        signers: Mutex::new(HashMap::new()),
        github_tokens: crate::git::github::Tokens::default(),
    });
    let selected = {
        let s = selector.clone();
        move |labels: &std::collections::BTreeMap<String, String>| {
            s.as_ref().is_none_or(|s| s.matches(labels))
        }
    };
    let mine = {
        let sel = selected.clone();
        move |o: &dyn LabelledObject| sel(o.labels_of())
    };
    let config = ControllerConfig::default().concurrency(options.concurrency.max(1));
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // ImageRepository: itself, and the Secrets it reads.
    let repositories = {
        let (m1, m2) = (mine.clone(), mine.clone());
        let store = caches.repositories.clone();
        Controller::for_shared_stream(
            changed(
                caches.repositories.clone(),
                true,
                move |o: &ImageRepository| m1(o),
                reconcile_property,
            ),
            caches.repositories.store.clone(),
        )
        .watches_shared_stream(
            secret_changes(&caches.secrets),
            move |s: Arc<PartialObjectMeta<Secret>>| {
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                refs(&store, |r| {
                    m2(r)
                        && r.namespace().as_deref() == Some(ns.as_str())
                        && repository_secrets(r).any(|n| n == name)
                })
            },
        )
        .with_config(config.clone())
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(shell::reconcile, error_policy, ctx.clone())
        .for_each(|r| log_result("ImageRepository", r))
    };

    // ImagePolicy: itself; its repository's scans; its namespace's labels
    // (accessFrom).
    let policies = {
        let (m1, m2, m3) = (mine.clone(), mine.clone(), mine.clone());
        let (store, store2) = (caches.policies.clone(), caches.policies.clone());
        Controller::for_shared_stream(
            changed(
                caches.policies.clone(),
                true,
                move |o: &ImagePolicy| m1(o),
                reconcile_property,
            ),
            caches.policies.store.clone(),
        )
        .watches_shared_stream(
            changed(
                caches.repositories.clone(),
                false,
                |_: &ImageRepository| true,
                |r: &ImageRepository| {
                    Some((
                        r.meta().generation,
                        r.status
                            .as_ref()
                            .and_then(|s| s.last_scan_result.as_ref())
                            .map(|s| s.revision.clone()),
                    ))
                },
            ),
            move |r: Arc<ImageRepository>| {
                let target = (r.namespace().unwrap_or_default(), r.name_any());
                refs(&store, |p| {
                    m2(p) && crate::api::plan::repository_of(p) == target
                })
            },
        )
        .watches_shared_stream(
            changed(
                caches.namespaces.clone(),
                false,
                |_: &Namespace| true,
                |n: &Namespace| Some(n.labels().clone()),
            ),
            move |n: Arc<Namespace>| {
                let ns = n.name_any();
                refs(&store2, |p| {
                    m3(p)
                        && p.namespace().as_deref() == Some(ns.as_str())
                        && crate::api::plan::repository_of(p).0 != ns
                })
            },
        )
        .with_config(config.clone())
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(shell::reconcile, error_policy, ctx.clone())
        .for_each(|r| log_result("ImagePolicy", r))
    };

    // ImageUpdateAutomation: itself; its policies when their latest image
    // (or their labels, which policySelector reads) change; its
    // GitRepository's spec; the Secrets of its source and signing key.
    let automations = {
        let (m1, m2, m3, m4) = (mine.clone(), mine.clone(), mine.clone(), mine.clone());
        let (s1, s2, s3) = (
            caches.automations.clone(),
            caches.automations.clone(),
            caches.automations.clone(),
        );
        let sources = caches.sources.clone();
        Controller::for_shared_stream(
            changed(
                caches.automations.clone(),
                true,
                move |o: &ImageUpdateAutomation| m1(o),
                reconcile_property,
            ),
            caches.automations.store.clone(),
        )
        .watches_shared_stream(
            changed(
                caches.policies.clone(),
                false,
                |_: &ImagePolicy| true,
                |p: &ImagePolicy| {
                    Some((
                        p.status.as_ref().and_then(|s| s.latest_ref.clone()),
                        p.labels().clone(),
                    ))
                },
            ),
            move |p: Arc<ImagePolicy>| {
                let ns = p.namespace();
                refs(&s1, |a| m2(a) && a.namespace() == ns)
            },
        )
        .watches_shared_stream(
            changed(
                caches.sources.clone(),
                false,
                |_: &GitRepository| true,
                |g: &GitRepository| Some(g.meta().generation),
            ),
            move |g: Arc<GitRepository>| {
                let target = (g.namespace().unwrap_or_default(), g.name_any());
                refs(&s2, |a| m3(a) && automation::source_of(a) == target)
            },
        )
        .watches_shared_stream(
            secret_changes(&caches.secrets),
            move |s: Arc<PartialObjectMeta<Secret>>| {
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                refs(&s3, |a| {
                    if !m4(a) {
                        return false;
                    }
                    let signing = a.namespace().as_deref() == Some(ns.as_str())
                        && a.spec
                            .git
                            .as_ref()
                            .and_then(|g| g.commit.signing_key.as_ref())
                            .is_some_and(|k| k.secret_ref.name == name);
                    let (sns, sname) = automation::source_of(a);
                    let source = sns == ns
                        && sources.get(&sns, &sname).is_some_and(|g| {
                            g.spec.secret_ref.as_ref().is_some_and(|r| r.name == name)
                        });
                    signing || source
                })
            },
        )
        .with_config(config.clone().debounce(options.batch_window))
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(shell::reconcile, error_policy, ctx.clone())
        .for_each(|r| log_result("ImageUpdateAutomation", r))
    };

    // Receivers (Flux's notification kind) get their path and Ready, from
    // when the kind exists in the cluster; each again at its interval
    // (the decision's requeue) and when its Secret changes.
    let receivers = {
        let (m1, m2) = (mine.clone(), mine.clone());
        let (appearing, secrets) = (caches.receivers.clone(), caches.secrets.clone());
        let (config, stop, ctx) = (config.clone(), stop.clone(), ctx.clone());
        async move {
            let rc = tokio::select! {
                rc = appearing.wait() => rc,
                () = stopped(stop.clone()) => return,
            };
            let store = rc.clone();
            Controller::for_shared_stream(
                changed(
                    rc.clone(),
                    true,
                    move |o: &Receiver| m1(o),
                    reconcile_property,
                ),
                rc.store.clone(),
            )
            .watches_shared_stream(
                secret_changes(&secrets),
                move |s: Arc<PartialObjectMeta<Secret>>| {
                    let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                    refs(&store, |r| {
                        m2(r)
                            && r.namespace().as_deref() == Some(ns.as_str())
                            && r.spec.secret_ref.as_ref().is_some_and(|s| s.name == name)
                    })
                },
            )
            .with_config(config)
            .graceful_shutdown_on(stopped(stop))
            .run(shell::reconcile, error_policy, ctx)
            .for_each(|r| log_result("Receiver", r))
            .await;
        }
    };
    futures::future::join4(repositories, policies, automations, receivers).await;
    Ok(())
}

/// References to the objects of `cache` that `pick` keeps.
fn refs<K>(cache: &Shared<K>, pick: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    cache
        .state()
        .into_iter()
        .filter(|o| pick(o))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Secrets whose content changed (their resourceVersion), after the first
/// listing: each wakes the objects that read it.
fn secret_changes(
    secrets: &Arc<Shared<PartialObjectMeta<Secret>>>,
) -> impl futures::Stream<Item = Arc<PartialObjectMeta<Secret>>> + Send + 'static {
    changed(
        secrets.clone(),
        false,
        |_: &PartialObjectMeta<Secret>| true,
        |s: &PartialObjectMeta<Secret>| s.resource_version(),
    )
}

/// An object's labels, whatever its kind (for the shard's selector).
trait LabelledObject {
    fn labels_of(&self) -> &std::collections::BTreeMap<String, String>;
}

impl<K: ResourceExt> LabelledObject for K {
    fn labels_of(&self) -> &std::collections::BTreeMap<String, String> {
        self.labels()
    }
}

/// What the controller stream reports besides reconciliations (which log
/// their own failures): watch errors, queue problems.
async fn log_result<T>(
    kind: &'static str,
    r: Result<T, kube::runtime::controller::Error<Error, kube::runtime::watcher::Error>>,
) {
    match r {
        // A deleted object's last change reaches the queue after it left
        // the cache: nothing to do.
        Ok(_)
        | Err(kube::runtime::controller::Error::ReconcilerFailed(..))
        | Err(kube::runtime::controller::Error::ObjectNotFound(..)) => {}
        Err(other) => tracing::warn!(kind, "controller: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_as_fluxs() {
        let flux = (Duration::from_millis(750), Duration::from_secs(900));
        let delays: Vec<Duration> = (0..12).map(|n| retry_delay(n, flux)).collect();
        assert_eq!(delays[0], Duration::from_millis(750));
        assert_eq!(delays[1], Duration::from_millis(1500));
        assert_eq!(delays[4], Duration::from_secs(12));
        assert_eq!(delays[10], Duration::from_secs(768));
        assert_eq!(delays[11], Duration::from_secs(900));
        assert_eq!(retry_delay(u32::MAX, flux), Duration::from_secs(900));
    }

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
