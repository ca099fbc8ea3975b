//! Operations: compile back-pressure (THREATS R15: 429 with Retry-After, then success), the
//! plain HTTP loopback listener, refusal of a plain listener other hosts could reach, graceful
//! shutdown of the real `steward-server serve` binary on SIGTERM with a long-poll in flight, and
//! scheduled retention of run reports.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use steward_protocol::{EnrollmentStatus, KeyId, NodeId, Timestamp};
use steward_server::config::Config;
use steward_server::db::keys::{self, NewNodeKey};
use steward_server::db::nodes::{self, NewNode};
use steward_server::db::{runs, Db};
use steward_server::{serve, Listeners, PlainListener, Server};
use support::server::{copy_dir, example_site, now, Agent, Options, TestServer};

/// The `Retry-After` header as whole seconds; panics if absent or not an integer.
fn retry_after_secs(response: &reqwest::Response) -> u64 {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap();
    value
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {value:?} is not integer seconds"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_compiles_answer_429_with_retry_after_and_a_retry_succeeds() {
    // One compile at a time; many hosts asking for their first catalog at once.
    let server = Arc::new(
        TestServer::start_with(Options {
            extra_toml: "max_concurrent_compiles = 1\n[enroll]\nper_address_per_minute = 1000\n"
                .into(),
            ..Options::default()
        })
        .await,
    );
    let mut refused: Vec<(Arc<Agent>, u64)> = Vec::new();
    let mut served = 0;
    // A round is 16 concurrent first compiles; more rounds only if none collided (they do in
    // practice: one compile takes far longer than the requests take to arrive).
    for round in 0..4 {
        let mut agents = Vec::new();
        for i in 0..16 {
            let agent = Arc::new(Agent::new(&format!("ws-r{round}-{i:02}")));
            server.enroll_approved(&agent).await;
            agents.push(agent);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for agent in &agents {
            let (server, agent) = (Arc::clone(&server), Arc::clone(agent));
            tasks.spawn(async move {
                let response = agent.catalog(&server).await;
                let status = response.status();
                let retry_after =
                    (status == StatusCode::TOO_MANY_REQUESTS).then(|| retry_after_secs(&response));
                let body = response.bytes().await.unwrap();
                (agent, status, retry_after, body)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (agent, status, retry_after, body) = joined.unwrap();
            match status {
                StatusCode::OK => served += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    let secs = retry_after.unwrap();
                    assert!((1..=60).contains(&secs), "Retry-After {secs}");
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
                    refused.push((agent, secs));
                }
                other => panic!(
                    "a first catalog got {other}: {}",
                    String::from_utf8_lossy(&body)
                ),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(served >= 1, "the compile that held the slot was served");
    assert!(
        !refused.is_empty(),
        "with one compile slot, concurrent first compiles must get 429"
    );
    // The refused hosts come back after Retry-After, one after the other: each is served.
    let wait = refused.iter().map(|(_, secs)| *secs).max().unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    for (agent, _) in &refused {
        let catalog = agent.fetch_verified(&server, None).await;
        assert!(catalog.is_ok(), "{}: {:?}", agent.hostname, catalog.err());
    }
}

/// A resolved config for an in-process server on a copy of the example site.
fn test_config(dir: &Path, extra: &str) -> steward_server::config::ServerConfig {
    let site = dir.join("site");
    copy_dir(&example_site(), &site);
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nsite = {:?}\nvault_data_file = {:?}\n{extra}",
        dir.join("data").display().to_string(),
        site.display().to_string(),
        site.join("vault-data.yaml").display().to_string(),
    );
    Config::parse(&toml).unwrap().resolve().unwrap()
}

#[tokio::test]
async fn plain_listener_on_loopback_serves_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), "");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::build(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        server,
        Listeners {
            tls: None,
            plain: Some(PlainListener::Tcp(listener)),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    // Deny by default holds on the plain listener too.
    let response = client
        .post(format!("http://{addr}/v1/catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .expect("serve stopped cleanly");
}

#[test]
fn plain_listener_on_a_non_loopback_address_is_refused() {
    for address in ["0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"] {
        let toml = format!("plain_listen = {address:?}\nvault_data_file = \"/x\"\n");
        let error = Config::parse(&toml).unwrap().resolve().unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("plain_listen") && message.contains("loopback"),
            "{message}"
        );
    }
    // The binary refuses to start with it (from the file or the flag), before binding anything.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nplain_listen = \"0.0.0.0:8080\"\ndata_dir = {:?}\n\
             vault_data_file = \"/x\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_steward-server"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing was created");
    fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nvault_data_file = \"/x\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_steward-server"))
        .args(["serve", "--plain-listen", "192.168.1.10:8080", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

/// Enrolls and approves `agent` directly in the database (the server is not running).
async fn seed_agent(db: &Db, agent: &Agent) {
    let node = NodeId(agent.hostname.clone());
    let at = now();
    nodes::insert_pending(
        db,
        &NewNode {
            name: node.clone(),
            class: Some("workstation".into()),
            machine_id: Some(agent.machine_id.clone()),
        },
        at,
    )
    .await
    .unwrap();
    let public = agent.signing.public_bytes();
    keys::add(
        db,
        &node,
        &NewNodeKey {
            key_id: KeyId::of_public_key_bytes(&public),
            signing_key: STANDARD.encode(public),
            encryption_key: STANDARD.encode(agent.encryption.public_bytes()),
            machine_id: Some(agent.machine_id.clone()),
        },
        at,
    )
    .await
    .unwrap();
    nodes::set_status(db, &node, EnrollmentStatus::Approved, at)
        .await
        .unwrap();
}

/// The `steward-server serve` binary, killed when dropped.
struct ServeProcess {
    child: Child,
    log: PathBuf,
}

impl ServeProcess {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exits_0_on_sigterm_and_a_long_poll_in_flight_returns() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    copy_dir(&example_site(), &site);
    let data = dir.path().join("data");
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(0o700).create(&data).unwrap();
    }
    let agent = Agent::new("ws-sigterm");
    let db = Db::open(&data.join("steward.db")).await.unwrap();
    seed_agent(&db, &agent).await;
    db.close().await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("server.toml");
    fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nplain_listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\
             site = {:?}\nvault_data_file = {:?}\n[catalog]\nwait_timeout = \"55s\"\n",
            data.display().to_string(),
            site.display().to_string(),
            site.join("vault-data.yaml").display().to_string(),
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let child = Command::new(env!("CARGO_BIN_EXE_steward-server"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut process = ServeProcess { child, log };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await {
            assert_eq!(response.status(), StatusCode::OK);
            break;
        }
        assert!(
            process.child.try_wait().unwrap().is_none(),
            "serve exited early:\n{}",
            process.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not answer /healthz:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A long-poll (the node has no serial yet, so it waits up to 50 s).
    let path = "/v1/wait?timeout=50";
    let mut request = client.get(format!("{base}{path}"));
    for (name, value) in agent.sign("GET", path, b"") {
        request = request.header(name, value);
    }
    let poll = tokio::spawn(async move {
        let response = request.send().await.unwrap();
        let status = response.status();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    });
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert!(!poll.is_finished(), "the long-poll is in flight");

    let signalled = Instant::now();
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(process.child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long-poll returns at shutdown")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reason"], "timeout", "{body}");
    let exit = loop {
        if let Some(exit) = process.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "serve still running 5 s after SIGTERM:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0), "{}", process.log());
    assert!(process.log().contains("shutting down"), "{}", process.log());
}

/// How many of these runs are stored.
async fn count_runs(db: &Db, uuids: &[String]) -> i64 {
    let mut found = 0;
    for uuid in uuids {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE uuid = ?1")
            .bind(uuid)
            .fetch_one(db.pool())
            .await
            .unwrap();
        found += n;
    }
    found
}

#[tokio::test]
async fn scheduled_retention_prunes_old_runs_and_keeps_new_ones() {
    let server = TestServer::start_with(Options {
        extra_toml: "[enroll]\nper_address_per_minute = 1000\n\
                     [retention]\nruns_max_age = \"1d\"\ninterval = \"100ms\"\nbatch_size = 2\n"
            .into(),
        ..Options::default()
    })
    .await;
    let agent = Agent::new("ws-retention");
    seed_agent(&server.state.db, &agent).await;
    let db = &server.state.db;
    let old_received = Timestamp(now().0 - 3 * 86_400);
    let mut old = Vec::new();
    for _ in 0..5 {
        let mut report = agent.report(None);
        report.started_at = old_received;
        report.finished_at = old_received;
        runs::insert_report(db, &report, old_received)
            .await
            .unwrap();
        old.push(report.run_id.0);
    }
    let mut new = Vec::new();
    for _ in 0..3 {
        let report = agent.report(None);
        runs::insert_report(db, &report, now()).await.unwrap();
        new.push(report.run_id.0);
    }
    let started = Instant::now();
    while count_runs(db, &old).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the retention task did not prune the old runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count_runs(db, &new).await, 3, "new runs are kept");
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM resource_events e JOIN runs r ON r.id = e.run_id")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM resource_events WHERE run_id NOT IN (SELECT id FROM runs)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((events, orphans), (3, 0), "the old runs' events went too");
    let (status, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    assert!(audit.to_string().contains("retention.prune"), "{audit}");
    // Later passes find nothing more and keep the new runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count_runs(db, &new).await, 3);
}
