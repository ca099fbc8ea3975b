//! The `service` provider: a systemd unit's enablement (`enable`) and run state (`ensure`).
//!
//! - **Observe**: `systemctl is-enabled UNIT`, and with a running systemd also
//!   `systemctl is-active UNIT`. Under `--root` it is `systemctl --root=ROOT is-enabled`, which
//!   reads the unit files offline (the run state of a root that is not running is not
//!   observable).
//! - **Diff**: [`plan`], pure. A unit file that does not exist, a masked unit asked to be
//!   enabled or started, and an invalid unit file fail the resource with a clear message;
//!   masked units are left alone (masking is an administrator's deliberate act).
//! - **Apply**: `systemctl enable|disable`, then `start|stop`, or `restart` when a subscribed
//!   resource changed in this run (`refresh`) and the unit should be running. `enable` and
//!   `disable` work offline (`systemctl --root=ROOT enable` under `--root`; plain `systemctl
//!   enable` detects a chroot or an unbooted system by itself), so without a running systemd
//!   the enablement is still converged and the start is reported
//!   [`Outcome::Skipped`] ("no running systemd: ...").
//! - **daemon-reload**: only when systemd says it is needed. `systemctl enable` / `disable`
//!   reload the manager themselves, and a unit file created since the last reload is loaded
//!   on demand (measured on systemd 252), so the one case left is a unit file or drop-in that
//!   *changed* since the last reload: before a start or restart the provider asks
//!   `systemctl show -p NeedDaemonReload --value UNIT` and runs `systemctl daemon-reload` when
//!   it says `yes`. That covers a refresh caused by a changed unit file or drop-in.
//!
//! - **Idle-gated restart** (`restart: when_idle`, see [`crate::pending`]): a restart that is
//!   due (a subscribed resource changed in this run, or an earlier run deferred it) of a unit
//!   that is running waits while its user is *active*: a logind session of the root that is
//!   not closing, or a process with a controlling terminal outside a detached multiplexer pane
//!   ([`crate::sessions::activity`]). Then the enablement is still converged, the restart is
//!   recorded in [`crate::pending::PATH`] (first deferral kept) and the resource is reported
//!   [`Outcome::Deferred`] with the activity, since when, and the retry rule. It is retried at
//!   every run and by the daemon's minute check; once the user is idle (or has no account)
//!   the unit is restarted and the record removed, the message saying since when it had
//!   waited. Past `max_defer_secs` since the first deferral it is restarted although the user
//!   is active, and the message says so. A unit that is not running is simply started; one
//!   that should be stopped drops its record. `restart: immediately` is unchanged.
//!
//! Template instances (`t3-serve@emo.service`) need nothing special: `is-enabled` and
//! `enable` take the instance name and link it to the template.

use std::process::Command;

use steward_protocol::{Restart, ServiceSpec, ServiceState};

use crate::command::{self, Output};
use crate::engine::{Context, Outcome};
use crate::pending;

/// Converges one `service` resource; `refresh` restarts it (when it should be running).
pub fn apply(spec: &ServiceSpec, cx: &Context<'_>, refresh: bool) -> anyhow::Result<Outcome> {
    check_unit_name(&spec.name)?;
    let unit = spec.name.as_str();
    let file_state = parse_is_enabled(&systemctl_output(cx, &["is-enabled"], unit)?)?;
    let active = if cx.systemd {
        Some(parse_is_active(&systemctl_output(
            cx,
            &["is-active"],
            unit,
        )?)?)
    } else {
        None
    };
    // A restart deferred by an earlier run is still due.
    let pending = match &spec.restart {
        Restart::WhenIdle { .. } => pending::get(cx.host, unit)?,
        Restart::Immediately => None,
    };
    let plan = plan(spec, &file_state, active, refresh || pending.is_some())
        .map_err(anyhow::Error::msg)?;
    let gate = match (&spec.restart, plan.run) {
        (
            Restart::WhenIdle {
                user,
                max_defer_secs,
            },
            Some(RunAction::Restart),
        ) => Some(idle_gate(cx, user, *max_defer_secs, pending.as_ref())?),
        _ => None,
    };
    if let Some(Gate::Defer(record)) = gate {
        return defer(cx, unit, plan.enablement, record);
    }
    // Whatever happens below settles the restart an earlier run deferred: done, forced, not
    // needed (the unit is started, or stopped), or not possible (no running systemd).
    let settled = pending.filter(|_| !cx.noop);
    if plan.is_empty() {
        forget(cx, settled.as_ref())?;
        return Ok(Outcome::Unchanged);
    }
    let mut done = Vec::new();
    if let Some(enablement) = plan.enablement {
        if !cx.noop {
            systemctl_checked(cx, &[enablement.verb()], unit)?;
        }
        done.push(enablement.past().to_string());
    }
    if let Some(action) = plan.run {
        if !cx.noop {
            if action != RunAction::Stop && needs_daemon_reload(cx, unit)? {
                run_systemctl(cx, &["daemon-reload"], None)?;
            }
            systemctl_checked(cx, &[action.verb()], unit)?;
        }
        done.push(match &gate {
            Some(gate) => gate.restarted(),
            None => action.past().to_string(),
        });
    }
    forget(cx, settled.as_ref())?;
    let said = done.join(", ");
    if let Some(left) = plan.not_possible {
        // Only the enablement could be converged (see `Plan::not_possible`).
        return Ok(if cx.noop {
            Outcome::changed(format!("would be {said}; not {left}: no running systemd"))
        } else {
            Outcome::Skipped(format!("no running systemd: {said}; not {left}"))
        });
    }
    let message = if cx.noop {
        format!("would be {said}")
    } else {
        said
    };
    Ok(Outcome::Changed {
        message,
        diff: None,
        corrective: plan.corrective(),
    })
}

/// What the idle gate says about a due restart of a `when_idle` unit.
#[derive(Debug)]
enum Gate {
    /// Restart now; `waited` is the first deferral when an earlier run deferred it.
    Idle { user: String, waited: Option<i64> },
    /// Restart although the user is active: deferred for longer than `max_defer`.
    Forced {
        user: String,
        activity: String,
        since: i64,
        max_defer: u64,
    },
    /// Wait: the record to keep.
    Defer(pending::Record),
}

impl Gate {
    /// The words for a restart that happens.
    fn restarted(&self) -> String {
        match self {
            Gate::Idle {
                user,
                waited: Some(since),
            } => format!(
                "restarted (subscribed resource changed; deferred since {} while {user} was \
                 active, {user} is idle now)",
                pending::rfc3339(*since)
            ),
            Gate::Idle { waited: None, .. } | Gate::Defer(_) => RunAction::Restart.past().into(),
            Gate::Forced {
                user,
                activity,
                since,
                max_defer,
            } => format!(
                "restarted although {user} is active ({activity}): deferred since {}, longer \
                 than max_defer {}",
                pending::rfc3339(*since),
                pending::duration(*max_defer)
            ),
        }
    }
}

/// Applies the one rule of [`pending::decide`] to `user`'s activity now.
fn idle_gate(
    cx: &Context<'_>,
    user: &str,
    max_defer_secs: Option<u64>,
    pending: Option<&pending::Record>,
) -> anyhow::Result<Gate> {
    let activity = pending::user_activity(cx.host, &*cx.accounts()?, user)?;
    let active = activity.as_ref().is_some_and(|a| a.is_active());
    let since = pending.map(|r| r.since);
    Ok(
        match pending::decide(active, since, max_defer_secs, crate::state::now()) {
            pending::Decision::Restart => Gate::Idle {
                user: user.to_string(),
                waited: since,
            },
            pending::Decision::Force { since, max_defer } => Gate::Forced {
                user: user.to_string(),
                activity: activity.map(|a| a.describe()).unwrap_or_default(),
                since,
                max_defer,
            },
            pending::Decision::Defer { since } => Gate::Defer(pending::Record {
                unit: String::new(),
                user: user.to_string(),
                since,
                reason: activity.map(|a| a.describe()).unwrap_or_default(),
                max_defer_secs,
            }),
        },
    )
}

/// Defers the restart of `unit`: converges the enablement, keeps the record (not under noop)
/// and says why, since when and when it is retried.
fn defer(
    cx: &Context<'_>,
    unit: &str,
    enablement: Option<Enablement>,
    mut record: pending::Record,
) -> anyhow::Result<Outcome> {
    record.unit = unit.to_string();
    let mut message = String::new();
    if let Some(enablement) = enablement {
        if !cx.noop {
            systemctl_checked(cx, &[enablement.verb()], unit)?;
        }
        message.push_str(&format!(
            "{}{}; ",
            if cx.noop { "would be " } else { "" },
            enablement.past()
        ));
    }
    message.push_str(&format!(
        "restart {}deferred: {user} is active ({activity}) since {since}; retried within a \
         minute of {user} going idle",
        if cx.noop { "would be " } else { "" },
        user = record.user,
        activity = record.reason,
        since = pending::rfc3339(record.since),
    ));
    if let Some(max) = record.max_defer_secs {
        message.push_str(&format!(
            ", forced at {} (max_defer {})",
            pending::rfc3339(record.since.saturating_add_unsigned(max)),
            pending::duration(max)
        ));
    }
    if !cx.noop {
        pending::put(cx.host, record)?;
    }
    Ok(Outcome::Deferred(message))
}

/// Removes the record of a restart that is settled.
fn forget(cx: &Context<'_>, settled: Option<&pending::Record>) -> anyhow::Result<()> {
    if let Some(record) = settled {
        pending::remove(cx.host, &record.unit)?;
    }
    Ok(())
}

/// What `systemctl is-enabled` says about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitFileState {
    /// `enabled`: linked from a `.wants/` or `.requires/` directory in `/etc`.
    Enabled,
    /// `enabled-runtime`: enabled in `/run` only (gone at reboot).
    EnabledRuntime,
    /// `linked` / `linked-runtime`: the unit file is a symlink from outside the search path.
    Linked,
    /// `alias`: the name is an alias of another unit.
    Alias,
    /// `masked` / `masked-runtime`.
    Masked,
    /// `static`: no `[Install]` section; cannot be enabled, started by dependencies.
    Static,
    /// `indirect`: enabled through `Also=` or a template's `DefaultInstance=`.
    Indirect,
    /// `generated`: made by a generator.
    Generated,
    /// `transient`: created at runtime through the bus.
    Transient,
    /// `disabled`.
    Disabled,
    /// `bad`: the unit file is invalid.
    Bad,
    /// No unit file by that name.
    NotFound,
    /// A state this provider does not know (a newer systemd).
    Other(String),
}

/// Parses the output of `systemctl is-enabled UNIT` (its exit code says little: non-zero for
/// both `disabled` and a missing unit, so stdout and stderr decide).
pub fn parse_is_enabled(out: &Output) -> anyhow::Result<UnitFileState> {
    let word = out.stdout.lines().next().unwrap_or("").trim();
    Ok(match word {
        "enabled" => UnitFileState::Enabled,
        "enabled-runtime" => UnitFileState::EnabledRuntime,
        "linked" | "linked-runtime" => UnitFileState::Linked,
        "alias" => UnitFileState::Alias,
        "masked" | "masked-runtime" => UnitFileState::Masked,
        "static" => UnitFileState::Static,
        "indirect" => UnitFileState::Indirect,
        "generated" => UnitFileState::Generated,
        "transient" => UnitFileState::Transient,
        "disabled" => UnitFileState::Disabled,
        "bad" => UnitFileState::Bad,
        "not-found" => UnitFileState::NotFound,
        "" if out.stderr.contains("No such file or directory") => UnitFileState::NotFound,
        "" => anyhow::bail!(
            "systemctl is-enabled failed ({}): {}",
            out.status,
            command::tail(&out.stderr, 3)
        ),
        other => UnitFileState::Other(other.to_string()),
    })
}

/// Parses the output of `systemctl is-active UNIT`: whether the unit is running (or about to
/// be, or reloading).
pub fn parse_is_active(out: &Output) -> anyhow::Result<bool> {
    let word = out.stdout.lines().next().unwrap_or("").trim();
    match word {
        "active" | "reloading" | "activating" | "refreshing" => Ok(true),
        "inactive" | "failed" | "deactivating" | "maintenance" | "unknown" => Ok(false),
        "" => anyhow::bail!(
            "systemctl is-active failed ({}): {}",
            out.status,
            command::tail(&out.stderr, 3)
        ),
        // A newer systemd's state: not one of the running ones.
        _ => Ok(false),
    }
}

/// A change of enablement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enablement {
    /// `systemctl enable`.
    Enable,
    /// `systemctl disable`.
    Disable,
}

impl Enablement {
    fn verb(self) -> &'static str {
        match self {
            Enablement::Enable => "enable",
            Enablement::Disable => "disable",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Enablement::Enable => "enabled",
            Enablement::Disable => "disabled",
        }
    }
}

/// A change of run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAction {
    /// `systemctl start`.
    Start,
    /// `systemctl stop`.
    Stop,
    /// `systemctl restart` (a subscribed resource changed).
    Restart,
}

impl RunAction {
    fn verb(self) -> &'static str {
        match self {
            RunAction::Start => "start",
            RunAction::Stop => "stop",
            RunAction::Restart => "restart",
        }
    }

    fn past(self) -> &'static str {
        match self {
            RunAction::Start => "started",
            RunAction::Stop => "stopped",
            RunAction::Restart => "restarted (subscribed resource changed)",
        }
    }
}

/// What to do to a unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Enable or disable.
    pub enablement: Option<Enablement>,
    /// Start, stop or restart.
    pub run: Option<RunAction>,
    /// Set when the enablement changes but the run state cannot be converged because no
    /// systemd is running (the unit should be running): the word for what is left undone.
    pub not_possible: Option<&'static str>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.enablement.is_none() && self.run.is_none()
    }

    /// Drift repair: the enablement was already right and only the run state had diverged
    /// (the unit was stopped by hand, or crashed). A first enable, a disable brought by a new
    /// catalog and a refresh restart are not corrective.
    pub fn corrective(&self) -> bool {
        self.enablement.is_none() && matches!(self.run, Some(RunAction::Start | RunAction::Stop))
    }
}

/// The pure diff. `active` is `None` when no systemd is running (the run state is not
/// observable and cannot be changed). Errors are the messages of a failed resource.
pub fn plan(
    spec: &ServiceSpec,
    state: &UnitFileState,
    active: Option<bool>,
    refresh: bool,
) -> Result<Plan, String> {
    let unit = &spec.name;
    let running_wanted = spec.ensure == ServiceState::Running;
    match state {
        UnitFileState::NotFound => {
            return Err(format!(
                "unit {unit} not found: no unit file by that name (for a template instance, \
                 no template either)"
            ))
        }
        UnitFileState::Bad => {
            return Err(format!(
                "the unit file of {unit} is invalid (systemctl is-enabled says \"bad\")"
            ))
        }
        UnitFileState::Masked if spec.enable || running_wanted => {
            return Err(format!(
                "{unit} is masked; left alone (unmask it to let the catalog manage it)"
            ))
        }
        _ => {}
    }
    let enablement = match (spec.enable, state) {
        // Enabled, or cannot be enabled and is started by something else: nothing to do.
        (
            true,
            UnitFileState::Enabled
            | UnitFileState::Alias
            | UnitFileState::Static
            | UnitFileState::Indirect
            | UnitFileState::Generated
            | UnitFileState::Transient,
        ) => None,
        // Disabled, runtime-only (persist it), linked from outside, or unknown.
        (true, _) => Some(Enablement::Enable),
        // Only a persistent enablement is undone; an alias is another unit's business.
        (false, UnitFileState::Enabled) => Some(Enablement::Disable),
        (false, _) => None,
    };
    let (run, not_possible) = match active {
        Some(active) => (
            match (running_wanted, active) {
                (true, false) => Some(RunAction::Start),
                (true, true) if refresh => Some(RunAction::Restart),
                (false, true) => Some(RunAction::Stop),
                _ => None,
            },
            None,
        ),
        // Without a running systemd nothing runs, so `stopped` holds; `running` cannot be
        // reached, which is worth saying only when this run changed something.
        None => (
            None,
            (running_wanted && enablement.is_some()).then_some("started"),
        ),
    };
    Ok(Plan {
        enablement,
        run,
        not_possible,
    })
}

/// Refuses unit names systemctl would read as an option or that are not unit names at all
/// (the server validates too; the agent does not rely on it).
fn check_unit_name(name: &str) -> anyhow::Result<()> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
    let suffix_ok = name
        .rsplit_once('.')
        .is_some_and(|(stem, suffix)| !stem.is_empty() && !suffix.is_empty());
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 255
            && valid_chars
            && suffix_ok
            && !name.starts_with(['-', '.', '@']),
        "invalid unit name {name:?}: expected a full unit name such as \"t3-serve@emo.service\""
    );
    Ok(())
}

/// `systemctl [--root ROOT] ARGS... [-- UNIT]`.
fn systemctl(cx: &Context<'_>, args: &[&str], unit: Option<&str>) -> Command {
    let mut cmd = command::command("systemctl");
    if cx.in_root() {
        cmd.arg("--root").arg(cx.host.root());
    }
    cmd.args(args);
    if let Some(unit) = unit {
        cmd.arg("--").arg(unit);
    }
    cmd
}

/// Runs a query; its exit code is left to the caller.
fn systemctl_output(cx: &Context<'_>, args: &[&str], unit: &str) -> anyhow::Result<Output> {
    Ok(command::run(
        &mut systemctl(cx, args, Some(unit)),
        cx.command_timeout,
    )?)
}

/// Runs a mutating command; a non-zero exit fails the resource with systemctl's words.
fn systemctl_checked(cx: &Context<'_>, args: &[&str], unit: &str) -> anyhow::Result<()> {
    run_systemctl(cx, args, Some(unit))
}

fn run_systemctl(cx: &Context<'_>, args: &[&str], unit: Option<&str>) -> anyhow::Result<()> {
    let out = command::run(&mut systemctl(cx, args, unit), cx.command_timeout)?;
    anyhow::ensure!(
        out.success(),
        "systemctl {}{} failed ({}): {}",
        args.join(" "),
        unit.map(|u| format!(" {u}")).unwrap_or_default(),
        out.status,
        command::tail(&format!("{}\n{}", out.stdout, out.stderr), 5)
    );
    Ok(())
}

/// Whether the running manager has an outdated copy of the unit (its file or a drop-in
/// changed since the last reload).
fn needs_daemon_reload(cx: &Context<'_>, unit: &str) -> anyhow::Result<bool> {
    if !cx.systemd {
        return Ok(false);
    }
    let out = systemctl_output(cx, &["show", "-p", "NeedDaemonReload", "--value"], unit)?;
    Ok(out.success() && out.stdout.trim() == "yes")
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;

    fn spec(enable: bool, ensure: ServiceState) -> ServiceSpec {
        ServiceSpec {
            name: "t3-serve@emo.service".into(),
            enable,
            ensure,
            subscribes: vec![],
            restart: Default::default(),
        }
    }

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn is_enabled_output_is_parsed_from_stdout_and_stderr() {
        use UnitFileState::*;
        assert_eq!(
            parse_is_enabled(&output(0, "enabled\n", "")).unwrap(),
            Enabled
        );
        assert_eq!(
            parse_is_enabled(&output(1, "disabled\n", "")).unwrap(),
            Disabled
        );
        assert_eq!(
            parse_is_enabled(&output(0, "static\n", "")).unwrap(),
            Static
        );
        assert_eq!(
            parse_is_enabled(&output(1, "masked-runtime\n", "")).unwrap(),
            Masked
        );
        assert_eq!(
            parse_is_enabled(&output(1, "not-found\n", "")).unwrap(),
            NotFound
        );
        // systemd 252 says it on stderr only.
        let missing = output(
            1,
            "",
            "Failed to get unit file state for nope.service: No such file or directory\n",
        );
        assert_eq!(parse_is_enabled(&missing).unwrap(), NotFound);
        assert_eq!(
            parse_is_enabled(&output(0, "shiny-new\n", "")).unwrap(),
            Other("shiny-new".into())
        );
        let err = parse_is_enabled(&output(1, "", "Failed to connect to bus\n")).unwrap_err();
        assert!(
            err.to_string().contains("Failed to connect to bus"),
            "{err}"
        );
    }

    #[test]
    fn is_active_output_is_parsed() {
        assert!(parse_is_active(&output(0, "active\n", "")).unwrap());
        assert!(parse_is_active(&output(3, "activating\n", "")).unwrap());
        assert!(!parse_is_active(&output(3, "inactive\n", "")).unwrap());
        assert!(!parse_is_active(&output(3, "failed\n", "")).unwrap());
        assert!(parse_is_active(&output(1, "", "Failed to connect to bus\n")).is_err());
    }

    #[test]
    fn plan_with_a_running_systemd() {
        use RunAction::*;
        use UnitFileState::*;
        let run = spec(true, ServiceState::Running);
        let p = plan(&run, &Disabled, Some(false), false).unwrap();
        assert_eq!(
            (p.enablement, p.run, p.corrective()),
            (Some(Enablement::Enable), Some(Start), false)
        );
        assert!(plan(&run, &Enabled, Some(true), false).unwrap().is_empty());
        // Stopped by hand (or crashed): drift.
        let p = plan(&run, &Enabled, Some(false), false).unwrap();
        assert_eq!(
            (p.enablement, p.run, p.corrective()),
            (None, Some(Start), true)
        );
        // A refresh restarts a running unit, and just starts a stopped one.
        let p = plan(&run, &Enabled, Some(true), true).unwrap();
        assert_eq!((p.run, p.corrective()), (Some(Restart), false));
        assert_eq!(
            plan(&run, &Enabled, Some(false), true).unwrap().run,
            Some(Start)
        );
        // Runtime-only enablement is made persistent; static units cannot be enabled.
        assert_eq!(
            plan(&run, &EnabledRuntime, Some(true), false)
                .unwrap()
                .enablement,
            Some(Enablement::Enable)
        );
        assert!(plan(&run, &Static, Some(true), false).unwrap().is_empty());
        assert!(plan(&run, &Indirect, Some(true), false).unwrap().is_empty());

        // Offboarding: disable and stop; a refresh does not restart a stopped unit.
        let off = spec(false, ServiceState::Stopped);
        let p = plan(&off, &Enabled, Some(true), true).unwrap();
        assert_eq!(
            (p.enablement, p.run),
            (Some(Enablement::Disable), Some(Stop))
        );
        assert!(plan(&off, &Disabled, Some(false), true).unwrap().is_empty());
        // Masked is "more disabled" than disabled: fine for offboarding, and still stopped.
        let p = plan(&off, &Masked, Some(true), false).unwrap();
        assert_eq!((p.enablement, p.run), (None, Some(Stop)));
        assert!(plan(&off, &Static, Some(false), false).unwrap().is_empty());

        // Running but not at boot.
        let p = plan(
            &spec(false, ServiceState::Running),
            &Enabled,
            Some(true),
            false,
        )
        .unwrap();
        assert_eq!((p.enablement, p.run), (Some(Enablement::Disable), None));
    }

    #[test]
    fn plan_without_a_running_systemd_converges_enablement_only() {
        use UnitFileState::*;
        let run = spec(true, ServiceState::Running);
        let p = plan(&run, &Disabled, None, false).unwrap();
        assert_eq!(
            (p.enablement, p.run, p.not_possible),
            (Some(Enablement::Enable), None, Some("started"))
        );
        // Already enabled: nothing can be done and nothing is repeated every run.
        assert_eq!(plan(&run, &Enabled, None, true).unwrap(), Plan::default());
        let off = spec(false, ServiceState::Stopped);
        let p = plan(&off, &Enabled, None, false).unwrap();
        assert_eq!(
            (p.enablement, p.run, p.not_possible),
            (Some(Enablement::Disable), None, None)
        );
    }

    #[test]
    fn plan_refuses_missing_invalid_and_masked_units() {
        use UnitFileState::*;
        let run = spec(true, ServiceState::Running);
        let err = plan(&run, &NotFound, None, false).unwrap_err();
        assert!(err.contains("t3-serve@emo.service not found"), "{err}");
        assert!(plan(&run, &Bad, Some(false), false)
            .unwrap_err()
            .contains("invalid"));
        assert!(plan(&run, &Masked, Some(false), false)
            .unwrap_err()
            .contains("masked; left alone"));
        assert!(plan(&spec(false, ServiceState::Stopped), &NotFound, None, false).is_err());
    }

    #[test]
    fn unit_names_are_checked() {
        for good in [
            "demo.service",
            "t3-serve@emo.service",
            "dev-disk-by\\x2dlabel.swap",
            "a.timer",
        ] {
            assert!(check_unit_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "--root=/tmp",
            "-x.service",
            "noext",
            "a b.service",
            "x.service\n",
            ".service",
            "a/b.service",
        ] {
            assert!(check_unit_name(bad).is_err(), "{bad:?}");
        }
    }
}
