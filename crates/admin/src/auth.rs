//! Who is calling the admin API: an operator with an admin token, or a user with one of their
//! own Tollgate keys — which may read that user's own data and nothing of anyone else's.
//!
//! Credentials arrive as `Authorization: Bearer …` or `X-API-Key: …`. Admin tokens come from
//! the environment variable named by `[admin] token_env` and from `[admin] token_file`; they are
//! kept as SHA-256 hashes, and a presented token is hashed before it is compared, so the
//! comparison's timing can only reveal something about a hash. User keys are found by their
//! SHA-256 in the ledger's key table (not revoked) and among the static `[[keys]]`.

use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use tollgate_config::AdminSettings;

use crate::error::{AdminError, Result};
use crate::state::AdminState;

/// The hashes of the admin tokens.
#[derive(Clone, Debug, Default)]
pub struct AdminTokens {
    hashes: Vec<[u8; 32]>,
}

impl AdminTokens {
    /// Tokens given directly (tests, tools).
    pub fn new<I, S>(tokens: I) -> AdminTokens
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        AdminTokens {
            hashes: tokens
                .into_iter()
                .filter(|t| !t.as_ref().is_empty())
                .map(|t| sha256(t.as_ref()))
                .collect(),
        }
    }

    /// The token in `settings.token_env` (from `env`) and every line of `settings.token_file`.
    pub fn from_settings(
        settings: &AdminSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> std::io::Result<AdminTokens> {
        let mut tokens: Vec<String> = env(&settings.token_env).into_iter().collect();
        if let Some(file) = &settings.token_file {
            tokens.extend(read_token_file(file)?);
        }
        Ok(AdminTokens::new(tokens.iter().map(|t| t.trim())))
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn accepts(&self, presented: &str) -> bool {
        let h = sha256(presented);
        self.hashes.contains(&h)
    }
}

fn read_token_file(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// A user, by one of their own keys.
    User(String),
}

impl Caller {
    /// Only operators.
    pub fn require_admin(&self) -> Result<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::User(_) => Err(AdminError::Forbidden(
                "this route needs an admin token; a user key may read only its own \
                 subscription, usage, dashboard and alerts"
                    .to_owned(),
            )),
        }
    }

    /// Operators, or the user themself. Another user's id answers 404, exactly as an unknown
    /// id does, so that a key cannot be used to find out which users exist.
    pub fn require_user(&self, user_id: &str) -> Result<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::User(own) if own == user_id => Ok(()),
            Caller::User(_) => Err(AdminError::not_found_user(user_id)),
        }
    }

    /// The user whose data a route without a user in its path is about: the key's own user,
    /// or for operators the `user_id` they name.
    pub fn subject(&self, named: Option<&str>) -> Result<Option<String>> {
        match (self, named) {
            (Caller::Admin, named) => Ok(named.map(str::to_owned)),
            (Caller::User(own), None) => Ok(Some(own.clone())),
            (Caller::User(own), Some(named)) if named == own => Ok(Some(own.clone())),
            (Caller::User(_), Some(named)) => Err(AdminError::not_found_user(named)),
        }
    }
}

/// How an erasure records the admin token that asked for it: `admin:` and the first 12 hex
/// digits of the token's SHA-256, which tell tokens apart without revealing one.
pub fn admin_label(token: &str) -> String {
    let hash = hex::encode(sha256(token));
    format!("admin:{}", &hash[..12])
}

/// The credential a request presents, if any.
pub fn presented(parts: &Parts) -> Option<&str> {
    presented_in(&parts.headers)
}

/// The credential in `headers`, if any.
pub fn presented_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(auth) = header("authorization") {
        let (scheme, token) = auth.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    header("x-api-key")
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Caller> {
        let Some(token) = presented(parts) else {
            return Err(AdminError::Unauthorized);
        };
        if state.tokens.accepts(token) {
            return Ok(Caller::Admin);
        }
        match state.user_of_key(token).await? {
            Some(user) => Ok(Caller::User(user)),
            None => Err(AdminError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let tokens = AdminTokens::new(["s3cret", ""]);
        assert!(tokens.accepts("s3cret"));
        assert!(!tokens.accepts("s3cre"));
        assert!(!tokens.accepts(""));
        assert!(AdminTokens::new([""; 0]).is_empty());
    }

    #[test]
    fn other_users_are_not_found_and_admin_routes_forbidden() {
        let alice = Caller::User("alice".into());
        assert!(alice.require_user("alice").is_ok());
        assert_eq!(
            alice.require_user("bob").unwrap_err().status(),
            axum::http::StatusCode::NOT_FOUND
        );
        assert_eq!(
            alice.require_admin().unwrap_err().status(),
            axum::http::StatusCode::FORBIDDEN
        );
        assert_eq!(alice.subject(None).unwrap().as_deref(), Some("alice"));
        assert!(alice.subject(Some("bob")).is_err());
        assert_eq!(Caller::Admin.subject(None).unwrap(), None);
    }
}
