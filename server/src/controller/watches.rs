//! Shared watches: one reflector per kind for the whole process, read by the
//! controllers, the admission view and the receivers alike. Every replica
//! runs them (a follower answers admission reviews from them); the
//! controllers of the leader subscribe to their changes, through predicates
//! that pass only what a reconciliation must see (a new generation, a
//! reconcile request, a finalizer to add or release — never a status write).

use crate::api::{
    GitRepository, ImagePolicy, ImageRepository, ImageUpdateAutomation, Receiver, ResourceExt,
};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// The watch's selector for the marker index's ConfigMaps (label
/// `imageauto.dev/marker-index`).
pub const INDEX_LABEL_SELECTOR: &str = "imageauto.dev/marker-index=true";

/// What a subscriber hears of a kind.
#[derive(Debug)]
pub enum CacheChange<K> {
    /// Added or changed (also each object of a new listing).
    Applied(Arc<K>),
    /// Gone from the cluster.
    Deleted(Arc<K>),
}

impl<K> Clone for CacheChange<K> {
    fn clone(&self) -> Self {
        match self {
            CacheChange::Applied(o) => CacheChange::Applied(o.clone()),
            CacheChange::Deleted(o) => CacheChange::Deleted(o.clone()),
        }
    }
}

/// Changes a slow subscriber may fall behind by before it has to compare
/// the whole store again.
const BUFFER: usize = 1024;

/// One kind's cache: the reflector's store, its changes, and whether its
/// first listing is in.
pub struct Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub store: Store<K>,
    changes: broadcast::Sender<CacheChange<K>>,
    synced: watch::Receiver<bool>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    /// Runs a reflector over `events` (a watcher's stream) in the
    /// background, for as long as the process lives.
    pub fn start<S>(what: &'static str, events: S) -> Arc<Self>
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(BUFFER);
        let (synced_tx, synced) = watch::channel(false);
        let tx = changes.clone();
        tokio::spawn(async move {
            let stream = reflector::reflector(writer, events);
            let mut stream = std::pin::pin!(stream);
            let mut warned = false;
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        let _ = tx.send(CacheChange::Applied(Arc::new(o)));
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        let _ = tx.send(CacheChange::Deleted(Arc::new(o)));
                    }
                    Ok(watcher::Event::InitDone) => {
                        warned = false;
                        synced_tx.send_replace(true);
                    }
                    Ok(watcher::Event::Init) => {}
                    Err(e) => {
                        // The watcher retries with backoff; say it once per
                        // outage.
                        if !warned {
                            tracing::warn!(kind = what, "watch: {}", watch_failure(&e));
                            warned = true;
                        }
                    }
                }
            }
        });
        Arc::new(Shared {
            store,
            changes,
            synced,
        })
    }

    /// Whether the first listing is in the store.
    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first listing is in the store.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CacheChange<K>> {
        self.changes.subscribe()
    }

    /// Every object in the store, for the subscriber that fell behind.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// An object by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }
}

fn hash_of<H: Hash>(h: &H) -> u64 {
    let mut s = std::collections::hash_map::DefaultHasher::new();
    h.hash(&mut s);
    s.finish()
}

/// The objects of `shared` whose `property` changed since this stream last
/// saw them (a predicate; `None` never passes), among those `select` keeps:
/// once the store is synced, every object (with `initial`; without, they
/// are only noted), then each change, and each deletion of an object it
/// passed. A subscriber that fell behind compares the whole store again
/// (a deletion missed then is not reported).
pub fn changed<K, H, P, F>(
    shared: Arc<Shared<K>>,
    initial: bool,
    select: F,
    property: P,
) -> impl Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    H: Hash,
    P: Fn(&K) -> Option<H> + Send + 'static,
    F: Fn(&K) -> bool + Send + 'static,
{
    struct State<K: Resource<DynamicType = ()> + Clone + 'static, P, F> {
        shared: Arc<Shared<K>>,
        rx: broadcast::Receiver<CacheChange<K>>,
        seen: HashMap<(String, String), u64>,
        pending: std::collections::VecDeque<Arc<K>>,
        started: bool,
        property: P,
        select: F,
    }
    impl<K, P, F, H> State<K, P, F>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
        H: Hash,
        P: Fn(&K) -> Option<H>,
        F: Fn(&K) -> bool,
    {
        fn offer(&mut self, o: Arc<K>) {
            if !(self.select)(&o) {
                return;
            }
            let Some(h) = (self.property)(&o).map(|p| hash_of(&p)) else {
                return;
            };
            let key = (o.namespace().unwrap_or_default(), o.name_any());
            if self.seen.insert(key, h) != Some(h) {
                self.pending.push_back(o);
            }
        }

        fn compare_all(&mut self) {
            for o in self.shared.state() {
                self.offer(o);
            }
        }
    }
    let rx = shared.subscribe();
    let state = State {
        shared,
        rx,
        seen: HashMap::new(),
        pending: Default::default(),
        started: false,
        property,
        select,
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(o) = st.pending.pop_front() {
                return Some((o, st));
            }
            if !st.started {
                st.shared.wait_synced().await;
                st.started = true;
                st.compare_all();
                if !initial {
                    st.pending.clear();
                }
                continue;
            }
            match st.rx.recv().await {
                Ok(CacheChange::Applied(o)) => st.offer(o),
                // A deletion passes too: whoever depends on the object
                // (an automation on a policy) looks again.
                Ok(CacheChange::Deleted(o)) => {
                    let key = (o.namespace().unwrap_or_default(), o.name_any());
                    if st.seen.remove(&key).is_some() {
                        st.pending.push_back(o);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => st.compare_all(),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// What makes an object of the three kinds worth reconciling again: a new
/// generation (spec), a reconcile request, a deletion, or our finalizer to
/// add. A status write changes none of these.
pub fn reconcile_property<K: Resource>(o: &K) -> Option<(i64, Option<String>, bool, bool)> {
    let meta = o.meta();
    Some((
        meta.generation.unwrap_or(0),
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(crate::api::RECONCILE_REQUEST_ANNOTATION))
            .cloned(),
        meta.deletion_timestamp.is_some(),
        meta.finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == crate::api::FINALIZER)),
    ))
}

/// A kind's cache that may start after the process did (a CRD installed
/// later): none until then.
pub struct Appearing<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    inner: Arc<AppearingInner<K>>,
}

/// The cache once set, and the signal that it was.
type AppearingInner<K> = (std::sync::OnceLock<Arc<Shared<K>>>, watch::Sender<bool>);

impl<K> Clone for Appearing<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn clone(&self) -> Self {
        Appearing {
            inner: self.inner.clone(),
        }
    }
}

impl<K> Default for Appearing<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K> Appearing<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Appearing {
            inner: Arc::new((std::sync::OnceLock::new(), tx)),
        }
    }

    /// The cache, once the kind exists.
    pub fn get(&self) -> Option<Arc<Shared<K>>> {
        self.inner.0.get().cloned()
    }

    /// Sets the cache (the first time only).
    pub fn set(&self, shared: Arc<Shared<K>>) {
        if self.inner.0.set(shared).is_ok() {
            self.inner.1.send_replace(true);
        }
    }

    /// Waits for the cache.
    pub async fn wait(&self) -> Arc<Shared<K>> {
        let mut rx = self.inner.1.subscribe();
        loop {
            if let Some(s) = self.get() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `inner`, as long as `self`.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The caches of a `serve` process.
pub struct Caches {
    pub repositories: Arc<Shared<ImageRepository>>,
    pub policies: Arc<Shared<ImagePolicy>>,
    pub automations: Arc<Shared<ImageUpdateAutomation>>,
    pub sources: Arc<Shared<GitRepository>>,
    pub namespaces: Arc<Shared<Namespace>>,
    /// Secrets' metadata only (names and versions, never their data): a
    /// changed Secret wakes the objects that use it.
    pub secrets: Arc<Shared<PartialObjectMeta<Secret>>>,
    /// Flux's Receivers, from when the kind exists in the cluster (at
    /// start, or once its CRD is installed).
    pub receivers: Appearing<Receiver>,
    /// The published marker index (see [`super::markers`]), when the
    /// webhook is served.
    pub markers: Option<Arc<Shared<ConfigMap>>>,
}

/// What the caches cover.
#[derive(Clone, Debug, Default)]
pub struct CacheScope {
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Where the marker index is published; no index cache when `None`.
    pub markers_namespace: Option<String>,
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

impl Caches {
    /// Starts every watch. The Receiver kind is looked up once: absent, it
    /// has no cache.
    pub async fn start(client: &Client, scope: &CacheScope) -> Caches {
        let wc = watcher::Config::default;
        let ns = &scope.namespace;
        let receivers = Appearing::new();
        {
            let rapi: Api<Receiver> = api(client, ns);
            let found = rapi
                .list(&kube::api::ListParams::default().limit(1))
                .await
                .is_ok();
            if found {
                receivers.set(Shared::start(
                    "Receiver",
                    watcher(rapi, wc()).default_backoff(),
                ));
            } else {
                tracing::info!(
                    "no Receiver kind in the cluster yet: its Receivers are served once its CRD is installed"
                );
                let receivers = receivers.clone();
                tokio::spawn(async move {
                    // Looks for the kind again, from half a second
                    // doubling to ten.
                    let mut delay = std::time::Duration::from_millis(500);
                    loop {
                        tokio::time::sleep(delay).await;
                        if rapi
                            .list(&kube::api::ListParams::default().limit(1))
                            .await
                            .is_ok()
                        {
                            tracing::info!("the Receiver kind appeared: watching Receivers");
                            receivers.set(Shared::start(
                                "Receiver",
                                watcher(rapi, wc()).default_backoff(),
                            ));
                            return;
                        }
                        delay = (delay * 2).min(std::time::Duration::from_secs(10));
                    }
                });
            }
        }
        let markers = scope.markers_namespace.as_ref().map(|mns| {
            let capi: Api<ConfigMap> = Api::namespaced(client.clone(), mns);
            Shared::start(
                "ConfigMap",
                watcher(capi, wc().labels(INDEX_LABEL_SELECTOR)).default_backoff(),
            )
        });
        Caches {
            repositories: Shared::start(
                "ImageRepository",
                watcher(api(client, ns), wc()).default_backoff(),
            ),
            policies: Shared::start(
                "ImagePolicy",
                watcher(api(client, ns), wc()).default_backoff(),
            ),
            automations: Shared::start(
                "ImageUpdateAutomation",
                watcher(api(client, ns), wc()).default_backoff(),
            ),
            sources: Shared::start(
                "GitRepository",
                watcher(api(client, ns), wc()).default_backoff(),
            ),
            namespaces: Shared::start(
                "Namespace",
                watcher(Api::all(client.clone()), wc()).default_backoff(),
            ),
            secrets: Shared::start(
                "Secret",
                watcher(
                    match ns {
                        Some(ns) => {
                            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns)
                        }
                        None => Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                    },
                    wc(),
                )
                .default_backoff(),
            ),
            receivers,
            markers,
        }
    }

    /// Whether every cache holds its first listing.
    pub fn synced(&self) -> bool {
        self.repositories.synced()
            && self.policies.synced()
            && self.automations.synced()
            && self.sources.synced()
            && self.namespaces.synced()
            && self.secrets.synced()
            && self.receivers.get().is_none_or(|r| r.synced())
            && self.markers.as_ref().is_none_or(|m| m.synced())
    }

    /// Waits until every cache holds its first listing.
    pub async fn wait_synced(&self) {
        self.repositories.wait_synced().await;
        self.policies.wait_synced().await;
        self.automations.wait_synced().await;
        self.sources.wait_synced().await;
        self.namespaces.wait_synced().await;
        self.secrets.wait_synced().await;
        if let Some(r) = self.receivers.get() {
            r.wait_synced().await;
        }
        if let Some(m) = &self.markers {
            m.wait_synced().await;
        }
    }

    /// A namespace's labels (empty when it is not known).
    pub fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .store
            .get(&reflector::ObjectRef::new(namespace))
            .map(|n| n.labels().clone())
    }
}

/// A parsed label selector (`--watch-label-selector`), as Kubernetes reads
/// one: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`,
/// separated by commas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    /// Parses a selector; the error says which part is wrong.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        // Split on commas outside parentheses.
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        let mut out = Vec::new();
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            out.push(Self::requirement(part)?);
        }
        Ok(LabelSelector(out))
    }

    fn requirement(part: &str) -> Result<Requirement, String> {
        let bad = || {
            format!(
                "{part:?} is not a label requirement (k=v, k!=v, k, !k, k in (a,b), k notin (a,b))"
            )
        };
        let key_ok = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        let set = |rest: &str| -> Option<Vec<String>> {
            let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            Some(
                inner
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect(),
            )
        };
        if let Some(k) = part.strip_prefix('!') {
            let k = k.trim();
            return key_ok(k)
                .then(|| Requirement::NotExists(k.into()))
                .ok_or_else(bad);
        }
        if let Some((k, v)) = part.split_once("!=") {
            let k = k.trim();
            return key_ok(k)
                .then(|| Requirement::NotEquals(k.into(), v.trim().into()))
                .ok_or_else(bad);
        }
        if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            let k = k.trim();
            return key_ok(k)
                .then(|| Requirement::Equals(k.into(), v.trim().into()))
                .ok_or_else(bad);
        }
        let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
        if let [k, rest] = words.as_slice() {
            let rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("notin") {
                return set(r)
                    .filter(|_| key_ok(k))
                    .map(|v| Requirement::NotIn(k.to_string(), v))
                    .ok_or_else(bad);
            }
            if let Some(r) = rest.strip_prefix("in") {
                return set(r)
                    .filter(|_| key_ok(k))
                    .map(|v| Requirement::In(k.to_string(), v))
                    .ok_or_else(bad);
            }
            return Err(bad());
        }
        key_ok(part)
            .then(|| Requirement::Exists(part.into()))
            .ok_or_else(bad)
    }

    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

/// A watch's failure as a log line says it: an apiserver's answer as its
/// message and code, without the debug dump of its Status that the
/// error's own text carries.
pub fn watch_failure(e: &watcher::Error) -> String {
    let api = |what: &str, e: &kube::Error| match e {
        kube::Error::Api(s) => format!("{what}: {} ({} {})", s.message, s.code, s.reason),
        other => format!("{what}: {other}"),
    };
    match e {
        watcher::Error::InitialListFailed(k) => api("cannot list", k),
        watcher::Error::WatchStartFailed(k) => api("cannot start watching", k),
        watcher::Error::WatchError(s) => {
            format!(
                "the apiserver ended the watch: {} ({} {})",
                s.message, s.code, s.reason
            )
        }
        watcher::Error::WatchFailed(k) => api("the watch failed", k),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_read_as_kubernetes_reads_them() {
        let s = LabelSelector::parse("shard=a").unwrap();
        assert!(s.matches(&labels(&[("shard", "a")])));
        assert!(!s.matches(&labels(&[("shard", "b")])));
        assert!(!s.matches(&labels(&[])));
        // Flux's sharding: the main instance takes what no shard names.
        let main = LabelSelector::parse("!sharding.fluxcd.io/key").unwrap();
        assert!(main.matches(&labels(&[])));
        assert!(!main.matches(&labels(&[("sharding.fluxcd.io/key", "shard1")])));
        let shards = LabelSelector::parse("sharding.fluxcd.io/key in (shard1, shard2)").unwrap();
        assert!(shards.matches(&labels(&[("sharding.fluxcd.io/key", "shard2")])));
        assert!(!shards.matches(&labels(&[("sharding.fluxcd.io/key", "shard3")])));
        assert!(!shards.matches(&labels(&[])));
        let not_in =
            LabelSelector::parse("sharding.fluxcd.io/key notin (shard1),team==web").unwrap();
        assert!(not_in.matches(&labels(&[("team", "web")])));
        assert!(!not_in.matches(&labels(&[
            ("team", "web"),
            ("sharding.fluxcd.io/key", "shard1")
        ])));
        let ne = LabelSelector::parse("tier!=db, app").unwrap();
        assert!(ne.matches(&labels(&[("app", "x")])));
        assert!(!ne.matches(&labels(&[("app", "x"), ("tier", "db")])));
        assert!(LabelSelector::parse("").unwrap().matches(&labels(&[])));
        for bad in ["a b", "k in a,b", "=v", "!", "k in (a"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_status_write_is_not_a_reason_to_reconcile() {
        let mut p: ImagePolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "p", "namespace": "n", "generation": 1},
            "spec": {"imageRepositoryRef": {"name": "r"}, "policy": {"semver": {"range": "1.x"}}}
        }))
        .unwrap();
        let before = reconcile_property(&p);
        p.status = Some(Default::default());
        assert_eq!(reconcile_property(&p), before);
        p.meta_mut().generation = Some(2);
        assert_ne!(reconcile_property(&p), before);
        let g2 = reconcile_property(&p);
        p.annotations_mut().insert(
            crate::api::RECONCILE_REQUEST_ANNOTATION.into(),
            "now".into(),
        );
        assert_ne!(reconcile_property(&p), g2);
        let r = reconcile_property(&p);
        p.finalizers_mut().push(crate::api::FINALIZER.into());
        assert_ne!(reconcile_property(&p), r);
    }

    #[tokio::test]
    async fn changed_passes_each_object_once_per_change_of_its_property() {
        let (events_tx, events_rx) = futures::channel::mpsc::unbounded();
        let shared: Arc<Shared<ConfigMap>> = Shared::start("ConfigMap", events_rx);
        let cm = |name: &str, v: &str| {
            let mut c = ConfigMap::default();
            c.metadata.name = Some(name.into());
            c.metadata.namespace = Some("n".into());
            c.data = Some([("v".to_string(), v.to_string())].into());
            c
        };
        let value = |c: &ConfigMap| c.data.as_ref().and_then(|d| d.get("v").cloned());
        events_tx.unbounded_send(Ok(watcher::Event::Init)).unwrap();
        events_tx
            .unbounded_send(Ok(watcher::Event::InitApply(cm("a", "1"))))
            .unwrap();
        events_tx
            .unbounded_send(Ok(watcher::Event::InitDone))
            .unwrap();
        let stream = changed(
            shared.clone(),
            true,
            |c: &ConfigMap| c.name_any() != "skip",
            value,
        );
        let mut stream = Box::pin(stream);
        let first = stream.next().await.unwrap();
        assert_eq!(first.name_any(), "a");
        // The same value again, another object's, a skipped one, a change.
        for c in [cm("a", "1"), cm("skip", "1"), cm("b", "1"), cm("a", "2")] {
            events_tx
                .unbounded_send(Ok(watcher::Event::Apply(c)))
                .unwrap();
        }
        let next = stream.next().await.unwrap();
        assert_eq!(
            (next.name_any(), value(&next)),
            ("b".into(), Some("1".into()))
        );
        let next = stream.next().await.unwrap();
        assert_eq!(
            (next.name_any(), value(&next)),
            ("a".into(), Some("2".into()))
        );
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(100), stream.next())
                .await
                .is_err()
        );
    }
}
