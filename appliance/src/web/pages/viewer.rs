//! The result viewer: `GET /series/{id}/viewer` (the page), `…/viewer/info.json` (what the page
//! script needs: planes, slice counts, vertebra and lesion rows) and
//! `…/viewer/slice/{plane}/{index}.png?window=bone|soft&overlay=0|1&heatmap=0|1` (one slice
//! rendered server-side; docs/viewer.md explains why server-side PNG).
//!
//! The series' spooled DICOM files and its analysis (`<state>/results/series-<id>/`) are loaded
//! once into the console's [`ViewerCache`] (bounded by bytes) on a blocking thread; the cache
//! key includes the result's `updated_at_ms`, so a re-analysis is never shown with the old
//! label map. Only a `succeeded` result can be viewed. URLs carry the database id only (no
//! UIDs, no patient data).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::{error_page, layout, store_error};
use crate::series::SeriesOptions;
use crate::store::ResultStatus;
use crate::viewer::{
    Plane, ViewerCache, ViewerError, ViewerVolume, Window, load_result, render_slice,
};
use crate::web::AppState;
use crate::web::auth::CurrentUser;
use crate::web::pages::series::SeriesLink;

/// The viewer link on the per-series page (a [`crate::web::SeriesLinkHook`]), shown when the
/// series has a result.
pub fn series_link(series_id: i64, has_result: bool) -> Vec<SeriesLink> {
    if has_result {
        vec![SeriesLink {
            href: format!("/series/{series_id}/viewer"),
            label: "Result viewer".into(),
        }]
    } else {
        Vec::new()
    }
}

/// Cache key: the series and the version (`updated_at_ms`) of its result.
pub type ViewerKey = (i64, i64);

/// The console's viewer cache.
pub type Cache = ViewerCache<ViewerKey>;

/// `GET /series/{id}/viewer`.
pub async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = viewable(&state, id).await {
        return r;
    }
    let base = format!("/series/{id}/viewer");
    let body = html! {
        h1 { "Series " (id) " — result viewer" }
        p.muted { "Research use only — not for diagnostic use. "
            a href=(format!("/series/{id}")) { "Back to the series" } }
        link rel="stylesheet" href="/static/viewer.css";
        section #viewer .viewer data-base=(base) {}
        script src="/static/viewer.js" defer {}
    };
    layout("Result viewer", Some(&user), &body).into_response()
}

/// `GET /series/{id}/viewer/info.json`.
pub async fn info(State(state): State<AppState>, Path(id): Path<i64>) -> Response {
    match volume(&state, id).await {
        Ok(v) => (
            [(header::CONTENT_TYPE, "application/json")],
            crate::viewer::ViewerInfo::of(&v).to_json(),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// The slice URL's query: `window=bone|soft` (default bone), `overlay=0|1`, `heatmap=0|1`
/// (default 0).
#[derive(Debug, serde::Deserialize)]
pub struct SliceQuery {
    window: Option<String>,
    overlay: Option<String>,
    heatmap: Option<String>,
}

/// `GET /series/{id}/viewer/slice/{plane}/{index}.png`.
pub async fn slice(
    State(state): State<AppState>,
    Path((id, plane, file)): Path<(i64, String, String)>,
    Query(q): Query<SliceQuery>,
) -> Response {
    let request = || -> Result<(Plane, usize, Window, bool, bool), ViewerError> {
        let plane: Plane = plane.parse()?;
        let index = file
            .strip_suffix(".png")
            .and_then(|i| i.parse::<usize>().ok())
            .ok_or_else(|| ViewerError::Request(format!("{file:?}: expected <index>.png")))?;
        let window = Window::preset(q.window.as_deref().unwrap_or("bone"))?;
        let flag = |k: &str, v: Option<&str>| -> Result<bool, ViewerError> {
            match v {
                None | Some("0") => Ok(false),
                Some("1") => Ok(true),
                Some(v) => Err(ViewerError::Request(format!("{k}={v:?}: use 0 or 1"))),
            }
        };
        Ok((
            plane,
            index,
            window,
            flag("overlay", q.overlay.as_deref())?,
            flag("heatmap", q.heatmap.as_deref())?,
        ))
    };
    let (plane, index, window, overlay, heatmap) = match request() {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let v = match volume(&state, id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let png = tokio::task::spawn_blocking(move || {
        render_slice(&v, plane, index, window, overlay, heatmap)
    })
    .await;
    match png {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "image/png")], bytes).into_response(),
        Ok(Err(e @ ViewerError::Request(_))) => error_page(StatusCode::BAD_REQUEST, &e.to_string()),
        Ok(Err(e)) => viewer_error(id, &e),
        Err(e) => {
            tracing::error!(series = id, "viewer render thread: {e}");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The slice could not be rendered.",
            )
        }
    }
}

/// The series' result version when it has a succeeded result, else the response to send.
async fn viewable(state: &AppState, id: i64) -> Result<i64, Response> {
    match state.store.result_version(id).await {
        Ok(Some((ResultStatus::Succeeded, version))) => Ok(version),
        Ok(Some(_)) => Err(error_page(
            StatusCode::NOT_FOUND,
            "This series' analysis did not succeed: there is nothing to view.",
        )),
        Ok(None) => Err(error_page(
            StatusCode::NOT_FOUND,
            "No analysis result for this series (yet).",
        )),
        Err(e) => Err(store_error(&e)),
    }
}

/// The series' viewer volume, from the cache or loaded on a blocking thread.
async fn volume(state: &AppState, id: i64) -> Result<Arc<ViewerVolume>, Response> {
    let key: ViewerKey = (id, viewable(state, id).await?);
    if let Some(v) = state.viewer.get(&key) {
        return Ok(v);
    }
    let files = match state.store.series_files(id).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(error_page(StatusCode::NOT_FOUND, "No such series.")),
        Err(e) => return Err(store_error(&e)),
    };
    let Some(source) = files
        .files
        .first()
        .and_then(|f| FsPath::new(f).parent())
        .map(FsPath::to_path_buf)
    else {
        return Err(error_page(
            StatusCode::GONE,
            "The series' images are no longer in the spool (retention): the viewer needs them.",
        ));
    };
    let result_dir: PathBuf = state.state_dir.join("results").join(format!("series-{id}"));
    let cache = Arc::clone(&state.viewer);
    let loaded = tokio::task::spawn_blocking(move || {
        cache.get_or_load(&key, || {
            load_result(&result_dir, &source, &SeriesOptions::default())
        })
    })
    .await;
    match loaded {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(viewer_error(id, &e)),
        Err(e) => {
            tracing::error!(series = id, "viewer load thread: {e}");
            Err(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The series could not be loaded.",
            ))
        }
    }
}

/// A load or render failure: logged (no patient data in these messages) and shown.
fn viewer_error(id: i64, e: &ViewerError) -> Response {
    tracing::error!(series = id, "result viewer: {e}");
    error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
}
