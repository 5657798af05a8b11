//! Kubernetes duration fields (`metav1.Duration` in Flux's types, in Go's
//! syntax): one parser, and one error for an interval or a timeout that is
//! not a duration, whichever kind and field holds it.

use super::{
    GitRepositorySpec, ImagePolicySpec, ImageRepositorySpec, ImageUpdateAutomationSpec,
    ReceiverSpec,
};
use std::time::Duration;

/// Parses a Go duration as Flux's CRDs allow it: `([0-9]+(\.[0-9]+)?(ms|s|m|h))+`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total = 0f64;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let frac = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == frac {
                return None;
            }
        }
        let number: f64 = s[start..i].parse().ok()?;
        let unit = if s[i..].starts_with("ms") {
            i += 2;
            0.001
        } else {
            let u = match b.get(i) {
                Some(b's') => 1.0,
                Some(b'm') => 60.0,
                Some(b'h') => 3600.0,
                _ => return None,
            };
            i += 1;
            u
        };
        total += number * unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A duration field whose value is not a duration. Flux's CRDs refuse such a
/// value; where none refused it (a file, a CRD without the pattern), the
/// object stalls with this message and reason, whatever the kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} is not a duration: write a Go duration such as 30s, 5m or 1h30m")]
pub struct BadDuration {
    pub field: &'static str,
    pub value: String,
}

impl BadDuration {
    /// The reason of the Stalled condition.
    pub const REASON: &'static str = "InvalidDuration";
}

fn required(field: &'static str, value: &str) -> Result<Duration, BadDuration> {
    parse_duration(value).ok_or_else(|| BadDuration {
        field,
        value: value.to_string(),
    })
}

/// An optional field: absent or empty is `None`.
fn optional(field: &'static str, value: Option<&str>) -> Result<Option<Duration>, BadDuration> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => required(field, v).map(Some),
    }
}

impl ImageRepositorySpec {
    /// `spec.interval`: how often the tags are scanned.
    pub fn interval(&self) -> Result<Duration, BadDuration> {
        required("spec.interval", &self.interval)
    }

    /// A scan's timeout, as Flux's: `spec.timeout`, else the interval; at
    /// least one second.
    pub fn scan_timeout(&self) -> Result<Duration, BadDuration> {
        let t = match optional("spec.timeout", self.timeout.as_deref())? {
            Some(t) => t,
            None => self.interval()?,
        };
        Ok(t.max(Duration::from_secs(1)))
    }
}

impl ImagePolicySpec {
    /// `spec.interval`: how often the digest is looked up again (with
    /// `digestReflectionPolicy: Always`).
    pub fn interval(&self) -> Result<Option<Duration>, BadDuration> {
        optional("spec.interval", self.interval.as_deref())
    }
}

impl ImageUpdateAutomationSpec {
    /// `spec.interval`: how often the automation runs (zero: only on
    /// changes and requests).
    pub fn interval(&self) -> Result<Duration, BadDuration> {
        required("spec.interval", &self.interval)
    }
}

impl ReceiverSpec {
    /// `spec.interval`: how often the Receiver is reconciled.
    pub fn interval(&self) -> Result<Duration, BadDuration> {
        required("spec.interval", &self.interval)
    }
}

impl GitRepositorySpec {
    /// `spec.timeout`: how long a Git operation may take.
    pub fn timeout(&self) -> Result<Option<Duration>, BadDuration> {
        optional("spec.timeout", self.timeout.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repo(interval: &str, timeout: Option<&str>) -> ImageRepositorySpec {
        serde_json::from_value(
            json!({"image": "r.example/app", "interval": interval, "timeout": timeout}),
        )
        .unwrap()
    }

    #[test]
    fn every_field_answers_a_bad_value_alike() {
        let e = repo("5 minutes", None).interval().unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.interval \"5 minutes\" is not a duration: write a Go duration such as 30s, 5m or 1h30m"
        );
        assert_eq!(repo("5 minutes", None).scan_timeout().unwrap_err(), e);
        let e = repo("5m", Some("1x")).scan_timeout().unwrap_err();
        assert_eq!((e.field, e.value.as_str()), ("spec.timeout", "1x"));
        let policy: ImagePolicySpec = serde_json::from_value(json!({
            "imageRepositoryRef": {"name": "app"},
            "policy": {"alphabetical": {}},
            "interval": "1x",
        }))
        .unwrap();
        assert_eq!(policy.interval().unwrap_err().field, "spec.interval");
        let source: GitRepositorySpec =
            serde_json::from_value(json!({"url": "https://g.example/r", "timeout": "soon"}))
                .unwrap();
        assert_eq!(source.timeout().unwrap_err().value, "soon");
    }

    #[test]
    fn a_scan_timeout_is_the_timeout_else_the_interval_and_at_least_a_second() {
        let at = |timeout| repo("5m", timeout).scan_timeout();
        assert_eq!(at(None), Ok(Duration::from_secs(300)));
        assert_eq!(at(Some("")), Ok(Duration::from_secs(300)));
        assert_eq!(at(Some("20ms")), Ok(Duration::from_secs(1)));
        assert_eq!(at(Some("30s")), Ok(Duration::from_secs(30)));
    }
}
