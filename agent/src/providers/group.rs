//! The `group` provider: the group exists (`groupadd`, with `--gid` when the site pins one and
//! `--system` for system groups; `--root` under `--root`).
//!
//! Additive-only: a group is never deleted, and an existing group is never renumbered (every
//! file owned by the old gid would silently change hands), so a pinned gid that differs from
//! the root's fails the resource and changes nothing.

use anyhow::Context as _;
use steward_protocol::GroupSpec;

use crate::engine::{Context, Outcome};
use crate::providers::exec::run_tool;
use crate::providers::user::shadow_tool;

/// What has to happen to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Nothing,
    Create,
}

/// Converges one `group` resource.
pub fn apply(spec: &GroupSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    converge(spec, cx).with_context(|| format!("group {}", spec.name))
}

fn converge(spec: &GroupSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    let have = cx
        .accounts()
        .context("reading the root's groups")?
        .group(&spec.name)
        .map(|g| g.gid);
    match diff(spec, have).map_err(anyhow::Error::msg)? {
        Plan::Nothing => Ok(Outcome::Unchanged),
        Plan::Create if cx.noop => Ok(Outcome::changed(created(spec, spec.gid))),
        Plan::Create => {
            let result = run_tool(
                "groupadd",
                shadow_tool(cx, "groupadd").args(groupadd_args(spec)),
                cx.command_timeout,
            );
            cx.accounts_changed();
            result?;
            let gid = cx.accounts()?.group(&spec.name).map(|g| g.gid);
            anyhow::ensure!(gid.is_some(), "groupadd succeeded but the group is missing");
            Ok(Outcome::changed(created(spec, gid)))
        }
    }
}

/// The pure decision: `have` is the existing group's gid.
fn diff(spec: &GroupSpec, have: Option<u32>) -> Result<Plan, String> {
    match (have, spec.gid) {
        (None, _) => Ok(Plan::Create),
        (Some(have), Some(want)) if have != want => Err(format!(
            "gid mismatch: /etc/group has {have}, catalog wants {want}; \
             the group is not renumbered (change it by hand or fix the catalog)"
        )),
        (Some(_), _) => Ok(Plan::Nothing),
    }
}

fn groupadd_args(spec: &GroupSpec) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(gid) = spec.gid {
        args.extend(["--gid".to_string(), gid.to_string()]);
    }
    if spec.system {
        args.push("--system".to_string());
    }
    args.extend(["--".to_string(), spec.name.clone()]);
    args
}

fn created(spec: &GroupSpec, gid: Option<u32>) -> String {
    let system = if spec.system { "system group" } else { "group" };
    match gid {
        Some(gid) => format!("created {system} {} (gid {gid})", spec.name),
        None => format!("created {system} {}", spec.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(gid: Option<u32>, system: bool) -> GroupSpec {
        GroupSpec {
            name: "devs".into(),
            gid,
            system,
        }
    }

    #[test]
    fn a_missing_group_is_created_and_an_existing_one_left_alone() {
        assert_eq!(diff(&spec(None, false), None), Ok(Plan::Create));
        assert_eq!(diff(&spec(Some(2000), false), None), Ok(Plan::Create));
        assert_eq!(diff(&spec(None, false), Some(1234)), Ok(Plan::Nothing));
        assert_eq!(
            diff(&spec(Some(2000), false), Some(2000)),
            Ok(Plan::Nothing)
        );
    }

    #[test]
    fn a_pinned_gid_that_differs_fails_instead_of_renumbering() {
        let err = diff(&spec(Some(2000), false), Some(2001)).unwrap_err();
        assert!(
            err.starts_with("gid mismatch: /etc/group has 2001, catalog wants 2000"),
            "{err}"
        );
    }

    #[test]
    fn groupadd_gets_gid_and_system_flags_before_the_name() {
        assert_eq!(groupadd_args(&spec(None, false)), ["--", "devs"]);
        assert_eq!(
            groupadd_args(&spec(Some(2000), true)),
            ["--gid", "2000", "--system", "--", "devs"]
        );
        assert_eq!(
            created(&spec(None, true), Some(998)),
            "created system group devs (gid 998)"
        );
    }
}
