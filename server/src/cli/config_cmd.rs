//! `steward-server config example` prints the commented example configuration;
//! `steward-server config check [--config FILE]` validates a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH, EXAMPLE};

/// Arguments of `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the commented example configuration.
    Example,
    /// Validate a configuration file and exit 1 if it is invalid.
    Check {
        /// The config file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Example => {
            print!("{EXAMPLE}");
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Check { config } => {
            Config::load(&config)?.resolve()?;
            println!("{}: ok", config.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
