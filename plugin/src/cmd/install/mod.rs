//! `install`, `uninstall` and `version`: imageauto in a cluster. Everything
//! is applied with server-side apply under one field manager, so a second
//! install changes nothing and a newer one upgrades in place.

use crate::cmd::Exit;
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

mod apply;
mod manifests;
mod uninstall;
mod version;

use apply::*;
pub use manifests::*;
pub use uninstall::{UninstallArgs, uninstall};
pub use version::{VersionArgs, version};

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
    #[command(flatten)]
    namespace: ControllerNamespace,
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
    #[arg(long, default_value = "5m", value_parser = crate::cmd::duration_arg)]
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
fn installed_by_others(crd: &CustomResourceDefinition) -> bool {
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

/// `-n`: the namespace of the controller, for install, uninstall and
/// version alike.
#[derive(clap::Args, Debug)]
pub struct ControllerNamespace {
    /// The namespace of the controller (default imageauto-system; -n and --namespace mean the same, as for flux install)
    #[arg(
        short = 'n',
        long = "install-namespace",
        alias = "namespace",
        value_name = "NAMESPACE"
    )]
    install_namespace: Option<String>,
}

impl ControllerNamespace {
    /// `-n`/`--namespace`/`--install-namespace`, else imageauto-system.
    fn resolved(&self) -> String {
        self.install_namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }
}

pub fn install(args: InstallArgs) -> Result<Exit> {
    let image = args.image.clone().unwrap_or_else(default_image);
    let ns = args.namespace.resolved();
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
    crate::cmd::runtime()?.block_on(async {
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
                Some(existing) if installed_by_others(&existing) => {
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
        assert!(contains_all_of(
            &live,
            &json!({"a": {"b": 1}, "l": [{"x": 1}]})
        ));
        assert!(!contains_all_of(&live, &json!({"a": {"b": 2}})));
        assert!(!contains_all_of(&live, &json!({"l": [{"x": 1}, {"x": 2}]})));
        assert!(!contains_all_of(&live, &json!({"missing": 1})));
        // Numbers by value.
        assert!(contains_all_of(
            &json!({"minimum": 0}),
            &json!({"minimum": 0.0})
        ));
        assert!(!contains_all_of(
            &json!({"minimum": 1}),
            &json!({"minimum": 0.0})
        ));
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
        assert!(!contains_all_of(&stored, &desired));
        let k = kept(&stored, &desired);
        assert_eq!(k, json!({"spec": {"schema": {"type": "object"}}}));
        assert!(contains_all_of(&stored, &k));
        // What the server keeps and the live object lacks is a change.
        let live = json!({"spec": {"schema": {"type": "string"}}});
        assert!(!contains_all_of(&live, &k));
    }
}
