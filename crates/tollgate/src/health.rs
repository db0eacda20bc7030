//! What `/readyz` reports beside the database: a shutdown under way (from SIGTERM until the
//! process exits, so that an orchestrator stops sending traffic during the grace period), the
//! ledger's spool full, and the counter store away while calls are refused for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tollgate_admin::Readiness;
use tollgate_counters::ResilientStore;
use tollgate_domain::UnreachablePolicy;
use tollgate_ledger::LedgerHandle;
use tollgate_proxy::SnapshotCell;

/// The reasons this instance is not ready, besides its database.
pub fn readiness(
    draining: Arc<AtomicBool>,
    snapshots: Arc<SnapshotCell>,
    ledger: LedgerHandle,
    counters: Option<ResilientStore>,
) -> Readiness {
    Arc::new(move || {
        let mut reasons = Vec::new();
        if draining.load(Ordering::SeqCst) {
            reasons.push("shutting down: finishing the calls in flight".to_owned());
        }
        let config = Arc::clone(&snapshots.load().config);
        let ledger = ledger.metrics();
        if ledger.spool_bytes >= config.ledger.spool_max_bytes {
            reasons.push(format!(
                "the ledger's spool is full ({} bytes of spool_max_bytes {}): usage cannot be \
                 recorded while the database is away",
                ledger.spool_bytes, config.ledger.spool_max_bytes
            ));
        }
        let policy = config.storage.on_counter_store_unreachable;
        if counters.as_ref().is_some_and(ResilientStore::is_degraded)
            && policy == UnreachablePolicy::FailClosed
        {
            reasons.push(
                "the counter store (Redis) is unreachable and on_counter_store_unreachable = \
                 \"fail_closed\": calls are refused until it is back"
                    .to_owned(),
            );
        }
        reasons
    })
}
