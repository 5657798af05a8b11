//! Two texts read side by side by the full parser, for the setters'
//! read-back: the same documents, structure and scalars but for the values
//! meant to change.

use super::*;

/// Where two texts [`compare`]d read differently.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Difference {
    #[error("the text does not parse: {0}")]
    Before(SyntaxError),
    #[error("the rewritten text does not parse ({0})")]
    After(SyntaxError),
    #[error("line {line}:{column}: {what}")]
    At {
        line: usize,
        column: usize,
        what: String,
    },
}

/// How far [`compare`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// It may stop once every wanted scalar has been seen and the rest is
    /// known to read alike (see [`compare`]).
    MayStopEarly,
    /// Both texts to their end, whatever their bytes: for tests that check
    /// the shortcuts against the whole reading. The two answer alike
    /// whenever `before` parses; where it does not after the last change,
    /// stopping early may not read that far.
    Whole,
}

/// Reads `before` and `after` side by side with the full parser, event by
/// event, without building trees: they must hold the same documents, the
/// same collections and the same scalars, except where `expected(offset)`
/// (the byte offset in `before` where a scalar's text starts, after its
/// anchor and tag) gives `(old, new)`: there the scalar must read `old`
/// before and `new` after (its style may change). Returns how many such
/// scalars were seen. Never panics.
///
/// Once `wanted` such scalars have been seen, the reading may stop early:
/// at a `---` from which both texts hold the same bytes to their end, or
/// right after the last wanted scalar when every one [`reads_alike_after`]
/// and the bytes between and after them are the same. The test
/// `stopping_early_answers_as_the_whole_reading` says why that answers as
/// the whole reading, and checks it.
pub fn compare(
    before: &str,
    after: &str,
    expected: &dyn Fn(usize) -> Option<(String, String)>,
    wanted: usize,
    reading: Reading,
) -> Result<usize, Difference> {
    READING.with(|r| {
        let was = r.replace(true);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            compare_inner(
                [before, after],
                expected,
                wanted,
                reading == Reading::MayStopEarly,
            )
        }));
        r.set(was);
        out.unwrap_or_else(|_| {
            Err(Difference::Before(SyntaxError {
                line: 1,
                column: 1,
                message: "the YAML reader cannot read this text".into(),
            }))
        })
    })
}

/// [`compare`], which catches a panic of the reader; `shortcuts` says
/// whether it may stop early.
fn compare_inner(
    [before, after]: [&str; 2],
    expected: &dyn Fn(usize) -> Option<(String, String)>,
    wanted: usize,
    shortcuts: bool,
) -> Result<usize, Difference> {
    let (b, a) = (Input::new(before), Input::new(after));
    let (mut bb, mut ab) = (Chunks::new(b.bytes()), Chunks::new(a.bytes()));
    let mut pb = Parser::new();
    pb.set_input(&mut bb);
    let mut pa = Parser::new();
    pa.set_input(&mut ab);
    let mut depth = 0usize;
    // Open flow collections: a flow collection holds only flow ones, so a
    // count tells whether an end closes one.
    let mut flow = 0usize;
    // Whether every wanted scalar seen so far reads_alike_after.
    let mut settled = shortcuts;
    // Where the bytes of both texts are next compared: after the last
    // wanted scalar seen (offsets in `before` and `after`).
    let mut same = (0usize, 0usize);
    let mut seen = 0;
    loop {
        let (eb, start, end) = b.next_raw(&mut pb).map_err(Difference::Before)?;
        let (ea, a_start, a_end) = a.next_raw(&mut pa).map_err(Difference::After)?;
        if shortcuts
            && seen == wanted
            && matches!(
                eb,
                EventData::DocumentStart {
                    implicit: false,
                    ..
                }
            )
            && eb == ea
            && agree(before.get(start..), after.get(a_start..))
        {
            return Ok(seen);
        }
        // Positions are computed only for a difference.
        let at = |what: String| {
            let (line, column) = b.lines().position(start);
            Difference::At { line, column, what }
        };
        match (&eb, &ea) {
            (EventData::StreamEnd, EventData::StreamEnd) => return Ok(seen),
            (EventData::SequenceStart { .. } | EventData::MappingStart { .. }, _) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Difference::Before(too_deep(b.lines().span_at(start, end))));
                }
                if matches!(
                    eb,
                    EventData::SequenceStart {
                        style: SequenceStyle::Flow,
                        ..
                    } | EventData::MappingStart {
                        style: MappingStyle::Flow,
                        ..
                    }
                ) {
                    flow += 1;
                }
            }
            (EventData::SequenceEnd | EventData::MappingEnd, _) => {
                depth = depth.saturating_sub(1);
                flow = flow.saturating_sub(1);
            }
            _ => {}
        }
        match (eb, ea) {
            (
                EventData::Scalar {
                    anchor: an1,
                    tag: t1,
                    value: v1,
                    style: s1,
                    ..
                },
                EventData::Scalar {
                    anchor: an2,
                    tag: t2,
                    value: v2,
                    style: s2,
                    ..
                },
            ) => {
                if an1 != an2 || t1 != t2 {
                    return Err(at("a scalar's anchor or tag changed".into()));
                }
                // A scalar with an anchor or tag starts at its properties.
                let value_at = if an1.is_some() || t1.is_some() {
                    skip_properties(before, start, end)
                } else {
                    start
                };
                match expected(value_at) {
                    Some((old, new)) => {
                        seen += 1;
                        if v1 != old {
                            return Err(at(format!("the value was {v1:?}, not {old:?}")));
                        }
                        if v2 != new {
                            return Err(at(format!(
                                "the rewritten value reads as {v2:?}, not {new:?}"
                            )));
                        }
                        // The bytes since the previous wanted scalar (or
                        // the start) must be the same: events do not show
                        // every column the reader keeps (a block mapping
                        // indented by 3 spaces in one text and 2 in the
                        // other reads the same until it is closed).
                        settled = settled
                            && flow == 0
                            && agree(before.get(same.0..start), after.get(same.1..a_start))
                            && reads_alike_after(before, start, end, s1)
                            && reads_alike_after(after, a_start, a_end, s2);
                        same = (end, a_end);
                        if settled && seen == wanted && agree(before.get(end..), after.get(a_end..))
                        {
                            return Ok(seen);
                        }
                    }
                    None if v1 != v2 || s1 != s2 => {
                        return Err(at(format!(
                            "a value that was not to change reads as {v2:?} instead of {v1:?}"
                        )));
                    }
                    None => {}
                }
            }
            (x, y) if x == y => {}
            (x, y) => {
                return Err(at(format!(
                    "the rewritten text has another structure ({} where the file has {})",
                    event_name(&y),
                    event_name(&x)
                )));
            }
        }
    }
}

/// Whether two slices exist and hold the same bytes.
pub(super) fn agree(x: Option<&str>, y: Option<&str>) -> bool {
    matches!((x, y), (Some(x), Some(y)) if x == y)
}

/// Whether the scalar at `start..end` of `text`, outside any flow
/// collection, leaves the reader where the same following bytes read the
/// same whatever the scalar held: a plain or quoted scalar on one line with
/// nothing after it on that line but blanks and a comment.
pub(super) fn reads_alike_after(text: &str, start: usize, end: usize, style: ScalarStyle) -> bool {
    const BREAKS: [char; 5] = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
    if !matches!(
        style,
        ScalarStyle::Plain | ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted
    ) {
        return false;
    }
    let (Some(scalar), Some(rest)) = (text.get(start..end), text.get(end..)) else {
        return false;
    };
    if start == end || scalar.contains(BREAKS) {
        return false;
    }
    let after_blanks = rest.trim_start_matches([' ', '\t']);
    let line = match after_blanks.find('\n') {
        Some(i) => &after_blanks[..i],
        None => after_blanks,
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    let comment = line.starts_with('#') && after_blanks.len() < rest.len();
    (line.is_empty() || comment) && !line.contains(BREAKS)
}

pub(super) fn event_name(e: &EventData) -> &'static str {
    match e {
        EventData::StreamStart { .. } => "the start of the stream",
        EventData::StreamEnd => "the end of the stream",
        EventData::DocumentStart { .. } => "a document start",
        EventData::DocumentEnd { .. } => "a document end",
        EventData::Alias { .. } => "an alias",
        EventData::Scalar { .. } => "a scalar",
        EventData::SequenceStart { .. } => "a sequence",
        EventData::SequenceEnd => "the end of a sequence",
        EventData::MappingStart { .. } => "a mapping",
        EventData::MappingEnd => "the end of a mapping",
    }
}
