//! Flux's template data, built from a [`TemplateInput`] as Flux builds it:
//! `source.TemplateData`, `update.Result` (image-automation-controller,
//! internal/update/result.go) and, for older manifests, the `update.Result`
//! of Flux before 1.2 (pkg/update/result.go), served as `.Updated`.

use super::value::{Field, List, Map, Struct, Value, go_quote};
use super::{TemplateInput, value};
use crate::reference::ImageRef;
use crate::setters::Change;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

/// An object identifier as Flux keys it: kyaml's `ResourceIdentifier`
/// {TypeMeta{APIVersion, Kind}, NameMeta{Name, Namespace}}. The tuple order
/// is the field order, so the derived `Ord` is Go's `fmtsort` order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    api_version: String,
    kind: String,
    name: String,
    namespace: String,
}

impl ObjectKey {
    fn of(change: &Change) -> ObjectKey {
        match &change.object {
            Some(o) => ObjectKey {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
                namespace: o.namespace.clone().unwrap_or_default(),
            },
            None => ObjectKey::default(),
        }
    }

    /// `fmt` of the struct: `{{{apps/v1 Deployment} {podinfo default}}}`.
    fn text(&self) -> String {
        format!(
            "{{{{{{{} {}}} {{{} {}}}}}}}",
            self.api_version, self.kind, self.name, self.namespace
        )
    }

    /// The order of `ObjectChanges.String()`: apiVersion, kind, namespace,
    /// name.
    fn string_order(&self) -> (&str, &str, &str, &str) {
        (&self.api_version, &self.kind, &self.namespace, &self.name)
    }

    fn value(&self) -> Value {
        let s = |name, v: &str| Field {
            name,
            value: Value::str(v),
            embedded: false,
        };
        let type_meta = strukt(
            "yaml.TypeMeta",
            vec![s("APIVersion", &self.api_version), s("Kind", &self.kind)],
        );
        let name_meta = strukt(
            "yaml.NameMeta",
            vec![s("Name", &self.name), s("Namespace", &self.namespace)],
        );
        let resource = strukt(
            "yaml.ResourceIdentifier",
            vec![embed("TypeMeta", type_meta), embed("NameMeta", name_meta)],
        );
        strukt(
            "update.ObjectIdentifier",
            vec![embed("ResourceIdentifier", resource)],
        )
    }
}

fn strukt(ty: &'static str, fields: Vec<Field>) -> Value {
    let comparable = fields.iter().all(|f| f.value.comparable());
    Value::Struct(Rc::new(Struct {
        ty,
        fields,
        methods: Vec::new(),
        string: None,
        comparable,
    }))
}

fn embed(name: &'static str, value: Value) -> Field {
    Field {
        name,
        value,
        embedded: true,
    }
}

fn field(name: &'static str, value: Value) -> Field {
    Field {
        name,
        value,
        embedded: false,
    }
}

/// `types.NamespacedName`: prints `namespace/name`.
fn namespaced_name(namespace: &str, name: &str) -> Value {
    Value::Struct(Rc::new(Struct {
        ty: "types.NamespacedName",
        fields: vec![
            field("Namespace", Value::str(namespace)),
            field("Name", Value::str(name)),
        ],
        methods: Vec::new(),
        string: Some(format!("{namespace}/{name}")),
        comparable: true,
    }))
}

/// `update.Change`.
type Chg = (String, String, String);

fn change_value((old, new, setter): &Chg) -> Value {
    strukt(
        "update.Change",
        vec![
            field("OldValue", Value::str(old)),
            field("NewValue", Value::str(new)),
            field("Setter", Value::str(setter)),
        ],
    )
}

fn changes_value(changes: &[Chg]) -> Value {
    Value::List(Rc::new(List {
        ty: value::CHANGES_TYPE,
        items: changes.iter().map(change_value).collect(),
        nil: changes.is_empty(),
    }))
}

fn sorted(mut changes: Vec<Chg>) -> Vec<Chg> {
    value::sort_changes(&mut changes);
    changes
}

/// `update.ObjectChanges`: object -> changes, with its `String()`.
fn object_changes_value(objects: &BTreeMap<ObjectKey, Vec<Chg>>, nil: bool) -> Value {
    let mut by_string: Vec<(&ObjectKey, &Vec<Chg>)> = objects.iter().collect();
    by_string.sort_by(|a, b| a.0.string_order().cmp(&b.0.string_order()));
    let mut string = String::from("{");
    for (i, (key, changes)) in by_string.iter().enumerate() {
        if i > 0 {
            string.push(' ');
        }
        let items: Vec<Value> = changes.iter().map(change_value).collect();
        let _ = write!(string, "{}:{}", key.text(), value::changes_string(&items));
    }
    string.push('}');
    Value::Map(Rc::new(Map {
        ty: "update.ObjectChanges",
        key_ty: "update.ObjectIdentifier",
        entries: objects
            .iter()
            .map(|(k, v)| (k.value(), changes_value(v)))
            .collect(),
        zero: changes_value(&[]),
        string: Some(string),
        nil,
    }))
}

/// The policy's `NAMESPACE:NAME` split into a `types.NamespacedName`.
fn policy_name(policy: &str) -> Value {
    let (ns, name) = policy.split_once(':').unwrap_or(("", policy));
    namespaced_name(ns, name)
}

/// What go-containerregistry's `name.ParseReference` makes of a policy's
/// latest image: (registry, repository, fully qualified name, identifier).
fn reference_parts(image: &ImageRef) -> (String, String, String, String) {
    let (registry, repo) = match image.name.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') => (first, rest),
        _ => ("", image.name.as_str()),
    };
    let registry = match registry {
        "" | "docker.io" => "index.docker.io",
        r => r,
    };
    let repository = if !repo.contains('/') && registry == "index.docker.io" {
        format!("library/{repo}")
    } else {
        repo.to_string()
    };
    let base = format!("{registry}/{repository}");
    match image.digest.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => (
            registry.to_string(),
            repository,
            format!("{base}@{d}"),
            d.to_string(),
        ),
        None => {
            let tag = if image.tag.is_empty() {
                "latest"
            } else {
                &image.tag
            };
            (
                registry.to_string(),
                repository,
                format!("{base}:{tag}"),
                tag.to_string(),
            )
        }
    }
}

/// The tag in a value a full-image setter wrote: `name:tag[@digest]`.
fn tag_of(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => &reference[i + 1..],
        _ => "",
    }
}

/// `update.ImageRef` (Flux before 1.2): prints as the reference; methods
/// `Name` (fully qualified), `Identifier`, `Repository`, `Registry`,
/// `Policy`, and, for old tags, `NewTag` and `OldTag`.
fn image_value(policy: &str, image: &ImageRef, old_tag: &str) -> Value {
    let (registry, repository, name, identifier) = reference_parts(image);
    let reference = image.reference();
    Value::Struct(Rc::new(Struct {
        ty: "update.ImageRef",
        fields: Vec::new(),
        methods: vec![
            ("String", Value::str(&reference)),
            ("Identifier", Value::str(identifier)),
            ("Repository", Value::str(repository)),
            ("Registry", Value::str(registry)),
            ("Name", Value::str(name)),
            ("Policy", policy_name(policy)),
            ("NewTag", Value::str(&image.tag)),
            ("OldTag", Value::str(old_tag)),
        ],
        string: Some(reference),
        comparable: true,
    }))
}

fn image_list(items: Vec<Value>) -> Value {
    let nil = items.is_empty();
    Value::List(Rc::new(List {
        ty: "[]update.ImageRef",
        items,
        nil,
    }))
}

fn images_by_object(entries: Vec<(Value, Value)>, nil: bool) -> Value {
    Value::Map(Rc::new(Map {
        ty: "map[update.ObjectIdentifier][]update.ImageRef",
        key_ty: "update.ObjectIdentifier",
        entries,
        zero: image_list(Vec::new()),
        string: None,
        nil,
    }))
}

/// The data given to the template.
/// The changes of a run: file -> object -> changes, in the order they were
/// made.
type ByFile<'c> = BTreeMap<&'c str, BTreeMap<ObjectKey, Vec<&'c Change>>>;

/// The data a commit message template reads, as Flux's `TemplateData`.
pub(crate) fn template_data(input: &TemplateInput) -> Value {
    let mut files: ByFile<'_> = BTreeMap::new();
    for fc in &input.changes {
        files
            .entry(fc.file.as_str())
            .or_default()
            .entry(ObjectKey::of(&fc.change))
            .or_default()
            .push(&fc.change);
    }
    Value::Struct(Rc::new(Struct {
        ty: "source.TemplateData",
        fields: vec![
            field(
                "AutomationObject",
                namespaced_name(&input.namespace, &input.name),
            ),
            field("Updated", updated(&files, &input.images)),
            field("Changed", changed(&files)),
            field("Values", values(&input.values)),
        ],
        methods: Vec::new(),
        string: None,
        comparable: false,
    }))
}

/// `.Changed`: Flux's `update.Result` of the changes, by file and object.
fn changed(files: &ByFile<'_>) -> Value {
    let chg = |c: &Change| (c.old_value.clone(), c.new_value.clone(), c.setter.clone());

    // .Changed
    let mut file_entries = Vec::new();
    let mut objects: BTreeMap<ObjectKey, Vec<Chg>> = BTreeMap::new();
    // Each distinct change once (sorted below).
    let mut all: std::collections::BTreeSet<Chg> = std::collections::BTreeSet::new();
    let mut file_string = String::from("{");
    for (i, (file, objs)) in files.iter().enumerate() {
        let per_object: BTreeMap<ObjectKey, Vec<Chg>> = objs
            .iter()
            .map(|(k, cs)| (k.clone(), cs.iter().map(|c| chg(c)).collect()))
            .collect();
        for (k, cs) in &per_object {
            objects
                .entry(k.clone())
                .or_default()
                .extend(cs.iter().cloned());
            for c in cs {
                all.insert(c.clone());
            }
        }
        let value = object_changes_value(&per_object, false);
        if i > 0 {
            file_string.push(' ');
        }
        let _ = write!(
            file_string,
            "{}:{}",
            go_quote(file),
            value.stringer().unwrap_or_default()
        );
        file_entries.push((Value::str(file), value));
    }
    file_string.push('}');
    let objects: BTreeMap<ObjectKey, Vec<Chg>> =
        objects.into_iter().map(|(k, v)| (k, sorted(v))).collect();
    // A Result without changes has a nil map.
    let nil = file_entries.is_empty();
    let file_changes = Value::Map(Rc::new(Map {
        ty: "update.FileChanges",
        key_ty: "string",
        entries: file_entries,
        zero: object_changes_value(&BTreeMap::new(), true),
        string: Some(file_string),
        nil,
    }));
    Value::Struct(Rc::new(Struct {
        ty: "update.Result",
        fields: vec![field("FileChanges", file_changes)],
        methods: vec![
            ("Changes", changes_value(&sorted(all.into_iter().collect()))),
            ("Objects", object_changes_value(&objects, false)),
        ],
        string: None,
        comparable: false,
    }))
}

/// `.Updated`: per file and object, each policy's image once, in the order
/// of its first change there.
fn updated(files: &ByFile<'_>, images: &BTreeMap<String, ImageRef>) -> Value {
    let mut updated_files = Vec::new();
    let mut by_object: BTreeMap<ObjectKey, Vec<Value>> = BTreeMap::new();
    let mut listed: Vec<Value> = Vec::new();
    let mut seen_policies: Vec<&str> = Vec::new();
    for (file, objs) in files {
        let mut entries = Vec::new();
        for (key, changes) in objs {
            let mut policies: Vec<&str> = Vec::new();
            for c in changes {
                if !policies.contains(&c.policy.as_str()) && images.contains_key(&c.policy) {
                    policies.push(&c.policy);
                }
            }
            if policies.is_empty() {
                continue;
            }
            let mut list = Vec::new();
            for policy in policies {
                let Some(image) = images.get(policy) else {
                    continue;
                };
                let old_tag = changes
                    .iter()
                    .filter(|c| c.policy == policy)
                    .find_map(|c| {
                        if c.setter == policy {
                            Some(tag_of(&c.old_value))
                        } else if c.setter == format!("{policy}:tag") {
                            Some(c.old_value.as_str())
                        } else {
                            None
                        }
                    })
                    .unwrap_or("");
                let v = image_value(policy, image, old_tag);
                if !seen_policies.contains(&policy) {
                    seen_policies.push(policy);
                    listed.push(v.clone());
                }
                list.push(v);
            }
            by_object
                .entry(key.clone())
                .or_default()
                .extend(list.iter().cloned());
            entries.push((key.value(), image_list(list)));
        }
        if entries.is_empty() {
            continue;
        }
        let file_result = strukt(
            "update.FileResult",
            vec![field("Objects", images_by_object(entries, false))],
        );
        updated_files.push((Value::str(file), file_result));
    }
    Value::Struct(Rc::new(Struct {
        ty: "update.Result",
        fields: vec![field(
            "Files",
            Value::Map(Rc::new(Map {
                ty: "map[string]update.FileResult",
                key_ty: "string",
                entries: updated_files,
                zero: strukt(
                    "update.FileResult",
                    vec![field("Objects", images_by_object(Vec::new(), true))],
                ),
                string: None,
                nil: false,
            })),
        )],
        methods: vec![
            ("Images", image_list(listed)),
            (
                "Objects",
                images_by_object(
                    by_object
                        .into_iter()
                        .map(|(k, v)| (k.value(), image_list(v)))
                        .collect(),
                    false,
                ),
            ),
        ],
        string: None,
        comparable: false,
    }))
}

/// `.Values`: `spec.git.commit.messageTemplateValues`.
fn values(values: &BTreeMap<String, String>) -> Value {
    Value::Map(Rc::new(Map {
        ty: "map[string]string",
        key_ty: "string",
        entries: values
            .iter()
            .map(|(k, v)| (Value::str(k), Value::str(v)))
            .collect(),
        zero: Value::str(""),
        string: None,
        // Flux passes the spec's map: nil when there are no values.
        nil: values.is_empty(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::value::{change_fields, compare_keys};

    #[test]
    fn object_keys_sort_like_fmtsort() {
        // Field by field: apiVersion, kind, name, namespace.
        let a = ObjectKey {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "a".into(),
            namespace: "zz".into(),
        };
        let b = ObjectKey {
            name: "b".into(),
            namespace: "aa".into(),
            ..a.clone()
        };
        assert!(a < b);
        assert_eq!(
            compare_keys(&a.value(), &b.value()),
            std::cmp::Ordering::Less
        );
        // String() orders by namespace before name.
        assert!(b.string_order() < a.string_order());
        assert_eq!(
            a.text(),
            "{{{apps/v1 Deployment} {a zz}}}",
            "fmt of an ObjectIdentifier"
        );
    }

    #[test]
    fn references_parse_like_go_containerregistry() {
        let img = |name: &str, tag: &str, digest: Option<&str>| ImageRef {
            name: name.into(),
            tag: tag.into(),
            digest: digest.map(str::to_string),
        };
        assert_eq!(
            reference_parts(&img("helloworld", "v1.0.1", None)),
            (
                "index.docker.io".into(),
                "library/helloworld".into(),
                "index.docker.io/library/helloworld:v1.0.1".into(),
                "v1.0.1".into()
            )
        );
        let d = "sha256:6745aaad46d795c9836632e1fb62f24b7e7f4c843144da8e47a5465c411a14be";
        assert_eq!(
            reference_parts(&img("localhost:5000/org/helloworld", "1.0", Some(d))),
            (
                "localhost:5000".into(),
                "org/helloworld".into(),
                format!("localhost:5000/org/helloworld@{d}"),
                d.into()
            )
        );
        assert_eq!(
            reference_parts(&img("docker.io/example/webapp", "main-1", None)).2,
            "index.docker.io/example/webapp:main-1"
        );
        // A first component without '.' or ':' is part of the repository.
        assert_eq!(
            reference_parts(&img("localhost/app", "1", None)).1,
            "localhost/app"
        );
    }

    #[test]
    fn tags_of_written_references() {
        assert_eq!(tag_of("ghcr.io/a/b:1.2.3"), "1.2.3");
        assert_eq!(tag_of("localhost:5000/a:v1@sha256:abc"), "v1");
        assert_eq!(tag_of("localhost:5000/a"), "");
        assert_eq!(tag_of("nginx"), "");
    }

    #[test]
    fn change_values_round_trip() {
        let v = change_value(&("a".into(), "b".into(), "ns:p".into()));
        assert_eq!(
            change_fields(&v),
            Some(("a".into(), "b".into(), "ns:p".into()))
        );
    }
}
