//! Properties of the setters over generated YAML:
//! - the line lexer, where it answers, answers exactly what the full parser does;
//! - a rewrite followed by the inverse rewrite gives back the original bytes;
//! - the bytes outside the marked scalars never change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_core::api::ImageRef;
use imageauto_core::setters::{
    CommentKind, Marked, apply, encode, parse_comment, plain_safe, scan, scan_fast,
};
use imageauto_core::yaml::Style;
use std::collections::BTreeMap;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const POLICIES: &[&str] = &["apps:web", "apps:api", "flux-system:podinfo"];

struct Gen {
    r: Rng,
    out: String,
    nl: &'static str,
    /// When set, a value followed by a valid marker holds what the marker
    /// would receive from these images (so that rewrites can be inverted).
    consistent: Option<BTreeMap<String, ImageRef>>,
}

impl Gen {
    fn marker(&mut self) -> String {
        let p = self.r.pick(POLICIES);
        match self.r.below(12) {
            0 => format!(r#"# {{"$imagepolicy": "{p}:version"}}"#),
            1 => r#"# {"$imagepolicy": "podinfo"}"#.to_string(),
            2 => format!(r#"# {{"$imagepolicy": "{p}"}} trailing"#),
            3 => format!(r#"#{{ "$imagepolicy" : "{p}:tag" }}"#),
            4 => format!(r#"## {{"$imagepolicy": "{p}:name"}}"#),
            5 => format!(r#"# {{"$imagepolicy": "{p}:digest"}}"#),
            6 | 7 => format!(r#"# {{"$imagepolicy": "{p}:tag"}}"#),
            _ => format!(r#"# {{"$imagepolicy": "{p}"}}"#),
        }
    }

    fn scalar(&mut self) -> String {
        let plain = self.r.pick(&[
            "ghcr.io/org/web:1.0.0",
            "docker.io/library/nginx:1.25",
            "1.2.3",
            "v1.0.0",
            "main-abc123-1700000000",
            "8080",
            "true",
            "hello world",
            "a:b",
            "x#y",
            "100m",
            "-x",
            "https://example.com/a?b=c",
        ]);
        match self.r.below(10) {
            0..=5 => plain.to_string(),
            6 | 7 => format!("\"{}\"", plain.replace('"', "\\\"")),
            8 => format!("'{}'", plain.replace('\'', "''")),
            _ => self
                .r
                .pick(&[
                    "\"a \\\"q\\\" b\"",
                    "'it''s'",
                    "\"tab\\tx\"",
                    "''",
                    "\"\"",
                    "\"#not\"",
                ])
                .to_string(),
        }
    }

    fn line(&mut self, indent: usize, body: &str) {
        self.out.push_str(&" ".repeat(indent));
        self.out.push_str(body);
        if self.r.chance(4) {
            self.out.push_str("  ");
        }
        self.out.push_str(self.nl);
        if self.r.chance(5) {
            self.out.push_str(self.nl);
        }
        if self.r.chance(4) {
            let c = if self.r.chance(30) {
                self.marker()
            } else {
                "# a comment".to_string()
            };
            self.out.push_str(&" ".repeat(self.r.below(indent + 3)));
            self.out.push_str(&c);
            self.out.push_str(self.nl);
        }
    }

    /// Whether to put a marker where its value is not generated to match it.
    fn raw_marker(&mut self) -> bool {
        self.consistent.is_none() && self.r.chance(50)
    }

    /// A scalar and what follows it on the line.
    fn valued(&mut self) -> String {
        let v = self.scalar();
        let suffix = self.value_suffix();
        let Some(images) = &self.consistent else {
            return format!("{v}{suffix}");
        };
        let comment = suffix.trim_start_matches([' ', '\t']);
        if let Some(CommentKind::Marker(m)) = comment.strip_prefix('#').map(parse_comment)
            && let Some(value) = images.get(&m.policy()).and_then(|i| m.value_from(i))
        {
            let style = if plain_safe(&value, false) {
                self.r
                    .pick(&[Style::Plain, Style::SingleQuoted, Style::DoubleQuoted])
            } else {
                self.r.pick(&[Style::SingleQuoted, Style::DoubleQuoted])
            };
            return format!("{}{suffix}", encode(&value, style, false));
        }
        format!("{v}{suffix}")
    }

    fn value_suffix(&mut self) -> String {
        if self.r.chance(35) {
            let sp = self.r.pick(&[" ", "  ", "\t", " \t "]);
            format!("{sp}{}", self.marker())
        } else if self.r.chance(5) {
            " # plain comment".to_string()
        } else {
            String::new()
        }
    }

    fn mapping(&mut self, indent: usize, depth: usize) {
        let n = 1 + self.r.below(4);
        for i in 0..n {
            let key = self.r.pick(&[
                "image",
                "name",
                "tag",
                "repository",
                "value",
                "\"quoted key",
                "'k",
                "a b",
            ]);
            let key = match key.chars().next() {
                Some(q @ ('"' | '\'')) => format!("{key}{i}{q}"),
                _ => format!("{key}{i}"),
            };
            self.entry(indent, &format!("{key}:"), depth);
        }
    }

    /// `head` is `key:` or `-`; what follows it.
    fn entry(&mut self, indent: usize, head: &str, depth: usize) {
        let choice = if depth > 3 {
            0
        } else if self.r.chance(4) {
            11 + self.r.below(5)
        } else {
            self.r.below(11)
        };
        match choice {
            0..=6 => {
                let v = self.valued();
                self.line(indent, &format!("{head} {v}"));
            }
            7 | 8 => {
                self.line(indent, head);
                self.mapping(indent + 2, depth + 1);
            }
            9 | 10 => {
                self.line(indent, head);
                let ind = if head.starts_with('-') || self.r.chance(50) {
                    indent + 2
                } else {
                    indent
                };
                for _ in 0..1 + self.r.below(3) {
                    if self.r.chance(50) {
                        let v = self.valued();
                        self.line(ind, &format!("- {v}"));
                    } else {
                        let k = self.r.pick(&["image", "name"]);
                        let v = self.valued();
                        self.line(ind, &format!("- {k}: {v}"));
                        if self.r.chance(50) {
                            let v = self.valued();
                            self.line(ind + 2, &format!("tag: {v}"));
                        }
                    }
                }
            }
            11 => {
                let h = self.r.pick(&["|", ">", "|-", ">+", "|2"]);
                let m = if self.r.chance(30) {
                    format!(" {}", self.marker())
                } else {
                    String::new()
                };
                self.line(indent, &format!("{head} {h}{m}"));
                for _ in 0..1 + self.r.below(3) {
                    let c = if self.r.chance(40) {
                        format!("image: x:1 {}", self.marker())
                    } else {
                        "some text".to_string()
                    };
                    let extra = self.r.below(2);
                    self.line(indent + 2 + extra, &c);
                }
            }
            12 => {
                let m = if self.r.chance(40) {
                    format!(" {}", self.marker())
                } else {
                    String::new()
                };
                let flow = self
                    .r
                    .pick(&["[a, b]", "{a: 1, b: \"x\"}", "[]", "[a, [b, c]]", "[a,"]);
                self.line(indent, &format!("{head} {flow}{m}"));
            }
            13 => {
                // A plain scalar over two lines.
                self.line(indent, &format!("{head} first part"));
                let m = if self.raw_marker() {
                    format!(" {}", self.marker())
                } else {
                    String::new()
                };
                self.line(indent + 4, &format!("second part{m}"));
            }
            14 => {
                let m = if self.raw_marker() {
                    format!(" {}", self.marker())
                } else {
                    String::new()
                };
                let v = self
                    .r
                    .pick(&["&anchor x:1", "*anchor", "!!str 1.0", "\"multi", "'multi"]);
                self.line(indent, &format!("{head} {v}{m}"));
                if v.starts_with(['"', '\'']) {
                    self.line(indent + 2, &format!("line{}", &v[..1]));
                }
            }
            _ => {
                let m = if self.raw_marker() {
                    self.marker()
                } else {
                    "# empty".to_string()
                };
                self.line(indent, &format!("{head} {m}"));
            }
        }
    }

    fn document(&mut self) {
        if self.r.chance(10) {
            // A top-level list of objects.
            self.line(0, "- apiVersion: v1");
            self.line(2, "kind: Pod");
            self.line(2, "metadata: {name: listed}");
            self.entry(2, "spec:", 1);
            return;
        }
        if self.r.chance(85) {
            self.line(0, "apiVersion: apps/v1");
        }
        let kind = self
            .r
            .pick(&["Deployment", "HelmRelease", "'Kustomization'"]);
        self.line(0, &format!("kind: {kind}"));
        if self.r.chance(85) {
            self.line(0, "metadata:");
            let name = self.r.pick(&["web", "\"api\"", "'x y'"]);
            self.line(2, &format!("name: {name}"));
            if self.r.chance(50) {
                self.line(2, "namespace: apps");
            }
            if self.r.chance(30) {
                self.line(2, "labels:");
                self.line(4, "name: not-this");
            }
        }
        self.mapping(0, 0);
        if self.r.chance(8) {
            self.line(0, "spec:");
            self.line(2, "apiVersion: nested/v1");
            self.line(2, "kind: Nested");
            let v = self.valued();
            self.line(2, &format!("image: {v}"));
        }
    }

    fn file(seed: u64) -> String {
        Self::file_with(seed, None)
    }

    fn file_with(seed: u64, consistent: Option<BTreeMap<String, ImageRef>>) -> String {
        let mut r = Rng(seed);
        let nl = if r.chance(20) { "\r\n" } else { "\n" };
        let mut g = Gen {
            r,
            out: String::new(),
            nl,
            consistent,
        };
        if g.r.chance(10) {
            g.out.push('\u{feff}');
        }
        if g.r.chance(30) {
            g.out.push_str("---");
            g.out.push_str(nl);
        }
        for i in 0..1 + g.r.below(3) {
            if i > 0 {
                let sep = g.r.pick(&["---", "--- # next", "---   "]);
                g.out.push_str(sep);
                g.out.push_str(nl);
            }
            g.document();
        }
        if g.r.chance(10) {
            while g.out.ends_with(['\n', '\r']) {
                g.out.pop();
            }
        }
        g.out
    }
}

fn without_paths(mut v: Vec<Marked>) -> Vec<Marked> {
    for m in &mut v {
        m.path.clear();
    }
    v
}

#[test]
fn line_lexer_agrees_with_the_parser() {
    let (mut answered, mut with_markers, mut total) = (0, 0, 0);
    for seed in 0..20_000u64 {
        let text = Gen::file(seed);
        total += 1;
        let Some(fast) = scan_fast(&text) else {
            continue;
        };
        answered += 1;
        if fast
            .iter()
            .any(|m| matches!(m.marker, CommentKind::Marker(_)))
        {
            with_markers += 1;
        }
        let full = scan(&text).unwrap_or_else(|e| {
            panic!("seed {seed}: the lexer answered but the parser fails ({e}):\n{text}")
        });
        assert_eq!(
            fast,
            without_paths(full),
            "seed {seed}: lexer and parser differ on:\n{text}"
        );
    }
    // The generator must give the lexer both work and reasons to give up.
    assert!(answered > total / 5, "lexer answered {answered} of {total}");
    assert!(answered < total, "lexer never gave up");
    assert!(
        with_markers > 1_000,
        "only {with_markers} answered files with markers"
    );
}

fn images(tag: &str) -> BTreeMap<String, ImageRef> {
    POLICIES
        .iter()
        .map(|p| {
            (
                p.to_string(),
                ImageRef {
                    name: format!("registry.example.com/{}", p.replace(':', "/")),
                    tag: tag.to_string(),
                    digest: Some(format!("sha256:{tag}")),
                },
            )
        })
        .collect()
}

#[test]
fn rewrites_touch_only_marked_scalars_and_invert() {
    let (mut changed_files, mut changes) = (0, 0);
    for seed in 0..6_000u64 {
        let old = images("1.0.0");
        let text = Gen::file_with(seed, Some(old.clone()));
        let Ok(marked) = scan(&text) else {
            continue;
        };
        let a = apply(&text, &images("2.0.0")).unwrap();
        let Some(new) = &a.text else {
            assert!(a.changes.is_empty());
            continue;
        };
        changed_files += 1;
        changes += a.changes.len();
        // Line by line: only the changed scalars differ.
        let old_lines: Vec<&str> = text.split('\n').collect();
        let new_lines: Vec<&str> = new.split('\n').collect();
        assert_eq!(old_lines.len(), new_lines.len(), "seed {seed}");
        for (i, (o, n)) in old_lines.iter().zip(&new_lines).enumerate() {
            let line = i + 1;
            match a.changes.iter().find(|c| c.line == line) {
                None => assert_eq!(o, n, "seed {seed} line {line}"),
                Some(c) => {
                    let m = marked
                        .iter()
                        .find(|m| m.span.line == c.line && m.span.column == c.column)
                        .unwrap();
                    let line_start = text[..m.span.start].rfind('\n').map_or(0, |p| p + 1);
                    let (pre, post) = (m.span.start - line_start, m.span.end - line_start);
                    assert_eq!(&o[..pre], &n[..pre], "seed {seed} line {line}");
                    let tail = &o[post..];
                    assert!(n.ends_with(tail), "seed {seed} line {line}: {o:?} -> {n:?}");
                    let written = &n[pre..n.len() - tail.len()];
                    let reread = scan(new).unwrap();
                    let now = reread.iter().find(|r| r.span.line == line).unwrap();
                    assert_eq!(now.value, c.new_value, "seed {seed}: {written}");
                }
            }
        }
        // Idempotent, and the inverse rewrite restores the original bytes.
        assert!(
            apply(new, &images("2.0.0")).unwrap().text.is_none(),
            "seed {seed}"
        );
        let back = apply(new, &old).unwrap();
        assert_eq!(
            back.text.as_deref(),
            Some(text.as_str()),
            "seed {seed}:\n{text}"
        );
    }
    assert!(changed_files > 1_000, "only {changed_files} files changed");
    assert!(changes > 3_000, "only {changes} changes");
}
