use super::*;
use std::collections::VecDeque;

/// A body that yields the given chunks as separate frames.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

async fn run(chunks: &[&str], secret: &str) -> String {
    let body = Chunks(chunks.iter().map(|c| Bytes::from(c.to_string())).collect());
    let out = Redact::new(body, Bytes::from(secret.to_owned()))
        .collect()
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(out.to_vec()).unwrap()
}

#[tokio::test]
async fn key_is_redacted_even_across_frames() {
    let s = "sk_live_0123456789";
    assert_eq!(
        run(&["{\"k\":\"sk_live_0123456789\"}"], s).await,
        "{\"k\":\"[REDACTED]\"}"
    );
    assert_eq!(
        run(&["{\"k\":\"sk_li", "ve_01234", "56789\"}"], s).await,
        "{\"k\":\"[REDACTED]\"}"
    );
    assert_eq!(
        run(&["s", "k", "_live_0123456789", "sk_live_0123456789"], s).await,
        "[REDACTED][REDACTED]"
    );
    assert_eq!(run(&["harmless ", "body"], s).await, "harmless body");
    assert_eq!(run(&[], s).await, "");
}

fn read(chunks: &[Vec<u8>], announced: Option<usize>, limit: usize) -> Result<Bytes, Error> {
    let body = Chunks(chunks.iter().map(|c| Bytes::from(c.clone())).collect());
    let body = body.map_err(|never| match never {}).boxed_unsync();
    let mut headers = HeaderMap::new();
    if let Some(n) = announced {
        headers.insert(http::header::CONTENT_LENGTH, n.into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(read_limited(&headers, body, limit))
}

proptest::proptest! {
    /// However the body is cut into chunks, what is read is the body, and a body past the
    /// limit is refused whether or not its length was announced.
    #[test]
    fn a_body_is_read_whole_or_refused_past_the_limit(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..6),
        announce in proptest::bool::ANY,
        limit in 0usize..120,
    ) {
        let whole: Vec<u8> = chunks.concat();
        let got = read(&chunks, announce.then_some(whole.len()), limit);
        if whole.len() > limit {
            proptest::prop_assert!(matches!(got, Err(Error::PayloadTooLarge)));
        } else {
            proptest::prop_assert_eq!(got.ok().map(|b| b.to_vec()), Some(whole));
        }
    }

    /// However a body is cut into frames and wherever the key appears (whole, twice,
    /// overlapping a near-copy, cut across frames), what comes out is the body with every
    /// copy of the key replaced.
    #[test]
    fn the_key_never_leaves_whatever_the_framing(
        parts in proptest::collection::vec(
            proptest::prop_oneof![
                "[a-z\"{}:, ]{0,12}",
                proptest::strategy::Just("sk_live_0123456789".to_owned()),
                proptest::strategy::Just("sk_live_01234".to_owned()),
            ],
            0..8,
        ),
        cuts in proptest::collection::vec(0usize..200, 0..6),
    ) {
        let secret = "sk_live_0123456789";
        let whole: String = parts.concat();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(whole.len())).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([whole.len()]) {
            chunks.push(&whole[at..c]);
            at = c;
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = rt.block_on(run(&chunks, secret));
        proptest::prop_assert_eq!(out, whole.replace(secret, "[REDACTED]"));
    }

    /// During a key rotation both keys are live at Composio: neither leaves, whatever the
    /// framing, and the shorter one is held back across frames as well as the longer.
    #[test]
    fn neither_rotation_key_leaves_whatever_the_framing(
        parts in proptest::collection::vec(
            proptest::prop_oneof![
                "[a-z\"{}:, ]{0,12}",
                proptest::strategy::Just("sk_live_0123456789".to_owned()),
                proptest::strategy::Just("sk_prev_42".to_owned()),
                proptest::strategy::Just("sk_prev_".to_owned()),
            ],
            0..8,
        ),
        cuts in proptest::collection::vec(0usize..200, 0..6),
    ) {
        let whole: String = parts.concat();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(whole.len())).collect();
        cuts.sort_unstable();
        let mut chunks = VecDeque::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([whole.len()]) {
            chunks.push_back(Bytes::from(whole[at..c].to_owned()));
            at = c;
        }
        let keys = Keys::new([
            Bytes::from_static(b"sk_live_0123456789"),
            Bytes::from_static(b"sk_prev_42"),
        ]);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = rt
            .block_on(Redact::new(Chunks(chunks), keys).collect())
            .unwrap()
            .to_bytes();
        let want = whole
            .replace("sk_live_0123456789", "[REDACTED]")
            .replace("sk_prev_42", "[REDACTED]");
        proptest::prop_assert_eq!(String::from_utf8(out.to_vec()).unwrap(), want);
    }
}
