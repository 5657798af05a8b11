//! kstatus conditions as Flux's controllers write them (fluxcd/pkg
//! `runtime/conditions/setter.go` and `runtime/reconcile/result.go`):
//! `Ready`, with `Reconciling` while work goes on or is retried and
//! `Stalled` when nothing changes until the object does; ordered Stalled,
//! Reconciling, Ready, then the rest; a transition time that moves only
//! when status, reason or message change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// Flux's reason on success.
pub const SUCCEEDED: &str = "Succeeded";
/// Flux's reason while work goes on.
pub const PROGRESSING: &str = "Progressing";
/// Flux's reason beside a failure that is retried.
pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
/// Flux's default progress message.
pub const IN_PROGRESS: &str = "reconciliation in progress";

/// Longest message a condition keeps (Flux trims at 32768, with `...`).
const MAX_MESSAGE: usize = 32768;
const TRIMMED: &str = "...";

fn trim(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE - TRIMMED.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRIMMED}", &message[..end])
}

/// A transition time as Flux takes it: UTC, whole seconds.
fn seconds(now: &Time) -> Time {
    let s = now.0.as_second();
    Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap_or(now.0))
}

fn weight(type_: &str) -> Option<u8> {
    match type_ {
        STALLED => Some(0),
        RECONCILING => Some(1),
        READY => Some(2),
        _ => None,
    }
}

/// Sets a condition to `status` (`True`, `False`, `Unknown`); the
/// transition time moves only when status, reason or message change.
pub fn set_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: &Time,
) {
    let message = trim(message);
    let reason = if reason.is_empty() { "Unknown" } else { reason };
    let new = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: Some(generation.max(0)),
        last_transition_time: seconds(now),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let same = c.status == new.status && c.reason == new.reason && c.message == new.message;
            if same {
                c.observed_generation = new.observed_generation;
            } else {
                *c = new;
            }
        }
        None => conditions.push(new),
    }
    conditions.sort_by(|a, b| match (weight(&a.type_), weight(&b.type_)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) if a.observed_generation == b.observed_generation => a.type_.cmp(&b.type_),
        (None, None) => b.observed_generation.cmp(&a.observed_generation),
    });
}

/// [`set_status`] with a boolean status.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    set_status(conditions, type_, status, reason, message, generation, now);
}

pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

fn get<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Flux's `ProgressiveStatus`: Reconciling=True (Progressing, `message`),
/// Stalled removed; Ready=Unknown with the same when `drift`, or when Ready
/// is missing or Unknown.
pub fn progress(
    conditions: &mut Vec<Condition>,
    message: &str,
    drift: bool,
    generation: i64,
    now: &Time,
) {
    remove(conditions, STALLED);
    set(
        conditions,
        RECONCILING,
        true,
        PROGRESSING,
        message,
        generation,
        now,
    );
    let ready = get(conditions, READY).map(|c| c.status.clone());
    if drift || ready.as_deref().is_none_or(|s| s == "Unknown") {
        set_status(
            conditions,
            READY,
            "Unknown",
            PROGRESSING,
            message,
            generation,
            now,
        );
    }
}

/// How a reconciliation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End<'a> {
    /// Ready=True with this message.
    Ready(&'a str),
    /// Nothing changes until the object does: Stalled=True and
    /// Ready=False with this reason and message.
    Stalled(&'static str, &'a str),
    /// Retried: Ready=False with this reason and message, Reconciling=True
    /// (ProgressingWithRetry) with the progress message it had.
    Retried(&'static str, &'a str),
}

/// Flux's `ResultFinalizer`: the conditions at the end of a
/// reconciliation. Returns whether `status.observedGeneration` moves to the
/// object's generation (Ready or Stalled).
pub fn finish(conditions: &mut Vec<Condition>, end: End<'_>, generation: i64, now: &Time) -> bool {
    match end {
        End::Ready(message) => {
            remove(conditions, RECONCILING);
            remove(conditions, STALLED);
            set(conditions, READY, true, SUCCEEDED, message, generation, now);
            true
        }
        End::Stalled(reason, message) => {
            remove(conditions, RECONCILING);
            set(conditions, STALLED, true, reason, message, generation, now);
            set(conditions, READY, false, reason, message, generation, now);
            true
        }
        End::Retried(reason, message) => {
            remove(conditions, STALLED);
            let progress = get(conditions, RECONCILING)
                .map(|c| c.message.clone())
                .unwrap_or_else(|| IN_PROGRESS.to_string());
            set(conditions, READY, false, reason, message, generation, now);
            set(
                conditions,
                RECONCILING,
                true,
                PROGRESSING_WITH_RETRY,
                &progress,
                generation,
                now,
            );
            false
        }
    }
}

/// Ready=True with Flux's reason; no Reconciling, no Stalled.
pub fn ready(conditions: &mut Vec<Condition>, message: &str, generation: i64, now: &Time) {
    finish(conditions, End::Ready(message), generation, now);
}

/// Ready=False; with `transient`, Reconciling=True (a retry comes), else
/// Stalled=True (nothing changes until the object does).
pub fn failed(
    conditions: &mut Vec<Condition>,
    reason: &'static str,
    message: &str,
    transient: bool,
    generation: i64,
    now: &Time,
) {
    let end = if transient {
        End::Retried(reason, message)
    } else {
        End::Stalled(reason, message)
    };
    finish(conditions, end, generation, now);
}

/// [`failed`] for an engine failure: its reason and message, and
/// Reconciling or Stalled as its kind says.
pub fn failed_with(
    conditions: &mut Vec<Condition>,
    e: &crate::engine::EngineError,
    generation: i64,
    now: &Time,
) {
    failed(
        conditions,
        e.reason(),
        &e.to_string(),
        e.is_transient(),
        generation,
        now,
    );
}

/// Flux's `IsReady`: Ready=True, neither Stalled nor Reconciling.
pub fn is_ready(conditions: &[Condition]) -> bool {
    is_true(conditions, READY) && !is_true(conditions, STALLED) && !is_true(conditions, RECONCILING)
}

/// The Ready condition's reason and message.
pub fn ready_condition(conditions: &[Condition]) -> Option<(&str, &str)> {
    get(conditions, READY).map(|c| (c.reason.as_str(), c.message.as_str()))
}

/// Conditions equal but for their transition times (to tell whether a
/// status patch would change anything).
pub fn equal_but_for_times(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::at;

    fn kinds(c: &[Condition]) -> Vec<(&str, &str, &str)> {
        c.iter()
            .map(|x| (x.type_.as_str(), x.status.as_str(), x.reason.as_str()))
            .collect()
    }

    #[test]
    fn the_lifecycle_of_fluxs_result_finalizer() {
        let mut c = Vec::new();
        // A first reconciliation: Reconciling and Ready=Unknown.
        progress(
            &mut c,
            "processing object: new generation -1 -> 1",
            false,
            1,
            &at(0),
        );
        assert_eq!(
            kinds(&c),
            [
                ("Reconciling", "True", "Progressing"),
                ("Ready", "Unknown", "Progressing")
            ]
        );
        // A retried failure keeps the progress message on Reconciling.
        assert!(!finish(
            &mut c,
            End::Retried("AuthenticationFailed", "no"),
            1,
            &at(1)
        ));
        assert_eq!(
            kinds(&c),
            [
                ("Reconciling", "True", "ProgressingWithRetry"),
                ("Ready", "False", "AuthenticationFailed")
            ]
        );
        assert_eq!(c[0].message, "processing object: new generation -1 -> 1");
        // A stall: Stalled first, no Reconciling.
        progress(&mut c, IN_PROGRESS, false, 1, &at(2));
        assert!(finish(
            &mut c,
            End::Stalled("InvalidPolicy", "bad"),
            1,
            &at(3)
        ));
        assert_eq!(
            kinds(&c),
            [
                ("Stalled", "True", "InvalidPolicy"),
                ("Ready", "False", "InvalidPolicy")
            ]
        );
        // Ready: only Ready is left; Ready=False is not turned Unknown by
        // a new progress.
        progress(&mut c, IN_PROGRESS, false, 2, &at(4));
        assert_eq!(c[1].status, "False");
        assert!(finish(&mut c, End::Ready("ok"), 2, &at(5)));
        assert_eq!(kinds(&c), [("Ready", "True", "Succeeded")]);
        assert!(is_ready(&c));
        assert_eq!(c[0].observed_generation, Some(2));
        // The same state again: the transition time stays; a new message
        // moves it.
        let t = c[0].last_transition_time.clone();
        ready(&mut c, "ok", 2, &at(9));
        assert_eq!(c[0].last_transition_time, t);
        ready(&mut c, "ok again", 2, &at(9));
        assert_eq!(c[0].last_transition_time, at(9));
        let long = "x".repeat(40_000);
        ready(&mut c, &long, 3, &at(10));
        assert_eq!(c[0].message.len(), 32768);
        assert!(c[0].message.ends_with("..."));
    }
}
