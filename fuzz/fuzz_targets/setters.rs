//! Marker parsing and rewriting never panic on any input, and the line lexer,
//! where it answers, agrees with the full parser.
#![no_main]

use automation::api::ImageRef;
use automation::setters::{apply, parse_comment, scan, scan_fast};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_comment(text);
    let full = scan(text);
    if let Some(fast) = scan_fast(text) {
        let Ok(mut full) = full else {
            panic!("the lexer answered where the parser fails");
        };
        for m in &mut full {
            m.path.clear();
        }
        assert_eq!(fast, full);
    }
    let images: BTreeMap<String, ImageRef> = [("ns:p", "x"), ("a:b", "ghcr.io/o/a")]
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
        // What was written reads back, and writing again changes nothing.
        let again = apply(&new, &images).expect("rewritten text parses");
        assert!(again.text.is_none(), "not idempotent");
    }
});
