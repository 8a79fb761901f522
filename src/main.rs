//! The `dirsync` binary: the operator, the standalone `plan` / `apply` commands, and helpers.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    dirsync::cli::main().await
}
