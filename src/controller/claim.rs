//! The claim protocol (docs/behaviour.md §5): a run is claimed in status under a
//! `resourceVersion` precondition, so two replicas never apply the same run; the holder keeps
//! the claim fresh while it runs ([`keep_claim_fresh`]) and writes the run's status — releasing
//! the claim in the same write — only while the claim is still its own
//! ([`write_run_status`]). What the status becomes is pure ([`status_after_run`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::controller::Context;
use crate::controller::error::{Error, Result};
use crate::controller::metrics::Metrics;
use crate::controller::objects::Owner;
use crate::controller::outcome::RunOutcome;
use crate::controller::schedule::{Decision, Trigger};
use crate::controller::status::{self, Reason, reasons};
use crate::controller::timing::{decide, new_run_id, now};
use crate::crd::{
    ApprovalStatus, DirectorySync, DirectorySyncStatus, RunClaim, RunRecord, SyncMode,
};

/// Runs kept in `status.history`.
pub const HISTORY_LEN: usize = 10;

/// A run this replica holds.
pub struct ClaimedRun {
    /// The resource as read just before the claim.
    pub fresh: DirectorySync,
    pub apply: bool,
    pub trigger: Trigger,
    pub run_id: String,
    pub generation: i64,
}

/// What an attempt to claim gave.
pub enum Claim {
    /// Boxed: it carries the whole resource.
    Claimed(Box<ClaimedRun>),
    /// Nothing to run after all, or another replica holds it: look again as the action says.
    NotNow(Action),
}

/// Decides again on the freshest copy of the resource and claims the run in its status.
pub async fn claim_run(
    api: &Api<DirectorySync>,
    obj: &DirectorySync,
    ctx: &Context,
    owner: &Owner,
    trigger: Trigger,
    apply: bool,
    now: Timestamp,
) -> Result<Claim> {
    // The cache may lag behind our own last write, or another replica may just have run.
    let fresh = api.get_status(&owner.name).await.map_err(Error::Kube)?;
    if fresh.meta().uid.as_deref() != Some(owner.uid.as_str()) {
        return Ok(Claim::NotNow(Action::await_change()));
    }
    let newest_run = |d: &DirectorySync| {
        d.status
            .as_ref()
            .and_then(|s| s.history.first())
            .map(|r| r.id.clone())
    };
    let (apply, trigger) = match decide(&fresh, ctx, &owner.uid, now) {
        Decision::Run { apply, trigger } => (apply, trigger),
        // A retry asked for by a Secret change, still against the same failed run.
        Decision::Idle { .. }
            if trigger == Trigger::Retry && newest_run(&fresh) == newest_run(obj) =>
        {
            (apply, trigger)
        }
        Decision::Idle { .. } => {
            return Ok(Claim::NotNow(Action::requeue(Duration::from_millis(500))));
        }
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
            return Ok(Claim::NotNow(Action::requeue(
                ctx.settings.claim_ttl - age + Duration::from_secs(1),
            )));
        }
        warn!(name = %owner.name, holder = %c.holder, run = %c.run_id, "taking over a stale run claim");
    }

    let run_id = new_run_id(now);
    let claimed = claimed_status(&fresh_status, me, &run_id, apply, &trigger, generation, now);
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
            return Ok(Claim::NotNow(Action::requeue(Duration::from_millis(500))));
        }
        Err(e) => return Err(Error::ClaimRun(e)),
    }
    Ok(Claim::Claimed(Box::new(ClaimedRun {
        fresh,
        apply,
        trigger,
        run_id,
        generation,
    })))
}

/// The status that claims run `run_id` for `holder`, with `Reconciling=True`.
pub fn claimed_status(
    old: &DirectorySyncStatus,
    holder: &str,
    run_id: &str,
    apply: bool,
    trigger: &Trigger,
    generation: i64,
    now: Timestamp,
) -> DirectorySyncStatus {
    let mut claimed = old.clone();
    claimed.claim = Some(RunClaim {
        holder: holder.to_owned(),
        run_id: run_id.to_owned(),
        since: Time(now),
        progress: None,
    });
    let what = if apply { "apply" } else { "preview" };
    status::set_condition(
        &mut claimed.conditions,
        status::types::RECONCILING,
        true,
        reasons::RUNNING,
        &format!(
            "Run {run_id} ({what}, trigger {}) is in progress",
            trigger.as_str()
        ),
        Some(generation),
        now,
    );
    claimed
}

/// Renews the claim every third of `ttl` while the run lasts; notifies `lost` (and stops) when
/// the claim is no longer this run's.
pub async fn keep_claim_fresh(
    api: Api<DirectorySync>,
    name: String,
    run_id: String,
    ttl: Duration,
    lost: Arc<Notify>,
    metrics: Arc<Metrics>,
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

/// What a finished run leaves in status (pure), but for `nextRunTime` and the conditions
/// ([`set_next_and_health`]): the claim released, `lastRun`, history, preview, counts, approval.
pub fn status_after_run(
    old: &DirectorySyncStatus,
    record: &RunRecord,
    outcome: &RunOutcome,
    sync_now: Option<&str>,
) -> DirectorySyncStatus {
    let mut new = old.clone();
    new.claim = None;
    new.observed_generation = record.generation;
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
            Reason::Synced | Reason::PartiallyFailed | Reason::NoSourceUsers
        )
    {
        new.applied_generation = record.generation;
    }
    if let Some(v) = sync_now {
        new.last_sync_now = Some(v.to_owned());
    }
    new
}

/// Sets `nextRunTime` and the conditions from the run's outcome.
pub fn set_next_and_health(
    new: &mut DirectorySyncStatus,
    outcome: &RunOutcome,
    next: Option<Timestamp>,
    mode: SyncMode,
    end: Timestamp,
) {
    new.next_run_time = next.map(Time);
    let mut message = outcome.message.clone();
    if let (Some(n), Reason::PreviewReady) = (next, outcome.reason)
        && mode == SyncMode::Periodic
    {
        message = format!("{message} The next run applies at {n}.");
    }
    let generation = new.observed_generation;
    status::set_health(
        &mut new.conditions,
        outcome.reason.as_str(),
        &message,
        generation,
        end,
    );
}

/// The next run as the schedule sees the resource `view` at `end`.
fn next_run(view: &DirectorySync, ctx: &Context, uid: &str, end: Timestamp) -> Option<Timestamp> {
    match decide(view, ctx, uid, end) {
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
    }
}

/// Writes the run's status and releases the claim — only while the claim is still `run_id`'s
/// (retried on a conflicting write).
#[allow(clippy::too_many_arguments)]
pub async fn write_run_status(
    ctx: &Context,
    api: &Api<DirectorySync>,
    owner: &Owner,
    run_id: &str,
    record: &RunRecord,
    outcome: &RunOutcome,
    sync_now: Option<&str>,
    ran: &DirectorySync,
    end: Timestamp,
) -> Result<DirectorySyncStatus> {
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
        let mut new = status_after_run(&old, record, outcome, sync_now);
        let mut view = ran.clone();
        view.status = Some(new.clone());
        let next = next_run(&view, ctx, &owner.uid, end);
        set_next_and_health(&mut new, outcome, next, ran.spec.mode, end);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn outcome(reason: Reason, applied: bool) -> RunOutcome {
        let mut o = RunOutcome::planned(
            &Default::default(),
            crate::sync::RunKind::Full(crate::sync::FullReason::NoDeltaLink),
            None,
            Some(4),
        );
        o.reason = reason;
        o.applied = applied;
        o.message = "done".into();
        o
    }

    #[test]
    fn a_claim_names_its_holder_and_says_the_run_is_in_progress() {
        let s = claimed_status(
            &DirectorySyncStatus::default(),
            "op-a",
            "r1",
            true,
            &Trigger::SpecChange,
            2,
            t(5),
        );
        let c = s.claim.clone().unwrap_or_else(|| panic!("no claim"));
        assert_eq!((c.holder.as_str(), c.run_id.as_str()), ("op-a", "r1"));
        let r = &s.conditions[0];
        assert_eq!(
            (r.type_.as_str(), r.status.as_str(), r.reason.as_str()),
            ("Reconciling", "True", "Running")
        );
        assert_eq!(
            r.message,
            "Run r1 (apply, trigger SpecChange) is in progress"
        );
    }

    #[test]
    fn a_finished_run_releases_the_claim_and_keeps_ten_runs() {
        let mut old = claimed_status(
            &DirectorySyncStatus::default(),
            "op-a",
            "r1",
            true,
            &Trigger::SpecChange,
            2,
            t(5),
        );
        old.approval = Some(ApprovalStatus {
            consumed: Some("sha256:x".into()),
            ..Default::default()
        });
        let o = outcome(Reason::Synced, true);
        let mut last = old.clone();
        for i in 0..12 {
            let record = o.record(
                &format!("r{i}"),
                SyncMode::Once,
                true,
                t(i),
                t(i + 1),
                2,
                &Trigger::SpecChange,
            );
            last = status_after_run(&last, &record, &o, Some("now-1"));
        }
        assert_eq!(last.claim, None);
        assert_eq!(last.history.len(), HISTORY_LEN);
        assert_eq!(last.history[0].id, "r11");
        assert_eq!(last.applied_generation, Some(2));
        assert_eq!(last.managed_users, Some(4));
        assert_eq!(last.last_sync_now.as_deref(), Some("now-1"));
        assert_eq!(
            last.approval, old.approval,
            "untouched when the run did not change it"
        );

        // A waiting run does not count as applying its generation; an emptied approval
        // status is removed.
        let mut waiting = outcome(Reason::AwaitingApproval, true);
        waiting.approval = Some(ApprovalStatus::default());
        let record = waiting.record(
            "w",
            SyncMode::Once,
            true,
            t(1),
            t(2),
            3,
            &Trigger::SpecChange,
        );
        let s = status_after_run(&old, &record, &waiting, None);
        assert_eq!(s.applied_generation, None);
        assert_eq!(s.approval, None);
    }

    #[test]
    fn a_periodic_preview_says_when_it_applies() {
        let mut s = DirectorySyncStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        let mut o = outcome(Reason::PreviewReady, false);
        o.message = "Preview ready.".into();
        set_next_and_health(&mut s, &o, Some(t(3600)), SyncMode::Periodic, t(10));
        assert_eq!(s.next_run_time, Some(Time(t(3600))));
        assert_eq!(
            s.conditions[0].message,
            "Preview ready. The next run applies at 1970-01-01T01:00:00Z."
        );
        set_next_and_health(&mut s, &o, Some(t(3600)), SyncMode::DryRun, t(10));
        assert_eq!(s.conditions[0].message, "Preview ready.");
    }
}

/// The claim protocol against a mocked API server (kube's `tower-test` pattern): the requests
/// it sends, in order, and what it does with 409s and foreign claims. The real control plane
/// tests (tests/operator/ha.rs) stay; these run in milliseconds.
#[cfg(test)]
mod api_tests {
    use std::pin::pin;

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock::{self, Handle};

    use super::*;
    use crate::controller::Settings;
    use crate::controller::outcome::RunOutcome;

    const PATH: &str =
        "/apis/dirsync.io/v1alpha1/namespaces/identity/directorysyncs/example-com/status";

    fn resource(status: Value, resource_version: &str) -> Value {
        json!({
            "apiVersion": "dirsync.io/v1alpha1", "kind": "DirectorySync",
            "metadata": {"name": "example-com", "namespace": "identity", "uid": "uid-1",
                         "generation": 1, "resourceVersion": resource_version},
            "spec": {"domain": "example.com", "upnMode": "Enabled", "maxAllowedDeletions": 10,
                     "mode": "Once",
                     "source": {"entraID": {"tenantID": "7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d",
                        "clientID": "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c",
                        "clientSecretRef": {"name": "a", "key": "b"}}},
                     "destination": {"scim": {"endpoint": "https://scim.example.net/v2",
                        "bearerTokenRef": {"name": "c", "key": "d"}}}},
            "status": status,
        })
    }

    fn typed(v: &Value) -> DirectorySync {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn context(client: kube::Client) -> Context {
        let settings = Settings {
            identity: "op-a".into(),
            ..Settings::default()
        };
        Context::new(client, settings, Arc::new(Metrics::new()))
    }

    fn reply(status: StatusCode, body: &Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn conflict() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
               "message": "the object has been modified", "code": 409})
    }

    /// The next request: its method, path and JSON body (Null when it has none).
    async fn next(
        handle: &mut std::pin::Pin<&mut Handle<Request<Body>, Response<Body>>>,
    ) -> (
        Method,
        String,
        Value,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        let (request, send) = handle.next_request().await.expect("a request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.method, parts.uri.path().to_owned(), json, send)
    }

    /// No further request arrives (the client side is done or dropped).
    async fn assert_silent(
        handle: &mut std::pin::Pin<&mut Handle<Request<Body>, Response<Body>>>,
        what: &str,
    ) {
        let more = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
        assert!(more.is_err() || more.is_ok_and(|r| r.is_none()), "{what}");
    }

    fn now_t() -> Timestamp {
        Timestamp::from_second(1_780_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[tokio::test]
    async fn a_claim_is_one_patch_under_the_resource_version_read_just_before() {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(kube::Client::new(service, "identity"));
        let obj = resource(Value::Null, "41");
        let server = tokio::spawn(async move {
            let mut handle = pin!(handle);
            let (m, path, _, send) = next(&mut handle).await;
            assert_eq!((m, path.as_str()), (Method::GET, PATH));
            send.send_response(reply(StatusCode::OK, &resource(json!({}), "42")));
            let (m, path, body, send) = next(&mut handle).await;
            assert_eq!((m, path.as_str()), (Method::PATCH, PATH));
            assert_eq!(body["metadata"]["resourceVersion"], "42", "{body}");
            assert_eq!(body["status"]["claim"]["holder"], "op-a");
            assert_eq!(body["status"]["conditions"][0]["reason"], "Running");
            let claimed = resource(body["status"].clone(), "43");
            send.send_response(reply(StatusCode::OK, &claimed));
            body["status"]["claim"]["runId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        });
        let api: Api<DirectorySync> = Api::namespaced(ctx.client.clone(), "identity");
        let d = typed(&obj);
        let owner = Owner::of(&d).unwrap_or_else(|e| panic!("{e}"));
        let claim = claim_run(&api, &d, &ctx, &owner, Trigger::SpecChange, true, now_t())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let run_id = server.await.unwrap_or_default();
        match claim {
            Claim::Claimed(run) => {
                assert_eq!(run.run_id, run_id);
                assert!(run.apply, "Once applies on a new generation");
            }
            Claim::NotNow(a) => panic!("not claimed: {a:?}"),
        }
    }

    #[tokio::test]
    async fn a_lost_race_and_a_fresh_foreign_claim_write_nothing_more() {
        // 409 on the claim: requeue, no error.
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(kube::Client::new(service, "identity"));
        let server = tokio::spawn(async move {
            let mut handle = pin!(handle);
            let (_, _, _, send) = next(&mut handle).await;
            send.send_response(reply(StatusCode::OK, &resource(json!({}), "42")));
            let (m, _, _, send) = next(&mut handle).await;
            assert_eq!(m, Method::PATCH);
            send.send_response(reply(StatusCode::CONFLICT, &conflict()));
        });
        let api: Api<DirectorySync> = Api::namespaced(ctx.client.clone(), "identity");
        let d = typed(&resource(Value::Null, "41"));
        let owner = Owner::of(&d).unwrap_or_else(|e| panic!("{e}"));
        let r = claim_run(&api, &d, &ctx, &owner, Trigger::SpecChange, true, now_t()).await;
        assert!(matches!(r, Ok(Claim::NotNow(_))));
        server.await.unwrap_or_else(|e| panic!("{e}"));

        // Another replica's claim, 10 s old (TTL 60 s): wait, no PATCH at all.
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(kube::Client::new(service, "identity"));
        let since =
            Time(Timestamp::from_second(1_780_000_000 - 10).unwrap_or(Timestamp::UNIX_EPOCH));
        let held = json!({"claim": {"holder": "op-b", "runId": "r0", "since": since}});
        let server = tokio::spawn(async move {
            let mut handle = pin!(handle);
            let (m, _, _, send) = next(&mut handle).await;
            assert_eq!(m, Method::GET);
            send.send_response(reply(StatusCode::OK, &resource(held, "42")));
            // The claimant must not send anything else.
            assert_silent(&mut handle, "a request after a foreign claim").await;
        });
        let api: Api<DirectorySync> = Api::namespaced(ctx.client.clone(), "identity");
        let r = claim_run(&api, &d, &ctx, &owner, Trigger::SpecChange, true, now_t()).await;
        match r {
            Ok(Claim::NotNow(a)) => assert_eq!(a, Action::requeue(Duration::from_secs(51))),
            _ => panic!("expected to wait for the other replica"),
        }
        drop(api);
        drop(ctx);
        server.await.unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn the_run_status_is_written_only_while_the_claim_is_ours_and_retried_on_conflict() {
        let ours = json!({"claim": {"holder": "op-a", "runId": "r1", "since": Time(now_t())}});
        let theirs = json!({"claim": {"holder": "op-b", "runId": "r9", "since": Time(now_t())}});
        let d = typed(&resource(ours.clone(), "42"));
        let owner = Owner::of(&d).unwrap_or_else(|e| panic!("{e}"));
        let mut outcome = RunOutcome::planned(
            &Default::default(),
            crate::sync::RunKind::Full(crate::sync::FullReason::NoDeltaLink),
            None,
            Some(3),
        );
        outcome.reason = Reason::Synced;
        outcome.applied = true;
        let record = outcome.record(
            "r1",
            SyncMode::Once,
            true,
            now_t(),
            now_t(),
            1,
            &Trigger::SpecChange,
        );

        // Conflict once, then written: GET, PATCH (409), GET, PATCH (200), each under the
        // version just read, releasing the claim.
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(kube::Client::new(service, "identity"));
        let (o1, o2) = (ours.clone(), ours.clone());
        let server = tokio::spawn(async move {
            let mut handle = pin!(handle);
            let mut versions = Vec::new();
            for (rv, status, code) in [("50", o1, StatusCode::CONFLICT), ("51", o2, StatusCode::OK)]
            {
                let (m, _, _, send) = next(&mut handle).await;
                assert_eq!(m, Method::GET);
                send.send_response(reply(StatusCode::OK, &resource(status, rv)));
                let (m, _, body, send) = next(&mut handle).await;
                assert_eq!(m, Method::PATCH);
                versions.push(body["metadata"]["resourceVersion"].clone());
                assert_eq!(
                    body["status"]["claim"],
                    Value::Null,
                    "the claim is released: {body}"
                );
                assert_eq!(body["status"]["lastRun"]["result"], "Synced");
                let answer = if code == StatusCode::OK {
                    resource(body["status"].clone(), "52")
                } else {
                    conflict()
                };
                send.send_response(reply(code, &answer));
            }
            versions
        });
        let api: Api<DirectorySync> = Api::namespaced(ctx.client.clone(), "identity");
        let new = write_run_status(
            &ctx,
            &api,
            &owner,
            "r1",
            &record,
            &outcome,
            None,
            &d,
            now_t(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(new.claim, None);
        assert_eq!(new.managed_users, Some(3));
        assert_eq!(server.await.unwrap_or_default(), [json!("50"), json!("51")]);

        // The claim changed hands: nothing is written.
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(kube::Client::new(service, "identity"));
        let server = tokio::spawn(async move {
            let mut handle = pin!(handle);
            let (m, _, _, send) = next(&mut handle).await;
            assert_eq!(m, Method::GET);
            send.send_response(reply(StatusCode::OK, &resource(theirs, "60")));
            assert_silent(&mut handle, "a write after losing the claim").await;
        });
        let api: Api<DirectorySync> = Api::namespaced(ctx.client.clone(), "identity");
        let kept = write_run_status(
            &ctx,
            &api,
            &owner,
            "r1",
            &record,
            &outcome,
            None,
            &d,
            now_t(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kept.claim.map(|c| c.holder).as_deref(), Some("op-b"));
        drop(api);
        drop(ctx);
        server.await.unwrap_or_else(|e| panic!("{e}"));
    }
}
