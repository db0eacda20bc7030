//! Which settings a running gateway takes only when it starts: its listeners, threads, the
//! request-head guard, the counter store, the ledger and the log's format are built once from
//! the configuration the process started with, so a reload that changes them leaves them as
//! they were and says so.

use crate::Config;

/// The settings that differ between `running` (what the process started with) and `new` and
/// that take effect only after a restart, by their names in gateway.toml.
pub fn pending_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (running, new);
    [
        ("proxy.listen", a.proxy.listen != b.proxy.listen),
        ("proxy.threads", a.proxy.threads != b.proxy.threads),
        (
            "proxy.max_request_header_bytes",
            a.proxy.max_request_header_bytes != b.proxy.max_request_header_bytes,
        ),
        (
            "proxy.header_read_timeout_ms",
            a.proxy.header_read_timeout_ms != b.proxy.header_read_timeout_ms,
        ),
        (
            "proxy.graceful_shutdown_secs",
            a.proxy.graceful_shutdown_secs != b.proxy.graceful_shutdown_secs,
        ),
        (
            "proxy.upgrade_socket",
            a.proxy.upgrade_socket != b.proxy.upgrade_socket,
        ),
        ("proxy.pid_file", a.proxy.pid_file != b.proxy.pid_file),
        ("admin.listen", a.admin.listen != b.admin.listen),
        ("admin.token_env", a.admin.token_env != b.admin.token_env),
        ("admin.token_file", a.admin.token_file != b.admin.token_file),
        (
            "admin.metrics_per_plan",
            a.admin.metrics_per_plan != b.admin.metrics_per_plan,
        ),
        ("storage.counters", a.storage.counters != b.storage.counters),
        (
            "storage.database_url",
            a.storage.database_url != b.storage.database_url,
        ),
        ("ledger", a.ledger != b.ledger),
        ("log.format", a.log.format != b.log.format),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::CounterStore;

    fn shipped() -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml");
        crate::load_with_env(&path, &|_| Some("k".to_owned()))
            .unwrap()
            .config
    }

    #[test]
    fn live_settings_need_no_restart() {
        let running = shipped();
        let mut new = running.clone();
        new.plans.clear();
        new.default_plan = None;
        new.alert_thresholds = vec![50];
        new.proxy.upstream_read_timeout_ms += 1;
        new.proxy.key_cache_ttl_ms += 1;
        new.providers.clear();
        assert!(pending_restart(&running, &new).is_empty());
    }

    #[test]
    fn a_new_usage_log_retention_waits_for_a_restart() {
        let running = shipped();
        let mut new = running.clone();
        new.ledger.retain_usage_logs_months = std::num::NonZeroU32::new(6);
        assert_eq!(pending_restart(&running, &new), ["ledger"]);
    }

    #[test]
    fn listeners_stores_and_the_ledger_are_reported() {
        let running = shipped();
        let mut new = running.clone();
        new.proxy.listen.set_port(1);
        new.proxy.threads += 1;
        new.storage.counters = CounterStore::Redis {
            url: "redis://127.0.0.1:6379".into(),
            timeout_ms: 50,
            key_prefix: String::new(),
            cluster: false,
        };
        new.storage.database_url = "postgres://db/tollgate".into();
        new.ledger.queue_capacity += 1;
        new.log.format = crate::LogFormat::Json;
        assert_eq!(
            pending_restart(&running, &new),
            [
                "proxy.listen",
                "proxy.threads",
                "storage.counters",
                "storage.database_url",
                "ledger",
                "log.format"
            ]
        );
    }
}
