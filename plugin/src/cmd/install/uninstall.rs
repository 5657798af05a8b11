//! `uninstall`: what install applied goes; the CRDs and the objects of
//! users stay unless asked, and Flux's controllers come back.

use super::*;

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    #[command(flatten)]
    namespace: ControllerNamespace,
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
pub(super) fn installed_by_us(crd: &CustomResourceDefinition) -> bool {
    let flux = crd.metadata.labels.iter().flatten().any(|(k, v)| {
        (k == "app.kubernetes.io/part-of" && v == "flux") || k.ends_with(".toolkit.fluxcd.io/name")
    });
    !installed_by_others(crd) && !flux
}

/// Scales Flux's controllers that `install --take-over` stopped back to
/// their replicas before, and says so.
pub(super) async fn restore_taken_over(k: &Kube) -> Result<()> {
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
    let ns = args.namespace.resolved();
    crate::cmd::runtime()?.block_on(async {
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
pub(super) fn all_kinds() -> [ApiResource; 3] {
    [
        ApiResource::erase::<automation::api::ImageRepository>(&()),
        ApiResource::erase::<automation::api::ImagePolicy>(&()),
        ApiResource::erase::<automation::api::ImageUpdateAutomation>(&()),
    ]
}

/// The objects of `kinds` in a namespace, or everywhere.
pub(super) async fn count_objects(k: &Kube, ns: Option<&str>, kinds: &[ApiResource]) -> usize {
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
