use serde_json::json;

use super::*;

fn rule(body: Value) -> Rule {
    Rule::from_request(&body, 1_000).expect("valid rule")
}

#[test]
fn requests_name_exactly_one_target_and_a_reason() {
    for bad in [
        json!({"reason": "x"}),
        json!({"subject": "a"}),
        json!({"subject": "a", "toolkit": "b", "reason": "x"}),
        json!({"all": false, "reason": "x"}),
        json!({"tool": "GMAIL SEND", "reason": "x"}),
        json!({"toolkit": "gm/ail", "reason": "x"}),
        json!({"subject": "a", "reason": "x", "expires_in_secs": 0}),
        json!({"subject": "a", "reason": "x", "extra": 1}),
        json!({"subject": "a", "reason": "two\nlines"}),
        json!(["subject"]),
    ] {
        assert!(Rule::from_request(&bad, 0).is_err(), "{bad}");
    }
    let r = rule(json!({"tool": "gmail_*", "reason": "x", "expires_in_secs": 60}));
    assert_eq!(r.target, Target::Tool("GMAIL_*".into()));
    assert_eq!(r.expires_at, Some(1_060));
    let wire = serde_json::to_value(&r).expect("serialises");
    assert_eq!(wire["tool"], "GMAIL_*");
    assert_eq!(serde_json::from_value::<Rule>(wire).expect("reads back"), r);
}

#[tokio::test]
async fn each_kind_of_rule_refuses_what_it_names() {
    let ks = KillSwitch::in_memory();
    assert!(ks.check_identity("alice", Some("t1")).is_ok());
    ks.add(rule(json!({"subject": "alice", "reason": "compromised"})))
        .await
        .expect("add");
    ks.add(rule(json!({"jti": "t9", "reason": "leaked token"})))
        .await
        .expect("add");
    ks.add(rule(json!({"toolkit": "GitHub", "reason": "incident"})))
        .await
        .expect("add");
    ks.add(rule(json!({"tool": "GMAIL_*_EMAIL", "reason": "spam"})))
        .await
        .expect("add");
    let e = ks.check_identity("alice", None).expect_err("denied");
    assert_eq!(e.slug(), "denied_by_kill_switch");
    assert!(e.to_string().contains("compromised"), "{e}");
    assert!(ks.check_identity("alicex", None).is_ok());
    assert!(ks.check_identity("bob", Some("t9")).is_err());
    assert!(ks.check_identity("bob", Some("t1")).is_ok());
    assert!(ks.check_toolkit("github").is_err());
    assert!(ks.check_toolkit("gitlab").is_ok());
    assert!(ks.check_tool("gmail_send_email").is_err());
    assert!(ks.check_tool("GMAIL_SEND_DRAFT").is_ok());
    let id = ks
        .rules()
        .into_iter()
        .find(|r| r.target == Target::Subject("alice".into()))
        .expect("the subject rule")
        .id;
    assert!(ks.remove(&id).await.expect("remove").is_some());
    assert!(ks.check_identity("alice", None).is_ok());
    assert!(ks.remove(&id).await.expect("remove").is_none());
    ks.add(rule(json!({"all": true, "reason": "stop"})))
        .await
        .expect("add");
    assert!(ks.check_identity("anyone", None).is_err());
}

#[tokio::test]
async fn an_expired_rule_stops_applying() {
    let ks = KillSwitch::in_memory();
    let mut r = rule(json!({"subject": "alice", "reason": "x"}));
    r.expires_at = Some(crate::clock::unix_now() - 1);
    ks.replace_all(vec![r]).await.expect("replace");
    assert!(ks.check_identity("alice", None).is_ok());
    assert!(ks.rules().is_empty());
}

#[tokio::test]
async fn a_lapsed_rule_is_handed_out_once_and_dropped_from_the_store() {
    let path = std::env::temp_dir().join(format!("eg-ks-lapse-{}.redb", uuid::Uuid::new_v4()));
    let now = crate::clock::unix_now();
    let mut lapsing = rule(json!({"subject": "alice", "reason": "lapses"}));
    lapsing.expires_at = Some(now + 3600);
    let lifted = rule(json!({"subject": "bob", "reason": "lifted"}));
    let lasting = rule(json!({"toolkit": "slack", "reason": "stays"}));
    assert_ne!(lasting.id, lapsing.id);
    {
        let ks = KillSwitch::open(&path).expect("open");
        for r in [&lapsing, &lifted, &lasting] {
            ks.add(r.clone()).await.expect("add");
        }
        assert!(ks.lapsed().await.is_empty(), "nothing expired yet");
        // A rule lifted while active is a removal, not a lapse.
        ks.remove(&lifted.id).await.expect("remove");
        assert!(ks.lapsed().await.is_empty());
    }
    // The expiry passes (written as an earlier instant into the stored rule).
    lapsing.expires_at = Some(now - 1);
    let ks = {
        // Stored as expired: the next open reads it, the first look reports it.
        let db = Database::create(&path).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(RULES).expect("table");
            let json = serde_json::to_string(&lapsing).expect("json");
            t.insert(lapsing.id.as_str(), json.as_str())
                .expect("insert");
        }
        txn.commit().expect("commit");
        drop(db);
        KillSwitch::open(&path).expect("reopen")
    };
    assert!(
        ks.check_identity("alice", None).is_ok(),
        "no longer applies"
    );
    let lapsed = ks.lapsed().await;
    assert_eq!(lapsed.len(), 1, "{lapsed:?}");
    assert_eq!(lapsed[0].id, lapsing.id);
    assert!(ks.lapsed().await.is_empty(), "handed out once");
    drop(ks);
    let ks = KillSwitch::open(&path).expect("reopen");
    assert!(
        ks.lapsed().await.is_empty(),
        "dropped from the store: not reported again"
    );
    assert_eq!(ks.rules().len(), 1, "the lasting rule stays");
    drop(ks);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn rules_survive_reopening_the_store_and_changes_are_published() {
    let path = std::env::temp_dir().join(format!("eg-ks-{}.redb", uuid::Uuid::new_v4()));
    let ks = KillSwitch::open(&path).expect("open");
    let mut changes = ks.subscribe();
    let r = rule(json!({"toolkit": "slack", "reason": "x"}));
    ks.add(r.clone()).await.expect("add");
    assert_eq!(
        changes.try_recv().expect("published"),
        Change::Added(r.clone())
    );
    ks.replace_all(vec![r.clone()]).await.expect("replace");
    assert!(changes.try_recv().is_err(), "replace_all is not echoed");
    drop(ks);
    let again = KillSwitch::open(&path).expect("reopen");
    assert_eq!(again.rules(), vec![r]);
    assert!(again.check_toolkit("slack").is_err());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn globs_match_like_the_tool_policy() {
    let g = |p: &str| p.split('*').map(str::to_owned).collect::<Vec<_>>();
    assert!(glob_matches(&g("GMAIL_*"), "gmail_send"));
    assert!(glob_matches(&g("*"), "ANY"));
    assert!(glob_matches(&g("A*B*C"), "AxxBxxC"));
    assert!(!glob_matches(&g("A*B*C"), "AxxCxxB"));
    assert!(!glob_matches(&g("GMAIL"), "GMAIL_SEND"));
}
