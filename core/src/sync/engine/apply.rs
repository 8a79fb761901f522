//! Applying a planned run (docs/behaviour.md §2.7): writes in flight as the destination's
//! latency allows, each recorded in the managed set as it lands; a 409 on a create is re-planned
//! with the planner's matching, not failed. Consecutive Updates or Deletes go in one call to a
//! destination that takes several per request (Graph's `$batch`, docs/behaviour.md §6).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_APPLY_CONCURRENCY, PlannedRun, RunResult};
use crate::directory::{DesiredUser, Directory, DirectoryError, User, UserUpdate};
use crate::sync::config::SyncConfig;
use crate::sync::limiter::ConcurrencyLimit;
use crate::sync::managed::{ManagedEntry, ManagedSet};
use crate::sync::mapping::MappedUser;
use crate::sync::plan::{
    self, Action, PlanContext, PlanItem, UpdateItem, UpdateKind, fold_user_name,
};

/// One user a write failed for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserFailure {
    pub user_name: String,
    pub action: Action,
    /// Short reason, already cut to a status and error code by the directory client.
    pub reason: String,
}

/// What became of a create that got a 409 (docs/behaviour.md §2.4: re-planned, not a failure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replanned {
    pub user_name: String,
    /// `Update` when the existing user was ours or adopted (and brought up to date, or already
    /// was), `Conflict` when it is someone else's.
    pub action: Action,
    pub detail: String,
}

/// The result of applying a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub result: RunResult,
    /// The managed set to save; `None` when the stored set must be left as it is (guard
    /// tripped: the run is cancelled before any write, including releases).
    pub managed: Option<ManagedSet>,
    pub created: usize,
    /// Soft-deleted users restored (and updated) in place of a create.
    pub restored: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Failed users, sorted by userName.
    pub failures: Vec<UserFailure>,
    /// Creates that got a 409 and were re-planned, sorted by userName.
    pub replanned: Vec<Replanned>,
    /// Writes not attempted because the destination refused the credentials or the endpoint
    /// mid-run (see `aborted`).
    pub not_attempted: usize,
    /// The error that stopped further writes, if one did.
    pub aborted: Option<DirectoryError>,
    /// A write found its destination user gone or no longer carrying the expected externalId:
    /// the destination changed behind the plan, so the next run reads it whole
    /// (docs/behaviour.md §7).
    pub met_changed_destination: bool,
}

/// Knobs for [`apply_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    /// The most writes in flight at once (at least 1). The engine keeps fewer in flight while
    /// the destination's latency shows them queueing there ([`ConcurrencyLimit`]).
    pub concurrency: usize,
    /// Call [`ApplyObserver::checkpoint`] after this many finished writes (0 = never), so the
    /// caller can save the managed set during a long apply and a crash loses little.
    pub checkpoint_every: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_APPLY_CONCURRENCY,
            checkpoint_every: 1000,
        }
    }
}

/// Watches an apply. Any `FnMut(done, total)` closure is an observer that only tracks progress.
#[async_trait]
pub trait ApplyObserver: Send {
    /// `done` of `total` writes have finished (successfully or not).
    fn progress(&mut self, _done: usize, _total: usize) {}
    /// The managed set as it stands, every `checkpoint_every` writes; save it if you like.
    async fn checkpoint(&mut self, _managed: &ManagedSet) {}
}

#[async_trait]
impl<F: FnMut(usize, usize) + Send> ApplyObserver for F {
    fn progress(&mut self, done: usize, total: usize) {
        self(done, total)
    }
}

/// An observer that ignores everything.
pub struct NoProgress;

#[async_trait]
impl ApplyObserver for NoProgress {}

/// What one write did to the managed set and the counts.
enum ItemResult {
    Created {
        imm: String,
        entry: ManagedEntry,
    },
    Updated {
        imm: String,
        entry: ManagedEntry,
    },
    Deleted {
        imm: String,
    },
    /// A restore: the user is recorded; `failed` when the update after it failed.
    Restored {
        imm: String,
        entry: ManagedEntry,
        failed: Option<Box<ItemResult>>,
    },
    Replanned {
        replanned: Replanned,
        record: Option<(String, ManagedEntry)>,
        wrote: bool,
    },
    Failed {
        failure: UserFailure,
        forget: Option<String>,
        fatal: Option<DirectoryError>,
        changed_destination: bool,
    },
    NotAttempted,
}

/// Applies a planned run: only when the guard passed and there is something to do. Writes run
/// concurrently, as many as the destination's latency shows it can take, at most
/// `opts.concurrency`; a failure on one user never stops the others (except
/// refused credentials or endpoint, which stop new writes). The returned managed set records
/// every write that succeeded; the caller saves it.
pub async fn apply_run(
    planned: &PlannedRun,
    destination: &dyn Directory,
    opts: &ApplyOptions,
    observer: &mut dyn ApplyObserver,
) -> ApplyOutcome {
    let mut outcome = ApplyOutcome {
        result: RunResult::Success,
        managed: None,
        created: 0,
        restored: 0,
        updated: 0,
        deleted: 0,
        failures: Vec::new(),
        replanned: Vec::new(),
        not_attempted: 0,
        aborted: None,
        met_changed_destination: false,
    };
    if planned.guard.tripped {
        outcome.result = RunResult::GuardTripped;
        return outcome;
    }
    let mut managed = planned.plan.baseline.clone();
    if planned.no_source_users {
        outcome.result = RunResult::NoSourceUsers;
        outcome.managed = Some(managed);
        return outcome;
    }

    let total = planned.plan.writes();
    let stop = AtomicBool::new(false);
    let cfg = &planned.config;
    let stop_ref = &stop;
    let batch = destination.batch_limit().max(1);
    // Collected first: an iterator adapter's closure held across the awaits below would keep
    // the future from being `Send` (the operator spawns it).
    let writes: Vec<&PlanItem> = planned.plan.items.iter().filter(|i| i.is_write()).collect();
    let mut next = 0usize;
    let mut in_flight = FuturesUnordered::new();
    let mut limit = ConcurrencyLimit::new(opts.concurrency);
    // Bumped by every checkpoint: writes in flight across one waited on it, so their latency
    // says nothing about the destination.
    let mut epoch = 0usize;
    let mut done = 0usize;
    let mut next_checkpoint = opts.checkpoint_every;
    loop {
        while in_flight.len() < limit.current()
            && let Some(unit) = next_unit(&writes, &mut next, batch)
        {
            let sent_with = in_flight.len() + 1;
            in_flight.push(async move {
                if stop_ref.load(Ordering::Relaxed) {
                    let skipped = (0..unit.len()).map(|_| ItemResult::NotAttempted);
                    return (skipped.collect::<Vec<_>>(), None);
                }
                let started = Instant::now();
                let results = apply_unit(&unit, destination, cfg).await;
                if results
                    .iter()
                    .any(|r| matches!(r, ItemResult::Failed { fatal: Some(_), .. }))
                {
                    stop_ref.store(true, Ordering::Relaxed);
                }
                // A batch's latency is not one write's.
                let timing =
                    matches!(unit, Unit::One(_)).then(|| (started.elapsed(), sent_with, epoch));
                (results, timing)
            });
        }
        let Some((results, timing)) = in_flight.next().await else {
            break;
        };
        // A re-planned create made several requests; its latency is not one write's.
        if let Some((latency, sent_with, at)) = timing
            && at == epoch
            && !matches!(results.as_slice(), [ItemResult::Replanned { .. }])
        {
            limit.on_sample(latency, sent_with);
        }
        for r in results {
            record(r, &mut outcome, &mut managed);
            done += 1;
            observer.progress(done, total);
        }
        if opts.checkpoint_every > 0 && done >= next_checkpoint && done < total {
            observer.checkpoint(&managed).await;
            epoch += 1;
            next_checkpoint = done - done % opts.checkpoint_every + opts.checkpoint_every;
        }
    }

    outcome
        .failures
        .sort_by_cached_key(|f| (fold_user_name(&f.user_name).into_owned(), f.action));
    outcome
        .replanned
        .sort_by_cached_key(|r| fold_user_name(&r.user_name).into_owned());
    if !outcome.failures.is_empty() || outcome.not_attempted > 0 || outcome.aborted.is_some() {
        outcome.result = RunResult::PartiallyFailed;
    }
    outcome.managed = Some(managed);
    outcome
}

/// Counts one write's result and records it in the managed set.
fn record(r: ItemResult, outcome: &mut ApplyOutcome, managed: &mut ManagedSet) {
    match r {
        // A restored user is recorded even when the update after it failed (then reported as
        // that failure).
        ItemResult::Restored { imm, entry, failed } => {
            managed.insert(imm, entry);
            match failed {
                None => outcome.restored += 1,
                Some(f) => record(*f, outcome, managed),
            }
        }
        ItemResult::Created { imm, entry } => {
            outcome.created += 1;
            managed.insert(imm, entry);
        }
        ItemResult::Updated { imm, entry } => {
            outcome.updated += 1;
            managed.insert(imm, entry);
        }
        ItemResult::Deleted { imm } => {
            outcome.deleted += 1;
            managed.remove(&imm);
        }
        ItemResult::Replanned {
            replanned,
            record,
            wrote,
        } => {
            if wrote {
                outcome.updated += 1;
            }
            if let Some((imm, entry)) = record {
                managed.insert(imm, entry);
            }
            outcome.replanned.push(replanned);
        }
        ItemResult::Failed {
            failure,
            forget,
            fatal,
            changed_destination,
        } => {
            outcome.met_changed_destination |= changed_destination;
            if let Some(imm) = forget {
                managed.remove(&imm);
            }
            if let Some(e) = fatal
                && outcome.aborted.is_none()
            {
                outcome.aborted = Some(e);
            }
            outcome.failures.push(failure);
        }
        ItemResult::NotAttempted => outcome.not_attempted += 1,
    }
}

/// What one request in flight carries: one plan item, or consecutive Updates or Deletes sent
/// together to a destination that takes several in one request ([`Directory::batch_limit`]:
/// Graph's `$batch` saves round trips, not write quota).
enum Unit<'p> {
    One(&'p PlanItem),
    Updates(Vec<&'p UpdateItem>),
    /// `(current, immutable_id)` of each Delete.
    Deletes(Vec<(&'p User, &'p str)>),
}

impl Unit<'_> {
    fn len(&self) -> usize {
        match self {
            Unit::One(_) => 1,
            Unit::Updates(u) => u.len(),
            Unit::Deletes(d) => d.len(),
        }
    }
}

/// The unit starting at `writes[*next]`: up to `batch` consecutive Updates or Deletes, else one
/// item; `*next` moves past it.
fn next_unit<'p>(writes: &[&'p PlanItem], next: &mut usize, batch: usize) -> Option<Unit<'p>> {
    let item = *writes.get(*next)?;
    *next += 1;
    if batch < 2 {
        return Some(Unit::One(item));
    }
    match item {
        PlanItem::Update(u) => {
            let mut updates = vec![&**u];
            while updates.len() < batch
                && let Some(PlanItem::Update(u)) = writes.get(*next)
            {
                updates.push(&**u);
                *next += 1;
            }
            Some(Unit::Updates(updates))
        }
        PlanItem::Delete {
            current,
            immutable_id,
        } => {
            let mut deletes = vec![(current, immutable_id.as_str())];
            while deletes.len() < batch
                && let Some(PlanItem::Delete {
                    current,
                    immutable_id,
                }) = writes.get(*next)
            {
                deletes.push((current, immutable_id.as_str()));
                *next += 1;
            }
            Some(Unit::Deletes(deletes))
        }
        _ => Some(Unit::One(item)),
    }
}

async fn apply_unit(
    unit: &Unit<'_>,
    destination: &dyn Directory,
    cfg: &SyncConfig,
) -> Vec<ItemResult> {
    match unit {
        Unit::One(item) => vec![apply_item(item, destination, cfg).await],
        Unit::Updates(updates) => {
            let requests: Vec<UserUpdate<'_>> = updates
                .iter()
                .map(|u| UserUpdate {
                    id: &u.current.id,
                    current: &u.current,
                    desired: &u.desired,
                    expected_immutable_id: u.expected_immutable_id.as_deref(),
                })
                .collect();
            let results = one_each(destination.update_users(&requests).await, updates.len());
            updates
                .iter()
                .zip(results)
                .map(|(u, r)| update_result(u, r))
                .collect()
        }
        Unit::Deletes(deletes) => {
            let requests: Vec<(&str, Option<&str>)> = deletes
                .iter()
                .map(|(current, imm)| (current.id.as_str(), Some(*imm)))
                .collect();
            let results = one_each(destination.delete_users(&requests).await, deletes.len());
            deletes
                .iter()
                .zip(results)
                .map(|((current, imm), r)| delete_result(current, imm, r))
                .collect()
        }
    }
}

/// `n` results: a directory that answered fewer is failed for the rest, never taken as done.
fn one_each(
    mut results: Vec<Result<(), DirectoryError>>,
    n: usize,
) -> Vec<Result<(), DirectoryError>> {
    results.truncate(n);
    while results.len() < n {
        results.push(Err(DirectoryError::Protocol(
            "the directory gave no result for this write".into(),
        )));
    }
    results
}

fn update_result(u: &UpdateItem, r: Result<(), DirectoryError>) -> ItemResult {
    let (current, desired) = (&u.current, &u.desired);
    match r {
        Ok(()) => ItemResult::Updated {
            imm: desired.immutable_id.clone(),
            entry: ManagedEntry::new(&current.id, &u.source_id, &desired.user_name),
        },
        // Gone since planning: forget it if it was ours, so the next run re-creates it.
        Err(e @ DirectoryError::NotFound(_)) => {
            let ours = matches!(u.kind, UpdateKind::Sync | UpdateKind::Deactivate);
            failed(
                &current.user_name,
                Action::Update,
                e,
                ours.then(|| desired.immutable_id.clone()),
            )
        }
        Err(e) => failed(&current.user_name, Action::Update, e, None),
    }
}

fn delete_result(current: &User, immutable_id: &str, r: Result<(), DirectoryError>) -> ItemResult {
    match r {
        // Already gone: the goal is reached.
        Ok(()) | Err(DirectoryError::NotFound(_)) => ItemResult::Deleted {
            imm: immutable_id.to_owned(),
        },
        Err(e) => failed(&current.user_name, Action::Delete, e, None),
    }
}

/// Refused credentials or endpoint fail every further write too: stop sending them.
fn is_fatal(e: &DirectoryError) -> bool {
    matches!(
        e,
        DirectoryError::InvalidCredentials(_) | DirectoryError::EndpointNotAllowed(_)
    )
}

fn failed(
    user_name: &str,
    action: Action,
    e: DirectoryError,
    forget: Option<String>,
) -> ItemResult {
    if let DirectoryError::Forbidden(_) = e {
        // The destination refused this one user (Entra ID's 403 on an administrator, a user
        // synced from on-premises AD): a Conflict row, not a failed run (docs/behaviour.md §6).
        return ItemResult::Replanned {
            replanned: Replanned {
                user_name: user_name.to_owned(),
                action: Action::Conflict,
                detail: format!("{e}; left as it is"),
            },
            record: None,
            wrote: false,
        };
    }
    let fatal = is_fatal(&e).then(|| e.clone());
    let changed_destination = matches!(
        e,
        DirectoryError::NotFound(_) | DirectoryError::PreconditionFailed(_)
    );
    let reason = match &e {
        DirectoryError::PreconditionFailed(_) => {
            format!("{e} (the user's externalId changed since planning; nothing was written)")
        }
        _ => e.to_string(),
    };
    ItemResult::Failed {
        failure: UserFailure {
            user_name: user_name.to_owned(),
            action,
            reason,
        },
        forget,
        fatal,
        changed_destination,
    }
}

async fn apply_item(item: &PlanItem, destination: &dyn Directory, cfg: &SyncConfig) -> ItemResult {
    match item {
        PlanItem::Add {
            source_id,
            upn,
            desired,
            shown_user_name,
            ..
        } => match destination.create_user(desired).await {
            Ok(created) => ItemResult::Created {
                imm: desired.immutable_id.clone(),
                entry: ManagedEntry::new(&created.id, source_id, &desired.user_name),
            },
            Err(DirectoryError::Conflict(_)) => {
                replan_after_conflict(source_id, upn, shown_user_name, desired, destination, cfg)
                    .await
            }
            Err(e) => failed(&desired.user_name, Action::Add, e, None),
        },
        PlanItem::Restore(r) => {
            let restored = match destination.restore_user(&r.deleted.id).await {
                Ok(u) => u,
                Err(e) => return failed(&r.desired.user_name, Action::Restore, e, None),
            };
            let imm = r.desired.immutable_id.clone();
            let entry = ManagedEntry::new(&restored.id, &r.source_id, &r.desired.user_name);
            // Restored, it is ours again whatever the update below does: recorded either way,
            // so a failed update is retried as an Update, never as a second restore.
            match destination
                .update_user(&restored.id, &restored, &r.desired, Some(&imm))
                .await
            {
                Ok(()) => ItemResult::Restored {
                    imm,
                    entry,
                    failed: None,
                },
                Err(e) => {
                    let mut f = failed(&r.desired.user_name, Action::Restore, e, None);
                    match &mut f {
                        ItemResult::Failed { failure, .. } => {
                            failure.reason =
                                format!("restored, but not updated: {}", failure.reason);
                        }
                        ItemResult::Replanned { replanned, .. } => {
                            replanned.detail =
                                format!("restored, but not updated: {}", replanned.detail);
                        }
                        _ => {}
                    }
                    ItemResult::Restored {
                        imm,
                        entry,
                        failed: Some(Box::new(f)),
                    }
                }
            }
        }
        PlanItem::Update(u) => {
            let r = destination
                .update_user(
                    &u.current.id,
                    &u.current,
                    &u.desired,
                    u.expected_immutable_id.as_deref(),
                )
                .await;
            update_result(u, r)
        }
        PlanItem::Delete {
            current,
            immutable_id,
        } => {
            let r = destination
                .delete_user(&current.id, Some(immutable_id))
                .await;
            delete_result(current, immutable_id, r)
        }
        PlanItem::Conflict { .. } | PlanItem::Unmanaged { .. } => ItemResult::NotAttempted,
    }
}

/// A create got a 409: someone holds the userName now. Look again and plan this one user
/// against what is there, with the planner's own matching rules and messages (docs/behaviour.md
/// §2.4), then do what that plan says: record our own earlier create, adopt, update — or report
/// a conflict.
async fn replan_after_conflict(
    source_id: &str,
    upn: &str,
    shown_user_name: &Option<String>,
    desired: &DesiredUser,
    destination: &dyn Directory,
    cfg: &SyncConfig,
) -> ItemResult {
    let name = desired.user_name.as_str();
    let imm = desired.immutable_id.as_str();
    let replanned = |action: Action, detail: String| Replanned {
        user_name: name.to_owned(),
        action,
        detail,
    };
    let found = match destination.find_by_user_name(name).await {
        Ok(found) => found,
        Err(e) => return failed(name, Action::Add, e, None),
    };
    let source = MappedUser {
        source_id: source_id.to_owned(),
        upn: upn.to_owned(),
        desired: desired.clone(),
        resource_like: false,
        shown_user_name: shown_user_name.clone(),
        invalid: None,
    };
    let nobody = ManagedSet::new();
    let none = HashSet::new();
    let ctx = PlanContext {
        managed: &nobody,
        managed_elsewhere: &none,
        handed_over: &none,
    };
    let plan = plan::plan(cfg, vec![source], found, &ctx);
    let row = plan
        .items
        .iter()
        .find(|i| !matches!(i, PlanItem::Unmanaged { .. } | PlanItem::Delete { .. }));
    match row {
        // Our own earlier create, already as desired: record it.
        None => match plan.baseline.get(imm) {
            Some(e) => ItemResult::Replanned {
                replanned: replanned(
                    Action::Update,
                    "409: already created with this externalId; no change".into(),
                ),
                record: Some((imm.to_owned(), e.clone())),
                wrote: false,
            },
            None => ItemResult::Replanned {
                replanned: replanned(
                    Action::Conflict,
                    "create refused as a duplicate (409); the user could not be found again".into(),
                ),
                record: None,
                wrote: false,
            },
        },
        Some(PlanItem::Update(u)) => {
            let how = match u.kind {
                UpdateKind::Adopt => "adopted a user created meanwhile",
                _ => "already created with this externalId",
            };
            let record = Some((
                imm.to_owned(),
                ManagedEntry::new(&u.current.id, source_id, name),
            ));
            match destination
                .update_user(
                    &u.current.id,
                    &u.current,
                    &u.desired,
                    u.expected_immutable_id.as_deref(),
                )
                .await
            {
                Ok(()) => ItemResult::Replanned {
                    replanned: replanned(Action::Update, format!("409: {how}; updated")),
                    record,
                    wrote: true,
                },
                Err(e) => failed(name, Action::Update, e, None),
            }
        }
        Some(PlanItem::Conflict { reason, .. }) => ItemResult::Replanned {
            replanned: replanned(
                Action::Conflict,
                format!("create refused as a duplicate (409): {reason}"),
            ),
            record: None,
            wrote: false,
        },
        Some(_) => ItemResult::Replanned {
            replanned: replanned(
                Action::Conflict,
                "create refused as a duplicate (409) but no user has this userName; another unique attribute collides"
                    .into(),
            ),
            record: None,
            wrote: false,
        },
    }
}
