//! steward-agent: the host side of Steward.
//!
//! Today it verifies signed catalogs offline (`steward-agent verify`), through the protocol's
//! single verification function, exactly as runs will before applying anything; and [`host`]
//! is the safe filesystem layer every file, directory and symlink provider will write through
//! (fd-relative, no symlink followed, atomic replace, mode and owner set through the fd).
//! Enrollment, the poll loop, the providers and the report spool are the next milestone
//! (DESIGN §7).

pub mod accounts;
pub mod command;
pub mod engine;
pub mod host;
pub mod providers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use steward_protocol::envelope::verify_catalog;
use steward_protocol::{KeyId, NodeId, ResourceSpec, Timestamp, MAX_CATALOG_BYTES};

/// Steward host agent.
#[derive(Debug, Parser)]
#[command(name = "steward-agent", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a signed catalog envelope (e.g. from `steward-server compile --signed`) against a
    /// pinned root key fingerprint and node name; print what it holds. Exit 0 if accepted, 1 if
    /// refused. Nothing is applied.
    Verify {
        /// The envelope file.
        #[arg(long, value_name = "FILE")]
        catalog: PathBuf,
        /// The root key fingerprint to trust (`sha256:<hex>`, from the join string).
        #[arg(long, value_name = "FINGERPRINT")]
        trust: String,
        /// This node's name.
        #[arg(long, value_name = "NAME")]
        node: String,
    },
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify {
            catalog,
            trust,
            node,
        } => verify(&catalog, &trust, &node),
    }
}

fn verify(path: &std::path::Path, trust: &str, node: &str) -> anyhow::Result<ExitCode> {
    let trust = parse_fingerprint(trust)?;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    // Refuse an oversize file before reading it into memory (THREATS C10).
    if metadata.len() > MAX_CATALOG_BYTES as u64 {
        eprintln!("refused: catalog is larger than {MAX_CATALOG_BYTES} bytes");
        return Ok(ExitCode::FAILURE);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let now = Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("reading the clock")?
            .as_secs()
            .try_into()
            .context("clock out of range")?,
    );
    match verify_catalog(&bytes, &trust, &NodeId(node.to_string()), None, now) {
        Ok(verified) => {
            let resources = &verified.catalog.resources;
            let sealed = resources
                .iter()
                .filter(|r| matches!(&r.spec, ResourceSpec::File(f) if f.content.is_sensitive()))
                .count();
            println!(
                "accepted: node {node}, serial {}, digest {}, expires at {}, {} resources ({sealed} sealed)",
                verified.serial,
                verified.digest,
                verified.expires_at,
                resources.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            eprintln!("refused: {refusal}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Accepts `sha256:<64 hex>` (as in the join string) and returns it as a key id.
fn parse_fingerprint(text: &str) -> anyhow::Result<KeyId> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    anyhow::ensure!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "invalid root fingerprint {text:?}: expected sha256:<64 lowercase hex digits>"
    );
    Ok(KeyId(format!("sha256:{hex}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalized_and_validated() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap().0, format!("sha256:{hex}"));
        assert_eq!(
            parse_fingerprint(&format!("sha256:{hex}")).unwrap().0,
            format!("sha256:{hex}")
        );
        for bad in [
            "",
            "sha256:",
            "sha256:xyz",
            &"AB".repeat(32),
            &"a".repeat(63),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }
}
