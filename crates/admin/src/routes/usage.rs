//! Usage of a period, trends over months, and the dashboard that combines them.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::Deserialize;
use tollgate_domain::BillingPeriod;
use utoipa::IntoParams;

use crate::account;
use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{PathParam, QueryParams};
use crate::limits::limits_block;
use crate::model::{Dashboard, Envelope, Summary, UsageStats, UsageTrends};
use crate::ops;
use crate::render::dollars;
use crate::routes::recommendations;
use crate::state::AdminState;
use crate::stats;

/// How many unread alerts the dashboard lists (the seed's 5; `summary.unread_alerts` counts
/// them all).
const DASHBOARD_ALERTS_MAX: u32 = 5;

#[derive(Debug, Deserialize, IntoParams)]
pub struct PeriodQuery {
    /// `YYYY-MM`; default: the period containing now.
    pub billing_period: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TrendsQuery {
    /// How many periods, 1 to 24 (default 6).
    pub months: Option<u32>,
}

/// The user's usage in one billing period.
#[utoipa::path(get, path = "/api/subscription/usage/{user_id}", tag = "usage",
    params(("user_id" = String, Path), PeriodQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<UsageStats>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn usage(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<PeriodQuery>,
) -> Result<Json<Envelope<UsageStats>>> {
    caller.require_user(&user_id)?;
    let config = state.config();
    let stats = ops::usage_stats(
        &state.ledger,
        &config,
        &user_id,
        q.billing_period.as_deref(),
    )
    .await?;
    Ok(Json(Envelope::ok(stats)))
}

fn months(requested: Option<u32>) -> Result<usize> {
    match requested.unwrap_or(6) {
        m @ 1..=24 => Ok(m as usize),
        m => Err(AdminError::BadRequest(format!(
            "months must be from 1 to 24, not {m}"
        ))),
    }
}

/// The user's usage per period for the last `months` periods, oldest first.
#[utoipa::path(get, path = "/api/subscription/usage/{user_id}/trends", tag = "usage",
    params(("user_id" = String, Path), TrendsQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<UsageTrends>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn trends(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<TrendsQuery>,
) -> Result<Json<Envelope<UsageTrends>>> {
    caller.require_user(&user_id)?;
    let months = months(q.months)?;
    let config = state.config();
    let account = account::load(&state.ledger, &config, &user_id).await?;
    let periods = state
        .ledger
        .monthly_trends(&user_id, account.period_at(Utc::now()), months)
        .await?;
    Ok(Json(Envelope::ok(stats::trends(&periods))))
}

/// Everything the dashboard shows: usage, trends, limits, alerts, projections,
/// recommendations.
#[utoipa::path(get, path = "/api/subscription/dashboard/{user_id}", tag = "usage",
    params(("user_id" = String, Path), PeriodQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<Dashboard>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn dashboard(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<PeriodQuery>,
) -> Result<Json<Envelope<Dashboard>>> {
    caller.require_user(&user_id)?;
    let config = state.config();
    let ledger = &state.ledger;
    let account = account::load(ledger, &config, &user_id).await?;
    let now = Utc::now();
    let period = match q.billing_period.as_deref() {
        None => account.period_at(now),
        Some(key) => BillingPeriod::from_key(key, account.anchor)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?,
    };
    let usage = ledger.usage_for_period(&user_id, &period.key()).await?;
    let period_alerts = ledger
        .period_alerts(&user_id, &period.key(), true, stats::USAGE_ALERTS_MAX)
        .await?;
    let refused = ledger.refused_calls(&user_id, &period.key()).await?;
    let current = stats::usage_stats(&account.plan, period, &usage, &period_alerts, refused, now);
    let trend_periods = ledger.monthly_trends(&user_id, period, 6).await?;
    let unread = ledger.alerts(&user_id, true, DASHBOARD_ALERTS_MAX).await?;
    let unread_count = ledger.unread_alert_count(&user_id).await?;
    let projections = stats::projections(&account.plan, period, usage.totals.cost_nanousd, now);
    let summary = Summary {
        total_api_calls_this_month: usage.totals.calls,
        total_cost_this_month: dollars(usage.totals.cost_nanousd),
        usage_status: current.usage_status.clone(),
        unread_alerts: unread_count,
    };
    let recommendations =
        recommendations::for_period(ledger, &config, &account, &user_id, period, &usage, now)
            .await?;
    Ok(Json(Envelope::ok(Dashboard {
        total_usage: current.clone(),
        current_period_usage: current.clone(),
        current_usage: current,
        trends: stats::trends(&trend_periods),
        limits: limits_block(&account.plan),
        alerts: unread.iter().map(stats::alert_out).collect(),
        projections,
        summary,
        recommendations,
    })))
}
