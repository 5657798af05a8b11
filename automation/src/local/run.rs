//! `reconcile --local`: the whole automation over a checkout, without a
//! cluster. The image objects the checkout holds are the configuration; the
//! registries are scanned, the policies evaluated, and each automation's
//! markers rewritten, committed and pushed as its spec says.

use super::push::{self, PushOutcome};
use super::tree::{FileChanges, TreeReport, manifest_files, update_tree};
use crate::api::Provider;
use crate::api::plan;
use crate::api::{
    GitRepository, ImagePolicy, ImageRef, ImageRepository, ImageUpdateAutomation, Object, Problem,
    ResourceExt, Severity, load_str,
};
use crate::engine::{Engine, EngineError, EngineOptions, RegistryAccess};
use crate::git::forge::{self, ForgeKind, PullRequest};
use crate::git::{GitAuth, KeyFormat, SignError, Signer, github, sign};
use crate::registry::cloud::CloudLogins;
use crate::registry::{ClientOptions, Keychain, TagScan};
use crate::setters::Change;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to do with the changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Compute and show; write nothing.
    DryRun,
    /// Write the files.
    Write,
    /// Commit per automation.
    Commit,
    /// Commit and push.
    Push,
}

/// Progress of a run, for a terminal.
#[derive(Clone, Debug)]
pub enum Progress {
    Scanning {
        total: usize,
    },
    Scanned {
        done: usize,
        total: usize,
        image: String,
    },
}

pub struct RunOptions {
    pub dir: PathBuf,
    pub mode: Mode,
    /// Namespace of objects that name none.
    pub default_namespace: String,
    pub keychain: Keychain,
    pub registry: ClientOptions,
    /// Concurrent scans per registry host.
    pub per_host: usize,
    pub git_auth: GitAuth,
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
    /// Signs every commit (`--signing-key`), whatever the automations say.
    pub signer: Option<Arc<Signer>>,
    /// Secrets given as files, by namespace and name (values decoded): an
    /// automation's `spec.git.commit.signingKey.secretRef` is read here when
    /// there is no `signer`.
    pub secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// Logs in to every registry with this cloud identity (`--provider`),
    /// whatever the ImageRepositories' `spec.provider` say.
    pub provider: Option<Provider>,
    /// The cloud logins of the run (`spec.provider`, `--provider`).
    pub cloud: Arc<CloudLogins>,
    /// Pushes authenticate with this GitHub App's installation token
    /// (`--github-app-*`).
    pub github_app: Option<github::App>,
    /// Open or update a pull request after each push (`--pull-request`).
    pub pull_request: Option<PullRequestOptions>,
}

/// `--pull-request BASE`, `--forge`.
#[derive(Clone, Debug, Default)]
pub struct PullRequestOptions {
    /// The base branch; an automation's `imageauto.dev/pull-request`
    /// annotation when `None`.
    pub base: Option<String>,
    /// The forge; an automation's `imageauto.dev/forge` annotation, else the
    /// repository's host, when `None`.
    pub forge: Option<ForgeKind>,
}

/// One ImageRepository's scan.
#[derive(Debug)]
pub struct ScanOutcome {
    pub repository: String,
    pub image: String,
    pub result: Result<TagScan, EngineError>,
}

/// One ImagePolicy's result.
#[derive(Debug)]
pub struct PolicyOutcome {
    /// `ns:name`, as markers name it.
    pub policy: String,
    pub result: Result<ImageRef, EngineError>,
}

/// One automation's (or the marker-only run's) outcome.
#[derive(Debug, Default)]
pub struct AutomationOutcome {
    /// `ns/name`, or empty for the run without an ImageUpdateAutomation.
    pub name: String,
    /// Files changed (in the working tree, or in the commit).
    pub files: Vec<FileChanges>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub pushed: bool,
    pub error: Option<EngineError>,
    pub notes: Vec<String>,
    /// The pull request opened or updated after the push, or why not.
    pub pull_request: Option<Result<PullRequest, String>>,
}

impl AutomationOutcome {
    pub fn changes(&self) -> impl Iterator<Item = (&Path, &Change)> {
        self.files
            .iter()
            .flat_map(|f| f.changes.iter().map(move |c| (f.path.as_path(), c)))
    }
}

/// Everything a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// The checkout's top folder. Changed files are named relative to it;
    /// problems of the manifests read, relative to the folder given.
    pub root: PathBuf,
    pub problems: Vec<Problem>,
    /// Things skipped on purpose (suspended objects), for the user.
    pub notes: Vec<String>,
    pub scans: Vec<ScanOutcome>,
    pub policies: Vec<PolicyOutcome>,
    pub automations: Vec<AutomationOutcome>,
}

impl Report {
    /// A scan, a policy, a configuration error or an automation failed.
    pub fn failed(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
            || self.scans.iter().any(|s| s.result.is_err())
            || self.policies.iter().any(|p| p.result.is_err())
            || self
                .automations
                .iter()
                .any(|a| a.error.is_some() || matches!(a.pull_request, Some(Err(_))))
    }
}

/// Why a run could not start: the folder cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tree(#[from] super::tree::TreeError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The objects of the checkout.
#[derive(Default)]
struct Config {
    repositories: Vec<ImageRepository>,
    policies: Vec<ImagePolicy>,
    automations: Vec<ImageUpdateAutomation>,
    git_repositories: Vec<GitRepository>,
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    /// ImageUpdateAutomations that do not load (`ns/name`, or the file when
    /// the file does not parse): each stops its own automation, and their
    /// presence keeps the run from updating every marker in their place.
    broken_automations: Vec<String>,
}

fn ns_of(meta_ns: Option<String>, default: &str) -> String {
    meta_ns
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn load_config(
    dir: &Path,
    default_ns: &str,
    problems: &mut Vec<Problem>,
) -> Result<Config, RunError> {
    let listing = manifest_files(dir, dir)?;
    let mut c = Config::default();
    for (f, text) in read_candidates(&listing.files) {
        let shown = f.strip_prefix(dir).unwrap_or(&f).display().to_string();
        if text.contains("kind: Namespace") {
            // Namespace labels decide accessFrom.
            if let Ok(docs) = crate::yaml::parse(&text) {
                for d in docs {
                    if d.root.get("kind").and_then(|k| k.as_str()) == Some("Namespace")
                        && let Ok(v) = d.root.to_json()
                        && let Some(name) = v["metadata"]["name"].as_str()
                    {
                        let labels = v["metadata"]["labels"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .filter_map(|(k, v)| {
                                        v.as_str().map(|s| (k.clone(), s.to_string()))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        c.namespace_labels.insert(name.to_string(), labels);
                    }
                }
            }
        }
        if !holds_loaded_group(text.as_bytes()) {
            continue;
        }
        let loaded = load_str(&shown, &text);
        for r in loaded
            .rejected
            .iter()
            .filter(|r| r.kind == "ImageUpdateAutomation")
        {
            let ns = r
                .namespace
                .clone()
                .unwrap_or_else(|| default_ns.to_string());
            c.broken_automations.push(if r.name.is_empty() {
                format!("{}:{}", r.file, r.line)
            } else {
                format!("{ns}/{}", r.name)
            });
        }
        // A file that does not parse may hold an automation: the run must
        // not act as if there were none.
        if loaded.problems.iter().any(|p| p.rule == "yaml-syntax")
            && text.contains("ImageUpdateAutomation")
        {
            c.broken_automations.push(shown.clone());
        }
        problems.extend(loaded.problems);
        for l in loaded.objects {
            match l.object {
                Object::Repository(mut r) => {
                    r.metadata.namespace = Some(ns_of(r.namespace(), default_ns));
                    c.repositories.push(r);
                }
                Object::Policy(mut p) => {
                    p.metadata.namespace = Some(ns_of(p.namespace(), default_ns));
                    c.policies.push(p);
                }
                Object::Automation(mut a) => {
                    a.metadata.namespace = Some(ns_of(a.namespace(), default_ns));
                    c.automations.push(a);
                }
                Object::GitRepository(mut g) => {
                    g.metadata.namespace = Some(ns_of(g.metadata.namespace.clone(), default_ns));
                    c.git_repositories.push(g);
                }
            }
        }
    }
    c.repositories
        .sort_by_key(|r| (r.namespace(), r.name_any()));
    c.policies.sort_by_key(|r| (r.namespace(), r.name_any()));
    c.automations.sort_by_key(|r| (r.namespace(), r.name_any()));
    Ok(c)
}

/// Whether a file may hold one of the kinds the run loads: image objects
/// or a GitRepository. Their apiVersion names their group, so a file
/// without it (a HelmRelease, a Kustomization) is not parsed for them.
fn holds_loaded_group(bytes: &[u8]) -> bool {
    [crate::api::GROUP, crate::api::SOURCE_GROUP]
        .iter()
        .any(|g| memchr::memmem::find(bytes, g.as_bytes()).is_some())
}

/// The files that may hold configuration (Flux objects or Namespaces), read
/// by a few threads; the others are dropped after a byte search.
fn read_candidates(files: &[PathBuf]) -> Vec<(PathBuf, String)> {
    files
        .par_iter()
        .filter_map(|f| {
            let bytes = super::tree::read_regular(f, super::tree::MAX_FILE_BYTES).ok()?;
            let wanted = holds_loaded_group(&bytes)
                || memchr::memmem::find(&bytes, b"kind: Namespace").is_some();
            wanted
                .then(|| String::from_utf8(bytes).ok())
                .flatten()
                .map(|text| (f.clone(), text))
        })
        .collect()
}

/// How the run reaches a repository's registry: with a cloud login when
/// `--provider` or its `spec.provider` names a cloud (the process's own
/// identity: there is no cluster to ask for a ServiceAccount's), else with
/// the Docker config's credentials.
async fn access(repo: &ImageRepository, opts: &RunOptions) -> Result<RegistryAccess, EngineError> {
    let mut access = RegistryAccess {
        insecure: repo.spec.insecure,
        // The loader refused files whose durations do not parse.
        timeout: repo.spec.scan_timeout().ok(),
        ca_pem: opts.registry.ca_pem.clone(),
        client_cert_pem: opts.registry.client_cert_pem.clone(),
        client_key_pem: opts.registry.client_key_pem.clone(),
        proxy: opts.registry.proxy.clone(),
        keychain: opts.keychain.clone(),
    };
    let provider = opts.provider.unwrap_or(repo.spec.provider);
    if provider != Provider::Generic {
        let reference = crate::registry::Reference::parse(&repo.spec.image)
            .map_err(|e| EngineError::Unreadable(e.into()))?;
        let creds = opts
            .cloud
            .credentials(provider, &reference.registry, None, |_| async {
                Err::<String, String>("no cluster".to_string())
            })
            .await
            .map_err(|e| EngineError::Unreadable(e.into()))?;
        let mut keychain = Keychain::default();
        if let Some(c) = creds {
            keychain.insert(reference.api_host(), c);
        }
        access.keychain = keychain;
    }
    Ok(access)
}

async fn scan_all(
    engine: &Arc<Engine>,
    config: &Config,
    opts: &RunOptions,
    needed: &[(String, String)],
) -> Vec<ScanOutcome> {
    let total = needed.len();
    if let Some(p) = &opts.progress {
        p(Progress::Scanning { total });
    }
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (ns, name) in needed {
        let Some(repo) = find_repository(config, ns, name) else {
            continue;
        };
        let key = format!("{ns}/{name}");
        let image = repo.spec.image.clone();
        let exclusions = repo.spec.exclusion_list.clone();
        let access = access(repo, opts).await;
        let (engine, progress, done) = (engine.clone(), opts.progress.clone(), done.clone());
        tasks.spawn(async move {
            let result = match access {
                Ok(access) => engine.scan(&image, &exclusions, &access).await,
                Err(e) => Err(e),
            };
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if let Some(p) = &progress {
                p(Progress::Scanned {
                    done: n,
                    total,
                    image: image.clone(),
                });
            }
            ScanOutcome {
                repository: key,
                image,
                result,
            }
        });
    }
    let mut out = Vec::new();
    while let Some(t) = tasks.join_next().await {
        match t {
            Ok(o) => out.push(o),
            // A scan task panicked: its repository is missing from the
            // report, and the policies using it say "was not scanned".
            Err(e) => tracing::error!("a scan task failed: {e}"),
        }
    }
    out.sort_by(|a, b| a.repository.cmp(&b.repository));
    out
}

fn find_repository<'c>(config: &'c Config, ns: &str, name: &str) -> Option<&'c ImageRepository> {
    config
        .repositories
        .iter()
        .find(|r| r.namespace().as_deref() == Some(ns) && r.name_any() == name)
}

/// The repository `policy` refers to, when access is allowed.
fn repository_of<'c>(
    config: &'c Config,
    p: &ImagePolicy,
) -> Result<&'c ImageRepository, EngineError> {
    let pns = p.namespace().unwrap_or_default();
    let (rns, name) = plan::repository_of(p);
    let repo = find_repository(config, &rns, &name).ok_or_else(|| {
        EngineError::DependencyNotReady(format!(
            "ImageRepository {rns}/{name} is not in the checkout"
        ))
    })?;
    let labels = config
        .namespace_labels
        .get(&pns)
        .cloned()
        .unwrap_or_default();
    if !plan::access_allowed(repo, &pns, &labels, true) {
        return Err(EngineError::AccessDenied(format!(
            "ImageRepository {rns}/{name} does not allow policies from namespace {pns} (spec.accessFrom)"
        )));
    }
    Ok(repo)
}

async fn evaluate_policies(
    engine: &Engine,
    config: &Config,
    scans: &[ScanOutcome],
    opts: &RunOptions,
    notes: &mut Vec<String>,
) -> Vec<PolicyOutcome> {
    let mut out = Vec::new();
    for p in &config.policies {
        let key = format!("{}:{}", p.namespace().unwrap_or_default(), p.name_any());
        if p.spec.suspend {
            notes.push(format!(
                "ImagePolicy {key} is suspended: its markers are left as they are"
            ));
            continue;
        }
        if let Ok(r) = repository_of(config, p)
            && r.spec.suspend
        {
            notes.push(format!(
                "ImageRepository {}/{} is suspended: not scanned, so ImagePolicy {key} is not evaluated",
                r.namespace().unwrap_or_default(),
                r.name_any()
            ));
            continue;
        }
        let result = async {
            let repo = repository_of(config, p)?;
            let rkey = format!(
                "{}/{}",
                repo.namespace().unwrap_or_default(),
                repo.name_any()
            );
            let scan = scans.iter().find(|s| s.repository == rkey).ok_or_else(|| {
                EngineError::DependencyNotReady(format!("ImageRepository {rkey} was not scanned"))
            })?;
            let scan = scan.result.as_ref().map_err(|e| {
                EngineError::DependencyNotReady(format!(
                    "ImageRepository {rkey} could not be scanned: {e}"
                ))
            })?;
            engine
                .latest(
                    &p.spec,
                    &repo.spec.image,
                    &scan.tags,
                    &access(repo, opts).await?,
                    None,
                )
                .await
        }
        .await;
        out.push(PolicyOutcome {
            policy: key,
            result,
        });
    }
    out
}

/// Runs everything: scans, policies, then each automation (or, with none,
/// every marker under the folder), through a new [`Engine`].
pub async fn run(opts: &RunOptions) -> Result<Report, RunError> {
    let engine = Arc::new(Engine::new(EngineOptions {
        per_host: opts.per_host.max(1),
        blocking: 4,
        registry: opts.registry.clone(),
    }));
    run_with(&engine, opts).await
}

/// [`run`] on an engine of the caller's.
pub async fn run_with(engine: &Arc<Engine>, opts: &RunOptions) -> Result<Report, RunError> {
    let mut report = Report::default();
    let (dir, ns) = (opts.dir.clone(), opts.default_namespace.clone());
    let (config, problems) = engine
        .blocking(move || {
            let mut problems = Vec::new();
            load_config(&dir, &ns, &mut problems).map(|c| (c, problems))
        })
        .await??;
    report.problems = problems;
    let mut needed: Vec<(String, String)> = Vec::new();
    for p in config.policies.iter().filter(|p| !p.spec.suspend) {
        if let Ok(r) = repository_of(&config, p)
            && !r.spec.suspend
        {
            let k = (r.namespace().unwrap_or_default(), r.name_any());
            if !needed.contains(&k) {
                needed.push(k);
            }
        }
    }
    report.scans = scan_all(engine, &config, opts, &needed).await;
    report.policies =
        evaluate_policies(engine, &config, &report.scans, opts, &mut report.notes).await;
    let latest: BTreeMap<String, ImageRef> = report
        .policies
        .iter()
        .filter_map(|p| {
            p.result
                .as_ref()
                .ok()
                .map(|i| (p.policy.clone(), i.clone()))
        })
        .collect();
    let repo_root = git2::Repository::discover(&opts.dir)
        .ok()
        .and_then(|r| r.workdir().map(Path::to_path_buf))
        .unwrap_or_else(|| opts.dir.clone());
    report.root = repo_root.clone();
    for broken in &config.broken_automations {
        report.automations.push(AutomationOutcome {
            name: broken.clone(),
            error: Some(EngineError::Invalid(
                "this ImageUpdateAutomation does not load (see the errors above): nothing is written, committed or pushed for it".into(),
            )),
            ..AutomationOutcome::default()
        });
    }
    if config.automations.is_empty() && config.broken_automations.is_empty() {
        let mut outcome = AutomationOutcome::default();
        match opts.mode {
            Mode::DryRun | Mode::Write => {
                let (dir, write, images) =
                    (opts.dir.clone(), opts.mode == Mode::Write, latest.clone());
                // Named from the checkout's top, as the automations' are.
                let under = std::fs::canonicalize(&opts.dir)
                    .ok()
                    .zip(std::fs::canonicalize(&repo_root).ok())
                    .and_then(|(d, r)| d.strip_prefix(r).ok().map(Path::to_path_buf))
                    .unwrap_or_default();
                match engine
                    .blocking(move || update_tree(&dir, &dir, &images, write))
                    .await
                {
                    Ok(Ok(mut t)) => {
                        for f in &mut t.files {
                            f.path = under.join(&f.path);
                        }
                        for f in &mut t.skipped {
                            f.path = under.join(&f.path);
                        }
                        add_tree_report(&mut outcome, t)
                    }
                    Ok(Err(e)) => outcome.error = Some(EngineError::Source(e.to_string())),
                    Err(e) => outcome.error = Some(e),
                }
            }
            Mode::Commit | Mode::Push => {
                let mut plan =
                    push::Plan::without_automation(&repo_root, &opts.dir, opts.mode == Mode::Push);
                plan.signer = opts.signer.clone();
                apply_plan(engine, &mut outcome, plan, latest.clone(), opts, None).await;
            }
        }
        report.automations.push(outcome);
        return Ok(report);
    }
    let mut signers = HashMap::new();
    for a in &config.automations {
        let ns = a.namespace().unwrap_or_default();
        let mut outcome = AutomationOutcome {
            name: format!("{ns}/{}", a.name_any()),
            ..AutomationOutcome::default()
        };
        if a.spec.suspend {
            outcome.notes.push("suspended: skipped".into());
            report.automations.push(outcome);
            continue;
        }
        // The policies of its namespace that its selector picks.
        let images: BTreeMap<String, ImageRef> =
            match plan::selected_policies(&a.spec, &ns, &config.policies) {
                Ok(selected) => selected
                    .into_iter()
                    .filter_map(|p| {
                        let key = format!("{ns}:{}", p.name_any());
                        latest.get(&key).map(|i| (key, i.clone()))
                    })
                    .collect(),
                Err(e) => {
                    outcome.error = Some(e.into());
                    report.automations.push(outcome);
                    continue;
                }
            };
        let path = match plan::update_path(&a.spec) {
            Ok(p) => p,
            Err(e) => {
                outcome.error = Some(e.into());
                report.automations.push(outcome);
                continue;
            }
        };
        match opts.mode {
            Mode::DryRun | Mode::Write => {
                let (root, target, write) = (
                    repo_root.clone(),
                    repo_root.join(&path),
                    opts.mode == Mode::Write,
                );
                match engine
                    .blocking(move || update_tree(&root, &target, &images, write))
                    .await
                {
                    Ok(Ok(t)) => add_tree_report(&mut outcome, t),
                    Ok(Err(e)) => outcome.error = Some(EngineError::Source(e.to_string())),
                    Err(e) => outcome.error = Some(e),
                }
            }
            Mode::Commit | Mode::Push => {
                let source = config.git_repositories.iter().find(|g| {
                    g.metadata.name.as_deref() == Some(a.spec.source_ref.name.as_str())
                        && g.metadata.namespace.as_deref()
                            == Some(a.spec.source_ref.namespace.as_deref().unwrap_or(&ns))
                });
                let planned =
                    push::Plan::for_automation(&repo_root, a, source, opts.mode == Mode::Push);
                match planned {
                    Ok(mut plan) => match signer_for(engine, a, &ns, opts, &mut signers).await {
                        Ok(signer) => {
                            plan.signer = signer;
                            apply_plan(engine, &mut outcome, plan, images, opts, Some(a)).await;
                        }
                        Err(e) => outcome.error = Some(e),
                    },
                    Err(e) => outcome.error = Some(e),
                }
            }
        }
        report.automations.push(outcome);
    }
    Ok(report)
}

/// The Secrets of a manifest (YAML or JSON, one or more documents), by
/// namespace (`default_ns` when it names none) and name, with their values
/// decoded (`data` in base64, and `stringData`): what `--signing-secret`
/// gives. Documents of other kinds are skipped. Errors never quote a value.
#[allow(clippy::type_complexity)]
pub fn secrets_from_manifest(
    text: &str,
    default_ns: &str,
) -> Result<Vec<((String, String), BTreeMap<String, Vec<u8>>)>, EngineError> {
    let docs =
        crate::yaml::parse(text).map_err(|e| EngineError::Source(format!("not YAML: {e}")))?;
    let mut out = Vec::new();
    for d in docs {
        let v = d
            .root
            .to_json()
            .map_err(|e| EngineError::Source(format!("line {}: {e}", d.line)))?;
        if v["kind"].as_str() != Some("Secret") {
            continue;
        }
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        if name.is_empty() {
            return Err(EngineError::Source(format!(
                "line {}: a Secret without metadata.name",
                d.line
            )));
        }
        let ns = v["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(default_ns);
        let mut data = BTreeMap::new();
        if let Some(m) = v["data"].as_object() {
            for (k, value) in m {
                let decoded = value
                    .as_str()
                    .and_then(crate::git::decode_secret_value)
                    .ok_or_else(|| {
                        EngineError::Source(format!(
                            "Secret {ns}/{name}: data.{k} is not base64 (values in plain text go under stringData)"
                        ))
                    })?;
                data.insert(k.clone(), decoded);
            }
        }
        if let Some(m) = v["stringData"].as_object() {
            for (k, value) in m {
                let text = value.as_str().ok_or_else(|| {
                    EngineError::Source(format!(
                        "Secret {ns}/{name}: stringData.{k} is not a string"
                    ))
                })?;
                data.insert(k.clone(), text.as_bytes().to_vec());
            }
        }
        out.push(((ns.to_string(), name.to_string()), data));
    }
    Ok(out)
}

/// The Secrets' signers already read in this run, by namespace and name.
type Signers = HashMap<(String, String), Result<Arc<Signer>, SignError>>;

/// What signs an automation's commits: `--signing-key` when given, else the
/// Secret its `spec.git.commit.signingKey` names, from the Secrets given as
/// files. An automation that wants signed commits and has no usable key
/// gets an error: its commits are not made unsigned.
async fn signer_for(
    engine: &Engine,
    a: &ImageUpdateAutomation,
    ns: &str,
    opts: &RunOptions,
    cache: &mut Signers,
) -> Result<Option<Arc<Signer>>, EngineError> {
    if let Some(s) = &opts.signer {
        return Ok(Some(s.clone()));
    }
    let Some(key) = a
        .spec
        .git
        .as_ref()
        .and_then(|g| g.commit.signing_key.as_ref())
    else {
        return Ok(None);
    };
    let id = (ns.to_string(), key.secret_ref.name.clone());
    let shown = format!("Secret {ns}/{}", key.secret_ref.name);
    let Some(data) = opts.secrets.get(&id) else {
        return Err(EngineError::SigningKey(format!(
            "spec.git.commit.signingKey names {shown}: give its key with --signing-key FILE, or the Secret's manifest with --signing-secret FILE; the commits are not made unsigned"
        )));
    };
    let wanted = key.key_type.map(KeyFormat::from);
    let read = match cache.get(&id) {
        Some(r) => r.clone(),
        None => {
            let data = data.clone();
            let r = engine
                .blocking(move || sign::from_secret_data(&data, wanted, &shown))
                .await?
                .map(Arc::new);
            cache.insert(id, r.clone());
            r
        }
    };
    read.map(Some).map_err(EngineError::UnusableSigningKey)
}

fn add_tree_report(outcome: &mut AutomationOutcome, t: TreeReport) {
    for s in &t.skipped {
        outcome
            .notes
            .push(format!("{}: {}", s.path.display(), s.reason));
    }
    if !t.skipped.is_empty() {
        outcome.error = Some(EngineError::FilesNotUpdated(t.skipped.len()));
    }
    outcome.files = t.files;
}

async fn apply_plan(
    engine: &Engine,
    outcome: &mut AutomationOutcome,
    plan: push::Plan,
    images: BTreeMap<String, ImageRef>,
    opts: &RunOptions,
    automation: Option<&ImageUpdateAutomation>,
) {
    let mut auth = opts.git_auth.clone();
    // The base of a pull request, and its forge, when one is asked for.
    let wanted = pull_request_wanted(opts, automation);
    let wanted = match wanted {
        Ok(w) => w.filter(|_| plan.push),
        Err(e) => {
            outcome.error = Some(e);
            return;
        }
    };
    if plan.push
        && let Some(app) = &opts.github_app
    {
        match TOKENS.token(app).await {
            Ok(t) => {
                auth.username = Some(github::ACCESS_TOKEN_USERNAME.to_string());
                auth.password = Some(t.token);
                auth.bearer_token = None;
            }
            Err(e) => {
                outcome.error = Some(EngineError::GitHubApp(e));
                return;
            }
        }
    }
    let (plan2, images2, auth2) = (plan.clone(), images.clone(), auth.clone());
    let done = engine
        .blocking(move || push::execute(&plan2, &images2, &auth2))
        .await
        .and_then(|r| r);
    match done {
        Ok(PushOutcome {
            files,
            commit,
            branch,
            pushed,
            notes,
        }) => {
            outcome.files = files;
            outcome.commit = commit;
            outcome.branch = Some(branch.clone());
            outcome.pushed = pushed;
            outcome.notes.extend(notes);
            if let Some((base, kind)) = wanted
                && pushed
            {
                outcome.pull_request = Some(
                    open_pull_request(engine, &plan, &branch, &base, kind, &images, &auth, opts)
                        .await,
                );
            }
        }
        Err(e) => outcome.error = Some(e),
    }
}

/// The App tokens of this process (a run asks once per App).
static TOKENS: std::sync::LazyLock<github::Tokens> =
    std::sync::LazyLock::new(github::Tokens::default);

/// The base branch and forge of the pull request a push opens: from
/// `--pull-request` and `--forge`, else the automation's annotations.
fn pull_request_wanted(
    opts: &RunOptions,
    automation: Option<&ImageUpdateAutomation>,
) -> Result<Option<(String, Option<ForgeKind>)>, EngineError> {
    let note = |k: &str| automation.and_then(|a| a.annotations().get(k).cloned());
    let base = opts
        .pull_request
        .as_ref()
        .and_then(|p| p.base.clone())
        .or_else(|| note(forge::PULL_REQUEST_ANNOTATION));
    let Some(base) = base.map(|b| b.trim().trim_start_matches("refs/heads/").to_string()) else {
        return Ok(None);
    };
    if base.is_empty() {
        return Err(EngineError::Invalid(format!(
            "annotation {}: give the base branch the pull requests go into",
            forge::PULL_REQUEST_ANNOTATION
        )));
    }
    let kind = match opts.pull_request.as_ref().and_then(|p| p.forge) {
        Some(k) => Some(k),
        None => match note(forge::FORGE_ANNOTATION) {
            Some(f) => Some(ForgeKind::parse(&f).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "annotation {}: '{f}' is not github, gitlab or gitea",
                    forge::FORGE_ANNOTATION
                ))
            })?),
            None => None,
        },
    };
    Ok(Some((base, kind)))
}

/// The token for the forge's API: the App's installation token, else
/// `$GIT_PASSWORD` (`--git-username`), else what git's credential helpers
/// give for the remote's URL.
fn local_forge_token(auth: &GitAuth, url: &str) -> Option<forge::ForgeToken> {
    if let Some(p) = auth.password.as_ref().filter(|p| !p.is_empty()) {
        return Some(forge::ForgeToken::Token(p.clone()));
    }
    if let Some(b) = auth.bearer_token.as_ref().filter(|b| !b.is_empty()) {
        return Some(forge::ForgeToken::Bearer(b.clone()));
    }
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return None;
    }
    let config = git2::Config::open_default().ok()?;
    git2::CredentialHelper::new(url)
        .config(&config)
        .execute()
        .map(|(_, password)| forge::ForgeToken::Token(password))
}

/// Opens or updates the pull request from `head` into `base` on the forge
/// of the checkout's remote.
#[allow(clippy::too_many_arguments)]
async fn open_pull_request(
    engine: &Engine,
    plan: &push::Plan,
    head: &str,
    base: &str,
    kind: Option<ForgeKind>,
    images: &BTreeMap<String, ImageRef>,
    auth: &GitAuth,
    opts: &RunOptions,
) -> Result<PullRequest, String> {
    let (root, remote, path) = (
        plan.repo_root.clone(),
        plan.remote.clone(),
        plan.path.clone(),
    );
    let (h, b, imgs) = (head.to_string(), base.to_string(), images.clone());
    let read = engine
        .blocking(move || {
            let repo = git2::Repository::open(&root).map_err(|e| e.message().to_string())?;
            let url = repo
                .find_remote(&remote)
                .ok()
                .and_then(|r| r.url().ok().map(str::to_string))
                .ok_or_else(|| format!("the checkout has no remote {remote:?}"))?;
            let facts =
                crate::engine::update::pull_request_facts(&repo, &remote, &h, &b, &path, &imgs);
            Ok::<_, String>((url, facts))
        })
        .await
        .map_err(|e| e.to_string())?;
    let (url, (message, changes)) = read?;
    let repo = forge::locate(
        &url,
        kind,
        opts.github_app.as_ref().map(|a| a.base_url.as_str()),
        "give --forge github, gitlab or gitea",
    )
    .map_err(|e| e.to_string())?;
    let (u2, a2) = (url.clone(), auth.clone());
    let token = engine
        .blocking(move || local_forge_token(&a2, &u2))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no token for {}'s API: give the GitHub App (--github-app-*), or --git-username with the token in $GIT_PASSWORD, or a git credential helper that knows {}",
                repo.kind,
                crate::git::display_url(&url)
            )
        })?;
    let text = forge::pull_request_text(message.as_deref().unwrap_or(""), &changes);
    let http = github::http_client(auth.ca_pem.as_deref())?;
    forge::open_or_update(&http, &repo, &token, head, base, &text)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_from_manifests() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: sign, namespace: flux-system}\ndata:\n  git.asc: aGVsbG8=\nstringData:\n  passphrase: pw\n---\nkind: ConfigMap\nmetadata: {name: x}\n---\n{\"kind\": \"Secret\", \"metadata\": {\"name\": \"other\"}, \"stringData\": {\"git.ssh\": \"k\"}}\n";
        let got = secrets_from_manifest(text, "default").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, ("flux-system".to_string(), "sign".to_string()));
        assert_eq!(got[0].1["git.asc"], b"hello");
        assert_eq!(got[0].1["passphrase"], b"pw");
        assert_eq!(got[1].0, ("default".to_string(), "other".to_string()));
        let e = secrets_from_manifest(
            "kind: Secret\nmetadata: {name: s}\ndata: {git.asc: 'not base64 s3cr3t!'}\n",
            "default",
        )
        .unwrap_err();
        assert!(e.to_string().contains("data.git.asc is not base64"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
