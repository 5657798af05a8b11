#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The command line as a user runs it, through kubectl's plugin mechanism too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-imageauto")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

#[test]
fn explain_examples_pick_what_flux_picks() {
    for (dir, want) in [
        ("semver", "1.10.0"),
        ("timestamp", "main-4be0d77-20240512T181500"),
        ("ecr-numerical", "branch-dev-1715433000-4be0d77"),
    ] {
        let f = examples().join(dir).join("image-automation.yaml");
        let t = examples().join(dir).join("tags.txt");
        let out = run(&[
            "explain",
            "-f",
            f.to_str().unwrap(),
            "--tags",
            t.to_str().unwrap(),
            "-o",
            "json",
        ]);
        assert!(out.status.success(), "{dir}: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["latest"], want, "{dir}");
        let tags = v["tags"].as_array().unwrap();
        for t in tags {
            for key in [
                "tag",
                "excluded",
                "filtered",
                "extracted",
                "accepted",
                "reason",
            ] {
                assert!(t.get(key).is_some(), "{dir}: {key} missing in {t}");
            }
        }
    }
}

#[test]
fn explain_text_puts_the_winner_first() {
    let f = examples().join("semver/image-automation.yaml");
    let out = run_stdin(
        &["explain", "-f", f.to_str().unwrap(), "--tags", "-"],
        "0.1.0\n1.2.0\n1.9.0\n3.0.0\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.starts_with("ImagePolicy podinfo selects: 1.9.0\n"), "{s}");
    let rows: Vec<&str> = s
        .lines()
        .skip_while(|l| !l.starts_with("TAG"))
        .skip(1)
        .collect();
    assert!(rows[0].starts_with("1.9.0 "), "{s}");
}

#[test]
fn explain_excluded_by_the_repository_list() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "p.yaml",
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {name: r}\nspec:\n  image: nginx\n  interval: 1m\n  exclusionList: ['^1\\.9']\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: p}\nspec:\n  imageRepositoryRef: {name: r}\n  policy: {semver: {range: '1.x'}}\n",
    );
    let out = run_stdin(
        &["explain", "-f", &f, "--tags", "-", "-o", "json"],
        "1.8.0\n1.9.0\n",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["latest"], "1.8.0");
    let excluded: Vec<&str> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["excluded"] == true)
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    assert_eq!(excluded, ["1.9.0"]);
}

#[test]
fn explain_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let tags = write(dir.path(), "tags.txt", "1.0.0\n");
    let cases = [
        (
            "range",
            "kind: ImagePolicy\nmetadata: {name: p}\nspec:\n  imageRepositoryRef: {name: r}\n  policy: {semver: {range: 'one'}}\n",
            "spec.policy.semver.range",
        ),
        (
            "regex",
            "kind: ImagePolicy\nmetadata: {name: p}\nspec:\n  imageRepositoryRef: {name: r}\n  filterTags: {pattern: '(unclosed'}\n  policy: {alphabetical: {}}\n",
            "spec.filterTags.pattern",
        ),
        (
            "extract",
            "kind: ImagePolicy\nmetadata: {name: p}\nspec:\n  imageRepositoryRef: {name: r}\n  filterTags: {pattern: '(\\d+)', extract: '$2'}\n  policy: {numerical: {}}\n",
            "spec.filterTags.extract",
        ),
        (
            "order",
            "kind: ImagePolicy\nmetadata: {name: p}\nspec:\n  imageRepositoryRef: {name: r}\n  policy: {alphabetical: {order: sideways}}\n",
            "sideways",
        ),
    ];
    for (name, body, needle) in cases {
        let f = write(
            dir.path(),
            &format!("{name}.yaml"),
            &format!("apiVersion: image.toolkit.fluxcd.io/v1\n{body}"),
        );
        let out = run(&["explain", "-f", &f, "--tags", &tags]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = text(&out.stderr);
        assert!(err.contains(needle) && err.contains(&f), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let f = write(
        dir.path(),
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    );
    let out = run(&["explain", "-f", &f, "--tags", &tags]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("holds no ImagePolicy"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["explain", "-f", "/nonexistent/p.yaml", "--tags", &tags]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/p.yaml"));
}

#[test]
fn numerical_failure_names_the_tag() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "p.yaml",
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: p}\nspec:\n  imageRepositoryRef: {name: r}\n  policy: {numerical: {}}\n",
    );
    let out = run_stdin(&["explain", "-f", &f, "--tags", "-"], "1\n2\nlatest\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("\"latest\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn misuse_exits_2() {
    assert_eq!(run(&["explain"]).status.code(), Some(2));
    assert_eq!(
        run(&["explain", "-f", "x.yaml", "--tags", "t", "-o", "xml"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn runs_as_a_kubectl_plugin() {
    let kubectl = imageauto_tests_kubectl();
    let dir = Path::new(bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(kubectl)
        .args(["imageauto", "version", "--client"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

fn imageauto_tests_kubectl() -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("kubectl");
        if p.is_file() {
            return p;
        }
    }
    panic!("kubectl is not installed: `make test` installs it");
}

#[test]
fn the_examples_lint_clean() {
    // What users copy must not teach them a mistake the linter reports.
    let out = run(&["lint", examples().to_str().unwrap()]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `make dist`'s script: the archive holds the plugin and LICENSE, and the
/// krew manifest rendered from plugins/imageauto.yaml names that archive with
/// its sha256, for the version Cargo.toml declares.
#[test]
fn dist_archive_and_krew_manifest_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    // A stand-in executable: the archive's layout is what is checked here.
    let fake = work.path().join("kubectl-imageauto");
    std::fs::write(&fake, "#!/bin/sh\necho imageauto\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out_dir = work.path().join("dist");
    let out = Command::new(root.join("scripts/dist.sh"))
        .arg(&fake)
        .arg(&out_dir)
        .arg("https://example.test/dl")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let name = format!("kubectl-imageauto_{version}_linux_amd64.tar.gz");
    let archive = out_dir.join(&name);
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(&archive)
        .output()
        .unwrap();
    let mut files: Vec<String> = text(&listing.stdout).lines().map(str::to_string).collect();
    files.sort();
    assert_eq!(
        files,
        ["LICENSE", "kubectl-imageauto", "kubectl_complete-imageauto"]
    );
    let sum = Command::new("sha256sum").arg(&archive).output().unwrap();
    let sum = text(&sum.stdout).split(' ').next().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(out_dir.join(format!("{name}.sha256"))).unwrap(),
        format!("{sum}  {name}\n")
    );
    let manifest = std::fs::read_to_string(out_dir.join("imageauto.yaml")).unwrap();
    let m: serde_json::Value = serde_norway::from_str(&manifest).unwrap();
    assert_eq!(m["kind"], "Plugin", "{manifest}");
    assert_eq!(m["metadata"]["name"], "imageauto");
    assert_eq!(m["spec"]["version"], version.as_str());
    let p = &m["spec"]["platforms"][0];
    assert_eq!(p["uri"], format!("https://example.test/dl/{name}").as_str());
    assert_eq!(p["sha256"], sum.as_str());
    assert_eq!(p["bin"], "kubectl-imageauto");
    assert!(!manifest.contains("{{"), "{manifest}");
    // What krew does with it: unpack and run the named binary.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let st = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success());
    let ran = Command::new(unpacked.join("kubectl-imageauto"))
        .output()
        .unwrap();
    assert_eq!(text(&ran.stdout), "imageauto\n");
    // kubectl's completion of the plugin, shipped beside it: it runs the
    // plugin found on PATH (here the stand-in).
    let ran = Command::new(unpacked.join("kubectl_complete-imageauto"))
        .args(["get", ""])
        .env("PATH", format!("{}:/usr/bin:/bin", unpacked.display()))
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert_eq!(text(&ran.stdout), "imageauto\n");
    // The manifest says how to put it on PATH (krew links only `bin`).
    assert!(
        m["spec"]["caveats"]
            .as_str()
            .is_some_and(|c| c.contains("kubectl_complete-imageauto")),
        "{manifest}"
    );
}

/// Output into a pipe whose reader went away (`| head`): the command ends
/// at once and quietly, with 141 as a shell reports for a program SIGPIPE
/// ended, never a panic (exit 101).
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let policy = examples().join("semver").join("image-automation.yaml");
    let tags = examples().join("semver").join("tags.txt");
    let explain = [
        "explain",
        "-f",
        policy.to_str().unwrap(),
        "--tags",
        tags.to_str().unwrap(),
    ];
    for args in [
        &["install", "--dry-run"][..],
        &["install", "--dry-run", "-o", "json"],
        &["completion", "bash"],
        &["version", "--client"],
        &explain,
    ] {
        let mut child = Command::new(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the first write.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(141),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "", "{args:?}");
    }
    // As a user types it: the first lines, then the reader leaves.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' install --dry-run | head -2",
            bin()
        ))
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "---\napiVersion: apiextensions.k8s.io/v1\n"
    );
    assert_eq!(out.status.code(), Some(141), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// `make demo-cluster` applies the CRDs of Flux's kinds that imageauto
/// reads (GitRepository, Receiver) from `demo/cluster/flux-kinds.yaml`:
/// the same the cluster tests install. `IMAGEAUTO_WRITE_DEMO_CRDS=1`
/// rewrites the file.
#[test]
fn the_demo_applies_the_flux_kinds_the_tests_use() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/cluster/flux-kinds.yaml");
    let crds = imageauto_tests::kube::flux_other_crds();
    let want: Vec<serde_json::Value> = crds
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    if std::env::var_os("IMAGEAUTO_WRITE_DEMO_CRDS").is_some() {
        let mut text = String::from(
            "# The CRDs of Flux's GitRepository (source-controller) and Receiver\n\
             # (notification-controller), as imageauto reads them, for make\n\
             # demo-cluster. A real cluster has Flux's own. Written by\n\
             # IMAGEAUTO_WRITE_DEMO_CRDS=1 cargo test --test cli the_demo_applies.\n",
        );
        for v in &want {
            text.push_str("---\n");
            text.push_str(&serde_norway::to_string(v).unwrap());
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    use serde::Deserialize;
    let text = std::fs::read_to_string(&path).unwrap();
    let have: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    assert!(
        have == want,
        "{} differs from the tests' CRDs: IMAGEAUTO_WRITE_DEMO_CRDS=1 cargo test --test cli the_demo_applies",
        path.display()
    );
}
