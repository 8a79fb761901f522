//! Request counters and a bounded log of recent requests, for the control API.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

const RECENT: usize = 2000;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub method: String,
    /// Path and query as received.
    pub path: String,
    pub endpoint: &'static str,
    /// Delta requests only: `initial`, `nextLink`, `deltaLink` or `latest` (`server::delta_kind`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_kind: Option<&'static str>,
    pub status: u16,
    pub consistency_level: Option<String>,
    pub client_request_id: String,
    pub request_id: String,
    pub fault: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub total: u64,
    pub by_endpoint: BTreeMap<&'static str, u64>,
    /// The `delta` requests of `by_endpoint`, by kind, so that a test can tell a round's
    /// first request from a deltaLink follow-up.
    pub by_delta_kind: BTreeMap<&'static str, u64>,
    pub by_status: BTreeMap<u16, u64>,
    pub faults_injected: u64,
    /// Directory writes (create, update, delete, restore, permanent delete), whether sent
    /// alone or inside `$batch`, by outcome: what a "zero writes" or "throttled writes
    /// completed" check reads.
    pub writes: WriteCounts,
    /// The items of `$batch` requests, by the name their request would have alone
    /// (`userWrite`, `user`, ...); `byEndpoint` counts the envelope as `batch`.
    pub batch_items: BTreeMap<&'static str, u64>,
    #[serde(skip)]
    pub recent: VecDeque<RequestRecord>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteCounts {
    /// Answered 2xx: the change landed.
    pub succeeded: u64,
    /// Refused with 429 by the write limit (`throttle.rs`) or an injected fault.
    pub throttled: u64,
    /// Any other answer (400, 403, 404, ...): nothing changed.
    pub failed: u64,
}

#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Counters>,
}

impl Stats {
    pub fn record(&self, r: RequestRecord) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.total += 1;
        *c.by_endpoint.entry(r.endpoint).or_default() += 1;
        if let Some(k) = r.delta_kind {
            *c.by_delta_kind.entry(k).or_default() += 1;
        }
        *c.by_status.entry(r.status).or_default() += 1;
        if r.fault.is_some() {
            c.faults_injected += 1;
        }
        if c.recent.len() == RECENT {
            c.recent.pop_front();
        }
        c.recent.push_back(r);
    }

    /// One directory write and its status.
    pub fn record_write(&self, status: u16) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match status {
            200..=299 => c.writes.succeeded += 1,
            429 => c.writes.throttled += 1,
            _ => c.writes.failed += 1,
        }
    }

    /// One item of a `$batch` request.
    pub fn record_batch_item(&self, endpoint: &'static str) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *c.batch_items.entry(endpoint).or_default() += 1;
    }

    pub fn snapshot(&self, limit: usize) -> serde_json::Value {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = serde_json::to_value(&*c).unwrap_or_default();
        let skip = c.recent.len().saturating_sub(limit);
        let recent: Vec<&RequestRecord> = c.recent.iter().skip(skip).collect();
        v["recent"] = serde_json::to_value(recent).unwrap_or_default();
        v
    }

    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = Counters::default();
    }
}
