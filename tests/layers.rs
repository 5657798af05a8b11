//! The tree's layers: the crates depend one way (the webhook and the core
//! need no Git, HTTP client or kube runtime), and within each crate no
//! module uses one that uses it back. A module may use its ancestors and
//! descendants (a parent re-exports its children, a child uses its
//! parent's types); between any other two, uses go one way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `[dependencies]` table of a manifest: one name per line.
fn dependencies(manifest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(manifest)).unwrap();
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps && !line.is_empty() && !line.starts_with('#') {
            names.push(line.to_string());
        }
    }
    names
}

#[test]
fn the_webhook_and_the_core_need_no_client() {
    for (manifest, allowed_ours) in [
        ("core/Cargo.toml", &[][..]),
        ("webhook/Cargo.toml", &["imageauto-core"][..]),
    ] {
        for dep in dependencies(manifest) {
            let name = dep.split(['.', ' ', '=']).next().unwrap();
            assert!(
                !["automation", "imageauto-server", "git2", "reqwest"].contains(&name),
                "{manifest} depends on {name}"
            );
            if name.starts_with("imageauto") {
                assert!(allowed_ours.contains(&name), "{manifest} depends on {name}");
            }
            if name == "kube" {
                assert!(
                    dep.contains(r#"features = ["derive"]"#),
                    "{manifest}: kube with more than its derive: {dep}"
                );
            }
        }
    }
}

/// Every `.rs` file of a crate's sources with its module path
/// (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; the root is empty).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        out.insert(parts.join("::"), f);
    }
    out
}

/// The text of a file without its comments and its test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths after `crate::` and `super::` (with `use` groups expanded),
/// as module paths of the crate, with the line they are on.
fn used_paths(module: &str, code: &str) -> Vec<(Vec<String>, usize)> {
    // Reads `a::b::{c, d::e}` from the start of `s` into `out`.
    fn read(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
        let mut path = prefix;
        let mut i = 0;
        loop {
            let rest = &s[i..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut j = 1;
                loop {
                    let inner = group[j - 1..].trim_start_matches([' ', '\n', ',']);
                    j = group.len() - inner.len() + 1;
                    if inner.starts_with('}') || inner.is_empty() {
                        return i + j + 1;
                    }
                    j += read(inner, path.clone(), out);
                }
            }
            let n = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            if n == 0 {
                out.push(path);
                return i;
            }
            path.push(rest[..n].to_string());
            i += n;
            if s[i..].starts_with("::") {
                i += 2;
            } else {
                out.push(path);
                return i;
            }
        }
    }
    let mut found = Vec::new();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if at > 0 && code[..at].ends_with(|c: char| is_ident(c) || c == ':') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let mut base: Vec<String> = if code[at..].starts_with("crate::") {
            Vec::new()
        } else {
            let mut m: Vec<String> = module.split("::").map(String::from).collect();
            m.pop();
            m.retain(|s| !s.is_empty());
            m
        };
        // `crate::` and `super::` are both seven bytes.
        let mut rest = &code[at + 7..];
        // `super::super::`
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let mut paths = Vec::new();
        read(rest, base, &mut paths);
        found.extend(paths.into_iter().map(|p| (p, line)));
    }
    found
}

fn related(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| y.is_empty() || x == y || x.starts_with(&format!("{y}::"));
    under(a, b) || under(b, a)
}

/// The cycles between unrelated modules of the crate whose sources are
/// `src`, each with the uses that make it.
fn cycles(src: &Path) -> Vec<String> {
    let mods = modules(src);
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (m, file) in &mods {
        for (path, line) in used_paths(m, &code(file)) {
            // The longest module the path names.
            let mut target = path.clone();
            while !target.is_empty() && !mods.contains_key(&target.join("::")) {
                target.pop();
            }
            let t = target.join("::");
            if !related(m, &t) {
                let at = format!(
                    "{}:{line} uses {}",
                    file.strip_prefix(root()).unwrap_or(file).display(),
                    path.join("::")
                );
                edges.entry(m.clone()).or_default().entry(t).or_insert(at);
            }
        }
    }
    // A module's uses of a module's descendants count as uses of the
    // module: siblings' subtrees are compared as wholes too.
    let mut lifted: BTreeMap<(String, String), String> = BTreeMap::new();
    for (from, tos) in &edges {
        for (to, at) in tos {
            let (f, t) = (
                from.split("::").collect::<Vec<_>>(),
                to.split("::").collect::<Vec<_>>(),
            );
            let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
            let fa = f[..=common.min(f.len() - 1)].join("::");
            let ta = t[..=common.min(t.len() - 1)].join("::");
            lifted.entry((fa, ta)).or_insert_with(|| at.clone());
        }
    }
    let mut found = Vec::new();
    let pairs: BTreeSet<(String, String)> = lifted.keys().cloned().collect();
    for ((a, b), at) in &lifted {
        if a < b && pairs.contains(&(b.clone(), a.clone())) {
            found.push(format!(
                "{a} <-> {b}: {at}; {}",
                lifted[&(b.clone(), a.clone())]
            ));
        }
    }
    // Longer circles among the lifted modules.
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in &pairs {
        graph.entry(a.as_str()).or_default().push(b.as_str());
    }
    for start in graph.keys() {
        let mut stack = vec![(*start, vec![*start])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for next in graph.get(node).into_iter().flatten() {
                if *next == *start && trail.len() > 2 && trail.iter().all(|m| start <= m) {
                    found.push(format!("circle: {} -> {start}", trail.join(" -> ")));
                } else if seen.insert(*next) {
                    let mut t = trail.clone();
                    t.push(next);
                    stack.push((next, t));
                }
            }
        }
    }
    found
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let mut all = Vec::new();
    for src in [
        "core/src",
        "automation/src",
        "server/src",
        "webhook/src",
        "plugin/src",
    ] {
        all.extend(
            cycles(&root().join(src))
                .into_iter()
                .map(|c| format!("{src}: {c}")),
        );
    }
    assert!(
        all.is_empty(),
        "modules that use each other:\n{}",
        all.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    let dir = std::env::temp_dir().join(format!("layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "pub mod inner;\n").unwrap();
    std::fs::write(
        dir.join("a/inner.rs"),
        "use crate::{b::{B, other}};\npub struct A;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "// crate::a::A in a comment\npub struct B;\n",
    )
    .unwrap();
    assert!(cycles(&dir).is_empty(), "{:?}", cycles(&dir));
    std::fs::write(
        dir.join("b.rs"),
        "pub struct B;\npub fn f(_: super::a::inner::A) {}\n",
    )
    .unwrap();
    let found = cycles(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("a <-> b"), "{found:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
