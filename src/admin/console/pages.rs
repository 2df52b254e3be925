//! The console's pages. maud escapes every value interpolated with `(...)`: nothing here
//! uses `PreEscaped` on data, so a slug, subject, path or message is always shown as text.

use std::sync::Arc;

use maud::{html, Markup, DOCTYPE};

use super::{Ctx, Decision, Feed, Filter, Form};
use crate::toolpolicy::By;

pub(crate) const APP_JS: &str = include_str!("assets/app.js");
pub(crate) const APP_CSS: &str = include_str!("assets/app.css");

/// Rows the Live decisions page renders (the ring may hold more).
const LIVE_ROWS: usize = 200;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · entitygate console" }
            link rel="stylesheet" href="/ui/static/app.css";
        }
    }
}

fn layout(ctx: &Ctx<'_>, title: &str, here: &str, body: Markup) -> Markup {
    let nav = [
        ("/ui/live", "Live decisions"),
        ("/ui/refusals", "Refusals"),
        ("/ui/user", "User"),
        ("/ui/killswitch", "Kill switch"),
        ("/ui/approvals", "Approvals"),
        ("/ui/policy", "Policy"),
        ("/ui/drift", "Tool drift"),
        ("/ui/health", "Health"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "entitygate" }
                    nav {
                        @for (href, name) in nav {
                            a href=(href) class=[(href == here).then_some("here")] { (name) }
                        }
                    }
                    form method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(ctx.csrf);
                        button type="submit" id="logout" { "Sign out" }
                    }
                }
                main { (body) }
                script src="/ui/static/app.js" {}
            }
        }
    }
}

pub(crate) fn login(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main.login {
                    h1 { "entitygate console" }
                    @if let Some(e) = error { div.error { (e) } }
                    form.card method="post" action="/ui/login" {
                        label {
                            "Admin token"
                            input type="password" name="token" id="token" autocomplete="off" autofocus;
                        }
                        p { button type="submit" id="signin" { "Sign in" } }
                        p.muted { "The token stays on the server: the browser keeps only a session cookie." }
                    }
                }
            }
        }
    }
}

pub(crate) fn message(ctx: &Ctx<'_>, title: &str, text: &str) -> Markup {
    layout(
        ctx,
        title,
        "",
        html! { h1 { (title) } div.error { (text) } },
    )
}

fn decision_cell(d: &Decision) -> Markup {
    html! {
        td class=(if d.refused() { "refused" } else { "allow" }) { (d.decision) }
    }
}

fn user_href(subject: &str) -> String {
    format!("/ui/user?subject={}", encode(subject))
}

fn decision_href(id: &str) -> String {
    format!("/ui/decision?id={}", encode(id))
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn rows(decisions: &[Arc<Decision>]) -> Markup {
    html! {
        @for d in decisions {
            tr data-seq=(d.seq) {
                td.mono { (d.time) }
                @match &d.subject {
                    Some(s) => td.mono { a href=(user_href(s)) { (s) } },
                    None => td.muted { "-" },
                }
                td.mono { (d.method) " " (d.path.as_deref().unwrap_or("(non-canonical path)")) }
                td.mono { (d.tool.as_deref().unwrap_or("")) }
                td.mono { (d.toolkit.as_deref().unwrap_or("")) }
                (decision_cell(d))
                td { (d.status) }
                td { (d.latency_ms) }
                td.mono { a href=(decision_href(&d.request_id)) { (d.request_id) } }
            }
        }
    }
}

fn table_head() -> Markup {
    html! {
        thead { tr {
            th { "Time" } th { "Subject" } th { "Request" } th { "Tool" } th { "Toolkit" }
            th { "Decision" } th { "Status" } th { "ms" } th { "Request id" }
        } }
    }
}

fn missed_notice(feed: &Feed) -> Markup {
    let (_, _, _, missed) = feed.usage();
    html! {
        @if missed > 0 {
            div.notice {
                (missed) " decisions were not copied to the console (too many at once, or too large); "
                "the audit log has every one."
            }
        }
    }
}

pub(crate) fn live(ctx: &Ctx<'_>, feed: &Feed, f: &Filter) -> Markup {
    let last = feed.last_seq();
    let recent = feed.recent(f, LIVE_ROWS);
    let (kept, _, capacity, _) = feed.usage();
    layout(
        ctx,
        "Live decisions",
        "/ui/live",
        html! {
            h1 { "Live decisions" span #live-status.muted { "connecting…" } }
            (missed_notice(feed))
            form.filters method="get" action="/ui/live" {
                label { "Subject" input type="text" name="subject" value=(f.subject); }
                label { "Decision / slug" input type="text" name="slug" value=(f.slug); }
                label { "Toolkit" input type="text" name="toolkit" value=(f.toolkit); }
                label { "Tool" input type="text" name="tool" value=(f.tool); }
                label.inline { input type="checkbox" name="refused_only" checked[f.refused_only]; "refusals only" }
                button type="submit" id="filter" { "Filter" }
                a href="/ui/live" { "clear" }
            }
            p.muted { "The " (kept) " most recent decisions are kept in memory (at most " (capacity) "); new ones appear as they are made." }
            table #decisions {
                (table_head())
                tbody #live-rows data-after=(last) {
                    (rows(&recent))
                    @if recent.is_empty() {
                        tr #live-empty { td colspan="9" .muted { "No decisions yet." } }
                    }
                }
            }
        },
    )
}

pub(crate) fn decision(ctx: &Ctx<'_>, feed: &Feed, id: &str) -> Markup {
    let d = feed.by_request_id(id);
    layout(
        ctx,
        "Decision",
        "",
        html! {
            h1 { "Request " span.mono { (id) } }
            @match d {
                None => div.notice { "This request is no longer in the console's memory; search the audit log for its request id." },
                Some(d) => {
                    div.card { dl.kv {
                        dt { "Time" } dd.mono { (d.time) }
                        dt { "Subject" } dd.mono { @if let Some(s) = &d.subject { a href=(user_href(s)) { (s) } } @else { "-" } }
                        dt { "Request" } dd.mono { (d.method) " " (d.path.as_deref().unwrap_or("(non-canonical path)")) }
                        dt { "Query" } dd.mono { (d.query.as_deref().unwrap_or("")) }
                        dt { "Route" } dd.mono { (d.route) " (policy " (d.policy) ")" }
                        dt { "Tool" } dd.mono { (d.tool.as_deref().unwrap_or("-")) }
                        dt { "Toolkit" } dd.mono { (d.toolkit.as_deref().unwrap_or("-")) }
                        dt { "Connected account" } dd.mono { (d.connected_account_id.as_deref().unwrap_or("-")) }
                        dt { "Decision" } dd class=(if d.refused() { "refused" } else { "allow" }) { (d.decision) " (code " (d.code) ")" }
                        dt { "Rule" } dd.mono { (d.rule.as_deref().unwrap_or("-")) }
                        dt { "Identity rewritten" } dd { (d.identity_rewritten) }
                        dt { "Status" } dd { (d.status) @if let Some(u) = d.upstream_status { " (Composio " (u) ")" } }
                        dt { "Latency" } dd { (d.latency_ms) " ms" }
                        dt { "Trace id" } dd.mono { (d.trace_id.as_deref().unwrap_or("-")) }
                    } }
                }
            }
        },
    )
}

/// A horizontal bar chart of `(label, count)` as inline SVG (presentation attributes only:
/// no inline style, so the CSP holds).
fn bars(items: &[(String, u64)], id: &str) -> Markup {
    let items = &items[..items.len().min(15)];
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let (row, label_w, bar_w) = (22u64, 220u64, 300u64);
    let height = row * items.len().max(1) as u64 + 4;
    html! {
        svg id=(id) role="img" width=(label_w + bar_w + 60) height=(height) xmlns="http://www.w3.org/2000/svg" {
            @for (i, (label, n)) in items.iter().enumerate() {
                @let y = row * i as u64;
                @let w = (bar_w * n / max).max(2);
                text x="0" y=(y + 15) { (label) }
                rect x=(label_w) y=(y + 4) width=(w) height="14" fill="#b42318" rx="2" {}
                text x=(label_w + w + 6) y=(y + 15) { (n) }
            }
            @if items.is_empty() { text x="0" y="15" fill="#5f6b7a" { "No refusals in the last hour." } }
        }
    }
}

/// Refusals per minute over the hour as columns.
fn timeline(per_minute: &[u64]) -> Markup {
    let max = per_minute.iter().copied().max().unwrap_or(1).max(1);
    let (w, h) = (10u64, 80u64);
    html! {
        svg id="timeline" role="img" width=(w * per_minute.len() as u64 + 2) height=(h + 16) xmlns="http://www.w3.org/2000/svg" {
            @for (i, n) in per_minute.iter().enumerate() {
                @let bh = h * n / max;
                rect x=(w * i as u64) y=(h - bh) width=(w - 2) height=(bh.max(1)) fill=(if *n > 0 { "#b42318" } else { "#d9dee5" }) {
                    title { (60 - i) " min ago: " (n) }
                }
            }
            text x="0" y=(h + 13) fill="#5f6b7a" { "60 min ago" }
            text x=(w * per_minute.len() as u64 - 30) y=(h + 13) fill="#5f6b7a" { "now" }
        }
    }
}

pub(crate) fn refusals(ctx: &Ctx<'_>, feed: &Feed) -> Markup {
    let r = feed.refusals(crate::clock::unix_now());
    layout(
        ctx,
        "Refusals",
        "/ui/refusals",
        html! {
            h1 { "Refusals in the last hour" }
            (missed_notice(feed))
            p { strong #refusal-total { (r.total) } " refusals out of " (r.decisions) " decisions." }
            div.card { h2 { "Per minute" } (timeline(&r.per_minute)) }
            div.grid {
                div.card {
                    h2 { "By slug" }
                    (bars(&r.by_slug, "by-slug"))
                    table { thead { tr { th { "Slug" } th { "Count" } } } tbody {
                        @for (s, n) in &r.by_slug { tr { td.mono { a href=(format!("/ui/live?slug={}", encode(s))) { (s) } } td { (n) } } }
                    } }
                }
                div.card {
                    h2 { "By toolkit" }
                    (bars(&r.by_toolkit, "by-toolkit"))
                    table { thead { tr { th { "Toolkit" } th { "Count" } } } tbody {
                        @for (t, n) in &r.by_toolkit { tr { td.mono { (t) } td { (n) } } }
                    } }
                }
            }
        },
    )
}

pub(crate) async fn user(ctx: &Ctx<'_>, feed: &Feed, subject: &str) -> Markup {
    let subject = subject.trim();
    let shared = ctx.control.rules().load_full();
    let accounts = if subject.is_empty() {
        None
    } else {
        Some(shared.connections.list_accounts(subject).await)
    };
    let recent: Vec<Arc<Decision>> = if subject.is_empty() {
        Vec::new()
    } else {
        let f = Filter::default();
        feed.recent(&f, usize::MAX)
            .into_iter()
            .filter(|d| d.subject.as_deref() == Some(subject))
            .take(LIVE_ROWS)
            .collect()
    };
    let now = crate::clock::unix_now();
    let rules: Vec<crate::killswitch::Rule> = shared
        .kill_switch
        .rules()
        .into_iter()
        .filter(|r| r.active(now))
        .filter(|r| match &r.target {
            crate::killswitch::Target::Subject(s) => s == subject,
            crate::killswitch::Target::All(_) => true,
            _ => false,
        })
        .collect();
    layout(
        ctx,
        "User",
        "/ui/user",
        html! {
            h1 { "User" @if !subject.is_empty() { " " span.mono #subject { (subject) } } }
            form.filters method="get" action="/ui/user" {
                label { "Subject" input type="text" name="subject" value=(subject); }
                button type="submit" { "Show" }
            }
            @if !subject.is_empty() {
                h2 { "Deny rules that apply to this user" }
                (rule_table(ctx, &rules, Some(subject)))
                form.filters #deny-user method="post" action="/ui/killswitch/add" {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    input type="hidden" name="kind" value="subject";
                    input type="hidden" name="value" value=(subject);
                    input type="hidden" name="back" value="user";
                    label { "Reason" input type="text" name="reason" id="deny-reason" required; }
                    label { "Expires in (minutes, empty: never)" input type="text" name="expires_in_mins" id="deny-expiry"; }
                    button.danger type="submit" id="deny-user-button" { "Deny this user" }
                }
            }
            @if let Some(accounts) = accounts {
                h2 { "Connections (as Composio reports them now)" }
                @match accounts {
                    Err(e) => div.error { "Composio could not be asked: " (e.to_string()) },
                    Ok(list) if list.is_empty() => p.muted { "No connected accounts." },
                    Ok(list) => table #connections {
                        thead { tr { th { "Toolkit" } th { "Account" } th { "Status" } th { "Disabled" } th { "Usable" } } }
                        tbody { @for a in list.iter() {
                            tr {
                                td.mono { (a.toolkit) } td.mono { (a.id) } td { (a.status) }
                                td { (a.is_disabled) }
                                td class=(if a.usable() { "allow" } else { "refused" }) { (if a.usable() { "yes" } else { "no" }) }
                            }
                        } }
                    },
                }
                h2 { "Recent decisions" }
                table #user-decisions {
                    (table_head())
                    tbody {
                        (rows(&recent))
                        @if recent.is_empty() { tr { td colspan="9" .muted { "None in the console's memory." } } }
                    }
                }
            }
        },
    )
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(", ")
    }
}

/// The explain form's values echoed back (never the token).
#[derive(Default)]
pub(crate) struct ExplainForm {
    request: String,
    body: String,
    live: bool,
}

pub(crate) fn policy(ctx: &Ctx<'_>, result: Option<(ExplainForm, Markup)>) -> Markup {
    let shared = ctx.control.rules().load_full();
    let p = &shared.policy;
    let (form, result) = result.unwrap_or_default();
    let request = if form.request.is_empty() {
        "POST /api/v3/tools/execute/GITHUB_STAR_A_REPOSITORY_FOR_THE_AUTHENTICATED_USER"
    } else {
        &form.request
    };
    layout(
        ctx,
        "Policy",
        "/ui/policy",
        html! {
            h1 { "Policy" }
            div.card #explain {
                h2 { "Explain a call (dry run, as " span.mono { "entitygate explain" } ")" }
                form method="post" action="/ui/policy/explain" {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    label { "Caller's JWT" input type="password" name="token" id="explain-token" autocomplete="off"; }
                    label { "Request (METHOD /path?query)" input type="text" name="request" id="explain-request" value=(request); }
                    label { "JSON body (optional)" textarea name="body" id="explain-body" { (form.body) } }
                    label.inline { input type="checkbox" name="live" checked[form.live]; "ask Composio read-only (--live)" }
                    p { button type="submit" id="explain-run" { "Explain" } }
                }
                (result)
            }
            h2 { "Tool policy rules, in order" }
            p { "Default: " strong { (format!("{:?}", p.default_decision).to_lowercase()) }
                @if !p.scope_prefix.is_empty() { " · OAuth scope prefix " span.mono { (p.scope_prefix) } } }
            table #rules {
                thead { tr { th { "#" } th { "Name" } th { "When" } th { "Allow toolkits" } th { "Deny toolkits" } th { "Allow tools" } th { "Deny tools" } } }
                tbody {
                    @for (i, r) in p.rules.iter().enumerate() {
                        tr {
                            td { (i + 1) }
                            td.mono { (shared.tool_policy.label(By::Rule(i))) }
                            td.mono { @match &r.when {
                                None => "every caller",
                                Some(w) => {
                                    (w.claim)
                                    @if let Some(v) = &w.equals { " equals " (v) }
                                    @if let Some(v) = &w.contains { " contains " (v) }
                                    @if let Some(v) = w.exists { " exists " (v) }
                                },
                            } }
                            td.mono { (list(&r.allow_toolkits)) }
                            td.mono { (list(&r.deny_toolkits)) }
                            td.mono { (list(&r.allow_tools)) }
                            td.mono { (list(&r.deny_tools)) }
                        }
                    }
                    @if p.rules.is_empty() { tr { td colspan="7" .muted { "No rules: the default decides." } } }
                }
            }
            h2 { "Request policy" }
            div.card { dl.kv {
                dt { "On identity mismatch" } dd { (format!("{:?}", p.on_identity_mismatch).to_lowercase()) }
                dt { "Caller-supplied credentials" } dd { (p.allow_custom_auth) }
                dt { "Shared accounts" } dd { (p.allow_shared_accounts) }
                dt { "Proxy execute" } dd { (p.allow_proxy_execute) }
                dt { "Largest inspected body" } dd { (p.max_body_bytes) " bytes" }
            } }
            h2 { "Route table (first match wins; anything else is refused)" }
            table #routes {
                thead { tr { th { "Method" } th { "Pattern" } th { "Policy" } } }
                tbody { @for r in crate::routes::ROUTES {
                    tr { td { (r.method) } td.mono { (r.pattern) } td { (r.policy.name()) } }
                } }
            }
        },
    )
}

/// `POST /ui/policy/explain`: the dry run of `POST /explain` ([`crate::admin::dry_run`]:
/// the configuration file the gateway runs, read again, and the running kill switch).
pub(crate) async fn explain(ctx: &Ctx<'_>, form: &Form) -> Markup {
    let echo = ExplainForm {
        request: form.get("request").cloned().unwrap_or_default(),
        body: form.get("body").cloned().unwrap_or_default(),
        live: form.get("live").is_some_and(|v| v == "on"),
    };
    let result = match run_explain(ctx, form, echo.live).await {
        Ok(e) => html! {
            h2 { "Result: "
                span #explain-decision class=(if e.decision == "allow" { "allow" } else { "refused" }) { (e.decision) } }
            pre #explain-text { (e.to_text()) }
        },
        Err(why) => html! { div.error #explain-error { (why) } },
    };
    policy(ctx, Some((echo, result)))
}

async fn run_explain(
    ctx: &Ctx<'_>,
    form: &Form,
    live: bool,
) -> Result<crate::explain::Explanation, String> {
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    let line = form.get("request").map(|t| t.trim()).unwrap_or_default();
    if token.is_empty() || line.is_empty() {
        return Err("A JWT and a request line are needed.".into());
    }
    let (method, target) = line
        .split_once(' ')
        .ok_or("The request must be \"METHOD /path\".")?;
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| "Not a method.")?;
    let body = match form.get("body").map(|b| b.trim()).unwrap_or_default() {
        "" => None,
        b => {
            serde_json::from_str::<serde_json::Value>(b)
                .map_err(|e| format!("The body is not JSON: {e}"))?;
            Some(b.as_bytes().to_vec())
        }
    };
    let request = crate::explain::ExplainRequest {
        method,
        target: target.trim().to_owned(),
        token: token.to_owned(),
        body,
        live,
    };
    crate::admin::dry_run(ctx.control, &request)
        .await
        .map_err(|e| e.to_string())
}

pub(crate) async fn health(ctx: &Ctx<'_>, feed: &Feed) -> Markup {
    let control = ctx.control;
    let shared = control.rules().load_full();
    let keys = shared.keys_ready();
    let window = std::time::Duration::from_secs(control.admin().ready_window_secs);
    let upstream = shared.upstream.reachable(window).await;
    let (tokens, token_bytes) = shared.auth.cache_usage();
    let jwks = shared.auth.jwks_status();
    let stats = shared.connections.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let (hits, misses) = (load(&stats.hits), load(&stats.misses));
    let ratio = if hits + misses == 0 {
        "-".to_owned()
    } else {
        format!("{:.1} %", 100.0 * hits as f64 / (hits + misses) as f64)
    };
    let (kept, bytes, capacity, missed) = feed.usage();
    let ok = |b: bool| html! { span class=(if b { "allow" } else { "refused" }) { (if b { "yes" } else { "no" }) } };
    layout(
        ctx,
        "Health",
        "/ui/health",
        html! {
            h1 { "Health" }
            div.grid {
                div.card #readiness { h2 { "Readiness" } dl.kv {
                    dt { "Ready" } dd #ready { (ok(keys && upstream)) }
                    dt { "Verification keys loaded" } dd { (ok(keys)) }
                    dt { "Composio reachable" } dd { (ok(upstream)) " (answered within " (window.as_secs()) " s, or a probe now)" }
                } }
                div.card { h2 { "JWKS" } dl.kv {
                    @match jwks {
                        None => { dt { "Source" } dd { "static keys only" } },
                        Some((loaded, generation)) => {
                            dt { "Fetched" } dd { (ok(loaded)) }
                            dt { "Key set generation" } dd { (generation) }
                        },
                    }
                    dt { "Verified tokens cached" } dd { (tokens) " (" (token_bytes) " bytes)" }
                } }
                div.card { h2 { "Connection status cache" } dl.kv {
                    dt { "Hits / lookups" } dd { (hits) " / " (misses) " (hit ratio " (ratio) ")" }
                    dt { "Coalesced" } dd { (load(&stats.coalesced)) }
                    dt { "Stale answers served" } dd { (load(&stats.stale)) }
                    dt { "Evictions" } dd { (load(&stats.evictions)) }
                    dt { "Gating" } dd { (ok(shared.connections.gating())) }
                } }
                div.card { h2 { "Console feed" } dl.kv {
                    dt { "Decisions kept" } dd { (kept) " of " (capacity) " (about " (bytes / 1024) " KiB)" }
                    dt { "Not copied" } dd { (missed) }
                } }
                div.card { h2 { "Audit and configuration" } dl.kv {
                    dt { "Audit log" } dd.mono { (shared.audit.path().map_or_else(|| "stdout".to_owned(), |p| p.display().to_string())) }
                    dt { "Configuration file" } dd.mono { (control.config_path().map_or_else(|| "(built in-process)".to_owned(), |p| p.display().to_string())) }
                    dt { "Shared state (Redis), replicas" } dd { "not configured: this replica decides alone" }
                } }
            }
        },
    )
}

fn when(unix: u64) -> String {
    let now = crate::clock::unix_now();
    if unix > now {
        let m = (unix - now).div_ceil(60);
        format!("in {m} min")
    } else {
        let m = (now - unix) / 60;
        format!("{m} min ago")
    }
}

/// The deny rules as a table, each with its Lift button (`back_to`: the User page's subject).
fn rule_table(ctx: &Ctx<'_>, rules: &[crate::killswitch::Rule], back_to: Option<&str>) -> Markup {
    html! {
        table.rules {
            thead { tr { th { "Id" } th { "Denies" } th { "Reason" } th { "Added" } th { "Expires" } th {} } }
            tbody {
                @for r in rules {
                    tr data-rule=(r.id) {
                        td.mono { (r.id) }
                        td.mono { (r.describe()) }
                        td { (r.reason) }
                        td { (when(r.created_at)) }
                        td { @match r.expires_at { Some(e) => (when(e)), None => "never" } }
                        td {
                            form method="post" action="/ui/killswitch/lift" {
                                input type="hidden" name="csrf" value=(ctx.csrf);
                                input type="hidden" name="id" value=(r.id);
                                @if let Some(s) = back_to {
                                    input type="hidden" name="back" value="user";
                                    input type="hidden" name="value" value=(s);
                                }
                                button type="submit" class="lift" { "Lift" }
                            }
                        }
                    }
                }
                @if rules.is_empty() { tr { td colspan="6" .muted { "None." } } }
            }
        }
    }
}

/// "Tool drift": every definition the tool lock found different from the reviewed one (or a
/// tool of a locked toolkit the lock does not have), with what changed and the locked and
/// seen definitions side by side; hidden characters are shown as `\u{E0041}`.
pub(crate) fn drift(ctx: &Ctx<'_>) -> Markup {
    let shared = ctx.control.rules().load_full();
    let lock = shared.tool_lock.as_deref();
    let drift = lock
        .map(crate::toollock::ToolLock::drift)
        .unwrap_or_default();
    let config = ctx
        .control
        .config_path()
        .map_or_else(|| "FILE".to_owned(), |p| p.display().to_string());
    layout(
        ctx,
        "Tool drift",
        "/ui/drift",
        html! {
            h1 { "Tool drift" }
            @match lock {
                None => p.muted #drift-off { "No tool lock is configured ([tools_lock])." }
                Some(l) => p.muted {
                    (l.file().tools.len()) " tools of " (l.file().toolkits.len())
                    " toolkits locked in " span.mono { (l.settings().path.display()) }
                    "; a drifted tool is "
                    (match l.settings().on_drift { crate::config::OnDrift::Refuse => "refused", crate::config::OnDrift::Warn => "served (warn)" })
                    ". Accept a change after review with "
                    span.mono { "entitygate tools lock --config " (config) " --accept TOOL" }
                    ", then reload."
                }
            }
            @if lock.is_some() && drift.is_empty() { p #drift-none { "No drift: every definition seen is the reviewed one." } }
            @for d in &drift {
                div.card.drift {
                    h2 { span.mono { (d.tool) } " · " (d.kind())
                        @if let Some(tk) = &d.toolkit { " · " (tk) }
                        @if let Some(v) = &d.version { " · " (v) } }
                    p.muted { "first seen on " (d.carrier) " · locked "
                        span.mono { (d.locked_hash.as_deref().unwrap_or("none")) }
                        " · seen " span.mono { (d.seen_hash) } }
                    ul { @for c in d.changes() { li.mono { (c) } } }
                    div.sidebyside {
                        div { h3 { "Locked (reviewed)" }
                            pre { (d.locked.as_ref().map_or_else(|| "(not in the lock)".to_owned(), crate::toollock::Drift::pretty)) } }
                        div { h3 { "Seen (Composio now)" } pre { (crate::toollock::Drift::pretty(&d.seen)) } }
                    }
                }
            }
        },
    )
}

pub(crate) fn killswitch(ctx: &Ctx<'_>, error: Option<&str>) -> Markup {
    let shared = ctx.control.rules().load_full();
    let now = crate::clock::unix_now();
    let rules: Vec<_> = shared
        .kill_switch
        .rules()
        .into_iter()
        .filter(|r| r.active(now))
        .collect();
    layout(
        ctx,
        "Kill switch",
        "/ui/killswitch",
        html! {
            h1 { "Kill switch" }
            @if let Some(e) = error { div.error #killswitch-error { (e) } }
            p.muted { "Deny rules apply at once on this replica, without a reload"
                @if let Some(p) = shared.kill_switch.path() { ", and are kept in " span.mono { (p.display()) } }
                ". Every change is an audit event." }
            div.card {
                h2 { "Add a deny rule" }
                form.filters #deny-add method="post" action="/ui/killswitch/add" {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    label { "Deny" select name="kind" id="deny-kind" {
                        option value="subject" { "subject" }
                        option value="toolkit" { "toolkit" }
                        option value="tool" { "tool (glob)" }
                        option value="jti" { "token (jti)" }
                        option value="all" { "everything" }
                    } }
                    label { "Value" input type="text" name="value" id="deny-value"; }
                    label { "Reason" input type="text" name="reason" id="deny-reason" required; }
                    label { "Expires in (minutes, empty: never)" input type="text" name="expires_in_mins" id="deny-expiry"; }
                    button.danger type="submit" id="deny-add-button" { "Deny" }
                }
            }
            h2 { "Active rules" }
            (rule_table(ctx, &rules, None))
        },
    )
}

/// The Approvals page: pending requests with their arguments (as text: maud escapes every
/// value), approve and deny forms with a reason, and the recent decisions. New requests are
/// announced live from the console's feed (`app.js`, `textContent` only).
pub(crate) async fn approvals(ctx: &Ctx<'_>, feed: &Feed, note: Option<&str>) -> Markup {
    use crate::approvals::Live;
    let shared = ctx.control.rules().load_full();
    let store = &shared.approvals;
    let listed = store.list().await;
    let now = store.now();
    let operator = match &ctx.actor {
        crate::admin::Actor::Operator { name, .. } => Some(name.as_str()),
        crate::admin::Actor::Admin => None,
    };
    let (pending, decided): (Vec<_>, Vec<_>) = listed
        .as_deref()
        .unwrap_or_default()
        .iter()
        .partition(|r| r.live(now) == Live::Pending);
    let args = |r: &crate::approvals::Request| {
        serde_json::to_string_pretty(&r.arguments).unwrap_or_default()
    };
    layout(
        ctx,
        "Approvals",
        "/ui/approvals",
        html! {
            h1 { "Approvals" span #approvals-status.muted data-after=(feed.last_seq()) { "" } }
            @if let Some(n) = note { div.error #approvals-note { (n) } }
            @if let Err(e) = &listed { div.error { "The approvals store is unavailable: " (e) } }
            p.muted {
                "Calls a " span.mono { "[[policy.approvals]]" } " rule covers wait here. Approving lets the exact call (same user, tool, account and arguments) run once within the grant's time; it forwards nothing by itself. "
                @match operator {
                    Some(n) => { "You decide as " strong #approvals-operator { (n) } "." }
                    None => { "You signed in with the shared admin token: you can read requests, but only a named operator (" span.mono { "[[admin.operators]]" } ") can decide them." }
                }
            }
            div #approvals-live {}
            h2 { "Pending" }
            @if pending.is_empty() { p.muted #approvals-empty { "No pending requests." } }
            @for r in &pending {
                div.card.approval data-approval=(r.id) {
                    h3 { span.mono { (r.tool) } " by " span.mono { (r.subject) } }
                    p {
                        "Rule " strong { (r.rule) } " · " (r.message)
                    }
                    table.facts {
                        tr { th { "Request" } td.mono { (r.id) } }
                        tr { th { "Toolkit" } td.mono { (r.toolkit.as_deref().unwrap_or("-")) } }
                        tr { th { "Account" } td.mono { (r.account.as_deref().unwrap_or("(default)")) } }
                        tr { th { "Carrier" } td.mono { (r.carrier) } }
                        tr { th { "Asked" } td { (when(r.created_at)) } }
                        tr { th { "Expires" } td { (when(r.expires_at)) } }
                        tr { th { "Arguments SHA-256" } td.mono { (r.args_sha256) } }
                        tr { th { "Trace" } td.mono { (r.trace_id.as_deref().unwrap_or("-")) } }
                    }
                    h4 { "Arguments (" (r.args_bytes) " bytes, shown whole)" }
                    pre.arguments { (args(r)) }
                    @if operator.is_some() {
                        form.filters method="post" action="/ui/approvals/decide" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            input type="hidden" name="id" value=(r.id);
                            label { "Reason" input type="text" name="reason" class="approval-reason"; }
                            button type="submit" name="verdict" value="approve" class="approve" { "Approve" }
                            button.danger type="submit" name="verdict" value="deny" { "Deny" }
                        }
                    }
                }
            }
            h2 { "Recent" }
            table.rules #approvals-recent {
                thead { tr { th { "Request" } th { "User" } th { "Tool" } th { "State" } th { "By" } th { "Reason" } th { "Asked" } } }
                tbody {
                    @for r in &decided {
                        tr data-approval=(r.id) {
                            td.mono { (r.id) }
                            td.mono { (r.subject) }
                            td.mono { (r.tool) }
                            td { (r.status.as_str()) }
                            td { (r.approver.as_deref().unwrap_or("-")) }
                            td { (r.reason.as_deref().unwrap_or("")) }
                            td { (when(r.created_at)) }
                        }
                    }
                    @if decided.is_empty() { tr { td colspan="7" .muted { "None." } } }
                }
            }
        },
    )
}
