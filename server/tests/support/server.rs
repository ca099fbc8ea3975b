//! A real Steward server for one test: a copy of the example site, a fresh data directory with
//! a real SQLite file, TLS on a bound `127.0.0.1:0` listener (the client trusts the generated
//! self-signed certificate), and a shutdown switch. No sleeps, no fixed ports.
//!
//! [`Agent`] plays a host: its own ed25519 and X25519 keys, enrollment, signed requests and
//! catalog verification with the real protocol functions.
//!
//! Logs of every server in the test binary are captured (JSON, debug level) into one buffer,
//! [`captured_logs`], so tests can assert what never reaches a log line.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use steward_protocol::envelope::SigningKeyPair;
use steward_protocol::request::{nonce_from_bytes, sign_request};
use steward_protocol::seal::EncryptionKeyPair;
use steward_protocol::{
    verify_catalog, Accepted, EnrollRequest, Facts, KeyId, NodeId, Refusal, ResourceEvent,
    ResourceId, ResourceStatus, RunId, RunReport, RunStatus, Timestamp, Totals, VerifiedCatalog,
};
use steward_server::state::AppState;
use steward_server::{serve, Listeners, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::openbao::random_hex;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The example site.
pub fn example_site() -> PathBuf {
    repo_root().join("deploy/example-site")
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The example site's Vault data as JSON (path → data).
pub fn example_vault_data() -> Value {
    let text = fs::read_to_string(example_site().join("vault-data.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_buffer() -> &'static LogBuffer {
    static BUFFER: OnceLock<LogBuffer> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,hyper_util=info,rustls=info,reqwest=info,h2=info",
            ))
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    })
}

/// Everything the servers of this test binary logged so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().0.lock().unwrap()).into_owned()
}

/// Where the test server gets Vault data.
pub enum VaultChoice {
    /// The example site's `vault-data.yaml`, copied (tests may edit the copy).
    File,
    /// A Vault server: address and token.
    Server { address: String, token: String },
}

/// Options of [`TestServer::start_with`].
pub struct Options {
    /// Vault data source.
    pub vault: VaultChoice,
    /// Extra TOML appended to the config (sections like `[enroll]`).
    pub extra_toml: String,
    /// Reuse this data directory (restart, restore).
    pub data_dir: Option<PathBuf>,
    /// Reuse this site directory.
    pub site_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vault: VaultChoice::File,
            // Tests enroll many hosts from one address.
            extra_toml: "[enroll]\nper_address_per_minute = 1000\n".to_owned(),
            data_dir: None,
            site_dir: None,
        }
    }
}

/// A running server.
pub struct TestServer {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// A client trusting the server's certificate.
    pub client: reqwest::Client,
    /// The admin API token.
    pub admin_token: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The site directory (a copy of the example site).
    pub site_dir: PathBuf,
    /// The Vault data file, with [`VaultChoice::File`].
    pub vault_file: PathBuf,
    /// The server's state.
    pub state: AppState,
    /// Keeps temporary directories alive.
    pub dirs: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A server on the example site with its file Vault data.
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    /// A server with options.
    pub async fn start_with(options: Options) -> TestServer {
        TestServer::start_in(options, Arc::new(tempfile::tempdir().unwrap())).await
    }

    /// A server whose temporary directories live in `dirs` (shared across restarts).
    pub async fn start_in(options: Options, dirs: Arc<tempfile::TempDir>) -> TestServer {
        log_buffer();
        let data_dir = options.data_dir.unwrap_or_else(|| dirs.path().join("data"));
        let site_dir = options.site_dir.unwrap_or_else(|| {
            let site = dirs.path().join("site");
            if !site.exists() {
                copy_dir(&example_site(), &site);
            }
            site
        });
        let vault_file = dirs.path().join("vault-data.yaml");
        if !vault_file.exists() {
            fs::copy(example_site().join("vault-data.yaml"), &vault_file).unwrap();
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("https://127.0.0.1:{port}");
        let admin_token = random_hex(24);
        let admin_hash = hex::encode(Sha256::digest(admin_token.as_bytes()));
        let vault = match &options.vault {
            VaultChoice::File => {
                format!("vault_data_file = {:?}\n", vault_file.display().to_string())
            }
            VaultChoice::Server { address, token } => {
                let token_file = dirs.path().join(format!("vault-token-{}", random_hex(4)));
                fs::write(&token_file, token).unwrap();
                format!(
                    "[vault]\naddress = {address:?}\ncache_ttl = \"0s\"\ntimeout = \"2s\"\n\
                     [vault.auth]\nmethod = \"token\"\ntoken_file = {:?}\n",
                    token_file.display().to_string()
                )
            }
        };
        let toml = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nsite = {:?}\npublic_url = {url:?}\n\
             {}\n[admin]\ntoken_sha256 = {admin_hash:?}\n[catalog]\nsite_check_interval = \"0ms\"\n{}\n",
            data_dir.display().to_string(),
            site_dir.display().to_string(),
            if matches!(options.vault, VaultChoice::File) { vault.as_str() } else { "" },
            options.extra_toml,
        );
        let toml = if matches!(options.vault, VaultChoice::File) {
            toml
        } else {
            format!("{toml}\n{vault}")
        };
        let config = steward_server::config::Config::parse(&toml)
            .unwrap_or_else(|e| panic!("test config: {e:#}\n{toml}"))
            .resolve()
            .unwrap_or_else(|e| panic!("test config: {e:#}\n{toml}"));
        let server = Server::build(config).await.expect("server builds");
        let state = server.state().clone();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            server,
            Listeners {
                tls: Some(listener),
                plain: None,
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let cert = fs::read(data_dir.join("tls.crt")).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
            .no_proxy()
            .timeout(std::time::Duration::from_secs(90))
            .build()
            .unwrap();
        TestServer {
            url,
            client,
            admin_token,
            data_dir,
            site_dir,
            vault_file,
            state,
            dirs,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// A new server on this one's data and site directories (after [`TestServer::stop`]): a
    /// restart.
    pub async fn start_again(&self) -> TestServer {
        TestServer::start_in(
            Options {
                data_dir: Some(self.data_dir.clone()),
                site_dir: Some(self.site_dir.clone()),
                ..Options::default()
            },
            Arc::clone(&self.dirs),
        )
        .await
    }

    /// Stops the server and waits until it has closed the database.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().expect("server stopped cleanly");
        }
    }

    /// The root key fingerprint.
    pub fn root_key_id(&self) -> KeyId {
        self.state.keys.root_key_id()
    }

    /// An anonymous request.
    pub async fn anonymous(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// An admin API call; returns status and JSON body (`Null` when empty).
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    /// Creates a bootstrap token through the admin API; returns the join string.
    pub async fn token(&self, body: Value) -> String {
        let (status, value) = self.admin(Method::POST, "/api/v1/tokens", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        value["join_string"].as_str().unwrap().to_owned()
    }

    /// Creates an auto-approving token for `glob` and returns the token part of its join
    /// string.
    pub async fn auto_token(&self, glob: &str, uses: u32) -> String {
        let join = self
            .token(json!({ "hostname_glob": glob, "uses": uses, "auto_approve": true }))
            .await;
        token_of(&join)
    }

    /// Enrolls `agent` with an auto-approving token and checks it is approved.
    pub async fn enroll_approved(&self, agent: &Agent) {
        let token = self.auto_token(&agent.hostname, 1).await;
        let (status, body) = agent.enroll(self, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "approved", "{body}");
    }

    /// Rewrites a site file.
    pub fn write_site_file(&self, name: &str, text: &str) {
        fs::write(self.site_dir.join(name), text).unwrap();
    }

    /// A site file's text.
    pub fn site_file(&self, name: &str) -> String {
        fs::read_to_string(self.site_dir.join(name)).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The token part of a join string.
pub fn token_of(join: &str) -> String {
    let parsed: steward_protocol::join::JoinString = join.parse().unwrap();
    parsed.token().expose()
}

/// A simulated host.
pub struct Agent {
    /// Its hostname.
    pub hostname: String,
    /// Request-signing key.
    pub signing: SigningKeyPair,
    /// Secret-receiving key.
    pub encryption: EncryptionKeyPair,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// Clock offset for requests, in seconds (stale timestamp tests).
    pub clock_offset: i64,
}

fn random_32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes
}

/// Now, in seconds.
pub fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

impl Agent {
    /// A host with fresh keys.
    pub fn new(hostname: &str) -> Agent {
        Agent {
            hostname: hostname.to_owned(),
            signing: SigningKeyPair::from_bytes(random_32()),
            encryption: EncryptionKeyPair::from_bytes(random_32()),
            machine_id: random_hex(16),
            clock_offset: 0,
        }
    }

    /// The same keys, claimed from another machine (a clone).
    pub fn clone_on_another_machine(&self) -> Agent {
        Agent {
            hostname: self.hostname.clone(),
            signing: self.signing.clone(),
            encryption: self.encryption.clone(),
            machine_id: random_hex(16),
            clock_offset: 0,
        }
    }

    /// Facts with this host's machine id.
    pub fn facts(&self) -> Facts {
        Facts {
            hostname: Some(self.hostname.clone()),
            machine_id: Some(self.machine_id.clone()),
            ..Facts::default()
        }
    }

    /// The enrollment body.
    pub fn enroll_request(&self, token: Option<&str>) -> EnrollRequest {
        EnrollRequest {
            hostname: self.hostname.clone(),
            signing_key: STANDARD.encode(self.signing.public_bytes()),
            encryption_key: STANDARD.encode(self.encryption.public_bytes()),
            facts: self.facts(),
            token: token.map(str::to_owned),
            agent_version: "0.1.0-test".to_owned(),
        }
    }

    /// `POST /v1/enroll`, signed with this host's key (proof of possession).
    pub async fn enroll(&self, server: &TestServer, token: Option<&str>) -> (StatusCode, Value) {
        let body = serde_json::to_vec(&self.enroll_request(token)).unwrap();
        let response = self
            .signed(server, Method::POST, "/v1/enroll", body, &[])
            .await;
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The signed headers of a request.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).unwrap();
        let headers = sign_request(
            &self.signing,
            method,
            path,
            now().plus_secs(self.clock_offset),
            &nonce_from_bytes(nonce),
            body,
        )
        .unwrap();
        headers
            .pairs()
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect()
    }

    /// A signed request.
    pub async fn signed(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        body: Vec<u8>,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let headers = self.sign(method.as_str(), path, &body);
        let mut request = server
            .client
            .request(method, format!("{}{path}", server.url))
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// `POST /v1/catalog` with this host's facts.
    pub async fn catalog(&self, server: &TestServer) -> reqwest::Response {
        let body = serde_json::to_vec(&self.facts()).unwrap();
        self.signed(server, Method::POST, "/v1/catalog", body, &[])
            .await
    }

    /// `POST /v1/catalog` with `If-None-Match: etag`.
    pub async fn catalog_if_none_match(
        &self,
        server: &TestServer,
        etag: &str,
    ) -> reqwest::Response {
        let body = serde_json::to_vec(&self.facts()).unwrap();
        self.signed(
            server,
            Method::POST,
            "/v1/catalog",
            body,
            &[("if-none-match", etag)],
        )
        .await
    }

    /// Fetches and verifies the catalog as the agent would (pinned root, own node id).
    pub async fn fetch_verified(
        &self,
        server: &TestServer,
        last: Option<&Accepted>,
    ) -> Result<VerifiedCatalog, Refusal> {
        let response = self.catalog(server).await;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.bytes().await.unwrap();
        verify_catalog(
            &bytes,
            &server.root_key_id(),
            &NodeId(self.hostname.clone()),
            last,
            now(),
        )
    }

    /// A valid report of a run of `serial` with one unchanged event.
    pub fn report(&self, serial: Option<steward_protocol::Serial>) -> RunReport {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).unwrap();
        let events = vec![ResourceEvent {
            resource: ResourceId::new("package", "git"),
            status: ResourceStatus::Unchanged,
            message: None,
            diff: None,
            duration_ms: 3,
            corrective: false,
            drift: None,
        }];
        let started = now();
        RunReport {
            run_id: RunId::from_random_bytes(id),
            node: NodeId(self.hostname.clone()),
            catalog_serial: serial,
            started_at: started,
            finished_at: started,
            duration_ms: 5,
            noop: false,
            status: RunStatus::Unchanged,
            message: None,
            agent_version: "0.1.0-test".to_owned(),
            facts: self.facts(),
            totals: Totals::of(&events),
            events,
        }
    }

    /// `POST /v1/reports`.
    pub async fn send_report(&self, server: &TestServer, report: &RunReport) -> reqwest::Response {
        let body = serde_json::to_vec(report).unwrap();
        self.signed(server, Method::POST, "/v1/reports", body, &[])
            .await
    }
}
