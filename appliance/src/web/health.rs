//! `/healthz` (no authentication; JSON; 200 when the store answers, the DICOM listener is up
//! and the engine is loaded, else 503) and `/metrics` (Prometheus text format 0.0.4).
//!
//! `/metrics` is readable with a console session, from an address in `web.metrics_allow`
//! (default loopback only, for a local Prometheus agent), or with
//! `Authorization: Bearer <web.metrics_token>`; anything else gets 401. It carries no patient
//! data, but queue sizes and throughput are operational information worth keeping inside.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth;
use super::status::EngineStatus;
use crate::metrics::Gauge;

/// `GET /healthz`.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let store = state.store.ping().await.is_ok();
    let snap = state.status.snapshot();
    let dicom = snap.dicom.is_some();
    let (engine, provider) = match &snap.engine {
        EngineStatus::Loaded(e) => (true, Some(e.provider.clone())),
        _ => (false, None),
    };
    let ok = store && dicom && engine;
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "store": store,
        "dicom_listener": dicom,
        "engine_loaded": engine,
        "execution_provider": provider,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Whether the request may read `/metrics` (see the module docs).
async fn metrics_allowed(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> bool {
    if let Some(token) = &state.web.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|g| auth::same_token(g.trim(), token)) {
            return true;
        }
    }
    if let Some(p) = peer
        && state
            .web
            .metrics_networks()
            .iter()
            .any(|n| n.contains(p.ip()))
    {
        return true;
    }
    match auth::cookie(headers, auth::SESSION_COOKIE) {
        Some(t) if t.len() == 64 => matches!(
            state.store.session_console_user(&auth::token_hash(t)).await,
            Ok(Some(_))
        ),
        _ => false,
    }
}

/// `GET /metrics`.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
) -> Response {
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if !metrics_allowed(&state, &headers, peer).await {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"vertebrad metrics\"",
            )],
            "metrics need a console session, an allowed address or the bearer token\n",
        )
            .into_response();
    }
    let mut gauges = Vec::new();
    match state.store.job_counts().await {
        Ok(counts) => gauges.push(Gauge {
            name: "vertebra_queue_jobs",
            help: "Jobs in the queue by state.",
            values: counts
                .iter()
                .map(|(s, n)| (Some(("state", s.as_str().to_owned())), *n as f64))
                .collect(),
        }),
        Err(e) => tracing::warn!("metrics: job counts: {e}"),
    }
    match state.store.delivery_counts().await {
        Ok(counts) => gauges.push(Gauge {
            name: "vertebra_deliveries",
            help: "Deliveries in the outbox by state.",
            values: ["pending", "delivered", "failed"]
                .iter()
                .map(|s| {
                    let n = counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                    (Some(("state", (*s).to_owned())), n as f64)
                })
                .collect(),
        }),
        Err(e) => tracing::warn!("metrics: delivery counts: {e}"),
    }
    let snap = state.status.snapshot();
    gauges.push(Gauge {
        name: "vertebra_engine_loaded",
        help: "1 when the inference engine is loaded.",
        values: vec![(
            None,
            f64::from(u8::from(matches!(snap.engine, EngineStatus::Loaded(_)))),
        )],
    });
    gauges.push(Gauge {
        name: "vertebra_dicom_listener_up",
        help: "1 when the DICOM listener is bound.",
        values: vec![(None, f64::from(u8::from(snap.dicom.is_some())))],
    });
    let text = crate::metrics::global().render(&gauges);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
