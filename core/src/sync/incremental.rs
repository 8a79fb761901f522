//! Incremental runs (docs/behaviour.md §7): which run is due, full or incremental, and how an
//! incremental run plans from the source's change feed with the same planner and guard as a
//! full one.
//!
//! An incremental run reads only the users the delta read names, scopes them here (a change
//! feed cannot filter by domain), reads only those users' destination records, and plans them
//! against the part of the managed set they concern; the rest of the set is carried over
//! untouched, and the guard counts against the whole of it.

use std::collections::{HashMap, HashSet};

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::directory::{DeltaError, DeltaItem, Directory, DirectoryError, User};
use crate::sync::config::{SyncConfig, ends_with_ignore_ascii_case};
use crate::sync::engine::{OtherResources, PlannedRun, RunError, RunResult, resolve_hand_overs};
use crate::sync::guard;
use crate::sync::managed::ManagedSet;
use crate::sync::mapping::SourceMapper;
use crate::sync::plan::{self, PlanContext, fold_user_name};

/// A link older than this is not followed: Graph keeps directory delta tokens for 7 days, and
/// a day of margin means a link is never used on the day it may lapse.
pub const LINK_MAX_AGE_SECS: i64 = 6 * 24 * 3600;
/// `spec.fullSyncInterval`'s default: a full run at least daily repairs edits made directly in
/// the destination, which no change feed of the source can show.
pub const DEFAULT_FULL_SYNC_INTERVAL_SECS: i64 = 24 * 3600;
/// Bumped when what a delta state means changes, so that an old state forces one full run.
const FINGERPRINT_VERSION: &str = "dirsync.io/delta-state/1";

/// Why a run is full rather than incremental.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FullReason {
    /// No delta link kept yet (first run, or a state from before incremental runs).
    NoDeltaLink,
    /// The source refused the kept link (expired, reset, any 4xx).
    DeltaLinkRejected,
    /// The kept link is older than [`LINK_MAX_AGE_SECS`].
    DeltaLinkAged,
    /// The configuration changed since the link was taken.
    SpecChanged,
    /// A dry run: previews are always whole.
    DryRun,
    /// Asked for with sync-now: its preview is whole too.
    SyncNow,
    /// Asked for explicitly (`dirsync apply --full`).
    Requested,
    /// The last run's writes met a destination user that was missing or changed.
    DestinationChanged,
    /// `spec.fullSyncInterval` passed since the last full run.
    FullSyncInterval,
    /// The last run left part of its plan unwritten (failed writes of a full run, or rows an
    /// approved preview did not hold).
    PreviousRunIncomplete,
    /// The source has no change feed (a SCIM source).
    SourceWithoutDelta,
    /// Approvals compare whole plans (`spec.approval` is not Never).
    Approval,
}

impl FullReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FullReason::NoDeltaLink => "NoDeltaLink",
            FullReason::DeltaLinkRejected => "DeltaLinkRejected",
            FullReason::DeltaLinkAged => "DeltaLinkAged",
            FullReason::SpecChanged => "SpecChanged",
            FullReason::DryRun => "DryRun",
            FullReason::SyncNow => "SyncNow",
            FullReason::Requested => "Requested",
            FullReason::DestinationChanged => "DestinationChanged",
            FullReason::FullSyncInterval => "FullSyncInterval",
            FullReason::PreviousRunIncomplete => "PreviousRunIncomplete",
            FullReason::SourceWithoutDelta => "SourceWithoutDelta",
            FullReason::Approval => "Approval",
        }
    }

    /// The reason in words, completing "full run: …".
    pub fn describe(self) -> &'static str {
        match self {
            FullReason::NoDeltaLink => "no delta link kept yet",
            FullReason::DeltaLinkRejected => "the source refused the kept delta link",
            FullReason::DeltaLinkAged => "the kept delta link is more than 6 days old",
            FullReason::SpecChanged => "the configuration changed since the last full run",
            FullReason::DryRun => "a dry run previews everything",
            FullReason::SyncNow => "sync-now previews everything",
            FullReason::Requested => "asked for",
            FullReason::DestinationChanged => {
                "the last run met a destination user that was missing or changed"
            }
            FullReason::FullSyncInterval => "fullSyncInterval passed since the last full run",
            FullReason::PreviousRunIncomplete => "the last run left part of its plan unwritten",
            FullReason::SourceWithoutDelta => "the source has no change feed",
            FullReason::Approval => "approvals compare whole plans",
        }
    }
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunKind {
    Full(FullReason),
    Incremental,
}

impl RunKind {
    /// `Full` or `Incremental`, as status, reports and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Full(_) => "Full",
            RunKind::Incremental => "Incremental",
        }
    }

    pub fn full_reason(self) -> Option<FullReason> {
        match self {
            RunKind::Full(r) => Some(r),
            RunKind::Incremental => None,
        }
    }

    pub fn is_incremental(self) -> bool {
        self == RunKind::Incremental
    }

    /// `incremental` or `full (reason in words)`, for one-line summaries.
    pub fn describe(self) -> String {
        match self {
            RunKind::Incremental => "incremental".to_owned(),
            RunKind::Full(r) => format!("full ({})", r.describe()),
        }
    }
}

/// What is kept beside the managed set between runs (never in status: the link is the key to
/// the tenant's change feed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeltaState {
    /// The link to follow next.
    pub link: String,
    /// When `link` was taken (Unix seconds, the keeper's clock).
    pub issued_at: i64,
    /// [`fingerprint`] of the configuration the link belongs to.
    pub fingerprint: String,
    /// When the last full run that applied its plan started (Unix seconds).
    pub last_full_at: i64,
    /// Set when the next run must be full, whatever the link says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_full: Option<FullReason>,
    /// Source ids the next incremental run reads again although they did not change
    /// ([`crate::sync::plan::Plan::retry_source_ids`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<String>,
}

/// A digest of everything that decides which users a run selects and how it maps them: the
/// sync configuration and `context` (the caller's: the source properties read and the whole
/// resource spec, so that any spec change makes the next run full). A link kept under another
/// fingerprint is not followed.
pub fn fingerprint(cfg: &SyncConfig, context: &str) -> String {
    let mut h = Sha256::new();
    h.update(FINGERPRINT_VERSION.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(cfg).unwrap_or_default());
    h.update([0]);
    h.update(context.as_bytes());
    crate::sync::csv::hex(&h.finalize())
}

/// What decides the kind of a run.
#[derive(Clone, Copy, Debug)]
pub struct KindInputs<'a> {
    pub state: Option<&'a DeltaState>,
    /// [`fingerprint`] of this run's configuration.
    pub fingerprint: &'a str,
    /// Unix seconds.
    pub now: i64,
    pub full_sync_interval_secs: i64,
    /// A reason the caller already has for a full run (dry run, sync-now, `--full`, a source
    /// without a change feed).
    pub forced: Option<FullReason>,
}

/// The link to follow, or why this run is full (docs/behaviour.md §7).
pub fn choose(i: KindInputs<'_>) -> Result<&str, FullReason> {
    if let Some(r) = i.forced {
        return Err(r);
    }
    let Some(s) = i.state else {
        return Err(FullReason::NoDeltaLink);
    };
    if let Some(r) = s.next_full {
        return Err(r);
    }
    if s.fingerprint != i.fingerprint {
        return Err(FullReason::SpecChanged);
    }
    if s.link.is_empty() {
        return Err(FullReason::NoDeltaLink);
    }
    if i.now.saturating_sub(s.issued_at) > LINK_MAX_AGE_SECS {
        return Err(FullReason::DeltaLinkAged);
    }
    if i.now.saturating_sub(s.last_full_at) >= i.full_sync_interval_secs.max(0) {
        return Err(FullReason::FullSyncInterval);
    }
    Ok(&s.link)
}

/// How an applied run ended, as far as the delta state cares.
#[derive(Clone, Debug)]
pub struct AppliedRun<'a> {
    pub kind: RunKind,
    /// The link the run read up to: taken before the full read, or the one the delta read
    /// ended with. `None` when the source has no change feed.
    pub new_link: Option<&'a str>,
    /// When the run started (Unix seconds).
    pub started_at: i64,
    pub fingerprint: &'a str,
    pub result: RunResult,
    /// A write met a destination user that was missing or no longer ours.
    pub met_changed_destination: bool,
    /// The delta read returned at least one item, or users were read again (incremental runs).
    pub read_changes: bool,
    /// The plan's [`crate::sync::plan::Plan::retry_source_ids`].
    pub retry: &'a [String],
    /// Only part of the plan was applied (an approved preview's rows): what was left out is
    /// before the new link, so the next run must be full to see it.
    pub partial_plan: bool,
}

/// The delta state to keep after an applied run, or `None` to leave the kept one as it is
/// (so that an idle run writes nothing, and a cancelled or failed incremental run replays the
/// same changes next time).
pub fn after_apply(prev: Option<&DeltaState>, run: &AppliedRun<'_>) -> Option<DeltaState> {
    if run.result == RunResult::GuardTripped {
        return None;
    }
    let incomplete = run.result == RunResult::PartiallyFailed;
    let forced = if run.met_changed_destination {
        Some(FullReason::DestinationChanged)
    } else if run.partial_plan {
        Some(FullReason::PreviousRunIncomplete)
    } else {
        None
    };
    match run.kind {
        RunKind::Full(_) => {
            let link = run.new_link?;
            Some(DeltaState {
                link: link.to_owned(),
                issued_at: run.started_at,
                fingerprint: run.fingerprint.to_owned(),
                last_full_at: run.started_at,
                next_full: forced.or(incomplete.then_some(FullReason::PreviousRunIncomplete)),
                retry: run.retry.to_vec(),
            })
        }
        RunKind::Incremental => {
            let prev = prev?;
            if forced.is_some() {
                return Some(DeltaState {
                    next_full: forced,
                    ..prev.clone()
                });
            }
            if incomplete || !run.read_changes {
                return None;
            }
            Some(DeltaState {
                link: run.new_link?.to_owned(),
                issued_at: run.started_at,
                retry: run.retry.to_vec(),
                ..prev.clone()
            })
        }
    }
}

/// Plans an incremental run from `items`, the source's changes since the kept link, and the
/// users `retry` names (read again from the source by id).
///
/// Scoping: a changed user is considered when its user name is in the domain now or it is
/// managed (by its source id: a user renamed out of the domain or removed must be let go); a
/// removed user only when it is managed. Destination records are read by id and by name (a few
/// at a time, taken in order): the managed record of each user concerned, and the users holding
/// each planned user name (a collision or an adoption is decided as a full run would). A managed destination user found that way whose
/// source user did not change is read from the source as well, so that it is planned, never
/// taken for gone.
pub async fn plan_incremental(
    source: &dyn Directory,
    destination: &dyn Directory,
    cfg: &SyncConfig,
    managed: &ManagedSet,
    others: &OtherResources,
    items: Vec<DeltaItem>,
    retry: &[String],
) -> Result<PlannedRun, RunError> {
    cfg.validate()?;
    let mut again = Vec::with_capacity(retry.len() + items.len());
    for id in retry {
        again.push(match source.get_user(id).await.map_err(RunError::Source)? {
            Some(u) => DeltaItem::Changed(u),
            None => DeltaItem::Removed { id: id.clone() },
        });
    }
    again.extend(items);
    let items = last_per_id(again);
    let suffix = cfg.domain_suffix();
    let by_source: HashMap<String, &str> = managed
        .iter()
        .filter(|(_, e)| !e.source_id.is_empty())
        .map(|(imm, e)| (e.source_id.to_ascii_lowercase(), imm))
        .collect();

    // The source users concerned, and the managed entries they touch.
    let mut involved: HashSet<String> = HashSet::new();
    let mut changed: Vec<User> = Vec::new();
    let mut seen_source: HashSet<String> = HashSet::new();
    for item in items {
        match item {
            DeltaItem::Changed(u) => {
                let key = u.id.to_ascii_lowercase();
                let managed_imm = by_source.get(&key).copied();
                if managed_imm.is_none() && !ends_with_ignore_ascii_case(&u.user_name, &suffix) {
                    continue;
                }
                if let Some(imm) = managed_imm {
                    involved.insert(imm.to_owned());
                }
                seen_source.insert(key);
                changed.push(u);
            }
            DeltaItem::Removed { id } => {
                if let Some(imm) = by_source.get(&id.to_ascii_lowercase()) {
                    involved.insert((*imm).to_owned());
                    seen_source.insert(id.to_ascii_lowercase());
                }
            }
        }
    }
    let source_users_read = changed.len();
    let mut mapper = SourceMapper::new(cfg);
    for u in changed {
        crate::directory::UserSink::push(&mut mapper, u);
    }
    let (mut mapped, _) = mapper
        .finish()
        .map_err(|e| RunError::Source(DirectoryError::Protocol(e.to_string())))?;
    for m in &mapped.users {
        if managed.contains(&m.desired.immutable_id) {
            involved.insert(m.desired.immutable_id.clone());
        }
    }

    // Destination records: the managed ones by id, then whoever holds each planned name. The
    // look-ups run concurrently; their results are taken in order, so the plan is the same.
    let mut dst = Found::default();
    let mut sorted_involved: Vec<&String> = involved.iter().collect();
    sorted_involved.sort();
    let ids: Vec<String> = sorted_involved
        .into_iter()
        .filter_map(|imm| managed.get(imm).map(|e| e.destination_id.clone()))
        .collect();
    let mut by_id = futures::stream::iter(ids)
        .map(|id| read_by_id(destination, id))
        .buffered(DESTINATION_LOOKUP_CONCURRENCY);
    while let Some(found) = by_id.next().await {
        dst.push(found.map_err(RunError::Destination)?);
    }
    drop(by_id);
    let mut pulled: Vec<User> = Vec::new();
    let names: Vec<String> = mapped
        .users
        .iter()
        .map(|m| m.desired.user_name.clone())
        .filter(|name| !dst.holds(name))
        .collect();
    let mut by_name = futures::stream::iter(names)
        .map(|name| read_by_name(destination, name))
        .buffered(DESTINATION_LOOKUP_CONCURRENCY);
    while let Some(r) = by_name.next().await {
        let (name, found) = r.map_err(RunError::Destination)?;
        // Already found under an earlier name: taken once, as one by one would.
        if dst.holds(&name) {
            continue;
        }
        for found in found {
            // Ours, but its source user did not change: plan it too, from the source.
            if let Some(entry) = found
                .immutable_id
                .as_deref()
                .and_then(|imm| managed.get(imm).map(|e| (imm, e)))
                && !involved.contains(entry.0)
            {
                involved.insert(entry.0.to_owned());
                let sid = entry.1.source_id.to_ascii_lowercase();
                if !sid.is_empty()
                    && seen_source.insert(sid)
                    && let Some(u) = source
                        .get_user(&entry.1.source_id)
                        .await
                        .map_err(RunError::Source)?
                {
                    pulled.push(u);
                }
            }
            dst.push(Some(found));
        }
    }
    drop(by_name);
    let source_users_read = source_users_read + pulled.len();
    if !pulled.is_empty() {
        let mut mapper = SourceMapper::new(cfg);
        for u in pulled {
            crate::directory::UserSink::push(&mut mapper, u);
        }
        let (more, _) = mapper
            .finish()
            .map_err(|e| RunError::Source(DirectoryError::Protocol(e.to_string())))?;
        mapped.users.extend(more.users);
    }

    // Plan the part of the managed set concerned; carry the rest over.
    let part: ManagedSet = involved
        .iter()
        .filter_map(|imm| managed.get(imm).map(|e| (imm.clone(), e.clone())))
        .collect();
    let dst = dst.users;
    let destination_users_read = dst.len();
    let handed_over =
        resolve_hand_overs(source, cfg, &part, others, &mapped.users, &dst, false).await?;
    let ctx = PlanContext {
        managed: &part,
        managed_elsewhere: &others.managed_elsewhere,
        handed_over: &handed_over,
    };
    let mut plan = plan::plan(cfg, mapped.users, dst, &ctx);
    crate::sync::engine::with_restores(destination, cfg, &mut plan).await?;
    let mut whole = managed.clone();
    for (imm, _) in part.iter() {
        whole.remove(imm);
    }
    for (imm, e) in plan.baseline.iter() {
        whole.insert(imm, e.clone());
    }
    plan.baseline = whole;
    // Users outside this read are taken as present: the guard counts the whole managed set.
    plan.managed_present = managed.len().saturating_sub(plan.managed_gone);
    let guard = guard::evaluate(&plan, cfg.max_allowed_deletions);
    Ok(PlannedRun {
        config: cfg.clone(),
        plan,
        guard,
        skipped: mapped.skipped,
        no_source_users: false,
        source_users_read,
        destination_users_read,
        kind: RunKind::Incremental,
    })
}

/// The last item per id, compared case-insensitively (a change feed may send a user twice, and
/// replays are normal), in the order of their last appearance.
pub(crate) fn last_per_id(items: Vec<DeltaItem>) -> Vec<DeltaItem> {
    let id_of = |i: &DeltaItem| match i {
        DeltaItem::Changed(u) => u.id.to_ascii_lowercase(),
        DeltaItem::Removed { id } => id.to_ascii_lowercase(),
    };
    let mut last: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for (n, i) in items.iter().enumerate() {
        last.insert(id_of(i), n);
    }
    items
        .into_iter()
        .enumerate()
        .filter(|(n, i)| last.get(&id_of(i)) == Some(n))
        .map(|(_, i)| i)
        .collect()
}

/// How many destination records an incremental run reads at once.
const DESTINATION_LOOKUP_CONCURRENCY: usize = 8;

// Named async fns with owned arguments, not closures over borrows: the run's future must stay
// `Send` (as `resolve_hand_overs` in core/src/sync/engine/mod.rs).
async fn read_by_id(
    destination: &dyn Directory,
    id: String,
) -> Result<Option<User>, DirectoryError> {
    destination.get_user(&id).await
}

async fn read_by_name(
    destination: &dyn Directory,
    name: String,
) -> Result<(String, Vec<User>), DirectoryError> {
    let found = destination.find_by_user_name(&name).await?;
    Ok((name, found))
}

/// The destination users an incremental run read, each once, and the user names they hold.
#[derive(Default)]
struct Found {
    users: Vec<User>,
    ids: HashSet<String>,
    names: HashSet<String>,
}

impl Found {
    fn push(&mut self, found: Option<User>) {
        if let Some(u) = found
            && self.ids.insert(u.id.clone())
        {
            self.names.insert(fold_user_name(&u.user_name).into_owned());
            self.users.push(u);
        }
    }

    /// Someone read already holds `name`.
    fn holds(&self, name: &str) -> bool {
        self.names.contains(fold_user_name(name).as_ref())
    }
}

/// A planned run and what its delta state needs after the apply.
#[derive(Clone, Debug)]
pub struct KindedRun {
    pub planned: PlannedRun,
    /// The link to keep if the apply finishes ([`AppliedRun::new_link`]).
    pub new_link: Option<String>,
    /// An incremental run read at least one change or re-read user.
    pub read_changes: bool,
    /// Why a full run could not take a delta link (the run went on; the next one is full too).
    pub link_error: Option<DirectoryError>,
    /// This run's [`fingerprint`], kept with the new link ([`AppliedRun::fingerprint`]).
    pub fingerprint: String,
}

/// How [`plan_of_kind`] should go about it.
#[derive(Clone, Copy, Debug)]
pub struct KindRequest<'a> {
    pub state: Option<&'a DeltaState>,
    /// Unix seconds.
    pub now: i64,
    pub full_sync_interval_secs: i64,
    /// A reason the caller has for a full run (dry run, sync-now, `--full`).
    pub forced: Option<FullReason>,
    /// Take a link before a full read (not for a preview that keeps nothing).
    pub take_link: bool,
    /// The caller's part of the [`fingerprint`]: the source properties read and the spec.
    pub context: &'a str,
}

/// Plans the run that is due (docs/behaviour.md §7): incremental when the kept link may be
/// followed and the source takes it, else full — taking a link first, so that a change made
/// while the source is read whole is in the next incremental run.
pub async fn plan_of_kind(
    source: &dyn Directory,
    destination: &dyn Directory,
    cfg: &SyncConfig,
    managed: &ManagedSet,
    others: &OtherResources,
    req: KindRequest<'_>,
) -> Result<KindedRun, RunError> {
    let fp = fingerprint(cfg, req.context);
    let feed = source.delta();
    let forced = req
        .forced
        .or(feed.is_none().then_some(FullReason::SourceWithoutDelta));
    let choice = choose(KindInputs {
        state: req.state,
        fingerprint: &fp,
        now: req.now,
        full_sync_interval_secs: req.full_sync_interval_secs,
        forced,
    });
    let reason = match (choice, feed) {
        (Ok(link), Some(feed)) => match feed.read_delta(link).await {
            Ok(read) => {
                let retry = req.state.map(|s| s.retry.as_slice()).unwrap_or_default();
                let read_changes = !read.items.is_empty() || !retry.is_empty();
                let planned =
                    plan_incremental(source, destination, cfg, managed, others, read.items, retry)
                        .await?;
                return Ok(KindedRun {
                    planned,
                    new_link: Some(read.link),
                    read_changes,
                    link_error: None,
                    fingerprint: fp,
                });
            }
            Err(DeltaError::Rejected(_)) => FullReason::DeltaLinkRejected,
            Err(DeltaError::Read(e)) => return Err(RunError::Source(e)),
        },
        (Ok(_), None) => FullReason::SourceWithoutDelta,
        (Err(r), _) => r,
    };
    // A link that cannot be taken costs the next run a full read, never this run: incremental
    // runs only save work, so the full run goes on without one.
    let (new_link, link_error) = match (feed, req.take_link) {
        (Some(feed), true) => match feed.delta_link_now().await {
            Ok(link) => (Some(link), None),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    let planned = crate::sync::engine::plan_run(source, destination, cfg, managed, others)
        .await?
        .with_kind(RunKind::Full(reason));
    Ok(KindedRun {
        planned,
        new_link,
        read_changes: false,
        link_error,
        fingerprint: fp,
    })
}
