//! `steward-server`: thin entry point. Everything lives in the library so tests can call it.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = steward_server::cli::Cli::parse();
    match steward_server::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
