//! `tiers.yaml` → tiers by name.

use std::collections::BTreeMap;

use crate::model::{is_privileged, Tier};
use crate::site::read::{
    boolean, entries, fields, is_identifier, is_linux_name, join, json_map, text, text_list, Ctx,
};
use crate::site::Ref;
use crate::yaml::Node;

/// Keys of a tier.
const TIER_KEYS: &[&str] = &[
    "description",
    "groups",
    "privileged_groups",
    "allow_low_uid",
    "requires_namespaces",
    "bundles",
    "vars",
];

/// Parses and validates `tiers.yaml`; bundle names are returned as references to check against
/// `site.yaml`.
pub(crate) fn parse(ctx: &mut Ctx<'_>, doc: &Node, refs: &mut Vec<Ref>) -> BTreeMap<String, Tier> {
    let mut tiers = BTreeMap::new();
    let Some(top) = fields(ctx, "", doc, &["tiers"]) else {
        return tiers;
    };
    let Some(list) = top.get("tiers") else {
        return tiers;
    };
    let Some(list) = entries(ctx, "tiers", list.value) else {
        return tiers;
    };
    for entry in list {
        let path = format!("tiers.{}", entry.key);
        if !is_identifier(entry.key) {
            ctx.error(
                entry.line,
                &path,
                format!(
                    "{:?} is not a valid tier name; use lowercase letters, digits, \"_\" and \"-\", starting with a letter",
                    entry.key
                ),
            );
        }
        if let Some(tier) = parse_tier(ctx, &path, entry.key, entry.line, entry.value, refs) {
            tiers.insert(tier.name.clone(), tier);
        }
    }
    tiers
}

fn parse_tier(
    ctx: &mut Ctx<'_>,
    path: &str,
    name: &str,
    line: u32,
    node: &Node,
    refs: &mut Vec<Ref>,
) -> Option<Tier> {
    let f = fields(ctx, path, node, TIER_KEYS)?;
    let mut tier = Tier {
        name: name.to_owned(),
        loc: ctx.loc(line),
        description: None,
        groups: Vec::new(),
        privileged_groups: Vec::new(),
        allow_low_uid: false,
        requires_namespaces: false,
        bundles: Vec::new(),
        vars: BTreeMap::new(),
    };
    if let Some(e) = f.get("description") {
        tier.description = text(ctx, &join(path, "description"), e.value);
    }
    if let Some(e) = f.get("privileged_groups") {
        let field = join(path, "privileged_groups");
        for (i, (item_line, group)) in text_list(ctx, &field, e.value)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if !is_privileged(&group) {
                ctx.error(
                    item_line,
                    &format!("{field}[{i}]"),
                    format!(
                        "{group:?} is not a privileged group (docs/site-format.md lists them); list it under groups instead"
                    ),
                );
            } else if !tier.privileged_groups.contains(&group) {
                tier.privileged_groups.push(group);
            }
        }
    }
    if let Some(e) = f.get("groups") {
        let field = join(path, "groups");
        for (i, (item_line, group)) in text_list(ctx, &field, e.value)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let item_field = format!("{field}[{i}]");
            if !is_linux_name(&group) {
                ctx.error(
                    item_line,
                    &item_field,
                    format!("{group:?} is not a valid group name"),
                );
            } else if is_privileged(&group) && !tier.privileged_groups.contains(&group) {
                ctx.error(
                    item_line,
                    &item_field,
                    format!("group {group:?} is privileged; also list it in privileged_groups to grant it on purpose"),
                );
            } else if !tier.groups.contains(&group) {
                tier.groups.push(group);
            }
        }
    }
    if let Some(e) = f.get("allow_low_uid") {
        tier.allow_low_uid = boolean(ctx, &join(path, "allow_low_uid"), e.value).unwrap_or(false);
    }
    if let Some(e) = f.get("requires_namespaces") {
        tier.requires_namespaces =
            boolean(ctx, &join(path, "requires_namespaces"), e.value).unwrap_or(false);
    }
    if let Some(e) = f.get("bundles") {
        let field = join(path, "bundles");
        for (i, (item_line, bundle)) in text_list(ctx, &field, e.value)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            refs.push(Ref::bundle(
                ctx.file,
                item_line,
                format!("{field}[{i}]"),
                &bundle,
            ));
            tier.bundles.push(bundle);
        }
    }
    if let Some(e) = f.get("vars") {
        tier.vars = json_map(ctx, &join(path, "vars"), e.value).unwrap_or_default();
    }
    Some(tier)
}
