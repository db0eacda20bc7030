//! The Pingora service: each phase is a few lines that call the crate's plain functions.
//!
//! - `request_filter`: route, provider configured, body size, key → user → plan, provider in
//!   plan; requests whose admission needs nothing from the body are admitted here.
//! - `upstream_peer` / `upstream_request_filter`: the provider's upstream, the client's
//!   credential removed from every slot and the real key injected, `Accept-Encoding: identity`.
//! - Requests whose model and limits are in the JSON body: a body of known length that fits
//!   Pingora's retry buffer (64 KiB, nearly every API call) is read whole in `request_filter`,
//!   inspected and admitted before anything goes upstream, and sent with its exact
//!   `Content-Length` in one write after the head. A larger or chunked body is held in
//!   `request_body_filter` until complete, then inspected and admitted before its first byte is
//!   released upstream (Pingora has already sent the request head by then, so such a request
//!   goes chunked; a refused request's body is never sent, so the provider never sees a
//!   complete request).
//! - `fail_to_proxy`: refusals and upstream failures rendered in the provider's error shape.
//! - `response_filter` / `response_body_filter`: the response streams through unchanged while
//!   each chunk is fed to the provider's usage scanner (synchronous, bounded memory).
//! - `logging`: usage → cost → the reservation settled with the actual amounts → exactly one
//!   usage event handed to the ledger without waiting, and the thresholds of the plan's limits
//!   the call crossed handed over as alerts, also without waiting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{Duration as ChronoDuration, Utc};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use tollgate_config::{Config, UnpricedPolicy};
use tollgate_counters::{CounterError, Replayed, Reservation, ReserveRequest, Reserved};
use tollgate_domain::{BillingPeriod, Limit, Provider};
use tollgate_ledger::LedgerHandle;
use tollgate_usage::{RequestInfo, Scanner};

use crate::admit::reservation_amount;
use crate::alerts::AlertRaiser;
use crate::credentials::{
    CREDENTIAL_HEADERS, CredentialError, client_key, provider_credential, strip_query_key,
};
use crate::errors::{GatewayError, render};
use crate::keys::{Identity, KeyRing};
use crate::limits::Counters;
use crate::metering::{CallRecord, settle_call};
use crate::metrics::Metrics;
use crate::request::{RequestFacts, endpoint_name, inspect, may_rewrite, rewrite_body};
use crate::route::{route, upstream_target};
use crate::upstream::{AddressCache, Upstream};

/// The gateway: configuration snapshot, upstreams, keys and counters.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    upstreams: BTreeMap<Provider, Upstream>,
    /// Per provider, the upstream request's `Host` and credential header, built once.
    upstream_headers: BTreeMap<Provider, UpstreamHeaders>,
    keys: KeyRing,
    counters: Counters,
    ledger: LedgerHandle,
    /// The ledger's tables, where the credits already billed for asynchronous jobs are kept.
    ledger_tables: Option<tollgate_ledger::Ledger>,
    metrics: Arc<Metrics>,
    addresses: AddressCache,
    /// Where usage alerts go; none: alerts are not raised.
    alerts: Option<AlertRaiser>,
    /// The plans of users whose settles were deferred while Redis was away, for the alerts of
    /// their use once it is replayed.
    deferred_plans: Arc<DeferredPlans>,
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        counters: Counters,
        ledger: LedgerHandle,
    ) -> Result<Gateway, String> {
        let upstreams = config
            .providers
            .iter()
            .map(|(p, s)| Upstream::parse(&s.base_url).map(|u| (*p, u)))
            .collect::<Result<_, _>>()?;
        let keys = KeyRing::from_static(&config.keys);
        let upstream_headers = UpstreamHeaders::build(&config, &upstreams);
        Ok(Gateway {
            config,
            upstreams,
            upstream_headers,
            keys,
            counters,
            ledger,
            ledger_tables: None,
            metrics: Arc::new(Metrics::default()),
            addresses: AddressCache::default(),
            alerts: None,
            deferred_plans: Arc::default(),
        })
    }

    /// Raise usage alerts through `raiser` when a call crosses a threshold of a limit, also for
    /// use that reaches Redis only after an outage.
    pub fn with_alerts(mut self, raiser: AlertRaiser) -> Gateway {
        if let Counters::Shared(store) = &self.counters {
            let config = Arc::clone(&self.config);
            let plans = Arc::clone(&self.deferred_plans);
            let alerts = raiser.clone();
            store.on_replay(Arc::new(move |replayed: Replayed<'_>| {
                let Some(plan) = plans.plan_of(replayed.user) else {
                    return;
                };
                let Some(limits) = config
                    .plans
                    .get(&plan)
                    .and_then(|p| p.limits_for(replayed.provider).ok())
                else {
                    return;
                };
                alerts.raise_crossed(
                    replayed.user,
                    replayed.period,
                    &limits,
                    &replayed.settled,
                    replayed.actual,
                    &config.alert_thresholds,
                );
            }));
        }
        self.alerts = Some(raiser);
        self
    }

    /// Also accept keys issued through the admin API, from the ledger's key table; and bill
    /// asynchronous jobs' status polls against the ledger's record of what each job billed.
    pub fn with_stored_keys(mut self, ledger: tollgate_ledger::Ledger) -> Gateway {
        let ttl = Duration::from_millis(self.config.proxy.key_cache_ttl_ms);
        self.keys =
            self.keys
                .with_stored_keys(ledger.clone(), ttl, self.config.default_plan.clone());
        self.ledger_tables = Some(ledger);
        self
    }

    /// A status poll of an asynchronous job (a Firecrawl crawl) reports the credits the whole
    /// job used so far: keep in `scanned` only the part no earlier poll billed. Without the
    /// ledger's tables, or when they cannot be reached, the reported amount is billed as is
    /// (limits may then count a job's credits more than once, never less).
    async fn bill_job_increase(
        &self,
        provider: Provider,
        method: &str,
        path: &str,
        user: &str,
        scanned: &mut tollgate_usage::Scanned,
    ) {
        let Some(job) = tollgate_usage::cumulative_job(provider, method, path) else {
            return;
        };
        let (Some(ledger), reported) = (&self.ledger_tables, scanned.usage.units) else {
            return;
        };
        if reported == 0 {
            return;
        }
        match ledger
            .unbilled_job_units(user, provider, job, reported)
            .await
        {
            Ok(increase) => scanned.usage.units = increase,
            Err(e) => tracing::warn!(error = %e, job, "billing a job's credits in full"),
        }
    }

    /// The key ring, so that a revocation can clear its cache.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The gateway's metrics, for `/metrics` and the request-head guard.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }
}

/// Per-request state, shared by the phases.
#[derive(Debug)]
pub struct RequestCtx {
    provider: Option<Provider>,
    path: String,
    query: Option<String>,
    identity: Option<Arc<Identity>>,
    /// The body is needed for admission and is held until complete.
    hold_body: bool,
    body: Vec<u8>,
    /// The body as received, kept for the usage scanner (model, stream flag, search depth).
    request_body: Bytes,
    request_bytes: u64,
    /// The upstream request is sent chunked because its body may be rewritten.
    rewrite: bool,
    /// The body as it goes upstream, when it was read and admitted in `request_filter`; Pingora
    /// replays the body it buffered through `request_body_filter`, which sends this instead.
    admitted_body: Option<Bytes>,
    facts: RequestFacts,
    period: Option<BillingPeriod>,
    /// The limits the reservation was checked against, for the alerts of its settle.
    limits: Vec<Limit>,
    reservation: Option<Reservation>,
    /// Why the gateway refused the request; kept after `fail_to_proxy` renders it, so that a
    /// call the provider already had (an upload cut off by its deadline) is recorded with it.
    refusal: Option<GatewayError>,
    scanner: Option<Scanner>,
    status: u16,
    response_bytes: u64,
    started: Instant,
    /// Time spent in the gateway's own work (routing, admission, scanning, settling).
    overhead: Duration,
    /// Time `request_filter` spent waiting for the client's body, left out of `overhead`.
    body_wait: Duration,
    /// When the request head went upstream, for the upstream latency.
    upstream_sent: Option<Instant>,
}

impl RequestCtx {
    fn provider_name(&self) -> &'static str {
        self.provider.map_or("-", Provider::as_str)
    }
}

/// The headers every upstream request to a provider carries, built when the gateway starts so
/// that a request copies reference-counted values instead of formatting them.
#[derive(Debug)]
struct UpstreamHeaders {
    host: http::HeaderValue,
    /// `None` when the provider has no key, or one that cannot be a header value.
    credential: Option<(http::HeaderName, http::HeaderValue)>,
}

impl UpstreamHeaders {
    fn build(
        config: &Config,
        upstreams: &BTreeMap<Provider, Upstream>,
    ) -> BTreeMap<Provider, UpstreamHeaders> {
        upstreams
            .iter()
            .filter_map(|(provider, upstream)| {
                let host = http::HeaderValue::from_str(&upstream.authority).ok()?;
                let credential = config
                    .providers
                    .get(provider)
                    .and_then(|s| s.key.as_ref())
                    .and_then(|key| provider_credential(*provider, key.expose()).ok());
                Some((*provider, UpstreamHeaders { host, credential }))
            })
            .collect()
    }
}

/// Users whose settles were deferred during a Redis outage, with their plan: the replay after
/// the outage knows the user, not the plan. Bounded; a user met again takes the plan of its
/// latest call.
#[derive(Debug, Default)]
struct DeferredPlans {
    plans: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl DeferredPlans {
    /// Past this many users the oldest knowledge is dropped (whole), and alerts of use deferred
    /// before that are not raised.
    const MAX_USERS: usize = 100_000;

    fn remember(&self, user: &str, plan: &str) {
        let mut plans = self
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if plans.get(user).is_some_and(|p| p == plan) {
            return;
        }
        if plans.len() >= Self::MAX_USERS {
            plans.clear();
        }
        plans.insert(user.to_owned(), plan.to_owned());
    }

    fn plan_of(&self, user: &str) -> Option<String> {
        self.plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(user)
            .cloned()
    }
}

const REFUSED: &str = "refused by the gateway";

/// The largest request body read whole before the upstream request begins: Pingora's retry
/// buffer holds up to 64 KiB, and it is what Pingora replays as the body it forwards.
const READ_BEFORE_UPSTREAM_MAX: u64 = 64 * 1024;

fn refused() -> Box<Error> {
    Error::new(ErrorType::Custom(REFUSED))
}

impl Gateway {
    /// Records the refusal and fails the request; `fail_to_proxy` renders it.
    fn refuse(&self, ctx: &mut RequestCtx, error: GatewayError) -> Result<bool> {
        ctx.refusal = Some(error);
        Err(refused())
    }

    async fn admit(&self, ctx: &mut RequestCtx, facts: &RequestFacts) -> Result<(), GatewayError> {
        let (Some(provider), Some(identity)) = (ctx.provider, ctx.identity.as_ref()) else {
            return Err(GatewayError::Internal);
        };
        let plan = self
            .config
            .plans
            .get(&identity.plan)
            .ok_or(GatewayError::Internal)?;
        let limits = plan
            .limits_for(provider)
            .map_err(|_| GatewayError::NotInPlan {
                provider,
                plan: plan.id.clone(),
            })?;
        let model = facts
            .model
            .clone()
            .unwrap_or_else(|| endpoint_name(provider, &ctx.path));
        let found = self.config.prices.lookup(provider, &model);
        let price = match (found, &self.config.pricing.unpriced) {
            (Some(m), _) => Some(m.price),
            (None, UnpricedPolicy::Allow(default)) => Some(default),
            (None, UnpricedPolicy::Reject) if provider.is_token_billed() => {
                return Err(GatewayError::UnpricedModel { model });
            }
            (None, UnpricedPolicy::Reject) => None,
        };
        let amount = reservation_amount(facts, price, provider.is_token_billed());
        let now = Utc::now();
        let upstream_ms = self.config.proxy.upstream_read_timeout_ms;
        let period = BillingPeriod::containing(now, identity.anchor_day);
        ctx.period = Some(period);
        let request = ReserveRequest {
            user: &identity.user,
            period,
            provider,
            limits: &limits,
            amount,
            now,
            // A reservation outlives any call that can still settle it.
            expires_at: now
                + ChronoDuration::milliseconds(
                    i64::try_from(upstream_ms.saturating_mul(2)).unwrap_or(i64::MAX / 2),
                ),
        };
        let policy = plan
            .on_counter_store_unreachable
            .unwrap_or(self.config.storage.on_counter_store_unreachable);
        let reserved = self.counters.reserve(request, policy).await;
        let reserved = reserved.map(|(reserved, seeded)| {
            // Counters started from the ledger: raise what the use they start from reached.
            if let (Some(totals), Some(alerts)) = (seeded, &self.alerts) {
                alerts.raise_reached(
                    &identity.user,
                    period,
                    &plan.all_limits(),
                    &totals,
                    &self.config.alert_thresholds,
                );
            }
            reserved
        });
        match reserved {
            Ok(Reserved::Admitted(reservation)) => {
                ctx.reservation = Some(reservation);
                ctx.limits = limits;
                Ok(())
            }
            Ok(Reserved::Denied(denial)) => Err(GatewayError::LimitExceeded(denial)),
            Err(e) => {
                self.metrics.counter_store_error();
                if !matches!(e, CounterError::Unreachable(_)) {
                    tracing::warn!(error = %e, "reserving");
                }
                Err(GatewayError::CounterStoreUnavailable)
            }
        }
    }

    /// Everything decided from the request head: route, provider, body size, key, plan.
    async fn check_request(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let header = session.req_header();
        let target = header.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let route = match route(target) {
            Ok(route) => route,
            Err(e) => return self.refuse(ctx, GatewayError::UnknownRoute(e.to_string())),
        };
        let provider = route.provider;
        ctx.provider = Some(provider);
        ctx.path = route.path.to_owned();
        ctx.query = route.query.and_then(strip_query_key);
        let Some(settings) = self.config.providers.get(&provider) else {
            return self.refuse(
                ctx,
                GatewayError::UnknownRoute(format!("{provider} is not enabled on this gateway")),
            );
        };
        if settings.key.is_none() {
            return self.refuse(ctx, GatewayError::ProviderNotConfigured(provider));
        }
        let max_body = self.config.proxy.max_request_body_bytes;
        if content_length(header).is_some_and(|n| n > max_body) {
            return self.refuse(
                ctx,
                GatewayError::BodyTooLarge {
                    max_bytes: max_body,
                },
            );
        }
        let identity = match client_key(&header.headers, route.query) {
            Ok(key) => match self.keys.resolve(key).await {
                Ok(identity) => identity,
                Err(e) => {
                    tracing::warn!(error = %e, "the key table cannot be read");
                    return self.refuse(ctx, GatewayError::KeyStoreUnavailable);
                }
            },
            Err(CredentialError::Missing) => return self.refuse(ctx, GatewayError::MissingKey),
            Err(CredentialError::Conflicting) => {
                return self.refuse(
                    ctx,
                    GatewayError::BadRequest(CredentialError::Conflicting.to_string()),
                );
            }
        };
        let Some(identity) = identity else {
            return self.refuse(ctx, GatewayError::UnknownKey);
        };
        match self.config.plans.get(&identity.plan) {
            Some(plan) if !plan.includes(provider) => {
                let plan = plan.id.clone();
                return self.refuse(ctx, GatewayError::NotInPlan { provider, plan });
            }
            Some(_) => {}
            None => return self.refuse(ctx, GatewayError::Internal),
        }
        ctx.hold_body = has_body(header) && provider != Provider::Stability;
        let read_now = ctx.hold_body
            && !header.headers.contains_key(http::header::TRANSFER_ENCODING)
            && content_length(header).is_some_and(|n| n <= READ_BEFORE_UPSTREAM_MAX);
        ctx.rewrite = ctx.hold_body
            && !read_now
            && may_rewrite(provider, &ctx.path, self.config.proxy.inject_stream_usage);
        ctx.identity = Some(identity);
        if read_now {
            return self.admit_whole_body(session, ctx).await;
        }
        if ctx.hold_body {
            // The first read of a held body comes before `request_body_filter` does.
            self.bound_body_read(session, ctx)?;
        } else {
            let facts = match inspect(provider, &ctx.path, b"") {
                Ok(facts) => facts,
                Err(e) => return self.refuse(ctx, e),
            };
            if let Err(e) = self.admit(ctx, &facts).await {
                return self.refuse(ctx, e);
            }
            ctx.facts = facts;
            if has_body(header) {
                // A body streamed through (a Stability upload) is under the same total deadline
                // as a held one: a client trickling it would otherwise hold the provider's
                // connection for as long as each read meets Pingora's per-read timeout.
                self.bound_body_read(session, ctx)?;
            }
        }
        Ok(false)
    }

    /// A body small enough for Pingora's retry buffer: read it whole before anything goes
    /// upstream, admit the call, and keep the body as it will go upstream. Pingora replays the
    /// buffered body through `request_body_filter` (also when it retries on a fresh upstream
    /// connection), which sends the kept one in its place.
    async fn admit_whole_body(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if expects_continue(session.req_header()) {
            // The client waits for a go-ahead before its body; the provider, which would have
            // given it, sees the request only once the body is here (its `Expect` is removed).
            session.write_continue_response().await?;
        }
        session.enable_retry_buffering();
        let max = self.config.proxy.max_request_body_bytes;
        let reading = Instant::now();
        loop {
            self.bound_body_read(session, ctx)?;
            let read = session.read_request_body().await;
            let Some(chunk) = read.map_err(|e| e.into_down())? else {
                break;
            };
            if (ctx.body.len() + chunk.len()) as u64 > max {
                return self.refuse(ctx, GatewayError::BodyTooLarge { max_bytes: max });
            }
            ctx.body.extend_from_slice(&chunk);
        }
        ctx.body_wait = reading.elapsed();
        if session.as_ref().get_retry_buffer().is_none() {
            // Pingora would have nothing to replay: the request cannot be forwarded.
            return self.refuse(ctx, GatewayError::Internal);
        }
        match self.admit_body(ctx).await {
            Ok(out) => {
                ctx.admitted_body = Some(out);
                Ok(false)
            }
            Err(e) => self.refuse(ctx, e),
        }
    }

    /// Bounds the next read of a body the gateway reads before admission by what is left of
    /// `body_read_timeout_ms`, counted from when the headers arrived: Pingora's own timeout is
    /// per read, which a client sending a byte at a time never meets. A read that outlasts it
    /// fails as a downstream read timeout (`fail_to_proxy`: 408).
    fn bound_body_read(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let timeout_ms = self.config.proxy.body_read_timeout_ms;
        match Duration::from_millis(timeout_ms).checked_sub(ctx.started.elapsed()) {
            Some(left) if !left.is_zero() => {
                session.set_read_timeout(Some(left));
                Ok(())
            }
            _ => {
                ctx.refusal = Some(GatewayError::BodyTimeout { timeout_ms });
                Err(refused())
            }
        }
    }

    /// The held body is complete: inspect it, admit the call; the body as it goes upstream.
    async fn admit_body(&self, ctx: &mut RequestCtx) -> Result<Bytes, GatewayError> {
        let provider = ctx.provider.ok_or(GatewayError::Internal)?;
        let facts = inspect(provider, &ctx.path, &ctx.body)?;
        self.admit(ctx, &facts).await?;
        let held = Bytes::from(std::mem::take(&mut ctx.body));
        ctx.request_bytes = held.len() as u64;
        // `None`: the body goes as it came (a provider whose bodies are never rewritten, a chat
        // completion that is not a stream).
        let out = rewrite_body(
            provider,
            &ctx.path,
            &held,
            &facts,
            self.config.proxy.inject_stream_usage,
        )
        .map_or_else(|| held.clone(), Bytes::from);
        ctx.facts = facts;
        ctx.request_body = held;
        Ok(out)
    }

    async fn write_error(
        &self,
        session: &mut Session,
        provider: Option<Provider>,
        error: &GatewayError,
    ) -> u16 {
        let rendered = render(provider, error);
        let body = Bytes::from(rendered.body.to_string());
        let written = async {
            let mut head =
                ResponseHeader::build(rendered.status, Some(rendered.headers.len() + 1))?;
            for (name, value) in &rendered.headers {
                head.insert_header(*name, value.as_str())?;
            }
            head.insert_header("content-length", body.len().to_string())?;
            session.write_response_header(Box::new(head), false).await?;
            session.write_response_body(Some(body), true).await
        }
        .await;
        if let Err(e) = written {
            tracing::debug!(error = %e, "could not write the refusal to the client");
        }
        rendered.status
    }
}

fn content_length(header: &RequestHeader) -> Option<u64> {
    header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110, 10.1.1).
fn expects_continue(header: &RequestHeader) -> bool {
    header.version == http::Version::HTTP_11
        && header
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn has_body(header: &RequestHeader) -> bool {
    content_length(header).is_some_and(|n| n > 0)
        || header.headers.contains_key(http::header::TRANSFER_ENCODING)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.metrics.request_started();
        RequestCtx {
            provider: None,
            path: String::new(),
            query: None,
            identity: None,
            hold_body: false,
            body: Vec::new(),
            request_body: Bytes::new(),
            request_bytes: 0,
            rewrite: false,
            admitted_body: None,
            facts: RequestFacts::default(),
            period: None,
            limits: Vec::new(),
            reservation: None,
            refusal: None,
            scanner: None,
            status: 0,
            response_bytes: 0,
            started: Instant::now(),
            overhead: Duration::ZERO,
            body_wait: Duration::ZERO,
            upstream_sent: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let started = Instant::now();
        let outcome = self.check_request(session, ctx).await;
        ctx.overhead += started.elapsed().saturating_sub(ctx.body_wait);
        outcome
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let upstream = ctx
            .provider
            .and_then(|p| self.upstreams.get(&p))
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let address = self
            .addresses
            .resolve(&upstream.address)
            .await
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("cannot resolve {}", upstream.host),
                )
            })?;
        let mut peer = HttpPeer::new(address, upstream.tls, upstream.host.clone());
        peer.options.connection_timeout = Some(Duration::from_millis(
            self.config.proxy.upstream_connect_timeout_ms,
        ));
        peer.options.read_timeout = Some(Duration::from_millis(
            self.config.proxy.upstream_read_timeout_ms,
        ));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let provider = ctx
            .provider
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let upstream = self
            .upstreams
            .get(&provider)
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let headers = self
            .upstream_headers
            .get(&provider)
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let (name, value) = headers
            .credential
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "provider key"))?;
        let target = upstream_target(&upstream.base_path, &ctx.path, ctx.query.as_deref());
        let uri = http::Uri::try_from(target)
            .map_err(|e| Error::because(ErrorType::InternalError, "upstream target", e))?;
        upstream_request.set_uri(uri);
        upstream_request.insert_header(http::header::HOST, headers.host.clone())?;
        // Through RequestHeader, not its HeaderMap, so that its header-case map stays in step.
        for name in &CREDENTIAL_HEADERS {
            upstream_request.remove_header(name);
        }
        upstream_request.insert_header(name, value)?;
        // The body is scanned for usage; an uncompressed response keeps that cheap and exact.
        upstream_request.insert_header(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        )?;
        if let Some(body) = &ctx.admitted_body {
            upstream_request.insert_header(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            )?;
            upstream_request.remove_header(&http::header::EXPECT);
        } else if ctx.rewrite {
            upstream_request.remove_header(&http::header::CONTENT_LENGTH);
            upstream_request.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
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
        if let Some(admitted) = &ctx.admitted_body {
            // Pingora's replay of the body read in `request_filter`.
            if body.is_some() {
                *body = Some(admitted.clone());
            }
            return Ok(());
        }
        if !ctx.hold_body {
            if let Some(chunk) = body.as_ref() {
                ctx.request_bytes += chunk.len() as u64;
            }
            if end_of_stream {
                return Ok(());
            }
            return self.bound_body_read(session, ctx);
        }
        if let Some(chunk) = body.take() {
            let max = self.config.proxy.max_request_body_bytes;
            if (ctx.body.len() + chunk.len()) as u64 > max {
                ctx.refusal = Some(GatewayError::BodyTooLarge { max_bytes: max });
                return Err(refused());
            }
            ctx.body.extend_from_slice(&chunk);
        }
        if !end_of_stream {
            // Held. An empty chunk, not `None`: Pingora takes a `None` body for the end of the
            // body and would finish the upstream request there, empty.
            *body = Some(Bytes::new());
            return self.bound_body_read(session, ctx);
        }
        let started = Instant::now();
        let outcome = self.admit_body(ctx).await;
        ctx.overhead += started.elapsed();
        match outcome {
            Ok(out) => {
                *body = Some(out);
                Ok(())
            }
            Err(e) => {
                ctx.refusal = Some(e);
                Err(refused())
            }
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(provider) = ctx.provider else {
            return Ok(());
        };
        if let Some(sent) = ctx.upstream_sent {
            self.metrics.upstream_latency(provider, sent.elapsed());
        }
        let started = Instant::now();
        ctx.status = upstream_response.status.as_u16();
        let header = |name: http::header::HeaderName| {
            upstream_response
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
        };
        let method = session.req_header().method.as_str();
        ctx.scanner = Some(tollgate_usage::scanner(&RequestInfo {
            provider,
            method,
            path: &ctx.path,
            query: ctx.query.as_deref(),
            // Read once already for admission: the body again only where more than the model
            // comes from it.
            request_body: (!ctx.request_body.is_empty()
                && tollgate_usage::reads_request_body(provider))
            .then_some(&ctx.request_body[..]),
            request_model: ctx.facts.model.as_deref(),
            response_status: ctx.status,
            response_content_type: header(http::header::CONTENT_TYPE),
            response_content_encoding: header(http::header::CONTENT_ENCODING),
        }));
        ctx.overhead += started.elapsed();
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(chunk) = body.as_ref() {
            ctx.response_bytes += chunk.len() as u64;
            if let Some(scanner) = ctx.scanner.as_mut() {
                let started = Instant::now();
                scanner.feed(chunk);
                ctx.overhead += started.elapsed();
            }
        }
        Ok(None)
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
        let error = ctx.refusal.clone().unwrap_or_else(|| {
            let Some(provider) = ctx.provider else {
                return GatewayError::Internal;
            };
            match e.etype() {
                // The client's body, read under `body_read_timeout_ms` (`bound_body_read`).
                ErrorType::ReadTimedout if e.esource() == &pingora::ErrorSource::Downstream => {
                    GatewayError::BodyTimeout {
                        timeout_ms: self.config.proxy.body_read_timeout_ms,
                    }
                }
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                    GatewayError::UpstreamTimeout(provider)
                }
                ErrorType::ConnectRefused
                | ErrorType::ConnectError
                | ErrorType::ConnectNoRoute
                | ErrorType::TLSHandshakeFailure
                | ErrorType::ConnectProxyFailure => GatewayError::UpstreamConnect(provider),
                _ if e.esource() == &pingora::ErrorSource::Upstream => {
                    GatewayError::UpstreamConnect(provider)
                }
                _ => GatewayError::Internal,
            }
        });
        if let GatewayError::LimitExceeded(denial) = &error {
            self.metrics.refused_by_limit(denial.limit.key);
        }
        if ctx.upstream_sent.is_none() {
            // A refusal, or a failure before anything reached the provider, gives its hold back
            // at once: the provider did no work.
            if let Some(reservation) = ctx.reservation.take() {
                self.counters.release(&reservation).await;
            }
        } else if ctx.status == 0 {
            // The provider had the request (it timed out, failed mid-response, or an admitted
            // upload was cut off by its deadline): `logging` settles the call with whatever usage
            // was scanned and records it, as for any admitted call.
            ctx.status = error.status();
        }
        if session.response_written().is_some() {
            // The provider's status and part of its body are already with the client: an error
            // body appended now would pass for the end of the provider's stream. Closing the
            // connection without ending the body is how HTTP/1.1 says it was cut.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let code = self.write_error(session, ctx.provider, &error).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let started = Instant::now();
        if let (Some(reservation), Some(identity), Some(period)) =
            (ctx.reservation.take(), ctx.identity.as_ref(), ctx.period)
        {
            let method = session.req_header().method.as_str();
            let mut scanned = ctx.scanner.take().map(Scanner::finish);
            if let Some(scanned) = scanned.as_mut() {
                let (provider, user) = (reservation.provider, identity.user.as_str());
                self.bill_job_increase(provider, method, &ctx.path, user, scanned)
                    .await;
            }
            let record = CallRecord {
                provider: reservation.provider,
                identity: identity.as_ref(),
                period,
                method,
                path: &ctx.path,
                facts: &ctx.facts,
                status: ctx.status,
                scanned,
                transport_error: ctx
                    .refusal
                    .as_ref()
                    .map(ToString::to_string)
                    .or_else(|| error.map(|e| e.to_string())),
                request_bytes: ctx.request_bytes,
                response_bytes: ctx.response_bytes,
                latency_ms: u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            let (event, actual) = settle_call(&self.config, record);
            let settled = self.counters.settle(&reservation, actual).await;
            match (settled, &self.alerts) {
                (Some(settled), Some(raiser)) => raiser.raise_crossed(
                    &identity.user,
                    period,
                    &ctx.limits,
                    &settled,
                    actual,
                    &self.config.alert_thresholds,
                ),
                // Deferred until Redis is back: its alerts are raised when it is replayed.
                (None, Some(_)) if self.counters.degraded() => {
                    self.deferred_plans.remember(&identity.user, &identity.plan);
                }
                _ => {}
            }
            self.metrics.usage(
                event.provider,
                &event.usage,
                event.cost.total_nanousd,
                event.estimated,
            );
            if let Err(e) = self.ledger.record(event) {
                tracing::error!(error = %e, "usage event not recorded");
            }
        }
        ctx.overhead += started.elapsed();
        self.metrics.gateway_overhead(ctx.overhead);
        self.metrics.request_finished(ctx.provider, status);
        tracing::info!(
            provider = ctx.provider_name(),
            user = ctx.identity.as_ref().map_or("-", |i| i.user.as_str()),
            status,
            error = error.map(|e| e.etype().as_str()),
            elapsed_ms = ctx.started.elapsed().as_millis() as u64,
            "request"
        );
    }
}
