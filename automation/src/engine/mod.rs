//! The automation loop, once, for both front ends (a checkout on the command
//! line, the controllers in a cluster): scan registries (per-host limits,
//! shared clients), evaluate policies (digests through the same clients),
//! rewrite a Git tree, render the message, commit and push with retries.
//!
//! The engine is a long-lived, shareable value. Blocking work (libgit2, file
//! walks) runs on the runtime's blocking threads behind a semaphore, never on
//! an async worker; two runs on the same Git repository take turns through a
//! lock per URL. Failures are [`EngineError`]s: a reason and whether a retry
//! may help, for a controller's conditions; text only for the command line.

pub mod automation;
mod error;
pub mod update;

pub use error::{EngineError, PolicyProblem};

use crate::api::{DigestReflectionPolicy, ImagePolicySpec, ImageRef, compile_policy};
use crate::policy::{Exclusions, PolicyError};
use crate::registry::{Client, ClientOptions, Keychain, Reference, TagScan};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How a registry is reached: everything that makes one HTTP client differ
/// from another, and the credentials (passed per request, so one client
/// serves every credential; its token cache is kept per credential).
#[derive(Clone, Debug, Default)]
pub struct RegistryAccess {
    /// Plain HTTP (ImageRepository `spec.insecure`).
    pub insecure: bool,
    /// The whole scan's timeout (`spec.timeout`, else the interval); the
    /// engine's default when `None`.
    pub timeout: Option<Duration>,
    /// A PEM CA bundle trusted besides the system roots (`ca.crt`).
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM client certificate and key (`tls.crt`, `tls.key`).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// An HTTP(S) proxy URL, with its credentials.
    pub proxy: Option<String>,
    pub keychain: Keychain,
}

/// Whether this process may still write to Git: a controller that lost,
/// or may have lost, its leader Lease may not. Asked right before a push.
#[derive(Clone)]
pub struct Fence(Arc<dyn Fn() -> bool + Send + Sync>);

impl Fence {
    pub fn new(holds: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Fence(Arc::new(holds))
    }

    /// Always open (no leader election; the command line).
    pub fn open() -> Self {
        Fence::new(|| true)
    }

    pub fn is_open(&self) -> bool {
        (self.0)()
    }
}

impl Default for Fence {
    fn default() -> Self {
        Fence::open()
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Fence").field(&self.is_open()).finish()
    }
}

/// How a registry request takes its host's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Wait for one (the command line).
    Wait,
    /// Wait at most this long, else [`EngineError::Busy`] (a controller: a
    /// burst of scans of one healthy host goes through, one that never
    /// answers does not hold the controller's slots).
    Within(Duration),
}

/// The engine's settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Concurrent scans per registry host.
    pub per_host: usize,
    /// Concurrent blocking tasks (Git operations, file walks).
    pub blocking: usize,
    /// Defaults of every registry client (caps, retries, timeout).
    pub registry: ClientOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            per_host: 4,
            blocking: 4,
            registry: ClientOptions::default(),
        }
    }
}

/// Most registry clients kept; past this, the cache starts over (a client
/// costs a connection pool and a TLS configuration).
const MAX_CLIENTS: usize = 256;

/// The shared state of the loop. Cheap to share behind an `Arc`.
pub struct Engine {
    options: EngineOptions,
    clients: Mutex<HashMap<[u8; 32], Arc<Client>>>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    blocking: Arc<Semaphore>,
    repositories: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // A panic while holding one of these maps leaves them consistent
        // (single inserts and lookups): carry on with the data.
        Err(p) => p.into_inner(),
    }
}

impl Engine {
    pub fn new(options: EngineOptions) -> Self {
        let blocking = Arc::new(Semaphore::new(options.blocking.max(1)));
        Self {
            options,
            clients: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            blocking,
            repositories: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `access`, shared by every scan and digest lookup that
    /// reaches registries the same way.
    pub fn client(&self, access: &RegistryAccess) -> Result<Arc<Client>, EngineError> {
        let mut h = Sha256::new();
        let timeout = access.timeout.unwrap_or(self.options.registry.timeout);
        h.update([u8::from(access.insecure)]);
        h.update(timeout.as_millis().to_le_bytes());
        for part in [
            &access.ca_pem,
            &access.client_cert_pem,
            &access.client_key_pem,
        ] {
            match part {
                Some(b) => {
                    h.update([1]);
                    h.update((b.len() as u64).to_le_bytes());
                    h.update(b);
                }
                None => h.update([0]),
            }
        }
        match &access.proxy {
            Some(p) => {
                h.update([1]);
                h.update(p.as_bytes());
            }
            None => h.update([0]),
        }
        let key: [u8; 32] = h.finalize().into();
        if let Some(c) = lock(&self.clients).get(&key) {
            return Ok(c.clone());
        }
        let mut options = self.options.registry.clone();
        options.insecure = access.insecure;
        options.timeout = timeout;
        options.ca_pem.clone_from(&access.ca_pem);
        options.client_cert_pem.clone_from(&access.client_cert_pem);
        options.client_key_pem.clone_from(&access.client_key_pem);
        options.proxy.clone_from(&access.proxy);
        let client = Arc::new(Client::new(options)?);
        let mut clients = lock(&self.clients);
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        Ok(clients.entry(key).or_insert(client).clone())
    }

    /// How many clients are cached (for tests and metrics).
    pub fn cached_clients(&self) -> usize {
        lock(&self.clients).len()
    }

    fn host_limit(&self, registry: &str) -> Arc<Semaphore> {
        lock(&self.hosts)
            .entry(registry.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.options.per_host.max(1))))
            .clone()
    }

    /// A slot of `registry`'s: waited for, or with `Slot::Within` for a
    /// while only ([`EngineError::Busy`] then), so that a controller never
    /// spends its own slots waiting long on one slow host.
    async fn host_slot(
        &self,
        registry: &str,
        slot: Slot,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, EngineError> {
        let limit = self.host_limit(registry);
        match slot {
            Slot::Wait => limit
                .acquire_owned()
                .await
                .map_err(|_| EngineError::Internal("the engine is shutting down".into())),
            Slot::Within(d) => match tokio::time::timeout(d, limit.acquire_owned()).await {
                Ok(permit) => {
                    permit.map_err(|_| EngineError::Internal("the engine is shutting down".into()))
                }
                Err(_) => Err(EngineError::Busy(registry.to_string())),
            },
        }
    }

    /// Scans `image` (a repository, no tag): every tag, less those outside
    /// the tag grammar and those the exclusion list drops, as Flux stores them.
    pub async fn scan(
        &self,
        image: &str,
        exclusion_list: &[String],
        access: &RegistryAccess,
    ) -> Result<TagScan, EngineError> {
        self.scan_with(image, exclusion_list, access, Slot::Wait)
            .await
    }

    /// [`Engine::scan`], taking the host's slot as `slot` says.
    pub async fn scan_with(
        &self,
        image: &str,
        exclusion_list: &[String],
        access: &RegistryAccess,
        slot: Slot,
    ) -> Result<TagScan, EngineError> {
        let reference = Reference::parse(image)?;
        let exclusions = Exclusions::new(exclusion_list)
            .map_err(|e| EngineError::InvalidPolicy(PolicyProblem::Exclusions(e)))?;
        let client = self.client(access)?;
        let _permit = self.host_slot(&reference.registry, slot).await?;
        let tags = client.list_tags(&reference, &access.keychain).await?;
        Ok(TagScan::new(tags, &exclusions))
    }

    /// The manifest digest of `image:tag`.
    pub async fn digest(
        &self,
        image: &str,
        tag: &str,
        access: &RegistryAccess,
    ) -> Result<String, EngineError> {
        self.digest_with(image, tag, access, Slot::Wait).await
    }

    /// [`Engine::digest`], taking the host's slot as `slot` says.
    pub async fn digest_with(
        &self,
        image: &str,
        tag: &str,
        access: &RegistryAccess,
        slot: Slot,
    ) -> Result<String, EngineError> {
        let reference = Reference::parse(&format!("{image}:{tag}"))?;
        let client = self.client(access)?;
        let _permit = self.host_slot(&reference.registry, slot).await?;
        Ok(client.digest(&reference, &access.keychain).await?)
    }

    /// A policy's latest image from its repository's scanned tags, with the
    /// digest as `digestReflectionPolicy` asks: `Always` reads it, and
    /// `IfNotPresent` only when the tag or name changed from `previous` or no
    /// digest is known.
    pub async fn latest(
        &self,
        policy: &ImagePolicySpec,
        image: &str,
        tags: &[String],
        access: &RegistryAccess,
        previous: Option<&ImageRef>,
    ) -> Result<ImageRef, EngineError> {
        let tag = select(policy, tags)?;
        let mut latest = ImageRef {
            name: image.to_string(),
            tag,
            digest: None,
        };
        let fetch = match policy.digest_reflection_policy {
            DigestReflectionPolicy::Never => false,
            DigestReflectionPolicy::Always => true,
            DigestReflectionPolicy::IfNotPresent => match previous {
                Some(p) if p.name == latest.name && p.tag == latest.tag => {
                    latest.digest = p.digest.clone().filter(|d| !d.is_empty());
                    latest.digest.is_none()
                }
                _ => true,
            },
        };
        if fetch {
            latest.digest = Some(self.digest(image, &latest.tag, access).await?);
        }
        Ok(latest)
    }

    /// Runs blocking work (libgit2, file walks) on a blocking thread, at most
    /// [`EngineOptions::blocking`] at once, never on an async worker. The
    /// work holds its place until it returns, also when the caller stops
    /// waiting for it (a dropped future goes on running on its thread).
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let permit = self
            .blocking
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EngineError::Internal("the engine is shutting down".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(EngineError::Blocking)
    }

    /// Takes the lock of a Git repository (by URL): runs on the same
    /// repository's cache take turns; others go on. Blocking work on the
    /// cache holds the guard itself (moved into its closure), so that the
    /// lock lasts as long as the work, and not only as long as its caller.
    pub async fn lock_repository(&self, url: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = lock(&self.repositories)
            .entry(url.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        m.lock_owned().await
    }
}

/// The tag a policy selects from `tags` (already past the exclusion list,
/// in the scan's order). A policy that cannot work as written is
/// [`EngineError::InvalidPolicy`]; one that selects nothing now is
/// [`EngineError::Selection`].
pub fn select(policy: &ImagePolicySpec, tags: &[String]) -> Result<String, EngineError> {
    let compiled = compile_policy(policy)
        .map_err(|errs| EngineError::InvalidPolicy(PolicyProblem::Fields(errs)))?;
    match compiled.select(tags) {
        Ok(t) => Ok(t.to_string()),
        Err(e @ PolicyError::NoTags) => Err(EngineError::DependencyNotReady(format!(
            "the ImageRepository has no tags yet ({e})"
        ))),
        Err(e) => Err(EngineError::Selection(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(range: &str) -> ImagePolicySpec {
        serde_json::from_value(serde_json::json!({
            "imageRepositoryRef": {"name": "x"},
            "policy": {"semver": {"range": range}}
        }))
        .unwrap()
    }

    #[test]
    fn selection_errors_are_typed() {
        let tags: Vec<String> = ["1.0.0", "2.0.0"].iter().map(|s| s.to_string()).collect();
        assert_eq!(select(&policy(">=1.0.0 <2.0.0"), &tags).unwrap(), "1.0.0");
        let e = select(&policy("not a range"), &tags).unwrap_err();
        assert_eq!((e.reason(), e.is_transient()), ("InvalidPolicy", false));
        let e = select(&policy(">=3.0.0"), &tags).unwrap_err();
        assert!(matches!(e, EngineError::Selection(_)), "{e}");
        assert!(e.is_transient());
        let e = select(&policy("*"), &[]).unwrap_err();
        assert_eq!(e.reason(), "DependencyNotReady");
    }

    #[test]
    fn clients_are_shared_by_what_makes_them_differ() {
        crate::registry::tls::install_crypto_provider();
        let engine = Engine::new(EngineOptions::default());
        let a = RegistryAccess::default();
        let c1 = engine.client(&a).unwrap();
        let c2 = engine.client(&a).unwrap();
        assert!(Arc::ptr_eq(&c1, &c2));
        // Credentials do not make another client.
        let mut with_creds = a.clone();
        with_creds.keychain = Keychain::default();
        assert!(Arc::ptr_eq(&c1, &engine.client(&with_creds).unwrap()));
        // Each of these does.
        let mut insecure = a.clone();
        insecure.insecure = true;
        let mut timeout = a.clone();
        timeout.timeout = Some(Duration::from_secs(7));
        let mut proxy = a.clone();
        proxy.proxy = Some("http://127.0.0.1:3128".into());
        for other in [insecure, timeout, proxy] {
            assert!(!Arc::ptr_eq(&c1, &engine.client(&other).unwrap()));
        }
        assert_eq!(engine.cached_clients(), 4);
    }

    #[tokio::test]
    async fn blocking_work_runs_off_the_runtime_and_is_bounded() {
        let engine = Arc::new(Engine::new(EngineOptions {
            blocking: 2,
            ..EngineOptions::default()
        }));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Each piece of work waits for a second one to run beside it: two
        // run at once (or the test never ends), and a third that started
        // beside them would raise the peak.
        let pair = Arc::new(std::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (e, r, p, pair) = (engine.clone(), running.clone(), peak.clone(), pair.clone());
            tasks.push(tokio::spawn(async move {
                e.blocking(move || {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = r.fetch_add(1, SeqCst) + 1;
                    p.fetch_max(now, SeqCst);
                    pair.wait();
                    r.fetch_sub(1, SeqCst);
                    std::thread::current().name().map(str::to_string)
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A panic in blocking work is an error, not a crash.
        let e = engine.blocking(|| panic!("boom")).await.unwrap_err();
        assert!(
            matches!(&e, EngineError::Blocking(j) if j.is_panic()),
            "{e}"
        );
    }

    // One thread: the waiter runs exactly when this test yields.
    #[tokio::test(flavor = "current_thread")]
    async fn one_repository_at_a_time() {
        let engine = Arc::new(Engine::new(EngineOptions::default()));
        let g = engine.lock_repository("https://example.com/a.git").await;
        // Another repository is free.
        let _other = engine.lock_repository("https://example.com/b.git").await;
        let e = engine.clone();
        let waiter = tokio::spawn(async move {
            let _g = e.lock_repository("https://example.com/a.git").await;
        });
        // A free lock would be taken at the waiter's first turn.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        drop(g);
        waiter.await.unwrap();
    }
}
