//! `kubectl imageauto tags IMAGE`: list a repository's tags, newest-looking
//! first (descending bytes), as Flux stores them.

use super::Exit;
use crate::output::TextOrJson;
use crate::output::outln;
use anyhow::{Context, Result};
use automation::policy::Exclusions;
use automation::registry::{Client, ClientOptions, Keychain, Reference, TagScan};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image repository, such as ghcr.io/org/app or nginx
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Talk plain HTTP to the registry
    #[arg(long)]
    insecure: bool,
    /// A PEM CA bundle to trust besides the system roots
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A PEM client certificate (with --key-file)
    #[arg(long, value_name = "FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The PEM key of --cert-file
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// Docker config.json with registry credentials (default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json)
    #[arg(long, value_name = "FILE")]
    docker_config: Option<PathBuf>,
    /// Log in with this cloud identity (the ECR, Artifact Registry or ACR token of the environment's credentials) instead of a Docker config
    #[arg(long, value_enum, value_name = "PROVIDER")]
    provider: Option<CloudProvider>,
    /// Time allowed for the whole listing (retries and waits included), as a Go duration (1s to 24h)
    #[arg(long, default_value = "60s", value_parser = super::duration_arg)]
    timeout: Duration,
    /// Drop tags matching this regular expression (repeatable), as an ImageRepository's exclusionList
    #[arg(long = "exclude", value_name = "REGEX")]
    exclude: Vec<String>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: TextOrJson,
}

/// A registry's cloud, as ImageRepository `spec.provider` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudProvider {
    Generic,
    Aws,
    Gcp,
    Azure,
}

impl From<CloudProvider> for automation::api::Provider {
    fn from(p: CloudProvider) -> Self {
        match p {
            CloudProvider::Generic => automation::api::Provider::Generic,
            CloudProvider::Aws => automation::api::Provider::Aws,
            CloudProvider::Gcp => automation::api::Provider::Gcp,
            CloudProvider::Azure => automation::api::Provider::Azure,
        }
    }
}

/// The Docker config to read: the flag, `$DOCKER_CONFIG/config.json`, then
/// `~/.docker/config.json`; none is fine unless the flag names one.
pub fn keychain(flag: Option<&PathBuf>) -> Result<Keychain> {
    let path = match flag {
        Some(p) => Some(p.clone()),
        None => std::env::var_os("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
            })
            .filter(|p| p.is_file()),
    };
    let Some(path) = path else {
        return Ok(Keychain::default());
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Keychain::from_docker_config(
        &bytes,
        &path.display().to_string(),
    )?)
}

fn read_opt(p: Option<&PathBuf>) -> Result<Option<Vec<u8>>> {
    p.map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()
}

/// A spinner on standard error, shown when a scan takes more than a second
/// and standard error is a terminal.
struct Spinner {
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start(label: String, tags: Arc<AtomicUsize>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let handle = std::io::stderr().is_terminal().then(|| {
            let done = done.clone();
            std::thread::spawn(move || {
                let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                let mut i = 0;
                std::thread::sleep(Duration::from_secs(1));
                let mut shown = false;
                while !done.load(Ordering::Relaxed) {
                    let n = tags.load(Ordering::Relaxed);
                    eprint!("\r{} {label}: {n} tags so far", frames[i % frames.len()]);
                    let _ = std::io::stderr().flush();
                    shown = true;
                    i += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                if shown {
                    eprint!("\r\x1b[2K");
                }
            })
        });
        Self { done, handle }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn run(args: Args) -> Result<Exit> {
    let reference = Reference::parse(&args.image)?;
    let timeout = args.timeout;
    let options = ClientOptions {
        insecure: args.insecure,
        ca_pem: read_opt(args.ca_file.as_ref())?,
        client_cert_pem: read_opt(args.cert_file.as_ref())?,
        client_key_pem: read_opt(args.key_file.as_ref())?,
        timeout,
        ..ClientOptions::default()
    };
    let mut keychain = keychain(args.docker_config.as_ref())?;
    let exclusions = Exclusions::new(&args.exclude).map_err(|e| match e {
        automation::policy::PolicyError::Exclusion {
            pattern, reason, ..
        } => {
            anyhow::anyhow!("--exclude {pattern:?} does not compile: {reason}")
        }
        other => other.into(),
    })?;
    let client = Client::new(options)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    if let Some(provider) = args.provider.map(automation::api::Provider::from)
        && provider != automation::api::Provider::Generic
    {
        automation::registry::tls::install_crypto_provider();
        let cloud = automation::registry::cloud::CloudLogins::new(false);
        let creds = rt
            .block_on(
                cloud.credentials(provider, &reference.registry, None, |_| async {
                    Err::<String, String>("no cluster".to_string())
                }),
            )
            .map_err(|e| anyhow::anyhow!("--provider: {e}"))?;
        keychain = Keychain::default();
        if let Some(c) = creds {
            keychain.insert(reference.api_host(), c);
        }
    }
    let count = Arc::new(AtomicUsize::new(0));
    let spinner = Spinner::start(format!("listing {}", reference.name()), count.clone());
    let tags = rt.block_on(client.list_tags_with(&reference, &keychain, |_, n| {
        count.store(n, Ordering::Relaxed);
    }));
    drop(spinner);
    let scan = TagScan::new(tags?, &exclusions);
    if scan.invalid > 0 {
        eprintln!(
            "note: {} tag(s) from the registry are not valid tags ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}) and were dropped",
            scan.invalid
        );
    }
    match args.output {
        TextOrJson::Text => {
            let mut text = String::new();
            for t in &scan.tags {
                text.push_str(t);
                text.push('\n');
            }
            crate::output::write_stdout_bytes(text.as_bytes());
        }
        TextOrJson::Json => {
            let v = json!({
                "image": args.image,
                "canonicalImageName": reference.canonical_name(),
                "tagCount": scan.count(),
                "revision": scan.revision,
                "latestTags": scan.latest_tags,
                "invalidTags": scan.invalid,
                "tags": scan.tags,
            });
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(Exit::Ok)
}
