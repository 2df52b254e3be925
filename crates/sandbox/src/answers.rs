//! The v3 answers that more than one API family gives: the handler outcome, the listing
//! envelope and its paging, the not-found replies for tools and accounts, connect links.
//! `v3`, its tool-router sessions and `legacy` share them from here, so none of those
//! imports another.

use serde_json::{json, Value};

use crate::http::{Ctx, Reply};
use crate::store::{self, now_secs, Page, Store};

/// A handler's outcome: `Err` carries an error reply, so `?` works on validation.
pub(crate) type Outcome = Result<Reply, Reply>;

/// Default page size of the v3 listings.
pub(crate) const DEFAULT_LIMIT: usize = 20;

/// `limit` (default 20).
pub(crate) fn limit(ctx: &Ctx, default: usize) -> Result<usize, Reply> {
    match ctx.q("limit") {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ctx.validation(&format!("limit must be a positive integer, got {l:?}"))),
        },
    }
}

/// The `{items, next_cursor, total_pages, current_page, total_items}` envelope.
pub(crate) fn list_reply<T>(page: Page<T>, f: impl Fn(T) -> Value) -> Reply {
    Reply::ok(json!({
        "items": page.items.into_iter().map(f).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
        "total_pages": page.total_pages,
        "current_page": page.current_page,
        "total_items": page.total_items,
    }))
}

/// Paginates `items` in their given order.
pub(crate) fn paginate_vec<T>(ctx: &Ctx, items: Vec<T>) -> Result<Page<T>, Reply> {
    let limit = limit(ctx, DEFAULT_LIMIT)?;
    let keyed = (1u64..).zip(items).collect();
    store::paginate(keyed, ctx.q("cursor"), limit, false).map_err(|e| ctx.validation(&e))
}

pub(crate) fn tool_not_found(ctx: &Ctx, slug: &str) -> Reply {
    ctx.not_found("Tool_ToolNotFound", &format!("Tool {slug} not found"))
}

pub(crate) fn account_not_found(ctx: &Ctx, id: &str) -> Reply {
    ctx.not_found(
        "ConnectedAccount_NotFound",
        &format!("Connected account {id} not found"),
    )
}

/// A hosted-link answer for a new `INITIATED` account.
pub(crate) fn link_reply(s: &mut Store, account_id: &str) -> Value {
    let token = s.new_id("lk");
    json!({
        "link_token": token,
        "redirect_url": format!("https://connect.composio.dev/link/{token}"),
        "expires_at": store::rfc3339(now_secs() + 600, 0),
        "connected_account_id": account_id,
    })
}
