//! Flux's `notification.toolkit.fluxcd.io/v1` Receiver: a webhook endpoint
//! that, when called, asks for the reconciliation of the resources it names.
//! imageauto serves Receivers of the image kinds (`serve --receiver-addr`) at
//! Flux's path; it never installs this kind.
//!
//! The CRD this type derives ([`kube::CustomResourceExt::crd`]) serves the
//! cluster tests, which need the kind to exist in a cluster without Flux.

use super::{LocalObjectReference, default_observed_generation, is_false};
use educe::Educe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const NOTIFICATION_GROUP: &str = "notification.toolkit.fluxcd.io";

/// How often a Receiver is reconciled when the spec does not say.
pub const DEFAULT_RECEIVER_INTERVAL: &str = "10m";

/// Receiver: a webhook that triggers the reconciliation of resources.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "notification.toolkit.fluxcd.io",
    version = "v1",
    kind = "Receiver",
    namespaced,
    status = "ReceiverStatus",
    category = "fluxcd",
    derive = "PartialEq",
    doc = "Receiver is the Schema for the receivers API",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSpec {
    /// Which sender the payloads come from; decides how they are verified.
    #[serde(rename = "type")]
    pub receiver_type: ReceiverType,
    /// How often the Receiver is reconciled, as a Go duration.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: String,
    /// Event types to accept; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// The resources to reconcile when a payload is accepted.
    pub resources: Vec<ReceiverResource>,
    /// A CEL expression over `res` (the resource's metadata), `req` (the
    /// JSON body) and, for generic-oidc, `claims`: a resource is annotated
    /// only when it returns true.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_filter: String,
    /// A Secret whose `token` authenticates the senders and names the path
    /// (for gcr also `email` and `audience`). Every type but generic-oidc
    /// needs one; generic-oidc must not have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// generic-oidc: the issuers whose tokens are accepted.
    #[serde(
        default,
        rename = "oidcProviders",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub oidc_providers: Vec<OidcProvider>,
    /// Ignore payloads while true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
}

fn default_interval() -> String {
    DEFAULT_RECEIVER_INTERVAL.to_string()
}

/// The senders a Receiver understands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiverType {
    Generic,
    GenericHmac,
    GenericOidc,
    Github,
    Gitlab,
    Bitbucket,
    Harbor,
    Dockerhub,
    Quay,
    Gcr,
    Nexus,
    Acr,
    Cdevents,
    /// A type this version does not know (Flux's CRD refuses it; a CRD
    /// without the enum may hold one): never served, never Ready.
    #[serde(other)]
    #[schemars(skip)]
    Unknown,
}

/// A resource a Receiver reconciles: one by name, or (with name `*`) those
/// whose labels match; with an optional CEL `filter`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// With name `*`: the labels the resources must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// A CEL expression evaluated for each resource this reference matches,
    /// besides the Receiver's `resourceFilter`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
}

/// An OIDC issuer whose tokens a generic-oidc Receiver accepts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcProvider {
    /// Discovery URL; the tokens' `iss`.
    #[serde(rename = "issuerURL")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub issuer_url: String,
    /// The expected `aud` (default `notification-controller`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub audience: String,
    /// Named CEL expressions over `claims` and `vars`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<OidcVariable>,
    /// CEL expressions over `claims` and `vars` that must all be true.
    #[serde(default)]
    pub validations: Vec<OidcValidation>,
}

/// Flux's default `aud` for generic-oidc tokens.
pub const DEFAULT_OIDC_AUDIENCE: &str = "notification-controller";

impl OidcProvider {
    /// The audience, defaulted as Flux's `GetAudience`.
    pub fn audience(&self) -> &str {
        if self.audience.is_empty() {
            DEFAULT_OIDC_AUDIENCE
        } else {
            &self.audience
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OidcVariable {
    pub name: String,
    pub expression: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OidcValidation {
    pub expression: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Educe)]
#[educe(Default)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStatus {
    /// The generation the status describes; -1 before the first reconciliation.
    #[serde(default = "default_observed_generation")]
    #[educe(Default(expression = -1))]
    pub observed_generation: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `/hook/` followed by the hex SHA-256 of token, name and namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
