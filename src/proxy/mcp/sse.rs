//! Server-sent events, event by event: an incremental parser for what Composio streams, and
//! the pump that relays a stream to the client with every event inspected.
//!
//! The pump runs as its own task, reading the upstream body and writing complete, checked
//! events into a small channel that is the client's response body. So:
//! - nothing is buffered beyond one event (bounded by [`MAX_EVENT`]);
//! - every `data` payload is parsed strictly as JSON-RPC; one that is not is dropped (the
//!   client never sees bytes the gateway did not understand), `tools/list` results are
//!   filtered by the tool policy, and the real key is redacted from each whole event (an
//!   event is complete, so no bytes are held back waiting for a frame that may never come);
//! - a stream silent for the idle timeout is ended (its own timeout, not the REST one);
//! - a client that leaves drops the receiver, the next send fails, the task returns and
//!   drops the upstream body, which closes the upstream request.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::auth::Identity;
use crate::body::BoxError;
use crate::proxy::Shared;

/// The largest single event relayed; a larger one ends the stream.
pub(crate) const MAX_EVENT: usize = 16 * 1024 * 1024;

/// One parsed event. Comments are dropped; unknown fields too (the SSE rules).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) retry: Option<String>,
    /// The `data` lines joined with `\n`; `None` when the event had no `data` field.
    pub(crate) data: Option<String>,
}

impl Event {
    /// The event in wire form, `data` given as one line (compact JSON has no newline).
    pub(crate) fn encode(&self, data: Option<&[u8]>) -> Bytes {
        let mut out = BytesMut::with_capacity(data.map_or(0, <[u8]>::len) + 64);
        let line = |out: &mut BytesMut, k: &str, v: &str| {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\n");
        };
        if let Some(e) = &self.event {
            line(&mut out, "event", e);
        }
        if let Some(id) = &self.id {
            line(&mut out, "id", id);
        }
        if let Some(r) = &self.retry {
            line(&mut out, "retry", r);
        }
        if let Some(d) = data {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(d);
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"\n");
        out.freeze()
    }
}

/// Splits a byte stream into events.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buf: BytesMut,
    /// How far `buf` was searched for an event end without finding one (searching resumes
    /// there, so an event arriving in many small frames costs linear time).
    scanned: usize,
}

/// The stream broke the rules (an event too large, or not UTF-8).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

impl Parser {
    /// Adds received bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), Malformed> {
        // The caller takes every complete event out after each push, so what remains is at
        // most one partial event; twice the bound leaves room for a frame that completes it.
        if self.buf.len() + bytes.len() > 2 * MAX_EVENT {
            return Err(Malformed);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete event, if one has arrived. Events with no field at all (a lone
    /// comment, a keep-alive) are skipped.
    pub(crate) fn next_event(&mut self) -> Result<Option<Event>, Malformed> {
        loop {
            let from = self.scanned.saturating_sub(2);
            let Some((end, sep)) = find_end(&self.buf[from..]).map(|(e, s)| (e + from, s)) else {
                if self.buf.len() > MAX_EVENT {
                    return Err(Malformed);
                }
                self.scanned = self.buf.len();
                return Ok(None);
            };
            self.scanned = 0;
            let block = self.buf.split_to(end + sep);
            let text = std::str::from_utf8(&block[..end]).map_err(|_| Malformed)?;
            let mut ev = Event::default();
            let mut any = false;
            for line in text.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.is_empty() || line.starts_with(':') {
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                any = true;
                match field {
                    "data" => match &mut ev.data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => ev.data = Some(value.to_owned()),
                    },
                    "event" => ev.event = Some(value.to_owned()),
                    "id" if !value.contains('\0') => ev.id = Some(value.to_owned()),
                    "retry" if value.bytes().all(|b| b.is_ascii_digit()) => {
                        ev.retry = Some(value.to_owned());
                    }
                    _ => {}
                }
            }
            if any {
                return Ok(Some(ev));
            }
        }
    }

    /// Whether bytes of an unfinished event remain.
    pub(crate) fn has_partial(&self) -> bool {
        !self.buf.iter().all(|b| b.is_ascii_whitespace())
    }
}

/// The end of the first event in `buf`: (offset of the blank line, its length).
fn find_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// The response body fed by a pump task.
pub(crate) struct Channel(mpsc::Receiver<Bytes>);

impl Body for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// What the pump needs to judge events: the rules of the request's moment and the caller.
pub(crate) struct Inspector {
    pub(crate) shared: Arc<Shared>,
    pub(crate) identity: Identity,
    /// The calls whose answers are read after their execution ([`super::Calls`]).
    pub(crate) calls: super::Calls,
}

/// Relays an upstream event stream, event by event, after `prefix` (events the gateway
/// answered itself, such as refused calls of a batch).
pub(crate) fn relay(
    upstream: Incoming,
    inspector: Inspector,
    idle: Duration,
    prefix: Vec<Value>,
) -> Channel {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(pump(upstream, inspector, idle, prefix, tx));
    Channel(rx)
}

async fn pump(
    mut upstream: Incoming,
    inspector: Inspector,
    idle: Duration,
    prefix: Vec<Value>,
    tx: mpsc::Sender<Bytes>,
) {
    let secret = inspector.shared.secret.clone();
    for v in prefix {
        let data = serde_json::to_vec(&v).unwrap_or_default();
        if tx.send(Event::default().encode(Some(&data))).await.is_err() {
            return;
        }
    }
    let mut parser = Parser::default();
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(idle, upstream.frame()) => f,
            () = tx.closed() => {
                tracing::debug!("MCP client left; upstream stream closed");
                return;
            }
        };
        let frame = match frame {
            Err(_) => {
                tracing::info!(?idle, "MCP stream idle; closed");
                crate::metrics::mcp_stream_end("idle");
                return;
            }
            Ok(None) => {
                if parser.has_partial() {
                    tracing::warn!("MCP stream ended inside an event; the rest dropped");
                }
                crate::metrics::mcp_stream_end("done");
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "MCP upstream stream failed");
                crate::metrics::mcp_stream_end("upstream_error");
                return;
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if parser.push(&data).is_err() {
            tracing::warn!("MCP upstream event too large; stream closed");
            crate::metrics::mcp_stream_end("malformed");
            return;
        }
        loop {
            let ev = match parser.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(Malformed) => {
                    tracing::warn!("MCP upstream stream malformed; closed");
                    crate::metrics::mcp_stream_end("malformed");
                    return;
                }
            };
            let Some(out) = inspect(&inspector, &ev).await else {
                continue;
            };
            let out = redact(out, &secret);
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }
}

/// The event as the client may see it, or `None` to drop it.
async fn inspect(inspector: &Inspector, ev: &Event) -> Option<Bytes> {
    let Some(data) = &ev.data else {
        // A priming event (an id, a retry hint) with no payload.
        return Some(ev.encode(None));
    };
    if data.is_empty() {
        return Some(ev.encode(Some(b"")));
    }
    let Some(mut v) = super::strict_value(data.as_bytes()) else {
        tracing::warn!("MCP upstream event is not one JSON value; dropped");
        return None;
    };
    inspector
        .calls
        .after_answers(&inspector.shared, &inspector.identity.subject, &v);
    super::filter_tools(&inspector.shared, &inspector.identity, &mut v).await;
    let bytes = serde_json::to_vec(&v).ok()?;
    Some(ev.encode(Some(&bytes)))
}

/// Replaces every occurrence of `secret` in a whole event.
pub(crate) fn redact(event: Bytes, secret: &crate::body::Keys) -> Bytes {
    secret.redact(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&str]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c.as_bytes()).unwrap();
            while let Some(e) = p.next_event().unwrap() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn events_split_across_frames_are_reassembled() {
        let all = events(&[
            "event: message\nid: 1\nda",
            "ta: {\"a\":\n",
            "\n: a comment\n\n",
            "data: x\r\ndata: y\r\n\r\nretry: 10\n\n",
        ]);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].event.as_deref(), Some("message"));
        assert_eq!(all[0].id.as_deref(), Some("1"));
        assert_eq!(all[0].data.as_deref(), Some("{\"a\":"));
        assert_eq!(all[1].data.as_deref(), Some("x\ny"));
        assert_eq!(all[2].retry.as_deref(), Some("10"));
        assert_eq!(all[2].data, None);
    }

    #[test]
    fn an_event_larger_than_the_bound_is_refused() {
        let mut p = Parser::default();
        let big = "x".repeat(MAX_EVENT / 4);
        p.push(b"data: ").unwrap();
        let mut failed = false;
        for _ in 0..6 {
            if p.push(big.as_bytes()).is_err() || p.next_event().is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn encoding_round_trips() {
        let ev = Event {
            id: Some("7".into()),
            event: Some("message".into()),
            retry: None,
            data: None,
        };
        let wire = ev.encode(Some(b"{\"k\":1}"));
        let back = events(&[std::str::from_utf8(&wire).unwrap()]);
        assert_eq!(back[0].data.as_deref(), Some("{\"k\":1}"));
        assert_eq!(back[0].id.as_deref(), Some("7"));
    }

    #[test]
    fn both_keys_are_redacted_from_a_whole_event() {
        let keys =
            crate::body::Keys::new([Bytes::from_static(b"sk_1"), Bytes::from_static(b"sk_old")]);
        let out = redact(
            Bytes::from_static(b"data: {\"k\":\"sk_1\",\"j\":\"sk_1\",\"o\":\"sk_old\"}\n\n"),
            &keys,
        );
        assert_eq!(
            &out[..],
            b"data: {\"k\":\"[REDACTED]\",\"j\":\"[REDACTED]\",\"o\":\"[REDACTED]\"}\n\n"
        );
    }
}
