//! Usage statistics, trends, projections and alerts in the seed's shapes, computed from the
//! ledger's integer totals.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tollgate_domain::{BillingPeriod, Limit, LimitKey, Measure, Plan, Provider};
use tollgate_ledger::{Alert, PeriodUsage};

use crate::limits::limits_block;
use crate::model::{AlertOut, Projections, ProviderStats, ProviderTrend, UsageStats, UsageTrends};
use crate::render::{dollars, dollars_to_cents, iso, percent, seconds};

/// How many unread alerts of the period a UsageStats carries (the seed's 10).
pub const USAGE_ALERTS_MAX: u32 = 10;

/// The settled usage counted against `key` in a period.
pub fn used(usage: &PeriodUsage, key: LimitKey) -> u64 {
    let provider = |p: Provider| usage.per_provider.get(&p).copied().unwrap_or_default();
    match key {
        LimitKey::ProviderCalls(p) => provider(p).calls,
        LimitKey::ProviderTokens(p) => provider(p).tokens,
        LimitKey::TotalCalls => usage.totals.calls,
        LimitKey::TotalTokens => usage.totals.tokens,
        LimitKey::Cost => usage.totals.cost_nanousd,
        // A key's own limits and per-minute windows are not a user's period usage.
        LimitKey::KeyTokens
        | LimitKey::KeyCost
        | LimitKey::CallsPerMinute(_)
        | LimitKey::TokensPerMinute(_)
        | LimitKey::KeyCallsPerMinute
        | LimitKey::KeyTokensPerMinute => 0,
    }
}

/// `limit_reached` when some limit is fully used, `warning` from 80 % of some limit, else
/// `active` — over every limit type (calls, tokens, cost; per provider and plan-wide).
pub fn usage_status(plan: &Plan, usage: &PeriodUsage) -> &'static str {
    let at_least = |limit: &Limit, pct: u128| {
        limit.max > 0 && u128::from(used(usage, limit.key)) * 100 >= pct * u128::from(limit.max)
    };
    let limits = plan.all_limits();
    if limits.iter().any(|l| at_least(l, 100)) {
        "limit_reached"
    } else if limits.iter().any(|l| at_least(l, 80)) {
        "warning"
    } else {
        "active"
    }
}

/// The input bound of a small call (a short prompt: its body's bytes), for
/// [`admits_a_small_call`].
pub const SMALL_CALL_INPUT_TOKENS: u64 = 128;

/// Whether admission would take a small call now: one call of a short prompt
/// ([`SMALL_CALL_INPUT_TOKENS`]) and the plan's minimum output (what a call clamped to its
/// budget is still allowed), fitting every plan-wide limit and the limits of at least one
/// provider of the plan that the gateway can call (`callable`: enabled, with a key). The cost
/// cap needs something left.
pub fn admits_a_small_call(
    plan: &Plan,
    usage: &PeriodUsage,
    callable: impl Fn(Provider) -> bool,
) -> bool {
    let room = |limit: &Limit| {
        let left = limit.max.saturating_sub(used(usage, limit.key));
        match limit.key.measure() {
            Measure::Calls | Measure::CostNanousd => left > 0,
            Measure::Tokens => left >= SMALL_CALL_INPUT_TOKENS + plan.min_output_tokens,
        }
    };
    Provider::ALL
        .into_iter()
        .filter(|&p| callable(p))
        .any(|provider| {
            plan.limits_for(provider)
                .is_ok_and(|limits| limits.iter().all(room))
        })
}

pub fn alert_out(a: &Alert) -> AlertOut {
    AlertOut {
        id: a.id,
        alert_type: a.alert_type.clone(),
        user_id: a.user_id.clone(),
        limit_key: a.limit_key.clone(),
        threshold_percentage: a.threshold_percentage,
        provider: a.provider.as_deref().map(|p| {
            p.parse::<Provider>()
                .map_or(p, |p| p.seed_name())
                .to_owned()
        }),
        title: a.title.clone(),
        message: a.message.clone(),
        severity: a.severity.clone(),
        is_sent: a.is_sent,
        sent_at: a.sent_at.map(iso),
        is_read: a.is_read,
        read_at: a.read_at.map(iso),
        billing_period: a.billing_period.clone(),
        created_at: iso(a.created_at),
    }
}

fn percentages(plan: &Plan, usage: &PeriodUsage) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let max_of = |key: LimitKey| {
        plan.all_limits()
            .into_iter()
            .find(|l| l.key == key)
            .map_or(0, |l| l.max)
    };
    let mut put = |name: String, key: LimitKey| {
        out.insert(name, percent(used(usage, key), max_of(key)));
    };
    for p in Provider::ALL {
        put(
            format!("{}_calls", p.seed_name()),
            LimitKey::ProviderCalls(p),
        );
        if p.is_token_billed() {
            put(
                format!("{}_tokens", p.seed_name()),
                LimitKey::ProviderTokens(p),
            );
        }
    }
    put("cost".to_owned(), LimitKey::Cost);
    put("total_calls".to_owned(), LimitKey::TotalCalls);
    put("total_tokens".to_owned(), LimitKey::TotalTokens);
    out
}

/// The seed's UsageStats of a period from its usage, its unread alerts and its refused calls
/// by reason (`Ledger::refused_calls`).
pub fn usage_stats(
    plan: &Plan,
    period: BillingPeriod,
    usage: &PeriodUsage,
    alerts: &[Alert],
    refused: BTreeMap<String, u64>,
    now: DateTime<Utc>,
) -> UsageStats {
    let provider_breakdown = Provider::ALL
        .into_iter()
        .map(|p| {
            let u = usage.per_provider.get(&p).copied().unwrap_or_default();
            (
                p.seed_name().to_owned(),
                ProviderStats {
                    calls: u.calls,
                    tokens: u.tokens,
                    cost: dollars(u.cost_nanousd),
                },
            )
        })
        .collect();
    UsageStats {
        billing_period: period.key(),
        usage_status: usage_status(plan, usage).to_owned(),
        total_calls: usage.totals.calls,
        total_tokens: usage.totals.tokens,
        total_cost: dollars(usage.totals.cost_nanousd),
        avg_response_time: seconds(usage.avg_latency_ms),
        error_rate: percent(usage.totals.error_calls, usage.totals.calls),
        limits: limits_block(plan),
        provider_breakdown,
        alerts: alerts.iter().map(alert_out).collect(),
        usage_percentages: percentages(plan, usage),
        last_updated: iso(usage.updated_at.unwrap_or(now)),
        period_start: iso(period.start()),
        period_end: iso(period.end()),
        refused_calls: refused.values().sum(),
        refused_by_reason: refused,
    }
}

pub fn trends(periods: &[PeriodUsage]) -> UsageTrends {
    let mut provider_trends: BTreeMap<String, ProviderTrend> = Provider::ALL
        .into_iter()
        .map(|p| (p.seed_name().to_owned(), ProviderTrend::default()))
        .collect();
    for period in periods {
        for p in Provider::ALL {
            let u = period.per_provider.get(&p).copied().unwrap_or_default();
            if let Some(t) = provider_trends.get_mut(p.seed_name()) {
                t.calls.push(u.calls);
                t.cost.push(dollars(u.cost_nanousd));
                t.tokens.push(u.tokens);
            }
        }
    }
    UsageTrends {
        periods: periods.iter().map(|p| p.billing_period.clone()).collect(),
        total_calls: periods.iter().map(|p| p.totals.calls).collect(),
        total_cost: periods
            .iter()
            .map(|p| dollars(p.totals.cost_nanousd))
            .collect(),
        total_tokens: periods.iter().map(|p| p.totals.tokens).collect(),
        provider_trends,
    }
}

/// The period's cost extrapolated over its real length: cost so far ÷ days begun × days in the
/// period. A period that has ended projects to what it cost; one not yet begun to 0.
pub fn projections(
    plan: &Plan,
    period: BillingPeriod,
    cost_nanousd: u64,
    now: DateTime<Utc>,
) -> Projections {
    let days = u128::from(period.days());
    let projected_nanousd = if now >= period.end() {
        u128::from(cost_nanousd)
    } else if now < period.start() {
        0
    } else {
        let elapsed_ms = (now - period.start()).num_milliseconds().max(0);
        // Days begun, as the seed's day-of-month: the 1st counts as one day.
        let days_begun = u128::try_from(elapsed_ms / 86_400_000 + 1).unwrap_or(1);
        u128::from(cost_nanousd) * days / days_begun.min(days)
    };
    let cap = plan.cost_cap_nanousd.unwrap_or(0);
    let percentage = if cap == 0 {
        0.0
    } else {
        let hundredths = tollgate_domain::round_div(projected_nanousd * 10_000, u128::from(cap));
        hundredths as f64 / 100.0
    };
    Projections {
        projected_monthly_cost: dollars_to_cents(projected_nanousd),
        cost_limit: dollars(cap),
        projected_usage_percentage: percentage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_domain::AnchorDay;

    fn plan_with_cap(cap: Option<u64>) -> Plan {
        Plan {
            id: "pro".into(),
            name: "Pro".into(),
            tier: tollgate_domain::Tier::Pro,
            price_monthly_nanousd: 0,
            price_yearly_nanousd: 0,
            description: String::new(),
            features: vec![],
            providers: BTreeMap::new(),
            cost_cap_nanousd: cap,
            total_calls: None,
            total_tokens: None,
            calls_per_minute: None,
            tokens_per_minute: None,
            on_counter_store_unreachable: None,
            on_short_budget: tollgate_domain::ShortBudget::Clamp,
            min_output_tokens: tollgate_domain::DEFAULT_MIN_OUTPUT_TOKENS,
        }
    }

    #[test]
    fn projection_divides_by_the_real_days_of_the_month() {
        // February 2026 has 28 days; on the 14th (14 days begun) $14 projects to $28.
        let now: DateTime<Utc> = "2026-02-14T12:00:00Z".parse().unwrap();
        let period = BillingPeriod::containing(now, AnchorDay::default());
        let p = projections(
            &plan_with_cap(Some(56_000_000_000)),
            period,
            14_000_000_000,
            now,
        );
        assert_eq!(p.projected_monthly_cost, 28.0);
        assert_eq!(p.cost_limit, 56.0);
        assert_eq!(p.projected_usage_percentage, 50.0);
        // No cap: no percentage against a made-up $1.
        let p = projections(&plan_with_cap(None), period, 14_000_000_000, now);
        assert_eq!(p.projected_usage_percentage, 0.0);
        // A past period projects to its actual cost.
        let later: DateTime<Utc> = "2026-04-01T00:00:00Z".parse().unwrap();
        let p = projections(&plan_with_cap(None), period, 14_000_000_000, later);
        assert_eq!(p.projected_monthly_cost, 14.0);
    }
}
