//! Running the host's tools (`useradd`, `systemctl`, `git`, `apt-get`, ...): no shell, a clean
//! environment, captured output and a hard timeout.
//!
//! Every provider that shells out goes through [`run`], so the rules hold everywhere: argv only
//! (nothing is ever interpolated into a shell line), `stdin` closed, the environment reduced to
//! a fixed `PATH` and `LC_ALL=C` plus what the caller sets explicitly, umask 022 (not the
//! agent's own 077), and a child that outlives its timeout is killed (with its process group)
//! and reported.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `PATH` for every child process.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Serializes the umask switch around spawns.
static UMASK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Most output kept per stream; the rest is dropped (a report must stay small).
const MAX_CAPTURE: usize = 64 * 1024;

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (at most 64 KiB).
    pub stdout: String,
    /// Standard error (at most 64 KiB).
    pub stderr: String,
}

impl Output {
    /// Exit code, or `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Why a command could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{program} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// It exited non-zero (only from [`run_checked`]).
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// How it ended.
        status: ExitStatus,
        /// The last lines of its standard error.
        stderr: String,
    },
}

/// A command with a clean environment: `PATH` and `LC_ALL=C` only, stdin closed. Add what the
/// tool needs (`HOME`, `GIT_*`) with `.env()`.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion or until `timeout`, capturing its output. A non-zero exit is not an
/// error here (see [`run_checked`]).
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, CommandError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    // Own process group, so a timeout kills the tool and whatever it started.
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The agent runs with umask 077 (its own files are private); the tools it runs get the
    // conventional 022, so what apt, useradd, systemctl or git create looks as they intend.
    // umask is per process: it is set around the spawn only, under a lock so that concurrent
    // spawns (tests, a future parallel engine) cannot restore each other's values.
    let spawned = {
        let _guard = UMASK_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let own = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let spawned = cmd.spawn();
        rustix::process::umask(own);
        spawned
    };
    let mut child = spawned.map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_until(&mut child, timeout);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(CommandError::Timeout { program, timeout }),
    }
}

/// [`run`], and a non-zero exit is [`CommandError::Failed`] with the tail of stderr.
pub fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<Output, CommandError> {
    let output = run(cmd, timeout)?;
    if output.success() {
        Ok(output)
    } else {
        Err(CommandError::Failed {
            program: cmd.get_program().to_string_lossy().into_owned(),
            status: output.status,
            stderr: tail(&output.stderr, 5),
        })
    }
}

/// The last `lines` non-empty lines of `text`, joined with `; `.
pub fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    kept[kept.len().saturating_sub(lines)..].join("; ")
}

fn reader<R: Read + Send + 'static>(stream: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let Some(stream) = stream else {
            return String::new();
        };
        let mut buf = Vec::new();
        // Read everything (so the child never blocks on a full pipe), keep the first part.
        let mut limited = stream.take(MAX_CAPTURE as u64);
        let _ = limited.read_to_end(&mut buf);
        let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait_until(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        let now = Instant::now();
        if now >= deadline {
            let group = i32::try_from(child.id()).ok();
            if let Some(pid) = group.and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_exit_code_with_a_clean_environment() {
        let out = run(
            command("sh").args(["-c", "echo out; echo err >&2; echo \"$PATH|$HOME\"; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout, format!("out\n{SAFE_PATH}|\n"));
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_children() {
        let started = Instant::now();
        let err = run(
            command("sh").args(["-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
        // The pipes closed, so the grandchild `sleep` was killed too (else the readers would
        // have waited for it).
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn children_get_umask_022_whatever_the_agents_own() {
        let own = {
            let _guard = UMASK_LOCK.lock().unwrap();
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077))
        };
        let out = run(command("sh").args(["-c", "umask"]), Duration::from_secs(10)).unwrap();
        let _guard = UMASK_LOCK.lock().unwrap();
        rustix::process::umask(own);
        assert_eq!(out.stdout.trim(), "0022");
    }

    #[test]
    fn run_checked_reports_the_tail_of_stderr() {
        let err = run_checked(
            command("sh").args(["-c", "echo one >&2; echo two >&2; exit 1"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("sh failed ("), "{text}");
        assert!(text.ends_with("one; two"), "{text}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = run(
            &mut command("/nonexistent/steward-tool"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err}");
    }
}
