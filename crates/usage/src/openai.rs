//! OpenAI: chat completions (also the legacy completions and embeddings, and Mistral, which
//! speaks the same format), the Responses API, and image generation.
//!
//! - Chat: `usage` on the body, or on the one stream chunk before `data: [DONE]` when
//!   `stream_options.include_usage` was set (every other chunk has `"usage": null`, which the
//!   prefilter skips without parsing). A stream is complete at `[DONE]`.
//! - Responses: `response.usage` on the terminal events `response.completed`,
//!   `response.incomplete` and `response.failed` (each completes the stream); `error` events and
//!   `response.failed` carry the error. The large `response.output_text.delta` events are skipped.
//! - Images: `usage` (GPT image models) and one unit per element of `data`; a stream's
//!   `image_generation.completed` (or `image_edit.completed`) event carries the usage, while the
//!   `partial_image` events, which are mostly base64, are never kept.

use serde::Deserialize;
use tollgate_domain::Usage;

use crate::handler::{
    Count, Ctx, ERROR_KEY, Handle, Handler, Outcome, USAGE_KEY, count_value, has_non_null,
    note_unreadable, parse, set_error, set_string,
};
use crate::json_scan::{Captured, Path, Seg, Spec};

const USAGE: u8 = 1;
const MODEL: u8 = 2;
const ERROR: u8 = 3;
const TYPE: u8 = 4;
const IMAGE: u8 = 5;

/// Picks the handler for a path under `/openai` (or `/mistral`, which shares the chat format).
pub(crate) fn handler(path: &str) -> Handler {
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions")
        || path.ends_with("/completions")
        || path.ends_with("/embeddings")
    {
        Handler::Chat(Chat::default())
    } else if path.ends_with("/responses") {
        Handler::Responses(Responses::default())
    } else if path.ends_with("/images/generations")
        || path.ends_with("/images/edits")
        || path.ends_with("/images/variations")
    {
        Handler::Images(Images::default())
    } else {
        Handler::Unmetered(Default::default())
    }
}

/// The usage object of chat completions, embeddings, Responses and images: both the
/// `prompt_/completion_` and the `input_/output_` spellings, every detail optional.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawUsage {
    prompt_tokens: Option<Count>,
    completion_tokens: Option<Count>,
    input_tokens: Option<Count>,
    output_tokens: Option<Count>,
    prompt_tokens_details: Option<InputDetails>,
    input_tokens_details: Option<InputDetails>,
    completion_tokens_details: Option<OutputDetails>,
    output_tokens_details: Option<OutputDetails>,
    /// Mistral's older spelling of cached prompt tokens.
    num_cached_tokens: Option<Count>,
}

#[derive(Debug, Default, Deserialize)]
struct InputDetails {
    cached_tokens: Option<Count>,
    cache_write_tokens: Option<Count>,
}

#[derive(Debug, Default, Deserialize)]
struct OutputDetails {
    reasoning_tokens: Option<Count>,
}

impl RawUsage {
    fn in_details(&self) -> Option<&InputDetails> {
        self.prompt_tokens_details
            .as_ref()
            .or(self.input_tokens_details.as_ref())
    }

    fn out_details(&self) -> Option<&OutputDetails> {
        self.completion_tokens_details
            .as_ref()
            .or(self.output_tokens_details.as_ref())
    }

    /// `None` when the object holds no readable input or output count. A count that is not one
    /// counts as absent here; [`RawUsage::note_unreadable`] reports it.
    pub(crate) fn normalize(&self) -> Option<Usage> {
        let input = count_value(self.prompt_tokens.as_ref().or(self.input_tokens.as_ref()));
        let output = count_value(
            self.completion_tokens
                .as_ref()
                .or(self.output_tokens.as_ref()),
        );
        if input.is_none() && output.is_none() {
            return None;
        }
        let (in_details, out_details) = (self.in_details(), self.out_details());
        Some(Usage {
            input_tokens: input.unwrap_or(0),
            cached_input_tokens: count_value(in_details.and_then(|d| d.cached_tokens.as_ref()))
                .or(count_value(self.num_cached_tokens.as_ref()))
                .unwrap_or(0),
            cache_creation_input_tokens: count_value(
                in_details.and_then(|d| d.cache_write_tokens.as_ref()),
            )
            .unwrap_or(0),
            output_tokens: output.unwrap_or(0),
            reasoning_tokens: count_value(out_details.and_then(|d| d.reasoning_tokens.as_ref()))
                .unwrap_or(0),
            ..Usage::default()
        })
    }

    /// Records the first count of this object that is not a count, unless one was recorded.
    pub(crate) fn note_unreadable(&self, slot: &mut Option<String>) {
        let (in_details, out_details) = (self.in_details(), self.out_details());
        note_unreadable(
            slot,
            [
                ("prompt_tokens", self.prompt_tokens.as_ref()),
                ("input_tokens", self.input_tokens.as_ref()),
                ("completion_tokens", self.completion_tokens.as_ref()),
                ("output_tokens", self.output_tokens.as_ref()),
                (
                    "cached_tokens",
                    in_details.and_then(|d| d.cached_tokens.as_ref()),
                ),
                (
                    "cache_write_tokens",
                    in_details.and_then(|d| d.cache_write_tokens.as_ref()),
                ),
                ("num_cached_tokens", self.num_cached_tokens.as_ref()),
                (
                    "reasoning_tokens",
                    out_details.and_then(|d| d.reasoning_tokens.as_ref()),
                ),
            ],
        );
    }
}

/// What a response's `usage` objects said: the last readable usage, and the first count that
/// was not one.
#[derive(Debug, Default)]
struct Reported {
    usage: Option<Usage>,
    unreadable_count: Option<String>,
}

impl Reported {
    fn set(&mut self, value: Captured<'_>) {
        if let Some(raw) = parse::<RawUsage>(value) {
            raw.note_unreadable(&mut self.unreadable_count);
            if let Some(u) = raw.normalize() {
                self.usage = Some(u);
            }
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

static CHAT_SPEC: &Spec = &[
    path(USAGE, &[Seg::Key("usage")]),
    path(MODEL, &[Seg::Key("model")]),
    path(ERROR, &[Seg::Key("error")]),
];

/// Chat completions, legacy completions, embeddings; Mistral's chat, FIM and embeddings.
#[derive(Debug, Default)]
pub(crate) struct Chat {
    usage: Reported,
    model: Option<String>,
    error: Option<String>,
    complete: bool,
}

impl Handle for Chat {
    fn body_spec(&self) -> &'static Spec {
        CHAT_SPEC
    }
    fn event_spec(&self, _name: &[u8]) -> Option<&'static Spec> {
        Some(CHAT_SPEC)
    }
    fn prefilter(&self, _name: &[u8], data: &[u8]) -> bool {
        self.model.is_none() || has_non_null(data, &USAGE_KEY) || has_non_null(data, &ERROR_KEY)
    }
    fn capture(&mut self, id: u8, value: Captured<'_>) {
        match id {
            USAGE => self.usage.set(value),
            MODEL => set_string(&mut self.model, value),
            ERROR => set_error(&mut self.error, value),
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
    fn finish(self, _ctx: &Ctx) -> Outcome {
        Outcome {
            model: self.model,
            usage_found: self.usage.usage.is_some(),
            usage: self.usage.usage.unwrap_or_default(),
            complete: self.complete,
            error: self.error,
            units_from_tariff: false,
            unreadable_count: self.usage.unreadable_count,
        }
    }
}

static RESPONSES_BODY_SPEC: &Spec = &[
    path(USAGE, &[Seg::Key("usage")]),
    path(MODEL, &[Seg::Key("model")]),
    path(ERROR, &[Seg::Key("error")]),
];

static RESPONSES_EVENT_SPEC: &Spec = &[
    path(TYPE, &[Seg::Key("type")]),
    path(USAGE, &[Seg::Key("response"), Seg::Key("usage")]),
    path(MODEL, &[Seg::Key("response"), Seg::Key("model")]),
    path(ERROR, &[Seg::Key("response"), Seg::Key("error")]),
    // A standalone `error` event: {"type":"error","code":..,"message":..}.
    path(ERROR, &[Seg::Key("message")]),
    path(ERROR, &[Seg::Key("error")]),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponsesEvent {
    Terminal,
    Failed,
    Error,
    Other,
}

fn responses_event(name: &[u8]) -> ResponsesEvent {
    match name {
        b"response.completed" | b"response.incomplete" => ResponsesEvent::Terminal,
        b"response.failed" => ResponsesEvent::Failed,
        b"error" => ResponsesEvent::Error,
        _ => ResponsesEvent::Other,
    }
}

/// The Responses API (`POST /v1/responses`).
#[derive(Debug, Default)]
pub(crate) struct Responses {
    usage: Reported,
    model: Option<String>,
    error: Option<String>,
    complete: bool,
    /// This event's `type`, for streams that omit `event:` lines.
    event_type: Option<ResponsesEvent>,
    event_error: Option<String>,
}

impl Handle for Responses {
    fn body_spec(&self) -> &'static Spec {
        RESPONSES_BODY_SPEC
    }
    fn event_spec(&self, name: &[u8]) -> Option<&'static Spec> {
        match name {
            b"" | b"response.created" | b"response.in_progress" => Some(RESPONSES_EVENT_SPEC),
            _ if responses_event(name) != ResponsesEvent::Other => Some(RESPONSES_EVENT_SPEC),
            _ => None,
        }
    }
    fn capture(&mut self, id: u8, value: Captured<'_>) {
        match id {
            TYPE => {
                if let Captured::Value(text) = value {
                    let name = text.strip_prefix(b"\"").unwrap_or(text);
                    let name = name.strip_suffix(b"\"").unwrap_or(name);
                    self.event_type = Some(responses_event(name));
                }
            }
            USAGE => self.usage.set(value),
            MODEL => set_string(&mut self.model, value),
            ERROR => set_error(&mut self.event_error, value),
            _ => {}
        }
    }
    fn event_end(&mut self, name: &[u8], _data: Option<&[u8]>) {
        let kind = match (name, self.event_type.take()) {
            (b"", Some(kind)) => kind,
            _ => responses_event(name),
        };
        let event_error = self.event_error.take();
        match kind {
            ResponsesEvent::Terminal => self.complete = true,
            ResponsesEvent::Failed => {
                self.complete = true;
                self.error = self.error.take().or(event_error);
            }
            ResponsesEvent::Error => self.error = self.error.take().or(event_error),
            ResponsesEvent::Other => {}
        }
    }
    fn body_end(&mut self, complete: bool) {
        self.complete = complete;
        // A body's `error` is `null` on success; anything else is the failure.
        self.error = self.event_error.take();
    }
    fn finish(self, _ctx: &Ctx) -> Outcome {
        Outcome {
            model: self.model,
            usage_found: self.usage.usage.is_some(),
            usage: self.usage.usage.unwrap_or_default(),
            complete: self.complete,
            error: self.error,
            units_from_tariff: false,
            unreadable_count: self.usage.unreadable_count,
        }
    }
}

static IMAGES_BODY_SPEC: &Spec = &[
    path(USAGE, &[Seg::Key("usage")]),
    path(ERROR, &[Seg::Key("error")]),
    Path {
        id: IMAGE,
        segs: &[Seg::Key("data"), Seg::Index],
        copy: false,
    },
];

static IMAGES_EVENT_SPEC: &Spec = &[
    path(TYPE, &[Seg::Key("type")]),
    path(USAGE, &[Seg::Key("usage")]),
    path(ERROR, &[Seg::Key("error")]),
];

fn image_completed(name: &[u8]) -> bool {
    name.ends_with(b".completed")
}

/// Image generation and edits: GPT image models report tokens; every model returns its images
/// in `data`, counted as units.
#[derive(Debug, Default)]
pub(crate) struct Images {
    usage: Reported,
    images: u64,
    error: Option<String>,
    complete: bool,
    event_completed: bool,
}

impl Handle for Images {
    fn body_spec(&self) -> &'static Spec {
        IMAGES_BODY_SPEC
    }
    fn event_spec(&self, name: &[u8]) -> Option<&'static Spec> {
        (name.is_empty() || image_completed(name) || name == b"error").then_some(IMAGES_EVENT_SPEC)
    }
    fn capture(&mut self, id: u8, value: Captured<'_>) {
        match id {
            TYPE => {
                if let Captured::Value(text) = value {
                    self.event_completed = text.ends_with(b".completed\"");
                }
            }
            USAGE => self.usage.set(value),
            ERROR => set_error(&mut self.error, value),
            IMAGE => self.images += 1,
            _ => {}
        }
    }
    fn event_end(&mut self, name: &[u8], _data: Option<&[u8]>) {
        if image_completed(name) || (name.is_empty() && self.event_completed) {
            self.images += 1;
            self.complete = true;
        }
        self.event_completed = false;
    }
    fn body_end(&mut self, complete: bool) {
        self.complete = complete;
    }
    fn finish(self, ctx: &Ctx) -> Outcome {
        let mut usage = self.usage.usage.unwrap_or_default();
        let images = if ctx.success() { self.images } else { 0 };
        usage.units = images;
        Outcome {
            model: None,
            usage_found: self.usage.usage.is_some() || images > 0,
            usage,
            complete: self.complete,
            error: self.error,
            units_from_tariff: false,
            unreadable_count: self.usage.unreadable_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_normalize_alike() {
        let chat: RawUsage = serde_json::from_str(
            r#"{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
                "prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":3}}"#,
        )
        .unwrap();
        let responses: RawUsage = serde_json::from_str(
            r#"{"input_tokens":19,"input_tokens_details":{"cached_tokens":4},
                "output_tokens":10,"output_tokens_details":{"reasoning_tokens":3},
                "total_tokens":29}"#,
        )
        .unwrap();
        let want = Usage {
            input_tokens: 19,
            cached_input_tokens: 4,
            output_tokens: 10,
            reasoning_tokens: 3,
            ..Usage::default()
        };
        assert_eq!(chat.normalize(), Some(want));
        assert_eq!(responses.normalize(), Some(want));
    }

    #[test]
    fn null_details_and_empty_usage() {
        let u: RawUsage = serde_json::from_str(
            r#"{"prompt_tokens":5,"prompt_tokens_details":null,"completion_tokens_details":null}"#,
        )
        .unwrap();
        assert_eq!(u.normalize().map(|u| u.input_tokens), Some(5));
        let empty: RawUsage = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.normalize(), None);
    }

    #[test]
    fn paths_pick_handlers() {
        assert!(matches!(handler("/v1/chat/completions"), Handler::Chat(_)));
        assert!(matches!(handler("/v1/embeddings"), Handler::Chat(_)));
        assert!(matches!(handler("/v1/responses"), Handler::Responses(_)));
        assert!(matches!(
            handler("/v1/images/generations"),
            Handler::Images(_)
        ));
        assert!(matches!(handler("/v1/models"), Handler::Unmetered(_)));
    }
}
