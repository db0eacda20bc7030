//! The personal columns Tollgate stores (`users.display_name`, `users.email`), encrypted on
//! PostgreSQL with the ledger's key, and the check that the key is the one the data was written
//! with.
//!
//! A SQLite ledger is encrypted as a whole file, so its columns are stored as they are. On
//! PostgreSQL the server's files, backups and dumps are the operator's to protect; what
//! Tollgate can do is keep the values that name a person unreadable without the key. Each is
//! stored as `enc1:` and the hex of a value sealed with XChaCha20-Poly1305, bound to its row and
//! column (a value moved to another user's row does not open). Nothing looks a user up by these
//! columns, so no searchable (keyed-hash) form is kept.

use chrono::Utc;

use crate::db::{Db, on_db};
use crate::encryption::{LedgerKey, Sealer};
use crate::error::{LedgerError, Result};

const PREFIX: &str = "enc1:";

/// The columns sealed on PostgreSQL.
/// How a ledger stores its personal columns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Columns {
    /// Set on PostgreSQL with a key.
    sealer: Option<Sealer>,
}

impl Columns {
    pub fn new(db: &Db, key: Option<&LedgerKey>) -> Columns {
        Columns {
            sealer: match db {
                Db::Postgres(_) => key.map(LedgerKey::column_sealer),
                Db::Sqlite(_) => None,
            },
        }
    }

    /// The value to store in `users.<column>` of user `id`.
    pub fn seal(&self, id: &str, column: &str, value: Option<&str>) -> Result<Option<String>> {
        match (&self.sealer, value) {
            (Some(sealer), Some(value)) => seal_with(sealer, id, column, value).map(Some),
            (_, value) => Ok(value.map(str::to_owned)),
        }
    }

    /// The value of `users.<column>` of user `id` as stored, read back. A sealed value that does
    /// not open is `Corrupt`, never shown as it is.
    pub fn open(
        &self,
        id: &str,
        column: &'static str,
        stored: Option<String>,
    ) -> Result<Option<String>> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            // Written before the key was set and not yet sealed (the start that sets it seals
            // every row), or a SQLite ledger.
            return Ok(Some(stored));
        };
        let Some(sealer) = &self.sealer else {
            return Err(corrupt(
                column,
                "the value is encrypted and no key is configured",
            ));
        };
        open_with(sealer, id, column, sealed)
            .map(Some)
            .ok_or_else(|| corrupt(column, "the value does not open with the configured key"))
    }
}

fn context(id: &str, column: &str) -> Vec<u8> {
    format!("users.{column}:{id}").into_bytes()
}

fn seal_with(sealer: &Sealer, id: &str, column: &str, value: &str) -> Result<String> {
    let sealed = sealer.seal(value.as_bytes(), &context(id, column))?;
    Ok(format!("{PREFIX}{}", hex::encode(sealed)))
}

fn open_with(sealer: &Sealer, id: &str, column: &str, sealed_hex: &str) -> Option<String> {
    let sealed = hex::decode(sealed_hex).ok()?;
    let plain = sealer.open(&sealed, &context(id, column))?;
    String::from_utf8(plain).ok()
}

fn corrupt(column: &'static str, detail: &str) -> LedgerError {
    LedgerError::Corrupt {
        column,
        detail: detail.to_owned(),
    }
}

/// Reads every user's personal columns with `$from` and writes them back with `$to`, in the
/// transaction `$tx`, a page of rows at a time; evaluates to the number of users. A macro
/// rather than a function: it expands once per backend inside [`on_db!`], like the queries.
macro_rules! reseal_users {
    ($tx:ident, $from:expr, $to:expr) => {{
        let mut after = String::new();
        let mut resealed: u64 = 0;
        loop {
            let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT id, display_name, email FROM users WHERE id > $1 ORDER BY id LIMIT 500",
            )
            .bind(&after)
            .fetch_all(&mut *$tx)
            .await
            .map_err(LedgerError::db("reading users to encrypt"))?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.0.clone();
            for (id, display_name, email) in rows {
                let display_name = $from.open(&id, "display_name", display_name)?;
                let email = $from.open(&id, "email", email)?;
                sqlx::query("UPDATE users SET display_name = $2, email = $3 WHERE id = $1")
                    .bind(&id)
                    .bind($to.seal(&id, "display_name", display_name.as_deref())?)
                    .bind($to.seal(&id, "email", email.as_deref())?)
                    .execute(&mut *$tx)
                    .await
                    .map_err(LedgerError::db("encrypting a user's columns"))?;
                resealed += 1;
            }
        }
        resealed
    }};
}

/// The key check value stored with the data, if any.
async fn stored_check(db: &Db) -> Result<Option<String>> {
    Ok(on_db!(db, pool => sqlx::query_scalar(
        "SELECT key_check FROM ledger_encryption WHERE id = 1")
        .fetch_optional(pool)
        .await
        .map_err(LedgerError::db("reading the ledger's key check"))?))
}

/// At start, after the migrations: refuses a key other than the one the data was written with,
/// and a missing key for data written with one. The first start with a key records it and, on
/// PostgreSQL, seals every personal column written before, in one transaction.
///
/// On SQLite the file decides: SQLCipher has already refused a key that does not open it (and
/// plain SQLite an encrypted file), so the row only follows the key the file opened with.
pub(crate) async fn check_key(db: &Db, key: Option<&LedgerKey>) -> Result<()> {
    let stored = stored_check(db).await?;
    if let Db::Sqlite(pool) = db {
        if let Some(key) = key
            && stored.as_deref() != Some(key.check_value().as_str())
        {
            sqlx::query(
                "INSERT INTO ledger_encryption (id, key_check, set_at) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET key_check = excluded.key_check, \
                 set_at = excluded.set_at",
            )
            .bind(key.check_value())
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(LedgerError::db("recording the ledger key"))?;
        }
        return Ok(());
    }
    match (key, stored) {
        (None, None) => Ok(()),
        (Some(key), Some(check)) if key.check_value() == check => Ok(()),
        (Some(_), Some(_)) => Err(LedgerError::KeyMismatch(format!(
            "the ledger database was encrypted with another key than the one configured \
             ([ledger] database_key_env or database_key_file); start with the key it was \
             written with (`tollgate ledger rekey` changes it) ({} ledger)",
            db.backend()
        ))),
        (None, Some(_)) => Err(LedgerError::KeyMismatch(format!(
            "the ledger database's personal data is encrypted: set [ledger] database_key_env \
             or database_key_file to the key it was written with ({} ledger)",
            db.backend()
        ))),
        (Some(key), None) => record_first_key(db, key).await,
    }
}

async fn record_first_key(db: &Db, key: &LedgerKey) -> Result<()> {
    let columns = Columns::new(db, Some(key));
    on_db!(db, pool => {
        let mut tx = pool.begin().await.map_err(LedgerError::db("encrypting the ledger"))?;
        reseal_users!(tx, Columns::default(), columns);
        let recorded = sqlx::query(
            "INSERT INTO ledger_encryption (id, key_check, set_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING")
            .bind(key.check_value())
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(LedgerError::db("recording the ledger key"))?
            .rows_affected();
        if recorded == 0 {
            // Another gateway sealed the rows meanwhile: its check value decides.
            drop(tx);
            return Box::pin(check_key(db, Some(key))).await;
        }
        tx.commit().await.map_err(LedgerError::db("encrypting the ledger"))?;
    });
    tracing::info!(backend = db.backend(), "ledger encryption key recorded");
    Ok(())
}

/// Re-encrypts PostgreSQL's personal columns from `old` to `new` and records `new`, in one
/// transaction (a SQLite file is rekeyed by SQLCipher as a whole).
pub(crate) async fn rekey_columns(db: &Db, old: &LedgerKey, new: &LedgerKey) -> Result<u64> {
    check_key(db, Some(old)).await?;
    if let Db::Sqlite(_) = db {
        return Ok(0);
    }
    let from = Columns::new(db, Some(old));
    let to = Columns::new(db, Some(new));
    Ok(on_db!(db, pool => {
        let mut tx = pool.begin().await.map_err(LedgerError::db("rekeying the ledger"))?;
        let resealed = reseal_users!(tx, from, to);
        sqlx::query("UPDATE ledger_encryption SET key_check = $1, set_at = $2 WHERE id = 1")
            .bind(new.check_value())
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(LedgerError::db("recording the new ledger key"))?;
        tx.commit().await.map_err(LedgerError::db("rekeying the ledger"))?;
        resealed
    }))
}
