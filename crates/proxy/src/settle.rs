//! The end of every admitted call, exactly once: what it used (the scanner's report, a job
//! poll's increase, or its reservation's bound when the report is implausible), what that
//! costs, the reservation settled with the actual amounts, the thresholds it crossed raised as
//! alerts, and its usage event handed to the ledger. Also the end of a call the gateway fails:
//! a hold given back when nothing reached the provider.

use std::sync::Arc;

use pingora::{Error, ErrorSource, ErrorType};
use tollgate_domain::{Amount, Provider};
use tollgate_ledger::UsageEvent;
use tollgate_usage::{Scanned, Scanner};

use crate::access::CallSummary;
use crate::backlog;
use crate::context::{Admitted, RequestCtx};
use crate::errors::GatewayError;
use crate::exceeded::ExcessKind;
use crate::gateway::Gateway;
use crate::keys::Identity;
use crate::metering::{CallRecord, Settled, settle_call};

/// Ending a call would need a wait: see [`Gateway::end_call_at_once`].
#[derive(Debug)]
pub(crate) struct MustWait;

/// A call settled and its event made, what is left to do once the event is with the ledger:
/// the reservation replaced by the actual amounts, and the alerts that crosses.
#[derive(Debug)]
pub(crate) struct Ended {
    admitted: Admitted,
    identity: Arc<Identity>,
    actual: Amount,
    summary: CallSummary,
}

impl Gateway {
    /// Settles and records an admitted call, and answers what it used for its access line;
    /// nothing for a request that was never admitted (its refusal is recorded: `refused`). A
    /// call whose event was already recorded (`durable`: at the end of its response) is only
    /// accounted.
    pub(crate) async fn finish_call(
        &self,
        error: Option<&Error>,
        ctx: &mut RequestCtx,
    ) -> Option<CallSummary> {
        if let Some(ended) = ctx.ended.take() {
            return Some(self.account(ended, ctx).await);
        }
        if ctx.admitted.is_none() {
            // Never admitted, or its hold given back before anything reached the provider.
            self.record_refusal(ctx).await;
            return None;
        }
        let (event, ended) = self.end_call(error, ctx).await?;
        let summary = self.account(ended, ctx).await;
        if let Err(e) = self.ledger.record(event).await {
            tracing::error!(error = %e, "usage event not recorded");
        }
        Some(summary)
    }

    /// Takes an admitted call out of the in-flight registry and settles it: its usage event,
    /// and what accounting it needs. Nothing for a call never admitted or already ended.
    pub(crate) async fn end_call(
        &self,
        error: Option<&Error>,
        ctx: &mut RequestCtx,
    ) -> Option<(UsageEvent, Ended)> {
        let (Some(admitted), Some(identity)) = (ctx.admitted.take(), ctx.identity.clone()) else {
            return None;
        };
        let mut scanned = match ctx.scanner.take() {
            // What decoding left for the end may take up to its budget's CPU: not at the
            // priority of the threads that serve other requests.
            Some(scanner) if scanner.has_backlog() => backlog::finish(scanner).await,
            scanner => scanner.map(Scanner::finish),
        };
        // Taken out only now: a shutdown whose grace period ends while the backlog waits for
        // the CPU records the call as cut off, rather than losing it with the process.
        if !self.inflight.take(admitted.call_id) {
            // The shutdown recorded it, with what it had received, when its grace period ended.
            return None;
        }
        if let Some(scanned) = scanned.as_mut() {
            let provider = admitted.reservation.provider;
            let user = identity.user.as_str();
            self.jobs
                .bill_increase(provider, ctx.method.as_str(), &ctx.path, user, scanned)
                .await;
        }
        Some(self.settle_ended(error, ctx, admitted, identity, scanned))
    }

    /// [`end_call`](Self::end_call) for a caller that cannot wait (the synchronous body
    /// filter): `Err(MustWait)`, the call left as it was, when ending it needs a wait — decoding
    /// left for the end, or a job's earlier polls to look up.
    pub(crate) fn end_call_at_once(
        &self,
        error: Option<&Error>,
        ctx: &mut RequestCtx,
    ) -> Result<Option<(UsageEvent, Ended)>, MustWait> {
        if let Some(admitted) = &ctx.admitted {
            let provider = admitted.reservation.provider;
            if ctx.scanner.as_ref().is_some_and(Scanner::has_backlog)
                || self.jobs.looks_up(provider, ctx.method.as_str(), &ctx.path)
            {
                return Err(MustWait);
            }
        }
        let (Some(admitted), Some(identity)) = (ctx.admitted.take(), ctx.identity.clone()) else {
            return Ok(None);
        };
        let scanned = ctx.scanner.take().map(Scanner::finish);
        if !self.inflight.take(admitted.call_id) {
            return Ok(None);
        }
        Ok(Some(
            self.settle_ended(error, ctx, admitted, identity, scanned),
        ))
    }

    /// The end of a call taken out of the in-flight registry, with its scan's last word: what
    /// it used and costs, its usage event, and the metrics and log lines that go with them.
    fn settle_ended(
        &self,
        error: Option<&Error>,
        ctx: &RequestCtx,
        admitted: Admitted,
        identity: Arc<Identity>,
        scanned: Option<Scanned>,
    ) -> (UsageEvent, Ended) {
        let provider = admitted.reservation.provider;
        let complete = scanned.as_ref().is_some_and(|s| s.complete);
        let transport_error = match (&ctx.refusal, error) {
            (Some(refusal), _) => Some(refusal.to_string()),
            (None, Some(e)) => ended_by(e, provider, complete),
            (None, None) => None,
        };
        let record = CallRecord {
            provider,
            request_id: &ctx.request_id,
            identity: &identity,
            period: admitted.period,
            method: ctx.method.as_str(),
            path: &ctx.path,
            facts: &ctx.facts,
            status: ctx.status,
            scanned,
            reserved: admitted.reservation.amount,
            transport_error,
            request_bytes: ctx.request_bytes,
            response_bytes: ctx.response_bytes,
            latency_ms: u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let Settled {
            event,
            actual,
            implausible,
            exceeded,
        } = settle_call(&ctx.snapshot.config, record);
        if let Some(excess) = exceeded {
            self.metrics.reservation_exceeded(provider);
            let kind = excess.kind.as_str();
            if excess.kind == ExcessKind::InputBeyondBody {
                // Expected of a prompt that points at what it does not carry (an image by URL).
                tracing::info!(
                    %provider,
                    model = event.model,
                    user = identity.user,
                    endpoint = event.endpoint,
                    kind,
                    excess = excess.words,
                    "call billed beyond its reservation: input beyond the body's estimate"
                );
            } else {
                tracing::warn!(
                    %provider,
                    model = event.model,
                    user = identity.user,
                    endpoint = event.endpoint,
                    kind,
                    excess = excess.words,
                    "call billed beyond its reservation"
                );
            }
        }
        if implausible {
            self.metrics.implausible_usage(provider);
            tracing::warn!(
                %provider,
                model = event.model,
                user = identity.user,
                error = event.error_message.as_deref().unwrap_or_default(),
                "usage not billed as reported"
            );
        }
        let cost = event.cost.total_nanousd;
        self.metrics
            .usage(provider, &event.usage, cost, event.estimated);
        self.metrics
            .plan_usage(&identity.plan, provider, &event.usage, cost);
        let summary = CallSummary {
            model: event.model.clone(),
            input_tokens: event.usage.input_tokens,
            output_tokens: event.usage.output_tokens,
            cost_nanousd: cost,
        };
        let ended = Ended {
            admitted,
            identity,
            actual,
            summary,
        };
        (event, ended)
    }

    /// The reservation of an ended call replaced by what it used, and the alerts that raises.
    async fn account(&self, ended: Ended, ctx: &RequestCtx) -> CallSummary {
        let Ended {
            admitted,
            identity,
            actual,
            summary,
        } = ended;
        let settled = self.counters.settle(&admitted.reservation, actual).await;
        match (settled, &self.alerts) {
            (Some(settled), Some(raiser)) => raiser.raise_crossed(
                &identity.user,
                admitted.period,
                &admitted.limits,
                &settled,
                actual,
                &ctx.snapshot.config.alert_thresholds,
            ),
            // Deferred until Redis is back: its alerts are raised when it is replayed.
            (None, Some(_)) if self.counters.degraded() => {
                self.deferred.remember(&identity.user, &identity.plan);
            }
            _ => {}
        }
        summary
    }

    /// The refusal or failure `e` ended the request with, for `fail_to_proxy` to render. A call
    /// that failed before anything reached the provider gives its hold back at once (the
    /// provider did no work); one the provider already had (it timed out, failed mid-response,
    /// an admitted upload was cut off by its deadline) is settled by `logging` with whatever
    /// usage was scanned, as any admitted call.
    pub(crate) async fn end_failed(&self, e: &Error, ctx: &mut RequestCtx) -> GatewayError {
        let error = ctx.refusal.clone().unwrap_or_else(|| failure(e, ctx));
        if let GatewayError::LimitExceeded(denial) = &error {
            self.metrics.refused_by_limit(denial.limit.key);
        }
        if ctx.upstream_sent.is_none() {
            if let Some(admitted) = ctx.admitted.take()
                && self.inflight.take(admitted.call_id)
            {
                self.counters.release(&admitted.reservation).await;
            }
        } else if ctx.status == 0 {
            ctx.status = error.status();
        }
        error
    }
}

/// How a call that failed after it was admitted ended, in the gateway's words for its usage
/// event (Pingora's own messages name internal states and peers' addresses). A client that
/// hangs up after the provider's terminal event (`[DONE]`, `message_stop`, the last
/// `finishReason`) — as the SDKs do once they have read it — ended a successful call: `None`.
fn ended_by(e: &Error, provider: Provider, complete: bool) -> Option<String> {
    let provider = provider.display_name();
    let why = match (e.esource(), e.etype()) {
        (ErrorSource::Downstream, _) if complete => return None,
        (ErrorSource::Downstream, ErrorType::ReadTimedout) => {
            "the client's request body did not arrive in time".to_owned()
        }
        (ErrorSource::Downstream, _) => {
            "the client disconnected before the response was complete".to_owned()
        }
        (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
            format!("{provider} did not answer in time")
        }
        (
            _,
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute
            | ErrorType::TLSHandshakeFailure,
        ) => format!("could not connect to {provider}"),
        (ErrorSource::Upstream, ErrorType::ConnectionClosed) => {
            format!("{provider} closed the connection before the response was complete")
        }
        (ErrorSource::Upstream, kind) => {
            format!(
                "{provider}'s response could not be relayed ({})",
                kind.as_str()
            )
        }
        (_, kind) => format!(
            "the gateway could not complete the call ({})",
            kind.as_str()
        ),
    };
    Some(why)
}

/// A Pingora error as the gateway's: who was at fault, in the provider's terms.
fn failure(e: &Error, ctx: &RequestCtx) -> GatewayError {
    let Some(provider) = ctx.provider else {
        return GatewayError::Internal;
    };
    match e.etype() {
        // The client's body, read under `body_read_timeout_ms` (`body::bound_read`).
        ErrorType::ReadTimedout if e.esource() == &ErrorSource::Downstream => {
            GatewayError::BodyTimeout {
                timeout_ms: ctx.snapshot.config.proxy.body_read_timeout_ms,
            }
        }
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            GatewayError::UpstreamTimeout(provider)
        }
        // The client's body could not be read: malformed chunks, or a client gone mid-body.
        kind if e.esource() == &ErrorSource::Downstream => GatewayError::BadRequest(format!(
            "the request body could not be read ({})",
            kind.as_str()
        )),
        ErrorType::ConnectRefused
        | ErrorType::ConnectError
        | ErrorType::ConnectNoRoute
        | ErrorType::TLSHandshakeFailure
        | ErrorType::ConnectProxyFailure => GatewayError::UpstreamConnect(provider),
        ErrorType::ConnectionClosed if e.esource() == &ErrorSource::Upstream => {
            GatewayError::UpstreamClosed(provider)
        }
        _ if e.esource() == &ErrorSource::Upstream => GatewayError::UpstreamConnect(provider),
        _ => GatewayError::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_ends_in_the_gateways_words() {
        let closed = Error::new_down(ErrorType::ConnectionClosed);
        // The SDKs hang up once they have read the terminal event: a success.
        assert_eq!(ended_by(&closed, Provider::OpenAi, true), None);
        assert_eq!(
            ended_by(&closed, Provider::OpenAi, false).as_deref(),
            Some("the client disconnected before the response was complete")
        );
        let timeout = Error::new_up(ErrorType::ReadTimedout);
        assert_eq!(
            ended_by(&timeout, Provider::Anthropic, false).as_deref(),
            Some("Anthropic did not answer in time")
        );
        let reset = Error::explain(ErrorType::ConnectionClosed, "peer 127.0.0.1:4711").into_up();
        let said = ended_by(&reset, Provider::Gemini, true).unwrap();
        assert_eq!(
            said,
            "Gemini closed the connection before the response was complete"
        );
        let refused = Error::new_up(ErrorType::ConnectRefused);
        assert_eq!(
            ended_by(&refused, Provider::Exa, false).as_deref(),
            Some("could not connect to Exa")
        );
    }
}
