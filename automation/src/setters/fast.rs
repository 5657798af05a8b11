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

#[derive(Default)]
struct Doc {
    api_version: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    /// Inside the top-level `metadata:` block; the indent of its keys once known.
    metadata: Option<Option<usize>>,
    /// Indexes into the output of this document's markers.
    markers: Vec<usize>,
}

impl Doc {
    fn finish(self, out: &mut [Marked]) {
        let object = match (&self.api_version, &self.kind) {
            (Some(a), Some(k)) => Some(ObjectId {
                api_version: a.clone(),
                kind: k.clone(),
                namespace: self.namespace.clone(),
                name: self.name.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        for i in self.markers {
            out[i].object = object.clone();
        }
    }
}

/// The marked scalars of `text`, or `None` when the text needs the full parser.
pub fn lex(text: &str) -> Option<Vec<Marked>> {
    // Line breaks other than \n and \r\n count as breaks for YAML readers.
    if has_unicode_break(text) || has_lone_cr(text) {
        return None;
    }
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let mut out: Vec<Marked> = Vec::new();
    let mut doc = Doc::default();
    // Inside a block scalar whose parent node has this indent.
    let mut block: Option<usize> = None;
    // The previous line ended in a scalar of a node with this indent: a more
    // indented line would continue it (not modelled).
    let mut scalar_parent: Option<usize> = None;
    let mut offset = bom;
    let mut line_no = 0;
    if !text.contains("$imagepolicy") {
        return Some(out);
    }
    // Inside a block scalar: the indent of its first content line.
    let mut block_indent: Option<usize> = None;
    while offset < text.len() {
        line_no += 1;
        let line_end =
            memchr::memchr(b'\n', &text.as_bytes()[offset..]).map_or(text.len(), |i| offset + i);
        let raw = &text[offset..line_end];
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let start = offset;
        offset = line_end + 1;

        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if let Some(p) = block {
            if rest.trim_start_matches([' ', '\t']).is_empty() {
                continue;
            }
            if indent > p {
                match block_indent {
                    None => block_indent = Some(indent),
                    // Less indented than the first line: not modelled.
                    Some(b) if indent < b => return None,
                    Some(_) => {}
                }
                continue;
            }
            block = None;
            block_indent = None;
        }
        if rest.trim_start_matches([' ', '\t']).is_empty() || rest.starts_with('#') {
            continue;
        }
        if rest.starts_with('\t') {
            return None;
        }
        if indent == 0 && (rest.starts_with("---") || rest.starts_with("...")) {
            let after = rest[3..].trim_start_matches([' ', '\t']);
            if !(rest.len() == 3 || rest[3..].starts_with([' ', '\t'])) {
                // `---x` is a plain scalar.
                return None;
            }
            if !after.is_empty() && !after.starts_with('#') {
                return None;
            }
            std::mem::take(&mut doc).finish(&mut out);
            scalar_parent = None;
            continue;
        }
        if let Some(p) = scalar_parent.take()
            && indent > p
        {
            return None;
        }
        if rest.starts_with(['%', '?', '\t']) {
            return None;
        }
        // Sequence entries: `- `, possibly several on one line.
        let mut col = indent;
        let mut dashes = 0;
        let mut last_dash = indent;
        let mut s = rest;
        while s == "-" || s.starts_with("- ") || s.starts_with("-\t") {
            if indent == 0 {
                // A top-level sequence: objects are items (not modelled).
                return None;
            }
            dashes += 1;
            last_dash = col;
            let skipped = 1 + s[1..].len() - s[1..].trim_start_matches([' ', '\t']).len();
            col += skipped;
            s = &s[skipped..];
        }
        let (key, value_at, parent) = match lex_key(s)? {
            Some((key, after)) => (Some(key), col + after, col),
            None if dashes > 0 => (None, col, last_dash),
            None if s.is_empty() => continue,
            // A bare scalar line: a multi-line scalar (not modelled).
            None => return None,
        };
        let value_text = &line[value_at..];
        let lead = value_text.len() - value_text.trim_start_matches([' ', '\t']).len();
        let value_at = value_at + lead;
        let value_text = &line[value_at..];
        let value = lex_value(value_text);
        let scalar = |value: &Value| match value {
            Value::Scalar(end, style) => decode(&value_text[..*end], *style),
            _ => None,
        };
        // Top-level fields of the object.
        if let Some(k) = key {
            let k = match k.as_bytes().first() {
                Some(b'"') => decode(k, Style::DoubleQuoted)?,
                Some(b'\'') => decode(k, Style::SingleQuoted)?,
                _ => k.to_string(),
            };
            if indent > 0 && k == "apiVersion" {
                return None;
            }
            if indent == 0 && dashes == 0 {
                doc.metadata = None;
                let v = scalar(&value);
                match k.as_str() {
                    "apiVersion" => doc.api_version = v,
                    "kind" => doc.kind = v,
                    "metadata" => match value {
                        Value::Empty => doc.metadata = Some(None),
                        _ => return None,
                    },
                    _ => {}
                }
            } else if let Some(mut child) = doc.metadata {
                let child = *child.get_or_insert(indent);
                doc.metadata = Some(Some(child));
                if indent == child && dashes == 0 {
                    let v = scalar(&value);
                    match k.as_str() {
                        "name" => doc.name = v,
                        "namespace" => doc.namespace = v,
                        _ => {}
                    }
                }
            }
        } else if indent == 0 {
            return None;
        }
        let has_marker_text = line.contains("$imagepolicy");
        match value {
            Value::Unknown => return None,
            Value::Empty => {
                if has_marker_text {
                    return None;
                }
            }
            Value::Other => {
                if line[value_at..].starts_with(['|', '>']) {
                    if has_marker_text {
                        return None;
                    }
                    block = Some(parent);
                } else {
                    scalar_parent = Some(parent);
                }
            }
            Value::Scalar(ve, style) => {
                scalar_parent = Some(parent);
                let after = &line[value_at + ve..];
                let trimmed = after.trim_start_matches([' ', '\t']);
                if !trimmed.is_empty() && !trimmed.starts_with('#') {
                    return None;
                }
                if trimmed.starts_with('#') && trimmed.len() == after.len() {
                    // `"x"#` — not a comment.
                    return None;
                }
                if !has_marker_text {
                    continue;
                }
                if !trimmed.starts_with('#') {
                    // The marker text is inside the value itself.
                    return None;
                }
                let comment = &trimmed[1..];
                let marker = parse_comment(comment);
                if marker == CommentKind::NotAMarker {
                    continue;
                }
                let decoded = decode(&value_text[..ve], style)?;
                let abs_start = start + value_at;
                let abs_end = start + value_at + ve;
                let hash = start + line.len() - trimmed.len();
                let column = |at: usize| text[start..at].chars().count() + 1;
                doc.markers.push(out.len());
                out.push(Marked {
                    marker,
                    span: Span {
                        start: abs_start,
                        end: abs_end,
                        line: line_no,
                        column: column(abs_start),
                    },
                    value: decoded,
                    style,
                    in_flow: false,
                    object: None,
                    path: Vec::new(),
                    comment_line: line_no,
                    comment_column: column(hash),
                });
            }
        }
    }
    doc.finish(&mut out);
    Some(out)
}

fn has_lone_cr(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr_iter(b'\r', b).any(|i| b.get(i + 1) != Some(&b'\n'))
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
            // Header: chomping indicator, no explicit indentation (not modelled).
            let header = s[1..].split(['#']).next().unwrap_or("");
            if header.trim_matches([' ', '\t', '+', '-']).is_empty() {
                Value::Other
            } else {
                Value::Unknown
            }
        }
        '*' => {
            // An alias alone on the line.
            let end = s.find([' ', '\t']).unwrap_or(s.len());
            let rest = s[end..].trim_start_matches([' ', '\t']);
            if rest.is_empty() || rest.starts_with('#') {
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
            if i + 1 >= b.len() {
                return Value::Unknown;
            }
            i += 2;
            continue;
        }
        return Value::Scalar(i + 1, Style::DoubleQuoted);
    }
    Value::Unknown
}

/// Whether a flow collection that starts `s` closes on this line, with only
/// white space or a comment after it.
fn flow_closes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    let rest = s[i + 1..].trim_start_matches([' ', '\t']);
                    return rest.is_empty()
                        || (rest.starts_with('#') && rest.len() < s[i + 1..].len());
                }
            }
            b'"' => match double_quoted(&s[i..]) {
                Value::Scalar(end, _) => i += end - 1,
                _ => return false,
            },
            b'\'' => match single_quoted(&s[i..]) {
                Value::Scalar(end, _) => i += end - 1,
                _ => return false,
            },
            b'#' => return false,
            _ => {}
        }
        i += 1;
    }
    false
}
