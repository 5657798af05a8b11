//! Flux `Receiver`s whose resources are ImageRepositories, as
//! notification-controller serves them (`internal/server/`) and reconciles
//! them (`internal/controller/receiver_controller.go`): the path, how each
//! sender type proves a request ([`verify`]), which resources a request
//! annotates (the CEL filters, [`cel`]), and the status ([`status`]). Pure
//! but for the key fetches of the token-carrying types ([`jwt`]); the HTTP
//! server that uses it is [`http`].

pub mod cel;
pub mod http;
pub mod jwt;
pub mod status;
pub mod verify;

use crate::api::{Receiver, ResourceExt};
use ::cel::objects::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use status::{ReceiverSnapshot, decide};

/// Flux's `GetWebhookPath`: `/hook/` + hex sha256 of token, name and
/// namespace; the token's bytes as the Secret holds them.
pub fn webhook_path(token: &[u8], name: &str, namespace: &str) -> String {
    let mut h = Sha256::new();
    h.update(token);
    h.update(name.as_bytes());
    h.update(namespace.as_bytes());
    format!("/hook/{:x}", h.finalize())
}

/// Whether a Receiver is imageauto's to serve: every resource it names is an
/// ImageRepository (others belong to Flux's notification-controller).
pub fn is_ours(r: &Receiver) -> bool {
    !r.spec.resources.is_empty()
        && r.spec.resources.iter().all(|x| {
            x.kind == "ImageRepository"
                && x.api_version
                    .as_deref()
                    .is_none_or(|v| v.is_empty() || v.starts_with("image.toolkit.fluxcd.io/"))
        })
}

/// Flux's default apiVersion of an ImageRepository reference.
pub const IMAGE_REPOSITORY_API_VERSION: &str = "image.toolkit.fluxcd.io/v1";

/// One `spec.resources` entry, resolved as Flux's `requestReconciliation`
/// resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its index in `spec.resources` (for its filter).
    pub index: usize,
    pub api_version: String,
    pub namespace: String,
    /// A name, or `*` with `match_labels`.
    pub name: String,
    pub match_labels: BTreeMap<String, String>,
}

/// The resources of `r`, each resolved or refused with Flux's message (a
/// cross-namespace reference under `--no-cross-namespace-refs`, `*`
/// without `matchLabels`): a refused one makes the request a 500.
pub fn targets(r: &Receiver, cross_namespace_refs: bool) -> Vec<Result<Target, String>> {
    let own = r.namespace().unwrap_or_default();
    r.spec
        .resources
        .iter()
        .enumerate()
        .map(|(index, x)| {
            let namespace = match x.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => {
                    if !cross_namespace_refs && ns != own {
                        return Err("cross-namespace references are not allowed".to_string());
                    }
                    ns.to_string()
                }
                _ => own.clone(),
            };
            let match_labels = if x.name == "*" {
                x.match_labels.clone().ok_or_else(|| {
                    "matchLabels field not set when using wildcard '*' as name".to_string()
                })?
            } else {
                BTreeMap::new()
            };
            Ok(Target {
                index,
                api_version: x
                    .api_version
                    .clone()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| IMAGE_REPOSITORY_API_VERSION.to_string()),
                namespace,
                name: x.name.clone(),
                match_labels,
            })
        })
        .collect()
}

/// Flux's `isJSONContent`: one of the comma-separated media types of
/// `Content-Type` is `application/json` (stopping at one that does not
/// parse).
pub fn is_json_content(content_type: &str) -> bool {
    for v in content_type.split(',') {
        match verify::media_type(v) {
            Some(t) if t == "application/json" => return true,
            Some(_) => {}
            None => break,
        }
    }
    false
}

/// The variables the filters of a Receiver of this type may read.
pub fn filter_variables(r: &Receiver) -> &'static [&'static str] {
    if r.spec.receiver_type == crate::api::ReceiverType::GenericOidc {
        &["res", "req", "claims"]
    } else {
        &["res", "req"]
    }
}

/// The filters of one request (Flux's `newResourceFilters`): the
/// Receiver's `resourceFilter` and each resource's `filter`, over the same
/// `req` and `claims`.
pub struct Filters {
    top: Option<cel::Expression>,
    each: Vec<Option<cel::Expression>>,
    req: Value,
    claims: Option<Value>,
}

impl Filters {
    /// Compiles the expressions and reads the body as JSON (only when
    /// there is an expression, and only a JSON content type; an empty
    /// object otherwise). An error is Flux's 500.
    pub fn new(
        r: &Receiver,
        json_content: bool,
        payload: &[u8],
        claims: Option<&serde_json::Value>,
    ) -> Result<Filters, String> {
        let any = !r.spec.resource_filter.is_empty()
            || r.spec.resources.iter().any(|x| !x.filter.is_empty());
        let mut f = Filters {
            top: None,
            each: Vec::new(),
            req: cel::map([]),
            claims: claims.map(cel::from_json),
        };
        f.each = r.spec.resources.iter().map(|_| None).collect();
        if !any {
            return Ok(f);
        }
        if json_content {
            let mut values =
                serde_json::Deserializer::from_slice(payload).into_iter::<serde_json::Value>();
            let v = match values.next() {
                None => return Err("failed to parse request body as JSON: EOF".into()),
                Some(Err(e)) => return Err(format!("failed to parse request body as JSON: {e}")),
                Some(Ok(v)) => v,
            };
            match v {
                serde_json::Value::Object(_) => f.req = cel::from_json(&v),
                serde_json::Value::Null => f.req = Value::Null,
                _ => {
                    return Err(
                        "failed to parse request body as JSON: cannot unmarshal into map[string]interface {}"
                            .into(),
                    );
                }
            }
        }
        let mut vars = vec!["res", "req"];
        if claims.is_some() {
            vars.push("claims");
        }
        let compile = |s: &str| cel::Expression::compile(s, &vars, cel::Output::Bool);
        if !r.spec.resource_filter.is_empty() {
            f.top = Some(compile(&r.spec.resource_filter)?);
        }
        for (i, x) in r.spec.resources.iter().enumerate() {
            if !x.filter.is_empty() {
                f.each[i] = Some(compile(&x.filter)?);
            }
        }
        Ok(f)
    }

    /// Whether resource `index`'s filters accept `res` (Flux's
    /// `PartialObjectMetadata` as JSON): both must, when set.
    pub fn accepts(&self, index: usize, res: &serde_json::Value) -> Result<bool, String> {
        let each = self.each.get(index).and_then(Option::as_ref);
        if self.top.is_none() && each.is_none() {
            return Ok(true);
        }
        let mut vars = vec![("res", cel::from_json(res)), ("req", self.req.clone())];
        if let Some(c) = &self.claims {
            vars.push(("claims", c.clone()));
        }
        for e in self.top.iter().chain(each) {
            if !e.evaluate_bool(&vars)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A resource as Flux's filters read it: a `PartialObjectMetadata`
/// (apiVersion, kind, metadata).
pub fn partial_metadata(
    api_version: &str,
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": serde_json::to_value(meta).unwrap_or_default(),
    })
}

/// The repositories a payload says were pushed to, normalised, from the
/// shapes registries send: the CNCF distribution registry's notification
/// envelope (`events[].target.repository` at `request.host`), Harbor (`event_data.resources[].resource_url`), Docker
/// Hub (`repository.repo_name`), Quay (`docker_url`), ACR
/// (`request.host` + `target.repository`). `None` for anything else.
///
/// imageauto's extension: a request whose payload names some of the
/// Receiver's ImageRepositories annotates only those (see
/// [`narrow`]).
pub fn registry_pushes(body: &[u8]) -> Option<Vec<String>> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let known = v["events"].is_array()
        || v["event_data"]["resources"].is_array()
        || v["repository"]["repo_name"].is_string()
        || v["docker_url"].is_string()
        || (v["target"]["repository"].is_string() && v["request"]["host"].is_string());
    if !known {
        return None;
    }
    let mut out = Vec::new();
    let mut add = |s: &str| {
        if let Some(n) = crate::registry::normalized_repository(s)
            && !out.contains(&n)
        {
            out.push(n);
        }
    };
    // Every event names its repository: blob uploads and pulls too (a
    // payload about a repository narrows to it; one about none of the
    // Receiver's annotates them all).
    let mut pushed = |e: &serde_json::Value| {
        if let (Some(host), Some(repo)) = (
            e["request"]["host"].as_str(),
            e["target"]["repository"].as_str(),
        ) {
            add(&format!("{host}/{repo}"));
        }
    };
    if let Some(events) = v["events"].as_array() {
        events.iter().for_each(&mut pushed);
    } else {
        pushed(&v);
    }
    if let Some(resources) = v["event_data"]["resources"].as_array() {
        for r in resources {
            if let Some(url) = r["resource_url"].as_str() {
                add(url);
            }
        }
    }
    if let Some(name) = v["repository"]["repo_name"].as_str() {
        add(name);
    }
    if let Some(url) = v["docker_url"].as_str() {
        add(url);
    }
    Some(out)
}

/// The extension's rule, which never loses a scan Flux would request for
/// a repository the payload is about: of the `selected` repositories
/// (those Flux annotates, as `(index, normalised image)`), only those the
/// payload names when it names at least one of them; all of them
/// otherwise (a payload that names none of them, or none at all, or that
/// cannot be read).
pub fn narrow(selected: &[(usize, Option<String>)], pushes: Option<&[String]>) -> Vec<usize> {
    let all = || selected.iter().map(|(i, _)| *i).collect();
    let Some(pushes) = pushes else {
        return all();
    };
    let named: Vec<usize> = selected
        .iter()
        .filter(|(_, image)| image.as_ref().is_some_and(|i| pushes.contains(i)))
        .map(|(i, _)| *i)
        .collect();
    if named.is_empty() { all() } else { named }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(spec: serde_json::Value) -> Receiver {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1",
            "kind": "Receiver",
            "metadata": {"name": "reg", "namespace": "apps"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn paths_as_flux_computes_them() {
        // api/v1/receiver_types.go GetWebhookPath: sha256(token+name+namespace).
        let p = webhook_path(b"token", "receiver", "ns");
        let mut hsh = Sha256::new();
        hsh.update(b"tokenreceiverns");
        assert_eq!(p, format!("/hook/{:x}", hsh.finalize()));
        // The token as stored: a trailing newline changes the path.
        assert_ne!(webhook_path(b"token\n", "receiver", "ns"), p);
    }

    #[test]
    fn resources_resolve_as_fluxs_request_reconciliation() {
        // internal/server/receiver_handlers.go requestReconciliation and
        // notifyDynamicResources.
        let r = receiver(serde_json::json!({
            "type": "generic", "secretRef": {"name": "s"},
            "resources": [
                {"kind": "ImageRepository", "name": "web"},
                {"kind": "ImageRepository", "name": "db", "namespace": "other"},
                {"kind": "ImageRepository", "name": "*"},
                {"kind": "ImageRepository", "name": "*", "matchLabels": {}},
                {"apiVersion": "image.toolkit.fluxcd.io/v1beta2", "kind": "ImageRepository", "name": "x", "namespace": "apps"}
            ]
        }));
        let t = targets(&r, true);
        assert_eq!(t[0].as_ref().unwrap().namespace, "apps");
        assert_eq!(
            t[0].as_ref().unwrap().api_version,
            IMAGE_REPOSITORY_API_VERSION
        );
        assert_eq!(t[1].as_ref().unwrap().namespace, "other");
        assert_eq!(
            t[2],
            Err("matchLabels field not set when using wildcard '*' as name".into())
        );
        assert!(t[3].as_ref().unwrap().match_labels.is_empty());
        let t = targets(&r, false);
        assert_eq!(
            t[1],
            Err("cross-namespace references are not allowed".into())
        );
        // Its own namespace named explicitly is not cross-namespace.
        assert!(t[4].is_ok());
        assert_eq!(
            t[4].as_ref().unwrap().api_version,
            "image.toolkit.fluxcd.io/v1beta2"
        );
    }

    #[test]
    fn filters_as_fluxs_resource_filters() {
        // internal/server/receiver_resource_filter.go and its tests: the
        // top filter and the resource's both accept; the body is read only
        // as JSON content.
        let r = receiver(serde_json::json!({
            "type": "generic", "secretRef": {"name": "s"},
            "resourceFilter": "res.metadata.name != 'skip'",
            "resources": [
                {"kind": "ImageRepository", "name": "*", "matchLabels": {},
                 "filter": "has(req.image) && req.image == res.metadata.annotations.image"},
                {"kind": "ImageRepository", "name": "other"}
            ]
        }));
        let res = |name: &str, image: &str| {
            serde_json::json!({"apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
                "metadata": {"name": name, "annotations": {"image": image}}})
        };
        let f = Filters::new(&r, true, br#"{"image": "web"}"#, None).unwrap();
        assert_eq!(f.accepts(0, &res("a", "web")), Ok(true));
        assert_eq!(f.accepts(0, &res("a", "db")), Ok(false));
        assert_eq!(f.accepts(0, &res("skip", "web")), Ok(false));
        assert_eq!(f.accepts(1, &res("other", "db")), Ok(true));
        // Not JSON content: `req` is empty.
        let f = Filters::new(&r, false, b"junk", None).unwrap();
        assert_eq!(f.accepts(0, &res("a", "web")), Ok(false));
        // JSON content that is not JSON: Flux's 500.
        assert!(
            Filters::new(&r, true, b"junk", None)
                .err()
                .unwrap()
                .starts_with("failed to parse request body as JSON")
        );
        assert!(is_json_content("application/json; charset=utf-8"));
        assert!(is_json_content("text/plain, application/json"));
        assert!(!is_json_content("text/plain"));
        assert!(!is_json_content(""));
    }

    #[test]
    fn the_extension_never_loses_a_scan() {
        let sel = vec![
            (0, Some("127.0.0.1:5000/team/web".to_string())),
            (1, Some("127.0.0.1:5000/team/db".to_string())),
        ];
        let web = vec!["127.0.0.1:5000/team/web".to_string()];
        assert_eq!(narrow(&sel, Some(&web)), vec![0]);
        let other = vec!["127.0.0.1:5000/team/x".to_string()];
        assert_eq!(narrow(&sel, Some(&other)), vec![0, 1]);
        assert_eq!(narrow(&sel, Some(&[])), vec![0, 1]);
        assert_eq!(narrow(&sel, None), vec![0, 1]);
    }

    #[test]
    fn payloads_say_which_repository() {
        let one = |s: &str| Some(vec![s.to_string()]);
        assert_eq!(
            registry_pushes(br#"{"repository":{"repo_name":"org/app"}}"#),
            one("docker.io/org/app")
        );
        assert_eq!(
            registry_pushes(br#"{"docker_url":"quay.io/org/app"}"#),
            one("quay.io/org/app")
        );
        assert_eq!(
            registry_pushes(br#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[{"resource_url":"harbor.example.com/lib/app:1.0"}]}}"#),
            one("harbor.example.com/lib/app")
        );
        assert_eq!(
            registry_pushes(br#"{"action":"push","target":{"repository":"app","tag":"1"},"request":{"host":"r.azurecr.io"}}"#),
            one("r.azurecr.io/app")
        );
        assert_eq!(
            registry_pushes(br#"{"events":[{"action":"push","target":{"mediaType":"application/octet-stream","repository":"x"},"request":{"host":"h:1"}}]}"#),
            one("h:1/x")
        );
        assert_eq!(registry_pushes(br#"{"events":[]}"#), Some(vec![]));
        assert_eq!(registry_pushes(b"\xff"), None);
        assert_eq!(registry_pushes(b"{}"), None);
    }
}
