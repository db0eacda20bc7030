//! The request head's guard, in front of Pingora's HTTP/1 server.
//!
//! Pingora bounds each read of a request head by a per-read timeout and the head's size by a
//! fixed 1 MiB, so a client that trickles one byte a minute holds a connection for ever and an
//! oversized head earns a bare 400. The guard reads each request head itself, with one total
//! deadline from its first byte (from the connection's start for the first request) and the
//! configured size cap, answers 408 or 431 in the provider's error shape when either is passed,
//! and otherwise hands the bytes it read to Pingora's parser as the session's first bytes.
//!
//! It also keeps what a shutdown or an upgrade needs: a connection counts as busy (the drain
//! waits for it) from its accept until it is idle between requests, so that a connection
//! accepted just before the listener closed still has its first request served instead of
//! being dropped. (Once the process is being replaced, each response ends its connection: the
//! gateway's `early_request_filter`, as the parsed head sets the connection's keep-alive.)

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::errors::{GatewayError, render};
use crate::hold::HoldingStream;
use crate::metrics::Metrics;
use crate::request_id;
use crate::route::route;

/// How long a kept-alive connection may wait for its next request.
const KEEPALIVE_SECS: u64 = 60;

/// Limits on the request head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub deadline: Duration,
}

/// A Pingora HTTP application behind the request-head guard.
#[derive(Debug)]
pub struct HeadGuard<A> {
    inner: Arc<A>,
    limits: HeadLimits,
    metrics: Arc<Metrics>,
    holding: bool,
}

impl<A> HeadGuard<A> {
    pub fn new(inner: A, limits: HeadLimits, metrics: Arc<Metrics>) -> HeadGuard<A> {
        HeadGuard {
            inner: Arc::new(inner),
            limits,
            metrics,
            holding: false,
        }
    }

    /// Serves each connection through a [`HoldingStream`], so that a response's last bytes can
    /// wait for its usage event (`durability = "sync"`).
    pub fn holding_last_bytes(mut self, holding: bool) -> HeadGuard<A> {
        self.holding = holding;
        self
    }
}

/// What reading a request head gave.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The head is complete within the first bytes of the buffer.
    Complete(BytesMut),
    /// The connection closed (or the server is stopping) before a request began.
    Closed,
    TooLarge(BytesMut),
    TooSlow(BytesMut),
    /// Not a request Pingora could parse ([`malformed`] says why).
    Malformed(BytesMut, &'static str),
}

/// Where the head ends (the index after its blank line), if it has ended, looking only at line
/// ends from `from` on, so that a head read a byte at a time is still scanned once. Pingora's
/// parser, like most, accepts bare LF line endings, so both are recognised.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = buf.get(at..).and_then(|rest| memchr::memchr(b'\n', rest)) {
        let newline = at + i;
        match buf.get(newline + 1..) {
            Some([b'\n', ..]) => return Some(newline + 2),
            Some([b'\r', b'\n', ..]) => return Some(newline + 3),
            _ => at = newline + 1,
        }
    }
    None
}

/// Why a complete head cannot be a request, checked before Pingora parses it (Pingora answers
/// such heads with an empty 400 of its own): a request line that is not `METHOD target
/// HTTP/1.x`, or a `Content-Length` that is not a number or disagrees with another (RFC 9112,
/// 3 and 6.3).
fn malformed(buf: &[u8]) -> Option<&'static str> {
    let mut lines = buf
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next()?;
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next(), parts.next());
    let well_formed = !method.is_empty()
        && method.iter().all(|b| b.is_ascii_alphabetic())
        && target.is_some_and(|t| !t.is_empty())
        && version.is_some_and(|v| v == b"HTTP/1.1" || v == b"HTTP/1.0")
        && parts.next().is_none();
    if !well_formed {
        return Some("the request line is not `METHOD target HTTP/1.1`");
    }
    let mut length: Option<&[u8]> = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 19 {
            return Some("Content-Length is not a number of bytes");
        }
        if length.is_some_and(|seen| seen != value) {
            return Some("the request has two different Content-Length values");
        }
        length = Some(value);
    }
    None
}

impl HeadLimits {
    async fn read<S: tokio::io::AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        shutdown: &mut ShutdownWatch,
        idle: Duration,
        started: Instant,
    ) -> Head {
        let mut buf = BytesMut::with_capacity(4096);
        // Waiting for a request to begin is idleness, bounded like keep-alive; once it has
        // begun (or from the connection's start), the whole head must arrive by the deadline.
        let mut until = if idle.is_zero() {
            started + self.deadline
        } else {
            Instant::now() + idle
        };
        // Line ends before this were examined already (the last two bytes may still begin one).
        let mut scanned = 0;
        loop {
            let read = tokio::select! {
                biased;
                read = timeout_at(until, stream.read_buf(&mut buf)) => read,
                // Only an idle kept-alive connection is closed: a new one was accepted to be
                // served, and its request is on its way.
                _ = shutdown.changed(), if buf.is_empty() && !idle.is_zero() => return Head::Closed,
            };
            match read {
                Err(_) if buf.is_empty() && !idle.is_zero() => return Head::Closed,
                Err(_) => return Head::TooSlow(buf),
                Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
                Ok(Ok(_)) => {}
            }
            if !idle.is_zero() && until > Instant::now() + self.deadline {
                until = Instant::now() + self.deadline;
            }
            let end = head_end(&buf, scanned);
            scanned = buf.len().saturating_sub(2);
            match end {
                Some(end) if end > self.max_bytes => return Head::TooLarge(buf),
                Some(_) => return Head::Complete(buf),
                None if buf.len() > self.max_bytes => return Head::TooLarge(buf),
                None => {}
            }
        }
    }
}

/// The response to a head that was refused, in the shape of the provider its path names, with
/// a new request id (the head is not parsed: a client's own id in it is not looked for).
fn refusal(head: &[u8], error: &GatewayError, request_id: &str) -> (u16, Vec<u8>) {
    let provider = head
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|target| std::str::from_utf8(target).ok())
        .and_then(|target| route(target).ok())
        .map(|r| r.provider);
    let rendered = render(provider, error);
    let body = rendered.body.to_string();
    let mut out = format!(
        // `content-type` comes with the rendered headers.
        "HTTP/1.1 {} {}\r\ncontent-length: {}\r\nconnection: close\r\n{}: {request_id}\r\n",
        rendered.status,
        http::StatusCode::from_u16(rendered.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or(""),
        body.len(),
        request_id::HEADER,
    );
    for (name, value) in &rendered.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    (rendered.status, out.into_bytes())
}

/// Whether the bytes of a next request, pipelined behind the last, came with the connection.
/// Pingora 0.9 keeps them inside the settings with no accessor; only their debug form shows
/// whether there are any.
fn carries_pipelined_request(settings: &HttpPersistentSettings) -> bool {
    format!("{settings:?}").contains("pipelined_prefix: Some(")
}

#[async_trait]
impl<A> ServerApp for HeadGuard<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if self.holding {
            stream = Box::new(HoldingStream::new(stream));
        }
        let mut watch = shutdown.clone();
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut idle = Duration::ZERO;
        let mut busy = Some(self.metrics.connection_busy());
        loop {
            if let Some(settings) = persistent.take_if(|s| carries_pipelined_request(s)) {
                // The client sent this request behind the last one, and Pingora read part of
                // it already: its own parser takes it from there (under its per-read timeout
                // and 1 MiB head cap), so requests pipelined on one connection are answered in
                // order.
                let mut session = ServerSession::new_http1(stream);
                settings.apply_to_session(&mut session);
                if *shutdown.borrow() {
                    session.set_keepalive(None);
                }
                let reused = self.inner.process_new_http(session, shutdown).await?;
                (stream, persistent) = reused.consume();
                idle = Duration::from_secs(KEEPALIVE_SECS);
                continue;
            }
            let head = self
                .limits
                .read(&mut stream, &mut watch, idle, Instant::now())
                .await;
            busy.get_or_insert_with(|| self.metrics.connection_busy());
            let head = match head {
                Head::Complete(buf) => match malformed(&buf) {
                    Some(why) => Head::Malformed(buf, why),
                    None => Head::Complete(buf),
                },
                other => other,
            };
            let error = match head {
                Head::Malformed(buf, why) => (buf, GatewayError::BadRequest(why.to_owned())),
                Head::Complete(buf) => {
                    let mut session = ServerSession::new_http1(stream);
                    match persistent.take() {
                        Some(settings) => settings.apply_to_session(&mut session),
                        None => session.set_keepalive(Some(KEEPALIVE_SECS)),
                    }
                    if *shutdown.borrow() {
                        session.set_keepalive(None);
                    }
                    session.set_pipelined_prefix(buf);
                    let reused = self.inner.process_new_http(session, shutdown).await?;
                    let (next, settings) = reused.consume();
                    stream = next;
                    persistent = settings;
                    idle = Duration::from_secs(KEEPALIVE_SECS);
                    // Idle until the next request's head arrives.
                    drop(busy.take());
                    continue;
                }
                Head::Closed => return None,
                Head::TooLarge(buf) => (
                    buf,
                    GatewayError::HeadersTooLarge {
                        max_bytes: self.limits.max_bytes as u64,
                    },
                ),
                Head::TooSlow(buf) => (buf, GatewayError::HeadersTimeout),
            };
            let (buf, error) = error;
            let id = request_id::new();
            let (status, response) = refusal(&buf, &error, &id);
            self.metrics.request_started();
            self.metrics.request_finished(None, status);
            tracing::info!(
                target: "tollgate::access",
                request_id = id.as_str(),
                status,
                error_code = error.code(),
                head_bytes = buf.len(),
                "request head refused"
            );
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
            return None;
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_bytes: 64,
            deadline: Duration::from_millis(200),
        }
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nbody", 0), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }

    #[test]
    fn a_head_fed_in_pieces_ends_where_it_ends_whole() {
        let head = b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody";
        for split in 1..head.len() {
            let first = head_end(&head[..split], 0);
            let end = first.or_else(|| head_end(head, split.saturating_sub(2)));
            assert_eq!(end, Some(24), "split at {split}");
        }
    }

    #[tokio::test]
    async fn a_complete_head_keeps_the_body_bytes_read_with_it() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(b"POST /openai/v1/x HTTP/1.1\r\n\r\n{}")
            .await
            .unwrap();
        let (_tx, mut rx) = tokio::sync::watch::channel(false);
        let head = limits()
            .read(&mut server, &mut rx, Duration::ZERO, Instant::now())
            .await;
        assert_eq!(
            head,
            Head::Complete(BytesMut::from(&b"POST /openai/v1/x HTTP/1.1\r\n\r\n{}"[..]))
        );
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused_without_waiting_for_its_end() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET /anthropic/v1/messages HTTP/1.1\r\n")
            .await
            .unwrap();
        client.write_all(&[b'x'; 100]).await.unwrap();
        let (_tx, mut rx) = tokio::sync::watch::channel(false);
        let head = limits()
            .read(&mut server, &mut rx, Duration::ZERO, Instant::now())
            .await;
        let Head::TooLarge(buf) = head else {
            panic!("{head:?}")
        };
        let too_large = GatewayError::HeadersTooLarge { max_bytes: 64 };
        let (status, response) = refusal(&buf, &too_large, "req-1");
        assert_eq!(status, 431);
        let text = String::from_utf8(response).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        // Anthropic's error shape, chosen from the request line.
        assert!(text.contains("\"type\":\"error\""), "{text}");
        assert!(text.contains("\r\nx-request-id: req-1\r\n"), "{text}");
    }

    #[tokio::test]
    async fn a_trickled_head_is_cut_at_the_total_deadline() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let trickle = tokio::spawn(async move {
            for b in b"GET /openai/v1/models HTTP/1.1\r\n"
                .iter()
                .cycle()
                .take(50)
            {
                if client.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let (_tx, mut rx) = tokio::sync::watch::channel(false);
        let head = limits()
            .read(&mut server, &mut rx, Duration::ZERO, Instant::now())
            .await;
        // Each byte came well within any per-read timeout; the total deadline still cut it
        // (without it the trickle would end and the read would see the connection close).
        assert!(matches!(head, Head::TooSlow(_)), "{head:?}");
        trickle.abort();
    }

    #[tokio::test]
    async fn a_new_connection_s_first_head_is_read_through_a_shutdown() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let reading = tokio::spawn(async move {
            limits()
                .read(&mut server, &mut rx, Duration::ZERO, Instant::now())
                .await
        });
        tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        client
            .write_all(b"GET /openai/v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(reading.await.unwrap(), Head::Complete(_)));
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_closes_at_a_shutdown() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let reading = tokio::spawn(async move {
            limits()
                .read(
                    &mut server,
                    &mut rx,
                    Duration::from_secs(60),
                    Instant::now(),
                )
                .await
        });
        tx.send(true).unwrap();
        let head = tokio::time::timeout(Duration::from_secs(5), reading).await;
        assert_eq!(head.unwrap().unwrap(), Head::Closed);
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_closes_quietly() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let (_tx, mut rx) = tokio::sync::watch::channel(false);
        let head = limits()
            .read(
                &mut server,
                &mut rx,
                Duration::from_millis(50),
                Instant::now(),
            )
            .await;
        assert_eq!(head, Head::Closed);
    }

    #[test]
    fn malformed_heads_are_told_apart_from_requests() {
        for good in [
            &b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"
                [..],
            b"GET / HTTP/1.0\n\n",
            b"POST /x HTTP/1.1\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n",
        ] {
            assert_eq!(malformed(good), None, "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"POST /x\r\n\r\n"[..],
            b"POST  /x HTTP/1.1\r\n\r\n",
            b"P0ST /x HTTP/1.1\r\n\r\n",
            b"POST /x HTTP/2.0\r\n\r\n",
            b"POST /x HTTP/1.1 extra\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        ] {
            assert!(malformed(bad).is_some(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
