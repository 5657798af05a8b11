//! Container registries: image references, credentials, the OCI distribution
//! client (tag lists and digests) and scan results.

pub mod client;
pub mod cloud;
pub mod credentials;
pub use imageauto_core::reference;
pub mod scan;
pub mod tls;

pub use client::{Client, ClientOptions, RegistryError, RegistryErrorKind};
pub use credentials::{Credentials, CredentialsError, Keychain};
pub use reference::{Reference, ReferenceError, normalized_repository};
pub use scan::TagScan;
