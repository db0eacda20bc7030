//! The queue between the gateway and the ledger's tasks: the messages, and the handle that
//! sends them.
//!
//! A [`LedgerHandle`] feeds two bounded channels: the queue, which the writer batches into the
//! database, and the overflow, which a task of the ledger's own appends to the spool. Recording
//! an event only ever puts a message on one of them. The caller's thread — a proxy thread — does
//! no file I/O and takes no lock that a ledger task holds; whatever is slow (the database, the
//! disk) happens on the ledger's tasks. On a full queue `on_full` decides: `spool` hands the
//! event to the overflow, `block` waits for room in the queue, `drop` counts and drops it.
//!
//! The overflow holds as many events as the queue, at most [`OVERFLOW_MAX_CAPACITY`]: each frame
//! the overflow task syncs takes everything waiting, so the channel only has to absorb what
//! arrives during one `fsync`, a few milliseconds. Should it be full all the same (a disk slower
//! than the traffic), `record` waits for the next frame to be synced — for the disk, never for
//! the database — rather than lose the event: under `spool` an event is lost only by
//! `on_spool_full = "drop"`.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::OnFull;
use crate::error::{LedgerError, Result};
use crate::event::UsageEvent;
use crate::metrics::{Counters, LedgerMetrics, add};

/// The most events the overflow holds on their way to the spool (see the module's
/// documentation); a smaller queue makes the overflow as small, for a deployment that keeps
/// memory tight.
pub(crate) const OVERFLOW_MAX_CAPACITY: usize = 4_096;

#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is an event; boxing it would cost an allocation per call"
)]
#[derive(Debug)]
pub(crate) enum Msg {
    Event {
        event: UsageEvent,
        /// Told `true` once the event is committed or synced to the spool, `false` if dropped.
        durable: Option<oneshot::Sender<bool>>,
    },
    /// Answered once every message before it has been made durable.
    Flush(oneshot::Sender<()>),
    /// Closes the channel; answered once everything in it has been made durable.
    Shutdown(oneshot::Sender<()>),
}

impl Msg {
    /// Whether the batch holding this message must be written now instead of filling up.
    pub(crate) fn cuts_batch(&self) -> bool {
        !matches!(self, Msg::Event { .. })
    }
}

/// A batch of messages taken apart: the events to write, and who waits on them.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub events: Vec<UsageEvent>,
    durable: Vec<oneshot::Sender<bool>>,
    flushes: Vec<oneshot::Sender<()>>,
    shutdowns: Vec<oneshot::Sender<()>>,
}

impl Pending {
    pub fn new(messages: Vec<Msg>) -> Pending {
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

    /// Tells the callers waiting on the batch's events whether they were made `durable`, and
    /// its flushes that they are done. Shutdowns are answered by whoever stops the task.
    pub fn answer(self, durable: bool) -> Vec<oneshot::Sender<()>> {
        for tx in self.durable {
            let _ = tx.send(durable);
        }
        for tx in self.flushes {
            let _ = tx.send(());
        }
        self.shutdowns
    }
}

/// The write side of the ledger. Cheap to clone; every clone feeds the same tasks.
#[derive(Clone, Debug)]
pub struct LedgerHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: mpsc::Sender<Msg>,
    overflow: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
    on_full: OnFull,
    /// The writer, the overflow task and the retention sweeper, awaited by `shutdown` (never
    /// by `record`).
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set at shutdown: the retention sweeper stops (the others stop on their queue's message).
    stop: watch::Sender<bool>,
    /// How many calls were running beside the last one to hand over a durable event: the
    /// writer's guess at how many events will join its next group commit.
    running_beside: Arc<AtomicUsize>,
}

impl LedgerHandle {
    pub(crate) fn new(
        queue: mpsc::Sender<Msg>,
        overflow: mpsc::Sender<Msg>,
        counters: Arc<Counters>,
        on_full: OnFull,
        tasks: Vec<JoinHandle<()>>,
        stop: watch::Sender<bool>,
        running_beside: Arc<AtomicUsize>,
    ) -> LedgerHandle {
        LedgerHandle {
            shared: Arc::new(Shared {
                queue,
                overflow,
                counters,
                on_full,
                tasks: Mutex::new(tasks),
                stop,
                running_beside,
            }),
        }
    }

    /// Hands `event` to the ledger. With room in the queue it completes at once, without
    /// waiting on anything. On a full queue `on_full` decides: `spool` hands the event to the
    /// overflow task (at once, unless even the overflow is full: then it waits for the disk);
    /// `block` waits for room in the queue; `drop` counts the event in `dropped` and returns
    /// [`LedgerError::Dropped`]. Once the ledger has shut down it returns
    /// [`LedgerError::Closed`], also counted in `dropped`.
    pub async fn record(&self, event: UsageEvent) -> Result<()> {
        let waiting = match self.try_send(Msg::Event {
            event,
            durable: None,
        }) {
            Attempt::Done(done) => return done,
            // Boxed: waiting is the rare case, and the future of every call stays small (it is
            // inlined into the gateway's logging hook, which is allocated per request).
            must_wait => Box::pin(self.send_waiting(must_wait)),
        };
        waiting.await
    }

    /// Records `event` and returns once it is durable: committed to the database or synced to
    /// the spool. A caller that must not lose an event even to a SIGKILL waits on this.
    pub async fn record_durable(&self, event: UsageEvent) -> Result<()> {
        // Who else may join its group commit is not known: the window is waited out.
        self.hand_over_durable(event, usize::MAX).await
    }

    /// [`record_durable`](Self::record_durable) for a caller that cannot wait where it is:
    /// `event` is handed over before this returns, and the future only waits for it to be
    /// durable, so dropping the future unpolled loses nothing. On a full queue that must be
    /// waited for (`block`, or an overflow full too), a task of its own waits for room.
    /// `running_beside` is how many other calls are still running, whose events may join the
    /// same group commit: with none, the event is committed without waiting for company.
    pub fn hand_over_durable(
        &self,
        event: UsageEvent,
        running_beside: usize,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.shared.running_beside.store(running_beside, Relaxed);
        let (durable_tx, durable_rx) = oneshot::channel();
        let msg = Msg::Event {
            event,
            durable: Some(durable_tx),
        };
        let handed = match self.try_send(msg) {
            Attempt::Done(done) => done,
            must_wait => {
                let ledger = self.clone();
                // Refused after waiting, the event's sender is dropped with it: the receiver
                // below answers `Closed`, counted as dropped by `send_waiting`.
                tokio::spawn(async move { ledger.send_waiting(must_wait).await });
                Ok(())
            }
        };
        async move {
            handed?;
            match durable_rx.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(LedgerError::Dropped),
                Err(_) => Err(LedgerError::Closed),
            }
        }
    }

    /// Returns once every event recorded before the call is durable (committed or spooled).
    pub async fn flush(&self) -> Result<()> {
        let s = &self.shared;
        let (queue_done, queue_rx) = oneshot::channel();
        let (overflow_done, overflow_rx) = oneshot::channel();
        let (queued, overflowed) = tokio::join!(
            s.queue.send(Msg::Flush(queue_done)),
            s.overflow.send(Msg::Flush(overflow_done))
        );
        queued.map_err(|_| LedgerError::Closed)?;
        overflowed.map_err(|_| LedgerError::Closed)?;
        let (queue_flushed, overflow_flushed) = tokio::join!(queue_rx, overflow_rx);
        queue_flushed.map_err(|_| LedgerError::Closed)?;
        overflow_flushed.map_err(|_| LedgerError::Closed)
    }

    /// Drains the queue to the database (or to the spool while the database is down), has the
    /// overflow task sync what it holds, replays what the spool holds if the database takes it,
    /// and stops both tasks. Events recorded afterwards are refused ([`LedgerError::Closed`]).
    pub async fn shutdown(&self) -> Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        if self.shared.queue.send(Msg::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        self.shared.stop.send_replace(true);
        let tasks = std::mem::take(
            &mut *self
                .shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    }

    pub fn metrics(&self) -> LedgerMetrics {
        let s = &self.shared;
        let depth = |tx: &mpsc::Sender<Msg>| tx.max_capacity().saturating_sub(tx.capacity());
        s.counters
            .snapshot(depth(&s.queue) as u64, depth(&s.overflow) as u64)
    }

    /// Puts `msg` on the queue or the overflow if there is room, as `on_full` says; or hands it
    /// back with the channel it has to wait for.
    fn try_send(&self, msg: Msg) -> Attempt {
        let s = &self.shared;
        let msg = match s.queue.try_send(msg) {
            Ok(()) => {
                add(&s.counters.accepted, 1);
                return Attempt::Done(Ok(()));
            }
            Err(TrySendError::Full(msg)) => {
                add(&s.counters.queue_full, 1);
                match s.on_full {
                    OnFull::Spool => msg,
                    OnFull::Block => return Attempt::WaitForQueue(msg),
                    OnFull::Drop => {
                        add(&s.counters.dropped, 1);
                        return Attempt::Done(Err(LedgerError::Dropped));
                    }
                }
            }
            // The writer is shutting down: until the overflow task stops too, it takes the
            // event to the spool, which the next start replays.
            Err(TrySendError::Closed(msg)) => msg,
        };
        match s.overflow.try_send(msg) {
            Ok(()) => {
                add(&s.counters.accepted, 1);
                Attempt::Done(Ok(()))
            }
            Err(TrySendError::Full(msg)) => Attempt::WaitForOverflow(msg),
            Err(TrySendError::Closed(_)) => Attempt::Done(Err(self.closed())),
        }
    }

    /// Finishes what [`LedgerHandle::try_send`] began: waits for room where it found none.
    async fn send_waiting(&self, attempt: Attempt) -> Result<()> {
        let s = &self.shared;
        let msg = match attempt {
            Attempt::Done(done) => return done,
            Attempt::WaitForQueue(msg) => match s.queue.send(msg).await {
                Ok(()) => {
                    add(&s.counters.accepted, 1);
                    return Ok(());
                }
                // Shut down while waiting: the overflow task may still take it.
                Err(SendError(msg)) => msg,
            },
            Attempt::WaitForOverflow(msg) => msg,
        };
        match s.overflow.send(msg).await {
            Ok(()) => {
                add(&s.counters.accepted, 1);
                Ok(())
            }
            Err(_) => Err(self.closed()),
        }
    }

    /// An event refused because both tasks have stopped: lost, so counted.
    fn closed(&self) -> LedgerError {
        add(&self.shared.counters.dropped, 1);
        LedgerError::Closed
    }
}

/// What trying to queue a message without waiting came to.
enum Attempt {
    Done(Result<()>),
    /// The queue is full and `on_full` is `block`.
    WaitForQueue(Msg),
    /// The overflow is full too.
    WaitForOverflow(Msg),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;

    /// `record`'s future is inlined into the gateway's logging hook, allocated per request:
    /// it holds the event and little more, the rare wait being boxed.
    #[tokio::test]
    async fn the_future_of_record_is_about_the_size_of_the_event() {
        let (queue, _queue_rx) = mpsc::channel(1);
        let (overflow, _overflow_rx) = mpsc::channel(1);
        let (stop, _) = watch::channel(false);
        let handle = LedgerHandle::new(
            queue,
            overflow,
            Arc::default(),
            OnFull::Block,
            Vec::new(),
            stop,
            Arc::default(),
        );
        let recording = handle.record(event("a", "u1"));
        let size = std::mem::size_of_val(&recording);
        assert!(
            size <= std::mem::size_of::<UsageEvent>() + 64,
            "record's future takes {size} bytes"
        );
        recording.await.unwrap();
    }
}
