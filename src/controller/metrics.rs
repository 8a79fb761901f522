//! Prometheus metrics (text format, `dirsync_` prefix). Labels carry results and reasons,
//! never user data.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// A run's result and kind (`Full`, `Incremental`, or `None` for a run that failed before it
/// planned).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub result: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

pub struct Metrics {
    registry: Registry,
    /// Runs by result reason (PreviewReady, Synced, DeletionThresholdExceeded, ...) and kind.
    pub runs: Family<RunLabels, Counter>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub run_duration: Histogram,
    /// Writes to the Kubernetes API by verb (status, configmap, delete), to spot spins.
    pub kube_writes: Family<VerbLabels, Counter>,
    pub leader: Gauge,
    pub users_written: Family<ResultLabels, Counter>,
    /// Workload identity TokenRequests made to the API server.
    pub token_requests: Counter,
    /// Approvals by what became of them: requested (a preview pinned), applied, and the refused
    /// ApprovalConsumed, ApprovalExpired, PreviewChanged; expired (a pin removed unapproved).
    pub approvals: Family<ResultLabels, Counter>,
    /// Resources whose pinned preview waits for approval.
    pub approvals_pending: Gauge,
    /// When the longest-waiting pinned preview was pinned (Unix seconds; 0 when none waits).
    pub approval_oldest_pending: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dirsync");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register("runs", "Runs by result and kind", runs.clone());
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile calls", reconciles.clone());
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 4.0, 10));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let run_duration = Histogram::new(exponential_buckets(0.05, 4.0, 10));
        registry.register(
            "run_duration_seconds",
            "Time from a run's claim to its status",
            run_duration.clone(),
        );
        let kube_writes = Family::<VerbLabels, Counter>::default();
        registry.register(
            "kube_writes",
            "Writes to the Kubernetes API by kind",
            kube_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let users_written = Family::<ResultLabels, Counter>::default();
        registry.register(
            "user_writes",
            "Destination user writes by outcome (created, restored, updated, deleted, failed)",
            users_written.clone(),
        );
        let token_requests = Counter::default();
        registry.register(
            "token_requests",
            "Workload identity TokenRequests made to the Kubernetes API server",
            token_requests.clone(),
        );
        let approvals = Family::<ResultLabels, Counter>::default();
        registry.register(
            "approvals",
            "Approvals by outcome (requested, applied, ApprovalConsumed, ApprovalExpired, PreviewChanged, expired)",
            approvals.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "approvals_pending",
            "DirectorySyncs whose pinned preview waits for approval",
            approvals_pending.clone(),
        );
        let approval_oldest_pending = Gauge::default();
        registry.register(
            "approval_oldest_pending_timestamp_seconds",
            "When the longest-waiting pinned preview was pinned (Unix time; 0 when none waits)",
            approval_oldest_pending.clone(),
        );
        Self {
            registry,
            approvals,
            approvals_pending,
            approval_oldest_pending,
            runs,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            run_duration,
            kube_writes,
            leader,
            users_written,
            token_requests,
        }
    }

    pub fn run(&self, result: crate::sync::Reason, kind: Option<crate::sync::RunKind>) {
        self.runs
            .get_or_create(&RunLabels {
                result: result.as_str().to_owned(),
                kind: kind.map_or("None", |k| k.as_str()).to_owned(),
            })
            .inc();
    }

    pub fn approval(&self, result: &str) {
        self.approvals
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn error(&self, reason: crate::sync::Reason) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    pub fn write(&self, verb: &str) {
        self.kube_writes
            .get_or_create(&VerbLabels {
                verb: verb.to_owned(),
            })
            .inc();
    }

    pub fn users(&self, result: &str, n: usize) {
        self.users_written
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
