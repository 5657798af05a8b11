//! Deep nesting of every shape: the reader refuses past its limit with an
//! error, never a stack overflow; the setters, lint and loader stay bounded.
//! The checks are shared with automation's `hostile_input` test.
#![no_main]

#[path = "../../automation/tests/support/nesting.rs"]
mod nesting;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nesting::check(&data[..data.len().min(64)]);
});
