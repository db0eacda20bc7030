//! The store a gateway uses with Redis: the Redis store, seeded from the ledger when Redis has
//! no totals for a user-period, and a plan's policy applied while Redis cannot be reached.
//!
//! While Redis answers, every operation is one script call and nothing else. The first call
//! that fails or times out marks the limits *degraded*: from then on no request waits on Redis;
//! each is answered by its plan's policy —
//!
//! - `fail_closed`: refused with [`CounterError::Unreachable`];
//! - `fail_open`: admitted without a hold ([`Hold::Unheld`]); its use is counted when it settles;
//! - `local`: enforced by in-process counters seeded from the standings this instance last saw
//!   in Redis ([`Hold::Local`]).
//!
//! A background probe pings Redis every `probe_interval_ms`. When Redis answers, the operations
//! owed to it are replayed — the settles and releases of reservations held in Redis that could
//! not reach it, and all use counted meanwhile — and only then does admission go back to Redis. `docs/counters.md` gives the exact behaviour and its bounds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use tollgate_domain::{Amount, BillingPeriod, LimitKey, Provider, UnreachablePolicy};

use crate::outage::{Pending, State};
use crate::{
    CounterError, CounterStore, Hold, PeriodTotals, RedisStore, Reservation, ReserveOutcome,
    ReserveRequest, Reserved, SettledUse,
};

/// Why a [`Seeder`] could not read the totals: the ledger's own error, boxed, since the counters
/// do not know the ledger's types.
pub type SeedError = Box<dyn std::error::Error + Send + Sync>;

/// What [`Seeder`] returns: a user's settled use in a period, counter by counter.
pub type SeedFuture =
    Pin<Box<dyn Future<Output = Result<PeriodTotals, SeedError>> + Send + 'static>>;

/// Reads a user-period's totals from the ledger, to rebuild its counters in Redis.
pub type Seeder = Arc<dyn Fn(&str, BillingPeriod) -> SeedFuture + Send + Sync>;

/// Use that reached Redis only when it came back (settles deferred during an outage), with the
/// settled use Redis answered for it: `settled − actual` is where the counters stood before it,
/// as for a settle at the time, so the thresholds it crossed can still be raised.
#[derive(Clone, Copy, Debug)]
pub struct Replayed<'a> {
    pub user: &'a str,
    pub period: BillingPeriod,
    pub provider: Provider,
    /// The deferred use of this user, period and provider, summed over its calls.
    pub actual: Amount,
    pub settled: SettledUse,
}

/// Called for each replay that Redis counted; must not block.
pub type ReplayHook = Arc<dyn Fn(Replayed<'_>) + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResilientConfig {
    /// The policy of [`CounterStore::reserve`]; [`CounterStore::reserve_with`] takes a plan's.
    pub default_policy: UnreachablePolicy,
    /// How often Redis is probed while unreachable.
    pub probe_interval_ms: u64,
    /// How long reading a user-period's totals from the ledger may take.
    pub seed_timeout_ms: u64,
}

impl Default for ResilientConfig {
    fn default() -> Self {
        ResilientConfig {
            default_policy: UnreachablePolicy::FailClosed,
            probe_interval_ms: 200,
            seed_timeout_ms: 2_000,
        }
    }
}

/// Counts for metrics, since the store was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResilientStats {
    /// Whether limits are currently enforced without Redis.
    pub degraded: bool,
    /// Times Redis became unreachable.
    pub outages: u64,
    /// User-periods seeded from the ledger by this instance.
    pub seeded: u64,
    /// Calls refused because Redis was unreachable (`fail_closed`).
    pub refused_unreachable: u64,
    /// Calls admitted without a hold (`fail_open`).
    pub admitted_open: u64,
    /// Calls admitted by the local counters (`local`).
    pub admitted_local: u64,
    /// Operations owed to Redis, waiting for it to come back.
    pub pending: u64,
}

#[derive(Default)]
struct Counts {
    outages: AtomicU64,
    seeded: AtomicU64,
    refused_unreachable: AtomicU64,
    admitted_open: AtomicU64,
    admitted_local: AtomicU64,
}

struct Shared {
    redis: RedisStore,
    seeder: Seeder,
    config: ResilientConfig,
    degraded: AtomicBool,
    probing: AtomicBool,
    state: Mutex<State>,
    counts: Counts,
    on_replay: OnceLock<ReplayHook>,
}

/// Redis counters with a fallback; cheap to clone (clones share everything).
#[derive(Clone)]
pub struct ResilientStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ResilientStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientStore")
            .field("redis", &self.shared.redis)
            .field("config", &self.shared.config)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update under this lock is a few map operations that cannot be left half-done.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ResilientStore {
    pub fn new(redis: RedisStore, seeder: Seeder, config: ResilientConfig) -> ResilientStore {
        ResilientStore {
            shared: Arc::new(Shared {
                redis,
                seeder,
                config,
                degraded: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                counts: Counts::default(),
                on_replay: OnceLock::new(),
            }),
        }
    }

    /// Calls `hook` for the use each replay after an outage counted in Redis (set once; later
    /// calls are ignored).
    pub fn on_replay(&self, hook: ReplayHook) {
        let _ = self.shared.on_replay.set(hook);
    }

    /// Whether limits are currently enforced without Redis (for a metric).
    pub fn is_degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::SeqCst)
    }

    pub fn redis(&self) -> &RedisStore {
        &self.shared.redis
    }

    pub fn stats(&self) -> ResilientStats {
        let c = &self.shared.counts;
        ResilientStats {
            degraded: self.is_degraded(),
            outages: c.outages.load(Ordering::Relaxed),
            seeded: c.seeded.load(Ordering::Relaxed),
            refused_unreachable: c.refused_unreachable.load(Ordering::Relaxed),
            admitted_open: c.admitted_open.load(Ordering::Relaxed),
            admitted_local: c.admitted_local.load(Ordering::Relaxed),
            pending: u64::try_from(lock(&self.shared.state).pending.len()).unwrap_or(u64::MAX),
        }
    }

    /// As [`CounterStore::reserve_with`], and with the user-period's totals from the ledger
    /// when this call rebuilt its counters in Redis (the period's first call here, or Redis lost
    /// them): use counted while Redis was away, or by an instance that crashed, may have crossed
    /// alert thresholds no settle will report.
    pub async fn reserve_seeding(
        &self,
        request: ReserveRequest<'_>,
        policy: UnreachablePolicy,
    ) -> Result<(Reserved, Option<Vec<(LimitKey, u64)>>), CounterError> {
        let shared = &self.shared;
        let why = if shared.degraded.load(Ordering::SeqCst) {
            CounterError::Unreachable("redis is unreachable; waiting for it to return".into())
        } else {
            match shared.reserve_seeded(request).await {
                // A reply that cannot be read leaves Redis as unusable as no reply does.
                Err(e @ (CounterError::Unreachable(_) | CounterError::BadReply { .. })) => {
                    self.degrade();
                    e
                }
                // The ledger could not be read: these counters cannot be trusted yet, so this
                // request is answered by its policy, but Redis itself is fine.
                Err(e @ CounterError::NeedsSeed { .. }) => e,
                other => return other,
            }
        };
        self.reserve_unshared(request, policy, why)
            .map(|reserved| (reserved, None))
    }

    /// A reservation while Redis cannot answer it (`why`), by `policy`.
    fn reserve_unshared(
        &self,
        request: ReserveRequest<'_>,
        policy: UnreachablePolicy,
        why: CounterError,
    ) -> Result<Reserved, CounterError> {
        let shared = &self.shared;
        match policy {
            UnreachablePolicy::FailClosed => {
                shared
                    .counts
                    .refused_unreachable
                    .fetch_add(1, Ordering::Relaxed);
                Err(why)
            }
            UnreachablePolicy::FailOpen => {
                shared.counts.admitted_open.fetch_add(1, Ordering::Relaxed);
                Ok(Reserved::Admitted(Reservation::of(
                    &request,
                    0,
                    Hold::Unheld,
                    None,
                )))
            }
            UnreachablePolicy::Local => {
                let local = lock(&shared.state).local_for(&request);
                match local.reserve_now(request) {
                    Reserved::Admitted(mut reservation) => {
                        shared.counts.admitted_local.fetch_add(1, Ordering::Relaxed);
                        reservation.held = Hold::Local;
                        Ok(Reserved::Admitted(reservation))
                    }
                    denied => Ok(denied),
                }
            }
        }
    }

    /// Marks the limits degraded and, if none is running, starts the probe that ends it.
    fn degrade(&self) {
        let shared = &self.shared;
        if !shared.degraded.swap(true, Ordering::SeqCst) {
            shared.counts.outages.fetch_add(1, Ordering::Relaxed);
            lock(&shared.state).begin_outage();
            tracing::warn!("counter store unreachable: limits degraded to each plan's policy");
        }
        if !shared.probing.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(probe(Arc::downgrade(shared)));
                }
                Err(_) => shared.probing.store(false, Ordering::SeqCst),
            }
        }
    }

    /// Counts use in Redis now, or later if it cannot be reached.
    async fn count_usage(&self, reservation: &Reservation, actual: Amount) -> Counted {
        let shared = &self.shared;
        if !shared.degraded.load(Ordering::SeqCst) {
            let counted = shared
                .redis
                .add_usage(
                    &reservation.user,
                    &reservation.key,
                    reservation.period,
                    reservation.provider,
                    actual,
                )
                .await;
            if let Ok(used) = counted {
                return Counted::InRedis(used);
            }
            self.degrade();
        }
        lock(&shared.state).pending.add_usage(
            &reservation.user,
            &reservation.key,
            reservation.period,
            reservation.provider,
            actual,
        );
        Counted::Deferred
    }
}

/// Where [`ResilientStore::count_usage`] counted a call's use.
enum Counted {
    /// In Redis, which answered the settled use (`None`: the user-period was not initialised).
    InRedis(Option<SettledUse>),
    /// Owed to Redis until it is back.
    Deferred,
}

impl Shared {
    /// Reserves in Redis, seeding the user-period from the ledger first if Redis has no totals.
    /// Also answers the totals it seeded Redis with, if it did.
    async fn reserve_seeded(
        &self,
        request: ReserveRequest<'_>,
    ) -> Result<(Reserved, Option<Vec<(LimitKey, u64)>>), CounterError> {
        let mut seeded = None;
        let mut tried = false;
        loop {
            let sent = Instant::now();
            match self.redis.reserve_seen(request).await? {
                ReserveOutcome::Admitted { reservation, seen } => {
                    lock(&self.state).remember(&request, sent, seen);
                    return Ok((Reserved::Admitted(reservation), seeded));
                }
                ReserveOutcome::Denied { denial, seen } => {
                    lock(&self.state).remember(&request, sent, seen);
                    return Ok((Reserved::Denied(denial), seeded));
                }
                // Seeded once and still uninitialised: Redis lost its data again meanwhile.
                ReserveOutcome::NeedsSeed if tried => {
                    return Err(CounterError::Unreachable(
                        "redis lost the counters right after they were seeded".into(),
                    ));
                }
                ReserveOutcome::NeedsSeed => {
                    seeded = self.seed(request.user, request.period).await?;
                    tried = true;
                }
            }
        }
    }

    /// Seeds the user-period from the ledger; answers the totals if this call wrote them (not
    /// when another instance or request seeded it first).
    async fn seed(
        &self,
        user: &str,
        period: BillingPeriod,
    ) -> Result<Option<Vec<(LimitKey, u64)>>, CounterError> {
        let needs_seed = |why: &dyn std::fmt::Display| {
            tracing::warn!(user, period = %period, error = %why, "counters not seeded");
            CounterError::NeedsSeed {
                user: user.to_owned(),
                period: period.key(),
            }
        };
        let timeout = Duration::from_millis(self.config.seed_timeout_ms);
        let totals = match tokio::time::timeout(timeout, (self.seeder)(user, period)).await {
            Ok(Ok(totals)) => totals,
            Ok(Err(e)) => return Err(needs_seed(&e)),
            Err(_) => return Err(needs_seed(&"the ledger did not answer in time")),
        };
        if !self
            .redis
            .seed(user, period, &totals.plan, &totals.keys)
            .await?
        {
            return Ok(None);
        }
        self.counts.seeded.fetch_add(1, Ordering::Relaxed);
        Ok(Some(totals.plan))
    }

    /// Sends Redis what it is owed. On failure, keeps what is left for the next attempt.
    async fn replay(&self) -> Result<(), CounterError> {
        let mut owed = std::mem::take(&mut lock(&self.state).pending);
        let result = self.replay_all(&mut owed).await;
        if !owed.is_empty() {
            lock(&self.state).pending.restore(owed);
        }
        result
    }

    fn replayed(
        &self,
        user: &str,
        period: BillingPeriod,
        provider: Provider,
        actual: Amount,
        settled: Option<SettledUse>,
    ) {
        if let (Some(hook), Some(settled)) = (self.on_replay.get(), settled) {
            hook(Replayed {
                user,
                period,
                provider,
                actual,
                settled,
            });
        }
    }

    async fn replay_all(&self, owed: &mut Pending) -> Result<(), CounterError> {
        // Oldest first.
        owed.held.reverse();
        while let Some((reservation, settled)) = owed.held.last() {
            let sent = match settled {
                Some(actual) => self
                    .redis
                    .settle_used(reservation, *actual)
                    .await
                    .map(|used| {
                        self.replayed(
                            &reservation.user,
                            reservation.period,
                            reservation.provider,
                            *actual,
                            used,
                        )
                    }),
                None => self.redis.release_held(reservation).await.map(drop),
            };
            if let Err(e) = sent {
                owed.held.reverse();
                return Err(e);
            }
            owed.held.pop();
        }
        let keys: Vec<_> = owed.usage.keys().cloned().collect();
        for key in keys {
            if let Some(amount) = owed.usage.get(&key).copied() {
                let (user, key_id, period, provider) = &key;
                let used = self
                    .redis
                    .add_usage(user, key_id, *period, *provider, amount)
                    .await?;
                self.replayed(user, *period, *provider, amount, used);
                owed.usage.remove(&key);
            }
        }
        Ok(())
    }
}

/// Pings Redis until it answers and what it is owed has been replayed, then lifts the degraded
/// mark. Ends early if the store is dropped.
async fn probe(shared: Weak<Shared>) {
    loop {
        let interval = match shared.upgrade() {
            Some(s) => Duration::from_millis(s.config.probe_interval_ms.max(1)),
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(s) = shared.upgrade() else { return };
        let back = s.redis.ping().await.is_ok() && s.replay().await.is_ok();
        if !back {
            // A fresh connection next time, rather than the old one's reconnection schedule.
            s.redis.reconnect();
            continue;
        }
        s.degraded.store(false, Ordering::SeqCst);
        // Whatever was deferred while the first replay ran.
        if s.replay().await.is_err() {
            s.degraded.store(true, Ordering::SeqCst);
            continue;
        }
        tracing::info!("counter store reachable again: limits shared through redis");
        s.probing.store(false, Ordering::SeqCst);
        // Degraded again between the two stores above: this probe carries on.
        if s.degraded.load(Ordering::SeqCst) && !s.probing.swap(true, Ordering::SeqCst) {
            continue;
        }
        return;
    }
}

impl CounterStore for ResilientStore {
    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reserved, CounterError> {
        self.reserve_with(request, self.shared.config.default_policy)
            .await
    }

    async fn reserve_with(
        &self,
        request: ReserveRequest<'_>,
        on_unreachable: UnreachablePolicy,
    ) -> Result<Reserved, CounterError> {
        self.reserve_seeding(request, on_unreachable)
            .await
            .map(|(reserved, _)| reserved)
    }

    /// Never fails: what cannot reach Redis now is owed to it and replayed on recovery. The
    /// settled use answered is Redis's whenever Redis counted the call; for a call held locally
    /// while Redis is unreachable, the local counters' (an estimate, as local enforcement is);
    /// `None` for what is deferred.
    async fn settle(
        &self,
        reservation: &Reservation,
        actual: Amount,
    ) -> Result<Option<SettledUse>, CounterError> {
        let shared = &self.shared;
        match reservation.held {
            Hold::Store => {
                if !shared.degraded.load(Ordering::SeqCst) {
                    if let Ok(used) = shared.redis.settle_used(reservation, actual).await {
                        return Ok(used);
                    }
                    self.degrade();
                }
                lock(&shared.state)
                    .pending
                    .held
                    .push((reservation.clone(), Some(actual)));
                Ok(None)
            }
            Hold::Local => {
                let local = lock(&shared.state).local();
                let local_use = local.settle_now(reservation, actual);
                match self.count_usage(reservation, actual).await {
                    Counted::InRedis(used) => Ok(used),
                    Counted::Deferred => Ok(Some(local_use)),
                }
            }
            Hold::Unheld => match self.count_usage(reservation, actual).await {
                Counted::InRedis(used) => Ok(used),
                Counted::Deferred => Ok(None),
            },
        }
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), CounterError> {
        let shared = &self.shared;
        match reservation.held {
            Hold::Store => {
                if !shared.degraded.load(Ordering::SeqCst) {
                    if shared.redis.release_held(reservation).await.is_ok() {
                        return Ok(());
                    }
                    self.degrade();
                }
                lock(&shared.state)
                    .pending
                    .held
                    .push((reservation.clone(), None));
            }
            Hold::Local => lock(&shared.state).local().release_now(reservation),
            Hold::Unheld => {}
        }
        Ok(())
    }
}
