//! The objects the operator owns beside the resource (previews, managed set, run reports):
//! names, labels, owner references, and how they are written (server-side apply) and removed
//! (only when this resource controls them).
//!
//! They are ConfigMaps by default, or Secrets with `--store-in=secrets` (the `view` role reads
//! ConfigMaps but not Secrets, and these objects hold directory data). [`OwnedObject`] is the
//! kind-neutral payload and [`Objects`] reads and writes it as either kind, so the preview,
//! report and managed-set code is written once.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::controller::error::{Error, Result};
use crate::crd::DirectorySync;
pub use crate::crd::StoreKind;

/// Field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "dirsync-operator";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "dirsync";
/// Label: the uid of the DirectorySync an object belongs to.
pub const LABEL_OWNER_UID: &str = "dirsync.io/owner-uid";
/// Label: what the object is (`preview`, `preview-part`, `managed`, `managed-part`, `report`).
pub const LABEL_ROLE: &str = "dirsync.io/role";
/// Largest payload per object: ConfigMaps and Secrets are both limited to 1 MiB in total.
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

/// An owned object's metadata and payload, whatever kind stores it: `text` is a ConfigMap's
/// `data`, `binary` its `binaryData`; a Secret's `data` carries both.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnedObject {
    pub metadata: ObjectMeta,
    pub text: BTreeMap<String, String>,
    pub binary: BTreeMap<String, Vec<u8>>,
}

impl OwnedObject {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// A payload as text (a binary payload that is valid UTF-8 counts: a Secret read back
    /// does not say which keys were text).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.text.get(key).map(String::as_str).or_else(|| {
            self.binary
                .get(key)
                .and_then(|b| std::str::from_utf8(b).ok())
        })
    }

    /// A payload's bytes, text or binary.
    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.binary
            .get(key)
            .map(Vec::as_slice)
            .or_else(|| self.text.get(key).map(String::as_bytes))
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    pub fn to_configmap(&self) -> ConfigMap {
        ConfigMap {
            metadata: self.metadata.clone(),
            data: (!self.text.is_empty()).then(|| self.text.clone()),
            binary_data: (!self.binary.is_empty()).then(|| {
                self.binary
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                    .collect()
            }),
            ..ConfigMap::default()
        }
    }

    pub fn from_configmap(cm: ConfigMap) -> OwnedObject {
        OwnedObject {
            metadata: cm.metadata,
            text: cm.data.unwrap_or_default(),
            binary: cm
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        }
    }

    pub fn to_secret(&self) -> Secret {
        let mut data: BTreeMap<String, ByteString> = self
            .text
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
            .collect();
        data.extend(
            self.binary
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone()))),
        );
        Secret {
            metadata: self.metadata.clone(),
            type_: Some("Opaque".to_owned()),
            data: (!data.is_empty()).then_some(data),
            ..Secret::default()
        }
    }

    /// A Secret's payloads: UTF-8 values as text, the rest as binary (what a ConfigMap would
    /// have held; readers use [`Self::text`] and [`Self::bytes`], which accept either).
    pub fn from_secret(s: Secret) -> OwnedObject {
        let mut text = BTreeMap::new();
        let mut binary = BTreeMap::new();
        for (k, v) in s.data.unwrap_or_default() {
            match String::from_utf8(v.0) {
                Ok(t) => {
                    text.insert(k, t);
                }
                Err(e) => {
                    binary.insert(k, e.into_bytes());
                }
            }
        }
        for (k, v) in s.string_data.unwrap_or_default() {
            text.insert(k, v);
        }
        OwnedObject {
            metadata: s.metadata,
            text,
            binary,
        }
    }
}

/// Reads and writes [`OwnedObject`]s in one namespace as ConfigMaps or Secrets.
#[derive(Clone)]
pub struct Objects {
    kind: StoreKind,
    configmaps: Api<ConfigMap>,
    secrets: Api<Secret>,
}

impl Objects {
    pub fn new(client: kube::Client, namespace: &str, kind: StoreKind) -> Objects {
        Objects {
            kind,
            configmaps: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
        }
    }

    /// The `verb` label of `dirsync_kube_writes_total` for a write of this kind (`configmap`,
    /// `secret`).
    pub fn write_verb(&self) -> String {
        self.kind.as_str().to_ascii_lowercase()
    }

    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The same namespace, the other kind.
    pub fn other(&self) -> Objects {
        Objects {
            kind: self.kind.other(),
            ..self.clone()
        }
    }

    /// `Secret "name"`, for messages.
    pub fn describe(&self, name: &str) -> String {
        format!("{} {name:?}", self.kind)
    }

    /// Reads one object; `None` when absent.
    pub async fn get(&self, name: &str) -> Result<Option<OwnedObject>, kube::Error> {
        Ok(match self.kind {
            StoreKind::ConfigMap => self
                .configmaps
                .get_opt(name)
                .await?
                .map(OwnedObject::from_configmap),
            StoreKind::Secret => self
                .secrets
                .get_opt(name)
                .await?
                .map(OwnedObject::from_secret),
        })
    }

    /// Reads one object's metadata; `None` when absent.
    pub async fn get_metadata(&self, name: &str) -> Result<Option<ObjectMeta>, kube::Error> {
        match self.kind {
            StoreKind::ConfigMap => get_metadata_in(&self.configmaps, name).await,
            StoreKind::Secret => get_metadata_in(&self.secrets, name).await,
        }
    }

    /// Checks that `name` is free or ours before writing it.
    pub async fn check_writable(
        &self,
        owner: &Owner,
        name: &str,
    ) -> Result<WriteCheck, kube::Error> {
        Ok(match self.get_metadata(name).await? {
            Some(existing) if !owner.controls(&existing) => WriteCheck::Foreign,
            _ => WriteCheck::Ok,
        })
    }

    /// Server-side applies `obj` (complete: fields left out are removed).
    pub async fn apply(&self, obj: &OwnedObject) -> Result<(), kube::Error> {
        let name = obj.name().to_owned();
        let mut metadata = obj.metadata.clone();
        metadata.managed_fields = None;
        metadata.resource_version = None;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match self.kind {
            StoreKind::ConfigMap => {
                let cm = obj.to_configmap();
                let value = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": metadata,
                    "data": cm.data,
                    "binaryData": cm.binary_data,
                });
                self.configmaps
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await?;
            }
            StoreKind::Secret => {
                let s = obj.to_secret();
                let value = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": metadata,
                    "type": s.type_,
                    "data": s.data,
                });
                self.secrets
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes `name` if this resource controls it (a gone object is fine).
    pub async fn delete_owned(&self, owner: &Owner, name: &str) -> Result<bool, kube::Error> {
        match self.kind {
            StoreKind::ConfigMap => delete_owned_in(&self.configmaps, owner, name).await,
            StoreKind::Secret => delete_owned_in(&self.secrets, owner, name).await,
        }
    }

    /// Names (and metadata) of this resource's objects with `role`.
    pub async fn list_names(
        &self,
        owner: &Owner,
        role: &str,
    ) -> Result<Vec<(String, ObjectMeta)>, kube::Error> {
        match self.kind {
            StoreKind::ConfigMap => list_names_in(&self.configmaps, owner, role).await,
            StoreKind::Secret => list_names_in(&self.secrets, owner, role).await,
        }
    }
}

async fn get_metadata_in<K>(api: &Api<K>, name: &str) -> Result<Option<ObjectMeta>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    Ok(api.get_metadata_opt(name).await?.map(|m| m.metadata))
}

async fn delete_owned_in<K>(api: &Api<K>, owner: &Owner, name: &str) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match api.get_metadata_opt(name).await? {
        Some(existing) if owner.controls(&existing.metadata) => {
            // The uid precondition: never delete a same-named object made since the look.
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

async fn list_names_in<K>(
    api: &Api<K>,
    owner: &Owner,
    role: &str,
) -> Result<Vec<(String, ObjectMeta)>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let list = api.list_metadata(&owner.selector(role)).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|m| owner.controls(&m.metadata))
        .filter_map(|m| m.metadata.name.clone().map(|n| (n, m.metadata)))
        .collect())
}

/// Whether `e` is the API server refusing the request (403).
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &[(&str, &str)], binary: &[(&str, &[u8])]) -> OwnedObject {
        OwnedObject {
            metadata: ObjectMeta {
                name: Some("example-com-preview".into()),
                namespace: Some("identity".into()),
                annotations: Some(BTreeMap::from([("dirsync.io/sha256".into(), "ab".into())])),
                ..ObjectMeta::default()
            },
            text: text
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            binary: binary
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        }
    }

    /// Bytes that are not UTF-8, as gzip never is (0x1f 0x8b).
    const GZ: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00, 0x80];

    #[test]
    fn configmap_round_trip_keeps_text_and_binary_apart() {
        let o = object(
            &[
                ("summary.json", "{\"rows\": 1}"),
                ("preview.csv", "\u{feff}名前\r\n"),
            ],
            &[("preview.csv.gz", GZ)],
        );
        let cm = o.to_configmap();
        assert_eq!(
            cm.data
                .as_ref()
                .map(|d| d.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["preview.csv".to_string(), "summary.json".to_string()])
        );
        assert_eq!(
            cm.binary_data
                .as_ref()
                .and_then(|b| b.get("preview.csv.gz"))
                .map(|b| b.0.as_slice()),
            Some(GZ)
        );
        assert_eq!(OwnedObject::from_configmap(cm), o);
        // No payload of a kind: the field is left out rather than empty.
        let text_only = object(&[("a", "b")], &[]).to_configmap();
        assert!(text_only.binary_data.is_none());
    }

    #[test]
    fn secret_round_trip_carries_every_payload_in_data() {
        let o = object(
            &[
                ("summary.json", "{\"rows\": 1}"),
                ("preview.csv", "\u{feff}名前\r\n"),
            ],
            &[("preview.csv.gz", GZ)],
        );
        let s = o.to_secret();
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert!(s.string_data.is_none());
        let data = s.data.clone().unwrap_or_default();
        assert_eq!(data.len(), 3);
        assert_eq!(data["preview.csv"].0, "\u{feff}名前\r\n".as_bytes());
        assert_eq!(data["preview.csv.gz"].0, GZ);
        assert_eq!(s.metadata, o.metadata);
        let back = OwnedObject::from_secret(s);
        assert_eq!(back, o, "text stays text, gzip stays binary");
        // ConfigMap -> Secret -> ConfigMap is the identity too.
        let cm = o.to_configmap();
        let again = OwnedObject::from_secret(OwnedObject::from_configmap(cm.clone()).to_secret())
            .to_configmap();
        assert_eq!(again, cm);
    }

    #[test]
    fn binary_that_happens_to_be_utf8_reads_back_through_either_accessor() {
        // A Secret does not say which keys were binary: bytes that are valid UTF-8 come back
        // as text, and readers see the same bytes either way.
        let o = object(&[], &[("part", b"plain ascii")]);
        let back = OwnedObject::from_secret(o.to_secret());
        assert_eq!(back.bytes("part"), Some(&b"plain ascii"[..]));
        assert_eq!(back.text("part"), Some("plain ascii"));
        assert_eq!(o.bytes("part"), back.bytes("part"));
        let gz = OwnedObject::from_secret(object(&[], &[("part", GZ)]).to_secret());
        assert_eq!(gz.bytes("part"), Some(GZ));
        assert_eq!(gz.text("part"), None, "gzip is not text");
        assert_eq!(gz.bytes("missing"), None);
    }

    #[test]
    fn string_data_is_read_as_text() {
        let s = Secret {
            string_data: Some(BTreeMap::from([("k".into(), "v".into())])),
            ..Secret::default()
        };
        assert_eq!(OwnedObject::from_secret(s).text("k"), Some("v"));
    }
}
