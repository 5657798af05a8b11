//! The plain-HTTP listeners of `serve`: /metrics, and /healthz, /readyz,
//! /version. Each binds its own address; port 0 picks a free one. They go
//! through the webhook's accept loop (`webhook::listen`): its timeouts and
//! caps, and they stop accepting (the ports are free) as soon as `serve`
//! begins to shut down.

use crate::StartError;
use crate::controller::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;
use webhook::listen::{self, Limits};

/// The state the health endpoints report.
#[derive(Default)]
pub struct Health {
    /// Every shared cache holds its first listing, and the admission view
    /// (with the marker index) is built from them: the same on a leader
    /// and a follower.
    pub ready: AtomicBool,
}

/// Where the listeners ended up.
pub struct Servers {
    pub metrics: SocketAddr,
    pub health: SocketAddr,
}

pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }),
        )
        .with_state(metrics)
}

pub fn health_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet").into_response()
                }
            }),
        )
        .route(
            "/version",
            get(|| async {
                axum::Json(serde_json::json!({
                    "name": "imageauto",
                    "version": env!("CARGO_PKG_VERSION"),
                }))
            }),
        )
        .with_state(health)
}

fn bind(addr: SocketAddr, flag: &'static str) -> Result<tokio::net::TcpListener, StartError> {
    listen::bind(addr).map_err(|source| StartError::Listen { flag, addr, source })
}

/// Binds both listeners (an address in use is an error at once) and serves
/// them in the background until `stop` turns true.
pub async fn start(
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> Result<Servers, StartError> {
    let m = bind(metrics_addr, "metrics-addr")?;
    let h = bind(health_addr, "health-addr")?;
    let local = |l: &tokio::net::TcpListener, addr, flag| {
        l.local_addr()
            .map_err(|source| StartError::Listen { flag, addr, source })
    };
    let servers = Servers {
        metrics: local(&m, metrics_addr, "metrics-addr")?,
        health: local(&h, health_addr, "health-addr")?,
    };
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(listen::serve(
        "metrics",
        m,
        None,
        metrics_router(metrics),
        Limits::default(),
        stopped(stop.clone()),
    ));
    tokio::spawn(listen::serve(
        "health",
        h,
        None,
        health_router(health),
        Limits::default(),
        stopped(stop),
    ));
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_text(r: Router, path: &str) -> (StatusCode, String) {
        let resp = r
            .oneshot(Request::builder().uri(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_and_metrics() {
        let health = Arc::new(Health::default());
        let (s, _) = get_text(health_router(health.clone()), "/readyz").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        health.ready.store(true, Ordering::Relaxed);
        let (s, b) = get_text(health_router(health.clone()), "/readyz").await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "ok"));
        let (s, _) = get_text(health_router(health.clone()), "/healthz").await;
        assert_eq!(s, StatusCode::OK);
        let (_, v) = get_text(health_router(health), "/version").await;
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
        let m = Arc::new(Metrics::default());
        m.scanned("success", std::time::Duration::from_millis(5));
        let (s, b) = get_text(metrics_router(m), "/metrics").await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            b.contains("imageauto_scan_total{result=\"success\"} 1"),
            "{b}"
        );
    }
}
