//! Microsoft's own Python libraries (msal, azure-identity, msgraph-sdk) against the emulator
//! binary: a 2,500-user generated tenant listed through every nextLink, a wrong secret, and the
//! write side (issue #14): create, update, delete, restore, duplicate UPN, 403 without
//! `User.ReadWrite.All`.
//!
//! The venv comes from `DIRSYNC_VENV` (set by tools/test.sh); without it the test creates or
//! reuses `~/.cache/dirsync/venv` from tools/requirements.txt.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_entra-emulator");
const USERS: usize = 2500;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn venv() -> PathBuf {
    if let Ok(v) = std::env::var("DIRSYNC_VENV") {
        let p = PathBuf::from(v);
        assert!(
            p.join("bin/python").exists(),
            "DIRSYNC_VENV={} has no bin/python",
            p.display()
        );
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = PathBuf::from(home).join(".cache/dirsync/venv");
    let has = |p: &Path| {
        Command::new(p.join("bin/python"))
            .args(["-c", "import msal, msgraph, azure.identity"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&p) {
        let req = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/requirements.txt");
        if !p.join("bin/python").exists() {
            let ok = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&p)
                .status()
                .expect("python3 -m venv")
                .success();
            assert!(ok, "python3 -m venv {} failed", p.display());
        }
        let ok = Command::new(p.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(&req)
            .status()
            .expect("pip")
            .success();
        assert!(ok, "pip install -r {} failed", req.display());
        assert!(
            has(&p),
            "msal/msgraph-sdk still missing from {}",
            p.display()
        );
    }
    p
}

#[test]
fn msal_and_msgraph_sdk_read_and_write_a_generated_tenant() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--generate",
            &USERS.to_string(),
            "--domain",
            "example.com",
            "--seed",
            "7",
            "--app-roles",
            "User.Read.All,Domain.Read.All,User.ReadWrite.All",
        ])
        .arg("--tls-ca-out")
        .arg(&ca)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn emulator");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let mut base = String::new();
    BufReader::new(stdout).read_line(&mut base).unwrap();
    let base = base.trim().to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/msgraph_clients.py");
    let shares = entra_emulator::Shares::for_count(USERS);
    let out = Command::new(venv.join("bin/python"))
        .arg(&script)
        .env("EMU_BASE", &base)
        .env("EMU_CA", &ca)
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("SSL_CERT_FILE", &ca)
        .env("EMU_TENANT", entra_emulator::DEFAULT_TENANT_ID)
        .env("EMU_CLIENT_ID", entra_emulator::DEFAULT_CLIENT_ID)
        .env("EMU_CLIENT_SECRET", entra_emulator::DEFAULT_CLIENT_SECRET)
        .env("EMU_EXPECTED_USERS", USERS.to_string())
        .env("EMU_EXPECTED_GUESTS", shares.guests.to_string())
        .env(
            "EMU_EXPECTED_IN_DOMAIN",
            (USERS - shares.guests - shares.initial_domain).to_string(),
        )
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).expect("report");
    assert_eq!(report["users"], USERS);
    assert_eq!(report["pages"], 3);
    assert_eq!(report["msal_wrong_secret"], serde_json::json!([7000215]));
    assert_eq!(
        report["in_domain"],
        USERS - shares.guests - shares.initial_domain
    );
    assert_eq!(report["restored"], report["created"], "{report}");
    assert_eq!(report["read_only"], 403);
    assert_eq!(
        report["duplicate"],
        "Another object with the same value for property userPrincipalName already exists."
    );
    drop(proc);
}
