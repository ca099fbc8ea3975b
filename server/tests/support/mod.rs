//! Helpers shared by the server's integration tests; each test binary uses `mod support;` and
//! the parts it needs.
//!
//! - [`openbao`]: a real OpenBao dev server per test (`bao server -dev`), with helpers to seed
//!   KV data, policies, AppRoles and tokens, and to seal or stop it.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod openbao;
