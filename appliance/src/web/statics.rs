//! The console's stylesheet and script, embedded in the binary (no inline CSS or JS anywhere,
//! so the Content-Security-Policy can forbid both).

use axum::http::header;
use axum::response::IntoResponse;

/// `appliance/web/static/console.css`.
pub const CSS: &str = include_str!("../../web/static/console.css");
/// `appliance/web/static/console.js`.
pub const JS: &str = include_str!("../../web/static/console.js");
/// `appliance/web/static/viewer.css` (the result viewer).
pub const VIEWER_CSS: &str = include_str!("../../web/static/viewer.css");
/// `appliance/web/static/viewer.js` (the result viewer).
pub const VIEWER_JS: &str = include_str!("../../web/static/viewer.js");

/// `GET /static/console.css`.
pub async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

/// `GET /static/console.js`.
pub async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
}

/// `GET /static/viewer.css`.
pub async fn viewer_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        VIEWER_CSS,
    )
}

/// `GET /static/viewer.js`.
pub async fn viewer_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        VIEWER_JS,
    )
}
