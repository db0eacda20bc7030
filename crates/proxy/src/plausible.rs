//! Plausible usage: a provider's usage report is billed as reported only if some call could
//! have used it.
//!
//! A report is implausible when a token count in it is not a count at all (negative, fractional,
//! beyond `u64`: the scanner keeps its text as `unreadable_count`), when a token-billed call's
//! input and output add up to more than [`SLACK`] times what its model can take and produce in
//! one call (context window + maximum output, from `pricing/`; [`UNKNOWN_CONTEXT_WINDOW`] and
//! [`UNKNOWN_MAX_OUTPUT_TOKENS`] where its price gives neither), when a call reports more than
//! [`MAX_UNITS`] billing units, or when an amount is beyond `i64`, which no ledger column or
//! Redis counter holds. Settlement bills such a call at the bound its reservation held
//! (`admission::reservation_bound`), marks it estimated and records what the provider reported.
//!
//! The slack is generous on purpose: the rule is there to catch numbers that are off by orders of
//! magnitude (`u64::MAX`, `9e12` tokens on a 128k model), not to second-guess a provider's count.
//! One call can legitimately bill more than one context window: the Responses API's built-in
//! tools and Anthropic's server tools run several model turns under one usage object.

use tollgate_domain::{ModelPrice, Usage};

/// How many times its model's context window plus maximum output a call may report.
pub const SLACK: u64 = 10;
/// The context window assumed for a model whose price gives none: the largest any model offers
/// (Llama 4 Scout's ten million tokens).
pub const UNKNOWN_CONTEXT_WINDOW: u64 = 10_000_000;
/// The maximum output assumed for a model whose price gives none: the largest in `pricing/`.
pub const UNKNOWN_MAX_OUTPUT_TOKENS: u64 = 262_144;
/// The most billing units (credits, searches, pages, images) one call may report: far beyond any
/// crawl, search or image batch a single request or job status can bill.
pub const MAX_UNITS: u64 = 10_000_000;

/// The most tokens a call to a model priced at `price` can plausibly report.
pub fn max_tokens(price: Option<&ModelPrice>) -> u64 {
    let window = price
        .and_then(|p| p.context_window)
        .unwrap_or(UNKNOWN_CONTEXT_WINDOW);
    let output = price
        .and_then(|p| p.max_output_tokens)
        .unwrap_or(UNKNOWN_MAX_OUTPUT_TOKENS);
    window.saturating_add(output).saturating_mul(SLACK)
}

/// Why a reported usage cannot be billed as reported, as what the provider "reported …", for the
/// usage event's error message; `None` when it can. `unreadable_count` is the scanner's
/// (`field = text`); `model` and `price` are what the call is priced as; `token_billed` is the
/// provider's.
pub fn implausible(
    usage: &Usage,
    unreadable_count: Option<&str>,
    model: &str,
    price: Option<&ModelPrice>,
    token_billed: bool,
) -> Option<String> {
    if let Some(reported) = unreadable_count {
        return Some(format!("reported {reported}, which is not a token count"));
    }
    if token_billed {
        let max = max_tokens(price);
        if usage.total_tokens() > max {
            return Some(format!(
                "reported {} input + {} output tokens, more than {model} can use in one call (at \
                 most {max})",
                usage.input_tokens, usage.output_tokens
            ));
        }
    }
    if usage.units > MAX_UNITS {
        return Some(format!(
            "reported {} units, more than one call can use (at most {MAX_UNITS})",
            usage.units
        ));
    }
    let beyond_i64 = |n: u64| i64::try_from(n).is_err();
    match usage.reported_cost_nanousd {
        Some(cost) if beyond_i64(cost) => Some(format!(
            "reported a cost of {cost} nano-USD, beyond what can be counted"
        )),
        _ if beyond_i64(usage.total_tokens()) => Some(format!(
            "reported {} input + {} output tokens, beyond what can be counted",
            usage.input_tokens, usage.output_tokens
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use tollgate_domain::{Rate, TokenRates};

    /// gpt-4o's limits: a 128,000-token window and 16,384 tokens out.
    fn gpt_4o() -> ModelPrice {
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
            max_output_tokens: Some(16_384),
            context_window: Some(128_000),
            bound: None,
            max_per_call: None,
            source: "test".into(),
            effective: NaiveDate::default(),
        }
    }

    fn tokens(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    #[test]
    fn tokens_beyond_the_model_with_slack_are_implausible() {
        let price = gpt_4o();
        let max = 10 * (128_000 + 16_384);
        assert_eq!(max_tokens(Some(&price)), max);
        let check = |usage: Usage| implausible(&usage, None, "gpt-4o", Some(&price), true);
        // A full window and a full output, and several turns' worth of them, are billed.
        assert_eq!(check(tokens(128_000, 16_384)), None);
        assert_eq!(check(tokens(max - 1, 1)), None);
        assert_eq!(
            check(tokens(max, 1)).as_deref(),
            Some(
                "reported 1443840 input + 1 output tokens, more than gpt-4o can use in one call (at most 1443840)"
            )
        );
        for input in [9_000_000_000_000, i64::MAX as u64, u64::MAX] {
            let why = check(tokens(input, 10)).unwrap();
            assert!(
                why.starts_with(&format!("reported {input} input + 10 output")),
                "{why}"
            );
        }
        // The output side counts as much as the input side.
        assert!(check(tokens(19, 9_000_000_000_000)).is_some());
    }

    #[test]
    fn a_model_without_limits_gets_the_generous_default() {
        let max = 10 * (10_000_000 + 262_144);
        assert_eq!(max_tokens(None), max);
        let mut no_limits = gpt_4o();
        no_limits.context_window = None;
        no_limits.max_output_tokens = None;
        assert_eq!(max_tokens(Some(&no_limits)), max);
        assert_eq!(implausible(&tokens(max, 0), None, "m", None, true), None);
        assert!(implausible(&tokens(max + 1, 0), None, "m", None, true).is_some());
    }

    #[test]
    fn a_count_that_is_not_one_is_implausible_whatever_the_rest() {
        let why = implausible(
            &tokens(0, 10),
            Some("prompt_tokens = 1e30"),
            "gpt-4o",
            Some(&gpt_4o()),
            true,
        );
        assert_eq!(
            why.as_deref(),
            Some("reported prompt_tokens = 1e30, which is not a token count")
        );
    }

    #[test]
    fn per_call_units_and_costs_are_bounded_too() {
        let units = |n: u64| Usage {
            units: n,
            ..Usage::default()
        };
        assert_eq!(implausible(&units(250), None, "crawl", None, false), None);
        assert_eq!(
            implausible(&units(MAX_UNITS), None, "crawl", None, false),
            None
        );
        let why = implausible(&units(MAX_UNITS + 1), None, "crawl", None, false).unwrap();
        assert!(why.starts_with("reported 10000001 units"), "{why}");
        // A per-call provider's tokens are not bounded by a model, but must still be countable.
        assert_eq!(
            implausible(&tokens(1_000_000_000, 0), None, "search", None, false),
            None
        );
        assert!(implausible(&tokens(u64::MAX, 0), None, "search", None, false).is_some());
        let cost = Usage {
            units: 1,
            reported_cost_nanousd: Some(u64::MAX),
            ..Usage::default()
        };
        let why = implausible(&cost, None, "search", None, false).unwrap();
        assert!(why.contains("18446744073709551615 nano-USD"), "{why}");
    }
}
