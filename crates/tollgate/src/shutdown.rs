//! Shutting down without losing a call or waiting for nothing.
//!
//! On SIGTERM Pingora stops accepting connections and ends keep-alive reuse, then keeps its
//! runtimes for a fixed grace period whether or not anything is still running. Here a drain
//! thread starts with the signal and watches the requests in flight: as soon as none is left it
//! stores the queued alerts, drains the ledger and exits — an idle gateway stops at once. If
//! calls are still running when `graceful_shutdown_secs` is over, each is recorded with the
//! usage it had received so far (estimated, the shutdown as its error) before the ledger drains
//! and the process exits; Pingora's own grace period is set a little longer, so that no call's
//! task is dropped before it was recorded.
//!
//! SIGQUIT is Pingora's graceful upgrade (`tollgate run --upgrade` sends it): the listening
//! sockets go to the new process, this one keeps accepting beside it for Pingora's fixed
//! 5 seconds (answering `connection: close` from the signal on, so that clients reconnect to
//! the new one), and once Pingora has closed its listeners the same drain as SIGTERM's runs.
//! SIGINT is a fast shutdown (nothing waits).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{
    ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch,
};
use tokio::sync::broadcast;

/// How often the drain thread looks at the requests in flight.
const POLL: Duration = Duration::from_millis(20);

/// Pingora's grace period beyond the gateway's own, so that the drain thread records cut-off
/// calls while their tasks still exist.
pub const PINGORA_GRACE_MARGIN_SECS: u64 = 5;

/// The signals Pingora waits for, with the drain started on SIGTERM, and on SIGQUIT once the
/// sockets are handed over.
pub struct DrainOnTerm {
    on_term: Arc<dyn Fn() + Send + Sync>,
    on_handover: Box<dyn Fn() + Send + Sync>,
    /// Pingora's execution phases, to learn when it has closed its listeners after a handover.
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl DrainOnTerm {
    /// `on_term` starts the drain; `on_handover` runs at SIGQUIT, before the sockets are sent.
    pub fn new(
        on_term: impl Fn() + Send + Sync + 'static,
        on_handover: impl Fn() + Send + Sync + 'static,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> DrainOnTerm {
        DrainOnTerm {
            on_term: Arc::new(on_term),
            on_handover: Box::new(on_handover),
            phases: Mutex::new(Some(phases)),
        }
    }

    /// Starts the drain once Pingora has stopped accepting (`ShutdownStarted`, after its close
    /// timeout): a drain started earlier could find no call in flight and end the process while
    /// its listeners still take connections.
    fn drain_after_handover(&self) {
        let phases = self
            .phases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut phases) = phases else {
            return;
        };
        let on_term = Arc::clone(&self.on_term);
        let started = std::thread::Builder::new()
            .name("tollgate-handover".to_owned())
            .spawn(move || {
                loop {
                    match phases.blocking_recv() {
                        Ok(ExecutionPhase::ShutdownStarted)
                        | Err(broadcast::error::RecvError::Closed) => break,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    }
                }
                tracing::info!("listeners handed over and closed: draining");
                on_term();
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "the handover thread did not start: draining now");
            (self.on_term)();
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        match signal {
            ShutdownSignal::GracefulTerminate => (self.on_term)(),
            ShutdownSignal::GracefulUpgrade => {
                tracing::info!("SIGQUIT: handing the listening sockets to the new process");
                (self.on_handover)();
                self.drain_after_handover();
            }
            ShutdownSignal::FastShutdown => {}
        }
        signal
    }
}

/// What the drain thread needs.
pub struct Drain {
    /// Requests being served (`tollgate_requests_in_flight`).
    pub in_flight: Box<dyn Fn() -> i64 + Send>,
    /// Records the admitted calls still running; answers how many.
    pub cut_off: Box<dyn FnOnce() -> usize + Send>,
    /// Stores alerts, drains the ledger, flushes the log: what follows the last call.
    pub finish: Box<dyn FnOnce() + Send>,
    pub grace: Duration,
}

/// Starts the drain thread; it ends the process.
pub fn start(drain: Drain) {
    let started = std::thread::Builder::new()
        .name("tollgate-drain".to_owned())
        .spawn(move || {
            let began = Instant::now();
            tracing::info!(
                grace_secs = drain.grace.as_secs(),
                "draining: waiting for the calls in flight"
            );
            loop {
                let running = (drain.in_flight)();
                if running <= 0 {
                    tracing::info!(
                        waited_ms = began.elapsed().as_millis() as u64,
                        "no call in flight"
                    );
                    break;
                }
                if began.elapsed() >= drain.grace {
                    let recorded = (drain.cut_off)();
                    tracing::warn!(
                        running,
                        recorded,
                        "grace period over: calls still running were recorded as cut off"
                    );
                    break;
                }
                std::thread::sleep(POLL);
            }
            (drain.finish)();
            std::process::exit(0);
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "the drain thread did not start: Pingora's grace period applies");
    }
}
