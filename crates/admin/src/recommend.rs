//! Usage recommendations: what a user should know or do about their billing period, each with
//! the numbers behind it. Pure: the period's usage, its usage per model, the plans and the
//! prices in, recommendations out. The rules are documented in `docs/recommendations.md`.
//!
//! - `limit_reached`: a limit is used up, so calls that count against it are refused until the
//!   period resets (with when it was reached, from the period's 100 % alert).
//! - `limit_forecast`: at the pace of the period so far a limit runs out before the period
//!   ends; names the moment and the cheapest plan of gateway.toml that would hold the
//!   projected usage.
//! - `cheaper_model`: the model that cost the most this period, and what the cheapest other
//!   model of the same provider in `pricing/` (one that takes prompts as long) would have
//!   cost for exactly the same tokens.
//! - `refused_calls`: calls the gateway refused this period, by reason (from the usage log's
//!   refusal rows), each reason with what lifts it.
//! - `failed_calls`: calls that the provider answered with an error (or that broke off), which
//!   are metered like any other; refused calls never reached a provider and are not among them.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tollgate_domain::{
    BillingPeriod, Limit, LimitKey, Measure, Plan, PriceBook, Provider, Usage, amount, cost,
    limit_phrase,
};
use tollgate_ledger::{Alert, ModelUsage, PeriodUsage};
use utoipa::ToSchema;

use crate::render::{dollars, iso, percent};
use crate::stats::used;

/// The least elapsed time a pace is measured over, so that the first minutes of a period do
/// not project a handful of calls into thousands.
const MIN_PACE_WINDOW_MS: i64 = 3_600_000;

/// One recommendation.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Recommendation {
    /// `limit_reached`, `refused_calls`, `limit_forecast`, `cheaper_model` or `failed_calls`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub title: String,
    pub detail: String,
    /// The numbers behind it: money in dollars, counts as integers, times in ISO 8601 UTC.
    #[schema(value_type = Object)]
    pub numbers: BTreeMap<&'static str, Value>,
}

/// What the recommendations are drawn from.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub plan: &'a Plan,
    /// Every plan of gateway.toml, for the plan that covers a forecast.
    pub plans: &'a BTreeMap<String, Plan>,
    pub period: BillingPeriod,
    pub now: DateTime<Utc>,
    pub usage: &'a PeriodUsage,
    /// The costliest first.
    pub models: &'a [ModelUsage],
    pub prices: &'a PriceBook,
    /// The period's alerts (any), for when a limit was reached.
    pub alerts: &'a [Alert],
    /// The calls the gateway refused the user this period, by refusal code
    /// (`Ledger::refused_calls`).
    pub refused: &'a BTreeMap<String, u64>,
}

/// Every recommendation for the period, the most urgent first.
pub fn recommendations(facts: &Facts<'_>) -> Vec<Recommendation> {
    let mut out = limits_reached(facts);
    out.extend(refused_calls(facts));
    out.extend(forecasts(facts));
    out.extend(cheaper_model(facts));
    out.extend(failed_calls(facts));
    out
}

/// An amount of a limit's measure for `numbers`: dollars for cost, else the count.
fn number(key: LimitKey, value: u64) -> Value {
    match key.measure() {
        Measure::CostNanousd => json!(dollars(value)),
        Measure::Calls | Measure::Tokens => json!(value),
    }
}

fn limits_reached(facts: &Facts<'_>) -> Vec<Recommendation> {
    let resets_at = facts.period.end();
    facts
        .plan
        .all_limits()
        .into_iter()
        .filter(|l| l.max > 0 && used(facts.usage, l.key) >= l.max)
        .map(|limit| {
            let key = limit.key;
            let used = used(facts.usage, key);
            let reached_at = facts
                .alerts
                .iter()
                .filter(|a| a.limit_key == key.name() && a.threshold_percentage >= 100)
                .map(|a| a.created_at)
                .min();
            let over = used - limit.max;
            let mut detail = format!(
                "Your {} limit of {} is used up ({} used",
                limit_phrase(key),
                amount(key, limit.max),
                amount(key, used),
            );
            if over > 0 {
                detail.push_str(&format!(
                    ", {} over, {}% of the limit",
                    amount(key, over),
                    percent(used, limit.max)
                ));
            }
            detail.push_str(&format!(
                "). Calls that count against it are refused until the period resets on {}; \
                 a plan with a higher limit lifts it at once.",
                resets_at.format("%Y-%m-%d %H:%M UTC")
            ));
            let mut numbers = BTreeMap::from([
                ("limit_key", json!(key.name())),
                ("used", number(key, used)),
                ("limit", number(key, limit.max)),
                ("over_by", number(key, over)),
                ("used_percentage", json!(percent(used, limit.max))),
                ("resets_at", json!(iso(resets_at))),
            ]);
            if let Some(at) = reached_at {
                numbers.insert("reached_at", json!(iso(at)));
            }
            Recommendation {
                kind: "limit_reached",
                title: format!("{} limit reached", capitalised(&limit_phrase(key))),
                detail,
                numbers,
            }
        })
        .collect()
}

/// The period's elapsed and whole length in milliseconds, while it is running.
fn elapsed_and_length(period: BillingPeriod, now: DateTime<Utc>) -> Option<(u128, u128)> {
    if now < period.start() || now >= period.end() {
        return None;
    }
    let elapsed = (now - period.start())
        .num_milliseconds()
        .max(MIN_PACE_WINDOW_MS);
    let length = (period.end() - period.start()).num_milliseconds();
    Some((u128::try_from(elapsed).ok()?, u128::try_from(length).ok()?))
}

/// Usage at the end of the period at the pace so far.
fn projected(used: u64, (elapsed, length): (u128, u128)) -> u64 {
    u64::try_from(u128::from(used) * length / elapsed.max(1)).unwrap_or(u64::MAX)
}

fn forecasts(facts: &Facts<'_>) -> Vec<Recommendation> {
    let Some(window) = elapsed_and_length(facts.period, facts.now) else {
        return Vec::new();
    };
    let plan_for = covering_plan(facts, window);
    facts
        .plan
        .all_limits()
        .into_iter()
        .filter_map(|limit| {
            let key = limit.key;
            let used = used(facts.usage, key);
            let at_end = projected(used, window);
            if limit.max == 0 || used == 0 || used >= limit.max || at_end <= limit.max {
                return None;
            }
            // Left ÷ pace: (max − used) × elapsed ÷ used.
            let until_ms = u128::from(limit.max - used) * window.0 / u128::from(used);
            // Within the period (the projection passes the limit), so never out of range.
            let runs_out_at = facts
                .now
                .checked_add_signed(Duration::try_milliseconds(i64::try_from(until_ms).ok()?)?)?;
            let mut detail = format!(
                "At this period's pace your {} ({} of {} used) reach the limit around {} and \
                 would come to {} by the end of the period.",
                limit_phrase(key),
                amount(key, used),
                amount(key, limit.max),
                runs_out_at.format("%Y-%m-%d %H:%M UTC"),
                amount(key, at_end),
            );
            let mut numbers = BTreeMap::from([
                ("limit_key", json!(key.name())),
                ("used", number(key, used)),
                ("limit", number(key, limit.max)),
                ("projected", number(key, at_end)),
                ("projected_percentage", json!(percent(at_end, limit.max))),
                ("runs_out_at", json!(iso(runs_out_at))),
                ("period_ends_at", json!(iso(facts.period.end()))),
            ]);
            match plan_for {
                Some(plan) => {
                    detail.push_str(&format!(
                        " Plan \"{}\" ({} a month) would hold the whole period's projected usage.",
                        plan.id,
                        amount(LimitKey::Cost, plan.price_monthly_nanousd)
                    ));
                    numbers.insert("suggested_plan", json!(plan.id));
                    numbers.insert(
                        "suggested_plan_price_monthly",
                        json!(dollars(plan.price_monthly_nanousd)),
                    );
                }
                None => detail.push_str(
                    " No plan of this gateway holds the projected usage; slow down or ask the \
                     operator for a larger plan.",
                ),
            }
            Some(Recommendation {
                kind: "limit_forecast",
                title: format!("{} will run out", capitalised(&limit_phrase(key))),
                detail,
                numbers,
            })
        })
        .collect()
}

/// The cheapest plan other than the user's whose every limit holds the period's projected
/// usage and which includes every provider used; ties go to the first id.
fn covering_plan<'a>(facts: &Facts<'a>, window: (u128, u128)) -> Option<&'a Plan> {
    let providers_used: Vec<Provider> = facts
        .usage
        .per_provider
        .iter()
        .filter(|(_, u)| u.calls > 0)
        .map(|(p, _)| *p)
        .collect();
    let holds = |plan: &Plan| {
        providers_used.iter().all(|&p| plan.includes(p))
            && plan
                .all_limits()
                .iter()
                .all(|l: &Limit| projected(used(facts.usage, l.key), window) <= l.max)
    };
    facts
        .plans
        .values()
        .filter(|p| p.id != facts.plan.id && holds(p))
        .min_by(|a, b| {
            a.price_monthly_nanousd
                .cmp(&b.price_monthly_nanousd)
                .then_with(|| a.id.cmp(&b.id))
        })
}

fn cheaper_model(facts: &Facts<'_>) -> Option<Recommendation> {
    let top = facts.models.first().filter(|m| m.cost_nanousd > 0)?;
    let total: u64 = facts.models.iter().map(|m| m.cost_nanousd).sum();
    let found = facts.prices.lookup(top.provider, &top.model)?;
    found.price.tokens.as_ref()?;
    let at_list = cost(found.price, &top.usage).total_nanousd;
    let takes_as_long = |window: Option<u64>| match (found.price.context_window, window) {
        (Some(needed), Some(has)) => has >= needed,
        _ => true,
    };
    let one_million_out = Usage {
        output_tokens: 1_000_000,
        ..Usage::default()
    };
    let (name, alternative) = facts
        .prices
        .providers
        .get(&top.provider)?
        .models
        .iter()
        .filter(|(name, price)| {
            name.as_str() != found.model
                && price.tokens.is_some()
                // A model without an output price (embeddings) does not answer chats.
                && cost(price, &one_million_out).total_nanousd > 0
                && takes_as_long(price.context_window)
        })
        .map(|(name, price)| (name, cost(price, &top.usage).total_nanousd))
        .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)))?;
    if alternative >= at_list {
        return None;
    }
    let savings = top.cost_nanousd.saturating_sub(alternative);
    let share = percent(top.cost_nanousd, total);
    Some(Recommendation {
        kind: "cheaper_model",
        title: format!("{} is {}% of your cost", top.model, share),
        detail: format!(
            "{} calls to {} {} cost {} this period ({} input and {} output tokens). The same \
             tokens on {} would have cost {}, {} less — if it does the job as well.",
            top.calls,
            top.provider.display_name(),
            top.model,
            amount(LimitKey::Cost, top.cost_nanousd),
            amount(LimitKey::TotalTokens, top.usage.input_tokens),
            amount(LimitKey::TotalTokens, top.usage.output_tokens),
            name,
            amount(LimitKey::Cost, alternative),
            amount(LimitKey::Cost, savings),
        ),
        numbers: BTreeMap::from([
            ("provider", json!(top.provider.seed_name())),
            ("model", json!(top.model)),
            ("calls", json!(top.calls)),
            ("input_tokens", json!(top.usage.input_tokens)),
            ("output_tokens", json!(top.usage.output_tokens)),
            ("cost", json!(dollars(top.cost_nanousd))),
            ("share_of_cost_percentage", json!(share)),
            ("alternative_model", json!(name)),
            ("alternative_cost", json!(dollars(alternative))),
            ("savings", json!(dollars(savings))),
        ]),
    })
}

/// Why the gateway refuses a call with this code, and what to do about it.
fn refusal_phrase(reason: &str) -> &'static str {
    match reason {
        "usage_limit_exceeded" => {
            "a limit of the plan was used up, or too little of it was left for the call \
             (a plan with higher limits, or the next period)"
        }
        "provider_not_in_plan" => "the plan does not include the provider (a plan that does)",
        "plan_not_offered" => "the plan is no longer offered (choose a current plan)",
        "user_disabled" => "the user is disabled (ask the operators to enable the user)",
        "key_expired" => "the key had expired (a new key, or a later expiry on this one)",
        "provider_not_allowed" => {
            "the key may not call the provider (a key that may, or the provider added to its list)"
        }
        "model_not_allowed" => {
            "the key may not call the model (one of its models, or the model added to its list)"
        }
        "model_not_priced" => {
            "the model has no price, so the gateway cannot meter it (a priced model, or ask \
             the operators to price it)"
        }
        "limits_unavailable" => "the gateway could not check the limits (retry later)",
        "request_too_large" => "the request was too large (send less per call)",
        "invalid_request" => "the request was malformed (fix the request)",
        "request_timeout" => "the request took too long to arrive (retry)",
        "upstream_unreachable" => "the provider could not be reached (retry later)",
        _ => "see the refusal's code in the usage log",
    }
}

fn refused_calls(facts: &Facts<'_>) -> Option<Recommendation> {
    let refused: u64 = facts.refused.values().sum();
    if refused == 0 {
        return None;
    }
    // The most frequent reason first.
    let mut reasons: Vec<(&String, &u64)> = facts.refused.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let why: Vec<String> = reasons
        .iter()
        .map(|(reason, calls)| format!("{calls} {reason}: {}", refusal_phrase(reason)))
        .collect();
    let calls = calls_word(refused);
    Some(Recommendation {
        kind: "refused_calls",
        title: format!("{refused} {calls} refused this period"),
        detail: format!(
            "The gateway refused {refused} {calls} this period, which reached no provider and \
             cost nothing: {}. The usage log lists them (refused=true).",
            why.join("; "),
        ),
        numbers: BTreeMap::from([
            ("refused_calls", json!(refused)),
            ("by_reason", json!(facts.refused)),
        ]),
    })
}

fn failed_calls(facts: &Facts<'_>) -> Option<Recommendation> {
    let totals = &facts.usage.totals;
    if totals.error_calls == 0 {
        return None;
    }
    let per_provider: BTreeMap<&str, u64> = facts
        .usage
        .per_provider
        .iter()
        .filter(|(_, u)| u.error_calls > 0)
        .map(|(p, u)| (p.seed_name(), u.error_calls))
        .collect();
    let names: Vec<String> = facts
        .usage
        .per_provider
        .iter()
        .filter(|(_, u)| u.error_calls > 0)
        .map(|(p, u)| format!("{} {}", p.display_name(), u.error_calls))
        .collect();
    Some(Recommendation {
        kind: "failed_calls",
        title: format!(
            "{} {} failed this period",
            totals.error_calls,
            calls_word(totals.error_calls)
        ),
        detail: format!(
            "{} of {} calls this period were answered with an error by the provider or broke \
             off ({}). The usage log lists them with their status codes.",
            totals.error_calls,
            totals.calls,
            names.join(", "),
        ),
        numbers: BTreeMap::from([
            ("failed_calls", json!(totals.error_calls)),
            ("calls", json!(totals.calls)),
            (
                "failed_percentage",
                json!(percent(totals.error_calls, totals.calls)),
            ),
            ("per_provider", json!(per_provider)),
        ]),
    })
}

fn calls_word(n: u64) -> &'static str {
    if n == 1 { "call" } else { "calls" }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use tollgate_domain::{AnchorDay, ProviderLimits, ShortBudget, Tier};
    use tollgate_ledger::{ProviderUsage, UsageTotals};

    use super::*;

    const DOLLAR: u64 = 1_000_000_000;

    fn plan(id: &str, price_dollars: u64, openai_calls: u64, cost_cap_dollars: u64) -> Plan {
        Plan {
            id: id.into(),
            name: id.into(),
            tier: Tier::Pro,
            price_monthly_nanousd: price_dollars * DOLLAR,
            price_yearly_nanousd: 0,
            description: String::new(),
            features: vec![],
            providers: BTreeMap::from([(
                Provider::OpenAi,
                ProviderLimits {
                    calls: Some(openai_calls),
                    tokens: None,
                    ..ProviderLimits::default()
                },
            )]),
            cost_cap_nanousd: Some(cost_cap_dollars * DOLLAR),
            total_calls: None,
            total_tokens: None,
            calls_per_minute: None,
            tokens_per_minute: None,
            on_counter_store_unreachable: None,
            on_short_budget: ShortBudget::Clamp,
            min_output_tokens: 256,
        }
    }

    fn plans() -> BTreeMap<String, Plan> {
        [
            plan("small", 10, 100, 5),
            plan("medium", 30, 1_000, 50),
            plan("large", 90, 10_000, 500),
            // Cheaper than medium, but it leaves OpenAI out.
            Plan {
                providers: BTreeMap::from([(
                    Provider::OpenAi,
                    ProviderLimits {
                        calls: Some(0),
                        tokens: None,
                        ..ProviderLimits::default()
                    },
                )]),
                ..plan("search", 20, 0, 1_000)
            },
        ]
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect()
    }

    fn usage(openai_calls: u64, cost_nanousd: u64, error_calls: u64) -> PeriodUsage {
        let openai = ProviderUsage {
            calls: openai_calls,
            cost_nanousd,
            error_calls,
            ..ProviderUsage::default()
        };
        PeriodUsage {
            user_id: "alice".into(),
            billing_period: "2026-12".into(),
            totals: UsageTotals {
                calls: openai_calls,
                cost_nanousd,
                error_calls,
                ..UsageTotals::default()
            },
            per_provider: BTreeMap::from([(Provider::OpenAi, openai)]),
            avg_latency_ms: 0.0,
            error_rate_pct: 0.0,
            updated_at: None,
        }
    }

    /// `big` at $2.50/$10 per million, `mini` at $0.15/$0.60 with the same window, `nano` at
    /// $0.10/$0.40 with a smaller one, and `embed` with no output price.
    fn prices() -> PriceBook {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("openai.toml"),
            r#"
provider = "openai"
[defaults]
source = "test"
effective = "2026-01-01"
[models."big"]
input = "2.50"
output = "10.00"
context_window = 128000
[models."mini"]
input = "0.15"
output = "0.60"
context_window = 128000
[models."nano"]
input = "0.10"
output = "0.40"
context_window = 32000
[models."embed"]
input = "0.02"
output = "0"
context_window = 128000
"#,
        )
        .unwrap();
        let (book, report) = tollgate_config::load_pricing_dir(dir.path());
        assert!(report.errors().next().is_none(), "{report}");
        book
    }

    fn model(name: &str, calls: u64, input: u64, output: u64, cost_nanousd: u64) -> ModelUsage {
        ModelUsage {
            provider: Provider::OpenAi,
            model: name.into(),
            calls,
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            },
            cost_nanousd,
        }
    }

    fn alert(limit_key: &str, threshold: i64, at: DateTime<Utc>) -> Alert {
        Alert {
            id: 1,
            user_id: "alice".into(),
            billing_period: "2026-12".into(),
            limit_key: limit_key.into(),
            threshold_percentage: threshold,
            alert_type: "limit_reached".into(),
            provider: None,
            title: String::new(),
            message: String::new(),
            severity: "error".into(),
            is_sent: false,
            sent_at: None,
            is_read: false,
            read_at: None,
            created_at: at,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn run(
        plan_id: &str,
        now: &str,
        usage: &PeriodUsage,
        models: &[ModelUsage],
        alerts: &[Alert],
    ) -> Vec<Recommendation> {
        run_refused(plan_id, now, usage, models, alerts, &BTreeMap::new())
    }

    fn run_refused(
        plan_id: &str,
        now: &str,
        usage: &PeriodUsage,
        models: &[ModelUsage],
        alerts: &[Alert],
        refused: &BTreeMap<String, u64>,
    ) -> Vec<Recommendation> {
        let plans = plans();
        let prices = prices();
        let now = at(now);
        recommendations(&Facts {
            plan: &plans[plan_id],
            plans: &plans,
            period: BillingPeriod::containing(now, AnchorDay::default()),
            now,
            usage,
            models,
            prices: &prices,
            alerts,
            refused,
        })
    }

    fn kinds(recs: &[Recommendation]) -> Vec<&str> {
        recs.iter().map(|r| r.kind).collect()
    }

    #[test]
    fn a_limit_on_pace_to_run_out_names_when_and_the_cheapest_plan_that_holds_it() {
        // December has 31 days; 10 days in, 40 of 100 calls and $1 of $5 project to 124 calls
        // and $3.10: the calls run out, 60 calls after 40 took 10 days, on day 25.
        let usage = usage(40, DOLLAR, 0);
        let recs = run("small", "2026-12-11T00:00:00Z", &usage, &[], &[]);
        assert_eq!(kinds(&recs), ["limit_forecast"], "{recs:#?}");
        let n = &recs[0].numbers;
        assert_eq!(n["limit_key"], "openai_calls");
        assert_eq!(n["used"], 40);
        assert_eq!(n["limit"], 100);
        assert_eq!(n["projected"], 124);
        assert_eq!(n["runs_out_at"], "2026-12-26T00:00:00.000Z");
        // Medium holds 124 calls and $3.10; search is cheaper but leaves OpenAI out.
        assert_eq!(n["suggested_plan"], "medium");
        assert_eq!(n["suggested_plan_price_monthly"], 30.0);
        assert!(
            recs[0].detail.contains("2026-12-26 00:00 UTC"),
            "{}",
            recs[0].detail
        );
        // The same usage on the last day projects to less than the limit: nothing to say.
        let recs = run("small", "2026-12-31T23:00:00Z", &usage, &[], &[]);
        assert!(recs.is_empty(), "{recs:#?}");
    }

    #[test]
    fn a_forecast_no_plan_holds_says_so() {
        // 9,000 calls in 10 days project past every plan's OpenAI calls.
        let usage = usage(9_000, 0, 0);
        let recs = run("large", "2026-12-11T00:00:00Z", &usage, &[], &[]);
        assert_eq!(kinds(&recs), ["limit_forecast"]);
        assert!(!recs[0].numbers.contains_key("suggested_plan"));
        assert!(recs[0].detail.contains("No plan"), "{}", recs[0].detail);
    }

    #[test]
    fn a_cap_exceeded_says_by_how_much_since_when_and_until_when() {
        // $6.05 of a $5 cap: 121 %.
        let usage = usage(50, 6_050_000_000, 0);
        let reached = at("2026-12-09T15:30:00Z");
        let alerts = [
            alert("monthly_cost", 90, at("2026-12-08T00:00:00Z")),
            alert("monthly_cost", 100, reached),
        ];
        let recs = run("small", "2026-12-11T00:00:00Z", &usage, &[], &alerts);
        let reached_rec = recs.iter().find(|r| r.kind == "limit_reached").unwrap();
        let n = &reached_rec.numbers;
        assert_eq!(n["limit_key"], "monthly_cost");
        assert_eq!(n["used"], 6.05);
        assert_eq!(n["limit"], 5.0);
        assert_eq!(n["over_by"], 1.05);
        assert_eq!(n["used_percentage"], 121.0);
        assert_eq!(n["reached_at"], "2026-12-09T15:30:00.000Z");
        assert_eq!(n["resets_at"], "2027-01-01T00:00:00.000Z");
        assert!(
            reached_rec.detail.contains("$1.05 over"),
            "{}",
            reached_rec.detail
        );
        // The refusal comes first; the calls (50 of 100 in 10 days) are forecast after it.
        assert_eq!(kinds(&recs), ["limit_reached", "limit_forecast"]);
    }

    #[test]
    fn the_costliest_model_is_priced_at_the_cheapest_model_that_takes_its_prompts() {
        // big: 2M input, 1M output = $5 + $10 = $15 of $16 in all. mini would have cost
        // $0.30 + $0.60 = $0.90; nano is cheaper still but has a smaller window, embed gives
        // no answers.
        let models = [
            model("big", 300, 2_000_000, 1_000_000, 15 * DOLLAR),
            model("mini", 100, 1_000_000, 1_000_000, DOLLAR),
        ];
        let usage = usage(400, 16 * DOLLAR, 0);
        let recs = run("large", "2026-12-31T23:00:00Z", &usage, &models, &[]);
        assert_eq!(kinds(&recs), ["cheaper_model"], "{recs:#?}");
        let n = &recs[0].numbers;
        assert_eq!(n["model"], "big");
        assert_eq!(n["calls"], 300);
        assert_eq!(n["cost"], 15.0);
        assert_eq!(n["share_of_cost_percentage"], 93.75);
        assert_eq!(n["alternative_model"], "mini");
        assert_eq!(n["alternative_cost"], 0.9);
        assert_eq!(n["savings"], 14.1);
        // When the costliest model is already the cheapest that fits, nothing is suggested.
        let models = [model("mini", 100, 1_000_000, 1_000_000, 750_000_000)];
        let recs = run("large", "2026-12-31T23:00:00Z", &usage, &models, &[]);
        assert!(recs.is_empty(), "{recs:#?}");
    }

    #[test]
    fn failed_calls_are_counted_per_provider() {
        let usage = usage(20, 0, 3);
        let recs = run("large", "2026-12-31T23:00:00Z", &usage, &[], &[]);
        assert_eq!(kinds(&recs), ["failed_calls"]);
        let n = &recs[0].numbers;
        assert_eq!(recs[0].title, "3 calls failed this period");
        assert_eq!(n["failed_calls"], 3);
        assert_eq!(n["failed_percentage"], 15.0);
        assert_eq!(n["per_provider"], json!({"openai": 3}));
    }

    #[test]
    fn refused_calls_are_counted_by_reason_apart_from_failed_ones() {
        // 20 calls admitted, 3 of them failed upstream; 7 refused, which count in no usage.
        let usage = usage(20, 0, 3);
        let refused = BTreeMap::from([
            ("provider_not_in_plan".to_owned(), 2),
            ("usage_limit_exceeded".to_owned(), 5),
        ]);
        let recs = run_refused("large", "2026-12-31T23:00:00Z", &usage, &[], &[], &refused);
        assert_eq!(kinds(&recs), ["refused_calls", "failed_calls"], "{recs:#?}");
        let n = &recs[0].numbers;
        assert_eq!(n["refused_calls"], 7);
        assert_eq!(
            n["by_reason"],
            json!({"provider_not_in_plan": 2, "usage_limit_exceeded": 5})
        );
        assert_eq!(recs[0].title, "7 calls refused this period");
        let detail = &recs[0].detail;
        let limit = detail.find("5 usage_limit_exceeded: a limit of the plan was used up");
        let provider = detail.find("2 provider_not_in_plan: the plan does not include");
        assert!(
            limit.is_some() && provider.is_some() && limit < provider,
            "{detail}"
        );
        // The failed calls are the provider's answers only.
        assert_eq!(recs[1].numbers["failed_calls"], 3);
        assert_eq!(recs[1].numbers["calls"], 20);
        // No refusals, no recommendation about them.
        let recs = run("large", "2026-12-31T23:00:00Z", &usage, &[], &[]);
        assert_eq!(kinds(&recs), ["failed_calls"]);
    }

    #[test]
    fn a_period_not_running_projects_nothing() {
        let usage = usage(99, 0, 0);
        let plans = plans();
        let prices = prices();
        let now = at("2027-02-11T00:00:00Z");
        let recs = recommendations(&Facts {
            plan: &plans["small"],
            plans: &plans,
            period: BillingPeriod::from_key("2026-12", AnchorDay::default()).unwrap(),
            now,
            usage: &usage,
            models: &[],
            prices: &prices,
            alerts: &[],
            refused: &BTreeMap::new(),
        });
        assert!(recs.is_empty(), "{recs:#?}");
    }
}
