//! The reads the dashboard page needs beyond the seed's endpoints: who the presented
//! credentials are, a period's days and models, a user's own keys, and the operators' overview
//! of every user's spend in a period.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::Serialize;
use tollgate_domain::{BillingPeriod, Plan, Provider};
use tollgate_ledger::ModelSpend;
use utoipa::ToSchema;

use crate::account;
use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{PathParam, QueryParams};
use crate::model::Envelope;
use crate::ops::{self, KeyOut};
use crate::render::{dollars, percent};
use crate::routes::usage::PeriodQuery;
use crate::state::AdminState;
use crate::stats;

/// Most users the overview lists.
const OVERVIEW_USERS_MAX: u32 = 1000;
/// Most models the overview lists.
const OVERVIEW_MODELS_MAX: usize = 10;

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOut {
    /// `admin` or `user`.
    pub role: String,
    /// The user a user key belongs to; absent for an admin token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// Who the presented token or key is: what a page signs in with.
#[utoipa::path(get, path = "/api/session", tag = "system", security(("bearer" = [])),
    responses((status = 200, body = Envelope<SessionOut>), (status = 401, body = ErrorBody)))]
pub async fn session(caller: Caller) -> Json<Envelope<SessionOut>> {
    Json(Envelope::ok(match caller {
        Caller::Admin => SessionOut {
            role: "admin".to_owned(),
            user_id: None,
        },
        Caller::User(user) => SessionOut {
            role: "user".to_owned(),
            user_id: Some(user),
        },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayOut {
    /// `YYYY-MM-DD`, a UTC day.
    pub day: String,
    pub calls: u64,
    pub tokens: u64,
    /// Dollars.
    pub cost: f64,
    pub error_calls: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DailyUsage {
    pub billing_period: String,
    pub period_start: String,
    pub period_end: String,
    /// Every day of the period, in order, at zero where nothing was called.
    pub days: Vec<DayOut>,
}

async fn period_of(
    state: &AdminState,
    user_id: &str,
    requested: Option<&str>,
) -> Result<BillingPeriod> {
    let config = state.config();
    let account = account::load(&state.ledger, &config, user_id).await?;
    match requested {
        None => Ok(account.period_at(Utc::now())),
        Some(key) => BillingPeriod::from_key(key, account.anchor)
            .map_err(|e| AdminError::BadRequest(e.to_string())),
    }
}

/// The user's calls, tokens and cost per day of a billing period.
#[utoipa::path(get, path = "/api/subscription/usage/{user_id}/daily", tag = "usage",
    params(("user_id" = String, Path), PeriodQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<DailyUsage>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn daily(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<PeriodQuery>,
) -> Result<Json<Envelope<DailyUsage>>> {
    caller.require_user(&user_id)?;
    let period = period_of(&state, &user_id, q.billing_period.as_deref()).await?;
    let days = state.ledger.daily_series(&user_id, period).await?;
    Ok(Json(Envelope::ok(DailyUsage {
        billing_period: period.key(),
        period_start: crate::render::iso(period.start()),
        period_end: crate::render::iso(period.end()),
        days: days
            .into_iter()
            .map(|d| DayOut {
                day: d.day.to_string(),
                calls: d.calls,
                tokens: d.tokens,
                cost: dollars(d.cost_nanousd),
                error_calls: d.error_calls,
            })
            .collect(),
    })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelOut {
    /// Tollgate's provider name (`exa`).
    pub provider: String,
    /// The provider's name for people (`Exa`).
    pub provider_name: String,
    pub model: String,
    pub calls: u64,
    pub tokens: u64,
    /// Dollars.
    pub cost: f64,
    pub error_calls: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsData {
    pub billing_period: String,
    /// Costliest first.
    pub models: Vec<ModelOut>,
}

fn model_out(m: &ModelSpend) -> ModelOut {
    ModelOut {
        provider: m.provider.as_str().to_owned(),
        provider_name: m.provider.display_name().to_owned(),
        model: m.model.clone(),
        calls: m.calls,
        tokens: m.tokens,
        cost: dollars(m.cost_nanousd),
        error_calls: m.error_calls,
    }
}

/// The user's usage per model in a billing period, costliest first.
#[utoipa::path(get, path = "/api/subscription/usage/{user_id}/models", tag = "usage",
    params(("user_id" = String, Path), PeriodQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<ModelsData>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn models(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<PeriodQuery>,
) -> Result<Json<Envelope<ModelsData>>> {
    caller.require_user(&user_id)?;
    let period = period_of(&state, &user_id, q.billing_period.as_deref()).await?;
    let models = state
        .ledger
        .model_spend(Some(&user_id), &period.key())
        .await?;
    Ok(Json(Envelope::ok(ModelsData {
        billing_period: period.key(),
        models: models.iter().map(model_out).collect(),
    })))
}

/// The user's own keys (never the keys themselves): what operators see at
/// `/api/admin/users/{user_id}/keys`, readable with one of those keys.
#[utoipa::path(get, path = "/api/subscription/keys/{user_id}", tag = "usage",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<Vec<KeyOut>>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn own_keys(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<Envelope<Vec<KeyOut>>>> {
    caller.require_user(&user_id)?;
    let config = state.config();
    if !account::exists(&state.ledger, &config, &user_id).await? {
        return Err(AdminError::not_found_user(&user_id));
    }
    Ok(Json(Envelope::ok(
        ops::list_keys(&state.ledger, &config, &user_id).await?,
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserSpend {
    pub user_id: String,
    pub plan_id: String,
    pub plan_name: String,
    /// `active`, `warning` or `limit_reached`, as in UsageStats; `disabled` for a disabled user.
    pub usage_status: String,
    pub calls: u64,
    pub tokens: u64,
    /// Dollars.
    pub cost: f64,
    /// Dollars; 0 = no cap.
    pub cost_cap: f64,
    /// Of the cost cap; 0 without one.
    pub cost_percentage: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderSpend {
    pub provider: String,
    pub provider_name: String,
    pub calls: u64,
    pub tokens: u64,
    /// Dollars.
    pub cost: f64,
    pub error_calls: u64,
    /// Calls through this provider's route the gateway refused in the period (counted in
    /// none of the above).
    pub refused_calls: u64,
    /// `refused_calls` by refusal code (`usage_limit_exceeded`, ...); empty when none.
    pub refused_by_reason: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub billing_period: String,
    /// Costliest first; users without usage last.
    pub users: Vec<UserSpend>,
    /// All nine providers.
    pub providers: Vec<ProviderSpend>,
    /// The ten costliest models, everyone's calls together.
    pub top_models: Vec<ModelOut>,
    /// Every call the gateway refused in the period, from the ledger (so every instance
    /// answers the same).
    pub refused_calls: u64,
    /// `refused_calls` by refusal code; empty when none.
    pub refused_by_reason: BTreeMap<String, u64>,
}

fn user_spend(user_id: String, plan: &Plan, usage: &tollgate_ledger::PeriodUsage) -> UserSpend {
    let cap = plan.cost_cap_nanousd.unwrap_or(0);
    UserSpend {
        user_id,
        plan_id: plan.id.clone(),
        plan_name: plan.name.clone(),
        usage_status: stats::usage_status(plan, usage).to_owned(),
        calls: usage.totals.calls,
        tokens: usage.totals.tokens,
        cost: dollars(usage.totals.cost_nanousd),
        cost_cap: dollars(cap),
        cost_percentage: percent(usage.totals.cost_nanousd, cap),
    }
}

/// Operators: every user's spend in a period (by the period's key; default the current
/// calendar month), with plan, status and share of the cost cap; traffic and refused calls per
/// provider; the costliest models.
#[utoipa::path(get, path = "/api/admin/overview", tag = "admin", params(PeriodQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Envelope<Overview>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn overview(
    caller: Caller,
    State(state): State<AdminState>,
    QueryParams(q): QueryParams<PeriodQuery>,
) -> Result<Json<Envelope<Overview>>> {
    caller.require_admin()?;
    let key = match q.billing_period.as_deref() {
        Some(key) => key
            .parse::<BillingPeriod>()
            .map_err(|e| AdminError::BadRequest(e.to_string()))?
            .key(),
        None => tollgate_ledger::UsageEvent::calendar_period(Utc::now()),
    };
    let config = state.config();
    let ledger = &state.ledger;
    let mut usages = ledger.current_period_totals(&key).await?;
    let mut ids: Vec<String> = usages.iter().map(|u| u.user_id.clone()).collect();
    for user in ledger.users(OVERVIEW_USERS_MAX, 0).await? {
        if !ids.contains(&user.id) {
            ids.push(user.id.clone());
            usages.push(tollgate_ledger::PeriodUsage::empty(&user.id, &key));
        }
    }
    let mut users = Vec::with_capacity(usages.len());
    let mut providers: Vec<ProviderSpend> = Provider::ALL
        .iter()
        .map(|p| ProviderSpend {
            provider: p.as_str().to_owned(),
            provider_name: p.display_name().to_owned(),
            calls: 0,
            tokens: 0,
            cost: 0.0,
            error_calls: 0,
            refused_calls: 0,
            refused_by_reason: BTreeMap::new(),
        })
        .collect();
    let mut provider_nanousd = vec![0u64; Provider::ALL.len()];
    for usage in &usages {
        for (i, p) in Provider::ALL.iter().enumerate() {
            if let Some(u) = usage.per_provider.get(p) {
                providers[i].calls += u.calls;
                providers[i].tokens += u.tokens;
                providers[i].error_calls += u.error_calls;
                provider_nanousd[i] = provider_nanousd[i].saturating_add(u.cost_nanousd);
            }
        }
        let Ok(account) = account::load(ledger, &config, &usage.user_id).await else {
            continue;
        };
        let mut spend = user_spend(usage.user_id.clone(), &account.plan, usage);
        if account.is_disabled() {
            spend.usage_status = "disabled".to_owned();
        }
        users.push((usage.totals.cost_nanousd, spend));
    }
    for (p, nanousd) in providers.iter_mut().zip(provider_nanousd) {
        p.cost = dollars(nanousd);
    }
    let mut refused_by_reason = BTreeMap::new();
    for refusal in ledger.refusals(&key).await? {
        if let Some(i) = Provider::ALL.iter().position(|p| *p == refusal.provider) {
            providers[i].refused_calls += refusal.calls;
            *providers[i]
                .refused_by_reason
                .entry(refusal.reason.clone())
                .or_insert(0) += refusal.calls;
        }
        *refused_by_reason.entry(refusal.reason).or_insert(0) += refusal.calls;
    }
    users.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.user_id.cmp(&b.1.user_id)));
    let models = ledger.model_spend(None, &key).await?;
    Ok(Json(Envelope::ok(Overview {
        billing_period: key,
        users: users.into_iter().map(|(_, u)| u).collect(),
        providers,
        top_models: models
            .iter()
            .take(OVERVIEW_MODELS_MAX)
            .map(model_out)
            .collect(),
        refused_calls: refused_by_reason.values().sum(),
        refused_by_reason,
    })))
}
