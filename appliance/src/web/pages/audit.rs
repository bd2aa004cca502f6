//! The audit log viewer (filters, paging) and its CSV export. The CSV is safe to open in a
//! spreadsheet: cells that a spreadsheet would take as a formula are prefixed with `'`.

use std::collections::HashMap;

use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::{layout, non_empty, utc};
use crate::store::{AuditFilter, StoredAuditEvent};
use crate::web::AppState;
use crate::web::auth::CurrentUser;

/// Rows per page.
const PAGE: u32 = 100;
/// Most rows in one CSV export.
const CSV_MAX: u32 = 100_000;

fn filter_from(q: &HashMap<String, String>) -> Result<AuditFilter, String> {
    let date = |k: &str, next_day: bool| -> Result<Option<i64>, String> {
        match non_empty(q.get(k)) {
            None => Ok(None),
            Some(v) => super::parse_date_ms(&v)
                .map(|ms| Some(if next_day { ms + 86_400_000 } else { ms }))
                .ok_or_else(|| format!("{k}: {v:?} is not a date (YYYY-MM-DD)")),
        }
    };
    let outcome = non_empty(q.get("outcome"));
    if let Some(o) = &outcome
        && !["success", "failure", "denied"].contains(&o.as_str())
    {
        return Err(format!("outcome {o:?} is not success, failure or denied"));
    }
    Ok(AuditFilter {
        actor: non_empty(q.get("actor")),
        action: non_empty(q.get("action")),
        outcome,
        from_ms: date("from", false)?,
        to_ms: date("to", true)?,
    })
}

fn outcome_str(e: &StoredAuditEvent) -> &'static str {
    match e.event.outcome {
        crate::store::AuditOutcome::Success => "success",
        crate::store::AuditOutcome::Failure => "failure",
        crate::store::AuditOutcome::Denied => "denied",
    }
}

/// `GET /audit`.
#[allow(clippy::implicit_hasher)] // the query/form extractor type; the hasher is not ours to choose
pub async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = match filter_from(&q) {
        Ok(f) => f,
        Err(m) => return super::invalid(&user, "Audit log", &m, "/audit"),
    };
    let page = super::page_number(&q);
    let rows = match state
        .store
        .query_audit(&filter, PAGE + 1, page * PAGE)
        .await
    {
        Ok(r) => r,
        Err(e) => return super::store_error(&e),
    };
    let more = rows.len() > PAGE as usize;
    let keep: Vec<(&str, String)> = ["actor", "action", "outcome", "from", "to"]
        .iter()
        .filter_map(|k| non_empty(q.get(*k)).map(|v| (*k, v)))
        .collect();
    let link = |path: &str, page: Option<u32>| {
        let mut pairs = keep.clone();
        if let Some(p) = page {
            pairs.push(("page", p.to_string()));
        }
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    };
    let v = |k: &str| q.get(k).cloned().unwrap_or_default();
    let body = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/audit" {
            label { "Actor" input name="actor" value=(v("actor")); }
            label { "Action (prefix)" input name="action" value=(v("action")); }
            label { "Outcome" select name="outcome" {
                option value="" { "any" }
                @for o in ["success", "failure", "denied"] { option value=(o) selected[v("outcome") == o] { (o) } }
            } }
            label { "From" input type="date" name="from" value=(v("from")); }
            label { "To" input type="date" name="to" value=(v("to")); }
            button type="submit" { "Filter" }
        }
        p { a href=(link("/audit.csv", None)) { "Export these events as CSV" } }
        table #audit-events {
            tr { th { "#" } th { "Time (UTC)" } th { "Actor" } th { "Action" } th { "Target" } th { "From" } th { "Outcome" } }
            @for e in rows.iter().take(PAGE as usize) {
                tr {
                    td { (e.id) } td { (utc(e.at_ms)) } td { (e.event.actor) } td { (e.event.action) }
                    td { (e.event.target.as_deref().unwrap_or("")) } td { (e.event.peer_addr.as_deref().unwrap_or("")) }
                    td { (outcome_str(e)) }
                }
            }
        }
        div.pager {
            @if page > 0 { a href=(link("/audit", Some(page - 1))) { "← Newer" } }
            @if more { a href=(link("/audit", Some(page + 1))) { "Older →" } }
        }
    };
    layout("Audit log", Some(&user), &body).into_response()
}

/// One CSV cell: quoted, quotes doubled, and a leading `=`, `+`, `-`, `@`, tab or CR
/// neutralised with `'` so spreadsheets show it as text (CSV injection).
pub fn csv_cell(s: &str) -> String {
    let neutral = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    format!("\"{}\"", neutral.replace('"', "\"\""))
}

/// `GET /audit.csv`: the filtered events, newest first.
#[allow(clippy::implicit_hasher)] // the query/form extractor type; the hasher is not ours to choose
pub async fn csv(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = match filter_from(&q) {
        Ok(f) => f,
        Err(m) => return super::invalid(&user, "Audit log", &m, "/audit"),
    };
    let rows = match state.store.query_audit(&filter, CSV_MAX, 0).await {
        Ok(r) => r,
        Err(e) => return super::store_error(&e),
    };
    let mut out = String::from("id,time_utc,actor,action,target,peer,outcome\r\n");
    for e in &rows {
        let cells = [
            e.id.to_string(),
            utc(e.at_ms),
            e.event.actor.clone(),
            e.event.action.clone(),
            e.event.target.clone().unwrap_or_default(),
            e.event.peer_addr.clone().unwrap_or_default(),
            outcome_str(e).to_owned(),
        ];
        out.push_str(
            &cells
                .iter()
                .map(|c| csv_cell(c))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_cell("plain"), "\"plain\"");
        assert_eq!(csv_cell("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+1"), "\"'+1\"");
        assert_eq!(csv_cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(csv_cell("-2"), "\"'-2\"");
    }
}
