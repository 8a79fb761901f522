//! Previews (docs/behaviour.md §4): ConfigMap `<name>-preview`, owned by the resource, holding
//! `summary.json` and the CSV — `data.preview.csv` when it fits in 900 KiB, else gzip in
//! `binaryData.preview.csv.gz`, and when even that is larger, one gzip stream cut into 900 KiB
//! parts in `<name>-preview-1 … -N` (`binaryData.preview.csv.gz.part`). `summary.json` carries
//! a `storage` object naming the layout, the parts and the sha256, so that
//! `dirsync preview get` can reassemble and check any preview.
//!
//! With `--store-in=secrets` the same objects are Secrets (same names, labels and layout; the
//! Secret's `data` carries both payloads), and writing a preview removes this resource's
//! preview of the other kind, so directory data never stays readable where it should not be.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tracing::warn;

use crate::controller::error::{Error, Result};
use crate::controller::objects::{Objects, OwnedObject, Owner, StoreKind, WriteCheck};
use crate::crd::PreviewStatus;
use crate::sync::{PlannedRun, gzip};

pub const ROLE: &str = "preview";
pub const PART_ROLE: &str = "preview-part";
pub const PENDING_ROLE: &str = "pending";
pub const PENDING_PART_ROLE: &str = "pending-part";
pub const SUMMARY_KEY: &str = "summary.json";
pub const CSV_KEY: &str = "preview.csv";
pub const GZ_KEY: &str = "preview.csv.gz";
pub const PART_KEY: &str = "preview.csv.gz.part";
/// Annotation with the CSV's sha256 on every preview object.
pub const SHA_ANNOTATION: &str = "dirsync.io/sha256";
pub const EXPIRES_ANNOTATION: &str = "dirsync.io/expires-at";

/// The name of the main preview object.
pub fn main_name(resource: &str) -> String {
    Shelf::Latest.main_name(resource)
}

/// Which preview: the latest run's (`<name>-preview`), or the one pinned until it is approved
/// (`<name>-pending`, docs/behaviour.md §9). Both have the same layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shelf {
    Latest,
    Pending,
}

impl Shelf {
    fn suffix(self) -> &'static str {
        match self {
            Shelf::Latest => "preview",
            Shelf::Pending => "pending",
        }
    }

    /// The main object, which carries `summary.json`.
    pub fn main_name(self, resource: &str) -> String {
        format!("{resource}-{}", self.suffix())
    }

    /// Part `i` (1-based) of a `gzip-parts` layout.
    pub fn part_name(self, resource: &str, i: usize) -> String {
        format!("{resource}-{}-{i}", self.suffix())
    }

    fn role(self) -> &'static str {
        match self {
            Shelf::Latest => ROLE,
            Shelf::Pending => PENDING_ROLE,
        }
    }

    fn part_role(self) -> &'static str {
        match self {
            Shelf::Latest => PART_ROLE,
            Shelf::Pending => PENDING_PART_ROLE,
        }
    }
}

/// How the CSV is stored; written into `summary.json` as `storage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// `csv` (data.preview.csv), `gzip` (binaryData.preview.csv.gz) or `gzip-parts`.
    pub layout: String,
    /// The objects holding the CSV bytes, in order (the main one for `csv` and `gzip`); the
    /// field keeps its first name in summary.json.
    #[serde(rename = "configMaps")]
    pub objects: Vec<String>,
    /// Their kind (absent in previews made before Secrets were an option: ConfigMap).
    #[serde(default)]
    pub kind: StoreKind,
    /// Size of the CSV in bytes (BOM included).
    pub csv_bytes: u64,
    /// Size of the gzip stream, when compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip_bytes: Option<u64>,
    pub sha256: String,
    pub rows: u64,
    pub run_id: String,
    pub generated_at: String,
    pub expires_at: String,
}

/// `summary.json` as stored: the core's summary, the run, and where the CSV is.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredSummary<'a> {
    #[serde(flatten)]
    summary: &'a crate::sync::summary::Summary,
    run_id: &'a str,
    storage: &'a Storage,
}

/// A preview laid out in objects, ready to write.
pub struct Layout {
    pub shelf: Shelf,
    pub objects: Vec<OwnedObject>,
    pub status: PreviewStatus,
    pub summary: serde_json::Value,
}

/// Renders the plan's CSV and summary and lays them out (pure); `max_part` is the largest
/// payload per object ([`crate::controller::objects::MAX_PART_BYTES`] in production), `kind`
/// the kind it will be stored in.
#[allow(clippy::too_many_arguments)]
pub fn layout(
    owner: &Owner,
    kind: StoreKind,
    max_part: usize,
    planned: &PlannedRun,
    dry_run: bool,
    run_id: &str,
    now: Timestamp,
    expires: Timestamp,
) -> std::io::Result<Layout> {
    layout_on(
        Shelf::Latest,
        owner,
        kind,
        max_part,
        planned,
        dry_run,
        run_id,
        now,
        expires,
    )
}

/// [`layout`] on either shelf.
#[allow(clippy::too_many_arguments)]
pub fn layout_on(
    shelf: Shelf,
    owner: &Owner,
    kind: StoreKind,
    max_part: usize,
    planned: &PlannedRun,
    dry_run: bool,
    run_id: &str,
    now: Timestamp,
    expires: Timestamp,
) -> std::io::Result<Layout> {
    let mut csv = Vec::with_capacity(64 + planned.plan.items.len() * 160);
    let stats = crate::sync::csv::write_preview_csv(&planned.plan, &mut csv)?;
    let summary = planned.summary(dry_run).with_csv(&stats);
    let main = shelf.main_name(&owner.name);
    let annotations = BTreeMap::from([
        (SHA_ANNOTATION.to_owned(), stats.sha256.clone()),
        (EXPIRES_ANNOTATION.to_owned(), expires.to_string()),
        ("dirsync.io/run-id".to_owned(), run_id.to_owned()),
    ]);
    let mut storage = Storage {
        layout: "csv".into(),
        objects: vec![main.clone()],
        kind,
        csv_bytes: stats.bytes,
        gzip_bytes: None,
        sha256: stats.sha256.clone(),
        rows: stats.rows as u64,
        run_id: run_id.to_owned(),
        generated_at: now.to_string(),
        expires_at: expires.to_string(),
    };
    let mut main_data = BTreeMap::new();
    let mut main_binary = BTreeMap::new();
    let mut parts = Vec::new();
    if csv.len() <= max_part {
        // The CSV is UTF-8 (BOM included) by construction.
        main_data.insert(
            CSV_KEY.to_owned(),
            String::from_utf8(csv).map_err(std::io::Error::other)?,
        );
    } else {
        let gz = gzip::gzip(&csv, gzip::Level::Default);
        drop(csv);
        storage.gzip_bytes = Some(gz.len() as u64);
        if gz.len() <= max_part {
            storage.layout = "gzip".into();
            main_binary.insert(GZ_KEY.to_owned(), gz);
        } else {
            storage.layout = "gzip-parts".into();
            storage.objects.clear();
            for (i, chunk) in gzip::split(&gz, max_part).into_iter().enumerate() {
                let name = shelf.part_name(&owner.name, i + 1);
                storage.objects.push(name.clone());
                let mut ann = annotations.clone();
                ann.insert("dirsync.io/part".into(), format!("{}", i + 1));
                parts.push(OwnedObject {
                    metadata: owner.meta(&name, shelf.part_role(), ann),
                    binary: BTreeMap::from([(PART_KEY.to_owned(), chunk.to_vec())]),
                    ..OwnedObject::default()
                });
            }
        }
    }
    let stored = StoredSummary {
        summary: &summary,
        run_id,
        storage: &storage,
    };
    let summary_v = serde_json::to_value(&stored).map_err(std::io::Error::other)?;
    main_data.insert(
        SUMMARY_KEY.to_owned(),
        serde_json::to_string_pretty(&stored).map_err(std::io::Error::other)?,
    );
    let main_obj = OwnedObject {
        metadata: owner.meta(&main, shelf.role(), annotations),
        text: main_data,
        binary: main_binary,
    };
    let mut names = vec![main.clone()];
    names.extend(parts.iter().filter_map(|p| p.metadata.name.clone()));
    let mut objects = parts;
    // The main object last: it is the one readers start from.
    objects.push(main_obj);
    Ok(Layout {
        shelf,
        objects,
        status: PreviewStatus {
            objects: names,
            kind,
            rows: stats.rows as i64,
            sha256: stats.sha256,
            generated_at: Time(now),
            expires_at: Time(expires),
        },
        summary: summary_v,
    })
}

/// Writes a laid-out preview into `objects`' kind, removes parts left from a bigger one, and
/// removes this resource's preview of the other kind (left by a change of `--store-in`). A
/// same-named object this resource does not control is left untouched (`PreviewConflict`).
pub async fn publish(objects: &Objects, owner: &Owner, layout: &Layout) -> Result<()> {
    for obj in &layout.objects {
        let name = obj.name();
        if let WriteCheck::Foreign = objects
            .check_writable(owner, name)
            .await
            .map_err(Error::PublishPreview)?
        {
            return Err(Error::PreviewConflict(format!(
                "{} exists and is not owned by this DirectorySync; it was left untouched. Rename or delete it so the preview can be written",
                objects.describe(name)
            )));
        }
    }
    for obj in &layout.objects {
        objects.apply(obj).await.map_err(Error::PublishPreview)?;
    }
    let keep: Vec<&str> = layout.status.objects.iter().map(String::as_str).collect();
    for (name, _) in objects
        .list_names(owner, layout.shelf.part_role())
        .await
        .map_err(Error::PublishPreview)?
    {
        if !keep.contains(&name.as_str()) {
            objects
                .delete_owned(owner, &name)
                .await
                .map_err(Error::PublishPreview)?;
        }
    }
    remove_other_kind(layout.shelf, objects, owner).await;
    Ok(())
}

/// Removes this resource's preview of the other kind; a failure is logged, not fatal (the next
/// preview or the expiry tries again). The default RBAC of the ConfigMap mode cannot delete
/// Secrets, so Secret previews left by a switch back wait for the resource's deletion there.
async fn remove_other_kind(shelf: Shelf, objects: &Objects, owner: &Owner) {
    let other = objects.other();
    if let Err(e) = remove_kind(shelf, &other, owner).await {
        warn!(name = %owner.name, namespace = %owner.namespace, kind = %other.kind(), error = %crate::clients::outbound::cut(&e.to_string()), "could not remove the preview of the other kind (left by a change of --store-in)");
    }
}

async fn remove_kind(shelf: Shelf, objects: &Objects, owner: &Owner) -> Result<(), kube::Error> {
    objects
        .delete_owned(owner, &shelf.main_name(&owner.name))
        .await?;
    for (name, _) in objects.list_names(owner, shelf.part_role()).await? {
        objects.delete_owned(owner, &name).await?;
    }
    Ok(())
}

/// Removes every preview object of this resource (expired previews), of both kinds.
pub async fn remove(objects: &Objects, owner: &Owner) -> Result<(), kube::Error> {
    remove_from(Shelf::Latest, objects, owner).await
}

/// [`remove`] on either shelf.
pub async fn remove_from(
    shelf: Shelf,
    objects: &Objects,
    owner: &Owner,
) -> Result<(), kube::Error> {
    remove_kind(shelf, objects, owner).await?;
    remove_other_kind(shelf, objects, owner).await;
    Ok(())
}

/// Why a stored preview cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("neither ConfigMap nor Secret {0:?} was found (no preview yet, or it expired)")]
    NotFound(String),
    #[error("reading {name}: {source}")]
    Kube {
        /// The kind and the name.
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the preview is malformed: {0}")]
    Malformed(String),
    #[error("the reassembled CSV's sha256 is {actual}, but the preview says {expected}")]
    Checksum { expected: String, actual: String },
}

/// The main object's `storage` facts.
fn storage_of(main: &OwnedObject) -> Result<Storage, ReadError> {
    let name = main.name();
    let summary = main
        .text(SUMMARY_KEY)
        .ok_or_else(|| ReadError::Malformed(format!("{name} has no {SUMMARY_KEY}")))?;
    let summary: serde_json::Value = serde_json::from_str(summary)
        .map_err(|e| ReadError::Malformed(format!("{SUMMARY_KEY}: {e}")))?;
    serde_json::from_value(summary.get("storage").cloned().unwrap_or_default())
        .map_err(|e| ReadError::Malformed(format!("{SUMMARY_KEY} storage: {e}")))
}

/// Reads a preview back, whatever its layout and kind, and checks its sha256. Both kinds are
/// looked at (the reader need not know the operator's `--store-in`); when both hold a preview
/// (a switch whose clean-up has not happened), the newer one wins. A kind the reader may not
/// read, or a same-named object that is no preview, is passed over if the other kind has one.
pub async fn read(
    objects: &Objects,
    resource: &str,
    shelf: Shelf,
) -> Result<(Vec<u8>, Storage), ReadError> {
    let main_name = shelf.main_name(resource);
    let mut found: Option<(Objects, OwnedObject, Storage)> = None;
    let mut failed = None;
    for kind in [objects.clone(), objects.other()] {
        let main = match kind.get(&main_name).await {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(source) => {
                failed.get_or_insert(ReadError::Kube {
                    name: kind.describe(&main_name),
                    source,
                });
                continue;
            }
        };
        let storage = match storage_of(&main) {
            Ok(s) => s,
            Err(e) => {
                failed.get_or_insert(e);
                continue;
            }
        };
        let newer = match &found {
            None => true,
            Some((_, _, s)) => generated(&storage) > generated(s),
        };
        if newer {
            found = Some((kind, main, storage));
        }
    }
    let Some((kind, main, storage)) = found else {
        return Err(failed.unwrap_or(ReadError::NotFound(main_name)));
    };
    let mut parts = Vec::new();
    if storage.layout == "gzip-parts" {
        for name in &storage.objects {
            let part = kind
                .get(name)
                .await
                .map_err(|source| ReadError::Kube {
                    name: kind.describe(name),
                    source,
                })?
                .ok_or_else(|| ReadError::Malformed(format!("part {name:?} is missing")))?;
            parts.push(part);
        }
    }
    assemble(&main, &parts)
}

fn generated(s: &Storage) -> Option<Timestamp> {
    s.generated_at.parse().ok()
}

/// Reassembles the CSV from the main object and, for `gzip-parts`, the parts in the order
/// `storage.configMaps` lists them; checks that every part belongs to this preview and the
/// sha256 of the result.
pub fn assemble(
    main: &OwnedObject,
    parts: &[OwnedObject],
) -> Result<(Vec<u8>, Storage), ReadError> {
    let main_name = main.name();
    let storage = storage_of(main)?;
    let csv = match storage.layout.as_str() {
        "csv" => main
            .text(CSV_KEY)
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| ReadError::Malformed(format!("{main_name} has no {CSV_KEY}")))?,
        "gzip" => {
            let gz = main
                .bytes(GZ_KEY)
                .ok_or_else(|| ReadError::Malformed(format!("{main_name} has no {GZ_KEY}")))?;
            gunzip(gz)?
        }
        "gzip-parts" => {
            if parts.len() != storage.objects.len() {
                return Err(ReadError::Malformed(format!(
                    "{} parts listed, {} found",
                    storage.objects.len(),
                    parts.len()
                )));
            }
            let mut gz = Vec::new();
            for (name, part) in storage.objects.iter().zip(parts) {
                if part.name() != name {
                    return Err(ReadError::Malformed(format!(
                        "part {name:?} is out of order"
                    )));
                }
                if part.annotation(SHA_ANNOTATION) != Some(storage.sha256.as_str()) {
                    return Err(ReadError::Malformed(format!(
                        "part {name:?} belongs to another preview"
                    )));
                }
                let bytes = part.bytes(PART_KEY).ok_or_else(|| {
                    ReadError::Malformed(format!("part {name:?} has no {PART_KEY}"))
                })?;
                gz.extend_from_slice(bytes);
            }
            gunzip(&gz)?
        }
        other => return Err(ReadError::Malformed(format!("unknown layout {other:?}"))),
    };
    let actual = crate::sync::csv::hex(&Sha256::digest(&csv));
    if actual != storage.sha256 {
        return Err(ReadError::Checksum {
            expected: storage.sha256.clone(),
            actual,
        });
    }
    Ok((csv, storage))
}

fn gunzip(gz: &[u8]) -> Result<Vec<u8>, ReadError> {
    // A preview of 100k users is ~25 MB; refuse absurd sizes rather than exhaust memory.
    gzip::gunzip(gz, 1 << 30).map_err(|e| ReadError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::sync::testing::{FakeDirectory, entra_user};
    use crate::sync::{ManagedSet, OtherResources, SyncConfig, UpnMode, plan_run};

    fn owner() -> Owner {
        Owner {
            name: "example-com".into(),
            namespace: "identity".into(),
            uid: "uid-1".into(),
            reference: OwnerReference {
                api_version: "dirsync.io/v1alpha1".into(),
                kind: "DirectorySync".into(),
                name: "example-com".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    async fn planned(n: u128) -> PlannedRun {
        let source = FakeDirectory::with_users(
            (1..=n).map(|i| entra_user(i, &format!("user{i}@example.com"))),
        );
        let destination = FakeDirectory::new();
        let cfg = SyncConfig::new("example.com", UpnMode::Enabled, 65);
        plan_run(
            &source,
            &destination,
            &cfg,
            &ManagedSet::new(),
            &OtherResources::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("plan: {e}"))
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn main_of(l: &Layout) -> &OwnedObject {
        l.objects.last().unwrap_or_else(|| panic!("no objects"))
    }

    #[tokio::test]
    async fn the_layout_follows_the_size_and_every_layout_reads_back() {
        let p = planned(300).await;
        let mut csv = Vec::new();
        let stats = crate::sync::csv::write_preview_csv(&p.plan, &mut csv)
            .unwrap_or_else(|e| panic!("{e}"));
        let gz_len = gzip::gzip(&csv, gzip::Level::Default).len();
        assert!(gz_len < csv.len());
        for (max, layout_name, objects) in [
            (csv.len(), "csv", 1),
            (csv.len() - 1, "gzip", 1),
            (gz_len, "gzip", 1),
            (gz_len / 3 + 1, "gzip-parts", 4),
        ] {
            let l = layout(
                &owner(),
                StoreKind::ConfigMap,
                max,
                &p,
                true,
                "run-1",
                t(100),
                t(200),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(l.objects.len(), objects, "{layout_name} at {max}");
            assert_eq!(l.summary["storage"]["layout"], layout_name);
            assert_eq!(l.status.rows, 300);
            assert_eq!(l.status.sha256, stats.sha256);
            assert_eq!(l.status.objects.len(), objects);
            assert_eq!(l.status.objects[0], "example-com-preview");
            let main = main_of(&l);
            assert_eq!(main.metadata.name.as_deref(), Some("example-com-preview"));
            assert!(l.objects.iter().all(|o| {
                o.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|r| r[0].uid == "uid-1")
            }));
            let parts: Vec<OwnedObject> = l.objects[..l.objects.len() - 1].to_vec();
            for part in &parts {
                let n = part.bytes(PART_KEY).map(<[u8]>::len).unwrap_or(0);
                assert!(n > 0 && n <= max);
            }
            let (back, storage) =
                assemble(main, &parts).unwrap_or_else(|e| panic!("{layout_name}: {e}"));
            assert_eq!(back, csv, "{layout_name} reads back byte for byte");
            assert_eq!(storage.rows, 300);
            // Stored as Secrets instead, every layout reads back the same.
            let as_secrets: Vec<OwnedObject> = l
                .objects
                .iter()
                .map(|o| OwnedObject::from_secret(o.to_secret()))
                .collect();
            let (main_s, parts_s) = as_secrets.split_last().unwrap_or_else(|| panic!("empty"));
            let (back, _) = assemble(main_s, parts_s)
                .unwrap_or_else(|e| panic!("{layout_name} as Secrets: {e}"));
            assert_eq!(
                back, csv,
                "{layout_name} as Secrets reads back byte for byte"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_foreign_or_reordered_part_is_refused() {
        let p = planned(300).await;
        let l = layout(
            &owner(),
            StoreKind::ConfigMap,
            2000,
            &p,
            true,
            "run-1",
            t(100),
            t(200),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let main = main_of(&l);
        let mut parts: Vec<OwnedObject> = l.objects[..l.objects.len() - 1].to_vec();
        assert!(parts.len() >= 2);
        assert!(assemble(main, &parts[1..]).is_err(), "a part missing");
        let mut swapped = parts.clone();
        swapped.swap(0, 1);
        assert!(assemble(main, &swapped).is_err(), "out of order");
        if let Some(a) = parts[0].metadata.annotations.as_mut() {
            a.insert(SHA_ANNOTATION.into(), "another".into());
        }
        assert!(
            matches!(assemble(main, &parts), Err(ReadError::Malformed(m)) if m.contains("another preview"))
        );
    }

    #[tokio::test]
    async fn a_damaged_csv_fails_the_checksum() {
        let p = planned(3).await;
        let l = layout(
            &owner(),
            StoreKind::Secret,
            1 << 20,
            &p,
            true,
            "run-1",
            t(100),
            t(200),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.status.kind, StoreKind::Secret);
        assert_eq!(l.summary["storage"]["kind"], "Secret");
        let mut main = main_of(&l).clone();
        if let Some(csv) = main.text.get_mut(CSV_KEY) {
            csv.push_str("Add,x,,,,,,true,,\r\n");
        }
        assert!(matches!(
            assemble(&main, &[]),
            Err(ReadError::Checksum { .. })
        ));
    }
}
