#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The server over real TLS on 127.0.0.1: generated and rotated
//! certificates, bad input, slow clients, plain HTTP on the TLS port. Every
//! server binds port 0 and stops when its guard is dropped.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Recorder, fixture, view};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webhook::certs::{self, CA_FILE, CERT_FILE, KEY_FILE};
use webhook::{Limits, Outcome, Rule, Server, ServerConfig};

/// A running server; dropping it stops the server.
struct Running {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    certificates: Arc<certs::CertResolver>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    async fn stop(mut self) -> Duration {
        let start = Instant::now();
        drop(self.stop.take());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops")
            .unwrap();
        start.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn test_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        grace: Duration::from_secs(2),
        reload_interval: Duration::from_millis(100),
        ..Limits::default()
    }
}

async fn start(dir: &Path, dns_names: &[&str]) -> Running {
    start_with(dir, dns_names, test_limits()).await
}

async fn start_with(dir: &Path, dns_names: &[&str], limits: Limits) -> Running {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir);
    config.dns_names = dns_names.iter().map(|s| s.to_string()).collect();
    config.limits = limits;
    let recorder = Arc::new(Recorder::default());
    let server = Server::bind(config, Arc::new(view(vec![])), recorder.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let certificates = server.certificates();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        recorder,
        certificates,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A client that trusts only `ca_pem`, resolving `name` to the server.
fn client(ca_pem: &[u8], name: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .resolve(name, addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn url(name: &str, addr: SocketAddr, path: &str) -> String {
    format!("https://{name}:{}{path}", addr.port())
}

fn body(name: &str) -> Vec<u8> {
    serde_json::to_vec(&fixture(name)).unwrap()
}

async fn post(c: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, String) {
    let r = c.post(url).body(body).send().await.expect("an answer");
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn empty_cert_dir_gets_a_ca_and_a_certificate_for_localhost_127_0_0_1_and_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let server = start(&dir, &["imageauto-webhook.imageauto.svc"]).await;
    for f in [CA_FILE, CERT_FILE, KEY_FILE] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let mode = std::fs::metadata(dir.join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let ca = std::fs::read(dir.join(CA_FILE)).unwrap();

    for name in ["localhost", "127.0.0.1", "imageauto-webhook.imageauto.svc"] {
        let c = client(&ca, name, server.addr);
        let (status, text) = post(
            &c,
            &url(name, server.addr, "/validate/workloads"),
            body("deployment-ungoverned.json"),
        )
        .await;
        assert_eq!(status, 200, "{name}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["response"]["uid"], "d1a1");
        assert_eq!(answer["response"]["allowed"], false);
    }
    // A name the certificate does not cover fails verification.
    let c = client(&ca, "elsewhere.example", server.addr);
    let e = c
        .post(url("elsewhere.example", server.addr, "/validate/workloads"))
        .body(body("deployment-governed.json"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    // And a CA that is not ours too.
    let other = certs::generate(&[]).unwrap();
    let c = client(other.ca_pem.as_bytes(), "localhost", server.addr);
    assert!(
        c.post(url("localhost", server.addr, "/validate/workloads"))
            .send()
            .await
            .is_err()
    );
    assert_eq!(
        server.recorder.outcomes(),
        vec![(Rule::Workloads, Outcome::Deny); 3]
    );
    // Shutdown is prompt when idle.
    assert!(server.stop().await < Duration::from_secs(5));
}

#[tokio::test]
async fn certificate_rotation_takes_effect_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &[]).await;
    let old_ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();
    let probe = |ca: Vec<u8>| {
        let addr = server.addr;
        async move {
            // A new client per probe: a new connection, a new handshake.
            let c = client(&ca, "localhost", addr);
            c.post(url("localhost", addr, "/validate/workloads"))
                .body(body("deployment-governed.json"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(probe(old_ca.clone()).await.unwrap(), 200);

    // A rotation as a Secret update or cert-manager would do it: new files
    // from another CA (the certificate first, then its key).
    let new = certs::generate(&["localhost".into()]).unwrap();
    std::fs::write(tmp.path().join(CERT_FILE), &new.cert_pem).unwrap();
    // Two reads of the files after the write: the second began after it.
    let seen = server.certificates.reads() + 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.certificates.reads() < seen {
        assert!(Instant::now() < deadline, "the files were not read again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Half a rotation is not served: the old pair still answers.
    assert_eq!(probe(old_ca.clone()).await.unwrap(), 200);
    std::fs::write(tmp.path().join(KEY_FILE), &new.key_pem).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match probe(new.ca_pem.clone().into_bytes()).await {
            Ok(200) => break,
            other => {
                assert!(Instant::now() < deadline, "not rotated: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The old CA no longer verifies new handshakes.
    assert!(probe(old_ca).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_answers_and_the_server_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &[]).await;
    let ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();
    let c = client(&ca, "localhost", server.addr);
    let workloads = url("localhost", server.addr, "/validate/workloads");

    let (status, text) = post(&c, &workloads, b"{\"apiVersion\": ".to_vec()).await;
    assert_eq!(status, 400);
    assert!(text.contains("not JSON"), "{text}");

    let (status, text) = post(
        &c,
        &workloads,
        br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        text.contains("kind is \"Deployment\", expected AdmissionReview"),
        "{text}"
    );

    // 4 MiB: refused whole, and the same client goes on.
    let mut big =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","pad":""#.to_vec();
    big.resize(4 * 1024 * 1024, b'x');
    big.extend_from_slice(b"\"}");
    let (status, text) = post(&c, &workloads, big).await;
    assert_eq!(status, 413);
    assert!(text.contains("larger than 3145728 bytes"), "{text}");
    let (status, _) = post(&c, &workloads, body("deployment-governed.json")).await;
    assert_eq!(status, 200);

    // Unknown path and method.
    let r = c
        .get(url("localhost", server.addr, "/validate/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c.get(&workloads).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);

    assert_eq!(
        server.recorder.outcomes(),
        vec![
            (Rule::Workloads, Outcome::Error),
            (Rule::Workloads, Outcome::Error),
            (Rule::Workloads, Outcome::Error),
            (Rule::Workloads, Outcome::Admit),
        ]
    );
    server.stop().await;
}

/// A raw TLS connection, with or without SNI.
async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &[u8],
    sni: bool,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.enable_sni = sni;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("a handshake")
}

/// Reads until the server closes the connection, which must happen within
/// `limit`.
async fn read_to_end_within<R: AsyncReadExt + Unpin>(r: &mut R, limit: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, r.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after {limit:?}; read so far: {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn handshake_without_sni_gets_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &[]).await;
    let ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();
    for sni in [false, true] {
        let mut tls = tls_connect(server.addr, &ca, sni).await;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_end_within(&mut tls, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "sni={sni}: {answer}");
    }
    // Connecting by IP (reqwest sends no SNI for an IP address).
    let c = client(&ca, "127.0.0.1", server.addr);
    let (status, _) = post(
        &c,
        &format!(
            "https://127.0.0.1:{}/validate/image-kinds",
            server.addr.port()
        ),
        body("imagepolicy-good.json"),
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_to_use_https() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &[]).await;
    let ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(
            b"POST /validate/workloads HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        let answer = read_to_end_within(&mut tcp, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("HTTPS only"), "{answer}");
    }
    // Garbage that is not HTTP either, then a hang-up.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&[0u8, 1, 2, 3]).await.unwrap();
    drop(tcp);
    let c = client(&ca, "localhost", server.addr);
    let (status, _) = post(
        &c,
        &url("localhost", server.addr, "/validate/workloads"),
        body("deployment-governed.json"),
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn slow_clients_do_not_hold_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    // Timeouts longer than the time the others are given to be served, so
    // that they are served while the slow ones still hold their connections.
    let timeout = Duration::from_secs(3);
    let limits = Limits {
        handshake_timeout: timeout,
        header_read_timeout: timeout,
        body_read_timeout: timeout,
        ..test_limits()
    };
    let server = start_with(tmp.path(), &[], limits).await;
    let ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();

    // A TCP client that never says hello.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Half a request head, then nothing.
    let mut half_head = tls_connect(server.addr, &ca, true).await;
    half_head
        .write_all(b"POST /validate/workloads HTTP/1.1\r\nHost: localhost\r\nContent-Le")
        .await
        .unwrap();
    half_head.flush().await.unwrap();
    // A whole head, then a tenth of the body.
    let mut half_body = tls_connect(server.addr, &ca, true).await;
    half_body
        .write_all(b"POST /validate/workloads HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"apiVersio")
        .await
        .unwrap();
    half_body.flush().await.unwrap();

    // Others are served meanwhile, promptly.
    let c = client(&ca, "localhost", server.addr);
    let start = Instant::now();
    for _ in 0..5 {
        let (status, _) = post(
            &c,
            &url("localhost", server.addr, "/validate/workloads"),
            body("deployment-governed.json"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let served = start.elapsed();
    assert!(served < timeout / 2, "{served:?}");

    // And the slow ones are let go after their timeouts.
    let answer = read_to_end_within(&mut half_body, 3 * timeout).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let answer = read_to_end_within(&mut half_head, 3 * timeout).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(3 * timeout, silent.read(&mut buf))
        .await
        .expect("the silent connection is closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let all = start.elapsed();
    assert!(
        all >= timeout - Duration::from_millis(200) && all < 3 * timeout,
        "{all:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &[]).await;
    let addr = server.addr;
    server.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_folder_with_half_a_pair_is_an_error_at_bind() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(CERT_FILE), "x").unwrap();
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path());
    let e = Server::bind(
        config,
        Arc::new(view(vec![])),
        Arc::new(webhook::NoopObserver),
    )
    .await
    .err()
    .expect("an error")
    .to_string();
    assert!(e.contains("holds tls.crt but not tls.key"), "{e}");
}

/// A TCP connection to `addr` from the loopback address `from` (any of
/// 127.0.0.0/8 reaches a server on 127.0.0.1): another peer.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A TLS client over `tcp`.
async fn tls_over(tcp: TcpStream, ca_pem: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("a handshake")
}

/// One review on a kept-alive connection: the status, or `None` when the
/// connection is closed.
async fn review<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: &mut S) -> Option<u16> {
    let body = body("deployment-governed.json");
    let head = format!(
        "POST /validate/workloads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(&body).await.ok()?;
    s.flush().await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer or a close within 10 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if rest.len() >= len {
                return head.split_whitespace().nth(1)?.parse().ok();
            }
        }
    }
}

/// Whether the server closed `s`: a read that ends (EOF or reset) within
/// `wait`. A connection that stays open makes the read wait.
async fn closed<S: AsyncReadExt + Unpin>(s: &mut S, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Limits whose timeouts never fire during a test: only the caps act.
fn caps(max: usize, per_peer: usize) -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        body_read_timeout: Duration::from_secs(60),
        max_connections: max,
        max_connections_per_peer: per_peer,
        ..test_limits()
    }
}

#[tokio::test]
async fn a_full_table_takes_a_prompt_client_in_place_of_silent_ones_from_its_own_address() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_with(tmp.path(), &[], caps(16, 16)).await;
    let ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();
    // The table full of connections that say nothing, from the address the
    // client uses too; with the old accept loop the client waited behind
    // them until their handshake timeout.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut handshaken = Vec::new();
    for _ in 0..8 {
        handshaken.push(tls_over(TcpStream::connect(server.addr).await.unwrap(), &ca).await);
    }
    let c = client(&ca, "localhost", server.addr);
    for _ in 0..3 {
        let (status, _) = post(
            &c,
            &url("localhost", server.addr, "/validate/workloads"),
            body("deployment-governed.json"),
        )
        .await;
        assert_eq!(status, 200);
    }
    // The oldest silent connection gave way to it; the client's one
    // connection (kept alive) made room once.
    assert!(closed(&mut silent[0], Duration::from_secs(5)).await);
    let mut open = 0;
    for s in silent.iter_mut().skip(1) {
        if !closed(s, Duration::from_millis(100)).await {
            open += 1;
        }
    }
    for s in handshaken.iter_mut() {
        if !closed(s, Duration::from_millis(100)).await {
            open += 1;
        }
    }
    assert_eq!(open, 15, "the others stay while there is room");
    server.stop().await;
}

#[tokio::test]
async fn a_flood_from_another_address_gives_way_among_itself_and_spares_a_kept_alive_client() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_with(tmp.path(), &[], caps(16, 4)).await;
    let ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();
    // The apiserver's connection, kept alive between reviews.
    let mut api = tls_over(TcpStream::connect(server.addr).await.unwrap(), &ca).await;
    assert_eq!(review(&mut api).await, Some(200));
    // A hundred silent connections and twenty slow heads from 127.0.0.2.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(connect_from("127.0.0.2", server.addr).await);
    }
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tls_over(connect_from("127.0.0.2", server.addr).await, &ca).await;
        s.write_all(b"POST /validate/workloads HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        s.flush().await.unwrap();
        slow.push(s);
    }
    // The kept-alive connection is still there and answers.
    assert_eq!(review(&mut api).await, Some(200));
    // A new client from a third address gets in at once.
    let mut other = tls_over(connect_from("127.0.0.3", server.addr).await, &ca).await;
    assert_eq!(review(&mut other).await, Some(200));
    // Of the flood, at most its cap is still open: the last slow heads
    // (which had sent something), the silent ones all gone.
    let mut open = 0;
    for s in flood.iter_mut() {
        if !closed(s, Duration::from_millis(50)).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "silent connections of the flood still open");
    let mut open = 0;
    for s in slow.iter_mut() {
        if !closed(s, Duration::from_millis(50)).await {
            open += 1;
        }
    }
    assert!(
        open <= 4,
        "{open} slow heads of one address open; its cap is 4"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_closes_at_the_idle_timeout_and_a_later_head_has_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        idle_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_secs(30),
        ..caps(16, 16)
    };
    let server = start_with(tmp.path(), &[], limits).await;
    let ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();
    let mut tls = tls_over(TcpStream::connect(server.addr).await.unwrap(), &ca).await;
    assert_eq!(review(&mut tls).await, Some(200));
    // Idle: closed long before the header timeout.
    assert!(closed(&mut tls, Duration::from_secs(10)).await);
    // A head under way is not idle: it has the header timeout.
    let mut tls = tls_over(TcpStream::connect(server.addr).await.unwrap(), &ca).await;
    assert_eq!(review(&mut tls).await, Some(200));
    tls.write_all(b"POST /validate/workloads HTTP/1.1\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert!(!closed(&mut tls, Duration::from_secs(2)).await);
    server.stop().await;
}

#[tokio::test]
async fn the_port_is_free_once_shutdown_began_though_a_request_is_still_under_way() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_with(tmp.path(), &[], caps(16, 16)).await;
    let ca = std::fs::read(tmp.path().join(CA_FILE)).unwrap();
    let addr = server.addr;
    // A request whose body is half sent: the server waits for the rest.
    let mut tls = tls_over(TcpStream::connect(addr).await.unwrap(), &ca).await;
    let body = body("deployment-governed.json");
    let head = format!(
        "POST /validate/workloads HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..10]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut server = server;
    drop(server.stop.take());
    let task = server.task.take().unwrap();
    // A new server binds the same port while the old one still serves that
    // request.
    let tmp2 = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(addr, tmp2.path());
    config.limits = caps(16, 16);
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        match Server::bind(
            config.clone(),
            Arc::new(view(vec![])),
            Arc::new(webhook::NoopObserver),
        )
        .await
        {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(second.local_addr(), addr);
    // The old one answers the request it had.
    tls.write_all(&body[10..]).await.unwrap();
    tls.flush().await.unwrap();
    let answer = read_to_end_within(&mut tls, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the old server stops")
        .unwrap();
}
