//! A plan's limits in the seed's vocabulary: the 14 keys with `0` for "no limit", HEAD's extra
//! keys, and the `_zero_means` map that tells a disabled provider from an unlimited one.

use std::collections::BTreeMap;

use tollgate_domain::{Plan, Provider};

use crate::model::{FlatLimits, LimitsBlock, SeedLimits};
use crate::render::dollars;

/// A limit on the wire: its value, or 0 for none.
fn wire(limit: Option<u64>) -> u64 {
    limit.unwrap_or(0)
}

pub fn seed_limits(plan: &Plan) -> SeedLimits {
    let calls = |p: Provider| wire(plan.provider_limits(p).calls);
    let tokens = |p: Provider| {
        if plan.includes(p) {
            wire(plan.provider_limits(p).tokens)
        } else {
            0
        }
    };
    SeedLimits {
        gemini_calls: calls(Provider::Gemini),
        openai_calls: calls(Provider::OpenAi),
        anthropic_calls: calls(Provider::Anthropic),
        mistral_calls: calls(Provider::Mistral),
        tavily_calls: calls(Provider::Tavily),
        serper_calls: calls(Provider::Serper),
        metaphor_calls: calls(Provider::Exa),
        firecrawl_calls: calls(Provider::Firecrawl),
        stability_calls: calls(Provider::Stability),
        gemini_tokens: tokens(Provider::Gemini),
        openai_tokens: tokens(Provider::OpenAi),
        anthropic_tokens: tokens(Provider::Anthropic),
        mistral_tokens: tokens(Provider::Mistral),
        monthly_cost: dollars(wire(plan.cost_cap_nanousd)),
        ai_text_generation_calls: 0,
        exa_calls: calls(Provider::Exa),
        video_calls: 0,
        image_edit_calls: 0,
        audio_calls: 0,
        wavespeed_calls: 0,
        total_calls: wire(plan.total_calls),
        total_tokens: wire(plan.total_tokens),
    }
}

/// For every key whose value is 0: `disabled` (the provider is not in the plan),
/// `unlimited` (no limit is set) or `not_offered` (a HEAD key Tollgate has no provider for).
pub fn zero_means(plan: &Plan) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in Provider::ALL {
        let limits = plan.provider_limits(p);
        let excluded = !plan.includes(p);
        let meaning = |set: Option<u64>| {
            if excluded {
                Some("disabled")
            } else if set.is_none() {
                Some("unlimited")
            } else {
                None
            }
        };
        let mut names = vec![format!("{}_calls", p.seed_name())];
        if p == Provider::Exa {
            names.push("exa_calls".to_owned());
        }
        if let Some(m) = meaning(limits.calls) {
            for name in names {
                out.insert(name, m.to_owned());
            }
        }
        if p.is_token_billed()
            && let Some(m) = meaning(limits.tokens)
        {
            out.insert(format!("{}_tokens", p.seed_name()), m.to_owned());
        }
    }
    for (key, set) in [
        ("monthly_cost", plan.cost_cap_nanousd),
        ("total_calls", plan.total_calls),
        ("total_tokens", plan.total_tokens),
    ] {
        if set.is_none() {
            out.insert(key.to_owned(), "unlimited".to_owned());
        }
    }
    for key in [
        "ai_text_generation_calls",
        "video_calls",
        "image_edit_calls",
        "audio_calls",
        "wavespeed_calls",
    ] {
        out.insert(key.to_owned(), "not_offered".to_owned());
    }
    out
}

pub fn flat_limits(plan: &Plan) -> FlatLimits {
    FlatLimits {
        limits: seed_limits(plan),
        zero_means: zero_means(plan),
    }
}

pub fn limits_block(plan: &Plan) -> LimitsBlock {
    LimitsBlock {
        plan_id: plan.id.clone(),
        plan_name: plan.name.clone(),
        tier: plan.tier.as_str().to_owned(),
        limits: seed_limits(plan),
        features: plan.features.clone(),
    }
}
