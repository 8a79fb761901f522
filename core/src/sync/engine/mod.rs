//! The run (docs/behaviour.md §2): read both directories, map, resolve hand-overs, plan, guard; then, when
//! asked and allowed, apply. Talks to the systems only through [`Directory`], so it knows no
//! HTTP and no Kubernetes; the caller loads and saves the managed set.

use std::collections::HashSet;

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::directory::{Directory, DirectoryError, ListScope, User};
use crate::sync::config::{ConfigError, Direction, SyncConfig, ends_with_ignore_ascii_case};
use crate::sync::guard::{self, GuardVerdict};
use crate::sync::incremental::{FullReason, RunKind};
use crate::sync::managed::{ManagedEntry, ManagedSet};
use crate::sync::mapping::{Skipped, SourceMapper};
use crate::sync::plan::{self, Plan, PlanContext};
use crate::sync::reason::{Reason, Side};
use crate::sync::summary::Summary;

/// How many hand-over look-ups run at once.
pub const HANDOVER_LOOKUP_CONCURRENCY: usize = 8;
/// A sensible default for [`ApplyOptions::concurrency`].
pub const DEFAULT_APPLY_CONCURRENCY: usize = 8;

/// What other resources that write to the same destination know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtherResources {
    /// Immutable IDs in their managed sets.
    pub managed_elsewhere: HashSet<String>,
    /// Their domains. A managed user who left this domain for one of these is handed over
    /// instead of deleted.
    pub synced_domains: Vec<String>,
}

/// A run that could not be planned. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Reading the source failed or returned a record the plan cannot use.
    #[error("source: {0}")]
    Source(DirectoryError),
    #[error("destination: {0}")]
    Destination(DirectoryError),
}

/// A planned run, ready to preview and, if the guard allows, to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRun {
    pub config: SyncConfig,
    pub plan: Plan,
    pub guard: GuardVerdict,
    pub skipped: Skipped,
    /// The source had no users and nothing managed is left in the destination (reason
    /// `NoSourceUsers`).
    pub no_source_users: bool,
    /// Users read, before mapping.
    pub source_users_read: usize,
    pub destination_users_read: usize,
    /// Full (and why) or incremental (docs/behaviour.md §7). [`plan_run`] plans a full run and
    /// says `NoDeltaLink`; a caller that chose the kind for another reason sets it.
    pub kind: RunKind,
}

impl PlannedRun {
    /// The preview's `summary.json` content (add the CSV checksum with [`Summary::with_csv`]).
    pub fn summary(&self, dry_run: bool) -> Summary {
        Summary::new(
            &self.config.domain,
            &self.plan,
            self.skipped,
            &self.guard,
            dry_run,
            self.no_source_users,
        )
        .with_kind(self.kind)
    }

    /// The same run, of kind `kind`.
    pub fn with_kind(self, kind: RunKind) -> Self {
        Self { kind, ..self }
    }
}

/// Reads both sides concurrently and plans. `managed` is this resource's managed set as loaded.
pub async fn plan_run(
    source: &dyn Directory,
    destination: &dyn Directory,
    cfg: &SyncConfig,
    managed: &ManagedSet,
    others: &OtherResources,
) -> Result<PlannedRun, RunError> {
    cfg.validate()?;
    let source_scope = source_scope(cfg);
    // The source is mapped as it is read; the destination is matched whole.
    let mut mapper = SourceMapper::new(cfg);
    let (src, dst) = futures::join!(
        source.list_users_into(&source_scope, &mut mapper),
        destination.list_users(&ListScope::All)
    );
    src.map_err(RunError::Source)?;
    let dst = dst.map_err(RunError::Destination)?;
    let destination_users_read = dst.len();
    let (mapped, source_users_read) = mapper
        .finish()
        .map_err(|e| RunError::Source(DirectoryError::Protocol(e.to_string())))?;
    let handed_over =
        resolve_hand_overs(source, cfg, managed, others, &mapped.users, &dst, true).await?;

    let source_empty = mapped.users.is_empty();
    let ctx = PlanContext {
        managed,
        managed_elsewhere: &others.managed_elsewhere,
        handed_over: &handed_over,
    };
    let mut plan = plan::plan(cfg, mapped.users, dst, &ctx);
    with_restores(destination, cfg, &mut plan).await?;
    let guard = guard::evaluate(&plan, cfg.max_allowed_deletions);
    let no_source_users = source_empty && plan.managed_present == 0;
    Ok(PlannedRun {
        config: cfg.clone(),
        plan,
        guard,
        skipped: mapped.skipped,
        no_source_users,
        source_users_read,
        destination_users_read,
        kind: RunKind::Full(FullReason::NoDeltaLink),
    })
}

/// Managed users missing from the source that now live in another synced domain: looked up in
/// the source by id, a bounded number at a time.
///
/// Look-ups stop early once the answer cannot matter or the read looks wrong: when the users
/// already known to be deleted (gone from the tenant, or still in this domain) trip the guard
/// by themselves, and — for an empty source read — at the first such user, because an empty
/// listing contradicted by a user still in the domain is a bad read that must count as deleting
/// everyone (docs/behaviour.md §2.6), not cost one look-up per managed user. Either way the guard trips and
/// nothing is written, so the cut cannot cause a wrong deletion. `whole_read`: `mapped` is the
/// whole source; an incremental run's part may be empty for good reasons, so it never stops
/// early on that.
/// What a full run lists from the source: a Graph source filters by domain itself; a SCIM
/// source is read whole (its userNames need not carry the domain, and `ew` filters are not
/// to be relied on: docs/behaviour.md §6) and the mapping scopes it.
pub(crate) fn source_scope(cfg: &SyncConfig) -> ListScope {
    match cfg.direction {
        Direction::EntraIdToScim => ListScope::Domain(cfg.domain.clone()),
        Direction::ScimToEntraId => ListScope::All,
    }
}

/// Turns Adds that a soft-deleted destination user matches into Restore rows. Deleted items
/// are read only when the plan has an Add.
pub(crate) async fn with_restores(
    destination: &dyn Directory,
    cfg: &SyncConfig,
    plan: &mut Plan,
) -> Result<(), RunError> {
    if plan.count(plan::Action::Add) == 0 {
        return Ok(());
    }
    let deleted = destination
        .deleted_users()
        .await
        .map_err(RunError::Destination)?;
    plan::plan_restores(plan, deleted, plan::Carry::of(cfg));
    Ok(())
}

pub(crate) async fn resolve_hand_overs(
    source: &dyn Directory,
    cfg: &SyncConfig,
    managed: &ManagedSet,
    others: &OtherResources,
    mapped: &[crate::sync::mapping::MappedUser],
    destination: &[User],
    whole_read: bool,
) -> Result<HashSet<String>, RunError> {
    let own = cfg.domain.to_ascii_lowercase();
    let suffixes: Vec<String> = others
        .synced_domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .filter(|d| !d.is_empty() && *d != own)
        .map(|d| format!("@{d}"))
        .collect();
    if suffixes.is_empty() || managed.is_empty() {
        return Ok(HashSet::new());
    }
    let in_source: HashSet<&str> = mapped
        .iter()
        .map(|s| s.desired.immutable_id.as_str())
        .collect();
    // A managed user no longer in the destination is dropped, not deleted: no need to ask.
    let present: HashSet<&str> = destination
        .iter()
        .filter_map(|u| u.immutable_id.as_deref())
        .collect();
    let managed_present = managed
        .iter()
        .filter(|(imm, _)| present.contains(imm))
        .count();
    let candidates: Vec<(&str, &ManagedEntry)> = managed
        .iter()
        .filter(|(imm, e)| {
            !in_source.contains(imm)
                && !others.managed_elsewhere.contains(*imm)
                && !e.source_id.is_empty()
                && present.contains(imm)
        })
        .collect();
    if candidates.is_empty() {
        return Ok(HashSet::new());
    }
    // Owned look-ups and a named async fn, not closures over borrowed tuples: the run's future
    // must be `Send` for the operator's runtime, and closures whose arguments borrow make the
    // compiler lose that (rust-lang/rust#110338).
    let lookups: Vec<(String, String)> = candidates
        .into_iter()
        .map(|(imm, e)| (imm.to_owned(), e.source_id.clone()))
        .collect();
    let mut results = futures::stream::iter(lookups)
        .map(|(imm, source_id)| moved_to_other_domain(source, imm, source_id, &suffixes))
        .buffer_unordered(HANDOVER_LOOKUP_CONCURRENCY);
    let mut handed_over = HashSet::new();
    let mut definite_deletes = 0usize;
    let max = cfg.max_allowed_deletions;
    while let Some(r) = results.next().await {
        let (imm, moved) = r.map_err(RunError::Source)?;
        if moved {
            handed_over.insert(imm);
            continue;
        }
        definite_deletes += 1;
        if whole_read
            && (mapped.is_empty() || guard::check(definite_deletes, managed_present, max).tripped)
        {
            break;
        }
    }
    Ok(handed_over)
}

/// Whether the source user `source_id` (managed as `imm`) now lives, as a member, in one of the
/// domains `suffixes` (`@domain`, lower-case).
async fn moved_to_other_domain(
    source: &dyn Directory,
    imm: String,
    source_id: String,
    suffixes: &[String],
) -> Result<(String, bool), DirectoryError> {
    let found = source.get_user(&source_id).await?;
    let moved = found.is_some_and(|u| {
        !u.guest
            && suffixes
                .iter()
                .any(|s| ends_with_ignore_ascii_case(&u.user_name, s))
    });
    Ok((imm, moved))
}

/// How a run ended (docs/behaviour.md §2.7, §4 reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunResult {
    /// Every planned write succeeded (conflicts are reported, not failures).
    Success,
    /// At least one write failed; the others were made.
    PartiallyFailed,
    /// Cancelled by the deletion guard before any write.
    GuardTripped,
    /// The source had no users and nothing is managed.
    NoSourceUsers,
}

impl RunResult {
    /// The reason an applied run with this result reports.
    pub fn reason(self) -> Reason {
        match self {
            RunResult::Success => Reason::Synced,
            RunResult::PartiallyFailed => Reason::PartiallyFailed,
            RunResult::GuardTripped => Reason::DeletionThresholdExceeded,
            RunResult::NoSourceUsers => Reason::NoSourceUsers,
        }
    }
}

impl RunError {
    /// The reason a run that could not be planned reports.
    pub fn reason(&self) -> Reason {
        match self {
            RunError::Config(_) => Reason::InvalidSpec,
            RunError::Source(e) => Reason::of_directory_error(e, Side::Source),
            RunError::Destination(e) => Reason::of_directory_error(e, Side::Destination),
        }
    }
}

mod apply;

pub use apply::{
    ApplyObserver, ApplyOptions, ApplyOutcome, NoProgress, Replanned, UserFailure, apply_run,
};
