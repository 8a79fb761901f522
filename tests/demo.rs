//! The README's first quick-start command, `tools/demo.sh`, run as a user runs it on a fresh
//! machine: the binaries it runs are removed from the target dir first, so its own build step
//! must produce every one of them (cargo only relinks here; on a fresh machine it builds them).
//! It must succeed, show its progress, print what the README says it prints, leave the SCIM
//! server's hand-made administrator alone, and stop everything it started.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin_dir() -> PathBuf {
    // target/<profile>/deps/demo-<hash> -> target/<profile>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target dir")
}

#[test]
fn the_readme_demo_runs_the_operator_and_shows_status_and_preview() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bins = bin_dir();
    for b in ["dirsync", "entra-emulator", "dirsync-testenv"] {
        assert!(
            bins.join(b).exists(),
            "{b} is not built in {} (tools/test.sh builds the workspace first)",
            bins.display()
        );
    }
    // As on a fresh machine: none of the binaries the demo runs exists until its build step
    // makes it (a build step that forgets one fails here).
    for b in ["dirsync", "entra-emulator", "dirsync-testenv"] {
        std::fs::remove_file(bins.join(b)).expect("removing a demo binary");
    }
    let target_dir = bins.parent().expect("target dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(root.join("tools/demo.sh"))
        .env_remove("DEMO_BIN_DIR")
        .env("CARGO_TARGET_DIR", target_dir)
        .env("DEMO_DIR", dir.path())
        .env("DEMO_USERS", "30")
        .env_remove("KUBECONFIG")
        .output()
        .expect("running tools/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );

    for b in ["dirsync", "entra-emulator", "dirsync-testenv"] {
        assert!(
            bins.join(b).exists(),
            "the demo's build step did not rebuild {b}"
        );
    }

    // What README "Quick start" says the demo shows, in that order: progress first.
    let steps = [
        "==> build, in the background: cargo build",
        "==> setup: tools/setup.sh --demo",
        "setup: what the demo needs is ready",
        "==> build: waiting for cargo build",
        "start a Kubernetes control plane",
        "start the Graph emulator: 30 generated users",
        "start a SCIM 2.0 server",
        "start the operator",
        "$ kubectl -n identity get dsync",
        "The dry run wrote a preview and nothing else: the SCIM server still holds 1 user.",
        "switch the resource to mode Once with approval Always",
        "$ kubectl -n identity get dsync",
        "The run wrote nothing: the SCIM server still holds 1 user.",
        "$ dirsync preview get example-com -n identity --pending | sha256sum",
        "status.approval.pending.sha256 is the same: sha256:",
        "approve the reviewed preview by its hash",
        "\"approvedPreview\":\"sha256:",
        "$ kubectl -n identity describe dsync example-com",
        "$ dirsync preview get example-com -n identity > preview.csv",
        "everything the demo started is being stopped",
    ];
    let mut at = 0;
    for s in steps {
        let found = stdout[at..]
            .find(s)
            .unwrap_or_else(|| panic!("{s:?} not printed (in order)\n--- stdout\n{stdout}"));
        at += found + s.len();
    }
    // `kubectl get dsync` after the sync: printer columns with the result and counts.
    let get_after = stdout
        .rsplit("$ kubectl -n identity get dsync")
        .next()
        .unwrap_or_default();
    let table: Vec<&str> = get_after.lines().skip(1).take(2).collect();
    assert!(
        table[0].contains("DOMAIN") && table[0].contains("LAST RESULT"),
        "{table:?}"
    );
    assert!(
        table[1].contains("example.com")
            && table[1].contains("Once")
            && table[1].contains("Synced"),
        "{table:?}\n{stdout}"
    );
    // `kubectl describe` tells the story: conditions and the events of both runs.
    let describe = stdout
        .split("$ kubectl -n identity describe dsync example-com")
        .nth(1)
        .unwrap_or_default();
    assert!(
        describe.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w == ["Reason:", "Synced"]
        }),
        "describe shows no condition with reason Synced\n{describe}"
    );
    // Waiting for approval: the table says so, and the approval the story's last run applied.
    let waiting = stdout
        .split("switch the resource to mode Once with approval Always")
        .nth(1)
        .and_then(|t| t.split("$ kubectl -n identity get dsync").nth(1))
        .unwrap_or_default();
    let row = waiting.lines().nth(2).unwrap_or_default();
    assert!(row.contains("AwaitingApproval"), "{waiting}");
    for s in [
        "Events:",
        "PreviewReady",
        "AwaitingApproval",
        "Synced",
        "Applied the approved preview sha256:",
    ] {
        assert!(describe.contains(s), "describe lacks {s:?}\n{describe}");
    }

    // The applied plan: every in-scope user added, the hand-made admin shown and untouched.
    let csv = std::fs::read_to_string(dir.path().join("preview.csv")).expect("preview.csv");
    assert!(
        csv.starts_with("\u{feff}action,userName,"),
        "BOM and header"
    );
    let adds = csv.lines().filter(|l| l.starts_with("Add,")).count();
    assert!(adds > 20, "{adds} Add rows\n{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("Unmanaged,admin@example.com,")),
        "{csv}"
    );
    let synced = format!("The SCIM server now holds {} users", adds + 1);
    assert!(stdout.contains(&synced), "{synced:?} not printed\n{stdout}");
    // The operator's log file is plain text: no terminal colour codes.
    let log = std::fs::read_to_string(dir.path().join("operator.log")).expect("operator.log");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in operator.log\n{log}"
    );
    // No secret value reaches the output.
    assert!(
        !stdout.contains("emulator-client-secret") && !stderr.contains("emulator-client-secret")
    );

    // Everything it started is stopped: the control plane's state is gone and no process of
    // the demo still runs.
    assert!(
        !dir.path().join("cluster").exists(),
        "the control plane was not taken down"
    );
    let dir_s = dir.path().to_string_lossy().to_string();
    let ps = Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    let left: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(&dir_s) || l.contains("demo-operator"))
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}
