//! The admission server under load, for `bench/admission-load.sh`:
//!
//!     admission_load webhook ADDR CERT_DIR   the rules' server, with a view
//!                                            of 500 ImagePolicies and 2,000
//!                                            indexed markers
//!     admission_load echo ADDR CERT_DIR      a bare axum + rustls server that
//!                                            answers every POST at once with
//!                                            an allowed AdmissionReview (the
//!                                            peer)
//!     admission_load body FILE               writes the request body (a
//!                                            Deployment CREATE in a deny
//!                                            namespace, two containers)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_core::api::{ImagePolicy, ImageRepository};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use webhook::{MarkerLookup, MemoryView, NoopObserver, ObjectKey, ServerConfig, WorkloadContainer};

fn view() -> MemoryView {
    let mut policies = Vec::new();
    let mut repos = Vec::new();
    for i in 0..500 {
        let repo: ImageRepository = serde_json::from_value(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
            "metadata": {"name": format!("app-{i}"), "namespace": "shop"},
            "spec": {"image": format!("ghcr.io/acme/app-{i}"), "interval": "5m"}
        }))
        .unwrap();
        let policy: ImagePolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": format!("app-{i}"), "namespace": "shop"},
            "spec": {"imageRepositoryRef": {"name": format!("app-{i}")}, "policy": {"semver": {"range": "1.x"}}}
        }))
        .unwrap();
        repos.push(repo);
        policies.push(policy);
    }
    let markers = (0..2000).map(|i| {
        (
            WorkloadContainer {
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: format!("svc-{i}"),
                container: "app".into(),
            },
            MarkerLookup {
                file: format!("apps/svc-{i}.yaml"),
                line: 20,
                policy: Some(format!("shop:app-{}", i % 500)),
                automation: ObjectKey::new("shop", "fleet"),
                kustomization: None,
            },
        )
    });
    let ns = [(
        "shop".to_string(),
        BTreeMap::from([("imageauto.dev/enforce".to_string(), "deny".to_string())]),
    )];
    MemoryView::new(policies, repos, ns, markers)
}

fn body() -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "svc-7", "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "svc-7", "namespace": "shop"},
                "spec": {"selector": {"matchLabels": {"app": "svc"}}, "template": {
                    "metadata": {"labels": {"app": "svc"}},
                    "spec": {"containers": [
                        {"name": "app", "image": "ghcr.io/acme/app-7:1.2.3"},
                        {"name": "proxy", "image": "ghcr.io/acme/app-499:1.0.0"}]}}}
            },
            "dryRun": false
        }
    })
    .to_string()
}

async fn echo(addr: SocketAddr, dir: &std::path::Path) {
    use axum::routing::post;
    webhook::certs::ensure(dir, &[]).unwrap();
    let cert = std::fs::read(dir.join("tls.crt")).unwrap();
    let key = std::fs::read(dir.join("tls.key")).unwrap();
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = axum::Router::new().route(
        "/{*path}",
        post(|body: axum::body::Bytes| async move {
            let _ = body.len();
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true}}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                use tower::ServiceExt;
                app.clone().oneshot(req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.get(1).map(String::as_str) {
        Some("body") => std::fs::write(&args[2], body()).unwrap(),
        Some("webhook") => {
            let addr: SocketAddr = args[2].parse().unwrap();
            let dir = std::path::PathBuf::from(&args[3]);
            rt.block_on(async move {
                let server = webhook::Server::bind(
                    ServerConfig::new(addr, dir),
                    Arc::new(view()),
                    Arc::new(NoopObserver),
                )
                .await
                .unwrap();
                server.run(std::future::pending()).await;
            });
        }
        Some("echo") => {
            let addr: SocketAddr = args[2].parse().unwrap();
            let dir = std::path::PathBuf::from(&args[3]);
            rt.block_on(echo(addr, &dir));
        }
        _ => panic!("usage: admission_load webhook|echo ADDR CERT_DIR | body FILE"),
    }
}
