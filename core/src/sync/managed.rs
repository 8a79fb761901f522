//! The managed set (docs/behaviour.md §2.5): the destination users one resource created or adopted, and
//! therefore the only ones it may update or delete. Kept durably between runs by a
//! [`ManagedStore`]; at 100k users it is several MB, so it serializes compactly, compresses,
//! and splits into parts for stores with a per-object size limit.

use std::collections::HashMap;
use std::io::Write;

use async_trait::async_trait;
use serde::{Deserialize, Serialize, Serializer};

use crate::sync::gzip;
use crate::sync::incremental::DeltaState;

/// The format tag of the serialized set; a reader refuses anything else.
pub const MANAGED_SET_FORMAT: &str = "dirsync.io/managed-set";
/// The version of the serialized set this build writes and reads.
pub const MANAGED_SET_VERSION: u32 = 1;
/// Refuse to decompress more than this: a damaged or hostile store must not exhaust memory.
/// 100k users take about 15 MB.
const MAX_DECOMPRESSED_BYTES: u64 = 512 * 1024 * 1024;

/// What the set records for one managed user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedEntry {
    /// The user's id in the destination.
    pub destination_id: String,
    /// The user's id in the source (to look the user up again when it leaves the domain).
    pub source_id: String,
    /// The destination userName when last written (for reports; matching uses the key).
    pub user_name: String,
}

impl ManagedEntry {
    pub fn new(destination_id: &str, source_id: &str, user_name: &str) -> Self {
        ManagedEntry {
            destination_id: destination_id.to_owned(),
            source_id: source_id.to_owned(),
            user_name: user_name.to_owned(),
        }
    }
}

/// Managed users by Immutable ID. A hash map, because planning looks every user up several
/// times; serialization sorts, so that it stays deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagedSet {
    entries: HashMap<String, ManagedEntry>,
}

/// A serialized managed set that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedSetError {
    #[error("managed set is not valid: {0}")]
    Invalid(String),
    #[error("managed set is not valid gzip or is incomplete (a part may be missing): {0}")]
    Compression(String),
    #[error("managed set decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes")]
    TooLarge,
}

impl ManagedSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, immutable_id: &str) -> Option<&ManagedEntry> {
        self.entries.get(immutable_id)
    }

    pub fn contains(&self, immutable_id: &str) -> bool {
        self.entries.contains_key(immutable_id)
    }

    /// Records (or refreshes) a managed user; returns the previous entry.
    pub fn insert(
        &mut self,
        immutable_id: impl Into<String>,
        entry: ManagedEntry,
    ) -> Option<ManagedEntry> {
        self.entries.insert(immutable_id.into(), entry)
    }

    /// Releases a user from the set; returns its entry.
    pub fn remove(&mut self, immutable_id: &str) -> Option<ManagedEntry> {
        self.entries.remove(immutable_id)
    }

    /// Entries in no particular order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &ManagedEntry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Entries in Immutable ID order.
    pub fn iter_sorted(&self) -> impl ExactSizeIterator<Item = (&str, &ManagedEntry)> {
        let mut sorted: Vec<(&str, &ManagedEntry)> = self.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        sorted.into_iter()
    }

    /// The compact JSON form: a header and one `[immutableId, destinationId, sourceId,
    /// userName]` array per user, sorted by Immutable ID, written as it goes.
    pub fn write_json<W: Write>(&self, out: W) -> Result<(), ManagedSetError> {
        serde_json::to_writer(out, self).map_err(|e| ManagedSetError::Invalid(e.to_string()))
    }

    pub fn to_json_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.len() * 128);
        // Writing to a Vec cannot fail and every key is a string.
        let _ = self.write_json(&mut out);
        out
    }

    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, ManagedSetError> {
        serde_json::from_slice::<OwnedHeader>(bytes)
            .map_err(|e| ManagedSetError::Invalid(e.to_string()))?
            .into_set()
    }

    /// The JSON form, gzip-compressed.
    pub fn to_gzip(&self) -> Vec<u8> {
        // One large write: the encoder is slow with serde's many small ones. Level 1 is several
        // times faster than the default for ~1.5x the size (1.6 MB for 100k users), which suits
        // a set saved at every checkpoint of a long apply.
        gzip::gzip(&self.to_json_vec(), gzip::Level::Fast)
    }

    pub fn from_gzip(bytes: &[u8]) -> Result<Self, ManagedSetError> {
        let json = gzip::gunzip(bytes, MAX_DECOMPRESSED_BYTES).map_err(|e| match e {
            gzip::GunzipError::TooLarge(_) => ManagedSetError::TooLarge,
            gzip::GunzipError::Corrupt(m) => ManagedSetError::Compression(m),
        })?;
        Self::from_json_slice(&json)
    }

    /// One gzip stream cut into parts of at most `max_part_bytes` bytes (at least one part,
    /// even for an empty set). Reassemble with [`ManagedSet::from_parts`] in the same order.
    pub fn to_gzip_parts(&self, max_part_bytes: usize) -> Vec<Vec<u8>> {
        gzip::split(&self.to_gzip(), max_part_bytes)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Reads a set from parts made by [`ManagedSet::to_gzip_parts`]. A missing or reordered
    /// part fails the gzip checksum or length check, so it is an error, never a shorter set.
    pub fn from_parts<'a, I>(parts: I) -> Result<Self, ManagedSetError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let joined: Vec<u8> = parts.into_iter().flatten().copied().collect();
        Self::from_gzip(&joined)
    }
}

impl FromIterator<(String, ManagedEntry)> for ManagedSet {
    fn from_iter<T: IntoIterator<Item = (String, ManagedEntry)>>(iter: T) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

/// The compact JSON form, for embedding in a larger document (the CLI's state file).
impl Serialize for ManagedSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Header {
            format: MANAGED_SET_FORMAT,
            version: MANAGED_SET_VERSION,
            count: self.len(),
            users: Users(self),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ManagedSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OwnedHeader::deserialize(d)?
            .into_set()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize)]
struct Header<'a, U> {
    format: &'a str,
    version: u32,
    count: usize,
    users: U,
}

/// Serializes the entries as a sequence without copying them.
struct Users<'a>(&'a ManagedSet);

impl Serialize for Users<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter_sorted().map(|(k, v)| {
            (
                k,
                v.destination_id.as_str(),
                v.source_id.as_str(),
                v.user_name.as_str(),
            )
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnedHeader {
    format: String,
    version: u32,
    count: usize,
    users: Vec<(String, String, String, String)>,
}

impl OwnedHeader {
    fn into_set(self) -> Result<ManagedSet, ManagedSetError> {
        let invalid = |m: String| Err(ManagedSetError::Invalid(m));
        if self.format != MANAGED_SET_FORMAT {
            return invalid(format!(
                "format is {:?}, expected {MANAGED_SET_FORMAT:?}",
                self.format
            ));
        }
        if self.version != MANAGED_SET_VERSION {
            return invalid(format!(
                "version {} is not supported (this build reads {MANAGED_SET_VERSION})",
                self.version
            ));
        }
        if self.count != self.users.len() {
            return invalid(format!(
                "count says {} users but {} are listed",
                self.count,
                self.users.len()
            ));
        }
        let mut entries = HashMap::with_capacity(self.users.len());
        for (immutable_id, destination_id, source_id, user_name) in self.users {
            if immutable_id.is_empty() {
                return invalid("an entry has an empty Immutable ID".into());
            }
            let entry = ManagedEntry {
                destination_id,
                source_id,
                user_name,
            };
            if entries.insert(immutable_id, entry).is_some() {
                return invalid("an Immutable ID is listed twice".into());
            }
        }
        Ok(ManagedSet { entries })
    }
}

/// Why a managed set could not be loaded or saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("managed-set store I/O failed: {0}")]
    Io(String),
    #[error(transparent)]
    Corrupt(#[from] ManagedSetError),
    /// The stored set belongs to another resource; using it would let this resource update
    /// or delete users it never created.
    #[error("{0}")]
    WrongOwner(String),
    /// The store changed under us (e.g. a resourceVersion precondition failed).
    #[error("managed-set store conflict: {0}")]
    Conflict(String),
}

/// Durable storage of one resource's managed set: a local file for the CLI, cluster objects
/// for the operator.
#[async_trait]
pub trait ManagedStore: Send + Sync {
    /// The saved set; an empty set when nothing was saved yet.
    async fn load(&self) -> Result<ManagedSet, StoreError>;
    /// Replaces the saved set, all or nothing, with the delta state last given to
    /// [`ManagedStore::set_delta`] (or loaded) beside it.
    async fn save(&self, set: &ManagedSet) -> Result<(), StoreError>;

    /// The delta state kept beside the set (docs/behaviour.md §7), as of the last `load`.
    fn delta(&self) -> Option<DeltaState> {
        None
    }

    /// The delta state the next `save` writes beside the set.
    fn set_delta(&self, _delta: Option<DeltaState>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> (String, ManagedEntry) {
        (
            format!("imm{n:06}=="),
            ManagedEntry {
                destination_id: format!("d-{n}"),
                source_id: format!("s-{n}"),
                user_name: format!("user{n}@example.com"),
            },
        )
    }

    fn set(n: usize) -> ManagedSet {
        (0..n).map(entry).collect()
    }

    #[test]
    fn json_round_trip_is_sorted_and_deterministic() {
        let mut a = ManagedSet::new();
        let mut b = ManagedSet::new();
        for n in [3, 1, 2] {
            let (k, v) = entry(n);
            a.insert(k, v);
        }
        for n in [2, 3, 1] {
            let (k, v) = entry(n);
            b.insert(k, v);
        }
        assert_eq!(a.to_json_vec(), b.to_json_vec());
        let text = String::from_utf8(a.to_json_vec()).expect("utf-8");
        assert_eq!(
            text,
            r#"{"format":"dirsync.io/managed-set","version":1,"count":3,"users":[["imm000001==","d-1","s-1","user1@example.com"],["imm000002==","d-2","s-2","user2@example.com"],["imm000003==","d-3","s-3","user3@example.com"]]}"#
        );
        assert_eq!(ManagedSet::from_json_slice(text.as_bytes()), Ok(a));
    }

    #[test]
    fn empty_set_round_trips() {
        let empty = ManagedSet::new();
        assert_eq!(ManagedSet::from_gzip(&empty.to_gzip()), Ok(empty.clone()));
        assert_eq!(empty.to_gzip_parts(10).len().min(1), 1);
        let parts = empty.to_gzip_parts(1_000_000);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            ManagedSet::from_parts(parts.iter().map(Vec::as_slice)),
            Ok(empty)
        );
    }

    #[test]
    fn gzip_parts_respect_the_budget_and_reassemble() {
        let s = set(20_000);
        let parts = s.to_gzip_parts(50_000);
        assert!(parts.len() > 1, "20k users should need several 50 kB parts");
        assert!(parts.iter().all(|p| p.len() <= 50_000 && !p.is_empty()));
        assert_eq!(
            ManagedSet::from_parts(parts.iter().map(Vec::as_slice)),
            Ok(s.clone())
        );
        // Compression pays off: well under a third of the JSON.
        assert!(s.to_gzip().len() * 3 < s.to_json_vec().len());
    }

    #[test]
    fn a_missing_or_reordered_part_is_an_error() {
        let s = set(20_000);
        let parts = s.to_gzip_parts(20_000);
        assert!(parts.len() >= 3);
        let missing_middle: Vec<&[u8]> = parts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, p)| p.as_slice())
            .collect();
        assert!(ManagedSet::from_parts(missing_middle).is_err());
        let missing_last = parts[..parts.len() - 1].iter().map(Vec::as_slice);
        assert!(ManagedSet::from_parts(missing_last).is_err());
        let mut swapped: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        swapped.swap(0, 1);
        assert!(ManagedSet::from_parts(swapped).is_err());
    }

    #[test]
    fn bad_input_is_rejected_not_panicked_on() {
        for bad in [
            &b""[..],
            b"null",
            b"{}",
            br#"{"format":"other","version":1,"count":0,"users":[]}"#,
            br#"{"format":"dirsync.io/managed-set","version":2,"count":0,"users":[]}"#,
            br#"{"format":"dirsync.io/managed-set","version":1,"count":2,"users":[["a","b","c","d"]]}"#,
            br#"{"format":"dirsync.io/managed-set","version":1,"count":2,"users":[["a","b","c","d"],["a","b","c","d"]]}"#,
            br#"{"format":"dirsync.io/managed-set","version":1,"count":1,"users":[["","b","c","d"]]}"#,
        ] {
            assert!(ManagedSet::from_json_slice(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(ManagedSet::from_gzip(b"not gzip").is_err());
    }

    #[test]
    fn insert_remove_and_lookup() {
        let mut s = set(2);
        assert!(s.contains("imm000001=="));
        assert_eq!(
            s.get("imm000001==").map(|e| e.destination_id.as_str()),
            Some("d-1")
        );
        assert!(s.remove("imm000001==").is_some());
        assert!(!s.contains("imm000001=="));
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec!["imm000000=="]
        );
        let s = set(3);
        assert_eq!(
            s.iter_sorted().map(|(k, _)| k).collect::<Vec<_>>(),
            vec!["imm000000==", "imm000001==", "imm000002=="]
        );
    }
}
