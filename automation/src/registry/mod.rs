//! Container registries: image references, and (with the client) tag lists
//! and digests.

pub mod reference;

pub use reference::{Reference, ReferenceError, normalized_repository};
