#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The checks of the `admission` fuzz target (see
//! support/admission_check.rs) over the AdmissionReview fixtures, each cut
//! short and bent in the ways a fuzzer finds first, and over the inputs in
//! tests/data/fuzz-admission (past findings of the fuzz target).

#[path = "support/admission_check.rs"]
mod admission_check;

use serde_json::{Value, json};
use std::path::Path;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 20);
    out
}

/// Replaces the value at `pointer` with each of a few of the wrong types.
fn bend(review: &Value, pointer: &str) -> Vec<Vec<u8>> {
    [
        json!(null),
        json!(7),
        json!("x"),
        json!([]),
        json!({}),
        json!([{"name": 1, "image": ["nginx"]}]),
    ]
    .into_iter()
    .filter_map(|replacement| {
        let mut v = review.clone();
        let slot = v.pointer_mut(pointer)?;
        *slot = replacement;
        Some(serde_json::to_vec(&v).unwrap())
    })
    .collect()
}

#[test]
fn fixtures_whole_cut_and_bent() {
    let pointers = [
        "/request",
        "/request/uid",
        "/request/kind",
        "/request/operation",
        "/request/object",
        "/request/oldObject",
        "/request/namespace",
        "/request/subResource",
        "/request/userInfo",
        "/request/userInfo/username",
        "/request/object/metadata",
        "/request/object/metadata/labels",
        "/request/object/metadata/annotations",
        "/request/object/metadata/ownerReferences",
        "/request/object/metadata/ownerReferences/0",
        "/request/object/metadata/ownerReferences/0/uid",
        "/request/object/spec",
        "/request/object/spec/template",
        "/request/object/spec/template/spec/containers",
        "/request/object/spec/template/spec/containers/0",
        "/request/object/spec/template/spec/containers/0/image",
        "/request/object/spec/containers/0/image",
        "/request/object/spec/policy",
        "/request/object/spec/filterTags",
        "/request/object/spec/exclusionList",
        "/request/object/spec/update",
    ];
    let mut inputs = 0;
    for (name, bytes) in fixtures() {
        eprintln!("{name}");
        admission_check::check(&bytes);
        // Cut short at a spread of places.
        for i in (0..bytes.len()).step_by((bytes.len() / 37).max(1)) {
            admission_check::check(&bytes[..i]);
            inputs += 1;
        }
        let review: Value = serde_json::from_slice(&bytes).unwrap();
        for p in pointers {
            for bent in bend(&review, p) {
                admission_check::check(&bent);
                inputs += 1;
            }
        }
        // Images that are not references; an exemption of control characters.
        let image = "/request/object/spec/template/spec/containers/0/image";
        let long = "a".repeat(5000);
        for bad in [
            "",
            " ",
            "UPPER/case",
            "a//b",
            "x@sha256:zz",
            "\u{1b}[31mred",
            &long,
        ] {
            let mut v = review.clone();
            if let Some(img) = v.pointer_mut(image) {
                *img = json!(bad);
                admission_check::check(&serde_json::to_vec(&v).unwrap());
                inputs += 1;
            }
        }
        let mut v = review.clone();
        if let Some(meta) = v.pointer_mut("/request/object/metadata") {
            meta["annotations"] = json!({"imageauto.dev/exempt": "\u{7}\n\t".repeat(200)});
            admission_check::check(&serde_json::to_vec(&v).unwrap());
            inputs += 1;
        }
    }
    assert!(inputs > 1000, "{inputs}");
}

#[test]
fn hostile_shapes() {
    let deep = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"kind":"Pod","version":"v1"}},"operation":"CREATE","namespace":"shop","object":{}{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    // Thousands of ungoverned containers, in a deny and a warn namespace,
    // with a claimed owner the view knows under another uid.
    let many: Vec<Value> = (0..3000)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("evil.io/m{i}:1")}))
        .collect();
    let many: Vec<Vec<u8>> = ["shop", "audit"]
        .iter()
        .map(|ns| {
            serde_json::to_vec(&json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"kind": "Pod", "version": "v1"},
                    "operation": "CREATE", "namespace": ns,
                    "userInfo": {"username": "system:kube-controller-manager"},
                    "object": {"metadata": {"name": "p", "ownerReferences": [
                        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                         "uid": "forged", "controller": true}]},
                        "spec": {"containers": many}}}
            }))
            .unwrap()
        })
        .collect();
    for input in [
        &many[0][..],
        &many[1][..],
        &b""[..],
        b"   ",
        b"null",
        b"\xff\xfe",
        b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":1}",
        b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{},\"operation\":\"DELETE\"}}",
        deep.as_bytes(),
    ] {
        admission_check::check(input);
    }
}

#[test]
fn past_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-admission");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        eprintln!("{}", path.display());
        admission_check::check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 1, "the seeds are there");
}
