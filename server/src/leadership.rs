//! Leader election around the controllers: they run only while this
//! replica holds the Lease of its shard, a push checks the Lease right
//! before it goes out, and on SIGTERM the work under way finishes before
//! the Lease is released.

use crate::controller::lease::{Elector, LeaseConfig, LeaseError};
use crate::controller::metrics::Metrics;
use crate::controller::watches::Caches;
use crate::controller::{self, ControllerOptions};
use crate::engine::{Engine, Fence};
use std::sync::Arc;
use std::time::Duration;

/// Why leading stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LeadError {
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("leader election stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

/// What the controllers run with, once this replica leads.
pub struct Work {
    pub client: kube::Client,
    pub engine: Arc<Engine>,
    pub options: ControllerOptions,
    pub metrics: Arc<Metrics>,
    pub caches: Arc<Caches>,
}

/// The start of the shutdown: the listeners stop accepting (their ports
/// are free at once), the controllers are told to finish, and the Git
/// operations under way are killed (a run stuck on a server that stopped
/// answering ends now, not at its timeout).
pub fn shut_down(stop_tx: &tokio::sync::watch::Sender<bool>) {
    tracing::info!("terminating: listeners closed, finishing the work under way");
    let _ = stop_tx.send(true);
    let killed = crate::git::terminate_children();
    if killed > 0 {
        tracing::info!(killed, "Git operations under way cancelled");
    }
}

/// The Lease's name: one per shard, so that instances started with
/// different `--watch-label-selector`s each elect their own leader, and the
/// replicas of one shard share one (as Flux derives its leader election ID
/// from the selector).
pub fn lease_name(selector: Option<&str>) -> String {
    use sha2::Digest;
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        None => "imageauto-controller".into(),
        Some(s) => {
            let digest = sha2::Sha256::digest(s.as_bytes());
            let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("imageauto-controller-{hex}")
        }
    }
}

/// Runs the controllers only while this instance holds the Lease: they
/// start when it is won and stop at once when it is lost; a push checks
/// the Lease right before it goes out (the fence). On SIGTERM they finish
/// the work under way, then the Lease is released.
#[allow(clippy::too_many_arguments)]
pub async fn lead(
    work: Work,
    lease_namespace: &str,
    lease_name: &str,
    identity: &str,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    terminate: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> Result<(), LeadError> {
    let identity = format!(
        "{identity}_{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let config = LeaseConfig::new(lease_namespace, lease_name, &identity);
    config.check()?;
    let elector = Elector::new(work.client.clone(), config);
    let mut leading = elector.leading();
    let fence = {
        let f = elector.fence();
        Fence::new(move || f.leads())
    };
    let (lease_stop_tx, lease_stop_rx) = tokio::sync::watch::channel(false);
    let mut election = tokio::spawn(elector.run(lease_stop_rx));
    // A follower says so from the start.
    work.metrics.leading(false);
    tokio::pin!(terminate);
    let mut running: Option<tokio::task::JoinHandle<Result<(), controller::Error>>> = None;
    let mut held = false;
    let mut ended = None;
    loop {
        tokio::select! {
            _ = &mut terminate => break,
            r = &mut election => {
                ended = Some(r);
                break;
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    break;
                }
                let is_leader = *leading.borrow_and_update();
                work.metrics.leading(is_leader);
                if is_leader && running.is_none() {
                    held = true;
                    tracing::info!(%identity, "leader: starting the controllers");
                    running = Some(tokio::spawn(controller::run(
                        work.client.clone(), work.engine.clone(), work.options.clone(),
                        work.metrics.clone(), work.caches.clone(), fence.clone(), stop_rx.clone(),
                    )));
                } else if !is_leader && let Some(w) = running.take() {
                    // The fence already refuses pushes; the reconciliations
                    // under way stop here.
                    tracing::warn!("lost the lease: stopping the controllers now");
                    w.abort();
                }
            }
        }
    }
    shut_down(&stop_tx);
    if let Some(w) = running.take() {
        match tokio::time::timeout(grace, w).await {
            Ok(Ok(Err(e))) => tracing::warn!("{e}"),
            Ok(_) => {}
            Err(_) => tracing::warn!("the work under way did not finish in time: abandoned"),
        }
    }
    work.metrics.leading(false);
    let outcome = match ended {
        Some(r) => r,
        None => {
            // The elector releases the Lease when it leads, then returns.
            let _ = lease_stop_tx.send(true);
            match tokio::time::timeout(Duration::from_secs(5), &mut election).await {
                Ok(r) => {
                    if held && matches!(r, Ok(Ok(()))) {
                        tracing::info!("released the lease");
                    }
                    r
                }
                Err(_) => {
                    tracing::warn!("the lease was not released in time");
                    election.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    // The Lease's error says "leader election:" itself.
    Ok(outcome??)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lease_per_shard() {
        assert_eq!(lease_name(None), "imageauto-controller");
        assert_eq!(lease_name(Some(" ")), "imageauto-controller");
        let a = lease_name(Some("sharding.fluxcd.io/key=shard1"));
        let b = lease_name(Some("sharding.fluxcd.io/key=shard2"));
        assert_ne!(a, b);
        assert_eq!(a, lease_name(Some("sharding.fluxcd.io/key=shard1")));
        assert!(
            a.starts_with("imageauto-controller-") && a.len() == 29,
            "{a}"
        );
    }
}
