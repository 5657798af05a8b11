//! The safety net under every rewrite: the new text is read again by the
//! full parser and must hold the same documents, the same structure and the
//! same scalars as the old text, but for the marked values that were meant
//! to change, which must now read as their new values. A disagreement is an
//! error (the file is neither written nor committed), never a silent edit.

use super::Change;
use crate::yaml::{self, Kind, Node, Style};

/// One node of a document, in order: enough to compare two texts' trees.
#[derive(Debug, PartialEq)]
enum Item<'n> {
    Scalar {
        value: &'n str,
        line: usize,
        column: usize,
        block: bool,
    },
    Alias(&'n str),
    SequenceStart(usize),
    MappingStart(usize),
    End,
    Document,
}

fn flatten<'n>(node: &'n Node, out: &mut Vec<Item<'n>>) {
    match &node.kind {
        Kind::Scalar { value, style, .. } => out.push(Item::Scalar {
            value,
            line: node.span.line,
            column: node.span.column,
            block: matches!(style, Style::Literal | Style::Folded),
        }),
        Kind::Alias(a) => out.push(Item::Alias(a)),
        Kind::Sequence(items) => {
            out.push(Item::SequenceStart(items.len()));
            for i in items {
                flatten(i, out);
            }
            out.push(Item::End);
        }
        Kind::Mapping(pairs) => {
            out.push(Item::MappingStart(pairs.len()));
            for (k, v) in pairs {
                flatten(k, out);
                flatten(v, out);
            }
            out.push(Item::End);
        }
    }
}

fn items(docs: &[yaml::Document]) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    for d in docs {
        out.push(Item::Document);
        flatten(&d.root, &mut out);
    }
    out
}

/// Checks that `after` is `before` with exactly `changes` applied, as the
/// full YAML parser reads them. `Err` says what differs.
pub fn verify(before: &str, after: &str, changes: &[Change]) -> Result<(), String> {
    let old = yaml::parse(before).map_err(|e| format!("the file does not parse: {e}"))?;
    let new = yaml::parse(after)
        .map_err(|e| format!("the rewritten text does not parse ({e}): refusing to write it"))?;
    let (old, new) = (items(&old), items(&new));
    if old.len() != new.len() {
        return Err(format!(
            "the rewritten text reads as {} nodes where the file has {}: refusing to write it",
            new.len(),
            old.len()
        ));
    }
    let mut seen = 0;
    for (o, n) in old.iter().zip(&new) {
        match (o, n) {
            (
                Item::Scalar {
                    value: ov,
                    line,
                    column,
                    block,
                },
                Item::Scalar {
                    value: nv,
                    block: nb,
                    ..
                },
            ) => {
                let change = changes
                    .iter()
                    .find(|c| c.line == *line && c.column == *column);
                match change {
                    Some(c) => {
                        seen += 1;
                        if *ov != c.old_value || *nv != c.new_value {
                            return Err(format!(
                                "line {line}:{column}: the rewritten value reads as {nv:?}, not {:?}: refusing to write it",
                                c.new_value
                            ));
                        }
                    }
                    None if ov != nv || block != nb => {
                        return Err(format!(
                            "line {line}:{column}: a value that was not to change reads as {nv:?} instead of {ov:?}: refusing to write it"
                        ));
                    }
                    None => {}
                }
            }
            (o, n) if o == n => {}
            (o, n) => {
                return Err(format!(
                    "the rewritten text has another structure ({n:?} where the file has {o:?}): refusing to write it"
                ));
            }
        }
    }
    if seen != changes.len() {
        return Err(format!(
            "{} of {} changed values were not found where they were: refusing to write it",
            changes.len() - seen,
            changes.len()
        ));
    }
    Ok(())
}
