//! Alerts beyond the basic reads in `accounts`: raising a call's threshold crossings once each,
//! and claiming unsent alerts for delivery so that, with several gateway instances, each alert
//! is delivered by exactly one of them.
//!
//! Claiming is one UPDATE that moves an alert's lease into the future and names the claimant;
//! it only touches rows whose lease has passed, so two instances racing for the same row cannot
//! both win (SQLite serialises writers; PostgreSQL re-checks the condition on the locked row,
//! and `SKIP LOCKED` spares the loser the wait). A failed attempt sets the lease to the time of
//! the next try, which is how the back-off survives restarts and moves between instances.
//! Webhooks and e-mail are two channels with a delivery state each, claimed the same way.

use chrono::{DateTime, Utc};
use tollgate_domain::Crossing;

use crate::Ledger;
use crate::accounts::{ALERT_COLUMNS, Alert, NewAlert};
use crate::db::{Db, on_db};
use crate::error::{LedgerError, Result};

/// An alert claimed for delivery, with how many attempts (this one included) it has had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedAlert {
    pub alert: Alert,
    pub attempt: u32,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    alert: Alert,
    delivery_attempts: i64,
}

impl Ledger {
    /// Stores each crossing of a settled call as an alert of `user_id` in `billing_period`,
    /// once per (user, limit, threshold, period) whatever the number of callers or instances;
    /// returns the crossings this call stored (the others had been raised already).
    pub async fn raise(
        &self,
        user_id: &str,
        billing_period: &str,
        crossings: &[Crossing],
    ) -> Result<Vec<Crossing>> {
        let mut stored = Vec::new();
        for c in crossings {
            let alert = NewAlert {
                user_id: user_id.to_owned(),
                billing_period: billing_period.to_owned(),
                limit_key: c.limit_key(),
                threshold_percentage: u32::from(c.threshold_pct),
                alert_type: c.alert_type.to_owned(),
                provider: c.provider(),
                title: c.title.clone(),
                message: c.message.clone(),
                severity: c.severity.as_str().to_owned(),
            };
            if self.insert_alert_once(&alert).await? {
                stored.push(c.clone());
            }
        }
        Ok(stored)
    }

    /// How many alerts the user has (all of them, not one page).
    pub async fn alert_count(&self, user_id: &str) -> Result<u64> {
        let (n,): (i64,) = on_db!(&self.db, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM usage_alerts WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(pool)
            .await
            .map_err(LedgerError::db("counting alerts"))?);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One alert by id, whoever it belongs to.
    pub async fn alert(&self, alert_id: i64) -> Result<Option<Alert>> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM usage_alerts WHERE id = $1"))
            .bind(alert_id)
            .fetch_optional(pool)
            .await
            .map_err(LedgerError::db("reading an alert"))?))
    }

    /// The user's alerts of one billing period, newest first.
    pub async fn period_alerts(
        &self,
        user_id: &str,
        billing_period: &str,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<Alert>> {
        let filter = if unread_only {
            " AND is_read = FALSE"
        } else {
            ""
        };
        Ok(on_db!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM usage_alerts \
             WHERE user_id = $1 AND billing_period = $2{filter} \
             ORDER BY created_at DESC, id DESC LIMIT $3"))
            .bind(user_id)
            .bind(billing_period)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("reading a period's alerts"))?))
    }

    /// Claims up to `max` unsent alerts whose lease has passed, for `owner` (an instance id),
    /// until `now + lease_ms`. Only the claimant may then record the delivery.
    pub async fn claim_unsent_alerts(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_ms: u64,
        max: u32,
    ) -> Result<Vec<ClaimedAlert>> {
        self.claim_alerts(Channel::Webhook, owner, now, lease_ms, max)
            .await
    }

    /// Records the delivery of an alert claimed by `owner`; false if the claim was lost (the
    /// lease ran out and another instance claimed it) or the alert was already marked sent.
    pub async fn mark_alert_delivered(&self, alert_id: i64, owner: &str) -> Result<bool> {
        self.mark_delivered(Channel::Webhook, alert_id, owner).await
    }

    /// Gives a failed delivery back, to be claimed again from `retry_at` (by any instance).
    pub async fn release_alert_claim(
        &self,
        alert_id: i64,
        owner: &str,
        retry_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool> {
        self.release_claim(Channel::Webhook, alert_id, owner, retry_at, error)
            .await
    }

    /// Claims up to `max` alerts not yet mailed whose lease has passed, like
    /// [`Ledger::claim_unsent_alerts`] for webhooks.
    pub async fn claim_unmailed_alerts(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_ms: u64,
        max: u32,
    ) -> Result<Vec<ClaimedAlert>> {
        self.claim_alerts(Channel::Email, owner, now, lease_ms, max)
            .await
    }

    /// Records that an alert claimed by `owner` was mailed; false if the claim was lost.
    pub async fn mark_alert_mailed(&self, alert_id: i64, owner: &str) -> Result<bool> {
        self.mark_delivered(Channel::Email, alert_id, owner).await
    }

    /// Gives a failed mailing back, to be claimed again from `retry_at`.
    pub async fn release_alert_mail_claim(
        &self,
        alert_id: i64,
        owner: &str,
        retry_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool> {
        self.release_claim(Channel::Email, alert_id, owner, retry_at, error)
            .await
    }

    /// Whether the alert was mailed, and the last mailing error (for operators and tests).
    pub async fn alert_mail_state(&self, alert_id: i64) -> Result<Option<(bool, Option<String>)>> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(
            "SELECT email_sent, email_last_error FROM usage_alerts WHERE id = $1")
            .bind(alert_id)
            .fetch_optional(pool)
            .await
            .map_err(LedgerError::db("reading an alert's mail state"))?))
    }

    async fn claim_alerts(
        &self,
        channel: Channel,
        owner: &str,
        now: DateTime<Utc>,
        lease_ms: u64,
        max: u32,
    ) -> Result<Vec<ClaimedAlert>> {
        let Columns {
            sent,
            attempts,
            lease,
            claimed_by,
            ..
        } = channel.columns();
        let now_ms = now.timestamp_millis();
        let until_ms = now_ms.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
        let lock = match &self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let pick = format!(
            "SELECT id FROM usage_alerts WHERE {sent} = FALSE \
             AND {lease} <= $3 ORDER BY id LIMIT $4{lock}"
        );
        let sql = format!(
            "UPDATE usage_alerts SET {lease} = $1, {claimed_by} = $2, \
             {attempts} = {attempts} + 1 \
             WHERE id IN ({pick}) AND {sent} = FALSE AND {lease} <= $3 \
             RETURNING {ALERT_COLUMNS}, {attempts} AS delivery_attempts"
        );
        let rows: Vec<ClaimedRow> = on_db!(&self.db, pool => sqlx::query_as(&sql)
            .bind(until_ms)
            .bind(owner)
            .bind(now_ms)
            .bind(i64::from(max))
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("claiming alerts for delivery"))?);
        let mut claimed: Vec<ClaimedAlert> = rows
            .into_iter()
            .map(|r| ClaimedAlert {
                alert: r.alert,
                attempt: u32::try_from(r.delivery_attempts).unwrap_or(u32::MAX),
            })
            .collect();
        claimed.sort_by_key(|c| c.alert.id);
        Ok(claimed)
    }

    async fn mark_delivered(&self, channel: Channel, alert_id: i64, owner: &str) -> Result<bool> {
        let Columns {
            sent,
            sent_at,
            claimed_by,
            last_error,
            ..
        } = channel.columns();
        let sql = format!(
            "UPDATE usage_alerts SET {sent} = TRUE, {sent_at} = $3, {last_error} = NULL \
             WHERE id = $1 AND {claimed_by} = $2 AND {sent} = FALSE"
        );
        let done = on_db!(&self.db, pool => sqlx::query(&sql)
            .bind(alert_id)
            .bind(owner)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(LedgerError::db("recording an alert's delivery"))?
            .rows_affected());
        Ok(done == 1)
    }

    async fn release_claim(
        &self,
        channel: Channel,
        alert_id: i64,
        owner: &str,
        retry_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool> {
        let Columns {
            sent,
            lease,
            claimed_by,
            last_error,
            ..
        } = channel.columns();
        let sql = format!(
            "UPDATE usage_alerts SET {lease} = $3, {claimed_by} = NULL, {last_error} = $4 \
             WHERE id = $1 AND {claimed_by} = $2 AND {sent} = FALSE"
        );
        let done = on_db!(&self.db, pool => sqlx::query(&sql)
            .bind(alert_id)
            .bind(owner)
            .bind(retry_at.timestamp_millis())
            .bind(error)
            .execute(pool)
            .await
            .map_err(LedgerError::db("releasing an alert claim"))?
            .rows_affected());
        Ok(done == 1)
    }
}

/// A way alerts leave the gateway; each has its own delivery state in `usage_alerts`, so one
/// channel failing neither delays nor repeats the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Webhook,
    Email,
}

/// The delivery-state columns of one channel.
struct Columns {
    sent: &'static str,
    sent_at: &'static str,
    attempts: &'static str,
    lease: &'static str,
    claimed_by: &'static str,
    last_error: &'static str,
}

impl Channel {
    fn columns(self) -> Columns {
        match self {
            Channel::Webhook => Columns {
                sent: "is_sent",
                sent_at: "sent_at",
                attempts: "delivery_attempts",
                lease: "delivery_lease_until_ms",
                claimed_by: "delivery_claimed_by",
                last_error: "delivery_last_error",
            },
            Channel::Email => Columns {
                sent: "email_sent",
                sent_at: "email_sent_at",
                attempts: "email_attempts",
                lease: "email_lease_until_ms",
                claimed_by: "email_claimed_by",
                last_error: "email_last_error",
            },
        }
    }
}
