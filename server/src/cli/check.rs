//! `steward-server check --site DIR [--vault-data FILE]`: the CI gate for site changes. It finds
//! every error a compile for any host would find: the site's own rules, then a compile of
//! every host shape (`steward_catalogs::compile::check_host_shapes`), with the given Vault data
//! or, without it, a stand-in that leaves out only what real Vault data decides.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use steward_catalogs::compile::{check_host_shapes, Compiler};
use steward_catalogs::loader::{load_site_dir, load_vault_file, LoadError};
use steward_catalogs::{vault, SiteErrors};

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The site directory (roster.yaml, tiers.yaml, site.yaml, files/).
    #[arg(long, value_name = "DIR")]
    pub site: PathBuf,
    /// Vault data in the offline YAML shape; enables the roster-vs-Vault role checks.
    #[arg(long, value_name = "FILE")]
    pub vault_data: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    match validate(&args.site, args.vault_data.as_deref())? {
        Ok(summary) => {
            println!("{}: ok ({summary})", args.site.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            super::print_site_errors(&args.site, &errors);
            eprintln!("{}: {} error(s)", args.site.display(), errors.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Loads and validates a site (and, with Vault data, the roles). `Ok(Err(..))` holds the site's
/// own errors; `Err` is an I/O problem.
pub(crate) fn validate(
    site_dir: &std::path::Path,
    vault_data: Option<&std::path::Path>,
) -> anyhow::Result<Result<String, SiteErrors>> {
    let site = match load_site_dir(site_dir) {
        Ok(site) => site,
        Err(LoadError::Site(errors)) => return Ok(Err(errors)),
        Err(other) => return Err(other).context("loading the site"),
    };
    let vault = match vault_data {
        Some(path) => match load_vault_file(path) {
            Ok(data) => Some(data),
            Err(LoadError::Site(errors)) => return Ok(Err(errors)),
            Err(other) => return Err(other).context("loading the vault data"),
        },
        None => None,
    };
    let mut errors = match Compiler::new(&site) {
        Ok(compiler) => check_host_shapes(&compiler, vault.as_ref(), crate::service::now()),
        Err(errors) => errors.0,
    };
    if let Some(data) = &vault {
        errors.extend(vault::check_roles(&site, data));
    }
    if errors.is_empty() {
        Ok(Ok(format!(
            "{} users, {} tiers, {} classes",
            site.roster.users.len(),
            site.tiers.len(),
            site.config.classes.len()
        )))
    } else {
        errors.sort();
        errors.dedup();
        Ok(Err(SiteErrors(errors)))
    }
}
