//! System settings (admin): the values in effect, the stored overrides and a form to change
//! them. Every setting here takes effect at the next restart of `vertebrad serve`.

use std::collections::HashMap;

use axum::extract::{Extension, Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::{csrf_field, layout, utc};
use crate::store::AuditOutcome;
use crate::web::AppState;
use crate::web::auth::{self, CurrentUser};
use crate::web::settings::{SETTINGS, parse};

/// `GET /settings`.
pub async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    let stored = match state.store.settings().await {
        Ok(s) => s,
        Err(e) => return super::store_error(&e),
    };
    let body = html! {
        h1 { "Settings" }
        div.banner.info { "Changes are stored at once and take effect when vertebrad restarts (systemctl restart vertebrad)." }
        form method="post" action="/settings" {
            (csrf_field(&user))
            table {
                tr { th { "Setting" } th { "In effect now" } th { "Stored for next start" } th { "New value" } th { "" } }
                @for def in &SETTINGS {
                    @let s = stored.iter().find(|s| s.key == def.key);
                    tr {
                        td { strong { (def.label) } br; span.muted { (def.key) ": " (def.help) } }
                        td.num { ((def.current)(&state.config)) }
                        td { @if let Some(s) = s { (s.value) " " span.muted { "(" (s.updated_by) ", " (utc(s.updated_at_ms)) ")" } } @else { span.muted { "—" } } }
                        td { input name=(def.key) size="12" placeholder="unchanged"; }
                        td.muted { "restart" }
                    }
                }
            }
            button type="submit" { "Save" }
        }
    };
    layout("Settings", Some(&user), &body).into_response()
}

/// `POST /settings`: validates every filled-in value first; stores all or none.
#[allow(clippy::implicit_hasher)] // the query/form extractor type; the hasher is not ours to choose
pub async fn submit(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let peer = auth::peer(&ext);
    let mut changes = Vec::new();
    for def in &SETTINGS {
        let Some(v) = form.get(def.key).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        match parse(def, v) {
            Ok((x, text)) => changes.push((def, x, text)),
            Err(m) => return super::invalid(&user, "Settings", &m, "/settings"),
        }
    }
    let mut candidate = (*state.config).clone();
    for (def, x, _) in &changes {
        (def.apply)(&mut candidate, *x);
    }
    if let Err(m) = candidate.validate() {
        return super::invalid(&user, "Settings", &m, "/settings");
    }
    for (def, _, text) in &changes {
        if let Err(e) = state
            .store
            .put_setting(def.key, text, &user.user.username)
            .await
        {
            return super::store_error(&e);
        }
        auth::audit(
            &state,
            &user.user.username,
            "settings.change",
            Some(format!("{} = {text}", def.key)),
            &peer,
            AuditOutcome::Success,
        )
        .await;
    }
    Redirect::to("/settings").into_response()
}
