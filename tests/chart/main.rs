//! The Helm chart `charts/dirsync`, the examples and the Argo CD health check.
//!
//! - `helm lint` / `helm template` for the default and non-default values, and bad values
//!   refused by `values.schema.json` (or the chart's own checks) with a clear message;
//! - the chart installed into the real control plane (testenv), then `dirsync operator` run as
//!   a local process with the chart's ServiceAccount token: a dry run and a sync against the
//!   Graph emulator and scim2-server prove that the RBAC is enough;
//! - verbs and objects the operator does not need are denied to that token;
//! - `kubectl auth can-i --list` for the ServiceAccount matches
//!   `charts/dirsync/tests/permissions.golden`, and with `operator.storeIn=secrets`
//!   `permissions-secrets.golden` (`DIRSYNC_UPDATE_GOLDEN=1` rewrites them);
//! - with `operator.storeIn=secrets`, the operator as the chart's ServiceAccount moves what a
//!   ConfigMap setting left, previews and syncs into Secrets, and a user with the built-in
//!   `view` role cannot read the preview;
//! - the rendered Deployment passes Pod Security `restricted` on the real API server;
//! - every file in `examples/` is accepted by the API server (schema + CEL) and by the typed
//!   spec checks (`DirectorySyncSpec::validate`);
//! - `argocd/health.lua` evaluated by gopher-lua (`tools/lua-check`) against
//!   `argocd/testdata/*`.
//!
//! One file per topic in `tests/chart/`; the helpers they share are here (`use super::*;`).

#[path = "../operator_common/mod.rs"]
mod operator_common;

mod argocd;
mod examples;
mod install_and_run;
mod permissions;
mod pod_security;
mod rendering;
mod store_in_secrets;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use dirsync_testenv::{ControlPlane, TestNamespace, tools};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use operator_common::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);
/// Release name used by the install tests: the chart's names are then all "dirsync".
const RELEASE: &str = "dirsync";
const SA: &str = "dirsync";
const LEASE: &str = "dirsync-leader";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/dirsync")
}

/// `helm` with its cache/config/data in a temporary directory (no cluster needed).
fn helm(home: &Path) -> Command {
    let mut c = Command::new(tools().helm());
    c.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().expect("command runs");
    assert!(o.status.success(), "{c:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `helm template` with `--set`-style arguments; returns the documents.
fn template(home: &Path, ns: &str, args: &[&str]) -> Vec<Value> {
    let out = run_ok(
        helm(home)
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", ns])
            .args(args),
    );
    docs(&out)
}

fn docs(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .map(|d| d.trim())
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|d| {
            serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("bad YAML: {e}\n{d}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(docs: &[Value]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("").to_string(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                d["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn args_of(docs: &[Value]) -> Vec<String> {
    let d = find(docs, "Deployment")[0];
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The real control plane

/// A kubeconfig that authenticates with `token` (mode 0600, in `dir`).
fn token_kubeconfig(cp: &ControlPlane, dir: &Path, ns: &str, token: &str) -> PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD;
    let cfg = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": cp.server(), "certificate-authority-data": b64.encode(cp.ca_pem())}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "testenv", "user": "sa", "namespace": ns}}],
        "current-context": "sa",
    });
    let path = dir.join("sa.kubeconfig");
    let mut f = File::create(&path).unwrap();
    f.write_all(serde_json::to_string_pretty(&cfg).unwrap().as_bytes())
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// `helm install` (no --wait: no pods run here) of the chart into `ns`. The harness already
/// installed the CRD, so the chart's copy is left out (its rendering is tested in rendering.rs and
/// by the Pod Security dry run in pod_security.rs).
fn install(cp: &ControlPlane, release: &str, ns: &str, extra: &[&str]) {
    let o = cp
        .helm()
        .args(["install", release])
        .arg(chart())
        .args(["--namespace", ns, "--set", "crds.install=false"])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "helm install failed:\n{}", text(&o));
    let t = text(&o);
    // NOTES.txt says what to do next.
    assert!(
        t.contains("STATUS: deployed") && t.contains("NOTES:"),
        "{t}"
    );
    assert!(
        t.contains("get dsync") && t.contains("dirsync preview get"),
        "{t}"
    );
}

/// A token of the chart's ServiceAccount (TokenRequest through `kubectl create token`).
fn sa_token(cp: &ControlPlane, ns: &str, sa: &str) -> String {
    let t = run_ok(
        cp.kubectl()
            .args(["create", "token", sa, "-n", ns, "--duration=1h"]),
    );
    t.trim().to_string()
}

/// `dirsync operator` as a local process with the chart's identity (kubeconfig with the SA
/// token), the chart's Lease name and namespace.
struct LocalOperator {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl LocalOperator {
    fn start(kubeconfig: &Path, dir: &Path, ns: &str, extra: &[&str]) -> LocalOperator {
        let log = dir.join("operator.log");
        let out = File::create(&log).unwrap();
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
            "--lease-name",
            LEASE,
            "--lease-namespace",
            ns,
            "--lease-duration",
            "4",
            "--lease-grace",
            "2",
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
            "--identity",
            "chart-sa",
            "--allowed-authority-hosts",
            "127.0.0.1",
            "--allowed-graph-hosts",
            "127.0.0.1",
            "--allowed-private-cidrs",
            "127.0.0.0/8",
            "--log-format",
            "plain",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Builds that keep the Graph allowlist apart from the authority's take the emulator there too.
        let help = Command::new(env!("CARGO_BIN_EXE_dirsync"))
            .args(["operator", "--help"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&help.stdout)
            .lines()
            .any(|l| l.trim_start().starts_with("--allowed-graph-hosts "))
        {
            args.extend(["--allowed-graph-hosts".to_string(), "127.0.0.1".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_dirsync"))
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,dirsync=debug,kube_lease_manager=warn")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("dirsync operator starts");
        LocalOperator { child, log, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + T;
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port)).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "operator not ready; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

impl Drop for LocalOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_reason(
    ns: &TestNamespace,
    name: &str,
    want: &str,
    op: &LocalOperator,
) -> dirsync::crd::DirectorySync {
    let deadline = Instant::now() + T;
    loop {
        let d = get(ns, name).await;
        if ready_reason(&d).as_deref() == Some(want)
            && condition(&d, "Reconciling").map(|c| c.0).as_deref() == Some("False")
        {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {want}; status:\n{}\n--- operator log ---\n{}",
            serde_json::to_string_pretty(&d.status).unwrap_or_default(),
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden") || has_403(l))
        .collect()
}

/// A status 403 in `line`: "403" not inside a longer number (the operator logs its random admin
/// port, which can end in 403).
fn has_403(line: &str) -> bool {
    let b = line.as_bytes();
    line.match_indices("403").any(|(i, _)| {
        let digit_before = i > 0 && b[i - 1].is_ascii_digit();
        let digit_after = b.get(i + 3).is_some_and(u8::is_ascii_digit);
        !(digit_before || digit_after)
    })
}

#[test]
fn a_port_ending_in_403_is_not_a_refusal() {
    assert!(forbidden_lines("admin endpoints listening addresses=[127.0.0.1:42403]").is_empty());
    assert!(forbidden_lines("listening on 127.0.0.1:40301").is_empty());
    assert_eq!(forbidden_lines("GET /x: HTTP 403").len(), 1);
    assert_eq!(forbidden_lines("ErrorResponse { code: 403 }").len(), 1);
}
