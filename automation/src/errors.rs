//! Error texts with their causes.

use std::error::Error;

/// `text` followed by each cause from `source` on, `: ` between them, a
/// cause whose text is already there said once.
pub fn with_causes(text: String, source: Option<&(dyn Error + 'static)>) -> String {
    let mut out = text;
    let mut cur = source;
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn causes_follow_once_each() {
        let e = E(
            "request failed",
            Some(Box::new(E(
                "connection refused",
                Some(Box::new(E("connection refused", None))),
            ))),
        );
        assert_eq!(
            with_causes(e.to_string(), e.source()),
            "request failed: connection refused"
        );
        assert_eq!(with_causes("x".into(), None), "x");
    }
}
