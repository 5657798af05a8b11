//! AdmissionReview on the wire: `admission.k8s.io/v1` and `v1beta1` (the
//! same shape), decoded into one [`Review`] and answered in the version the
//! request used, with its uid.
//!
//! Only the fields the rules read are decoded; the rest (options, ...) is
//! skipped. The object and oldObject stay JSON values: the workload
//! rule reads a few paths of any workload kind, the image-kind rule decodes
//! them into the core's typed API. Kept instead of `kube::core::admission`
//! for that, for the 400 that says what a body lacks, and for a lenient
//! `userInfo` (the README's admission section says so).

use crate::verdict::Verdict;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API group of AdmissionReview.
pub const GROUP: &str = "admission.k8s.io";

/// The served AdmissionReview versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewVersion {
    V1,
    V1Beta1,
}

impl ReviewVersion {
    /// `admission.k8s.io/v1` or `admission.k8s.io/v1beta1`.
    pub fn api_version(self) -> &'static str {
        match self {
            ReviewVersion::V1 => "admission.k8s.io/v1",
            ReviewVersion::V1Beta1 => "admission.k8s.io/v1beta1",
        }
    }

    fn parse(api_version: &str) -> Option<Self> {
        match api_version {
            "admission.k8s.io/v1" => Some(ReviewVersion::V1),
            "admission.k8s.io/v1beta1" => Some(ReviewVersion::V1Beta1),
            _ => None,
        }
    }
}

/// A decoded AdmissionReview: its version and its request.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    pub version: ReviewVersion,
    pub request: AdmissionRequest,
}

/// The operation under admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// Group, version and kind of the object under admission.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

impl GroupVersionKind {
    /// `group/version`, or `version` alone for the core group (`v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The request of an AdmissionReview, as far as the rules read it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the answer.
    pub uid: String,
    /// The kind of the object, in the version the webhook is registered for.
    pub kind: GroupVersionKind,
    /// Set for a sub-resource (`status`, `scale`, `ephemeralcontainers`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub operation: Operation,
    /// The object after the operation (CREATE, UPDATE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// The object before the operation (UPDATE, DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Who sent the request to the apiserver; `None` when absent or not of
    /// the expected shape (the rules then know no one).
    #[serde(
        default,
        deserialize_with = "lenient_user_info",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_info: Option<UserInfo>,
}

/// The requester, as the apiserver authenticated it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

fn lenient_user_info<'de, D>(d: D) -> Result<Option<UserInfo>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

impl AdmissionRequest {
    /// The namespace of the object: the request's, else the object's own.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                self.object
                    .as_ref()
                    .and_then(|o| o.pointer("/metadata/namespace"))
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
            })
    }

    /// The requester's user name (`system:serviceaccount:kube-system:
    /// replicaset-controller`), empty when unknown.
    pub fn username(&self) -> &str {
        self.user_info.as_ref().map_or("", |u| u.username.as_str())
    }

    /// The name of the object: the object's own, else the request's.
    pub fn name(&self) -> Option<&str> {
        self.object
            .as_ref()
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .or(self.name.as_deref().filter(|n| !n.is_empty()))
    }
}

/// Why a body is not an AdmissionReview the webhook can answer.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is empty: send an AdmissionReview (admission.k8s.io/v1) as JSON")]
    Empty,
    #[error("the body is not JSON: {0}")]
    Json(serde_json::Error),
    #[error("the body is JSON but not an object: send an AdmissionReview")]
    NotAnObject,
    #[error("kind is {0:?}, expected AdmissionReview")]
    Kind(String),
    #[error("kind is missing, expected AdmissionReview")]
    NoKind,
    #[error("apiVersion {0:?} is not served: send admission.k8s.io/v1 or admission.k8s.io/v1beta1")]
    Version(String),
    #[error("apiVersion is missing: send admission.k8s.io/v1 or admission.k8s.io/v1beta1")]
    NoVersion,
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("request.{path}: {message}")]
    Request { path: String, message: String },
    #[error("request.uid is empty: the answer must echo it")]
    NoUid,
}

/// Decodes an AdmissionReview of either served version.
pub fn decode(body: &[u8]) -> Result<Review, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let value: Value = serde_json::from_slice(body).map_err(DecodeError::Json)?;
    let Value::Object(mut map) = value else {
        return Err(DecodeError::NotAnObject);
    };
    match map.get("kind") {
        Some(Value::String(k)) if k == "AdmissionReview" => {}
        Some(Value::String(k)) => return Err(DecodeError::Kind(k.clone())),
        Some(other) => return Err(DecodeError::Kind(other.to_string())),
        None => return Err(DecodeError::NoKind),
    }
    let version = match map.get("apiVersion") {
        Some(Value::String(v)) => {
            ReviewVersion::parse(v).ok_or_else(|| DecodeError::Version(v.clone()))?
        }
        Some(other) => return Err(DecodeError::Version(other.to_string())),
        None => return Err(DecodeError::NoVersion),
    };
    let request = match map.remove("request") {
        None | Some(Value::Null) => return Err(DecodeError::NoRequest),
        Some(r) => r,
    };
    let request: AdmissionRequest =
        serde_path_to_error::deserialize(request).map_err(|e| DecodeError::Request {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
    if request.uid.is_empty() {
        return Err(DecodeError::NoUid);
    }
    Ok(Review { version, request })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// The `metav1.Status` of a refusal.
#[derive(Serialize)]
struct StatusOut<'a> {
    status: &'static str,
    code: u16,
    reason: &'a str,
    message: &'a str,
}

/// Encodes the answer to `review`: same version, same uid.
pub fn encode(review: &Review, verdict: &Verdict) -> Result<Vec<u8>, serde_json::Error> {
    let status = (!verdict.allowed).then(|| StatusOut {
        status: "Failure",
        code: verdict.code,
        reason: &verdict.reason,
        message: &verdict.message,
    });
    serde_json::to_vec(&ReviewOut {
        api_version: review.version.api_version(),
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: &review.request.uid,
            allowed: verdict.allowed,
            status,
            warnings: &verdict.warnings,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(version: &str) -> String {
        format!(
            r#"{{"apiVersion":"{version}","kind":"AdmissionReview","request":{{"uid":"u-1","kind":{{"group":"apps","version":"v1","kind":"Deployment"}},"resource":{{"group":"apps","version":"v1","resource":"deployments"}},"namespace":"apps","operation":"CREATE","userInfo":{{"username":"x"}},"object":{{"metadata":{{"name":"web"}}}}}}}}"#
        )
    }

    #[test]
    fn both_versions() {
        let r = decode(review("admission.k8s.io/v1").as_bytes()).unwrap();
        assert_eq!(r.version, ReviewVersion::V1);
        assert_eq!(r.request.uid, "u-1");
        assert_eq!(r.request.operation, Operation::Create);
        assert_eq!(r.request.kind.kind, "Deployment");
        assert_eq!(r.request.namespace(), Some("apps"));
        assert_eq!(r.request.name(), Some("web"));
        assert_eq!(r.request.username(), "x");
        let r = decode(review("admission.k8s.io/v1beta1").as_bytes()).unwrap();
        assert_eq!(r.version, ReviewVersion::V1Beta1);
        let out = encode(&r, &Verdict::deny(403, "Forbidden", "no", vec![])).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "u-1");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 403);
        assert_eq!(v["response"]["status"]["message"], "no");
        assert!(v["response"].get("warnings").is_none());
    }

    #[test]
    fn a_user_info_of_another_shape_is_no_one() {
        for user in [r#"5"#, r#"{"username": 7}"#, r#"null"#] {
            let body = review("admission.k8s.io/v1").replace(r#"{"username":"x"}"#, user);
            let r = decode(body.as_bytes()).unwrap();
            assert_eq!(r.request.user_info, None, "{user}");
            assert_eq!(r.request.username(), "");
        }
    }

    #[test]
    fn refusals_say_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"{", "not JSON"),
            (b"[1]", "not an object"),
            (b"{\"kind\":\"Pod\"}", "\"Pod\", expected AdmissionReview"),
            (
                b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v2\"}",
                "not served",
            ),
            (
                b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}",
                "no request",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"x","kind":{},"operation":"EXPLODE"}}"#,
                "request.operation: unknown variant",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"","kind":{},"operation":"CREATE"}}"#,
                "uid is empty",
            ),
        ];
        for (body, want) in cases {
            let e = decode(body).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut body = String::from(
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"x","kind":{},"operation":"CREATE","object":"#,
        );
        body.push_str(&"[".repeat(100_000));
        let e = decode(body.as_bytes()).unwrap_err();
        assert!(matches!(e, DecodeError::Json(_)), "{e}");
    }
}
