//! A price entry's `[models."x".bound]` table → the domain's [`CallBound`] and [`MaxPerCall`]:
//! the provider's rule for the most one call can cost, checked so that every problem is reported
//! with its line (`tollgate check`).
//!
//! ```toml
//! [models."search".bound]
//! in = "usd"                      # what the amounts count: usd, units, output_tokens
//! base = "0.007"
//! terms = [
//!   { add = "0.001", per = "numResults", default = 10, above = 10 },
//!   { add = "0.001", per = "numResults", default = 10, when = { "contents.summary" = true } },
//!   { add = "0.001", per = "urls", times = "subpages" },   # count: urls × subpages
//! ]
//! max_per_call = "5.00"           # USD, where the request does not bound the charge
//! why = "..."                     # required with max_per_call
//! ```

use tollgate_domain::{
    BoundTerm, BoundUnit, CallBound, Decimal, Expect, MaxPerCall, Provider, Rate,
};

use crate::problem::FileProblems;
use crate::raw::{BoundEntry, DecimalText, ExpectEntry, ModelEntry, TermEntry};

/// What the entry a bound belongs to is billed by, which decides the units its bound may use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Billing {
    pub provider: Provider,
    pub per_unit: bool,
}

/// The bound and maximum an entry declares; problems are reported and the faulty part dropped.
pub(crate) fn bound(
    p: &mut FileProblems,
    name: &str,
    entry: &ModelEntry,
    billing: Billing,
) -> (Option<CallBound>, Option<MaxPerCall>) {
    let Some(raw) = &entry.bound else {
        return (None, None);
    };
    let at = ["models", name, "bound"];
    let max = max_per_call(p, &at, raw, billing);
    if raw.base.is_none() && raw.terms.is_empty() {
        if max.is_none() && raw.max_per_call.is_none() {
            p.error(
                &at,
                "an empty bound: give base and terms (the provider's rule), or max_per_call \
                 and why",
            );
        }
        return (None, max);
    }
    let Some(unit) = unit(p, &at, raw, billing) else {
        return (None, max);
    };
    let base = raw.base.as_ref().map_or(Some(0), |b| {
        amount(p, &[&at[..], &["base"]].concat(), b, unit)
    });
    let mut terms = Vec::new();
    let mut ok = base.is_some();
    for (i, raw_term) in raw.terms.iter().enumerate() {
        let index = i.to_string();
        let path = [&at[..], &["terms", index.as_str()]].concat();
        match term(p, &path, raw_term, unit) {
            Some(t) => terms.push(t),
            None => ok = false,
        }
    }
    let bound = ok.then(|| CallBound {
        unit,
        base: base.unwrap_or(0),
        terms,
    });
    (bound, max)
}

fn unit(
    p: &mut FileProblems,
    at: &[&str],
    raw: &BoundEntry,
    billing: Billing,
) -> Option<BoundUnit> {
    let path = [at, &["in"]].concat();
    let unit = match raw.unit.as_deref() {
        Some("usd") => BoundUnit::Usd,
        Some("units") => BoundUnit::Units,
        Some("output_tokens") => BoundUnit::OutputTokens,
        Some(other) => {
            p.error(
                &path,
                format!("unknown unit {other:?} (expected usd, units or output_tokens)"),
            );
            return None;
        }
        None => {
            p.error(
                at,
                "say what the amounts count: in = \"usd\", \"units\" (the entry's unit) or \
                 \"output_tokens\"",
            );
            return None;
        }
    };
    let token_billed = billing.provider.is_token_billed();
    let fits = match unit {
        BoundUnit::Usd => !token_billed,
        BoundUnit::Units => !token_billed && billing.per_unit,
        BoundUnit::OutputTokens => token_billed,
    };
    if !fits {
        let expected = if token_billed {
            format!(
                "{} bills per token: use in = \"output_tokens\"",
                billing.provider
            )
        } else if billing.per_unit {
            "use in = \"units\" (the entry's unit) or \"usd\"".to_owned()
        } else {
            "this entry has no per_unit price: use in = \"usd\"".to_owned()
        };
        p.error(
            &path,
            format!("{:?} does not fit this entry: {expected}", unit.as_str()),
        );
        return None;
    }
    Some(unit)
}

/// An amount in the bound's unit: USD as femto-USD, units and tokens as whole numbers.
fn amount(p: &mut FileProblems, path: &[&str], raw: &DecimalText, unit: BoundUnit) -> Option<u64> {
    let text = raw.text();
    let parsed = match unit {
        BoundUnit::Usd => Rate::per_unit_from_decimal(&text)
            .map(Rate::femtousd_per_unit)
            .map_err(|e| format!("{e} (expected USD, e.g. \"0.001\")")),
        BoundUnit::Units | BoundUnit::OutputTokens => Decimal::parse(&text)
            .and_then(|d| d.to_scaled_exact(0))
            .map_err(|_| format!("{text:?} is not a whole number of {}", unit_words(unit))),
    };
    match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            p.error(path, e);
            None
        }
    }
}

fn unit_words(unit: BoundUnit) -> &'static str {
    match unit {
        BoundUnit::Usd => "USD",
        BoundUnit::Units => "units",
        BoundUnit::OutputTokens => "output tokens",
    }
}

fn term(p: &mut FileProblems, at: &[&str], raw: &TermEntry, unit: BoundUnit) -> Option<BoundTerm> {
    let add = match &raw.add {
        Some(add) => amount(p, &[at, &["add"]].concat(), add, unit),
        None => {
            p.error(at, "a term needs add = the amount per counted item");
            None
        }
    };
    let mut ok = add.is_some();
    let mut count = |key: &'static str, value: Option<i64>, least: u64, fallback: u64| match value
        .map(u64::try_from)
    {
        None => fallback,
        Some(Ok(v)) if v >= least => v,
        Some(_) => {
            p.error(
                &[at, &[key]].concat(),
                format!("must be a whole number of at least {least}"),
            );
            ok = false;
            fallback
        }
    };
    let default = count("default", raw.default, 0, 0);
    let above = count("above", raw.above, 0, 0);
    let every = count("every", raw.every, 1, 1);
    if raw.per.is_none() && (raw.default.is_some() || raw.above.is_some() || raw.every.is_some()) {
        p.error(
            at,
            "default, above and every apply to a counted field: set per = \"<field>\"",
        );
        ok = false;
    }
    if let Some(per) = &raw.per {
        ok &= field_name(p, &[at, &["per"]].concat(), per);
    }
    if let Some(times) = &raw.times {
        if raw.per.is_none() {
            p.error(
                &[at, &["times"]].concat(),
                "times multiplies a counted field: set per = \"<field>\" too",
            );
            ok = false;
        }
        ok &= field_name(p, &[at, &["times"]].concat(), times);
    }
    let when = conditions(p, &[at, &["when"]].concat(), &raw.when, &mut ok);
    let unless = conditions(p, &[at, &["unless"]].concat(), &raw.unless, &mut ok);
    ok.then(|| BoundTerm {
        add: add.unwrap_or(0),
        per: raw.per.clone(),
        times: raw.times.clone(),
        default,
        above,
        every,
        when,
        unless,
    })
}

fn conditions(
    p: &mut FileProblems,
    at: &[&str],
    raw: &std::collections::BTreeMap<String, ExpectEntry>,
    ok: &mut bool,
) -> Vec<(String, Expect)> {
    let mut out = Vec::new();
    for (field, expect) in raw {
        if !field_name(p, &[at, &[field.as_str()]].concat(), field) {
            *ok = false;
            continue;
        }
        let expect = match expect {
            ExpectEntry::Flag(set) => Expect::Set(*set),
            ExpectEntry::Text(text) => Expect::Text(text.clone()),
            ExpectEntry::AnyOf(texts) => Expect::AnyOf(texts.clone()),
        };
        out.push((field.clone(), expect));
    }
    out
}

/// A request field the reader keeps: a top-level key, or `outer.inner` one level down.
fn field_name(p: &mut FileProblems, path: &[&str], name: &str) -> bool {
    let valid_part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() <= 2 && parts.iter().all(|s| valid_part(s)) {
        return true;
    }
    p.error(
        path,
        format!(
            "{name:?} is not a request field a bound can read: a top-level key, or \
             \"outer.inner\" one level down"
        ),
    );
    false
}

fn max_per_call(
    p: &mut FileProblems,
    at: &[&str],
    raw: &BoundEntry,
    billing: Billing,
) -> Option<MaxPerCall> {
    let why = raw.why.as_deref().map(str::trim).filter(|w| !w.is_empty());
    let Some(text) = &raw.max_per_call else {
        if raw.why.is_some() {
            p.error(
                &[at, &["why"]].concat(),
                "why explains a max_per_call: set max_per_call too, or remove why",
            );
        }
        return None;
    };
    let path = [at, &["max_per_call"]].concat();
    if billing.provider.is_token_billed() {
        p.error(
            &path,
            "a token-billed call is bounded by its tokens: remove max_per_call",
        );
        return None;
    }
    let nanousd = match Rate::per_unit_from_decimal(&text.text()) {
        Ok(rate) => rate
            .times(1)
            .div_ceil(tollgate_domain::money::FEMTOUSD_PER_NANOUSD),
        Err(e) => {
            p.error(&path, format!("{e} (expected USD, e.g. \"2.00\")"));
            return None;
        }
    };
    let Some(why) = why else {
        p.error(
            &path,
            "why is this the most a call can cost? set why = \"...\" (the provider's cap, or \
             the operator's choice and its reason)",
        );
        return None;
    };
    Some(MaxPerCall {
        nanousd: u64::try_from(nanousd).unwrap_or(u64::MAX),
        why: why.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Report;
    use std::path::PathBuf;
    use tollgate_domain::ProviderPrices;

    fn parse(name: &str, text: &str) -> (Option<(Provider, ProviderPrices)>, Report) {
        let path = PathBuf::from(format!("pricing/{name}.toml"));
        let mut p = FileProblems::new(&path, text.to_owned());
        let out = crate::pricing::load_file(&mut p, &path);
        (out, p.report)
    }

    #[test]
    fn a_rule_is_read_into_its_terms() {
        let (out, report) = parse(
            "exa",
            r#"provider = "exa"
[defaults]
source = "https://exa.ai/docs/reference/pricing"
effective = "2026-03-03"
[models."search"]
reported_cost = true
per_request = "0.007"
[models."search".bound]
in = "usd"
base = "0.007"
terms = [
  { add = "0.001", per = "numResults", default = 10, above = 10 },
  { add = "0.008", when = { type = ["deep", "deep-reasoning"] } },
  { add = "0.001", per = "numResults", default = 10, when = { "contents.summary" = true } },
]
[models."*"]
reported_cost = true
per_request = "0.007"
[models."*".bound]
max_per_call = "5"
why = "metered runs stop at $5 by default"
"#,
        );
        assert!(report.problems.is_empty(), "{report}");
        let (_, prices) = out.unwrap();
        let search = prices.models["search"].bound.as_ref().unwrap();
        assert_eq!(search.unit, BoundUnit::Usd);
        assert_eq!(search.base, 7_000_000_000_000);
        assert_eq!(search.terms.len(), 3);
        assert_eq!(search.terms[0].above, 10);
        assert_eq!(
            search.terms[1].when,
            vec![(
                "type".to_owned(),
                Expect::AnyOf(vec!["deep".into(), "deep-reasoning".into()])
            )]
        );
        let fallback = prices.fallback.unwrap();
        assert_eq!(fallback.max_per_call.unwrap().nanousd, 5_000_000_000);
    }

    #[test]
    fn every_problem_in_a_bound_is_reported_with_its_line() {
        let (_, report) = parse(
            "firecrawl",
            r#"provider = "firecrawl"
[defaults]
source = "https://docs.firecrawl.dev/billing"
effective = "2026-01-01"
[models."scrape"]
unit = "credit"
per_unit = "0.00083"
[models."scrape".bound]
in = "credits"
base = 1
[models."crawl"]
unit = "credit"
per_unit = "0.00083"
[models."crawl".bound]
in = "units"
base = "1.5"
terms = [
  { per = "limit" },
  { add = 4, every = 0, per = "a.b.c" },
  { add = 1, default = 5 },
  { add = 1, colour = "red" },
  { add = 1, times = "pages" },
  { add = 1, per = "urls", times = "a.b.c" },
]
[models."map"]
per_request = "0.001"
[models."map".bound]
max_per_call = "1"
[models."*"]
unit = "credit"
per_unit = "0.00083"
[models."*".bound]
in = "output_tokens"
base = 1
"#,
        );
        let text = report.to_string();
        for expected in [
            ":9: error: models.scrape.bound.in: unknown unit \"credits\"",
            ":16: error: models.crawl.bound.base: \"1.5\" is not a whole number of units",
            ":18: error: models.crawl.bound.terms.0: a term needs add",
            ":19: error: models.crawl.bound.terms.1.every: must be a whole number of at least 1",
            ":19: error: models.crawl.bound.terms.1.per: \"a.b.c\" is not a request field",
            ":20: error: models.crawl.bound.terms.2: default, above and every apply",
            ":21: error: models.crawl.bound.terms.3.colour: unknown key",
            ":22: error: models.crawl.bound.terms.4.times: times multiplies a counted field",
            ":23: error: models.crawl.bound.terms.5.times: \"a.b.c\" is not a request field",
            ":28: error: models.map.bound.max_per_call: why is this the most a call can cost?",
            ":33: error: models.*.bound.in: \"output_tokens\" does not fit this entry",
        ] {
            assert!(text.contains(expected), "{expected}\n{text}");
        }
    }

    #[test]
    fn a_token_billed_entry_bounds_its_output_tokens_only() {
        let (_, report) = parse(
            "openai",
            r#"provider = "openai"
[defaults]
source = "x"
effective = "2026-01-01"
[models."gpt-image-1"]
input = "5"
output = "40"
[models."gpt-image-1".bound]
in = "usd"
base = "0.1"
max_per_call = "1"
why = "no"
"#,
        );
        let text = report.to_string();
        assert!(
            text.contains(":9: error: models.gpt-image-1.bound.in: \"usd\" does not fit"),
            "{text}"
        );
        assert!(
            text.contains(":11: error: models.gpt-image-1.bound.max_per_call: a token-billed"),
            "{text}"
        );
    }
}
