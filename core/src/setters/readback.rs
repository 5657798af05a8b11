//! The safety net under every rewrite: the new text is read again by the
//! full parser, side by side with the old one ([`yaml::compare`]), and must
//! hold the same documents, the same structure and the same scalars, but for
//! the marked values that were meant to change, which must now read as their
//! new values. A disagreement is an error (the file is neither written nor
//! committed), never a silent edit. What follows the last change is not read
//! when both texts hold the same bytes from there to the end and the reader
//! is in the same state at that point in both (a `---`, or the end of the
//! line of a one-line value with nothing after it on its line but blanks or
//! a comment): those bytes read the same in both (see [`yaml::compare`]).

use super::Change;
use crate::yaml::{self, Difference, Reading};

/// Checks that `after` is `before` with exactly `changes` applied, as the
/// full YAML parser reads them. `Err` says what differs.
pub fn verify(before: &str, after: &str, changes: &[Change]) -> Result<(), String> {
    verify_with(before, after, changes, Reading::MayStopEarly)
}

/// [`verify`] reading both texts to their end: for tests that check that
/// stopping early answers the same whenever `before` parses.
#[doc(hidden)]
pub fn verify_whole(before: &str, after: &str, changes: &[Change]) -> Result<(), String> {
    verify_with(before, after, changes, Reading::Whole)
}

fn verify_with(
    before: &str,
    after: &str,
    changes: &[Change],
    reading: Reading,
) -> Result<(), String> {
    // The changes by byte offset in `before`, for a lookup per scalar.
    let lines = yaml::LineIndex::new(before);
    let mut at: Vec<(usize, &Change)> = changes
        .iter()
        .filter_map(|c| Some((lines.offset(c.line, c.column)?, c)))
        .collect();
    at.sort_by_key(|(o, _)| *o);
    let expected = |offset: usize| {
        let i = at.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        let c = at[i].1;
        Some((c.old_value.clone(), c.new_value.clone()))
    };
    match yaml::compare(before, after, &expected, changes.len(), reading) {
        Ok(seen) if seen == changes.len() => Ok(()),
        Ok(seen) => Err(format!(
            "{} of {} changed values were not found where they were: refusing to write it",
            changes.len() - seen,
            changes.len()
        )),
        Err(Difference::After(e)) => Err(format!(
            "the rewritten text does not parse ({e}): refusing to write it"
        )),
        Err(d) => Err(format!("{d}: refusing to write it")),
    }
}
