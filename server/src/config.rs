//! The server's configuration: one serde [`Config`] read from `/etc/steward/server.toml` (a few
//! `serve` flags override it), then validated into a [`ServerConfig`] before any work starts.
//!
//! The commented example, [`EXAMPLE`], is what `steward-server config example` prints. Errors
//! name the file and the key. Nothing here holds a secret: the admin token is configured as its
//! SHA-256 (or read from a 0600 file and hashed at once), Vault credentials stay in their files.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use steward_protocol::join::check_server_url;
use zeroize::Zeroizing;

use crate::vault::VaultConfig;

/// Where `serve` and the admin commands look for the config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/steward/server.toml";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/steward-server";
/// Default site directory.
pub const DEFAULT_SITE_DIR: &str = "/etc/steward/site";
/// Default TLS listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// The commented example configuration (`steward-server config example`).
pub const EXAMPLE: &str = include_str!("../config.example.toml");

/// The config file as written. Every key is optional except where [`Config::resolve`] says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// TLS listener, `ADDR:PORT`.
    pub listen: Option<String>,
    /// Plain HTTP listener for a TLS-terminating proxy: a loopback `ADDR:PORT` or
    /// `unix:/path/to.sock`.
    pub plain_listen: Option<String>,
    /// Data directory (database, keys, generated TLS certificate).
    pub data_dir: Option<PathBuf>,
    /// Site directory.
    pub site: Option<PathBuf>,
    /// URL agents use to reach this server; written into join strings.
    pub public_url: Option<String>,
    /// `[tls]`.
    #[serde(default)]
    pub tls: TlsSection,
    /// `[admin]`.
    #[serde(default)]
    pub admin: AdminSection,
    /// `[catalog]`.
    #[serde(default)]
    pub catalog: CatalogSection,
    /// `[enroll]`.
    #[serde(default)]
    pub enroll: EnrollSection,
    /// `[requests]`.
    #[serde(default)]
    pub requests: RequestsSection,
    /// `[retention]`.
    #[serde(default)]
    pub retention: RetentionSection,
    /// `[ui]`: the admin web UI's sign-in and timeouts.
    #[serde(default)]
    pub ui: UiSection,
    /// `[connections]`: timeouts and caps against slow or numerous clients.
    #[serde(default)]
    pub connections: ConnectionsSection,
    /// `[vault]`: where role data and secrets come from.
    pub vault: Option<VaultConfig>,
    /// Development only: read Vault data from a file in the offline `vault-data.yaml` shape
    /// instead of a Vault server. Refused together with `[vault]`.
    pub vault_data_file: Option<PathBuf>,
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain; with `key`. Without both, a self-signed certificate is generated
    /// into the data directory on first start.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Extra names (DNS or IP) for the generated certificate.
    #[serde(default)]
    pub names: Vec<String>,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// SHA-256 (hex) of the admin API bearer token.
    pub token_sha256: Option<String>,
    /// A 0600 file holding the admin API bearer token (hashed when read).
    pub token_file: Option<PathBuf>,
}

/// `[catalog]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSection {
    /// Compiles running at once; more requests get 429 with Retry-After.
    pub max_concurrent_compiles: Option<usize>,
    /// How often the site directory is re-read to notice changes.
    pub site_check_interval: Option<String>,
    /// Longest `GET /v1/wait` long-poll.
    pub wait_timeout: Option<String>,
    /// Lifetime of the catalog key's certificate issued by the root key.
    pub certificate_lifetime: Option<String>,
    /// Signed envelopes kept in memory (least recently used evicted first).
    pub envelope_cache_entries: Option<usize>,
}

/// `[enroll]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollSection {
    /// Accept enrollment requests without a bootstrap token (they always stay pending).
    pub allow_without_token: Option<bool>,
    /// Enrollment requests per minute from one source address.
    pub per_address_per_minute: Option<u32>,
    /// Enrollment requests per minute with one bootstrap token.
    pub per_token_per_minute: Option<u32>,
}

/// `[requests]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsSection {
    /// Largest accepted difference between an agent's request timestamp and the server clock.
    pub max_clock_skew: Option<String>,
}

/// `[connections]`: what one client may hold of the server (THREATS S6, slow clients).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsSection {
    /// Time to send a request's headers, counted from the TLS handshake's end (or the
    /// connection's start on the plain listener) and, on a kept-alive connection, from the end
    /// of the previous response: so it is also the keep-alive idle timeout.
    pub header_read_timeout: Option<String>,
    /// Longest pause while a request body arrives.
    pub body_idle_timeout: Option<String>,
    /// Time to complete the TLS handshake.
    pub tls_handshake_timeout: Option<String>,
    /// Open connections in total, both listeners together; more are closed at once.
    pub max_connections: Option<usize>,
    /// Open connections from one peer address (trusted proxies excepted).
    pub max_connections_per_address: Option<usize>,
}

/// Resolved `[connections]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// See [`ConnectionsSection::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`ConnectionsSection::body_idle_timeout`].
    pub body_idle_timeout: Duration,
    /// See [`ConnectionsSection::tls_handshake_timeout`].
    pub tls_handshake_timeout: Duration,
    /// See [`ConnectionsSection::max_connections`].
    pub max_connections: usize,
    /// See [`ConnectionsSection::max_connections_per_address`].
    pub max_connections_per_address: usize,
}

impl Default for ConnectionSettings {
    fn default() -> ConnectionSettings {
        ConnectionSettings {
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_address: 64,
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Run reports (with their events) received longer ago than this are deleted. Unset: runs
    /// are kept forever.
    pub runs_max_age: Option<String>,
    /// How often the pruning runs (default 1h).
    pub interval: Option<String>,
    /// Runs deleted per write transaction (default 500).
    pub batch_size: Option<u32>,
}

/// `[ui]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    /// Argon2id PHC string of the local admin password (`steward-server ui hash-password`).
    /// Without it, local login is off.
    pub admin_password_hash: Option<String>,
    /// Addresses (CIDR, or `unix` for the unix socket listener) of the SSO proxy whose
    /// forward-auth headers (`X-authentik-username`, `X-authentik-groups`) are trusted.
    /// Identity headers from anywhere else are ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The forward-auth group whose members are admins (default `steward-admins`).
    pub admin_group: Option<String>,
    /// Keep local login on while forward auth is configured (break-glass access).
    pub break_glass_local_login: Option<bool>,
    /// A session ends after this long without a request (default 30m).
    pub session_idle: Option<String>,
    /// A session ends this long after login, used or not (default 12h).
    pub session_max: Option<String>,
    /// Failed logins from one address within `login_window` before it is refused (default 5).
    pub login_failures_per_address: Option<u32>,
    /// Failed logins from all addresses within `login_window` before local login is locked
    /// for everyone until the window passes (default 50).
    pub login_failures_total: Option<u32>,
    /// The sliding window of the login limits (default 15m).
    pub login_window: Option<String>,
    /// The agents' run interval (default 30m, the agent's `interval_secs`).
    pub report_interval: Option<String>,
    /// The agents' largest splay (default 10m, the agent's `splay_limit_secs`). A node without
    /// a report for 2 × (interval + splay) is shown as unreported.
    pub report_splay: Option<String>,
}

/// Where trusted forward-auth requests come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    /// An address block.
    Net {
        /// The network address.
        addr: std::net::IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// The unix socket listener (only processes allowed to open the socket reach it).
    Unix,
}

impl ProxySource {
    /// Parses `127.0.0.1/32`, `10.0.0.0/8`, `::1/128`, a bare address (a single host) or `unix`.
    pub fn parse(text: &str) -> anyhow::Result<ProxySource> {
        let text = text.trim();
        if text == "unix" {
            return Ok(ProxySource::Unix);
        }
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = addr.parse().with_context(|| {
            format!("`ui.trusted_proxies` entry {text:?} is not an address, CIDR block or `unix`")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .with_context(|| {
                    format!("`ui.trusted_proxies` entry {text:?} has an invalid prefix length")
                })?,
        };
        Ok(ProxySource::Net { addr, prefix })
    }

    /// Whether a peer (`None`: the unix socket) is in this source.
    pub fn contains(&self, peer: Option<std::net::IpAddr>) -> bool {
        use std::net::IpAddr;
        match (self, peer.map(|ip| ip.to_canonical())) {
            (ProxySource::Unix, None) => true,
            (ProxySource::Net { addr, prefix }, Some(ip)) => match (addr, ip) {
                (IpAddr::V4(net), IpAddr::V4(ip)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                    u32::from(*net) & mask == u32::from(ip) & mask
                }
                (IpAddr::V6(net), IpAddr::V6(ip)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                    u128::from(*net) & mask == u128::from(ip) & mask
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// The local admin password's argon2id PHC string. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashText(pub String);

impl fmt::Debug for PasswordHashText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHashText(..)")
    }
}

/// The web UI's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSettings {
    /// Local admin login (`None`: off).
    pub admin_password_hash: Option<PasswordHashText>,
    /// Where trusted forward-auth headers come from (empty: forward auth is off).
    pub trusted_proxies: Vec<ProxySource>,
    /// The forward-auth admin group.
    pub admin_group: String,
    /// Idle timeout of a session.
    pub session_idle: Duration,
    /// Absolute timeout of a session.
    pub session_max: Duration,
    /// Failed logins per address per window.
    pub login_failures_per_address: u32,
    /// Failed logins in total per window.
    pub login_failures_total: u32,
    /// The login limits' window.
    pub login_window: Duration,
    /// The agents' run interval.
    pub report_interval: Duration,
    /// The agents' largest splay.
    pub report_splay: Duration,
}

impl UiSettings {
    /// How long without a report before a node is unreported: 2 × (interval + splay).
    pub fn unreported_after(&self) -> Duration {
        (self.report_interval + self.report_splay) * 2
    }
}

impl Default for UiSettings {
    fn default() -> UiSettings {
        UiSettings {
            admin_password_hash: None,
            trusted_proxies: Vec::new(),
            admin_group: "steward-admins".to_owned(),
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            login_failures_per_address: 5,
            login_failures_total: 50,
            login_window: Duration::from_secs(15 * 60),
            report_interval: Duration::from_secs(1800),
            report_splay: Duration::from_secs(600),
        }
    }
}

/// Scheduled retention of run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Runs received longer ago than this are deleted.
    pub runs_max_age: Duration,
    /// Period of the pruning task.
    pub interval: Duration,
    /// Runs per transaction.
    pub batch_size: u32,
}

/// The plain HTTP listener's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainAddr {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Given files.
    Files {
        /// PEM chain.
        cert: PathBuf,
        /// PEM key.
        key: PathBuf,
    },
    /// Generated (once) into the data directory, for these extra names.
    SelfSigned {
        /// Names besides `localhost` and `127.0.0.1`.
        names: Vec<String>,
    },
}

/// Where Vault data comes from.
#[derive(Debug, Clone)]
pub enum VaultSource {
    /// A Vault / OpenBao server.
    Vault(VaultConfig),
    /// A file in the offline shape (development and tests).
    File(PathBuf),
}

/// The admin bearer token's SHA-256. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTokenHash(pub [u8; 32]);

impl fmt::Debug for AdminTokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminTokenHash(..)")
    }
}

/// Enrollment policy knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollSettings {
    /// Requests without a token are accepted (as pending).
    pub allow_without_token: bool,
    /// Per source address, per minute.
    pub per_address_per_minute: u32,
    /// Per token, per minute.
    pub per_token_per_minute: u32,
}

/// The validated configuration `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TLS listener.
    pub listen: SocketAddr,
    /// Plain listener, loopback or unix socket only.
    pub plain_listen: Option<PlainAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Site directory.
    pub site_dir: PathBuf,
    /// URL for join strings.
    pub public_url: Option<String>,
    /// TLS certificate source.
    pub tls: TlsSource,
    /// Admin API token hash; `None` disables the admin API (every call is refused).
    pub admin_token: Option<AdminTokenHash>,
    /// Concurrent compiles.
    pub max_concurrent_compiles: usize,
    /// Site re-read interval.
    pub site_check_interval: Duration,
    /// Long-poll bound.
    pub wait_timeout: Duration,
    /// Catalog key certificate lifetime.
    pub certificate_lifetime: Duration,
    /// Envelopes kept in memory.
    pub envelope_cache_entries: usize,
    /// Enrollment knobs.
    pub enroll: EnrollSettings,
    /// Allowed request clock skew, in seconds.
    pub max_clock_skew_secs: u32,
    /// Vault data source.
    pub vault: VaultSource,
    /// Scheduled pruning of old runs; `None` keeps them forever.
    pub retention: Option<RetentionSettings>,
    /// The web UI.
    pub ui: UiSettings,
    /// Connection timeouts and caps.
    pub connections: ConnectionSettings,
}

/// `serve` flags that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--site`.
    pub site: Option<PathBuf>,
    /// `--plain-listen`.
    pub plain_listen: Option<String>,
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        toml::from_str(text).map_err(|error| anyhow::anyhow!("{}", error.to_string().trim_end()))
    }

    /// Applies flag overrides.
    pub fn with_overrides(mut self, overrides: Overrides) -> Config {
        if overrides.listen.is_some() {
            self.listen = overrides.listen;
        }
        if overrides.data_dir.is_some() {
            self.data_dir = overrides.data_dir;
        }
        if overrides.site.is_some() {
            self.site = overrides.site;
        }
        if overrides.plain_listen.is_some() {
            self.plain_listen = overrides.plain_listen;
        }
        self
    }

    /// The data directory, without validating anything else (for the admin commands).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The catalog key certificate lifetime alone (for offline signing).
    pub fn resolve_certificate_lifetime(&self) -> anyhow::Result<Duration> {
        match &self.catalog.certificate_lifetime {
            None => Ok(Duration::from_secs(90 * 86_400)),
            Some(text) => parse_duration(text).with_context(|| {
                format!("`catalog.certificate_lifetime` {text:?} is not a duration")
            }),
        }
    }

    /// Validates everything `serve` needs.
    pub fn resolve(self) -> anyhow::Result<ServerConfig> {
        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!("`listen` {listen_text:?} is not ADDR:PORT (e.g. 0.0.0.0:8443)")
        })?;
        let plain_listen = self
            .plain_listen
            .as_deref()
            .map(parse_plain_listen)
            .transpose()?;
        if let Some(url) = &self.public_url {
            check_server_url(url).with_context(|| format!("`public_url` {url:?}"))?;
        }
        let tls = match (self.tls.cert, self.tls.key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            (None, None) => TlsSource::SelfSigned {
                names: self.tls.names,
            },
            _ => bail!("`tls.cert` and `tls.key` go together: set both, or neither for a self-signed certificate"),
        };
        let admin_token = match (self.admin.token_sha256, self.admin.token_file) {
            (Some(_), Some(_)) => {
                bail!("set one of `admin.token_sha256` and `admin.token_file`, not both")
            }
            (Some(hex_hash), None) => {
                let bytes = hex::decode(hex_hash.trim())
                    .ok()
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .context(
                        "`admin.token_sha256` must be 64 hex digits (sha256sum of the token)",
                    )?;
                Some(AdminTokenHash(bytes))
            }
            (None, Some(path)) => Some(read_admin_token(&path)?),
            (None, None) => None,
        };
        let max_concurrent_compiles = self.catalog.max_concurrent_compiles.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        });
        if max_concurrent_compiles == 0 {
            bail!("`catalog.max_concurrent_compiles` must be at least 1");
        }
        let envelope_cache_entries = self
            .catalog
            .envelope_cache_entries
            .unwrap_or(crate::service::envelopes::DEFAULT_ENTRIES);
        if envelope_cache_entries == 0 {
            bail!("`catalog.envelope_cache_entries` must be at least 1");
        }
        let duration = |value: &Option<String>, key: &str, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(text).with_context(|| {
                format!("`{key}` {text:?} is not a duration (e.g. 500ms, 30s, 5m, 24h, 90d)")
            }),
        };
        let site_check_interval = duration(
            &self.catalog.site_check_interval,
            "catalog.site_check_interval",
            Duration::from_secs(1),
        )?;
        let wait_timeout = duration(
            &self.catalog.wait_timeout,
            "catalog.wait_timeout",
            Duration::from_secs(55),
        )?;
        let certificate_lifetime = duration(
            &self.catalog.certificate_lifetime,
            "catalog.certificate_lifetime",
            Duration::from_secs(90 * 86_400),
        )?;
        if certificate_lifetime < Duration::from_secs(86_400) {
            bail!("`catalog.certificate_lifetime` must be at least 1d");
        }
        let skew = duration(
            &self.requests.max_clock_skew,
            "requests.max_clock_skew",
            Duration::from_secs(300),
        )?;
        let max_clock_skew_secs = u32::try_from(skew.as_secs())
            .ok()
            .filter(|secs| (1..=3600).contains(secs))
            .context("`requests.max_clock_skew` must be between 1s and 1h")?;
        let enroll = EnrollSettings {
            allow_without_token: self.enroll.allow_without_token.unwrap_or(false),
            per_address_per_minute: self.enroll.per_address_per_minute.unwrap_or(10),
            per_token_per_minute: self.enroll.per_token_per_minute.unwrap_or(30),
        };
        if enroll.per_address_per_minute == 0 || enroll.per_token_per_minute == 0 {
            bail!("`enroll.per_address_per_minute` and `enroll.per_token_per_minute` must be at least 1");
        }
        let retention = match &self.retention.runs_max_age {
            None => {
                if self.retention.interval.is_some() || self.retention.batch_size.is_some() {
                    bail!("`retention.interval` and `retention.batch_size` need `retention.runs_max_age`");
                }
                None
            }
            Some(_) => {
                let runs_max_age = duration(
                    &self.retention.runs_max_age,
                    "retention.runs_max_age",
                    Duration::ZERO,
                )?;
                if runs_max_age < Duration::from_secs(3600) {
                    bail!("`retention.runs_max_age` must be at least 1h");
                }
                let interval = duration(
                    &self.retention.interval,
                    "retention.interval",
                    Duration::from_secs(3600),
                )?;
                if interval.is_zero() {
                    bail!("`retention.interval` must be more than 0");
                }
                let batch_size = self.retention.batch_size.unwrap_or(500);
                if batch_size == 0 {
                    bail!("`retention.batch_size` must be at least 1");
                }
                Some(RetentionSettings {
                    runs_max_age,
                    interval,
                    batch_size,
                })
            }
        };
        let ui = resolve_ui(self.ui, &duration)?;
        let connections = resolve_connections(&self.connections, &duration)?;
        let vault = match (self.vault, self.vault_data_file) {
            (Some(_), Some(_)) => bail!("set `[vault]` or `vault_data_file`, not both"),
            (Some(vault), None) => VaultSource::Vault(vault),
            (None, Some(file)) => VaultSource::File(file),
            (None, None) => bail!(
                "no Vault configured: add a `[vault]` table (see `steward-server config example`)"
            ),
        };
        Ok(ServerConfig {
            listen,
            plain_listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            site_dir: self.site.unwrap_or_else(|| PathBuf::from(DEFAULT_SITE_DIR)),
            public_url: self.public_url,
            tls,
            admin_token,
            max_concurrent_compiles,
            site_check_interval,
            wait_timeout,
            certificate_lifetime,
            envelope_cache_entries,
            enroll,
            max_clock_skew_secs,
            vault,
            retention,
            ui,
            connections,
        })
    }
}

fn resolve_connections(
    section: &ConnectionsSection,
    duration: DurationKey<'_>,
) -> anyhow::Result<ConnectionSettings> {
    let defaults = ConnectionSettings::default();
    let timeout = |value: &Option<String>, key: &str, default: Duration| {
        let resolved = duration(value, key, default)?;
        if resolved.is_zero() {
            bail!("`{key}` must be more than 0");
        }
        Ok::<_, anyhow::Error>(resolved)
    };
    let settings = ConnectionSettings {
        header_read_timeout: timeout(
            &section.header_read_timeout,
            "connections.header_read_timeout",
            defaults.header_read_timeout,
        )?,
        body_idle_timeout: timeout(
            &section.body_idle_timeout,
            "connections.body_idle_timeout",
            defaults.body_idle_timeout,
        )?,
        tls_handshake_timeout: timeout(
            &section.tls_handshake_timeout,
            "connections.tls_handshake_timeout",
            defaults.tls_handshake_timeout,
        )?,
        max_connections: section.max_connections.unwrap_or(defaults.max_connections),
        max_connections_per_address: section
            .max_connections_per_address
            .unwrap_or(defaults.max_connections_per_address),
    };
    if settings.max_connections == 0 || settings.max_connections_per_address == 0 {
        bail!("`connections.max_connections` and `connections.max_connections_per_address` must be at least 1");
    }
    if settings.max_connections_per_address > settings.max_connections {
        bail!("`connections.max_connections_per_address` must not exceed `connections.max_connections`");
    }
    Ok(settings)
}

/// Parses an optional duration key, with its default (the closure in [`Config::resolve`]).
type DurationKey<'a> = &'a dyn Fn(&Option<String>, &str, Duration) -> anyhow::Result<Duration>;

fn resolve_ui(section: UiSection, duration: DurationKey<'_>) -> anyhow::Result<UiSettings> {
    let defaults = UiSettings::default();
    let admin_password_hash = match section.admin_password_hash {
        None => None,
        Some(text) => {
            let text = text.trim().to_owned();
            let parsed = argon2::PasswordHash::new(&text).map_err(|_| {
                anyhow::anyhow!(
                    "`ui.admin_password_hash` is not a PHC string; make one with \
                     `steward-server ui hash-password`"
                )
            })?;
            if parsed.algorithm.as_str() != "argon2id" {
                bail!("`ui.admin_password_hash` must be an argon2id hash (`steward-server ui hash-password`)");
            }
            Some(PasswordHashText(text))
        }
    };
    let trusted_proxies = section
        .trusted_proxies
        .iter()
        .map(|text| ProxySource::parse(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if admin_password_hash.is_some()
        && !trusted_proxies.is_empty()
        && !section.break_glass_local_login.unwrap_or(false)
    {
        bail!(
            "`ui.admin_password_hash` and `ui.trusted_proxies` are both set: with forward auth, \
             local login is for break-glass only; set `ui.break_glass_local_login = true` to keep it"
        );
    }
    let admin_group = section.admin_group.unwrap_or(defaults.admin_group);
    if admin_group.trim().is_empty() {
        bail!("`ui.admin_group` must not be empty");
    }
    let settings = UiSettings {
        admin_password_hash,
        trusted_proxies,
        admin_group,
        session_idle: duration(
            &section.session_idle,
            "ui.session_idle",
            defaults.session_idle,
        )?,
        session_max: duration(&section.session_max, "ui.session_max", defaults.session_max)?,
        login_failures_per_address: section
            .login_failures_per_address
            .unwrap_or(defaults.login_failures_per_address),
        login_failures_total: section
            .login_failures_total
            .unwrap_or(defaults.login_failures_total),
        login_window: duration(
            &section.login_window,
            "ui.login_window",
            defaults.login_window,
        )?,
        report_interval: duration(
            &section.report_interval,
            "ui.report_interval",
            defaults.report_interval,
        )?,
        report_splay: duration(
            &section.report_splay,
            "ui.report_splay",
            defaults.report_splay,
        )?,
    };
    if settings.session_idle.is_zero() || settings.session_max < settings.session_idle {
        bail!("`ui.session_idle` must be more than 0 and at most `ui.session_max`");
    }
    if settings.login_failures_per_address == 0 || settings.login_failures_total == 0 {
        bail!("`ui.login_failures_per_address` and `ui.login_failures_total` must be at least 1");
    }
    if settings.login_window.is_zero() || settings.report_interval.is_zero() {
        bail!("`ui.login_window` and `ui.report_interval` must be more than 0");
    }
    Ok(settings)
}

/// Loads the config for an admin command: `--config FILE` if given (it must exist), else the
/// default file if it exists, else the defaults.
pub fn load_for_admin(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(path),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(Path::new(DEFAULT_CONFIG_PATH))
        }
        None => Ok(Config::default()),
    }
}

/// `127.0.0.1:8080`, `[::1]:8080` or `unix:/run/steward/server.sock`. Anything reachable from
/// another host is refused: the plain listener is for a TLS-terminating proxy on this host.
pub fn parse_plain_listen(text: &str) -> anyhow::Result<PlainAddr> {
    if let Some(path) = text.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            bail!("`plain_listen` {text:?}: the unix socket path must be absolute");
        }
        return Ok(PlainAddr::Unix(path));
    }
    let addr: SocketAddr = text.parse().with_context(|| {
        format!("`plain_listen` {text:?} is not a loopback ADDR:PORT or unix:/path")
    })?;
    if !addr.ip().is_loopback() {
        bail!(
            "`plain_listen` {text:?} is not a loopback address; plain HTTP is only for a proxy on \
             this host (use 127.0.0.1:PORT or unix:/path)"
        );
    }
    Ok(PlainAddr::Tcp(addr))
}

/// Parses `500ms`, `30s`, `5m`, `24h`, `90d` (one number, one unit).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => return Some(Duration::from_millis(number)),
        "s" => number,
        "m" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        "d" => number.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

fn read_admin_token(path: &Path) -> anyhow::Result<AdminTokenHash> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading `admin.token_file` {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "`admin.token_file` {} is readable by group or others; chmod 600 it",
                path.display()
            );
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading `admin.token_file` {}", path.display()))?,
    );
    let token = text.trim();
    if token.len() < 16 {
        bail!(
            "`admin.token_file` {} holds fewer than 16 characters; use a long random token",
            path.display()
        );
    }
    Ok(AdminTokenHash(Sha256::digest(token.as_bytes()).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_resolves() {
        let config = Config::parse(EXAMPLE).unwrap();
        let resolved = config.resolve().unwrap();
        assert_eq!(resolved.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(resolved.wait_timeout, Duration::from_secs(55));
    }

    #[test]
    fn plain_listener_must_be_loopback_or_unix() {
        assert!(parse_plain_listen("127.0.0.1:8080").is_ok());
        assert!(parse_plain_listen("[::1]:8080").is_ok());
        assert!(parse_plain_listen("unix:/run/steward.sock").is_ok());
        for bad in [
            "0.0.0.0:8080",
            "10.0.0.1:80",
            "unix:relative.sock",
            "localhost",
        ] {
            assert!(parse_plain_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_and_half_tls_are_refused() {
        assert!(Config::parse("lisen = \"x\"").is_err());
        let half = Config::parse("vault_data_file = \"/x\"\n[tls]\ncert = \"/a\"\n").unwrap();
        assert!(half.resolve().is_err());
    }

    #[test]
    fn retention_is_off_by_default_and_validated() {
        let base = "vault_data_file = \"/x\"\n";
        let off = Config::parse(base).unwrap().resolve().unwrap();
        assert_eq!(off.retention, None);
        let on = Config::parse(&format!("{base}[retention]\nruns_max_age = \"90d\"\n"))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(
            on.retention,
            Some(RetentionSettings {
                runs_max_age: Duration::from_secs(90 * 86_400),
                interval: Duration::from_secs(3600),
                batch_size: 500,
            })
        );
        for bad in [
            "runs_max_age = \"30m\"",
            "runs_max_age = \"90x\"",
            "runs_max_age = \"90d\"\ninterval = \"0s\"",
            "runs_max_age = \"90d\"\nbatch_size = 0",
            "interval = \"1h\"",
        ] {
            let config = Config::parse(&format!("{base}[retention]\n{bad}\n")).unwrap();
            assert!(config.resolve().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90d"),
            Some(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5w"), None);
    }
}
