//! Benchmark: `dirsync plan` of a 100,000-user domain (ISSUE 3, docs/behaviour.md §7), run on demand:
//!
//! ```text
//! cargo build --release -p entra-emulator
//! cargo bench --bench plan_100k                    # 100,000 users
//! cargo bench --bench plan_100k -- --users 10000   # 10,000 users
//! cargo bench --bench plan_100k -- --runs 1        # one run of (a) and of (b) instead of three
//! ```
//!
//! (a) into an empty scim2-server, (b) against a scim2-server already holding those users
//! (seeded once with SCIM Bulk from plan (a)'s own CSV, then one `apply` to record the managed
//! set), each three times: wall time and peak RSS of the dirsync process. For (b) the SCIM
//! listing is also timed alone with a plain client, to show how much of (b) is the server's.
//! For (a) the Graph listing is timed alone likewise. See docs/benchmarks.md.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use dirsync_testenv::Scim2Server;
use dirsync_testenv::emulator::Emulator;
use serde_json::{Value, json};

fn main() {
    let users = arg("--users", 100_000);
    check_load();
    let t = Instant::now();
    let emu = Emulator::generated(users, "example.com");
    println!(
        "emulator: {users} generated users, HTTPS, started in {:.1} s",
        secs(t.elapsed())
    );
    let scim = Scim2Server::start(SCIM_TOKEN);
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &emu, &scim.base_url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // (a) into an empty destination.
    println!("\n(a) plan into an empty scim2-server");
    let a = measure(&emu, dir.path(), &["--out", "a.csv"]);
    let csv = std::fs::read_to_string(dir.path().join("a.csv")).unwrap();
    let rows = csv_rows(&csv);
    println!(
        "    preview: {} rows, {:.1} MB CSV",
        rows.len(),
        csv.len() as f64 / 1e6
    );
    let graph_alone = rt.block_on(graph_listing_secs(&emu));
    println!(
        "    Graph listing alone (plain reqwest client, same query and pages): {graph_alone:.2} s"
    );

    // Seed the destination with exactly those users.
    let adds: Vec<Value> = rows
        .iter()
        .filter(|r| r[0] == "Add")
        .map(|r| scim_user(r))
        .collect();
    let t = Instant::now();
    let (requests, failed) = rt.block_on(bulk_seed(&scim.base_url(), &adds));
    println!(
        "\nseeded {} users into scim2-server with SCIM Bulk ({requests} requests of up to 1000, {failed} failed) in {:.1} s",
        adds.len(),
        secs(t.elapsed())
    );
    let rec = run_measured(
        &dirsync_args("apply", &emu, &["--state", "state.json"]),
        dir.path(),
    );
    assert_eq!(
        rec.code, 0,
        "apply to record the managed set failed:\n{}",
        rec.stderr
    );
    let summary = rec
        .stderr
        .lines()
        .find(|l| l.contains("created,"))
        .unwrap_or("?")
        .to_string();
    println!(
        "recorded the managed set with one apply in {:.1} s: {summary}",
        secs(rec.wall)
    );

    // (b) against a destination that holds them.
    println!(
        "\n(b) plan against a scim2-server holding those users (--state with the managed set)"
    );
    let b = measure(
        &emu,
        dir.path(),
        &["--state", "state.json", "--out", "b.csv"],
    );
    let b_rows = csv_rows(&std::fs::read_to_string(dir.path().join("b.csv")).unwrap()).len();
    println!("    preview: {b_rows} rows (the rest unchanged)");
    let t = Instant::now();
    let listed = rt.block_on(scim_listing(&scim.base_url()));
    let scim_alone = secs(t.elapsed());
    println!(
        "    SCIM listing alone (plain reqwest client, {listed} users, 1000 per page, sequential): {scim_alone:.2} s"
    );

    // (c) apply with nothing changed: incremental (the kept delta link) beside full (--full),
    // against the same destination.
    println!("\n(c) apply with nothing changed since the last apply (--state)");
    let mut inc = Vec::new();
    for i in 1..=arg("--runs", 3) {
        emu.control("DELETE", "/requests", None)
            .expect("reset counters");
        let scim_before = scim.request_count();
        let m = run_measured(
            &dirsync_args("apply", &emu, &["--state", "state.json"]),
            dir.path(),
        );
        assert_eq!(m.code, 0, "incremental apply failed:\n{}", m.stderr);
        assert!(
            m.stderr.contains("incremental run"),
            "expected an incremental run:\n{}",
            m.stderr
        );
        let counters = emu.requests(0);
        let by = counters["byEndpoint"].clone();
        let graph = dirsync_testenv::emulator::api_requests(&counters);
        let tokens = by["token"].as_u64().unwrap_or(0);
        let scim_used = scim.request_count() - scim_before;
        println!(
            "    incremental run {i}: {:6.2} s wall, peak RSS {:6.1} MiB; {graph} Graph API requests (+{tokens} token), {scim_used} SCIM requests",
            secs(m.wall),
            m.peak_mib(),
        );
        assert!(graph <= 2 && tokens <= 1 && scim_used == 0, "{by}");
        inc.push(m);
    }
    let scim_before = scim.request_count();
    let full = run_measured(
        &dirsync_args("apply", &emu, &["--state", "state.json", "--full"]),
        dir.path(),
    );
    assert_eq!(full.code, 0, "full apply failed:\n{}", full.stderr);
    println!(
        "    full run (--full): {:6.2} s wall, peak RSS {:6.1} MiB; {} SCIM requests; {}",
        secs(full.wall),
        full.peak_mib(),
        scim.request_count() - scim_before,
        full.stderr
            .lines()
            .find(|l| l.contains("created,"))
            .unwrap_or("?")
    );

    let (aw, am) = medians(&a);
    let (bw, bm) = medians(&b);
    let (cw, cm) = medians(&inc);
    println!(
        "\nsummary ({users} generated users; {} in scope)",
        adds.len()
    );
    println!(
        "  (a) empty destination : median {aw:6.2} s, peak RSS {am:6.1} MiB   (target < 2 s, < 100 MiB)"
    );
    println!("      of which the Graph listing alone takes {graph_alone:.2} s");
    println!("  (b) full destination  : median {bw:6.2} s, peak RSS {bm:6.1} MiB");
    println!(
        "      of which the SCIM listing alone takes {scim_alone:.2} s ({:.0} % of the run)",
        100.0 * scim_alone / bw
    );
    println!(
        "  (c) apply, nothing changed: incremental median {cw:6.2} s, peak RSS {cm:6.1} MiB; full (--full) {:6.2} s, peak RSS {:6.1} MiB",
        secs(full.wall),
        full.peak_mib()
    );
}

fn measure(emu: &Emulator, dir: &std::path::Path, extra: &[&str]) -> Vec<Measured> {
    let mut out = Vec::new();
    for i in 1..=arg("--runs", 3) {
        let m = run_measured(&dirsync_args("plan", emu, extra), dir);
        assert_eq!(m.code, 0, "dirsync plan failed:\n{}", m.stderr);
        println!(
            "    run {i}: {:6.2} s wall, peak RSS {:6.1} MiB (dirsync reports its reads took {:.1} s)",
            secs(m.wall),
            m.peak_mib(),
            m.read_secs().unwrap_or(f64::NAN)
        );
        out.push(m);
    }
    out
}

fn medians(v: &[Measured]) -> (f64, f64) {
    let mut w: Vec<f64> = v.iter().map(|m| secs(m.wall)).collect();
    let mut r: Vec<f64> = v.iter().map(Measured::peak_mib).collect();
    (median(&mut w), median(&mut r))
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let body = text.trim_start_matches('\u{feff}');
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body.as_bytes());
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Undoes the preview's formula-injection prefix (docs/behaviour.md §4).
fn cell(s: &str) -> Option<String> {
    let s = match s.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => s,
    };
    (!s.is_empty()).then(|| s.to_string())
}

/// The SCIM user a preview Add row describes (what dirsync would create).
fn scim_user(r: &[String]) -> Value {
    // action,userName,userPrincipalName,displayName,givenName,surname,email,active,changes,immutableId
    let mut u = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": cell(&r[1]),
        "active": r[7] == "true",
        "externalId": cell(&r[9]),
    });
    if let Some(d) = cell(&r[3]) {
        u["displayName"] = json!(d);
    }
    let mut name = serde_json::Map::new();
    if let Some(g) = cell(&r[4]) {
        name.insert("givenName".into(), json!(g));
    }
    if let Some(f) = cell(&r[5]) {
        name.insert("familyName".into(), json!(f));
    }
    if !name.is_empty() {
        u["name"] = Value::Object(name);
    }
    if let Some(e) = cell(&r[6]) {
        u["emails"] = json!([{"value": e, "type": "work", "primary": true}]);
    }
    u
}

/// POSTs the users to `/Bulk` in batches of 1000; returns (requests, failed operations).
async fn bulk_seed(base: &str, users: &[Value]) -> (usize, usize) {
    let client = http_client();
    let mut failed = 0;
    let mut requests = 0;
    for (b, chunk) in users.chunks(1000).enumerate() {
        let ops: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, u)| json!({"method": "POST", "path": "/Users", "bulkId": format!("b{b}-{i}"), "data": u}))
            .collect();
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "failOnErrors": 0, "Operations": ops});
        let resp = client
            .post(format!("{base}/Bulk"))
            .bearer_auth(SCIM_TOKEN)
            .header("Content-Type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        requests += 1;
        assert!(
            resp.status().is_success(),
            "bulk request: HTTP {}",
            resp.status()
        );
        let v: Value = resp.json().await.unwrap();
        failed += v["Operations"]
            .as_array()
            .map(|ops| {
                ops.iter()
                    .filter(|o| o["status"].as_str().is_none_or(|s| !s.starts_with('2')))
                    .count()
            })
            .unwrap_or(chunk.len());
    }
    (requests, failed)
}

/// Pages through `/Users` like dirsync does (1000 per page, sequential); returns the count.
async fn scim_listing(base: &str) -> usize {
    let client = http_client();
    let mut seen = 0usize;
    loop {
        let v: Value = client
            .get(format!("{base}/Users?startIndex={}&count=1000", seen + 1))
            .bearer_auth(SCIM_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = v["Resources"].as_array().map_or(0, Vec::len);
        seen += n;
        if n == 0 || seen as u64 >= v["totalResults"].as_u64().unwrap_or(0) {
            return seen;
        }
    }
}

/// Reads the domain's users from the emulator like dirsync does (token, `$select`, `$filter`
/// endswith, `$count`, `$top=999`, every nextLink), with a plain reqwest client.
async fn graph_listing_secs(emu: &Emulator) -> f64 {
    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        for c in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap();
    let t = Instant::now();
    let token = emulator_token(&client, emu).await;
    let select = "id,userPrincipalName,displayName,givenName,surname,mail,proxyAddresses,accountEnabled,userType,onPremisesImmutableId";
    let mut url = format!(
        "{}/v1.0/users?$select={select}&$filter=endswith(userPrincipalName,'@example.com')&$count=true&$top=999",
        emu.base_url()
    );
    let mut n = 0;
    loop {
        let page: Value = client
            .get(&url)
            .bearer_auth(&token)
            .header("ConsistencyLevel", "eventual")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        n += page["value"].as_array().map_or(0, Vec::len);
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert!(n > 0, "the Graph listing returned no users");
    secs(t.elapsed())
}
