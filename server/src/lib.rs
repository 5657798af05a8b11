//! imageauto's server process, what `kubectl imageauto serve` runs: the
//! controllers of the four kinds and their shared watches, the Receivers'
//! HTTP server, the admission webhook's view of the cluster, metrics,
//! health and leader election. The engine underneath is `automation`'s.
#![forbid(unsafe_code)]

pub mod admission;
pub mod controller;
pub mod health;
pub mod leadership;

// The engine's modules under the paths the controllers use.
pub(crate) use automation::{api, engine, git, registry, workloads};

use std::net::SocketAddr;

/// A server of the process that cannot start: the flag that named its
/// address, and why.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--{flag} {addr}: cannot listen there")]
    Listen {
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the receiver's HTTP client")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
}
