//! The Redis counter store: the same reserve → settle/release cycle as the in-process store,
//! shared by every gateway instance, one script call (one round trip) per operation.
//!
//! Redis holds a cache of each user-period's totals, not the source of truth (the ledger is).
//! A user-period whose `init` marker is missing — never used, expired, or lost with Redis's
//! data — answers [`ReserveOutcome::NeedsSeed`] until it is seeded from the ledger.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tollgate_domain::{Amount, BillingPeriod, Denial, LimitKey, Provider, Standing};

use crate::connection::{Connection, Target};
use crate::scripts::{self, Counted, ReserveReply, Scripts, SettleReply};
use crate::{
    CounterError, CounterStore, Hold, KeyTotals, Reservation, ReserveRequest, Reserved, SettledUse,
    Standings, Totals,
};

/// How to reach Redis and name the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port/db`; several such URLs separated by commas are the seed nodes of a
    /// Redis Cluster.
    pub url: String,
    /// Treat a single URL as a cluster node too.
    pub cluster: bool,
    /// Put before every key (no braces: the hash tag must be the user's).
    pub key_prefix: String,
    /// Every call gives up after this long.
    pub timeout_ms: u64,
    /// How long a user-period's keys outlive the period, for calls that settle after it ends.
    pub keep_after_period_secs: u64,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>, timeout_ms: u64) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            cluster: false,
            key_prefix: "tollgate:".to_owned(),
            timeout_ms,
            keep_after_period_secs: 2 * 86_400,
        }
    }
}

/// What one reserve did, with the standing of every counter the call moves as Redis saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    Admitted {
        reservation: Reservation,
        seen: Standings,
    },
    Denied {
        denial: Denial,
        seen: Standings,
    },
    /// The user-period must be seeded from the ledger ([`RedisStore::seed`]) first.
    NeedsSeed,
}

/// Counts for metrics, since the store was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Reserve, settle, release and seed calls.
    pub operations: u64,
    /// Commands sent: one per operation, plus one when Redis had to be sent a script's source.
    pub round_trips: u64,
    /// Calls that failed or timed out.
    pub failures: u64,
}

/// Counters in Redis, shared by every gateway instance that uses the same Redis and prefix.
#[derive(Debug)]
pub struct RedisStore {
    connection: Connection,
    scripts: Scripts,
    prefix: String,
    keep_after_period_secs: u64,
    next_id: AtomicU64,
    operations: AtomicU64,
}

impl RedisStore {
    /// Checks the configuration; connects on first use.
    pub fn new(config: RedisConfig) -> Result<RedisStore, CounterError> {
        if config.key_prefix.contains(['{', '}']) {
            return Err(CounterError::Config(format!(
                "key prefix {:?} must not contain braces (keys are hash-tagged by user)",
                config.key_prefix
            )));
        }
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let target = Target::parse(&config.url, config.cluster, timeout)?;
        // Reservation ids only need to be unique per user-period, across instances and Redis
        // restarts: a random start per store makes a collision practically impossible.
        let start = RandomState::new().hash_one(std::time::SystemTime::now());
        Ok(RedisStore {
            connection: Connection::new(target, timeout),
            scripts: Scripts::new(),
            prefix: config.key_prefix,
            keep_after_period_secs: config.keep_after_period_secs,
            next_id: AtomicU64::new(start),
            operations: AtomicU64::new(0),
        })
    }

    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    pub fn stats(&self) -> RedisStats {
        RedisStats {
            operations: self.operations.load(Ordering::Relaxed),
            round_trips: self.connection.counts.round_trips.load(Ordering::Relaxed),
            failures: self.connection.counts.failures.load(Ordering::Relaxed),
        }
    }

    fn keys(&self, user: &str, period: BillingPeriod) -> [String; 3] {
        scripts::keys(&self.prefix, user, period)
    }

    fn keep_until(&self, period: BillingPeriod) -> i64 {
        scripts::keep_until_secs(period, self.keep_after_period_secs)
    }

    /// Reserves like [`CounterStore::reserve`], and also answers what Redis saw and whether the
    /// user-period needs seeding.
    pub async fn reserve_seen(
        &self,
        request: ReserveRequest<'_>,
    ) -> Result<ReserveOutcome, CounterError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let keys = self.keys(request.user, request.period);
        let args = scripts::reserve_args(&request, id, self.keep_until(request.period));
        let reply: Vec<i64> = self
            .connection
            .eval(&self.scripts.reserve, &keys, &args)
            .await?;
        match scripts::parse_reserve(&reply, request.counted())? {
            ReserveReply::Uninitialised => Ok(ReserveOutcome::NeedsSeed),
            ReserveReply::Admitted { window, seen } => Ok(ReserveOutcome::Admitted {
                reservation: Reservation::of(&request, id, Hold::Store, window),
                seen,
            }),
            ReserveReply::Denied {
                limit,
                standing,
                seen,
            } => {
                let Some(&limit) = request.limits.get(limit) else {
                    return Err(CounterError::BadReply {
                        script: "reserve",
                        problem: format!(
                            "a denial by limit {} of the {} sent",
                            limit + 1,
                            request.limits.len()
                        ),
                    });
                };
                let (resets_at, retry_after_secs) = limit.resets(request.period, request.now);
                Ok(ReserveOutcome::Denied {
                    denial: Denial {
                        limit,
                        standing,
                        requested: request.amount.of(limit.key.measure()),
                        resets_at,
                        retry_after_secs,
                    },
                    seen,
                })
            }
        }
    }

    /// Writes a user-period's settled totals, its plan's and its keys', unless it is already
    /// initialised (another instance got there first). Returns whether this call wrote them.
    pub async fn seed(
        &self,
        user: &str,
        period: BillingPeriod,
        totals: &Totals,
        keys_used: &KeyTotals,
    ) -> Result<bool, CounterError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let keys = self.keys(user, period);
        let args = scripts::seed_args(self.keep_until(period), totals, keys_used);
        let wrote: i64 = self
            .connection
            .eval(&self.scripts.seed, &keys, &args)
            .await?;
        Ok(wrote == 1)
    }

    /// Settles; answers whether the reservation was still held (false once it expired). A
    /// settle sent again for the same reservation (e.g. retried after a timeout) is ignored.
    pub async fn settle_held(
        &self,
        reservation: &Reservation,
        actual: Amount,
    ) -> Result<bool, CounterError> {
        let reply = self.settle_reply(reservation, actual).await?;
        Ok(matches!(reply, SettleReply::Counted { held: true, .. }))
    }

    /// Settles and answers the settled use of the call's counters as the settle left them;
    /// `None` for a duplicate settle or a user-period that is not initialised (nothing written).
    pub async fn settle_used(
        &self,
        reservation: &Reservation,
        actual: Amount,
    ) -> Result<Option<SettledUse>, CounterError> {
        Ok(counted_use(self.settle_reply(reservation, actual).await?))
    }

    async fn settle_reply(
        &self,
        reservation: &Reservation,
        actual: Amount,
    ) -> Result<SettleReply, CounterError> {
        let counted = Counted {
            provider: reservation.provider,
            key: &reservation.key,
            window: reservation.window,
        };
        self.run_settle(
            &reservation.user,
            reservation.period,
            Some((reservation.id, reservation.expires_at)),
            &counted,
            actual,
        )
        .await
    }

    /// Counts use that was never held in Redis (admitted while Redis was unreachable), and
    /// answers the settled use as it left the counters. Like every settle, it writes nothing to
    /// a user-period that is not initialised (answering `None`): its seed, read from the
    /// ledger, will include this use.
    /// The use is counted against the plan's counters and key `key`'s budgets (none if empty),
    /// not against any minute window (which is over by the time this runs).
    pub async fn add_usage(
        &self,
        user: &str,
        key: &str,
        period: BillingPeriod,
        provider: Provider,
        actual: Amount,
    ) -> Result<Option<SettledUse>, CounterError> {
        let counted = Counted {
            provider,
            key,
            window: None,
        };
        self.run_settle(user, period, None, &counted, actual)
            .await
            .map(counted_use)
    }

    async fn run_settle(
        &self,
        user: &str,
        period: BillingPeriod,
        held: Option<(u64, DateTime<Utc>)>,
        counted: &Counted<'_>,
        actual: Amount,
    ) -> Result<SettleReply, CounterError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let keys = self.keys(user, period);
        let args = scripts::settle_args(self.keep_until(period), held, Utc::now(), counted, actual);
        let reply: Vec<i64> = self
            .connection
            .eval(&self.scripts.settle, &keys, &args)
            .await?;
        scripts::parse_settle(&reply, counted)
    }

    /// Releases; answers whether the reservation was still held.
    pub async fn release_held(&self, reservation: &Reservation) -> Result<bool, CounterError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let keys = self.keys(&reservation.user, reservation.period);
        let released: i64 = self
            .connection
            .eval(&self.scripts.release, &keys, &[reservation.id.to_string()])
            .await?;
        Ok(released == 1)
    }

    /// Where one counter stands (a read, for the admin side and tests; admission never reads
    /// from Rust). Expired holds are still counted until the next reserve gives them back.
    pub async fn standing(
        &self,
        user: &str,
        period: BillingPeriod,
        key: LimitKey,
    ) -> Result<Standing, CounterError> {
        self.key_standing(user, period, "", key).await
    }

    /// Where a period counter of key `key_id` stands (one of the plan's for a `key` that is not
    /// a key's own); per-minute counters are not read here.
    pub async fn key_standing(
        &self,
        user: &str,
        period: BillingPeriod,
        key_id: &str,
        key: LimitKey,
    ) -> Result<Standing, CounterError> {
        let [hash, _, _] = self.keys(user, period);
        let name = scripts::counter_name(key, key_id, None);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&hash)
            .arg(format!("u:{name}"))
            .arg(format!("r:{name}"));
        let (used, reserved): (Option<u64>, Option<u64>) = self.connection.query(&cmd).await?;
        Ok(Standing {
            used: used.unwrap_or(0),
            reserved: reserved.unwrap_or(0),
        })
    }

    /// Whether Redis answers, within the timeout.
    pub async fn ping(&self) -> Result<(), CounterError> {
        let answer: String = self.connection.query(&redis::cmd("PING")).await?;
        if answer == "PONG" {
            Ok(())
        } else {
            Err(CounterError::Unreachable(format!(
                "PING answered {answer:?}"
            )))
        }
    }

    /// Drops the connection so that the next call connects afresh.
    pub(crate) fn reconnect(&self) {
        self.connection.reset();
    }
}

fn counted_use(reply: SettleReply) -> Option<SettledUse> {
    match reply {
        SettleReply::Counted { used, .. } => Some(used),
        SettleReply::Uninitialised | SettleReply::Duplicate => None,
    }
}

impl CounterStore for RedisStore {
    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reserved, CounterError> {
        match self.reserve_seen(request).await? {
            ReserveOutcome::Admitted { reservation, .. } => Ok(Reserved::Admitted(reservation)),
            ReserveOutcome::Denied { denial, .. } => Ok(Reserved::Denied(denial)),
            ReserveOutcome::NeedsSeed => Err(CounterError::NeedsSeed {
                user: request.user.to_owned(),
                period: request.period.key(),
            }),
        }
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual: Amount,
    ) -> Result<Option<SettledUse>, CounterError> {
        self.settle_used(reservation, actual).await
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), CounterError> {
        self.release_held(reservation).await.map(drop)
    }
}
