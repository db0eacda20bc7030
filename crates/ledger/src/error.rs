//! The ledger's one error type.

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "database URL {0:?} is not supported (expected sqlite://path/to/file.db or postgres://...)"
    )]
    UnsupportedUrl(String),
    #[error("database error during {context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the ledger database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("ledger spool {path}: {source}")]
    Spool {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "ledger spool is full ({bytes} bytes of at most {max_bytes}); raise spool_max_bytes or bring the database back"
    )]
    SpoolFull { bytes: u64, max_bytes: u64 },
    #[error("the usage event was dropped because the ledger was full (policy `drop`)")]
    Dropped,
    #[error("the ledger has shut down; usage events are no longer taken")]
    Closed,
    #[error("a ledger task stopped before finishing its work: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("usage event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("stored value in column {column} is invalid: {detail}")]
    Corrupt {
        column: &'static str,
        detail: String,
    },
    #[error(
        "the ledger key must be 64 hex digits (32 random bytes, e.g. from `openssl rand -hex 32`); \
         the one given has {0} characters"
    )]
    KeyFormat(usize),
    /// The configured key (or its absence) does not fit the stored data: refused at start
    /// rather than reading an encrypted ledger as an empty one.
    #[error("{0}")]
    KeyMismatch(String),
    #[error("encryption failed: {0}")]
    Encryption(String),
    #[error("ledger file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the export failed: {0}")]
    Export(#[source] std::io::Error),
}

impl LedgerError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> LedgerError {
        move |source| LedgerError::Database { context, source }
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Whether a failed database write may succeed if retried later (connection refused, lock
/// timeout, deadlock, missing table before migration, …) rather than being refused for its
/// data. Unknown errors count as transient: retrying from the spool is always safe, while
/// setting an event aside needs certainty.
pub(crate) fn is_transient(error: &LedgerError) -> bool {
    let LedgerError::Database { source, .. } = error else {
        return true;
    };
    match source {
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return true;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite (extended) result codes; primary TOOBIG, CONSTRAINT, MISMATCH, RANGE.
                let primary = code.parse::<u32>().map_or(0, |c| c & 0xff);
                !matches!(primary, 18 | 19 | 20 | 25)
            } else {
                // PostgreSQL SQLSTATE classes 22 (data exception) and 23 (integrity).
                !(code.starts_with("22") || code.starts_with("23"))
            }
        }
        sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => false,
        _ => true,
    }
}
