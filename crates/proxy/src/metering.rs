//! Settling a call: what it used, what that costs, and the usage event that records it.
//!
//! Every admitted call ends here exactly once, whatever happened to it. The usage is what the
//! provider reported when the scanner found it; a successful token-billed call whose usage never
//! arrived (a stream cut short, a client gone) is estimated from the bytes that passed and
//! marked `estimated`; a call the provider refused or never answered is recorded with its status
//! and bills nothing beyond what the provider reported.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use chrono::Utc;
use pingora::http::ResponseHeader;
use tollgate_config::Config;
use tollgate_domain::{Amount, BillingPeriod, Cost, Provider, Usage, cost};
use tollgate_ledger::UsageEvent;
use tollgate_usage::{RequestFacts, RequestInfo, Scanned, Scanner, priced_name};

use crate::context::RequestCtx;
use crate::keys::Identity;
use crate::pricing;
use crate::usage_chunk::UsageChunkFilter;

/// Bytes per token assumed when usage must be estimated: generous for English text, so an
/// estimate errs towards the provider's own count rather than far below it.
const BYTES_PER_TOKEN: u64 = 4;

/// The scanner for a response whose head just arrived: the provider's usage format, chosen by
/// the request (provider, path, facts) and the response's status, type and encoding.
pub fn scanner_for(ctx: &RequestCtx, method: &str, response: &ResponseHeader) -> Option<Scanner> {
    let provider = ctx.provider?;
    let header =
        |name: http::header::HeaderName| response.headers.get(name).and_then(|v| v.to_str().ok());
    Some(tollgate_usage::scanner(&RequestInfo {
        provider,
        method,
        path: &ctx.path,
        query: ctx.query.as_deref(),
        request: &ctx.facts,
        response_status: response.status.as_u16(),
        response_content_type: header(http::header::CONTENT_TYPE),
        response_content_encoding: header(http::header::CONTENT_ENCODING),
    }))
}

/// Starts reading a response whose head just arrived: its scanner, and the filter that keeps
/// the usage chunk the gateway asked for from a client that did not (an event stream passed
/// through as the provider sent it, uncompressed and without a fixed length).
pub fn start_response(ctx: &mut RequestCtx, method: &str, response: &ResponseHeader) {
    ctx.status = response.status.as_u16();
    if let Some(progress) = &ctx.progress {
        progress.status.store(ctx.status, Relaxed);
    }
    ctx.scanner = scanner_for(ctx, method, response);
    let header = |name| response.headers.get(name).and_then(|v| v.to_str().ok());
    let streamed = header(http::header::CONTENT_TYPE).is_some_and(|t| t.contains("event-stream"))
        && header(http::header::CONTENT_ENCODING)
            .is_none_or(|e| e.eq_ignore_ascii_case("identity"))
        && header(http::header::CONTENT_LENGTH).is_none();
    if ctx.usage_injected && streamed && response.status.is_success() {
        ctx.usage_chunk = Some(UsageChunkFilter::default());
    }
}

/// One chunk of the response on its way to the client: counted, fed to the scanner as the
/// provider sent it, and passed on (without the injected usage chunk).
pub fn observe_chunk(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end_of_stream: bool) {
    if let Some(chunk) = body.as_ref() {
        ctx.response_bytes += chunk.len() as u64;
        if let Some(progress) = &ctx.progress {
            progress
                .response_bytes
                .fetch_add(chunk.len() as u64, Relaxed);
        }
        if let Some(scanner) = ctx.scanner.as_mut() {
            scanner.feed(chunk);
        }
    }
    if let Some(filter) = ctx.usage_chunk.as_mut() {
        let chunk = body.take().unwrap_or_default();
        let out = filter.filter(chunk, end_of_stream);
        *body = (!out.is_empty() || end_of_stream).then_some(out);
    }
}

/// What the proxy knows about a finished call.
#[derive(Debug)]
pub struct CallRecord<'a> {
    pub provider: Provider,
    /// The call's `x-request-id`.
    pub request_id: &'a str,
    pub identity: &'a Identity,
    pub period: BillingPeriod,
    pub method: &'a str,
    pub path: &'a str,
    pub facts: &'a RequestFacts,
    /// The provider's status; 0 when no response arrived.
    pub status: u16,
    pub scanned: Option<Scanned>,
    pub transport_error: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency_ms: u64,
}

/// The usage event of a call and the amount that replaces its reservation.
pub fn settle_call(config: &Config, call: CallRecord<'_>) -> (UsageEvent, Amount) {
    let mut scanned = call.scanned.unwrap_or_default();
    let success = (200..300).contains(&call.status);
    let model = match scanned.model.take() {
        Some(model) => model,
        None => priced_name(call.provider, call.path, call.facts.model.as_deref()),
    };
    let (usage, estimated) = if scanned.usage_found {
        (scanned.usage, scanned.units_from_tariff)
    } else if success && call.provider.is_token_billed() {
        (estimate(call.facts, call.response_bytes), true)
    } else {
        (Usage::default(), false)
    };
    let price = pricing::resolve(config, call.provider, &model);
    let cost = price.price().map_or(Cost::default(), |p| cost(p, &usage));
    let billed = success || scanned.usage_found;
    let actual = Amount {
        calls: u64::from(billed),
        tokens: usage.total_tokens(),
        cost_nanousd: cost.total_nanousd,
    };
    let error_message = scanned
        .error
        .or(call.transport_error)
        .or(scanned.decode_error);
    let event = UsageEvent {
        event_id: UsageEvent::new_id(),
        user_id: call.identity.user.clone(),
        key_id: Some(call.identity.key_id.clone()),
        provider: call.provider,
        model,
        endpoint: call.path.to_owned(),
        method: call.method.to_owned(),
        status: call.status,
        usage,
        cost,
        price_version: price.version(),
        estimated,
        latency_ms: call.latency_ms,
        request_bytes: call.request_bytes,
        response_bytes: call.response_bytes,
        billing_period: call.period.key(),
        occurred_at: Utc::now(),
        error_message,
        request_id: Some(call.request_id.to_owned()),
    };
    (event, actual)
}

fn estimate(facts: &RequestFacts, response_bytes: u64) -> Usage {
    Usage {
        input_tokens: facts.input_tokens_bound.div_ceil(BYTES_PER_TOKEN),
        output_tokens: response_bytes.div_ceil(BYTES_PER_TOKEN),
        ..Usage::default()
    }
}
