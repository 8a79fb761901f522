//! Approved previews (docs/behaviour.md §9): a run that needs approval writes nothing; a run
//! given an approved preview applies only the rows that are identical in that preview and in its
//! own fresh plan — never more than was reviewed. Rows are compared cell for cell, as the
//! preview CSV writes them ([`crate::sync::csv::row_fields`]), so a row edited by hand, or made
//! stale by a later change on either side, matches nothing.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::sync::config::ApprovalPolicy;
use crate::sync::csv::{BOM, HEADER, hex, row_fields};
use crate::sync::engine::PlannedRun;
use crate::sync::plan::Action;

/// How an approval names a preview: `sha256:` and the lower-case hex of the CSV's bytes.
pub const HASH_PREFIX: &str = "sha256:";

/// `sha256:<hex>` of `bytes`.
pub fn preview_hash(bytes: &[u8]) -> String {
    format!("{HASH_PREFIX}{}", hex(&Sha256::digest(bytes)))
}

/// Whether `value` is a well-formed approval hash (`sha256:` and 64 lower-case hex digits).
pub fn is_preview_hash(value: &str) -> bool {
    value.strip_prefix(HASH_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Why a planned run must wait for an approved preview before it writes, if it must.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalNeed {
    /// The deletion guard cancels the run; approving its preview confirms exactly its deletions.
    GuardTripped,
    /// `approval: OnDeletes` and the plan deletes or deactivates someone, or `approval: Always`
    /// and the plan writes anything.
    Policy,
}

/// What `planned` needs under `policy`; `None` when it may be applied as it is.
pub fn approval_need(policy: ApprovalPolicy, planned: &PlannedRun) -> Option<ApprovalNeed> {
    if planned.guard.tripped {
        return Some(ApprovalNeed::GuardTripped);
    }
    let needed = match policy {
        ApprovalPolicy::Never => false,
        ApprovalPolicy::OnDeletes => planned.plan.deletions() > 0,
        ApprovalPolicy::Always => planned.plan.writes() > 0,
    };
    needed.then_some(ApprovalNeed::Policy)
}

/// A reviewed preview: its hash and its write rows (Add, Update, Delete), cell for cell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApprovedPreview {
    /// `sha256:<hex>` of the file's bytes.
    pub hash: String,
    rows: HashSet<Vec<String>>,
}

impl ApprovedPreview {
    /// Number of distinct write rows it approves.
    pub fn write_rows(&self) -> usize {
        self.rows.len()
    }
}

/// A file that is not a preview CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreviewFileError {
    #[error("it is empty; an approved preview is a CSV written by dirsync plan --out")]
    Empty,
    #[error(
        "its first row is not the preview header ({}); an approved preview is a CSV written by dirsync plan --out",
        HEADER.join(",")
    )]
    Header,
    /// `row` counts the header as row 1.
    #[error("row {row}: {message}")]
    Malformed { row: u64, message: String },
}

/// Reads a preview CSV as the preview writer wrote it (byte-order mark optional).
pub fn parse_preview(bytes: &[u8]) -> Result<ApprovedPreview, PreviewFileError> {
    let hash = preview_hash(bytes);
    let body = bytes.strip_prefix(BOM).unwrap_or(bytes);
    if body.is_empty() {
        return Err(PreviewFileError::Empty);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(body);
    let malformed = |row: u64, e: csv::Error| PreviewFileError::Malformed {
        row,
        message: match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("{len} cells where the header has {expected_len}"),
            csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_owned(),
            _ => e.to_string(),
        },
    };
    let mut record = csv::StringRecord::new();
    let header_read = reader
        .read_record(&mut record)
        .map_err(|e| malformed(1, e))?;
    if !header_read || !record.iter().eq(HEADER) {
        return Err(PreviewFileError::Header);
    }
    let writes = [Action::Add, Action::Update, Action::Delete].map(Action::as_str);
    let mut rows = HashSet::new();
    for row in 2.. {
        if !reader
            .read_record(&mut record)
            .map_err(|e| malformed(row, e))?
        {
            break;
        }
        if record.get(0).is_some_and(|a| writes.contains(&a)) {
            rows.insert(record.iter().map(str::to_owned).collect());
        }
    }
    Ok(ApprovedPreview { hash, rows })
}

/// How an approved preview compares with a fresh plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Write rows identical in both: these are applied.
    pub approved: usize,
    /// Approved rows the fresh plan no longer has (the change already happened, a later change
    /// altered it, or the row was edited): skipped.
    pub stale: usize,
    /// Write rows of the fresh plan the preview does not approve: they wait for the next preview.
    pub not_approved: usize,
}

/// Keeps only the write rows of `planned` that `approved` holds, cell for cell (rows that write
/// nothing stay, so the run's report still shows them). Approving a preview confirms its Delete
/// rows, so the guard no longer cancels what is left.
pub fn select(mut planned: PlannedRun, approved: &ApprovedPreview) -> (PlannedRun, Selection) {
    let mut selection = Selection::default();
    let mut matched: HashSet<Vec<String>> = HashSet::new();
    planned.plan.items.retain(|item| {
        if !item.is_write() {
            return true;
        }
        let cells: Vec<String> = row_fields(item).iter().map(|c| c.to_string()).collect();
        if approved.rows.contains(&cells) {
            selection.approved += 1;
            matched.insert(cells);
            true
        } else {
            selection.not_approved += 1;
            false
        }
    });
    selection.stale = approved.rows.len() - matched.len();
    planned.guard.tripped = false;
    (planned, selection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::csv::write_preview_csv;
    use crate::sync::testing::{FakeDirectory, entra_user, scim_twin};
    use crate::sync::{ManagedSet, OtherResources, SyncConfig, UpnMode, plan_run};

    /// Plans source users `(n, local part)` against `destination`, all of it managed.
    async fn planned(users: &[(u128, &str)], destination: &FakeDirectory, max: u8) -> PlannedRun {
        let source = FakeDirectory::with_users(
            users
                .iter()
                .map(|(i, n)| entra_user(*i, &format!("{n}@example.com"))),
        );
        let cfg = SyncConfig::new("example.com", UpnMode::Enabled, max);
        let mut managed = ManagedSet::new();
        for u in destination.users() {
            if let Some(imm) = &u.immutable_id {
                let entry = crate::sync::ManagedEntry {
                    destination_id: u.id.clone(),
                    source_id: String::new(),
                    user_name: u.user_name.clone(),
                };
                managed.insert(imm.clone(), entry);
            }
        }
        plan_run(
            &source,
            destination,
            &cfg,
            &managed,
            &OtherResources::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("plan: {e}"))
    }

    fn csv_of(p: &PlannedRun) -> Vec<u8> {
        let mut out = Vec::new();
        write_preview_csv(&p.plan, &mut out).unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[tokio::test]
    async fn an_unchanged_plan_is_approved_row_for_row() {
        let p = planned(&[(1, "alice"), (2, "bob")], &FakeDirectory::new(), 65).await;
        let csv = csv_of(&p);
        let approved = parse_preview(&csv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(approved.hash, preview_hash(&csv));
        assert_eq!(approved.write_rows(), 2);
        let (kept, s) = select(p.clone(), &approved);
        assert_eq!(
            s,
            Selection {
                approved: 2,
                stale: 0,
                not_approved: 0
            }
        );
        assert_eq!(kept.plan, p.plan);
    }

    #[tokio::test]
    async fn edited_stale_and_new_rows_are_not_applied() {
        let reviewed = planned(
            &[(1, "alice"), (2, "bob"), (3, "carol")],
            &FakeDirectory::new(),
            65,
        )
        .await;
        let text = String::from_utf8(csv_of(&reviewed)).unwrap_or_default();
        // Edit bob's display name by hand.
        let edited = text.replacen(
            "bob@example.com,bob@example.com,",
            "bob@example.com,bob@example.com,x",
            1,
        );
        assert_ne!(edited, text);
        let approved = parse_preview(edited.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        // Later, carol left the source and dave arrived.
        let fresh = planned(
            &[(1, "alice"), (2, "bob"), (4, "dave")],
            &FakeDirectory::new(),
            65,
        )
        .await;
        let (kept, s) = select(fresh, &approved);
        assert_eq!(
            s,
            Selection {
                approved: 1,
                stale: 2,
                not_approved: 2
            },
            "alice applies; bob (edited) and carol (gone) are stale; bob and dave wait"
        );
        let names: Vec<&str> = kept.plan.items.iter().map(|i| i.user_name()).collect();
        assert_eq!(names, ["alice@example.com"]);
    }

    #[tokio::test]
    async fn approving_a_guard_trip_confirms_exactly_its_deletions() {
        let destination = FakeDirectory::with_users((1..=4u128).map(|i| {
            scim_twin(
                &format!("d{i}"),
                &entra_user(i, &format!("u{i}@example.com")),
            )
        }));
        // The source lost u3 and u4: half the managed users, over a 10 % guard.
        let p = planned(&[(1, "u1"), (2, "u2")], &destination, 10).await;
        assert_eq!(
            approval_need(ApprovalPolicy::Never, &p),
            Some(ApprovalNeed::GuardTripped)
        );
        assert_eq!(p.plan.count(Action::Delete), 2);
        let approved = parse_preview(&csv_of(&p)).unwrap_or_else(|e| panic!("{e}"));
        // By the time it is approved u1 left as well: its deletion was not reviewed.
        let fresh = planned(&[(2, "u2")], &destination, 10).await;
        let (kept, s) = select(fresh, &approved);
        assert!(
            !kept.guard.tripped,
            "an approved preview confirms its deletions"
        );
        assert_eq!(s.approved, 2);
        assert_eq!(s.not_approved, 1);
        let deleted: Vec<&str> = kept
            .plan
            .items
            .iter()
            .filter(|i| i.is_write())
            .map(|i| i.user_name())
            .collect();
        assert_eq!(deleted, ["u3@example.com", "u4@example.com"]);
    }

    #[tokio::test]
    async fn the_policy_decides_which_plans_wait() {
        let destination = FakeDirectory::with_users((1..=20u128).map(|i| {
            scim_twin(
                &format!("d{i}"),
                &entra_user(i, &format!("u{i}@example.com")),
            )
        }));
        let names: Vec<(u128, String)> = (1..=21).map(|i| (i, format!("u{i}"))).collect();
        let users = |n: usize| -> Vec<(u128, &str)> {
            names[..n].iter().map(|(i, s)| (*i, s.as_str())).collect()
        };
        let deleting = planned(&users(19), &destination, 65).await;
        let adding = planned(&users(21), &destination, 65).await;
        let idle = planned(&users(20), &destination, 65).await;
        use ApprovalPolicy::*;
        assert_eq!(approval_need(Never, &deleting), None);
        assert_eq!(
            approval_need(OnDeletes, &deleting),
            Some(ApprovalNeed::Policy)
        );
        assert_eq!(approval_need(OnDeletes, &adding), None);
        assert_eq!(approval_need(Always, &adding), Some(ApprovalNeed::Policy));
        assert_eq!(
            approval_need(Always, &idle),
            None,
            "nothing to write, nothing to approve"
        );
    }

    #[test]
    fn files_that_are_not_previews_are_refused_with_the_row() {
        assert_eq!(parse_preview(b""), Err(PreviewFileError::Empty));
        assert_eq!(parse_preview(b"\xEF\xBB\xBF"), Err(PreviewFileError::Empty));
        assert_eq!(
            parse_preview(b"name,email\r\n"),
            Err(PreviewFileError::Header)
        );
        let header = HEADER.join(",");
        let short = format!("{header}\r\nAdd,a@example.com\r\n");
        assert_eq!(
            parse_preview(short.as_bytes()),
            Err(PreviewFileError::Malformed {
                row: 2,
                message: "2 cells where the header has 10".into()
            })
        );
        assert!(parse_preview(format!("{header}\n").as_bytes()).is_ok_and(|p| p.write_rows() == 0));
    }

    #[test]
    fn hashes_are_sha256_prefixed_lower_hex() {
        let h = preview_hash(b"abc");
        assert_eq!(
            h,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_preview_hash(&h));
        assert!(!is_preview_hash(&h.to_uppercase()));
        assert!(!is_preview_hash(&h[..70]));
        assert!(!is_preview_hash(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        ));
    }
}
