//! The nine upstream providers Tollgate meters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An upstream API provider. The order is the seed's order (`gemini` first), which the admin
/// API keeps when it lists providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Gemini,
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Mistral,
    Tavily,
    Serper,
    /// Exa, formerly Metaphor; the seed's API calls it `metaphor`.
    Exa,
    Firecrawl,
    Stability,
}

impl Provider {
    pub const ALL: [Provider; 9] = [
        Provider::Gemini,
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::Mistral,
        Provider::Tavily,
        Provider::Serper,
        Provider::Exa,
        Provider::Firecrawl,
        Provider::Stability,
    ];

    /// The name used in routes (`/openai/...`), config keys, pricing files and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Gemini => "gemini",
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Mistral => "mistral",
            Provider::Tavily => "tavily",
            Provider::Serper => "serper",
            Provider::Exa => "exa",
            Provider::Firecrawl => "firecrawl",
            Provider::Stability => "stability",
        }
    }

    /// The provider's name in human text: messages, alert titles, the dashboard.
    pub const fn display_name(self) -> &'static str {
        match self {
            Provider::Gemini => "Gemini",
            Provider::OpenAi => "OpenAI",
            Provider::Anthropic => "Anthropic",
            Provider::Mistral => "Mistral",
            Provider::Tavily => "Tavily",
            Provider::Serper => "Serper",
            Provider::Exa => "Exa",
            Provider::Firecrawl => "Firecrawl",
            Provider::Stability => "Stability AI",
        }
    }

    /// The name in the seed's API and tables (`metaphor_calls`): only Exa differs.
    pub const fn seed_name(self) -> &'static str {
        match self {
            Provider::Exa => "metaphor",
            other => other.as_str(),
        }
    }

    /// Whether the provider bills by tokens (and so has token limits); the others bill per call,
    /// credit, page or image.
    pub const fn is_token_billed(self) -> bool {
        matches!(
            self,
            Provider::Gemini | Provider::OpenAi | Provider::Anthropic | Provider::Mistral
        )
    }

    /// The names accepted for this provider, for error messages.
    pub fn known_names() -> String {
        Provider::ALL
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?} (known: {known})", known = Provider::known_names())]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    /// Accepts the route name and the seed's name (`metaphor`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == lower || p.seed_name() == lower)
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
            assert_eq!(p.seed_name().parse::<Provider>().unwrap(), p);
        }
        assert_eq!("OpenAI".parse::<Provider>().unwrap(), Provider::OpenAi);
        let err = "openia".parse::<Provider>().unwrap_err().to_string();
        assert!(
            err.contains("openia") && err.contains("known: gemini, openai"),
            "{err}"
        );
    }

    #[test]
    fn four_providers_bill_tokens() {
        let token_billed: Vec<_> = Provider::ALL
            .into_iter()
            .filter(|p| p.is_token_billed())
            .collect();
        assert_eq!(
            token_billed,
            [
                Provider::Gemini,
                Provider::OpenAi,
                Provider::Anthropic,
                Provider::Mistral
            ]
        );
    }
}
