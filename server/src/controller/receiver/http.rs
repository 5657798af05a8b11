//! `serve --receiver-addr`: Flux's Receivers of ImageRepositories served as
//! notification-controller's receiver server serves them
//! (`internal/server/receiver_handlers.go`): any method on
//! `status.webhookPath`; 413 above 3 MiB, 404 for a path no Receiver
//! shows, 503 while it is suspended or not Ready, 400 when the request does
//! not prove itself, 500 when a filter or an annotation fails, else 200
//! once every selected ImageRepository carries a new
//! `reconcile.fluxcd.io/requestedAt`. The checks are
//! [`crate::controller::receiver`]'s; this is the I/O around them.
//!
//! Beyond Flux: a Receiver takes at most [`RATE`] requests a second,
//! counted before anything is verified or written (429), so that a flood
//! writes nothing to the apiserver; triggers of one repository within
//! [`COALESCE`] make one annotation; a payload that names some of the
//! selected repositories annotates only those (see
//! [`receiver::narrow`]). Connections go through the webhook's accept loop
//! (`webhook::listen`): the same timeouts and caps, per peer and in all.

use crate::controller::conditions;
use crate::controller::metrics::Metrics;
use crate::controller::receiver::{
    self, Filters, Target, is_json_content, is_ours, partial_metadata, registry_pushes, targets,
    verify,
};
use crate::controller::watches::Caches;
use automation::api::{ImageRepository, RECONCILE_REQUEST_ANNOTATION, Receiver, ResourceExt};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use webhook::listen::{self, BodyError, Limits};

/// Flux's cap on a request body (`internal/server/limits.go`): 3 MiB.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The receiver's connection limits: the webhook's, with Flux's body cap.
pub fn limits() -> Limits {
    Limits {
        max_body: MAX_BODY,
        ..Limits::default()
    }
}

/// Triggers of one repository within this window make one annotation
/// (each request waits for it, so that its answer says how it went).
const COALESCE: Duration = Duration::from_millis(300);
/// The longest an annotation may take: an apiserver that does not answer
/// makes a 500 (the sender retries later), not a request held open.
const ANNOTATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests a Receiver takes per second (a burst of twice that).
const RATE: f64 = 20.0;

/// How the receiver serves.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// `--no-cross-namespace-refs` turns it off.
    pub cross_namespace_refs: bool,
    /// The JWKS of gcr's tokens (`--receiver-gcr-jwks-url`).
    pub gcr_jwks_url: String,
}

#[derive(Default)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

type Key = (String, String);
/// A Secret's data.
type Data = Arc<BTreeMap<String, Vec<u8>>>;
/// The answer of an annotation under way, for every request waiting on it.
type Annotated = tokio::sync::watch::Receiver<Option<Result<(), String>>>;

struct Receivers {
    client: Client,
    caches: Arc<Caches>,
    options: ReceiverOptions,
    keys: crate::controller::receiver::jwt::KeySets,
    buckets: Mutex<HashMap<Key, Bucket>>,
    pending: Mutex<HashMap<Key, Annotated>>,
    /// Secrets' data by resourceVersion (the metadata watch says when one
    /// changed): one read per version, not one per request.
    secrets: Mutex<HashMap<Key, (String, Data)>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Receiver's `ns/name` for logs and metrics.
fn key_of(r: &Receiver) -> Key {
    (r.namespace().unwrap_or_default(), r.name_any())
}

impl Receivers {
    /// Takes one request from `receiver`'s bucket; false when over the rate.
    fn admit(&self, receiver: &Key) -> bool {
        let mut b = lock(&self.buckets);
        let bucket = b.entry(receiver.clone()).or_insert(Bucket {
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

    fn count(&self, result: &'static str) {
        self.metrics.receiver_event(result);
    }

    /// The Receiver that shows `uri` as its `status.webhookPath` (Flux's
    /// index), among ours.
    fn find(&self, uri: &str) -> Option<Arc<Receiver>> {
        let receivers = self.caches.receivers.get()?;
        receivers.state().into_iter().find(|r| {
            is_ours(r)
                && r.status
                    .as_ref()
                    .and_then(|s| s.webhook_path.as_deref())
                    .is_some_and(|p| !p.is_empty() && p == uri)
        })
    }

    /// The data of Secret `ns/name`: read again when the metadata watch
    /// shows a new version.
    async fn secret(&self, ns: &str, name: &str) -> Result<Data, String> {
        let id = (ns.to_string(), name.to_string());
        let version = self
            .caches
            .secrets
            .get(ns, name)
            .and_then(|s| s.metadata.resource_version.clone());
        if let Some(v) = &version
            && let Some((cv, data)) = lock(&self.secrets).get(&id)
            && cv == v
        {
            return Ok(data.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut s = api.get(name).await.map_err(|e| match e {
            kube::Error::Api(s) => s.message,
            other => other.to_string(),
        })?;
        let data = Arc::new(crate::controller::secrets::data_of(&mut s));
        if let Some(v) = s.metadata.resource_version {
            lock(&self.secrets).insert(id, (v, data.clone()));
        }
        Ok(data)
    }

    /// Annotates `ns/name` at the end of the coalescing window; a trigger
    /// while one is scheduled joins it. Resolves with its outcome.
    async fn annotate(self: &Arc<Self>, ns: String, name: String) -> Result<(), String> {
        let id = (ns.clone(), name.clone());
        let mut rx = {
            let mut pending = lock(&self.pending);
            match pending.get(&id) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    pending.insert(id.clone(), rx.clone());
                    let s = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(COALESCE).await;
                        lock(&s.pending).remove(&id);
                        let api: Api<ImageRepository> = Api::namespaced(s.client.clone(), &ns);
                        let value = k8s_openapi::jiff::Timestamp::now().to_string();
                        let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUEST_ANNOTATION: value}}});
                        let patched = tokio::time::timeout(
                            ANNOTATE_TIMEOUT,
                            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                        )
                        .await;
                        let outcome = match patched {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(e)) => Err(crate::controller::secrets::api_error(&e)),
                            Err(_) => Err(format!(
                                "no answer from the apiserver within {ANNOTATE_TIMEOUT:?}"
                            )),
                        }
                        .map_err(|e| {
                            format!(
                                "failed to annotate resource: 'ImageRepository/{name}.{ns}': {e}"
                            )
                        });
                        match &outcome {
                            Ok(()) => tracing::info!(
                                repository = %format!("{ns}/{name}"),
                                "resource annotated"
                            ),
                            Err(e) => tracing::warn!("{e}"),
                        }
                        tx.send_replace(Some(outcome));
                    });
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Ok(())),
            Err(_) => Err("the annotation was dropped".into()),
        }
    }

    /// The ImageRepositories target `t` names that its filters accept:
    /// `(namespace, name, normalised image)`, or Flux's error.
    async fn select(
        &self,
        t: &Target,
        filters: &Filters,
    ) -> Result<Vec<(String, String, Option<String>)>, String> {
        let repos: Vec<Arc<ImageRepository>> = if t.name == "*" {
            // From the shared watch: no list request per event.
            self.caches
                .repositories
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace().as_deref() == Some(t.namespace.as_str())
                        && t.match_labels
                            .iter()
                            .all(|(k, v)| r.labels().get(k) == Some(v))
                })
                .collect()
        } else {
            match self.caches.repositories.get(&t.namespace, &t.name) {
                Some(r) => vec![r],
                // Not in the watch (yet): ask, as Flux's Get does.
                None => {
                    let api: Api<ImageRepository> =
                        Api::namespaced(self.client.clone(), &t.namespace);
                    let r = api.get(&t.name).await.map_err(|e| {
                        format!(
                            "unable to read ImageRepository \"{}/{}\" error: {}",
                            t.namespace,
                            t.name,
                            crate::controller::secrets::api_error(&e)
                        )
                    })?;
                    vec![Arc::new(r)]
                }
            }
        };
        let mut out = Vec::new();
        for r in repos {
            let res = partial_metadata(&t.api_version, "ImageRepository", &r.metadata);
            if !filters.accepts(t.index, &res)? {
                tracing::debug!(
                    repository = %format!("{}/{}", t.namespace, r.name_any()),
                    "not annotated: the CEL expression returned false"
                );
                continue;
            }
            out.push((
                t.namespace.clone(),
                r.name_any(),
                automation::registry::normalized_repository(&r.spec.image),
            ));
        }
        Ok(out)
    }
}

/// Reads the body under the receiver's limits, then answers.
async fn hook(State(s): State<Arc<Receivers>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limits = limits();
    let declared = listen::declared_length(&parts.headers);
    let (status, close) = match listen::read_body(body, declared, &limits).await {
        Ok(body) => {
            // Flux looks the Receiver up by the request URI as sent.
            let uri = parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
            (answer(&s, &uri, &parts.headers, &body).await, false)
        }
        Err(BodyError::TooLarge { drained }) => {
            s.count("too-large");
            (StatusCode::PAYLOAD_TOO_LARGE, !drained)
        }
        Err(BodyError::Timeout) => (StatusCode::REQUEST_TIMEOUT, true),
        Err(BodyError::Read(_)) => (StatusCode::BAD_REQUEST, true),
    };
    let mut response = status.into_response();
    if close {
        // Unread bytes are left on the connection: it cannot carry another
        // request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Flux's `handlePayload`, after the body is read.
async fn answer(
    s: &Arc<Receivers>,
    uri: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> StatusCode {
    let Some(r) = s.find(uri) else {
        s.count("not-found");
        return StatusCode::NOT_FOUND;
    };
    let id = key_of(&r);
    let who = format!("{}/{}", id.0, id.1);
    let conditions = r
        .status
        .as_ref()
        .map(|st| st.conditions.as_slice())
        .unwrap_or_default();
    if r.spec.suspend || !conditions::is_ready(conditions) {
        tracing::warn!(receiver = %who, suspended = r.spec.suspend, "unable to process request: the receiver is suspended or not ready");
        s.count("unavailable");
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if !s.admit(&id) {
        s.count("rate-limited");
        return StatusCode::TOO_MANY_REQUESTS;
    }
    // Go's Header.Get: each header's first value.
    let mut lowered: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in headers {
        if let Ok(v) = v.to_str() {
            lowered
                .entry(k.as_str().to_ascii_lowercase())
                .or_insert_with(|| v.to_string());
        }
    }
    let secret = match &r.spec.secret_ref {
        Some(sr) => match s.secret(&id.0, &sr.name).await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(receiver = %who, "unable to validate payload: unable to read secret \"{}/{}\": {e}", id.0, sr.name);
                s.count("refused");
                return StatusCode::BAD_REQUEST;
            }
        },
        None => None,
    };
    let keys = verify::Keys {
        sets: &s.keys,
        gcr_jwks_url: &s.options.gcr_jwks_url,
    };
    let request = verify::Request {
        headers: &lowered,
        body,
    };
    let validated = match verify::validate(&r, secret.as_deref(), &request, &keys).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(receiver = %who, "unable to validate payload: {e}");
            s.count("refused");
            return StatusCode::BAD_REQUEST;
        }
    };
    let json = is_json_content(request.header("Content-Type"));
    let filters = match Filters::new(&r, json, &validated.payload, validated.claims.as_ref()) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(receiver = %who, "unable to create resource filters: {e}");
            s.count("failed");
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    };
    let mut failed = false;
    let mut selected = Vec::new();
    for t in targets(&r, s.options.cross_namespace_refs) {
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(receiver = %who, "unable to request reconciliation: {e}");
                failed = true;
                continue;
            }
        };
        match s.select(&t, &filters).await {
            Ok(found) => {
                if t.name == "*" && found.is_empty() {
                    tracing::info!(receiver = %who, namespace = %t.namespace, "no ImageRepository matches the labels");
                }
                for f in found {
                    if !selected.contains(&f) {
                        selected.push(f);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(receiver = %who, "unable to request reconciliation: {e}");
                failed = true;
            }
        }
    }
    let indexed: Vec<(usize, Option<String>)> = selected
        .iter()
        .enumerate()
        .map(|(i, (_, _, image))| (i, image.clone()))
        .collect();
    let pushes = registry_pushes(body);
    let chosen = receiver::narrow(&indexed, pushes.as_deref());
    let annotations = chosen
        .into_iter()
        .filter_map(|i| selected.get(i))
        .map(|(ns, name, _)| {
            let s = s.clone();
            let (ns, name) = (ns.clone(), name.clone());
            async move { s.annotate(ns, name).await }
        });
    for outcome in futures::future::join_all(annotations).await {
        if let Err(e) = outcome {
            tracing::warn!(receiver = %who, "unable to request reconciliation: {e}");
            failed = true;
        }
    }
    if failed {
        s.count("failed");
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        s.count("accepted");
        StatusCode::OK
    }
}

/// Binds the listener and serves until `stop` turns true. The Receivers
/// and the Secrets they name come from the shared watches (the Receivers
/// from when their kind exists).
pub async fn start(
    addr: SocketAddr,
    client: Client,
    caches: Arc<Caches>,
    metrics: Arc<Metrics>,
    options: ReceiverOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, crate::StartError> {
    let listen_error = |source| crate::StartError::Listen {
        flag: "receiver-addr",
        addr,
        source,
    };
    let listener = listen::bind(addr).map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let keys = crate::controller::receiver::jwt::KeySets::new()
        .map_err(|e| crate::StartError::Client(e.into()))?;
    let state = Arc::new(Receivers {
        client,
        caches,
        options,
        keys,
        buckets: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        secrets: Mutex::new(HashMap::new()),
        metrics,
    });
    let app = Router::new()
        .route("/hook/{*rest}", axum::routing::any(hook))
        .fallback(|| async { StatusCode::NOT_FOUND })
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
    Ok(local)
}
