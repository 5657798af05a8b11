//! `kubectl-imageauto serve` as a process beside a test cluster: its
//! listeners on port 0 (the addresses it bound are read from its log), a
//! storage folder, logs kept in a file for failures; stopped (SIGTERM,
//! then SIGKILL) when dropped.

use crate::Sentinel;
use crate::kube::Cluster;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Serve {
    pub metrics_port: u16,
    pub health_port: u16,
    pub storage: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// Stops the process if this value is never dropped (a `static`).
    sentinel: Option<Sentinel>,
    _dir: Option<tempfile::TempDir>,
}

impl Serve {
    /// Starts `bin serve` against `cluster` with `extra` flags, and waits
    /// until /readyz answers ok.
    pub fn start(bin: &str, cluster: &Cluster, extra: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        Self::start_with_storage(bin, cluster, extra, &storage, Some(dir))
    }

    /// [`Serve::start`] with a storage folder of the caller's (to restart
    /// on the same one).
    pub fn start_with_storage(
        bin: &str,
        cluster: &Cluster,
        extra: &[&str],
        storage: &Path,
        dir: Option<tempfile::TempDir>,
    ) -> Serve {
        let s = Self::launch(
            bin,
            cluster,
            &Launch {
                extra,
                storage,
                ..Launch::default()
            },
            dir,
        );
        s.wait_ready(Duration::from_secs(30));
        s
    }

    /// Starts `bin serve` as `how` says, without waiting for it.
    pub fn launch(
        bin: &str,
        cluster: &Cluster,
        how: &Launch<'_>,
        dir: Option<tempfile::TempDir>,
    ) -> Serve {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static LOGS: AtomicUsize = AtomicUsize::new(0);
        let (metrics_port, health_port) = how.ports.unwrap_or((0, 0));
        let storage = how.storage;
        let log = storage.with_extension(format!(
            "log-{}-{}",
            std::process::id(),
            LOGS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(storage).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg("--kubeconfig")
            .arg(how.kubeconfig.unwrap_or(&cluster.kubeconfig))
            .arg("--storage-path")
            .arg(storage)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(["--log-format", "text"])
            .args(how.extra)
            .env(
                "RUST_LOG",
                how.rust_log.map(str::to_string).unwrap_or_else(|| {
                    std::env::var("IMAGEAUTO_TEST_RUST_LOG").unwrap_or_else(|_| "info".into())
                }),
            )
            .env_remove("KUBECONFIG")
            .envs(how.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("serve starts");
        let mut s = Serve {
            metrics_port,
            health_port,
            storage: storage.to_path_buf(),
            log,
            sentinel: Some(Sentinel::watch(child.id())),
            child: Some(child),
            _dir: dir,
        };
        if how.ports.is_none() {
            // Bound before anything slow (the first call to the cluster);
            // one that stops first has no listener to tell.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let (Some(m), Some(h)) = (s.logged_addr("metrics"), s.logged_addr("health")) {
                    (s.metrics_port, s.health_port) = (m.port(), h.port());
                    break;
                }
                if !s.running() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        s
    }

    /// The address a listener was bound to, as the log says it
    /// (`metrics=`, `health=`, `webhook=`, `receiver=`).
    pub fn logged_addr(&self, listener: &str) -> Option<SocketAddr> {
        let key = format!(" {listener}=");
        self.logs().lines().find_map(|l| {
            let (_, rest) = l.split_once(&key)?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether /readyz answers 200 now.
    pub fn ready(&self) -> bool {
        matches!(self.get(self.health_port, "/readyz"), Some((200, _)))
    }

    /// The process's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    pub fn metrics(&self) -> String {
        self.get(self.metrics_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Waits until /readyz answers 200; panics with the log after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((200, _)) = self.get(self.health_port, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("serve did not become ready:\n{}", self.logs());
    }

    /// Sends SIGTERM and waits (up to `grace`) for the process to end;
    /// returns its exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        self.sentinel = None;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok();
        None
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.sentinel = None;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How to start `serve` ([`Serve::launch`]).
pub struct Launch<'a> {
    /// Flags after the ones every test gives.
    pub extra: &'a [&'a str],
    /// The storage folder; the log goes beside it.
    pub storage: &'a Path,
    /// Another kubeconfig than the cluster's (one through a proxy).
    pub kubeconfig: Option<&'a Path>,
    /// `RUST_LOG` (default: `$IMAGEAUTO_TEST_RUST_LOG`, else `info`).
    pub rust_log: Option<&'a str>,
    /// The metrics and health ports (default: port 0, the ones bound read
    /// from the log).
    pub ports: Option<(u16, u16)>,
    /// More environment (a cloud identity's, say).
    pub env: &'a [(&'a str, String)],
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            extra: &[],
            storage: Path::new("/nonexistent"),
            kubeconfig: None,
            rust_log: None,
            ports: None,
            env: &[],
        }
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after
/// `timeout` with `what` and the context `explain` gives.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
