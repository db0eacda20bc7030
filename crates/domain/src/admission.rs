//! Admission arithmetic: may a call with this upper bound go ahead, given what is already used
//! and reserved against each limit?
//!
//! A call is admitted only if, for every applicable limit, `used + reserved + requested ≤ max`.
//! Because the request's amount is an upper bound and is reserved before the call is forwarded,
//! admitted usage can never exceed a limit, whatever the concurrency. The counter stores run
//! this same rule atomically; here it is a pure function over values.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::period::BillingPeriod;
use crate::provider::Provider;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Calls,
    Tokens,
    CostNanousd,
}

/// Which limit: one of a plan's, per billing period or per minute, or one of the calling key's
/// own (see `KeyRules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LimitKey {
    ProviderCalls(Provider),
    ProviderTokens(Provider),
    TotalCalls,
    TotalTokens,
    Cost,
    /// The calling key's token budget for the period.
    KeyTokens,
    /// The calling key's cost budget for the period.
    KeyCost,
    /// Calls in the current minute: to one provider (`Some`) or to all of them (`None`).
    CallsPerMinute(Option<Provider>),
    /// Tokens in the current minute: of one provider (`Some`) or of all of them (`None`).
    TokensPerMinute(Option<Provider>),
    /// The calling key's calls in the current minute.
    KeyCallsPerMinute,
    /// The calling key's tokens in the current minute.
    KeyTokensPerMinute,
}

/// The window a limit counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The billing period (a month from the plan's anchor day).
    Period,
    /// The current minute of UTC time (fixed windows starting on the minute).
    Minute,
}

/// The minute window `now` falls in: minutes since the Unix epoch.
pub fn minute_window(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(60)
}

impl LimitKey {
    pub fn measure(self) -> Measure {
        match self {
            LimitKey::ProviderCalls(_)
            | LimitKey::TotalCalls
            | LimitKey::CallsPerMinute(_)
            | LimitKey::KeyCallsPerMinute => Measure::Calls,
            LimitKey::ProviderTokens(_)
            | LimitKey::TotalTokens
            | LimitKey::KeyTokens
            | LimitKey::TokensPerMinute(_)
            | LimitKey::KeyTokensPerMinute => Measure::Tokens,
            LimitKey::Cost | LimitKey::KeyCost => Measure::CostNanousd,
        }
    }

    pub fn provider(self) -> Option<Provider> {
        match self {
            LimitKey::ProviderCalls(p) | LimitKey::ProviderTokens(p) => Some(p),
            LimitKey::CallsPerMinute(p) | LimitKey::TokensPerMinute(p) => p,
            _ => None,
        }
    }

    pub fn window(self) -> Window {
        match self {
            LimitKey::CallsPerMinute(_)
            | LimitKey::TokensPerMinute(_)
            | LimitKey::KeyCallsPerMinute
            | LimitKey::KeyTokensPerMinute => Window::Minute,
            _ => Window::Period,
        }
    }

    pub fn is_per_minute(self) -> bool {
        self.window() == Window::Minute
    }

    /// Whether the limit is the calling key's own rather than its user's plan's.
    pub fn is_keys(self) -> bool {
        matches!(
            self,
            LimitKey::KeyTokens
                | LimitKey::KeyCost
                | LimitKey::KeyCallsPerMinute
                | LimitKey::KeyTokensPerMinute
        )
    }

    /// A stable name, used in error bodies, headers, metrics and counter keys: `openai_calls`,
    /// `gemini_tokens`, `total_calls`, `total_tokens`, `monthly_cost`, `key_tokens`,
    /// `key_cost`, `openai_calls_per_minute`, `calls_per_minute`, `key_tokens_per_minute`, …
    pub fn name(self) -> String {
        match self {
            LimitKey::ProviderCalls(p) => format!("{}_calls", p.as_str()),
            LimitKey::ProviderTokens(p) => format!("{}_tokens", p.as_str()),
            LimitKey::TotalCalls => "total_calls".to_owned(),
            LimitKey::TotalTokens => "total_tokens".to_owned(),
            LimitKey::Cost => "monthly_cost".to_owned(),
            LimitKey::KeyTokens => "key_tokens".to_owned(),
            LimitKey::KeyCost => "key_cost".to_owned(),
            LimitKey::CallsPerMinute(Some(p)) => format!("{}_calls_per_minute", p.as_str()),
            LimitKey::CallsPerMinute(None) => "calls_per_minute".to_owned(),
            LimitKey::TokensPerMinute(Some(p)) => format!("{}_tokens_per_minute", p.as_str()),
            LimitKey::TokensPerMinute(None) => "tokens_per_minute".to_owned(),
            LimitKey::KeyCallsPerMinute => "key_calls_per_minute".to_owned(),
            LimitKey::KeyTokensPerMinute => "key_tokens_per_minute".to_owned(),
        }
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A limit and its maximum per billing period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    pub key: LimitKey,
    /// In the unit of the key's measure (calls, tokens, nano-USD).
    pub max: u64,
}

impl Limit {
    /// When the limit's window ends after `now` (the period's end, or the next minute), and
    /// the seconds until then, rounded up (for `Retry-After`).
    pub fn resets(&self, period: BillingPeriod, now: DateTime<Utc>) -> (DateTime<Utc>, u64) {
        match self.key.window() {
            Window::Period => (period.end(), period.seconds_until_reset(now)),
            Window::Minute => {
                let next = (minute_window(now) + 1) * 60;
                let at = DateTime::from_timestamp(next, 0).unwrap_or(now);
                let millis = (at - now).num_milliseconds().max(1);
                (at, u64::try_from(millis).unwrap_or(1).div_ceil(1000))
            }
        }
    }
}

/// An amount of calls, tokens and cost: what a request reserves or a call used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Amount {
    pub calls: u64,
    pub tokens: u64,
    pub cost_nanousd: u64,
}

impl Amount {
    pub fn of(&self, measure: Measure) -> u64 {
        match measure {
            Measure::Calls => self.calls,
            Measure::Tokens => self.tokens,
            Measure::CostNanousd => self.cost_nanousd,
        }
    }
}

/// Where a limit stands in the current period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Standing {
    /// Settled usage.
    pub used: u64,
    /// Upper bounds held by calls in flight.
    pub reserved: u64,
}

/// Why a call was refused: the first limit, in the plan's order, that it would exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    pub limit: Limit,
    pub standing: Standing,
    pub requested: u64,
    /// When the limit's window (the period, or the minute) resets.
    pub resets_at: DateTime<Utc>,
    /// Seconds until then, rounded up (for `Retry-After`).
    pub retry_after_secs: u64,
}

impl Denial {
    /// What is left of the limit, 0 if none.
    pub fn remaining(&self) -> u64 {
        self.limit
            .max
            .saturating_sub(self.standing.used.saturating_add(self.standing.reserved))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit,
    Deny(Denial),
}

/// Whether `requested` fits under every limit, given each limit's standing.
pub fn decide(
    limits: &[Limit],
    standing: impl Fn(LimitKey) -> Standing,
    requested: Amount,
    period: BillingPeriod,
    now: DateTime<Utc>,
) -> Decision {
    for limit in limits {
        let s = standing(limit.key);
        let asked = requested.of(limit.key.measure());
        if !fits(limit.max, s, asked) {
            let (resets_at, retry_after_secs) = limit.resets(period, now);
            return Decision::Deny(Denial {
                limit: *limit,
                standing: s,
                requested: asked,
                resets_at,
                retry_after_secs,
            });
        }
    }
    Decision::Admit
}

/// `used + reserved + requested ≤ max`, without overflow.
pub fn fits(max: u64, standing: Standing, requested: u64) -> bool {
    u128::from(standing.used) + u128::from(standing.reserved) + u128::from(requested)
        <= u128::from(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::AnchorDay;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn now() -> DateTime<Utc> {
        "2026-11-28T00:00:00Z".parse().unwrap()
    }

    fn period() -> BillingPeriod {
        BillingPeriod::containing(now(), AnchorDay::default())
    }

    #[test]
    fn exactly_at_the_limit_is_admitted_one_more_is_not() {
        let limits = [Limit {
            key: LimitKey::ProviderCalls(Provider::Tavily),
            max: 20,
        }];
        let at = |used| move |_| Standing { used, reserved: 0 };
        let one_call = Amount {
            calls: 1,
            ..Amount::default()
        };
        assert_eq!(
            decide(&limits, at(19), one_call, period(), now()),
            Decision::Admit
        );
        let Decision::Deny(denial) = decide(&limits, at(20), one_call, period(), now()) else {
            panic!("20 of 20 used must deny");
        };
        assert_eq!(denial.limit.key.name(), "tavily_calls");
        assert_eq!(denial.remaining(), 0);
        assert_eq!(
            denial.resets_at,
            "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(denial.retry_after_secs, 3 * 86_400);
    }

    #[test]
    fn reservations_count_and_the_first_exceeded_limit_is_named() {
        let limits = [
            Limit {
                key: LimitKey::ProviderCalls(Provider::OpenAi),
                max: 500,
            },
            Limit {
                key: LimitKey::ProviderTokens(Provider::OpenAi),
                max: 10_000,
            },
            Limit {
                key: LimitKey::Cost,
                max: 1_000_000,
            },
        ];
        let standing: HashMap<LimitKey, Standing> = [
            (
                LimitKey::ProviderTokens(Provider::OpenAi),
                Standing {
                    used: 6_000,
                    reserved: 3_000,
                },
            ),
            (
                LimitKey::Cost,
                Standing {
                    used: 999_999,
                    reserved: 0,
                },
            ),
        ]
        .into();
        let request = Amount {
            calls: 1,
            tokens: 1_001,
            cost_nanousd: 5,
        };
        let decision = decide(
            &limits,
            |k| standing.get(&k).copied().unwrap_or_default(),
            request,
            period(),
            now(),
        );
        let Decision::Deny(denial) = decision else {
            panic!("tokens would exceed");
        };
        assert_eq!(denial.limit.key, LimitKey::ProviderTokens(Provider::OpenAi));
        assert_eq!(denial.requested, 1_001);
        assert_eq!(denial.remaining(), 1_000);
    }

    #[test]
    fn limit_names_are_stable() {
        assert_eq!(
            LimitKey::ProviderTokens(Provider::Gemini).name(),
            "gemini_tokens"
        );
        assert_eq!(LimitKey::TotalCalls.name(), "total_calls");
        assert_eq!(LimitKey::Cost.to_string(), "monthly_cost");
    }

    proptest! {
        /// Admitting requests one after another, each reserving its amount, never pushes any
        /// limit past its maximum.
        #[test]
        fn sequential_admission_never_overshoots(
            max in 0u64..1_000,
            requests in prop::collection::vec(0u64..50, 0..200),
        ) {
            let limits = [Limit { key: LimitKey::TotalTokens, max }];
            let mut reserved = 0u64;
            for tokens in requests {
                let amount = Amount { calls: 1, tokens, cost_nanousd: 0 };
                let s = Standing { used: 0, reserved };
                if decide(&limits, |_| s, amount, period(), now()) == Decision::Admit {
                    reserved += tokens;
                }
                prop_assert!(reserved <= max);
            }
        }

        #[test]
        fn fits_never_overflows(max: u64, used: u64, reserved: u64, requested: u64) {
            let expected = u128::from(used) + u128::from(reserved) + u128::from(requested) <= u128::from(max);
            prop_assert_eq!(fits(max, Standing { used, reserved }, requested), expected);
        }
    }
}
