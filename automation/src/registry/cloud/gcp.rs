//! Artifact Registry and GCR logins: an OAuth2 access token, user
//! `oauth2accesstoken`, as Flux's `auth/gcp` gets it through Google's
//! default credentials:
//!
//! - `GOOGLE_APPLICATION_CREDENTIALS` naming a file of type
//!   `external_account` (workload identity federation): the subject token
//!   from `credential_source.file` (or `.url`), exchanged at `token_url`
//!   (Google's STS, RFC 8693), then, with
//!   `service_account_impersonation_url`, exchanged again for the service
//!   account's token;
//! - else the metadata server (GKE Workload Identity, or the node's
//!   service account): `GCE_METADATA_HOST`, else
//!   `metadata.google.internal`, with `Metadata-Flavor: Google`;
//! - with a ServiceAccount (object-level workload identity): its Kubernetes
//!   token exchanged at Google's STS for the audience of its
//!   `gcp.auth.fluxcd.io/workload-identity-provider` annotation (else the
//!   GKE cluster's workload identity pool, read from the metadata server),
//!   then for its `iam.gke.io/gcp-service-account`'s token when it names
//!   one (fluxcd/pkg `auth/gcp/provider.go`).

use super::{CloudError, Login, ServiceAccountIdentity, Subject};
use serde::Deserialize;
use std::time::{Duration, SystemTime};

const USER: &str = "oauth2accesstoken";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const HINT_METADATA: &str = "that the pod runs on GKE with Workload Identity (the ServiceAccount's iam.gke.io/gcp-service-account annotation and the IAM binding roles/iam.workloadIdentityUser) or on a node whose service account may read the registry";
const HINT_FEDERATION: &str = "GOOGLE_APPLICATION_CREDENTIALS: the external_account file, its workload identity pool provider and the service account it impersonates";

#[derive(Deserialize)]
struct AccessToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

const STS_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
const EMAIL_PATTERN: &str = r"^[a-zA-Z0-9-]{1,100}@[a-zA-Z0-9-]{1,100}\.iam\.gserviceaccount\.com$";
const EMAIL_ANNOTATION: &str = "iam.gke.io/gcp-service-account";
const WIP_PATTERN: &str =
    r"^projects/\d{1,30}/locations/global/workloadIdentityPools/[^/]{1,100}/providers/[^/]{1,100}$";
const WIP_ANNOTATION: &str = "gcp.auth.fluxcd.io/workload-identity-provider";

fn sa_error(sa: &ServiceAccountIdentity, detail: String) -> CloudError {
    CloudError::ServiceAccount {
        namespace: sa.namespace.clone(),
        name: sa.name.clone(),
        detail,
    }
}

/// The Google service account a ServiceAccount impersonates, if any.
fn email(sa: &ServiceAccountIdentity) -> Result<Option<String>, CloudError> {
    let Some(email) = sa.annotation(EMAIL_ANNOTATION).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    if regex::Regex::new(EMAIL_PATTERN).is_ok_and(|re| re.is_match(email)) {
        Ok(Some(email.to_string()))
    } else {
        Err(sa_error(
            sa,
            format!(
                "failed to get provider identity from service account '{}/{}' annotations: invalid {EMAIL_ANNOTATION} annotation: '{email}'. must match {EMAIL_PATTERN}",
                sa.namespace, sa.name
            ),
        ))
    }
}

/// The STS audience a ServiceAccount's annotation names (outside GKE).
fn provider_audience(sa: &ServiceAccountIdentity) -> Result<Option<String>, CloudError> {
    let Some(wip) = sa.annotation(WIP_ANNOTATION).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    if regex::Regex::new(WIP_PATTERN).is_ok_and(|re| re.is_match(wip)) {
        Ok(Some(format!("//iam.googleapis.com/{wip}")))
    } else {
        Err(sa_error(
            sa,
            format!(
                "failed to get provider audience: invalid {WIP_ANNOTATION} annotation: '{wip}'. must match {WIP_PATTERN}"
            ),
        ))
    }
}

/// The GKE cluster's project, location and name, from the metadata server.
async fn gke_cluster(http: &reqwest::Client) -> Result<(String, String, String), CloudError> {
    let mut out = Vec::new();
    for (what, path) in [
        ("project ID", "project/project-id"),
        ("location", "instance/attributes/cluster-location"),
        ("name", "instance/attributes/cluster-name"),
    ] {
        let url = format!("http://{}/computeMetadata/v1/{path}", metadata_host());
        let fail = |detail: String| CloudError::Login {
            provider: "gcp",
            step: "the GKE cluster's workload identity pool",
            detail: format!("failed to get GKE cluster {what} from the metadata service: {detail}"),
            hint: HINT_METADATA,
        };
        let resp = http
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| fail(http_error(&url, &e)))?;
        if !resp.status().is_success() {
            return Err(fail(format!("{url} answered {}", resp.status())));
        }
        let text = resp.text().await.map_err(|e| fail(http_error(&url, &e)))?;
        if text.trim().is_empty() {
            return Err(fail("empty value".to_string()));
        }
        out.push(text.trim().to_string());
    }
    let name = out.pop().unwrap_or_default();
    let location = out.pop().unwrap_or_default();
    let project = out.pop().unwrap_or_default();
    Ok((project, location, name))
}

/// The audiences of a ServiceAccount's Kubernetes token (fluxcd/pkg
/// `GetAudiences`): its workload identity provider, else the GKE
/// cluster's pool.
pub(super) async fn audiences(
    http: &reqwest::Client,
    sa: &ServiceAccountIdentity,
) -> Result<Vec<String>, CloudError> {
    email(sa)?;
    if let Some(a) = provider_audience(sa)? {
        return Ok(vec![a]);
    }
    let (project, _, _) = gke_cluster(http).await?;
    Ok(vec![format!("{project}.svc.id.goog")])
}

pub(super) async fn login(
    http: &reqwest::Client,
    subject: Subject<'_>,
) -> Result<Login, CloudError> {
    if let Some((sa, token)) = subject {
        let audience = match provider_audience(sa)? {
            Some(a) => a,
            None => {
                let (project, location, name) = gke_cluster(http).await?;
                format!(
                    "identitynamespace:{project}.svc.id.goog:https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{name}"
                )
            }
        };
        let impersonate = email(sa)?.map(|e| {
            format!("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{e}:generateAccessToken")
        });
        return exchange(
            http,
            STS_TOKEN_URL,
            &audience,
            "urn:ietf:params:oauth:token-type:jwt",
            &token,
            impersonate.as_deref(),
        )
        .await
        .map_err(|e| {
            sa_error(
                sa,
                format!(
                    "failed to create provider access token for service account '{}/{}': {e}",
                    sa.namespace, sa.name
                ),
            )
        });
    }
    if let Ok(path) = std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
        && !path.is_empty()
    {
        return federated(http, &path).await;
    }
    metadata(http).await
}

fn metadata_host() -> String {
    std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "metadata.google.internal".to_string())
}

async fn metadata(http: &reqwest::Client) -> Result<Login, CloudError> {
    let url = format!(
        "http://{}/computeMetadata/v1/instance/service-accounts/default/token",
        metadata_host()
    );
    let step = "the metadata server's token";
    let resp = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .map_err(|e| CloudError::login("gcp", step, http_error(&url, &e), HINT_METADATA))?;
    let token: AccessToken = answer(resp, &url, step, HINT_METADATA).await?;
    Ok(login_of(token))
}

fn login_of(token: AccessToken) -> Login {
    Login {
        username: USER.to_string(),
        password: token.access_token,
        expires: token
            .expires_in
            .map(|s| SystemTime::now() + Duration::from_secs(s)),
    }
}

#[derive(Deserialize)]
struct ExternalAccount {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    subject_token_type: String,
    #[serde(default)]
    token_url: String,
    #[serde(default)]
    service_account_impersonation_url: Option<String>,
    #[serde(default)]
    credential_source: CredentialSource,
}

#[derive(Deserialize, Default)]
struct CredentialSource {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    format: Option<SourceFormat>,
}

#[derive(Deserialize)]
struct SourceFormat {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    subject_token_field_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Impersonated {
    access_token: String,
    #[serde(default)]
    expire_time: Option<String>,
}

async fn federated(http: &reqwest::Client, path: &str) -> Result<Login, CloudError> {
    let hint = HINT_FEDERATION;
    let unreadable = |e: &dyn std::fmt::Display| {
        CloudError::login(
            "gcp",
            "reading GOOGLE_APPLICATION_CREDENTIALS",
            format!("{path}: {e}"),
            hint,
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(&e))?;
    let account: ExternalAccount = serde_json::from_str(&text).map_err(|e| unreadable(&e))?;
    if account.kind != "external_account" {
        return Err(CloudError::login(
            "gcp",
            "reading GOOGLE_APPLICATION_CREDENTIALS",
            format!(
                "{path}: type {:?} is not supported; use an external_account (workload identity federation) file, or none to use the metadata server",
                account.kind
            ),
            hint,
        ));
    }
    let subject = subject_token(http, path, &account.credential_source).await?;
    exchange(
        http,
        &account.token_url,
        &account.audience,
        &account.subject_token_type,
        &subject,
        account
            .service_account_impersonation_url
            .as_deref()
            .filter(|u| !u.is_empty()),
    )
    .await
}

/// Google's STS exchange (RFC 8693) of a subject token, then the
/// impersonation of a service account when `impersonate` names its URL.
async fn exchange(
    http: &reqwest::Client,
    token_url: &str,
    audience: &str,
    subject_token_type: &str,
    subject: &str,
    impersonate: Option<&str>,
) -> Result<Login, CloudError> {
    let hint = HINT_FEDERATION;
    let step = "the STS token exchange";
    let form = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", audience),
        ("scope", SCOPE),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token_type", subject_token_type),
        ("subject_token", subject),
    ];
    let url = token_url;
    let resp = http
        .post(url)
        .form(&form)
        .send()
        .await
        .map_err(|e| CloudError::login("gcp", step, http_error(url, &e), hint))?;
    let sts: AccessToken = answer(resp, url, step, hint).await?;
    let Some(imp) = impersonate else {
        return Ok(login_of(sts));
    };
    let step = "the service account impersonation";
    let resp = http
        .post(imp)
        .bearer_auth(&sts.access_token)
        .json(&serde_json::json!({ "scope": [SCOPE] }))
        .send()
        .await
        .map_err(|e| CloudError::login("gcp", step, http_error(imp, &e), hint))?;
    let token: Impersonated = answer(resp, imp, step, hint).await?;
    let expires = token.expire_time.as_deref().and_then(|t| {
        t.parse::<k8s_openapi::jiff::Timestamp>()
            .ok()
            .map(SystemTime::from)
    });
    Ok(Login {
        username: USER.to_string(),
        password: token.access_token,
        expires,
    })
}

async fn subject_token(
    http: &reqwest::Client,
    path: &str,
    source: &CredentialSource,
) -> Result<String, CloudError> {
    let step = "the subject token of credential_source";
    let hint = HINT_FEDERATION;
    let raw = if let Some(file) = &source.file {
        std::fs::read_to_string(file)
            .map_err(|e| CloudError::login("gcp", step, format!("{file}: {e}"), hint))?
    } else if let Some(url) = &source.url {
        let mut req = http.get(url);
        for (k, v) in &source.headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CloudError::login("gcp", step, http_error(url, &e), hint))?;
        if !resp.status().is_success() {
            return Err(CloudError::login(
                "gcp",
                step,
                format!("{url} answered {}", resp.status()),
                hint,
            ));
        }
        resp.text()
            .await
            .map_err(|e| CloudError::login("gcp", step, http_error(url, &e), hint))?
    } else {
        return Err(CloudError::login(
            "gcp",
            step,
            format!(
                "{path}: credential_source has neither file nor url (executable and AWS sources are not supported)"
            ),
            hint,
        ));
    };
    match &source.format {
        Some(f) if f.kind == "json" => {
            let v: serde_json::Value = serde_json::from_str(&raw)
                .map_err(|e| CloudError::login("gcp", step, format!("not JSON: {e}"), hint))?;
            v.get(&f.subject_token_field_name)
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    CloudError::login(
                        "gcp",
                        step,
                        format!("no field {:?}", f.subject_token_field_name),
                        hint,
                    )
                })
        }
        _ => Ok(raw.trim().to_string()),
    }
}

/// A JSON answer of `T`, or an error naming the URL, the status and the
/// service's own error text (OAuth2 errors name what was refused and carry
/// no token).
pub(super) async fn answer<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    url: &str,
    step: &'static str,
    hint: &'static str,
) -> Result<T, CloudError> {
    let provider = provider_of(hint);
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| CloudError::login(provider, step, http_error(url, &e), hint))?;
    if !status.is_success() {
        return Err(CloudError::login(
            provider,
            step,
            format!("{url} answered {status}{}", service_error(&body)),
            hint,
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        CloudError::login(
            provider,
            step,
            format!("{url}: the answer is not the expected JSON ({e})"),
            hint,
        )
    })
}

fn provider_of(hint: &'static str) -> &'static str {
    if hint == HINT_METADATA || hint == HINT_FEDERATION {
        "gcp"
    } else {
        "azure"
    }
}

/// `: <error>: <description>` of an OAuth2 or Azure error body, nothing
/// else of it (a body could echo what was sent).
pub(super) fn service_error(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let code = field("error").or_else(|| {
        v.get("error")
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_str())
            .map(str::to_string)
    });
    let text = field("error_description").or_else(|| {
        v.get("error")
            .and_then(|e| e.get("message"))
            .and_then(|c| c.as_str())
            .map(str::to_string)
    });
    let mut out = String::new();
    for part in [code, text].into_iter().flatten() {
        let part: String = part.chars().take(300).collect();
        out.push_str(": ");
        out.push_str(&part);
    }
    out
}

/// A transport error with its causes, without the URL's query.
pub(super) fn http_error(url: &str, e: &reqwest::Error) -> String {
    // reqwest puts the URL (with its query) in its text: said once, without it.
    let base = url.split('?').next().unwrap_or(url);
    let text = e.to_string();
    let text = match e.url() {
        Some(u) => text
            .replace(&format!(" ({u})"), "")
            .replace(u.as_str(), base),
        None => text,
    };
    crate::errors::with_causes(format!("{base}: {text}"), std::error::Error::source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_keep_only_code_and_description() {
        assert_eq!(
            service_error(br#"{"error":"invalid_grant","error_description":"The audience is wrong","token":"x"}"#),
            ": invalid_grant: The audience is wrong"
        );
        assert_eq!(
            service_error(br#"{"error":{"code":"UNAUTHORIZED","message":"nope"}}"#),
            ": UNAUTHORIZED: nope"
        );
        assert_eq!(service_error(b"<html>"), "");
    }
}
