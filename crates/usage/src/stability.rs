//! Stability AI image generation. The body reports no usage: a successful image is one unit,
//! priced by the endpoint's per-image tariff.
//!
//! A successful image is a 2xx response that is either raw image bytes (`Accept: image/*`), or
//! JSON with `finish_reason: "SUCCESS"` (v2beta; an `image` without a `finish_reason` counts
//! too), or, on the legacy v1 API, each `artifacts[]` element with `finishReason: "SUCCESS"`.
//! A `CONTENT_FILTERED` result is reported with 0 units (whether it is charged is not
//! established). The base64 image itself is never kept: only its presence is noted.
//!
//! Model names: `.../generate/ultra` → `stable-image-ultra`, `.../generate/core` →
//! `stable-image-core`, `.../generate/sd3` → the request's `model` (default `sd3.5-large`);
//! other v2beta paths `stable-image/{a}/{b}` → `stable-image-{a}-{b}`; v1
//! `/v1/generation/{engine}/...` → the engine.

use tollgate_domain::Usage;

use crate::handler::{Ctx, Handle, Handler, Outcome, parse, set_error};
use crate::json_scan::{Captured, Path, Seg, Spec};

const FINISH: u8 = 1;
const IMAGE: u8 = 2;
const ARTIFACT_FINISH: u8 = 3;
const ERROR: u8 = 4;

pub(crate) const DEFAULT_SD3_MODEL: &str = "sd3.5-large";

pub(crate) fn handler(path: &str, request_model: Option<&str>) -> (Handler, Option<String>) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let model = match segments.as_slice() {
        [_, "stable-image", "generate", "ultra", ..] => Some("stable-image-ultra".to_owned()),
        [_, "stable-image", "generate", "core", ..] => Some("stable-image-core".to_owned()),
        [_, "stable-image", "generate", "sd3", ..] => {
            Some(request_model.unwrap_or(DEFAULT_SD3_MODEL).to_owned())
        }
        [_, "stable-image", a, b, ..] => Some(format!("stable-image-{a}-{b}")),
        ["v1", "generation", engine, ..] => Some((*engine).to_owned()),
        _ => None,
    };
    match model {
        Some(m) => (Handler::Stability(Stability::default()), Some(m)),
        None => (Handler::Unmetered(Default::default()), None),
    }
}

static SPEC: &Spec = &[
    Path {
        id: FINISH,
        segs: &[Seg::Key("finish_reason")],
        copy: true,
    },
    Path {
        id: IMAGE,
        segs: &[Seg::Key("image")],
        copy: false,
    },
    Path {
        id: ARTIFACT_FINISH,
        segs: &[Seg::Key("artifacts"), Seg::Index, Seg::Key("finishReason")],
        copy: true,
    },
    Path {
        id: ERROR,
        segs: &[Seg::Key("errors")],
        copy: true,
    },
    Path {
        id: ERROR,
        segs: &[Seg::Key("message")],
        copy: true,
    },
];

#[derive(Debug, Default)]
pub(crate) struct Stability {
    finish: Option<bool>,
    image: bool,
    artifacts_ok: u64,
    artifacts_seen: bool,
    raw_bytes: u64,
    error: Option<String>,
    complete: bool,
}

impl Handle for Stability {
    fn body_spec(&self) -> &'static Spec {
        SPEC
    }
    fn event_spec(&self, _name: &[u8]) -> Option<&'static Spec> {
        None
    }
    fn capture(&mut self, id: u8, value: Captured<'_>) {
        match id {
            FINISH => {
                if let Some(reason) = parse::<&str>(value) {
                    self.finish = Some(reason == "SUCCESS");
                }
            }
            IMAGE => self.image = true,
            ARTIFACT_FINISH => {
                self.artifacts_seen = true;
                if parse::<&str>(value) == Some("SUCCESS") {
                    self.artifacts_ok += 1;
                }
            }
            ERROR => set_error(&mut self.error, value),
            _ => {}
        }
    }
    fn body_end(&mut self, complete: bool) {
        self.complete = complete;
    }
    fn raw(&mut self, len: usize) {
        self.raw_bytes = self.raw_bytes.saturating_add(len as u64);
    }
    fn finish(self, ctx: &Ctx) -> Outcome {
        let (images, known) = if !ctx.success() {
            (0, false)
        } else if self.raw_bytes > 0 {
            (1, true)
        } else if self.artifacts_seen {
            (self.artifacts_ok, true)
        } else if let Some(ok) = self.finish {
            (u64::from(ok), true)
        } else if self.image {
            (1, true)
        } else {
            (0, false)
        };
        Outcome {
            model: None,
            usage: Usage {
                units: images,
                ..Usage::default()
            },
            usage_found: known,
            units_from_tariff: known,
            // Raw image bytes have no end marker of their own.
            complete: self.complete || self.raw_bytes > 0,
            error: self.error,
            unreadable_count: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_follow_the_endpoint() {
        let m = |p, r| handler(p, r).1;
        assert_eq!(
            m("/v2beta/stable-image/generate/ultra", None).as_deref(),
            Some("stable-image-ultra")
        );
        assert_eq!(
            m("/v2beta/stable-image/generate/core", None).as_deref(),
            Some("stable-image-core")
        );
        assert_eq!(
            m("/v2beta/stable-image/generate/sd3", None).as_deref(),
            Some("sd3.5-large")
        );
        assert_eq!(
            m("/v2beta/stable-image/generate/sd3", Some("sd3.5-medium")).as_deref(),
            Some("sd3.5-medium")
        );
        assert_eq!(
            m(
                "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image",
                None
            )
            .as_deref(),
            Some("stable-diffusion-xl-1024-v1-0")
        );
        assert_eq!(m("/v1/user/balance", None), None);
    }
}
