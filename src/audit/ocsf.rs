//! The OCSF form of the audit trail (`[audit] format = "ocsf"`): each event the gateway
//! writes, mapped to one class of OCSF [`VERSION`] by [`map`], which holds one match arm per
//! event kind.
//!
//! The mapping works on the entitygate event (the JSON object [`super::Sink`] queues), so
//! both formats carry the same facts: the writer thread maps each event just before sealing
//! it. A field with an OCSF home moves there; every other one is kept under `unmapped`, where
//! the chain's own members (`seq`, `prev`, `hash`, `hmac`) end the line ([`super::chain`]).
//!
//! Conventions a detection engineer relies on: `time` in UTC epoch milliseconds; every
//! enumeration as its id and its caption (`class_uid`/`class_name`, `activity_id`/
//! `activity_name`, `type_uid`/`type_name`, `severity_id`/`severity`, `status_id`/`status`,
//! `disposition_id`/`disposition`); `metadata.event_code` is the entitygate event kind,
//! `metadata.uid` the request id, `metadata.correlation_uid` the W3C trace id. The actor of a
//! decision is the verified subject with the token's `jti` and issuer, never the token.

use serde_json::{json, Map, Value};

/// The OCSF release the events follow (tests/ocsf holds its JSON Schema of each class).
pub const VERSION: &str = "1.8.0";

/// The OCSF profiles the events use: `security_control` brings `disposition` and `policy`.
const PROFILES: &[&str] = &["security_control"];

/// One OCSF class: its id, caption, and category.
struct Class {
    uid: u64,
    name: &'static str,
    category: (u64, &'static str),
}

const SYSTEM: (u64, &str) = (1, "System Activity");
const FINDINGS: (u64, &str) = (2, "Findings");
const IAM: (u64, &str) = (3, "Identity & Access Management");
const APPLICATION: (u64, &str) = (6, "Application Activity");

const EVENT_LOG: Class = Class {
    uid: 1008,
    name: "Event Log Activity",
    category: SYSTEM,
};
const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category: FINDINGS,
};
const ACCOUNT_CHANGE: Class = Class {
    uid: 3001,
    name: "Account Change",
    category: IAM,
};
const AUTHENTICATION: Class = Class {
    uid: 3002,
    name: "Authentication",
    category: IAM,
};
const ENTITY_MANAGEMENT: Class = Class {
    uid: 3004,
    name: "Entity Management",
    category: IAM,
};
const API_ACTIVITY: Class = Class {
    uid: 6003,
    name: "API Activity",
    category: APPLICATION,
};

/// `activity_id` 99: OCSF's "Other", whose `activity_name` names the source's own activity.
const OTHER: u64 = 99;

/// `severity_id` values and captions.
#[derive(Clone, Copy)]
enum Severity {
    Informational = 1,
    Low = 2,
    Medium = 3,
}

impl Severity {
    fn caption(self) -> &'static str {
        match self {
            Self::Informational => "Informational",
            Self::Low => "Low",
            Self::Medium => "Medium",
        }
    }
}

/// `status_id` values and captions. A finding's status is its own (1 is "New" there).
#[derive(Clone, Copy)]
enum Status {
    Unknown,
    Success,
    Failure,
    /// A finding just made (Detection Finding).
    New,
}

impl Status {
    fn id_and_caption(self) -> (u64, &'static str) {
        match self {
            Self::Unknown => (0, "Unknown"),
            Self::Success => (1, "Success"),
            Self::Failure => (2, "Failure"),
            Self::New => (1, "New"),
        }
    }
}

/// `disposition_id` values and captions (profile `security_control`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Unknown = 0,
    Allowed = 1,
    Blocked = 2,
}

impl Disposition {
    fn caption(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Allowed => "Allowed",
            Self::Blocked => "Blocked",
        }
    }
}

/// The OCSF form of one entitygate event, split for the chain to seal: the event without
/// `unmapped` (a JSON object) and the members of `unmapped` (a JSON object too, possibly
/// empty), which the chain closes with its own. `None` when `text` is not a JSON object.
pub fn split(text: &str) -> Option<(String, String)> {
    let Ok(Value::Object(event)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let mut ocsf = map(event);
    let unmapped = ocsf.remove("unmapped").unwrap_or_else(|| json!({}));
    Some((Value::Object(ocsf).to_string(), unmapped.to_string()))
}

/// The OCSF event for an entitygate event: one arm per event kind (`event`; a decision has
/// none). What a mapping leaves in `e` ends up under `unmapped`, so nothing is lost.
pub fn map(mut e: Map<String, Value>) -> Map<String, Value> {
    let kind = match e.remove("event") {
        Some(Value::String(k)) => k,
        _ => "decision".to_owned(),
    };
    let time = take_str(&mut e, "time")
        .and_then(|t| crate::clock::parse_rfc3339_ms(&t))
        .unwrap_or_else(crate::clock::unix_now_ms);
    let mut o = match kind.as_str() {
        "decision" => api_activity(&mut e),
        "log_opened" => event_log(&mut e),
        "deny_added" => kill_switch(&mut e, (1, "Create"), "added"),
        "deny_removed" => kill_switch(&mut e, (4, "Delete"), "removed"),
        "deny_expired" => kill_switch(&mut e, (4, "Delete"), "expired"),
        "admin_login" => admin_authentication(&mut e, true),
        "admin_auth_failed" => admin_authentication(&mut e, false),
        "connection_broken" => connection_broken(&mut e),
        "expiry_finding" => finding(&mut e, "connection_needs_attention", Severity::Low),
        // Approvals (`approvals::record`) and tool-definition drift (`proxy::build`'s sink).
        "approval_requested" => approval(&mut e, (1, "Create"), "requested"),
        "approval_granted" => approval(&mut e, (8, "Enable"), "granted"),
        "approval_denied" => approval(&mut e, (9, "Disable"), "denied"),
        "approval_expired" => approval(&mut e, (11, "Deactivate"), "expired"),
        "approval_used" => approval(&mut e, (3, "Update"), "used"),
        "tool_drift" => tool_drift(&mut e),
        _ => unknown_kind(&kind),
    };
    o.insert("time".into(), time.into());
    // A null says nothing an absent member does not (`rule`, `session`, `expires_at`...).
    e.retain(|_, v| !v.is_null());
    let metadata = o
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    o.insert(
        "metadata".into(),
        Value::Object(metadata_with(metadata, &kind)),
    );
    // Whatever had no OCSF home, then (added by the chain) seq, prev, hash and hmac.
    o.insert("unmapped".into(), Value::Object(e));
    o
}

/// `metadata`: the version, the product, the profiles, the event kind, and what the mapping
/// put there (uid, correlation_uid).
fn metadata_with(found: Map<String, Value>, kind: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("version".into(), VERSION.into());
    m.insert(
        "product".into(),
        json!({
            "name": "entitygate",
            "vendor_name": "entitygate",
            "version": env!("CARGO_PKG_VERSION"),
        }),
    );
    m.insert("profiles".into(), json!(PROFILES));
    m.insert("log_name".into(), "audit".into());
    m.insert("event_code".into(), kind.into());
    m.extend(found);
    m
}

/// The members every event starts with, in this order: class, category, activity, type,
/// severity and status, each as id and caption.
fn header(
    class: &Class,
    (activity_id, activity_name): (u64, &str),
    severity: Severity,
    status: Status,
) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("class_uid".into(), class.uid.into());
    o.insert("class_name".into(), class.name.into());
    o.insert("category_uid".into(), class.category.0.into());
    o.insert("category_name".into(), class.category.1.into());
    o.insert("activity_id".into(), activity_id.into());
    o.insert("activity_name".into(), activity_name.into());
    o.insert("type_uid".into(), (class.uid * 100 + activity_id).into());
    // OCSF names the type of an "Other" activity "Other", whatever the activity's own name.
    let type_activity = if activity_id == OTHER {
        "Other"
    } else {
        activity_name
    };
    o.insert(
        "type_name".into(),
        format!("{}: {type_activity}", class.name).into(),
    );
    o.insert("severity_id".into(), (severity as u64).into());
    o.insert("severity".into(), severity.caption().into());
    let (status_id, status) = status.id_and_caption();
    o.insert("status_id".into(), status_id.into());
    o.insert("status".into(), status.into());
    // Set by `map`; here so that it comes right after the enumerations in every event.
    o.insert("time".into(), 0.into());
    o
}

fn disposition(o: &mut Map<String, Value>, d: Disposition) {
    o.insert("disposition_id".into(), (d as u64).into());
    o.insert("disposition".into(), d.caption().into());
}

/// Removes a string member (anything else stays, for `unmapped`).
fn take_str(e: &mut Map<String, Value>, key: &str) -> Option<String> {
    match e.get(key) {
        Some(Value::String(_)) => match e.remove(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        Some(Value::Null) => {
            e.remove(key);
            None
        }
        _ => None,
    }
}

/// Removes an unsigned integer member (anything else stays).
fn take_u64(e: &mut Map<String, Value>, key: &str) -> Option<u64> {
    let n = e.get(key)?.as_u64()?;
    e.remove(key);
    Some(n)
}

/// `src_endpoint` from a socket address or an IP address as text.
fn endpoint(source: Option<&str>) -> Value {
    match source.map(|s| {
        s.parse::<std::net::SocketAddr>()
            .map(|a| (a.ip(), Some(a.port())))
            .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, None)))
    }) {
        Some(Ok((ip, Some(port)))) => json!({"ip": ip.to_string(), "port": port}),
        Some(Ok((ip, None))) => json!({"ip": ip.to_string()}),
        // Not known (a request that never came over a socket): named as such, never guessed.
        _ => json!({"name": "unknown"}),
    }
}

/// A decision on a request: API Activity (6003).
///
/// The activity follows the HTTP method (GET/HEAD read, POST create, PUT/PATCH update,
/// DELETE delete); a request that ran a tool is "Other" named `Execute`, which is what it
/// was. Disposition: allowed (pinned included: the call ran, as the subject) or blocked.
fn api_activity(e: &mut Map<String, Value>) -> Map<String, Value> {
    let decision = take_str(e, "decision").unwrap_or_default();
    let method = take_str(e, "method").unwrap_or_default();
    let tool = take_str(e, "tool");
    let rewritten = e.get("identity_rewritten") == Some(&Value::Bool(true));
    let activity = match (&tool, method.as_str()) {
        (Some(_), _) => (OTHER, "Execute"),
        (None, "GET" | "HEAD") => (2, "Read"),
        (None, "POST") => (1, "Create"),
        (None, "PUT" | "PATCH") => (3, "Update"),
        (None, "DELETE") => (4, "Delete"),
        (None, _) => (OTHER, "Other"),
    };
    let (status, outcome) = match decision.as_str() {
        "allow" => (Status::Success, Disposition::Allowed),
        // The client left before an answer: what was decided is not known.
        "abandoned" => (Status::Unknown, Disposition::Unknown),
        _ => (Status::Failure, Disposition::Blocked),
    };
    let severity = match (rewritten, outcome) {
        // The caller named another user: pinned or refused, someone should look.
        (true, _) => Severity::Medium,
        (false, Disposition::Blocked) => Severity::Low,
        _ => Severity::Informational,
    };
    let mut o = header(&API_ACTIVITY, activity, severity, status);
    let http_status = take_u64(e, "status");
    if let Some(s) = http_status {
        o.insert("status_code".into(), s.to_string().into());
    }
    o.insert("status_detail".into(), decision.clone().into());
    disposition(&mut o, outcome);

    let subject = take_str(e, "subject");
    let jti = take_str(e, "jti");
    let issuer = take_str(e, "issuer");
    let mut actor = Map::new();
    actor.insert(
        "user".into(),
        match &subject {
            Some(s) => json!({"uid": s, "type_id": 1, "type": "User"}),
            None => json!({"name": "unauthenticated", "type_id": 0, "type": "Unknown"}),
        },
    );
    let mut session = Map::new();
    if let Some(j) = jti {
        session.insert("uid".into(), j.into());
    }
    if let Some(i) = issuer {
        session.insert("issuer".into(), i.into());
    }
    if !session.is_empty() {
        actor.insert("session".into(), Value::Object(session));
    }
    o.insert("actor".into(), Value::Object(actor));

    let route = e
        .get("route")
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_owned();
    let carrier = take_str(e, "policy").unwrap_or_else(|| "none".into());
    let mut api = Map::new();
    api.insert(
        "operation".into(),
        tool.clone().unwrap_or_else(|| route.clone()).into(),
    );
    if let Some(toolkit) = take_str(e, "toolkit") {
        api.insert("service".into(), json!({"name": toolkit}));
    }
    api.insert("group".into(), json!({"name": carrier}));
    let request_id = take_str(e, "request_id");
    if let Some(rid) = &request_id {
        api.insert("request".into(), json!({"uid": rid}));
    }
    let mut response = Map::new();
    if let Some(s) = http_status {
        response.insert("code".into(), s.into());
    }
    if outcome == Disposition::Blocked {
        response.insert("error".into(), decision.clone().into());
    }
    if !response.is_empty() {
        api.insert("response".into(), Value::Object(response));
    }
    o.insert("api".into(), Value::Object(api));

    if let Some(account) = take_str(e, "connected_account_id") {
        o.insert(
            "resources".into(),
            json!([{"uid": account, "type": "connected_account"}]),
        );
    }
    let source = take_str(e, "source");
    o.insert("src_endpoint".into(), endpoint(source.as_deref()));

    let mut request = Map::new();
    request.insert("http_method".into(), method.clone().into());
    let path = take_str(e, "path");
    if let Some(p) = &path {
        let mut url = Map::new();
        url.insert("path".into(), p.clone().into());
        if let Some(q) = take_str(e, "query") {
            url.insert("query_string".into(), q.into());
        }
        request.insert("url".into(), Value::Object(url));
    }
    if let Some(ua) = take_str(e, "user_agent") {
        request.insert("user_agent".into(), ua.into());
    }
    o.insert("http_request".into(), Value::Object(request));
    if let Some(s) = http_status {
        o.insert("http_response".into(), json!({"code": s}));
    }

    let rule = take_str(e, "rule");
    match (&rule, outcome) {
        (Some(r), _) => {
            o.insert(
                "policy".into(),
                json!({"name": r, "type": "tool_policy", "is_applied": true}),
            );
        }
        // Refused by one of the gateway's own checks: the check is the policy.
        (None, Disposition::Blocked) => {
            o.insert(
                "policy".into(),
                json!({"name": decision, "type": "entitygate", "is_applied": true}),
            );
        }
        _ => {}
    }
    let what = tool.as_deref().unwrap_or(&route);
    let message = match (outcome, &subject) {
        (Disposition::Allowed, Some(s)) if rewritten => {
            format!("{what} allowed for {s}, pinned to the subject")
        }
        (Disposition::Allowed, Some(s)) => format!("{what} allowed for {s}"),
        (Disposition::Allowed, None) => format!("{what} allowed"),
        (Disposition::Blocked, Some(s)) => format!("{what} refused for {s}: {decision}"),
        (Disposition::Blocked, None) => format!("{method} {what} refused: {decision}"),
        (Disposition::Unknown, _) => format!("{what}: the client left before the answer"),
    };
    o.insert("message".into(), message.into());
    let mut metadata = Map::new();
    if let Some(rid) = request_id {
        metadata.insert("uid".into(), rid.into());
    }
    if let Some(t) = take_str(e, "trace_id") {
        metadata.insert("correlation_uid".into(), t.into());
    }
    o.insert("metadata".into(), Value::Object(metadata));
    o
}

/// A file of the chain opened (start, restart, rotation, reopen): Event Log Activity (1008).
fn event_log(e: &mut Map<String, Value>) -> Map<String, Value> {
    let reason = e
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let activity = match reason.as_str() {
        "start" => (6, "Start"),
        "restart" => (8, "Restart"),
        "rotated" | "truncated" | "reopen" => (5, "Rotate"),
        _ => (OTHER, "Other"),
    };
    // A line cut short by a crash, or a file cut in place, is worth a look.
    let severity = if e.contains_key("crash_damage") || reason == "truncated" {
        Severity::Medium
    } else {
        Severity::Informational
    };
    let mut o = header(&EVENT_LOG, activity, severity, Status::Success);
    let file = take_str(e, "file");
    o.insert(
        "log_name".into(),
        file.as_deref().unwrap_or("stdout").into(),
    );
    o.insert("log_provider".into(), "entitygate".into());
    o.insert("log_type_id".into(), 2.into());
    o.insert("log_type".into(), "Application".into());
    o.insert(
        "message".into(),
        format!("audit log opened ({reason})").into(),
    );
    o
}

/// A kill-switch (deny rule) change: Entity Management (3004) of a `deny_rule`, created or
/// deleted (removed by an operator, or expired).
fn kill_switch(
    e: &mut Map<String, Value>,
    activity: (u64, &str),
    what_happened: &str,
) -> Map<String, Value> {
    let mut o = header(
        &ENTITY_MANAGEMENT,
        activity,
        Severity::Medium,
        Status::Success,
    );
    let mut entity = Map::new();
    if let Some(id) = take_str(e, "rule_id") {
        entity.insert("uid".into(), id.into());
    }
    let rule = take_str(e, "rule").unwrap_or_else(|| "-".into());
    entity.insert("name".into(), rule.clone().into());
    entity.insert("type".into(), "deny_rule".into());
    o.insert("entity".into(), Value::Object(entity));
    if let Some(reason) = take_str(e, "reason") {
        o.insert("comment".into(), reason.into());
    }
    o.insert(
        "message".into(),
        format!("kill switch rule {what_happened}: {rule}").into(),
    );
    o
}

/// An admin sign-in, or a failed admin authentication: Authentication (3002), Logon, as the
/// `admin` user from the source address.
fn admin_authentication(e: &mut Map<String, Value>, succeeded: bool) -> Map<String, Value> {
    let (severity, status, outcome) = if succeeded {
        (
            Severity::Informational,
            Status::Success,
            Disposition::Allowed,
        )
    } else {
        (Severity::Medium, Status::Failure, Disposition::Blocked)
    };
    let mut o = header(&AUTHENTICATION, (1, "Logon"), severity, status);
    disposition(&mut o, outcome);
    if let Some(reason) = take_str(e, "reason") {
        o.insert("status_detail".into(), reason.into());
    }
    o.insert(
        "user".into(),
        json!({"name": "admin", "type_id": 2, "type": "Admin"}),
    );
    let source = take_str(e, "source");
    o.insert("src_endpoint".into(), endpoint(source.as_deref()));
    o.insert("service".into(), json!({"name": "entitygate admin"}));
    o.insert("auth_protocol_id".into(), OTHER.into());
    o.insert("auth_protocol".into(), "admin token".into());
    let mut request = Map::new();
    if let Some(m) = take_str(e, "method") {
        request.insert("http_method".into(), m.into());
    }
    if let Some(p) = take_str(e, "path") {
        request.insert("url".into(), json!({"path": p}));
    }
    if !request.is_empty() {
        o.insert("http_request".into(), Value::Object(request));
    }
    o.insert(
        "message".into(),
        if succeeded {
            "admin signed in"
        } else {
            "admin authentication failed"
        }
        .into(),
    );
    o
}

/// Composio showed a user's connected account dead (revoked, expired): Account Change (3001),
/// Disable, of that user's connected account. They must reconnect it.
fn connection_broken(e: &mut Map<String, Value>) -> Map<String, Value> {
    let mut o = header(
        &ACCOUNT_CHANGE,
        (5, "Disable"),
        Severity::Low,
        Status::Success,
    );
    let subject = take_str(e, "subject").unwrap_or_else(|| "-".into());
    let toolkit = take_str(e, "toolkit").unwrap_or_else(|| "-".into());
    let account = take_str(e, "connected_account_id").unwrap_or_else(|| "-".into());
    o.insert(
        "user".into(),
        json!({
            "uid": subject,
            "type_id": 1,
            "type": "User",
            "account": {
                "uid": account,
                "name": toolkit,
                "type_id": OTHER,
                "type": "composio_connected_account",
                "is_disabled": true,
            },
        }),
    );
    if let Some(reason) = e.get("reason").and_then(Value::as_str) {
        o.insert("status_detail".into(), reason.into());
    }
    o.insert(
        "message".into(),
        format!("{toolkit} connection of {subject} is dead; the user must reconnect").into(),
    );
    o
}

/// Something found to need attention (an expiring or expired connection; a tool whose
/// definition changed): Detection Finding (2004), Create.
fn finding(e: &mut Map<String, Value>, what: &str, severity: Severity) -> Map<String, Value> {
    let mut o = header(&DETECTION_FINDING, (1, "Create"), severity, Status::New);
    let subject = take_str(e, "subject");
    let account = take_str(e, "connected_account_id");
    let toolkit = take_str(e, "toolkit");
    // The same thing found again has the same uid: a SIEM updates one finding.
    let uid = [Some(what), subject.as_deref(), account.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(":");
    let mut info = Map::new();
    info.insert("uid".into(), uid.into());
    info.insert("title".into(), what.replace('_', " ").into());
    info.insert("types".into(), json!([what]));
    // Composio's status and reason (an expiry finding), in words.
    let status = e.get("status").and_then(Value::as_str);
    let reason = e.get("status_reason").and_then(Value::as_str);
    if let (Some(t), Some(st)) = (&toolkit, status) {
        let desc = match reason {
            Some(r) => format!("{t} connection {st}: {r}"),
            None => format!("{t} connection {st}"),
        };
        info.insert("desc".into(), desc.into());
    }
    o.insert("finding_info".into(), Value::Object(info));
    let mut resource = Map::new();
    if let Some(a) = account {
        resource.insert("uid".into(), a.into());
        resource.insert("type".into(), "connected_account".into());
    }
    if let Some(t) = toolkit {
        resource.insert("name".into(), t.into());
    }
    if let Some(s) = subject {
        resource.insert(
            "owner".into(),
            json!({"uid": s, "type_id": 1, "type": "User"}),
        );
    }
    if !resource.is_empty() {
        o.insert("resources".into(), json!([resource]));
    }
    o
}

/// A tool definition that is not the reviewed one (`tool_drift`: changed, unlisted, flagged):
/// a Detection Finding on the tool, one per tool, version and seen definition, so a SIEM
/// updates one finding when the same drift is seen again.
fn tool_drift(e: &mut Map<String, Value>) -> Map<String, Value> {
    let mut o = header(
        &DETECTION_FINDING,
        (1, "Create"),
        Severity::Medium,
        Status::New,
    );
    let tool = take_str(e, "tool").unwrap_or_else(|| "-".into());
    let kind = e.get("kind").and_then(Value::as_str).unwrap_or("changed");
    let version = e.get("version").and_then(Value::as_str).unwrap_or("-");
    let seen = e.get("seen_hash").and_then(Value::as_str).unwrap_or("-");
    let mut info = Map::new();
    info.insert(
        "uid".into(),
        format!("tool_drift:{tool}:{version}:{seen}").into(),
    );
    info.insert("title".into(), "tool definition drift".into());
    info.insert("types".into(), json!(["tool_drift", kind]));
    info.insert(
        "desc".into(),
        format!("{tool} at version {version}: definition {kind} since the review").into(),
    );
    o.insert("finding_info".into(), Value::Object(info));
    let mut resource = Map::new();
    resource.insert("uid".into(), tool.clone().into());
    resource.insert("name".into(), tool.into());
    resource.insert("type".into(), "tool".into());
    if let Some(t) = take_str(e, "toolkit") {
        resource.insert("group".into(), json!({ "name": t }));
    }
    o.insert("resources".into(), json!([resource]));
    o
}

/// An approval's life (asked for, granted, denied, lapsed, used): Entity Management (3004) of
/// an `approval` entity (`approval_id`, the `tool` it is for), by or for the `subject`.
fn approval(
    e: &mut Map<String, Value>,
    activity: (u64, &str),
    what_happened: &str,
) -> Map<String, Value> {
    let severity = match what_happened {
        "denied" | "expired" => Severity::Low,
        _ => Severity::Informational,
    };
    let mut o = header(&ENTITY_MANAGEMENT, activity, severity, Status::Success);
    let mut entity = Map::new();
    if let Some(id) = take_str(e, "approval_id") {
        entity.insert("uid".into(), id.into());
    }
    let tool = take_str(e, "tool").unwrap_or_else(|| "-".into());
    entity.insert("name".into(), tool.clone().into());
    entity.insert("type".into(), "approval".into());
    o.insert("entity".into(), Value::Object(entity));
    let subject = take_str(e, "subject");
    // Who acted: the operator who decided (granted, denied), else the subject whose call asked
    // for it (requested, used); the subject of a decided request stays under `unmapped`.
    match (take_str(e, "approver"), &subject) {
        (Some(op), _) => {
            o.insert(
                "actor".into(),
                json!({"user": {"name": op, "type_id": 2, "type": "Admin"}}),
            );
            if let Some(s) = &subject {
                e.insert("subject".into(), s.clone().into());
            }
        }
        (None, Some(s)) => {
            o.insert(
                "actor".into(),
                json!({"user": {"uid": s, "type_id": 1, "type": "User"}}),
            );
        }
        (None, None) => {}
    }
    o.insert(
        "message".into(),
        format!(
            "approval {what_happened}: {tool}{}",
            subject.map(|s| format!(" for {s}")).unwrap_or_default()
        )
        .into(),
    );
    o
}

/// An event kind with no mapping of its own yet: Entity Management, Other, named after the
/// kind, all its fields under `unmapped`. Never dropped; a test holds every kind the gateway
/// writes to a class of its own.
fn unknown_kind(kind: &str) -> Map<String, Value> {
    let mut o = header(
        &ENTITY_MANAGEMENT,
        (OTHER, "Other"),
        Severity::Informational,
        Status::Unknown,
    );
    o.insert(
        "entity".into(),
        json!({"name": kind, "type": "entitygate_event"}),
    );
    o
}

#[cfg(test)]
mod tests;
