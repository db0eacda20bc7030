//! The connection to SQLite or PostgreSQL, and the migrations of each.
//!
//! Two concrete pools rather than `sqlx::Any`: each backend keeps its native types (TIMESTAMPTZ,
//! BOOLEAN) and its own migrations, while the SQL text is shared. Statements use `$1`-style
//! placeholders, which both backends accept, and [`on_db!`] expands one block of code once per
//! pool type so that a query is written once and type-checked for both.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::SqliteSync;
use crate::encryption::LedgerKey;
use crate::error::{LedgerError, Result};

/// A pool on one of the two supported databases.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Connection settings beyond the URL.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Connection acquire timeout, and SQLite's busy timeout.
    pub timeout: Duration,
    pub max_connections: u32,
    pub sqlite_sync: SqliteSync,
    /// Encrypts a SQLite ledger (SQLCipher) and PostgreSQL's personal columns; `None` stores
    /// everything as plain text (docs/ledger.md, "Encryption at rest").
    pub key: Option<LedgerKey>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            timeout: Duration::from_secs(5),
            max_connections: 5,
            sqlite_sync: SqliteSync::Full,
            key: None,
        }
    }
}

impl Db {
    /// The statement beginning a read-only transaction whose statements all read one snapshot.
    /// A deferred SQLite transaction in WAL mode does so from its first read; PostgreSQL's
    /// default (read committed) takes a new snapshot for every statement.
    pub(crate) fn begin_snapshot(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "BEGIN",
            Db::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }

    /// The statement beginning a transaction that reads before it writes. SQLite's deferred
    /// `BEGIN` would take the write lock only at the first write, and fail at once (busy, not
    /// waiting) when another writer committed after its first read; `IMMEDIATE` takes it at the
    /// start, waiting up to the busy timeout like any write.
    pub(crate) fn begin_write(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        }
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`). A SQLite file is created if missing
    /// and put in WAL mode, with full sync by default, so that a committed batch survives a
    /// crash of the process and of the machine ([`SqliteSync`]).
    /// With a key, a SQLite file is encrypted (a new one from its first page); one that the key
    /// does not open is refused here with [`LedgerError::KeyMismatch`], as is an encrypted one
    /// opened without a key.
    pub async fn connect(url: &str, options: DbOptions) -> Result<Db> {
        if url.starts_with("sqlite:") {
            let mut connect = SqliteConnectOptions::from_str(url)
                .map_err(LedgerError::db("parsing the SQLite URL"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match options.sqlite_sync {
                    SqliteSync::Full => SqliteSynchronous::Full,
                    SqliteSync::Normal => SqliteSynchronous::Normal,
                })
                .busy_timeout(options.timeout)
                .foreign_keys(true)
                // The pages a batch touches (the log's table and indexes, the summaries) stay
                // cached between batches instead of being read back from the OS (SQLite's
                // default is 2 MiB per connection; this is 8)...
                .pragma("cache_size", "-8192")
                // ...and a multi-row statement's own journal (kept so that it can be undone
                // alone) is in memory, not in a temporary file (`store.rs`).
                .pragma("temp_store", "memory");
            if let Some(key) = &options.key {
                // sqlx issues `key` before every other pragma, as SQLCipher requires.
                connect = connect.pragma("key", key.sqlcipher_pragma());
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(options.timeout)
                .connect_with(connect)
                .await
                .map_err(|e| sqlite_open_error(e, url, options.key.is_some()))?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(LedgerError::db("parsing the PostgreSQL URL"))?;
            // connect_lazy: the ledger must start (and spool) while PostgreSQL is down.
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(options.timeout)
                .connect_lazy_with(connect);
            Ok(Db::Postgres(pool))
        } else {
            Err(LedgerError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// Applies the backend's pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await)
    }
}

/// SQLite's "file is not a database" (SQLITE_NOTADB) is what SQLCipher answers for a key that
/// does not decrypt the file's first page, and plain SQLite for an encrypted file.
fn sqlite_open_error(error: sqlx::Error, url: &str, keyed: bool) -> LedgerError {
    let not_a_database =
        matches!(&error, sqlx::Error::Database(db) if db.code().as_deref() == Some("26"));
    if !not_a_database {
        return LedgerError::db("opening the SQLite database")(error);
    }
    LedgerError::KeyMismatch(if keyed {
        format!(
            "the SQLite ledger {url} cannot be opened with the configured key \
             ([ledger] database_key_env or database_key_file): it was encrypted with another \
             key, or it is not encrypted (encrypt a plain ledger with `tollgate ledger rekey \
             --from-plain`)"
        )
    } else {
        format!(
            "the SQLite ledger {url} is encrypted (or is not a SQLite database): set [ledger] \
             database_key_env or database_key_file to the key it was written with"
        )
    })
}

/// Connects to `database_url` and applies the pending migrations.
pub async fn migrate(database_url: &str) -> Result<()> {
    migrate_with_key(database_url, None).await
}

/// [`migrate`] for a ledger encrypted with `key` (`tollgate migrate`).
pub async fn migrate_with_key(database_url: &str, key: Option<LedgerKey>) -> Result<()> {
    let db = Db::connect(
        database_url,
        DbOptions {
            key,
            ..DbOptions::default()
        },
    )
    .await?;
    let result = db.migrate().await;
    db.close().await;
    result
}

/// The URL without its password, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }
}
