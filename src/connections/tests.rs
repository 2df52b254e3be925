use std::sync::atomic::AtomicUsize;

use super::*;

fn acct(status: &str, disabled: bool) -> Account {
    Account {
        id: format!("ca_{status}"),
        toolkit: "slack".into(),
        status: status.into(),
        is_disabled: disabled,
    }
}

#[test]
fn refusal_kinds_follow_the_accounts() {
    assert_eq!(classify(&[]).0, GateKind::NotConnected);
    assert_eq!(
        classify(&[acct("EXPIRED", false)]),
        (GateKind::Expired, "EXPIRED".into())
    );
    assert_eq!(classify(&[acct("FAILED", false)]).0, GateKind::Expired);
    assert_eq!(classify(&[acct("REVOKED", false)]).0, GateKind::Expired);
    assert_eq!(
        classify(&[acct("ACTIVE", true)]),
        (GateKind::Expired, "DISABLED".into())
    );
    assert_eq!(classify(&[acct("INACTIVE", false)]).0, GateKind::Inactive);
    assert_eq!(classify(&[acct("INITIATED", false)]).0, GateKind::Pending);
    assert_eq!(
        classify(&[acct("INITIALIZING", false), acct("INITIATED", false)]).0,
        GateKind::Pending
    );
    assert_eq!(
        classify(&[acct("INITIATED", false), acct("EXPIRED", false)]).0,
        GateKind::Expired
    );
    assert_eq!(
        classify(&[acct("INACTIVE", false), acct("EXPIRED", false)]).0,
        GateKind::Expired
    );
}

#[test]
fn display_names_read_well() {
    assert_eq!(display_name("slack"), "Slack");
    assert_eq!(display_name("composio_search"), "Composio Search");
}

#[tokio::test]
async fn a_burst_on_one_cold_key_makes_one_fetch() {
    let cache: Arc<Cache<String, u32>> = Arc::new(Cache::new(100, Arc::default()));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (cache, calls) = (cache.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get(
                    "k".to_owned(),
                    |_| Duration::from_secs(30),
                    || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(7)
                    },
                )
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(7));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats.misses.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn errors_are_shared_by_the_burst_but_not_cached() {
    let cache: Cache<String, u32> = Cache::new(100, Arc::default());
    let r = cache
        .get(
            "k".into(),
            |_| Duration::from_secs(30),
            || async { Err(Error::ConnectionStatusUnavailable) },
        )
        .await;
    assert_eq!(r, Err(Error::ConnectionStatusUnavailable));
    let r = cache
        .get("k".into(), |_| Duration::from_secs(30), || async { Ok(1) })
        .await;
    assert_eq!(r, Ok(1), "a failed lookup must not stick");
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let cache: Cache<String, u32> = Cache::new(100, Arc::default());
    let ttl = |_: &u32| Duration::from_millis(30);
    assert_eq!(cache.get("k".into(), ttl, || async { Ok(1) }).await, Ok(1));
    assert_eq!(
        cache.get("k".into(), ttl, || async { Ok(2) }).await,
        Ok(1),
        "fresh: served from cache"
    );
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(
        cache.get("k".into(), ttl, || async { Ok(3) }).await,
        Ok(3),
        "expired: fetched again"
    );
}

#[tokio::test]
async fn stale_answers_only_when_allowed() {
    let cache: Cache<String, u32> = Cache::new(100, Arc::default());
    let ttl = |_: &u32| Duration::from_millis(10);
    cache
        .get("k".into(), ttl, || async { Ok(1) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fail = || async { Err(Error::ConnectionStatusUnavailable) };
    let r = cache
        .get_or_stale("k".into(), ttl, |_, age| age < Duration::from_secs(5), fail)
        .await;
    assert_eq!(r, Ok(1));
    let r = cache
        .get_or_stale("k".into(), ttl, |_, _| false, fail)
        .await;
    assert_eq!(r, Err(Error::ConnectionStatusUnavailable));
}

#[tokio::test]
async fn the_bound_is_kept() {
    let cache: Cache<u32, u32> = Cache::new(100, Arc::default());
    for k in 0..1000 {
        cache
            .get(k, |_| Duration::from_secs(30), || async move { Ok(k) })
            .await
            .unwrap();
    }
    assert!(cache.len() <= 100, "{}", cache.len());
    assert!(cache.stats.evictions.load(Ordering::SeqCst) >= 900);
}

#[test]
fn identifiers_follow_their_grammar() {
    for ok in [
        "GITHUB_CREATE_ISSUE",
        "googlesheets",
        "ca_1a-B_2",
        "trs_x",
        &"A".repeat(128),
    ] {
        assert!(is_identifier(ok), "{ok}");
    }
    for bad in [
        "",
        "../../../V1/API_KEYS",
        "X?user_ids=bob",
        "X#y",
        "X/Y",
        "X%2F",
        "X.Y",
        "X Y",
        "X\nY",
        "X\u{1b}[31m",
        "É",
        &"A".repeat(129),
    ] {
        assert!(!is_identifier(bad), "{bad:?}");
        let shown = redact_identifier(bad);
        assert!(
            shown
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-?".contains(&b)),
            "{shown:?}"
        );
    }
}
