//! Slow clients (THREATS S6): a slowloris swarm on loopback against the real `steward-server`
//! process, on the TLS and the plain listener at once, while the real `steward-agent` enrolls
//! and converges. The swarm comes from other loopback addresses (127.0.0.2 …) than the agent
//! (127.0.0.1), as an attacker's hosts would.
//!
//! What must hold:
//! - the agent enrolls and gets its catalog while the swarm holds its connections;
//! - the server closes every swarm connection itself (each is read until EOF, in a bounded
//!   poll): request line then a header now and then (header-read timeout), a partial request
//!   line then nothing (header-read timeout), headers then a partial body then nothing (body
//!   idle timeout), connect and send nothing (header-read timeout; on the TLS listener, the
//!   handshake timeout);
//! - a connection over the per-address cap is closed at once, without an answer, while those
//!   under it are served.
//!
//! The agent binary must be built (`cargo build -p steward-agent`); the test fails, never
//! skips, without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Loopback addresses the swarm comes from, 40 connections each (the per-address cap).
const SWARM_ADDRESSES: u8 = 8;
const PER_ADDRESS: usize = 40;
/// The address of the per-address cap check.
const CAP_ADDRESS: [u8; 4] = [127, 0, 0, 50];

fn agent_binary() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_steward-server"));
    let agent = server.with_file_name("steward-agent");
    assert!(
        agent.exists(),
        "{} is missing: build it with `cargo build -p steward-agent`",
        agent.display()
    );
    agent
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A small site: class `lab` (`lab-*`) makes `/srv/lab` and a `motd`.
fn write_site(dir: &Path) -> (PathBuf, PathBuf) {
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("files")).unwrap();
    std::fs::write(site.join("roster.yaml"), "users: {}\n").unwrap();
    std::fs::write(site.join("tiers.yaml"), "tiers: {}\n").unwrap();
    std::fs::write(
        site.join("site.yaml"),
        r#"classes:
  lab:
    hosts: ["lab-*"]
    bundles: [lab-files]
bundles:
  lab-files:
    - directory: { path: /srv/lab, mode: "0755" }
    - file:
        path: /srv/lab/motd
        content: "managed by steward for {{ host.name }}\n"
"#,
    )
    .unwrap();
    let vault = dir.join("vault-data.yaml");
    std::fs::write(&vault, "secret/platform:\n  k8s_users: {}\n").unwrap();
    (site, vault)
}

struct ServerChild {
    child: Child,
    config: PathBuf,
    log: PathBuf,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerChild {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_steward-server"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }
}

/// Polls (bounded) until `addr` accepts TCP connections.
async fn wait_listening(server: &mut ServerChild, port: u16) {
    for _ in 0..1200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("steward-server exited ({status}):\n{}", server.log_text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("steward-server did not listen:\n{}", server.log_text());
}

/// A TCP connection from loopback address `from` to `port`.
async fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((std::net::Ipv4Addr::from(from), 0).into())?;
    socket.connect(([127, 0, 0, 1], port).into()).await
}

fn tls_connector(cert: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What one swarm connection does after connecting.
#[derive(Debug, Clone, Copy)]
enum Slow {
    /// A request line, then a header line now and then, never the blank line.
    Dribble,
    /// Part of a request line, then nothing.
    Partial,
    /// Complete headers announcing a body, part of it, then nothing.
    StalledBody,
    /// Connects and sends nothing at all (on the TLS listener: a stalled handshake).
    Silent,
}

/// How a swarm connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The server closed it (EOF or reset); `held`: only after it had been held open for at
    /// least one poll (a timeout closed it, not a cap at accept).
    ByServer { held: bool },
    /// Still open after the poll's bound.
    StillOpen,
    /// Could not connect or complete the TLS handshake.
    NoConnection(String),
}

/// Plays `slow` on `io` until the server closes the connection, polling (bounded) with short
/// reads between the dribbled lines.
async fn play<I: AsyncRead + AsyncWrite + Unpin>(mut io: I, slow: Slow) -> Ended {
    let opening: &[u8] = match slow {
        Slow::Dribble => b"POST /v1/enroll HTTP/1.1\r\nHost: steward\r\n",
        Slow::Partial => b"GET /heal",
        Slow::Silent => b"",
        Slow::StalledBody => {
            b"POST /v1/enroll HTTP/1.1\r\nHost: steward\r\nContent-Type: application/json\r\n\
              Content-Length: 4000\r\n\r\n{\"hostname\":"
        }
    };
    if io.write_all(opening).await.is_err() || io.flush().await.is_err() {
        return Ended::ByServer { held: false };
    }
    let mut held = false;
    let mut buf = [0u8; 4096];
    // At most 600 polls of 250 ms: far beyond the configured timeouts (5 s), a bound on the
    // loop, not a measurement.
    for _ in 0..600 {
        match tokio::time::timeout(Duration::from_millis(250), io.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Ended::ByServer { held },
            // An answer (a 4xx for the stalled body): keep reading until the close.
            Ok(Ok(_)) => {}
            Err(_) => {
                held = true;
                if matches!(slow, Slow::Dribble) {
                    let _ = io.write_all(b"X-Slow: 1\r\n").await;
                    let _ = io.flush().await;
                }
            }
        }
    }
    Ended::StillOpen
}

/// One plain or TLS swarm connection from `from`: its end.
async fn one_slow_connection(
    from: [u8; 4],
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    slow: Slow,
) -> Ended {
    let stream = match connect_from(from, port).await {
        Ok(stream) => stream,
        Err(error) => return Ended::NoConnection(error.to_string()),
    };
    match tls {
        None => play(stream, slow).await,
        Some(_) if matches!(slow, Slow::Silent) => play(stream, slow).await,
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            match connector.connect(name, stream).await {
                Ok(stream) => play(stream, slow).await,
                // Closed during the handshake: a cap (the previous connection's place not
                // yet freed), or a failure.
                Err(error) => Ended::NoConnection(format!("tls: {error}")),
            }
        }
    }
}

/// A complete `GET /healthz` on `stream`: whether a `200` came back (false: closed without
/// an answer).
async fn healthz(stream: &mut TcpStream) -> bool {
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: steward\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_swarm_does_not_block_agents() {
    let agent_bin = agent_binary();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (site, vault) = write_site(d);
    let tls_port = free_port();
    let plain_port = free_port();
    let data_dir = d.join("server-data");
    let admin_token = hex::encode(Sha256::digest(b"slow-clients-admin"));
    let config = d.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{tls_port}\"\nplain_listen = \"127.0.0.1:{plain_port}\"\n\
             data_dir = {:?}\nsite = {:?}\npublic_url = \"https://127.0.0.1:{tls_port}\"\n\
             vault_data_file = {:?}\n[admin]\ntoken_sha256 = {:?}\n\
             [enroll]\nper_address_per_minute = 1000\n\
             [connections]\nheader_read_timeout = \"5s\"\nbody_idle_timeout = \"5s\"\n\
             tls_handshake_timeout = \"5s\"\n\
             max_connections = 1000\nmax_connections_per_address = {PER_ADDRESS}\n",
            data_dir.display().to_string(),
            site.display().to_string(),
            vault.display().to_string(),
            hex::encode(Sha256::digest(admin_token.as_bytes())),
        ),
    )
    .unwrap();
    let log = d.join("server.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_steward-server"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut server = ServerChild { child, config, log };
    wait_listening(&mut server, tls_port).await;
    wait_listening(&mut server, plain_port).await;
    let connector = tls_connector(&data_dir.join("tls.crt"));

    // The swarm: every slot reconnects as soon as the server closes it, until told to stop,
    // so the server is under the same pressure during the agent's whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut slots = tokio::task::JoinSet::new();
    for a in 0..SWARM_ADDRESSES {
        let from = [127, 0, 0, 2 + a];
        let tls = (a % 2 == 0).then(|| connector.clone());
        let port = if tls.is_some() { tls_port } else { plain_port };
        for i in 0..PER_ADDRESS {
            let slow = [
                Slow::Dribble,
                Slow::Partial,
                Slow::StalledBody,
                Slow::Silent,
            ][i % 4];
            let (stop, opened, tls) = (Arc::clone(&stop), Arc::clone(&opened), tls.clone());
            slots.spawn(async move {
                // Connections held open and then closed by the server.
                let mut closed_after_holding = 0usize;
                loop {
                    opened.fetch_add(1, Ordering::Relaxed);
                    match one_slow_connection(from, port, tls.clone(), slow).await {
                        Ended::ByServer { held } => closed_after_holding += usize::from(held),
                        // A reconnection can race the server freeing the place of the
                        // connection it just closed; the first one of each slot cannot.
                        Ended::NoConnection(error) if closed_after_holding > 0 => {
                            let _ = error;
                        }
                        Ended::NoConnection(error) => {
                            return Err(format!("{from:?} {slow:?}: {error}"))
                        }
                        Ended::StillOpen => return Err(format!("{from:?} {slow:?} held open")),
                    }
                    if stop.load(Ordering::Relaxed) && closed_after_holding > 0 {
                        return Ok(closed_after_holding);
                    }
                }
            });
        }
    }
    let slot_count = usize::from(SWARM_ADDRESSES) * PER_ADDRESS;
    // Bounded poll until every slot has connected at least once.
    for _ in 0..1200 {
        if opened.load(Ordering::Relaxed) >= slot_count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened.load(Ordering::Relaxed) >= slot_count);

    // The per-address cap, from an address of its own: PER_ADDRESS connections that were
    // answered are held (idle keep-alives); one more is closed at once, without an answer.
    let mut held = Vec::new();
    for _ in 0..PER_ADDRESS {
        let mut stream = connect_from(CAP_ADDRESS, plain_port).await.unwrap();
        assert!(healthz(&mut stream).await, "{}", server.log_text());
        held.push(stream);
    }
    let mut over = connect_from(CAP_ADDRESS, plain_port).await.unwrap();
    assert!(
        !healthz(&mut over).await,
        "a connection over the per-address cap was served"
    );
    drop(held);

    // The real agent, from 127.0.0.1, while the swarm goes on.
    let out = server.cli(&[
        "token",
        "create",
        "--auto-approve",
        "--class",
        "lab",
        "--hostname",
        "lab-*",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let join = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("steward:v1:"))
        .expect("a join string")
        .to_owned();
    let root = d.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "lab-1\n").unwrap();
    let agent_config = d.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "join = {join:?}\nca_file = {:?}\nstate_dir = {:?}\nsplay_limit_secs = 0\n",
            data_dir.join("tls.crt").display().to_string(),
            d.join("agent-state").display().to_string(),
        ),
    )
    .unwrap();
    let agent = |args: &[&str]| {
        let mut cmd = Command::new(&agent_bin);
        cmd.arg("--config").arg(&agent_config).args(args);
        cmd
    };
    let root_arg = root.to_str().unwrap().to_owned();
    let enroll = agent(&["enroll", "--root", &root_arg]);
    let out = tokio::task::spawn_blocking(move || {
        let mut enroll = enroll;
        enroll.output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "enroll: {}", text(&out));
    let run = agent(&["run", "--json", "--root", &root_arg]);
    let out = tokio::task::spawn_blocking(move || {
        let mut run = run;
        run.output().unwrap()
    })
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(2), "run: {}", text(&out));
    assert!(report["message"].is_null(), "{report}");
    assert_eq!(
        std::fs::read_to_string(root.join("srv/lab/motd")).unwrap(),
        "managed by steward for lab-1\n"
    );

    // Every swarm connection is closed by the server: each slot saw at least one that was
    // held open and then closed by the server, and none stayed open.
    stop.store(true, Ordering::Relaxed);
    let mut closed = 0;
    while let Some(slot) = slots.join_next().await {
        match slot.unwrap() {
            Ok(count) => closed += count,
            Err(problem) => panic!("{problem}\n{}", server.log_text()),
        }
    }
    assert!(closed >= slot_count, "{closed} closed by the server");
}
