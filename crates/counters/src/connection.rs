//! The connection to Redis — one server through a `ConnectionManager`, or a Redis Cluster
//! through the cluster client — and the one way commands are sent: under a deadline, counted.
//!
//! The connection is made on first use, not at start, so a gateway starts while Redis is down.
//! Both clients reconnect by themselves once Redis is back. Whatever happens on the network, a
//! call gives up after the configured timeout with [`CounterError::Unreachable`]: a request
//! never waits on Redis longer than that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError, Value};

use crate::CounterError;
use crate::scripts::Script;

/// Where the counters live.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

impl Target {
    /// `redis://host:port/db` is one server; several URLs separated by commas, or one URL with
    /// `cluster` set, are the seed nodes of a Redis Cluster. No I/O.
    pub fn parse(url: &str, cluster: bool, timeout: Duration) -> Result<Target, CounterError> {
        let nodes: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let bad = |e: RedisError| CounterError::Config(format!("redis url {url:?}: {e}"));
        match nodes.as_slice() {
            [] => Err(CounterError::Config("the redis url is empty".to_owned())),
            [one] if !cluster => Ok(Target::Single(redis::Client::open(*one).map_err(bad)?)),
            many => {
                let client = ClusterClient::builder(many.iter().map(|s| (*s).to_owned()))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Retries would outlast the caller's deadline; the caller retries instead.
                    .retries(1)
                    .build()
                    .map_err(bad)?;
                Ok(Target::Cluster(Box::new(client)))
            }
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Counts of what was sent, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub round_trips: AtomicU64,
    pub failures: AtomicU64,
}

pub(crate) struct Connection {
    target: Target,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
    pub counts: Counts,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn unreachable(e: impl std::fmt::Display) -> CounterError {
    CounterError::Unreachable(e.to_string())
}

impl Connection {
    pub fn new(target: Target, timeout: Duration) -> Connection {
        Connection {
            target,
            timeout,
            conn: Mutex::new(None),
            counts: Counts::default(),
        }
    }

    /// Runs `script` by its hash; if Redis does not have it (first call, restart, failover),
    /// sends the source once, which also caches it there. All within the timeout.
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, CounterError> {
        self.deadline(async {
            let mut conn = self.connection().await?;
            let mut by_hash = redis::cmd("EVALSHA");
            by_hash
                .arg(&script.sha1)
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            match self.send(&mut conn, &by_hash).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    let mut with_source = redis::cmd("EVAL");
                    with_source
                        .arg(script.source)
                        .arg(keys.len())
                        .arg(keys)
                        .arg(args);
                    self.send(&mut conn, &with_source).await
                }
                other => other,
            }
            .map_err(|e| self.failed(script.name, e))
            .and_then(|v| T::from_redis_value(v).map_err(|e| self.failed(script.name, e)))
        })
        .await
    }

    /// Any other command (reads for tests and the admin side, `PING`), within the timeout.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, CounterError> {
        self.deadline(async {
            let mut conn = self.connection().await?;
            self.send(&mut conn, cmd)
                .await
                .map_err(|e| self.failed("command", e))
                .and_then(|v| T::from_redis_value(v).map_err(|e| self.failed("command", e)))
        })
        .await
    }

    /// Whether the counters live on a Redis Cluster, where one script call reaches one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Forgets the connection, so that the next call connects afresh instead of waiting on the
    /// old one's reconnection schedule.
    pub fn reset(&self) {
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    async fn deadline<T>(
        &self,
        work: impl Future<Output = Result<T, CounterError>>,
    ) -> Result<T, CounterError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                self.counts.failures.fetch_add(1, Ordering::Relaxed);
                Err(CounterError::Unreachable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> CounterError {
        self.counts.failures.fetch_add(1, Ordering::Relaxed);
        unreachable(format!("{what}: {e}"))
    }

    async fn send(&self, conn: &mut Conn, cmd: &Cmd) -> Result<Value, RedisError> {
        self.counts.round_trips.fetch_add(1, Ordering::Relaxed);
        match conn {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn connection(&self) -> Result<Conn, CounterError> {
        if let Some(conn) = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(conn.clone());
        }
        let conn = match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    // Reconnect quickly and keep trying: limits should be shared again within
                    // a fraction of a second of Redis coming back.
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(100))
                    .set_number_of_retries(3);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Conn::Single)
            }
            Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
        .map_err(|e| self.failed("connecting", e))?;
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }
}
