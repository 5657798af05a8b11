//! imageauto's engine: the registry and Git clients, commit signing, the
//! engine that runs an automation, the local loop over a checkout, and the
//! controllers of `serve`. The API and pure logic are `imageauto_core`'s,
//! re-exported here under their usual paths.
#![forbid(unsafe_code)]

pub use imageauto_core::{api, lint, policy, setters, template, workloads, yaml};

pub mod engine;
pub mod errors;
pub mod git;
pub mod local;
pub mod registry;
