//! The admin HTTP endpoints: `/metrics` (Prometheus text format) on `--metrics-addr`, and
//! `/healthz` and `/readyz` on `--health-addr` (one server when both are the same address).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::controller::metrics::Metrics;

/// What the endpoints report.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Set once the process is serving its role: a follower waiting for the Lease, or the
    /// leader whose watches have synced.
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds the listeners now (so a bad address fails at start) and returns the serving future.
pub async fn bind(
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
    state: AdminState,
) -> std::io::Result<(Vec<SocketAddr>, impl Future<Output = ()>)> {
    let health = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let metrics_router = Router::new().route("/metrics", get(metrics));
    let mut routers = Vec::new();
    if metrics_addr == health_addr {
        routers.push((metrics_addr, health.merge(metrics_router).with_state(state)));
    } else {
        routers.push((metrics_addr, metrics_router.with_state(state.clone())));
        routers.push((health_addr, health.with_state(state)));
    }
    let mut bound = Vec::new();
    let mut servers = Vec::new();
    for (addr, router) in routers {
        let listener = TcpListener::bind(addr).await?;
        bound.push(listener.local_addr()?);
        servers.push(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "admin server stopped");
            }
        });
    }
    Ok((bound, async move {
        futures::future::join_all(servers).await;
    }))
}
