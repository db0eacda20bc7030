//! Writing a batch of usage events: the log rows and the summary increments they imply, in one
//! transaction.
//!
//! The log insert is `ON CONFLICT (event_id) DO NOTHING`: when its row count is the number of
//! events, all are new; otherwise the transaction is undone and run again with
//! `RETURNING event_id`, so the database says which events are new. Only those are added to the
//! summaries, with
//! `INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x`. Replaying a batch that was already
//! committed therefore changes nothing, and concurrent writers never lose an increment. A
//! refused call (`UsageEvent::refusal_reason`) gets its log row and no increment. Every
//! amount is a `BIGINT`: a value is clamped to `i64::MAX` before it is bound (`to_db`), and a
//! summary's sum saturates there too, in the statement itself, rather than overflowing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use tollgate_domain::Provider;

use crate::db::{Db, on_db};
use crate::erase::{is_erased, user_ref};
use crate::error::{LedgerError, Result};
use crate::event::{UsageEvent, to_db};

/// Users looked up in `user_erasures` per statement.
const USERS_PER_ERASURE_LOOKUP: usize = 500;

/// Rows per INSERT statement: 33 parameters each stays well under both backends' limits.
const ROWS_PER_INSERT: usize = 200;

/// What a batch write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events stored by this write.
    pub inserted: usize,
    /// Events already stored (a replay), or repeated within the batch.
    pub duplicates: usize,
    /// Events dropped because their user was erased after the call began (`erase.rs`).
    pub erased: usize,
}

/// Summed usage of a set of events, as summary increments.
#[derive(Clone, Copy, Debug, Default)]
struct Delta {
    calls: i64,
    tokens: i64,
    input_tokens: i64,
    cached_input_tokens: i64,
    cache_creation_input_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    units: i64,
    cost_nanousd: i64,
    error_calls: i64,
    estimated_calls: i64,
    latency_ms_sum: i64,
}

impl Delta {
    fn add(&mut self, e: &UsageEvent) {
        let u = e.usage;
        self.calls = self.calls.saturating_add(1);
        self.tokens = self.tokens.saturating_add(to_db(u.total_tokens()));
        self.input_tokens = self.input_tokens.saturating_add(to_db(u.input_tokens));
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(to_db(u.cached_input_tokens));
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(to_db(u.cache_creation_input_tokens));
        self.output_tokens = self.output_tokens.saturating_add(to_db(u.output_tokens));
        self.reasoning_tokens = self
            .reasoning_tokens
            .saturating_add(to_db(u.reasoning_tokens));
        self.units = self.units.saturating_add(to_db(u.units));
        self.cost_nanousd = self
            .cost_nanousd
            .saturating_add(to_db(e.cost.total_nanousd));
        self.error_calls = self.error_calls.saturating_add(i64::from(e.is_error()));
        self.estimated_calls = self.estimated_calls.saturating_add(i64::from(e.estimated));
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(to_db(e.latency_ms));
    }
}

/// Stores `events` (log rows and summary increments) in one transaction.
pub(crate) async fn insert_batch(db: &Db, events: &[UsageEvent]) -> Result<BatchOutcome> {
    let mut seen = HashSet::with_capacity(events.len());
    let mut unique: Vec<&UsageEvent> = events
        .iter()
        .filter(|e| seen.insert(e.event_id.as_str()))
        .collect();
    // Inserting in id order means two writers holding overlapping events wait on each other in
    // one direction only, instead of deadlocking.
    unique.sort_unstable_by(|a, b| a.event_id.cmp(&b.event_id));
    if unique.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let now = Utc::now();
    let postgres = matches!(db, Db::Postgres(_));
    let total = unique.len();
    // Nearly always every event is new, and the inserts' row counts say so without the database
    // sending each id back (SQLite's driver hands over every returned row separately between
    // threads). When some were stored already (a replay), the transaction is undone and run
    // again with each insert returning the new ones' ids.
    let mut returning = false;
    let inserted: HashSet<&str> = on_db!(db, pool => 'batch: loop {
        let mut tx = pool
            .begin_with(db.begin_write())
            .await
            .map_err(LedgerError::db("beginning a batch"))?;
        // Events of calls that began before their user was erased are not written (erase.rs).
        // The SHARE lock makes an erase wait for this batch, or this batch for the erase.
        if postgres {
            sqlx::query("LOCK TABLE user_erasures IN SHARE MODE")
                .execute(&mut *tx)
                .await
                .map_err(LedgerError::db("reading erasures"))?;
        }
        // Whether anyone was ever erased, without counting them all on every batch.
        let (salt, erasures): (String, i64) = sqlx::query_as(
            "SELECT salt, (SELECT COUNT(*) FROM (SELECT 1 FROM user_erasures LIMIT 1) AS any_erasure) \
             FROM erasure_salt WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(LedgerError::db("reading erasures"))?;
        let mut erased_at: HashMap<&str, DateTime<Utc>> = HashMap::new();
        if erasures > 0 {
            let refs: BTreeMap<String, &str> = unique
                .iter()
                .map(|e| (user_ref(&salt, &e.user_id), e.user_id.as_str()))
                .collect();
            let refs: Vec<(String, &str)> = refs.into_iter().collect();
            for chunk in refs.chunks(USERS_PER_ERASURE_LOOKUP) {
                let mut lookup = QueryBuilder::new(
                    "SELECT user_ref, erased_at FROM user_erasures WHERE user_ref IN (");
                let mut list = lookup.separated(", ");
                for (r, _) in chunk {
                    list.push_bind(r.clone());
                }
                lookup.push(")");
                let found: Vec<(String, DateTime<Utc>)> = lookup
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(LedgerError::db("reading erasures"))?;
                for (r, at) in found {
                    if let Some((_, user)) = chunk.iter().find(|(c, _)| *c == r) {
                        let latest = erased_at.entry(*user).or_insert(at);
                        *latest = (*latest).max(at);
                    }
                }
            }
        }
        unique.retain(|e| !is_erased(e, &erased_at));
        let mut inserted = HashSet::with_capacity(unique.len());
        let log_rows = |chunk: &[&UsageEvent]| {
            let mut insert = QueryBuilder::new(INSERT_LOGS);
            insert.push_values(chunk, |mut row, e| {
                let u = e.usage;
                row.push_bind(e.event_id.clone())
                    .push_bind(e.user_id.clone())
                    .push_bind(e.key_id.clone())
                    .push_bind(e.provider.as_str())
                    .push_bind(e.model.clone())
                    .push_bind(e.endpoint.clone())
                    .push_bind(e.method.clone())
                    .push_bind(i64::from(e.status))
                    .push_bind(to_db(u.input_tokens))
                    .push_bind(to_db(u.cached_input_tokens))
                    .push_bind(to_db(u.cache_creation_input_tokens))
                    .push_bind(to_db(u.cache_creation_1h_input_tokens))
                    .push_bind(to_db(u.output_tokens))
                    .push_bind(to_db(u.reasoning_tokens))
                    .push_bind(to_db(u.total_tokens()))
                    .push_bind(to_db(u.units))
                    .push_bind(u.reported_cost_nanousd.map(to_db))
                    .push_bind(to_db(e.cost.input_nanousd))
                    .push_bind(to_db(e.cost.output_nanousd))
                    .push_bind(to_db(e.cost.other_nanousd))
                    .push_bind(to_db(e.cost.total_nanousd))
                    .push_bind(e.price_version.clone())
                    .push_bind(e.estimated)
                    .push_bind(to_db(e.latency_ms))
                    .push_bind(to_db(e.request_bytes))
                    .push_bind(to_db(e.response_bytes))
                    .push_bind(e.error_message.clone())
                    .push_bind(e.billing_period.clone())
                    .push_bind(e.occurred_at)
                    .push_bind(e.occurred_at.date_naive().to_string())
                    .push_bind(now)
                    .push_bind(e.request_id.clone())
                    .push_bind(e.refusal_reason.clone());
            });
            insert.push(" ON CONFLICT (event_id) DO NOTHING");
            insert
        };
        for chunk in unique.chunks(ROWS_PER_INSERT) {
            if !returning {
                let stored = log_rows(chunk)
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(LedgerError::db("inserting usage logs"))?
                    .rows_affected();
                if usize::try_from(stored).is_ok_and(|n| n == chunk.len()) {
                    inserted.extend(chunk.iter().map(|e| e.event_id.as_str()));
                    continue;
                }
                tx.rollback().await.map_err(LedgerError::db("inserting usage logs"))?;
                returning = true;
                continue 'batch;
            }
            let mut insert = log_rows(chunk);
            insert.push(" RETURNING event_id");
            let ids: Vec<(String,)> = insert
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(LedgerError::db("inserting usage logs"))?;
            let ids: HashSet<String> = ids.into_iter().map(|(id,)| id).collect();
            inserted.extend(
                chunk
                    .iter()
                    .filter(|e| ids.contains(&e.event_id))
                    .map(|e| e.event_id.as_str()),
            );
        }

        let (summaries, providers) = deltas(unique.iter().copied().filter(|e| inserted.contains(e.event_id.as_str())));
        // BTreeMap order: every writer takes row locks in the same order, so two concurrent
        // batches cannot deadlock on summary rows.
        // One statement per chunk of rows instead of one per user: a batch of many users' calls
        // would otherwise cost a round trip to the database per user and provider.
        let summaries: Vec<_> = summaries.iter().collect();
        for chunk in summaries.chunks(ROWS_PER_INSERT) {
            let mut upsert = QueryBuilder::new(UPSERT_SUMMARY_HEAD);
            upsert.push_values(chunk, |mut row, ((user, period), d)| {
                row.push_bind(*user)
                    .push_bind(*period)
                    .push_bind(d.calls)
                    .push_bind(d.tokens)
                    .push_bind(d.input_tokens)
                    .push_bind(d.cached_input_tokens)
                    .push_bind(d.cache_creation_input_tokens)
                    .push_bind(d.output_tokens)
                    .push_bind(d.reasoning_tokens)
                    .push_bind(d.units)
                    .push_bind(d.cost_nanousd)
                    .push_bind(d.error_calls)
                    .push_bind(d.estimated_calls)
                    .push_bind(d.latency_ms_sum)
                    .push_bind(now)
                    .push_bind(now);
            });
            upsert.push(UPSERT_SUMMARY_TAIL.as_str());
            upsert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(LedgerError::db("updating usage summaries"))?;
        }
        let providers: Vec<_> = providers.iter().collect();
        for chunk in providers.chunks(ROWS_PER_INSERT) {
            let mut upsert = QueryBuilder::new(UPSERT_PROVIDER_SUMMARY_HEAD);
            upsert.push_values(chunk, |mut row, ((user, period, provider), d)| {
                row.push_bind(*user)
                    .push_bind(*period)
                    .push_bind(provider.as_str())
                    .push_bind(d.calls)
                    .push_bind(d.tokens)
                    .push_bind(d.input_tokens)
                    .push_bind(d.output_tokens)
                    .push_bind(d.units)
                    .push_bind(d.cost_nanousd)
                    .push_bind(d.error_calls)
                    .push_bind(d.latency_ms_sum)
                    .push_bind(now);
            });
            upsert.push(UPSERT_PROVIDER_SUMMARY_TAIL.as_str());
            upsert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(LedgerError::db("updating provider summaries"))?;
        }
        tx.commit().await.map_err(LedgerError::db("committing a batch"))?;
        break inserted;
    });
    let erased = total - unique.len();
    Ok(BatchOutcome {
        inserted: inserted.len(),
        duplicates: events.len() - inserted.len() - erased,
        erased,
    })
}

/// Per user and period, keyed by the events' own strings (a batch is mostly one user's calls).
type SummaryDeltas<'a> = BTreeMap<(&'a str, &'a str), Delta>;
type ProviderDeltas<'a> = BTreeMap<(&'a str, &'a str, Provider), Delta>;

fn deltas<'a>(
    events: impl Iterator<Item = &'a UsageEvent>,
) -> (SummaryDeltas<'a>, ProviderDeltas<'a>) {
    let mut summaries = SummaryDeltas::new();
    let mut providers = ProviderDeltas::new();
    // A refused call is logged, never counted: no summary holds it, so neither do the limits
    // rebuilt from the summaries, the error rates or any total of the admin API.
    for e in events.filter(|e| !e.is_refusal()) {
        summaries
            .entry((e.user_id.as_str(), e.billing_period.as_str()))
            .or_default()
            .add(e);
        providers
            .entry((e.user_id.as_str(), e.billing_period.as_str(), e.provider))
            .or_default()
            .add(e);
    }
    (summaries, providers)
}

const INSERT_LOGS: &str = "INSERT INTO api_usage_logs (event_id, user_id, key_id, provider, \
    model, endpoint, method, status_code, input_tokens, cached_input_tokens, \
    cache_creation_input_tokens, cache_creation_1h_input_tokens, output_tokens, \
    reasoning_tokens, total_tokens, units, reported_cost_nanousd, cost_input_nanousd, \
    cost_output_nanousd, cost_other_nanousd, cost_total_nanousd, price_version, estimated, \
    latency_ms, request_bytes, response_bytes, error_message, billing_period, occurred_at, \
    occurred_day, recorded_at, request_id, refusal_reason) ";

/// The largest value a `BIGINT` holds, as SQL text.
const BIGINT_MAX: &str = "9223372036854775807";

/// `column = table.column + excluded.column`, saturating at `BIGINT_MAX` instead of overflowing:
/// SQLite would store the sum as REAL, which no reader decodes as a `BIGINT` (the user's counters,
/// the admin API and closing the period would all fail on that row), and PostgreSQL would reject
/// the whole batch. Increments are never negative (`to_db`), so the subtraction cannot overflow.
fn saturating_increment(table: &str, column: &str) -> String {
    format!(
        "{column} = CASE WHEN {table}.{column} > {BIGINT_MAX} - excluded.{column} \
         THEN {BIGINT_MAX} ELSE {table}.{column} + excluded.{column} END"
    )
}

/// The increments of `columns` of `table`, each saturating, as one `SET` list.
fn saturating_increments(table: &str, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| saturating_increment(table, c))
        .collect::<Vec<_>>()
        .join(", ")
}

const UPSERT_SUMMARY_HEAD: &str = "INSERT INTO usage_summaries (user_id, billing_period, \
    total_calls, total_tokens, input_tokens, cached_input_tokens, cache_creation_input_tokens, \
    output_tokens, reasoning_tokens, units, total_cost_nanousd, error_calls, estimated_calls, \
    latency_ms_sum, created_at, updated_at) ";

static UPSERT_SUMMARY_TAIL: LazyLock<String> = LazyLock::new(|| {
    let increments = saturating_increments(
        "usage_summaries",
        &[
            "total_calls",
            "total_tokens",
            "input_tokens",
            "cached_input_tokens",
            "cache_creation_input_tokens",
            "output_tokens",
            "reasoning_tokens",
            "units",
            "total_cost_nanousd",
            "error_calls",
            "estimated_calls",
            "latency_ms_sum",
        ],
    );
    format!(
        " ON CONFLICT (user_id, billing_period) DO UPDATE SET {increments}, \
         updated_at = excluded.updated_at"
    )
});

const UPSERT_PROVIDER_SUMMARY_HEAD: &str = "INSERT INTO usage_summary_providers (user_id, \
    billing_period, provider, calls, tokens, input_tokens, output_tokens, units, cost_nanousd, \
    error_calls, latency_ms_sum, updated_at) ";

static UPSERT_PROVIDER_SUMMARY_TAIL: LazyLock<String> = LazyLock::new(|| {
    let increments = saturating_increments(
        "usage_summary_providers",
        &[
            "calls",
            "tokens",
            "input_tokens",
            "output_tokens",
            "units",
            "cost_nanousd",
            "error_calls",
            "latency_ms_sum",
        ],
    );
    format!(
        " ON CONFLICT (user_id, billing_period, provider) DO UPDATE SET {increments}, \
         updated_at = excluded.updated_at"
    )
});
