//! Small builders for the decision tests: objects as a user would write
//! them, and instants.

use crate::api::{GitRepository, ImagePolicy, ImageRepository, ImageUpdateAutomation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `secs` seconds after a fixed instant.
pub fn at(secs: i64) -> Time {
    let base = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default();
    Time(base + k8s_openapi::jiff::SignedDuration::from_secs(secs))
}

/// An ImageRepository `web` in `apps`.
pub fn repository(image: &str, interval: &str, generation: i64) -> ImageRepository {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImageRepository",
        "metadata": {"name": "web", "namespace": "apps", "generation": generation, "uid": "u-repo"},
        "spec": {"image": image, "interval": interval}
    }))
    .unwrap_or_else(|e| panic!("a repository: {e}"))
}

/// An ImagePolicy `name` in `apps` over the repository `web`, with a semver
/// range and a digest reflection policy.
pub fn policy(name: &str, range: &str, digests: &str) -> ImagePolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": name, "namespace": "apps", "generation": 1},
        "spec": {
            "imageRepositoryRef": {"name": "web"},
            "policy": {"semver": {"range": range}},
            "digestReflectionPolicy": digests
        }
    }))
    .unwrap_or_else(|e| panic!("a policy: {e}"))
}

/// An ImageUpdateAutomation `name` in `apps` over the GitRepository
/// `fleet`, checking out `main` and pushing to `push` (the checkout branch
/// when `None`).
pub fn automation(name: &str, interval: &str, push: Option<&str>) -> ImageUpdateAutomation {
    let mut git = serde_json::json!({
        "checkout": {"ref": {"branch": "main"}},
        "commit": {"author": {"name": "bot", "email": "bot@example.com"}}
    });
    if let Some(b) = push {
        git["push"] = serde_json::json!({"branch": b});
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImageUpdateAutomation",
        "metadata": {"name": name, "namespace": "apps", "generation": 1},
        "spec": {
            "interval": interval,
            "sourceRef": {"kind": "GitRepository", "name": "fleet"},
            "git": git,
            "update": {"strategy": "Setters"}
        }
    }))
    .unwrap_or_else(|e| panic!("an automation: {e}"))
}

/// A GitRepository `name` in `apps` on `branch`.
pub fn git_repository(name: &str, branch: &str) -> GitRepository {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": "apps", "generation": 1},
        "spec": {"url": "https://git.example.com/fleet.git", "interval": "1m", "ref": {"branch": branch}}
    }))
    .unwrap_or_else(|e| panic!("a GitRepository: {e}"))
}
