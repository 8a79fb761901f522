//! The standalone CLI's `--state` file (docs/behaviour.md §5, §8): one resource's managed set on local disk.
//!
//! Written atomically (a temporary file in the same directory, mode 0600 from creation, synced,
//! then renamed over the old one), so a crash leaves either the old or the new file, and never
//! readable by other local users. The file names the resource it belongs to; a file of another
//! resource is refused, because its managed set would let this resource change users it never
//! created.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::sync::config::Direction;
use crate::sync::incremental::DeltaState;
use crate::sync::managed::{ManagedSet, ManagedStore, StoreError};

/// `kind` of a state file.
pub const STATE_FILE_KIND: &str = "DirsyncState";
/// `apiVersion` of a state file.
pub const STATE_FILE_API_VERSION: &str = "dirsync.io/v1alpha1";

/// The resource a state file belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceIdentity {
    pub namespace: String,
    pub name: String,
    pub domain: String,
    /// Which way users flow. The managed set holds SCIM ids one way and Entra object ids the
    /// other, so a file is never used for the other direction (as the API server refuses a
    /// change of direction, src/crd/mod.rs). Absent means Entra ID to SCIM: files written
    /// before the reverse direction existed, and those written since for that direction, stay
    /// as they were.
    #[serde(default, skip_serializing_if = "is_entra_id_to_scim")]
    pub direction: Direction,
}

fn is_entra_id_to_scim(d: &Direction) -> bool {
    *d == Direction::EntraIdToScim
}

impl ResourceIdentity {
    fn same_resource(&self, other: &ResourceIdentity) -> bool {
        self.namespace == other.namespace
            && self.name == other.name
            && self.domain.eq_ignore_ascii_case(&other.domain)
            && self.direction == other.direction
    }
}

impl std::fmt::Display for ResourceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let direction = match self.direction {
            Direction::EntraIdToScim => "Entra ID to SCIM",
            Direction::ScimToEntraId => "SCIM to Entra ID",
        };
        write!(
            f,
            "DirectorySync {}/{} (domain {}, {direction})",
            self.namespace, self.name, self.domain
        )
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateDocRef<'a> {
    api_version: &'a str,
    kind: &'a str,
    resource: &'a ResourceIdentity,
    managed: &'a ManagedSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a DeltaState>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateDoc {
    api_version: String,
    kind: String,
    resource: ResourceIdentity,
    managed: ManagedSet,
    /// Absent in files written before incremental runs (and until a full run applied).
    #[serde(default)]
    delta: Option<DeltaState>,
}

/// A state file for one resource.
#[derive(Clone, Debug)]
pub struct StateFile {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    identity: ResourceIdentity,
    /// Set once the file on disk is known to be ours (or absent), so that checkpoints during
    /// a long apply do not re-read it.
    verified: AtomicBool,
    /// The delta state as loaded, or as set for the next save.
    delta: Mutex<Option<DeltaState>>,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>, identity: ResourceIdentity) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.into(),
                identity,
                verified: AtomicBool::new(false),
                delta: Mutex::new(None),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn identity(&self) -> &ResourceIdentity {
        &self.inner.identity
    }

    /// Checks that the file can be written where it is (its folder exists and takes a new file),
    /// so that `apply` fails before its first destination write rather than writing users it
    /// then cannot record.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let dir = self.inner.dir();
        let probe = dir.join(format!(
            ".{}.{}.probe",
            self.inner.file_name(),
            uuid::Uuid::new_v4().simple()
        ));
        create_private(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                StoreError::Io(format!(
                    "cannot write the state file {}: {e}",
                    self.inner.path.display()
                ))
            })
    }
}

impl Inner {
    /// The folder the file is in (the current one for a bare name).
    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into())
    }

    /// Reads the file: `Ok(None)` when it does not exist.
    fn read(&self) -> Result<Option<(ManagedSet, Option<DeltaState>)>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Io(format!(
                    "reading {}: {e}",
                    self.path.display()
                )));
            }
        };
        let doc: StateDoc = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Corrupt(crate::sync::managed::ManagedSetError::Invalid(format!(
                "{} is not a dirsync state file: {e}",
                self.path.display()
            )))
        })?;
        if doc.kind != STATE_FILE_KIND || doc.api_version != STATE_FILE_API_VERSION {
            return Err(StoreError::Corrupt(
                crate::sync::managed::ManagedSetError::Invalid(format!(
                    "{} is a {} {}, not a {STATE_FILE_API_VERSION} {STATE_FILE_KIND}",
                    self.path.display(),
                    doc.api_version,
                    doc.kind
                )),
            ));
        }
        if !doc.resource.same_resource(&self.identity) {
            return Err(StoreError::WrongOwner(format!(
                "state file {} belongs to {}, not to {}; use one state file per resource",
                self.path.display(),
                doc.resource,
                self.identity
            )));
        }
        self.verified.store(true, Ordering::Relaxed);
        Ok(Some((doc.managed, doc.delta)))
    }

    fn write(&self, set: &ManagedSet, delta: Option<&DeltaState>) -> Result<(), StoreError> {
        if !self.verified.load(Ordering::Relaxed) {
            // Refuse to overwrite another resource's file even when save comes before load.
            self.read()?;
        }
        let io = |what: &str, e: std::io::Error| {
            StoreError::Io(format!("{what} {}: {e}", self.path.display()))
        };
        let dir = self.dir();
        let file_name = self.file_name();
        let tmp = dir.join(format!(
            ".{file_name}.{}.tmp",
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| {
            let file = create_private(&tmp).map_err(|e| io("creating a temporary file for", e))?;
            let mut w = BufWriter::new(file);
            let doc = StateDocRef {
                api_version: STATE_FILE_API_VERSION,
                kind: STATE_FILE_KIND,
                resource: &self.identity,
                managed: set,
                delta,
            };
            serde_json::to_writer(&mut w, &doc).map_err(|e| io("writing", e.into()))?;
            w.write_all(b"\n").map_err(|e| io("writing", e))?;
            let file = w.into_inner().map_err(|e| io("writing", e.into_error()))?;
            file.sync_all().map_err(|e| io("syncing", e))?;
            drop(file);
            std::fs::rename(&tmp, &self.path).map_err(|e| io("replacing", e))?;
            // Make the rename itself durable.
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            self.verified.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// Creates `path` (which must not exist) readable and writable by its owner only, from the
/// first byte: the mode is given at creation and set again explicitly before anything is
/// written, whatever the umask.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        opts.mode(0o600);
        let file = opts.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        opts.open(path)
    }
}

#[async_trait]
impl ManagedStore for StateFile {
    async fn load(&self) -> Result<ManagedSet, StoreError> {
        // Blocking file I/O runs off the async workers.
        let inner = Arc::clone(&self.inner);
        let read = tokio::task::spawn_blocking(move || inner.read())
            .await
            .map_err(|e| StoreError::Io(format!("state file task failed: {e}")))??;
        let (set, delta) = read.unwrap_or_default();
        self.set_delta(delta);
        Ok(set)
    }

    async fn save(&self, set: &ManagedSet) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        let set = set.clone();
        let delta = self.delta();
        tokio::task::spawn_blocking(move || inner.write(&set, delta.as_ref()))
            .await
            .map_err(|e| StoreError::Io(format!("state file task failed: {e}")))?
    }

    fn delta(&self) -> Option<DeltaState> {
        self.inner
            .delta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_delta(&self, delta: Option<DeltaState>) {
        *self
            .inner
            .delta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = delta;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::managed::ManagedEntry;

    fn identity(name: &str, domain: &str) -> ResourceIdentity {
        ResourceIdentity {
            namespace: "identity".into(),
            name: name.into(),
            domain: domain.into(),
            direction: Direction::EntraIdToScim,
        }
    }

    fn sample() -> ManagedSet {
        let mut s = ManagedSet::new();
        s.insert(
            "RDHiRneDPkiofrZ2nbYu7Q==",
            ManagedEntry {
                destination_id: "d1".into(),
                source_id: "s1".into(),
                user_name: "alice@example.com".into(),
            },
        );
        s
    }

    #[tokio::test]
    async fn missing_file_is_an_empty_set_and_save_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let store = StateFile::new(&path, identity("example-com", "example.com"));
        assert_eq!(store.load().await, Ok(ManagedSet::new()));
        store.save(&sample()).await.expect("saves");
        assert_eq!(store.load().await, Ok(sample()));
        // A second handle (a later CLI run) reads it too; the domain is compared case-insensitively.
        let again = StateFile::new(&path, identity("example-com", "EXAMPLE.com"));
        assert_eq!(again.load().await, Ok(sample()));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn file_is_private_and_no_temporary_file_is_left() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let store = StateFile::new(&path, identity("example-com", "example.com"));
        store.save(&sample()).await.expect("saves");
        // A state file someone made world-readable is replaced by a private one.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        store.save(&ManagedSet::new()).await.expect("saves again");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, vec!["state.json".to_string()]);
    }

    #[tokio::test]
    async fn the_delta_state_is_kept_beside_the_set_and_may_be_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let store = StateFile::new(&path, identity("example-com", "example.com"));
        // A file written before incremental runs has no delta state: loads as none.
        store.save(&sample()).await.expect("saves");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("\"delta\""), "{text}");
        let fresh = StateFile::new(&path, identity("example-com", "example.com"));
        assert_eq!(fresh.load().await, Ok(sample()));
        assert_eq!(fresh.delta(), None);
        let kept = DeltaState {
            link: "https://graph.example/v1.0/users/delta?$deltatoken=abc".into(),
            issued_at: 1_700_000_000,
            fingerprint: "f".into(),
            last_full_at: 1_700_000_000,
            next_full: None,
            retry: vec!["s1".into()],
        };
        fresh.set_delta(Some(kept.clone()));
        fresh.save(&sample()).await.expect("saves with delta");
        let again = StateFile::new(&path, identity("example-com", "example.com"));
        assert_eq!(again.load().await, Ok(sample()));
        assert_eq!(again.delta(), Some(kept));
    }

    #[tokio::test]
    async fn a_file_of_another_resource_is_refused_on_load_and_save() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        StateFile::new(&path, identity("example-com", "example.com"))
            .save(&sample())
            .await
            .expect("saves");
        let before = std::fs::read(&path).expect("read");

        for other in [
            identity("other", "example.com"),
            identity("example-com", "example.org"),
            // The same resource turned round: its managed set holds the other side's ids.
            ResourceIdentity {
                direction: Direction::ScimToEntraId,
                ..identity("example-com", "example.com")
            },
        ] {
            let store = StateFile::new(&path, other);
            let err = store.load().await.expect_err("refused");
            assert!(matches!(err, StoreError::WrongOwner(_)), "{err:?}");
            assert!(
                err.to_string()
                    .contains("belongs to DirectorySync identity/example-com"),
                "{err}"
            );
            assert!(matches!(
                store.save(&ManagedSet::new()).await,
                Err(StoreError::WrongOwner(_))
            ));
        }
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "the other resource's file is untouched"
        );
    }

    /// A file for the Entra ID to SCIM direction names none (as before the reverse direction
    /// existed); a reverse one does. Neither is taken for the other.
    #[tokio::test]
    async fn the_direction_is_recorded_and_a_file_of_the_other_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let forward_path = dir.path().join("forward.json");
        let reverse_path = dir.path().join("reverse.json");
        let forward = identity("example-com", "example.com");
        let reverse = ResourceIdentity {
            direction: Direction::ScimToEntraId,
            ..identity("example-com", "example.com")
        };
        for (path, who) in [(&forward_path, &forward), (&reverse_path, &reverse)] {
            StateFile::new(path, who.clone())
                .save(&sample())
                .await
                .expect("saves");
        }
        let doc = |path: &Path| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
        };
        assert!(doc(&forward_path)["resource"].get("direction").is_none());
        assert_eq!(doc(&reverse_path)["resource"]["direction"], "ScimToEntraId");
        for (path, who) in [(&forward_path, &forward), (&reverse_path, &reverse)] {
            assert_eq!(StateFile::new(path, who.clone()).load().await, Ok(sample()));
        }
        for (path, who) in [(&forward_path, &reverse), (&reverse_path, &forward)] {
            let err = StateFile::new(path, who.clone())
                .load()
                .await
                .expect_err("refused");
            assert!(matches!(err, StoreError::WrongOwner(_)), "{err:?}");
        }
    }

    #[tokio::test]
    async fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{\"hello\":1}").expect("write");
        let err = StateFile::new(&path, identity("a", "example.com"))
            .load()
            .await
            .expect_err("refused");
        assert!(
            err.to_string().contains("not a dirsync state file"),
            "{err}"
        );
    }
}
