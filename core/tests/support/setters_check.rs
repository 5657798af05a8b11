//! The checks the `setters` fuzz target runs on each input, shared with the
//! regression test that replays the inputs it once failed on: marker parsing
//! and rewriting do not panic, the line lexer agrees with the full parser
//! where it answers, and a rewrite reads back and is idempotent; the
//! read-back that stops after the last change answers as the whole reading.

use imageauto_core::api::ImageRef;
use imageauto_core::setters::readback::{verify, verify_whole};
use imageauto_core::setters::{apply, parse_comment, scan, scan_fast};
use std::collections::BTreeMap;

pub fn check(text: &str) {
    let _ = parse_comment(text);
    let full = scan(text);
    if let Some(fast) = scan_fast(text) {
        let mut full =
            full.unwrap_or_else(|e| panic!("the line lexer answered where the parser fails: {e}"));
        for m in &mut full {
            m.path.clear();
        }
        assert_eq!(fast, full, "the line lexer and the parser disagree");
    }
    let images: BTreeMap<String, ImageRef> = [
        ("ns:p", "x"),
        ("a:b", "ghcr.io/o/a"),
        ("apps:web", "ghcr.io/org/web"),
        ("apps:api", "ghcr.io/org/api"),
    ]
    .into_iter()
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
        assert_eq!(
            verify(text, &new, &a.changes),
            verify_whole(text, &new, &a.changes),
            "the read-back answers otherwise when it stops after the last change"
        );
        let again = apply(&new, &images)
            .unwrap_or_else(|e| panic!("the rewritten text does not parse: {e}"));
        assert!(again.text.is_none(), "the rewrite is not idempotent");
    }
}
