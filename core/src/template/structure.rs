//! The nesting rules of Go's template parser, checked on the source: every
//! `{{if}}`, `{{range}}`, `{{with}}`, `{{define}}` and `{{block}}` ends with
//! `{{end}}`; `{{else}}` belongs to an `if`, `range` or `with` (once, unless
//! it is `else if` in an `if` or `else with` in a `with`); `{{break}}` and
//! `{{continue}}` sit inside a `range`; `{{define}}` only at the top.
//! (gotmpl's parser builds a tree without these checks: it stops at a stray
//! `{{end}}` and takes an unclosed `{{if}}` to end with the text.)
//!
//! Runs after gotmpl parsed the text, so the actions are lexically sound.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    If,
    Range,
    With,
    Define,
    Block,
}

impl Open {
    fn keyword(self) -> &'static str {
        match self {
            Open::If => "if",
            Open::Range => "range",
            Open::With => "with",
            Open::Define => "define",
            Open::Block => "block",
        }
    }
}

struct Frame {
    open: Open,
    /// Byte offset of the keyword, for the error.
    at: usize,
    /// A plain `{{else}}` was seen.
    had_else: bool,
}

impl Frame {
    fn new(open: Open, at: usize) -> Self {
        Frame {
            open,
            at,
            had_else: false,
        }
    }
}

/// An error at a byte offset of the source.
pub(crate) type StructureError = (usize, String);

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn skip_space(src: &[u8], mut i: usize) -> usize {
    while i < src.len() && is_space(src[i]) {
        i += 1;
    }
    i
}

fn word(src: &[u8], i: usize) -> &[u8] {
    let mut j = i;
    while j < src.len() && (src[j].is_ascii_alphanumeric() || src[j] == b'_') {
        j += 1;
    }
    &src[i..j]
}

/// The offset just past the `}}` closing the action whose content starts at
/// `i`, skipping quoted strings, raw strings and character literals.
fn action_end(src: &[u8], mut i: usize) -> usize {
    while i < src.len() {
        match src[i] {
            b'"' | b'\'' => {
                let quote = src[i];
                i += 1;
                while i < src.len() && src[i] != quote {
                    if src[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < src.len() && src[i] != b'`' {
                    i += 1;
                }
                i += 1;
            }
            b'}' if src[i..].starts_with(RIGHT.as_bytes()) => return i + RIGHT.len(),
            _ => i += 1,
        }
    }
    src.len()
}

pub(crate) fn check(source: &str) -> Result<(), StructureError> {
    let src = source.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while let Some(found) = source[i..].find(LEFT) {
        let start = i + found;
        let mut j = start + LEFT.len();
        // A trim marker is a '-' followed by white space.
        if j + 1 < src.len() && src[j] == b'-' && is_space(src[j + 1]) {
            j += 1;
        }
        j = skip_space(src, j);
        if src[j..].starts_with(b"/*") {
            // A comment: runs to "*/", then the action closes.
            let close = source[j + 2..]
                .find("*/")
                .map_or(src.len(), |k| j + 2 + k + 2);
            i = action_end(src, close);
            continue;
        }
        let kw = word(src, j);
        let end = action_end(src, j);
        match kw {
            b"if" => stack.push(Frame::new(Open::If, j)),
            b"range" => stack.push(Frame::new(Open::Range, j)),
            b"with" => stack.push(Frame::new(Open::With, j)),
            b"block" => stack.push(Frame::new(Open::Block, j)),
            b"define" => {
                if !stack.is_empty() {
                    return Err((j, "unexpected <define> in command".into()));
                }
                stack.push(Frame::new(Open::Define, j));
            }
            b"else" => {
                let Some(top) = stack.last_mut() else {
                    return Err((j, "unexpected {{else}}".into()));
                };
                let next = word(src, skip_space(src, j + kw.len()));
                let chained = match (top.open, next) {
                    (Open::If, b"if") | (Open::With, b"with") => true,
                    (Open::If | Open::Range | Open::With, _) => false,
                    (Open::Define | Open::Block, _) => {
                        return Err((j, "unexpected {{else}}".into()));
                    }
                };
                if top.had_else {
                    return Err((j, "expected end; found {{else}}".into()));
                }
                if !chained {
                    if !next.is_empty() {
                        return Err((
                            j,
                            format!(
                                "unexpected {:?} after {{{{else}}}} in {{{{{}}}}}",
                                String::from_utf8_lossy(next),
                                top.open.keyword()
                            ),
                        ));
                    }
                    top.had_else = true;
                }
            }
            // The guard closes the innermost construct; with none open,
            // the {{end}} is stray.
            b"end" if stack.pop().is_none() => {
                return Err((j, "unexpected {{end}}".into()));
            }
            b"break" | b"continue" => {
                let in_range = stack
                    .iter()
                    .rev()
                    .take_while(|f| f.open != Open::Define)
                    .any(|f| f.open == Open::Range);
                if !in_range {
                    return Err((
                        j,
                        format!(
                            "{{{{{}}}}} outside {{{{range}}}}",
                            String::from_utf8_lossy(kw)
                        ),
                    ));
                }
            }
            _ => {}
        }
        i = end;
    }
    match stack.last() {
        Some(top) => Err((
            top.at,
            format!(
                "unexpected EOF: {{{{{}}}}} has no {{{{end}}}}",
                top.open.keyword()
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn well_nested_templates_pass() {
        for ok in [
            "plain text",
            "{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}",
            "{{ with .A }}a{{ else with .B }}b{{ end }}",
            "{{ range .A }}{{ if . }}{{ break }}{{ end }}{{ continue }}{{ else }}none{{ end }}",
            "{{ define \"x\" }}{{ if . }}y{{ end }}{{ end }}{{ template \"x\" . }}",
            "{{ block \"b\" . }}{{ range . }}{{ end }}{{ end }}",
            "{{ \"{{ if }}\" }}{{ `}}{{end` }}{{ '}' }}",
            "{{/* {{ if */}}{{- /* a comment */ -}}",
            "{{- if .A -}} x {{- end -}}",
            "{{-3}}",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn nesting_errors_name_the_offset() {
        for (bad, offset, message) in [
            ("a{{end}}b", 3, "unexpected {{end}}"),
            ("{{ else }}", 3, "unexpected {{else}}"),
            (
                "x\n{{ if .A }}y",
                5,
                "unexpected EOF: {{if}} has no {{end}}",
            ),
            (
                "{{ range . }}{{ else }}{{ else }}{{ end }}",
                26,
                "expected end",
            ),
            (
                "{{ if . }}{{ else }}{{ else if . }}{{ end }}",
                23,
                "expected end",
            ),
            (
                "{{ range . }}{{ else if . }}{{ end }}",
                16,
                "unexpected \"if\"",
            ),
            ("{{ break }}", 3, "{{break}} outside {{range}}"),
            (
                "{{ if . }}{{ continue }}{{ end }}",
                13,
                "{{continue}} outside {{range}}",
            ),
            (
                "{{ if . }}{{ define \"x\" }}{{ end }}{{ end }}",
                13,
                "unexpected <define>",
            ),
            (
                "{{ define \"x\" }}{{ else }}{{ end }}",
                19,
                "unexpected {{else}}",
            ),
        ] {
            let (at, msg) = check(bad).expect_err(bad);
            assert_eq!(at, offset, "{bad}: {msg}");
            assert!(msg.contains(message), "{bad}: {msg}");
        }
    }
}
