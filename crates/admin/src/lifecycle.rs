//! Disabling, enabling and deleting users, shared by the admin API and the `tollgate` CLI.
//!
//! Disabling keeps everything (keys, subscription, usage) and only makes the gateway refuse the
//! user's calls (403 `user_disabled`), so that enabling the user again restores them as they
//! were. Deleting is the erase path: the user's row, keys, subscription, alerts, usage rows,
//! summaries and billing history are all deleted in one transaction ([`Ledger::erase_user`]),
//! because usage rows name the user and what they called.
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

/// Deletes the user and every row about them.
pub async fn delete(ledger: &Ledger, config: &Config, user_id: &str) -> Result<DeletedUser> {
    check_managed(ledger, config, user_id).await?;
    let deleted = ledger.erase_user(user_id).await?;
    Ok(DeletedUser {
        user_id: user_id.to_owned(),
        deleted_rows: deleted
            .into_iter()
            .map(|(table, rows)| (table.to_owned(), rows))
            .collect(),
    })
}
