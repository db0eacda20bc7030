//! Disabling, enabling and deleting users, shared by the admin API and the `tollgate` CLI.
//!
//! Disabling keeps everything (keys, subscription, usage) and only makes the gateway refuse the
//! user's calls (403 `user_disabled`), so that enabling the user again restores them as they
//! were. Deleting is the erase path: the user's row, keys, subscription, alerts (and with them
//! their pending webhook and e-mail deliveries), usage rows, summaries, billing history and job
//! credits are all deleted in one transaction and the erasure recorded without naming the user
//! ([`Ledger::erase_user`]); the caller then forgets the user's counters in the counter store.
//! `docs/privacy.md` says what stays behind, and for how long.
//!
//! Both refuse a user who has static `[[keys]]` in gateway.toml: those keys are the
//! configuration's, the gateway checks them without reading the ledger, and only removing them
//! from the file stops them.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;
use tollgate_config::Config;
use tollgate_ledger::{Ledger, User};
use utoipa::ToSchema;

use crate::account;
use crate::error::{AdminError, Result};

/// What deleting a user removed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeletedUser {
    pub user_id: String,
    /// Rows deleted, by table.
    pub deleted_rows: BTreeMap<String, u64>,
    /// The erasure's number in the ledger's record of erasures (`user_erasures`), which keeps
    /// who and when but not the user.
    pub erasure_id: i64,
    pub erased_at: String,
    /// The admin token's fingerprint (`admin:` and 12 hex digits of its SHA-256), or `cli`.
    pub erased_by: String,
    /// `forgotten` when the user's counters were deleted from the counter store; otherwise why
    /// not (Redis unreachable, or in-process counters of a gateway this command is not).
    pub counters: String,
}

/// 404 for a user nothing knows, 409 for one with static keys.
async fn check_managed(ledger: &Ledger, config: &Config, user_id: &str) -> Result<()> {
    if !account::exists(ledger, config, user_id).await? {
        return Err(AdminError::not_found_user(user_id));
    }
    if config.keys.iter().any(|k| k.user == user_id) {
        return Err(AdminError::Conflict(format!(
            "user {user_id:?} has static keys in gateway.toml ([[keys]]), which the gateway \
             checks without the ledger; remove them from the file and reload first"
        )));
    }
    Ok(())
}

/// Disables (`disabled` true) or enables the user. Disabling a user already disabled keeps the
/// time they were disabled.
pub async fn set_disabled(
    ledger: &Ledger,
    config: &Config,
    user_id: &str,
    disabled: bool,
) -> Result<User> {
    check_managed(ledger, config, user_id).await?;
    // A user known only by a subscription has no row yet; the flag lives on the row.
    ledger.create_user(user_id, None, None).await?;
    let user = ledger
        .user(user_id)
        .await?
        .ok_or_else(|| AdminError::not_found_user(user_id))?;
    if user.disabled_at.is_some() == disabled {
        return Ok(user);
    }
    let at = disabled.then(Utc::now);
    if !ledger.set_user_disabled(user_id, at).await? {
        return Err(AdminError::not_found_user(user_id));
    }
    ledger
        .user(user_id)
        .await?
        .ok_or_else(|| AdminError::not_found_user(user_id))
}

/// Deletes the user and every row about them, recording the erasure as done by `erased_by`.
/// The answer's `counters` is left for the caller, who forgets them.
pub async fn delete(
    ledger: &Ledger,
    config: &Config,
    user_id: &str,
    erased_by: &str,
) -> Result<DeletedUser> {
    check_managed(ledger, config, user_id).await?;
    let erasure = ledger.erase_user(user_id, erased_by).await?;
    Ok(DeletedUser {
        user_id: user_id.to_owned(),
        deleted_rows: erasure
            .deleted_rows
            .into_iter()
            .map(|(table, rows)| (table.to_owned(), rows))
            .collect(),
        erasure_id: erasure.id,
        erased_at: crate::render::iso(erasure.erased_at),
        erased_by: erasure.erased_by,
        counters: String::new(),
    })
}

/// 404 unless something knows the user (the export's precondition).
pub async fn check_exists(ledger: &Ledger, config: &Config, user_id: &str) -> Result<()> {
    if account::exists(ledger, config, user_id).await? {
        Ok(())
    } else {
        Err(AdminError::not_found_user(user_id))
    }
}
