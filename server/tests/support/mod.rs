//! Helpers shared by the server's integration tests; each test binary uses `mod support;` and
//! the parts it needs.
//!
//! - [`cli`]: the real `steward-server` binary as a command-line tool.
//! - [`openbao`]: a real OpenBao dev server per test (`bao server -dev`), with helpers to seed
//!   KV data, policies, AppRoles and tokens, and to seal or stop it.
//! - [`server`]: a real Steward server per test (TLS on `127.0.0.1:0`, real SQLite file, a copy
//!   of the example site) and a simulated agent that enrolls and signs requests.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod cli;
pub mod openbao;
pub mod server;
