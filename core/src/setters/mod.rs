//! Markers and byte-preserving rewrites.
//!
//! A marker is a YAML line comment right after a scalar,
//! `# {"$imagepolicy": "NAMESPACE:POLICY"}`, optionally with a `:tag`, `:name`
//! or `:digest` suffix. Given the policies' latest images, [`apply`] replaces
//! the bytes of each marked scalar and nothing else: comments, blank lines,
//! document separators, indentation, quoting, key order, block scalars,
//! anchors, CRLF line ends, a byte order mark and a missing final newline all
//! stay as they were. Pure functions: text in, text out.

use crate::reference::ImageRef;
use crate::yaml::{self, Node, NodeKind, Span, Style, SyntaxError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

mod fast;
pub mod readback;

/// The changes in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChanges {
    /// Relative to the root.
    pub path: PathBuf,
    pub changes: Vec<Change>,
    pub before: String,
    pub after: String,
}

/// Whether a file name is one the setters read: `*.yaml`, `*.yml`, `Kustomization`.
pub fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name == "Kustomization"
}

/// The text every marker comment contains; files without it have no markers.
pub const MARKER_TOKEN: &str = "\"$imagepolicy\"";

/// Which part of the policy's latest image a marker receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    /// `name:tag` (or `name:tag@digest`).
    Full,
    Tag,
    Name,
    Digest,
}

/// A well-formed marker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Marker {
    pub namespace: String,
    pub name: String,
    pub field: Field,
}

impl Marker {
    /// `NAMESPACE:POLICY`, the key of the policy.
    pub fn policy(&self) -> String {
        format!("{}:{}", self.namespace, self.name)
    }

    /// The setter's name as Flux reports it: `ns:name`, or `ns:name:tag` etc.
    pub fn setter(&self) -> String {
        match self.field {
            Field::Full => self.policy(),
            Field::Tag => format!("{}:tag", self.policy()),
            Field::Name => format!("{}:name", self.policy()),
            Field::Digest => format!("{}:digest", self.policy()),
        }
    }

    /// The value this marker receives from `image`, if `image` has it.
    pub fn value_from(&self, image: &ImageRef) -> Option<String> {
        let digest = image.digest.as_deref().filter(|d| !d.is_empty());
        match self.field {
            Field::Full => Some(match (image.tag.is_empty(), digest) {
                (false, Some(d)) => format!("{}:{}@{d}", image.name, image.tag),
                (false, None) => format!("{}:{}", image.name, image.tag),
                (true, Some(d)) => format!("{}@{d}", image.name),
                (true, None) => image.name.clone(),
            }),
            Field::Tag => (!image.tag.is_empty()).then(|| image.tag.clone()),
            Field::Name => Some(image.name.clone()),
            Field::Digest => digest.map(str::to_string),
        }
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.setter())
    }
}

/// What a comment is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommentKind {
    /// No `$imagepolicy` in it.
    NotAMarker,
    Marker(Marker),
    /// Mentions `$imagepolicy` but is not a valid marker; says why.
    Invalid(String),
    /// A marker with a suffix other than `:tag`, `:name`, `:digest`.
    UnknownSuffix(String),
}

/// Parses the text of a line comment (everything after the first `#`).
pub fn parse_comment(comment: &str) -> CommentKind {
    if !comment.contains("$imagepolicy") {
        return CommentKind::NotAMarker;
    }
    let body = comment.trim_start_matches('#').trim();
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => {
            return CommentKind::Invalid(format!(
                "the comment is not a JSON object: write # {{\"$imagepolicy\": \"NAMESPACE:POLICY\"}}, found # {body}"
            ));
        }
    };
    let Some(obj) = value.as_object() else {
        return CommentKind::Invalid(format!("the comment is not a JSON object: {body}"));
    };
    if obj.len() != 1 || !obj.contains_key("$imagepolicy") {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return CommentKind::Invalid(format!(
            "a marker has exactly one key, \"$imagepolicy\"; found {keys:?}"
        ));
    }
    let Some(reference) = obj.get("$imagepolicy").and_then(|v| v.as_str()) else {
        return CommentKind::Invalid("\"$imagepolicy\" must be a string NAMESPACE:POLICY".into());
    };
    parse_reference(reference)
}

fn parse_reference(reference: &str) -> CommentKind {
    let parts: Vec<&str> = reference.split(':').collect();
    let field = match parts.as_slice() {
        [_, _] => Field::Full,
        [_, _, "tag"] => Field::Tag,
        [_, _, "name"] => Field::Name,
        [_, _, "digest"] => Field::Digest,
        [_, _, other] => {
            return CommentKind::UnknownSuffix(format!(
                "unknown suffix :{other} in {reference:?}: use :tag, :name or :digest, or none for name:tag"
            ));
        }
        [_] => {
            return CommentKind::Invalid(format!(
                "{reference:?} has no namespace: write NAMESPACE:POLICY"
            ));
        }
        _ => {
            return CommentKind::Invalid(format!(
                "{reference:?} is not NAMESPACE:POLICY[:tag|:name|:digest]"
            ));
        }
    };
    let (ns, name) = (parts[0].trim(), parts[1].trim());
    if ns.is_empty() || name.is_empty() || ns != parts[0] || name != parts[1] {
        return CommentKind::Invalid(format!(
            "{reference:?} is not NAMESPACE:POLICY[:tag|:name|:digest]"
        ));
    }
    CommentKind::Marker(Marker {
        namespace: ns.to_string(),
        name: name.to_string(),
        field,
    })
}

/// The Kubernetes object a value belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A scalar with a comment that mentions `$imagepolicy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Marked {
    pub marker: CommentKind,
    /// The scalar's bytes in the text (quotes included).
    pub span: Span,
    pub value: String,
    pub style: Style,
    /// Inside a flow collection: `,[]{}` need quotes there.
    pub in_flow: bool,
    pub object: Option<ObjectId>,
    /// Mapping keys (and sequence indexes) from the document root.
    pub path: Vec<String>,
    /// Line and column of the comment's `#`.
    pub comment_line: usize,
    pub comment_column: usize,
}

/// The line comment right after `end` on the same line, if any: returns the
/// text after `#` (without a trailing `\r`) and the byte offset of `#`.
pub fn comment_after(text: &str, end: usize) -> Option<(&str, usize)> {
    let rest = text.get(end..)?;
    let line_end = rest.find('\n').unwrap_or(rest.len());
    let line = &rest[..line_end];
    let trimmed = line.trim_start_matches([' ', '\t']);
    if !trimmed.starts_with('#') {
        return None;
    }
    // YAML needs white space before a comment.
    if trimmed.len() == line.len() {
        return None;
    }
    let hash = end + (line.len() - trimmed.len());
    Some((trimmed[1..].trim_end_matches('\r'), hash))
}

pub fn object_of(node: &Node) -> Option<ObjectId> {
    let s = |n: Option<&Node>| n.and_then(Node::as_str).map(str::to_string);
    let api_version = s(node.get("apiVersion"))?;
    let kind = s(node.get("kind"))?;
    let meta = node.get("metadata");
    Some(ObjectId {
        api_version,
        kind,
        namespace: s(meta.and_then(|m| m.get("namespace"))),
        name: s(meta.and_then(|m| m.get("name"))).unwrap_or_default(),
    })
}

struct Walk<'t> {
    text: &'t str,
    lines: yaml::LineIndex<'t>,
    out: Vec<Marked>,
    path: Vec<String>,
}

impl Walk<'_> {
    fn node(&mut self, node: &Node, object: Option<&ObjectId>, in_flow: bool) {
        match &node.kind {
            NodeKind::Scalar { value, style, .. } => {
                let Some((comment, hash)) = comment_after(self.text, node.span.end) else {
                    return;
                };
                // A block scalar (| or >) ends on a later line than it starts;
                // a comment after it belongs to that line, not to the value.
                if matches!(style, Style::Literal | Style::Folded) {
                    return;
                }
                let marker = parse_comment(comment);
                if marker == CommentKind::NotAMarker {
                    return;
                }
                let (line, column) = self.lines.position(hash);
                self.out.push(Marked {
                    marker,
                    span: node.span,
                    value: value.clone(),
                    style: *style,
                    in_flow,
                    object: object.cloned(),
                    path: self.path.clone(),
                    comment_line: line,
                    comment_column: column,
                });
            }
            NodeKind::Sequence(items) => {
                let in_flow = in_flow || node.flow;
                for (i, item) in items.iter().enumerate() {
                    self.path.push(i.to_string());
                    self.child(item, object, in_flow);
                    self.path.pop();
                }
            }
            NodeKind::Mapping(pairs) => {
                let in_flow = in_flow || node.flow;
                for (k, v) in pairs {
                    self.path.push(k.as_str().unwrap_or("?").to_string());
                    self.child(v, object, in_flow);
                    self.path.pop();
                }
            }
            NodeKind::Alias(_) => {}
        }
    }

    fn child(&mut self, node: &Node, object: Option<&ObjectId>, in_flow: bool) {
        match object_of(node) {
            Some(inner) if matches!(node.kind, NodeKind::Mapping(_)) => {
                self.node(node, Some(&inner), in_flow)
            }
            _ => self.node(node, object, in_flow),
        }
    }
}

/// Line and column (from 1) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    // The byte order mark is not a column.
    if line_start == 0 && text.starts_with('\u{feff}') {
        line_start = 3.min(offset);
    }
    let column = text[line_start..offset.min(text.len())].chars().count() + 1;
    (line, column)
}

/// The marked scalars of a YAML text found by the line lexer, or `None` where
/// it needs the full parser ([`scan`]). Exposed for tests that compare the two.
#[doc(hidden)]
pub fn scan_fast(text: &str) -> Option<Vec<Marked>> {
    fast::lex(text)
}

/// Every marked scalar of a YAML text, in order.
pub fn scan(text: &str) -> Result<Vec<Marked>, SyntaxError> {
    if !text.contains("$imagepolicy") {
        return Ok(Vec::new());
    }
    let docs = yaml::parse(text)?;
    Ok(scan_documents(text, &docs))
}

/// [`scan`] over documents already parsed from `text`.
pub fn scan_documents(text: &str, docs: &[yaml::Document]) -> Vec<Marked> {
    let mut walk = Walk {
        text,
        lines: yaml::LineIndex::new(text),
        out: Vec::new(),
        path: Vec::new(),
    };
    for doc in docs {
        walk.child(&doc.root, None, false);
    }
    walk.out
}

/// One value changed by [`apply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub line: usize,
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectId>,
    pub old_value: String,
    pub new_value: String,
    /// `ns:name` or `ns:name:tag|name|digest`.
    pub setter: String,
    /// `ns:name`.
    pub policy: String,
}

/// The outcome of [`apply`] on one text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// The new text, when something changed.
    pub text: Option<String>,
    pub changes: Vec<Change>,
    /// Markers that name one of the given policies (changed or already current).
    pub matched: Vec<Marker>,
}

/// Rewrites the marked values for the given policies (`ns:name` -> latest
/// image). Markers naming other policies, and invalid markers, are left alone.
pub fn apply(text: &str, images: &BTreeMap<String, ImageRef>) -> Result<Applied, SyntaxError> {
    let marked = match fast::lex(text) {
        Some(m) => m,
        None => scan(text)?,
    };
    let mut out = Applied::default();
    let mut edits: Vec<(Span, String)> = Vec::new();
    for m in marked {
        let CommentKind::Marker(marker) = &m.marker else {
            continue;
        };
        let Some(image) = images.get(&marker.policy()) else {
            continue;
        };
        out.matched.push(marker.clone());
        let Some(new_value) = marker.value_from(image) else {
            continue;
        };
        if new_value == m.value {
            continue;
        }
        let mut encoded = encode(&new_value, m.style, m.in_flow);
        let before = text.as_bytes()[..m.span.start].last().copied();
        let anchor_touches =
            before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if m.span.start == m.span.end || anchor_touches {
            // An empty value sits right after its `:` or `-`, and in `&a:0`
            // the value touches its anchor's name: keep a space.
            encoded.insert(0, ' ');
        }
        edits.push((m.span, encoded));
        out.changes.push(Change {
            line: m.span.line,
            column: m.span.column,
            object: m.object.clone(),
            old_value: m.value.clone(),
            new_value,
            setter: marker.setter(),
            policy: marker.policy(),
        });
    }
    if !edits.is_empty() {
        edits.sort_by_key(|(span, _)| span.start);
        let mut new = String::with_capacity(text.len() + 64);
        let mut at = 0;
        for (span, value) in edits {
            new.push_str(&text[at..span.start]);
            new.push_str(&value);
            at = span.end;
        }
        new.push_str(&text[at..]);
        out.text = Some(new);
    }
    Ok(out)
}

/// What the setters make of one file's bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Rewrite {
    /// No marker token: not a file with markers.
    NoMarkers,
    /// Left as it was, and why (not UTF-8, not YAML, a rewrite that would not
    /// read back as intended).
    Refused(String),
    /// Markers for these policies (`ns:name`), all current.
    Unchanged(Vec<String>),
    /// Changed: the setters' result (its `text` is set) and the text before.
    Changed(Applied, String),
}

/// The setters on a file's bytes, for every front end: the marker-token
/// check, the text check, the rewrite, and the read-back check
/// ([`readback::verify`]): a rewrite is returned only when the full parser
/// reads it back with exactly the intended values changed.
pub fn rewrite(bytes: &[u8], images: &BTreeMap<String, ImageRef>) -> Rewrite {
    rewrite_with(bytes, images, &|text, images| apply(text, images))
}

/// The latest image of each policy, by `ns:name`.
pub type Images = BTreeMap<String, ImageRef>;

/// A setter: [`apply`], or a stand-in in tests.
pub type Setter<'a> = dyn Fn(&str, &Images) -> Result<Applied, SyntaxError> + Sync + 'a;

/// [`rewrite`] with another setter in place of [`apply`]: a test seam, to
/// show that a rewrite that does not read back is refused.
#[doc(hidden)]
pub fn rewrite_with(bytes: &[u8], images: &Images, setter: &Setter<'_>) -> Rewrite {
    if memchr::memmem::find(bytes, MARKER_TOKEN.as_bytes()).is_none() {
        return Rewrite::NoMarkers;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Rewrite::Refused("not UTF-8 text, left as it was".into());
    };
    match setter(text, images) {
        Err(e) => Rewrite::Refused(format!("not valid YAML, left as it was: {e}")),
        Ok(a) => match &a.text {
            None => Rewrite::Unchanged(a.matched.iter().map(|m| m.policy()).collect()),
            Some(new) => match readback::verify(text, new, &a.changes) {
                Ok(()) => Rewrite::Changed(a, text.to_string()),
                Err(why) => Rewrite::Refused(format!("left as it was: {why}")),
            },
        },
    }
}

/// Writes `value` in `style`; a plain value that would not read back as the
/// same string gets double quotes.
pub fn encode(value: &str, style: Style, in_flow: bool) -> String {
    match style {
        Style::Plain if plain_safe(value, in_flow) => value.to_string(),
        Style::SingleQuoted if !value.chars().any(char::is_control) => {
            format!("'{}'", value.replace('\'', "''"))
        }
        _ => double_quoted(value),
    }
}

fn double_quoted(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Whether `value` can be written plain and still read back as this string,
/// by YAML 1.2 and by YAML 1.1 readers (Kubernetes' YAML is 1.1 in places).
pub fn plain_safe(value: &str, in_flow: bool) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t', ':']) {
        return false;
    }
    if value.chars().any(|c| c.is_control()) {
        return false;
    }
    let second = value.chars().nth(1);
    match first {
        '#' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%' | '@' | '`' | ',' | '[' | ']'
        | '{' | '}' => return false,
        '-' | '?' | ':' if second.is_none_or(|c| c == ' ' || (in_flow && ",[]{}".contains(c))) => {
            return false;
        }
        _ => {}
    }
    if value.contains(": ") || value.contains(" #") || value.contains(":\t") {
        return false;
    }
    if in_flow && value.contains([',', '[', ']', '{', '}']) {
        return false;
    }
    if value == "---" || value == "..." {
        return false;
    }
    if !yaml::scalar_value(value, Style::Plain, None).is_string() {
        return false;
    }
    !yaml11_special(value)
}

/// Plain scalars a YAML 1.1 reader takes for something other than a string.
fn yaml11_special(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF", "true", "True", "TRUE", "false", "False", "FALSE", "~", "null", "Null", "NULL",
        ".inf", ".Inf", ".INF", "-.inf", "+.inf", ".nan", ".NaN", ".NAN", "=", "<<",
    ];
    if WORDS.contains(&v) {
        return true;
    }
    let body = v.strip_prefix(['-', '+']).unwrap_or(v);
    // 1.1 ints and floats: digits with `_`, `0b`, `0x`, octal, sexagesimal `1:20`,
    // and decimals with `.` and exponents.
    let numeric = !body.is_empty()
        && body
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && body.chars().all(|c| {
            c.is_ascii_hexdigit()
                || matches!(c, '_' | '.' | ':' | 'x' | 'o' | 'e' | 'E' | '+' | '-')
        });
    numeric
        && (body.parse::<f64>().is_ok()
            || body.contains(['_', ':'])
            || body.starts_with("0x")
            || body.starts_with("0b")
            || body.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(name: &str, tag: &str) -> ImageRef {
        ImageRef {
            name: name.into(),
            tag: tag.into(),
            digest: None,
        }
    }

    fn images(pairs: &[(&str, ImageRef)]) -> BTreeMap<String, ImageRef> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn comments() {
        let m = |s: &str| parse_comment(s);
        assert_eq!(
            m(r#" {"$imagepolicy": "flux-system:podinfo"}"#),
            CommentKind::Marker(Marker {
                namespace: "flux-system".into(),
                name: "podinfo".into(),
                field: Field::Full
            })
        );
        assert!(matches!(
            m(r#"{ "$imagepolicy" :"a:b:tag" }"#),
            CommentKind::Marker(Marker {
                field: Field::Tag,
                ..
            })
        ));
        assert!(matches!(
            m(r##"# {"$imagepolicy": "a:b:digest"}"##),
            CommentKind::Marker(Marker {
                field: Field::Digest,
                ..
            })
        ));
        assert_eq!(m(" just a comment"), CommentKind::NotAMarker);
        assert!(
            matches!(m(r#" {"$imagepolicy": "a:b:version"}"#), CommentKind::UnknownSuffix(e) if e.contains(":version"))
        );
        assert!(
            matches!(m(r#" {"$imagepolicy": "podinfo"}"#), CommentKind::Invalid(e) if e.contains("namespace"))
        );
        assert!(matches!(
            m(r#" {"$imagepolicy": "a:b"} keep"#),
            CommentKind::Invalid(_)
        ));
        assert!(matches!(
            m(r#" {"$imagepolicy": "a:b", "x": 1}"#),
            CommentKind::Invalid(_)
        ));
        assert!(matches!(
            m(r#" {$imagepolicy: a:b}"#),
            CommentKind::Invalid(_)
        ));
    }

    #[test]
    fn rewrites_only_the_marked_bytes() {
        let text = "# top\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}\n        - name: side\n          image: 'ghcr.io/org/side:1.0.0'   # {\"$imagepolicy\": \"flux-system:side\"}\n";
        let out = apply(
            text,
            &images(&[
                ("flux-system:app", img("ghcr.io/org/app", "1.2.0")),
                ("flux-system:side", img("ghcr.io/org/side", "2.0.0")),
            ]),
        )
        .unwrap();
        let new = out.text.unwrap();
        assert_eq!(
            new,
            text.replace("app:1.0.0 #", "app:1.2.0 #")
                .replace("'ghcr.io/org/side:1.0.0'", "'ghcr.io/org/side:2.0.0'")
        );
        assert_eq!(out.changes.len(), 2);
        assert_eq!(out.changes[0].line, 12);
        assert_eq!(out.changes[0].setter, "flux-system:app");
        assert_eq!(
            out.changes[0].object.as_ref().unwrap().to_string(),
            "Deployment web"
        );
    }

    #[test]
    fn tag_name_digest_markers() {
        let text = "image:\n  repository: ghcr.io/a/b # {\"$imagepolicy\": \"ns:p:name\"}\n  tag: \"1.0\" # {\"$imagepolicy\": \"ns:p:tag\"}\n  digest: sha256:00 # {\"$imagepolicy\": \"ns:p:digest\"}\n";
        let mut i = img("ghcr.io/a/c", "1.20");
        i.digest = Some("sha256:11".into());
        let out = apply(text, &images(&[("ns:p", i)])).unwrap();
        assert_eq!(
            out.text.unwrap(),
            "image:\n  repository: ghcr.io/a/c # {\"$imagepolicy\": \"ns:p:name\"}\n  tag: \"1.20\" # {\"$imagepolicy\": \"ns:p:tag\"}\n  digest: sha256:11 # {\"$imagepolicy\": \"ns:p:digest\"}\n"
        );
    }

    #[test]
    fn plain_values_that_need_quotes_get_them() {
        let text = "tag: 1.0.0 # {\"$imagepolicy\": \"ns:p:tag\"}\n";
        let out = apply(text, &images(&[("ns:p", img("x", "1.20"))])).unwrap();
        assert_eq!(
            out.text.unwrap(),
            "tag: \"1.20\" # {\"$imagepolicy\": \"ns:p:tag\"}\n"
        );
        for v in [
            "1.20", "yes", "on", "1e3", "0x1f", "null", "", "- a", "a: b", "1_000", "12",
        ] {
            assert!(!plain_safe(v, false), "{v}");
        }
        for v in [
            "1.2.3",
            "v1.20",
            "ghcr.io/a/b:1.0@sha256:ab",
            "main-abc-123",
            "-x",
        ] {
            assert!(plain_safe(v, false), "{v}");
        }
        assert!(!plain_safe("a,b", true));
    }

    #[test]
    fn crlf_bom_and_no_final_newline() {
        let text = "\u{feff}a: 1\r\nimage: x:1 # {\"$imagepolicy\": \"ns:p\"}\r\nb: 2";
        let out = apply(text, &images(&[("ns:p", img("x", "2"))])).unwrap();
        assert_eq!(out.text.unwrap(), text.replace("x:1", "x:2"));
    }

    #[test]
    fn markers_in_sequences_and_lists() {
        let text = "- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n  spec:\n    containers:\n    - image: x:1 # {\"$imagepolicy\": \"ns:p\"}\n- x:1 # {\"$imagepolicy\": \"ns:p\"}\n";
        let out = apply(text, &images(&[("ns:p", img("x", "2"))])).unwrap();
        assert_eq!(out.text.unwrap(), text.replace("x:1", "x:2"));
        assert_eq!(out.changes[0].object.as_ref().unwrap().name, "a");
        assert_eq!(out.changes[1].object, None);
    }

    #[test]
    fn comment_without_space_or_on_block_scalar_is_not_a_marker() {
        let text =
            "a: x:1#{\"$imagepolicy\":\"ns:p\"}\nb: |\n  x:1 # {\"$imagepolicy\": \"ns:p\"}\n";
        let out = apply(text, &images(&[("ns:p", img("x", "2"))])).unwrap();
        assert!(out.text.is_none());
    }

    #[test]
    fn empty_values_get_a_value() {
        let text = "image: # {\"$imagepolicy\": \"ns:p\"}\nlist:\n  - # {\"$imagepolicy\": \"ns:p:tag\"}\n";
        let out = apply(text, &images(&[("ns:p", img("x", "2"))])).unwrap();
        let new = out.text.unwrap();
        assert_eq!(
            new,
            "image: x:2 # {\"$imagepolicy\": \"ns:p\"}\nlist:\n  - \"2\" # {\"$imagepolicy\": \"ns:p:tag\"}\n"
        );
        assert!(
            apply(&new, &images(&[("ns:p", img("x", "2"))]))
                .unwrap()
                .text
                .is_none()
        );
    }

    #[test]
    fn anchored_values_keep_their_anchor() {
        let text = "tag: &t 1.0.0 # {\"$imagepolicy\": \"ns:p:tag\"}\nother: *t\n";
        let out = apply(text, &images(&[("ns:p", img("x", "2.0.0"))])).unwrap();
        assert_eq!(
            out.text.unwrap(),
            "tag: &t 2.0.0 # {\"$imagepolicy\": \"ns:p:tag\"}\nother: *t\n"
        );
    }

    #[test]
    fn a_value_touching_its_anchor_is_replaced_whole() {
        // `&t:0` anchors the plain scalar `:0`.
        let text = "tag: &t:0 # {\"$imagepolicy\": \"ns:p:tag\"}\n";
        let out = apply(text, &images(&[("ns:p", img("x", "2.0.0"))])).unwrap();
        let new = out.text.unwrap();
        assert_eq!(new, "tag: &t 2.0.0 # {\"$imagepolicy\": \"ns:p:tag\"}\n");
        let again = apply(&new, &images(&[("ns:p", img("x", "2.0.0"))])).unwrap();
        assert!(again.text.is_none());
    }

    #[test]
    fn unknown_policies_and_current_values_change_nothing() {
        let text = "image: x:2 # {\"$imagepolicy\": \"ns:p\"}\nother: y:1 # {\"$imagepolicy\": \"ns:q\"}\n";
        let out = apply(text, &images(&[("ns:p", img("x", "2"))])).unwrap();
        assert!(out.text.is_none());
        assert_eq!(out.matched.len(), 1);
    }
}
