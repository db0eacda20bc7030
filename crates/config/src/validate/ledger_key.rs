//! `[ledger] database_key_env` / `database_key_file`: the key usage data is encrypted with.

use std::path::Path;

use super::Env;
use crate::problem::FileProblems;
use crate::raw;
use crate::settings::Secret;

/// The key as 64 hex digits, from the environment variable or the file named; `None` when
/// neither is set (usage data stored unencrypted). A key that is named but missing is an error,
/// never a silent fall-back to plain text.
pub(super) fn database_key(
    p: &mut FileProblems,
    raw: &raw::Ledger,
    base_dir: &Path,
    env: Env<'_>,
) -> Option<Secret> {
    let (at, text) = match (&raw.database_key_env, &raw.database_key_file) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            p.error(
                &["ledger", "database_key_file"],
                "set database_key_env or database_key_file, not both",
            );
            return None;
        }
        (Some(var), None) => {
            let at = ["ledger", "database_key_env"];
            match env(var).filter(|v| !v.trim().is_empty()) {
                Some(value) => (at, value),
                None => {
                    p.error(
                        &at,
                        format!(
                            "environment variable {var} is not set: the ledger is encrypted with \
                             the key it holds (64 hex digits, e.g. from `openssl rand -hex 32`)"
                        ),
                    );
                    return None;
                }
            }
        }
        (None, Some(file)) => {
            let at = ["ledger", "database_key_file"];
            let path = base_dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => (at, text),
                Err(e) => {
                    p.error(
                        &at,
                        format!(
                            "cannot read {}: {e} (expected a file holding the ledger key, 64 \
                             hex digits)",
                            path.display()
                        ),
                    );
                    return None;
                }
            }
        }
    };
    let key = text.trim();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        p.error(
            &at,
            format!(
                "the ledger key must be 64 hex digits (32 random bytes, e.g. from `openssl rand \
                 -hex 32`); the one given has {} characters",
                key.len()
            ),
        );
        return None;
    }
    Some(Secret::new(key.to_owned()))
}
