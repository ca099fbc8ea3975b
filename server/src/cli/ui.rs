//! `steward-server ui hash-password`: the argon2id hash for `[ui] admin_password_hash`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

/// Arguments of `ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UiCommand,
}

/// `ui` subcommands.
#[derive(Debug, Subcommand)]
pub enum UiCommand {
    /// Read a password from standard input (one line) and print its argon2id hash, for
    /// `admin_password_hash` in the `[ui]` section of the server config.
    HashPassword,
}

/// The shortest local admin password accepted.
const MIN_PASSWORD_CHARS: usize = 12;

/// Runs `ui`.
pub fn run(args: UiArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        UiCommand::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password (input is shown; pipe it in to avoid that): ");
                let _ = std::io::stderr().flush();
            }
            let mut line = Zeroizing::new(String::new());
            stdin
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.chars().count() < MIN_PASSWORD_CHARS {
                bail!("the password must have at least {MIN_PASSWORD_CHARS} characters");
            }
            println!("{}", crate::ui::auth::hash_password(password)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
