//! `kubectl imageauto reconcile --local [DIR] [--dry-run|--commit|--push]`

use super::Exit;
use crate::cmd::tags::keychain;
use crate::output::{TextOrJson, printable, table};
use crate::output::{out, outln};
use anyhow::{Context, Result, bail};
use automation::git::forge::ForgeKind;
use automation::git::github::{self, App, AppKeyNames, AppSettings};
use automation::git::{GitAuth, SignError, Signer};
use automation::local::run::{Mode, Progress, PullRequestOptions, Report, RunOptions, run};
use automation::registry::ClientOptions;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run on a checkout, without a cluster: the image objects under DIR are
    /// the configuration
    #[arg(long)]
    local: bool,
    /// In a cluster: KIND NAME (repository, policy or update); with --local:
    /// the checkout, or a folder of it (default: the current folder)
    #[arg(value_name = "KIND NAME | DIR")]
    targets: Vec<String>,
    /// In a cluster: how long to wait for the controller
    #[arg(long, default_value = "2m", value_parser = super::duration_arg)]
    timeout: std::time::Duration,
    /// In a cluster: reconcile an update's GitRepository first
    #[arg(long)]
    with_source: bool,
    /// In a cluster: the kubeconfig (default: $KUBECONFIG, then ~/.kube/config)
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// In a cluster: the kubeconfig context
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Show what would change (a unified diff); write nothing
    #[arg(long, conflicts_with_all = ["commit", "push"])]
    dry_run: bool,
    /// Commit each automation's changes with its author and message template
    #[arg(long, conflicts_with = "push")]
    commit: bool,
    /// Commit and push to each automation's push branch on the checkout's remote
    #[arg(long)]
    push: bool,
    /// The object's namespace (in a cluster); with --local, the namespace of
    /// objects that name none (default: default)
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Docker config.json with registry credentials (default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json)
    #[arg(long, value_name = "FILE")]
    docker_config: Option<PathBuf>,
    /// Log in to the registries with this cloud identity (ECR, Artifact Registry, ACR) instead of a Docker config, whatever the ImageRepositories' spec.provider say
    #[arg(long, value_enum, value_name = "PROVIDER")]
    provider: Option<crate::cmd::tags::CloudProvider>,
    /// A PEM CA bundle trusted for registries besides the system roots
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Concurrent scans per registry host
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    scans_per_registry: u16,
    /// SSH private key for Git (default: ssh-agent, ~/.ssh/id_*)
    #[arg(long, value_name = "FILE")]
    git_ssh_key: Option<PathBuf>,
    /// known_hosts for Git over SSH (default: ~/.ssh/known_hosts); host keys are always verified
    #[arg(long, value_name = "FILE")]
    git_known_hosts: Option<PathBuf>,
    /// User name for Git over HTTPS (the password from $GIT_PASSWORD; default: git's credential helpers)
    #[arg(long)]
    git_username: Option<String>,
    /// A PEM CA for Git over HTTPS
    #[arg(long, value_name = "FILE")]
    git_ca_file: Option<PathBuf>,
    /// Sign the commits with this private key: an armored OpenPGP secret key
    /// or an OpenSSH private key, recognised from the file; its passphrase
    /// from $IMAGEAUTO_SIGNING_PASSPHRASE. Takes the place of any
    /// automation's spec.git.commit.signingKey
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// A Kubernetes Secret manifest (YAML or JSON; data or stringData) holding
    /// the key that an automation's spec.git.commit.signingKey.secretRef
    /// names: git.asc (OpenPGP) or git.ssh (SSH), and passphrase. Repeatable
    #[arg(long, value_name = "FILE")]
    signing_secret: Vec<PathBuf>,
    /// After each push, open a pull request from the push branch into BASE on
    /// the remote's forge, or update the one already open (needs --push)
    #[arg(long, value_name = "BASE", requires = "push")]
    pull_request: Option<String>,
    /// The forge of the remote, for --pull-request: github, gitlab or gitea
    /// (default: from the host: github.com, gitlab.com, codeberg.org)
    #[arg(long, value_name = "FORGE", value_parser = ["github", "gitlab", "gitea", "forgejo"])]
    forge: Option<String>,
    /// Push with a GitHub App's installation token: the App's numeric id
    #[arg(long, value_name = "ID", conflicts_with = "github_app_secret")]
    github_app_id: Option<String>,
    /// The App's installation id (or --github-app-installation-owner)
    #[arg(long, value_name = "ID")]
    github_app_installation_id: Option<String>,
    /// The account the App is installed on (or --github-app-installation-id)
    #[arg(long, value_name = "OWNER")]
    github_app_installation_owner: Option<String>,
    /// The App's private key (the .pem file GitHub generated)
    #[arg(long, value_name = "FILE")]
    github_app_private_key: Option<PathBuf>,
    /// GitHub Enterprise's API root (default: https://api.github.com)
    #[arg(long, value_name = "URL")]
    github_app_base_url: Option<String>,
    /// A Secret manifest (YAML or JSON) with the GitHub App's keys, as `flux
    /// create secret githubapp` writes it: githubAppID,
    /// githubAppInstallationID or githubAppInstallationOwner,
    /// githubAppPrivateKey, githubAppBaseURL
    #[arg(long, value_name = "FILE")]
    github_app_secret: Option<PathBuf>,
    /// Abandon a Git fetch or push that makes no progress for this long (1s to 24h)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = super::duration_arg)]
    git_timeout: std::time::Duration,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: TextOrJson,
}

fn read_text(p: &Option<PathBuf>) -> Result<Option<String>> {
    p.as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()
}

/// The environment variable holding `--signing-key`'s passphrase.
const PASSPHRASE_VAR: &str = "IMAGEAUTO_SIGNING_PASSPHRASE";

/// `--signing-key FILE`, unlocked with `$IMAGEAUTO_SIGNING_PASSPHRASE`: a
/// key that cannot sign stops the run before anything is written.
fn signing_key(path: &PathBuf) -> Result<Arc<Signer>> {
    let key = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let passphrase = std::env::var_os(PASSPHRASE_VAR).map(|p| p.into_encoded_bytes());
    match Signer::from_key(&key, passphrase.as_deref()) {
        Ok(s) => Ok(Arc::new(s)),
        Err(e) => {
            let hint = match e {
                SignError::PassphraseNeeded { .. } => format!(": set ${PASSPHRASE_VAR}"),
                SignError::WrongPassphrase { .. } => format!(" (${PASSPHRASE_VAR})"),
                _ => String::new(),
            };
            bail!("--signing-key {}: {e}{hint}", path.display())
        }
    }
}

/// The flags' names for the App's settings.
const APP_FLAGS: AppKeyNames = AppKeyNames {
    app_id: "--github-app-id",
    installation_id: "--github-app-installation-id",
    installation_owner: "--github-app-installation-owner",
    private_key: "--github-app-private-key",
    base_url: "--github-app-base-url",
};

/// The GitHub App of `--github-app-*` or `--github-app-secret`, checked.
fn github_app(args: &Args, default_namespace: &str) -> Result<Option<App>> {
    if let Some(f) = &args.github_app_secret {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let found = automation::local::run::secrets_from_manifest(&text, default_namespace)
            .with_context(|| format!("--github-app-secret {}", f.display()))?;
        let [((ns, name), data)] = found.as_slice() else {
            bail!(
                "--github-app-secret {}: give a file with one Secret (it holds {})",
                f.display(),
                found.len()
            );
        };
        if !github::has_app_data(data) {
            bail!(
                "--github-app-secret {}: Secret {ns}/{name} has no GitHub App keys (githubAppID, githubAppInstallationID or githubAppInstallationOwner, githubAppPrivateKey)",
                f.display()
            );
        }
        let shown = format!("--github-app-secret {}: Secret {ns}/{name}", f.display());
        let settings = AppSettings::from_secret_data(data);
        return Ok(Some(App::new(&settings, &github::SECRET_KEYS, &shown)?));
    }
    let any = args.github_app_id.is_some()
        || args.github_app_installation_id.is_some()
        || args.github_app_installation_owner.is_some()
        || args.github_app_private_key.is_some()
        || args.github_app_base_url.is_some();
    if !any {
        return Ok(None);
    }
    let key = args
        .github_app_private_key
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let settings = AppSettings {
        app_id: args.github_app_id.clone(),
        installation_id: args.github_app_installation_id.clone(),
        installation_owner: args.github_app_installation_owner.clone(),
        private_key: key,
        base_url: args.github_app_base_url.clone(),
        ca_pem: args
            .git_ca_file
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
            .transpose()?,
    };
    let origin = match &args.github_app_private_key {
        Some(p) => format!("GitHub App ({})", p.display()),
        None => "GitHub App".to_string(),
    };
    Ok(Some(App::new(&settings, &APP_FLAGS, &origin)?))
}

pub fn run_cmd(args: Args) -> Result<Exit> {
    if !args.local {
        if args.targets.is_empty() {
            super::usage_error(
                "reconcile",
                "give KIND NAME (reconcile repository|policy|update NAME), or --local [DIR] to run on a checkout".into(),
            );
        }
        if let [dir] = args.targets.as_slice()
            && Path::new(dir).is_dir()
        {
            super::usage_error(
                "reconcile",
                format!(
                    "{dir} is a folder: reconcile --local {dir} runs on a checkout; in a cluster, give KIND NAME"
                ),
            );
        }
        let words = crate::cmd::cluster::Words::of(&args.targets);
        let (kind, name) = words.kind_and_name("reconcile", "repository|policy|update");
        let (kind, name) = (&kind, &name);
        return crate::cmd::cluster::reconcile(
            kind,
            name,
            crate::cmd::cluster::ReconcileTarget {
                timeout: args.timeout,
                with_source: args.with_source,
                kube: crate::connect::KubeArgs {
                    conn: crate::connect::ConnArgs {
                        kubeconfig: args.kubeconfig.clone(),
                        context: args.context.clone(),
                    },
                    namespace: args.namespace.clone(),
                },
            },
        );
    }
    if args.targets.len() > 1 {
        super::usage_error(
            "reconcile",
            format!("--local takes one folder, not {}", args.targets.join(" ")),
        );
    }
    let dir = args
        .targets
        .first()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mode = if args.dry_run {
        Mode::DryRun
    } else if args.push {
        Mode::Push
    } else if args.commit {
        Mode::Commit
    } else {
        Mode::Write
    };
    let registry = ClientOptions {
        ca_pem: args
            .ca_file
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
            .transpose()?,
        ..ClientOptions::default()
    };
    if args.git_username.is_some() != std::env::var_os("GIT_PASSWORD").is_some() {
        bail!(
            "--git-username and $GIT_PASSWORD go together: give both, or neither to use git's credential helpers"
        );
    }
    let git_auth = GitAuth {
        username: args.git_username.clone(),
        password: std::env::var("GIT_PASSWORD").ok(),
        identity: read_text(&args.git_ssh_key)?,
        known_hosts: read_text(&args.git_known_hosts)?,
        ca_pem: args
            .git_ca_file
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
            .transpose()?,
        use_environment: true,
        idle_timeout: Some(args.git_timeout),
        ..GitAuth::default()
    };
    let default_namespace = args.namespace.clone().unwrap_or_else(|| "default".into());
    let signer = args.signing_key.as_ref().map(signing_key).transpose()?;
    let mut secrets = std::collections::BTreeMap::new();
    for f in &args.signing_secret {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let found = automation::local::run::secrets_from_manifest(&text, &default_namespace)
            .with_context(|| format!("--signing-secret {}", f.display()))?;
        if found.is_empty() {
            bail!("--signing-secret {}: holds no Secret", f.display());
        }
        secrets.extend(found);
    }
    let github_app = github_app(&args, &default_namespace)?;
    let pull_request =
        (args.pull_request.is_some() || args.forge.is_some()).then(|| PullRequestOptions {
            base: args.pull_request.clone(),
            forge: args.forge.as_deref().and_then(ForgeKind::parse),
        });
    let tty = std::io::stderr().is_terminal();
    let progress: Option<Arc<dyn Fn(Progress) + Send + Sync>> = tty.then(|| {
        Arc::new(|p: Progress| match p {
            Progress::Scanning { total } => {
                eprint!("\rscanning {total} image repositories…");
            }
            Progress::Scanned { done, total, image } => {
                eprint!("\r\x1b[2Kscanned {done}/{total}: {image}");
                if done == total {
                    eprint!("\r\x1b[2K");
                }
                let _ = std::io::stderr().flush();
            }
        }) as Arc<dyn Fn(Progress) + Send + Sync>
    });
    let opts = RunOptions {
        dir,
        mode,
        default_namespace,
        keychain: keychain(args.docker_config.as_ref())?,
        registry,
        per_host: usize::from(args.scans_per_registry),
        git_auth,
        progress,
        signer,
        secrets,
        provider: args.provider.map(Into::into),
        cloud: Arc::new(automation::registry::cloud::CloudLogins::new(false)),
        github_app,
        pull_request,
    };
    automation::registry::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let mut report = rt.block_on(run(&opts))?;
    shown_from_here(&mut report, &opts.dir);
    match args.output {
        TextOrJson::Json => print_json(&report),
        TextOrJson::Text => print_text(&report, mode),
    }
    Ok(if report.failed() {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// Names files as the user reaches them from the working directory, the
/// rule of every command (lint, set): the folder given, joined with the
/// path under it (`.` adds nothing). A changed file outside that folder
/// (an automation's `update.path` elsewhere in the checkout) is named in
/// full.
fn shown_from_here(report: &mut Report, dir: &Path) {
    let here = dir == Path::new(".");
    let join = |p: &Path| if here { p.to_path_buf() } else { dir.join(p) };
    for p in &mut report.problems {
        p.file = join(Path::new(&p.file)).display().to_string();
    }
    let (Ok(dir_abs), Ok(root)) = (
        std::fs::canonicalize(dir),
        std::fs::canonicalize(&report.root),
    ) else {
        return;
    };
    for a in &mut report.automations {
        for f in &mut a.files {
            let abs = root.join(&f.path);
            f.path = match abs.strip_prefix(&dir_abs) {
                Ok(rest) => join(rest),
                Err(_) => abs,
            };
        }
    }
}

fn print_text(report: &Report, mode: Mode) {
    for p in &report.problems {
        eprintln!("{}: {}", p.severity_word(), printable(&p.to_string()));
    }
    for n in &report.notes {
        eprintln!("note: {}", printable(n));
    }
    for s in &report.scans {
        match &s.result {
            Err(e) => eprintln!(
                "error: ImageRepository {}: {}",
                s.repository,
                printable(&e.to_string())
            ),
            Ok(r) if r.invalid > 0 => eprintln!(
                "note: ImageRepository {}: {} tag(s) from the registry are not valid tags and were dropped",
                s.repository, r.invalid
            ),
            Ok(_) => {}
        }
    }
    for p in &report.policies {
        if let Err(e) = &p.result {
            eprintln!(
                "error: ImagePolicy {}: {}",
                p.policy,
                printable(&e.to_string())
            );
        }
    }
    let mut rows = Vec::new();
    for a in &report.automations {
        for (file, c) in a.changes() {
            let image = report
                .policies
                .iter()
                .find(|p| p.policy == c.policy)
                .and_then(|p| p.result.as_ref().ok())
                .map_or_else(String::new, |i| i.reference());
            rows.push(vec![
                c.policy.clone(),
                image,
                c.old_value.clone(),
                c.new_value.clone(),
                format!("{}:{}", file.display(), c.line),
            ]);
        }
    }
    if !rows.is_empty() {
        out!(
            "{}",
            table(&["POLICY", "IMAGE", "OLD", "NEW", "FILE:LINE"], &rows)
        );
    }
    if mode == Mode::DryRun {
        for a in &report.automations {
            out!("{}", crate::output::unified_diffs(&a.files));
        }
    }
    for a in &report.automations {
        let who = if a.name.is_empty() {
            "markers".to_string()
        } else {
            format!("ImageUpdateAutomation {}", a.name)
        };
        let n: usize = a.files.iter().map(|f| f.changes.len()).sum();
        if let (Some(e), None) = (&a.error, &a.commit) {
            // Nothing was committed: the error says it all.
            for note in &a.notes {
                eprintln!("  note: {}", printable(note));
            }
            eprintln!("error: {who}: {}", printable(&e.to_string()));
            continue;
        }
        let mut line = format!("{who}: {n} value(s) in {} file(s)", a.files.len());
        match (&a.commit, a.pushed, &a.branch) {
            (Some(c), true, Some(b)) => line.push_str(&format!(
                ", committed {} and pushed to {b}",
                &c[..c.len().min(12)]
            )),
            (Some(c), false, Some(b)) => {
                line.push_str(&format!(", committed {} on {b}", &c[..c.len().min(12)]))
            }
            _ if n == 0 => line.push_str(", nothing to change"),
            _ => {}
        }
        eprintln!("{}", printable(&line));
        for note in &a.notes {
            eprintln!("  note: {}", printable(note));
        }
        match &a.pull_request {
            Some(Ok(pr)) => eprintln!(
                "{who}: pull request {} {}: {}",
                pr.number,
                if pr.opened { "opened" } else { "updated" },
                printable(&pr.url)
            ),
            Some(Err(e)) => eprintln!(
                "error: {who}: the push stands, but the pull request failed: {}",
                printable(e)
            ),
            None => {}
        }
        if let Some(e) = &a.error {
            eprintln!("error: {who}: {}", printable(&e.to_string()));
        }
    }
}

fn print_json(report: &Report) {
    let v = json!({
        "problems": report.problems.iter().map(|p| json!({
            "severity": p.severity, "file": p.file, "line": p.line, "message": p.to_string()
        })).collect::<Vec<_>>(),
        "scans": report.scans.iter().map(|s| match &s.result {
            Ok(r) => json!({"repository": s.repository, "image": s.image, "tagCount": r.count(), "revision": r.revision, "latestTags": r.latest_tags, "invalidTags": r.invalid}),
            Err(e) => json!({"repository": s.repository, "image": s.image, "error": e.to_string(), "reason": e.reason()}),
        }).collect::<Vec<_>>(),
        "policies": report.policies.iter().map(|p| match &p.result {
            Ok(i) => json!({"policy": p.policy, "latestRef": i}),
            Err(e) => json!({"policy": p.policy, "error": e.to_string(), "reason": e.reason()}),
        }).collect::<Vec<_>>(),
        "automations": report.automations.iter().map(|a| json!({
            "name": a.name,
            "changes": a.changes().map(|(f, c)| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("file".into(), json!(f.display().to_string()));
                }
                v
            }).collect::<Vec<_>>(),
            "commit": a.commit,
            "branch": a.branch,
            "pushed": a.pushed,
            "error": a.error.as_ref().map(ToString::to_string),
            "reason": a.error.as_ref().map(|e| e.reason()),
            "notes": a.notes,
            "pullRequest": match &a.pull_request {
                Some(Ok(pr)) => json!({"url": pr.url, "number": pr.number, "opened": pr.opened}),
                Some(Err(e)) => json!({"error": e}),
                None => serde_json::Value::Null,
            },
        })).collect::<Vec<_>>(),
    });
    outln!(
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    );
}
