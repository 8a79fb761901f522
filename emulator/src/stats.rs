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
    #[serde(skip)]
    pub recent: VecDeque<RequestRecord>,
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
