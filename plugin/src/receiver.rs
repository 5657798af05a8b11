//! `serve --receiver-addr`: Flux's Receiver endpoints for ImageRepositories
//! (`/hook/<sha256>`), and the registry's own notifications posted to them.
//! A request that proves itself triggers a scan of the Receiver's
//! ImageRepositories (narrowed to the repositories the payload names, when
//! it names some) the way Flux does: a `reconcile.fluxcd.io/requestedAt`
//! annotation; the scan itself decides what changed. Unknown paths get 404
//! with no hint; refusals 401 and an event on the Receiver; bodies are
//! capped (a larger one gets its 413 before the connection closes); a flood
//! is coalesced per repository and rate-limited per Receiver. Connections
//! go through the same accept loop as the webhook's (`webhook::listen`):
//! the same timeouts and caps, per peer and in all.

use automation::api::{
    ImageRepository, RECONCILE_REQUEST_ANNOTATION, Receiver, ReceiverType, ResourceExt,
};
use automation::controller::metrics::Metrics;
use automation::controller::receiver::{is_ours, targets, verify, webhook_path};
use automation::controller::watches::{Caches, Change, Shared};
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use webhook::listen::{self, BodyError, Limits};

/// Largest body read (registry notifications batch events; 1 MiB is many).
const MAX_BODY: usize = 1 << 20;

/// The receiver's connection limits: the webhook's, with its own body cap.
pub fn limits() -> Limits {
    Limits {
        max_body: MAX_BODY,
        ..Limits::default()
    }
}
/// Triggers of one repository within this window make one scan request,
/// sent at its end (so that a request always follows the last event).
const COALESCE: Duration = Duration::from_millis(300);
/// Requests a Receiver takes per second (a burst of twice that).
const RATE: f64 = 20.0;

/// One Receiver the server answers for.
#[derive(Clone)]
struct Entry {
    receiver: Receiver,
    kind: ReceiverType,
    token: String,
}

#[derive(Default)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

pub struct Receivers {
    client: Client,
    caches: Arc<Caches>,
    by_path: RwLock<HashMap<String, Entry>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    pending: Mutex<std::collections::HashSet<(String, String)>>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Receivers {
    /// Takes one request from `receiver`'s bucket; false when over the rate.
    fn admit(&self, receiver: &str) -> bool {
        let mut b = lock(&self.buckets);
        let bucket = b.entry(receiver.to_string()).or_insert(Bucket {
            tokens: RATE * 2.0,
            at: None,
        });
        let now = Instant::now();
        if let Some(at) = bucket.at {
            bucket.tokens =
                (bucket.tokens + now.duration_since(at).as_secs_f64() * RATE).min(RATE * 2.0);
        }
        bucket.at = Some(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Schedules one scan request for a repository at the end of the
    /// coalescing window; a trigger while one is scheduled joins it.
    fn schedule(self: &Arc<Self>, ns: String, name: String) {
        if !lock(&self.pending).insert((ns.clone(), name.clone())) {
            return;
        }
        let s = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(COALESCE).await;
            lock(&s.pending).remove(&(ns.clone(), name.clone()));
            let api: Api<ImageRepository> = Api::namespaced(s.client.clone(), &ns);
            let value = k8s_openapi::jiff::Timestamp::now().to_string();
            let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUEST_ANNOTATION: value}}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(repository = %format!("{ns}/{name}"), "scan requested by a receiver")
                }
                Err(e) => {
                    tracing::warn!(repository = %format!("{ns}/{name}"), "cannot request a scan: {e}")
                }
            }
        });
    }

    async fn event(&self, r: &Receiver, reason: &str, note: String) {
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(note),
            action: "Receive".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &r.object_ref(&())).await {
            tracing::warn!("cannot publish an event: {e}");
        }
    }

    /// Requests a scan of the Receiver's ImageRepositories (those the
    /// payload names, when it names some). Returns how many were asked.
    async fn trigger(self: &Arc<Self>, r: &Receiver, only: Option<&[String]>) -> usize {
        if only.is_some_and(<[String]>::is_empty) {
            return 0;
        }
        let mut asked = 0;
        for (ns, name, labels) in targets(r) {
            // From the shared watch: no request to the apiserver per event
            // (a Receiver answers while the apiserver is away).
            let repos: Vec<Arc<ImageRepository>> = if name == "*" {
                self.caches
                    .repositories
                    .state()
                    .into_iter()
                    .filter(|repo| {
                        repo.namespace().as_deref() == Some(ns.as_str())
                            && labels.iter().all(|(k, v)| repo.labels().get(k) == Some(v))
                    })
                    .collect()
            } else {
                self.caches
                    .repositories
                    .get(&ns, &name)
                    .into_iter()
                    .collect()
            };
            for repo in repos {
                if let Some(only) = only
                    && !automation::registry::normalized_repository(&repo.spec.image)
                        .is_some_and(|n| only.contains(&n))
                {
                    continue;
                }
                self.schedule(ns.clone(), repo.name_any());
                asked += 1;
            }
        }
        asked
    }
}

/// Reads the body under the receiver's limits, then answers the hook.
async fn hook(
    State(s): State<Arc<Receivers>>,
    Path(digest): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let limits = limits();
    let declared = listen::declared_length(&parts.headers);
    let (status, text, close) = match listen::read_body(body, declared, &limits).await {
        Ok(body) => {
            let (status, text) = answer(&s, &digest, &parts.headers, &body).await;
            (status, text, false)
        }
        Err(BodyError::TooLarge { drained }) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes\n"),
            !drained,
        ),
        Err(BodyError::Timeout) => (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {:?}\n",
                limits.body_read_timeout
            ),
            true,
        ),
        Err(BodyError::Read(e)) => (
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}\n"),
            true,
        ),
    };
    let mut response = (status, text).into_response();
    if close {
        // Unread bytes are left on the connection: it cannot carry another
        // request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn answer(
    s: &Arc<Receivers>,
    digest: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (StatusCode, String) {
    let path = format!("/hook/{digest}");
    let entry = s.by_path.read().ok().and_then(|m| m.get(&path).cloned());
    let Some(entry) = entry else {
        s.metrics.inc(
            "imageauto_receiver_events_total",
            &[("result", "not-found")],
        );
        return (StatusCode::NOT_FOUND, "not found\n".into());
    };
    let rkey = format!(
        "{}/{}",
        entry.receiver.namespace().unwrap_or_default(),
        entry.receiver.name_any()
    );
    let lowered: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let accepted = match verify(
        entry.kind,
        &lowered,
        body,
        entry.token.as_bytes(),
        &entry.receiver.spec.events,
    ) {
        Ok(a) => a,
        Err(e) => {
            s.metrics
                .inc("imageauto_receiver_events_total", &[("result", "refused")]);
            s.event(
                &entry.receiver,
                "ValidationFailed",
                format!("a request was refused: {e}"),
            )
            .await;
            return (StatusCode::UNAUTHORIZED, "unauthorized\n".into());
        }
    };
    if !s.admit(&rkey) {
        s.metrics.inc(
            "imageauto_receiver_events_total",
            &[("result", "rate-limited")],
        );
        return (StatusCode::TOO_MANY_REQUESTS, "too many requests\n".into());
    }
    if !accepted.wanted {
        s.metrics
            .inc("imageauto_receiver_events_total", &[("result", "ignored")]);
        return (StatusCode::OK, "event not handled\n".into());
    }
    let asked = s
        .trigger(&entry.receiver, accepted.repositories.as_deref())
        .await;
    s.metrics
        .inc("imageauto_receiver_events_total", &[("result", "accepted")]);
    (
        StatusCode::OK,
        format!("{asked} ImageRepository scan(s) requested\n"),
    )
}

/// Rebuilds the path table from the Receivers: each of ours, with its
/// Secret's token. A token that cannot be read now (an apiserver outage)
/// keeps the Receiver's last good entry: a Receiver is dropped only when
/// it is gone, suspended or no longer ours.
async fn rebuild(s: &Receivers, receivers: &Shared<Receiver>) {
    let previous: HashMap<(String, String), (String, Entry)> = s
        .by_path
        .read()
        .map(|m| {
            m.iter()
                .map(|(p, e)| {
                    (
                        (
                            e.receiver.namespace().unwrap_or_default(),
                            e.receiver.name_any(),
                        ),
                        (p.clone(), e.clone()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut table = HashMap::new();
    for r in receivers.state() {
        if !is_ours(&r) || r.spec.suspend {
            continue;
        }
        let id = (r.namespace().unwrap_or_default(), r.name_any());
        match automation::controller::receivers_token(&s.client, &r).await {
            Ok(token) => {
                let path = webhook_path(&token, &id.1, &id.0);
                table.insert(
                    path,
                    Entry {
                        receiver: r.as_ref().clone(),
                        kind: r.spec.receiver_type,
                        token,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(receiver = %r.name_any(), "receiver token not read: {e}");
                if let Some((path, mut entry)) = previous.get(&id).cloned() {
                    entry.receiver = r.as_ref().clone();
                    table.insert(path, entry);
                }
            }
        }
    }
    if let Ok(mut m) = s.by_path.write() {
        *m = table;
    }
}

/// Binds the listener and serves; the path table follows the Receivers and
/// the Secrets they name (the shared watches), and is read again every
/// minute. The second value turns true once the table was first built from
/// the synced watches (at once when the cluster has no Receiver kind).
pub async fn start(
    addr: SocketAddr,
    client: Client,
    caches: Arc<Caches>,
    metrics: Arc<Metrics>,
    instance: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::sync::watch::Receiver<bool>)> {
    let (built_tx, built) = tokio::sync::watch::channel(false);
    let listener = listen::bind(addr)
        .map_err(|e| anyhow::anyhow!("--receiver-addr {addr}: cannot listen there: {e}"))?;
    let local = listener.local_addr()?;
    let state = Arc::new(Receivers {
        client: client.clone(),
        caches: caches.clone(),
        by_path: RwLock::new(HashMap::new()),
        buckets: Mutex::new(HashMap::new()),
        pending: Mutex::new(std::collections::HashSet::new()),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "imageauto".into(),
                instance: Some(instance),
            },
        ),
        metrics,
    });
    match caches.receivers.clone() {
        Some(receivers) => {
            let s = state.clone();
            let secrets = caches.secrets.clone();
            tokio::spawn(async move {
                let mut own = receivers.subscribe();
                let mut secret_changes = secrets.subscribe();
                receivers.wait_synced().await;
                rebuild(&s, &receivers).await;
                built_tx.send_replace(true);
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        ev = own.recv() => {
                            if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                                return;
                            }
                        }
                        ev = secret_changes.recv() => {
                            // Only a Secret a Receiver names.
                            let named = match &ev {
                                Ok(Change::Applied(sec) | Change::Deleted(sec)) => {
                                    let (ns, name) = (sec.namespace(), sec.name_any());
                                    receivers.state().iter().any(|r| r.namespace() == ns && r.spec.secret_ref.name == name)
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                            };
                            if !named {
                                continue;
                            }
                        }
                        _ = tick.tick() => {}
                    }
                    rebuild(&s, &receivers).await;
                }
            });
        }
        None => {
            built_tx.send_replace(true);
            tracing::info!(
                "no Receiver kind in the cluster: the receiver answers 404 until there is"
            );
        }
    }
    let app = Router::new()
        .route("/hook/{digest}", post(hook))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state);
    tokio::spawn(listen::serve(
        "receiver",
        listener,
        None,
        app,
        limits(),
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    Ok((local, built))
}
