//! Erasing a user (GDPR), and keeping them erased.
//!
//! [`Ledger::erase_user`] deletes every row about the user from every table that holds one, in
//! one transaction, and records the erasure in `user_erasures`: who erased, when, how many rows,
//! and a reference to the user that cannot be turned back into their id (the SHA-256 of a
//! per-install salt and the id). No personal data stays behind.
//!
//! Calls of the user still in flight at that moment, their events on the ledger's queue or in
//! its spool, end up in a batch after the erase. The batch writer looks up the users of each
//! batch in `user_erasures` and drops the events of calls that began at or before their user's
//! erasure (`occurred_at - latency_ms`, the call's start), so they never recreate the user's
//! rows; a user created again under the same id afterwards is recorded as usual. On PostgreSQL
//! the writer holds `user_erasures` in SHARE mode for its transaction and an erase writes its
//! record first, so a batch either sees the erasure or is committed before the erase deletes its
//! rows; SQLite runs one writing transaction at a time.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::Ledger;
use crate::db::on_db;
use crate::error::{LedgerError, Result};
use crate::event::UsageEvent;

/// The tables holding a user's rows, and the column naming the user.
pub(crate) const USER_TABLES: [(&str, &str); 9] = [
    ("api_usage_logs", "user_id"),
    ("usage_summary_providers", "user_id"),
    ("usage_summaries", "user_id"),
    ("usage_alerts", "user_id"),
    ("billing_history", "user_id"),
    ("job_credits", "user_id"),
    ("api_keys", "user_id"),
    ("user_subscriptions", "user_id"),
    ("users", "id"),
];

/// The record of one erasure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// The erasure's number in `user_erasures`.
    pub id: i64,
    /// An admin token's fingerprint, or `cli`.
    pub erased_by: String,
    pub erased_at: DateTime<Utc>,
    /// Rows deleted, by table.
    pub deleted_rows: BTreeMap<&'static str, u64>,
}

/// The reference an erasure records for `user_id`: hex SHA-256 of the install's salt, a NUL
/// and the id.
pub(crate) fn user_ref(salt: &str, user_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(salt.as_bytes());
    hash.update([0]);
    hash.update(user_id.as_bytes());
    hex::encode(hash.finalize())
}

/// When the call of `event` began: what an erasure is compared with.
pub(crate) fn call_started(event: &UsageEvent) -> DateTime<Utc> {
    let latency = chrono::Duration::milliseconds(i64::try_from(event.latency_ms).unwrap_or(0));
    event.occurred_at - latency
}

/// Whether `event` is of a call that began at or before its user's latest erasure, given the
/// erasures of the batch's users (by user id).
pub(crate) fn is_erased(event: &UsageEvent, erased: &HashMap<&str, DateTime<Utc>>) -> bool {
    erased
        .get(event.user_id.as_str())
        .is_some_and(|at| call_started(event) <= *at)
}

impl Ledger {
    /// Deletes every row about `user_id` in one transaction and records the erasure as done by
    /// `erased_by` (no personal data: see the module's documentation). Events of the user's
    /// calls that began before now are dropped when they reach the writer later.
    pub async fn erase_user(&self, user_id: &str, erased_by: &str) -> Result<Erasure> {
        // Microseconds, as PostgreSQL keeps them: the time answered is the time stored.
        let erased_at = Utc::now().trunc_subsecs(6);
        let mut deleted_rows = BTreeMap::new();
        let id = on_db!(&self.db, pool => {
            let mut tx = pool
                .begin_with(self.db.begin_write())
                .await
                .map_err(LedgerError::db("beginning an erase"))?;
            let (salt,): (String,) = sqlx::query_as("SELECT salt FROM erasure_salt WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(LedgerError::db("reading the erasure salt"))?;
            // The record first: on PostgreSQL this waits for the batches being written and
            // holds new ones back until the erase commits (the writer's SHARE lock).
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO user_erasures (user_ref, erased_by, erased_at, rows_deleted) \
                 VALUES ($1, $2, $3, 0) RETURNING id")
                .bind(user_ref(&salt, user_id))
                .bind(erased_by)
                .bind(erased_at)
                .fetch_one(&mut *tx)
                .await
                .map_err(LedgerError::db("recording an erasure"))?;
            for (table, column) in USER_TABLES {
                let done = sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(LedgerError::db("erasing a user"))?;
                deleted_rows.insert(table, done.rows_affected());
            }
            let total: u64 = deleted_rows.values().sum();
            sqlx::query("UPDATE user_erasures SET rows_deleted = $2 WHERE id = $1")
                .bind(id)
                .bind(i64::try_from(total).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(LedgerError::db("recording an erasure"))?;
            tx.commit().await.map_err(LedgerError::db("committing an erase"))?;
            id
        });
        Ok(Erasure {
            id,
            erased_by: erased_by.to_owned(),
            erased_at,
            deleted_rows,
        })
    }

    /// When `user_id` was last erased, if ever.
    pub async fn erased_at(&self, user_id: &str) -> Result<Option<DateTime<Utc>>> {
        let at: Vec<(DateTime<Utc>,)> = on_db!(&self.db, pool => {
            let (salt,): (String,) = sqlx::query_as("SELECT salt FROM erasure_salt WHERE id = 1")
                .fetch_one(pool)
                .await
                .map_err(LedgerError::db("reading the erasure salt"))?;
            sqlx::query_as("SELECT erased_at FROM user_erasures WHERE user_ref = $1")
                .bind(user_ref(&salt, user_id))
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("reading erasures"))?
        });
        Ok(at.into_iter().map(|(at,)| at).max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_depends_on_the_salt_and_names_no_one() {
        let a = user_ref("salt-1", "alice");
        assert_eq!(a.len(), 64);
        assert!(!a.contains("alice"));
        assert_ne!(a, user_ref("salt-2", "alice"));
        assert_ne!(a, user_ref("salt-1", "alicf"));
        // The NUL keeps salt and id apart.
        assert_ne!(user_ref("ab", "c"), user_ref("a", "bc"));
    }
}
