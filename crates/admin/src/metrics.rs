//! The ledger's counters as Prometheus metrics (`tollgate_ledger_*`): a collector the binary
//! registers beside the proxy's own metrics, which reads one [`LedgerMetrics`] snapshot per
//! scrape. The ledger keeps its plain atomics; nothing here runs on the write path.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
use tollgate_ledger::LedgerMetrics;

/// One `tollgate_ledger_*` series: its name after the prefix, help, type, and where its value
/// is in the snapshot.
struct Series {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    value: fn(&LedgerMetrics) -> f64,
}

const fn counter(
    name: &'static str,
    help: &'static str,
    value: fn(&LedgerMetrics) -> f64,
) -> Series {
    Series {
        name,
        help,
        kind: MetricType::COUNTER,
        value,
    }
}

const fn gauge(name: &'static str, help: &'static str, value: fn(&LedgerMetrics) -> f64) -> Series {
    Series {
        name,
        help,
        kind: MetricType::GAUGE,
        value,
    }
}

// Counts are far below 2^53, so f64 (the exposition's number type) holds them exactly.
const SERIES: [Series; 24] = [
    counter(
        "accepted_total",
        "Usage events accepted by the ledger.",
        |m| m.accepted as f64,
    ),
    counter(
        "written_total",
        "Usage log rows written to the database.",
        |m| m.written as f64,
    ),
    counter(
        "duplicates_total",
        "Events found already stored (idempotent no-ops).",
        |m| m.duplicates as f64,
    ),
    counter(
        "erased_events_total",
        "Events not written because their user was erased after the call began.",
        |m| m.erased as f64,
    ),
    counter("batches_total", "Batches committed to the database.", |m| {
        m.batches as f64
    }),
    counter(
        "spooled_total",
        "Events written to the on-disk spool.",
        |m| m.spooled as f64,
    ),
    counter(
        "replayed_total",
        "Spooled events replayed into the database.",
        |m| m.replayed as f64,
    ),
    counter(
        "dropped_total",
        "Usage events lost by policy or recorded after shutdown; must stay 0.",
        |m| m.dropped as f64,
    ),
    counter(
        "queue_full_total",
        "Times an event met a full queue.",
        |m| m.queue_full as f64,
    ),
    counter("spool_full_total", "Times a batch met a full spool.", |m| {
        m.spool_full as f64
    }),
    counter(
        "db_errors_total",
        "Failed database writes (batch spooled).",
        |m| m.db_errors as f64,
    ),
    counter(
        "spool_frames_skipped_total",
        "Torn spool frames skipped.",
        |m| m.spool_frames_skipped as f64,
    ),
    counter(
        "rejected_total",
        "Events the database refused, set aside.",
        |m| m.rejected as f64,
    ),
    counter(
        "usage_logs_deleted_total",
        "Usage log rows deleted by retention.",
        |m| m.usage_logs_deleted as f64,
    ),
    counter(
        "retention_sweeps_total",
        "Usage log retention sweeps completed.",
        |m| m.retention_sweeps as f64,
    ),
    counter(
        "flush_seconds_total",
        "Database write time of all batches.",
        |m| m.flush_latency_us_total as f64 / 1e6,
    ),
    counter(
        "flush_latency_microseconds_total",
        "Deprecated: use tollgate_ledger_flush_seconds_total. Database write time of all batches, in microseconds.",
        |m| m.flush_latency_us_total as f64,
    ),
    gauge(
        "queue_depth",
        "Events waiting in the in-memory queue.",
        |m| m.queue_depth as f64,
    ),
    gauge("queue_capacity", "Capacity of the in-memory queue.", |m| {
        m.queue_capacity as f64
    }),
    gauge(
        "overflow_depth",
        "Events that met a full queue, waiting to be spooled.",
        |m| m.overflow_depth as f64,
    ),
    gauge("spool_bytes", "Bytes in the on-disk spool.", |m| {
        m.spool_bytes as f64
    }),
    gauge(
        "last_batch_size",
        "Events in the last batch written.",
        |m| m.last_batch_size as f64,
    ),
    gauge(
        "last_flush_seconds",
        "Database write time of the last batch.",
        |m| m.last_flush_latency_us as f64 / 1e6,
    ),
    gauge(
        "last_flush_latency_microseconds",
        "Deprecated: use tollgate_ledger_last_flush_seconds. Database write time of the last batch, in microseconds.",
        |m| m.last_flush_latency_us as f64,
    ),
];

/// The ledger's metrics, read from `snapshot` when scraped.
pub struct LedgerCollector {
    snapshot: Box<dyn Fn() -> LedgerMetrics + Send + Sync>,
    descs: Vec<Desc>,
}

impl std::fmt::Debug for LedgerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerCollector").finish_non_exhaustive()
    }
}

impl LedgerCollector {
    pub fn new(
        snapshot: impl Fn() -> LedgerMetrics + Send + Sync + 'static,
    ) -> prometheus::Result<LedgerCollector> {
        let descs = SERIES
            .iter()
            .map(|s| Desc::new(full_name(s), s.help.to_owned(), Vec::new(), HashMap::new()))
            .collect::<prometheus::Result<_>>()?;
        Ok(LedgerCollector {
            snapshot: Box::new(snapshot),
            descs,
        })
    }
}

fn full_name(series: &Series) -> String {
    format!("tollgate_ledger_{}", series.name)
}

impl Collector for LedgerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = (self.snapshot)();
        SERIES.iter().map(|s| family(s, &snapshot)).collect()
    }
}

fn family(series: &Series, snapshot: &LedgerMetrics) -> MetricFamily {
    let value = (series.value)(snapshot);
    let mut metric = Metric::default();
    if series.kind == MetricType::COUNTER {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    let mut family = MetricFamily::default();
    family.set_name(full_name(series));
    family.set_help(series.help.to_owned());
    family.set_field_type(series.kind);
    family.set_metric(vec![metric]);
    family
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Registry, TextEncoder};

    #[test]
    fn every_metric_has_help_type_and_value() {
        let registry = Registry::new();
        let collector = LedgerCollector::new(|| LedgerMetrics {
            dropped: 3,
            queue_depth: 7,
            overflow_depth: 5,
            flush_latency_us_total: 1_500_000,
            ..LedgerMetrics::default()
        })
        .unwrap();
        registry.register(Box::new(collector)).unwrap();
        let text = TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains("# TYPE tollgate_ledger_dropped_total counter\n"));
        assert!(text.contains("tollgate_ledger_dropped_total 3\n"));
        assert!(text.contains("# TYPE tollgate_ledger_queue_depth gauge\n"));
        assert!(text.contains("tollgate_ledger_queue_depth 7\n"));
        assert!(text.contains("tollgate_ledger_overflow_depth 5\n"));
        assert!(text.contains("tollgate_ledger_flush_seconds_total 1.5\n"));
        assert!(text.contains("tollgate_ledger_flush_latency_microseconds_total 1500000\n"));
        assert_eq!(text.lines().count(), SERIES.len() * 3);
    }
}
