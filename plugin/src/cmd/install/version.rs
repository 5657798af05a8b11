//! `version`: the plugin's, and the controller's in the cluster.

use super::*;

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    /// Only the plugin's version; do not ask the cluster
    #[arg(long)]
    client: bool,
    #[command(flatten)]
    namespace: ControllerNamespace,
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
    let ns = args.namespace.resolved();
    crate::cmd::runtime()?.block_on(async {
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
