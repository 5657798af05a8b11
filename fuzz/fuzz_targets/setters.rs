//! Marker parsing and rewriting never panic on any input, and the line lexer,
//! where it answers, agrees with the full parser. The checks are shared with
//! automation's `fuzz_regressions` test, which replays past failures.
#![no_main]

#[path = "../../automation/tests/support/setters_check.rs"]
mod setters_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        setters_check::check(text);
    }
});
