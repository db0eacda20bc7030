//! The batcher: what arrives on a channel, collected into batches of at most N messages, each
//! cut at most T after its first message, or at once by a message that asks for it (a flush).
//!
//! It takes what is queued, then sleeps a short tick, instead of waiting on the channel. Waiting
//! would wake its thread once per message, a context switch per call at thousands of calls a
//! second; the tick wakes it at most once per [`TICK`] whatever the load.
//!
//! A group commit (`durability = "sync"`) is told how many calls are still `joining`: besides
//! what was queued when it began, it waits for one message from each of them, watching the
//! channel message by message (a wake-up each), and is cut as soon as all have come or at the
//! end of its window. A lone caller's event is so committed at once instead of waiting out a
//! window nobody will join. With more than [`FEW_CALLERS`] joining, the window is waited out by
//! the tick as usual: a commit shared that widely costs less than a wake-up per message.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often a batch being filled looks at the channel again.
const TICK: Duration = Duration::from_millis(5);
/// The largest group commit that is cut as soon as every call joining it has come.
const FEW_CALLERS: usize = 16;

/// When a batch is cut.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_messages: usize,
    /// Counted from the batch's first message; zero takes only what is already queued.
    pub max_wait: Duration,
}

/// A batch beginning with `first`: it ends once it holds `limits.max_messages`, a message for
/// which `cuts` holds has been added, `limits.max_wait` has passed, the channel is closed and
/// empty, or (a group commit) every call `joining` has added its message. What is left stays
/// queued for the next batch.
pub(crate) async fn collect<T>(
    rx: &mut mpsc::Receiver<T>,
    first: T,
    limits: Limits,
    cuts: impl Fn(&T) -> bool,
    joining: Option<&AtomicUsize>,
) -> Vec<T> {
    let deadline = Instant::now() + limits.max_wait;
    let max = limits.max_messages.max(1);
    let mut cut = cuts(&first);
    let mut batch = vec![first];
    // Read once what was queued is in: the calls it came from are no longer running.
    let mut enough: Option<Option<usize>> = None;
    while !cut && batch.len() < max {
        while let Ok(message) = rx.try_recv() {
            cut = cuts(&message);
            batch.push(message);
            if cut || batch.len() >= max {
                return batch;
            }
        }
        let enough = *enough.get_or_insert_with(|| {
            let joining = joining?.load(Relaxed);
            Some(batch.len().saturating_add(joining)).filter(|_| joining < FEW_CALLERS)
        });
        let now = Instant::now();
        if now >= deadline || rx.is_closed() && rx.is_empty() {
            break;
        }
        let Some(enough) = enough else {
            tokio::time::sleep_until((now + TICK).min(deadline)).await;
            continue;
        };
        if batch.len() >= enough {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(message)) => {
                cut = cuts(&message);
                batch.push(message);
            }
            Ok(None) | Err(_) => break,
        }
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
    async fn a_group_commit_is_cut_once_every_call_joining_it_has_come() {
        let (tx, mut rx) = mpsc::channel(100);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        let first = rx.recv().await.unwrap();
        // Two more calls are running beside the two queued.
        let joining = AtomicUsize::new(2);
        let sender = tokio::spawn(async move {
            for n in 3..=6 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send(n).await.unwrap();
            }
        });
        let started = Instant::now();
        let batch = collect(
            &mut rx,
            first,
            limits(100, 60_000),
            |_| false,
            Some(&joining),
        )
        .await;
        assert_eq!(batch, [1, 2, 3, 4]);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cut when every call had joined, not at the end of its window"
        );
        let alone = AtomicUsize::new(0);
        let first = rx.recv().await.unwrap();
        let batch = collect(&mut rx, first, limits(100, 60_000), |_| false, Some(&alone)).await;
        assert_eq!(batch, [5], "a lone caller waits for nobody");
        let many = AtomicUsize::new(FEW_CALLERS);
        let first = rx.recv().await.unwrap();
        let batch = collect(&mut rx, first, limits(100, 50), |_| false, Some(&many)).await;
        assert_eq!(batch, [6], "with many joining, the window is waited out");
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_is_cut_at_n_and_the_rest_waits_for_the_next() {
        let (tx, mut rx) = mpsc::channel(100);
        for n in 1..=10 {
            tx.try_send(n).unwrap();
        }
        let first = rx.recv().await.unwrap();
        let batch = collect(&mut rx, first, limits(4, 10_000), |_| false, None).await;
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
        let batch = collect(&mut rx, first, limits(100, 10_000), |n| *n == 0, None).await;
        assert_eq!(batch, [1, 2, 0]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_lone_message_is_cut_after_t() {
        let (tx, mut rx) = mpsc::channel(100);
        tx.try_send(1).unwrap();
        let first = rx.recv().await.unwrap();
        let started = Instant::now();
        let batch = collect(&mut rx, first, limits(100, 30), |_| false, None).await;
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
        let batch = collect(&mut rx, first, limits(100, 2_000), |_| false, None).await;
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
        let batch = collect(&mut rx, first, limits(100, 0), |_| false, None).await;
        assert_eq!(batch, [1, 2, 3]);
    }
}
