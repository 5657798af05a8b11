//! The admission server: axum routes behind rustls (ring), HTTP/1.1 with
//! keep-alive, TLS only.
//!
//! ```text
//! let server = Server::bind(config, view, observer).await?;   // certs ready, port bound
//! let addr = server.local_addr();
//! server.run(shutdown).await?;                                  // until shutdown resolves
//! ```
//!
//! or [`serve`] for both at once. [`router`] is the plain axum router (no
//! TLS), for tests with `tower::ServiceExt::oneshot`.
//!
//! Paths: `POST /validate/workloads` and `POST /validate/image-kinds`;
//! anything else is 404 (405 for another method on those paths).
//!
//! What a production admission server must survive, and how:
//! - Bodies are capped ([`Limits::max_body`], 3 MiB like the apiserver's own
//!   limit): a larger one is answered 413 (its rest read and dropped, up to a
//!   bound, so that the client sees the answer and the connection stays).
//! - A body that is not an AdmissionReview is answered 400 with the reason.
//! - Slow clients: the TLS handshake, the request head (also the idle time
//!   between keep-alive requests) and the body each have a timeout; a
//!   connection lives at most [`Limits::max_connection_age`]; at most
//!   [`Limits::max_connections`] are served at once (further ones wait in
//!   the listen backlog).
//! - Plain HTTP on the TLS port is answered with a short 400 saying to use
//!   HTTPS, then closed. A handshake without SNI (by IP) gets the one
//!   certificate.
//! - The certificate folder is polled every [`Limits::reload_interval`]; new
//!   valid files are served from the next handshake on.

use crate::certs::{self, CertError, CertResolver};
use crate::view::ClusterView;
use crate::{Answer, Observer, Outcome, Rule};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// The apiserver sends at most 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Bounds on what one client may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body; larger ones get 413.
    pub max_body: usize,
    /// How much of a too-large body is read and dropped before answering 413
    /// on the same connection; past it the connection is closed after the
    /// answer.
    pub max_drain: usize,
    /// From TCP accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// For a request head, counted from the end of the previous response on
    /// a kept-alive connection (so also the longest idle time).
    pub header_read_timeout: Duration,
    /// For a whole request body.
    pub body_read_timeout: Duration,
    /// Connections served at once. Each may buffer one body of up to
    /// `max_body`, so this also bounds the memory bodies take.
    pub max_connections: usize,
    /// After this, a connection is closed once its current request is
    /// answered (clients reconnect).
    pub max_connection_age: Duration,
    /// Time given to open connections to finish at shutdown and at
    /// `max_connection_age`.
    pub grace: Duration,
    /// How often the certificate files are read for changes.
    pub reload_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: MAX_BODY,
            max_drain: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connection_age: Duration::from_secs(600),
            grace: Duration::from_secs(10),
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `serve --webhook-addr`.
    pub addr: SocketAddr,
    /// `serve --cert-dir`: `tls.crt` + `tls.key`, or empty to generate.
    pub cert_dir: PathBuf,
    /// Names a generated certificate covers besides `localhost` and
    /// `127.0.0.1`: the Service's DNS names (`NAME.NS.svc`, ...).
    pub dns_names: Vec<String>,
    pub limits: Limits,
}

impl ServerConfig {
    pub fn new(addr: SocketAddr, cert_dir: impl Into<PathBuf>) -> Self {
        Self {
            addr,
            cert_dir: cert_dir.into(),
            dns_names: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("webhook certificate: {0}")]
    Cert(#[from] CertError),
    #[error("webhook TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("preparing the certificate failed: {0}")]
    Task(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct AppState {
    view: Arc<dyn ClusterView>,
    observer: Arc<dyn Observer>,
    limits: Limits,
}

/// The routes, without TLS. Bodies are read under `Limits::default()`.
pub fn router(view: Arc<dyn ClusterView>, observer: Arc<dyn Observer>) -> Router {
    router_with(view, observer, Limits::default())
}

fn router_with(view: Arc<dyn ClusterView>, observer: Arc<dyn Observer>, limits: Limits) -> Router {
    let state = AppState {
        view,
        observer,
        limits,
    };
    Router::new()
        .route(
            Rule::Workloads.path(),
            post(|State(s): State<AppState>, req: Request| handle(s, Rule::Workloads, req)),
        )
        .route(
            Rule::ImageKinds.path(),
            post(|State(s): State<AppState>, req: Request| handle(s, Rule::ImageKinds, req)),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "no such path: the webhook serves POST /validate/workloads and POST /validate/image-kinds\n",
            )
        })
        .with_state(state)
}

enum BodyError {
    TooLarge { drained: bool },
    Timeout,
    Read(String),
}

/// Reads the body within the limits. A too-large body is read on and
/// dropped up to `max_drain`, so that the answer reaches a client that is
/// still sending.
async fn read_body(
    body: Body,
    declared: Option<u64>,
    limits: &Limits,
) -> Result<Vec<u8>, BodyError> {
    let cap = limits.max_body;
    let drain_all = declared.is_none_or(|n| n <= limits.max_drain as u64);
    if declared.is_some_and(|n| n > cap as u64) && !drain_all {
        return Err(BodyError::TooLarge { drained: false });
    }
    let read = async {
        let mut body = body;
        let mut buf: Vec<u8> = Vec::new();
        let mut total: usize = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total = total.saturating_add(data.len());
            if total > limits.max_drain {
                return Err(BodyError::TooLarge { drained: false });
            }
            if total <= cap {
                buf.extend_from_slice(&data);
            } else {
                buf = Vec::new();
            }
        }
        if total > cap {
            Err(BodyError::TooLarge { drained: true })
        } else {
            Ok(buf)
        }
    };
    match tokio::time::timeout(limits.body_read_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::Timeout),
    }
}

async fn handle(state: AppState, rule: Rule, req: Request) -> Response {
    let start = Instant::now();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut close = false;
    let answer = match read_body(req.into_body(), declared, &state.limits).await {
        Ok(body) => crate::answer(rule, &body, state.view.as_ref()),
        Err(BodyError::TooLarge { drained }) => {
            // Unread bytes are left on the connection: it cannot carry
            // another request.
            close = !drained;
            Answer::error(
                413,
                format!(
                    "the body is larger than {} bytes, the apiserver's own limit",
                    state.limits.max_body
                ),
            )
        }
        Err(BodyError::Timeout) => {
            close = true;
            Answer::error(
                408,
                format!(
                    "the body did not arrive within {:?}",
                    state.limits.body_read_timeout
                ),
            )
        }
        Err(BodyError::Read(e)) => {
            close = true;
            Answer::error(400, format!("cannot read the body: {e}"))
        }
    };
    state
        .observer
        .observe(rule, answer.outcome, start.elapsed());
    if answer.outcome == Outcome::Error {
        tracing::debug!(
            rule = rule.name(),
            status = answer.status,
            "admission request not judged"
        );
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A bound, ready server: certificates loaded (or generated), port bound.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    resolver: Arc<CertResolver>,
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
}

impl Server {
    /// Prepares the certificate folder (generating into an empty one),
    /// loads the certificate and binds the address.
    pub async fn bind(
        config: ServerConfig,
        view: Arc<dyn ClusterView>,
        observer: Arc<dyn Observer>,
    ) -> Result<Server, ServerError> {
        let dir = config.cert_dir.clone();
        let names = config.dns_names.clone();
        let resolver = tokio::task::spawn_blocking(move || -> Result<CertResolver, CertError> {
            if certs::ensure(&dir, &names)? {
                tracing::info!(dir = %dir.display(), "generated a CA and a serving certificate");
            }
            CertResolver::load(&dir)
        })
        .await
        .map_err(|e| CertError::Io {
            path: config.cert_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let resolver = Arc::new(resolver);
        let mut tls = rustls::ServerConfig::builder_with_provider(certs::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.addr,
            source,
        })?;
        Ok(Server {
            listener,
            local_addr,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            router: router_with(view, observer, config.limits),
            limits: config.limits,
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets open
    /// requests finish within [`Limits::grace`], and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Server {
            listener,
            resolver,
            acceptor,
            router,
            limits,
            ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let reload = tokio::spawn(reload_loop(
            resolver,
            limits.reload_interval,
            stop_rx.clone(),
        ));
        let max = limits
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let permits = Arc::new(Semaphore::new(max));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "webhook accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                connection(tcp, peer, acceptor, router, limits, stop).await;
                drop(permit);
            });
        }
        drop(listener);
        let _ = stop_tx.send(true);
        // Every connection holds a permit until it ends.
        let _ = tokio::time::timeout(limits.grace, permits.acquire_many(max as u32)).await;
        let _ = reload.await;
    }
}

/// Binds and serves until `shutdown` resolves: [`Server::bind`] then
/// [`Server::run`].
pub async fn serve(
    config: ServerConfig,
    view: Arc<dyn ClusterView>,
    observer: Arc<dyn Observer>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    Server::bind(config, view, observer)
        .await?
        .run(shutdown)
        .await;
    Ok(())
}

async fn reload_loop(
    resolver: Arc<CertResolver>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match resolver.reload().await {
            Ok(true) => tracing::info!("webhook certificate reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "webhook certificate not reloaded; serving the previous one")
            }
        }
    }
}

const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 53\r\n\r\nthis port speaks HTTPS only: use https:// to call it\n";

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    // A TLS connection starts with a handshake record (0x16); anything else
    // is most likely plain HTTP sent to the TLS port.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.handshake_timeout, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 => {
            plain_http(tcp, limits).await;
            return;
        }
        Ok(Ok(1)) => {}
        _ => return,
    }
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "webhook TLS handshake timed out");
            return;
        }
    };
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let age = tokio::time::sleep(limits.max_connection_age);
    tokio::pin!(age);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
            return;
        }
        _ = stop.changed() => {}
        _ = &mut age => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.grace, conn).await;
}

/// Answers plain HTTP with a 400 that says to use HTTPS, after reading what
/// the client sent (so that closing does not reset the connection before
/// the answer is read).
async fn plain_http(mut tcp: TcpStream, limits: Limits) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(
        Duration::from_millis(200).min(limits.handshake_timeout),
        tcp.read(&mut buf),
    )
    .await;
    let _ = tokio::time::timeout(limits.handshake_timeout, async {
        tcp.write_all(PLAIN_HTTP_ANSWER).await?;
        tcp.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_answer_length_is_right() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
