//! The ledger's counters: plain atomics, read as one [`LedgerMetrics`] snapshot (exposed to
//! Prometheus by the admin crate).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the ledger's counters. Counters only grow; `queue_depth`, `overflow_depth`,
/// `spool_bytes` and `last_*` are gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerMetrics {
    /// Events waiting in the in-memory queue.
    pub queue_depth: u64,
    pub queue_capacity: u64,
    /// Events that met a full queue waiting in memory for the overflow task to spool them.
    pub overflow_depth: u64,
    /// Events accepted by `record*` (queued, or handed to the overflow when the queue was full).
    pub accepted: u64,
    /// Log rows inserted by the writer (first-time inserts only).
    pub written: u64,
    /// Events found already stored when written or replayed (idempotent no-ops).
    pub duplicates: u64,
    /// Events not written because their user was erased after the call began.
    pub erased: u64,
    /// Batches committed to the database.
    pub batches: u64,
    pub last_batch_size: u64,
    pub max_batch_size: u64,
    /// Database write time of batches, for an average and the last value.
    pub flush_latency_us_total: u64,
    pub last_flush_latency_us: u64,
    /// Bytes in the on-disk spool, replayed or not.
    pub spool_bytes: u64,
    /// Events written to the spool (because the database failed or the queue was full).
    pub spooled: u64,
    /// Spooled events written to the database on replay.
    pub replayed: u64,
    /// Events lost by policy (`on_full` or `on_spool_full` = `drop`), or recorded after
    /// shutdown. Must stay 0 unless an operator chose to drop.
    pub dropped: u64,
    /// Times an event met a full queue (whatever the policy then did with it).
    pub queue_full: u64,
    /// Times a batch met a full spool.
    pub spool_full: u64,
    /// Failed database writes (each sends its batch to the spool).
    pub db_errors: u64,
    /// Torn or corrupt spool frames skipped on replay.
    pub spool_frames_skipped: u64,
    /// Events the database refused for their content, set aside in `rejected.jsonl`.
    pub rejected: u64,
    /// Usage log rows deleted by retention (`retain_usage_logs_months`).
    pub usage_logs_deleted: u64,
    /// Retention sweeps completed (at start, then hourly; none without retention).
    pub retention_sweeps: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub queue_capacity: AtomicU64,
    pub accepted: AtomicU64,
    pub written: AtomicU64,
    pub duplicates: AtomicU64,
    pub erased: AtomicU64,
    pub batches: AtomicU64,
    pub last_batch_size: AtomicU64,
    pub max_batch_size: AtomicU64,
    pub flush_latency_us_total: AtomicU64,
    pub last_flush_latency_us: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub dropped: AtomicU64,
    pub queue_full: AtomicU64,
    pub spool_full: AtomicU64,
    pub db_errors: AtomicU64,
    pub spool_frames_skipped: AtomicU64,
    pub rejected: AtomicU64,
    pub usage_logs_deleted: AtomicU64,
    pub retention_sweeps: AtomicU64,
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn set(gauge: &AtomicU64, value: u64) {
    gauge.store(value, Ordering::Relaxed);
}

impl Counters {
    pub fn batch_committed(&self, size: u64, latency_us: u64) {
        add(&self.batches, 1);
        set(&self.last_batch_size, size);
        self.max_batch_size.fetch_max(size, Ordering::Relaxed);
        add(&self.flush_latency_us_total, latency_us);
        set(&self.last_flush_latency_us, latency_us);
    }

    pub fn snapshot(&self, queue_depth: u64, overflow_depth: u64) -> LedgerMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LedgerMetrics {
            queue_depth,
            queue_capacity: get(&self.queue_capacity),
            overflow_depth,
            accepted: get(&self.accepted),
            written: get(&self.written),
            duplicates: get(&self.duplicates),
            erased: get(&self.erased),
            batches: get(&self.batches),
            last_batch_size: get(&self.last_batch_size),
            max_batch_size: get(&self.max_batch_size),
            flush_latency_us_total: get(&self.flush_latency_us_total),
            last_flush_latency_us: get(&self.last_flush_latency_us),
            spool_bytes: get(&self.spool_bytes),
            spooled: get(&self.spooled),
            replayed: get(&self.replayed),
            dropped: get(&self.dropped),
            queue_full: get(&self.queue_full),
            spool_full: get(&self.spool_full),
            db_errors: get(&self.db_errors),
            spool_frames_skipped: get(&self.spool_frames_skipped),
            rejected: get(&self.rejected),
            usage_logs_deleted: get(&self.usage_logs_deleted),
            retention_sweeps: get(&self.retention_sweeps),
        }
    }
}
