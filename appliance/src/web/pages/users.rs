//! User administration (admin): create, change role, disable/enable, reset password. A reset
//! or new password must be changed by its user at the next login; role changes, disabling and
//! resets end the user's sessions. An admin cannot demote or disable themself (so the console
//! always keeps an admin who can log in).

use axum::extract::{Extension, Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{csrf_field, layout, role_name, utc};
use crate::store::{AuditOutcome, Role};
use crate::web::AppState;
use crate::web::auth::{self, CurrentUser};

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "admin" => Ok(Role::Admin),
        "operator" => Ok(Role::Operator),
        "viewer" => Ok(Role::Viewer),
        other => Err(format!("role {other:?} is not admin, operator or viewer")),
    }
}

/// `GET /users`.
pub async fn list(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    let users = match state.store.list_users().await {
        Ok(u) => u,
        Err(e) => return super::store_error(&e),
    };
    let now = state.store.now();
    let body = html! {
        h1 { "Users" }
        table {
            tr { th { "User" } th { "Role" } th { "State" } th { "Created (UTC)" } th { "Change role" } th { "" } th { "Reset password" } }
            @for u in &users {
                tr {
                    td { (u.username) }
                    td { (role_name(u.role)) }
                    td {
                        @if u.disabled { span.muted { "disabled" } }
                        @else if u.locked_until_ms.is_some_and(|t| t > now) { span.warn { "locked until " (utc(u.locked_until_ms.unwrap_or(0))) } }
                        @else { span.ok { "active" } }
                        @if u.must_change_password { " " span.muted { "(must change password)" } }
                    }
                    td { (utc(u.created_at_ms)) }
                    td { @if u.id != user.user.id {
                        form.inline method="post" action=(format!("/users/{}/role", u.id)) {
                            (csrf_field(&user))
                            select name="role" { @for r in ["admin", "operator", "viewer"] { option value=(r) selected[role_name(u.role) == r] { (r) } } }
                            " " button.plain type="submit" { "Set" }
                        }
                    } }
                    td { @if u.id != user.user.id {
                        form.inline method="post" action=(format!("/users/{}/disabled", u.id)) {
                            (csrf_field(&user))
                            input type="hidden" name="disabled" value=(if u.disabled { "0" } else { "1" });
                            button.plain type="submit" { @if u.disabled { "Enable" } @else { "Disable" } }
                        }
                    } }
                    td {
                        form.inline method="post" action=(format!("/users/{}/password", u.id)) {
                            (csrf_field(&user))
                            input type="password" name="password" placeholder="temporary password" minlength="12" autocomplete="new-password" required;
                            " " button.plain type="submit" { "Reset" }
                        }
                    }
                }
            }
        }
        h2 { "Add a user" }
        form.stack method="post" action="/users" {
            (csrf_field(&user))
            label for="username" { "User name" }
            input #username name="username" required maxlength="64" autocomplete="off";
            label for="role" { "Role" }
            select #role name="role" { option value="viewer" { "viewer" } option value="operator" { "operator" } option value="admin" { "admin" } }
            label for="password" { "Temporary password" }
            input #password name="password" type="password" minlength="12" required autocomplete="new-password";
            div.actions { button type="submit" { "Add user" } }
        }
        p.muted { "New users and reset passwords must be changed at the next login." }
    };
    layout("Users", Some(&user), &body).into_response()
}

/// The new-user form.
#[derive(Deserialize)]
pub struct NewUserForm {
    username: String,
    role: String,
    password: String,
}

/// `POST /users`.
pub async fn create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Form(f): Form<NewUserForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let name = f.username.trim().to_owned();
    let checked = auth::check_username(&name)
        .and_then(|()| parse_role(&f.role))
        .and_then(|r| auth::check_password_policy(&f.password, &name).map(|()| r));
    let role = match checked {
        Ok(r) => r,
        Err(m) => return super::invalid(&user, "Add a user", &m, "/users"),
    };
    let hash = match auth::hash_password_async(f.password).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("password hashing: {e}");
            return super::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot hash the password.",
            );
        }
    };
    let id = match state.store.create_user(&name, &hash, role).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!("user create: {e}");
            return super::invalid(
                &user,
                "Add a user",
                "The user could not be stored (is the name already used?).",
                "/users",
            );
        }
    };
    if let Err(e) = state.store.set_password(id, &hash, true).await {
        return super::store_error(&e);
    }
    auth::audit(
        &state,
        &user.user.username,
        "user.create",
        Some(format!("{name} ({})", role_name(role))),
        &peer,
        AuditOutcome::Success,
    )
    .await;
    Redirect::to("/users").into_response()
}

/// The role form.
#[derive(Deserialize)]
pub struct RoleForm {
    role: String,
}

/// The target user's name, refusing the acting admin themself.
async fn other_user(state: &AppState, user: &CurrentUser, id: i64) -> Result<String, Response> {
    if id == user.user.id {
        return Err(super::invalid(
            user,
            "Users",
            "You cannot change your own role or disable yourself.",
            "/users",
        ));
    }
    match state.store.login_user_by_id(id).await {
        Ok(Some(u)) => Ok(u.user.username),
        Ok(None) => Err(super::error_page(StatusCode::NOT_FOUND, "No such user.")),
        Err(e) => Err(super::store_error(&e)),
    }
}

/// `POST /users/{id}/role`.
pub async fn set_role(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
    Form(f): Form<RoleForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let role = match parse_role(&f.role) {
        Ok(r) => r,
        Err(m) => return super::invalid(&user, "Users", &m, "/users"),
    };
    let name = match other_user(&state, &user, id).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Err(e) = state.store.set_role(id, role).await {
        return super::store_error(&e);
    }
    let _ = state.store.end_user_sessions(id).await;
    auth::audit(
        &state,
        &user.user.username,
        "user.role",
        Some(format!("{name} -> {}", role_name(role))),
        &peer,
        AuditOutcome::Success,
    )
    .await;
    Redirect::to("/users").into_response()
}

/// The disable form.
#[derive(Deserialize)]
pub struct DisabledForm {
    disabled: String,
}

/// `POST /users/{id}/disabled`.
pub async fn set_disabled(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
    Form(f): Form<DisabledForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let name = match other_user(&state, &user, id).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let disabled = f.disabled == "1";
    if let Err(e) = state.store.set_user_disabled(id, disabled).await {
        return super::store_error(&e);
    }
    if disabled {
        let _ = state.store.end_user_sessions(id).await;
    }
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    auth::audit(
        &state,
        &user.user.username,
        action,
        Some(name),
        &peer,
        AuditOutcome::Success,
    )
    .await;
    Redirect::to("/users").into_response()
}

/// The reset form.
#[derive(Deserialize)]
pub struct ResetForm {
    password: String,
}

/// `POST /users/{id}/password`: sets a temporary password the user must change.
pub async fn reset_password(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
    Form(f): Form<ResetForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let name = match state.store.login_user_by_id(id).await {
        Ok(Some(u)) => u.user.username,
        Ok(None) => return super::error_page(StatusCode::NOT_FOUND, "No such user."),
        Err(e) => return super::store_error(&e),
    };
    if let Err(m) = auth::check_password_policy(&f.password, &name) {
        return super::invalid(&user, "Reset password", &m, "/users");
    }
    let hash = match auth::hash_password_async(f.password).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("password hashing: {e}");
            return super::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot hash the password.",
            );
        }
    };
    if let Err(e) = state.store.set_password(id, &hash, true).await {
        return super::store_error(&e);
    }
    let _ = state.store.end_user_sessions(id).await;
    auth::audit(
        &state,
        &user.user.username,
        "user.password_reset",
        Some(name),
        &peer,
        AuditOutcome::Success,
    )
    .await;
    Redirect::to("/users").into_response()
}
