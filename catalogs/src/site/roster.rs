//! `roster.yaml` → [`Roster`]: the people, validated field by field and across users.

use std::collections::{BTreeMap, HashMap};

use steward_protocol::is_normal_absolute_path;

use crate::model::{is_privileged, CodeLayout, PortRange, Roster, RosterUser, Tier, UserState};
use crate::site::read::{
    entries, fields, integer, is_host_glob, is_linux_name, join, text, text_list, Ctx,
};
use crate::yaml::{Node, NodeValue};

/// Keys of a roster entry.
pub(crate) const USER_KEYS: &[&str] = &[
    "authentik_user",
    "k8s_user",
    "tier",
    "namespaces",
    "code_layout",
    "repos",
    "state",
    "hosts",
    "shell",
    "uid",
    "groups",
    "revoke_groups",
    "enforce",
    "port",
    "home",
    "full_name",
    "flags",
];

/// System accounts of a Debian base install: a roster entry must never take one over.
const SYSTEM_USERS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "_apt",
    "messagebus",
    "sshd",
    "syslog",
    "polkitd",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
];

/// What the roster check needs from the other files; `None` when that file could not be read
/// (so its absence does not cause a cascade of errors).
pub(crate) struct RosterContext<'a> {
    pub(crate) tiers: Option<&'a BTreeMap<String, Tier>>,
    /// `Some(None)`: site.yaml read and has no port range.
    pub(crate) ports: Option<Option<PortRange>>,
}

/// Parses and validates `roster.yaml`.
pub(crate) fn parse(ctx: &mut Ctx<'_>, doc: &Node, others: &RosterContext<'_>) -> Roster {
    check_control_characters(ctx, "", doc);
    let mut roster = Roster::default();
    let Some(top) = fields(ctx, "", doc, &["users"]) else {
        return roster;
    };
    let Some(users) = top.get("users") else {
        return roster;
    };
    let Some(users) = entries(ctx, "users", users.value) else {
        return roster;
    };
    let mut seen = Seen::default();
    for entry in users {
        if let Some(user) = parse_user(ctx, entry.key, entry.line, entry.value, others) {
            seen.check(ctx, &user);
            roster.users.push(user);
        }
    }
    roster
}

/// Rejects control characters (newlines, tabs, escapes) in every roster value (F8): they end up
/// in passwd, unit files and generated maps.
fn check_control_characters(ctx: &mut Ctx<'_>, path: &str, node: &Node) {
    match &node.value {
        NodeValue::Scalar(s) => {
            if let Some(c) = s.text.chars().find(|c| c.is_control()) {
                ctx.error(
                    node.line,
                    path,
                    format!(
                        "contains the control character U+{:04X}; roster values must be one line of printable text",
                        c as u32
                    ),
                );
            }
        }
        NodeValue::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                check_control_characters(ctx, &format!("{path}[{i}]"), item);
            }
        }
        NodeValue::Map(pairs) => {
            for (k, v) in pairs {
                let key = k.as_scalar().map_or("", |s| s.text.as_str());
                if key.chars().any(char::is_control) {
                    // Reported once, on the key; its value's path would be unreadable.
                    check_control_characters(ctx, path, k);
                    continue;
                }
                check_control_characters(ctx, &join(path, key), v);
            }
        }
    }
}

fn parse_user(
    ctx: &mut Ctx<'_>,
    name: &str,
    line: u32,
    node: &Node,
    others: &RosterContext<'_>,
) -> Option<RosterUser> {
    let path = format!("users.{name}");
    check_os_user(ctx, &path, line, name);
    if node.is_null() {
        ctx.error(
            line,
            &path,
            "expected a mapping with authentik_user, k8s_user and tier",
        );
        return None;
    }
    let f = fields(ctx, &path, node, USER_KEYS)?;
    let field_lines: BTreeMap<String, u32> = f.iter().map(|e| (e.key.to_owned(), e.line)).collect();
    let mut user = RosterUser {
        name: name.to_owned(),
        loc: ctx.loc(line),
        field_lines,
        authentik_user: String::new(),
        k8s_user: String::new(),
        tier: String::new(),
        namespaces: Vec::new(),
        code_layout: CodeLayout::Single,
        repos: Vec::new(),
        state: UserState::Present,
        hosts: Vec::new(),
        shell: None,
        uid: None,
        groups: Vec::new(),
        revoke_groups: Vec::new(),
        enforce: Vec::new(),
        port: None,
        home: None,
        full_name: None,
        flags: BTreeMap::new(),
    };

    for required in ["authentik_user", "k8s_user", "tier"] {
        let Some(e) = f.get(required) else {
            ctx.error(line, &path, format!("missing required key {required:?}"));
            continue;
        };
        let field = join(&path, required);
        let Some(value) = text(ctx, &field, e.value) else {
            continue;
        };
        if value.trim_matches(' ').is_empty() || value.trim_matches(' ') != value {
            ctx.error(
                e.line,
                &field,
                "must not be empty or have leading or trailing spaces",
            );
        }
        match required {
            "authentik_user" => user.authentik_user = value,
            "k8s_user" => user.k8s_user = value,
            _ => user.tier = value,
        }
    }

    let tier = match others.tiers {
        Some(tiers) if !user.tier.is_empty() => {
            let tier = tiers.get(&user.tier);
            if tier.is_none() {
                let known: Vec<&str> = tiers.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "tiers.yaml defines no tiers".to_owned()
                } else {
                    format!("known tiers: {}", known.join(", "))
                };
                let tier_line = f.get("tier").map_or(line, |e| e.line);
                ctx.error(
                    tier_line,
                    &join(&path, "tier"),
                    format!("unknown tier {:?}; {known}", user.tier),
                );
            }
            tier
        }
        _ => None,
    };

    let mut namespaces_readable = true;
    if let Some(e) = f.get("namespaces") {
        let field = join(&path, "namespaces");
        let items = text_list(ctx, &field, e.value);
        namespaces_readable = items.is_some();
        if let Some(items) = items {
            for (i, (item_line, ns)) in items.iter().enumerate() {
                if !is_namespace(ns) {
                    ctx.error(
                        *item_line,
                        &format!("{field}[{i}]"),
                        format!("{ns:?} is not a kubernetes namespace name (lowercase letters, digits and \"-\", at most 63)"),
                    );
                }
            }
            user.namespaces = unique(ctx, &field, items);
        }
    }
    if let Some(tier) = tier {
        if tier.requires_namespaces && user.namespaces.is_empty() && namespaces_readable {
            let at = f.get("namespaces").map_or(line, |e| e.line);
            ctx.error(
                at,
                &join(&path, "namespaces"),
                format!(
                    "tier {:?} requires namespaces; add namespaces: [<namespace>]",
                    tier.name
                ),
            );
        }
    }

    if let Some(e) = f.get("code_layout") {
        let field = join(&path, "code_layout");
        match text(ctx, &field, e.value).as_deref() {
            Some("single") => user.code_layout = CodeLayout::Single,
            Some("workspace") => user.code_layout = CodeLayout::Workspace,
            Some(other) => ctx.error(
                e.line,
                &field,
                format!("{other:?} is not a code layout; use single or workspace"),
            ),
            None => {}
        }
    }

    if let Some(e) = f.get("repos") {
        let field = join(&path, "repos");
        if let Some(items) = text_list(ctx, &field, e.value) {
            for (i, (item_line, repo)) in items.iter().enumerate() {
                if !is_repo_name(repo) {
                    ctx.error(
                        *item_line,
                        &format!("{field}[{i}]"),
                        format!("{repo:?} is not a repository name (letters, digits, \".\", \"_\" and \"-\")"),
                    );
                }
            }
            user.repos = unique(ctx, &field, items);
            if !user.repos.is_empty() && user.code_layout != CodeLayout::Workspace {
                ctx.error(
                    e.line,
                    &field,
                    "repos are only cloned with the workspace layout; add code_layout: workspace",
                );
            }
        }
    }

    if let Some(e) = f.get("state") {
        let field = join(&path, "state");
        match text(ctx, &field, e.value).as_deref() {
            Some("present") => user.state = UserState::Present,
            Some("offboarded") => user.state = UserState::Offboarded,
            Some("purged") => user.state = UserState::Purged,
            Some(other) => ctx.error(
                e.line,
                &field,
                format!("{other:?} is not a state; use present, offboarded or purged"),
            ),
            None => {}
        }
    }

    if let Some(e) = f.get("hosts") {
        let field = join(&path, "hosts");
        if let Some(items) = text_list(ctx, &field, e.value) {
            for (i, (item_line, glob)) in items.iter().enumerate() {
                if !is_host_glob(glob) {
                    ctx.error(
                        *item_line,
                        &format!("{field}[{i}]"),
                        format!("{glob:?} is not a hostname glob (lowercase letters, digits, \"-\", \".\", \"*\" and \"?\")"),
                    );
                }
            }
            user.hosts = unique(ctx, &field, items);
        }
    }

    if let Some(e) = f.get("shell") {
        let field = join(&path, "shell");
        if let Some(shell) = text(ctx, &field, e.value) {
            if is_normal_absolute_path(&shell) {
                user.shell = Some(shell);
            } else {
                ctx.error(e.line, &field, path_message(&shell));
            }
        }
    }

    if let Some(e) = f.get("uid") {
        let field = join(&path, "uid");
        if let Some(uid) = integer(ctx, &field, e.value) {
            user.uid = check_uid(ctx, &field, e.line, uid, tier, others.tiers.is_some());
        }
    }

    if let Some(e) = f.get("groups") {
        let field = join(&path, "groups");
        if let Some(items) = text_list(ctx, &field, e.value) {
            for (i, (item_line, group)) in items.iter().enumerate() {
                let item_field = format!("{field}[{i}]");
                if !is_linux_name(group) {
                    ctx.error(
                        *item_line,
                        &item_field,
                        format!("{group:?} is not a valid group name"),
                    );
                } else if is_privileged(group)
                    && others.tiers.is_some()
                    && !tier.is_some_and(|t| t.privileged_groups.contains(group))
                {
                    ctx.error(
                        *item_line,
                        &item_field,
                        format!(
                            "group {group:?} is privileged; only a tier that lists it in privileged_groups grants it (tier {:?} does not)",
                            user.tier
                        ),
                    );
                }
            }
            user.groups = unique(ctx, &field, items);
        }
    }

    if let Some(e) = f.get("revoke_groups") {
        let field = join(&path, "revoke_groups");
        if let Some(items) = text_list(ctx, &field, e.value) {
            for (i, (item_line, group)) in items.iter().enumerate() {
                let item_field = format!("{field}[{i}]");
                let granted = tier.is_some_and(|t| {
                    t.groups.contains(group) || t.privileged_groups.contains(group)
                }) || user.groups.contains(group);
                if !is_linux_name(group) {
                    ctx.error(
                        *item_line,
                        &item_field,
                        format!("{group:?} is not a valid group name"),
                    );
                } else if granted {
                    ctx.error(
                        *item_line,
                        &item_field,
                        format!(
                            "group {group:?} is granted to this user (tier {:?} or groups); it cannot also be revoked",
                            user.tier
                        ),
                    );
                }
            }
            user.revoke_groups = unique(ctx, &field, items);
        }
    }

    if let Some(e) = f.get("enforce") {
        user.enforce = super::config::user_attributes(ctx, &join(&path, "enforce"), e.value);
    }

    if let Some(e) = f.get("port") {
        let field = join(&path, "port");
        if let Some(port) = integer(ctx, &field, e.value) {
            user.port = check_port(ctx, &field, e.line, port, others.ports);
        }
    }

    if let Some(e) = f.get("home") {
        let field = join(&path, "home");
        if let Some(home) = text(ctx, &field, e.value) {
            let root = format!("/home/{name}");
            if !is_normal_absolute_path(&home) {
                ctx.error(e.line, &field, path_message(&home));
            } else if home != root && !home.starts_with(&format!("{root}/")) {
                ctx.error(
                    e.line,
                    &field,
                    format!("{home:?} is outside {root}; a home must be {root} or below it"),
                );
            } else {
                user.home = Some(home);
            }
        }
    }

    if let Some(e) = f.get("full_name") {
        let field = join(&path, "full_name");
        if let Some(full_name) = text(ctx, &field, e.value) {
            if full_name.contains(':') {
                ctx.error(
                    e.line,
                    &field,
                    "must not contain \":\" (it separates passwd fields)",
                );
            } else {
                user.full_name = Some(full_name);
            }
        }
    }

    if let Some(e) = f.get("flags") {
        let field = join(&path, "flags");
        if let Some(flags) = entries(ctx, &field, e.value) {
            for flag in flags {
                let flag_field = join(&field, flag.key);
                if !is_flag_name(flag.key) {
                    ctx.error(
                        flag.line,
                        &flag_field,
                        "flag names are letters, digits and \"_\", starting with a letter or \"_\"",
                    );
                    continue;
                }
                if flag.value.as_scalar().is_none() {
                    ctx.error(
                        flag.value.line,
                        &flag_field,
                        format!("flags are plain values, found {}", flag.value.kind_name()),
                    );
                    continue;
                }
                match flag.value.to_json() {
                    Ok(value) => {
                        user.flags.insert(flag.key.to_owned(), value);
                    }
                    Err(err) => ctx.error(err.line, &flag_field, err.message),
                }
            }
        }
    }

    Some(user)
}

fn check_os_user(ctx: &mut Ctx<'_>, path: &str, line: u32, name: &str) {
    if !is_linux_name(name) {
        ctx.error(
            line,
            path,
            format!(
                "{name:?} is not a valid linux user name; use lowercase letters, digits, \"_\" and \"-\", starting with a letter or \"_\", at most 32 characters"
            ),
        );
    } else if SYSTEM_USERS.contains(&name) {
        ctx.error(
            line,
            path,
            format!("{name:?} is a system account; pick another os_user"),
        );
    } else if is_privileged(name) {
        ctx.error(
            line,
            path,
            format!("{name:?} is a privileged group name; a user of that name would get the group as its own"),
        );
    }
}

fn check_uid(
    ctx: &mut Ctx<'_>,
    field: &str,
    line: u32,
    uid: i64,
    tier: Option<&Tier>,
    tiers_known: bool,
) -> Option<u32> {
    let Ok(uid) = u32::try_from(uid) else {
        ctx.error(line, field, format!("uid {uid} is out of range"));
        return None;
    };
    match uid {
        0 => {
            ctx.error(
                line,
                field,
                "uid 0 is root; pin a uid of 1000 or more, or leave uid out",
            );
            None
        }
        65534 | 65535 | u32::MAX => {
            ctx.error(
                line,
                field,
                format!("uid {uid} is reserved (nobody or invalid); pick another"),
            );
            None
        }
        1..=999 if tiers_known && !tier.is_some_and(|t| t.allow_low_uid) => {
            ctx.error(
                line,
                field,
                format!("uid {uid} is below 1000 (system range); only tiers with allow_low_uid: true may pin one"),
            );
            None
        }
        _ => Some(uid),
    }
}

fn check_port(
    ctx: &mut Ctx<'_>,
    field: &str,
    line: u32,
    port: i64,
    range: Option<Option<PortRange>>,
) -> Option<u16> {
    let Some(port) = u16::try_from(port).ok().filter(|p| *p > 0) else {
        ctx.error(
            line,
            field,
            format!("port {port} is not between 1 and 65535"),
        );
        return None;
    };
    match range {
        Some(None) => {
            ctx.error(
                line,
                field,
                "site.yaml has no port range; add ports: { start, end } there or remove the port",
            );
            None
        }
        Some(Some(r)) if port < r.start || port > r.end => {
            ctx.error(
                line,
                field,
                format!(
                    "port {port} is outside the site's range {}-{}",
                    r.start, r.end
                ),
            );
            None
        }
        _ => Some(port),
    }
}

/// Message for a path that is not absolute and normal.
pub(crate) fn path_message(path: &str) -> String {
    if !path.starts_with('/') {
        format!("{path:?} is not an absolute path; start it with /")
    } else {
        format!("{path:?} is not a normal path; remove \"..\", \".\", empty components and trailing \"/\"")
    }
}

/// Drops duplicates, reporting each at its line.
fn unique(ctx: &mut Ctx<'_>, field: &str, items: Vec<(u32, String)>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, (line, item)) in items.into_iter().enumerate() {
        if out.contains(&item) {
            ctx.error(
                line,
                &format!("{field}[{i}]"),
                format!("{item:?} is listed twice"),
            );
        } else {
            out.push(item);
        }
    }
    out
}

/// A Kubernetes namespace: an RFC 1123 label.
fn is_namespace(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `[A-Za-z0-9._-]+`, and not `.` or `..` (a repo is cloned to `~/code/<name>`).
fn is_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A template-friendly key: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_flag_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_alphabetic() || *b == b'_')
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Values that must be unique across users, with who had them first.
#[derive(Default)]
struct Seen {
    uids: HashMap<u32, (String, u32)>,
    authentik: HashMap<String, (String, u32)>,
    ports: HashMap<u16, (String, u32)>,
}

impl Seen {
    fn check(&mut self, ctx: &mut Ctx<'_>, user: &RosterUser) {
        let path = format!("users.{}", user.name);
        if let Some(uid) = user.uid {
            let line = user.loc_of("uid").line;
            if let Some((other, other_line)) = self.uids.get(&uid) {
                ctx.error(
                    line,
                    &join(&path, "uid"),
                    format!("uid {uid} is already used by {other:?} (line {other_line})"),
                );
            } else {
                self.uids.insert(uid, (user.name.clone(), line));
            }
        }
        if !user.authentik_user.is_empty() {
            let line = user.loc_of("authentik_user").line;
            // SSO user names compare case-insensitively: `Emo` and `emo` are one login.
            let key = user.authentik_user.to_lowercase();
            if let Some((other, other_line)) = self.authentik.get(&key) {
                ctx.error(
                    line,
                    &join(&path, "authentik_user"),
                    format!(
                        "authentik user {:?} is already used by {other:?} (line {other_line})",
                        user.authentik_user
                    ),
                );
            } else {
                self.authentik.insert(key, (user.name.clone(), line));
            }
        }
        if let Some(port) = user.port {
            let line = user.loc_of("port").line;
            if let Some((other, other_line)) = self.ports.get(&port) {
                ctx.error(
                    line,
                    &join(&path, "port"),
                    format!("port {port} is already used by {other:?} (line {other_line})"),
                );
            } else {
                self.ports.insert(port, (user.name.clone(), line));
            }
        }
    }
}
