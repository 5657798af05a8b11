//! The engine itself, the way a controller drives it: bare repository
//! caches per URL against a real git daemon, two automations on one
//! repository at once, a branch that moves on the remote during a run, a
//! push a hook refuses, and typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automation::api::plan::PushTarget;
use automation::api::{GitRepositoryRef, ImageRef};
use automation::engine::automation::{AutomationJob, run_blocking_with};
use automation::engine::update::CommitRequest;
use automation::engine::{Engine, EngineError, EngineOptions};
use automation::git::{GitAuth, Signature};
use imageauto_tests::git::{GitDaemon, Repos, git, git_text};
use std::collections::BTreeMap;
use std::sync::Arc;

fn deploy(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - name: {name}\n          image: ghcr.io/org/{name}:1.0.0 # {{\"$imagepolicy\": \"apps:{name}\"}}\n"
    )
}

fn images(pairs: &[(&str, &str)]) -> BTreeMap<String, ImageRef> {
    pairs
        .iter()
        .map(|(name, tag)| {
            (
                format!("apps:{name}"),
                ImageRef {
                    name: format!("ghcr.io/org/{name}"),
                    tag: tag.to_string(),
                    digest: None,
                },
            )
        })
        .collect()
}

fn job(
    cache: &std::path::Path,
    url: &str,
    path: &str,
    branch: &str,
    images: BTreeMap<String, ImageRef>,
) -> AutomationJob {
    AutomationJob {
        cache_dir: cache.to_path_buf(),
        url: url.to_string(),
        auth: GitAuth::default(),
        target: PushTarget {
            checkout: Some(GitRepositoryRef {
                branch: Some("main".into()),
                ..GitRepositoryRef::default()
            }),
            branch: branch.to_string(),
            refspec: None,
            options: BTreeMap::new(),
        },
        commit: CommitRequest {
            path: path.to_string(),
            author: Signature {
                name: "imageauto".into(),
                email: "imageauto@example.com".into(),
            },
            template: Some("Update {{ range .Changed.Changes }}{{ .NewValue }} {{ end }}".into()),
            values: BTreeMap::new(),
            automation: ("apps".into(), path.replace('/', "-")),
            signer: None,
        },
        images,
        dry_run: false,
        index_markers: false,
        fence: Default::default(),
    }
}

struct World {
    repos: Repos,
    bare: std::path::PathBuf,
    daemon: GitDaemon,
    cache: tempfile::TempDir,
}

fn world() -> World {
    let repos = Repos::new();
    let bare = repos.create(
        "fleet",
        &[
            ("apps/web/deploy.yaml", &deploy("web")),
            ("apps/api/deploy.yaml", &deploy("api")),
        ],
    );
    let daemon = GitDaemon::start(repos.dir.path());
    World {
        repos,
        bare,
        daemon,
        cache: tempfile::tempdir().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_automations_on_one_repository_at_once() {
    let w = world();
    let url = w.daemon.url("fleet");
    let engine = Arc::new(Engine::new(EngineOptions::default()));
    // Same repository, same push branch, different folders: they take
    // turns on the cache, and the second builds on the first's commit.
    let a = job(
        w.cache.path(),
        &url,
        "apps/web",
        "auto",
        images(&[("web", "2.0.0")]),
    );
    let b = job(
        w.cache.path(),
        &url,
        "apps/api",
        "auto",
        images(&[("api", "3.0.0")]),
    );
    let (e1, e2) = (engine.clone(), engine.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { e1.update(a).await }),
        tokio::spawn(async move { e2.update(b).await })
    );
    let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
    assert!(ra.pushed && rb.pushed);
    assert_eq!(ra.files.len(), 1);
    assert_eq!(rb.files.len(), 1);
    let main = git_text(&w.bare, &["rev-parse", "main"]);
    assert_eq!(ra.source_revision, format!("main@sha1:{main}"));
    // Both changes are on the branch, in two commits on top of main.
    let web = git_text(&w.bare, &["show", "auto:apps/web/deploy.yaml"]);
    let api = git_text(&w.bare, &["show", "auto:apps/api/deploy.yaml"]);
    assert!(web.contains("web:2.0.0"), "{web}");
    assert!(api.contains("api:3.0.0"), "{api}");
    assert_eq!(
        git_text(&w.bare, &["rev-list", "--count", "main..auto"]),
        "2"
    );
    let tip = git_text(&w.bare, &["rev-parse", "auto"]);
    assert!(tip == *ra.commit.as_ref().unwrap() || tip == *rb.commit.as_ref().unwrap());
    // One cache folder for the URL, a valid repository.
    let caches: Vec<_> = std::fs::read_dir(w.cache.path()).unwrap().collect();
    assert_eq!(caches.len(), 1);
    // Nothing left to do: no commit.
    let again = engine
        .update(job(
            w.cache.path(),
            &url,
            "apps",
            "auto",
            images(&[("web", "2.0.0"), ("api", "3.0.0")]),
        ))
        .await
        .unwrap();
    assert!(again.commit.is_none() && !again.pushed && again.files.is_empty());
    drop(w.repos);
}

#[test]
fn a_branch_that_moves_during_the_run_is_retried_on_its_new_tip() {
    let w = world();
    let url = w.daemon.url("fleet");
    // The push branch exists on the remote.
    git(&w.bare, &["branch", "auto", "main"]);
    let other = tempfile::tempdir().unwrap();
    git(other.path(), &["clone", "-q", &url, "."]);
    git(other.path(), &["checkout", "-q", "auto"]);
    let j = job(
        w.cache.path(),
        &url,
        "apps/web",
        "auto",
        images(&[("web", "2.0.0")]),
    );
    let mut moved = 0;
    let result = run_blocking_with(&j, &mut |attempt| {
        if attempt == 0 {
            // Someone else pushes to the branch between our fetch and push.
            std::fs::write(other.path().join("README"), "hello\n").unwrap();
            git(other.path(), &["add", "README"]);
            git(
                other.path(),
                &[
                    "-c",
                    "user.name=o",
                    "-c",
                    "user.email=o@x",
                    "commit",
                    "-qm",
                    "other",
                ],
            );
            git(other.path(), &["push", "-q", "origin", "auto"]);
            moved += 1;
        }
    })
    .unwrap();
    assert_eq!(moved, 1);
    assert!(result.pushed);
    assert!(
        result
            .notes
            .iter()
            .any(|n| n.contains("moved on the remote")),
        "{:?}",
        result.notes
    );
    // Our commit sits on top of the other writer's.
    let log = git_text(&w.bare, &["log", "--format=%s", "auto"]);
    let subjects: Vec<&str> = log.lines().collect();
    assert!(
        subjects[0].starts_with("Update ghcr.io/org/web:2.0.0"),
        "{log}"
    );
    assert_eq!(subjects[1], "other");
    assert_eq!(git_text(&w.bare, &["show", "auto:README"]), "hello");
}

#[tokio::test]
async fn a_refused_push_is_a_typed_error_and_leaves_nothing_behind() {
    let w = world();
    let url = w.daemon.url("fleet");
    Repos::hook(
        &w.bare,
        "pre-receive",
        "echo 'branch protected' >&2\nexit 1",
    );
    let engine = Engine::new(EngineOptions::default());
    let e = engine
        .update(job(
            w.cache.path(),
            &url,
            "apps",
            "auto",
            images(&[("web", "2.0.0")]),
        ))
        .await
        .unwrap_err();
    assert_eq!((e.reason(), e.is_transient()), ("GitOperationFailed", true));
    assert!(e.to_string().contains("rejected"), "{e}");
    assert!(git_text(&w.bare, &["branch", "--list", "auto"]).is_empty());
    // The cache's branch was put back: the next run tries again, and lands
    // once the hook lets it.
    std::fs::remove_file(w.bare.join("hooks/pre-receive")).unwrap();
    let ok = engine
        .update(job(
            w.cache.path(),
            &url,
            "apps",
            "auto",
            images(&[("web", "2.0.0")]),
        ))
        .await
        .unwrap();
    assert!(ok.pushed, "{ok:?}");
}

#[tokio::test]
async fn configuration_errors_are_typed() {
    let w = world();
    let url = w.daemon.url("fleet");
    let engine = Engine::new(EngineOptions::default());
    let mut j = job(w.cache.path(), &url, "apps", "auto", images(&[]));
    j.target.checkout = Some(GitRepositoryRef {
        branch: Some("nope".into()),
        ..GitRepositoryRef::default()
    });
    let e = engine.update(j).await.unwrap_err();
    assert_eq!(e.reason(), "GitOperationFailed");
    assert!(e.to_string().contains("branch nope"), "{e}");
    let j = job(
        w.cache.path(),
        "git://127.0.0.1:1/nothing.git",
        "apps",
        "auto",
        images(&[]),
    );
    let e: EngineError = engine.update(j).await.unwrap_err();
    assert_eq!(e.reason(), "GitOperationFailed");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
}

/// A replica that lost its Lease (its fence closed) pushes nothing, and
/// the remote branch stays where it was; with the fence open again the
/// same run pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_fence_pushes_nothing() {
    let w = world();
    let url = w.daemon.url("fleet");
    let engine = Engine::new(EngineOptions::default());
    let holds = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut j = job(
        w.cache.path(),
        &url,
        "apps/web",
        "main",
        images(&[("web", "2.0.0")]),
    );
    let h = holds.clone();
    j.fence = automation::engine::Fence::new(move || h.load(std::sync::atomic::Ordering::SeqCst));
    let before = git_text(&w.bare, &["rev-parse", "main"]);
    let e = engine.update(j.clone()).await.unwrap_err();
    assert!(e.to_string().contains("leader Lease"), "{e}");
    assert_eq!(git_text(&w.bare, &["rev-parse", "main"]), before);
    holds.store(true, std::sync::atomic::Ordering::SeqCst);
    let done = engine.update(j).await.unwrap();
    assert!(done.pushed);
    assert_ne!(git_text(&w.bare, &["rev-parse", "main"]), before);
    assert!(git_text(&w.bare, &["show", "main:apps/web/deploy.yaml"]).contains("web:2.0.0"));
}

/// `observedSourceRevision` as Flux records it: after a push to the
/// checkout branch itself, the pushed commit on it; with a push branch of
/// its own, the checkout's commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_revision_follows_flux() {
    let w = world();
    let url = w.daemon.url("fleet");
    let engine = Engine::new(EngineOptions::default());
    let main = git_text(&w.bare, &["rev-parse", "main"]);
    let other = engine
        .update(job(
            w.cache.path(),
            &url,
            "apps/web",
            "auto",
            images(&[("web", "2.0.0")]),
        ))
        .await
        .unwrap();
    assert!(other.switched);
    assert_eq!(other.source_revision, format!("main@sha1:{main}"));
    assert!(
        other
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("Update ")),
        "{:?}",
        other.message
    );
    let same = engine
        .update(job(
            w.cache.path(),
            &url,
            "apps/web",
            "main",
            images(&[("web", "2.0.0")]),
        ))
        .await
        .unwrap();
    assert!(same.pushed && !same.switched);
    let pushed = git_text(&w.bare, &["rev-parse", "main"]);
    assert_ne!(pushed, main);
    assert_eq!(same.source_revision, format!("main@sha1:{pushed}"));
}
