//! Who may call what: the providers behind the gateway and their keys, the plans and their
//! limits, and the static keys that name a user and a plan.

use std::collections::BTreeMap;

use tollgate_domain::{
    AnchorDay, DEFAULT_MIN_OUTPUT_TOKENS, Plan, Provider, ProviderLimits, ShortBudget, Tier,
    UnreachablePolicy,
};

use super::{Env, limit, names, per_minute, usd};
use crate::problem::FileProblems;
use crate::raw;
use crate::settings::{ProviderSettings, Secret, StaticKey, provider_defaults};

pub(super) fn providers(
    p: &mut FileProblems,
    raw: &BTreeMap<String, raw::ProviderEntry>,
    env: Env<'_>,
) -> BTreeMap<Provider, ProviderSettings> {
    for name in raw.keys() {
        if name.parse::<Provider>().is_err() {
            p.error(
                &["providers", name],
                format!(
                    "unknown provider {name:?} (known: {})",
                    Provider::known_names()
                ),
            );
        }
    }
    let mut out = BTreeMap::new();
    for provider in Provider::ALL {
        let entry = raw.get(provider.as_str());
        if entry.and_then(|e| e.enabled) == Some(false) {
            continue;
        }
        let (default_url, default_env) = provider_defaults(provider);
        let name = provider.as_str();
        let base_url = entry
            .and_then(|e| e.base_url.clone())
            .unwrap_or_else(|| default_url.to_owned());
        let base_url = base_url.trim_end_matches('/').to_owned();
        let host = base_url
            .strip_prefix("https://")
            .or_else(|| base_url.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            p.error(
                &["providers", name, "base_url"],
                format!("{base_url:?} is not an http:// or https:// URL with a host"),
            );
        }
        let key_env = entry
            .and_then(|e| e.key_env.clone())
            .unwrap_or_else(|| default_env.to_owned());
        let key = env(&key_env).filter(|k| !k.is_empty()).map(Secret::new);
        if key.is_none() {
            p.warning(
                &["providers", name, "key_env"],
                format!(
                    "environment variable {key_env} is not set: calls to {name} will be \
                     refused with 503 until it is (export {key_env}=... before starting)"
                ),
            );
        }
        out.insert(
            provider,
            ProviderSettings {
                base_url,
                key_env,
                key,
            },
        );
    }
    out
}

pub(super) fn plans(
    p: &mut FileProblems,
    raw: &BTreeMap<String, raw::PlanEntry>,
    providers: &BTreeMap<Provider, ProviderSettings>,
) -> BTreeMap<String, Plan> {
    let mut out = BTreeMap::new();
    for (id, entry) in raw {
        let at = |key: &'static str| ["plans", id.as_str(), key];
        let name = entry.name.clone().unwrap_or_else(|| {
            p.error(&["plans", id], "a plan needs a name (name = \"Pro\")");
            id.clone()
        });
        let tier = match entry.tier.as_deref() {
            Some(t) => t.parse::<Tier>().unwrap_or_else(|e| {
                p.error(&at("tier"), e.to_string());
                Tier::Free
            }),
            None => {
                p.error(
                    &["plans", id],
                    "a plan needs a tier (free, basic, pro or enterprise)",
                );
                Tier::Free
            }
        };
        let mut limits = BTreeMap::new();
        for (provider_name, l) in &entry.providers {
            let path = ["plans", id.as_str(), "providers", provider_name.as_str()];
            let Ok(provider) = provider_name.parse::<Provider>() else {
                p.error(
                    &path,
                    format!(
                        "unknown provider {provider_name:?} (known: {})",
                        Provider::known_names()
                    ),
                );
                continue;
            };
            if !providers.contains_key(&provider) && l.calls != Some(0) {
                p.warning(
                    &path,
                    format!("{provider} is disabled in [providers]: this limit never applies"),
                );
            }
            let calls = limit(p, &[&path[..], &["calls"]].concat(), l.calls);
            let tokens = limit(p, &[&path[..], &["tokens"]].concat(), l.tokens);
            let calls_per_minute = per_minute(
                p,
                &[&path[..], &["calls_per_minute"]].concat(),
                l.calls_per_minute,
            );
            let tokens_per_minute = per_minute(
                p,
                &[&path[..], &["tokens_per_minute"]].concat(),
                l.tokens_per_minute,
            );
            for (field, set) in [
                ("tokens", tokens.is_some()),
                ("tokens_per_minute", tokens_per_minute.is_some()),
            ] {
                if set && !provider.is_token_billed() {
                    p.error(
                        &[&path[..], &[field]].concat(),
                        format!(
                            "{provider} bills per call, not per token: remove the token limit \
                             (token limits apply to gemini, openai, anthropic, mistral)"
                        ),
                    );
                }
            }
            limits.insert(
                provider,
                ProviderLimits {
                    calls,
                    tokens,
                    calls_per_minute,
                    tokens_per_minute,
                },
            );
        }
        let plan = Plan {
            id: id.clone(),
            name,
            tier,
            price_monthly_nanousd: usd(p, &at("price_monthly"), entry.price_monthly.as_ref())
                .unwrap_or(0),
            price_yearly_nanousd: usd(p, &at("price_yearly"), entry.price_yearly.as_ref())
                .unwrap_or(0),
            description: entry.description.clone().unwrap_or_default(),
            features: entry.features.clone(),
            providers: limits,
            cost_cap_nanousd: usd(p, &at("cost_cap"), entry.cost_cap.as_ref()),
            total_calls: limit(p, &at("total_calls"), entry.total_calls),
            total_tokens: limit(p, &at("total_tokens"), entry.total_tokens),
            calls_per_minute: per_minute(p, &at("calls_per_minute"), entry.calls_per_minute),
            tokens_per_minute: per_minute(p, &at("tokens_per_minute"), entry.tokens_per_minute),
            on_counter_store_unreachable: unreachable_policy(
                p,
                &at("on_counter_store_unreachable"),
                entry.on_counter_store_unreachable.as_deref(),
            ),
            on_short_budget: short_budget(
                p,
                &at("on_short_budget"),
                entry.on_short_budget.as_deref(),
            ),
            min_output_tokens: limit(p, &at("min_output_tokens"), entry.min_output_tokens)
                .unwrap_or(DEFAULT_MIN_OUTPUT_TOKENS),
        };
        out.insert(id.clone(), plan);
    }
    out
}

pub(super) fn keys(
    p: &mut FileProblems,
    raw: &[raw::KeyEntry],
    plans: &BTreeMap<String, Plan>,
) -> Vec<StaticKey> {
    let mut out = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let index = i.to_string();
        let at = |key: &'static str| ["keys", index.as_str(), key];
        let user = entry.user.clone().unwrap_or_default();
        if user.is_empty() {
            p.error(
                &["keys", &index],
                "a key needs the user it belongs to (user = \"...\")",
            );
        }
        let plan = entry.plan.clone().unwrap_or_default();
        if !plans.contains_key(&plan) {
            p.error(
                &at("plan"),
                format!(
                    "plan {plan:?} is not defined (defined: {})",
                    names(plans.keys())
                ),
            );
        }
        let sha256 = entry.sha256.as_deref().and_then(parse_sha256);
        if sha256.is_none() {
            p.error(
                &at("sha256"),
                "expected the key's SHA-256 as 64 hex digits (printf %s \"$KEY\" | sha256sum)",
            );
        }
        let anchor_day = match entry.anchor_day {
            None => AnchorDay::default(),
            Some(day) => u8::try_from(day)
                .ok()
                .and_then(|d| AnchorDay::new(d).ok())
                .unwrap_or_else(|| {
                    p.error(
                        &at("anchor_day"),
                        format!("{day} is not a day of the month (1 to 31)"),
                    );
                    AnchorDay::default()
                }),
        };
        if let Some(sha256) = sha256 {
            out.push(StaticKey {
                user,
                plan,
                sha256,
                name: entry.name.clone(),
                anchor_day,
            });
        }
    }
    out
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.trim().as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn short_budget(p: &mut FileProblems, path: &[&str], raw: Option<&str>) -> ShortBudget {
    match raw {
        None | Some("clamp") => ShortBudget::Clamp,
        Some("refuse") => ShortBudget::Refuse,
        Some(other) => {
            p.error(
                path,
                format!("unknown policy {other:?} (expected \"clamp\" or \"refuse\")"),
            );
            ShortBudget::Clamp
        }
    }
}

pub(super) fn unreachable_policy(
    p: &mut FileProblems,
    path: &[&str],
    raw: Option<&str>,
) -> Option<UnreachablePolicy> {
    match raw? {
        "fail_closed" => Some(UnreachablePolicy::FailClosed),
        "fail_open" => Some(UnreachablePolicy::FailOpen),
        "local" => Some(UnreachablePolicy::Local),
        other => {
            p.error(
                path,
                format!(
                    "unknown policy {other:?} (expected \"fail_closed\", \"fail_open\" or \"local\")"
                ),
            );
            None
        }
    }
}
