//! A PostgreSQL database of a test's own (feature `test-support`, for the tests of every crate):
//! created on the server of `DATABASE_URL` — by default the local
//! `postgres://postgres@127.0.0.1:5432/test`, or `root@` where that role does not exist — and
//! dropped with the value.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

const LOCAL_SERVERS: [&str; 2] = [
    "postgres://postgres@127.0.0.1:5432/test",
    "postgres://root@127.0.0.1:5432/test",
];

/// A database created for one test; dropping it drops the database.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's URL, for a ledger or `storage.database_url`.
    pub url: String,
    server_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates `tollgate_{prefix}_{unique suffix}`. Works inside an async runtime as well as
    /// outside one. Panics when no PostgreSQL server answers: a test cannot run without it.
    #[allow(clippy::panic)]
    pub fn create(prefix: &str) -> TestDatabase {
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "tollgate_{prefix}_{}_{nanos}_{}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        let servers: Vec<String> = match std::env::var("DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => vec![url],
            _ => LOCAL_SERVERS.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut failures = Vec::new();
        for server_url in servers {
            match on_server(&server_url, format!("CREATE DATABASE {name}")) {
                Ok(()) => {
                    return TestDatabase {
                        url: with_database(&server_url, &name),
                        server_url,
                        name,
                    };
                }
                Err(e) => failures.push(e),
            }
        }
        panic!("no PostgreSQL to create a test database on: {failures:?}");
    }

    /// The database's URL with the server's address replaced by `addr` (a proxy in front of
    /// the server, which a test can break).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        with_address(&self.url, addr)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Never a panic in a drop (a failed test is already unwinding): a database left
        // behind is only reported.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = on_server(&self.server_url, sql) {
            eprintln!("test database {} not dropped: {e}", self.name);
        }
    }
}

/// `url` with its host and port replaced by `addr`, user, database and query kept.
fn with_address(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (user, rest) = match rest.split_once('@') {
        Some((user, rest)) => (format!("{user}@"), rest),
        None => (String::new(), rest),
    };
    let path = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
    format!("{scheme}://{user}{addr}{path}")
}

/// `server_url` with its database replaced by `name`, the query kept.
fn with_database(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server_url, String::new()),
    };
    let server = base
        .rfind('/')
        .filter(|&slash| slash > "postgres://".len())
        .map_or(base, |slash| &base[..slash]);
    format!("{server}/{name}{query}")
}

/// Runs `sql` on the server, on a thread and runtime of its own: the caller may be inside a
/// runtime (an async test, or a drop during one), where another cannot be started.
fn on_server(server_url: &str, sql: String) -> Result<(), String> {
    let server_url = server_url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&server_url)
                .await
                .map_err(|e| format!("PostgreSQL at {server_url}: {e}"))?;
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the database thread panicked".to_owned())?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_user_and_query_and_swap_the_rest() {
        let url = with_database(
            "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
            "db1",
        );
        assert_eq!(
            url,
            "postgres://postgres@127.0.0.1:5432/db1?sslmode=disable"
        );
        let via = with_address(&url, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(
            via,
            "postgres://postgres@127.0.0.1:4000/db1?sslmode=disable"
        );
        let bare = with_address(
            "postgres://localhost/db1",
            "127.0.0.1:4000".parse().unwrap(),
        );
        assert_eq!(bare, "postgres://127.0.0.1:4000/db1");
    }
}
