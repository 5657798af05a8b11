//! What the schema alone does not catch: ranges that do not parse, regular
//! expressions that do not compile, an extract naming a missing group, an
//! image with a scheme or a tag, an interval that is not a duration, and the
//! rules Flux's CRDs express in CEL. Also the limits of Flux's schema that
//! serde does not enforce (patterns, lengths, counts, the source kind), so
//! that files read outside a cluster, and clusters whose apiserver drops CEL,
//! get the answer the schema gives. Used by the loader, the lint and the
//! admission webhook.

use super::duration::parse_duration;
use super::plan::check_update_path;
use super::{
    DigestReflectionPolicy, ImagePolicy, ImagePolicySpec, ImageRepository, ImageUpdateAutomation,
    MAX_EXCLUSION_LIST, Object, Severity,
};
use crate::policy::{CompiledFilter, Exclusions, Ordering, Policy, PolicyError};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// A problem with one field of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub severity: Severity,
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
    pub rule: &'static str,
}

impl FieldError {
    fn error(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            field: field.into(),
            message: message.into(),
            hint: None,
            rule: "invalid-value",
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The longest `spec.serviceAccountName` Flux's schema takes.
pub const MAX_SERVICE_ACCOUNT_NAME: usize = 253;

/// Whether a value is a timeout as Flux's CRD takes it for an
/// ImageRepository: a duration without hours (`^([0-9]+(\.[0-9]+)?(ms|s|m))+$`).
pub fn is_timeout(s: &str) -> bool {
    parse_duration(s).is_some() && !s.contains('h')
}

fn check_duration(field: &str, value: &str, out: &mut Vec<FieldError>) -> Option<Duration> {
    let parsed = parse_duration(value);
    if parsed.is_none() {
        out.push(
            FieldError::error(field, format!("{value:?} is not a duration"))
                .hint("write a Go duration such as 30s, 5m or 1h30m"),
        );
    }
    parsed
}

/// [`check_duration`] for a reconciliation interval, warning under a
/// minute: every interval is a registry or Git request per object.
fn check_interval(field: &str, value: &str, out: &mut Vec<FieldError>) {
    let Some(d) = check_duration(field, value, out) else {
        return;
    };
    let message = if d.is_zero() {
        format!(
            "{value:?} means no periodic reconciliation: only changes and reconcile requests start one"
        )
    } else if d < Duration::from_secs(60) {
        format!(
            "{value:?} is under a minute: each reconciliation is a request to a registry or a Git server, for every object"
        )
    } else {
        return;
    };
    out.push(FieldError {
        severity: Severity::Warning,
        field: field.into(),
        message,
        hint: Some(
            "registries limit their clients; use a Receiver to react to pushes at once".into(),
        ),
        rule: "short-interval",
    });
}

/// Checks an image name as an ImageRepository's `spec.image`: a repository,
/// without scheme, tag or digest.
pub fn check_image(image: &str) -> Result<(), String> {
    if image.trim().is_empty() {
        return Err("the image is empty".into());
    }
    if let Some((scheme, _)) = image.split_once("://") {
        return Err(format!(
            "{image:?} has a scheme ({scheme}://): write the repository alone, such as ghcr.io/org/app; use spec.insecure for plain HTTP"
        ));
    }
    if image.contains('@') {
        return Err(format!(
            "{image:?} has a digest: spec.image names a repository; the policy chooses the tag"
        ));
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        return Err(format!(
            "{image:?} has a tag: spec.image names a repository, without tag; the ImagePolicy chooses the tag"
        ));
    }
    if image.chars().any(char::is_whitespace) {
        return Err(format!("{image:?} contains white space"));
    }
    crate::reference::Reference::parse(image).map_err(|e| e.to_string())?;
    Ok(())
}

fn validate_repository(r: &ImageRepository, out: &mut Vec<FieldError>) {
    let spec = &r.spec;
    if let Err(e) = check_image(&spec.image) {
        out.push(FieldError::error("spec.image", e));
    }
    check_interval("spec.interval", &spec.interval, out);
    if let Some(t) = &spec.timeout {
        if parse_duration(t).is_none() {
            check_duration("spec.timeout", t, out);
        } else if !is_timeout(t) {
            out.push(
                FieldError::error(
                    "spec.timeout",
                    format!(
                        "{t:?} has hours, which a timeout may not have (Flux's schema: ms, s and m)"
                    ),
                )
                .hint("write the hours as minutes, such as 60m for 1h"),
            );
        }
    }
    if let Some(sa) = &spec.service_account_name
        && sa.len() > MAX_SERVICE_ACCOUNT_NAME
    {
        out.push(FieldError::error(
            "spec.serviceAccountName",
            format!(
                "has {} characters, at most {MAX_SERVICE_ACCOUNT_NAME} are allowed",
                sa.len()
            ),
        ));
    }
    if spec.exclusion_list.len() > MAX_EXCLUSION_LIST {
        out.push(FieldError::error(
            "spec.exclusionList",
            format!(
                "has {} entries, at most {MAX_EXCLUSION_LIST} are allowed",
                spec.exclusion_list.len()
            ),
        ));
    }
    if let Err(e) = Exclusions::new(&spec.exclusion_list) {
        push_policy_error(e, out);
    }
}

fn push_policy_error(e: PolicyError, out: &mut Vec<FieldError>) {
    let field = e.field().unwrap_or_else(|| "spec".into());
    let hint = match &e {
        PolicyError::Range { .. } | PolicyError::EmptyRange => Some(
            "ranges look like \">=1.0.0 <2.0.0\", \"^1.2\", \"~1.2.3\", \"1.x\" or \"1.0 - 1.4\"",
        ),
        PolicyError::Pattern { .. } | PolicyError::Exclusion { .. } => {
            Some("the syntax is Go's RE2: no look-around or back-references")
        }
        _ => None,
    };
    let mut fe = FieldError::error(field, e.to_string());
    fe.hint = hint.map(str::to_string);
    out.push(fe);
}

/// Compiles the policy of an ImagePolicy spec.
pub fn compile_policy(spec: &ImagePolicySpec) -> Result<Policy, Vec<FieldError>> {
    let mut errors = Vec::new();
    let p = &spec.policy;
    let set: Vec<&str> = [
        p.semver.as_ref().map(|_| "semver"),
        p.alphabetical.as_ref().map(|_| "alphabetical"),
        p.numerical.as_ref().map(|_| "numerical"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ordering = match set.len() {
        0 => {
            errors.push(
                FieldError::error("spec.policy", "no ordering is set")
                    .hint("set exactly one of spec.policy.semver.range, spec.policy.alphabetical or spec.policy.numerical"),
            );
            None
        }
        1 => {
            if let Some(s) = &p.semver {
                match Policy::semver(&s.range) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        push_policy_error(e, &mut errors);
                        None
                    }
                }
            } else if let Some(a) = &p.alphabetical {
                Some(Ordering::Alphabetical(a.order))
            } else {
                p.numerical.as_ref().map(|n| Ordering::Numerical(n.order))
            }
        }
        _ => {
            errors.push(
                FieldError::error(
                    "spec.policy",
                    format!("{} are all set; exactly one may be", set.join(" and ")),
                )
                .hint("keep one of semver, alphabetical, numerical"),
            );
            None
        }
    };
    let filter = match &spec.filter_tags {
        Some(f) => match CompiledFilter::new(&f.pattern, &f.extract) {
            Ok(f) => Some(f),
            Err(e) => {
                push_policy_error(e, &mut errors);
                None
            }
        },
        None => None,
    };
    match ordering {
        Some(o) if errors.is_empty() => Ok(Policy::new(o, filter)),
        _ => Err(errors),
    }
}

fn validate_policy(p: &ImagePolicy, out: &mut Vec<FieldError>) {
    let spec = &p.spec;
    if spec.image_repository_ref.name.is_empty() {
        out.push(FieldError::error(
            "spec.imageRepositoryRef.name",
            "names no ImageRepository",
        ));
    }
    if let Err(errors) = compile_policy(spec) {
        out.extend(errors);
    }
    match (&spec.interval, spec.digest_reflection_policy) {
        (Some(_), DigestReflectionPolicy::Never | DigestReflectionPolicy::IfNotPresent) => out
            .push(FieldError::error(
                "spec.interval",
                "is only accepted when spec.digestReflectionPolicy is Always",
            )),
        (None, DigestReflectionPolicy::Always) => out.push(FieldError::error(
            "spec.interval",
            "is required when spec.digestReflectionPolicy is Always",
        )),
        (Some(i), DigestReflectionPolicy::Always) => check_interval("spec.interval", i, out),
        _ => {}
    }
}

fn validate_automation(a: &ImageUpdateAutomation, out: &mut Vec<FieldError>) {
    let spec = &a.spec;
    if spec.source_ref.kind != "GitRepository" {
        out.push(FieldError::error(
            "spec.sourceRef.kind",
            format!(
                "{:?} is not supported: the source must be a GitRepository",
                spec.source_ref.kind
            ),
        ));
    }
    if spec.source_ref.name.is_empty() {
        out.push(FieldError::error(
            "spec.sourceRef.name",
            "names no GitRepository",
        ));
    }
    check_interval("spec.interval", &spec.interval, out);
    if let Some(git) = &spec.git
        && git.commit.author.email.trim().is_empty()
    {
        out.push(FieldError::error(
            "spec.git.commit.author.email",
            "is required: commits need an author email",
        ));
    }
    if let Some(t) = spec
        .git
        .as_ref()
        .and_then(|g| g.commit.message_template.as_deref())
    {
        match crate::template::check(t) {
            Err(e) => out.push(
                FieldError::error("spec.git.commit.messageTemplate", e.to_string())
                    .hint("the template is Go text/template: {{ .AutomationObject }}, {{ range .Changed.Changes }}...{{ end }}"),
            ),
            Ok(()) if t.contains(".Updated") => out.push(FieldError {
                severity: Severity::Warning,
                field: "spec.git.commit.messageTemplate".into(),
                message: "uses .Updated, which Flux 1.2 refuses (RemovedTemplateField); imageauto still renders it".into(),
                hint: Some("use .Changed.FileChanges, .Changed.Objects or .Changed.Changes".into()),
                rule: "deprecated-field",
            }),
            Ok(()) => {}
        }
    }
    if let Some(path) = spec.update.as_ref().and_then(|u| u.path.as_deref())
        && let Err(e) = check_update_path(path)
    {
        // Flux joins the path to the checkout (securejoin): the cluster
        // reads it from the repository root; the command line refuses it.
        out.push(FieldError {
            severity: Severity::Warning,
            field: "spec.update.path".into(),
            message: format!(
                "{e}; in the cluster it is read from the repository root, as {:?}",
                super::plan::update_path_within(spec)
            ),
            hint: Some("give the path from the repository root".into()),
            rule: "path-outside",
        });
    }
    if let Some(sel) = &spec.policy_selector {
        for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
            let field = format!("spec.policySelector.matchExpressions.{i}");
            match expr.operator.as_str() {
                "In" | "NotIn" => {
                    if expr.values.as_ref().is_none_or(Vec::is_empty) {
                        out.push(FieldError::error(
                            field,
                            format!("operator {} needs values", expr.operator),
                        ));
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if expr.values.as_ref().is_some_and(|v| !v.is_empty()) {
                        out.push(FieldError::error(
                            field,
                            format!("operator {} takes no values", expr.operator),
                        ));
                    }
                }
                other => out.push(
                    FieldError::error(
                        format!("{field}.operator"),
                        format!("{other:?} is not an operator"),
                    )
                    .hint("use In, NotIn, Exists or DoesNotExist"),
                ),
            }
        }
    }
}

/// Whether an ImagePolicy's `spec.imageRepositoryRef` to `repository` in
/// another namespace can ever be used: Flux refuses it (AccessDenied) unless
/// the repository's `accessFrom` selects the policy's namespace.
///
/// `namespace_labels` are the labels of the policy's namespace, when known.
/// Known, the reference must be allowed now. Unknown, only a reference that
/// no label could allow is an error: the repository has no accessFrom (or an
/// empty one), or cross-namespace references are switched off. A reference
/// within one namespace is always fine.
pub fn check_repository_access(
    policy: &ImagePolicy,
    repository: &ImageRepository,
    namespace_labels: Option<&BTreeMap<String, String>>,
    cross_namespace_refs: bool,
) -> Option<FieldError> {
    let policy_ns = policy.namespace()?;
    let repo_ns = repository.namespace()?;
    if policy_ns == repo_ns {
        return None;
    }
    let repo = format!("{repo_ns}/{}", repository.name_any());
    let field = "spec.imageRepositoryRef.namespace";
    if !cross_namespace_refs {
        return Some(
            FieldError::error(
                field,
                format!(
                    "ImageRepository {repo} is in another namespace, and cross-namespace references are switched off"
                ),
            )
            .hint(format!(
                "create the ImageRepository in namespace {policy_ns}"
            )),
        );
    }
    let selectors = repository
        .spec
        .access_from
        .as_ref()
        .map_or(&[][..], |a| &a.namespace_selectors[..]);
    let hint = format!(
        "give ImageRepository {repo} a spec.accessFrom.namespaceSelectors entry whose matchLabels select namespace {policy_ns}, or create the ImageRepository in namespace {policy_ns}"
    );
    if selectors.is_empty() {
        return Some(
            FieldError::error(
                field,
                format!(
                    "ImageRepository {repo} has no spec.accessFrom, so it never allows ImagePolicies of namespace {policy_ns}"
                ),
            )
            .hint(hint),
        );
    }
    match namespace_labels {
        Some(labels)
            if !super::plan::access_allowed(repository, &policy_ns, labels, true) =>
        {
            Some(
                FieldError::error(
                    field,
                    format!(
                        "the spec.accessFrom of ImageRepository {repo} matches none of the labels of namespace {policy_ns}"
                    ),
                )
                .hint(hint),
            )
        }
        _ => None,
    }
}

/// Every problem of an object that the schema did not catch.
pub fn validate(object: &Object) -> Vec<FieldError> {
    let mut out = Vec::new();
    match object {
        Object::Repository(r) => validate_repository(r, &mut out),
        Object::Policy(p) => validate_policy(p, &mut out),
        Object::Automation(a) => validate_automation(a, &mut out),
        Object::GitRepository(g) => {
            if g.spec.url.is_empty() {
                out.push(FieldError::error("spec.url", "is required"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::plan::normalize_update_path;
    use crate::api::{
        AccessFrom, ImagePolicySpec, ImageRepositorySpec, NamespaceSelector,
        NamespacedObjectReference,
    };

    fn repository(ns: &str, access: Option<Vec<NamespaceSelector>>) -> ImageRepository {
        let spec: ImageRepositorySpec = serde_json::from_value(serde_json::json!({
            "image": "ghcr.io/org/web", "interval": "5m"
        }))
        .unwrap();
        let mut r = ImageRepository::new("web", spec);
        r.metadata.namespace = Some(ns.into());
        r.spec.access_from = access.map(|namespace_selectors| AccessFrom {
            namespace_selectors,
        });
        r
    }

    fn policy(ns: &str) -> ImagePolicy {
        let spec = ImagePolicySpec {
            image_repository_ref: NamespacedObjectReference {
                name: "web".into(),
                namespace: Some("flux".into()),
            },
            policy: Default::default(),
            filter_tags: None,
            digest_reflection_policy: Default::default(),
            interval: None,
            suspend: false,
        };
        let mut p = ImagePolicy::new("web", spec);
        p.metadata.namespace = Some(ns.into());
        p
    }

    #[test]
    fn short_intervals_are_warned_about() {
        let mut r = repository("apps", None);
        let warnings = |r: &ImageRepository| -> Vec<String> {
            validate(&Object::Repository(r.clone()))
                .into_iter()
                .filter(|e| e.severity == Severity::Warning)
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect()
        };
        assert!(warnings(&r).is_empty());
        r.spec.interval = "30s".into();
        let w = warnings(&r);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("spec.interval: \"30s\" is under a minute"),
            "{w:?}"
        );
        r.spec.interval = "0s".into();
        assert!(warnings(&r)[0].contains("no periodic reconciliation"));
        // An error, not also a warning.
        r.spec.interval = "soon".into();
        assert!(warnings(&r).is_empty());
    }

    #[test]
    fn repository_access() {
        let team = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let selects_team = vec![NamespaceSelector {
            match_labels: team.clone(),
        }];
        // Same namespace: always.
        assert_eq!(
            check_repository_access(&policy("flux"), &repository("flux", None), None, false),
            None
        );
        // No accessFrom, or an empty one: never, labels or not.
        for access in [None, Some(vec![])] {
            let e = check_repository_access(
                &policy("apps"),
                &repository("flux", access),
                Some(&team),
                true,
            )
            .unwrap();
            assert_eq!(e.field, "spec.imageRepositoryRef.namespace");
            assert!(e.message.contains("never allows"), "{}", e.message);
            assert!(e.hint.unwrap().contains("accessFrom"));
        }
        let repo = repository("flux", Some(selects_team));
        // Selected by the labels: fine; not selected: refused; unknown
        // labels: may still come, fine.
        assert_eq!(
            check_repository_access(&policy("apps"), &repo, Some(&team), true),
            None
        );
        let e =
            check_repository_access(&policy("apps"), &repo, Some(&BTreeMap::new()), true).unwrap();
        assert!(
            e.message
                .contains("matches none of the labels of namespace apps"),
            "{}",
            e.message
        );
        assert_eq!(
            check_repository_access(&policy("apps"), &repo, None, true),
            None
        );
        // Switched off: refused even when selected.
        let e = check_repository_access(&policy("apps"), &repo, Some(&team), false).unwrap();
        assert!(e.message.contains("switched off"), "{}", e.message);
    }

    #[test]
    fn timeouts_take_no_hours_and_service_accounts_are_names() {
        let errors = |r: &ImageRepository| -> Vec<String> {
            validate(&Object::Repository(r.clone()))
                .into_iter()
                .filter(|e| e.severity == Severity::Error)
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect()
        };
        let mut r = repository("apps", None);
        for ok in ["30s", "90m", "1.5m", "250ms", "1m30s"] {
            r.spec.timeout = Some(ok.into());
            assert_eq!(errors(&r), Vec::<String>::new(), "{ok}");
        }
        r.spec.timeout = Some("1h".into());
        let e = errors(&r);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("spec.timeout: \"1h\" has hours"), "{e:?}");
        r.spec.timeout = Some("soon".into());
        assert!(errors(&r)[0].contains("is not a duration"));
        r.spec.timeout = None;
        r.spec.service_account_name = Some("a".repeat(253));
        assert!(errors(&r).is_empty());
        r.spec.service_account_name = Some("a".repeat(254));
        assert_eq!(
            errors(&r),
            ["spec.serviceAccountName: has 254 characters, at most 253 are allowed"]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "5", "m", "5 m", "-5m", "1d", "1.m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn images() {
        assert!(check_image("ghcr.io/org/app").is_ok());
        assert!(check_image("nginx").is_ok());
        assert!(check_image("localhost:5000/app").is_ok());
        assert!(
            check_image("https://ghcr.io/org/app")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            check_image("ghcr.io/org/app:1.0")
                .unwrap_err()
                .contains("tag")
        );
        assert!(
            check_image("ghcr.io/org/app@sha256:abc")
                .unwrap_err()
                .contains("digest")
        );
        assert!(check_image("ghcr.io/Org/App").is_err());
    }

    #[test]
    fn update_paths() {
        assert!(check_update_path("./clusters/prod").is_ok());
        assert!(check_update_path("a/../b").is_ok());
        assert!(check_update_path("../x").is_err());
        assert!(check_update_path("a/../../x").is_err());
        assert!(check_update_path("/etc").is_err());
        assert_eq!(normalize_update_path("./a/./b/../c/").unwrap(), "a/c");
        assert_eq!(normalize_update_path(".").unwrap(), "");
        assert_eq!(normalize_update_path("").unwrap(), "");
    }
}
