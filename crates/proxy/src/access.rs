//! The access log: one `info` event per call, written by `logging` when the call has ended,
//! under the target `tollgate::access` (so `RUST_LOG=warn,tollgate::access=info` keeps exactly
//! these). It names the caller by user and key id — never the key — and carries no prompt, no
//! query string and no header value but the request id.

use pingora::Error;

use crate::context::RequestCtx;
use crate::errors::GatewayError;

/// What settling a call found, for its access line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallSummary {
    /// The model the call was priced under.
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_nanousd: u64,
}

/// Writes the access line of the call in `ctx`: `status` is what the client was answered
/// (0: nothing was), `error` how Pingora ended the request, if it did, and `call` what its
/// settlement found (none: the call was never admitted, or the shutdown recorded it).
pub fn log(ctx: &RequestCtx, status: u16, error: Option<&Error>, call: Option<&CallSummary>) {
    let model = call
        .map(|c| c.model.as_str())
        .or(ctx.facts.model.as_deref())
        .unwrap_or("-");
    let key_id = ctx.identity.as_ref().map_or("-", |i| i.key_id.as_str());
    tracing::info!(
        target: "tollgate::access",
        request_id = ctx.request_id.as_str(),
        user = ctx.user_name(),
        key_id,
        provider = ctx.provider_name(),
        model,
        method = ctx.method.as_str(),
        path = ctx.path.as_str(),
        status,
        input_tokens = call.map_or(0, |c| c.input_tokens),
        output_tokens = call.map_or(0, |c| c.output_tokens),
        cost_nanousd = call.map_or(0, |c| c.cost_nanousd),
        overhead_us = u64::try_from(ctx.overhead.as_micros()).unwrap_or(u64::MAX),
        latency_ms = u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error_code = ctx.answered_with.as_ref().map(GatewayError::code),
        error = error.map(|e| e.etype().as_str()),
        "request"
    );
}
