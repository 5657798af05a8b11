//! The marker index, shared by every replica: after each run, the leader
//! publishes the image fields of an automation's checkout (file, line,
//! container, the marker's policy) in a ConfigMap of the controller's
//! namespace, one per automation; every replica reads them through its
//! shared watch. So a follower, a restarted replica and the leader answer
//! an admission review alike, and an index lives as long as its
//! automation: it is deleted with it (finalizer), replaced whole by each
//! run (a file that no longer has the field drops out), and ignored once
//! its automation is gone.

use super::watches::Shared;
use crate::api::{ImageUpdateAutomation, ResourceExt};
use crate::workloads::IndexedContainer;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// The label every index ConfigMap carries.
pub const INDEX_LABEL: &str = "imageauto.dev/marker-index";
pub use super::watches::INDEX_LABEL_SELECTOR;
/// The annotation naming the automation (`namespace/name`).
pub const AUTOMATION_ANNOTATION: &str = "imageauto.dev/automation";
/// The annotation holding the automation's uid.
pub const UID_ANNOTATION: &str = "imageauto.dev/automation-uid";
/// The key of the gzipped JSON index in `binaryData`.
const KEY: &str = "index.json.gz";
/// What a ConfigMap may hold, with room for its metadata.
const MAX_BYTES: usize = 1_000_000;

/// One automation's index: (file relative to the repository root, field).
pub type Entries = Vec<(String, IndexedContainer)>;

/// Why the index could not be published.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "the marker index of {automation} is {bytes} bytes compressed, more than a ConfigMap holds: the webhook's marker check does not cover its files (narrow spec.update.path)"
    )]
    TooLarge { automation: String, bytes: usize },
    #[error("the marker index of {automation} cannot be written to {namespace}: {message}")]
    Write {
        automation: String,
        namespace: String,
        message: String,
    },
}

/// The ConfigMap's name for an automation: a hash of its namespace and
/// name (names may be longer than a ConfigMap's allows).
pub fn config_map_name(namespace: &str, name: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hex: String = d.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("imageauto-markers-{hex}")
}

/// The compressed form of `entries` (deterministic: the same entries give
/// the same bytes, so an unchanged index is never written again).
pub fn encode(entries: &Entries) -> Vec<u8> {
    let json = serde_json::to_vec(entries).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(&json);
    gz.finish().unwrap_or_default()
}

/// The entries of a compressed index; `None` when it does not decode.
pub fn decode(bytes: &[u8]) -> Option<Entries> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(64 << 20)
        .read_to_end(&mut json)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// The ConfigMap that holds `entries` for `automation`.
fn config_map(automation: &ImageUpdateAutomation, namespace: &str, bytes: Vec<u8>) -> ConfigMap {
    let (ans, aname) = (
        automation.namespace().unwrap_or_default(),
        automation.name_any(),
    );
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(config_map_name(&ans, &aname));
    cm.metadata.namespace = Some(namespace.to_string());
    cm.metadata.labels = Some(BTreeMap::from([
        (INDEX_LABEL.to_string(), "true".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "imageauto".to_string(),
        ),
    ]));
    cm.metadata.annotations = Some(BTreeMap::from([
        (AUTOMATION_ANNOTATION.to_string(), format!("{ans}/{aname}")),
        (
            UID_ANNOTATION.to_string(),
            automation.uid().unwrap_or_default(),
        ),
    ]));
    cm.binary_data = Some(BTreeMap::from([(KEY.to_string(), ByteString(bytes))]));
    cm
}

/// Publishes an automation's index in `namespace`, unless the cache shows
/// it there already.
pub async fn publish(
    client: &Client,
    namespace: &str,
    cache: Option<&Shared<ConfigMap>>,
    automation: &ImageUpdateAutomation,
    entries: &Entries,
) -> Result<(), IndexError> {
    let (ans, aname) = (
        automation.namespace().unwrap_or_default(),
        automation.name_any(),
    );
    let shown = format!("{ans}/{aname}");
    let bytes = encode(entries);
    if bytes.len() > MAX_BYTES {
        return Err(IndexError::TooLarge {
            automation: shown,
            bytes: bytes.len(),
        });
    }
    let name = config_map_name(&ans, &aname);
    let uid = automation.uid().unwrap_or_default();
    if let Some(current) = cache.and_then(|c| c.get(namespace, &name))
        && current.annotations().get(UID_ANNOTATION) == Some(&uid)
        && current
            .binary_data
            .as_ref()
            .and_then(|d| d.get(KEY))
            .is_some_and(|b| b.0 == bytes)
    {
        return Ok(());
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = config_map(automation, namespace, bytes);
    api.patch(
        &name,
        &PatchParams::apply(super::FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map(|_| ())
    .map_err(|e| IndexError::Write {
        automation: shown,
        namespace: namespace.to_string(),
        message: super::secrets::api_error(&e),
    })
}

/// Deletes an automation's index (it is being deleted).
pub async fn remove(client: &Client, namespace: &str, automation: &ImageUpdateAutomation) {
    let name = config_map_name(
        &automation.namespace().unwrap_or_default(),
        &automation.name_any(),
    );
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => tracing::warn!(
            configmap = %format!("{namespace}/{name}"),
            "cannot delete a marker index: {}",
            super::secrets::api_error(&e)
        ),
    }
}

/// The automation a ConfigMap indexes, when it still exists (same uid, not
/// being deleted).
fn owner(
    cm: &ConfigMap,
    automations: &Shared<ImageUpdateAutomation>,
) -> Option<Arc<ImageUpdateAutomation>> {
    let (ns, name) = cm
        .annotations()
        .get(AUTOMATION_ANNOTATION)?
        .split_once('/')?;
    let a = automations.get(ns, name)?;
    (a.uid().as_ref() == cm.annotations().get(UID_ANNOTATION)
        && a.metadata.deletion_timestamp.is_none())
    .then_some(a)
}

/// Deletes the indexes whose automation is gone (deleted while no leader
/// ran, say).
pub async fn prune(
    client: &Client,
    markers: &Shared<ConfigMap>,
    automations: &Shared<ImageUpdateAutomation>,
) {
    for cm in markers.state() {
        if owner(&cm, automations).is_some() {
            continue;
        }
        let (ns, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(configmap = %format!("{ns}/{name}"), "pruned the marker index of a deleted automation")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(
                "cannot prune a marker index: {}",
                super::secrets::api_error(&e)
            ),
        }
    }
}

/// Reads the published indexes, decoding each ConfigMap once per version.
#[derive(Default)]
pub struct Reader {
    decoded: Mutex<HashMap<String, (String, Arc<Entries>)>>,
}

impl Reader {
    /// Every entry of every live automation's index, with its automation
    /// (`namespace`, `name`).
    pub fn entries(
        &self,
        markers: &Shared<ConfigMap>,
        automations: &Shared<ImageUpdateAutomation>,
    ) -> Vec<((String, String), String, IndexedContainer)> {
        let mut decoded = match self.decoded.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out = Vec::new();
        let mut live = std::collections::HashSet::new();
        for cm in markers.state() {
            let Some(a) = owner(&cm, automations) else {
                continue;
            };
            let name = cm.name_any();
            let version = cm.resource_version().unwrap_or_default();
            live.insert(name.clone());
            let entries = match decoded.get(&name) {
                Some((v, e)) if *v == version => e.clone(),
                _ => {
                    let Some(bytes) = cm.binary_data.as_ref().and_then(|d| d.get(KEY)) else {
                        continue;
                    };
                    let Some(e) = decode(&bytes.0) else {
                        tracing::warn!(configmap = %name, "a marker index does not decode: ignored");
                        continue;
                    };
                    let e = Arc::new(e);
                    decoded.insert(name, (version, e.clone()));
                    e
                }
            };
            let key = (a.namespace().unwrap_or_default(), a.name_any());
            out.extend(
                entries
                    .iter()
                    .map(|(f, c)| (key.clone(), f.clone(), c.clone())),
            );
        }
        decoded.retain(|k, _| live.contains(k));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_round_trips_and_stays_small() {
        let entries: Entries = (0..2000)
            .map(|i| {
                (
                    format!("apps/web-{i}.yaml"),
                    IndexedContainer {
                        kind: "Deployment".into(),
                        namespace: "apps".into(),
                        name: format!("web-{i}"),
                        container: "web".into(),
                        line: 14,
                        policy: (i % 2 == 0).then(|| "flux-system:web".to_string()),
                    },
                )
            })
            .collect();
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes).unwrap(), entries);
        // Deterministic: an unchanged index is not written again.
        assert_eq!(encode(&entries), bytes);
        assert!(bytes.len() < 60_000, "{}", bytes.len());
        assert!(decode(b"not gzip").is_none());
        let a = config_map_name("flux-system", "fleet");
        assert_ne!(a, config_map_name("flux-system", "fleet2"));
        assert!(a.len() <= 63, "{a}");
    }
}
