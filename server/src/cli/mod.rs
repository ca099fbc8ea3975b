//! Command-line interface: one file per subcommand; doc comments are the help text.
//! `serve` runs the server; `token`, `node` and `backup` work on the server's database
//! directly; `check`, `compile` and `add-user` work on a site offline; `ui hash-password` makes
//! the local admin password's hash.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod add_user;
mod backup;
mod check;
mod compile;
mod config_cmd;
mod diff;
mod keys;
mod node;
mod serials;
mod serve;
pub mod store;
mod token;
mod ui;

/// Steward catalog server and admin tools.
#[derive(Debug, Parser)]
#[command(name = "steward-server", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the catalog server (HTTPS API for agents and admins) until SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
    /// Print the commented example configuration, or check a configuration file.
    Config(config_cmd::ConfigArgs),
    /// Bootstrap tokens: create (prints the join string once), list, revoke.
    Token(token::TokenArgs),
    /// Nodes: list, approve, revoke, run-now (on the database, audited).
    Node(node::NodeArgs),
    /// The server's keys: show fingerprints, rotate the catalog signing key.
    Keys(keys::KeysArgs),
    /// Catalog serials: `rebase` after the server's clock ran ahead (stop the server first).
    Serials(serials::SerialsArgs),
    /// Write a consistent copy of the database to FILE.
    Backup(backup::BackupArgs),
    /// Validate a site; print every error as FILE:LINE: field: message and exit 1 if any.
    Check(check::CheckArgs),
    /// Compile one node's catalog offline and print it (sensitive values redacted).
    Compile(compile::CompileArgs),
    /// Preview a site change: compile every approved node (or --node) with both sites and
    /// print per host errored / changed (resource diff, redacted) / unchanged. Exit 0, 2, 4, 6.
    Diff(diff::DiffArgs),
    /// Add a person to roster.yaml: prompts (or flags), validates everything, then appends
    /// atomically, keeping the file's comments and formatting.
    AddUser(add_user::AddUserArgs),
    /// Web UI helpers: `hash-password` prints the argon2id hash for `[ui] admin_password_hash`.
    Ui(ui::UiArgs),
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Config(args) => config_cmd::run(args),
        Command::Token(args) => token::run(args),
        Command::Node(args) => node::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Serials(args) => serials::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Check(args) => check::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Diff(args) => diff::run(args),
        Command::AddUser(args) => add_user::run(args),
        Command::Ui(args) => ui::run(args),
    }
}

/// Prints site errors with their file paths joined to the site directory, one per line.
fn print_site_errors(site_dir: &std::path::Path, errors: &steward_catalogs::SiteErrors) {
    for error in &errors.0 {
        let mut shown = error.clone();
        shown.loc.file = site_dir.join(&error.loc.file).display().to_string();
        eprintln!("{shown}");
    }
}
