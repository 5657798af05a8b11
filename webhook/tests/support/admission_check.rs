//! The checks the `admission` fuzz target runs on each input, shared with
//! the webhook's `fuzz_admission` test, which replays the fixtures, cut and
//! bent, and past failures from tests/data/fuzz-admission.
//!
//! For any bytes, through both rules and against an empty and a populated
//! view: no panic; a body that decodes is answered 200 with a JSON
//! AdmissionReview of the same version and uid, a refusal says why in a
//! message of at most `MAX_MESSAGE_BYTES`, the warnings are printable, short
//! enough for the apiserver and at most `MAX_WARNINGS`; a body that does not
//! decode is answered 400 with the decoder's reason.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use webhook::rules::{MAX_MESSAGE_BYTES, MAX_WARNINGS};
use webhook::{
    ClusterView, MarkerLookup, MemoryView, ObjectKey, Outcome, Rule, WorkloadContainer,
    WorkloadOwner,
};

fn populated() -> &'static MemoryView {
    static VIEW: OnceLock<MemoryView> = OnceLock::new();
    VIEW.get_or_init(|| {
        let repo: imageauto_core::api::ImageRepository = serde_json::from_value(json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
            "metadata": {"name": "nginx", "namespace": "flux-system"},
            "spec": {"image": "nginx", "interval": "5m",
                     "accessFrom": {"namespaceSelectors": [{"matchLabels": {}}]}},
        }))
        .expect("an ImageRepository");
        let policy: imageauto_core::api::ImagePolicy = serde_json::from_value(json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": "nginx", "namespace": "flux-system"},
            "spec": {"imageRepositoryRef": {"name": "nginx"}, "policy": {"semver": {"range": "1.x"}}},
        }))
        .expect("an ImagePolicy");
        let deny = BTreeMap::from([("imageauto.dev/enforce".to_string(), "deny".to_string())]);
        let warn = BTreeMap::from([("imageauto.dev/enforce".to_string(), "warn".to_string())]);
        let marker = |ns: &str, policy: Option<&str>| {
            (
                WorkloadContainer {
                    kind: "Deployment".into(),
                    namespace: ns.into(),
                    name: "web".into(),
                    container: "web".into(),
                },
                MarkerLookup {
                    file: "apps/web.yaml".into(),
                    line: 7,
                    policy: policy.map(str::to_string),
                    automation: ObjectKey::new("flux-system", "auto"),
                    kustomization: None,
                },
            )
        };
        MemoryView::new(
            [policy],
            [repo],
            [
                ("shop".to_string(), deny.clone()),
                ("default".to_string(), deny),
                ("audit".to_string(), warn),
                ("flux-system".to_string(), BTreeMap::new()),
            ],
            [marker("shop", None), marker("audit", Some("x:y"))],
        )
        .with_owners([WorkloadOwner {
            kind: "ReplicaSet".into(),
            namespace: "shop".into(),
            name: "web-1".into(),
            uid: "u-1".into(),
            images: BTreeMap::from([("web".to_string(), ["nginx:1".to_string()].into())]),
        }])
        .with_controller_namespace("imageauto-system")
    })
}

fn views() -> [&'static dyn ClusterView; 2] {
    static EMPTY: OnceLock<MemoryView> = OnceLock::new();
    [EMPTY.get_or_init(MemoryView::default), populated()]
}

/// Runs every check on `data`; panics with the reason on a failure.
pub fn check(data: &[u8]) {
    let decoded = webhook::review::decode(data);
    for rule in Rule::ALL {
        for view in views() {
            let answer = webhook::answer(rule, data, view);
            match &decoded {
                Err(e) => {
                    assert_eq!(answer.status, 400, "{rule}: {e}");
                    assert_eq!(answer.outcome, Outcome::Error);
                    assert_eq!(answer.body, format!("{e}\n").into_bytes());
                }
                Ok(review) => {
                    assert_eq!(
                        answer.status,
                        200,
                        "{rule}: {}",
                        String::from_utf8_lossy(&answer.body)
                    );
                    assert_ne!(answer.outcome, Outcome::Error);
                    let v: Value = serde_json::from_slice(&answer.body).expect("a JSON answer");
                    assert_eq!(v["apiVersion"], review.version.api_version());
                    assert_eq!(v["kind"], "AdmissionReview");
                    assert_eq!(v["response"]["uid"], review.request.uid.as_str());
                    let allowed = v["response"]["allowed"].as_bool().expect("allowed");
                    if allowed {
                        assert!(v["response"].get("status").is_none());
                    } else {
                        let message = v["response"]["status"]["message"]
                            .as_str()
                            .expect("a message");
                        assert!(!message.trim().is_empty(), "a refusal without a reason");
                        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
                        assert!(
                            v["response"]["status"]["code"]
                                .as_u64()
                                .is_some_and(|c| c >= 400)
                        );
                    }
                    let expected = match (allowed, v["response"].get("warnings")) {
                        (false, _) => Outcome::Deny,
                        (true, None) => Outcome::Admit,
                        (true, Some(_)) => Outcome::Warn,
                    };
                    assert_eq!(answer.outcome, expected);
                    if let Some(w) = v["response"].get("warnings") {
                        let w = w.as_array().expect("a list of warnings");
                        assert!(!w.is_empty());
                        assert!(w.len() <= MAX_WARNINGS, "{} warnings", w.len());
                        for w in w {
                            let w = w.as_str().expect("a string");
                            assert!(w.chars().count() <= 256, "{w}");
                            assert!(!w.chars().any(char::is_control), "{w:?}");
                        }
                    }
                }
            }
        }
    }
}
