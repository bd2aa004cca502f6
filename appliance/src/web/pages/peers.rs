//! The peers allowed to send images: those of the configuration file (`[[dicom.peers]]`,
//! read-only here) and those added in the console (admin: create, edit, enable/disable; stored
//! in `dicom_peers`). The DICOM node reads the console's list again within
//! [`crate::dicom::PEER_REFRESH`], so a change needs no restart. Every change is audited.

use axum::extract::{Extension, Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{csrf_field, layout, utc};
use crate::config::PeerConfig;
use crate::store::{NewPeer, Role, StoredPeer};
use crate::web::AppState;
use crate::web::auth::{self, CurrentUser};

/// The peer form.
#[derive(Deserialize)]
pub struct PeerForm {
    ae_title: String,
    #[serde(default)]
    addresses: String,
    #[serde(default)]
    stable_after_s: String,
    #[serde(default)]
    enabled: Option<String>,
}

impl PeerForm {
    /// Checks the form with the configuration file's own rules (AE title, address blocks,
    /// series-stable time).
    fn validate(&self) -> Result<NewPeer, String> {
        let addresses: Vec<String> = self
            .addresses
            .split([',', ' ', '\n', '\r', '\t'])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let stable = self.stable_after_s.trim();
        let stable_after_s = if stable.is_empty() {
            None
        } else {
            Some(stable.parse::<f64>().map_err(|_| {
                format!("series stable after: {stable:?} is not a number of seconds")
            })?)
        };
        let peer = PeerConfig {
            ae_title: self.ae_title.trim().to_owned(),
            addresses,
            stable_after_s,
        };
        peer.validate("peer")?;
        Ok(NewPeer {
            ae_title: peer.ae_title,
            addresses: peer.addresses,
            stable_after_s: peer.stable_after_s,
            enabled: self.enabled.is_some(),
        })
    }
}

fn form(user: &CurrentUser, action: &str, p: Option<&NewPeer>, submit: &str) -> Markup {
    let addresses = p.map(|p| p.addresses.join(", ")).unwrap_or_default();
    let stable = p
        .and_then(|p| p.stable_after_s)
        .map(|s| s.to_string())
        .unwrap_or_default();
    html! {
        form.stack #peer-form method="post" action=(action) {
            (csrf_field(user))
            label for="ae_title" { "Calling AE title" }
            input #ae_title name="ae_title" required maxlength="16" value=(p.map_or("", |p| &p.ae_title));
            label for="addresses" { "Addresses (IP or CIDR, comma-separated; empty: any)" }
            input #addresses name="addresses" maxlength="1000" value=(addresses) placeholder="10.1.2.3, 10.20.0.0/16";
            label for="stable_after_s" { "Series stable after (s; empty: default)" }
            input #stable_after_s name="stable_after_s" maxlength="10" value=(stable);
            label for="enabled" { "Enabled" }
            input #enabled name="enabled" type="checkbox" value="1" checked[p.is_none_or(|p| p.enabled)];
            div.actions { button type="submit" { (submit) } }
        }
    }
}

fn target(id: i64, p: &NewPeer) -> String {
    let addresses = if p.addresses.is_empty() {
        "any address".to_owned()
    } else {
        p.addresses.join(",")
    };
    format!("peer {id} {} from {addresses}", p.ae_title)
}

/// `GET /peers`.
pub async fn list(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    let stored = match state.store.list_peers().await {
        Ok(p) => p,
        Err(e) => return super::store_error(&e),
    };
    let dicom = &state.config.dicom;
    let default_stable = dicom.completion.stable_after_s;
    let body = html! {
        h1 { "Allowed peers" }
        p { "Our AE title: " strong { (dicom.ae_title) } ", port " (dicom.port)
            @if let Some(t) = &dicom.tls { ", TLS port " (t.port) } }
        @if dicom.allow_any_peer { div.banner.warn { "allow_any_peer is on: any AE from any address may send." } }
        p.muted { "An association is accepted when its calling AE title and source address match an enabled entry of either list. Console changes take effect within a few seconds." }
        h2 { "Added in the console" }
        table #console-peers {
            tr { th { "AE title" } th { "Addresses" } th.num { "Series stable after (s)" } th { "State" } th { "Changed" } }
            @for p in &stored {
                tr {
                    td { a href=(format!("/peers/{}", p.id)) { (p.peer.ae_title) } }
                    td { (addresses(&p.peer.addresses)) }
                    td.num { (p.peer.stable_after_s.unwrap_or(default_stable)) }
                    td { @if p.peer.enabled { span.ok { "enabled" } } @else { span.muted { "disabled" } } }
                    td.muted { (p.updated_by) ", " (utc(p.updated_at_ms)) }
                }
            }
            @if stored.is_empty() { tr { td.muted colspan="5" { "None." } } }
        }
        @if user.has(Role::Admin) {
            h2 { "Add a peer" }
            (form(&user, "/peers", None, "Add"))
        }
        h2 { "From the configuration file" }
        p.muted { "Set in " code { "[[dicom.peers]]" } "; change them there (effective at restart)." }
        table #configured-peers {
            tr { th { "AE title" } th { "Addresses" } th.num { "Series stable after (s)" } }
            @for p in &dicom.peers {
                tr {
                    td { (p.ae_title) }
                    td { (addresses(&p.addresses)) }
                    td.num { (p.stable_after_s.unwrap_or(default_stable)) }
                }
            }
            @if dicom.peers.is_empty() { tr { td.muted colspan="3" { "None." } } }
        }
    };
    layout("Peers", Some(&user), &body).into_response()
}

fn addresses(a: &[String]) -> String {
    if a.is_empty() {
        "any".to_owned()
    } else {
        a.join(", ")
    }
}

/// `POST /peers`.
pub async fn create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Form(f): Form<PeerForm>,
) -> Response {
    let client = auth::peer(&ext);
    let p = match f.validate() {
        Ok(p) => p,
        Err(m) => return super::invalid(&user, "Add a peer", &m, "/peers"),
    };
    match state.store.add_peer(&p, &user.user.username).await {
        Ok(id) => {
            super::audited_redirect(
                &state,
                &user,
                &client,
                "peer.create",
                target(id, &p),
                &format!("/peers/{id}"),
            )
            .await
        }
        Err(e) => {
            tracing::warn!("peer create: {e}");
            super::invalid(
                &user,
                "Add a peer",
                "The peer could not be stored (is its AE title already listed?).",
                "/peers",
            )
        }
    }
}

async fn load(state: &AppState, id: i64) -> Result<StoredPeer, Response> {
    match state.store.peer(id).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(super::error_page(StatusCode::NOT_FOUND, "No such peer.")),
        Err(e) => Err(super::store_error(&e)),
    }
}

/// `GET /peers/{id}`.
pub async fn edit(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<i64>,
) -> Response {
    let p = match load(&state, id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let body = html! {
        h1 { "Peer " (p.peer.ae_title) }
        @if user.has(Role::Admin) {
            (form(&user, &format!("/peers/{id}"), Some(&p.peer), "Save"))
            form.inline method="post" action=(format!("/peers/{id}/enabled")) {
                (csrf_field(&user))
                input type="hidden" name="enabled" value=(if p.peer.enabled { "0" } else { "1" });
                button.plain type="submit" { @if p.peer.enabled { "Disable" } @else { "Enable" } }
            }
        } @else {
            table {
                tr { th { "Addresses" } td { (addresses(&p.peer.addresses)) } }
                tr { th { "State" } td { @if p.peer.enabled { "enabled" } @else { "disabled" } } }
            }
        }
        p.muted { "Last changed by " (p.updated_by) ", " (utc(p.updated_at_ms)) "." }
        p { a href="/peers" { "All peers" } }
    };
    layout("Peer", Some(&user), &body).into_response()
}

/// `POST /peers/{id}`.
pub async fn update(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
    Form(f): Form<PeerForm>,
) -> Response {
    let client = auth::peer(&ext);
    let back = format!("/peers/{id}");
    let p = match f.validate() {
        Ok(p) => p,
        Err(m) => return super::invalid(&user, "Edit peer", &m, &back),
    };
    match state.store.update_peer(id, &p, &user.user.username).await {
        Ok(true) => {
            super::audited_redirect(&state, &user, &client, "peer.update", target(id, &p), &back)
                .await
        }
        Ok(false) => super::error_page(StatusCode::NOT_FOUND, "No such peer."),
        Err(e) => {
            tracing::warn!("peer update: {e}");
            super::invalid(
                &user,
                "Edit peer",
                "The peer could not be stored (is its AE title already listed?).",
                &back,
            )
        }
    }
}

/// `POST /peers/{id}/enabled`.
pub async fn set_enabled(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
    Form(f): Form<super::EnabledForm>,
) -> Response {
    let client = auth::peer(&ext);
    let enabled = f.enabled();
    match state
        .store
        .set_peer_enabled(id, enabled, &user.user.username)
        .await
    {
        Ok(true) => {
            super::audited_redirect(
                &state,
                &user,
                &client,
                if enabled {
                    "peer.enable"
                } else {
                    "peer.disable"
                },
                format!("peer {id}"),
                &format!("/peers/{id}"),
            )
            .await
        }
        Ok(false) => super::error_page(StatusCode::NOT_FOUND, "No such peer."),
        Err(e) => super::store_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(ae: &str, addresses: &str, stable: &str) -> PeerForm {
        PeerForm {
            ae_title: ae.into(),
            addresses: addresses.into(),
            stable_after_s: stable.into(),
            enabled: Some("1".into()),
        }
    }

    #[test]
    fn the_form_uses_the_configuration_rules() {
        let p = form(" CT1 ", "10.0.0.1, 10.1.0.0/16\nfd00::/8", "")
            .validate()
            .unwrap();
        assert_eq!(p.ae_title, "CT1");
        assert_eq!(p.addresses, ["10.0.0.1", "10.1.0.0/16", "fd00::/8"]);
        assert_eq!(p.stable_after_s, None);
        assert!(p.enabled);
        assert_eq!(
            form("CT1", "", "12.5").validate().unwrap().stable_after_s,
            Some(12.5)
        );
        for (ae, addresses, stable) in [
            ("", "", ""),
            ("A_TITLE_LONGER_THAN_16", "", ""),
            ("BACK\\SLASH", "", ""),
            ("CT1", "10.0.0.300", ""),
            ("CT1", "10.0.0.0/33", ""),
            ("CT1", "", "soon"),
            ("CT1", "", "0"),
            ("CT1", "", "-3"),
        ] {
            assert!(
                form(ae, addresses, stable).validate().is_err(),
                "accepted {ae:?} {addresses:?} {stable:?}"
            );
        }
    }
}
