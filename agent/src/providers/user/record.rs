//! The account record: what Steward itself did to an account when it offboarded it, so that
//! bringing the person back reverses exactly that and nothing more, and a purge that stopped
//! halfway never archives the same home twice.
//!
//! One JSON file per account, `/var/lib/steward/accounts/<user>.json` beneath the managed root
//! (so it travels with the root it describes), written through the host layer: atomic, 0600
//! root, in a directory that is root's alone (0700). It holds no secret: the uid, whether
//! Steward locked the password, the shadow expiry field as it was, and the path of the purge
//! archive once one was written.

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use steward_protocol::Mode;

use crate::host::{FileState, Host};

/// Where the records live, beneath the managed root.
pub(super) const DIR: &str = "/var/lib/steward/accounts";

/// Largest record read back (a record is about a hundred bytes).
const MAX_BYTES: u64 = 64 * 1024;

/// What Steward did to one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountRecord {
    /// The account the record is about: a record of another uid (the name was deleted and
    /// reused meanwhile) is not this account's.
    pub uid: u32,
    /// Steward locked the password (it was not locked before): unlock it on the way back.
    pub password_locked: bool,
    /// The shadow expiry field (days since the epoch, or empty) before Steward expired the
    /// account: restored on the way back.
    pub expiry_before: String,
    /// The purge archive of the home, recorded before it is written: reused (when it exists)
    /// by a later run instead of archiving the home again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

/// The record's path for `user`.
pub(super) fn path(user: &str) -> anyhow::Result<String> {
    if user.is_empty() || user.starts_with('.') || user.contains('/') {
        bail!("{user:?} cannot name an account record");
    }
    Ok(format!("{DIR}/{user}.json"))
}

/// The record of `user`, if there is one.
pub(super) fn load(host: &Host, user: &str) -> anyhow::Result<Option<AccountRecord>> {
    let path = path(user)?;
    match host
        .observe_file_limited(&path, MAX_BYTES)
        .with_context(|| format!("reading the account record {path}"))?
    {
        FileState::Absent => Ok(None),
        FileState::Regular(file) => {
            let bytes = file
                .content
                .with_context(|| format!("the account record {path} is too large"))?;
            let record = serde_json::from_slice(&bytes)
                .with_context(|| format!("the account record {path} is not valid"))?;
            Ok(Some(record))
        }
        FileState::Other { kind, .. } => {
            bail!("the account record {path} is a {kind}, not a regular file")
        }
    }
}

/// Writes the record of `user` (atomic, 0600 root), creating the record directory 0700 root.
pub(super) fn store(host: &Host, user: &str, record: &AccountRecord) -> anyhow::Result<()> {
    let path = path(user)?;
    super::ensure_root_dir(host, DIR)?;
    let mut bytes = serde_json::to_vec_pretty(record).context("encoding the account record")?;
    bytes.push(b'\n');
    host.write_file_atomic(&path, &bytes, Mode(0o600), 0, 0)
        .with_context(|| format!("writing the account record {path}"))
}

/// Removes the record of `user` (nothing when there is none). The record directory is root's
/// alone ([`store`] made or checked it), so removing by path cannot be redirected.
pub(super) fn remove(host: &Host, user: &str) -> anyhow::Result<()> {
    let path = path(user)?;
    if load(host, user)?.is_none() {
        return Ok(());
    }
    super::ensure_root_dir(host, DIR)?;
    match std::fs::remove_file(host.root().join(path.trim_start_matches('/'))) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the account record {path}")),
    }
}
