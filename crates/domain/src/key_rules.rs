//! What a key issued through the admin API may do within its user's plan: until when it is
//! valid, which providers it may call, and which models of each (glob patterns such as
//! `gpt-4o*`). A key with no rules may do whatever the plan allows; rules only ever narrow it.
//!
//! Pure: the admin API parses and validates what an operator sends, the ledger stores it, and
//! the proxy asks these functions on each call.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use crate::admission::{Limit, LimitKey};
use crate::provider::Provider;

/// The longest model pattern accepted; model names are far shorter.
const PATTERN_MAX_CHARS: usize = 200;

/// Why a rule an operator sent cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRuleError {
    #[error(
        "model pattern {0:?} is not valid: use 1 to {PATTERN_MAX_CHARS} characters of letters, \
         digits and - _ . : / @ +, with * for any run of characters (e.g. \"gpt-4o*\")"
    )]
    BadPattern(String),
    #[error(
        "expiry {0:?} is neither an RFC 3339 time (2027-01-01T00:00:00Z) nor a date (2027-01-01)"
    )]
    BadExpiry(String),
    #[error("expiry {0} is not in the future")]
    ExpiryPassed(String),
}

/// A model name pattern: literal characters, and `*` for any run of characters (none
/// included). Matching is exact otherwise, case included, as providers' model names are.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelPattern(String);

impl ModelPattern {
    pub fn parse(text: &str) -> Result<ModelPattern, KeyRuleError> {
        let ok = (1..=PATTERN_MAX_CHARS).contains(&text.chars().count())
            && text.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '+' | '*')
            });
        if ok {
            Ok(ModelPattern(text.to_owned()))
        } else {
            Err(KeyRuleError::BadPattern(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `model` matches: the literal pieces between the `*`s appear in order, the first
    /// at the start and the last at the end.
    pub fn matches(&self, model: &str) -> bool {
        let mut pieces = self.0.split('*');
        let Some(first) = pieces.next() else {
            return false;
        };
        let Some(mut rest) = model.strip_prefix(first) else {
            return false;
        };
        let pieces: Vec<&str> = pieces.collect();
        let Some((last, middle)) = pieces.split_last() else {
            // No `*` at all: the whole name must be the literal.
            return rest.is_empty();
        };
        for piece in middle {
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An expiry as an operator writes it: an RFC 3339 time, or a date, which means the start of
/// that day in UTC (a key "expiring 2027-01-01" is not valid on that day). It must be after
/// `now`: a key issued already expired is a mistake.
pub fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, KeyRuleError> {
    let at = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| KeyRuleError::BadExpiry(text.to_owned()))?;
    if at <= now {
        return Err(KeyRuleError::ExpiryPassed(text.to_owned()));
    }
    Ok(at)
}

/// A key's own rules. `Default` is a key without any: everything its plan allows, forever.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRules {
    pub expires_at: Option<DateTime<Utc>>,
    /// The providers the key may call (`None`: every provider of the plan).
    pub providers: Option<Vec<Provider>>,
    /// Per provider, the models the key may call; a provider not listed: any model.
    pub models: BTreeMap<Provider, Vec<ModelPattern>>,
    /// Limits of the key's own, counted with and checked together with its plan's.
    pub limits: KeyLimits,
}

/// A key's own limits: budgets per billing period (its user's) and per-minute rates. A call is
/// admitted only if it fits these and its user's plan alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyLimits {
    pub cost_budget_nanousd: Option<u64>,
    pub token_budget: Option<u64>,
    pub calls_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

impl KeyLimits {
    pub fn is_empty(&self) -> bool {
        self == &KeyLimits::default()
    }

    /// The limits set, period budgets first.
    pub fn limits(&self) -> impl Iterator<Item = Limit> + use<> {
        [
            (LimitKey::KeyTokens, self.token_budget),
            (LimitKey::KeyCost, self.cost_budget_nanousd),
            (LimitKey::KeyCallsPerMinute, self.calls_per_minute),
            (LimitKey::KeyTokensPerMinute, self.tokens_per_minute),
        ]
        .into_iter()
        .filter_map(|(key, max)| max.map(|max| Limit { key, max }))
    }
}

impl KeyRules {
    pub fn is_empty(&self) -> bool {
        self == &KeyRules::default()
    }

    /// When the key expired, if it has by `now`; the clock is read only for a key that has an
    /// expiry.
    pub fn expired_at(&self, now: impl FnOnce() -> DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = self.expires_at?;
        (at <= now()).then_some(at)
    }

    pub fn allows_provider(&self, provider: Provider) -> bool {
        self.providers
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&provider))
    }

    /// Whether a call to `model` of `provider` is allowed; `Err` carries the provider's list.
    pub fn check_model(&self, provider: Provider, model: &str) -> Result<(), &[ModelPattern]> {
        match self.models.get(&provider) {
            Some(patterns) if !patterns.iter().any(|p| p.matches(model)) => Err(patterns),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> ModelPattern {
        ModelPattern::parse(text).unwrap()
    }

    #[test]
    fn patterns_match_their_literal_pieces_in_order() {
        let cases = [
            ("gpt-4o*", "gpt-4o", true),
            ("gpt-4o*", "gpt-4o-mini-2024-07-18", true),
            ("gpt-4o*", "gpt-4", false),
            ("gpt-4o*", "chatgpt-4o", false),
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("*mini", "gpt-4o-mini", true),
            ("*mini", "gpt-4o-mini-tts", false),
            ("claude-*-4-5*", "claude-sonnet-4-5-20250929", true),
            ("claude-*-4-5*", "claude-sonnet-4-1", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*", "anything", true),
            ("**", "", true),
            ("GPT-4o", "gpt-4o", false),
        ];
        for (p, model, want) in cases {
            assert_eq!(pattern(p).matches(model), want, "{p} against {model}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            " ",
            "gpt 4o",
            "gpt-[45]o",
            "gpt-4o?",
            "model\n",
            &"x".repeat(201),
        ] {
            assert!(ModelPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ModelPattern::parse("models/gemini-2.5-*").is_ok());
    }

    #[test]
    fn expiries_are_times_or_dates_in_the_future() {
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_expiry("2027-01-01", now).unwrap(),
            "2027-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_expiry("2026-12-06T13:00:00+01:00", now),
            Err(KeyRuleError::ExpiryPassed(
                "2026-12-06T13:00:00+01:00".into()
            ))
        );
        assert!(parse_expiry("2026-12-06T12:00:01Z", now).is_ok());
        assert!(matches!(
            parse_expiry("2026-12-06", now),
            Err(KeyRuleError::ExpiryPassed(_))
        ));
        for bad in ["tomorrow", "2027-13-01", "01/01/2027", ""] {
            assert!(matches!(
                parse_expiry(bad, now),
                Err(KeyRuleError::BadExpiry(_))
            ));
        }
    }

    #[test]
    fn rules_only_narrow_what_the_plan_allows() {
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let none = KeyRules::default();
        assert!(none.is_empty() && none.expired_at(|| now).is_none());
        assert!(none.allows_provider(Provider::Tavily));
        assert!(none.check_model(Provider::OpenAi, "o3").is_ok());
        let rules = KeyRules {
            expires_at: Some(now),
            providers: Some(vec![Provider::OpenAi, Provider::Anthropic]),
            models: BTreeMap::from([(Provider::OpenAi, vec![pattern("gpt-4o*")])]),
            limits: KeyLimits::default(),
        };
        assert_eq!(rules.expired_at(|| now), Some(now));
        assert!(rules.allows_provider(Provider::Anthropic));
        assert!(!rules.allows_provider(Provider::Tavily));
        assert!(rules.check_model(Provider::OpenAi, "gpt-4o-mini").is_ok());
        assert_eq!(
            rules.check_model(Provider::OpenAi, "o3"),
            Err(&[pattern("gpt-4o*")][..])
        );
        // No list for Anthropic: any of its models.
        assert!(
            rules
                .check_model(Provider::Anthropic, "claude-opus-4-1")
                .is_ok()
        );
    }
}
