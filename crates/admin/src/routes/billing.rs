//! A user's bills: one row per closed billing period (`billing_history`, written by the ledger
//! when a period ends), in the seed's envelope with money as dollars.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tollgate_ledger::BillingRecord;
use utoipa::{IntoParams, ToSchema};

use crate::account;
use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{PathParam, QueryParams};
use crate::model::Envelope;
use crate::render::{iso, stored_dollars};
use crate::state::AdminState;

#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// 1 to 120 (default 12).
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

/// One closed billing period.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillOut {
    /// `YYYY-MM`, the month the period starts in.
    pub billing_period: String,
    pub period_start: String,
    pub period_end: String,
    /// The plan's name when the period was closed; absent for a user without a subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_name: Option<String>,
    /// Dollars: the plan's price for the period.
    pub base_cost: f64,
    /// Dollars: what the period's calls cost at provider prices (covered by the plan).
    pub usage_cost: f64,
    /// Dollars beyond the plan (0: limits are hard caps, nothing is billed beyond them).
    pub overage_cost: f64,
    /// Dollars owed: base plus overage.
    pub total_cost: f64,
    pub total_api_calls: u64,
    pub total_tokens: u64,
    /// `pending` until a billing system marks it otherwise.
    pub payment_status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingHistory {
    pub user_id: String,
    /// Newest period first.
    pub history: Vec<BillOut>,
    /// All the user's closed periods, not only this page.
    pub total_count: u64,
    pub limit: u32,
    pub offset: u64,
    pub has_more: bool,
}

fn bill_out(r: &BillingRecord) -> BillOut {
    BillOut {
        billing_period: r.billing_period.clone(),
        period_start: iso(r.period_start),
        period_end: iso(r.period_end),
        plan_name: r.plan_name.clone(),
        base_cost: stored_dollars(r.base_cost_nanousd),
        usage_cost: stored_dollars(r.usage_cost_nanousd),
        overage_cost: stored_dollars(r.overage_cost_nanousd),
        total_cost: stored_dollars(r.total_cost_nanousd),
        total_api_calls: u64::try_from(r.total_calls).unwrap_or(0),
        total_tokens: u64::try_from(r.total_tokens).unwrap_or(0),
        payment_status: r.payment_status.clone(),
    }
}

/// The user's closed billing periods, newest first. The current period is not in it until it
/// has ended.
#[utoipa::path(get, path = "/api/subscription/billing-history/{user_id}", tag = "usage",
    params(("user_id" = String, Path), HistoryQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<BillingHistory>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn billing_history(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> Result<Json<Envelope<BillingHistory>>> {
    caller.require_user(&user_id)?;
    let limit = match q.limit.unwrap_or(12) {
        l @ 1..=120 => l,
        l => {
            return Err(AdminError::BadRequest(format!(
                "limit must be from 1 to 120, not {l}"
            )));
        }
    };
    let offset = q.offset.unwrap_or(0);
    let config = state.config();
    if !account::exists(&state.ledger, &config, &user_id).await? {
        return Err(AdminError::not_found_user(&user_id));
    }
    let (rows, total) = state
        .ledger
        .billing_history_page(&user_id, limit, offset)
        .await?;
    Ok(Json(Envelope::ok(BillingHistory {
        has_more: offset.saturating_add(rows.len() as u64) < total,
        history: rows.iter().map(bill_out).collect(),
        user_id,
        total_count: total,
        limit,
        offset,
    })))
}
