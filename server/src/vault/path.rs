//! KV paths as written in a site (`secret/openclaw`), checked before they go into a URL.

use crate::vault::VaultError;

/// Longest accepted path, in bytes.
const MAX_PATH_LEN: usize = 512;

/// A validated KV v2 path: the first segment is the mount, the rest the secret's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvPath<'a> {
    pub(crate) mount: &'a str,
    pub(crate) rest: &'a str,
}

impl<'a> KvPath<'a> {
    /// Checks `path`: at least two `/`-separated segments, none empty, `.` or `..`, only
    /// `[A-Za-z0-9._-]` in them, at most 512 bytes.
    pub(crate) fn parse(path: &'a str) -> Result<Self, VaultError> {
        let invalid = |reason| VaultError::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() {
            return Err(invalid("is empty"));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(invalid("is longer than 512 bytes"));
        }
        check_segments(path).map_err(invalid)?;
        match path.split_once('/') {
            Some((mount, rest)) => Ok(KvPath { mount, rest }),
            None => Err(invalid("must be <mount>/<path>, like secret/platform")),
        }
    }

    /// The KV v2 read endpoint, relative to `/v1/`.
    pub(crate) fn data_api_path(&self) -> String {
        format!("{}/data/{}", self.mount, self.rest)
    }
}

/// Checks an auth mount such as `approle` or `team/approle`.
pub(crate) fn check_mount(mount: &str) -> Result<(), &'static str> {
    if mount.is_empty() {
        return Err("is empty");
    }
    check_segments(mount)
}

fn check_segments(path: &str) -> Result<(), &'static str> {
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(if bad.is_whitespace() || bad.is_control() {
            "contains whitespace or a control character"
        } else {
            "may hold only letters, digits, '.', '_', '-' and '/'"
        });
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("has an empty segment (leading, trailing or doubled '/')"),
            "." | ".." => return Err("must not have '.' or '..' segments"),
            _ => {}
        }
    }
    Ok(())
}
