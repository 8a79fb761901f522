//! One run, as a short pipeline (docs/ARCHITECTURE.md): claim it ([`claim`]) → credentials and
//! clients → managed set → plan → preview → approval gate → apply → managed set, run report →
//! status and events ([`outcome`]). Errors end the run with their reason; nothing is applied
//! before an error unless the error is about saving after the apply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::controller::approval::{self, Gated};
use crate::controller::claim::{self, Claim, ClaimedRun};
use crate::controller::clients::{self, ResourceClients};
use crate::controller::error::{Error, Result};
use crate::controller::objects::{MAX_PART_BYTES, Objects, Owner, WriteCheck};
use crate::controller::outcome::{self, RunOutcome, count};
use crate::controller::preview::{self, Shelf};
use crate::controller::schedule::Trigger;
use crate::controller::status::Reason;
use crate::controller::store::ManagedSetObjects;
use crate::controller::timing::{add, requeue_for, sync_now_value};
use crate::controller::{Context, report};
use crate::crd::{DirectorySync, PreviewStatus};
use crate::directory::Directory;
use crate::sync::engine::{ApplyObserver, ApplyOptions, OtherResources, RunError};
use crate::sync::incremental::{
    self, AppliedRun, DeltaState, FullReason, KindRequest, KindedRun, plan_of_kind,
};
use crate::sync::managed::{ManagedSet, ManagedStore};
use crate::sync::summary::Counts;
use crate::sync::{PlannedRun, apply_run};

/// Claims the run, runs it while keeping the claim, and writes its status and events.
pub async fn claim_and_run(
    obj: &DirectorySync,
    ctx: &Context,
    owner: &Owner,
    apply: bool,
    trigger: Trigger,
    now: Timestamp,
) -> Result<Action> {
    let api: Api<DirectorySync> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let run = match claim::claim_run(&api, obj, ctx, owner, trigger, apply, now).await? {
        Claim::Claimed(run) => run,
        Claim::NotNow(action) => return Ok(action),
    };
    let ClaimedRun {
        fresh,
        apply,
        trigger,
        run_id,
        generation,
    } = &*run;
    info!(name = %owner.name, namespace = %owner.namespace, run = %run_id, apply, trigger = trigger.as_str(), "run started");

    // Losing the claim aborts the run without a status write.
    let lost = Arc::new(Notify::new());
    let heartbeat = tokio::spawn(claim::keep_claim_fresh(
        api.clone(),
        owner.name.clone(),
        run_id.clone(),
        ctx.settings.claim_ttl,
        lost.clone(),
        ctx.metrics.clone(),
    ));
    let run_started = Instant::now();
    let result = tokio::select! {
        r = sync_resource(fresh, ctx, owner, *apply, trigger, run_id, now) => Some(r),
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
    let end = crate::controller::timing::now();
    let outcome = result.unwrap_or_else(|e| {
        warn!(name = %owner.name, namespace = %owner.namespace, run = %run_id, step = e.step(), reason = %e.reason(), error = %e, "run failed");
        RunOutcome::failed(&e)
    });
    let record = outcome.record(
        run_id,
        fresh.spec.mode,
        *apply,
        now,
        end,
        *generation,
        trigger,
    );
    let new_status = claim::write_run_status(
        ctx,
        &api,
        owner,
        run_id,
        &record,
        &outcome,
        sync_now_value(fresh).as_deref(),
        fresh,
        end,
    )
    .await?;
    ctx.metrics.run(outcome.reason, outcome.kind);
    outcome::publish_events(ctx, fresh, &record, &outcome).await;
    info!(name = %owner.name, namespace = %owner.namespace, run = %run_id, result = %outcome.reason, kind = outcome.kind.map_or("None", |k| k.as_str()), adds = record.adds, updates = record.updates, deletes = record.deletes, failed = record.failed, "run finished");
    Ok(requeue_for(
        new_status.next_run_time.as_ref().map(|t| t.0),
        &new_status,
        end,
        ctx,
    ))
}

/// The run itself: plan, preview, gate, apply.
#[allow(clippy::too_many_arguments)]
async fn sync_resource(
    obj: &DirectorySync,
    ctx: &Context,
    owner: &Owner,
    apply: bool,
    trigger: &Trigger,
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
    let clients = ctx
        .clients
        .get_or_build(&owner.uid, &obj.spec, creds, &ctx.settings.clients)?;
    let deadline = Some(Instant::now() + ctx.settings.run_deadline);
    let clients = clients.with_deadline(deadline);
    // One run at a time per destination (held until this run's managed set is saved): the SCIM
    // endpoint, or the Entra tenant when users are written into Entra ID.
    let destination =
        clients::destination_key(&obj.spec).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let lock = ctx.destination_lock(&destination);
    let _destination = lock.lock().await;
    let store = Arc::new(ManagedSetObjects::new(
        ctx.client.clone(),
        owner.clone(),
        ctx.settings.store_in,
    ));
    let managed = store.load().await.map_err(Error::LoadManagedSet)?;
    let others = other_resources(ctx, obj, owner, &destination).await?;
    let kept = store.delta();
    let kinded = plan(
        obj,
        &clients,
        &managed,
        &others,
        kept.as_ref(),
        apply,
        trigger,
        now,
    )
    .await?;
    let counts = Counts::of(&kinded.planned.plan, kinded.planned.skipped);
    let objects = Objects::new(ctx.client.clone(), &owner.namespace, ctx.settings.store_in);
    if kinded.planned.kind.is_incremental() && !kinded.read_changes {
        // Nothing changed in the source: no preview, no write, no event (docs/behaviour.md §7).
        return Ok(RunOutcome {
            reason: Reason::Synced,
            message: outcome::idle_message(managed.len()),
            applied: true,
            quiet: true,
            ..RunOutcome::planned(
                &counts,
                kinded.planned.kind,
                None,
                Some(count(managed.len())),
            )
        });
    }
    let KindedRun {
        planned,
        new_link,
        read_changes,
        link_error,
        fingerprint,
    } = kinded;
    if let Some(e) = link_error {
        warn!(name = %owner.name, namespace = %owner.namespace, run = %run_id, error = %e, "could not take a Graph delta link; this run goes on in full, and so will the next");
    }

    // The preview, always (an incremental run's holds the rows it planned).
    let preview_status =
        publish_preview(ctx, owner, &objects, &planned, apply, run_id, now).await?;
    let base = RunOutcome::planned(
        &counts,
        planned.kind,
        Some(preview_status.clone()),
        Some(count(managed.len())),
    );
    if planned.no_source_users {
        return Ok(RunOutcome {
            reason: Reason::NoSourceUsers,
            message: outcome::no_source_users_message(&planned.config.domain),
            ..base
        });
    }
    if !apply {
        let guard_note = planned.guard.dry_run_message();
        return Ok(RunOutcome {
            message: outcome::preview_message(
                objects.kind(),
                &preview::main_name(&owner.name),
                &counts,
                guard_note.as_deref(),
            ),
            guard_note,
            ..base
        });
    }

    let gated = approval::pass_gate(
        ctx,
        obj,
        owner,
        &objects,
        planned,
        &preview_status.sha256,
        run_id,
        now,
    )
    .await?;
    let (planned, approved) = match gated {
        Gated::Apply { planned, approved } => (*planned, approved),
        Gated::Wait {
            reason,
            message,
            state,
        } => {
            return Ok(RunOutcome {
                reason,
                message,
                applied: true,
                approval: Some(state),
                ..base
            });
        }
    };
    let delta = DeltaAfter {
        fingerprint,
        new_link,
        read_changes,
        started_at: now.as_second(),
    };
    apply_and_report(
        ctx,
        owner,
        &objects,
        &store,
        clients.destination(),
        planned,
        approved,
        base,
        run_id,
        now,
        delta,
    )
    .await
}

/// What the delta state needs from a run once its apply finished.
struct DeltaAfter {
    /// The run's fingerprint, kept with the new link.
    fingerprint: String,
    new_link: Option<String>,
    read_changes: bool,
    started_at: i64,
}

/// Plans the run that is due, full or incremental (docs/behaviour.md §7); a source without
/// users is `DomainNotFound` when the tenant lacks the domain (whichever side the tenant is:
/// its users are read from the domain, or written into it).
#[allow(clippy::too_many_arguments)]
async fn plan(
    obj: &DirectorySync,
    clients: &ResourceClients,
    managed: &ManagedSet,
    others: &OtherResources,
    kept: Option<&DeltaState>,
    apply: bool,
    trigger: &Trigger,
    now: Timestamp,
) -> Result<KindedRun> {
    let cfg = obj
        .spec
        .sync_config()
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let forced = full_run_reason(obj, apply, trigger);
    let run = plan_of_kind(
        clients.source(),
        clients.destination(),
        &cfg,
        managed,
        others,
        KindRequest {
            state: kept,
            now: now.as_second(),
            full_sync_interval_secs: obj.spec.full_sync_interval_secs(),
            forced,
            take_link: apply,
            context: &obj.spec.delta_context(),
        },
    )
    .await
    .map_err(|e| match e {
        RunError::Config(c) => Error::InvalidSpec(c.to_string()),
        RunError::Source(d) => Error::FetchSource(d),
        RunError::Destination(d) => Error::FetchDestination(d),
    })?;
    if run.planned.no_source_users && clients.graph.lacks_domain(&cfg.domain).await {
        return Err(Error::DomainNotFound(cfg.domain.clone()));
    }
    Ok(run)
}

/// Why the operator makes this run full whatever the kept link says: previews are whole, and a
/// spec change or an approval compares whole plans.
fn full_run_reason(obj: &DirectorySync, apply: bool, trigger: &Trigger) -> Option<FullReason> {
    if !apply {
        return Some(FullReason::DryRun);
    }
    match trigger {
        Trigger::SyncNow(_) => Some(FullReason::SyncNow),
        Trigger::SpecChange => Some(FullReason::SpecChanged),
        _ if obj.spec.approval != crate::sync::ApprovalPolicy::Never => Some(FullReason::Approval),
        _ => None,
    }
}

/// Writes the plan's preview (`<name>-preview`).
async fn publish_preview(
    ctx: &Context,
    owner: &Owner,
    objects: &Objects,
    planned: &PlannedRun,
    apply: bool,
    run_id: &str,
    now: Timestamp,
) -> Result<PreviewStatus> {
    let layout = preview::layout(
        owner,
        objects.kind(),
        MAX_PART_BYTES,
        planned,
        !apply,
        run_id,
        now,
        add(now, ctx.settings.preview_ttl),
    )
    .map_err(|e| Error::InvalidSpec(format!("rendering the preview: {e}")))?;
    preview::publish(objects, owner, &layout).await?;
    ctx.metrics.write(&objects.write_verb());
    Ok(layout.status)
}

/// Applies `planned`, saves the managed set, writes a run report when something changed or
/// failed, and says how it went. `approved`: the approval that selected the rows (its pin is
/// removed once applied).
#[allow(clippy::too_many_arguments)]
async fn apply_and_report(
    ctx: &Context,
    owner: &Owner,
    objects: &Objects,
    store: &Arc<ManagedSetObjects>,
    destination: &dyn Directory,
    planned: PlannedRun,
    approved: Option<(String, crate::crd::ApprovalStatus)>,
    base: RunOutcome,
    run_id: &str,
    now: Timestamp,
    delta: DeltaAfter,
) -> Result<RunOutcome> {
    let opts = ApplyOptions {
        concurrency: ctx.settings.clients.apply_concurrency,
        checkpoint_every: ctx.settings.checkpoint_every,
    };
    let mut observer = Checkpointer {
        store: store.clone(),
        name: owner.name.clone(),
        run_id: run_id.to_owned(),
        api: Api::namespaced(ctx.client.clone(), &owner.namespace),
        done: 0,
        total: 0,
    };
    let partial_plan = approved.is_some();
    let applied = apply_run(&planned, destination, &opts, &mut observer).await;
    ctx.metrics.users("created", applied.created);
    ctx.metrics.users("restored", applied.restored);
    ctx.metrics.users("updated", applied.updated);
    ctx.metrics.users("deleted", applied.deleted);
    ctx.metrics.users("failed", applied.failures.len());
    let (approved_note, approval) = match approved {
        Some((note, state)) => {
            ctx.metrics.approval("applied");
            preview::remove_from(Shelf::Pending, objects, owner)
                .await
                .map_err(Error::Kube)?;
            ctx.metrics.write("delete");
            info!(name = %owner.name, namespace = %owner.namespace, run = %run_id, "{note}");
            (Some(note), Some(state))
        }
        None => (None, None),
    };
    let mut managed_users = base.managed_users;
    // The new link is kept only now that the apply finished, with the set it belongs to.
    if let Some(next) = incremental::after_apply(
        store.delta().as_ref(),
        &AppliedRun {
            kind: planned.kind,
            new_link: delta.new_link.as_deref(),
            started_at: delta.started_at,
            fingerprint: &delta.fingerprint,
            result: applied.result,
            met_changed_destination: applied.met_changed_destination,
            read_changes: delta.read_changes,
            retry: &planned.plan.retry_source_ids,
            partial_plan,
        },
    ) {
        store.set_delta(Some(next));
    }
    if let Some(m) = &applied.managed {
        store.save(m).await.map_err(Error::SaveManagedSet)?;
        managed_users = Some(count(m.len()));
    }
    let mut report_name = None;
    if report::wanted(&applied) {
        let obj = report::build(
            owner,
            run_id,
            &planned,
            &applied,
            now,
            crate::controller::timing::now(),
        );
        // Never take over an object of that name this resource does not own (with Secrets,
        // it could be anyone's credential).
        match objects
            .check_writable(owner, obj.name())
            .await
            .map_err(Error::WriteReport)?
        {
            WriteCheck::Ok => {
                objects.apply(&obj).await.map_err(Error::WriteReport)?;
                ctx.metrics.write(&objects.write_verb());
                report_name = obj.metadata.name.clone();
            }
            WriteCheck::Foreign => {
                warn!(name = %owner.name, object = %objects.describe(obj.name()), "a same-named object not owned by this DirectorySync exists; the run report was not written");
            }
        }
    }
    let (reason, message) = outcome::applied_reason_and_message(
        &applied,
        planned.plan.writes(),
        &Counts::of(&planned.plan, planned.skipped),
        managed_users.unwrap_or(0),
        report_name.as_deref().map(|r| (objects.kind(), r)),
        planned.guard.message(),
    );
    let message = match &approved_note {
        Some(note) => format!("{note} {message}"),
        None => message,
    };
    let message = format!("{message} ({} run)", planned.kind.describe());
    Ok(RunOutcome {
        reason,
        message,
        approval,
        // A restore adds the user back: counted with the adds in status.
        adds: count(applied.created + applied.restored),
        updates: count(applied.updated),
        deletes: count(applied.deleted),
        failed: count(applied.failures.len() + applied.not_attempted),
        managed_users,
        applied: true,
        ..base
    })
}

/// Saves the managed set every `checkpoint_every` writes of a long apply, and shows how far the
/// apply has come in `status.claim.progress`.
struct Checkpointer {
    store: Arc<ManagedSetObjects>,
    name: String,
    run_id: String,
    api: Api<DirectorySync>,
    done: usize,
    total: usize,
}

#[async_trait]
impl ApplyObserver for Checkpointer {
    fn progress(&mut self, done: usize, total: usize) {
        (self.done, self.total) = (done, total);
    }

    async fn checkpoint(&mut self, managed: &ManagedSet) {
        if let Err(e) = self.store.save(managed).await {
            warn!(name = %self.name, error = %e, "managed-set checkpoint failed; continuing");
        }
        // Only while the claim is still this run's, and only if nobody wrote status since the
        // read (resourceVersion): a merge patch of the claim's one field, which the claim
        // heartbeat (claim.rs) keeps.
        let Ok(o) = self.api.get_status(&self.name).await else {
            return;
        };
        if o.status
            .as_ref()
            .and_then(|s| s.claim.as_ref())
            .is_none_or(|c| c.run_id != self.run_id)
        {
            return;
        }
        let progress = format!("applied {} of {} changes", self.done, self.total);
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": o.metadata.resource_version },
            "status": { "claim": { "progress": progress } },
        });
        if let Err(e) = self
            .api
            .patch_status(
                &self.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            warn!(name = %self.name, error = %e, "could not show the apply's progress; continuing");
        }
    }
}

/// The other resources that write to `destination` ([`clients::destination_key`]): their
/// domains (those that also read this resource's source) and their managed sets.
async fn other_resources(
    ctx: &Context,
    obj: &DirectorySync,
    owner: &Owner,
    destination: &str,
) -> Result<OtherResources> {
    let mut others = OtherResources::default();
    let source = clients::source_key(&obj.spec).ok();
    for other in ctx.resources() {
        let Some(uid) = other.meta().uid.as_deref() else {
            continue;
        };
        if uid == owner.uid
            || clients::destination_key(&other.spec).ok().as_deref() != Some(destination)
        {
            continue;
        }
        let (Some(ns), Some(name)) = (other.namespace(), other.meta().name.clone()) else {
            continue;
        };
        if source.is_some() && clients::source_key(&other.spec).ok() == source {
            others
                .synced_domains
                .push(other.spec.domain.to_ascii_lowercase());
        }
        let set = ManagedSetObjects::load_foreign(
            ctx.client.clone(),
            &ns,
            &name,
            uid,
            ctx.settings.store_in,
        )
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
