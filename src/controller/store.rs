//! The managed set kept in the cluster (docs/behaviour.md §2.5): ConfigMap `<name>-managed`, owned by the
//! resource, holding the gzip of the set (`binaryData.managed.json.gz`) when it fits in
//! 900 KiB; a larger set is one gzip stream cut into parts `<name>-managed-<save>-<i>`, which
//! the head lists. A save writes the new parts first, then the head (one atomic write that
//! switches to them), then removes the old parts, so a crash at any point leaves a complete set.
//!
//! With `--store-in=secrets` these are Secrets. A change of `--store-in` loses nothing: a load
//! reads both kinds and takes the newer save (save numbers go on across kinds), moves a set
//! found in the other kind to the configured one at once, and a save removes the other kind's
//! copy after writing the configured one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::controller::objects::{
    self, MAX_PART_BYTES, Objects, OwnedObject, Owner, StoreKind, WriteCheck,
};
use crate::sync::incremental::DeltaState;
use crate::sync::managed::{ManagedSet, ManagedStore, StoreError};

pub const ROLE: &str = "managed";
pub const PART_ROLE: &str = "managed-part";
pub const GZ_KEY: &str = "managed.json.gz";
/// The delta state (docs/behaviour.md §7), on the head beside the set.
pub const DELTA_KEY: &str = "delta.json";
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

fn io(e: kube::Error) -> StoreError {
    StoreError::Io(crate::clients::outbound::cut(&e.to_string()))
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn save_number(meta: &ObjectMeta) -> u64 {
    annotation(meta, SAVE_ANNOTATION)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|r| r.iter().any(|o| o.uid == uid && o.controller == Some(true)))
}

/// One resource's managed set in its namespace.
pub struct ManagedSetObjects {
    objects: Objects,
    owner: Owner,
    /// The sha256 of the set's JSON as last loaded or saved, to skip saving an unchanged set.
    last_sha: Mutex<Option<String>>,
    /// The delta state as last loaded or saved, and the one the next save writes.
    saved_delta: Mutex<Option<DeltaState>>,
    delta: Mutex<Option<DeltaState>>,
}

/// A set as read back, and where from.
struct Loaded {
    set: ManagedSet,
    sha: Option<String>,
    kind: StoreKind,
    delta: Option<DeltaState>,
}

impl ManagedSetObjects {
    /// The store of `owner`, writing objects of `kind`.
    pub fn new(client: kube::Client, owner: Owner, kind: StoreKind) -> Self {
        Self {
            objects: Objects::new(client, &owner.namespace, kind),
            owner,
            last_sha: Mutex::new(None),
            saved_delta: Mutex::new(None),
            delta: Mutex::new(None),
        }
    }

    /// Reads another resource's set (read-only), e.g. for hand-overs. A missing set is empty.
    pub async fn load_foreign(
        client: kube::Client,
        namespace: &str,
        resource: &str,
        uid: &str,
        kind: StoreKind,
    ) -> Result<ManagedSet, StoreError> {
        let objects = Objects::new(client, namespace, kind);
        read(&objects, resource, uid).await.map(|l| l.set)
    }

    /// Writes `set` (whose JSON hashes to `sha`) and `delta` in the configured kind, then
    /// removes a copy of the other kind.
    async fn write(
        &self,
        set: &ManagedSet,
        sha: String,
        delta: Option<DeltaState>,
    ) -> Result<(), StoreError> {
        let head_name = head_name(&self.owner.name);
        let existing = self.objects.get_metadata(&head_name).await.map_err(io)?;
        if let Some(h) = &existing
            && !self.owner.controls(h)
        {
            return Err(StoreError::WrongOwner(format!(
                "{} is not owned by this DirectorySync; refusing to overwrite it",
                self.objects.describe(&head_name)
            )));
        }
        let other = self.objects.other();
        let other_head = other_head(&other, &head_name, &self.owner.uid).await?;
        // Save numbers go on from the other kind's, so that a load seeing both (its copy could
        // not be removed) takes this one.
        let save = existing
            .as_ref()
            .map(save_number)
            .unwrap_or(0)
            .max(other_head.as_ref().map(save_number).unwrap_or(0))
            + 1;
        let gz = set.to_gzip();
        let chunks = crate::sync::gzip::split(&gz, MAX_PART_BYTES);
        let mut ann = BTreeMap::from([
            (SAVE_ANNOTATION.to_owned(), save.to_string()),
            (PARTS_ANNOTATION.to_owned(), chunks.len().max(1).to_string()),
            (SHA_ANNOTATION.to_owned(), sha.clone()),
            (COUNT_ANNOTATION.to_owned(), set.len().to_string()),
        ]);
        for (i, chunk) in chunks.iter().enumerate().skip(1) {
            let name = part_name(&self.owner.name, save, i);
            if let WriteCheck::Foreign = self
                .objects
                .check_writable(&self.owner, &name)
                .await
                .map_err(io)?
            {
                return Err(StoreError::WrongOwner(format!(
                    "{} is not owned by this DirectorySync; refusing to overwrite it",
                    self.objects.describe(&name)
                )));
            }
            let part = OwnedObject {
                metadata: self.owner.meta(&name, PART_ROLE, ann.clone()),
                binary: BTreeMap::from([(PART_KEY.to_owned(), chunk.to_vec())]),
                ..OwnedObject::default()
            };
            self.objects.apply(&part).await.map_err(io)?;
        }
        ann.insert(
            "dirsync.io/format".into(),
            "gzip of the managed-set JSON, parts in order".into(),
        );
        let text = match &delta {
            Some(d) => BTreeMap::from([(
                DELTA_KEY.to_owned(),
                serde_json::to_string(d).map_err(|e| StoreError::Io(e.to_string()))?,
            )]),
            None => BTreeMap::new(),
        };
        let head = OwnedObject {
            metadata: self.owner.meta(&head_name, ROLE, ann),
            binary: BTreeMap::from([(
                GZ_KEY.to_owned(),
                chunks.first().map(|c| c.to_vec()).unwrap_or_default(),
            )]),
            text,
        };
        self.objects.apply(&head).await.map_err(io)?;
        let keep: Vec<String> = (1..chunks.len())
            .map(|i| part_name(&self.owner.name, save, i))
            .collect();
        for (name, _) in self
            .objects
            .list_names(&self.owner, PART_ROLE)
            .await
            .map_err(io)?
        {
            if !keep.contains(&name) {
                self.objects
                    .delete_owned(&self.owner, &name)
                    .await
                    .map_err(io)?;
            }
        }
        if other_head.is_some() {
            // The set is safe in the configured kind now; a copy left behind is harmless to
            // loads (an older save) but keeps directory data where it should no longer be.
            if let Err(e) = remove_all(&other, &self.owner, &head_name).await {
                warn!(name = %self.owner.name, namespace = %self.owner.namespace, kind = %other.kind(), error = %crate::clients::outbound::cut(&e.to_string()), "could not remove the managed set of the other kind (left by a change of --store-in)");
            } else {
                info!(name = %self.owner.name, namespace = %self.owner.namespace, from = %other.kind(), to = %self.objects.kind(), "moved the managed set");
            }
        }
        if let Ok(mut l) = self.last_sha.lock() {
            *l = Some(sha);
        }
        if let Ok(mut d) = self.saved_delta.lock() {
            *d = delta;
        }
        Ok(())
    }
}

/// The other kind's head if this resource controls it. Not being allowed to read it counts as
/// absent (with a warning): the configured kind is what this operator is set up for.
async fn other_head(
    other: &Objects,
    head_name: &str,
    uid: &str,
) -> Result<Option<ObjectMeta>, StoreError> {
    match other.get_metadata(head_name).await {
        Ok(m) => Ok(m.filter(|m| controlled_by(m, uid))),
        Err(e) if objects::is_forbidden(&e) => {
            warn!(object = %other.describe(head_name), "not allowed to look for a managed set of the other kind (left by a change of --store-in)");
            Ok(None)
        }
        Err(e) => Err(io(e)),
    }
}

async fn remove_all(objects: &Objects, owner: &Owner, head_name: &str) -> Result<(), kube::Error> {
    objects.delete_owned(owner, head_name).await?;
    for (name, _) in objects.list_names(owner, PART_ROLE).await? {
        objects.delete_owned(owner, &name).await?;
    }
    Ok(())
}

/// Reads the set of `resource` from the configured kind or the other one, whichever holds the
/// newer save; a head of the configured kind controlled by anything but `uid` is refused (one
/// of the other kind is ignored: this resource never wrote it).
async fn read(objects: &Objects, resource: &str, uid: &str) -> Result<Loaded, StoreError> {
    let head_name = head_name(resource);
    let mine = objects.get(&head_name).await.map_err(io)?;
    if let Some(head) = &mine
        && !controlled_by(&head.metadata, uid)
    {
        return Err(StoreError::WrongOwner(format!(
            "{} is not owned by this DirectorySync (uid {uid}); refusing to use its managed set",
            objects.describe(&head_name)
        )));
    }
    let other = objects.other();
    let theirs = match other_head(&other, &head_name, uid).await? {
        Some(meta)
            if mine
                .as_ref()
                .is_none_or(|m| save_number(&meta) > save_number(&m.metadata)) =>
        {
            other.get(&head_name).await.map_err(io)?
        }
        _ => None,
    };
    let (from, head) = match (theirs, mine) {
        (Some(h), _) => (other, h),
        (None, Some(h)) => (objects.clone(), h),
        (None, None) => {
            return Ok(Loaded {
                set: ManagedSet::new(),
                sha: None,
                kind: objects.kind(),
                delta: None,
            });
        }
    };
    let parts: usize = annotation(&head.metadata, PARTS_ANNOTATION)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let save = save_number(&head.metadata);
    let mut gz = head.bytes(GZ_KEY).map(<[u8]>::to_vec).unwrap_or_default();
    for i in 1..parts {
        let name = part_name(resource, save, i);
        let part = from.get(&name).await.map_err(io)?.ok_or_else(|| {
            StoreError::Io(format!("part {name:?} of the managed set is missing"))
        })?;
        let bytes = part
            .bytes(PART_KEY)
            .ok_or_else(|| StoreError::Io(format!("part {name:?} of the managed set is empty")))?;
        gz.extend_from_slice(bytes);
    }
    let sha = annotation(&head.metadata, SHA_ANNOTATION).map(str::to_owned);
    // A delta state that cannot be read costs one full run, never the set.
    let delta = head.text(DELTA_KEY).and_then(|t| match serde_json::from_str(t) {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(resource, error = %e, "the kept delta state is unreadable; the next run is full");
            None
        }
    });
    let set = if gz.is_empty() {
        ManagedSet::new()
    } else {
        ManagedSet::from_gzip(&gz)?
    };
    Ok(Loaded {
        set,
        sha,
        kind: from.kind(),
        delta,
    })
}

#[async_trait]
impl ManagedStore for ManagedSetObjects {
    async fn load(&self) -> Result<ManagedSet, StoreError> {
        let loaded = read(&self.objects, &self.owner.name, &self.owner.uid).await?;
        self.set_delta(loaded.delta.clone());
        if loaded.kind != self.objects.kind() {
            // Found where an operator with the other --store-in left it: move it now, before
            // anything is written to the destination, so a run that cannot write the
            // configured kind stops here rather than after applying.
            let json = loaded.set.to_json_vec();
            let sha = crate::sync::csv::hex(&Sha256::digest(&json));
            drop(json);
            self.write(&loaded.set, sha, loaded.delta).await?;
            return Ok(loaded.set);
        }
        if let Ok(mut l) = self.last_sha.lock() {
            *l = loaded.sha;
        }
        if let Ok(mut d) = self.saved_delta.lock() {
            *d = loaded.delta;
        }
        Ok(loaded.set)
    }

    async fn save(&self, set: &ManagedSet) -> Result<(), StoreError> {
        let json = set.to_json_vec();
        let sha = crate::sync::csv::hex(&Sha256::digest(&json));
        drop(json);
        let delta = self.delta();
        let same_delta = self.saved_delta.lock().ok().is_some_and(|d| *d == delta);
        if same_delta
            && self.last_sha.lock().ok().and_then(|l| l.clone()).as_deref() == Some(sha.as_str())
        {
            return Ok(());
        }
        self.write(set, sha, delta).await
    }

    fn delta(&self) -> Option<DeltaState> {
        self.delta.lock().ok().and_then(|d| d.clone())
    }

    fn set_delta(&self, delta: Option<DeltaState>) {
        if let Ok(mut d) = self.delta.lock() {
            *d = delta;
        }
    }
}
