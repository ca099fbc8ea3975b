//! The web UI through the real HTTP server (TLS on `127.0.0.1:0`, a real SQLite file): sign-in
//! modes, sessions, CSRF and Origin checks, security headers, escaping (THREATS W1–W6), and the
//! pages with real data from simulated agents. What needs a browser is in `tests/browser.rs`.

mod support;

use std::sync::OnceLock;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use steward_protocol::{ResourceEvent, ResourceId, ResourceStatus, RunStatus, Totals};
use steward_server::http::{route_table, PUBLIC_ROUTES};
use support::server::{now, Agent, Options, TestServer};

const PASSWORD: &str = "correct horse battery staple";

/// One hash for the whole binary (argon2 is deliberately slow).
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| steward_server::ui::auth::hash_password(PASSWORD).unwrap())
}

async fn ui_server(extra_ui: &str) -> TestServer {
    TestServer::start_with(Options {
        extra_toml: format!(
            "[enroll]\nper_address_per_minute = 1000\n[ui]\nadmin_password_hash = {:?}\n{extra_ui}\n",
            password_hash()
        ),
        ..Options::default()
    })
    .await
}

/// A page as fetched: status, headers, body.
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Fetched {
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The value of the first hidden input `name`.
    fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].to_owned())
    }
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// A browser-like client: no redirects followed, cookies kept by hand.
struct Browser<'a> {
    server: &'a TestServer,
    client: reqwest::Client,
    cookies: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    fn new(server: &'a TestServer) -> Browser<'a> {
        let cert = std::fs::read(server.data_dir.join("tls.crt")).unwrap();
        Browser {
            server,
            client: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            cookies: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, fetched: &Fetched) {
        for value in fetched.headers.get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (name, rest) = text.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap().to_owned();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value));
            }
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Fetched {
        let mut request = request;
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let fetched = Fetched {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        self.keep_cookies(&fetched);
        fetched
    }

    async fn get(&mut self, path: &str) -> Fetched {
        let request = self.client.get(format!("{}{path}", self.server.url));
        self.send(request).await
    }

    /// A form `POST` with `Origin` (when given).
    async fn post(&mut self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Fetched {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = self
            .client
            .post(format!("{}{path}", self.server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        self.send(request).await
    }

    /// Logs in with the local password; returns the login answer.
    async fn login(&mut self, password: &str, next: &str) -> Fetched {
        let form = self.get(&format!("/ui/login?next={}", encode(next))).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let token = form.hidden("login_csrf").expect("login form token");
        let next_field = form.hidden("next").unwrap();
        let origin = self.server.url.clone();
        self.post(
            "/ui/login",
            &[
                ("login_csrf", &token),
                ("next", &next_field),
                ("password", password),
            ],
            Some(&origin),
        )
        .await
    }

    async fn logged_in(server: &'a TestServer) -> Browser<'a> {
        let mut browser = Browser::new(server);
        let answer = browser.login(PASSWORD, "/ui/").await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        browser
    }

    /// The CSRF token of the signed-in user (from a page's forms).
    async fn csrf(&mut self) -> String {
        let page = self.get("/ui/enrollment").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.hidden("csrf").expect("a csrf field")
    }

    fn session(&self) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k == "__Host-steward-session")
            .map(|(_, v)| v.clone())
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "devvm")
        .replace("{token_id}", "0a1b2c3d4e5f")
        .replace("{run_id}", "00000000-0000-4000-8000-000000000000")
}

/// Rows of the tables admin actions change (sessions are sign-in bookkeeping, left out).
async fn state_snapshot(server: &TestServer) -> Vec<String> {
    let mut rows = Vec::new();
    for query in [
        "SELECT name || ' ' || status || ' ' || coalesce(run_now_requested_at, '-') FROM nodes ORDER BY name",
        "SELECT key_id || ' ' || coalesce(revoked_at, '-') FROM node_keys ORDER BY id",
        "SELECT token_id || ' ' || coalesce(revoked_at, '-') || ' ' || uses_done FROM bootstrap_tokens ORDER BY token_id",
        "SELECT uuid FROM runs ORDER BY id",
        "SELECT id || ' ' || action FROM audit_log ORDER BY id",
    ] {
        let found: Vec<String> = sqlx::query_scalar(query)
            .fetch_all(server.state.db.pool())
            .await
            .unwrap();
        rows.extend(found.into_iter().map(|row| format!("{query}: {row}")));
    }
    rows
}

async fn report_with_events(server: &TestServer, agent: &Agent, events: Vec<ResourceEvent>) {
    let mut report = agent.report(None);
    report.status = if events.iter().any(|e| e.status == ResourceStatus::Failed) {
        RunStatus::Failed
    } else if events.iter().any(|e| e.status == ResourceStatus::Changed) {
        RunStatus::Changed
    } else {
        RunStatus::Unchanged
    };
    report.totals = Totals::of(&events);
    report.events = events;
    let response = agent.send_report(server, &report).await;
    assert!(response.status().is_success(), "{}", response.status());
}

fn event(resource: ResourceId, status: ResourceStatus, message: Option<&str>) -> ResourceEvent {
    ResourceEvent {
        resource,
        status,
        message: message.map(str::to_owned),
        diff: None,
        duration_ms: 4,
        corrective: false,
        drift: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Route audit (W2), headers (W3)

#[tokio::test]
async fn get_requests_never_change_state_and_every_ui_page_has_the_csp() {
    let server = ui_server("").await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    report_with_events(
        &server,
        &agent,
        vec![event(
            ResourceId::new("package", "git"),
            ResourceStatus::Changed,
            None,
        )],
    )
    .await;
    let mut browser = Browser::logged_in(&server).await;
    let before = state_snapshot(&server).await;
    let ui_routes: Vec<_> = route_table()
        .into_iter()
        .filter(|r| r.path.starts_with("/ui/"))
        .collect();
    assert!(ui_routes.len() >= 15, "{ui_routes:?}");
    for route in ui_routes.iter().filter(|r| r.method == "GET") {
        let page = browser.get(&concrete(route.path)).await;
        assert!(
            page.status.is_success() || page.status == StatusCode::NOT_FOUND,
            "GET {}: {}",
            route.path,
            page.status
        );
        let csp = page
            .headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("no CSP on {}", route.path))
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert_eq!(page.headers["referrer-policy"], "same-origin");
        if route.path != "/ui/static/style.css" {
            assert!(page.body.contains("<!doctype html>"), "{}", route.path);
            assert!(
                !page.body.contains("<script"),
                "{} has a script",
                route.path
            );
        }
    }
    assert_eq!(
        state_snapshot(&server).await,
        before,
        "a GET of the UI changed state"
    );
    // Anonymous: every non-public UI route refuses, and error pages carry the headers too.
    let mut anonymous = Browser::new(&server);
    for route in &ui_routes {
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let request = anonymous
            .client
            .request(method, format!("{}{}", server.url, concrete(route.path)));
        let answer = anonymous.send(request).await;
        if PUBLIC_ROUTES.contains(&route.path) {
            continue;
        }
        assert!(
            matches!(
                answer.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ),
            "anonymous {} {}: {}",
            route.method,
            route.path,
            answer.status
        );
        assert!(answer.headers.contains_key("content-security-policy"));
    }
    // An anonymous page view gets the login form, which comes back to the page.
    let page = anonymous.get("/ui/nodes?status=failed").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        page.hidden("next").as_deref(),
        Some("/ui/nodes?status=failed")
    );
}

// ---------------------------------------------------------------------------------------------
// W1: forward auth

#[tokio::test]
async fn ui_ignores_identity_headers_not_from_trusted_proxy() {
    // The proxy is elsewhere: the headers from 127.0.0.1 are a spoof.
    let server = TestServer::start_with(Options {
        extra_toml: "[ui]\ntrusted_proxies = [\"10.11.12.13/32\"]\n".to_owned(),
        ..Options::default()
    })
    .await;
    let mut spoofer = Browser::new(&server);
    spoofer.headers = vec![
        ("X-authentik-username".into(), "admin".into()),
        ("X-authentik-groups".into(), "steward-admins".into()),
    ];
    let page = spoofer.get("/ui/").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(!page.body.contains("Overview"));
    let csrf = "0".repeat(64);
    let origin = server.url.clone();
    let post = spoofer
        .post("/ui/nodes/devvm/run-now", &[("csrf", &csrf)], Some(&origin))
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forward_auth_from_a_trusted_proxy_needs_the_admin_group() {
    let server = TestServer::start_with(Options {
        extra_toml: "[ui]\ntrusted_proxies = [\"127.0.0.1/32\"]\nadmin_group = \"ops\"\n"
            .to_owned(),
        ..Options::default()
    })
    .await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let mut admin = Browser::new(&server);
    admin.headers = vec![
        ("X-authentik-username".into(), "alice".into()),
        ("X-authentik-groups".into(), "staff|ops".into()),
    ];
    let page = admin.get("/ui/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("alice"));
    // Her POSTs work with her token and this origin, and the audit names her.
    let csrf = admin.csrf().await;
    let origin = server.url.clone();
    let answer = admin
        .post("/ui/nodes/devvm/run-now", &[("csrf", &csrf)], Some(&origin))
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(audit[0]["actor"], "sso:alice");
    assert_eq!(audit[0]["action"], "node.run_now");

    // Not in the group: only her own page.
    let mut user = Browser::new(&server);
    user.headers = vec![
        ("X-authentik-username".into(), "emil.barzin".into()),
        ("X-authentik-groups".into(), "staff".into()),
    ];
    assert_eq!(user.get("/ui/").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        user.get("/ui/nodes/devvm").await.status,
        StatusCode::FORBIDDEN
    );
    let me = user.get("/ui/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert!(
        me.body.contains("emo"),
        "mapped through the roster: {}",
        me.body
    );
    assert!(!me.body.contains("/ui/nodes/"), "no fleet links for users");
}

#[tokio::test]
async fn ui_strips_client_identity_header_on_anonymous_path() {
    // Even from the trusted proxy's address, a public path never signs anyone in, and the API
    // never honours the UI's identity headers (a proxy that forwards a client's header on a
    // path it does not protect gains the client nothing).
    let server = TestServer::start_with(Options {
        extra_toml: "[ui]\ntrusted_proxies = [\"127.0.0.1/32\"]\n".to_owned(),
        ..Options::default()
    })
    .await;
    let mut client = Browser::new(&server);
    client.headers = vec![
        ("X-authentik-username".into(), "admin".into()),
        ("X-authentik-groups".into(), "steward-admins".into()),
    ];
    let login = client.get("/ui/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(!login.body.contains("who-name"), "nobody is signed in");
    assert!(client.session().is_none());
    for path in ["/api/v1/nodes", "/v1/wait"] {
        let answer = client.get(path).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // The header never reaches the logs as an identity either.
    assert!(!support::server::captured_logs().contains("sso:admin"));
}

// ---------------------------------------------------------------------------------------------
// W2: CSRF and Origin

#[tokio::test]
async fn cross_origin_post_without_token_returns_403() {
    let server = ui_server("").await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let mut browser = Browser::logged_in(&server).await;
    let csrf = browser.csrf().await;
    let origin = server.url.clone();
    let before = state_snapshot(&server).await;
    let path = "/ui/nodes/devvm/run-now";
    // No token, a wrong token, another origin, no origin at all, a cross-site fetch.
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (vec![], Some(&origin)),
        (vec![("csrf", "00")], Some(&origin)),
        (vec![("csrf", &csrf)], Some("https://evil.example")),
        (vec![("csrf", &csrf)], Some("null")),
        (vec![("csrf", &csrf)], None),
    ];
    for (fields, origin) in cases {
        let answer = browser.post(path, &fields, origin).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{fields:?} {origin:?}"
        );
        assert!(answer.headers.contains_key("content-security-policy"));
    }
    browser.headers = vec![("sec-fetch-site".into(), "cross-site".into())];
    let answer = browser.post(path, &[("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    browser.headers.clear();
    assert_eq!(state_snapshot(&server).await, before, "nothing happened");
    // The admin API token opens pages but cannot post forms (it has no CSRF token).
    let answer = server
        .client
        .post(format!("{}{path}", server.url))
        .bearer_auth(&server.admin_token)
        .header("origin", &origin)
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);

    // Same origin with the token: done, and audited.
    let answer = browser.post(path, &[("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location(), "/ui/nodes/devvm?done=run-now");
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(audit[0]["action"], "node.run_now");
    assert_eq!(audit[0]["actor"], "ui:local-admin");
    // A Referer from this server stands in for a missing Origin.
    let referer = format!("{}/ui/nodes/devvm", server.url);
    browser.headers = vec![("referer".into(), referer)];
    let answer = browser.post(path, &[("csrf", &csrf)], None).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
}

// ---------------------------------------------------------------------------------------------
// W3: escaping

#[tokio::test]
async fn report_fields_rendered_escaped() {
    let server = ui_server("").await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let mut report = agent.report(None);
    let events = vec![
        ResourceEvent {
            resource: ResourceId::new("file", "/etc/<b>motd</b>"),
            status: ResourceStatus::Failed,
            message: Some(
                "\u{1b}[31mwrite failed\u{1b}[0m: <script>alert(1)</script> <img src=x onerror=alert(2)>"
                    .into(),
            ),
            diff: Some("-old\n+<iframe src=//evil>\u{7}".into()),
            duration_ms: 1,
            corrective: true,
            drift: None,
        },
        event(
            ResourceId::new("package", "git"),
            ResourceStatus::Changed,
            Some("installed \"git\" & 'friends'"),
        ),
    ];
    report.status = RunStatus::Failed;
    report.message = Some("<svg onload=alert(3)>".into());
    report.totals = Totals::of(&events);
    report.events = events;
    let run_id = report.run_id.0.clone();
    assert!(agent
        .send_report(&server, &report)
        .await
        .status()
        .is_success());
    let mut browser = Browser::logged_in(&server).await;
    for path in [
        format!("/ui/runs/{run_id}"),
        "/ui/failures".to_owned(),
        "/ui/runs".to_owned(),
        "/ui/".to_owned(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        for raw in [
            "<script>alert(1)",
            "<img src=x",
            "<iframe",
            "<svg onload",
            "<b>motd",
        ] {
            assert!(!page.body.contains(raw), "{path} shows {raw} raw");
        }
        assert!(!page.body.contains('\u{1b}'), "{path} has an escape byte");
        assert!(!page.body.contains('\u{7}'), "{path} has a control byte");
    }
    let run = browser.get(&format!("/ui/runs/{run_id}")).await;
    // Shown as text: escaped markup, the ANSI colour codes gone, the words kept.
    let shown = unescape(&run.body);
    assert!(shown.contains("write failed: <script>alert(1)</script>"));
    assert!(shown.contains("file:/etc/<b>motd</b>"));
    assert!(shown.contains("+<iframe src=//evil>"));
    assert!(shown.contains("installed \"git\" & 'friends'"));
    assert!(run.body.contains("intentional"));
}

/// What a browser shows of escaped text (the entities askama writes).
fn unescape(html: &str) -> String {
    html.replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
}

// ---------------------------------------------------------------------------------------------
// W4: sessions

#[tokio::test]
async fn session_id_changes_on_login_and_the_cookie_is_locked_down() {
    let server = ui_server("").await;
    let mut browser = Browser::new(&server);
    let answer = browser.login(PASSWORD, "/ui/").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let set = answer.set_cookie("__Host-steward-session").unwrap();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.to_lowercase().contains("domain="), "{set}");
    let first = cookie_value(&set);
    assert_eq!(first.len(), 64);
    // The database keeps only a hash of it.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id_hash FROM ui_sessions")
        .fetch_all(server.state.db.pool())
        .await
        .unwrap();
    assert!(stored.iter().all(|hash| hex::encode(hash) != first));

    // Logging in again with that cookie (or one an attacker planted) gives a new id, and the
    // old one is dead.
    let again = browser.login(PASSWORD, "/ui/").await;
    let second = cookie_value(&again.set_cookie("__Host-steward-session").unwrap());
    assert_ne!(first, second);
    let mut old = Browser::new(&server);
    old.cookies = vec![("__Host-steward-session".into(), first.clone())];
    assert_eq!(old.get("/ui/").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(browser.get("/ui/").await.status, StatusCode::OK);

    let mut planted = Browser::new(&server);
    planted.cookies = vec![("__Host-steward-session".into(), "ab".repeat(32))];
    let answer = planted.login(PASSWORD, "/ui/").await;
    let fresh = cookie_value(&answer.set_cookie("__Host-steward-session").unwrap());
    assert_ne!(fresh, "ab".repeat(32));
}

#[tokio::test]
async fn session_expires_after_idle_and_absolute_timeout_and_at_logout() {
    let server = ui_server("session_idle = \"10m\"\nsession_max = \"1h\"\n").await;
    let db = server.state.db.pool();
    // Idle: the last request was 10 minutes ago.
    let mut browser = Browser::logged_in(&server).await;
    assert_eq!(browser.get("/ui/").await.status, StatusCode::OK);
    sqlx::query("UPDATE ui_sessions SET last_seen_at = ?1")
        .bind(now().0 - 600)
        .execute(db)
        .await
        .unwrap();
    assert_eq!(browser.get("/ui/").await.status, StatusCode::UNAUTHORIZED);
    // Absolute: active a second ago, but logged in an hour ago.
    let mut browser = Browser::logged_in(&server).await;
    sqlx::query("UPDATE ui_sessions SET created_at = ?1, last_seen_at = ?2")
        .bind(now().0 - 3600)
        .bind(now().0 - 1)
        .execute(db)
        .await
        .unwrap();
    assert_eq!(browser.get("/ui/").await.status, StatusCode::UNAUTHORIZED);
    // Logout deletes the session server-side: the cookie is worthless afterwards.
    let mut browser = Browser::logged_in(&server).await;
    let session = browser.session().unwrap();
    let csrf = browser.csrf().await;
    let origin = server.url.clone();
    let answer = browser
        .post("/ui/logout", &[("csrf", &csrf)], Some(&origin))
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let mut replay = Browser::new(&server);
    replay.cookies = vec![("__Host-steward-session".into(), session)];
    assert_eq!(replay.get("/ui/").await.status, StatusCode::UNAUTHORIZED);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM ui_sessions")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

// ---------------------------------------------------------------------------------------------
// W5: brute force

#[tokio::test]
async fn local_login_rate_limited() {
    let server = ui_server("login_failures_per_address = 3\n").await;
    let mut browser = Browser::new(&server);
    for _ in 0..3 {
        let answer = browser.login("wrong password!", "/ui/").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(answer.body.contains("Wrong password"));
    }
    // Locked: even the right password is refused, without being checked.
    let answer = browser.login(PASSWORD, "/ui/").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(answer.headers.contains_key("retry-after"));
    assert!(browser.session().is_none());
    // Once the window has passed, the right password works again.
    sqlx::query("UPDATE ui_login_failures SET at = at - 3600")
        .execute(server.state.db.pool())
        .await
        .unwrap();
    let answer = browser.login(PASSWORD, "/ui/").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    // The login form itself is CSRF-protected: no token, or another origin, is refused.
    let mut other = Browser::new(&server);
    let origin = server.url.clone();
    let answer = other
        .post(
            "/ui/login",
            &[("login_csrf", "x"), ("password", PASSWORD)],
            Some(&origin),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[test]
fn local_login_next_to_forward_auth_is_break_glass_only() {
    let base = "vault_data_file = \"/x\"\n[ui]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
    let with_password = format!("{base}admin_password_hash = {:?}\n", password_hash());
    let config = steward_server::config::Config::parse(&with_password).unwrap();
    let error = config.resolve().unwrap_err().to_string();
    assert!(error.contains("break_glass_local_login"), "{error}");
    let config = steward_server::config::Config::parse(&format!(
        "{with_password}break_glass_local_login = true\n"
    ))
    .unwrap();
    assert!(config.resolve().is_ok());
    let config = steward_server::config::Config::parse(
        "vault_data_file = \"/x\"\n[ui]\nadmin_password_hash = \"$2b$12$bcrypt\"\n",
    )
    .unwrap();
    assert!(config.resolve().is_err(), "only argon2id");
}

// ---------------------------------------------------------------------------------------------
// W6: redirects

#[tokio::test]
async fn login_next_param_rejects_external_urls() {
    let server = ui_server("").await;
    for (next, expected) in [
        ("//evil.example", "/ui/"),
        ("https://evil.example/", "/ui/"),
        ("/\\evil.example", "/ui/"),
        ("/ui//evil.example", "/ui/"),
        ("/ui/nodes?status=failed", "/ui/nodes?status=failed"),
    ] {
        let mut browser = Browser::new(&server);
        let answer = browser.login(PASSWORD, next).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(answer.location(), expected, "{next}");
    }
}

// ---------------------------------------------------------------------------------------------
// Pages with data

#[tokio::test]
async fn pages_show_the_fleet_runs_failures_and_enrollment() {
    let server = ui_server("").await;
    let good = Agent::new("devvm");
    server.enroll_approved(&good).await;
    let bad = Agent::new("ws-bad");
    server.enroll_approved(&bad).await;
    report_with_events(
        &server,
        &good,
        vec![event(
            ResourceId::new("package", "git"),
            ResourceStatus::Unchanged,
            None,
        )],
    )
    .await;
    report_with_events(
        &server,
        &bad,
        vec![
            event(
                ResourceId::new("file", "/etc/motd"),
                ResourceStatus::Failed,
                Some("permission denied writing /etc/motd"),
            ),
            event(
                ResourceId::new("service", "app"),
                ResourceStatus::Skipped,
                Some("skipped: file:/etc/motd failed"),
            ),
        ],
    )
    .await;
    // A host waiting for an admin.
    let join = server
        .token(json!({ "hostname_glob": "lab-*", "uses": 1 }))
        .await;
    let pending = Agent::new("lab-1");
    let (status, _) = pending
        .enroll(&server, Some(&support::server::token_of(&join)))
        .await;
    assert_eq!(status, StatusCode::OK);

    let mut browser = Browser::logged_in(&server).await;
    let overview = browser.get("/ui/").await;
    assert!(overview.body.contains("<svg"), "server-side chart");
    assert!(overview.body.contains("/ui/nodes?status=failed"));
    assert!(overview.body.contains("ws-bad"), "recent failure listed");

    let failed = browser.get("/ui/nodes?status=failed").await;
    assert!(failed.body.contains("ws-bad"));
    assert!(!failed.body.contains("/ui/nodes/devvm\""), "filtered");
    let named = browser.get("/ui/nodes?q=bad").await;
    assert!(named.body.contains("ws-bad") && !named.body.contains("/ui/nodes/devvm\""));

    let failures = browser.get("/ui/failures").await;
    assert!(failures.body.contains("file:/etc/motd"));
    assert!(failures
        .body
        .contains("permission denied writing /etc/motd"));

    let runs = browser.get("/ui/runs?status=failed").await;
    assert!(runs.body.contains("ws-bad") && !runs.body.contains(">devvm</a>"));
    let runs = browser.get("/ui/runs?node=devvm").await;
    assert!(runs.body.contains(">devvm</a>") && !runs.body.contains("ws-bad"));
    assert_eq!(
        browser.get("/ui/runs?since=yesterday").await.status,
        StatusCode::BAD_REQUEST
    );

    let node = browser.get("/ui/nodes/ws-bad").await;
    assert!(node.body.contains("Run now"));
    assert!(
        node.body.contains(&bad.signing.key_id().0),
        "key fingerprint"
    );

    // Enrollment: approve the pending host from the list.
    let enrollment = browser.get("/ui/enrollment").await;
    assert!(enrollment.body.contains("lab-1"));
    let csrf = enrollment.hidden("csrf").unwrap();
    let origin = server.url.clone();
    let answer = browser
        .post(
            "/ui/nodes/lab-1/approve",
            &[("csrf", &csrf), ("return", "/ui/enrollment")],
            Some(&origin),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location(), "/ui/enrollment?done=approved");
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/lab-1", None).await;
    assert_eq!(node["node"]["status"], "approved");

    // A token: the join string is shown once, in the answer to the POST.
    let answer = browser
        .post(
            "/ui/enrollment/tokens",
            &[
                ("csrf", &csrf),
                ("description", "template"),
                ("ttl", "2h"),
                ("uses", "3"),
                ("hostname_glob", "devvm-*"),
                ("auto_approve", "on"),
            ],
            Some(&origin),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.contains("steward:v1:"));
    assert_eq!(answer.headers["cache-control"], "no-store");
    let again = browser.get("/ui/enrollment").await;
    assert!(!again.body.contains("steward:v1:"), "shown only once");
    let invalid = browser
        .post(
            "/ui/enrollment/tokens",
            &[("csrf", &csrf), ("ttl", "forever")],
            Some(&origin),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(invalid.body.contains("invalid ttl"), "{}", invalid.body);
    assert!(again.body.contains("template"));
    let audit = browser.get("/ui/audit").await;
    assert!(audit.body.contains("token.create") && audit.body.contains("node.approve"));
}

/// A resource changed in each of a node's last three real runs does not converge: it is
/// flagged on the node's page and listed on the failures page; one changed in fewer runs, a
/// noop run's would-changes and another node's changes are not.
#[tokio::test]
async fn flapping_resources_are_flagged_on_the_node_and_listed() {
    let server = ui_server("").await;
    let flappy = Agent::new("devvm");
    server.enroll_approved(&flappy).await;
    let calm = Agent::new("ws-calm");
    server.enroll_approved(&calm).await;
    let motd = || ResourceId::new("file", "/etc/motd");
    let git = || ResourceId::new("package", "git");
    for round in 0..3 {
        let git_status = if round == 0 {
            ResourceStatus::Unchanged
        } else {
            ResourceStatus::Changed
        };
        report_with_events(
            &server,
            &flappy,
            vec![
                event(motd(), ResourceStatus::Changed, Some("content changed")),
                event(git(), git_status, None),
            ],
        )
        .await;
        if round < 2 {
            report_with_events(
                &server,
                &calm,
                vec![event(motd(), ResourceStatus::Changed, None)],
            )
            .await;
        }
    }
    // A dry run in between changes nothing and does not count.
    let mut dry = flappy.report(None);
    dry.noop = true;
    dry.status = RunStatus::Noop;
    dry.events = vec![event(motd(), ResourceStatus::WouldChange, None)];
    dry.totals = Totals::of(&dry.events);
    assert!(flappy
        .send_report(&server, &dry)
        .await
        .status()
        .is_success());

    let mut browser = Browser::logged_in(&server).await;
    let node = browser.get("/ui/nodes/devvm").await;
    let notice = node
        .body
        .split("<strong>Flapping:</strong>")
        .nth(1)
        .expect("the node page flags flapping resources")
        .split("</div>")
        .next()
        .unwrap();
    assert!(notice.contains("file:/etc/motd"), "{notice}");
    assert!(
        !notice.contains("package:git"),
        "changed in two runs only: {notice}"
    );
    let calm_page = browser.get("/ui/nodes/ws-calm").await;
    assert!(!calm_page.body.contains("<strong>Flapping:</strong>"));

    let failures = browser.get("/ui/failures").await;
    let listed = failures
        .body
        .split("Flapping resources")
        .nth(1)
        .unwrap()
        .split("</section>")
        .next()
        .unwrap();
    assert!(
        listed.contains("devvm") && listed.contains("file:/etc/motd"),
        "{listed}"
    );
    assert!(
        !listed.contains("ws-calm") && !listed.contains("package:git"),
        "{listed}"
    );
}

/// "Reject" refuses only what waits: a new key beside an approved node's key is refused for
/// good and the node keeps working; a new node is revoked.
#[tokio::test]
async fn rejecting_a_waiting_key_keeps_the_node_and_its_current_key() {
    let server = ui_server("").await;
    let current = Agent::new("devvm");
    server.enroll_approved(&current).await;
    // The same hostname with a new key and a token that may not re-enroll: the key waits.
    let token = support::server::token_of(&server.token(json!({ "uses": 5 })).await);
    let newcomer = Agent::new("devvm");
    let (_, body) = newcomer.enroll(&server, Some(&token)).await;
    assert_eq!(body["status"], "pending", "{body}");
    let stranger = Agent::new("lab-2");
    let (_, body) = stranger.enroll(&server, Some(&token)).await;
    assert_eq!(body["status"], "pending", "{body}");

    let mut browser = Browser::logged_in(&server).await;
    let node = browser.get("/ui/nodes/devvm").await;
    assert!(
        node.body.contains("id=\"reject\""),
        "offered on the node page"
    );
    let enrollment = browser.get("/ui/enrollment").await;
    assert!(enrollment.body.contains(&newcomer.signing.key_id().0));
    let csrf = enrollment.hidden("csrf").unwrap();
    let origin = server.url.clone();
    let answer = browser
        .post(
            "/ui/nodes/devvm/reject",
            &[("csrf", &csrf), ("return", "/ui/enrollment")],
            Some(&origin),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location(), "/ui/enrollment?done=key-rejected");
    assert_eq!(current.catalog(&server).await.status(), StatusCode::OK);
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/devvm", None).await;
    assert_eq!(node["node"]["status"], "approved");
    // The rejected key is in the history, revoked, and can never enroll again.
    let page = browser.get("/ui/nodes/devvm").await;
    assert!(page.body.contains(&newcomer.signing.key_id().0));
    assert!(page.body.contains("rejected by"), "{}", page.body);
    let (status, _) = newcomer.enroll(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing waits any more: a second reject is refused.
    let again = browser
        .post("/ui/nodes/devvm/reject", &[("csrf", &csrf)], Some(&origin))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);

    // A new node is rejected by revoking it.
    let answer = browser
        .post(
            "/ui/nodes/lab-2/reject",
            &[("csrf", &csrf), ("return", "/ui/enrollment")],
            Some(&origin),
        )
        .await;
    assert_eq!(answer.location(), "/ui/enrollment?done=rejected");
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/lab-2", None).await;
    assert_eq!(node["node"]["status"], "revoked");
    let audit = browser.get("/ui/audit").await;
    assert!(audit.body.contains("node.reject_key") && audit.body.contains("node.revoke"));
}

#[tokio::test]
async fn the_node_page_compares_two_serials_without_showing_secrets() {
    let server = ui_server("").await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    assert!(agent.catalog(&server).await.status().is_success());
    // A change of a host-wide file moves the serial.
    let tmux = server.site_file("files/skel/tmux.conf");
    server.write_site_file("files/skel/tmux.conf", &format!("{tmux}set -g mouse on\n"));
    let second = agent.catalog(&server).await;
    assert!(second.status().is_success());
    let serials: Vec<i64> = sqlx::query_scalar("SELECT serial FROM catalogs ORDER BY serial")
        .fetch_all(server.state.db.pool())
        .await
        .unwrap();
    assert_eq!(serials.len(), 2, "the site change made a new serial");
    let mut browser = Browser::logged_in(&server).await;
    let page = browser
        .get(&format!(
            "/ui/nodes/devvm?from={}&to={}",
            serials[0], serials[1]
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"diff\""), "{}", page.body);
    assert!(
        page.body.contains("file:/etc/skel/.tmux.conf"),
        "{}",
        page.body
    );
    assert!(page.body.contains("+ set -g mouse on"), "{}", page.body);
    // The example site's Vault values never reach a page.
    let vault = std::fs::read_to_string(&server.vault_file).unwrap();
    for line in vault.lines() {
        if let Some((_, value)) = line.split_once(": ") {
            let value = value.trim().trim_matches('"');
            if value.len() >= 12 && !value.contains(' ') {
                assert!(!page.body.contains(value), "a vault value is shown");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Notices (issue 11): kept, deferred and drift are shown, never as failures

/// A run with kept, deferred and drift events: the node page's "Notices" panel lists them
/// (escaped), the run page shows them as notices with the badges explained, the person page of
/// the person they concern shows that person's deferred and drift items only, the failures
/// page and the node's health ignore them, and `/metrics` counts them apart.
#[tokio::test]
async fn kept_deferred_and_drift_are_notices_on_node_run_and_person_pages() {
    // Forward auth for the person's own page, the local login for the admin pages.
    let server = ui_server(
        "trusted_proxies = [\"127.0.0.1/32\"]\nadmin_group = \"ops\"\nbreak_glass_local_login = true",
    )
    .await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let mut emo_account = event(
        ResourceId::new("user", "emo"),
        ResourceStatus::Unchanged,
        None,
    );
    emo_account.drift = Some("holds <sudo> and docker beyond tier namespace-owner".into());
    let mut anca_account = event(
        ResourceId::new("user", "ancamilea"),
        ResourceStatus::Unchanged,
        None,
    );
    anca_account.drift = Some("holds adm beyond tier dev".into());
    let events = vec![
        event(
            ResourceId::new("git_clone", "/home/emo/code"),
            ResourceStatus::Kept,
            Some("exists and is not this clone (a symlink to /home/ana/<code>): kept as found"),
        ),
        event(
            ResourceId::new("service", "t3-serve@emo.service"),
            ResourceStatus::Deferred,
            Some("restart waits for emo to go idle: 1 session <tty1> since 02:00 UTC"),
        ),
        emo_account,
        anca_account,
        event(
            ResourceId::new("package", "git"),
            ResourceStatus::Unchanged,
            None,
        ),
    ];
    let mut report = agent.report(None);
    report.status = RunStatus::Unchanged;
    report.totals = Totals::of(&events);
    report.events = events;
    let run_id = report.run_id.0.clone();
    let response = agent.send_report(&server, &report).await;
    assert!(response.status().is_success(), "{}", response.status());

    let mut browser = Browser::logged_in(&server).await;
    let node = browser.get("/ui/nodes/devvm").await;
    assert_eq!(node.status, StatusCode::OK);
    let panel = section(&node.body, "id=\"notices\"");
    let shown = unescape(panel);
    assert!(
        shown.contains("restart waits for emo to go idle: 1 session <tty1> since 02:00 UTC"),
        "{panel}"
    );
    assert!(shown.contains("holds <sudo> and docker beyond tier namespace-owner"));
    assert!(shown.contains("a symlink to /home/ana/<code>"));
    let kept = section(panel, "<details id=\"notices-kept\">");
    assert!(
        kept.contains("git_clone:/home/emo/code"),
        "kept list, collapsed"
    );
    for raw in ["<tty1>", "<sudo>", "<code>"] {
        assert!(!node.body.contains(raw), "{raw} shown raw");
    }
    assert!(
        panel.contains("forces it after max_defer"),
        "badges explained"
    );
    assert!(
        node.body.contains("badge-ok\">unchanged"),
        "the node is not failed"
    );

    let nodes = browser.get("/ui/nodes").await;
    assert!(nodes.body.contains("4 notices"), "{}", nodes.body);
    assert!(!browser
        .get("/ui/nodes?status=failed")
        .await
        .body
        .contains("/ui/nodes/devvm\""));

    let run = browser.get(&format!("/ui/runs/{run_id}")).await;
    assert!(
        !run.body.contains("Failed and skipped"),
        "notices are not problems"
    );
    let notices = section(&run.body, "id=\"notices\"");
    for resource in [
        "git_clone:/home/emo/code",
        "service:t3-serve@emo.service",
        "user:emo",
        "user:ancamilea",
    ] {
        assert!(notices.contains(resource), "{resource} in notices");
    }
    assert!(!notices.contains("package:git"));
    assert!(notices.contains("row-notice") && !notices.contains("row-failed"));
    assert!(notices.contains("left as found on purpose"));
    assert!(run.body.contains("stat-label\">kept"), "totals show kept");
    assert!(run.body.contains("stat-label\">drift"), "totals show drift");

    let failures = browser.get("/ui/failures").await;
    for resource in ["git_clone:/home/emo/code", "t3-serve@emo", "user:emo"] {
        assert!(
            !failures.body.contains(resource),
            "{resource} is not a failure"
        );
    }

    let person = browser.get("/ui/roster/emo").await;
    assert_eq!(person.status, StatusCode::OK, "{}", person.body);
    let mine = section(&person.body, "id=\"person-notices\"");
    let shown = unescape(mine);
    assert!(shown.contains("service:t3-serve@emo.service"));
    assert!(shown.contains("1 session <tty1>"));
    assert!(shown.contains("holds <sudo> and docker"));
    assert!(!shown.contains("holds adm"), "another person's drift");
    assert!(
        !shown.contains("git_clone"),
        "kept is listed with the resources, not a notice"
    );
    assert!(
        !person.body.contains("failing"),
        "notices do not count as failing"
    );
    let anca = browser.get("/ui/roster/ancamilea").await;
    assert!(unescape(&anca.body).contains("holds adm beyond tier dev"));
    assert!(!anca.body.contains("t3-serve@emo"));

    // "Managed for me": emo signed in through SSO sees his own deferred and drift items.
    let mut emo = Browser::new(&server);
    emo.headers = vec![
        ("X-authentik-username".into(), "emil.barzin".into()),
        ("X-authentik-groups".into(), "staff".into()),
    ];
    let me = emo.get("/ui/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let mine = unescape(section(&me.body, "id=\"person-notices\""));
    assert!(mine.contains("1 session <tty1>") && mine.contains("holds <sudo> and docker"));
    assert!(!mine.contains("holds adm"), "another person's drift");
    assert!(!me.body.contains("/ui/runs/"), "no fleet links for users");

    let metrics = server.anonymous(Method::GET, "/metrics", None).await;
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("steward_resource_events_total{status=\"kept\"} 1"));
    assert!(metrics.contains("steward_resource_events_total{status=\"deferred\"} 1"));
    assert!(metrics.contains("steward_resource_events_total{status=\"failed\"} 0"));
    assert!(metrics.contains("steward_resource_drift_total 2"));
}

/// The HTML from the element with `attribute` to the first `</section>` after it.
fn section<'a>(html: &'a str, attribute: &str) -> &'a str {
    let start = html
        .find(attribute)
        .unwrap_or_else(|| panic!("no {attribute} in {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}
