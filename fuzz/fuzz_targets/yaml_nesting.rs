//! Deep nesting of every shape: the reader refuses past its limit with an
//! error, never a stack overflow; the setters, lint and loader stay bounded.
//! The checks are shared with automation's `hostile_input` test.
#![no_main]

#[path = "../../automation/tests/support/nesting.rs"]
mod nesting;

use libfuzzer_sys::fuzz_target;

// The YAML reader's own panics are caught and become syntax errors; the
// program's hook keeps them quiet, and libFuzzer's (which aborts on any
// panic, caught or not) is called only for the others.
fuzz_target!(init: automation::yaml::install_quiet_reader_hook(), |data: &[u8]| {
    nesting::check(&data[..data.len().min(64)]);
});
