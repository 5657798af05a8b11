//! The peer of `bench/admission-load.sh`: a bare axum + rustls server that
//! answers every POST at once with an allowed AdmissionReview.
//!
//!     admission_load echo ADDR CERT_DIR
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

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
    let (Some("echo"), Some(addr), Some(dir)) = (
        args.get(1).map(String::as_str),
        args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(3),
    ) else {
        panic!("usage: admission_load echo ADDR CERT_DIR");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(echo(addr, std::path::Path::new(dir)));
}
