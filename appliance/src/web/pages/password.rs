//! Changing one's own password (forced at first login and after an admin reset).

use axum::extract::{Extension, Form, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{csrf_field, layout};
use crate::store::AuditOutcome;
use crate::web::AppState;
use crate::web::auth::{self, CurrentUser};

/// The password form.
#[derive(Deserialize)]
pub struct PasswordForm {
    current: String,
    password: String,
    confirm: String,
}

fn form_page(user: &CurrentUser, status: StatusCode, message: Option<&str>) -> Response {
    let body = html! {
        h1 { "Change password" }
        @if user.user.must_change_password {
            div.banner.warn { "You must choose a new password before you continue." }
        }
        @if let Some(m) = message { div.banner.error { (m) } }
        form.stack method="post" action="/password" {
            (csrf_field(user))
            label for="current" { "Current password" }
            input #current name="current" type="password" autocomplete="current-password" required;
            label for="password" { "New password (12 characters or more)" }
            input #password name="password" type="password" autocomplete="new-password" minlength="12" required;
            label for="confirm" { "Repeat new password" }
            input #confirm name="confirm" type="password" autocomplete="new-password" minlength="12" required;
            div.actions { button type="submit" { "Change password" } }
        }
    };
    (status, layout("Change password", Some(user), &body)).into_response()
}

/// `GET /password`.
pub async fn page(Extension(user): Extension<CurrentUser>) -> Response {
    form_page(&user, StatusCode::OK, None)
}

/// `POST /password`: checks the current password, applies the policy, stores the new hash,
/// ends every session of the user and starts a new one for this browser.
pub async fn submit(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Form(form): Form<PasswordForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let name = user.user.username.clone();
    let login = match state.store.login_user_by_id(user.user.id).await {
        Ok(Some(l)) => l,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(e) => return super::store_error(&e),
    };
    if !auth::verify_password_async(form.current, Some(login.password_hash.clone())).await {
        auth::audit(
            &state,
            &name,
            "password.change",
            Some("wrong current password".into()),
            &peer,
            AuditOutcome::Failure,
        )
        .await;
        return form_page(
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("The current password is wrong."),
        );
    }
    if let Err(m) = auth::check_password_policy(&form.password, &name) {
        return form_page(&user, StatusCode::UNPROCESSABLE_ENTITY, Some(&m));
    }
    if form.password != form.confirm {
        return form_page(
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("The new passwords differ."),
        );
    }
    if auth::verify_password(&form.password, &login.password_hash) {
        return form_page(
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("The new password must differ from the current one."),
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
    if let Err(e) = state.store.set_password(user.user.id, &hash, false).await {
        return super::store_error(&e);
    }
    if let Err(e) = state.store.end_user_sessions(user.user.id).await {
        return super::store_error(&e);
    }
    let token = auth::new_token();
    let now = state.store.now();
    let lifetime_ms = i64::try_from(state.web.session_minutes * 60_000).unwrap_or(i64::MAX);
    if let Err(e) = state
        .store
        .create_session(
            &auth::token_hash(&token),
            user.user.id,
            &peer,
            now.saturating_add(lifetime_ms),
        )
        .await
    {
        return super::store_error(&e);
    }
    auth::audit(
        &state,
        &name,
        "password.change",
        None,
        &peer,
        AuditOutcome::Success,
    )
    .await;
    (
        [(
            header::SET_COOKIE,
            auth::session_cookie(&token, state.web.session_minutes * 60),
        )],
        Redirect::to("/"),
    )
        .into_response()
}
