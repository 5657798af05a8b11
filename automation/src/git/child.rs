//! Git work in child processes: network operations in a child of the
//! program that registered itself as their runner (a thread stuck in
//! libgit2 cannot be stopped, a process can), and the supervision of a
//! child (its output collected, killed once quiet for too long, reaped).
//! Every supervised child is in a process-wide registry, so that a process
//! that shuts down ends them all at once ([`terminate_children`]).
//!
//! The runner gets one JSON request on its stdin (the credentials go only
//! there, never in its arguments or environment) and writes one JSON answer
//! on its stdout; while the operation makes progress it writes a byte on
//! stderr now and then, which is all the parent reads there.

use super::{GitAuth, GitError, display_url, fetch_now, idle, push_now, watched_with};
use base64::Engine as _;
use git2::Repository;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// The program (and its arguments) that runs one network Git operation.
pub(super) struct Runner {
    program: PathBuf,
    args: Vec<String>,
}

static RUNNER: OnceLock<Runner> = OnceLock::new();

/// Makes `program args…` the runner of this process's network Git
/// operations ([`super::fetch`], and [`super::push`] to a server): each runs
/// in a new child process that calls [`serve_network_request`], and that is
/// killed once it goes without progress for longer than the idle timeout
/// (and a margin), with the stuck thread in it. Without a runner they run
/// on a thread of this process, which is abandoned at the timeout. Set once
/// per process; false when a runner was set already (that one stays).
pub fn set_network_runner(program: PathBuf, args: Vec<String>) -> bool {
    RUNNER.set(Runner { program, args }).is_ok()
}

pub(super) fn runner() -> Option<&'static Runner> {
    RUNNER.get()
}

/// How long past the idle timeout the parent waits for a child that has
/// stopped showing progress before it kills it. The child itself answers
/// with a timeout and exits a tenth of a second past the idle timeout: this
/// is for a child that cannot.
pub(super) const BACKSTOP_MARGIN: Duration = Duration::from_secs(5);

/// Most bytes kept of a child's stdout or stderr (the rest is read and
/// dropped, so that the child never blocks on a full pipe).
const OUTPUT_CAP: usize = 1 << 20;

/// Most bytes of a request read by the runner.
const REQUEST_CAP: u64 = 64 << 20;

/// One network operation.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum Operation {
    Fetch {
        refspecs: Vec<String>,
    },
    Push {
        refspecs: Vec<String>,
        options: BTreeMap<String, String>,
    },
}

/// What the runner reads on its stdin. No `Debug`: it holds the secrets.
#[derive(Serialize, Deserialize)]
struct Request {
    #[serde(flatten)]
    operation: Operation,
    /// The repository's folder, as the bytes of its path, in base64.
    git_dir: String,
    url: String,
    auth: WireAuth,
}

/// [`GitAuth`] on the pipe. No `Debug`: it holds the secrets.
#[derive(Serialize, Deserialize)]
struct WireAuth {
    username: Option<String>,
    password: Option<String>,
    bearer_token: Option<String>,
    identity: Option<String>,
    identity_pub: Option<String>,
    known_hosts: Option<String>,
    /// Base64.
    ca_pem: Option<String>,
    use_environment: bool,
    idle_timeout_ms: Option<u64>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

impl From<&GitAuth> for WireAuth {
    fn from(a: &GitAuth) -> Self {
        WireAuth {
            username: a.username.clone(),
            password: a.password.clone(),
            bearer_token: a.bearer_token.clone(),
            identity: a.identity.clone(),
            identity_pub: a.identity_pub.clone(),
            known_hosts: a.known_hosts.clone(),
            ca_pem: a.ca_pem.as_deref().map(b64),
            use_environment: a.use_environment,
            idle_timeout_ms: a
                .idle_timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl WireAuth {
    fn into_auth(self) -> Result<GitAuth, GitError> {
        let ca_pem = match self.ca_pem {
            Some(t) => Some(
                unb64(&t).ok_or_else(|| GitError::Repo("the request's CA is not base64".into()))?,
            ),
            None => None,
        };
        Ok(GitAuth {
            username: self.username,
            password: self.password,
            bearer_token: self.bearer_token,
            identity: self.identity,
            identity_pub: self.identity_pub,
            known_hosts: self.known_hosts,
            ca_pem,
            use_environment: self.use_environment,
            idle_timeout: self.idle_timeout_ms.map(Duration::from_millis),
        })
    }
}

/// `e` as it crosses the pipe: the variants a fetch or a push cannot end
/// with (a signature; the runner is never cancelled itself, its parent kills
/// it) are kept as text.
fn sendable(e: GitError) -> GitError {
    match e {
        e @ (GitError::Signing(_) | GitError::Cancelled { .. }) => GitError::Repo(e.to_string()),
        e => e,
    }
}

type Answer = Result<(), GitError>;

/// Runs `operation` on the repository at `git_dir` in a child process of
/// `runner`, and kills the child once it goes without progress for longer
/// than the auth's idle timeout and `margin`.
pub(super) fn run_in_child(
    runner: &Runner,
    operation: Operation,
    git_dir: &Path,
    url: &str,
    auth: &GitAuth,
    margin: Duration,
) -> Result<(), GitError> {
    let shown = display_url(url);
    let idle = idle(auth);
    let request = Request {
        operation,
        git_dir: b64(git_dir.as_os_str().as_bytes()),
        url: url.to_string(),
        auth: auth.into(),
    };
    let body = serde_json::to_vec(&request)
        .map_err(|e| GitError::Repo(format!("{shown}: the request for Git: {e}")))?;
    let child = std::process::Command::new(&runner.program)
        .args(&runner.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            GitError::Repo(format!(
                "{shown}: cannot start {} for the Git operation: {e}",
                runner.program.display()
            ))
        })?;
    match supervise(child, Some(body), idle.saturating_add(margin), true) {
        Ok(done) => match serde_json::from_slice::<Answer>(&done.stdout) {
            Ok(answer) => answer,
            // Its stderr is not shown: it could hold anything.
            Err(_) => Err(GitError::Repo(format!(
                "{shown}: the Git operation's process ended without an answer ({})",
                done.status
            ))),
        },
        Err(Stop::Quiet) => Err(GitError::Timeout {
            url: shown,
            seconds: idle.as_secs(),
        }),
        Err(Stop::Cancelled) => Err(GitError::Cancelled { url: shown }),
        Err(Stop::Io(e)) => Err(GitError::Repo(format!(
            "{shown}: the Git operation's process: {e}"
        ))),
    }
}

/// The child's side of [`set_network_runner`]: reads one request from
/// `input` (to its end), runs it under the idle watcher, and writes one
/// answer to `output`; while the operation makes progress, a byte goes to
/// `beats` at most every tenth of a second. Returns once the answer is
/// written, also when the operation timed out and its thread is still
/// stuck in libgit2: the caller then ends the process at once, which ends
/// that thread. An error means that no answer could be written.
pub fn serve_network_request(
    input: &mut dyn Read,
    output: &mut dyn Write,
    beats: &mut dyn Write,
) -> std::io::Result<()> {
    let mut body = Vec::new();
    let answer: Answer = match input.take(REQUEST_CAP).read_to_end(&mut body) {
        Err(e) => Err(GitError::Repo(format!(
            "the Git operation's request cannot be read: {e}"
        ))),
        Ok(_) => match serde_json::from_slice::<Request>(&body) {
            // Where, not what: serde_json's messages may quote a value.
            Err(e) => Err(GitError::Repo(format!(
                "the Git operation's request does not parse (line {}, column {})",
                e.line(),
                e.column()
            ))),
            Ok(request) => serve(request, beats).map_err(sendable),
        },
    };
    let mut text = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    text.push(b'\n');
    output.write_all(&text)?;
    output.flush()
}

fn serve(request: Request, beats: &mut dyn Write) -> Result<(), GitError> {
    let Request {
        operation,
        git_dir,
        url,
        auth,
    } = request;
    let git_dir = unb64(&git_dir)
        .map(|b| PathBuf::from(OsString::from_vec(b)))
        .ok_or_else(|| GitError::Repo("the request's repository is not base64".into()))?;
    let auth = auth.into_auth()?;
    let watched_url = url.clone();
    let mut beat = || {
        let _ = beats.write_all(b".");
        let _ = beats.flush();
    };
    watched_with(
        &watched_url,
        idle(&auth),
        move |activity| {
            let repo = Repository::open(&git_dir).map_err(|e| GitError::repo("repository", e))?;
            match operation {
                Operation::Fetch { refspecs } => {
                    fetch_now(&repo, &url, &auth, &refspecs, &activity)
                }
                Operation::Push { refspecs, options } => {
                    push_now(&repo, &url, &auth, &refspecs, &options, &activity)
                }
            }
        },
        &mut beat,
    )
}

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
    /// Ended by [`terminate_children`] (or not started after it).
    Cancelled,
    /// Its state could not be read, or a thread could not be started.
    Io(std::io::Error),
}

/// The supervised children running now.
pub(super) struct Children {
    inner: Mutex<Registry>,
}

struct Registry {
    /// No child may start any more.
    closed: bool,
    next: u64,
    running: BTreeMap<u64, Arc<Entry>>,
}

/// One running child.
struct Entry {
    child: Mutex<Child>,
    /// Killed by [`Children::terminate`]: its supervisor says so.
    cancelled: AtomicBool,
}

impl Entry {
    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// This process's children.
static CHILDREN: Children = Children::new();

/// Ends every Git child process this process runs now (network operations
/// in a runner of [`set_network_runner`]'s, a push to a folder through
/// `git`): each is killed at once and reaped by its supervisor, whose
/// operation fails with [`GitError::Cancelled`]; operations that would start
/// from now on fail the same way without starting one. For a process that
/// is shutting down: there is no way back. Returns how many were running.
pub fn terminate_children() -> usize {
    CHILDREN.terminate()
}

/// Whether [`terminate_children`] was called: network operations on
/// threads (without a runner) are abandoned too.
pub(super) fn terminated() -> bool {
    CHILDREN.closed()
}

impl Children {
    pub(super) const fn new() -> Children {
        Children {
            inner: Mutex::new(Registry {
                closed: false,
                next: 0,
                running: BTreeMap::new(),
            }),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed(&self) -> bool {
        self.registry().closed
    }

    pub(super) fn terminate(&self) -> usize {
        let mut r = self.registry();
        r.closed = true;
        for entry in r.running.values() {
            entry.cancelled.store(true, Ordering::Release);
            let _ = entry.child().kill();
        }
        r.running.len()
    }

    /// Registers a running child; once terminated, kills and reaps it and
    /// says no.
    fn register(&'static self, child: Child) -> Result<Registered, Stop> {
        let mut r = self.registry();
        if r.closed {
            drop(r);
            drop(Reaper(child));
            return Err(Stop::Cancelled);
        }
        r.next += 1;
        let id = r.next;
        let entry = Arc::new(Entry {
            child: Mutex::new(child),
            cancelled: AtomicBool::new(false),
        });
        r.running.insert(id, entry.clone());
        Ok(Registered {
            children: self,
            id,
            entry,
        })
    }
}

/// A child in the registry: taken out, killed if it still runs and reaped
/// when dropped.
struct Registered {
    children: &'static Children,
    id: u64,
    entry: Arc<Entry>,
}

impl Registered {
    fn cancelled(&self) -> bool {
        self.entry.cancelled.load(Ordering::Acquire)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.children.registry().running.remove(&self.id);
        let mut child = self.entry.child();
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
    supervise_in(&CHILDREN, child, input, quiet, stderr_is_life)
}

/// [`supervise`], with the child in `children`.
fn supervise_in(
    children: &'static Children,
    mut child: Child,
    input: Option<Vec<u8>>,
    quiet: Duration,
    stderr_is_life: bool,
) -> Result<Finished, Stop> {
    let start = Instant::now();
    let last_life = Arc::new(AtomicU64::new(0));
    let (stdin, stdout_pipe, stderr_pipe) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let child = children.register(child)?;
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
    if let Some(out) = stdout_pipe {
        drain(out, stdout.clone(), None, done_tx.clone()).map_err(Stop::Io)?;
        readers += 1;
    }
    if let Some(err) = stderr_pipe {
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
        // Killed already; dropping `child` reaps it.
        if child.cancelled() {
            return Err(Stop::Cancelled);
        }
        if let Some(status) = child.entry.child().try_wait().map_err(Stop::Io)? {
            break status;
        }
        let since = Duration::from_millis(millis(start))
            .saturating_sub(Duration::from_millis(last_life.load(Ordering::Relaxed)));
        if since > quiet {
            // Dropping `child` kills and reaps it.
            return Err(Stop::Quiet);
        }
    };
    drop(child);
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

    /// A TCP server that accepts connections and never answers.
    struct Silent {
        port: u16,
        _held: Arc<Mutex<Vec<std::net::TcpStream>>>,
    }

    fn silent() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                h.lock().unwrap().push(conn);
            }
        });
        Silent { port, _held: held }
    }

    fn alive(pid: u32) -> bool {
        // A zombie still has its folder: only a reaped child is gone.
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn errors_cross_the_pipe_as_they_are() {
        let errors = [
            GitError::Remote {
                url: "u".into(),
                message: "m".into(),
            },
            GitError::Auth {
                url: "u".into(),
                message: "m".into(),
            },
            GitError::HostKey {
                host: "h".into(),
                message: "m".into(),
            },
            GitError::Rejected {
                url: "u".into(),
                refname: "r".into(),
                message: "m".into(),
            },
            GitError::NonFastForward {
                url: "u".into(),
                refname: "r".into(),
            },
            GitError::Timeout {
                url: "u".into(),
                seconds: 7,
            },
            GitError::Repo("x".into()),
            GitError::RefNotFound("x".into()),
            GitError::Secret("x".into()),
        ];
        for e in errors {
            let shown = e.to_string();
            let kind = std::mem::discriminant(&e);
            let answer: Answer = Err(sendable(e));
            let text = serde_json::to_string(&answer).unwrap();
            let back: Answer = serde_json::from_str(&text).unwrap();
            let back = back.unwrap_err();
            assert_eq!(std::mem::discriminant(&back), kind, "{text}");
            assert_eq!(back.to_string(), shown);
        }
        // What a runner cannot end with crosses as its text.
        let e = sendable(GitError::Cancelled { url: "u".into() });
        let text = serde_json::to_string(&Answer::Err(e)).unwrap();
        let back: Answer = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(back, Err(GitError::Repo(ref m)) if m.contains("cancelled")),
            "{back:?}"
        );
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
    fn terminate_kills_the_running_children_at_once_and_refuses_new_ones() {
        // A registry of this test's own: the process's one stays open for
        // the other tests.
        let children: &'static Children = Box::leak(Box::new(Children::new()));
        let mut running = Vec::new();
        for _ in 0..2 {
            let child = std::process::Command::new("sleep")
                .arg("30")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let r = supervise_in(children, child, None, Duration::from_secs(60), false);
                let _ = tx.send(matches!(r, Err(Stop::Cancelled)));
            });
            running.push((pid, rx));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.registry().running.len() < 2 {
            assert!(Instant::now() < deadline, "the children never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(children.terminate(), 2);
        for (pid, rx) in running {
            // Long before the 30 s of sleep or the 60 s of quiet.
            let cancelled = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the supervisor returns");
            assert!(cancelled);
            assert!(!alive(pid), "the child is still there");
        }
        assert!(children.registry().running.is_empty());
        // A child started afterwards is killed and reaped at once.
        let child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let r = supervise_in(children, child, None, Duration::from_secs(60), false);
        assert!(matches!(r, Err(Stop::Cancelled)));
        assert!(!alive(pid));
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

    #[test]
    fn a_runner_that_never_answers_is_killed_at_the_backstop() {
        let runner = Runner {
            program: "sleep".into(),
            args: vec!["30".into()],
        };
        let auth = GitAuth {
            idle_timeout: Some(Duration::from_millis(200)),
            ..GitAuth::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let e = run_in_child(
            &runner,
            Operation::Fetch { refspecs: vec![] },
            dir.path(),
            "http://bot:s3cr3t@127.0.0.1:1/r.git",
            &auth,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(e, GitError::Timeout { .. }), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_runner_that_ends_without_an_answer_is_an_error() {
        let runner = Runner {
            program: "true".into(),
            args: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let e = run_in_child(
            &runner,
            Operation::Fetch { refspecs: vec![] },
            dir.path(),
            "http://127.0.0.1:1/r.git",
            &GitAuth::default(),
            BACKSTOP_MARGIN,
        )
        .unwrap_err();
        assert!(e.to_string().contains("without an answer"), "{e}");
    }

    fn request(url: &str, git_dir: &Path, auth: &GitAuth) -> Vec<u8> {
        serde_json::to_vec(&Request {
            operation: Operation::Fetch {
                refspecs: vec!["+refs/heads/*:refs/remotes/origin/*".into()],
            },
            git_dir: b64(git_dir.as_os_str().as_bytes()),
            url: url.into(),
            auth: auth.into(),
        })
        .unwrap()
    }

    #[test]
    fn the_runner_side_fetches_and_answers_once() {
        let src = tempfile::tempdir().unwrap();
        let repo = Repository::init(src.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let commit = repo
            .commit(Some("refs/heads/main"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        let dst = tempfile::tempdir().unwrap();
        let cache = Repository::init_bare(dst.path()).unwrap();
        let body = request(
            &src.path().display().to_string(),
            cache.path(),
            &GitAuth::default(),
        );
        let (mut out, mut beats) = (Vec::new(), Vec::new());
        serve_network_request(&mut body.as_slice(), &mut out, &mut beats).unwrap();
        let answer: Answer = serde_json::from_slice(&out).unwrap();
        assert!(answer.is_ok(), "{answer:?}");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let fetched = cache
            .find_reference("refs/remotes/origin/main")
            .unwrap()
            .target();
        assert_eq!(fetched, Some(commit));
    }

    #[test]
    fn the_runner_side_answers_a_timeout_and_no_secret() {
        let server = silent();
        let dst = tempfile::tempdir().unwrap();
        let cache = Repository::init_bare(dst.path()).unwrap();
        let auth = GitAuth {
            username: Some("bot".into()),
            password: Some("pa55-s3cr3t".into()),
            idle_timeout: Some(Duration::from_secs(1)),
            ..GitAuth::default()
        };
        let url = format!("http://bot:pa55-s3cr3t@127.0.0.1:{}/r.git", server.port);
        let body = request(&url, cache.path(), &auth);
        let (mut out, mut beats) = (Vec::new(), Vec::new());
        let start = Instant::now();
        serve_network_request(&mut body.as_slice(), &mut out, &mut beats).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("s3cr3t"), "{text}");
        let answer: Answer = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(answer, Err(GitError::Timeout { seconds: 1, .. })),
            "{text}"
        );
    }

    #[test]
    fn a_request_that_does_not_parse_is_answered() {
        let (mut out, mut beats) = (Vec::new(), Vec::new());
        serve_network_request(&mut &b"{\"op\":"[..], &mut out, &mut beats).unwrap();
        let answer: Answer = serde_json::from_slice(&out).unwrap();
        assert!(matches!(answer, Err(GitError::Repo(_))), "{answer:?}");
    }
}
