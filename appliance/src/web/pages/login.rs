//! Login and logout, with lockout after repeated failures.

use axum::extract::{Extension, Form, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout;
use crate::store::AuditOutcome;
use crate::web::AppState;
use crate::web::auth::{self, CurrentUser};

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
}

/// The login page with a fresh pre-session CSRF cookie.
fn login_form(state: &AppState, message: Option<&str>) -> (String, Markup) {
    let token = auth::new_token();
    let body = html! {
        div.login {
            h1 { "Log in" }
            @if let Some(m) = message { div.banner.error { (m) } }
            @if state.setup.armed() {
                div.banner.info {
                    "No user exists yet. " a href="/setup" { "Set up the first administrator" }
                    " with the one-time token from the appliance."
                }
            }
            form.stack method="post" action="/login" {
                input type="hidden" name="csrf" value=(token);
                label for="username" { "User name" }
                input #username name="username" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                div.actions { button type="submit" { "Log in" } }
            }
        }
    };
    (token, layout("Log in", None, &body))
}

/// `GET /login`.
pub async fn page(State(state): State<AppState>) -> Response {
    let (token, page) = login_form(&state, None);
    ([(header::SET_COOKIE, auth::pre_csrf_cookie(&token))], page).into_response()
}

/// Every failed login answers the same, whatever the reason (unknown user, wrong password,
/// locked, disabled), so the page does not tell an attacker which accounts exist.
const REFUSED: &str = "Login refused: wrong user name or password, or the account is locked \
                       for a while after repeated failures.";

/// `POST /login`.
pub async fn submit(
    State(state): State<AppState>,
    ext: axum::http::Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let refused = |state: &AppState| {
        let (token, page) = login_form(state, Some(REFUSED));
        (
            StatusCode::UNAUTHORIZED,
            [(header::SET_COOKIE, auth::pre_csrf_cookie(&token))],
            page,
        )
            .into_response()
    };
    let username = form.username.trim().to_owned();
    let user = match state.store.login_user(&username).await {
        Ok(u) => u,
        Err(e) => return super::store_error(&e),
    };
    let now = state.store.now();
    let Some(login) = user else {
        let _ = auth::verify_password_async(form.password, None).await;
        auth::audit(
            &state,
            &username,
            "login",
            None,
            &peer,
            AuditOutcome::Failure,
        )
        .await;
        return refused(&state);
    };
    if login.user.locked_until_ms.is_some_and(|t| t > now) {
        let _ = auth::verify_password_async(form.password, None).await;
        auth::audit(
            &state,
            &username,
            "login.locked",
            None,
            &peer,
            AuditOutcome::Denied,
        )
        .await;
        return refused(&state);
    }
    let ok = auth::verify_password_async(form.password, Some(login.password_hash.clone())).await;
    if !ok || login.user.disabled {
        if !ok {
            let lock_ms = i64::try_from(state.web.lockout_minutes * 60_000).unwrap_or(i64::MAX);
            match state
                .store
                .record_login_failure(login.user.id, state.web.lockout_threshold, lock_ms)
                .await
            {
                Ok(Some(until)) => {
                    auth::audit(
                        &state,
                        &username,
                        "login.lockout",
                        Some(format!("locked until {}", super::utc(until))),
                        &peer,
                        AuditOutcome::Denied,
                    )
                    .await;
                }
                Ok(None) => {}
                Err(e) => return super::store_error(&e),
            }
        }
        let why = if login.user.disabled {
            Some("disabled".to_owned())
        } else {
            None
        };
        auth::audit(
            &state,
            &username,
            "login",
            why,
            &peer,
            AuditOutcome::Failure,
        )
        .await;
        return refused(&state);
    }
    if let Err(e) = state.store.record_login_success(login.user.id).await {
        return super::store_error(&e);
    }
    let token = auth::new_token();
    let lifetime_ms = i64::try_from(state.web.session_minutes * 60_000).unwrap_or(i64::MAX);
    if let Err(e) = state
        .store
        .create_session(
            &auth::token_hash(&token),
            login.user.id,
            &peer,
            now.saturating_add(lifetime_ms),
        )
        .await
    {
        return super::store_error(&e);
    }
    let _ = state.store.purge_expired_sessions().await;
    auth::audit(
        &state,
        &username,
        "login",
        None,
        &peer,
        AuditOutcome::Success,
    )
    .await;
    let to = if login.user.must_change_password {
        "/password"
    } else {
        "/"
    };
    (
        [(
            header::SET_COOKIE,
            auth::session_cookie(&token, state.web.session_minutes * 60),
        )],
        Redirect::to(to),
    )
        .into_response()
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
) -> Response {
    let peer = auth::peer(&ext);
    if let Err(e) = state.store.end_session(&user.session_hash).await {
        return super::store_error(&e);
    }
    auth::audit(
        &state,
        &user.user.username,
        "logout",
        None,
        &peer,
        AuditOutcome::Success,
    )
    .await;
    (
        [(header::SET_COOKIE, auth::clear_session_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}
