//! The ledger's counters in the Prometheus text exposition format, for `/metrics`. The binary
//! joins this with the proxy's own metrics in the renderer it hands the admin server.

use std::fmt::Write;

use tollgate_ledger::LedgerMetrics;

/// `tollgate_ledger_*` metrics, with HELP and TYPE lines.
pub fn render_ledger(m: &LedgerMetrics) -> String {
    let counters: [(&str, u64, &str); 13] = [
        (
            "accepted_total",
            m.accepted,
            "Usage events accepted by the ledger.",
        ),
        (
            "written_total",
            m.written,
            "Usage log rows written to the database.",
        ),
        (
            "duplicates_total",
            m.duplicates,
            "Events found already stored (idempotent no-ops).",
        ),
        (
            "batches_total",
            m.batches,
            "Batches committed to the database.",
        ),
        (
            "spooled_total",
            m.spooled,
            "Events written to the on-disk spool.",
        ),
        (
            "replayed_total",
            m.replayed,
            "Spooled events replayed into the database.",
        ),
        (
            "dropped_total",
            m.dropped,
            "Usage events lost by policy or recorded after shutdown; must stay 0.",
        ),
        (
            "queue_full_total",
            m.queue_full,
            "Times an event met a full queue.",
        ),
        (
            "spool_full_total",
            m.spool_full,
            "Times a batch met a full spool.",
        ),
        (
            "db_errors_total",
            m.db_errors,
            "Failed database writes (batch spooled).",
        ),
        (
            "spool_frames_skipped_total",
            m.spool_frames_skipped,
            "Torn spool frames skipped.",
        ),
        (
            "rejected_total",
            m.rejected,
            "Events the database refused, set aside.",
        ),
        (
            "flush_latency_microseconds_total",
            m.flush_latency_us_total,
            "Database write time of all batches.",
        ),
    ];
    let gauges: [(&str, u64, &str); 6] = [
        (
            "queue_depth",
            m.queue_depth,
            "Events waiting in the in-memory queue.",
        ),
        (
            "queue_capacity",
            m.queue_capacity,
            "Capacity of the in-memory queue.",
        ),
        (
            "overflow_depth",
            m.overflow_depth,
            "Events that met a full queue, waiting to be spooled.",
        ),
        ("spool_bytes", m.spool_bytes, "Bytes in the on-disk spool."),
        (
            "last_batch_size",
            m.last_batch_size,
            "Events in the last batch written.",
        ),
        (
            "last_flush_latency_microseconds",
            m.last_flush_latency_us,
            "Database write time of the last batch.",
        ),
    ];
    let mut out = String::new();
    for (kind, list) in [("counter", &counters[..]), ("gauge", &gauges[..])] {
        for (name, value, help) in list {
            let _ = writeln!(out, "# HELP tollgate_ledger_{name} {help}");
            let _ = writeln!(out, "# TYPE tollgate_ledger_{name} {kind}");
            let _ = writeln!(out, "tollgate_ledger_{name} {value}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_type_and_value() {
        let text = render_ledger(&LedgerMetrics {
            dropped: 3,
            queue_depth: 7,
            overflow_depth: 5,
            ..LedgerMetrics::default()
        });
        assert!(text.contains("# TYPE tollgate_ledger_dropped_total counter\n"));
        assert!(text.contains("tollgate_ledger_dropped_total 3\n"));
        assert!(text.contains("# TYPE tollgate_ledger_queue_depth gauge\n"));
        assert!(text.contains("tollgate_ledger_queue_depth 7\n"));
        assert!(text.contains("tollgate_ledger_overflow_depth 5\n"));
        assert_eq!(text.lines().count(), 19 * 3);
    }
}
