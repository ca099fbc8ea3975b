//! "Managed for me": a read-only page for a workstation user, identified by forward auth and
//! mapped to a roster entry through its `authentik_user`. It shows only that person's
//! resources; nothing else of the fleet (no links to node or run pages, which are for admins).

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use crate::state::AppState;
use crate::ui::auth::UiUser;
use crate::ui::roster::{find_by_sso, person_view, PersonView};
use crate::ui::{render, Layout, UiError};

/// The page.
#[derive(Debug, Template)]
#[template(path = "ui/me.html")]
pub struct MePage {
    layout: Layout,
    person: Option<PersonView>,
    message: String,
}

/// `GET /ui/me`.
pub async fn page(State(state): State<AppState>, user: UiUser) -> Result<Response, UiError> {
    let layout = Layout::new(&user, "me", "Managed for me");
    let Some(sso_user) = user.sso_user.as_deref() else {
        return Ok(render(&MePage {
            layout,
            person: None,
            message: "This page is for people signed in through SSO; the admin login has no \
                      roster entry."
                .into(),
        }));
    };
    let person = match find_by_sso(&state, sso_user).await {
        Ok(Some(person)) => person,
        Ok(None) => {
            return Ok(render(&MePage {
                layout,
                person: None,
                message: format!(
                    "No roster entry has authentik_user {sso_user:?}: nothing is managed for you."
                ),
            }))
        }
        Err(_) => {
            return Ok(render(&MePage {
                layout,
                person: None,
                message: "The site cannot be read right now; try again later.".into(),
            }))
        }
    };
    let view = person_view(&state, &person, user.admin).await?;
    Ok(render(&MePage {
        layout,
        person: Some(view),
        message: String::new(),
    }))
}
