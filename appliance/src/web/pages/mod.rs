//! The console's pages, one module each, and what they share: the layout, error pages, time
//! formatting. Every page is a maud template, so every value is HTML-escaped by construction;
//! no page has inline script or style (see `headers::CSP`).

pub mod audit;
pub mod dashboard;
pub mod deliveries;
pub mod destinations;
pub mod login;
pub mod model;
pub mod password;
pub mod peers;
pub mod series;
pub mod settings;
pub mod setup;
pub mod users;
pub mod viewer;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::auth::CurrentUser;
use crate::store::Role;

/// A full page: head with the stylesheet and script, the navigation for `user` (by role) and
/// `body`.
pub fn layout(title: &str, user: Option<&CurrentUser>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — VertebraFormer" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header.top {
                    span.brand { "VertebraFormer" }
                    @if let Some(u) = user {
                        @if !u.user.must_change_password {
                            nav {
                                a href="/" { "Dashboard" }
                                a href="/series" { "Series" }
                                a href="/destinations" { "Destinations" }
                                a href="/peers" { "Peers" }
                                a href="/deliveries" { "Deliveries" }
                                a href="/model" { "Model" }
                                @if u.has(Role::Admin) {
                                    a href="/users" { "Users" }
                                    a href="/audit" { "Audit" }
                                    a href="/settings" { "Settings" }
                                }
                            }
                        }
                        div.who {
                            span { (u.user.username) " (" (role_name(u.user.role)) ")" }
                            a href="/password" { "Password" }
                            form.inline method="post" action="/logout" {
                                (csrf_field(u))
                                button.plain type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden CSRF field every form of a logged-in page carries (first, so multipart
/// handlers can check it before reading the rest).
pub fn csrf_field(user: &CurrentUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf); }
}

/// The `page` query parameter of a paged list (0 when absent or unreadable, at most 100,000).
pub fn page_number<S: std::hash::BuildHasher>(
    q: &std::collections::HashMap<String, String, S>,
) -> u32 {
    q.get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
        .min(100_000)
}

/// A role's name.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Operator => "operator",
        Role::Viewer => "viewer",
    }
}

/// A complete error page with `status`.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
        div.banner.error { (message) }
        p { a href="/" { "Back to the dashboard" } }
    };
    (status, layout("Error", None, &body)).into_response()
}

/// The page for unknown paths.
pub async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "No such page.")
}

/// The page for a store failure (logged with its cause; the page does not show it).
pub fn store_error(e: &crate::store::Error) -> Response {
    tracing::error!("web console store error: {e}");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The store could not answer; try again shortly.",
    )
}

/// A page for a refused form value (422) with the reason, and a way back.
pub fn invalid(user: &CurrentUser, title: &str, reason: &str, back: &str) -> Response {
    let body = html! {
        h1 { (title) }
        div.banner.error { (reason) }
        p { a href=(back) { "Back" } }
    };
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        layout(title, Some(user), &body),
    )
        .into_response()
}

/// The enable/disable form of a listed item (DICOM peers, destinations): `enabled=1` enables.
#[derive(serde::Deserialize)]
pub struct EnabledForm {
    enabled: String,
}

impl EnabledForm {
    /// Whether the form asks to enable.
    pub fn enabled(&self) -> bool {
        self.enabled == "1"
    }
}

/// After a console change succeeded: audits it (`action` on `target`, from the client at
/// `client`) and redirects to `to`.
pub async fn audited_redirect(
    state: &super::AppState,
    user: &CurrentUser,
    client: &str,
    action: &str,
    target: String,
    to: &str,
) -> Response {
    super::auth::audit(
        state,
        &user.user.username,
        action,
        Some(target),
        client,
        crate::store::AuditOutcome::Success,
    )
    .await;
    axum::response::Redirect::to(to).into_response()
}

/// `YYYY-MM-DD HH:MM:SS` UTC of a time in ms since the Unix epoch.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` → ms at 00:00 UTC of that day.
pub fn parse_date_ms(s: &str) -> Option<i64> {
    let (y, m, d) = parse_ymd(s)?;
    Some(days_from_civil(y, m, d) * 86_400_000)
}

/// `YYYY-MM-DD` → its parts, range-checked.
pub fn parse_ymd(s: &str) -> Option<(i64, i64, i64)> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    ((1900..=9999).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
        .then_some((y, m, d))
}

/// An empty form value as `None`, else trimmed.
pub fn non_empty(v: Option<&String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_dates_round_trip() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(parse_date_ms("2023-11-14"), Some(1_699_920_000_000));
        assert_eq!(parse_date_ms("2023-13-01"), None);
        assert_eq!(
            utc(parse_date_ms("2024-02-29").unwrap()),
            "2024-02-29 00:00:00"
        );
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
