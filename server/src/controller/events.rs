//! `serve --events-addr URL`: every event (but Flux's trace events) is also
//! posted to notification-controller's event server, in Flux's format
//! (fluxcd/pkg `apis/event/v1beta1`, posted as `runtime/events/recorder.go`
//! posts it: a 5 s timeout, retried up to four times with a backoff from 1 s
//! to 30 s, never retried on 429, which means "a duplicate"). Flux's Alerts
//! and Providers on the image kinds then fire as they do with Flux's own
//! controllers. Posting never holds a reconciliation: events queue (up to
//! [`QUEUE`]; past it they are dropped with a warning) and one task sends
//! them in order.

use super::decision::{EventSeverity, Note};
use kube::Resource;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// Events waiting to be posted, at most.
pub const QUEUE: usize = 1024;
/// Flux's annotation prefix copied into an event's metadata.
pub const ANNOTATION_PREFIX: &str = "event.toolkit.fluxcd.io/";

/// `corev1.ObjectReference`, as Flux's event carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvolvedObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub api_version: String,
    pub resource_version: String,
}

/// Flux's `eventv1.Event`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxEvent {
    pub involved_object: InvolvedObject,
    /// `info` or `error`.
    pub severity: &'static str,
    /// RFC 3339, whole seconds.
    pub timestamp: String,
    pub message: String,
    pub reason: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub reporting_controller: String,
    pub reporting_instance: String,
}

/// The controller of Flux's that reports on `kind`.
pub fn flux_controller(kind: &str) -> &'static str {
    match kind {
        "ImageUpdateAutomation" => "image-automation-controller",
        "Receiver" => "notification-controller",
        _ => "image-reflector-controller",
    }
}

/// The event Flux would post for `note` about `obj`; `None` for a trace
/// (Flux records those as Kubernetes events only).
pub fn flux_event<K: Resource<DynamicType = ()>>(
    obj: &K,
    note: &Note,
    instance: &str,
    now: &k8s_openapi::jiff::Timestamp,
) -> Option<FluxEvent> {
    let severity = match note.severity {
        EventSeverity::Trace => return None,
        EventSeverity::Info => "info",
        EventSeverity::Error => "error",
    };
    let meta = obj.meta();
    let kind = K::kind(&()).to_string();
    let metadata = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ts = k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(*now);
    Some(FluxEvent {
        involved_object: InvolvedObject {
            kind: kind.clone(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            api_version: K::api_version(&()).to_string(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        },
        severity,
        timestamp: ts.to_string(),
        message: note.message.clone(),
        reason: note.reason.clone(),
        metadata,
        reporting_controller: flux_controller(&kind).to_string(),
        reporting_instance: instance.to_string(),
    })
}

/// Sends events to notification-controller in the background.
#[derive(Clone, Debug)]
pub struct Poster {
    tx: mpsc::Sender<FluxEvent>,
}

/// Flux's retry policy: attempts after the first, and the backoff bounds.
const RETRIES: u32 = 4;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `url` as notification-controller's event server address, or why not.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("--events-addr {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "--events-addr {url:?}: give an http or https URL (notification-controller's event server)"
        ));
    }
    Ok(parsed)
}

impl Poster {
    /// Starts the sender for `url` (checked to be an http(s) URL).
    pub fn start(url: &str) -> Result<Poster, String> {
        let parsed = check_url(url)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("--events-addr: {e}"))?;
        let (tx, mut rx) = mpsc::channel::<FluxEvent>(QUEUE);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                send(&client, &parsed, &event).await;
            }
        });
        Ok(Poster { tx })
    }

    /// Queues an event; a full queue drops it, with a warning.
    pub fn post(&self, event: FluxEvent) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!("events-addr: the queue is full: an event was dropped");
        }
    }
}

async fn send(client: &reqwest::Client, url: &reqwest::Url, event: &FluxEvent) {
    let mut wait = BACKOFF_MIN;
    for attempt in 0..=RETRIES {
        let sent = client.post(url.clone()).json(event).send().await;
        let retry = match &sent {
            // 429: notification-controller already has this event.
            Ok(r) if r.status().is_success() || r.status().as_u16() == 429 => return,
            // Flux retries 5xx (but 501) and connection errors.
            Ok(r) => r.status().is_server_error() && r.status().as_u16() != 501,
            Err(_) => true,
        };
        if !retry || attempt == RETRIES {
            let why = match sent {
                Ok(r) => format!("{}", r.status()),
                Err(e) => e.without_url().to_string(),
            };
            tracing::warn!(
                object = %format!("{}/{}", event.involved_object.namespace, event.involved_object.name),
                "events-addr: the event was not accepted: {why}"
            );
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResourceExt;

    #[test]
    fn the_event_is_fluxs() {
        let mut a: crate::api::ImageUpdateAutomation = serde_json::from_value(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1",
            "kind": "ImageUpdateAutomation",
            "metadata": {
                "name": "fleet", "namespace": "apps", "uid": "u-1", "resourceVersion": "42",
                "annotations": {"event.toolkit.fluxcd.io/team": "web", "other": "x"}
            },
            "spec": {"interval": "1h", "sourceRef": {"kind": "GitRepository", "name": "fleet"}}
        }))
        .unwrap();
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let note = Note::normal(
            "Succeeded",
            "pushed commit 'abc1234' to branch 'main'\nUpdate",
            "Push",
        );
        let e = flux_event(&a, &note, "imageauto-0", &now).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "involvedObject": {
                    "kind": "ImageUpdateAutomation", "namespace": "apps", "name": "fleet",
                    "uid": "u-1", "apiVersion": "image.toolkit.fluxcd.io/v1", "resourceVersion": "42"
                },
                "severity": "info",
                "timestamp": "2027-01-15T08:00:00Z",
                "message": "pushed commit 'abc1234' to branch 'main'\nUpdate",
                "reason": "Succeeded",
                "metadata": {"event.toolkit.fluxcd.io/team": "web"},
                "reportingController": "image-automation-controller",
                "reportingInstance": "imageauto-0"
            })
        );
        // Traces are not posted; warnings are errors.
        assert!(
            flux_event(
                &a,
                &Note::trace("Succeeded", "no change", "Push"),
                "i",
                &now
            )
            .is_none()
        );
        a.annotations_mut().clear();
        let e = flux_event(
            &a,
            &Note::warning("GitOperationFailed", "no", "Push"),
            "i",
            &now,
        )
        .unwrap();
        assert_eq!(e.severity, "error");
        assert!(serde_json::to_value(&e).unwrap().get("metadata").is_none());
    }
}
