//! Changing the ledger's key (`tollgate ledger rekey`), or encrypting a plain ledger.
//!
//! Run with the gateway stopped: the spool's lock refuses a rekey while a gateway holds it.
//! The spool is drained into the database first, with the current key, so that afterwards no
//! data is under the old key but the database itself, which is then rekeyed in one step:
//!
//! * an encrypted SQLite file: SQLCipher's `PRAGMA rekey` (re-encrypts every page in place);
//! * a plain SQLite file: copied encrypted beside it with `sqlcipher_export`, then renamed over it;
//! * PostgreSQL: the personal columns re-sealed and the new key recorded in one transaction.
//!
//! Events set aside in `rejected.jsonl` are re-sealed with the new key last.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnectOptions;

use crate::config::LedgerConfig;
use crate::db::{Db, DbOptions};
use crate::encryption::LedgerKey;
use crate::error::{LedgerError, Result};
use crate::personal;
use crate::spool::{self, Spool};
use crate::store;
use crate::writer::{REJECTED_CONTEXT, REJECTED_FILE};

/// What a rekey did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// Events that were waiting in the spool, written to the database before the rekey.
    pub spooled_events: u64,
    /// A plain SQLite file was encrypted (rather than an encrypted one rekeyed).
    pub encrypted_plain_sqlite: bool,
    /// PostgreSQL users whose personal columns were re-sealed.
    pub users_resealed: u64,
    /// Lines of `rejected.jsonl` re-sealed.
    pub rejected_lines: u64,
}

/// Whether a SQLite error code (sqlx gives the extended code, as text) is SQLITE_BUSY or one of
/// its extended forms, whose low byte is SQLITE_BUSY's 5.
fn is_busy(code: Option<std::borrow::Cow<'_, str>>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

/// Re-encrypts the ledger of `config` (whose `key` is the current one, `None` for a plain
/// ledger) with `new`.
pub async fn rekey(config: &LedgerConfig, new: &LedgerKey) -> Result<RekeyReport> {
    let old = config.key.clone();
    let mut report = RekeyReport::default();
    let mut spool = Spool::open_or_wait(
        &config.spool_dir,
        u64::MAX,
        config.spool_segment_bytes,
        false,
        old.as_ref().map(LedgerKey::spool_sealer),
    )?;
    let options = DbOptions {
        timeout: Duration::from_millis(config.db_timeout_ms),
        // One connection: SQLite's journal mode and rekey need the file to themselves.
        max_connections: 1,
        sqlite_sync: config.sqlite_sync,
        key: old.clone(),
    };
    let db = Db::connect(&config.database_url, options.clone()).await?;
    db.migrate().await?;
    personal::check_key(&db, old.as_ref()).await?;
    report.spooled_events = drain_spool(&db, &mut spool).await?;

    match (&db, &old) {
        (Db::Sqlite(_), Some(old)) => {
            // A connection of its own, opened once the pool is closed: leaving WAL mode needs
            // the file to itself, with no statement of the pool's still holding a read lock.
            db.close().await;
            let mut conn = SqliteConnectOptions::from_str(&config.database_url)
                .map_err(LedgerError::db("parsing the SQLite URL"))?
                .pragma("key", old.sqlcipher_pragma())
                .busy_timeout(Duration::from_millis(config.db_timeout_ms.max(5_000)))
                .connect()
                .await
                .map_err(LedgerError::db("opening the SQLite ledger to rekey it"))?;
            // SQLCipher rewrites the pages in place; outside WAL mode, so that no page of the
            // old key is left behind in the log.
            for statement in [
                "PRAGMA journal_mode = DELETE".to_owned(),
                format!("PRAGMA rekey = {}", new.sqlcipher_pragma()),
                "PRAGMA journal_mode = WAL".to_owned(),
            ] {
                // Leaving WAL mode is refused (SQLITE_BUSY or one of its extended codes, such
                // as SQLITE_BUSY_RECOVERY, without waiting on the busy timeout) while a
                // connection closed a moment ago still has the file open.
                let mut attempts = 0;
                loop {
                    match sqlx::query(&statement).execute(&mut conn).await {
                        Ok(_) => break,
                        Err(sqlx::Error::Database(e)) if is_busy(e.code()) && attempts < 100 => {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err(LedgerError::db("rekeying the SQLite ledger")(e)),
                    }
                }
            }
            conn.close()
                .await
                .map_err(LedgerError::db("rekeying the SQLite ledger"))?;
        }
        (Db::Sqlite(pool), None) => {
            let path = sqlite_path(&config.database_url)?;
            let encrypted = path.with_extension("encrypting");
            remove_if_present(&encrypted)?;
            let attach = format!(
                "ATTACH DATABASE '{}' AS encrypted KEY {}",
                encrypted.display().to_string().replace('\'', "''"),
                new.sqlcipher_pragma()
            );
            for statement in [
                attach.as_str(),
                "SELECT sqlcipher_export('encrypted')",
                "DETACH DATABASE encrypted",
            ] {
                sqlx::query(statement)
                    .execute(pool)
                    .await
                    .map_err(LedgerError::db("encrypting the SQLite ledger"))?;
            }
            db.close().await;
            File::open(&encrypted)
                .and_then(|f| f.sync_all())
                .map_err(file_io(&encrypted))?;
            // The plain file's log was checkpointed when it closed; what is left of it must
            // not be read as the new file's.
            for suffix in ["-wal", "-shm"] {
                remove_if_present(&PathBuf::from(format!("{}{suffix}", path.display())))?;
            }
            fs::rename(&encrypted, &path).map_err(file_io(&path))?;
            report.encrypted_plain_sqlite = true;
        }
        (Db::Postgres(_), Some(old)) => {
            report.users_resealed = personal::rekey_columns(&db, old, new).await?;
            db.close().await;
        }
        (Db::Postgres(_), None) => db.close().await,
    }
    // Reopened with the new key: a SQLite file that does not open with it fails here, and
    // the key is recorded (and, for a plain PostgreSQL ledger, the columns sealed).
    let db = Db::connect(
        &config.database_url,
        DbOptions {
            key: Some(new.clone()),
            ..options
        },
    )
    .await?;
    let recorded = personal::check_key(&db, Some(new)).await;
    db.close().await;
    recorded?;
    report.rejected_lines = reseal_rejected(&config.spool_dir, old.as_ref(), new)?;
    Ok(report)
}

/// Writes every spooled frame to the database and deletes its segment.
async fn drain_spool(db: &Db, spool: &mut Spool) -> Result<u64> {
    let sealer = spool.sealer();
    let mut events = 0;
    while let Some((seq, path)) = spool.oldest_for_replay() {
        let frames = spool::read_segment(&path, sealer.as_ref())?;
        if frames.undecodable > 0 {
            return Err(LedgerError::Spool {
                path: path.display().to_string(),
                source: std::io::Error::other(
                    "the segment holds frames that cannot be read; move it out of the spool \
                     directory and rekey again",
                ),
            });
        }
        for frame in &frames.frames {
            store::insert_batch(db, frame).await?;
            events += frame.len() as u64;
        }
        spool.remove(seq)?;
    }
    Ok(events)
}

/// Re-seals `rejected.jsonl` with `new`: written beside it, synced, renamed over it.
fn reseal_rejected(spool_dir: &Path, old: Option<&LedgerKey>, new: &LedgerKey) -> Result<u64> {
    let path = spool_dir.join(REJECTED_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(file_io(&path)(e)),
    };
    let old = old.map(LedgerKey::spool_sealer);
    let new = new.spool_sealer();
    let mut out = Vec::new();
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let plain = match value.get("sealed").and_then(|v| v.as_str()) {
            None => line.as_bytes().to_vec(),
            Some(sealed) => hex::decode(sealed)
                .ok()
                .and_then(|sealed| old.as_ref()?.open(&sealed, REJECTED_CONTEXT))
                .ok_or_else(|| {
                    LedgerError::KeyMismatch(format!(
                        "{} holds a line the current key does not open",
                        path.display()
                    ))
                })?,
        };
        let sealed = new.seal(&plain, REJECTED_CONTEXT)?;
        let line = serde_json::json!({ "sealed": hex::encode(sealed) });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
        lines += 1;
    }
    let next = path.with_extension("jsonl.rekeyed");
    File::create(&next)
        .and_then(|mut f| {
            f.write_all(&out)?;
            f.sync_all()
        })
        .map_err(file_io(&next))?;
    fs::rename(&next, &path).map_err(file_io(&path))?;
    Ok(lines)
}

/// The file of a `sqlite://` URL.
fn sqlite_path(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.starts_with(":memory:") {
        return Err(LedgerError::UnsupportedUrl(url.to_owned()));
    }
    Ok(PathBuf::from(path))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_io(path)(e)),
    }
}

fn file_io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::File {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::is_busy;

    #[test]
    fn busy_is_recognised_in_its_extended_forms() {
        // SQLITE_BUSY, _RECOVERY, _SNAPSHOT and _TIMEOUT; then LOCKED, READONLY, none.
        for busy in ["5", "261", "517", "773"] {
            assert!(is_busy(Some(busy.into())), "{busy}");
        }
        for other in [Some("6"), Some("8"), Some("x"), None] {
            assert!(!is_busy(other.map(Into::into)), "{other:?}");
        }
    }
}
