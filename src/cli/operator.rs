//! `dirsync operator`: runs the controller (docs/behaviour.md §5).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, ValueEnum};
use kube::Client;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::controller::clients::{ClientSettings, EndpointPolicy};
use crate::controller::leader::{self, LeaseConfig};
use crate::controller::metrics::Metrics;
use crate::controller::objects::StoreKind;
use crate::controller::schedule::Backoff;
use crate::controller::{Context, Scope, Settings, admin, run_controller};
use crate::directory::ListingLimits;
use crate::duration::parse_duration;

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// Values of `--store-in`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreIn {
    /// ConfigMaps (docs/behaviour.md §4's layout).
    Configmaps,
    /// Secrets, for clusters where the `view` role must not read the directory.
    Secrets,
}

impl StoreIn {
    pub fn kind(self) -> StoreKind {
        match self {
            StoreIn::Configmaps => StoreKind::ConfigMap,
            StoreIn::Secrets => StoreKind::Secret,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Plain,
}

/// Flags of `dirsync operator`.
#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Watch only these namespaces (comma-separated or repeated). Default: every namespace
    /// the operator's credentials can see.
    #[arg(long, value_delimiter = ',', env = "DIRSYNC_NAMESPACES")]
    pub namespaces: Vec<String>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of /healthz and /readyz (may equal --metrics-addr).
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// How long a preview is kept before the operator removes it.
    #[arg(long, default_value = "24h", value_parser = duration)]
    pub preview_ttl: Duration,
    /// Lower bound of spec.interval for Periodic resources.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub min_interval: Duration,
    /// How long run reports are kept.
    #[arg(long, default_value = "720h", value_parser = duration)]
    pub report_retention: Duration,
    /// First retry delay after a run failed for a transient reason (doubles per failure).
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "15m", value_parser = duration)]
    pub retry_max: Duration,
    /// Deadline of one run's calls to Entra ID and the SCIM service.
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub run_deadline: Duration,
    /// A run claim not renewed for this long may be taken over by another replica.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub claim_ttl: Duration,
    /// Save the managed set every this many writes during an apply.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Resources reconciled at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u16,
    /// The most writes in flight at once per destination; fewer are sent while its latency
    /// shows them queueing there (adaptive concurrency).
    #[arg(long, default_value_t = 8)]
    pub apply_concurrency: usize,
    /// The most users one directory listing may hold before the read is refused as runaway.
    #[arg(long, default_value_t = ListingLimits::DEFAULT_MAX_USERS)]
    pub max_listing_users: u64,
    /// The most response bytes one directory listing may read before it is refused as runaway.
    #[arg(long, default_value_t = ListingLimits::DEFAULT_MAX_BYTES)]
    pub max_listing_bytes: u64,
    /// Attempts per outbound HTTP request (1–6).
    #[arg(long, default_value_t = 6)]
    pub http_max_attempts: u32,
    /// First retry delay of an outbound HTTP request.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub http_retry_base: Duration,
    /// Connect timeout of outbound HTTP requests.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Run leader election on a Lease (turn off only for a single replica).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "dirsync-leader")]
    pub lease_name: String,
    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// Renew the Lease this many seconds before it expires.
    #[arg(long, default_value_t = 5)]
    pub lease_grace: u64,
    /// This replica's identity (default: $POD_NAME, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Extra allowed authority hosts (host or host:port; a bare host allows any port),
    /// beyond Microsoft's clouds. Comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub allowed_authority_hosts: Vec<String>,
    /// Extra allowed Graph hosts (host or host:port), beyond Microsoft's clouds.
    #[arg(long, value_delimiter = ',')]
    pub allowed_graph_hosts: Vec<String>,
    /// CIDR ranges the SCIM endpoint may never connect to (on top of the link-local and
    /// metadata ranges, which are always denied).
    #[arg(long, value_delimiter = ',')]
    pub denied_cidrs: Vec<String>,
    /// Loopback or private ranges (127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16,
    /// 100.64.0.0/10, ::1, fc00::/7, ...) the SCIM endpoint may connect to.
    #[arg(long, value_delimiter = ',')]
    pub allowed_private_cidrs: Vec<String>,
    /// Where previews, run reports and managed sets are kept (they hold user names and
    /// addresses): ConfigMaps, or Secrets where the `view` role must not read the directory.
    /// Changing it loses nothing: the managed set is moved at the next run, the other kind's
    /// preview is removed when a new one is written, and its reports expire as usual.
    #[arg(long, value_enum, default_value = "configmaps")]
    pub store_in: StoreIn,
    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_lease_manager=warn"));
    // Colour only on a terminal: a log file or a pod's log must not hold ANSI escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Plain => builder.try_init(),
    };
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "dirsync".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    let _ = tx.send(true);
}

/// Runs the operator until SIGTERM (exit 0) or a fatal error (exit 1).
pub async fn run(args: OperatorArgs) -> ExitCode {
    init_logging(args.log_format);
    crate::clients::outbound::init_crypto();
    let policy = match EndpointPolicy::from_flags(
        &args.allowed_authority_hosts,
        &args.allowed_graph_hosts,
        &args.denied_cidrs,
        &args.allowed_private_cidrs,
    ) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            error!(error = %e, "invalid endpoint policy flag");
            return ExitCode::from(super::exit::USAGE);
        }
    };
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "no Kubernetes client configuration (kubeconfig or in-cluster)");
            return ExitCode::from(1);
        }
    };
    let identity = args
        .identity
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(default_identity);
    let settings = Settings {
        identity: identity.clone(),
        min_interval: args.min_interval,
        preview_ttl: args.preview_ttl,
        report_retention: args.report_retention,
        claim_ttl: args.claim_ttl,
        backoff: Backoff {
            initial: args.retry_initial,
            max: args.retry_max.max(args.retry_initial),
        },
        run_deadline: args.run_deadline,
        checkpoint_every: args.checkpoint_every,
        clients: ClientSettings {
            policy,
            http_max_attempts: args.http_max_attempts.clamp(1, 6),
            http_retry_base: args.http_retry_base,
            connect_timeout: args.connect_timeout,
            apply_concurrency: args.apply_concurrency.max(1),
            listing_limits: ListingLimits {
                max_users: args.max_listing_users,
                max_bytes: args.max_listing_bytes,
            },
        },
        concurrency: args.concurrency.max(1),
        store_in: args.store_in.kind(),
    };
    let scope = if args.namespaces.is_empty() {
        Scope::All
    } else {
        Scope::Namespaces(args.namespaces.clone())
    };
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(tx.clone()));

    let state = admin::AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    match admin::bind(args.metrics_addr, args.health_addr, state).await {
        Ok((addrs, serve)) => {
            info!(addresses = ?addrs, "admin endpoints listening");
            tokio::spawn(serve);
        }
        Err(e) => {
            error!(error = %e, "cannot listen on --metrics-addr / --health-addr");
            return ExitCode::from(1);
        }
    }
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics.clone()));
    info!(identity = %identity, namespaces = ?args.namespaces, store_in = %args.store_in.kind(), "dirsync operator starting");

    if !args.leader_election {
        run_controller(ctx, scope, rx, ready).await;
        return ExitCode::SUCCESS;
    }
    let lease = LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        identity: identity.clone(),
        duration: args.lease_duration.max(2),
        grace: args.lease_grace.clamp(1, args.lease_duration.max(2) - 1),
    };
    // A follower is a healthy standby.
    ready.store(true, Ordering::Relaxed);
    let lm = match leader::acquire(client, &lease, &mut rx).await {
        Ok(Some(lm)) => lm,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "leader election failed");
            return ExitCode::from(1);
        }
    };
    metrics.leader.set(1);
    ready.store(false, Ordering::Relaxed);
    let controller = run_controller(ctx, scope, rx.clone(), ready);
    tokio::pin!(controller);
    let code = tokio::select! {
        _ = &mut controller => ExitCode::SUCCESS,
        e = leader::hold(&lm) => {
            error!(error = %e, "leadership lost: stopping the controller and exiting");
            metrics.leader.set(0);
            let _ = tx.send(true);
            if tokio::time::timeout(Duration::from_secs(10), &mut controller).await.is_err() {
                warn!("in-flight reconciles did not finish within 10 s");
            }
            return ExitCode::from(1);
        }
    };
    metrics.leader.set(0);
    if let Err(e) = lm.release().await {
        warn!(error = %e, "could not release the Lease");
    } else {
        info!("released the leader Lease");
    }
    code
}
