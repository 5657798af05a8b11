//! The marker lint: the mistakes that make an image silently stay where it is,
//! caught in files before they reach Git. Pure: file texts in, findings out.
//!
//! Rules:
//! - `missing-marker`: a container `image:` of a workload (Pod, Deployment,
//!   StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) or a kustomization
//!   `images` entry without a marker (`# imageauto:ignore` on the line exempts it);
//! - `invalid-marker`: a comment that mentions `$imagepolicy` but is not a marker;
//! - `unknown-suffix`: a marker suffix other than `:tag`, `:name`, `:digest`;
//! - `unknown-policy`: a marker naming a policy that the linted files do not
//!   define (only when they define policies at all);
//! - `image-mismatch`: the marker's policy tracks another repository than the
//!   image on the line;
//! - `tag-marker-on-reference` / `full-marker-on-tag`: a `:tag` marker on a whole
//!   reference, or a full marker on a bare tag;
//! - `detached-marker`: a marker comment that is not on the line of a value;
//! - and what loading the image kinds finds: `unknown-field` (with hints),
//!   `invalid-value`, `schema`, `api-version`.

use crate::api::{Object, ResourceExt, Severity, load_str};
use crate::reference::normalized_repository;
use crate::setters::{CommentKind, Field, Marked, comment_after, object_of, scan_documents};
use crate::workloads::{WORKLOAD_KINDS, items, objects, pod_specs};
use crate::yaml::{self, Node, NodeKind};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// The comment that exempts an image from `missing-marker`.
pub const IGNORE: &str = "imageauto:ignore";

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
    pub rule: &'static str,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {} [{}]",
            self.file, self.line, self.column, self.message, self.rule
        )
    }
}

/// A policy the linted files define: `ns:name` -> the repository it tracks
/// (normalised), when its ImageRepository is among the files too.
#[derive(Default)]
struct Policies {
    by_key: BTreeMap<String, Option<String>>,
    /// Policies written without a namespace: matched by name.
    by_name: BTreeMap<String, Option<String>>,
}

impl Policies {
    fn collect(files: &[(String, String)]) -> Self {
        let mut repos: BTreeMap<(Option<String>, String), String> = BTreeMap::new();
        // (namespace, name, repository namespace, repository name)
        let mut policies: Vec<(Option<String>, String, Option<String>, String)> = Vec::new();
        for (path, text) in files {
            if !text.contains("image.toolkit.fluxcd.io") {
                continue;
            }
            let loaded = load_str(path, text);
            for l in loaded.objects {
                match l.object {
                    Object::Repository(r) => {
                        if let Some(n) = normalized_repository(&r.spec.image) {
                            repos.insert((r.namespace(), r.name_any()), n);
                        }
                    }
                    Object::Policy(p) => {
                        let r = &p.spec.image_repository_ref;
                        policies.push((
                            p.namespace(),
                            p.name_any(),
                            r.namespace.clone(),
                            r.name.clone(),
                        ));
                    }
                    _ => {}
                }
            }
            // Objects with other errors (reported by the load) still define
            // what their markers are checked against.
            for r in loaded.rejected {
                match r.kind.as_str() {
                    "ImageRepository" => {
                        if let Some(n) = r.image.as_deref().and_then(normalized_repository) {
                            repos.insert((r.namespace, r.name), n);
                        }
                    }
                    "ImagePolicy" => {
                        if let Some((ref_ns, ref_name)) = r.repository_ref {
                            policies.push((r.namespace, r.name, ref_ns, ref_name));
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut out = Policies::default();
        for (ns, name, ref_ns, ref_name) in policies {
            let repo_ns = ref_ns.or(ns.clone());
            let repo = repos
                .get(&(repo_ns, ref_name.clone()))
                .or_else(|| repos.get(&(None, ref_name)))
                .cloned();
            match ns {
                Some(ns) => out.by_key.insert(format!("{ns}:{name}"), repo),
                None => out.by_name.insert(name, repo),
            };
        }
        out
    }

    fn is_empty(&self) -> bool {
        self.by_key.is_empty() && self.by_name.is_empty()
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Option<String>> {
        self.by_key
            .get(&format!("{namespace}:{name}"))
            .or_else(|| self.by_name.get(name))
    }

    /// A policy that tracks `repository`, for suggestions.
    fn tracking(&self, repository: &str) -> Option<String> {
        self.by_key
            .iter()
            .find(|(_, r)| r.as_deref() == Some(repository))
            .map(|(k, _)| k.clone())
    }
}

struct FileLint<'a> {
    path: &'a str,
    text: &'a str,
    out: Vec<Finding>,
}

impl FileLint<'_> {
    fn at(
        &mut self,
        line: usize,
        column: usize,
        severity: Severity,
        rule: &'static str,
        message: String,
    ) {
        self.out.push(Finding {
            file: self.path.to_string(),
            line,
            column,
            severity,
            message,
            rule,
        });
    }

    fn error(&mut self, node: &Node, rule: &'static str, message: String) {
        self.at(
            node.span.line,
            node.span.column,
            Severity::Error,
            rule,
            message,
        );
    }

    fn ignored(&self, node: &Node) -> bool {
        comment_after(self.text, node.span.end).is_some_and(|(c, _)| c.contains(IGNORE))
    }
}

fn looks_like_bare_tag(v: &str) -> bool {
    !v.contains(['/', ':', '@'])
        && (v.starts_with(|c: char| c.is_ascii_digit())
            || (v.starts_with('v') && v[1..].starts_with(|c: char| c.is_ascii_digit())))
}

fn check_marker(f: &mut FileLint<'_>, m: &Marked, policies: &Policies) {
    let (line, column) = (m.span.line, m.span.column);
    let marker = match &m.marker {
        CommentKind::Marker(marker) => marker,
        CommentKind::Invalid(why) => {
            f.at(
                m.comment_line,
                m.comment_column,
                Severity::Error,
                "invalid-marker",
                format!("malformed marker: {why}"),
            );
            return;
        }
        CommentKind::UnknownSuffix(why) => {
            f.at(
                m.comment_line,
                m.comment_column,
                Severity::Error,
                "unknown-suffix",
                why.clone(),
            );
            return;
        }
        CommentKind::NotAMarker => return,
    };
    match marker.field {
        Field::Tag if m.value.contains(['/', ':', '@']) => f.at(
            line,
            column,
            Severity::Error,
            "tag-marker-on-reference",
            format!(
                "a :tag marker writes only the tag, but {:?} is a whole image reference: use {{\"$imagepolicy\": \"{}\"}}",
                m.value,
                marker.policy()
            ),
        ),
        Field::Full if looks_like_bare_tag(&m.value) => f.at(
            line,
            column,
            Severity::Error,
            "full-marker-on-tag",
            format!(
                "a full marker writes name:tag, but {:?} is a bare tag: use {{\"$imagepolicy\": \"{}:tag\"}}",
                m.value,
                marker.policy()
            ),
        ),
        _ => {}
    }
    if policies.is_empty() {
        return;
    }
    let Some(tracked) = policies.get(&marker.namespace, &marker.name) else {
        let known: Vec<&String> = policies
            .by_key
            .keys()
            .chain(policies.by_name.keys())
            .take(8)
            .collect();
        f.at(
            line,
            column,
            Severity::Error,
            "unknown-policy",
            format!(
                "the marker names {}, which no ImagePolicy in the linted files defines (defined: {})",
                marker.policy(),
                known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
        return;
    };
    let on_line = match marker.field {
        Field::Full if !looks_like_bare_tag(&m.value) => normalized_repository(&m.value),
        Field::Name => normalized_repository(&m.value),
        _ => None,
    };
    if let (Some(tracked), Some(on_line)) = (tracked, on_line)
        && tracked != &on_line
    {
        f.at(
            line,
            column,
            Severity::Error,
            "image-mismatch",
            format!(
                "the marker names {}, which tracks {tracked}, but the line holds {on_line}{}",
                marker.policy(),
                policies
                    .tracking(&on_line)
                    .map(|p| format!(": did you mean {p}?"))
                    .unwrap_or_default()
            ),
        );
    }
}

fn check_object(
    f: &mut FileLint<'_>,
    obj: &Node,
    file_name: &str,
    marked_at: &HashSet<usize>,
    policies: &Policies,
) {
    let id = object_of(obj);
    let kind = id.as_ref().map_or("", |i| i.kind.as_str());
    let label = id
        .as_ref()
        .map_or_else(|| file_name.to_string(), ToString::to_string);
    if WORKLOAD_KINDS.contains(&kind) {
        for list in pod_specs(kind, obj) {
            for c in items(list) {
                let Some(image) = c.get("image") else {
                    continue;
                };
                let Some(value) = image.as_str() else {
                    continue;
                };
                if marked_at.contains(&image.span.start) || f.ignored(image) {
                    continue;
                }
                let container = c.get("name").and_then(Node::as_str).unwrap_or("?");
                let suggestion = normalized_repository(value)
                    .and_then(|r| policies.tracking(&r))
                    .unwrap_or_else(|| "NAMESPACE:POLICY".into());
                f.error(
                    image,
                    "missing-marker",
                    format!(
                        "{label}: container {container}: image {value} has no marker: add # {{\"$imagepolicy\": \"{suggestion}\"}}, or # {IGNORE} to keep it as it is"
                    ),
                );
            }
        }
    }
    let is_kustomization_file = matches!(
        file_name,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    );
    let images = match id.as_ref() {
        Some(i)
            if i.kind == "Kustomization"
                && i.api_version.starts_with("kustomize.config.k8s.io/") =>
        {
            obj.get("images")
        }
        Some(i)
            if i.kind == "Kustomization"
                && i.api_version.starts_with("kustomize.toolkit.fluxcd.io/") =>
        {
            obj.get("spec").and_then(|s| s.get("images"))
        }
        None if is_kustomization_file => obj.get("images"),
        _ => None,
    };
    if let Some(images) = images {
        for entry in items(images) {
            let NodeKind::Mapping(pairs) = &entry.kind else {
                continue;
            };
            let marked = pairs
                .iter()
                .any(|(_, v)| marked_at.contains(&v.span.start) || f.ignored(v));
            if marked || pairs.is_empty() {
                continue;
            }
            let name = entry.get("name").and_then(Node::as_str).unwrap_or("?");
            let at = entry
                .get("newTag")
                .or_else(|| entry.get("newName"))
                .unwrap_or(entry);
            f.error(
                at,
                "missing-marker",
                format!(
                    "{label}: images entry {name} has no marker: put # {{\"$imagepolicy\": \"NAMESPACE:POLICY:tag\"}} on newTag (or the :name marker on newName), or # {IGNORE}"
                ),
            );
        }
    }
}

/// Lints `files` (path, text). `definitions` are more files whose ImagePolicies
/// and ImageRepositories count as defined, without being linted.
pub fn lint(files: &[(String, String)], definitions: &[(String, String)]) -> Vec<Finding> {
    let all: Vec<(String, String)> = files.iter().chain(definitions).cloned().collect();
    let policies = Policies::collect(&all);
    let mut findings = Vec::new();
    for (path, text) in files {
        let mut f = FileLint {
            path,
            text,
            out: Vec::new(),
        };
        let docs = match yaml::parse(text) {
            Ok(d) => d,
            Err(e) => {
                if text.contains("$imagepolicy") {
                    f.at(
                        e.line,
                        e.column,
                        Severity::Error,
                        "yaml-syntax",
                        format!(
                            "not valid YAML, so its markers cannot be updated: {}",
                            e.message
                        ),
                    );
                }
                findings.extend(f.out);
                continue;
            }
        };
        if text.contains("image.toolkit.fluxcd.io") {
            for p in load_str(path, text).problems {
                f.out.push(Finding {
                    file: p.file.clone(),
                    line: p.line,
                    column: p.column,
                    severity: p.severity,
                    message: {
                        let mut m = String::new();
                        if let Some(o) = &p.object {
                            m.push_str(&format!("{o}: "));
                        }
                        if let Some(field) = &p.field {
                            m.push_str(&format!("{field}: "));
                        }
                        m.push_str(&p.message);
                        if let Some(h) = &p.hint {
                            m.push_str(&format!(" ({h})"));
                        }
                        m
                    },
                    rule: p.rule,
                });
            }
        }
        let marked = scan_documents(text, &docs);
        // Values with a marker comment, valid or not (an invalid one is
        // reported as such, not as a missing marker).
        let marked_at: HashSet<usize> = marked.iter().map(|m| m.span.start).collect();
        for m in &marked {
            check_marker(&mut f, m, &policies);
        }
        // Marker comments on no value.
        let attached: HashSet<usize> = marked.iter().map(|m| m.comment_line).collect();
        for (i, line) in text.lines().enumerate() {
            if let Some(hash) = line.find('#')
                && line[hash..].contains("$imagepolicy")
                && !attached.contains(&(i + 1))
            {
                f.at(
                    i + 1,
                    line[..hash].chars().count() + 1,
                    Severity::Warning,
                    "detached-marker",
                    "this marker is not on the line of a value, so nothing is updated: put it after the value, on the same line".into(),
                );
            }
        }
        let file_name = path.rsplit('/').next().unwrap_or(path);
        for doc in &docs {
            for obj in objects(&doc.root) {
                check_object(&mut f, obj, file_name, &marked_at, &policies);
            }
        }
        f.out.sort_by_key(|x| (x.line, x.column));
        findings.extend(f.out);
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(files: &[(&str, &str)]) -> Vec<Finding> {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        lint(&files, &[])
    }

    fn rules(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|x| x.rule).collect()
    }

    const POLICY: &str = "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {name: web, namespace: flux-system}\nspec: {image: ghcr.io/org/web, interval: 5m}\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: web, namespace: flux-system}\nspec:\n  imageRepositoryRef: {name: web}\n  policy: {semver: {range: '1.x'}}\n";

    fn deployment(image_line: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          {image_line}\n"
        )
    }

    #[test]
    fn clean() {
        let d =
            deployment("image: ghcr.io/org/web:1.0.0 # {\"$imagepolicy\": \"flux-system:web\"}");
        assert_eq!(run(&[("p.yaml", POLICY), ("d.yaml", &d)]), vec![]);
    }

    #[test]
    fn missing_and_ignored() {
        let d = deployment("image: ghcr.io/org/web:1.0.0");
        let f = run(&[("p.yaml", POLICY), ("d.yaml", &d)]);
        assert_eq!(rules(&f), ["missing-marker"]);
        assert!(f[0].message.contains("flux-system:web"), "{}", f[0]);
        assert_eq!((f[0].line, f[0].column), (9, 18));
        let d = deployment("image: busybox:1.36 # imageauto:ignore pinned");
        assert_eq!(run(&[("d.yaml", &d)]), vec![]);
    }

    #[test]
    fn marker_problems() {
        for (line, rule) in [
            (
                "image: x:1 # {\"$imagepolicy\": flux-system:web}",
                "invalid-marker",
            ),
            (
                "image: x:1 # {\"$imagepolicy\": \"flux-system:web:version\"}",
                "unknown-suffix",
            ),
            (
                "image: ghcr.io/org/web:1 # {\"$imagepolicy\": \"flux-system:nope\"}",
                "unknown-policy",
            ),
            (
                "image: ghcr.io/org/api:1 # {\"$imagepolicy\": \"flux-system:web\"}",
                "image-mismatch",
            ),
            (
                "image: ghcr.io/org/web:1 # {\"$imagepolicy\": \"flux-system:web:tag\"}",
                "tag-marker-on-reference",
            ),
            (
                "image: 1.2.3 # {\"$imagepolicy\": \"flux-system:web\"}",
                "full-marker-on-tag",
            ),
        ] {
            let d = deployment(line);
            let f = run(&[("p.yaml", POLICY), ("d.yaml", &d)]);
            assert!(rules(&f).contains(&rule), "{line}: {f:#?}");
        }
    }

    /// A repository or policy with another error (an unknown field here)
    /// still defines what markers are checked against: every finding is
    /// reported, the load's and the mismatch.
    #[test]
    fn broken_image_objects_still_check_markers() {
        let broken_repo = POLICY.replace("interval: 5m}", "interval: 5m, bogus: 1}");
        let broken_policy = POLICY.replace(
            "imageRepositoryRef: {name: web}",
            "imageRepositoryRef: {name: web}\n  bogus: 1",
        );
        assert_ne!(broken_repo, POLICY);
        assert_ne!(broken_policy, POLICY);
        let d = deployment("image: ghcr.io/org/api:1 # {\"$imagepolicy\": \"flux-system:web\"}");
        for p in [&broken_repo, &broken_policy] {
            let f = run(&[("p.yaml", p), ("d.yaml", &d)]);
            let r = rules(&f);
            assert!(r.contains(&"unknown-field"), "{f:#?}");
            assert!(r.contains(&"image-mismatch"), "{f:#?}");
            assert!(!r.contains(&"unknown-policy"), "{f:#?}");
        }
    }

    #[test]
    fn kustomization_images() {
        let k = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n  - name: web\n    newName: ghcr.io/org/web\n    newTag: 1.0.0 # {\"$imagepolicy\": \"flux-system:web:tag\"}\n  - name: api\n    newTag: 2.0.0\n";
        let f = run(&[("kustomization.yaml", k)]);
        assert_eq!(rules(&f), ["missing-marker"]);
        assert_eq!(f[0].line, 8);
    }

    #[test]
    fn detached_and_unknown_fields() {
        let d = "a: 1\n# {\"$imagepolicy\": \"flux-system:web\"}\n";
        assert_eq!(rules(&run(&[("d.yaml", d)])), ["detached-marker"]);
        let p = "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {name: x}\nspec:\n  image: nginx\n  interval: 1m\n  tagPolicy: {}\n";
        let f = run(&[("r.yaml", p)]);
        assert_eq!(rules(&f), ["unknown-field"]);
        assert!(f[0].message.contains("ImagePolicy"));
    }
}
