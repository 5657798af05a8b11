//! Broken and hostile input through the command line: files, tag lists and
//! servers that misbehave. Each case asserts the exit code, the message, and
//! what is on disk afterwards (nothing half written, no temporary file).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::registry::{FakeServer, Reply};
use imageauto_tests::{Stall, leftover_temporaries};
use std::path::Path;
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

fn run(args: &[&str]) -> Output {
    run_in(Path::new("."), args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn both(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

const MARKED: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: ghcr.io/org/web:1.0.0 # {\"$imagepolicy\": \"ns:web\"}\n";

fn tags_reply(tags: &[&str]) -> Reply {
    let body = serde_json::json!({"name": "team/app", "tags": tags}).to_string();
    (
        200,
        vec![("Content-Type".into(), "application/json".into())],
        body.into_bytes(),
    )
}

// ---- tags from a registry ------------------------------------------------

#[test]
fn tags_outside_the_grammar_never_reach_the_terminal() {
    let server = FakeServer::start(|_| {
        tags_reply(&[
            "1.0.0",
            "1.2.0",
            "9.9.9\nimage: evil",
            "2.0.0\r",
            "\u{1b}[2J\u{1b}[31mred",
            "3.0.0: x",
            "4.0.0\u{2028}",
            "5.0.0@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ])
    });
    let image = format!("127.0.0.1:{}/team/app", server.port);
    let out = run(&["tags", &image, "--insecure"]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert_eq!(text(&out.stdout), "1.2.0\n1.0.0\n");
    assert!(!both(&out).contains('\u{1b}'));
    assert!(
        text(&out.stderr).contains("6 tag(s) from the registry are not valid tags"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["tags", &image, "--insecure", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["1.2.0", "1.0.0"]));
    assert_eq!(v["invalidTags"], 6);
}

#[test]
fn retry_after_far_away_is_bounded_by_the_timeout() {
    for retry_after in ["999999", "Fri, 01 Jan 2100 00:00:00 GMT"] {
        let server = FakeServer::start(move |_| {
            (
                429,
                vec![("Retry-After".into(), retry_after.into())],
                vec![],
            )
        });
        let image = format!("127.0.0.1:{}/team/app", server.port);
        let started = std::time::Instant::now();
        let out = run(&["tags", &image, "--insecure", "--timeout", "3s"]);
        assert_eq!(code(&out), 1, "{}", both(&out));
        let err = text(&out.stderr);
        assert!(err.contains("rate limited (429)"), "{err}");
        assert!(err.contains("longer than the 3s left"), "{err}");
        // It gave up instead of sleeping: far below the asked wait.
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }
}

#[test]
fn a_registry_asking_to_wait_a_little_is_waited_for_and_said_so() {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let server = FakeServer::start(move |_| {
        if h.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            (429, vec![("Retry-After".into(), "1".into())], vec![])
        } else {
            tags_reply(&["1.0.0"])
        }
    });
    let image = format!("127.0.0.1:{}/team/app", server.port);
    let out = run(&["tags", &image, "--insecure", "--timeout", "30s"]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(
        text(&out.stderr).contains("warning: 127.0.0.1:"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("waiting 1s before retry 1"));
}

#[test]
fn broken_servers_get_messages_that_say_what_happened() {
    // A redirect to itself.
    let server = FakeServer::start(|r| {
        (
            302,
            vec![("Location".into(), format!("{}?{}x", r.path, r.query_string))],
            vec![],
        )
    });
    let out = run(&[
        "tags",
        &format!("127.0.0.1:{}/a", server.port),
        "--insecure",
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        both(&out).contains("redirects without end"),
        "{}",
        both(&out)
    );
    assert!(!both(&out).contains("cannot connect"), "{}", both(&out));
    // Not HTTP at all.
    let garbage = Stall::start(Some(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()));
    let out = run(&[
        "tags",
        &format!("127.0.0.1:{}/a", garbage.port),
        "--insecure",
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        both(&out).contains("not understood as HTTP"),
        "{}",
        both(&out)
    );
    // An empty token realm.
    let server = FakeServer::start(|_| {
        (
            401,
            vec![("WWW-Authenticate".into(), "Bearer realm=\"\"".into())],
            vec![],
        )
    });
    let out = run(&[
        "tags",
        &format!("127.0.0.1:{}/a", server.port),
        "--insecure",
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        both(&out).contains("the token realm \"\" of the challenge is not a URL"),
        "{}",
        both(&out)
    );
}

#[test]
fn numeric_and_duration_flags_are_bounded_usage_errors() {
    for args in [
        &["tags", "x", "--timeout", "0s"][..],
        &["tags", "x", "--timeout", "soon"],
        &["tags", "x", "--timeout", "100000h"],
        &["reconcile", "--local", "--scans-per-registry", "100000000"],
        &["reconcile", "--local", "--scans-per-registry", "0"],
        &["reconcile", "--local", "--git-timeout", "0s"],
    ] {
        let out = run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", both(&out));
        assert!(!both(&out).contains("panicked"), "{}", both(&out));
    }
}

// ---- set -----------------------------------------------------------------

#[test]
fn set_refuses_references_outside_the_grammar() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.yaml"), MARKED).unwrap();
    for bad in [
        "ns:web=ghcr.io/Org/web:1.1.0",
        "ns:web=ghcr.io/org/wéb:1.1.0",
        "ns:web=ghcr.io/org/web:1.1.0\nx",
        "ns:web=bad_host.io/web:1",
    ] {
        let out = run_in(dir.path(), &["set", bad, "."]);
        assert_eq!(code(&out), 2, "{bad:?}: {}", both(&out));
        assert!(
            both(&out).contains("not a valid image reference"),
            "{}",
            both(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("d.yaml")).unwrap(),
        MARKED
    );
}

#[test]
fn set_leaves_a_read_only_file_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.yaml");
    std::fs::write(&file, MARKED).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = run_in(dir.path(), &["set", "ns:web=ghcr.io/org/web:1.1.0", "."]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(both(&out).contains("d.yaml"), "{}", both(&out));
    assert!(both(&out).contains("read-only"), "{}", both(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), MARKED);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert!(leftover_temporaries(dir.path()).is_empty());
}

#[test]
fn a_huge_value_is_cut_in_the_table_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let old = format!("ghcr.io/org/web:{}", "1".repeat(70_000));
    std::fs::write(
        dir.path().join("d.yaml"),
        MARKED.replace("ghcr.io/org/web:1.0.0", &old),
    )
    .unwrap();
    let out = run_in(dir.path(), &["set", "ns:web=ghcr.io/org/web:1.1.0", "."]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains('…'), "{stdout}");
    assert!(stdout.len() < 2_000, "{}", stdout.len());
    assert!(text(&out.stderr).contains("1 value changed"));
    // JSON keeps the value whole.
    std::fs::write(
        dir.path().join("d.yaml"),
        MARKED.replace("ghcr.io/org/web:1.0.0", &old),
    )
    .unwrap();
    let out = run_in(
        dir.path(),
        &["set", "ns:web=ghcr.io/org/web:1.1.0", ".", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["changes"][0]["oldValue"], old);
}

fn deep_flow(levels: usize) -> String {
    format!(
        "a: {}{} # {{\"$imagepolicy\": \"ns:web\"}}\n",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

fn deep_block(levels: usize) -> String {
    let mut s = String::new();
    for i in 0..levels {
        s.push_str(&"  ".repeat(i));
        s.push_str(&format!("k{i}:\n"));
    }
    s.push_str(&"  ".repeat(levels));
    s.push_str("image: ghcr.io/org/web:1.0.0 # {\"$imagepolicy\": \"ns:web\"}\n");
    s
}

#[test]
fn deep_nesting_is_an_error_for_that_file_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), MARKED).unwrap();
    std::fs::write(dir.path().join("b-flow.yaml"), deep_flow(5_000)).unwrap();
    std::fs::write(dir.path().join("c-block.yaml"), deep_block(5_000)).unwrap();
    std::fs::write(dir.path().join("d.yaml"), MARKED).unwrap();
    std::fs::write(
        dir.path().join("e-unclosed.yaml"),
        "a: ".to_string() + &"[".repeat(200_000),
    )
    .unwrap();
    let out = run_in(dir.path(), &["set", "ns:web=ghcr.io/org/web:1.1.0", "."]);
    let all = both(&out);
    assert_eq!(code(&out), 1, "{all}");
    for f in ["b-flow.yaml", "c-block.yaml"] {
        assert!(
            all.contains(&format!("error: {f}: not valid YAML"))
                && all.contains("nested deeper than"),
            "{f}: {all}"
        );
    }
    // The summary is printed, the good files are rewritten, the bad ones left.
    assert!(
        all.contains("2 values changed in 2 of 4 files with markers"),
        "{all}"
    );
    for f in ["a.yaml", "d.yaml"] {
        assert!(
            std::fs::read_to_string(dir.path().join(f))
                .unwrap()
                .contains("web:1.1.0")
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("b-flow.yaml")).unwrap(),
        deep_flow(5_000)
    );
    assert!(leftover_temporaries(dir.path()).is_empty());
    // lint names the file and fails.
    let out = run_in(dir.path(), &["lint", "c-block.yaml"]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        text(&out.stdout).starts_with("c-block.yaml:"),
        "{}",
        both(&out)
    );
    assert!(both(&out).contains("nested deeper than"));
}

#[test]
fn a_signal_during_writes_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // Large files, so that each write takes a while.
    let filler = format!("# {}\n", "x".repeat(1 << 20)).repeat(24);
    for i in 0..8 {
        std::fs::write(
            dir.path().join(format!("f{i:02}.yaml")),
            format!("{MARKED}{filler}"),
        )
        .unwrap();
    }
    for (round, signal) in ["TERM", "INT", "HUP"].iter().enumerate() {
        let mut child = Command::new(bin())
            .args(["set", &format!("ns:web=ghcr.io/org/web:2.{round}.0"), "."])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until a temporary file exists: the signal lands mid-write.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while leftover_temporaries(dir.path()).is_empty() {
            assert!(std::time::Instant::now() < deadline, "no write began");
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before a write was seen"
            );
        }
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{signal}: {status:?}");
        assert!(
            leftover_temporaries(dir.path()).is_empty(),
            "after SIG{signal}: {:?}",
            leftover_temporaries(dir.path())
        );
        // Every file is whole: either the old value or a new one.
        for i in 0..8 {
            let t = std::fs::read_to_string(dir.path().join(format!("f{i:02}.yaml"))).unwrap();
            assert!(t.ends_with(&filler), "f{i:02}.yaml is cut");
        }
    }
}

#[test]
fn symlinks_and_os_errors_are_described_once_and_rightly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), MARKED).unwrap();
    std::os::unix::fs::symlink("missing.yaml", dir.path().join("gone.yaml")).unwrap();
    let out = run_in(dir.path(), &["set", "ns:web=ghcr.io/org/web:1.1.0", "."]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(
        text(&out.stderr).contains("gone.yaml: symbolic link to nothing"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("leads out"));
    let out = run_in(
        dir.path(),
        &["set", "ns:web=ghcr.io/org/web:1.2.0", "a.yaml/sub"],
    );
    assert_eq!(code(&out), 1, "{}", both(&out));
    let err = text(&out.stderr);
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}

// ---- files that are not files ------------------------------------------

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok);
}

#[test]
fn fifos_and_devices_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), MARKED).unwrap();
    std::fs::write(dir.path().join("p.yml"), "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: web}\nspec:\n  imageRepositoryRef: {name: web}\n  policy: {semver: {range: '>=1.0.0'}}\n").unwrap();
    mkfifo(&dir.path().join("pipe.yaml"));
    // In a tree: noted, the rest is linted.
    let out = run_in(dir.path(), &["lint", "."]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(
        text(&out.stderr).contains("pipe.yaml: a FIFO, not read"),
        "{}",
        both(&out)
    );
    // Given directly: an error, at once.
    for args in [
        vec!["lint", "pipe.yaml"],
        vec!["lint", "/dev/zero"],
        vec!["explain", "-f", "pipe.yaml", "--tags", "-"],
        vec!["explain", "-f", "p.yml", "--tags", "pipe.yaml"],
        vec!["set", "ns:web=ghcr.io/org/web:1.1.0", "pipe.yaml"],
    ] {
        let out = run_in(dir.path(), &args);
        assert_eq!(code(&out), 1, "{args:?}: {}", both(&out));
        assert!(
            both(&out).contains("not a regular file"),
            "{args:?}: {}",
            both(&out)
        );
    }
}

// ---- messages --------------------------------------------------------------

#[test]
fn lint_findings_stay_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: c\n      image: |\n        ghcr.io/org/web:1\n        second-line\n";
    std::fs::write(dir.path().join("p.yaml"), pod).unwrap();
    let out = run_in(dir.path(), &["lint", "."]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("p.yaml:7:"), "{stdout}");
    assert!(stdout.contains("\\n"), "{stdout}");
}

#[test]
fn a_nul_byte_is_reported_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("n.yaml"),
        "a: 1\nb: x\u{0}y # {\"$imagepolicy\": \"ns:web\"}\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["lint", "."]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        text(&out.stdout).starts_with("n.yaml:2:5:"),
        "{}",
        both(&out)
    );
}

#[test]
fn a_tags_file_with_a_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: web}\nspec:\n  imageRepositoryRef: {name: web}\n  policy: {semver: {range: '>=1.0.0'}}\n";
    std::fs::write(dir.path().join("p.yaml"), policy).unwrap();
    std::fs::write(dir.path().join("tags.txt"), "\u{feff}1.5.0\n1.2.0\n").unwrap();
    let out = run_in(
        dir.path(),
        &[
            "explain", "-f", "p.yaml", "--tags", "tags.txt", "-o", "json",
        ],
    );
    assert_eq!(code(&out), 0, "{}", both(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["latest"], "1.5.0");
}
