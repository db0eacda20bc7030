//! The Redis counter store: the same reserve → settle/release cycle as the in-process store,
//! shared by every gateway instance. Reserves and settles go in batches, one script call (one
//! round trip) in flight at a time carrying every one that came meanwhile ([`op_batches`]).
//!
//! Redis holds a cache of each user-period's totals, not the source of truth (the ledger is).
//! A user-period whose `init` marker is missing — never used, expired, or lost with Redis's
//! data — answers [`ReserveOutcome::NeedsSeed`] until it is seeded from the ledger.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use chrono::{DateTime, Utc};
use chrono::{Datelike, Months};
use tollgate_domain::{Amount, AnchorDay, BillingPeriod, Denial, LimitKey, Provider, Standing};

use crate::connection::{Connection, Target};
use crate::scripts::{self, Counted, Op, ReserveReply, Scripts, SettleReply};
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
    connection: Arc<Connection>,
    scripts: Arc<Scripts>,
    /// Where reserves and settles go to be sent in batches (see [`op_batches`]); the task that
    /// sends them starts with the first.
    batches: OnceLock<mpsc::UnboundedSender<OpJob>>,
    timeout: Duration,
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
            connection: Arc::new(Connection::new(target, timeout)),
            scripts: Arc::new(Scripts::new()),
            batches: OnceLock::new(),
            timeout,
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
        // A reserve that times out in its batch but ran holds its amount until the hold expires,
        // as one sent alone would.
        let reply = self.run_op(Op::Reserve, keys, args, true).await?;
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
        // Only a settle with an id may go into a batch: one sent again after its batch timed out
        // but ran is recognised by its tombstone; use without an id would be counted twice.
        let reply = self.run_op(Op::Settle, keys, args, held.is_some()).await?;
        scripts::parse_settle(&reply, counted)
    }

    /// Runs one operation of the `ops` script and answers its reply: in a batch when
    /// `batchable` (and not on Redis Cluster, whose user-periods live in different slots), or
    /// else in a script call of its own.
    async fn run_op(
        &self,
        op: Op,
        keys: [String; 3],
        args: Vec<String>,
        batchable: bool,
    ) -> Result<Vec<i64>, CounterError> {
        if !batchable || self.connection.is_cluster() {
            let mut replies: Vec<Vec<i64>> = self
                .connection
                .eval(&self.scripts.ops, &keys, &scripts::ops_args([(op, args)]))
                .await?;
            return replies.pop().ok_or_else(|| CounterError::BadReply {
                script: self.scripts.ops.name,
                problem: "no reply for the one operation sent".to_owned(),
            });
        }
        let sender = self.batches.get_or_init(|| {
            let (sender, jobs) = mpsc::unbounded_channel();
            tokio::spawn(op_batches(
                Arc::clone(&self.connection),
                Arc::clone(&self.scripts),
                jobs,
            ));
            sender
        });
        let (reply, answer) = oneshot::channel();
        let gone = || CounterError::Unreachable("the counter batch task has stopped".to_owned());
        sender
            .send(OpJob {
                op,
                keys,
                args,
                reply,
            })
            .map_err(|_| gone())?;
        // The deadline of any Redis call, counted from now: no request waits on Redis longer,
        // even behind a batch in flight.
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(CounterError::Unreachable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
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

    /// Deletes `user`'s keys of every period that can still have them at `now` (the user was
    /// erased); answers how many keys there were. A period's keys live until its end plus
    /// `keep_after_period_secs`, so the periods that began from that long (and two months)
    /// before `now` to a month after are enough, named one by one rather than found by `SCAN`:
    /// one `DEL`, and on Redis Cluster every one of them is in the user's slot. Calls of the
    /// user still in flight then settle into nothing (their user-period is no longer
    /// initialised), and the next reserve seeds the counters from the ledger afresh.
    pub async fn forget_user(&self, user: &str, now: DateTime<Utc>) -> Result<u64, CounterError> {
        const MONTH_SECS: u64 = 28 * 86_400;
        self.operations.fetch_add(1, Ordering::Relaxed);
        let back = u32::try_from(self.keep_after_period_secs.div_ceil(MONTH_SECS))
            .unwrap_or(u32::MAX)
            .saturating_add(2);
        let this_month = now
            .date_naive()
            .with_day(1)
            .ok_or_else(|| CounterError::Config("the first of a month".into()))?;
        let first = this_month
            .checked_sub_months(Months::new(back))
            .unwrap_or(this_month);
        let last = this_month
            .checked_add_months(Months::new(1))
            .unwrap_or(this_month);
        let mut cmd = redis::cmd("DEL");
        let mut month = first;
        while month <= last {
            let key = format!("{:04}-{:02}", month.year(), month.month());
            if let Ok(period) = BillingPeriod::from_key(&key, AnchorDay::CALENDAR_MONTH) {
                for k in self.keys(user, period) {
                    cmd.arg(k);
                }
            }
            let Some(next) = month.checked_add_months(Months::new(1)) else {
                break;
            };
            month = next;
        }
        self.connection.query(&cmd).await
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

/// An operation waiting for its batch: its kind, keys and arguments, and where its reply goes.
struct OpJob {
    op: Op,
    keys: [String; 3],
    args: Vec<String>,
    reply: oneshot::Sender<Result<Vec<i64>, CounterError>>,
}

/// The most operations in one script call.
const MAX_BATCH: usize = 128;

/// Sends reserves and settles to Redis in batches, one batch in flight at a time: an operation
/// that comes while a batch is on its way waits for it, then goes with every other that came
/// meanwhile, in one script call that applies them in the order they came. Under load one call
/// serves every call that started or finished during the previous one, so a call costs a
/// fraction of a round trip; alone, an operation goes at once. Ends when the store is dropped.
async fn op_batches(
    connection: Arc<Connection>,
    scripts: Arc<Scripts>,
    mut jobs: mpsc::UnboundedReceiver<OpJob>,
) {
    let mut batch: Vec<OpJob> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Whoever gave up waiting (past the deadline behind a slow batch) counts the operation
        // as failed: it is not sent late.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let keys: Vec<String> = batch
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.keys))
            .collect();
        let args = scripts::ops_args(
            batch
                .iter_mut()
                .map(|j| (j.op, std::mem::take(&mut j.args))),
        );
        let result: Result<Vec<Vec<i64>>, CounterError> =
            connection.eval(&scripts.ops, &keys, &args).await;
        match result {
            Ok(replies) if replies.len() == batch.len() => {
                for (job, reply) in batch.drain(..).zip(replies) {
                    let _ = job.reply.send(Ok(reply));
                }
            }
            Ok(replies) => {
                let problem = format!("{} replies to {} operations", replies.len(), batch.len());
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(CounterError::BadReply {
                        script: scripts.ops.name,
                        problem: problem.clone(),
                    }));
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
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
