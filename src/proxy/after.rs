//! The one step after every execution, whatever carried it (REST execute, sessions, proxy
//! executions, MCP `tools/call`): the answer judged by [`crate::revocation`] and relayed to
//! the caller unchanged.

use std::sync::Arc;

use http::Response;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;

use super::{Ctx, Shared};
use crate::body::ResponseBody;
use crate::error::Error;
use crate::revocation::{Answer, Revoker, MAX_INSPECTED};

impl Shared {
    /// The narrow handles the step after an execution acts on.
    pub(crate) fn revoker(&self) -> Revoker<'_> {
        Revoker {
            connections: &self.connections,
            broken: &self.broken,
            audit: &self.audit,
            expiry: self.expiry.as_ref(),
        }
    }
}

/// The step after an execution ([`Revoker::after_execution`]), on these rules.
pub(crate) fn after_execution(
    shared: &Shared,
    subject: &Arc<str>,
    decided: &[(String, Option<String>)],
    answer: Answer<'_>,
) {
    shared.revoker().after_execution(subject, decided, answer);
}

/// Relays an HTTP execution's answer after [`after_execution`] has looked at it (read whole
/// when small enough; a larger one is judged by its status alone). The answer itself is
/// relayed unchanged: this call already failed; the next one is refused.
pub(crate) async fn relay_execution(
    ctx: &Ctx<'_>,
    resp: Response<Incoming>,
    decided: &[(String, Option<String>)],
) -> Result<Response<ResponseBody>, Error> {
    let subject = &ctx.identity.subject;
    let small = http_body::Body::size_hint(resp.body())
        .exact()
        .is_some_and(|n| n <= MAX_INSPECTED);
    if decided.is_empty() || !small {
        after_execution(
            ctx.shared,
            subject,
            decided,
            Answer::Http(resp.status(), None),
        );
        return ctx.relay(resp);
    }
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|_| Error::UpstreamUnavailable)?
        .to_bytes();
    after_execution(
        ctx.shared,
        subject,
        decided,
        Answer::Http(parts.status, Some(&bytes)),
    );
    let resp = Response::from_parts(parts, Full::new(bytes));
    ctx.relay_body(resp)
}
