//! Shared parts of the on-demand benchmarks (benches/*.rs, `harness = false`); see
//! docs/benchmarks.md. They run the `dirsync` binary cargo builds for them (the `bench`
//! profile, i.e. release) against the Graph emulator and scim2-server, and print figures.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dirsync_testenv::emulator::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, Emulator,
};

pub const SCIM_TOKEN: &str = "bench-scim-token";

/// A number after `--NAME` on the command line (cargo bench passes its own `--bench` too).
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} {v}: not a number"))
        })
        .unwrap_or(default)
}

/// The 1-minute load average; warns when the machine is busy (figures would be unreliable).
pub fn check_load() -> f64 {
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    println!("machine: {cpus} CPUs, load average {load:.2} at start");
    if load > 1.5 {
        println!(
            "WARNING: load average {load:.2} > 1.5 — other work competes for the CPUs; figures will be pessimistic"
        );
    }
    load
}

/// The resource and secrets files for the emulator's generated tenant.
pub fn write_inputs(dir: &Path, emu: &Emulator, scim_base: &str) {
    let resource = format!(
        "apiVersion: dirsync.io/v1alpha1
kind: DirectorySync
metadata: {{name: bench, namespace: bench}}
spec:
  domain: example.com
  upnMode: Enabled
  maxAllowedDeletions: 65
  source:
    entraID:
      tenantID: {DEFAULT_TENANT_ID}
      clientID: {DEFAULT_CLIENT_ID}
      clientSecretRef: {{name: entra-app, key: client-secret}}
      authorityHost: {base}
      graphEndpoint: {base}
  destination:
    scim:
      endpoint: {scim_base}
      bearerTokenRef: {{name: scim, key: token}}
",
        base = emu.base_url()
    );
    let secrets = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: entra-app}}\nstringData: {{client-secret: {DEFAULT_CLIENT_SECRET}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: scim}}\nstringData: {{token: {SCIM_TOKEN}}}\n"
    );
    std::fs::write(dir.join("resource.yaml"), resource).unwrap();
    std::fs::write(dir.join("secrets.yaml"), secrets).unwrap();
}

/// `COMMAND -f resource.yaml --secrets secrets.yaml --ca-file CA` plus `extra`.
pub fn dirsync_args(command: &str, emu: &Emulator, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        command,
        "-f",
        "resource.yaml",
        "--secrets",
        "secrets.yaml",
        "--ca-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(emu.ca_file().display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// One measured dirsync run.
#[derive(Debug, Clone)]
pub struct Measured {
    pub code: i32,
    pub wall: Duration,
    /// Peak resident set (`VmHWM` of /proc/PID/status), KiB.
    pub peak_rss_kib: u64,
    pub stderr: String,
}

impl Measured {
    pub fn peak_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }

    /// The seconds dirsync reports for its reads ("read N source and M destination users in Xs").
    pub fn read_secs(&self) -> Option<f64> {
        self.stderr
            .lines()
            .find(|l| l.contains("destination users in"))
            .and_then(|l| l.rsplit(" in ").next())
            .and_then(|v| v.trim_end_matches('s').parse().ok())
    }

    /// The seconds dirsync reports for applying ("... deleted or deactivated in Xs; ...").
    pub fn apply_secs(&self) -> Option<f64> {
        self.stderr
            .lines()
            .find(|l| l.contains("deleted or deactivated in"))
            .and_then(|l| l.split(" in ").nth(1))
            .and_then(|v| v.split('s').next())
            .and_then(|v| v.parse().ok())
    }
}

/// Runs the dirsync binary in `cwd`, sampling its peak RSS (`VmHWM`, the kernel's high-water
/// mark) every 2 ms; stdout goes to /dev/null (use `--out` for the CSV).
pub fn run_measured(args: &[String], cwd: &Path) -> Measured {
    let err = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed();
    let stderr = std::fs::read_to_string(err.path()).unwrap();
    Measured {
        code: status.code().unwrap_or(-1),
        wall,
        peak_rss_kib: peak,
        stderr,
    }
}

/// User + system CPU seconds a process has used so far (/proc/PID/stat, 100 ticks/s).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A reqwest client for plain-http loopback servers (keep-alive, no proxy).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(16)
        .build()
        .unwrap()
}

/// An app-only access token from the emulator's token endpoint (client credentials), fetched
/// with `client` (which must trust the emulator's CA).
pub async fn emulator_token(client: &reqwest::Client, emu: &Emulator) -> String {
    let v: serde_json::Value = client
        .post(format!(
            "{}/{DEFAULT_TENANT_ID}/oauth2/v2.0/token",
            emu.base_url()
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {v}"))
        .to_string()
}
