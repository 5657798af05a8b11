//! A registry's tag-list answer, any bytes: decoded or refused, never a
//! panic, and no tag outside the distribution grammar survives the scan.
//! The checks are shared with automation's `hostile_input` test.
#![no_main]

#[path = "../../automation/tests/support/tag_list.rs"]
mod tag_list;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tag_list::check(data);
});
