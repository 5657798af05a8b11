//! What an automation run will do, decided from the objects alone (no I/O):
//! Flux's push-branch rule, the checkout reference, the update path, which
//! policies a selector picks, and whether a policy may use a repository of
//! another namespace. Both front ends (a checkout, the cluster) call these.

use super::{
    GitRepositoryRef, GitRepositorySpec, ImagePolicy, ImageRepository, ImageUpdateAutomationSpec,
    ResourceExt,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use std::collections::BTreeMap;

/// Why an automation's spec cannot be planned. Each carries the field and
/// maps to one of Flux's condition reasons.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `spec.git` is missing, or the checkout is not a branch and no push
    /// branch is set: Flux's InvalidSourceConfiguration.
    #[error("{field}: {message}")]
    Source {
        field: &'static str,
        message: String,
    },
    /// `spec.update.path` leads out of the repository, or an unknown
    /// strategy: Flux's InvalidUpdateStrategy.
    #[error("{field}: {message}")]
    Update {
        field: &'static str,
        message: String,
    },
    /// No push branch, and no checkout branch to push to: Flux's error
    /// (SourceManagerFailed).
    #[error(
        "push spec not provided, and cannot be inferred from .spec.git.checkout.ref or GitRepository .spec.ref"
    )]
    NoPushBranch,
    /// A label selector that does not parse: Flux's InvalidPolicySelector.
    #[error("{field}: {message}")]
    Selector {
        field: &'static str,
        message: String,
    },
}

impl PlanError {
    /// Flux's condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::Source { .. } => "InvalidSourceConfiguration",
            PlanError::Update { .. } => "InvalidUpdateStrategy",
            PlanError::Selector { .. } => "InvalidPolicySelector",
            PlanError::NoPushBranch => "SourceManagerFailed",
        }
    }
}

/// Where an automation commits and pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    /// What to check out: the automation's `git.checkout.ref`, else the
    /// GitRepository's `ref`; `None` means Flux's default branch, `master`.
    pub checkout: Option<GitRepositoryRef>,
    /// The branch the commit goes to.
    pub branch: String,
    /// Pushed after the branch, when set.
    pub refspec: Option<String>,
    pub options: BTreeMap<String, String>,
}

/// Whether a GitRepository's URL may be used in the cluster: `http://`,
/// `https://`, `ssh://`, or scp-like `user@host:path`; never a path on the
/// controller's own file system nor `file://`, whatever the CRD lets
/// through (a URL of the controller's disk would read and push there).
pub fn check_source_url(url: &str) -> Result<(), PlanError> {
    let lower = url.to_ascii_lowercase();
    let scheme_ok = ["http://", "https://", "ssh://"]
        .iter()
        .any(|s| lower.starts_with(s) && url.len() > s.len());
    // scp-like: `user@host:path`, the colon before any slash.
    let scp_like = !url.contains("://")
        && url.split_once(':').is_some_and(|(before, path)| {
            !before.is_empty()
                && !before.contains('/')
                && before.contains('@')
                && !before.starts_with('@')
                && !path.is_empty()
        });
    if scheme_ok || scp_like {
        Ok(())
    } else {
        Err(PlanError::Source {
            field: "spec.url",
            message: format!(
                "{:?} is not an http, https or ssh URL (or user@host:path): the controller reaches Git only over the network",
                display_url(url)
            ),
        })
    }
}

/// Flux's checkout reference: the automation's, else the GitRepository's.
pub fn checkout_ref(
    spec: &ImageUpdateAutomationSpec,
    source: Option<&GitRepositorySpec>,
) -> Option<GitRepositoryRef> {
    spec.git
        .as_ref()
        .and_then(|g| g.checkout.as_ref())
        .map(|c| c.reference.clone())
        .or_else(|| source.and_then(|s| s.reference.clone()))
}

/// Flux's push-branch rule (image-automation-controller
/// `internal/source/git.go`, `configurePush`): `git.push.branch`, else the
/// checkout reference's `branch` (also when a tag or commit is set beside
/// it); no branch at all is an error, never a push to `master`.
pub fn push_target(
    spec: &ImageUpdateAutomationSpec,
    source: Option<&GitRepositorySpec>,
) -> Result<PushTarget, PlanError> {
    let Some(g) = &spec.git else {
        return Err(PlanError::Source {
            field: "spec.git",
            message: "not set: the automation says nothing about committing".into(),
        });
    };
    let checkout = checkout_ref(spec, source);
    let checkout_branch = checkout
        .as_ref()
        .and_then(|r| r.branch.clone())
        .filter(|b| !b.is_empty());
    let push_branch = g
        .push
        .as_ref()
        .and_then(|p| p.branch.clone())
        .filter(|b| !b.is_empty());
    let branch = push_branch
        .or(checkout_branch)
        .ok_or(PlanError::NoPushBranch)?;
    Ok(PushTarget {
        checkout,
        branch,
        refspec: g
            .push
            .as_ref()
            .and_then(|p| p.refspec.clone())
            .filter(|r| !r.is_empty()),
        options: g
            .push
            .as_ref()
            .and_then(|p| p.options.clone())
            .unwrap_or_default(),
    })
}

/// The automation's update path as Flux joins it to the checkout
/// (`securejoin`): `/`-separated, no `.`, an absolute path and a `..`
/// above the root read from the root; empty for the root itself.
pub fn update_path_within(spec: &ImageUpdateAutomationSpec) -> String {
    let path = spec
        .update
        .as_ref()
        .and_then(|u| u.path.clone())
        .unwrap_or_default();
    let mut parts: Vec<&str> = Vec::new();
    for c in std::path::Path::new(&path).components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(p) => parts.push(p.to_str().unwrap_or("")),
            _ => {}
        }
    }
    parts.join("/")
}

/// The automation's update path, normalised (`/`-separated, no `.`, empty
/// for the repository root); a path that leaves the repository is an error.
pub fn update_path(spec: &ImageUpdateAutomationSpec) -> Result<String, PlanError> {
    let path = spec
        .update
        .as_ref()
        .and_then(|u| u.path.clone())
        .unwrap_or_default();
    normalize_update_path(&path).map_err(|message| PlanError::Update {
        field: "spec.update.path",
        message,
    })
}

/// A label selector, as Kubernetes reads it; operators other than In,
/// NotIn, Exists and DoesNotExist are errors, not "no match".
pub fn selector(
    s: Option<&LabelSelector>,
    field: &'static str,
) -> Result<Option<Selector>, PlanError> {
    s.map(|s| {
        Selector::try_from(s.clone()).map_err(|e| PlanError::Selector {
            field,
            message: e.to_string(),
        })
    })
    .transpose()
}

/// The policies of the automation's namespace that its `policySelector`
/// picks (all of them without one), in the order given.
pub fn selected_policies<'p>(
    spec: &ImageUpdateAutomationSpec,
    namespace: &str,
    policies: impl IntoIterator<Item = &'p ImagePolicy>,
) -> Result<Vec<&'p ImagePolicy>, PlanError> {
    let sel = selector(spec.policy_selector.as_ref(), "spec.policySelector")?;
    Ok(policies
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace))
        .filter(|p| sel.as_ref().is_none_or(|s| s.matches(p.labels())))
        .collect())
}

/// The namespace and name of the ImageRepository a policy refers to.
pub fn repository_of(policy: &ImagePolicy) -> (String, String) {
    let r = &policy.spec.image_repository_ref;
    let ns = r
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| policy.namespace())
        .unwrap_or_default();
    (ns, r.name.clone())
}

/// Whether a policy in `policy_namespace` (with these labels) may use
/// `repository`: always in its own namespace; from another, only when the
/// repository's `accessFrom` selects the policy's namespace, and never when
/// cross-namespace references are switched off.
pub fn access_allowed(
    repository: &ImageRepository,
    policy_namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    cross_namespace_refs: bool,
) -> bool {
    if repository.namespace().as_deref() == Some(policy_namespace) {
        return true;
    }
    cross_namespace_refs
        && repository
            .spec
            .access_from
            .as_ref()
            .is_some_and(|a| a.allows(namespace_labels))
}

/// An update path, normalised (`./a/../b/` is `b`; the root is ``), when it
/// stays inside the repository.
pub fn normalize_update_path(path: &str) -> Result<String, String> {
    check_update_path(path)?;
    let mut parts: Vec<&str> = Vec::new();
    for c in std::path::Path::new(path).components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(p) => parts.push(p.to_str().unwrap_or("")),
            _ => {}
        }
    }
    Ok(parts.join("/"))
}

/// An update path must stay inside the repository.
pub fn check_update_path(path: &str) -> Result<(), String> {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        return Err(format!(
            "{path:?} is absolute: give a path relative to the repository root"
        ));
    }
    let mut depth: i64 = 0;
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!("{path:?} leads outside the repository"));
        }
    }
    Ok(())
}

/// A URL for messages: the whole user-info part (a password, and a user
/// name, which often is a token: `https://TOKEN@host/repo`) is replaced by
/// `***`. The scp-like form keeps only the usual `git@`.
pub fn display_url(url: &str) -> String {
    if !url.contains("://") {
        // scp-like `user@host:path`: the user is before the host's colon.
        let host_part = url.split(':').next().unwrap_or(url);
        return match host_part.rsplit_once('@') {
            Some(("git", _)) | None => url.to_string(),
            Some((user, _)) => format!("***{}", &url[user.len()..]),
        };
    }
    match url::Url::parse(url) {
        Ok(mut u) => {
            let had_user = !u.username().is_empty() || u.password().is_some();
            let _ = u.set_password(None);
            let _ = u.set_username("");
            let s = u.to_string();
            if had_user {
                // Show that credentials were there, not what they were.
                match s.split_once("://") {
                    Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
                    None => s,
                }
            } else {
                s
            }
        }
        // Unparsable: it may hold anything, so show only the scheme.
        Err(_) => format!(
            "{}://<unparsable URL>",
            url.split("://").next().unwrap_or("")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_git_urls_are_sources() {
        for ok in [
            "https://github.com/org/fleet",
            "http://127.0.0.1:8080/git/fleet.git",
            "ssh://git@github.com/org/fleet",
            "git@github.com:org/fleet.git",
        ] {
            assert!(check_source_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/var/lib/imageauto/git/x",
            "./fleet",
            "file:///etc",
            "fleet",
            "ftp://example.com/x",
            "https://",
            "github.com:org/fleet",
            "C:/fleet",
        ] {
            let e = check_source_url(bad).unwrap_err();
            assert_eq!(e.reason(), "InvalidSourceConfiguration", "{bad}");
        }
    }
    use crate::api::{
        AccessFrom, CommitSpec, CommitUser, CrossNamespaceSourceReference, GitCheckoutSpec,
        GitSpec, ImagePolicySpec, ImageRepositorySpec, NamespaceSelector, PushSpec, UpdateStrategy,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn automation(
        checkout: Option<GitRepositoryRef>,
        push: Option<&str>,
    ) -> ImageUpdateAutomationSpec {
        ImageUpdateAutomationSpec {
            source_ref: CrossNamespaceSourceReference {
                api_version: None,
                kind: "GitRepository".into(),
                name: "fleet".into(),
                namespace: None,
            },
            git: Some(GitSpec {
                checkout: checkout.map(|reference| GitCheckoutSpec { reference }),
                commit: CommitSpec {
                    author: CommitUser {
                        name: None,
                        email: "bot@example.com".into(),
                    },
                    ..CommitSpec::default()
                },
                push: push.map(|b| PushSpec {
                    branch: Some(b.into()),
                    ..PushSpec::default()
                }),
            }),
            interval: "5m".into(),
            policy_selector: None,
            update: Some(UpdateStrategy::default()),
            suspend: false,
        }
    }

    fn branch(b: &str) -> GitRepositoryRef {
        GitRepositoryRef {
            branch: Some(b.into()),
            ..GitRepositoryRef::default()
        }
    }

    fn source(r: Option<GitRepositoryRef>) -> GitRepositorySpec {
        GitRepositorySpec {
            url: "https://example.com/fleet.git".into(),
            reference: r,
            ..GitRepositorySpec::default()
        }
    }

    #[test]
    fn push_branch_rule() {
        // push.branch wins.
        let t = push_target(&automation(Some(branch("main")), Some("auto")), None).unwrap();
        assert_eq!(
            (t.branch.as_str(), t.checkout),
            ("auto", Some(branch("main")))
        );
        // Else the automation's checkout branch.
        let t = push_target(&automation(Some(branch("dev")), None), None).unwrap();
        assert_eq!(t.branch, "dev");
        // Else the GitRepository's.
        let s = source(Some(branch("prod")));
        let t = push_target(&automation(None, None), Some(&s)).unwrap();
        assert_eq!(
            (t.branch.as_str(), t.checkout),
            ("prod", Some(branch("prod")))
        );
        // The automation's checkout overrides the GitRepository's.
        let t = push_target(&automation(Some(branch("dev")), None), Some(&s)).unwrap();
        assert_eq!(t.branch, "dev");
        // Nothing names a branch: Flux's error, never master.
        let e = push_target(&automation(None, None), Some(&source(None))).unwrap_err();
        assert_eq!(e, PlanError::NoPushBranch);
        assert_eq!(e.reason(), "SourceManagerFailed");
        assert_eq!(
            e.to_string(),
            "push spec not provided, and cannot be inferred from .spec.git.checkout.ref or GitRepository .spec.ref"
        );
        // A tag checkout needs a push branch...
        let tag = GitRepositoryRef {
            tag: Some("v1".into()),
            ..GitRepositoryRef::default()
        };
        let e = push_target(&automation(Some(tag.clone()), None), None).unwrap_err();
        assert_eq!(e, PlanError::NoPushBranch);
        let t = push_target(&automation(Some(tag), Some("auto")), None).unwrap();
        assert_eq!(t.branch, "auto");
        // ... unless a branch is named beside it: Flux pushes there.
        let tag_on_branch = GitRepositoryRef {
            tag: Some("v1".into()),
            branch: Some("release".into()),
            ..GitRepositoryRef::default()
        };
        let t = push_target(&automation(Some(tag_on_branch), None), None).unwrap();
        assert_eq!(t.branch, "release");
        // No spec.git.
        let mut a = automation(None, None);
        a.git = None;
        assert_eq!(
            push_target(&a, None).unwrap_err().reason(),
            "InvalidSourceConfiguration"
        );
    }

    #[test]
    fn update_paths_as_flux_joins_them() {
        let mut a = automation(None, None);
        for (p, want) in [
            ("", ""),
            ("./apps", "apps"),
            ("apps/../base/", "base"),
            ("../x", "x"),
            ("a/../../x", "x"),
            ("/etc", "etc"),
            ("/", ""),
        ] {
            a.update = Some(UpdateStrategy {
                path: Some(p.into()),
                ..UpdateStrategy::default()
            });
            assert_eq!(update_path_within(&a), want, "{p}");
        }
    }

    #[test]
    fn update_paths() {
        let mut a = automation(None, None);
        assert_eq!(update_path(&a).unwrap(), "");
        for (p, want) in [
            ("./apps", Ok("apps")),
            ("apps/../base/", Ok("base")),
            ("../x", Err(())),
            ("/etc", Err(())),
        ] {
            a.update = Some(UpdateStrategy {
                path: Some(p.into()),
                ..UpdateStrategy::default()
            });
            match (update_path(&a), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{p}"),
                (Err(e), Err(())) => assert_eq!(e.reason(), "InvalidUpdateStrategy", "{p}"),
                (got, _) => panic!("{p}: {got:?}"),
            }
        }
    }

    fn policy(
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        repo: (&str, Option<&str>),
    ) -> ImagePolicy {
        let mut p = ImagePolicy::new(
            name,
            ImagePolicySpec {
                image_repository_ref: crate::api::NamespacedObjectReference {
                    name: repo.0.into(),
                    namespace: repo.1.map(str::to_string),
                },
                ..serde_json::from_value(serde_json::json!({
                    "imageRepositoryRef": {"name": "x"},
                    "policy": {"semver": {"range": "*"}}
                }))
                .unwrap()
            },
        );
        p.metadata.namespace = Some(ns.into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    #[test]
    fn policy_selection() {
        let ps = [
            policy("apps", "web", &[("team", "a")], ("web", None)),
            policy("apps", "api", &[("team", "b")], ("api", None)),
            policy("other", "web", &[("team", "a")], ("web", None)),
        ];
        let mut a = automation(None, None);
        let names = |v: Vec<&ImagePolicy>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(selected_policies(&a, "apps", &ps).unwrap()),
            ["web", "api"]
        );
        a.policy_selector = Some(LabelSelector {
            match_labels: Some([("team".to_string(), "a".to_string())].into()),
            match_expressions: None,
        });
        assert_eq!(names(selected_policies(&a, "apps", &ps).unwrap()), ["web"]);
        a.policy_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "NotIn".into(),
                values: Some(vec!["a".into()]),
            }]),
        });
        assert_eq!(names(selected_policies(&a, "apps", &ps).unwrap()), ["api"]);
        // An operator Kubernetes does not know is an error, not "no match".
        a.policy_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "Like".into(),
                values: Some(vec!["a".into()]),
            }]),
        });
        let e = selected_policies(&a, "apps", &ps).unwrap_err();
        assert_eq!(e.reason(), "InvalidPolicySelector");
    }

    #[test]
    fn cross_namespace_access() {
        let mut repo = ImageRepository::new(
            "web",
            ImageRepositorySpec {
                image: "ghcr.io/org/web".into(),
                interval: "5m".into(),
                ..serde_json::from_value(serde_json::json!({"image": "x", "interval": "5m"}))
                    .unwrap()
            },
        );
        repo.metadata.namespace = Some("images".into());
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        // Same namespace: always.
        assert!(access_allowed(&repo, "images", &BTreeMap::new(), false));
        // Another: only through accessFrom.
        assert!(!access_allowed(&repo, "apps", &labels, true));
        repo.spec.access_from = Some(AccessFrom {
            namespace_selectors: vec![NamespaceSelector {
                match_labels: [("env".to_string(), "prod".to_string())].into(),
            }],
        });
        assert!(access_allowed(&repo, "apps", &labels, true));
        assert!(!access_allowed(&repo, "apps", &BTreeMap::new(), true));
        // Switched off for the whole process.
        assert!(!access_allowed(&repo, "apps", &labels, false));
        // An empty selector matches every namespace.
        repo.spec.access_from = Some(AccessFrom {
            namespace_selectors: vec![NamespaceSelector::default()],
        });
        assert!(access_allowed(&repo, "anything", &BTreeMap::new(), true));
        let p = policy("apps", "web", &[], ("web", Some("images")));
        assert_eq!(repository_of(&p), ("images".to_string(), "web".to_string()));
        let p = policy("apps", "web", &[], ("web", None));
        assert_eq!(repository_of(&p), ("apps".to_string(), "web".to_string()));
    }
}
