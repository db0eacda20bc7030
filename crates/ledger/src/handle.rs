//! The write side's handle: how the gateway hands events to the ledger.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::config::OnFull;
use crate::error::{LedgerError, Result};
use crate::event::UsageEvent;
use crate::metrics::{Counters, LedgerMetrics, add, set};
use crate::spool::Spool;
use crate::writer::Msg;

#[derive(Clone, Debug)]
pub struct LedgerHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: mpsc::Sender<Msg>,
    spool: Arc<Mutex<Spool>>,
    counters: Arc<Counters>,
    on_full: OnFull,
    capacity: usize,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl LedgerHandle {
    pub(crate) fn new(
        tx: mpsc::Sender<Msg>,
        spool: Arc<Mutex<Spool>>,
        counters: Arc<Counters>,
        on_full: OnFull,
        capacity: usize,
        task: JoinHandle<()>,
    ) -> LedgerHandle {
        LedgerHandle {
            shared: Arc::new(Shared {
                tx,
                spool,
                counters,
                on_full,
                capacity,
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// Queues `event` without waiting. On a full queue `on_full` decides: `spool` appends it to
    /// the spool (synced) before returning, `drop` counts and drops it, `block` hands it back in
    /// [`LedgerError::QueueFull`] for the caller to pass to [`LedgerHandle::record_async`].
    pub fn record(&self, event: UsageEvent) -> Result<()> {
        let s = &self.shared;
        match s.tx.try_send(Msg::Event {
            event,
            durable: None,
        }) {
            Ok(()) => {
                add(&s.counters.accepted, 1);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(msg)) => {
                add(&s.counters.queue_full, 1);
                let event = into_event(msg)?;
                match s.on_full {
                    OnFull::Spool => self.spool_directly(event),
                    OnFull::Drop => {
                        add(&s.counters.dropped, 1);
                        warn!(event_id = %event.event_id, "ledger queue full: usage event dropped");
                        Err(LedgerError::Dropped)
                    }
                    OnFull::Block => Err(LedgerError::QueueFull {
                        capacity: s.capacity,
                        event: Box::new(event),
                    }),
                }
            }
            // After shutdown the spool is still there: the next start replays it.
            Err(mpsc::error::TrySendError::Closed(msg)) => self.spool_directly(into_event(msg)?),
        }
    }

    /// Queues `event`, waiting for room when the queue is full and `on_full` is `block`.
    pub async fn record_async(&self, event: UsageEvent) -> Result<()> {
        self.send(event, None).await.map(|_| ())
    }

    /// Records `event` and returns once it is durable: committed to the database or synced to
    /// the spool. A caller that must not lose an event even to a SIGKILL waits on this.
    pub async fn record_durable(&self, event: UsageEvent) -> Result<()> {
        let (durable_tx, durable_rx) = oneshot::channel();
        if self.send(event, Some(durable_tx)).await? {
            // Spooled directly: already durable.
            return Ok(());
        }
        match durable_rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(LedgerError::Dropped),
            Err(_) => Err(LedgerError::Closed),
        }
    }

    /// Returns once every event recorded before the call is durable (committed or spooled).
    pub async fn flush(&self) -> Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        self.shared
            .tx
            .send(Msg::Flush(done_tx))
            .await
            .map_err(|_| LedgerError::Closed)?;
        done_rx.await.map_err(|_| LedgerError::Closed)
    }

    /// Drains the queue to the database (or to the spool while the database is down), replays
    /// what the spool holds if the database takes it, and stops the writer. Events recorded
    /// afterwards go straight to the spool.
    pub async fn shutdown(&self) -> Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        if self.shared.tx.send(Msg::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        let task = lock(&self.shared.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        Ok(())
    }

    pub fn metrics(&self) -> LedgerMetrics {
        let s = &self.shared;
        let depth = s.tx.max_capacity().saturating_sub(s.tx.capacity());
        s.counters.snapshot(depth as u64)
    }

    /// Sends with the `on_full` policy; `Ok(true)` when the event was spooled directly.
    async fn send(
        &self,
        event: UsageEvent,
        durable: Option<oneshot::Sender<bool>>,
    ) -> Result<bool> {
        let s = &self.shared;
        let msg = Msg::Event { event, durable };
        let msg = match s.tx.try_send(msg) {
            Ok(()) => {
                add(&s.counters.accepted, 1);
                return Ok(false);
            }
            Err(mpsc::error::TrySendError::Full(msg)) => {
                add(&s.counters.queue_full, 1);
                if s.on_full == OnFull::Block {
                    match s.tx.send(msg).await {
                        Ok(()) => {
                            add(&s.counters.accepted, 1);
                            return Ok(false);
                        }
                        Err(mpsc::error::SendError(msg)) => msg,
                    }
                } else if s.on_full == OnFull::Drop {
                    add(&s.counters.dropped, 1);
                    warn!("ledger queue full: usage event dropped");
                    return Err(LedgerError::Dropped);
                } else {
                    msg
                }
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => msg,
        };
        let event = into_event(msg)?;
        let handle = self.clone();
        tokio::task::spawn_blocking(move || handle.spool_directly(event))
            .await
            .map_err(|_| LedgerError::Closed)??;
        Ok(true)
    }

    fn spool_directly(&self, event: UsageEvent) -> Result<()> {
        let s = &self.shared;
        let mut spool = lock(&s.spool);
        match spool.append(std::slice::from_ref(&event)) {
            Ok(_) => {
                add(&s.counters.accepted, 1);
                add(&s.counters.spooled, 1);
                set(&s.counters.spool_bytes, spool.bytes());
                Ok(())
            }
            Err(e) => {
                if matches!(e, LedgerError::SpoolFull { .. }) {
                    add(&s.counters.spool_full, 1);
                }
                add(&s.counters.dropped, 1);
                error!(event_id = %event.event_id, error = %e, "usage event dropped: queue and spool both refused it");
                Err(e)
            }
        }
    }
}

fn into_event(msg: Msg) -> Result<UsageEvent> {
    match msg {
        Msg::Event { event, .. } => Ok(event),
        Msg::Flush(_) | Msg::Shutdown(_) => Err(LedgerError::Closed),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
