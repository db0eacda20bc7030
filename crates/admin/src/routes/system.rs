//! `/metrics` for Prometheus, the dashboard page, the OpenAPI document and a health check.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::state::AdminState;

/// Prometheus text exposition of the gateway's metrics. Needs an admin token unless
/// `[admin] metrics_public = true`.
#[utoipa::path(get, path = "/metrics", tag = "system", security(("bearer" = [])),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn metrics(
    caller: std::result::Result<Caller, AdminError>,
    State(state): State<AdminState>,
) -> Result<Response> {
    if !state.config().admin.metrics_public {
        caller?.require_admin()?;
    }
    let body = state
        .metrics
        .as_ref()
        .map(|render| render())
        .unwrap_or_default();
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// The page's policy: its own script and style only, API calls to this listener only — the
/// page holds a token, so nothing else may run in it or frame it.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// One of the dashboard's files, compiled into the binary (gateways run in closed networks:
/// nothing is fetched from elsewhere).
fn dashboard_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The dashboard page: it signs in with a token or key typed into it and calls this API.
pub async fn dashboard_page() -> Response {
    dashboard_asset(
        "text/html; charset=utf-8",
        include_str!("../../assets/dashboard.html"),
    )
}

pub async fn dashboard_script() -> Response {
    dashboard_asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard.js"),
    )
}

pub async fn dashboard_style() -> Response {
    dashboard_asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/dashboard.css"),
    )
}

pub async fn healthz() -> &'static str {
    "ok"
}
