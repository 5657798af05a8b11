//! `reconcile`: a request the controller answers, waited for.

use super::*;

#[derive(clap::Args, Debug)]
pub struct ReconcileTarget {
    /// How long to wait for the controller
    #[arg(long, default_value = "2m", value_parser = crate::cmd::duration_arg)]
    pub timeout: Duration,
    /// Reconcile the update's GitRepository first (requested of Flux's source controller)
    #[arg(long)]
    pub with_source: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

pub fn reconcile(kind: &str, name: &str, t: ReconcileTarget) -> Result<Exit> {
    let kind = ImageKind::parse(kind)?;
    crate::cmd::runtime()?.block_on(async {
        let k = t.kube.connect().await?;
        let api = kind.api(&k, false);
        let what = format!("{} {}/{name}", kind.name(), k.namespace);
        let o = get_named(&k, kind, name).await?;
        let v = serde_json::to_value(&o)?;
        // Flux's controllers and imageauto's leave a suspended object alone,
        // reconcile requests included: waiting for one would only time out.
        if v["spec"]["suspend"] == true {
            let resume = match kind {
                ImageKind::Repository => format!("kubectl imageauto resume repository {name}"),
                ImageKind::Update => format!("kubectl imageauto resume update {name}"),
                ImageKind::Policy => "set its spec.suspend to false".into(),
            };
            eprintln!("✗ {what} is suspended: {resume} to reconcile it");
            return Ok(Exit::Failed);
        }
        if t.with_source && kind == ImageKind::Update {
            let src = v["spec"]["sourceRef"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let sns = v["spec"]["sourceRef"]["namespace"]
                .as_str()
                .unwrap_or(&k.namespace)
                .to_string();
            let sapi: Api<DynamicObject> = Api::namespaced_with(
                k.client.clone(),
                &sns,
                &ApiResource::erase::<GitRepository>(&()),
            );
            let value = request_value();
            annotate(&sapi, &src, &value)
                .await
                .map_err(|e| explain(e, &format!("GitRepository {sns}/{src}")))?;
            eprintln!("► requested GitRepository {sns}/{src}");
        }
        // A push shows in lastPushCommit (Flux's Ready message stays
        // "repository up-to-date"), whoever's controller made it.
        let pushed_before = v["status"]["lastPushCommit"].as_str().map(str::to_string);
        let value = request_value();
        annotate(&api, name, &value)
            .await
            .map_err(|e| explain(e, &what))?;
        eprintln!("► reconciling {what}");
        let v = handled(&api, name, &value, t.timeout, &what).await?;
        let (ready, message) = ready_of(&v);
        let s = &v["status"];
        let result = match kind {
            ImageKind::Repository => format!(
                "✔ scan fetched {} tags",
                s["lastScanResult"]["tagCount"].as_i64().unwrap_or(0)
            ),
            ImageKind::Policy => format!(
                "✔ latest image {}:{}",
                s["latestRef"]["name"].as_str().unwrap_or("?"),
                s["latestRef"]["tag"].as_str().unwrap_or("?")
            ),
            ImageKind::Update => match s["lastPushCommit"].as_str() {
                Some(c) if pushed_before.as_deref() != Some(c) => format!("✔ pushed commit {c}"),
                Some(c) => format!("✔ nothing to do: {message} (last pushed commit {c})"),
                None => format!("✔ nothing to do: {message}"),
            },
        };
        if ready != "True" {
            eprintln!("✗ {what} is not ready: {}", printable(&message));
            return Ok(Exit::Failed);
        }
        outln!("{}", printable(&result));
        Ok(Exit::Ok)
    })
}
