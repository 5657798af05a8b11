//! The admission rules: pure functions from an [`AdmissionRequest`] and a
//! [`ClusterView`] to a [`Verdict`], one per path.
//!
//! [`AdmissionRequest`]: crate::AdmissionRequest
//! [`ClusterView`]: crate::ClusterView

pub mod image_kinds;
pub mod workloads;

use crate::Outcome;

/// Kubernetes truncates a single admission warning past 256 characters.
pub const MAX_WARNING_CHARS: usize = 256;

/// A rule's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// HTTP-style code of a refusal (403, 422...); 200 when allowed.
    pub code: u16,
    /// `metav1.Status` reason of a refusal (`Forbidden`, `Invalid`...).
    pub reason: String,
    /// Why the request is refused: one line per finding.
    pub message: String,
    /// Admission warnings, which kubectl prints as `Warning: ...`.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Allowed, nothing to say.
    pub fn allow() -> Self {
        Self::allow_with(Vec::new())
    }

    /// Allowed, with warnings (each made printable and cut to
    /// [`MAX_WARNING_CHARS`]).
    pub fn allow_with(warnings: Vec<String>) -> Self {
        Verdict {
            allowed: true,
            code: 200,
            reason: String::new(),
            message: String::new(),
            warnings: warnings.iter().map(|w| warning(w)).collect(),
        }
    }

    /// Refused with `message`, plus warnings.
    pub fn deny(
        code: u16,
        reason: impl Into<String>,
        message: impl Into<String>,
        warnings: Vec<String>,
    ) -> Self {
        Verdict {
            allowed: false,
            code,
            reason: reason.into(),
            message: message.into(),
            warnings: warnings.iter().map(|w| warning(w)).collect(),
        }
    }

    /// For the [`Observer`](crate::Observer).
    pub fn outcome(&self) -> Outcome {
        if !self.allowed {
            Outcome::Deny
        } else if self.warnings.is_empty() {
            Outcome::Admit
        } else {
            Outcome::Warn
        }
    }
}

/// Replaces control characters (which the apiserver would refuse in a
/// Warning header) and cuts to [`MAX_WARNING_CHARS`] on a character
/// boundary, marking the cut.
pub(crate) fn warning(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= MAX_WARNING_CHARS {
        return clean;
    }
    let mut cut: String = clean.chars().take(MAX_WARNING_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// User text (an exemption reason, an object's name) in a message: printable
/// and bounded.
pub(crate) fn printable(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_printable_and_bounded() {
        assert_eq!(warning("a\nb\tc"), "a b c");
        let long = "é".repeat(300);
        let w = warning(&long);
        assert_eq!(w.chars().count(), MAX_WARNING_CHARS);
        assert!(w.ends_with('…'));
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("a\u{1b}[31m", 10), "a [31m");
    }

    #[test]
    fn outcomes() {
        assert_eq!(Verdict::allow().outcome(), Outcome::Admit);
        assert_eq!(
            Verdict::allow_with(vec!["x".into()]).outcome(),
            Outcome::Warn
        );
        assert_eq!(
            Verdict::deny(403, "Forbidden", "no", vec![]).outcome(),
            Outcome::Deny
        );
    }
}
