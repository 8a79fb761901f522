//! The command-line contract: first stdout line, CA file, startup errors, signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_entra-emulator");

/// Kills the child if a test fails before stopping it.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    (Proc(child), line.trim_end().to_string())
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

fn wait_exit(p: &mut Proc, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = p.0.try_wait().expect("wait") {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn run_fail(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().expect("run");
    assert!(out.stdout.is_empty(), "nothing on stdout when it fails");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn https_first_line_and_ca_file_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let (mut p, base) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--generate",
        "50",
        "--domain",
        "example.com",
        "--seed",
        "3",
        "--tls-ca-out",
        ca.to_str().unwrap(),
    ]);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // The CA is a CA; the server's leaf is not, and names 127.0.0.1.
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer| c.to_vec())
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(cert.is_ca());
    signal(&p, "-TERM");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(10)), Some(0));
}

#[test]
fn plain_http_tenant_file_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tenant.json");
    std::fs::write(&f, r#"{"tenantId":"t-1","domains":[{"id":"contoso.example"}],"applications":[{"clientId":"c","clientSecret":"s"}],"users":[{"userPrincipalName":"a@contoso.example","displayName":"A"}]}"#).unwrap();
    let (mut p, base) = spawn(&["--tenant-file", f.to_str().unwrap()]);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    signal(&p, "-INT");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(10)), Some(0));
}

#[test]
fn malformed_fixture_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.json");
    std::fs::write(
        &f,
        "{\"tenantId\": \"t\", \"users\": [ {\"displayName\": \"x\"} ]}",
    )
    .unwrap();
    let (code, err) = run_fail(&["--tenant-file", f.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("entra-emulator: error: tenant file "),
        "{err}"
    );
    assert!(
        err.contains("broken.json: users[0]: 'userPrincipalName' is missing"),
        "{err}"
    );

    std::fs::write(&f, "{\"tenantId\": ").unwrap();
    let (code, err) = run_fail(&["--tenant-file", f.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("broken.json: not valid JSON"), "{err}");

    let (code, err) = run_fail(&["--tenant-file", "/nonexistent/tenant.json"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/tenant.json: cannot read it"),
        "{err}"
    );
}

#[test]
fn refuses_non_loopback_without_allow_remote() {
    let (code, err) = run_fail(&[
        "--listen",
        "0.0.0.0:0",
        "--generate",
        "1",
        "--domain",
        "example.com",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("not a loopback address") && err.contains("--allow-remote"),
        "{err}"
    );
    let (code, err) = run_fail(&["--generate", "1"]);
    assert_eq!(code, 2, "{err}");
    let (code, _) = run_fail(&[]);
    assert_eq!(code, 2);
}

/// `GET` a path over plain HTTP/1.1 and return the body (the emulator answers with a length).
fn http_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[test]
fn delta_replay_flag_turns_the_setting_on() {
    let settings = |args: &[&str]| {
        let (mut p, base) = spawn(args);
        let v: serde_json::Value =
            serde_json::from_str(&http_get(&base, "/_emulator/settings")).expect("JSON");
        signal(&p, "-TERM");
        assert_eq!(wait_exit(&mut p, Duration::from_secs(10)), Some(0));
        v
    };
    let generated = ["--generate", "3", "--domain", "example.com"];
    let v = settings(&generated);
    assert_eq!(
        (&v["deltaReplay"], &v["clockOffset"]),
        (&false.into(), &0.into()),
        "{v}"
    );
    let v = settings(&[&generated[..], &["--delta-replay"]].concat());
    assert_eq!(v["deltaReplay"], true, "{v}");
}

#[test]
fn app_roles_and_write_limit_flags() {
    let (mut p, base) = spawn(&[
        "--generate",
        "3",
        "--domain",
        "example.com",
        "--app-roles",
        "User.ReadWrite.All,Domain.Read.All",
        "--write-limit",
        "5",
        "--write-window",
        "60",
        "--reject-federated-password",
    ]);
    let settings: serde_json::Value =
        serde_json::from_str(&http_get(&base, "/_emulator/settings")).expect("JSON");
    assert_eq!(
        (
            &settings["writeLimit"],
            &settings["writeWindowSeconds"],
            &settings["rejectFederatedPassword"]
        ),
        (&5.into(), &60.into(), &true.into()),
        "{settings}"
    );
    let tenants: serde_json::Value =
        serde_json::from_str(&http_get(&base, "/_emulator/tenants")).expect("JSON");
    assert_eq!(
        tenants["tenants"][0]["applications"][0]["roles"],
        serde_json::json!(["User.ReadWrite.All", "Domain.Read.All"]),
        "{tenants}"
    );
    signal(&p, "-TERM");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(10)), Some(0));

    // Without the flags: Graph's limit and a read-only app.
    let (mut p, base) = spawn(&["--generate", "3", "--domain", "example.com"]);
    let settings: serde_json::Value =
        serde_json::from_str(&http_get(&base, "/_emulator/settings")).expect("JSON");
    assert_eq!(
        (&settings["writeLimit"], &settings["writeWindowSeconds"]),
        (&3000.into(), &150.into())
    );
    let tenants: serde_json::Value =
        serde_json::from_str(&http_get(&base, "/_emulator/tenants")).expect("JSON");
    assert_eq!(
        tenants["tenants"][0]["applications"][0]["roles"],
        serde_json::json!(["User.Read.All", "Domain.Read.All"])
    );
    signal(&p, "-TERM");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(10)), Some(0));

    let (code, err) = run_fail(&[
        "--generate",
        "3",
        "--domain",
        "example.com",
        "--write-window",
        "0",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--write-window"), "{err}");
}
