//! The series list (search and paging) and the per-series page: job history with timings and
//! errors, the result summary, requeue (operator) and delete (admin, audited). Series are
//! addressed by their database id only: no UID or patient identifier ever appears in a URL.

use std::collections::HashMap;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use vertebra_core::anatomy::Vertebra;

use super::{csrf_field, layout, non_empty, utc};
use crate::dicom::completion::ANALYZE_SERIES;
use crate::store::queue::NewJob;
use crate::store::{AuditOutcome, Role, SeriesFilter, StoredResult};
use crate::web::AppState;
use crate::web::auth::{self, CurrentUser};

/// Rows per page of the series list.
pub const PAGE_SIZE: u32 = 50;

/// A link a [`crate::web::SeriesLinkHook`] adds to the per-series page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesLink {
    /// Where it goes (a console path such as `/series/42/viewer`).
    pub href: String,
    /// Its text.
    pub label: String,
}

/// The job states the filter offers (plus `none`: no job yet).
const STATES: [&str; 6] = ["queued", "running", "succeeded", "failed", "dead", "none"];

/// The filter from the query string; invalid values are reported, not ignored.
fn filter_from(q: &HashMap<String, String>) -> Result<SeriesFilter, String> {
    let date = |key: &str| -> Result<Option<String>, String> {
        match non_empty(q.get(key)) {
            None => Ok(None),
            Some(v) => super::parse_ymd(&v)
                .map(|(y, m, d)| Some(format!("{y:04}{m:02}{d:02}")))
                .ok_or_else(|| format!("{key}: {v:?} is not a date (YYYY-MM-DD)")),
        }
    };
    let modality = non_empty(q.get("modality")).map(|m| m.to_ascii_uppercase());
    if let Some(m) = &modality
        && (m.len() > 16 || !m.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(format!("modality: {m:?} is not a DICOM modality"));
    }
    let state = non_empty(q.get("state"));
    if let Some(s) = &state
        && !STATES.contains(&s.as_str())
    {
        return Err(format!("state: {s:?} is not one of {}", STATES.join(", ")));
    }
    let source_ae = non_empty(q.get("ae"));
    if let Some(ae) = &source_ae {
        crate::web::pages::destinations::check_ae(ae)?;
    }
    Ok(SeriesFilter {
        date_from: date("from")?,
        date_to: date("to")?,
        modality,
        state,
        source_ae,
    })
}

/// `GET /series`.
#[allow(clippy::implicit_hasher)] // the query/form extractor type; the hasher is not ours to choose
pub async fn list(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = match filter_from(&q) {
        Ok(f) => f,
        Err(m) => return super::invalid(&user, "Series", &m, "/series"),
    };
    let page = super::page_number(&q);
    let (rows, more) = match state
        .store
        .list_series(&filter, PAGE_SIZE, page * PAGE_SIZE)
        .await
    {
        Ok(r) => r,
        Err(e) => return super::store_error(&e),
    };
    let keep: Vec<(&str, String)> = ["from", "to", "modality", "state", "ae"]
        .iter()
        .filter_map(|k| non_empty(q.get(*k)).map(|v| (*k, v)))
        .collect();
    let page_link = |p: u32| {
        let mut pairs = keep.clone();
        pairs.push(("page", p.to_string()));
        format!(
            "/series?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    };
    let v = |k: &str| q.get(k).cloned().unwrap_or_default();
    let body = html! {
        h1 { "Series" }
        form.filters method="get" action="/series" {
            label { "Study date from" input type="date" name="from" value=(v("from")); }
            label { "to" input type="date" name="to" value=(v("to")); }
            label { "Modality" input name="modality" size="4" value=(v("modality")); }
            label { "State" select name="state" {
                option value="" { "any" }
                @for s in STATES { option value=(s) selected[v("state") == s] { (s) } }
            } }
            label { "Source AE" input name="ae" size="16" value=(v("ae")); }
            button type="submit" { "Search" }
        }
        table {
            tr { th { "#" } th { "Study date" } th { "Modality" } th { "Patient" } th.num { "Instances" }
                 th { "Source AE" } th { "Received (UTC)" } th { "Job" } th { "Result" } }
            @for r in &rows {
                tr {
                    td { a href=(format!("/series/{}", r.id)) { (r.id) } }
                    td { (r.study_date.as_deref().unwrap_or("")) }
                    td { (r.modality) }
                    td { (r.patient_name.as_deref().unwrap_or("")) }
                    td.num { (r.instances) }
                    td { (r.source_ae.as_deref().unwrap_or("")) }
                    td { (utc(r.first_received_at_ms)) }
                    td { (r.job_state.as_deref().unwrap_or("—")) }
                    td { (r.result_status.as_deref().unwrap_or("—")) }
                }
            }
            @if rows.is_empty() { tr { td.muted colspan="9" { "No series match." } } }
        }
        div.pager {
            @if page > 0 { a href=(page_link(page - 1)) { "← Newer" } }
            @if more { a href=(page_link(page + 1)) { "Older →" } }
        }
    };
    layout("Series", Some(&user), &body).into_response()
}

fn result_table(r: &StoredResult) -> Markup {
    let res = &r.result;
    html! {
        p { "Status " strong { (res.status.as_str()) } ", bundle " (res.bundle_id) " " (res.bundle_version)
            ", preprocessing " (res.timings.preprocess_ms) " ms, inference " (res.timings.inference_ms)
            " ms, post-processing " (res.timings.postprocess_ms) " ms" }
        h2 { "Vertebrae" }
        table {
            tr { th { "Vertebra" } th.num { "Volume (mL)" } th.num { "Mean HU" } th.num { "Anterior/posterior height" }
                 th.num { "Middle/posterior height" } th.num { "Genant grade" } th.num { "Confidence" } }
            @for v in &res.vertebrae {
                tr {
                    td { (u8::try_from(v.label).ok().and_then(Vertebra::from_label).map_or_else(|| v.label.to_string(), |x| x.name().to_owned())) }
                    td.num { (format!("{:.1}", v.volume_mm3 / 1000.0)) }
                    td.num { (format!("{:.0}", v.mean_hu)) }
                    td.num { (v.anterior_height_ratio.map_or_else(String::new, |x| format!("{x:.2}"))) }
                    td.num { (v.middle_height_ratio.map_or_else(String::new, |x| format!("{x:.2}"))) }
                    td.num { (v.genant_grade.map_or_else(String::new, |g| g.to_string())) }
                    td.num { (format!("{:.2}", v.confidence)) }
                }
            }
            @if res.vertebrae.is_empty() { tr { td.muted colspan="7" { "No vertebra found." } } }
        }
        h2 { "Lesions" }
        table {
            tr { th { "Class" } th { "Vertebra" } th.num { "Size (mm)" } th.num { "Score" } th { "Centre (mm, LPS)" } }
            @for l in &res.lesions {
                tr {
                    td { (l.class) }
                    td { (l.vertebra_label.and_then(|x| u8::try_from(x).ok()).and_then(Vertebra::from_label).map_or("", Vertebra::name)) }
                    td.num { (format!("{:.1}", l.size_mm)) }
                    td.num { (format!("{:.2}", l.score)) }
                    td { (format!("{:.1}, {:.1}, {:.1}", l.center_x, l.center_y, l.center_z)) }
                }
            }
            @if res.lesions.is_empty() { tr { td.muted colspan="5" { "No lesion found." } } }
        }
    }
}

/// `GET /series/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<i64>,
) -> Response {
    let d = match state.store.series_detail(id).await {
        Ok(Some(d)) => d,
        Ok(None) => return super::error_page(StatusCode::NOT_FOUND, "No such series."),
        Err(e) => return super::store_error(&e),
    };
    let result = match state.store.result_for_series(id).await {
        Ok(r) => r,
        Err(e) => return super::store_error(&e),
    };
    let links: Vec<SeriesLink> = state
        .series_links
        .iter()
        .flat_map(|hook| hook(id, result.is_some()))
        .collect();
    let body = html! {
        h1 { "Series " (id) }
        table {
            tr { th { "Patient" } td { (d.row.patient_name.as_deref().unwrap_or("")) " " span.muted { (d.patient_id.as_deref().unwrap_or("")) } } }
            tr { th { "Study date" } td { (d.row.study_date.as_deref().unwrap_or("")) } }
            tr { th { "Modality" } td { (d.row.modality) } }
            tr { th { "Study UID" } td { (d.study_uid) } }
            tr { th { "Series UID" } td { (d.series_uid) } }
            tr { th { "Instances" } td { (d.row.instances) " (" (super::bytes(d.bytes.max(0) as u64)) ")" } }
            tr { th { "Source AE" } td { (d.row.source_ae.as_deref().unwrap_or("")) } }
            tr { th { "Received (UTC)" } td { (utc(d.row.first_received_at_ms)) " – " (utc(d.last_received_at_ms)) } }
        }
        h2 { "Actions" }
        p {
            @for l in &links { a href=(l.href) { (l.label) } " " }
            @if user.has(Role::Operator) {
                form.inline method="post" action=(format!("/series/{id}/requeue")) {
                    (csrf_field(&user)) button type="submit" { "Analyse again" }
                }
                " "
            }
            @if user.has(Role::Admin) {
                form.inline method="post" action=(format!("/series/{id}/delete"))
                    data-confirm="Delete this series, its images, results and deliveries? This cannot be undone." {
                    (csrf_field(&user)) button.danger type="submit" { "Delete series" }
                }
            }
        }
        h2 { "Jobs" }
        table {
            tr { th { "Job" } th { "Kind" } th { "State" } th.num { "Attempts" } th { "Created (UTC)" }
                 th { "Finished (UTC)" } th.num { "Duration (s)" } th { "Last error" } }
            @for j in &d.jobs {
                tr {
                    td { (j.id) } td { (j.kind) } td { (j.state) }
                    td.num { (j.attempts) "/" (j.max_attempts) }
                    td { (utc(j.created_at_ms)) }
                    td { (j.finished_at_ms.map(utc).unwrap_or_default()) }
                    td.num { (j.finished_at_ms.map(|f| format!("{:.1}", (f - j.created_at_ms) as f64 / 1000.0)).unwrap_or_default()) }
                    td { (j.last_error.as_deref().unwrap_or("")) }
                }
            }
            @if d.jobs.is_empty() { tr { td.muted colspan="8" { "No job yet (the series may still be arriving)." } } }
        }
        h2 { "Result" }
        @match &result {
            Some(r) => (result_table(r)),
            None => p.muted { "No result yet." },
        }
    };
    layout(&format!("Series {id}"), Some(&user), &body).into_response()
}

/// `POST /series/{id}/requeue`: a new analysis job, unless one is queued or running.
pub async fn requeue(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
) -> Response {
    let peer = auth::peer(&ext);
    let d = match state.store.series_detail(id).await {
        Ok(Some(d)) => d,
        Ok(None) => return super::error_page(StatusCode::NOT_FOUND, "No such series."),
        Err(e) => return super::store_error(&e),
    };
    if d.jobs
        .iter()
        .any(|j| j.state == "queued" || j.state == "running")
    {
        return super::invalid(
            &user,
            "Analyse again",
            "An analysis of this series is already queued or running.",
            &format!("/series/{id}"),
        );
    }
    let job = NewJob {
        kind: ANALYZE_SERIES.into(),
        series_id: Some(id),
        dedup_key: Some(format!("requeue:{id}:{}", state.store.now())),
        max_attempts: state.config.dicom.completion.job_max_attempts,
    };
    match state.store.enqueue(&job).await {
        Ok(job_id) => {
            auth::audit(
                &state,
                &user.user.username,
                "series.requeue",
                Some(format!("series {id}, job {job_id}")),
                &peer,
                AuditOutcome::Success,
            )
            .await;
            Redirect::to(&format!("/series/{id}")).into_response()
        }
        Err(e) => super::store_error(&e),
    }
}

/// `POST /series/{id}/delete`: removes the series from the store, then its spool files.
pub async fn delete(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
) -> Response {
    let peer = auth::peer(&ext);
    match state.store.delete_series(id).await {
        Ok(Some(deleted)) => {
            let mut failed = 0usize;
            for f in &deleted.files {
                match std::fs::remove_file(f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(
                            series = id,
                            "cannot remove a spool file of a deleted series: {e}"
                        );
                    }
                }
            }
            let target = format!(
                "series {id}, {} files removed{}",
                deleted.files.len() - failed,
                if failed > 0 {
                    format!(", {failed} not removable")
                } else {
                    String::new()
                }
            );
            auth::audit(
                &state,
                &user.user.username,
                "series.delete",
                Some(target),
                &peer,
                AuditOutcome::Success,
            )
            .await;
            Redirect::to("/series").into_response()
        }
        Ok(None) => super::error_page(StatusCode::NOT_FOUND, "No such series."),
        Err(e) => {
            auth::audit(
                &state,
                &user.user.username,
                "series.delete",
                Some(format!("series {id}")),
                &peer,
                AuditOutcome::Failure,
            )
            .await;
            super::store_error(&e)
        }
    }
}
