//! Network Git operations run in a child process of the binary, which ends
//! (or is killed) at the idle timeout: against a server that accepts the
//! connection and never answers, the run ends in time and leaves no process
//! behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use imageauto_tests::Stall;
use imageauto_tests::git::git;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

/// A process as /proc shows it: its id and start time (which tell it from a
/// later process with the same id), and its arguments.
#[derive(Clone, Debug, PartialEq)]
struct Proc {
    pid: u32,
    start: u64,
    args: String,
}

/// The parent and start time of a process, from /proc/PID/stat.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: the name may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3): the parent is field 4, the start
    // time field 22.
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// The processes whose parent is `parent`.
fn children(parent: u32) -> Vec<Proc> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some((ppid, start)) = stat(pid) else {
            continue;
        };
        if ppid != parent {
            continue;
        }
        let args = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push(Proc { pid, start, args });
    }
    out
}

/// Whether `p` still exists (a zombie too: only a reaped process is gone).
fn exists(p: &Proc) -> bool {
    stat(p.pid).is_some_and(|(_, start)| start == p.start)
}

/// Waits for `child` at most `limit`, noting each process it starts
/// meanwhile; kills it past the limit (a failed test).
fn watch(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Vec<Proc>, Duration) {
    let start = Instant::now();
    let mut seen: Vec<Proc> = Vec::new();
    loop {
        for p in children(child.id()) {
            if !seen.iter().any(|s| s.pid == p.pid && s.start == p.start) {
                seen.push(p);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, seen, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}; its children: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_all(r: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        r.read_to_string(&mut s).unwrap();
    }
    s
}

/// A checkout with one commit whose `origin` is `url`.
fn checkout(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    git(d, &["config", "user.name", "t"]);
    git(d, &["config", "user.email", "t@example.com"]);
    std::fs::create_dir(d.join("apps")).unwrap();
    std::fs::write(
        d.join("apps/web.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    )
    .unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "init"]);
    git(d, &["remote", "add", "origin", url]);
    dir
}

#[test]
fn a_push_to_a_server_that_never_answers_ends_in_time_and_leaves_no_process() {
    let stall = Stall::start(None);
    let url = format!("http://bot:s3cr3t-pw@127.0.0.1:{}/fleet.git", stall.port);
    let dir = checkout(&url);
    let mut child = Command::new(bin())
        .args(["reconcile", "--local", "--push", "--git-timeout", "2s"])
        .current_dir(dir.path())
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, seen, took) = watch(&mut child, Duration::from_secs(30));
    let (stdout, stderr) = (read_all(child.stdout.take()), read_all(child.stderr.take()));
    let all = format!("{stdout}{stderr}");
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(stderr.contains("no progress for 2s"), "{all}");
    assert!(!all.contains("s3cr3t-pw"), "{all}");
    // The idle timeout, and a few seconds for the rest.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    // The fetch ran in a child of the binary, with no secret in its
    // arguments, and that child is gone.
    let helpers: Vec<&Proc> = seen
        .iter()
        .filter(|p| p.args.contains("__git-network"))
        .collect();
    assert!(!helpers.is_empty(), "no Git child was seen: {seen:?}");
    for p in &seen {
        assert!(!p.args.contains("s3cr3t-pw"), "{p:?}");
        assert!(!exists(p), "{p:?} is still there");
    }
}

#[test]
fn the_git_child_answers_a_timeout_once_and_exits() {
    let stall = Stall::start(None);
    let cache = tempfile::tempdir().unwrap();
    git(cache.path(), &["init", "-q", "--bare"]);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let request = serde_json::json!({
        "op": "fetch",
        "refspecs": ["+refs/heads/*:refs/remotes/origin/*"],
        "git_dir": b64(cache.path().as_os_str().as_bytes()),
        "url": format!("http://bot:s3cr3t-pw@127.0.0.1:{}/fleet.git", stall.port),
        "auth": {
            "username": "bot",
            "password": "s3cr3t-pw",
            "use_environment": false,
            "idle_timeout_ms": 1000
        }
    });
    let mut child = Command::new(bin())
        .arg("__git-network")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(serde_json::to_string(&request).unwrap().as_bytes())
        .unwrap();
    drop(stdin);
    let (status, seen, took) = watch(&mut child, Duration::from_secs(20));
    let (stdout, stderr) = (read_all(child.stdout.take()), read_all(child.stderr.take()));
    assert!(status.success(), "{stdout}{stderr}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // One answer, one line, and nothing else.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"Err": {"Timeout": {
            "url": format!("http://***@127.0.0.1:{}/fleet.git", stall.port),
            "seconds": 1
        }}}),
        "{stdout}"
    );
    // Only signs of life on stderr.
    assert!(stderr.bytes().all(|b| b == b'.'), "{stderr}");
    assert!(seen.iter().all(|p| !exists(p)), "{seen:?}");
}

#[test]
fn the_git_child_refuses_a_request_it_cannot_read_without_quoting_it() {
    let mut child = Command::new(bin())
        .arg("__git-network")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"op": "fetch", "auth": {"password": "s3cr3t-pw", "idle_timeout_ms": "x"}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("does not parse"), "{stdout}");
    assert!(!stdout.contains("s3cr3t"), "{stdout}");
    assert!(out.stderr.is_empty());
}
