//! `steward-server add-user --site DIR`: the onboarding wizard.
//!
//! Order matters (seed 004: validate before any mutation): collect the entry, build the roster
//! as it would be, validate the *whole resulting site* (and the Vault role when Vault data is
//! given), and only then replace `roster.yaml` atomically (temp file in the same directory,
//! fsync, rename, fsync the directory). A failure at any step leaves the file untouched.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use steward_catalogs::compile::Compiler;
use steward_catalogs::loader::read_site_files;
use steward_catalogs::site::parse_site;
use steward_catalogs::{vault, SiteErrors};

use super::store::{runtime, vault_backend, StoreArgs};
use crate::roster_edit::{append_user, NewUser};
use crate::service::vault_source::VaultBackend;

/// Arguments of `add-user`. Anything not given is asked for on the terminal.
#[derive(Debug, Args)]
pub struct AddUserArgs {
    /// The site directory whose roster.yaml gets the new entry.
    #[arg(long, value_name = "DIR")]
    pub site: PathBuf,
    /// Linux account name (the roster key).
    #[arg(long)]
    pub os_user: Option<String>,
    /// SSO (Authentik) user name.
    #[arg(long)]
    pub authentik_user: Option<String>,
    /// Key in Vault k8s_users (default: the os_user).
    #[arg(long)]
    pub k8s_user: Option<String>,
    /// Tier (one of tiers.yaml).
    #[arg(long)]
    pub tier: Option<String>,
    /// Kubernetes namespaces, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Option<Vec<String>>,
    /// Code layout: single (default) or workspace.
    #[arg(long)]
    pub code_layout: Option<String>,
    /// Extra repositories for the workspace layout, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub repos: Option<Vec<String>>,
    /// Vault data (offline YAML shape) to check the tier against k8s_users before writing.
    /// Without it, the Vault of the server config (--config) is used when there is one.
    #[arg(long, value_name = "FILE")]
    pub vault_data: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Show the entry and validate, but do not write.
    #[arg(long)]
    pub dry_run: bool,
    /// Ask for missing values even when standard input is not a terminal (for scripted tests).
    #[arg(long, hide = true)]
    pub prompt: bool,
}

pub fn run(args: AddUserArgs) -> anyhow::Result<ExitCode> {
    let files = read_site_files(&args.site).context("reading the site")?;
    let roster_path = args.site.join("roster.yaml");
    let original = files
        .get("roster.yaml")
        .cloned()
        .with_context(|| format!("{} does not exist", roster_path.display()))?;
    let tiers = known_tiers(&files);

    let interactive = args.prompt || io::stdin().is_terminal();
    let mut input = Prompter::new(interactive);
    let os_user = input.required("os_user", "Linux account name", args.os_user, None)?;
    let authentik_user = input.required(
        "authentik_user",
        "SSO (Authentik) user name",
        args.authentik_user,
        None,
    )?;
    let k8s_user = input.required(
        "k8s_user",
        "key in Vault k8s_users",
        args.k8s_user,
        Some(os_user.clone()),
    )?;
    let tier_help = format!("tier ({})", tiers.join(", "));
    let tier = input.required("tier", &tier_help, args.tier, None)?;
    let namespaces = input.list(
        "namespaces",
        "Kubernetes namespaces, comma separated",
        args.namespaces,
    )?;
    let code_layout = input.optional(
        "code_layout",
        "code layout: single or workspace",
        args.code_layout,
    )?;
    let repos = if code_layout.as_deref() == Some("workspace") {
        input.list("repos", "extra repositories, comma separated", args.repos)?
    } else {
        args.repos.unwrap_or_default()
    };
    let user = NewUser {
        os_user,
        authentik_user,
        k8s_user,
        tier,
        namespaces,
        code_layout: code_layout.filter(|l| l != "single"),
        repos,
    };

    let updated = append_user(&original, &user).context("editing roster.yaml")?;
    let mut candidate = files;
    candidate.insert("roster.yaml".into(), updated.clone());
    let vault = vault_backend(&args.store, args.vault_data.as_deref())?;
    if let Err(errors) = validate_candidate(&candidate, vault.as_ref())? {
        eprintln!(
            "not adding {}: the roster would not be valid:",
            user.os_user
        );
        super::print_site_errors(&args.site, &errors);
        return Ok(ExitCode::FAILURE);
    }
    let entry = crate::roster_edit::render_entry(&user);
    if args.dry_run {
        println!("would add to {}:\n  {entry}", roster_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    replace_atomically(&roster_path, &original, &updated)?;
    println!("added to {}:\n  {entry}", roster_path.display());
    println!("next: commit roster.yaml; hosts pick it up on their next run (or `steward-server node run-now NAME`)");
    Ok(ExitCode::SUCCESS)
}

fn known_tiers(files: &BTreeMap<String, String>) -> Vec<String> {
    match parse_site(files) {
        Ok(site) => site.tiers.keys().cloned().collect(),
        Err(_) => Vec::new(),
    }
}

fn validate_candidate(
    files: &BTreeMap<String, String>,
    vault: Option<&VaultBackend>,
) -> anyhow::Result<Result<(), SiteErrors>> {
    let site = match parse_site(files) {
        Ok(site) => site,
        Err(errors) => return Ok(Err(errors)),
    };
    let mut errors = Compiler::new(&site).err().map(|e| e.0).unwrap_or_default();
    if let Some(vault) = vault {
        // The role check reads only the roles path (secret/platform -> k8s_users).
        let paths = std::collections::BTreeSet::from([site.config.vault.roles_path.clone()]);
        let data = runtime()?
            .block_on(vault.read_many(&paths))
            .with_context(|| format!("reading {} from Vault", site.config.vault.roles_path))?;
        errors.extend(vault::check_roles(&site, &data));
    }
    if errors.is_empty() {
        Ok(Ok(()))
    } else {
        errors.sort();
        Ok(Err(SiteErrors(errors)))
    }
}

/// Replaces `path` with `updated` via a temp file in the same directory, refusing if the file
/// changed since it was read (another editor) and keeping its permission bits.
fn replace_atomically(path: &Path, expected: &str, updated: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let current =
        fs::read_to_string(path).with_context(|| format!("re-reading {}", path.display()))?;
    if current != expected {
        bail!(
            "{} changed while the wizard ran; nothing written, run it again",
            path.display()
        );
    }
    let permissions = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions();
    let mut temp = tempfile::Builder::new()
        .prefix(".roster.yaml.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    temp.write_all(updated.as_bytes())
        .context("writing the temp file")?;
    temp.as_file()
        .set_permissions(permissions)
        .context("setting permissions")?;
    temp.as_file().sync_all().context("syncing the temp file")?;
    temp.persist(path)
        .with_context(|| format!("renaming over {}", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Asks for values on stderr/stdin when interactive; otherwise a missing required value is an
/// error naming its flag.
struct Prompter {
    interactive: bool,
    lines: io::Lines<io::StdinLock<'static>>,
}

impl Prompter {
    fn new(interactive: bool) -> Self {
        Prompter {
            interactive,
            lines: io::stdin().lock().lines(),
        }
    }

    fn ask(&mut self, question: &str) -> anyhow::Result<Option<String>> {
        eprint!("{question}: ");
        io::stderr().flush().ok();
        match self.lines.next() {
            Some(line) => Ok(Some(
                line.context("reading standard input")?.trim().to_string(),
            )),
            None => Ok(None),
        }
    }

    fn required(
        &mut self,
        field: &str,
        question: &str,
        given: Option<String>,
        default: Option<String>,
    ) -> anyhow::Result<String> {
        if let Some(value) = given {
            return Ok(value);
        }
        if !self.interactive {
            return match default {
                Some(value) => Ok(value),
                None => bail!(
                    "missing --{} (no terminal to ask on)",
                    field.replace('_', "-")
                ),
            };
        }
        let question = match &default {
            Some(d) => format!("{question} [{d}]"),
            None => question.to_string(),
        };
        loop {
            match self.ask(&question)? {
                Some(answer) if !answer.is_empty() => return Ok(answer),
                Some(_) if default.is_some() => return Ok(default.unwrap_or_default()),
                Some(_) => eprintln!("{field} is required"),
                None => bail!("standard input ended before {field} was given"),
            }
        }
    }

    fn optional(
        &mut self,
        _field: &str,
        question: &str,
        given: Option<String>,
    ) -> anyhow::Result<Option<String>> {
        if given.is_some() || !self.interactive {
            return Ok(given);
        }
        Ok(self
            .ask(&format!("{question} (empty to skip)"))?
            .filter(|a| !a.is_empty()))
    }

    fn list(
        &mut self,
        field: &str,
        question: &str,
        given: Option<Vec<String>>,
    ) -> anyhow::Result<Vec<String>> {
        let answer = match given {
            Some(values) => return Ok(values.into_iter().filter(|v| !v.is_empty()).collect()),
            None => self.optional(field, question, None)?,
        };
        Ok(answer
            .map(|a| {
                a.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default())
    }
}
