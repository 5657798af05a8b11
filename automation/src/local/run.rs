//! `reconcile --local`: the whole automation over a checkout, without a
//! cluster. The image objects the checkout holds are the configuration; the
//! registries are scanned, the policies evaluated, and each automation's
//! markers rewritten, committed and pushed as its spec says.

use super::push::{self, PushOutcome};
use super::tree::{FileChanges, TreeReport, manifest_files, update_tree};
use crate::api::{
    DigestReflectionPolicy, GitRepository, ImagePolicy, ImageRef, ImageRepository,
    ImageUpdateAutomation, Object, Problem, ResourceExt, Severity, compile_policy, load_str,
};
use crate::git::GitAuth;
use crate::policy::Exclusions;
use crate::registry::{Client, ClientOptions, Keychain, Reference, ScanResult};
use crate::setters::Change;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

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

pub struct Options {
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
}

/// One ImageRepository's scan.
#[derive(Clone, Debug)]
pub struct ScanOutcome {
    pub repository: String,
    pub image: String,
    pub result: Result<ScanResult, String>,
}

/// One ImagePolicy's result.
#[derive(Clone, Debug)]
pub struct PolicyOutcome {
    /// `ns:name`, as markers name it.
    pub policy: String,
    pub result: Result<ImageRef, String>,
}

/// One automation's (or the marker-only run's) outcome.
#[derive(Clone, Debug, Default)]
pub struct AutomationOutcome {
    /// `ns/name`, or empty for the run without an ImageUpdateAutomation.
    pub name: String,
    /// Files changed (in the working tree, or in the commit).
    pub files: Vec<FileChanges>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub pushed: bool,
    pub error: Option<String>,
    pub notes: Vec<String>,
}

impl AutomationOutcome {
    pub fn changes(&self) -> impl Iterator<Item = (&Path, &Change)> {
        self.files
            .iter()
            .flat_map(|f| f.changes.iter().map(move |c| (f.path.as_path(), c)))
    }
}

/// Everything a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
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
            || self.automations.iter().any(|a| a.error.is_some())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Tree(#[from] super::tree::TreeError),
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
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
        if !text.contains("toolkit.fluxcd.io") {
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

/// The files that may hold configuration (Flux objects or Namespaces), read
/// by a few threads; the others are dropped after a byte search.
fn read_candidates(files: &[PathBuf]) -> Vec<(PathBuf, String)> {
    super::par::map(files, |f| {
        let bytes = super::tree::read_regular(f, super::tree::MAX_FILE_BYTES).ok()?;
        let wanted = memchr::memmem::find(&bytes, b"toolkit.fluxcd.io").is_some()
            || memchr::memmem::find(&bytes, b"kind: Namespace").is_some();
        wanted
            .then(|| String::from_utf8(bytes).ok())
            .flatten()
            .map(|text| (f.clone(), text))
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Whether `labels` satisfy a Kubernetes label selector.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &selector.match_labels
        && !ml.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

async fn scan_all(
    config: &Config,
    opts: &Options,
    needed: &[(String, String)],
) -> Vec<ScanOutcome> {
    let total = needed.len();
    if let Some(p) = &opts.progress {
        p(Progress::Scanning { total });
    }
    let mut per_host: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let mut clients: HashMap<(bool, Option<std::time::Duration>), Arc<Client>> = HashMap::new();
    let mut tasks = Vec::new();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for (ns, name) in needed {
        let Some(repo) = config
            .repositories
            .iter()
            .find(|r| r.namespace().as_deref() == Some(ns.as_str()) && r.name_any() == *name)
        else {
            continue;
        };
        let key = format!("{ns}/{name}");
        let image = repo.spec.image.clone();
        let reference = match Reference::parse(&image) {
            Ok(r) => r,
            Err(e) => {
                let (k, i) = (key.clone(), image.clone());
                tasks.push((
                    k,
                    i,
                    tokio::spawn(async move {
                        ScanOutcome {
                            repository: key,
                            image,
                            result: Err(e.to_string()),
                        }
                    }),
                ));
                continue;
            }
        };
        let sem = per_host
            .entry(reference.registry.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(opts.per_host.max(1))))
            .clone();
        let timeout = scan_timeout(repo);
        let client = match clients.entry((repo.spec.insecure, timeout)) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.get().clone()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let mut ropts = opts.registry.clone();
                ropts.insecure = repo.spec.insecure;
                if let Some(t) = timeout {
                    ropts.timeout = t;
                }
                Client::new(ropts).map(|c| v.insert(Arc::new(c)).clone())
            }
        };
        let exclusion = repo.spec.exclusion_list.clone();
        let keychain = opts.keychain.clone();
        let progress = opts.progress.clone();
        let done = done.clone();
        let (k, i) = (key.clone(), image.clone());
        tasks.push((
            k,
            i,
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let result = async {
                    let ex = Exclusions::new(&exclusion).map_err(|e| e.to_string())?;
                    let client = client.map_err(|e| e.to_string())?;
                    let tags = client
                        .list_tags(&reference, &keychain)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(ScanResult::new(tags, &ex))
                }
                .await;
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
            }),
        ));
    }
    let mut out = Vec::new();
    for (key, image, t) in tasks {
        match t.await {
            Ok(o) => out.push(o),
            Err(e) => out.push(ScanOutcome {
                repository: key,
                image,
                result: Err(format!("scan task failed: {e}")),
            }),
        }
    }
    out.sort_by(|a, b| a.repository.cmp(&b.repository));
    out
}

/// A scan's timeout: `spec.timeout`, else the interval (as Flux does).
fn scan_timeout(repo: &ImageRepository) -> Option<std::time::Duration> {
    repo.spec
        .timeout
        .as_deref()
        .and_then(crate::api::parse_duration)
        .or_else(|| crate::api::parse_duration(&repo.spec.interval))
        .map(|t| t.max(std::time::Duration::from_secs(1)))
}

/// The repository `policy` refers to, when access is allowed.
fn repository_of<'c>(config: &'c Config, p: &ImagePolicy) -> Result<&'c ImageRepository, String> {
    let pns = p.namespace().unwrap_or_default();
    let r = &p.spec.image_repository_ref;
    let rns = r
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| pns.clone());
    let repo = config
        .repositories
        .iter()
        .find(|x| x.namespace().as_deref() == Some(rns.as_str()) && x.name_any() == r.name)
        .ok_or_else(|| format!("ImageRepository {rns}/{} is not in the checkout", r.name))?;
    if rns != pns {
        let labels = config
            .namespace_labels
            .get(&pns)
            .cloned()
            .unwrap_or_default();
        let allowed = repo
            .spec
            .access_from
            .as_ref()
            .is_some_and(|a| a.allows(&labels));
        if !allowed {
            return Err(format!(
                "ImageRepository {rns}/{} does not allow policies from namespace {pns} (spec.accessFrom)",
                r.name
            ));
        }
    }
    Ok(repo)
}

async fn evaluate_policies(
    config: &Config,
    scans: &[ScanOutcome],
    opts: &Options,
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
            let scan = scans
                .iter()
                .find(|s| s.repository == rkey)
                .ok_or_else(|| format!("ImageRepository {rkey} was not scanned"))?;
            let scan = scan
                .result
                .as_ref()
                .map_err(|e| format!("ImageRepository {rkey} could not be scanned: {e}"))?;
            let compiled = compile_policy(&p.spec).map_err(|errs| {
                errs.iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            let tag = compiled.select(&scan.tags).map_err(|e| e.to_string())?;
            let mut image = ImageRef {
                name: repo.spec.image.clone(),
                tag: tag.to_string(),
                digest: None,
            };
            if p.spec.digest_reflection_policy != DigestReflectionPolicy::Never {
                let reference = Reference::parse(&format!("{}:{tag}", repo.spec.image))
                    .map_err(|e| e.to_string())?;
                let mut ropts = opts.registry.clone();
                ropts.insecure = repo.spec.insecure;
                if let Some(t) = scan_timeout(repo) {
                    ropts.timeout = t;
                }
                let client = Client::new(ropts).map_err(|e| e.to_string())?;
                image.digest = Some(
                    client
                        .digest(&reference, &opts.keychain)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            Ok(image)
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
/// every marker under the folder).
pub async fn run(opts: &Options) -> Result<Report, RunError> {
    let mut report = Report::default();
    let config = load_config(&opts.dir, &opts.default_namespace, &mut report.problems)?;
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
    report.scans = scan_all(&config, opts, &needed).await;
    report.policies = evaluate_policies(&config, &report.scans, opts, &mut report.notes).await;
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
    for broken in &config.broken_automations {
        report.automations.push(AutomationOutcome {
            name: broken.clone(),
            error: Some(
                "this ImageUpdateAutomation does not load (see the errors above): nothing is written, committed or pushed for it".into(),
            ),
            ..AutomationOutcome::default()
        });
    }
    if config.automations.is_empty() && config.broken_automations.is_empty() {
        let mut outcome = AutomationOutcome::default();
        match opts.mode {
            Mode::DryRun | Mode::Write => {
                match update_tree(&opts.dir, &opts.dir, &latest, opts.mode == Mode::Write) {
                    Ok(t) => absorb(&mut outcome, t),
                    Err(e) => outcome.error = Some(e.to_string()),
                }
            }
            Mode::Commit | Mode::Push => {
                let plan =
                    push::Plan::without_automation(&repo_root, &opts.dir, opts.mode == Mode::Push);
                apply_plan(&mut outcome, plan, &latest, opts);
            }
        }
        report.automations.push(outcome);
        return Ok(report);
    }
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
        let images: BTreeMap<String, ImageRef> = config
            .policies
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
            .filter(|p| {
                a.spec
                    .policy_selector
                    .as_ref()
                    .is_none_or(|s| selector_matches(s, &p.labels().clone()))
            })
            .filter_map(|p| {
                let key = format!("{ns}:{}", p.name_any());
                latest.get(&key).map(|i| (key, i.clone()))
            })
            .collect();
        let path = a
            .spec
            .update
            .as_ref()
            .and_then(|u| u.path.clone())
            .unwrap_or_default();
        let path = match crate::api::validate::normalize_update_path(&path) {
            Ok(p) => p,
            Err(e) => {
                outcome.error = Some(format!("spec.update.path: {e}"));
                report.automations.push(outcome);
                continue;
            }
        };
        let target = repo_root.join(&path);
        match opts.mode {
            Mode::DryRun | Mode::Write => {
                match update_tree(&repo_root, &target, &images, opts.mode == Mode::Write) {
                    Ok(t) => absorb(&mut outcome, t),
                    Err(e) => outcome.error = Some(e.to_string()),
                }
            }
            Mode::Commit | Mode::Push => {
                let source = config.git_repositories.iter().find(|g| {
                    g.metadata.name.as_deref() == Some(a.spec.source_ref.name.as_str())
                        && g.metadata.namespace.as_deref()
                            == Some(a.spec.source_ref.namespace.as_deref().unwrap_or(&ns))
                });
                match push::Plan::for_automation(
                    &repo_root,
                    a,
                    source,
                    &path,
                    opts.mode == Mode::Push,
                ) {
                    Ok(plan) => apply_plan(&mut outcome, plan, &images, opts),
                    Err(e) => outcome.error = Some(e),
                }
            }
        }
        report.automations.push(outcome);
    }
    Ok(report)
}

fn absorb(outcome: &mut AutomationOutcome, t: TreeReport) {
    for s in &t.skipped {
        outcome
            .notes
            .push(format!("{}: {}", s.path.display(), s.reason));
    }
    if !t.skipped.is_empty() {
        outcome.error = Some(format!("{} file(s) could not be updated", t.skipped.len()));
    }
    outcome.files = t.files;
}

fn apply_plan(
    outcome: &mut AutomationOutcome,
    plan: push::Plan,
    images: &BTreeMap<String, ImageRef>,
    opts: &Options,
) {
    match push::execute(&plan, images, &opts.git_auth) {
        Ok(PushOutcome {
            files,
            commit,
            branch,
            pushed,
            notes,
        }) => {
            outcome.files = files;
            outcome.commit = commit;
            outcome.branch = Some(branch);
            outcome.pushed = pushed;
            outcome.notes.extend(notes);
        }
        Err(e) => outcome.error = Some(e),
    }
}
