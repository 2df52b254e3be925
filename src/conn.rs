//! How long a client connection may hold its slot.
//!
//! hyper's own HTTP/1 header-read timeout only starts once the auto builder has seen that the
//! connection speaks HTTP/1, and HTTP/2 has none: a socket that sends nothing, half an HTTP/2
//! preface, or a TLS handshake followed by silence would keep its connection slot forever.
//! So every connection gets one watchdog, measured from accept:
//!
//! - until the first request head is complete (the service is first called), the connection
//!   has `first_request` to get there, whatever the protocol, TLS handshake included;
//! - afterwards, while no request is in flight (a request is in flight from its head until its
//!   response body has been sent or dropped), the connection is closed after `idle`.
//!
//! [`Activity`] counts requests; [`Tracked`] wraps a service to feed it; [`Activity::expired`]
//! resolves when the connection has outstayed its welcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

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
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            seen: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    /// A request head arrived; the request is in flight until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.seen.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }

    /// When the connection must close if nothing changes; `None` while a request is in flight.
    fn deadline(&self, first_request: Duration, idle: Duration) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.seen.load(Ordering::Relaxed) == 0 {
            return Some(self.accepted + first_request);
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.accepted + last + idle)
    }

    /// Resolves once the connection has had no request head for `first_request` after accept,
    /// or no request in flight for `idle`. Never resolves while a request is in flight.
    pub(crate) async fn expired(&self, first_request: Duration, idle: Duration) {
        loop {
            match self.deadline(first_request, idle) {
                // In flight: look again later (the request's own timeouts bound it).
                None => tokio::time::sleep(idle).await,
                Some(at) if at <= Instant::now() => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Whether a request head ever arrived.
    pub(crate) fn had_request(&self) -> bool {
        self.seen.load(Ordering::Relaxed) > 0
    }
}

/// Marks one request in flight; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.last_ms.fetch_max(ms, Ordering::Relaxed);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service whose requests are counted in an [`Activity`].
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Tracked<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<Guarded<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let guard = self.activity.begin();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
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
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_connection_expires_after_the_first_request_deadline() {
        let a = Activity::new();
        let started = Instant::now();
        a.expired(Duration::from_secs(10), Duration::from_secs(60))
            .await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(!a.had_request());
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_request_is_never_cut_then_idle_deadline_applies() {
        let a = Activity::new();
        let guard = a.begin();
        let watch = {
            let a = a.clone();
            tokio::spawn(async move {
                a.expired(Duration::from_secs(10), Duration::from_secs(60))
                    .await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(500)).await;
        assert!(
            !watch.is_finished(),
            "a request in flight keeps the connection"
        );
        let ended = Instant::now();
        drop(guard);
        let closed = watch.await.unwrap();
        // Closed one idle period after the request ended (checked at the next wake-up).
        assert!(
            closed >= ended + Duration::from_secs(60),
            "{:?}",
            closed - ended
        );
        assert!(
            closed <= ended + Duration::from_secs(120),
            "{:?}",
            closed - ended
        );
    }
}
