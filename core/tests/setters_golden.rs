//! Golden files: each `tests/golden/setters/NAME.in.*` rewritten with the same
//! images must give `NAME.out.*` byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_core::api::ImageRef;
use imageauto_core::setters::apply;
use std::collections::BTreeMap;
use std::path::Path;

pub fn golden_images() -> BTreeMap<String, ImageRef> {
    let img = |name: &str, tag: &str, digest: Option<String>| ImageRef {
        name: name.into(),
        tag: tag.into(),
        digest,
    };
    BTreeMap::from([
        (
            "apps:web".to_string(),
            img("ghcr.io/org/web", "1.2.0", None),
        ),
        (
            "apps:api".to_string(),
            img(
                "ghcr.io/org/api",
                "1.5.1",
                Some(format!("sha256:{}", "1".repeat(64))),
            ),
        ),
        (
            "apps:report".to_string(),
            img("ghcr.io/org/report", "1.0.0", None),
        ),
        ("apps:numbers".to_string(), img("x", "1.10", None)),
    ])
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/setters");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.contains(".in.") {
            continue;
        }
        let input = std::fs::read_to_string(&path).unwrap();
        let want = std::fs::read_to_string(dir.join(name.replace(".in.", ".out."))).unwrap();
        let got = apply(&input, &golden_images()).unwrap();
        assert_eq!(got.text.as_deref().unwrap_or(&input), want, "{name}");
        assert!(!got.changes.is_empty(), "{name}: nothing changed");
        n += 1;
    }
    assert!(n >= 12, "only {n} golden files");
}
