//! The writer task: batches off the queue into the database, or into the spool, and the spool
//! replayed back into the database.
//!
//! The [`batcher`] cuts a batch at `batch_max_events` or `flush_interval_ms` after its first
//! event; the writer commits it (log rows and summary increments in one transaction). A batch the
//! database does not take goes to the spool, synced to disk; while the spool holds anything, new
//! batches are appended behind it, so that events reach the database in the order they were
//! spooled, and the writer replays the spool whenever its back-off allows. A batch refused for
//! its content is written event by event, and the events still refused are set aside in
//! `rejected.jsonl`. [`start`] also starts the [`Overflow`] task beside the writer, and the
//! [`RetentionSweeper`] when the usage log has a retention.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::backoff::{Backoff, FIRST_BACKOFF};
use crate::batcher::{self, Limits};
use crate::billing::PeriodCloser;
use crate::config::{Durability, LedgerConfig, OnSpoolFull};
use crate::db::Db;
use crate::encryption::{LedgerKey, Sealer};
use crate::error::{LedgerError, Result, is_transient};
use crate::event::UsageEvent;
use crate::metrics::{Counters, add, set};
use crate::overflow::Overflow;
use crate::queue::{LedgerHandle, Msg, OVERFLOW_MAX_CAPACITY, Pending};
use crate::retention::RetentionSweeper;
use crate::spool::{self, SharedSpool, Spool};
use crate::store::{BatchOutcome, insert_batch};

/// How long one replay pass may run before the task goes back to the queue.
const REPLAY_BUDGET: Duration = Duration::from_millis(500);
/// Events the database refuses for their content are kept here, one JSON object a line.
pub(crate) const REJECTED_FILE: &str = "rejected.jsonl";

/// Opens the spool in `config.spool_dir`, with the ledger's key: refused if another process
/// holds it or its frames were sealed with another key.
pub(crate) fn open_spool(config: &LedgerConfig) -> Result<Spool> {
    Spool::open_or_wait(
        &config.spool_dir,
        config.spool_max_bytes,
        config.spool_segment_bytes,
        config.spool_takeover,
        config.key.as_ref().map(LedgerKey::spool_sealer),
    )
}

/// Starts the writer over `db` and `spool` and the overflow task beside it; returns the handle
/// that feeds both.
pub(crate) fn start(
    db: Db,
    spool: Spool,
    config: &LedgerConfig,
    migrated: bool,
) -> Result<LedgerHandle> {
    let sealer = spool.sealer();
    let counters = Arc::new(Counters::default());
    set(&counters.spool_bytes, spool.bytes());
    set(&counters.queue_capacity, config.queue_capacity as u64);
    let spool: SharedSpool = Arc::new(tokio::sync::Mutex::new(spool));
    let batch_max = config.batch_max_events.max(1);
    let retry_backoff_max = Duration::from_millis(config.retry_backoff_max_ms);
    // Under `sync` callers wait on the commit: a batch is cut after the short group-commit
    // window, and whatever arrives while it commits makes up the next one.
    let max_wait_ms = match config.durability {
        Durability::Batched => config.flush_interval_ms,
        Durability::Sync => config.group_commit_ms,
    };
    let capacity = config.queue_capacity.max(1);
    let (queue_tx, queue_rx) = mpsc::channel(capacity);
    let (overflow_tx, overflow_rx) = mpsc::channel(capacity.min(OVERFLOW_MAX_CAPACITY));
    let overflow = Overflow {
        rx: overflow_rx,
        spool: Arc::clone(&spool),
        counters: Arc::clone(&counters),
        frame_max_events: batch_max,
        on_spool_full: config.on_spool_full,
        backoff: Backoff::new(retry_backoff_max),
    };
    let writer_db = db.clone();
    let running_beside = Arc::new(AtomicUsize::new(0));
    let writer = Writer {
        db,
        rx: queue_rx,
        overflow: Some(overflow_tx.clone()),
        spool,
        counters: Arc::clone(&counters),
        limits: Limits {
            max_messages: batch_max,
            max_wait: Duration::from_millis(max_wait_ms),
        },
        on_spool_full: config.on_spool_full,
        backoff: Backoff::new(retry_backoff_max),
        replay_cursor: None,
        closer: PeriodCloser::new(config.close_grace_ms),
        migrated,
        rejected_path: config.spool_dir.join(REJECTED_FILE),
        sealer,
        joining: (config.durability == Durability::Sync).then(|| Arc::clone(&running_beside)),
    };
    let mut tasks = vec![tokio::spawn(writer.run()), tokio::spawn(overflow.run())];
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(retain_months) = config.retain_usage_logs_months {
        let sweeper = RetentionSweeper {
            db: writer_db,
            retain_months,
            counters: Arc::clone(&counters),
            stop: stop_rx,
        };
        tasks.push(tokio::spawn(sweeper.run()));
    }
    Ok(LedgerHandle::new(
        queue_tx,
        overflow_tx,
        counters,
        config.on_full,
        tasks,
        stop_tx,
        running_beside,
    ))
}

struct Writer {
    db: Db,
    rx: mpsc::Receiver<Msg>,
    /// To stop the overflow task at shutdown, once the queue is drained.
    overflow: Option<mpsc::Sender<Msg>>,
    spool: SharedSpool,
    counters: Arc<Counters>,
    limits: Limits,
    on_spool_full: OnSpoolFull,
    backoff: Backoff,
    /// The segment being replayed and how many of its frames are already in the database.
    replay_cursor: Option<(u64, usize)>,
    closer: PeriodCloser,
    /// False while migrations could not be applied (database down at start).
    migrated: bool,
    rejected_path: PathBuf,
    /// Opens the spool's sealed frames and seals the events set aside.
    sealer: Option<Sealer>,
    /// Under `sync`: set by the handle as durable events come, how many calls still running
    /// may join a group commit (`batcher`).
    joining: Option<Arc<AtomicUsize>>,
}

impl Writer {
    async fn run(mut self) {
        self.replay().await;
        self.close_periods_if_due().await;
        loop {
            let first = if self.spool_has_data().await {
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
            let batch = batcher::collect(
                &mut self.rx,
                first,
                self.limits,
                Msg::cuts_batch,
                self.joining.as_deref(),
            )
            .await;
            let shutdowns = self.complete(Pending::new(batch)).await;
            if self.spool_has_data().await && self.backoff.ready() {
                self.replay().await;
            }
            if !shutdowns.is_empty() {
                self.stop(shutdowns).await;
                return;
            }
            self.close_periods_if_due().await;
        }
    }

    /// Writes a batch and answers whoever waits on it; returns its shutdown requests.
    async fn complete(&mut self, mut pending: Pending) -> Vec<oneshot::Sender<()>> {
        let durable = self.write(std::mem::take(&mut pending.events)).await;
        pending.answer(durable)
    }

    async fn stop(&mut self, mut shutdowns: Vec<oneshot::Sender<()>>) {
        // Recording now goes to the overflow task until it stops in turn.
        self.rx.close();
        while let Some(first) = self.rx.recv().await {
            let limits = Limits {
                max_wait: Duration::ZERO,
                ..self.limits
            };
            let batch = batcher::collect(&mut self.rx, first, limits, Msg::cuts_batch, None).await;
            shutdowns.extend(self.complete(Pending::new(batch)).await);
        }
        // The overflow's frames are synced before the last replay, which can then take them.
        if let Some(overflow) = self.overflow.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if overflow.send(Msg::Shutdown(done_tx)).await.is_ok() {
                let _ = done_rx.await;
            }
        }
        // One last attempt at the spool; whatever the database does not take stays on disk.
        self.backoff.succeeded();
        while self.spool_has_data().await && self.backoff.ready() {
            self.replay().await;
        }
        let m = self.counters.snapshot(0, 0);
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
        if !self.spool_has_data().await && self.backoff.ready() {
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
            let count = events.len() as u64;
            let (back, appended) = spool::append(&self.spool, events).await;
            events = back;
            let e = match appended {
                Ok(bytes) => {
                    add(&self.counters.spooled, count);
                    set(&self.counters.spool_bytes, bytes);
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
                error!(error = %e, events = count, "ledger batch dropped: database and spool both refused it");
                return false;
            }
            warn!(error = %e, events = count, "ledger spool refused a batch; holding it and retrying");
            tokio::time::sleep(self.backoff.remaining().max(FIRST_BACKOFF)).await;
            self.replay().await;
            if !self.spool_has_data().await && self.insert(&events).await.is_ok() {
                return true;
            }
            if !self.backoff.ready() {
                tokio::time::sleep(self.backoff.remaining()).await;
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
                add(&self.counters.erased, outcome.erased as u64);
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
                    total.erased += outcome.erased;
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
        let line = match rejected_line(self.sealer.as_ref(), event, reason) {
            Ok(line) => line,
            Err(e) => {
                add(&self.counters.dropped, 1);
                error!(event_id = %event.event_id, error = %e, "usage event could not be set aside and is lost");
                return;
            }
        };
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

    async fn spool_has_data(&self) -> bool {
        let mut spool = self.spool.lock().await;
        // After an upgrade, what the replaced process left spooled is replayed from here on.
        spool.take_over_if_free();
        !spool.is_empty()
    }

    /// Replays spooled frames in order until the spool is empty, the database fails, or the
    /// pass has run for [`REPLAY_BUDGET`].
    async fn replay(&mut self) {
        let started = Instant::now();
        loop {
            let next = self.spool.lock().await.oldest_for_replay();
            let Some((seq, path)) = next else {
                set(&self.counters.spool_bytes, self.spool.lock().await.bytes());
                return;
            };
            let sealer = self.sealer.clone();
            let frames = match tokio::task::spawn_blocking(move || {
                spool::read_segment(&path, sealer.as_ref())
            })
            .await
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
                self.spool.lock().await.quarantine(seq)
            } else {
                self.spool.lock().await.remove(seq)
            };
            if let Err(e) = removed {
                error!(error = %e, "removing a replayed ledger spool segment failed");
                self.backoff.failed();
                return;
            }
            self.replay_cursor = None;
            let bytes = self.spool.lock().await.bytes();
            set(&self.counters.spool_bytes, bytes);
            if bytes == 0 {
                info!("ledger spool replayed in full");
            }
        }
    }

    /// Closes ended billing periods when [`PeriodCloser`] says they are due, and only with an
    /// empty spool, so that a period's late events are in before its bill.
    async fn close_periods_if_due(&mut self) {
        if !self.backoff.ready() || !self.migrated || self.spool_has_data().await {
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

/// What is appended to `rejected.jsonl` for an event the database refused: `{"error", "event"}`,
/// or with the ledger's key `{"sealed": hex}` of that object, sealed like a spool frame.
pub(crate) fn rejected_line(
    sealer: Option<&Sealer>,
    event: &UsageEvent,
    reason: &LedgerError,
) -> Result<serde_json::Value> {
    let line = serde_json::json!({ "error": reason.to_string(), "event": event });
    let Some(sealer) = sealer else {
        return Ok(line);
    };
    let sealed = sealer.seal(&serde_json::to_vec(&line)?, REJECTED_CONTEXT)?;
    Ok(serde_json::json!({ "sealed": hex::encode(sealed) }))
}

/// Authenticated with every sealed line of `rejected.jsonl`.
pub(crate) const REJECTED_CONTEXT: &[u8] = b"tollgate rejected event";
