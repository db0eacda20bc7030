//! Encryption at rest: what is on disk (the SQLite file, the spool) and in PostgreSQL's
//! personal columns holds no trace of a user, a model or a key, with the ledger's key; a wrong
//! key or none is refused at start; `rekey` changes the key and encrypts a plain ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestDb, event, wait_until};
use sqlx::Connection;
use tollgate_ledger::{
    DbOptions, Ledger, LedgerConfig, LedgerError, LedgerKey, NewApiKey, StoredRules, UsageEvent,
};

const KEY_A: &str = "4f1c2a9d8e7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877";
const KEY_B: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// What must not appear in anything stored without the key: a user's e-mail address and
/// name, a model name, a key's prefix and name.
const EMAIL: &str = "canary.alice@example.com";
const NAME: &str = "Canary Alice";
const MODEL: &str = "canary-model-7f3";
const PREFIX: &str = "tg_canary9";
const KEY_NAME: &str = "canary laptop";

fn key(hex: &str) -> Option<LedgerKey> {
    Some(LedgerKey::from_hex(hex).unwrap())
}

fn keyed(mut config: LedgerConfig, hex: Option<&str>) -> LedgerConfig {
    config.key = hex.and_then(key);
    config
}

fn options(hex: Option<&str>) -> DbOptions {
    DbOptions {
        key: hex.and_then(key),
        ..DbOptions::default()
    }
}

fn canary_event(n: u64) -> UsageEvent {
    let mut e = event(format!("enc-{n}"), n);
    e.user_id = "alice".into();
    e.model = MODEL.into();
    e
}

/// Writes the canaries: a user with an e-mail address and name, a key, and `events` events.
async fn write_canaries(ledger: &Ledger, handle: &tollgate_ledger::LedgerHandle, events: u64) {
    assert!(
        ledger
            .create_user("alice", Some(NAME), Some(EMAIL))
            .await
            .unwrap()
    );
    ledger
        .create_api_key(&NewApiKey {
            id: "key-canary".into(),
            user_id: "alice".into(),
            key_hash: "ab".repeat(32),
            prefix: PREFIX.into(),
            name: Some(KEY_NAME.into()),
            rules: StoredRules::default(),
        })
        .await
        .unwrap();
    for n in 0..events {
        handle.record(canary_event(n)).await.unwrap();
    }
    handle.flush().await.unwrap();
}

/// Every canary found in the files under `dir` (the database, its log, the spool).
fn canaries_in(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap();
        for canary in [EMAIL, NAME, MODEL, PREFIX, KEY_NAME] {
            if bytes.windows(canary.len()).any(|w| w == canary.as_bytes()) {
                found.push(format!("{canary} in {}", entry.display()));
            }
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

async fn usage_rows(ledger: &Ledger) -> i64 {
    match ledger.db() {
        tollgate_ledger::Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM api_usage_logs")
                .fetch_one(pool)
                .await
                .unwrap()
        }
        tollgate_ledger::Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM api_usage_logs")
                .fetch_one(pool)
                .await
                .unwrap()
        }
    }
}

fn is_key_mismatch(result: Result<impl Sized, LedgerError>, expect: &str) {
    match result {
        Err(e @ LedgerError::KeyMismatch(_)) => {
            assert!(e.to_string().contains(expect), "{e}");
            assert!(!e.to_string().contains(KEY_A) && !e.to_string().contains(KEY_B));
        }
        Err(e) => panic!("expected a key mismatch, got {e}"),
        Ok(_) => panic!("expected a key mismatch, the ledger opened"),
    }
}

#[tokio::test]
async fn an_encrypted_sqlite_ledger_holds_no_plaintext_and_a_plain_one_does() {
    for (hex, expect_canaries) in [(None, true), (Some(KEY_A), false)] {
        let db = TestDb::sqlite().await;
        let (ledger, handle) = Ledger::open(keyed(db.config(), hex)).await.unwrap();
        write_canaries(&ledger, &handle, 300).await;
        let user = ledger.user("alice").await.unwrap().unwrap();
        assert_eq!(user.email.as_deref(), Some(EMAIL));
        // Before closing too: what the log holds while the gateway runs.
        let found_running = canaries_in(db.dir.path());
        handle.shutdown().await.unwrap();
        ledger.close().await;
        let found = canaries_in(db.dir.path());
        if expect_canaries {
            // The scan finds what is there: the control for the encrypted case.
            assert!(found.iter().any(|f| f.starts_with(EMAIL)), "{found:?}");
            assert!(found.iter().any(|f| f.starts_with(MODEL)), "{found:?}");
        } else {
            assert!(found_running.is_empty(), "{found_running:?}");
            assert!(found.is_empty(), "{found:?}");
            let reopened = Ledger::connect(&db.url, options(hex)).await.unwrap();
            assert_eq!(usage_rows(&reopened).await, 300);
            reopened.close().await;
        }
    }
}

#[tokio::test]
async fn a_wrong_key_or_none_is_refused_at_start_never_an_empty_ledger() {
    let db = TestDb::sqlite().await;
    let (ledger, handle) = Ledger::open(keyed(db.config(), Some(KEY_A))).await.unwrap();
    write_canaries(&ledger, &handle, 10).await;
    handle.shutdown().await.unwrap();
    ledger.close().await;

    is_key_mismatch(
        Ledger::open(keyed(db.config(), Some(KEY_B))).await,
        "cannot be opened with the configured key",
    );
    is_key_mismatch(
        Ledger::open(keyed(db.config(), None)).await,
        "is encrypted (or is not a SQLite database): set [ledger] database_key_env",
    );
    is_key_mismatch(
        Ledger::connect(&db.url, options(Some(KEY_B))).await,
        "cannot be opened with the configured key",
    );

    // A plain ledger opened with a key is refused too, rather than started empty beside it.
    let plain = TestDb::sqlite().await;
    let (ledger, handle) = Ledger::open(plain.config()).await.unwrap();
    handle.record(canary_event(1)).await.unwrap();
    handle.shutdown().await.unwrap();
    ledger.close().await;
    is_key_mismatch(
        Ledger::open(keyed(plain.config(), Some(KEY_A))).await,
        "tollgate ledger rekey",
    );
}

/// Runs `attempt` until it no longer fails for a spool another ledger of this process still
/// holds (one dropped a moment ago lets it go once its tasks have ended).
async fn once_spool_free<T, F, Fut>(mut attempt: F) -> Result<T, LedgerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LedgerError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await {
            Err(LedgerError::Spool { source, .. })
                if source.to_string().contains("in use")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => return other,
        }
    }
}

/// A ledger whose database is unreachable spools everything.
fn unreachable(spool_dir: &Path, hex: Option<&str>) -> LedgerConfig {
    let mut config = LedgerConfig::new("postgres://postgres@127.0.0.1:1/unreachable", spool_dir);
    config.flush_interval_ms = 20;
    config.db_timeout_ms = 200;
    config.retry_backoff_max_ms = 200;
    keyed(config, hex)
}

async fn spool_events(spool_dir: &Path, hex: Option<&str>, events: u64) {
    let (_ledger, handle) = Ledger::open(unreachable(spool_dir, hex)).await.unwrap();
    for n in 0..events {
        handle.record(canary_event(n)).await.unwrap();
    }
    handle.flush().await.unwrap();
    assert!(handle.metrics().spooled >= events);
    // Stops the tasks (the database refuses the replay at once), which lets the spool go.
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn spooled_frames_are_sealed_and_replay_only_with_their_key() {
    let db = TestDb::postgres().await;
    let spool_dir = db.spool_dir();
    spool_events(&spool_dir, Some(KEY_A), 200).await;
    let found = canaries_in(&spool_dir);
    assert!(found.is_empty(), "{found:?}");
    assert!(
        walk(&spool_dir)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "spool"))
    );

    // Another key, or none, is refused while the spool holds frames it cannot open.
    is_key_mismatch(
        once_spool_free(|| Ledger::open(keyed(db.config(), Some(KEY_B)))).await,
        "holds frames encrypted with another key",
    );
    is_key_mismatch(
        Ledger::open(keyed(db.config(), None)).await,
        "a key, and none is configured",
    );

    // With its key the spool replays into the database, every event once.
    let (ledger, handle) = Ledger::open(keyed(db.config(), Some(KEY_A))).await.unwrap();
    wait_until("the spool replayed", Duration::from_secs(20), || async {
        usage_rows(&ledger).await == 200
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(handle.metrics().spool_frames_skipped, 0);
    assert_eq!(handle.metrics().dropped, 0);
}

#[tokio::test]
async fn frames_spooled_before_a_key_was_set_still_replay() {
    let db = TestDb::postgres().await;
    spool_events(&db.spool_dir(), None, 50).await;
    assert!(
        !canaries_in(&db.spool_dir()).is_empty(),
        "the control: plain frames"
    );
    let (ledger, handle) = once_spool_free(|| Ledger::open(keyed(db.config(), Some(KEY_A))))
        .await
        .unwrap();
    wait_until("the spool replayed", Duration::from_secs(20), || async {
        usage_rows(&ledger).await == 50
    })
    .await;
    handle.shutdown().await.unwrap();
}

/// The personal columns as a dump would show them.
async fn raw_users(url: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as("SELECT id, display_name, email FROM users ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_stores_no_email_or_name_without_the_key_and_reads_them_back_with_it() {
    let db = TestDb::postgres().await;
    // Written before the key was set: sealed by the first start with it.
    let plain = Ledger::connect(&db.url, options(None)).await.unwrap();
    assert!(
        plain
            .create_user("bob", Some("Bob"), Some("bob@example.com"))
            .await
            .unwrap()
    );
    plain.close().await;

    let (ledger, handle) = Ledger::open(keyed(db.config(), Some(KEY_A))).await.unwrap();
    write_canaries(&ledger, &handle, 20).await;
    assert!(
        ledger
            .set_user_email("bob", Some("bob@example.org"))
            .await
            .unwrap()
    );
    handle.shutdown().await.unwrap();

    let raw = raw_users(&db.url).await;
    assert_eq!(raw.len(), 2);
    for (id, name, email) in &raw {
        for value in [name, email] {
            let value = value.as_deref().unwrap();
            assert!(value.starts_with("enc1:"), "{id}: {value}");
            assert!(!value.contains('@') && !value.contains("Alice") && !value.contains("Bob"));
        }
    }
    let users = ledger.users(10, 0).await.unwrap();
    let seen: Vec<_> = users
        .iter()
        .map(|u| (u.id.as_str(), u.display_name.as_deref(), u.email.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("bob", Some("Bob"), Some("bob@example.org")),
            ("alice", Some(NAME), Some(EMAIL)),
        ]
    );
    let mut export = Vec::new();
    ledger.export_user("alice", &mut export).await.unwrap();
    assert!(String::from_utf8(export).unwrap().contains(EMAIL));
    ledger.close().await;

    // The same values moved to another row do not open there.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "UPDATE users SET email = (SELECT email FROM users WHERE id = 'alice') WHERE id = 'bob'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let reader = Ledger::connect(&db.url, options(Some(KEY_A)))
        .await
        .unwrap();
    assert!(matches!(
        reader.user("bob").await,
        Err(LedgerError::Corrupt {
            column: "email",
            ..
        })
    ));
    reader.close().await;

    is_key_mismatch(
        Ledger::connect(&db.url, options(Some(KEY_B))).await,
        "encrypted with another key than the one configured",
    );
    is_key_mismatch(
        Ledger::open(keyed(db.config(), None)).await,
        "personal data is encrypted: set [ledger] database_key_env",
    );
}

#[tokio::test]
async fn rekey_changes_the_sqlite_key_and_drains_the_spool_first() {
    let db = TestDb::sqlite().await;
    let (ledger, handle) = Ledger::open(keyed(db.config(), Some(KEY_A))).await.unwrap();
    write_canaries(&ledger, &handle, 100).await;
    handle.shutdown().await.unwrap();
    ledger.close().await;
    // Frames left in the spool (as by a database that was away), under the current key.
    let mut spooled = Vec::new();
    for n in 1_000..1_040 {
        spooled.push(canary_event(n));
    }
    {
        let (_l, h) = Ledger::open(unreachable(&db.spool_dir(), Some(KEY_A)))
            .await
            .unwrap();
        for e in &spooled {
            h.record(e.clone()).await.unwrap();
        }
        h.flush().await.unwrap();
        h.shutdown().await.unwrap();
    }

    let config = keyed(db.config(), Some(KEY_A));
    let new_key = key(KEY_B).unwrap();
    let report = once_spool_free(|| tollgate_ledger::rekey(&config, &new_key))
        .await
        .unwrap();
    assert_eq!(report.spooled_events, 40);
    assert!(!report.encrypted_plain_sqlite);

    is_key_mismatch(
        Ledger::connect(&db.url, options(Some(KEY_A))).await,
        "cannot be opened with the configured key",
    );
    let (ledger, handle) = Ledger::open(keyed(db.config(), Some(KEY_B))).await.unwrap();
    assert_eq!(usage_rows(&ledger).await, 140);
    assert_eq!(
        ledger
            .user("alice")
            .await
            .unwrap()
            .unwrap()
            .email
            .as_deref(),
        Some(EMAIL)
    );
    handle.shutdown().await.unwrap();
    ledger.close().await;
    let found = canaries_in(db.dir.path());
    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test]
async fn rekey_encrypts_a_plain_sqlite_ledger() {
    let db = TestDb::sqlite().await;
    let (ledger, handle) = Ledger::open(db.config()).await.unwrap();
    write_canaries(&ledger, &handle, 100).await;
    handle.shutdown().await.unwrap();
    ledger.close().await;
    assert!(
        !canaries_in(db.dir.path()).is_empty(),
        "the control: a plain file"
    );

    let report = tollgate_ledger::rekey(&db.config(), &key(KEY_A).unwrap())
        .await
        .unwrap();
    assert!(report.encrypted_plain_sqlite);
    let found = canaries_in(db.dir.path());
    assert!(found.is_empty(), "{found:?}");
    is_key_mismatch(
        Ledger::connect(&db.url, options(None)).await,
        "is encrypted",
    );
    let ledger = Ledger::connect(&db.url, options(Some(KEY_A)))
        .await
        .unwrap();
    assert_eq!(usage_rows(&ledger).await, 100);
    assert_eq!(
        ledger
            .user("alice")
            .await
            .unwrap()
            .unwrap()
            .display_name
            .as_deref(),
        Some(NAME)
    );
    ledger.close().await;
}

#[tokio::test]
async fn rekey_reseals_postgres_columns_with_the_new_key() {
    let db = TestDb::postgres().await;
    let (ledger, handle) = Ledger::open(keyed(db.config(), Some(KEY_A))).await.unwrap();
    write_canaries(&ledger, &handle, 10).await;
    handle.shutdown().await.unwrap();
    ledger.close().await;
    let before = raw_users(&db.url).await;

    let report = tollgate_ledger::rekey(&keyed(db.config(), Some(KEY_A)), &key(KEY_B).unwrap())
        .await
        .unwrap();
    assert_eq!(report.users_resealed, 1);
    let after = raw_users(&db.url).await;
    assert_ne!(before, after);
    assert!(after[0].2.as_deref().unwrap().starts_with("enc1:"));

    is_key_mismatch(
        Ledger::connect(&db.url, options(Some(KEY_A))).await,
        "encrypted with another key",
    );
    let ledger = Ledger::connect(&db.url, options(Some(KEY_B)))
        .await
        .unwrap();
    assert_eq!(
        ledger
            .user("alice")
            .await
            .unwrap()
            .unwrap()
            .email
            .as_deref(),
        Some(EMAIL)
    );
    ledger.close().await;
}
