//! The web UI in a real browser: Debian's headless Chromium driven through chromedriver (W3C
//! WebDriver over HTTP on loopback), against the real `steward-server` with runs reported by a
//! real `steward-agent` daemon. `.ci/run` installs `chromium` and `chromium-driver`; without
//! them this test fails (it never skips).
//!
//! It saves a PNG of each main page to `<target>/ui-screenshots/` as an artefact.
//!
//! The WebDriver client is the dozen commands the test needs, over the suite's blocking
//! reqwest, rather than a WebDriver crate and an async runtime for one test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use steward_tests::{free_port, hash_password, sandbox_root, AgentProcess, LabSite, ServerProcess};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const PASSWORD: &str = "browser test admin password";

/// A chromedriver process and one browser session.
struct Browser {
    base: String,
    http: reqwest::blocking::Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install Debian's `chromium` and `chromium-driver` \
                 (`apt-get install chromium chromium-driver`, as .ci/run does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .no_proxy()
            .build()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{root}/status"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--ignore-certificate-errors",
            "--window-size=1440,1000",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let answer: Value = http
            .post(format!("{root}/session"))
            .json(&json!({
                "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "acceptInsecureCerts": true,
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                }}
            }))
            .send()
            .expect("creating a browser session")
            .json()
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_owned();
        Browser {
            base: format!("{root}/session/{session}"),
            http,
            driver,
            _profile: profile,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|error| panic!("webdriver {path}: {error}"))
    }

    /// A command; `Err` with WebDriver's error (e.g. a stale element during a navigation).
    fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().unwrap().json().unwrap();
        if answer["value"].get("error").is_some() {
            return Err(answer["value"].clone());
        }
        Ok(answer["value"].clone())
    }

    fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[ELEMENT_KEY].as_str().unwrap().to_owned())
        .collect()
    }

    fn find(&self, css: &str) -> String {
        self.find_all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {css} on {}:\n{}", self.url(), self.text("body")))
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The text of the first `css` element; empty when there is none (or the page changed
    /// under the lookup).
    fn text(&self, css: &str) -> String {
        let found = self.try_call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let Some(element) = found.ok().and_then(|list| {
            list.as_array()
                .and_then(|l| l.first())
                .and_then(|e| e[ELEMENT_KEY].as_str())
                .map(str::to_owned)
        }) else {
            return String::new();
        };
        self.try_call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
    }

    fn screenshot(&self, path: &Path) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Waits (without reloading) until `check` holds, at most `secs`; returns whether it did.
    fn wait_until(&self, secs: u64, check: impl Fn(&Browser) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// Reloads `url` until `check` holds (at most `secs`); returns whether it held.
    fn reload_until(&self, url: &str, secs: u64, check: impl Fn(&Browser) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.goto(url);
            if check(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `<target>/ui-screenshots/` (next to `debug/`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/browser-<hash>
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The lab site ([`LabSite`]) with two people, a file for each, and a file whose owner does
/// not exist on the host (it fails on every run). The `lab` class does not manage accounts.
fn lab_site(dir: &Path) -> (PathBuf, PathBuf) {
    LabSite {
        roster: "users:\n  emo: { authentik_user: emil.barzin, k8s_user: emo, tier: dev }\n  \
                 ana: { authentik_user: ana.s, k8s_user: ana, tier: dev }\n",
        tiers: "tiers:\n  dev:\n    description: developers\n",
        k8s_users: "{ emo: { role: dev }, ana: { role: dev } }",
        more_files: r#"    - file: { path: /srv/lab/notes-emo, content: "for emo\n" }
    - file: { path: /srv/lab/notes-ana, content: "for ana\n" }
    - file:
        path: /srv/lab/owned-by-ghost
        owner: ghost
        content: "nobody owns this\n"
"#,
        token: "lab-token-value-1234",
    }
    .write(dir)
}

/// A stand-in for an SSO proxy (Authentik's forward auth): plain HTTP on loopback, one request
/// per connection; it drops any identity header the browser sent, adds its own for `user` in
/// `groups`, and forwards to the server's plain listener. Returns its port.
fn spawn_sso_proxy(upstream: u16, user: &'static str, groups: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = proxy_one(client, upstream, user, groups);
            });
        }
    });
    port
}

fn proxy_one(
    mut client: std::net::TcpStream,
    upstream: u16,
    user: &str,
    groups: &str,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = client.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut body = buffer[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let mut request = format!("{}\r\n", lines.next().unwrap_or_default());
    let mut length = 0;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("x-authentik-") || lower.starts_with("connection:") {
            continue;
        }
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str(&format!(
        "X-authentik-username: {user}\r\nX-authentik-groups: {groups}\r\nConnection: close\r\n\r\n"
    ));
    while body.len() < length {
        let read = client.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(request.as_bytes())?;
    server.write_all(&body)?;
    std::io::copy(&mut server, &mut client)?;
    Ok(())
}

fn rows(browser: &Browser, css: &str) -> usize {
    browser.find_all(css).len()
}

#[test]
fn an_admin_signs_in_approves_a_node_runs_it_and_reads_a_failure_in_chromium() {
    let t = tempfile::tempdir().unwrap();
    let (site, vault) = lab_site(t.path());
    let mut server = ServerProcess::start(t.path(), &site, &vault);
    // Both sign-in modes: local admin login (the CLI makes the hash), and forward auth from an
    // SSO proxy on loopback in front of the plain listener (break-glass keeps local login on).
    let plain_port = free_port();
    let config = std::fs::read_to_string(&server.config).unwrap();
    let config = format!(
        "plain_listen = \"127.0.0.1:{plain_port}\"\n{config}[ui]\nadmin_password_hash = {:?}\n\
         trusted_proxies = [\"127.0.0.1/32\"]\nbreak_glass_local_login = true\n",
        hash_password(PASSWORD)
    );
    std::fs::write(&server.config, config).unwrap();
    server.restart();

    // A host that waits for an admin.
    let join = server.join_string(&["--hostname", "lab-*", "--class", "lab"]);
    let root = sandbox_root(t.path());
    let agent = AgentProcess::new(t.path(), &join, &server, &root);
    let mut daemon = agent.spawn_daemon(&t.path().join("agent.log"));
    let agent_log = || std::fs::read_to_string(t.path().join("agent.log")).unwrap_or_default();

    let shots = screenshot_dir();
    let browser = Browser::start();
    let ui = |path: &str| format!("{}{path}", server.url);

    // Sign in: an anonymous page view shows the login form, which returns to that page.
    browser.goto(&ui("/ui/"));
    assert!(browser.text("body").contains("Admin password"));
    browser.screenshot(&shots.join("login.png"));
    browser.type_into("#password", "not the password");
    browser.click("#sign-in");
    assert!(
        browser.wait_until(10, |b| b.text(".notice-error").contains("Wrong password")),
        "{}",
        browser.text("body")
    );
    browser.type_into("#password", PASSWORD);
    browser.click("#sign-in");
    assert!(
        browser.wait_until(10, |b| b.url().ends_with("/ui/")),
        "after login: {} {}",
        browser.url(),
        browser.text("body")
    );
    assert!(browser.text("h1").contains("Overview"));

    // The pending node shows up in Enrollment; approve it there.
    assert!(
        browser.reload_until(&ui("/ui/enrollment"), 60, |b| b
            .text("#pending")
            .contains("lab-1")),
        "lab-1 never waited for approval: {}",
        agent_log()
    );
    browser.screenshot(&shots.join("enrollment.png"));
    browser.click("#pending button.approve");
    assert!(browser.wait_until(10, |b| b.text(".notice").contains("Node approved")));
    assert!(!browser.text("#pending").contains("lab-1"));

    // Its first run arrives by itself once approved.
    let node_page = ui("/ui/nodes/lab-1");
    assert!(
        browser.reload_until(&node_page, 90, |b| rows(b, "#runs tbody tr") >= 1),
        "no run after approval: {}",
        agent_log()
    );
    let before = rows(&browser, "#runs tbody tr");

    // "Run now" wakes the daemon through its long-poll; the new run appears on the page.
    browser.click("#run-now");
    assert!(browser.wait_until(10, |b| b.text(".notice").contains("Run requested")));
    assert!(
        browser.reload_until(&node_page, 60, |b| rows(b, "#runs tbody tr") > before),
        "run now did not produce a run: {}",
        agent_log()
    );

    // A site change makes a second catalog serial; compare the two on the node page.
    let site_yaml = std::fs::read_to_string(site.join("site.yaml")).unwrap();
    std::fs::write(
        site.join("site.yaml"),
        site_yaml.replace(
            "    - file:\n        path: /srv/lab/motd",
            "    - file: { path: /srv/lab/added, content: \"new\\n\" }\n    - file:\n        path: /srv/lab/motd",
        ),
    )
    .unwrap();
    assert!(
        browser.reload_until(&node_page, 60, |b| b
            .find_all("#catalogs select[name=to] option")
            .len()
            >= 2),
        "no second serial: {}",
        agent_log()
    );
    browser.click("#compare");
    assert!(browser.wait_until(10, |b| b.url().contains("from=")));
    let diff = browser.text("#diff");
    assert!(diff.contains("file:/srv/lab/added"), "{diff}");
    assert!(
        !diff.contains("lab-token-value-1234"),
        "secrets never shown"
    );
    browser.screenshot(&shots.join("node.png"));

    // Open a failed run from the runs list and read the failing resource's message.
    browser.goto(&ui("/ui/runs?node=lab-1&status=failed"));
    browser.screenshot(&shots.join("runs.png"));
    browser.click("#runs tbody tr td a .badge-failed");
    assert!(browser.wait_until(10, |b| b.url().contains("/ui/runs/")));
    let failed_row = browser.text("tr.row-failed");
    assert!(
        failed_row.contains("file:/srv/lab/owned-by-ghost"),
        "{failed_row}"
    );
    let message = browser.text("tr.row-failed .event-message");
    assert!(!message.is_empty(), "the failure has a message");
    // It is the message the agent reported, as the API has it.
    let run_id = browser.url().rsplit('/').next().unwrap().to_owned();
    let run = server.admin_get(&format!("/api/v1/runs/{run_id}"));
    let reported = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status"] == "failed")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(message.trim(), reported.trim());
    browser.screenshot(&shots.join("run-failed.png"));

    // Forward auth: a person outside the admin group sees only their own page, with only their
    // own resources; an admin of the group uses the admin pages and their forms.
    let user_proxy = spawn_sso_proxy(plain_port, "emil.barzin", "staff");
    let me = format!("http://127.0.0.1:{user_proxy}/ui/me");
    assert!(
        browser.reload_until(&me, 30, |b| b.text("body").contains("notes-emo")),
        "{}",
        browser.text("body")
    );
    let body = browser.text("body");
    assert!(body.contains("emil.barzin"), "{body}");
    assert!(
        !body.contains("notes-ana"),
        "only the caller's resources: {body}"
    );
    assert!(!body.contains("Enrollment"), "no admin navigation: {body}");
    browser.screenshot(&shots.join("me.png"));
    browser.goto(&format!("http://127.0.0.1:{user_proxy}/ui/nodes/lab-1"));
    assert!(browser.text("body").contains("403"));
    let admin_proxy = spawn_sso_proxy(plain_port, "alice", "staff|steward-admins");
    browser.goto(&format!("http://127.0.0.1:{admin_proxy}/ui/nodes/lab-1"));
    assert!(browser.text(".who").contains("alice"));
    browser.click("#run-now");
    assert!(browser.wait_until(10, |b| b.text(".notice").contains("Run requested")));
    let audit = server.admin_get("/api/v1/audit");
    assert_eq!(audit[0]["actor"], "sso:alice", "{audit}");

    // The other main pages render, with what happened.
    for (path, file, expect) in [
        ("/ui/", "overview.png", "lab-1"),
        ("/ui/nodes", "nodes.png", "lab-1"),
        ("/ui/failures", "failures.png", "owned-by-ghost"),
        ("/ui/roster", "roster.png", "emil.barzin"),
        ("/ui/audit", "audit.png", "node.run_now"),
    ] {
        browser.goto(&ui(path));
        let body = browser.text("body");
        assert!(body.contains(expect), "{path}: {body}");
        assert!(
            !body.contains("lab-token-value-1234"),
            "{path} shows a secret"
        );
        browser.screenshot(&shots.join(file));
    }

    let _ = daemon.kill();
    let _ = daemon.wait();
}
