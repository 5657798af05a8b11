//! Server-side apply of one object at a time, and what counts as a change.

use super::*;

pub(super) fn resource_of(v: &Value) -> Result<ApiResource> {
    let api_version = v["apiVersion"].as_str().unwrap_or("");
    let kind = v["kind"].as_str().unwrap_or("");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    };
    let plural = match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "Service" => "services",
        "Deployment" => "deployments",
        "Secret" => "secrets",
        "ValidatingWebhookConfiguration" => "validatingwebhookconfigurations",
        "CustomResourceDefinition" => "customresourcedefinitions",
        other => bail!("no plural known for {other}"),
    };
    Ok(ApiResource {
        group: group.clone(),
        version: version.clone(),
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        plural: plural.to_string(),
    })
}

pub(super) fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "ValidatingWebhookConfiguration"
            | "CustomResourceDefinition"
    )
}

pub(super) fn api_for(k: &Kube, v: &Value) -> Result<Api<DynamicObject>> {
    let ar = resource_of(v)?;
    Ok(if cluster_scoped(&ar.kind) {
        Api::all_with(k.client.clone(), &ar)
    } else {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
        Api::namespaced_with(k.client.clone(), ns, &ar)
    })
}

pub(super) fn describe(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("");
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Whether `live` already holds everything of `desired` (objects: every
/// key, recursively; lists: the same length, element by element; numbers
/// by value, as a server may write `0` for `0.0`).
pub(super) fn contains_all_of(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| contains_all_of(lv, dv))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(a, b)| contains_all_of(a, b))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (l, d) => l == d,
    }
}

/// What a server keeps of `desired`: the parts of `stored` (the object as
/// the server would store it) at the places `desired` names. A field the
/// server does not know (a 1.20 apiserver and the CEL rules of a CRD) is
/// not there.
pub(super) fn kept(stored: &Value, desired: &Value) -> Value {
    match (stored, desired) {
        (Value::Object(s), Value::Object(d)) => Value::Object(
            d.iter()
                .filter_map(|(k, dv)| s.get(k).map(|sv| (k.clone(), kept(sv, dv))))
                .collect(),
        ),
        (Value::Array(s), Value::Array(d)) if s.len() == d.len() => {
            Value::Array(s.iter().zip(d).map(|(a, b)| kept(a, b)).collect())
        }
        (s, _) => s.clone(),
    }
}

/// Whether the apiserver's CRDs have `x-kubernetes-validations` (CEL rules),
/// which came with Kubernetes 1.23: an older one refuses a server-side apply
/// that names the field. When the version does not say, it is taken to.
pub(super) async fn knows_cel(k: &Kube) -> bool {
    let Ok(info) = k.client.apiserver_version().await else {
        return true;
    };
    let number = |s: &str| -> Option<u32> {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    match (number(&info.major), number(&info.minor)) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 23),
        _ => true,
    }
}

/// Removes every `x-kubernetes-validations` of a CRD; whether it held any.
pub(super) fn without_cel(v: &mut Value) -> bool {
    match v {
        Value::Object(map) => {
            let mut removed = map.remove("x-kubernetes-validations").is_some();
            for sub in map.values_mut() {
                removed |= without_cel(sub);
            }
            removed
        }
        Value::Array(items) => {
            // Every item, not only up to the first that held some.
            let mut removed = false;
            for item in items {
                removed |= without_cel(item);
            }
            removed
        }
        _ => false,
    }
}

/// Server-side apply, skipped when the object already is as desired (some
/// apiservers record a no-op apply as a change of the object): as given,
/// or as a dry run of the apply says the server would keep it. Whether it
/// was applied (false: unchanged).
pub(super) async fn apply(k: &Kube, v: &Value) -> Result<bool> {
    let api = api_for(k, v)?;
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if let Ok(Some(live)) = api.get_opt(name).await {
        let live = serde_json::to_value(&live)?;
        if contains_all_of(&live, v) {
            return Ok(false);
        }
        if let Ok(stored) = api
            .patch(name, &pp.clone().dry_run(), &Patch::Apply(v))
            .await
            && contains_all_of(&live, &kept(&serde_json::to_value(&stored)?, v))
        {
            return Ok(false);
        }
    }
    api.patch(name, &pp, &Patch::Apply(v))
        .await
        .map(|_| true)
        .map_err(|e| explain(e, &format!("applying {}", describe(v))))
}

/// How an object's apply went, in the words of the output.
pub(super) fn applied(changed: bool) -> &'static str {
    if changed { "applied" } else { "unchanged" }
}

pub(super) async fn delete(k: &Kube, v: &Value) -> Result<()> {
    let api = api_for(k, v)?;
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            outln!("✔ {} deleted", describe(v));
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(explain(e, &format!("deleting {}", describe(v)))),
    }
}
