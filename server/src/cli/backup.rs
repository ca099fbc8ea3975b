//! `steward-server backup FILE`: a consistent, integrity-checked copy of the live database
//! (`VACUUM INTO`), mode 0600. The keys are not in the database: back up the data directory's
//! `*.key` files once, separately.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::store::{runtime, StoreArgs};

/// Arguments of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy (must not exist).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where the database is.
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: BackupArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let db = args.store.open_db().await?;
        let copied = db.backup_to(&args.file).await;
        db.close().await;
        copied?;
        println!("backup written to {}", args.file.display());
        Ok(ExitCode::SUCCESS)
    })
}
