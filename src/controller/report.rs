//! Run reports (docs/behaviour.md §4): for applied runs that changed or failed something, ConfigMap
//! `<name>-report-<run>` owned by the resource, with `report.json` (counts, every failed user
//! and its reason, creates re-planned after a 409) and `applied.csv.gz` (the plan's write rows
//! in the preview's CSV format: what was done to whom). Kept for `--report-retention`.
//! A Secret instead with `--store-in=secrets`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::controller::objects::{MAX_PART_BYTES, Objects, OwnedObject, Owner};
use crate::sync::engine::ApplyOutcome;
use crate::sync::{PlannedRun, gzip};

pub const ROLE: &str = "report";
pub const REPORT_KEY: &str = "report.json";
pub const APPLIED_KEY: &str = "applied.csv.gz";
pub const CREATED_ANNOTATION: &str = "dirsync.io/created-at";

pub fn name(resource: &str, run_id: &str) -> String {
    format!("{resource}-report-{run_id}")
}

/// Whether a run deserves a report: it was applied and changed or failed something.
pub fn wanted(outcome: &ApplyOutcome) -> bool {
    outcome.created + outcome.restored + outcome.updated + outcome.deleted > 0
        || !outcome.failures.is_empty()
        || !outcome.replanned.is_empty()
        || outcome.not_attempted > 0
}

/// Builds the report object (pure).
pub fn build(
    owner: &Owner,
    run_id: &str,
    planned: &PlannedRun,
    outcome: &ApplyOutcome,
    started: Timestamp,
    now: Timestamp,
) -> OwnedObject {
    let mut failures: Vec<serde_json::Value> = outcome
        .failures
        .iter()
        .map(|f| json!({"userName": f.user_name, "action": f.action, "reason": f.reason}))
        .collect();
    let mut truncated = false;
    // Keep report.json well inside one object.
    let mut budget = 400 * 1024usize;
    failures.retain(|f| {
        let n = f.to_string().len();
        if n <= budget {
            budget -= n;
            true
        } else {
            truncated = true;
            false
        }
    });
    let report = json!({
        "runId": run_id,
        "domain": planned.config.domain,
        "startTime": started.to_string(),
        "endTime": now.to_string(),
        "result": outcome.result.reason(),
        "kind": planned.kind.as_str(),
        "fullReason": planned.kind.full_reason().map(|r| r.as_str()),
        "created": outcome.created,
        "restored": outcome.restored,
        "updated": outcome.updated,
        "deleted": outcome.deleted,
        "failed": outcome.failures.len(),
        "notAttempted": outcome.not_attempted,
        "aborted": outcome.aborted.as_ref().map(|e| e.to_string()),
        "failures": failures,
        "failuresTruncated": truncated,
        "replanned": outcome.replanned,
        "note": "Users created by a sync have no password: an administrator must set an initial password.",
        "appliedCsv": "applied.csv.gz lists the planned writes (Add, Update, Delete rows in the preview format); the users under `failures` were not changed.",
    });
    let mut data = BTreeMap::from([(
        REPORT_KEY.to_owned(),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )]);
    let mut binary = BTreeMap::new();
    let mut csv = Vec::new();
    let rows = planned.plan.items.iter().filter(|i| i.is_write());
    if crate::sync::csv::write_rows(rows, &mut csv).is_ok() {
        let gz = gzip::gzip(&csv, gzip::Level::Default);
        if gz.len() <= MAX_PART_BYTES {
            binary.insert(APPLIED_KEY.to_owned(), gz);
        } else {
            data.insert(
                "applied.txt".into(),
                format!("The applied rows ({} bytes compressed) do not fit in one object; see the preview of run {run_id}.\r\n", gz.len()),
            );
        }
    }
    let ann = BTreeMap::from([
        (CREATED_ANNOTATION.to_owned(), now.to_string()),
        ("dirsync.io/run-id".to_owned(), run_id.to_owned()),
    ]);
    OwnedObject {
        metadata: owner.meta(&name(&owner.name, run_id), ROLE, ann),
        text: data,
        binary,
    }
}

/// Deletes this resource's reports of `objects`' kind older than `retention`. Returns how many
/// were removed.
pub async fn expire(
    objects: &Objects,
    owner: &Owner,
    retention: Duration,
    now: Timestamp,
) -> Result<usize, kube::Error> {
    let cutoff = SignedDuration::try_from(retention)
        .ok()
        .and_then(|d| now.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN);
    let mut removed = 0;
    for (name, meta) in objects.list_names(owner, ROLE).await? {
        let created = meta.creation_timestamp.as_ref().map(|t| t.0);
        if created.is_some_and(|c| c < cutoff) && objects.delete_owned(owner, &name).await? {
            removed += 1;
        }
    }
    Ok(removed)
}
