//! The example site (`deploy/example-site`, the seeds' devvm) compiled for `devvm`: a golden
//! catalog (file snapshot) plus the properties an admin relies on: no Vault secret in clear,
//! tiers keep their privileges, code layouts, sticky ports, determinism, lifecycle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use steward_catalogs::compile::{compile, CompiledCatalog, NodeInfo};
use steward_catalogs::{loader, site, vault, Site, State, VaultData};
use steward_protocol::{FileContent, NodeId, ResourceSpec, ServiceState, Timestamp, UserEnsure};

/// A fixed "now": 2026-09-21T14:13:20Z.
const NOW: Timestamp = Timestamp(1_790_000_000);

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/example-site")
}

fn vault_data() -> VaultData {
    let path = example_dir().join("vault-data.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    vault::parse_vault_data("vault-data.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
}

fn example_site() -> Site {
    loader::load_site_dir(&example_dir())
        .unwrap_or_else(|e| panic!("the example site must load: {e}"))
}

/// The example site with `roster.yaml` edited by `edit`.
fn edited_site(edit: impl FnOnce(String) -> String) -> Site {
    let mut files = loader::read_site_files(&example_dir()).unwrap_or_else(|e| panic!("{e}"));
    let roster = edit(files["roster.yaml"].clone());
    files.insert("roster.yaml".into(), roster);
    site::parse_site(&files).unwrap_or_else(|e| panic!("edited example site is invalid:\n{e}"))
}

fn compile_devvm(site: &Site, state: &State) -> CompiledCatalog {
    compile(
        site,
        &vault_data(),
        &NodeInfo::new(NodeId("devvm".into())),
        state,
        NOW,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn user_spec<'a>(compiled: &'a CompiledCatalog, name: &str) -> &'a steward_protocol::UserSpec {
    compiled
        .catalog
        .resources
        .iter()
        .find_map(|r| match &r.spec {
            ResourceSpec::User(user) if user.name == name => Some(user),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no user {name}"))
}

fn ids(compiled: &CompiledCatalog) -> Vec<&str> {
    compiled
        .catalog
        .resources
        .iter()
        .map(|r| r.id.as_str())
        .collect()
}

fn text_of<'a>(compiled: &'a CompiledCatalog, path: &str) -> &'a str {
    compiled
        .catalog
        .resources
        .iter()
        .find_map(|r| match &r.spec {
            ResourceSpec::File(file) if file.path == path => match &file.content {
                FileContent::Text(text) => Some(text.as_str()),
                other => panic!("{path}: expected text, got {other:?}"),
            },
            _ => None,
        })
        .unwrap_or_else(|| panic!("no file {path}"))
}

#[test]
fn golden_catalog_of_devvm() {
    let compiled = compile_devvm(&example_site(), &State::default());
    compiled.catalog.validate().unwrap();
    insta::assert_json_snapshot!("devvm_catalog", compiled.catalog);
}

/// Every leaf of the Vault data except the role data (`k8s_users` roles and namespaces).
fn secret_leaves(vault: &VaultData) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => out.push(text.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            serde_json::Value::Null | serde_json::Value::Bool(_) => {}
            number => out.push(number.to_string()),
        }
    }
    let mut leaves = Vec::new();
    for (path, secret) in &vault.paths {
        for (key, value) in &secret.data {
            if path == "secret/platform" && key == "k8s_users" {
                continue;
            }
            walk(value, &mut leaves);
        }
    }
    leaves
}

#[test]
fn no_vault_secret_appears_in_clear() {
    let vault = vault_data();
    let leaves = secret_leaves(&vault);
    assert!(leaves.len() >= 3, "{leaves:?}");
    // With emo's Home Assistant flag on, every secret of the file is used by some template.
    let with_ha = edited_site(|roster| {
        roster.replace(
            "tier: power-user }",
            "tier: power-user, flags: { ha: true } }",
        )
    });
    for site in [example_site(), with_ha] {
        let compiled = compile_devvm(&site, &State::default());
        let serialized = serde_json::to_string(&compiled.catalog).unwrap();
        let debug = format!("{compiled:?}");
        for leaf in &leaves {
            assert!(
                !serialized.contains(leaf.as_str()),
                "{leaf} appears in the serialized catalog"
            );
            assert!(
                !debug.contains(leaf.as_str()),
                "{leaf} appears in the Debug output"
            );
        }
    }
}

#[test]
fn secrets_reach_only_the_files_that_use_them() {
    let with_ha = edited_site(|roster| {
        roster.replace(
            "tier: power-user }",
            "tier: power-user, flags: { ha: true } }",
        )
    });
    let compiled = compile_devvm(&with_ha, &State::default());
    let secret_files: BTreeMap<&str, &str> = compiled
        .catalog
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            ResourceSpec::File(file) => match &file.content {
                FileContent::Secret(secret) => Some((file.path.as_str(), secret.expose())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        secret_files.keys().copied().collect::<Vec<_>>(),
        [
            "/home/ancamilea/.claude.json",
            "/home/ancamilea/code/infra/.beads/.beads-credential-key",
            "/home/emo/.claude.json",
            "/home/emo/code/.beads/.beads-credential-key",
        ]
    );
    let ha_url = "https://ha.homelab.example/api/mcp?token=PLACEHOLDER-ha-token-5c1e9a";
    let emo: serde_json::Value =
        serde_json::from_str(secret_files["/home/emo/.claude.json"]).unwrap();
    assert_eq!(emo["mcpServers"]["ha"]["url"], ha_url);
    assert_eq!(
        emo["mcpServers"]["claude_memory"]["headers"]["Authorization"],
        "Bearer PLACEHOLDER-memory-api-key-3f8d27"
    );
    assert_eq!(
        emo["mcpServers"]["playwright-shared"]["url"],
        "http://127.0.0.1:8931/mcp"
    );
    // ancamilea has no ha flag: no Home Assistant server, so no ha token in her file.
    let anca: serde_json::Value =
        serde_json::from_str(secret_files["/home/ancamilea/.claude.json"]).unwrap();
    assert!(anca["mcpServers"].get("ha").is_none(), "{anca}");
    assert_eq!(
        secret_files["/home/emo/code/.beads/.beads-credential-key"],
        "PLACEHOLDER-beads-credential-key-b64e10"
    );
}

#[test]
fn tiers_keep_their_privileges() {
    let compiled = compile_devvm(&example_site(), &State::default());
    for user in ["emo", "ancamilea"] {
        let groups = &user_spec(&compiled, user).groups;
        assert!(
            !groups
                .iter()
                .any(|g| g == "sudo" || g == "docker" || g == "code-shared"),
            "{user}: {groups:?}"
        );
    }
    assert!(
        !ids(&compiled).iter().any(|id| id.starts_with("group:")),
        "no tier of a present user grants a group"
    );
    let emo = user_spec(&compiled, "emo");
    assert_eq!(
        (emo.home.as_str(), emo.shell.as_str(), emo.home_mode.0),
        ("/home/emo", "/bin/zsh", 0o700)
    );
    assert!(emo.lock_at_creation);
    // An admin would get sudo and docker, explicitly granted by the tier.
    let admin = edited_site(|roster| {
        roster.replace(
            "  # wizard (admin) authors",
            "  wizard: { authentik_user: viktor, k8s_user: wizard, tier: admin }\n  # wizard (admin) authors",
        )
    });
    let mut vault = vault_data();
    let roles = vault
        .paths
        .get_mut("secret/platform")
        .unwrap()
        .data
        .get_mut("k8s_users")
        .unwrap();
    roles
        .as_object_mut()
        .unwrap()
        .insert("wizard".into(), serde_json::json!({ "role": "admin" }));
    let compiled = compile(
        &admin,
        &vault,
        &NodeInfo::new(NodeId("devvm".into())),
        &State::default(),
        NOW,
    )
    .unwrap();
    // Privileged groups travel apart from ordinary ones, so the agent can refuse a privileged
    // group that is not a tier grant and report one held beyond it as drift.
    let wizard = user_spec(&compiled, "wizard");
    assert_eq!(wizard.groups, ["code-shared"]);
    assert_eq!(wizard.privileged_groups, ["docker", "sudo"]);
    assert_eq!(wizard.tier.as_deref(), Some("admin"));
    assert!(wizard.enforce.is_empty(), "creation-only by default");
    let ids = ids(&compiled);
    for group in ["group:code-shared", "group:docker", "group:sudo"] {
        assert!(ids.contains(&group), "{group}");
    }
    // The admin works in the unlocked tree: no locked clone is provisioned for them.
    assert!(
        !ids.iter()
            .any(|id| id.starts_with("git_clone:/home/wizard")),
        "{ids:?}"
    );
}

#[test]
fn code_layouts_single_and_workspace() {
    let compiled = compile_devvm(&example_site(), &State::default());
    let clones: BTreeMap<&str, &steward_protocol::GitCloneSpec> = compiled
        .catalog
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            ResourceSpec::GitClone(clone) => Some((clone.path.as_str(), clone)),
            _ => None,
        })
        .collect();
    assert_eq!(
        clones.keys().copied().collect::<Vec<_>>(),
        [
            "/home/ancamilea/code/infra",
            "/home/ancamilea/code/tripit",
            "/home/emo/code",
            "/srv/config-base"
        ]
    );
    for path in ["/home/emo/code", "/home/ancamilea/code/infra"] {
        let clone = clones[path];
        assert_eq!(clone.config["filter.git-crypt.smudge"], "cat");
        assert_eq!(clone.config["filter.git-crypt.clean"], "cat");
        assert_eq!(clone.config["filter.git-crypt.required"], "false");
        assert_eq!(
            clone.remotes["forgejo"],
            "https://forgejo.homelab.example/viktor/infra.git"
        );
        assert_eq!(clone.branch.as_deref(), Some("master"));
        assert!(clone.refresh);
    }
    assert_eq!(clones["/home/emo/code"].user, "emo");
    assert_eq!(
        clones["/home/ancamilea/code/tripit"].url,
        "https://forgejo.homelab.example/viktor/tripit.git"
    );
    assert_eq!(clones["/home/ancamilea/code/tripit"].user, "ancamilea");
    let ids = ids(&compiled);
    assert!(ids.contains(&"directory:/home/ancamilea/code"));
    assert!(
        !ids.contains(&"directory:/home/emo/code"),
        "single: ~/code is the clone itself"
    );
}

#[test]
fn ports_are_sticky_across_compiles() {
    let first = compile_devvm(&example_site(), &State::default());
    let expected = BTreeMap::from([("ancamilea".to_string(), 3775), ("emo".to_string(), 3774)]);
    assert_eq!(first.state.ports, expected);
    assert_eq!(first.new_ports, expected);
    let second = compile_devvm(&example_site(), &first.state);
    assert_eq!(second.state.ports, expected);
    assert!(second.new_ports.is_empty());
    assert_eq!(
        serde_json::to_vec(&second.catalog).unwrap(),
        serde_json::to_vec(&first.catalog).unwrap()
    );
    // gheorghe joins at the top of the roster: the others keep their ports, he gets the next.
    let with_gheorghe = edited_site(|roster| {
        roster.replacen(
            "users:\n",
            "users:\n  gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81] }\n",
            1,
        )
    });
    let third = compile_devvm(&with_gheorghe, &second.state);
    assert_eq!(
        third.new_ports,
        BTreeMap::from([("gheorghe".to_string(), 3776)])
    );
    assert_eq!(third.state.ports["emo"], 3774);
    assert_eq!(third.state.ports["ancamilea"], 3775);
    assert_eq!(
        text_of(&third, "/etc/t3-serve/gheorghe.env").lines().last(),
        Some("PORT=3776")
    );
}

#[test]
fn compiling_twice_gives_identical_bytes() {
    let site = example_site();
    let first = serde_json::to_vec(&compile_devvm(&site, &State::default()).catalog).unwrap();
    let second =
        serde_json::to_vec(&compile_devvm(&example_site(), &State::default()).catalog).unwrap();
    assert_eq!(first, second);
}

#[test]
fn a_node_in_no_class_gets_a_clear_error() {
    let err = compile(
        &example_site(),
        &vault_data(),
        &NodeInfo::new(NodeId("web-1".into())),
        &State::default(),
        NOW,
    )
    .unwrap_err();
    insta::assert_snapshot!(err.to_string(), @r#"site.yaml:7: classes: node `web-1` matches no host class (classes: workstation (devvm, devvm-*, ws-*)); add a glob that matches it to a class's `hosts`"#);
}

#[test]
fn generated_maps_list_present_users_only() {
    let compiled = compile_devvm(&example_site(), &State::default());
    assert!(text_of(&compiled, "/etc/ttyd-user-map")
        .ends_with("emil.barzin=emo\nancaelena98=ancamilea\n"));
    let dispatch: serde_json::Value =
        serde_json::from_str(text_of(&compiled, "/etc/t3-serve/dispatch.json")).unwrap();
    assert_eq!(
        dispatch["users"]["emil.barzin"],
        serde_json::json!({ "os_user": "emo", "port": 3774 })
    );
    assert_eq!(
        dispatch["users"]["ancaelena98"],
        serde_json::json!({ "os_user": "ancamilea", "port": 3775 })
    );
    // Offboarding emo: locked, t3 stopped and disabled, gone from the maps; port kept.
    let offboarded = edited_site(|roster| {
        roster.replace(
            "tier: power-user }",
            "tier: power-user, state: offboarded }",
        )
    });
    let cut = compile_devvm(&offboarded, &compiled.state);
    assert_eq!(user_spec(&cut, "emo").ensure, UserEnsure::Locked);
    let t3 = cut
        .catalog
        .resources
        .iter()
        .find_map(|r| match &r.spec {
            ResourceSpec::Service(s) if s.name == "t3-serve@emo.service" => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!((t3.enable, t3.ensure), (false, ServiceState::Stopped));
    assert!(!ids(&cut)
        .iter()
        .any(|id| id.starts_with("file:/home/emo") || id.starts_with("git_clone:/home/emo")));
    assert!(!text_of(&cut, "/etc/ttyd-user-map").contains("emo"));
    let dispatch: serde_json::Value =
        serde_json::from_str(text_of(&cut, "/etc/t3-serve/dispatch.json")).unwrap();
    assert!(dispatch["users"].get("emil.barzin").is_none());
    assert_eq!(cut.state.ports["emo"], 3774);
}

#[test]
fn cluster_tools_are_guarded_execs_behind_a_flag() {
    let compiled = compile_devvm(&example_site(), &State::default());
    assert!(
        !ids(&compiled).iter().any(|id| id.starts_with("exec:")),
        "off by default"
    );
    let mut files = loader::read_site_files(&example_dir()).unwrap_or_else(|e| panic!("{e}"));
    let site_yaml = files["site.yaml"].replace(
        "install_cluster_tools: false",
        "install_cluster_tools: true",
    );
    files.insert("site.yaml".into(), site_yaml);
    let site = site::parse_site(&files).unwrap_or_else(|e| panic!("{e}"));
    let compiled = compile_devvm(&site, &State::default());
    let execs: Vec<String> = compiled
        .catalog
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            ResourceSpec::Exec(exec) => Some(format!(
                "{} creates={} argv={} requires={}",
                exec.name,
                exec.creates.as_deref().unwrap_or("-"),
                exec.command.len(),
                r.requires
                    .iter()
                    .map(|id| id.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            _ => None,
        })
        .collect();
    insta::assert_snapshot!(execs.join("\n"), @r#"
        install-kubectl creates=/usr/local/bin/kubectl argv=5 requires=package:curl,package:unzip,file:/usr/local/sbin/steward-install-tool
        install-kubelogin creates=/usr/local/bin/kubectl-oidc_login argv=5 requires=package:curl,package:unzip,file:/usr/local/sbin/steward-install-tool
        install-vault creates=/usr/local/bin/vault argv=5 requires=package:curl,package:unzip,file:/usr/local/sbin/steward-install-tool
    "#);
    assert!(ids(&compiled).contains(&"file:/usr/local/sbin/steward-install-tool"));
}
