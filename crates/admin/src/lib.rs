//! Tollgate's admin API: the seed's `/api/subscription` endpoints (plans, subscription,
//! pricing, usage, trends, dashboard, alerts, mark-read, status, subscribe, usage logs,
//! preflight) and usage recommendations, operators' routes for users, plans and keys, the
//! configuration in force and its reload, `/metrics`, `/healthz` and `/readyz`, a small dashboard page and the OpenAPI document
//! generated from the routes; plus the deliverers that send raised alerts to webhooks and by
//! e-mail.
//!
//! Every route needs credentials: an admin token for everything, or a user's own Tollgate key
//! for that user's own data (`auth`). Plans and prices come from the live configuration
//! snapshot; usage and alerts from the ledger. This crate never depends on the proxy: the
//! binary hands it a metrics renderer.

mod account;
pub mod auth;
mod cors;
pub mod deliver;
pub mod error;
mod export;
mod extract;
pub mod key_rules;
pub mod lifecycle;
mod limits;
pub mod live;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod recommend;
pub mod render;
mod routes;
mod state;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{AdminTokens, Caller};
pub use deliver::{Deliverer, WebhookSigner};
pub use error::AdminError;
pub use live::{
    ConfigControl, ConfigControlRef, ConfigStatus, InvalidLogLevel, LogControl, LogControlRef,
    Readiness, RefusedReload,
};
pub use mail::Mailer;
pub use state::{
    AdminState, ConfigSource, ForgetCounters, ForgetFuture, MetricsRenderer, OnKeyRevoked,
    forget_counters_with,
};

/// The API's routes and the OpenAPI document describing exactly those routes.
pub fn api(state: AdminState) -> (Router, OpenApi) {
    let (router, mut doc) = OpenApiRouter::new()
        .routes(routes!(routes::plans::plans))
        .routes(routes!(routes::plans::pricing))
        .routes(routes!(routes::plans::user_subscription))
        .routes(routes!(routes::plans::status))
        .routes(routes!(routes::plans::subscribe))
        .routes(routes!(routes::usage::usage))
        .routes(routes!(routes::usage::trends))
        .routes(routes!(routes::usage::dashboard))
        .routes(routes!(routes::recommendations::recommendations_route))
        .routes(routes!(routes::billing::billing_history))
        .routes(routes!(routes::insights::daily))
        .routes(routes!(routes::insights::models))
        .routes(routes!(routes::insights::own_keys))
        .routes(routes!(routes::insights::overview))
        .routes(routes!(routes::insights::session))
        .routes(routes!(routes::alerts::alerts))
        .routes(routes!(routes::alerts::mark_read))
        .routes(routes!(routes::logs::usage_logs))
        .routes(routes!(routes::logs::preflight))
        .routes(routes!(
            routes::users::list_users,
            routes::users::create_user
        ))
        .routes(routes!(routes::users::get_user, routes::users::delete_user))
        .routes(routes!(routes::users::export_user))
        .routes(routes!(routes::users::disable_user))
        .routes(routes!(routes::users::enable_user))
        .routes(routes!(routes::users::set_plan))
        .routes(routes!(routes::users::set_email))
        .routes(routes!(routes::users::list_keys, routes::users::issue_key))
        .routes(routes!(
            routes::users::revoke_key,
            routes::users::change_key
        ))
        .routes(routes!(routes::live::config_status))
        .routes(routes!(routes::live::reload))
        .routes(routes!(
            routes::live::log_level,
            routes::live::set_log_level
        ))
        .routes(routes!(routes::system::metrics))
        .with_state(state.clone())
        .split_for_parts();
    doc.info.title = "Tollgate admin API".to_owned();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.description = Some(
        "Plans, usage, trends, dashboard and alerts in the shapes of the seed's \
         /api/subscription endpoints; users, plans and keys for operators."
            .to_owned(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    (router, doc)
}

/// The whole admin listener: the API, `/api/openapi.json`, `/dashboard` and its two files,
/// `/healthz` (alive), `/readyz` (ready for traffic), CORS.
pub fn router(state: AdminState) -> Router {
    let (api, doc) = api(state.clone());
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned()));
    api.route(
        "/api/openapi.json",
        get(move || {
            let doc = Arc::clone(&doc);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc.as_str().to_owned(),
                )
            }
        }),
    )
    .route("/dashboard", get(routes::system::dashboard_page))
    .route(
        "/dashboard/dashboard.js",
        get(routes::system::dashboard_script),
    )
    .route(
        "/dashboard/dashboard.css",
        get(routes::system::dashboard_style),
    )
    .route("/healthz", get(routes::system::healthz))
    .route(
        "/readyz",
        get(routes::live::readyz).with_state(state.clone()),
    )
    .layer(axum::middleware::from_fn_with_state(state, cors::cors))
}

/// Serves the admin API on `listener` until `shutdown` completes, then finishes the requests
/// in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
///
/// The socket is bound with `SO_REUSEPORT`, so that during an upgrade (`tollgate run
/// --upgrade`) the new process binds the admin address while the old one still listens on it:
/// the admin API answers throughout. (Only a process of the same user can bind beside it, and
/// the gateway's pid file keeps a second one from starting without `--upgrade`.)
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
