//! A user's alerts, and marking one read.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::account;
use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{PathParam, QueryParams};
use crate::model::{AlertsData, Envelope, Message};
use crate::state::AdminState;
use crate::stats::alert_out;

#[derive(Debug, Deserialize, IntoParams)]
pub struct AlertsQuery {
    /// Only alerts not yet read (default false).
    pub unread_only: Option<bool>,
    /// At most this many, 1 to 100 (default 50).
    pub limit: Option<u32>,
}

/// The user's alerts, newest first, in the full form.
#[utoipa::path(get, path = "/api/subscription/alerts/{user_id}", tag = "alerts",
    params(("user_id" = String, Path), AlertsQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<AlertsData>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn alerts(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<AlertsQuery>,
) -> Result<Json<Envelope<AlertsData>>> {
    caller.require_user(&user_id)?;
    let limit = match q.limit.unwrap_or(50) {
        l @ 1..=100 => l,
        l => {
            return Err(AdminError::BadRequest(format!(
                "limit must be from 1 to 100, not {l}"
            )));
        }
    };
    let config = state.config();
    if !account::exists(&state.ledger, &config, &user_id).await? {
        return Err(AdminError::not_found_user(&user_id));
    }
    let ledger = &state.ledger;
    let alerts = ledger
        .alerts(&user_id, q.unread_only.unwrap_or(false), limit)
        .await?;
    Ok(Json(Envelope::ok(AlertsData {
        total: ledger.alert_count(&user_id).await?,
        unread_count: ledger.unread_alert_count(&user_id).await?,
        alerts: alerts.iter().map(alert_out).collect(),
    })))
}

/// Marks an alert read. A user may mark only their own alerts; another user's alert is 404.
#[utoipa::path(post, path = "/api/subscription/alerts/{alert_id}/mark-read", tag = "alerts",
    params(("alert_id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Message), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mark_read(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(alert_id): PathParam<i64>,
) -> Result<Json<Message>> {
    let not_found = || AdminError::NotFound("Alert not found".to_owned());
    let alert = state.ledger.alert(alert_id).await?.ok_or_else(not_found)?;
    caller
        .require_user(&alert.user_id)
        .map_err(|_| not_found())?;
    // Marking an alert read twice is not an error: the second call changes nothing.
    state
        .ledger
        .mark_alert_read(&alert.user_id, alert_id)
        .await?;
    Ok(Json(Message {
        success: true,
        message: "Alert marked as read".to_owned(),
    }))
}
