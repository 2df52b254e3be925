//! The security team's console: server-rendered pages on the admin listener under `/ui`.
//!
//! - Access: the admin token ([`crate::admin::auth`]) is typed once into the login form;
//!   the browser then holds only a random session id in an `HttpOnly`, `SameSite=Strict`
//!   cookie ([`session`]). Every `POST` carries the session's CSRF token. Without an admin
//!   token configured there is no console (the routes answer 404). A wrong token at sign-in
//!   is audited and slows that source's next attempts, as on the bearer API
//!   ([`crate::admin::throttle`]); it never locks anyone out. The live stream re-checks its
//!   session before every frame and ends with it ([`sse`]).
//! - Output: pages are rendered with maud, which escapes every interpolated value; the live
//!   feed sends JSON that the console's script puts into the page with `textContent` only.
//!   Every answer carries a strict `Content-Security-Policy` (`script-src 'self'`, no inline
//!   script or style) and the assets are compiled into the binary.
//! - Data: the decisions come from [`feed`], a bounded copy of the audit trail; the rest is
//!   read from the running gateway's state (policy, caches, readiness, connections).

mod pages;
mod session;
mod sse;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde::Deserialize;

pub use crate::audit::feed::{self, Decision, Feed, Filter};

/// `[admin.console]` is part of the config contract; the old path keeps working.
pub use crate::config::ConsoleConfig;

use crate::admin::throttle::{self, Throttle, Via};
use crate::control::Control;
use session::Sessions;

/// The body of every admin answer (the live feed streams).
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// The `Content-Security-Policy` of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest form body read.
const MAX_FORM: usize = 256 * 1024;

/// The console of one admin listener.
#[derive(Debug)]
pub(crate) struct Console {
    /// Shared with the live streams, which re-check their session in it.
    sessions: Arc<Sessions>,
    idle: Duration,
    /// The admin listener's failed-authentication table (the bearer API's too).
    throttle: Arc<Throttle>,
}

/// A signed-in request's context for the pages.
pub(crate) struct Ctx<'a> {
    pub(crate) control: &'a dyn Control,
    pub(crate) csrf: String,
    /// Who signed in: the shared admin token, or a named operator.
    pub(crate) actor: crate::admin::Actor,
}

impl Console {
    /// The console, when enabled and an admin token is configured; starts the feed.
    pub(crate) fn new(control: &dyn Control, throttle: Arc<Throttle>) -> Option<Arc<Self>> {
        let cfg = &control.admin().console;
        if !cfg.enabled || !admin_token_configured(control) {
            return None;
        }
        control.rules().load().audit.feed().start(cfg.recent);
        let idle = idle_timeout(cfg);
        Some(Arc::new(Self {
            sessions: Arc::new(Sessions::new(idle)),
            idle,
            throttle,
        }))
    }

    /// Whether `presented` is the admin token now.
    fn token_ok(control: &dyn Control, presented: &str) -> bool {
        crate::admin::AdminToken::from_config(control.admin())
            .verify(control.env(), presented)
            .is_ok()
    }

    /// Answers one `/ui` request from `source`.
    pub(crate) async fn handle(
        &self,
        control: &Arc<dyn Control>,
        source: IpAddr,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let mut resp = self.route(control, source, req).await;
        secure_headers(resp.headers_mut());
        resp
    }

    async fn route(
        &self,
        control: &Arc<dyn Control>,
        source: IpAddr,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/ui/static/app.js") => {
                return asset(pages::APP_JS, "text/javascript; charset=utf-8")
            }
            (&Method::GET, "/ui/static/app.css") => {
                return asset(pages::APP_CSS, "text/css; charset=utf-8")
            }
            (&Method::GET, "/ui/login") => return html(StatusCode::OK, pages::login(None)),
            (&Method::POST, "/ui/login") => return self.login(control.as_ref(), source, req).await,
            _ => {}
        }
        // Everything else needs a session whose admin token is still the admin token.
        let id = session::cookie(req.headers());
        let session = id.as_deref().and_then(|id| self.sessions.get(id));
        let signed_in = session.and_then(|s| {
            let actor = crate::admin::AdminToken::from_config(control.admin())
                .verify(control.env(), &s.token)
                .ok()?;
            Some((s, actor))
        });
        let Some((session, actor)) = signed_in else {
            if let Some(id) = &id {
                self.sessions.close(id);
            }
            return if method == Method::GET && path != "/ui/live/events" {
                redirect("/ui/login")
            } else {
                html(
                    StatusCode::UNAUTHORIZED,
                    pages::login(Some("Sign in first.")),
                )
            };
        };
        let query = req.uri().query().unwrap_or_default().to_owned();
        let ctx = Ctx {
            control: control.as_ref(),
            csrf: session.csrf.clone(),
            actor,
        };
        if method == Method::POST {
            let form = match read_form(req).await {
                Ok(f) => f,
                Err(r) => return r,
            };
            let given = form.get("csrf").map(String::as_str).unwrap_or_default();
            if !session::same_secret(given, &session.csrf) {
                tracing::warn!(path, "console form without its CSRF token refused");
                return html(
                    StatusCode::FORBIDDEN,
                    pages::message(&ctx, "Refused", "This form's CSRF token is missing or wrong. Reload the page and try again."),
                );
            }
            return match path.as_str() {
                "/ui/logout" => {
                    if let Some(id) = &id {
                        self.sessions.close(id);
                    }
                    let mut r = redirect("/ui/login");
                    set_cookie(&mut r, &session::clear_cookie());
                    r
                }
                "/ui/policy/explain" => html(StatusCode::OK, pages::explain(&ctx, &form).await),
                "/ui/killswitch/add" => deny_add(&ctx, &form).await,
                "/ui/killswitch/lift" => deny_lift(&ctx, &form).await,
                "/ui/approvals/decide" => approval_decide(&ctx, &form).await,
                _ => not_found(),
            };
        }
        if method != Method::GET {
            return not_found();
        }
        let feed = control.rules().load().audit.feed().clone();
        match path.as_str() {
            "/ui" | "/ui/" => redirect("/ui/live"),
            "/ui/live" => {
                let filter = parse_query::<Filter>(&query);
                html(StatusCode::OK, pages::live(&ctx, &feed, &filter))
            }
            "/ui/live/events" => {
                let q = parse_query::<sse::EventsQuery>(&query);
                let Some(id) = id else {
                    return not_found();
                };
                sse::events(&feed, q, self.guard(control, id))
            }
            "/ui/decision" => {
                let q = parse_query::<IdQuery>(&query);
                html(StatusCode::OK, pages::decision(&ctx, &feed, &q.id))
            }
            "/ui/refusals" => html(StatusCode::OK, pages::refusals(&ctx, &feed)),
            "/ui/user" => {
                let q = parse_query::<SubjectQuery>(&query);
                html(StatusCode::OK, pages::user(&ctx, &feed, &q.subject).await)
            }
            "/ui/policy" => html(StatusCode::OK, pages::policy(&ctx, None)),
            "/ui/killswitch" => html(StatusCode::OK, pages::killswitch(&ctx, None)),
            "/ui/drift" => html(StatusCode::OK, pages::drift(&ctx)),
            "/ui/approvals" => html(StatusCode::OK, pages::approvals(&ctx, &feed, None).await),
            "/ui/health" => html(StatusCode::OK, pages::health(&ctx, &feed).await),
            _ => not_found(),
        }
    }

    /// What a live stream of session `id` asks before each frame ([`sse::Guard::new`]),
    /// with the admin token as it is now.
    fn guard(&self, control: &Arc<dyn Control>, id: String) -> sse::Guard {
        let control = control.clone();
        sse::Guard::new(self.sessions.clone(), id, move |token| {
            Self::token_ok(control.as_ref(), token)
        })
    }

    /// `POST /ui/login`: a source with recent failed authentications waits first; a wrong
    /// token is audited and counted against its source, never refused for the ones before.
    async fn login(
        &self,
        control: &dyn Control,
        source: IpAddr,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        self.throttle.wait(source).await;
        let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
        let checked = match token {
            "" => Err(crate::admin::Refused::Missing),
            t => crate::admin::AdminToken::from_config(control.admin()).verify(control.env(), t),
        };
        if let Err(refused) = checked {
            throttle::failed(
                &control.rules().load().audit,
                &self.throttle,
                source,
                Via::Console,
                &method,
                &path,
                refused,
            );
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(Some("That is not the admin token.")),
            );
        }
        self.throttle.succeeded(source);
        let id = self.sessions.open(token);
        tracing::info!("console sign-in");
        // The one admin sign-in there is (the admin API takes the token on every request).
        control.rules().load().audit.record(
            "admin_login",
            serde_json::json!({
                "source": source.to_string(),
                "via": "console",
                "method": method.as_str(),
                "path": path,
            }),
        );
        let mut r = redirect("/ui/live");
        set_cookie(&mut r, &session::set_cookie(&id, self.idle));
        r
    }
}

/// How long an unused session lasts: `session_idle_secs`, at least a minute (a shorter one
/// would end sessions between two clicks).
fn idle_timeout(cfg: &ConsoleConfig) -> Duration {
    Duration::from_secs(cfg.session_idle_secs.max(60))
}

fn admin_token_configured(control: &dyn Control) -> bool {
    crate::admin::AdminToken::from_config(control.admin()).configured()
}

/// Where a kill-switch form sends the browser back to: the User page it came from, or the
/// Kill switch page (never a URL the form names).
fn back(form: &Form) -> String {
    match (form.get("back").map(String::as_str), form.get("value")) {
        (Some("user"), Some(subject)) => format!(
            "/ui/user?subject={}",
            form_urlencoded::byte_serialize(subject.as_bytes()).collect::<String>()
        ),
        _ => "/ui/killswitch".to_owned(),
    }
}

/// `POST /ui/approvals/decide`: approve or deny (`verdict`) request `id` with `reason`, as the
/// API does it (only a named operator, never on their own call, audited with their name); back
/// to the Approvals page.
async fn approval_decide(ctx: &Ctx<'_>, form: &Form) -> Response<Body> {
    let verdict = match form.get("verdict").map(String::as_str) {
        Some("approve") => crate::approvals::Verdict::Approve,
        Some("deny") => crate::approvals::Verdict::Deny,
        _ => return not_found(),
    };
    let id = form.get("id").map(String::as_str).unwrap_or_default();
    let reason = form.get("reason").map(String::as_str).unwrap_or_default();
    match crate::admin::approvals::decide(ctx.control, &ctx.actor, id, verdict, reason).await {
        Ok(_) => redirect("/ui/approvals"),
        Err((status, why)) => {
            let feed = ctx.control.rules().load().audit.feed().clone();
            html(status, pages::approvals(ctx, &feed, Some(&why)).await)
        }
    }
}

/// `POST /ui/killswitch/add`: a deny rule as `POST /deny` makes it (same validation, same
/// audit event), from the form's `kind`, `value`, `reason` and `expires_in_mins`.
async fn deny_add(ctx: &Ctx<'_>, form: &Form) -> Response<Body> {
    let field = |k: &str| form.get(k).map(|v| v.trim()).unwrap_or_default();
    let mut body = serde_json::Map::new();
    match field("kind") {
        "all" => {
            body.insert("all".into(), true.into());
        }
        kind @ ("subject" | "toolkit" | "tool" | "jti") => {
            // The subject exactly as given (a subject may carry spaces at its ends).
            let value = form.get("value").cloned().unwrap_or_default();
            body.insert(kind.into(), value.into());
        }
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::killswitch(ctx, Some("Choose what to deny.")),
            )
        }
    }
    body.insert("reason".into(), field("reason").into());
    match field("expires_in_mins") {
        "" => {}
        m => match m.parse::<u64>() {
            Ok(m) if m > 0 => {
                body.insert("expires_in_secs".into(), (m.saturating_mul(60)).into());
            }
            _ => {
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::killswitch(ctx, Some("The expiry must be a whole number of minutes.")),
                )
            }
        },
    }
    let rule = match crate::killswitch::Rule::from_request(
        &serde_json::Value::Object(body),
        crate::clock::unix_now(),
    ) {
        Ok(r) => r,
        Err(why) => return html(StatusCode::BAD_REQUEST, pages::killswitch(ctx, Some(&why))),
    };
    let shared = ctx.control.rules().load_full();
    if let Err(e) = shared.kill_switch.add(rule.clone()).await {
        tracing::error!(error = %e, "kill switch: deny rule not stored");
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::killswitch(ctx, Some(&e.to_string())),
        );
    }
    tracing::warn!(id = %rule.id, rule = %rule.describe(), reason = %rule.reason,
        "kill switch: deny rule added from the console");
    shared.audit.record("deny_added", rule_fields(&rule));
    redirect_to(&back(form))
}

/// `POST /ui/killswitch/lift`: lifts rule `id`.
async fn deny_lift(ctx: &Ctx<'_>, form: &Form) -> Response<Body> {
    let id = form.get("id").map(|v| v.trim()).unwrap_or_default();
    let shared = ctx.control.rules().load_full();
    match shared.kill_switch.remove(id).await {
        Ok(Some(rule)) => {
            tracing::warn!(id = %rule.id, rule = %rule.describe(),
                "kill switch: deny rule lifted from the console");
            shared.audit.record("deny_removed", rule_fields(&rule));
            redirect_to(&back(form))
        }
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            pages::killswitch(ctx, Some("No such deny rule (or it expired).")),
        ),
        Err(e) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::killswitch(ctx, Some(&e.to_string())),
        ),
    }
}

/// The audit fields of a rule change (as `POST /deny` writes them), marked as the console's.
fn rule_fields(rule: &crate::killswitch::Rule) -> serde_json::Value {
    serde_json::json!({
        "rule_id": rule.id,
        "rule": rule.describe(),
        "reason": rule.reason,
        "expires_at": rule.expires_at,
        "via": "console",
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IdQuery {
    id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubjectQuery {
    subject: String,
}

/// A query string parsed leniently: anything unparseable is the empty filter.
fn parse_query<T: for<'de> Deserialize<'de> + Default>(q: &str) -> T {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).unwrap_or_default()
}

type Form = std::collections::HashMap<String, String>;

async fn read_form(req: Request<Incoming>) -> Result<Form, Response<Body>> {
    let ct_ok = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !ct_ok {
        return Err(plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "forms only\n"));
    }
    let Ok(body) = http_body_util::Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
    else {
        return Err(plain(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n"));
    };
    let mut form = Form::new();
    for (k, v) in form_urlencoded::parse(&body.to_bytes()) {
        // A repeated field is ambiguous: the first one counts.
        form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    Ok(form)
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn html(status: StatusCode, page: maud::Markup) -> Response<Body> {
    let mut r = Response::new(full(page.into_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

fn redirect_to(to: &str) -> Response<Body> {
    let mut r = redirect("/ui/killswitch");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn not_found() -> Response<Body> {
    plain(StatusCode::NOT_FOUND, "not found\n")
}

fn set_cookie(r: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// The headers every console answer carries.
fn secure_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with the console's own
    // forms, which the admin listener's Origin check (rightly) refuses.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lasts_at_least_a_minute_unused() {
        let idle = |secs| {
            idle_timeout(&ConsoleConfig {
                session_idle_secs: secs,
                ..ConsoleConfig::default()
            })
        };
        assert_eq!(idle(0), Duration::from_secs(60));
        assert_eq!(idle(1), Duration::from_secs(60));
        assert_eq!(idle(1800), Duration::from_secs(1800));
    }
}
