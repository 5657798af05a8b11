#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The rules through the axum router (no TLS), with AdmissionReview fixtures
//! from tests/fixtures judged against the cluster of `support::view`.

mod support;

use serde_json::Value;
use std::sync::Arc;
use support::{Recorder, fixture, in_namespace, post, view, web_marker};
use webhook::{MemoryView, Outcome, Rule, router};

/// Posts `review` to `rule`'s path and returns the AdmissionReview answer's
/// `response`, after checking the envelope (200, same version, uid echoed).
async fn judge_with(view: MemoryView, rule: Rule, review: &Value) -> Value {
    let recorder = Arc::new(Recorder::default());
    let (status, body) = post(
        router(Arc::new(view), recorder.clone()),
        rule.path(),
        serde_json::to_vec(review).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["apiVersion"], review["apiVersion"]);
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    let response = answer["response"].clone();
    if std::env::var_os("SHOW_ANSWERS").is_some() {
        eprintln!("{}", serde_json::to_string_pretty(&response).unwrap());
    }
    let outcomes = recorder.outcomes();
    assert_eq!(outcomes.len(), 1);
    let expected = match (
        response["allowed"].as_bool(),
        warnings(&response).is_empty(),
    ) {
        (Some(false), _) => Outcome::Deny,
        (Some(true), true) => Outcome::Admit,
        (Some(true), false) => Outcome::Warn,
        _ => panic!("no allowed field: {response}"),
    };
    assert_eq!(outcomes[0], (rule, expected));
    response
}

async fn judge(rule: Rule, review: &Value) -> Value {
    judge_with(view(vec![]), rule, review).await
}

fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn assert_denied(response: &Value) -> String {
    assert_eq!(response["allowed"], false, "{response}");
    message(response)
}

fn assert_admitted(response: &Value) -> Vec<String> {
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("status").is_none(), "{response}");
    warnings(response)
}

#[tokio::test]
async fn ungoverned_deployment_is_refused_with_container_image_and_fix() {
    let r = judge(Rule::Workloads, &fixture("deployment-ungoverned.json")).await;
    let m = assert_denied(&r);
    assert_eq!(r["status"]["code"], 403);
    assert_eq!(r["status"]["reason"], "Forbidden");
    // One line per finding: only `api`; `proxy` (nginx) is governed.
    assert_eq!(m.lines().count(), 1, "{m}");
    assert!(m.contains("container \"api\""), "{m}");
    assert!(m.contains("image \"ghcr.io/acme/api:2.0.0\""), "{m}");
    assert!(m.contains("tracks ghcr.io/acme/api"), "{m}");
    assert!(
        m.contains("create an ImageRepository with spec.image ghcr.io/acme/api and an ImagePolicy"),
        "{m}"
    );
    assert!(m.contains("imageauto.dev/exempt: \"<reason>\""), "{m}");
    assert!(!m.contains("proxy"), "{m}");
}

#[tokio::test]
async fn governed_deployment_is_admitted_and_nginx_is_docker_hub() {
    // web: ghcr.io/acme/web; proxy: `nginx:1.25`, governed by an
    // ImageRepository whose spec.image is docker.io/library/nginx.
    let r = judge(Rule::Workloads, &fixture("deployment-governed.json")).await;
    assert_eq!(assert_admitted(&r), Vec::<String>::new());
    // Without the nginx policy, the proxy container alone is refused.
    let mut review = fixture("deployment-governed.json");
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][1]["image"] =
        "index.docker.io/library/nginx:1.25@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into();
    let r = judge(Rule::Workloads, &review).await;
    assert_admitted(&r);
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][1]["image"] =
        "docker.io/library/nginx-unprivileged:1.25".into();
    let m = assert_denied(&judge(Rule::Workloads, &review).await);
    assert!(m.contains("container \"proxy\""), "{m}");
    assert!(m.contains("docker.io/library/nginx-unprivileged"), "{m}");
}

#[tokio::test]
async fn a_policy_of_the_namespace_itself_governs() {
    let mut review = fixture("deployment-governed.json");
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        "ghcr.io/acme/shop-only:3".into();
    assert_admitted(&judge(Rule::Workloads, &review).await);
    // The same image in another enforced namespace: shop/own does not reach it.
    let w = assert_admitted(&judge(Rule::Workloads, &in_namespace(review, "audit")).await);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("ghcr.io/acme/shop-only"), "{w:?}");
}

#[tokio::test]
async fn a_namespace_the_view_does_not_know_yet_is_a_transient_refusal() {
    let r = judge(
        Rule::Workloads,
        &in_namespace(fixture("deployment-governed.json"), "brand-new"),
    )
    .await;
    let m = assert_denied(&r);
    assert_eq!(r["status"]["code"], 503);
    assert!(
        m.contains("namespace \"brand-new\" is not known to imageauto yet"),
        "{m}"
    );
    assert!(m.contains("try again"), "{m}");
    // Objects made by judged workloads do not depend on it.
    let r = judge(
        Rule::Workloads,
        &in_namespace(fixture("pod-owned.json"), "brand-new"),
    )
    .await;
    assert_admitted(&r);
}

#[tokio::test]
async fn a_policy_that_cannot_reach_the_namespace_is_named_with_the_fix() {
    let mut review = fixture("deployment-governed.json");
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        "ghcr.io/acme/worker:1".into();
    let m = assert_denied(&judge(Rule::Workloads, &review).await);
    assert!(
        m.contains("ImagePolicy flux-system/worker does, but its ImageRepository flux-system/worker has no accessFrom that selects namespace \"shop\""),
        "{m}"
    );
    assert!(m.contains("spec.accessFrom.namespaceSelectors"), "{m}");
}

#[tokio::test]
async fn exempt_workload_is_admitted_with_a_warning_naming_the_reason() {
    let r = judge(Rule::Workloads, &fixture("deployment-exempt.json")).await;
    let w = assert_admitted(&r);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("Deployment shop/legacy is exempt"), "{w:?}");
    assert!(
        w[0].contains("vendor image, pinned until the 2.x migration"),
        "{w:?}"
    );
}

#[tokio::test]
async fn empty_exemption_is_refused_and_says_so() {
    let r = judge(Rule::Workloads, &fixture("deployment-exempt-empty.json")).await;
    let m = assert_denied(&r);
    assert!(
        m.contains("the annotation imageauto.dev/exempt on Deployment shop/legacy is empty: an exemption needs a reason"),
        "{m}"
    );
    // The images are judged too.
    assert!(m.contains("container \"api\""), "{m}");
}

#[tokio::test]
async fn pod_with_an_ungoverned_init_container_is_refused() {
    let m = assert_denied(&judge(Rule::Workloads, &fixture("pod-init-ungoverned.json")).await);
    assert!(m.contains("container \"migrate\""), "{m}");
    assert!(m.contains("ghcr.io/acme/migrate:7"), "{m}");
    assert_eq!(m.lines().count(), 1, "{m}");
}

#[tokio::test]
async fn ungoverned_cronjob_of_batch_v1beta1_is_refused() {
    let m = assert_denied(&judge(Rule::Workloads, &fixture("cronjob-ungoverned.json")).await);
    assert!(m.contains("container \"report\""), "{m}");
}

#[tokio::test]
async fn updates_are_judged_on_changed_images_only() {
    // Scaling an ungoverned Deployment: nothing changed that can be judged.
    let r = judge(Rule::Workloads, &fixture("deployment-scale.json")).await;
    assert_eq!(assert_admitted(&r), Vec::<String>::new());
    // A new nginx tag beside the old ungoverned api image: admitted.
    let r = judge(
        Rule::Workloads,
        &fixture("deployment-update-governed-image.json"),
    )
    .await;
    assert_admitted(&r);
    // A new ungoverned api image: refused.
    let m = assert_denied(
        &judge(
            Rule::Workloads,
            &fixture("deployment-update-ungoverned-image.json"),
        )
        .await,
    );
    assert!(m.contains("ghcr.io/acme/api:2.1.0"), "{m}");
}

#[tokio::test]
async fn warn_namespace_admits_with_one_warning_per_finding() {
    let r = judge(
        Rule::Workloads,
        &in_namespace(fixture("deployment-ungoverned.json"), "audit"),
    )
    .await;
    let w = assert_admitted(&r);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("imageauto: container \"api\""), "{w:?}");
    assert!(w[0].contains("ghcr.io/acme/api"), "{w:?}");
    assert!(w[0].chars().count() <= 256, "{w:?}");
    let r = judge(
        Rule::Workloads,
        &in_namespace(fixture("pod-init-ungoverned.json"), "audit"),
    )
    .await;
    assert_eq!(assert_admitted(&r).len(), 1);
    let r = judge(
        Rule::Workloads,
        &in_namespace(fixture("deployment-exempt-empty.json"), "audit"),
    )
    .await;
    let w = assert_admitted(&r);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("empty"), "{w:?}");
}

#[tokio::test]
async fn unlabelled_namespace_is_untouched() {
    for name in [
        "deployment-ungoverned.json",
        "pod-init-ungoverned.json",
        "deployment-exempt-empty.json",
        "deployment-exempt.json",
    ] {
        let r = judge(Rule::Workloads, &in_namespace(fixture(name), "free")).await;
        assert_eq!(assert_admitted(&r), Vec::<String>::new(), "{name}");
    }
}

#[tokio::test]
async fn objects_made_by_a_judged_workload_are_admitted() {
    for name in ["replicaset-owned.json", "pod-owned.json"] {
        let r = judge(Rule::Workloads, &fixture(name)).await;
        assert_eq!(assert_admitted(&r), Vec::<String>::new(), "{name}");
    }
    // The same Pod without its owner is judged.
    let mut review = fixture("pod-owned.json");
    review["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    assert_denied(&judge(Rule::Workloads, &review).await);
}

#[tokio::test]
async fn marker_check_names_file_and_line_and_admits_with_the_marker() {
    let review = fixture("deployment-flux.json");
    // No index entry: no automation covers it; governed, so admitted.
    assert_admitted(&judge(Rule::Workloads, &review).await);

    let r = judge_with(view(vec![web_marker(None)]), Rule::Workloads, &review).await;
    let m = assert_denied(&r);
    assert!(m.contains("container \"web\""), "{m}");
    assert!(m.contains("apps/shop/web.yaml:21 has no marker"), "{m}");
    assert!(
        m.contains("add # {\"$imagepolicy\": \"flux-system:web\"} at apps/shop/web.yaml:21"),
        "{m}"
    );

    let r = judge_with(
        view(vec![web_marker(Some("flux-system:web"))]),
        Rule::Workloads,
        &review,
    )
    .await;
    assert_eq!(assert_admitted(&r), Vec::<String>::new());
    // A suffix is fine.
    let r = judge_with(
        view(vec![web_marker(Some("flux-system:web:tag"))]),
        Rule::Workloads,
        &review,
    )
    .await;
    assert_admitted(&r);

    // A marker naming a policy that tracks another image.
    let r = judge_with(
        view(vec![web_marker(Some("flux-system:nginx"))]),
        Rule::Workloads,
        &review,
    )
    .await;
    let m = assert_denied(&r);
    assert!(
        m.contains("the marker at apps/shop/web.yaml:21 names flux-system:nginx, which does not track ghcr.io/acme/web"),
        "{m}"
    );

    // In a warn namespace: a warning that fits.
    let mut marker = web_marker(None);
    marker.0.namespace = "audit".into();
    let r = judge_with(
        view(vec![marker]),
        Rule::Workloads,
        &in_namespace(review.clone(), "audit"),
    )
    .await;
    let w = assert_admitted(&r);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("no marker at apps/shop/web.yaml:21"), "{w:?}");

    // Applied by another Kustomization than the entry's: not held to it.
    let mut other = review.clone();
    other["request"]["object"]["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] =
        "infra".into();
    assert_admitted(&judge_with(view(vec![web_marker(None)]), Rule::Workloads, &other).await);
    // Not applied by Flux at all: no marker check.
    let mut manual = review;
    manual["request"]["object"]["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("kustomize.toolkit.fluxcd.io/namespace");
    assert_admitted(&judge_with(view(vec![web_marker(None)]), Rule::Workloads, &manual).await);
}

#[tokio::test]
async fn v1beta1_review_is_answered_as_v1beta1() {
    let review = fixture("deployment-review-v1beta1.json");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1beta1");
    // judge() checks the answer's apiVersion and uid against the request's.
    let m = assert_denied(&judge(Rule::Workloads, &review).await);
    assert!(m.contains("container \"api\""), "{m}");
}

#[tokio::test]
async fn a_kind_sent_to_the_wrong_path_is_admitted_with_a_clear_warning() {
    let r = judge(Rule::Workloads, &fixture("service-misrouted.json")).await;
    let w = assert_admitted(&r);
    assert!(
        w[0].contains("/validate/workloads does not judge Service (v1)"),
        "{w:?}"
    );
    let r = judge(Rule::ImageKinds, &fixture("deployment-governed.json")).await;
    let w = assert_admitted(&r);
    assert!(
        w[0].contains("/validate/image-kinds does not judge Deployment"),
        "{w:?}"
    );
}

#[tokio::test]
async fn image_policy_with_a_broken_regex_is_refused_with_its_field_path() {
    for ns in ["flux-system", "shop", "audit", "free"] {
        let r = judge(
            Rule::ImageKinds,
            &in_namespace(fixture("imagepolicy-bad-regex.json"), ns),
        )
        .await;
        let m = assert_denied(&r);
        assert_eq!(r["status"]["code"], 422);
        assert!(m.starts_with("spec.filterTags.pattern: "), "{ns}: {m}");
        assert!(m.contains("does not compile"), "{m}");
    }
}

#[tokio::test]
async fn image_policy_with_a_broken_range_is_refused_with_its_field_path() {
    let m = assert_denied(&judge(Rule::ImageKinds, &fixture("imagepolicy-bad-range.json")).await);
    assert!(m.starts_with("spec.policy.semver.range: "), "{m}");
    assert!(m.contains("does not parse"), "{m}");
}

#[tokio::test]
async fn other_broken_image_kinds_are_refused_with_their_field_paths() {
    let m = assert_denied(&judge(Rule::ImageKinds, &fixture("imagepolicy-bad-extract.json")).await);
    assert!(m.starts_with("spec.filterTags.extract: "), "{m}");
    let m = assert_denied(&judge(Rule::ImageKinds, &fixture("imagepolicy-bad-order.json")).await);
    assert!(m.starts_with("spec.policy.alphabetical.order: "), "{m}");
    assert!(m.contains("sideways"), "{m}");
    let m = assert_denied(
        &judge(
            Rule::ImageKinds,
            &fixture("imagerepository-bad-exclusion.json"),
        )
        .await,
    );
    assert!(m.starts_with("spec.exclusionList.1: "), "{m}");
    let m = assert_denied(
        &judge(
            Rule::ImageKinds,
            &fixture("imageupdateautomation-v1beta1-bad.json"),
        )
        .await,
    );
    assert!(m.contains("spec.git.commit.messageTemplate: "), "{m}");
    // A path leading out of the repository is not refused: Flux reads it
    // from the root (securejoin), so a manifest Flux runs is admitted.
    assert!(!m.contains("spec.update.path"), "{m}");
    assert_eq!(m.lines().count(), 1, "{m}");
}

#[tokio::test]
async fn an_update_path_outside_the_repository_is_admitted_with_a_warning() {
    let mut v = fixture("imageupdateautomation-v1beta1-bad.json");
    // The template mended: only the path is left.
    v["request"]["object"]["spec"]["git"]["commit"]["messageTemplate"] = "Update".into();
    let r = judge(Rule::ImageKinds, &v).await;
    let warnings = assert_admitted(&r);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("spec.update.path"), "{warnings:?}");
    assert!(
        warnings[0].contains("read from the repository root"),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_good_image_policy_is_admitted() {
    let r = judge(Rule::ImageKinds, &fixture("imagepolicy-good.json")).await;
    assert_eq!(assert_admitted(&r), Vec::<String>::new());
}

#[tokio::test]
async fn cross_namespace_reference_that_access_from_refuses_is_refused() {
    let m = assert_denied(
        &judge(
            Rule::ImageKinds,
            &fixture("imagepolicy-cross-namespace.json"),
        )
        .await,
    );
    assert!(m.starts_with("spec.imageRepositoryRef.namespace: "), "{m}");
    assert!(
        m.contains("ImageRepository flux-system/private has no spec.accessFrom"),
        "{m}"
    );
    // flux-system/web's accessFrom selects shop (enforce=deny).
    let r = judge(
        Rule::ImageKinds,
        &fixture("imagepolicy-cross-namespace-allowed.json"),
    )
    .await;
    assert_admitted(&r);
    // ... but not free, whose labels it does not select.
    let m = assert_denied(
        &judge(
            Rule::ImageKinds,
            &in_namespace(fixture("imagepolicy-cross-namespace-allowed.json"), "free"),
        )
        .await,
    );
    assert!(
        m.contains("matches none of the labels of namespace free"),
        "{m}"
    );
    // A repository the view does not hold (applied later): not refused.
    let mut review = fixture("imagepolicy-cross-namespace.json");
    review["request"]["object"]["spec"]["imageRepositoryRef"]["name"] = "later".into();
    assert_admitted(&judge(Rule::ImageKinds, &review).await);
}

#[tokio::test]
async fn a_broken_policy_can_still_lose_its_finalizer() {
    let r = judge(
        Rule::ImageKinds,
        &fixture("imagepolicy-broken-finalizer-removed.json"),
    )
    .await;
    assert_admitted(&r);
}

#[tokio::test]
async fn bad_bodies_get_400_with_the_reason_and_unknown_paths_404() {
    let recorder = Arc::new(Recorder::default());
    let app = router(Arc::new(view(vec![])), recorder.clone());
    let (status, body) = post(app.clone(), "/validate/workloads", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not JSON"));
    let (status, body) = post(
        app.clone(),
        "/validate/image-kinds",
        br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("kind is \"Pod\", expected AdmissionReview"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = post(app, "/validate/pods", b"{}".to_vec()).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("/validate/workloads"));
    assert_eq!(
        recorder.outcomes(),
        vec![
            (Rule::Workloads, Outcome::Error),
            (Rule::ImageKinds, Outcome::Error)
        ]
    );
}

#[tokio::test]
async fn every_fixture_is_answered_with_its_uid() {
    let mut count = 0;
    for entry in std::fs::read_dir(support::fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        let review = fixture(path.file_name().unwrap().to_str().unwrap());
        for rule in Rule::ALL {
            // judge() asserts the envelope.
            judge(rule, &review).await;
        }
        count += 1;
    }
    assert!(count >= 20, "{count} fixtures");
}
