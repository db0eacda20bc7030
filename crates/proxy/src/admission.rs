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
    Amount, BillingPeriod, CallShape, Cost, Denial, Limit, Measure, ModelPrice, Provider,
    ShortBudget, UnreachablePolicy, Usage, upper_bound, upper_bound_cost,
};
use tollgate_usage::{RequestFacts, priced_name};

use crate::errors::GatewayError;
use crate::keys::Identity;
use crate::pricing;
use crate::request::output_cap_field;

/// What to ask the counters to reserve for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservePlan<'a> {
    /// The name the call is priced under (`tollgate_usage::priced_name`).
    pub model: String,
    pub period: BillingPeriod,
    /// The plan's limits that apply to the call, for the reservation and its alerts.
    pub limits: Vec<Limit>,
    pub amount: Amount,
    pub expires_at: DateTime<Utc>,
    /// What to do when the counter store cannot be reached.
    pub policy: UnreachablePolicy,
    /// The price the amount was bounded at.
    pub price: Option<&'a ModelPrice>,
    /// When the bound does not fit a token budget or cost cap: the least output a smaller cap
    /// may leave (`None`: refuse instead — the plan says so, or the request has no output cap
    /// the gateway can set).
    pub clamp_floor: Option<u64>,
}

/// The reservation a call to `provider` at `path` must make, or why it is refused before any
/// counter is asked: a provider outside the plan, a token-billed model without a price.
pub fn plan_reservation<'a>(
    config: &'a Config,
    identity: &Identity,
    provider: Provider,
    path: &str,
    facts: &RequestFacts,
    now: DateTime<Utc>,
) -> Result<ReservePlan<'a>, GatewayError> {
    let plan = config
        .plans
        .get(&identity.plan)
        .ok_or(GatewayError::Internal)?;
    let mut limits = plan
        .limits_for(provider)
        .map_err(|_| GatewayError::NotInPlan {
            provider,
            plan: plan.id.clone(),
        })?;
    // The key's own limits apply with the plan's: the period's first (the plan's, then the
    // key's), then the per-minute ones, so a refusal names a limit a retry cannot lift first.
    limits.extend(identity.rules.limits.limits());
    limits.sort_by_key(|l| l.key.is_per_minute());
    let model = priced_name(provider, path, facts.model.as_deref());
    if let Err(allowed) = identity.rules.check_model(provider, &model) {
        return Err(GatewayError::ModelNotAllowed {
            provider,
            allowed: allowed.iter().map(|p| p.as_str().to_owned()).collect(),
            model,
        });
    }
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
        price: price.price(),
        clamp_floor: (plan.on_short_budget == ShortBudget::Clamp
            && output_cap_field(provider, path).is_some())
        .then_some(plan.min_output_tokens),
    })
}

/// When `denial` refused a call for a token budget or the cost cap, the largest output cap that
/// fits what is left of it, and the amount to reserve with it: `None` when the plan does not
/// clamp, the limit counts calls, or less than the plan's minimum output fits.
pub fn clamp(
    plan: &ReservePlan<'_>,
    facts: &RequestFacts,
    denial: &Denial,
) -> Option<(u64, Amount)> {
    // A per-minute window is waited for, not squeezed into: the call is refused with the
    // seconds to its reset, and retried whole.
    if denial.limit.key.is_per_minute() {
        return None;
    }
    let floor = plan.clamp_floor?;
    let input = facts.input_tokens_bound;
    let current = plan.amount.tokens.saturating_sub(input);
    let left = denial.remaining();
    let fits = match denial.limit.key.measure() {
        Measure::Calls => return None,
        Measure::Tokens => left.checked_sub(input)?,
        Measure::CostNanousd => {
            let price = plan.price?;
            let cost = |output| upper_bound_cost(price, input, output, 0);
            if cost(0) > left {
                return None;
            }
            // The cost is monotonic in the output: the largest output that still fits.
            let (mut low, mut high) = (0, current);
            while low < high {
                let mid = low + (high - low).div_ceil(2);
                if cost(mid) <= left {
                    low = mid
                } else {
                    high = mid - 1
                }
            }
            low
        }
    };
    let output = fits.min(current.saturating_sub(1));
    if output < floor {
        return None;
    }
    let capped = RequestFacts {
        max_output_tokens: Some(output),
        ..facts.clone()
    };
    Some((output, reservation_amount(&capped, plan.price, true)))
}

/// The counters' answer as the call's reservation, or its refusal.
pub fn outcome(answer: Result<Reserved, CounterError>) -> Result<Reservation, GatewayError> {
    match answer {
        Ok(Reserved::Admitted(reservation)) => Ok(reservation),
        Ok(Reserved::Denied(denial)) => Err(GatewayError::LimitExceeded(denial)),
        Err(_) => Err(GatewayError::CounterStoreUnavailable),
    }
}

pub use tollgate_domain::DEFAULT_MAX_OUTPUT_TOKENS;

/// What a request's facts say about its size, for the one bound (`tollgate_domain::bound`).
pub fn shape(facts: &RequestFacts) -> CallShape<'_> {
    CallShape {
        input_tokens: facts.input_tokens_bound,
        max_output_tokens: facts.max_output_tokens,
        fields: facts.fields.as_ref(),
    }
}

/// The amount a call reserves: `tollgate_domain::reservation_amount` of its facts — one call;
/// a token-billed call's input bound and output cap at the highest rates; a per-call
/// provider's cost by its price entry's rule over the request's options.
pub fn reservation_amount(
    facts: &RequestFacts,
    price: Option<&ModelPrice>,
    token_billed: bool,
) -> Amount {
    tollgate_domain::reservation_amount(price, token_billed, &shape(facts))
}

/// The amount a call's reservation held, `reserved`, as the usage and cost of its usage event:
/// what a call whose reported usage cannot be billed as reported is billed instead
/// (`plausible`). Its tokens are input up to the request's input bound and output for the rest
/// (a per-call provider's call is one unit), priced at the highest rates as admission priced
/// them, so that for an amount [`reservation_amount`] or [`clamp`] made at `price` the cost is
/// the cost reserved.
pub fn reservation_bound(
    facts: &RequestFacts,
    reserved: Amount,
    price: Option<&ModelPrice>,
    token_billed: bool,
) -> (Usage, Cost) {
    let usage = if token_billed {
        let input = facts.input_tokens_bound.min(reserved.tokens);
        Usage {
            input_tokens: input,
            output_tokens: reserved.tokens - input,
            ..Usage::default()
        }
    } else {
        Usage {
            units: 1,
            ..Usage::default()
        }
    };
    let cost = match price {
        None => Cost::default(),
        Some(p) if token_billed => {
            upper_bound(p, usage.input_tokens, usage.output_tokens, usage.units)
        }
        // A per-call provider's bound comes from its request's options, not its units.
        Some(_) => Cost {
            other_nanousd: reserved.cost_nanousd,
            total_nanousd: reserved.cost_nanousd,
            ..Cost::default()
        },
    };
    (usage, cost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use tollgate_domain::{LimitKey, Rate, TokenRates};

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
            bound: None,
            max_per_call: None,
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
    fn the_bound_billed_instead_of_a_report_is_what_was_reserved() {
        let price = price(Some(16_384));
        let facts = RequestFacts {
            input_tokens_bound: 1_000,
            max_output_tokens: Some(100),
            ..RequestFacts::default()
        };
        let reserved = reservation_amount(&facts, Some(&price), true);
        let (usage, cost) = reservation_bound(&facts, reserved, Some(&price), true);
        assert_eq!((usage.input_tokens, usage.output_tokens), (1_000, 100));
        assert_eq!(cost.total_nanousd, reserved.cost_nanousd);
        // The output cap lowered to fit a budget: the lower amount.
        let capped = RequestFacts {
            max_output_tokens: Some(40),
            ..facts.clone()
        };
        let clamped = reservation_amount(&capped, Some(&price), true);
        let (usage, cost) = reservation_bound(&capped, clamped, Some(&price), true);
        assert_eq!(usage.total_tokens(), 1_040);
        assert_eq!(cost.total_nanousd, clamped.cost_nanousd);
        // A per-call provider's call is one unit.
        let one = reservation_amount(&RequestFacts::default(), None, false);
        let (usage, cost) = reservation_bound(&RequestFacts::default(), one, None, false);
        assert_eq!(
            (usage.units, usage.total_tokens(), cost.total_nanousd),
            (1, 0, 0)
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
            disabled: false,
            rules: Default::default(),
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

        // A key's model patterns: the name the call is priced under, path or body.
        let mut narrow = caller("pro");
        narrow.rules.models = [
            (Provider::Gemini, vec![pattern("gemini-2.5-flash*")]),
            (Provider::OpenAi, vec![pattern("gpt-4o*")]),
        ]
        .into();
        let refused = plan_reservation(
            &config,
            &narrow,
            Provider::Gemini,
            GEMINI,
            &facts(body),
            now,
        );
        assert_eq!(
            refused,
            Err(GatewayError::ModelNotAllowed {
                provider: Provider::Gemini,
                model: "gemini-2.5-pro".into(),
                allowed: vec!["gemini-2.5-flash*".into()],
            })
        );
        assert!(plan_reservation(&config, &narrow, Provider::OpenAi, chat, &openai, now).is_ok());
        // Checked before the price: a model the key may not call is refused as such.
        let refused = plan_reservation(&config, &narrow, Provider::OpenAi, chat, &unknown, now);
        assert!(matches!(refused, Err(GatewayError::ModelNotAllowed { .. })));
    }

    fn pattern(text: &str) -> tollgate_domain::ModelPattern {
        tollgate_domain::ModelPattern::parse(text).unwrap()
    }

    #[test]
    fn the_counters_answer_decides_the_outcome() {
        let unreachable = CounterError::Unreachable("connection refused".into());
        assert!(matches!(
            outcome(Err(unreachable)),
            Err(GatewayError::CounterStoreUnavailable)
        ));
    }

    #[test]
    fn a_call_that_does_not_fit_a_budget_is_clamped_to_what_is_left() {
        let config = shipped();
        let now = "2026-12-06T10:00:00Z".parse().unwrap();
        const GEMINI: &str = "/v1beta/models/gemini-2.5-pro:generateContent";
        let body = br#"{"contents":[{"parts":[{"text":"hello"}]}]}"#;
        let facts = tollgate_usage::RequestFacts::read(Provider::Gemini, GEMINI, body).unwrap();
        let plan = plan_reservation(
            &config,
            &caller("free"),
            Provider::Gemini,
            GEMINI,
            &facts,
            now,
        )
        .unwrap();
        let input = body.len() as u64;
        let denial = |key, max, used| Denial {
            limit: Limit { key, max },
            standing: tollgate_domain::Standing { used, reserved: 0 },
            requested: plan.amount.of(key.measure()),
            resets_at: now,
            retry_after_secs: 0,
        };
        // 10,000 tokens left of the Gemini budget: the output cap is what is left after the
        // input's bound, and the new amount fits exactly.
        let tokens = LimitKey::ProviderTokens(Provider::Gemini);
        let (output, amount) = clamp(&plan, &facts, &denial(tokens, 100_000, 90_000)).unwrap();
        assert_eq!(output, 10_000 - input);
        assert_eq!(amount.tokens, 10_000);
        // Less than the plan's minimum output left: refused.
        assert_eq!(
            clamp(
                &plan,
                &facts,
                &denial(tokens, 100_000, 100_000 - input - 255)
            ),
            None
        );
        // The cost cap: the largest output whose bound fits what is left.
        let (output, amount) = clamp(
            &plan,
            &facts,
            &denial(LimitKey::Cost, 2_000_000_000, 1_995_000_000),
        )
        .unwrap();
        // $0.005 left: the input's bound and about 494 output tokens at $10/M.
        assert!(amount.cost_nanousd <= 5_000_000, "{amount:?}");
        assert!((400..500).contains(&output), "{output}");
        let one_more = RequestFacts {
            max_output_tokens: Some(output + 1),
            ..facts.clone()
        };
        assert!(reservation_amount(&one_more, plan.price, true).cost_nanousd > 5_000_000);
        // A calls limit cannot be met by a smaller output.
        let calls = LimitKey::ProviderCalls(Provider::Gemini);
        assert_eq!(clamp(&plan, &facts, &denial(calls, 100, 100)), None);
        // A plan that refuses, or an endpoint without an output cap, is not clamped.
        let refusing = ReservePlan {
            clamp_floor: None,
            ..plan.clone()
        };
        assert_eq!(
            clamp(&refusing, &facts, &denial(tokens, 100_000, 90_000)),
            None
        );
    }
}
