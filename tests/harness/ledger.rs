//! The ledger read back through `tollgate_ledger`, as the admin API reads it: a user's usage
//! events (admitted calls' and refused calls' apart) and alerts, and a wait for the batched
//! writer to have written them.

use std::time::{Duration, Instant};

pub use tollgate_ledger::UsageLog;

/// Runs `read` against the ledger at `url`, on a runtime of its own, and closes the ledger.
fn with_ledger<T, F>(url: &str, read: impl FnOnce(tollgate_ledger::Ledger) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ledger = tollgate_ledger::Ledger::connect(url, tollgate_ledger::DbOptions::default())
            .await
            .unwrap();
        let out = read(ledger.clone()).await;
        ledger.close().await;
        out
    })
}

/// The usage events of the calls the gateway admitted for `user` in the ledger at `url`, newest
/// first (refused calls' rows: [`refused_rows`]).
pub fn ledger_rows(url: &str, user: &str) -> Vec<UsageLog> {
    log_rows(url, user, Some(false))
}

/// The rows of the calls the gateway refused `user` after it knew them, newest first.
pub fn refused_rows(url: &str, user: &str) -> Vec<UsageLog> {
    log_rows(url, user, Some(true))
}

/// Every row of `user`, admitted calls and refused ones, newest first.
pub fn all_rows(url: &str, user: &str) -> Vec<UsageLog> {
    log_rows(url, user, None)
}

fn log_rows(url: &str, user: &str, refused: Option<bool>) -> Vec<UsageLog> {
    with_ledger(url, |ledger| async move {
        let filter = tollgate_ledger::LogFilter {
            user_id: Some(user.into()),
            refused,
            ..Default::default()
        };
        let mut rows = Vec::new();
        loop {
            let page = ledger
                .usage_logs(&filter, 1000, rows.len() as u64)
                .await
                .unwrap();
            let done = page.rows.len() < 1000;
            rows.extend(page.rows);
            if done {
                return rows;
            }
        }
    })
}

/// Starts the ledger at `url` with its spool in `spool_dir` and stops it, as the next start of
/// a gateway would: whatever the spool held is replayed into the database.
pub fn reopen_ledger(url: &str, spool_dir: &std::path::Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = tollgate_ledger::LedgerConfig::new(url, spool_dir);
        let (ledger, handle) = tollgate_ledger::Ledger::open(config).await.unwrap();
        handle.shutdown().await.unwrap();
        ledger.close().await;
    });
}

/// Every usage alert of `user` in the ledger at `url`, newest first.
pub fn ledger_alerts(url: &str, user: &str) -> Vec<tollgate_ledger::Alert> {
    with_ledger(url, |ledger| async move {
        ledger.alerts(user, false, 1000).await.unwrap()
    })
}

/// Waits (the ledger is written in batches) until `user` has `count` usage events, then returns
/// them; fails if more appear or too few within 10 s.
pub fn wait_rows(url: &str, user: &str, count: usize) -> Vec<UsageLog> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = ledger_rows(url, user);
        if rows.len() >= count || Instant::now() > deadline {
            assert_eq!(rows.len(), count, "{rows:#?}");
            return rows;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Each alert of `user` in the ledger at `url` with whether it was mailed and the last error
/// of mailing it, oldest first.
pub fn ledger_mail_states(
    url: &str,
    user: &str,
) -> Vec<(tollgate_ledger::Alert, bool, Option<String>)> {
    with_ledger(url, |ledger| async move {
        let mut out = Vec::new();
        for alert in ledger
            .alerts(user, false, 1000)
            .await
            .unwrap()
            .into_iter()
            .rev()
        {
            let (mailed, error) = ledger.alert_mail_state(alert.id).await.unwrap().unwrap();
            out.push((alert, mailed, error));
        }
        out
    })
}
