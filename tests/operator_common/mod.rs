//! Shared harness of the operator integration tests: the real control plane (testenv), the
//! Graph emulator (in-process, HTTPS), the real `scim2-server`, and `dirsync operator` run as
//! a child process against them, watching only the test's namespace.

#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dirsync::crd::{DirectorySync, DirectorySyncStatus};
use dirsync_testenv::{ControlPlane, Scim2Server, TestNamespace};
use entra_emulator::{Config, Emulator, RunningEmulator};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

pub const TENANT_ID: &str = "2b9d1a6e-7c55-4a6e-9d62-0c1f8e2b5a10";
pub const CLIENT_ID: &str = "7f3c9a1e-2d44-4b8b-a7f0-3e6d5c4b2a19";
pub const CLIENT_SECRET: &str = "s3cr3t-Value-Never-Logged";
pub const SCIM_TOKEN: &str = "scim-Bearer-Token-Never-Logged";

/// The shared control plane with the CRD applied.
pub async fn control_plane() -> &'static ControlPlane {
    let cp = ControlPlane::shared();
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&dirsync::cli::crd_yaml().expect("CRD serialises"))
            .expect("CRD parses back");
    dirsync_testenv::apply_crds(&cp.client(), &[crd], Duration::from_secs(30))
        .await
        .expect("CRD established");
    cp
}

/// A tenant fixture with the test app and the given users (Graph user objects).
pub fn tenant(domains: &[&str], users: Vec<Value>) -> Value {
    json!({
        "tenantId": TENANT_ID,
        "domains": domains.iter().map(|d| json!({"id": d})).collect::<Vec<_>>(),
        "applications": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}],
        "users": users,
    })
}

pub fn user(upn: &str, given: &str, surname: &str, immutable: &str) -> Value {
    json!({
        "userPrincipalName": upn,
        "displayName": format!("{given} {surname}"),
        "givenName": given,
        "surname": surname,
        "mail": upn,
        "accountEnabled": true,
        "userType": "Member",
        "onPremisesImmutableId": immutable,
    })
}

pub async fn emulator(fixture: &Value) -> RunningEmulator {
    Emulator::start(Config::from_fixture(fixture).expect("fixture").https())
        .await
        .expect("emulator starts")
}

pub async fn emulator_generated(count: usize, domain: &str) -> RunningEmulator {
    let mut cfg = Config::generated(count, domain, 7).https();
    // The generated tenant's app uses the emulator's default ids; align it with ours.
    let spec = &mut cfg.tenants[0];
    spec.tenant_id = TENANT_ID.to_string();
    for app in &mut spec.applications {
        app.client_id = CLIENT_ID.to_string();
        app.secrets = vec![CLIENT_SECRET.to_string()];
    }
    Emulator::start(cfg).await.expect("emulator starts")
}

/// Secrets `entra-app` (client-secret, ca.pem) and `scim` (token) in `ns`.
pub async fn secrets(ns: &TestNamespace, emu: &RunningEmulator, client_secret: &str) {
    put_secret(
        ns,
        "entra-app",
        &[
            ("client-secret", client_secret),
            ("ca.pem", emu.ca_pem.as_deref().unwrap_or("")),
        ],
    )
    .await;
    put_secret(ns, "scim", &[("token", SCIM_TOKEN)]).await;
}

pub async fn put_secret(ns: &TestNamespace, name: &str, data: &[(&str, &str)]) {
    let api: Api<Secret> = ns.api();
    let string_data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data});
    api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&s))
        .await
        .expect("secret applied");
}

pub fn spec(domain: &str, mode: &str, emu: &RunningEmulator, scim_url: &str) -> Value {
    json!({
        "domain": domain,
        "upnMode": "Enabled",
        "maxAllowedDeletions": 65,
        "mode": mode,
        "source": {"entraID": {
            "tenantID": TENANT_ID,
            "clientID": CLIENT_ID,
            "clientSecretRef": {"name": "entra-app", "key": "client-secret"},
            "authorityHost": emu.base_url,
            "graphEndpoint": emu.base_url,
            "caBundleRef": {"name": "entra-app", "key": "ca.pem"},
        }},
        "destination": {"scim": {
            "endpoint": scim_url,
            "bearerTokenRef": {"name": "scim", "key": "token"},
        }},
    })
}

pub async fn create(ns: &TestNamespace, name: &str, spec: Value) -> DirectorySync {
    let api: Api<DirectorySync> = ns.api();
    let obj: DirectorySync = serde_json::from_value(json!({
        "apiVersion": "dirsync.io/v1alpha1", "kind": "DirectorySync",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("valid DirectorySync");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("created")
}

pub async fn get(ns: &TestNamespace, name: &str) -> DirectorySync {
    ns.api::<DirectorySync>()
        .get(name)
        .await
        .expect("get DirectorySync")
}

pub fn status(d: &DirectorySync) -> DirectorySyncStatus {
    d.status.clone().unwrap_or_default()
}

pub fn condition(d: &DirectorySync, ty: &str) -> Option<(String, String, String)> {
    status(d)
        .conditions
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Polls until `check` holds for the resource; panics with the status and operator log.
pub async fn wait_for<F>(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    op: Option<&Operator>,
    mut check: F,
) -> DirectorySync
where
    F: FnMut(&DirectorySync) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let d = get(ns, name).await;
        if check(&d) {
            return d;
        }
        if Instant::now() > deadline {
            let log = op.map(|o| o.log_tail(60)).unwrap_or_default();
            panic!(
                "timed out waiting for {what}; status:\n{}\n--- operator log ---\n{log}",
                serde_json::to_string_pretty(&d.status).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An annotation of an object, if set.
pub fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Polls until the `Ready` condition has `reason`.
pub async fn wait_for_reason(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
    timeout: Duration,
    op: Option<&Operator>,
) -> DirectorySync {
    wait_for(ns, name, reason, timeout, op, |d| {
        ready_reason(d).as_deref() == Some(reason)
    })
    .await
}

pub fn ready_reason(d: &DirectorySync) -> Option<String> {
    condition(d, "Ready").map(|c| c.1)
}

pub async fn annotate(ns: &TestNamespace, name: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    ns.api::<DirectorySync>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotated");
}

pub async fn label(ns: &TestNamespace, name: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"labels": {key: value}}});
    ns.api::<DirectorySync>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("labelled");
}

pub async fn configmap(ns: &TestNamespace, name: &str) -> Option<ConfigMap> {
    ns.api::<ConfigMap>()
        .get_opt(name)
        .await
        .expect("get ConfigMap")
}

/// Events about `name` once `ready` holds for them (up to 20 s), else the last list read. The
/// operator publishes its Events just after the status patch (src/controller/run.rs), so a test
/// that has just seen the status must wait for them rather than read them once.
pub async fn events_when(
    ns: &TestNamespace,
    name: &str,
    ready: impl Fn(&[(String, String, String, String)]) -> bool,
) -> Vec<(String, String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let evs = events(ns, name).await;
        if ready(&evs) || Instant::now() > deadline {
            return evs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Events about `name`, oldest first: (type, reason, note, reportingInstance).
pub async fn events(ns: &TestNamespace, name: &str) -> Vec<(String, String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut list: Vec<_> = api
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    let _ = std::marker::PhantomData::<Event>;
    list.into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

/// The SCIM server's users (whole resources), sorted by userName.
pub async fn scim_users(base: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut start = 1;
    loop {
        let r: Value = http
            .get(format!("{base}/Users?startIndex={start}&count=1000"))
            .bearer_auth(SCIM_TOKEN)
            .send()
            .await
            .expect("SCIM list")
            .json()
            .await
            .expect("SCIM JSON");
        let page = r["Resources"].as_array().cloned().unwrap_or_default();
        let total = r["totalResults"].as_u64().unwrap_or(0) as usize;
        let n = page.len();
        out.extend(page);
        if n == 0 || out.len() >= total {
            break;
        }
        start += n;
    }
    out.sort_by(|a, b| a["userName"].as_str().cmp(&b["userName"].as_str()));
    out
}

pub async fn scim_create(base: &str, body: Value) -> Value {
    let mut body = body;
    body["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User"]);
    let r = reqwest::Client::new()
        .post(format!("{base}/Users"))
        .bearer_auth(SCIM_TOKEN)
        .header("content-type", "application/scim+json")
        .json(&body)
        .send()
        .await
        .expect("SCIM create");
    assert!(r.status().is_success(), "SCIM create: {}", r.status());
    r.json().await.expect("SCIM JSON")
}

pub fn scim() -> Scim2Server {
    Scim2Server::start(SCIM_TOKEN)
}

/// `dirsync operator` as a child process.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    pub admin_port: u16,
    pub identity: String,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Operator {
    /// Starts an operator watching `ns` with test-friendly timings, plus `extra` flags.
    pub fn start(cp: &ControlPlane, ns: &str, identity: &str, extra: &[&str]) -> Operator {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("operator.log");
        let out = File::create(&log).expect("log file");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = [
            "operator",
            "--namespaces",
            ns,
            "--metrics-addr",
            &addr,
            "--health-addr",
            &addr,
            "--min-interval",
            "1s",
            "--retry-initial",
            "1s",
            "--retry-max",
            "4s",
            "--http-max-attempts",
            "2",
            "--http-retry-base",
            "100ms",
            "--connect-timeout",
            "2s",
            "--lease-namespace",
            ns,
            "--lease-duration",
            "4",
            "--lease-grace",
            "2",
            "--claim-ttl",
            "6s",
            "--identity",
            identity,
            "--allowed-authority-hosts",
            "127.0.0.1",
            "--allowed-graph-hosts",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.iter().any(|a| a.starts_with("--log-format")) {
            args.extend(["--log-format".to_string(), "plain".to_string()]);
        }
        // The SCIM servers of the tests listen on loopback; a test that checks the policy
        // passes its own --allowed-private-cidrs.
        if !extra
            .iter()
            .any(|a| a.starts_with("--allowed-private-cidrs"))
        {
            args.extend([
                "--allowed-private-cidrs".to_string(),
                "127.0.0.0/8".to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_dirsync"))
            .args(&args)
            .env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", "info,dirsync=debug,kube_lease_manager=warn")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("dirsync operator starts");
        Operator {
            child,
            log,
            admin_port: port,
            identity: identity.to_string(),
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics text (empty when not answering).
    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin_port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Sum of a counter family (all label sets).
    pub async fn counter(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) =
                reqwest::get(format!("http://127.0.0.1:{}/readyz", self.admin_port)).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "operator not ready; log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident memory (VmHWM), bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What most operator tests start with: the shared control plane, a fresh namespace, the Graph
/// emulator with the test's tenant, an empty scim2-server, the Secrets a resource refers to, and
/// an operator watching the namespace.
pub struct Scenario {
    pub cp: &'static ControlPlane,
    pub ns: TestNamespace,
    pub emu: RunningEmulator,
    pub scim: Scim2Server,
    pub op: Operator,
}

impl Scenario {
    /// Starts it all: namespace `ns_prefix-…`, the emulator `emu`, an operator with identity
    /// `identity` and the test-friendly flags of [`Operator::start`] plus `operator_args`.
    pub async fn start(
        ns_prefix: &str,
        emu: RunningEmulator,
        identity: &str,
        operator_args: &[&str],
    ) -> Scenario {
        dirsync::clients::outbound::init_crypto();
        let cp = control_plane().await;
        let ns = cp.namespace(ns_prefix).await;
        let scim = scim();
        secrets(&ns, &emu, CLIENT_SECRET).await;
        let op = Operator::start(cp, ns.name(), identity, operator_args);
        Scenario {
            cp,
            ns,
            emu,
            scim,
            op,
        }
    }
}

/// `dirsync preview get NAME -n NS` plus `extra` (`--pending`, `--verbose`) with the admin
/// kubeconfig: (stdout, stderr). Fails the test when the command fails.
pub fn preview_get(cp: &ControlPlane, ns: &str, name: &str, extra: &[&str]) -> (Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["preview", "get", name, "-n", ns])
        .args(extra)
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .expect("dirsync preview get runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "preview get {extra:?} failed: {err}");
    (out.stdout, err)
}
