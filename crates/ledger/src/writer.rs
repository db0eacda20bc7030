//! The writer task: batches off the queue into the database, or into the spool, and the spool
//! replayed back into the database.
//!
//! The [`batcher`] cuts a batch at `batch_max_events` or `flush_interval_ms` after its first
//! event; the writer commits it (log rows and summary increments in one transaction). A batch the
//! database does not take goes to the spool, synced to disk; while the spool holds anything, new
//! batches are appended behind it, so that events reach the database in the order they were
//! spooled, and the writer replays the spool whenever its back-off allows. A batch refused for
//! its content is written event by event, and the events still refused are set aside in
//! `rejected.jsonl`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::backoff::{Backoff, FIRST_BACKOFF};
use crate::batcher::{self, Limits};
use crate::billing::PeriodCloser;
use crate::config::{LedgerConfig, OnSpoolFull};
use crate::db::Db;
use crate::error::{LedgerError, Result, is_transient};
use crate::event::UsageEvent;
use crate::handle::{LedgerHandle, lock};
use crate::metrics::{Counters, add, set};
use crate::spool::{self, Spool};
use crate::store::{BatchOutcome, insert_batch};

/// How long one replay pass may run before the task goes back to the queue.
const REPLAY_BUDGET: Duration = Duration::from_millis(500);
/// Events the database refuses for their content are kept here, one JSON object a line.
const REJECTED_FILE: &str = "rejected.jsonl";

#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is an event; boxing it would cost an allocation per call"
)]
pub(crate) enum Msg {
    Event {
        event: UsageEvent,
        /// Told `true` once the event is committed or synced to the spool, `false` if dropped.
        durable: Option<oneshot::Sender<bool>>,
    },
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

impl Msg {
    /// Whether the batch holding this message must be written now instead of filling up.
    pub(crate) fn cuts_batch(&self) -> bool {
        !matches!(self, Msg::Event { .. })
    }
}

/// The write side of the ledger. Cheap to clone; every clone feeds the same writer task.
/// Starts the writer task over `db` and the spool in `config.spool_dir`.
pub(crate) fn start(db: Db, config: &LedgerConfig, migrated: bool) -> Result<LedgerHandle> {
    let spool = Spool::open(
        &config.spool_dir,
        config.spool_max_bytes,
        config.spool_segment_bytes,
    )?;
    let counters = Arc::new(Counters::default());
    set(&counters.spool_bytes, spool.bytes());
    set(&counters.queue_capacity, config.queue_capacity as u64);
    let spool = Arc::new(Mutex::new(spool));
    let capacity = config.queue_capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let writer = Writer {
        db,
        rx,
        spool: Arc::clone(&spool),
        counters: Arc::clone(&counters),
        limits: Limits {
            max_messages: config.batch_max_events.max(1),
            max_wait: Duration::from_millis(config.flush_interval_ms),
        },
        on_spool_full: config.on_spool_full,
        backoff: Backoff::new(Duration::from_millis(config.retry_backoff_max_ms)),
        replay_cursor: None,
        closer: PeriodCloser::new(config.close_grace_ms),
        migrated,
        rejected_path: config.spool_dir.join(REJECTED_FILE),
    };
    let task = tokio::spawn(writer.run());
    Ok(LedgerHandle::new(
        tx,
        spool,
        counters,
        config.on_full,
        capacity,
        task,
    ))
}

#[derive(Default)]
struct Pending {
    events: Vec<UsageEvent>,
    durable: Vec<oneshot::Sender<bool>>,
    flushes: Vec<oneshot::Sender<()>>,
    shutdowns: Vec<oneshot::Sender<()>>,
}

impl Pending {
    fn new(messages: Vec<Msg>) -> Pending {
        let mut pending = Pending::default();
        for message in messages {
            match message {
                Msg::Event { event, durable } => {
                    pending.events.push(event);
                    pending.durable.extend(durable);
                }
                Msg::Flush(done) => pending.flushes.push(done),
                Msg::Shutdown(done) => pending.shutdowns.push(done),
            }
        }
        pending
    }
}

struct Writer {
    db: Db,
    rx: mpsc::Receiver<Msg>,
    spool: Arc<Mutex<Spool>>,
    counters: Arc<Counters>,
    limits: Limits,
    on_spool_full: OnSpoolFull,
    backoff: Backoff,
    /// The segment being replayed and how many of its frames are already in the database.
    replay_cursor: Option<(u64, usize)>,
    closer: PeriodCloser,
    /// False while migrations could not be applied (database down at start).
    migrated: bool,
    rejected_path: std::path::PathBuf,
}

impl Writer {
    async fn run(mut self) {
        self.replay().await;
        self.close_periods_if_due().await;
        loop {
            let first = if self.spool_has_data() {
                match tokio::time::timeout(self.backoff.remaining(), self.rx.recv()).await {
                    Ok(msg) => msg,
                    Err(_) => {
                        self.replay().await;
                        self.close_periods_if_due().await;
                        continue;
                    }
                }
            } else {
                self.rx.recv().await
            };
            let Some(first) = first else {
                // Every handle is gone: nothing more can arrive.
                self.replay().await;
                return;
            };
            let batch = batcher::collect(&mut self.rx, first, self.limits, Msg::cuts_batch).await;
            let mut pending = Pending::new(batch);
            let shutdowns = std::mem::take(&mut pending.shutdowns);
            self.complete(pending).await;
            if self.spool_has_data() && self.backoff.ready() {
                self.replay().await;
            }
            if !shutdowns.is_empty() {
                self.stop(shutdowns).await;
                return;
            }
            self.close_periods_if_due().await;
        }
    }

    /// Writes a batch and answers whoever waits on it.
    async fn complete(&mut self, pending: Pending) {
        let durable = self.write(pending.events).await;
        for tx in pending.durable {
            let _ = tx.send(durable);
        }
        for tx in pending.flushes {
            let _ = tx.send(());
        }
        for tx in pending.shutdowns {
            let _ = tx.send(());
        }
    }

    async fn stop(&mut self, mut shutdowns: Vec<oneshot::Sender<()>>) {
        self.rx.close();
        while let Some(first) = self.rx.recv().await {
            let limits = Limits {
                max_wait: Duration::ZERO,
                ..self.limits
            };
            let batch = batcher::collect(&mut self.rx, first, limits, Msg::cuts_batch).await;
            let mut pending = Pending::new(batch);
            shutdowns.append(&mut pending.shutdowns);
            self.complete(pending).await;
        }
        // One last attempt at the spool; whatever the database does not take stays on disk.
        self.backoff.succeeded();
        while self.spool_has_data() && self.backoff.ready() {
            self.replay().await;
        }
        let m = self.counters.snapshot(0);
        info!(
            written = m.written,
            spool_bytes = m.spool_bytes,
            dropped = m.dropped,
            "ledger writer stopped"
        );
        for tx in shutdowns {
            let _ = tx.send(());
        }
    }

    /// Makes `events` durable: into the database, or behind the spool. False only when the
    /// events were dropped by the `on_spool_full = drop` policy.
    async fn write(&mut self, events: Vec<UsageEvent>) -> bool {
        if events.is_empty() {
            return true;
        }
        if !self.spool_has_data() && self.backoff.ready() {
            match self.insert(&events).await {
                Ok(_) => return true,
                Err(e) => warn!(
                    error = %e,
                    events = events.len(),
                    "ledger database write failed; spooling the batch"
                ),
            }
        }
        self.spool_batch(events).await
    }

    async fn spool_batch(&mut self, mut events: Vec<UsageEvent>) -> bool {
        loop {
            let spool = Arc::clone(&self.spool);
            let count = events.len() as u64;
            let (back, result) = match tokio::task::spawn_blocking(move || {
                let mut spool = lock(&spool);
                let result = spool.append(&events).map(|_| spool.bytes());
                (events, result)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    // The closure does not panic; a join error means the runtime is going away.
                    add(&self.counters.dropped, count);
                    error!(error = %e, events = count, "ledger spool task failed; batch lost");
                    return false;
                }
            };
            events = back;
            match result {
                Ok(bytes) => {
                    add(&self.counters.spooled, events.len() as u64);
                    set(&self.counters.spool_bytes, bytes);
                    return true;
                }
                Err(e) => {
                    if matches!(e, LedgerError::SpoolFull { .. }) {
                        add(&self.counters.spool_full, 1);
                    }
                    if self.on_spool_full == OnSpoolFull::Drop {
                        add(&self.counters.dropped, events.len() as u64);
                        error!(error = %e, events = events.len(), "ledger batch dropped: database and spool both refused it");
                        return false;
                    }
                    warn!(error = %e, events = events.len(), "ledger spool refused a batch; holding it and retrying");
                    tokio::time::sleep(self.backoff.remaining().max(FIRST_BACKOFF)).await;
                    self.replay().await;
                    if !self.spool_has_data() && self.insert(&events).await.is_ok() {
                        return true;
                    }
                    if !self.backoff.ready() {
                        tokio::time::sleep(self.backoff.remaining()).await;
                    }
                }
            }
        }
    }

    /// Inserts a batch; a batch the database refuses for its content is retried event by event
    /// and the refused events are set aside in `rejected.jsonl`, so that one bad event cannot
    /// hold up the ledger.
    async fn insert(&mut self, events: &[UsageEvent]) -> Result<BatchOutcome> {
        if !self.migrated {
            self.db.migrate().await.inspect_err(|_| {
                add(&self.counters.db_errors, 1);
                self.backoff.failed();
            })?;
            self.migrated = true;
        }
        let started = Instant::now();
        let result = match insert_batch(&self.db, events).await {
            Err(e) if !is_transient(&e) => self.insert_one_by_one(events, e).await,
            other => other,
        };
        match &result {
            Ok(outcome) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.counters.batch_committed(events.len() as u64, micros);
                add(&self.counters.written, outcome.inserted as u64);
                add(&self.counters.duplicates, outcome.duplicates as u64);
                self.backoff.succeeded();
            }
            Err(_) => {
                add(&self.counters.db_errors, 1);
                self.backoff.failed();
            }
        }
        result
    }

    async fn insert_one_by_one(
        &mut self,
        events: &[UsageEvent],
        batch_error: LedgerError,
    ) -> Result<BatchOutcome> {
        warn!(error = %batch_error, "ledger batch refused for its content; writing its events one by one");
        let mut total = BatchOutcome::default();
        for event in events {
            match insert_batch(&self.db, std::slice::from_ref(event)).await {
                Ok(outcome) => {
                    total.inserted += outcome.inserted;
                    total.duplicates += outcome.duplicates;
                }
                Err(e) if !is_transient(&e) => self.reject(event, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn reject(&self, event: &UsageEvent, reason: &LedgerError) {
        error!(event_id = %event.event_id, user = %event.user_id, error = %reason,
            path = %self.rejected_path.display(), "usage event refused by the database; set aside");
        add(&self.counters.rejected, 1);
        let line = serde_json::json!({ "error": reason.to_string(), "event": event });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.rejected_path)
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(f, "{line}")?;
                f.sync_data()
            });
        if let Err(e) = written {
            add(&self.counters.dropped, 1);
            error!(event_id = %event.event_id, error = %e, "usage event could not be set aside and is lost");
        }
    }

    fn spool_has_data(&self) -> bool {
        !lock(&self.spool).is_empty()
    }

    /// Replays spooled frames in order until the spool is empty, the database fails, or the
    /// pass has run for [`REPLAY_BUDGET`].
    async fn replay(&mut self) {
        let started = Instant::now();
        loop {
            let next = lock(&self.spool).oldest_for_replay();
            let Some((seq, path)) = next else {
                set(&self.counters.spool_bytes, lock(&self.spool).bytes());
                return;
            };
            let frames = match tokio::task::spawn_blocking(move || spool::read_segment(&path)).await
            {
                Ok(Ok(frames)) => frames,
                Ok(Err(e)) => {
                    error!(error = %e, "reading a ledger spool segment failed");
                    self.backoff.failed();
                    return;
                }
                Err(e) => {
                    error!(error = %e, "ledger spool task failed");
                    self.backoff.failed();
                    return;
                }
            };
            let done = match self.replay_cursor {
                Some((cursor_seq, done)) if cursor_seq == seq => done,
                _ => {
                    if frames.ignored_bytes > 0 {
                        add(&self.counters.spool_frames_skipped, 1);
                        warn!(
                            segment = seq,
                            ignored_bytes = frames.ignored_bytes,
                            "ledger spool segment ends in a torn or corrupt frame; ignoring it"
                        );
                    }
                    0
                }
            };
            for (index, frame) in frames.frames.iter().enumerate().skip(done) {
                if let Err(e) = self.insert(frame).await {
                    debug!(error = %e, "ledger spool replay paused: database unavailable");
                    return;
                }
                add(&self.counters.replayed, frame.len() as u64);
                self.replay_cursor = Some((seq, index + 1));
                if started.elapsed() > REPLAY_BUDGET {
                    return;
                }
            }
            let removed = if frames.undecodable > 0 {
                add(
                    &self.counters.spool_frames_skipped,
                    frames.undecodable as u64,
                );
                error!(
                    segment = seq,
                    frames = frames.undecodable,
                    "ledger spool frames could not be decoded; segment kept as .corrupt"
                );
                lock(&self.spool).quarantine(seq)
            } else {
                lock(&self.spool).remove(seq)
            };
            if let Err(e) = removed {
                error!(error = %e, "removing a replayed ledger spool segment failed");
                self.backoff.failed();
                return;
            }
            self.replay_cursor = None;
            let bytes = lock(&self.spool).bytes();
            set(&self.counters.spool_bytes, bytes);
            if bytes == 0 {
                info!("ledger spool replayed in full");
            }
        }
    }

    /// Closes ended billing periods when [`PeriodCloser`] says they are due, and only with an
    /// empty spool, so that a period's late events are in before its bill.
    async fn close_periods_if_due(&mut self) {
        if !self.backoff.ready() || !self.migrated || self.spool_has_data() {
            return;
        }
        match self.closer.close_if_due(&self.db, Utc::now()).await {
            Ok(0) => {}
            Ok(closed) => info!(closed, "billing periods closed into billing_history"),
            Err(e) => {
                warn!(error = %e, "closing billing periods failed; will retry");
                self.backoff.failed();
            }
        }
    }
}
