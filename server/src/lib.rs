//! steward-server: the catalog server and its admin CLI.
//!
//! - [`app`]: building the server ([`Server::build`]) and [`serve`] on bound listeners.
//! - [`http`]: the route table (deny by default), agent API, admin API, health and metrics.
//! - [`ui`]: the admin web UI (server-rendered pages, sign-in, CSRF, security headers).
//! - [`service`]: catalogs (compile, serial, sign, seal), enrollment policy, admin operations.
//! - [`config`], [`keys`], [`tls`], [`metrics`], [`telemetry`], [`state`]: the server's parts.
//! - [`cli`]: `serve`, `config`, `token`, `node`, `backup`, `check`, `compile`, `diff`, `add-user`.
//! - [`catalog_diff`]: resource-level differences between two catalogs (secrets never shown).
//! - [`retention`]: scheduled pruning of old run reports.
//! - [`roster_edit`]: appending a roster entry as text, comments kept.
//! - [`vault`]: the Vault / OpenBao KV v2 client (token and AppRole auth, renewal).
//! - [`db`]: the SQLite store (sqlx, migrations in `../migrations`).

pub mod app;
pub mod catalog_diff;
pub mod cli;
pub mod config;
pub mod db;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod retention;
pub mod roster_edit;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod ui;
pub mod vault;

pub use app::{serve, Listeners, PlainListener, Server};
