//! `steward-server check --site DIR [--vault-data FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use steward_catalogs::compile::Compiler;
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
    let mut errors = match Compiler::new(&site) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0,
    };
    if let Some(path) = vault_data {
        let data = match load_vault_file(path) {
            Ok(data) => data,
            Err(LoadError::Site(errors)) => return Ok(Err(errors)),
            Err(other) => return Err(other).context("loading the vault data"),
        };
        errors.extend(vault::check_roles(&site, &data));
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
