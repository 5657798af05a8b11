//! Workloads in files: which kinds have containers, where a manifest's
//! objects and their container lists are, and the index of container image
//! fields with their markers that the admission webhook reads. Used by the
//! lint, the engine (which publishes the index) and the webhook.

use crate::setters::{CommentKind, object_of, scan_documents};
use crate::yaml::{self, Node, NodeKind};
use serde::Serialize;

/// The workload kinds whose images the markers, the lint and the webhook
/// judge.
pub const WORKLOAD_KINDS: [&str; 7] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// The container lists of a workload's pod template.
pub fn pod_specs<'n>(kind: &str, obj: &'n Node) -> Vec<&'n Node> {
    let spec = obj.get("spec");
    let pod = match kind {
        "Pod" => spec,
        "CronJob" => spec
            .and_then(|s| s.get("jobTemplate"))
            .and_then(|j| j.get("spec"))
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec")),
        _ => spec
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec")),
    };
    let Some(pod) = pod else { return Vec::new() };
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod.get(k))
        .collect()
}

/// The items of a sequence; none for anything else.
pub fn items(node: &Node) -> &[Node] {
    match &node.kind {
        NodeKind::Sequence(items) => items,
        _ => &[],
    }
}

/// Objects of a document: its root, the items of a top-level list, and the
/// `items` of a `kind: List`.
pub fn objects(root: &Node) -> Vec<&Node> {
    match &root.kind {
        NodeKind::Sequence(items) => items.iter().collect(),
        NodeKind::Mapping(_) => {
            let mut v = vec![root];
            if root.get("kind").and_then(Node::as_str) == Some("List") {
                v.extend(root.get("items").map(items).unwrap_or_default());
            }
            v
        }
        _ => Vec::new(),
    }
}

/// A workload container's image field in a file, and its marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IndexedContainer {
    pub kind: String,
    /// The object's `metadata.namespace` (workloads without one are not
    /// indexed: where they land is decided elsewhere).
    pub namespace: String,
    pub name: String,
    pub container: String,
    /// 1-based line of the `image:` value.
    pub line: usize,
    /// `NAMESPACE:NAME` of the policy the field's marker names (a suffix
    /// dropped); `None` without a (valid) marker.
    pub policy: Option<String>,
}

/// Every container image field of every workload in a file's text, with the
/// marker on it if any: the index the admission webhook's marker check
/// reads. A text that does not parse indexes nothing.
pub fn marker_index(text: &str) -> Vec<IndexedContainer> {
    let Ok(docs) = yaml::parse(text) else {
        return Vec::new();
    };
    let marked = scan_documents(text, &docs);
    let mut out = Vec::new();
    for doc in &docs {
        for obj in objects(&doc.root) {
            let Some(id) = object_of(obj) else { continue };
            if !WORKLOAD_KINDS.contains(&id.kind.as_str()) {
                continue;
            }
            let Some(namespace) = id.namespace.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            for list in pod_specs(&id.kind, obj) {
                for c in items(list) {
                    let (Some(image), Some(container)) =
                        (c.get("image"), c.get("name").and_then(Node::as_str))
                    else {
                        continue;
                    };
                    let policy = marked
                        .iter()
                        .find(|m| m.span.start == image.span.start)
                        .and_then(|m| match &m.marker {
                            CommentKind::Marker(marker) => Some(marker.policy()),
                            _ => None,
                        });
                    out.push(IndexedContainer {
                        kind: id.kind.clone(),
                        namespace: namespace.clone(),
                        name: id.name.clone(),
                        container: container.to_string(),
                        line: image.span.line,
                        policy,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_index() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: apps}\nspec:\n  template:\n    spec:\n      initContainers:\n        - name: init\n          image: busybox:1\n      containers:\n        - name: web\n          image: ghcr.io/org/web:1 # {\"$imagepolicy\": \"flux-system:web:tag\"}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: nons}\nspec:\n  containers: [{name: c, image: x}]\n";
        let idx = marker_index(text);
        assert_eq!(idx.len(), 2, "{idx:?}");
        assert_eq!(
            (
                idx[0].container.as_str(),
                idx[0].line,
                idx[0].policy.clone()
            ),
            ("init", 9, None)
        );
        assert_eq!(idx[1].policy.as_deref(), Some("flux-system:web"));
        assert_eq!(
            (
                idx[1].kind.as_str(),
                idx[1].namespace.as_str(),
                idx[1].name.as_str()
            ),
            ("Deployment", "apps", "web")
        );
        assert!(marker_index("a: [").is_empty());
    }
}
