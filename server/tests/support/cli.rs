//! The real `steward-server` binary as a command-line tool.

use std::process::{Command, Output, Stdio};

/// Runs the CLI and waits for it, blocking the calling thread: tests that call it while their
/// in-process server runs use a multi-thread runtime, so the server (which may hold SQLite's
/// write lock in a transaction the CLI waits for) keeps running meanwhile.
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward-server"))
        .args(args)
        .env("USER", "alice")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Asserts `output` succeeded (showing both streams if not); returns its stdout.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
