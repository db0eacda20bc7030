//! The most one call can cost, from its request: the one bound that admission reserves, and that
//! the admin API's preflight and `/pricing` report.
//!
//! A token-billed call is bounded by its input (the body's bytes) and its output cap (the
//! request's, else the model's, else a default). A per-call provider's charge depends on the
//! request's options (Exa's `numResults` and summaries, Firecrawl's formats and crawl `limit`,
//! Tavily's depth and URLs, Serper's `num`, an image model's `n` and quality): each price entry
//! declares the provider's published rule as a [`CallBound`] — a base plus terms, each an
//! amount times a count read from a request field, under conditions on other fields — and,
//! where the request does not bound the charge, the most one call is taken to cost
//! ([`MaxPerCall`]), with the reason.
//!
//! The rules read only a request's JSON body ([`RequestFields`]); a call without one (a job's
//! status poll, a read) is bounded at the entry's price for one unit.

use std::collections::BTreeMap;

use crate::admission::Amount;
use crate::cost::upper_bound_cost;
use crate::money::FEMTOUSD_PER_NANOUSD;
use crate::price::ModelPrice;

/// Output bound for a request that sets no maximum, to a model whose price gives none either.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 32_768;

/// What a bound's amounts count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundUnit {
    /// Dollars, held as femto-USD: for an entry billed per request or by the cost the provider
    /// reports (Exa).
    Usd,
    /// The entry's own unit (credits, images), priced at its `per_unit` rate.
    Units,
    /// Output tokens of a token-billed model (an image model's image tokens).
    OutputTokens,
}

impl BoundUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            BoundUnit::Usd => "usd",
            BoundUnit::Units => "units",
            BoundUnit::OutputTokens => "output_tokens",
        }
    }
}

/// What a condition expects of a request field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The field is this text, or a list holding it.
    Text(String),
    /// `true`: the field is set (not absent, `null`, `false`, `0` or empty); `false`: it is not.
    Set(bool),
    /// Any of these texts.
    AnyOf(Vec<String>),
}

/// One part of a bound: `add` for each counted item, when the conditions hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundTerm {
    /// The amount per item, in the bound's unit (femto-USD for [`BoundUnit::Usd`]).
    pub add: u64,
    /// The field whose number (or list length) is the count; `None`: counted once.
    pub per: Option<String>,
    /// A second field the count is multiplied by, 0 when absent (Exa's `subpages`: pages
    /// crawled for each URL asked for); `None`: no multiplier.
    pub times: Option<String>,
    /// The count when the field is absent or not a count (the provider's default).
    pub default: u64,
    /// Only the count beyond this is charged (results included in a base price).
    pub above: u64,
    /// Charged per this many items, rounded up (Tavily: 1 credit per 5 URLs); at least 1.
    pub every: u64,
    /// Every one of these must hold.
    pub when: Vec<(String, Expect)>,
    /// None of these may hold.
    pub unless: Vec<(String, Expect)>,
}

/// A price entry's rule for the most one call can cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallBound {
    pub unit: BoundUnit,
    pub base: u64,
    pub terms: Vec<BoundTerm>,
}

/// The most one call is taken to cost where its request does not bound the charge, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxPerCall {
    pub nanousd: u64,
    pub why: String,
}

/// A request field a bound can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// A non-negative whole number.
    Count(u64),
    Text(String),
    Flag(bool),
    /// An array: its length, and the texts it holds (strings, and objects' `type`: Firecrawl's
    /// `{"type": "json"}` formats).
    List {
        len: u64,
        texts: Vec<String>,
    },
    /// An object, or a number that is not a count.
    Other,
}

/// The fields of a request's JSON body that bounds read: top-level keys, and the keys of
/// objects one level down as `outer.inner`. Built by the request reader; kept small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFields {
    pub fields: BTreeMap<String, FieldValue>,
}

impl RequestFields {
    /// The most fields kept, and the longest text: what a bound needs is a few short options.
    pub const MAX_FIELDS: usize = 128;
    pub const MAX_TEXT: usize = 64;

    pub fn insert(&mut self, name: String, value: FieldValue) {
        if self.fields.len() < Self::MAX_FIELDS && name.len() <= Self::MAX_TEXT {
            self.fields.insert(name, value);
        }
    }

    /// The count a field gives: a number, or a list's length (a single text is one item).
    fn count(&self, name: &str) -> Option<u64> {
        match self.fields.get(name)? {
            FieldValue::Count(n) => Some(*n),
            FieldValue::List { len, .. } => Some(*len),
            FieldValue::Text(_) => Some(1),
            FieldValue::Flag(_) | FieldValue::Other => None,
        }
    }

    fn holds(&self, name: &str, expect: &Expect) -> bool {
        let value = self.fields.get(name);
        let is = |text: &str| match value {
            Some(FieldValue::Text(t)) => t == text,
            Some(FieldValue::List { texts, .. }) => texts.iter().any(|t| t == text),
            _ => false,
        };
        match expect {
            Expect::Text(text) => is(text),
            Expect::AnyOf(texts) => texts.iter().any(|t| is(t)),
            Expect::Set(want) => {
                let set = match value {
                    None | Some(FieldValue::Flag(false)) | Some(FieldValue::Count(0)) => false,
                    Some(FieldValue::Text(t)) => !t.is_empty(),
                    Some(FieldValue::List { len, .. }) => *len > 0,
                    Some(_) => true,
                };
                set == *want
            }
        }
    }
}

impl BoundTerm {
    fn amount(&self, fields: &RequestFields) -> u64 {
        let applies = self.when.iter().all(|(f, e)| fields.holds(f, e))
            && !self.unless.iter().any(|(f, e)| fields.holds(f, e));
        if !applies {
            return 0;
        }
        let count = self
            .per
            .as_deref()
            .map_or(1, |f| fields.count(f).unwrap_or(self.default));
        let count = match self.times.as_deref() {
            Some(f) => count.saturating_mul(fields.count(f).unwrap_or(0)),
            None => count,
        };
        let charged = count.saturating_sub(self.above).div_ceil(self.every.max(1));
        self.add.saturating_mul(charged)
    }
}

impl CallBound {
    /// The bound of a call with these fields, in [`CallBound::unit`].
    pub fn amount(&self, fields: &RequestFields) -> u64 {
        self.terms.iter().fold(self.base, |sum, term| {
            sum.saturating_add(term.amount(fields))
        })
    }
}

/// What a call says about its size, for its bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallShape<'a> {
    /// Upper bound on the input tokens (a token-billed call).
    pub input_tokens: u64,
    /// The request's own output cap.
    pub max_output_tokens: Option<u64>,
    /// The request's JSON body fields; `None` when it has no such body.
    pub fields: Option<&'a RequestFields>,
}

/// The output tokens a token-billed call can produce: the request's cap, else the entry's rule
/// (an image model's tokens per image × `n`), else the model's maximum, else
/// [`DEFAULT_MAX_OUTPUT_TOKENS`].
pub fn output_bound(price: Option<&ModelPrice>, call: &CallShape<'_>) -> u64 {
    let by_rule = || {
        let bound = price?.bound.as_ref()?;
        (bound.unit == BoundUnit::OutputTokens).then(|| {
            let none = RequestFields::default();
            bound.amount(call.fields.unwrap_or(&none))
        })
    };
    call.max_output_tokens
        .or_else(by_rule)
        .or_else(|| price.and_then(|p| p.max_output_tokens))
        .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
}

/// The cost bound of one call to a per-call provider's entry: its rule over the request's
/// fields (a call without a body: one unit), at least its `max_per_call`, and never less than
/// one unit's price.
pub fn per_call_cost_bound(price: &ModelPrice, fields: Option<&RequestFields>) -> u64 {
    let one = upper_bound_cost(price, 0, 0, 1);
    let by_rule = match (&price.bound, fields) {
        (Some(bound), Some(fields)) => match bound.unit {
            BoundUnit::Usd => {
                let femto = u128::from(bound.amount(fields));
                u64::try_from(femto.div_ceil(FEMTOUSD_PER_NANOUSD)).unwrap_or(u64::MAX)
            }
            BoundUnit::Units => upper_bound_cost(price, 0, 0, bound.amount(fields)),
            BoundUnit::OutputTokens => 0,
        },
        _ => 0,
    };
    let max = price.max_per_call.as_ref().map_or(0, |m| m.nanousd);
    one.max(by_rule).max(max)
}

/// The amount a call reserves: one call; for a token-billed call its input bound plus
/// [`output_bound`] tokens at the highest rates those tokens could be billed at; for a per-call
/// provider [`per_call_cost_bound`] and no tokens.
pub fn reservation_amount(
    price: Option<&ModelPrice>,
    token_billed: bool,
    call: &CallShape<'_>,
) -> Amount {
    if !token_billed {
        return Amount {
            calls: 1,
            tokens: 0,
            cost_nanousd: price.map_or(0, |p| per_call_cost_bound(p, call.fields)),
        };
    }
    let output = output_bound(price, call);
    let input = call.input_tokens;
    Amount {
        calls: 1,
        tokens: input.saturating_add(output),
        cost_nanousd: price.map_or(0, |p| upper_bound_cost(p, input, output, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Rate;
    use crate::price::{TokenRates, UnitKind, UnitRate};
    use chrono::NaiveDate;

    fn fields(pairs: &[(&str, FieldValue)]) -> RequestFields {
        let mut f = RequestFields::default();
        for (name, value) in pairs {
            f.insert((*name).to_owned(), value.clone());
        }
        f
    }

    fn text(t: &str) -> FieldValue {
        FieldValue::Text(t.to_owned())
    }

    fn usd(text: &str) -> u64 {
        Rate::per_unit_from_decimal(text)
            .unwrap()
            .femtousd_per_unit()
    }

    fn entry(per_request: Option<&str>, per_unit: Option<&str>) -> ModelPrice {
        ModelPrice {
            tokens: None,
            tiers: vec![],
            per_request: per_request.map(|r| Rate::per_unit_from_decimal(r).unwrap()),
            per_unit: per_unit.map(|r| UnitRate {
                unit: UnitKind::Credit,
                rate: Rate::per_unit_from_decimal(r).unwrap(),
            }),
            reported_cost: false,
            max_output_tokens: None,
            context_window: None,
            bound: None,
            max_per_call: None,
            source: "test".into(),
            effective: NaiveDate::default(),
        }
    }

    /// Exa search as its pricing page words it: $7 / 1k with 10 results, $1 / 1k per result
    /// beyond 10, $1 / 1k per summary, deep $12 / 1k and deep-reasoning $15 / 1k.
    fn exa_search() -> CallBound {
        CallBound {
            unit: BoundUnit::Usd,
            base: usd("0.007"),
            terms: vec![
                BoundTerm {
                    add: usd("0.001"),
                    per: Some("numResults".into()),
                    default: 10,
                    above: 10,
                    ..BoundTerm::default()
                },
                BoundTerm {
                    add: usd("0.001"),
                    per: Some("numResults".into()),
                    default: 10,
                    when: vec![("contents.summary".into(), Expect::Set(true))],
                    ..BoundTerm::default()
                },
                BoundTerm {
                    add: usd("0.008"),
                    when: vec![(
                        "type".into(),
                        Expect::AnyOf(vec!["deep".into(), "deep-reasoning".into()]),
                    )],
                    ..BoundTerm::default()
                },
            ],
        }
    }

    #[test]
    fn a_term_times_a_second_field_counts_their_product() {
        // Exa contents: $0.001 per page, each URL's subpages pages too.
        let rule = CallBound {
            unit: BoundUnit::Usd,
            base: 0,
            terms: vec![
                BoundTerm {
                    add: usd("0.001"),
                    per: Some("urls".into()),
                    ..BoundTerm::default()
                },
                BoundTerm {
                    add: usd("0.001"),
                    per: Some("urls".into()),
                    times: Some("subpages".into()),
                    ..BoundTerm::default()
                },
            ],
        };
        let urls = FieldValue::List {
            len: 3,
            texts: vec![],
        };
        assert_eq!(
            rule.amount(&fields(&[("urls", urls.clone())])),
            usd("0.003")
        );
        let crawled = fields(&[("urls", urls), ("subpages", FieldValue::Count(5))]);
        assert_eq!(rule.amount(&crawled), usd("0.018"));
    }

    #[test]
    fn a_rule_adds_its_terms_under_their_conditions() {
        let rule = exa_search();
        // No options: the base price, 10 results included.
        assert_eq!(rule.amount(&fields(&[])), usd("0.007"));
        // 25 results with summaries: 15 more results and 25 summaries.
        let asked = fields(&[
            ("numResults", FieldValue::Count(25)),
            ("contents.summary", FieldValue::Other),
        ]);
        assert_eq!(rule.amount(&asked), usd("0.047"));
        // A summary turned off is no summary; deep search is dearer.
        let deep = fields(&[
            ("contents.summary", FieldValue::Flag(false)),
            ("type", text("deep")),
        ]);
        assert_eq!(rule.amount(&deep), usd("0.015"));
        // A count that is not one (a negative or fractional number) is the provider's default.
        let odd = fields(&[("numResults", FieldValue::Other)]);
        assert_eq!(rule.amount(&odd), usd("0.007"));
    }

    #[test]
    fn counts_round_up_per_every_and_lists_count_their_items() {
        // Tavily extract: 1 credit per 5 URLs, 2 when advanced.
        let per_five = |when| BoundTerm {
            add: 1,
            per: Some("urls".into()),
            every: 5,
            when,
            ..BoundTerm::default()
        };
        let rule = CallBound {
            unit: BoundUnit::Units,
            base: 0,
            terms: vec![
                per_five(vec![]),
                per_five(vec![(
                    "extract_depth".into(),
                    Expect::Text("advanced".into()),
                )]),
            ],
        };
        let urls = |n: u64, depth: &str| {
            fields(&[
                (
                    "urls",
                    FieldValue::List {
                        len: n,
                        texts: vec![],
                    },
                ),
                ("extract_depth", text(depth)),
            ])
        };
        assert_eq!(rule.amount(&urls(5, "basic")), 1);
        assert_eq!(rule.amount(&urls(6, "basic")), 2);
        assert_eq!(rule.amount(&urls(11, "advanced")), 6);
        // One URL as a string is one item.
        assert_eq!(rule.amount(&fields(&[("urls", text("https://a"))])), 1);
    }

    #[test]
    fn a_list_holds_a_text_and_unless_excludes() {
        let formats = FieldValue::List {
            len: 2,
            texts: vec!["markdown".into(), "json".into()],
        };
        let json = BoundTerm {
            add: 4,
            when: vec![("formats".into(), Expect::Text("json".into()))],
            ..BoundTerm::default()
        };
        assert_eq!(json.amount(&fields(&[("formats", formats)])), 4);
        assert_eq!(json.amount(&fields(&[])), 0);
        let high = BoundTerm {
            add: 6_240,
            per: Some("n".into()),
            default: 1,
            unless: vec![(
                "quality".into(),
                Expect::AnyOf(vec!["low".into(), "medium".into()]),
            )],
            ..BoundTerm::default()
        };
        assert_eq!(high.amount(&fields(&[("n", FieldValue::Count(3))])), 18_720);
        assert_eq!(high.amount(&fields(&[("quality", text("low"))])), 0);
        // Saturates instead of overflowing.
        let huge = fields(&[("n", FieldValue::Count(u64::MAX))]);
        assert_eq!(high.amount(&huge), u64::MAX);
    }

    #[test]
    fn a_per_call_bound_is_its_rule_at_least_one_unit_and_its_max() {
        let mut exa = entry(Some("0.007"), None);
        exa.bound = Some(exa_search());
        let asked = fields(&[("numResults", FieldValue::Count(20))]);
        assert_eq!(per_call_cost_bound(&exa, Some(&asked)), 17_000_000);
        // Without a body (a poll), one unit's price.
        assert_eq!(per_call_cost_bound(&exa, None), 7_000_000);
        // Credits priced at the entry's rate.
        let mut firecrawl = entry(None, Some("0.00083"));
        firecrawl.bound = Some(CallBound {
            unit: BoundUnit::Units,
            base: 1,
            terms: vec![BoundTerm {
                add: 4,
                when: vec![("formats".into(), Expect::Text("json".into()))],
                ..BoundTerm::default()
            }],
        });
        let json = fields(&[("formats", text("json"))]);
        assert_eq!(per_call_cost_bound(&firecrawl, Some(&json)), 4_150_000);
        // A declared maximum where the request bounds nothing.
        let mut research = entry(None, Some("0.008"));
        research.max_per_call = Some(MaxPerCall {
            nanousd: 2_000_000_000,
            why: "test".into(),
        });
        let empty = fields(&[]);
        let amount = reservation_amount(
            Some(&research),
            false,
            &CallShape {
                fields: Some(&empty),
                ..CallShape::default()
            },
        );
        assert_eq!(amount.cost_nanousd, 2_000_000_000);
        assert_eq!((amount.calls, amount.tokens), (1, 0));
    }

    #[test]
    fn output_falls_back_from_request_to_rule_to_model_to_default() {
        let mut image = entry(None, None);
        image.tokens = Some(TokenRates {
            input: Rate::per_million_from_decimal("5").unwrap(),
            output: Rate::per_million_from_decimal("40").unwrap(),
            ..TokenRates::default()
        });
        image.bound = Some(CallBound {
            unit: BoundUnit::OutputTokens,
            base: 0,
            terms: vec![BoundTerm {
                add: 6_240,
                per: Some("n".into()),
                default: 1,
                ..BoundTerm::default()
            }],
        });
        let two = fields(&[("n", FieldValue::Count(2))]);
        let shape = |cap, fields| CallShape {
            input_tokens: 100,
            max_output_tokens: cap,
            fields,
        };
        assert_eq!(output_bound(Some(&image), &shape(None, Some(&two))), 12_480);
        assert_eq!(output_bound(Some(&image), &shape(None, None)), 6_240);
        assert_eq!(output_bound(Some(&image), &shape(Some(50), None)), 50);
        image.bound = None;
        image.max_output_tokens = Some(4_096);
        assert_eq!(output_bound(Some(&image), &shape(None, None)), 4_096);
        assert_eq!(
            output_bound(None, &shape(None, None)),
            DEFAULT_MAX_OUTPUT_TOKENS
        );
        let amount = reservation_amount(Some(&image), true, &shape(None, None));
        // 100 × $5/M + 4,096 × $40/M.
        assert_eq!(amount.tokens, 4_196);
        assert_eq!(amount.cost_nanousd, 500_000 + 163_840_000);
    }
}
