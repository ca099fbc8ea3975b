//! The parts of Vault's JSON responses the client reads. Unknown fields are ignored (Vault and
//! OpenBao add fields between versions); parse errors are discarded by the caller, never shown.

use serde::Deserialize;
use serde_json::{Map, Value};

/// `GET /v1/<mount>/data/<path>`.
#[derive(Deserialize)]
pub(crate) struct KvRead {
    pub(crate) data: Option<KvReadData>,
}

#[derive(Deserialize)]
pub(crate) struct KvReadData {
    /// `null` when the latest version is deleted or destroyed.
    pub(crate) data: Option<Map<String, Value>>,
    pub(crate) metadata: Option<KvMetadata>,
}

#[derive(Deserialize)]
pub(crate) struct KvMetadata {
    pub(crate) version: u64,
}

/// `POST /v1/auth/<mount>/login`.
#[derive(Deserialize)]
pub(crate) struct Login {
    pub(crate) auth: LoginAuth,
}

#[derive(Deserialize)]
pub(crate) struct LoginAuth {
    /// Wrapped into a `Secret` right after parsing.
    pub(crate) client_token: String,
    pub(crate) lease_duration: u64,
    #[serde(default)]
    pub(crate) renewable: bool,
}

/// `POST /v1/auth/token/renew-self` (its `client_token` is not read).
#[derive(Deserialize)]
pub(crate) struct Renew {
    pub(crate) auth: RenewAuth,
}

#[derive(Deserialize)]
pub(crate) struct RenewAuth {
    pub(crate) lease_duration: u64,
    #[serde(default)]
    pub(crate) renewable: bool,
}

/// `GET /v1/auth/token/lookup-self` (its `id` is not read).
#[derive(Deserialize)]
pub(crate) struct Lookup {
    pub(crate) data: LookupData,
}

#[derive(Deserialize)]
pub(crate) struct LookupData {
    /// Seconds left; 0 for a token that never expires (root).
    pub(crate) ttl: u64,
    #[serde(default)]
    pub(crate) creation_ttl: u64,
    #[serde(default)]
    pub(crate) renewable: bool,
}

/// `GET /v1/sys/health`.
#[derive(Deserialize)]
pub(crate) struct Health {
    #[serde(default)]
    pub(crate) initialized: Option<bool>,
    #[serde(default)]
    pub(crate) sealed: Option<bool>,
}
