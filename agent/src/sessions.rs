//! Who is working: a user's login sessions and processes on the managed root, for the two
//! places where Steward must not disturb a person (restart nothing under someone who is
//! working) or must end their sessions on purpose (a purge).
//!
//! **Active** means either of:
//! - a **logind session** of the user that is not closing (`/run/systemd/sessions/*` of the
//!   root, `UID=` and `STATE=`): an SSH login, a console login, a PAM-backed web terminal;
//! - a **process of the user with a controlling terminal** that is not inside a terminal
//!   multiplexer's pane: a shell under sshd or ttyd, an attached `tmux`/`screen` client. The
//!   shells inside a *detached* tmux or screen session also hold a terminal (the
//!   multiplexer's pty), but nobody is typing there, so a process whose ancestors include a
//!   `tmux: server` or `SCREEN` process does not count.
//!
//! Processes are read from this agent's `/proc` and only those whose root directory is the
//! managed root (same device and inode) are considered (and signalled through a pidfd, checked
//! again once opened, so a reused pid is never hit), so with `--root` a process of this
//! machine that happens to have the same uid is never counted, nor ever signalled.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::host::Host;

/// One process of the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Process id in this agent's pid namespace.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// `comm` (the executable's name, at most 15 bytes).
    pub comm: String,
    /// Controlling terminal (`tty_nr` of `/proc/PID/stat`); 0 when none.
    pub tty: u32,
}

/// What makes a user active right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// logind session ids that are not closing.
    pub sessions: Vec<String>,
    /// Processes with a controlling terminal outside any multiplexer pane.
    pub terminals: Vec<Proc>,
}

impl Activity {
    /// Whether anything makes the user active.
    pub fn is_active(&self) -> bool {
        !self.sessions.is_empty() || !self.terminals.is_empty()
    }

    /// A few words for reports: "1 login session (3), 2 terminal processes (zsh, tmux)".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.sessions.is_empty() {
            parts.push(format!(
                "{} login session{} ({})",
                self.sessions.len(),
                plural(self.sessions.len()),
                self.sessions.join(", ")
            ));
        }
        if !self.terminals.is_empty() {
            let mut names: Vec<&str> = self.terminals.iter().map(|p| p.comm.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            parts.push(format!(
                "{} process{} on a terminal ({})",
                self.terminals.len(),
                if self.terminals.len() == 1 { "" } else { "es" },
                names.join(", ")
            ));
        }
        if parts.is_empty() {
            "idle".to_string()
        } else {
            parts.join(", ")
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Every process of `uid` whose root directory is `host`'s root.
pub fn processes(host: &Host, uid: u32) -> std::io::Result<Vec<Proc>> {
    Ok(all_processes(host)?
        .into_iter()
        .filter(|(owner, _)| *owner == uid)
        .map(|(_, p)| p)
        .collect())
}

/// Every process whose root is `host`'s root, with its real uid.
fn all_processes(host: &Host) -> std::io::Result<Vec<(u32, Proc)>> {
    let root = fs::metadata(host.root())?;
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process that exits meanwhile, or a kernel thread, is simply not listed.
        let dir = entry.path();
        let Ok(proc_root) = fs::metadata(dir.join("root")) else {
            continue;
        };
        if (proc_root.dev(), proc_root.ino()) != (root.dev(), root.ino()) {
            continue;
        }
        let (Ok(status), Ok(stat)) = (
            fs::read_to_string(dir.join("status")),
            fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        let (Some(uid), Some((comm, ppid, tty))) = (real_uid(&status), parse_stat(&stat)) else {
            continue;
        };
        out.push((
            uid,
            Proc {
                pid,
                ppid,
                comm,
                tty,
            },
        ));
    }
    Ok(out)
}

/// The real uid from `/proc/PID/status`.
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// `(comm, ppid, tty_nr)` from `/proc/PID/stat`. `comm` is in parentheses and may itself
/// contain spaces and parentheses, so the fields after it are found from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, i32, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    let _pgrp = rest.next()?;
    let _session = rest.next()?;
    let tty = rest.next()?.parse::<i64>().ok()?;
    Some((comm, ppid, u32::try_from(tty).unwrap_or(0)))
}

/// Whether `comm` is a terminal multiplexer's server (its panes are not someone typing).
fn is_multiplexer_server(comm: &str) -> bool {
    comm == "tmux: server" || comm == "SCREEN" || comm == "screen" || comm == "zellij"
}

/// logind sessions of `uid` in the root that are not closing.
fn logind_sessions(host: &Host, uid: u32) -> Vec<String> {
    let dir = host.root().join("run/systemd/sessions");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `*.ref` files are FIFOs held by the session's processes: never open them.
        if name.contains('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if session_counts(&text, uid) {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// A logind session file of `uid` whose state is not `closing`.
fn session_counts(text: &str, uid: u32) -> bool {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    field("UID").and_then(|u| u.parse::<u32>().ok()) == Some(uid)
        && field("STATE") != Some("closing")
}

/// What makes `uid` active on `host`'s root now (see the module doc).
pub fn activity(host: &Host, uid: u32) -> std::io::Result<Activity> {
    let all = all_processes(host)?;
    Ok(Activity {
        sessions: logind_sessions(host, uid),
        terminals: terminal_processes(&all, uid),
    })
}

/// The processes of `uid` with a controlling terminal outside multiplexer panes.
fn terminal_processes(all: &[(u32, Proc)], uid: u32) -> Vec<Proc> {
    let by_pid: std::collections::HashMap<i32, &Proc> =
        all.iter().map(|(_, p)| (p.pid, p)).collect();
    let in_pane = |p: &Proc| {
        let mut seen = 0;
        let mut cur = by_pid.get(&p.ppid);
        while let Some(parent) = cur {
            if is_multiplexer_server(&parent.comm) {
                return true;
            }
            seen += 1;
            if seen > 64 || parent.ppid == parent.pid {
                break;
            }
            cur = by_pid.get(&parent.ppid);
        }
        false
    };
    all.iter()
        .filter(|(owner, p)| *owner == uid && p.tty != 0 && !in_pane(p))
        .map(|(_, p)| p.clone())
        .collect()
}

/// Ends every process of `name` (`uid`) on the root: `loginctl terminate-user` when a
/// running systemd manages the root, then SIGTERM to what is left, up to `grace` for them to
/// exit, then SIGKILL. Returns the processes still there afterwards (normally none).
pub fn terminate_user(
    host: &Host,
    systemd: bool,
    name: &str,
    uid: u32,
    grace: Duration,
) -> std::io::Result<Vec<Proc>> {
    if uid == 0 {
        return Err(std::io::Error::other(
            "refusing to terminate the processes of uid 0",
        ));
    }
    if systemd {
        // Best effort: the processes are signalled below whatever loginctl says.
        let _ = crate::command::command("loginctl")
            .args(["terminate-user", "--", name])
            .output();
    }
    signal_all(host, uid, rustix::process::Signal::TERM)?;
    if !wait_gone(host, uid, grace)? {
        signal_all(host, uid, rustix::process::Signal::KILL)?;
        wait_gone(host, uid, Duration::from_secs(5))?;
    }
    processes(host, uid)
}

/// Signals every process of `uid` on the root through a pidfd, checked again after it is
/// opened: a pid that was reused meanwhile by another user's process (or one outside the
/// root) is never signalled, because the pidfd pins the process that was checked.
fn signal_all(host: &Host, uid: u32, signal: rustix::process::Signal) -> std::io::Result<()> {
    let root = fs::metadata(host.root())?;
    for p in processes(host, uid)? {
        let Some(pid) = rustix::process::Pid::from_raw(p.pid) else {
            continue;
        };
        // Gone meanwhile is fine.
        let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        else {
            continue;
        };
        let dir = std::path::Path::new("/proc").join(p.pid.to_string());
        let still_theirs = fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|status| real_uid(&status))
            == Some(uid)
            && fs::metadata(dir.join("root"))
                .is_ok_and(|r| (r.dev(), r.ino()) == (root.dev(), root.ino()));
        if still_theirs {
            let _ = rustix::process::pidfd_send_signal(&pidfd, signal);
        }
    }
    Ok(())
}

/// Polls until `uid` has no process on the root, up to `limit`. Whether they are gone.
fn wait_gone(host: &Host, uid: u32, limit: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if processes(host, uid)?.is_empty() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_comm_with_spaces_and_parentheses() {
        let stat = "4242 (tmux: server) S 1 4242 4242 0 -1 4194560 0";
        assert_eq!(parse_stat(stat), Some(("tmux: server".into(), 1, 0)));
        let odd = "7 (a) b (c) R 3 7 7 34817 7 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c".into(), 3, 34817)));
    }

    #[test]
    fn a_session_counts_for_its_uid_unless_closing() {
        let active = "# This is private data. Do not parse.\nUID=1001\nUSER=emo\nSTATE=active\n";
        assert!(session_counts(active, 1001));
        assert!(!session_counts(active, 1002));
        assert!(!session_counts(&active.replace("active", "closing"), 1001));
        assert!(session_counts(&active.replace("active", "online"), 1001));
    }

    #[test]
    fn shells_in_a_detached_multiplexer_do_not_count_but_its_clients_do() {
        let p = |pid, ppid, comm: &str, tty| Proc {
            pid,
            ppid,
            comm: comm.into(),
            tty,
        };
        let all = vec![
            (1001, p(10, 1, "tmux: server", 0)),
            (1001, p(11, 10, "zsh", 34816)),
            (1001, p(12, 11, "vim", 34816)),
            (1001, p(20, 1, "sshd", 0)),
            (1001, p(21, 20, "zsh", 34817)),
            (1001, p(22, 21, "tmux: client", 34817)),
            (1002, p(30, 1, "bash", 34818)),
        ];
        let active: Vec<i32> = terminal_processes(&all, 1001)
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(active, vec![21, 22]);
        let detached: Vec<_> = all.iter().filter(|(_, p)| p.pid < 20).cloned().collect();
        assert!(terminal_processes(&detached, 1001).is_empty());
        let activity = Activity {
            sessions: vec!["3".into()],
            terminals: terminal_processes(&all, 1001),
        };
        assert!(activity.is_active());
        assert_eq!(
            activity.describe(),
            "1 login session (3), 2 processes on a terminal (tmux: client, zsh)"
        );
        assert_eq!(Activity::default().describe(), "idle");
    }
}
