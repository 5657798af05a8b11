//! The controller's shape, for `bench/engine-concurrency.sh`: N automations
//! on one Git repository, reconciled at once through one engine (each its
//! own folder `apps/app-I` and push branch `auto-I`). Prints the total time.
//!
//!     concurrent_automations URL CACHE_DIR N

use automation::api::GitRepositoryRef;
use automation::api::ImageRef;
use automation::api::plan::PushTarget;
use automation::engine::automation::AutomationJob;
use automation::engine::update::CommitRequest;
use automation::engine::{Engine, EngineOptions};
use automation::git::{GitAuth, Signature};
use std::collections::BTreeMap;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, cache, n] = args.as_slice() else {
        return Err("usage: concurrent_automations URL CACHE_DIR N".into());
    };
    let n: usize = n.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let engine = Arc::new(Engine::new(EngineOptions::default()));
    let started = std::time::Instant::now();
    let results = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let images: BTreeMap<String, ImageRef> = [(
                format!("apps:app-{i}"),
                ImageRef {
                    name: format!("registry.example.com/app-{i}"),
                    tag: "2.0.0".into(),
                    digest: None,
                },
            )]
            .into();
            let job = AutomationJob {
                cache_dir: cache.into(),
                url: url.clone(),
                auth: GitAuth::default(),
                target: PushTarget {
                    checkout: Some(GitRepositoryRef {
                        branch: Some("main".into()),
                        ..GitRepositoryRef::default()
                    }),
                    branch: format!("auto-{i}"),
                    refspec: None,
                    options: BTreeMap::new(),
                },
                commit: CommitRequest {
                    path: format!("apps/app-{i}"),
                    author: Signature {
                        name: "bench".into(),
                        email: "bench@example.com".into(),
                    },
                    template: None,
                    values: BTreeMap::new(),
                    automation: ("apps".into(), format!("app-{i}")),
                    signer: None,
                },
                images,
                dry_run: false,
                index_markers: false,
                fence: Default::default(),
            };
            let engine = engine.clone();
            tasks.spawn(async move { engine.update(job).await });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r);
        }
        out
    });
    let mut files = 0;
    for r in results {
        let r = r??;
        if !r.pushed {
            return Err("an automation did not push".into());
        }
        files += r.files.len();
    }
    println!(
        "{n} automations, {files} files changed and pushed, in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
