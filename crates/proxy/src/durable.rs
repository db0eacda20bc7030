//! `[ledger] durability = "sync"`: a call's last bytes reach the client only once its usage
//! event is durable — committed to the database, or synced to the spool while the database is
//! away — so that a SIGKILL loses no call a client received in full.
//!
//! The call is ended (settled, its event made) where the response ends, instead of in `logging`
//! after it has gone; the event is recorded with [`LedgerHandle::record_durable`], which the
//! ledger answers after the group commit that holds it (`docs/ledger.md`), and `logging` then
//! only settles the call's counters. A client that leaves meanwhile changes nothing: the event is
//! recorded once either way.
//!
//! Pingora calls the response body filter synchronously, so where the response ends the call is
//! ended at once and its event handed to the ledger ([`LedgerHandle::hand_over_durable`]), and
//! the client connection's [`HoldingStream`] holds the last bytes until the ledger answers: the
//! connection's task sleeps on the commit like on any socket, and its thread serves others.
//! Ending a call that needs a wait first (decoding left for the end, a job's earlier polls to
//! look up) — or a connection without a holding stream — waits in place instead:
//! [`tokio::task::block_in_place`] hands the worker's other tasks to another thread for the
//! commit, rather than stalling them. That needs Pingora's work-stealing (multi-thread)
//! runtime, its default; on any other the call is recorded as in `batched`, and said so once.
//!
//! [`LedgerHandle::hand_over_durable`]: tollgate_ledger::LedgerHandle::hand_over_durable
//! [`LedgerHandle::record_durable`]: tollgate_ledger::LedgerHandle::record_durable

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use pingora::Error;
use pingora::proxy::Session;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::context::RequestCtx;
use crate::gateway::Gateway;
use crate::hold::HoldingStream;

impl Gateway {
    /// Ends the call in `ctx` and returns once its event is durable; a call not admitted, or
    /// already ended, is left as it is.
    pub(crate) async fn end_call_durably(&self, error: Option<&Error>, ctx: &mut RequestCtx) {
        let Some((event, ended)) = self.end_call(error, ctx).await else {
            return;
        };
        ctx.ended = Some(ended);
        // Refused only by a ledger that drops by policy or has shut down: the bytes go on,
        // since holding them would not save the event.
        if let Err(e) = self.ledger.record_durable(event).await {
            tracing::error!(error = %e, "usage event not recorded");
        }
    }

    /// From the synchronous body filter, at the end of the response: ends the call and holds
    /// the response's last bytes until its event is durable.
    pub(crate) fn hold_last_bytes(&self, session: &Session, ctx: &mut RequestCtx) {
        if ctx.admitted.is_none() {
            return;
        }
        if let Some(stream) = HoldingStream::of(session)
            && let Ok(ended) = self.end_call_at_once(None, ctx)
        {
            // None: the shutdown recorded the call already.
            if let Some((event, ended)) = ended {
                ctx.ended = Some(ended);
                let durable = self.ledger.hand_over_durable(event, self.inflight.len());
                stream.hold_until(async move {
                    // As in `end_call_durably`: holding the bytes would not save the event.
                    if let Err(e) = durable.await {
                        tracing::error!(error = %e, "usage event not recorded");
                    }
                });
            }
            return;
        }
        let Some(runtime) = blocking_allowed() else {
            return;
        };
        tokio::task::block_in_place(|| runtime.block_on(self.end_call_durably(None, ctx)));
    }
}

/// The runtime to wait on, if this thread may block in place.
fn blocking_allowed() -> Option<Handle> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let runtime = Handle::try_current().ok()?;
    if runtime.runtime_flavor() == RuntimeFlavor::MultiThread {
        return Some(runtime);
    }
    if !WARNED.swap(true, Relaxed) {
        tracing::warn!(
            "ledger durability \"sync\" needs Pingora's work-stealing runtime; \
             usage events are recorded after the response instead"
        );
    }
    None
}
