//! The per-call providers: Tavily, Serper, Exa and Firecrawl. Each bills credits or dollars per
//! call; the "model" a price is looked up by is the endpoint's name.
//!
//! | provider | model | units | fallback when the body does not say |
//! |---|---|---|---|
//! | Tavily | `search`, `extract`, `crawl`, `map`, `research` | `usage.credits` | search: 1 (basic) or 2 (`search_depth: advanced`); extract: 1 (2 advanced) per 5 successful `results`, rounded up; map: 1 per 10 results; crawl: map + extract; research: unknown |
//! | Serper | the path's last segment (`search`, `images`, `news`, …) | `credits` | 1 |
//! | Exa | `search`, `contents`, `findsimilar`, `answer` | 1 per call, with `costDollars.total` as the reported cost | none (no cost: usage unknown) |
//! | Firecrawl | `scrape`, `crawl`, `map`, `search`, `extract`, `batch-scrape` | `creditsUsed`, or a scrape document's `metadata.creditsUsed` | scrape and map: 1; others unknown |
//!
//! Fallbacks apply only to a 2xx response whose body was read to the end, and set
//! `units_from_tariff`.

use tollgate_domain::{Provider, Usage};

use crate::handler::{Ctx, Handle, Outcome, count, div_ceil, set_error};
use crate::json_scan::{Captured, Path, Seg, Spec};

const CREDITS: u8 = 1;
const DOC_CREDITS: u8 = 2;
const RESULT: u8 = 3;
const COST: u8 = 4;
const ERROR: u8 = 5;

const fn path(id: u8, segs: &'static [Seg]) -> Path {
    Path {
        id,
        segs,
        copy: true,
    }
}

static TAVILY_SPEC: &Spec = &[
    path(CREDITS, &[Seg::Key("usage"), Seg::Key("credits")]),
    Path {
        id: RESULT,
        segs: &[Seg::Key("results"), Seg::Index],
        copy: false,
    },
    path(ERROR, &[Seg::Key("detail")]),
    path(ERROR, &[Seg::Key("error")]),
];
static SERPER_SPEC: &Spec = &[
    path(CREDITS, &[Seg::Key("credits")]),
    path(ERROR, &[Seg::Key("message")]),
    path(ERROR, &[Seg::Key("error")]),
];
static EXA_SPEC: &Spec = &[
    path(COST, &[Seg::Key("costDollars"), Seg::Key("total")]),
    path(ERROR, &[Seg::Key("error")]),
];
static FIRECRAWL_SPEC: &Spec = &[
    path(CREDITS, &[Seg::Key("creditsUsed")]),
    path(
        DOC_CREDITS,
        &[
            Seg::Key("data"),
            Seg::Key("metadata"),
            Seg::Key("creditsUsed"),
        ],
    ),
    path(ERROR, &[Seg::Key("error")]),
];

/// How a Tavily call is billed when the body has no `usage.credits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Depth {
    Basic,
    Advanced,
}

#[derive(Debug)]
pub(crate) struct PerCall {
    provider: Provider,
    endpoint: String,
    depth: Depth,
    credits: Option<u64>,
    doc_credits: Option<u64>,
    results: u64,
    cost_nanousd: Option<u64>,
    error: Option<String>,
    complete: bool,
}

impl PerCall {
    /// `None` when the path is not a billed endpoint of the provider.
    pub(crate) fn new(
        provider: Provider,
        path: &str,
        search_depth: Option<&str>,
        extract_depth: Option<&str>,
    ) -> Option<PerCall> {
        let endpoint = endpoint(provider, path)?;
        let depth_text = if endpoint == "search" {
            search_depth
        } else {
            extract_depth
        };
        Some(PerCall {
            provider,
            endpoint,
            depth: if depth_text == Some("advanced") {
                Depth::Advanced
            } else {
                Depth::Basic
            },
            credits: None,
            doc_credits: None,
            results: 0,
            cost_nanousd: None,
            error: None,
            complete: false,
        })
    }

    /// Units from the tariff, for a successful call whose body did not report them.
    fn tariff_units(&self) -> Option<u64> {
        let per_depth = match self.depth {
            Depth::Basic => 1,
            Depth::Advanced => 2,
        };
        match (self.provider, self.endpoint.as_str()) {
            (Provider::Tavily, "search") => Some(per_depth),
            (Provider::Tavily, "extract") => Some(div_ceil(self.results, 5) * per_depth),
            (Provider::Tavily, "map") => Some(div_ceil(self.results, 10)),
            (Provider::Tavily, "crawl") => {
                Some(div_ceil(self.results, 10) + div_ceil(self.results, 5) * per_depth)
            }
            (Provider::Serper, _) => Some(1),
            (Provider::Firecrawl, "scrape" | "map") => Some(1),
            _ => None,
        }
    }
}

/// The endpoint name prices are keyed by.
pub(crate) fn endpoint(provider: Provider, path: &str) -> Option<String> {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .filter(|s| !matches!(*s, "v0" | "v1" | "v2"))
        .collect();
    let first = segments.first().copied()?;
    let name = match provider {
        Provider::Tavily => match first {
            "search" | "extract" | "crawl" | "map" | "research" => first.to_owned(),
            _ => return None,
        },
        Provider::Serper => segments.last().copied()?.to_ascii_lowercase(),
        Provider::Exa => match first.to_ascii_lowercase().as_str() {
            n @ ("search" | "contents" | "findsimilar" | "answer") => n.to_owned(),
            _ => return None,
        },
        Provider::Firecrawl => match (first, segments.get(1).copied()) {
            ("batch", Some("scrape")) => "batch-scrape".to_owned(),
            ("scrape" | "crawl" | "map" | "search" | "extract", _) => first.to_owned(),
            _ => return None,
        },
        _ => return None,
    };
    Some(name)
}

impl Handle for PerCall {
    fn body_spec(&self) -> &'static Spec {
        match self.provider {
            Provider::Tavily => TAVILY_SPEC,
            Provider::Serper => SERPER_SPEC,
            Provider::Exa => EXA_SPEC,
            _ => FIRECRAWL_SPEC,
        }
    }
    fn event_spec(&self, _name: &[u8]) -> Option<&'static Spec> {
        // Exa's `/answer` can stream; its cost rides on a chunk.
        Some(self.body_spec())
    }
    fn prefilter(&self, _name: &[u8], data: &[u8]) -> bool {
        self.provider != Provider::Exa
            || memchr::memmem::find(data, b"\"costDollars\"").is_some()
            || memchr::memmem::find(data, b"\"error\"").is_some()
    }
    fn capture(&mut self, id: u8, value: Captured<'_>) {
        match id {
            CREDITS => self.credits = count(value).or(self.credits),
            DOC_CREDITS => self.doc_credits = count(value).or(self.doc_credits),
            RESULT => self.results += 1,
            COST => {
                if let Captured::Value(text) = value
                    && let Some(nanousd) = dollars_to_nanousd(text)
                {
                    self.cost_nanousd = Some(nanousd);
                }
            }
            ERROR => {
                // Firecrawl and Exa send `"error"` only on failure; a `false` or empty value
                // is no error.
                set_error(&mut self.error, value);
            }
            _ => {}
        }
    }
    fn event_end(&mut self, _name: &[u8], data: Option<&[u8]>) {
        if data.map(<[u8]>::trim_ascii) == Some(b"[DONE]") {
            self.complete = true;
        }
    }
    fn body_end(&mut self, complete: bool) {
        self.complete = complete;
    }
    fn finish(self, ctx: &Ctx) -> Outcome {
        let reported = self.credits.or(self.doc_credits);
        let (units, from_tariff) = match reported {
            Some(units) => (Some(units), false),
            None if ctx.success() && self.complete && self.provider != Provider::Exa => {
                (self.tariff_units(), true)
            }
            None => (None, false),
        };
        let mut usage = Usage {
            units: units.unwrap_or(0),
            reported_cost_nanousd: self.cost_nanousd,
            ..Usage::default()
        };
        let mut usage_found = units.is_some();
        if self.provider == Provider::Exa && self.cost_nanousd.is_some() {
            usage.units = 1;
            usage_found = true;
        }
        Outcome {
            model: Some(self.endpoint),
            usage,
            usage_found,
            units_from_tariff: from_tariff && units.is_some(),
            complete: self.complete,
            error: self.error,
            unreadable_count: None,
        }
    }
}

/// A JSON number of dollars as nano-USD, read exactly from its decimal text (rounded half up
/// below a nano-dollar).
pub(crate) fn dollars_to_nanousd(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let (nanousd, _exact) = tollgate_domain::Decimal::parse(text)
        .ok()?
        .to_scaled(9)
        .ok()?;
    Some(nanousd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_named_for_pricing() {
        let e = |p, path| endpoint(p, path);
        assert_eq!(e(Provider::Tavily, "/search").as_deref(), Some("search"));
        assert_eq!(e(Provider::Tavily, "/usage"), None);
        assert_eq!(e(Provider::Serper, "/news").as_deref(), Some("news"));
        assert_eq!(
            e(Provider::Exa, "/findSimilar").as_deref(),
            Some("findsimilar")
        );
        assert_eq!(
            e(Provider::Firecrawl, "/v2/scrape").as_deref(),
            Some("scrape")
        );
        assert_eq!(
            e(Provider::Firecrawl, "/v1/crawl/abc-123").as_deref(),
            Some("crawl")
        );
        assert_eq!(
            e(Provider::Firecrawl, "/v2/batch/scrape/xyz").as_deref(),
            Some("batch-scrape")
        );
    }

    #[test]
    fn dollars_convert_without_floats() {
        assert_eq!(dollars_to_nanousd(b"0.005"), Some(5_000_000));
        assert_eq!(dollars_to_nanousd(b"0.1"), Some(100_000_000));
        assert_eq!(dollars_to_nanousd(b"1.2e-3"), Some(1_200_000));
        assert_eq!(dollars_to_nanousd(b"0.0000000004"), Some(0));
        assert_eq!(dollars_to_nanousd(b"\"x\""), None);
    }
}
