//! steward-catalogs: the compiler. Site + Vault data + node + state + "now" in, catalog out.
//!
//! **Invariant:** nothing here does I/O except [`loader`], the small edge that reads a site
//! directory into memory; parsing ([`site`], [`vault`]), validation and [`compile`] are pure:
//! no filesystem, network, clock or randomness. The same inputs give the same bytes.
//!
//! - [`yaml`]: the one place that parses YAML, into a tree that keeps line numbers.
//! - [`site`]: `roster.yaml`, `tiers.yaml`, `site.yaml`, `files/**` → [`model::Site`], with
//!   every error as `FILE:LINE: field: message`.
//! - [`vault`]: Vault data in the offline file shape, and the roster-vs-Vault role check.
//! - [`template`] and [`compile`]: resource templates and minijinja files → [`steward_protocol::Catalog`].

pub mod compile;
pub mod loader;
pub mod model;
pub mod site;
pub mod template;
pub mod vault;
pub mod yaml;

pub use model::{Loc, Site, SiteError, SiteErrors, State, VaultData};
