//! Tests of the harness itself (no dirsync types needed).

use std::time::{Duration, Instant};

use dirsync_testenv::{ControlPlane, proc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;

fn gone(pid: u32) -> bool {
    proc::start_time(pid).is_none()
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn wait_until(what: &str, budget: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + budget;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn shared_control_plane_serves_configmaps_in_a_fresh_namespace() {
    let cp = ControlPlane::shared();
    assert_eq!(cp.version(), "v1.37.2");
    let ns = cp.namespace("harness-cm").await;
    let cms = ns.api::<ConfigMap>();
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello"},
        "data": {"greeting": "hi"},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let back = cms.get("hello").await.unwrap();
    assert_eq!(back.data.unwrap()["greeting"], "hi");
    assert_eq!(back.metadata.namespace.as_deref(), Some(ns.name()));
}

#[tokio::test]
async fn anonymous_users_can_read_the_service_account_issuer_discovery() {
    let cp = ControlPlane::shared();
    let anon = cp.anonymous_client();
    let doc = anon
        .request_text(
            http::Request::get("/.well-known/openid-configuration")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .expect("anonymous GET /.well-known/openid-configuration");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["issuer"], cp.service_account_issuer());
    assert_eq!(doc["jwks_uri"], format!("{}/openid/v1/jwks", cp.server()));
    let jwks = anon
        .request_text(
            http::Request::get("/openid/v1/jwks")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .expect("anonymous GET /openid/v1/jwks");
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    // ...but nothing else.
    let err = anon
        .request_text(
            http::Request::get("/api/v1/namespaces")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
}

#[tokio::test]
async fn kubectl_sees_the_real_server_version() {
    let cp = ControlPlane::shared();
    let out = cp
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.37.2");
    assert_eq!(v["serverVersion"]["major"], "1");
    assert_eq!(v["serverVersion"]["minor"], "37");
}

#[test]
fn dedicated_control_plane_is_stopped_and_removed_on_drop() {
    let cp = ControlPlane::start_dedicated();
    let dir = cp.dir().to_path_buf();
    let pids: Vec<u32> = cp.pids().iter().map(|(_, p)| *p).collect();
    assert!(dir.exists());
    drop(cp);
    assert!(!dir.exists(), "{} still exists", dir.display());
    for pid in pids {
        assert!(gone(pid), "pid {pid} still runs");
    }
}

#[test]
fn a_killed_owner_leaves_nothing_behind() {
    // `serve` owns a control plane through the same watchdog as a test binary; SIGKILL it.
    let state = tempfile_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dirsync-testenv"))
        .args(["serve", "--state-dir"])
        .arg(&state)
        .env("DIRSYNC_TESTENV_CONTROLLER_MANAGER", "0")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state_file = state.join("state.json");
    wait_until("serve to be ready", Duration::from_secs(120), || {
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        state_file.exists()
    });
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    let run_dir = std::path::PathBuf::from(st["run_dir"].as_str().unwrap());
    let pids: Vec<u32> = st["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap() as u32)
        .collect();
    assert!(run_dir.exists());
    child.kill().unwrap(); // SIGKILL: no destructor, no signal handler runs
    child.wait().unwrap();
    wait_until(
        "the watchdog to stop etcd and kube-apiserver",
        Duration::from_secs(20),
        || pids.iter().all(|p| gone(*p)),
    );
    wait_until(
        "the watchdog to remove the data dir",
        Duration::from_secs(10),
        || !run_dir.exists(),
    );
    let _ = std::fs::remove_dir_all(&state);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dirsync-testenv-killtest-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn scim2_server_starts_answers_with_the_token_and_is_killed_on_drop() {
    let server = dirsync_testenv::Scim2Server::start("s3cret");
    let port = server.port();
    let pid = server.pid();
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}/v2"));
    let (code, _) =
        proc::http_get(port, "/v2/Users", &[("Authorization", "Bearer s3cret")]).unwrap();
    assert_eq!(code, 200);
    let (code, _) =
        proc::http_get(port, "/v2/Users", &[("Authorization", "Bearer wrong")]).unwrap();
    assert_eq!(code, 401);
    drop(server);
    assert!(gone(pid), "scim2-server {pid} still runs");
    assert!(proc::http_get(port, "/v2/ServiceProviderConfig", &[]).is_err());
}

#[test]
fn stale_runs_of_dead_owners_are_swept_and_live_ones_kept() {
    let root =
        std::env::temp_dir().join(format!("dirsync-testenv-sweeptest-{}", std::process::id()));
    let stale = root.join("run-stale");
    let live = proc::new_run_dir(&root).unwrap(); // owned by this (live) process
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("owner"), "1 0").unwrap(); // pid 1 with another start time: gone
    // A leftover server of the dead run: its argv names the run directory. It is `tail`, a
    // plain binary that keeps its argv for life: `sh -c "sleep 300" DIR` was flaky (dash execs
    // its last command in place, dropping DIR from argv before the sweep may look), and a
    // `python3` found through a version-manager shim passes through several execs.
    let mut leftover = std::process::Command::new("tail")
        .args(["-f", "/dev/null"])
        .arg(stale.join("etcd"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // `spawn` returns once the child has begun its exec, before the kernel has set up its new
    // argv: /proc/PID/cmdline can still read empty. Sweep only once it names the run dir, as
    // a real leftover of a dead run long does.
    let stale_arg = stale.to_string_lossy().into_owned();
    let visible = std::time::Instant::now() + Duration::from_secs(5);
    while !proc::pids_with_arg_containing(&stale_arg).contains(&leftover.id())
        && std::time::Instant::now() < visible
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(proc::sweep_stale_runs(&root), 1);
    assert!(!stale.exists());
    assert!(live.exists());
    // It must be gone by SIGKILL within seconds; if not, stop it ourselves and say what the
    // sweep could see, instead of waiting for ever.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = leftover.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        let seen = proc::pids_with_arg_containing(&stale_arg);
        let _ = leftover.kill();
        let _ = leftover.wait();
        panic!(
            "the leftover {} survived the sweep; processes naming the run dir: {seen:?}",
            leftover.id()
        );
    }
    assert!(status.unwrap().code().is_none(), "killed by a signal");
    std::fs::remove_dir_all(&root).unwrap();
}
