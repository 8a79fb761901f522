//! The reconcile entry point and its error policy: decide (pure, [`schedule`]), then either
//! tidy an idle resource ([`housekeeping`]) or claim and run ([`run`]). A reconcile with nothing
//! due writes nothing.
//!
//! [`schedule`]: crate::controller::schedule
//! [`housekeeping`]: crate::controller::housekeeping
//! [`run`]: crate::controller::run

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::warn;

use crate::controller::Context;
use crate::controller::error::{Error, Result};
use crate::controller::housekeeping::tidy_idle;
use crate::controller::objects::Owner;
use crate::controller::run::claim_and_run;
use crate::controller::schedule::{self, Decision, Trigger};
use crate::controller::timing::{decide, now};
use crate::crd::{DirectorySync, SyncMode};

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
    warn!(name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), step = err.step(), reason = %err.reason(), error = %err, "reconcile failed");
    match err {
        Error::MissingObjectKey(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
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
        Decision::Idle { next } => tidy_idle(obj, ctx, &owner, next, now).await,
        Decision::Run { apply, trigger } => {
            claim_and_run(obj, ctx, &owner, apply, trigger, now).await
        }
    }
}
