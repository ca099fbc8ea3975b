//! The offline CLI (`check`, `compile`, `diff`, `add-user`) run as a real binary against the example
//! site and broken copies of it.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod support;

use support::server::{copy_dir, example_site};

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward-server"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A copy of the example site in a temp dir (files/ included), to break or extend.
fn site_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_site(), dir.path());
    dir
}

/// Every leaf string of vault-data.yaml outside the k8s_users role data: all of them secrets.
fn sensitive_vault_values() -> Vec<String> {
    let text = fs::read_to_string(example_site().join("vault-data.yaml")).unwrap();
    let data: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    fn leaves(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
            serde_json::Value::Object(m) => m.values().for_each(|x| leaves(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (path, value) in data.as_object().unwrap() {
        if path != "secret/platform" {
            leaves(value, &mut out);
        }
    }
    assert!(
        out.len() >= 3,
        "the example vault data should hold several secrets: {out:?}"
    );
    out
}

#[test]
fn check_accepts_the_example_site_with_its_vault_data() {
    let site = example_site();
    let vault = site.join("vault-data.yaml");
    let out = server(&[
        "check",
        "--site",
        site.to_str().unwrap(),
        "--vault-data",
        vault.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains(": ok ("), "{}", stdout(&out));
}

#[test]
fn check_reports_every_error_with_file_and_line_and_exits_1() {
    let site = site_copy();
    let roster = site.path().join("roster.yaml");
    let text = fs::read_to_string(&roster).unwrap();
    let broken = text
        .replace("tier: power-user", "tier: power-usr")
        .replace("authentik_user: ancaelena98", "authentik_user: emil.barzin");
    assert_ne!(
        text, broken,
        "the example roster changed shape; update this test"
    );
    fs::write(&roster, broken).unwrap();
    let out = server(&["check", "--site", site.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    let err = stderr(&out);
    let prefix = format!("{}:", roster.display());
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(".tier: unknown tier \"power-usr\"")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("authentik_user") && l.contains("emil.barzin")),
        "{err}"
    );
    for line in &lines {
        let rest = &line[prefix.len()..];
        let number = rest.split(':').next().unwrap();
        assert!(number.parse::<u32>().is_ok(), "no line number in {line:?}");
    }
}

#[test]
fn check_finds_what_only_a_compile_for_some_host_finds_without_vault_data() {
    // Issue 12.9: a unit name that renders with a newline used to pass `check` (exit 0) and
    // fail every host's compile; the raw newline also broke the error output.
    let site = site_copy();
    let site_yaml = site.path().join("site.yaml");
    let text = fs::read_to_string(&site_yaml).unwrap();
    let broken = text.replace(
        "name: \"t3-serve@{{ user.name }}.service\"",
        "name: \"t3-serve@{{ user.name }}\\n.service\"",
    );
    assert_ne!(
        text, broken,
        "the example site changed shape; update this test"
    );
    fs::write(&site_yaml, broken).unwrap();
    let out = server(&["check", "--site", site.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    let err = stderr(&out);
    // The instance (the restart's user) is read from the name first, and refused there.
    let line = err
        .lines()
        .find(|l| l.contains("(for user `emo`)"))
        .unwrap_or_else(|| panic!("no error for emo's unit: {err}"));
    assert!(
        line.starts_with(&format!("{}:", site_yaml.display())),
        "{line}"
    );
    assert!(
        line.contains("emo\\n"),
        "the newline is escaped, on one line: {line}"
    );
}

#[test]
fn check_with_vault_data_refuses_a_tier_that_disagrees_with_k8s_users() {
    let site = site_copy();
    let vault = site.path().join("vault-data.yaml");
    let text = fs::read_to_string(&vault).unwrap();
    let changed = text.replacen("role: power-user", "role: namespace-owner", 1);
    assert_ne!(text, changed);
    fs::write(&vault, changed).unwrap();
    let out = server(&[
        "check",
        "--site",
        site.path().to_str().unwrap(),
        "--vault-data",
        vault.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("users.emo.tier"), "{}", stderr(&out));
}

#[test]
fn compile_prints_the_devvm_catalog_without_any_secret_in_clear() {
    let site = example_site();
    let vault = site.join("vault-data.yaml");
    for format in ["json", "yaml"] {
        let out = server(&[
            "compile",
            "--site",
            site.to_str().unwrap(),
            "--node",
            "devvm",
            "--vault-data",
            vault.to_str().unwrap(),
            "--format",
            format,
        ]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        let text = stdout(&out);
        for secret in sensitive_vault_values() {
            assert!(
                !text.contains(&secret),
                "{format}: secret {secret:?} printed in clear"
            );
            assert!(!stderr(&out).contains(&secret));
        }
        assert!(
            text.contains("<redacted>"),
            "{format}: sensitive files should show as redacted"
        );
        assert!(
            text.contains("user:emo") && text.contains("user:ancamilea"),
            "{format}"
        );
    }
    let json: serde_json::Value = serde_json::from_slice(
        &server(&[
            "compile",
            "--site",
            site.to_str().unwrap(),
            "--node",
            "devvm",
            "--vault-data",
            vault.to_str().unwrap(),
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(json["serial"], 0, "an offline compile has serial 0");
    assert_eq!(json["node"], "devvm");
}

#[test]
fn compile_refuses_an_invalid_node_name_and_a_missing_vault() {
    let site = example_site();
    let out = server(&[
        "compile",
        "--site",
        site.to_str().unwrap(),
        "--node",
        "../etc",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid node name"),
        "{}",
        stderr(&out)
    );
    // Without Vault data the secrets cannot be read: the compile fails, never an empty secret.
    let out = server(&[
        "compile",
        "--site",
        site.to_str().unwrap(),
        "--node",
        "devvm",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("secret/"), "{}", stderr(&out));
}

fn add_user(site: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["add-user", "--site", site.to_str().unwrap()];
    args.extend_from_slice(extra);
    server(&args)
}

#[test]
fn add_user_appends_atomically_keeping_comments_and_the_result_compiles() {
    let site = site_copy();
    let roster = site.path().join("roster.yaml");
    let before = fs::read_to_string(&roster).unwrap();
    let vault = site.path().join("vault-data.yaml");
    let out = add_user(
        site.path(),
        &[
            "--os-user",
            "gheorghe",
            "--authentik-user",
            "vabbit81",
            "--k8s-user",
            "vabbit81",
            "--tier",
            "namespace-owner",
            "--namespaces",
            "vabbit81",
            "--vault-data",
            vault.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after = fs::read_to_string(&roster).unwrap();
    assert!(after.starts_with(before.trim_end_matches('\n').lines().next().unwrap()));
    for line in before.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(after.contains(line), "comment lost: {line}");
    }
    assert!(after.contains("gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81] }"), "{after}");
    assert_eq!(after.lines().count(), before.lines().count() + 1);
    let leftovers: Vec<_> = fs::read_dir(site.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".roster"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let check = server(&[
        "check",
        "--site",
        site.path().to_str().unwrap(),
        "--vault-data",
        vault.to_str().unwrap(),
    ]);
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn add_user_validates_before_writing_and_refuses_duplicates() {
    let site = site_copy();
    let roster = site.path().join("roster.yaml");
    let before = fs::read_to_string(&roster).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--os-user",
                "emo",
                "--authentik-user",
                "x",
                "--tier",
                "power-user",
            ],
            "already in the roster",
        ),
        (
            &[
                "--os-user",
                "newbie",
                "--authentik-user",
                "nb",
                "--tier",
                "no-such-tier",
            ],
            "unknown tier",
        ),
        (
            &[
                "--os-user",
                "Bad User",
                "--authentik-user",
                "bu",
                "--tier",
                "power-user",
            ],
            "roster.yaml",
        ),
        (
            &[
                "--os-user",
                "dup",
                "--authentik-user",
                "emil.barzin",
                "--tier",
                "power-user",
            ],
            "emil.barzin",
        ),
        (
            &[
                "--os-user",
                "nsless",
                "--authentik-user",
                "nl",
                "--tier",
                "namespace-owner",
            ],
            "namespaces",
        ),
        (&["--os-user", "newbie"], "missing --authentik-user"),
    ];
    for (args, expected) in cases {
        let out = add_user(site.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: expected {expected:?} in {}",
            stderr(&out)
        );
        assert_eq!(
            fs::read_to_string(&roster).unwrap(),
            before,
            "{args:?} changed the roster"
        );
    }
    let vault = site.path().join("vault-data.yaml");
    let out = add_user(
        site.path(),
        &[
            "--os-user",
            "newbie",
            "--authentik-user",
            "nb",
            "--tier",
            "power-user",
            "--vault-data",
            vault.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "newbie has no k8s_users entry in Vault"
    );
    assert_eq!(fs::read_to_string(&roster).unwrap(), before);
}

#[test]
fn add_user_prompts_for_missing_values() {
    let site = site_copy();
    let mut child = Command::new(env!("CARGO_BIN_EXE_steward-server"))
        .args([
            "add-user",
            "--site",
            site.path().to_str().unwrap(),
            "--prompt",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // os_user, authentik_user, k8s_user (default), tier, namespaces, code layout, repos.
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"gheorghe\nvabbit81\nvabbit81\nnamespace-owner\nvabbit81\nworkspace\ninfra-tools, notes\n",
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("tier (admin, namespace-owner, power-user)"),
        "{}",
        stderr(&out)
    );
    let roster = fs::read_to_string(site.path().join("roster.yaml")).unwrap();
    assert!(roster.contains("gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81], code_layout: workspace, repos: [infra-tools, notes] }"), "{roster}");
}

#[test]
fn add_user_dry_run_writes_nothing() {
    let site = site_copy();
    let roster = site.path().join("roster.yaml");
    let before = fs::read_to_string(&roster).unwrap();
    let out = add_user(
        site.path(),
        &[
            "--os-user",
            "newbie",
            "--authentik-user",
            "nb",
            "--tier",
            "power-user",
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("would add"));
    assert_eq!(fs::read_to_string(&roster).unwrap(), before);
}

fn diff(site: &Path, against: &Path) -> Output {
    let vault = example_site().join("vault-data.yaml");
    server(&[
        "diff",
        "--site",
        site.to_str().unwrap(),
        "--against",
        against.to_str().unwrap(),
        "--node",
        "devvm",
        "--node",
        "web-1",
        "--vault-data",
        vault.to_str().unwrap(),
        "--data-dir",
        site.join("no-such-data-dir").to_str().unwrap(),
    ])
}

#[test]
fn diff_previews_a_roster_change_per_host_without_secrets() {
    let site = site_copy();
    let roster = site.path().join("roster.yaml");
    let text = fs::read_to_string(&roster).unwrap();
    fs::write(
        &roster,
        text.replace(
            "users:\n",
            "users:\n  gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81] }\n",
        ),
    )
    .unwrap();
    let out = diff(site.path(), &example_site());
    let text = stdout(&out);
    // devvm changes; web-1 matches no host class and errors with either site.
    assert_eq!(out.status.code(), Some(6), "{text}\n{}", stderr(&out));
    assert!(text.contains("devvm: changed ("), "{text}");
    assert!(text.contains("  + user:gheorghe"), "{text}");
    assert!(text.contains("  ~ file:/etc/ttyd-user-map"), "{text}");
    assert!(text.contains("+ vabbit81=gheorghe"), "{text}");
    assert!(
        text.contains("  + file:/home/gheorghe/.claude.json"),
        "{text}"
    );
    assert!(text.contains("web-1: errored with the new site"), "{text}");
    // Ports are sticky: the newcomer gets a free port, nobody else's moves.
    assert!(!text.contains("file:/etc/t3-serve/emo.env"), "{text}");
    assert!(
        text.contains("\"vabbit81\": {\"os_user\": \"gheorghe\", \"port\": 3776}"),
        "{text}"
    );
    assert!(text.contains("1 changed, 0 unchanged, 1 errored"), "{text}");
    for secret in sensitive_vault_values() {
        assert!(!text.contains(&secret), "secret {secret:?} shown");
    }
}

#[test]
fn diff_of_an_unchanged_site_exits_0_and_a_failing_one_4() {
    let vault = example_site().join("vault-data.yaml");
    let site = example_site();
    let unchanged = server(&[
        "diff",
        "--site",
        site.to_str().unwrap(),
        "--against",
        site.to_str().unwrap(),
        "--node",
        "devvm",
        "--vault-data",
        vault.to_str().unwrap(),
    ]);
    assert_eq!(unchanged.status.code(), Some(0), "{}", stderr(&unchanged));
    assert!(stdout(&unchanged).contains("devvm: unchanged"));
    // A tier that disagrees with Vault fails every compile of the new site: errored, exit 4.
    let broken = site_copy();
    let roster = broken.path().join("roster.yaml");
    let text = fs::read_to_string(&roster).unwrap();
    fs::write(
        &roster,
        text.replace("tier: power-user", "tier: namespace-owner, namespaces: [x]"),
    )
    .unwrap();
    let out = server(&[
        "diff",
        "--site",
        broken.path().to_str().unwrap(),
        "--against",
        site.to_str().unwrap(),
        "--node",
        "devvm",
        "--vault-data",
        vault.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("devvm: errored with the new site"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("users.emo.tier"), "{}", stdout(&out));
}

#[test]
fn add_user_checks_the_tier_against_the_vault_of_the_server_config() {
    let site = site_copy();
    let config = site.path().join("server.toml");
    let vault = example_site().join("vault-data.yaml");
    fs::write(
        &config,
        format!("vault_data_file = {:?}\n", vault.display().to_string()),
    )
    .unwrap();
    let roster = site.path().join("roster.yaml");
    let before = fs::read_to_string(&roster).unwrap();
    let out = add_user(
        site.path(),
        &[
            "--os-user",
            "newbie",
            "--authentik-user",
            "nb",
            "--tier",
            "power-user",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("users.newbie.k8s_user"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&roster).unwrap(), before);
}
