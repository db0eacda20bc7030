//! How the ledger is set up: the database, batching, the queue, the spool and their limits.

use std::num::NonZeroU32;
use std::path::PathBuf;

use crate::encryption::LedgerKey;

/// What `record` does when the in-memory queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room in the queue: `record` completes once the writer has taken enough off it,
    /// so a database that stalls slows the calls down instead of losing their usage.
    Block,
    /// Hand the event to the ledger's overflow task, which appends it to the on-disk spool
    /// (synced) and the writer replays it later. `record` still completes at once; it waits
    /// only if the overflow is full too, for the disk (never for the database).
    #[default]
    Spool,
    /// Drop the event and count it in `dropped`. Only for deployments that prefer losing usage
    /// to slowing down; the metric must stay 0 otherwise.
    Drop,
}

/// What the writer does when a batch can go neither to the database nor to a full spool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnSpoolFull {
    /// Keep the batch in memory and retry until the database or the spool takes it; the queue
    /// fills meanwhile and `on_full` applies to new events (under `spool` the overflow task
    /// retries the spool too, and once the overflow is full `record` waits).
    #[default]
    Block,
    /// Drop the batch and count its events in `dropped`.
    Drop,
}

/// When the writer commits the events it is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A batch is committed once it holds `batch_max_events` or `flush_interval_ms` after its
    /// first event: few, large transactions; a SIGKILL loses the events not yet committed.
    #[default]
    Batched,
    /// A batch is committed `group_commit_ms` after its first event (or at once with 0), so
    /// that a caller waiting on [`crate::LedgerHandle::record_durable`] waits about one commit;
    /// every event that arrives meanwhile shares the next one.
    Sync,
}

/// How far a SQLite commit is synced before it counts as done (SQLite's `synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// Every commit is fsynced: it survives a crash of the process and of the machine.
    #[default]
    Full,
    /// A commit is written to the write-ahead log without an fsync (the log is synced at each
    /// checkpoint): it survives a crash of the process (SIGKILL, OOM) but not a power loss.
    Normal,
}

/// The ledger's settings. [`LedgerConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://user@host/db`.
    pub database_url: String,
    /// A batch is written once it holds this many events...
    pub batch_max_events: usize,
    /// ...or this long after its first event arrived, whichever comes first.
    pub flush_interval_ms: u64,
    /// Events accepted but not yet written; past this `on_full` applies.
    pub queue_capacity: usize,
    pub on_full: OnFull,
    /// Where batches go while the database is unreachable.
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// A spool file is closed and a new one started past this size.
    pub spool_segment_bytes: u64,
    pub on_spool_full: OnSpoolFull,
    /// The spool may still be held by the process this one replaces (an upgrade, where both
    /// run for a while): instead of refusing to start, the writer takes the spool over once
    /// that process has let it go. Until then nothing can be spooled by this process.
    pub spool_takeover: bool,
    pub durability: Durability,
    /// Under [`Durability::Sync`], how long a batch waits for more events after its first.
    pub group_commit_ms: u64,
    /// A SQLite ledger's sync on commit; PostgreSQL keeps its server's own setting.
    pub sqlite_sync: SqliteSync,
    /// How long one database operation may wait for a connection (PostgreSQL) or a lock
    /// (SQLite's busy timeout) before the batch goes to the spool.
    pub db_timeout_ms: u64,
    pub max_connections: u32,
    /// Retries of an unreachable database back off up to this delay.
    pub retry_backoff_max_ms: u64,
    /// A billing period is closed into billing_history this long after it ended, so that calls
    /// made just before the boundary have been flushed.
    pub close_grace_ms: u64,
    /// Usage log rows whose billing period is more than this many months before the current
    /// month are deleted, at start and hourly; `None` keeps every row (`docs/ledger.md`).
    pub retain_usage_logs_months: Option<NonZeroU32>,
    /// Encrypts a SQLite ledger, the spool and PostgreSQL's personal columns; `None` stores
    /// usage data unencrypted (`docs/ledger.md`, "Encryption at rest").
    pub key: Option<LedgerKey>,
}

impl LedgerConfig {
    pub fn new(database_url: impl Into<String>, spool_dir: impl Into<PathBuf>) -> LedgerConfig {
        LedgerConfig {
            database_url: database_url.into(),
            batch_max_events: 500,
            flush_interval_ms: 200,
            queue_capacity: 100_000,
            on_full: OnFull::default(),
            spool_dir: spool_dir.into(),
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 16 << 20,
            on_spool_full: OnSpoolFull::default(),
            spool_takeover: false,
            durability: Durability::default(),
            group_commit_ms: 1,
            sqlite_sync: SqliteSync::default(),
            db_timeout_ms: 5_000,
            max_connections: 5,
            retry_backoff_max_ms: 5_000,
            close_grace_ms: 5 * 60 * 1_000,
            retain_usage_logs_months: None,
            key: None,
        }
    }
}
