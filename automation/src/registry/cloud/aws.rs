//! ECR logins through AWS's own SDK: the default credential chain
//! (environment, web identity token file through STS
//! `AssumeRoleWithWebIdentity` as IRSA sets it up, EKS Pod Identity and
//! ECS container credentials, the shared config files, instance metadata),
//! then ECR `GetAuthorizationToken` in the registry's region. The SDK
//! honours `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_ECR` and
//! `AWS_ENDPOINT_URL_STS` (VPC endpoints, and the tests' loopback
//! servers).

use super::{CloudError, Login, ServiceAccountIdentity, Subject};
use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls;
use base64::Engine;
use std::time::SystemTime;

const HINT: &str = "the pod's AWS identity (IRSA: the ServiceAccount's eks.amazonaws.com/role-arn and the role's trust policy; EKS Pod Identity association; or the node's instance role) and that the role may call ecr:GetAuthorizationToken";

/// Flux's pattern of a role ARN (fluxcd/pkg `auth/aws/options.go`).
const ROLE_ARN_PATTERN: &str = r"^arn:aws[\w-]*:iam::[0-9]{1,30}:role/.{1,200}$";
const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// The role a ServiceAccount names, or Flux's error.
pub(super) fn role_arn(sa: &ServiceAccountIdentity) -> Result<String, CloudError> {
    let arn = sa.annotation(ROLE_ANNOTATION).unwrap_or_default();
    let ok = regex::Regex::new(ROLE_ARN_PATTERN).is_ok_and(|re| re.is_match(arn));
    if ok {
        Ok(arn.to_string())
    } else {
        Err(CloudError::ServiceAccount {
            namespace: sa.namespace.clone(),
            name: sa.name.clone(),
            detail: format!(
                "failed to get provider identity from service account '{}/{}' annotations: invalid {ROLE_ANNOTATION} annotation: '{arn}'. must match {ROLE_ARN_PATTERN}",
                sa.namespace, sa.name
            ),
        })
    }
}

fn http_client() -> aws_sdk_ecr::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// A login to the ECR registry `registry` (Flux's host pattern already
/// checked by the caller): with the process's identity, or with a
/// ServiceAccount's (STS `AssumeRoleWithWebIdentity` of the role it names,
/// with its Kubernetes token, session `<sa>.<ns>.<region>.fluxcd.io` as
/// Flux names it).
pub(super) async fn login(registry: &str, subject: Subject<'_>) -> Result<Login, CloudError> {
    let region = super::aws_region(registry)?;
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.clone()))
        .http_client(http_client());
    let config = match &subject {
        None => loader.load().await,
        Some(_) => loader.no_credentials().load().await,
    };
    let mut ecr_config = aws_sdk_ecr::config::Builder::from(&config);
    if let Some((sa, token)) = subject {
        let role = role_arn(sa)?;
        let session = format!("{}.{}.{region}.fluxcd.io", sa.name, sa.namespace);
        let sts = aws_sdk_sts::Client::new(&config);
        let out = sts
            .assume_role_with_web_identity()
            .role_arn(&role)
            .role_session_name(session)
            .web_identity_token(token)
            .send()
            .await
            .map_err(|e| CloudError::ServiceAccount {
                namespace: sa.namespace.clone(),
                name: sa.name.clone(),
                detail: format!(
                    "failed to create provider access token for service account '{}/{}': STS AssumeRoleWithWebIdentity of {role}: {}; check the role's trust policy (the cluster's OIDC provider and the subject system:serviceaccount:{}:{})",
                    sa.namespace,
                    sa.name,
                    sdk_error(&e),
                    sa.namespace,
                    sa.name
                ),
            })?;
        let c = out.credentials().ok_or_else(|| CloudError::ServiceAccount {
            namespace: sa.namespace.clone(),
            name: sa.name.clone(),
            detail: format!(
                "failed to create provider access token for service account '{}/{}': credentials are nil",
                sa.namespace, sa.name
            ),
        })?;
        let creds = aws_sdk_ecr::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            SystemTime::try_from(*c.expiration()).ok(),
            "sts-web-identity",
        );
        ecr_config = ecr_config.credentials_provider(creds);
    }
    let ecr = aws_sdk_ecr::Client::from_conf(ecr_config.build());
    let out =
        ecr.get_authorization_token().send().await.map_err(|e| {
            CloudError::login("aws", "ECR GetAuthorizationToken", sdk_error(&e), HINT)
        })?;
    let data = out.authorization_data().first().ok_or_else(|| {
        CloudError::login(
            "aws",
            "ECR GetAuthorizationToken",
            "no authorization data returned",
            HINT,
        )
    })?;
    let token = data.authorization_token().unwrap_or_default();
    let (username, password) = decode_token(token)?;
    let expires = data
        .expires_at()
        .and_then(|t| SystemTime::try_from(*t).ok());
    Ok(Login {
        username,
        password,
        expires,
    })
}

/// ECR's token is base64 of `AWS:<password>`.
fn decode_token(token: &str) -> Result<(String, String), CloudError> {
    let bad = || {
        CloudError::login(
            "aws",
            "ECR GetAuthorizationToken",
            "the authorization token is not base64 of user:password",
            HINT,
        )
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (user, pass) = text.split_once(':').ok_or_else(bad)?;
    if user.is_empty() || pass.is_empty() {
        return Err(bad());
    }
    Ok((user.to_string(), pass.to_string()))
}

/// The SDK's error with its cause chain and the service's code and message,
/// which name what was refused (`ExpiredTokenException`,
/// `AccessDeniedException: … is not authorized to perform …`); the SDK
/// puts no credential in them.
fn sdk_error<E, R>(e: &aws_sdk_ecr::error::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_sdk_ecr::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_ecr::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => chain(err),
            }
        }
        other => chain(other),
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::errors::with_causes(e.to_string(), e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_tokens_are_user_and_password() {
        let t = base64::engine::general_purpose::STANDARD.encode("AWS:s3cr3t:with:colons");
        assert_eq!(
            decode_token(&t).unwrap(),
            ("AWS".to_string(), "s3cr3t:with:colons".to_string())
        );
        let e = decode_token("not base64!").unwrap_err().to_string();
        assert!(e.contains("not base64 of user:password"), "{e}");
        assert!(e.contains("provider aws"), "{e}");
    }
}
