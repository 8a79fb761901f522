//! The managed set kept in the cluster (SPEC §2.5): ConfigMap `<name>-managed`, owned by the
//! resource, holding the gzip of the set (`binaryData.managed.json.gz`) when it fits in
//! 900 KiB; a larger set is one gzip stream cut into parts `<name>-managed-<save>-<i>`, which
//! the head lists. A save writes the new parts first, then the head (one atomic write that
//! switches to them), then removes the old parts, so a crash at any point leaves a complete set.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use sha2::{Digest, Sha256};

use crate::controller::objects::{self, MAX_PART_BYTES, Owner};
use crate::sync::managed::{ManagedSet, ManagedStore, StoreError};

pub const ROLE: &str = "managed";
pub const PART_ROLE: &str = "managed-part";
pub const GZ_KEY: &str = "managed.json.gz";
pub const PART_KEY: &str = "part";
const SAVE_ANNOTATION: &str = "dirsync.io/save";
const PARTS_ANNOTATION: &str = "dirsync.io/parts";
const SHA_ANNOTATION: &str = "dirsync.io/sha256";
const COUNT_ANNOTATION: &str = "dirsync.io/count";

pub fn head_name(resource: &str) -> String {
    format!("{resource}-managed")
}

fn part_name(resource: &str, save: u64, i: usize) -> String {
    format!("{resource}-managed-{save}-{i}")
}

/// One resource's managed set in its namespace.
pub struct ClusterStore {
    api: Api<ConfigMap>,
    owner: Owner,
    /// The sha256 of the set's JSON as last loaded or saved, to skip saving an unchanged set.
    last_sha: Mutex<Option<String>>,
}

impl ClusterStore {
    pub fn new(client: kube::Client, owner: Owner) -> Self {
        Self {
            api: Api::namespaced(client, &owner.namespace),
            owner,
            last_sha: Mutex::new(None),
        }
    }

    fn io(e: kube::Error) -> StoreError {
        StoreError::Io(crate::http::cut(&e.to_string()))
    }

    /// Reads another resource's set (read-only), e.g. for hand-overs. A missing set is empty.
    pub async fn load_foreign(
        client: kube::Client,
        namespace: &str,
        resource: &str,
        uid: &str,
    ) -> Result<ManagedSet, StoreError> {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        read(&api, resource, Some(uid)).await.map(|(s, _)| s)
    }
}

/// Reads the set of `resource`; with `uid`, a head controlled by anything else is refused.
async fn read(
    api: &Api<ConfigMap>,
    resource: &str,
    uid: Option<&str>,
) -> Result<(ManagedSet, Option<String>), StoreError> {
    let head_name = head_name(resource);
    let Some(head) = api.get_opt(&head_name).await.map_err(ClusterStore::io)? else {
        return Ok((ManagedSet::new(), None));
    };
    if let Some(uid) = uid {
        let controlled = head
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|r| r.iter().any(|o| o.uid == uid && o.controller == Some(true)));
        if !controlled {
            return Err(StoreError::WrongOwner(format!(
                "ConfigMap {head_name:?} is not owned by this DirectorySync (uid {uid}); refusing to use its managed set"
            )));
        }
    }
    let ann = head.metadata.annotations.clone().unwrap_or_default();
    let parts: usize = ann
        .get(PARTS_ANNOTATION)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let save: u64 = ann
        .get(SAVE_ANNOTATION)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut gz = head
        .binary_data
        .as_ref()
        .and_then(|d| d.get(GZ_KEY))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    for i in 1..parts {
        let name = part_name(resource, save, i);
        let part = api
            .get_opt(&name)
            .await
            .map_err(ClusterStore::io)?
            .ok_or_else(|| {
                StoreError::Io(format!("part {name:?} of the managed set is missing"))
            })?;
        let bytes = part
            .binary_data
            .as_ref()
            .and_then(|d| d.get(PART_KEY))
            .ok_or_else(|| StoreError::Io(format!("part {name:?} of the managed set is empty")))?;
        gz.extend_from_slice(&bytes.0);
    }
    if gz.is_empty() {
        return Ok((ManagedSet::new(), ann.get(SHA_ANNOTATION).cloned()));
    }
    let set = ManagedSet::from_gzip(&gz)?;
    Ok((set, ann.get(SHA_ANNOTATION).cloned()))
}

#[async_trait]
impl ManagedStore for ClusterStore {
    async fn load(&self) -> Result<ManagedSet, StoreError> {
        let (set, sha) = read(&self.api, &self.owner.name, Some(&self.owner.uid)).await?;
        if let Ok(mut l) = self.last_sha.lock() {
            *l = sha;
        }
        Ok(set)
    }

    async fn save(&self, set: &ManagedSet) -> Result<(), StoreError> {
        let json = set.to_json_vec();
        let sha = crate::sync::csv::hex(&Sha256::digest(&json));
        drop(json);
        if self.last_sha.lock().ok().and_then(|l| l.clone()).as_deref() == Some(sha.as_str()) {
            return Ok(());
        }
        let head_name = head_name(&self.owner.name);
        let existing = self.api.get_opt(&head_name).await.map_err(Self::io)?;
        if let Some(h) = &existing
            && !self.owner.controls(&h.metadata)
        {
            return Err(StoreError::WrongOwner(format!(
                "ConfigMap {head_name:?} is not owned by this DirectorySync; refusing to overwrite it"
            )));
        }
        let prev_save: u64 = existing
            .as_ref()
            .and_then(|h| h.metadata.annotations.as_ref())
            .and_then(|a| a.get(SAVE_ANNOTATION))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let save = prev_save + 1;
        let gz = set.to_gzip();
        let chunks: Vec<&[u8]> = gz.chunks(MAX_PART_BYTES).collect();
        let mut ann = BTreeMap::from([
            (SAVE_ANNOTATION.to_owned(), save.to_string()),
            (PARTS_ANNOTATION.to_owned(), chunks.len().max(1).to_string()),
            (SHA_ANNOTATION.to_owned(), sha.clone()),
            (COUNT_ANNOTATION.to_owned(), set.len().to_string()),
        ]);
        for (i, chunk) in chunks.iter().enumerate().skip(1) {
            let name = part_name(&self.owner.name, save, i);
            let cm = ConfigMap {
                metadata: self.owner.meta(&name, PART_ROLE, ann.clone()),
                binary_data: Some(BTreeMap::from([(
                    PART_KEY.to_owned(),
                    ByteString(chunk.to_vec()),
                )])),
                ..ConfigMap::default()
            };
            objects::apply_configmap(&self.api, &cm)
                .await
                .map_err(Self::io)?;
        }
        ann.insert(
            "dirsync.io/format".into(),
            "gzip of the managed-set JSON, parts in order".into(),
        );
        let head = ConfigMap {
            metadata: self.owner.meta(&head_name, ROLE, ann),
            binary_data: Some(BTreeMap::from([(
                GZ_KEY.to_owned(),
                ByteString(chunks.first().map(|c| c.to_vec()).unwrap_or_default()),
            )])),
            ..ConfigMap::default()
        };
        objects::apply_configmap(&self.api, &head)
            .await
            .map_err(Self::io)?;
        let keep: Vec<String> = (1..chunks.len())
            .map(|i| part_name(&self.owner.name, save, i))
            .collect();
        for (name, _) in objects::list_names(&self.api, &self.owner, PART_ROLE)
            .await
            .map_err(Self::io)?
        {
            if !keep.contains(&name) {
                objects::delete_owned(&self.api, &self.owner, &name)
                    .await
                    .map_err(Self::io)?;
            }
        }
        if let Ok(mut l) = self.last_sha.lock() {
            *l = Some(sha);
        }
        Ok(())
    }
}
