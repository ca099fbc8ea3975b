//! The `package` provider: Debian packages installed, batched into one `apt-get install` per
//! run (DESIGN §4).
//!
//! The engine calls [`plan_batch`] once before applying, with the whole catalog; the per-run
//! [`Batch`] (in [`Context`]) then holds every package name. The first `package` resource
//! applied observes all of them with one `dpkg-query` and installs every missing one with one
//! `apt-get install`; the others find their answer in the batch. When the batched install
//! fails (one misspelt name fails the whole apt transaction; a package whose apt source is
//! added by a later resource cannot be found yet), each package still missing is installed on
//! its own when its resource comes, so a failure stays with the package that caused it;
//! only when apt itself was unusable (its lock held, a timeout) is the batch's error every
//! one of its packages' error.
//! Without `plan_batch` every resource is simply its own batch.
//!
//! `apt-get update` runs only when an install fails with a missing-package error, at most once
//! per run, and the install is retried once after it. apt has no real `--root`: under
//! `--root` it runs through `chroot`; `dpkg-query` reads the root's database with
//! `--admindir`. A package counts as installed when dpkg says `installed` (or only has
//! triggers pending); anything half-done is installed again.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::process::Command;

use anyhow::{bail, Context as _};
use steward_protocol::{Catalog, PackageSpec, ResourceSpec};

use crate::command;
use crate::engine::{Context, Outcome};
use crate::providers::exec::{root_command, run_labelled, run_tool, short_tail};

/// Per-run state: the package names of the catalog, what dpkg said about them, and the one
/// batched install.
#[derive(Debug, Default)]
pub struct Batch {
    /// Every package name of the catalog, in catalog order ([`plan_batch`]).
    planned: Vec<String>,
    /// Observed so far: name → installed.
    installed: BTreeMap<String, bool>,
    /// Installed by this run.
    installed_now: BTreeSet<String>,
    /// The batched install, once tried: its names, and its error if it failed.
    batch: Option<(Vec<String>, Option<String>)>,
    /// `apt-get update` ran in this run.
    updated: bool,
    stats: BatchStats,
}

/// How many times this run ran each tool (for reports and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// `dpkg-query` runs.
    pub queries: u32,
    /// `apt-get install` runs.
    pub installs: u32,
    /// `apt-get update` runs.
    pub updates: u32,
}

/// Records every package of `catalog` in the run's batch. Call once per run, before
/// [`crate::engine::apply`]; it runs nothing.
pub fn plan_batch(catalog: &Catalog, cx: &Context<'_>) {
    let mut planned: Vec<String> = Vec::new();
    for resource in &catalog.resources {
        if let ResourceSpec::Package(p) = &resource.spec {
            if !planned.contains(&p.name) {
                planned.push(p.name.clone());
            }
        }
    }
    *cx.packages.borrow_mut() = Batch {
        planned,
        ..Batch::default()
    };
}

/// What the package provider ran so far in this run.
pub fn stats(cx: &Context<'_>) -> BatchStats {
    cx.packages.borrow().stats
}

/// Converges one `package` resource.
pub fn apply(spec: &PackageSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    converge(spec, cx).with_context(|| format!("package {}", spec.name))
}

fn converge(spec: &PackageSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    let name = &spec.name;
    anyhow::ensure!(
        is_package_name(name),
        "{name:?} is not a Debian package name (lowercase letters, digits, `+`, `-`, `.`)"
    );
    let mut batch = cx.packages.borrow_mut();
    // Observe: this name and every planned one not seen yet, in one dpkg-query.
    let unobserved = unobserved(&batch.planned, name, &batch.installed);
    if !unobserved.is_empty() {
        let found = query(cx, &mut batch, &unobserved)?;
        for n in unobserved {
            let installed = found.contains(&n);
            batch.installed.insert(n, installed);
        }
    }
    let installed = |batch: &Batch| -> Outcome {
        if batch.installed_now.contains(name) {
            Outcome::changed(format!("installed {name}"))
        } else {
            Outcome::Unchanged
        }
    };
    if batch.installed_now.contains(name) || batch.installed.get(name) == Some(&true) {
        return Ok(installed(&batch));
    }
    if cx.noop {
        return Ok(Outcome::changed(format!("installed {name}")));
    }
    if batch.batch.is_none() {
        let names = missing(&batch.planned, name, &batch.installed);
        let error = install(cx, &mut batch, &names)
            .err()
            .map(|e| format!("{e:#}"));
        batch.batch = Some((names, error));
        if batch.installed_now.contains(name) {
            return Ok(installed(&batch));
        }
    }
    // Not installed by the batch: on its own, so the failure (if any) is this package's;
    // unless retrying could not help (it was alone, or apt itself was unusable).
    if let Some((names, Some(error))) = &batch.batch {
        if names.contains(name) && (names.len() == 1 || is_environmental(error)) {
            bail!("{error}");
        }
    }
    install(cx, &mut batch, std::slice::from_ref(name))?;
    Ok(installed(&batch))
}

/// Debian policy: at least two characters, lowercase alphanumerics and `+ - .`, starting with
/// an alphanumeric. Anything else is refused, so a name can never be read as an option.
fn is_package_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// Planned names and `name` that have not been observed yet, without duplicates.
fn unobserved(planned: &[String], name: &str, observed: &BTreeMap<String, bool>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for n in planned.iter().map(String::as_str).chain([name]) {
        if !observed.contains_key(n) && is_package_name(n) && !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    }
    names
}

/// The batch: planned names observed as not installed, plus `name`.
fn missing(planned: &[String], name: &str, observed: &BTreeMap<String, bool>) -> Vec<String> {
    let mut names: Vec<String> = planned
        .iter()
        .filter(|n| observed.get(*n) == Some(&false))
        .cloned()
        .collect();
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
    names
}

/// Installed package names from `dpkg-query -W -f '${Package}\t${db:Status-Status}\n'`.
fn installed_names(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| {
            matches!(
                status.trim(),
                "installed" | "triggers-pending" | "triggers-awaiting"
            )
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Whether apt-get failed because its package lists do not know a package (or are stale).
fn is_missing_package_error(stderr: &str) -> bool {
    [
        "Unable to locate package",
        "has no installation candidate",
        "Couldn't find any package",
        "Failed to fetch",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

/// Whether a failed install is apt's own trouble rather than a package's (another apt holds
/// the lock, it hung, it could not be run): installing packages one by one would only repeat
/// it.
fn is_environmental(error: &str) -> bool {
    [
        "Could not get lock",
        "Unable to acquire the dpkg frontend lock",
        "did not finish within",
        "could not run",
    ]
    .iter()
    .any(|needle| error.contains(needle))
}

fn query(
    cx: &Context<'_>,
    batch: &mut Batch,
    names: &[String],
) -> anyhow::Result<BTreeSet<String>> {
    let mut cmd = command::command("dpkg-query");
    if cx.in_root() {
        let mut admindir = OsString::from("--admindir=");
        admindir.push(cx.host.root().join("var/lib/dpkg"));
        cmd.arg(admindir);
    }
    cmd.args([
        "--show",
        "--showformat=${Package}\t${db:Status-Status}\n",
        "--",
    ])
    .args(names);
    batch.stats.queries += 1;
    let out = run_labelled("dpkg-query", &mut cmd, cx.command_timeout)?;
    // Exit 1: some name is unknown to dpkg, i.e. not installed.
    if !matches!(out.code(), Some(0 | 1)) {
        bail!(
            "dpkg-query failed ({}): {}",
            out.status,
            short_tail(&out.stderr)
        );
    }
    Ok(installed_names(&out.stdout))
}

fn apt_get(cx: &Context<'_>) -> Command {
    let mut cmd = root_command(cx, "apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .env("APT_LISTCHANGES_FRONTEND", "none");
    cmd
}

fn install_args(names: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "install",
        "--yes",
        "--quiet",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "-o",
        "DPkg::Lock::Timeout=120",
        "--",
    ]
    .map(String::from)
    .to_vec();
    args.extend(names.iter().cloned());
    args
}

/// One `apt-get install` of `names` (plus, on a missing-package error, one `apt-get update`
/// and one retry), then a `dpkg-query` to confirm each is installed.
fn install(cx: &Context<'_>, batch: &mut Batch, names: &[String]) -> anyhow::Result<()> {
    batch.stats.installs += 1;
    let out = run_labelled(
        "apt-get install",
        apt_get(cx).args(install_args(names)),
        cx.command_timeout,
    )?;
    if !out.success() {
        if !is_missing_package_error(&out.stderr) || batch.updated {
            bail!(
                "apt-get install failed ({}): {}",
                out.status,
                short_tail(&out.stderr)
            );
        }
        batch.updated = true;
        batch.stats.updates += 1;
        run_tool(
            "apt-get update",
            apt_get(cx).args(["update", "--quiet"]),
            cx.command_timeout,
        )?;
        batch.stats.installs += 1;
        run_tool(
            "apt-get install (after apt-get update)",
            apt_get(cx).args(install_args(names)),
            cx.command_timeout,
        )?;
    }
    let found = query(cx, batch, names)?;
    let mut absent = Vec::new();
    for n in names {
        let installed = found.contains(n);
        batch.installed.insert(n.clone(), installed);
        if installed {
            batch.installed_now.insert(n.clone());
        } else {
            absent.push(n.as_str());
        }
    }
    anyhow::ensure!(
        absent.is_empty(),
        "apt-get install succeeded but dpkg has no installed package named {} (a virtual \
         package? name the package that provides it)",
        absent.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn package_names_follow_debian_policy() {
        for good in ["hello", "g++", "libc6", "python3.11", "0ad"] {
            assert!(is_package_name(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "-oAPT::x=1",
            "Hello",
            "foo bar",
            "foo:amd64",
            "foo=1.0",
            "+x",
        ] {
            assert!(!is_package_name(bad), "{bad}");
        }
    }

    #[test]
    fn dpkg_status_lines_give_the_installed_set() {
        let stdout = "hello\tinstalled\ntree\tconfig-files\nvim\thalf-configured\n\
                      man-db\ttriggers-pending\n";
        assert_eq!(
            installed_names(stdout),
            ["hello", "man-db"].map(String::from).into()
        );
    }

    #[test]
    fn the_first_resource_observes_every_planned_name_once() {
        let planned = names(&["git", "hello", "tree", "git"]);
        let mut observed = BTreeMap::new();
        assert_eq!(
            unobserved(&planned, "hello", &observed),
            names(&["git", "hello", "tree"])
        );
        observed.insert("git".to_string(), true);
        observed.insert("hello".to_string(), false);
        observed.insert("tree".to_string(), false);
        assert!(unobserved(&planned, "tree", &observed).is_empty());
        // A package not in the plan (no plan_batch) is observed on its own.
        assert_eq!(unobserved(&[], "curl", &observed), names(&["curl"]));
    }

    #[test]
    fn the_batch_is_every_missing_planned_name() {
        let planned = names(&["git", "hello", "tree"]);
        let observed: BTreeMap<String, bool> = [("git", true), ("hello", false), ("tree", false)]
            .map(|(n, i)| (n.to_string(), i))
            .into();
        assert_eq!(
            missing(&planned, "hello", &observed),
            names(&["hello", "tree"])
        );
        assert_eq!(missing(&[], "curl", &observed), names(&["curl"]));
    }

    #[test]
    fn missing_package_errors_trigger_one_update() {
        assert!(is_missing_package_error(
            "E: Unable to locate package hellox\n"
        ));
        assert!(is_missing_package_error(
            "E: Failed to fetch http://deb.debian.org/debian/pool/main/h/hello/hello.deb  404  Not Found"
        ));
        assert!(!is_missing_package_error(
            "E: Could not get lock /var/lib/dpkg/lock-frontend"
        ));
    }

    #[test]
    fn only_a_package_specific_batch_failure_is_retried_package_by_package() {
        assert!(is_environmental(
            "apt-get install failed (exit status: 100): E: Could not get lock \
             /var/lib/dpkg/lock-frontend. It is held by process 42 (apt-get)"
        ));
        assert!(is_environmental(
            "apt-get install did not finish within 300s and was killed"
        ));
        assert!(!is_environmental(
            "apt-get install failed (exit status: 100): E: Unable to locate package x"
        ));
    }

    #[test]
    fn apt_get_is_non_interactive_and_keeps_existing_config_files() {
        let args = install_args(&names(&["hello", "tree"]));
        assert_eq!(args[0], "install");
        assert!(args.contains(&"--no-install-recommends".to_string()));
        assert!(args.contains(&"Dpkg::Options::=--force-confold".to_string()));
        assert_eq!(&args[args.len() - 3..], ["--", "hello", "tree"]);
    }
}
