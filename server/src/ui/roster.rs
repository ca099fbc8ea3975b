//! The roster: people × tier × hosts × the last result of their resources on each host, and a
//! page per person (also the "managed for me" page's content, [`crate::ui::me`]).
//!
//! The roster is read from the site directory at each view (it is small and the site may be
//! mid-edit; a broken site shows its error instead). A resource is a person's when it is their
//! account (`user:<name>`), lies in their home, or names them as a word of its id
//! (`service:app@emo`, `/etc/sudoers.d/emo`).
//!
//! Deferred changes and drift of a person's resources are listed at the top of their page, so
//! that a demotion that kept `sudo` or a restart waiting for them is visible to them and to
//! admins; `kept` and `deferred` never count as failing.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use steward_catalogs::model::RosterUser;
use steward_protocol::{RunId, Timestamp};

use crate::service;
use crate::state::AppState;
use crate::ui::auth::UiUser;
use crate::ui::queries::{self, PersonEvent};
use crate::ui::text::{clean, clean_short};
use crate::ui::{ago, drift_badge, notice_legend, render, Badge, Layout, LegendItem, UiError};

/// One roster person with their results per host.
#[derive(Debug, Clone)]
pub struct PersonRow {
    /// OS user name.
    pub name: String,
    /// Link.
    pub href: String,
    /// SSO user.
    pub sso: String,
    /// Tier.
    pub tier: String,
    /// Lifecycle badge.
    pub state: Badge,
    /// Per host: (host, badge).
    pub hosts: Vec<(String, String, Badge)>,
}

/// The roster page.
#[derive(Debug, Template)]
#[template(path = "ui/roster.html")]
pub struct RosterPage {
    layout: Layout,
    people: Vec<PersonRow>,
    site_error: Option<String>,
}

/// One resource of a person on a host.
#[derive(Debug, Clone)]
pub struct ResourceRow {
    /// Resource id.
    pub resource: String,
    /// Badge.
    pub badge: Badge,
    /// Message.
    pub message: String,
    /// Drift notice, empty when none.
    pub drift: String,
    /// The drift badge, shown with `drift`.
    pub drift_badge: Badge,
}

/// A drift or deferred item that concerns the person, for the top of their page.
#[derive(Debug, Clone)]
pub struct PersonNotice {
    /// Host.
    pub host: String,
    /// Resource id.
    pub resource: String,
    /// `deferred` or `drift`.
    pub badge: Badge,
    /// The agent's message or the drift text.
    pub text: String,
}

/// A host's part of a person's page.
#[derive(Debug, Clone)]
pub struct HostSection {
    /// Host.
    pub host: String,
    /// Link (admins only).
    pub href: Option<String>,
    /// Run link (admins only).
    pub run_href: Option<String>,
    /// When the run was.
    pub when: String,
    /// Overall badge.
    pub badge: Badge,
    /// Resources.
    pub resources: Vec<ResourceRow>,
}

/// What the person page shows about a person.
#[derive(Debug, Clone)]
pub struct PersonView {
    /// OS user.
    pub name: String,
    /// SSO user.
    pub sso: String,
    /// Tier.
    pub tier: String,
    /// Lifecycle.
    pub state: Badge,
    /// Namespaces.
    pub namespaces: String,
    /// Hosts.
    pub hosts: Vec<HostSection>,
    /// Deferred changes and drift of the person's resources, on every host.
    pub notices: Vec<PersonNotice>,
    /// What the notice badges mean (when there are notices).
    pub legend: Vec<LegendItem>,
}

/// The person page.
#[derive(Debug, Template)]
#[template(path = "ui/person.html")]
pub struct PersonPage {
    layout: Layout,
    person: PersonView,
}

/// The last real run's events of every approved node: node → (run, start, events).
type LastEvents = BTreeMap<String, (RunId, Timestamp, Vec<PersonEvent>)>;

async fn last_events(state: &AppState, people: &[&RosterUser]) -> Result<LastEvents, UiError> {
    let needles: Vec<&str> = people.iter().map(|person| person.name.as_str()).collect();
    Ok(queries::last_run_events_mentioning(&state.db, &needles)
        .await?
        .into_iter()
        .map(|last| (last.node, (last.run_id, last.started_at, last.events)))
        .collect())
}

/// Which resource ids are a person's.
#[derive(Debug, Clone)]
pub struct Owner {
    name: String,
    home: String,
    home_prefix: String,
}

impl Owner {
    /// The matcher of a roster user.
    pub fn of(user: &RosterUser) -> Owner {
        let home = user
            .home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", user.name));
        Owner {
            name: user.name.clone(),
            home_prefix: format!("{home}/"),
            home,
        }
    }

    /// Whether `resource` is this person's (every id it accepts contains the person's name,
    /// which [`queries::last_run_events_mentioning`] relies on).
    pub fn owns(&self, resource: &str) -> bool {
        let (kind, name) = resource.split_once(':').unwrap_or(("", resource));
        if kind == "user" {
            return name == self.name;
        }
        if name == self.home || name.starts_with(&self.home_prefix) {
            return true;
        }
        name.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word == self.name)
    }
}

fn status_badge(status: &str) -> Badge {
    match status {
        "failed" => Badge::new("failed", "failed"),
        "skipped" => Badge::new("skipped", "warn"),
        "changed" => Badge::new("changed", "changed"),
        "would_change" => Badge::new("would change", "info"),
        "kept" => Badge::new("kept", "info"),
        "deferred" => Badge::new("deferred", "warn"),
        _ => Badge::new("in place", "ok"),
    }
}

fn summary_badge(statuses: &[&str]) -> Badge {
    let failed = statuses
        .iter()
        .filter(|s| **s == "failed" || **s == "skipped")
        .count();
    if failed > 0 {
        Badge::new(format!("{failed} failing"), "failed")
    } else {
        Badge::new(format!("{} in place", statuses.len()), "ok")
    }
}

fn state_badge(user: &RosterUser) -> Badge {
    let state = user.state.as_str();
    let class = match state {
        "present" => "ok",
        "offboarded" => "warn",
        _ => "muted",
    };
    Badge::new(state, class)
}

async fn load_site(state: &AppState) -> Result<steward_catalogs::model::Site, String> {
    let dir = state.config.site_dir.clone();
    tokio::task::spawn_blocking(move || steward_catalogs::loader::load_site_dir(&dir))
        .await
        .map_err(|_| "reading the site failed".to_owned())?
        .map_err(|error| clean(&error.to_string()))
}

/// `GET /ui/roster`.
pub async fn page(State(state): State<AppState>, user: UiUser) -> Result<Response, UiError> {
    let layout = Layout::new(&user, "roster", "Roster");
    let site = match load_site(&state).await {
        Ok(site) => site,
        Err(message) => {
            return Ok(render(&RosterPage {
                layout,
                people: Vec::new(),
                site_error: Some(message),
            }))
        }
    };
    let everyone: Vec<&RosterUser> = site.roster.users.iter().collect();
    let events = last_events(&state, &everyone).await?;
    let people = site
        .roster
        .users
        .iter()
        .map(|person| {
            let owner = Owner::of(person);
            let hosts = events
                .iter()
                .filter_map(|(host, (_, _, list))| {
                    let statuses: Vec<&str> = list
                        .iter()
                        .filter(|(resource, _, _, _)| owner.owns(resource))
                        .map(|(_, status, _, _)| status.as_str())
                        .collect();
                    (!statuses.is_empty()).then(|| {
                        (
                            host.clone(),
                            format!("/ui/nodes/{host}"),
                            summary_badge(&statuses),
                        )
                    })
                })
                .collect();
            PersonRow {
                href: format!("/ui/roster/{}", person.name),
                name: person.name.clone(),
                sso: person.authentik_user.clone(),
                tier: person.tier.clone(),
                state: state_badge(person),
                hosts,
            }
        })
        .collect();
    Ok(render(&RosterPage {
        layout,
        people,
        site_error: None,
    }))
}

/// The person view of a roster user: their resources on every host, with links for admins.
pub async fn person_view(
    state: &AppState,
    person: &RosterUser,
    admin: bool,
) -> Result<PersonView, UiError> {
    let now = service::now();
    let owner = Owner::of(person);
    let events = last_events(state, &[person]).await?;
    let mut notices = Vec::new();
    for (host, (_, _, list)) in &events {
        for (resource, status, message, drift) in list {
            if !owner.owns(resource) {
                continue;
            }
            if status == "deferred" {
                notices.push(PersonNotice {
                    host: host.clone(),
                    resource: clean(resource),
                    badge: status_badge(status),
                    text: message
                        .as_deref()
                        .map(|m| clean_short(m, 300))
                        .unwrap_or_default(),
                });
            }
            if let Some(drift) = drift {
                notices.push(PersonNotice {
                    host: host.clone(),
                    resource: clean(resource),
                    badge: drift_badge(),
                    text: clean_short(drift, 300),
                });
            }
        }
    }
    let hosts = events
        .iter()
        .filter_map(|(host, (run_id, started, list))| {
            let resources: Vec<ResourceRow> = list
                .iter()
                .filter(|(resource, _, _, _)| owner.owns(resource))
                .map(|(resource, status, message, drift)| ResourceRow {
                    resource: clean(resource),
                    badge: status_badge(status),
                    message: message
                        .as_deref()
                        .map(|m| clean_short(m, 300))
                        .unwrap_or_default(),
                    drift: drift
                        .as_deref()
                        .map(|d| clean_short(d, 300))
                        .unwrap_or_default(),
                    drift_badge: drift_badge(),
                })
                .collect();
            if resources.is_empty() {
                return None;
            }
            let statuses: Vec<&str> = list
                .iter()
                .filter(|(resource, _, _, _)| owner.owns(resource))
                .map(|(_, status, _, _)| status.as_str())
                .collect();
            Some(HostSection {
                host: host.clone(),
                href: admin.then(|| format!("/ui/nodes/{host}")),
                run_href: admin.then(|| format!("/ui/runs/{run_id}")),
                when: ago(*started, now),
                badge: summary_badge(&statuses),
                resources,
            })
        })
        .collect();
    Ok(PersonView {
        name: person.name.clone(),
        sso: person.authentik_user.clone(),
        tier: person.tier.clone(),
        state: state_badge(person),
        namespaces: person.namespaces.join(", "),
        hosts,
        legend: if notices.is_empty() {
            Vec::new()
        } else {
            notice_legend()
        },
        notices,
    })
}

/// `GET /ui/roster/{user}`.
pub async fn person(
    State(state): State<AppState>,
    user: UiUser,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    let site = load_site(&state).await.map_err(UiError::Conflict)?;
    let person = site
        .roster
        .users
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            UiError::NotFound(format!("{} is not in the roster", clean_short(&name, 64)))
        })?;
    let view = person_view(&state, person, true).await?;
    Ok(render(&PersonPage {
        layout: Layout::new(&user, "roster", format!("{} — roster", person.name)),
        person: view,
    }))
}

/// The roster entry of an SSO user.
pub async fn find_by_sso(state: &AppState, sso_user: &str) -> Result<Option<RosterUser>, String> {
    let site = load_site(state).await?;
    Ok(site
        .roster
        .users
        .into_iter()
        .find(|p| p.authentik_user == sso_user))
}
