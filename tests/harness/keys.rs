//! The keys of the tests: the Tollgate key each user is given, the `[[keys]]` entry that
//! configures it, the real provider keys the gateway holds, and the check that the provider saw
//! only the real one.

use sha2::{Digest, Sha256};

use super::mock::Seen;

/// The `[[keys]]` entry for a Tollgate key (the configuration holds only its SHA-256).
pub fn key_entry(user: &str, plan: &str, key: &str) -> String {
    let hash: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[[keys]]\nuser = \"{user}\"\nplan = \"{plan}\"\nsha256 = \"{hash}\"\n")
}

/// The Tollgate key the tests give `user`.
pub fn client_key(user: &str) -> String {
    format!("tg_{user}_key_0123456789")
}

/// The real key of `provider`, as the tests put it in the gateway's environment.
pub fn provider_key(provider: &str) -> String {
    format!("real-{provider}-secret-42")
}

/// The provider saw its real key in `slot` (after `prefix`, "Bearer " say) and `user`'s
/// Tollgate key nowhere in the request.
pub fn assert_key_swapped(seen: &Seen, provider: &str, user: &str, slot: &str, prefix: &str) {
    assert_eq!(
        seen.header(slot),
        Some(format!("{prefix}{}", provider_key(provider)).as_str()),
        "{seen:#?}"
    );
    assert!(
        !seen.contains(&client_key(user)),
        "the Tollgate key reached {provider}: {seen:#?}"
    );
}
