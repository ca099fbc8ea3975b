//! steward-agent: the host side of Steward (DESIGN §7).
//!
//! `enroll` joins a server with a join string; `run` pulls (or reads) a signed catalog,
//! verifies it, converges the host through the providers and reports; `daemon` does that at
//! start, every interval plus splay, and when the server's long-poll says so; `status` prints
//! the last run; `template-seal` removes what must not be cloned. [`host`] is the safe
//! filesystem layer every file, directory and symlink provider writes through.

pub mod accounts;
pub mod client;
pub mod command;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod facts;
pub mod host;
pub mod pending;
pub mod providers;
pub mod run;
pub mod sessions;
pub mod spool;
pub mod state;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use steward_protocol::envelope::verify_catalog;
use steward_protocol::{KeyId, NodeId, ResourceSpec, Timestamp, MAX_CATALOG_BYTES};

/// Steward host agent.
#[derive(Debug, Parser)]
#[command(name = "steward-agent", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "FILE", default_value = config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// State directory (overrides the configuration).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join a server: make this host's keys (first time only), ask with the join string's
    /// token, and check the server's root key against the fingerprint pinned in it.
    Enroll {
        /// The join string (`steward:v1:<token>:<root fingerprint>:<url>`); default: the config's.
        #[arg(long, value_name = "JOIN")]
        join: Option<String>,
        /// Node name to ask for (default: the host name).
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
        /// Keep asking (with backoff) until an admin approves.
        #[arg(long)]
        wait: bool,
        /// The system whose facts (host name, machine id) are sent.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Converge this host once. Exit 0 no changes, 2 changes, 4 failures, 6 both, 1 could not
    /// run.
    Run(RunArgs),
    /// Run at start, then every interval plus splay, and when the server asks; enrolls first
    /// when needed. Stops on SIGTERM after the current resource.
    Daemon {
        /// Apply to this root instead of `/`.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Every run is a dry run: report what would change, change nothing (audit mode).
        #[arg(long)]
        noop: bool,
    },
    /// Print the last run's summary (time, serial, counts, failures) and the restarts
    /// deferred until their user is idle.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The system whose deferred restarts are listed (as given to `run --root`).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Prepare this machine to be captured as a VM template: remove the agent's keys,
    /// identity, cached catalog, spool and `/etc/machine-id`, so every clone enrolls as itself.
    TemplateSeal {
        /// The template's root.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Print this host's public keys (the X25519 one is `--to-key` of
    /// `steward-server compile --signed`).
    Keys,
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

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Report what would change; write nothing.
    #[arg(long)]
    pub noop: bool,
    /// Apply to this root (a mounted image or a sandbox) instead of `/`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Print the run report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Apply this local signed envelope instead of asking the server.
    #[arg(long, value_name = "FILE", requires = "trust")]
    pub catalog: Option<PathBuf>,
    /// Root key fingerprint to trust for `--catalog`.
    #[arg(long, value_name = "FINGERPRINT", requires = "catalog")]
    pub trust: Option<String>,
    /// Node name for `--catalog` (default: the enrolled name, else the host name).
    #[arg(long, value_name = "NAME", requires = "catalog")]
    pub node: Option<String>,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Everything the agent creates is private unless a provider sets a mode explicitly.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let explicit = cli.config.as_os_str() != config::DEFAULT_CONFIG;
    let config = config::AgentConfig::load(&cli.config, explicit)?;
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(|| config.state_dir.clone());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    match cli.command {
        Command::Verify {
            catalog,
            trust,
            node,
        } => verify(&catalog, &trust, &node),
        Command::Keys => {
            let state = state::StateDir::open(&state_dir)?;
            let b64 = base64::engine::general_purpose::STANDARD;
            println!(
                "signing_key {}",
                b64.encode(state.signing_key()?.public_bytes())
            );
            println!("signing_key_id {}", state.signing_key()?.key_id());
            println!(
                "encryption_key {}",
                b64.encode(state.encryption_key()?.public_bytes())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Enroll {
            join,
            hostname,
            wait,
            root,
        } => {
            let state = state::StateDir::open(&state_dir)?;
            let text = match join {
                Some(j) => j,
                None => config
                    .join_text()?
                    .context("no join string: pass --join or set join in the configuration")?,
            };
            let join: steward_protocol::join::JoinString =
                text.parse().context("invalid join string")?;
            if wait {
                daemon::enroll_until_approved(&state, &join, &config, &root, &stop)?;
                println!("enrolled and approved");
                return Ok(ExitCode::SUCCESS);
            }
            match daemon::enroll_once(&state, &join, &config, &root, hostname.as_deref())? {
                daemon::Enrolled::Approved => println!("enrolled and approved"),
                daemon::Enrolled::Pending => {
                    println!("enrolled; waiting for an admin to approve this node")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_command(&config, &state_dir, args, &stop),
        Command::Daemon { root, noop } => {
            let state = state::StateDir::open(&state_dir)?;
            let options = run_options(&config, root, noop);
            daemon::daemon(&config, &options, &state, &stop)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, root } => {
            let state = state::StateDir::open(&state_dir)?;
            let pending = host::Host::new(&root)
                .map_err(anyhow::Error::from)
                .and_then(|host| pending::load(&host));
            match state.summary()? {
                None => {
                    println!("no run yet");
                    if !json {
                        print!("{}", pending_text(&pending));
                    }
                    Ok(ExitCode::FAILURE)
                }
                Some(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                    Ok(ExitCode::SUCCESS)
                }
                Some(s) => {
                    print!("{}", status_text(&s, state.identity()?.as_ref()));
                    print!("{}", pending_text(&pending));
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::TemplateSeal { root } => {
            let state = state::StateDir::open(&state_dir)?;
            state.wipe()?;
            // An empty machine-id makes systemd generate a fresh one on the clone's first boot.
            let machine_id = root.join("etc/machine-id");
            if machine_id.exists() {
                state::write_durably(&machine_id, b"")?;
                std::fs::set_permissions(&machine_id, std::fs::Permissions::from_mode(0o444))?;
            }
            let _ = std::fs::remove_file(root.join("var/lib/dbus/machine-id"));
            println!(
                "sealed: keys, identity, cached catalog and spool removed from {}; /etc/machine-id emptied. Power off and capture the template now.",
                state.path().display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_options(config: &config::AgentConfig, root: PathBuf, noop: bool) -> run::RunOptions {
    run::RunOptions {
        noop,
        root,
        run_timeout: Duration::from_secs(config.run_timeout_secs),
        command_timeout: Duration::from_secs(config.command_timeout_secs),
        lock_wait: Duration::from_secs(config.lock_wait_secs),
        spool: spool::SpoolLimits {
            max_reports: config.spool_max_reports,
            max_bytes: config.spool_max_bytes,
        },
    }
}

fn run_command(
    config: &config::AgentConfig,
    state_dir: &std::path::Path,
    args: RunArgs,
    stop: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let state = state::StateDir::open(state_dir)?;
    let options = run_options(config, args.root.clone(), args.noop);
    let identity = state.identity()?;
    let outcome = if let (Some(path), Some(trust)) = (args.catalog, args.trust) {
        let node = match args.node {
            Some(n) => n,
            None => match &identity {
                Some(i) => i.node.0.clone(),
                None => facts::gather(&args.root)
                    .hostname
                    .context("cannot tell this node's name; pass --node")?,
            },
        };
        let source = run::Source::File {
            path,
            trust: parse_fingerprint(&trust)?,
            node: NodeId(node),
        };
        run::run_once(&state, &source, &options, stop)?
    } else {
        let identity = identity
            .filter(|i| i.approved)
            .context("not enrolled (or not yet approved): run `steward-agent enroll` first, or pass --catalog")?;
        let client = daemon::client_for(config, &identity.server_url)?;
        let source = run::Source::Server {
            client: &client,
            identity: &identity,
        };
        run::run_once(&state, &source, &options, stop)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.report)?);
    } else {
        print!("{}", run::human(&outcome));
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

fn status_text(s: &state::RunSummary, identity: Option<&state::Identity>) -> String {
    let mut out = String::new();
    if let Some(i) = identity {
        out.push_str(&format!(
            "node:     {} ({}){}\n",
            i.node,
            i.server_url,
            if i.approved { "" } else { ", pending approval" }
        ));
    }
    let status = serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    out.push_str(&format!(
        "last run: {} at {} ({} ms)\n",
        status, s.started_at, s.duration_ms
    ));
    out.push_str(&format!(
        "serial:   {}\n",
        s.serial.map_or("-".to_string(), |x| x.to_string())
    ));
    let t = &s.totals;
    out.push_str(&format!(
        "counts:   {} resources, {} changed, {} would change, {} failed, {} skipped{}\n",
        t.resources,
        t.changed,
        t.would_change,
        t.failed,
        t.skipped,
        if t.deferred > 0 {
            format!(", {} deferred", t.deferred)
        } else {
            String::new()
        }
    ));
    out.push_str(&format!(
        "reported: {}\n",
        if s.reported { "yes" } else { "no (spooled)" }
    ));
    if let Some(m) = &s.message {
        out.push_str(&format!("message:  {m}\n"));
    }
    for f in &s.failures {
        out.push_str(&format!("failed:   {f}\n"));
    }
    out
}

/// One line per restart deferred until its user is idle.
fn pending_text(pending: &anyhow::Result<Vec<pending::Record>>) -> String {
    match pending {
        Ok(records) => records
            .iter()
            .map(|r| {
                format!(
                    "deferred: {} (restart waits for {} to be idle, since {}{})\n",
                    r.unit,
                    r.user,
                    pending::rfc3339(r.since),
                    r.max_defer_secs
                        .map(|m| format!(", max_defer {}", pending::duration(m)))
                        .unwrap_or_default()
                )
            })
            .collect(),
        Err(e) => format!("deferred: cannot read {}: {e:#}\n", pending::PATH),
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
            eprintln!("refused: {}", run::refusal_text(&refusal));
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
