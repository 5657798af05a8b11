//! One accept loop for every listener of `serve`: the admission webhook
//! (TLS), the receiver, /healthz and /metrics (plain HTTP). axum routes,
//! HTTP/1.1 through hyper, each connection under [`Limits`].
//!
//! ```text
//! let listener = listen::bind(addr)?;                     // SO_REUSEADDR
//! listen::serve("receiver", listener, None, router, limits, shutdown).await;
//! ```
//!
//! The loop is written here rather than taken from hyper-util or
//! axum-server because neither can do what it is for: choose, when the
//! table of connections is full, which connection gives way to a new one.
//! Their servers accept until a cap and then leave newcomers in the listen
//! backlog, which is how 400 idle connections switched admission off.
//!
//! Each connection is in one phase, which bounds its time there:
//!
//! | phase | until | limit |
//! | --- | --- | --- |
//! | handshake (TLS) | the handshake is done | [`Limits::handshake_timeout`] from the accept |
//! | waiting, first request | its head is read | [`Limits::header_read_timeout`] from the handshake (or the accept) |
//! | waiting, kept alive | the next request's first byte | [`Limits::idle_timeout`] from the last answer |
//! | head, kept alive | the head is read | [`Limits::header_read_timeout`] from its first byte |
//! | body | the body is read | [`Limits::body_read_timeout`] (the handler answers 408 through [`read_body`]) |
//! | answering | the answer is written | none: the handler's own time |
//!
//! and a connection lives at most [`Limits::max_connection_age`].
//!
//! Connections are counted per peer (an IPv4 address; an IPv6 /64, the
//! block one host usually has) and in all. When a new connection would
//! pass [`Limits::max_connections_per_peer`] for its peer, one of that
//! peer's own connections gives way; when it would pass
//! [`Limits::max_connections`], one of anybody's. The one that gives way
//! is the first of, oldest first in each:
//!
//! 1. connections that have sent nothing yet (no TLS hello; after the
//!    handshake, no byte of a first request);
//! 2. connections that have not finished their first request head (a TLS
//!    handshake or a head under way);
//! 3. kept-alive connections between requests (or in a later head);
//! 4. connections sending a request body.
//!
//! A connection that gives way closes as soon as its task next runs; until
//! it has, its socket is still open, so the loop accepts nothing while
//! more than [`Limits::max_connections`] and [`SOCKETS_OVER_CAP`] sockets
//! are open: a flood never holds more descriptors than that.
//!
//! A connection whose request is being answered never gives way. When
//! nothing can give way, a newcomer over its peer's cap is closed at once,
//! and one over the total waits (and the next ones in the listen backlog)
//! until a connection ends (within the body timeout and the handlers'
//! time).
//!
//! What this guarantees to a client such as the apiserver, which completes
//! its handshake and sends its request as soon as it is connected:
//!
//! - From another address than the attacker's, a new connection of the
//!   client always gets a slot, unless every connection of the listener is
//!   being answered at that moment: the attacker's address holds at most
//!   `max_connections_per_peer` connections, at that cap each new one of
//!   the attacker replaces one of the attacker's own, and at the total cap
//!   a newcomer replaces the connection that has waited longest in the
//!   lowest class. The client's connection is replaced only once it is the
//!   oldest of the lowest class left: while its handshake and request head
//!   are under way (milliseconds), every silent connection and every older
//!   slow head goes before it. Its idle kept-alive connections may be
//!   replaced; clients meet that by connecting again.
//! - From the attacker's address (a shared NAT, a node's address, the
//!   loopback in the tests), the same holds within that address's
//!   `max_connections_per_peer`: the silent and the slow connections are
//!   replaced first, oldest first, and all of them end within the timeouts
//!   above. Only an attacker that opens, from that address, more new
//!   connections than the cap during the client's handshake and head can
//!   still make the client's call fail: nothing tells the two apart then.
//!
//! Bodies are read by the handlers through [`read_body`], which caps them
//! ([`Limits::max_body`]) and reads on and drops a too-large body up to
//! [`Limits::max_drain`], so that its 413 reaches a client that is still
//! sending.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The apiserver sends at most 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Connections the kernel keeps for the accept loop.
const BACKLOG: u32 = 1024;

/// Longest time a closing connection is read on, so that a client still
/// sending a body that was not read gets the answer rather than a reset.
const LINGER: Duration = Duration::from_secs(2);

/// Bounds on what one client may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body [`read_body`] takes; larger ones get 413.
    pub max_body: usize,
    /// How much of a too-large body is read and dropped before answering 413
    /// on the same connection; past it the connection is closed after the
    /// answer.
    pub max_drain: usize,
    /// From TCP accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// For a request head: the first one counted from the end of the
    /// handshake (from the accept without TLS), the later ones from their
    /// first byte.
    pub header_read_timeout: Duration,
    /// Longest wait for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// For a whole request body.
    pub body_read_timeout: Duration,
    /// Connections served at once. Each may buffer one body of up to
    /// `max_body`, so this also bounds the memory bodies take (and the
    /// file descriptors the listener holds).
    pub max_connections: usize,
    /// Connections one peer (an IPv4 address, an IPv6 /64) holds at once;
    /// at this count a new one takes the place of one of the peer's own.
    pub max_connections_per_peer: usize,
    /// After this, a connection is closed once its current request is
    /// answered (clients reconnect).
    pub max_connection_age: Duration,
    /// Time given to open connections to finish at shutdown and at
    /// `max_connection_age`.
    pub grace: Duration,
    /// How often the webhook's certificate files are read for changes.
    pub reload_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: MAX_BODY,
            max_drain: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(3),
            header_read_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_peer: 64,
            max_connection_age: Duration::from_secs(600),
            grace: Duration::from_secs(10),
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// Binds `addr` for listening, with `SO_REUSEADDR` (as tokio's own bind
/// sets it, said here on purpose): a new process binds the port while
/// connections the previous one accepted on it are still open or in
/// TIME_WAIT. Only a socket still listening on it refuses the bind, so a
/// process that is shutting down closes its listeners first. Call it in a
/// tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Why [`read_body`] gave no body.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than [`Limits::max_body`]; `drained` when it was read to its
    /// end (the connection can go on), else the answer must close it.
    TooLarge { drained: bool },
    /// Not all there within [`Limits::body_read_timeout`].
    Timeout,
    /// The connection failed while reading it.
    Read(String),
}

/// The `Content-Length` a request declares, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a request body within the limits. A too-large body is read on and
/// dropped up to `max_drain`, so that the answer reaches a client that is
/// still sending; one declared larger than that is not read at all.
pub async fn read_body(
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

/// Serves `router` on `listener` until `shutdown` resolves (over TLS with
/// `tls`), then stops accepting at once, closes the listener, lets open
/// requests finish within [`Limits::grace`], and returns. `name` goes in
/// the logs.
/// How many sockets of connections told to give way may still be open
/// beyond [`Limits::max_connections`] before the loop waits for them to
/// close.
pub const SOCKETS_OVER_CAP: usize = 16;

pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let table = Arc::new(Table::new(&limits));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    'accept: loop {
        // Connections that gave way close when their tasks next run; under
        // a flood the loop waits for them rather than outrun them.
        while table.open() >= table.max + SOCKETS_OVER_CAP {
            tokio::select! {
                _ = &mut shutdown => break 'accept,
                _ = table.freed.notified() => {}
            }
        }
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let first = if tls.is_some() {
            Phase::Handshake { spoke: false }
        } else {
            Phase::Waiting
        };
        let slot = loop {
            match table.admit(PeerKey::of(peer.ip()), first) {
                Admission::In(slot) => break slot,
                Admission::Refused => {
                    tracing::debug!(listener = name, %peer, "connection refused: every connection of its peer is being answered");
                    continue 'accept;
                }
                Admission::Full => tokio::select! {
                    _ = &mut shutdown => break 'accept,
                    _ = table.freed.notified() => {}
                },
            }
        };
        let conn = Connection {
            name,
            peer,
            slot: Admitted {
                table: table.clone(),
                slot,
            },
            router: router.clone(),
            limits,
            stop: stop_rx.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => conn.tls(tcp, acceptor).await,
                None => {
                    let _ = tcp.set_nodelay(true);
                    let io = Tracked::new(tcp, conn.slot.slot.clone());
                    conn.http(io).await
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(limits.grace, table.drained()).await;
}

/// Where a connection is; see the module's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The TLS handshake; `spoke` once the client sent something.
    Handshake { spoke: bool },
    /// No byte of the next request yet.
    Waiting,
    /// A request head arriving.
    Head,
    /// The handler was called; the body is being read.
    Body,
    /// The body is read (or there is none); the answer is being made and
    /// written.
    Answering,
}

#[derive(Clone, Copy, Debug)]
struct State {
    phase: Phase,
    /// When the phase's time started.
    since: Instant,
    /// A request was answered on this connection.
    served: bool,
    /// An answer went out before its request's body was read to its end.
    unread: bool,
}

/// One connection in the table.
struct Slot {
    id: u64,
    peer: PeerKey,
    state: Mutex<State>,
    /// The deadline may have moved earlier.
    changed: Notify,
    evicted: AtomicBool,
    evict: Notify,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot(&self) -> State {
        *self.state()
    }

    /// Moves to `phase` now. The first request's head keeps the time of
    /// the wait before it: its limit covers both.
    fn enter(&self, phase: Phase) {
        let mut s = self.state();
        if s.phase == phase {
            return;
        }
        let keep = phase == Phase::Head && s.phase == Phase::Waiting && !s.served;
        s.phase = phase;
        if !keep {
            s.since = Instant::now();
        }
        drop(s);
        self.changed.notify_one();
    }

    /// Bytes arrived from the client.
    fn heard(&self) {
        let phase = self.state().phase;
        match phase {
            Phase::Handshake { spoke: false } => {
                self.state().phase = Phase::Handshake { spoke: true };
            }
            Phase::Waiting => self.enter(Phase::Head),
            _ => {}
        }
    }

    /// The request body was read to its end.
    fn body_done(&self) {
        if self.state().phase == Phase::Body {
            self.enter(Phase::Answering);
        }
    }

    /// The answer was written: wait for the next request.
    fn answered(&self) {
        let mut s = self.state();
        s.served = true;
        s.unread |= s.phase == Phase::Body;
        s.phase = Phase::Waiting;
        s.since = Instant::now();
        drop(s);
        self.changed.notify_one();
    }

    /// When the current phase's time is up (none while answering).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let s = self.snapshot();
        let limit = match s.phase {
            Phase::Handshake { .. } => limits.handshake_timeout,
            Phase::Waiting if s.served => limits.idle_timeout,
            Phase::Waiting | Phase::Head => limits.header_read_timeout,
            // The handler answers 408 at the body timeout; this closes a
            // connection whose handler does not read through read_body.
            Phase::Body => limits.body_read_timeout + Duration::from_secs(1),
            Phase::Answering => return None,
        };
        Some(s.since + limit)
    }

    /// Its class for giving way (lower first) and since when, or none
    /// while its request is being answered.
    fn victim_rank(&self) -> Option<(u8, Instant)> {
        let s = self.snapshot();
        let class = match s.phase {
            Phase::Handshake { spoke: false } => 0,
            Phase::Waiting if !s.served => 0,
            Phase::Handshake { spoke: true } => 1,
            Phase::Head if !s.served => 1,
            Phase::Waiting | Phase::Head => 2,
            Phase::Body => 3,
            Phase::Answering => return None,
        };
        Some((class, s.since))
    }

    fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Resolves once the connection was told to give way.
    async fn evicted(&self) {
        while !self.is_evicted() {
            self.evict.notified().await;
        }
    }
}

/// A peer, for its connection count: an IPv4 address (also one mapped in
/// IPv6), or the /64 of an IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PeerKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl PeerKey {
    fn of(ip: IpAddr) -> PeerKey {
        match ip {
            IpAddr::V4(a) => PeerKey::V4(a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(v4.octets()),
                None => {
                    let o = a.octets();
                    PeerKey::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

enum Admission {
    In(Arc<Slot>),
    /// Every connection of the peer is being answered.
    Refused,
    /// Every connection is being answered.
    Full,
}

#[derive(Default)]
struct Inner {
    next: u64,
    total: usize,
    /// Admitted connections whose tasks have not ended, including those
    /// told to give way (their sockets are still open).
    open: usize,
    peers: HashMap<PeerKey, Vec<Arc<Slot>>>,
}

impl Inner {
    fn remove(&mut self, slot: &Slot) -> bool {
        let Some(list) = self.peers.get_mut(&slot.peer) else {
            return false;
        };
        let Some(i) = list.iter().position(|s| s.id == slot.id) else {
            return false;
        };
        list.swap_remove(i);
        if list.is_empty() {
            self.peers.remove(&slot.peer);
        }
        self.total -= 1;
        true
    }
}

/// The connections of one listener.
struct Table {
    max: usize,
    per_peer: usize,
    inner: Mutex<Inner>,
    /// A connection ended.
    freed: Notify,
}

/// The connection that gives way among `slots`, if any may.
fn victim<'a>(slots: impl Iterator<Item = &'a Arc<Slot>>) -> Option<Arc<Slot>> {
    slots
        .filter_map(|s| s.victim_rank().map(|r| (r, s)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, s)| s.clone())
}

impl Table {
    fn new(limits: &Limits) -> Table {
        let max = limits.max_connections.max(1);
        Table {
            max,
            per_peer: limits.max_connections_per_peer.clamp(1, max),
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new connection of `peer`, making another
    /// connection give way when a cap is reached.
    fn admit(&self, peer: PeerKey, phase: Phase) -> Admission {
        let mut t = self.inner();
        let mine = t.peers.get(&peer).map_or(0, Vec::len);
        let out = if mine >= self.per_peer {
            match t.peers.get(&peer).and_then(|l| victim(l.iter())) {
                Some(v) => Some(v),
                None => return Admission::Refused,
            }
        } else if t.total >= self.max {
            match victim(t.peers.values().flatten()) {
                Some(v) => Some(v),
                None => return Admission::Full,
            }
        } else {
            None
        };
        if let Some(v) = out {
            t.remove(&v);
            v.evicted.store(true, Ordering::Release);
            v.evict.notify_one();
        }
        t.next += 1;
        let slot = Arc::new(Slot {
            id: t.next,
            peer,
            state: Mutex::new(State {
                phase,
                since: Instant::now(),
                served: false,
                unread: false,
            }),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        t.peers.entry(peer).or_default().push(slot.clone());
        t.total += 1;
        t.open += 1;
        Admission::In(slot)
    }

    /// The connection's task ended: its socket is closed.
    fn release(&self, slot: &Slot) {
        {
            let mut t = self.inner();
            t.remove(slot);
            t.open = t.open.saturating_sub(1);
        }
        self.freed.notify_one();
    }

    fn open(&self) -> usize {
        self.inner().open
    }

    /// Resolves once no connection is left.
    async fn drained(&self) {
        while self.inner().open > 0 {
            self.freed.notified().await;
        }
    }
}

/// A connection's place in its table, given back when dropped.
struct Admitted {
    table: Arc<Table>,
    slot: Arc<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.release(&self.slot);
    }
}

/// The TCP stream, telling its slot when bytes arrive.
struct Tracked {
    io: TcpStream,
    slot: Arc<Slot>,
}

impl Tracked {
    fn new(io: TcpStream, slot: Arc<Slot>) -> Tracked {
        Tracked { io, slot }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.heard();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body that tells the slot when it was read to its end.
struct RequestBody {
    inner: Incoming,
    slot: Option<Arc<Slot>>,
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None | Some(Err(_))))
            && let Some(slot) = self.slot.take()
        {
            slot.body_done();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells the slot when it was written (or dropped).
struct ResponseBody {
    inner: Body,
    slot: Option<Arc<Slot>>,
}

impl ResponseBody {
    fn done(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.answered();
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            self.done();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 53\r\n\r\nthis port speaks HTTPS only: use https:// to call it\n";

/// One accepted connection.
struct Connection {
    name: &'static str,
    peer: SocketAddr,
    slot: Admitted,
    router: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
}

impl Connection {
    fn slot(&self) -> &Arc<Slot> {
        &self.slot.slot
    }

    async fn tls(self, tcp: TcpStream, acceptor: TlsAcceptor) {
        let _ = tcp.set_nodelay(true);
        let deadline = Instant::now() + self.limits.handshake_timeout;
        let slot = self.slot().clone();
        let handshake = async {
            // A TLS connection starts with a handshake record (0x16);
            // anything else is most likely plain HTTP sent to the TLS port.
            let mut first = [0u8; 1];
            match tcp.peek(&mut first).await {
                Ok(1) => slot.heard(),
                _ => return None,
            }
            if first[0] != 0x16 {
                plain_http(tcp).await;
                return None;
            }
            match acceptor.accept(Tracked::new(tcp, slot.clone())).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(listener = self.name, peer = %self.peer, error = %e, "TLS handshake failed");
                    None
                }
            }
        };
        let tls = tokio::select! {
            r = tokio::time::timeout_at(deadline, handshake) => match r {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(_) => {
                    tracing::debug!(listener = self.name, peer = %self.peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = slot.evicted() => {
                tracing::debug!(listener = self.name, peer = %self.peer, "connection gave way to a newer one during its handshake");
                return;
            }
        };
        slot.enter(Phase::Waiting);
        self.http(tls).await
    }

    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            name,
            peer,
            slot: admitted,
            router,
            limits,
            mut stop,
        } = self;
        let slot = admitted.slot.clone();
        let service = {
            let slot = slot.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let (slot, router) = (slot.clone(), router.clone());
                Box::pin(async move {
                    slot.enter(if req.body().is_end_stream() {
                        Phase::Answering
                    } else {
                        Phase::Body
                    });
                    let req = req.map(|inner| RequestBody {
                        inner,
                        slot: Some(slot.clone()),
                    });
                    let response: Response<Body> = match router.oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    Ok::<_, Infallible>(response.map(|inner| ResponseBody {
                        inner,
                        slot: Some(slot),
                    }))
                })
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The phases above bound the head, with the idle time apart.
            .header_read_timeout(None)
            .keep_alive(true);
        let mut conn = builder.serve_connection(TokioIo::new(io), service);
        let age = tokio::time::sleep(limits.max_connection_age);
        tokio::pin!(age);
        let ended = loop {
            let deadline = slot.deadline(&limits);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break Some(r),
                _ = timer => {
                    if slot.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!(listener = name, %peer, phase = ?slot.snapshot().phase, "connection timed out");
                        return;
                    }
                }
                _ = slot.changed.notified() => {}
                _ = slot.evicted() => {
                    tracing::debug!(listener = name, %peer, "connection gave way to a newer one");
                    return;
                }
                _ = &mut age => break None,
                _ = stop.wait_for(|s| *s) => break None,
            }
        };
        let ended = match ended {
            Some(r) => r,
            None => {
                Pin::new(&mut conn).graceful_shutdown();
                tokio::select! {
                    r = tokio::time::timeout(
                        limits.grace,
                        std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)),
                    ) => match r {
                        Ok(r) => r,
                        Err(_) => return,
                    },
                    _ = slot.evicted() => return,
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(listener = name, %peer, error = %e, "connection ended");
            return;
        }
        let unread = slot.snapshot().unread;
        let mut io = conn.into_parts().io.into_inner();
        let close = async {
            let _ = io.shutdown().await;
            if unread {
                // The client may still be sending the body that was not
                // read: closing now would reset the connection and could
                // take the answer with it. Read and drop until it stops.
                let mut buf = vec![0u8; 16 * 1024];
                while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(LINGER, close) => {}
            _ = slot.evicted() => {}
        }
        drop(admitted);
    }
}

/// Answers plain HTTP with a 400 that says to use HTTPS, after reading what
/// the client sent (so that closing does not reset the connection before
/// the answer is read).
async fn plain_http(mut tcp: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
    let _ = async {
        tcp.write_all(PLAIN_HTTP_ANSWER).await?;
        tcp.shutdown().await
    }
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

    #[test]
    fn peers_are_addresses_and_ipv6_blocks() {
        let k = |s: &str| PeerKey::of(s.parse().unwrap());
        assert_eq!(k("10.0.0.1"), k("::ffff:10.0.0.1"));
        assert_ne!(k("10.0.0.1"), k("10.0.0.2"));
        assert_eq!(k("2001:db8:0:1::1"), k("2001:db8:0:1:ffff::2"));
        assert_ne!(k("2001:db8:0:1::1"), k("2001:db8:0:2::1"));
    }

    fn table(max: usize, per_peer: usize) -> Table {
        Table::new(&Limits {
            max_connections: max,
            max_connections_per_peer: per_peer,
            ..Limits::default()
        })
    }

    /// Lets the clock move on, so that connections admitted one after the
    /// other have different ages.
    fn tick() {
        std::thread::sleep(Duration::from_millis(2));
    }

    fn admit(t: &Table, peer: &str, phase: Phase) -> Arc<Slot> {
        match t.admit(PeerKey::of(peer.parse().unwrap()), phase) {
            Admission::In(s) => s,
            Admission::Refused => panic!("refused"),
            Admission::Full => panic!("full"),
        }
    }

    #[test]
    fn a_peer_at_its_cap_gives_way_itself_silent_first_then_slow_then_idle() {
        let t = table(10, 3);
        let slow = admit(&t, "10.0.0.1", Phase::Waiting);
        slow.heard();
        tick();
        let idle = admit(&t, "10.0.0.1", Phase::Waiting);
        idle.enter(Phase::Body);
        idle.answered();
        tick();
        let silent = admit(&t, "10.0.0.1", Phase::Waiting);
        let other = admit(&t, "10.0.0.2", Phase::Waiting);
        // The youngest, but silent: it goes first.
        let _a = admit(&t, "10.0.0.1", Phase::Waiting);
        assert!(silent.is_evicted());
        assert!(!slow.is_evicted() && !idle.is_evicted() && !other.is_evicted());
        // Then the newest silent one (the only one left), then the slow head.
        let _b = admit(&t, "10.0.0.1", Phase::Handshake { spoke: true });
        assert!(_a.is_evicted());
        let _c = admit(&t, "10.0.0.1", Phase::Handshake { spoke: true });
        assert!(slow.is_evicted() && !idle.is_evicted());
        assert!(!other.is_evicted());
        assert_eq!(t.inner().total, 4);
    }

    #[test]
    fn answering_never_gives_way_and_a_full_peer_is_refused() {
        let t = table(10, 2);
        let a = admit(&t, "10.0.0.1", Phase::Waiting);
        let b = admit(&t, "10.0.0.1", Phase::Waiting);
        a.enter(Phase::Answering);
        b.enter(Phase::Answering);
        assert!(matches!(
            t.admit(PeerKey::of("10.0.0.1".parse().unwrap()), Phase::Waiting),
            Admission::Refused
        ));
        // Another peer still gets in.
        let _c = admit(&t, "10.0.0.2", Phase::Waiting);
        // Once an answer is written, that connection may give way.
        b.answered();
        let _d = admit(&t, "10.0.0.1", Phase::Waiting);
        assert!(b.is_evicted() && !a.is_evicted());
    }

    #[test]
    fn at_the_total_cap_the_oldest_silent_connection_of_anyone_gives_way() {
        let t = table(4, 4);
        let api = admit(&t, "10.0.0.1", Phase::Waiting);
        api.enter(Phase::Answering);
        api.answered();
        let mut attacker = Vec::new();
        for _ in 0..3 {
            tick();
            attacker.push(admit(&t, "10.0.0.9", Phase::Handshake { spoke: false }));
        }
        let _fresh = admit(&t, "10.0.0.1", Phase::Handshake { spoke: true });
        assert!(attacker[0].is_evicted());
        assert!(!api.is_evicted());
        // Nothing left that may give way: the total is full.
        for s in attacker.iter().skip(1) {
            s.enter(Phase::Answering);
        }
        api.enter(Phase::Answering);
        _fresh.enter(Phase::Answering);
        assert!(matches!(
            t.admit(PeerKey::of("10.0.0.3".parse().unwrap()), Phase::Waiting),
            Admission::Full
        ));
        t.release(&attacker[1]);
        let _g = admit(&t, "10.0.0.3", Phase::Waiting);
    }

    #[test]
    fn connections_that_gave_way_count_as_open_until_their_tasks_end() {
        let t = table(2, 2);
        let first = admit(&t, "10.0.0.1", Phase::Waiting);
        let _second = admit(&t, "10.0.0.1", Phase::Waiting);
        let _third = admit(&t, "10.0.0.1", Phase::Waiting);
        assert!(first.is_evicted());
        let total = t.inner().total;
        assert_eq!((total, t.open()), (2, 3));
        // Its task ended: the socket is closed, the table's place was
        // already given.
        t.release(&first);
        let total = t.inner().total;
        assert_eq!((total, t.open()), (2, 2));
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let limits = Limits::default();
        let t = table(4, 4);
        let s = admit(&t, "10.0.0.1", Phase::Handshake { spoke: false });
        let since = || s.snapshot().since;
        assert_eq!(
            s.deadline(&limits),
            Some(since() + limits.handshake_timeout)
        );
        tick();
        s.enter(Phase::Waiting);
        let t1 = since();
        assert_eq!(s.deadline(&limits), Some(t1 + limits.header_read_timeout));
        // The first head counts from the end of the handshake.
        tick();
        s.heard();
        assert_eq!(s.snapshot().phase, Phase::Head);
        assert_eq!(s.deadline(&limits), Some(t1 + limits.header_read_timeout));
        s.enter(Phase::Answering);
        assert_eq!(s.deadline(&limits), None);
        s.answered();
        let t2 = since();
        assert!(t2 > t1);
        assert_eq!(s.deadline(&limits), Some(t2 + limits.idle_timeout));
        // A later head counts from its first byte.
        tick();
        s.heard();
        let t3 = since();
        assert!(t3 > t2);
        assert_eq!(s.deadline(&limits), Some(t3 + limits.header_read_timeout));
    }
}
