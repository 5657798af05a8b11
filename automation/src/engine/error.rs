//! What can go wrong in the engine, typed for both front ends: the command
//! line prints the message; a controller turns the variant into Flux's
//! condition reason and decides between a retry with backoff (transient) and
//! Stalled (permanent: nothing changes until the object does).

use crate::api::FieldError;
use crate::api::plan::PlanError;
use crate::git::github::AppError;
use crate::git::{GitError, SignError};
use crate::policy::PolicyError;
use crate::registry::{ReferenceError, RegistryError, RegistryErrorKind};
use crate::template::TemplateError;

/// An engine failure. Messages never carry a credential: the registry and
/// Git errors redact theirs, and nothing else here sees one.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `spec.image` is not a repository reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A policy that can never work as written (a range or a regular
    /// expression that does not compile, an extract naming a missing group).
    #[error(transparent)]
    InvalidPolicy(PolicyProblem),
    /// `digestReflectionPolicy: Always` without the `interval` it needs.
    #[error("{0}")]
    IntervalNotConfigured(String),
    /// A valid policy that selects nothing from the tags it has now.
    #[error(transparent)]
    Selection(PolicyError),
    /// Something this object needs is missing or not ready yet.
    #[error("{0}")]
    DependencyNotReady(String),
    /// A reference across namespaces that `accessFrom` does not allow.
    #[error("{0}")]
    AccessDenied(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Git(#[from] GitError),
    /// The commit message template does not render.
    #[error("spec.git.commit.messageTemplate: {0}")]
    Template(#[from] TemplateError),
    /// A file could not be updated: the setters refused it, or the rewrite
    /// did not read back as intended (never written, never committed).
    #[error("{path}: {message}")]
    Update { path: String, message: String },
    /// A Secret, a ServiceAccount or the source object cannot be read.
    #[error("{0}")]
    Source(String),
    /// As [`EngineError::Source`], with the error that says why kept (a
    /// Secret's credentials that do not parse, a cloud login refused).
    #[error("{0}")]
    Unreadable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Files that could not be updated (each is named in the run's notes).
    #[error("{0} file(s) could not be updated")]
    FilesNotUpdated(usize),
    /// An object that does not pass validation (its problems say why).
    #[error("{0}")]
    Invalid(String),
    /// The key the commits are to be signed with cannot sign: it does not
    /// parse, its passphrase is missing or wrong, it is expired or revoked,
    /// or it may not sign. Nothing is committed or pushed unsigned.
    #[error("{0}")]
    SigningKey(String),
    /// The key the Secret holds cannot sign, and why.
    #[error("spec.git.commit.signingKey: {0}")]
    UnusableSigningKey(#[source] SignError),
    /// Every slot of this registry host is taken (by scans of it that may
    /// hang): tried again shortly, without waiting on it.
    #[error("every connection slot to {0} is in use: tried again shortly")]
    Busy(String),
    /// A GitHub App's installation token cannot be had (its settings do not
    /// work, or GitHub refused the exchange).
    #[error(transparent)]
    GitHubApp(#[from] AppError),
    /// Blocking work ended without its result: it panicked, or was
    /// cancelled because the process is stopping.
    #[error("a blocking task ended without its result: {0}")]
    Blocking(#[source] tokio::task::JoinError),
    /// Something the work needs went away or failed outside the object
    /// (the engine is shutting down, this replica no longer leads, the
    /// repository left the cache, the tag store or the event poster
    /// failed).
    #[error("{0}")]
    Internal(String),
}

/// Why a policy can never work as written.
#[derive(Debug, thiserror::Error)]
pub enum PolicyProblem {
    /// An exclusion pattern that does not compile.
    #[error(transparent)]
    Exclusions(PolicyError),
    /// Fields of the spec that do not compile (a range, a pattern, an
    /// extract), each with its message.
    #[error("{}", fields(.0))]
    Fields(Vec<FieldError>),
}

fn fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl EngineError {
    /// Flux's condition reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            EngineError::Reference(_) => "ImageURLInvalid",
            EngineError::Registry(e) => match e.kind() {
                RegistryErrorKind::AuthenticationFailed => "AuthenticationFailed",
                RegistryErrorKind::InvalidConfiguration => "InvalidConfiguration",
                RegistryErrorKind::NotFound | RegistryErrorKind::ReadOperationFailed => {
                    "ReadOperationFailed"
                }
            },
            EngineError::InvalidPolicy(_) => "InvalidPolicy",
            EngineError::IntervalNotConfigured(_) => "IntervalNotConfigured",
            EngineError::Selection(_) => "ReconciliationFailed",
            EngineError::DependencyNotReady(_) => "DependencyNotReady",
            EngineError::AccessDenied(_) => "AccessDenied",
            EngineError::Plan(p) => p.reason(),
            EngineError::SigningKey(_)
            | EngineError::UnusableSigningKey(_)
            | EngineError::Git(GitError::Signing(_)) => "InvalidSigningKey",
            EngineError::Git(_) => "GitOperationFailed",
            EngineError::Template(_)
            | EngineError::Update { .. }
            | EngineError::FilesNotUpdated(_) => "UpdateFailed",
            EngineError::Invalid(_) => "ValidationFailed",
            EngineError::Source(_) | EngineError::Unreadable(_) => "SourceManagerFailed",
            EngineError::Internal(_) | EngineError::Blocking(_) => "ReconciliationFailed",
            EngineError::Busy(_) => "RegistryBusy",
            EngineError::GitHubApp(_) => "AuthenticationFailed",
        }
    }

    /// Whether trying again later may succeed without the object changing
    /// (a network failure, a branch that moved, a dependency not ready); if
    /// not, the object is Stalled until its spec changes.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Reference(_)
            | EngineError::InvalidPolicy(_)
            | EngineError::IntervalNotConfigured(_)
            | EngineError::AccessDenied(_)
            | EngineError::Plan(_)
            | EngineError::Template(_)
            | EngineError::Invalid(_)
            | EngineError::FilesNotUpdated(_)
            | EngineError::Update { .. }
            | EngineError::SigningKey(_)
            | EngineError::UnusableSigningKey(_) => false,
            EngineError::Registry(e) => e.kind() != RegistryErrorKind::InvalidConfiguration,
            EngineError::Git(GitError::Secret(_) | GitError::Signing(_)) => false,
            _ => true,
        }
    }

    /// Whether the cause lies outside the object's own spec, in something a
    /// user fixes without touching the object (a Secret's contents, a file
    /// in Git): such a failure is looked at again at the object's interval,
    /// as Flux does, instead of waiting for the object to change.
    pub fn is_outside_the_spec(&self) -> bool {
        match self {
            EngineError::SigningKey(_)
            | EngineError::UnusableSigningKey(_)
            | EngineError::FilesNotUpdated(_)
            | EngineError::Update { .. }
            | EngineError::Git(GitError::Secret(_) | GitError::Signing(_)) => true,
            EngineError::Registry(e) => e.kind() == RegistryErrorKind::InvalidConfiguration,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_retries() {
        let e = EngineError::Registry(RegistryError::Unauthorized {
            registry: "r".into(),
            repository: "x".into(),
            status: 401,
            realm: None,
            hint: String::new(),
        });
        assert_eq!(
            (e.reason(), e.is_transient()),
            ("AuthenticationFailed", true)
        );
        let e = EngineError::InvalidPolicy(PolicyProblem::Exclusions(PolicyError::EmptyRange));
        assert_eq!((e.reason(), e.is_transient()), ("InvalidPolicy", false));
        let e = EngineError::Git(GitError::NonFastForward {
            url: "u".into(),
            refname: "r".into(),
        });
        assert_eq!((e.reason(), e.is_transient()), ("GitOperationFailed", true));
        let e = EngineError::Plan(PlanError::Update {
            field: "spec.update.path",
            message: "out".into(),
        });
        assert_eq!(
            (e.reason(), e.is_transient()),
            ("InvalidUpdateStrategy", false)
        );
        let e = EngineError::SigningKey("the passphrase does not unlock the key".into());
        assert_eq!((e.reason(), e.is_transient()), ("InvalidSigningKey", false));
        let e = EngineError::Git(GitError::Signing(crate::git::SignError::Expired {
            key: "ABCD".into(),
            at: "then".into(),
        }));
        assert_eq!((e.reason(), e.is_transient()), ("InvalidSigningKey", false));
        let e = EngineError::DependencyNotReady("no scan yet".into());
        assert_eq!((e.reason(), e.is_transient()), ("DependencyNotReady", true));
    }

    /// A Secret's contents or a file in Git is fixed without touching the
    /// object: looked at again at its interval. The spec's own mistakes wait
    /// for the spec to change.
    #[test]
    fn what_lies_elsewhere_is_retried_at_the_interval() {
        assert!(EngineError::SigningKey("wrong passphrase".into()).is_outside_the_spec());
        assert!(EngineError::FilesNotUpdated(2).is_outside_the_spec());
        let policy = PolicyProblem::Exclusions(PolicyError::EmptyRange);
        assert!(!EngineError::InvalidPolicy(policy).is_outside_the_spec());
        let template = TemplateError::Parse {
            line: 1,
            column: 3,
            message: "unexpected".into(),
        };
        assert!(!EngineError::Template(template).is_outside_the_spec());
        let plan = EngineError::Plan(PlanError::Update {
            field: "spec.update.path",
            message: "out".into(),
        });
        assert!(!plan.is_outside_the_spec());
    }
}
