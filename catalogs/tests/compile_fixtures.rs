//! Data-driven compiler tests (STYLE §12): each fixture is one string with `//- <file>`
//! sections (`roster.yaml`, `tiers.yaml`, `site.yaml`, `files/<name>`, and
//! `vault/<kv path>.json` for Vault data); the expected catalog, one resource per line, or the
//! `FILE:LINE` errors, is an inline snapshot.
//!
//! Left out sections get small defaults: a tier `dev` with the bundle `home`, and Vault role
//! data that agrees with the roster.

use std::collections::BTreeMap;

use steward_catalogs::compile::{compile, CompileError, CompiledCatalog, Compiler, NodeInfo};
use steward_catalogs::model::{ManagedUser, UserState, VaultSecret};
use steward_catalogs::site::parse_site;
use steward_catalogs::{Site, State, VaultData};
use steward_protocol::{FileContent, NodeId, ResourceSpec, Timestamp};

const NOW: Timestamp = Timestamp(1_790_000_000);

const DEFAULT_TIERS: &str = "tiers:\n  dev: { bundles: [home] }\n";

/// Splits a fixture into `(name, text)` sections, removing the common indentation.
fn sections(fixture: &str) -> Vec<(String, String)> {
    let indent = fixture
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in fixture.lines() {
        let line = line.get(indent..).unwrap_or("");
        if let Some(name) = line.strip_prefix("//- ") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// The site and Vault data of a fixture.
fn load(fixture: &str) -> (Site, VaultData) {
    let mut files = BTreeMap::new();
    let mut vault = VaultData::default();
    for (name, text) in sections(fixture) {
        match name
            .strip_prefix("vault/")
            .and_then(|p| p.strip_suffix(".json"))
        {
            Some(path) => {
                let data = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                vault
                    .paths
                    .insert(path.to_string(), VaultSecret { data, version: 3 });
            }
            None => {
                files.insert(name, text);
            }
        }
    }
    files
        .entry("tiers.yaml".into())
        .or_insert_with(|| DEFAULT_TIERS.into());
    let site = parse_site(&files).unwrap_or_else(|e| panic!("fixture site is invalid:\n{e}"));
    if !vault.paths.contains_key("secret/platform") {
        let mut roles = steward_catalogs::vault::roles_agreeing_with_roster(&site);
        for secret in roles.paths.values_mut() {
            secret.version = 7;
        }
        vault.paths.extend(roles.paths);
    }
    (site, vault)
}

fn compile_on(fixture: &str, node: &str, state: &State) -> Result<CompiledCatalog, CompileError> {
    let (site, vault) = load(fixture);
    compile(
        &site,
        &vault,
        &NodeInfo::new(NodeId(node.into())),
        state,
        NOW,
    )
}

/// One line per resource: `id <- requires {spec fields}` (type and name are in the id).
fn show(result: &Result<CompiledCatalog, CompileError>) -> String {
    match result {
        Err(err) => err.to_string(),
        Ok(compiled) => compiled
            .catalog
            .resources
            .iter()
            .map(|resource| {
                let mut spec = serde_json::to_value(&resource.spec).unwrap();
                let fields = spec.as_object_mut().unwrap();
                for redundant in ["type", "name", "path"] {
                    fields.remove(redundant);
                }
                let requires: Vec<&str> = resource.requires.iter().map(|id| id.as_str()).collect();
                let requires = if requires.is_empty() {
                    String::new()
                } else {
                    format!(" <- {}", requires.join(", "))
                };
                format!(
                    "{}{requires} {}",
                    resource.id,
                    serde_json::Value::Object(fields.clone())
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn check(fixture: &str) -> String {
    show(&compile_on(fixture, "devvm", &State::default()))
}

fn file_content<'a>(compiled: &'a CompiledCatalog, path: &str) -> &'a FileContent {
    compiled
        .catalog
        .resources
        .iter()
        .find_map(|r| match &r.spec {
            ResourceSpec::File(file) if file.path == path => Some(&file.content),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no file {path}"))
}

fn text_of(content: &FileContent) -> &str {
    match content {
        FileContent::Text(text) => text,
        other => panic!("expected text content, got {other:?}"),
    }
}

const BASE_SITE: &str = r#"
    //- site.yaml
    classes:
      workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
    bundles:
      host:
        - package: { name: zsh }
      home:
        - directory: { path: "{{ user.home }}/.config", mode: "0700" }
    //- roster.yaml
    users:
      alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
"#;

#[test]
fn order_is_host_bundles_then_groups_then_each_user() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        users: { requires: [package:zsh] }
        bundles:
          host:
            - package: { name: zsh }
            - file:
                path: /etc/ttyd-user-map
                content: "{% for u in users %}{{ u.authentik_user }}={{ u.name }}\n{% endfor %}"
          home:
            - directory: { path: "{{ user.home }}/.config", mode: "0700" }
            - symlink: { path: "{{ user.home }}/.config/{{ item }}", target: "/srv/base/{{ item }}" }
              for_each: tier.vars.links
              requires: ["directory:{{ user.home }}/.config"]
        //- tiers.yaml
        tiers:
          dev: { groups: [devs], bundles: [home], vars: { links: [skills, rules] } }
          ops: { groups: [ops, devs], privileged_groups: [docker], bundles: [home], vars: { links: [] } }
        //- roster.yaml
        users:
          zed:   { authentik_user: zed.z, k8s_user: zed, tier: ops, groups: [audio] }
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev, shell: /bin/zsh, uid: 1500, full_name: Alice A }
    "#;
    insta::assert_snapshot!(check(fixture), @r#"
    package:zsh {}
    file:/etc/ttyd-user-map {"backup":false,"content":{"text":"zed.z=zed\nalice.a=alice\n"},"group":"root","mode":"0644","owner":"root","replace":"always"}
    group:audio {"system":false}
    group:devs {"system":false}
    group:docker {"system":false}
    group:ops {"system":false}
    user:zed <- group:audio, group:devs, group:docker, group:ops, package:zsh {"ensure":{"state":"present"},"groups":["audio","devs","ops"],"home":"/home/zed","home_mode":"0700","lock_at_creation":true,"privileged_groups":["docker"],"shell":"/bin/bash","tier":"ops"}
    directory:/home/zed/.config <- user:zed {"group":"zed","mode":"0700","owner":"zed","replace":"if_absent"}
    user:alice <- group:devs, package:zsh {"comment":"Alice A","ensure":{"state":"present"},"groups":["devs"],"home":"/home/alice","home_mode":"0700","lock_at_creation":true,"shell":"/bin/zsh","tier":"dev","uid":1500}
    directory:/home/alice/.config <- user:alice {"group":"alice","mode":"0700","owner":"alice","replace":"if_absent"}
    symlink:/home/alice/.config/skills <- user:alice, directory:/home/alice/.config {"group":"alice","owner":"alice","replace":"if_absent","target":"/srv/base/skills"}
    symlink:/home/alice/.config/rules <- user:alice, directory:/home/alice/.config {"group":"alice","owner":"alice","replace":"if_absent","target":"/srv/base/rules"}
    "#);
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let (site, vault) = load(BASE_SITE);
    let node = NodeInfo::new(NodeId("devvm".into()));
    let first = compile(&site, &vault, &node, &State::default(), NOW).unwrap();
    let compiler = Compiler::new(&site).unwrap();
    for _ in 0..3 {
        let again = compiler
            .compile(&vault, &node, &State::default(), NOW)
            .unwrap();
        assert_eq!(
            serde_json::to_vec(&again.catalog).unwrap(),
            serde_json::to_vec(&first.catalog).unwrap()
        );
        assert_eq!(again.state, first.state);
    }
}

#[test]
fn compiler_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Compiler>();
}

#[test]
fn catalog_header_and_provenance() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        catalog: { expires_after: 12h }
        bundles:
          host:
            - file: { path: /etc/motd, content: "{{ vault('secret/motd', 'text') }} on {{ host.name }} ({{ host.class }})\n" }
          home: []
        //- roster.yaml
        users: {}
        //- vault/secret/motd.json
        { "text": "welcome" }
        //- vault/secret/unused.json
        { "x": "y" }
    "#;
    let compiled = compile_on(fixture, "devvm-2", &State::default()).unwrap();
    let catalog = &compiled.catalog;
    assert_eq!(catalog.node, NodeId("devvm-2".into()));
    assert_eq!(catalog.serial.0, 0);
    assert_eq!(catalog.compiled_at, NOW);
    assert_eq!(catalog.expires_at, NOW.plus_secs(12 * 3600));
    assert_eq!(
        catalog.format_version,
        steward_protocol::CATALOG_FORMAT_VERSION
    );
    let (site, _) = load(fixture);
    assert_eq!(catalog.provenance.site_hash, site.hash);
    let versions: Vec<_> = catalog
        .provenance
        .vault_versions
        .iter()
        .map(|(p, v)| format!("{p}@{v}"))
        .collect();
    assert_eq!(versions, ["secret/motd@3", "secret/platform@7"]);
    assert_eq!(
        compiled.vault_paths.iter().collect::<Vec<_>>(),
        ["secret/motd", "secret/platform"]
    );
    assert_eq!(
        text_of(file_content(&compiled, "/etc/motd")),
        "welcome on devvm-2 (workstation)\n"
    );
}

#[test]
fn class_is_the_first_whose_globs_match() {
    let fixture = r#"
        //- site.yaml
        classes:
          web: { hosts: ["web-?", "api-*"], bundles: [host] }
          workstation: { hosts: ["*"], manage_users: true, bundles: [host] }
        bundles:
          host:
            - file: { path: /etc/class, content: "{{ host.class }} {{ users | length }}" }
          home: []
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
    "#;
    let class_of = |node: &str| {
        let compiled = compile_on(fixture, node, &State::default()).unwrap();
        text_of(file_content(&compiled, "/etc/class")).to_string()
    };
    // A class without manage_users gets no users at all.
    assert_eq!(class_of("web-1"), "web 0");
    assert_eq!(class_of("api-eu-1"), "web 0");
    assert_eq!(class_of("web-10"), "workstation 1");
    assert_eq!(class_of("devvm"), "workstation 1");
}

#[test]
fn a_node_that_matches_no_class_is_an_error() {
    let result = compile_on(BASE_SITE, "web-1", &State::default());
    insta::assert_snapshot!(show(&result), @r#"site.yaml:2: classes: node `web-1` matches no host class (classes: workstation (devvm*)); add a glob that matches it to a class's `hosts`"#);
}

#[test]
fn roster_hosts_limit_where_a_user_exists() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*", "ws-*"], manage_users: true, bundles: [host] }
        bundles:
          host:
            - file: { path: /etc/users, content: "{% for u in users %}{{ u.name }} {% endfor %}" }
          home: []
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
          bob:   { authentik_user: bob.b, k8s_user: bob, tier: dev, hosts: ["ws-*"] }
    "#;
    let users_on = |node: &str| {
        let compiled = compile_on(fixture, node, &State::default()).unwrap();
        text_of(file_content(&compiled, "/etc/users")).to_string()
    };
    assert_eq!(users_on("devvm"), "alice ");
    assert_eq!(users_on("ws-1"), "alice bob ");
}

#[test]
fn roster_values_are_data_never_template_source() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        vars: { secret_word: swordfish }
        bundles:
          host: []
          home:
            - file:
                path: "{{ user.home }}/.whoami"
                content: "{{ user.full_name }} / {{ user.flags.motto }} / {{ user.flags.path }}\n"
        //- roster.yaml
        users:
          alice:
            authentik_user: alice.a
            k8s_user: alice
            tier: dev
            full_name: "{{ site.secret_word }}"
            flags: { motto: "{% for x in range(3) %}x{% endfor %}", path: "{{7*7}}" }
    "#;
    let compiled = compile_on(fixture, "devvm", &State::default()).unwrap();
    assert_eq!(
        text_of(file_content(&compiled, "/home/alice/.whoami")),
        "{{ site.secret_word }} / {% for x in range(3) %}x{% endfor %} / {{7*7}}\n"
    );
}

#[test]
fn sticky_ports_keep_existing_pin_wins_new_get_lowest_free() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        ports: { start: 8100, end: 8104 }
        bundles:
          host:
            - file:
                path: /etc/ports
                content: "{% for u in users %}{{ u.name }}={{ u.port }} {% endfor %}"
          home: []
        //- roster.yaml
        users:
          ann:  { authentik_user: ann, k8s_user: ann, tier: dev }
          bob:  { authentik_user: bob, k8s_user: bob, tier: dev }
          cat:  { authentik_user: cat, k8s_user: cat, tier: dev, port: 8102 }
          dan:  { authentik_user: dan, k8s_user: dan, tier: dev }
    "#;
    let state = State {
        // bob keeps 8100; ann's old 8102 is taken by cat's pin, so ann moves.
        ports: BTreeMap::from([
            ("bob".into(), 8100),
            ("ann".into(), 8102),
            ("gone".into(), 8101),
        ]),
        managed_users: BTreeMap::new(),
    };
    let compiled = compile_on(fixture, "devvm", &state).unwrap();
    assert_eq!(
        text_of(file_content(&compiled, "/etc/ports")),
        "ann=8101 bob=8100 cat=8102 dan=8103 "
    );
    assert_eq!(
        compiled.state.ports,
        BTreeMap::from([
            ("ann".into(), 8101),
            ("bob".into(), 8100),
            ("cat".into(), 8102),
            ("dan".into(), 8103)
        ])
    );
    assert_eq!(
        compiled.new_ports,
        BTreeMap::from([
            ("ann".into(), 8101),
            ("cat".into(), 8102),
            ("dan".into(), 8103)
        ])
    );
    // Compiling again with the returned state changes nothing.
    let again = compile_on(fixture, "devvm", &compiled.state).unwrap();
    assert_eq!(again.state.ports, compiled.state.ports);
    assert!(again.new_ports.is_empty());
}

#[test]
fn running_out_of_ports_is_an_error() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        ports: { start: 8100, end: 8101 }
        bundles:
          host: []
          home: []
        //- roster.yaml
        users:
          ann: { authentik_user: ann, k8s_user: ann, tier: dev }
          bob: { authentik_user: bob, k8s_user: bob, tier: dev }
          cat: { authentik_user: cat, k8s_user: cat, tier: dev }
    "#;
    insta::assert_snapshot!(check(fixture), @r#"roster.yaml:4: users.cat: no free port left in the port range 8100-8101 (site.yaml `ports`); widen the range or purge users"#);
}

const LIFECYCLE: &str = r#"
    //- site.yaml
    classes:
      workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
    ports: { start: 8100, end: 8109 }
    offboarding: { archive_dir: /var/backups/homes }
    bundles:
      host:
        - file: { path: /etc/t3-users, content: "{% for u in users %}{{ u.name }}:{{ u.port }} {% endfor %}" }
      home:
        - directory: { path: "{{ user.home }}/.config" }
        - service: { name: "t3@{{ user.name }}.service" }
    //- roster.yaml
    users:
      ann: { authentik_user: ann, k8s_user: ann, tier: dev }
      bob: { authentik_user: bob, k8s_user: bob, tier: dev, state: offboarded }
      cat: { authentik_user: cat, k8s_user: cat, tier: dev, state: purged }
"#;

fn lifecycle_state() -> State {
    let managed = |state, services: &[&str]| ManagedUser {
        state,
        services: services.iter().map(|s| s.to_string()).collect(),
    };
    State {
        ports: BTreeMap::from([
            ("bob".into(), 8100),
            ("cat".into(), 8101),
            ("dee".into(), 8102),
            ("eve".into(), 8103),
        ]),
        managed_users: BTreeMap::from([
            (
                "bob".into(),
                managed(UserState::Present, &["t3@bob.service", "old@bob.service"]),
            ),
            (
                "cat".into(),
                managed(UserState::Present, &["t3@cat.service"]),
            ),
            // dee was removed from the roster: cut off like offboarded, never purged.
            (
                "dee".into(),
                managed(UserState::Present, &["t3@dee.service"]),
            ),
            // eve was purged before and has since left the roster: nothing to do.
            (
                "eve".into(),
                managed(UserState::Purged, &["t3@eve.service"]),
            ),
        ]),
    }
}

#[test]
fn offboarded_removed_and_purged_users() {
    let result = compile_on(LIFECYCLE, "devvm", &lifecycle_state());
    insta::assert_snapshot!(show(&result), @r#"
    file:/etc/t3-users {"backup":false,"content":{"text":"ann:8101 "},"group":"root","mode":"0644","owner":"root","replace":"always"}
    user:ann {"ensure":{"state":"present"},"home":"/home/ann","home_mode":"0700","lock_at_creation":true,"shell":"/bin/bash","tier":"dev"}
    directory:/home/ann/.config <- user:ann {"group":"ann","mode":"0755","owner":"ann","replace":"if_absent"}
    service:t3@ann.service <- user:ann {"enable":true,"ensure":"running"}
    service:t3@bob.service {"enable":false,"ensure":"stopped"}
    service:old@bob.service {"enable":false,"ensure":"stopped"}
    user:bob {"ensure":{"state":"locked"},"home":"/home/bob","home_mode":"0700","lock_at_creation":false,"shell":"/bin/bash"}
    service:t3@cat.service {"enable":false,"ensure":"stopped"}
    user:cat <- service:t3@cat.service {"ensure":{"archive_dir":"/var/backups/homes","state":"purged"},"home":"/home/cat","home_mode":"0700","lock_at_creation":false,"shell":"/bin/bash"}
    service:t3@dee.service {"enable":false,"ensure":"stopped"}
    user:dee {"ensure":{"state":"locked"},"home":"/home/dee","home_mode":"0700","lock_at_creation":false,"shell":"/bin/bash"}
    "#);
}

#[test]
fn lifecycle_state_keeps_ports_of_cut_users_and_frees_purged_ones() {
    let compiled = compile_on(LIFECYCLE, "devvm", &lifecycle_state()).unwrap();
    // ann is new and takes the lowest free port: 8101, freed by cat's purge.
    assert_eq!(
        text_of(file_content(&compiled, "/etc/t3-users")),
        "ann:8101 "
    );
    assert_eq!(
        compiled.state.ports,
        BTreeMap::from([
            ("ann".into(), 8101),
            ("bob".into(), 8100),
            ("dee".into(), 8102)
        ])
    );
    let managed: Vec<String> = compiled
        .state
        .managed_users
        .iter()
        .map(|(name, m)| format!("{name}:{}:{}", m.state.as_str(), m.services.join("+")))
        .collect();
    assert_eq!(
        managed,
        [
            "ann:present:t3@ann.service",
            "bob:offboarded:t3@bob.service+old@bob.service",
            "cat:purged:t3@cat.service",
            "dee:offboarded:t3@dee.service",
            "eve:purged:t3@eve.service",
        ]
    );
}

#[test]
fn a_user_whose_hosts_no_longer_match_is_cut_off_there() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*", "ws-*"], manage_users: true, bundles: [host] }
        bundles:
          host: []
          home:
            - service: { name: "t3@{{ user.name }}.service" }
        //- roster.yaml
        users:
          ann: { authentik_user: ann, k8s_user: ann, tier: dev, hosts: ["ws-*"] }
    "#;
    let state = State {
        ports: BTreeMap::new(),
        managed_users: BTreeMap::from([(
            "ann".into(),
            ManagedUser {
                state: UserState::Present,
                services: vec!["t3@ann.service".into()],
            },
        )]),
    };
    insta::assert_snapshot!(show(&compile_on(fixture, "devvm", &state)), @r#"
        service:t3@ann.service {"enable":false,"ensure":"stopped"}
        user:ann {"ensure":{"state":"locked"},"home":"/home/ann","home_mode":"0700","lock_at_creation":false,"shell":"/bin/bash"}
    "#);
}

#[test]
fn secret_makes_content_sensitive_and_vault_does_not() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host: []
          home:
            - file: { path: "{{ user.home }}/.token", content: "{{ secret('secret/app', 'token') }}", mode: "0600" }
            - file: { path: "{{ user.home }}/.app.json", template: app.json.j2 }
            - file: { path: "{{ user.home }}/.url", content: "{{ vault('secret/app', 'url') }}" }
            - file: { path: "{{ user.home }}/.private", content: "no secret here", sensitive: true }
        //- files/app.json.j2
        {{ {"url": vault("secret/app", "url"), "key": secret("secret/app", "token")} | tojson }}
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
        //- vault/secret/app.json
        { "token": "s3cr3t-t0ken", "url": "https://app.example" }
    "#;
    let compiled = compile_on(fixture, "devvm", &State::default()).unwrap();
    let secret = |path: &str| match file_content(&compiled, path) {
        FileContent::Secret(secret) => secret.expose().to_string(),
        other => panic!("{path}: expected a secret, got {other:?}"),
    };
    assert_eq!(secret("/home/alice/.token"), "s3cr3t-t0ken");
    assert_eq!(
        secret("/home/alice/.app.json"),
        r#"{"key":"s3cr3t-t0ken","url":"https://app.example"}"#.to_string() + "\n"
    );
    assert_eq!(secret("/home/alice/.private"), "no secret here");
    assert_eq!(
        text_of(file_content(&compiled, "/home/alice/.url")),
        "https://app.example"
    );
    let serialized = serde_json::to_string(&compiled.catalog).unwrap();
    assert!(!serialized.contains("s3cr3t-t0ken"), "{serialized}");
    assert!(serialized.contains(steward_protocol::REDACTED));
}

#[test]
fn secret_is_refused_outside_file_content() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host: []
          home:
            - file: { path: "{{ user.home }}/{{ secret('secret/app', 'token') }}", content: x }
            - directory: { path: "{{ user.home }}/.d" }
              when: "secret('secret/app', 'token') == 'x'"
            - git_clone: { path: "{{ user.home }}/code", url: "https://{{ secret('secret/app', 'token') }}@git.example/r.git" }
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
        //- vault/secret/app.json
        { "token": "s3cr3t-t0ken" }
    "#;
    let shown = check(fixture);
    assert!(!shown.contains("s3cr3t-t0ken"), "{shown}");
    insta::assert_snapshot!(shown, @r#"
        site.yaml:6: bundles.home[0].path: secret() may only be used in file content (`template` or `content`); use vault() for data that is not secret (for user `alice`)
        site.yaml:7: bundles.home[1].when: secret() may only be used in file content (`template` or `content`); use vault() for data that is not secret (for user `alice`)
        site.yaml:9: bundles.home[2].url: secret() may only be used in file content (`template` or `content`); use vault() for data that is not secret (for user `alice`)
    "#);
}

#[test]
fn a_missing_vault_path_or_key_fails_and_is_never_empty() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host:
            - file: { path: /etc/a, content: "{{ secret('secret/app', 'nope') }}" }
            - file: { path: /etc/b, content: "{{ secret('secret/none', 'token') }}" }
            - file: { path: /etc/c, content: "{{ secret('secret/app', 'empty') }}" }
            - file: { path: /etc/d, content: "{{ vault('secret/app', 'null') }}" }
            - file: { path: /etc/e, template: e.j2 }
          home: []
        //- files/e.j2
        first line
        key={{ secret("secret/app", "missing") }}
        //- roster.yaml
        users: {}
        //- vault/secret/app.json
        { "token": "s3cr3t-t0ken", "empty": "", "null": null }
    "#;
    // The paths that are absent altogether come back as data, for a server that reads Vault
    // lazily (it fetches them and compiles again); a missing key is a real error.
    let error = compile_on(fixture, "devvm", &State::default()).unwrap_err();
    assert_eq!(
        error.missing_vault_paths,
        std::collections::BTreeSet::from(["secret/none".to_string()])
    );
    insta::assert_snapshot!(check(fixture), @r#"
        files/e.j2:2: vault path `secret/app` has no key `missing` (read with secret()) (at `secret("secret/app", "missing")`) (used by site.yaml:9 bundles.host[4].template)
        site.yaml:5: bundles.host[0].content: vault path `secret/app` has no key `nope` (read with secret()) (at `secret('secret/app', 'nope')`)
        site.yaml:6: bundles.host[1].content: vault path `secret/none` does not exist (reading key `token` with secret()) (at `secret('secret/none', 'token')`)
        site.yaml:7: bundles.host[2].content: vault key `empty` at `secret/app` is empty (read with secret()) (at `secret('secret/app', 'empty')`)
        site.yaml:8: bundles.host[3].content: vault key `null` at `secret/app` is null (read with vault()) (at `vault('secret/app', 'null')`)
    "#);
}

#[test]
fn undefined_variables_are_errors() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host: []
          home:
            - file: { path: "{{ user.home }}/.a", content: "{{ user.nope }}" }
            - file: { path: "{{ user.home }}/.b", content: "x" }
              when: user.flags.missing
            - file: { path: "{{ user.home }}/.c", content: "{{ site.nothing }}" }
              for_each: user.repos
            - file: { path: "{{ user.home }}/.d", template: d.j2 }
        //- files/d.j2
        ok
        {% if user.flags.ha %}ha{% endif %}
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
    "#;
    insta::assert_snapshot!(check(fixture), @r#"
        files/d.j2:2: undefined value (at `user.flags.ha`) (for user `alice`) (used by site.yaml:11 bundles.home[3].template)
        site.yaml:6: bundles.home[0].content: undefined value (at `user.nope`) (for user `alice`)
        site.yaml:7: bundles.home[1].when: undefined value (at `user.flags.missing`) (for user `alice`)
    "#);
}

#[test]
fn template_syntax_errors_name_the_file_and_line() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host:
            - file: { path: /etc/a, content: "{{ host.name }" }
            - file: { path: /etc/b, template: b.j2 }
            - file: { path: /etc/c, content: x }
              when: "host.name =="
          home: []
        //- files/b.j2
        line one
        line two
        {% if x %}unclosed
        //- files/script.sh
        echo ${#HOME} {{ not a template, only ever copied verbatim
        //- roster.yaml
        users: {}
    "#;
    let (site, _) = load(fixture);
    let errors = Compiler::new(&site).unwrap_err();
    insta::assert_snapshot!(errors.to_string(), @r#"
        files/b.j2:3: syntax error: unexpected end of input, expected end of block (at `unclosed`)
        site.yaml:5: bundles.host[0].content: syntax error: unexpected `}`, expected end of variable block (at `}`)
        site.yaml:7: bundles.host[2].when: syntax error: unexpected end of input, expected expression (at `==`)
    "#);
}

#[test]
fn a_verbatim_source_file_may_contain_anything() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host:
            - file: { path: /usr/local/bin/x, source: script.sh, mode: "0755" }
          home: []
        //- files/script.sh
        echo ${#HOME} {{ not a template
        //- roster.yaml
        users: {}
    "#;
    let compiled = compile_on(fixture, "devvm", &State::default()).unwrap();
    assert_eq!(
        text_of(file_content(&compiled, "/usr/local/bin/x")),
        "echo ${#HOME} {{ not a template\n"
    );
}

#[test]
fn rendered_paths_must_be_normal_and_absolute() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host: []
          home:
            - file: { path: "{{ user.home }}/{{ user.flags.sub }}/x", content: x }
            - symlink: { path: "{{ user.home }}/link", target: "{{ user.flags.target }}" }
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev, flags: { sub: "../../etc/cron.d", target: "relative/path" } }
    "#;
    insta::assert_snapshot!(check(fixture), @r#"
        site.yaml:6: bundles.home[0].path: path "/home/alice/../../etc/cron.d/x" must be absolute and normalized (no `..`, `.`, `//`, trailing `/` or control characters) (for user `alice`)
        site.yaml:7: bundles.home[1].target: path "relative/path" must be absolute and normalized (no `..`, `.`, `//`, trailing `/` or control characters) (for user `alice`)
    "#);
}

#[test]
fn unknown_requires_are_errors() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host:
            - package: { name: git }
              when: "false"
          home:
            - directory: { path: "{{ user.home }}/code" }
              requires: ["package:git", "package:{{ user.name }}-tools"]
            - service: { name: "x@{{ user.name }}.service", subscribes: ["file:{{ user.home }}/nothing"] }
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
    "#;
    insta::assert_snapshot!(check(fixture), @r#"
        site.yaml:8: requires: `directory:/home/alice/code` requires unknown resource `package:alice-tools`
        site.yaml:8: requires: `directory:/home/alice/code` requires unknown resource `package:git`
        site.yaml:10: subscribes: `service:x@alice.service` subscribes unknown resource `file:/home/alice/nothing`
    "#);
}

#[test]
fn duplicate_ids_name_both_templates() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host, extra] }
        bundles:
          host:
            - directory: { path: /srv/shared }
          extra:
            - directory: { path: /srv/shared, mode: "0700" }
          home:
            - file: { path: /etc/motd, content: "{{ user.name }}" }
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
          bob:   { authentik_user: bob.b, k8s_user: bob, tier: dev }
    "#;
    insta::assert_snapshot!(check(fixture), @r#"
        site.yaml:7: duplicate resource id `directory:/srv/shared` (also produced by site.yaml:5)
        site.yaml:9: duplicate resource id `file:/etc/motd` (also produced by site.yaml:9)
    "#);
}

#[test]
fn a_group_declared_by_a_host_bundle_is_not_repeated() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host:
            - group: { name: code-shared, gid: 2000 }
          home: []
        //- tiers.yaml
        tiers:
          dev: { groups: [code-shared, devs], bundles: [home] }
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
    "#;
    insta::assert_snapshot!(check(fixture), @r#"
    group:code-shared {"gid":2000,"system":false}
    group:devs {"system":false}
    user:alice <- group:code-shared, group:devs {"ensure":{"state":"present"},"groups":["code-shared","devs"],"home":"/home/alice","home_mode":"0700","lock_at_creation":true,"shell":"/bin/bash","tier":"dev"}
    "#);
}

#[test]
fn memoized_renders_follow_their_inputs() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        bundles:
          host: []
          home:
            - file: { path: "{{ user.home }}/.mcp.json", template: mcp.j2 }
        //- files/mcp.j2
        {% include "header.j2" %}ha={{ "yes" if user.flags.ha | default(false) else "no" }}{% if user.flags.ha | default(false) %} url={{ secret("secret/ha", "url") }}{% endif %}
        //- files/header.j2
        for {{ user.tier }}:
        //- roster.yaml
        users:
          ann: { authentik_user: ann, k8s_user: ann, tier: dev }
          bob: { authentik_user: bob, k8s_user: bob, tier: dev, flags: { ha: true } }
          cat: { authentik_user: cat, k8s_user: cat, tier: dev }
          dan: { authentik_user: dan, k8s_user: dan, tier: dev, flags: { ha: true } }
        //- vault/secret/ha.json
        { "url": "https://ha.example/token" }
    "#;
    let compiled = compile_on(fixture, "devvm", &State::default()).unwrap();
    let content = |user: &str| match file_content(&compiled, &format!("/home/{user}/.mcp.json")) {
        FileContent::Text(text) => format!("text:{text}"),
        FileContent::Secret(secret) => format!("secret:{}", secret.expose()),
        FileContent::Sealed(_) => unreachable!(),
    };
    assert_eq!(content("ann"), "text:for dev:\nha=no\n");
    assert_eq!(
        content("bob"),
        "secret:for dev:\nha=yes url=https://ha.example/token\n"
    );
    assert_eq!(content("cat"), "text:for dev:\nha=no\n");
    assert_eq!(
        content("dan"),
        "secret:for dev:\nha=yes url=https://ha.example/token\n"
    );
}

#[test]
fn roles_that_disagree_with_vault_fail_the_compile() {
    let fixture = format!(
        "{BASE_SITE}    //- vault/secret/platform.json\n    {}\n",
        r#"{ "k8s_users": { "alice": { "role": "admin" } } }"#
    );
    insta::assert_snapshot!(check(&fixture), @r#"roster.yaml:2: users.alice.tier: roster says "dev" but secret/platform k8s_users.alice.role is "admin""#);
}

#[test]
fn a_role_mismatch_holds_back_only_the_hosts_that_user_is_on() {
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*", "ws-*"], manage_users: true, bundles: [host] }
        bundles:
          host:
            - package: { name: zsh }
          home: []
        //- roster.yaml
        users:
          alice: { authentik_user: alice.a, k8s_user: alice, tier: dev }
          bob:   { authentik_user: bob.b, k8s_user: bob, tier: dev, hosts: ["ws-*"] }
        //- vault/secret/platform.json
        { "k8s_users": { "alice": { "role": "dev" }, "bob": { "role": "admin" } } }
    "#;
    assert!(compile_on(fixture, "devvm", &State::default()).is_ok());
    insta::assert_snapshot!(
        show(&compile_on(fixture, "ws-1", &State::default())),
        @r#"roster.yaml:3: users.bob.tier: roster says "dev" but secret/platform k8s_users.bob.role is "admin""#
    );
}

#[test]
fn base_site_compiles() {
    insta::assert_snapshot!(check(BASE_SITE), @r#"
    package:zsh {}
    user:alice {"ensure":{"state":"present"},"home":"/home/alice","home_mode":"0700","lock_at_creation":true,"shell":"/bin/bash","tier":"dev"}
    directory:/home/alice/.config <- user:alice {"group":"alice","mode":"0700","owner":"alice","replace":"if_absent"}
    "#);
}

#[test]
fn adopting_a_lived_in_host_enforce_revoke_and_creation_only_defaults() {
    // Issue 11: what existed before Steward is the person's. Directories inside a user's home
    // default to `if_absent` (an existing one is left as found); outside, and when the site
    // says `replace: always`, they are enforced. Privileged groups travel apart from ordinary
    // ones; `enforce` (site and roster) and `revoke_groups` are explicit.
    let fixture = r##"
        //- site.yaml
        classes:
          workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host] }
        users: { enforce: [comment] }
        offboarding: { terminate_sessions: false }
        bundles:
          host:
            - directory: { path: /srv/shared }
          home:
            - directory: { path: "{{ user.home }}/.kube", mode: "0700" }
            - directory: { path: "{{ user.home }}/.ssh", mode: "0700", replace: always }
            - directory: { path: "/var/lib/t3/{{ user.name }}" }
            - file:
                path: "{{ user.home }}/.kube/config"
                content: "# steward-kubeconfig: tier={{ tier.name }};\n"
                replace: if_stale
                marker: "# steward-kubeconfig: tier="
                current: "# steward-kubeconfig: tier={{ tier.name }};"
            - service: { name: "t3@{{ user.name }}.service", restart: when_idle, max_defer: 8h }
            - service: { name: "ttyd.service", restart: when_idle, user: "{{ user.name }}" }
              when: user.name == "ann"
            - git_clone:
                path: "{{ user.home }}/code/infra"
                url: https://git.example/infra.git
                migrate_from: "{{ user.home }}/code"
        //- tiers.yaml
        tiers:
          dev: { groups: [devs], bundles: [home] }
          boss: { groups: [devs], privileged_groups: [sudo, docker], bundles: [home] }
        //- roster.yaml
        users:
          ann: { authentik_user: a, k8s_user: ann, tier: boss, enforce: [shell] }
          bob: { authentik_user: b, k8s_user: bob, tier: dev, revoke_groups: [sudo, docker] }
          cat: { authentik_user: c, k8s_user: cat, tier: dev, state: purged }
    "##;
    insta::assert_snapshot!(check(fixture), @r##"
    directory:/srv/shared {"group":"root","mode":"0755","owner":"root"}
    group:devs {"system":false}
    group:docker {"system":false}
    group:sudo {"system":false}
    user:ann <- group:devs, group:docker, group:sudo {"enforce":["shell","comment"],"ensure":{"state":"present"},"groups":["devs"],"home":"/home/ann","home_mode":"0700","lock_at_creation":true,"privileged_groups":["docker","sudo"],"shell":"/bin/bash","tier":"boss"}
    directory:/home/ann/.kube <- user:ann {"group":"ann","mode":"0700","owner":"ann","replace":"if_absent"}
    directory:/home/ann/.ssh <- user:ann {"group":"ann","mode":"0700","owner":"ann"}
    directory:/var/lib/t3/ann <- user:ann {"group":"ann","mode":"0755","owner":"ann"}
    file:/home/ann/.kube/config <- user:ann {"backup":false,"content":{"text":"# steward-kubeconfig: tier=boss;\n"},"group":"ann","mode":"0644","owner":"ann","replace":{"if_stale":{"current":"# steward-kubeconfig: tier=boss;","marker":"# steward-kubeconfig: tier="}}}
    service:t3@ann.service <- user:ann {"enable":true,"ensure":"running","restart":{"max_defer_secs":28800,"user":"ann","when":"when_idle"}}
    service:ttyd.service <- user:ann {"enable":true,"ensure":"running","restart":{"user":"ann","when":"when_idle"}}
    git_clone:/home/ann/code/infra <- user:ann {"migrate_from":"/home/ann/code","refresh":false,"url":"https://git.example/infra.git","user":"ann"}
    user:bob <- group:devs {"enforce":["comment"],"ensure":{"state":"present"},"groups":["devs"],"home":"/home/bob","home_mode":"0700","lock_at_creation":true,"revoke_groups":["sudo","docker"],"shell":"/bin/bash","tier":"dev"}
    directory:/home/bob/.kube <- user:bob {"group":"bob","mode":"0700","owner":"bob","replace":"if_absent"}
    directory:/home/bob/.ssh <- user:bob {"group":"bob","mode":"0700","owner":"bob"}
    directory:/var/lib/t3/bob <- user:bob {"group":"bob","mode":"0755","owner":"bob"}
    file:/home/bob/.kube/config <- user:bob {"backup":false,"content":{"text":"# steward-kubeconfig: tier=dev;\n"},"group":"bob","mode":"0644","owner":"bob","replace":{"if_stale":{"current":"# steward-kubeconfig: tier=dev;","marker":"# steward-kubeconfig: tier="}}}
    service:t3@bob.service <- user:bob {"enable":true,"ensure":"running","restart":{"max_defer_secs":28800,"user":"bob","when":"when_idle"}}
    git_clone:/home/bob/code/infra <- user:bob {"migrate_from":"/home/bob/code","refresh":false,"url":"https://git.example/infra.git","user":"bob"}
    service:t3@cat.service {"enable":false,"ensure":"stopped"}
    user:cat <- service:t3@cat.service {"ensure":{"archive_dir":"/var/backups/steward/offboarded","state":"purged","terminate_sessions":false},"home":"/home/cat","home_mode":"0700","lock_at_creation":false,"shell":"/bin/bash"}
    "##);
}

#[test]
fn new_fields_are_refused_where_they_make_no_sense() {
    let fixture = |bundle: &str| {
        format!(
            "//- site.yaml\nclasses:\n  workstation: {{ hosts: [\"devvm*\"], manage_users: true, bundles: [] }}\nbundles:\n  home:\n{bundle}\n//- roster.yaml\nusers:\n  ann: {{ authentik_user: a, k8s_user: ann, tier: dev }}\n"
        )
    };
    let cases = [
        // when_idle needs whose activity gates the restart.
        "    - service: { name: ttyd.service, restart: when_idle }",
        "    - service: { name: \"t3@{{ user.name }}.service\", restart: when_idle, max_defer: soon }",
        "    - service: { name: ttyd.service, user: ann }",
        // if_stale: every variant carries the marker; only this one carries `current`.
        "    - file: { path: \"{{ user.home }}/k\", content: x, replace: if_stale, marker: \"m=\", current: \"other\" }",
    ];
    let out: Vec<String> = cases.iter().map(|c| check(&fixture(c))).collect();
    insta::assert_snapshot!(out.join("\n"), @"
    site.yaml:5: bundles.home[0].user: `ttyd.service` is not a template instance (name@user.service); give `user:` for `restart: when_idle` (for user `ann`)
    site.yaml:5: bundles.home[0].max_defer: `soon` is not a duration; write a number and a unit: 90s, 30m, 12h or 7d (for user `ann`)
    site.yaml:5: bundles.home[0].user: `user` only applies to `restart: when_idle` (for user `ann`)
    site.yaml:5: bundles.home[0].current: replace: if_stale needs a non-empty `marker` that `current` contains (every variant carries the marker; only this one carries `current`) (for user `ann`)
    ");
}

#[test]
fn the_compiler_refuses_what_the_agent_would_refuse_at_the_template_line() {
    // THREATS F8, F5, F9, F10: each of these passed compile and then failed on every host,
    // every run; the compiler now refuses them with the agent's own rules.
    let fixture = |bundle: &str| {
        format!(
            "//- site.yaml\nclasses:\n  workstation: {{ hosts: [\"devvm*\"], manage_users: true, bundles: [host] }}\nbundles:\n  home: []\n  host:\n{bundle}\n//- roster.yaml\nusers:\n  ann: {{ authentik_user: a, k8s_user: ann, tier: dev }}\n"
        )
    };
    let cases = [
        "    - service: { name: ../x.service }",
        "    - service: { name: a/b.service }",
        "    - service: { name: --now.service }",
        "    - git_clone: { path: /srv/x, url: https://git.example/x.git, branch: --help }",
        "    - git_clone: { path: /srv/x, url: https://git.example/x.git, remotes: { \"--upload-pack=id\": https://git.example/y.git } }",
        "    - file: { path: /usr/local/bin/x, content: x, mode: \"4777\" }",
        "    - file: { path: /etc/x, content: x, mode: \"0666\" }",
        "    - directory: { path: /srv/drop, mode: \"0777\" }",
        "    - file: { path: /etc/x, content: x }\n    - directory: { path: /etc/x }",
    ];
    let out: Vec<String> = cases.iter().map(|c| check(&fixture(c))).collect();
    insta::assert_snapshot!(out.join("\n"), @r#"
    site.yaml:6: bundles.host[0].name: "../x.service" contains '/': unit names are letters, digits and `:_.@-\` (a `/` would leave the unit directory)
    site.yaml:6: bundles.host[0].name: "a/b.service" contains '/': unit names are letters, digits and `:_.@-\` (a `/` would leave the unit directory)
    site.yaml:6: bundles.host[0].name: "--now.service" starts with `-`: systemctl would read it as an option
    site.yaml:6: bundles.host[0].branch: "--help" is not a branch name: it starts with `-` (git would read an option)
    site.yaml:6: bundles.host[0].remotes: "--upload-pack=id" is not a remote name (letters, digits, `.`, `_` and `-`, starting with a letter or digit)
    site.yaml:6: bundles.host[0].mode: mode 4777 sets setuid, setgid or sticky bits, which a managed file may not have
    site.yaml:6: bundles.host[0].mode: mode 0666 makes the file world-writable: anyone could change what Steward manages
    site.yaml:6: bundles.host[0].mode: mode 0777 makes the directory world-writable without the sticky bit (use "1777" for a shared scratch directory)
    site.yaml:7: path: `directory:/etc/x` manages the path /etc/x that `file:/etc/x` (site.yaml:6) manages too; every run would fail
    "#);
}

#[test]
fn check_compiles_every_host_shape_and_reports_what_any_host_would_hit() {
    // THREATS R2: `check` is the CI gate for roster changes, so it must find what a compile
    // for any host finds: here errors that only hosts matching `ws-*` (where bob is) produce,
    // a newline in a unit name (shown escaped, on one line) and an `ext::` remote.
    let fixture = r#"
        //- site.yaml
        classes:
          workstation: { hosts: [devvm, "ws-*"], manage_users: true, bundles: [] }
        vars: { remote: "ext::sh -c id" }
        bundles:
          home:
            - service: { name: "t3@{{ user.name }}\n.service" }
              when: user.name == "bob"
            - git_clone: { path: "{{ user.home }}/x", url: "{{ site.remote }}" }
              when: user.name == "bob"
            - file: { path: "{{ user.home }}/.token", content: "{{ secret('secret/tokens', user.name) }}", mode: "0600" }
        //- roster.yaml
        users:
          ann: { authentik_user: a, k8s_user: ann, tier: dev }
          bob: { authentik_user: b, k8s_user: bob, tier: dev, hosts: ["ws-*"] }
    "#;
    let (site, _) = load(fixture);
    assert_eq!(
        steward_catalogs::compile::host_shapes(&site),
        ["devvm", "ws-x"]
    );
    let compiler = Compiler::new(&site).unwrap();
    let errors = steward_catalogs::compile::check_host_shapes(&compiler, None, NOW);
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(shown.join("\n"), @r#"
    site.yaml:6: bundles.home[0].name: "t3@bob\n.service" contains '\n': unit names are letters, digits and `:_.@-\` (a `/` would leave the unit directory) (for user `bob`)
    site.yaml:8: bundles.home[1].url: "ext::sh -c id" contains whitespace or control characters (for user `bob`)
    "#);
    assert!(shown.iter().all(|line| !line.contains('\n')));
}
