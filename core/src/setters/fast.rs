//! A line lexer that finds the marked scalars of plain block-style YAML
//! without building the whole tree.
//!
//! Most manifests are block mappings and sequences of one-line scalars. For
//! those, the marked values can be found line by line, which is many times
//! faster than a full parse. The lexer gives up (returns `None`) on anything
//! it does not model exactly — multi-line scalars, flow collections over
//! several lines, complex keys, top-level sequences, nested objects, lone
//! carriage returns — and the caller then uses the full parser. Where it
//! answers, it answers exactly what [`super::scan`] would (tested against it
//! on generated YAML).

use super::{CommentKind, Marked, ObjectId, parse_comment};
use crate::yaml::{Span, Style};

/// A block collection open at some indent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Map,
    Seq,
    /// A sequence at the same indent as its mapping key (`key:\n- a`).
    IndentlessSeq,
}

/// What a line's value is.
enum Value {
    /// Nothing on this line (a nested collection may follow).
    Empty,
    /// A one-line scalar: its bytes (end offset in the given text) and style;
    /// decoded with [`decode`] when needed.
    Scalar(usize, Style),
    /// A one-line flow collection, an alias, or a block scalar header.
    Other,
    /// Something not modelled.
    Unknown,
}

/// The value of a one-line scalar written `raw` in `style`; `None` for escapes
/// not modelled.
fn decode(raw: &str, style: Style) -> Option<String> {
    match style {
        Style::SingleQuoted => Some(raw[1..raw.len() - 1].replace("''", "'")),
        Style::DoubleQuoted => {
            let body = &raw[1..raw.len() - 1];
            if !body.contains('\\') {
                return Some(body.to_string());
            }
            let mut out = String::with_capacity(body.len());
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                out.push(match chars.next()? {
                    '"' => '"',
                    '\\' => '\\',
                    '/' => '/',
                    'n' => '\n',
                    't' | '\t' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    ' ' => ' ',
                    _ => return None,
                });
            }
            Some(out)
        }
        _ => Some(raw.to_string()),
    }
}

/// The identity fields of a document. Each is `None` until its key is seen,
/// then the scalar (or `None` for another kind of value): the first key wins,
/// as in a YAML reader's lookup.
#[derive(Default)]
struct Doc {
    api_version: Option<Option<String>>,
    kind: Option<Option<String>>,
    name: Option<Option<String>>,
    namespace: Option<Option<String>>,
    /// Inside the top-level `metadata:` block; the indent of its keys once known.
    metadata: Option<Option<usize>>,
    /// A `metadata:` key was seen (later ones are not what readers see).
    metadata_seen: bool,
    /// Indexes into the output of this document's markers.
    markers: Vec<usize>,
}

impl Doc {
    fn finish(self, out: &mut [Marked]) {
        let object = match (self.api_version.flatten(), self.kind.flatten()) {
            (Some(a), Some(k)) => Some(ObjectId {
                api_version: a,
                kind: k,
                namespace: self.namespace.flatten(),
                name: self.name.flatten().unwrap_or_default(),
            }),
            _ => None,
        };
        for i in self.markers {
            out[i].object = object.clone();
        }
    }
}

/// Open block collections beyond which the lexer leaves a text to the parser.
const MAX_LEXED_DEPTH: usize = 64;

/// The marked scalars of `text`, or `None` when the text needs the full parser.
pub fn lex(text: &str) -> Option<Vec<Marked>> {
    // Line breaks other than \n and \r\n count as breaks for YAML readers.
    if has_unicode_break(text) || has_lone_cr(text) || has_non_printable(text) {
        return None;
    }
    if !text.contains("$imagepolicy") {
        return Some(Vec::new());
    }
    let mut lexer = Lexer::new(text);
    let mut offset = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let mut number = 0;
    while offset < text.len() {
        number += 1;
        let end =
            memchr::memchr(b'\n', &text.as_bytes()[offset..]).map_or(text.len(), |i| offset + i);
        let raw = &text[offset..end];
        lexer.line(Line {
            start: offset,
            number,
            text: raw.strip_suffix('\r').unwrap_or(raw),
        })?;
        offset = end + 1;
    }
    lexer.doc.finish(&mut lexer.out);
    Some(lexer.out)
}

/// A line of the text: where it starts, its number, its text without the
/// line break.
struct Line<'t> {
    start: usize,
    number: usize,
    text: &'t str,
}

/// The lexer's state between lines. Each method reads one kind of line, or
/// one part of a line, and answers `None` where the full parser is needed.
struct Lexer<'t> {
    text: &'t str,
    out: Vec<Marked>,
    doc: Doc,
    /// Inside a block scalar whose parent node has this indent.
    block: Option<usize>,
    /// Inside a block scalar: the indent of its first content line.
    block_indent: Option<usize>,
    /// Inside a block scalar, before its first content line: the most spaces
    /// on a blank line so far.
    leading_blank: usize,
    /// The previous line ended in a scalar of a node with this indent: a
    /// more indented line would continue it (not modelled).
    scalar_parent: Option<usize>,
    /// Open block collections (indent, kind).
    levels: Vec<(usize, Level)>,
    /// The node the previous line left open for nested content (its indent,
    /// and whether it is a key).
    opener: Option<(usize, bool)>,
    doc_started: bool,
    /// After `...` the next document must open with `---` (not modelled).
    after_end: bool,
    /// `...` before any document is an error for YAML readers.
    stream_start: bool,
}

/// The sequence entries a line opens with (`- `, possibly several): the
/// column after them, how many, the column of the last, and the rest.
struct Entries<'t> {
    col: usize,
    dashes: usize,
    last_dash: usize,
    rest: &'t str,
}

impl<'t> Lexer<'t> {
    fn new(text: &'t str) -> Self {
        Lexer {
            text,
            out: Vec::new(),
            doc: Doc::default(),
            block: None,
            block_indent: None,
            leading_blank: 0,
            scalar_parent: None,
            levels: Vec::new(),
            opener: None,
            doc_started: false,
            after_end: false,
            stream_start: true,
        }
    }

    fn line(&mut self, line: Line<'t>) -> Option<()> {
        let indent = line.text.len() - line.text.trim_start_matches(' ').len();
        let rest = &line.text[indent..];
        if self.block_scalar_line(indent, rest)? {
            return Some(());
        }
        if rest.trim_start_matches([' ', '\t']).is_empty() || rest.starts_with('#') {
            // A blank line with a tab: whether YAML readers take it depends on
            // the token before it (after `key:` they refuse it); not modelled.
            return (!rest.starts_with('\t')).then_some(());
        }
        if rest.starts_with('\t') {
            return None;
        }
        if indent == 0 && (rest.starts_with("---") || rest.starts_with("...")) {
            return self.document_marker(rest);
        }
        if self.after_end {
            return None;
        }
        self.stream_start = false;
        if let Some(p) = self.scalar_parent.take()
            && indent > p
        {
            return None;
        }
        if rest.starts_with(['%', '?', '\t']) {
            return None;
        }
        let entries = sequence_entries(indent, rest)?;
        let Entries {
            col,
            dashes,
            last_dash,
            ..
        } = entries;
        let (key, value_at, parent) = match lex_key(entries.rest)? {
            Some((key, after)) => (Some(key), col + after, col),
            None if dashes > 0 => (None, col, last_dash),
            // A bare scalar line: a multi-line scalar (not modelled).
            None => return None,
        };
        self.place(indent, rest, &entries, key.is_some())?;
        let value_text = &line.text[value_at..];
        let lead = value_text.len() - value_text.trim_start_matches([' ', '\t']).len();
        let value_at = value_at + lead;
        let value_text = &line.text[value_at..];
        let value = lex_value(value_text);
        if let Some(k) = key {
            self.identity_field(k, indent, dashes, &value, value_text)?;
        }
        let has_marker_text = line.text.contains("$imagepolicy");
        match value {
            Value::Unknown => None,
            Value::Empty => {
                if has_marker_text {
                    return None;
                }
                self.opener = Some(match key {
                    Some(_) => (parent, true),
                    None => (last_dash, false),
                });
                Some(())
            }
            Value::Other => {
                if value_text.starts_with(['|', '>']) {
                    if has_marker_text {
                        return None;
                    }
                    self.block = Some(parent);
                    self.leading_blank = 0;
                } else {
                    self.scalar_parent = Some(parent);
                }
                Some(())
            }
            Value::Scalar(end, style) => {
                self.scalar_parent = Some(parent);
                if has_marker_text {
                    self.marked_scalar(&line, value_at, end, style)?;
                } else {
                    scalar_ends_line(&value_text[end..])?;
                }
                Some(())
            }
        }
    }

    /// A line inside a block scalar: `Some(true)` when it belongs to the
    /// scalar, `Some(false)` when the scalar ended before it.
    fn block_scalar_line(&mut self, indent: usize, rest: &str) -> Option<bool> {
        let Some(p) = self.block else {
            return Some(false);
        };
        // A tab where a block scalar's indentation is read: readers refuse
        // it before the indentation is known and below it, and take it as
        // content past it; not modelled.
        if rest.starts_with('\t') {
            return None;
        }
        if rest.trim_start_matches([' ', '\t']).is_empty() {
            if self.block_indent.is_none() {
                self.leading_blank = self.leading_blank.max(indent);
            }
            return Some(true);
        }
        if indent > p {
            match self.block_indent {
                // A leading blank line with more spaces than the first
                // content line sets the indentation for readers: the
                // scalar ends there (not modelled).
                None if indent < self.leading_blank => return None,
                None => self.block_indent = Some(indent),
                // Less indented than the first line: not modelled.
                Some(b) if indent < b => return None,
                Some(_) => {}
            }
            return Some(true);
        }
        self.block = None;
        self.block_indent = None;
        Some(false)
    }

    /// `---` or `...` at the start of a line: the document ends.
    fn document_marker(&mut self, rest: &str) -> Option<()> {
        let after = rest[3..].trim_start_matches([' ', '\t']);
        if !(rest.len() == 3 || rest[3..].starts_with([' ', '\t'])) {
            // `---x` is a plain scalar.
            return None;
        }
        if !after.is_empty() && !after.starts_with('#') {
            return None;
        }
        if self.stream_start && rest.starts_with("...") {
            return None;
        }
        self.stream_start = false;
        std::mem::take(&mut self.doc).finish(&mut self.out);
        self.scalar_parent = None;
        self.levels.clear();
        self.opener = None;
        self.doc_started = false;
        self.after_end = rest.starts_with("...");
        Some(())
    }

    /// The line must continue an open collection, or open a nested one
    /// where the previous line left room for it; the collections it opens
    /// itself (`- - x`, `- key: v`) are recorded.
    fn place(
        &mut self,
        indent: usize,
        rest: &str,
        entries: &Entries<'_>,
        keyed: bool,
    ) -> Option<()> {
        let dashes = entries.dashes;
        if !self.doc_started && dashes > 0 {
            // A top-level sequence: objects are items (not modelled).
            return None;
        }
        let kind = if dashes > 0 { Level::Seq } else { Level::Map };
        while self.levels.last().is_some_and(|(c, _)| *c > indent) {
            self.levels.pop();
        }
        let nested = match self.opener.take() {
            Some((p, _)) if indent > p => true,
            Some((p, true)) if indent == p && dashes > 0 => {
                self.levels.last() == Some(&(p, Level::Map))
            }
            _ => false,
        };
        if nested {
            let k = if dashes > 0 && self.levels.last().is_some_and(|(c, _)| *c == indent) {
                Level::IndentlessSeq
            } else {
                kind
            };
            self.levels.push((indent, k));
        } else if !self.doc_started {
            self.levels.push((indent, kind));
        } else {
            if dashes == 0 && self.levels.last() == Some(&(indent, Level::IndentlessSeq)) {
                self.levels.pop();
            }
            match self.levels.last() {
                Some(&(c, k))
                    if c == indent && (k == kind || (k == Level::IndentlessSeq && dashes > 0)) => {}
                _ => return None,
            }
        }
        self.doc_started = true;
        // Deep nesting is the parser's to judge (it refuses text nested
        // deeper than its limit); real manifests stay far below this.
        if self.levels.len() > MAX_LEXED_DEPTH {
            return None;
        }
        let mut c = indent;
        let mut t = rest;
        let mut first = true;
        while t == "-" || t.starts_with("- ") {
            if !first {
                self.levels.push((c, Level::Seq));
            }
            first = false;
            let skipped = 1 + t[1..].len() - t[1..].trim_start_matches(' ').len();
            c += skipped;
            t = &t[skipped..];
        }
        if dashes > 0 && keyed {
            self.levels.push((entries.col, Level::Map));
        }
        Some(())
    }

    /// A key of the object's identity (`apiVersion`, `kind`, and `name` and
    /// `namespace` under the top-level `metadata`).
    fn identity_field(
        &mut self,
        key: &str,
        indent: usize,
        dashes: usize,
        value: &Value,
        value_text: &str,
    ) -> Option<()> {
        let scalar = |value: &Value| match value {
            Value::Scalar(end, style) => decode(&value_text[..*end], *style),
            _ => None,
        };
        let k = match key.as_bytes().first() {
            Some(b'"') => decode(key, Style::DoubleQuoted)?,
            Some(b'\'') => decode(key, Style::SingleQuoted)?,
            _ => key.to_string(),
        };
        // An object nested in another (or a List item): not modelled.
        if (indent > 0 || dashes > 0) && k == "apiVersion" {
            return None;
        }
        // An identity field with nothing on its line is a null (or a
        // collection on the lines below): left to the parser.
        let empty = matches!(value, Value::Empty);
        let doc = &mut self.doc;
        if indent == 0 && dashes == 0 {
            doc.metadata = None;
            if empty && matches!(k.as_str(), "apiVersion" | "kind") {
                return None;
            }
            let v = scalar(value);
            match k.as_str() {
                "apiVersion" if doc.api_version.is_none() => doc.api_version = Some(v),
                "kind" if doc.kind.is_none() => doc.kind = Some(v),
                "metadata" if !doc.metadata_seen => {
                    doc.metadata_seen = true;
                    match value {
                        Value::Empty => doc.metadata = Some(None),
                        _ => return None,
                    }
                }
                _ => {}
            }
        } else if let Some(mut child) = doc.metadata {
            let child = *child.get_or_insert(indent);
            doc.metadata = Some(Some(child));
            if indent == child && dashes == 0 {
                if empty && matches!(k.as_str(), "name" | "namespace") {
                    return None;
                }
                let v = scalar(value);
                match k.as_str() {
                    "name" if doc.name.is_none() => doc.name = Some(v),
                    "namespace" if doc.namespace.is_none() => doc.namespace = Some(v),
                    _ => {}
                }
            }
        }
        Some(())
    }

    /// A one-line scalar on a line that mentions `$imagepolicy`: recorded
    /// when its comment is a marker.
    fn marked_scalar(
        &mut self,
        line: &Line<'_>,
        value_at: usize,
        end: usize,
        style: Style,
    ) -> Option<()> {
        let after = &line.text[value_at + end..];
        let trimmed = scalar_ends_line(after)?;
        if !trimmed.starts_with('#') {
            // The marker text is inside the value itself.
            return None;
        }
        let marker = parse_comment(&trimmed[1..]);
        if marker == CommentKind::NotAMarker {
            return Some(());
        }
        let decoded = decode(&line.text[value_at..value_at + end], style)?;
        let start = line.start;
        let abs_start = start + value_at;
        let abs_end = start + value_at + end;
        let hash = start + line.text.len() - trimmed.len();
        let column = |at: usize| self.text[start..at].chars().count() + 1;
        let span = Span {
            start: abs_start,
            end: abs_end,
            line: line.number,
            column: column(abs_start),
        };
        let comment_column = column(hash);
        self.doc.markers.push(self.out.len());
        self.out.push(Marked {
            marker,
            span,
            value: decoded,
            style,
            in_flow: false,
            object: None,
            path: Vec::new(),
            comment_line: line.number,
            comment_column,
        });
        Some(())
    }
}

/// The sequence entries a line opens with; `None` where a tab follows a
/// `-` (an error for YAML readers) or where an explicit key, an empty key
/// or a directive-like character follows them (not modelled).
fn sequence_entries(indent: usize, rest: &str) -> Option<Entries<'_>> {
    let mut e = Entries {
        col: indent,
        dashes: 0,
        last_dash: indent,
        rest,
    };
    while e.rest == "-" || e.rest.starts_with("- ") || e.rest.starts_with("-\t") {
        if e.rest[1..].trim_start_matches(' ').starts_with('\t') {
            return None;
        }
        e.dashes += 1;
        e.last_dash = e.col;
        let skipped = 1 + e.rest[1..].len() - e.rest[1..].trim_start_matches(' ').len();
        e.col += skipped;
        e.rest = &e.rest[skipped..];
    }
    if e.dashes > 0 && e.rest.starts_with(['%', '?', ':']) {
        return None;
    }
    Some(e)
}

/// What follows a one-line scalar on its line, blanks skipped: nothing or a
/// comment, else `None` (`"x"#` is not a comment either).
fn scalar_ends_line(after: &str) -> Option<&str> {
    let trimmed = after.trim_start_matches([' ', '\t']);
    if !trimmed.is_empty() && !trimmed.starts_with('#') {
        return None;
    }
    if trimmed.starts_with('#') && trimmed.len() == after.len() {
        return None;
    }
    Some(trimmed)
}

fn has_lone_cr(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr_iter(b'\r', b).any(|i| b.get(i + 1) != Some(&b'\n'))
}

/// Characters YAML does not allow in a stream (readers reject the file).
fn has_non_printable(text: &str) -> bool {
    let bad_ascii = |b: u8| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f;
    if text.is_ascii() {
        return text.bytes().any(bad_ascii);
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.chars().any(|c| match c as u32 {
        0..=0x7f => bad_ascii(c as u8),
        0x85 => false,
        0x80..=0x9f | 0xfffe | 0xffff => true,
        // A byte order mark anywhere but at the start.
        0xfeff => true,
        0xd800..=0xdfff => true,
        _ => false,
    })
}

/// NEL (C2 85), LINE SEPARATOR (E2 80 A8), PARAGRAPH SEPARATOR (E2 80 A9).
fn has_unicode_break(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr2_iter(0xc2, 0xe2, b).any(|i| match b[i] {
        0xc2 => b.get(i + 1) == Some(&0x85),
        _ => b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xa8 | 0xa9)),
    })
}

/// A key at the start of `s`: `Some(Some((key as written, offset after the
/// colon)))`, `Some(None)` when `s` is not a `key:` entry, `None` when not
/// modelled.
#[allow(clippy::option_option)]
fn lex_key(s: &str) -> Option<Option<(&str, usize)>> {
    if s.starts_with(['"', '\'']) {
        return match lex_value(s) {
            Value::Scalar(end, _) => {
                let after = &s[end..];
                let t = after.trim_start_matches([' ', '\t']);
                if let Some(rest) = t.strip_prefix(':') {
                    if rest.is_empty() || rest.starts_with([' ', '\t']) {
                        return Some(Some((&s[..end], s.len() - rest.len())));
                    }
                    return None;
                }
                Some(None)
            }
            Value::Unknown => None,
            _ => Some(None),
        };
    }
    if s.starts_with([
        '[', '{', '&', '*', '!', '|', '>', '%', '@', '`', ',', ']', '}', '#',
    ]) {
        return Some(None);
    }
    let b = s.as_bytes();
    for i in memchr::memchr2_iter(b':', b'#', b) {
        match b[i] {
            b':' if i + 1 == b.len() || b[i + 1] == b' ' || b[i + 1] == b'\t' => {
                let key = s[..i].trim_end_matches([' ', '\t']);
                if key.is_empty() {
                    return None;
                }
                return Some(Some((key, i + 1)));
            }
            b'#' if i > 0 && (b[i - 1] == b' ' || b[i - 1] == b'\t') => return Some(None),
            _ => {}
        }
    }
    Some(None)
}

/// The value at the start of `s` (white space already skipped).
fn lex_value(s: &str) -> Value {
    let Some(first) = s.chars().next() else {
        return Value::Empty;
    };
    match first {
        '#' => Value::Empty,
        '"' => double_quoted(s),
        '\'' => single_quoted(s),
        '[' | '{' => {
            if flow_closes(s) {
                Value::Other
            } else {
                Value::Unknown
            }
        }
        '|' | '>' => {
            // Header: at most one chomping indicator right after `|` or `>`,
            // then only white space or a comment; an explicit indentation
            // is not modelled.
            let h = &s[1..];
            let rest = h.strip_prefix(['+', '-']).unwrap_or(h);
            let rest = rest.trim_start_matches([' ', '\t']);
            if rest.is_empty() || rest.starts_with('#') {
                Value::Other
            } else {
                Value::Unknown
            }
        }
        '*' => {
            // An alias alone on the line; YAML readers take only
            // [0-9A-Za-z_-] in its name.
            let end = s.find([' ', '\t']).unwrap_or(s.len());
            let name = &s[1..end];
            let rest = s[end..].trim_start_matches([' ', '\t']);
            let named = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if named && (rest.is_empty() || rest.starts_with('#')) {
                Value::Other
            } else {
                Value::Unknown
            }
        }
        '&' | '!' | '%' | '@' | '`' | ',' | ']' | '}' => Value::Unknown,
        '-' | '?' | ':' if s.len() == 1 || s[1..].starts_with([' ', '\t']) => Value::Unknown,
        _ => plain(s),
    }
}

fn plain(s: &str) -> Value {
    let b = s.as_bytes();
    let mut end = b.len();
    for i in memchr::memchr2_iter(b'#', b':', b) {
        if b[i] == b'#' && i > 0 && (b[i - 1] == b' ' || b[i - 1] == b'\t') {
            end = i;
            break;
        }
        if b[i] == b':' && (i + 1 == b.len() || b[i + 1] == b' ' || b[i + 1] == b'\t') {
            // A mapping value in a plain scalar: an error for YAML readers.
            return Value::Unknown;
        }
    }
    let value = s[..end].trim_end_matches([' ', '\t']);
    Value::Scalar(value.len(), Style::Plain)
}

fn single_quoted(s: &str) -> Value {
    let b = s.as_bytes();
    let mut i = 1;
    while let Some(q) = memchr::memchr(b'\'', &b[i..]) {
        i += q;
        if b.get(i + 1) == Some(&b'\'') {
            i += 2;
            continue;
        }
        return Value::Scalar(i + 1, Style::SingleQuoted);
    }
    Value::Unknown
}

fn double_quoted(s: &str) -> Value {
    let b = s.as_bytes();
    let mut i = 1;
    while let Some(q) = memchr::memchr2(b'"', b'\\', &b[i..]) {
        i += q;
        if b[i] == b'\\' {
            // Escapes YAML defines without digits; the others (`\x`, `\u`,
            // `\U`, and mistakes) are left to the parser.
            if !b.get(i + 1).is_some_and(|c| {
                matches!(
                    c,
                    b'0' | b'a'
                        | b'b'
                        | b't'
                        | b'\t'
                        | b'n'
                        | b'v'
                        | b'f'
                        | b'r'
                        | b'e'
                        | b' '
                        | b'"'
                        | b'/'
                        | b'\\'
                        | b'N'
                        | b'_'
                        | b'L'
                        | b'P'
                )
            }) {
                return Value::Unknown;
            }
            i += 2;
            continue;
        }
        return Value::Scalar(i + 1, Style::DoubleQuoted);
    }
    Value::Unknown
}

/// Whether a flow collection that starts `s` is complete and well formed on
/// this line, with only white space or a comment after it.
fn flow_closes(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(end) = flow_node(b, 0, 0) else {
        return false;
    };
    let rest = s[end..].trim_start_matches([' ', '\t']);
    rest.is_empty() || (rest.starts_with('#') && rest.len() < s[end..].len())
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

/// A node inside (or starting) a flow collection at `i`; returns where it ends.
/// Conservative: forms it does not model (anchors, tags, aliases, empty
/// values, nesting deeper than 16) are refused.
fn flow_node(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    if depth > 16 || i >= b.len() {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    match b[i] {
        b'[' | b'{' => {
            let close = if b[i] == b'[' { b']' } else { b'}' };
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&close) {
                return Some(j + 1);
            }
            loop {
                // An entry: a node, optionally `: value` (a pair).
                j = flow_node(b, j, depth + 1)?;
                j = skip_ws(b, j);
                if b.get(j) == Some(&b':') {
                    j = skip_ws(b, j + 1);
                    j = flow_node(b, j, depth + 1)?;
                    j = skip_ws(b, j);
                } else if close == b'}' {
                    // A key without value: not modelled.
                    return None;
                }
                match b.get(j) {
                    Some(&b',') => {
                        j = skip_ws(b, j + 1);
                        if b.get(j) == Some(&close) {
                            return Some(j + 1);
                        }
                    }
                    Some(&c) if c == close => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b'"' => match double_quoted(&s[i..]) {
            Value::Scalar(end, _) => Some(i + end),
            _ => None,
        },
        b'\'' => match single_quoted(&s[i..]) {
            Value::Scalar(end, _) => Some(i + end),
            _ => None,
        },
        b'&' | b'*' | b'!' | b'|' | b'>' | b'%' | b'@' | b'`' | b'#' | b',' | b']' | b'}' => None,
        c => {
            // In a flow collection `?` and `:` are indicators wherever they
            // stand at the start of a node (YAML readers do not start a plain
            // scalar with them there), and `-` is one before a blank.
            if matches!(c, b'?' | b':')
                || (c == b'-'
                    && b.get(i + 1)
                        .is_none_or(|&n| n == b' ' || n == b'\t' || is_flow_indicator(n)))
            {
                return None;
            }
            // A plain scalar ends at a flow indicator, at `: `, or at ` #`.
            let mut j = i;
            let mut end = i;
            while j < b.len() {
                let c = b[j];
                if is_flow_indicator(c) {
                    break;
                }
                if c == b':' && b.get(j + 1).is_none_or(|&n| n == b' ' || n == b'\t') {
                    break;
                }
                if c == b':' && b.get(j + 1).is_some_and(|&n| is_flow_indicator(n)) {
                    // `a:]`, `a:{`: libyaml refuses the `:` (found
                    // unexpected ':').
                    return None;
                }
                if c == b'#' && j > i && (b[j - 1] == b' ' || b[j - 1] == b'\t') {
                    return None;
                }
                if c == b':' && b.get(j + 1) == Some(&b'?') {
                    // YAML readers end the scalar here; not modelled.
                    return None;
                }
                j += 1;
                if c != b' ' && c != b'\t' {
                    end = j;
                }
            }
            (end > i).then_some(end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lex;

    #[test]
    fn gives_up_where_readers_refuse_the_text() {
        for text in [
            "a: x\u{0}y # {\"$imagepolicy\": \"ns:p\"}\n",
            "a: x\u{7f} # {\"$imagepolicy\": \"ns:p\"}\n",
            "a: x\u{9f} # {\"$imagepolicy\": \"ns:p\"}\n",
            "a: x # {\"$imagepolicy\": \"ns:p\"}\rb: 1\n",
        ] {
            assert!(lex(text).is_none(), "{text:?}");
        }
        assert!(lex("a: x # {\"$imagepolicy\": \"ns:p\"}\r\n").is_some());
    }

    #[test]
    fn gives_up_on_broken_block_structure() {
        // Dedent below the root mapping, and a key where a sequence item is due.
        for text in [
            "    spec:\n      image: x # {\"$imagepolicy\": \"ns:p\"}\n  name: web\n",
            "a:\n  - x\n  b: y # {\"$imagepolicy\": \"ns:p\"}\n",
            "a: 1\n  b: x # {\"$imagepolicy\": \"ns:p\"}\n",
        ] {
            assert!(lex(text).is_none(), "{text:?}");
        }
        // Flow collections are checked, not just balanced.
        for text in [
            "a: {image: ghcr.i: x} # {\"$imagepolicy\": \"ns:p\"}\nb: x # {\"$imagepolicy\": \"ns:p\"}\n",
            "a: [x, &y z]\nb: x # {\"$imagepolicy\": \"ns:p\"}\n",
            "a: {k}\nb: x # {\"$imagepolicy\": \"ns:p\"}\n",
        ] {
            assert!(lex(text).is_none(), "{text:?}");
        }
        let flows = "a: {x: [1, \"2\", {y: z}], w: 'v'}\nb: [a:b, c]\nc: x # {\"$imagepolicy\": \"ns:p\"}\n";
        assert_eq!(lex(flows).map(|m| m.len()), Some(1));
        assert_eq!(super::super::scan(flows).map(|m| m.len()), Ok(1));
        // A tab after a dash: readers refuse the text.
        assert!(lex("a:\n  - \tx # {\"$imagepolicy\": \"ns:p\"}\n").is_none());
        // Duplicate keys: the first one names the object, as readers see it.
        let dup = "apiVersion: v1\nkind: Pod\nx: 1 # {\"$imagepolicy\": \"ns:p\"}\nkind: Other\n";
        let fast = lex(dup).unwrap();
        assert_eq!(
            fast[0].object.as_ref().map(|o| o.kind.as_str()),
            Some("Pod")
        );
        assert_eq!(super::super::scan(dup).unwrap()[0].object, fast[0].object);
        // Indentless sequences and nested items are fine.
        let ok = "a:\n- x # {\"$imagepolicy\": \"ns:p\"}\nb:\n  - - y\n    - name: z\n      image: w # {\"$imagepolicy\": \"ns:p\"}\n";
        assert_eq!(lex(ok).map(|m| m.len()), Some(2));
    }
}
