//! Settling a call: what it used, what that costs, and the usage event that records it.
//!
//! Every admitted call ends here exactly once, whatever happened to it. The usage is what the
//! provider reported when the scanner found it; a successful token-billed call whose usage never
//! arrived (a stream cut short, a client gone) is estimated from the bytes that passed and
//! marked `estimated`; a call the provider refused or never answered is recorded with its status
//! and bills nothing beyond what the provider reported. A report no call could have produced
//! (`plausible`) is billed at the bound the call's reservation held instead, marked `estimated`,
//! with what the provider reported in the event's error message.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use pingora::http::ResponseHeader;
use tollgate_config::Config;
use tollgate_domain::{Amount, BillingPeriod, Cost, Provider, Usage, cost};
use tollgate_ledger::UsageEvent;
use tollgate_usage::{RequestFacts, RequestInfo, Scanned, Scanner, priced_name};

use crate::admission::reservation_bound;
use crate::context::RequestCtx;
use crate::keys::Identity;
use crate::usage_chunk::UsageChunkFilter;
use crate::{plausible, pricing};

/// Bytes per token assumed when usage must be estimated: generous for English text, so an
/// estimate errs towards the provider's own count rather than far below it.
const BYTES_PER_TOKEN: u64 = 4;

/// The scanner for a response whose head just arrived: the provider's usage format, chosen by
/// the request (provider, path, facts) and the response's status, type and encoding.
pub fn scanner_for(ctx: &RequestCtx, response: &ResponseHeader) -> Option<Scanner> {
    let provider = ctx.provider?;
    let header =
        |name: http::header::HeaderName| response.headers.get(name).and_then(|v| v.to_str().ok());
    Some(tollgate_usage::scanner(&RequestInfo {
        provider,
        method: ctx.method.as_str(),
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
pub fn start_response(ctx: &mut RequestCtx, response: &ResponseHeader) {
    ctx.status = response.status.as_u16();
    if let Some(progress) = &ctx.progress {
        progress.status.store(ctx.status, Relaxed);
    }
    ctx.scanner = scanner_for(ctx, response);
    if !ctx.usage_injected || !response.status.is_success() {
        return;
    }
    let header = |name| response.headers.get(name).and_then(|v| v.to_str().ok());
    let streamed = header(http::header::CONTENT_TYPE).is_some_and(|t| t.contains("event-stream"))
        && header(http::header::CONTENT_ENCODING)
            .is_none_or(|e| e.eq_ignore_ascii_case("identity"))
        && header(http::header::CONTENT_LENGTH).is_none();
    if streamed {
        ctx.usage_chunk = Some(UsageChunkFilter::default());
    }
}

/// Whether a response whose head just arrived has a body to follow (RFC 9110 §6.4.1): not for
/// a HEAD request, a 1xx, 204 or 304, nor with a `content-length` of 0.
pub fn has_body(ctx: &RequestCtx, response: &ResponseHeader) -> bool {
    let status = response.status.as_u16();
    let empty = response
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    !(ctx.method == http::Method::HEAD
        || response.status.is_informational()
        || status == 204
        || status == 304
        || empty)
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

/// How long a response whose decoding has fallen behind waits before its chunk goes on: the
/// shortest sleep Tokio's timer makes (its wheel turns in milliseconds).
pub const BEHIND_PAUSE: Duration = Duration::from_millis(1);

/// Whether decoding the chunk just observed held the thread a while, or left compressed bytes
/// undecoded, the body not yet over ([`Scanner::busy`]).
///
/// Each feed decodes for about a millisecond, but Pingora's loop goes straight from one chunk
/// to the next while the upstream has more, without yielding: a body that is slow to decode (a
/// bomb up to its budget) would then hold its worker thread one slice after another for the
/// whole body. Even where it yields, the task is ready again at once, and a worker that always
/// has a ready task looks at its sockets and timers only every few dozen polls: every other
/// request on that thread would wait tens of milliseconds for each of its own events. Such a
/// chunk is therefore sent after [`BEHIND_PAUSE`], a sleep in which the thread serves the
/// others: the slow body is paced, the rest are not held up by it.
pub fn decoding_behind(ctx: &RequestCtx, end_of_stream: bool) -> bool {
    !end_of_stream && ctx.scanner.as_ref().is_some_and(Scanner::busy)
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
    /// The amount the call's reservation held: what it is billed if its report is implausible.
    pub reserved: Amount,
    pub transport_error: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency_ms: u64,
}

/// A settled call.
#[derive(Debug)]
pub struct Settled {
    /// What the ledger records.
    pub event: UsageEvent,
    /// The amount that replaces the call's reservation in the counters.
    pub actual: Amount,
    /// The provider's report could not be billed as reported (`plausible`): the call is billed
    /// at its reservation's bound.
    pub implausible: bool,
    /// The call was billed more than its reservation held: which kind of excess, by how much,
    /// and what it asked for (`exceeded`).
    pub exceeded: Option<crate::exceeded::Excess>,
}

/// The usage event of a call and the amount that replaces its reservation.
pub fn settle_call(config: &Config, call: CallRecord<'_>) -> Settled {
    let mut scanned = call.scanned.unwrap_or_default();
    let success = (200..300).contains(&call.status);
    let token_billed = call.provider.is_token_billed();
    let model = match scanned.model.take() {
        Some(model) => model,
        None => priced_name(call.provider, call.path, call.facts.model.as_deref()),
    };
    let mut price = pricing::resolve(config, call.provider, &model);
    let reported = scanned.usage_found || scanned.unreadable_count.is_some();
    let implausible = reported
        .then(|| {
            plausible::implausible(
                &scanned.usage,
                scanned.unreadable_count.as_deref(),
                &model,
                price.price(),
                token_billed,
            )
        })
        .flatten();
    let (usage, cost, estimated) = if implausible.is_some() {
        // Billed as admission bounded it: the request's model, under the same snapshot.
        let admitted = priced_name(call.provider, call.path, call.facts.model.as_deref());
        price = pricing::resolve(config, call.provider, &admitted);
        let (usage, cost) =
            reservation_bound(call.facts, call.reserved, price.price(), token_billed);
        (usage, cost, true)
    } else {
        let (usage, estimated) = if scanned.usage_found {
            (scanned.usage, scanned.units_from_tariff)
        } else if success && token_billed {
            (estimate(call.facts, call.response_bytes), true)
        } else {
            (Usage::default(), false)
        };
        let cost = price.price().map_or(Cost::default(), |p| cost(p, &usage));
        (usage, cost, estimated)
    };
    let billed = success || reported;
    let actual = Amount {
        calls: u64::from(billed),
        tokens: usage.total_tokens(),
        cost_nanousd: cost.total_nanousd,
    };
    let failure = scanned
        .error
        .or(call.transport_error)
        .or(scanned.decode_error);
    let error_message = match (&implausible, failure) {
        (Some(why), failure) => Some(format!(
            "usage not billed as reported: {} {why}; billed at the call's reserved bound{}",
            call.provider,
            failure.map(|f| format!("; {f}")).unwrap_or_default()
        )),
        (None, failure) => failure,
    };
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
        refusal_reason: None,
    };
    Settled {
        exceeded: crate::exceeded::exceeded(
            call.reserved,
            actual,
            usage.input_tokens,
            call.facts,
            price.price(),
        ),
        event,
        actual,
        implausible: implausible.is_some(),
    }
}

fn estimate(facts: &RequestFacts, response_bytes: u64) -> Usage {
    Usage {
        input_tokens: facts.input_tokens_bound.div_ceil(BYTES_PER_TOKEN),
        output_tokens: response_bytes.div_ceil(BYTES_PER_TOKEN),
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::reservation_amount;
    use tollgate_domain::AnchorDay;

    const CHAT: &str = "/v1/chat/completions";
    const BODY: &str = r#"{"model":"gpt-4o","messages":[],"max_tokens":50}"#;

    fn shipped() -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml");
        let env = |name: &str| name.ends_with("_API_KEY").then(|| "sk-test".to_owned());
        tollgate_config::load_with_env(&path, &env).unwrap().config
    }

    /// Settles a gpt-4o chat call of [`BODY`] whose response reported `usage`.
    fn settle(config: &Config, usage: Usage, unreadable_count: Option<&str>) -> Settled {
        let identity = Identity {
            user: "alice".into(),
            plan: "pro".into(),
            key_id: "k".into(),
            anchor_day: AnchorDay::CALENDAR_MONTH,
            disabled: false,
            rules: Default::default(),
        };
        let facts = RequestFacts::read(Provider::OpenAi, CHAT, BODY.as_bytes()).unwrap();
        let price = pricing::resolve(config, Provider::OpenAi, "gpt-4o");
        settle_call(
            config,
            CallRecord {
                request_id: "req-plausible",
                provider: Provider::OpenAi,
                identity: &identity,
                period: BillingPeriod::containing(Utc::now(), identity.anchor_day),
                method: "POST",
                path: CHAT,
                facts: &facts,
                status: 200,
                reserved: reservation_amount(&facts, price.price(), true),
                scanned: Some(Scanned {
                    model: Some("gpt-4o-2024-08-06".into()),
                    usage,
                    usage_found: true,
                    complete: true,
                    unreadable_count: unreadable_count.map(str::to_owned),
                    ..Scanned::default()
                }),
                transport_error: None,
                request_bytes: BODY.len() as u64,
                response_bytes: 300,
                latency_ms: 1,
            },
        )
    }

    fn tokens(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    #[test]
    fn an_implausible_report_is_billed_at_the_reservation() {
        let config = shipped();
        let facts = RequestFacts::read(Provider::OpenAi, CHAT, BODY.as_bytes()).unwrap();
        let price = pricing::resolve(&config, Provider::OpenAi, "gpt-4o");
        let reserved = reservation_amount(&facts, price.price(), true);
        let cases = [
            (
                tokens(u64::MAX, 10),
                None,
                "18446744073709551615 input + 10 output",
            ),
            (tokens(9_000_000_000_000, 10), None, "9000000000000 input"),
            (tokens(19, 9_000_000_000_000), None, "9000000000000 output"),
            (
                tokens(0, 10),
                Some("prompt_tokens = 1e30"),
                "prompt_tokens = 1e30",
            ),
            (
                tokens(0, 10),
                Some("prompt_tokens = -5"),
                "prompt_tokens = -5",
            ),
        ];
        for (usage, unreadable, named) in cases {
            let settled = settle(&config, usage, unreadable);
            let event = &settled.event;
            assert!(settled.implausible, "{named}");
            assert_eq!(settled.actual, reserved, "{named}");
            assert!(event.estimated);
            assert_eq!(
                (event.usage.input_tokens, event.usage.output_tokens),
                (BODY.len() as u64, 50)
            );
            assert_eq!(event.cost.total_nanousd, reserved.cost_nanousd);
            assert_eq!(event.price_version, price.version());
            let error = event.error_message.as_deref().unwrap();
            assert!(
                error.starts_with("usage not billed as reported: openai reported "),
                "{error}"
            );
            assert!(error.contains(named), "{error}");
        }
    }

    #[test]
    fn a_plausible_report_is_billed_as_reported() {
        let config = shipped();
        let settled = settle(&config, tokens(1_337, 211), None);
        assert!(!settled.implausible);
        assert!(!settled.event.estimated && settled.event.error_message.is_none());
        assert_eq!(settled.actual.tokens, 1_548);
        // More than the reservation (an image counted in tokens, a tool's turns) is still billed.
        let settled = settle(&config, tokens(120_000, 16_000), None);
        assert!(!settled.implausible);
        assert_eq!(settled.actual.tokens, 136_000);
    }
}
