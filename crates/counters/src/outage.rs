//! What a resilient store keeps in memory to get through a Redis outage: the standings this
//! instance last saw in Redis, the in-process counters it enforces with meanwhile (`local`
//! policy), and the operations it owes Redis once it is back.
//!
//! Pure state behind the resilient store's lock; no I/O, so it is unit-tested directly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tollgate_domain::{Amount, BillingPeriod, LimitKey, Provider};

use crate::{MemoryStore, Reservation, ReserveRequest, Standings};

/// Beyond this many remembered user-periods the memory is cleared rather than grown: a user
/// not seen since is then enforced locally from zero, as after a restart.
const MAX_REMEMBERED: usize = 1_000_000;

type Scope = (String, String);

/// Operations owed to Redis: settles and releases of holds it has, and use to count.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Reservations held in Redis whose settle (with the use) or release (`None`) could not
    /// reach it, in order. Replayed as they are: settles are idempotent in Redis, so one that
    /// timed out but ran is not counted twice.
    pub held: Vec<(Reservation, Option<Amount>)>,
    /// Use counted while Redis was unreachable, summed per user, key, period and provider.
    pub usage: HashMap<(String, String, BillingPeriod, Provider), Amount>,
}

impl Pending {
    pub fn add_usage(
        &mut self,
        user: &str,
        key: &str,
        period: BillingPeriod,
        provider: Provider,
        a: Amount,
    ) {
        let sum = self
            .usage
            .entry((user.to_owned(), key.to_owned(), period, provider))
            .or_default();
        sum.calls = sum.calls.saturating_add(a.calls);
        sum.tokens = sum.tokens.saturating_add(a.tokens);
        sum.cost_nanousd = sum.cost_nanousd.saturating_add(a.cost_nanousd);
    }

    pub fn len(&self) -> usize {
        self.held.len() + self.usage.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts back what a replay did not get through, ahead of what arrived meanwhile.
    pub fn restore(&mut self, mut rest: Pending) {
        rest.held.append(&mut self.held);
        self.held = rest.held;
        for ((user, key, period, provider), amount) in rest.usage {
            self.add_usage(&user, &key, period, provider, amount);
        }
    }
}

/// What one reserve through Redis showed, and when it was sent and answered: its script ran
/// somewhere in between.
#[derive(Debug)]
struct Sighting {
    answered: Instant,
    /// The key of the call whose reserve this was: its own counters are among the standings.
    key: String,
    standings: Standings,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The standings of every counter of a user-period, as the latest reserves through Redis
    /// saw them. Replies are handled in whatever order their tasks run, not the order their
    /// scripts ran in, so the last one handled may be the older: every reply that could be the
    /// latest is kept — those answered after the newest-sent one was sent — and none answered
    /// before it, which are superseded. That is one entry, or a few while reserves overlap.
    seen: HashMap<Scope, Vec<Sighting>>,
    /// The counters enforced while Redis is unreachable; new for each outage.
    local: Arc<MemoryStore>,
    /// User-periods whose local counters have been seeded during this outage.
    seeded: HashSet<Scope>,
    /// Keys (user-period and key id) whose local counters have been seeded during this outage.
    seeded_keys: HashSet<(Scope, String)>,
    pub pending: Pending,
}

impl State {
    /// Records what a reserve `sent` at that instant saw (call it as the reply arrives).
    pub fn remember(&mut self, request: &ReserveRequest<'_>, sent: Instant, seen: Standings) {
        let (user, period) = (request.user, request.period);
        let answered = Instant::now();
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.clear();
        }
        let sightings = self
            .seen
            .entry((user.to_owned(), period.key()))
            .or_default();
        // Answered before this reserve was sent: their scripts ran before this one's.
        sightings.retain(|s| s.answered >= sent);
        sightings.push(Sighting {
            answered,
            key: request.key.to_owned(),
            standings: seen,
        });
    }

    /// Starts an outage: local counters afresh, seeded lazily from what was last seen.
    pub fn begin_outage(&mut self) {
        self.local = Arc::new(MemoryStore::new());
        self.seeded.clear();
        self.seeded_keys.clear();
    }

    /// The local counters, with the request's user-period seeded from the standings last seen
    /// in Redis. Amounts other instances (or this one) held then are taken as used: whether
    /// those calls have finished, and with how much, cannot be known without Redis.
    pub fn local_for(&mut self, request: &ReserveRequest<'_>) -> Arc<MemoryStore> {
        let period_key = request.period.key();
        let scope = (request.user.to_owned(), period_key);
        // Per-minute windows start afresh: they are over within the minute anyway.
        if !self.seeded.contains(&scope) {
            for (key, used) in
                self.highest_seen(&scope, |_, key| !key.is_keys() && !key.is_per_minute())
            {
                self.local
                    .seed_used(request.user, request.period, key, used);
            }
            self.seeded.insert(scope.clone());
        }
        if !request.key.is_empty() {
            let key_scope = (scope, request.key.to_owned());
            if !self.seeded_keys.contains(&key_scope) {
                for (key, used) in self.highest_seen(&key_scope.0, |s, key| {
                    key.is_keys() && !key.is_per_minute() && s.key == request.key
                }) {
                    self.local
                        .seed_key_used(request.user, request.period, request.key, key, used);
                }
                self.seeded_keys.insert(key_scope);
            }
        }
        Arc::clone(&self.local)
    }

    /// Of the standings seen for `scope` that `wanted` picks, the highest per counter (of
    /// replies that raced, the latest is among them), held amounts taken as used.
    fn highest_seen(
        &self,
        scope: &Scope,
        wanted: impl Fn(&Sighting, LimitKey) -> bool,
    ) -> BTreeMap<LimitKey, u64> {
        let mut highest: BTreeMap<LimitKey, u64> = BTreeMap::new();
        for sighting in self.seen.get(scope).into_iter().flatten() {
            for (key, standing) in &sighting.standings {
                if wanted(sighting, *key) {
                    let used = standing.used.saturating_add(standing.reserved);
                    let entry = highest.entry(*key).or_default();
                    *entry = (*entry).max(used);
                }
            }
        }
        highest
    }

    /// The local counters as they are (for settling and releasing local holds).
    pub fn local(&self) -> Arc<MemoryStore> {
        Arc::clone(&self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reserved;
    use chrono::{DateTime, Utc};
    use tollgate_domain::{AnchorDay, Limit, LimitKey, Standing};

    fn now() -> DateTime<Utc> {
        "2026-11-28T12:00:00Z".parse().unwrap()
    }

    fn period() -> BillingPeriod {
        BillingPeriod::containing(now(), AnchorDay::default())
    }

    #[test]
    fn local_counters_start_from_what_redis_last_showed() {
        let mut state = State::default();
        let limits = ten_calls();
        state.remember(
            &one_call(&limits),
            Instant::now(),
            vec![(
                LimitKey::TotalCalls,
                Standing {
                    used: 6,
                    reserved: 2,
                },
            )],
        );
        state.begin_outage();
        let request = one_call(&limits);
        let local = state.local_for(&request);
        let admitted = (0..5)
            .filter(|_| matches!(local.reserve_now(request), Reserved::Admitted(_)))
            .count();
        // 6 used + 2 held elsewhere leaves 2 of 10.
        assert_eq!(admitted, 2);
        // Seeding happens once per outage: later reservations keep their local holds.
        let again = state.local_for(&request);
        assert!(matches!(again.reserve_now(request), Reserved::Denied(_)));
        // A user never seen is enforced from zero.
        let other = ReserveRequest {
            user: "v",
            ..request
        };
        assert!(matches!(
            state.local_for(&other).reserve_now(other),
            Reserved::Admitted(_)
        ));
    }

    fn ten_calls() -> [Limit; 1] {
        [Limit {
            key: LimitKey::TotalCalls,
            max: 10,
        }]
    }

    /// One call of user `u` against `limits`.
    fn one_call(limits: &[Limit]) -> ReserveRequest<'_> {
        ReserveRequest {
            user: "u",
            key: "",
            period: period(),
            provider: Provider::Serper,
            limits,
            amount: Amount {
                calls: 1,
                ..Amount::default()
            },
            now: now(),
            expires_at: now() + chrono::Duration::seconds(60),
        }
    }

    fn calls(used: u64, reserved: u64) -> Standings {
        vec![(LimitKey::TotalCalls, Standing { used, reserved })]
    }

    /// How many calls a limit of 10 still admits locally once Redis is gone.
    fn admitted_locally(state: &mut State) -> usize {
        state.begin_outage();
        let limits = ten_calls();
        let request = one_call(&limits);
        let local = state.local_for(&request);
        (0..20)
            .filter(|_| matches!(local.reserve_now(request), Reserved::Admitted(_)))
            .count()
    }

    #[test]
    fn replies_that_raced_count_with_the_higher_standing() {
        // Two reserves in flight together; the one whose script ran last (7 held) is handled
        // first, the other (6 held) last: the local counters must not start from 6.
        let mut state = State::default();
        let both_sent = Instant::now();
        state.remember(&one_call(&[]), both_sent, calls(0, 7));
        state.remember(&one_call(&[]), both_sent, calls(0, 6));
        assert_eq!(admitted_locally(&mut state), 3);
    }

    #[test]
    fn a_reply_sent_after_another_was_answered_supersedes_it() {
        // Calls released between the two: the later reserve saw fewer held, and counts alone.
        let mut state = State::default();
        state.remember(&one_call(&[]), Instant::now(), calls(0, 7));
        state.remember(&one_call(&[]), Instant::now(), calls(2, 2));
        assert_eq!(admitted_locally(&mut state), 6);
    }

    #[test]
    fn pending_use_is_summed_and_restored_in_order() {
        let mut pending = Pending::default();
        let one = Amount {
            calls: 1,
            tokens: 10,
            cost_nanousd: 100,
        };
        pending.add_usage("u", "k", period(), Provider::OpenAi, one);
        pending.add_usage("u", "k", period(), Provider::OpenAi, one);
        assert_eq!(pending.len(), 1);
        let taken = std::mem::take(&mut pending);
        pending.add_usage("u", "k", period(), Provider::OpenAi, one);
        pending.restore(taken);
        assert_eq!(
            pending.usage[&("u".to_owned(), "k".to_owned(), period(), Provider::OpenAi)],
            Amount {
                calls: 3,
                tokens: 30,
                cost_nanousd: 300
            }
        );
    }
}
