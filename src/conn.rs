//! How long a client connection may hold its slot.
//!
//! hyper's own HTTP/1 header-read timeout only starts once the auto builder has seen that the
//! connection speaks HTTP/1, HTTP/2 has none, and hyper runs its timer from the end of one
//! request to the next, so it also closes idle keep-alive connections that SDK pools expect
//! to reuse. So every connection gets one watchdog instead, measured from accept:
//!
//! - until the first request head is complete (the service is first called), the connection
//!   has `head` from accept to get there, whatever the protocol, TLS handshake included;
//! - afterwards, while no request is in flight (a request is in flight from its head until its
//!   response body has been sent or dropped), an HTTP/1 connection whose next request head has
//!   begun to arrive has `head` from that first byte to finish it (the slowloris bound);
//! - otherwise the connection is kept for `keepalive` with nothing to do.
//!
//! [`Activity`] counts requests; [`Tracked`] wraps a service to feed it; [`Watched`] wraps the
//! client's byte stream to see a head begin; [`Activity::expired`] resolves when the
//! connection has outstayed its welcome. Nothing here runs per request but a few relaxed
//! atomics: the watchdog wakes on its own schedule, not on every request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// `head_ms` when no head is arriving.
const NO_HEAD: u64 = u64::MAX;

/// The watchdog's deadlines for one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// From accept to the first complete request head, and from the first byte of a later
    /// HTTP/1 request head to its end.
    pub(crate) head: Duration,
    /// With nothing in flight and nothing arriving.
    pub(crate) keepalive: Duration,
}

impl Deadlines {
    /// How often a waiting watchdog looks again: a head that begins while the connection is
    /// kept alive is noticed within half its own deadline, so it is cut within 1.5 times it.
    fn tick(&self) -> Duration {
        (self.head / 2).max(Duration::from_millis(10))
    }
}

/// What one connection has been doing.
#[derive(Debug)]
pub(crate) struct Activity {
    accepted: Instant,
    /// Requests whose head has arrived, in all.
    seen: AtomicU64,
    /// Requests whose response has not been sent or dropped yet.
    active: AtomicUsize,
    /// When the last request ended, in milliseconds after `accepted`.
    last_ms: AtomicU64,
    /// When bytes began to arrive with no request in flight (the next HTTP/1 head), in
    /// milliseconds after `accepted`; `NO_HEAD` when none have since the last request.
    head_ms: AtomicU64,
    /// The connection carries HTTP/2: its reads between requests are frames (PING
    /// acknowledgements, window updates), not the beginning of a head.
    multiplexed: AtomicBool,
    /// The connection closes after the current response: an HTTP/1 request asked for it, or
    /// an HTTP/1.0 response of unknown length ends with the connection.
    closing: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            seen: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(NO_HEAD),
            multiplexed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    /// A request head arrived; the request is in flight until the guard is dropped.
    pub(crate) fn begin<B>(self: &Arc<Self>, req: &Request<B>) -> ActiveGuard {
        if req.version() == http::Version::HTTP_2 {
            if !self.multiplexed.load(Ordering::Relaxed) {
                self.multiplexed.store(true, Ordering::Relaxed);
            }
        } else if asks_to_close(req) {
            self.closing.store(true, Ordering::Relaxed);
        }
        self.seen.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
        self.head_ms.store(NO_HEAD, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// Bytes arrived from the client.
    fn arrived(&self) {
        // Only the first byte after a request matters; later reads cost one relaxed load.
        if self.head_ms.load(Ordering::Relaxed) == NO_HEAD
            && self.active.load(Ordering::Relaxed) == 0
        {
            self.head_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// When the connection must close if nothing changes; `None` while a request is in flight.
    fn deadline(&self, d: &Deadlines) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.seen.load(Ordering::Relaxed) == 0 {
            return Some(self.accepted + d.head);
        }
        let last = self.last_ms.load(Ordering::Relaxed);
        let head = self.head_ms.load(Ordering::Relaxed);
        if head != NO_HEAD && !self.multiplexed.load(Ordering::Relaxed) {
            return Some(self.accepted + Duration::from_millis(head.max(last)) + d.head);
        }
        Some(self.accepted + Duration::from_millis(last) + d.keepalive)
    }

    /// Resolves once the connection has had no complete request head within `head` of
    /// accept, a later HTTP/1 head took longer than `head` from its first byte, or nothing
    /// was in flight or arriving for `keepalive`. Never resolves while a request is in flight.
    pub(crate) async fn expired(&self, d: Deadlines) {
        loop {
            let now = Instant::now();
            match self.deadline(&d) {
                Some(at) if at <= now => return,
                // Wake at the deadline, or sooner to notice a head that begins meanwhile
                // (the bytes move the deadline earlier; nothing wakes this task for them).
                Some(at) => tokio::time::sleep_until(at.min(now + d.tick())).await,
                // In flight: look again later (the request's own timeouts bound it).
                None => tokio::time::sleep(d.tick()).await,
            }
        }
    }

    /// With nothing in flight and no head arriving: how many requests the connection has
    /// seen (a new number means it went idle again). `None` while busy.
    pub(crate) fn idle_after(&self) -> Option<u64> {
        let idle = self.active.load(Ordering::Acquire) == 0
            && self.head_ms.load(Ordering::Relaxed) == NO_HEAD;
        idle.then(|| self.seen.load(Ordering::Relaxed))
    }

    /// Whether the connection closes after the current response (never parked).
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Whether a request head ever arrived.
    pub(crate) fn had_request(&self) -> bool {
        self.seen.load(Ordering::Relaxed) > 0
    }
}

/// Whether an HTTP/1 request ends its connection: `Connection: close`, or HTTP/1.0 without
/// `Connection: keep-alive` (hyper closes these after the response).
fn asks_to_close<B>(req: &Request<B>) -> bool {
    let has = |token: &str| {
        req.headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match req.version() {
        http::Version::HTTP_11 => has("close"),
        http::Version::HTTP_10 | http::Version::HTTP_09 => !has("keep-alive"),
        _ => false,
    }
}

/// A client's byte stream, telling its [`Activity`] when bytes arrive. It first yields any
/// bytes given to [`Watched::replaying`]: those a dropped hyper connection had read but not
/// used, when a connection is parked ([`crate::accept`]).
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    replay: Bytes,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self::replaying(Bytes::new(), inner, activity)
    }

    pub(crate) fn replaying(replay: Bytes, inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            replay,
        }
    }

    /// What is still to replay, and the stream.
    pub(crate) fn into_parts(self) -> (Bytes, S) {
        (self.replay, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            this.activity.arrived();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Marks one request in flight; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms.fetch_max(a.now_ms(), Ordering::Relaxed);
        // Bytes read while the request was in flight were its own (or a pipelined head,
        // which then gets the keep-alive time before its own deadline starts).
        a.head_ms.store(NO_HEAD, Ordering::Relaxed);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address of the connection's peer, put in each request's extensions (the audit's
/// source address).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// A service whose requests are counted in an [`Activity`], and carry their [`Peer`].
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: Option<std::net::SocketAddr>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(
        inner: S,
        activity: Arc<Activity>,
        peer: Option<std::net::SocketAddr>,
    ) -> Self {
        Self {
            inner,
            activity,
            peer,
        }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Tracked<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Body,
{
    type Response = Response<Guarded<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(Peer(peer));
        }
        let guard = self.activity.begin(&req);
        let http10 = req.version() == http::Version::HTTP_10;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // hyper ends an HTTP/1.0 response of unknown length by closing the connection.
            if http10
                && resp.body().size_hint().exact().is_none()
                && !resp.headers().contains_key(http::header::CONTENT_LENGTH)
            {
                guard.0.closing.store(true, Ordering::Relaxed);
            }
            Ok(resp.map(|body| Guarded {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
pub(crate) struct Guarded<B> {
    inner: B,
    _guard: ActiveGuard,
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
