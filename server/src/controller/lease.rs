//! Leader election through a `coordination.k8s.io/v1` Lease, with the
//! semantics of client-go's leader elector:
//!
//! - A follower reads the Lease every retry period and takes it only when it
//!   is free: no holder, or a record it has seen unchanged for the record's
//!   lease duration, counted by its own clock from the moment it first saw
//!   that record (never from the record's timestamps, so clock skew between
//!   replicas does not matter).
//! - Every write is a `replace` carrying the `resourceVersion` last read or
//!   written: when someone else wrote first, the apiserver answers 409
//!   Conflict and nothing is overwritten.
//! - The leader renews every retry period. It counts its lease from the
//!   START of its last successful renewal and stops leading once that is the
//!   renew deadline old: another replica saw that record only after it was
//!   written, and waits the (longer) lease duration from then, so the leader
//!   has stopped before anyone else may take over.
//!
//! [`LeaseFence::leads`] tells whether the last successful renewal started less
//! than the renew deadline ago, from the clock alone: checked right before
//! an irreversible write (a Git push), it is false as soon as the Lease may
//! have been lost, whatever the election loop is doing at that moment.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a Lease is held without renewal before others may take it.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader goes on leading without a successful renewal.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the Lease is read (follower) or renewed (leader).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The field manager of the Lease's writes.
const FIELD_MANAGER: &str = "imageauto";

/// The resource, as RBAC names it.
const RESOURCE: &str = "leases.coordination.k8s.io";

/// Which Lease, who we are, and the timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name in `holderIdentity`: unique among the replicas.
    pub identity: String,
    /// How long the others wait, from when they first see a record
    /// unchanged, before taking the Lease over. Written in whole seconds
    /// (rounded up) as `leaseDurationSeconds`.
    pub duration: Duration,
    /// A leader that has not renewed successfully for this long stops
    /// leading. Shorter than `duration`.
    pub renew_deadline: Duration,
    /// The time between two reads (follower) or renewals (leader). Shorter
    /// than `renew_deadline`; every API call times out before it.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The Lease `namespace/name` for `identity`, with the default timing
    /// (15 s, 10 s, 2 s).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// `namespace/name`.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the timing can keep its promise: a leader stops (renew
    /// deadline) strictly before others may take over (lease duration), and
    /// gets more than one attempt at renewing before that.
    pub fn check(&self) -> Result<(), LeaseError> {
        let invalid = |reason: String| LeaseError::Config {
            lease: self.lease(),
            reason,
        };
        if self.namespace.is_empty() || self.name.is_empty() {
            return Err(invalid(
                "the namespace and the name must not be empty".into(),
            ));
        }
        if self.identity.is_empty() {
            return Err(invalid("the identity must not be empty".into()));
        }
        if self.duration < Duration::from_secs(1) {
            return Err(invalid(format!(
                "the lease duration ({:?}) must be at least 1s",
                self.duration
            )));
        }
        if self.duration.as_secs() > i32::MAX as u64 {
            return Err(invalid(format!(
                "the lease duration ({:?}) is too long",
                self.duration
            )));
        }
        if self.renew_deadline >= self.duration {
            return Err(invalid(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.duration
            )));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(invalid(format!(
                "the retry period ({:?}) must be positive and shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            )));
        }
        Ok(())
    }

    /// The timeout of each API call: four fifths of the retry period, so a
    /// call never overlaps the next attempt.
    pub fn call_timeout(&self) -> Duration {
        self.retry_period * 4 / 5
    }

    /// `leaseDurationSeconds`: the duration in whole seconds, rounded up
    /// (others then wait a little longer, never shorter).
    fn duration_seconds(&self) -> i32 {
        let secs = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// Why leader election cannot go on. Transient failures (timeouts, lost
/// connections, conflicts, server errors) are retried and logged instead.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("leader election: the Lease {lease} cannot be used: {reason}")]
    Config { lease: String, reason: String },
    #[error(
        "leader election: cannot {verb} {RESOURCE} in {namespace} (the Lease {lease}): \
         {message}; grant this controller's ServiceAccount get, create and update on \
         {RESOURCE} in {namespace}"
    )]
    Forbidden {
        lease: String,
        namespace: String,
        verb: &'static str,
        message: String,
    },
    #[error(
        "leader election: the apiserver refused this controller's credentials on the Lease \
         {lease}: {message}; check its ServiceAccount token or kubeconfig"
    )]
    Unauthorized { lease: String, message: String },
    #[error(
        "leader election: the apiserver refused the Lease {lease} as invalid: {message}; \
         check its namespace and name"
    )]
    Invalid { lease: String, message: String },
}

/// What a replica does with the record it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// The Lease is free (no holder, or its holder let it expire): take it,
    /// a change of holder.
    Acquire,
    /// The record names us: write a renewal.
    Renew,
    /// Another replica holds it: read again later. It is free in this long
    /// unless the record changes meanwhile.
    Wait(Duration),
}

/// What to do with `record`, which names `identity` or not, and which this
/// replica first saw unchanged at `observed_at`. Its holder's lease runs for
/// the record's `leaseDurationSeconds` (else `default_duration`) from
/// `observed_at`, on this replica's clock: the record's own timestamps are
/// never compared with our clock.
pub fn decide(
    record: Option<&LeaseSpec>,
    identity: &str,
    observed_at: Instant,
    now: Instant,
    default_duration: Duration,
) -> LeaseStep {
    match holder(record) {
        None => LeaseStep::Acquire,
        Some(h) if h == identity => LeaseStep::Renew,
        Some(_) => {
            let duration = record
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(default_duration, Duration::from_secs);
            match observed_at.checked_add(duration) {
                Some(expiry) if now < expiry => LeaseStep::Wait(expiry - now),
                Some(_) => LeaseStep::Acquire,
                // Beyond what the clock can count: never expires.
                None => LeaseStep::Wait(duration),
            }
        }
    }
}

/// The holder a record names, if any (an empty name is none).
pub fn holder(record: Option<&LeaseSpec>) -> Option<&str> {
    record
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// The record `identity` writes to take or renew the Lease whose current
/// record is `previous` (none when creating it): `acquireTime` and
/// `leaseTransitions` are kept on a renewal; a change of holder sets
/// `acquireTime` and counts one more transition.
pub fn next_record(
    previous: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    duration_seconds: i32,
) -> LeaseSpec {
    let ours = holder(previous) == Some(identity);
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    let mut spec = previous.cloned().unwrap_or_default();
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(duration_seconds);
    spec.renew_time = Some(MicroTime(now));
    if !ours || spec.acquire_time.is_none() {
        spec.acquire_time = Some(MicroTime(now));
    }
    spec.lease_transitions = Some(match previous {
        None => 0,
        Some(_) if ours => transitions,
        Some(_) => transitions.saturating_add(1),
    });
    spec
}

/// The record that releases the Lease: no holder (free at once for every
/// replica), a duration of 1 s for clients that only look at the times,
/// the transitions kept.
pub fn released(previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let mut spec = previous.cloned().unwrap_or_default();
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.acquire_time = Some(MicroTime(now));
    spec.renew_time = Some(MicroTime(now));
    spec
}

/// Whether a leader whose last successful renewal started at `renewed` may
/// still act at `now`.
pub fn still_holds(renewed: Option<Instant>, now: Instant, renew_deadline: Duration) -> bool {
    renewed.is_some_and(|r| now.saturating_duration_since(r) < renew_deadline)
}

/// A Lease as last read, and since when this replica has seen it unchanged.
#[derive(Clone, Debug)]
pub struct Observed {
    pub lease: Lease,
    pub at: Instant,
}

/// `lease`, read at `now`, after `previous`: the time of observation is
/// kept when neither the record nor the resourceVersion changed (a record
/// that stays the same for the lease duration expires), else it is `now`.
pub fn observe(previous: Option<Observed>, lease: Lease, now: Instant) -> Observed {
    let at = match previous {
        Some(p)
            if p.lease.spec == lease.spec
                && p.lease.metadata.resource_version == lease.metadata.resource_version =>
        {
            p.at
        }
        _ => now,
    };
    Observed { lease, at }
}

/// Whether this replica may still act as the leader: cheap to clone, and
/// to check right before an irreversible write.
#[derive(Clone)]
pub struct LeaseFence {
    inner: Arc<FenceState>,
}

struct FenceState {
    /// The start of the last successful renewal while leading; none when
    /// not leading.
    renewed: Mutex<Option<Instant>>,
    renew_deadline: Duration,
}

impl LeaseFence {
    fn new(renew_deadline: Duration) -> Self {
        Self {
            inner: Arc::new(FenceState {
                renewed: Mutex::new(None),
                renew_deadline,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Instant>> {
        match self.inner.renewed.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn set(&self, renewed: Option<Instant>) {
        *self.lock() = renewed;
    }

    /// True only while this replica leads and its last successful renewal
    /// started less than the renew deadline ago.
    pub fn leads(&self) -> bool {
        still_holds(*self.lock(), Instant::now(), self.inner.renew_deadline)
    }

    /// How much longer [`LeaseFence::leads`] stays true without another renewal;
    /// none when it is false.
    pub fn remaining(&self) -> Option<Duration> {
        let renewed = (*self.lock())?;
        let end = renewed.checked_add(self.inner.renew_deadline)?;
        let left = end.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

impl fmt::Debug for LeaseFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseFence")
            .field("holds", &self.leads())
            .finish()
    }
}

/// The API verbs the elector uses, as RBAC names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Get,
    Create,
    Update,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Update => "update",
        }
    }
}

/// A failed API call.
#[derive(Debug)]
enum CallError {
    /// No answer within the call timeout.
    Timeout(Duration),
    Kube(kube::Error),
}

impl CallError {
    fn code(&self) -> Option<u16> {
        match self {
            CallError::Kube(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }

    fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    fn is_already_exists(&self) -> bool {
        matches!(self, CallError::Kube(kube::Error::Api(s)) if s.is_already_exists())
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout(d) => write!(f, "no answer within {d:?}"),
            CallError::Kube(kube::Error::Api(s)) => {
                let message = if s.message.is_empty() {
                    "no message"
                } else {
                    &s.message
                };
                if s.reason.is_empty() {
                    write!(f, "{message} ({})", s.code)
                } else {
                    write!(f, "{message} ({} {})", s.code, s.reason)
                }
            }
            CallError::Kube(other) => write!(f, "{other}"),
        }
    }
}

/// The error that ends election when `verb` failed with `e` and has never
/// succeeded before: an answer that cannot change by retrying (401, 403,
/// 422). None for anything else (retried).
fn fatal(config: &LeaseConfig, verb: Verb, e: &CallError) -> Option<LeaseError> {
    let lease = config.lease();
    let message = e.to_string();
    match e.code()? {
        401 => Some(LeaseError::Unauthorized { lease, message }),
        403 => Some(LeaseError::Forbidden {
            lease,
            namespace: config.namespace.clone(),
            verb: verb.name(),
            message,
        }),
        422 => Some(LeaseError::Invalid { lease, message }),
        _ => None,
    }
}

/// The Lease as this leader last wrote or read it, and the start of its
/// last successful renewal.
struct Held {
    lease: Lease,
    renewed: Instant,
}

/// How a renewal attempt went.
enum Renewal {
    /// Written: the Lease as stored now.
    Renewed(Lease),
    /// Someone else wrote the Lease, which still names us: retry at once
    /// with this (fresh) resourceVersion.
    Reread(Lease),
    /// The Lease names another holder now.
    Lost(String),
    /// Retried at the next attempt.
    Failed(String),
}

/// The follower's state across attempts.
#[derive(Default)]
struct Progress {
    observed: Option<Observed>,
    /// The verbs that succeeded once: a later refusal of one of them may be
    /// temporary (RBAC being updated), a first one is not.
    got: bool,
    created: bool,
    updated: bool,
    /// Whether the last access failed (to log a run of failures once).
    failing: bool,
}

impl Progress {
    fn succeeded(&mut self, verb: Verb, lease: &str) {
        match verb {
            Verb::Get => self.got = true,
            Verb::Create => self.created = true,
            Verb::Update => self.updated = true,
        }
        if self.failing {
            self.failing = false;
            tracing::info!(lease, "leader election: the Lease can be reached again");
        }
    }

    /// A write that went through, started at `start`: the Lease as written
    /// is what we observed then, and what we hold.
    fn wrote(&mut self, verb: Verb, lease: &str, written: Lease, start: Instant) -> Held {
        self.succeeded(verb, lease);
        self.observed = Some(Observed {
            lease: written.clone(),
            at: start,
        });
        Held {
            lease: written,
            renewed: start,
        }
    }

    fn ever(&self, verb: Verb) -> bool {
        match verb {
            Verb::Get => self.got,
            Verb::Create => self.created,
            Verb::Update => self.updated,
        }
    }
}

/// Elects a leader among the replicas sharing a Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    fence: LeaseFence,
}

impl fmt::Debug for Elector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Elector")
            .field("config", &self.config)
            .field("leading", &*self.leading.borrow())
            .finish()
    }
}

/// Dropped mid-run (its task aborted, say): it no longer leads. The Lease
/// is not released; the others take it once it expires.
impl Drop for Elector {
    fn drop(&mut self) {
        self.step_down();
    }
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        let (leading, _) = watch::channel(false);
        Self {
            api: Api::namespaced(client, &config.namespace),
            fence: LeaseFence::new(config.renew_deadline),
            config,
            leading,
        }
    }

    /// True while this replica leads. It turns false after the [`LeaseFence`]
    /// does.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// See [`LeaseFence::leads`].
    pub fn fence(&self) -> LeaseFence {
        self.fence.clone()
    }

    /// Takes part in the election until `stop` turns true (or its sender is
    /// dropped); then, when leading, stops leading and releases the Lease
    /// (so another replica takes over at once), and returns. Returns an
    /// error for a configuration that cannot keep its promise and for a
    /// first refusal that retrying cannot change (RBAC, credentials).
    /// Aborted instead, it stops leading without releasing the Lease.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), LeaseError> {
        self.config.check()?;
        let lease = self.config.lease();
        tracing::info!(lease, identity = %self.config.identity, "leader election: joining");
        let mut progress = Progress::default();
        loop {
            if stop_requested(&mut stop) {
                return Ok(());
            }
            if let Some(held) = self.try_acquire(&mut progress).await? {
                self.lead(held, &mut progress, &mut stop).await;
                if stop_requested(&mut stop) {
                    return Ok(());
                }
            }
            let wake = Instant::now() + jittered(self.config.retry_period);
            if wait_stop(&mut stop, wake).await {
                return Ok(());
            }
        }
    }

    /// Runs one API call with the call timeout.
    async fn call<T>(
        &self,
        budget: Duration,
        f: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        let budget = budget.min(self.config.call_timeout());
        match tokio::time::timeout(budget, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Kube(e)),
            Err(_) => Err(CallError::Timeout(budget)),
        }
    }

    /// Logs a failed call of a follower, or returns the error that ends the
    /// election.
    fn trouble(
        &self,
        progress: &mut Progress,
        verb: Verb,
        e: &CallError,
    ) -> Result<(), LeaseError> {
        if !progress.ever(verb)
            && let Some(fatal) = fatal(&self.config, verb, e)
        {
            return Err(fatal);
        }
        let lease = self.config.lease();
        if progress.failing {
            tracing::debug!(lease, verb = verb.name(), error = %e, "leader election: the Lease cannot be reached");
        } else {
            progress.failing = true;
            tracing::warn!(lease, verb = verb.name(), error = %e, "leader election: the Lease cannot be reached; retrying");
        }
        Ok(())
    }

    fn post_params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        }
    }

    /// One follower's attempt: read the Lease (create it when missing) and
    /// take it when it is free or ours. Some when this replica leads now.
    async fn try_acquire(&self, progress: &mut Progress) -> Result<Option<Held>, LeaseError> {
        let c = &self.config;
        let lease_name = c.lease();
        let timeout = c.call_timeout();
        let read = self.call(timeout, self.api.get_opt(&c.name)).await;
        let now = Instant::now();
        let current = match read {
            Ok(Some(l)) => l,
            Ok(None) => {
                progress.succeeded(Verb::Get, &lease_name);
                return self.create(progress).await;
            }
            Err(e) => {
                self.trouble(progress, Verb::Get, &e)?;
                return Ok(None);
            }
        };
        progress.succeeded(Verb::Get, &lease_name);
        let observed = observe(progress.observed.take(), current, now);
        let decision = decide(
            observed.lease.spec.as_ref(),
            &c.identity,
            observed.at,
            now,
            c.duration,
        );
        let mut lease = observed.lease.clone();
        progress.observed = Some(observed);
        if let LeaseStep::Wait(left) = decision {
            tracing::debug!(
                lease = lease_name,
                holder = holder(lease.spec.as_ref()).unwrap_or_default(),
                ?left,
                "leader election: held by another replica"
            );
            return Ok(None);
        }
        lease.spec = Some(next_record(
            lease.spec.as_ref(),
            &c.identity,
            Timestamp::now(),
            c.duration_seconds(),
        ));
        let start = Instant::now();
        let written = self
            .call(
                timeout,
                self.api.replace(&c.name, &Self::post_params(), &lease),
            )
            .await;
        match written {
            Ok(written) => Ok(Some(progress.wrote(
                Verb::Update,
                &lease_name,
                written,
                start,
            ))),
            Err(e) if e.is_conflict() => {
                tracing::debug!(
                    lease = lease_name,
                    "leader election: another replica wrote the Lease first"
                );
                Ok(None)
            }
            Err(e) => {
                self.trouble(progress, Verb::Update, &e)?;
                Ok(None)
            }
        }
    }

    /// Creates the missing Lease, naming us.
    async fn create(&self, progress: &mut Progress) -> Result<Option<Held>, LeaseError> {
        let c = &self.config;
        let lease_name = c.lease();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(c.name.clone()),
                namespace: Some(c.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(next_record(
                None,
                &c.identity,
                Timestamp::now(),
                c.duration_seconds(),
            )),
        };
        let start = Instant::now();
        match self
            .call(
                c.call_timeout(),
                self.api.create(&Self::post_params(), &lease),
            )
            .await
        {
            Ok(written) => Ok(Some(progress.wrote(
                Verb::Create,
                &lease_name,
                written,
                start,
            ))),
            Err(e) if e.is_already_exists() => {
                tracing::debug!(
                    lease = lease_name,
                    "leader election: another replica created the Lease first"
                );
                Ok(None)
            }
            Err(e) => {
                self.trouble(progress, Verb::Create, &e)?;
                Ok(None)
            }
        }
    }

    /// Leads until the Lease is lost (not renewed within the renew
    /// deadline, or taken by another) or `stop` turns true (then the Lease
    /// is released).
    async fn lead(
        &self,
        mut held: Held,
        progress: &mut Progress,
        stop: &mut watch::Receiver<bool>,
    ) {
        let c = &self.config;
        let lease_name = c.lease();
        self.fence.set(Some(held.renewed));
        self.leading.send_replace(true);
        tracing::info!(lease = lease_name, identity = %c.identity, "leader election: leading");
        let mut next = held.renewed + c.retry_period;
        let why = loop {
            let deadline = held.renewed + c.renew_deadline;
            tokio::select! {
                biased;
                () = stopped(stop) => {
                    self.step_down();
                    self.release(&held).await;
                    return;
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    break format!("not renewed for {:?} (the renew deadline)", c.renew_deadline);
                }
                () = tokio::time::sleep_until(next.into()) => {}
            }
            let start = Instant::now();
            next = start + c.retry_period;
            let budget = deadline.saturating_duration_since(start);
            match self.renew(&held, budget, progress).await {
                Renewal::Renewed(lease) => {
                    held = Held {
                        lease,
                        renewed: start,
                    };
                    self.fence.set(Some(start));
                }
                Renewal::Reread(lease) => {
                    tracing::info!(
                        lease = lease_name,
                        "leader election: the Lease was written by someone else and still names us; renewing again"
                    );
                    held.lease = lease;
                    next = Instant::now();
                }
                Renewal::Lost(why) => break why,
                Renewal::Failed(why) => {
                    tracing::warn!(
                        lease = lease_name,
                        error = why,
                        "leader election: renewal failed; retrying"
                    );
                }
            }
        };
        self.step_down();
        tracing::warn!(
            lease = lease_name,
            "leader election: stopped leading: {why}"
        );
    }

    /// Stops leading: the fence first, then the signal, so nobody who saw
    /// the signal false can find the fence holding.
    fn step_down(&self) {
        self.fence.set(None);
        self.leading.send_replace(false);
    }

    /// One renewal: a replace with the last resourceVersion, within
    /// `budget`. On a conflict, the Lease is read again.
    async fn renew(&self, held: &Held, budget: Duration, progress: &mut Progress) -> Renewal {
        let c = &self.config;
        let lease_name = c.lease();
        let mut lease = held.lease.clone();
        lease.spec = Some(next_record(
            lease.spec.as_ref(),
            &c.identity,
            Timestamp::now(),
            c.duration_seconds(),
        ));
        let until = Instant::now() + budget;
        let written = self
            .call(
                budget,
                self.api.replace(&c.name, &Self::post_params(), &lease),
            )
            .await;
        match written {
            Ok(lease) => {
                progress.succeeded(Verb::Update, &lease_name);
                progress.observed = Some(Observed {
                    lease: lease.clone(),
                    at: Instant::now(),
                });
                Renewal::Renewed(lease)
            }
            Err(e) if e.is_conflict() => {
                let left = until.saturating_duration_since(Instant::now());
                let read = self.call(left, self.api.get(&c.name)).await;
                let now = Instant::now();
                match read {
                    Ok(current) => {
                        let observed = observe(progress.observed.take(), current, now);
                        let current = observed.lease.clone();
                        progress.observed = Some(observed);
                        match holder(current.spec.as_ref()) {
                            Some(h) if h == c.identity => Renewal::Reread(current),
                            Some(h) => Renewal::Lost(format!(
                                "the renewal met a conflict: the Lease names {h} now"
                            )),
                            None => Renewal::Lost(
                                "the renewal met a conflict: the Lease names no holder now".into(),
                            ),
                        }
                    }
                    Err(read) => Renewal::Failed(format!(
                        "conflict ({e}), and the Lease cannot be read again: {read}"
                    )),
                }
            }
            Err(e) => Renewal::Failed(e.to_string()),
        }
    }

    /// Releases the Lease (holder cleared), unless someone else wrote it
    /// since our last write.
    async fn release(&self, held: &Held) {
        let c = &self.config;
        let lease_name = c.lease();
        let mut lease = held.lease.clone();
        lease.spec = Some(released(lease.spec.as_ref(), Timestamp::now()));
        let written = self
            .call(
                c.call_timeout(),
                self.api.replace(&c.name, &Self::post_params(), &lease),
            )
            .await;
        match written {
            Ok(_) => tracing::info!(lease = lease_name, "leader election: released the Lease"),
            Err(e) if e.is_conflict() => tracing::info!(
                lease = lease_name,
                "leader election: not released: someone else wrote the Lease meanwhile"
            ),
            Err(e) => tracing::warn!(
                lease = lease_name,
                error = %e,
                "leader election: cannot release the Lease; the others take over once it expires"
            ),
        }
    }
}

/// Whether `stop` says stop (true, or its sender is gone).
fn stop_requested(stop: &mut watch::Receiver<bool>) -> bool {
    *stop.borrow_and_update() || stop.has_changed().is_err()
}

/// Returns once `stop` says stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !stop_requested(stop) {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Waits until `stop` says stop (true) or `until`, whichever comes first.
async fn wait_stop(stop: &mut watch::Receiver<bool>, until: Instant) -> bool {
    let sleep = tokio::time::sleep_until(until.into());
    tokio::pin!(sleep);
    loop {
        if stop_requested(stop) {
            return true;
        }
        tokio::select! {
            () = &mut sleep => return false,
            changed = stop.changed() => {
                if changed.is_err() {
                    return true;
                }
            }
        }
    }
}

/// `d` plus up to 20%, from the clock's nanoseconds, so that followers
/// started together do not read in lockstep.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d.mul_f64(f64::from(nanos % 1000) / 1000.0 * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const DEFAULT: Duration = Duration::from_secs(15);

    fn spec(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn lease(spec: LeaseSpec, rv: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }

    #[test]
    fn lease_free_is_acquired() {
        let t = Instant::now();
        assert_eq!(decide(None, ME, t, t, DEFAULT), LeaseStep::Acquire);
        let s = spec(None, Some(15));
        assert_eq!(decide(Some(&s), ME, t, t, DEFAULT), LeaseStep::Acquire);
        let s = spec(Some(""), Some(15));
        assert_eq!(decide(Some(&s), ME, t, t, DEFAULT), LeaseStep::Acquire);
    }

    #[test]
    fn lease_of_ours_is_renewed() {
        let t = Instant::now();
        let s = spec(Some(ME), Some(15));
        assert_eq!(decide(Some(&s), ME, t, t, DEFAULT), LeaseStep::Renew);
        // Even long after it was seen: it names us.
        let later = t + Duration::from_secs(100);
        assert_eq!(decide(Some(&s), ME, t, later, DEFAULT), LeaseStep::Renew);
    }

    #[test]
    fn lease_of_another_waits_its_duration_from_observation() {
        let t = Instant::now();
        let s = spec(Some("other"), Some(4));
        assert_eq!(
            decide(Some(&s), ME, t, t, DEFAULT),
            LeaseStep::Wait(Duration::from_secs(4))
        );
        assert_eq!(
            decide(Some(&s), ME, t, t + Duration::from_millis(3999), DEFAULT),
            LeaseStep::Wait(Duration::from_millis(1))
        );
        assert_eq!(
            decide(Some(&s), ME, t, t + Duration::from_secs(4), DEFAULT),
            LeaseStep::Acquire
        );
    }

    #[test]
    fn lease_duration_defaults_when_the_record_has_none() {
        let t = Instant::now();
        for seconds in [None, Some(0), Some(-3)] {
            let s = spec(Some("other"), seconds);
            assert_eq!(
                decide(Some(&s), ME, t, t + Duration::from_secs(14), DEFAULT),
                LeaseStep::Wait(Duration::from_secs(1)),
                "{seconds:?}"
            );
            assert_eq!(
                decide(Some(&s), ME, t, t + DEFAULT, DEFAULT),
                LeaseStep::Acquire
            );
        }
    }

    #[test]
    fn lease_times_in_the_record_are_ignored() {
        // A renewTime far in the past (a clock behind ours) does not make
        // the lease expired, nor one in the future keep it longer.
        let t = Instant::now();
        let mut past = spec(Some("other"), Some(10));
        past.renew_time = Some(MicroTime(ts(-86_400)));
        let mut future = past.clone();
        future.renew_time = Some(MicroTime(ts(86_400)));
        for s in [&past, &future] {
            assert_eq!(
                decide(Some(s), ME, t, t + Duration::from_secs(9), DEFAULT),
                LeaseStep::Wait(Duration::from_secs(1))
            );
            assert_eq!(
                decide(Some(s), ME, t, t + Duration::from_secs(10), DEFAULT),
                LeaseStep::Acquire
            );
        }
    }

    #[test]
    fn lease_observation_restarts_on_any_change() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(3);
        let a = lease(spec(Some("other"), Some(4)), "1");
        let first = observe(None, a.clone(), t0);
        assert_eq!(first.at, t0);
        // Unchanged: still counted from the first sight.
        let same = observe(Some(first.clone()), a.clone(), t1);
        assert_eq!(same.at, t0);
        // A renewal (new record): counted from now.
        let mut renewed = a.clone();
        renewed.spec.as_mut().unwrap().renew_time = Some(MicroTime(ts(1)));
        renewed.metadata.resource_version = Some("2".into());
        assert_eq!(observe(Some(first.clone()), renewed, t1).at, t1);
        // Another write of the same record (a label, say): counted from now.
        let mut relabelled = a.clone();
        relabelled.metadata.resource_version = Some("3".into());
        assert_eq!(observe(Some(first), relabelled, t1).at, t1);
    }

    #[test]
    fn lease_record_on_create_take_over_and_renew() {
        let created = next_record(None, ME, ts(0), 15);
        assert_eq!(created.holder_identity.as_deref(), Some(ME));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.acquire_time, Some(MicroTime(ts(0))));
        assert_eq!(created.renew_time, Some(MicroTime(ts(0))));

        // Renewal: acquireTime and transitions kept.
        let renewed = next_record(Some(&created), ME, ts(2), 15);
        assert_eq!(renewed.acquire_time, Some(MicroTime(ts(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(ts(2))));
        assert_eq!(renewed.lease_transitions, Some(0));

        // Taken over by another: one more transition, acquired now.
        let taken = next_record(Some(&renewed), "other", ts(30), 4);
        assert_eq!(taken.holder_identity.as_deref(), Some("other"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.lease_duration_seconds, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(ts(30))));

        // Released, then taken: the transitions are kept by the release
        // and counted by the taking.
        let free = released(Some(&taken), ts(31));
        assert_eq!(free.holder_identity, None);
        assert_eq!(free.lease_transitions, Some(1));
        assert_eq!(free.lease_duration_seconds, Some(1));
        assert_eq!(free.renew_time, Some(MicroTime(ts(31))));
        let again = next_record(Some(&free), ME, ts(32), 15);
        assert_eq!(again.lease_transitions, Some(2));
        assert_eq!(again.acquire_time, Some(MicroTime(ts(32))));
    }

    #[test]
    fn lease_record_keeps_unknown_fields() {
        let mut previous = spec(Some("other"), Some(15));
        previous.strategy = Some("OldestEmulationVersion".into());
        let taken = next_record(Some(&previous), ME, ts(0), 15);
        assert_eq!(taken.strategy.as_deref(), Some("OldestEmulationVersion"));
    }

    #[test]
    fn lease_fence_holds_within_the_renew_deadline_only() {
        let t = Instant::now();
        let d = Duration::from_secs(10);
        assert!(still_holds(Some(t), t, d));
        assert!(still_holds(Some(t), t + Duration::from_millis(9_999), d));
        assert!(!still_holds(Some(t), t + d, d));
        assert!(!still_holds(None, t, d));

        let fence = LeaseFence::new(d);
        assert!(!fence.leads());
        assert_eq!(fence.remaining(), None);
        fence.set(Some(Instant::now()));
        assert!(fence.leads());
        assert!(fence.remaining().is_some_and(|r| r <= d));
        let copy = fence.clone();
        fence.set(Some(Instant::now() - d));
        assert!(!copy.leads());
        assert_eq!(copy.remaining(), None);
    }

    #[test]
    fn lease_config_checks_the_timing() {
        let ok = LeaseConfig::new("ns", "l", "me");
        assert_eq!(ok.check().ok(), Some(()));
        assert_eq!(ok.duration_seconds(), 15);
        assert!(ok.call_timeout() < ok.retry_period);

        let mut c = ok.clone();
        c.renew_deadline = c.duration;
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("ns/l"), "{e}");
        assert!(e.contains("renew deadline"), "{e}");

        let mut c = ok.clone();
        c.retry_period = c.renew_deadline;
        assert!(c.check().is_err());
        c.retry_period = Duration::ZERO;
        assert!(c.check().is_err());

        let mut c = ok.clone();
        c.identity.clear();
        assert!(c.check().is_err());

        let mut c = ok.clone();
        c.duration = Duration::from_millis(500);
        c.renew_deadline = Duration::from_millis(300);
        c.retry_period = Duration::from_millis(100);
        assert!(c.check().is_err());

        let mut c = ok;
        c.duration = Duration::from_millis(4_200);
        assert_eq!(c.duration_seconds(), 5);
    }

    fn api_error(code: u16, reason: &str, message: &str) -> CallError {
        let status = kube::core::Status::failure(message, reason).with_code(code);
        CallError::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn lease_errors_say_what_to_do() {
        let c = LeaseConfig::new("team-a", "imageauto-controller", "me");
        let forbidden = api_error(
            403,
            "Forbidden",
            "leases.coordination.k8s.io \"imageauto-controller\" is forbidden: User \"x\" cannot update resource \"leases\"",
        );
        let e = fatal(&c, Verb::Update, &forbidden).unwrap().to_string();
        assert!(
            e.contains("cannot update leases.coordination.k8s.io in team-a"),
            "{e}"
        );
        assert!(e.contains("team-a/imageauto-controller"), "{e}");
        assert!(e.contains("(403 Forbidden)"), "{e}");
        assert!(!e.contains("Status {"), "{e}");
        assert!(!e.contains("Some("), "{e}");

        let e = fatal(
            &c,
            Verb::Get,
            &api_error(401, "Unauthorized", "Unauthorized"),
        )
        .unwrap()
        .to_string();
        assert!(e.contains("credentials"), "{e}");

        let e = fatal(&c, Verb::Create, &api_error(422, "Invalid", "bad name"))
            .unwrap()
            .to_string();
        assert!(e.contains("invalid") && e.contains("bad name"), "{e}");

        // Retried: conflicts, server errors, timeouts.
        assert!(fatal(&c, Verb::Update, &api_error(409, "Conflict", "x")).is_none());
        assert!(fatal(&c, Verb::Get, &api_error(500, "InternalError", "x")).is_none());
        assert!(fatal(&c, Verb::Get, &CallError::Timeout(Duration::from_secs(1))).is_none());
        assert_eq!(
            CallError::Timeout(Duration::from_millis(400)).to_string(),
            "no answer within 400ms"
        );
    }
}
