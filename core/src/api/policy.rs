use super::schema::DURATION_PATTERN;
use super::{ImageRef, NamespacedObjectReference, default_observed_generation, is_false};
use educe::Educe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ImagePolicy: which tag of an ImageRepository's scan is the latest.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "image.toolkit.fluxcd.io",
    version = "v1",
    kind = "ImagePolicy",
    namespaced,
    status = "ImagePolicyStatus",
    shortname = "imgpol",
    shortname = "imagepol",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-images",
    derive = "PartialEq",
    doc = "ImagePolicy is the Schema for the imagepolicies API",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.latestRef.name"}"#,
    printcolumn = r#"{"name":"Tag","type":"string","jsonPath":".status.latestRef.tag"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
// Flux's two CEL rules on the spec, word for word (the XValidation markers of
// ImagePolicySpec in image-reflector-controller's api/v1/imagepolicy_types.go);
// validate.rs checks the same, for apiservers that do not know CEL and for
// files read outside a cluster.
#[schemars(extend("x-kubernetes-validations" = [
    {
        "message": "spec.interval is only accepted when spec.digestReflectionPolicy is set to 'Always'",
        "rule": "!has(self.interval) || (has(self.digestReflectionPolicy) && self.digestReflectionPolicy == 'Always')"
    },
    {
        "message": "spec.interval must be set when spec.digestReflectionPolicy is set to 'Always'",
        "rule": "has(self.interval) || !has(self.digestReflectionPolicy) || self.digestReflectionPolicy != 'Always'"
    }
]))]
pub struct ImagePolicySpec {
    /// The ImageRepository whose tags this policy chooses from.
    pub image_repository_ref: NamespacedObjectReference,
    /// How to order the tags: exactly one of semver, alphabetical, numerical.
    pub policy: ImagePolicyChoice,
    /// Keep only matching tags, and optionally order by a part of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_tags: Option<TagFilter>,
    /// Whether to look up and record the digest of the selected tag.
    #[serde(default)]
    pub digest_reflection_policy: DigestReflectionPolicy,
    /// How often to re-read the digest; only with `Always`, and then required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Stop evaluating while true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
}

/// Exactly one of the three orderings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ImagePolicyChoice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<SemVerPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alphabetical: Option<AlphabeticalPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerical: Option<NumericalPolicy>,
}

/// Select the highest version within a range.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SemVerPolicy {
    /// A Masterminds/semver range, such as `>=1.0.0 <2.0.0` or `^1.2`.
    pub range: String,
}

pub use crate::policy::Order;

/// Compare tags byte by byte.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct AlphabeticalPolicy {
    #[serde(default)]
    pub order: Order,
}

/// Compare tags as numbers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NumericalPolicy {
    #[serde(default)]
    pub order: Order,
}

/// Keep the tags that match `pattern`; with `extract`, order by the expansion.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TagFilter {
    /// A regular expression; a tag stays when it matches anywhere.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    // The description names no `${...}`: a Flux Kustomization applying this
    // CRD with postBuild substitution would replace it.
    /// A replacement (`$1`, `$name`, or a group's number or name in braces)
    /// expanded against the first match.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub extract: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
// The variants in the order of Flux's enum (Always, IfNotPresent, Never).
pub enum DigestReflectionPolicy {
    /// Look up at every interval.
    Always,
    /// Look up when the selected tag changes or no digest is known.
    IfNotPresent,
    /// Never look up digests.
    #[default]
    Never,
}

/// What the policy selected: conditions, the latest image, the one before.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Educe)]
#[educe(Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::schema::status)]
pub struct ImagePolicyStatus {
    /// The generation the status describes; -1 before the first reconciliation.
    #[serde(default = "default_observed_generation")]
    #[educe(Default(expression = -1))]
    pub observed_generation: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// The latest image the policy selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ref: Option<ImageRef>,
    /// The image selected before the latest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_previous_ref: Option<ImageRef>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
