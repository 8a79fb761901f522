//! The objects the operator owns beside the resource (previews, managed set, run reports):
//! names, labels, owner references, and how they are written (server-side apply) and removed
//! (only when this resource controls them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use crate::controller::error::{Error, Result};
use crate::crd::DirectorySync;

/// Field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "dirsync-operator";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "dirsync";
/// Label: the uid of the DirectorySync an object belongs to.
pub const LABEL_OWNER_UID: &str = "dirsync.io/owner-uid";
/// Label: what the object is (`preview`, `preview-part`, `managed`, `managed-part`, `report`).
pub const LABEL_ROLE: &str = "dirsync.io/role";
/// Largest payload per object: ConfigMaps are limited to 1 MiB in total.
pub const MAX_PART_BYTES: usize = 900 * 1024;

/// The facts about the resource every owned object needs.
#[derive(Clone, Debug)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub reference: OwnerReference,
}

impl Owner {
    pub fn of(obj: &DirectorySync) -> Result<Owner> {
        let name = obj
            .meta()
            .name
            .clone()
            .ok_or(Error::MissingObjectKey(".metadata.name"))?;
        let namespace = obj
            .namespace()
            .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
        let uid = obj
            .meta()
            .uid
            .clone()
            .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
        let reference = obj
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
        Ok(Owner {
            name,
            namespace,
            uid,
            reference,
        })
    }

    /// Labels of an owned object with `role`.
    pub fn labels(&self, role: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGED_BY.to_owned(),
            ),
            (LABEL_OWNER_UID.to_owned(), self.uid.clone()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
        ])
    }

    /// Metadata of an owned object.
    pub fn meta(
        &self,
        name: &str,
        role: &str,
        annotations: BTreeMap<String, String>,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(role)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// Whether `meta` is controlled by this resource.
    pub fn controls(&self, meta: &ObjectMeta) -> bool {
        meta.owner_references.as_ref().is_some_and(|refs| {
            refs.iter()
                .any(|r| r.uid == self.uid && r.controller == Some(true))
        })
    }

    /// Selector for this resource's objects with `role`.
    pub fn selector(&self, role: &str) -> ListParams {
        ListParams::default().labels(&format!(
            "{LABEL_OWNER_UID}={},{LABEL_ROLE}={role}",
            self.uid
        ))
    }
}

/// Why an owned object cannot be written.
pub enum WriteCheck {
    /// Absent or ours: go ahead.
    Ok,
    /// An object of that name exists and this resource does not control it.
    Foreign,
}

/// Checks that `name` is free or ours before writing it.
pub async fn check_writable(
    api: &Api<ConfigMap>,
    owner: &Owner,
    name: &str,
) -> Result<WriteCheck, kube::Error> {
    Ok(match api.get_metadata_opt(name).await? {
        Some(existing) if !owner.controls(&existing.metadata) => WriteCheck::Foreign,
        _ => WriteCheck::Ok,
    })
}

/// Server-side applies `cm` (complete: fields left out are removed).
pub async fn apply_configmap(
    api: &Api<ConfigMap>,
    cm: &ConfigMap,
) -> Result<ConfigMap, kube::Error> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let mut body = cm.clone();
    body.metadata.managed_fields = None;
    body.metadata.resource_version = None;
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": body.metadata,
        "data": body.data,
        "binaryData": body.binary_data,
    });
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
}

/// Deletes `name` if this resource controls it (a gone object is fine).
pub async fn delete_owned(
    api: &Api<ConfigMap>,
    owner: &Owner,
    name: &str,
) -> Result<bool, kube::Error> {
    match api.get_metadata_opt(name).await? {
        Some(existing) if owner.controls(&existing.metadata) => {
            let dp =
                DeleteParams {
                    preconditions: existing.metadata.uid.clone().map(|uid| {
                        kube::api::Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }
                    }),
                    ..DeleteParams::default()
                };
            match api.delete(name, &dp).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
                Err(e) => Err(e),
            }
        }
        _ => Ok(false),
    }
}

/// Reads one ConfigMap; `None` when absent.
pub async fn get_configmap(
    api: &Api<ConfigMap>,
    name: &str,
) -> Result<Option<ConfigMap>, kube::Error> {
    api.get_opt(name).await
}

/// Names of this resource's objects with `role`.
pub async fn list_names(
    api: &Api<ConfigMap>,
    owner: &Owner,
    role: &str,
) -> Result<Vec<(String, ObjectMeta)>, kube::Error> {
    let list = api.list_metadata(&owner.selector(role)).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|m| owner.controls(&m.metadata))
        .filter_map(|m| m.metadata.name.clone().map(|n| (n, m.metadata)))
        .collect())
}
