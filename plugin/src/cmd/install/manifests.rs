//! What install applies: the RBAC, the controller's Deployment and Service,
//! the webhook's configuration and certificate.

use super::*;

/// What the controller needs, verb by verb (least privilege).
pub(super) fn cluster_role() -> Value {
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

pub(super) fn labels() -> Value {
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

pub(super) fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
