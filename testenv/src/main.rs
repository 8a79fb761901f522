//! `dirsync-testenv up|down|status|env`: a local control plane for manual use and the demo.
//!
//! `up` starts etcd + kube-apiserver (+ kube-controller-manager when installed) in the
//! background under a state directory (default `$DIRSYNC_CACHE/local-cluster`), installs the
//! CRDs from `crds/`, and prints `export KUBECONFIG=...`. `down` stops it and removes its data.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dirsync_testenv::{ControlPlane, Options, proc, tools};
use serde::{Deserialize, Serialize};

const USAGE: &str = "usage: dirsync-testenv <up|down|status|env> [--state-dir DIR]

  up      start a local control plane in the background and print how to use it
  down    stop it and remove its data
  status  say whether it runs (exit 0) or not (exit 3)
  env     print only the export lines (eval \"$(dirsync-testenv env)\")

The state directory defaults to $DIRSYNC_CACHE/local-cluster ($HOME/.cache/dirsync/local-cluster).
Set DIRSYNC_TESTENV_CONTROLLER_MANAGER=0 to run without kube-controller-manager.";

#[derive(Serialize, Deserialize, Debug)]
struct State {
    /// `"PID STARTTIME"` of the `serve` process.
    owner: String,
    pid: u32,
    server: String,
    kubeconfig: PathBuf,
    version: String,
    startup_secs: f64,
    run_dir: PathBuf,
    pids: Vec<(String, u32)>,
    controller_manager: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = None;
    let mut state_dir = tools().cache.join("local-cluster");
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--state-dir" if i + 1 < args.len() => {
                state_dir = PathBuf::from(&args[i + 1]);
                i += 1;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            c if cmd.is_none() && !c.starts_with('-') => cmd = Some(c.to_string()),
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    let state_dir = absolute(&state_dir);
    let result = match cmd.as_deref() {
        Some("up") => up(&state_dir),
        Some("down") => down(&state_dir),
        Some("status") => status(&state_dir),
        Some("env") => env(&state_dir),
        Some("serve") => serve(&state_dir),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dirsync-testenv: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn read_state(state_dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(state_dir.join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The state of a control plane whose `serve` process is alive.
fn live_state(state_dir: &Path) -> Option<State> {
    read_state(state_dir).filter(|s| proc::owner_alive(&s.owner))
}

fn export_lines(state: &State) -> String {
    format!(
        "export KUBECONFIG={}\nexport PATH={}:$PATH",
        state.kubeconfig.display(),
        tools().bin_dir.display()
    )
}

fn print_howto(state: &State, state_dir: &Path) {
    println!(
        "Kubernetes {} is running at {} (started in {:.1} s{}; pids: {}).",
        state.version,
        state.server,
        state.startup_secs,
        if state.controller_manager {
            ", with kube-controller-manager"
        } else {
            ""
        },
        state
            .pids
            .iter()
            .map(|(n, p)| format!("{n} {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("Use it with:\n");
    println!("{}", export_lines(state));
    println!("kubectl get directorysyncs -A\n");
    println!("Logs: {}/*.log", state.run_dir.display());
    let down = if state_dir == tools().cache.join("local-cluster") {
        "tools/cluster-down.sh".to_string()
    } else {
        format!("dirsync-testenv down --state-dir {}", state_dir.display())
    };
    println!("Stop it (and remove its data) with: {down}");
}

fn up(state_dir: &Path) -> anyhow::Result<ExitCode> {
    if let Some(state) = live_state(state_dir) {
        println!("Already running.");
        print_howto(&state, state_dir);
        return Ok(ExitCode::SUCCESS);
    }
    // Leftovers of a control plane whose serve process died.
    cleanup(state_dir);
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    // Fail early with setup's message when a binary is missing.
    tools().try_bin("etcd")?;
    tools().try_bin("kube-apiserver")?;

    let log = state_dir.join("serve.log");
    let out = std::fs::File::create(&log)?;
    let exe = std::env::current_exe().context("finding this program")?;
    let t0 = Instant::now();
    eprintln!(
        "dirsync-testenv: starting a control plane under {} ...",
        state_dir.display()
    );
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .arg("serve")
            .arg("--state-dir")
            .arg(state_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting the background control plane")?
    };
    let deadline = t0 + Duration::from_secs(240);
    loop {
        if let Some(state) = live_state(state_dir).filter(|s| s.pid == child.id()) {
            print_howto(&state, state_dir);
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the control plane did not start ({status}):\n{}",
                proc::tail(&log, 60)
            );
        }
        if Instant::now() > deadline {
            proc::signal(child.id(), "TERM");
            bail!(
                "the control plane did not start within 240 s:\n{}",
                proc::tail(&log, 60)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills whatever still runs from `state_dir` and removes it.
fn cleanup(state_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("run-") {
                proc::kill_and_remove(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(state_dir);
}

fn down(state_dir: &Path) -> anyhow::Result<ExitCode> {
    match live_state(state_dir) {
        Some(state) => {
            proc::signal(state.pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while proc::owner_alive(&state.owner) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if proc::owner_alive(&state.owner) {
                proc::signal(state.pid, "KILL");
            }
            cleanup(state_dir);
            println!(
                "Stopped the control plane at {} and removed {}.",
                state.server,
                state_dir.display()
            );
        }
        None => {
            let existed = state_dir.exists();
            cleanup(state_dir);
            if existed {
                println!(
                    "No control plane was running; removed leftovers in {}.",
                    state_dir.display()
                );
            } else {
                println!("No control plane is running.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(state) = live_state(state_dir) else {
        println!(
            "No control plane is running (state dir {}).",
            state_dir.display()
        );
        return Ok(ExitCode::from(3));
    };
    let ready = readyz(&state.kubeconfig);
    println!(
        "ready: {}",
        match &ready {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("no ({e:#})"),
        }
    );
    print_howto(&state, state_dir);
    Ok(if ready.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn readyz(kubeconfig: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        let body = client
            .request_text(http::Request::get("/readyz").body(Vec::new())?)
            .await?;
        anyhow::ensure!(body.trim() == "ok", "/readyz: {body}");
        Ok(())
    })
}

fn env(state_dir: &Path) -> anyhow::Result<ExitCode> {
    match live_state(state_dir) {
        Some(state) => {
            println!("{}", export_lines(&state));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("No control plane is running; start one with tools/cluster-up.sh");
            Ok(ExitCode::from(3))
        }
    }
}

/// The background process started by `up`: runs the control plane until SIGTERM/SIGINT.
fn serve(state_dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(state_dir)?;
    let mut opts = Options::from_env();
    opts.data_root = state_dir.to_path_buf();
    let cp = ControlPlane::start(opts)?;
    let kubeconfig = state_dir.join("kubeconfig");
    std::fs::copy(cp.kubeconfig(), &kubeconfig).context("copying the kubeconfig")?;
    let state = State {
        owner: proc::owner_stamp(),
        pid: std::process::id(),
        server: cp.server().to_string(),
        kubeconfig,
        version: cp.version().to_string(),
        startup_secs: cp.startup_time().as_secs_f64(),
        run_dir: cp.dir().to_path_buf(),
        pids: cp.pids().to_vec(),
        controller_manager: cp.has_controller_manager(),
    };
    let tmp = state_dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&state)?)?;
    std::fs::rename(&tmp, state_dir.join("state.json"))?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signal = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => return anyhow::Ok("SIGTERM"),
                _ = int.recv() => return anyhow::Ok("SIGINT"),
                _ = hup.recv() => continue, // survive the terminal closing
            }
        }
    })?;
    eprintln!("dirsync-testenv: {signal}: stopping");
    cp.stop();
    let _ = std::fs::remove_file(state_dir.join("state.json"));
    let _ = std::fs::remove_file(state_dir.join("kubeconfig"));
    Ok(ExitCode::SUCCESS)
}
