//! `steward-agent`: thin entry point. Everything lives in the library so tests can call it.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = steward_agent::Cli::parse();
    let code = match steward_agent::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // For the convergence benchmark: the process's peak resident set.
    if std::env::var_os("STEWARD_AGENT_PEAK_RSS").is_some() {
        if let Some(kb) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .map(|v| v.trim().trim_end_matches(" kB").trim().to_string())
            })
        {
            eprintln!("peak_rss_kb={kb}");
        }
    }
    code
}
