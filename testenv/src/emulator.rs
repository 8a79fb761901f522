//! The project's Graph emulator (`entra-emulator`, workspace member `emulator/`) as a child
//! process for tests and benchmarks: HTTPS on a free loopback port, its CA written to a file,
//! the control API (`/_emulator/...`) wrapped in small blocking helpers, killed on drop (and by
//! the watchdog if the test process dies).
//!
//! The binary is found next to the running test binary (`target/<profile>/deps/<test>` →
//! `target/<profile>/entra-emulator`), or at `$ENTRA_EMULATOR_BIN`. `cargo test --test X` does
//! not build it: run `cargo build -p entra-emulator` first (the project's test command builds
//! the whole workspace before testing).
//!
//! ```no_run
//! use dirsync_testenv::emulator::Emulator;
//! use serde_json::json;
//! let emu = Emulator::generated(50, "example.com");
//! emu.add_user(&json!({"userPrincipalName": "new@example.com", "displayName": "New"}));
//! emu.add_fault(&json!({"kind": "throttle", "endpoint": "users", "count": 3, "retryAfter": 1}));
//! println!("{} trusts {}", emu.base_url(), emu.ca_file().display());
//! ```
//!
//! [`http_request`] is the minimal HTTP/1.0 client behind the control API, usable for plain
//! `http://127.0.0.1` servers too (e.g. poking a SCIM server from a test).

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::proc;

/// The client id, secret and tenant id of a generated tenant (`--generate`), as the emulator
/// defines them.
pub const DEFAULT_TENANT_ID: &str = "7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d";
pub const DEFAULT_CLIENT_ID: &str = "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c";
pub const DEFAULT_CLIENT_SECRET: &str = "emulator-client-secret";

/// A running `entra-emulator`.
pub struct Emulator {
    child: Child,
    base_url: String,
    port: u16,
    dir: PathBuf,
    ca_file: PathBuf,
    ca_pem: String,
    tls: Arc<rustls::ClientConfig>,
    _stdout: BufReader<ChildStdout>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Where the `entra-emulator` binary is: `$ENTRA_EMULATOR_BIN`, else next to the running
    /// executable (or one directory up, for `deps/` and `examples/`).
    pub fn binary() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("ENTRA_EMULATOR_BIN").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().context("locating the running executable")?;
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join("entra-emulator");
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = d.parent();
        }
        bail!(
            "entra-emulator binary not found next to {} — build it first with `cargo build -p entra-emulator` \
             (add --release for release builds), or set ENTRA_EMULATOR_BIN",
            exe.display()
        )
    }

    /// A generated tenant of `users` users on `domain` (seed 1), with the default tenant id,
    /// client id and secret. Panics with the emulator's log on failure.
    pub fn generated(users: usize, domain: &str) -> Emulator {
        let n = users.to_string();
        Emulator::start(&["--generate", &n, "--domain", domain]).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A tenant from fixture JSON (the `--tenant-file` format: tenantId, domains,
    /// applications with clientSecret/certificates, users as Graph user objects).
    pub fn with_tenant(fixture: &Value) -> Emulator {
        Emulator::start_with_tenant(fixture, &[]).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Emulator::with_tenant`] with extra arguments (e.g. `--token-lifetime 2`).
    pub fn start_with_tenant(fixture: &Value, extra: &[&str]) -> anyhow::Result<Emulator> {
        let dir = proc::new_run_dir(&std::env::temp_dir().join("dirsync-testenv"))?;
        let file = dir.join("tenant.json");
        std::fs::write(&file, serde_json::to_vec_pretty(fixture)?)?;
        let file = file
            .to_str()
            .context("temp dir path is not UTF-8")?
            .to_string();
        let mut args = vec!["--tenant-file", file.as_str()];
        args.extend_from_slice(extra);
        Emulator::start_in(dir, &args)
    }

    /// Starts the emulator with these arguments plus `--tls-ca-out` (HTTPS on 127.0.0.1, a
    /// free port) and waits for its base URL.
    pub fn start(args: &[&str]) -> anyhow::Result<Emulator> {
        let dir = proc::new_run_dir(&std::env::temp_dir().join("dirsync-testenv"))?;
        Emulator::start_in(dir, args)
    }

    fn start_in(dir: PathBuf, args: &[&str]) -> anyhow::Result<Emulator> {
        proc::watch_dir(&dir)?;
        let bin = Emulator::binary()?;
        let ca_file = dir.join("emulator-ca.pem");
        let ca_arg = ca_file
            .to_str()
            .context("temp dir path is not UTF-8")?
            .to_string();
        let log = dir.join("entra-emulator.log");
        let err = std::fs::File::create(&log)?;
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--tls-ca-out", &ca_arg])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        proc::watch_pid(child.id(), &ca_arg)?;
        let stdout = child.stdout.take().context("emulator stdout")?;
        // The first stdout line is the base URL; read it on a thread so a hung start times out.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send((res, r));
        });
        let fail = |child: &mut Child, why: String| -> anyhow::Error {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::anyhow!(
                "entra-emulator did not start: {why}\n{}",
                proc::tail(&log, 30)
            )
        };
        let (line, reader) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((Ok(line), r)) if !line.trim().is_empty() => (line.trim().to_string(), r),
            Ok((Ok(_), _)) => {
                return Err(fail(&mut child, "it exited before printing its URL".into()));
            }
            Ok((Err(e), _)) => return Err(fail(&mut child, e.to_string())),
            Err(_) => return Err(fail(&mut child, "no URL after 30 s".into())),
        };
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .ok_or_else(|| {
                anyhow::anyhow!("unexpected first line from entra-emulator: {line:?}")
            })?;
        let ca_pem = std::fs::read_to_string(&ca_file)
            .with_context(|| format!("reading {}", ca_file.display()))?;
        let tls = client_tls(&ca_pem)?;
        let emu = Emulator {
            child,
            base_url: line,
            port,
            dir,
            ca_file,
            ca_pem,
            tls,
            _stdout: reader,
        };
        let (status, _) = emu.control("GET", "/health", None)?;
        anyhow::ensure!(status == 200, "emulator health answered {status}");
        Ok(emu)
    }

    /// e.g. `https://127.0.0.1:41234` — the authority host and the Graph endpoint.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CA certificate (PEM file) that signed the emulator's server certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The emulator's stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("entra-emulator.log")
    }

    /// A control API call: `path` is relative to `/_emulator` (e.g. `/users`). Returns the
    /// status and the JSON body (`Null` when empty or not JSON).
    pub fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}/_emulator{path}", self.base_url);
        let body = body.map(serde_json::to_vec).transpose()?;
        let (status, bytes) = http_request(
            method,
            &url,
            &[("Content-Type", "application/json")],
            body.as_deref(),
            Some(&self.tls),
        )?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    fn expect(&self, method: &str, path: &str, body: Option<&Value>, ok: &[u16]) -> Value {
        match self.control(method, path, body) {
            Ok((s, v)) if ok.contains(&s) => v,
            Ok((s, v)) => panic!("emulator {method} {path}: HTTP {s}: {v}"),
            Err(e) => panic!("emulator {method} {path}: {e:#}"),
        }
    }

    /// The first tenant's id.
    pub fn tenant_id(&self) -> String {
        let v = self.expect("GET", "/tenants", None, &[200]);
        v["tenants"][0]["tenantId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Creates a user from a Graph user object (`accountEnabled` defaults to true, `userType`
    /// to Member, `id` is generated when absent). Returns the user as Graph shows it.
    pub fn add_user(&self, user: &Value) -> Value {
        self.expect("POST", "/users", Some(user), &[201])
    }

    /// One user by id or userPrincipalName.
    pub fn user(&self, key: &str) -> Value {
        self.expect(
            "GET",
            &format!("/users/{}", encode_segment(key)),
            None,
            &[200],
        )
    }

    /// Applies a partial Graph user object to a user (by id or userPrincipalName).
    pub fn update_user(&self, key: &str, patch: &Value) -> Value {
        self.expect(
            "PATCH",
            &format!("/users/{}", encode_segment(key)),
            Some(patch),
            &[200],
        )
    }

    /// Soft-deletes a user (restorable; Graph no longer lists it).
    pub fn delete_user(&self, key: &str) {
        self.expect(
            "DELETE",
            &format!("/users/{}", encode_segment(key)),
            None,
            &[200],
        );
    }

    /// Adds a fault rule (see `emulator/src/faults.rs`: kind throttle | unavailable |
    /// gatewayTimeout | dropConnection | delay ..., endpoint, count/always/after, retryAfter,
    /// bytes, delayMs). Returns its id.
    pub fn add_fault(&self, fault: &Value) -> u64 {
        self.expect("POST", "/faults", Some(fault), &[201])["id"]
            .as_u64()
            .unwrap_or_default()
    }

    /// The fault rules still active, with their `fired` counters.
    pub fn faults(&self) -> Value {
        self.expect("GET", "/faults", None, &[200])["faults"].clone()
    }

    pub fn clear_faults(&self) {
        self.expect("DELETE", "/faults", None, &[200]);
    }

    /// `expires_in` of tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.expect(
            "PATCH",
            "/settings",
            Some(&json!({ "tokenLifetime": secs })),
            &[200],
        );
    }

    /// Request counters and the last `limit` requests (method, path, endpoint, status, fault).
    pub fn requests(&self, limit: usize) -> Value {
        self.expect("GET", &format!("/requests?limit={limit}"), None, &[200])
    }

    /// Registers (or replaces) an application in the first tenant: `clientId`, `clientSecret`,
    /// `certificates` (PEM), `federatedCredentials`, `roles`.
    pub fn upsert_application(&self, app: &Value) {
        self.expect("PUT", "/applications", Some(app), &[200]);
    }

    /// Restores the tenants as loaded, clears faults and counters.
    pub fn reset(&self) {
        self.expect("POST", "/reset", None, &[200]);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Graph API requests in the emulator's request counters (`GET /_emulator/requests`, or
/// `stats.snapshot` in process): every endpoint but the token and OpenID ones.
pub fn api_requests(counters: &Value) -> u64 {
    counters["byEndpoint"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "token" && k.as_str() != "openid")
                .map(|(_, n)| n.as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// A rustls client configuration trusting only `ca_pem`.
pub fn client_tls(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("CA PEM")?)
            .context("adding the CA")?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A minimal blocking HTTP/1.0 request to a loopback `http://` or `https://` URL (`tls` must be
/// given for https). Returns the status and the body. Timeouts: 5 s connect, 30 s per read.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("not an http(s) URL: {url}");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':').context("URL without a port")?;
    let port: u16 = port.parse().context("URL port")?;
    let ip: std::net::IpAddr = match host {
        "localhost" => [127, 0, 0, 1].into(),
        h => h
            .trim_matches(['[', ']'])
            .parse()
            .with_context(|| format!("{host} is not an IP address"))?,
    };
    let mut tcp = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut raw = Vec::new();
    if https {
        let cfg = tls
            .context("an https URL needs a TLS configuration")?
            .clone();
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
        let conn = rustls::ClientConnection::new(cfg, name)?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        s.flush()?;
        read_all(&mut s, &mut raw)?;
    } else {
        tcp.write_all(req.as_bytes())?;
        tcp.write_all(body)?;
        read_all(&mut tcp, &mut raw)?;
    }
    parse_response(&raw)
}

/// Reads to end of stream; a TLS peer that closes without close_notify after sending a
/// response is accepted (the response is complete with HTTP/1.0).
fn read_all<R: Read>(r: &mut R, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("incomplete HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("not an HTTP response")?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunked body")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(b.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_plain_and_chunked() {
        let (s, b) =
            parse_response(b"HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (201, &b"{}"[..]));
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"abcde"[..]));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a b@x.com/1"), "a%20b@x.com%2F1");
    }
}
