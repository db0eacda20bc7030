//! Alerts of use whose settle was deferred while Redis was away: the store replays such use once
//! Redis is back, and the thresholds it crossed are raised then. The replay knows the user, not
//! the plan, so the plan of each user met while the store was degraded is remembered here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_counters::{Replayed, ResilientStore};

use crate::alerts::AlertRaiser;
use crate::snapshot::SnapshotCell;

/// Users whose settles were deferred during a Redis outage, with their plan. Bounded; a user
/// met again takes the plan of its latest call.
#[derive(Debug, Default)]
pub struct DeferredPlans {
    plans: Mutex<HashMap<String, String>>,
}

impl DeferredPlans {
    /// Past this many users the oldest knowledge is dropped (whole), and alerts of use deferred
    /// before that are not raised: an outage long enough to meet this many users is reported by
    /// its own metrics, and the thresholds are raised again when counters are next rebuilt from
    /// the ledger.
    const MAX_USERS: usize = 100_000;

    pub fn remember(&self, user: &str, plan: &str) {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if plans.get(user).is_some_and(|p| p == plan) {
            return;
        }
        if plans.len() >= Self::MAX_USERS {
            plans.clear();
        }
        plans.insert(user.to_owned(), plan.to_owned());
    }

    fn plan_of(&self, user: &str) -> Option<String> {
        self.plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
            .cloned()
    }
}

/// Raises, through `alerts`, the thresholds crossed by use `store` replays after an outage, under
/// the plans and thresholds of the snapshot current at the replay.
pub fn raise_on_replay(
    store: &ResilientStore,
    snapshots: Arc<SnapshotCell>,
    plans: Arc<DeferredPlans>,
    alerts: AlertRaiser,
) {
    store.on_replay(Arc::new(move |replayed: Replayed<'_>| {
        let Some(plan) = plans.plan_of(replayed.user) else {
            return;
        };
        let snapshot = snapshots.load();
        let config = &snapshot.config;
        let Some(limits) = config
            .plans
            .get(&plan)
            .and_then(|p| p.limits_for(replayed.provider).ok())
        else {
            return;
        };
        alerts.raise_crossed(
            replayed.user,
            replayed.period,
            &limits,
            &replayed.settled,
            replayed.actual,
            &config.alert_thresholds,
        );
    }));
}
