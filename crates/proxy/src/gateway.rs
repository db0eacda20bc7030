//! The Pingora service: the gateway's long-lived parts, and each phase a few lines that hand the
//! work to the module that owns it (docs/architecture.md follows one call through them).
//!
//! - `request_filter`: the head's checks (`head`), then the body read before admission
//!   (`body`) and the call admitted (`admit`, deciding by `admission`).
//! - `upstream_peer` / `upstream_request_filter`: the provider's upstream and request head
//!   (`upstream`).
//! - `request_body_filter`: a held body released once admitted (`body`).
//! - `response_filter` / `response_body_filter`: the response streams through unchanged while
//!   each chunk is fed to the provider's usage scanner (`metering`).
//! - `fail_to_proxy`: refusals and failures in the provider's error shape (`settle`,
//!   `respond`).
//! - `logging`: the call settled and recorded, exactly once (`settle`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use tollgate_config::{Config, Durability};
use tollgate_ledger::LedgerHandle;
use tollgate_usage::RequestFacts;

use crate::alerts::AlertRaiser;
use crate::context::{BodyState, REFUSED, RequestCtx};
use crate::deferred::{DeferredPlans, raise_on_replay};
use crate::errors::ProxyError;
use crate::head::{BodyPlan, has_body};
use crate::inflight::{CutOff, InFlight};
use crate::jobs::JobBilling;
use crate::keys::KeyRing;
use crate::limits::Counters;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::upstream::AddressCache;
use crate::{access, body, head, metering, request_id, respond, upstream};

/// The gateway: the configuration snapshot, and what outlives any one snapshot (counters, the
/// ledger, stored keys, metrics, alerts).
#[derive(Debug)]
pub struct Gateway {
    pub(crate) snapshots: Arc<SnapshotCell>,
    pub(crate) keys: KeyRing,
    pub(crate) counters: Arc<Counters>,
    /// The admitted calls still running, for a shutdown that must cut some off.
    pub(crate) inflight: Arc<InFlight>,
    pub(crate) ledger: LedgerHandle,
    pub(crate) jobs: JobBilling,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) addresses: AddressCache,
    /// Where usage alerts go; none: alerts are not raised.
    pub(crate) alerts: Option<AlertRaiser>,
    pub(crate) deferred: Arc<DeferredPlans>,
    /// Set when this process is being replaced (`tollgate run --upgrade`): every response
    /// from then on ends its connection, so that clients reconnect to the new process.
    pub(crate) closing: Arc<AtomicBool>,
    /// `sync`: a response's last bytes wait for its usage event to be durable (`durable`). Read
    /// once, as the ledger's settings: changing it needs a restart.
    pub(crate) durability: Durability,
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        counters: Counters,
        ledger: LedgerHandle,
    ) -> Result<Gateway, ProxyError> {
        let durability = config.ledger.durability;
        let metrics = Metrics::new()?.per_plan(config.admin.metrics_per_plan)?;
        Ok(Gateway {
            durability,
            snapshots: Arc::new(SnapshotCell::new(Snapshot::build(config)?)),
            keys: KeyRing::default(),
            counters: Arc::new(counters),
            inflight: Arc::default(),
            ledger,
            jobs: JobBilling::default(),
            metrics: Arc::new(metrics),
            addresses: AddressCache::default(),
            alerts: None,
            deferred: Arc::default(),
            closing: Arc::default(),
        })
    }

    /// Ends every connection after its current response once `closing` is set.
    pub fn with_closing(mut self, closing: Arc<AtomicBool>) -> Gateway {
        self.closing = closing;
        self
    }

    /// Raise usage alerts through `raiser` when a call crosses a threshold of a limit, also for
    /// use that reaches Redis only after an outage.
    pub fn with_alerts(mut self, raiser: AlertRaiser) -> Gateway {
        if let Counters::Shared(store) = self.counters.as_ref() {
            let (snapshots, deferred) = (Arc::clone(&self.snapshots), Arc::clone(&self.deferred));
            raise_on_replay(store, snapshots, deferred, raiser.clone());
        }
        self.alerts = Some(raiser);
        self
    }

    /// Also accept keys issued through the admin API, from the ledger's key table; and bill
    /// asynchronous jobs' status polls against the ledger's record of what each job billed.
    pub fn with_stored_keys(mut self, ledger: tollgate_ledger::Ledger) -> Gateway {
        self.keys = self.keys.with_stored_keys(ledger.clone());
        self.jobs = JobBilling::new(ledger);
        self
    }

    /// The key ring, so that a revocation can clear its cache.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The gateway's counters, so that erasing a user through the admin API forgets theirs.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The gateway's metrics, for `/metrics` and the request-head guard.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// What a shutdown needs to record the calls still running when its grace period ends.
    pub fn cut_off(&self) -> CutOff {
        CutOff {
            calls: Arc::clone(&self.inflight),
            counters: Arc::clone(&self.counters),
            ledger: self.ledger.clone(),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    /// The configuration snapshot requests start with, for the admin API and reloads.
    pub fn snapshots(&self) -> Arc<SnapshotCell> {
        Arc::clone(&self.snapshots)
    }

    /// Everything decided before the upstream request: the head checked, and the call admitted
    /// now or once its body is here.
    async fn start_call(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        match head::check(&self.keys, session.req_header(), ctx).await {
            Ok(BodyPlan::ReadNow) => body::read_whole(self, session, ctx).await,
            Ok(BodyPlan::Hold { chunked }) => {
                ctx.body = BodyState::Held {
                    buffer: Vec::new(),
                    chunked,
                };
                // The first read of a held body comes before `request_body_filter` does.
                body::bound_read(session, ctx)
            }
            Ok(BodyPlan::PassThrough) => {
                let provider = ctx
                    .provider
                    .ok_or_else(|| Error::new(ErrorType::InternalError))?;
                ctx.facts = RequestFacts::of_path(provider, &ctx.path);
                if let Err(e) = self.admit(ctx, false).await {
                    return Err(ctx.refuse(e));
                }
                let streams_body = has_body(session.req_header());
                if streams_body {
                    body::bound_read(session, ctx)
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(ctx.refuse(e)),
        }
    }
}

/// The response header naming the output cap a call was admitted with, when admission lowered
/// the request's own to fit what was left of a token budget or cost cap.
pub const OUTPUT_CAP_HEADER: &str = "x-tollgate-max-output-tokens";

fn internal() -> Box<Error> {
    Error::new(ErrorType::InternalError)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.metrics.request_started();
        RequestCtx::new(self.snapshots.load())
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Here, not before the head is parsed: parsing applies the client's keep-alive wish.
        if self.closing.load(Ordering::SeqCst) {
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let started = Instant::now();
        // Requests a client pipelines on one connection are answered in order, one after
        // another, rather than the connection being closed after the first.
        session.set_pipelining_enabled(true);
        ctx.request_id = request_id::of_request(session.req_header());
        let outcome = self.start_call(session, ctx).await;
        ctx.overhead += started.elapsed().saturating_sub(ctx.body_wait);
        outcome.map(|()| false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let snapshot = Arc::clone(&ctx.snapshot);
        let route = ctx.provider.and_then(|p| snapshot.providers.get(&p));
        let route = route.ok_or_else(internal)?;
        upstream::peer(&self.addresses, &route.upstream, &snapshot.config.proxy).await
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let route = ctx.provider.and_then(|p| ctx.snapshot.providers.get(&p));
        upstream::prepare_request(route.ok_or_else(internal)?, ctx, upstream_request)?;
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        body::on_chunk(self, session, body, end_of_stream, ctx).await
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(provider), Some(sent)) = (ctx.provider, ctx.upstream_sent) {
            self.metrics.upstream_latency(provider, sent.elapsed());
        }
        let started = Instant::now();
        // The provider's own id (OpenAI's) stays with the client, under another name.
        if let Some(theirs) = upstream_response.remove_header(request_id::HEADER) {
            upstream_response.insert_header(request_id::UPSTREAM_HEADER, theirs)?;
        }
        upstream_response.insert_header(request_id::HEADER, ctx.request_id.as_str())?;
        if let Some(cap) = ctx.output_cap {
            // The client learns that its output was capped to fit what was left of its budget.
            upstream_response.insert_header(OUTPUT_CAP_HEADER, cap)?;
        }
        metering::start_response(ctx, upstream_response);
        // A response without a body ends with its head: its event is made durable before the
        // head goes.
        if self.durability == Durability::Sync && !metering::has_body(ctx, upstream_response) {
            self.end_call_durably(None, ctx).await;
        }
        ctx.overhead += started.elapsed();
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let started = Instant::now();
        metering::observe_chunk(ctx, body, end_of_stream);
        if end_of_stream && self.durability == Durability::Sync {
            self.hold_last_bytes(session, ctx);
        }
        ctx.overhead += started.elapsed();
        Ok(metering::decoding_behind(ctx, end_of_stream).then_some(metering::BEHIND_PAUSE))
    }

    /// Refusals are answers, not failures: the request's own log line records them.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        matches!(error.etype(), ErrorType::Custom(reason) if *reason == REFUSED)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let error = self.end_failed(e, ctx).await;
        ctx.answered_with = Some(error.clone());
        // A call the provider had, answered with the gateway's error: recorded before the answer.
        if self.durability == Durability::Sync && session.response_written().is_none() {
            self.end_call_durably(Some(e), ctx).await;
        }
        respond::answer_failure(session, ctx, &error).await
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let started = Instant::now();
        let call = self.finish_call(error, ctx).await;
        ctx.overhead += started.elapsed();
        self.metrics.gateway_overhead(ctx.overhead);
        self.metrics.request_finished(ctx.provider, status);
        if let Some(identity) = &ctx.identity {
            self.metrics
                .plan_request(&identity.plan, ctx.provider, status);
        }
        if ctx.request_id.is_empty() {
            // Pingora ended the request before its head reached `request_filter`.
            ctx.request_id = request_id::new();
        }
        access::log(ctx, status, error, call.as_ref());
    }
}
