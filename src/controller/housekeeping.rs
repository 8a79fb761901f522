//! What a reconcile with nothing due does: keep `nextRunTime` right, remove an expired preview,
//! an expired pending preview and old run reports — and write only if that changed something.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::{info, warn};

use crate::controller::approval;
use crate::controller::error::{Error, Result};
use crate::controller::objects::{Objects, Owner};
use crate::controller::preview::{self, Shelf};
use crate::controller::status::{self, reasons};
use crate::controller::timing::requeue_for;
use crate::controller::{Context, report};
use crate::crd::DirectorySync;

/// Nothing due: keep `nextRunTime` right, remove an expired preview, an expired pending preview
/// and old reports, and write only if that changed something.
pub async fn tidy_idle(
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
