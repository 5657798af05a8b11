//! What a kind's `decide` returns: plain data, no I/O. Either work the
//! shell must do first (a scan, a digest lookup, a Git run), whose result
//! goes into the snapshot before `decide` is asked again, or the decision
//! itself: the whole status to write, the events to publish and when to
//! look at the object again.

use crate::engine::EngineError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::Duration;

/// A duration as Go's `time.Duration.String()` writes it (`5m0s`,
/// `1h0m0s`, `1m30.5s`, `750ms`), for Flux's messages.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        // Go uses the largest unit below a second that fits.
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_fraction(nanos, div));
    }
    let total_secs = nanos / 1_000_000_000;
    let (h, m) = (total_secs / 3600, (total_secs % 3600) / 60);
    let secs = trim_fraction(nanos % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `n / div` with its fraction, trailing zeros dropped (Go's style).
fn trim_fraction(n: u128, div: u128) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// One step of a reconciliation.
#[derive(Debug, PartialEq)]
pub enum Step<W, S> {
    /// Do this, put its result into the snapshot, and decide again.
    Work(W),
    /// Write this status first (Flux's progress: `Reconciling=True` with
    /// what is being done, before the work), then do the work.
    Persist(S, W),
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

/// How much an event matters, as Flux grades them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSeverity {
    /// A Normal event, also sent to notification-controller as `info`.
    Info,
    /// A Warning event, sent as `error`.
    Error,
    /// A Normal event only (Flux's `trace`: no-change reports), never sent
    /// to notification-controller.
    Trace,
}

/// An event about the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub severity: EventSeverity,
    pub reason: String,
    pub message: String,
    /// The action the event reports (`Scan`, `Evaluate`, `Push`, ...).
    pub action: &'static str,
}

impl Note {
    pub fn normal(reason: &str, message: impl Into<String>, action: &'static str) -> Self {
        Note {
            severity: EventSeverity::Info,
            reason: reason.to_string(),
            message: message.into(),
            action,
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>, action: &'static str) -> Self {
        Note {
            severity: EventSeverity::Error,
            reason: reason.to_string(),
            message: message.into(),
            action,
        }
    }

    pub fn trace(reason: &str, message: impl Into<String>, action: &'static str) -> Self {
        Note {
            severity: EventSeverity::Trace,
            reason: reason.to_string(),
            message: message.into(),
            action,
        }
    }

    pub fn is_warning(&self) -> bool {
        self.severity == EventSeverity::Error
    }
}

/// Flux's `notify` (image-reflector-controller
/// `internal/controller/imagerepository_controller.go`, and the same shape
/// in image-automation-controller): the event a reconciliation ends with,
/// from the conditions before and after. Ready both times with a new Ready
/// message (or `news`, a push): that message; became Ready: the Ready
/// message; not Ready: a warning with its reason and message; else a trace
/// with `quiet`.
pub fn notify(
    before: &[Condition],
    after: &[Condition],
    news: Option<&str>,
    quiet: &str,
    action: &'static str,
) -> Note {
    let was = super::conditions::is_ready(before);
    let is = super::conditions::is_ready(after);
    let (reason, message) = super::conditions::ready_condition(after).unwrap_or(("", ""));
    let old_message = super::conditions::ready_condition(before).map(|(_, m)| m);
    match (was, is, news) {
        (true, true, Some(n)) => Note::normal(reason, n, action),
        (true, true, None) if old_message != Some(message) => Note::normal(reason, message, action),
        (false, true, n) => Note::normal(reason, n.unwrap_or(message), action),
        (_, false, _) => Note::warning(reason, message, action),
        _ => Note::trace(super::conditions::SUCCEEDED, quiet, action),
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
            Some(i) if e.is_outside_the_spec() => Requeue::BackoffAtLeast(i),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_writes_them() {
        for (d, s) in [
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_millis(750), "750ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::ZERO, "0s"),
            (Duration::from_secs(3_599_999_999), "999999h59m59s"),
        ] {
            assert_eq!(go_duration(d), s, "{d:?}");
        }
    }
}
