//! The core of imageauto: the Flux-compatible API types, tag policies, the
//! marker setters, the registry and Git clients, commit templates and the
//! local automation loop. No HTTP server and no command line here.
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod engine;
pub mod errors;
pub mod git;
pub mod lint;
pub mod local;
pub mod policy;
pub mod registry;
pub mod setters;
pub mod template;
pub mod yaml;
