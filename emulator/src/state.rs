//! State shared by every request of one running emulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::faults::Faults;
use crate::federation::Federation;
use crate::stats::Stats;
use crate::tenant::Tenant;
use crate::throttle::{DEFAULT_WRITE_LIMIT, DEFAULT_WRITE_WINDOW_SECS, WriteThrottle};
use crate::time;

#[derive(Debug)]
pub struct AppState {
    /// `https://127.0.0.1:PORT` (no trailing slash): the base of every link the emulator writes.
    pub base_url: String,
    pub tenants: Vec<Arc<Tenant>>,
    pub token_lifetime: AtomicU64,
    pub faults: Faults,
    pub stats: Stats,
    pub federation: Federation,
    /// `deltaReplay`: change rounds serve their first user twice and hand out deltaLinks that
    /// replay the round's changes once (Graph does both; see `graph/delta.rs`).
    pub delta_replay: AtomicBool,
    /// `clockOffset`: seconds added to the wall clock wherever the emulator reads "now"
    /// (tokens, delta token age, `Date`), so tests can age delta links without waiting.
    pub clock_offset: AtomicI64,
    /// Graph's identity write limit per app and tenant (`writeLimit`, `writeWindowSeconds`).
    pub throttle: WriteThrottle,
    /// `rejectFederatedPassword`: refuse `passwordProfile` on users of federated domains.
    /// Whether Graph does is unverified (shared/reference/graph-writes.md §2, [V]); off by
    /// default, as a community guide creates federated users without trouble.
    pub reject_federated_password: AtomicBool,
    epoch: AtomicU64,
}

impl AppState {
    pub fn new(
        base_url: String,
        tenants: Vec<Arc<Tenant>>,
        token_lifetime: u64,
        federation: Federation,
        epoch: u64,
    ) -> AppState {
        AppState {
            base_url,
            tenants,
            token_lifetime: AtomicU64::new(token_lifetime),
            faults: Faults::default(),
            stats: Stats::default(),
            federation,
            delta_replay: AtomicBool::new(false),
            clock_offset: AtomicI64::new(0),
            throttle: WriteThrottle::new(DEFAULT_WRITE_LIMIT, DEFAULT_WRITE_WINDOW_SECS),
            reject_federated_password: AtomicBool::new(false),
            epoch: AtomicU64::new(epoch),
        }
    }

    /// A tenant by id or by one of its domain names.
    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.iter().find(|t| t.answers_to(name)).cloned()
    }

    /// The tenant a control request names with `?tenant=`, or the first one.
    pub fn tenant_or_first(&self, name: Option<&str>) -> Option<Arc<Tenant>> {
        match name {
            Some(n) => self.tenant(n),
            None => self.tenants.first().cloned(),
        }
    }

    pub fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn token_lifetime(&self) -> u64 {
        self.token_lifetime.load(Ordering::Relaxed)
    }

    pub fn delta_replay(&self) -> bool {
        self.delta_replay.load(Ordering::Relaxed)
    }

    pub fn clock_offset(&self) -> i64 {
        self.clock_offset.load(Ordering::Relaxed)
    }

    /// The emulator's "now": the wall clock shifted by `clockOffset` (every request's `Ctx::now`).
    pub fn now(&self) -> i64 {
        time::now_secs().saturating_add(self.clock_offset())
    }

    /// The same clock in milliseconds (the write throttle refills by it).
    pub fn now_millis(&self) -> i64 {
        time::now_millis().saturating_add(self.clock_offset().saturating_mul(1000))
    }

    pub fn reject_federated_password(&self) -> bool {
        self.reject_federated_password.load(Ordering::Relaxed)
    }
}
