//! A YAML reader that keeps positions.
//!
//! Every node carries the byte range it occupies in the source text, its line
//! and column, so that callers can point at the exact place of a problem and
//! the setters can replace the bytes of one scalar without touching the rest.
//! Built on libyaml-safer's event stream; nothing here writes YAML.

use libyaml_safer::{EventData, MappingStyle, Parser, ScalarStyle, SequenceStyle};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::fmt;

mod compare;
mod json;

pub use compare::{Difference, Reading, compare};
pub use json::scalar_value;

/// Upper bound on the nodes produced when aliases are expanded into JSON, so a
/// small file of nested aliases cannot make the reader allocate without bound.
const MAX_ALIAS_EXPANSION: usize = 100_000;

/// Deepest nesting of collections the reader accepts. Real manifests stay
/// far below (a CRD's schema is among the deepest, at a few dozen levels);
/// deeper text is refused as an error, so that nothing that walks the tree
/// (here, in the setters, the lint or when a tree is dropped) can exhaust the
/// stack, and the reader's own cost stays bounded.
pub const MAX_DEPTH: usize = 300;

/// Where a node stands in the source text. Offsets are bytes into the text as
/// given to [`parse`]; line and column count from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub column: usize,
}

/// How a scalar is written in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Scalar {
        value: String,
        style: Style,
        tag: Option<String>,
    },
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
    Alias(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
    pub anchor: Option<String>,
    /// A flow collection (`[a, b]`, `{a: b}`); false for block collections and
    /// scalars.
    pub flow: bool,
}

/// One document of a YAML stream.
#[derive(Clone, Debug)]
pub struct Document {
    pub root: Node,
    /// Line (from 1) where the document starts (its `---` or first node).
    pub line: usize,
}

/// A YAML syntax error, with the place the parser stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}: {}", self.line, self.column, self.message)
    }
}

/// Line and column from byte offsets, in O(log n) per lookup. (libyaml's own
/// line count is off in files with CRLF line ends, so positions are computed
/// from the offsets.)
pub struct LineIndex<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        Self { text, starts }
    }

    /// The byte offset of a line and column (as [`position`](Self::position)
    /// gives them), or `None` when the text has no such place.
    pub fn offset(&self, line: usize, column: usize) -> Option<usize> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        let mut from = start;
        if start == 0 && self.text.starts_with('\u{feff}') {
            from = 3;
        }
        let rest = self.text.get(from..)?;
        let skip = column.checked_sub(1)?;
        match rest.char_indices().nth(skip) {
            Some((i, _)) => Some(from + i),
            None if rest.chars().count() == skip => Some(self.text.len()),
            None => None,
        }
    }

    /// Line and column (from 1; columns in characters, a byte order mark not
    /// counted) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let mut from = start;
        // The byte order mark is not a column.
        if start == 0 && self.text.starts_with('\u{feff}') {
            from = 3.min(offset);
        }
        let column = self.text.get(from..offset).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    fn span_at(&self, start: usize, end: usize) -> Span {
        let (line, column) = self.position(start);
        Span {
            start,
            end,
            line,
            column,
        }
    }
}

enum Frame {
    Seq(Node, Vec<Node>),
    Map(Node, Vec<(Node, Node)>, Option<Node>),
}

thread_local! {
    static READING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside the YAML reader, where a panic of the
/// reader (libyaml-safer has `panic!`s on paths libyaml handles, such as a
/// tag before `,` in a flow collection) is caught and becomes a syntax
/// error. A process's panic hook may use it to keep those caught panics off
/// its logs; the library installs no hook of its own.
pub fn reading() -> bool {
    READING.with(std::cell::Cell::get)
}

/// A panic hook for a program's `main`: the previous hook, except for the
/// reader's own panics, which [`parse`] turns into syntax errors. Install it
/// before starting threads.
pub fn install_quiet_reader_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !reading() {
            previous(info);
        }
    }));
}

/// Parses every document of `text`. Never panics: a failure of the reader
/// itself is a syntax error too.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    struct Reading(bool);
    impl Drop for Reading {
        fn drop(&mut self) {
            READING.with(|r| r.set(self.0));
        }
    }
    let _restore = Reading(READING.with(|r| r.replace(true)));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse_inner(text))).unwrap_or_else(
        |_| {
            Err(SyntaxError {
                line: 1,
                column: 1,
                message: "the YAML reader cannot read this text".to_string(),
            })
        },
    )
}

/// Offsets in the text the reader sees (CRLF read as LF, a final LF added)
/// back to offsets in the original text.
struct OffsetMap {
    /// Offsets (in the reader's text) of the LFs that had a CR before them.
    crs: Vec<usize>,
    /// libyaml counts from after a byte order mark.
    base: usize,
    len: usize,
}

impl OffsetMap {
    fn original(&self, index: u64) -> usize {
        let i = index as usize;
        let shift = self.crs.partition_point(|&p| p < i);
        (i + shift + self.base).min(self.len)
    }
}

/// Where a scalar's text starts: after its `&anchor` and `!tag`, which
/// libyaml counts as part of the node, and the blanks, line breaks and
/// comments between them and the text (`!t # note` with the text on the
/// next line). An anchor's name is [0-9A-Za-z_-] (`&a:0` anchors the
/// scalar `:0`); a tag runs to a blank (or, in a flow collection, to the
/// `,` that ends the node's span).
fn skip_properties(text: &str, mut at: usize, end: usize) -> usize {
    let b = text.as_bytes();
    while at < end && (b[at] == b'&' || b[at] == b'!') {
        let anchor = b[at] == b'&';
        at += 1;
        while at < end
            && if anchor {
                b[at].is_ascii_alphanumeric() || matches!(b[at], b'_' | b'-')
            } else {
                !matches!(b[at], b' ' | b'\t' | b'\n' | b'\r')
            }
        {
            at += 1;
        }
        loop {
            while at < end && matches!(b[at], b' ' | b'\t' | b'\n' | b'\r') {
                at += 1;
            }
            // A comment needs a blank or a line break before it; the
            // properties end at one, so any `#` here starts a comment.
            if at < end && b[at] == b'#' && matches!(b[at - 1], b' ' | b'\t' | b'\n' | b'\r') {
                while at < end && !matches!(b[at], b'\n' | b'\r') {
                    at += 1;
                }
            } else {
                break;
            }
        }
    }
    at
}

/// A text as the reader sees it: libyaml-safer mishandles CRLF inside block
/// scalars (it reads two line breaks) and can panic when a block scalar ends
/// the input without a line break, so it reads the text with LF line ends
/// and a final LF, and offsets are mapped back. It also refuses text whose
/// first byte is 0xEF (U+F000..U+FFFF) but not a byte order mark: such text
/// is given one. Either way, the reader's offsets count from after a byte
/// order mark.
struct Input<'t> {
    text: &'t str,
    /// Built when a position is first asked for: the comparison of two
    /// texts needs none unless they differ.
    lines: std::cell::OnceCell<LineIndex<'t>>,
    map: OffsetMap,
    normalized: Option<String>,
}

impl<'t> Input<'t> {
    fn new(text: &'t str) -> Self {
        // libyaml skips a UTF-8 byte order mark and counts offsets after it.
        let base = if text.starts_with('\u{feff}') { 3 } else { 0 };
        let mut map = OffsetMap {
            crs: Vec::new(),
            base,
            len: text.len(),
        };
        let bom_needed = text.as_bytes().get(base) == Some(&0xef);
        let normalized =
            (bom_needed || text.contains("\r\n") || !text.ends_with('\n')).then(|| {
                let mut n = String::with_capacity(text.len() + 4);
                let prefix = if bom_needed { "\u{feff}" } else { "" };
                n.push_str(prefix);
                let mut rest = &text[base..];
                while let Some(i) = rest.find("\r\n") {
                    n.push_str(&rest[..i]);
                    map.crs.push(n.len() - prefix.len());
                    n.push('\n');
                    rest = &rest[i + 2..];
                }
                n.push_str(rest);
                if !n.ends_with('\n') {
                    n.push('\n');
                }
                n
            });
        Input {
            text,
            lines: std::cell::OnceCell::new(),
            map,
            normalized,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.normalized.as_deref().unwrap_or(self.text).as_bytes()
    }

    fn lines(&self) -> &LineIndex<'t> {
        self.lines.get_or_init(|| LineIndex::new(self.text))
    }

    /// The next event and its span in the original text.
    fn next(&self, parser: &mut Parser<'_>) -> Result<(EventData, Span), SyntaxError> {
        let (data, start, end) = self.next_raw(parser)?;
        Ok((data, self.lines().span_at(start, end)))
    }

    /// The next event and the byte offsets of its start and end in the
    /// original text, without computing lines and columns.
    fn next_raw(&self, parser: &mut Parser<'_>) -> Result<(EventData, usize, usize), SyntaxError> {
        let event = parser.parse().map_err(|e| {
            // Reader errors (a character YAML does not allow) carry no mark:
            // point at the first such character.
            let (line, column) = match e.problem_mark() {
                Some(m) => self.lines().position(self.map.original(m.index)),
                None => self
                    .lines()
                    .position(first_unreadable(self.text).unwrap_or(0)),
            };
            SyntaxError {
                line,
                column,
                message: e.problem().to_string(),
            }
        })?;
        Ok((
            event.data,
            self.map.original(event.start_mark.index),
            self.map.original(event.end_mark.index),
        ))
    }
}

fn too_deep(span: Span) -> SyntaxError {
    SyntaxError {
        line: span.line,
        column: span.column,
        message: format!(
            "collections nested deeper than {MAX_DEPTH} levels: no manifest needs that many; refusing to read further"
        ),
    }
}

/// The reader's input, handed over in chunks of 256 bytes growing to
/// 8 KiB, cut at character boundaries. Given a whole slice, libyaml-safer
/// decodes all of it into its buffer of `char`s (four bytes each) before
/// the first token, however little of it is then read. The first chunks
/// are small, for a [`compare`] that stops after a change near the top of
/// a file.
struct Chunks<'t> {
    rest: &'t [u8],
    size: usize,
}

impl<'t> Chunks<'t> {
    const FIRST: usize = 256;
    const MAX: usize = 8192;

    fn new(rest: &'t [u8]) -> Self {
        Chunks {
            rest,
            size: Self::FIRST,
        }
    }

    /// The length of the next chunk: up to `size` bytes, ending where a
    /// character ends (the input is UTF-8 text).
    fn next_len(&self) -> usize {
        let mut n = self.size.min(self.rest.len());
        while n < self.rest.len() && n > 0 && (self.rest[n] & 0xC0) == 0x80 {
            n -= 1;
        }
        if n == 0 { self.rest.len().min(4) } else { n }
    }
}

impl std::io::Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

impl std::io::BufRead for Chunks<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Ok(&self.rest[..self.next_len()])
    }

    fn consume(&mut self, amount: usize) {
        self.rest = &self.rest[amount.min(self.rest.len())..];
        self.size = (self.size * 2).min(Self::MAX);
    }
}

fn parse_inner(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let source = Input::new(text);
    let lines = source.lines();
    let mut input = Chunks::new(source.bytes());
    // Either way, the reader's offsets count from after a byte order mark.
    let mut parser = Parser::new();
    parser.set_input(&mut input);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut doc_line = 1;
    let mut root: Option<Node> = None;
    loop {
        let (data, span) = source.next(&mut parser)?;
        let finished: Option<Node> = match data {
            EventData::StreamStart { .. } => None,
            EventData::StreamEnd => break,
            EventData::DocumentStart { .. } => {
                doc_line = span.line;
                root = None;
                None
            }
            EventData::DocumentEnd { .. } => {
                if let Some(node) = root.take() {
                    docs.push(Document {
                        root: node,
                        line: doc_line,
                    });
                }
                None
            }
            EventData::Alias { anchor } => Some(Node {
                kind: NodeKind::Alias(anchor),
                span,
                anchor: None,
                flow: false,
            }),
            EventData::Scalar {
                anchor,
                tag,
                value,
                style,
                ..
            } => {
                let span = if anchor.is_some() || tag.is_some() {
                    lines.span_at(skip_properties(text, span.start, span.end), span.end)
                } else {
                    span
                };
                let style = match style {
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                    _ => Style::Plain,
                };
                Some(Node {
                    kind: NodeKind::Scalar { value, style, tag },
                    span,
                    anchor,
                    flow: false,
                })
            }
            EventData::SequenceStart { .. } | EventData::MappingStart { .. }
                if stack.len() >= MAX_DEPTH =>
            {
                return Err(too_deep(span));
            }
            EventData::SequenceStart { anchor, style, .. } => {
                stack.push(Frame::Seq(
                    Node {
                        kind: NodeKind::Sequence(Vec::new()),
                        span,
                        anchor,
                        flow: style == SequenceStyle::Flow,
                    },
                    Vec::new(),
                ));
                None
            }
            EventData::MappingStart { anchor, style, .. } => {
                stack.push(Frame::Map(
                    Node {
                        kind: NodeKind::Mapping(Vec::new()),
                        span,
                        anchor,
                        flow: style == MappingStyle::Flow,
                    },
                    Vec::new(),
                    None,
                ));
                None
            }
            EventData::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(mut node, items)) => {
                    node.kind = NodeKind::Sequence(items);
                    node.span.end = span.end;
                    Some(node)
                }
                _ => return Err(unbalanced(span)),
            },
            EventData::MappingEnd => match stack.pop() {
                Some(Frame::Map(mut node, pairs, _)) => {
                    node.kind = NodeKind::Mapping(pairs);
                    node.span.end = span.end;
                    Some(node)
                }
                _ => return Err(unbalanced(span)),
            },
        };
        if let Some(node) = finished {
            match stack.last_mut() {
                Some(Frame::Seq(_, items)) => items.push(node),
                Some(Frame::Map(_, pairs, key)) => match key.take() {
                    Some(k) => pairs.push((k, node)),
                    None => *key = Some(node),
                },
                None => root = Some(node),
            }
        }
    }
    Ok(docs)
}

/// The byte offset of the first character a YAML reader refuses (control
/// characters other than tab, line feed and carriage return; U+FFFE, U+FFFF).
fn first_unreadable(text: &str) -> Option<usize> {
    text.char_indices()
        .find(|&(_, c)| {
            (c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{85}'))
                || matches!(c, '\u{fffe}' | '\u{ffff}')
        })
        .map(|(i, _)| i)
}

fn unbalanced(span: Span) -> SyntaxError {
    SyntaxError {
        line: span.line,
        column: span.column,
        message: "unbalanced collection events".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_scalar_bytes() {
        let text = "a: 1\nb:\n  - 'x y'\n  - \"z\" # c\n";
        let docs = parse(text).unwrap();
        let root = &docs[0].root;
        let b = root.get("b").unwrap();
        let NodeKind::Sequence(items) = &b.kind else {
            panic!("not a sequence")
        };
        assert_eq!(&text[items[0].span.start..items[0].span.end], "'x y'");
        assert_eq!(&text[items[1].span.start..items[1].span.end], "\"z\"");
        assert_eq!(items[1].span.line, 4);
    }

    #[test]
    fn bom_and_multibyte_offsets() {
        let text = "\u{feff}k: \"é\"\nv: ü-tag\n";
        let docs = parse(text).unwrap();
        let v = docs[0].root.get("v").unwrap();
        assert_eq!(&text[v.span.start..v.span.end], "ü-tag");
    }

    #[test]
    fn text_starting_with_a_character_from_u_f000_to_u_ffff() {
        // libyaml-safer's reader takes a first byte 0xEF for the start of a
        // byte order mark and refuses anything else.
        for text in [
            "\u{ff21}: 1\nv: x\n",
            "\u{febf}: 1\r\nv: x",
            "\u{feff}\u{ff21}: 1\nv: x\n",
        ] {
            let docs = parse(text).unwrap();
            let v = docs[0].root.get("v").unwrap();
            assert_eq!(&text[v.span.start..v.span.end], "x", "{text:?}");
            assert_eq!((v.span.line, v.span.column), (2, 4), "{text:?}");
        }
    }

    #[test]
    fn an_anchor_name_ends_where_readers_end_it() {
        for (text, value) in [
            ("a: &x:0\n", ":0"),
            ("a: &x y\n", "y"),
            ("a: !t &x z\n", "z"),
            // Comments between the properties and the text are not the text.
            ("a: !t # note\n  z\n", "z"),
            ("a: &x # note\r\n# more\n  z # end\n", "z"),
        ] {
            let docs = parse(text).unwrap();
            let v = docs[0].root.get("a").unwrap();
            assert_eq!(&text[v.span.start..v.span.end], value, "{text:?}");
        }
    }

    #[test]
    fn resolution_follows_core_schema() {
        let docs = parse("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: 1.2.3\ng: yes\n").unwrap();
        let v = docs[0].root.to_json().unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], "1");
        assert_eq!(v["c"], true);
        assert_eq!(v["d"], Value::Null);
        assert_eq!(v["e"], 1.5);
        assert_eq!(v["f"], "1.2.3");
        assert_eq!(v["g"], "yes");
    }

    #[test]
    fn offsets_and_positions_are_inverse() {
        for text in ["a: 1\nb: é2\n", "\u{feff}x: ü\r\ny: 2", "", "k:\n  - v\n"] {
            let lines = LineIndex::new(text);
            for (i, _) in text.char_indices().chain([(text.len(), ' ')]) {
                if text.starts_with('\u{feff}') && i < 3 {
                    continue;
                }
                let (line, column) = lines.position(i);
                assert_eq!(lines.offset(line, column), Some(i), "{text:?} at {i}");
            }
        }
        let lines = LineIndex::new("ab\n");
        assert_eq!(lines.offset(1, 9), None);
        assert_eq!(lines.offset(3, 1), None);
        assert_eq!(lines.offset(0, 1), None);
    }

    #[test]
    fn multi_document_lines() {
        let docs = parse("---\na: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].line, 3);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1, "{err}");
    }

    #[test]
    fn crlf_block_scalars_and_anchored_scalars() {
        let text = "a: |\r\n  line one\r\n  line two\r\nb: &x \"v\" # c\r\nc: !!str 1.0\r\nd: *x";
        let docs = parse(text).unwrap();
        let root = &docs[0].root;
        assert_eq!(
            root.get("a").unwrap().as_str(),
            Some("line one\nline two\n")
        );
        let b = root.get("b").unwrap();
        assert_eq!(&text[b.span.start..b.span.end], "\"v\"");
        assert_eq!((b.span.line, b.span.column), (4, 7));
        let c = root.get("c").unwrap();
        assert_eq!(&text[c.span.start..c.span.end], "1.0");
        let d = root.get("d").unwrap();
        assert_eq!(&text[d.span.start..d.span.end], "*x");
    }

    #[test]
    fn reader_panics_become_errors() {
        // libyaml-safer panics on a tag followed by `,` in a flow collection.
        let e = parse("[!t, a]\n").unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
        assert!(parse("a: [1]\n").is_ok());
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let docs = parse(&text).unwrap();
        assert!(docs[0].root.to_json().is_err());
    }

    /// [`compare`] reading as far as `read` says, with one expected change,
    /// of `old` to `new`, of the scalar that starts at `at` in `before`.
    fn one(
        read: Reading,
        before: &str,
        after: &str,
        at: usize,
        old: &str,
        new: &str,
    ) -> Result<usize, Difference> {
        let (old, new) = (old.to_string(), new.to_string());
        compare(
            before,
            after,
            &|o| (o == at).then(|| (old.clone(), new.clone())),
            1,
            read,
        )
    }

    /// Where the scalar reading `old` starts: at its quote, if quoted.
    fn value_at(before: &str, old: &str) -> usize {
        let at = before.find(old).unwrap();
        match before[..at].chars().last() {
            Some('"' | '\'') => at - 1,
            _ => at,
        }
    }

    /// [`compare`] with one expected change, of `old` to `new`, at the
    /// first occurrence of `old` in `before`.
    fn compare_one(before: &str, after: &str, old: &str, new: &str) -> Result<usize, Difference> {
        one(
            Reading::MayStopEarly,
            before,
            after,
            value_at(before, old),
            old,
            new,
        )
    }

    #[test]
    fn a_document_is_read_down_to_its_last_change_when_the_rest_agrees() {
        // What follows the change is text the reader refuses: had it been
        // read, the comparison would have failed, as the whole reading does.
        let tail = "  other: [unclosed\n";
        for line in [
            "  image: app:1.0.0 # {\"$imagepolicy\": \"ns:p\"}\n",
            "  image: app:1.0.0\n",
            "  image: \"app:1.0.0\"   # quoted\r\n",
            "  - 'app:1.0.0'\n",
        ] {
            for bom in ["", "\u{feff}"] {
                let before = format!("{bom}spec:\n{line}{tail}");
                let after = before.replacen("1.0.0", "1.10.0", 1);
                let (at, old, new) = (value_at(&before, "app:1.0.0"), "app:1.0.0", "app:1.10.0");
                assert_eq!(
                    one(Reading::MayStopEarly, &before, &after, at, old, new),
                    Ok(1),
                    "{line:?}"
                );
                let whole = one(Reading::Whole, &before, &after, at, old, new);
                assert!(matches!(whole, Err(Difference::Before(_))), "{whole:?}");
            }
        }
        // Where the value's line goes on, spans lines, or sits in a flow
        // collection, the rest is read.
        for (before, old, starts) in [
            (
                "spec: {image: app:1.0.0, other: [unclosed\n",
                "app:1.0.0",
                "app",
            ),
            (
                "spec:\n  image: app:1.0.0\n    more\n  other: [unclosed\n",
                "app:1.0.0 more",
                "app",
            ),
            (
                "spec:\n  - [app:1.0.0 # c\n  ]\n  - [unclosed\n",
                "app:1.0.0",
                "app",
            ),
            (
                "spec:\n  image: |\n    app:1.0.0\n  other: [unclosed\n",
                "app:1.0.0\n",
                "|",
            ),
        ] {
            let after = before.replacen("1.0.0", "1.10.0", 1);
            let new = old.replacen("1.0.0", "1.10.0", 1);
            let at = before.find(starts).unwrap();
            // The change is seen, and the tail is read: the reader refuses it.
            let e = one(Reading::MayStopEarly, before, &after, at, old, &new);
            assert!(matches!(e, Err(Difference::Before(_))), "{before:?}: {e:?}");
        }
        // A difference after the change is still seen: the bytes no longer agree.
        let before = "spec:\n  image: app:1.0.0\n  replicas: 1\n";
        let after = before
            .replacen("1.0.0", "1.10.0", 1)
            .replacen(": 1\n", ": 2\n", 1);
        let e = compare_one(before, &after, "app:1.0.0", "app:1.10.0").unwrap_err();
        assert!(e.to_string().contains("instead of"), "{e}");
        // So is a line before the change that moved the value's column,
        // or a collection's above it: the events agree down to the change,
        // but the reader closes one mapping at `c` in one text and two in
        // the other.
        let before = "a:\n  image: app:1.0.0\n  b: [unclosed\n";
        let after = "a:\n   image: app:1.10.0\n  b: [unclosed\n";
        assert!(
            one(
                Reading::MayStopEarly,
                before,
                after,
                12,
                "app:1.0.0",
                "app:1.10.0"
            )
            .is_err()
        );
        let before = "a:\n  b:\n    image: app:1.0.0\n  c: 1\n";
        let after = "a:\n   b:\n    image: app:1.10.0\n  c: 1\n";
        let (at, old, new) = (value_at(before, "app:1.0.0"), "app:1.0.0", "app:1.10.0");
        assert!(one(Reading::Whole, before, after, at, old, new).is_err());
        assert!(compare_one(before, after, old, new).is_err());
    }

    /// Stopping after the last change answers as reading both texts whole,
    /// on every text here that parses, each of its scalars changed in turn
    /// (and with the next one): keys and values, flow and block, quoted,
    /// with comments or without.
    ///
    /// Why it may stop early ([`compare`]):
    ///
    /// Once `wanted` such scalars have been seen, the reading stops at the next
    /// explicit document start (`---`) from which both texts hold the same
    /// bytes to their end: there the reader starts afresh (no open collection,
    /// no pending key, the previous document's directives dropped; a `---`
    /// inside a flow collection is an error), so the same bytes read as the
    /// same events in both. In a file of many documents, only those up to the
    /// last change are read twice.
    ///
    /// Within a document, the reading stops right after the last wanted scalar
    /// when every wanted scalar [`reads_alike_after`], both texts hold the same bytes
    /// before each wanted scalar (from the end of the one before it, or from
    /// their start), and the same bytes from the end of the last one to their
    /// end. The reader is then in the same state in both texts but for offsets
    /// (see below), so those bytes read as the same events in
    /// both, as after a `---`: a marked tag near the top of a long file costs
    /// the lines down to it, not the file.
    ///
    /// Why the state is then the same in two texts that hold the same bytes
    /// before the scalar (but for earlier such scalars) and after it (libyaml's
    /// scanner and parser, of which libyaml-safer is a line-by-line port): the
    /// parser's state is made of the events so far, which [`compare`] found
    /// equal, and it never looks at positions. The scanner's state is its
    /// indentation stack (columns of block collections opened on earlier lines
    /// or left of the scalar: the same), its flow level (0), its queue of
    /// tokens read ahead and the characters it has buffered (read from the same
    /// bytes), and the simple key it may still be waiting on. The scalar's
    /// length shows only in the current column and offset until the line ends:
    /// nothing on the line after the scalar is a token whose column is looked
    /// at (blanks and a comment are skipped; the scalar cannot end on a column
    /// left of where it started, so the plain scalar's indentation check passes
    /// in both), and a simple key pending from this line is dropped in both
    /// before the next token, on a later line, is taken: by line, or by the
    /// 1,024-character limit at the scalar's end, or as an error before the
    /// scalar's event in both when it was required. From the next line on,
    /// lines and columns are the same in both texts; offsets differ by the same
    /// amount everywhere, and they only name positions.
    #[test]
    fn stopping_early_answers_as_the_whole_reading() {
        fn scalars(n: &Node, out: &mut Vec<(usize, usize, String, Style)>) {
            match &n.kind {
                NodeKind::Scalar { value, style, tag } => {
                    if n.anchor.is_none() && tag.is_none() {
                        out.push((n.span.start, n.span.end, value.clone(), *style));
                    }
                }
                NodeKind::Sequence(items) => items.iter().for_each(|i| scalars(i, out)),
                NodeKind::Mapping(pairs) => pairs.iter().for_each(|(k, v)| {
                    scalars(k, out);
                    scalars(v, out);
                }),
                NodeKind::Alias(_) => {}
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut texts: Vec<String> = Vec::new();
        for dir in [
            "core/tests/data/fuzz",
            "tests/golden/setters",
            "tests/golden/lint/bad",
            "tests/golden/lint/clean",
            "demo/fleet",
            "manifests/install",
            "examples/semver",
        ] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                if let Ok(t) = std::fs::read_to_string(e.unwrap().path()) {
                    texts.push(t);
                }
            }
        }
        let mut checked = 0;
        for text in &texts {
            let Ok(docs) = parse(text) else { continue };
            let mut found = Vec::new();
            for d in &docs {
                scalars(&d.root, &mut found);
            }
            for (i, (start, end, value, style)) in found.iter().enumerate().take(200) {
                let mut changes = vec![(*start, *end, value.clone(), *style)];
                if let Some(next) = found.get(i + 1) {
                    changes.push(next.clone());
                }
                for n in 1..=changes.len() {
                    let picked = &changes[..n];
                    let mut after = text.clone();
                    let mut table = Vec::new();
                    for (k, (start, end, value, style)) in picked.iter().enumerate().rev() {
                        let new = format!("zz{k}");
                        let encoded = match style {
                            Style::SingleQuoted => format!("'{new}'"),
                            Style::DoubleQuoted => format!("\"{new}\""),
                            _ => new.clone(),
                        };
                        if start == end || matches!(style, Style::Literal | Style::Folded) {
                            continue;
                        }
                        after.replace_range(*start..*end, &encoded);
                        table.push((*start, value.clone(), new));
                    }
                    let expected = |o: usize| {
                        table
                            .iter()
                            .find(|(s, _, _)| *s == o)
                            .map(|(_, a, b)| (a.clone(), b.clone()))
                    };
                    let early =
                        compare(text, &after, &expected, table.len(), Reading::MayStopEarly);
                    let whole = compare(text, &after, &expected, table.len(), Reading::Whole);
                    assert_eq!(early, whole, "{text:?}\n->\n{after:?}");
                    checked += 1;
                    // And with a line above the first change indented by
                    // one more space, as a wrong rewrite might do.
                    let Some(first) = table.iter().map(|(s, _, _)| *s).min() else {
                        continue;
                    };
                    let starts: Vec<usize> = std::iter::once(0)
                        .chain(text[..first].match_indices('\n').map(|(i, _)| i + 1))
                        .filter(|&i| i < first)
                        .collect();
                    for &line in starts.iter().rev().take(8) {
                        let mut moved = after.clone();
                        moved.insert(line, ' ');
                        let early =
                            compare(text, &moved, &expected, table.len(), Reading::MayStopEarly);
                        let whole = compare(text, &moved, &expected, table.len(), Reading::Whole);
                        assert_eq!(early, whole, "{text:?}\n->\n{moved:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 500, "only {checked} comparisons");
    }

    #[test]
    fn documents_after_the_last_change_are_read_once_when_their_bytes_agree() {
        // The third document is one the reader refuses: had it been read,
        // the comparison would have failed.
        let before = "a: 1.0.0\n---\nb: 2\n---\nc: [unclosed\n";
        let after = before.replacen("1.0.0", "2.0.0", 1);
        assert_eq!(compare_one(before, &after, "1.0.0", "2.0.0").unwrap(), 1);
        // A change in the first document is read in full, and a difference
        // in a later one is still seen: its bytes no longer agree.
        let before = "a: 1.0.0\n---\nb: 2\n---\nc: 3\n";
        let after = before
            .replacen("1.0.0", "2.0.0", 1)
            .replacen("c: 3", "c: 4", 1);
        let e = compare_one(before, &after, "1.0.0", "2.0.0").unwrap_err();
        assert!(e.to_string().contains("instead of"), "{e}");
        // So is a document start that moved.
        let after = before
            .replacen("1.0.0", "2.0.0", 1)
            .replacen("b: 2\n---", "b: 2\n---\n---", 1);
        assert!(compare_one(before, &after, "1.0.0", "2.0.0").is_err());
        // Before every change is seen, the reading goes on past `---`.
        let before = "a: x\n---\nb: 1.0.0\n";
        let after = before.replacen("1.0.0", "2.0.0", 1);
        assert_eq!(compare_one(before, &after, "1.0.0", "2.0.0").unwrap(), 1);
        let e = compare_one(before, &before.replacen("x", "y", 1), "1.0.0", "1.0.0").unwrap_err();
        assert!(e.to_string().contains("instead of"), "{e}");
    }
}
