//! The gateway's Prometheus metrics: plain atomics in fixed arrays, so that recording on the
//! request path is a handful of relaxed additions with no lock, no allocation and no label
//! lookup. The text exposition is built only when `/metrics` is scraped. (The configuration's
//! version sits behind a lock: it is written by a reload and read by a scrape, never by a
//! request.)
//!
//! Labels are providers, status codes, token kinds and limit names: never a key, a user or a
//! model name (a model label would let any client grow the series without bound).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tollgate_domain::{LimitKey, Provider, Usage};

const PROVIDERS: usize = Provider::ALL.len();
/// Statuses 100..=599 each get a slot; anything else (0: no response) counts as 0.
const STATUSES: usize = 600;
/// Limits: calls and tokens per provider, then total calls, total tokens and cost.
const LIMITS: usize = 2 * PROVIDERS + 3;
const TOKEN_KINDS: [&str; 6] = [
    "input",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
];
/// Histogram bucket bounds in microseconds (0.1 ms .. 60 s), and their labels in seconds.
const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000, 15_000_000, 60_000_000,
];
const BUCKET_LABELS: [&str; 16] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "5", "15", "60",
];

/// A latency histogram with fixed buckets; `+Inf` is the count.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // Buckets are stored non-cumulatively and summed when rendered: one increment here.
        if let Some(i) = BUCKETS_US.iter().position(|&bound| us <= bound) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bucket, le) in self.buckets.iter().zip(BUCKET_LABELS) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        if labels.is_empty() {
            let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        } else {
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}"
            );
        }
    }
}

/// Everything the gateway counts.
#[derive(Debug)]
pub struct Metrics {
    /// Per provider plus one slot for requests that never reached a provider route.
    requests: Vec<AtomicU64>,
    tokens: Vec<AtomicU64>,
    cost_nanousd: [AtomicU64; PROVIDERS],
    estimated: [AtomicU64; PROVIDERS],
    /// Calls whose reported usage no call could have used, billed at their reservation instead.
    implausible: [AtomicU64; PROVIDERS],
    /// Calls billed more than their reservation held: the one way a limit can be passed.
    reservation_exceeded: [AtomicU64; PROVIDERS],
    refusals: [AtomicU64; LIMITS],
    upstream_latency: [Histogram; PROVIDERS],
    overhead: Histogram,
    in_flight: AtomicI64,
    /// 1 while the shared counter store is unreachable and limits run in a degraded mode.
    counters_degraded: AtomicI64,
    counter_store_errors: AtomicU64,
    /// Usage alerts this instance stored (crossings another caller had stored already are
    /// not counted).
    alerts_raised: AtomicU64,
    /// Crossings that could not be stored (database error, queue full).
    alert_raise_failures: AtomicU64,
    /// Reloads of the configuration that were applied, and that were refused.
    config_reloads_ok: AtomicU64,
    config_reloads_error: AtomicU64,
    /// The version of the configuration in force and when it was loaded (set at start and by
    /// each applied reload; read only when scraped).
    config_info: Mutex<(String, String)>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: (0..(PROVIDERS + 1) * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            tokens: (0..PROVIDERS * TOKEN_KINDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            cost_nanousd: std::array::from_fn(|_| AtomicU64::new(0)),
            estimated: std::array::from_fn(|_| AtomicU64::new(0)),
            implausible: std::array::from_fn(|_| AtomicU64::new(0)),
            reservation_exceeded: std::array::from_fn(|_| AtomicU64::new(0)),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            upstream_latency: std::array::from_fn(|_| Histogram::default()),
            overhead: Histogram::default(),
            in_flight: AtomicI64::new(0),
            counters_degraded: AtomicI64::new(0),
            counter_store_errors: AtomicU64::new(0),
            alerts_raised: AtomicU64::new(0),
            alert_raise_failures: AtomicU64::new(0),
            config_reloads_ok: AtomicU64::new(0),
            config_reloads_error: AtomicU64::new(0),
            config_info: Mutex::default(),
        }
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
        LimitKey::TotalCalls => 2 * PROVIDERS,
        LimitKey::TotalTokens => 2 * PROVIDERS + 1,
        LimitKey::Cost => 2 * PROVIDERS + 2,
    }
}

fn limit_at(index: usize) -> LimitKey {
    match index {
        i if i < PROVIDERS => LimitKey::ProviderCalls(Provider::ALL[i]),
        i if i < 2 * PROVIDERS => LimitKey::ProviderTokens(Provider::ALL[i - PROVIDERS]),
        i if i == 2 * PROVIDERS => LimitKey::TotalCalls,
        i if i == 2 * PROVIDERS + 1 => LimitKey::TotalTokens,
        _ => LimitKey::Cost,
    }
}

impl Metrics {
    /// Requests being served now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Relaxed)
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A request's answer, counted once when it ends.
    pub fn request_finished(&self, provider: Option<Provider>, status: u16) {
        self.in_flight.fetch_sub(1, Relaxed);
        let row = provider.map_or(PROVIDERS, provider_index);
        let status = if (100..600).contains(&status) {
            usize::from(status)
        } else {
            0
        };
        self.requests[row * STATUSES + status].fetch_add(1, Relaxed);
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
        for (i, n) in kinds.into_iter().enumerate() {
            if n > 0 {
                self.tokens[row + i].fetch_add(n, Relaxed);
            }
        }
        self.cost_nanousd[provider_index(provider)].fetch_add(cost_nanousd, Relaxed);
        if estimated {
            self.estimated[provider_index(provider)].fetch_add(1, Relaxed);
        }
    }

    /// A call whose usage report was not billed as reported (`plausible`).
    pub fn implausible_usage(&self, provider: Provider) {
        self.implausible[provider_index(provider)].fetch_add(1, Relaxed);
    }

    /// A call billed more than its reservation held (`exceeded`).
    pub fn reservation_exceeded(&self, provider: Provider) {
        self.reservation_exceeded[provider_index(provider)].fetch_add(1, Relaxed);
    }

    pub fn refused_by_limit(&self, key: LimitKey) {
        self.refusals[limit_index(key)].fetch_add(1, Relaxed);
    }

    pub fn upstream_latency(&self, provider: Provider, elapsed: Duration) {
        self.upstream_latency[provider_index(provider)].observe(elapsed);
    }

    pub fn gateway_overhead(&self, elapsed: Duration) {
        self.overhead.observe(elapsed);
    }

    pub fn set_counters_degraded(&self, degraded: bool) {
        self.counters_degraded.store(i64::from(degraded), Relaxed);
    }

    pub fn counter_store_error(&self) {
        self.counter_store_errors.fetch_add(1, Relaxed);
    }

    pub fn alerts_raised(&self, stored: usize) {
        self.alerts_raised
            .fetch_add(u64::try_from(stored).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn alert_raise_failed(&self, crossings: usize) {
        self.alert_raise_failures
            .fetch_add(u64::try_from(crossings).unwrap_or(u64::MAX), Relaxed);
    }

    /// The configuration now in force: its version and when it was loaded (RFC 3339).
    pub fn config_loaded(&self, version: &str, loaded_at: &str) {
        let mut info = self
            .config_info
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *info = (version.to_owned(), loaded_at.to_owned());
    }

    /// A reload of the configuration, applied (`ok`) or refused.
    pub fn config_reload(&self, ok: bool) {
        let counter = if ok {
            &self.config_reloads_ok
        } else {
            &self.config_reloads_error
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4). The ledger's metrics are rendered by the
    /// admin crate (`tollgate_admin::metrics::render_ledger`) and appended by the binary.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_requests(&mut out);
        self.render_usage(&mut out);
        head(
            &mut out,
            "tollgate_limit_refusals_total",
            "counter",
            "Requests refused with 429, by the limit that refused them.",
        );
        for (i, n) in self.refusals.iter().enumerate() {
            let n = n.load(Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "tollgate_limit_refusals_total{{limit=\"{}\"}} {n}",
                    limit_at(i)
                );
            }
        }
        head(
            &mut out,
            "tollgate_upstream_latency_seconds",
            "histogram",
            "From sending the request upstream to the response head, by provider.",
        );
        for (provider, histogram) in Provider::ALL.iter().zip(&self.upstream_latency) {
            if histogram.count.load(Relaxed) > 0 {
                let labels = format!("provider=\"{provider}\"");
                histogram.render(&mut out, "tollgate_upstream_latency_seconds", &labels);
            }
        }
        head(
            &mut out,
            "tollgate_gateway_overhead_seconds",
            "histogram",
            "Time spent in the gateway's own work for a request: routing, authentication, admission, scanning and settling.",
        );
        self.overhead
            .render(&mut out, "tollgate_gateway_overhead_seconds", "");
        single(
            &mut out,
            "tollgate_requests_in_flight",
            "gauge",
            "Requests being served.",
            self.in_flight.load(Relaxed),
        );
        single(
            &mut out,
            "tollgate_counter_store_degraded",
            "gauge",
            "1 while the shared counter store is unreachable and limits are enforced in the configured degraded mode.",
            self.counters_degraded.load(Relaxed),
        );
        single(
            &mut out,
            "tollgate_counter_store_errors_total",
            "counter",
            "Counter store calls that failed or timed out.",
            self.counter_store_errors.load(Relaxed),
        );
        single(
            &mut out,
            "tollgate_alerts_raised_total",
            "counter",
            "Usage alerts stored by this instance when a call crossed a threshold of a limit.",
            self.alerts_raised.load(Relaxed),
        );
        single(
            &mut out,
            "tollgate_alert_raise_failures_total",
            "counter",
            "Threshold crossings whose alert was given up on (queue or retry list full, or the database still unavailable at shutdown); the calls were not affected.",
            self.alert_raise_failures.load(Relaxed),
        );
        self.render_config(&mut out);
        out
    }

    fn render_config(&self, out: &mut String) {
        let (version, loaded_at) = self
            .config_info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !version.is_empty() {
            head(
                out,
                "tollgate_config_info",
                "gauge",
                "The configuration in force: its version (a digest of gateway.toml and the pricing files) and when it was loaded.",
            );
            let _ = writeln!(
                out,
                "tollgate_config_info{{version=\"{version}\",loaded_at=\"{loaded_at}\"}} 1"
            );
        }
        head(
            out,
            "tollgate_config_reloads_total",
            "counter",
            "Reloads of the configuration, by result: ok (applied) or error (refused; the previous configuration keeps serving).",
        );
        for (result, n) in [
            ("ok", &self.config_reloads_ok),
            ("error", &self.config_reloads_error),
        ] {
            let _ = writeln!(
                out,
                "tollgate_config_reloads_total{{result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
    }

    fn render_requests(&self, out: &mut String) {
        head(
            out,
            "tollgate_requests_total",
            "counter",
            "Requests answered, by provider and HTTP status (0: no response was sent).",
        );
        for (row, counts) in self.requests.chunks(STATUSES).enumerate() {
            let provider = Provider::ALL.get(row).map_or("none", |p| p.as_str());
            for (status, n) in counts.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tollgate_requests_total{{provider=\"{provider}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
    }

    fn render_usage(&self, out: &mut String) {
        head(
            out,
            "tollgate_tokens_total",
            "counter",
            "Tokens metered, by provider and kind (cached_input and cache writes are parts of input; reasoning is part of output).",
        );
        for (row, kinds) in self.tokens.chunks(TOKEN_KINDS.len()).enumerate() {
            for (kind, n) in TOKEN_KINDS.iter().zip(kinds) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tollgate_tokens_total{{provider=\"{}\",kind=\"{kind}\"}} {n}",
                        Provider::ALL[row]
                    );
                }
            }
        }
        head(
            out,
            "tollgate_cost_nanousd_total",
            "counter",
            "Cost metered, in nano-USD, by provider.",
        );
        for (provider, n) in Provider::ALL.iter().zip(&self.cost_nanousd) {
            let _ = writeln!(
                out,
                "tollgate_cost_nanousd_total{{provider=\"{provider}\"}} {}",
                n.load(Relaxed)
            );
        }
        head(
            out,
            "tollgate_estimated_usage_events_total",
            "counter",
            "Calls whose usage was estimated: the provider's count never arrived, or could not be billed as reported (see tollgate_implausible_usage_total).",
        );
        for (provider, n) in Provider::ALL.iter().zip(&self.estimated) {
            let _ = writeln!(
                out,
                "tollgate_estimated_usage_events_total{{provider=\"{provider}\"}} {}",
                n.load(Relaxed)
            );
        }
        head(
            out,
            "tollgate_implausible_usage_total",
            "counter",
            "Calls whose reported usage no call could have used (not a count, or beyond what the model can take and produce), billed at their reservation's bound instead.",
        );
        for (provider, n) in Provider::ALL.iter().zip(&self.implausible) {
            let _ = writeln!(
                out,
                "tollgate_implausible_usage_total{{provider=\"{provider}\"}} {}",
                n.load(Relaxed)
            );
        }
        head(
            out,
            "tollgate_reservation_exceeded_total",
            "counter",
            "Calls billed more than their reservation held (a charge the request did not bound): the one way a limit can be passed, by that call's excess.",
        );
        for (provider, n) in Provider::ALL.iter().zip(&self.reservation_exceeded) {
            let _ = writeln!(
                out,
                "tollgate_reservation_exceeded_total{{provider=\"{provider}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
}

/// A metric with one unlabelled sample: its HELP and TYPE lines and the sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
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
        let m = Metrics::default();
        m.request_started();
        m.request_started();
        m.request_finished(Some(Provider::OpenAi), 200);
        m.request_finished(None, 404);
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
        let text = m.render();
        for line in [
            "tollgate_requests_total{provider=\"openai\",status=\"200\"} 1",
            "tollgate_requests_total{provider=\"none\",status=\"404\"} 1",
            "tollgate_tokens_total{provider=\"openai\",kind=\"input\"} 1337",
            "tollgate_tokens_total{provider=\"openai\",kind=\"cached_input\"} 1152",
            "tollgate_tokens_total{provider=\"openai\",kind=\"output\"} 211",
            "tollgate_cost_nanousd_total{provider=\"openai\"} 4012500",
            "tollgate_implausible_usage_total{provider=\"anthropic\"} 1",
            "tollgate_implausible_usage_total{provider=\"openai\"} 0",
            "tollgate_reservation_exceeded_total{provider=\"exa\"} 1",
            "tollgate_limit_refusals_total{limit=\"gemini_calls\"} 1",
            "tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.0025\"} 0",
            "tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.005\"} 1",
            "tollgate_upstream_latency_seconds_count{provider=\"openai\"} 1",
            "tollgate_gateway_overhead_seconds_bucket{le=\"0.0001\"} 1",
            "tollgate_gateway_overhead_seconds_count 1",
            "tollgate_requests_in_flight 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Every sample line is `name{labels} value` or `name value`, parseable as a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample {line:?}");
        }
    }
}
