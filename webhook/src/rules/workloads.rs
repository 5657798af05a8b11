//! `/validate/workloads`: refuse workloads whose images no ImagePolicy
//! governs, in the namespaces that opt in.
//!
//! Judged: Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and
//! CronJob (any version of their groups: `batch/v1beta1` CronJobs of older
//! clusters too); every container, init container and ephemeral container;
//! CREATE and UPDATE. An UPDATE is judged only on the containers whose image
//! changed (or that are new): scaling, relabelling, a rollout restart pass.
//!
//! The steps, in order:
//! 1. Other operations, and sub-resources other than `ephemeralcontainers`
//!    (`status`, `scale`), are admitted: they carry no new image.
//! 2. `kube-system` and the controller's own namespace
//!    ([`ClusterView::controller_namespace`]) are never judged, whatever
//!    their labels say. The configuration's namespace selector leaves them
//!    out too, but by the label `kubernetes.io/metadata.name`, which
//!    namespaces lack before Kubernetes 1.21: the rule names them itself.
//! 3. An object whose controller (its `ownerReferences` entry with
//!    `controller: true`) is a workload that makes it (ReplicaSet ←
//!    Deployment; Pod ← ReplicaSet, StatefulSet, DaemonSet, Job; Job ←
//!    CronJob) is admitted *for its owner*, without being judged, when all
//!    of these hold:
//!    - the owner is in the view ([`ClusterView::owner`]) with that kind,
//!      name and uid;
//!    - every container image of the object is one that the owner's pod
//!      template gives the container of that name: the object is what the
//!      owner makes;
//!    - the request comes from the cluster's controller for the owner's
//!      kind (`userInfo`: `system:kube-controller-manager`, or
//!      `system:serviceaccount:kube-system:replicaset-controller` and its
//!      siblings when the controller manager uses service-account
//!      credentials).
//!
//!    The owner was judged when it was applied, and a Deployment admitted
//!    today must never have its Pods refused tomorrow (after a policy was
//!    deleted, or an exemption given on the Deployment only). Whoever
//!    creates an object writes its `ownerReferences`, so the claim proves
//!    nothing by itself: naming an owner that does not exist, a real
//!    owner's uid under other images, or an owner of another kind gets the
//!    object judged on its own. The requester's name is a second signal,
//!    never enough alone. Otherwise the object is judged on its own (the
//!    steps below), and a refusal says why its owner was not believed.
//!    Judged on their own, too: a Job made by `kubectl create job
//!    --from=cronjob/…` (a user's request; an exemption on the CronJob's
//!    `jobTemplate` carries over to it), an object created before the view
//!    holds its owner (a controller tries again), and the Pods a
//!    StatefulSet recreates from an older revision during a partitioned
//!    rollout (their images are no longer the template's).
//! 4. The namespace's label `imageauto.dev/enforce` decides: `deny` refuses
//!    findings, `warn` admits them with one warning each, anything else (or
//!    no label) admits without a word. A namespace the view does not know
//!    (yet) is refused as a transient error: the webhook is only called for
//!    opted-in namespaces, so an unknown one is a cache that lags behind a
//!    namespace created a moment ago.
//! 5. An UPDATE that changes no image is admitted.
//! 6. `imageauto.dev/exempt: "<reason>"` on the workload or its pod template
//!    admits it with a warning naming the reason; an empty reason is a
//!    finding of its own.
//! 7. Each judged container's image must be *governed*: an ImagePolicy
//!    tracks an ImageRepository whose `spec.image` normalises to the
//!    image's repository, and that policy reaches the workload, in one of
//!    three ways:
//!    - its namespace is labelled `imageauto.dev/policies: cluster` (an
//!      administrator's word that its policies serve every namespace:
//!      Flux's usual layout, policies in `flux-system`, workloads
//!      elsewhere; `install --policy-namespace`);
//!    - the workload's Git file carries a marker naming it, in the marker
//!      index (as in step 8: the automation's own namespace's policy, the
//!      workload applied by Flux's kustomize-controller); across
//!      namespaces only when cross-namespace references are on;
//!    - it lives in the workload's namespace, or its ImageRepository's
//!      `accessFrom` selects the namespace's labels (not with
//!      cross-namespace references switched off).
//! 8. Marker check: when the workload carries Flux's kustomize-controller
//!    labels (`kustomize.toolkit.fluxcd.io/name` and `/namespace`) and the
//!    view's marker index has an entry for (kind, namespace, name,
//!    container), the image field in the automation's checkout must carry a
//!    marker naming an ImagePolicy of the automation's namespace that tracks
//!    the image's repository (Flux updates only markers of its own
//!    namespace's policies). An entry recorded for another Kustomization
//!    than the workload's labels name does not apply.
//!
//! A refusal lists one finding per line, cut to
//! [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES) (the first findings,
//! then how many more); warnings are cut to [`MAX_WARNINGS`](super::MAX_WARNINGS).

use super::{Verdict, printable};
use crate::review::{AdmissionRequest, GroupVersionKind, Operation};
use crate::view::{
    ClusterView, MarkerLookup, ObjectKey, POLICIES_CLUSTER, POLICIES_LABEL, TrackingPolicy,
    WorkloadContainer,
};
use imageauto_core::reference::Reference;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The namespace label that opts in: `deny` or `warn`.
pub const ENFORCE_LABEL: &str = "imageauto.dev/enforce";
/// The annotation that exempts a workload, with a reason.
pub const EXEMPT_ANNOTATION: &str = "imageauto.dev/exempt";
/// kustomize-controller's label naming the Kustomization that applied an object.
pub const KUSTOMIZE_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// kustomize-controller's label naming that Kustomization's namespace.
pub const KUSTOMIZE_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// Never judged, whatever its labels say (nor is the controller's own
/// namespace).
pub const SYSTEM_NAMESPACE: &str = "kube-system";

/// The kinds judged: those the lint judges in files.
pub use imageauto_core::workloads::WORKLOAD_KINDS;

/// What an opted-in namespace does with findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// Refuse.
    Deny,
    /// Admit with a warning per finding.
    Warn,
}

impl Enforcement {
    /// The enforcement a namespace's labels ask for, if any.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        match labels.get(ENFORCE_LABEL).map(String::as_str) {
            Some("deny") => Some(Enforcement::Deny),
            Some("warn") => Some(Enforcement::Warn),
            _ => None,
        }
    }
}

/// The kind's canonical name when `gvk` is a judged workload.
fn workload_kind(gvk: &GroupVersionKind) -> Option<&'static str> {
    let kind = WORKLOAD_KINDS.iter().copied().find(|k| *k == gvk.kind)?;
    let group_ok = match kind {
        "Pod" => gvk.group.is_empty(),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            matches!(gvk.group.as_str(), "apps" | "extensions")
        }
        "StatefulSet" => gvk.group == "apps",
        _ => gvk.group == "batch",
    };
    group_ok.then_some(kind)
}

/// One container of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Container<'a> {
    list: &'static str,
    name: &'a str,
    image: &'a str,
}

fn pod_spec<'a>(kind: &str, object: &'a Value) -> Option<&'a Value> {
    match kind {
        "Pod" => object.get("spec"),
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => object.pointer("/spec/template/spec"),
    }
}

fn containers<'a>(kind: &str, object: &'a Value) -> Vec<Container<'a>> {
    let Some(spec) = pod_spec(kind, object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(items) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for c in items {
            let Some(image) = c.get("image").and_then(Value::as_str) else {
                continue;
            };
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            out.push(Container { list, name, image });
        }
    }
    out
}

/// An object's claim to be made by a workload: its controller
/// ownerReference, when that names a kind that makes objects of the
/// object's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OwnerClaim<'a> {
    /// The owner's kind, canonical (`ReplicaSet`...).
    kind: &'static str,
    name: &'a str,
    uid: &'a str,
}

fn owner_claim<'a>(kind: &str, object: &'a Value) -> Option<OwnerClaim<'a>> {
    let refs = object.pointer("/metadata/ownerReferences")?.as_array()?;
    let owner = refs
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    let owner_kind = owner.get("kind")?.as_str()?;
    let group = owner
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .map_or("", |(g, _)| g);
    let (owner_kind, makes): (&'static str, &str) = match (group, owner_kind) {
        ("apps" | "extensions", "Deployment") => ("Deployment", "ReplicaSet"),
        ("apps" | "extensions", "ReplicaSet") => ("ReplicaSet", "Pod"),
        ("apps" | "extensions", "DaemonSet") => ("DaemonSet", "Pod"),
        ("apps", "StatefulSet") => ("StatefulSet", "Pod"),
        ("batch", "Job") => ("Job", "Pod"),
        ("batch", "CronJob") => ("CronJob", "Job"),
        _ => return None,
    };
    (makes == kind).then(|| OwnerClaim {
        kind: owner_kind,
        name: owner.get("name").and_then(Value::as_str).unwrap_or(""),
        uid: owner.get("uid").and_then(Value::as_str).unwrap_or(""),
    })
}

/// The service account (in kube-system) of the kube-controller-manager
/// controller that makes the objects of workloads of `owner_kind`, when
/// the controller manager runs with `--use-service-account-credentials`.
fn controller_account(owner_kind: &str) -> Option<&'static str> {
    Some(match owner_kind {
        "Deployment" => "deployment-controller",
        "ReplicaSet" => "replicaset-controller",
        "StatefulSet" => "statefulset-controller",
        "DaemonSet" => "daemon-set-controller",
        "Job" => "job-controller",
        "CronJob" => "cronjob-controller",
        _ => return None,
    })
}

/// Whether `username` is the cluster's controller for `owner_kind`: the
/// controller manager itself, or that controller's service account.
fn is_controller(owner_kind: &str, username: &str) -> bool {
    if username == "system:kube-controller-manager" {
        return true;
    }
    controller_account(owner_kind).is_some_and(|sa| {
        username
            .strip_prefix("system:serviceaccount:kube-system:")
            .is_some_and(|u| u == sa)
    })
}

/// Why the object's claim to be made by its owner is not believed (step
/// 3); `None` when it is.
fn disbelief(
    claim: &OwnerClaim<'_>,
    kind: &str,
    namespace: &str,
    object: &Value,
    username: &str,
    view: &dyn ClusterView,
) -> Option<String> {
    let owner = format!("{} {namespace}/{}", claim.kind, printable(claim.name, 253));
    let Some(known) = view.owner(claim.kind, namespace, claim.name) else {
        return Some(format!("imageauto knows no {owner}"));
    };
    if known.uid != claim.uid {
        return Some(format!(
            "{owner} has another uid than {:?}",
            printable(claim.uid, 64)
        ));
    }
    if let Some(c) = containers(kind, object)
        .into_iter()
        .find(|c| !known.makes(c.name, c.image))
    {
        return Some(format!(
            "the pod template of {owner} gives container {:?} no image {:?}",
            printable(c.name, 63),
            printable(c.image, 200)
        ));
    }
    if !is_controller(claim.kind, username) {
        return Some(format!(
            "the request comes from {:?}, not from the cluster's controller of {}s",
            printable(username, 128),
            claim.kind
        ));
    }
    None
}

fn annotation<'a>(meta: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    meta?.get("annotations")?.get(key)
}

fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get("labels")?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// The exemption of the workload (its own annotation first, then its pod
/// template's), as written; `Some("")` for an empty one.
fn exemption(kind: &str, object: &Value) -> Option<String> {
    let own = object.get("metadata");
    let templates: Vec<Option<&Value>> = match kind {
        "Pod" => vec![],
        "CronJob" => vec![
            object.pointer("/spec/jobTemplate/metadata"),
            object.pointer("/spec/jobTemplate/spec/template/metadata"),
        ],
        _ => vec![object.pointer("/spec/template/metadata")],
    };
    std::iter::once(own)
        .chain(templates)
        .find_map(|m| annotation(m, EXEMPT_ANNOTATION))
        .map(|v| v.as_str().unwrap_or("").to_string())
}

/// Validates a workload admission request.
pub fn validate(request: &AdmissionRequest, view: &dyn ClusterView) -> Verdict {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    if let Some(sub) = request.sub_resource.as_deref()
        && !sub.is_empty()
        && sub != "ephemeralcontainers"
    {
        return Verdict::allow();
    }
    let Some(kind) = workload_kind(&request.kind) else {
        let gvk = &request.kind;
        return Verdict::allow_with(vec![format!(
            "imageauto: /validate/workloads does not judge {} ({}): the ValidatingWebhookConfiguration should not send it here",
            printable(&gvk.kind, 63),
            printable(&gvk.api_version(), 100),
        )]);
    };
    let Some(object) = request.object.as_ref() else {
        return Verdict::deny(
            400,
            "BadRequest",
            format!("the {} request carries no object", kind),
            vec![],
        );
    };
    let Some(namespace) = request.namespace() else {
        return Verdict::allow();
    };
    if namespace == SYSTEM_NAMESPACE || view.controller_namespace().as_deref() == Some(namespace) {
        return Verdict::allow();
    }
    let name = request.name().unwrap_or("");
    let label = format!("{kind} {namespace}/{}", printable(name, 253));
    let mut disbelieved = None;
    if let Some(claim) = owner_claim(kind, object) {
        match disbelief(&claim, kind, namespace, object, request.username(), view) {
            None => {
                tracing::debug!(
                    kind,
                    name,
                    owner = claim.name,
                    "admitted: made by a judged workload"
                );
                return Verdict::allow();
            }
            Some(why) => {
                tracing::debug!(kind, name, owner = claim.name, %why, "judged on its own");
                disbelieved = Some((
                    format!(
                        "{label} names {} {} as its controller, but {why}: it is judged on its own",
                        claim.kind,
                        printable(claim.name, 253)
                    ),
                    format!(
                        "imageauto: {label} is judged on its own, not for its {}: {why}",
                        claim.kind
                    ),
                ));
            }
        }
    }
    let Some(labels) = view.namespace_labels(namespace) else {
        return Verdict::deny(
            503,
            "ServiceUnavailable",
            format!(
                "namespace {namespace:?} is not known to imageauto yet (created a moment ago?), so its {ENFORCE_LABEL} label cannot be read: try again in a few seconds"
            ),
            vec![],
        );
    };
    let Some(enforcement) = Enforcement::from_labels(&labels) else {
        return Verdict::allow();
    };
    let workload = Workload {
        kind,
        namespace,
        name,
        label,
        labels: &labels,
        object,
    };

    let new = containers(kind, object);
    let judged: Vec<Container<'_>> = match (request.operation, request.old_object.as_ref()) {
        (Operation::Update, Some(old)) => {
            let before: HashMap<(&str, &str), &str> = containers(kind, old)
                .into_iter()
                .map(|c| ((c.list, c.name), c.image))
                .collect();
            new.into_iter()
                .filter(|c| before.get(&(c.list, c.name)) != Some(&c.image))
                .collect()
        }
        _ => new,
    };
    if judged.is_empty() {
        return Verdict::allow();
    }

    let mut findings = Vec::new();
    match exemption(kind, object) {
        Some(reason) if !reason.trim().is_empty() => {
            return Verdict::allow_with(vec![format!(
                "imageauto: {} is exempt from the image rules: {}",
                workload.label,
                printable(reason.trim(), 160)
            )]);
        }
        Some(_) => findings.push(Finding {
            line: format!(
                "the annotation {EXEMPT_ANNOTATION} on {} is empty: an exemption needs a reason, such as {EXEMPT_ANNOTATION}: \"pinned by the vendor\"",
                workload.label
            ),
            warning: format!(
                "imageauto: {EXEMPT_ANNOTATION} is empty: an exemption needs a reason"
            ),
        }),
        None => {}
    }
    for c in judged {
        if let Some(f) = judge(&workload, c, view) {
            findings.push(f);
        }
    }
    if findings.is_empty() {
        return Verdict::allow();
    }
    // Why the owner was not believed comes first: it is why the object is
    // judged at all.
    if let Some((line, warning)) = disbelieved {
        findings.insert(0, Finding { line, warning });
    }
    match enforcement {
        Enforcement::Deny => Verdict::deny(
            403,
            "Forbidden",
            findings
                .iter()
                .map(|f| f.line.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            vec![],
        ),
        Enforcement::Warn => Verdict::allow_with(findings.into_iter().map(|f| f.warning).collect()),
    }
}

struct Workload<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    /// `Kind namespace/name`.
    label: String,
    labels: &'a BTreeMap<String, String>,
    object: &'a Value,
}

impl Workload<'_> {
    /// The marker index entry of a container, when the workload was applied
    /// by a Flux Kustomization and the entry is that Kustomization's.
    fn marker(&self, container: &str, view: &dyn ClusterView) -> Option<MarkerLookup> {
        let ks_name = label(self.object, KUSTOMIZE_NAME_LABEL)?;
        let ks_namespace = label(self.object, KUSTOMIZE_NAMESPACE_LABEL)?;
        let lookup = view.marker(&WorkloadContainer {
            kind: self.kind.to_string(),
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            container: container.to_string(),
        })?;
        match &lookup.kustomization {
            Some(k) if k.namespace != ks_namespace || k.name != ks_name => None,
            _ => Some(lookup),
        }
    }
}

/// One line of a denial, and the shorter warning for warn namespaces
/// (Kubernetes cuts warnings past 256 characters).
struct Finding {
    line: String,
    warning: String,
}

const EXEMPT_FIX: &str =
    "or exempt the workload with the annotation imageauto.dev/exempt: \"<reason>\"";

fn judge(w: &Workload<'_>, c: Container<'_>, view: &dyn ClusterView) -> Option<Finding> {
    let who = format!(
        "container {:?} image {:?}",
        printable(c.name, 63),
        printable(c.image, 200)
    );
    let repository = match Reference::parse(c.image) {
        Ok(r) => r.name(),
        Err(e) => {
            return Some(Finding {
                line: format!(
                    "{who}: {}, so no ImagePolicy can govern it; fix: write a valid reference (registry/path:tag), {EXEMPT_FIX}",
                    printable(&e.reason, 200)
                ),
                warning: format!("imageauto: {who}: not a valid image reference"),
            });
        }
    };
    let tracking = view.policies_tracking(&repository);
    let cross = view.cross_namespace_refs();
    let (reaching, elsewhere): (Vec<&TrackingPolicy>, Vec<&TrackingPolicy>) = tracking
        .iter()
        .partition(|t| t.reaches(w.namespace, w.labels, cross));
    let marker = w.marker(c.name, view);
    // A policy the automation could use for this field: of its own
    // namespace, and of the workload's unless references across
    // namespaces are allowed.
    let markable = |m: &MarkerLookup, p: &ObjectKey| {
        p.namespace == m.automation.namespace && (cross || p.namespace == w.namespace)
    };
    // Reach by marker: the workload's Git file names such a policy, which
    // tracks the image. The marker check below then has nothing to add.
    if reaching.is_empty()
        && let Some(m) = marker.as_ref()
        && let Some(p) = m.policy_key()
        && markable(m, &p)
        && tracking.iter().any(|t| t.policy == p)
    {
        return None;
    }

    if reaching.is_empty() {
        let mut line = format!(
            "{who}: no ImagePolicy that reaches namespace {:?} tracks {repository}",
            w.namespace
        );
        if let Some(t) = elsewhere.first() {
            let mut why = vec![
                format!(
                    "its ImageRepository {} has no accessFrom that selects namespace {:?}",
                    t.repository, w.namespace
                ),
                format!(
                    "its namespace {:?} is not labelled {POLICIES_LABEL}: {POLICIES_CLUSTER}",
                    t.policy.namespace
                ),
            ];
            if marker.is_some() {
                why.push("the image field's marker does not name it".to_string());
            }
            line.push_str(&format!(
                " (ImagePolicy {} does, but {})",
                t.policy,
                and_list(&why)
            ));
        }
        line.push_str(&format!(
            "; fix: create an ImageRepository with spec.image {repository} and an ImagePolicy for it in namespace {:?}",
            w.namespace
        ));
        let suggested = marker
            .as_ref()
            .and_then(|m| tracking.iter().find(|t| markable(m, &t.policy)));
        if suggested.is_none()
            && let Some(m) = marker.as_ref().filter(|m| m.policy.is_none())
        {
            line.push_str(&format!(
                ", then add # {{\"$imagepolicy\": \"{}:POLICY\"}} at {}:{}",
                m.automation.namespace, m.file, m.line
            ));
        }
        if let Some(t) = elsewhere.first() {
            line.push_str(&format!(
                ", or label namespace {:?} {POLICIES_LABEL}=cluster if its ImagePolicies serve every namespace (kubectl imageauto install --policy-namespace {})",
                t.policy.namespace, t.policy.namespace
            ));
            if cross {
                line.push_str(&format!(
                    ", or give ImageRepository {} a spec.accessFrom.namespaceSelectors entry whose matchLabels select namespace {:?}",
                    t.repository, w.namespace
                ));
            }
        }
        if let (Some(m), Some(t)) = (marker.as_ref(), suggested) {
            line.push_str(&format!(
                ", or mark the image field: # {{\"$imagepolicy\": \"{}\"}} at {}:{}",
                t.policy.marker_ref(),
                m.file,
                m.line
            ));
        }
        line.push_str(&format!(", {EXEMPT_FIX}"));
        return Some(Finding {
            line,
            warning: format!(
                "imageauto: {who}: no ImagePolicy reaching namespace {:?} tracks {repository}; create an ImageRepository + ImagePolicy, or set {EXEMPT_ANNOTATION}: \"<reason>\"",
                w.namespace
            ),
        });
    }

    let m = marker?;
    // The policies the automation would use for this image: its namespace's.
    let usable: Vec<&TrackingPolicy> = tracking
        .iter()
        .filter(|t| t.policy.namespace == m.automation.namespace)
        .collect();
    let suggestion = usable
        .first()
        .map(|t| t.policy.marker_ref())
        .unwrap_or_else(|| format!("{}:POLICY", m.automation.namespace));
    let at = format!("{}:{}", m.file, m.line);
    let (why, short) = match m.policy_key() {
        None => (
            format!(
                "its image field at {at} has no marker, so ImageUpdateAutomation {} never updates it",
                m.automation
            ),
            format!("no marker at {at}"),
        ),
        Some(p) if p.namespace != m.automation.namespace => (
            format!(
                "the marker at {at} names {}, but ImageUpdateAutomation {} updates only markers of ImagePolicies in namespace {:?}",
                p.marker_ref(),
                m.automation,
                m.automation.namespace
            ),
            format!(
                "the marker at {at} names a policy outside {:?}",
                m.automation.namespace
            ),
        ),
        Some(p) if !tracking.iter().any(|t| t.policy == p) => (
            format!(
                "the marker at {at} names {}, which does not track {repository}",
                p.marker_ref()
            ),
            format!(
                "the marker at {at} names {}, which does not track it",
                p.marker_ref()
            ),
        ),
        Some(_) => return None,
    };
    let fix = if usable.is_empty() {
        format!(
            "create an ImagePolicy for {repository} in namespace {:?} and add # {{\"$imagepolicy\": \"{suggestion}\"}} at {at}",
            m.automation.namespace
        )
    } else {
        format!("add # {{\"$imagepolicy\": \"{suggestion}\"}} at {at}")
    };
    Some(Finding {
        line: format!("{who}: {why}; fix: {fix}, {EXEMPT_FIX}"),
        warning: format!(
            "imageauto: {who}: {short}; add # {{\"$imagepolicy\": \"{suggestion}\"}} there"
        ),
    })
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_of_every_kind() {
        let template = json!({"spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "nginx:1"}, {"name": "noimage"}],
        }});
        let pod = json!({"spec": template["spec"].clone()});
        assert_eq!(containers("Pod", &pod).len(), 2);
        let deploy = json!({"spec": {"template": template.clone()}});
        let c = containers("Deployment", &deploy);
        assert_eq!(
            c,
            vec![
                Container {
                    list: "initContainers",
                    name: "init",
                    image: "busybox"
                },
                Container {
                    list: "containers",
                    name: "app",
                    image: "nginx:1"
                },
            ]
        );
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": template}}}});
        assert_eq!(containers("CronJob", &cron).len(), 2);
        assert!(containers("Deployment", &json!({"spec": 3})).is_empty());
    }

    #[test]
    fn owners() {
        let owned = |kind: &str, api: &str, controller: bool| {
            json!({"metadata": {"ownerReferences": [
                {"apiVersion": api, "kind": kind, "name": "o", "uid": "1", "controller": controller}
            ]}})
        };
        let claim = |kind: &str, o: &Value| owner_claim(kind, o).map(|c| c.kind);
        assert_eq!(
            claim("ReplicaSet", &owned("Deployment", "apps/v1", true)),
            Some("Deployment")
        );
        assert_eq!(
            claim("Pod", &owned("ReplicaSet", "apps/v1", true)),
            Some("ReplicaSet")
        );
        assert_eq!(
            claim("Pod", &owned("ReplicaSet", "extensions/v1beta1", true)),
            Some("ReplicaSet")
        );
        assert_eq!(
            claim("Pod", &owned("StatefulSet", "apps/v1", true)),
            Some("StatefulSet")
        );
        assert_eq!(
            claim("Pod", &owned("DaemonSet", "apps/v1", true)),
            Some("DaemonSet")
        );
        assert_eq!(claim("Pod", &owned("Job", "batch/v1", true)), Some("Job"));
        assert_eq!(
            claim("Job", &owned("CronJob", "batch/v1beta1", true)),
            Some("CronJob")
        );
        let job = owned("Job", "batch/v1", true);
        let c = owner_claim("Pod", &job).unwrap();
        assert_eq!((c.name, c.uid), ("o", "1"));
        // Not the controller, not a workload, or not what that owner makes.
        assert!(claim("Pod", &owned("ReplicaSet", "apps/v1", false)).is_none());
        assert!(claim("Pod", &owned("Rollout", "argoproj.io/v1alpha1", true)).is_none());
        assert!(claim("Pod", &owned("StatefulSet", "extensions/v1beta1", true)).is_none());
        assert!(claim("Deployment", &owned("Deployment", "apps/v1", true)).is_none());
        assert!(claim("Pod", &owned("Deployment", "apps/v1", true)).is_none());
        assert!(claim("Pod", &owned("CronJob", "batch/v1", true)).is_none());
        assert!(claim("Pod", &json!({})).is_none());
    }

    #[test]
    fn controllers_by_name() {
        for (kind, sa) in [
            ("Deployment", "deployment-controller"),
            ("ReplicaSet", "replicaset-controller"),
            ("StatefulSet", "statefulset-controller"),
            ("DaemonSet", "daemon-set-controller"),
            ("Job", "job-controller"),
            ("CronJob", "cronjob-controller"),
        ] {
            assert!(is_controller(kind, "system:kube-controller-manager"));
            assert!(is_controller(
                kind,
                &format!("system:serviceaccount:kube-system:{sa}")
            ));
            // The same account name in another namespace is anyone's.
            assert!(!is_controller(
                kind,
                &format!("system:serviceaccount:apps:{sa}")
            ));
        }
        // Another controller's account does not make this kind.
        assert!(!is_controller(
            "ReplicaSet",
            "system:serviceaccount:kube-system:job-controller"
        ));
        assert!(!is_controller("ReplicaSet", "alice"));
        assert!(!is_controller("ReplicaSet", ""));
    }

    #[test]
    fn exemptions() {
        let d = json!({"metadata": {"annotations": {EXEMPT_ANNOTATION: "vendor"}}});
        assert_eq!(exemption("Deployment", &d).as_deref(), Some("vendor"));
        let d =
            json!({"spec": {"template": {"metadata": {"annotations": {EXEMPT_ANNOTATION: ""}}}}});
        assert_eq!(exemption("Deployment", &d).as_deref(), Some(""));
        let c = json!({"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": {EXEMPT_ANNOTATION: "x"}}}}}}});
        assert_eq!(exemption("CronJob", &c).as_deref(), Some("x"));
        assert_eq!(exemption("Pod", &json!({})), None);
    }

    #[test]
    fn kinds() {
        let gvk = |g: &str, k: &str| GroupVersionKind {
            group: g.into(),
            version: "v1".into(),
            kind: k.into(),
        };
        assert_eq!(workload_kind(&gvk("", "Pod")), Some("Pod"));
        assert_eq!(
            workload_kind(&gvk("apps", "Deployment")),
            Some("Deployment")
        );
        assert_eq!(workload_kind(&gvk("batch", "CronJob")), Some("CronJob"));
        assert_eq!(workload_kind(&gvk("apps", "Pod")), None);
        assert_eq!(workload_kind(&gvk("", "Service")), None);
        assert_eq!(workload_kind(&gvk("example.com", "Deployment")), None);
    }
}
