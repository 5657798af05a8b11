//! A TCP proxy on 127.0.0.1 that can cut the line, as a network partition
//! does: [`Proxy::cut`] stops copying bytes in both directions on the
//! connections under way (they stall, they are not closed), and accepts new
//! connections without connecting them onwards; [`Proxy::heal`] lets the
//! bytes flow again (held connections are then connected to the target).
//! Plain threads: no async runtime needed. Stops when dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the threads look at the cut and stop flags.
const TICK: Duration = Duration::from_millis(10);

struct Flags {
    cut: AtomicBool,
    stop: AtomicBool,
    /// Connections accepted so far.
    accepted: AtomicU64,
}

impl Flags {
    /// Waits while the line is cut; false when the proxy stops meanwhile.
    fn wait_healed(&self) -> bool {
        while self.cut.load(Ordering::SeqCst) {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(TICK);
        }
        !self.stop.load(Ordering::SeqCst)
    }
}

pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    target: SocketAddr,
    flags: Arc<Flags>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("bound").port();
        let flags = Arc::new(Flags {
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
        });
        let f = flags.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, target, f));
        Proxy {
            port,
            target,
            flags,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Stops forwarding: no byte is copied any more, in either direction,
    /// and new connections are held unconnected.
    pub fn cut(&self) {
        self.flags.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.flags.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.flags.cut.load(Ordering::SeqCst)
    }

    /// The connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.flags.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.flags.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, flags: Arc<Flags>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !flags.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                flags.accepted.fetch_add(1, Ordering::SeqCst);
                let f = flags.clone();
                connections.push(std::thread::spawn(move || connect(client, target, f)));
                connections.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
    for h in connections {
        let _ = h.join();
    }
}

/// Connects `client` to the target once the line is up, then copies both
/// ways until either side closes or the proxy stops.
fn connect(client: TcpStream, target: SocketAddr, flags: Arc<Flags>) {
    let _ = client.set_nonblocking(false);
    if !flags.wait_healed() {
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let f = flags.clone();
    let up = std::thread::spawn(move || pump(client, server, f));
    pump(server2, client2, flags);
    let _ = up.join();
}

/// Copies `from` to `to` while the line is up; holds the bytes read while
/// it is cut until it heals.
fn pump(mut from: TcpStream, mut to: TcpStream, flags: Arc<Flags>) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !flags.wait_healed() {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // Cut between the read and the write: these bytes wait too.
        if !flags.wait_healed() || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
