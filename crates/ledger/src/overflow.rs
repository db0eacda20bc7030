//! The overflow task: events that met a full queue under `on_full = "spool"` — and any event
//! recorded while the writer shuts down — appended to the spool, away from the caller's thread.
//!
//! It is a task apart from the writer because the queue is full precisely when the writer is
//! held up, by a slow or locked database, and the overflow must reach the disk meanwhile. Each
//! frame takes everything waiting (up to `batch_max_events`), so one `fsync` covers a burst. The
//! writer replays these frames with its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::backoff::Backoff;
use crate::batcher::{self, Limits};
use crate::config::OnSpoolFull;
use crate::error::LedgerError;
use crate::event::UsageEvent;
use crate::metrics::{Counters, add, set};
use crate::queue::{Msg, Pending};
use crate::spool::{self, SharedSpool};

#[derive(Debug)]
pub(crate) struct Overflow {
    pub rx: mpsc::Receiver<Msg>,
    pub spool: SharedSpool,
    pub counters: Arc<Counters>,
    pub frame_max_events: usize,
    pub on_spool_full: OnSpoolFull,
    pub backoff: Backoff,
}

impl Overflow {
    /// Spools what arrives until a shutdown message, then what is left behind it, and stops.
    pub async fn run(mut self) {
        let limits = Limits {
            max_messages: self.frame_max_events,
            max_wait: Duration::ZERO,
        };
        let mut shutdowns = Vec::new();
        while let Some(first) = self.rx.recv().await {
            let batch = batcher::collect(&mut self.rx, first, limits, Msg::cuts_batch, None).await;
            let mut pending = Pending::new(batch);
            let durable = self.spool(std::mem::take(&mut pending.events)).await;
            let stop = pending.answer(durable);
            if !stop.is_empty() {
                // recv() hands out what is already queued, then ends the loop.
                self.rx.close();
                shutdowns.extend(stop);
            }
        }
        for tx in shutdowns {
            let _ = tx.send(());
        }
    }

    /// Appends `events` as one synced frame; false when they were dropped. A spool that refuses
    /// them (full, or a disk error) is retried with back-off under `on_spool_full = "block"`:
    /// the overflow fills meanwhile and recording waits for it.
    async fn spool(&mut self, mut events: Vec<UsageEvent>) -> bool {
        if events.is_empty() {
            return true;
        }
        loop {
            let count = events.len() as u64;
            let (back, appended) = spool::append(&self.spool, events).await;
            events = back;
            let e = match appended {
                Ok(bytes) => {
                    add(&self.counters.spooled, count);
                    set(&self.counters.spool_bytes, bytes);
                    self.backoff.succeeded();
                    return true;
                }
                Err(e) => e,
            };
            if matches!(e, LedgerError::SpoolFull { .. }) {
                add(&self.counters.spool_full, 1);
            }
            // No events back: the blocking task failed with them.
            if self.on_spool_full == OnSpoolFull::Drop || events.is_empty() {
                add(&self.counters.dropped, count);
                error!(error = %e, events = count, "usage events that met a full ledger queue are lost: the spool refused them");
                return false;
            }
            warn!(error = %e, events = count, "ledger spool refused the overflow; holding it and retrying");
            self.backoff.failed();
            tokio::time::sleep(self.backoff.remaining()).await;
        }
    }
}
