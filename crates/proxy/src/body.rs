//! Reading a request body before admission: under a total deadline, within the size limit,
//! answering `Expect: 100-continue` for the provider, and handing the complete body to admission
//! before its first byte goes upstream.
//!
//! A body that fits Pingora's retry buffer (64 KiB, nearly every API call) is read whole in
//! `request_filter` and sent with its exact `Content-Length` in one write after the head. A
//! larger or chunked body is held in `request_body_filter` until complete (Pingora has already
//! sent the request head by then, so such a request goes chunked; a refused request's body is
//! never sent, so the provider never sees a complete request).

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::Result;
use pingora::proxy::Session;
use tollgate_usage::RequestFacts;

use crate::context::{BodyState, RequestCtx};
use crate::errors::GatewayError;
use crate::gateway::Gateway;
use crate::head::expects_continue;
use crate::request::{cap_output, rewrite_body};

/// Bounds the next read of a body by what is left of `body_read_timeout_ms`, counted from when
/// the headers arrived: Pingora's own timeout is per read, which a client sending a byte at a
/// time never meets. A read that outlasts it fails as a downstream read timeout (408).
pub fn bound_read(session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    let timeout_ms = ctx.snapshot.config.proxy.body_read_timeout_ms;
    match Duration::from_millis(timeout_ms).checked_sub(ctx.started.elapsed()) {
        Some(left) if !left.is_zero() => {
            session.set_read_timeout(Some(left));
            Ok(())
        }
        _ => Err(ctx.refuse(GatewayError::BodyTimeout { timeout_ms })),
    }
}

/// A body small enough for Pingora's retry buffer: read it whole before anything goes
/// upstream, admit the call, and keep the body as it will go upstream. Pingora replays the
/// buffered body through `request_body_filter` (also when it retries on a fresh upstream
/// connection), which sends the kept one in its place.
pub async fn read_whole(gw: &Gateway, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    if expects_continue(session.req_header()) {
        // The client waits for a go-ahead before its body; the provider, which would have
        // given it, sees the request only once the body is here (its `Expect` is removed).
        session.write_continue_response().await?;
    }
    session.enable_retry_buffering();
    let max = ctx.snapshot.config.proxy.max_request_body_bytes;
    let reading = Instant::now();
    let mut buffer = Vec::new();
    loop {
        bound_read(session, ctx)?;
        let read = session.read_request_body().await;
        let Some(chunk) = read.map_err(|e| e.into_down())? else {
            break;
        };
        if (buffer.len() + chunk.len()) as u64 > max {
            return Err(ctx.refuse(GatewayError::BodyTooLarge { max_bytes: max }));
        }
        buffer.extend_from_slice(&chunk);
    }
    ctx.body_wait = reading.elapsed();
    if session.as_ref().get_retry_buffer().is_none() {
        // Pingora would have nothing to replay: the request cannot be forwarded.
        return Err(ctx.refuse(GatewayError::Internal));
    }
    match admit_body(gw, ctx, buffer).await {
        Ok(out) => {
            ctx.body = BodyState::Admitted(out);
            Ok(())
        }
        Err(e) => Err(ctx.refuse(e)),
    }
}

/// One chunk of the request body on its way upstream (`request_body_filter`).
pub async fn on_chunk(
    gw: &Gateway,
    session: &mut Session,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let buffer = match &mut ctx.body {
        BodyState::Admitted(admitted) => {
            // Pingora's replay of the body read in `request_filter`.
            if body.is_some() {
                *body = Some(admitted.clone());
            }
            return Ok(());
        }
        BodyState::PassThrough => {
            if let Some(chunk) = body.as_ref() {
                ctx.request_bytes += chunk.len() as u64;
            }
            // A body streamed through without a length (chunked) is held to the same limit as
            // one that declared it: it is cut off, and the provider never gets it whole.
            let max = ctx.snapshot.config.proxy.max_request_body_bytes;
            if ctx.request_bytes > max {
                return Err(ctx.refuse(GatewayError::BodyTooLarge { max_bytes: max }));
            }
            // A body streamed through (a Stability upload) is under the same total deadline
            // as a held one: a client trickling it would otherwise hold the provider's
            // connection for as long as each read meets Pingora's per-read timeout.
            return if end_of_stream {
                Ok(())
            } else {
                bound_read(session, ctx)
            };
        }
        BodyState::Held { buffer, .. } => buffer,
    };
    if let Some(chunk) = body.take() {
        let max = ctx.snapshot.config.proxy.max_request_body_bytes;
        if (buffer.len() + chunk.len()) as u64 > max {
            return Err(ctx.refuse(GatewayError::BodyTooLarge { max_bytes: max }));
        }
        buffer.extend_from_slice(&chunk);
    }
    if !end_of_stream {
        // Held. An empty chunk, not `None`: Pingora takes a `None` body for the end of the
        // body and would finish the upstream request there, empty.
        *body = Some(Bytes::new());
        return bound_read(session, ctx);
    }
    let held = std::mem::take(buffer);
    let started = Instant::now();
    let outcome = admit_body(gw, ctx, held).await;
    ctx.overhead += started.elapsed();
    match outcome {
        Ok(out) => {
            *body = Some(out);
            Ok(())
        }
        Err(e) => Err(ctx.refuse(e)),
    }
}

/// How much of a body an early answer keeps reading, and for how long, so that a client still
/// writing it gets to read the answer.
const LINGER_MAX_BYTES: usize = 64 << 20;
const LINGER_TIME: Duration = Duration::from_secs(10);

/// After an answer sent before the request body was read to its end (a 413, a refusal, an
/// upstream failure): closing now, with the client's bytes unread, makes the kernel reset the
/// connection, and a client still writing never reads the answer (RFC 9112 §9.6). So the rest
/// of the body is read and discarded, up to a bound in bytes and time, as nginx's lingering
/// close does; past it the connection is closed anyway.
pub async fn linger(session: &mut Session) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut left = LINGER_MAX_BYTES;
    session.set_read_timeout(Some(LINGER_TIME));
    while left > 0 && !session.is_body_done() {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => left = left.saturating_sub(chunk.len()),
            _ => return,
        }
    }
}

/// The body is complete: read its facts once, admit the call; the body as it goes upstream.
async fn admit_body(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    held: Vec<u8>,
) -> std::result::Result<Bytes, GatewayError> {
    let provider = ctx.provider.ok_or(GatewayError::Internal)?;
    ctx.facts = RequestFacts::read(provider, &ctx.path, &held)
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    gw.admit(ctx, true).await?;
    ctx.request_bytes = held.len() as u64;
    let held = match ctx.output_cap {
        // Admitted with a lower output cap to fit what is left of a budget: the provider must
        // not produce more than was reserved.
        Some(cap) => cap_output(provider, &ctx.path, &held, cap).ok_or(GatewayError::Internal)?,
        None => held,
    };
    let inject = ctx.snapshot.config.proxy.inject_stream_usage;
    // `None`: the body goes as it came (a provider whose bodies are never rewritten, a chat
    // completion that is not a stream).
    Ok(
        match rewrite_body(provider, &ctx.path, &held, &ctx.facts, inject) {
            Some(rewritten) => {
                // An OpenAI-compatible body is rewritten only to ask for the stream's usage.
                ctx.usage_injected = provider == tollgate_domain::Provider::OpenAi;
                Bytes::from(rewritten)
            }
            None => Bytes::from(held),
        },
    )
}
