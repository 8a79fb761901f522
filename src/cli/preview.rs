//! `dirsync preview get NAME -n NAMESPACE [--pending]`: reassembles a stored preview
//! (ConfigMaps, or Secrets when the operator runs with `--store-in=secrets`), checks its sha256
//! and writes the CSV to standard output, byte for byte: `| sha256sum` prints the hash an
//! approval names (docs/behaviour.md §9).

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use kube::Client;

use crate::controller::objects::{Objects, StoreKind};
use crate::controller::preview;

#[derive(Subcommand, Debug, Clone)]
pub enum PreviewCommand {
    /// Write the preview CSV of a DirectorySync to standard output.
    Get(GetArgs),
}

#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// The DirectorySync's name.
    pub name: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The preview pinned for approval (<name>-pending) instead of the latest run's.
    #[arg(long)]
    pub pending: bool,
    /// Print summary.json's storage facts to standard error.
    #[arg(long)]
    pub verbose: bool,
}

pub async fn run(cmd: PreviewCommand) -> ExitCode {
    match cmd {
        PreviewCommand::Get(a) => get(a).await,
    }
}

async fn get(a: GetArgs) -> ExitCode {
    crate::clients::outbound::init_crypto();
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: no Kubernetes client configuration: {e}");
            return ExitCode::from(1);
        }
    };
    let namespace = match &a.namespace {
        Some(ns) => ns.clone(),
        None => client.default_namespace().to_owned(),
    };
    let objects = Objects::new(client, &namespace, StoreKind::ConfigMap);
    let shelf = if a.pending {
        preview::Shelf::Pending
    } else {
        preview::Shelf::Latest
    };
    match preview::read(&objects, &a.name, shelf).await {
        Ok((csv, storage)) => {
            if a.verbose {
                eprintln!(
                    "layout {} in {}s {:?}: {} rows, {} bytes, sha256 {} (checked), expires {}",
                    storage.layout,
                    storage.kind,
                    storage.objects,
                    storage.rows,
                    storage.csv_bytes,
                    storage.sha256,
                    storage.expires_at
                );
            }
            if a.pending {
                eprintln!(
                    "approve it with: kubectl patch dsync {} -n {namespace} --type merge -p '{{\"spec\":{{\"approvedPreview\":\"sha256:{}\"}}}}'",
                    a.name, storage.sha256
                );
            }
            let mut out = std::io::stdout().lock();
            if out.write_all(&csv).and_then(|_| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
