#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The rules through the axum router (no TLS), with AdmissionReview fixtures
//! from tests/fixtures judged against the cluster of `support::view`.

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use support::{
    CRONJOB_UID, DEPLOYMENT_UID, JOB_UID, REPLICASET_UID, Recorder, fixture, in_namespace, owner,
    post, view, view_of, view_with, web_marker,
};
use webhook::rules::{MAX_MESSAGE_BYTES, MAX_WARNINGS};
use webhook::{MarkerLookup, MemoryView, ObjectKey, Outcome, Rule, WorkloadContainer, router};

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
    // An object made by a judged workload the view knows does not depend
    // on it; one whose owner it does not know yet is judged, so waits too.
    let pod = in_namespace(fixture("pod-owned.json"), "brand-new");
    assert_eq!(
        judge(Rule::Workloads, &pod).await["status"]["code"],
        503,
        "owner unknown"
    );
    let known = view(vec![]).with_owners([owner(
        "ReplicaSet",
        "brand-new",
        "shop-7d9f8c6b5",
        REPLICASET_UID,
        &[("proxy", "nginx:1.25"), ("api", "ghcr.io/acme/api:2.0.0")],
    )]);
    assert_admitted(&judge_with(known, Rule::Workloads, &pod).await);
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

/// A CREATE review of `object` (kind from its apiVersion and kind) by `user`.
fn review_of(object: Value, user: &str) -> Value {
    let api = object["apiVersion"].as_str().unwrap();
    let (group, version) = api.split_once('/').unwrap_or(("", api));
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "owned-1",
            "kind": {"group": group, "version": version, "kind": object["kind"]},
            "namespace": object["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": object,
        }
    })
}

/// `Kind` in apiVersion `api`, named `name` in shop, with a controller
/// ownerReference (`owner`: apiVersion, kind, name, uid) and these
/// containers in its pod spec (a Pod's own, else its template's).
fn owned(
    api: &str,
    kind: &str,
    name: &str,
    owner: (&str, &str, &str, &str),
    containers: &[(&str, &str)],
) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(n, i)| json!({"name": n, "image": i}))
        .collect();
    let pod_spec = json!({"containers": containers, "restartPolicy": "Never"});
    let spec = match kind {
        "Pod" => pod_spec,
        "CronJob" => {
            json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}})
        }
        _ => json!({"template": {"spec": pod_spec}}),
    };
    json!({
        "apiVersion": api, "kind": kind,
        "metadata": {
            "name": name, "namespace": "shop",
            "ownerReferences": [{
                "apiVersion": owner.0, "kind": owner.1, "name": owner.2, "uid": owner.3,
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    })
}

const RS_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";
const SHOP_RS: (&str, &str, &str, &str) =
    ("apps/v1", "ReplicaSet", "shop-7d9f8c6b5", REPLICASET_UID);
const SHOP_IMAGES: [(&str, &str); 2] = [("proxy", "nginx:1.25"), ("api", "ghcr.io/acme/api:2.0.0")];

#[tokio::test]
async fn a_pod_naming_an_owner_that_does_not_exist_is_judged_on_its_own() {
    let miner = [("miner", "evil.io/miner:latest")];
    for (api, kind) in [("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet")] {
        let pod = owned("v1", "Pod", "p", (api, kind, "ghost", "0000"), &miner);
        // From the controller's own account, too: its name alone is not enough.
        for user in [RS_CONTROLLER, "system:kube-controller-manager", "mallory"] {
            let r = judge(Rule::Workloads, &review_of(pod.clone(), user)).await;
            let m = assert_denied(&r);
            assert_eq!(r["status"]["code"], 403);
            assert!(
                m.starts_with(&format!(
                    "Pod shop/p names {kind} ghost as its controller, but imageauto knows no {kind} shop/ghost: it is judged on its own\n"
                )),
                "{m}"
            );
            assert!(
                m.contains("container \"miner\" image \"evil.io/miner:latest\""),
                "{m}"
            );
        }
    }
    // In a warn namespace, the reason comes first among the warnings.
    let pod = in_namespace(
        review_of(
            owned(
                "v1",
                "Pod",
                "p",
                ("apps/v1", "ReplicaSet", "ghost", "0"),
                &miner,
            ),
            RS_CONTROLLER,
        ),
        "audit",
    );
    let w = assert_admitted(&judge(Rule::Workloads, &pod).await);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("is judged on its own, not for its ReplicaSet"),
        "{w:?}"
    );
    assert!(w[1].contains("evil.io/miner"), "{w:?}");
}

#[tokio::test]
async fn a_real_owner_with_another_uid_is_not_believed() {
    let forged = (
        SHOP_RS.0,
        SHOP_RS.1,
        SHOP_RS.2,
        "11111111-0000-4000-8000-000000000000",
    );
    let pod = owned(
        "v1",
        "Pod",
        "p",
        forged,
        &[("miner", "evil.io/miner:latest")],
    );
    let m = assert_denied(&judge(Rule::Workloads, &review_of(pod, RS_CONTROLLER)).await);
    assert!(
        m.contains("ReplicaSet shop/shop-7d9f8c6b5 has another uid than \"11111111-0000-4000-8000-000000000000\""),
        "{m}"
    );
    // The same images as the template do not help with the wrong uid.
    let pod = owned("v1", "Pod", "p", forged, &SHOP_IMAGES);
    let m = assert_denied(&judge(Rule::Workloads, &review_of(pod, RS_CONTROLLER)).await);
    assert!(m.contains("has another uid"), "{m}");
    assert!(m.contains("ghcr.io/acme/api:2.0.0"), "{m}");
}

#[tokio::test]
async fn a_real_owner_whose_template_has_other_images_is_not_believed() {
    let deployment = ("apps/v1", "Deployment", "shop", DEPLOYMENT_UID);
    let deployer = "system:serviceaccount:kube-system:deployment-controller";
    // A ReplicaSet naming the real Deployment's uid, with a miner beside
    // the template's containers.
    let mut images = SHOP_IMAGES.to_vec();
    images.push(("miner", "evil.io/miner:latest"));
    let rs = owned("apps/v1", "ReplicaSet", "shop-evil", deployment, &images);
    let m = assert_denied(&judge(Rule::Workloads, &review_of(rs, deployer)).await);
    assert!(
        m.contains("but the pod template of Deployment shop/shop gives container \"miner\" no image \"evil.io/miner:latest\": it is judged on its own"),
        "{m}"
    );
    assert!(m.contains("evil.io/miner"), "{m}");
    // A template container's name with another image.
    let rs = owned(
        "apps/v1",
        "ReplicaSet",
        "shop-evil",
        deployment,
        &[("proxy", "nginx:1.25"), ("api", "evil.io/miner:latest")],
    );
    let m = assert_denied(&judge(Rule::Workloads, &review_of(rs, deployer)).await);
    assert!(
        m.contains("gives container \"api\" no image \"evil.io/miner:latest\""),
        "{m}"
    );
    // The template's own images, but not every container's: a Pod whose
    // init container borrows an image of another container.
    let mut pod = owned("v1", "Pod", "p", SHOP_RS, &SHOP_IMAGES);
    pod["spec"]["initContainers"] = json!([{"name": "init", "image": "nginx:1.25"}]);
    let m = assert_denied(&judge(Rule::Workloads, &review_of(pod, RS_CONTROLLER)).await);
    assert!(
        m.contains("gives container \"init\" no image \"nginx:1.25\""),
        "{m}"
    );
    // What the template makes: admitted, although api is ungoverned in shop.
    let rs = owned("apps/v1", "ReplicaSet", "shop-2", deployment, &SHOP_IMAGES);
    assert_eq!(
        assert_admitted(&judge(Rule::Workloads, &review_of(rs, deployer)).await),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn an_owner_of_another_kind_is_not_believed() {
    // The ReplicaSet's name and uid, claimed as a StatefulSet's or a
    // DaemonSet's.
    for kind in ["StatefulSet", "DaemonSet"] {
        let pod = owned(
            "v1",
            "Pod",
            "p",
            ("apps/v1", kind, SHOP_RS.2, REPLICASET_UID),
            &SHOP_IMAGES,
        );
        let user = format!(
            "system:serviceaccount:kube-system:{}",
            if kind == "DaemonSet" {
                "daemon-set-controller"
            } else {
                "statefulset-controller"
            }
        );
        let m = assert_denied(&judge(Rule::Workloads, &review_of(pod, &user)).await);
        assert!(
            m.contains(&format!("imageauto knows no {kind} shop/shop-7d9f8c6b5")),
            "{m}"
        );
    }
    // A Deployment makes ReplicaSets, not Pods: no claim at all, judged.
    let pod = owned(
        "v1",
        "Pod",
        "p",
        ("apps/v1", "Deployment", "shop", DEPLOYMENT_UID),
        &SHOP_IMAGES,
    );
    let m = assert_denied(&judge(Rule::Workloads, &review_of(pod, RS_CONTROLLER)).await);
    assert!(!m.contains("as its controller"), "{m}");
    assert!(m.contains("ghcr.io/acme/api:2.0.0"), "{m}");
}

#[tokio::test]
async fn a_real_owner_is_believed_only_for_the_clusters_controller() {
    let pod = owned("v1", "Pod", "p", SHOP_RS, &SHOP_IMAGES);
    for user in [RS_CONTROLLER, "system:kube-controller-manager"] {
        let r = judge(Rule::Workloads, &review_of(pod.clone(), user)).await;
        assert_eq!(assert_admitted(&r), Vec::<String>::new(), "{user}");
    }
    for user in [
        "alice",
        "system:serviceaccount:shop:replicaset-controller",
        "system:serviceaccount:kube-system:job-controller",
    ] {
        let m = assert_denied(&judge(Rule::Workloads, &review_of(pod.clone(), user)).await);
        assert!(
            m.contains(&format!(
                "but the request comes from \"{user}\", not from the cluster's controller of ReplicaSets"
            )),
            "{m}"
        );
        // Judged on its own: api is ungoverned in shop.
        assert!(m.contains("container \"api\""), "{m}");
    }
    // Judged on its own and governed: admitted, whoever asks.
    let pod = owned("v1", "Pod", "p", SHOP_RS, &[("proxy", "nginx:1.25")]);
    assert_admitted(&judge(Rule::Workloads, &review_of(pod, "alice")).await);
    // No userInfo at all: no one.
    let mut review = review_of(owned("v1", "Pod", "p", SHOP_RS, &SHOP_IMAGES), "x");
    review["request"]
        .as_object_mut()
        .unwrap()
        .remove("userInfo");
    let m = assert_denied(&judge(Rule::Workloads, &review).await);
    assert!(m.contains("the request comes from \"\""), "{m}");
}

#[tokio::test]
async fn cronjob_job_and_pod_chains_are_believed_link_by_link() {
    let report = [("report", "quay.io/old/report:1")];
    let cron_controller = "system:serviceaccount:kube-system:cronjob-controller";
    let job_controller = "system:serviceaccount:kube-system:job-controller";
    // The CronJob itself, ungoverned and not exempt: refused (batch/v1beta1).
    let mut cron = owned(
        "batch/v1beta1",
        "CronJob",
        "nightly",
        ("x", "x", "x", "x"),
        &report,
    );
    cron["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let m = assert_denied(&judge(Rule::Workloads, &review_of(cron, "alice")).await);
    assert!(m.contains("quay.io/old/report"), "{m}");
    // Its Job, made by the cronjob controller, in either batch version of
    // the owner reference: admitted for the CronJob in the view.
    for api in ["batch/v1beta1", "batch/v1"] {
        let job = owned(
            "batch/v1",
            "Job",
            "nightly-28000000",
            (api, "CronJob", "nightly", CRONJOB_UID),
            &report,
        );
        assert_eq!(
            assert_admitted(&judge(Rule::Workloads, &review_of(job, cron_controller)).await),
            Vec::<String>::new(),
            "{api}"
        );
    }
    // The Job's Pod, made by the job controller.
    let pod = owned(
        "v1",
        "Pod",
        "nightly-28000000-abcde",
        ("batch/v1", "Job", "nightly-28000000", JOB_UID),
        &report,
    );
    assert_admitted(&judge(Rule::Workloads, &review_of(pod.clone(), job_controller)).await);
    // Each link on its own: the Pod claiming the CronJob directly (CronJobs
    // make Jobs, not Pods), the Pod by the cronjob controller, a Job with
    // the CronJob's uid but another image, a Job a user made from the
    // CronJob (kubectl create job --from).
    let direct = owned(
        "v1",
        "Pod",
        "p",
        ("batch/v1beta1", "CronJob", "nightly", CRONJOB_UID),
        &report,
    );
    assert_denied(&judge(Rule::Workloads, &review_of(direct, cron_controller)).await);
    let m = assert_denied(&judge(Rule::Workloads, &review_of(pod, cron_controller)).await);
    assert!(
        m.contains("not from the cluster's controller of Jobs"),
        "{m}"
    );
    let job = owned(
        "batch/v1",
        "Job",
        "nightly-evil",
        ("batch/v1beta1", "CronJob", "nightly", CRONJOB_UID),
        &[("report", "evil.io/miner:latest")],
    );
    let m = assert_denied(&judge(Rule::Workloads, &review_of(job, cron_controller)).await);
    assert!(
        m.contains("the pod template of CronJob shop/nightly gives container \"report\" no image"),
        "{m}"
    );
    let manual = owned(
        "batch/v1",
        "Job",
        "nightly-manual",
        ("batch/v1beta1", "CronJob", "nightly", CRONJOB_UID),
        &report,
    );
    let m = assert_denied(&judge(Rule::Workloads, &review_of(manual, "alice")).await);
    assert!(m.contains("the request comes from \"alice\""), "{m}");
}

#[tokio::test]
async fn kube_system_and_the_controllers_namespace_are_never_judged() {
    let miner = owned(
        "v1",
        "Pod",
        "p",
        ("apps/v1", "ReplicaSet", "ghost", "0"),
        &[("miner", "evil.io/miner:latest")],
    );
    for fixture_review in [
        fixture("deployment-ungoverned.json"),
        fixture("pod-init-ungoverned.json"),
        fixture("cronjob-ungoverned.json"),
        review_of(miner, "mallory"),
    ] {
        // Both labelled enforce=deny in the view.
        for ns in ["kube-system", "imageauto-system"] {
            let r = judge(Rule::Workloads, &in_namespace(fixture_review.clone(), ns)).await;
            assert_eq!(assert_admitted(&r), Vec::<String>::new(), "{ns}");
        }
        // The same labels elsewhere: judged.
        assert_denied(&judge(Rule::Workloads, &in_namespace(fixture_review, "apps")).await);
    }
    // Another view whose controller lives elsewhere judges imageauto-system.
    let other = view(vec![]).with_controller_namespace("flux-system");
    let r = judge_with(
        other,
        Rule::Workloads,
        &in_namespace(fixture("deployment-ungoverned.json"), "imageauto-system"),
    )
    .await;
    assert_denied(&r);
}

/// A Deployment apps/web (applied by Flux) with one container `web` whose
/// image is `image`.
fn flux_deployment(image: &str) -> Value {
    let mut review = in_namespace(fixture("deployment-flux.json"), "apps");
    review["request"]["object"]["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "web", "image": image}]);
    review
}

/// The marker index entry of apps/web's `web` container.
fn apps_web_marker(policy: Option<&str>) -> (WorkloadContainer, MarkerLookup) {
    (
        WorkloadContainer {
            kind: "Deployment".into(),
            namespace: "apps".into(),
            name: "web".into(),
            container: "web".into(),
        },
        MarkerLookup {
            file: "apps/web.yaml".into(),
            line: 14,
            policy: policy.map(str::to_string),
            automation: ObjectKey::new("flux-system", "auto"),
            kustomization: None,
        },
    )
}

#[tokio::test]
async fn policies_of_a_namespace_labelled_cluster_govern_every_namespace() {
    // flux-system/worker's repository has no accessFrom: it reaches only
    // flux-system, so far.
    let review = flux_deployment("ghcr.io/acme/worker:1.2.0");
    let m = assert_denied(&judge(Rule::Workloads, &review).await);
    assert!(
        m.contains("its namespace \"flux-system\" is not labelled imageauto.dev/policies: cluster"),
        "{m}"
    );
    assert!(
        m.contains("or label namespace \"flux-system\" imageauto.dev/policies=cluster if its ImagePolicies serve every namespace (kubectl imageauto install --policy-namespace flux-system)"),
        "{m}"
    );
    // Labelled by the administrator: governed in apps, and in a
    // namespace no accessFrom could select.
    let cluster: &[(&str, &str)] = &[("imageauto.dev/policies", "cluster")];
    for cross in [true, false] {
        let labelled = view_of(vec![], &[("flux-system", cluster)], cross);
        assert_eq!(
            assert_admitted(&judge_with(labelled, Rule::Workloads, &review).await),
            Vec::<String>::new()
        );
    }
    let labelled = view_with(vec![], &[("flux-system", cluster)]);
    let m = assert_denied(
        &judge_with(
            labelled,
            Rule::Workloads,
            &flux_deployment("ghcr.io/acme/unknown:1"),
        )
        .await,
    );
    assert!(m.contains("tracks ghcr.io/acme/unknown"), "{m}");
    // Another value, or the label on the workload's namespace, is not it.
    for extra in [
        vec![(
            "flux-system",
            &[("imageauto.dev/policies", "yes")] as &[(&str, &str)],
        )],
        vec![(
            "apps",
            &[
                ("imageauto.dev/enforce", "deny"),
                ("imageauto.dev/policies", "cluster"),
            ] as &[_],
        )],
    ] {
        let v = view_with(vec![], &extra);
        assert_denied(&judge_with(v, Rule::Workloads, &review).await);
    }
}

#[tokio::test]
async fn a_marker_naming_a_tracking_policy_governs_across_namespaces() {
    let review = flux_deployment("ghcr.io/acme/worker:1.2.0");
    // The file's marker names flux-system:worker, of the automation's
    // namespace, tracking the image: governed.
    let marked = view(vec![apps_web_marker(Some("flux-system:worker:tag"))]);
    assert_eq!(
        assert_admitted(&judge_with(marked, Rule::Workloads, &review).await),
        Vec::<String>::new()
    );
    // No marker: refused, with the marker to add.
    let m = assert_denied(
        &judge_with(view(vec![apps_web_marker(None)]), Rule::Workloads, &review).await,
    );
    assert!(
        m.contains("and the image field's marker does not name it)"),
        "{m}"
    );
    assert!(
        m.contains("or mark the image field: # {\"$imagepolicy\": \"flux-system:worker\"} at apps/web.yaml:14"),
        "{m}"
    );
    // A marker naming a policy that tracks another image, or one outside
    // the automation's namespace: not governed.
    for policy in ["flux-system:web", "shop:own"] {
        let v = view(vec![apps_web_marker(Some(policy))]);
        assert_denied(&judge_with(v, Rule::Workloads, &review).await);
    }
    // Across namespaces only when cross-namespace references are on.
    let closed = view_of(
        vec![apps_web_marker(Some("flux-system:worker"))],
        &[],
        false,
    );
    let m = assert_denied(&judge_with(closed, Rule::Workloads, &review).await);
    assert!(!m.contains("spec.accessFrom"), "{m}");
    // Not applied by Flux: the index does not speak for the workload.
    let mut manual = review.clone();
    manual["request"]["object"]["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("kustomize.toolkit.fluxcd.io/name");
    let v = view(vec![apps_web_marker(Some("flux-system:worker"))]);
    assert_denied(&judge_with(v, Rule::Workloads, &manual).await);
}

#[tokio::test]
async fn a_pod_with_ten_thousand_containers_gets_a_short_answer() {
    let containers: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("evil.io/miner{i}:latest")}))
        .collect();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "big", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "shop", "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "big", "namespace": "shop"},
                       "spec": {"containers": containers}},
        }
    });
    let recorder = Arc::new(Recorder::default());
    let (status, body) = post(
        router(Arc::new(view(vec![])), recorder),
        Rule::Workloads.path(),
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.len() < 8 * 1024, "{} bytes", body.len());
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let m = assert_denied(&answer["response"]);
    assert!(m.len() <= MAX_MESSAGE_BYTES, "{}", m.len());
    let lines: Vec<&str> = m.lines().collect();
    let shown = lines.len() - 1;
    assert!(shown >= 3, "{m}");
    for (i, line) in lines[..shown].iter().enumerate() {
        assert!(
            line.starts_with(&format!(
                "container \"c{i}\" image \"evil.io/miner{i}:latest\""
            )),
            "{line}"
        );
    }
    assert_eq!(
        lines[shown],
        format!(
            "… and {} more findings: fix the ones above and apply again to see them",
            10_000 - shown
        )
    );
    // In a warn namespace: a few warnings, the last one counting the rest.
    let w = assert_admitted(&judge(Rule::Workloads, &in_namespace(review, "audit")).await);
    assert_eq!(w.len(), MAX_WARNINGS);
    assert_eq!(
        w[MAX_WARNINGS - 1],
        format!(
            "imageauto: … and {} more warnings",
            10_000 - (MAX_WARNINGS - 1)
        )
    );
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
