//! `GET /api/subscription/recommendations/{user_id}`: what the user should know or do about a
//! billing period (see `recommend`).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tollgate_config::Config;
use tollgate_domain::BillingPeriod;
use tollgate_ledger::{Ledger, PeriodUsage};
use utoipa::ToSchema;

use crate::account::{self, Account};
use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{PathParam, QueryParams};
use crate::model::Envelope;
use crate::recommend::{Facts, Recommendation, recommendations};
use crate::routes::usage::PeriodQuery;
use crate::state::AdminState;

/// How many of the period's alerts are read for when a limit was reached (a period raises a
/// few per limit).
const PERIOD_ALERTS_MAX: u32 = 500;

#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendationsData {
    pub recommendations: Vec<Recommendation>,
}

/// The recommendations of `period` for the user of `account`, whose period usage is `usage`.
pub async fn for_period(
    ledger: &Ledger,
    config: &Config,
    account: &Account,
    user_id: &str,
    period: BillingPeriod,
    usage: &PeriodUsage,
    now: DateTime<Utc>,
) -> Result<Vec<Recommendation>> {
    let models = ledger.model_usage(user_id, &period.key()).await?;
    let alerts = ledger
        .period_alerts(user_id, &period.key(), false, PERIOD_ALERTS_MAX)
        .await?;
    let refused = ledger.refused_calls(user_id, &period.key()).await?;
    Ok(recommendations(&Facts {
        plan: &account.plan,
        plans: &config.plans,
        period,
        now,
        usage,
        models: &models,
        prices: &config.prices,
        alerts: &alerts,
        refused: &refused,
    }))
}

/// What the user should know or do about the period, each with the numbers behind it.
#[utoipa::path(get, path = "/api/subscription/recommendations/{user_id}", tag = "usage",
    params(("user_id" = String, Path), PeriodQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<RecommendationsData>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn recommendations_route(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<PeriodQuery>,
) -> Result<Json<Envelope<RecommendationsData>>> {
    caller.require_user(&user_id)?;
    let config = state.config();
    let account = account::load(&state.ledger, &config, &user_id).await?;
    let now = Utc::now();
    let period = match q.billing_period.as_deref() {
        None => account.period_at(now),
        Some(key) => BillingPeriod::from_key(key, account.anchor)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?,
    };
    let usage = state
        .ledger
        .usage_for_period(&user_id, &period.key())
        .await?;
    let recommendations = for_period(
        &state.ledger,
        &config,
        &account,
        &user_id,
        period,
        &usage,
        now,
    )
    .await?;
    Ok(Json(Envelope::ok(RecommendationsData { recommendations })))
}
