//! A response's last bytes held until its usage event is durable (`[ledger] durability =
//! "sync"`), without holding the thread that serves it.
//!
//! Pingora calls the response body filter synchronously and writes what it returns right
//! after, so the filter cannot wait for the commit where it is. Instead, under `sync`, each
//! client connection's stream is a [`HoldingStream`], and the filter, at the end of a response,
//! hands that stream the wait for the call's event ([`HoldingStream::hold_until`]). The stream's
//! next write, flush or shutdown — the response's last bytes — is pending until the wait is
//! over, as a write to a socket whose buffer is full would be: the connection's task sleeps,
//! its worker serves other connections, and the ledger's commit wakes it.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::ALPN;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A client connection's stream whose writes can be held until a wait is over.
pub struct HoldingStream {
    inner: Stream,
    /// Set through a shared reference (the body filter only sees the session's stream as one);
    /// taken by the writes, on the same task, so never contended.
    wait: Mutex<Option<Wait>>,
}

impl HoldingStream {
    pub fn new(inner: Stream) -> HoldingStream {
        HoldingStream {
            inner,
            wait: Mutex::new(None),
        }
    }

    /// Holds every write from now on until `wait` is over.
    pub fn hold_until(&self, wait: impl Future<Output = ()> + Send + 'static) {
        *self.wait.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::pin(wait));
    }

    /// The holding stream under `session`, if its connection has one (HTTP/1, under `sync`).
    pub(crate) fn of(session: &Session) -> Option<&HoldingStream> {
        let stream = session.as_downstream().stream()?;
        (**stream).as_any().downcast_ref::<HoldingStream>()
    }

    /// Ready once no wait holds the writes.
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let wait = self.wait.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(pending) = wait {
            ready!(pending.as_mut().poll(cx));
            *wait = None;
        }
        Poll::Ready(())
    }
}

impl fmt::Debug for HoldingStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self
            .wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        f.debug_struct("HoldingStream")
            .field("inner", &self.inner)
            .field("held", &held)
            .finish()
    }
}

impl AsyncRead for HoldingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HoldingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_held(cx));
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_held(cx));
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_held(cx));
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_held(cx));
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HoldingStream {
    async fn shutdown(&mut self) {
        // Closing ends a response as its last bytes do.
        std::future::poll_fn(|cx| self.poll_held(cx)).await;
        self.inner.shutdown().await;
    }
}

#[async_trait]
impl Peek for HoldingStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl UniqueID for HoldingStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HoldingStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HoldingStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HoldingStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HoldingStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    /// Holds `stream`'s writes until the answer is sent.
    fn hold(stream: &HoldingStream) -> oneshot::Sender<()> {
        let (release, released) = oneshot::channel::<()>();
        stream.hold_until(async move {
            let _ = released.await;
        });
        release
    }

    #[tokio::test]
    async fn writes_wait_for_the_hold_and_reads_do_not() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut stream = HoldingStream::new(Box::new(near));
        stream.write_all(b"head ").await.unwrap();
        let release = hold(&stream);
        far.write_all(b"ping").await.unwrap();
        let mut ping = [0; 4];
        stream.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping", "reads are never held");

        let writing = tokio::spawn(async move {
            stream.write_all(b"last bytes").await.unwrap();
            stream.flush().await.unwrap();
            stream
        });
        let mut head = [0; 5];
        far.read_exact(&mut head).await.unwrap();
        let mut more = [0; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), far.read(&mut more)).await;
        assert!(
            early.is_err(),
            "the last bytes went before the hold was over"
        );

        release.send(()).unwrap();
        let mut stream = writing.await.unwrap();
        let mut last = [0; 10];
        far.read_exact(&mut last).await.unwrap();
        assert_eq!(&last, b"last bytes");
        // The hold is over for good: later writes go at once.
        stream.write_all(b"!").await.unwrap();
        far.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"!");
    }

    #[tokio::test]
    async fn a_shutdown_waits_for_the_hold() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stream = HoldingStream::new(Box::new(near));
        let release = hold(&stream);
        let closing = tokio::spawn(async move { Shutdown::shutdown(&mut stream).await });
        let mut byte = [0; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), far.read(&mut byte)).await;
        assert!(
            early.is_err(),
            "the connection closed before the hold was over"
        );
        release.send(()).unwrap();
        closing.await.unwrap();
    }
}
