//! Leader election on a Lease with `kube-lease-manager` in manual mode (see
//! `kube-testenv.md` §9): only the holder runs the controller; failing to renew, or losing,
//! the Lease is fatal (the controller stops and the process exits, so Kubernetes restarts it).
//! The per-run claim in status covers the overlap while a deposed leader finishes.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tracing::{info, warn};

/// Which Lease, and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// Lease duration, seconds.
    pub duration: u64,
    /// Renew this long before expiry, seconds.
    pub grace: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("setting up the Lease {name:?} in namespace {namespace:?}: {source}")]
    Setup {
        name: String,
        namespace: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("renewing the Lease: {0}")]
    Renew(#[source] kube_lease_manager::LeaseManagerError),
    #[error("the Lease was lost to another replica")]
    Lost,
}

/// Builds the manager and waits until we hold the Lease. `Ok(None)` when `shutdown` turned
/// true first.
pub async fn acquire(
    client: Client,
    cfg: &LeaseConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<LeaseManager>, LeaderError> {
    let lm = LeaseManagerBuilder::new(client, cfg.name.clone())
        .with_namespace(cfg.namespace.clone())
        .with_identity(cfg.identity.clone())
        .with_duration(cfg.duration)
        .with_grace(cfg.grace)
        .build()
        .await
        .map_err(|source| LeaderError::Setup {
            name: cfg.name.clone(),
            namespace: cfg.namespace.clone(),
            source,
        })?;
    info!(lease = %cfg.name, namespace = %cfg.namespace, identity = %cfg.identity, "waiting for the leader Lease");
    loop {
        tokio::select! {
            r = lm.changed() => match r {
                Ok(true) => {
                    info!(identity = %cfg.identity, "acquired the leader Lease");
                    return Ok(Some(lm));
                }
                Ok(false) => continue,
                Err(e) => {
                    warn!(error = %e, "Lease error while waiting; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return Ok(None),
        }
    }
}

/// Keeps the Lease renewed; returns when it is lost or cannot be renewed.
pub async fn hold(lm: &LeaseManager) -> LeaderError {
    loop {
        match lm.changed().await {
            Ok(true) => continue,
            Ok(false) => return LeaderError::Lost,
            Err(e) => return LeaderError::Renew(e),
        }
    }
}
