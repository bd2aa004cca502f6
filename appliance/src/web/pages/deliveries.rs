//! The outbox: deliveries with state, attempts and last error; "retry now"; the dead-letter
//! list (`?state=failed`).

use std::collections::HashMap;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::{csrf_field, layout, utc};
use crate::store::{DeliveryState, Role};
use crate::web::AppState;
use crate::web::auth::CurrentUser;

/// Rows shown.
const LIMIT: u32 = 200;

/// `GET /deliveries`.
#[allow(clippy::implicit_hasher)] // the query/form extractor type; the hasher is not ours to choose
pub async fn list(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = match q.get("state").map_or("", String::as_str) {
        "" => None,
        "pending" => Some(DeliveryState::Pending),
        "delivered" => Some(DeliveryState::Delivered),
        "failed" => Some(DeliveryState::Failed),
        other => {
            return super::invalid(
                &user,
                "Deliveries",
                &format!("state {other:?} is not pending, delivered or failed"),
                "/deliveries",
            );
        }
    };
    let rows = match state.store.list_deliveries(filter, LIMIT).await {
        Ok(r) => r,
        Err(e) => return super::store_error(&e),
    };
    let title = if filter == Some(DeliveryState::Failed) {
        "Dead letters"
    } else {
        "Deliveries"
    };
    let body = html! {
        h1 { (title) }
        p {
            a href="/deliveries" { "All" } " · " a href="/deliveries?state=pending" { "Pending" } " · "
            a href="/deliveries?state=delivered" { "Delivered" } " · " a href="/deliveries?state=failed" { "Dead letters" }
        }
        table {
            tr { th { "#" } th { "Destination" } th { "Object" } th { "State" } th.num { "Attempts" }
                 th { "Next attempt / delivered (UTC)" } th { "Last error" } th { "" } }
            @for d in &rows {
                tr {
                    td { (d.id) }
                    td { a href=(format!("/destinations/{}", d.destination_id)) { (d.destination_name) } }
                    td { "output " (d.output_id) }
                    td { @match d.state {
                        DeliveryState::Delivered => span.ok { "delivered" },
                        DeliveryState::Pending => span { "pending" },
                        DeliveryState::Failed => span.bad { "dead letter" },
                    } }
                    td.num { (d.attempts) }
                    td { (d.delivered_at_ms.map_or_else(|| utc(d.next_attempt_at_ms), utc)) }
                    td { (d.last_error.as_deref().unwrap_or("")) }
                    td { @if user.has(Role::Operator) && d.state != DeliveryState::Delivered {
                        form.inline method="post" action=(format!("/deliveries/{}/retry", d.id)) {
                            (csrf_field(&user)) button.plain type="submit" { "Retry now" }
                        }
                    } }
                }
            }
            @if rows.is_empty() { tr { td.muted colspan="8" { "Nothing here." } } }
        }
    };
    layout(title, Some(&user), &body).into_response()
}

/// `POST /deliveries/{id}/retry` (audited by the store as `delivery.retry`).
pub async fn retry(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<i64>,
) -> Response {
    match state.store.retry_delivery(id, &user.user.username).await {
        Ok(true) => Redirect::to("/deliveries").into_response(),
        Ok(false) => super::error_page(
            StatusCode::NOT_FOUND,
            "No such delivery waiting to be sent.",
        ),
        Err(e) => super::store_error(&e),
    }
}
