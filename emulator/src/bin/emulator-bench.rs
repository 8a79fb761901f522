//! Benchmark: start `entra-emulator --generate N` (a child process, so its peak RSS can be
//! read), then list every user over HTTPS with `$top=999`, following `@odata.nextLink`.
//!
//! `cargo run --release -p entra-emulator --bin emulator-bench -- [--users 100000] [--rounds 3]`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

const SELECT: &str = "id,userPrincipalName,displayName,givenName,surname,mail,accountEnabled,onPremisesImmutableId,userType,jobTitle,department,employeeId,mobilePhone,businessPhones,preferredLanguage,usageLocation";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn list_all(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
) -> Result<(usize, usize, Duration), String> {
    let start = Instant::now();
    let mut url = format!("{base}/v1.0/users?{query}");
    let (mut users, mut pages) = (0usize, 0usize);
    loop {
        let resp = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        users += v["value"].as_array().map(Vec::len).unwrap_or(0);
        pages += 1;
        match v.get("@odata.nextLink").and_then(Value::as_str) {
            Some(n) => url = n.to_string(),
            None => break,
        }
    }
    Ok((users, pages, start.elapsed()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let n = arg("--users", 100_000);
    let rounds = arg("--rounds", 3);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let emulator = exe.with_file_name("entra-emulator");
    let dir = std::env::temp_dir().join(format!("emulator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ca = dir.join("ca.pem");
    let t0 = Instant::now();
    let mut child = Command::new(&emulator)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--generate",
            &n.to_string(),
            "--domain",
            "example.com",
            "--seed",
            "42",
        ])
        .arg("--tls-ca-out")
        .arg(&ca)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", emulator.display()))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let base = line.trim().to_string();
    println!(
        "emulator with {n} users ready in {:?} at {base}",
        t0.elapsed()
    );

    let pem = std::fs::read(&ca).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| format!("{e:?}"))?)
            .map_err(|e| e.to_string())?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| e.to_string())?;
    let tenant = entra_emulator::DEFAULT_TENANT_ID;
    let form = [
        ("client_id", entra_emulator::DEFAULT_CLIENT_ID),
        ("client_secret", entra_emulator::DEFAULT_CLIENT_SECRET),
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let body = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let tok: Value = client
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let token = tok["access_token"].as_str().ok_or("no token")?.to_string();

    let mut best = f64::MAX;
    for (label, q) in [
        ("default properties", "$top=999".to_string()),
        ("operator $select", format!("$top=999&$select={SELECT}")),
    ] {
        for r in 0..rounds {
            let cpu0 = cpu_secs(child.id());
            let (users, pages, took) = list_all(&client, &base, &token, &q).await?;
            let cpu = cpu_secs(child.id()) - cpu0;
            if users != n {
                return Err(format!("listed {users} users, expected {n}"));
            }
            if label == "default properties" {
                best = best.min(took.as_secs_f64());
            }
            println!(
                "{label:>20} round {}: {users} users in {pages} pages, {:.3} s (emulator CPU {cpu:.2} s)",
                r + 1,
                took.as_secs_f64()
            );
        }
    }
    let hwm = vm_hwm_kib(child.id()).unwrap_or(0);
    println!("best full listing (default properties, $top=999, HTTPS): {best:.3} s");
    println!("emulator peak RSS (VmHWM): {:.1} MiB", hwm as f64 / 1024.0);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
