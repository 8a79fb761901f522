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

mod operator_common;

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
// Rendering (no cluster)

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated =
        std::fs::read_to_string(root().join("crds/directorysyncs.dirsync.io.yaml")).unwrap();
    let copy =
        std::fs::read_to_string(chart().join("files/crds/directorysyncs.dirsync.io.yaml")).unwrap();
    assert!(
        generated == copy,
        "charts/dirsync/files/crds/directorysyncs.dirsync.io.yaml differs from crds/; run\n  \
         cp crds/directorysyncs.dirsync.io.yaml charts/dirsync/files/crds/"
    );
    // The rendered CRD is that CRD plus the keep policy.
    let home = tempfile::tempdir().unwrap();
    let d = template(home.path(), "dirsync-system", &[]);
    let crd = find(&d, "CustomResourceDefinition");
    assert_eq!(crd.len(), 1);
    assert_eq!(
        crd[0]["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let want: Value = serde_saphyr::from_str(&generated).unwrap();
    // Helm's fromYaml/toYaml turns 100.0 into 100: compare numbers as numbers.
    assert_eq!(
        numbers_as_f64(&crd[0]["spec"]),
        numbers_as_f64(&want["spec"])
    );
    let off = template(
        home.path(),
        "dirsync-system",
        &["--set", "crds.install=false"],
    );
    assert!(find(&off, "CustomResourceDefinition").is_empty());
}

fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn helm_lint_and_template_pass_for_default_and_other_values() {
    let home = tempfile::tempdir().unwrap();
    let variants: &[(&str, &[&str])] = &[
        ("default", &[]),
        ("namespaces", &["--set", "watchNamespaces={team-a,team-b}"]),
        ("all namespaces", &["--set", "watchAllNamespaces=true"]),
        (
            "monitoring",
            &[
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "metrics.prometheusRule.enabled=true",
            ],
        ),
        (
            "no leader election, no network policy, no workload identity",
            &[
                "--set",
                "leaderElection.enabled=false",
                "--set",
                "networkPolicy.enabled=false",
                "--set",
                "rbac.workloadIdentity=false",
            ],
        ),
        (
            "previews in Secrets",
            &["--set", "operator.storeIn=secrets"],
        ),
        (
            "image by digest, same port for metrics and health, operator flags",
            &[
                "--set",
                "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "--set",
                "health.port=8080",
                "--set",
                "operator.allowedAuthorityHosts={login.example.net}",
                "--set",
                "operator.deniedCIDRs={10.9.0.0/16}",
                "--set",
                "replicaCount=2",
            ],
        ),
    ];
    for (what, args) in variants {
        let o = helm(home.path())
            .args(["lint", "--strict", "--namespace", "dirsync-system"])
            .arg(chart())
            .args(*args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "helm lint ({what}) failed:\n{}",
            text(&o)
        );
        let d = template(home.path(), "dirsync-system", args);
        assert!(!find(&d, "Deployment").is_empty(), "{what}: no Deployment");
    }

    // Default: only the release namespace, a Role there plus the Lease Role.
    let d = template(home.path(), "dirsync-system", &[]);
    assert_eq!(
        kinds(&d),
        vec![
            (
                "CustomResourceDefinition".into(),
                "".into(),
                "directorysyncs.dirsync.io".into()
            ),
            (
                "Deployment".into(),
                "dirsync-system".into(),
                "dirsync".into()
            ),
            (
                "NetworkPolicy".into(),
                "dirsync-system".into(),
                "dirsync".into()
            ),
            ("Role".into(), "dirsync-system".into(), "dirsync".into()),
            (
                "Role".into(),
                "dirsync-system".into(),
                "dirsync-leader-election".into()
            ),
            (
                "RoleBinding".into(),
                "dirsync-system".into(),
                "dirsync".into()
            ),
            (
                "RoleBinding".into(),
                "dirsync-system".into(),
                "dirsync-leader-election".into()
            ),
            (
                "Service".into(),
                "dirsync-system".into(),
                "dirsync-metrics".into()
            ),
            (
                "ServiceAccount".into(),
                "dirsync-system".into(),
                "dirsync".into()
            ),
        ]
    );
    let a = args_of(&d);
    assert!(
        a.contains(&"--namespaces=dirsync-system".to_string()),
        "{a:?}"
    );
    assert!(a.contains(&"--store-in=configmaps".to_string()), "{a:?}");
    assert!(a.contains(&format!("--lease-name={LEASE}")), "{a:?}");
    let lease_role = find(&d, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "dirsync-leader-election")
        .unwrap();
    assert_eq!(lease_role["rules"][0]["resourceNames"], json!([LEASE]));
    assert!(find(&d, "ClusterRole").is_empty());
    // NetworkPolicy: egress keeps away from metadata addresses.
    let np = serde_json::to_string(find(&d, "NetworkPolicy")[0]).unwrap();
    for cidr in ["169.254.0.0/16", "fd00:ec2::254/128"] {
        assert!(np.contains(cidr), "{np}");
    }

    // A list: a Role + RoleBinding per listed namespace, none in the release namespace
    // except the Lease's.
    let d = template(
        home.path(),
        "dirsync-system",
        &["--set", "watchNamespaces={team-a,team-b}"],
    );
    let roles: Vec<_> = kinds(&d)
        .into_iter()
        .filter(|k| k.0 == "Role" || k.0 == "RoleBinding")
        .collect();
    assert_eq!(
        roles,
        vec![
            (
                "Role".into(),
                "dirsync-system".into(),
                "dirsync-leader-election".into()
            ),
            ("Role".into(), "team-a".into(), "dirsync".into()),
            ("Role".into(), "team-b".into(), "dirsync".into()),
            (
                "RoleBinding".into(),
                "dirsync-system".into(),
                "dirsync-leader-election".into()
            ),
            ("RoleBinding".into(), "team-a".into(), "dirsync".into()),
            ("RoleBinding".into(), "team-b".into(), "dirsync".into()),
        ]
    );
    assert!(args_of(&d).contains(&"--namespaces=team-a,team-b".to_string()));

    // All namespaces: a ClusterRole, no --namespaces flag.
    let d = template(
        home.path(),
        "dirsync-system",
        &["--set", "watchAllNamespaces=true"],
    );
    assert_eq!(find(&d, "ClusterRole").len(), 1);
    assert_eq!(find(&d, "ClusterRoleBinding").len(), 1);
    assert!(!args_of(&d).iter().any(|a| a.starts_with("--namespaces")));

    // Workload identity rules only when asked (default on), only in the watched namespaces.
    let rules = |d: &[Value]| serde_json::to_string(&find(d, "Role")).unwrap();
    assert!(rules(&template(home.path(), "x", &[])).contains("serviceaccounts/token"));
    assert!(
        !rules(&template(
            home.path(),
            "x",
            &["--set", "rbac.workloadIdentity=false"]
        ))
        .contains("serviceaccounts")
    );

    // Previews in Secrets: the flag, Secret writes, and only get/list/delete left on ConfigMaps
    // (to move or remove what a ConfigMap setting left). The default keeps Secrets read-only.
    let verbs = |d: &[Value], resource: &str| -> Vec<String> {
        let role = find(d, "Role")
            .into_iter()
            .find(|r| r["metadata"]["name"] == "dirsync")
            .expect("Role");
        let rule = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resources"] == json!([resource]))
            .unwrap_or_else(|| panic!("no rule for {resource}"));
        rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let d = template(
        home.path(),
        "dirsync-system",
        &["--set", "operator.storeIn=secrets"],
    );
    assert!(args_of(&d).contains(&"--store-in=secrets".to_string()));
    assert_eq!(
        verbs(&d, "secrets"),
        ["get", "list", "watch", "create", "patch", "delete"]
    );
    assert_eq!(verbs(&d, "configmaps"), ["get", "list", "delete"]);
    let d = template(home.path(), "dirsync-system", &[]);
    assert_eq!(verbs(&d, "secrets"), ["get", "list", "watch"]);
    assert_eq!(
        verbs(&d, "configmaps"),
        ["get", "list", "watch", "create", "patch", "delete"]
    );
    let d = template(
        home.path(),
        "x",
        &[
            "--set",
            "operator.storeIn=secrets",
            "--set",
            "watchAllNamespaces=true",
        ],
    );
    let cluster_rules = serde_json::to_string(&find(&d, "ClusterRole")[0]["rules"]).unwrap();
    assert!(
        cluster_rules.contains(
            r#""resources":["secrets"],"verbs":["get","list","watch","create","patch","delete"]"#
        ),
        "{cluster_rules}"
    );

    // Monitoring: the alerts use metric names the operator really exports.
    let d = template(
        home.path(),
        "dirsync-system",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
        ],
    );
    assert_eq!(find(&d, "ServiceMonitor").len(), 1);
    let rule = serde_json::to_string(find(&d, "PrometheusRule")[0]).unwrap();
    let exported = exported_metrics();
    let mut used = BTreeSet::new();
    for (i, _) in rule.match_indices("dirsync_") {
        let name: String = rule[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used.insert(name);
    }
    assert!(used.len() >= 3, "{used:?}");
    for m in &used {
        assert!(
            exported.contains(m),
            "PrometheusRule uses {m}, which src/controller/metrics.rs does not export ({exported:?})"
        );
    }
    for alert in [
        "DirsyncRunFailed",
        "DirsyncDeletionGuardTripped",
        "DirsyncApprovalWaiting",
    ] {
        assert!(rule.contains(alert), "{rule}");
    }
    assert!(
        rule.contains("dirsync_approvals_pending") && rule.contains("\"for\":\"4h\""),
        "the approval alert waits the chart's default: {rule}"
    );
    assert!(rule.contains("DeletionThresholdExceeded"));

    // Without leader election: no Lease Role, --leader-election=false.
    let d = template(home.path(), "x", &["--set", "leaderElection.enabled=false"]);
    assert!(args_of(&d).contains(&"--leader-election=false".to_string()));
    assert!(!kinds(&d).iter().any(|k| k.2.ends_with("leader-election")));
}

/// `dirsync_<name>` as Prometheus exposes them: counters get `_total`, histograms `_bucket`,
/// `_sum`, `_count`, read from the registrations in src/controller/metrics.rs.
fn exported_metrics() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("src/controller/metrics.rs")).unwrap();
    let mut out = BTreeSet::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find(".register(") {
        rest = &rest[i + ".register(".len()..];
        let Some(q) = rest.find('"') else { break };
        let after = &rest[q + 1..];
        let name = &after[..after.find('"').unwrap()];
        let base = format!("dirsync_{name}");
        for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
            out.insert(format!("{base}{suffix}"));
        }
    }
    out
}

#[test]
fn bad_values_are_refused_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    // (values, message, whether `helm lint` refuses it too: lint reports a template's `fail`
    // only as [INFO], so the rules across values fail at template/install time only).
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "imageTag=v1"],
            "additional properties 'imageTag' not allowed",
        ),
        (
            &["--set", "operator.previewTTL=tomorrow"],
            "/operator/previewTTL",
        ),
        (&["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (&["--set", "replicaCount=-1"], "/replicaCount"),
        (&["--set", "operator.logFormat=xml"], "/operator/logFormat"),
        (&["--set", "operator.storeIn=Secret"], "/operator/storeIn"),
        (
            &["--set", "networkPolicy.deniedEgressCIDRs={metadata}"],
            "/networkPolicy/deniedEgressCIDRs/0",
        ),
        (&["--set", "image.digest=latest"], "/image/digest"),
        (&["--set", "watchAllNamespaces=yes"], "/watchAllNamespaces"),
        (
            &["--set", "operator.extraArgs={rm -rf}"],
            "/operator/extraArgs/0",
        ),
        (
            &[
                "--set",
                "replicaCount=2",
                "--set",
                "leaderElection.enabled=false",
            ],
            "replicaCount > 1 needs leaderElection.enabled=true",
        ),
        (
            &[
                "--set",
                "watchAllNamespaces=true",
                "--set",
                "watchNamespaces={a}",
            ],
            "set either watchNamespaces (a list) or watchAllNamespaces=true, not both",
        ),
        (
            &["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ];
    for (args, want) in cases {
        let schema = want.starts_with('/') || want.contains("additional properties");
        let verbs: &[&str] = if schema {
            &["template", "lint"]
        } else {
            &["template"]
        };
        for verb in verbs {
            let o = if *verb == "lint" {
                helm(home.path())
                    .arg("lint")
                    .arg(chart())
                    .args(*args)
                    .output()
                    .unwrap()
            } else {
                helm(home.path())
                    .args(["template", RELEASE])
                    .arg(chart())
                    .args(*args)
                    .output()
                    .unwrap()
            };
            let t = text(&o);
            assert!(!o.status.success(), "helm {verb} {args:?} was accepted");
            assert!(
                t.contains(want),
                "helm {verb} {args:?}: message does not say {want:?}:\n{t}"
            );
        }
    }
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
/// installed the CRD, so the chart's copy is left out (its rendering is tested above and by
/// the Pod Security dry run below).
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

/// `kubectl` with the ServiceAccount's kubeconfig.
fn kubectl_as(kubeconfig: &Path) -> Command {
    let mut c = Command::new(tools().kubectl());
    c.env("KUBECONFIG", kubeconfig);
    c
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
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden") || l.contains("403"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_with_the_charts_service_account_previews_and_syncs() {
    dirsync::clients::outbound::init_crypto();
    let started = Instant::now();
    let cp = control_plane().await;
    let ns = cp.namespace("chart-install").await;
    install(cp, RELEASE, ns.name(), &[]);

    let dir = tempfile::tempdir().unwrap();
    let token = sa_token(cp, ns.name(), SA);
    let kubeconfig = token_kubeconfig(cp, dir.path(), ns.name(), &token);

    let emu = emulator(&tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2UtaWQ="),
            user("bob@example.com", "Bob", "Builder", "Ym9iLWlk"),
            user("zed@other.org", "Zed", "Other", "emVk"),
        ],
    ))
    .await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;

    // A preview TTL short enough that the test sees the operator delete an expired preview.
    let op = LocalOperator::start(&kubeconfig, dir.path(), ns.name(), &["--preview-ttl", "8s"]);
    op.wait_ready().await;
    create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;
    let d = wait_reason(&ns, "example-com", "PreviewReady", &op).await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!((run.adds, run.deletes), (2, 0));
    assert!(configmap(&ns, "example-com-preview").await.is_some());
    assert!(
        scim_users(&scim.base_url()).await.is_empty(),
        "a dry run wrote users"
    );

    // Once: applies.
    let patch = json!({"spec": {"mode": "Once"}});
    ns.api::<dirsync::crd::DirectorySync>()
        .patch(
            "example-com",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let d = wait_reason(&ns, "example-com", "Synced", &op).await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!((run.adds, run.failed), (2, 0), "{run:?}");
    let users: Vec<String> = scim_users(&scim.base_url())
        .await
        .iter()
        .map(|u| u["userName"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(users, vec!["alice@example.com", "bob@example.com"]);
    assert!(configmap(&ns, "example-com-managed").await.is_some());

    // Events were written (events.k8s.io create), the Lease is held by this identity.
    let evs = events(&ns, "example-com").await;
    assert!(evs.iter().any(|e| e.1 == "Synced"), "{evs:?}");
    let lease = run_ok(cp.kubectl().args([
        "get",
        "lease",
        LEASE,
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    assert_eq!(lease, "chart-sa");

    // The expired preview is removed (configmaps delete).
    let deadline = Instant::now() + T;
    while configmap(&ns, "example-com-preview").await.is_some() {
        assert!(
            Instant::now() < deadline,
            "expired preview not removed; log:\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let log = op.log();
    assert!(
        forbidden_lines(&log).is_empty(),
        "the operator was refused something:\n{}",
        forbidden_lines(&log).join("\n")
    );
    let m = op.metrics().await;
    assert!(m.contains("dirsync_runs_total{result=\"Synced\"} 1"), "{m}");
    eprintln!(
        "chart install + dry run + sync + preview expiry: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Gives the built-in `view` ClusterRole its rules the way kube-controller-manager's
/// clusterrole-aggregation controller does (the test control plane does not run that
/// controller, so `view` starts empty): the union of the rules of the ClusterRoles its
/// aggregationRule selects (`system:aggregate-to-view`, ...).
async fn aggregate_view(cp: &ControlPlane) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let api: Api<ClusterRole> = Api::all(cp.client());
    let view = api
        .get("view")
        .await
        .expect("the bootstrap view ClusterRole");
    if view.rules.as_ref().is_some_and(|r| !r.is_empty()) {
        return;
    }
    let mut rules = Vec::new();
    for selector in view
        .aggregation_rule
        .and_then(|a| a.cluster_role_selectors)
        .unwrap_or_default()
    {
        let labels: Vec<String> = selector
            .match_labels
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let list = api
            .list(&kube::api::ListParams::default().labels(&labels.join(",")))
            .await
            .unwrap();
        for role in list.items {
            rules.extend(role.rules.unwrap_or_default());
        }
    }
    assert!(!rules.is_empty(), "no ClusterRole aggregates into view");
    api.patch(
        "view",
        &PatchParams::default(),
        &Patch::Merge(&json!({"rules": rules})),
    )
    .await
    .unwrap();
}

/// `kubectl auth can-i VERB RESOURCE -n NS --as=USER`: whether it says yes.
fn can_i(cp: &ControlPlane, ns: &str, user: &str, verb: &str, resource: &str) -> bool {
    let o = cp
        .kubectl()
        .args([
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns,
            &format!("--as={user}"),
        ])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {verb} {resource}: {}",
        text(&o)
    );
    answer == "yes"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_previews_in_secrets_the_charts_service_account_is_enough_and_view_cannot_read_them() {
    use dirsync::controller::objects::{Objects, Owner, StoreKind};
    use dirsync::sync::ManagedStore as _;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    dirsync::clients::outbound::init_crypto();
    let started = Instant::now();
    let cp = control_plane().await;
    let ns = cp.namespace("chart-secrets").await;
    let values = ["--set", "operator.storeIn=secrets"];
    install(cp, RELEASE, ns.name(), &values);
    // The operator gets the flag the chart's Deployment passes.
    let home = tempfile::tempdir().unwrap();
    let store_in = args_of(&template(home.path(), ns.name(), &values))
        .into_iter()
        .find(|a| a.starts_with("--store-in="))
        .expect("the Deployment passes --store-in");
    assert_eq!(store_in, "--store-in=secrets");

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(cp, dir.path(), ns.name(), &sa_token(cp, ns.name(), SA));
    let emu = emulator(&tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2UtaWQ="),
            user("bob@example.com", "Bob", "Builder", "Ym9iLWlk"),
        ],
    ))
    .await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let d = create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;

    // What an operator with ConfigMaps left (written here as the admin): a preview and a
    // managed set. The Secret setting must move or remove them with the chart's RBAC.
    let owner = Owner::of(&d).unwrap();
    let in_cms = Objects::new(ns.client(), ns.name(), StoreKind::ConfigMap);
    let old = dirsync::controller::preview::layout(
        &owner,
        StoreKind::ConfigMap,
        4096,
        &dirsync::sync::plan_run(
            &dirsync::sync::testing::FakeDirectory::with_users(
                (1..=300)
                    .map(|i| dirsync::sync::testing::entra_user(i, &format!("old{i}@example.com"))),
            ),
            &dirsync::sync::testing::FakeDirectory::new(),
            &dirsync::sync::SyncConfig::new("example.com", dirsync::sync::UpnMode::Enabled, 65),
            &dirsync::sync::ManagedSet::new(),
            &dirsync::sync::OtherResources::default(),
        )
        .await
        .unwrap(),
        true,
        "old-run",
        k8s_openapi::jiff::Timestamp::now(),
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1),
    )
    .unwrap();
    assert!(old.objects.len() >= 3, "a main ConfigMap and parts");
    dirsync::controller::preview::publish(&in_cms, &owner, &old)
        .await
        .unwrap();
    dirsync::controller::store::ManagedSetObjects::new(
        ns.client(),
        owner.clone(),
        StoreKind::ConfigMap,
    )
    .save(&dirsync::sync::ManagedSet::new())
    .await
    .unwrap();
    let labelled = |kind: &'static str| {
        let ns = ns.clone();
        let uid = owner.uid.clone();
        async move {
            let lp =
                kube::api::ListParams::default().labels(&format!("dirsync.io/owner-uid={uid}"));
            let mut names: Vec<String> = if kind == "ConfigMap" {
                ns.api::<ConfigMap>()
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect()
            } else {
                ns.api::<Secret>()
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect()
            };
            names.sort();
            names
        }
    };
    assert_eq!(labelled("ConfigMap").await.len(), old.objects.len() + 1);

    // A dry run as the chart's ServiceAccount: the preview in a Secret, nothing left in
    // ConfigMaps.
    let op = LocalOperator::start(
        &kubeconfig,
        dir.path(),
        ns.name(),
        &[store_in.as_str(), "--preview-ttl", "8s"],
    );
    op.wait_ready().await;
    let d = wait_reason(&ns, "example-com", "PreviewReady", &op).await;
    let p = status(&d).preview.expect("preview");
    assert_eq!(
        (p.kind, p.objects.clone()),
        (StoreKind::Secret, vec!["example-com-preview".to_string()])
    );
    assert_eq!(
        labelled("ConfigMap").await,
        Vec::<String>::new(),
        "the ConfigMap preview and managed set are gone"
    );
    assert_eq!(
        labelled("Secret").await,
        ["example-com-managed", "example-com-preview"]
    );
    assert!(
        scim_users(&scim.base_url()).await.is_empty(),
        "a dry run wrote users"
    );

    // The built-in `view` role (bound to a test user here) reads ConfigMaps but not the
    // preview Secret.
    aggregate_view(cp).await;
    run_ok(cp.kubectl().args([
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--user=viewer",
        "-n",
        ns.name(),
    ]));
    // The control (view reads ConfigMaps) also waits for the binding to reach the authorizer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !can_i(cp, ns.name(), "viewer", "get", "configmaps") {
        assert!(
            Instant::now() < deadline,
            "the view binding never took effect"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!can_i(
        cp,
        ns.name(),
        "viewer",
        "get",
        "secrets/example-com-preview"
    ));
    let o = cp
        .kubectl()
        .args([
            "get",
            "secret",
            "example-com-preview",
            "-n",
            ns.name(),
            "--as=viewer",
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("Forbidden"),
        "{}",
        text(&o)
    );
    let o = cp
        .kubectl()
        .args(["get", "secrets", "-n", ns.name(), "--as=viewer"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("Forbidden"),
        "{}",
        text(&o)
    );
    // The ServiceAccount keeps no more on ConfigMaps than moving old objects needs.
    let sa_user = format!("system:serviceaccount:{}:{SA}", ns.name());
    for verb in ["create", "patch", "update", "watch"] {
        assert!(
            !can_i(cp, ns.name(), &sa_user, verb, "configmaps"),
            "{verb} configmaps"
        );
    }
    for verb in ["get", "list", "delete"] {
        assert!(
            can_i(cp, ns.name(), &sa_user, verb, "configmaps"),
            "{verb} configmaps"
        );
    }

    // Once: the sync, its managed set and its run report, all Secrets.
    let patch = json!({"spec": {"mode": "Once"}});
    ns.api::<dirsync::crd::DirectorySync>()
        .patch(
            "example-com",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let d = wait_reason(&ns, "example-com", "Synced", &op).await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!((run.adds, run.failed), (2, 0), "{run:?}");
    assert_eq!(scim_users(&scim.base_url()).await.len(), 2);
    let secrets_now = labelled("Secret").await;
    assert!(
        secrets_now
            .iter()
            .any(|n| n.starts_with("example-com-report-")),
        "{secrets_now:?}"
    );
    assert!(
        secrets_now.contains(&"example-com-managed".to_string()),
        "{secrets_now:?}"
    );
    assert_eq!(labelled("ConfigMap").await, Vec::<String>::new());

    // The expired preview is removed (secrets delete).
    let deadline = Instant::now() + T;
    while labelled("Secret")
        .await
        .contains(&"example-com-preview".to_string())
    {
        assert!(
            Instant::now() < deadline,
            "expired preview not removed; log:\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = op.log();
    assert!(
        forbidden_lines(&log).is_empty(),
        "the operator was refused something:\n{}",
        forbidden_lines(&log).join("\n")
    );
    assert!(!log.contains("could not remove"), "{log}");
    eprintln!(
        "chart (Secrets) install + move + dry run + sync + expiry: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_the_operator_does_not_need_are_denied() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-deny").await;
    let other = cp.namespace("chart-deny-other").await;
    install(cp, RELEASE, ns.name(), &[]);
    put_secret(&ns, "scim", &[("token", "t")]).await;
    put_secret(&other, "scim", &[("token", "t")]).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(cp, dir.path(), ns.name(), &sa_token(cp, ns.name(), SA));

    let allowed = |args: &[&str]| {
        let o = kubectl_as(&kubeconfig).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "kubectl {args:?} should be allowed:\n{}",
            text(&o)
        );
    };
    let denied = |args: &[&str]| {
        let o = kubectl_as(&kubeconfig).args(args).output().unwrap();
        let t = text(&o);
        assert!(
            !o.status.success() && t.to_lowercase().contains("forbidden"),
            "kubectl {args:?} should be Forbidden:\n{t}"
        );
    };
    let n = ns.name();
    let o = other.name();
    // What it needs works with the token...
    allowed(&["get", "secret", "scim", "-n", n]);
    allowed(&["get", "configmaps", "-n", n]);
    allowed(&["get", "directorysyncs", "-n", n]);
    // ...what it does not need is refused.
    denied(&["delete", "secret", "scim", "-n", n]);
    denied(&[
        "create",
        "secret",
        "generic",
        "x",
        "--from-literal=a=b",
        "-n",
        n,
    ]);
    denied(&["label", "secret", "scim", "x=y", "-n", n]);
    denied(&["get", "secret", "scim", "-n", o]);
    denied(&["get", "configmaps", "-n", o]);
    denied(&["get", "pods", "-n", n]);
    denied(&["get", "namespaces"]);
    denied(&["get", "lease", "someone-elses-lease", "-n", n]);
    denied(&["create", "serviceaccount", "x", "-n", n]);
    denied(&["create", "token", SA, "-n", o]);
    denied(&["delete", "lease", LEASE, "-n", n]);
    // Spec writes and deletes of DirectorySyncs are not the operator's business.
    let dsync = json!({"apiVersion": "dirsync.io/v1alpha1", "kind": "DirectorySync", "metadata": {"name": "x"},
        "spec": {"domain": "example.com", "upnMode": "Enabled", "maxAllowedDeletions": 10, "mode": "DryRun",
        "source": {"entraID": {"tenantID": "example.com", "clientID": CLIENT_ID, "clientSecretRef": {"name": "a", "key": "b"}}},
        "destination": {"scim": {"endpoint": "https://scim.example.net/v2", "bearerTokenRef": {"name": "scim", "key": "token"}}}}});
    let f = dir.path().join("dsync.json");
    std::fs::write(&f, dsync.to_string()).unwrap();
    denied(&["create", "-f", f.to_str().unwrap(), "-n", n]);
    run_ok(
        cp.kubectl()
            .args(["create", "-f", f.to_str().unwrap(), "-n", n]),
    );
    denied(&[
        "annotate",
        "directorysync",
        "x",
        "dirsync.io/sync-now=1",
        "-n",
        n,
    ]);
    denied(&["delete", "directorysync", "x", "-n", n]);

    // watchNamespaces: the same rules in exactly the listed namespaces.
    let home = cp.namespace("chart-ns-home").await;
    install(
        cp,
        "listed",
        home.name(),
        &["--set", &format!("watchNamespaces={{{n},{o}}}")],
    );
    let dir2 = tempfile::tempdir().unwrap();
    let kc2 = token_kubeconfig(
        cp,
        dir2.path(),
        home.name(),
        &sa_token(cp, home.name(), "listed-dirsync"),
    );
    for watched in [n, o] {
        let out = kubectl_as(&kc2)
            .args(["get", "secret", "scim", "-n", watched])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = kubectl_as(&kc2)
        .args(["get", "secrets", "-n", home.name()])
        .output()
        .unwrap();
    assert!(
        text(&out).to_lowercase().contains("forbidden"),
        "the release namespace is not watched: {}",
        text(&out)
    );
    let out = kubectl_as(&kc2)
        .args(["get", "lease", "listed-dirsync-leader", "-n", home.name()])
        .output()
        .unwrap();
    assert!(
        !text(&out).to_lowercase().contains("forbidden"),
        "{}",
        text(&out)
    );
}

/// `kubectl auth can-i --list` lines, whitespace collapsed and sorted.
fn can_i_list(cp: &ControlPlane, ns: &str, user: &str) -> Vec<String> {
    let out =
        run_ok(
            cp.kubectl()
                .args(["auth", "can-i", "--list", "-n", ns, &format!("--as={user}")]),
        );
    let mut lines: Vec<String> = out
        .lines()
        .skip(1) // header
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// The chart's ServiceAccount's `kubectl auth can-i --list`, in the release namespace and
/// elsewhere, against `charts/dirsync/tests/<file>`.
async fn check_permissions_golden(
    cp: &ControlPlane,
    prefix: &str,
    values: &[&str],
    what: &str,
    file: &str,
) {
    let ns = cp.namespace(prefix).await;
    let elsewhere = cp.namespace(&format!("{prefix}-other")).await;
    install(cp, RELEASE, ns.name(), values);
    let user = format!("system:serviceaccount:{}:{SA}", ns.name());
    let here = can_i_list(cp, ns.name(), &user);
    let there = can_i_list(cp, elsewhere.name(), &user);

    let mut golden = format!(
        "# kubectl auth can-i --list as the chart's ServiceAccount ({what}), sorted.\n\
         # Reviewed: every line is a verb the operator uses (see templates/_helpers.tpl\n\
         # dirsync.namespaceRules) or a default of every authenticated user.\n\
         # Regenerate: DIRSYNC_UPDATE_GOLDEN=1 cargo test --test chart service_account_permissions\n\
         [release namespace]\n",
    );
    for l in &here {
        golden.push_str(l);
        golden.push('\n');
    }
    golden.push_str("[any other namespace]\n");
    for l in &there {
        golden.push_str(l);
        golden.push('\n');
    }
    let path = chart().join("tests").join(file);
    if std::env::var_os("DIRSYNC_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &golden).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(
        want,
        golden,
        "permissions changed; review and regenerate {}",
        path.display()
    );
    // Whatever the golden file says: no Secret or ConfigMap access outside the watched namespace.
    assert!(
        !there
            .iter()
            .any(|l| l.starts_with("secrets") || l.starts_with("configmaps")),
        "{there:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_permissions_match_the_golden_file() {
    let cp = control_plane().await;
    check_permissions_golden(
        cp,
        "chart-perms",
        &[],
        "default values",
        "permissions.golden",
    )
    .await;
    check_permissions_golden(
        cp,
        "chart-perms-secrets",
        &["--set", "operator.storeIn=secrets"],
        "operator.storeIn=secrets",
        "permissions-secrets.golden",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_deployment_passes_pod_security_restricted() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-pss").await;
    let patch = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "latest",
    }}});
    Api::<Namespace>::all(cp.client())
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let rendered = template(home.path(), ns.name(), &[]);
    let dep = find(&rendered, "Deployment")[0].clone();
    let dir = tempfile::tempdir().unwrap();

    let apply = |obj: &Value| -> Output {
        let f = dir.path().join("obj.json");
        std::fs::write(&f, obj.to_string()).unwrap();
        cp.kubectl()
            .args(["apply", "--dry-run=server", "-n", ns.name(), "-f"])
            .arg(&f)
            .output()
            .unwrap()
    };
    // The Deployment: accepted, with no Pod Security warning.
    let o = apply(&dep);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("PodSecurity"), "{}", text(&o));
    // Its pod: admitted under enforce=restricted (Deployments only get warnings; Pods are
    // what the admission controller refuses).
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dirsync-pss", "labels": dep["spec"]["template"]["metadata"]["labels"]},
        "spec": dep["spec"]["template"]["spec"]});
    let o = apply(&pod);
    assert!(
        o.status.success(),
        "restricted refused the chart's pod:\n{}",
        text(&o)
    );
    // Control: the same pod without the container security context is refused, so the
    // namespace really enforces `restricted`.
    let mut weak = pod.clone();
    weak["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    weak["spec"]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let o = apply(&weak);
    assert!(
        !o.status.success() && text(&o).contains("violates PodSecurity"),
        "{}",
        text(&o)
    );

    // The whole default chart (CRD included) passes a server-side dry run there too.
    let all = run_ok(
        helm(home.path())
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", ns.name()]),
    );
    let f = dir.path().join("all.yaml");
    std::fs::write(&f, all).unwrap();
    let o = cp
        .kubectl()
        .args(["apply", "--dry-run=server", "-n", ns.name(), "-f"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

// ---------------------------------------------------------------------------------------------
// examples/ and argocd/

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_are_valid() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-examples").await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "dry-run.yaml",
        "once.yaml",
        "periodic.yaml",
        "two-domains-one-destination.yaml",
        "secrets.yaml",
        "workload-identity.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "examples/{want} missing ({names:?})"
        );
    }
    let mut dsyncs = 0;
    for f in &files {
        // The API server: schema, CEL rules, Secrets, ServiceAccounts.
        let o = cp
            .kubectl()
            .args(["apply", "--dry-run=server", "-n", ns.name(), "-f"])
            .arg(f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", f.display(), text(&o));
        let text = std::fs::read_to_string(f).unwrap();
        for doc in docs(&text) {
            assert!(
                doc["metadata"]["namespace"].is_null(),
                "{}: examples carry no namespace",
                f.display()
            );
            match doc["kind"].as_str() {
                Some("DirectorySync") => {
                    // The operator's own reading of it: the typed resource and the spec checks
                    // that `dirsync plan -f` also applies.
                    let r: dirsync::crd::DirectorySync = serde_json::from_value(doc.clone())
                        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    r.spec
                        .validate()
                        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    assert!(r.spec.max_allowed_deletions <= 100);
                    dsyncs += 1;
                }
                Some("Secret") => {
                    // Placeholders only, never anything that looks like a real credential.
                    for (k, v) in doc["stringData"].as_object().expect("stringData").iter() {
                        assert!(
                            v.as_str().unwrap().contains("REPLACE-WITH"),
                            "{}: {k} is not a placeholder",
                            f.display()
                        );
                    }
                }
                Some("ServiceAccount") => {
                    assert!(
                        doc["metadata"]["annotations"]["azure.workload.identity/client-id"]
                            .is_string()
                    );
                }
                other => panic!("{}: unexpected kind {other:?}", f.display()),
            }
        }
    }
    assert_eq!(dsyncs, 6);
}

#[test]
fn argocd_snippet_carries_health_lua_verbatim() {
    let lua = std::fs::read_to_string(root().join("argocd/health.lua")).unwrap();
    let snippet = std::fs::read_to_string(root().join("argocd/argocd-cm-snippet.yaml")).unwrap();
    let cm: Value = serde_saphyr::from_str(&snippet).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let body = cm["data"]["resource.customizations.health.dirsync.io_DirectorySync"]
        .as_str()
        .expect("the health key");
    assert!(
        body == lua,
        "argocd/argocd-cm-snippet.yaml does not carry argocd/health.lua verbatim"
    );
}

/// The health check in gopher-lua (the interpreter Argo CD embeds), built by tools/setup.sh
/// from tools/lua-check.
#[test]
fn argocd_health_check_in_gopher_lua() {
    let bin = tools().bin("lua-check");
    let o = Command::new(bin)
        .arg(root().join("argocd/health.lua"))
        .arg(root().join("argocd/testdata"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "lua-check failed:\n{t}");
    assert!(t.contains(" 0 failed"), "{t}");
    // Every health the check can answer is covered by a sample.
    for h in ["Healthy", "Progressing", "Degraded"] {
        assert!(t.contains(&format!(": {h}: ")), "no sample ends {h}:\n{t}");
    }
}
