//! Any bytes as an AdmissionReview, through both admission rules: decoded
//! and answered in kind, or refused with 400 and a reason; never a panic.
//! The checks are shared with the webhook's `fuzz_admission` test.
#![no_main]

#[path = "../../webhook/tests/support/admission_check.rs"]
mod admission_check;

use libfuzzer_sys::fuzz_target;

// The YAML reader's own panics are caught and become syntax errors; the
// program's hook keeps them quiet, and libFuzzer's (which aborts on any
// panic, caught or not) is called only for the others.
fuzz_target!(init: automation::yaml::install_quiet_reader_hook(), |data: &[u8]| {
    admission_check::check(data);
});
