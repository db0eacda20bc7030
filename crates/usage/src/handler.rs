//! The provider-specific half of a scanner: which values to look for, and what they mean.
//!
//! Framers (`sse`, `json_scan`, raw bytes) find values; a [`Handler`] says which values each body
//! or event can carry and turns the captured JSON text into normalized usage. The handler is an
//! enum of concrete types, so a chunk costs no allocation and no dynamic dispatch.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::Deserialize;
use tollgate_domain::Usage;

use crate::json_scan::{Captured, Spec};
use crate::{anthropic, gemini, openai, search, stability};

/// What a handler knows at the end of a body, before the request's fallbacks are applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub model: Option<String>,
    pub usage: Usage,
    pub usage_found: bool,
    pub units_from_tariff: bool,
    pub complete: bool,
    pub error: Option<String>,
    /// The first usage count that was not a count (see [`Count`]), as `field = text`.
    pub unreadable_count: Option<String>,
}

/// Facts about the call that handlers need at the end: the response status and what the request
/// body said.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ctx {
    pub status: u16,
    pub request_model: Option<String>,
}

impl Ctx {
    pub(crate) fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug)]
pub(crate) enum Handler {
    Chat(openai::Chat),
    Responses(openai::Responses),
    Images(openai::Images),
    Anthropic(anthropic::Messages),
    Gemini(gemini::Gemini),
    PerCall(search::PerCall),
    Stability(stability::Stability),
    /// An endpoint that is not metered (a model list, a token count): only errors are read.
    Unmetered(ErrorsOnly),
}

macro_rules! each {
    ($self:ident, $h:ident => $e:expr) => {
        match $self {
            Handler::Chat($h) => $e,
            Handler::Responses($h) => $e,
            Handler::Images($h) => $e,
            Handler::Anthropic($h) => $e,
            Handler::Gemini($h) => $e,
            Handler::PerCall($h) => $e,
            Handler::Stability($h) => $e,
            Handler::Unmetered($h) => $e,
        }
    };
}

/// The operations every concrete handler provides.
pub(crate) trait Handle {
    /// The values a plain JSON body (or a streamed JSON array) can carry.
    fn body_spec(&self) -> &'static Spec;
    /// The values an SSE event of this name can carry; `None` skips the event's data.
    fn event_spec(&self, name: &[u8]) -> Option<&'static Spec>;
    /// A cheap look at a buffered event: `false` when it cannot hold a wanted value, which
    /// spares the JSON scan. Must never reject an event that holds one.
    fn prefilter(&self, _name: &[u8], _data: &[u8]) -> bool {
        true
    }
    fn capture(&mut self, id: u8, value: Captured<'_>);
    /// An SSE event ended; `data` is its text when it was kept in memory.
    fn event_end(&mut self, _name: &[u8], _data: Option<&[u8]>) {}
    /// A JSON body ended; `complete` when its top-level value was read to the end.
    fn body_end(&mut self, _complete: bool) {}
    /// Bytes of a body that is not JSON or SSE (an image).
    fn raw(&mut self, _len: usize) {}
    fn finish(self, ctx: &Ctx) -> Outcome;
}

impl Handler {
    pub(crate) fn body_spec(&self) -> &'static Spec {
        each!(self, h => h.body_spec())
    }
    pub(crate) fn event_spec(&self, name: &[u8]) -> Option<&'static Spec> {
        each!(self, h => h.event_spec(name))
    }
    pub(crate) fn prefilter(&self, name: &[u8], data: &[u8]) -> bool {
        each!(self, h => h.prefilter(name, data))
    }
    pub(crate) fn capture(&mut self, id: u8, value: Captured<'_>) {
        each!(self, h => h.capture(id, value))
    }
    pub(crate) fn event_end(&mut self, name: &[u8], data: Option<&[u8]>) {
        each!(self, h => h.event_end(name, data))
    }
    pub(crate) fn body_end(&mut self, complete: bool) {
        each!(self, h => h.body_end(complete))
    }
    pub(crate) fn raw(&mut self, len: usize) {
        each!(self, h => h.raw(len))
    }
    pub(crate) fn finish(self, ctx: &Ctx) -> Outcome {
        each!(self, h => h.finish(ctx))
    }
}

/// Reads only a provider's error body.
#[derive(Debug, Default)]
pub(crate) struct ErrorsOnly {
    error: Option<String>,
    complete: bool,
}

const ERROR: u8 = 1;
static ERRORS_SPEC: &Spec = &[
    crate::json_scan::Path {
        id: ERROR,
        segs: &[crate::json_scan::Seg::Key("error")],
        copy: true,
    },
    crate::json_scan::Path {
        id: ERROR,
        segs: &[crate::json_scan::Seg::Key("message")],
        copy: true,
    },
];

impl Handle for ErrorsOnly {
    fn body_spec(&self) -> &'static Spec {
        ERRORS_SPEC
    }
    fn event_spec(&self, _name: &[u8]) -> Option<&'static Spec> {
        None
    }
    fn capture(&mut self, id: u8, value: Captured<'_>) {
        if id == ERROR {
            set_error(&mut self.error, value);
        }
    }
    fn body_end(&mut self, complete: bool) {
        self.complete = complete;
    }
    fn finish(self, _ctx: &Ctx) -> Outcome {
        Outcome {
            complete: self.complete,
            error: self.error,
            ..Outcome::default()
        }
    }
}

/// Parses a captured value as `T`, treating `null`, a value too big to keep and a value of the
/// wrong shape alike as absent.
pub(crate) fn parse<'a, T: Deserialize<'a>>(value: Captured<'a>) -> Option<T> {
    match value {
        Captured::Value(text) => serde_json::from_slice::<Option<T>>(text).ok().flatten(),
        Captured::TooBig | Captured::Present => None,
    }
}

/// A captured JSON string, compared with `slot` before anything is allocated, so that a model
/// name repeated in every event costs nothing after the first.
pub(crate) fn set_string(slot: &mut Option<String>, value: Captured<'_>) {
    if let Captured::Value(text) = value {
        if let Ok(s) = serde_json::from_slice::<&str>(text) {
            if slot.as_deref() != Some(s) {
                *slot = Some(s.to_owned());
            }
        } else if let Ok(Some(s)) = serde_json::from_slice::<Option<String>>(text) {
            *slot = Some(s);
        }
    }
}

/// A provider's error value as one line of text: a string as is, an object by its `message`
/// (else its `error`, `type` or `name`, else its JSON), an array of strings joined; `null` is no
/// error. An error too big to keep is still an error.
pub(crate) fn error_text(value: Captured<'_>) -> Option<String> {
    let text = match value {
        Captured::Value(text) => text,
        Captured::TooBig | Captured::Present => return Some("error (details too long)".into()),
    };
    let v: serde_json::Value = serde_json::from_slice(text).ok()?;
    describe(&v)
}

fn describe(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(false) => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => ["message", "error", "detail", "type", "name"]
            .iter()
            .find_map(|k| map.get(*k).and_then(describe))
            .or_else(|| Some(v.to_string())),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(describe).collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        other => Some(other.to_string()),
    }
}

/// Records an error unless one was already seen (the first error explains the others).
pub(crate) fn set_error(slot: &mut Option<String>, value: Captured<'_>) {
    if slot.is_none() {
        *slot = error_text(value);
    }
}

/// A JSON number (or numeric string) as a count, read exactly from its text and rounded to the
/// nearest integer.
pub(crate) fn count(value: Captured<'_>) -> Option<u64> {
    let Captured::Value(text) = value else {
        return None;
    };
    let text = std::str::from_utf8(text).ok()?.trim().trim_matches('"');
    let (n, _) = tollgate_domain::Decimal::parse(text)
        .ok()?
        .to_scaled(0)
        .ok()?;
    Some(n)
}

/// A token count as a provider wrote it: a non-negative integer (`12`, `12.0`, `"12"`, `1.2e1`)
/// up to `u64::MAX`, or else the text of what was there (`-5`, `12.5`, `1e30`, `"many"`), kept
/// so that the gateway can say what the provider reported instead of billing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    Read(u64),
    Unreadable(Box<str>),
}

/// The longest text of an unreadable count that is kept.
const UNREADABLE_TEXT_MAX: usize = 40;

impl Count {
    fn of_text(text: &str) -> Count {
        let number = text.trim().trim_matches('"');
        match tollgate_domain::Decimal::parse(number).and_then(|d| d.to_scaled(0)) {
            Ok((n, true)) => Count::Read(n),
            _ => {
                let mut kept: String = text.chars().take(UNREADABLE_TEXT_MAX).collect();
                if kept.len() < text.len() {
                    kept.push('…');
                }
                Count::Unreadable(kept.into())
            }
        }
    }

    pub(crate) fn value(&self) -> Option<u64> {
        match self {
            Count::Read(n) => Some(*n),
            Count::Unreadable(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Count, D::Error> {
        let raw = <&'de serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Count::of_text(raw.get()))
    }
}

/// The value of an optional count, unreadable ones as absent.
pub(crate) fn count_value(count: Option<&Count>) -> Option<u64> {
    count.and_then(Count::value)
}

/// Records in `slot` the first unreadable count among `counts` (`name`, value), as
/// `name = text`, unless one was recorded already.
pub(crate) fn note_unreadable<'a>(
    slot: &mut Option<String>,
    counts: impl IntoIterator<Item = (&'static str, Option<&'a Count>)>,
) {
    if slot.is_some() {
        return;
    }
    *slot = counts.into_iter().find_map(|(name, count)| match count {
        Some(Count::Unreadable(text)) => Some(format!("{name} = {text}")),
        _ => None,
    });
}

/// Searchers built once: building one per event would cost more than the search.
pub(crate) static USAGE_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"usage\""));
pub(crate) static ERROR_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"error\""));

/// Whether `data` has the key `finder` looks for (with its quotes) followed by `:` and a value
/// other than `null`. Keys written with escapes (`"\u0075sage"`) are not recognised; no
/// provider writes them.
pub(crate) fn has_non_null(data: &[u8], finder: &Finder<'_>) -> bool {
    let key_len = finder.needle().len();
    finder.find_iter(data).any(|at| {
        let mut rest = data[at + key_len..].trim_ascii_start();
        let Some(after_colon) = rest.strip_prefix(b":") else {
            return false;
        };
        rest = after_colon.trim_ascii_start();
        !rest.starts_with(b"null")
    })
}

/// `a / b` rounded up.
pub(crate) fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_one_line() {
        let v = |s: &'static str| Captured::Value(s.as_bytes());
        assert_eq!(
            error_text(v(r#"{"type":"overloaded_error","message":"Overloaded"}"#)).as_deref(),
            Some("Overloaded")
        );
        assert_eq!(error_text(v("null")), None);
        assert_eq!(error_text(v(r#"["a","b"]"#)).as_deref(), Some("a; b"));
        assert_eq!(
            error_text(v(r#"{"code":5}"#)).as_deref(),
            Some(r#"{"code":5}"#)
        );
    }

    #[test]
    fn prefilter_sees_only_non_null_keys() {
        let usage = &*USAGE_KEY;
        assert!(!has_non_null(br#"{"usage":null}"#, usage));
        assert!(!has_non_null(br#"{"usage" : null}"#, usage));
        assert!(has_non_null(br#"{"usage":null,"x":1,"usage":{}}"#, usage));
        assert!(!has_non_null(br#"{"text":"usage"}"#, usage));
        assert!(has_non_null(br#"{"error":{}}"#, &ERROR_KEY));
    }

    #[test]
    fn token_counts_keep_what_is_not_a_count() {
        let read = |text: &str| serde_json::from_str::<Option<Count>>(text).unwrap();
        assert_eq!(read("12"), Some(Count::Read(12)));
        assert_eq!(read("12.0"), Some(Count::Read(12)));
        assert_eq!(read("\"12\""), Some(Count::Read(12)));
        assert_eq!(read("1.2e1"), Some(Count::Read(12)));
        assert_eq!(read("18446744073709551615"), Some(Count::Read(u64::MAX)));
        assert_eq!(read("null"), None);
        for text in [
            "-5",
            "12.5",
            "1e30",
            "18446744073709551616",
            "\"many\"",
            "true",
            "{}",
        ] {
            assert_eq!(read(text), Some(Count::Unreadable(text.into())), "{text}");
        }
        let long = format!("\"{}\"", "x".repeat(100));
        let Some(Count::Unreadable(kept)) = read(&long) else {
            panic!("a long string is not a count");
        };
        assert_eq!(kept.chars().count(), UNREADABLE_TEXT_MAX + 1);

        let mut slot = None;
        let (a, b) = (Count::Read(1), Count::Unreadable("-5".into()));
        note_unreadable(
            &mut slot,
            [("input_tokens", Some(&a)), ("output_tokens", Some(&b))],
        );
        assert_eq!(slot.as_deref(), Some("output_tokens = -5"));
        note_unreadable(&mut slot, [("input_tokens", Some(&b))]);
        assert_eq!(
            slot.as_deref(),
            Some("output_tokens = -5"),
            "the first one stays"
        );
    }

    #[test]
    fn counts_are_read_exactly() {
        assert_eq!(count(Captured::Value(b"12")), Some(12));
        assert_eq!(count(Captured::Value(b"2.0")), Some(2));
        assert_eq!(count(Captured::Value(b"\"3\"")), Some(3));
        assert_eq!(count(Captured::Value(b"-1")), None);
        assert_eq!(count(Captured::Value(b"null")), None);
    }
}
