//! Result destinations: create, edit, enable/disable, C-ECHO test. (The allowed sending peers
//! are in [`super::peers`].)

use axum::extract::{Extension, Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{csrf_field, layout};
use crate::dicom::scu::{self, ScuOptions};
use crate::store::{AuditOutcome, NewDestination, Role, StoredDestination};
use crate::web::AppState;
use crate::web::auth::{self, CurrentUser};

/// An AE title: 1–16 printable ASCII characters without backslash, not only spaces.
///
/// # Errors
/// The reason, for the form.
pub fn check_ae(ae: &str) -> Result<(), String> {
    crate::config::check_ae_title("AE title", ae)
}

/// A host: a DNS name or an IP address.
///
/// # Errors
/// The reason, for the form.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is neither an IP address nor a valid host name"
        ))
    }
}

/// The destination form.
#[derive(Deserialize)]
pub struct DestinationForm {
    name: String,
    ae_title: String,
    host: String,
    port: String,
    #[serde(default)]
    tls: Option<String>,
    #[serde(default)]
    enabled: Option<String>,
}

impl DestinationForm {
    fn validate(&self) -> Result<NewDestination, String> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err("name must have 1 to 64 printable characters".into());
        }
        let ae = self.ae_title.trim();
        check_ae(ae)?;
        let host = self.host.trim();
        check_host(host)?;
        let port: u16 = self
            .port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {:?} must be a number from 1 to 65535", self.port))?;
        Ok(NewDestination {
            name: name.to_owned(),
            ae_title: ae.to_owned(),
            host: host.to_owned(),
            port,
            tls: self.tls.is_some(),
            enabled: self.enabled.is_some(),
        })
    }
}

fn form(user: &CurrentUser, action: &str, d: Option<&StoredDestination>, submit: &str) -> Markup {
    html! {
        form.stack method="post" action=(action) {
            (csrf_field(user))
            label for="name" { "Name" }
            input #name name="name" required maxlength="64" value=(d.map_or("", |d| &d.name));
            label for="ae_title" { "AE title" }
            input #ae_title name="ae_title" required maxlength="16" value=(d.map_or("", |d| &d.ae_title));
            label for="host" { "Host" }
            input #host name="host" required maxlength="253" value=(d.map_or("", |d| &d.host));
            label for="port" { "Port" }
            input #port name="port" type="number" min="1" max="65535" required value=(d.map_or(104, |d| d.port));
            label for="tls" { "DICOM TLS" }
            input #tls name="tls" type="checkbox" value="1" checked[d.is_some_and(|d| d.tls)];
            label for="enabled" { "Enabled" }
            input #enabled name="enabled" type="checkbox" value="1" checked[d.is_none_or(|d| d.enabled)];
            div.actions { button type="submit" { (submit) } }
        }
    }
}

/// `GET /destinations`.
pub async fn list(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    let dests = match state.store.list_destinations().await {
        Ok(d) => d,
        Err(e) => return super::store_error(&e),
    };
    let body = html! {
        h1 { "Destinations" }
        p.muted { "Every new result's SEG and SR are sent to each enabled destination." }
        table {
            tr { th { "Name" } th { "AE title" } th { "Host" } th.num { "Port" } th { "TLS" } th { "State" } th { "" } }
            @for d in &dests {
                tr {
                    td { a href=(format!("/destinations/{}", d.id)) { (d.name) } }
                    td { (d.ae_title) } td { (d.host) } td.num { (d.port) }
                    td { @if d.tls { "yes" } @else { "no" } }
                    td { @if d.enabled { span.ok { "enabled" } } @else { span.muted { "disabled" } } }
                    td { @if user.has(Role::Operator) {
                        form.inline method="post" action=(format!("/destinations/{}/echo", d.id)) {
                            (csrf_field(&user)) button.plain type="submit" { "Test (C-ECHO)" }
                        }
                    } }
                }
            }
            @if dests.is_empty() { tr { td.muted colspan="7" { "No destination yet." } } }
        }
        @if user.has(Role::Operator) {
            h2 { "Add a destination" }
            (form(&user, "/destinations", None, "Add"))
        }
    };
    layout("Destinations", Some(&user), &body).into_response()
}

/// `POST /destinations`.
pub async fn create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Form(f): Form<DestinationForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let d = match f.validate() {
        Ok(d) => d,
        Err(m) => return super::invalid(&user, "Add a destination", &m, "/destinations"),
    };
    match state.store.add_destination(&d).await {
        Ok(id) => {
            super::audited_redirect(
                &state,
                &user,
                &peer,
                "destination.create",
                format!("destination {id} {}@{}:{}", d.ae_title, d.host, d.port),
                &format!("/destinations/{id}"),
            )
            .await
        }
        Err(e) => {
            tracing::warn!("destination create: {e}");
            super::invalid(
                &user,
                "Add a destination",
                "The destination could not be stored (is the name already used?).",
                "/destinations",
            )
        }
    }
}

/// `GET /destinations/{id}`.
pub async fn edit(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<i64>,
) -> Response {
    let d = match state.store.destination(id).await {
        Ok(Some(d)) => d,
        Ok(None) => return super::error_page(StatusCode::NOT_FOUND, "No such destination."),
        Err(e) => return super::store_error(&e),
    };
    let body = html! {
        h1 { "Destination " (d.name) }
        @if user.has(Role::Operator) {
            (form(&user, &format!("/destinations/{id}"), Some(&d), "Save"))
            form.inline method="post" action=(format!("/destinations/{id}/echo")) {
                (csrf_field(&user)) button.plain type="submit" { "Test (C-ECHO)" }
            }
            " "
            form.inline method="post" action=(format!("/destinations/{id}/enabled")) {
                (csrf_field(&user))
                input type="hidden" name="enabled" value=(if d.enabled { "0" } else { "1" });
                button.plain type="submit" { @if d.enabled { "Disable" } @else { "Enable" } }
            }
        } @else {
            table {
                tr { th { "AE title" } td { (d.ae_title) } }
                tr { th { "Host" } td { (d.host) ":" (d.port) } }
                tr { th { "TLS" } td { @if d.tls { "yes" } @else { "no" } } }
                tr { th { "State" } td { @if d.enabled { "enabled" } @else { "disabled" } } }
            }
        }
        p { a href="/destinations" { "All destinations" } }
    };
    layout("Destination", Some(&user), &body).into_response()
}

/// `POST /destinations/{id}`.
pub async fn update(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
    Form(f): Form<DestinationForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let back = format!("/destinations/{id}");
    let d = match f.validate() {
        Ok(d) => d,
        Err(m) => return super::invalid(&user, "Edit destination", &m, &back),
    };
    match state.store.update_destination(id, &d).await {
        Ok(true) => {
            super::audited_redirect(
                &state,
                &user,
                &peer,
                "destination.update",
                format!("destination {id} {}@{}:{}", d.ae_title, d.host, d.port),
                &back,
            )
            .await
        }
        Ok(false) => super::error_page(StatusCode::NOT_FOUND, "No such destination."),
        Err(e) => {
            tracing::warn!("destination update: {e}");
            super::invalid(
                &user,
                "Edit destination",
                "The destination could not be stored (is the name already used?).",
                &back,
            )
        }
    }
}

/// `POST /destinations/{id}/enabled`.
pub async fn set_enabled(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
    Form(f): Form<super::EnabledForm>,
) -> Response {
    let peer = auth::peer(&ext);
    let enabled = f.enabled();
    match state.store.set_destination_enabled(id, enabled).await {
        Ok(true) => {
            let action = if enabled {
                "destination.enable"
            } else {
                "destination.disable"
            };
            super::audited_redirect(
                &state,
                &user,
                &peer,
                action,
                format!("destination {id}"),
                &format!("/destinations/{id}"),
            )
            .await
        }
        Ok(false) => super::error_page(StatusCode::NOT_FOUND, "No such destination."),
        Err(e) => super::store_error(&e),
    }
}

/// `POST /destinations/{id}/echo`: a C-ECHO with the forwarder's settings; the outcome is
/// shown and audited.
pub async fn echo(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
) -> Response {
    let peer = auth::peer(&ext);
    let d = match state.store.destination(id).await {
        Ok(Some(d)) => d,
        Ok(None) => return super::error_page(StatusCode::NOT_FOUND, "No such destination."),
        Err(e) => return super::store_error(&e),
    };
    let outcome = match ScuOptions::from_config(&state.config.forward) {
        Err(e) => Err(format!("the forwarder's TLS settings are unusable: {e}")),
        Ok(opts) if d.tls && opts.tls.is_none() => {
            let _ = opts;
            Err("this destination uses DICOM TLS, but [forward.tls] is not configured".to_owned())
        }
        Ok(opts) => {
            let dest = scu::Destination {
                ae_title: d.ae_title.clone(),
                host: d.host.clone(),
                port: d.port,
                tls: d.tls,
            };
            scu::echo(&dest, &state.config.forward.calling_ae_title, &opts)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let (banner, text, audit_outcome) = match &outcome {
        Ok(o) => (
            "info",
            format!(
                "C-ECHO succeeded: status 0x{:04X}, round trip {} ms.",
                o.status,
                o.round_trip.as_millis()
            ),
            AuditOutcome::Success,
        ),
        Err(e) => (
            "error",
            format!("C-ECHO failed: {e}"),
            AuditOutcome::Failure,
        ),
    };
    auth::audit(
        &state,
        &user.user.username,
        "destination.echo",
        Some(format!(
            "destination {id} {}@{}:{}",
            d.ae_title, d.host, d.port
        )),
        &peer,
        audit_outcome,
    )
    .await;
    let body = html! {
        h1 { "C-ECHO " (d.name) }
        div class=(format!("banner {banner}")) { (text) }
        p { a href=(format!("/destinations/{id}")) { "Back to the destination" } }
    };
    let status = if outcome.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, layout("C-ECHO", Some(&user), &body)).into_response()
}
