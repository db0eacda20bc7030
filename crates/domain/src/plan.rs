//! Subscription plans and the limits they set.
//!
//! A limit that is absent is unlimited. A call limit of `0` means the provider is not part of
//! the plan: calls to it are refused with 403, not counted against a limit of zero.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::admission::{Limit, LimitKey};
use crate::provider::Provider;

/// The seed's four tiers; the admin API reports a plan's tier with these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Basic,
    Pro,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Basic => "basic",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?} (known: free, basic, pro, enterprise)")]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "free" => Ok(Tier::Free),
            "basic" => Ok(Tier::Basic),
            "pro" => Ok(Tier::Pro),
            "enterprise" => Ok(Tier::Enterprise),
            other => Err(UnknownTier(other.to_owned())),
        }
    }
}

/// What a gateway does with a request while its counter store (Redis) cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreachablePolicy {
    /// Refuse with 503; nothing is forwarded.
    #[default]
    FailClosed,
    /// Forward and count; limits are not enforced until the store is back.
    FailOpen,
    /// Each instance enforces with in-process counters seeded from the last values it knew.
    Local,
}

impl UnreachablePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            UnreachablePolicy::FailClosed => "fail_closed",
            UnreachablePolicy::FailOpen => "fail_open",
            UnreachablePolicy::Local => "local",
        }
    }
}

/// A plan's limits on one provider, per billing period and per minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProviderLimits {
    pub calls: Option<u64>,
    /// Only meaningful for token-billed providers.
    pub tokens: Option<u64>,
    pub calls_per_minute: Option<u64>,
    /// Only meaningful for token-billed providers.
    pub tokens_per_minute: Option<u64>,
}

/// A subscription plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The key in `gateway.toml` (`free`, `pro`): stable, used to assign users to plans.
    pub id: String,
    pub name: String,
    pub tier: Tier,
    pub price_monthly_nanousd: u64,
    pub price_yearly_nanousd: u64,
    pub description: String,
    pub features: Vec<String>,
    /// Providers without an entry have no per-provider limits.
    pub providers: BTreeMap<Provider, ProviderLimits>,
    pub cost_cap_nanousd: Option<u64>,
    pub total_calls: Option<u64>,
    pub total_tokens: Option<u64>,
    /// Calls to all providers together in one minute.
    pub calls_per_minute: Option<u64>,
    /// Tokens of all providers together in one minute.
    pub tokens_per_minute: Option<u64>,
    /// Overrides the gateway-wide policy for this plan's users.
    pub on_counter_store_unreachable: Option<UnreachablePolicy>,
    /// What admission does with an LLM call whose upper bound does not fit what is left of a
    /// token budget or cost cap.
    pub on_short_budget: ShortBudget,
    /// The least output a call clamped to what is left must still be allowed; below it the call
    /// is refused.
    pub min_output_tokens: u64,
}

/// What admission does with an LLM call whose upper bound does not fit what is left of a token
/// budget or cost cap, when a smaller output cap would fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ShortBudget {
    /// Admit it with its output cap rewritten to the largest that fits (the client is told).
    #[default]
    Clamp,
    /// Refuse it (429), as for any other limit.
    Refuse,
}

impl ShortBudget {
    pub fn as_str(self) -> &'static str {
        match self {
            ShortBudget::Clamp => "clamp",
            ShortBudget::Refuse => "refuse",
        }
    }
}

/// The least output a clamped call is allowed by default: enough for a short answer.
pub const DEFAULT_MIN_OUTPUT_TOKENS: u64 = 256;

/// The provider is not part of the plan (its call limit is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{provider} is not included in plan {plan}")]
pub struct NotInPlan<'a> {
    pub provider: Provider,
    pub plan: &'a str,
}

impl Plan {
    pub fn provider_limits(&self, provider: Provider) -> ProviderLimits {
        self.providers.get(&provider).copied().unwrap_or_default()
    }

    pub fn includes(&self, provider: Provider) -> bool {
        self.provider_limits(provider).calls != Some(0)
    }

    /// Every limit a call to `provider` counts against, in the order a refusal names them:
    /// the provider's calls and tokens, then the plan's total calls, total tokens and cost, then
    /// the per-minute limits (the provider's, then the plan-wide ones). The period's limits come
    /// first so that a call that would exceed both is told the one waiting a minute does not
    /// lift.
    pub fn limits_for(&self, provider: Provider) -> Result<Vec<Limit>, NotInPlan<'_>> {
        if !self.includes(provider) {
            return Err(NotInPlan {
                provider,
                plan: &self.id,
            });
        }
        let own = self.provider_limits(provider);
        let candidates = [
            (LimitKey::ProviderCalls(provider), own.calls),
            (
                LimitKey::ProviderTokens(provider),
                own.tokens.filter(|_| provider.is_token_billed()),
            ),
            (LimitKey::TotalCalls, self.total_calls),
            (LimitKey::TotalTokens, self.total_tokens),
            (LimitKey::Cost, self.cost_cap_nanousd),
            (
                LimitKey::CallsPerMinute(Some(provider)),
                own.calls_per_minute,
            ),
            (
                LimitKey::TokensPerMinute(Some(provider)),
                own.tokens_per_minute.filter(|_| provider.is_token_billed()),
            ),
            (LimitKey::CallsPerMinute(None), self.calls_per_minute),
            (LimitKey::TokensPerMinute(None), self.tokens_per_minute),
        ];
        Ok(candidates
            .into_iter()
            .filter_map(|(key, max)| max.map(|max| Limit { key, max }))
            .collect())
    }

    /// Every per-minute limit the plan sets: each provider's, then the plan-wide ones.
    pub fn minute_limits(&self) -> Vec<Limit> {
        let per_provider = Provider::ALL.into_iter().flat_map(|p| {
            let own = self.provider_limits(p);
            [
                (LimitKey::CallsPerMinute(Some(p)), own.calls_per_minute),
                (LimitKey::TokensPerMinute(Some(p)), own.tokens_per_minute),
            ]
        });
        per_provider
            .chain([
                (LimitKey::CallsPerMinute(None), self.calls_per_minute),
                (LimitKey::TokensPerMinute(None), self.tokens_per_minute),
            ])
            .filter_map(|(key, max)| max.map(|max| Limit { key, max }))
            .collect()
    }

    /// Every limit the plan sets per billing period, for dashboards and alerts (per-minute
    /// limits are in [`Plan::limits_for`] only: a window that resets every minute is not worth an
    /// alert).
    pub fn all_limits(&self) -> Vec<Limit> {
        let mut limits = Vec::new();
        for provider in Provider::ALL {
            if let Ok(for_provider) = self.limits_for(provider) {
                limits.extend(for_provider.into_iter().filter(|l| {
                    matches!(
                        l.key,
                        LimitKey::ProviderCalls(_) | LimitKey::ProviderTokens(_)
                    )
                }));
            }
        }
        let plan_wide = [
            (LimitKey::TotalCalls, self.total_calls),
            (LimitKey::TotalTokens, self.total_tokens),
            (LimitKey::Cost, self.cost_cap_nanousd),
        ];
        limits.extend(
            plan_wide
                .into_iter()
                .filter_map(|(key, max)| max.map(|max| Limit { key, max })),
        );
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn free_plan() -> Plan {
        Plan {
            id: "free".into(),
            name: "Free".into(),
            tier: Tier::Free,
            price_monthly_nanousd: 0,
            price_yearly_nanousd: 0,
            description: String::new(),
            features: vec![],
            providers: [
                (
                    Provider::Gemini,
                    ProviderLimits {
                        calls: Some(100),
                        tokens: Some(100_000),
                        ..ProviderLimits::default()
                    },
                ),
                (
                    Provider::OpenAi,
                    ProviderLimits {
                        calls: Some(0),
                        tokens: None,
                        ..ProviderLimits::default()
                    },
                ),
                (
                    Provider::Tavily,
                    ProviderLimits {
                        calls: Some(20),
                        tokens: Some(5),
                        ..ProviderLimits::default()
                    },
                ),
            ]
            .into(),
            cost_cap_nanousd: Some(2_000_000_000),
            total_calls: None,
            total_tokens: Some(1_000_000),
            calls_per_minute: None,
            tokens_per_minute: None,
            on_counter_store_unreachable: None,
            on_short_budget: ShortBudget::Clamp,
            min_output_tokens: DEFAULT_MIN_OUTPUT_TOKENS,
        }
    }

    #[test]
    fn zero_calls_excludes_and_absent_is_unlimited() {
        let plan = free_plan();
        assert!(!plan.includes(Provider::OpenAi));
        assert!(plan.limits_for(Provider::OpenAi).is_err());
        // Anthropic has no entry: included, limited only by the plan-wide limits.
        let keys: Vec<_> = plan
            .limits_for(Provider::Anthropic)
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(keys, [LimitKey::TotalTokens, LimitKey::Cost]);
    }

    #[test]
    fn token_limits_apply_only_to_token_billed_providers() {
        let plan = free_plan();
        let keys: Vec<_> = plan
            .limits_for(Provider::Tavily)
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(
            keys,
            [
                LimitKey::ProviderCalls(Provider::Tavily),
                LimitKey::TotalTokens,
                LimitKey::Cost
            ]
        );
        let gemini: Vec<_> = plan.limits_for(Provider::Gemini).unwrap();
        assert_eq!(gemini.len(), 4);
        assert_eq!(plan.all_limits().len(), 2 + 1 + 2);
    }
}
