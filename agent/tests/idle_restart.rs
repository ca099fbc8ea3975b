//! Idle-gated restarts (`restart: when_idle`) through the agent binary in a root booted with
//! systemd: a template instance `t3-serve@emo.service` subscribed to a file, and emo "working"
//! through a process on a terminal (`script` gives its child a pty as controlling terminal,
//! as an SSH or ttyd shell has). The agent runs inside the root (`/` is the managed root, a
//! real systemd answers); the daemon's between-runs check ([`daemon::idle_restarts_due`]) and
//! [`pending::retain`] are also called in-process on the root's directory, which sees the same
//! processes (their root is that directory). The daemon itself runs inside the root with an
//! hour's interval and an unreachable server (so it applies its cached catalog), to show that
//! a user going idle starts a run at once.

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use steward_agent::host::Host;
use steward_agent::state::{Identity, StateDir};
use steward_agent::{daemon, pending, sessions};
use steward_protocol::{
    Catalog, FileContent, FileSpec, KeyId, Mode, NodeId, Replace, Resource, ResourceSpec, Restart,
    ServiceSpec, ServiceState,
};
use support::Root;

const NODE: &str = "node1.test";
const UNIT: &str = "t3-serve@emo.service";
const ENV: &str = "/etc/t3-serve/emo.env";
const TEMPLATE: &str = "[Unit]\nDescription=t3 serve for %i\n\n[Service]\nUser=%i\n\
                        EnvironmentFile=/etc/t3-serve/%i.env\nExecStart=/bin/sleep infinity\n\n\
                        [Install]\nWantedBy=multi-user.target\n";

/// The env file and the unit subscribed to it.
fn resources(env: &str, max_defer_secs: Option<u64>) -> Vec<Resource> {
    let file = Resource::new(ResourceSpec::File(FileSpec {
        path: ENV.into(),
        owner: "root".into(),
        group: "root".into(),
        mode: Mode(0o644),
        content: FileContent::Text(env.into()),
        replace: Replace::Always,
        backup: false,
    }));
    let service = Resource::new(ResourceSpec::Service(ServiceSpec {
        name: UNIT.into(),
        enable: true,
        ensure: ServiceState::Running,
        subscribes: vec![file.id.clone()],
        restart: Restart::WhenIdle {
            user: "emo".into(),
            max_defer_secs,
        },
    }))
    .requiring(file.id.clone());
    vec![file, service]
}

/// A booted root with the agent, emo, the template and the env file's directory.
fn setup() -> (Root, u32) {
    let root = Root::booted();
    root.install_agent();
    root.run_ok(&["useradd", "-m", "-s", "/bin/bash", "emo"]);
    root.run_ok(&["mkdir", "-p", "/etc/t3-serve"]);
    root.write("/etc/systemd/system/t3-serve@.service", TEMPLATE.as_bytes());
    let uid = root.run_ok(&["id", "-u", "emo"]).trim().parse().unwrap();
    (root, uid)
}

fn agent_run(root: &Root, catalog: &Catalog, extra: &[&str]) -> serde_json::Value {
    root.run_catalog(catalog, NODE, extra)
}

/// `(status, message)` of the unit's event.
fn service_event(report: &serde_json::Value) -> (String, String) {
    let e = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["resource"] == format!("service:{UNIT}"))
        .unwrap_or_else(|| panic!("no event for {UNIT}: {report:#}"));
    (
        e["status"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn invocation(root: &Root) -> String {
    let id = root
        .run_ok(&["systemctl", "show", "-p", "InvocationID", "--value", UNIT])
        .trim()
        .to_string();
    assert!(!id.is_empty(), "{UNIT} has no invocation (not running)");
    id
}

fn records(root: &Root) -> Vec<pending::Record> {
    pending::load(&Host::new(root.dir()).unwrap()).unwrap()
}

fn is_active(root: &Root, uid: u32) -> bool {
    sessions::activity(&Host::new(root.dir()).unwrap(), uid)
        .unwrap()
        .is_active()
}

/// Polls `cond` every 50 ms for up to 20 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Gives emo a process on a terminal (as a login shell has) until [`end_session`].
fn start_session(root: &Root, uid: u32) {
    root.run_ok(&[
        "sh",
        "-c",
        "runuser -u emo -- setsid script -qfc 'sleep 600' /dev/null </dev/null >/dev/null 2>&1 &",
    ]);
    wait_for("emo's terminal process", || is_active(root, uid));
}

/// Ends the session of [`start_session`] (the unit's own process of emo, without a
/// terminal, stays: it never counted).
fn end_session(root: &Root, uid: u32) {
    let _ = root.run(&["pkill", "-KILL", "-u", "emo", "-f", "^sleep 600$"]);
    let _ = root.run(&["pkill", "-KILL", "-u", "emo", "-x", "script"]);
    wait_for("emo to be idle", || !is_active(root, uid));
}

#[test]
fn a_restart_waits_for_its_user_to_go_idle_and_happens_once() {
    let (root, uid) = setup();
    start_session(&root, uid);

    // Not running yet: started at once, although emo is active (nothing to interrupt).
    let report = agent_run(
        &root,
        &support::catalog(NODE, 1, resources("A=1\n", None)),
        &[],
    );
    assert_eq!(
        service_event(&report),
        ("changed".into(), "enabled, started".into()),
        "{report:#}"
    );
    let first = invocation(&root);
    assert!(records(&root).is_empty());

    // Noop: says it would defer, records nothing.
    let report = agent_run(
        &root,
        &support::catalog(NODE, 2, resources("A=2\n", None)),
        &["--noop"],
    );
    let (status, message) = service_event(&report);
    assert_eq!(status, "deferred", "{report:#}");
    assert!(
        message.starts_with("restart would be deferred: emo is active (")
            && message.contains(" on a terminal ("),
        "{message}"
    );
    assert!(records(&root).is_empty());
    assert_eq!(invocation(&root), first);

    // The subscribed file changes while emo works: deferred, recorded, not restarted.
    let report = agent_run(
        &root,
        &support::catalog(NODE, 3, resources("A=2\n", None)),
        &[],
    );
    let (status, message) = service_event(&report);
    assert_eq!(status, "deferred", "{report:#}");
    assert!(
        message.starts_with("restart deferred: emo is active (")
            && message.contains(" on a terminal (")
            && message.contains("retried within a minute of emo going idle"),
        "{message}"
    );
    assert_eq!(report["totals"]["deferred"], 1, "{report:#}");
    assert_eq!(report["status"], "changed", "the file changed: {report:#}");
    assert_eq!(invocation(&root), first);
    let recorded = records(&root);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(
        (recorded[0].unit.as_str(), recorded[0].user.as_str()),
        (UNIT, "emo")
    );
    let since = recorded[0].since;
    assert!(
        message.contains(&format!("since {}", pending::rfc3339(since))),
        "{message}"
    );
    let meta = std::fs::metadata(root.path(pending::PATH)).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o600, 0));

    // `status` counts and lists it.
    let status = root.run_ok(&["/usr/local/bin/steward-agent", "status"]);
    assert!(status.contains(" skipped, 1 deferred\n"), "{status}");
    assert!(
        status.contains(&format!(
            "deferred: {UNIT} (restart waits for emo to be idle, since {})",
            pending::rfc3339(since)
        )),
        "{status}"
    );

    // Nothing changed since, but the restart is still due: still deferred, same since.
    let report = agent_run(
        &root,
        &support::catalog(NODE, 4, resources("A=2\n", None)),
        &[],
    );
    assert_eq!(service_event(&report).0, "deferred", "{report:#}");
    assert_eq!(invocation(&root), first);
    assert_eq!(records(&root)[0].since, since);
    // The daemon's between-runs check: nothing can happen yet.
    assert!(daemon::idle_restarts_due(root.dir()).is_empty());

    // emo logs out: the daemon's check sees it, and the next run restarts once.
    end_session(&root, uid);
    let due = daemon::idle_restarts_due(root.dir());
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(due[0].starts_with(&format!("{UNIT} (emo, ")), "{due:?}");
    let report = agent_run(
        &root,
        &support::catalog(NODE, 5, resources("A=2\n", None)),
        &[],
    );
    let (status, message) = service_event(&report);
    assert_eq!(status, "changed", "{report:#}");
    assert_eq!(
        message,
        format!(
            "restarted (subscribed resource changed; deferred since {} while emo was active, \
             emo is idle now)",
            pending::rfc3339(since)
        )
    );
    let second = invocation(&root);
    assert_ne!(second, first);
    assert!(records(&root).is_empty());
    assert!(daemon::idle_restarts_due(root.dir()).is_empty());

    // Exactly once.
    let report = agent_run(
        &root,
        &support::catalog(NODE, 6, resources("A=2\n", None)),
        &[],
    );
    assert_eq!(service_event(&report).0, "unchanged", "{report:#}");
    assert_eq!(invocation(&root), second);
    assert!(records(&root).is_empty());
}

#[test]
fn past_max_defer_the_restart_happens_although_the_user_is_active() {
    let (root, uid) = setup();
    agent_run(
        &root,
        &support::catalog(NODE, 1, resources("A=1\n", Some(0))),
        &[],
    );
    let first = invocation(&root);
    // The unit runs as emo, without a terminal: that is not emo working.
    assert!(!is_active(&root, uid));
    start_session(&root, uid);

    let report = agent_run(
        &root,
        &support::catalog(NODE, 2, resources("A=2\n", Some(0))),
        &[],
    );
    let (status, message) = service_event(&report);
    assert_eq!(status, "changed", "{report:#}");
    assert!(
        message.starts_with("restarted although emo is active (")
            && message.contains(" on a terminal (")
            && message.ends_with("longer than max_defer 0s"),
        "{message}"
    );
    assert_ne!(invocation(&root), first);
    assert!(records(&root).is_empty());
    end_session(&root, uid);
}

#[test]
fn records_of_units_no_longer_when_idle_are_dropped() {
    let root = Root::fresh();
    let host = Host::new(root.dir()).unwrap();
    for unit in [UNIT, "t3-serve@gone.service"] {
        pending::put(
            &host,
            pending::Record {
                unit: unit.into(),
                user: "emo".into(),
                since: 1,
                reason: "1 process on a terminal (bash)".into(),
                max_defer_secs: None,
            },
        )
        .unwrap();
    }
    // Still when_idle: kept; gone from the catalog: dropped.
    let catalog = support::catalog(NODE, 1, resources("A=1\n", None));
    let dropped = pending::retain(&host, &catalog).unwrap();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].unit, "t3-serve@gone.service");
    assert_eq!(records(&root).len(), 1);

    // Now restarted immediately: dropped too.
    let mut immediate = resources("A=1\n", None);
    if let ResourceSpec::Service(s) = &mut immediate[1].spec {
        s.restart = Restart::Immediately;
    }
    let dropped = pending::retain(&host, &support::catalog(NODE, 2, immediate)).unwrap();
    assert_eq!(dropped.len(), 1);
    assert!(records(&root).is_empty());
}

/// The `run_id` of the last run the agent in the root recorded.
fn last_run_id(root: &Root) -> Option<String> {
    StateDir::open(root.path("/var/lib/steward"))
        .unwrap()
        .summary()
        .unwrap()
        .map(|s| s.run_id)
}

#[test]
fn the_daemon_runs_as_soon_as_the_user_is_idle_not_at_the_interval() {
    let (root, uid) = setup();
    start_session(&root, uid);
    agent_run(
        &root,
        &support::catalog(NODE, 1, resources("A=1\n", None)),
        &[],
    );
    let first = invocation(&root);
    let deferred = support::catalog(NODE, 2, resources("A=2\n", None));
    let report = agent_run(&root, &deferred, &[]);
    assert_eq!(service_event(&report).0, "deferred", "{report:#}");

    // An enrolled agent whose server is unreachable: it applies its cached catalog (the one
    // just deferred), runs at start and then not for an hour, and checks every second.
    let state = StateDir::open(root.path("/var/lib/steward")).unwrap();
    state
        .set_identity(&Identity {
            node: NodeId(NODE.into()),
            server_url: "https://127.0.0.1:9".into(),
            root_key_id: KeyId(support::trust()),
            approved: true,
        })
        .unwrap();
    state
        .set_cached_envelope(&support::sign(&deferred))
        .unwrap();
    root.write(
        "/etc/steward/agent.toml",
        b"interval_secs = 3600\nsplay_limit_secs = 0\nidle_check_secs = 1\n",
    );
    let before = last_run_id(&root);
    let pid = root
        .run_ok(&[
            "sh",
            "-c",
            "/usr/local/bin/steward-agent daemon </dev/null >/root/daemon.log 2>&1 & echo $!",
        ])
        .trim()
        .to_string();
    // Its first run: still deferred, emo still works.
    wait_for("the daemon's first run", || last_run_id(&root) != before);
    let after_first = last_run_id(&root);
    assert_eq!(invocation(&root), first);
    assert_eq!(records(&root).len(), 1);

    end_session(&root, uid);
    wait_for("the restart", || invocation(&root) != first);
    wait_for("the record to go", || records(&root).is_empty());
    wait_for("that run's summary", || last_run_id(&root) != after_first);
    let log = std::fs::read_to_string(root.path("/root/daemon.log")).unwrap();
    assert!(
        log.contains(&format!(
            "deferred restart can happen now: {UNIT} (emo, deferred since"
        )),
        "{log}"
    );

    // SIGTERM still stops it promptly.
    root.run_ok(&["kill", "-TERM", &pid]);
    wait_for("the daemon to exit", || {
        !root.run(&["kill", "-0", &pid]).status.success()
    });
}
