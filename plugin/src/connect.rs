//! Talking to a cluster as kubectl does: `--kubeconfig`, `--context`, `-n`,
//! `-A`; errors that say what to do (no cluster, no CRDs, not allowed).

use anyhow::{Context, Result, anyhow, bail};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// kubectl's connection flags, without the namespace (commands whose
/// namespace means something else, such as `install`'s).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config)
    #[arg(long, value_name = "FILE", global = false)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// kubectl's connection flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KubeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
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
        self.conn.connect(self.namespace.clone()).await
    }
}

impl ConnArgs {
    /// Connects, in `namespace` (else the context's, else `default`).
    pub async fn connect(&self, namespace: Option<String>) -> Result<Kube> {
        let mut config = self.config().await?;
        config.read_timeout = Some(Duration::from_secs(30));
        config.connect_timeout = Some(Duration::from_secs(10));
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).context("cannot make a Kubernetes client")?;
        Ok(Kube { client, namespace })
    }

    /// The configuration as kubectl finds it: `--kubeconfig FILE`; else the
    /// files of `$KUBECONFIG` that exist, merged by kube's rules (the
    /// first to set a value wins), as kubectl skips the missing ones; else
    /// `~/.kube/config`; else the pod's service account.
    async fn config(&self) -> Result<kube::Config> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let Some((kubeconfig, source)) = self.kubeconfig_file()? else {
            if let Some(context) = &self.context {
                bail!("--context {context}: no kubeconfig: set $KUBECONFIG or give --kubeconfig");
            }
            return match kube::Config::incluster() {
                Ok(mut c) => {
                    c.apply_debug_overrides();
                    Ok(c)
                }
                Err(_) => Err(anyhow!(
                    "no cluster configured: set $KUBECONFIG or give --kubeconfig (kubectl config view shows what kubectl uses)"
                )),
            };
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| {
                anyhow!(
                    "{source} is not usable: {}",
                    kubeconfig_error(&e, self.context.as_deref())
                )
            })?;
        config.apply_debug_overrides();
        Ok(config)
    }
}

impl ConnArgs {
    /// The kubeconfig as kubectl finds it (see [`ConnArgs::config`]) and
    /// how to name it in messages; `None` when there is none (in a pod).
    fn kubeconfig_file(&self) -> Result<Option<(Kubeconfig, String)>> {
        if let Some(path) = &self.kubeconfig {
            return Ok(Some((
                read_kubeconfig(path)?,
                format!("the kubeconfig {}", path.display()),
            )));
        }
        if let Some(found) = kubeconfig_env()? {
            return Ok(Some(found));
        }
        match home_kubeconfig() {
            Some(path) => Ok(Some((
                read_kubeconfig(&path)?,
                format!("the kubeconfig {}", path.display()),
            ))),
            None => Ok(None),
        }
    }

    /// The names of the kubeconfig's contexts (for completion); none when
    /// it cannot be read.
    pub fn context_names(&self) -> Vec<String> {
        match self.kubeconfig_file() {
            Ok(Some((kc, _))) => kc.contexts.into_iter().map(|c| c.name).collect(),
            _ => Vec::new(),
        }
    }
}

/// The files of `$KUBECONFIG` that exist, merged; `None` when the variable
/// is unset or empty. When it names files and none exists, an error that
/// lists them.
fn kubeconfig_env() -> Result<Option<(Kubeconfig, String)>> {
    let Some(value) = std::env::var_os("KUBECONFIG") else {
        return Ok(None);
    };
    let paths: Vec<PathBuf> = std::env::split_paths(&value)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    if paths.is_empty() {
        return Ok(None);
    }
    let existing: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
    if existing.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "no cluster configured: none of the files $KUBECONFIG names exists ({}): correct $KUBECONFIG, or give --kubeconfig",
            names.join(", ")
        );
    }
    let mut merged = Kubeconfig::default();
    for path in &existing {
        merged = merged.merge(read_kubeconfig(path)?).map_err(|e| {
            anyhow!(
                "$KUBECONFIG: {} cannot be merged with the files before it: {}",
                path.display(),
                kubeconfig_error(&e, None)
            )
        })?;
    }
    let source = if existing.len() == 1 {
        format!("the kubeconfig {}", existing[0].display())
    } else {
        let names: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        format!("the kubeconfig of $KUBECONFIG ({})", names.join(", "))
    };
    Ok(Some((merged, source)))
}

/// `~/.kube/config`, when it exists.
fn home_kubeconfig() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let path = PathBuf::from(home).join(".kube").join("config");
    path.exists().then_some(path)
}

/// Reads one kubeconfig file, with an error that names it and says why in
/// plain words.
fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    Kubeconfig::read_from(path).map_err(|e| match e {
        KubeconfigError::ReadConfig(io, _) => {
            anyhow!(
                "cannot read the kubeconfig {}: {}",
                path.display(),
                io_text(&io)
            )
        }
        other => anyhow!(
            "the kubeconfig {} is not usable: {}",
            path.display(),
            kubeconfig_error(&other, None)
        ),
    })
}

/// An I/O error without its `(os error N)` suffix.
fn io_text(e: &std::io::Error) -> String {
    let t = e.to_string();
    match t.find(" (os error") {
        Some(i) => t[..i].to_string(),
        None => t,
    }
}

/// A kubeconfig error in plain words: paths as they are written (not
/// quoted twice), a YAML error's first line (not the excerpt of the file
/// it points at), and what to do.
fn kubeconfig_error(e: &KubeconfigError, context: Option<&str>) -> String {
    use kube::config::LoadDataError;
    let data = |what: &str, e: &LoadDataError| match e {
        LoadDataError::ReadFile(io, path) => {
            format!("cannot read its {what} {}: {}", path.display(), io_text(io))
        }
        LoadDataError::DecodeBase64(b) => format!("its {what} data is not base64: {b}"),
        LoadDataError::NoBase64DataOrFile => format!("its {what} names no data and no file"),
    };
    match e {
        KubeconfigError::CurrentContextNotSet => {
            "it sets no current-context: give --context NAME (kubectl config get-contexts lists them)".into()
        }
        KubeconfigError::LoadContext(name) => match context {
            Some(_) => format!("it has no context {name:?}: kubectl config get-contexts lists them"),
            None => format!("its current-context {name:?} is not one of its contexts: kubectl config use-context NAME"),
        },
        KubeconfigError::LoadClusterOfContext(name) => {
            format!("the context names the cluster {name:?}, which it does not hold")
        }
        KubeconfigError::ReadConfig(io, path) => {
            format!("cannot read {}: {}", path.display(), io_text(io))
        }
        KubeconfigError::Parse(p) => {
            let text = p.to_string();
            let first = text.lines().next().unwrap_or_default().trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            format!("not a kubeconfig (YAML): {first}")
        }
        KubeconfigError::MissingClusterUrl => "the context's cluster has no server".into(),
        KubeconfigError::ParseClusterUrl(u) => format!("the cluster's server is not a URL: {u}"),
        KubeconfigError::LoadCertificateAuthority(d) => data("certificate-authority", d),
        KubeconfigError::LoadClientCertificate(d) => data("client-certificate", d),
        KubeconfigError::LoadClientKey(d) => data("client-key", d),
        other => {
            let text = other.to_string();
            text.lines().next().unwrap_or_default().to_string()
        }
    }
}

/// Whether a 404 says the resource (the CRD's kind) is unknown to the
/// apiserver, rather than that an object of it does not exist.
pub fn kind_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404
        && (s.message.contains("could not find the requested resource")
            || s.message.contains("page not found")))
}

/// Whether an error says that the object asked for does not exist (its
/// kind does).
pub fn object_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404) && !kind_missing(e)
}

/// The namespaces other than `k`'s where an object of `ar` named `name`
/// exists, as the end of a not-found message (`; found in flux-system:
/// add -n flux-system`); empty when there is none, or when listing every
/// namespace is not allowed.
pub async fn found_elsewhere(k: &Kube, ar: &kube::api::ApiResource, name: &str) -> String {
    use kube::api::{DynamicObject, ListParams};
    let api: kube::Api<DynamicObject> = kube::Api::all_with(k.client.clone(), ar);
    let lp = ListParams::default().fields(&format!("metadata.name={name}"));
    let Ok(list) = api.list(&lp).await else {
        return String::new();
    };
    let mut namespaces: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|o| o.metadata.namespace)
        .filter(|ns| *ns != k.namespace)
        .collect();
    namespaces.sort();
    namespaces.dedup();
    match namespaces.as_slice() {
        [] => String::new(),
        [one] => format!("; found in {one}: add -n {one}"),
        many => format!("; found in {}: add -n NAMESPACE", many.join(", ")),
    }
}

/// An API error as one line that says what to do.
pub fn explain(e: kube::Error, what: &str) -> anyhow::Error {
    match &e {
        _ if kind_missing(&e) => {
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
