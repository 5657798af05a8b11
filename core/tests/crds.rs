//! `manifests/crds/` is what the types of `imageauto_core::api` generate: a
//! change to the types without `make crds` fails here. The v1 schema is
//! compared with Flux's own CRDs (`tests/golden/flux-crds/`, copied from
//! image-reflector-controller and image-automation-controller), and the
//! validation of files read outside a cluster with what that schema takes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_core::api::{STORAGE_VERSION, crd_files, crds, crds_yaml, load_str, served_versions};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds")
}

#[test]
fn checked_in_crds_match_the_types() {
    let dir = crds_dir();
    let files = crd_files().unwrap();
    let mut stale = Vec::new();
    for (name, want) in &files {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(have) if &have == want => {}
            Ok(_) => stale.push(format!("manifests/crds/{name} differs")),
            Err(e) => stale.push(format!("manifests/crds/{name}: {e}")),
        }
    }
    let want: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !want.contains(name.as_str()) {
            stale.push(format!("manifests/crds/{name} is not generated"));
        }
    }
    assert!(
        stale.is_empty(),
        "manifests/crds is out of date with imageauto_core::api; run `make crds`:\n  {}",
        stale.join("\n  ")
    );
}

#[test]
fn every_kind_stores_v1_and_serves_its_older_versions_deprecated() {
    let all = crds();
    let kinds: Vec<&str> = all.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["ImageRepository", "ImagePolicy", "ImageUpdateAutomation"]
    );
    for crd in &all {
        let kind = &crd.spec.names.kind;
        let names: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, served_versions(kind).unwrap(), "{kind}");
        let stored: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(stored, [STORAGE_VERSION], "{kind}");
        let v1 = &crd.spec.versions[0];
        assert!(v1.served && v1.deprecated.is_none());
        assert!(v1.subresources.as_ref().unwrap().status.is_some(), "{kind}");
        for old in &crd.spec.versions[1..] {
            assert!(old.served && !old.storage);
            assert_eq!(old.deprecated, Some(true));
            assert_eq!(
                old.deprecation_warning.as_deref(),
                Some(format!("{} {kind} is deprecated, upgrade to v1", old.name).as_str())
            );
            // The same schema, columns and subresources: no conversion needed.
            assert_eq!(old.schema, v1.schema, "{kind} {}", old.name);
            assert_eq!(
                old.additional_printer_columns,
                v1.additional_printer_columns
            );
            assert_eq!(old.subresources, v1.subresources);
        }
        assert!(crd.spec.conversion.is_none(), "{kind}");
        let categories = crd.spec.names.categories.clone().unwrap();
        assert_eq!(categories, ["all", "fluxcd", "fluxcd-images"], "{kind}");
    }
}

#[test]
fn the_stream_holds_every_crd_once() {
    let text = crds_yaml().unwrap();
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    // No null among enum values (a 1.20 apiserver refuses such CRDs).
    assert!(!text.contains("- null"), "{text}");
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "imagerepositories.image.toolkit.fluxcd.io",
            "imagepolicies.image.toolkit.fluxcd.io",
            "imageupdateautomations.image.toolkit.fluxcd.io",
        ]
    );
}

/// The `(file stem, kind)` of the three image kinds.
const KINDS: [(&str, &str); 3] = [
    ("imagerepositories", "ImageRepository"),
    ("imagepolicies", "ImagePolicy"),
    ("imageupdateautomations", "ImageUpdateAutomation"),
];

/// Flux's CRD of a kind, from `tests/golden/flux-crds/` (see its README).
fn fluxs_crd(plural: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden/flux-crds")
        .join(format!("image.toolkit.fluxcd.io_{plural}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// Our generated CRD of a kind, as JSON.
fn our_crd(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(crd).unwrap()
}

fn v1(crd: &Value) -> &Value {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap()
}

/// Equal as JSON, numbers by value (`0` and `0.0` are the same minimum).
fn equal_as_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal_as_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equal_as_json(v, w)))
        }
        _ => a == b,
    }
}

/// The keywords of a schema node that decide what the apiserver accepts,
/// stores, defaults and merges. Descriptions are compared apart (every
/// field Flux describes is described; the words are ours).
const COMPARED: [&str; 18] = [
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "default",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
];

/// Walks two schemas side by side and records every difference as
/// `PATH: KEYWORD`: a compared keyword, `required` (as a set), a property
/// one side lacks (`missing` in ours, `extra` in ours), or `description`
/// when Flux describes a field and we do not.
fn compare(ours: &Value, fluxs: &Value, path: &str, out: &mut BTreeMap<String, String>) {
    for key in COMPARED {
        let (a, b) = (&ours[key], &fluxs[key]);
        if !equal_as_json(a, b) {
            out.insert(format!("{path}: {key}"), format!("ours {a}, Flux's {b}"));
        }
    }
    let required = |s: &Value| -> BTreeSet<String> {
        s["required"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    if required(ours) != required(fluxs) {
        out.insert(
            format!("{path}: required"),
            format!("ours {:?}, Flux's {:?}", required(ours), required(fluxs)),
        );
    }
    if fluxs["description"].is_string() && !ours["description"].is_string() {
        out.insert(format!("{path}: description"), "Flux's has one".into());
    }
    let props = |s: &Value| s["properties"].as_object().cloned().unwrap_or_default();
    let (po, pf) = (props(ours), props(fluxs));
    for name in po.keys().chain(pf.keys()).collect::<BTreeSet<_>>() {
        let sub = format!("{path}.{name}");
        match (po.get(name), pf.get(name)) {
            (Some(a), Some(b)) => compare(a, b, &sub, out),
            (None, Some(_)) => {
                out.insert(format!("{sub}: missing"), String::new());
            }
            (Some(_), None) => {
                out.insert(format!("{sub}: extra"), String::new());
            }
            (None, None) => {}
        }
    }
    for (key, mark) in [("items", "[]"), ("additionalProperties", "{}")] {
        let (a, b) = (&ours[key], &fluxs[key]);
        if a.is_object() || b.is_object() {
            compare(a, b, &format!("{path}{mark}"), out);
        }
    }
}

/// Every difference that remains between our v1 schema and Flux's, by kind
/// and `PATH: KEYWORD` (PATH from the schema's root), with its reason. The
/// test fails when one goes away as well as when one comes: keep this list
/// (and the README's "Compatibility with Flux") true.
///
/// - `: required` (all three kinds): ours requires `spec`, Flux's schema
///   requires nothing at the root. Our types (kube's derive) cannot read an
///   object without a spec, and a list or watch that meets one fails for
///   every object of the kind; Flux's controllers cannot do anything with
///   such an object either (its spec's own required fields are missing).
///
/// Not compared, and different:
/// - descriptions: ours, in our words, describe imageauto's behaviour; every
///   field Flux describes has one (checked above), and some more do
///   (`status.observedGeneration` of ImagePolicy and ImageUpdateAutomation);
/// - the `controller-gen.kubebuilder.io/version` annotation (the tool that
///   wrote Flux's files);
/// - the served versions: Flux serves v1 alone; we serve v1beta2 (and
///   v1beta1 for ImageUpdateAutomation) too, deprecated, with the v1 schema,
///   for the files users still have (`served_versions`).
const REMAINING: [(&str, &str, &str); 3] = [
    (
        "ImageRepository",
        ": required",
        "spec is required: our types cannot read an object without one",
    ),
    (
        "ImagePolicy",
        ": required",
        "spec is required: our types cannot read an object without one",
    ),
    (
        "ImageUpdateAutomation",
        ": required",
        "spec is required: our types cannot read an object without one",
    ),
];

#[test]
fn the_v1_schema_is_fluxs() {
    let mut unexpected = Vec::new();
    let mut gone: BTreeSet<(String, String)> = REMAINING
        .iter()
        .map(|(k, p, _)| (k.to_string(), p.to_string()))
        .collect();
    for (plural, kind) in KINDS {
        let (ours, fluxs) = (our_crd(kind), fluxs_crd(plural));
        // Names, scope and the annotation Flux's tooling reads.
        assert_eq!(ours["spec"]["names"], fluxs["spec"]["names"], "{kind}");
        assert_eq!(ours["spec"]["scope"], fluxs["spec"]["scope"], "{kind}");
        assert_eq!(ours["spec"]["group"], fluxs["spec"]["group"], "{kind}");
        let substitute = "kustomize.toolkit.fluxcd.io/substitute";
        assert_eq!(
            ours["metadata"]["annotations"][substitute],
            fluxs["metadata"]["annotations"][substitute],
            "{kind}"
        );
        let (ov1, fv1) = (v1(&ours), v1(&fluxs));
        // Printer columns: Flux's, in Flux's order, with Flux's priorities.
        assert!(
            equal_as_json(
                &ov1["additionalPrinterColumns"],
                &fv1["additionalPrinterColumns"]
            ),
            "{kind}: printer columns\n ours {}\n Flux's {}",
            ov1["additionalPrinterColumns"],
            fv1["additionalPrinterColumns"]
        );
        assert_eq!(ov1["subresources"], fv1["subresources"], "{kind}");
        assert_eq!(ov1["storage"], true, "{kind}");
        let mut diffs = BTreeMap::new();
        compare(
            &ov1["schema"]["openAPIV3Schema"],
            &fv1["schema"]["openAPIV3Schema"],
            "",
            &mut diffs,
        );
        for (at, what) in diffs {
            if !gone.remove(&(kind.to_string(), at.clone())) {
                unexpected.push(format!("{kind} {at} {what}"));
            }
        }
    }
    assert!(
        unexpected.is_empty() && gone.is_empty(),
        "the v1 schema differs from Flux's where REMAINING does not say so:\n  {}\nlisted in REMAINING, but the same now: {gone:?}",
        unexpected.join("\n  ")
    );
}

#[test]
fn no_crd_holds_what_flux_substitution_would_replace() {
    // A Flux Kustomization with postBuild substitution replaces `${...}` in
    // what it applies, unless the object opts out as Flux's
    // ImageUpdateAutomation CRD does.
    for (_, kind) in KINDS {
        let crd = our_crd(kind);
        if crd["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/substitute"] == "disabled" {
            continue;
        }
        assert!(!crd.to_string().contains("${"), "{kind}");
    }
}

/// Where a spec field lives in the schema: `spec.a.b` to the schema node.
fn schema_at<'a>(root: &'a Value, field: &str) -> &'a Value {
    field
        .split('.')
        .fold(root, |s, name| &s["properties"][name])
}

/// A valid object of each kind, as JSON; the cases below change one field.
fn base(kind: &str) -> Value {
    let spec = match kind {
        "ImageRepository" => json!({"image": "ghcr.io/org/app", "interval": "5m"}),
        "ImagePolicy" => json!({
            "imageRepositoryRef": {"name": "app"},
            "policy": {"semver": {"range": "1.x"}}
        }),
        _ => json!({
            "interval": "5m",
            "sourceRef": {"kind": "GitRepository", "name": "fleet"},
            "git": {"commit": {"author": {"email": "bot@example.com"}}}
        }),
    };
    json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": kind,
        "metadata": {"name": "app", "namespace": "apps"},
        "spec": spec
    })
}

/// Sets `spec.a.b` (creating objects on the way); `None` removes it.
fn set(doc: &mut Value, field: &str, value: Option<Value>) {
    let names: Vec<&str> = field.split('.').collect();
    let (last, parents) = names.split_last().unwrap();
    let mut at = doc;
    for name in parents {
        if !at[*name].is_object() {
            at[*name] = json!({});
        }
        at = &mut at[*name];
    }
    match value {
        Some(v) => at[*last] = v,
        None => {
            at.as_object_mut().unwrap().remove(*last);
        }
    }
}

/// Whether reading the object as a file (serde, unknown fields, validate)
/// takes it without error.
fn we_take(doc: &Value) -> Result<(), String> {
    let r = load_str("case.yaml", &doc.to_string());
    let errors: Vec<String> = r.errors().map(ToString::to_string).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Flux's schema's verdict on one value of a field, from the keyword.
fn schema_takes(keyword: &str, rule: &Value, value: &Value) -> bool {
    match keyword {
        "pattern" => regex::Regex::new(rule.as_str().unwrap())
            .unwrap()
            .is_match(value.as_str().unwrap()),
        "maxLength" => value.as_str().unwrap().chars().count() as u64 <= rule.as_u64().unwrap(),
        "maxItems" => value.as_array().unwrap().len() as u64 <= rule.as_u64().unwrap(),
        "enum" => rule.as_array().unwrap().contains(value),
        other => panic!("no verdict for {other}"),
    }
}

/// Values tried against each kind of limit.
fn candidates(keyword: &str, field: &str) -> Vec<Value> {
    let strings = |v: &[&str]| v.iter().map(|s| json!(s)).collect::<Vec<_>>();
    match keyword {
        "pattern" => strings(&[
            "5m", "1h30m", "1.5s", "250ms", "0s", "90m", "1h", "2h0m0s", "10m5s", "5", "m", "5 m",
            "-5m", "1d", "1.m", ".5m", "5mh", "", "1H", "5M", "1us",
        ]),
        "maxLength" => vec![json!("a".repeat(253)), json!("a".repeat(254))],
        "maxItems" => vec![json!(vec!["^x$"; 25]), json!(vec!["^x$"; 26])],
        "enum" => {
            let mut v = match field {
                "spec.provider" => strings(&["generic", "aws", "azure", "gcp"]),
                "spec.digestReflectionPolicy" => strings(&["Always", "IfNotPresent", "Never"]),
                "spec.policy.alphabetical.order" | "spec.policy.numerical.order" => {
                    strings(&["asc", "desc"])
                }
                "spec.sourceRef.kind" => strings(&["GitRepository"]),
                "spec.git.commit.signingKey.type" => strings(&["gpg", "ssh"]),
                "spec.update.strategy" => strings(&["Setters"]),
                other => panic!("no enum cases for {other}"),
            };
            v.extend(strings(&["", "other", "GITREPOSITORY", "Generic"]));
            v
        }
        other => panic!("no cases for {other}"),
    }
}

/// What else a field needs for the value alone to decide (the policy's
/// interval goes with digestReflectionPolicy Always, and Always with an
/// interval: Flux's CEL rules, tried apart below; a signing key with its
/// Secret).
fn with_context(kind: &str, field: &str, value: &Value) -> Value {
    let mut doc = base(kind);
    match field {
        "spec.interval" if kind == "ImagePolicy" => set(
            &mut doc,
            "spec.digestReflectionPolicy",
            Some(json!("Always")),
        ),
        "spec.digestReflectionPolicy" if value == "Always" => {
            set(&mut doc, "spec.interval", Some(json!("10m")))
        }
        "spec.policy.alphabetical.order" | "spec.policy.numerical.order" => {
            set(&mut doc, "spec.policy", Some(json!({})))
        }
        "spec.git.commit.signingKey.type" => set(
            &mut doc,
            "spec.git.commit.signingKey.secretRef",
            Some(json!({"name": "key"})),
        ),
        _ => {}
    }
    doc
}

#[test]
fn files_are_judged_as_fluxs_schema_judges_them() {
    let mut covered = 0;
    let mut disagree = Vec::new();
    for (plural, kind) in KINDS {
        let fluxs = fluxs_crd(plural);
        let root = &v1(&fluxs)["schema"]["openAPIV3Schema"];
        // Every limit of Flux's spec that a user writes.
        let mut limits = Vec::new();
        fn walk(s: &Value, path: &str, out: &mut Vec<(String, &'static str, Value)>) {
            for key in ["pattern", "maxLength", "maxItems", "enum"] {
                if !s[key].is_null() {
                    out.push((path.to_string(), key, s[key].clone()));
                }
            }
            for (name, sub) in s["properties"].as_object().into_iter().flatten() {
                walk(sub, &format!("{path}.{name}"), out);
            }
        }
        walk(schema_at(root, "spec"), "spec", &mut limits);
        for (field, keyword, rule) in limits {
            for value in candidates(keyword, &field) {
                let mut doc = with_context(kind, &field, &value);
                set(&mut doc, &field, Some(value.clone()));
                let flux = schema_takes(keyword, &rule, &value);
                let ours = we_take(&doc);
                if flux != ours.is_ok() {
                    disagree.push(format!(
                        "{kind} {field}={value}: Flux's {keyword} {} it, we {}",
                        if flux { "takes" } else { "refuses" },
                        match ours {
                            Ok(()) => "take it".to_string(),
                            Err(e) => format!("refuse it: {e}"),
                        }
                    ));
                }
                covered += 1;
            }
        }
    }
    assert!(covered > 100, "only {covered} cases");
    assert!(disagree.is_empty(), "\n{}", disagree.join("\n"));
}

#[test]
fn the_policy_interval_rules_are_fluxs_cel_rules() {
    // Flux's two x-kubernetes-validations on ImagePolicy's spec, which a
    // 1.20 apiserver drops: validate.rs holds the same rules. The policy is
    // defaulted to Never by the schema, so "absent" is Never here.
    let fluxs = fluxs_crd("imagepolicies");
    let rules =
        &v1(&fluxs)["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"];
    assert_eq!(
        rules.as_array().unwrap().len(),
        2,
        "Flux's rules changed: {rules}"
    );
    for policy in [None, Some("Never"), Some("IfNotPresent"), Some("Always")] {
        for interval in [None, Some("5m")] {
            let mut doc = base("ImagePolicy");
            set(
                &mut doc,
                "spec.digestReflectionPolicy",
                policy.map(|p| json!(p)),
            );
            set(&mut doc, "spec.interval", interval.map(|i| json!(i)));
            // The rules as Flux writes them, evaluated on the defaulted spec.
            let always = policy == Some("Always");
            let flux = (interval.is_none() || always) && (interval.is_some() || !always);
            assert_eq!(
                we_take(&doc).is_ok(),
                flux,
                "digestReflectionPolicy {policy:?}, interval {interval:?}: {:?}",
                we_take(&doc)
            );
        }
    }
}

#[test]
fn what_fluxs_schema_takes_our_types_read() {
    // The least Flux's schema takes for each kind (its required fields, the
    // apiserver's defaults applied), and every optional field at once: both
    // load, with the defaults Flux's schema gives.
    let least = [
        base("ImageRepository"),
        json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": "p"},
            "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"numerical": {}}}
        }),
        json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
            "metadata": {"name": "u"},
            "spec": {"interval": "1m", "sourceRef": {"kind": "GitRepository", "name": "g"}}
        }),
    ];
    for doc in &least {
        assert_eq!(we_take(doc), Ok(()), "{doc}");
    }
    let full = [
        json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
            "metadata": {"name": "r"},
            "spec": {
                "image": "ghcr.io/org/app", "interval": "1h30m", "timeout": "90m",
                "secretRef": {"name": "s"}, "proxySecretRef": {"name": "p"},
                "certSecretRef": {"name": "c"}, "serviceAccountName": "sa",
                "suspend": false, "insecure": false, "provider": "generic",
                "exclusionList": [], "accessFrom": {"namespaceSelectors": [{}]}
            },
            "status": {
                "observedGeneration": -1, "canonicalImageName": "ghcr.io/org/app",
                "lastScanResult": {"tagCount": 0, "revision": "", "scanTime": null},
                "observedExclusionList": ["^.*\\.sig$"], "lastHandledReconcileAt": "x"
            }
        }),
        json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": "p"},
            "spec": {
                "imageRepositoryRef": {"name": "app", "namespace": "apps"},
                "policy": {"alphabetical": {"order": "desc"}},
                "filterTags": {"pattern": "", "extract": ""},
                "digestReflectionPolicy": "Always", "interval": "10m", "suspend": true
            },
            "status": {"latestRef": {"name": "n", "tag": "t"}, "observedPreviousRef": {"name": "n", "tag": "s"}}
        }),
        json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
            "metadata": {"name": "u"},
            "spec": {
                "interval": "1m",
                "sourceRef": {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "g", "namespace": "flux-system"},
                "git": {
                    "checkout": {"ref": {"branch": "main", "tag": "v1", "semver": "1.x", "name": "refs/heads/main", "commit": "abc"}},
                    "commit": {
                        "author": {"email": "bot@example.com", "name": "bot"},
                        "signingKey": {"secretRef": {"name": "k"}, "type": "ssh"},
                        "messageTemplate": "{{ .AutomationObject }}",
                        "messageTemplateValues": {"a": "b"}
                    },
                    "push": {"branch": "auto", "refspec": "refs/heads/auto:refs/heads/x", "options": {"ci.skip": ""}}
                },
                "policySelector": {"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "k", "operator": "Exists"}]},
                "update": {"strategy": "Setters", "path": "./clusters"},
                "suspend": false
            },
            "status": {"observedPolicies": {"p": {"name": "n", "tag": "t"}}, "lastPushCommit": "abc"}
        }),
    ];
    for doc in &full {
        assert_eq!(we_take(doc), Ok(()), "{doc}");
    }
}
