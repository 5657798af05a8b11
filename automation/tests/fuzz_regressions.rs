//! Inputs the `setters` fuzz target once failed on, replayed with the same
//! checks: marker parsing and rewriting do not panic, the line lexer agrees
//! with the full parser where it answers, and a rewrite is idempotent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automation::api::ImageRef;
use automation::setters::{apply, parse_comment, scan, scan_fast};
use std::collections::BTreeMap;
use std::path::Path;

fn check(name: &str, text: &str) {
    let _ = parse_comment(text);
    let full = scan(text);
    if let Some(fast) = scan_fast(text) {
        let mut full = full.unwrap_or_else(|e| {
            panic!("{name}: the line lexer answered where the parser fails: {e}")
        });
        for m in &mut full {
            m.path.clear();
        }
        assert_eq!(fast, full, "{name}: lexer and parser disagree");
    }
    let images: BTreeMap<String, ImageRef> = [("ns:p", "x"), ("a:b", "ghcr.io/o/a")]
        .into_iter()
        .chain([
            ("apps:web", "ghcr.io/org/web"),
            ("apps:api", "ghcr.io/org/api"),
        ])
        .map(|(k, n)| {
            (
                k.to_string(),
                ImageRef {
                    name: n.to_string(),
                    tag: "1.10".to_string(),
                    digest: Some("sha256:ab".to_string()),
                },
            )
        })
        .collect();
    if let Ok(a) = apply(text, &images)
        && let Some(new) = a.text
    {
        let again = apply(&new, &images)
            .unwrap_or_else(|e| panic!("{name}: rewritten text does not parse: {e}"));
        assert!(again.text.is_none(), "{name}: rewrite is not idempotent");
    }
}

#[test]
fn inputs_that_once_failed_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(text) = std::str::from_utf8(&bytes) {
            check(&path.display().to_string(), text);
            n += 1;
        }
    }
    assert!(n >= 9, "expected the recorded inputs in {}", dir.display());
}
