//! The agent's safe filesystem layer: every path a catalog names is resolved beneath
//! [`Host::root`] one component at a time through directory file descriptors, never by path.
//!
//! The homes the agent writes into belong to users who may be hostile (THREATS F1–F4): any
//! entry in a directory they own can be swapped for a symlink, a hardlink to a root-owned
//! file or a FIFO between two system calls. So:
//!
//! - a symlink in a parent component is refused with [`HostError::SymlinkInPath`], never
//!   followed (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` when the kernel has it, else an
//!   `openat(O_NOFOLLOW | O_DIRECTORY)` walk);
//! - the final component is opened `O_PATH | O_NOFOLLOW` and `fstat`ed before anything else,
//!   so a FIFO, socket or device is reported without ever being opened for I/O (F4), and a
//!   regular file is reopened for reading only after its identity is checked;
//! - files are replaced atomically: a fresh `O_CREAT | O_EXCL | O_NOFOLLOW` 0600 temp file in
//!   the same directory, written, `fchown`ed and `fchmod`ed through its descriptor, `fsync`ed,
//!   `renameat`ed over the target, then the directory is `fsync`ed; on any error the temp file
//!   is removed and the target is untouched (R5, R8);
//! - mode and owner are only ever changed through a descriptor of the checked object, never by
//!   path (F2), and every create passes an explicit mode then fixes it, so the umask does not
//!   matter (F10);
//! - a caller that decided to replace a file from what it read (a marker, a backup) passes the
//!   observed [`Identity`], and the write is refused as [`HostError::Raced`] if the entry is no
//!   longer that object right before the rename
//!   ([`Host::write_file_atomic_expecting`]; best effort, see there);
//! - temp files an agent killed mid-write left behind (`.<name>.steward-tmp.<pid>.<n>.<hex>`)
//!   are removed by the next write into the same directory, and by
//!   [`Host::remove_stale_temps`] (for a run to call for every file it manages, converged
//!   or not), as soon as the process named in them is gone, or once older than
//!   [`STALE_TEMP_AGE`] if it is not (a reused pid);
//! - old content can be kept in a root-only content-addressed bucket before it is replaced
//!   ([`Host::backup_content`]).
//!
//! Error messages name the catalog path (`/home/u/.claude.json`), not the root-joined one.

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, Metadata, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Gid, OFlags, RenameFlags, ResolveFlags, Uid, CWD};
use sha2::{Digest, Sha256};
use steward_protocol::{is_normal_absolute_path, Mode};

#[cfg(test)]
mod tests;

/// Largest file content [`Host::observe_file`] reads into memory; larger files are reported
/// with `content: None`.
pub const MAX_OBSERVED_BYTES: u64 = 16 * 1024 * 1024;

/// Age (by mtime) from which a temp file of ours is stale: left behind by an agent killed
/// mid-write (SIGKILL, power loss), never one being written (a write takes milliseconds).
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(10 * 60);

/// What every temp name holds, between the target's name and `<pid>.<counter>.<nanos hex>`.
const TEMP_MARK: &str = ".steward-tmp.";

/// The kind of a filesystem object, as `fstat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Unknown,
}

impl FileKind {
    fn of(meta: &Metadata) -> FileKind {
        let t = meta.file_type();
        if t.is_file() {
            FileKind::Regular
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Unknown
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "regular file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Unknown => "unknown file type",
        })
    }
}

/// Ownership, permissions and identity of an observed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inode {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: Mode,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Hard link count; more than 1 on a regular file means it is hardlinked (F2).
    pub nlink: u64,
    /// Device the object lives on.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: i64,
    /// Status change time, seconds since the epoch (unlike the mtime, no unprivileged user
    /// can set it back).
    pub ctime_sec: i64,
    /// Nanoseconds part of the status change time.
    pub ctime_nsec: i64,
}

/// Which object an observation saw, precisely enough to notice that it was replaced, written
/// to, truncated, chmod-ed or chown-ed since: device, inode number, size, mtime and ctime
/// (any write, `chmod`, `chown`, `link` or `rename` of the object moves its ctime, and no
/// unprivileged user can set a ctime back). See [`Host::write_file_atomic_expecting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Device.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Status change time (seconds, nanoseconds).
    pub ctime: (i64, i64),
}

impl Inode {
    /// The identity of the observed object, to pass to [`Host::write_file_atomic_expecting`].
    pub fn identity(&self) -> Identity {
        Identity {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: (self.mtime_sec, self.mtime_nsec),
            ctime: (self.ctime_sec, self.ctime_nsec),
        }
    }

    fn of(meta: &Metadata) -> Inode {
        Inode {
            mode: Mode(meta.mode() & 0o7777),
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: meta.nlink(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime_sec: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    fn same_object(&self, other: &Inode) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// A regular file as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegularFile {
    /// The content, or `None` when the file is larger than the observation limit.
    pub content: Option<Vec<u8>>,
    /// Mode, owner and identity.
    pub inode: Inode,
}

impl RegularFile {
    /// Whether the file has more than one hard link (THREATS F2): never modify it in place.
    pub fn is_hardlinked(&self) -> bool {
        self.inode.nlink > 1
    }
}

/// What is at a path where a regular file is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Nothing.
    Absent,
    /// A regular file.
    Regular(RegularFile),
    /// Something else (symlink, FIFO, directory, ...), reported without opening it.
    Other {
        /// What it is.
        kind: FileKind,
        /// Its owner, mode and identity (of the link itself for a symlink).
        inode: Inode,
    },
}

/// What is at a path where a directory is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    /// Nothing.
    Absent,
    /// A real directory (not a symlink to one).
    Directory(Inode),
    /// Something else.
    Other(FileKind),
}

/// What is at a path where a symlink is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Nothing.
    Absent,
    /// A symlink.
    Symlink {
        /// Its target, as stored (not resolved).
        target: PathBuf,
        /// The link's own owner and identity.
        inode: Inode,
    },
    /// Something else.
    Other(FileKind),
}

/// What [`Host::write_file_atomic_with`] may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Only create: an existing entry of any kind is left alone and reported as
    /// [`HostError::Exists`] (`RENAME_NOREPLACE`, so a file created meanwhile is not clobbered).
    Never,
    /// Replace a regular file with a single link; refuse anything else. The default.
    RegularOnly,
    /// Also replace (by rename, never writing through) a symlink, FIFO, socket, device or
    /// hardlinked file. A directory is never replaced.
    AnyNonDirectory,
}

/// The system call (or step) that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Opening the root or an entry.
    Open,
    /// `fstat`.
    Stat,
    /// Reading content.
    Read,
    /// Creating the temp file.
    Create,
    /// Writing content.
    Write,
    /// `fchown` / `fchownat(AT_EMPTY_PATH)`.
    Chown,
    /// `fchmod`.
    Chmod,
    /// `fsync` of a file or directory.
    Fsync,
    /// `renameat`.
    Rename,
    /// `mkdirat`.
    Mkdir,
    /// `symlinkat`.
    Symlink,
    /// `readlinkat`.
    ReadLink,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Stat => "stat",
            Op::Read => "read",
            Op::Create => "create a temp file for",
            Op::Write => "write",
            Op::Chown => "change the owner of",
            Op::Chmod => "change the mode of",
            Op::Fsync => "fsync",
            Op::Rename => "rename into place",
            Op::Mkdir => "create directory",
            Op::Symlink => "create symlink",
            Op::ReadLink => "read symlink",
        })
    }
}

/// Why a host filesystem operation was refused or failed. `path` is always the catalog path
/// (or the prefix of it that is at fault), never the root-joined one.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Not an absolute, normalized path other than `/`.
    #[error("refusing path {path:?}: not an absolute normalized path below /")]
    InvalidPath {
        /// The offending path.
        path: String,
    },
    /// Resolution left the root (`openat2` reported `EXDEV`).
    #[error("refusing {}: it resolves outside the root", .path.display())]
    OutsideRoot {
        /// The path.
        path: PathBuf,
    },
    /// A parent component is a symlink (THREATS F1, F3).
    #[error("refusing to follow symlink {} in a parent of the target", .path.display())]
    SymlinkInPath {
        /// The parent that is a symlink.
        path: PathBuf,
    },
    /// A parent component is not a directory.
    #[error("{} is a {kind}, not a directory", .path.display())]
    NotDirectory {
        /// The parent.
        path: PathBuf,
        /// What it is instead.
        kind: FileKind,
    },
    /// The target is not what the operation may modify (THREATS F1, F4).
    #[error("refusing to modify {}: it is a {kind}, not a regular file", .path.display())]
    NotRegular {
        /// The target.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// The target is a regular file with several hard links (THREATS F2).
    #[error("refusing to modify {}: it has {nlink} hard links", .path.display())]
    Hardlinked {
        /// The target.
        path: PathBuf,
        /// Its link count.
        nlink: u64,
    },
    /// Something exists where only a creation was allowed, or where a symlink may not replace it.
    #[error("refusing to replace the {kind} at {}", .path.display())]
    Exists {
        /// The target.
        path: PathBuf,
        /// What is there.
        kind: FileKind,
    },
    /// The entry changed between two steps (a concurrent swap); nothing was modified.
    #[error("{} changed while it was being checked; nothing was modified", .path.display())]
    Raced {
        /// The target.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("failed to {op} {}", .path.display())]
    Io {
        /// What was being done.
        op: Op,
        /// The catalog path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl HostError {
    fn io(op: Op, path: &str, source: impl Into<io::Error>) -> HostError {
        HostError::Io {
            op,
            path: PathBuf::from(path),
            source: source.into(),
        }
    }
}

/// Steps of the atomic write, so tests can fail at each one, or be SIGKILLed right before
/// it (THREATS R5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The temp file exists, empty.
    Write,
    /// The content is written.
    Chown,
    /// The temp file has its owner.
    Chmod,
    /// The temp file has its mode.
    Fsync,
    /// The temp file is durable.
    Rename,
    /// The target is renamed into place.
    DirFsync,
}

/// All host filesystem access of the agent: paths are resolved beneath `root` (`/` in
/// production, a mounted image or a sandbox with `--root`, DESIGN §7).
#[derive(Debug)]
pub struct Host {
    root: PathBuf,
    root_fd: OwnedFd,
    /// Cleared the first time `openat2` turns out to be unavailable (old kernel, seccomp).
    use_openat2: AtomicBool,
    /// Temp files of ours older than this are removed by the next write into their directory.
    stale_temp_age: Duration,
}

/// The directory holding a target, and the target's name in it.
struct Parent<'a> {
    dir: OwnedFd,
    name: &'a str,
    path: &'a str,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn o_path_nofollow() -> OFlags {
    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Sets the owner of the symlink an `O_PATH | O_NOFOLLOW` descriptor refers to:
/// `fchownat(fd, "", AT_EMPTY_PATH)` changes the link itself, whatever its name points at now.
fn chown_link(link: &OwnedFd, path: &str, uid: u32, gid: u32) -> Result<(), HostError> {
    rustix::fs::chownat(
        link,
        "",
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| HostError::io(Op::Chown, path, e))
}

fn metadata_of(fd: BorrowedFd<'_>) -> io::Result<Metadata> {
    // `File::metadata` is an `fstat` of the descriptor; the clone is closed on drop.
    File::from(fd.try_clone_to_owned()?).metadata()
}

fn is_enoent(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOENT
}

impl Host {
    /// Opens `root` (trusted: it is the administrator's `--root`, or `/`).
    pub fn new(root: impl Into<PathBuf>) -> Result<Host, HostError> {
        let root = root.into();
        let root_fd = rustix::fs::openat(
            CWD,
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| HostError::Io {
            op: Op::Open,
            path: root.clone(),
            source: e.into(),
        })?;
        Ok(Host {
            root,
            root_fd,
            use_openat2: AtomicBool::new(true),
            stale_temp_age: STALE_TEMP_AGE,
        })
    }

    /// The root every path is resolved beneath.
    pub fn root(&self) -> &Path {
        &self.root
    }

    #[cfg(test)]
    fn without_openat2(self) -> Host {
        self.use_openat2.store(false, Ordering::Relaxed);
        self
    }

    #[cfg(test)]
    fn with_stale_temp_age(mut self, age: Duration) -> Host {
        self.stale_temp_age = age;
        self
    }

    /// Resolves the parent directory of `path` beneath the root without following symlinks.
    fn parent<'a>(&self, path: &'a str) -> Result<Parent<'a>, HostError> {
        if path == "/" || !is_normal_absolute_path(path) {
            return Err(HostError::InvalidPath {
                path: path.to_string(),
            });
        }
        let (dir_path, name) = path.rsplit_once('/').expect("absolute path has a slash");
        let dir = self.open_dir(dir_path)?;
        Ok(Parent { dir, name, path })
    }

    /// [`Host::parent`] for observing: `None` when a parent directory does not exist (so
    /// neither does `path`; under noop, the directory that would create it was not made).
    /// Anything else in the way (a symlink, a file) is still an error.
    fn observed_parent<'a>(&self, path: &'a str) -> Result<Option<Parent<'a>>, HostError> {
        match self.parent(path) {
            Ok(parent) => Ok(Some(parent)),
            Err(HostError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Opens the directory `dir_path` (`""` is the root; otherwise `/a/b`) as an `O_PATH` fd.
    fn open_dir(&self, dir_path: &str) -> Result<OwnedFd, HostError> {
        let rel = dir_path.trim_start_matches('/');
        if rel.is_empty() {
            return self
                .root_fd
                .try_clone()
                .map_err(|e| HostError::io(Op::Open, "/", e));
        }
        if self.use_openat2.load(Ordering::Relaxed) {
            match rustix::fs::openat2(
                &self.root_fd,
                rel,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => return Ok(fd),
                Err(e)
                    if e == rustix::io::Errno::NOSYS
                        || e == rustix::io::Errno::PERM
                        || e == rustix::io::Errno::INVAL
                        || e == rustix::io::Errno::TOOBIG =>
                {
                    self.use_openat2.store(false, Ordering::Relaxed);
                }
                Err(e) if e == rustix::io::Errno::XDEV => {
                    return Err(HostError::OutsideRoot {
                        path: PathBuf::from(dir_path),
                    })
                }
                // ELOOP, ENOTDIR, ENOENT, EAGAIN (a concurrent rename): the walk below names
                // the component at fault, and is just as safe if things changed meanwhile.
                Err(_) => {}
            }
        }
        self.walk_dir(dir_path)
    }

    /// The portable walk: one `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)` per component.
    fn walk_dir(&self, dir_path: &str) -> Result<OwnedFd, HostError> {
        let mut fd = self
            .root_fd
            .try_clone()
            .map_err(|e| HostError::io(Op::Open, "/", e))?;
        let mut end = 0;
        for component in dir_path[1..].split('/') {
            end += 1 + component.len();
            let prefix = &dir_path[..end];
            match rustix::fs::openat(
                &fd,
                component,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                Ok(next) => fd = next,
                Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR => {
                    // Name what is there; the answer may be stale, but nothing was followed.
                    let kind = rustix::fs::openat(
                        &fd,
                        component,
                        o_path_nofollow(),
                        rustix::fs::Mode::empty(),
                    )
                    .ok()
                    .and_then(|f| metadata_of(f.as_fd()).ok())
                    .map_or(FileKind::Symlink, |m| FileKind::of(&m));
                    return Err(match kind {
                        FileKind::Symlink => HostError::SymlinkInPath {
                            path: PathBuf::from(prefix),
                        },
                        FileKind::Directory => HostError::Raced {
                            path: PathBuf::from(prefix),
                        },
                        kind => HostError::NotDirectory {
                            path: PathBuf::from(prefix),
                            kind,
                        },
                    });
                }
                Err(e) => return Err(HostError::io(Op::Open, prefix, e)),
            }
        }
        Ok(fd)
    }

    /// `lstat` of `name` in `dir`, through an `O_PATH | O_NOFOLLOW` descriptor (nothing is
    /// opened for I/O, so a FIFO cannot block and a device driver is not called).
    fn lstat(p: &Parent<'_>) -> Result<Option<(OwnedFd, Metadata)>, HostError> {
        match rustix::fs::openat(&p.dir, p.name, o_path_nofollow(), rustix::fs::Mode::empty()) {
            Ok(fd) => {
                let meta =
                    metadata_of(fd.as_fd()).map_err(|e| HostError::io(Op::Stat, p.path, e))?;
                Ok(Some((fd, meta)))
            }
            Err(e) if is_enoent(&e) => Ok(None),
            Err(e) => Err(HostError::io(Op::Open, p.path, e)),
        }
    }

    /// Reopens the object `expected` names for I/O, checking it is still the same one.
    fn reopen(p: &Parent<'_>, flags: OFlags, expected: &Inode) -> Result<File, HostError> {
        let fd = rustix::fs::openat(
            &p.dir,
            p.name,
            flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            if is_enoent(&e) || e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NXIO {
                HostError::Raced {
                    path: PathBuf::from(p.path),
                }
            } else {
                HostError::io(Op::Open, p.path, e)
            }
        })?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| HostError::io(Op::Stat, p.path, e))?;
        if !Inode::of(&meta).same_object(expected) {
            return Err(HostError::Raced {
                path: PathBuf::from(p.path),
            });
        }
        Ok(file)
    }

    /// Observes what is at `path` where a regular file is wanted, reading at most
    /// [`MAX_OBSERVED_BYTES`] of content.
    pub fn observe_file(&self, path: &str) -> Result<FileState, HostError> {
        self.observe_file_limited(path, MAX_OBSERVED_BYTES)
    }

    /// [`Host::observe_file`] with an explicit content limit.
    pub fn observe_file_limited(&self, path: &str, limit: u64) -> Result<FileState, HostError> {
        let Some(p) = self.observed_parent(path)? else {
            return Ok(FileState::Absent);
        };
        let Some((_, meta)) = Self::lstat(&p)? else {
            return Ok(FileState::Absent);
        };
        let inode = Inode::of(&meta);
        let kind = FileKind::of(&meta);
        if kind != FileKind::Regular {
            return Ok(FileState::Other { kind, inode });
        }
        let file = Self::reopen(&p, OFlags::RDONLY, &inode)?;
        let mut content = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| HostError::io(Op::Read, path, e))?;
        let content = (content.len() as u64 <= limit).then_some(content);
        Ok(FileState::Regular(RegularFile { content, inode }))
    }

    /// Observes what is at `path` where a directory is wanted (a symlink is reported as such).
    pub fn observe_dir(&self, path: &str) -> Result<DirState, HostError> {
        let Some(p) = self.observed_parent(path)? else {
            return Ok(DirState::Absent);
        };
        Ok(match Self::lstat(&p)? {
            None => DirState::Absent,
            Some((_, meta)) => match FileKind::of(&meta) {
                FileKind::Directory => DirState::Directory(Inode::of(&meta)),
                kind => DirState::Other(kind),
            },
        })
    }

    /// Reads the symlink at `path` (not following it).
    pub fn read_link(&self, path: &str) -> Result<LinkState, HostError> {
        let Some(p) = self.observed_parent(path)? else {
            return Ok(LinkState::Absent);
        };
        let Some((fd, meta)) = Self::lstat(&p)? else {
            return Ok(LinkState::Absent);
        };
        match FileKind::of(&meta) {
            FileKind::Symlink => {
                // `readlinkat(fd, "")` reads the very link the descriptor refers to.
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                    .map_err(|e| HostError::io(Op::ReadLink, path, e))?;
                Ok(LinkState::Symlink {
                    target: PathBuf::from(OsString::from_vec(target.into_bytes())),
                    inode: Inode::of(&meta),
                })
            }
            kind => Ok(LinkState::Other(kind)),
        }
    }

    /// Sets mode and owner of the existing regular file (with a single link) or directory at
    /// `path`, through a descriptor of the checked object; a symlink, special file or
    /// hardlinked file is refused.
    pub fn set_mode_owner(
        &self,
        path: &str,
        mode: Mode,
        uid: u32,
        gid: u32,
    ) -> Result<(), HostError> {
        let p = self.parent(path)?;
        let Some((_, meta)) = Self::lstat(&p)? else {
            return Err(HostError::io(Op::Open, path, io::ErrorKind::NotFound));
        };
        let inode = Inode::of(&meta);
        let file = match FileKind::of(&meta) {
            FileKind::Regular if inode.nlink > 1 => {
                return Err(HostError::Hardlinked {
                    path: PathBuf::from(path),
                    nlink: inode.nlink,
                })
            }
            FileKind::Regular => Self::reopen(&p, OFlags::RDONLY, &inode)?,
            FileKind::Directory => Self::reopen(&p, OFlags::RDONLY | OFlags::DIRECTORY, &inode)?,
            kind => {
                return Err(HostError::NotRegular {
                    path: PathBuf::from(path),
                    kind,
                })
            }
        };
        fix_mode_owner(&file, path, mode, uid, gid, None)
    }

    /// Ensures a real directory exists at `path` with `mode` and owner; the parent must exist.
    /// Creation is `mkdirat` with an explicit mode, then the mode and owner are set through a
    /// descriptor of the new directory and the parent is `fsync`ed (so the new entry survives
    /// a power loss); an existing one is corrected the same way.
    pub fn ensure_dir(&self, path: &str, mode: Mode, uid: u32, gid: u32) -> Result<(), HostError> {
        let p = self.parent(path)?;
        let created =
            match rustix::fs::mkdirat(&p.dir, p.name, rustix::fs::Mode::from_raw_mode(0o700)) {
                Ok(()) => true,
                Err(e) if e == rustix::io::Errno::EXIST => false,
                Err(e) => return Err(HostError::io(Op::Mkdir, path, e)),
            };
        let dir = rustix::fs::openat(
            &p.dir,
            p.name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                let kind = Self::lstat(&p)
                    .ok()
                    .flatten()
                    .map_or(FileKind::Unknown, |(_, m)| FileKind::of(&m));
                HostError::NotDirectory {
                    path: PathBuf::from(path),
                    kind,
                }
            } else {
                HostError::io(Op::Open, path, e)
            }
        })?;
        let dir = File::from(dir);
        fix_mode_owner(&dir, path, mode, uid, gid, None)?;
        if created {
            // The new entry is durable only once its parent directory is.
            sync_dir(&p)?;
        }
        Ok(())
    }

    /// Writes `bytes` to `path` atomically with `mode` and owner, replacing only a regular file
    /// with a single link ([`Overwrite::RegularOnly`]).
    pub fn write_file_atomic(
        &self,
        path: &str,
        bytes: &[u8],
        mode: Mode,
        uid: u32,
        gid: u32,
    ) -> Result<(), HostError> {
        self.write_file_atomic_with(path, bytes, mode, uid, gid, Overwrite::RegularOnly)
    }

    /// [`Host::write_file_atomic`] with an explicit replacement policy.
    pub fn write_file_atomic_with(
        &self,
        path: &str,
        bytes: &[u8],
        mode: Mode,
        uid: u32,
        gid: u32,
        overwrite: Overwrite,
    ) -> Result<(), HostError> {
        self.write_atomic_inner(path, bytes, mode, (uid, gid), overwrite, None, None)
    }

    /// [`Host::write_file_atomic_with`] that also refuses with [`HostError::Raced`] (and
    /// modifies nothing) unless the entry at `path` is still the object observed as `expected`
    /// (same device, inode, size, mtime and ctime) right before the rename; `None` checks
    /// nothing. A caller that decided to replace a file after looking at its content (a
    /// marker, a backup of the old content) passes the observed [`Inode::identity`], so that a
    /// user's edit made in between is not silently lost. To create a file that was observed
    /// absent, use [`Overwrite::Never`] instead.
    ///
    /// Best effort: the check is an `fstat` of the entry immediately before `renameat`, and an
    /// edit that lands in the microseconds between the two is still replaced (its content is
    /// lost, and a backup holds the observed content rather than that edit). Safety does not
    /// depend on the check: the rename replaces the directory entry and never writes through
    /// whatever is there.
    #[allow(clippy::too_many_arguments)] // mirrors write_file_atomic_with, plus one
    pub fn write_file_atomic_expecting(
        &self,
        path: &str,
        bytes: &[u8],
        mode: Mode,
        uid: u32,
        gid: u32,
        overwrite: Overwrite,
        expected: Option<Identity>,
    ) -> Result<(), HostError> {
        self.write_atomic_inner(path, bytes, mode, (uid, gid), overwrite, expected, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_atomic_inner(
        &self,
        path: &str,
        bytes: &[u8],
        mode: Mode,
        (uid, gid): (u32, u32),
        overwrite: Overwrite,
        expected: Option<Identity>,
        fail_at: Option<Step>,
    ) -> Result<(), HostError> {
        let p = self.parent(path)?;
        // Policy check. Safety does not depend on it: the rename below replaces the directory
        // entry and never writes through whatever is there.
        if let Some((_, meta)) = Self::lstat(&p)? {
            let kind = FileKind::of(&meta);
            let nlink = meta.nlink();
            match (overwrite, kind) {
                (Overwrite::Never, kind) => {
                    return Err(HostError::Exists {
                        path: PathBuf::from(path),
                        kind,
                    })
                }
                (_, FileKind::Directory) | (Overwrite::RegularOnly, _)
                    if kind != FileKind::Regular =>
                {
                    return Err(HostError::NotRegular {
                        path: PathBuf::from(path),
                        kind,
                    })
                }
                (Overwrite::RegularOnly, _) if nlink > 1 => {
                    return Err(HostError::Hardlinked {
                        path: PathBuf::from(path),
                        nlink,
                    })
                }
                _ => {}
            }
        }
        self.sweep_stale_temps(&p, uid);
        let (temp, file) = create_temp(&p, |name| {
            rustix::fs::openat(
                &p.dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .map(File::from)
        })?;
        let result = (|| {
            let mut file = file;
            inject(fail_at, Step::Write, path, Op::Write)?;
            file.write_all(bytes)
                .map_err(|e| HostError::io(Op::Write, path, e))?;
            fix_mode_owner(&file, path, mode, uid, gid, fail_at)?;
            inject(fail_at, Step::Fsync, path, Op::Fsync)?;
            file.sync_all()
                .map_err(|e| HostError::io(Op::Fsync, path, e))?;
            inject(fail_at, Step::Rename, path, Op::Rename)?;
            if let Some(expected) = expected {
                check_unchanged(&p, &expected)?;
            }
            if overwrite == Overwrite::Never {
                rename_noreplace(&p, &temp)
            } else {
                rustix::fs::renameat(&p.dir, temp.as_str(), &p.dir, p.name)
                    .map_err(|e| HostError::io(Op::Rename, path, e))
            }
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(&p.dir, temp.as_str(), AtFlags::empty());
            return Err(e);
        }
        inject(fail_at, Step::DirFsync, path, Op::Fsync)?;
        sync_dir(&p)
    }

    /// Points the symlink at `path` to `target` atomically (a link under a temp name, owned by
    /// `uid:gid`, renamed into place). Only a missing entry or an existing symlink is replaced:
    /// a regular file, directory or anything else is [`HostError::Exists`], and a symlink that
    /// was replaced by something else since it was checked is [`HostError::Raced`].
    pub fn create_symlink_atomic(
        &self,
        path: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> Result<(), HostError> {
        let p = self.parent(path)?;
        let existing = match Self::lstat(&p)? {
            None => None,
            Some((_, meta)) => match FileKind::of(&meta) {
                FileKind::Symlink => Some(Inode::of(&meta).identity()),
                kind => {
                    return Err(HostError::Exists {
                        path: PathBuf::from(path),
                        kind,
                    })
                }
            },
        };
        self.sweep_stale_temps(&p, uid);
        let (temp, ()) = create_temp(&p, |name| rustix::fs::symlinkat(target, &p.dir, name))?;
        let result = (|| {
            let link = rustix::fs::openat(
                &p.dir,
                temp.as_str(),
                o_path_nofollow(),
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| HostError::io(Op::Open, path, e))?;
            let meta = metadata_of(link.as_fd()).map_err(|e| HostError::io(Op::Stat, path, e))?;
            if FileKind::of(&meta) != FileKind::Symlink {
                return Err(HostError::Raced {
                    path: PathBuf::from(path),
                });
            }
            fail_point(Step::Chown);
            chown_link(&link, path, uid, gid)?;
            fail_point(Step::Rename);
            match existing {
                None => rename_noreplace(&p, &temp),
                Some(link) => {
                    // Still the link observed above, not a file swapped in meanwhile (best
                    // effort, as in write_file_atomic_expecting).
                    check_unchanged(&p, &link)?;
                    rustix::fs::renameat(&p.dir, temp.as_str(), &p.dir, p.name)
                        .map_err(|e| HostError::io(Op::Rename, path, e))
                }
            }
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(&p.dir, temp.as_str(), AtFlags::empty());
            return Err(e);
        }
        fail_point(Step::DirFsync);
        sync_dir(&p)
    }

    /// Sets the owner of the symlink at `path` itself (never what it points at), through an
    /// `O_PATH | O_NOFOLLOW` descriptor of the link; anything but a symlink is
    /// [`HostError::Raced`] (the caller observed a symlink there).
    pub fn set_link_owner(&self, path: &str, uid: u32, gid: u32) -> Result<(), HostError> {
        let p = self.parent(path)?;
        let Some((link, meta)) = Self::lstat(&p)? else {
            return Err(HostError::Raced {
                path: PathBuf::from(path),
            });
        };
        if FileKind::of(&meta) != FileKind::Symlink {
            return Err(HostError::Raced {
                path: PathBuf::from(path),
            });
        }
        chown_link(&link, path, uid, gid)
    }

    /// Renames the entry at `from` to `to` (both resolved beneath the root, no symlink
    /// followed in either parent), only if `from` is still the object observed as `expected`
    /// ([`HostError::Raced`] otherwise) and nothing is at `to` (`RENAME_NOREPLACE`:
    /// [`HostError::Exists`]). Both parents are `fsync`ed. The entry itself is moved, never
    /// followed: a directory keeps its inode, owner, mode and content.
    pub fn rename_entry(&self, from: &str, to: &str, expected: Identity) -> Result<(), HostError> {
        let source = self.parent(from)?;
        let target = self.parent(to)?;
        check_unchanged(&source, &expected)?;
        match rustix::fs::renameat_with(
            &source.dir,
            source.name,
            &target.dir,
            target.name,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::EXIST || e == rustix::io::Errno::NOTEMPTY => {
                let kind =
                    Self::lstat(&target)?.map_or(FileKind::Unknown, |(_, m)| FileKind::of(&m));
                return Err(HostError::Exists {
                    path: PathBuf::from(to),
                    kind,
                });
            }
            Err(e) => return Err(HostError::io(Op::Rename, from, e)),
        }
        sync_dir(&source)?;
        sync_dir(&target)
    }

    /// Removes the empty directory at `path` (`unlinkat(AT_REMOVEDIR)` in its parent, no
    /// symlink followed); a non-empty one or anything else is an error and is left alone.
    pub fn remove_empty_dir(&self, path: &str) -> Result<(), HostError> {
        let p = self.parent(path)?;
        rustix::fs::unlinkat(&p.dir, p.name, AtFlags::REMOVEDIR)
            .map_err(|e| HostError::io(Op::Rename, path, e))?;
        sync_dir(&p)
    }

    /// Keeps `content` (the observed content of a file about to be replaced) in the
    /// content-addressed store `bucket` (an absolute directory beneath the root, such as
    /// `/var/lib/steward/bucket`, as Puppet's clientbucket) under the name of its SHA-256,
    /// and returns that hex digest. The bucket is root's alone: missing directories on the
    /// way are created `0700 root:root` (existing ones are left as they are), the bucket
    /// itself is kept `0700 root:root`, and each copy is written atomically `0600 root:root`,
    /// so old content of sensitive files may be kept there too. Content already in the bucket
    /// is not written again.
    pub fn backup_content(&self, bucket: &str, content: &[u8]) -> Result<String, HostError> {
        if bucket == "/" || !is_normal_absolute_path(bucket) {
            return Err(HostError::InvalidPath {
                path: bucket.to_string(),
            });
        }
        // Ancestors: create what is missing, refuse what is not a real directory.
        let mut end = 0;
        for component in bucket[1..].split('/') {
            end += 1 + component.len();
            let prefix = &bucket[..end];
            let is_bucket = end == bucket.len();
            match self.observe_dir(prefix)? {
                DirState::Directory(inode)
                    if !is_bucket
                        || (inode.mode == Mode(0o700) && (inode.uid, inode.gid) == (0, 0)) => {}
                DirState::Directory(_) | DirState::Absent => {
                    self.ensure_dir(prefix, Mode(0o700), 0, 0)?;
                }
                DirState::Other(kind) => {
                    return Err(HostError::NotDirectory {
                        path: PathBuf::from(prefix),
                        kind,
                    })
                }
            }
        }
        let digest = hex::encode(Sha256::digest(content));
        let path = format!("{bucket}/{digest}");
        let overwrite = match self.observe_file(&path)? {
            FileState::Absent => Overwrite::Never,
            FileState::Regular(kept)
                if kept.content.as_deref() == Some(content)
                    && kept.inode.nlink == 1
                    && kept.inode.mode == Mode(0o600)
                    && (kept.inode.uid, kept.inode.gid) == (0, 0) =>
            {
                return Ok(digest);
            }
            // Same name, other bytes or attributes: rewrite it (a hardlinked or special entry
            // is refused by the write, and reported).
            FileState::Regular(_) | FileState::Other { .. } => Overwrite::RegularOnly,
        };
        match self.write_file_atomic_with(&path, content, Mode(0o600), 0, 0, overwrite) {
            // Stored meanwhile by someone else with the same content-addressed name.
            Err(HostError::Exists {
                kind: FileKind::Regular,
                ..
            }) => Ok(digest),
            Err(e) => Err(e),
            Ok(()) => Ok(digest),
        }
    }

    /// Removes the temp files of ours that an agent killed mid-write (SIGKILL, OOM, power
    /// loss) left in the directory of `path`, whether or not `path` itself needs a write (a
    /// converged file is never written again, so without this its directory would keep them
    /// forever). Meant for a run to call for every file and symlink it manages, before
    /// applying (never under noop: it modifies). Removed are only temps [`Host::write_file_atomic`] could have
    /// left there: see [`Host::sweep_stale_temps`]; owners accepted are root, the current
    /// owner of `path` and the owner of its directory (a temp killed after its `fchown` has
    /// the owner the catalog gives the file, which a run that does not write cannot know
    /// otherwise: in a home, the home's owner). Best effort, never an error: a path that
    /// does not resolve has nothing to sweep. Returns how many were removed.
    pub fn remove_stale_temps(&self, path: &str) -> usize {
        let Ok(Some(p)) = self.observed_parent(path) else {
            return 0;
        };
        let mut removed = 0;
        if let Ok(dir) = metadata_of(p.dir.as_fd()) {
            removed += self.sweep_stale_temps(&p, dir.uid());
        }
        if let Ok(Some((_, meta))) = Self::lstat(&p) {
            if meta.is_file() {
                removed += self.sweep_stale_temps(&p, meta.uid());
            }
        }
        removed
    }

    /// Removes temp files of ours that an agent killed mid-write left in the target's
    /// directory (R5): entries whose name has exactly our pattern
    /// (`.<name>.steward-tmp.<pid>.<n>.<hex>`), that are regular files or symlinks (temp
    /// links of [`Host::create_symlink_atomic`]) with a single link, owned by root (before the
    /// `fchown`) or by `owner` (the owner of the file being written, after it), and that no
    /// live writer can still hold: the process named in the name is gone (and is not this
    /// one), or the mtime is older than [`STALE_TEMP_AGE`] (the pid was reused, or lives in
    /// another pid namespace). Everything is fd-relative: the directory is read through a
    /// descriptor of the resolved parent, entries are `fstatat`ed with `AT_SYMLINK_NOFOLLOW`
    /// and removed with `unlinkat`, which removes a name and never follows it (a hardlink or
    /// symlink planted under such a name loses only that name). Best effort: a failure here
    /// never fails the write. Returns how many were removed.
    fn sweep_stale_temps(&self, p: &Parent<'_>, owner: u32) -> usize {
        let Ok(dir) = rustix::fs::openat(
            &p.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) else {
            return 0;
        };
        let Ok(dir_fd) = dir.try_clone() else {
            return 0;
        };
        let Ok(entries) = rustix::fs::Dir::new(dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            let Some(pid) = temp_name_pid(name) else {
                continue;
            };
            let Ok(stat) = rustix::fs::statat(&dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
            let mtime = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(stat.st_mtime).unwrap_or(0));
            let old = now
                .duration_since(mtime)
                .is_ok_and(|age| age >= self.stale_temp_age);
            if matches!(
                kind,
                rustix::fs::FileType::RegularFile | rustix::fs::FileType::Symlink
            ) && stat.st_nlink == 1
                && (stat.st_uid == 0 || stat.st_uid == owner)
                && (old || writer_is_gone(pid))
                && rustix::fs::unlinkat(&dir_fd, name, AtFlags::empty()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

/// Whether the agent process `pid` (from a temp name) can no longer be writing: it is not
/// this process (another thread may be mid-write) and `kill(pid, 0)` says no such process
/// (`ESRCH`; a process we may not signal still exists). Runs are serialized by the state
/// lock (R10), so a live writer is another agent only across pid namespaces (an agent in a
/// container writing the same directory): that one loses its temp and fails that write
/// (`ENOENT` at the rename); no target is ever touched.
fn writer_is_gone(pid: u32) -> bool {
    let Some(other) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    pid != std::process::id()
        && rustix::process::test_kill_process(other) == Err(rustix::io::Errno::SRCH)
}

/// The pid in `name` if it is a temp name [`create_temp`] makes.
fn temp_name_pid(name: &str) -> Option<u32> {
    if !is_temp_name(name) {
        return None;
    }
    let (_, tail) = name.rsplit_once(TEMP_MARK)?;
    tail.split('.').next()?.parse().ok()
}

/// Whether `name` is a temp name [`create_temp`] makes: `.<stem>.steward-tmp.<decimal pid>.
/// <decimal counter>.<lowercase hex nanos>`.
fn is_temp_name(name: &str) -> bool {
    let Some((stem, tail)) = name.rsplit_once(TEMP_MARK) else {
        return false;
    };
    let parts: Vec<&str> = tail.split('.').collect();
    let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    stem.len() > 1
        && stem.starts_with('.')
        && parts.len() == 3
        && decimal(parts[0])
        && decimal(parts[1])
        && hex(parts[2])
}

/// Refuses with [`HostError::Raced`] unless the entry at the target is still the object
/// `expected` identifies (see [`Host::write_file_atomic_expecting`]).
fn check_unchanged(p: &Parent<'_>, expected: &Identity) -> Result<(), HostError> {
    let now = Host::lstat(p)?.map(|(_, meta)| Inode::of(&meta).identity());
    if now == Some(*expected) {
        Ok(())
    } else {
        Err(HostError::Raced {
            path: PathBuf::from(p.path),
        })
    }
}

/// A point of a write path where test builds can SIGKILL the writer (nothing otherwise).
fn fail_point(step: Step) {
    #[cfg(test)]
    tests::kill_if_asked(step);
    let _ = step;
}

/// A [`fail_point`] where tests can also make the step fail with ENOSPC.
fn inject(fail_at: Option<Step>, step: Step, path: &str, op: Op) -> Result<(), HostError> {
    fail_point(step);
    if fail_at == Some(step) {
        return Err(HostError::io(
            op,
            path,
            io::Error::from_raw_os_error(28), // ENOSPC
        ));
    }
    Ok(())
}

/// `fchown` then `fchmod` (in that order: `chown` clears set-id bits) through `file`.
fn fix_mode_owner(
    file: &File,
    path: &str,
    mode: Mode,
    uid: u32,
    gid: u32,
    fail_at: Option<Step>,
) -> Result<(), HostError> {
    inject(fail_at, Step::Chown, path, Op::Chown)?;
    std::os::unix::fs::fchown(file, Some(uid), Some(gid))
        .map_err(|e| HostError::io(Op::Chown, path, e))?;
    inject(fail_at, Step::Chmod, path, Op::Chmod)?;
    file.set_permissions(Permissions::from_mode(mode.0 & 0o7777))
        .map_err(|e| HostError::io(Op::Chmod, path, e))
}

/// Creates a fresh entry under a unique temp name in the target's directory with `create`,
/// retrying on a name clash. The name starts with `.` and contains `.steward-tmp.`.
fn create_temp<T>(
    p: &Parent<'_>,
    mut create: impl FnMut(&str) -> rustix::io::Result<T>,
) -> Result<(String, T), HostError> {
    // Keep the name under NAME_MAX (255) whatever the target's length.
    let mut stem_len = p.name.len().min(200);
    while !p.name.is_char_boundary(stem_len) {
        stem_len -= 1;
    }
    let stem = &p.name[..stem_len];
    let mut last = rustix::io::Errno::EXIST;
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(".{stem}{TEMP_MARK}{}.{n}.{nanos:x}", std::process::id());
        match create(&name) {
            Ok(t) => return Ok((name, t)),
            Err(e) if e == rustix::io::Errno::EXIST => last = e,
            Err(e) => return Err(HostError::io(Op::Create, p.path, e)),
        }
    }
    Err(HostError::io(Op::Create, p.path, last))
}

/// Renames `temp` to the target only if nothing is there (`RENAME_NOREPLACE`, or `linkat` +
/// `unlinkat` on filesystems without it).
fn rename_noreplace(p: &Parent<'_>, temp: &str) -> Result<(), HostError> {
    let exists = |p: &Parent<'_>| {
        let kind = Host::lstat(p)
            .ok()
            .flatten()
            .map_or(FileKind::Unknown, |(_, m)| FileKind::of(&m));
        HostError::Exists {
            path: PathBuf::from(p.path),
            kind,
        }
    };
    match rustix::fs::renameat_with(&p.dir, temp, &p.dir, p.name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::EXIST => Err(exists(p)),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            match rustix::fs::linkat(&p.dir, temp, &p.dir, p.name, AtFlags::empty()) {
                Ok(()) => {
                    let _ = rustix::fs::unlinkat(&p.dir, temp, AtFlags::empty());
                    Ok(())
                }
                Err(e) if e == rustix::io::Errno::EXIST => Err(exists(p)),
                Err(e) => Err(HostError::io(Op::Rename, p.path, e)),
            }
        }
        Err(e) => Err(HostError::io(Op::Rename, p.path, e)),
    }
}

/// `fsync` of the target's directory, so the rename is durable.
fn sync_dir(p: &Parent<'_>) -> Result<(), HostError> {
    // The walk yields `O_PATH` descriptors, which cannot be fsynced: reopen "." (no symlink
    // can be involved) for reading.
    let dir = rustix::fs::openat(
        &p.dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| HostError::io(Op::Open, p.path, e))?;
    File::from(dir)
        .sync_all()
        .map_err(|e| HostError::io(Op::Fsync, p.path, e))
}
