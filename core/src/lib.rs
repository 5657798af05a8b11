//! imageauto's API and pure logic: the Flux-compatible API types and their
//! validation and plans, tag policies, image references, the YAML reader,
//! the marker setters, commit templates and the lint. Data in, data out: no
//! network, no cluster, no Git.
#![forbid(unsafe_code)]

pub mod api;
pub mod lint;
pub mod policy;
pub mod reference;
pub mod setters;
pub mod template;
pub mod workloads;
pub mod yaml;
