//! Enrollment: a host asks to join, the server answers with its status.

use serde::{Deserialize, Serialize};

use crate::facts::Facts;
use crate::ids::{KeyId, NodeId};

/// `POST /v1/enroll` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Requested node name (strict hostname grammar).
    pub hostname: String,
    /// The agent's ed25519 request-signing public key, base64 (32 bytes).
    pub signing_key: String,
    /// The agent's X25519 public key for sealed secrets, base64 (32 bytes).
    pub encryption_key: String,
    /// Facts, including `machine_id`.
    pub facts: Facts,
    /// Bootstrap token `<id>.<secret>`, if any. Only ever sent in this body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Agent version.
    pub agent_version: String,
}

/// Enrollment state of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentStatus {
    /// Waiting for an admin (or policy) to approve.
    Pending,
    /// May fetch catalogs.
    Approved,
    /// Refused or revoked.
    Revoked,
    /// The key was seen with two machine ids (cloned identity); an admin must intervene.
    Quarantined,
}

/// `POST /v1/enroll` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    /// The node id assigned (the hostname).
    pub node: NodeId,
    /// Current status.
    pub status: EnrollmentStatus,
    /// The server's root public key, base64; the agent checks its fingerprint against the one
    /// pinned in the join string before trusting anything else.
    pub root_key: String,
    /// Fingerprint of `root_key`.
    pub root_key_id: KeyId,
    /// Human message (why pending, what to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
