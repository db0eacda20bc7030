//! One request's state, shared by the Pingora phases: what it is (provider, path, caller), how
//! its body is read, what it reserved, what its response carried, and the snapshot of the
//! configuration it started with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::{Error, ErrorType};
use tollgate_counters::Reservation;
use tollgate_domain::{BillingPeriod, Limit, Provider};
use tollgate_usage::{RequestFacts, Scanner};

use crate::errors::GatewayError;
use crate::inflight::Progress;
use crate::keys::Identity;
use crate::settle::Ended;
use crate::snapshot::Snapshot;
use crate::usage_chunk::UsageChunkFilter;

/// The Pingora error a refusal fails the request with; `fail_to_proxy` renders the refusal kept
/// in the context.
pub(crate) const REFUSED: &str = "refused by the gateway";

/// How the request's body reaches the provider.
#[derive(Debug, Default)]
pub enum BodyState {
    /// No body, or one streamed through as it comes (Stability's uploads): admission needs
    /// nothing from it.
    #[default]
    PassThrough,
    /// Held until complete, then inspected and admitted before its first byte is released
    /// upstream. `chunked`: the upstream request is sent chunked because the body may be
    /// rewritten (its length is not known when the head leaves).
    Held { buffer: Vec<u8>, chunked: bool },
    /// Read whole and admitted in `request_filter`, as it goes upstream: Pingora replays the body
    /// it buffered through `request_body_filter`, which sends this instead.
    Admitted(Bytes),
}

/// What admission reserved for the call.
#[derive(Debug)]
pub struct Admitted {
    /// The call's id in the gateway's in-flight registry (`inflight.rs`).
    pub call_id: u64,
    pub reservation: Reservation,
    pub period: BillingPeriod,
    /// The limits the reservation was checked against, for the alerts of its settle.
    pub limits: Vec<Limit>,
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    /// The configuration this request runs under, from its start to its end.
    pub snapshot: Arc<Snapshot>,
    /// The call's id (`request_id`), set when its head arrives; empty until then.
    pub request_id: String,
    pub started: Instant,
    pub provider: Option<Provider>,
    pub method: http::Method,
    /// The path after the `/{provider}` prefix.
    pub path: String,
    /// The query without the client's key.
    pub query: Option<String>,
    pub identity: Option<Arc<Identity>>,
    pub body: BodyState,
    pub request_bytes: u64,
    pub facts: RequestFacts,
    pub admitted: Option<Admitted>,
    /// The call ended and its event recorded before `logging` (`durable`), its counters still to
    /// settle.
    pub(crate) ended: Option<Ended>,
    /// What the response has brought so far, shared with the shutdown's record of the call.
    pub progress: Option<Arc<Progress>>,
    /// The output cap admission lowered the request's to, to fit what was left of a budget.
    pub output_cap: Option<u64>,
    /// Why the gateway refused or ended the request; kept after `fail_to_proxy` renders it, so
    /// that a call the provider already had (an upload cut off by its deadline) is recorded
    /// with it.
    pub refusal: Option<GatewayError>,
    /// The gateway's own error answer, for the access line and the refusal's usage event.
    pub answered_with: Option<GatewayError>,
    pub scanner: Option<Scanner>,
    /// The gateway asked for a stream's usage chunk that the client did not ask for.
    pub usage_injected: bool,
    /// Removes that chunk from what the client receives (an event stream passed through).
    pub usage_chunk: Option<UsageChunkFilter>,
    /// The provider's status; 0 until a response (or the gateway's own end of the call).
    pub status: u16,
    pub response_bytes: u64,
    /// Time spent in the gateway's own work (routing, admission, scanning, settling).
    pub overhead: Duration,
    /// Time spent waiting for the client's body, left out of `overhead`.
    pub body_wait: Duration,
    /// When the request head went upstream, for the upstream latency.
    pub upstream_sent: Option<Instant>,
}

impl RequestCtx {
    pub fn new(snapshot: Arc<Snapshot>) -> RequestCtx {
        RequestCtx {
            snapshot,
            request_id: String::new(),
            started: Instant::now(),
            provider: None,
            method: http::Method::GET,
            path: String::new(),
            query: None,
            identity: None,
            body: BodyState::PassThrough,
            request_bytes: 0,
            facts: RequestFacts::default(),
            admitted: None,
            ended: None,
            output_cap: None,
            progress: None,
            refusal: None,
            answered_with: None,
            scanner: None,
            usage_injected: false,
            usage_chunk: None,
            status: 0,
            response_bytes: 0,
            overhead: Duration::ZERO,
            body_wait: Duration::ZERO,
            upstream_sent: None,
        }
    }

    /// The one way to refuse: the refusal is kept for `fail_to_proxy` (which renders it in the
    /// provider's shape) and for the usage event; the returned error fails the request.
    pub fn refuse(&mut self, error: GatewayError) -> Box<Error> {
        self.refusal = Some(error);
        Error::new(ErrorType::Custom(REFUSED))
    }

    pub fn provider_name(&self) -> &'static str {
        self.provider.map_or("-", Provider::as_str)
    }

    pub fn user_name(&self) -> &str {
        self.identity.as_ref().map_or("-", |i| i.user.as_str())
    }
}
