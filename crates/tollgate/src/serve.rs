//! `tollgate run`: the gateway on Pingora, with the ledger writer, the alert writer, the admin
//! API and the alert deliverer beside it, and the configuration reloaded live (SIGHUP, the admin
//! API, the files watched); with `--upgrade`, taking over from the gateway running with the
//! same configuration (crate::upgrade).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use tollgate_config::{
    Config, CounterStore, Durability, LedgerFullPolicy, Loaded, SqliteSynchronous,
};
use tollgate_counters::{MemoryStore, RedisConfig, RedisStore, ResilientConfig, ResilientStore};
use tollgate_ledger::{Ledger, LedgerConfig, OnFull};
use tollgate_proxy::{AlertRaiser, Counters, Gateway, HeadGuard, HeadLimits, ledger_seeder};

use crate::health::readiness;
use crate::reload::Reloader;
use crate::shutdown;
use crate::upgrade::{PidFile, find_running};

/// How long shutdown waits for queued usage alerts to be stored.
const ALERT_DRAIN_SECS: u64 = 5;

pub fn run(path: &Path, upgrading: bool) -> anyhow::Result<ExitCode> {
    let Loaded { config, warnings } = match tollgate_config::load(path) {
        Ok(loaded) => loaded,
        Err(report) => {
            eprint!("{report}");
            return Ok(ExitCode::FAILURE);
        }
    };
    eprint!("{warnings}");
    // Written out when `run` returns; a SIGTERM's exit flushes it itself (`flush_all`).
    let logging = crate::logging::init(config.log.format);
    let config = Arc::new(config);
    // Before anything is opened: a second gateway on the same files is refused here.
    let predecessor = find_running(&config.proxy.pid_file, upgrading)?;

    // The ledger's writer runs on a runtime of its own so that flushing to SQL never competes
    // with the proxy's request threads.
    let ledger_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tollgate-ledger")
        .enable_all()
        .build()
        .context("starting the ledger runtime")?;
    let (ledger, handle) = ledger_runtime
        .block_on(Ledger::open(LedgerConfig {
            // The replaced process holds the spool until it exits.
            spool_takeover: upgrading,
            ..ledger_config(&config)?
        }))
        .with_context(|| format!("opening the ledger at {}", config.storage.database_url))?;

    let (counters, shared_counters) = counters(&config, &ledger, &handle, &ledger_runtime)?;
    // In-process counters start from the ledger; after an upgrade, only once the old process
    // has recorded its last call there (docs/operations.md, "What an upgrade promises").
    let (seed_gate, seed_gate_open) = tokio::sync::watch::channel(predecessor.is_none());
    let counters = counters.with_seed_gate(seed_gate_open);
    // Set at SIGQUIT: every response from then on closes its connection.
    let closing = Arc::new(AtomicBool::new(false));
    let gateway = Gateway::new(Arc::clone(&config), counters, handle.clone())
        .context("building the gateway from its configuration")?
        .with_stored_keys(ledger.clone())
        .with_closing(Arc::clone(&closing));
    // Alerts are written on the ledger's runtime too: a call only queues its crossings.
    let alerts = AlertRaiser::start(ledger.clone(), ledger_runtime.handle(), gateway.metrics());
    let gateway = gateway.with_alerts(alerts.clone());
    // Shares the gateway's key cache, so that a revocation through the admin API clears it.
    let keys = gateway.keys().clone();
    // Erasing a user through the admin API forgets their counters here too.
    let erased_counters = gateway.counters();
    let cut_off = gateway.cut_off();
    let snapshots = gateway.snapshots();
    let reloader = Arc::new(Reloader::new(
        path,
        Arc::clone(&config),
        &warnings,
        Arc::clone(&snapshots),
        gateway.metrics(),
    ));
    let draining = Arc::new(AtomicBool::new(false));
    let ready = readiness(
        Arc::clone(&draining),
        Arc::clone(&snapshots),
        handle.clone(),
        shared_counters.clone(),
    );

    let server_conf = ServerConf {
        threads: config.proxy.worker_threads(),
        // The gateway's own drain ends the process as soon as no call is left, and records the
        // calls still running when `graceful_shutdown_secs` is over (crate::shutdown); Pingora
        // keeps its runtimes a little longer so that none of those is dropped first.
        grace_period_seconds: Some(
            config.proxy.graceful_shutdown_secs + shutdown::PINGORA_GRACE_MARGIN_SECS,
        ),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: config.proxy.upgrade_socket.display().to_string(),
        pid_file: config.proxy.pid_file.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: upgrading,
        ..Opt::default()
    };
    if let Some(dir) = config.proxy.upgrade_socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory of {}", dir.display()))?;
    }
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    if let Some(old) = &predecessor {
        tracing::info!(pid = old.pid, socket = %config.proxy.upgrade_socket.display(), "upgrade: asking the running gateway for its listening sockets");
        old.hand_over()?;
    }
    // With --upgrade, waits for the sockets (Pingora exits if they do not come).
    server.bootstrap();
    let pid_file = Arc::new(PidFile::write(&config.proxy.pid_file)?);
    if let Some(old) = predecessor {
        old.when_gone(move || {
            let _ = seed_gate.send(true);
        })?;
    } else {
        drop(seed_gate);
    }
    let phases = server.watch_execution_phase();
    let metrics = gateway.metrics();
    crate::metrics::register(&metrics, handle.clone()).context("registering metrics")?;
    // Every request head passes the guard (total deadline, size cap) before Pingora parses it.
    let head_limits = HeadLimits {
        max_bytes: usize::try_from(config.proxy.max_request_header_bytes).unwrap_or(usize::MAX),
        deadline: std::time::Duration::from_millis(config.proxy.header_read_timeout_ms),
    };
    let app = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut proxy = Service::new(
        "tollgate proxy".to_owned(),
        HeadGuard::new(app, head_limits, Arc::clone(&metrics))
            .holding_last_bytes(config.ledger.durability == Durability::Sync),
    );
    proxy.add_tcp(&config.proxy.listen.to_string());
    server.add_service(proxy);
    tracing::info!(listen = %config.proxy.listen, "tollgate proxy listening");
    let admin = crate::admin_server::start(
        crate::admin_server::Gateway {
            // The admin API reads the configuration the proxy's new requests start with.
            config: Arc::new(move || Arc::clone(&snapshots.load().config)),
            metrics: {
                let metrics = Arc::clone(&metrics);
                // The degraded gauge is read when scraped, so that it shows a recovery also
                // when no request has come since; the store's counts too.
                Arc::new(move || {
                    if let Some(store) = &shared_counters {
                        metrics.set_counters_degraded(store.is_degraded());
                        let stats = store.redis().stats();
                        metrics.set_redis_stats(stats.operations, stats.round_trips);
                    }
                    metrics.render()
                })
            },
            on_key_revoked: Arc::new(move || keys.invalidate()),
            forget_counters: tollgate_admin::forget_counters_with(move |user: String| {
                let counters = Arc::clone(&erased_counters);
                async move { counters.forget_user(&user).await.map_err(|e| e.to_string()) }
            }),
            control: Arc::clone(&reloader) as tollgate_admin::ConfigControlRef,
            readiness: ready,
            log: Arc::clone(&logging.level) as tollgate_admin::LogControlRef,
        },
        ledger,
    )?;
    crate::reload::on_sighup(Arc::clone(&reloader), admin.handle())
        .context("listening for SIGHUP")?;
    crate::watch::spawn(reloader).context("starting the configuration watcher")?;
    let upgrade_started = Arc::new(AtomicBool::new(false));
    let on_handover = {
        let (closing, upgrade_started) = (Arc::clone(&closing), Arc::clone(&upgrade_started));
        move || {
            closing.store(true, Ordering::SeqCst);
            upgrade_started.store(true, Ordering::SeqCst);
        }
    };
    let on_term = {
        let upgrade_started = Arc::clone(&upgrade_started);
        let started = std::sync::Once::new();
        let metrics = Arc::clone(&metrics);
        let cut_off = cut_off.clone();
        let runtime = ledger_runtime.handle().clone();
        let (alerts, handle) = (alerts.clone(), handle.clone());
        let grace = std::time::Duration::from_secs(config.proxy.graceful_shutdown_secs);
        let draining = Arc::clone(&draining);
        let admin_stop = admin.stopper();
        let pid_file = Arc::clone(&pid_file);
        move || {
            // From the signal on, /readyz answers 503.
            draining.store(true, Ordering::SeqCst);
            // After a handover the new process answers on the admin address too (both bind it
            // with SO_REUSEPORT): this one stops taking admin connections.
            if upgrade_started.load(Ordering::SeqCst) {
                let _ = admin_stop.send(true);
            }
            started.call_once(|| {
                let (cut_off, cut_runtime) = (cut_off.clone(), runtime.clone());
                let (alerts, handle, runtime) = (alerts.clone(), handle.clone(), runtime.clone());
                let metrics = Arc::clone(&metrics);
                let pid_file = Arc::clone(&pid_file);
                shutdown::start(shutdown::Drain {
                    in_flight: Box::new(move || metrics.in_flight() + metrics.busy_connections()),
                    cut_off: Box::new(move || cut_runtime.block_on(cut_off.record_all())),
                    finish: Box::new(move || {
                        finish(&runtime, &alerts, &handle);
                        pid_file.remove();
                        crate::log_writer::flush_all();
                    }),
                    grace,
                });
            });
        }
    };
    // Returns once the server has stopped (SIGINT: at once; SIGTERM and SIGQUIT end the
    // process from the drain thread, when no call is left).
    server.run(RunArgs {
        shutdown_signal: Box::new(shutdown::DrainOnTerm::new(on_term, on_handover, phases)),
    });
    admin.stop();
    finish(ledger_runtime.handle(), &alerts, &handle);
    pid_file.remove();
    Ok(ExitCode::SUCCESS)
}

/// What follows the last call: the alerts it raised stored (for a bounded time: with the
/// database down each write waits for its timeout), then the ledger drained to the database (or
/// the spool).
fn finish(
    runtime: &tokio::runtime::Handle,
    alerts: &AlertRaiser,
    handle: &tollgate_ledger::LedgerHandle,
) {
    let drained = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(ALERT_DRAIN_SECS),
            alerts.drain(),
        )
        .await
    });
    if drained.is_err() {
        tracing::warn!("usage alerts still queued at shutdown were not stored");
    }
    if let Err(e) = runtime.block_on(handle.shutdown()) {
        tracing::error!(error = %e, "draining the ledger at shutdown");
    }
    let m = handle.metrics();
    tracing::info!(
        accepted = m.accepted,
        written = m.written,
        spooled = m.spooled,
        dropped = m.dropped,
        "ledger drained"
    );
}

/// The counters the configuration asks for, and the shared store behind them (Redis) when there
/// is one. A Redis store's connection and probe tasks live on the ledger's runtime, which
/// outlives the proxy.
fn counters(
    config: &Config,
    ledger: &tollgate_ledger::Ledger,
    writer: &tollgate_ledger::LedgerHandle,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<(Counters, Option<ResilientStore>)> {
    match &config.storage.counters {
        CounterStore::Memory => Ok((
            Counters::memory(Arc::new(MemoryStore::new()), Some(ledger.clone())),
            None,
        )),
        CounterStore::Redis {
            url,
            timeout_ms,
            key_prefix,
            cluster,
        } => {
            let _entered = runtime.enter();
            let redis = RedisStore::new(RedisConfig {
                key_prefix: key_prefix.clone(),
                cluster: *cluster,
                ..RedisConfig::new(url.as_str(), *timeout_ms)
            })
            .with_context(|| format!("connecting to Redis at {url}"))?;
            let store = ResilientStore::new(
                redis,
                ledger_seeder(ledger.clone(), writer.clone()),
                ResilientConfig {
                    default_policy: config.storage.on_counter_store_unreachable,
                    ..ResilientConfig::default()
                },
            );
            Ok((Counters::Shared(store.clone()), Some(store)))
        }
    }
}

pub(crate) fn ledger_config(config: &Config) -> anyhow::Result<LedgerConfig> {
    let settings = &config.ledger;
    let mut ledger = LedgerConfig::new(&config.storage.database_url, &settings.spool_dir);
    ledger.batch_max_events = usize::try_from(settings.batch_max_events).unwrap_or(usize::MAX);
    ledger.flush_interval_ms = settings.flush_interval_ms;
    ledger.queue_capacity = usize::try_from(settings.queue_capacity).unwrap_or(usize::MAX);
    ledger.spool_max_bytes = settings.spool_max_bytes;
    ledger.on_full = match settings.on_full {
        LedgerFullPolicy::Block => OnFull::Block,
        LedgerFullPolicy::Spool => OnFull::Spool,
        LedgerFullPolicy::Drop => OnFull::Drop,
    };
    ledger.durability = match settings.durability {
        Durability::Batched => tollgate_ledger::Durability::Batched,
        Durability::Sync => tollgate_ledger::Durability::Sync,
    };
    ledger.group_commit_ms = settings.group_commit_ms;
    ledger.sqlite_sync = match settings.sqlite_synchronous {
        SqliteSynchronous::Full => tollgate_ledger::SqliteSync::Full,
        SqliteSynchronous::Normal => tollgate_ledger::SqliteSync::Normal,
    };
    ledger.retain_usage_logs_months = settings.retain_usage_logs_months;
    ledger.key = crate::encryption::ledger_key(config)?;
    Ok(ledger)
}
