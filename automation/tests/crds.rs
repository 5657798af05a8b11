//! `manifests/crds/` is what the types of `automation::api` generate: a
//! change to the types without `make crds` fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automation::api::{STORAGE_VERSION, crd_files, crds, crds_yaml, served_versions};
use std::collections::BTreeSet;
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
        "manifests/crds is out of date with automation::api; run `make crds`:\n  {}",
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
fn printer_columns_are_fluxs() {
    let columns = |kind: &str| -> Vec<(String, String)> {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap();
        crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.json_path))
            .collect()
    };
    let ready = ".status.conditions[?(@.type==\"Ready\")].status";
    let status = ".status.conditions[?(@.type==\"Ready\")].message";
    let age = ".metadata.creationTimestamp";
    let owned = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        columns("ImageRepository"),
        owned(&[
            ("Image", ".spec.image"),
            ("Tags", ".status.lastScanResult.tagCount"),
            ("Last scan", ".status.lastScanResult.scanTime"),
            ("Ready", ready),
            ("Status", status),
            ("Age", age),
        ])
    );
    assert_eq!(
        columns("ImagePolicy"),
        owned(&[
            ("Image", ".status.latestRef.name"),
            ("Tag", ".status.latestRef.tag"),
            ("Ready", ready),
            ("Status", status),
            ("Age", age),
        ])
    );
    assert_eq!(
        columns("ImageUpdateAutomation"),
        owned(&[
            ("Last run", ".status.lastAutomationRunTime"),
            ("Ready", ready),
            ("Status", status),
            ("Age", age),
        ])
    );
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
