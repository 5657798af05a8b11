//! A rule's answer, [`Verdict`], and the bounds every answer keeps: the
//! warnings' count and length, the refusal message's size.

use crate::Outcome;

/// Kubernetes truncates a single admission warning past 256 characters.
pub const MAX_WARNING_CHARS: usize = 256;
/// At most this many warnings per answer, the last one saying how many
/// more there were (the apiserver keeps about 4 KiB of warnings per
/// request and drops the rest without a word).
pub const MAX_WARNINGS: usize = 10;
/// A refusal's message is cut to this many bytes: the first findings,
/// whole lines, then how many more there are. The apiserver passes the
/// message on to the client as it is; a Pod with thousands of containers
/// must not make an answer of megabytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

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
            warnings: capped_warnings(&warnings),
        }
    }

    /// Refused with `message` (one line per finding; cut to
    /// [`MAX_MESSAGE_BYTES`]), plus warnings.
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
            message: capped_message(message.into()),
            warnings: capped_warnings(&warnings),
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

/// Each warning made printable and cut, and at most [`MAX_WARNINGS`] of
/// them: the first ones, then one that says how many more there were.
fn capped_warnings(warnings: &[String]) -> Vec<String> {
    if warnings.len() <= MAX_WARNINGS {
        return warnings.iter().map(|w| warning(w)).collect();
    }
    let shown = MAX_WARNINGS - 1;
    let mut out: Vec<String> = warnings[..shown].iter().map(|w| warning(w)).collect();
    out.push(format!(
        "imageauto: … and {} more warnings",
        warnings.len() - shown
    ));
    out
}

/// Room kept for the closing line of a cut message.
const MORE_LINE_BYTES: usize = 96;

/// The message as it is when it fits in [`MAX_MESSAGE_BYTES`]; else its
/// first whole lines that fit (the first line cut on a character boundary
/// when it alone is too long) and a line saying how many more there are.
fn capped_message(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let budget = MAX_MESSAGE_BYTES - MORE_LINE_BYTES;
    let lines: Vec<&str> = message.lines().collect();
    let mut out = String::new();
    let mut shown = 0;
    for line in &lines {
        let needed = line.len() + usize::from(!out.is_empty());
        if out.len() + needed > budget {
            if shown == 0 {
                let mut end = budget - '…'.len_utf8();
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                out.push_str(&line[..end]);
                out.push('…');
                shown = 1;
            }
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
        shown += 1;
    }
    let more = lines.len() - shown;
    if more > 0 {
        out.push_str(&format!(
            "\n… and {more} more {}: fix the ones above and apply again to see them",
            if more == 1 { "finding" } else { "findings" }
        ));
    }
    out
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
    fn long_messages_keep_whole_first_lines_and_count_the_rest() {
        let short = "one\ntwo".to_string();
        assert_eq!(capped_message(short.clone()), short);
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("finding {i}: {}", "x".repeat(90)))
            .collect();
        let m = capped_message(lines.join("\n"));
        assert!(m.len() <= MAX_MESSAGE_BYTES, "{}", m.len());
        let kept: Vec<&str> = m.lines().collect();
        let shown = kept.len() - 1;
        assert!(shown > 10, "{shown}");
        assert_eq!(
            kept[..shown],
            lines[..shown]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()[..]
        );
        assert!(
            kept[shown]
                == format!(
                    "… and {} more findings: fix the ones above and apply again to see them",
                    1000 - shown
                ),
            "{}",
            kept[shown]
        );
        // One line longer than the budget: cut on a character boundary.
        let m = capped_message(format!("{}\nsecond", "é".repeat(5000)));
        assert!(m.len() <= MAX_MESSAGE_BYTES, "{}", m.len());
        assert!(m.lines().next().unwrap().ends_with('…'));
        assert!(
            m.ends_with("\n… and 1 more finding: fix the ones above and apply again to see them"),
            "{m}"
        );
        let m = capped_message("é".repeat(5000));
        assert!(m.len() <= MAX_MESSAGE_BYTES && !m.contains("more"), "{m}");
    }

    #[test]
    fn many_warnings_end_with_how_many_more() {
        let w: Vec<String> = (0..25).map(|i| format!("w{i}")).collect();
        let v = Verdict::allow_with(w.clone());
        assert_eq!(v.warnings.len(), MAX_WARNINGS);
        assert_eq!(v.warnings[..MAX_WARNINGS - 1], w[..MAX_WARNINGS - 1]);
        assert_eq!(
            v.warnings[MAX_WARNINGS - 1],
            "imageauto: … and 16 more warnings"
        );
        assert_eq!(
            Verdict::allow_with(w[..MAX_WARNINGS].to_vec()).warnings,
            w[..MAX_WARNINGS]
        );
        let d = Verdict::deny(403, "Forbidden", "x", w);
        assert_eq!(d.warnings.len(), MAX_WARNINGS);
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
