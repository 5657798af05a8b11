//! `install`, `uninstall` and `version`: imageauto in a cluster. Everything
//! is applied with server-side apply under one field manager, so a second
//! install changes nothing and a newer one upgrades in place.

use super::Exit;
use crate::connect::{ConnArgs, Kube, explain};
use crate::output::{out, outln};
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The field manager of everything install applies.
pub const FIELD_MANAGER: &str = "imageauto-install";
pub const DEFAULT_NAMESPACE: &str = "imageauto-system";
const NAME: &str = "imageauto";
const CERT_SECRET: &str = "imageauto-webhook-cert";
const WEBHOOK_CONFIG: &str = "imageauto";

/// The image of the controller this plugin installs by default.
pub fn default_image() -> String {
    format!("ghcr.io/imageauto/imageauto:v{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    #[default]
    Fail,
    Ignore,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRunOutput {
    #[default]
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// The namespace of the controller (default imageauto-system; -n and --namespace mean the same, as for flux install)
    #[arg(
        short = 'n',
        long = "install-namespace",
        alias = "namespace",
        value_name = "NAMESPACE"
    )]
    install_namespace: Option<String>,
    /// Print what would be applied; apply nothing
    #[arg(long)]
    dry_run: bool,
    /// Output of --dry-run
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: DryRunOutput,
    /// Install the admission webhook
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    webhook: bool,
    /// Install the CRDs (false when they are managed otherwise; Flux's are always kept)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    crds: bool,
    /// Point the webhook at this URL (a serve running outside the cluster) instead of the Service
    #[arg(long, value_name = "URL", requires = "ca_file")]
    webhook_url: Option<String>,
    /// The CA of --webhook-url's certificate (PEM)
    #[arg(long, value_name = "FILE", requires = "webhook_url")]
    ca_file: Option<std::path::PathBuf>,
    /// Refuse (Fail) or admit (Ignore) workloads when the webhook cannot answer
    #[arg(long, value_enum, default_value_t)]
    webhook_failure_policy: FailurePolicy,
    /// The controller's image
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Wait until the CRDs are Established and the controller is Available
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    /// How long to wait
    #[arg(long, default_value = "5m", value_parser = super::duration_arg)]
    timeout: Duration,
    /// Scale Flux's image-reflector-controller and image-automation-controller to 0 when they run
    #[arg(long)]
    take_over: bool,
    /// notification-controller's event server, for Flux's Alerts on the image kinds (default: found when notification-controller runs in the cluster)
    #[arg(long, value_name = "URL")]
    events_addr: Option<String>,
    /// Label this namespace imageauto.dev/policies=cluster: its ImagePolicies govern images in every namespace (Flux's layout: --policy-namespace flux-system); repeatable
    #[arg(long = "policy-namespace", value_name = "NAMESPACE")]
    policy_namespaces: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// What the controller needs, verb by verb (least privilege).
fn cluster_role() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "imageauto-controller", "labels": labels()},
        "rules": [
            // The three kinds: watched, their status written, Flux's
            // finalizer added and removed (patch).
            {"apiGroups": ["image.toolkit.fluxcd.io"],
             "resources": ["imagerepositories", "imagepolicies", "imageupdateautomations"],
             "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["image.toolkit.fluxcd.io"],
             "resources": ["imagerepositories/status", "imagepolicies/status", "imageupdateautomations/status"],
             "verbs": ["get", "patch"]},
            // The Git source of an automation: read only.
            {"apiGroups": ["source.toolkit.fluxcd.io"], "resources": ["gitrepositories"],
             "verbs": ["get", "list", "watch"]},
            // Receivers (registry push events): read, and their status.
            {"apiGroups": ["notification.toolkit.fluxcd.io"], "resources": ["receivers"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["notification.toolkit.fluxcd.io"], "resources": ["receivers/status"],
             "verbs": ["patch"]},
            // Credentials named by the objects (secretRef, certSecretRef,
            // proxySecretRef, a GitRepository's secretRef): read one by one
            // when used; watched (metadata only, never kept in memory) so
            // that a fixed or rotated credential is used at once.
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
            // imagePullSecrets of an ImageRepository's serviceAccountName,
            // and with a cloud provider its token for the cloud's audience
            // (object-level workload identity, behind its feature gate).
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            // Namespace labels: accessFrom, and the webhook's enforce label.
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
            // The workloads that make others, for the webhook to believe
            // an object made by its owner (only names, uids and the pod
            // templates' images are kept).
            {"apiGroups": ["apps"], "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list", "watch"]},
            // Events about the objects.
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ]
    })
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "kubectl-imageauto"})
}

/// Every object install applies, but the webhook certificate Secret (made
/// at install time) and the CRDs. `ca_bundle` goes into the webhook
/// configuration (base64 of PEM; empty in the checked-in manifests).
pub fn objects(
    ns: &str,
    image: &str,
    webhook: bool,
    webhook_url: Option<&str>,
    ca_bundle: &str,
    failure_policy: FailurePolicy,
) -> Vec<Value> {
    let l = labels();
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": l}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": ns, "labels": l}}),
        cluster_role(),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "imageauto-controller", "labels": l},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "imageauto-controller"},
               "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]}),
        // Leader election (the Lease) and the marker index every replica
        // reads (ConfigMaps), in its own namespace only.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "imageauto-leader-election", "namespace": ns, "labels": l},
               "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                          "verbs": ["get", "create", "update", "patch"]},
                         {"apiGroups": [""], "resources": ["configmaps"],
                          "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "imageauto-leader-election", "namespace": ns, "labels": l},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "imageauto-leader-election"},
               "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": NAME, "namespace": ns, "labels": l},
               "spec": {"selector": {"app.kubernetes.io/name": NAME},
                        "ports": [
                            {"name": "webhook", "port": 443, "targetPort": 9443, "protocol": "TCP"},
                            {"name": "receiver", "port": 80, "targetPort": 9292, "protocol": "TCP"},
                            {"name": "metrics", "port": 8080, "targetPort": 8080, "protocol": "TCP"},
                            {"name": "health", "port": 9440, "targetPort": 9440, "protocol": "TCP"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": NAME, "namespace": ns, "labels": l},
               "spec": {
                   "replicas": 1,
                   "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                   "template": {
                       "metadata": {"labels": {"app.kubernetes.io/name": NAME},
                                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}},
                       "spec": {
                           "serviceAccountName": NAME,
                           "terminationGracePeriodSeconds": 30,
                           "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "fsGroup": 65532,
                                               "seccompProfile": {"type": "RuntimeDefault"}},
                           "containers": [{
                               "name": "imageauto",
                               "image": image,
                               "args": ["serve", "--storage-path=/data", "--webhook-addr=0.0.0.0:9443",
                                        "--cert-dir=/certs", "--receiver-addr=0.0.0.0:9292",
                                        "--metrics-addr=0.0.0.0:8080", "--health-addr=0.0.0.0:9440",
                                        "--log-format=json"],
                               "env": [
                                   {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                   {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                               "ports": [
                                   {"name": "webhook", "containerPort": 9443, "protocol": "TCP"},
                                   {"name": "receiver", "containerPort": 9292, "protocol": "TCP"},
                                   {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
                                   {"name": "health", "containerPort": 9440, "protocol": "TCP"}],
                               "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}},
                               "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}},
                               "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                             "limits": {"memory": "512Mi"}},
                               "securityContext": {"allowPrivilegeEscalation": false,
                                                   "readOnlyRootFilesystem": true,
                                                   "capabilities": {"drop": ["ALL"]}},
                               "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                                {"name": "certs", "mountPath": "/certs", "readOnly": true}]}],
                           "volumes": [{"name": "data", "emptyDir": {}},
                                       {"name": "certs", "secret": {"secretName": CERT_SECRET, "optional": true}}]}}}}),
    ];
    if webhook {
        let client = |path: &str| match webhook_url {
            Some(u) => {
                json!({"url": format!("{}{path}", u.trim_end_matches('/')), "caBundle": ca_bundle})
            }
            None => {
                json!({"service": {"name": NAME, "namespace": ns, "path": path, "port": 443}, "caBundle": ca_bundle})
            }
        };
        let policy = match failure_policy {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        };
        let not_system = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", ns]});
        out.push(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIG, "labels": l},
            "webhooks": [
                {"name": "workloads.imageauto.dev",
                 "clientConfig": client("/validate/workloads"),
                 // Every version of each judged kind: `*`, not a list, so
                 // that a version the cluster serves and this list forgot
                 // (batch/v1beta1 CronJobs before 1.21, apps/v1beta2 and
                 // extensions/v1beta1 workloads of old clusters) is never
                 // a way around the webhook. A request in a version no rule
                 // names reaches the webhook only when an equivalent
                 // version is named and served (matchPolicy Equivalent),
                 // and batch/v1 has no CronJobs before 1.21. The rule reads
                 // the same fields in every version.
                 "rules": [
                     {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                      "resources": ["pods", "pods/ephemeralcontainers"]},
                     {"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                      "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"]},
                     {"apiGroups": ["extensions"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                      "resources": ["deployments", "daemonsets", "replicasets"]},
                     {"apiGroups": ["batch"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                      "resources": ["jobs", "cronjobs"]}],
                 "namespaceSelector": {"matchExpressions": [
                     {"key": "imageauto.dev/enforce", "operator": "In", "values": ["deny", "warn"]},
                     not_system]},
                 "failurePolicy": policy, "sideEffects": "None", "timeoutSeconds": 5,
                 "admissionReviewVersions": ["v1", "v1beta1"]},
                {"name": "image-kinds.imageauto.dev",
                 "clientConfig": client("/validate/image-kinds"),
                 "rules": [{"apiGroups": ["image.toolkit.fluxcd.io"], "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["imagerepositories", "imagepolicies", "imageupdateautomations"]}],
                 "namespaceSelector": {"matchExpressions": [not_system]},
                 // A broken object is refused when the server answers; when
                 // it cannot, objects are not held back (the controllers
                 // validate them too).
                 "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 5,
                 "admissionReviewVersions": ["v1", "v1beta1"]}]
        }));
    }
    out
}

/// The label `--policy-namespace` sets on each of `namespaces` (only that
/// label: server-side apply leaves the namespace's other fields to their
/// managers, and creates a namespace that does not exist yet).
pub fn policy_namespace_objects(namespaces: &[String]) -> Vec<Value> {
    namespaces
        .iter()
        .map(|ns| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "labels": {
                       webhook::view::POLICIES_LABEL: webhook::view::POLICIES_CLUSTER}}})
        })
        .collect()
}

fn resource_of(v: &Value) -> Result<ApiResource> {
    let api_version = v["apiVersion"].as_str().unwrap_or("");
    let kind = v["kind"].as_str().unwrap_or("");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    };
    let plural = match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "Service" => "services",
        "Deployment" => "deployments",
        "Secret" => "secrets",
        "ValidatingWebhookConfiguration" => "validatingwebhookconfigurations",
        "CustomResourceDefinition" => "customresourcedefinitions",
        other => bail!("no plural known for {other}"),
    };
    Ok(ApiResource {
        group: group.clone(),
        version: version.clone(),
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        plural: plural.to_string(),
    })
}

fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "ValidatingWebhookConfiguration"
            | "CustomResourceDefinition"
    )
}

fn api_for(k: &Kube, v: &Value) -> Result<Api<DynamicObject>> {
    let ar = resource_of(v)?;
    Ok(if cluster_scoped(&ar.kind) {
        Api::all_with(k.client.clone(), &ar)
    } else {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
        Api::namespaced_with(k.client.clone(), ns, &ar)
    })
}

fn describe(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("");
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Whether `live` already holds everything of `desired` (objects: every
/// key, recursively; lists: the same length, element by element; numbers
/// by value, as a server may write `0` for `0.0`).
fn holds(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| holds(lv, dv))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(a, b)| holds(a, b))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (l, d) => l == d,
    }
}

/// What a server keeps of `desired`: the parts of `stored` (the object as
/// the server would store it) at the places `desired` names. A field the
/// server does not know (a 1.20 apiserver and the CEL rules of a CRD) is
/// not there.
fn kept(stored: &Value, desired: &Value) -> Value {
    match (stored, desired) {
        (Value::Object(s), Value::Object(d)) => Value::Object(
            d.iter()
                .filter_map(|(k, dv)| s.get(k).map(|sv| (k.clone(), kept(sv, dv))))
                .collect(),
        ),
        (Value::Array(s), Value::Array(d)) if s.len() == d.len() => {
            Value::Array(s.iter().zip(d).map(|(a, b)| kept(a, b)).collect())
        }
        (s, _) => s.clone(),
    }
}

/// Whether the apiserver's CRDs have `x-kubernetes-validations` (CEL rules),
/// which came with Kubernetes 1.23: an older one refuses a server-side apply
/// that names the field. When the version does not say, it is taken to.
async fn knows_cel(k: &Kube) -> bool {
    let Ok(info) = k.client.apiserver_version().await else {
        return true;
    };
    let number = |s: &str| -> Option<u32> {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    match (number(&info.major), number(&info.minor)) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 23),
        _ => true,
    }
}

/// Removes every `x-kubernetes-validations` of a CRD; whether it held any.
fn without_cel(v: &mut Value) -> bool {
    match v {
        Value::Object(map) => {
            let mut removed = map.remove("x-kubernetes-validations").is_some();
            for sub in map.values_mut() {
                removed |= without_cel(sub);
            }
            removed
        }
        Value::Array(items) => {
            // Every item, not only up to the first that held some.
            let mut removed = false;
            for item in items {
                removed |= without_cel(item);
            }
            removed
        }
        _ => false,
    }
}

/// Server-side apply, skipped when the object already is as desired (some
/// apiservers record a no-op apply as a change of the object): as given,
/// or as a dry run of the apply says the server would keep it. Whether it
/// was applied (false: unchanged).
async fn apply(k: &Kube, v: &Value) -> Result<bool> {
    let api = api_for(k, v)?;
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if let Ok(Some(live)) = api.get_opt(name).await {
        let live = serde_json::to_value(&live)?;
        if holds(&live, v) {
            return Ok(false);
        }
        if let Ok(stored) = api
            .patch(name, &pp.clone().dry_run(), &Patch::Apply(v))
            .await
            && holds(&live, &kept(&serde_json::to_value(&stored)?, v))
        {
            return Ok(false);
        }
    }
    api.patch(name, &pp, &Patch::Apply(v))
        .await
        .map(|_| true)
        .map_err(|e| explain(e, &format!("applying {}", describe(v))))
}

/// How an object's apply went, in the words of the output.
fn applied(changed: bool) -> &'static str {
    if changed { "applied" } else { "unchanged" }
}

/// A CA and a serving certificate for the Service's DNS names (and
/// localhost, 127.0.0.1): `ca.crt`, `tls.crt`, `tls.key`.
pub fn webhook_certificate(ns: &str) -> Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().context("generating the webhook CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "imageauto webhook CA");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let key = KeyPair::generate()?;
    let names = vec![
        NAME.to_string(),
        format!("{NAME}.{ns}"),
        format!("{NAME}.{ns}.svc"),
        format!("{NAME}.{ns}.svc.cluster.local"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{NAME}.{ns}.svc"));
    let cert = params.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The webhook certificate Secret, reused when it exists (so that a second
/// install changes nothing); its CA.
async fn certificate_secret(k: &Kube, ns: &str) -> Result<(Option<Value>, String)> {
    let secrets: Api<Secret> = Api::namespaced(k.client.clone(), ns);
    if let Ok(Some(s)) = secrets.get_opt(CERT_SECRET).await
        && let Some(ca) = s.data.as_ref().and_then(|d| d.get("ca.crt"))
    {
        return Ok((None, String::from_utf8_lossy(&ca.0).into_owned()));
    }
    let (ca, cert, key) = webhook_certificate(ns)?;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CERT_SECRET, "namespace": ns, "labels": labels()},
        "type": "kubernetes.io/tls",
        "data": {"ca.crt": b64(&ca), "tls.crt": b64(&cert), "tls.key": b64(&key)}
    });
    Ok((Some(secret), ca))
}

/// Whether a CRD was installed by someone else (Flux): kept as it is.
fn foreign(crd: &CustomResourceDefinition) -> bool {
    !crd.metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
}

const FLUX_CONTROLLERS: [&str; 2] = ["image-reflector-controller", "image-automation-controller"];

/// Adds `--events-addr=URL` to the controller's arguments.
fn with_events_addr(mut objects: Vec<Value>, url: Option<&str>) -> Vec<Value> {
    let Some(url) = url else {
        return objects;
    };
    for v in objects.iter_mut().filter(|v| v["kind"] == "Deployment") {
        if let Some(args) = v
            .pointer_mut("/spec/template/spec/containers/0/args")
            .and_then(Value::as_array_mut)
        {
            args.push(Value::String(format!("--events-addr={url}")));
        }
    }
    objects
}

/// The event server of Flux's notification-controller, when it runs in
/// the cluster (`http://notification-controller.NS.svc.cluster.local./`,
/// the address Flux's controllers are given).
fn notification_controller(deployments: &[Deployment]) -> Option<String> {
    deployments
        .iter()
        .filter(|d| d.metadata.name.as_deref() == Some("notification-controller"))
        .find(|d| d.spec.replicas.unwrap_or(1) > 0)
        .map(|d| {
            format!(
                "http://notification-controller.{}.svc.cluster.local./",
                d.metadata.namespace.as_deref().unwrap_or("flux-system")
            )
        })
}

/// The annotation `install --take-over` leaves on the Deployment of each
/// Flux controller it scales to 0: its replicas before (uninstall scales it
/// back).
pub const REPLICAS_BEFORE_ANNOTATION: &str = "imageauto.dev/replicas-before-take-over";

/// `--webhook-url`: what the apiserver accepts as a webhook's URL (HTTPS,
/// a host, no user, query or fragment), checked before anything is applied.
fn check_webhook_url(url: &str) -> Result<()> {
    let hint = "give https://HOST:PORT of the serve running elsewhere (its --webhook-addr)";
    let uri: http::Uri = url
        .parse()
        .map_err(|e| anyhow!("--webhook-url {url:?} is not a URL ({e}): {hint}"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some(other) => bail!(
            "--webhook-url {url}: the apiserver calls admission webhooks over HTTPS only, not {other}: {hint}, with its CA as --ca-file (serve --cert-dir writes it as ca.crt)"
        ),
        None => bail!("--webhook-url {url}: no scheme: {hint}"),
    }
    let Some(authority) = uri.authority() else {
        bail!("--webhook-url {url}: no host: {hint}");
    };
    if authority.as_str().contains('@') {
        bail!("--webhook-url {url}: the apiserver refuses a user in a webhook URL: {hint}");
    }
    if uri.query().is_some() || url.contains('#') {
        bail!(
            "--webhook-url {url}: the apiserver refuses a query or a fragment in a webhook URL: {hint}"
        );
    }
    Ok(())
}

/// `--ca-file`: PEM certificates a TLS client can trust, checked before
/// anything is applied. Its text.
fn read_ca_file(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --ca-file {}", path.display()))?;
    automation::registry::tls::client_config(Some(text.as_bytes()), None, None).map_err(|e| {
        anyhow!(
            "--ca-file {}: {e}: give the PEM certificate of the CA that signed the webhook's certificate (serve --cert-dir writes it as ca.crt)",
            path.display()
        )
    })?;
    Ok(text)
}

/// `-n`/`--namespace`/`--install-namespace`, else imageauto-system.
fn install_namespace(given: &Option<String>) -> String {
    given
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

pub fn install(args: InstallArgs) -> Result<Exit> {
    let image = args.image.clone().unwrap_or_else(default_image);
    let ns = install_namespace(&args.install_namespace);
    // What the command line says is checked before anything is applied.
    if let Some(url) = &args.webhook_url {
        check_webhook_url(url)?;
    }
    let ca_file = args.ca_file.as_deref().map(read_ca_file).transpose()?;
    if args.dry_run {
        let ca = ca_file.clone().unwrap_or_default();
        let mut all: Vec<Value> = if args.crds {
            automation::api::crds()
                .into_iter()
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .collect()
        } else {
            Vec::new()
        };
        all.extend(with_events_addr(
            objects(
                &ns,
                &image,
                args.webhook,
                args.webhook_url.as_deref(),
                &if ca.is_empty() {
                    String::new()
                } else {
                    b64(&ca)
                },
                args.webhook_failure_policy,
            ),
            args.events_addr.as_deref(),
        ));
        all.extend(policy_namespace_objects(&args.policy_namespaces));
        out!("{}", render(&all, args.output)?);
        if args.webhook && args.webhook_url.is_none() {
            eprintln!(
                "note: install also creates Secret {ns}/{CERT_SECRET} (a CA and the webhook's certificate) and puts its CA in the webhook configuration's caBundle"
            );
        }
        return Ok(Exit::Ok);
    }
    super::runtime()?.block_on(async {
        let k = args.conn.connect(None).await?;
        let started = Instant::now();
        let namespaces: Api<Namespace> = Api::all(k.client.clone());
        if let Some(n) = namespaces
            .get_opt(&ns)
            .await
            .map_err(|e| explain(e, &format!("reading namespace {ns}")))?
            && let Some(since) = &n.metadata.deletion_timestamp
        {
            bail!(
                "namespace {ns} is being deleted (Terminating since {}): install again once it is gone (kubectl get namespace {ns}; kubectl get namespace {ns} -o yaml shows what holds it), or install into another namespace with -n",
                since.0
            );
        }
        // Flux's image controllers must not run beside ours.
        let deployments: Api<Deployment> = Api::all(k.client.clone());
        let all_deployments = deployments
            .list(&ListParams::default())
            .await
            .map_err(|e| explain(e, "listing Deployments (to find Flux's image controllers)"))?
            .items;
        let events_addr = args
            .events_addr
            .clone()
            .or_else(|| notification_controller(&all_deployments));
        let running: Vec<Deployment> = all_deployments
            .into_iter()
            .filter(|d| FLUX_CONTROLLERS.contains(&d.metadata.name.as_deref().unwrap_or("")))
            .filter(|d| d.spec.replicas.unwrap_or(1) > 0)
            .collect();
        if !running.is_empty() {
            let names: Vec<String> = running
                .iter()
                .map(|d| format!("{}/{}", d.metadata.namespace.clone().unwrap_or_default(), d.metadata.name.clone().unwrap_or_default()))
                .collect();
            if !args.take_over {
                bail!(
                    "Flux's image controllers run in this cluster ({}): two controllers would write the same objects; give --take-over to scale them to 0 and let imageauto reconcile",
                    names.join(", ")
                );
            }
            for d in &running {
                let dns = d.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Deployment> = Api::namespaced(k.client.clone(), &dns);
                let name = d.metadata.name.clone().unwrap_or_default();
                let before = d.spec.replicas.unwrap_or(1);
                // The replicas before, for uninstall to scale it back.
                let patch = json!({
                    "metadata": {"annotations": {REPLICAS_BEFORE_ANNOTATION: before.to_string()}},
                    "spec": {"replicas": 0}
                });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|e| explain(e, &format!("scaling {dns}/{name} to 0")))?;
                outln!(
                    "✔ scaled Flux's {dns}/{name} to 0 replicas (--take-over; it ran {before}): kubectl imageauto uninstall scales it back"
                );
                let labels = d.metadata.labels.clone().unwrap_or_default();
                if let (Some(kname), Some(kns)) = (
                    labels.get("kustomize.toolkit.fluxcd.io/name"),
                    labels.get("kustomize.toolkit.fluxcd.io/namespace"),
                ) {
                    outln!(
                        "note: Flux's Kustomization {kns}/{kname} applies {dns}/{name}: kustomize-controller sets its replicas back at its next reconciliation; to keep it stopped, leave Flux's image controllers out of that Kustomization (flux bootstrap without --components-extra image-reflector-controller,image-automation-controller)"
                    );
                }
            }
        }
        // CRDs: ours, unless Flux's are there (kept and used).
        let crds: Api<CustomResourceDefinition> = Api::all(k.client.clone());
        let mut names = Vec::new();
        let cel = args.crds && knows_cel(&k).await;
        for crd in automation::api::crds().into_iter().filter(|_| args.crds) {
            let name = crd.metadata.name.clone().unwrap_or_default();
            names.push(name.clone());
            match crds.get_opt(&name).await.map_err(|e| explain(e, "reading the CRDs"))? {
                Some(existing) if foreign(&existing) => {
                    outln!("✔ CRD {name} found (installed by someone else): kept");
                }
                _ => {
                    let mut v = serde_json::to_value(&crd)?;
                    let stripped = !cel && without_cel(&mut v);
                    let done = applied(apply(&k, &v).await?);
                    if stripped {
                        outln!(
                            "✔ CRD {name} {done}, without its CEL rules, which this apiserver does not know (imageauto's admission webhook checks the same rules)"
                        );
                    } else {
                        outln!("✔ CRD {name} {done}");
                    }
                }
            }
        }
        let mut bundle = match (&ca_file, args.webhook) {
            (Some(ca), true) => b64(ca),
            _ => String::new(),
        };
        if let Some(url) = &events_addr {
            imageauto_server::controller::events::check_url(url).map_err(anyhow::Error::msg)?;
        }
        let base = objects(&ns, &image, args.webhook, args.webhook_url.as_deref(), "", args.webhook_failure_policy);
        for v in with_events_addr(base, events_addr.as_deref()) {
            if v["kind"] == "ValidatingWebhookConfiguration" {
                continue;
            }
            let done = applied(apply(&k, &v).await?);
            outln!("✔ {} {done}", describe(&v));
            if v["kind"] == "Deployment"
                && let Some(url) = &events_addr
            {
                outln!("✔ events also go to notification-controller at {url} (Flux's Alerts see them)");
            }
            if v["kind"] == "Namespace" && args.webhook && args.webhook_url.is_none() {
                let (secret, ca) = certificate_secret(&k, &ns).await?;
                bundle = b64(&ca);
                match &secret {
                    Some(s) => {
                        apply(&k, s).await?;
                        outln!("✔ {} created (webhook certificate)", describe(s));
                    }
                    None => outln!("✔ Secret {ns}/{CERT_SECRET} unchanged (webhook certificate)"),
                }
            }
        }
        // Before the webhook configuration: once it is on, these
        // namespaces' policies already govern every namespace.
        for v in policy_namespace_objects(&args.policy_namespaces) {
            let labelled = if apply(&k, &v).await? { "labelled" } else { "already labelled" };
            outln!(
                "✔ Namespace {} {labelled} {}={} (--policy-namespace): its ImagePolicies govern images in every namespace",
                v["metadata"]["name"].as_str().unwrap_or(""),
                webhook::view::POLICIES_LABEL,
                webhook::view::POLICIES_CLUSTER
            );
        }
        if args.webhook {
            for v in objects(&ns, &image, true, args.webhook_url.as_deref(), &bundle, args.webhook_failure_policy) {
                if v["kind"] == "ValidatingWebhookConfiguration" {
                    let done = applied(apply(&k, &v).await?);
                    outln!("✔ {} {done}", describe(&v));
                }
            }
        }
        if args.wait {
            let deadline = started + args.timeout;
            wait_established(&crds, &names, deadline).await?;
            outln!("✔ CRDs established");
            let nodes: Api<Node> = Api::all(k.client.clone());
            let has_nodes = nodes
                .list(&ListParams::default().limit(1))
                .await
                .map(|l| !l.items.is_empty())
                .unwrap_or(true);
            if has_nodes {
                wait_available(&k, &ns, deadline).await?;
                outln!("✔ controller available");
            } else {
                outln!("note: the cluster has no nodes: the controller cannot run here, not waiting for it");
            }
        }
        outln!("✔ imageauto installed in {ns}");
        Ok(Exit::Ok)
    })
}

fn render(all: &[Value], output: DryRunOutput) -> Result<String> {
    Ok(match output {
        DryRunOutput::Yaml => {
            let mut s = String::new();
            for v in all {
                s.push_str("---\n");
                s.push_str(&serde_norway::to_string(v)?);
            }
            s
        }
        DryRunOutput::Json => {
            serde_json::to_string_pretty(
                &json!({"apiVersion": "v1", "kind": "List", "items": all}),
            )? + "\n"
        }
    })
}

async fn wait_established(
    crds: &Api<CustomResourceDefinition>,
    names: &[String],
    deadline: Instant,
) -> Result<()> {
    loop {
        let mut pending = Vec::new();
        for n in names {
            let ok = crds
                .get_opt(n)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if !ok {
                pending.push(n.clone());
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the CRDs {} are not Established in time (--timeout)",
                pending.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_available(k: &Kube, ns: &str, deadline: Instant) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(k.client.clone(), ns);
    loop {
        let d = api
            .get(NAME)
            .await
            .map_err(|e| explain(e, "reading the controller's Deployment"))?;
        let available = d.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            })
        });
        if available {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the controller is not Available in time: kubectl -n {ns} describe deployment {NAME} tells why (or give --wait=false)"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// The namespace of the controller (default imageauto-system; -n and --namespace mean the same)
    #[arg(
        short = 'n',
        long = "install-namespace",
        alias = "namespace",
        value_name = "NAMESPACE"
    )]
    install_namespace: Option<String>,
    /// Also delete the CRDs install applied, and with them every ImageRepository, ImagePolicy and ImageUpdateAutomation (CRDs someone else installed, such as Flux's, are kept)
    #[arg(long)]
    delete_crds: bool,
    /// Do not ask before deleting the CRDs
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Whether `install` applied this CRD (its field manager manages it) and
/// nobody took it over since: a CRD that Flux (or anyone) installed or now
/// manages is someone else's.
fn installed_by_us(crd: &CustomResourceDefinition) -> bool {
    let flux = crd.metadata.labels.iter().flatten().any(|(k, v)| {
        (k == "app.kubernetes.io/part-of" && v == "flux") || k.ends_with(".toolkit.fluxcd.io/name")
    });
    !foreign(crd) && !flux
}

/// Scales Flux's controllers that `install --take-over` stopped back to
/// their replicas before, and says so.
async fn restore_taken_over(k: &Kube) -> Result<()> {
    let deployments: Api<Deployment> = Api::all(k.client.clone());
    let list = deployments
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            explain(
                e,
                "listing Deployments (to find the controllers install --take-over stopped)",
            )
        })?;
    for d in list.items {
        let Some(recorded) = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REPLICAS_BEFORE_ANNOTATION))
            .cloned()
        else {
            continue;
        };
        let dns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(k.client.clone(), &dns);
        let now = d.spec.replicas.unwrap_or(1);
        let mut patch = json!({"metadata": {"annotations": {REPLICAS_BEFORE_ANNOTATION: null}}});
        let said = match recorded.trim().parse::<i32>() {
            Ok(before) if now == 0 => {
                patch["spec"] = json!({"replicas": before});
                format!(
                    "✔ scaled Flux's {dns}/{name} back to {before} replica(s), as before install --take-over"
                )
            }
            Ok(_) => format!(
                "note: Flux's {dns}/{name} runs {now} replica(s) already (scaled since install --take-over): left as it is"
            ),
            Err(_) => format!(
                "note: Flux's {dns}/{name}: its annotation {REPLICAS_BEFORE_ANNOTATION}={recorded:?} is not a number of replicas: left at {now} (kubectl -n {dns} scale deployment {name} --replicas N)"
            ),
        };
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| explain(e, &format!("scaling {dns}/{name} back")))?;
        outln!("{said}");
    }
    Ok(())
}

pub fn uninstall(args: UninstallArgs) -> Result<Exit> {
    let ns = install_namespace(&args.install_namespace);
    super::runtime()?.block_on(async {
        let k = args.conn.connect(None).await?;
        // The webhook configuration first: the cluster must never be left
        // refusing workloads with no server to answer.
        let all = objects(&ns, "", true, None, "", FailurePolicy::Fail);
        let mut order: Vec<&Value> = all.iter().filter(|v| v["kind"] == "ValidatingWebhookConfiguration").collect();
        order.extend(all.iter().filter(|v| v["kind"] != "ValidatingWebhookConfiguration" && v["kind"] != "Namespace").rev());
        for v in order {
            delete(&k, v).await?;
        }
        delete(&k, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": CERT_SECRET, "namespace": ns}})).await?;
        // Our controller is gone: Flux's may run again.
        restore_taken_over(&k).await?;
        // Flux's finalizer, which the controller put on the objects of the
        // three kinds, goes with the controller: it must not keep them (and
        // their CRDs) from being deleted. Flux's controllers, when they
        // run again, put theirs back.
        for ar in all_kinds() {
            let api: Api<DynamicObject> = Api::all_with(k.client.clone(), &ar);
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for o in list.items {
                let before = o.metadata.finalizers.clone().unwrap_or_default();
                let fins: Vec<String> = before
                    .iter()
                    .filter(|f| *f != automation::api::FINALIZER)
                    .cloned()
                    .collect();
                if fins.len() == before.len() {
                    continue;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(
                    k.client.clone(),
                    o.metadata.namespace.as_deref().unwrap_or_default(),
                    &ar,
                );
                let name = o.metadata.name.clone().unwrap_or_default();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": fins}})),
                )
                .await
                .map_err(|e| {
                    explain(
                        e,
                        &format!(
                            "removing the finalizer {} of {} {}/{name}",
                            automation::api::FINALIZER,
                            ar.kind,
                            o.metadata.namespace.as_deref().unwrap_or_default()
                        ),
                    )
                })?;
            }
        }
        // The namespace, when install made it and it holds none of the
        // user's image objects.
        let namespaces: Api<Namespace> = Api::all(k.client.clone());
        if let Ok(Some(n)) = namespaces.get_opt(&ns).await {
            let ours = n.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/managed-by")).map(String::as_str)
                == Some("kubectl-imageauto");
            let held = count_objects(&k, Some(&ns), &all_kinds()).await;
            if ours && held == 0 {
                delete(&k, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await?;
            } else if ours {
                outln!("note: namespace {ns} kept: it holds {held} image object(s) of yours");
            }
        }
        if !args.delete_crds {
            outln!("✔ CRDs and your objects kept (--delete-crds removes the CRDs install applied, and their objects)");
            outln!("✔ imageauto uninstalled");
            return Ok(Exit::Ok);
        }
        // Only the CRDs install applied: someone else's (Flux's) stay, and
        // their objects with them.
        let crds: Api<CustomResourceDefinition> = Api::all(k.client.clone());
        let mut ours = Vec::new();
        for crd in automation::api::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            match crds.get_opt(&name).await.map_err(|e| explain(e, "reading the CRDs"))? {
                Some(live) if installed_by_us(&live) => ours.push((crd.spec.names.kind.clone(), live)),
                Some(_) => outln!(
                    "✔ CRD {name} kept: installed by someone else (Flux?), not by kubectl imageauto install; its objects stay"
                ),
                None => {}
            }
        }
        if ours.is_empty() {
            outln!("✔ no CRD to delete: kubectl imageauto install applied none of them");
            outln!("✔ imageauto uninstalled");
            return Ok(Exit::Ok);
        }
        let kinds: Vec<ApiResource> = all_kinds()
            .into_iter()
            .filter(|ar| ours.iter().any(|(kind, _)| *kind == ar.kind))
            .collect();
        let lost = count_objects(&k, None, &kinds).await;
        if !args.yes {
            let names: Vec<&str> = ours.iter().map(|(kind, _)| kind.as_str()).collect();
            eprint!(
                "Deleting the CRDs of {} deletes every object of these kinds in the cluster ({lost} object(s)). Type yes to go on: ",
                names.join(", ")
            );
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer).ok();
            if answer.trim() != "yes" {
                bail!("not confirmed: the CRDs are kept (give --yes to skip the question)");
            }
        }
        for (_, live) in &ours {
            let mut v = serde_json::to_value(live)?;
            v["apiVersion"] = json!("apiextensions.k8s.io/v1");
            v["kind"] = json!("CustomResourceDefinition");
            delete(&k, &v).await?;
        }
        outln!("✔ CRDs deleted ({lost} object(s) with them)");
        outln!("✔ imageauto uninstalled");
        Ok(Exit::Ok)
    })
}

/// The three image kinds.
fn all_kinds() -> [ApiResource; 3] {
    [
        ApiResource::erase::<automation::api::ImageRepository>(&()),
        ApiResource::erase::<automation::api::ImagePolicy>(&()),
        ApiResource::erase::<automation::api::ImageUpdateAutomation>(&()),
    ]
}

/// The objects of `kinds` in a namespace, or everywhere.
async fn count_objects(k: &Kube, ns: Option<&str>, kinds: &[ApiResource]) -> usize {
    let mut n = 0;
    for ar in kinds {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(k.client.clone(), ns, ar),
            None => Api::all_with(k.client.clone(), ar),
        };
        n += api
            .list(&ListParams::default())
            .await
            .map_or(0, |l| l.items.len());
    }
    n
}

async fn delete(k: &Kube, v: &Value) -> Result<()> {
    let api = api_for(k, v)?;
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            outln!("✔ {} deleted", describe(v));
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(explain(e, &format!("deleting {}", describe(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_go_to_a_running_notification_controller() {
        let d = |name: &str, ns: &str, replicas: i32| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": replicas, "selector": {}, "template": {}}
            }))
            .unwrap()
        };
        assert_eq!(
            notification_controller(&[
                d("source-controller", "flux-system", 1),
                d("notification-controller", "flux", 1)
            ]),
            Some("http://notification-controller.flux.svc.cluster.local./".into())
        );
        assert_eq!(
            notification_controller(&[d("notification-controller", "flux-system", 0)]),
            None
        );
        let objs = with_events_addr(
            objects(
                "imageauto-system",
                "img",
                false,
                None,
                "",
                FailurePolicy::Fail,
            ),
            Some("http://nc/"),
        );
        let deploy = objs.iter().find(|v| v["kind"] == "Deployment").unwrap();
        let args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap();
        assert_eq!(args.last().unwrap(), "--events-addr=http://nc/");
    }

    #[test]
    fn holding_is_recursive_and_lists_are_whole() {
        let live = json!({"a": {"b": 1, "c": 2}, "l": [{"x": 1, "y": 2}], "extra": true});
        assert!(holds(&live, &json!({"a": {"b": 1}, "l": [{"x": 1}]})));
        assert!(!holds(&live, &json!({"a": {"b": 2}})));
        assert!(!holds(&live, &json!({"l": [{"x": 1}, {"x": 2}]})));
        assert!(!holds(&live, &json!({"missing": 1})));
        // Numbers by value.
        assert!(holds(&json!({"minimum": 0}), &json!({"minimum": 0.0})));
        assert!(!holds(&json!({"minimum": 1}), &json!({"minimum": 0.0})));
    }

    #[test]
    fn cel_rules_go_for_an_apiserver_that_does_not_know_them() {
        let mut crd = serde_json::to_value(
            automation::api::crds()
                .into_iter()
                .find(|c| c.spec.names.kind == "ImagePolicy")
                .unwrap(),
        )
        .unwrap();
        assert!(crd.to_string().contains("x-kubernetes-validations"));
        let before = crd.clone();
        assert!(without_cel(&mut crd));
        assert!(!crd.to_string().contains("x-kubernetes-validations"));
        assert_ne!(crd, before);
        assert!(!without_cel(&mut crd));
        // The rest is untouched.
        assert_eq!(
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"],
            before["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"]
        );
    }

    #[test]
    fn what_the_server_drops_is_not_a_change() {
        // A 1.20 apiserver stores a CRD without its CEL rules.
        let desired = json!({"spec": {"schema": {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "has(self.a)"}]
        }}});
        let stored = json!({
            "metadata": {"resourceVersion": "7"},
            "spec": {"schema": {"type": "object"}, "served": true}
        });
        assert!(!holds(&stored, &desired));
        let k = kept(&stored, &desired);
        assert_eq!(k, json!({"spec": {"schema": {"type": "object"}}}));
        assert!(holds(&stored, &k));
        // What the server keeps and the live object lacks is a change.
        let live = json!({"spec": {"schema": {"type": "string"}}});
        assert!(!holds(&live, &k));
    }
}

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    /// Only the plugin's version; do not ask the cluster
    #[arg(long)]
    client: bool,
    /// The namespace of the controller (default imageauto-system; -n and --namespace mean the same)
    #[arg(
        short = 'n',
        long = "install-namespace",
        alias = "namespace",
        value_name = "NAMESPACE"
    )]
    install_namespace: Option<String>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: crate::output::TextOrJson,
    #[command(flatten)]
    conn: ConnArgs,
}

pub fn version(args: VersionArgs) -> Result<Exit> {
    let json = args.output == crate::output::TextOrJson::Json;
    let client = env!("CARGO_PKG_VERSION");
    if args.client {
        if json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({"client": client}))?
            );
        } else {
            outln!("client: kubectl-imageauto {client}");
        }
        return Ok(Exit::Ok);
    }
    if !json {
        outln!("client: kubectl-imageauto {client}");
    }
    let ns = install_namespace(&args.install_namespace);
    super::runtime()?.block_on(async {
        let k = args.conn.connect(None).await?;
        let deployments: Api<Deployment> = Api::namespaced(k.client.clone(), &ns);
        let image = deployments
            .get_opt(NAME)
            .await
            .map_err(|e| explain(e, "reading the controller's Deployment"))?
            .map(|d| d.spec)
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image);
        let Some(image) = image else {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"client": client, "server": null}))?
                );
            } else {
                outln!("server: not installed in {ns} (kubectl imageauto install)");
            }
            return Ok(Exit::Failed);
        };
        if !json {
            outln!("server: Deployment {ns}/{NAME} runs {image}");
        }
        // The running process, through the apiserver's service proxy.
        let path = format!("/api/v1/namespaces/{ns}/services/{NAME}:health/proxy/version");
        let req = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| anyhow!("{e}"))?;
        let serving = match tokio::time::timeout(
            Duration::from_secs(5),
            k.client.request::<Value>(req),
        )
        .await
        {
            Ok(Ok(v)) => v["version"].as_str().map(str::to_string),
            _ => None,
        };
        if json {
            let v = json!({
                "client": client,
                "server": {"namespace": ns, "deployment": NAME, "image": image, "version": serving}
            });
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            match serving {
                Some(v) => outln!("server: serve reports {v}"),
                None => {
                    outln!("server: serve does not answer /version (not running, or not reachable)")
                }
            }
        }
        Ok(Exit::Ok)
    })
}
