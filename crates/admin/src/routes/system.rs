//! `/metrics` for Prometheus, the dashboard page, the OpenAPI document and a health check.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

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

/// A small page that calls this API with a token or key typed into it.
pub async fn dashboard_page() -> Html<&'static str> {
    Html(include_str!("../../assets/dashboard.html"))
}

pub async fn healthz() -> &'static str {
    "ok"
}
