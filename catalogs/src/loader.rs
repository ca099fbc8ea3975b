//! The only I/O of this crate: read a site directory (or a Vault data file) into memory, then
//! hand it to the pure parsers ([`crate::site::parse_site`], [`crate::vault::parse_vault_data`]).
//!
//! Read from a site directory: `roster.yaml`, `tiers.yaml`, `site.yaml` (a missing one is
//! reported by `parse_site` as a site error) and every regular file under `files/`, recursively.
//! Other top-level entries (a README, an example `vault-data.yaml`) are ignored. Refused:
//! symbolic links and special files (FIFOs, devices, sockets) anywhere we read, names that are
//! not UTF-8, contents that are not UTF-8, more than [`MAX_SITE_FILES`] files, a file over
//! [`MAX_FILE_BYTES`] or a site over [`MAX_SITE_BYTES`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::model::{Site, SiteErrors, VaultData};
use crate::site::{parse_site, FILES_PREFIX, ROSTER_FILE, SITE_FILE, TIERS_FILE};
use crate::vault::parse_vault_data;
use crate::yaml::MAX_INPUT_BYTES;

/// Largest single file read (the YAML limit; templates share it).
pub const MAX_FILE_BYTES: u64 = MAX_INPUT_BYTES as u64;
/// Largest total size of a site.
pub const MAX_SITE_BYTES: u64 = 32 * 1024 * 1024;
/// Most files read from a site.
pub const MAX_SITE_FILES: usize = 10_000;

/// Why a site or Vault file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading failed.
    #[error("failed to read {}", .path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A symbolic link or special file where a regular file or directory was expected.
    #[error("{} is a symbolic link or special file; a site holds only regular files and directories", .path.display())]
    NotRegularFile {
        /// The entry.
        path: PathBuf,
    },
    /// A file, or the whole site, is too large.
    #[error("{} is larger than {limit} bytes", .path.display())]
    TooLarge {
        /// The file (or the site directory, for the total).
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// More files than [`MAX_SITE_FILES`].
    #[error("{} holds more than {limit} files", .path.display())]
    TooManyFiles {
        /// The site directory.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// A file's content or name is not UTF-8.
    #[error("{} is not utf-8 text (or its name is not utf-8)", .path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The files were read but are not a valid site (or Vault file).
    #[error("the site has {} error(s)", .0.0.len())]
    Site(#[source] SiteErrors),
}

/// Reads and validates a site directory.
pub fn load_site_dir(dir: &Path) -> Result<Site, LoadError> {
    let files = read_site_files(dir)?;
    parse_site(&files).map_err(LoadError::Site)
}

/// Reads a site directory into the map [`parse_site`] takes (paths relative to `dir`).
pub fn read_site_files(dir: &Path) -> Result<BTreeMap<String, String>, LoadError> {
    let meta = fs::metadata(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(LoadError::Io {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut budget = Budget {
        dir: dir.to_path_buf(),
        bytes: 0,
        files: 0,
    };
    let mut files = BTreeMap::new();
    for name in [ROSTER_FILE, TIERS_FILE, SITE_FILE] {
        if let Some(text) = read_regular_file(&dir.join(name), &mut budget)? {
            files.insert(name.to_owned(), text);
        }
    }
    let files_dir = dir.join(FILES_PREFIX.trim_end_matches('/'));
    match fs::symlink_metadata(&files_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(source) => {
            return Err(LoadError::Io {
                path: files_dir,
                source,
            })
        }
        Ok(m) if !m.is_dir() => return Err(LoadError::NotRegularFile { path: files_dir }),
        Ok(_) => {}
    }
    let mut pending = vec![(files_dir, FILES_PREFIX.to_owned())];
    while let Some((abs, rel)) = pending.pop() {
        let entries = fs::read_dir(&abs).map_err(|source| LoadError::Io {
            path: abs.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| LoadError::Io {
                path: abs.clone(),
                source,
            })?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(LoadError::NotUtf8 { path });
            };
            let file_type = entry.file_type().map_err(|source| LoadError::Io {
                path: path.clone(),
                source,
            })?;
            if file_type.is_dir() {
                pending.push((path, format!("{rel}{name}/")));
            } else if file_type.is_file() {
                if let Some(text) = read_regular_file(&path, &mut budget)? {
                    files.insert(format!("{rel}{name}"), text);
                }
            } else {
                return Err(LoadError::NotRegularFile { path });
            }
        }
    }
    Ok(files)
}

/// Reads the offline Vault data file (see [`crate::vault`]).
pub fn load_vault_file(path: &Path) -> Result<VaultData, LoadError> {
    let mut budget = Budget {
        dir: path.to_path_buf(),
        bytes: 0,
        files: 0,
    };
    let Some(text) = read_regular_file(path, &mut budget)? else {
        return Err(LoadError::Io {
            path: path.to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
    };
    let name = path.display().to_string();
    parse_vault_data(&name, &text).map_err(LoadError::Site)
}

/// What is left of the site's size and file-count limits.
struct Budget {
    dir: PathBuf,
    bytes: u64,
    files: usize,
}

/// Reads a regular file (not through a symlink); `None` if it does not exist.
fn read_regular_file(path: &Path, budget: &mut Budget) -> Result<Option<String>, LoadError> {
    let io_error = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let before = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
        Ok(m) => m,
    };
    if !before.file_type().is_file() {
        return Err(LoadError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    budget.files += 1;
    if budget.files > MAX_SITE_FILES {
        return Err(LoadError::TooManyFiles {
            path: budget.dir.clone(),
            limit: MAX_SITE_FILES,
        });
    }
    if before.len() > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    let file = File::open(path).map_err(io_error)?;
    let after = file.metadata().map_err(io_error)?;
    // Swapped for something else (a symlink, a FIFO) between the check and the open?
    if !after.is_file() || after.dev() != before.dev() || after.ino() != before.ino() {
        return Err(LoadError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    budget.bytes += bytes.len() as u64;
    if budget.bytes > MAX_SITE_BYTES {
        return Err(LoadError::TooLarge {
            path: budget.dir.clone(),
            limit: MAX_SITE_BYTES,
        });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| LoadError::NotUtf8 {
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests;
