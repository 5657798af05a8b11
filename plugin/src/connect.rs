//! Talking to a cluster as kubectl does: `--kubeconfig`, `--context`, `-n`,
//! `-A`; errors that say what to do (no cluster, no CRDs, not allowed).

use anyhow::{Context, Result, anyhow};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::Duration;

/// kubectl's connection flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// Kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config)
    #[arg(long, value_name = "FILE", global = false)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's, else default)
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// A client and the namespace to work in.
pub struct Kube {
    pub client: kube::Client,
    pub namespace: String,
}

impl KubeArgs {
    /// Connects (with a 10 s timeout for requests) and resolves the
    /// namespace: `-n`, else the context's, else `default`.
    pub async fn connect(&self) -> Result<Kube> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| anyhow!("the kubeconfig {} is not usable: {e}", path.display()))?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| anyhow!("the kubeconfig is not usable: {e}"))?,
            None => kube::Config::infer().await.map_err(|_| {
                anyhow!(
                    "no cluster configured: set $KUBECONFIG or give --kubeconfig (kubectl config view shows what kubectl uses)"
                )
            })?,
        };
        config.read_timeout = Some(Duration::from_secs(30));
        config.connect_timeout = Some(Duration::from_secs(10));
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).context("cannot make a Kubernetes client")?;
        Ok(Kube { client, namespace })
    }
}

/// An API error as one line that says what to do.
pub fn explain(e: kube::Error, what: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s)
            if s.code == 404
                && (s.message.contains("could not find the requested resource")
                    || s.message.contains("page not found")) =>
        {
            anyhow!(
                "{what}: the image.toolkit.fluxcd.io API is not installed in this cluster: run kubectl imageauto install (or install Flux's image controllers' CRDs)"
            )
        }
        kube::Error::Api(s) if s.code == 404 => anyhow!("{what}: {}", s.message),
        kube::Error::Api(s) if s.code == 403 => anyhow!(
            "{what}: forbidden: {} (ask for a Role that allows it)",
            s.message
        ),
        kube::Error::Api(s) if s.code == 401 => {
            anyhow!("{what}: the cluster refused the credentials of the kubeconfig (log in again)")
        }
        kube::Error::Api(s) => anyhow!("{what}: {} ({})", s.message, s.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => anyhow!(
            "{what}: cannot reach the cluster ({e}): check the kubeconfig's server and that the cluster is up"
        ),
        _ => anyhow!("{what}: {e}"),
    }
}

/// kubectl's age format (k8s.io/apimachinery HumanDuration).
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 time, kubectl-style; `-` when absent.
pub fn age(t: Option<&str>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let Ok(ts) = t.parse::<k8s_openapi::jiff::Timestamp>() else {
        return t.to_string();
    };
    let d = k8s_openapi::jiff::Timestamp::now().duration_since(ts);
    human_duration(Duration::try_from(d).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_kubectl_writes_them() {
        for (s, want) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 120, "3h2m"),
            (10 * 3600, "10h"),
            (50 * 3600, "2d2h"),
            (9 * 86400, "9d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(s)), want, "{s}");
        }
    }
}
