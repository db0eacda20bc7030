//! The admin listener and the alert deliverers (webhooks, e-mail) beside the gateway, on a runtime of their own,
//! stopped after the proxy has stopped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tollgate_admin::{
    AdminState, AdminTokens, ConfigControlRef, ConfigSource, Deliverer, ForgetCounters,
    LogControlRef, Mailer, MetricsRenderer, OnKeyRevoked, Readiness,
};
use tollgate_ledger::Ledger;

pub struct AdminServer {
    runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the admin server is handed from the running gateway.
pub struct Gateway {
    pub config: ConfigSource,
    pub metrics: MetricsRenderer,
    /// Runs after each revocation through this API.
    pub on_key_revoked: OnKeyRevoked,
    /// Forgets an erased user's counters.
    pub forget_counters: ForgetCounters,
    pub control: ConfigControlRef,
    pub readiness: Readiness,
    /// The log's level, changed through `PUT /api/admin/log-level`.
    pub log: LogControlRef,
}

/// Binds `[admin] listen` and starts serving the API and delivering alerts.
pub fn start(gateway: Gateway, ledger: Ledger) -> anyhow::Result<AdminServer> {
    let Gateway {
        config,
        metrics,
        on_key_revoked,
        forget_counters,
        control,
        readiness,
        log,
    } = gateway;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tollgate-admin")
        .enable_all()
        .build()
        .context("starting the admin runtime")?;
    let settings = config().admin.clone();
    let tokens = AdminTokens::from_settings(&settings, &|name| std::env::var(name).ok())
        .with_context(|| format!("reading admin tokens from {:?}", settings.token_file))?;
    if tokens.is_empty() {
        tracing::warn!(
            token_env = %settings.token_env,
            "no admin token configured: the admin API answers only users' own keys"
        );
    }
    let (listener, addr) = runtime
        .block_on(tollgate_admin::bind(settings.listen))
        .with_context(|| format!("binding the admin listener on {}", settings.listen))?;
    let state = AdminState::new(ledger.clone(), Arc::clone(&config), tokens)
        .with_metrics(metrics)
        .on_key_revoked(on_key_revoked)
        .on_user_erased(forget_counters)
        .with_config_control(control)
        .with_readiness(readiness)
        .with_log_control(log);
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    let serve_stop = until_stopped(stopped.clone());
    tasks.push(runtime.spawn(async move {
        if let Err(e) = tollgate_admin::serve(listener, state, serve_stop).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    }));
    let deliverer =
        Deliverer::new(ledger.clone(), Arc::clone(&config)).map_err(anyhow::Error::msg)?;
    tasks.push(runtime.spawn(deliverer.run(until_stopped(stopped.clone()))));
    let mailer = Mailer::new(ledger, config);
    tasks.push(runtime.spawn(mailer.run(until_stopped(stopped))));
    tracing::info!(listen = %addr, "tollgate admin API listening");
    Ok(AdminServer {
        runtime,
        stop,
        tasks,
    })
}

impl AdminServer {
    /// The admin runtime, for tasks that live as long as the admin listener.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Sending `true` stops accepting admin connections and delivering alerts, without
    /// waiting (the admin runtime stays up for the requests in flight).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Stops accepting, lets requests in flight finish (up to 5 s), stops delivering.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let tasks = self.tasks;
        self.runtime.block_on(async move {
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
