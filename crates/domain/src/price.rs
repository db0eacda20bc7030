//! Prices: what a model or endpoint of a provider costs, and the book that finds it by name.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::bound::{CallBound, MaxPerCall};
use crate::money::Rate;
use crate::provider::Provider;

/// Per-token rates. Optional rates fall back as providers bill them: cached input at the input
/// rate, a cache write at the input rate, a one-hour cache write at the (5-minute) write rate,
/// reasoning at the output rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenRates {
    pub input: Rate,
    pub cached_input: Option<Rate>,
    pub cache_write: Option<Rate>,
    pub cache_write_1h: Option<Rate>,
    pub output: Rate,
    pub reasoning: Option<Rate>,
}

impl TokenRates {
    pub fn cached_input(&self) -> Rate {
        self.cached_input.unwrap_or(self.input)
    }
    pub fn cache_write(&self) -> Rate {
        self.cache_write.unwrap_or(self.input)
    }
    pub fn cache_write_1h(&self) -> Rate {
        self.cache_write_1h.unwrap_or_else(|| self.cache_write())
    }
    pub fn reasoning(&self) -> Rate {
        self.reasoning.unwrap_or(self.output)
    }
    /// The highest rate any input token can be billed at (cache writes cost more than input).
    pub fn max_input(&self) -> Rate {
        self.input
            .max(self.cached_input())
            .max(self.cache_write())
            .max(self.cache_write_1h())
    }
    /// The highest rate any output token can be billed at.
    pub fn max_output(&self) -> Rate {
        self.output.max(self.reasoning())
    }
}

/// Rates that replace the base rates for a whole call once its prompt exceeds a size, as Gemini
/// 2.5 Pro and Claude Sonnet 4 price prompts above 200k tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextTier {
    /// The tier applies when `input_tokens` is strictly greater than this.
    pub above_input_tokens: u64,
    pub rates: TokenRates,
}

/// What a non-token billing unit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    Search,
    Credit,
    Page,
    Image,
}

impl UnitKind {
    pub const ALL: [UnitKind; 4] = [
        UnitKind::Search,
        UnitKind::Credit,
        UnitKind::Page,
        UnitKind::Image,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Search => "search",
            UnitKind::Credit => "credit",
            UnitKind::Page => "page",
            UnitKind::Image => "image",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitRate {
    pub unit: UnitKind,
    pub rate: Rate,
}

/// The price of one model (or, for per-call providers, one endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    pub tokens: Option<TokenRates>,
    /// Sorted by `above_input_tokens`, ascending.
    pub tiers: Vec<ContextTier>,
    pub per_request: Option<Rate>,
    pub per_unit: Option<UnitRate>,
    /// Bill the cost the provider reports in the response (Exa's `costDollars.total`) instead
    /// of `per_request`/`per_unit`, when the response carries one.
    pub reported_cost: bool,
    /// The most output tokens one call can produce, used to bound a reservation when the request
    /// sets no maximum.
    pub max_output_tokens: Option<u64>,
    pub context_window: Option<u64>,
    /// The provider's rule for the most one call can cost, from its request (`bound`).
    pub bound: Option<CallBound>,
    /// The most one call is taken to cost where the request does not bound the charge.
    pub max_per_call: Option<MaxPerCall>,
    /// Where the numbers come from (a URL, a file at a commit).
    pub source: String,
    /// The date the price took effect.
    pub effective: NaiveDate,
}

impl ModelPrice {
    /// The token rates that apply to a call with this many input tokens.
    pub fn token_rates_for(&self, input_tokens: u64) -> Option<&TokenRates> {
        self.tiers
            .iter()
            .rev()
            .find(|tier| input_tokens > tier.above_input_tokens)
            .map(|tier| &tier.rates)
            .or(self.tokens.as_ref())
    }
}

/// The prices of one provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderPrices {
    pub models: BTreeMap<String, ModelPrice>,
    /// Other names for a model (`gpt-4o-2024-08-06` → `gpt-4o`), lower-case.
    pub aliases: BTreeMap<String, String>,
    /// The price of any model or endpoint not listed (the `"*"` entry); per-call providers use it.
    pub fallback: Option<ModelPrice>,
}

/// A price found for a call, with the name it was found under.
#[derive(Clone, Copy, Debug)]
pub struct PriceMatch<'a> {
    pub provider: Provider,
    /// The priced model's canonical name, or `*` for the fallback.
    pub model: &'a str,
    pub price: &'a ModelPrice,
}

impl PriceMatch<'_> {
    /// A short label of the exact price used, recorded with each usage event so that a bill can
    /// be explained after prices change: `openai/gpt-4o@2024-05-13`.
    pub fn version(&self) -> String {
        format!("{}/{}@{}", self.provider, self.model, self.price.effective)
    }
}

/// Every provider's prices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceBook {
    pub providers: BTreeMap<Provider, ProviderPrices>,
}

impl PriceBook {
    /// Finds the price of `model` for `provider`: by exact name, by alias, without a `models/`
    /// or provider prefix, without a snapshot date suffix (`-2024-08-06`, `-20250514`), and
    /// finally the provider's fallback entry.
    pub fn lookup<'a>(&'a self, provider: Provider, model: &str) -> Option<PriceMatch<'a>> {
        let prices = self.providers.get(&provider)?;
        let found = |name: &str| {
            prices
                .models
                .get_key_value(name)
                .or_else(|| {
                    let target = prices.aliases.get(name)?;
                    prices.models.get_key_value(target.as_str())
                })
                .map(|(name, price)| PriceMatch {
                    provider,
                    model: name.as_str(),
                    price,
                })
        };
        let trimmed = model.trim();
        // Model names are nearly always lower-case already: no copy for them.
        let lower: std::borrow::Cow<'_, str> = if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            trimmed.to_ascii_lowercase().into()
        } else {
            trimmed.into()
        };
        let mut name = lower.as_ref();
        name = name.strip_prefix("models/").unwrap_or(name);
        name = name
            .strip_prefix(provider.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(name);
        found(name)
            .or_else(|| strip_date_suffix(name).and_then(found))
            .or_else(|| {
                prices.fallback.as_ref().map(|price| PriceMatch {
                    provider,
                    model: "*",
                    price,
                })
            })
    }
}

/// `gpt-4o-2024-08-06` → `gpt-4o`; `claude-sonnet-4-20250514` → `claude-sonnet-4`.
fn strip_date_suffix(name: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (head, last) = name.rsplit_once('-')?;
    if last.len() == 8 && digits(last) {
        return Some(head);
    }
    // -YYYY-MM-DD
    let (head2, month) = head.rsplit_once('-')?;
    let (head3, year) = head2.rsplit_once('-')?;
    if year.len() == 4 && month.len() == 2 && last.len() == 2 && digits(year) && digits(month) {
        return Some(head3);
    }
    None
}

impl fmt::Display for UnitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: u64) -> ModelPrice {
        ModelPrice {
            tokens: Some(TokenRates {
                input: Rate::from_femtousd_per_unit(input),
                output: Rate::from_femtousd_per_unit(input * 4),
                ..TokenRates::default()
            }),
            tiers: vec![],
            per_request: None,
            per_unit: None,
            reported_cost: false,
            max_output_tokens: None,
            context_window: None,
            bound: None,
            max_per_call: None,
            source: "test".into(),
            effective: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        }
    }

    #[test]
    fn lookup_resolves_snapshots_prefixes_and_aliases() {
        let mut openai = ProviderPrices::default();
        openai.models.insert("gpt-4o".into(), price(1));
        openai.models.insert("gpt-4o-mini".into(), price(2));
        openai
            .aliases
            .insert("chatgpt-4o-latest".into(), "gpt-4o".into());
        let mut gemini = ProviderPrices::default();
        gemini.models.insert("gemini-2.5-pro".into(), price(3));
        let book = PriceBook {
            providers: [(Provider::OpenAi, openai), (Provider::Gemini, gemini)].into(),
        };
        let name = |p, m| book.lookup(p, m).map(|m| m.model.to_owned());
        assert_eq!(name(Provider::OpenAi, "gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(
            name(Provider::OpenAi, "gpt-4o-2024-08-06").as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            name(Provider::OpenAi, "gpt-4o-mini-2024-07-18").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            name(Provider::OpenAi, "openai/GPT-4o").as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            name(Provider::OpenAi, "chatgpt-4o-latest").as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            name(Provider::Gemini, "models/gemini-2.5-pro").as_deref(),
            Some("gemini-2.5-pro")
        );
        assert_eq!(name(Provider::OpenAi, "gpt-5-unknown"), None);
        assert_eq!(name(Provider::Tavily, "search"), None);
        let v = book.lookup(Provider::OpenAi, "gpt-4o").unwrap().version();
        assert_eq!(v, "openai/gpt-4o@2026-01-01");
    }

    #[test]
    fn date_suffixes() {
        assert_eq!(
            strip_date_suffix("claude-sonnet-4-20250514"),
            Some("claude-sonnet-4")
        );
        assert_eq!(strip_date_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(strip_date_suffix("mistral-large-2411"), None);
        assert_eq!(strip_date_suffix("gpt-4o"), None);
    }

    #[test]
    fn tiers_apply_strictly_above_their_threshold() {
        let mut p = price(10);
        let high = TokenRates {
            input: Rate::from_femtousd_per_unit(20),
            ..TokenRates::default()
        };
        p.tiers.push(ContextTier {
            above_input_tokens: 200_000,
            rates: high,
        });
        assert_eq!(
            p.token_rates_for(200_000)
                .unwrap()
                .input
                .femtousd_per_unit(),
            10
        );
        assert_eq!(
            p.token_rates_for(200_001)
                .unwrap()
                .input
                .femtousd_per_unit(),
            20
        );
    }
}
