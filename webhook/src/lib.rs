//! imageauto's validating admission webhook: the rules and the HTTPS server.
//!
//! - [`view`]: what the rules know of the cluster ([`ClusterView`]), read
//!   from memory without I/O; [`MemoryView`] builds it from lists of objects
//!   and [`SharedView`] swaps whole snapshots atomically.
//! - [`rules`]: one pure validator per path: [`rules::workloads`] (are the
//!   images governed by an ImagePolicy, and marked in Git?) and
//!   [`rules::image_kinds`] (the same validation as `kubectl imageauto lint`).
//! - [`review`]: AdmissionReview `admission.k8s.io/v1` and `v1beta1`, decoded
//!   and answered in the version asked.
//! - [`server`]: axum on rustls, TLS only, certificates read from a folder
//!   and reloaded when they change (or generated when it is empty).
//! - [`listen`]: the accept loop every listener of `serve` shares (this
//!   server's, the receiver's, health and metrics): timeouts per phase of a
//!   connection, caps per peer and in all, and which connection gives way
//!   to a new one.
//! - [`Observer`]: latency and outcome of each request, for /metrics.
//!
//! [`answer`] ties a rule to the wire: bytes in, status and bytes out. The
//! server calls it; so do the fuzz target and the tests.
#![forbid(unsafe_code)]

pub mod certs;
pub mod listen;
pub mod review;
pub mod rules;
pub mod server;
mod verdict;
pub mod view;

pub use review::{AdmissionRequest, DecodeError, Operation, Review, ReviewVersion, UserInfo};
pub use server::{Limits, Server, ServerConfig, ServerError, router, serve};
pub use verdict::Verdict;
pub use view::{
    ClusterView, MarkerLookup, MemoryView, ObjectKey, OwnerIndex, SharedView, TrackingPolicy,
    WorkloadContainer, WorkloadOwner,
};

use std::fmt;
use std::time::Duration;

/// The two admission paths and their rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `/validate/workloads`: Pods and the workloads that make them.
    Workloads,
    /// `/validate/image-kinds`: ImageRepository, ImagePolicy, ImageUpdateAutomation.
    ImageKinds,
}

impl Rule {
    /// Every rule, for metrics that list them up front.
    pub const ALL: [Rule; 2] = [Rule::Workloads, Rule::ImageKinds];

    /// A short name for metrics labels: `workloads`, `image-kinds`.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Workloads => "workloads",
            Rule::ImageKinds => "image-kinds",
        }
    }

    /// The HTTP path the rule is served at.
    pub fn path(self) -> &'static str {
        match self {
            Rule::Workloads => "/validate/workloads",
            Rule::ImageKinds => "/validate/image-kinds",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What became of one admission request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Allowed without warnings.
    Admit,
    /// Refused.
    Deny,
    /// Allowed, with at least one warning.
    Warn,
    /// Not judged: the request could not be read (400, 408, 413) or the
    /// answer could not be written.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Admit, Outcome::Deny, Outcome::Warn, Outcome::Error];

    /// A short name for metrics labels: `admit`, `deny`, `warn`, `error`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Admit => "admit",
            Outcome::Deny => "deny",
            Outcome::Warn => "warn",
            Outcome::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Receives the outcome and latency of every request to a rule's path (the
/// serve side maps it to /metrics). Called on the request's task: keep it
/// cheap and never block.
pub trait Observer: Send + Sync {
    /// One request to `rule` ended with `outcome` after `elapsed` (from the
    /// request's head to its answer, body reading included).
    fn observe(&self, rule: Rule, outcome: Outcome, elapsed: Duration);
}

/// An [`Observer`] that records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn observe(&self, _: Rule, _: Outcome, _: Duration) {}
}

/// The HTTP answer to one request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// 200 with an AdmissionReview, or 400 when the body is not one.
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub outcome: Outcome,
}

impl Answer {
    pub(crate) fn error(status: u16, message: impl fmt::Display) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{message}\n").into_bytes(),
            outcome: Outcome::Error,
        }
    }
}

/// Decodes an AdmissionReview, judges it with `rule` against `view`, and
/// encodes the answer in the review's own version with its uid. A body that
/// is not an AdmissionReview is answered 400 with the reason. Never panics.
pub fn answer(rule: Rule, body: &[u8], view: &dyn ClusterView) -> Answer {
    let review = match review::decode(body) {
        Ok(r) => r,
        Err(e) => return Answer::error(400, e),
    };
    let verdict = match rule {
        Rule::Workloads => rules::workloads::validate(&review.request, view),
        Rule::ImageKinds => rules::image_kinds::validate(&review.request, view),
    };
    match review::encode(&review, &verdict) {
        Ok(body) => Answer {
            status: 200,
            content_type: "application/json",
            body,
            outcome: verdict.outcome(),
        },
        Err(e) => Answer::error(500, format!("cannot encode the answer: {e}")),
    }
}
