//! steward-protocol: the only crate that defines Steward's wire types and the bytes that get
//! signed.
//!
//! It owns the catalog vocabulary ([`resource`]), the catalog document ([`catalog`]), facts,
//! run reports and enrollment messages, the signed envelope and the single verification function
//! ([`envelope`]), request signing for agents ([`request`]), sealed secrets ([`seal`]) and strict
//! parsing of untrusted bytes ([`strict`]).
//!
//! It must not do I/O: no filesystem, network, clock or ambient randomness. "Now" and random
//! bytes are always passed in.
#![deny(missing_docs)]

pub mod calendar;
pub mod catalog;
pub mod enroll;
pub mod envelope;
pub mod facts;
pub mod ids;
pub mod join;
pub mod privileged;
pub mod report;
pub mod request;
pub mod resource;
pub mod rules;
pub mod seal;
pub mod secret;
pub mod strict;

pub use catalog::{is_normal_absolute_path, Catalog, CatalogError, DocumentType, Provenance};
pub use enroll::{EnrollRequest, EnrollResponse, EnrollmentStatus};
pub use envelope::{
    canonical_bytes, catalog_digest, issue_certificate, sign_catalog, verify_catalog, Accepted,
    CatalogEnvelope, Refusal, SignError, SigningKeyPair, VerifiedCatalog,
};
pub use facts::Facts;
pub use ids::{is_valid_hostname, KeyId, NodeId, ResourceId, RunId, Serial, Timestamp};
pub use privileged::{is_privileged, PRIVILEGED_GROUPS};
pub use report::{ResourceEvent, ResourceStatus, RunReport, RunStatus, Totals};
pub use request::{sign_request, verify_request, RequestRefusal, SignedRequestHeaders};
pub use resource::*;
pub use seal::{seal_catalog_secrets, EncryptionKeyPair, SealError, SealedValue};
pub use secret::{Secret, REDACTED};
pub use strict::StrictError;

/// Format version of catalogs and certificates this build writes and accepts.
pub const CATALOG_FORMAT_VERSION: u32 = 1;

/// Largest catalog envelope an agent downloads or parses.
pub const MAX_CATALOG_BYTES: usize = 16 * 1024 * 1024;
/// Largest run report the server parses.
pub const MAX_REPORT_BYTES: usize = 8 * 1024 * 1024;
/// Largest enrollment request the server parses.
pub const MAX_ENROLL_BYTES: usize = 64 * 1024;
