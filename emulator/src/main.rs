//! `entra-emulator` command line. The first stdout line is the base URL; logs go to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use entra_emulator::{
    Config, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, Emulator, GenerateSpec,
};

#[derive(Parser, Debug)]
#[command(
    name = "entra-emulator",
    version,
    about = "Local Microsoft Entra ID / Microsoft Graph emulator for tests and demos"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Allow listening on a non-loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// Tenant fixture (JSON; repeat for several tenants).
    #[arg(long = "tenant-file", value_name = "FILE")]
    tenant_files: Vec<PathBuf>,
    /// Generate a tenant with N users.
    #[arg(long, value_name = "N", conflicts_with = "tenant_files")]
    generate: Option<usize>,
    /// Domain of the generated users (with --generate).
    #[arg(long, requires = "generate")]
    domain: Option<String>,
    /// Seed of the generated tenant: the same seed gives the same tenant.
    #[arg(long, default_value_t = 1, requires = "generate")]
    seed: u64,
    /// Name of the generated tenant's initial domain, NAME.onmicrosoft.com (default: first label of --domain).
    #[arg(long, requires = "generate")]
    tenant_name: Option<String>,
    /// Tenant id (generated tenant; overrides the id of a single tenant file).
    #[arg(long)]
    tenant_id: Option<String>,
    /// Client id of the application (generated tenant; adds or updates an app in a tenant file).
    #[arg(long, requires = "client_secret")]
    client_id: Option<String>,
    /// Client secret of that application.
    #[arg(long, env = "ENTRA_EMULATOR_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Register an RSA certificate (PEM file) for the application.
    #[arg(long, value_name = "PEM")]
    client_certificate: Vec<PathBuf>,
    /// Register a federated credential for the application: ISSUER,SUBJECT[,AUDIENCE].
    #[arg(long, value_name = "ISSUER,SUBJECT[,AUDIENCE]")]
    federated_credential: Vec<String>,
    /// Serve HTTPS and write the generated CA certificate (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    tls_ca_out: Option<PathBuf>,
    /// Extra host name or IP for the server certificate.
    #[arg(long, value_name = "NAME")]
    tls_name: Vec<String>,
    /// expires_in of issued access tokens, in seconds.
    #[arg(long, default_value_t = entra_emulator::DEFAULT_TOKEN_LIFETIME)]
    token_lifetime: u64,
    /// Extra CA (PEM file) trusted when fetching a federated issuer's keys; repeatable.
    #[arg(long, value_name = "FILE")]
    trust_ca: Vec<PathBuf>,
    /// Base URL to write into links instead of the bound address.
    #[arg(long)]
    public_url: Option<String>,
    /// Start with the deltaReplay setting on: delta change rounds serve their first user twice
    /// and their deltaLinks replay the round's changes once.
    #[arg(long)]
    delta_replay: bool,
    /// Application permissions (the token's `roles` claim) of the generated app, or of the
    /// --client-id app of a tenant file, comma-separated (default User.Read.All,Domain.Read.All).
    #[arg(long, value_name = "ROLE,...", value_delimiter = ',')]
    app_roles: Option<Vec<String>>,
    /// Identity writes allowed per app and tenant per --write-window (Graph: 3000); 0 = no limit.
    #[arg(long, value_name = "N", default_value_t = entra_emulator::throttle::DEFAULT_WRITE_LIMIT)]
    write_limit: u64,
    /// The window of --write-limit, in seconds (Graph: 150).
    #[arg(long, value_name = "SECS", default_value_t = entra_emulator::throttle::DEFAULT_WRITE_WINDOW_SECS)]
    write_window: u64,
    /// Start with the rejectFederatedPassword setting on: a passwordProfile on a user of a
    /// federated domain is refused.
    #[arg(long)]
    reject_federated_password: bool,
}

fn build_config(a: &Args) -> Result<Config, String> {
    let mut cfg = Config::new();
    cfg.listen = a.listen;
    cfg.allow_remote = a.allow_remote;
    cfg.token_lifetime = a.token_lifetime;
    cfg.public_url = a.public_url.clone();
    cfg.delta_replay = a.delta_replay;
    cfg.write_limit = a.write_limit;
    cfg.write_window = a.write_window;
    cfg.reject_federated_password = a.reject_federated_password;
    if a.write_window == 0 {
        return Err("--write-window must be at least 1 second".into());
    }
    cfg.tls = a.tls_ca_out.is_some();
    cfg.tls_names = a.tls_name.clone();
    if a.token_lifetime == 0 {
        return Err("--token-lifetime must be at least 1 second".into());
    }
    for f in &a.trust_ca {
        cfg.trust_ca_pems.push(
            std::fs::read_to_string(f).map_err(|e| format!("--trust-ca {}: {e}", f.display()))?,
        );
    }
    if let Some(n) = a.generate {
        let domain = a.domain.clone().ok_or("--generate needs --domain")?;
        if !domain.contains('.') {
            return Err(format!("--domain '{domain}' is not a domain name"));
        }
        let spec = GenerateSpec {
            count: n,
            domain,
            seed: a.seed,
            tenant_id: a
                .tenant_id
                .clone()
                .unwrap_or_else(|| DEFAULT_TENANT_ID.into()),
            tenant_name: a.tenant_name.clone(),
        };
        let client_id = a
            .client_id
            .clone()
            .unwrap_or_else(|| DEFAULT_CLIENT_ID.into());
        let secret = a
            .client_secret
            .clone()
            .unwrap_or_else(|| DEFAULT_CLIENT_SECRET.into());
        cfg.tenants.push(entra_emulator::generator::generate(
            &spec, &client_id, &secret,
        ));
    } else if a.tenant_files.is_empty() {
        return Err("give --tenant-file FILE or --generate N --domain D".into());
    }
    for f in &a.tenant_files {
        let mut t = entra_emulator::fixture::load_file(f)
            .map_err(|e| format!("tenant file {}: {e}", f.display()))?;
        if let Some(id) = &a.tenant_id {
            if a.tenant_files.len() > 1 {
                return Err("--tenant-id can only override the id of a single tenant file".into());
            }
            t.tenant_id = id.clone();
        }
        cfg.tenants.push(t);
    }
    // --client-id/--client-secret/--client-certificate/--federated-credential: the first tenant's app.
    if let Some(t) = cfg.tenants.first_mut() {
        let client_id = a
            .client_id
            .clone()
            .or_else(|| t.applications.first().map(|x| x.client_id.clone()))
            .unwrap_or_else(|| DEFAULT_CLIENT_ID.into());
        let needs_app = a.client_id.is_some()
            || a.app_roles.is_some()
            || !a.client_certificate.is_empty()
            || !a.federated_credential.is_empty();
        if needs_app {
            if !t
                .applications
                .iter()
                .any(|x| x.client_id.eq_ignore_ascii_case(&client_id))
            {
                t.applications.push(entra_emulator::tenant::Application {
                    client_id: client_id.clone(),
                    display_name: "dirsync".into(),
                    secrets: Vec::new(),
                    certificates: Vec::new(),
                    federated: Vec::new(),
                    roles: entra_emulator::fixture::DEFAULT_ROLES
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    sp_object_id: entra_emulator::fixture::derived_guid(&format!("sp/{client_id}")),
                });
            }
            let app = t
                .applications
                .iter_mut()
                .find(|x| x.client_id.eq_ignore_ascii_case(&client_id))
                .ok_or("internal: application missing")?;
            if let Some(roles) = &a.app_roles {
                app.roles = roles.clone();
            }
            if let Some(s) = &a.client_secret
                && !app.secrets.contains(s)
            {
                app.secrets.push(s.clone());
            }
            for c in &a.client_certificate {
                let pem = std::fs::read_to_string(c)
                    .map_err(|e| format!("--client-certificate {}: {e}", c.display()))?;
                app.certificates.push(
                    entra_emulator::fixture::parse_certificate(&pem)
                        .map_err(|e| format!("--client-certificate {}: {e}", c.display()))?,
                );
            }
            for f in &a.federated_credential {
                let mut parts = f.splitn(3, ',');
                let (Some(iss), Some(sub)) = (parts.next(), parts.next()) else {
                    return Err(format!(
                        "--federated-credential '{f}': expected ISSUER,SUBJECT[,AUDIENCE]"
                    ));
                };
                app.federated
                    .push(entra_emulator::tenant::FederatedCredential {
                        issuer: iss.to_string(),
                        subject: sub.to_string(),
                        audiences: vec![
                            parts
                                .next()
                                .unwrap_or("api://AzureADTokenExchange")
                                .to_string(),
                        ],
                    });
            }
        }
    }
    Ok(cfg)
}

/// Resolves on SIGINT or SIGTERM. Create it before announcing the base URL, so that a
/// signal sent right after the announcement is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENTRA_EMULATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cfg = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("entra-emulator: error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("entra-emulator: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let stop = shutdown_signal();
        let emu = match Emulator::start(cfg).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("entra-emulator: error: {e}");
                return ExitCode::from(2);
            }
        };
        if let (Some(path), Some(pem)) = (&args.tls_ca_out, &emu.ca_pem)
            && let Err(e) = std::fs::write(path, pem)
        {
            eprintln!(
                "entra-emulator: error: cannot write {}: {e}",
                path.display()
            );
            return ExitCode::from(2);
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", emu.base_url);
        let _ = out.flush();
        drop(out);
        let t = emu.tenant();
        eprintln!(
            "entra-emulator: serving tenant {} ({} users) at {}; token endpoint {}",
            t.id,
            t.user_count(),
            emu.base_url,
            emu.token_endpoint()
        );
        stop.await;
        emu.stop().await;
        ExitCode::SUCCESS
    })
}
