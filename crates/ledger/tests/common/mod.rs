//! Shared test helpers: real databases (a SQLite file in a tempdir, a fresh PostgreSQL
//! database per test), events, a switchable TCP proxy, and polling with a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tollgate_domain::{Cost, Provider, Usage};
use tollgate_ledger::test_database::TestDatabase;
use tollgate_ledger::{Ledger, LedgerConfig, LedgerHandle, UsageEvent};

/// A database for one test, removed when dropped.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg: Option<TestDatabase>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        TestDb { url, dir, pg: None }
    }

    pub async fn postgres() -> TestDb {
        let pg = TestDatabase::create("ledger");
        TestDb {
            url: pg.url.clone(),
            dir: tempfile::tempdir().unwrap(),
            pg: Some(pg),
        }
    }

    pub async fn of(backend: &str) -> TestDb {
        match backend {
            "sqlite" => TestDb::sqlite().await,
            _ => TestDb::postgres().await,
        }
    }

    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("spool")
    }

    pub fn config(&self) -> LedgerConfig {
        let mut c = LedgerConfig::new(self.url.clone(), self.spool_dir());
        c.flush_interval_ms = 20;
        c.db_timeout_ms = 500;
        c.retry_backoff_max_ms = 200;
        c
    }

    /// The PostgreSQL database's URL through `addr` (a proxy in front of the server).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        self.pg.as_ref().unwrap().url_via(addr)
    }
}

pub fn uuid_like() -> String {
    UsageEvent::new_id().replace('-', "")
}

pub fn nov(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
}

/// A deterministic event numbered `n`: user, provider, tokens, cost and status vary with `n`.
pub fn event(id: impl Into<String>, n: u64) -> UsageEvent {
    let occurred_at = nov(1 + (n % 28) as u32, (n % 24) as u32);
    UsageEvent {
        event_id: id.into(),
        user_id: format!("user-{}", n % 5),
        key_id: Some(format!("key-{}", n % 3)),
        provider: Provider::ALL[(n % 9) as usize],
        model: format!("model-{}", n % 4),
        endpoint: "/v1/chat/completions".into(),
        method: "POST".into(),
        status: if n.is_multiple_of(17) { 429 } else { 200 },
        usage: Usage {
            input_tokens: 10 + n % 1_000,
            cached_input_tokens: n % 10,
            output_tokens: n % 97,
            reasoning_tokens: n % 7,
            units: n % 3,
            ..Usage::default()
        },
        cost: Cost {
            input_nanousd: 1_000 + n,
            output_nanousd: 500,
            other_nanousd: 0,
            total_nanousd: 1_500 + n,
        },
        price_version: "2026-08-21".into(),
        estimated: n.is_multiple_of(11),
        latency_ms: 50 + n % 500,
        request_bytes: 1_000,
        response_bytes: 2_000 + n,
        billing_period: "2026-11".into(),
        occurred_at,
        error_message: None,
        request_id: Some(format!("req-{n}")),
        refusal_reason: None,
    }
}

/// Polls `cond` every 20 ms until it holds; fails after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn open(config: LedgerConfig) -> (Ledger, LedgerHandle) {
    Ledger::open(config).await.unwrap()
}

/// Checks the invariants every test ends with: each log row counted once in the summaries,
/// per (user, period) and per provider (a refused call's row in none). Returns the number of
/// log rows.
pub async fn assert_summaries_match_logs(ledger: &Ledger) -> i64 {
    use tollgate_ledger::Db;
    let log_sql = "SELECT user_id, billing_period, COUNT(*), CAST(SUM(total_tokens) AS BIGINT), \
        CAST(SUM(cost_total_nanousd) AS BIGINT), CAST(SUM(latency_ms) AS BIGINT), \
        CAST(SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS BIGINT) \
        FROM api_usage_logs WHERE refusal_reason IS NULL \
        GROUP BY user_id, billing_period ORDER BY user_id, billing_period";
    let sum_sql = "SELECT user_id, billing_period, total_calls, total_tokens, \
        total_cost_nanousd, latency_ms_sum, error_calls FROM usage_summaries \
        ORDER BY user_id, billing_period";
    let plog_sql = "SELECT user_id, provider, COUNT(*), CAST(SUM(total_tokens) AS BIGINT), \
        CAST(SUM(cost_total_nanousd) AS BIGINT) FROM api_usage_logs \
        WHERE refusal_reason IS NULL GROUP BY user_id, provider ORDER BY user_id, provider";
    let psum_sql = "SELECT user_id, provider, calls, tokens, cost_nanousd \
        FROM usage_summary_providers ORDER BY user_id, provider";
    type Row = (String, String, i64, i64, i64, i64, i64);
    type PRow = (String, String, i64, i64, i64);
    let (logs, sums, plogs, psums, rows, distinct): (
        Vec<Row>,
        Vec<Row>,
        Vec<PRow>,
        Vec<PRow>,
        i64,
        i64,
    ) = match ledger.db() {
        Db::Sqlite(pool) => (
            sqlx::query_as(log_sql).fetch_all(pool).await.unwrap(),
            sqlx::query_as(sum_sql).fetch_all(pool).await.unwrap(),
            sqlx::query_as(plog_sql).fetch_all(pool).await.unwrap(),
            sqlx::query_as(psum_sql).fetch_all(pool).await.unwrap(),
            sqlx::query_scalar("SELECT COUNT(*) FROM api_usage_logs")
                .fetch_one(pool)
                .await
                .unwrap(),
            sqlx::query_scalar("SELECT COUNT(DISTINCT event_id) FROM api_usage_logs")
                .fetch_one(pool)
                .await
                .unwrap(),
        ),
        Db::Postgres(pool) => (
            sqlx::query_as(log_sql).fetch_all(pool).await.unwrap(),
            sqlx::query_as(sum_sql).fetch_all(pool).await.unwrap(),
            sqlx::query_as(plog_sql).fetch_all(pool).await.unwrap(),
            sqlx::query_as(psum_sql).fetch_all(pool).await.unwrap(),
            sqlx::query_scalar("SELECT COUNT(*) FROM api_usage_logs")
                .fetch_one(pool)
                .await
                .unwrap(),
            sqlx::query_scalar("SELECT COUNT(DISTINCT event_id) FROM api_usage_logs")
                .fetch_one(pool)
                .await
                .unwrap(),
        ),
    };
    assert_eq!(
        logs, sums,
        "usage_summaries must equal the sums of the log rows"
    );
    assert_eq!(
        plogs, psums,
        "usage_summary_providers must equal the sums of the log rows"
    );
    assert_eq!(rows, distinct, "no event stored twice");
    rows
}

/// Event ids stored in api_usage_logs.
pub async fn stored_ids(ledger: &Ledger) -> Vec<String> {
    use tollgate_ledger::Db;
    let sql = "SELECT event_id FROM api_usage_logs ORDER BY event_id";
    match ledger.db() {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
    }
}

/// A TCP forwarder to PostgreSQL that can be switched off: while down it refuses new
/// connections (its listener is closed) and cuts the ones it was forwarding.
pub struct Proxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, up_rx) = watch::channel(true);
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run_proxy(listener, addr, target, up_rx, Arc::clone(&stop)));
        Proxy {
            addr,
            up,
            stop,
            task,
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

async fn run_proxy(
    listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    mut up: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
) {
    let mut listener = Some(listener);
    let mut conns = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        let is_up = *up.borrow_and_update();
        if !is_up {
            listener = None; // refuse: nothing listens on addr
            conns.abort_all();
            if up.changed().await.is_err() {
                return;
            }
            continue;
        }
        if listener.is_none() {
            // Re-bind the same port (SO_REUSEADDR is set by tokio); retry briefly if needed.
            for _ in 0..100 {
                if let Ok(l) = TcpListener::bind(addr).await {
                    listener = Some(l);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let Some(l) = listener.as_ref() else { return };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((mut client, _)) = accepted {
                    conns.spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
            _ = up.changed() => {}
        }
    }
}
