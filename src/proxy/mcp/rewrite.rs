//! MCP URLs in relayed answers, moved onto the gateway.
//!
//! Composio's answers hand out hosted MCP URLs: a tool router session's `mcp.url`
//! (`https://backend.composio.dev/tool_router/trs_…/mcp`, also seen as
//! `…/tool_router/v3/trs_…/mcp`) and an MCP server's `mcp_url` / `user_ids_url[]` /
//! `connected_account_urls[]` (`…/v3/mcp/{id}?user_id=…`). A client that used one would
//! reach Composio directly with the user's JWT as its key. Every such URL, wherever it
//! appears in an answer (inside a longer string too, e.g. the setup commands), becomes the
//! same path on the gateway's public origin; a server URL's `user_id` becomes the subject.

use serde_json::Value;

use crate::rewrite::is_identity_key;

/// The gateway URL for a Composio MCP URL, or `None` when `url` is not one.
pub(crate) fn gateway_url(url: &str, public: &str, subject: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.authority().is_none() {
        return None;
    }
    let segs: Vec<&str> = uri.path().trim_end_matches('/').split('/').collect();
    let n = segs.len();
    let ok_id = |s: &str| crate::path::check(&format!("/{s}")).is_ok();
    // …/tool_router/{id}/mcp and …/tool_router/v3/{id}/mcp
    if n >= 3 && segs[n - 1] == "mcp" {
        let id = segs[n - 2];
        let at = if segs[n - 3] == "tool_router" {
            Some(n - 3)
        } else if n >= 4 && segs[n - 3] == "v3" && segs[n - 4] == "tool_router" {
            Some(n - 4)
        } else {
            None
        };
        if at.is_some() && ok_id(id) {
            return Some(format!("{public}/tool_router/{id}/mcp"));
        }
    }
    // …/v3/mcp/{id}?user_id=… (and the same under /api)
    if n >= 3 && segs[n - 2] == "mcp" && segs[n - 3] == "v3" && ok_id(segs[n - 1]) {
        let id = segs[n - 1];
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            if !is_identity_key(&k) {
                q.append_pair(&k, &v);
            }
        }
        q.append_pair("user_id", subject);
        return Some(format!("{public}/v3/mcp/{id}?{}", q.finish()));
    }
    None
}

/// Rewrites every MCP URL in every string of `v`; answers how many.
pub(crate) fn rewrite_json(v: &mut Value, public: &str, subject: &str) -> usize {
    match v {
        Value::String(s) => match rewrite_text(s, public, subject) {
            Some((t, n)) => {
                *s = t;
                n
            }
            None => 0,
        },
        Value::Array(a) => a.iter_mut().map(|x| rewrite_json(x, public, subject)).sum(),
        Value::Object(m) => m
            .values_mut()
            .map(|x| rewrite_json(x, public, subject))
            .sum(),
        _ => 0,
    }
}

/// The text with every MCP URL in it rewritten, or `None` when it holds none.
pub(crate) fn rewrite_text(s: &str, public: &str, subject: &str) -> Option<(String, usize)> {
    if !s.contains("mcp") || !s.contains("http") {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 32);
    let mut n = 0;
    let mut rest = s;
    while let Some(at) = find_scheme(rest) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match gateway_url(url, public, subject) {
            Some(g) => {
                out.push_str(&g);
                n += 1;
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    (n > 0).then_some((out, n))
}

fn find_scheme(s: &str) -> Option<usize> {
    match (s.find("https://"), s.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "https://gw.example";

    #[test]
    fn session_and_server_urls_move_onto_the_gateway() {
        assert_eq!(
            gateway_url(
                "https://backend.composio.dev/tool_router/trs_1/mcp",
                P,
                "alice"
            )
            .unwrap(),
            "https://gw.example/tool_router/trs_1/mcp"
        );
        assert_eq!(
            gateway_url(
                "https://app.composio.dev/tool_router/v3/trs_1/mcp",
                P,
                "alice"
            )
            .unwrap(),
            "https://gw.example/tool_router/trs_1/mcp"
        );
        assert_eq!(
            gateway_url(
                "https://backend.composio.dev/v3/mcp/mcp_1?user_id=bob&include_composio_helper_actions=true",
                P,
                "alice"
            )
            .unwrap(),
            "https://gw.example/v3/mcp/mcp_1?include_composio_helper_actions=true&user_id=alice"
        );
        assert_eq!(
            gateway_url(
                "http://127.0.0.1:9/v3/mcp/mcp_1?connected_account_id=ca_1",
                P,
                "alice"
            )
            .unwrap(),
            "https://gw.example/v3/mcp/mcp_1?connected_account_id=ca_1&user_id=alice"
        );
        assert_eq!(gateway_url("https://example.com/docs/mcp", P, "a"), None);
        assert_eq!(gateway_url("not a url", P, "a"), None);
    }

    #[test]
    fn every_url_in_an_answer_is_rewritten_even_inside_commands() {
        let mut v = json!({
            "mcp_url": "https://backend.composio.dev/v3/mcp/m?user_id=bob",
            "user_ids_url": ["https://backend.composio.dev/v3/mcp/m?user_id=bob"],
            "commands": {"claude": "npx @composio/mcp@latest setup \"https://backend.composio.dev/v3/mcp/m?user_id=bob\" \"n\" --client claude"},
            "mcp": {"type": "http", "url": "https://backend.composio.dev/tool_router/trs_9/mcp"},
            "other": "https://composio.dev/pricing",
        });
        assert_eq!(rewrite_json(&mut v, P, "alice"), 4);
        let text = v.to_string();
        assert!(!text.contains("backend.composio.dev"), "{text}");
        assert!(!text.contains("bob"), "{text}");
        assert_eq!(v["other"], "https://composio.dev/pricing");
    }
}
