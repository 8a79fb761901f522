//! Command-line entry points (docs/behaviour.md §5). Exit codes: 0 done, 1 error, 2 usage, 3 guard
//! tripped, 4 partially failed, 5 awaiting approval.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod inputs;
pub mod operator;
pub mod preview;
pub mod standalone;
pub mod state_file;

/// Exit codes of the command line (docs/behaviour.md §5).
pub mod exit {
    pub const DONE: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const GUARD_TRIPPED: u8 = 3;
    pub const PARTIALLY_FAILED: u8 = 4;
    pub const AWAITING_APPROVAL: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "dirsync",
    version,
    about = "Keeps a SCIM 2.0 user directory in step with Microsoft Entra ID"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the DirectorySync CustomResourceDefinition (YAML).
    Crd,
    /// Plan a run without writing anything: print the preview CSV and a summary.
    /// Exit 0 even when applying would trip the deletion guard.
    Plan {
        #[command(flatten)]
        run: standalone::RunArgs,
        /// Write the preview CSV here instead of standard output.
        #[arg(long, value_name = "CSV")]
        out: Option<std::path::PathBuf>,
    },
    /// Plan and apply now, whatever spec.mode says. Needs --state.
    /// Exit 3 when the deletion guard cancels the run, 4 when some users failed, 5 when
    /// spec.approval asks for an approved preview and none was given.
    Apply {
        #[command(flatten)]
        run: standalone::RunArgs,
        /// A reviewed preview CSV (from dirsync plan --out): apply only the rows identical in it
        /// and in the fresh plan. Its Delete rows count as confirmed, so the deletion guard
        /// does not cancel them.
        #[arg(long, value_name = "CSV")]
        approved_preview: Option<std::path::PathBuf>,
        /// Read both sides whole, even when the --state file holds a usable delta link (an
        /// apply is otherwise incremental between full runs; see spec.fullSyncInterval).
        #[arg(long)]
        full: bool,
    },
    /// Run the Kubernetes operator (kubeconfig or in-cluster configuration).
    Operator(Box<operator::OperatorArgs>),
    /// Read what the operator stored.
    Preview {
        #[command(subcommand)]
        command: preview::PreviewCommand,
    },
}

/// Parses the command line and runs it.
pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout with success, usage errors to stderr with 2.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                exit::USAGE
            } else {
                exit::DONE
            });
        }
    };
    match cli.command {
        Command::Plan { run, out } => ExitCode::from(standalone::plan(run, out).await),
        Command::Apply {
            run,
            approved_preview,
            full,
        } => ExitCode::from(standalone::apply(run, approved_preview, full).await),
        Command::Operator(args) => operator::run(*args).await,
        Command::Preview { command } => preview::run(command).await,
        Command::Crd => match crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::from(exit::DONE)
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(exit::ERROR)
            }
        },
    }
}

/// The CRD as committed in `crds/directorysyncs.dirsync.io.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&crate::crd::directory_sync_crd())
}
