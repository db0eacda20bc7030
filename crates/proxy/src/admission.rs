//! Admission as a pure decision: a request's facts, the caller's plan and the prices give the
//! reservation to ask the counters for (or a refusal); the counters' answer gives the call's
//! reservation (or a refusal). The I/O between the two steps is `admit`'s.
//!
//! The amount reserved is an upper bound on the call's calls, tokens and cost, so that however
//! many calls run at once, settling them can never take a limit past its value.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tollgate_config::Config;
use tollgate_counters::{CounterError, Reservation, Reserved};
use tollgate_domain::{
    Amount, BillingPeriod, Limit, ModelPrice, Provider, UnreachablePolicy, upper_bound_cost,
};
use tollgate_usage::{RequestFacts, priced_name};

use crate::errors::GatewayError;
use crate::keys::Identity;
use crate::pricing;

/// What to ask the counters to reserve for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservePlan {
    /// The name the call is priced under (`tollgate_usage::priced_name`).
    pub model: String,
    pub period: BillingPeriod,
    /// The plan's limits that apply to the call, for the reservation and its alerts.
    pub limits: Vec<Limit>,
    pub amount: Amount,
    pub expires_at: DateTime<Utc>,
    /// What to do when the counter store cannot be reached.
    pub policy: UnreachablePolicy,
}

/// The reservation a call to `provider` at `path` must make, or why it is refused before any
/// counter is asked: a provider outside the plan, a token-billed model without a price.
pub fn plan_reservation(
    config: &Config,
    identity: &Identity,
    provider: Provider,
    path: &str,
    facts: &RequestFacts,
    now: DateTime<Utc>,
) -> Result<ReservePlan, GatewayError> {
    let plan = config
        .plans
        .get(&identity.plan)
        .ok_or(GatewayError::Internal)?;
    let limits = plan
        .limits_for(provider)
        .map_err(|_| GatewayError::NotInPlan {
            provider,
            plan: plan.id.clone(),
        })?;
    let model = priced_name(provider, path, facts.model.as_deref());
    let price = pricing::for_admission(config, provider, &model)?;
    let amount = reservation_amount(facts, price.price(), provider.is_token_billed());
    // A reservation outlives any call that can still settle it.
    let lifetime_ms = config.proxy.upstream_read_timeout_ms.saturating_mul(2);
    Ok(ReservePlan {
        model,
        period: BillingPeriod::containing(now, identity.anchor_day),
        limits,
        amount,
        expires_at: now
            + ChronoDuration::milliseconds(i64::try_from(lifetime_ms).unwrap_or(i64::MAX / 2)),
        policy: plan
            .on_counter_store_unreachable
            .unwrap_or(config.storage.on_counter_store_unreachable),
    })
}

/// The counters' answer as the call's reservation, or its refusal.
pub fn outcome(answer: Result<Reserved, CounterError>) -> Result<Reservation, GatewayError> {
    match answer {
        Ok(Reserved::Admitted(reservation)) => Ok(reservation),
        Ok(Reserved::Denied(denial)) => Err(GatewayError::LimitExceeded(denial)),
        Err(_) => Err(GatewayError::CounterStoreUnavailable),
    }
}

/// Output bound for a request that sets no maximum, to a model whose price gives none either.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 32_768;

/// One call; input ≤ the request body in tokens; output ≤ the request's own cap, else the
/// model's maximum output, else [`DEFAULT_MAX_OUTPUT_TOKENS`]; cost at the highest rates those
/// tokens could be billed at. `token_billed` is false for per-call providers, whose calls carry
/// no token bound.
pub fn reservation_amount(
    facts: &RequestFacts,
    price: Option<&ModelPrice>,
    token_billed: bool,
) -> Amount {
    if !token_billed {
        return Amount {
            calls: 1,
            tokens: 0,
            cost_nanousd: price.map_or(0, |p| upper_bound_cost(p, 0, 0, 1)),
        };
    }
    let output = facts
        .max_output_tokens
        .or_else(|| price.and_then(|p| p.max_output_tokens))
        .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
    let input = facts.input_tokens_bound;
    Amount {
        calls: 1,
        tokens: input.saturating_add(output),
        cost_nanousd: price.map_or(0, |p| upper_bound_cost(p, input, output, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use tollgate_domain::{Rate, TokenRates};

    fn price(max_output: Option<u64>) -> ModelPrice {
        ModelPrice {
            tokens: Some(TokenRates {
                input: Rate::per_million_from_decimal("2.50").unwrap(),
                output: Rate::per_million_from_decimal("10.00").unwrap(),
                ..TokenRates::default()
            }),
            tiers: vec![],
            per_request: None,
            per_unit: None,
            reported_cost: false,
            max_output_tokens: max_output,
            context_window: None,
            source: "test".into(),
            effective: NaiveDate::default(),
        }
    }

    #[test]
    fn output_bound_falls_back_from_request_to_model_to_default() {
        let mut facts = RequestFacts {
            input_tokens_bound: 1_000,
            max_output_tokens: Some(100),
            ..RequestFacts::default()
        };
        let a = reservation_amount(&facts, Some(&price(Some(16_384))), true);
        // 1,000 × 2.50/M + 100 × 10.00/M = 2,500,000 + 1,000,000 nano-USD.
        assert_eq!(
            a,
            Amount {
                calls: 1,
                tokens: 1_100,
                cost_nanousd: 3_500_000
            }
        );
        facts.max_output_tokens = None;
        assert_eq!(
            reservation_amount(&facts, Some(&price(Some(16_384))), true).tokens,
            17_384
        );
        assert_eq!(
            reservation_amount(&facts, Some(&price(None)), true).tokens,
            1_000 + DEFAULT_MAX_OUTPUT_TOKENS
        );
    }

    #[test]
    fn per_call_providers_reserve_one_call() {
        let facts = RequestFacts::default();
        let a = reservation_amount(&facts, None, false);
        assert_eq!(
            a,
            Amount {
                calls: 1,
                tokens: 0,
                cost_nanousd: 0
            }
        );
    }

    fn shipped() -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml");
        let env = |name: &str| name.ends_with("_API_KEY").then(|| "sk-test".to_owned());
        tollgate_config::load_with_env(&path, &env).unwrap().config
    }

    fn caller(plan: &str) -> Identity {
        Identity {
            user: "alice".into(),
            plan: plan.into(),
            key_id: "k".into(),
            anchor_day: tollgate_domain::AnchorDay::new(15).unwrap(),
        }
    }

    #[test]
    fn a_call_is_planned_under_its_plan_and_price_or_refused_before_the_counters() {
        let config = shipped();
        let now = "2026-12-06T10:00:00Z".parse().unwrap();
        let facts = |body: &str| {
            tollgate_usage::RequestFacts::read(Provider::Gemini, GEMINI, body.as_bytes()).unwrap()
        };
        const GEMINI: &str = "/v1beta/models/gemini-2.5-pro:generateContent";
        let body = r#"{"contents":[],"generationConfig":{"maxOutputTokens":100}}"#;
        let plan = plan_reservation(
            &config,
            &caller("free"),
            Provider::Gemini,
            GEMINI,
            &facts(body),
            now,
        )
        .unwrap();
        assert_eq!(plan.model, "gemini-2.5-pro");
        assert_eq!(plan.amount.tokens, body.len() as u64 + 100);
        assert!(plan.amount.cost_nanousd > 0);
        let anchor = tollgate_domain::AnchorDay::new(15).unwrap();
        assert_eq!(plan.period, BillingPeriod::containing(now, anchor));
        assert!(
            plan.limits
                .iter()
                .any(|l| l.key.to_string().contains("gemini"))
        );

        // The free plan has no OpenAI calls: refused, whatever the counters say.
        let chat = "/v1/chat/completions";
        let openai =
            tollgate_usage::RequestFacts::read(Provider::OpenAi, chat, br#"{"model":"gpt-4o"}"#)
                .unwrap();
        let refused = plan_reservation(
            &config,
            &caller("free"),
            Provider::OpenAi,
            chat,
            &openai,
            now,
        );
        assert!(matches!(refused, Err(GatewayError::NotInPlan { .. })));
        // A token-billed model without a price cannot be bounded: refused under "reject".
        let unknown =
            tollgate_usage::RequestFacts::read(Provider::OpenAi, chat, br#"{"model":"gpt-99"}"#)
                .unwrap();
        let refused = plan_reservation(
            &config,
            &caller("pro"),
            Provider::OpenAi,
            chat,
            &unknown,
            now,
        );
        assert!(matches!(refused, Err(GatewayError::UnpricedModel { .. })));
        // An unknown plan is the gateway's fault, not the caller's.
        let refused = plan_reservation(
            &config,
            &caller("gold"),
            Provider::OpenAi,
            chat,
            &openai,
            now,
        );
        assert!(matches!(refused, Err(GatewayError::Internal)));
    }

    #[test]
    fn the_counters_answer_decides_the_outcome() {
        let unreachable = CounterError::Unreachable("connection refused".into());
        assert!(matches!(
            outcome(Err(unreachable)),
            Err(GatewayError::CounterStoreUnavailable)
        ));
    }
}
