//! A real SCIM 2.0 server (PyPI `scim2-server`, pinned in `tools/requirements.txt`).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::proc;
use crate::tools::tools;

/// `scim2-server` on a free loopback port, killed on drop (and by the watchdog if the test
/// process dies).
pub struct Scim2Server {
    child: Child,
    port: u16,
    token: String,
    dir: PathBuf,
}

impl std::fmt::Debug for Scim2Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scim2Server")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Scim2Server {
    /// Starts `scim2-server --bearer-token TOKEN` and waits until
    /// `/v2/ServiceProviderConfig` answers 200. Panics with its log on failure.
    pub fn start(token: &str) -> Scim2Server {
        Scim2Server::start_with_args(token, &[]).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Scim2Server::start`] with extra arguments (e.g. `--service-provider-config FILE`,
    /// `--tenant NAME`).
    pub fn start_with_args(token: &str, extra: &[&str]) -> anyhow::Result<Scim2Server> {
        let bin = tools().try_venv_bin("scim2-server")?;
        let root = std::env::temp_dir().join("dirsync-testenv");
        proc::sweep_stale_runs(&root);
        let mut last_err = None;
        for _attempt in 0..3 {
            let dir = proc::new_run_dir(&root)?;
            proc::watch_dir(&dir)?;
            let port = proc::free_ports(1)?[0];
            let log = dir.join("scim2-server.log");
            let out = File::create(&log)?;
            let port_arg = format!("--port={port}");
            let child = Command::new(&bin)
                .args([
                    "--hostname",
                    "127.0.0.1",
                    &port_arg,
                    "--bearer-token",
                    token,
                ])
                .args(extra)
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            proc::watch_pid(child.id(), &port_arg)?;
            let mut server = Scim2Server {
                child,
                port,
                token: token.to_string(),
                dir,
            };
            match server.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let text = format!("{e:#}");
                    last_err = Some(e);
                    if !text.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("scim2-server did not start")))
    }

    fn wait_ready(&mut self, budget: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + budget;
        let auth = format!("Bearer {}", self.token);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "scim2-server exited ({status}):\n{}",
                    proc::tail(&self.log(), 30)
                );
            }
            if let Ok((200, _)) = proc::http_get(
                self.port,
                "/v2/ServiceProviderConfig",
                &[("Authorization", &auth)],
            ) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "scim2-server not answering after {budget:?}:\n{}",
                    proc::tail(&self.log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT/v2` (the SCIM base URL).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v2", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout/stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("scim2-server.log")
    }

    /// How many requests it has logged so far (every method), e.g. to check that a run made
    /// none.
    pub fn request_count(&self) -> usize {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                ["\"GET /", "\"POST /", "\"PUT /", "\"PATCH /", "\"DELETE /"]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .count()
    }

    /// Sends SIGINT (the server then writes `--dump-resources` if given) and waits for it to exit.
    pub fn interrupt(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        proc::signal(self.child.id(), "INT");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("scim2-server did not exit on SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Scim2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
