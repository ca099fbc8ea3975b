//! `steward-server serve [--config FILE] [--listen ADDR] [--data-dir DIR] [--site DIR]
//! [--plain-listen ADDR]`: runs the catalog server until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::app::{serve, Listeners, Server};
use crate::config::{Config, Overrides, DEFAULT_CONFIG_PATH};
use crate::telemetry::{init_tracing, LogFormat};

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// TLS listen address (overrides `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Site directory (overrides `site`).
    #[arg(long, value_name = "DIR")]
    pub site: Option<PathBuf>,
    /// Plain HTTP listener for a local proxy: loopback ADDR:PORT or unix:/path (overrides
    /// `plain_listen`).
    #[arg(long, value_name = "ADDR")]
    pub plain_listen: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing(LogFormat::detect());
    let config = Config::load(&args.config)?
        .with_overrides(Overrides {
            listen: args.listen,
            data_dir: args.data_dir,
            site: args.site,
            plain_listen: args.plain_listen,
        })
        .resolve()
        .with_context(|| format!("in config file {}", args.config.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        let server = Server::build(config).await?;
        serve(server, listeners, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::terminate(),
    ) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(error = %error, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
