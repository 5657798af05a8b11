//! Git work in child processes: the supervision of a child (its output
//! collected, killed once quiet for too long, reaped).

use std::io::{Read, Write};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Most bytes kept of a child's stdout or stderr (the rest is read and
/// dropped, so that the child never blocks on a full pipe).
const OUTPUT_CAP: usize = 1 << 20;

/// What a supervised child wrote (each up to [`OUTPUT_CAP`]), and how it
/// ended.
pub(super) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why a supervised child gave no [`Finished`]; it was killed and reaped.
pub(super) enum Stop {
    /// Quiet for longer than allowed.
    Quiet,
    /// Its state could not be read, or a thread could not be started.
    Io(std::io::Error),
}

/// Kills and reaps the child when dropped while it runs.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Milliseconds since `start`.
fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reads `from` to its end into `into` (up to [`OUTPUT_CAP`]), stamping
/// `life` at each read when given, and says so on `done` at the end.
fn drain(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
    life: Option<(Instant, Arc<AtomicU64>)>,
    done: mpsc::Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("git-child-output".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Some((start, last)) = &life {
                            last.store(millis(*start), Ordering::Relaxed);
                        }
                        let mut kept = match into.lock() {
                            Ok(g) => g,
                            Err(p) => p.into_inner(),
                        };
                        let room = OUTPUT_CAP.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })
        .map(|_| ())
}

/// Waits for `child` (spawned with its stdout and stderr piped, and its
/// stdin piped when there is `input`), writing `input` to its stdin and
/// collecting its output. A child quiet for longer than `quiet` is killed
/// and reaped: quiet since its start, or, with `stderr_is_life`, since the
/// last thing it wrote on stderr.
pub(super) fn supervise(
    child: Child,
    input: Option<Vec<u8>>,
    quiet: Duration,
    stderr_is_life: bool,
) -> Result<Finished, Stop> {
    let mut child = Reaper(child);
    let start = Instant::now();
    let last_life = Arc::new(AtomicU64::new(0));
    let stdin = child.0.stdin.take();
    if let (Some(mut stdin), Some(input)) = (stdin, input) {
        std::thread::Builder::new()
            .name("git-child-input".into())
            .spawn(move || {
                // Fails (a broken pipe) when the child ended first: its
                // answer says why.
                let _ = stdin.write_all(&input);
            })
            .map_err(Stop::Io)?;
    }
    let (done_tx, done_rx) = mpsc::channel();
    let (stdout, stderr) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let mut readers = 0;
    if let Some(out) = child.0.stdout.take() {
        drain(out, stdout.clone(), None, done_tx.clone()).map_err(Stop::Io)?;
        readers += 1;
    }
    if let Some(err) = child.0.stderr.take() {
        let life = stderr_is_life.then(|| (start, last_life.clone()));
        drain(err, stderr.clone(), life, done_tx.clone()).map_err(Stop::Io)?;
        readers += 1;
    }
    drop(done_tx);
    let mut ended = 0;
    let status = loop {
        // Wakes as soon as the child closes an output (it is ending).
        match done_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(()) => ended += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = child.0.try_wait().map_err(Stop::Io)? {
            break status;
        }
        let since = Duration::from_millis(millis(start))
            .saturating_sub(Duration::from_millis(last_life.load(Ordering::Relaxed)));
        if since > quiet {
            let _ = child.0.kill();
            let _ = child.0.wait();
            return Err(Stop::Quiet);
        }
    };
    // The output ends with the child, unless something it started still
    // holds it: that is not waited for long.
    let grace = Instant::now() + Duration::from_secs(2);
    while ended < readers {
        let left = grace.saturating_duration_since(Instant::now());
        if left.is_zero() || done_rx.recv_timeout(left).is_err() {
            break;
        }
        ended += 1;
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| match b.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    Ok(Finished {
        status,
        stdout: take(&stdout),
        stderr: take(&stderr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Stdio;

    fn alive(pid: u32) -> bool {
        // A zombie still has its folder: only a reaped child is gone.
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn a_quiet_child_is_killed_and_reaped() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = Instant::now();
        let r = supervise(child, None, Duration::from_millis(300), false);
        assert!(matches!(r, Err(Stop::Quiet)));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(!alive(pid), "the child is still there");
    }

    #[test]
    fn a_child_that_ends_gives_its_output() {
        let child = std::process::Command::new("sh")
            .args(["-c", "cat; echo err >&2; exit 3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let done = supervise(child, Some(b"in".to_vec()), Duration::from_secs(30), false)
            .unwrap_or_else(|_| panic!("the child ended by itself"));
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, b"in");
        assert_eq!(done.stderr, b"err\n");
    }
}
