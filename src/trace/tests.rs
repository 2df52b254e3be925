use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_valid_traceparent_is_continued() {
    let p = parse(&headers(&[
        ("traceparent", GOOD),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]))
    .unwrap();
    assert_eq!(p.trace_id[0], 0x4b);
    assert_eq!(p.span_id[7], 0xb7);
    assert!(p.sampled);
    assert_eq!(p.state.as_deref(), Some("congo=t61rcWkgMzE"));
    let t = Trace::start(&headers(&[("traceparent", GOOD)]), None);
    assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    let mut out = HeaderMap::new();
    t.inject(&mut out, None);
    let tp = out["traceparent"].to_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the gateway's own span is the parent"
    );
    assert!(tp.ends_with("-01"));
    assert!(parse(&out).is_some(), "what the gateway sends parses");
}

#[test]
fn a_later_version_with_more_fields_is_accepted() {
    let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
    assert!(parse(&headers(&[("traceparent", v)])).is_some());
}

#[test]
fn anything_not_exactly_valid_starts_a_new_trace() {
    for bad in [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        assert!(
            parse(&headers(&[("traceparent", bad)])).is_none(),
            "{bad:?}"
        );
        let t = Trace::start(&headers(&[("traceparent", bad)]), None);
        assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
        assert_eq!(t.trace_id().len(), 32);
    }
    // Two traceparent headers: which one would Composio believe?
    assert!(parse(&headers(&[("traceparent", GOOD), ("traceparent", GOOD)])).is_none());
    let fresh = Trace::start(&HeaderMap::new(), None);
    assert_ne!(
        fresh.trace_id(),
        Trace::start(&HeaderMap::new(), None).trace_id()
    );
}

#[test]
fn a_bad_tracestate_is_dropped_but_the_trace_continues() {
    for bad in [
        "Upper=1",
        "k=v,,=x",
        "k=",
        "k=a,b",
        "k=v=w",
        &"k=v,".repeat(40),
    ] {
        let p = parse(&headers(&[("traceparent", GOOD), ("tracestate", bad)])).unwrap();
        assert_eq!(p.state, None, "{bad:?}");
    }
    let p = parse(&headers(&[
        ("traceparent", GOOD),
        ("tracestate", "a=1"),
        ("tracestate", "b@vendor=2"),
    ]))
    .unwrap();
    assert_eq!(p.state.as_deref(), Some("a=1,b@vendor=2"));
}
