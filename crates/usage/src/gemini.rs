//! Google Gemini (Generative Language API): `generateContent`, and `streamGenerateContent` both
//! as SSE (`alt=sse`) and as one streamed JSON array.
//!
//! Every chunk of a stream is a whole `GenerateContentResponse` whose `usageMetadata` is
//! cumulative: the last value of each field wins. The JSON array needs no framing of its own:
//! the scanner looks for `usageMetadata` both at the top level and in every array element.
//! The model is in the URL (`/v1beta/models/{model}:{method}`), not in the body.
//!
//! Normalized: input = `promptTokenCount` (which includes cached content) +
//! `toolUsePromptTokenCount`; output = `candidatesTokenCount` + `thoughtsTokenCount` (candidates
//! exclude thoughts); reasoning = `thoughtsTokenCount`; cached = `cachedContentTokenCount`.

use serde::Deserialize;
use tollgate_domain::Usage;

use crate::handler::{
    Count, Ctx, Handle, Handler, Outcome, count_value, note_unreadable, parse, set_error,
};
use crate::json_scan::{Captured, Path, Seg, Spec};

const USAGE: u8 = 1;
const ERROR: u8 = 2;
const FINISH: u8 = 3;

/// The model and method of `/v1beta/models/{model}:{method}` (also `/v1/...`, and tuned models).
pub(crate) fn model_and_method(path: &str) -> Option<(&str, &str)> {
    let at = path.find("models/")?;
    let rest = &path[at + "models/".len()..];
    let (model, method) = rest.split_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((model, method))
}

pub(crate) fn handler(path: &str) -> (Handler, Option<String>) {
    match model_and_method(path) {
        Some((
            model,
            "generateContent" | "streamGenerateContent" | "embedContent" | "batchEmbedContents",
        )) => (Handler::Gemini(Gemini::default()), Some(model.to_owned())),
        other => (
            Handler::Unmetered(Default::default()),
            other.map(|(m, _)| m.to_owned()),
        ),
    }
}

/// Whether the call streams as SSE (`streamGenerateContent?alt=sse`).
pub(crate) fn is_sse(path: &str, query: Option<&str>) -> bool {
    path.ends_with(":streamGenerateContent")
        && query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUsage {
    prompt_token_count: Option<Count>,
    cached_content_token_count: Option<Count>,
    candidates_token_count: Option<Count>,
    thoughts_token_count: Option<Count>,
    tool_use_prompt_token_count: Option<Count>,
}

/// The last readable value seen of each usage field, and the first value that was not a count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cumulative {
    prompt: Option<u64>,
    cached: Option<u64>,
    candidates: Option<u64>,
    thoughts: Option<u64>,
    tool_prompt: Option<u64>,
    unreadable: Option<String>,
}

impl Cumulative {
    fn update(&mut self, raw: &RawUsage) {
        fn keep(slot: &mut Option<u64>, new: Option<&Count>) {
            if let Some(n) = count_value(new) {
                *slot = Some(n);
            }
        }
        note_unreadable(
            &mut self.unreadable,
            [
                ("promptTokenCount", raw.prompt_token_count.as_ref()),
                (
                    "cachedContentTokenCount",
                    raw.cached_content_token_count.as_ref(),
                ),
                ("candidatesTokenCount", raw.candidates_token_count.as_ref()),
                ("thoughtsTokenCount", raw.thoughts_token_count.as_ref()),
                (
                    "toolUsePromptTokenCount",
                    raw.tool_use_prompt_token_count.as_ref(),
                ),
            ],
        );
        keep(&mut self.prompt, raw.prompt_token_count.as_ref());
        keep(&mut self.cached, raw.cached_content_token_count.as_ref());
        keep(&mut self.candidates, raw.candidates_token_count.as_ref());
        keep(&mut self.thoughts, raw.thoughts_token_count.as_ref());
        keep(
            &mut self.tool_prompt,
            raw.tool_use_prompt_token_count.as_ref(),
        );
    }

    fn found(&self) -> bool {
        self.prompt.is_some() || self.candidates.is_some() || self.thoughts.is_some()
    }

    fn normalize(&self) -> Usage {
        let thoughts = self.thoughts.unwrap_or(0);
        Usage {
            input_tokens: self
                .prompt
                .unwrap_or(0)
                .saturating_add(self.tool_prompt.unwrap_or(0)),
            cached_input_tokens: self.cached.unwrap_or(0),
            output_tokens: self.candidates.unwrap_or(0).saturating_add(thoughts),
            reasoning_tokens: thoughts,
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

static SPEC: &Spec = &[
    path(USAGE, &[Seg::Key("usageMetadata")]),
    path(USAGE, &[Seg::Index, Seg::Key("usageMetadata")]),
    path(ERROR, &[Seg::Key("error")]),
    path(ERROR, &[Seg::Index, Seg::Key("error")]),
    path(
        FINISH,
        &[Seg::Key("candidates"), Seg::Index, Seg::Key("finishReason")],
    ),
    path(
        FINISH,
        &[
            Seg::Index,
            Seg::Key("candidates"),
            Seg::Index,
            Seg::Key("finishReason"),
        ],
    ),
];

#[derive(Debug, Default)]
pub(crate) struct Gemini {
    usage: Cumulative,
    error: Option<String>,
    finished: bool,
    complete: bool,
}

impl Handle for Gemini {
    fn body_spec(&self) -> &'static Spec {
        SPEC
    }
    fn event_spec(&self, _name: &[u8]) -> Option<&'static Spec> {
        Some(SPEC)
    }
    fn capture(&mut self, id: u8, value: Captured<'_>) {
        match id {
            USAGE => {
                if let Some(raw) = parse::<RawUsage>(value) {
                    self.usage.update(&raw);
                }
            }
            ERROR => set_error(&mut self.error, value),
            FINISH if parse::<&str>(value).is_some() => self.finished = true,
            _ => {}
        }
    }
    fn event_end(&mut self, _name: &[u8], _data: Option<&[u8]>) {
        // An SSE stream has no terminator: it is complete once a candidate has finished.
        self.complete = self.finished;
    }
    fn body_end(&mut self, complete: bool) {
        self.complete = complete;
    }
    fn finish(self, _ctx: &Ctx) -> Outcome {
        Outcome {
            model: None,
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
    fn model_comes_from_the_path() {
        assert_eq!(
            model_and_method("/v1beta/models/gemini-2.5-pro:streamGenerateContent"),
            Some(("gemini-2.5-pro", "streamGenerateContent"))
        );
        assert_eq!(
            model_and_method("/v1/models/gemini-2.5-flash:generateContent"),
            Some(("gemini-2.5-flash", "generateContent"))
        );
        assert_eq!(model_and_method("/v1beta/models"), None);
        assert!(is_sse(
            "/v1beta/models/x:streamGenerateContent",
            Some("key=k&alt=sse")
        ));
        assert!(!is_sse("/v1beta/models/x:streamGenerateContent", None));
    }

    #[test]
    fn thoughts_are_output_and_tool_prompts_are_input() {
        let mut c = Cumulative::default();
        c.update(
            &serde_json::from_str(
                r#"{"promptTokenCount":5,"candidatesTokenCount":44,"totalTokenCount":235,
                    "thoughtsTokenCount":186,"toolUsePromptTokenCount":7,"cachedContentTokenCount":2}"#,
            )
            .unwrap(),
        );
        let u = c.normalize();
        assert_eq!((u.input_tokens, u.cached_input_tokens), (12, 2));
        assert_eq!((u.output_tokens, u.reasoning_tokens), (230, 186));
    }
}
