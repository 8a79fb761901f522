//! Shared harness of the `dirsync plan` / `dirsync apply` end-to-end tests (tests/cli_*.rs):
//! the real `dirsync` binary as a subprocess, the project's Graph emulator over HTTPS and the
//! real scim2-server over http, all on 127.0.0.1 and stopped on drop.
//!
//! Every run is checked for the canary secrets (client secret, SCIM token) in its stdout,
//! stderr, `--out` CSV and state file, so "secrets never appear" is asserted by every test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dirsync_testenv::Scim2Server;
use dirsync_testenv::emulator::{Emulator, http_request};
use serde_json::{Value, json};

pub const TENANT_ID: &str = "5b0f7e3c-2a41-4c6e-9d3b-8e2f1a0c7d64";
pub const CLIENT_ID: &str = "0c9e8d7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f";
/// Canary values: they must never show up in anything dirsync prints or writes.
pub const CLIENT_SECRET: &str = "canary-client-secret-Q7vX2pLm9Rt";
pub const SCIM_TOKEN: &str = "canary-scim-token-Zk4Hw8Nd3Fs";
pub const CANARIES: &[&str] = &[CLIENT_SECRET, SCIM_TOKEN];

/// How long one dirsync run may take before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A stable object id for user number `n`.
pub fn guid(n: u32) -> String {
    format!("{n:08x}-7a1b-4c2d-8e3f-{:012x}", u64::from(n) * 7919)
}

/// The Immutable ID docs/behaviour.md §2.3 defines for a user without `onPremisesImmutableId`: base64 of the
/// object id GUID in .NET byte order (computed here independently of dirsync's code).
pub fn immutable_id(guid: &str) -> String {
    use base64::Engine as _;
    let hex: String = guid.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut out = Vec::with_capacity(16);
    out.extend(b[0..4].iter().rev());
    out.extend(b[4..6].iter().rev());
    out.extend(b[6..8].iter().rev());
    out.extend_from_slice(&b[8..16]);
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// A member user as Graph returns it, every selected field present.
pub fn member(n: u32, upn: &str, given: &str, surname: &str) -> Value {
    json!({
        "id": guid(n),
        "userPrincipalName": upn,
        "displayName": format!("{given} {surname}"),
        "givenName": given,
        "surname": surname,
        "mail": upn,
        "accountEnabled": true,
        "userType": "Member",
        "proxyAddresses": [],
        "onPremisesImmutableId": null,
    })
}

/// `count` plain members `user01@domain` ... numbered from `first`.
pub fn members(first: u32, count: u32, domain: &str) -> Vec<Value> {
    (first..first + count)
        .map(|n| {
            member(
                n,
                &format!("user{n:03}@{domain}"),
                &format!("Given{n}"),
                &format!("Surname{n}"),
            )
        })
        .collect()
}

/// A tenant fixture: domains example.com, other.com and empty.example (no users), one app
/// with the canary client secret (and `certificates`, PEM, when given).
pub fn tenant(users: Vec<Value>, certificates: &[&str]) -> Value {
    json!({
        "tenantId": TENANT_ID,
        "displayName": "Contoso (tests)",
        "initialDomain": "contosotests.onmicrosoft.com",
        "domains": [{"id": "example.com"}, {"id": "other.com"}, {"id": "empty.example"}],
        "applications": [{
            "clientId": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "certificates": certificates,
        }],
        "users": users,
    })
}

/// Which credential the resource uses.
#[derive(Clone, Debug)]
pub enum Credential {
    /// `clientSecretRef` holding this value.
    Secret(String),
    /// `clientCertificateRef` holding this certificate + key PEM.
    Certificate(String),
}

/// The parts of the DirectorySync spec the tests vary.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub domain: String,
    pub upn_mode: &'static str,
    pub max_allowed_deletions: u8,
    pub deletion_policy: &'static str,
    pub adopt_existing: bool,
    pub protected_user_names: Vec<String>,
    pub exclude_resource_like_accounts: bool,
    /// `spec.approval`: Never, OnDeletes or Always.
    pub approval: &'static str,
    pub credential: Credential,
    pub scim_token: String,
    /// Another SCIM endpoint than the test's scim2-server (a hostile one).
    pub scim_endpoint: Option<String>,
    /// `spec.fullSyncInterval` (default 24h when absent).
    pub full_sync_interval: Option<String>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            name: "example-com".into(),
            domain: "example.com".into(),
            upn_mode: "Enabled",
            max_allowed_deletions: 65,
            deletion_policy: "Delete",
            adopt_existing: false,
            protected_user_names: Vec::new(),
            exclude_resource_like_accounts: false,
            approval: "Never",
            credential: Credential::Secret(CLIENT_SECRET.into()),
            scim_token: SCIM_TOKEN.into(),
            scim_endpoint: None,
            full_sync_interval: None,
        }
    }
}

/// The outcome of one dirsync run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Fails with the run's output unless the exit code is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code; stderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
        self
    }

    /// The CSV on stdout as records (header first).
    pub fn csv(&self) -> Vec<Vec<String>> {
        parse_csv(&self.stdout)
    }

    /// The data rows of the CSV on stdout.
    pub fn rows(&self) -> Vec<Row> {
        rows(&self.stdout)
    }
}

pub const HEADER: &str = "action,userName,userPrincipalName,displayName,givenName,surname,email,active,changes,immutableId";

/// One preview row, by column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub action: String,
    pub user_name: String,
    pub upn: String,
    pub display_name: String,
    pub given_name: String,
    pub surname: String,
    pub email: String,
    pub active: String,
    pub changes: String,
    pub immutable_id: String,
}

/// Parses a preview CSV (BOM, CRLF, RFC 4180) strictly: the header must be docs/behaviour.md §4's.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let body = text
        .strip_prefix('\u{feff}')
        .unwrap_or_else(|| panic!("CSV without a byte-order mark: {text:?}"));
    assert!(
        body.is_empty() || body.ends_with("\r\n"),
        "CSV does not end in CRLF: {body:?}"
    );
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body.as_bytes());
    let records: Vec<Vec<String>> = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(
        records.first().map(|h| h.join(",")).as_deref(),
        Some(HEADER),
        "CSV header"
    );
    records
}

pub fn rows(text: &str) -> Vec<Row> {
    parse_csv(text)
        .into_iter()
        .skip(1)
        .map(|c| Row {
            action: c[0].clone(),
            user_name: c[1].clone(),
            upn: c[2].clone(),
            display_name: c[3].clone(),
            given_name: c[4].clone(),
            surname: c[5].clone(),
            email: c[6].clone(),
            active: c[7].clone(),
            changes: c[8].clone(),
            immutable_id: c[9].clone(),
        })
        .collect()
}

/// `(action, userName)` of each row, in preview order.
pub fn actions(rows: &[Row]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| (r.action.clone(), r.user_name.clone()))
        .collect()
}

/// One test's world: an emulator tenant, a scim2-server, and a work directory with the
/// resource file, the secrets file and the state file.
pub struct Env {
    pub emu: Emulator,
    pub scim: Scim2Server,
    pub dir: tempfile::TempDir,
    pub spec: Spec,
}

impl Env {
    /// An emulator with [`tenant`]`(users)`, an empty scim2-server, the default spec.
    pub fn new(users: Vec<Value>) -> Env {
        Env::with(tenant(users, &[]), &[], Spec::default())
    }

    pub fn with(fixture: Value, emulator_args: &[&str], spec: Spec) -> Env {
        let emu = Emulator::start_with_tenant(&fixture, emulator_args)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let scim = Scim2Server::start(SCIM_TOKEN);
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            emu,
            scim,
            dir,
            spec,
        };
        env.write_files();
        env
    }

    pub fn resource_path(&self) -> PathBuf {
        self.dir.path().join("directorysync.yaml")
    }

    pub fn secrets_path(&self) -> PathBuf {
        self.dir.path().join("secrets.yaml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    /// Changes the spec and rewrites the files.
    pub fn set_spec(&mut self, f: impl FnOnce(&mut Spec)) {
        f(&mut self.spec);
        self.write_files();
    }

    pub fn resource_yaml(&self) -> String {
        let s = &self.spec;
        let credential = match &s.credential {
            Credential::Secret(_) => "clientSecretRef: { name: entra-app, key: client-secret }",
            Credential::Certificate(_) => {
                "clientCertificateRef: { name: entra-cert, key: tls.pem }"
            }
        };
        let full_sync = s
            .full_sync_interval
            .as_ref()
            .map(|i| format!("  fullSyncInterval: {i}\n"))
            .unwrap_or_default();
        let protected = if s.protected_user_names.is_empty() {
            String::new()
        } else {
            format!(
                "  protectedUserNames: {}\n",
                serde_json::to_string(&s.protected_user_names).unwrap()
            )
        };
        format!(
            "apiVersion: dirsync.io/v1alpha1\n\
             kind: DirectorySync\n\
             metadata:\n  name: {name}\n  namespace: identity\n\
             spec:\n  domain: {domain}\n  upnMode: {upn}\n  maxAllowedDeletions: {max}\n  mode: Once\n\
             \x20 deletionPolicy: {policy}\n  adoptExisting: {adopt}\n  excludeResourceLikeAccounts: {exclude}\n  approval: {approval}\n{protected}{full_sync}\
             \x20 source:\n    entraID:\n      tenantID: {TENANT_ID}\n      clientID: {CLIENT_ID}\n      {credential}\n\
             \x20     authorityHost: {base}\n      graphEndpoint: {base}\n\
             \x20 destination:\n    scim:\n      endpoint: {scim}\n      bearerTokenRef: {{ name: access-control-scim, key: token }}\n",
            name = s.name,
            domain = s.domain,
            upn = s.upn_mode,
            max = s.max_allowed_deletions,
            policy = s.deletion_policy,
            adopt = s.adopt_existing,
            exclude = s.exclude_resource_like_accounts,
            approval = s.approval,
            base = self.emu.base_url(),
            scim = s
                .scim_endpoint
                .clone()
                .unwrap_or_else(|| self.scim.base_url()),
        )
    }

    pub fn secrets_yaml(&self) -> String {
        let entra = match &self.spec.credential {
            Credential::Secret(v) => {
                format!(
                    "metadata: {{ name: entra-app, namespace: identity }}\nstringData:\n  client-secret: {v}\n"
                )
            }
            Credential::Certificate(pem) => {
                let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
                format!("metadata: {{ name: entra-cert }}\nstringData:\n  tls.pem: |\n{indented}")
            }
        };
        // The SCIM token as `data` (base64), the Entra credential as `stringData`: both forms.
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(&self.spec.scim_token);
        format!(
            "apiVersion: v1\nkind: Secret\n{entra}---\napiVersion: v1\nkind: Secret\n\
             metadata: {{ name: access-control-scim, namespace: identity }}\ntype: Opaque\ndata:\n  token: {token}\n"
        )
    }

    pub fn write_files(&self) {
        std::fs::write(self.resource_path(), self.resource_yaml()).unwrap();
        std::fs::write(self.secrets_path(), self.secrets_yaml()).unwrap();
    }

    /// `-f RESOURCE --secrets SECRETS --ca-file EMULATOR_CA` plus `extra`.
    pub fn args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            command.into(),
            "-f".into(),
            self.resource_path().display().to_string(),
            "--secrets".into(),
            self.secrets_path().display().to_string(),
            "--ca-file".into(),
            self.emu.ca_file().display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// `dirsync plan` without a state file (empty managed set).
    pub fn plan_stateless(&self) -> Run {
        self.dirsync(&self.args("plan", &[]))
    }

    /// `dirsync plan --state STATE`.
    pub fn plan(&self) -> Run {
        let state = self.state_path().display().to_string();
        self.dirsync(&self.args("plan", &["--state", &state]))
    }

    /// `dirsync apply --state STATE`.
    pub fn apply(&self) -> Run {
        let state = self.state_path().display().to_string();
        self.dirsync(&self.args("apply", &["--state", &state]))
    }

    /// Runs dirsync and checks that no canary secret shows in its output or its files.
    pub fn dirsync(&self, args: &[String]) -> Run {
        let run = run_dirsync(args, self.dir.path());
        assert_no_secrets(&run.stdout, "stdout");
        assert_no_secrets(&run.stderr, "stderr");
        if let Ok(state) = std::fs::read(self.state_path()) {
            assert_no_secrets(&String::from_utf8_lossy(&state), "the state file");
        }
        run
    }

    // ---- the SCIM side, seen directly ----

    fn scim_call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.scim.base_url());
        let auth = format!("Bearer {SCIM_TOKEN}");
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        let (status, bytes) = http_request(
            method,
            &url,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/scim+json"),
            ],
            body.as_deref(),
            None,
        )
        .unwrap_or_else(|e| panic!("SCIM {method} {path}: {e:#}"));
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Deletes SCIM user `id`.
    pub fn scim_delete(&self, id: &str) {
        let (s, body) = self.scim_call("DELETE", &format!("/Users/{id}"), None);
        assert_eq!(s, 204, "SCIM delete {id}: {body}");
    }

    /// Every user in the SCIM server.
    pub fn scim_users(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut start = 1;
        loop {
            let (s, page) = self.scim_call(
                "GET",
                &format!("/Users?startIndex={start}&count=1000"),
                None,
            );
            assert_eq!(s, 200, "SCIM list: {page}");
            let items = page["Resources"].as_array().cloned().unwrap_or_default();
            let total = page["totalResults"].as_u64().unwrap_or(0) as usize;
            let n = items.len();
            out.extend(items);
            if n == 0 || out.len() >= total {
                return out;
            }
            start += n;
        }
    }

    /// The SCIM user with this userName (case-insensitive), if any.
    pub fn scim_user(&self, user_name: &str) -> Option<Value> {
        let mut found: Vec<Value> = self
            .scim_users()
            .into_iter()
            .filter(|u| {
                u["userName"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{} SCIM users named {user_name}",
            found.len()
        );
        found.pop()
    }

    #[track_caller]
    pub fn scim_user_required(&self, user_name: &str) -> Value {
        self.scim_user(user_name)
            .unwrap_or_else(|| panic!("no SCIM user {user_name}"))
    }

    /// Creates a SCIM user by hand (as an administrator would).
    pub fn scim_create(&self, user: Value) -> Value {
        let mut body = user;
        body["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User"]);
        let (s, v) = self.scim_call("POST", "/Users", Some(&body));
        assert_eq!(s, 201, "SCIM create: {v}");
        v
    }

    /// Patches a SCIM user by hand (RFC 7644 PatchOp `Operations`).
    pub fn scim_patch(&self, id: &str, ops: Value) -> Value {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        let (s, v) = self.scim_call("PATCH", &format!("/Users/{id}"), Some(&body));
        assert!(s == 200 || s == 204, "SCIM patch: HTTP {s}: {v}");
        v
    }

    /// `userName -> (id, meta.version)` of every SCIM user.
    pub fn scim_versions(&self) -> std::collections::BTreeMap<String, (String, String)> {
        self.scim_users()
            .into_iter()
            .map(|u| {
                (
                    u["userName"].as_str().unwrap().to_string(),
                    (
                        u["id"].as_str().unwrap().to_string(),
                        u["meta"]["version"].as_str().unwrap_or("").to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Write requests (POST, PUT, PATCH, DELETE) the SCIM server has logged so far.
    pub fn scim_writes(&self) -> WriteCounts {
        let log = std::fs::read_to_string(self.scim.log()).unwrap_or_default();
        let mut c = WriteCounts::default();
        for line in log.lines() {
            if line.contains("\"POST /") {
                c.post += 1;
            } else if line.contains("\"PUT /") {
                c.put += 1;
            } else if line.contains("\"PATCH /") {
                c.patch += 1;
            } else if line.contains("\"DELETE /") {
                c.delete += 1;
            }
        }
        c
    }

    /// Every request the SCIM server has logged so far.
    pub fn scim_requests(&self) -> usize {
        self.scim.request_count()
    }

    /// How many `GET /v2/Users` list requests the SCIM server has answered.
    pub fn scim_list_requests(&self) -> usize {
        let log = std::fs::read_to_string(self.scim.log()).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"GET /v2/Users?") || l.contains("\"GET /v2/Users HTTP"))
            .count()
    }

    /// The managed set in the state file: `(immutableId, destinationId, userName)`.
    pub fn state_managed(&self) -> Vec<(String, String, String)> {
        let v: Value = serde_json::from_slice(&std::fs::read(self.state_path()).unwrap()).unwrap();
        let mut out: Vec<(String, String, String)> = v["managed"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u[0].as_str().unwrap().to_string(),
                    u[1].as_str().unwrap().to_string(),
                    u[3].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    pub fn managed_user_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .state_managed()
            .into_iter()
            .map(|(_, _, n)| n)
            .collect();
        v.sort();
        v
    }
}

/// Counts of write requests seen by the SCIM server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    pub post: usize,
    pub put: usize,
    pub patch: usize,
    pub delete: usize,
}

impl WriteCounts {
    pub fn total(&self) -> usize {
        self.post + self.put + self.patch + self.delete
    }
}

/// Runs the dirsync binary in `cwd` with stdout and stderr to files (no pipe deadlock), killing
/// it after [`RUN_TIMEOUT`].
pub fn run_dirsync(args: &[String], cwd: &Path) -> Run {
    run_dirsync_timeout(args, cwd, RUN_TIMEOUT)
}

pub fn run_dirsync_timeout(args: &[String], cwd: &Path, timeout: Duration) -> Run {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dirsync {args:?} still running after {timeout:?}; stderr so far:\n{}",
                std::fs::read_to_string(err.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out.path()).unwrap(),
        stderr: std::fs::read_to_string(err.path()).unwrap(),
        elapsed: started.elapsed(),
    }
}

#[track_caller]
pub fn assert_no_secrets(text: &str, what: &str) {
    for c in CANARIES {
        assert!(
            !text.contains(c),
            "a secret ({c}) appears in {what}:\n{text}"
        );
    }
}

/// Mode bits of a file.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The one SCIM email value marked primary (or the only one).
pub fn primary_email(u: &Value) -> Option<String> {
    let emails = u["emails"].as_array()?;
    emails
        .iter()
        .find(|e| e["primary"] == json!(true))
        .or(emails.first())
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Runs dirsync, polling `/proc/PID/status` for `VmHWM` (peak resident set, KiB).
pub fn run_measuring_peak_rss(args: &[String], cwd: &Path, timeout: Duration) -> (Run, u64) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(out.reopen().unwrap())
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
        assert!(
            started.elapsed() < timeout,
            "dirsync still running after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::open(out.path()).unwrap(), &mut stdout)
        .unwrap();
    std::io::Read::read_to_string(&mut std::fs::File::open(err.path()).unwrap(), &mut stderr)
        .unwrap();
    (
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
            elapsed: started.elapsed(),
        },
        peak,
    )
}

/// Reads one HTTP/1.1 request (head and a `Content-Length` body) from a test server's
/// connection; `None` when the peer closed it first. For the hand-written hostile servers of
/// tests/cli_errors.rs and tests/cli_broken_reads.rs, which answer in ways no framework would.
pub async fn read_request<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Option<(String, String)>> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    Ok(Some((method, target)))
}

/// A one-worker runtime and a listener on a free 127.0.0.1 port, for the hand-written hostile
/// servers of tests/cli_errors.rs and tests/cli_broken_reads.rs (the runtime is shut down by
/// their `Drop`).
pub fn loopback_runtime() -> (tokio::runtime::Runtime, tokio::net::TcpListener, u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (rt, listener, port)
}
