//! Inputs the `setters` fuzz target once failed on, replayed with its checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/setters_check.rs"]
mod setters_check;

use std::path::Path;

#[test]
fn inputs_that_once_failed_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        if std::panic::catch_unwind(|| setters_check::check(&text)).is_err() {
            panic!("{name} fails the fuzz target's checks (the message is above)");
        }
        n += 1;
    }
    assert!(n >= 10, "expected the recorded inputs in {}", dir.display());
}
