//! Benchmark: `dirsync apply` of 10,000 adds into scim2-server, next to a plain sequential
//! client (one reqwest POST after another, keep-alive) against a fresh server each time, in the
//! same run; median of three runs each, and the ratio. Run on demand:
//!
//! ```text
//! cargo build --release -p entra-emulator
//! cargo bench --bench apply_10k                   # 10,000 users, 3 runs each
//! cargo bench --bench apply_10k -- --users 2000 --runs 1
//! ```
//!
//! Both clients send the same users (the emulator tenant's, mapped as dirsync maps them), each
//! run into a fresh, empty scim2-server; the order alternates so drift hits both alike. The
//! server's own CPU time is sampled to show whether it is the bottleneck. See
//! docs/benchmarks.md.

mod common;

use std::time::Instant;

use common::*;
use dirsync_testenv::Scim2Server;
use dirsync_testenv::emulator::Emulator;
use serde_json::{Value, json};

fn main() {
    let users = arg("--users", 10_000) as u32;
    let runs = arg("--runs", 3);
    let concurrency = arg("--concurrency", 8);
    check_load();
    let fixture = tenant(users);
    let emu = Emulator::with_tenant(&fixture);
    let bodies: Vec<String> = fixture["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| create_body(u).to_string())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{users} users to add; {runs} runs each; dirsync --concurrency {concurrency}\n");

    let mut dirsync_rates = Vec::new();
    let mut dirsync_apply_rates = Vec::new();
    let mut seq_rates = Vec::new();
    let mut server_busy = Vec::new();
    for run in 1..=runs {
        let order: &[bool] = if run % 2 == 1 {
            &[true, false]
        } else {
            &[false, true]
        };
        for &is_dirsync in order {
            let scim = Scim2Server::start(SCIM_TOKEN);
            let cpu0 = cpu_secs(scim.pid());
            if is_dirsync {
                let dir = tempfile::tempdir().unwrap();
                write_inputs(dir.path(), &emu, &scim.base_url());
                let c = concurrency.to_string();
                let m = run_measured(
                    &dirsync_args(
                        "apply",
                        &emu,
                        &["--state", "state.json", "--concurrency", &c],
                    ),
                    dir.path(),
                );
                assert_eq!(m.code, 0, "dirsync apply failed:\n{}", m.stderr);
                assert!(
                    m.stderr.contains(&format!("{users} created")),
                    "{}",
                    m.stderr
                );
                let busy = (cpu_secs(scim.pid()) - cpu0) / secs(m.wall);
                let rate = f64::from(users) / secs(m.wall);
                let apply_rate = m
                    .apply_secs()
                    .map(|s| f64::from(users) / s)
                    .unwrap_or(f64::NAN);
                println!(
                    "run {run} dirsync    : {:7.2} s wall = {rate:6.1} users/s ({apply_rate:6.1} users/s in the apply phase), \
                     peak RSS {:5.1} MiB, scim2-server busy {:3.0} % of one CPU",
                    secs(m.wall),
                    m.peak_mib(),
                    100.0 * busy
                );
                dirsync_rates.push(rate);
                dirsync_apply_rates.push(apply_rate);
                server_busy.push(busy);
            } else {
                let t = Instant::now();
                rt.block_on(sequential(&scim.base_url(), &bodies));
                let wall = secs(t.elapsed());
                let busy = (cpu_secs(scim.pid()) - cpu0) / wall;
                let rate = f64::from(users) / wall;
                println!(
                    "run {run} sequential : {wall:7.2} s wall = {rate:6.1} users/s, scim2-server busy {:3.0} % of one CPU",
                    100.0 * busy
                );
                seq_rates.push(rate);
                server_busy.push(busy);
            }
            assert_eq!(
                count(&rt, &scim.base_url()),
                users as usize,
                "not every user arrived"
            );
        }
    }
    let d = median(&mut dirsync_rates);
    let da = median(&mut dirsync_apply_rates);
    let s = median(&mut seq_rates);
    let busy = median(&mut server_busy);
    println!(
        "\nmedian of {runs}: dirsync {d:.1} users/s (whole command; {da:.1} users/s while applying), sequential client {s:.1} users/s"
    );
    println!(
        "ratio dirsync / sequential: {:.2}x (target >= 0.95x)",
        d / s
    );
    println!(
        "scim2-server used {:.0} % of one CPU during the runs (median): {}",
        100.0 * busy,
        if busy > 0.85 {
            "the server is the bottleneck"
        } else {
            "the server is not saturated"
        }
    );
}

/// A tenant of `n` plain members on example.com, with the emulator's default app.
fn tenant(n: u32) -> Value {
    let users: Vec<Value> = (1..=n)
        .map(|i| {
            json!({
                "id": format!("{i:08x}-5b1c-4d2e-8f3a-{:012x}", u64::from(i) * 104_729),
                "userPrincipalName": format!("user{i:05}@example.com"),
                "displayName": format!("Given{i} Surname{i}"),
                "givenName": format!("Given{i}"),
                "surname": format!("Surname{i}"),
                "mail": format!("user{i:05}@example.com"),
                "accountEnabled": true,
                "userType": "Member",
                "proxyAddresses": [],
                "onPremisesImmutableId": null,
            })
        })
        .collect();
    json!({
        "tenantId": dirsync_testenv::emulator::DEFAULT_TENANT_ID,
        "domains": [{"id": "example.com"}],
        "applications": [{"clientId": dirsync_testenv::emulator::DEFAULT_CLIENT_ID,
                          "clientSecret": dirsync_testenv::emulator::DEFAULT_CLIENT_SECRET}],
        "users": users,
    })
}

/// The create body dirsync sends for this Graph user (docs/behaviour.md §2.2), so both clients do the same
/// work. The Immutable ID is the object id in .NET GUID byte order, base64.
fn create_body(u: &Value) -> Value {
    use base64::Engine as _;
    let hex: String = u["id"]
        .as_str()
        .unwrap()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut net = Vec::with_capacity(16);
    net.extend(b[0..4].iter().rev());
    net.extend(b[4..6].iter().rev());
    net.extend(b[6..8].iter().rev());
    net.extend_from_slice(&b[8..16]);
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": u["userPrincipalName"],
        "name": {"givenName": u["givenName"], "familyName": u["surname"]},
        "displayName": u["displayName"],
        "emails": [{"value": u["mail"], "type": "work", "primary": true}],
        "active": true,
        "externalId": base64::engine::general_purpose::STANDARD.encode(net),
    })
}

/// One POST after another on a keep-alive connection.
async fn sequential(base: &str, bodies: &[String]) {
    let client = http_client();
    let url = format!("{base}/Users");
    for b in bodies {
        let resp = client
            .post(&url)
            .bearer_auth(SCIM_TOKEN)
            .header("Content-Type", "application/scim+json")
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "sequential create");
        let _ = resp.bytes().await.unwrap();
    }
}

fn count(rt: &tokio::runtime::Runtime, base: &str) -> usize {
    rt.block_on(async {
        let v: Value = http_client()
            .get(format!("{base}/Users?count=1"))
            .bearer_auth(SCIM_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["totalResults"].as_u64().unwrap_or(0) as usize
    })
}
