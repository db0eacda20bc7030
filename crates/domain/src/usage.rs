//! What one call consumed, in the normalized fields every provider's usage is mapped to.

use serde::{Deserialize, Serialize};

/// Normalized usage of one call (see `reference/provider-formats.md` §1.6 for how each provider's
/// raw fields map here). Supersets are explicit so that a bill can never count a token twice:
///
/// - `input_tokens` counts every prompt-side token, including cache reads and cache writes;
///   `cached_input_tokens` (reads) and `cache_creation_input_tokens` (writes) are subsets of it,
///   and `cache_creation_1h_input_tokens` is the subset of the writes kept for an hour.
/// - `output_tokens` counts every billed output token, including reasoning/thinking;
///   `reasoning_tokens` is a subset of it.
/// - `units` counts the call's non-token billing units (credits, searches, pages, images), whose
///   kind the price of the model says.
/// - `reported_cost_nanousd` is a cost the provider itself reported (Exa's `costDollars.total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_creation_1h_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub units: u64,
    pub reported_cost_nanousd: Option<u64>,
}

impl Usage {
    /// Tokens counted against token limits: every input and output token.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// The same usage with every subset clamped to its superset, so that inconsistent numbers
    /// from a provider (cached > input, say) can never make a negative count.
    pub fn clamped(mut self) -> Usage {
        self.cached_input_tokens = self.cached_input_tokens.min(self.input_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .min(self.input_tokens - self.cached_input_tokens);
        self.cache_creation_1h_input_tokens = self
            .cache_creation_1h_input_tokens
            .min(self.cache_creation_input_tokens);
        self.reasoning_tokens = self.reasoning_tokens.min(self.output_tokens);
        self
    }

    /// Field-wise sum, saturating rather than overflowing.
    pub fn saturating_add(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_add(other.cached_input_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .saturating_add(other.cache_creation_input_tokens),
            cache_creation_1h_input_tokens: self
                .cache_creation_1h_input_tokens
                .saturating_add(other.cache_creation_1h_input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(other.reasoning_tokens),
            units: self.units.saturating_add(other.units),
            reported_cost_nanousd: match (self.reported_cost_nanousd, other.reported_cost_nanousd) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamping_keeps_subsets_inside_supersets() {
        let u = Usage {
            input_tokens: 10,
            cached_input_tokens: 8,
            cache_creation_input_tokens: 5,
            cache_creation_1h_input_tokens: 9,
            output_tokens: 3,
            reasoning_tokens: 4,
            ..Usage::default()
        }
        .clamped();
        assert_eq!(u.cached_input_tokens, 8);
        assert_eq!(u.cache_creation_input_tokens, 2);
        assert_eq!(u.cache_creation_1h_input_tokens, 2);
        assert_eq!(u.reasoning_tokens, 3);
        assert_eq!(u.total_tokens(), 13);
    }

    #[test]
    fn sums_saturate() {
        let big = Usage {
            input_tokens: u64::MAX,
            reported_cost_nanousd: Some(5),
            ..Usage::default()
        };
        let s = big.saturating_add(big);
        assert_eq!(s.input_tokens, u64::MAX);
        assert_eq!(s.reported_cost_nanousd, Some(10));
        assert_eq!(
            Usage::default()
                .saturating_add(Usage::default())
                .reported_cost_nanousd,
            None
        );
    }
}
