//! State shared by every request of one running emulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::faults::Faults;
use crate::federation::Federation;
use crate::stats::Stats;
use crate::tenant::Tenant;

#[derive(Debug)]
pub struct AppState {
    /// `https://127.0.0.1:PORT` (no trailing slash): the base of every link the emulator writes.
    pub base_url: String,
    pub tenants: Vec<Arc<Tenant>>,
    pub token_lifetime: AtomicU64,
    pub faults: Faults,
    pub stats: Stats,
    pub federation: Federation,
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
}
