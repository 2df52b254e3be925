use serde_json::{json, Map, Value};

use super::*;

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn a_refused_decision_is_a_blocked_api_activity_with_everything_else_kept_under_unmapped() {
    let e = object(json!({
        "time": "2026-01-01T00:00:00.005Z", "request_id": "r1", "trace_id": "t1",
        "subject": null, "method": "GET", "path": "/api/v3.1/tools", "query": "a=1",
        "source": "192.0.2.1:4711", "route": "-", "policy": "none", "tool": null,
        "decision": "token_missing", "code": 1401, "identity_rewritten": false,
        "status": 401, "latency_ms": 0.2,
    }));
    let o = map(e);
    assert_eq!(o["class_uid"], 6003);
    assert_eq!(o["time"], 1_767_225_600_005u64);
    assert_eq!(
        (o["activity_id"].clone(), o["activity_name"].clone()),
        (json!(2), json!("Read"))
    );
    assert_eq!(o["type_uid"], 600_302);
    assert_eq!(o["disposition"], "Blocked");
    assert_eq!(o["status"], "Failure");
    assert_eq!(o["status_code"], "401");
    assert_eq!(o["actor"]["user"]["name"], "unauthenticated");
    assert_eq!(o["src_endpoint"], json!({"ip": "192.0.2.1", "port": 4711}));
    assert_eq!(o["metadata"]["uid"], "r1");
    assert_eq!(o["metadata"]["correlation_uid"], "t1");
    assert_eq!(o["metadata"]["event_code"], "decision");
    assert_eq!(o["policy"]["name"], "token_missing");
    // No OCSF home: kept, never dropped; and unmapped is the last member (the chain's).
    assert_eq!(o["unmapped"]["code"], 1401);
    assert_eq!(o["unmapped"]["latency_ms"], 0.2);
    assert_eq!(o.keys().next_back().map(String::as_str), Some("unmapped"));
}

#[test]
fn each_event_kind_has_its_class() {
    for (kind, class, activity) in [
        ("log_opened", 1008, 6),
        ("deny_added", 3004, 1),
        ("deny_removed", 3004, 4),
        ("deny_expired", 3004, 4),
        ("admin_login", 3002, 1),
        ("admin_auth_failed", 3002, 1),
        ("connection_broken", 3001, 5),
        ("expiry_finding", 2004, 1),
        ("approval_requested", 3004, 1),
        ("approval_granted", 3004, 8),
        ("approval_denied", 3004, 9),
        ("approval_expired", 3004, 11),
        ("approval_used", 3004, 3),
        ("tool_drift", 2004, 1),
    ] {
        let o = map(object(
            json!({"time": "2026-01-01T00:00:00.000Z", "event": kind,
            "reason": "start", "subject": "alice", "tool": "GITHUB_CREATE_ISSUE",
            "approval_id": "ap_1", "toolkit": "github", "connected_account_id": "ca_1",
            "approver": "dana", "kind": "changed", "version": "20250909_00",
            "locked_hash": "aa", "seen_hash": "bb",
            "status": "EXPIRED", "rule_id": "r1", "rule": "subject=bob", "source": "192.0.2.1"}),
        ));
        assert_eq!(o["class_uid"], class, "{kind}");
        // Every kind is held to its schema here; most also through the gateway
        // (tests/gateway/ocsf.rs).
        let file = match class {
            1008 => "event_log_actvity",
            2004 => "detection_finding",
            3001 => "account_change",
            3002 => "authentication",
            _ => "entity_management",
        };
        let path = format!(
            "{}/tests/ocsf/1.8.0/{file}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let event = Value::Object(o.clone());
        let errors: Vec<String> = jsonschema::validator_for(&schema)
            .unwrap()
            .iter_errors(&event)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:#?}");
        assert_eq!(o["activity_id"], activity, "{kind}");
        assert_eq!(o["metadata"]["event_code"], kind);
    }
    // An approval decided names the operator as the actor, the subject stays in the event;
    // drift is one finding per tool, version and seen definition.
    let granted = map(object(
        json!({"event": "approval_granted", "approval_id": "ap_1",
        "subject": "alice", "approver": "dana", "tool": "GMAIL_SEND_EMAIL"}),
    ));
    assert_eq!(granted["actor"]["user"]["name"], "dana");
    assert_eq!(granted["unmapped"]["subject"], "alice");
    let requested = map(object(
        json!({"event": "approval_requested", "approval_id": "ap_1",
        "subject": "alice", "approver": null, "tool": "GMAIL_SEND_EMAIL"}),
    ));
    assert_eq!(requested["actor"]["user"]["uid"], "alice");
    let drift = map(object(
        json!({"event": "tool_drift", "tool": "GITHUB_CREATE_ISSUE",
        "toolkit": "github", "version": "20250909_00", "kind": "changed", "seen_hash": "bb"}),
    ));
    assert_eq!(
        drift["finding_info"]["uid"],
        "tool_drift:GITHUB_CREATE_ISSUE:20250909_00:bb"
    );
    assert_eq!(drift["resources"][0]["name"], "GITHUB_CREATE_ISSUE");
    // A kind with no arm yet is still an event, named, its fields kept.
    let o = map(object(json!({"event": "something_new", "x": 1})));
    assert_eq!(o["entity"]["name"], "something_new");
    assert_eq!(o["unmapped"]["x"], 1);
}

#[test]
fn split_gives_the_chain_an_event_without_unmapped_and_unmapped_members() {
    let (event, unmapped) =
        split(r#"{"event":"deny_added","rule_id":"d1","rule":"all","via":"console"}"#).unwrap();
    assert!(!event.contains("unmapped"), "{event}");
    assert_eq!(
        serde_json::from_str::<Value>(&unmapped).unwrap(),
        json!({"via": "console"})
    );
    assert!(split("[1]").is_none());
    assert!(split("not json").is_none());
}
