//! Usage alerts: which thresholds of which limits a settled call crossed, and what to tell the
//! user about each.
//!
//! A threshold `t` of a limit with maximum `max` is crossed by a call when the settled usage
//! went from below `t %` of `max` to at or above it. Because every settle moves a counter
//! atomically from one value to the next, each threshold is crossed by exactly one call per
//! period, however many calls run at once; the ledger's unique (user, limit, threshold, period)
//! constraint makes storing it idempotent on top of that. Every limit type alerts: per-provider
//! calls and tokens, plan-wide calls and tokens, and the cost cap.

use serde::{Deserialize, Serialize};

use crate::admission::{Limit, LimitKey, Measure};
use crate::money::format_usd;
use crate::provider::Provider;

/// How serious an alert is; the seed's three values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    Info,
    Warning,
    Error,
}

impl AlertSeverity {
    /// Thresholds of 100 % and above are errors, 90 % and above warnings, anything lower is
    /// information (the seed's 80/90/100 map to info/warning/error).
    pub fn for_threshold(threshold_pct: u8) -> AlertSeverity {
        match threshold_pct {
            100.. => AlertSeverity::Error,
            90..=99 => AlertSeverity::Warning,
            _ => AlertSeverity::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Info => "info",
            AlertSeverity::Warning => "warning",
            AlertSeverity::Error => "error",
        }
    }
}

/// One threshold of one limit, crossed by a settled call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crossing {
    pub limit: Limit,
    /// The percentage crossed (80, 90, 100 by default).
    pub threshold_pct: u8,
    pub severity: AlertSeverity,
    /// Settled usage after the call, in the limit's unit (calls, tokens, nano-USD).
    pub used: u64,
    /// `usage_warning` below 100 %, `limit_reached` at 100 %.
    pub alert_type: &'static str,
    pub title: String,
    pub message: String,
}

impl Crossing {
    pub fn limit_key(&self) -> String {
        self.limit.key.name()
    }

    pub fn provider(&self) -> Option<Provider> {
        self.limit.key.provider()
    }
}

/// The thresholds each limit crossed when its settled usage went from `before(key)` to
/// `after(key)`, in the order of `limits` and then of `thresholds`. A limit with a maximum of 0
/// (a provider not in the plan) never alerts.
pub fn crossings(
    limits: &[Limit],
    before: impl Fn(LimitKey) -> u64,
    after: impl Fn(LimitKey) -> u64,
    thresholds_pct: &[u8],
) -> Vec<Crossing> {
    let mut out = Vec::new();
    for limit in limits {
        if limit.max == 0 {
            continue;
        }
        let (was, now) = (before(limit.key), after(limit.key));
        for &t in thresholds_pct {
            if !reached(was, limit.max, t) && reached(now, limit.max, t) {
                out.push(crossing(*limit, t, now));
            }
        }
    }
    out
}

/// `used ≥ t % of max`, in integers: `used × 100 ≥ t × max`.
fn reached(used: u64, max: u64, threshold_pct: u8) -> bool {
    u128::from(used) * 100 >= u128::from(threshold_pct) * u128::from(max)
}

fn crossing(limit: Limit, threshold_pct: u8, used: u64) -> Crossing {
    let severity = AlertSeverity::for_threshold(threshold_pct);
    let subject = subject(limit.key);
    let heading = match severity {
        AlertSeverity::Info => "Usage Notice",
        AlertSeverity::Warning => "Usage Warning",
        AlertSeverity::Error => "Limit Reached",
    };
    let title = match limit.key.provider() {
        Some(_) => format!("API {heading} - {subject}"),
        None => format!("{heading} - {subject}"),
    };
    let (used_text, max_text) = (amount(limit.key, used), amount(limit.key, limit.max));
    let actual_pct = u128::from(used) * 100 / u128::from(limit.max.max(1));
    let what = limit_phrase(limit.key);
    let message = if threshold_pct >= 100 {
        format!(
            "You have reached your {what} limit of {max_text} for this billing period \
             ({used_text} used)."
        )
    } else {
        format!(
            "You have used {used_text} of {max_text} {what} ({actual_pct}% of your limit; \
             alert threshold {threshold_pct}%)."
        )
    };
    Crossing {
        limit,
        threshold_pct,
        severity,
        used,
        alert_type: if threshold_pct >= 100 {
            "limit_reached"
        } else {
            "usage_warning"
        },
        title,
        message,
    }
}

/// The name in a title: the provider's (`Tavily`) or the plan-wide limit's.
fn subject(key: LimitKey) -> String {
    match key {
        LimitKey::ProviderCalls(p) | LimitKey::ProviderTokens(p) => p.display_name().to_owned(),
        LimitKey::TotalCalls => "Total API Calls".to_owned(),
        LimitKey::TotalTokens => "Total Tokens".to_owned(),
        LimitKey::Cost => "Monthly Cost".to_owned(),
        LimitKey::KeyTokens => "Key Tokens".to_owned(),
        LimitKey::KeyCost => "Key Budget".to_owned(),
        LimitKey::CallsPerMinute(Some(p)) | LimitKey::TokensPerMinute(Some(p)) => {
            format!("{} per Minute", p.display_name())
        }
        LimitKey::CallsPerMinute(None) => "API Calls per Minute".to_owned(),
        LimitKey::TokensPerMinute(None) => "Tokens per Minute".to_owned(),
        LimitKey::KeyCallsPerMinute => "Key Calls per Minute".to_owned(),
        LimitKey::KeyTokensPerMinute => "Key Tokens per Minute".to_owned(),
    }
}

/// The limit in a sentence: `Tavily API calls`, `Gemini tokens`, `monthly cost`.
pub fn limit_phrase(key: LimitKey) -> String {
    match key {
        LimitKey::ProviderCalls(p) => format!("{} API calls", p.display_name()),
        LimitKey::ProviderTokens(p) => format!("{} tokens", p.display_name()),
        LimitKey::TotalCalls => "total API calls".to_owned(),
        LimitKey::TotalTokens => "total tokens".to_owned(),
        LimitKey::Cost => "monthly cost".to_owned(),
        LimitKey::KeyTokens => "key's tokens".to_owned(),
        LimitKey::KeyCost => "key's budget".to_owned(),
        LimitKey::CallsPerMinute(Some(p)) => format!("{} API calls per minute", p.display_name()),
        LimitKey::TokensPerMinute(Some(p)) => format!("{} tokens per minute", p.display_name()),
        LimitKey::CallsPerMinute(None) => "API calls per minute".to_owned(),
        LimitKey::TokensPerMinute(None) => "tokens per minute".to_owned(),
        LimitKey::KeyCallsPerMinute => "key's calls per minute".to_owned(),
        LimitKey::KeyTokensPerMinute => "key's tokens per minute".to_owned(),
    }
}

/// An amount in the limit's unit: `1,000` (calls or tokens), `$1.60`.
pub fn amount(key: LimitKey, value: u64) -> String {
    match key.measure() {
        Measure::Calls | Measure::Tokens => grouped(value),
        Measure::CostNanousd => format!("${}", format_usd(value)),
    }
}

/// `1234567` → `1,234,567`.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEFAULT: [u8; 3] = [80, 90, 100];

    fn tavily(max: u64) -> Limit {
        Limit {
            key: LimitKey::ProviderCalls(Provider::Tavily),
            max,
        }
    }

    #[test]
    fn one_call_crossing_eighty_percent() {
        let c = crossings(&[tavily(20)], |_| 15, |_| 16, &DEFAULT);
        assert_eq!(c.len(), 1);
        let c = &c[0];
        assert_eq!((c.threshold_pct, c.severity), (80, AlertSeverity::Info));
        assert_eq!(c.alert_type, "usage_warning");
        assert_eq!(c.limit_key(), "tavily_calls");
        assert_eq!(c.title, "API Usage Notice - Tavily");
        let openai = crossing(
            Limit {
                key: LimitKey::ProviderCalls(Provider::OpenAi),
                max: 10,
            },
            80,
            8,
        );
        assert_eq!(openai.title, "API Usage Notice - OpenAI");
        assert!(
            openai.message.contains("OpenAI API calls"),
            "{}",
            openai.message
        );
        assert_eq!(
            c.message,
            "You have used 16 of 20 Tavily API calls (80% of your limit; alert threshold 80%)."
        );
    }

    #[test]
    fn a_big_call_crosses_several_thresholds_at_once() {
        let cost = Limit {
            key: LimitKey::Cost,
            max: 2_000_000_000,
        };
        let c = crossings(&[cost], |_| 1_000_000_000, |_| 2_100_000_000, &DEFAULT);
        let got: Vec<_> = c.iter().map(|c| (c.threshold_pct, c.severity)).collect();
        assert_eq!(
            got,
            [
                (80, AlertSeverity::Info),
                (90, AlertSeverity::Warning),
                (100, AlertSeverity::Error)
            ]
        );
        assert_eq!(c[2].title, "Limit Reached - Monthly Cost");
        assert_eq!(c[2].alert_type, "limit_reached");
        assert!(c[2].message.contains("$2.00"), "{}", c[2].message);
        assert!(c[2].message.contains("$2.10 used"), "{}", c[2].message);
    }

    #[test]
    fn nothing_when_no_threshold_is_crossed_or_the_limit_is_zero() {
        assert!(crossings(&[tavily(20)], |_| 16, |_| 17, &DEFAULT).is_empty());
        assert!(crossings(&[tavily(0)], |_| 0, |_| 5, &DEFAULT).is_empty());
        // Already past 100 %: nothing new.
        assert!(crossings(&[tavily(20)], |_| 20, |_| 21, &DEFAULT).is_empty());
    }

    #[test]
    fn big_numbers_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(5_000_000), "5,000,000");
    }

    proptest! {
        /// Splitting usage into calls, in any sizes, crosses each threshold exactly once.
        #[test]
        fn every_threshold_is_crossed_exactly_once(
            max in 1u64..10_000,
            steps in prop::collection::vec(0u64..500, 1..200),
        ) {
            let mut used = 0u64;
            let mut seen: Vec<u8> = Vec::new();
            for step in steps {
                let next = used + step;
                for c in crossings(&[tavily(max)], |_| used, |_| next, &DEFAULT) {
                    prop_assert!(!seen.contains(&c.threshold_pct));
                    seen.push(c.threshold_pct);
                }
                used = next;
            }
            let expected: Vec<u8> = DEFAULT
                .into_iter()
                .filter(|t| reached(used, max, *t))
                .collect();
            prop_assert_eq!(seen, expected);
        }
    }
}
