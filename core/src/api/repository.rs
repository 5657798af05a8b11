use super::schema::{DURATION_PATTERN, TIMEOUT_PATTERN};
use super::{AccessFrom, LocalObjectReference, default_observed_generation, is_false};
use educe::Educe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The exclusion list an ImageRepository gets when it names none: signature tags.
pub const DEFAULT_EXCLUSION_LIST: &[&str] = &["^.*\\.sig$"];
/// Flux caps the exclusion list at 25 entries.
pub const MAX_EXCLUSION_LIST: usize = 25;

/// ImageRepository: which image repository to scan for tags, how often, with
/// which credentials.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "image.toolkit.fluxcd.io",
    version = "v1",
    kind = "ImageRepository",
    namespaced,
    status = "ImageRepositoryStatus",
    shortname = "imgrepo",
    shortname = "imagerepo",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-images",
    derive = "PartialEq",
    doc = "ImageRepository is the Schema for the imagerepositories API",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Tags","type":"string","jsonPath":".status.lastScanResult.tagCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Last scan","type":"string","jsonPath":".status.lastScanResult.scanTime","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageRepositorySpec {
    /// The image repository to scan: `registry/path`, no scheme and no tag.
    pub image: String,
    /// How often to scan, as a Go duration (`5m`, `1h30m`).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,
    /// Timeout of one scan, as a Go duration without hours (`30s`, `90m`);
    /// defaults to the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TIMEOUT_PATTERN))]
    pub timeout: Option<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret with registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// A ServiceAccount whose imagePullSecrets are used as credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
    /// A Secret with `ca.crt` and optionally `tls.crt` and `tls.key` for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    /// A Secret with `address`, `username` and `password` of an HTTP proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,
    /// Stop scanning while true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// Which namespaces' ImagePolicies may refer to this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_from: Option<AccessFrom>,
    /// Regular expressions (unanchored); matching tags are dropped from the scan.
    #[serde(default = "default_exclusion_list")]
    #[schemars(length(max = 25))]
    pub exclusion_list: Vec<String>,
    /// Cloud provider for automatic credentials.
    #[serde(default)]
    pub provider: Provider,
    /// Talk plain HTTP to the registry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
}

/// Where registry credentials come from besides Secrets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Generic,
    Aws,
    Azure,
    Gcp,
}

fn default_exclusion_list() -> Vec<String> {
    DEFAULT_EXCLUSION_LIST
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The outcome of the last scan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanResult {
    /// Checksum of the tag set; changes only when the set of tags changes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// How many tags the scan kept.
    #[schemars(schema_with = "super::schema::integer")]
    pub tag_count: i64,
    /// When the scan ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_time: Option<Time>,
    /// The first ten tags in descending byte order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latest_tags: Vec<String>,
}

/// What the last scans found: conditions, the canonical name, the tags.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Educe)]
#[educe(Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::schema::status)]
pub struct ImageRepositoryStatus {
    /// The generation the status describes; -1 before the first reconciliation.
    #[serde(default = "default_observed_generation")]
    #[educe(Default(expression = -1))]
    pub observed_generation: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// The image's canonical name, as Docker spells it (`index.docker.io/library/alpine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_image_name: Option<String>,
    /// The outcome of the last scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan_result: Option<ScanResult>,
    /// The exclusion list the last scan used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_exclusion_list: Vec<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
