//! The `DirectorySync` operator (docs/behaviour.md §3–§5): a kube-runtime controller around the sync
//! engine, behind a leader Lease, with metrics and health endpoints.
//!
//! - [`reconcile`]: the entry point and error policy: idle ([`housekeeping`]) or a run ([`run`]);
//! - [`run`]: one run as a pipeline (claim → credentials → plan → preview → approval gate →
//!   apply → status → events), with [`claim`] (the claim/finish protocol), [`approval`] (the
//!   gate) and [`outcome`] (reason, message, record, events; pure);
//! - [`schedule`], [`timing`] (pure, and its inputs): when a resource runs and whether it may
//!   write; [`status`] (pure): conditions and status patches;
//! - [`clients`]: Secrets, the endpoint allowlist and the per-resource Graph/SCIM clients;
//! - [`preview`], [`store`], [`report`], [`objects`]: the ConfigMaps (or Secrets) the
//!   operator owns;
//! - [`leader`]: leader election on a Lease; [`metrics`], [`admin`]: observability.

pub mod admin;
pub mod approval;
pub mod claim;
pub mod clients;
pub mod endpoint_policy;
pub mod error;
pub mod housekeeping;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod outcome;
pub mod preview;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod schedule;
pub mod status;
pub mod store;
pub mod timing;
pub mod workload_identity;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::controller::clients::{ClientCache, ClientSettings};
use crate::controller::metrics::Metrics;
use crate::controller::schedule::Backoff;
use crate::crd::DirectorySync;

pub use error::{Error, Result};

/// Name of the controller in events and logs.
pub const CONTROLLER_NAME: &str = "dirsync-operator";

/// Everything the reconciler is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This replica's identity (claims, Lease, events).
    pub identity: String,
    /// Lower bound of `spec.interval`.
    pub min_interval: Duration,
    /// How long a preview is kept.
    pub preview_ttl: Duration,
    /// How long run reports are kept.
    pub report_retention: Duration,
    /// A run claim not renewed for this long is stale and may be taken over.
    pub claim_ttl: Duration,
    /// Retry delays after a failed run.
    pub backoff: Backoff,
    /// The deadline of one run's outbound calls.
    pub run_deadline: Duration,
    /// Save the managed set every this many writes during an apply.
    pub checkpoint_every: usize,
    pub clients: ClientSettings,
    /// Reconciles in flight at once.
    pub concurrency: u16,
    /// The kind of the objects it writes: previews, run reports, managed sets.
    pub store_in: objects::StoreKind,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            identity: CONTROLLER_NAME.to_owned(),
            min_interval: Duration::from_secs(300),
            preview_ttl: Duration::from_secs(24 * 3600),
            report_retention: Duration::from_secs(720 * 3600),
            claim_ttl: Duration::from_secs(60),
            backoff: Backoff::default(),
            run_deadline: Duration::from_secs(3600),
            checkpoint_every: 500,
            clients: ClientSettings::default(),
            concurrency: 4,
            store_in: objects::StoreKind::ConfigMap,
        }
    }
}

/// Shared state of the reconciler.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub clients: ClientCache,
    stores: RwLock<Vec<Store<DirectorySync>>>,
    report_sweeps: Mutex<HashMap<String, Instant>>,
    secret_changes: Mutex<HashMap<String, Timestamp>>,
    destinations: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_NAME.to_owned(),
                instance: Some(settings.identity.clone()),
            },
        );
        Self {
            client,
            settings,
            recorder,
            metrics,
            clients: ClientCache::default(),
            stores: RwLock::new(Vec::new()),
            report_sweeps: Mutex::new(HashMap::new()),
            secret_changes: Mutex::new(HashMap::new()),
            destinations: Mutex::new(HashMap::new()),
        }
    }

    /// Every DirectorySync the controller sees.
    pub fn resources(&self) -> Vec<Arc<DirectorySync>> {
        self.stores
            .read()
            .map(|s| s.iter().flat_map(|st| st.state()).collect())
            .unwrap_or_default()
    }

    /// Sets the approval gauges from the resources as the controller sees them.
    pub fn refresh_approval_gauges(&self) {
        let since: Vec<i64> = self
            .resources()
            .iter()
            .filter_map(|d| d.status.as_ref()?.approval.as_ref()?.pending.as_ref())
            .map(|p| p.since.0.as_second())
            .collect();
        self.metrics
            .approvals_pending
            .set(i64::try_from(since.len()).unwrap_or(i64::MAX));
        self.metrics
            .approval_oldest_pending
            .set(since.into_iter().min().unwrap_or(0));
    }

    fn note_secret_change(&self, uid: &str, at: Timestamp) {
        if let Ok(mut s) = self.secret_changes.lock() {
            let e = s.entry(uid.to_owned()).or_insert(at);
            *e = (*e).max(at);
        }
    }

    /// A lock per destination ([`clients::destination_key`]: a SCIM service, or an Entra
    /// tenant written into): resources that write to the same one run one at a time, so a
    /// hand-over reads the other resource's managed set as it stands.
    pub fn destination_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.destinations.lock() {
            Ok(mut m) => m.entry(key.to_owned()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// When a Secret this resource references last changed, if one did since the last call.
    pub fn take_secret_change(&self, uid: &str) -> Option<Timestamp> {
        self.secret_changes
            .lock()
            .ok()
            .and_then(|mut s| s.remove(uid))
    }
}

/// When a Secret was last written: its creation or the newest managed-fields entry.
fn last_modified(secret: &Secret) -> Option<Timestamp> {
    let created = secret.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let updated = secret
        .metadata
        .managed_fields
        .as_ref()
        .and_then(|m| m.iter().filter_map(|f| f.time.as_ref().map(|t| t.0)).max());
    created.max(updated)
}

/// Which namespaces to watch.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    /// Every namespace the client can see.
    #[default]
    All,
    Namespaces(Vec<String>),
}

/// Runs the controller(s) until `shutdown` turns true; in-flight reconciles finish first
/// (so no status is half written).
pub async fn run_controller(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: watch::Receiver<bool>,
    ready: Arc<AtomicBool>,
) {
    let client = ctx.client.clone();
    let targets: Vec<Option<String>> = match &scope {
        Scope::All => vec![None],
        Scope::Namespaces(ns) => ns.iter().cloned().map(Some).collect(),
    };
    let mut runs = Vec::new();
    let mut stores = Vec::new();
    for ns in targets {
        let (dsyncs, cms, secrets): (Api<DirectorySync>, Api<ConfigMap>, Api<Secret>) = match &ns {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
        let controller = Controller::new(dsyncs, watcher::Config::default().any_semantic());
        // Owned objects of the configured kind only: with Secrets, the operator needs no
        // watch on ConfigMaps (it then only cleans up those an earlier setting left).
        let owned = watcher::Config::default().labels(&format!(
            "app.kubernetes.io/managed-by={}",
            objects::MANAGED_BY
        ));
        let controller = match ctx.settings.store_in {
            objects::StoreKind::ConfigMap => controller.owns(cms, owned),
            objects::StoreKind::Secret => controller.owns(secrets.clone(), owned),
        };
        let store = controller.store();
        stores.push(store.clone());
        let unsynced = store.clone();
        let mapper_ctx = ctx.clone();
        let mut stop = shutdown.clone();
        let run = controller
            .watches(secrets, watcher::Config::default(), move |secret: Secret| {
                let ns = secret.namespace();
                let name = secret.name_any();
                let changed = last_modified(&secret);
                let hits: Vec<ObjectRef<DirectorySync>> = store
                    .state()
                    .into_iter()
                    .filter(|d| d.namespace() == ns && clients::references_secret(d, &name))
                    .map(|d| {
                        if let (Some(uid), Some(at)) = (d.metadata.uid.as_deref(), changed) {
                            mapper_ctx.note_secret_change(uid, at);
                        }
                        ObjectRef::from_obj(&*d)
                    })
                    .collect();
                hits
            })
            .with_config(controller::Config::default().concurrency(ctx.settings.concurrency).debounce(Duration::from_millis(200)))
            .graceful_shutdown_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .for_each(|res| async move {
                match res {
                    Ok((obj, _)) => tracing::debug!(name = %obj.name, namespace = obj.namespace.as_deref().unwrap_or_default(), "reconciled"),
                    Err(controller::Error::ReconcilerFailed(e, obj)) => {
                        warn!(name = %obj.name, reason = %e.reason(), error = %e, "reconcile failed")
                    }
                    Err(e) => warn!(error = %e, "controller error"),
                }
            });
        // kube-runtime's Runner holds its (empty) queue until the store is ready, and a
        // graceful shutdown drops the watches that would make it ready: a SIGTERM before this
        // namespace's first lists finished would never end. Nothing of this controller can be
        // in flight then, so its shutdown ends at once; a ready one drains as usual.
        let mut stop_unsynced = shutdown.clone();
        let run = async move {
            tokio::select! {
                _ = run => {}
                _ = async {
                    let _ = stop_unsynced.wait_for(|s| *s).await;
                    if unsynced.wait_until_ready().now_or_never().is_some() {
                        futures::future::pending::<()>().await;
                    }
                    info!("shutdown before the watches synced: nothing in flight");
                } => {}
            }
        };
        runs.push(run);
    }
    if let Ok(mut s) = ctx.stores.write() {
        *s = stores.clone();
    }
    let readiness = async {
        for s in &stores {
            let _ = s.wait_until_ready().await;
        }
        ready.store(true, Ordering::Relaxed);
        info!("watches synced; controller ready");
    };
    let controllers = futures::future::join_all(runs);
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => {}
        _ = async { readiness.await; futures::future::pending::<()>().await } => {}
    }
    if !*shutdown.borrow() {
        error!("controller stopped unexpectedly");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    /// Runs the controller on `namespaces` against a mocked API server that answers the lists
    /// of namespace `answered` (empty) and leaves every other request, watches included,
    /// unanswered; sends shutdown after 300 ms. Whether it ended within 5 s, and whether it
    /// ever said it was ready.
    async fn shut_down_while(namespaces: &[&str], answered: &str) -> (bool, bool) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let prefix = format!("/namespaces/{answered}/");
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let uri = request.uri().to_string();
                if uri.contains(&prefix) && !uri.contains("watch=true") {
                    let body = br#"{"metadata":{"resourceVersion":"1"},"items":[]}"#;
                    respond.send_response(
                        Response::builder()
                            .status(200)
                            .body(Body::from(body.to_vec()))
                            .unwrap_or_else(|e| panic!("{e}")),
                    );
                } else {
                    held.push(respond);
                }
            }
        });
        let client = Client::new(service, "default");
        let ctx = Arc::new(Context::new(
            client,
            Settings::default(),
            Arc::new(Metrics::new()),
        ));
        let (tx, rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let scope = Scope::Namespaces(namespaces.iter().map(|n| (*n).to_owned()).collect());
        let run = tokio::spawn(run_controller(ctx, scope, rx, ready.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!run.is_finished(), "the controller runs until shutdown");
        tx.send(true).unwrap_or_else(|e| panic!("{e}"));
        let ended = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .is_ok();
        server.abort();
        (ended, ready.load(Ordering::Relaxed))
    }

    /// A SIGTERM that arrives while the first lists are still outstanding ends the controller
    /// (kube-runtime alone would wait for stores that can no longer become ready).
    #[tokio::test]
    async fn a_shutdown_before_the_watches_synced_ends_the_controller() {
        let (ended, ready) = shut_down_while(&["identity"], "none").await;
        assert!(ended, "the controller did not end after shutdown");
        assert!(!ready, "never synced, never ready");
    }

    /// One namespace synced, another not: both controllers end (the synced one drains, the
    /// other has nothing in flight).
    #[tokio::test]
    async fn a_shutdown_with_one_namespace_unsynced_ends_every_controller() {
        // The answered namespace alone syncs (ready), and drains and ends on shutdown.
        let (ended, ready) = shut_down_while(&["synced"], "synced").await;
        assert!(ended && ready, "ended {ended}, ready {ready}");
        let (ended, ready) = shut_down_while(&["synced", "stuck"], "synced").await;
        assert!(ended, "the controllers did not end after shutdown");
        assert!(!ready, "one namespace never synced");
    }
}
