//! The cloud logins of `automation::registry::cloud` against stand-ins of
//! the services, each test inside a network namespace of its own (fixed
//! ports there are free; the clouds' names resolve to loopback): renewal
//! before expiry, a ServiceAccount's identity (Flux's object-level
//! workload identity) and its gate, workload identity federation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automation::api::Provider;
use automation::registry::Credentials;
use automation::registry::cloud::{CloudLogins, GATE_OFF, ServiceAccountIdentity};
use base64::Engine;
use imageauto_tests::cloud::{Front, isolated, tls_env, tls_from_env};
use imageauto_tests::registry::{FakeServer, Reply, Request};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fn rt() -> tokio::runtime::Runtime {
    automation::registry::tls::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn json(status: u16, body: String) -> Reply {
    (
        status,
        vec![("Content-Type".into(), "application/json".into())],
        body.into_bytes(),
    )
}

fn form(req: &Request) -> BTreeMap<String, String> {
    let r = Request {
        method: String::new(),
        path: String::new(),
        query_string: String::from_utf8_lossy(&req.body).into_owned(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    r.query_string
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, _)| (k.to_string(), r.query(k).pop().unwrap_or_default()))
        .collect()
}

fn password(c: Option<Credentials>) -> (String, String) {
    match c {
        Some(Credentials::Basic { username, password }) => (username, password),
        other => panic!("not a user and password: {other:?}"),
    }
}

async fn no_token(_: Vec<String>) -> Result<String, String> {
    Err("not asked".into())
}

/// ECR's answer: `AWS:<password>`, expiring in `life` seconds.
fn ecr_answer(password: &str, life: f64) -> Reply {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    (
        200,
        vec![("Content-Type".into(), "application/x-amz-json-1.1".into())],
        format!(
            r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":{},"proxyEndpoint":"https://{ECR}"}}]}}"#,
            now() + life
        )
        .into_bytes(),
    )
}

/// A token that expires soon is used while it is good, and fetched anew
/// before it expires (kept until halfway through a short life).
#[test]
fn ecr_tokens_are_renewed_before_they_expire() {
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
        ),
        ("AWS_ENDPOINT_URL_ECR", "http://127.0.0.1:8001".to_string()),
    ];
    if !isolated("ecr_tokens_are_renewed_before_they_expire", &[ECR], &env) {
        return;
    }
    let calls = Arc::new(Mutex::new(0));
    let _ecr = {
        let calls = calls.clone();
        FakeServer::start_on("127.0.0.1:8001", move |req: &Request| {
            let auth = req.header("authorization").unwrap_or_default();
            assert!(auth.contains("Credential=AKIDEXAMPLE/"), "{auth}");
            assert!(auth.contains("/eu-west-1/ecr/aws4_request"), "{auth}");
            let mut n = calls.lock().unwrap();
            *n += 1;
            ecr_answer(&format!("password-{n}"), 4.0)
        })
    };
    let logins = CloudLogins::new(false);
    let rt = rt();
    let get = || {
        password(
            rt.block_on(logins.credentials(Provider::Aws, ECR, None, no_token))
                .unwrap(),
        )
    };
    assert_eq!(get(), ("AWS".into(), "password-1".into()));
    assert_eq!(get(), ("AWS".into(), "password-1".into()));
    assert_eq!(*calls.lock().unwrap(), 1);
    // Four seconds of life: renewed after two, before it expires.
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(get(), ("AWS".into(), "password-2".into()));
    assert_eq!(*calls.lock().unwrap(), 2);
}

/// With the gate on, a ServiceAccount's role: its Kubernetes token for
/// `sts.amazonaws.com` goes to STS `AssumeRoleWithWebIdentity` with the
/// role of its `eks.amazonaws.com/role-arn` and Flux's session name; ECR is
/// asked with the role's credentials. With the gate off, Flux's error;
/// with a bad annotation, Flux's error naming it.
#[test]
fn ecr_with_a_service_accounts_role() {
    let env = [
        ("AWS_ENDPOINT_URL_ECR", "http://127.0.0.1:8001".to_string()),
        ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:8002".to_string()),
    ];
    if !isolated("ecr_with_a_service_accounts_role", &[ECR], &env) {
        return;
    }
    let _sts = FakeServer::start_on("127.0.0.1:8002", |req: &Request| {
        let f = form(req);
        assert_eq!(f["Action"], "AssumeRoleWithWebIdentity");
        assert_eq!(f["RoleArn"], "arn:aws:iam::123456789012:role/team-ecr");
        assert_eq!(f["RoleSessionName"], "app-sa.team.eu-west-1.fluxcd.io");
        if f["WebIdentityToken"] != "k8s-token-for-sts" {
            return (
                400,
                vec![("Content-Type".into(), "text/xml".into())],
                b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>No OpenIDConnect provider found in your account</Message></Error></ErrorResponse>".to_vec(),
            );
        }
        (
            200,
            vec![("Content-Type".into(), "text/xml".into())],
            br#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAROLEKEY</AccessKeyId><SecretAccessKey>role-secret</SecretAccessKey><SessionToken>role-session</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"#.to_vec(),
        )
    });
    let _ecr = FakeServer::start_on("127.0.0.1:8001", |req: &Request| {
        let auth = req.header("authorization").unwrap_or_default();
        assert!(auth.contains("Credential=ASIAROLEKEY/"), "{auth}");
        assert_eq!(
            req.header("x-amz-security-token").as_deref(),
            Some("role-session")
        );
        ecr_answer("role-password", 3600.0)
    });
    let sa = |arn: &str| ServiceAccountIdentity {
        namespace: "team".into(),
        name: "app-sa".into(),
        annotations: [("eks.amazonaws.com/role-arn".to_string(), arn.to_string())].into(),
    };
    let good = sa("arn:aws:iam::123456789012:role/team-ecr");
    let rt = rt();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let token = |audiences: Vec<String>| {
        let asked = asked.clone();
        async move {
            asked.lock().unwrap().push(audiences);
            Ok::<_, String>("k8s-token-for-sts".to_string())
        }
    };

    let off = CloudLogins::new(false);
    let e = rt
        .block_on(off.credentials(Provider::Aws, ECR, Some(&good), token))
        .unwrap_err();
    assert_eq!(e.to_string(), GATE_OFF);

    let on = CloudLogins::new(true);
    let got = rt
        .block_on(on.credentials(Provider::Aws, ECR, Some(&good), token))
        .unwrap();
    assert_eq!(password(got), ("AWS".into(), "role-password".into()));
    assert_eq!(
        *asked.lock().unwrap(),
        [vec!["sts.amazonaws.com".to_string()]]
    );

    let bad = sa("team-ecr");
    let e = rt
        .block_on(on.credentials(Provider::Aws, ECR, Some(&bad), token))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid eks.amazonaws.com/role-arn annotation: 'team-ecr'. must match"),
        "{e}"
    );

    // STS refusing the token: the ServiceAccount, STS's code, what to check.
    let refused = |_: Vec<String>| async { Ok::<_, String>("a-token-sts-refuses".to_string()) };
    let other = ServiceAccountIdentity {
        name: "other-sa".into(),
        ..good.clone()
    };
    let e = rt
        .block_on(on.credentials(Provider::Aws, ECR, Some(&other), refused))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("failed to create provider access token for service account 'team/other-sa'"),
        "{e}"
    );
    assert!(!e.contains("a-token-sts-refuses"), "{e}");
}

/// The metadata server's token (GKE): kept while good, renewed before it
/// expires.
#[test]
fn gcp_metadata_tokens_are_renewed() {
    if !isolated("gcp_metadata_tokens_are_renewed", &[], &[]) {
        return;
    }
    let calls = Arc::new(Mutex::new(0));
    let _metadata = {
        let calls = calls.clone();
        FakeServer::start_on("169.254.169.254:80", move |req: &Request| {
            assert_eq!(req.header("metadata-flavor").as_deref(), Some("Google"));
            let mut n = calls.lock().unwrap();
            *n += 1;
            json(
                200,
                format!(
                    r#"{{"access_token":"gcp-token-{n}","expires_in":2,"token_type":"Bearer"}}"#
                ),
            )
        })
    };
    let logins = CloudLogins::new(false);
    let rt = rt();
    let get = || {
        password(
            rt.block_on(logins.credentials(Provider::Gcp, "gcr.io", None, no_token))
                .unwrap(),
        )
    };
    assert_eq!(get(), ("oauth2accesstoken".into(), "gcp-token-1".into()));
    assert_eq!(get().1, "gcp-token-1");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(get().1, "gcp-token-2");
    assert_eq!(*calls.lock().unwrap(), 2);
}

/// Workload identity federation from a credentials file
/// (`external_account`): the subject token from its file, exchanged at
/// its STS URL (RFC 8693 form), then for the service account's token.
#[test]
fn gcp_workload_identity_federation() {
    let dir = std::env::temp_dir().join(format!("imageauto-gcp-{}", std::process::id()));
    let creds = dir.join("credentials.json");
    if !imageauto_tests::cloud::inside() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("subject"), "oidc-subject-token\n").unwrap();
        std::fs::write(
            &creds,
            format!(
                r#"{{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"http://127.0.0.1:8003/v1/token","service_account_impersonation_url":"http://127.0.0.1:8003/v1/projects/-/serviceAccounts/reader@proj.iam.gserviceaccount.com:generateAccessToken","credential_source":{{"file":"{}"}}}}"#,
                dir.join("subject").display()
            ),
        )
        .unwrap();
    }
    let env = [(
        "GOOGLE_APPLICATION_CREDENTIALS",
        creds.display().to_string(),
    )];
    let passed = isolated("gcp_workload_identity_federation", &[], &env);
    if !passed {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let _google = FakeServer::start_on("127.0.0.1:8003", |req: &Request| {
        if req.path == "/v1/token" {
            let f = form(req);
            assert_eq!(
                f["grant_type"],
                "urn:ietf:params:oauth:grant-type:token-exchange"
            );
            assert_eq!(f["subject_token"], "oidc-subject-token");
            assert_eq!(
                f["subject_token_type"],
                "urn:ietf:params:oauth:token-type:jwt"
            );
            assert_eq!(
                f["requested_token_type"],
                "urn:ietf:params:oauth:token-type:access_token"
            );
            assert!(f["audience"].starts_with("//iam.googleapis.com/projects/1/"));
            return json(
                200,
                r#"{"access_token":"federated","expires_in":3600,"token_type":"Bearer"}"#.into(),
            );
        }
        assert_eq!(
            req.path,
            "/v1/projects/-/serviceAccounts/reader@proj.iam.gserviceaccount.com:generateAccessToken"
        );
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Bearer federated")
        );
        json(
            200,
            r#"{"accessToken":"impersonated","expireTime":"2099-01-01T00:00:00Z"}"#.into(),
        )
    });
    let logins = CloudLogins::new(false);
    let got = rt()
        .block_on(logins.credentials(Provider::Gcp, "europe-docker.pkg.dev", None, no_token))
        .unwrap();
    assert_eq!(
        password(got),
        ("oauth2accesstoken".into(), "impersonated".into())
    );
}

const ACR: &str = "team.azurecr.io";

/// With the gate on, a ServiceAccount's Azure identity: its Kubernetes
/// token for `api://AzureADTokenExchange` is the client assertion for the
/// tenant and client its annotations name; the Entra ID token is exchanged
/// at the registry's own host. Missing annotations are Flux's errors.
#[test]
fn acr_with_a_service_accounts_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = if imageauto_tests::cloud::inside() {
        Vec::new()
    } else {
        tls_env(&[ACR], dir.path())
    };
    env.push(("AZURE_AUTHORITY_HOST", "http://127.0.0.1:8004/".to_string()));
    if !isolated("acr_with_a_service_accounts_identity", &[ACR], &env) {
        return;
    }
    let _entra = FakeServer::start_on("127.0.0.1:8004", |req: &Request| {
        assert_eq!(req.path, "/tenant-9/oauth2/v2.0/token");
        let f = form(req);
        assert_eq!(f["client_id"], "client-9");
        assert_eq!(f["client_assertion"], "k8s-token-for-azure");
        assert_eq!(f["scope"], "https://containerregistry.azure.net/.default");
        json(
            200,
            r#"{"access_token":"entra-9","expires_in":3600}"#.into(),
        )
    });
    let exchange = FakeServer::start_on("127.0.0.1:8005", |req: &Request| {
        let f = form(req);
        assert_eq!(f["service"], ACR);
        assert_eq!(f["access_token"], "entra-9");
        json(200, r#"{"refresh_token":"acr-refresh-9"}"#.into())
    });
    let _front = Front::start(&tls_from_env(), &[("/oauth2/", exchange.port)], 8006);
    let sa = |annotations: &[(&str, &str)]| ServiceAccountIdentity {
        namespace: "team".into(),
        name: "acr-sa".into(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let good = sa(&[
        ("azure.workload.identity/client-id", "client-9"),
        ("azure.workload.identity/tenant-id", "tenant-9"),
    ]);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let token = |audiences: Vec<String>| {
        let asked = asked.clone();
        async move {
            asked.lock().unwrap().push(audiences);
            Ok::<_, String>("k8s-token-for-azure".to_string())
        }
    };
    let logins = CloudLogins::new(true);
    let rt = rt();
    let got = rt
        .block_on(logins.credentials(Provider::Azure, ACR, Some(&good), token))
        .unwrap();
    assert_eq!(
        password(got),
        (
            "00000000-0000-0000-0000-000000000000".into(),
            "acr-refresh-9".into()
        )
    );
    assert_eq!(
        *asked.lock().unwrap(),
        [vec!["api://AzureADTokenExchange".to_string()]]
    );
    let e = rt
        .block_on(logins.credentials(
            Provider::Azure,
            ACR,
            Some(&sa(&[("azure.workload.identity/client-id", "client-9")])),
            token,
        ))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("azure tenant ID is not set in the service account annotation azure.workload.identity/tenant-id"),
        "{e}"
    );
}

/// With the gate on, a ServiceAccount's GCP identity outside GKE: its
/// Kubernetes token for the workload identity provider its annotation
/// names, exchanged at Google's STS (sts.googleapis.com), then for the
/// service account it impersonates (iamcredentials.googleapis.com).
#[test]
fn gcp_with_a_service_accounts_identity() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["sts.googleapis.com", "iamcredentials.googleapis.com"];
    let env = if imageauto_tests::cloud::inside() {
        Vec::new()
    } else {
        tls_env(&names, dir.path())
    };
    if !isolated("gcp_with_a_service_accounts_identity", &names, &env) {
        return;
    }
    let google = FakeServer::start_on("127.0.0.1:8007", |req: &Request| {
        if req.path == "/v1/token" {
            assert_eq!(req.header("host").as_deref(), Some("sts.googleapis.com"));
            let f = form(req);
            assert_eq!(f["subject_token"], "k8s-token-for-gcp");
            assert_eq!(
                f["audience"],
                "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/cluster"
            );
            return json(
                200,
                r#"{"access_token":"federated-gcp","expires_in":3600}"#.into(),
            );
        }
        assert_eq!(
            req.header("host").as_deref(),
            Some("iamcredentials.googleapis.com")
        );
        assert_eq!(
            req.path,
            "/v1/projects/-/serviceAccounts/puller@proj.iam.gserviceaccount.com:generateAccessToken"
        );
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Bearer federated-gcp")
        );
        json(
            200,
            r#"{"accessToken":"gcp-sa-token","expireTime":"2099-01-01T00:00:00Z"}"#.into(),
        )
    });
    let _front = Front::start(&tls_from_env(), &[], google.port);
    let sa = ServiceAccountIdentity {
        namespace: "team".into(),
        name: "gar-sa".into(),
        annotations: [
            (
                "gcp.auth.fluxcd.io/workload-identity-provider".to_string(),
                "projects/123/locations/global/workloadIdentityPools/pool/providers/cluster"
                    .to_string(),
            ),
            (
                "iam.gke.io/gcp-service-account".to_string(),
                "puller@proj.iam.gserviceaccount.com".to_string(),
            ),
        ]
        .into(),
    };
    let asked = Arc::new(Mutex::new(Vec::new()));
    let token = |audiences: Vec<String>| {
        let asked = asked.clone();
        async move {
            asked.lock().unwrap().push(audiences);
            Ok::<_, String>("k8s-token-for-gcp".to_string())
        }
    };
    let logins = CloudLogins::new(true);
    let got = rt()
        .block_on(logins.credentials(Provider::Gcp, "europe-docker.pkg.dev", Some(&sa), token))
        .unwrap();
    assert_eq!(
        password(got),
        ("oauth2accesstoken".into(), "gcp-sa-token".into())
    );
    assert_eq!(
        *asked.lock().unwrap(),
        [vec!["//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/cluster".to_string()]]
    );
}

/// Without workload identity's environment, the managed identity's token
/// from IMDS (`Metadata: true`, the registry cloud's resource, the
/// user-assigned identity of `AZURE_CLIENT_ID`), then the exchange.
#[test]
fn acr_with_managed_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = if imageauto_tests::cloud::inside() {
        Vec::new()
    } else {
        tls_env(&[ACR], dir.path())
    };
    env.push(("AZURE_CLIENT_ID", "user-assigned-1".to_string()));
    if !isolated("acr_with_managed_identity", &[ACR], &env) {
        return;
    }
    let _imds = FakeServer::start_on("169.254.169.254:80", |req: &Request| {
        if req.header("metadata").as_deref() != Some("true") {
            return json(400, r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#.into());
        }
        assert_eq!(req.path, "/metadata/identity/oauth2/token");
        assert_eq!(
            req.query("resource"),
            ["https://containerregistry.azure.net"]
        );
        assert_eq!(req.query("client_id"), ["user-assigned-1"]);
        json(
            200,
            r#"{"access_token":"imds-token","expires_on":"1999999999"}"#.into(),
        )
    });
    let exchange = FakeServer::start_on("127.0.0.1:8005", |req: &Request| {
        let f = form(req);
        assert_eq!(f["access_token"], "imds-token");
        json(200, r#"{"refresh_token":"acr-refresh-imds"}"#.into())
    });
    let _front = Front::start(&tls_from_env(), &[("/oauth2/", exchange.port)], 8006);
    let got = rt()
        .block_on(CloudLogins::new(false).credentials(Provider::Azure, ACR, None, no_token))
        .unwrap();
    assert_eq!(password(got).1, "acr-refresh-imds");
}
