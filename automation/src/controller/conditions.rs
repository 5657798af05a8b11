//! kstatus conditions as Flux writes them: `Ready`, and `Reconciling` or
//! `Stalled` beside it while a reconciliation retries or cannot go on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// Flux's reason on success.
pub const SUCCEEDED: &str = "Succeeded";
/// Flux's reason beside a transient failure.
pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";

/// Longest message a condition keeps (Flux's schema caps it at 32768).
const MAX_MESSAGE: usize = 4096;

fn cut(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Sets a condition, keeping its transition time when the status is
/// unchanged (`now` otherwise).
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
    let message = cut(message);
    let reason = if reason.is_empty() { "Unknown" } else { reason };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = Some(generation.max(0));
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: Some(generation.max(0)),
            last_transition_time: now.clone(),
        }),
    }
}

pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Ready=True with Flux's reason; no Reconciling, no Stalled.
pub fn ready(conditions: &mut Vec<Condition>, message: &str, generation: i64, now: &Time) {
    set(conditions, READY, true, SUCCEEDED, message, generation, now);
    remove(conditions, RECONCILING);
    remove(conditions, STALLED);
}

/// Ready=False; with `transient`, Reconciling=True (a retry comes), else
/// Stalled=True (nothing changes until the object does).
pub fn failed(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    transient: bool,
    generation: i64,
    now: &Time,
) {
    set(conditions, READY, false, reason, message, generation, now);
    if transient {
        set(
            conditions,
            RECONCILING,
            true,
            PROGRESSING_WITH_RETRY,
            message,
            generation,
            now,
        );
        remove(conditions, STALLED);
    } else {
        set(conditions, STALLED, true, reason, message, generation, now);
        remove(conditions, RECONCILING);
    }
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

/// Whether the Ready condition is True.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// Conditions equal but for their transition times (to tell whether a
/// status patch would change anything).
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
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

    #[test]
    fn transitions() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut c = Vec::new();
        failed(&mut c, "AuthenticationFailed", "no", true, 2, &now);
        assert_eq!(c.len(), 2);
        assert!(!is_ready(&c));
        assert!(c.iter().any(|x| x.type_ == RECONCILING));
        failed(&mut c, "InvalidPolicy", "bad", false, 2, &now);
        assert!(
            c.iter()
                .any(|x| x.type_ == STALLED && x.reason == "InvalidPolicy")
        );
        assert!(!c.iter().any(|x| x.type_ == RECONCILING));
        let t = c[0].last_transition_time.clone();
        ready(&mut c, "ok", 3, &now);
        assert_eq!(c.len(), 1);
        assert!(is_ready(&c));
        assert_eq!(c[0].observed_generation, Some(3));
        // Same status: the transition time stays.
        let before = c.clone();
        ready(&mut c, "ok", 3, &now);
        assert_eq!(c[0].last_transition_time, before[0].last_transition_time);
        assert!(same(&c, &before));
        let _ = t;
        let long = "x".repeat(10_000);
        ready(&mut c, &long, 3, &now);
        assert!(c[0].message.len() < 5_000);
    }
}
