//! Imports LiteLLM's `model_prices_and_context_window.json` into the text of a
//! `pricing/<provider>.toml` file.
//!
//! LiteLLM (BerriAI/litellm, MIT License) keeps the broadest public table of model prices, but as
//! per-token binary floats (`2.9999900000000002e-06`). The importer reads each number's JSON
//! *text*, never an `f64`, converts it to femto-USD per token (the precision of a [`Rate`]) with
//! the one rounding step in [`Decimal::to_scaled`], and writes it per million tokens, so float
//! noise disappears and nothing else changes.
//!
//! The result is a starting point for a person to review, not a finished price file: it has no
//! aliases and no `"*"` entry, it drops what the format cannot say (service tiers, audio and
//! image-input rates), and it marks in comments what it had to approximate.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::value::RawValue;
use tollgate_domain::{Decimal, DecimalError, Provider, Rate};

/// Why a LiteLLM price file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the LiteLLM price file is not a JSON object of model entries: {0}")]
    Json(#[source] serde_json::Error),
    #[error("LiteLLM entry {model:?} is not a JSON object: {source}")]
    Entry {
        model: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("LiteLLM entry {model:?}: {field}: {source}")]
    Price {
        model: String,
        field: String,
        #[source]
        source: DecimalError,
    },
    #[error("LiteLLM entry {model:?}: {field} is {found}, expected {expected}")]
    Field {
        model: String,
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "no priceable entry with litellm_provider {litellm_provider:?} in the LiteLLM price file \
         (importing {provider}); is it the right file?"
    )]
    NoEntries {
        provider: Provider,
        litellm_provider: &'static str,
    },
}

/// Turns LiteLLM's price file into the TOML text of `pricing/<provider>.toml`: the entries whose
/// `litellm_provider` is the provider's, keyed without LiteLLM's `gemini/`-style prefix and
/// sorted by name, under a `[defaults]` table carrying `source` and `effective`.
pub fn import(
    json: &str,
    provider: Provider,
    source: &str,
    effective: NaiveDate,
) -> Result<String, ImportError> {
    let entries: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(json).map_err(ImportError::Json)?;
    let mut models = BTreeMap::new();
    for (key, raw) in &entries {
        if key == "sample_spec" {
            continue;
        }
        let entry: Entry =
            serde_json::from_str(raw.get()).map_err(|source| ImportError::Entry {
                model: key.clone(),
                source,
            })?;
        let Some(litellm_provider) = text_field(&entry, key, "litellm_provider")? else {
            continue;
        };
        if !litellm_names(provider).contains(&litellm_provider.as_str()) {
            continue;
        }
        let Some(name) = model_name(key, &litellm_provider) else {
            continue;
        };
        let mode = text_field(&entry, key, "mode")?.unwrap_or_else(|| "chat".to_owned());
        if !METERED_MODES.contains(&mode.as_str()) || models.contains_key(&name) {
            continue;
        }
        let imported = if provider.is_token_billed() {
            token_model(&entry, key, &mode)?
        } else {
            call_model(&entry, key, provider)?
        };
        if let Some(mut model) = imported {
            if let Some(date) = text_field(&entry, key, "deprecation_date")? {
                model
                    .comments
                    .push(format!("LiteLLM deprecation_date {date}."));
            }
            models.insert(name, model);
        }
    }
    if models.is_empty() {
        return Err(ImportError::NoEntries {
            provider,
            litellm_provider: litellm_names(provider)[0],
        });
    }
    Ok(render(provider, source, effective, &models))
}

type Entry = BTreeMap<String, Box<RawValue>>;

/// LiteLLM modes Tollgate meters; audio, moderation, rerank, OCR, realtime and image edits are
/// billed in units this format does not have.
const METERED_MODES: [&str; 6] = [
    "chat",
    "completion",
    "embedding",
    "image_generation",
    "responses",
    "search",
];

/// Name segments of service-tier variants, which are not the price of an ordinary call.
const SERVICE_TIER_SEGMENTS: [&str; 4] = ["batch", "batches", "priority", "flex"];

/// The `litellm_provider` values of a provider's first-party API; the first names it in errors.
fn litellm_names(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::OpenAi => &["openai", "text-completion-openai"],
        Provider::Anthropic => &["anthropic"],
        Provider::Gemini => &["gemini"],
        Provider::Mistral => &["mistral"],
        Provider::Tavily => &["tavily"],
        Provider::Serper => &["serper"],
        Provider::Exa => &["exa_ai"],
        Provider::Firecrawl => &["firecrawl"],
        Provider::Stability => &["stability"],
    }
}

/// `gemini/gemini-2.5-pro` → `gemini-2.5-pro`. Keys that still hold a `/` after the provider
/// prefix (`low/1024-x-1024/gpt-image-1.5`: a size and quality, not a model a client names) and
/// service-tier variants are not imported.
fn model_name(key: &str, litellm_provider: &str) -> Option<String> {
    let name = key
        .strip_prefix(litellm_provider)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(key)
        .to_ascii_lowercase();
    let tiered = name
        .split('-')
        .any(|segment| SERVICE_TIER_SEGMENTS.contains(&segment));
    (!name.is_empty() && !name.contains('/') && !tiered).then_some(name)
}

/// One imported `[models."…"]` entry.
#[derive(Debug, Default)]
struct Model {
    comments: Vec<String>,
    tokens: Option<TokenTexts>,
    /// By `above_input_tokens`, ascending.
    tiers: BTreeMap<u64, TokenTexts>,
    unit: Option<&'static str>,
    per_unit: Option<String>,
    per_request: Option<String>,
    reported_cost: bool,
    max_output_tokens: Option<u64>,
    context_window: Option<u64>,
}

/// LiteLLM's per-token price fields that map onto [`TokenTexts`]; each may also carry a
/// `_above_<N>k_tokens` suffix for a long-context tier.
const TOKEN_FIELDS: [&str; 6] = [
    "input_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "output_cost_per_token",
    "output_cost_per_reasoning_token",
];

/// Token rates as decimal text, USD per 1M tokens.
#[derive(Debug, Default, Clone)]
struct TokenTexts {
    input: Option<String>,
    cached_input: Option<String>,
    cache_write: Option<String>,
    cache_write_1h: Option<String>,
    output: Option<String>,
    reasoning: Option<String>,
}

impl TokenTexts {
    /// Stores the rate of one of the [`TOKEN_FIELDS`].
    fn set(&mut self, litellm_field: &str, per_million: String) {
        let slot = match litellm_field {
            "input_cost_per_token" => &mut self.input,
            "cache_read_input_token_cost" => &mut self.cached_input,
            "cache_creation_input_token_cost" => &mut self.cache_write,
            "cache_creation_input_token_cost_above_1hr" => &mut self.cache_write_1h,
            "output_cost_per_token" => &mut self.output,
            "output_cost_per_reasoning_token" => &mut self.reasoning,
            _ => return,
        };
        *slot = Some(per_million);
    }

    /// `(key, value)` in file order; reasoning only when it differs from output (its default).
    fn fields(&self) -> Vec<(&'static str, &str)> {
        let reasoning = self
            .reasoning
            .as_ref()
            .filter(|r| Some(*r) != self.output.as_ref());
        [
            ("input", self.input.as_ref()),
            ("cached_input", self.cached_input.as_ref()),
            ("cache_write", self.cache_write.as_ref()),
            ("cache_write_1h", self.cache_write_1h.as_ref()),
            ("output", self.output.as_ref()),
            ("reasoning", reasoning),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v.as_str())))
        .collect()
    }
}

/// `input_cost_per_token_above_200k_tokens` → `("input_cost_per_token", 200_000)`.
fn split_context_tier(field: &str) -> Option<(&str, u64)> {
    let (base, rest) = field.rsplit_once("_above_")?;
    let thousands = rest.strip_suffix("k_tokens")?;
    if thousands.is_empty() || !thousands.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let above = thousands.parse::<u64>().ok()?.checked_mul(1000)?;
    Some((base, above))
}

/// A token-billed entry, or `None` when it has no input and output price to bill by.
fn token_model(entry: &Entry, key: &str, mode: &str) -> Result<Option<Model>, ImportError> {
    let mut base = TokenTexts::default();
    let mut tiers: BTreeMap<u64, TokenTexts> = BTreeMap::new();
    for (field, raw) in entry {
        let (litellm_field, above) = match split_context_tier(field) {
            Some((litellm_field, above)) => (litellm_field, Some(above)),
            None => (field.as_str(), None),
        };
        if !TOKEN_FIELDS.contains(&litellm_field) {
            continue;
        }
        let Some(rate) = per_million(raw, key, field)? else {
            continue;
        };
        let rates = match above {
            Some(above) => tiers.entry(above).or_default(),
            None => &mut base,
        };
        rates.set(litellm_field, rate);
    }
    let mut model = Model::default();
    if mode == "image_generation"
        && let Some(raw) = entry.get("output_cost_per_image_token")
        && let Some(rate) = per_million(raw, key, "output_cost_per_image_token")?
    {
        base.output = Some(rate);
        model
            .comments
            .push("output is LiteLLM's output_cost_per_image_token.".to_owned());
    }
    if base.output.is_none() && mode == "embedding" {
        base.output = Some("0".to_owned());
    }
    let (Some(input), Some(output)) = (base.input.clone(), base.output.clone()) else {
        return Ok(None);
    };
    for tier in tiers.values_mut() {
        tier.input.get_or_insert_with(|| input.clone());
        tier.output.get_or_insert_with(|| output.clone());
    }
    model.tokens = Some(base);
    model.tiers = tiers;
    if mode != "embedding" {
        model.max_output_tokens = integer_field(entry, key, "max_output_tokens")?;
    }
    model.context_window = integer_field(entry, key, "max_input_tokens")?;
    Ok(Some(model))
}

/// A per-call entry (search, crawl, image), or `None` when it has no per-call price.
fn call_model(entry: &Entry, key: &str, provider: Provider) -> Result<Option<Model>, ImportError> {
    let mut model = Model {
        // Exa reports each call's cost in the response; LiteLLM's price is only the fallback.
        reported_cost: provider == Provider::Exa,
        ..Model::default()
    };
    if let Some(raw) = entry.get("input_cost_per_query") {
        model.per_request = per_unit(raw, key, "input_cost_per_query")?;
    } else if let Some(raw) = entry.get("tiered_pricing") {
        let tiers: Vec<Entry> =
            serde_json::from_str(raw.get()).map_err(|_| ImportError::Field {
                model: key.to_owned(),
                field: "tiered_pricing".to_owned(),
                expected: "a list of objects",
                found: raw.get().to_owned(),
            })?;
        if let Some(raw) = tiers.first().and_then(|t| t.get("input_cost_per_query")) {
            model.per_request = per_unit(raw, key, "tiered_pricing[0].input_cost_per_query")?;
            model.comments.push(
                "LiteLLM prices this by result count (tiered_pricing); its first tier is used."
                    .to_owned(),
            );
        }
    }
    if let Some(raw) = entry.get("output_cost_per_image")
        && let Some(rate) = per_unit(raw, key, "output_cost_per_image")?
    {
        model.unit = Some("image");
        model.per_unit = Some(rate);
    }
    Ok((model.per_request.is_some() || model.per_unit.is_some()).then_some(model))
}

/// A per-token price as USD per 1M tokens, exact to a femto-USD per token; `None` for `null`.
fn per_million(raw: &RawValue, key: &str, field: &str) -> Result<Option<String>, ImportError> {
    Ok(femtousd(raw, key, field)?.map(|rate| rate.per_million_text()))
}

/// A per-query or per-image price as USD per unit; `None` for `null`.
fn per_unit(raw: &RawValue, key: &str, field: &str) -> Result<Option<String>, ImportError> {
    Ok(femtousd(raw, key, field)?.map(|rate| rate.per_unit_text()))
}

/// Reads the number's JSON text as a decimal (never as an `f64`) and rounds it once, to a
/// femto-USD.
fn femtousd(raw: &RawValue, key: &str, field: &str) -> Result<Option<Rate>, ImportError> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let price_error = |source| ImportError::Price {
        model: key.to_owned(),
        field: field.to_owned(),
        source,
    };
    let (femtousd, _exact) = Decimal::parse(text)
        .and_then(|d| d.to_scaled(15))
        .map_err(price_error)?;
    Ok(Some(Rate::from_femtousd_per_unit(femtousd)))
}

fn text_field(entry: &Entry, key: &str, field: &str) -> Result<Option<String>, ImportError> {
    let Some(raw) = entry.get(field) else {
        return Ok(None);
    };
    match serde_json::from_str::<Option<String>>(raw.get()) {
        Ok(text) => Ok(text),
        Err(_) => Err(ImportError::Field {
            model: key.to_owned(),
            field: field.to_owned(),
            expected: "a string",
            found: raw.get().to_owned(),
        }),
    }
}

fn integer_field(entry: &Entry, key: &str, field: &str) -> Result<Option<u64>, ImportError> {
    let Some(raw) = entry.get(field) else {
        return Ok(None);
    };
    match serde_json::from_str::<Option<u64>>(raw.get()) {
        Ok(value) => Ok(value),
        Err(_) => Err(ImportError::Field {
            model: key.to_owned(),
            field: field.to_owned(),
            expected: "a non-negative integer",
            found: raw.get().to_owned(),
        }),
    }
}

const LICENSE_NOTICE: &str = "\
# The prices are derived from LiteLLM, distributed under the MIT License:
#
# Copyright (c) 2023 Berri AI
#
# Permission is hereby granted, free of charge, to any person obtaining a copy of this software
# and associated documentation files (the \"Software\"), to deal in the Software without
# restriction, including without limitation the rights to use, copy, modify, merge, publish,
# distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
# Software is furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all copies or
# substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
# BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
# NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
# DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
";

fn render(
    provider: Provider,
    source: &str,
    effective: NaiveDate,
    models: &BTreeMap<String, Model>,
) -> String {
    let one_line = source.replace(['\r', '\n'], " ");
    let mut out = format!(
        "# {provider} prices imported from LiteLLM's model_prices_and_context_window.json.\n\
         # Source: {one_line}\n\
         # Per-token prices are USD per 1M tokens. Not imported: batch, priority and flex prices,\n\
         # audio and image-input rates. Review before use: no aliases and no \"*\" entry are\n\
         # generated, and `effective` is the date given to the importer.\n\
         #\n\
         {LICENSE_NOTICE}\n\
         provider = {}\n\n\
         [defaults]\n\
         source = {}\n\
         effective = \"{}\"\n",
        quoted(provider.as_str()),
        quoted(source),
        effective.format("%Y-%m-%d"),
    );
    for (name, model) in models {
        out.push('\n');
        for comment in &model.comments {
            out.push_str(&format!("# {comment}\n"));
        }
        out.push_str(&format!("[models.{}]\n", quoted(name)));
        if let Some(tokens) = &model.tokens {
            for (key, value) in tokens.fields() {
                out.push_str(&format!("{key} = {}\n", quoted(value)));
            }
        }
        if let Some(unit) = model.unit {
            out.push_str(&format!("unit = {}\n", quoted(unit)));
        }
        for (key, value) in [
            ("per_unit", &model.per_unit),
            ("per_request", &model.per_request),
        ] {
            if let Some(value) = value {
                out.push_str(&format!("{key} = {}\n", quoted(value)));
            }
        }
        if model.reported_cost {
            out.push_str("reported_cost = true\n");
        }
        for (key, value) in [
            ("max_output_tokens", model.max_output_tokens),
            ("context_window", model.context_window),
        ] {
            if let Some(value) = value {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        for (above, tier) in &model.tiers {
            out.push_str(&format!(
                "\n[[models.{}.tiers]]\nabove_input_tokens = {above}\n",
                quoted(name)
            ));
            for (key, value) in tier.fields() {
                out.push_str(&format!("{key} = {}\n", quoted(value)));
            }
        }
    }
    out
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written extract in LiteLLM's shape: a float-noisy price, a long-context tier,
    /// service-tier fields and variants, modes that are not metered, prefixed keys of other
    /// providers, and per-call entries.
    const SAMPLE: &str = include_str!("../tests/fixtures/litellm-sample.json");

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
    }

    fn import_sample(provider: Provider) -> String {
        import(SAMPLE, provider, "LiteLLM @00035b69", date()).unwrap()
    }

    /// The generated text from `provider = ` on, after the header.
    fn body(text: &str) -> &str {
        let at = text.find("\nprovider = ").unwrap();
        &text[at + 1..]
    }

    #[test]
    fn openai_float_noise_becomes_exact_decimals() {
        assert_eq!(
            body(&import_sample(Provider::OpenAi)),
            r#"provider = "openai"

[defaults]
source = "LiteLLM @00035b69"
effective = "2026-11-28"

# output is LiteLLM's output_cost_per_image_token.
[models."gpt-image-9"]
input = "5"
cached_input = "1.25"
output = "40"

[models."gpt-noisy"]
input = "2.99999"
cached_input = "1.5"
output = "12"
max_output_tokens = 16384
context_window = 128000

[models."text-embedding-9"]
input = "0.02"
output = "0"
context_window = 8191
"#
        );
    }

    #[test]
    fn long_context_prices_become_a_tier() {
        assert_eq!(
            body(&import_sample(Provider::Gemini)),
            r#"provider = "gemini"

[defaults]
source = "LiteLLM @00035b69"
effective = "2026-11-28"

# LiteLLM deprecation_date 2027-06-01.
[models."gemini-9-pro"]
input = "1.25"
cached_input = "0.125"
output = "10"
max_output_tokens = 65535
context_window = 1048576

[[models."gemini-9-pro".tiers]]
above_input_tokens = 200000
input = "2.5"
cached_input = "0.25"
output = "15"
"#
        );
    }

    #[test]
    fn anthropic_cache_writes_and_one_hour_writes_map_per_tier() {
        assert_eq!(
            body(&import_sample(Provider::Anthropic)),
            r#"provider = "anthropic"

[defaults]
source = "LiteLLM @00035b69"
effective = "2026-11-28"

[models."claude-sonnet-9"]
input = "3"
cached_input = "0.3"
cache_write = "3.75"
cache_write_1h = "6"
output = "15"
max_output_tokens = 64000
context_window = 1000000

[[models."claude-sonnet-9".tiers]]
above_input_tokens = 200000
input = "6"
cached_input = "0.6"
cache_write = "7.5"
cache_write_1h = "12"
output = "22.5"
"#
        );
    }

    #[test]
    fn embeddings_without_an_output_price_cost_nothing_to_output() {
        let text = import_sample(Provider::Mistral);
        assert!(body(&text).ends_with(
            "[models.\"mistral-embed\"]\ninput = \"0.1\"\noutput = \"0\"\ncontext_window = 8192\n"
        ));
    }

    #[test]
    fn per_call_providers_get_per_request_and_per_unit_prices() {
        let exa = import_sample(Provider::Exa);
        assert!(body(&exa).ends_with(
            "# LiteLLM prices this by result count (tiered_pricing); its first tier is used.\n\
             [models.\"search\"]\nper_request = \"0.005\"\nreported_cost = true\n"
        ));
        let tavily = import_sample(Provider::Tavily);
        assert!(body(&tavily).ends_with("[models.\"search\"]\nper_request = \"0.008\"\n"));
        // Image edits are not a metered mode; generations are.
        let stability = import_sample(Provider::Stability);
        assert!(body(&stability).ends_with(
            "effective = \"2026-11-28\"\n\n\
             [models.\"sd3.5-large\"]\nunit = \"image\"\nper_unit = \"0.065\"\n"
        ));
    }

    #[test]
    fn output_is_valid_toml_with_the_license_notice() {
        for provider in [
            Provider::OpenAi,
            Provider::Anthropic,
            Provider::Gemini,
            Provider::Mistral,
            Provider::Exa,
            Provider::Tavily,
            Provider::Stability,
        ] {
            let text = import_sample(provider);
            assert!(text.contains("# Copyright (c) 2023 Berri AI\n"));
            assert!(text.contains("# Source: LiteLLM @00035b69\n"));
            let table: toml::Table = toml::from_str(&text).unwrap();
            assert_eq!(table["provider"].as_str(), Some(provider.as_str()));
        }
    }

    #[test]
    fn output_does_not_depend_on_entry_order() {
        let reordered = r#"{
            "b": {"input_cost_per_token": 2e-06, "output_cost_per_token": 4e-06,
                  "litellm_provider": "openai", "mode": "chat"},
            "a": {"output_cost_per_token": 3e-06, "input_cost_per_token": 1e-06,
                  "mode": "chat", "litellm_provider": "openai"}
        }"#;
        let forward = r#"{
            "a": {"input_cost_per_token": 1e-06, "litellm_provider": "openai",
                  "mode": "chat", "output_cost_per_token": 3e-06},
            "b": {"input_cost_per_token": 2e-06, "litellm_provider": "openai",
                  "mode": "chat", "output_cost_per_token": 4e-06}
        }"#;
        let a = import(reordered, Provider::OpenAi, "s", date()).unwrap();
        let b = import(forward, Provider::OpenAi, "s", date()).unwrap();
        assert_eq!(a, b);
        assert!(a.find("[models.\"a\"]").unwrap() < a.find("[models.\"b\"]").unwrap());
    }

    #[test]
    fn sources_are_escaped_in_toml_and_kept_on_one_comment_line() {
        let text = import(SAMPLE, Provider::Tavily, "a \"quoted\"\nsource", date()).unwrap();
        assert!(text.contains("# Source: a \"quoted\" source\n"));
        assert!(text.contains("source = \"a \\\"quoted\\\"\\u000Asource\"\n"));
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            table["defaults"]["source"].as_str(),
            Some("a \"quoted\"\nsource")
        );
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(
            import("[]", Provider::OpenAi, "s", date()),
            Err(ImportError::Json(_))
        ));
        assert!(matches!(
            import(SAMPLE, Provider::Serper, "s", date()),
            Err(ImportError::NoEntries {
                litellm_provider: "serper",
                ..
            })
        ));
        let negative = r#"{"m": {"input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06,
                                 "litellm_provider": "openai", "mode": "chat"}}"#;
        let err = import(negative, Provider::OpenAi, "s", date()).unwrap_err();
        assert!(matches!(
            &err,
            ImportError::Price { model, field, source: DecimalError::Negative(_) }
                if model == "m" && field == "input_cost_per_token"
        ));
        let stringly = r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                                 "litellm_provider": "openai", "mode": "chat",
                                 "max_input_tokens": "lots"}}"#;
        let err = import(stringly, Provider::OpenAi, "s", date()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LiteLLM entry \"m\": max_input_tokens is \"lots\", expected a non-negative integer"
        );
    }

    #[test]
    fn context_tier_field_names() {
        assert_eq!(
            split_context_tier("input_cost_per_token_above_200k_tokens"),
            Some(("input_cost_per_token", 200_000))
        );
        assert_eq!(
            split_context_tier("cache_creation_input_token_cost_above_1hr_above_272k_tokens"),
            Some(("cache_creation_input_token_cost_above_1hr", 272_000))
        );
        assert_eq!(
            split_context_tier("cache_creation_input_token_cost_above_1hr"),
            None
        );
        assert_eq!(
            split_context_tier("input_cost_per_token_above_200k_tokens_priority"),
            None
        );
    }

    #[test]
    fn model_names_drop_prefixes_variants_and_sizes() {
        assert_eq!(
            model_name("gemini/gemini-2.5-pro", "gemini").as_deref(),
            Some("gemini-2.5-pro")
        );
        assert_eq!(model_name("GPT-4o", "openai").as_deref(), Some("gpt-4o"));
        assert_eq!(model_name("low/1024-x-1024/gpt-image-1", "openai"), None);
        assert_eq!(model_name("gpt-4o-batch", "openai"), None);
        assert_eq!(model_name("gpt-5-flex", "openai"), None);
        assert_eq!(
            model_name("gemini/gemini-2.5-flash", "gemini").as_deref(),
            Some("gemini-2.5-flash")
        );
    }
}
