//! What the rules know of the cluster: a read-only view, answered from memory
//! with no I/O. The serve side keeps it current from watches (Namespaces,
//! ImageRepositories, ImagePolicies, and the workloads that make others:
//! [`OwnerIndex`]) and from the automation controller's checkouts (the
//! marker index), and never calls the apiserver per request.

use imageauto_core::api::{
    AccessFrom, ImagePolicy, ImageRepository, ResourceExt,
    plan::{access_allowed, repository_of},
};
use imageauto_core::reference::normalized_repository;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

/// The namespace label by which an administrator says that the
/// ImagePolicies of a namespace govern images in every namespace (Flux's
/// usual layout: the policies in `flux-system`, the workloads elsewhere).
pub const POLICIES_LABEL: &str = "imageauto.dev/policies";
/// The value of [`POLICIES_LABEL`] that does so.
pub const POLICIES_CLUSTER: &str = "cluster";

/// A namespaced object's namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `NAMESPACE:NAME`, as a marker names an ImagePolicy.
    pub fn marker_ref(&self) -> String {
        format!("{}:{}", self.namespace, self.name)
    }
}

impl fmt::Display for ObjectKey {
    /// `NAMESPACE/NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An ImagePolicy that tracks a repository, with what the rules need to
/// decide which namespaces it reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingPolicy {
    /// The ImagePolicy.
    pub policy: ObjectKey,
    /// Its ImageRepository.
    pub repository: ObjectKey,
    /// The repository's `spec.image`, as written.
    pub image: String,
    /// The repository's `spec.accessFrom`.
    pub access_from: Option<AccessFrom>,
    /// The policy's namespace is labelled `imageauto.dev/policies: cluster`
    /// ([`POLICIES_LABEL`]): its policies govern images in every namespace.
    pub cluster_wide: bool,
}

impl TrackingPolicy {
    /// Whether the policy governs images in `namespace` (whose labels are
    /// `labels`): it lives there, its namespace serves all namespaces
    /// ([`TrackingPolicy::cluster_wide`], an administrator's label), or its
    /// ImageRepository's accessFrom selects the namespace (not when
    /// cross-namespace references are switched off).
    pub fn reaches(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        cross_namespace_refs: bool,
    ) -> bool {
        self.policy.namespace == namespace
            || self.cluster_wide
            || (cross_namespace_refs && self.access_from.as_ref().is_some_and(|a| a.allows(labels)))
    }
}

/// Whether a namespace's labels make its ImagePolicies govern images in
/// every namespace.
pub fn serves_all_namespaces(labels: &BTreeMap<String, String>) -> bool {
    labels.get(POLICIES_LABEL).map(String::as_str) == Some(POLICIES_CLUSTER)
}

/// A workload that makes others (a Deployment its ReplicaSets, a
/// ReplicaSet, StatefulSet, DaemonSet or Job its Pods, a CronJob its Jobs),
/// as far as the workload rule needs it to believe an object's claim that
/// this workload made it: which one it is, and the images its pod template
/// would give each container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadOwner {
    /// `Deployment`, `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job` or
    /// `CronJob`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Container name (init containers included) to the images the pod
    /// template gives it (one, unless the template repeats a name).
    pub images: BTreeMap<String, BTreeSet<String>>,
}

impl WorkloadOwner {
    /// Whether the pod template gives container `name` the image `image`.
    pub fn makes(&self, name: &str, image: &str) -> bool {
        self.images.get(name).is_some_and(|i| i.contains(image))
    }
}

type OwnerKey = (String, String, String);

fn owner_key(kind: &str, namespace: &str, name: &str) -> OwnerKey {
    (kind.to_string(), namespace.to_string(), name.to_string())
}

/// The workloads that make others, by kind, namespace and name. Shared
/// between the watches that fill it and the views that read it, and
/// changed in place: an owner is known as soon as its watch reports it,
/// without rebuilding a view (a controller creates a Deployment's
/// ReplicaSet a moment after the Deployment appears).
#[derive(Debug, Default)]
pub struct OwnerIndex {
    owners: RwLock<HashMap<OwnerKey, Arc<WorkloadOwner>>>,
}

impl OwnerIndex {
    /// An index holding `owners`.
    pub fn new(owners: impl IntoIterator<Item = WorkloadOwner>) -> Self {
        let index = OwnerIndex::default();
        for o in owners {
            index.insert(o);
        }
        index
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<OwnerKey, Arc<WorkloadOwner>>> {
        // A poisoned lock only means a writer panicked between two whole
        // entries: every entry in the map is a complete one.
        self.owners.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<OwnerKey, Arc<WorkloadOwner>>> {
        self.owners.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces an owner; whether the index changed.
    pub fn insert(&self, owner: WorkloadOwner) -> bool {
        let key = owner_key(&owner.kind, &owner.namespace, &owner.name);
        let mut map = self.write();
        if map.get(&key).is_some_and(|o| **o == owner) {
            return false;
        }
        map.insert(key, Arc::new(owner));
        true
    }

    /// Removes the owner of that kind, namespace and name when it has
    /// `uid` (a deletion reported late never removes its successor).
    pub fn remove(&self, kind: &str, namespace: &str, name: &str, uid: &str) -> bool {
        let key = owner_key(kind, namespace, name);
        let mut map = self.write();
        if map.get(&key).is_some_and(|o| o.uid == uid) {
            map.remove(&key);
            return true;
        }
        false
    }

    /// Replaces every owner of `kind` with `owners` (a new listing).
    pub fn replace_kind(&self, kind: &str, owners: impl IntoIterator<Item = WorkloadOwner>) {
        let fresh: Vec<(OwnerKey, Arc<WorkloadOwner>)> = owners
            .into_iter()
            .filter(|o| o.kind == kind)
            .map(|o| (owner_key(&o.kind, &o.namespace, &o.name), Arc::new(o)))
            .collect();
        let mut map = self.write();
        map.retain(|k, _| k.0 != kind);
        map.extend(fresh);
    }

    /// The owner of that kind, namespace and name.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Arc<WorkloadOwner>> {
        self.read().get(&owner_key(kind, namespace, name)).cloned()
    }

    /// How many owners the index holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One container of one workload: the key of the marker index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadContainer {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet`, `Job`,
    /// `CronJob` or `Pod`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The container's name (init and ephemeral containers included).
    pub container: String,
}

/// What the automation's last checkout says about one container's image
/// field: where it is, and the marker on it, if any.
///
/// The automation controller builds these when it fetches: for every
/// workload under the ImageUpdateAutomation's `update.path`, the line of
/// each container's `image:` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerLookup {
    /// The file, relative to the repository root (`clusters/prod/web.yaml`).
    pub file: String,
    /// The 1-based line of the image field.
    pub line: usize,
    /// The ImagePolicy the field's marker names, `NAMESPACE:NAME` (a
    /// suffix such as `:tag` is ignored); `None` when the field has no marker.
    pub policy: Option<String>,
    /// The ImageUpdateAutomation whose checkout the entry comes from.
    pub automation: ObjectKey,
    /// The Flux Kustomization that applies the file, when known. A workload
    /// applied by another Kustomization (its `kustomize.toolkit.fluxcd.io/*`
    /// labels) is not held to this entry.
    pub kustomization: Option<ObjectKey>,
}

impl MarkerLookup {
    /// The marker's policy, without suffix.
    pub fn policy_key(&self) -> Option<ObjectKey> {
        let p = self.policy.as_deref()?;
        let mut parts = p.splitn(3, ':');
        let ns = parts.next().filter(|s| !s.is_empty())?;
        let name = parts.next().filter(|s| !s.is_empty())?;
        Some(ObjectKey::new(ns, name))
    }
}

/// The cluster as the rules see it. Implementations answer from memory: a
/// rule calls these on the request path, within the apiserver's timeout.
pub trait ClusterView: Send + Sync {
    /// The labels of a namespace; `None` when the namespace is not known.
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;

    /// Every ImagePolicy whose ImageRepository's `spec.image` normalises to
    /// `normalized_repository` (`docker.io/library/nginx`), whatever
    /// namespace it is in, in a stable order. Policies whose repository
    /// refuses them (accessFrom) are left out: they track nothing.
    fn policies_tracking(&self, normalized_repository: &str) -> Vec<TrackingPolicy>;

    /// An ImageRepository by namespace and name.
    fn repository(&self, namespace: &str, name: &str) -> Option<ImageRepository>;

    /// What the automation's checkout holds for a container's image field.
    fn marker(&self, key: &WorkloadContainer) -> Option<MarkerLookup>;

    /// Whether ImagePolicies may use ImageRepositories of other namespaces
    /// (false with `serve --no-cross-namespace-refs`).
    fn cross_namespace_refs(&self) -> bool {
        true
    }

    /// A workload that makes others ([`WorkloadOwner`]), by kind
    /// (`ReplicaSet`...), namespace and name; `None` when not known.
    fn owner(&self, _kind: &str, _namespace: &str, _name: &str) -> Option<Arc<WorkloadOwner>> {
        None
    }

    /// The controller's own namespace, whose workloads are never judged
    /// (nor are `kube-system`'s).
    fn controller_namespace(&self) -> Option<String> {
        None
    }
}

/// A [`ClusterView`] built from lists of objects, with the index from
/// normalised repository to policies prebuilt. Build a new one when the
/// lists change and swap it in (see [`SharedView`]).
#[derive(Clone, Debug)]
pub struct MemoryView {
    namespaces: HashMap<String, BTreeMap<String, String>>,
    repositories: HashMap<ObjectKey, ImageRepository>,
    tracking: HashMap<String, Vec<TrackingPolicy>>,
    markers: HashMap<WorkloadContainer, MarkerLookup>,
    cross_namespace_refs: bool,
    owners: Arc<OwnerIndex>,
    controller_namespace: Option<String>,
}

impl Default for MemoryView {
    /// An empty view: no namespace, no policy, no marker.
    fn default() -> Self {
        Self::new([], [], [], [])
    }
}

impl MemoryView {
    /// Builds the view. A policy tracks a repository when the repository it
    /// names exists, admits it (same namespace, or accessFrom selecting the
    /// policy's namespace) and has an image that parses. Objects without a
    /// namespace are ignored.
    pub fn new(
        policies: impl IntoIterator<Item = ImagePolicy>,
        repositories: impl IntoIterator<Item = ImageRepository>,
        namespaces: impl IntoIterator<Item = (String, BTreeMap<String, String>)>,
        markers: impl IntoIterator<Item = (WorkloadContainer, MarkerLookup)>,
    ) -> Self {
        Self::with_cross_namespace_refs(policies, repositories, namespaces, markers, true)
    }

    /// As [`MemoryView::new`], with cross-namespace references switched on
    /// or off (`serve --no-cross-namespace-refs`).
    pub fn with_cross_namespace_refs(
        policies: impl IntoIterator<Item = ImagePolicy>,
        repositories: impl IntoIterator<Item = ImageRepository>,
        namespaces: impl IntoIterator<Item = (String, BTreeMap<String, String>)>,
        markers: impl IntoIterator<Item = (WorkloadContainer, MarkerLookup)>,
        cross_namespace_refs: bool,
    ) -> Self {
        let namespaces: HashMap<_, _> = namespaces.into_iter().collect();
        let repositories: HashMap<ObjectKey, ImageRepository> = repositories
            .into_iter()
            .filter_map(|r| Some((ObjectKey::new(r.namespace()?, r.name_any()), r)))
            .collect();
        let empty = BTreeMap::new();
        let mut tracking: HashMap<String, Vec<TrackingPolicy>> = HashMap::new();
        for p in policies {
            let Some(ns) = p.namespace() else { continue };
            let (repo_ns, repo_name) = repository_of(&p);
            let key = ObjectKey::new(repo_ns, repo_name);
            let Some(repo) = repositories.get(&key) else {
                continue;
            };
            let labels = namespaces.get(&ns).unwrap_or(&empty);
            if !access_allowed(repo, &ns, labels, cross_namespace_refs) {
                continue;
            }
            let Some(normalized) = normalized_repository(&repo.spec.image) else {
                continue;
            };
            let cluster_wide = serves_all_namespaces(labels);
            tracking
                .entry(normalized)
                .or_default()
                .push(TrackingPolicy {
                    policy: ObjectKey::new(ns, p.name_any()),
                    repository: key,
                    image: repo.spec.image.clone(),
                    access_from: repo.spec.access_from.clone(),
                    cluster_wide,
                });
        }
        for list in tracking.values_mut() {
            list.sort_by(|a, b| a.policy.cmp(&b.policy));
            list.dedup_by(|a, b| a.policy == b.policy);
        }
        MemoryView {
            namespaces,
            repositories,
            tracking,
            markers: markers.into_iter().collect(),
            cross_namespace_refs,
            owners: Arc::default(),
            controller_namespace: None,
        }
    }

    /// The view with these owners (a Deployment, the ReplicaSet it made...).
    pub fn with_owners(self, owners: impl IntoIterator<Item = WorkloadOwner>) -> Self {
        self.with_owner_index(Arc::new(OwnerIndex::new(owners)))
    }

    /// The view reading its owners from `index`, which its watches keep
    /// current in place.
    pub fn with_owner_index(mut self, index: Arc<OwnerIndex>) -> Self {
        self.owners = index;
        self
    }

    /// The view knowing the controller's own namespace (never judged).
    pub fn with_controller_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.controller_namespace = Some(namespace.into());
        self
    }

    /// How many (policy, repository) pairs track something.
    pub fn tracking_count(&self) -> usize {
        self.tracking.values().map(Vec::len).sum()
    }
}

impl ClusterView for MemoryView {
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(namespace).cloned()
    }

    fn policies_tracking(&self, normalized_repository: &str) -> Vec<TrackingPolicy> {
        self.tracking
            .get(normalized_repository)
            .cloned()
            .unwrap_or_default()
    }

    fn repository(&self, namespace: &str, name: &str) -> Option<ImageRepository> {
        self.repositories
            .get(&ObjectKey::new(namespace, name))
            .cloned()
    }

    fn marker(&self, key: &WorkloadContainer) -> Option<MarkerLookup> {
        self.markers.get(key).cloned()
    }

    fn cross_namespace_refs(&self) -> bool {
        self.cross_namespace_refs
    }

    fn owner(&self, kind: &str, namespace: &str, name: &str) -> Option<Arc<WorkloadOwner>> {
        self.owners.get(kind, namespace, name)
    }

    fn controller_namespace(&self) -> Option<String> {
        self.controller_namespace.clone()
    }
}

/// A [`ClusterView`] whose whole content is swapped at once: the serve side
/// builds a new [`MemoryView`] when a watch reports a change and stores it.
/// Each call reads the snapshot current at that moment, so the calls of one
/// request may straddle a swap: that request is then judged partly by the
/// objects of just before the change, partly by those just after.
#[derive(Debug, Default)]
pub struct SharedView {
    current: RwLock<Arc<MemoryView>>,
}

impl SharedView {
    pub fn new(view: MemoryView) -> Self {
        Self {
            current: RwLock::new(Arc::new(view)),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<MemoryView> {
        // A poisoned lock only means a writer panicked between two whole
        // snapshots: the Arc inside is still a complete one.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the snapshot.
    pub fn store(&self, view: MemoryView) {
        let view = Arc::new(view);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

impl ClusterView for SharedView {
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.load().namespace_labels(namespace)
    }
    fn policies_tracking(&self, normalized_repository: &str) -> Vec<TrackingPolicy> {
        self.load().policies_tracking(normalized_repository)
    }
    fn repository(&self, namespace: &str, name: &str) -> Option<ImageRepository> {
        self.load().repository(namespace, name)
    }
    fn marker(&self, key: &WorkloadContainer) -> Option<MarkerLookup> {
        self.load().marker(key)
    }
    fn cross_namespace_refs(&self) -> bool {
        self.load().cross_namespace_refs()
    }
    fn owner(&self, kind: &str, namespace: &str, name: &str) -> Option<Arc<WorkloadOwner>> {
        self.load().owner(kind, namespace, name)
    }
    fn controller_namespace(&self) -> Option<String> {
        self.load().controller_namespace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imageauto_core::api::{
        ImagePolicySpec, ImageRepositorySpec, NamespaceSelector, NamespacedObjectReference,
    };

    pub(crate) fn repo(
        ns: &str,
        name: &str,
        image: &str,
        access: Option<&[(&str, &str)]>,
    ) -> ImageRepository {
        let mut r = ImageRepository::new(
            name,
            ImageRepositorySpec {
                image: image.into(),
                interval: "5m".into(),
                timeout: None,
                secret_ref: None,
                service_account_name: None,
                cert_secret_ref: None,
                proxy_secret_ref: None,
                suspend: false,
                access_from: access.map(|labels| AccessFrom {
                    namespace_selectors: vec![NamespaceSelector {
                        match_labels: labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    }],
                }),
                exclusion_list: vec![],
                provider: Default::default(),
                insecure: false,
            },
        );
        r.metadata.namespace = Some(ns.into());
        r
    }

    fn policy(ns: &str, name: &str, repo_ns: Option<&str>, repo: &str) -> ImagePolicy {
        let mut p = ImagePolicy::new(
            name,
            ImagePolicySpec {
                image_repository_ref: NamespacedObjectReference {
                    name: repo.into(),
                    namespace: repo_ns.map(Into::into),
                },
                policy: Default::default(),
                filter_tags: None,
                digest_reflection_policy: Default::default(),
                interval: None,
                suspend: false,
            },
        );
        p.metadata.namespace = Some(ns.into());
        p
    }

    #[test]
    fn index_by_normalised_repository() {
        let view = MemoryView::new(
            [
                policy("apps", "nginx", None, "nginx"),
                policy("apps", "orphan", None, "missing"),
                // Refused by the repository: tracks nothing.
                policy("other", "sneaky", Some("apps"), "nginx"),
                policy("team", "shared", Some("flux"), "web"),
            ],
            [
                repo("apps", "nginx", "index.docker.io/library/nginx", None),
                repo("flux", "web", "ghcr.io/org/web", Some(&[("team", "yes")])),
            ],
            [(
                "team".to_string(),
                BTreeMap::from([("team".into(), "yes".into())]),
            )],
            [],
        );
        let t = view.policies_tracking("docker.io/library/nginx");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].policy, ObjectKey::new("apps", "nginx"));
        assert_eq!(t[0].image, "index.docker.io/library/nginx");
        let t = view.policies_tracking("ghcr.io/org/web");
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].policy.marker_ref(), "team:shared");
        assert_eq!(view.tracking_count(), 2);
        assert!(view.policies_tracking("ghcr.io/org/api").is_empty());

        let closed = MemoryView::with_cross_namespace_refs(
            [policy("team", "shared", Some("flux"), "web")],
            [repo(
                "flux",
                "web",
                "ghcr.io/org/web",
                Some(&[("team", "yes")]),
            )],
            [(
                "team".to_string(),
                BTreeMap::from([("team".into(), "yes".into())]),
            )],
            [],
            false,
        );
        assert!(closed.policies_tracking("ghcr.io/org/web").is_empty());
        assert!(!closed.cross_namespace_refs());
    }

    #[test]
    fn reach() {
        let t = TrackingPolicy {
            policy: ObjectKey::new("flux", "web"),
            repository: ObjectKey::new("flux", "web"),
            image: "ghcr.io/org/web".into(),
            access_from: Some(AccessFrom {
                namespace_selectors: vec![NamespaceSelector {
                    match_labels: BTreeMap::from([("env".into(), "prod".into())]),
                }],
            }),
            cluster_wide: false,
        };
        let prod = BTreeMap::from([("env".into(), "prod".into())]);
        assert!(t.reaches("flux", &BTreeMap::new(), false));
        assert!(t.reaches("apps", &prod, true));
        assert!(!t.reaches("apps", &prod, false));
        assert!(!t.reaches("apps", &BTreeMap::new(), true));
        // The administrator's label reaches every namespace, cross-namespace
        // references or not.
        let everywhere = TrackingPolicy {
            cluster_wide: true,
            access_from: None,
            ..t
        };
        assert!(everywhere.reaches("apps", &BTreeMap::new(), false));
    }

    #[test]
    fn a_namespace_labelled_cluster_serves_all() {
        let cluster = BTreeMap::from([(POLICIES_LABEL.to_string(), "cluster".to_string())]);
        let view = MemoryView::new(
            [
                policy("flux-system", "web", None, "web"),
                policy("team", "api", None, "api"),
            ],
            [
                repo("flux-system", "web", "ghcr.io/org/web", None),
                repo("team", "api", "ghcr.io/org/api", None),
            ],
            [
                ("flux-system".to_string(), cluster),
                (
                    "team".to_string(),
                    BTreeMap::from([(POLICIES_LABEL.to_string(), "yes".to_string())]),
                ),
            ],
            [],
        );
        assert!(view.policies_tracking("ghcr.io/org/web")[0].cluster_wide);
        assert!(!view.policies_tracking("ghcr.io/org/api")[0].cluster_wide);
    }

    fn owner(kind: &str, name: &str, uid: &str, images: &[(&str, &str)]) -> WorkloadOwner {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (c, i) in images {
            map.entry(c.to_string()).or_default().insert(i.to_string());
        }
        WorkloadOwner {
            kind: kind.into(),
            namespace: "apps".into(),
            name: name.into(),
            uid: uid.into(),
            images: map,
        }
    }

    #[test]
    fn owner_index_in_place() {
        let index = Arc::new(OwnerIndex::new([owner(
            "ReplicaSet",
            "web-1",
            "u1",
            &[("web", "nginx:1")],
        )]));
        let view = MemoryView::default().with_owner_index(index.clone());
        let shared = SharedView::new(view);
        let rs = shared.owner("ReplicaSet", "apps", "web-1").unwrap();
        assert!(rs.makes("web", "nginx:1"));
        assert!(!rs.makes("web", "nginx:2"));
        assert!(!rs.makes("sidecar", "nginx:1"));
        assert!(shared.owner("StatefulSet", "apps", "web-1").is_none());
        assert!(shared.owner("ReplicaSet", "other", "web-1").is_none());
        // Changed in place: the view sees it without a rebuild.
        assert!(index.insert(owner("Deployment", "web", "u0", &[("web", "nginx:1")])));
        assert!(!index.insert(owner("Deployment", "web", "u0", &[("web", "nginx:1")])));
        assert_eq!(shared.owner("Deployment", "apps", "web").unwrap().uid, "u0");
        // A late deletion of a predecessor leaves its successor.
        assert!(index.insert(owner("Deployment", "web", "u2", &[("web", "nginx:1")])));
        assert!(!index.remove("Deployment", "apps", "web", "u0"));
        assert!(index.remove("Deployment", "apps", "web", "u2"));
        assert!(shared.owner("Deployment", "apps", "web").is_none());
        // A new listing of one kind replaces that kind only.
        index.insert(owner("Deployment", "web", "u3", &[]));
        index.replace_kind("ReplicaSet", [owner("ReplicaSet", "web-2", "u4", &[])]);
        assert!(shared.owner("ReplicaSet", "apps", "web-1").is_none());
        assert!(shared.owner("ReplicaSet", "apps", "web-2").is_some());
        assert!(shared.owner("Deployment", "apps", "web").is_some());
        assert_eq!(index.len(), 2);
        assert_eq!(
            MemoryView::default()
                .with_controller_namespace("imageauto-system")
                .controller_namespace()
                .as_deref(),
            Some("imageauto-system")
        );
    }

    #[test]
    fn marker_policy_key() {
        let mut m = MarkerLookup {
            file: "a.yaml".into(),
            line: 3,
            policy: Some("flux:web:tag".into()),
            automation: ObjectKey::new("flux", "auto"),
            kustomization: None,
        };
        assert_eq!(m.policy_key(), Some(ObjectKey::new("flux", "web")));
        m.policy = Some("web".into());
        assert_eq!(m.policy_key(), None);
    }

    #[test]
    fn shared_view_swaps() {
        let shared = SharedView::default();
        assert!(shared.namespace_labels("apps").is_none());
        shared.store(MemoryView::new(
            [],
            [],
            [("apps".to_string(), BTreeMap::new())],
            [],
        ));
        assert_eq!(shared.namespace_labels("apps"), Some(BTreeMap::new()));
    }
}
