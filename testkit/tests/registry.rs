//! The registry client against Debian's docker-registry (anonymous, htpasswd
//! behind TLS, token auth with a real token issuer) and, for what that
//! registry does not produce (Link pagination, 429s), a small fake server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automation::registry::{Client, ClientOptions, Keychain, Reference, RegistryError};
use base64::Engine;
use imageauto_tests::registry::{Auth, FakeServer, Pusher, Registry, Tls, TokenIssuer};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn tags(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn keychain(host: &str, user: &str, password: &str) -> Keychain {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Keychain::from_docker_config(
        format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}").as_bytes(),
        "test",
    )
    .unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_registry() {
    let reg = Registry::start(Auth::Anonymous, None);
    let pushed = tags(&["1.0.0", "1.2.3", "1.10.0", "v1.3.0", "2.0.0-rc.1"]);
    let digests = Pusher::new(&reg.url(), None, None)
        .push("team/app", &pushed, true)
        .await;
    let client = Client::new(ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/team/app", reg.host())).unwrap();
    let got = client.list_tags(&r, &Keychain::default()).await.unwrap();
    assert_eq!(sorted(got), sorted(pushed.clone()));
    // Digests of tags, as the registry stored them.
    for (tag, want) in pushed.iter().zip(&digests) {
        let r = Reference::parse(&format!("{}/team/app:{tag}", reg.host())).unwrap();
        assert_eq!(
            &client.digest(&r, &Keychain::default()).await.unwrap(),
            want
        );
    }
    // Small pages: the registry's own Link pagination.
    let small = Client::new(ClientOptions {
        insecure: true,
        page_size: 2,
        ..ClientOptions::default()
    })
    .unwrap();
    let got = small.list_tags(&r, &Keychain::default()).await.unwrap();
    assert_eq!(got.len(), 5);
    // A missing repository and a missing tag.
    let missing = Reference::parse(&format!("{}/team/nope", reg.host())).unwrap();
    let e = client
        .list_tags(&missing, &Keychain::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
    assert!(
        e.to_string().contains("team/nope") && e.to_string().contains(&reg.host()),
        "{e}"
    );
    let missing_tag = Reference::parse(&format!("{}/team/app:9.9.9", reg.host())).unwrap();
    let e = client
        .digest(&missing_tag, &Keychain::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("9.9.9"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_behind_tls() {
    let tls = Tls::new("imageauto test CA");
    let reg = Registry::start(
        Auth::Htpasswd {
            user: "ci".into(),
            password: "hunter2-secret".into(),
        },
        Some(&tls),
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:hunter2-secret")
    );
    Pusher::new(&reg.url(), Some(&tls.ca_pem), Some(basic))
        .push("app", &tags(&["1.0.0", "1.1.0"]), false)
        .await;
    let r = Reference::parse(&format!("{}/app", reg.host())).unwrap();
    let trusted = Client::new(ClientOptions {
        ca_pem: Some(tls.ca_pem.clone().into_bytes()),
        ..ClientOptions::default()
    })
    .unwrap();
    let good = keychain(&reg.host(), "ci", "hunter2-secret");
    assert_eq!(
        sorted(trusted.list_tags(&r, &good).await.unwrap()),
        tags(&["1.0.0", "1.1.0"])
    );

    // Wrong password: named as an authentication failure, with the realm,
    // and without the password.
    let bad = keychain(&reg.host(), "ci", "wrong-pass-xyz");
    let e = trusted.list_tags(&r, &bad).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains("test-realm") && !msg.contains("wrong-pass-xyz"),
        "{msg}"
    );
    // No credentials at all.
    let e = trusted
        .list_tags(&r, &Keychain::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no credentials"), "{e}");

    // A CA we do not trust: a TLS error naming the certificate.
    let untrusting = Client::new(ClientOptions::default()).unwrap();
    let e = untrusting.list_tags(&r, &good).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Tls { .. }), "{msg}");
    assert!(
        msg.contains("CN=registry.test") && msg.contains("CN=imageauto test CA"),
        "{msg}"
    );
    // The wrong CA bundle: the same.
    let other = Tls::new("some other CA");
    let wrong_ca = Client::new(ClientOptions {
        ca_pem: Some(other.ca_pem.into_bytes()),
        ..ClientOptions::default()
    })
    .unwrap();
    let e = wrong_ca.list_tags(&r, &good).await.unwrap_err();
    assert!(matches!(e, RegistryError::Tls { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_with_a_real_issuer() {
    let issuer = TokenIssuer::start("robot", "t0ken-pass");
    let reg = Registry::start(
        Auth::Token {
            realm: issuer.realm(),
            service: issuer.service.clone(),
            issuer: issuer.issuer.clone(),
            bundle_pem: issuer.bundle_pem.clone(),
        },
        None,
    );
    let push = issuer.push_token("robot", "t0ken-pass", "org/svc").await;
    Pusher::new(&reg.url(), None, Some(push))
        .push("org/svc", &tags(&["0.1.0", "0.2.0", "latest"]), false)
        .await;
    let client = Client::new(ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/org/svc", reg.host())).unwrap();
    let good = keychain(&reg.host(), "robot", "t0ken-pass");
    assert_eq!(
        sorted(client.list_tags(&r, &good).await.unwrap()),
        tags(&["0.1.0", "0.2.0", "latest"])
    );
    // The token is reused for the digest.
    let tagged = Reference::parse(&format!("{}/org/svc:0.2.0", reg.host())).unwrap();
    assert!(
        client
            .digest(&tagged, &good)
            .await
            .unwrap()
            .starts_with("sha256:")
    );
    let bad = keychain(&reg.host(), "robot", "nope-nope");
    let fresh = Client::new(ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    })
    .unwrap();
    let e = fresh.list_tags(&r, &bad).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains(&issuer.realm()) && !msg.contains("nope-nope"),
        "{msg}"
    );
}

/// Serves `total` tags in pages of `page`, with relative Link headers.
fn paginating(total: usize, page: usize, loop_back: bool) -> FakeServer {
    FakeServer::start(move |req| {
        let last: usize = req
            .query("last")
            .first()
            .map(|l| l.trim_start_matches('t').parse::<usize>().unwrap() + 1)
            .unwrap_or(0);
        let end = (last + page).min(total);
        let names: Vec<String> = (last..end).map(|i| format!("\"t{i:05}\"")).collect();
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if end < total {
            let next = if loop_back {
                "/v2/app/tags/list?n=3".to_string()
            } else {
                format!("/v2/app/tags/list?n={page}&last=t{:05}", end - 1)
            };
            headers.push(("Link".to_string(), format!("<{next}>; rel=\"next\"")));
        }
        let body = format!("{{\"name\":\"app\",\"tags\":[{}]}}", names.join(","));
        (200, headers, body.into_bytes())
    })
}

#[tokio::test]
async fn link_pagination_caps_and_loops() {
    let server = paginating(25, 3, false);
    let r = Reference::parse(&format!("127.0.0.1:{}/app", server.port)).unwrap();
    let client = Client::new(ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    })
    .unwrap();
    let got = client.list_tags(&r, &Keychain::default()).await.unwrap();
    assert_eq!(got.len(), 25);
    assert_eq!(got[24], "t00024");
    let capped = Client::new(ClientOptions {
        insecure: true,
        max_pages: 4,
        ..ClientOptions::default()
    })
    .unwrap();
    let e = capped
        .list_tags(&r, &Keychain::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::TooManyPages { cap: 4, .. }),
        "{e}"
    );
    let few = Client::new(ClientOptions {
        insecure: true,
        max_tags: 10,
        ..ClientOptions::default()
    })
    .unwrap();
    let e = few.list_tags(&r, &Keychain::default()).await.unwrap_err();
    assert!(e.to_string().contains("more than 10 tags"), "{e}");
    let tiny_body = Client::new(ClientOptions {
        insecure: true,
        max_body_bytes: 20,
        ..ClientOptions::default()
    })
    .unwrap();
    let e = tiny_body
        .list_tags(&r, &Keychain::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::BodyTooLarge { .. }), "{e}");
    let looping = paginating(25, 3, true);
    let r = Reference::parse(&format!("127.0.0.1:{}/app", looping.port)).unwrap();
    let e = client
        .list_tags(&r, &Keychain::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::PageLoop { .. }), "{e}");
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let server = {
        let seen = seen.clone();
        FakeServer::start(move |_| {
            let mut s = seen.lock().unwrap();
            s.push(Instant::now());
            if s.len() <= 2 {
                (
                    429,
                    vec![("Retry-After".into(), "1".into())],
                    b"{}".to_vec(),
                )
            } else {
                (200, vec![], b"{\"tags\":[\"a\",\"b\"]}".to_vec())
            }
        })
    };
    let r = Reference::parse(&format!("127.0.0.1:{}/app", server.port)).unwrap();
    let client = Client::new(ClientOptions {
        insecure: true,
        backoff: Duration::from_millis(10),
        ..ClientOptions::default()
    })
    .unwrap();
    assert_eq!(
        client.list_tags(&r, &Keychain::default()).await.unwrap(),
        tags(&["a", "b"])
    );
    let s = seen.lock().unwrap().clone();
    assert_eq!(s.len(), 3);
    // Each retry waited for Retry-After (1 s), not the 10 ms backoff.
    for w in s.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(900),
            "{:?}",
            w[1] - w[0]
        );
    }
}

#[tokio::test]
async fn unavailable_gives_up_after_bounded_retries() {
    let count = Arc::new(Mutex::new(0));
    let server = {
        let count = count.clone();
        FakeServer::start(move |_| {
            *count.lock().unwrap() += 1;
            (503, vec![], b"busy".to_vec())
        })
    };
    let r = Reference::parse(&format!("127.0.0.1:{}/app", server.port)).unwrap();
    let client = Client::new(ClientOptions {
        insecure: true,
        max_retries: 3,
        backoff: Duration::from_millis(5),
        ..ClientOptions::default()
    })
    .unwrap();
    let e = client
        .list_tags(&r, &Keychain::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::RateLimited { attempts: 4, .. }),
        "{e}"
    );
    assert_eq!(*count.lock().unwrap(), 4);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_named() {
    let server = FakeServer::start(|_| {
        std::thread::sleep(Duration::from_millis(1500));
        (200, vec![], b"{}".to_vec())
    });
    let r = Reference::parse(&format!("127.0.0.1:{}/app", server.port)).unwrap();
    let client = Client::new(ClientOptions {
        insecure: true,
        timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    })
    .unwrap();
    let e = client
        .list_tags(&r, &Keychain::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Timeout { .. }), "{e}");
    let port = imageauto_tests::free_port();
    let r = Reference::parse(&format!("127.0.0.1:{port}/app")).unwrap();
    let e = client
        .list_tags(&r, &Keychain::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn kubernetes_secret_credentials() {
    let mut data = BTreeMap::new();
    data.insert(
        ".dockerconfigjson".to_string(),
        br#"{"auths":{"127.0.0.1:5000":{"username":"u","password":"p"}}}"#.to_vec(),
    );
    let k = Keychain::from_secret_data(&data, "Secret apps/regcred").unwrap();
    assert!(k.lookup("127.0.0.1:5000").is_some());
}
