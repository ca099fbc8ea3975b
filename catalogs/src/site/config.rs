//! `site.yaml` → [`SiteConfig`]: host classes, user defaults, ports, Vault settings, catalog
//! expiry, offboarding, vars and resource bundles (templates checked against
//! [`RESOURCE_SCHEMAS`](crate::model::RESOURCE_SCHEMAS)).

use std::collections::BTreeMap;

use serde_json::Value;
use steward_protocol::{is_normal_absolute_path, Mode};

use crate::model::{
    Bundle, FieldKind, FieldSchema, HostClass, PortRange, ResourceTemplate, SiteConfig,
    UserDefaults, VaultSettings, RESOURCE_SCHEMAS,
};
use crate::site::read::{
    boolean, entries, fields, integer, is_host_glob, is_identifier, is_templated, join, json_map,
    parse_duration, suggest, text, text_list, Ctx,
};
use crate::site::roster::path_message;
use crate::site::Ref;
use crate::yaml::{Node, NodeValue};

const TOP_KEYS: &[&str] = &[
    "classes",
    "users",
    "ports",
    "vault",
    "catalog",
    "offboarding",
    "vars",
    "bundles",
];

/// Default login shell.
pub(crate) const DEFAULT_SHELL: &str = "/bin/bash";
/// Default mode of a new home.
pub(crate) const DEFAULT_HOME_MODE: Mode = Mode(0o700);
/// Default KV path of the roles map.
pub(crate) const DEFAULT_ROLES_PATH: &str = "secret/platform";
/// Default key of the roles map.
pub(crate) const DEFAULT_ROLES_KEY: &str = "k8s_users";
/// Default catalog lifetime: 7 days.
pub(crate) const DEFAULT_EXPIRES_AFTER_SECS: i64 = 7 * 86_400;
/// Shortest allowed catalog lifetime: 10 minutes.
pub(crate) const MIN_EXPIRES_AFTER_SECS: i64 = 600;
/// Longest allowed catalog lifetime: 90 days.
pub(crate) const MAX_EXPIRES_AFTER_SECS: i64 = 90 * 86_400;
/// Default archive directory for purged homes.
pub(crate) const DEFAULT_ARCHIVE_DIR: &str = "/var/backups/steward/offboarded";

/// Keys allowed next to the resource type in a bundle item.
const TEMPLATE_KEYS: &[&str] = &["when", "for_each", "requires"];

/// The defaults, as used when `site.yaml` leaves a section out.
pub(crate) fn default_config() -> SiteConfig {
    SiteConfig {
        classes: Vec::new(),
        users: UserDefaults {
            shell: DEFAULT_SHELL.to_owned(),
            home_mode: DEFAULT_HOME_MODE,
            lock_at_creation: true,
            requires: Vec::new(),
            enforce: Vec::new(),
        },
        ports: None,
        vault: VaultSettings {
            roles_path: DEFAULT_ROLES_PATH.to_owned(),
            roles_key: DEFAULT_ROLES_KEY.to_owned(),
        },
        catalog_expires_after_secs: DEFAULT_EXPIRES_AFTER_SECS,
        archive_dir: DEFAULT_ARCHIVE_DIR.to_owned(),
        terminate_sessions: true,
        vars: BTreeMap::new(),
        bundles: BTreeMap::new(),
    }
}

/// Parses and validates `site.yaml`. `files` are the `files/**` entries (relative to `files/`)
/// that `template:`/`source:` must name. Bundle names and resource ids are returned in `refs`
/// to check once every file is read.
pub(crate) fn parse(
    ctx: &mut Ctx<'_>,
    doc: &Node,
    files: &BTreeMap<String, String>,
    refs: &mut Vec<Ref>,
) -> SiteConfig {
    let mut config = default_config();
    let Some(top) = fields(ctx, "", doc, TOP_KEYS) else {
        return config;
    };
    if let Some(e) = top.get("classes") {
        config.classes = parse_classes(ctx, e.value, refs);
    }
    if let Some(e) = top.get("users") {
        parse_user_defaults(ctx, e.value, &mut config.users, refs);
    }
    if let Some(e) = top.get("ports") {
        config.ports = parse_ports(ctx, e.line, e.value);
    }
    if let Some(e) = top.get("vault") {
        parse_vault(ctx, e.value, &mut config.vault);
    }
    if let Some(e) = top.get("catalog") {
        if let Some(f) = fields(ctx, "catalog", e.value, &["expires_after"]) {
            if let Some(e) = f.get("expires_after") {
                let field = "catalog.expires_after";
                if let Some(t) = text(ctx, field, e.value) {
                    match parse_duration(&t) {
                        Some(secs) if (MIN_EXPIRES_AFTER_SECS..=MAX_EXPIRES_AFTER_SECS).contains(&secs) => {
                            config.catalog_expires_after_secs = secs;
                        }
                        Some(_) => ctx.error(e.line, field, format!("{t:?} must be between 10m and 90d")),
                        None => ctx.error(
                            e.line,
                            field,
                            format!("{t:?} is not a duration; write a number and a unit: 90s, 30m, 12h or 7d"),
                        ),
                    }
                }
            }
        }
    }
    if let Some(e) = top.get("offboarding") {
        if let Some(f) = fields(
            ctx,
            "offboarding",
            e.value,
            &["archive_dir", "terminate_sessions"],
        ) {
            if let Some(e) = f.get("terminate_sessions") {
                if let Some(v) = boolean(ctx, "offboarding.terminate_sessions", e.value) {
                    config.terminate_sessions = v;
                }
            }
            if let Some(e) = f.get("archive_dir") {
                let field = "offboarding.archive_dir";
                if let Some(dir) = text(ctx, field, e.value) {
                    if !is_normal_absolute_path(&dir) {
                        ctx.error(e.line, field, path_message(&dir));
                    } else if dir == "/" || dir == "/home" || dir.starts_with("/home/") {
                        ctx.error(
                            e.line,
                            field,
                            format!("{dir:?} must not be / or under /home; a user could read other people's archives"),
                        );
                    } else {
                        config.archive_dir = dir;
                    }
                }
            }
        }
    }
    if let Some(e) = top.get("vars") {
        config.vars = json_map(ctx, "vars", e.value).unwrap_or_default();
    }
    if let Some(e) = top.get("bundles") {
        for bundle in entries(ctx, "bundles", e.value).unwrap_or_default() {
            let path = format!("bundles.{}", bundle.key);
            if !is_identifier(bundle.key) {
                ctx.error(bundle.line, &path, name_message("bundle", bundle.key));
            }
            let resources = parse_bundle(ctx, &path, bundle.value, files, refs);
            config.bundles.insert(
                bundle.key.to_owned(),
                Bundle {
                    name: bundle.key.to_owned(),
                    loc: ctx.loc(bundle.line),
                    resources,
                },
            );
        }
    }
    config
}

fn name_message(what: &str, name: &str) -> String {
    format!(
        "{name:?} is not a valid {what} name; use lowercase letters, digits, \"_\" and \"-\", starting with a letter"
    )
}

fn parse_classes(ctx: &mut Ctx<'_>, node: &Node, refs: &mut Vec<Ref>) -> Vec<HostClass> {
    let mut classes = Vec::new();
    for entry in entries(ctx, "classes", node).unwrap_or_default() {
        let path = format!("classes.{}", entry.key);
        if !is_identifier(entry.key) {
            ctx.error(entry.line, &path, name_message("class", entry.key));
        }
        let Some(f) = fields(
            ctx,
            &path,
            entry.value,
            &["hosts", "manage_users", "bundles"],
        ) else {
            continue;
        };
        let mut class = HostClass {
            name: entry.key.to_owned(),
            loc: ctx.loc(entry.line),
            hosts: Vec::new(),
            manage_users: false,
            bundles: Vec::new(),
        };
        match f.get("hosts") {
            None => ctx.error(
                entry.line,
                &path,
                "missing required key \"hosts\" (a list of hostname globs)",
            ),
            Some(e) => {
                let field = join(&path, "hosts");
                for (i, (line, glob)) in text_list(ctx, &field, e.value)
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                {
                    if is_host_glob(&glob) {
                        class.hosts.push(glob);
                    } else {
                        ctx.error(
                            line,
                            &format!("{field}[{i}]"),
                            format!("{glob:?} is not a hostname glob (lowercase letters, digits, \"-\", \".\", \"*\" and \"?\")"),
                        );
                    }
                }
            }
        }
        if let Some(e) = f.get("manage_users") {
            class.manage_users =
                boolean(ctx, &join(&path, "manage_users"), e.value).unwrap_or(false);
        }
        if let Some(e) = f.get("bundles") {
            let field = join(&path, "bundles");
            for (i, (line, bundle)) in text_list(ctx, &field, e.value)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                refs.push(Ref::bundle(
                    ctx.file,
                    line,
                    format!("{field}[{i}]"),
                    &bundle,
                ));
                class.bundles.push(bundle);
            }
        }
        classes.push(class);
    }
    classes
}

fn parse_user_defaults(
    ctx: &mut Ctx<'_>,
    node: &Node,
    users: &mut UserDefaults,
    refs: &mut Vec<Ref>,
) {
    let Some(f) = fields(
        ctx,
        "users",
        node,
        &[
            "shell",
            "home_mode",
            "lock_at_creation",
            "requires",
            "enforce",
        ],
    ) else {
        return;
    };
    if let Some(e) = f.get("enforce") {
        users.enforce = user_attributes(ctx, "users.enforce", e.value);
    }
    if let Some(e) = f.get("shell") {
        if let Some(shell) = text(ctx, "users.shell", e.value) {
            if is_normal_absolute_path(&shell) {
                users.shell = shell;
            } else {
                ctx.error(e.line, "users.shell", path_message(&shell));
            }
        }
    }
    if let Some(e) = f.get("home_mode") {
        if let Some(mode) = mode(ctx, "users.home_mode", e.value) {
            users.home_mode = mode;
        }
    }
    if let Some(e) = f.get("lock_at_creation") {
        if let Some(lock) = boolean(ctx, "users.lock_at_creation", e.value) {
            users.lock_at_creation = lock;
        }
    }
    if let Some(e) = f.get("requires") {
        for (i, (line, id)) in text_list(ctx, "users.requires", e.value)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            refs.push(Ref::require(
                ctx.file,
                line,
                format!("users.requires[{i}]"),
                &id,
            ));
            users.requires.push(id);
        }
    }
}

/// A list of account attributes (`[shell, comment]`), each named once.
pub(crate) fn user_attributes(
    ctx: &mut Ctx<'_>,
    field: &str,
    node: &Node,
) -> Vec<steward_protocol::UserAttribute> {
    let mut out = Vec::new();
    for (i, (line, name)) in text_list(ctx, field, node)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let known = steward_protocol::UserAttribute::ALL;
        match known.iter().find(|a| a.as_str() == name) {
            Some(attr) if out.contains(attr) => {
                ctx.error(line, &format!("{field}[{i}]"), format!("{name:?} is listed twice"))
            }
            Some(attr) => out.push(*attr),
            None => ctx.error(
                line,
                &format!("{field}[{i}]"),
                format!(
                    "{name:?} is not an attribute Steward can enforce on an existing account; use {}",
                    known.map(|a| a.as_str()).join(" or ")
                ),
            ),
        }
    }
    out.sort();
    out
}

/// A mode, written quoted (`"0700"`) or plain (`0700`, read as the digits written).
fn mode(ctx: &mut Ctx<'_>, field: &str, node: &Node) -> Option<Mode> {
    let t = text(ctx, field, node)?;
    let parsed = Mode::parse(&t);
    if parsed.is_none() {
        ctx.error(
            node.line,
            field,
            format!("{t:?} is not a file mode; write octal digits such as \"0644\""),
        );
    }
    parsed
}

fn parse_ports(ctx: &mut Ctx<'_>, line: u32, node: &Node) -> Option<PortRange> {
    let f = fields(ctx, "ports", node, &["start", "end"])?;
    let get = |ctx: &mut Ctx<'_>, key: &str| -> Option<u16> {
        let field = join("ports", key);
        let Some(e) = f.get(key) else {
            ctx.error(line, "ports", format!("missing required key {key:?}"));
            return None;
        };
        let value = integer(ctx, &field, e.value)?;
        let port = u16::try_from(value).ok().filter(|p| *p > 0);
        if port.is_none() {
            ctx.error(
                e.line,
                &field,
                format!("port {value} is not between 1 and 65535"),
            );
        }
        port
    };
    let start = get(ctx, "start");
    let end = get(ctx, "end");
    let (start, end) = (start?, end?);
    if start > end {
        ctx.error(line, "ports", format!("start {start} is after end {end}"));
        return None;
    }
    Some(PortRange { start, end })
}

fn parse_vault(ctx: &mut Ctx<'_>, node: &Node, vault: &mut VaultSettings) {
    let Some(f) = fields(ctx, "vault", node, &["roles_path", "roles_key"]) else {
        return;
    };
    if let Some(e) = f.get("roles_path") {
        if let Some(path) = text(ctx, "vault.roles_path", e.value) {
            let normal = !path.starts_with('/')
                && path.split('/').all(|c| {
                    !c.is_empty() && c != "." && c != ".." && !c.contains(char::is_whitespace)
                });
            if normal {
                vault.roles_path = path;
            } else {
                ctx.error(
                    e.line,
                    "vault.roles_path",
                    format!("{path:?} is not a kv path; write it like secret/platform"),
                );
            }
        }
    }
    if let Some(e) = f.get("roles_key") {
        if let Some(key) = text(ctx, "vault.roles_key", e.value) {
            if key.trim().is_empty() {
                ctx.error(e.line, "vault.roles_key", "must not be empty");
            } else {
                vault.roles_key = key;
            }
        }
    }
}

fn parse_bundle(
    ctx: &mut Ctx<'_>,
    path: &str,
    node: &Node,
    files: &BTreeMap<String, String>,
    refs: &mut Vec<Ref>,
) -> Vec<ResourceTemplate> {
    let items = match &node.value {
        NodeValue::Seq(items) => items.as_slice(),
        _ if node.is_null() => &[],
        _ => {
            ctx.error(
                node.line,
                path,
                format!("expected a list of resources, found {}", node.kind_name()),
            );
            return Vec::new();
        }
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse_template(ctx, &format!("{path}[{i}]"), item, files, refs))
        .collect()
}

fn kind_names() -> Vec<&'static str> {
    RESOURCE_SCHEMAS.iter().map(|(k, _)| *k).collect()
}

fn parse_template(
    ctx: &mut Ctx<'_>,
    path: &str,
    item: &Node,
    files: &BTreeMap<String, String>,
    refs: &mut Vec<Ref>,
) -> Option<ResourceTemplate> {
    if !matches!(item.value, NodeValue::Map(_)) {
        ctx.error(
            item.line,
            path,
            format!(
                "expected a mapping with one resource type ({}), found {}",
                kind_names().join(", "),
                item.kind_name()
            ),
        );
        return None;
    }
    let mut kind: Option<(&str, u32, &Node)> = None;
    let mut template = ResourceTemplate {
        loc: ctx.loc(item.line),
        kind: String::new(),
        fields: BTreeMap::new(),
        when: None,
        for_each: None,
        requires: Vec::new(),
    };
    for e in entries(ctx, path, item)? {
        let field = join(path, e.key);
        match e.key {
            "when" => template.when = text(ctx, &field, e.value),
            "for_each" => template.for_each = text(ctx, &field, e.value),
            "requires" => {
                for (i, (line, id)) in text_list(ctx, &field, e.value).unwrap_or_default().into_iter().enumerate() {
                    refs.push(Ref::require(ctx.file, line, format!("{field}[{i}]"), &id));
                    template.requires.push(id);
                }
            }
            "user" => ctx.error(
                e.line,
                &field,
                "user accounts come from roster.yaml, not from bundles; add the person to the roster",
            ),
            k if RESOURCE_SCHEMAS.iter().any(|(name, _)| *name == k) => match kind {
                Some((first, first_line, _)) => ctx.error(
                    e.line,
                    &field,
                    format!(
                        "more than one resource type in one item ({first:?} on line {first_line}); split it into two list items"
                    ),
                ),
                None => kind = Some((k, e.line, e.value)),
            },
            other => {
                let mut known = kind_names();
                known.extend_from_slice(TEMPLATE_KEYS);
                let message = match suggest(other, &known) {
                    Some(close) => format!("unknown key; did you mean {close:?}?"),
                    None => format!(
                        "unknown key; expected one resource type ({}) and optionally when, for_each, requires",
                        kind_names().join(", ")
                    ),
                };
                ctx.error(e.line, &field, message);
            }
        }
    }
    let Some((kind, kind_line, body)) = kind else {
        ctx.error(
            item.line,
            path,
            format!(
                "missing resource type; expected one of: {}",
                kind_names().join(", ")
            ),
        );
        return None;
    };
    template.kind = kind.to_owned();
    let kpath = join(path, kind);
    let schema = RESOURCE_SCHEMAS
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, s)| *s)?;
    let names: Vec<&str> = schema.iter().map(|f| f.name).collect();
    let given = fields(ctx, &kpath, body, &names)?;
    for fs in schema {
        if fs.required && given.get(fs.name).is_none() {
            ctx.error(
                kind_line,
                &kpath,
                format!("missing required field {:?}", fs.name),
            );
        }
    }
    for e in given.iter() {
        let Some(fs) = schema.iter().find(|f| f.name == e.key) else {
            continue;
        };
        if let Some(value) = field_value(ctx, &join(&kpath, e.key), fs, e.value) {
            template.fields.insert(e.key.to_owned(), (e.line, value));
        }
    }
    check_template(ctx, &kpath, kind_line, &template, files);
    Some(template)
}

/// Converts a field to JSON by its schema type.
fn field_value(ctx: &mut Ctx<'_>, field: &str, schema: &FieldSchema, node: &Node) -> Option<Value> {
    match schema.kind {
        FieldKind::Str => text(ctx, field, node).map(Value::String),
        FieldKind::Int => {
            let i = integer(ctx, field, node)?;
            if i < 0 {
                ctx.error(node.line, field, format!("{i} must not be negative"));
                return None;
            }
            Some(Value::from(i))
        }
        FieldKind::Bool => boolean(ctx, field, node).map(Value::Bool),
        FieldKind::StrList => {
            let items = text_list(ctx, field, node)?;
            Some(Value::Array(
                items.into_iter().map(|(_, t)| Value::String(t)).collect(),
            ))
        }
        FieldKind::StrMap => {
            let mut map = serde_json::Map::new();
            let mut ok = true;
            for e in entries(ctx, field, node)? {
                match text(ctx, &join(field, e.key), e.value) {
                    Some(t) => {
                        map.insert(e.key.to_owned(), Value::String(t));
                    }
                    None => ok = false,
                }
            }
            ok.then_some(Value::Object(map))
        }
        FieldKind::Enum(words) => {
            let t = text(ctx, field, node)?;
            if words.contains(&t.as_str()) {
                Some(Value::String(t))
            } else {
                ctx.error(
                    node.line,
                    field,
                    format!("{t:?} is not one of: {}", words.join(", ")),
                );
                None
            }
        }
    }
}

fn str_field<'t>(template: &'t ResourceTemplate, name: &str) -> Option<(u32, &'t str)> {
    let (line, value) = template.fields.get(name)?;
    value.as_str().map(|s| (*line, s))
}

/// Checks that need more than one field, or the site's files.
fn check_template(
    ctx: &mut Ctx<'_>,
    kpath: &str,
    kind_line: u32,
    template: &ResourceTemplate,
    files: &BTreeMap<String, String>,
) {
    let path_fields: &[&str] = match template.kind.as_str() {
        "file" | "directory" | "symlink" | "git_clone" | "swap" => &["path"],
        "exec" => &["cwd", "creates"],
        _ => &[],
    };
    for name in path_fields {
        if let Some((line, p)) = str_field(template, name) {
            check_path_template(ctx, &join(kpath, name), line, p);
        }
    }
    if matches!(template.kind.as_str(), "file" | "directory") {
        if let Some((line, m)) = str_field(template, "mode") {
            if Mode::parse(m).is_none() {
                ctx.error(
                    line,
                    &join(kpath, "mode"),
                    format!("{m:?} is not a file mode; write octal digits such as \"0644\""),
                );
            }
        }
    }
    match template.kind.as_str() {
        "file" => check_file(ctx, kpath, kind_line, template, files),
        "git_clone" => {
            if let Some((line, url)) = str_field(template, "url") {
                if !is_templated(url) {
                    if let Err(problem) = check_clone_url(url) {
                        ctx.error(line, &join(kpath, "url"), problem);
                    }
                }
            }
        }
        "exec" => {
            if let Some((line, Value::Array(items))) = template.fields.get("command") {
                if items.is_empty() {
                    ctx.error(*line, &join(kpath, "command"), "must not be empty");
                }
            }
        }
        _ => {}
    }
}

fn check_file(
    ctx: &mut Ctx<'_>,
    kpath: &str,
    kind_line: u32,
    template: &ResourceTemplate,
    files: &BTreeMap<String, String>,
) {
    let given: Vec<(&str, u32, &str)> = ["template", "source", "content"]
        .into_iter()
        .filter_map(|name| str_field(template, name).map(|(line, v)| (name, line, v)))
        .collect();
    match given.as_slice() {
        [] => {
            // Only complain when none was even written (a wrong type is reported already).
            if !["template", "source", "content"]
                .iter()
                .any(|n| template.fields.contains_key(*n))
            {
                ctx.error(kind_line, kpath, "needs one of template, source or content");
            }
        }
        [_] => {}
        [(first, _, _), rest @ ..] => {
            for (name, line, _) in rest {
                ctx.error(
                    *line,
                    &join(kpath, name),
                    format!("give only one of template, source or content ({first} is given too)"),
                );
            }
        }
    }
    for (name, line, value) in &given {
        if *name == "content" {
            continue;
        }
        let field = join(kpath, name);
        if is_templated(value) {
            ctx.error(
                *line,
                &field,
                "must name a file literally; templates are not allowed here",
            );
        } else if !files.contains_key(*value) {
            ctx.error(
                *line,
                &field,
                format!("no file \"files/{value}\" in the site; add it or fix the name"),
            );
        }
    }
    let replace = str_field(template, "replace").map(|(_, r)| r);
    let replace_line = template
        .fields
        .get("replace")
        .map_or(kind_line, |(l, _)| *l);
    // Which replace policy needs (and alone takes) each of these fields.
    for (name, needed_by) in [
        ("marker", &["if_marked", "if_stale"][..]),
        ("current", &["if_stale"][..]),
    ] {
        let used_by = needed_by
            .iter()
            .map(|p| format!("replace: {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        match (replace, str_field(template, name)) {
            (Some(r), None) if needed_by.contains(&r) => ctx.error(
                replace_line,
                &join(kpath, "replace"),
                match name {
                    "marker" => format!("replace: {r} needs a marker; add marker: <text Steward's file carries>"),
                    _ => format!("replace: {r} needs current; add current: <text only this variant of the file carries>"),
                },
            ),
            (r, Some((line, _))) if !r.is_some_and(|r| needed_by.contains(&r)) => ctx.error(
                line,
                &join(kpath, name),
                format!("a {name} is only used with {used_by}"),
            ),
            _ => {}
        }
    }
}

/// Literal paths must be absolute and normal; templated ones at least free of `..`. The
/// compiler checks rendered paths again.
fn check_path_template(ctx: &mut Ctx<'_>, field: &str, line: u32, path: &str) {
    if is_templated(path) {
        if path.split('/').any(|c| c.trim() == "..") {
            ctx.error(line, field, format!("{path:?} contains \"..\"; remove it"));
        }
    } else if !is_normal_absolute_path(path) {
        ctx.error(line, field, path_message(path));
    }
}

/// The field that names a resource of `kind` in its id (`package:zsh`, `file:/etc/motd`).
pub(crate) fn identity_field(kind: &str) -> &'static str {
    match kind {
        "file" | "directory" | "symlink" | "git_clone" | "swap" => "path",
        _ => "name",
    }
}

/// A clone URL must be `https://host/...` (or `file:///...`, for local fixture and mirror
/// repositories), with no credentials and no whitespace or control characters: a token in the
/// URL would end up in argv and `.git/config` (THREATS K3). The error never repeats userinfo.
/// Used for literal URLs in site.yaml and, by the compiler, for rendered ones.
pub(crate) fn check_clone_url(url: &str) -> Result<(), String> {
    let shown = redact_userinfo(url);
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{shown:?} contains whitespace or control characters"
        ));
    }
    if let Some(rest) = url.strip_prefix("https://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() {
            return Err(format!("{shown:?} has no host"));
        }
        if authority.contains('@') {
            return Err(format!(
                "{shown:?} carries credentials (user:token@); configure a git credential helper for the user instead"
            ));
        }
        Ok(())
    } else if url
        .strip_prefix("file://")
        .is_some_and(|p| p.starts_with('/'))
    {
        Ok(())
    } else {
        Err(format!(
            "{shown:?} is not an https:// or file:/// url; only those clone protocols are allowed"
        ))
    }
}

/// The URL with any `user:password@` replaced, for error messages.
fn redact_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}
