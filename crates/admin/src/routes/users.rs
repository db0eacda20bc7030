//! Operators' routes: users, their subscriptions and their keys (`/api/admin/...`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::account;
use crate::auth::{Caller, admin_label, presented_in};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{JsonBody, PathParam, QueryParams};
use crate::key_rules::{self, KeyChange, NewKeyRequest};
use crate::lifecycle::{self, DeletedUser};
use crate::model::{Envelope, PlanRef};
use crate::ops::{self, IssuedKey, KeyOut, NewUserRequest};
use crate::render::iso;
use crate::state::AdminState;

#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    /// The plan the user is on now (their subscription's, or the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The subscription's status; absent without a subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_day: Option<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsersData {
    pub users: Vec<UserOut>,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetail {
    pub user: UserOut,
    pub keys: Vec<KeyOut>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// 1 to 1000 (default 100).
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    pub plan_id: PlanRef,
    /// Day of the month (1–31) the billing periods start on; default 1.
    pub anchor_day: Option<u8>,
    /// `monthly` (default) or `yearly`.
    pub billing_cycle: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmailChange {
    /// Where the user's alerts are mailed (`[alerts.email]`); `null` stops mailing them.
    pub email: Option<String>,
}

async fn user_out(state: &AdminState, user: tollgate_ledger::User) -> Result<UserOut> {
    let config = state.config();
    let account = account::load(&state.ledger, &config, &user.id).await.ok();
    Ok(UserOut {
        plan_id: account.as_ref().map(|a| a.plan.id.clone()),
        subscription_status: account
            .as_ref()
            .and_then(|a| a.subscription.as_ref().map(|s| s.status.clone())),
        anchor_day: account.as_ref().map(|a| a.anchor.get()),
        id: user.id,
        display_name: user.display_name,
        email: user.email,
        created_at: iso(user.created_at),
        disabled_at: user.disabled_at.map(iso),
    })
}

/// Users in order of creation.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Envelope<UsersData>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_users(
    caller: Caller,
    State(state): State<AdminState>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<Envelope<UsersData>>> {
    caller.require_admin()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let offset = q.offset.unwrap_or(0);
    let mut users = Vec::new();
    for user in state.ledger.users(limit, offset).await? {
        users.push(user_out(&state, user).await?);
    }
    Ok(Json(Envelope::ok(UsersData {
        users,
        limit,
        offset,
    })))
}

/// Creates a user, optionally on a plan. 409 if the id is taken.
#[utoipa::path(post, path = "/api/admin/users", tag = "admin", request_body = NewUserRequest,
    security(("bearer" = [])),
    responses((status = 201, body = Envelope<UserOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    caller: Caller,
    State(state): State<AdminState>,
    JsonBody(req): JsonBody<NewUserRequest>,
) -> Result<(StatusCode, Json<Envelope<UserOut>>)> {
    caller.require_admin()?;
    let config = state.config();
    let user = ops::create_user(&state.ledger, &config, &req).await?;
    Ok((
        StatusCode::CREATED,
        Json(Envelope::ok(user_out(&state, user).await?)),
    ))
}

/// A user with their plan and keys.
#[utoipa::path(get, path = "/api/admin/users/{user_id}", tag = "admin",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserDetail>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<Envelope<UserDetail>>> {
    caller.require_admin()?;
    let config = state.config();
    let Some(user) = state.ledger.user(&user_id).await? else {
        return Err(AdminError::not_found_user(&user_id));
    };
    let keys = ops::list_keys(&state.ledger, &config, &user_id).await?;
    Ok(Json(Envelope::ok(UserDetail {
        user: user_out(&state, user).await?,
        keys,
    })))
}

/// Erases the user (GDPR): every row about them — keys, subscription, alerts and their pending
/// deliveries, usage rows, summaries, billing history, job credits — and their counters in the
/// counter store. The erasure is recorded with who asked (the admin token's fingerprint) and
/// when, without the user. The usage of calls in flight, queued or spooled at that moment is
/// dropped when it reaches the ledger. 409 for a user with static keys in gateway.toml.
#[utoipa::path(delete, path = "/api/admin/users/{user_id}", tag = "admin",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<DeletedUser>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn delete_user(
    caller: Caller,
    State(state): State<AdminState>,
    headers: HeaderMap,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<Envelope<DeletedUser>>> {
    caller.require_admin()?;
    let config = state.config();
    let erased_by = presented_in(&headers).map_or_else(|| "admin".to_owned(), admin_label);
    let mut deleted = lifecycle::delete(&state.ledger, &config, &user_id, &erased_by).await?;
    forget_cached_keys(&state);
    // After the ledger: a counter rebuilt from now on reads the erased ledger.
    deleted.counters = match &state.forget_counters {
        Some(forget) => match forget(user_id.clone()).await {
            Ok(()) => "forgotten".to_owned(),
            Err(why) => {
                tracing::warn!(erasure = deleted.erasure_id, error = %why, "an erased user's counters could not be deleted");
                format!("not deleted: {why}")
            }
        },
        None => "not deleted: this admin server runs without the gateway's counters".to_owned(),
    };
    Ok(Json(Envelope::ok(deleted)))
}

/// Everything Tollgate holds about the user (GDPR access and portability), as one JSON
/// document, streamed as it is read: profile, subscription, keys (never a key or its hash),
/// usage summaries, alerts, billing history, job credits and every usage log row
/// (`docs/privacy.md`, "The export document"). 404 for a user nothing knows.
#[utoipa::path(get, path = "/api/admin/users/{user_id}/export", tag = "admin",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The export document (`format`: `tollgate.user-export.v1`)",
        content_type = "application/json"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn export_user(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
) -> Result<Response> {
    caller.require_admin()?;
    let config = state.config();
    lifecycle::check_exists(&state.ledger, &config, &user_id).await?;
    Ok(crate::export::stream(state.ledger.clone(), user_id))
}

/// Disables the user: the gateway refuses their calls with 403 `user_disabled` (this instance
/// from the next request, others once their cached key lookup expires,
/// `proxy.key_cache_ttl_ms`). Their keys, plan and usage are kept. 409 for a user with static
/// keys in gateway.toml.
#[utoipa::path(post, path = "/api/admin/users/{user_id}/disable", tag = "admin",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserOut>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn disable_user(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<Envelope<UserOut>>> {
    set_disabled(caller, state, user_id, true).await
}

/// Enables a disabled user again, with the keys they had.
#[utoipa::path(post, path = "/api/admin/users/{user_id}/enable", tag = "admin",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserOut>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn enable_user(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<Envelope<UserOut>>> {
    set_disabled(caller, state, user_id, false).await
}

async fn set_disabled(
    caller: Caller,
    state: AdminState,
    user_id: String,
    disabled: bool,
) -> Result<Json<Envelope<UserOut>>> {
    caller.require_admin()?;
    let config = state.config();
    let user = lifecycle::set_disabled(&state.ledger, &config, &user_id, disabled).await?;
    forget_cached_keys(&state);
    Ok(Json(Envelope::ok(user_out(&state, user).await?)))
}

/// The user as they are now, the answer of the routes that change one.
async fn user_answer(state: &AdminState, user_id: &str) -> Result<Json<Envelope<UserOut>>> {
    let user = state
        .ledger
        .user(user_id)
        .await?
        .ok_or_else(|| AdminError::not_found_user(user_id))?;
    Ok(Json(Envelope::ok(user_out(state, user).await?)))
}

/// Has the gateway this admin server runs in read its keys afresh, so that a change to a key or
/// its user applies from the next request.
fn forget_cached_keys(state: &AdminState) {
    if let Some(hook) = &state.on_key_revoked {
        hook();
    }
}

/// Assigns or changes the user's plan (and billing anchor day).
#[utoipa::path(put, path = "/api/admin/users/{user_id}/subscription", tag = "admin",
    params(("user_id" = String, Path)), request_body = PlanChange, security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn set_plan(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    JsonBody(req): JsonBody<PlanChange>,
) -> Result<Json<Envelope<UserOut>>> {
    caller.require_admin()?;
    let config = state.config();
    ops::set_plan(
        &state.ledger,
        &config,
        &user_id,
        &req.plan_id,
        req.billing_cycle.as_deref(),
        req.anchor_day,
    )
    .await?;
    user_answer(&state, &user_id).await
}

/// Sets or clears the address the user's alerts are mailed to.
#[utoipa::path(put, path = "/api/admin/users/{user_id}/email", tag = "admin",
    params(("user_id" = String, Path)), request_body = EmailChange, security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn set_email(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    JsonBody(req): JsonBody<EmailChange>,
) -> Result<Json<Envelope<UserOut>>> {
    caller.require_admin()?;
    if let Some(email) = &req.email {
        ops::check_email(email)?;
    }
    if !state
        .ledger
        .set_user_email(&user_id, req.email.as_deref())
        .await?
    {
        return Err(AdminError::not_found_user(&user_id));
    }
    user_answer(&state, &user_id).await
}

/// The user's keys (never the keys themselves).
#[utoipa::path(get, path = "/api/admin/users/{user_id}/keys", tag = "admin",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<Vec<KeyOut>>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_keys(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<Envelope<Vec<KeyOut>>>> {
    caller.require_admin()?;
    let config = state.config();
    Ok(Json(Envelope::ok(
        ops::list_keys(&state.ledger, &config, &user_id).await?,
    )))
}

/// Issues a key for the user, optionally with an expiry, a provider list and model patterns of
/// its own (400 naming the field for a bad one); the answer is the only time the key is shown.
#[utoipa::path(post, path = "/api/admin/users/{user_id}/keys", tag = "admin",
    params(("user_id" = String, Path)), request_body = NewKeyRequest, security(("bearer" = [])),
    responses((status = 201, body = Envelope<IssuedKey>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn issue_key(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(user_id): PathParam<String>,
    JsonBody(req): JsonBody<NewKeyRequest>,
) -> Result<(StatusCode, Json<Envelope<IssuedKey>>)> {
    caller.require_admin()?;
    let config = state.config();
    let issued = ops::issue_key(&state.ledger, &config, &user_id, &req).await?;
    Ok((StatusCode::CREATED, Json(Envelope::ok(issued))))
}

/// Changes a key's name, expiry, providers or model patterns: a field given replaces the key's,
/// `null` clears it, a field left out is kept. The gateway this admin server runs in applies the
/// change from the next request; other instances once their cached lookup expires
/// (`proxy.key_cache_ttl_ms`). 409 for a revoked key.
#[utoipa::path(patch, path = "/api/admin/keys/{key_id}", tag = "admin",
    params(("key_id" = String, Path)), request_body = KeyChange, security(("bearer" = [])),
    responses((status = 200, body = Envelope<KeyOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn change_key(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(key_id): PathParam<String>,
    JsonBody(change): JsonBody<KeyChange>,
) -> Result<Json<Envelope<KeyOut>>> {
    caller.require_admin()?;
    let changed = key_rules::change_key(&state.ledger, &key_id, &change).await?;
    forget_cached_keys(&state);
    Ok(Json(Envelope::ok(changed)))
}

/// Revokes a key. The gateway this admin server runs in refuses it from the next request; other
/// instances once their cached lookup expires (`proxy.key_cache_ttl_ms`).
#[utoipa::path(delete, path = "/api/admin/keys/{key_id}", tag = "admin",
    params(("key_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<KeyOut>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn revoke_key(
    caller: Caller,
    State(state): State<AdminState>,
    PathParam(key_id): PathParam<String>,
) -> Result<Json<Envelope<KeyOut>>> {
    caller.require_admin()?;
    let revoked = ops::revoke_key(&state.ledger, &key_id).await?;
    forget_cached_keys(&state);
    Ok(Json(Envelope::ok(revoked)))
}
