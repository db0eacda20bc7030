//! The admitted calls still running, so that a shutdown can record the ones it cuts off.
//!
//! Every admitted call is entered here when admission reserves for it and taken out when it is
//! settled. Whoever takes a call out records it — its own `logging` hook, or the shutdown once
//! the grace period is over (its task is about to be dropped with the runtime, and its hook
//! would never run) — so each call is recorded exactly once. The shutdown records the usage seen
//! so far: the response's status and the bytes that passed, estimated like any call whose usage
//! never arrived, with the shutdown as its error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tollgate_counters::Reservation;
use tollgate_domain::BillingPeriod;
use tollgate_ledger::LedgerHandle;
use tollgate_usage::RequestFacts;

use crate::keys::Identity;
use crate::limits::Counters;
use crate::metering::{CallRecord, Settled, settle_call};
use crate::snapshot::SnapshotCell;

/// What a running call has received so far, updated by its own task as the response passes.
#[derive(Debug, Default)]
pub struct Progress {
    pub status: AtomicU16,
    pub response_bytes: AtomicU64,
}

/// An admitted call, as the shutdown needs it to record it.
#[derive(Debug)]
pub struct Running {
    pub reservation: Reservation,
    pub request_id: String,
    pub identity: Arc<Identity>,
    pub period: BillingPeriod,
    pub method: http::Method,
    pub path: String,
    pub facts: RequestFacts,
    pub started: Instant,
    pub progress: Arc<Progress>,
}

/// The admitted calls in flight, by an id of their own: reservation ids are not unique (a call
/// admitted while the counter store is away holds nothing and shares its id).
#[derive(Debug, Default)]
pub struct InFlight {
    next_id: AtomicU64,
    calls: Mutex<HashMap<u64, Running>>,
}

/// The error recorded on a call the shutdown cut off.
pub const CUT_BY_SHUTDOWN: &str =
    "the gateway shut down before the call ended (its grace period was over)";

impl InFlight {
    /// Enters a call; answers its id, to take it out with.
    pub fn enter(&self, call: Running) -> u64 {
        let id = self.next_id.fetch_add(1, Relaxed);
        self.lock().insert(id, call);
        id
    }

    /// Takes the call out; `false` when the shutdown already recorded it.
    pub fn take(&self, call_id: u64) -> bool {
        self.lock().remove(&call_id).is_some()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a shutdown needs to record the calls it cuts off: taken from the gateway before Pingora
/// owns it.
#[derive(Clone, Debug)]
pub struct CutOff {
    pub(crate) calls: Arc<InFlight>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) ledger: LedgerHandle,
    pub(crate) snapshots: Arc<SnapshotCell>,
}

impl CutOff {
    /// Admitted calls still running.
    pub fn running(&self) -> usize {
        self.calls.len()
    }

    /// Settles and records every call still running, with what it had received; answers how
    /// many there were.
    pub async fn record_all(&self) -> usize {
        let calls: Vec<Running> = self.calls.lock().drain().map(|(_, call)| call).collect();
        let snapshot = self.snapshots.load();
        for call in &calls {
            let status = call.progress.status.load(Relaxed);
            let record = CallRecord {
                provider: call.reservation.provider,
                request_id: &call.request_id,
                identity: &call.identity,
                period: call.period,
                method: call.method.as_str(),
                path: &call.path,
                facts: &call.facts,
                status,
                scanned: None,
                reserved: call.reservation.amount,
                transport_error: Some(CUT_BY_SHUTDOWN.to_owned()),
                // The body's bytes: what admission read it from.
                request_bytes: call.facts.input_tokens_bound,
                response_bytes: call.progress.response_bytes.load(Relaxed),
                latency_ms: u64::try_from(call.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            // Nothing was scanned: the usage is estimated, never implausible.
            let Settled { event, actual, .. } = settle_call(&snapshot.config, record);
            self.counters.settle(&call.reservation, actual).await;
            if let Err(e) = self.ledger.record(event).await {
                tracing::error!(error = %e, "usage event of a call cut off by the shutdown not recorded");
            }
        }
        calls.len()
    }
}
