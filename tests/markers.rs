//! `set` and `lint` as a user runs them: on a Git checkout, through
//! pre-commit with both hooks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::git;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Git repository holding the golden inputs, committed.
fn golden_checkout() -> (tempfile::TempDir, Vec<(PathBuf, PathBuf)>) {
    let dir = tempfile::tempdir().unwrap();
    let golden = root().join("tests/golden/setters");
    let mut pairs = Vec::new();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    for e in std::fs::read_dir(&golden).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if let Some((stem, ext)) = name.split_once(".in.") {
            let target = dir.path().join("apps").join(format!("{stem}.{ext}"));
            std::fs::copy(&p, &target).unwrap();
            pairs.push((target, golden.join(format!("{stem}.out.{ext}"))));
        }
    }
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["config", "core.autocrlf", "false"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-qm", "init"]);
    (dir, pairs)
}

const ASSIGNMENTS: &[&str] = &[
    "apps:web=ghcr.io/org/web:1.2.0",
    "apps:api=ghcr.io/org/api:1.5.1@sha256:1111111111111111111111111111111111111111111111111111111111111111",
    "apps:report=ghcr.io/org/report:1.0.0",
    "apps:numbers=x:1.10",
];

#[test]
fn set_changes_only_marked_values() {
    let (dir, pairs) = golden_checkout();
    // Dry run: a diff, and nothing written.
    let mut args = vec!["set"];
    args.extend(ASSIGNMENTS);
    args.extend([dir.path().to_str().unwrap(), "--dry-run"]);
    let out = Command::new(bin()).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let diff = text(&out.stdout);
    // Paths as seen from the working directory, as lint shows them; the
    // diff's a/ b/ prefixes as git writes them (no doubled slash).
    let shown = dir.path().join("apps/helmrelease-values.yaml");
    let shown = shown.to_str().unwrap().trim_start_matches('/');
    assert!(diff.contains(&format!("--- a/{shown}\n")), "{diff}");
    assert!(
        diff.contains("+      tag: 1.5.1 # {\"$imagepolicy\": \"apps:api:tag\"}"),
        "{diff}"
    );
    let status = git(dir.path(), &["status", "--porcelain"]);
    assert_eq!(text(&status.stdout), "", "dry run wrote files");

    // For real, with the change set as JSON.
    let mut args = vec!["set"];
    args.extend(ASSIGNMENTS);
    args.extend(["-o", "json"]);
    let out = Command::new(bin())
        .args(&args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert!(changes.len() >= 20, "{v}");
    let c = changes
        .iter()
        .find(|c| c["file"] == "apps/helmrelease-values.yaml" && c["setter"] == "apps:api:tag")
        .unwrap();
    assert_eq!(c["oldValue"], "1.4.0");
    assert_eq!(c["newValue"], "1.5.1");
    assert_eq!(c["line"], 15);
    assert_eq!(c["object"]["kind"], "HelmRelease");
    assert_eq!(c["object"]["name"], "api");
    for (file, want) in &pairs {
        assert_eq!(
            std::fs::read(file).unwrap(),
            std::fs::read(want).unwrap(),
            "{}",
            file.display()
        );
    }
    // Git sees exactly the marked values changed: one line each.
    let numstat = text(&git(dir.path(), &["diff", "--numstat"]).stdout);
    let changed_lines: usize = numstat
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(changed_lines, changes.len(), "{numstat}");
    // No temporary files are left behind.
    let status = text(&git(dir.path(), &["status", "--porcelain"]).stdout);
    assert!(status.lines().all(|l| l.starts_with(" M ")), "{status}");

    // A second run has nothing to do.
    let mut args = vec!["set"];
    args.extend(ASSIGNMENTS);
    args.push(dir.path().to_str().unwrap());
    let out = Command::new(bin()).args(&args).output().unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("0 values changed"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn set_reports_broken_files_and_unknown_policies() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&good, "image: x:1 # {\"$imagepolicy\": \"ns:p\"}\n").unwrap();
    let broken = "a: [\nimage: x:1 # {\"$imagepolicy\": \"ns:p\"}\n";
    std::fs::write(&bad, broken).unwrap();
    let out = Command::new(bin())
        .args([
            "set",
            "ns:p=x:2",
            "ns:typo=y:1",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("not valid YAML"),
        "{err}"
    );
    assert!(err.contains("ns:typo"), "{err}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), broken);
    assert_eq!(
        std::fs::read_to_string(&good).unwrap(),
        "image: x:2 # {\"$imagepolicy\": \"ns:p\"}\n"
    );
    // Misuse: exit 2.
    for args in [
        vec!["set"],
        vec!["set", "p=x:1"],
        vec!["set", "ns:p=x:-1"],
        vec!["set", "dir", "ns:p=x:1"],
    ] {
        let out = Command::new(bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn set_does_not_follow_links_out_of_the_tree() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("secret.yaml");
    std::fs::write(&target, "image: x:1 # {\"$imagepolicy\": \"ns:p\"}\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("link.yaml")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("linkdir")).unwrap();
    let out = Command::new(bin())
        .args(["set", "ns:p=x:2", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "no marker found: exit 1");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "image: x:1 # {\"$imagepolicy\": \"ns:p\"}\n"
    );
}

fn lint_json(dir: &Path) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = Command::new(bin())
        .args(["lint", "-o", "json"])
        .current_dir(dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.code(), v.as_array().unwrap().clone())
}

#[test]
fn lint_catches_each_rule_and_passes_a_clean_tree() {
    let (code, findings) = lint_json(&root().join("tests/golden/lint/clean"));
    assert_eq!(code, Some(0), "{findings:#?}");
    assert!(findings.is_empty());
    let (code, findings) = lint_json(&root().join("tests/golden/lint/bad"));
    assert_eq!(code, Some(1));
    let expected = [
        ("workloads.yaml", 10, "missing-marker"),
        ("workloads.yaml", 23, "image-mismatch"),
        ("workloads.yaml", 34, "unknown-policy"),
        ("workloads.yaml", 36, "tag-marker-on-reference"),
        ("workloads.yaml", 38, "full-marker-on-tag"),
        ("markers.yaml", 8, "unknown-suffix"),
        ("markers.yaml", 10, "invalid-marker"),
        ("markers.yaml", 12, "detached-marker"),
        ("kustomization.yaml", 5, "missing-marker"),
        ("automation.yaml", 13, "unknown-field"),
        ("automation.yaml", 24, "unknown-field"),
    ];
    for (file, line, rule) in expected {
        assert!(
            findings
                .iter()
                .any(|f| f["file"] == file && f["line"] == line && f["rule"] == rule),
            "{file}:{line} {rule} not found in {findings:#?}"
        );
    }
    assert_eq!(findings.len(), expected.len(), "{findings:#?}");
    // Text output: path:line:col: severity: message [rule]
    let out = Command::new(bin())
        .args(["lint", "tests/golden/lint/bad/markers.yaml"])
        .current_dir(root())
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(
        s.lines().any(
            |l| l.starts_with("tests/golden/lint/bad/markers.yaml:8:36: error: ")
                && l.ends_with("[unknown-suffix]")
        ),
        "{s}"
    );
}

fn pre_commit() -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("pre-commit");
        if p.is_file() {
            return p;
        }
    }
    panic!("pre-commit is not installed: `make test` installs it (apt-get install pre-commit)");
}

/// A repository whose pre-commit config points at this checkout's HEAD.
fn hooked_repo(hook: &str) -> tempfile::TempDir {
    let head = text(&git(&root(), &["rev-parse", "HEAD"]).stdout)
        .trim()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    std::fs::write(
        dir.path().join(".pre-commit-config.yaml"),
        format!(
            "repos:\n  - repo: {}\n    rev: {head}\n    hooks:\n      - id: {hook}\n",
            root().display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n    - name: web\n      image: ghcr.io/org/web:1.0.0\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "image: not yaml\n").unwrap();
    git(dir.path(), &["add", "."]);
    dir
}

fn run_hooks(dir: &Path, path: &str, cache: &Path, target: Option<&Path>) -> Output {
    let mut cmd = Command::new(pre_commit());
    cmd.args(["run", "--all-files", "--color", "never"])
        .current_dir(dir)
        .env("PRE_COMMIT_HOME", cache)
        .env("PATH", path);
    if let Some(t) = target {
        cmd.env("CARGO_TARGET_DIR", t);
    }
    cmd.output().unwrap()
}

#[test]
fn pre_commit_system_hook() {
    let dir = hooked_repo("imageauto-lint-system");
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let cache = tempfile::tempdir().unwrap();
    let out = run_hooks(dir.path(), &path, cache.path(), None);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}{}", text(&out.stderr));
    assert!(
        s.contains("web.yaml:7:14: error:") && s.contains("[missing-marker]"),
        "{s}"
    );
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n    - name: web\n      image: ghcr.io/org/web:1.0.0 # {\"$imagepolicy\": \"apps:web\"}\n",
    )
    .unwrap();
    let out = run_hooks(dir.path(), &path, cache.path(), None);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

/// The hook that builds kubectl-imageauto from this repository's source, as
/// pre-commit does for `language: rust` (`cargo install --path .` in its
/// clone of the repository). The build starts from a copy of this suite's
/// compiled dependencies, in the debug profile (a `cargo` on PATH that adds
/// `--debug` to `install`), so that it compiles the workspace's own crates
/// again, not every dependency in release mode. A copy, not the suite's
/// own target folder: `cargo install` resolves features for the binary
/// alone and would replace libraries the rest of the suite still uses.
#[test]
fn pre_commit_build_from_source_hook() {
    let dir = hooked_repo("imageauto-lint");
    let cache = tempfile::tempdir().unwrap();
    let shim = tempfile::tempdir().unwrap();
    let real = which("cargo");
    let script = shim.path().join("cargo");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = install ]; then shift; exec {real} install --debug \"$@\"; fi\nexec {real} \"$@\"\n",
            real = real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The suite's target folder is target/debug/.. of the binary; its
    // libraries are hard-linked (as cargo links what it uplifts: compilers
    // replace such files, never write into them), its fingerprints and build
    // script outputs copied, so the copy costs little disk.
    let suite = Path::new(bin()).parent().unwrap();
    let copy = tempfile::tempdir_in(suite.parent().unwrap()).unwrap();
    let target = copy.path().to_path_buf();
    let debug = target.join("debug");
    std::fs::create_dir_all(debug.join("deps")).unwrap();
    let copied = Command::new("sh")
        .arg("-c")
        .arg(
            "cp -a \"$1/.fingerprint\" \"$1/build\" \"$2/\" && \
             find \"$1/deps\" -maxdepth 1 -type f -name '*.d' -exec cp -a -t \"$2/deps\" {} + && \
             find \"$1/deps\" -maxdepth 1 -type f \\( -name '*.rlib' -o -name '*.rmeta' -o -name '*.so' \\) \
               -exec cp -al -t \"$2/deps\" {} +",
        )
        .arg("copy")
        .arg(suite)
        .arg(&debug)
        .status()
        .unwrap();
    assert!(copied.success(), "copying {} failed", suite.display());
    let path = format!(
        "{}:{}",
        shim.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = run_hooks(dir.path(), &path, cache.path(), Some(&target));
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}{}", text(&out.stderr));
    assert!(s.contains("[missing-marker]"), "{s}");
    // pre-commit built its own binary from the clone.
    let mut stack = vec![cache.path().to_path_buf()];
    let mut built = false;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if p.ends_with("bin/kubectl-imageauto") {
                built = true;
            }
        }
    }
    assert!(built, "no kubectl-imageauto in pre-commit's cache");
}

fn which(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}
