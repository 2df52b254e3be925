//! One client connection, from accept to close: the TLS handshake, the protocol (ALPN, or
//! the preface on a plain connection), the watchdog ([`crate::conn`]), a graceful stop, and
//! plain HTTP/1 connections *parked* between requests.
//!
//! Parking: hyper keeps an HTTP/1 connection's 8 KiB read buffer and 8 KiB header write
//! buffer for as long as the connection lives, so 10,000 idle keep-alive connections (an SDK
//! pool per agent runtime) held ~21 KiB each. Once a plain HTTP/1 connection has had nothing
//! in flight for [`PARK_AFTER`], hyper is asked to finish with it (as at a graceful stop,
//! but the socket stays open), hands back the socket and any bytes it had read, and is
//! dropped with its buffers. The parked connection is this task and its socket; the next
//! request's first byte starts a fresh hyper connection, which replays what the old one had
//! read. A busy connection is never parked, so the hot path pays one timer reset per
//! request. A request that asked to close (`Connection: close`, HTTP/1.0 without
//! keep-alive) is never parked: hyper ends it and the socket is shut down, as the client
//! expects.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::conn::{Activity, Deadlines, Tracked, Watched};
use crate::proxy::Proxy;

/// A plain HTTP/1 connection with nothing in flight for this long gives its buffers back.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(50);

/// What every connection of one listener is served with.
pub(crate) struct Serving {
    pub(crate) h1: http1::Builder,
    pub(crate) h2: http2::Builder<TokioExecutor>,
    pub(crate) deadlines: Deadlines,
    pub(crate) handshake_timeout: Duration,
}

type Service = TowerToHyperService<Tracked<Proxy>>;

/// Serves one accepted connection until it closes, its watchdog expires, or `stop` turns
/// true (then in-flight requests finish and the connection closes).
pub(crate) async fn serve(
    serving: Arc<Serving>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    proxy: Proxy,
    stop: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let svc = TowerToHyperService::new(Tracked::new(proxy, activity.clone(), Some(peer)));
    let s = &serving;
    let served = async {
        match tls {
            None => plain(s, stream, svc, &activity, stop).await,
            // Boxed, as every path but the plain HTTP/1 one: the task is as large as its
            // largest state, and a parked connection should not carry a TLS handshake's or
            // an HTTP/2 connection's room.
            Some(acceptor) => {
                Box::pin(secure(s, acceptor, stream, peer, svc, &activity, stop)).await
            }
        }
    };
    // One watchdog from accept: no request head in time, a later head too slow, or idle too
    // long, and the connection (whatever its protocol or TLS state) is dropped with its slot.
    let result = tokio::select! {
        r = served => r,
        () = activity.expired(s.deadlines) => {
            if activity.had_request() {
                tracing::debug!(%peer, "idle connection closed");
            } else {
                crate::metrics::connection_timed_out();
                tracing::debug!(%peer, "no request head in time; connection closed");
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TLS connection: the handshake under its deadline, then the protocol ALPN chose.
async fn secure(
    s: &Serving,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    svc: Service,
    activity: &Arc<Activity>,
    stop: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let accepted = tokio::time::timeout(s.handshake_timeout, acceptor.accept(stream));
    let tls_stream = match accepted.await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return Ok(());
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return Ok(());
        }
    };
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(Watched::new(tls_stream, activity.clone()));
    // ALPN chose the protocol: no preface to wait for. Without ALPN it is HTTP/1.1 (HTTP/2
    // over TLS needs ALPN, RFC 9113 section 3.2).
    if h2 {
        until_stopped(s.h2.serve_connection(io, svc), stop).await
    } else {
        until_stopped(s.h1.serve_connection(io, svc), stop).await
    }
}

/// A plain connection: HTTP/2 with prior knowledge if it opens with the preface, else
/// HTTP/1, parked between requests.
async fn plain(
    s: &Serving,
    stream: TcpStream,
    svc: Service,
    activity: &Arc<Activity>,
    stop: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    match opens_with_h2_preface(&stream).await {
        Ok(Some(true)) => {
            let io = TokioIo::new(Watched::new(stream, activity.clone()));
            Box::pin(until_stopped(s.h2.serve_connection(io, svc), stop)).await
        }
        Ok(Some(false)) => http1_parked(s, stream, svc, activity, stop).await,
        // Closed before a byte, or unreadable.
        Ok(None) | Err(_) => Ok(()),
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the first bytes are HTTP/2's connection preface (`None`: closed first). Peeks:
/// nothing is consumed.
async fn opens_with_h2_preface(stream: &TcpStream) -> io::Result<Option<bool>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(true));
        }
        // A strict prefix so far ("P" could still be "POST"): peeking again at once would
        // spin on the same bytes. The watchdog bounds how long this may go on.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `conn` until it ends; once `stop` turns true, asks it to finish what is in flight.
async fn until_stopped<C>(conn: C, mut stop: watch::Receiver<bool>) -> Result<(), BoxError>
where
    C: GracefulConnection,
    C::Error: Into<BoxError>,
{
    let mut conn = pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r.map_err(Into::into),
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await.map_err(Into::into)
}

/// How a round of hyper on a parked connection ended.
enum Round {
    /// Handed back while idle: park, then serve the next request.
    Parked,
    /// The connection is done (the client closed or asked to, or the gateway is stopping).
    Done,
}

type Http1Conn = http1::Connection<TokioIo<Watched<TcpStream>>, Service>;

/// Serves a plain HTTP/1 connection, giving hyper's buffers back whenever it idles.
async fn http1_parked(
    s: &Serving,
    mut stream: TcpStream,
    mut svc: Service,
    activity: &Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let mut replay = Bytes::new();
    loop {
        if replay.is_empty() {
            // Parked: no hyper state, no buffers; the socket's readiness is all we wait on.
            tokio::select! {
                ready = stream.readable() => ready?,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
        let io = TokioIo::new(Watched::replaying(replay, stream, activity.clone()));
        // Boxed: the parked task keeps only a pointer's room for hyper's state.
        let mut conn = Box::new(s.h1.serve_connection(io, svc));
        let round = run_until_idle(&mut conn, activity, &mut stop).await;
        let parts = conn.into_parts();
        let mut io = parts.io.into_inner();
        match round {
            Ok(Round::Parked) => {
                crate::metrics::connection_parked();
                let (rest, socket) = io.into_parts();
                // What hyper had read came first; anything it had not taken from the last
                // replay follows. Copied: hyper's `read_buf`, even empty, is a view of its
                // 8 KiB read buffer and would keep that alive while parked.
                replay = match (parts.read_buf.is_empty(), rest.is_empty()) {
                    (true, true) => Bytes::new(),
                    _ => [&parts.read_buf[..], &rest[..]].concat().into(),
                };
                stream = socket;
                svc = parts.service;
            }
            Ok(Round::Done) => {
                let _ = io.shutdown().await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs hyper on the connection until it ends, or until nothing has been in flight for
/// [`PARK_AFTER`] and hyper has handed the connection back.
async fn run_until_idle(
    conn: &mut Http1Conn,
    activity: &Activity,
    stop: &mut watch::Receiver<bool>,
) -> hyper::Result<Round> {
    let mut timer = pin!(tokio::time::sleep(PARK_AFTER));
    let mut stopped = pin!(stop.wait_for(|s| *s));
    // The request count the timer was last armed for.
    let mut armed_for = None;
    let mut parking = false;
    let mut stopping = false;
    poll_fn(|cx: &mut Context<'_>| loop {
        if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
            // Asked to park and not closing: the socket is ours again.
            let parked = parking && !stopping && !activity.closing();
            return Poll::Ready(r.map(|()| if parked { Round::Parked } else { Round::Done }));
        }
        if !stopping && stopped.as_mut().poll(cx).is_ready() {
            stopping = true;
            Pin::new(&mut *conn).graceful_shutdown();
            continue;
        }
        if parking || stopping || activity.closing() {
            return Poll::Pending;
        }
        let Some(seen) = activity.idle_after() else {
            // In flight: the request's end wakes hyper, and this is polled again.
            return Poll::Pending;
        };
        if armed_for != Some(seen) {
            armed_for = Some(seen);
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + PARK_AFTER);
        }
        if timer.as_mut().poll(cx).is_ready() {
            parking = true;
            Pin::new(&mut *conn).graceful_shutdown();
            continue;
        }
        return Poll::Pending;
    })
    .await
}
