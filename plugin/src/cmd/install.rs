//! `install`, `uninstall` and `version`: imageauto in a cluster. Everything
//! is applied with server-side apply under one field manager, so a second
//! install changes nothing and a newer one upgrades in place.

use crate::cli::Outcome;
use crate::connect::{Kube, KubeArgs, explain};
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
    /// The namespace of the controller
    #[arg(long = "install-namespace", default_value = DEFAULT_NAMESPACE)]
    install_namespace: String,
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
    #[arg(long, default_value = "5m", value_parser = crate::cli::duration_arg)]
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
    kube: KubeArgs,
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
            // imagePullSecrets of an ImageRepository's serviceAccountName.
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
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
/// or as a dry run of the apply says the server would keep it.
async fn apply(k: &Kube, v: &Value) -> Result<()> {
    let api = api_for(k, v)?;
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if let Ok(Some(live)) = api.get_opt(name).await {
        let live = serde_json::to_value(&live)?;
        if holds(&live, v) {
            return Ok(());
        }
        if let Ok(stored) = api
            .patch(name, &pp.clone().dry_run(), &Patch::Apply(v))
            .await
            && holds(&live, &kept(&serde_json::to_value(&stored)?, v))
        {
            return Ok(());
        }
    }
    api.patch(name, &pp, &Patch::Apply(v))
        .await
        .map(|_| ())
        .map_err(|e| explain(e, &format!("applying {}", describe(v))))
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    automation::registry::tls::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")
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

pub fn install(args: InstallArgs) -> Result<Outcome> {
    let image = args.image.clone().unwrap_or_else(default_image);
    let ns = args.install_namespace.clone();
    if args.dry_run {
        let ca = match &args.ca_file {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read --ca-file {}", p.display()))?,
            None => String::new(),
        };
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
        return Ok(Outcome::Ok);
    }
    runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let started = Instant::now();
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
                let api: Api<Deployment> = Api::namespaced(k.client.clone(), d.metadata.namespace.as_deref().unwrap_or_default());
                let name = d.metadata.name.clone().unwrap_or_default();
                api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
                    .await
                    .map_err(|e| explain(e, &format!("scaling {name} to 0")))?;
            }
            outln!("✔ scaled Flux's {} to 0 replicas (--take-over)", names.join(" and "));
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
                    apply(&k, &v).await?;
                    if stripped {
                        outln!(
                            "✔ CRD {name} applied, without its CEL rules, which this apiserver does not know (imageauto's admission webhook checks the same rules)"
                        );
                    } else {
                        outln!("✔ CRD {name} applied");
                    }
                }
            }
        }
        let mut bundle = match (&args.ca_file, args.webhook) {
            (Some(p), true) => b64(
                &std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read --ca-file {}", p.display()))?,
            ),
            _ => String::new(),
        };
        if let Some(url) = &events_addr {
            automation::controller::events::check_url(url).map_err(anyhow::Error::msg)?;
        }
        let base = objects(&ns, &image, args.webhook, args.webhook_url.as_deref(), "", args.webhook_failure_policy);
        for v in with_events_addr(base, events_addr.as_deref()) {
            if v["kind"] == "ValidatingWebhookConfiguration" {
                continue;
            }
            apply(&k, &v).await?;
            outln!("✔ {} applied", describe(&v));
            if v["kind"] == "Deployment"
                && let Some(url) = &events_addr
            {
                outln!("✔ events also go to notification-controller at {url} (Flux's Alerts see them)");
            }
            if v["kind"] == "Namespace" && args.webhook && args.webhook_url.is_none() {
                let (secret, ca) = certificate_secret(&k, &ns).await?;
                bundle = b64(&ca);
                if let Some(s) = &secret {
                    apply(&k, s).await?;
                    outln!("✔ {} created (webhook certificate)", describe(s));
                }
            }
        }
        // Before the webhook configuration: once it is on, these
        // namespaces' policies already govern every namespace.
        for v in policy_namespace_objects(&args.policy_namespaces) {
            apply(&k, &v).await?;
            outln!(
                "✔ Namespace {} labelled {}={} (--policy-namespace): its ImagePolicies govern images in every namespace",
                v["metadata"]["name"].as_str().unwrap_or(""),
                webhook::view::POLICIES_LABEL,
                webhook::view::POLICIES_CLUSTER
            );
        }
        if args.webhook {
            for v in objects(&ns, &image, true, args.webhook_url.as_deref(), &bundle, args.webhook_failure_policy) {
                if v["kind"] == "ValidatingWebhookConfiguration" {
                    apply(&k, &v).await?;
                    outln!("✔ {} applied", describe(&v));
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
        Ok(Outcome::Ok)
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
    /// The namespace of the controller
    #[arg(long = "install-namespace", default_value = DEFAULT_NAMESPACE)]
    install_namespace: String,
    /// Also delete the CRDs, and with them every ImageRepository, ImagePolicy and ImageUpdateAutomation
    #[arg(long)]
    delete_crds: bool,
    /// Do not ask before deleting the CRDs
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn uninstall(args: UninstallArgs) -> Result<Outcome> {
    let ns = args.install_namespace.clone();
    runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        // The webhook configuration first: the cluster must never be left
        // refusing workloads with no server to answer.
        let all = objects(&ns, "", true, None, "", FailurePolicy::Fail);
        let mut order: Vec<&Value> = all.iter().filter(|v| v["kind"] == "ValidatingWebhookConfiguration").collect();
        order.extend(all.iter().filter(|v| v["kind"] != "ValidatingWebhookConfiguration" && v["kind"] != "Namespace").rev());
        for v in order {
            delete(&k, v).await?;
        }
        delete(&k, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": CERT_SECRET, "namespace": ns}})).await?;
        // The tag cache goes with the controller: its finalizer must not
        // keep ImageRepositories from being deleted.
        let repos: Api<automation::api::ImageRepository> = Api::all(k.client.clone());
        if let Ok(list) = repos.list(&ListParams::default()).await {
            for r in list.items {
                let fins: Vec<String> = r
                    .metadata
                    .finalizers
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|f| f != automation::api::FINALIZER)
                    .collect();
                if fins.len() != r.metadata.finalizers.as_ref().map_or(0, Vec::len) {
                    let api: Api<automation::api::ImageRepository> =
                        Api::namespaced(k.client.clone(), r.metadata.namespace.as_deref().unwrap_or_default());
                    let _ = api
                        .patch(
                            r.metadata.name.as_deref().unwrap_or_default(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"finalizers": fins}})),
                        )
                        .await;
                }
            }
        }
        // The namespace, when install made it and it holds none of the
        // user's image objects.
        let namespaces: Api<Namespace> = Api::all(k.client.clone());
        if let Ok(Some(n)) = namespaces.get_opt(&ns).await {
            let ours = n.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/managed-by")).map(String::as_str)
                == Some("kubectl-imageauto");
            let held = count_objects(&k, Some(&ns)).await;
            if ours && held == 0 {
                delete(&k, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await?;
            } else if ours {
                outln!("note: namespace {ns} kept: it holds {held} image object(s) of yours");
            }
        }
        if args.delete_crds {
            let lost = count_objects(&k, None).await;
            if !args.yes {
                eprint!(
                    "Deleting the CRDs deletes every ImageRepository, ImagePolicy and ImageUpdateAutomation of the cluster ({lost} object(s)). Type yes to go on: "
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer).ok();
                if answer.trim() != "yes" {
                    bail!("not confirmed: the CRDs are kept (give --yes to skip the question)");
                }
            }
            for crd in automation::api::crds() {
                delete(&k, &serde_json::to_value(&crd)?).await?;
            }
            outln!("✔ CRDs deleted ({lost} object(s) with them)");
        } else {
            outln!("✔ CRDs and your objects kept (--delete-crds removes them)");
        }
        outln!("✔ imageauto uninstalled");
        Ok(Outcome::Ok)
    })
}

/// The image objects (of the three kinds) in a namespace, or everywhere.
async fn count_objects(k: &Kube, ns: Option<&str>) -> usize {
    let mut n = 0;
    for ar in [
        ApiResource::erase::<automation::api::ImageRepository>(&()),
        ApiResource::erase::<automation::api::ImagePolicy>(&()),
        ApiResource::erase::<automation::api::ImageUpdateAutomation>(&()),
    ] {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(k.client.clone(), ns, &ar),
            None => Api::all_with(k.client.clone(), &ar),
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
    /// The namespace of the controller
    #[arg(long = "install-namespace", default_value = DEFAULT_NAMESPACE)]
    install_namespace: String,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn version(args: VersionArgs) -> Result<Outcome> {
    outln!("client: kubectl-imageauto {}", env!("CARGO_PKG_VERSION"));
    if args.client {
        return Ok(Outcome::Ok);
    }
    runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let ns = &args.install_namespace;
        let deployments: Api<Deployment> = Api::namespaced(k.client.clone(), ns);
        let image = deployments
            .get_opt(NAME)
            .await
            .map_err(|e| explain(e, "reading the controller's Deployment"))?
            .map(|d| d.spec)
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image);
        match image {
            Some(i) => outln!("server: Deployment {ns}/{NAME} runs {i}"),
            None => {
                outln!("server: not installed in {ns} (kubectl imageauto install)");
                return Ok(Outcome::Failed);
            }
        }
        // The running process, through the apiserver's service proxy.
        let path = format!("/api/v1/namespaces/{ns}/services/{NAME}:health/proxy/version");
        let req = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| anyhow!("{e}"))?;
        match tokio::time::timeout(Duration::from_secs(5), k.client.request::<Value>(req)).await {
            Ok(Ok(v)) => outln!(
                "server: serve reports {}",
                v["version"].as_str().unwrap_or("?")
            ),
            _ => outln!("server: serve does not answer /version (not running, or not reachable)"),
        }
        Ok(Outcome::Ok)
    })
}
