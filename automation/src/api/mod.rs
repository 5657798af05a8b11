//! The `image.toolkit.fluxcd.io` API, field for field with Flux's v1, plus the
//! read-only part of Flux's `source.toolkit.fluxcd.io` GitRepository that the
//! automation needs and Flux's `notification.toolkit.fluxcd.io` Receiver.
//!
//! v1 is the stored version. Files written for v1beta2 (and v1beta1 for
//! ImageUpdateAutomation) have the same schema and load into the same types.
//! [`crds`] builds the CustomResourceDefinitions of the image kinds.

mod automation;
mod crds;
mod load;
pub mod plan;
mod policy;
mod receiver;
mod repository;
mod source;
pub mod validate;

pub use automation::*;
pub use crds::*;
pub use kube::{CustomResourceExt, ResourceExt};
pub use load::*;
pub use policy::*;
pub use receiver::*;
pub use repository::*;
pub use source::*;
pub use validate::{FieldError, compile_policy, parse_duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group of the three image kinds.
pub const GROUP: &str = "image.toolkit.fluxcd.io";
/// The finalizer Flux puts on every object it reconciles.
pub const FINALIZER: &str = "finalizers.fluxcd.io";
/// Annotation that requests a reconciliation now.
pub const RECONCILE_REQUEST_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the referent.
    pub name: String,
}

/// A reference to an object, in another namespace when `namespace` is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NamespacedObjectReference {
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent; the referrer's namespace when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Which namespaces may refer to an object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessFrom {
    /// Namespaces whose labels match any of these selectors are allowed.
    pub namespace_selectors: Vec<NamespaceSelector>,
}

/// Selects namespaces by their labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels a namespace must all carry. An empty map matches every namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl AccessFrom {
    /// Whether a namespace with `labels` may refer to the object.
    pub fn allows(&self, labels: &BTreeMap<String, String>) -> bool {
        self.namespace_selectors.iter().any(|s| {
            s.match_labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|lv| lv == v))
        })
    }
}

/// An image reference as written into a file by the automation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub struct ImageRef {
    /// The image repository, as the ImageRepository's `spec.image` says it.
    pub name: String,
    /// The tag the policy selected.
    pub tag: String,
    /// The manifest digest of the tag, when digest reflection is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl ImageRef {
    /// `name:tag`, or `name:tag@digest` when a digest is known.
    pub fn reference(&self) -> String {
        match &self.digest {
            Some(d) if !d.is_empty() => format!("{}:{}@{}", self.name, self.tag, d),
            _ => format!("{}:{}", self.name, self.tag),
        }
    }
}

/// Status fields that every kind shares.
pub trait ConditionedStatus {
    fn conditions(&self) -> &[Condition];
}

fn default_observed_generation() -> i64 {
    -1
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
