//! A key's own rules as operators send them (issuing a key, changing one) and as listings show
//! them: until when the key is valid, which providers it may call, and which models of each.
//! Shared by the admin API and the `tollgate` CLI, so that both refuse the same mistakes with a
//! message naming the field.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use tollgate_domain::{
    Decimal, KeyLimits, KeyRules, ModelPattern, Provider, format_usd, parse_expiry,
};
use tollgate_ledger::{Ledger, StoredRules};
use utoipa::ToSchema;

use crate::error::{AdminError, Result};
use crate::ops::KeyOut;

/// The body of `POST /api/admin/users/{user_id}/keys`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// A label for listings (`"alice's laptop"`).
    pub name: Option<String>,
    /// When the key stops working: an RFC 3339 time or a date (its start, UTC); in the future.
    /// Calls after it are refused with 401 `key_expired`. Default: never.
    pub expires: Option<String>,
    /// The providers the key may call (ids as in the routes: `openai`, `anthropic`, …), within
    /// its user's plan. Default: every provider of the plan.
    pub providers: Option<Vec<String>>,
    /// Per provider, the models the key may call, as patterns where `*` stands for any run of
    /// characters (`{"openai": ["gpt-4o*"]}`). A provider not listed: any model.
    pub models: Option<BTreeMap<String, Vec<String>>>,
    /// The key's cost budget per billing period, in US dollars (`"25.00"` or `25`; exact to the
    /// nano-dollar). Default: only the plan's cost cap.
    #[schema(value_type = Option<String>)]
    pub max_budget: Option<serde_json::Value>,
    /// The key's token budget per billing period. Default: only the plan's.
    pub token_budget: Option<i64>,
    /// Calls the key may make per minute (fixed windows on the minute). Default: only the plan's.
    pub rpm_limit: Option<i64>,
    /// Tokens the key may use per minute. Default: only the plan's.
    pub tpm_limit: Option<i64>,
}

/// The body of `PATCH /api/admin/keys/{key_id}`: each field given replaces the key's, `null`
/// clears it, a field left out keeps it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyChange {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// As when issuing; `null`: never expires.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expires: Option<Option<String>>,
    /// As when issuing; `null`: every provider of the plan.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub providers: Option<Option<Vec<String>>>,
    /// As when issuing, replacing every list; `null`: any model.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<BTreeMap<String, Vec<String>>>)]
    pub models: Option<Option<BTreeMap<String, Vec<String>>>>,
    /// As when issuing; `null`: no budget of the key's own.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub max_budget: Option<Option<serde_json::Value>>,
    /// As when issuing; `null`: no token budget of the key's own.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub token_budget: Option<Option<i64>>,
    /// As when issuing; `null`: no per-minute call limit of the key's own.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub rpm_limit: Option<Option<i64>>,
    /// As when issuing; `null`: no per-minute token limit of the key's own.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub tpm_limit: Option<Option<i64>>,
}

/// A field that is present, `null` included (`Some(None)`), as opposed to left out (`None`).
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A key's rules as listed.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct RulesOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Absent: every provider of the plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
    /// Per provider, the model patterns allowed; a provider not listed: any model.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, Vec<String>>,
    /// The key's cost budget per billing period, in US dollars (`"25.00"`) and in nano-USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_budget_nanousd: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
}

impl RulesOut {
    pub fn of(rules: &KeyRules) -> RulesOut {
        RulesOut {
            expires_at: rules.expires_at.map(crate::render::iso),
            providers: rules
                .providers
                .as_ref()
                .map(|list| list.iter().map(|p| p.as_str().to_owned()).collect()),
            models: rules
                .models
                .iter()
                .map(|(provider, patterns)| {
                    let list = patterns.iter().map(|p| p.as_str().to_owned()).collect();
                    (provider.as_str().to_owned(), list)
                })
                .collect(),
            max_budget: rules.limits.cost_budget_nanousd.map(format_usd),
            max_budget_nanousd: rules.limits.cost_budget_nanousd,
            token_budget: rules.limits.token_budget,
            rpm_limit: rules.limits.calls_per_minute,
            tpm_limit: rules.limits.tokens_per_minute,
        }
    }
}

/// The largest limit accepted: counters compare exactly up to 2^53 − 1 (9 million dollars in
/// nano-USD).
const MAX_LIMIT: u64 = (1 << 53) - 1;

/// A dollar amount as sent (a JSON string or number), to nano-USD.
fn parse_budget(value: &serde_json::Value) -> Result<u64> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => {
            return Err(bad(
                "max_budget",
                format!("{other} is not an amount of US dollars (e.g. \"25.00\")"),
            ));
        }
    };
    let nanousd = Decimal::parse(&text)
        .and_then(|d| d.to_scaled_exact(9))
        .map_err(|e| {
            bad(
                "max_budget",
                format!("{e} (expected US dollars, e.g. \"25.00\")"),
            )
        })?;
    if nanousd > MAX_LIMIT {
        return Err(bad(
            "max_budget",
            "more than 9,000,000 dollars is not a budget",
        ));
    }
    Ok(nanousd)
}

/// A count limit as sent: non-negative, and for per-minute limits at least 1.
fn parse_count(field: &str, value: i64, per_minute: bool) -> Result<u64> {
    let count = u64::try_from(value)
        .map_err(|_| bad(field, format!("{value} is negative: a limit is a count")))?;
    if per_minute && count == 0 {
        return Err(bad(
            field,
            "0 per minute refuses every call: leave the field out (or null) for no limit",
        ));
    }
    if count > MAX_LIMIT {
        return Err(bad(field, format!("{count} is larger than {MAX_LIMIT}")));
    }
    Ok(count)
}

fn bad(field: &str, problem: impl std::fmt::Display) -> AdminError {
    AdminError::BadRequest(format!("{field}: {problem}"))
}

fn parse_providers(names: &[String]) -> Result<Vec<Provider>> {
    if names.is_empty() {
        return Err(bad(
            "providers",
            "an empty list lets the key call nothing; leave the field out (or null) for every \
             provider of the plan",
        ));
    }
    let mut providers = Vec::with_capacity(names.len());
    for name in names {
        let provider = name.parse::<Provider>().map_err(|e| bad("providers", e))?;
        if !providers.contains(&provider) {
            providers.push(provider);
        }
    }
    Ok(providers)
}

fn parse_models(
    lists: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<Provider, Vec<ModelPattern>>> {
    let mut models = BTreeMap::new();
    for (name, patterns) in lists {
        let provider = name.parse::<Provider>().map_err(|e| bad("models", e))?;
        let field = format!("models.{name}");
        if patterns.is_empty() {
            return Err(bad(
                &field,
                "an empty list lets the key call no model; leave the provider out for any model",
            ));
        }
        let parsed = patterns
            .iter()
            .map(|p| ModelPattern::parse(p).map_err(|e| bad(&field, e)))
            .collect::<Result<Vec<_>>>()?;
        models.insert(provider, parsed);
    }
    Ok(models)
}

/// Model lists only for providers the key may call: a list for another is a mistake.
fn check_consistent(rules: &KeyRules) -> Result<()> {
    if let Some(allowed) = &rules.providers
        && let Some(provider) = rules.models.keys().find(|p| !allowed.contains(p))
    {
        return Err(bad(
            &format!("models.{provider}"),
            format!("the key's providers ({}) do not include {provider}", {
                let names: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
                names.join(", ")
            }),
        ));
    }
    Ok(())
}

fn parse_expires(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    parse_expiry(text, now).map_err(|e| bad("expires", e))
}

/// The rules of a new key, or a 400 naming the field that is wrong.
pub fn new_rules(req: &NewKeyRequest, now: DateTime<Utc>) -> Result<KeyRules> {
    let rules = KeyRules {
        expires_at: req
            .expires
            .as_deref()
            .map(|t| parse_expires(t, now))
            .transpose()?,
        providers: req.providers.as_deref().map(parse_providers).transpose()?,
        models: req
            .models
            .as_ref()
            .map(parse_models)
            .transpose()?
            .unwrap_or_default(),
        limits: KeyLimits {
            cost_budget_nanousd: req.max_budget.as_ref().map(parse_budget).transpose()?,
            token_budget: req
                .token_budget
                .map(|v| parse_count("token_budget", v, false))
                .transpose()?,
            calls_per_minute: req
                .rpm_limit
                .map(|v| parse_count("rpm_limit", v, true))
                .transpose()?,
            tokens_per_minute: req
                .tpm_limit
                .map(|v| parse_count("tpm_limit", v, true))
                .transpose()?,
        },
    };
    check_consistent(&rules)?;
    Ok(rules)
}

/// `rules` with `change` applied, or a 400 naming the field that is wrong.
pub fn changed_rules(
    mut rules: KeyRules,
    change: &KeyChange,
    now: DateTime<Utc>,
) -> Result<KeyRules> {
    if let Some(expires) = &change.expires {
        rules.expires_at = expires
            .as_deref()
            .map(|t| parse_expires(t, now))
            .transpose()?;
    }
    if let Some(providers) = &change.providers {
        rules.providers = providers.as_deref().map(parse_providers).transpose()?;
    }
    if let Some(models) = &change.models {
        rules.models = models
            .as_ref()
            .map(parse_models)
            .transpose()?
            .unwrap_or_default();
    }
    let limits = &mut rules.limits;
    if let Some(budget) = &change.max_budget {
        limits.cost_budget_nanousd = budget.as_ref().map(parse_budget).transpose()?;
    }
    for (field, change, per_minute, slot) in [
        (
            "token_budget",
            change.token_budget,
            false,
            &mut limits.token_budget,
        ),
        (
            "rpm_limit",
            change.rpm_limit,
            true,
            &mut limits.calls_per_minute,
        ),
        (
            "tpm_limit",
            change.tpm_limit,
            true,
            &mut limits.tokens_per_minute,
        ),
    ] {
        if let Some(value) = change {
            *slot = value
                .map(|v| parse_count(field, v, per_minute))
                .transpose()?;
        }
    }
    check_consistent(&rules)?;
    Ok(rules)
}

/// Changes a key issued into the ledger: 404 if there is no such key, 409 if it is revoked.
/// Static keys change in gateway.toml.
pub async fn change_key(ledger: &Ledger, key_id: &str, change: &KeyChange) -> Result<KeyOut> {
    let Some(key) = ledger.api_key(key_id).await? else {
        return Err(AdminError::NotFound(format!("key {key_id:?} not found")));
    };
    let revoked = || AdminError::Conflict(format!("key {key_id:?} is revoked; issue a new one"));
    if key.revoked_at.is_some() {
        return Err(revoked());
    }
    let rules = changed_rules(key.rules()?, change, Utc::now())?;
    let name = match &change.name {
        Some(name) => name.as_deref(),
        None => key.name.as_deref(),
    };
    if !ledger
        .update_api_key(key_id, name, &StoredRules::of(&rules))
        .await?
    {
        return Err(revoked());
    }
    let key = ledger
        .api_key(key_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("key {key_id:?} not found")))?;
    KeyOut::from_ledger(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    fn request(json: &str) -> NewKeyRequest {
        serde_json::from_str(json).unwrap()
    }

    fn refusal(result: Result<KeyRules>) -> String {
        match result {
            Err(AdminError::BadRequest(message)) => message,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_new_keys_rules_are_read_and_each_mistake_named() {
        let rules = new_rules(
            &request(
                r#"{"expires":"2027-01-01","providers":["openai","Anthropic","openai"],
                    "models":{"openai":["gpt-4o*"]}}"#,
            ),
            now(),
        )
        .unwrap();
        assert_eq!(
            rules.providers,
            Some(vec![Provider::OpenAi, Provider::Anthropic])
        );
        assert_eq!(rules.models[&Provider::OpenAi][0].as_str(), "gpt-4o*");
        assert!(new_rules(&request("{}"), now()).unwrap().is_empty());

        let cases = [
            (r#"{"expires":"2026-12-01"}"#, "expires: "),
            (r#"{"expires":"soon"}"#, "expires: "),
            (
                r#"{"providers":["openia"]}"#,
                "providers: unknown provider \"openia\"",
            ),
            (r#"{"providers":[]}"#, "providers: an empty list"),
            (
                r#"{"models":{"openai":["gpt 4o"]}}"#,
                "models.openai: model pattern",
            ),
            (
                r#"{"models":{"openai":[]}}"#,
                "models.openai: an empty list",
            ),
            (
                r#"{"models":{"nope":["x"]}}"#,
                "models: unknown provider \"nope\"",
            ),
            (
                r#"{"providers":["openai"],"models":{"anthropic":["claude*"]}}"#,
                "models.anthropic: the key's providers (openai) do not include anthropic",
            ),
        ];
        for (json, start) in cases {
            let message = refusal(new_rules(&request(json), now()));
            assert!(message.starts_with(start), "{json}: {message}");
        }
    }

    #[test]
    fn a_change_replaces_what_it_names_and_null_clears() {
        let rules = new_rules(
            &request(r#"{"expires":"2027-01-01","providers":["openai"]}"#),
            now(),
        )
        .unwrap();
        let change: KeyChange =
            serde_json::from_str(r#"{"providers":null,"models":{"openai":["o3"]}}"#).unwrap();
        assert_eq!(change.name, None);
        let changed = changed_rules(rules.clone(), &change, now()).unwrap();
        assert_eq!(changed.expires_at, rules.expires_at);
        assert_eq!(changed.providers, None);
        assert_eq!(changed.models[&Provider::OpenAi][0].as_str(), "o3");
        let change: KeyChange = serde_json::from_str(r#"{"expires":null}"#).unwrap();
        assert_eq!(
            changed_rules(rules.clone(), &change, now())
                .unwrap()
                .expires_at,
            None
        );
        let change: KeyChange = serde_json::from_str(r#"{"expires":"2020-01-01"}"#).unwrap();
        assert!(refusal(changed_rules(rules, &change, now())).starts_with("expires: "));
        assert!(serde_json::from_str::<KeyChange>(r#"{"budget":1}"#).is_err());
    }

    #[test]
    fn a_keys_limits_are_read_exactly_and_each_mistake_named() {
        let rules = new_rules(
            &request(
                r#"{"max_budget":"0.10","token_budget":5000,"rpm_limit":60,"tpm_limit":1000}"#,
            ),
            now(),
        )
        .unwrap();
        assert_eq!(
            rules.limits,
            KeyLimits {
                cost_budget_nanousd: Some(100_000_000),
                token_budget: Some(5_000),
                calls_per_minute: Some(60),
                tokens_per_minute: Some(1_000),
            }
        );
        // A JSON number reads as the decimal written.
        let rules = new_rules(&request(r#"{"max_budget":1.1}"#), now()).unwrap();
        assert_eq!(rules.limits.cost_budget_nanousd, Some(1_100_000_000));
        let out = RulesOut::of(&rules);
        assert_eq!(out.max_budget.as_deref(), Some("1.10"));

        let cases = [
            (r#"{"max_budget":-1}"#, "max_budget: "),
            (r#"{"max_budget":"0.0000000001"}"#, "max_budget: "),
            (r#"{"max_budget":true}"#, "max_budget: true is not"),
            (r#"{"max_budget":"10000000"}"#, "max_budget: more than"),
            (r#"{"token_budget":-5}"#, "token_budget: -5 is negative"),
            (r#"{"rpm_limit":0}"#, "rpm_limit: 0 per minute"),
            (r#"{"tpm_limit":-1}"#, "tpm_limit: -1 is negative"),
        ];
        for (json, start) in cases {
            let message = refusal(new_rules(&request(json), now()));
            assert!(message.starts_with(start), "{json}: {message}");
        }

        let change: KeyChange =
            serde_json::from_str(r#"{"max_budget":null,"rpm_limit":10}"#).unwrap();
        let changed = changed_rules(rules, &change, now()).unwrap();
        assert_eq!(changed.limits.cost_budget_nanousd, None);
        assert_eq!(changed.limits.calls_per_minute, Some(10));
    }
}
