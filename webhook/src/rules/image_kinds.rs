//! `/validate/image-kinds`: refuse broken ImageRepositories, ImagePolicies
//! and ImageUpdateAutomations at apply time, in every namespace, with the
//! validation `kubectl imageauto lint` runs ([`imageauto_core::api::validate`]):
//! regular expressions that do not compile (`exclusionList`,
//! `filterTags.pattern`), an `extract` naming a group the pattern lacks, a
//! semver range that does not parse, an order other than asc or desc, a
//! messageTemplate that does not parse, an `update.path` leading out of the
//! repository, and more. An ImagePolicy's cross-namespace
//! `imageRepositoryRef` is checked against the referenced repository's
//! accessFrom when the view holds that repository (a policy applied before
//! its repository is not refused for it).
//!
//! Each refusal line is `FIELD: reason (hint)`. Warnings of the validation
//! (a template using `.Updated`) become admission warnings.
//!
//! Admitted without a look: DELETE and CONNECT, sub-resources (`status`:
//! the controllers must always be able to write it), objects being deleted,
//! and UPDATEs that leave `spec` as it was (finalizer removal, labels): an
//! object broken before the webhook existed must still be deletable.

use super::{Verdict, printable};
use crate::review::{AdmissionRequest, Operation};
use crate::view::ClusterView;
use imageauto_core::api::{
    GROUP, ImagePolicy, ImageRepository, ImageUpdateAutomation, Object, ResourceExt, Severity,
    served_versions,
    validate::{FieldError, check_repository_access, validate as validate_object},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The kinds judged.
pub const IMAGE_KINDS: [&str; 3] = ["ImageRepository", "ImagePolicy", "ImageUpdateAutomation"];

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

fn line(e: &FieldError) -> String {
    match &e.hint {
        Some(h) => format!("{}: {} ({h})", e.field, e.message),
        None => format!("{}: {}", e.field, e.message),
    }
}

/// Validates an image-kind admission request.
pub fn validate(request: &AdmissionRequest, view: &dyn ClusterView) -> Verdict {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Verdict::allow();
    }
    let gvk = &request.kind;
    let served = served_versions(&gvk.kind);
    if gvk.group != GROUP || served.is_none() {
        return Verdict::allow_with(vec![format!(
            "imageauto: /validate/image-kinds does not judge {} ({}): the ValidatingWebhookConfiguration should not send it here",
            printable(&gvk.kind, 63),
            printable(&gvk.api_version(), 100),
        )]);
    }
    if served.is_some_and(|v| !v.contains(&gvk.version.as_str())) {
        return Verdict::allow_with(vec![format!(
            "imageauto: {} {} is not a version imageauto knows; not validated",
            gvk.kind,
            printable(&gvk.api_version(), 100),
        )]);
    }
    let Some(object) = request.object.clone() else {
        return Verdict::deny(
            400,
            "BadRequest",
            format!("the {} request carries no object", gvk.kind),
            vec![],
        );
    };
    if object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Verdict::allow();
    }
    if request.operation == Operation::Update
        && let Some(old) = &request.old_object
        && old.get("spec") == object.get("spec")
    {
        return Verdict::allow();
    }
    let namespace = request.namespace().map(str::to_string);
    let parsed = match gvk.kind.as_str() {
        "ImageRepository" => typed::<ImageRepository>(object).map(Object::Repository),
        "ImagePolicy" => typed::<ImagePolicy>(object).map(Object::Policy),
        _ => typed::<ImageUpdateAutomation>(object).map(Object::Automation),
    };
    let mut object = match parsed {
        Ok(o) => o,
        Err(message) => {
            return Verdict::deny(422, "Invalid", printable(&message, 1000), vec![]);
        }
    };
    let meta = match &mut object {
        Object::Repository(r) => &mut r.metadata,
        Object::Policy(p) => &mut p.metadata,
        Object::Automation(a) => &mut a.metadata,
        Object::GitRepository(g) => &mut g.metadata,
    };
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = namespace;
    }

    let mut problems = validate_object(&object);
    if let Object::Policy(p) = &object
        && let Some(problem) = repository_access(p, view)
    {
        problems.push(problem);
    }
    let (errors, warnings): (Vec<FieldError>, Vec<FieldError>) = problems
        .into_iter()
        .partition(|e| e.severity == Severity::Error);
    let warnings: Vec<String> = warnings
        .iter()
        .map(|w| format!("imageauto: {}", line(w)))
        .collect();
    if errors.is_empty() {
        return Verdict::allow_with(warnings);
    }
    Verdict::deny(
        422,
        "Invalid",
        errors
            .iter()
            .map(|e| printable(&line(e), 1000))
            .collect::<Vec<_>>()
            .join("\n"),
        warnings,
    )
}

fn repository_access(policy: &ImagePolicy, view: &dyn ClusterView) -> Option<FieldError> {
    let (repo_ns, repo_name) = imageauto_core::api::plan::repository_of(policy);
    let repository = view.repository(&repo_ns, &repo_name)?;
    let labels = policy.namespace().and_then(|ns| view.namespace_labels(&ns));
    check_repository_access(
        policy,
        &repository,
        labels.as_ref(),
        view.cross_namespace_refs(),
    )
}
