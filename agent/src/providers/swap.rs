//! The `swap` provider: a swap file of `size_mib` at `path`, 0600 root, formatted with
//! `mkswap`, listed in `/etc/fstab` (`<path> none swap sw 0 0`, added once) and active.
//!
//! - The file is written with zeros, not `fallocate`d: swapon(8) calls `dd` from `/dev/zero`
//!   the portable way, as a preallocated file can still look like one with holes to the swap
//!   code on some file systems; the cost is paid once, at creation. It is built under a temp
//!   name (created through the host layer, then filled through a descriptor whose identity is
//!   checked), `mkswap`ed, fsynced and renamed into place without replacing anything, so a
//!   half-written file never sits at `path`.
//! - Additive-only: an existing file that is not a swap area is never overwritten (failed),
//!   and an existing swap file of another size is never resized — resizing means `swapoff`,
//!   which can push a loaded machine into the OOM killer. That case is reported as
//!   **skipped** with the sizes: deliberately not done, visible in every report, without
//!   failing the run or holding back the resources that depend on it. Its mode and owner are
//!   corrected (swap holds memory contents).
//! - Activation: whether it is active comes from `/proc/swaps` (the kernel's, so only with
//!   the root at `/`). Under `--root` nothing is activated: the image's fstab line does it at
//!   boot. On `/` a refused `swapon` (a container, a file system without swap file support)
//!   does not fail the resource: it is reported (skipped, or as part of the change) with the
//!   reason.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use rustix::fs::{OFlags, RenameFlags, CWD};
use steward_protocol::{Mode, SwapSpec};

use crate::command;
use crate::engine::{Context, Outcome};
use crate::host::{FileKind, FileState, Overwrite};
use crate::providers::exec::{run_labelled, run_tool, short_tail};
use crate::providers::user::unescape_octal;

/// Mode of a swap file: it holds memory contents.
const SWAP_MODE: Mode = Mode(0o600);

const MIB: u64 = 1024 * 1024;

/// What is at the swap file's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwapFile {
    Absent,
    Regular {
        size: u64,
        mode: Mode,
        uid: u32,
        gid: u32,
        /// `blkid` finds a swap signature.
        swap: bool,
    },
    Other(FileKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observed {
    file: SwapFile,
    in_fstab: bool,
    /// `None` when the kernel's state does not apply (under `--root`).
    active: Option<bool>,
}

/// What to do; all false means nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Plan {
    create: bool,
    fix_mode: bool,
    add_fstab: bool,
    activate: bool,
    /// An existing swap file of another size, left alone.
    size_note: Option<String>,
}

impl Plan {
    fn has_changes(&self) -> bool {
        self.create || self.fix_mode || self.add_fstab || self.activate
    }
}

/// Converges one `swap` resource.
pub fn apply(spec: &SwapSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    converge(spec, cx).with_context(|| format!("swap {}", spec.path))
}

fn converge(spec: &SwapSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::ensure!(spec.size_mib >= 1, "size_mib must be at least 1");
    let observed = observe(spec, cx)?;
    let plan = diff(spec, &observed).map_err(anyhow::Error::msg)?;
    if !plan.has_changes() {
        return Ok(match plan.size_note {
            Some(note) => Outcome::Skipped(note),
            None => Outcome::Unchanged,
        });
    }
    if cx.noop {
        return Ok(planned(&plan));
    }
    if plan.create {
        create_swapfile(spec, cx)?;
    }
    if plan.fix_mode {
        cx.host
            .set_mode_owner(&spec.path, SWAP_MODE, 0, 0)
            .context("setting mode 0600 and owner root")?;
    }
    if plan.add_fstab {
        add_to_fstab(spec, cx)?;
    }
    let mut refused = None;
    if plan.activate {
        let out = run_labelled(
            "swapon",
            command::command("swapon").arg(host_path(cx, &spec.path)),
            cx.command_timeout,
        )?;
        if !out.success() {
            refused = Some(short_tail(&out.stderr));
        }
    }
    Ok(outcome(&plan, refused))
}

fn observe(spec: &SwapSpec, cx: &Context<'_>) -> anyhow::Result<Observed> {
    let file = match cx.host.observe_file_limited(&spec.path, 0)? {
        FileState::Absent => SwapFile::Absent,
        FileState::Regular(f) => SwapFile::Regular {
            size: f.inode.size,
            mode: f.inode.mode,
            uid: f.inode.uid,
            gid: f.inode.gid,
            swap: has_swap_signature(spec, cx)?,
        },
        FileState::Other { kind, .. } => SwapFile::Other(kind),
    };
    let in_fstab = match cx.host.observe_file("/etc/fstab")? {
        FileState::Regular(f) => fstab_has(
            &String::from_utf8_lossy(&f.content.unwrap_or_default()),
            &spec.path,
        ),
        _ => false,
    };
    let active = if cx.in_root() {
        None
    } else {
        // The kernel's own state, not a file of the root.
        let swaps = std::fs::read_to_string("/proc/swaps").context("reading /proc/swaps")?;
        Some(swaps_has(&swaps, &spec.path))
    };
    Ok(Observed {
        file,
        in_fstab,
        active,
    })
}

fn has_swap_signature(spec: &SwapSpec, cx: &Context<'_>) -> anyhow::Result<bool> {
    let out = run_labelled(
        "blkid",
        command::command("blkid")
            .args(["--probe", "--match-tag", "TYPE", "--output", "value", "--"])
            .arg(host_path(cx, &spec.path)),
        cx.command_timeout,
    )?;
    match out.code() {
        Some(0) => Ok(out.stdout.trim() == "swap"),
        // Nothing recognised.
        Some(2) => Ok(false),
        _ => bail!("blkid failed ({}): {}", out.status, short_tail(&out.stderr)),
    }
}

/// The pure decision.
fn diff(spec: &SwapSpec, have: &Observed) -> Result<Plan, String> {
    let want_size = spec.size_mib * MIB;
    let mut plan = Plan {
        add_fstab: !have.in_fstab,
        activate: have.active == Some(false),
        ..Plan::default()
    };
    match have.file {
        SwapFile::Absent => plan.create = true,
        SwapFile::Other(kind) => {
            return Err(format!(
                "{} is a {kind}, not a swap file; left alone",
                spec.path
            ))
        }
        SwapFile::Regular { swap: false, .. } if have.active != Some(true) => {
            return Err(format!(
                "{} exists and is not a swap area; refusing to overwrite it",
                spec.path
            ))
        }
        SwapFile::Regular {
            size,
            mode,
            uid,
            gid,
            ..
        } => {
            plan.fix_mode = mode != SWAP_MODE || uid != 0 || gid != 0;
            if size != want_size {
                plan.size_note = Some(format!(
                    "{} is {} MiB, catalog wants {} MiB; not resized (swapoff, remove it and \
                     rerun to resize)",
                    spec.path,
                    size / MIB,
                    spec.size_mib
                ));
            }
        }
    }
    Ok(plan)
}

/// What a plan with changes would do (noop).
fn planned(plan: &Plan) -> Outcome {
    let steps = [
        (plan.create, "would create and format the swap file"),
        (plan.fix_mode, "would set mode 0600, owner root"),
        (plan.add_fstab, "would add it to /etc/fstab"),
        (plan.activate, "would activate it"),
    ];
    let mut would: Vec<String> = steps
        .iter()
        .filter(|(wanted, _)| *wanted)
        .map(|(_, step)| (*step).to_string())
        .collect();
    would.extend(plan.size_note.clone());
    Outcome::changed(would.join("; "))
}

/// The outcome of a plan with changes; `refused` is swapon's complaint, if it refused.
fn outcome(plan: &Plan, refused: Option<String>) -> Outcome {
    let mut done = Vec::new();
    if plan.create {
        done.push("created and formatted the swap file".to_string());
    }
    if plan.fix_mode {
        done.push("set mode 0600, owner root".to_string());
    }
    if plan.add_fstab {
        done.push("added to /etc/fstab".to_string());
    }
    match (&refused, plan.activate) {
        (None, true) => done.push("activated".to_string()),
        (Some(reason), true) if done.is_empty() => {
            let mut reason = format!("swapon refused: {reason}");
            if let Some(note) = &plan.size_note {
                reason.push_str(&format!("; {note}"));
            }
            return Outcome::Skipped(reason);
        }
        (Some(reason), true) => done.push(format!("not activated (swapon refused: {reason})")),
        _ => {}
    }
    if let Some(note) = &plan.size_note {
        done.push(note.clone());
    }
    Outcome::changed(done.join("; "))
}

/// Whether an fstab (text) has a swap entry for `path`.
fn fstab_has(fstab: &str, path: &str) -> bool {
    fstab.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        !line.trim_start().starts_with('#')
            && fields.len() >= 3
            && unescape_octal(fields[0]) == path
            && fields[2] == "swap"
    })
}

/// `fstab` with the swap line for `path` appended (after a newline, if the last line lacks
/// one).
fn with_fstab_line(fstab: &[u8], path: &str) -> Vec<u8> {
    let mut out = fstab.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    let escaped = path
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011");
    out.extend_from_slice(format!("{escaped} none swap sw 0 0\n").as_bytes());
    out
}

/// Whether `/proc/swaps` (text) lists `path`.
fn swaps_has(swaps: &str, path: &str) -> bool {
    swaps
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| unescape_octal(name) == path)
}

fn add_to_fstab(spec: &SwapSpec, cx: &Context<'_>) -> anyhow::Result<()> {
    let (content, mode, uid, gid) = match cx.host.observe_file("/etc/fstab")? {
        FileState::Regular(f) => (
            f.content
                .ok_or_else(|| anyhow!("/etc/fstab is too large to edit"))?,
            f.inode.mode,
            f.inode.uid,
            f.inode.gid,
        ),
        FileState::Absent => (Vec::new(), Mode(0o644), 0, 0),
        FileState::Other { kind, .. } => bail!("/etc/fstab is a {kind}, not a regular file"),
    };
    cx.host
        .write_file_atomic(
            "/etc/fstab",
            &with_fstab_line(&content, &spec.path),
            mode,
            uid,
            gid,
        )
        .context("adding the swap line to /etc/fstab")?;
    Ok(())
}

/// Builds the swap file under a temp name in the same directory and renames it into place.
fn create_swapfile(spec: &SwapSpec, cx: &Context<'_>) -> anyhow::Result<()> {
    let (dir, base) = spec
        .path
        .rsplit_once('/')
        .map(|(d, b)| (if d.is_empty() { "/" } else { d }, b))
        .ok_or_else(|| anyhow!("{} is not an absolute path", spec.path))?;
    let temp = format!("{}/.{base}.steward-swap", dir.trim_end_matches('/'));
    // A leftover from an interrupted run is ours: replaced, never written through.
    cx.host
        .write_file_atomic_with(&temp, &[], SWAP_MODE, 0, 0, Overwrite::AnyNonDirectory)
        .context("creating the swap file")?;
    let host_temp = host_path(cx, &temp);
    let result = (|| -> anyhow::Result<()> {
        let FileState::Regular(created) = cx.host.observe_file_limited(&temp, 0)? else {
            bail!("{temp} changed while it was being created");
        };
        let fd = rustix::fs::open(
            &host_temp,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .with_context(|| format!("opening {temp}"))?;
        let mut file = File::from(fd);
        let meta = file.metadata()?;
        anyhow::ensure!(
            meta.dev() == created.inode.dev && meta.ino() == created.inode.ino,
            "{temp} changed while it was being created"
        );
        let zeros = vec![0u8; MIB as usize];
        for _ in 0..spec.size_mib {
            file.write_all(&zeros)
                .with_context(|| format!("writing {} MiB of zeros", spec.size_mib))?;
        }
        file.sync_all().context("syncing the swap file")?;
        drop(file);
        run_tool(
            "mkswap",
            command::command("mkswap").arg(&host_temp),
            cx.command_timeout,
        )?;
        rustix::fs::renameat_with(
            CWD,
            &host_temp,
            CWD,
            host_path(cx, &spec.path),
            RenameFlags::NOREPLACE,
        )
        .with_context(|| format!("renaming the swap file into place at {}", spec.path))?;
        File::open(host_path(cx, dir))
            .and_then(|d| d.sync_all())
            .context("syncing the directory")?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&host_temp);
    }
    result
}

/// `path` (absolute in the root) on this machine, for the tools (`blkid`, `mkswap`,
/// `swapon`) and the fill of the temp file checked above.
fn host_path(cx: &Context<'_>, path: &str) -> PathBuf {
    cx.host.root().join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SwapSpec {
        SwapSpec {
            path: "/swapfile".into(),
            size_mib: 64,
        }
    }

    fn swapfile(size_mib: u64, mode: u32) -> SwapFile {
        SwapFile::Regular {
            size: size_mib * MIB,
            mode: Mode(mode),
            uid: 0,
            gid: 0,
            swap: true,
        }
    }

    fn observed(file: SwapFile, in_fstab: bool, active: Option<bool>) -> Observed {
        Observed {
            file,
            in_fstab,
            active,
        }
    }

    #[test]
    fn a_missing_swap_file_is_created_listed_and_activated() {
        let plan = diff(&spec(), &observed(SwapFile::Absent, false, Some(false))).unwrap();
        assert_eq!(
            plan,
            Plan {
                create: true,
                add_fstab: true,
                activate: true,
                ..Plan::default()
            }
        );
        // Under --root: no activation.
        let plan = diff(&spec(), &observed(SwapFile::Absent, true, None)).unwrap();
        assert_eq!(
            plan,
            Plan {
                create: true,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn an_active_listed_swap_file_is_unchanged_and_a_loose_mode_corrected() {
        let plan = diff(&spec(), &observed(swapfile(64, 0o600), true, Some(true))).unwrap();
        assert!(!plan.has_changes());
        let plan = diff(&spec(), &observed(swapfile(64, 0o644), true, Some(true))).unwrap();
        assert!(plan.fix_mode && !plan.create);
    }

    #[test]
    fn another_size_is_not_resized_but_reported() {
        let plan = diff(&spec(), &observed(swapfile(32, 0o600), true, Some(true))).unwrap();
        assert!(!plan.has_changes());
        let note = plan.size_note.clone().unwrap();
        assert!(note.starts_with("/swapfile is 32 MiB, catalog wants 64 MiB; not resized"));
        let plan = diff(&spec(), &observed(swapfile(32, 0o600), false, None)).unwrap();
        assert_eq!(
            outcome(&plan, None),
            Outcome::changed(format!("added to /etc/fstab; {note}"))
        );
    }

    #[test]
    fn something_else_at_the_path_is_never_overwritten() {
        let data = SwapFile::Regular {
            size: 64 * MIB,
            mode: Mode(0o600),
            uid: 0,
            gid: 0,
            swap: false,
        };
        let err = diff(&spec(), &observed(data, true, Some(false))).unwrap_err();
        assert_eq!(
            err,
            "/swapfile exists and is not a swap area; refusing to overwrite it"
        );
        let err = diff(
            &spec(),
            &observed(SwapFile::Other(FileKind::Directory), true, Some(false)),
        )
        .unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn a_refused_swapon_is_skipped_or_noted() {
        let only_activation = Plan {
            activate: true,
            ..Plan::default()
        };
        assert_eq!(
            outcome(&only_activation, Some("Operation not permitted".into())),
            Outcome::Skipped("swapon refused: Operation not permitted".into())
        );
        let created = Plan {
            create: true,
            add_fstab: true,
            activate: true,
            ..Plan::default()
        };
        assert_eq!(
            outcome(&created, Some("Invalid argument".into())),
            Outcome::changed(
                "created and formatted the swap file; added to /etc/fstab; not activated \
                 (swapon refused: Invalid argument)"
            )
        );
        assert_eq!(
            outcome(&created, None),
            Outcome::changed("created and formatted the swap file; added to /etc/fstab; activated")
        );
        // Under noop, in the conditional.
        assert_eq!(
            planned(&created),
            Outcome::changed(
                "would create and format the swap file; would add it to /etc/fstab; \
                 would activate it"
            )
        );
    }

    #[test]
    fn fstab_lines_are_found_and_added_once() {
        let fstab = "# /etc/fstab\nUUID=abc / ext4 defaults 0 1\n#/swapfile none swap sw 0 0";
        assert!(!fstab_has(fstab, "/swapfile"));
        let added = with_fstab_line(fstab.as_bytes(), "/swapfile");
        let added = String::from_utf8(added).unwrap();
        assert!(
            added.ends_with("sw 0 0\n/swapfile none swap sw 0 0\n"),
            "{added}"
        );
        assert!(fstab_has(&added, "/swapfile"));
        assert!(!fstab_has(&added, "/swap"));
        let spaced = String::from_utf8(with_fstab_line(b"", "/var/my swap")).unwrap();
        assert_eq!(spaced, "/var/my\\040swap none swap sw 0 0\n");
        assert!(fstab_has(&spaced, "/var/my swap"));
    }

    #[test]
    fn proc_swaps_lists_active_files() {
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /swapfile                               file\t\t65532\t\t0\t\t-2\n";
        assert!(swaps_has(swaps, "/swapfile"));
        assert!(!swaps_has(swaps, "/other"));
        assert!(!swaps_has("Filename Type Size Used Priority\n", "Filename"));
    }
}
