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
//! What a production admission server must survive, and how: the
//! connection limits, timeouts and per-peer caps of [`crate::listen`] (its
//! module documentation says what they guarantee to the apiserver), and:
//! - Bodies are capped ([`Limits::max_body`], 3 MiB like the apiserver's own
//!   limit): a larger one is answered 413 (its rest read and dropped, up to a
//!   bound, so that the client sees the answer and the connection stays).
//! - A body that is not an AdmissionReview is answered 400 with the reason.
//! - Plain HTTP on the TLS port is answered with a short 400 saying to use
//!   HTTPS, then closed. A handshake without SNI (by IP) gets the one
//!   certificate.
//! - The certificate folder is polled every [`Limits::reload_interval`]; new
//!   valid files are served from the next handshake on.

use crate::certs::{self, CertError, CertResolver};
use crate::listen::{self, BodyError, read_body};
use crate::view::ClusterView;
use crate::{Answer, Observer, Outcome, Rule};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
pub use listen::{Limits, MAX_BODY};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

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

async fn handle(state: AppState, rule: Rule, req: Request) -> Response {
    let start = Instant::now();
    let declared = listen::declared_length(req.headers());
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
        let listener = listen::bind(config.addr).map_err(|source| ServerError::Bind {
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

    /// The certificate it serves (and reloads while it runs).
    pub fn certificates(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting (the port is
    /// free at once), lets open requests finish within [`Limits::grace`],
    /// and returns.
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
        let reload = tokio::spawn(reload_loop(resolver, limits.reload_interval, stop_rx));
        listen::serve(
            "webhook",
            listener,
            Some(acceptor),
            router,
            limits,
            shutdown,
        )
        .await;
        let _ = stop_tx.send(true);
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
