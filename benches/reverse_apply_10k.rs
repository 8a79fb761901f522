//! Benchmark: the reverse direction's apply rate (docs/behaviour.md §6) — 10,000 users created
//! in Entra ID through Graph (`POST /v1.0/users`, one per user) against the Graph emulator, in
//! one run:
//!
//! 1. with the emulator's default write limit (3,000 writes per 150 s per app and tenant) and
//!    dirsync's default pacing (90 % of that): writes/s, elapsed, failed users, 429s seen;
//! 2. with the limit off (`writeLimit: 0`) and dirsync's pacing off ([`WritePacing::OFF`]),
//!    beside a plain sequential Graph client (one reqwest POST after another, keep-alive, a
//!    token from the emulator's token endpoint, the same user bodies); median of three runs
//!    each, order alternating, and the ratio.
//!
//! dirsync runs as the library (`plan_run` + `apply_run` with a `GraphClient` built as the CLI
//! builds it), its source an in-memory directory of SCIM users (the core's `FakeDirectory`).
//! Every run starts from the emulator's reset tenant (so the same users are created each time).
//! Run on demand:
//!
//! ```text
//! cargo build --release -p entra-emulator
//! cargo bench --bench reverse_apply_10k                       # 10,000 users, ~10 min
//! cargo bench --bench reverse_apply_10k -- --users 4000 --runs 1
//! ```
//!
//! See docs/benchmarks.md.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dirsync::clients::graph::{
    DEFAULT_WRITE_LIMIT, DEFAULT_WRITE_WINDOW, GraphClient, GraphConfig, GraphCredential,
    WritePacing, mail_nickname, random_password,
};
use dirsync::clients::outbound::HttpConfig;
use dirsync::directory::{DesiredUser, User};
use dirsync::sync::mapping::Mapped;
use dirsync::sync::plan::Action;
use dirsync::sync::reverse::map_scim_user;
use dirsync::sync::testing::FakeDirectory;
use dirsync::sync::{
    ApplyOptions, Direction, ManagedSet, OtherResources, RunResult, SyncConfig, UpnMode, apply_run,
    plan_run,
};
use dirsync_testenv::emulator::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, Emulator,
};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

const DOMAIN: &str = "example.com";
/// The share of Graph's limit dirsync's pacer uses (src/clients/graph/pacing.rs, `HEADROOM`).
const PACER_HEADROOM: f64 = 0.9;

fn main() {
    let users = arg("--users", 10_000);
    let runs = arg("--runs", 3);
    let concurrency = arg("--concurrency", 8);
    check_load();
    let emu = Emulator::with_tenant(&tenant());
    let base_users = tenant_users(&emu);
    let source = scim_users(users);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{users} users to create in Entra ID (the emulator, HTTPS; users in its tenant at start: {base_users}); \
         dirsync apply concurrency {concurrency}\n"
    );

    // 1. Graph's default write limit, dirsync's default pacing.
    let limit = DEFAULT_WRITE_LIMIT;
    let window = DEFAULT_WRITE_WINDOW.as_secs();
    let burst = (f64::from(limit) * PACER_HEADROOM) as usize;
    let paced_rate = f64::from(limit) * PACER_HEADROOM / window as f64;
    emu.reset();
    set_write_limit(&emu, u64::from(limit), window);
    println!(
        "1. write limit {limit} per {window} s (the emulator's default: a burst of {limit}, then {:.0}/s); \
         dirsync's default pacing (a burst of {burst}, then {paced_rate:.0}/s)",
        f64::from(limit) / window as f64
    );
    let cpu0 = cpu_secs(emu.pid());
    let r = rt.block_on(dirsync_run(
        &emu,
        &source,
        WritePacing::default(),
        concurrency,
        Some((burst, paced_rate)),
    ));
    let busy = (cpu_secs(emu.pid()) - cpu0) / secs(r.plan + r.apply);
    let w = writes(&emu);
    let created = r.created;
    let rate = created as f64 / secs(r.apply);
    println!(
        "   dirsync    : {created} created in {:.1} s ({:.0} min {:02.0} s) = {rate:5.1} writes/s; plan {:.2} s; \
         failed users {}; emulator: {} writes succeeded, {} throttled (429), {} failed; busy {:.0} % of one CPU",
        secs(r.apply),
        (secs(r.apply) / 60.0).floor(),
        secs(r.apply) % 60.0,
        secs(r.plan),
        r.failed,
        w.succeeded,
        w.throttled,
        w.failed,
        100.0 * busy
    );
    if let Some(s) = &r.steady {
        println!(
            "   the pacer's bucket ran dry at write {} after {:.1} s; from write {} on, {} writes in {:.1} s = {:5.2} writes/s \
             (the pacer's rate {paced_rate:.0}/s, Graph's limit {:.0}/s)",
            s.dry_at,
            secs(s.dry_time),
            s.from_write,
            s.writes,
            secs(s.took),
            s.writes as f64 / secs(s.took),
            f64::from(limit) / window as f64
        );
    }
    // What a client that spent the emulator's whole bucket could do: the burst (taken at the
    // unlimited rate of part 2, ignored here) then the refill rate.
    let best = users.saturating_sub(limit as usize) as f64 * window as f64 / f64::from(limit);
    if best > 0.0 {
        println!(
            "   the limit admits {users} writes in no less than {best:.0} s (a burst of {limit}, then {:.0}/s) = \
             at most {:.1} writes/s: dirsync reaches {:.0} % of that",
            f64::from(limit) / window as f64,
            users as f64 / best,
            100.0 * rate / (users as f64 / best)
        );
    }
    assert_eq!(
        r.result,
        RunResult::Success,
        "the paced apply did not succeed"
    );
    assert_eq!(created, users, "not every user was created");
    assert_eq!(r.failed, 0, "failed users");
    assert_eq!(
        tenant_users(&emu),
        base_users + users,
        "users in the tenant"
    );

    // 2. No limit, no pacing: dirsync beside a plain sequential client.
    println!(
        "\n2. write limit off (writeLimit 0), dirsync's pacing off (WritePacing::OFF); {runs} runs each, \
         the tenant reset before each"
    );
    let bodies: Vec<String> = source
        .iter()
        .map(|u| create_body(&desired(u)).to_string())
        .collect();
    let mut dirsync_rates = Vec::new();
    let mut seq_rates = Vec::new();
    let mut busy_d = Vec::new();
    let mut busy_s = Vec::new();
    for run in 1..=runs {
        let order: &[bool] = if run % 2 == 1 {
            &[true, false]
        } else {
            &[false, true]
        };
        for &is_dirsync in order {
            emu.reset();
            set_write_limit(&emu, 0, window);
            let cpu0 = cpu_secs(emu.pid());
            if is_dirsync {
                let r = rt.block_on(dirsync_run(
                    &emu,
                    &source,
                    WritePacing::OFF,
                    concurrency,
                    None,
                ));
                let busy = (cpu_secs(emu.pid()) - cpu0) / secs(r.plan + r.apply);
                assert_eq!(r.result, RunResult::Success, "the unpaced apply");
                assert_eq!(r.created, users, "not every user was created");
                let rate = users as f64 / secs(r.apply);
                println!(
                    "   run {run} dirsync    : {:6.2} s applying = {rate:6.1} writes/s (plan {:.2} s), \
                     emulator busy {:3.0} % of one CPU",
                    secs(r.apply),
                    secs(r.plan),
                    100.0 * busy
                );
                dirsync_rates.push(rate);
                busy_d.push(busy);
            } else {
                let token = rt.block_on(emulator_token(&tls_client(&emu), &emu));
                let t = Instant::now();
                rt.block_on(sequential(&emu, &token, &bodies));
                let wall = t.elapsed();
                let busy = (cpu_secs(emu.pid()) - cpu0) / secs(wall);
                let rate = users as f64 / secs(wall);
                println!(
                    "   run {run} sequential : {:6.2} s            = {rate:6.1} writes/s, \
                     emulator busy {:3.0} % of one CPU",
                    secs(wall),
                    100.0 * busy
                );
                seq_rates.push(rate);
                busy_s.push(busy);
            }
            let w = writes(&emu);
            assert_eq!(
                (w.succeeded, w.throttled, w.failed),
                (users as u64, 0, 0),
                "writes (succeeded, throttled, failed) the emulator counted"
            );
            assert_eq!(
                tenant_users(&emu),
                base_users + users,
                "users in the tenant"
            );
        }
    }
    let d = median(&mut dirsync_rates);
    let s = median(&mut seq_rates);
    println!(
        "\n   median of {runs}: dirsync {d:.1} writes/s, sequential client {s:.1} writes/s; \
         ratio dirsync / sequential {:.2}x",
        d / s
    );
    println!(
        "   emulator CPU while writing (median): {:.0} % of one CPU under dirsync, {:.0} % under the sequential client",
        100.0 * median(&mut busy_d),
        100.0 * median(&mut busy_s)
    );
    if d > rate {
        println!(
            "\nwith Graph's write limit on, the limit sets the pace: part 1's {rate:.1} writes/s is {:.0}x below dirsync unpaced",
            d / rate
        );
    }
    // `emu` is dropped here: the emulator is stopped.
}

/// An almost empty tenant: the domain, one administrator in the initial domain, and the app with
/// the write permission.
fn tenant() -> Value {
    json!({
        "tenantId": DEFAULT_TENANT_ID,
        "domains": [{"id": DOMAIN}],
        "applications": [{
            "clientId": DEFAULT_CLIENT_ID,
            "clientSecret": DEFAULT_CLIENT_SECRET,
            "roles": ["User.Read.All", "User.ReadWrite.All", "Domain.Read.All"],
        }],
        "users": [{
            "userPrincipalName": "admin@example.onmicrosoft.com",
            "displayName": "Administrator",
            "accountEnabled": true,
        }],
    })
}

/// `n` users as a SCIM source gives them: a server-assigned `id`, `userName` = the UPN, names,
/// a work email, active, no `externalId` (so the Immutable ID is derived from the `id`).
fn scim_users(n: usize) -> Vec<User> {
    (1..=n as u64)
        .map(|i| User {
            id: format!("{i:08x}-7c2d-4e1f-9a3b-{:012x}", i * 104_729),
            user_name: format!("user{i:05}@{DOMAIN}"),
            display_name: Some(format!("Given{i} Surname{i}")),
            given_name: Some(format!("Given{i}")),
            surname: Some(format!("Surname{i}")),
            email: Some(format!("user{i:05}@{DOMAIN}")),
            active: true,
            ..User::default()
        })
        .collect()
}

fn sync_config() -> SyncConfig {
    let mut cfg = SyncConfig::new(DOMAIN, UpnMode::Enabled, 65);
    cfg.direction = Direction::ScimToEntraId;
    cfg
}

/// The Entra user dirsync creates for this SCIM user (the core's reverse mapping).
fn desired(u: &User) -> DesiredUser {
    let cfg = sync_config();
    match map_scim_user(&cfg, &cfg.domain_suffix(), u.clone()) {
        Ok(Mapped::User(m)) => m.desired,
        other => panic!("{}: not mapped to a user: {other:?}", u.user_name),
    }
}

/// The body dirsync's Graph client sends to create this user (src/clients/graph/writes.rs,
/// `create_body`), with a fresh random password of its generator.
fn create_body(d: &DesiredUser) -> Value {
    let upn = d.upn.as_deref().unwrap_or(&d.user_name);
    let password = random_password().unwrap();
    json!({
        "accountEnabled": d.active,
        "displayName": d.display_name,
        "mailNickname": mail_nickname(upn),
        "userPrincipalName": upn,
        "onPremisesImmutableId": d.immutable_id,
        "passwordProfile": {
            "forceChangePasswordNextSignIn": false,
            "password": password.expose_secret(),
        },
        "givenName": d.given_name,
        "surname": d.surname,
    })
}

/// A Graph client built as the CLI builds one (src/cli/standalone.rs `setup`): client secret,
/// the emulator as authority and Graph endpoint, its CA trusted, default HTTP settings.
fn graph_client(emu: &Emulator, pacing: WritePacing) -> GraphClient {
    let mut cfg = GraphConfig::new(
        DEFAULT_TENANT_ID,
        DEFAULT_CLIENT_ID,
        GraphCredential::ClientSecret(DEFAULT_CLIENT_SECRET.to_string().into()),
    );
    cfg.authority_host = emu.base_url().parse().unwrap();
    cfg.graph_endpoint = emu.base_url().parse().unwrap();
    cfg.http = HttpConfig {
        extra_ca_pem: Some(emu.ca_pem().as_bytes().to_vec()),
        ..HttpConfig::default()
    };
    cfg.write_pacing = pacing;
    GraphClient::new(cfg).unwrap()
}

/// One dirsync run.
struct DirsyncRun {
    result: RunResult,
    plan: Duration,
    apply: Duration,
    created: usize,
    failed: usize,
    /// The paced part of the apply, once the pacer's bucket ran dry.
    steady: Option<Steady>,
}

struct Steady {
    /// The write at which the pacer's bucket ran dry, and when (since the apply started).
    dry_at: usize,
    dry_time: Duration,
    /// The write the paced rate is measured from.
    from_write: usize,
    /// Writes finished after it, and how long they took.
    writes: usize,
    took: Duration,
}

/// Plans and applies `source` into the emulator's Entra ID. With `paced` (the pacer's burst and
/// rate), prints progress every 1,000 writes and times the writes made after its bucket ran
/// dry.
async fn dirsync_run(
    emu: &Emulator,
    source: &[User],
    pacing: WritePacing,
    concurrency: usize,
    paced: Option<(usize, f64)>,
) -> DirsyncRun {
    let src = FakeDirectory::with_users(source.iter().cloned());
    let graph = graph_client(emu, pacing);
    let cfg = sync_config();
    let t = Instant::now();
    let planned = plan_run(
        &src,
        &graph,
        &cfg,
        &ManagedSet::new(),
        &OtherResources::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("plan: {e}"));
    let plan = t.elapsed();
    assert_eq!(
        planned.plan.count(Action::Add),
        source.len(),
        "every source user should be an Add row"
    );
    assert!(!planned.guard.tripped);
    let opts = ApplyOptions {
        concurrency,
        ..ApplyOptions::default()
    };
    let t = Instant::now();
    // When each write finished (`done` counts up by one per finished write).
    let mut finished: Vec<Duration> = Vec::with_capacity(source.len());
    let mut progress = |done: usize, total: usize| {
        finished.push(t.elapsed());
        if paced.is_some() && (done.is_multiple_of(1000) || done == total) {
            println!(
                "     {done:6} of {total} writes after {:6.1} s",
                secs(t.elapsed())
            );
        }
    };
    let outcome = apply_run(&planned, &graph, &opts, &mut progress).await;
    let apply = t.elapsed();
    // The bucket is dry from the first write that finished (nearly) as late as the pacer's
    // schedule allows — the burst plus the refill since the start, less 10 tokens for the
    // writes' own latency (0.55 s at 18/s): every later write waited for its token.
    let steady = paced.and_then(|(burst, rate)| {
        let k = finished
            .iter()
            .enumerate()
            .position(|(i, at)| (i + 1) as f64 + 10.0 >= burst as f64 + rate * secs(*at))?;
        // Measured from 2 s of writes later, so that both ends sit on the schedule alike.
        let from = k + (2.0 * rate) as usize;
        let last = *finished.last()?;
        let writes = finished.len().checked_sub(from + 1)?;
        (writes > 0).then(|| Steady {
            dry_at: k + 1,
            dry_time: finished[k],
            from_write: from + 1,
            writes,
            took: last - finished[from],
        })
    });
    for f in outcome.failures.iter().take(5) {
        println!("     failed: {} {:?}: {}", f.user_name, f.action, f.reason);
    }
    DirsyncRun {
        result: outcome.result,
        plan,
        apply,
        created: outcome.created,
        failed: outcome.failures.len() + outcome.not_attempted,
        steady,
    }
}

/// A reqwest client trusting the emulator's CA, otherwise as dirsync's (keep-alive, no proxy).
fn tls_client(emu: &Emulator) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_merge([reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap()
}

async fn sequential(emu: &Emulator, token: &str, bodies: &[String]) {
    let client = tls_client(emu);
    let url = format!("{}/v1.0/users", emu.base_url());
    for b in bodies {
        let resp = client
            .post(&url)
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "sequential create");
        let _ = resp.bytes().await.unwrap();
    }
}

fn set_write_limit(emu: &Emulator, limit: u64, window: u64) {
    let (status, v) = emu
        .control(
            "PATCH",
            "/settings",
            Some(&json!({"writeLimit": limit, "writeWindowSeconds": window})),
        )
        .unwrap();
    assert_eq!(status, 200, "PATCH /_emulator/settings: {v}");
    assert_eq!(v["writeLimit"], json!(limit), "{v}");
}

/// Users in the emulator's tenant now.
fn tenant_users(emu: &Emulator) -> usize {
    let (_, v) = emu.control("GET", "/tenants", None).unwrap();
    v["tenants"][0]["users"].as_u64().unwrap_or(0) as usize
}

struct Writes {
    succeeded: u64,
    throttled: u64,
    failed: u64,
}

/// The emulator's write counters since the last reset.
fn writes(emu: &Emulator) -> Writes {
    let w = &emu.requests(0)["writes"];
    let n = |k: &str| w[k].as_u64().unwrap_or(0);
    Writes {
        succeeded: n("succeeded"),
        throttled: n("throttled"),
        failed: n("failed"),
    }
}
