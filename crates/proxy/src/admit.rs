//! The amount a request reserves: an upper bound on its calls, tokens and cost.

use tollgate_domain::{Amount, ModelPrice, upper_bound_cost};

use crate::request::RequestFacts;

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
}
