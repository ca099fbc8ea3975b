//! The `exec` provider: a guarded command, the catalog's escape hatch.
//!
//! Guards in Puppet's order: `creates` (the path exists beneath the root → unchanged), then
//! `unless` (its argv exits 0 → unchanged); otherwise the command runs, with its own timeout.
//! Under noop the guards are still evaluated (`unless` is a check by contract) but the command
//! is not run. Output is never logged; a failure carries only a short tail of stderr.
//!
//! How a command runs (see [`invocation`]):
//! - as root on `/`: directly, in `cwd` (default `/`);
//! - under `--root`, or as a `user`: through coreutils `chroot` — `chroot --userspec=UID:GID
//!   --groups=GIDS ROOT [env --chdir=CWD --] ARGV` (ROOT is `/` on the host itself). The ids
//!   come from the root's own passwd/group ([`Context::accounts`]), so nothing resolves names
//!   through this machine's NSS. `chroot` rather than `CommandExt::uid/gid` because the
//!   supplementary groups need `setgroups`, which std only offers unstably (or through
//!   `pre_exec`, i.e. `unsafe`); the `chdir` happens after the privilege drop, as the user.
//!
//! The environment is the runner's clean one (`PATH`, `LC_ALL=C`) plus `HOME`, `USER` and
//! `LOGNAME` of the account the command runs as, then the spec's `env` on top.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use steward_protocol::ExecSpec;

use crate::command::{self, CommandError, Output};
use crate::engine::{Context, Outcome};
use crate::host::FileState;

/// coreutils `chroot`, by absolute path: a spec's `env` may replace `PATH`.
pub(crate) const CHROOT: &str = "/usr/sbin/chroot";

/// Longest stderr tail carried in a message, in characters.
const MAX_TAIL_CHARS: usize = 400;

/// `program` run inside the root: through `chroot ROOT` under `--root` (for tools without a
/// root option of their own, such as `apt-get` or `tar`), directly on `/`.
pub(crate) fn root_command(cx: &Context<'_>, program: &str) -> Command {
    if cx.in_root() {
        let mut cmd = command::command(CHROOT);
        cmd.arg(cx.host.root()).arg(program);
        cmd
    } else {
        command::command(program)
    }
}

/// Runs `cmd` with `timeout`; a spawn failure, a timeout or a non-zero exit is an error that
/// names the tool as `label` (not `chroot`) with a short tail of its stderr.
pub(crate) fn run_tool(
    label: &str,
    cmd: &mut Command,
    timeout: Duration,
) -> anyhow::Result<Output> {
    let output = run_labelled(label, cmd, timeout)?;
    if output.success() {
        Ok(output)
    } else {
        Err(anyhow!(
            "{label} failed ({}): {}",
            output.status,
            short_tail(&output.stderr)
        ))
    }
}

/// [`command::run`] with errors naming `label`; a non-zero exit is not an error here.
pub(crate) fn run_labelled(
    label: &str,
    cmd: &mut Command,
    timeout: Duration,
) -> anyhow::Result<Output> {
    command::run(cmd, timeout).map_err(|e| match e {
        CommandError::Timeout { timeout, .. } => {
            anyhow!("{label} did not finish within {timeout:?} and was killed")
        }
        CommandError::Spawn { source, .. } => anyhow!("could not run {label}: {source}"),
        CommandError::Failed { .. } => anyhow!("{label} failed: {e}"),
    })
}

/// The last few lines of `text`, at most [`MAX_TAIL_CHARS`] characters (the end is kept).
pub(crate) fn short_tail(text: &str) -> String {
    let tail = command::tail(text, 5);
    if tail.is_empty() {
        return "(nothing on stderr)".to_string();
    }
    let count = tail.chars().count();
    if count <= MAX_TAIL_CHARS {
        tail
    } else {
        let kept: String = tail.chars().skip(count - MAX_TAIL_CHARS).collect();
        format!("…{kept}")
    }
}

/// The account a command runs as, from the root's own account database.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
    /// Primary and supplementary gids, sorted.
    groups: Vec<u32>,
    home: String,
}

/// What actually gets spawned on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Invocation {
    program: String,
    args: Vec<OsString>,
    /// Working directory of the spawned process on this machine.
    dir: PathBuf,
}

/// Why the command runs (or, under noop, would run).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// A guard says it is done.
    Skip,
    /// Run it, because of this.
    Run(String),
}

/// Converges one `exec` resource.
pub fn apply(spec: &ExecSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    converge(spec, cx).with_context(|| format!("exec {}", spec.name))
}

fn converge(spec: &ExecSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!spec.command.is_empty(), "the command is empty");
    let timeout = Duration::from_secs(u64::from(spec.timeout_secs.max(1)));
    let creates_exists = match &spec.creates {
        None => None,
        Some(path) => Some(
            match cx
                .host
                .observe_file_limited(path, 0)
                .with_context(|| format!("checking `creates` path {path}"))?
            {
                FileState::Absent => false,
                FileState::Regular(_) | FileState::Other { .. } => true,
            },
        ),
    };
    if let Some(true) = creates_exists {
        return Ok(Outcome::Unchanged);
    }
    let run_as = match &spec.user {
        Some(user) => Some(run_as(cx, user)?),
        None => None,
    };
    let env = environment(run_as.as_ref(), spec);
    let unless_code = match &spec.unless {
        None => None,
        Some(argv) => {
            anyhow::ensure!(!argv.is_empty(), "the `unless` command is empty");
            let inv = invocation(argv, cx.host.root(), run_as.as_ref(), spec.cwd.as_deref());
            let out = run_labelled("the `unless` command", &mut build(&inv, &env), timeout)?;
            Some(out.code())
        }
    };
    let reason = match decide(spec, creates_exists, unless_code) {
        Decision::Skip => return Ok(Outcome::Unchanged),
        Decision::Run(reason) => reason,
    };
    let message = format!("ran: {reason}");
    if cx.noop {
        return Ok(Outcome::changed(message));
    }
    let inv = invocation(
        &spec.command,
        cx.host.root(),
        run_as.as_ref(),
        spec.cwd.as_deref(),
    );
    let out = run_labelled("the command", &mut build(&inv, &env), timeout)?;
    if !out.success() {
        anyhow::bail!(
            "the command failed ({}): {}",
            out.status,
            short_tail(&out.stderr)
        );
    }
    Ok(Outcome::changed(message))
}

/// The pure decision from the guards' results: `creates_exists` is `None` without a
/// `creates` guard, `unless_code` `None` without an `unless` guard (`Some(None)`: killed by a
/// signal).
fn decide(
    spec: &ExecSpec,
    creates_exists: Option<bool>,
    unless_code: Option<Option<i32>>,
) -> Decision {
    if creates_exists == Some(true) || unless_code == Some(Some(0)) {
        return Decision::Skip;
    }
    let mut reasons = Vec::new();
    if let (Some(false), Some(path)) = (creates_exists, &spec.creates) {
        reasons.push(format!("{path} does not exist"));
    }
    match unless_code {
        Some(Some(code)) => reasons.push(format!("`unless` exited {code}")),
        Some(None) => reasons.push("`unless` was killed by a signal".to_string()),
        None => {}
    }
    if reasons.is_empty() {
        reasons.push("no guard".to_string());
    }
    Decision::Run(reasons.join(", "))
}

fn run_as(cx: &Context<'_>, user: &str) -> anyhow::Result<RunAs> {
    let accounts = cx.accounts().context("reading the root's accounts")?;
    let passwd = accounts
        .user(user)
        .ok_or_else(|| anyhow!("user {user:?} does not exist in the root"))?;
    let mut groups: Vec<u32> = accounts
        .supplementary_groups(user)
        .into_iter()
        .filter_map(|g| accounts.group(g).map(|g| g.gid))
        .chain([passwd.gid])
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(RunAs {
        name: passwd.name.clone(),
        uid: passwd.uid,
        gid: passwd.gid,
        groups,
        home: passwd.home.clone(),
    })
}

/// How to spawn `argv` beneath `root`, as `run_as` (root when `None`), in `cwd`.
fn invocation(
    argv: &[String],
    root: &Path,
    run_as: Option<&RunAs>,
    cwd: Option<&str>,
) -> Invocation {
    if root == Path::new("/") && run_as.is_none() {
        return Invocation {
            program: argv[0].clone(),
            args: argv[1..].iter().map(OsString::from).collect(),
            dir: PathBuf::from(cwd.unwrap_or("/")),
        };
    }
    let mut args: Vec<OsString> = Vec::new();
    if let Some(r) = run_as {
        args.push(format!("--userspec={}:{}", r.uid, r.gid).into());
        let groups: Vec<String> = r.groups.iter().map(u32::to_string).collect();
        args.push(format!("--groups={}", groups.join(",")).into());
    }
    args.push(root.as_os_str().to_owned());
    if let Some(cwd) = cwd {
        args.extend(["env".into(), format!("--chdir={cwd}").into(), "--".into()]);
    }
    args.extend(argv.iter().map(OsString::from));
    Invocation {
        program: CHROOT.to_string(),
        args,
        dir: PathBuf::from("/"),
    }
}

/// `HOME`, `USER`, `LOGNAME` of the account, then the spec's own variables.
fn environment(run_as: Option<&RunAs>, spec: &ExecSpec) -> Vec<(String, String)> {
    let (name, home) = match run_as {
        Some(r) => (r.name.as_str(), r.home.as_str()),
        None => ("root", "/root"),
    };
    let mut env = vec![
        ("HOME".to_string(), home.to_string()),
        ("USER".to_string(), name.to_string()),
        ("LOGNAME".to_string(), name.to_string()),
    ];
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

fn build(inv: &Invocation, env: &[(String, String)]) -> Command {
    let mut cmd = command::command(&inv.program);
    cmd.args(&inv.args).current_dir(&inv.dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec() -> ExecSpec {
        ExecSpec {
            name: "install-tool".into(),
            command: vec!["/usr/local/sbin/install".into(), "a b".into()],
            user: None,
            cwd: None,
            creates: None,
            unless: None,
            timeout_secs: 60,
            env: BTreeMap::new(),
        }
    }

    fn emo() -> RunAs {
        RunAs {
            name: "emo".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![27, 1001],
            home: "/home/emo".into(),
        }
    }

    fn os(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn guards_decide_whether_the_command_runs() {
        let mut s = spec();
        assert_eq!(decide(&s, None, None), Decision::Run("no guard".into()));
        s.creates = Some("/usr/local/bin/tool".into());
        assert_eq!(decide(&s, Some(true), None), Decision::Skip);
        assert_eq!(
            decide(&s, Some(false), None),
            Decision::Run("/usr/local/bin/tool does not exist".into())
        );
        assert_eq!(decide(&s, Some(false), Some(Some(0))), Decision::Skip);
        assert_eq!(
            decide(&s, Some(false), Some(Some(1))),
            Decision::Run("/usr/local/bin/tool does not exist, `unless` exited 1".into())
        );
        s.creates = None;
        assert_eq!(
            decide(&s, None, Some(None)),
            Decision::Run("`unless` was killed by a signal".into())
        );
    }

    #[test]
    fn as_root_on_the_host_the_command_runs_directly() {
        let inv = invocation(&spec().command, Path::new("/"), None, Some("/srv"));
        assert_eq!(inv.program, "/usr/local/sbin/install");
        assert_eq!(inv.args, os(&["a b"]));
        assert_eq!(inv.dir, Path::new("/srv"));
        let inv = invocation(&spec().command, Path::new("/"), None, None);
        assert_eq!(inv.dir, Path::new("/"));
    }

    #[test]
    fn as_a_user_or_in_a_root_it_runs_through_chroot_with_explicit_ids() {
        let inv = invocation(
            &spec().command,
            Path::new("/"),
            Some(&emo()),
            Some("/home/emo"),
        );
        assert_eq!(inv.program, CHROOT);
        assert_eq!(
            inv.args,
            os(&[
                "--userspec=1001:1001",
                "--groups=27,1001",
                "/",
                "env",
                "--chdir=/home/emo",
                "--",
                "/usr/local/sbin/install",
                "a b",
            ])
        );
        assert_eq!(inv.dir, Path::new("/"));
        let inv = invocation(&spec().command, Path::new("/mnt/img"), None, None);
        assert_eq!(
            inv.args,
            os(&["/mnt/img", "/usr/local/sbin/install", "a b"])
        );
    }

    #[test]
    fn the_environment_names_the_account_and_the_spec_can_add_to_it() {
        let mut s = spec();
        s.env.insert("FOO".into(), "bar".into());
        s.env.insert("HOME".into(), "/elsewhere".into());
        let env = environment(Some(&emo()), &s);
        assert_eq!(env[0], ("HOME".into(), "/home/emo".into()));
        assert_eq!(env[1], ("USER".into(), "emo".into()));
        assert!(env.contains(&("FOO".into(), "bar".into())));
        // The spec's value comes last, so it wins.
        assert_eq!(env.last().unwrap(), &("HOME".into(), "/elsewhere".into()));
        assert_eq!(
            environment(None, &spec())[0],
            ("HOME".into(), "/root".into())
        );
    }

    #[test]
    fn the_stderr_tail_is_short() {
        assert_eq!(short_tail(""), "(nothing on stderr)");
        assert_eq!(short_tail("a\n\nb\nc\n"), "a; b; c");
        let long = "x".repeat(1000);
        let tail = short_tail(&long);
        assert_eq!(tail.chars().count(), MAX_TAIL_CHARS + 1);
        assert!(tail.starts_with('…'));
    }
}
