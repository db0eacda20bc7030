//! The batcher: what arrives on a channel, collected into batches of at most N messages, each
//! cut at most T after its first message, or at once by a message that asks for it (a flush).
//!
//! It takes what is queued, then sleeps a short tick, instead of waiting on the channel. Waiting
//! would wake its thread once per message, a context switch per call at thousands of calls a
//! second; the tick wakes it at most once per [`TICK`] whatever the load.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often a batch being filled looks at the channel again.
const TICK: Duration = Duration::from_millis(5);

/// When a batch is cut.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_messages: usize,
    /// Counted from the batch's first message; zero takes only what is already queued.
    pub max_wait: Duration,
}

/// A batch beginning with `first`: it ends once it holds `limits.max_messages`, a message for
/// which `cuts` holds has been added, `limits.max_wait` has passed, or the channel is closed
/// and empty. What is left stays queued for the next batch.
pub(crate) async fn collect<T>(
    rx: &mut mpsc::Receiver<T>,
    first: T,
    limits: Limits,
    cuts: impl Fn(&T) -> bool,
) -> Vec<T> {
    let deadline = Instant::now() + limits.max_wait;
    let max = limits.max_messages.max(1);
    let mut cut = cuts(&first);
    let mut batch = vec![first];
    while !cut && batch.len() < max {
        while let Ok(message) = rx.try_recv() {
            cut = cuts(&message);
            batch.push(message);
            if cut || batch.len() >= max {
                return batch;
            }
        }
        let now = Instant::now();
        if now >= deadline || rx.is_closed() && rx.is_empty() {
            break;
        }
        tokio::time::sleep_until((now + TICK).min(deadline)).await;
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_messages: usize, max_wait_ms: u64) -> Limits {
        Limits {
            max_messages,
            max_wait: Duration::from_millis(max_wait_ms),
        }
    }

    #[tokio::test]
    async fn a_batch_is_cut_at_n_and_the_rest_waits_for_the_next() {
        let (tx, mut rx) = mpsc::channel(100);
        for n in 1..=10 {
            tx.try_send(n).unwrap();
        }
        let first = rx.recv().await.unwrap();
        let batch = collect(&mut rx, first, limits(4, 10_000), |_| false).await;
        assert_eq!(batch, [1, 2, 3, 4]);
        let first = rx.recv().await.unwrap();
        assert_eq!(first, 5);
    }

    #[tokio::test]
    async fn a_cutting_message_ends_its_batch_at_once() {
        let (tx, mut rx) = mpsc::channel(100);
        for n in [1, 2, 0, 3] {
            tx.try_send(n).unwrap();
        }
        let first = rx.recv().await.unwrap();
        let started = Instant::now();
        let batch = collect(&mut rx, first, limits(100, 10_000), |n| *n == 0).await;
        assert_eq!(batch, [1, 2, 0]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_lone_message_is_cut_after_t() {
        let (tx, mut rx) = mpsc::channel(100);
        tx.try_send(1).unwrap();
        let first = rx.recv().await.unwrap();
        let started = Instant::now();
        let batch = collect(&mut rx, first, limits(100, 30), |_| false).await;
        assert_eq!(batch, [1]);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn messages_arriving_within_t_join_the_batch() {
        let (tx, mut rx) = mpsc::channel(100);
        tx.try_send(1).unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(2).await.unwrap();
        });
        let first = rx.recv().await.unwrap();
        let batch = collect(&mut rx, first, limits(100, 2_000), |_| false).await;
        late.await.unwrap();
        // The sender is gone and the channel empty: the batch ends without waiting out T.
        assert_eq!(batch, [1, 2]);
    }

    #[tokio::test]
    async fn zero_wait_takes_only_what_is_queued() {
        let (tx, mut rx) = mpsc::channel(100);
        for n in 1..=3 {
            tx.try_send(n).unwrap();
        }
        let first = rx.recv().await.unwrap();
        let batch = collect(&mut rx, first, limits(100, 0), |_| false).await;
        assert_eq!(batch, [1, 2, 3]);
    }
}
