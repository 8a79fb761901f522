//! The reconciler: a thin pipeline around the sync engine.
//!
//! decide (pure [`schedule`]) → claim the run in status under a resourceVersion precondition →
//! load Secrets and build the per-resource clients → load the managed set → plan → publish
//! the preview → apply if due and allowed → save the managed set (with checkpoints during the
//! apply) → run report → status → events. A reconcile with nothing due writes nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::controller::approval::{self, Gate};
use crate::controller::clients::{self, ResourceClients};
use crate::controller::error::{Error, Result};
use crate::controller::objects::{Objects, Owner, WriteCheck};
use crate::controller::preview::Shelf;
use crate::controller::schedule::{self, Decision, Trigger};
use crate::controller::status::{self, reasons, whole_seconds};
use crate::controller::store::ClusterStore;
use crate::controller::{Context, preview, report};
use crate::crd::{
    ApprovalStatus, DirectorySync, DirectorySyncStatus, PreviewStatus, RunClaim, RunRecord,
    SYNC_NOW_ANNOTATION, SyncMode,
};
use crate::sync::engine::{ApplyObserver, ApplyOptions, OtherResources, RunError, RunResult};
use crate::sync::managed::{ManagedSet, ManagedStore};
use crate::sync::{PlannedRun, apply_run, plan_run};

/// Runs kept in `status.history`.
pub const HISTORY_LEN: usize = 10;
/// Longest wait between two looks at an idle resource (an idle look writes nothing).
const RESYNC: Duration = Duration::from_secs(3600);

/// The reconcile entry point.
pub async fn reconcile(obj: Arc<DirectorySync>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    ctx.refresh_approval_gauges();
    let r = reconcile_inner(&obj, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &r {
        ctx.metrics.error(e.reason());
    }
    r
}

/// Requeues failed reconciles (errors outside a run: reading or writing the resource).
pub fn error_policy(obj: Arc<DirectorySync>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), step = err.step(), reason = err.reason(), error = %err, "reconcile failed");
    match err {
        Error::MissingObjectKey(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

fn now() -> Timestamp {
    whole_seconds(Timestamp::now())
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The interval a resource runs at: its spec, bounded below by `--min-interval`.
pub fn effective_interval(spec_interval: &str, min: Duration) -> Duration {
    crate::duration::parse_duration(spec_interval)
        .unwrap_or(Duration::from_secs(3600))
        .max(min)
}

fn sync_now_value(obj: &DirectorySync) -> Option<String> {
    obj.annotations()
        .get(SYNC_NOW_ANNOTATION)
        .filter(|v| !v.is_empty())
        .cloned()
}

fn decide(obj: &DirectorySync, ctx: &Context, uid: &str, now: Timestamp) -> Decision {
    let status = obj.status.clone().unwrap_or_default();
    let interval = effective_interval(&obj.spec.interval, ctx.settings.min_interval);
    let sync_now = sync_now_value(obj);
    schedule::decide(&schedule::Inputs {
        mode: obj.spec.mode,
        generation: obj.metadata.generation.unwrap_or(0),
        interval,
        offset: schedule::slot_offset(uid, interval),
        sync_now: sync_now.as_deref(),
        last_sync_now: status.last_sync_now.as_deref(),
        history: &status.history,
        backoff: ctx.settings.backoff,
        now,
        approval_due: approval_due(obj, &status),
    })
}

/// `spec.approvedPreview` names the pinned preview, unused: the next run may apply it.
fn approval_due(obj: &DirectorySync, status: &DirectorySyncStatus) -> bool {
    let Some(approved) = obj.spec.approved_preview.as_deref() else {
        return false;
    };
    status.approval.as_ref().is_some_and(|a| {
        a.consumed.as_deref() != Some(approved)
            && a.pending.as_ref().is_some_and(|p| p.sha256 == approved)
    })
}

/// When to look at the resource again, given the next run and the preview's expiry.
fn requeue_for(
    next: Option<Timestamp>,
    status: &DirectorySyncStatus,
    now: Timestamp,
    ctx: &Context,
) -> Action {
    let mut at = add(now, RESYNC.min(ctx.settings.report_retention));
    if let Some(n) = next {
        at = at.min(n);
    }
    if let Some(p) = &status.preview {
        at = at.min(p.expires_at.0);
    }
    if let Some(p) = status.approval.as_ref().and_then(|a| a.pending.as_ref()) {
        at = at.min(p.expires_at.0);
    }
    let wait = at.duration_since(now).unsigned_abs();
    // A second of slack: slots and expiries are compared at whole seconds.
    Action::requeue(wait.max(Duration::from_millis(200)) + Duration::from_millis(500))
}

async fn reconcile_inner(obj: &DirectorySync, ctx: &Context) -> Result<Action> {
    let owner = Owner::of(obj)?;
    let now = now();
    let mut decision = decide(obj, ctx, &owner.uid, now);
    // A Secret it references changed since a failed run: retry now rather than after the
    // backoff (fixing a Secret re-runs the resource).
    if let Decision::Idle { .. } = decision
        && let Some(changed) = ctx.take_secret_change(&owner.uid)
        && let Some(last) = obj.status.as_ref().and_then(|s| s.history.first())
        && !schedule::is_settled(&last.result)
        && changed >= last.start_time.0
        && last.generation == obj.metadata.generation
    {
        decision = Decision::Run {
            apply: last.applied && obj.spec.mode != SyncMode::DryRun,
            trigger: Trigger::Retry,
        };
    }
    match decision {
        Decision::Idle { next } => idle(obj, ctx, &owner, next, now).await,
        Decision::Run { apply, trigger } => run(obj, ctx, &owner, apply, trigger, now).await,
    }
}

/// Nothing due: keep `nextRunTime` right, remove an expired preview and old reports, and
/// write only if that changed something.
async fn idle(
    obj: &DirectorySync,
    ctx: &Context,
    owner: &Owner,
    next: Option<Timestamp>,
    now: Timestamp,
) -> Result<Action> {
    let old = obj.status.clone().unwrap_or_default();
    let mut new = old.clone();
    new.next_run_time = next.map(Time);
    let objects = Objects::new(ctx.client.clone(), &owner.namespace, ctx.settings.store_in);
    if let Some(p) = &old.preview
        && p.expires_at.0 <= now
    {
        preview::remove(&objects, owner)
            .await
            .map_err(Error::Kube)?;
        ctx.metrics.write("delete");
        info!(name = %owner.name, namespace = %owner.namespace, "removed an expired preview");
        new.preview = None;
        // Say so where people look, keeping the condition's reason and status.
        if let Some(ready) = new
            .conditions
            .iter_mut()
            .find(|c| c.type_ == status::types::READY)
            && ready.reason == reasons::PREVIEW_READY
        {
            ready.message = format!(
                "The preview expired at {} and was removed; set dirsync.io/sync-now to make a new one.",
                p.expires_at.0
            );
        }
    }
    if let Some(state) = new.approval.as_mut()
        && let Some(p) = approval::expire(state, now)
    {
        preview::remove_from(Shelf::Pending, &objects, owner)
            .await
            .map_err(Error::Kube)?;
        ctx.metrics.write("delete");
        ctx.metrics.approval("expired");
        info!(name = %owner.name, namespace = %owner.namespace, sha256 = %p.sha256, "removed a pending preview that expired unapproved");
        if let Some(ready) = new
            .conditions
            .iter_mut()
            .find(|c| c.type_ == status::types::READY)
            && health_waits_for_approval(&ready.reason)
        {
            ready.message = format!(
                "The pending preview {} expired at {} unapproved and was removed; the next applying run pins a new one.",
                p.sha256, p.expires_at.0
            );
        }
    }
    sweep_reports(ctx, owner, &objects, now).await;
    if new != old {
        let api: Api<DirectorySync> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        let patch = json!({ "status": status::merge_patch(&old, &new) });
        api.patch_status(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::PatchStatus)?;
        ctx.metrics.write("status");
    }
    Ok(requeue_for(next, &new, now, ctx))
}

fn health_waits_for_approval(reason: &str) -> bool {
    status::health_of(reason) == status::Health::Suspended
        || reason == reasons::DELETION_THRESHOLD_EXCEEDED
}

/// Removes expired run reports, at most once an hour (or once per retention period, if
/// shorter) per resource: a list is a read; deletes happen only when something expired.
/// Reports of the other kind (left by a change of `--store-in`) expire the same way.
async fn sweep_reports(ctx: &Context, owner: &Owner, objects: &Objects, now: Timestamp) {
    let due = match ctx.report_sweeps.lock() {
        Ok(mut m) => {
            let last = m.get(&owner.uid).copied();
            let every = Duration::from_secs(3600)
                .min(ctx.settings.report_retention)
                .max(Duration::from_secs(1));
            if last.is_some_and(|l| l.elapsed() < every) {
                false
            } else {
                m.insert(owner.uid.clone(), Instant::now());
                true
            }
        }
        Err(_) => false,
    };
    if due {
        for objects in [objects.clone(), objects.other()] {
            match report::expire(&objects, owner, ctx.settings.report_retention, now).await {
                Ok(0) => {}
                Ok(n) => {
                    ctx.metrics.write("delete");
                    info!(name = %owner.name, namespace = %owner.namespace, kind = %objects.kind(), removed = n, "removed expired run reports");
                }
                Err(e) => {
                    warn!(name = %owner.name, kind = %objects.kind(), error = %e, "could not sweep run reports")
                }
            }
        }
    }
}

fn new_run_id(now: Timestamp) -> String {
    let stamp = now.strftime("%Y%m%d-%H%M%S").to_string();
    let suffix: u16 = rand::random();
    format!("{stamp}-{suffix:04x}")
}

/// What a run produced, for status and events.
struct RunOutcome {
    reason: &'static str,
    message: String,
    adds: i64,
    updates: i64,
    deletes: i64,
    conflicts: i64,
    unmanaged: i64,
    failed: i64,
    preview: Option<PreviewStatus>,
    managed_users: Option<i64>,
    applied: bool,
    /// A dry run whose plan the guard would cancel.
    guard_note: Option<String>,
    /// `status.approval` as this run leaves it, when it changed it.
    approval: Option<ApprovalStatus>,
}

async fn run(
    obj: &DirectorySync,
    ctx: &Context,
    owner: &Owner,
    apply: bool,
    trigger: Trigger,
    now: Timestamp,
) -> Result<Action> {
    let api: Api<DirectorySync> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    // Decide again on the freshest copy: the cache may lag behind our own last write, or
    // another replica may just have run.
    let fresh = api.get_status(&owner.name).await.map_err(Error::Kube)?;
    if fresh.meta().uid.as_deref() != Some(owner.uid.as_str()) {
        return Ok(Action::await_change());
    }
    let (apply, trigger) = match decide(&fresh, ctx, &owner.uid, now) {
        Decision::Run { apply, trigger } => (apply, trigger),
        // A retry asked for by a Secret change, still against the same failed run.
        Decision::Idle { .. }
            if trigger == Trigger::Retry
                && fresh
                    .status
                    .as_ref()
                    .and_then(|s| s.history.first())
                    .map(|r| &r.id)
                    == obj
                        .status
                        .as_ref()
                        .and_then(|s| s.history.first())
                        .map(|r| &r.id) =>
        {
            (apply, trigger)
        }
        Decision::Idle { .. } => return Ok(Action::requeue(Duration::from_millis(500))),
    };
    let generation = fresh.metadata.generation.unwrap_or(0);
    let fresh_status = fresh.status.clone().unwrap_or_default();
    let me = ctx.settings.identity.as_str();
    if let Some(c) = &fresh_status.claim
        && c.holder != me
    {
        let age = now.duration_since(c.since.0).unsigned_abs();
        if age < ctx.settings.claim_ttl {
            info!(name = %owner.name, holder = %c.holder, run = %c.run_id, "the run is claimed by another replica; waiting");
            return Ok(Action::requeue(
                ctx.settings.claim_ttl - age + Duration::from_secs(1),
            ));
        }
        warn!(name = %owner.name, holder = %c.holder, run = %c.run_id, "taking over a stale run claim");
    }

    // Claim: a precondition on resourceVersion makes two replicas' claims exclusive.
    let run_id = new_run_id(now);
    let mut claimed = fresh_status.clone();
    claimed.claim = Some(RunClaim {
        holder: me.to_owned(),
        run_id: run_id.clone(),
        since: Time(now),
    });
    let what = if apply { "apply" } else { "preview" };
    let reconciling_msg = format!(
        "Run {run_id} ({what}, trigger {}) is in progress",
        trigger.as_str()
    );
    status::set_condition(
        &mut claimed.conditions,
        status::types::RECONCILING,
        true,
        reasons::RUNNING,
        &reconciling_msg,
        Some(generation),
        now,
    );
    let patch = json!({
        "metadata": { "resourceVersion": fresh.metadata.resource_version },
        "status": status::merge_patch(&fresh_status, &claimed),
    });
    match api
        .patch_status(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => ctx.metrics.write("status"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            info!(name = %owner.name, "claim lost a race (resourceVersion changed); retrying");
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        Err(e) => return Err(Error::ClaimRun(e)),
    }
    info!(name = %owner.name, namespace = %owner.namespace, run = %run_id, apply, trigger = trigger.as_str(), "run started");

    // Keep the claim fresh while the run lasts; losing it aborts the run without a status write.
    let lost = Arc::new(Notify::new());
    let heartbeat = tokio::spawn(heartbeat(
        api.clone(),
        owner.name.clone(),
        run_id.clone(),
        ctx.settings.claim_ttl,
        lost.clone(),
        ctx.metrics.clone(),
    ));
    let run_started = Instant::now();
    let result = tokio::select! {
        r = execute(&fresh, ctx, owner, apply, &run_id, now) => Some(r),
        _ = lost.notified() => None,
    };
    heartbeat.abort();
    let Some(result) = result else {
        warn!(name = %owner.name, run = %run_id, "the run claim was taken over; run abandoned without a status write");
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    ctx.metrics
        .run_duration
        .observe(run_started.elapsed().as_secs_f64());
    let end = self::now();

    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            warn!(name = %owner.name, namespace = %owner.namespace, run = %run_id, step = e.step(), reason = e.reason(), error = %e, "run failed");
            RunOutcome {
                reason: e.reason(),
                message: format!("{} failed: {e}", e.step()),
                adds: 0,
                updates: 0,
                deletes: 0,
                conflicts: 0,
                unmanaged: 0,
                failed: 0,
                preview: None,
                managed_users: None,
                applied: false,
                guard_note: None,
                approval: None,
            }
        }
    };
    let record = RunRecord {
        id: run_id.clone(),
        mode: fresh.spec.mode,
        applied: apply,
        start_time: Time(now),
        end_time: Some(Time(end)),
        result: outcome.reason.to_owned(),
        adds: outcome.adds,
        updates: outcome.updates,
        deletes: outcome.deletes,
        conflicts: outcome.conflicts,
        unmanaged: outcome.unmanaged,
        failed: outcome.failed,
        generation: Some(generation),
        trigger: Some(trigger.as_str().to_owned()),
        message: Some(status::cut_message(&outcome.message)),
    };
    let sync_now = sync_now_value(&fresh);
    let new_status = finish(
        ctx, &api, owner, &run_id, &record, &outcome, sync_now, &fresh, end,
    )
    .await?;
    ctx.metrics.run(outcome.reason);
    publish_events(ctx, &fresh, &record, &outcome).await;
    info!(name = %owner.name, namespace = %owner.namespace, run = %run_id, result = outcome.reason, adds = record.adds, updates = record.updates, deletes = record.deletes, failed = record.failed, "run finished");
    Ok(requeue_for(
        new_status.next_run_time.as_ref().map(|t| t.0),
        &new_status,
        end,
        ctx,
    ))
}

/// Writes the run's status: lastRun, history, preview, counts, nextRunTime, conditions, and
/// releases the claim — only while the claim is still ours.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Context,
    api: &Api<DirectorySync>,
    owner: &Owner,
    run_id: &str,
    record: &RunRecord,
    outcome: &RunOutcome,
    sync_now: Option<String>,
    ran: &DirectorySync,
    end: Timestamp,
) -> Result<DirectorySyncStatus> {
    let generation = record.generation;
    let mut last_err = None;
    for _ in 0..5 {
        let latest = api
            .get_status(&owner.name)
            .await
            .map_err(Error::PatchStatus)?;
        let old = latest.status.clone().unwrap_or_default();
        if old.claim.as_ref().map(|c| c.run_id.as_str()) != Some(run_id) {
            warn!(name = %owner.name, run = %run_id, "the claim changed hands before the run's status was written");
            return Ok(old);
        }
        let mut new = old.clone();
        new.claim = None;
        new.observed_generation = generation;
        new.last_run = Some(record.clone());
        new.history.insert(0, record.clone());
        new.history.truncate(HISTORY_LEN);
        if let Some(p) = &outcome.preview {
            new.preview = Some(p.clone());
        }
        if let Some(m) = outcome.managed_users {
            new.managed_users = Some(m);
        }
        if let Some(a) = &outcome.approval {
            new.approval = Some(a.clone()).filter(|a| *a != ApprovalStatus::default());
        }
        if outcome.applied
            && matches!(
                outcome.reason,
                reasons::SYNCED | reasons::PARTIALLY_FAILED | reasons::NO_SOURCE_USERS
            )
        {
            new.applied_generation = generation;
        }
        if let Some(v) = &sync_now {
            new.last_sync_now = Some(v.clone());
        }
        // nextRunTime as the schedule will see it.
        let mut view = ran.clone();
        view.status = Some(new.clone());
        let next = match decide(&view, ctx, &owner.uid, end) {
            Decision::Idle { next } => next,
            // Already due (a slot passed while this run ran): it is next.
            Decision::Run {
                trigger: Trigger::Slot(s),
                ..
            } => Some(s),
            Decision::Run {
                trigger: Trigger::Retry,
                ..
            } => Some(end),
            Decision::Run { .. } => None,
        };
        new.next_run_time = next.map(Time);
        let mut message = outcome.message.clone();
        if let (Some(n), reasons::PREVIEW_READY) = (next, outcome.reason)
            && ran.spec.mode == SyncMode::Periodic
        {
            message = format!("{message} The next run applies at {n}.");
        }
        status::set_health(
            &mut new.conditions,
            outcome.reason,
            &message,
            generation,
            end,
        );
        let patch = json!({
            "metadata": { "resourceVersion": latest.metadata.resource_version },
            "status": status::merge_patch(&old, &new),
        });
        match api
            .patch_status(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                ctx.metrics.write("status");
                return Ok(new);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                last_err = Some(kube::Error::Api(s));
                continue;
            }
            Err(e) => return Err(Error::PatchStatus(e)),
        }
    }
    Err(Error::PatchStatus(last_err.unwrap_or_else(|| {
        kube::Error::LinesCodecMaxLineLengthExceeded
    })))
}

async fn heartbeat(
    api: Api<DirectorySync>,
    name: String,
    run_id: String,
    ttl: Duration,
    lost: Arc<Notify>,
    metrics: Arc<crate::controller::metrics::Metrics>,
) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(every).await;
        let Ok(o) = api.get_status(&name).await else {
            continue;
        };
        let status = o.status.clone().unwrap_or_default();
        match &status.claim {
            Some(c) if c.run_id == run_id => {
                let patch = json!({
                    "metadata": { "resourceVersion": o.metadata.resource_version },
                    "status": { "claim": { "holder": c.holder, "runId": c.run_id, "since": Time(now()) } },
                });
                if api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    metrics.write("status");
                }
            }
            _ => {
                lost.notify_one();
                return;
            }
        }
    }
}

/// Saves the managed set every `checkpoint_every` writes of a long apply.
struct Checkpointer {
    store: Arc<ClusterStore>,
    name: String,
}

#[async_trait]
impl ApplyObserver for Checkpointer {
    async fn checkpoint(&mut self, managed: &ManagedSet) {
        if let Err(e) = self.store.save(managed).await {
            warn!(name = %self.name, error = %e, "managed-set checkpoint failed; continuing");
        }
    }
}

fn same_endpoint(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    norm(a) == norm(b)
}

/// The other resources that write to the same destination: their domains (same tenant) and
/// their managed sets.
async fn other_resources(
    ctx: &Context,
    obj: &DirectorySync,
    owner: &Owner,
) -> Result<OtherResources> {
    let mut others = OtherResources::default();
    let endpoint = &obj.spec.destination.scim.endpoint;
    let tenant = obj.spec.source.entra_id.tenant_id.to_ascii_lowercase();
    for other in ctx.resources() {
        let Some(uid) = other.meta().uid.as_deref() else {
            continue;
        };
        if uid == owner.uid || !same_endpoint(&other.spec.destination.scim.endpoint, endpoint) {
            continue;
        }
        let (Some(ns), Some(name)) = (other.namespace(), other.meta().name.clone()) else {
            continue;
        };
        if other.spec.source.entra_id.tenant_id.to_ascii_lowercase() == tenant {
            others
                .synced_domains
                .push(other.spec.domain.to_ascii_lowercase());
        }
        let set =
            ClusterStore::load_foreign(ctx.client.clone(), &ns, &name, uid, ctx.settings.store_in)
                .await
                .map_err(Error::LoadManagedSet)?;
        others
            .managed_elsewhere
            .extend(set.iter().map(|(imm, _)| imm.to_owned()));
    }
    others.synced_domains.sort();
    others.synced_domains.dedup();
    Ok(others)
}

/// Runs a future that the compiler cannot prove `Send` (the engine's futures hold iterator
/// closures over borrowed data, rust-lang/rust#110338) on a blocking thread of the runtime.
/// Dropping the returned future cancels the work (the inner future is dropped at its next
/// await).
async fn detached<T, F, Fut>(make: F) -> Option<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::runtime::Handle::current();
    let join = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let fut = make();
            tokio::select! {
                v = fut => Some(v),
                _ = cancel_rx => None,
            }
        })
    });
    let _cancel_on_drop = cancel_tx;
    join.await.ok().flatten()
}

fn plan_counts(planned: &PlannedRun) -> (i64, i64, i64, i64, i64) {
    use crate::sync::plan::Action as A;
    let p = &planned.plan;
    let c = |a| i64::try_from(p.count(a)).unwrap_or(i64::MAX);
    (
        c(A::Add),
        c(A::Update),
        c(A::Delete),
        c(A::Conflict),
        c(A::Unmanaged),
    )
}

fn n(x: usize) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// The run itself. Errors end the run with their reason; nothing was applied before an error
/// unless the error is about saving after the apply.
async fn execute(
    obj: &DirectorySync,
    ctx: &Context,
    owner: &Owner,
    apply: bool,
    run_id: &str,
    now: Timestamp,
) -> Result<RunOutcome> {
    let creds = clients::load_credentials(
        &ctx.client,
        &owner.namespace,
        &obj.spec,
        &ctx.metrics.token_requests,
    )
    .await?;
    let ResourceClients { graph, scim } =
        ctx.clients
            .get_or_build(&owner.uid, &obj.spec, creds, &ctx.settings.clients)?;
    let deadline = Some(Instant::now() + ctx.settings.run_deadline);
    let graph = graph.with_deadline(deadline);
    let scim = scim.with_deadline(deadline);
    let cfg = obj.spec.sync_config();
    // One run at a time per destination (held until this run's managed set is saved).
    let lock = ctx.destination_lock(&obj.spec.destination.scim.endpoint);
    let _destination = lock.lock().await;
    let store = ClusterStore::new(ctx.client.clone(), owner.clone(), ctx.settings.store_in);
    let managed = store.load().await.map_err(Error::LoadManagedSet)?;
    let others = other_resources(ctx, obj, owner).await?;

    let (planned, managed) = {
        let (graph, scim, cfg) = (graph.clone(), scim.clone(), cfg.clone());
        detached(move || async move {
            let r = plan_run(&graph, &scim, &cfg, &managed, &others).await;
            (r, managed)
        })
        .await
        .ok_or_else(|| {
            Error::FetchSource(crate::directory::DirectoryError::Unavailable(
                "the run was cancelled".into(),
            ))
        })?
    };
    let planned = planned.map_err(|e| match e {
        RunError::Config(c) => Error::InvalidSpec(c.to_string()),
        RunError::Source(d) => Error::FetchSource(d),
        RunError::Destination(d) => Error::FetchDestination(d),
    })?;
    if planned.no_source_users
        && let Ok(domains) = graph.list_domains().await
        && !domains.iter().any(|d| d.eq_ignore_ascii_case(&cfg.domain))
    {
        return Err(Error::DomainNotFound(cfg.domain.clone()));
    }

    // The preview, always.
    let expires = add(now, ctx.settings.preview_ttl);
    let kind = ctx.settings.store_in;
    let layout = preview::layout(
        owner,
        kind,
        crate::controller::objects::MAX_PART_BYTES,
        &planned,
        !apply,
        run_id,
        now,
        expires,
    )
    .map_err(|e| Error::InvalidSpec(format!("rendering the preview: {e}")))?;
    let objects = Objects::new(ctx.client.clone(), &owner.namespace, kind);
    preview::publish(&objects, owner, &layout).await?;
    let write_verb = kind.as_str().to_ascii_lowercase();
    ctx.metrics.write(&write_verb);
    let preview_status = layout.status.clone();
    drop(layout);

    let (adds, updates, deletes, conflicts, unmanaged) = plan_counts(&planned);
    let base = RunOutcome {
        reason: reasons::PREVIEW_READY,
        message: String::new(),
        adds,
        updates,
        deletes,
        conflicts,
        unmanaged,
        failed: 0,
        preview: Some(preview_status.clone()),
        managed_users: Some(n(managed.len())),
        applied: false,
        guard_note: None,
        approval: None,
    };
    let counts_text = format!(
        "{adds} to add, {updates} to update, {deletes} to delete, {conflicts} conflicts, {unmanaged} unmanaged"
    );
    if planned.no_source_users {
        return Ok(RunOutcome {
            reason: reasons::NO_SOURCE_USERS,
            message: format!(
                "No user of the tenant has a userPrincipalName ending in @{} and none is managed; nothing to do. Check spec.domain.",
                cfg.domain
            ),
            ..base
        });
    }
    if !apply {
        let guard_note = planned.guard.dry_run_message();
        let mut message = format!(
            "Preview ready in {kind} {}: {counts_text}.",
            preview::main_name(&owner.name)
        );
        if let Some(g) = &guard_note {
            message = format!("{message} {g}");
        }
        return Ok(RunOutcome {
            message,
            guard_note,
            ..base
        });
    }

    // The approval gate (docs/behaviour.md §9): a plan that needs approval writes nothing and
    // pins its preview, unless spec.approvedPreview names the pinned one; then only its rows
    // that the fresh plan still has are applied.
    let mut approval_state = obj
        .status
        .as_ref()
        .and_then(|s| s.approval.clone())
        .unwrap_or_default();
    let approved_hash = obj.spec.approved_preview.as_deref();
    approval::forget_refusal(&mut approval_state, approved_hash);
    let mut approved_note = None;
    let mut planned = planned;
    if let Some(need) = approval::approval_need(obj.spec.approval, &planned) {
        let mut wait = match approval::gate(&approval_state, approved_hash, need, now) {
            Gate::Apply => None,
            Gate::Wait { reason } => Some((reason, None)),
        };
        if wait.is_none()
            && let Some(pending) = approval_state.pending.clone()
        {
            match approval::load_pinned(&objects, owner, &pending).await {
                Ok(approved) => {
                    let (selected, selection) = crate::sync::approval::select(planned, &approved);
                    planned = selected;
                    approved_note = Some(approval::applied_note(&pending.sha256, &selection));
                    approval_state.pending = None;
                    approval_state.consumed = Some(pending.sha256.clone());
                    approval_state.consumed_at = Some(Time(now));
                }
                Err(why) => {
                    // Pin afresh: the old pin cannot be trusted.
                    approval_state.pending = None;
                    wait = Some((reasons::PREVIEW_CHANGED, Some(why)));
                }
            }
        }
        if let Some((reason, problem)) = wait {
            if reason == reasons::APPROVAL_EXPIRED {
                approval_state.expired = approved_hash.map(str::to_owned);
            }
            let (pending, wrote) = approval::pin(
                &objects,
                owner,
                &mut approval_state,
                &planned,
                &preview_status.sha256,
                run_id,
                now,
                ctx.settings.preview_ttl,
            )
            .await?;
            if wrote {
                ctx.metrics.write(&write_verb);
                ctx.metrics.approval("requested");
            }
            let mut message = approval::waiting_message(
                reason,
                obj.spec.approval,
                &pending,
                approved_hash,
                planned.guard.message().as_deref(),
                &owner.name,
                &owner.namespace,
            );
            if let Some(p) = problem {
                message = format!("{p}. {message}");
            }
            if reason != reasons::AWAITING_APPROVAL
                && reason != reasons::DELETION_THRESHOLD_EXCEEDED
            {
                ctx.metrics.approval(reason);
            }
            return Ok(RunOutcome {
                reason,
                message,
                applied: true,
                approval: Some(approval_state),
                ..base
            });
        }
    }

    // Apply.
    let opts = ApplyOptions {
        concurrency: ctx.settings.clients.apply_concurrency,
        checkpoint_every: ctx.settings.checkpoint_every,
    };
    let store = Arc::new(store);
    let (outcome, planned) = {
        let mut observer = Checkpointer {
            store: store.clone(),
            name: owner.name.clone(),
        };
        let scim = scim.clone();
        detached(move || async move {
            let outcome = apply_run(&planned, &scim, &opts, &mut observer).await;
            (outcome, planned)
        })
        .await
        .ok_or_else(|| {
            Error::FetchDestination(crate::directory::DirectoryError::Unavailable(
                "the run was cancelled".into(),
            ))
        })?
    };
    ctx.metrics.users("created", outcome.created);
    ctx.metrics.users("updated", outcome.updated);
    ctx.metrics.users("deleted", outcome.deleted);
    ctx.metrics.users("failed", outcome.failures.len());
    let approval_out = if let Some(note) = &approved_note {
        ctx.metrics.approval("applied");
        preview::remove_from(Shelf::Pending, &objects, owner)
            .await
            .map_err(Error::Kube)?;
        ctx.metrics.write("delete");
        info!(name = %owner.name, namespace = %owner.namespace, run = %run_id, "{note}");
        Some(approval_state)
    } else {
        None
    };
    let mut managed_users = base.managed_users;
    if let Some(m) = &outcome.managed {
        store.save(m).await.map_err(Error::SaveManagedSet)?;
        managed_users = Some(n(m.len()));
    }
    let mut report_name = None;
    if report::wanted(&outcome) {
        let obj = report::build(owner, run_id, &planned, &outcome, now, self::now());
        // Never take over an object of that name this resource does not own (with Secrets,
        // it could be anyone's credential).
        match objects
            .check_writable(owner, obj.name())
            .await
            .map_err(Error::WriteReport)?
        {
            WriteCheck::Ok => {
                objects.apply(&obj).await.map_err(Error::WriteReport)?;
                ctx.metrics.write(&write_verb);
                report_name = obj.metadata.name.clone();
            }
            WriteCheck::Foreign => {
                warn!(name = %owner.name, object = %objects.describe(obj.name()), "a same-named object not owned by this DirectorySync exists; the run report was not written");
            }
        }
    }
    let report_text = report_name
        .map(|r| format!(" Run report: {kind} {r}."))
        .unwrap_or_default();
    let failed = n(outcome.failures.len() + outcome.not_attempted);
    let applied_text = format!(
        "{} added, {} updated, {} deleted, {conflicts} conflicts, {unmanaged} unmanaged; {} managed users.",
        outcome.created,
        outcome.updated,
        outcome.deleted,
        managed_users.unwrap_or(0)
    );
    let (reason, message) = match outcome.result {
        RunResult::Success => (
            reasons::SYNCED,
            format!("Synced: {applied_text}{report_text}"),
        ),
        RunResult::PartiallyFailed => {
            let aborted = outcome
                .aborted
                .as_ref()
                .map(|e| format!(" Writes stopped early: {e}."))
                .unwrap_or_default();
            (
                reasons::PARTIALLY_FAILED,
                format!(
                    "{failed} of {} writes failed or were not attempted; {applied_text}{aborted}{report_text}",
                    planned.plan.writes()
                ),
            )
        }
        RunResult::GuardTripped => (
            reasons::DELETION_THRESHOLD_EXCEEDED,
            planned.guard.message().unwrap_or_default(),
        ),
        RunResult::NoSourceUsers => (
            reasons::NO_SOURCE_USERS,
            "No source users and nothing managed.".to_owned(),
        ),
    };
    let message = match &approved_note {
        Some(note) => format!("{note} {message}"),
        None => message,
    };
    Ok(RunOutcome {
        reason,
        message,
        approval: approval_out,
        adds: n(outcome.created),
        updates: n(outcome.updated),
        deletes: n(outcome.deleted),
        failed,
        managed_users,
        applied: true,
        ..base
    })
}

/// One event per run (Warning unless it succeeded), and one per guard verdict that cancels
/// (or, for a dry run, would cancel) the run. Counts only, never user data.
async fn publish_events(
    ctx: &Context,
    obj: &DirectorySync,
    record: &RunRecord,
    outcome: &RunOutcome,
) {
    let reference = obj.object_ref(&());
    let ok = matches!(outcome.reason, reasons::PREVIEW_READY | reasons::SYNCED);
    let action = if record.applied { "Apply" } else { "Preview" };
    let mut events = vec![Event {
        type_: if ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: outcome.reason.to_owned(),
        note: Some(status::cut_message(&outcome.message)),
        action: action.to_owned(),
        secondary: None,
    }];
    if let Some(g) = &outcome.guard_note {
        events.push(Event {
            type_: EventType::Warning,
            reason: reasons::DELETION_THRESHOLD_EXCEEDED.to_owned(),
            note: Some(status::cut_message(&format!(
                "Dry run (nothing was cancelled): {g}"
            ))),
            action: "Preview".to_owned(),
            secondary: None,
        });
    }
    for ev in events {
        match ctx.recorder.publish(&ev, &reference).await {
            Ok(()) => ctx.metrics.write("event"),
            Err(e) => warn!(error = %e, "could not publish an event"),
        }
    }
}

/// Whether a Secret named `secret` is referenced by `obj`.
pub fn references_secret(obj: &DirectorySync, secret: &str) -> bool {
    let src = &obj.spec.source.entra_id;
    let dst = &obj.spec.destination.scim;
    let names: HashSet<&str> = [
        src.client_secret_ref.as_ref().map(|r| r.name.as_str()),
        src.client_certificate_ref.as_ref().map(|r| r.name.as_str()),
        src.ca_bundle_ref.as_ref().map(|r| r.name.as_str()),
        Some(dst.bearer_token_ref.name.as_str()),
        dst.ca_bundle_ref.as_ref().map(|r| r.name.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    names.contains(secret)
}
