//! Plans, prices and a user's subscription: `/plans`, `/pricing`, `/user/{id}/subscription`,
//! `/status/{id}` and `/subscribe/{id}`.

use axum::Json;
use axum::extract::State;
use chrono::{NaiveTime, Utc};
use serde::Deserialize;
use tollgate_domain::{CallShape, Plan, Provider, RequestFields, UnitKind, reservation_amount};
use utoipa::IntoParams;

use crate::account;
use crate::auth::Caller;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{JsonBody, PathParam, QueryParams};
use crate::limits::flat_limits;
use crate::model::{
    Envelope, PlanBrief, PlanOut, PlansData, PriceOut, PricingData, StatusOut, SubscribeData,
    SubscribeRequest, SubscribeResponse, SubscriptionOut, UserSubscription,
};
use crate::ops;
use crate::render::{dollars, dollars_per_unit, iso};
use crate::state::AdminState;
use crate::stats;

fn plan_out(plan: &Plan) -> PlanOut {
    PlanOut {
        id: plan.id.clone(),
        name: plan.name.clone(),
        tier: plan.tier.as_str().to_owned(),
        price_monthly: dollars(plan.price_monthly_nanousd),
        price_yearly: dollars(plan.price_yearly_nanousd),
        description: plan.description.clone(),
        features: plan.features.clone(),
        limits: flat_limits(plan),
        is_free: plan.price_monthly_nanousd == 0,
        is_active: true,
    }
}

fn plan_brief(plan: &Plan) -> PlanBrief {
    PlanBrief {
        id: plan.id.clone(),
        name: plan.name.clone(),
        tier: plan.tier.as_str().to_owned(),
        price_monthly: dollars(plan.price_monthly_nanousd),
        price_yearly: dollars(plan.price_yearly_nanousd),
        description: plan.description.clone(),
        is_free: plan.price_monthly_nanousd == 0,
    }
}

/// The plans of gateway.toml, cheapest first.
#[utoipa::path(get, path = "/api/subscription/plans", tag = "subscription",
    security(("bearer" = [])),
    responses((status = 200, body = Envelope<PlansData>), (status = 401, body = ErrorBody)))]
pub async fn plans(_caller: Caller, State(state): State<AdminState>) -> Json<Envelope<PlansData>> {
    let config = state.config();
    let plans: Vec<PlanOut> = ops::plans_in_order(&config)
        .into_iter()
        .map(plan_out)
        .collect();
    Json(Envelope::ok(PlansData {
        total: plans.len(),
        plans,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PricingQuery {
    /// A provider name (seed names such as `metaphor` are accepted).
    pub provider: Option<String>,
}

/// Parses a provider name of the API, with HEAD's `huggingface` for Mistral; 400 if unknown.
pub fn parse_provider(name: &str) -> Result<Provider> {
    if name.eq_ignore_ascii_case("huggingface") {
        return Ok(Provider::Mistral);
    }
    name.parse::<Provider>()
        .map_err(|e| AdminError::BadRequest(format!("Invalid provider: {}", e.0)))
}

/// Current prices from `pricing/`, per single unit in USD as the seed reports them.
#[utoipa::path(get, path = "/api/subscription/pricing", tag = "subscription",
    params(PricingQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<PricingData>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn pricing(
    _caller: Caller,
    State(state): State<AdminState>,
    QueryParams(q): QueryParams<PricingQuery>,
) -> Result<Json<Envelope<PricingData>>> {
    let only = q.provider.as_deref().map(parse_provider).transpose()?;
    let config = state.config();
    let mut pricing = Vec::new();
    // A request with no options: each bound at the provider's defaults.
    let no_options = RequestFields::default();
    let defaults = CallShape {
        fields: Some(&no_options),
        ..CallShape::default()
    };
    for (provider, prices) in &config.prices.providers {
        if only.is_some_and(|p| p != *provider) {
            continue;
        }
        // A provider priced by one rate for every endpoint (Tavily, Serper, ...) has only the
        // `"*"` entry; it is listed under that name so that every provider has its rows.
        let fallback = prices.fallback.as_ref().map(|p| ("*", p));
        let models = prices.models.iter().map(|(m, p)| (m.as_str(), p));
        for (model, price) in models.chain(fallback) {
            let (input, output) = price.tokens.map_or((0, 0), |t| {
                (t.input.femtousd_per_unit(), t.output.femtousd_per_unit())
            });
            let unit = |kind: UnitKind| {
                price
                    .per_unit
                    .filter(|u| u.unit == kind)
                    .map_or(0.0, |u| dollars_per_unit(u.rate.femtousd_per_unit()))
            };
            pricing.push(PriceOut {
                provider: provider.seed_name().to_owned(),
                model_name: model.to_owned(),
                cost_per_input_token: dollars_per_unit(input),
                cost_per_output_token: dollars_per_unit(output),
                cost_per_request: price
                    .per_request
                    .map_or(0.0, |r| dollars_per_unit(r.femtousd_per_unit())),
                cost_per_search: unit(UnitKind::Search),
                cost_per_image: unit(UnitKind::Image),
                cost_per_page: unit(UnitKind::Page),
                cost_per_credit: unit(UnitKind::Credit),
                input_per_million: price
                    .tokens
                    .map_or_else(String::new, |t| t.input.per_million_text()),
                output_per_million: price
                    .tokens
                    .map_or_else(String::new, |t| t.output.per_million_text()),
                description: format!("{} {model}", provider.as_str()),
                effective_date: iso(price.effective.and_time(NaiveTime::MIN).and_utc()),
                source: price.source.clone(),
                max_cost_per_call: crate::render::dollars(
                    reservation_amount(Some(price), provider.is_token_billed(), &defaults)
                        .cost_nanousd,
                ),
                max_cost_reason: price.max_per_call.as_ref().map(|m| m.why.clone()),
            });
        }
    }
    Ok(Json(Envelope::ok(PricingData {
        total: pricing.len(),
        pricing,
    })))
}

/// The user's subscription, plan and limits (the default plan when they have none).
#[utoipa::path(get, path = "/api/subscription/user/{user_id}/subscription", tag = "subscription",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserSubscription>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn user_subscription(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<Envelope<UserSubscription>>> {
    caller.require_user(&user_id)?;
    let config = state.config();
    let account = account::load(&state.ledger, &config, &user_id).await?;
    let period = account.period_at(Utc::now());
    let subscription = account.subscription.as_ref().map(|s| SubscriptionOut {
        id: s.user_id.clone(),
        plan_id: s.plan_id.clone(),
        billing_cycle: s.billing_cycle.clone(),
        anchor_day: s.anchor_day,
        current_period_start: iso(period.start()),
        current_period_end: iso(period.end()),
        status: s.status.clone(),
        auto_renew: s.auto_renew,
        created_at: iso(s.created_at),
    });
    let status = match &account.subscription {
        Some(s) if !account.on_fallback_plan => s.status.clone(),
        _ => "free".to_owned(),
    };
    Ok(Json(Envelope::ok(UserSubscription {
        subscription,
        plan: plan_brief(&account.plan),
        status,
        limits: flat_limits(&account.plan),
    })))
}

/// Whether the user may use the API now, and on which plan.
#[utoipa::path(get, path = "/api/subscription/status/{user_id}", tag = "subscription",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<StatusOut>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn status(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<Envelope<StatusOut>>> {
    caller.require_user(&user_id)?;
    let config = state.config();
    let account = account::load(&state.ledger, &config, &user_id).await?;
    let reason = if account.is_disabled() {
        Some("User disabled".to_owned())
    } else {
        match &account.subscription {
            Some(s) if s.status != "active" => Some(format!("Subscription {}", s.status)),
            _ => None,
        }
    };
    let active = reason.is_none();
    // What admission would do for a small call now, not only whether the account is active.
    let period = account.period_at(Utc::now());
    let usage = state
        .ledger
        .usage_for_period(&user_id, &period.key())
        .await?;
    let callable = |p| config.providers.get(&p).is_some_and(|s| s.key.is_some());
    let can_use_api = active && stats::admits_a_small_call(&account.plan, &usage, callable);
    Ok(Json(Envelope::ok(StatusOut {
        active,
        plan: account.plan.id.clone(),
        tier: account.plan.tier.as_str().to_owned(),
        can_use_api,
        limits: flat_limits(&account.plan),
        reason,
    })))
}

/// Subscribes a user to a plan (operators only: a user cannot choose their own plan here).
#[utoipa::path(post, path = "/api/subscription/subscribe/{user_id}", tag = "subscription",
    params(("user_id" = String, Path)), request_body = SubscribeRequest,
    security(("bearer" = [])),
    responses((status = 200, body = SubscribeResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn subscribe(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    JsonBody(req): JsonBody<SubscribeRequest>,
) -> Result<Json<SubscribeResponse>> {
    caller.require_user(&user_id)?;
    caller.require_admin()?;
    let Some(plan_ref) = &req.plan_id else {
        return Err(AdminError::BadRequest("plan_id is required".to_owned()));
    };
    let config = state.config();
    let (sub, plan) = ops::set_plan(
        &state.ledger,
        &config,
        &user_id,
        plan_ref,
        req.billing_cycle.as_deref(),
        req.anchor_day,
    )
    .await?;
    let account = account::load(&state.ledger, &config, &user_id).await?;
    let period = account.period_at(Utc::now());
    Ok(Json(SubscribeResponse {
        success: true,
        message: format!("Successfully subscribed to {}", plan.name),
        data: SubscribeData {
            subscription_id: sub.user_id.clone(),
            plan_id: plan.id.clone(),
            plan_name: plan.name.clone(),
            billing_cycle: sub.billing_cycle.clone(),
            anchor_day: sub.anchor_day,
            current_period_start: iso(period.start()),
            current_period_end: iso(period.end()),
            status: sub.status.clone(),
            limits: flat_limits(&plan),
        },
    }))
}
