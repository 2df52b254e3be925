//! PLACEHOLDER until branch a12 lands: the API contract of issue 12's invocation extraction
//! and decision, so the MCP carrier compiles. It decides nothing (every call is refused), so
//! nothing can pass through it by accident; the merge of a12 replaces this file whole.

use crate::audit::Audit;
use crate::auth::Identity;
use crate::error::Error;
use crate::proxy::Shared;

/// What an invocation does.
#[allow(dead_code)]
pub(crate) enum Kind {
    Tool,
    Code,
    Proxy,
    ManageConnections,
    Trigger,
}

/// One tool invocation found in a carrier.
#[allow(dead_code)]
pub(crate) struct Invocation {
    pub(crate) kind: Kind,
    pub(crate) tool: String,
    pub(crate) toolkit: Option<String>,
    pub(crate) account: Option<String>,
}

/// The decision's answer.
#[allow(dead_code)]
pub(crate) struct Verdict {
    pub(crate) toolkits: Vec<String>,
}

/// Extraction from an MCP `tools/call` (placeholder).
pub(crate) fn from_tool_call(
    tool: &str,
    _arguments: Option<&serde_json::Value>,
    account: Option<&str>,
) -> Result<Vec<Invocation>, Error> {
    Ok(vec![Invocation {
        kind: Kind::Tool,
        tool: tool.to_owned(),
        toolkit: None,
        account: account.map(str::to_owned),
    }])
}

/// The decision (placeholder): refuses everything.
pub(crate) async fn decide(
    _shared: &Shared,
    _identity: &Identity,
    _invocations: &[Invocation],
    _audit: &mut Audit,
) -> Result<Verdict, Error> {
    Err(Error::Internal)
}
