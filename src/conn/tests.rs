use super::*;

const D: Deadlines = Deadlines {
    head: Duration::from_secs(10),
    keepalive: Duration::from_secs(75),
};

fn req(version: http::Version) -> Request<()> {
    Request::builder().version(version).body(()).unwrap()
}

fn watch(a: &Arc<Activity>) -> tokio::task::JoinHandle<Instant> {
    let a = a.clone();
    tokio::spawn(async move {
        a.expired(D).await;
        Instant::now()
    })
}

#[tokio::test(start_paused = true)]
async fn silent_connection_expires_after_the_first_request_deadline() {
    let a = Activity::new();
    let started = Instant::now();
    a.expired(D).await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert!(!a.had_request());
}

#[tokio::test(start_paused = true)]
async fn in_flight_request_is_never_cut_then_the_keepalive_deadline_applies() {
    let a = Activity::new();
    let guard = a.begin(&req(http::Version::HTTP_11));
    let watch = watch(&a);
    tokio::time::sleep(Duration::from_secs(500)).await;
    assert!(
        !watch.is_finished(),
        "a request in flight keeps the connection"
    );
    let ended = Instant::now();
    drop(guard);
    let closed = watch.await.unwrap();
    let kept = closed - ended;
    // Kept alive for the keep-alive period, not the (shorter) head deadline.
    assert!(kept >= D.keepalive, "{kept:?}");
    assert!(kept <= D.keepalive + D.tick(), "{kept:?}");
}

#[tokio::test(start_paused = true)]
async fn a_later_head_that_trickles_is_cut_by_the_head_deadline() {
    let a = Activity::new();
    drop(a.begin(&req(http::Version::HTTP_11)));
    let watch = watch(&a);
    // Idle well past the head deadline: still open.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!watch.is_finished(), "an idle keep-alive connection stays");
    // The first byte of the next head arrives, then nothing more.
    let first_byte = Instant::now();
    a.arrived();
    let closed = watch.await.unwrap();
    let took = closed - first_byte;
    assert!(took >= D.head, "{took:?}");
    assert!(took <= D.head + D.tick(), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_head_that_completes_in_time_keeps_the_connection() {
    let a = Activity::new();
    drop(a.begin(&req(http::Version::HTTP_11)));
    let watch = watch(&a);
    tokio::time::sleep(Duration::from_secs(30)).await;
    a.arrived();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let guard = a.begin(&req(http::Version::HTTP_11));
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(guard);
    let ended = Instant::now();
    let closed = watch.await.unwrap();
    assert!(closed - ended >= D.keepalive, "{:?}", closed - ended);
}

#[tokio::test(start_paused = true)]
async fn http2_frames_between_requests_are_not_a_head() {
    let a = Activity::new();
    drop(a.begin(&req(http::Version::HTTP_2)));
    let watch = watch(&a);
    let ended = Instant::now();
    // A PING acknowledgement, say.
    tokio::time::sleep(Duration::from_secs(30)).await;
    a.arrived();
    let closed = watch.await.unwrap();
    assert!(closed - ended >= D.keepalive, "{:?}", closed - ended);
}

#[tokio::test(start_paused = true)]
async fn bytes_of_a_request_in_flight_are_not_the_next_head() {
    let a = Activity::new();
    let guard = a.begin(&req(http::Version::HTTP_11));
    // The request's body arrives.
    a.arrived();
    drop(guard);
    let ended = Instant::now();
    let closed = watch(&a).await.unwrap();
    assert!(closed - ended >= D.keepalive, "{:?}", closed - ended);
}

#[tokio::test]
async fn watched_stream_replays_first_then_reads_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Activity::new();
    let (mut client, server) = tokio::io::duplex(64);
    let mut server = Watched::replaying(Bytes::from_static(b"GET / HT"), server, a);
    client.write_all(b"TP/1.1\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 5];
    while got.len() < 16 {
        let n = server.read(&mut buf).await.unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"GET / HTTP/1.1\r\n");
    let (rest, _) = server.into_parts();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn watched_stream_reports_bytes_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Activity::new();
    drop(a.begin(&req(http::Version::HTTP_11)));
    let (mut client, server) = tokio::io::duplex(64);
    let mut server = Watched::new(server, a.clone());
    assert_eq!(a.head_ms.load(Ordering::Relaxed), NO_HEAD);
    client.write_all(b"GET").await.unwrap();
    let mut buf = [0u8; 8];
    let n = server.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET");
    assert_ne!(a.head_ms.load(Ordering::Relaxed), NO_HEAD);
}
