//! The gateway's Prometheus metrics, kept by the `prometheus` library and exposed through its
//! text encoder when `/metrics` is scraped.
//!
//! Recording is on the request path, so it must stay a few relaxed atomic additions: every
//! labelled series a request can touch has its handle bound once, at start or on first use
//! (`bind`), and is found by index (provider, status, limit) with no lock, no label lookup and
//! no allocation. The binary registers the ledger's, the process's and the build's metrics on
//! the same registry ([`Metrics::registry`]), so one scrape reads them all.
//!
//! Labels are providers, status codes, token kinds and limit names: never a key, a user or a
//! model name (a model label would let any client grow the series without bound). Plans, which
//! operators name, are opt-in (`[admin] metrics_per_plan`, the `plan` module): their series are
//! found by a label lookup per call, a cost only those who ask for them pay.
//! docs/metrics.md lists every metric.

mod bind;
mod plan;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
    TextEncoder,
};
use tollgate_domain::{LimitKey, Provider, Usage};

use self::bind::{Slots, bind_all, counter, counter_vec, gauge, latency_opts, opts, register};
use crate::errors::ProxyError;

const PROVIDERS: usize = Provider::ALL.len();
/// Statuses 100..=599 each get a slot; anything else (0: no response) counts as 0.
const STATUSES: usize = 600;
/// Limits: calls and tokens per provider, then total calls, total tokens and cost.
const LIMITS: usize = 4 * PROVIDERS + 9;
const DEGRADED_HELP: &str = "1 while the shared counter store (Redis) is unreachable and limits are enforced in the configured degraded mode.";
const REDIS_ERRORS_HELP: &str = "Counter store (Redis) calls that failed or timed out.";
const TOKEN_KINDS: [&str; 6] = [
    "input",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
];

/// Everything the gateway counts, as handles into one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Per provider plus one row for requests that never reached a provider route; a series
    /// appears with its first request.
    requests: Slots<IntCounterVec>,
    tokens: Slots<IntCounterVec>,
    cost_nanousd: Box<[IntCounter]>,
    estimated: Box<[IntCounter]>,
    /// Calls whose reported usage no call could have used, billed at their reservation instead.
    implausible: Box<[IntCounter]>,
    /// Calls billed more than their reservation held: the one way a limit can be passed.
    reservation_exceeded: Box<[IntCounter]>,
    refusals: Box<[IntCounter]>,
    upstream_latency: Slots<HistogramVec>,
    overhead: Histogram,
    in_flight: IntGauge,
    /// Connections that have a request or are waiting for their first one (not idle between
    /// requests): what a shutdown waits for besides the requests in flight. Not exported.
    busy_connections: AtomicI64,
    /// 1 while the shared counter store is unreachable and limits run in a degraded mode;
    /// under its name, then under its deprecated one.
    redis_degraded: [IntGauge; 2],
    /// Counter store calls that failed, under both names too.
    redis_errors: [IntCounter; 2],
    /// The Redis store's operations (reserves, settles, releases, seeds) and the script calls
    /// that carried them, brought up to the store's own counts when scraped.
    redis_operations: IntCounter,
    redis_round_trips: IntCounter,
    /// Serialises bringing the two up to date, so that two scrapes at once add nothing twice.
    redis_stats: std::sync::Mutex<()>,
    /// Usage alerts this instance stored (crossings another caller had stored already are
    /// not counted).
    alerts_raised: IntCounter,
    /// Crossings that could not be stored (database error, queue full).
    alert_raise_failures: IntCounter,
    /// Reloads of the configuration: applied, then refused.
    config_reloads: Box<[IntCounter]>,
    /// The version of the configuration in force and when it was loaded: one series, replaced
    /// by each applied reload.
    config_info: IntGaugeVec,
    /// Requests, tokens and cost by plan, when asked for.
    per_plan: Option<plan::PerPlan>,
}

/// A connection counted in [`Metrics::busy_connections`] while this lives.
#[derive(Debug)]
pub struct BusyConnection(Arc<Metrics>);

impl Drop for BusyConnection {
    fn drop(&mut self) {
        self.0.busy_connections.fetch_sub(1, Relaxed);
    }
}

fn provider_index(provider: Provider) -> usize {
    // `Provider::ALL` lists the variants in declaration order.
    provider as usize
}

fn limit_index(key: LimitKey) -> usize {
    match key {
        LimitKey::ProviderCalls(p) => provider_index(p),
        LimitKey::ProviderTokens(p) => PROVIDERS + provider_index(p),
        LimitKey::CallsPerMinute(Some(p)) => 2 * PROVIDERS + provider_index(p),
        LimitKey::TokensPerMinute(Some(p)) => 3 * PROVIDERS + provider_index(p),
        LimitKey::TotalCalls => 4 * PROVIDERS,
        LimitKey::TotalTokens => 4 * PROVIDERS + 1,
        LimitKey::Cost => 4 * PROVIDERS + 2,
        LimitKey::KeyTokens => 4 * PROVIDERS + 3,
        LimitKey::KeyCost => 4 * PROVIDERS + 4,
        LimitKey::CallsPerMinute(None) => 4 * PROVIDERS + 5,
        LimitKey::TokensPerMinute(None) => 4 * PROVIDERS + 6,
        LimitKey::KeyCallsPerMinute => 4 * PROVIDERS + 7,
        LimitKey::KeyTokensPerMinute => 4 * PROVIDERS + 8,
    }
}

fn limit_at(index: usize) -> LimitKey {
    const SINGLE: [LimitKey; 9] = [
        LimitKey::TotalCalls,
        LimitKey::TotalTokens,
        LimitKey::Cost,
        LimitKey::KeyTokens,
        LimitKey::KeyCost,
        LimitKey::CallsPerMinute(None),
        LimitKey::TokensPerMinute(None),
        LimitKey::KeyCallsPerMinute,
        LimitKey::KeyTokensPerMinute,
    ];
    let (group, at) = (index / PROVIDERS, index % PROVIDERS);
    match group {
        0 => LimitKey::ProviderCalls(Provider::ALL[at]),
        1 => LimitKey::ProviderTokens(Provider::ALL[at]),
        2 => LimitKey::CallsPerMinute(Some(Provider::ALL[at])),
        3 => LimitKey::TokensPerMinute(Some(Provider::ALL[at])),
        _ => SINGLE
            .get(index - 4 * PROVIDERS)
            .copied()
            .unwrap_or(LimitKey::Cost),
    }
}

/// A counter per provider, each shown from the start (0 is worth seeing for these).
fn per_provider(
    registry: &Registry,
    name: &str,
    help: &str,
) -> prometheus::Result<Box<[IntCounter]>> {
    let family = counter_vec(registry, name, help, &["provider"])?;
    bind_all(&family, Provider::ALL.map(|p| [p.as_str()]))
}

impl Metrics {
    /// Registers every metric of the gateway on a registry of its own.
    pub fn new() -> Result<Metrics, ProxyError> {
        Ok(Metrics::register(Registry::new())?)
    }

    fn register(r: Registry) -> prometheus::Result<Metrics> {
        let requests = counter_vec(
            &r,
            "tollgate_requests_total",
            "Requests answered, by provider and HTTP status (0: no response was sent).",
            &["provider", "status"],
        )?;
        let tokens = counter_vec(
            &r,
            "tollgate_tokens_total",
            "Tokens metered, by provider and kind (cached_input and cache writes are parts of input; reasoning is part of output).",
            &["provider", "kind"],
        )?;
        let refusals = counter_vec(
            &r,
            "tollgate_limit_refusals_total",
            "Requests refused with 429, by the limit that refused them.",
            &["limit"],
        )?;
        let upstream_latency = register(
            &r,
            HistogramVec::new(
                latency_opts(
                    "tollgate_upstream_latency_seconds",
                    "From sending the request upstream to the response head, by provider.",
                ),
                &["provider"],
            )?,
        )?;
        let config_reloads = counter_vec(
            &r,
            "tollgate_config_reloads_total",
            "Reloads of the configuration, by result: ok (applied) or error (refused; the previous configuration keeps serving).",
            &["result"],
        )?;
        Ok(Metrics {
            requests: Slots::new(requests, (PROVIDERS + 1) * STATUSES),
            tokens: Slots::new(tokens, PROVIDERS * TOKEN_KINDS.len()),
            cost_nanousd: per_provider(
                &r,
                "tollgate_cost_nanousd_total",
                "Cost metered, in nano-USD, by provider.",
            )?,
            estimated: per_provider(
                &r,
                "tollgate_estimated_usage_events_total",
                "Calls whose usage was estimated: the provider's count never arrived, or could not be billed as reported (see tollgate_implausible_usage_total).",
            )?,
            implausible: per_provider(
                &r,
                "tollgate_implausible_usage_total",
                "Calls whose reported usage no call could have used (not a count, or beyond what the model can take and produce), billed at their reservation's bound instead.",
            )?,
            reservation_exceeded: per_provider(
                &r,
                "tollgate_reservation_exceeded_total",
                "Calls billed more than their reservation held (a charge the request did not bound): the one way a limit can be passed, by that call's excess.",
            )?,
            refusals: bind_all(&refusals, (0..LIMITS).map(|i| [limit_at(i).name()]))?,
            upstream_latency: Slots::new(upstream_latency, PROVIDERS),
            overhead: register(
                &r,
                Histogram::with_opts(latency_opts(
                    "tollgate_gateway_overhead_seconds",
                    "Time spent in the gateway's own work for a request: routing, authentication, admission, scanning and settling.",
                ))?,
            )?,
            in_flight: gauge(&r, "tollgate_requests_in_flight", "Requests being served.")?,
            busy_connections: AtomicI64::new(0),
            // promtool objects to "counter" in a name: the old names stay for one release.
            redis_degraded: [
                gauge(&r, "tollgate_redis_degraded", DEGRADED_HELP)?,
                gauge(
                    &r,
                    "tollgate_counter_store_degraded",
                    &format!("Deprecated: use tollgate_redis_degraded. {DEGRADED_HELP}"),
                )?,
            ],
            redis_errors: [
                counter(&r, "tollgate_redis_errors_total", REDIS_ERRORS_HELP)?,
                counter(
                    &r,
                    "tollgate_counter_store_errors_total",
                    &format!("Deprecated: use tollgate_redis_errors_total. {REDIS_ERRORS_HELP}"),
                )?,
            ],
            redis_operations: counter(
                &r,
                "tollgate_redis_operations_total",
                "Operations on the counters in Redis: reserves, settles, releases and seeds.",
            )?,
            redis_round_trips: counter(
                &r,
                "tollgate_redis_round_trips_total",
                "Commands sent to Redis for the counters: one per script call, which under load carries several reserves and settles, plus one when Redis had to be sent a script's source.",
            )?,
            redis_stats: std::sync::Mutex::new(()),
            alerts_raised: counter(
                &r,
                "tollgate_alerts_raised_total",
                "Usage alerts stored by this instance when a call crossed a threshold of a limit.",
            )?,
            alert_raise_failures: counter(
                &r,
                "tollgate_alert_raise_failures_total",
                "Threshold crossings whose alert was given up on (queue or retry list full, or the database still unavailable at shutdown); the calls were not affected.",
            )?,
            config_reloads: bind_all(&config_reloads, [["ok"], ["error"]])?,
            config_info: register(
                &r,
                IntGaugeVec::new(
                    opts(
                        "tollgate_config_info",
                        "The configuration in force: its version (a digest of gateway.toml and the pricing files) and when it was loaded.",
                    ),
                    &["version", "loaded_at"],
                )?,
            )?,
            per_plan: None,
            registry: r,
        })
    }

    /// Also counts requests, tokens and cost per plan when `enabled`.
    pub fn per_plan(mut self, enabled: bool) -> Result<Metrics, ProxyError> {
        if enabled {
            self.per_plan = Some(plan::PerPlan::register(&self.registry)?);
        }
        Ok(self)
    }

    /// A request's answer on `plan`, when per-plan series are on.
    pub fn plan_request(&self, plan: &str, provider: Option<Provider>, status: u16) {
        if let (Some(per_plan), Some(provider)) = (&self.per_plan, provider) {
            per_plan.request(plan, provider, status);
        }
    }

    /// A call's usage on `plan`, when per-plan series are on.
    pub fn plan_usage(&self, plan: &str, provider: Provider, usage: &Usage, cost_nanousd: u64) {
        if let Some(per_plan) = &self.per_plan {
            per_plan.usage(plan, provider, usage, cost_nanousd);
        }
    }

    /// The registry every metric of the gateway is on, for the binary to add the ledger's,
    /// the process's and the build's.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Connections busy now (see [`BusyConnection`]).
    pub fn busy_connections(&self) -> i64 {
        self.busy_connections.load(Relaxed)
    }

    /// Counts a connection as busy until the answer is dropped.
    pub fn connection_busy(self: &Arc<Self>) -> BusyConnection {
        self.busy_connections.fetch_add(1, Relaxed);
        BusyConnection(Arc::clone(self))
    }

    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A request's answer, counted once when it ends.
    pub fn request_finished(&self, provider: Option<Provider>, status: u16) {
        self.in_flight.dec();
        let row = provider.map_or(PROVIDERS, provider_index);
        let status = if (100..600).contains(&status) {
            status
        } else {
            0
        };
        let series = self.requests.get(row * STATUSES + usize::from(status), || {
            let provider = provider.map_or("none", Provider::as_str);
            [provider.to_owned(), status.to_string()]
        });
        if let Some(counter) = series {
            counter.inc();
        }
    }

    pub fn usage(&self, provider: Provider, usage: &Usage, cost_nanousd: u64, estimated: bool) {
        let row = provider_index(provider) * TOKEN_KINDS.len();
        let kinds = [
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.cache_creation_input_tokens,
            usage.cache_creation_1h_input_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
        ];
        for ((i, n), kind) in kinds.into_iter().enumerate().zip(TOKEN_KINDS) {
            if n > 0
                && let Some(counter) = self.tokens.get(row + i, || [provider.as_str(), kind])
            {
                counter.inc_by(n);
            }
        }
        self.cost_nanousd[provider_index(provider)].inc_by(cost_nanousd);
        if estimated {
            self.estimated[provider_index(provider)].inc();
        }
    }

    /// A call whose usage report was not billed as reported (`plausible`).
    pub fn implausible_usage(&self, provider: Provider) {
        self.implausible[provider_index(provider)].inc();
    }

    /// A call billed more than its reservation held (`exceeded`).
    pub fn reservation_exceeded(&self, provider: Provider) {
        self.reservation_exceeded[provider_index(provider)].inc();
    }

    pub fn refused_by_limit(&self, key: LimitKey) {
        self.refusals[limit_index(key)].inc();
    }

    pub fn upstream_latency(&self, provider: Provider, elapsed: Duration) {
        let series = self
            .upstream_latency
            .get(provider_index(provider), || [provider.as_str()]);
        if let Some(histogram) = series {
            histogram.observe(elapsed.as_secs_f64());
        }
    }

    pub fn gateway_overhead(&self, elapsed: Duration) {
        self.overhead.observe(elapsed.as_secs_f64());
    }

    pub fn set_counters_degraded(&self, degraded: bool) {
        for gauge in &self.redis_degraded {
            gauge.set(i64::from(degraded));
        }
    }

    /// The Redis store's counts since it was made: its operations and its round trips.
    pub fn set_redis_stats(&self, operations: u64, round_trips: u64) {
        let _one_at_a_time = self
            .redis_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (counter, now) in [
            (&self.redis_operations, operations),
            (&self.redis_round_trips, round_trips),
        ] {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
    }

    pub fn counter_store_error(&self) {
        for counter in &self.redis_errors {
            counter.inc();
        }
    }

    pub fn alerts_raised(&self, stored: usize) {
        self.alerts_raised
            .inc_by(u64::try_from(stored).unwrap_or(u64::MAX));
    }

    pub fn alert_raise_failed(&self, crossings: usize) {
        self.alert_raise_failures
            .inc_by(u64::try_from(crossings).unwrap_or(u64::MAX));
    }

    /// The configuration now in force: its version and when it was loaded (RFC 3339).
    pub fn config_loaded(&self, version: &str, loaded_at: &str) {
        // One series at a time: the previous configuration's goes. A scrape in between sees
        // none, which is also what it saw before the first load.
        self.config_info.reset();
        if let Ok(info) = self
            .config_info
            .get_metric_with_label_values(&[version, loaded_at])
        {
            info.set(1);
        }
    }

    /// A reload of the configuration, applied (`ok`) or refused.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads[usize::from(!ok)].inc();
    }

    /// The Prometheus text exposition (format 0.0.4) of everything on the registry.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding the metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_index_follows_all() {
        for (i, p) in Provider::ALL.iter().enumerate() {
            assert_eq!(provider_index(*p), i);
        }
        for i in 0..LIMITS {
            assert_eq!(limit_index(limit_at(i)), i);
        }
    }

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new().unwrap();
        m.request_started();
        m.request_started();
        m.request_finished(Some(Provider::OpenAi), 200);
        m.request_finished(None, 404);
        m.request_started();
        m.request_finished(Some(Provider::OpenAi), 200);
        let usage = Usage {
            input_tokens: 1337,
            cached_input_tokens: 1152,
            output_tokens: 211,
            ..Usage::default()
        };
        m.usage(Provider::OpenAi, &usage, 4_012_500, false);
        m.implausible_usage(Provider::Anthropic);
        m.reservation_exceeded(Provider::Exa);
        m.refused_by_limit(LimitKey::ProviderCalls(Provider::Gemini));
        m.upstream_latency(Provider::OpenAi, Duration::from_millis(3));
        m.gateway_overhead(Duration::from_micros(80));
        m.config_loaded("v1", "2026-12-01T00:00:00Z");
        m.config_loaded("v2", "2026-12-02T00:00:00Z");
        m.config_reload(false);
        let text = m.render();
        // The library writes labels in name order.
        for line in [
            "tollgate_requests_total{provider=\"openai\",status=\"200\"} 2",
            "tollgate_requests_total{provider=\"none\",status=\"404\"} 1",
            "tollgate_tokens_total{kind=\"input\",provider=\"openai\"} 1337",
            "tollgate_tokens_total{kind=\"cached_input\",provider=\"openai\"} 1152",
            "tollgate_tokens_total{kind=\"output\",provider=\"openai\"} 211",
            "tollgate_cost_nanousd_total{provider=\"openai\"} 4012500",
            "tollgate_implausible_usage_total{provider=\"anthropic\"} 1",
            "tollgate_implausible_usage_total{provider=\"openai\"} 0",
            "tollgate_reservation_exceeded_total{provider=\"exa\"} 1",
            "tollgate_limit_refusals_total{limit=\"gemini_calls\"} 1",
            "tollgate_limit_refusals_total{limit=\"monthly_cost\"} 0",
            "tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.0025\"} 0",
            "tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.005\"} 1",
            "tollgate_upstream_latency_seconds_count{provider=\"openai\"} 1",
            "tollgate_gateway_overhead_seconds_bucket{le=\"0.0001\"} 1",
            "tollgate_gateway_overhead_seconds_count 1",
            "tollgate_requests_in_flight 0",
            "tollgate_config_info{loaded_at=\"2026-12-02T00:00:00Z\",version=\"v2\"} 1",
            "tollgate_config_reloads_total{result=\"error\"} 1",
            "tollgate_config_reloads_total{result=\"ok\"} 0",
            "# TYPE tollgate_requests_total counter",
            "# TYPE tollgate_upstream_latency_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Kinds never used and providers never called have no series; a replaced
        // configuration's version is gone.
        for absent in [
            "kind=\"reasoning\"",
            "provider=\"gemini\",status",
            "version=\"v1\"",
        ] {
            assert!(!text.contains(absent), "unexpected {absent:?} in\n{text}");
        }
    }
}
