//! The console's one route table: every route with its method, path, who may use it and its
//! handler. The router is built from it and nothing else, so the access test
//! (`appliance/tests/web.rs`), which walks the same table, cannot miss a route.
//!
//! To add a page (e.g. the result viewer), add its entries to [`route_table`].

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post};

use super::{AppState, auth, health, pages, statics};
use crate::store::Role;

/// Who may use a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (login, setup, health, metrics with its own check, static assets).
    Public,
    /// Users with at least this role whose password need not be changed.
    Role(Role),
    /// Users with at least this role, also while they must change their password (the
    /// password page itself, logout).
    RoleDuringPasswordChange(Role),
}

/// One route.
#[derive(Clone, Copy)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The axum path (`{id}` for a database id).
    pub path: &'static str,
    /// Who may use it.
    pub access: Access,
    /// Builds its handler.
    pub handler: fn() -> MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

const VIEWER: Access = Access::Role(Role::Viewer);
const OPERATOR: Access = Access::Role(Role::Operator);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every route of the console.
pub fn route_table() -> Vec<Route> {
    vec![
        Route {
            method: "GET",
            path: "/static/console.css",
            access: Access::Public,
            handler: || get(statics::css),
        },
        Route {
            method: "GET",
            path: "/static/console.js",
            access: Access::Public,
            handler: || get(statics::js),
        },
        Route {
            method: "GET",
            path: "/static/viewer.css",
            access: Access::Public,
            handler: || get(statics::viewer_css),
        },
        Route {
            method: "GET",
            path: "/static/viewer.js",
            access: Access::Public,
            handler: || get(statics::viewer_js),
        },
        Route {
            method: "GET",
            path: "/healthz",
            access: Access::Public,
            handler: || get(health::healthz),
        },
        Route {
            method: "GET",
            path: "/metrics",
            access: Access::Public,
            handler: || get(health::metrics),
        },
        Route {
            method: "GET",
            path: "/login",
            access: Access::Public,
            handler: || get(pages::login::page),
        },
        Route {
            method: "POST",
            path: "/login",
            access: Access::Public,
            handler: || post(pages::login::submit),
        },
        Route {
            method: "GET",
            path: "/setup",
            access: Access::Public,
            handler: || get(pages::setup::page),
        },
        Route {
            method: "POST",
            path: "/setup",
            access: Access::Public,
            handler: || post(pages::setup::submit),
        },
        Route {
            method: "POST",
            path: "/logout",
            access: Access::RoleDuringPasswordChange(Role::Viewer),
            handler: || post(pages::login::logout),
        },
        Route {
            method: "GET",
            path: "/password",
            access: Access::RoleDuringPasswordChange(Role::Viewer),
            handler: || get(pages::password::page),
        },
        Route {
            method: "POST",
            path: "/password",
            access: Access::RoleDuringPasswordChange(Role::Viewer),
            handler: || post(pages::password::submit),
        },
        Route {
            method: "GET",
            path: "/",
            access: VIEWER,
            handler: || get(pages::dashboard::page),
        },
        Route {
            method: "GET",
            path: "/series",
            access: VIEWER,
            handler: || get(pages::series::list),
        },
        Route {
            method: "GET",
            path: "/series/{id}",
            access: VIEWER,
            handler: || get(pages::series::detail),
        },
        Route {
            method: "GET",
            path: "/series/{id}/viewer",
            access: VIEWER,
            handler: || get(pages::viewer::page),
        },
        Route {
            method: "GET",
            path: "/series/{id}/viewer/info.json",
            access: VIEWER,
            handler: || get(pages::viewer::info),
        },
        Route {
            method: "GET",
            path: "/series/{id}/viewer/slice/{plane}/{file}",
            access: VIEWER,
            handler: || get(pages::viewer::slice),
        },
        Route {
            method: "POST",
            path: "/series/{id}/requeue",
            access: OPERATOR,
            handler: || post(pages::series::requeue),
        },
        Route {
            method: "POST",
            path: "/series/{id}/delete",
            access: ADMIN,
            handler: || post(pages::series::delete),
        },
        Route {
            method: "GET",
            path: "/destinations",
            access: VIEWER,
            handler: || get(pages::destinations::list),
        },
        Route {
            method: "POST",
            path: "/destinations",
            access: OPERATOR,
            handler: || post(pages::destinations::create),
        },
        Route {
            method: "GET",
            path: "/destinations/{id}",
            access: VIEWER,
            handler: || get(pages::destinations::edit),
        },
        Route {
            method: "POST",
            path: "/destinations/{id}",
            access: OPERATOR,
            handler: || post(pages::destinations::update),
        },
        Route {
            method: "POST",
            path: "/destinations/{id}/echo",
            access: OPERATOR,
            handler: || post(pages::destinations::echo),
        },
        Route {
            method: "POST",
            path: "/destinations/{id}/enabled",
            access: OPERATOR,
            handler: || post(pages::destinations::set_enabled),
        },
        Route {
            method: "GET",
            path: "/peers",
            access: VIEWER,
            handler: || get(pages::peers::list),
        },
        Route {
            method: "POST",
            path: "/peers",
            access: ADMIN,
            handler: || post(pages::peers::create),
        },
        Route {
            method: "GET",
            path: "/peers/{id}",
            access: VIEWER,
            handler: || get(pages::peers::edit),
        },
        Route {
            method: "POST",
            path: "/peers/{id}",
            access: ADMIN,
            handler: || post(pages::peers::update),
        },
        Route {
            method: "POST",
            path: "/peers/{id}/enabled",
            access: ADMIN,
            handler: || post(pages::peers::set_enabled),
        },
        Route {
            method: "GET",
            path: "/deliveries",
            access: VIEWER,
            handler: || get(pages::deliveries::list),
        },
        Route {
            method: "POST",
            path: "/deliveries/{id}/retry",
            access: OPERATOR,
            handler: || post(pages::deliveries::retry),
        },
        Route {
            method: "GET",
            path: "/model",
            access: VIEWER,
            handler: || get(pages::model::page),
        },
        Route {
            method: "POST",
            path: "/model/upload",
            access: ADMIN,
            handler: || post(pages::model::upload),
        },
        Route {
            method: "POST",
            path: "/model/{id}/activate",
            access: ADMIN,
            handler: || post(pages::model::activate),
        },
        Route {
            method: "POST",
            path: "/model/configured",
            access: ADMIN,
            handler: || post(pages::model::use_configured),
        },
        Route {
            method: "GET",
            path: "/users",
            access: ADMIN,
            handler: || get(pages::users::list),
        },
        Route {
            method: "POST",
            path: "/users",
            access: ADMIN,
            handler: || post(pages::users::create),
        },
        Route {
            method: "POST",
            path: "/users/{id}/role",
            access: ADMIN,
            handler: || post(pages::users::set_role),
        },
        Route {
            method: "POST",
            path: "/users/{id}/disabled",
            access: ADMIN,
            handler: || post(pages::users::set_disabled),
        },
        Route {
            method: "POST",
            path: "/users/{id}/password",
            access: ADMIN,
            handler: || post(pages::users::reset_password),
        },
        Route {
            method: "GET",
            path: "/audit",
            access: ADMIN,
            handler: || get(pages::audit::page),
        },
        Route {
            method: "GET",
            path: "/audit.csv",
            access: ADMIN,
            handler: || get(pages::audit::csv),
        },
        Route {
            method: "GET",
            path: "/settings",
            access: ADMIN,
            handler: || get(pages::settings::page),
        },
        Route {
            method: "POST",
            path: "/settings",
            access: ADMIN,
            handler: || post(pages::settings::submit),
        },
    ]
}

/// The router: every [`route_table`] entry behind the [`auth::guard`] with its access, all
/// behind the security headers.
pub fn router(state: AppState) -> Router {
    let upload_limit = usize::try_from(state.web.max_bundle_upload_mib.saturating_mul(1 << 20))
        .unwrap_or(usize::MAX);
    let mut router: Router<AppState> = Router::new();
    for route in route_table() {
        let mut handler = (route.handler)().route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), route.access),
            auth::guard,
        ));
        if route.path == "/model/upload" {
            handler = handler.layer(DefaultBodyLimit::max(upload_limit));
        }
        router = router.route(route.path, handler);
    }
    router
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(super::headers::security_headers))
        .with_state(state)
}
