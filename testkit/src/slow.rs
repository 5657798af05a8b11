//! Slow clients against a server on 127.0.0.1, for tests and benchmarks:
//! connections that say nothing (TCP, or TLS after its handshake) and
//! connections that send a request head a byte at a time and never finish
//! it. Each client connects again when the server closes it, at most
//! [`Plan::rounds`] times; all of them stop when the [`SlowClients`] is
//! stopped or dropped. They run on a runtime of their own (one thread).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What to open.
#[derive(Clone, Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    /// TLS with this CA (PEM) when given; plain TCP else.
    pub tls_ca: Option<Vec<u8>>,
    /// Connections that say nothing; with TLS, half of them after a
    /// handshake.
    pub idle: usize,
    /// Connections that send a request head, a byte every
    /// [`Plan::trickle`], without end (after a handshake with TLS).
    pub slow_headers: usize,
    /// The head they send.
    pub path: String,
    /// Connections each client opens at most, one after the other.
    pub rounds: usize,
    /// Wait before connecting again once the server closed the connection.
    pub pause: Duration,
    pub trickle: Duration,
}

impl Plan {
    pub fn new(
        addr: SocketAddr,
        tls_ca: Option<Vec<u8>>,
        idle: usize,
        slow_headers: usize,
    ) -> Plan {
        Plan {
            addr,
            tls_ca,
            idle,
            slow_headers,
            path: "/".into(),
            rounds: 1,
            pause: Duration::from_secs(1),
            trickle: Duration::from_millis(500),
        }
    }
}

/// What the clients saw so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections established (TCP).
    pub opened: u64,
    /// Of those, closed by the server (an end of stream, a reset, a failed
    /// handshake or write).
    pub closed_by_server: u64,
    /// Connections that could not be made.
    pub failed: u64,
    /// Open now.
    pub open: u64,
}

#[derive(Default)]
struct Stats {
    opened: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
    open: AtomicU64,
}

/// Running slow clients.
pub struct SlowClients {
    rt: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    stats: Arc<Stats>,
}

#[derive(Clone, Copy)]
enum ClientKind {
    Silent,
    SilentAfterHandshake,
    SlowHead,
}

impl SlowClients {
    /// Starts the clients; they connect at once.
    pub fn start(plan: Plan) -> SlowClients {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the slow clients");
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let connector = plan.tls_ca.as_deref().map(connector);
        let plan = Arc::new(plan);
        let mut kinds = Vec::new();
        for i in 0..plan.idle {
            kinds.push(if connector.is_some() && i % 2 == 1 {
                ClientKind::SilentAfterHandshake
            } else {
                ClientKind::Silent
            });
        }
        kinds.extend(std::iter::repeat_n(ClientKind::SlowHead, plan.slow_headers));
        for kind in kinds {
            let (plan, stats, connector, stopped) = (
                plan.clone(),
                stats.clone(),
                connector.clone(),
                stopped.clone(),
            );
            rt.spawn(client(kind, plan, stats, connector, stopped));
        }
        SlowClients {
            rt: Some(rt),
            stop,
            stats,
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            opened: self.stats.opened.load(Ordering::Relaxed),
            closed_by_server: self.stats.closed.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            open: self.stats.open.load(Ordering::Relaxed),
        }
    }

    /// Waits until `n` connections were tried (opened or failed); panics
    /// after `timeout`.
    pub fn wait_tried(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.counts().opened + self.counts().failed < n {
            assert!(
                Instant::now() < deadline,
                "only {:?} after {timeout:?}",
                self.counts()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every client (their connections close) and returns the counts.
    pub fn stop(mut self) -> Counts {
        self.shut();
        self.counts()
    }

    fn shut(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        self.shut();
    }
}

fn connector(ca_pem: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("a PEM certificate")).expect("a CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn client(
    kind: ClientKind,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    connector: Option<tokio_rustls::TlsConnector>,
    mut stopped: watch::Receiver<bool>,
) {
    for round in 0..plan.rounds {
        if *stopped.borrow() {
            return;
        }
        if round > 0 {
            tokio::select! {
                _ = tokio::time::sleep(plan.pause) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
        let tcp = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(plan.addr))
            .await
        {
            Ok(Ok(t)) => t,
            _ => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let by_server = match (&connector, kind) {
            (_, ClientKind::Silent) => hold(tcp, &mut stopped).await,
            (None, ClientKind::SilentAfterHandshake) => hold(tcp, &mut stopped).await,
            (None, ClientKind::SlowHead) => trickle(tcp, &plan, &mut stopped).await,
            (Some(c), kind) => {
                let name =
                    rustls_pki_types::ServerName::try_from("localhost").expect("a server name");
                match tokio::time::timeout(Duration::from_secs(10), c.connect(name, tcp)).await {
                    Ok(Ok(tls)) => match kind {
                        ClientKind::SlowHead => trickle(tls, &plan, &mut stopped).await,
                        _ => hold(tls, &mut stopped).await,
                    },
                    _ => true,
                }
            }
        };
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if by_server {
            stats.closed.fetch_add(1, Ordering::Relaxed);
        } else {
            return;
        }
    }
}

/// Says nothing until the server closes the connection (true) or the
/// clients stop (false).
async fn hold<S: AsyncRead + Unpin>(mut s: S, stopped: &mut watch::Receiver<bool>) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            _ = stopped.wait_for(|s| *s) => return false,
        }
    }
}

/// Sends a request head a byte at a time, without end.
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    plan: &Plan,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Slow: ",
        plan.path
    );
    let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
    let mut buf = [0u8; 1024];
    loop {
        let Some(b) = bytes.next() else {
            return false;
        };
        if s.write_all(&[b]).await.is_err() || s.flush().await.is_err() {
            return true;
        }
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return true,
                // An answer (408, 431...): the server ends it next.
                Ok(_) => {}
            },
            _ = tokio::time::sleep(plan.trickle) => {}
            _ = stopped.wait_for(|s| *s) => return false,
        }
    }
}

/// The soft limit on this process's open files (`/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Open file descriptors of a process.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
