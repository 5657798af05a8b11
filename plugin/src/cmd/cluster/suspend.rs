//! `suspend` and `resume`: `spec.suspend`, and the reconciliation that follows a resume.

use super::*;

#[derive(clap::Args, Debug)]
pub struct SuspendArgs {
    /// repository or update, and the object's NAME (or --all); Flux's form
    /// too: image update NAME
    #[arg(value_name = "KIND [NAME]", required = true)]
    words: Vec<String>,
    /// Every object of the kind in the namespace
    #[arg(long)]
    all: bool,
    /// How long resume waits for the next reconciliation
    #[arg(long, default_value = "2m", value_parser = crate::cmd::duration_arg)]
    timeout: Duration,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn suspend(args: SuspendArgs, suspend: bool) -> Result<Exit> {
    let command = if suspend { "suspend" } else { "resume" };
    let words = Words::of(&args.words);
    let p = words.prefix();
    let Some(kind_word) = words.kind.clone() else {
        crate::cmd::usage_error(
            command,
            format!("give a kind and a name: {command} {p}repository|update NAME (or --all)"),
        );
    };
    let name = match (words.names.as_slice(), args.all) {
        ([], true) => None,
        ([name], false) => Some(name.clone()),
        ([], false) => crate::cmd::usage_error(
            command,
            format!(
                "give the name of the object: {command} {p}{kind_word} NAME, or {command} {p}{kind_word} --all"
            ),
        ),
        (_, true) => crate::cmd::usage_error(
            command,
            format!("--all goes without a name: {command} {p}{kind_word} --all"),
        ),
        ([name, more @ ..], false) => crate::cmd::usage_error(
            command,
            format!(
                "one name at a time: {command} {p}{kind_word} {name} (then {command} {p}{kind_word} {}), or {command} {p}{kind_word} --all",
                more.join(", ")
            ),
        ),
    };
    let kind = ImageKind::parse(&kind_word)?;
    if kind == ImageKind::Policy {
        bail!(
            "policies are suspended through their repository or automation: {command} repository NAME or {command} update NAME"
        );
    }
    crate::cmd::runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let api = kind.api(&k, false);
        let names: Vec<String> = match &name {
            Some(n) => vec![n.clone()],
            None => api
                .list(&ListParams::default())
                .await
                .map_err(|e| explain(e, &format!("listing {}", kind.plural())))?
                .items
                .iter()
                .map(|o| o.name_any())
                .collect(),
        };
        let mut failed = false;
        for name in names {
            let what = format!("{} {}/{name}", kind.name(), k.namespace);
            let mut patch = serde_json::json!({"spec": {"suspend": suspend}});
            let value = request_value();
            if !suspend {
                // Resumed objects reconcile at once, as Flux's do.
                patch["metadata"] =
                    serde_json::json!({"annotations": {RECONCILE_REQUEST_ANNOTATION: value}});
            }
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                return Err(not_found(&k, &kind.resource(), kind.name(), &name, e).await);
            }
            if suspend {
                outln!("✔ {what} suspended");
                continue;
            }
            eprintln!("► resumed {what}, waiting for it to reconcile");
            match handled(&api, &name, &value, args.timeout, &what).await {
                Ok(v) => {
                    let (ready, message) = ready_of(&v);
                    if ready == "True" {
                        outln!("✔ {what} resumed: {}", printable(&message));
                    } else {
                        eprintln!("✗ {what} resumed, not ready: {}", printable(&message));
                        failed = true;
                    }
                }
                Err(e) => {
                    eprintln!("✗ {e}");
                    failed = true;
                }
            }
        }
        Ok(if failed { Exit::Failed } else { Exit::Ok })
    })
}
