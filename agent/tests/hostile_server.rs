//! `steward-agent run` (the real binary) against hostile servers on loopback: what answers
//! `POST /v1/catalog` is not the Steward server but something that misbehaves. Each case
//! checks what the agent does with the answer, and that it falls back to its cached, still
//! valid catalog like it does for an unreachable server (THREATS R1):
//! - an endless chunked body: stopped at the catalog limit while reading (THREATS C10);
//! - a redirect to another host: never followed, so that host receives nothing (THREATS S7);
//! - an HTML page or JSON that is not an envelope with status 200: not a catalog;
//! - a TLS certificate from another CA than the configured `ca_file`: refused (E1, N).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use steward_protocol::{RunReport, RunStatus, MAX_CATALOG_BYTES};
use support::{catalog, now, sign, trust};

/// A host's state directory as enrollment leaves it (identity for `url`), optionally with a
/// cached catalog, and a scratch root to converge.
struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
}

impl Host {
    fn enrolled_with(url: &str, cached: bool, config: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let identity = serde_json::json!({
            "node": "devvm",
            "server_url": url,
            "root_key_id": trust(),
            "approved": true,
        });
        std::fs::write(state.join("identity.json"), identity.to_string()).unwrap();
        if cached {
            let serial = u64::try_from(now()).unwrap() * 1000;
            std::fs::write(
                state.join("catalog.envelope"),
                sign(&catalog("devvm", serial, Vec::new())),
            )
            .unwrap();
        }
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        Host {
            _dir: dir,
            root,
            state,
            config: config_path,
        }
    }

    fn enrolled(url: &str, cached: bool) -> Host {
        Host::enrolled_with(url, cached, "# defaults\n")
    }

    /// `steward-agent run --json`: the output and the report it printed.
    fn run(&self) -> (Output, Option<RunReport>) {
        let out = Command::new(support::agent_binary())
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["run", "--json", "--root"])
            .arg(&self.root)
            .output()
            .unwrap();
        let report = serde_json::from_slice(&out.stdout).ok();
        (out, report)
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// A loopback HTTP server answering every request with `answer(request head, stream)` on its
/// own thread; the request heads it saw are kept.
struct Hostile {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

fn hostile(answer: impl Fn(&str, &mut TcpStream) + Send + Sync + 'static) -> Hostile {
    let answer = Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = Arc::clone(&seen);
            let answer = Arc::clone(&answer);
            std::thread::spawn(move || {
                let head = read_head(&mut stream);
                seen.lock().unwrap().push(head.clone());
                answer(&head, &mut stream);
            });
        }
    });
    Hostile {
        url: format!("http://127.0.0.1:{port}"),
        heads,
    }
}

/// The request line and headers (up to the blank line).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Anything but a catalog request gets a 503 (reports stay spooled).
fn unavailable(stream: &mut TcpStream) {
    let _ = stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

fn is_catalog_request(head: &str) -> bool {
    head.starts_with("POST /v1/catalog ")
}

/// THREATS C10: `POST /v1/catalog` answered with an endless chunked body. The agent stops at
/// the catalog limit while reading (it would otherwise grow without bound until the total
/// timeout), says so, and re-applies its cached catalog.
#[test]
fn endless_catalog_body_is_cut_at_the_limit_and_the_cache_is_applied() {
    let server = hostile(|head, stream| {
        if !is_catalog_request(head) {
            return unavailable(stream);
        }
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        );
        let chunk = [b' '; 64 * 1024];
        // Until the agent hangs up.
        loop {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            if stream.write_all(&frame).is_err() {
                break;
            }
        }
    });
    let host = Host::enrolled(&server.url, true);
    let (out, report) = host.run();
    let report = report.unwrap_or_else(|| panic!("no report: {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let message = report.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("exceeds {MAX_CATALOG_BYTES} bytes"))
            && message.contains("applying the cached catalog"),
        "{message}"
    );
    assert_ne!(report.status, RunStatus::Error);
    assert!(report.catalog_serial.is_some());

    // Without a cache: the run fails, with the same reason.
    let bare = Host::enrolled(&server.url, false);
    let (out, report) = bare.run();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = report.and_then(|r| r.message).unwrap_or_default();
    assert!(
        message.contains(&format!("exceeds {MAX_CATALOG_BYTES} bytes"))
            && message.contains("no cached catalog"),
        "{message}"
    );
}

/// THREATS S7: a 307 to another host. The signed request is not re-sent there (that host
/// could replay its `x-steward-*` headers to the real server within the clock skew): the other
/// server receives no connection at all, and the agent names where the redirect pointed.
#[test]
fn redirects_of_signed_requests_are_never_followed() {
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere_port = elsewhere.local_addr().unwrap().port();
    elsewhere.set_nonblocking(true).unwrap();
    let server = hostile(move |_, stream| {
        let _ = stream.write_all(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\n\
                 Location: http://127.0.0.1:{elsewhere_port}/v1/catalog\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
    });
    let host = Host::enrolled(&server.url, true);
    let (out, report) = host.run();
    let report = report.unwrap_or_else(|| panic!("no report: {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let message = report.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "307 redirecting to host `127.0.0.1:{elsewhere_port}`"
        )) && message.contains("redirects are not followed")
            && message.contains("applying the cached catalog"),
        "{message}"
    );
    // The agent has exited: any connection it made would be waiting in the accept queue.
    match elsewhere.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the redirect target was contacted (from {peer})"),
        Err(error) => panic!("{error}"),
    }
    // The redirecting server did see the signed catalog request (the test reached it).
    let heads = server.heads.lock().unwrap();
    assert!(
        heads
            .iter()
            .any(|h| is_catalog_request(h) && h.contains("x-steward-")),
        "{heads:?}"
    );
}

/// A proxy's HTML page (or any JSON that is not an envelope) with status 200 where a catalog
/// was expected is treated like an unreachable server: the cached catalog is re-applied and
/// the exit code is that run's; the message names what came instead.
#[test]
fn html_or_garbage_with_200_falls_back_to_the_cached_catalog() {
    let html = hostile(|head, stream| {
        if !is_catalog_request(head) {
            return unavailable(stream);
        }
        let page = "<html><body>Please sign in to the proxy</body></html>";
        let _ = stream.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            )
            .as_bytes(),
        );
    });
    let host = Host::enrolled(&html.url, true);
    let (out, report) = host.run();
    let report = report.unwrap_or_else(|| panic!("no report: {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let message = report.message.clone().unwrap_or_default();
    assert!(
        message.contains("not a catalog")
            && message.contains("53 bytes")
            && message.contains("`text/html; charset=utf-8`")
            && message.contains("applying the cached catalog"),
        "{message}"
    );
    assert!(report.catalog_serial.is_some());

    let json = hostile(|head, stream| {
        if !is_catalog_request(head) {
            return unavailable(stream);
        }
        let body = r#"{"status":"ok","message":"welcome"}"#;
        let _ = stream.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    });
    let host = Host::enrolled(&json.url, true);
    let (out, report) = host.run();
    let report = report.unwrap_or_else(|| panic!("no report: {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let message = report.message.clone().unwrap_or_default();
    assert!(
        message.contains("not a catalog") && message.contains("applying the cached catalog"),
        "{message}"
    );

    // Without a cache there is nothing to fall back on: the run could not run.
    let bare = Host::enrolled(&html.url, false);
    let (out, report) = bare.run();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = report.and_then(|r| r.message).unwrap_or_default();
    assert!(
        message.contains("text/html") && message.contains("no cached catalog"),
        "{message}"
    );
}

/// Runs `openssl` with `args` in `dir`, which must succeed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// A CA (`<name>-ca.pem`, `<name>-ca.key`) in `dir`.
fn make_ca(dir: &std::path::Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
        ],
    );
}

/// THREATS E1 / N (network attacker): with `ca_file` set, the agent trusts only that CA. A
/// server whose certificate another CA signed is refused at the TLS handshake (the
/// certificate verifies against its own CA: the control).
#[test]
fn ca_file_pins_the_servers_tls_trust() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "theirs");
    make_ca(d, "ours");
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "theirs-ca.pem",
            "-CAkey",
            "theirs-ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut tls = Command::new("openssl")
        .current_dir(d)
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "server.pem", "-key", "server.key"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Bounded poll until it accepts connections.
    let mut ready = false;
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ready, "openssl s_server did not start");
    let url = format!("https://127.0.0.1:{port}");

    let config = |ca: &str| format!("ca_file = {:?}\n", d.join(ca).display().to_string());
    let pinned_elsewhere = Host::enrolled_with(&url, false, &config("ours-ca.pem"));
    let (out, report) = pinned_elsewhere.run();
    let message = report.and_then(|r| r.message).unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        message.contains("invalid peer certificate") && message.contains("UnknownIssuer"),
        "expected a certificate refusal: {message}"
    );

    // The control: the certificate is good for its own CA (so the refusal above is the pin).
    let control = Command::new("openssl")
        .current_dir(d)
        .args([
            "s_client",
            "-verify_return_error",
            "-CAfile",
            "theirs-ca.pem",
            "-connect",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&control.stdout).contains("Verify return code: 0 (ok)"),
        "{}",
        text(&control)
    );
    let _ = tls.kill();
    let _ = tls.wait();
}

/// THREATS F5: a validly signed catalog that breaks a validation rule (a server bug, or a
/// compiler that let it through) is refused, and the refusal names the resource and the rule.
#[test]
fn a_signed_invalid_catalog_is_refused_naming_the_resource_and_the_rule() {
    use steward_protocol::envelope::{canonical_bytes, sign_document, SigningKeyPair};
    use steward_protocol::{DirectorySpec, DocumentType, Mode, Resource, ResourceSpec};

    let serial = u64::try_from(now()).unwrap() * 1000;
    // The test helper refuses to sign an invalid catalog: sign a valid one, then put the
    // invalid payload in its place, signed by the same certified catalog key.
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&sign(&catalog("devvm", serial, Vec::new()))).unwrap();
    let invalid = catalog(
        "devvm",
        serial,
        vec![Resource::new(ResourceSpec::Directory(DirectorySpec {
            path: "/srv/../etc/cron.d".into(),
            owner: "root".into(),
            group: "root".into(),
            mode: Mode(0o755),
            replace: Default::default(),
        }))],
    );
    let document = sign_document(
        &SigningKeyPair::from_bytes([2; 32]),
        DocumentType::Catalog,
        &canonical_bytes(&invalid),
    );
    envelope["catalog"] = serde_json::to_value(document).unwrap();
    let body = serde_json::to_vec(&envelope).unwrap();
    let server = hostile(move |head, stream| {
        if !is_catalog_request(head) {
            return unavailable(stream);
        }
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        let _ = stream.write_all(&answer);
    });
    let host = Host::enrolled(&server.url, false);
    let (out, report) = host.run();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = report.and_then(|r| r.message).unwrap_or_default();
    assert!(
        message.contains(
            "catalog refused: catalog failed validation: resource \
             `directory:/srv/../etc/cron.d`: path \"/srv/../etc/cron.d\" must be absolute"
        ),
        "{message}"
    );
    assert!(!host.state.join("accepted.json").exists());
}
