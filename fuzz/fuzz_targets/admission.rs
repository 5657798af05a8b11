//! Any bytes as an AdmissionReview, through both admission rules: decoded
//! and answered in kind, or refused with 400 and a reason; never a panic.
//! The checks are shared with the webhook's `fuzz_admission` test.
#![no_main]

#[path = "../../webhook/tests/support/admission_check.rs"]
mod admission_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    admission_check::check(data);
});
