//! Shared by the webhook's integration tests: fixtures, a cluster view to
//! judge them against, and an observer that records outcomes.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tower::ServiceExt;
use webhook::{
    MarkerLookup, MemoryView, ObjectKey, Observer, Outcome, Rule, WorkloadContainer, WorkloadOwner,
};

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture as JSON.
pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Moves a review's object (and old object) to another namespace.
pub fn in_namespace(mut review: Value, ns: &str) -> Value {
    let req = &mut review["request"];
    req["namespace"] = json!(ns);
    for key in ["object", "oldObject"] {
        if req[key].is_object() {
            req[key]["metadata"]["namespace"] = json!(ns);
        }
    }
    review
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The cluster of the tests:
/// - namespaces `shop` (enforce=deny), `audit` (enforce=warn), `free` (no
///   label), `flux-system`;
/// - in flux-system, policies `nginx` (docker.io/library/nginx) and `web`
///   (ghcr.io/acme/web), whose repositories' accessFrom select the enforced
///   namespaces; `worker` (ghcr.io/acme/worker) and `private`
///   (ghcr.io/acme/private), whose repositories admit no other namespace;
/// - in shop, policy `own` for ghcr.io/acme/shop-only;
/// - `kube-system` and `imageauto-system` (the controller's namespace),
///   both labelled enforce=deny, and `apps` (enforce=deny) where no policy
///   lives and none reaches;
/// - the owners of [`owners`].
pub fn view(markers: Vec<(WorkloadContainer, MarkerLookup)>) -> MemoryView {
    view_with(markers, &[])
}

/// The owners in [`view`]: Deployment shop/shop, its ReplicaSet
/// shop/shop-7d9f8c6b5 (the owners of the fixtures replicaset-owned.json
/// and pod-owned.json), both with `proxy` nginx:1.25 and `api`
/// ghcr.io/acme/api:2.0.0; CronJob shop/nightly and its Job
/// shop/nightly-28000000, with `report` quay.io/old/report:1.
pub fn owners() -> Vec<WorkloadOwner> {
    let shop = [("proxy", "nginx:1.25"), ("api", "ghcr.io/acme/api:2.0.0")];
    let report = [("report", "quay.io/old/report:1")];
    vec![
        owner("Deployment", "shop", "shop", DEPLOYMENT_UID, &shop),
        owner(
            "ReplicaSet",
            "shop",
            "shop-7d9f8c6b5",
            REPLICASET_UID,
            &shop,
        ),
        owner("CronJob", "shop", "nightly", CRONJOB_UID, &report),
        owner("Job", "shop", "nightly-28000000", JOB_UID, &report),
    ]
}

pub const DEPLOYMENT_UID: &str = "3f1c2d4e-0000-4000-8000-000000000004";
pub const REPLICASET_UID: &str = "9a8b7c6d-0000-4000-8000-000000000001";
pub const CRONJOB_UID: &str = "c0c0c0c0-0000-4000-8000-000000000001";
pub const JOB_UID: &str = "10b10b10-0000-4000-8000-000000000001";

/// An owner and the images its pod template gives each container.
pub fn owner(
    kind: &str,
    ns: &str,
    name: &str,
    uid: &str,
    images: &[(&str, &str)],
) -> WorkloadOwner {
    let mut map: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (c, i) in images {
        map.entry(c.to_string()).or_default().insert(i.to_string());
    }
    WorkloadOwner {
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        images: map,
    }
}

/// [`view`], with `extra` namespaces' labels (replacing those of the same
/// name).
pub fn view_with(
    markers: Vec<(WorkloadContainer, MarkerLookup)>,
    extra: &[(&str, &[(&str, &str)])],
) -> MemoryView {
    view_of(markers, extra, true)
}

/// [`view_with`], with cross-namespace references on or off.
pub fn view_of(
    markers: Vec<(WorkloadContainer, MarkerLookup)>,
    extra: &[(&str, &[(&str, &str)])],
    cross_namespace_refs: bool,
) -> MemoryView {
    let enforced = json!({"namespaceSelectors": [
        {"matchLabels": {"imageauto.dev/enforce": "deny"}},
        {"matchLabels": {"imageauto.dev/enforce": "warn"}},
    ]});
    let repo = |ns: &str, name: &str, image: &str, access: Option<&Value>| {
        let mut spec = json!({"image": image, "interval": "5m"});
        if let Some(a) = access {
            spec["accessFrom"] = a.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
            "metadata": {"name": name, "namespace": ns}, "spec": spec,
        }))
        .expect("an ImageRepository")
    };
    let policy = |ns: &str, name: &str| {
        serde_json::from_value(json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"imageRepositoryRef": {"name": name}, "policy": {"semver": {"range": ">=1.0.0"}}},
        }))
        .expect("an ImagePolicy")
    };
    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = [
        (
            "shop".to_string(),
            labels(&[("imageauto.dev/enforce", "deny"), ("team", "shop")]),
        ),
        (
            "audit".to_string(),
            labels(&[("imageauto.dev/enforce", "warn")]),
        ),
        ("free".to_string(), labels(&[])),
        (
            "flux-system".to_string(),
            labels(&[("kubernetes.io/metadata.name", "flux-system")]),
        ),
        (
            "kube-system".to_string(),
            labels(&[("imageauto.dev/enforce", "deny")]),
        ),
        (
            "imageauto-system".to_string(),
            labels(&[("imageauto.dev/enforce", "deny")]),
        ),
        (
            "apps".to_string(),
            labels(&[("imageauto.dev/enforce", "deny")]),
        ),
    ]
    .into_iter()
    .collect();
    for (ns, l) in extra {
        namespaces.insert(ns.to_string(), labels(l));
    }
    MemoryView::with_cross_namespace_refs(
        vec![
            policy("flux-system", "nginx"),
            policy("flux-system", "web"),
            policy("flux-system", "worker"),
            policy("flux-system", "private"),
            policy("shop", "own"),
        ],
        vec![
            repo(
                "flux-system",
                "nginx",
                "docker.io/library/nginx",
                Some(&enforced),
            ),
            repo("flux-system", "web", "ghcr.io/acme/web", Some(&enforced)),
            repo("flux-system", "worker", "ghcr.io/acme/worker", None),
            repo("flux-system", "private", "ghcr.io/acme/private", None),
            repo("shop", "own", "ghcr.io/acme/shop-only", None),
        ],
        namespaces,
        markers,
        cross_namespace_refs,
    )
    .with_owners(owners())
    .with_controller_namespace("imageauto-system")
}

/// A marker index entry for the `web` container of Deployment shop/web, as
/// the automation flux-system/auto's checkout would record it.
pub fn web_marker(policy: Option<&str>) -> (WorkloadContainer, MarkerLookup) {
    (
        WorkloadContainer {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            container: "web".into(),
        },
        MarkerLookup {
            file: "apps/shop/web.yaml".into(),
            line: 21,
            policy: policy.map(str::to_string),
            automation: ObjectKey::new("flux-system", "auto"),
            kustomization: Some(ObjectKey::new("flux-system", "apps")),
        },
    )
}

/// Records every observation.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<(Rule, Outcome, Duration)>>);

impl Observer for Recorder {
    fn observe(&self, rule: Rule, outcome: Outcome, elapsed: Duration) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((rule, outcome, elapsed));
    }
}

impl Recorder {
    pub fn outcomes(&self) -> Vec<(Rule, Outcome)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, o, _)| (*r, *o))
            .collect()
    }
}

/// Sends one POST through the router (no TLS).
pub async fn post(router: Router, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let response = router.oneshot(request).await.expect("an answer");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
        .to_vec();
    (status, bytes)
}
