//! Changing the ledger's key (`tollgate ledger rekey`), or encrypting a plain ledger.
//!
//! Run with the gateway stopped: the spool's lock refuses a rekey while a gateway holds it.
//! The spool is drained into the database first, with the current key, so that afterwards no
//! data is under the old key but the database itself, which is then rekeyed in one step:
//!
//! * a SQLite file, encrypted or plain: copied under the new key beside it with
//!   `sqlcipher_export`, then renamed over it;
//! * PostgreSQL: the personal columns re-sealed and the new key recorded in one transaction.
//!
//! Events set aside in `rejected.jsonl` are re-sealed with the new key last.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        // One connection: SQLite's ATTACH, export and DETACH must run on the same one.
        max_connections: 1,
        sqlite_sync: config.sqlite_sync,
        key: old.clone(),
    };
    let db = Db::connect(&config.database_url, options.clone()).await?;
    db.migrate().await?;
    personal::check_key(&db, old.as_ref()).await?;
    report.spooled_events = drain_spool(&db, &mut spool).await?;

    match (&db, &old) {
        (Db::Sqlite(pool), _) => {
            // Copied under the new key beside the file, then renamed over it: unlike SQLCipher's
            // in-place `PRAGMA rekey`, which must first leave WAL mode and so needs the file to
            // itself, the copy only reads, and a connection closed a moment ago that still has
            // the file open cannot make it fail.
            let path = sqlite_path(&config.database_url)?;
            let rekeyed = path.with_extension("rekeying");
            remove_if_present(&rekeyed)?;
            let attach = format!(
                "ATTACH DATABASE '{}' AS rekeyed KEY {}",
                rekeyed.display().to_string().replace('\'', "''"),
                new.sqlcipher_pragma()
            );
            for statement in [
                attach.as_str(),
                "SELECT sqlcipher_export('rekeyed')",
                "DETACH DATABASE rekeyed",
            ] {
                sqlx::query(statement)
                    .execute(pool)
                    .await
                    .map_err(LedgerError::db(
                        "copying the SQLite ledger under the new key",
                    ))?;
            }
            db.close().await;
            File::open(&rekeyed)
                .and_then(|f| f.sync_all())
                .map_err(file_io(&rekeyed))?;
            // The old file's log was checkpointed when it closed, and the copy holds everything
            // committed; what is left of the log is under the old key (or none) and must not
            // be read as the new file's.
            for suffix in ["-wal", "-shm"] {
                remove_if_present(&PathBuf::from(format!("{}{suffix}", path.display())))?;
            }
            fs::rename(&rekeyed, &path).map_err(file_io(&path))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(file_io(dir))?;
            }
            report.encrypted_plain_sqlite = old.is_none();
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
