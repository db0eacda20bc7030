//! The configuration in force and its reload, the log level (operators), and `/readyz`
//! (orchestrators).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::JsonBody;
use crate::live::{ConfigControlRef, ConfigStatus, LogControlRef};
use crate::model::Envelope;
use crate::state::AdminState;

/// How long `/readyz` waits for the database to answer before calling it unreachable.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn control(state: &AdminState) -> Result<&ConfigControlRef> {
    state.control.as_ref().ok_or_else(|| {
        AdminError::NotFound("this admin server does not manage a running gateway".to_owned())
    })
}

/// The configuration in force: its version, when it was loaded, what waits for a restart and
/// the latest refused reload.
#[utoipa::path(get, path = "/api/admin/config", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Envelope<ConfigStatus>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn config_status(
    caller: Caller,
    State(state): State<AdminState>,
) -> Result<Json<Envelope<ConfigStatus>>> {
    caller.require_admin()?;
    Ok(Json(Envelope::ok(control(&state)?.status())))
}

/// Reads `gateway.toml` and the pricing files again and applies them, as SIGHUP does. 422 with
/// every problem (`file:line: …`) when they do not pass `tollgate check`; the configuration in
/// force keeps serving.
#[utoipa::path(post, path = "/api/admin/reload", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Envelope<ConfigStatus>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn reload(
    caller: Caller,
    State(state): State<AdminState>,
) -> Result<Json<Envelope<ConfigStatus>>> {
    caller.require_admin()?;
    let control = std::sync::Arc::clone(control(&state)?);
    let outcome = tokio::task::spawn_blocking(move || control.reload("admin"))
        .await
        .map_err(|e| AdminError::Internal(format!("the reload did not finish: {e}")))?;
    match outcome {
        Ok(status) => Ok(Json(Envelope::ok(status))),
        Err(problems) => Err(AdminError::InvalidConfig(problems)),
    }
}

/// The longest log directive accepted.
const MAX_DIRECTIVE_BYTES: usize = 1024;

/// A log level: `error`, `warn`, `info`, `debug`, `trace`, or `EnvFilter` directives
/// (`warn,tollgate=debug`).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLevel {
    pub level: String,
}

fn log_control(state: &AdminState) -> Result<&LogControlRef> {
    state.log.as_ref().ok_or_else(|| {
        AdminError::NotFound("this admin server does not manage a running gateway".to_owned())
    })
}

/// The log level in force.
#[utoipa::path(get, path = "/api/admin/log-level", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Envelope<LogLevel>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn log_level(
    caller: Caller,
    State(state): State<AdminState>,
) -> Result<Json<Envelope<LogLevel>>> {
    caller.require_admin()?;
    let level = log_control(&state)?.level();
    Ok(Json(Envelope::ok(LogLevel { level })))
}

/// Changes the log level at once, until the next change or restart (the start's level comes
/// from `RUST_LOG`). 400 when it is neither a level nor a filter directive; the old one stays.
#[utoipa::path(put, path = "/api/admin/log-level", tag = "admin", security(("bearer" = [])),
    request_body = LogLevel,
    responses((status = 200, body = Envelope<LogLevel>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn set_log_level(
    caller: Caller,
    State(state): State<AdminState>,
    JsonBody(wanted): JsonBody<LogLevel>,
) -> Result<Json<Envelope<LogLevel>>> {
    caller.require_admin()?;
    let control = log_control(&state)?;
    let directive = wanted.level.trim();
    if directive.is_empty() || directive.len() > MAX_DIRECTIVE_BYTES {
        return Err(AdminError::BadRequest(format!(
            "level must be 1 to {MAX_DIRECTIVE_BYTES} bytes: a level (error, warn, info, debug, \
             trace) or filter directives such as \"warn,tollgate=debug\""
        )));
    }
    let level = control
        .set_level(directive)
        .map_err(|e| AdminError::BadRequest(e.to_string()))?;
    tracing::info!(level = level.as_str(), "log level changed");
    Ok(Json(Envelope::ok(LogLevel { level })))
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_version: Option<String>,
}

/// 200 when this instance should get traffic: its configuration loaded, its database answering,
/// and nothing the binary reports (shutting down, the counter store away with calls refused);
/// 503 with the reasons otherwise. No credentials: orchestrators probe it.
pub async fn readyz(State(state): State<AdminState>) -> Response {
    let mut reasons = state.readiness.as_ref().map(|r| r()).unwrap_or_default();
    // A cheap indexed read: the database answers queries, not only connections.
    let probe = tokio::time::timeout(
        DATABASE_PROBE_TIMEOUT,
        state.ledger.api_key_by_hash("readyz"),
    )
    .await;
    match probe {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            reasons.push(
                "database unreachable: keys issued through the admin API cannot be checked and \
                 usage is being spooled (see the log)"
                    .to_owned(),
            );
        }
        Err(_) => reasons.push(format!(
            "database unreachable: no answer within {} s",
            DATABASE_PROBE_TIMEOUT.as_secs()
        )),
    }
    let config_version = state.control.as_ref().map(|c| c.status().version);
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: reasons.is_empty(),
        reasons,
        config_version,
    };
    (status, Json(json!(body))).into_response()
}
