//! Marker parsing and rewriting never panic on any input, and the line lexer,
//! where it answers, agrees with the full parser. The checks are shared with
//! the core's `fuzz_regressions` test, which replays past failures.
#![no_main]

#[path = "../../core/tests/support/setters_check.rs"]
mod setters_check;

use libfuzzer_sys::fuzz_target;

// The YAML reader's own panics are caught and become syntax errors; the
// program's hook keeps them quiet, and libFuzzer's (which aborts on any
// panic, caught or not) is called only for the others.
fuzz_target!(init: automation::yaml::install_quiet_reader_hook(), |data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        setters_check::check(text);
    }
});
