//! entra-emulator: a local stand-in for Microsoft Entra ID (token endpoint, OpenID discovery)
//! and Microsoft Graph users/domains, reads and writes, faithful enough for Microsoft's own
//! client libraries. See `emulator/README.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use entra_emulator::{Config, Emulator};
//! let emu = Emulator::start(Config::generated(100, "example.com", 1).https()).await?;
//! println!("{} trusts {:?}", emu.base_url, emu.ca_pem.is_some());
//! emu.stop().await;
//! # Ok(()) }
//! ```

// Handlers return ready HTTP error responses in `Err`; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

pub mod assertion;
pub mod control;
pub mod faults;
pub mod federation;
pub mod fixture;
pub mod generator;
pub mod graph;
pub mod http;
pub mod jwt;
pub mod names;
pub mod props;
pub mod roles;
pub mod server;
pub mod state;
pub mod stats;
pub mod tenant;
pub mod throttle;
pub mod time;
pub mod tls;
pub mod token;
pub mod user;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use generator::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, GenerateSpec, Shares,
};
pub use state::AppState;
pub use tenant::{Tenant, TenantSpec};

/// Default `expires_in` of issued tokens (what Entra usually returns).
pub const DEFAULT_TOKEN_LIFETIME: u64 = 3599;

/// How to run an emulator.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` address.
    pub allow_remote: bool,
    /// Serve HTTPS with a generated CA (its PEM is in [`RunningEmulator::ca_pem`]).
    pub tls: bool,
    /// Extra names for the server certificate (beyond 127.0.0.1, ::1 and localhost).
    pub tls_names: Vec<String>,
    pub tenants: Vec<TenantSpec>,
    pub token_lifetime: u64,
    /// Extra trusted CAs (PEM text) for fetching federated issuers' keys over HTTPS.
    pub trust_ca_pems: Vec<String>,
    /// Base URL to write into links instead of the bound address (e.g. behind a proxy).
    pub public_url: Option<String>,
    /// Start with the `deltaReplay` setting on (duplicates and replays in delta rounds).
    pub delta_replay: bool,
    /// Identity writes per app and tenant per `write_window` seconds; 0 = no limit
    /// (default 3,000 per 150 s, Graph's: `throttle.rs`).
    pub write_limit: u64,
    pub write_window: u64,
    /// Start with `rejectFederatedPassword` on (`state.rs`).
    pub reject_federated_password: bool,
}

impl Config {
    /// Loopback, plain HTTP, no tenants yet.
    pub fn new() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_remote: false,
            tls: false,
            tls_names: Vec::new(),
            tenants: Vec::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            trust_ca_pems: Vec::new(),
            public_url: None,
            delta_replay: false,
            write_limit: throttle::DEFAULT_WRITE_LIMIT,
            write_window: throttle::DEFAULT_WRITE_WINDOW_SECS,
            reject_federated_password: false,
        }
    }

    /// One generated tenant with the default tenant id, client id and secret.
    pub fn generated(count: usize, domain: &str, seed: u64) -> Config {
        let spec = GenerateSpec {
            count,
            domain: domain.to_string(),
            seed,
            tenant_id: DEFAULT_TENANT_ID.to_string(),
            tenant_name: None,
        };
        Config::new().with_tenant(generator::generate(
            &spec,
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
        ))
    }

    /// A tenant from fixture JSON (the `--tenant-file` format).
    pub fn from_fixture(v: &serde_json::Value) -> Result<Config, String> {
        Ok(Config::new().with_tenant(fixture::parse(v)?))
    }

    pub fn with_tenant(mut self, t: TenantSpec) -> Config {
        self.tenants.push(t);
        self
    }

    pub fn https(mut self) -> Config {
        self.tls = true;
        self
    }

    pub fn token_lifetime(mut self, secs: u64) -> Config {
        self.token_lifetime = secs;
        self
    }

    pub fn trust_ca(mut self, pem: &str) -> Config {
        self.trust_ca_pems.push(pem.to_string());
        self
    }

    pub fn delta_replay(mut self, on: bool) -> Config {
        self.delta_replay = on;
        self
    }

    /// Write limit per app and tenant: `limit` writes per `window_secs` (0 = no limit).
    pub fn write_limit(mut self, limit: u64, window_secs: u64) -> Config {
        self.write_limit = limit;
        self.write_window = window_secs;
        self
    }

    /// Replace the application permissions (`roles` claim) of every app of every tenant.
    pub fn app_roles(mut self, roles: &[&str]) -> Config {
        for t in &mut self.tenants {
            for a in &mut t.applications {
                a.roles = roles.iter().map(|r| r.to_string()).collect();
            }
        }
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

pub struct Emulator;

/// A started emulator. Dropping it stops the server (without waiting); prefer [`RunningEmulator::stop`].
pub struct RunningEmulator {
    /// e.g. `https://127.0.0.1:41234` (no trailing slash).
    pub base_url: String,
    pub addr: SocketAddr,
    /// The CA certificate to trust, when serving HTTPS.
    pub ca_pem: Option<String>,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Bind, generate certificates if asked, and start serving on the current tokio runtime.
    pub async fn start(config: Config) -> Result<RunningEmulator, String> {
        if config.tenants.is_empty() {
            return Err("no tenant: give a tenant file or --generate".into());
        }
        if !config.listen.ip().is_loopback() && !config.allow_remote {
            return Err(format!(
                "refusing to listen on {}: it is not a loopback address (pass --allow-remote to allow it)",
                config.listen
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for t in &config.tenants {
            if !ids.insert(t.tenant_id.to_ascii_lowercase()) {
                return Err(format!("tenant id '{}' is used twice", t.tenant_id));
            }
        }
        // Warm the process-wide signing key in the background.
        tokio::task::spawn_blocking(|| {
            let _ = jwt::SigningKey::get();
        });
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let scheme = if config.tls { "https" } else { "http" };
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let base_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("{scheme}://{host}:{}", addr.port()),
        };
        let (tls, ca_pem) = if config.tls {
            let pki = tls::generate(&config.tls_names)?;
            (Some(tls::server_config(&pki)?), Some(pki.ca_pem))
        } else {
            (None, None)
        };
        let federation = federation::Federation::new(&config.trust_ca_pems)
            .map_err(|e| format!("--trust-ca: {e}"))?;
        let epoch = (rand::random::<u32>() as u64) << 20;
        let tenants = config
            .tenants
            .into_iter()
            .map(|spec| Arc::new(Tenant::new(spec, epoch)))
            .collect();
        if config.write_window == 0 {
            return Err("the write window must be at least 1 second".into());
        }
        let state = Arc::new(AppState::new(
            base_url.clone(),
            tenants,
            config.token_lifetime,
            federation,
            epoch,
        ));
        state
            .throttle
            .limit
            .store(config.write_limit, std::sync::atomic::Ordering::Relaxed);
        state
            .throttle
            .window_secs
            .store(config.write_window, std::sync::atomic::Ordering::Relaxed);
        state.reject_federated_password.store(
            config.reject_federated_password,
            std::sync::atomic::Ordering::Relaxed,
        );
        state
            .delta_replay
            .store(config.delta_replay, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server::run(listener, tls, state.clone(), rx));
        Ok(RunningEmulator {
            base_url,
            addr,
            ca_pem,
            state,
            shutdown: tx,
            task: Some(task),
        })
    }
}

impl RunningEmulator {
    /// Shared state: tenants, faults, counters (the control API's operations, in-process).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The first (usually only) tenant.
    pub fn tenant(&self) -> Arc<Tenant> {
        self.state.tenants[0].clone()
    }

    /// `<base>/<tenant-id>/oauth2/v2.0/token` of the first tenant.
    pub fn token_endpoint(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.base_url, self.state.tenants[0].id
        )
    }

    /// Stop accepting, drain open connections (3 s at most) and wait for the server task.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
