//! What a kind's `decide` returns: plain data, no I/O. Either work the
//! shell must do first (a scan, a digest lookup, a Git run), whose result
//! goes into the snapshot before `decide` is asked again, or the decision
//! itself: the whole status to write, the events to publish and when to
//! look at the object again.

use crate::engine::EngineError;
use std::time::Duration;

/// One step of a reconciliation.
#[derive(Debug, PartialEq)]
pub enum Step<W, S> {
    /// Do this, put its result into the snapshot, and decide again.
    Work(W),
    /// Nothing more to do: write this.
    Done(Decision<S>),
}

/// The outcome of a reconciliation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision<S> {
    /// The object's whole status, as it should be after this
    /// reconciliation (fields left out are removed).
    pub status: S,
    /// Events to publish, in order.
    pub notes: Vec<Note>,
    pub requeue: Requeue,
    /// The failure's condition reason (for metrics); `None` on success.
    pub failure: Option<&'static str>,
}

/// An event about the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// The action the event reports (`Scan`, `Evaluate`, `Push`, ...).
    pub action: &'static str,
}

impl Note {
    pub fn normal(reason: &str, message: impl Into<String>, action: &'static str) -> Self {
        Note {
            warning: false,
            reason: reason.to_string(),
            message: message.into(),
            action,
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>, action: &'static str) -> Self {
        Note {
            warning: true,
            reason: reason.to_string(),
            message: message.into(),
            action,
        }
    }
}

/// When to look at the object again (besides a change of the object or of
/// what it depends on, which the watches report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// After this long: the interval, or what is left of it.
    After(Duration),
    /// After about this long (a dependency that is not ready yet; the shell
    /// adds jitter).
    Around(Duration),
    /// Only when something changes.
    Never,
    /// After a transient failure: the shell's backoff.
    Backoff,
    /// After a failure whose cause lies outside the object (a Secret's
    /// contents, a file in Git): the backoff, but not sooner than this
    /// (the interval).
    BackoffAtLeast(Duration),
}

impl Requeue {
    /// What follows a failure: a transient one is retried with backoff;
    /// one whose cause lies outside the object is looked at again at the
    /// object's `interval`; any other waits for the object to change
    /// (Stalled).
    pub fn after_failure(e: &EngineError, interval: Option<Duration>) -> Requeue {
        match interval {
            _ if e.is_transient() => Requeue::Backoff,
            Some(i) if e.lies_elsewhere() => Requeue::BackoffAtLeast(i),
            _ => Requeue::Never,
        }
    }

    /// A periodic requeue at `interval`; an interval of 0 asks for none
    /// (as Flux's controllers read it), so that `interval: 0s` never makes
    /// a loop.
    pub fn every(interval: Duration) -> Requeue {
        if interval.is_zero() {
            Requeue::Never
        } else {
            Requeue::After(interval)
        }
    }
}

impl<S> Decision<S> {
    /// A decision that changes nothing and waits for a change.
    pub fn unchanged(status: S) -> Self {
        Decision {
            status,
            notes: Vec::new(),
            requeue: Requeue::Never,
            failure: None,
        }
    }
}
