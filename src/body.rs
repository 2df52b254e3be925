//! Body types and the two body operations the gateway needs: reading a request body under a
//! limit, and streaming a response body back with the real project key redacted.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};

use crate::error::Error;

/// Boxed error for response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type inside the gateway, whatever the server's body type.
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The response body type of the gateway.
pub type ResponseBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A complete in-memory response body.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Reads a whole request body, refusing it past `limit` bytes whether or not a
/// `Content-Length` announced it.
///
/// # Errors
/// [`Error::PayloadTooLarge`] past the limit, [`Error::BodyInvalid`] when the client breaks
/// off mid-body.
pub async fn read_limited(
    headers: &HeaderMap,
    mut body: RequestBody,
    limit: usize,
) -> Result<Bytes, Error> {
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        return Err(Error::PayloadTooLarge);
    }
    // A body that arrives in one chunk is returned as that chunk; once a second arrives, the
    // buffer is sized once from the announced length (already checked against the limit), so
    // a large body is not copied again each time the buffer would have grown.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Error::BodyInvalid("the body could not be read".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > limit {
            return Err(Error::PayloadTooLarge);
        }
        if first.is_none() && buf.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(head) = first.take() {
            let announced = announced.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
            buf.reserve(announced.max(len));
            buf.extend_from_slice(&head);
        }
        buf.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Whether `haystack` contains `needle` (an empty needle never matches). Redaction owns
/// this search; `headers` reaches it through [`Keys::found_in`].
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(haystack, needle).is_some()
}

/// What replaces the key wherever it appears in a response body.
const REDACTED: &[u8] = b"[REDACTED]";

/// The upstream keys no answer may carry: the key in use and, during a rotation, the one
/// being rotated out (`[upstream] previous_api_key_*`), which is still live at Composio.
/// Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Keys(std::sync::Arc<[Bytes]>);

impl Keys {
    /// The keys to hide; empty ones are dropped (an empty needle would match everywhere).
    pub fn new(keys: impl IntoIterator<Item = Bytes>) -> Self {
        Self(keys.into_iter().filter(|k| !k.is_empty()).collect())
    }

    /// The key in use (the first given), for what must be keyed by it alone.
    pub(crate) fn current(&self) -> &[u8] {
        self.0.first().map_or(&[], |k| k)
    }

    /// The longest key's length: how much a frame's tail could hold of a key.
    fn longest(&self) -> usize {
        self.0.iter().map(Bytes::len).max().unwrap_or(0)
    }

    /// Whether any key occurs in `haystack`.
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        self.0.iter().any(|k| contains(haystack, k))
    }

    /// `data` with every occurrence of every key replaced by `[REDACTED]`.
    pub fn redact(&self, data: Bytes) -> Bytes {
        if !self.found_in(&data) {
            return data;
        }
        let mut buf = BytesMut::from(&data[..]);
        redact_in_place(&mut buf, self);
        buf.freeze()
    }
}

impl From<Bytes> for Keys {
    fn from(key: Bytes) -> Self {
        Self::new([key])
    }
}

/// A response body that never yields the bytes of a key, even when they straddle frames: it
/// holds back the last `longest key - 1` bytes of each frame until the next one arrives.
/// Trailers are dropped (they are not inspected).
pub struct Redact<B> {
    inner: B,
    secret: Keys,
    carry: BytesMut,
    done: bool,
}

impl<B> Redact<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, secret: impl Into<Keys>) -> Self {
        Self {
            inner,
            secret: secret.into(),
            carry: BytesMut::new(),
            done: false,
        }
    }
}

impl<B> Body for Redact<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                if this.carry.is_empty() {
                    return Poll::Ready(None);
                }
                let rest = this.carry.split().freeze();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => this.done = true,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue;
                    };
                    let keep = this.secret.longest().saturating_sub(1);
                    // The usual frame: nothing carried and no key in it. It is passed on as
                    // it is, without a copy, less the tail that could begin a key.
                    if this.carry.is_empty() && data.len() > keep && !this.secret.found_in(&data) {
                        let tail = data.split_off(data.len() - keep);
                        this.carry.extend_from_slice(&tail);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    this.carry.extend_from_slice(&data);
                    redact_in_place(&mut this.carry, &this.secret);
                    if this.carry.len() > keep {
                        let out = this.carry.split_to(this.carry.len() - keep).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.carry.is_empty()
    }
}

fn redact_in_place(buf: &mut BytesMut, keys: &Keys) {
    for secret in keys.0.iter() {
        if !contains(buf, secret) {
            continue;
        }
        let mut out = BytesMut::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            if buf[i..].starts_with(secret) {
                out.extend_from_slice(REDACTED);
                i += secret.len();
            } else {
                out.extend_from_slice(&buf[i..i + 1]);
                i += 1;
            }
        }
        *buf = out;
    }
}

#[cfg(test)]
mod tests;
