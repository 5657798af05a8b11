#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Loading the three kinds from YAML: the bundled examples, every served
//! version, and the errors a user gets for the usual mistakes.

use imageauto_core::api::{
    DigestReflectionPolicy, LoadResult, Object, Order, Provider, ResourceExt, load_str,
};
use std::path::Path;

fn load(text: &str) -> LoadResult {
    load_str("test.yaml", text)
}

fn only_error(text: &str) -> String {
    let r = load(text);
    let errors: Vec<String> = r.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors[0].clone()
}

#[test]
fn bundled_examples_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for dir in ["semver", "timestamp", "ecr-numerical"] {
        let path = root.join(dir).join("image-automation.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let r = load_str(&path.display().to_string(), &text);
        assert_eq!(r.errors().count(), 0, "{dir}: {:#?}", r.problems);
        let kinds: Vec<&str> = r.objects.iter().map(|o| o.object.kind()).collect();
        assert!(kinds.contains(&"ImageRepository"), "{dir}: {kinds:?}");
        assert!(kinds.contains(&"ImagePolicy"), "{dir}: {kinds:?}");
        assert!(kinds.contains(&"ImageUpdateAutomation"), "{dir}: {kinds:?}");
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn fields_and_defaults() {
    let r = load(
        r#"
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: app, namespace: apps}
spec:
  image: ghcr.io/org/app
  interval: 5m
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: app, namespace: apps}
spec:
  imageRepositoryRef: {name: app}
  policy:
    alphabetical: {}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {name: app, namespace: apps}
spec:
  interval: 5m
  sourceRef: {name: fleet}
"#,
    );
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    let Object::Repository(repo) = &r.objects[0].object else {
        panic!()
    };
    assert_eq!(repo.spec.exclusion_list, vec!["^.*\\.sig$".to_string()]);
    assert_eq!(repo.spec.provider, Provider::Generic);
    assert_eq!(repo.namespace().as_deref(), Some("apps"));
    let Object::Policy(p) = &r.objects[1].object else {
        panic!()
    };
    assert_eq!(
        p.spec.policy.alphabetical.as_ref().unwrap().order,
        Order::Asc
    );
    assert_eq!(
        p.spec.digest_reflection_policy,
        DigestReflectionPolicy::Never
    );
    let Object::Automation(a) = &r.objects[2].object else {
        panic!()
    };
    assert_eq!(a.spec.source_ref.kind, "GitRepository");
    assert_eq!(a.name_any(), "app");
}

#[test]
fn older_versions_load() {
    for (version, kind) in [
        ("v1beta2", "ImagePolicy"),
        ("v1beta2", "ImageRepository"),
        ("v1beta2", "ImageUpdateAutomation"),
        ("v1beta1", "ImageUpdateAutomation"),
    ] {
        let spec = match kind {
            "ImagePolicy" => "imageRepositoryRef: {name: a}\n  policy: {semver: {range: '1.x'}}",
            "ImageRepository" => "image: nginx\n  interval: 1m",
            _ => "interval: 1m\n  sourceRef: {kind: GitRepository, name: a}",
        };
        let r = load(&format!(
            "apiVersion: image.toolkit.fluxcd.io/{version}\nkind: {kind}\nmetadata: {{name: a}}\nspec:\n  {spec}\n"
        ));
        assert!(r.problems.is_empty(), "{version} {kind}: {:#?}", r.problems);
        assert_eq!(r.objects.len(), 1);
    }
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1beta1\nkind: ImagePolicy\nmetadata: {name: a}\nspec: {}\n",
    );
    assert!(e.contains("not served") && e.contains("/v1"), "{e}");
}

#[test]
fn bad_range_names_field_and_value() {
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: a}\nspec:\n  imageRepositoryRef: {name: a}\n  policy:\n    semver:\n      range: '>= 1.0 < two'\n",
    );
    assert!(e.contains("spec.policy.semver.range"), "{e}");
    assert!(e.contains(">= 1.0 < two"), "{e}");
    assert!(e.starts_with("test.yaml:8:"), "{e}");
}

#[test]
fn bad_regex_and_extract() {
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: a}\nspec:\n  imageRepositoryRef: {name: a}\n  filterTags: {pattern: '^main-(['}\n  policy: {alphabetical: {}}\n",
    );
    assert!(
        e.contains("spec.filterTags.pattern") && e.contains("^main-(["),
        "{e}"
    );
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: a}\nspec:\n  imageRepositoryRef: {name: a}\n  filterTags: {pattern: '^main-(?P<ts>\\d+)', extract: '$timestamp'}\n  policy: {numerical: {}}\n",
    );
    assert!(
        e.contains("spec.filterTags.extract") && e.contains("timestamp"),
        "{e}"
    );
}

#[test]
fn unknown_order() {
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: a}\nspec:\n  imageRepositoryRef: {name: a}\n  policy:\n    numerical:\n      order: descending\n",
    );
    assert!(e.contains("spec.policy.numerical.order"), "{e}");
    assert!(e.contains("descending") && e.contains("asc"), "{e}");
    assert!(e.starts_with("test.yaml:8:"), "{e}");
}

#[test]
fn two_orderings_or_none() {
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: a}\nspec:\n  imageRepositoryRef: {name: a}\n  policy: {semver: {range: '*'}, numerical: {}}\n",
    );
    assert!(e.contains("semver and numerical"), "{e}");
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: a}\nspec:\n  imageRepositoryRef: {name: a}\n  policy: {}\n",
    );
    assert!(e.contains("no ordering"), "{e}");
}

#[test]
fn unknown_field_hints() {
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {name: a}\nspec:\n  image: nginx\n  interval: 1m\n  tagPolicy:\n    semver: {range: '1.x'}\n",
    );
    assert!(
        e.contains("spec.tagPolicy") && e.contains("ImagePolicy"),
        "{e}"
    );
    assert!(e.starts_with("test.yaml:7:3:"), "{e}");
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageUpdateAutomation\nmetadata: {name: a}\nspec:\n  interval: 1m\n  sourceRef: {name: a}\n  update:\n    strategy: Setters\n    patchStrategicMerge: []\n",
    );
    assert!(
        e.contains("patchStrategicMerge") && e.contains("markers"),
        "{e}"
    );
    let e = only_error(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\nmetadata: {name: a}\nspec:\n  imageRepositoryRef: {name: a}\n  policy: {semver: {range: '*'}}\n  digestReflectionPolicie: Always\n",
    );
    assert!(e.contains("did you mean \"digestReflectionPolicy\""), "{e}");
}

#[test]
fn image_mistakes() {
    for (image, word) in [
        ("https://ghcr.io/org/app", "scheme"),
        ("ghcr.io/org/app:1.0.0", "tag"),
    ] {
        let e = only_error(&format!(
            "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {{name: a}}\nspec:\n  image: {image}\n  interval: 1m\n"
        ));
        assert!(e.contains("spec.image") && e.contains(word), "{e}");
    }
}

#[test]
fn other_documents_are_ignored_and_syntax_errors_reported() {
    let r = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n");
    assert!(r.objects.is_empty() && r.problems.is_empty());
    let e = only_error("a: [1,\n");
    assert!(e.contains("not valid YAML"), "{e}");
}

#[test]
fn message_templates_are_checked() {
    let base = "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageUpdateAutomation\nmetadata: {name: a}\nspec:\n  interval: 1m\n  sourceRef: {name: a}\n  git:\n    commit:\n      author: {email: a@example.com}\n      messageTemplate: ";
    let e = only_error(&format!(
        "{base}\"line one\\n{{{{ range .Changed.Changes }}\"\n"
    ));
    assert!(
        e.contains("spec.git.commit.messageTemplate") && e.contains("line 2"),
        "{e}"
    );
    let r = load(&format!(
        "{base}'{{{{ range .Updated.Images }}}}{{{{ . }}}}{{{{ end }}}}'\n"
    ));
    assert_eq!(r.objects.len(), 1, "{:#?}", r.problems);
    assert!(
        r.problems
            .iter()
            .any(|p| p.message.contains("RemovedTemplateField"))
    );
}
