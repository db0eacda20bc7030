//! The usage log (`/usage-logs`) and the cost estimate before a batch of calls
//! (`/preflight-check`), both about the caller's own user unless an operator names one.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tollgate_config::Config;
use tollgate_domain::{Amount, CallShape, LimitKey, Provider, reservation_amount};
use tollgate_ledger::{LogFilter, UsageLog};
use tollgate_usage::{RequestFacts, priced_name};
use utoipa::{IntoParams, ToSchema};

use crate::account;
use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{JsonBody, QueryParams};
use crate::model::Envelope;
use crate::render::{dollars, iso, stored_dollars};
use crate::routes::plans::parse_provider;
use crate::state::AdminState;
use crate::stats::used;

#[derive(Debug, Deserialize, IntoParams)]
pub struct LogsQuery {
    /// 1 to 5000 (default 50).
    pub limit: Option<u32>,
    pub offset: Option<u64>,
    pub provider: Option<String>,
    pub status_code: Option<u16>,
    /// `success` (status below 400, no error) or `failed`.
    pub status: Option<String>,
    pub billing_period: Option<String>,
    /// Operators: whose logs (default: everyone's). Users: only their own id.
    pub user_id: Option<String>,
    /// `true`: only calls the gateway refused; `false`: only calls it admitted; absent: both.
    pub refused: Option<bool>,
    /// Only calls made with this key (its id as `GET /api/admin/users/{id}/keys` lists it).
    pub key_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogOut {
    pub id: i64,
    pub event_id: String,
    pub user_id: String,
    pub timestamp: String,
    /// The seed's provider name.
    pub provider: String,
    /// Tollgate's provider name (the route prefix).
    pub actual_provider_name: String,
    /// The key the call was made with, as the admin API lists it (`key_…` issued through it,
    /// `static_…` from gateway.toml). Rows written before keys were named so carry the first
    /// 12 hex digits of the key's SHA-256 instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub model_used: String,
    pub endpoint: String,
    pub method: String,
    pub tokens_input: i64,
    pub tokens_output: i64,
    pub tokens_total: i64,
    /// Dollars.
    pub cost_input: f64,
    pub cost_output: f64,
    pub cost_total: f64,
    /// Seconds.
    pub response_time: f64,
    pub status_code: i64,
    /// `success` or `failed` (a refused call is `failed`).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Present when the gateway refused the call, before anything reached the provider: the
    /// refusal's code, as `tollgate.code` in the answer's body (`usage_limit_exceeded`,
    /// `provider_not_in_plan`, `model_not_priced`, `limits_unavailable`, ...). Such a call has
    /// no tokens or cost and counts in no total or limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal_reason: Option<String>,
    pub billing_period: String,
    pub retry_count: u32,
    pub is_aggregated: bool,
    /// The usage was estimated (a stream that ended without reporting it).
    pub estimated: bool,
    /// The `x-request-id` the client was answered with (none on calls from before it was kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// HEAD's envelope-less answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsPage {
    pub logs: Vec<LogOut>,
    pub total_count: u64,
    pub limit: u32,
    pub offset: u64,
    pub has_more: bool,
}

fn log_out(r: &UsageLog) -> LogOut {
    let failed = r.status_code >= 400 || r.error_message.is_some();
    LogOut {
        id: r.id,
        event_id: r.event_id.clone(),
        user_id: r.user_id.clone(),
        timestamp: iso(r.occurred_at),
        provider: r
            .provider
            .parse::<Provider>()
            .map_or_else(|_| r.provider.clone(), |p| p.seed_name().to_owned()),
        actual_provider_name: r.provider.clone(),
        key_id: r.key_id.clone(),
        model_used: r.model.clone(),
        endpoint: r.endpoint.clone(),
        method: r.method.clone(),
        tokens_input: r.input_tokens,
        tokens_output: r.output_tokens,
        tokens_total: r.total_tokens,
        cost_input: stored_dollars(r.cost_input_nanousd),
        cost_output: stored_dollars(r.cost_output_nanousd),
        cost_total: stored_dollars(r.cost_total_nanousd),
        response_time: r.latency_ms as f64 / 1000.0,
        status_code: r.status_code,
        status: if failed { "failed" } else { "success" }.to_owned(),
        error_message: r.error_message.clone(),
        refusal_reason: r.refusal_reason.clone(),
        billing_period: r.billing_period.clone(),
        retry_count: 0,
        is_aggregated: false,
        estimated: r.estimated,
        request_id: r.request_id.clone(),
    }
}

/// Usage log rows, newest first: the caller's own, or for operators anyone's.
#[utoipa::path(get, path = "/api/subscription/usage-logs", tag = "usage",
    params(LogsQuery), security(("bearer" = [])),
    responses((status = 200, body = LogsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn usage_logs(
    caller: Caller,
    State(state): State<AdminState>,
    QueryParams(q): QueryParams<LogsQuery>,
) -> Result<Json<LogsPage>> {
    let user_id = caller.subject(q.user_id.as_deref())?;
    let limit = match q.limit.unwrap_or(50) {
        l @ 1..=5000 => l,
        l => {
            return Err(AdminError::BadRequest(format!(
                "limit must be from 1 to 5000, not {l}"
            )));
        }
    };
    let offset = q.offset.unwrap_or(0);
    if let Some(period) = &q.billing_period {
        period
            .parse::<tollgate_domain::BillingPeriod>()
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
    }
    let (successes_only, errors_only) = match q.status.as_deref() {
        None => (false, false),
        Some("success") => (true, false),
        Some("failed") => (false, true),
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "status must be success or failed, not {other:?}"
            )));
        }
    };
    let filter = LogFilter {
        user_id,
        successes_only,
        errors_only,
        provider: q.provider.as_deref().map(parse_provider).transpose()?,
        status_code: q.status_code,
        billing_period: q.billing_period.clone(),
        refused: q.refused,
        key_id: q.key_id.clone(),
        ..LogFilter::default()
    };
    let page = state.ledger.usage_logs(&filter, limit, offset).await?;
    Ok(Json(LogsPage {
        has_more: offset.saturating_add(page.rows.len() as u64) < page.total,
        logs: page.rows.iter().map(log_out).collect(),
        total_count: page.total,
        limit,
        offset,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreflightOperation {
    pub provider: String,
    pub model: Option<String>,
    /// Tokens the call may use (input and output together).
    pub tokens_requested: Option<u64>,
    pub operation_type: Option<String>,
    pub actual_provider_name: Option<String>,
    /// The provider path the call will use (`/search`, `/v2/crawl`): names the endpoint a
    /// per-call provider prices.
    pub endpoint: Option<String>,
    /// The JSON body the call will send: its options bound what it can cost (Exa's
    /// `numResults`, Firecrawl's `limit`, an image request's `n`), as the gateway bounds it.
    #[schema(value_type = Option<Object>)]
    pub request: Option<serde_json::Value>,
}

/// The most an operation can cost, by the bound admission reserves
/// (`tollgate_domain::reservation_amount`) over the facts the gateway reads from its request.
/// `tokens_requested` stands for a token-billed call's whole size; without it the request's
/// body bounds the input and its output cap (else the model's) the output.
fn operation_bound(config: &Config, provider: Provider, op: &PreflightOperation) -> Result<Amount> {
    let path = op.endpoint.as_deref().unwrap_or("");
    let body = match &op.request {
        Some(request) => serde_json::to_vec(request)
            .map_err(|e| AdminError::BadRequest(format!("request: {e}")))?,
        None => Vec::new(),
    };
    let facts = RequestFacts::read(provider, path, &body)
        .map_err(|e| AdminError::BadRequest(format!("request: {e}")))?;
    // Without an endpoint, the operation's type names it (`search`), as the seed's clients
    // send it.
    let model = op.model.as_deref().or(facts.model.as_deref());
    let name = match (model, &op.endpoint, &op.operation_type) {
        (None, None, Some(kind)) => kind.to_ascii_lowercase(),
        _ => priced_name(provider, path, model),
    };
    let price = config
        .prices
        .lookup(provider, &name)
        .or_else(|| config.prices.lookup(provider, "*"));
    let shape = match (op.tokens_requested, &op.request) {
        (None, Some(_)) => CallShape {
            input_tokens: facts.input_tokens_bound,
            max_output_tokens: facts.max_output_tokens,
            fields: facts.fields.as_ref(),
        },
        (tokens, _) => CallShape {
            input_tokens: tokens.unwrap_or(0),
            max_output_tokens: Some(0),
            fields: facts.fields.as_ref(),
        },
    };
    Ok(reservation_amount(
        price.map(|p| p.price),
        provider.is_token_billed(),
        &shape,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreflightRequest {
    pub operations: Vec<PreflightOperation>,
    /// Operators: whose limits to check. Users: only their own id.
    pub user_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitInfo {
    pub current_usage: u64,
    pub limit: u64,
    pub remaining: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreflightResult {
    pub provider: String,
    pub operation_type: String,
    /// Dollars: the most the call can cost at current prices.
    pub cost: f64,
    pub allowed: bool,
    /// The provider's call limit; absent when the plan sets none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_info: Option<LimitInfo>,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreflightData {
    pub can_proceed: bool,
    pub estimated_cost: f64,
    pub total_cost: f64,
    pub operations: Vec<PreflightResult>,
    /// Calls across all providers; absent when the plan sets no such limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_summary: Option<LimitInfo>,
    pub cached: bool,
}

/// Whether a batch of calls fits the user's plan now, and what it may cost. Settled usage is
/// counted; calls in flight at the gateway are not, so a `true` is an estimate, not a promise.
#[utoipa::path(post, path = "/api/subscription/preflight-check", tag = "usage",
    request_body = PreflightRequest, security(("bearer" = [])),
    responses((status = 200, body = Envelope<PreflightData>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn preflight(
    caller: Caller,
    State(state): State<AdminState>,
    JsonBody(req): JsonBody<PreflightRequest>,
) -> Result<Json<Envelope<PreflightData>>> {
    let Some(user_id) = caller.subject(req.user_id.as_deref())? else {
        return Err(AdminError::BadRequest(
            "user_id is required with an admin token".to_owned(),
        ));
    };
    if req.operations.is_empty() {
        return Err(AdminError::BadRequest(
            "No valid operations provided".to_owned(),
        ));
    }
    let config = state.config();
    let account = account::load(&state.ledger, &config, &user_id).await?;
    let period = account.period_at(Utc::now());
    let usage = state
        .ledger
        .usage_for_period(&user_id, &period.key())
        .await?;
    let limits = account.plan.all_limits();
    let max_of = |key: LimitKey| limits.iter().find(|l| l.key == key).map(|l| l.max);
    // What the batch adds, per limit, as each operation is admitted in turn.
    let mut pending: std::collections::HashMap<LimitKey, u64> = Default::default();
    let mut results = Vec::new();
    let mut total_nanousd = 0u64;
    for op in &req.operations {
        // HEAD sends the real provider separately (`huggingface` behind `mistral`).
        let provider = match op.actual_provider_name.as_deref().map(parse_provider) {
            Some(Ok(actual)) => actual,
            _ => parse_provider(&op.provider)?,
        };
        let bound = operation_bound(&config, provider, op)?;
        let (tokens, cost) = (bound.tokens, bound.cost_nanousd);
        total_nanousd = total_nanousd.saturating_add(cost);
        let mut asks = vec![
            (LimitKey::ProviderCalls(provider), 1),
            (LimitKey::TotalCalls, 1),
            (LimitKey::Cost, cost),
        ];
        if provider.is_token_billed() {
            asks.push((LimitKey::ProviderTokens(provider), tokens));
            asks.push((LimitKey::TotalTokens, tokens));
        }
        let refusal = if !account.plan.includes(provider) {
            Some(format!(
                "{provider} is not included in plan {}",
                account.plan.id
            ))
        } else {
            asks.iter().find_map(|(key, ask)| {
                let max = max_of(*key)?;
                let have = used(&usage, *key) + pending.get(key).copied().unwrap_or(0);
                (have.saturating_add(*ask) > max).then(|| format!("{key} limit reached"))
            })
        };
        if refusal.is_none() {
            for (key, ask) in &asks {
                *pending.entry(*key).or_default() += ask;
            }
        }
        let key = LimitKey::ProviderCalls(provider);
        let limit_info = max_of(key).map(|max| {
            let current = used(&usage, key);
            LimitInfo {
                current_usage: current,
                limit: max,
                remaining: max.saturating_sub(current),
            }
        });
        results.push(PreflightResult {
            provider: provider.seed_name().to_owned(),
            operation_type: op.operation_type.clone().unwrap_or_default(),
            cost: dollars(cost),
            allowed: refusal.is_none(),
            limit_info,
            message: refusal.unwrap_or_else(|| "Operation allowed".to_owned()),
        });
    }
    let usage_summary = max_of(LimitKey::TotalCalls).map(|max| LimitInfo {
        current_usage: usage.totals.calls,
        limit: max,
        remaining: max.saturating_sub(usage.totals.calls),
    });
    Ok(Json(Envelope::ok(PreflightData {
        can_proceed: results.iter().all(|r| r.allowed),
        estimated_cost: dollars(total_nanousd),
        total_cost: dollars(total_nanousd),
        operations: results,
        usage_summary,
        cached: false,
    })))
}
