//! Tracing setup: [`init_tracing`] once per process, first thing in `main`'s commands that
//! log. JSON lines when stderr is not a terminal (systemd's journal), plain text on a terminal.
//! The level comes from `RUST_LOG` (default `info`).
//!
//! What is logged is decided where it is logged: request spans carry method and route template,
//! never bodies, tokens, keys or secret values (THREATS K1).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

impl LogFormat {
    /// JSON unless stderr is a terminal.
    pub fn detect() -> LogFormat {
        if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    }
}

/// Installs the global subscriber writing to stderr. A second call (tests) changes nothing.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
