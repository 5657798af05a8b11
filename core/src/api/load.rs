//! Reading the image kinds (and Flux GitRepositories) out of YAML files, with
//! errors that name the file, the line, the field and what to do.

use super::{
    GROUP, GitRepository, ImagePolicy, ImageRepository, ImageUpdateAutomation, SOURCE_GROUP,
    validate,
};
use crate::yaml::{self, Node, NodeKind};
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::sync::OnceLock;

/// One of the kinds imageauto reads. (A file holds a handful of these; the
/// size difference between variants does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Repository(ImageRepository),
    Policy(ImagePolicy),
    Automation(ImageUpdateAutomation),
    GitRepository(GitRepository),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Repository(_) => "ImageRepository",
            Object::Policy(_) => "ImagePolicy",
            Object::Automation(_) => "ImageUpdateAutomation",
            Object::GitRepository(_) => "GitRepository",
        }
    }
}

/// An object and where it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub object: Object,
    pub file: String,
    /// Line of the document's first node.
    pub line: usize,
}

/// Severity of a problem found while loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A problem in a file: where, which object, which field, what, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// `Kind namespace/name` of the object, when known.
    pub object: Option<String>,
    /// Dotted field path, such as `spec.policy.semver.range`.
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
    /// Short rule name, for the lint.
    pub rule: &'static str,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl Problem {
    pub fn severity_word(&self) -> &'static str {
        match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// An object of one of the kinds that did not load (its problems say why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub file: String,
    pub line: usize,
    /// `spec.image` as written, when the document has one (ImageRepository):
    /// what the lint still compares markers with while the object is broken.
    pub image: Option<String>,
    /// `spec.imageRepositoryRef` as written (namespace, name), when the
    /// document has one (ImagePolicy).
    pub repository_ref: Option<(Option<String>, String)>,
}

/// What a file held: the objects that loaded, those that did not, and the
/// problems found.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub objects: Vec<Loaded>,
    pub rejected: Vec<Rejected>,
    pub problems: Vec<Problem>,
}

impl LoadResult {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }
}

/// Whether `api_version`/`kind` is one of the image kinds; `Err` carries the
/// problem with the version when the group is ours but the version is not served.
fn image_kind(api_version: &str, kind: &str) -> Option<Result<(), String>> {
    let (group, version) = api_version.split_once('/')?;
    if group != GROUP {
        return None;
    }
    let Some(served) = super::served_versions(kind) else {
        return Some(Err(format!(
            "kind {kind} is not part of {GROUP}: expected ImageRepository, ImagePolicy or ImageUpdateAutomation"
        )));
    };
    if served.contains(&version) {
        Some(Ok(()))
    } else {
        Some(Err(format!(
            "apiVersion {api_version} is not served for {kind}: use {GROUP}/v1 (also read: {})",
            served
                .iter()
                .map(|v| format!("{GROUP}/{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// Reads every image-kind object and GitRepository of a YAML text. Other
/// documents are ignored. A YAML syntax error is one problem for the file.
pub fn load_str(file: &str, text: &str) -> LoadResult {
    let mut out = LoadResult::default();
    let docs = match yaml::parse(text) {
        Ok(d) => d,
        Err(e) => {
            out.problems.push(Problem {
                severity: Severity::Error,
                file: file.to_string(),
                line: e.line,
                column: e.column,
                object: None,
                field: None,
                message: format!("not valid YAML: {}", e.message),
                hint: None,
                rule: "yaml-syntax",
            });
            return out;
        }
    };
    for doc in docs {
        let before = out.objects.len();
        load_document(file, &doc.root, &mut out);
        if out.objects.len() == before
            && let Some(rejected) = identity(file, &doc.root)
        {
            out.rejected.push(rejected);
        }
    }
    out
}

fn str_at<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Node::as_str)
}

/// The identity of a document that is one of the kinds read.
fn identity(file: &str, root: &Node) -> Option<Rejected> {
    let (Some(api_version), Some(kind)) = (str_at(root, "apiVersion"), str_at(root, "kind")) else {
        return None;
    };
    let is_source = api_version.split_once('/').map(|(g, _)| g) == Some(SOURCE_GROUP)
        && kind == "GitRepository";
    if image_kind(api_version, kind).is_none() && !is_source {
        return None;
    }
    let meta = root.get("metadata");
    let spec = root.get("spec");
    let repository_ref = spec.and_then(|s| s.get("imageRepositoryRef"));
    Some(Rejected {
        image: spec.and_then(|s| str_at(s, "image")).map(str::to_string),
        repository_ref: repository_ref.and_then(|r| str_at(r, "name")).map(|name| {
            (
                repository_ref
                    .and_then(|r| str_at(r, "namespace"))
                    .map(str::to_string),
                name.to_string(),
            )
        }),
        kind: kind.to_string(),
        namespace: meta
            .and_then(|m| str_at(m, "namespace"))
            .map(str::to_string),
        name: meta
            .and_then(|m| str_at(m, "name"))
            .unwrap_or("")
            .to_string(),
        file: file.to_string(),
        line: root.span.line,
    })
}

fn load_document(file: &str, root: &Node, out: &mut LoadResult) {
    let (Some(api_version), Some(kind)) = (str_at(root, "apiVersion"), str_at(root, "kind")) else {
        return;
    };
    let is_source = api_version.split_once('/').map(|(g, _)| g) == Some(SOURCE_GROUP)
        && kind == "GitRepository";
    let check = image_kind(api_version, kind);
    if check.is_none() && !is_source {
        return;
    }
    let meta = root.get("metadata");
    let name = meta.and_then(|m| str_at(m, "name")).unwrap_or("");
    let namespace = meta.and_then(|m| str_at(m, "namespace"));
    let label = match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let problem =
        |node: &Node, field: Option<String>, message: String, hint: Option<String>, rule| Problem {
            severity: Severity::Error,
            file: file.to_string(),
            line: node.span.line,
            column: node.span.column,
            object: Some(label.clone()),
            field,
            message,
            hint,
            rule,
        };
    if let Some(Err(message)) = check {
        let at = root.get("apiVersion").unwrap_or(root);
        out.problems.push(problem(
            at,
            Some("apiVersion".into()),
            message,
            None,
            "api-version",
        ));
        return;
    }
    if name.is_empty() {
        out.problems.push(problem(
            meta.unwrap_or(root),
            Some("metadata.name".into()),
            "every object needs a name".into(),
            None,
            "schema",
        ));
        return;
    }
    let value = match root.to_json() {
        Ok(v) => v,
        Err(e) => {
            out.problems
                .push(problem(root, None, e, None, "yaml-syntax"));
            return;
        }
    };
    if !is_source {
        let mut unknown = Vec::new();
        unknown_fields(&value, schema_of(kind), &mut Vec::new(), &mut unknown);
        let before = out.problems.len();
        for path in unknown {
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            let (parent, last) = parts.split_at(parts.len() - 1);
            let at = if locate_depth(root, parent) == parent.len() {
                let parent_node = root.locate(parent);
                parent_node.key_node(last[0]).unwrap_or(parent_node)
            } else {
                root.locate(parent)
            };
            let dotted = parts.join(".");
            out.problems.push(problem(
                at,
                Some(dotted.clone()),
                format!("unknown field {:?}", last[0]),
                unknown_field_hint(kind, &dotted, parent, last[0]),
                "unknown-field",
            ));
        }
        if out.problems.len() > before {
            return;
        }
    }
    let object = match kind {
        "ImageRepository" => typed::<ImageRepository>(value).map(Object::Repository),
        "ImagePolicy" => typed::<ImagePolicy>(value).map(Object::Policy),
        "ImageUpdateAutomation" => typed::<ImageUpdateAutomation>(value).map(Object::Automation),
        _ => typed::<GitRepository>(value).map(Object::GitRepository),
    };
    let object = match object {
        Ok(o) => o,
        Err((path, message)) => {
            // serde_path_to_error writes `a.b[2].c`.
            let parts: Vec<&str> = path
                .split(['.', '[', ']'])
                .filter(|p| !p.is_empty())
                .collect();
            out.problems.push(problem(
                root.locate(&parts),
                (!path.is_empty()).then_some(path),
                message,
                None,
                "schema",
            ));
            return;
        }
    };
    let mut bad = false;
    for fe in validate::validate(&object) {
        let parts: Vec<&str> = fe.field.split('.').collect();
        bad |= fe.severity == Severity::Error;
        let mut p = problem(
            root.locate(&parts),
            Some(fe.field),
            fe.message,
            fe.hint,
            fe.rule,
        );
        p.severity = fe.severity;
        out.problems.push(p);
    }
    if !bad {
        out.objects.push(Loaded {
            object,
            file: file.to_string(),
            line: root.span.line,
        });
    }
}

/// How many elements of `path` exist below `root`.
fn locate_depth(root: &Node, path: &[&str]) -> usize {
    let mut node = root;
    for (i, key) in path.iter().enumerate() {
        let next = match &node.kind {
            NodeKind::Sequence(items) => key.parse::<usize>().ok().and_then(|n| items.get(n)),
            _ => node.get(key),
        };
        match next {
            Some(n) => node = n,
            None => return i,
        }
    }
    path.len()
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

fn schema_of(kind: &str) -> &'static Value {
    static SCHEMAS: OnceLock<[Value; 3]> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        let of = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            crd.spec
                .versions
                .first()
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null)
        };
        [
            of(ImageRepository::crd()),
            of(ImagePolicy::crd()),
            of(ImageUpdateAutomation::crd()),
        ]
    });
    match kind {
        "ImageRepository" => &schemas[0],
        "ImagePolicy" => &schemas[1],
        _ => &schemas[2],
    }
}

/// Collects the paths of fields that the schema does not define.
fn unknown_fields(
    value: &Value,
    schema: &Value,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                return;
            }
            for (k, v) in map {
                // metadata is Kubernetes' own and carries fields of its own.
                if path.is_empty() && matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(k)).or(additional);
                path.push(k.clone());
                match sub {
                    Some(s) => unknown_fields(v, s, path, out),
                    None => out.push(path.clone()),
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    unknown_fields(v, item_schema, path, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// The allowed field names at `parent` in `kind`'s schema.
fn allowed_fields(kind: &str, parent: &[&str]) -> Vec<String> {
    let mut schema = schema_of(kind);
    for key in parent {
        let next = schema
            .get("properties")
            .and_then(|p| p.get(*key))
            .or_else(|| schema.get("additionalProperties"))
            .or_else(|| schema.get("items"));
        match next {
            Some(s) => schema = s,
            None => return Vec::new(),
        }
    }
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Explains the common mistakes behind an unknown field.
fn unknown_field_hint(kind: &str, dotted: &str, parent: &[&str], field: &str) -> Option<String> {
    let known = match (kind, dotted) {
        ("ImageRepository", "spec.tagPolicy" | "spec.policy" | "spec.filterTags") => Some(
            "tag selection belongs in an ImagePolicy: spec.policy (semver, alphabetical or numerical) and spec.filterTags, with spec.imageRepositoryRef naming this ImageRepository",
        ),
        ("ImageRepository", "spec.url" | "spec.repository" | "spec.imageName") => {
            Some("the repository to scan is spec.image, without scheme or tag (ghcr.io/org/app)")
        }
        ("ImageRepository", "spec.tag") => Some(
            "an ImageRepository scans every tag of spec.image; choose tags with an ImagePolicy",
        ),
        ("ImageUpdateAutomation", p)
            if p.ends_with("patchStrategicMerge") || p.ends_with("patches") =>
        {
            Some(
                "patchStrategicMerge is not a field of ImageUpdateAutomation: markers select what is updated; put a comment # {\"$imagepolicy\": \"NAMESPACE:POLICY\"} on the line of each image field and set spec.update.path",
            )
        }
        ("ImageUpdateAutomation", "spec.checkout" | "spec.commit" | "spec.push") => Some(
            "checkout, commit and push go under spec.git (spec.git.checkout, spec.git.commit, spec.git.push)",
        ),
        ("ImageUpdateAutomation", "spec.git.branch") => Some(
            "the branch goes in spec.git.checkout.ref.branch (where to start) or spec.git.push.branch (where to push)",
        ),
        ("ImageUpdateAutomation", "spec.update.setters") => {
            Some("Setters is the value of spec.update.strategy, not a field")
        }
        ("ImagePolicy", "spec.semver" | "spec.alphabetical" | "spec.numerical") => Some(
            "the ordering goes under spec.policy: spec.policy.semver.range, spec.policy.alphabetical.order or spec.policy.numerical.order",
        ),
        ("ImagePolicy", "spec.range") => Some("the range goes in spec.policy.semver.range"),
        (
            "ImagePolicy",
            "spec.imageRepository" | "spec.repositoryRef" | "spec.imageRepositoryName",
        ) => Some("the repository is named by spec.imageRepositoryRef.name"),
        ("ImagePolicy", "spec.filterTags.regex" | "spec.filterTags.filter") => {
            Some("the regular expression goes in spec.filterTags.pattern")
        }
        ("ImagePolicy", "spec.policy.semver.ranges" | "spec.policy.semver.version") => {
            Some("the field is spec.policy.semver.range")
        }
        _ => None,
    };
    if let Some(k) = known {
        return Some(k.to_string());
    }
    let allowed = allowed_fields(kind, parent);
    let best = allowed
        .iter()
        .map(|a| (edit_distance(&a.to_lowercase(), &field.to_lowercase()), a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, a)) => Some(format!("did you mean {a:?}?")),
        None if !allowed.is_empty() => Some(format!("known fields here: {}", allowed.join(", "))),
        None => None,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
