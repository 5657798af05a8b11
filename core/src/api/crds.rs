//! The CustomResourceDefinitions imageauto installs, generated from the types
//! of this module: `manifests/crds/` holds their rendering (`make crds`
//! regenerates it, a test fails when it drifts).
//!
//! Each kind stores v1 and still serves the older versions users' files say
//! (v1beta2; v1beta1 for ImageUpdateAutomation), deprecated, with the same
//! schema. As the schemas are identical, the apiserver converts between the
//! versions by changing `apiVersion` alone (conversion strategy `None`).
//!
//! The v1 schema is Flux's (the CRDs in `config/crd/bases/` of
//! image-reflector-controller and image-automation-controller): the limits,
//! patterns, enums, defaults and CEL rules come from attributes on the types
//! (and [`super::schema`]); what concerns every kind alike (no `nullable`,
//! the root's `apiVersion`, `kind` and `metadata`, `listKind`) is done here.
//! `core/tests/crds.rs` compares the result with Flux's files and lists
//! the differences that remain, with their reasons.

use super::{ImagePolicy, ImageRepository, ImageUpdateAutomation};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// The version the apiserver stores (and imageauto writes).
pub const STORAGE_VERSION: &str = "v1";

/// The first line of every generated file.
pub const GENERATED_HEADER: &str =
    "# Generated from the Rust types of imageauto_core::api by `make crds`: do not edit.\n";

/// The name of the kustomization in `manifests/crds/`.
pub const KUSTOMIZATION_FILE: &str = "kustomization.yaml";

/// The versions of `kind` (one of the three image kinds) that are served,
/// the stored one first; `None` for any other kind.
pub fn served_versions(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "ImageRepository" | "ImagePolicy" => Some(&["v1", "v1beta2"]),
        "ImageUpdateAutomation" => Some(&["v1", "v1beta2", "v1beta1"]),
        _ => None,
    }
}

/// The CRDs of the three image kinds, in a stable order (ImageRepository,
/// ImagePolicy, ImageUpdateAutomation), each with all its served versions.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        ImageRepository::crd(),
        ImagePolicy::crd(),
        ImageUpdateAutomation::crd(),
    ]
    .into_iter()
    .map(|mut crd| {
        strip_null_enum_values(&mut crd);
        as_fluxs(&mut crd);
        with_served_versions(crd)
    })
    .collect()
}

/// What Flux's CRDs have and schemars does not write, or the reverse:
///
/// - no `nullable`: schemars marks every `Option` nullable; Flux's schema
///   marks nothing, so a `null` is pruned (and defaulted) by the apiserver
///   instead of stored, and our types read an absent field as `None` alike;
/// - at the root, `apiVersion` and `kind` (strings) and `metadata` (an
///   object), as every CRD controller-gen writes, and no `title`;
/// - `listKind` (`<Kind>List`), which the apiserver would otherwise infer.
fn as_fluxs(crd: &mut CustomResourceDefinition) {
    let kind = crd.spec.names.kind.clone();
    crd.spec.names.list_kind = Some(format!("{kind}List"));
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        strip_nullable(root);
        root.title = None;
        let properties = root.properties.get_or_insert_with(Default::default);
        let string = |description: &str| JSONSchemaProps {
            type_: Some("string".into()),
            description: Some(description.into()),
            ..Default::default()
        };
        properties.insert(
            "apiVersion".into(),
            string(
                "APIVersion defines the versioned schema of this representation of an object. \
                 Servers should convert recognized schemas to the latest internal value, and may \
                 reject unrecognized values. More info: \
                 https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
            ),
        );
        properties.insert(
            "kind".into(),
            string(
                "Kind is a string value representing the REST resource this object represents. \
                 Servers may infer this from the endpoint the client submits requests to. Cannot \
                 be updated. In CamelCase. More info: \
                 https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            ),
        );
        properties.insert(
            "metadata".into(),
            JSONSchemaProps {
                type_: Some("object".into()),
                ..Default::default()
            },
        );
    }
}

fn strip_nullable(s: &mut JSONSchemaProps) {
    s.nullable = None;
    for_each_subschema(s, strip_nullable);
}

/// Calls `f` on every schema directly below `s`.
fn for_each_subschema(s: &mut JSONSchemaProps, f: fn(&mut JSONSchemaProps)) {
    let maps = [
        &mut s.properties,
        &mut s.pattern_properties,
        &mut s.definitions,
    ];
    for map in maps.into_iter().flatten() {
        map.values_mut().for_each(f);
    }
    let lists = [&mut s.all_of, &mut s.any_of, &mut s.one_of];
    for list in lists.into_iter().flatten() {
        list.iter_mut().for_each(f);
    }
    if let Some(not) = &mut s.not {
        f(not);
    }
    match &mut s.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => f(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(f),
        None => {}
    }
    for extra in [&mut s.additional_properties, &mut s.additional_items] {
        if let Some(JSONSchemaPropsOrBool::Schema(more)) = extra {
            f(more);
        }
    }
}

/// Removes `null` from every `enum` in the CRD's schemas. schemars lists it
/// among the values of an optional enum (`Option<SigningKeyType>`) beside
/// `nullable: true`, which already admits null. A kube-apiserver 1.20
/// misreads a CRD holding such an enum: the versions after the one that
/// holds it arrive empty, and the CRD is refused.
pub fn strip_null_enum_values(crd: &mut CustomResourceDefinition) {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            strip_null_enum_values_in(schema);
        }
    }
}

fn strip_null_enum_values_in(s: &mut JSONSchemaProps) {
    if let Some(values) = &mut s.enum_ {
        values.retain(|v| !v.0.is_null());
    }
    for_each_subschema(s, strip_null_enum_values_in);
}

/// Adds the deprecated versions of the kind to a CRD that has only v1.
fn with_served_versions(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let kind = crd.spec.names.kind.clone();
    let versions = served_versions(&kind).unwrap_or(&[STORAGE_VERSION]);
    let Some(stored) = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == STORAGE_VERSION)
        .cloned()
    else {
        return crd;
    };
    crd.spec.versions = versions
        .iter()
        .map(|&name| {
            if name == STORAGE_VERSION {
                CustomResourceDefinitionVersion {
                    served: true,
                    storage: true,
                    deprecated: None,
                    deprecation_warning: None,
                    ..stored.clone()
                }
            } else {
                CustomResourceDefinitionVersion {
                    name: name.to_string(),
                    served: true,
                    storage: false,
                    deprecated: Some(true),
                    deprecation_warning: Some(format!(
                        "{name} {kind} is deprecated, upgrade to {STORAGE_VERSION}"
                    )),
                    ..stored.clone()
                }
            }
        })
        .collect();
    crd
}

/// A CRD could not be rendered as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot render a CustomResourceDefinition as YAML: {0}")]
pub struct CrdYamlError(#[from] serde_norway::Error);

/// One CRD as a YAML document, preceded by [`GENERATED_HEADER`] and `---`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdYamlError> {
    Ok(format!(
        "{GENERATED_HEADER}---\n{}",
        serde_norway::to_string(crd)?
    ))
}

/// The file a CRD is kept in: `<group>_<plural>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// All of [`crds`] as one YAML stream, in their order.
pub fn crds_yaml() -> Result<String, CrdYamlError> {
    crds().iter().map(crd_yaml).collect()
}

/// The contents of `manifests/crds/`: `(file name, text)` for each CRD, in
/// the order of [`crds`], then the kustomization that lists them.
pub fn crd_files() -> Result<Vec<(String, String)>, CrdYamlError> {
    let mut files = crds()
        .iter()
        .map(|crd| Ok((crd_file_name(crd), crd_yaml(crd)?)))
        .collect::<Result<Vec<_>, CrdYamlError>>()?;
    let mut kustomization = format!(
        "{GENERATED_HEADER}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
    );
    for (name, _) in &files {
        kustomization.push_str(&format!("- {name}\n"));
    }
    files.push((KUSTOMIZATION_FILE.to_string(), kustomization));
    Ok(files)
}
