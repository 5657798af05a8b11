use super::schema::DURATION_PATTERN;
use super::source::GitRepositoryRef;
use super::{ImageRef, LocalObjectReference, default_observed_generation, is_false};
use educe::Educe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The commit message when the automation gives no template.
pub use crate::template::DEFAULT_MESSAGE;

/// ImageUpdateAutomation: where to write the selected images, and how to
/// commit and push them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "image.toolkit.fluxcd.io",
    version = "v1",
    kind = "ImageUpdateAutomation",
    namespaced,
    status = "ImageUpdateAutomationStatus",
    shortname = "iua",
    shortname = "imgupd",
    shortname = "imgauto",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-images",
    derive = "PartialEq",
    doc = "ImageUpdateAutomation is the Schema for the imageupdateautomations API",
    // As Flux's CRD: a Flux Kustomization applying it substitutes no variables.
    annotation("kustomize.toolkit.fluxcd.io/substitute", "disabled"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Last run","type":"string","jsonPath":".status.lastAutomationRunTime","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdateAutomationSpec {
    /// The Git repository to update (a Flux GitRepository).
    pub source_ref: CrossNamespaceSourceReference,
    /// Checkout, commit and push settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSpec>,
    /// How often to run, as a Go duration.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,
    /// Which ImagePolicies of the namespace take part; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::schema::atomic_label_selector)]
    pub policy_selector: Option<LabelSelector>,
    /// Where and how to update files.
    #[serde(default = "default_update", skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStrategy>,
    /// Stop running while true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
}

fn default_update() -> Option<UpdateStrategy> {
    Some(UpdateStrategy::default())
}

/// A reference to the source object, in another namespace when set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// `kind` is required as in Flux's CRD: its default fills it in first.
#[schemars(extend("required" = ["kind", "name"]))]
pub struct CrossNamespaceSourceReference {
    /// API version of the source (`source.toolkit.fluxcd.io/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the source; only GitRepository is supported. A string, not an
    /// enum, so that another kind loads and is refused with its reason.
    #[serde(default = "default_source_kind")]
    #[schemars(extend("enum" = ["GitRepository"]))]
    pub kind: String,
    /// Name of the source.
    pub name: String,
    /// Namespace of the source; the automation's namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_source_kind() -> String {
    "GitRepository".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSpec {
    /// What to check out; the GitRepository's ref when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<GitCheckoutSpec>,
    /// How to commit.
    pub commit: CommitSpec,
    /// Where to push; the checkout branch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct GitCheckoutSpec {
    /// The reference to check out.
    #[serde(rename = "ref")]
    pub reference: GitRepositoryRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitSpec {
    /// Author and committer of the commits.
    pub author: CommitUser,
    /// Key to sign the commits with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKey>,
    /// A Go text/template for the commit message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_template: Option<String>,
    /// Values given to the template as `.Values`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_template_values: Option<BTreeMap<String, String>>,
}

/// Who the commits are by.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CommitUser {
    /// The name of author and committer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The email of author and committer.
    pub email: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKey {
    /// A Secret with `git.asc` (GPG) or `identity` (SSH).
    pub secret_ref: LocalObjectReference,
    /// `gpg` (default) or `ssh`. v1beta2 has no type: GPG only.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub key_type: Option<SigningKeyType>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SigningKeyType {
    #[default]
    Gpg,
    Ssh,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PushSpec {
    /// The branch to push to; the checkout branch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A refspec pushed after the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refspec: Option<String>,
    /// Push options (`git push -o`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct UpdateStrategy {
    /// Only `Setters`: rewrite the fields marked with `$imagepolicy` comments.
    #[serde(default)]
    pub strategy: UpdateStrategyName,
    /// The folder, relative to the repository root, to update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        Self {
            strategy: UpdateStrategyName::Setters,
            path: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpdateStrategyName {
    #[default]
    Setters,
}

/// What the last runs did: conditions, the last push, what they saw.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Educe)]
#[educe(Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::schema::status)]
pub struct ImageUpdateAutomationStatus {
    /// The generation the status describes; -1 before the first reconciliation.
    #[serde(default = "default_observed_generation")]
    #[educe(Default(expression = -1))]
    pub observed_generation: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// When the last run went through to its end (with or without a change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_automation_run_time: Option<Time>,
    /// Full SHA of the last commit pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_commit: Option<String>,
    /// When the last commit was pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_time: Option<Time>,
    /// The policies' results the last run used, by policy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_policies: Option<BTreeMap<String, ImageRef>>,
    /// `<branch>@sha1:<sha>` of the source the last run saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_source_revision: Option<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
