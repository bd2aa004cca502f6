//! First-run setup: while no user exists, the holder of the one-time setup token (written to
//! `<state dir>/web-setup-token` by `vertebrad serve`) creates the first administrator, who
//! must then log in and choose a new password.

use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout;
use crate::store::AuditOutcome;
use crate::web::AppState;
use crate::web::auth;

/// The setup form.
#[derive(Deserialize)]
pub struct SetupForm {
    token: String,
    username: String,
    password: String,
    confirm: String,
}

fn form_page(state: &AppState, status: StatusCode, message: Option<&str>) -> Response {
    if !state.setup.armed() {
        return super::error_page(
            StatusCode::NOT_FOUND,
            "Setup is closed: an administrator exists. Log in instead.",
        );
    }
    let token = auth::new_token();
    let body = html! {
        div.login {
            h1 { "First-run setup" }
            p {
                "Enter the one-time setup token from the file " code { "web-setup-token" }
                " in the appliance's state directory (e.g. " code { "sudo cat /var/lib/vertebra/web-setup-token" }
                "), and the first administrator's name and an initial password. "
                "You will be asked to choose a new password at first login."
            }
            @if let Some(m) = message { div.banner.error { (m) } }
            form.stack method="post" action="/setup" {
                input type="hidden" name="csrf" value=(token);
                label for="token" { "Setup token" }
                input #token name="token" autocomplete="off" required;
                label for="username" { "Administrator name" }
                input #username name="username" autocomplete="username" required;
                label for="password" { "Initial password" }
                input #password name="password" type="password" autocomplete="new-password" minlength="12" required;
                label for="confirm" { "Repeat password" }
                input #confirm name="confirm" type="password" autocomplete="new-password" minlength="12" required;
                div.actions { button type="submit" { "Create administrator" } }
            }
        }
    };
    (
        status,
        [(header::SET_COOKIE, auth::pre_csrf_cookie(&token))],
        layout("Setup", None, &body),
    )
        .into_response()
}

/// `GET /setup`.
pub async fn page(State(state): State<AppState>) -> Response {
    form_page(&state, StatusCode::OK, None)
}

/// `POST /setup`.
pub async fn submit(
    State(state): State<AppState>,
    ext: axum::http::Extensions,
    Form(form): Form<SetupForm>,
) -> Response {
    let peer = auth::peer(&ext);
    if !state.setup.armed() {
        return form_page(&state, StatusCode::NOT_FOUND, None);
    }
    let username = form.username.trim().to_owned();
    if !state.setup.matches(&form.token) {
        auth::audit(
            &state,
            &username,
            "setup",
            Some("wrong token".into()),
            &peer,
            AuditOutcome::Denied,
        )
        .await;
        return form_page(&state, StatusCode::FORBIDDEN, Some("Wrong setup token."));
    }
    if let Err(m) = auth::check_username(&username)
        .and_then(|()| auth::check_password_policy(&form.password, &username))
    {
        return form_page(&state, StatusCode::UNPROCESSABLE_ENTITY, Some(&m));
    }
    if form.password != form.confirm {
        return form_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("The passwords differ."),
        );
    }
    let hash = match auth::hash_password_async(form.password).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("password hashing: {e}");
            return super::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot hash the password.",
            );
        }
    };
    match state.store.create_first_admin(&username, &hash).await {
        Ok(Some(id)) => {
            state.setup.consume();
            auth::audit(
                &state,
                &username,
                "setup",
                Some(format!("user {id}")),
                &peer,
                AuditOutcome::Success,
            )
            .await;
            Redirect::to("/login").into_response()
        }
        Ok(None) => {
            state.setup.consume();
            super::error_page(
                StatusCode::CONFLICT,
                "Setup is closed: an administrator exists.",
            )
        }
        Err(e) => super::store_error(&e),
    }
}
