//! ACR logins as Flux's `auth/azure` makes them: an Entra ID access token
//! for the registry's cloud (`https://containerregistry.azure.net/.default`;
//! `.cn` and `.us` registries their clouds' audiences), exchanged at the registry's `/oauth2/exchange` for an ACR refresh
//! token, used with the user `00000000-0000-0000-0000-000000000000`.
//!
//! The Entra ID token comes from workload identity when its environment is
//! there (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`,
//! `AZURE_TENANT_ID`, at `AZURE_AUTHORITY_HOST`, as the AKS webhook sets
//! them: a client-credentials grant with the projected token as the client
//! assertion), else from managed identity through IMDS
//! (`169.254.169.254`, header `Metadata: true`; `AZURE_CLIENT_ID` picks a
//! user-assigned identity). With a ServiceAccount (object-level workload
//! identity), its `azure.workload.identity/tenant-id` and `/client-id`
//! annotations and its Kubernetes token make the client assertion.

use super::gcp::{answer, http_error};
use super::{CloudError, Login, ServiceAccountIdentity, Subject};
use base64::Engine;
use serde::Deserialize;
use std::time::{Duration, SystemTime};

const USER: &str = "00000000-0000-0000-0000-000000000000";
const HINT: &str = "the pod's Azure identity (workload identity: the ServiceAccount's azure.workload.identity/client-id annotation, the pod label azure.workload.identity/use and the federated credential; or the node's managed identity) and that it has the AcrPull role on the registry";
const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

#[derive(Deserialize)]
struct EntraToken {
    access_token: String,
}

#[derive(Deserialize)]
struct Exchanged {
    refresh_token: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The audience of Entra ID tokens for a registry (the ACR service of its
/// cloud, as azcontainerregistry configures it).
fn audience(registry: &str) -> &'static str {
    if registry.ends_with(".azurecr.cn") {
        "https://containerregistry.azure.cn"
    } else if registry.ends_with(".azurecr.us") {
        "https://containerregistry.azure.us"
    } else {
        "https://containerregistry.azure.net"
    }
}

/// The tenant and client a ServiceAccount names (fluxcd/pkg
/// `auth/azure/options.go`), or Flux's error.
pub(super) fn identity(sa: &ServiceAccountIdentity) -> Result<(String, String), CloudError> {
    let get = |what: &str, key: &str| {
        sa.annotation(key).map(str::to_string).ok_or_else(|| CloudError::ServiceAccount {
            namespace: sa.namespace.clone(),
            name: sa.name.clone(),
            detail: format!(
                "failed to get provider identity from service account '{}/{}' annotations: azure {what} is not set in the service account annotation {key}",
                sa.namespace, sa.name
            ),
        })
    };
    Ok((
        get("tenant ID", "azure.workload.identity/tenant-id")?,
        get("client ID", "azure.workload.identity/client-id")?,
    ))
}

pub(super) async fn login(
    http: &reqwest::Client,
    registry: &str,
    subject: Subject<'_>,
) -> Result<Login, CloudError> {
    let audience = audience(registry);
    let token = match subject {
        Some((sa, k8s_token)) => {
            let (tenant, client) = identity(sa)?;
            client_assertion(http, &tenant, &client, &k8s_token, audience)
                .await
                .map_err(|e| CloudError::ServiceAccount {
                    namespace: sa.namespace.clone(),
                    name: sa.name.clone(),
                    detail: format!(
                        "failed to create provider access token for service account '{}/{}': {e}",
                        sa.namespace, sa.name
                    ),
                })?
        }
        None => entra_token(http, audience).await?,
    };
    let url = format!("https://{registry}/oauth2/exchange");
    let step = "the ACR token exchange";
    let form = [
        ("grant_type", "access_token"),
        ("service", registry),
        ("access_token", token.as_str()),
    ];
    let exchanged: Exchanged = post_form(http, &url, &form, step).await?;
    let expires = jwt_expiry(&exchanged.refresh_token);
    Ok(Login {
        username: USER.to_string(),
        password: exchanged.refresh_token,
        expires,
    })
}

async fn entra_token(http: &reqwest::Client, audience: &str) -> Result<String, CloudError> {
    if let (Some(file), Some(client), Some(tenant)) = (
        env("AZURE_FEDERATED_TOKEN_FILE"),
        env("AZURE_CLIENT_ID"),
        env("AZURE_TENANT_ID"),
    ) {
        let step = "the workload identity token";
        let assertion = std::fs::read_to_string(&file)
            .map_err(|e| CloudError::login("azure", step, format!("{file}: {e}"), HINT))?;
        return client_assertion(http, &tenant, &client, &assertion, audience).await;
    }
    let step = "the managed identity token (IMDS)";
    let mut query = vec![
        ("api-version", "2018-02-01".to_string()),
        ("resource", audience.to_string()),
    ];
    if let Some(client) = env("AZURE_CLIENT_ID") {
        query.push(("client_id", client));
    }
    let resp = http
        .get(IMDS)
        .query(&query)
        .header("Metadata", "true")
        .send()
        .await
        .map_err(|e| CloudError::login("azure", step, http_error(IMDS, &e), HINT))?;
    let t: EntraToken = answer(resp, IMDS, step, HINT).await?;
    Ok(t.access_token)
}

/// An Entra ID token by the client-credentials grant with a federated
/// token as the client assertion, at `AZURE_AUTHORITY_HOST` (else the
/// public cloud's).
async fn client_assertion(
    http: &reqwest::Client,
    tenant: &str,
    client: &str,
    assertion: &str,
    audience: &str,
) -> Result<String, CloudError> {
    let step = "the workload identity token";
    {
        let authority = env("AZURE_AUTHORITY_HOST")
            .unwrap_or_else(|| "https://login.microsoftonline.com/".into());
        let url = format!(
            "{}/{tenant}/oauth2/v2.0/token",
            authority.trim_end_matches('/')
        );
        let scope = format!("{audience}/.default");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("scope", scope.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.trim()),
        ];
        let t: EntraToken = post_form(http, &url, &form, step).await?;
        Ok(t.access_token)
    }
}

/// Posts `form` to `url` and reads its JSON answer; `step` names the call
/// in errors.
async fn post_form<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
    step: &'static str,
) -> Result<T, CloudError> {
    let resp = http
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| CloudError::login("azure", step, http_error(url, &e), HINT))?;
    answer(resp, url, step, HINT).await
}

/// The `exp` claim of a JWT, read without verifying it (only to know when
/// to renew it; the registry verifies it).
fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let exp = v.get("exp")?.as_u64()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_expire_at_their_exp_claim() {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!(
            "{}.{}.sig",
            b(r#"{"alg":"RS256"}"#),
            b(r#"{"exp":1800000000}"#)
        );
        assert_eq!(
            jwt_expiry(&t),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        );
        assert_eq!(jwt_expiry("opaque"), None);
    }
}
