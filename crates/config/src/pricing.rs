//! `pricing/<provider>.toml` → the [`PriceBook`], reporting every problem with its line.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use tollgate_domain::{
    ContextTier, ModelPrice, PriceBook, Provider, ProviderPrices, Rate, TokenRates, UnitKind,
    UnitRate,
};

use crate::problem::{FileProblems, Report};
use crate::raw::{self, DecimalText, TokenRatesEntry};

/// Loads every `*.toml` in `dir`. A missing directory is one problem, not a crash.
pub fn load_dir(dir: &Path) -> (PriceBook, Report) {
    let mut book = PriceBook::default();
    let mut report = Report::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let mut p = FileProblems::new(dir, String::new());
            p.error(&[], format!("cannot read the pricing directory: {e}"));
            return (book, p.report);
        }
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for file in files {
        let mut p = match std::fs::read_to_string(&file) {
            Ok(text) => FileProblems::new(&file, text),
            Err(e) => {
                let mut p = FileProblems::new(&file, String::new());
                p.error(&[], format!("cannot read: {e}"));
                report.extend(p.report);
                continue;
            }
        };
        if let Some((provider, prices)) = load_file(&mut p, &file) {
            match book.providers.entry(provider) {
                std::collections::btree_map::Entry::Occupied(_) => p.error(
                    &["provider"],
                    format!("{provider} is priced in another file too: keep one file per provider"),
                ),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(prices);
                }
            }
        }
        report.extend(p.report);
    }
    (book, report)
}

/// Parses one pricing file's text; `path` names it in problems and must be `<provider>.toml`.
pub(crate) fn load_file(p: &mut FileProblems, path: &Path) -> Option<(Provider, ProviderPrices)> {
    let raw: raw::PriceFile = p.parse()?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let provider = match raw.provider.as_deref() {
        None => {
            p.error(
                &[],
                format!("missing provider = \"{stem}\" at the top of the file"),
            );
            return None;
        }
        Some(name) => match name.parse::<Provider>() {
            Ok(provider) => provider,
            Err(e) => {
                p.error(&["provider"], e.to_string());
                return None;
            }
        },
    };
    if stem != provider.as_str() {
        p.error(
            &["provider"],
            format!(
                "this file prices {provider} but is named {stem}.toml: rename it to {provider}.toml"
            ),
        );
    }
    let mut prices = ProviderPrices::default();
    let mut aliases: BTreeMap<String, String> = BTreeMap::new();
    for (name, entry) in &raw.models {
        let Some(price) = model(p, provider, name, entry, &raw.defaults) else {
            continue;
        };
        if name != &name.to_ascii_lowercase() {
            p.error(
                &["models", name],
                format!(
                    "model names are matched in lower case: write {:?}",
                    name.to_ascii_lowercase()
                ),
            );
        }
        for alias in &entry.aliases {
            let alias = alias.to_ascii_lowercase();
            if raw.models.contains_key(&alias) || aliases.contains_key(&alias) {
                p.error(
                    &["models", name, "aliases"],
                    format!("alias {alias:?} already names another model"),
                );
            } else {
                aliases.insert(alias, name.clone());
            }
        }
        if name == "*" {
            prices.fallback = Some(price);
        } else {
            prices.models.insert(name.clone(), price);
        }
    }
    prices.aliases = aliases;
    Some((provider, prices))
}

fn model(
    p: &mut FileProblems,
    provider: Provider,
    name: &str,
    entry: &raw::ModelEntry,
    defaults: &raw::PriceDefaults,
) -> Option<ModelPrice> {
    let at = |key: &'static str| ["models", name, key];
    let tokens = token_rates(p, &["models", name], entry.rates());
    let mut tiers: Vec<ContextTier> = Vec::new();
    for (i, tier) in entry.tiers.iter().enumerate() {
        let index = i.to_string();
        let path = ["models", name, "tiers", index.as_str()];
        let above = match tier.above_input_tokens.map(u64::try_from) {
            Some(Ok(n)) if n > 0 && tiers.last().is_none_or(|t| t.above_input_tokens < n) => n,
            _ => {
                p.error(
                    &path,
                    "above_input_tokens must be a positive token count, larger than the previous tier's",
                );
                continue;
            }
        };
        match token_rates(p, &path, tier.rates()) {
            Some(rates) => tiers.push(ContextTier {
                above_input_tokens: above,
                rates,
            }),
            None => p.error(&path, "a tier needs input and output rates"),
        }
    }
    let per_request = per_unit_rate(p, &at("per_request"), entry.per_request.as_ref());
    let unit_rate = per_unit_rate(p, &at("per_unit"), entry.per_unit.as_ref());
    let unit = match entry.unit.as_deref() {
        None => None,
        Some(u) => match UnitKind::ALL.into_iter().find(|k| k.as_str() == u) {
            Some(kind) => Some(kind),
            None => {
                p.error(
                    &at("unit"),
                    format!("unknown unit {u:?} (expected search, credit, page or image)"),
                );
                None
            }
        },
    };
    let per_unit = match (unit, unit_rate, &entry.unit, &entry.per_unit) {
        (Some(unit), Some(rate), _, _) => Some(UnitRate { unit, rate }),
        (_, _, Some(_), None) => {
            p.error(
                &at("unit"),
                "a unit needs its price: per_unit = \"0.008\" (USD per unit)",
            );
            None
        }
        (_, _, None, Some(_)) => {
            p.error(
                &at("per_unit"),
                "say what the unit is: unit = \"credit\" (search, credit, page or image)",
            );
            None
        }
        _ => None,
    };
    let reported_cost = entry.reported_cost.unwrap_or(false);
    let billing = crate::bound::Billing {
        provider,
        per_unit: per_unit.is_some(),
    };
    let (bound, max_per_call) = crate::bound::bound(p, name, entry, billing);
    let has_token_rates = entry.input.is_some() || entry.output.is_some();
    if provider.is_token_billed() && tokens.is_none() && !has_token_rates {
        p.error(
            &["models", name],
            format!(
                "model {name:?} has no price: {provider} bills per token, so set input and \
                 output (USD per 1M tokens)"
            ),
        );
        return None;
    }
    if !provider.is_token_billed()
        && per_unit.is_none()
        && per_request.is_none()
        && !reported_cost
        && entry.unit.is_none()
        && entry.per_unit.is_none()
        && entry.per_request.is_none()
    {
        p.error(
            &["models", name],
            format!(
                "{name:?} has no price: set per_request, or unit and per_unit (USD), or \
                 reported_cost = true"
            ),
        );
        return None;
    }
    let source = entry.source.clone().or_else(|| defaults.source.clone());
    if source.as_deref().is_none_or(str::is_empty) {
        p.error(
            &["models", name],
            "where does this price come from? set source (here or in [defaults])",
        );
    }
    let effective_text = entry
        .effective
        .clone()
        .or_else(|| defaults.effective.clone());
    let effective = match effective_text
        .as_deref()
        .map(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d"))
    {
        Some(Ok(date)) => date,
        Some(Err(_)) => {
            p.error(
                &at("effective"),
                format!(
                    "{:?} is not a date (expected YYYY-MM-DD)",
                    effective_text.unwrap_or_default()
                ),
            );
            NaiveDate::default()
        }
        None => {
            p.error(
                &["models", name],
                "when did this price take effect? set effective = \"YYYY-MM-DD\" (here or in [defaults])",
            );
            NaiveDate::default()
        }
    };
    let positive = |p: &mut FileProblems, key: &'static str, v: Option<i64>| match v {
        None => None,
        Some(v) => match u64::try_from(v) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                p.error(&at(key), format!("{v} must be a positive token count"));
                None
            }
        },
    };
    Some(ModelPrice {
        tokens,
        tiers,
        per_request,
        per_unit,
        reported_cost,
        max_output_tokens: positive(p, "max_output_tokens", entry.max_output_tokens),
        context_window: positive(p, "context_window", entry.context_window),
        bound,
        max_per_call,
        source: source.unwrap_or_default(),
        effective,
    })
}

/// The token rates of an entry or tier; `None` when neither input nor output is given. Input
/// and output must come together.
fn token_rates(
    p: &mut FileProblems,
    path: &[&str],
    raw: TokenRatesEntry<'_>,
) -> Option<TokenRates> {
    let mut rate = |key: &'static str, value: Option<&DecimalText>| -> Option<Rate> {
        let value = value?;
        match Rate::per_million_from_decimal(&value.text()) {
            Ok(rate) => Some(rate),
            Err(e) => {
                p.error(
                    &[path, &[key]].concat(),
                    format!("{e} (expected USD per 1M tokens, e.g. \"2.50\")"),
                );
                None
            }
        }
    };
    let input = rate("input", raw.input);
    let cached_input = rate("cached_input", raw.cached_input);
    let cache_write = rate("cache_write", raw.cache_write);
    let cache_write_1h = rate("cache_write_1h", raw.cache_write_1h);
    let output = rate("output", raw.output);
    let reasoning = rate("reasoning", raw.reasoning);
    match (raw.input.is_some(), raw.output.is_some()) {
        (false, false) => None,
        (true, false) => {
            p.error(path, "input is priced but output is not: set output (USD per 1M tokens; \"0\" for embeddings)");
            None
        }
        (false, true) => {
            p.error(
                path,
                "output is priced but input is not: set input (USD per 1M tokens)",
            );
            None
        }
        (true, true) => Some(TokenRates {
            input: input?,
            cached_input,
            cache_write,
            cache_write_1h,
            output: output?,
            reasoning,
        }),
    }
}

fn per_unit_rate(p: &mut FileProblems, path: &[&str], raw: Option<&DecimalText>) -> Option<Rate> {
    let text = raw?.text();
    match Rate::per_unit_from_decimal(&text) {
        Ok(rate) => Some(rate),
        Err(e) => {
            p.error(path, format!("{e} (expected USD per unit, e.g. \"0.008\")"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse(name: &str, text: &str) -> (Option<(Provider, ProviderPrices)>, Report) {
        let path = PathBuf::from(format!("pricing/{name}.toml"));
        let mut p = FileProblems::new(&path, text.to_owned());
        let out = load_file(&mut p, &path);
        (out, p.report)
    }

    #[test]
    fn a_full_entry_with_tiers_and_aliases() {
        let (out, report) = parse(
            "gemini",
            r#"
provider = "gemini"
[defaults]
source = "https://ai.google.dev/gemini-api/docs/pricing"
effective = "2025-06-17"

[models."gemini-2.5-pro"]
input = "1.25"
cached_input = 0.125
output = "10.00"
max_output_tokens = 65536
aliases = ["gemini-2.5-pro-latest"]

[[models."gemini-2.5-pro".tiers]]
above_input_tokens = 200000
input = "2.50"
cached_input = "0.25"
output = "15.00"
"#,
        );
        assert!(report.problems.is_empty(), "{report}");
        let (provider, prices) = out.unwrap();
        assert_eq!(provider, Provider::Gemini);
        let pro = &prices.models["gemini-2.5-pro"];
        let rates = pro.tokens.unwrap();
        assert_eq!(rates.cached_input.unwrap().per_million_text(), "0.125");
        assert_eq!(pro.tiers[0].above_input_tokens, 200_000);
        assert_eq!(pro.tiers[0].rates.output.per_million_text(), "15");
        assert_eq!(prices.aliases["gemini-2.5-pro-latest"], "gemini-2.5-pro");
        assert_eq!(pro.effective.to_string(), "2025-06-17");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let (_, report) = parse(
            "openai",
            r#"provider = "openai"
[defaults]
source = "x"
effective = "2026-01-01"

[models."gpt-4o"]
input = "-2.50"
output = "10.00"
colour = "blue"

[models."gpt-x"]
max_output_tokens = 10

[models."gpt-y"]
input = "1"
output = "1e40"
effective = "yesterday"
"#,
        );
        let text = report.to_string();
        assert!(
            text.contains(
                "pricing/openai.toml:7: error: models.gpt-4o.input: \"-2.50\" is negative"
            ),
            "{text}"
        );
        assert!(
            text.contains("pricing/openai.toml:9: error: models.gpt-4o.colour: unknown key"),
            "{text}"
        );
        assert!(
            text.contains(
                "pricing/openai.toml:11: error: models.gpt-x: model \"gpt-x\" has no price"
            ),
            "{text}"
        );
        assert!(text.contains(":16: error: models.gpt-y.output: "), "{text}");
        assert!(text.contains("too large"), "{text}");
        assert!(
            text.contains(":17: error: models.gpt-y.effective: \"yesterday\" is not a date"),
            "{text}"
        );
    }

    #[test]
    fn per_call_providers_need_a_unit_price() {
        let (out, report) = parse(
            "tavily",
            r#"provider = "tavily"
[defaults]
source = "https://docs.tavily.com/documentation/api-credits"
effective = "2025-01-01"
[models."*"]
unit = "credit"
per_unit = "0.008"
[models.research]
unit = "kilo"
per_unit = "1"
"#,
        );
        let text = report.to_string();
        assert!(
            text.contains(":9: error: models.research.unit: unknown unit \"kilo\""),
            "{text}"
        );
        let (_, prices) = out.unwrap();
        let fallback = prices.fallback.unwrap();
        assert_eq!(fallback.per_unit.unwrap().rate.per_unit_text(), "0.008");
    }

    #[test]
    fn file_name_must_match_provider() {
        let (_, report) = parse("openai", "provider = \"anthropic\"\n");
        assert!(report.to_string().contains("rename it to anthropic.toml"));
    }
}
