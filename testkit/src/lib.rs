//! Helpers for the integration tests: finding the real tools the tests run
//! against, and building the Go oracles. A missing tool is a test failure,
//! never a skip: `make test` installs them.
#![forbid(unsafe_code)]
// Test support: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub mod cloud;
pub mod forge;
pub mod git;
pub mod kube;
pub mod proxy;
pub mod registry;
pub mod serve;
pub mod signing;
pub mod slow;

/// A TCP port on 127.0.0.1 that nothing listens on (now).
///
/// Picked below the kernel's ephemeral range (32768 and up on Linux), where
/// outgoing connections take their source ports: a port the kernel hands
/// out there can be taken by a connection between this call and the
/// server's bind ("Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (base.wrapping_add(n.wrapping_mul(13)) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Stops a server process when this test process ends in any way, also
/// when the server's owner is never dropped (a `static`) or the test
/// process is killed: a small `sh` holds the read end of a pipe whose write
/// end only this process holds; when it closes, the server gets SIGTERM,
/// then SIGKILL after 5 s. Dropping the sentinel first (the owner stopped
/// the server itself) ends the `sh` without a signal to anyone.
pub struct Sentinel {
    sh: std::process::Child,
    _lifeline: Option<std::process::ChildStdin>,
}

impl Sentinel {
    pub fn watch(pid: u32) -> Sentinel {
        let mut sh = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"read -r _; kill -TERM "$1" 2>/dev/null || exit 0; sleep 5; kill -KILL "$1" 2>/dev/null"#)
            .arg("sh")
            .arg(pid.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh starts");
        let lifeline = sh.stdin.take();
        Sentinel {
            sh,
            _lifeline: lifeline,
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.sh.kill();
        let _ = self.sh.wait();
    }
}

/// Starts a server process on a free port: `spawn(port)` starts it; when it
/// exits (the port was taken meanwhile, say), it is started again on another.
pub fn start_on_free_port(
    mut spawn: impl FnMut(u16) -> std::process::Child,
) -> (u16, std::process::Child) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut up = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Listening, and still ours a moment later.
                std::thread::sleep(Duration::from_millis(50));
                up = matches!(child.try_wait(), Ok(None));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if up {
            return (port, child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("the server did not start after 5 attempts");
}

/// Waits (up to 30 s) until something accepts connections on the port.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port} after 30 s");
}

/// Finds `tool` on PATH (or in the usual sbin folders) or panics with what to
/// install.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        PathBuf::from("/usr/sbin"),
        PathBuf::from("/sbin"),
        PathBuf::from("/usr/lib/git-core"),
    ];
    for dir in std::env::split_paths(&path).chain(extra) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{tool} is not installed: run `make test` (it installs it), or `apt-get install {package}`"
    );
}

/// The repository's root (the fixtures are under `tests/`).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the Go program in `tests/oracles/<name>` in GOPATH mode against
/// Debian's Go libraries (no network) and returns the binary.
pub fn go_oracle(name: &str, out_dir: &Path) -> PathBuf {
    let go = require_tool("go", "golang-go");
    let src = repo_dir().join("tests/oracles").join(name).join("main.go");
    let bin = out_dir.join(format!("{name}-oracle"));
    let status = Command::new(go)
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", out_dir.join("go-cache"))
        .env("GOFLAGS", "-mod=mod")
        .status()
        .expect("go build runs");
    assert!(status.success(), "building the {name} oracle failed");
    bin
}

/// A small deterministic random generator (splitmix64), so generated cases are
/// the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers
/// (or, with `reply`, writes those bytes and closes): for clients that must
/// not hang. Stops when dropped.
pub struct Stall {
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Stall {
    pub fn start(reply: Option<Vec<u8>>) -> Stall {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let handle = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        if let Some(r) = &reply {
                            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut buf = [0u8; 4096];
                            let _ = conn.read(&mut buf);
                            let _ = conn.write_all(r);
                        } else {
                            held.push(conn);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Stall {
            port,
            accepted,
            stop,
            handle: Some(handle),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Temporary files (`.imageauto-*`) left anywhere under `dir`.
pub fn leftover_temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with(".imageauto-") {
                out.push(p);
            }
        }
    }
    out
}
