//! `Mcp-Session-Id` values bound to the subject they were issued to.
//!
//! On the older stateful transport, Composio mints an `Mcp-Session-Id` at `initialize` and
//! may keep, in that session, who it was initialized for. The endpoint path is checked and
//! its user pinned on every request, but a session id that leaked from one user (a log, a
//! shared proxy, a bug in an agent runtime) must not let another user's requests ride in it.
//! So the gateway never hands out Composio's id as is: the client gets
//! `{upstream id}.{tag}`, where the tag is an HMAC of the subject and the id under a key
//! derived from the project key. Every replica derives the same key, so any replica can check
//! any id (nothing replica-local decides); an id without a valid tag for the caller is answered
//! 404, which MCP clients take as "session gone, initialize again", and never goes upstream.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the HMAC kept in the tag (128 bits).
const TAG_BYTES: usize = 16;

/// Longest session id accepted from either side (the spec's ids are short; this bounds work).
const MAX_ID: usize = 512;

/// Domain separation: this key is used for nothing else.
const LABEL: &[u8] = b"entitygate mcp-session-id binding v1";

fn tag(secret: &[u8], subject: &str, upstream_id: &str) -> Option<String> {
    let mut kdf = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    kdf.update(LABEL);
    let key = kdf.finalize().into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(subject.as_bytes());
    mac.update(&[0]);
    mac.update(upstream_id.as_bytes());
    let out = mac.finalize().into_bytes();
    Some(URL_SAFE_NO_PAD.encode(&out[..TAG_BYTES]))
}

/// The id the client gets for Composio's `upstream_id`, or `None` when it is not a visible
/// ASCII id of a sane length (such an answer is not relayed).
pub(crate) fn bind(secret: &[u8], subject: &str, upstream_id: &str) -> Option<String> {
    if upstream_id.is_empty()
        || upstream_id.len() > MAX_ID
        || !upstream_id.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return None;
    }
    Some(format!(
        "{upstream_id}.{}",
        tag(secret, subject, upstream_id)?
    ))
}

/// Composio's id inside `client_id`, when `client_id` was issued to `subject`.
pub(crate) fn unbind<'a>(secret: &[u8], subject: &str, client_id: &'a str) -> Option<&'a str> {
    if client_id.len() > MAX_ID + 1 + 32 {
        return None;
    }
    let (upstream_id, given) = client_id.rsplit_once('.')?;
    let want = bind(secret, subject, upstream_id)?;
    let want_tag = &want[upstream_id.len() + 1..];
    // Constant time: the tag is the only secret-derived value compared with client input.
    let same = want_tag.len() == given.len()
        && want_tag
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then_some(upstream_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"sk_test_only_project_key";

    #[test]
    fn an_id_round_trips_for_its_subject_only() {
        let bound = bind(KEY, "alice", "4f2c-abc.def").unwrap();
        assert_eq!(unbind(KEY, "alice", &bound), Some("4f2c-abc.def"));
        assert_eq!(unbind(KEY, "bob", &bound), None);
        assert_eq!(unbind(b"another project key", "alice", &bound), None);
    }

    #[test]
    fn bare_forged_and_odd_ids_are_refused() {
        let bound = bind(KEY, "alice", "sess_1").unwrap();
        assert_eq!(unbind(KEY, "alice", "sess_1"), None, "no tag");
        assert_eq!(unbind(KEY, "alice", "sess_1."), None, "empty tag");
        let mut flipped = bound.into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(unbind(KEY, "alice", &flipped), None, "altered tag");
        assert_eq!(unbind(KEY, "alice", &"x".repeat(4096)), None);
        assert_eq!(bind(KEY, "alice", ""), None);
        assert_eq!(bind(KEY, "alice", "has space"), None);
        assert_eq!(bind(KEY, "alice", "é"), None);
    }

    #[test]
    fn a_subject_cannot_collide_with_another_by_moving_the_separator() {
        // "a" + "\0" + "b\0c" vs "a\0b" + "\0" + "c": subjects are JWT `sub` strings and
        // may contain anything; the id is visible ASCII, so it never holds the NUL.
        let one = bind(KEY, "a", "b").unwrap();
        assert_eq!(unbind(KEY, "a\0b", &one), None);
    }
}
