//! The cost of a call: its normalized usage priced at a model's rates, in integer nano-USD.
//!
//! Every component is summed exactly in femto-USD and rounded once by [`round_div`]. Summing the
//! costs of many calls therefore differs from pricing their summed usage by at most half a
//! nano-USD per call (plus half for the sum), and for calls whose prompts stay inside one
//! context tier that is the only difference.

use serde::{Deserialize, Serialize};

use crate::money::{FEMTOUSD_PER_NANOUSD, round_div};
use crate::price::{ModelPrice, TokenRates};
use crate::usage::Usage;

/// A call's cost. `total_nanousd` is authoritative; the parts are rounded cumulatively (input,
/// then input + output, then everything) so that they always add up to it exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cost {
    pub input_nanousd: u64,
    pub output_nanousd: u64,
    /// Per-request, per-unit and provider-reported amounts.
    pub other_nanousd: u64,
    pub total_nanousd: u64,
}

/// Prices `usage` at `price`. Subsets larger than their supersets are clamped first, so
/// inconsistent provider numbers never bill a token twice or go negative; amounts beyond
/// `u64::MAX` nano-USD saturate.
pub fn cost(price: &ModelPrice, usage: &Usage) -> Cost {
    let usage = usage.clamped();
    let (input_femto, output_femto) = match price.token_rates_for(usage.input_tokens) {
        Some(rates) => token_femto(rates, &usage),
        None => (0, 0),
    };
    let other_femto = match (price.reported_cost, usage.reported_cost_nanousd) {
        // The provider's own figure replaces our per-call tariff, never adds to it.
        (true, Some(reported)) => u128::from(reported) * FEMTOUSD_PER_NANOUSD,
        _ => {
            price.per_request.map_or(0, |rate| rate.times(1))
                + price.per_unit.map_or(0, |u| u.rate.times(usage.units))
        }
    };
    parts(input_femto, output_femto, other_femto)
}

/// The most a call can cost given at most `input_tokens` in and `output_tokens` out and
/// `units` non-token units: every token at the highest rate it could be billed at (a cache
/// write costs more than plain input), in the context tier those input tokens select. Its parts
/// are rounded as [`cost`]'s are.
pub fn upper_bound(price: &ModelPrice, input_tokens: u64, output_tokens: u64, units: u64) -> Cost {
    let (input_femto, output_femto) = price.token_rates_for(input_tokens).map_or((0, 0), |rates| {
        (
            rates.max_input().times(input_tokens),
            rates.max_output().times(output_tokens),
        )
    });
    let other_femto = price.per_request.map_or(0, |rate| rate.times(1))
        + price.per_unit.map_or(0, |u| u.rate.times(units));
    parts(input_femto, output_femto, other_femto)
}

/// The total of [`upper_bound`]: what admission reserves.
pub fn upper_bound_cost(
    price: &ModelPrice,
    input_tokens: u64,
    output_tokens: u64,
    units: u64,
) -> u64 {
    upper_bound(price, input_tokens, output_tokens, units).total_nanousd
}

/// Femto-USD parts as a [`Cost`], rounded cumulatively so that they add up to the total.
fn parts(input_femto: u128, output_femto: u128, other_femto: u128) -> Cost {
    let input = to_nanousd(input_femto);
    let input_and_output = to_nanousd(input_femto + output_femto);
    let total = to_nanousd(input_femto + output_femto + other_femto);
    Cost {
        input_nanousd: input,
        output_nanousd: input_and_output - input,
        other_nanousd: total - input_and_output,
        total_nanousd: total,
    }
}

fn token_femto(rates: &TokenRates, usage: &Usage) -> (u128, u128) {
    let cache_write_1h = usage.cache_creation_1h_input_tokens;
    let cache_write_5m = usage.cache_creation_input_tokens - cache_write_1h;
    let uncached =
        usage.input_tokens - usage.cached_input_tokens - usage.cache_creation_input_tokens;
    let input = rates.input.times(uncached)
        + rates.cached_input().times(usage.cached_input_tokens)
        + rates.cache_write().times(cache_write_5m)
        + rates.cache_write_1h().times(cache_write_1h);
    let plain_output = usage.output_tokens - usage.reasoning_tokens;
    let output = rates.output.times(plain_output) + rates.reasoning().times(usage.reasoning_tokens);
    (input, output)
}

fn to_nanousd(femto: u128) -> u64 {
    u64::try_from(round_div(femto, FEMTOUSD_PER_NANOUSD)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Rate;
    use crate::price::{ContextTier, UnitKind, UnitRate};
    use chrono::NaiveDate;
    use proptest::prelude::*;

    fn per_m(text: &str) -> Rate {
        Rate::per_million_from_decimal(text).unwrap()
    }

    fn model(tokens: TokenRates) -> ModelPrice {
        ModelPrice {
            tokens: Some(tokens),
            tiers: vec![],
            per_request: None,
            per_unit: None,
            reported_cost: false,
            max_output_tokens: None,
            context_window: None,
            bound: None,
            max_per_call: None,
            source: "test".into(),
            effective: NaiveDate::from_ymd_opt(2026, 8, 21).unwrap(),
        }
    }

    #[test]
    fn gpt_4o_with_cached_prompt() {
        // $2.50 in, $1.25 cached in, $10.00 out per million tokens.
        let gpt_4o = model(TokenRates {
            input: per_m("2.50"),
            cached_input: Some(per_m("1.25")),
            output: per_m("10.00"),
            ..TokenRates::default()
        });
        let usage = Usage {
            input_tokens: 1_337,
            cached_input_tokens: 1_152,
            output_tokens: 211,
            ..Usage::default()
        };
        // 185 uncached × 2.50/M = 462,500 nano; 1,152 cached × 1.25/M = 1,440,000 nano;
        // 211 out × 10.00/M = 2,110,000 nano. Total 4,012,500 nano-USD = $0.0040125.
        let c = cost(&gpt_4o, &usage);
        assert_eq!(c.input_nanousd, 462_500 + 1_440_000);
        assert_eq!(c.output_nanousd, 2_110_000);
        assert_eq!(c.total_nanousd, 4_012_500);
    }

    #[test]
    fn claude_sonnet_4_with_cache_writes_and_reads() {
        // $3.00 in, $0.30 cache read, $3.75 5-minute write, $6.00 1-hour write, $15.00 out.
        let sonnet = model(TokenRates {
            input: per_m("3.00"),
            cached_input: Some(per_m("0.30")),
            cache_write: Some(per_m("3.75")),
            cache_write_1h: Some(per_m("6.00")),
            output: per_m("15.00"),
            reasoning: None,
        });
        // Anthropic reports input_tokens=1,000 (uncached), cache_creation_input_tokens=3,000
        // (2,000 for 5 minutes, 1,000 for an hour), cache_read_input_tokens=5,000; normalized
        // input is their sum, 9,000.
        let usage = Usage {
            input_tokens: 9_000,
            cached_input_tokens: 5_000,
            cache_creation_input_tokens: 3_000,
            cache_creation_1h_input_tokens: 1_000,
            output_tokens: 500,
            ..Usage::default()
        };
        // 1,000 × 3.00/M = 3,000,000; 5,000 × 0.30/M = 1,500,000; 2,000 × 3.75/M = 7,500,000;
        // 1,000 × 6.00/M = 6,000,000; 500 × 15.00/M = 7,500,000 → 25,500,000 nano-USD.
        let c = cost(&sonnet, &usage);
        assert_eq!(c.input_nanousd, 18_000_000);
        assert_eq!(c.output_nanousd, 7_500_000);
        assert_eq!(c.total_nanousd, 25_500_000);
    }

    #[test]
    fn gemini_2_5_pro_above_200k_prompt_tokens() {
        let mut pro = model(TokenRates {
            input: per_m("1.25"),
            cached_input: Some(per_m("0.125")),
            output: per_m("10.00"),
            ..TokenRates::default()
        });
        pro.tiers.push(ContextTier {
            above_input_tokens: 200_000,
            rates: TokenRates {
                input: per_m("2.50"),
                cached_input: Some(per_m("0.25")),
                output: per_m("15.00"),
                ..TokenRates::default()
            },
        });
        // promptTokenCount 250,000 (50,000 of them cached), candidates 2,500 + thoughts 1,500.
        let usage = Usage {
            input_tokens: 250_000,
            cached_input_tokens: 50_000,
            output_tokens: 4_000,
            reasoning_tokens: 1_500,
            ..Usage::default()
        };
        // The whole call is priced in the upper tier: 200,000 × 2.50/M = 500,000,000;
        // 50,000 × 0.25/M = 12,500,000; 4,000 × 15.00/M = 60,000,000 → 572,500,000 nano-USD.
        assert_eq!(cost(&pro, &usage).total_nanousd, 572_500_000);
        // At exactly 200,000 prompt tokens the base rates apply.
        let at_threshold = Usage {
            input_tokens: 200_000,
            output_tokens: 1_000,
            ..Usage::default()
        };
        // 200,000 × 1.25/M = 250,000,000; 1,000 × 10.00/M = 10,000,000.
        assert_eq!(cost(&pro, &at_threshold).total_nanousd, 260_000_000);
    }

    #[test]
    fn rounding_happens_once_half_up() {
        // $0.01875/M cache reads are 18.75 nano-USD a token.
        let lite = model(TokenRates {
            input: per_m("0.075"),
            cached_input: Some(per_m("0.01875")),
            output: per_m("0.30"),
            ..TokenRates::default()
        });
        let cached = |n| Usage {
            input_tokens: n,
            cached_input_tokens: n,
            ..Usage::default()
        };
        assert_eq!(cost(&lite, &cached(1)).total_nanousd, 19);
        assert_eq!(cost(&lite, &cached(3)).total_nanousd, 56);
        assert_eq!(cost(&lite, &cached(4)).total_nanousd, 75);
        // Half a nano-USD rounds up; just below half rounds down.
        let mut tiny = lite.clone();
        tiny.tokens = Some(TokenRates {
            input: Rate::from_femtousd_per_unit(500_000),
            output: Rate::from_femtousd_per_unit(499_999),
            ..TokenRates::default()
        });
        let one_in = Usage {
            input_tokens: 1,
            ..Usage::default()
        };
        let one_out = Usage {
            output_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(cost(&tiny, &one_in).total_nanousd, 1);
        assert_eq!(cost(&tiny, &one_out).total_nanousd, 0);
    }

    #[test]
    fn per_unit_and_reported_costs() {
        let mut tavily = model(TokenRates::default());
        tavily.tokens = None;
        tavily.per_unit = Some(UnitRate {
            unit: UnitKind::Credit,
            rate: Rate::per_unit_from_decimal("0.008").unwrap(),
        });
        let two_credits = Usage {
            units: 2,
            ..Usage::default()
        };
        assert_eq!(cost(&tavily, &two_credits).total_nanousd, 16_000_000);
        assert_eq!(cost(&tavily, &two_credits).other_nanousd, 16_000_000);

        let mut exa = tavily.clone();
        exa.per_unit = None;
        exa.per_request = Some(Rate::per_unit_from_decimal("0.007").unwrap());
        exa.reported_cost = true;
        let reported = Usage {
            reported_cost_nanousd: Some(5_000_000),
            ..Usage::default()
        };
        assert_eq!(cost(&exa, &reported).total_nanousd, 5_000_000);
        // No figure in the response: the per-request tariff.
        assert_eq!(cost(&exa, &Usage::default()).total_nanousd, 7_000_000);
    }

    #[test]
    fn upper_bound_prices_input_at_the_cache_write_rate() {
        let sonnet = model(TokenRates {
            input: per_m("3.00"),
            cached_input: Some(per_m("0.30")),
            cache_write: Some(per_m("3.75")),
            cache_write_1h: Some(per_m("6.00")),
            output: per_m("15.00"),
            reasoning: None,
        });
        // 1,000 × 6.00/M + 100 × 15.00/M = 6,000,000 + 1,500,000.
        assert_eq!(upper_bound_cost(&sonnet, 1_000, 100, 0), 7_500_000);
        let bound = upper_bound(&sonnet, 1_000, 100, 0);
        assert_eq!(
            (
                bound.input_nanousd,
                bound.output_nanousd,
                bound.other_nanousd
            ),
            (6_000_000, 1_500_000, 0)
        );
    }

    fn flat_price() -> impl Strategy<Value = ModelPrice> {
        (
            1u64..100_000_000_000,
            1u64..100_000_000_000,
            0u64..10_000_000_000_000,
        )
            .prop_map(|(input, output, unit)| {
                let mut p = model(TokenRates {
                    input: Rate::from_femtousd_per_unit(input),
                    cached_input: Some(Rate::from_femtousd_per_unit(input / 10)),
                    cache_write: Some(Rate::from_femtousd_per_unit(input + input / 4)),
                    cache_write_1h: Some(Rate::from_femtousd_per_unit(input * 2)),
                    output: Rate::from_femtousd_per_unit(output),
                    reasoning: None,
                });
                p.per_unit = Some(UnitRate {
                    unit: UnitKind::Credit,
                    rate: Rate::from_femtousd_per_unit(unit),
                });
                p
            })
    }

    fn consistent_usage() -> impl Strategy<Value = Usage> {
        (0u64..2_000_000, 0u64..100_000, 0u64..20)
            .prop_flat_map(|(input, output, units)| {
                (
                    Just(input),
                    0..=input,
                    Just(output),
                    0..=output,
                    Just(units),
                )
            })
            .prop_flat_map(|(input, cached, output, reasoning, units)| {
                let rest = input - cached;
                (Just((input, cached, output, reasoning, units)), 0..=rest)
            })
            .prop_flat_map(|(t, writes)| (Just(t), Just(writes), 0..=writes))
            .prop_map(
                |((input, cached, output, reasoning, units), writes, writes_1h)| Usage {
                    input_tokens: input,
                    cached_input_tokens: cached,
                    cache_creation_input_tokens: writes,
                    cache_creation_1h_input_tokens: writes_1h,
                    output_tokens: output,
                    reasoning_tokens: reasoning,
                    units,
                    reported_cost_nanousd: None,
                },
            )
    }

    proptest! {
        #[test]
        fn summed_costs_match_cost_of_summed_usage(
            price in flat_price(),
            calls in prop::collection::vec(consistent_usage(), 1..60),
        ) {
            let sum_of_costs: u64 = calls.iter().map(|u| cost(&price, u).total_nanousd).sum();
            let summed = calls.iter().fold(Usage::default(), |acc, u| acc.saturating_add(*u));
            let cost_of_sum = cost(&price, &summed).total_nanousd;
            // Each rounding is off by at most half a nano-USD: n calls plus the sum.
            let bound = (calls.len() as u64 + 1).div_ceil(2);
            prop_assert!(
                sum_of_costs.abs_diff(cost_of_sum) <= bound,
                "{sum_of_costs} vs {cost_of_sum}, bound {bound}"
            );
        }

        #[test]
        fn cost_parts_add_up_and_never_overflow(
            price in flat_price(),
            usage in any::<(u64, u64, u64, u64, u64, u64, u64)>(),
        ) {
            let (input, cached, writes, writes_1h, output, reasoning, units) = usage;
            let usage = Usage {
                input_tokens: input,
                cached_input_tokens: cached,
                cache_creation_input_tokens: writes,
                cache_creation_1h_input_tokens: writes_1h,
                output_tokens: output,
                reasoning_tokens: reasoning,
                units,
                reported_cost_nanousd: None,
            };
            let c = cost(&price, &usage);
            prop_assert_eq!(
                u128::from(c.input_nanousd) + u128::from(c.output_nanousd) + u128::from(c.other_nanousd),
                u128::from(c.total_nanousd)
            );
            prop_assert!(upper_bound_cost(&price, input, output, units) >= c.total_nanousd
                || c.total_nanousd == u64::MAX);
        }
    }
}
