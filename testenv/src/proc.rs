//! Child processes that never outlive the test process.
//!
//! A Rust test binary never drops its statics, and a killed test process runs no code at all, so
//! cleanup cannot rely on `Drop` alone. Each process that starts servers also starts one small
//! watchdog: `sh` reading a pipe whose write end only this process holds. The parent tells it,
//! one line at a time, which processes to stop (`pid PID ARG`, where `ARG` must be one of that
//! process's own arguments, so a recycled pid is never hit) and which directories to remove
//! (`dir PATH`). When the pipe reaches end-of-file — normal exit, panic, `SIGKILL`, anything — the
//! watchdog sends `SIGTERM`, then `SIGKILL` after 2 s, and removes the directories.
//! The watchdog runs in its own process group and ignores `SIGINT`/`SIGTERM`/`SIGHUP`, so a
//! Ctrl-C in the terminal does not take it down before it has cleaned up.
//!
//! Directories of runs whose owner died anyway (e.g. the watchdog was killed too) are swept by
//! [`sweep_stale_runs`] at the next start.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;

const WATCHDOG_SCRIPT: &str = r#"
trap '' INT TERM HUP QUIT PIPE
set -f
pids=''
dirs=''
while IFS=' ' read -r kind pid arg; do
  case "$kind" in
    pid) pids="$pids $pid:$arg" ;;
    dir) dirs="$dirs
$pid${arg:+ $arg}" ;;
  esac
done
ours() { [ -r "/proc/$1/cmdline" ] && tr '\000' '\n' < "/proc/$1/cmdline" | grep -qxF -- "$2"; }
live=''
for e in $pids; do p=${e%%:*}; a=${e#*:}; if ours "$p" "$a"; then kill -TERM "$p" 2>/dev/null; live="$live $e"; fi; done
i=0
while [ -n "$live" ] && [ $i -lt 20 ]; do
  sleep 0.1; i=$((i+1)); next=''
  for e in $live; do p=${e%%:*}; a=${e#*:}; if ours "$p" "$a"; then next="$next $e"; fi; done
  live=$next
done
for e in $live; do p=${e%%:*}; a=${e#*:}; if ours "$p" "$a"; then kill -KILL "$p" 2>/dev/null; fi; done
sleep 0.2
printf '%s\n' "$dirs" | while IFS= read -r d; do [ -n "$d" ] && rm -rf -- "$d"; done
exit 0
"#;

static WATCHDOG: Mutex<Option<ChildStdin>> = Mutex::new(None);

fn with_watchdog(line: &str) -> anyhow::Result<()> {
    let mut guard = WATCHDOG.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("dirsync-testenv-watchdog")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the cleanup watchdog (sh)")?;
        *guard = child.stdin.take();
        // The watchdog is reaped by init after we exit; we never wait for it.
        drop(child);
    }
    let stdin = guard.as_mut().expect("watchdog stdin");
    stdin
        .write_all(line.as_bytes())
        .and_then(|_| stdin.flush())
        .context("talking to the cleanup watchdog")
}

/// Registers a process to be stopped when this process ends, however it ends. `marker` must be
/// one whole element of the process's argv (checked through `/proc/PID/cmdline`).
pub fn watch_pid(pid: u32, marker: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !marker.contains(['\n', ' ', ':']),
        "watchdog marker {marker:?} has a space, colon or newline"
    );
    with_watchdog(&format!("pid {pid} {marker}\n"))
}

/// Registers a directory to be removed when this process ends, however it ends.
pub fn watch_dir(dir: &Path) -> anyhow::Result<()> {
    let s = dir.to_str().context("data dir path is not UTF-8")?;
    anyhow::ensure!(!s.contains('\n'), "data dir path has a newline");
    with_watchdog(&format!("dir {s}\n"))
}

/// The start time of a process (field 22 of `/proc/PID/stat`), used to tell a live owner from a
/// recycled pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// `"PID STARTTIME"` of this process, written into each run directory's `owner` file.
pub fn owner_stamp() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or(0))
}

/// Whether the process that wrote `stamp` (see [`owner_stamp`]) is still alive.
pub fn owner_alive(stamp: &str) -> bool {
    let mut it = stamp.split_whitespace();
    let (Some(pid), Some(st)) = (it.next(), it.next()) else {
        return false;
    };
    let (Ok(pid), Ok(st)) = (pid.parse::<u32>(), st.parse::<u64>()) else {
        return false;
    };
    start_time(pid) == Some(st)
}

/// The pids of processes one of whose arguments contains `needle`.
pub fn pids_with_arg_containing(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(needle))
        {
            out.push(pid);
        }
    }
    out
}

/// Sends a signal with `kill(1)` (the workspace forbids `unsafe`, so no libc call).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills (SIGKILL) every process that has an argument containing `dir`, waits until they are
/// gone (at most 5 s), and removes `dir`.
pub fn kill_and_remove(dir: &Path) {
    if let Some(s) = dir.to_str() {
        for pid in pids_with_arg_containing(s) {
            signal(pid, "KILL");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pids_with_arg_containing(s).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes run directories under `root` (named `run-*`) whose owner process is gone, killing
/// whatever still runs from them (leftovers of runs that were killed together with their
/// watchdog). Returns how many were swept.
pub fn sweep_stale_runs(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut swept = 0;
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with("run-") || !path.is_dir() {
            continue;
        }
        let owner = std::fs::read_to_string(path.join("owner")).unwrap_or_default();
        if owner.is_empty() {
            // Being created right now by someone else, or very old and broken: only sweep the
            // latter (anything older than a minute).
            let young = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < Duration::from_secs(60));
            if young {
                continue;
            }
        } else if owner_alive(&owner) {
            continue;
        }
        kill_and_remove(&path);
        swept += 1;
    }
    swept
}

/// Free TCP ports on 127.0.0.1 (bound together, so they are distinct, then released).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding a free port on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A minimal HTTP/1.0 GET on loopback (no TLS). Returns the status code and the body.
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The last `lines` lines of a log file (for error messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// A fresh, uniquely named directory `root/run-<pid>-<n>-<nanos>` with an `owner` file.
pub fn new_run_dir(root: &Path) -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = root.join(format!(
        "run-{}-{}-{nanos:09}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("owner"), owner_stamp())?;
    Ok(dir)
}
