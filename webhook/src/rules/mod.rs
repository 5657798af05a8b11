//! The admission rules: pure functions from an [`AdmissionRequest`] and a
//! [`ClusterView`] to a [`Verdict`], one per path.
//!
//! [`AdmissionRequest`]: crate::AdmissionRequest
//! [`ClusterView`]: crate::ClusterView

pub mod image_kinds;
pub mod workloads;

pub(crate) use crate::verdict::printable;
pub use crate::verdict::{MAX_MESSAGE_BYTES, MAX_WARNING_CHARS, MAX_WARNINGS, Verdict};
