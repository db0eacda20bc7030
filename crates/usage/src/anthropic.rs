//! Anthropic Messages (`POST /v1/messages`), JSON and SSE.
//!
//! A stream's `message_start` carries the model and the input side of the usage (with an initial
//! `output_tokens`); each `message_delta` carries usage that is cumulative, so every field seen
//! replaces the earlier value and nothing is ever summed. `message_stop` completes the stream; an
//! `error` event (an overload inside a 200 stream) is the error. `content_block_*` and `ping`
//! events are skipped without being kept.
//!
//! `input_tokens` excludes the cache: normalized input is `input_tokens +
//! cache_creation_input_tokens + cache_read_input_tokens`.

use serde::Deserialize;
use tollgate_domain::Usage;

use crate::handler::{
    Count, Ctx, Handle, Handler, Outcome, count_value, note_unreadable, parse, set_error,
    set_string,
};
use crate::json_scan::{Captured, Path, Seg, Spec};

const USAGE: u8 = 1;
const MODEL: u8 = 2;
const ERROR: u8 = 3;

pub(crate) fn handler(path: &str) -> Handler {
    let path = path.trim_end_matches('/');
    if path.ends_with("/messages") {
        Handler::Anthropic(Messages::default())
    } else {
        Handler::Unmetered(Default::default())
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawUsage {
    input_tokens: Option<Count>,
    output_tokens: Option<Count>,
    cache_creation_input_tokens: Option<Count>,
    cache_read_input_tokens: Option<Count>,
    cache_creation: Option<CacheCreation>,
}

#[derive(Debug, Default, Deserialize)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Option<Count>,
    ephemeral_1h_input_tokens: Option<Count>,
}

/// The last readable value seen of each usage field, and the first value that was not a count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cumulative {
    input: Option<u64>,
    output: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    cache_5m: Option<u64>,
    cache_1h: Option<u64>,
    unreadable: Option<String>,
}

impl Cumulative {
    fn update(&mut self, raw: &RawUsage) {
        fn keep(slot: &mut Option<u64>, new: Option<&Count>) {
            if let Some(n) = count_value(new) {
                *slot = Some(n);
            }
        }
        let cache = raw.cache_creation.as_ref();
        let ttl_5m = cache.and_then(|c| c.ephemeral_5m_input_tokens.as_ref());
        let ttl_1h = cache.and_then(|c| c.ephemeral_1h_input_tokens.as_ref());
        note_unreadable(
            &mut self.unreadable,
            [
                ("input_tokens", raw.input_tokens.as_ref()),
                ("output_tokens", raw.output_tokens.as_ref()),
                (
                    "cache_creation_input_tokens",
                    raw.cache_creation_input_tokens.as_ref(),
                ),
                (
                    "cache_read_input_tokens",
                    raw.cache_read_input_tokens.as_ref(),
                ),
                ("ephemeral_5m_input_tokens", ttl_5m),
                ("ephemeral_1h_input_tokens", ttl_1h),
            ],
        );
        keep(&mut self.input, raw.input_tokens.as_ref());
        keep(&mut self.output, raw.output_tokens.as_ref());
        keep(
            &mut self.cache_creation,
            raw.cache_creation_input_tokens.as_ref(),
        );
        keep(&mut self.cache_read, raw.cache_read_input_tokens.as_ref());
        keep(&mut self.cache_5m, ttl_5m);
        keep(&mut self.cache_1h, ttl_1h);
    }

    fn found(&self) -> bool {
        self.input.is_some() || self.output.is_some()
    }

    fn normalize(&self) -> Usage {
        let read = self.cache_read.unwrap_or(0);
        let by_ttl = self
            .cache_5m
            .unwrap_or(0)
            .saturating_add(self.cache_1h.unwrap_or(0));
        let written = self.cache_creation.unwrap_or(by_ttl);
        Usage {
            input_tokens: self
                .input
                .unwrap_or(0)
                .saturating_add(written)
                .saturating_add(read),
            cached_input_tokens: read,
            cache_creation_input_tokens: written,
            cache_creation_1h_input_tokens: self.cache_1h.unwrap_or(0),
            output_tokens: self.output.unwrap_or(0),
            ..Usage::default()
        }
    }
}

const fn path(id: u8, segs: &'static [Seg]) -> Path {
    Path {
        id,
        segs,
        copy: true,
    }
}

static BODY_SPEC: &Spec = &[
    path(USAGE, &[Seg::Key("usage")]),
    path(MODEL, &[Seg::Key("model")]),
    path(ERROR, &[Seg::Key("error")]),
];
static START_SPEC: &Spec = &[
    path(USAGE, &[Seg::Key("message"), Seg::Key("usage")]),
    path(MODEL, &[Seg::Key("message"), Seg::Key("model")]),
];
static DELTA_SPEC: &Spec = &[path(USAGE, &[Seg::Key("usage")])];
static ERROR_SPEC: &Spec = &[path(ERROR, &[Seg::Key("error")])];
/// For events without an `event:` line: everything any event can carry.
static ANY_SPEC: &Spec = &[
    path(USAGE, &[Seg::Key("message"), Seg::Key("usage")]),
    path(MODEL, &[Seg::Key("message"), Seg::Key("model")]),
    path(USAGE, &[Seg::Key("usage")]),
    path(ERROR, &[Seg::Key("error")]),
];

#[derive(Debug, Default)]
pub(crate) struct Messages {
    usage: Cumulative,
    model: Option<String>,
    error: Option<String>,
    complete: bool,
}

impl Handle for Messages {
    fn body_spec(&self) -> &'static Spec {
        BODY_SPEC
    }
    fn event_spec(&self, name: &[u8]) -> Option<&'static Spec> {
        match name {
            b"message_start" => Some(START_SPEC),
            b"message_delta" => Some(DELTA_SPEC),
            b"error" => Some(ERROR_SPEC),
            b"" => Some(ANY_SPEC),
            _ => None,
        }
    }
    fn prefilter(&self, name: &[u8], data: &[u8]) -> bool {
        // Unnamed events are typed by their data; only these types carry anything.
        !name.is_empty()
            || [&b"message_start"[..], b"message_delta", b"\"error\""]
                .iter()
                .any(|t| memchr::memmem::find(data, t).is_some())
    }
    fn capture(&mut self, id: u8, value: Captured<'_>) {
        match id {
            USAGE => {
                if let Some(raw) = parse::<RawUsage>(value) {
                    self.usage.update(&raw);
                }
            }
            MODEL => set_string(&mut self.model, value),
            ERROR => set_error(&mut self.error, value),
            _ => {}
        }
    }
    fn event_end(&mut self, name: &[u8], data: Option<&[u8]>) {
        let unnamed_stop = name.is_empty()
            && data.is_some_and(|d| memchr::memmem::find(d, b"\"message_stop\"").is_some());
        if name == b"message_stop" || unnamed_stop {
            self.complete = true;
        }
    }
    fn body_end(&mut self, complete: bool) {
        self.complete = complete;
    }
    fn finish(self, _ctx: &Ctx) -> Outcome {
        Outcome {
            model: self.model,
            usage_found: self.usage.found(),
            usage: self.usage.normalize(),
            complete: self.complete,
            error: self.error,
            units_from_tariff: false,
            unreadable_count: self.usage.unreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_includes_both_cache_fields() {
        let raw: RawUsage = serde_json::from_str(
            r#"{"input_tokens":10,"cache_creation_input_tokens":200,"cache_read_input_tokens":3000,
                "cache_creation":{"ephemeral_5m_input_tokens":150,"ephemeral_1h_input_tokens":50},
                "output_tokens":7}"#,
        )
        .unwrap();
        let mut c = Cumulative::default();
        c.update(&raw);
        let u = c.normalize();
        assert_eq!(u.input_tokens, 3210);
        assert_eq!(u.cached_input_tokens, 3000);
        assert_eq!(u.cache_creation_input_tokens, 200);
        assert_eq!(u.cache_creation_1h_input_tokens, 50);
        assert_eq!(u.output_tokens, 7);
    }

    #[test]
    fn deltas_replace_never_add() {
        let mut c = Cumulative::default();
        c.update(&serde_json::from_str(r#"{"input_tokens":25,"output_tokens":1}"#).unwrap());
        c.update(&serde_json::from_str(r#"{"output_tokens":15}"#).unwrap());
        c.update(&serde_json::from_str(r#"{"output_tokens":40,"input_tokens":30}"#).unwrap());
        assert_eq!((c.input, c.output), (Some(30), Some(40)));
    }
}
