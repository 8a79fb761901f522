//! `dirsync plan` and `dirsync apply` (docs/behaviour.md §5): the operator's engine without a cluster.
//!
//! Output discipline: `plan` writes the CSV to standard output (or `--out`); everything meant
//! for a person goes to standard error, so a script can pipe the CSV. No secret is ever printed:
//! client errors are already cut to a status and an error code.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use url::Url;

use super::exit;
use super::inputs::{InputError, Secrets, load_resource};
use crate::cli::state_file::{ResourceIdentity, StateFile};
use crate::clients::graph::{
    ClientCertificate, FederatedTokenFile, GraphClient, GraphConfig, GraphCredential,
};
use crate::clients::outbound::HttpConfig;
use crate::clients::scim::{ScimClient, ScimConfig};
use crate::crd::{Direction, DirectorySync};
use crate::directory::{Directory, DirectoryError, ListingLimits};
use crate::sync::approval::{ApprovalNeed, ApprovedPreview, approval_need, parse_preview, select};
use crate::sync::csv::write_preview_csv;
use crate::sync::display::terminal_safe;
use crate::sync::engine::{
    self, ApplyObserver, ApplyOptions, OtherResources, PlannedRun, RunError, RunResult,
};
use crate::sync::incremental::{self, AppliedRun, FullReason, KindRequest, KindedRun};
use crate::sync::managed::{ManagedSet, ManagedStore as _};
use crate::sync::{ApprovalPolicy, Reason, Side};

/// The flags `plan` and `apply` share.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The DirectorySync manifest (the same YAML you apply to a cluster).
    #[arg(short = 'f', long = "filename", value_name = "RESOURCE.yaml")]
    pub resource: PathBuf,
    /// Kubernetes Secret manifests holding the credentials the resource refers to.
    #[arg(long, value_name = "SECRETS.yaml")]
    pub secrets: PathBuf,
    /// The managed set of this resource (created on the first apply; mode 0600).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// An extra trusted CA (PEM) for both the Entra ID / Graph side and the SCIM side.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// The most writes in flight at once while applying; fewer are sent while the destination's
    /// latency shows them queueing there (adaptive concurrency).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Allow a plain http:// SCIM endpoint that is not on this machine (the bearer token then
    /// crosses the network unencrypted). Without it, http:// is accepted only for loopback.
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// The most users one listing may hold before the read is refused as runaway.
    #[arg(long, value_name = "N", default_value_t = ListingLimits::DEFAULT_MAX_USERS)]
    pub max_listing_users: u64,
    /// The most response bytes one listing may read before it is refused as runaway.
    #[arg(long, value_name = "BYTES", default_value_t = ListingLimits::DEFAULT_MAX_BYTES)]
    pub max_listing_bytes: u64,
}

/// A failure that ends the command with exit code 1 and one line on stderr.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Run(String),
}

/// `dirsync plan`: never writes to either directory; exit 0 even when applying would trip the guard.
pub async fn plan(args: RunArgs, out: Option<PathBuf>) -> u8 {
    match plan_inner(&args, out.as_deref()).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// `dirsync apply`: applies now, whatever `spec.mode` says; with `approved`, only the rows
/// identical in that reviewed preview and the fresh plan.
pub async fn apply(args: RunArgs, approved: Option<PathBuf>, full: bool) -> u8 {
    if args.state.is_none() {
        eprintln!(
            "error: apply needs --state FILE: it records which destination users this resource manages"
        );
        return exit::USAGE;
    }
    match apply_inner(&args, approved.as_deref(), full).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &Failure) -> u8 {
    eprintln!("error: {}", terminal_safe(&e.to_string()));
    exit::ERROR
}

/// Plain `http://` sends the bearer token in clear: only to this machine unless the user says so.
fn check_plain_http(field: &str, url: &Url, allow: bool) -> Result<(), Failure> {
    if url.scheme() != "http" || allow {
        return Ok(());
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if loopback {
        return Ok(());
    }
    Err(Failure::Run(format!(
        "{field}: plain http:// to {} would send the bearer token unencrypted; use https://, \
         or pass --allow-insecure-http if that is really meant",
        url.host_str().unwrap_or("?")
    )))
}

/// Everything a run needs, built from the files.
struct Setup {
    resource: DirectorySync,
    direction: Direction,
    graph: GraphClient,
    scim: ScimClient,
    state: Option<StateFile>,
}

impl Setup {
    /// The side users are read from: Graph or SCIM by direction (docs/behaviour.md §6).
    fn source(&self) -> &dyn Directory {
        match self.direction {
            Direction::EntraIdToScim => &self.graph,
            Direction::ScimToEntraId => &self.scim,
        }
    }

    /// The side users are written to.
    fn destination(&self) -> &dyn Directory {
        match self.direction {
            Direction::EntraIdToScim => &self.scim,
            Direction::ScimToEntraId => &self.graph,
        }
    }

    /// Whether Graph is on `side`.
    fn graph_on(&self, side: Side) -> bool {
        (self.direction == Direction::EntraIdToScim) == (side == Side::Source)
    }

    /// "Entra ID", "the SCIM source" or "the SCIM destination", for messages.
    fn name(&self, side: Side) -> &'static str {
        match (self.graph_on(side), side) {
            (true, _) => "Entra ID",
            (false, Side::Source) => "the SCIM source",
            (false, Side::Destination) => "the SCIM destination",
        }
    }

    /// What refused credentials on `side` are: the app's for Entra ID, the bearer token for SCIM.
    fn refused_credentials(&self, side: Side) -> String {
        if self.graph_on(side) {
            "Entra ID refused the app's credentials".to_string()
        } else {
            format!("{} refused the bearer token", self.name(side))
        }
    }
}

fn setup(args: &RunArgs) -> Result<Setup, Failure> {
    crate::clients::outbound::init_crypto();
    let resource = load_resource(&args.resource)?;
    // `load_resource` already refused a spec without a direction; an error, never a panic.
    let sides = resource
        .spec
        .sides()
        .map_err(|e| Failure::Run(format!("{}: {e}", args.resource.display())))?;
    let namespace = resource
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let secrets = Secrets::load(&args.secrets, &namespace)?;
    let extra_ca = match &args.ca_file {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| Failure::Run(format!("{}: cannot read: {e}", p.display())))?,
        ),
        None => None,
    };
    let ca_with = |bundle: Option<&crate::crd::SecretKeyRef>| -> Result<Option<Vec<u8>>, Failure> {
        let mut pem = extra_ca.clone().unwrap_or_default();
        if let Some(r) = bundle {
            use secrecy::ExposeSecret as _;
            pem.extend_from_slice(b"\n");
            pem.extend_from_slice(secrets.get(r)?.expose_secret().as_bytes());
        }
        Ok((!pem.is_empty()).then_some(pem))
    };

    let entra = sides.entra_id;
    let entra_field = sides.entra_id_field();
    let credential = if let Some(r) = &entra.client_secret_ref {
        GraphCredential::ClientSecret(secrets.get(r)?)
    } else if let Some(r) = &entra.client_certificate_ref {
        use secrecy::ExposeSecret as _;
        let cert = ClientCertificate::from_pem(secrets.get(r)?.expose_secret().as_bytes())
            .map_err(|e| Failure::Run(format!("Secret {:?} key {:?}: {e}", r.name, r.key)))?;
        GraphCredential::ClientCertificate(std::sync::Arc::new(cert))
    } else {
        // Outside a cluster a workload identity token can only come from a file, as the Azure
        // SDKs read it (AZURE_FEDERATED_TOKEN_FILE).
        let path = std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").ok_or_else(|| {
            Failure::Run(format!(
                "{entra_field}.workloadIdentity: outside a cluster set AZURE_FEDERATED_TOKEN_FILE to a file holding the federated token"
            ))
        })?;
        GraphCredential::FederatedToken(std::sync::Arc::new(FederatedTokenFile::new(path)))
    };
    let url =
        |field: &str, s: &str| Url::parse(s).map_err(|e| Failure::Run(format!("{field}: {e}")));
    let mut graph_cfg =
        GraphConfig::new(entra.tenant_id.clone(), entra.client_id.clone(), credential);
    graph_cfg.authority_host = url(
        &format!("{entra_field}.authorityHost"),
        &entra.authority_host,
    )?;
    graph_cfg.graph_endpoint = url(
        &format!("{entra_field}.graphEndpoint"),
        &entra.graph_endpoint,
    )?;
    graph_cfg.http = HttpConfig {
        extra_ca_pem: ca_with(entra.ca_bundle_ref.as_ref())?,
        ..HttpConfig::default()
    };
    let limits = ListingLimits {
        max_users: args.max_listing_users,
        max_bytes: args.max_listing_bytes,
    };
    graph_cfg.limits = limits;
    graph_cfg.write_pacing = sides.graph_write_pacing();
    let graph = GraphClient::new(graph_cfg).map_err(|e| Failure::Run(format!("Entra ID: {e}")))?;

    let scim_side = sides.scim;
    let scim_field = format!("{}.endpoint", sides.scim_field());
    let scim_url = url(&scim_field, &scim_side.endpoint)?;
    check_plain_http(&scim_field, &scim_url, args.allow_insecure_http)?;
    let mut scim_cfg = ScimConfig::new(scim_url, secrets.get(&scim_side.bearer_token_ref)?);
    scim_cfg.limits = limits;
    scim_cfg.upn_attribute =
        Some(scim_side.user_principal_name_attribute.clone()).filter(|a| !a.is_empty());
    scim_cfg.http = HttpConfig {
        extra_ca_pem: ca_with(scim_side.ca_bundle_ref.as_ref())?,
        max_in_flight: usize::from(args.concurrency),
        ..HttpConfig::default()
    };
    let scim = ScimClient::new(scim_cfg).map_err(|e| {
        Failure::Run(format!(
            "SCIM {}: {e}",
            crate::crd::side_name(sides.scim_side())
        ))
    })?;

    let direction = sides.direction;
    let state = args.state.as_ref().map(|p| {
        StateFile::new(
            p.clone(),
            ResourceIdentity {
                namespace,
                name: resource.metadata.name.clone().unwrap_or_default(),
                domain: resource.spec.domain.to_ascii_lowercase(),
                direction,
            },
        )
    });
    Ok(Setup {
        resource,
        direction,
        graph,
        scim,
        state,
    })
}

async fn load_managed(state: Option<&StateFile>) -> Result<ManagedSet, Failure> {
    match state {
        Some(s) => s
            .load()
            .await
            .map_err(|e| Failure::Run(format!("{}: {e}", s.path().display()))),
        None => Ok(ManagedSet::new()),
    }
}

/// Plans the run: always full for `plan` (`forced`), else of the kind docs/behaviour.md §7 says.
async fn plan_once(
    s: &Setup,
    managed: &ManagedSet,
    forced: Option<FullReason>,
    take_link: bool,
) -> Result<KindedRun, Failure> {
    let started = Instant::now();
    let spec = &s.resource.spec;
    let delta = s.state.as_ref().and_then(|st| st.delta());
    eprintln!(
        "dirsync: planning {} ({}) ...",
        s.resource.metadata.name.as_deref().unwrap_or("?"),
        spec.domain
    );
    let cfg = spec
        .sync_config()
        .map_err(|e| Failure::Run(format!("invalid resource: {e}")))?;
    let run = incremental::plan_of_kind(
        s.source(),
        s.destination(),
        &cfg,
        managed,
        &OtherResources::default(),
        KindRequest {
            state: delta.as_ref(),
            now: unix_now(),
            full_sync_interval_secs: spec.full_sync_interval_secs(),
            forced,
            take_link,
            context: &spec.delta_context(),
        },
    )
    .await
    .map_err(|e| Failure::Run(describe_run_error(s, &e)))?;
    let planned = &run.planned;
    eprintln!(
        "dirsync: {} run: read {} source and {} destination users in {:.1}s",
        planned.kind.describe(),
        planned.source_users_read,
        planned.destination_users_read,
        started.elapsed().as_secs_f64()
    );
    // Either way round the domain must be one of the tenant's: its users are read from it,
    // or written into it.
    if planned.no_source_users && s.graph.lacks_domain(&spec.domain).await {
        let tenant = spec.entra_id().map_or("?", |e| e.tenant_id.as_str());
        return Err(Failure::Run(format!(
            "{}: {} is not a domain of tenant {tenant}",
            Reason::DomainNotFound,
            spec.domain,
        )));
    }
    Ok(run)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One line: the core's reason for the error, then what happened in the CLI's terms.
fn describe_run_error(s: &Setup, e: &RunError) -> String {
    let what = match e {
        RunError::Source(DirectoryError::InvalidCredentials(m)) => {
            format!("{} ({m})", s.refused_credentials(Side::Source))
        }
        RunError::Destination(DirectoryError::InvalidCredentials(m)) => {
            format!("{} ({m})", s.refused_credentials(Side::Destination))
        }
        RunError::Source(other) => {
            format!(
                "reading {} failed, nothing was written ({other})",
                s.name(Side::Source)
            )
        }
        RunError::Destination(other) => {
            format!(
                "reading {} failed, nothing was written ({other})",
                s.name(Side::Destination)
            )
        }
        RunError::Config(c) => return format!("invalid resource: {c}"),
    };
    format!("{}: {what}", e.reason())
}

/// `approved`: an approved preview confirms the plan's deletions (`dirsync apply --approved-preview`).
fn print_summary(s: &Setup, planned: &PlannedRun, csv_to: &str, dry_run: bool, approved: bool) {
    let c = planned.summary(dry_run).counts;
    eprintln!(
        "dirsync: plan: {} add, {} update, {} delete, {} conflict, {} unmanaged, {} unchanged{}",
        c.add,
        c.update,
        c.delete,
        c.conflict,
        c.unmanaged,
        c.unchanged,
        if c.handed_over > 0 {
            format!(", {} handed over", c.handed_over)
        } else {
            String::new()
        }
    );
    let g = &planned.guard;
    if g.tripped && approved {
        eprintln!(
            "dirsync: deletion guard: tripped ({} of {} managed users would be deleted or deactivated; maxAllowedDeletions {} %), but only the deletions the approved preview holds are applied",
            g.deletes, g.managed, g.max_allowed_deletions
        );
    } else if g.tripped {
        let msg = if dry_run {
            g.dry_run_message()
        } else {
            g.message()
        };
        eprintln!(
            "dirsync: deletion guard: TRIPPED. {}",
            msg.unwrap_or_default()
        );
    } else {
        eprintln!(
            "dirsync: deletion guard: ok ({} of {} managed users would be deleted or deactivated; maxAllowedDeletions {} %)",
            g.deletes, g.managed, g.max_allowed_deletions
        );
    }
    if planned.no_source_users {
        eprintln!(
            "dirsync: NoSourceUsers: {} has no users in {} and none are managed",
            s.name(Side::Source),
            planned.config.domain
        );
    }
    eprintln!("dirsync: preview CSV: {csv_to}");
}

async fn plan_inner(args: &RunArgs, out: Option<&Path>) -> Result<u8, Failure> {
    let s = setup(args)?;
    let managed = load_managed(s.state.as_ref()).await?;
    let planned = plan_once(&s, &managed, Some(FullReason::DryRun), false)
        .await?
        .planned;
    let to = write_csv(&planned, out)?;
    print_summary(&s, &planned, &to, true, false);
    Ok(exit::DONE)
}

/// Writes the preview CSV to `out` (atomically) or to standard output; returns where it went.
fn write_csv(planned: &PlannedRun, out: Option<&Path>) -> Result<String, Failure> {
    match out {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| Failure::Run(format!("{}: cannot write: {e}", path.display())))?;
            let stats = write_preview_csv(&planned.plan, &mut tmp)
                .map_err(|e| Failure::Run(format!("{}: cannot write: {e}", path.display())))?;
            tmp.persist(path)
                .map_err(|e| Failure::Run(format!("{}: cannot write: {e}", path.display())))?;
            Ok(format!(
                "{} ({} rows, sha256 {})",
                path.display(),
                stats.rows,
                stats.sha256
            ))
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            let stats = write_preview_csv(&planned.plan, &mut lock)
                .and_then(|s| lock.flush().map(|()| s))
                .map_err(|e| Failure::Run(format!("standard output: {e}")))?;
            Ok(format!(
                "standard output ({} rows, sha256 {})",
                stats.rows, stats.sha256
            ))
        }
    }
}

/// Prints progress at most every two seconds on long applies and saves the managed set at
/// checkpoints, so an interrupted apply loses little and never creates duplicates.
struct CliObserver<'a> {
    state: &'a StateFile,
    last: Instant,
    save_error: Option<String>,
}

#[async_trait]
impl ApplyObserver for CliObserver<'_> {
    fn progress(&mut self, done: usize, total: usize) {
        if self.last.elapsed() >= Duration::from_secs(2) || done == total {
            self.last = Instant::now();
            eprintln!("dirsync: applied {done} of {total} changes");
        }
    }

    async fn checkpoint(&mut self, managed: &ManagedSet) {
        if let Err(e) = self.state.save(managed).await {
            self.save_error = Some(e.to_string());
        }
    }
}

/// Reads a reviewed preview CSV.
fn read_approved(path: &Path) -> Result<ApprovedPreview, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Run(format!("{}: cannot read: {e}", path.display())))?;
    parse_preview(&bytes).map_err(|e| {
        Failure::Run(format!(
            "{}: not an approvable preview: {e}",
            path.display()
        ))
    })
}

async fn apply_inner(
    args: &RunArgs,
    approved_path: Option<&Path>,
    full: bool,
) -> Result<u8, Failure> {
    // The file first: a typo in its name should not cost a full read of both directories.
    let approved = approved_path.map(read_approved).transpose()?;
    let s = setup(args)?;
    let Some(state) = s.state.as_ref() else {
        return Ok(exit::USAGE);
    };
    // Before anything is written: a state file that cannot be saved would leave users created
    // that no run knows it manages.
    state
        .check_writable()
        .map_err(|e| Failure::Run(e.to_string()))?;
    let managed = load_managed(Some(state)).await?;
    // A reviewed preview is a full plan: only a full plan can be compared with it row by row.
    let forced = if full || approved.is_some() {
        Some(FullReason::Requested)
    } else if s.resource.spec.approval != ApprovalPolicy::Never {
        // As in the operator: approvals compare whole plans.
        Some(FullReason::Approval)
    } else {
        None
    };
    // Before the read: a full run's link is taken first, so its age counts from here.
    let started_at = unix_now();
    let KindedRun {
        planned,
        new_link,
        read_changes,
        link_error,
        fingerprint,
    } = plan_once(&s, &managed, forced, true).await?;
    if let Some(e) = link_error {
        eprintln!(
            "warning: could not take a Graph delta link ({}); this run goes on in full, and so will the next",
            terminal_safe(&e.to_string())
        );
    }
    if planned.kind.is_incremental() && !read_changes {
        // Nothing changed in Entra ID: nothing to plan, write or save (docs/behaviour.md §7).
        eprintln!(
            "dirsync: nothing changed in Entra ID since the last run: 0 created, 0 updated, 0 deleted; {} managed users in {} (unchanged)",
            managed.len(),
            state.path().display()
        );
        return Ok(exit::DONE);
    }
    let prior_delta = state.delta();
    print_summary(
        &s,
        &planned,
        "not written (use dirsync plan --out to keep one)",
        false,
        approved.is_some(),
    );
    let mut selection = None;
    let planned = match (&approved, approval_need(s.resource.spec.approval, &planned)) {
        (Some(approved), _) => {
            let (selected, sel) = select(planned, approved);
            selection = Some(sel);
            eprintln!(
                "dirsync: approved preview {} ({}): {} rows to apply, {} stale (skipped), {} not approved (not applied)",
                approved.hash,
                terminal_safe(
                    &approved_path
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
                sel.approved,
                sel.stale,
                sel.not_approved
            );
            selected
        }
        (None, Some(ApprovalNeed::GuardTripped)) => {
            eprintln!(
                "error: {}: {} Nothing was written. Fix the source or raise spec.maxAllowedDeletions and run dirsync apply again; or, if these deletions are right, review them (dirsync plan --out plan.csv) and apply exactly them with dirsync apply --approved-preview plan.csv",
                Reason::DeletionThresholdExceeded,
                planned.guard.message().unwrap_or_default()
            );
            return Ok(exit::GUARD_TRIPPED);
        }
        (None, Some(ApprovalNeed::Policy)) => {
            eprintln!(
                "error: {}: spec.approval is {} and this plan writes{}; nothing was written. Review it (dirsync plan --out plan.csv), then run dirsync apply --approved-preview plan.csv",
                Reason::AwaitingApproval,
                s.resource.spec.approval.as_str(),
                if planned.plan.deletions() > 0 {
                    " and deletes or deactivates"
                } else {
                    ""
                }
            );
            return Ok(exit::AWAITING_APPROVAL);
        }
        (None, None) => planned,
    };
    let total = planned.plan.writes();
    if total > 0 {
        eprintln!("dirsync: applying {total} changes ...");
    }
    let started = Instant::now();
    let opts = ApplyOptions {
        concurrency: usize::from(args.concurrency),
        ..ApplyOptions::default()
    };
    let mut observer = CliObserver {
        state,
        last: Instant::now(),
        save_error: None,
    };
    let outcome = engine::apply_run(&planned, s.destination(), &opts, &mut observer).await;
    // The new link is kept only now that the apply finished (docs/behaviour.md §7).
    if let Some(next) = incremental::after_apply(
        prior_delta.as_ref(),
        &AppliedRun {
            kind: planned.kind,
            new_link: new_link.as_deref(),
            started_at,
            fingerprint: &fingerprint,
            result: outcome.result,
            met_changed_destination: outcome.met_changed_destination,
            read_changes,
            retry: &planned.plan.retry_source_ids,
            partial_plan: selection.is_some(),
        },
    ) {
        state.set_delta(Some(next));
    }
    if let Some(set) = &outcome.managed {
        state
            .save(set)
            .await
            .map_err(|e| Failure::Run(format!("{}: {e}", state.path().display())))?;
    }
    if let Some(e) = observer.save_error {
        eprintln!(
            "warning: a checkpoint of {} failed: {e}",
            state.path().display()
        );
    }
    let restored = match outcome.restored {
        0 => String::new(),
        n => format!(", {n} restored from deleted items"),
    };
    eprintln!(
        "dirsync: {} created{restored}, {} updated, {} deleted or deactivated in {:.1}s; {} managed users recorded in {}",
        outcome.created,
        outcome.updated,
        outcome.deleted,
        started.elapsed().as_secs_f64(),
        outcome
            .managed
            .as_ref()
            .map_or(managed.len(), ManagedSet::len),
        state.path().display()
    );
    if let Some(sel) = selection {
        eprintln!(
            "dirsync: approved preview: {} rows applied, {} stale, {} not approved",
            (outcome.created + outcome.restored + outcome.updated + outcome.deleted),
            sel.stale,
            sel.not_approved
        );
    }
    // Users created in Entra ID get a random password and sign in through the federated
    // service (docs/behaviour.md §6); only SCIM users are created without one.
    if outcome.created > 0 && s.direction == Direction::EntraIdToScim {
        eprintln!(
            "dirsync: note: users created by a sync have no password; an administrator must set an initial password"
        );
    }
    for r in &outcome.replanned {
        // A 409 on create, or a user the destination refused (Entra ID's privileged users).
        let why = if r.detail.contains("not allowed to write this user") {
            "left alone, the destination refused the write"
        } else {
            "re-planned after 409 on create"
        };
        eprintln!(
            "dirsync: {why}: {} -> {} ({})",
            terminal_safe(&r.user_name),
            r.action.as_str(),
            terminal_safe(&r.detail)
        );
    }
    for f in &outcome.failures {
        eprintln!(
            "dirsync: FAILED {} {}: {}",
            f.action.as_str(),
            terminal_safe(&f.user_name),
            terminal_safe(&f.reason)
        );
    }
    if let Some(e) = &outcome.aborted {
        let what = match e {
            DirectoryError::InvalidCredentials(_) => s.refused_credentials(Side::Destination),
            DirectoryError::EndpointNotAllowed(_) => {
                format!("the endpoint of {} was refused", s.name(Side::Destination))
            }
            _ => "the destination stopped accepting writes".to_string(),
        };
        eprintln!(
            "error: {}: {what} mid-run ({}); {} changes were not attempted",
            Reason::of_directory_error(e, Side::Destination),
            terminal_safe(&e.to_string()),
            outcome.not_attempted
        );
        return Ok(exit::ERROR);
    }
    Ok(match outcome.result {
        RunResult::Success | RunResult::NoSourceUsers => exit::DONE,
        RunResult::PartiallyFailed => {
            eprintln!(
                "error: {}: {} of {total} changes failed (listed above)",
                Reason::PartiallyFailed,
                outcome.failures.len()
            );
            exit::PARTIALLY_FAILED
        }
        RunResult::GuardTripped => exit::GUARD_TRIPPED,
    })
}
