//! `steward-agent`: thin entry point. Everything lives in the library so tests can call it.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = steward_agent::Cli::parse();
    match steward_agent::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
