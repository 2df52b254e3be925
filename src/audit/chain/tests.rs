#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::audit::Sink;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

fn key() -> HmacKey {
    HmacKey::new(KEY).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "entitygate-chain-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn event(i: usize) -> String {
    format!(
        r#"{{"time":"2026-01-01T00:00:00Z","request_id":"r{i}","subject":"alice","decision":"allow","status":200}}"#
    )
}

/// A log as the writer makes it: a `log_opened` record then `n` events, continuing `head`.
fn lines_from(head: &mut Head, key: Option<&HmacKey>, events: &[String]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            seal(head, key, e, &mut out);
            let mut s = String::from_utf8(out).unwrap();
            s.pop();
            s
        })
        .collect()
}

/// The same, each event in its OCSF form (`[audit] format = "ocsf"`), as the writer seals it.
fn ocsf_lines_from(head: &mut Head, key: Option<&HmacKey>, events: &[String]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let (event, unmapped) = crate::audit::ocsf::split(e).unwrap();
            let mut out = Vec::new();
            seal_ocsf(head, key, &event, &unmapped, &mut out);
            let mut s = String::from_utf8(out).unwrap();
            s.pop();
            s
        })
        .collect()
}

fn lines_as(ocsf: bool, head: &mut Head, key: Option<&HmacKey>, events: &[String]) -> Vec<String> {
    if ocsf {
        ocsf_lines_from(head, key, events)
    } else {
        lines_from(head, key, events)
    }
}

fn log_as(ocsf: bool, n: usize, key: Option<&HmacKey>) -> Vec<String> {
    lines_as(ocsf, &mut Head::default(), key, &events(n))
}

/// Where the chain stands after `line`, in either format.
fn head_after(line: &str) -> Head {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let c = if v.get("unmapped").is_some() {
        &v["unmapped"]
    } else {
        &v
    };
    Head {
        next_seq: c["seq"].as_u64().unwrap() + 1,
        last_hash: c["hash"].as_str().unwrap().to_owned(),
    }
}

fn events(n: usize) -> Vec<String> {
    let mut v =
        vec![r#"{"time":"2026-01-01T00:00:00Z","event":"log_opened","reason":"start"}"#.to_owned()];
    v.extend((1..=n).map(event));
    v
}

fn log(n: usize, key: Option<&HmacKey>) -> Vec<String> {
    lines_from(&mut Head::default(), key, &events(n))
}

fn write(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn check(lines: &[String], key: Option<&HmacKey>) -> Result<Report, Break> {
    let path = tmp("audit.log");
    write(&path, lines);
    let result = verify(std::slice::from_ref(&path), key, None);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn broken_at(lines: &[String], key: Option<&HmacKey>) -> u64 {
    match check(lines, key) {
        Ok(r) => panic!("verified although tampered: {r:?}"),
        Err(b) => b.line,
    }
}

#[test]
fn an_untouched_log_verifies_with_and_without_its_key() {
    let lines = log(20, Some(&key()));
    let r = check(&lines, Some(&key())).unwrap();
    assert_eq!(r.lines, 21);
    assert!(r.hmac_checked);
    assert_eq!(r.last.as_ref().unwrap().0, 20);
    let r = check(&lines, None).unwrap();
    assert!(!r.hmac_checked && !r.notes.is_empty(), "{r:?}");
    check(&log(5, None), None).unwrap();
}

#[test]
fn the_line_format_is_the_event_with_seq_prev_hash_and_hmac_around_it() {
    let lines = log(1, Some(&key()));
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.first().unwrap(), "seq");
    assert_eq!(keys[1], "prev");
    assert_eq!(&keys[keys.len() - 2..], ["hash", "hmac"]);
    assert_eq!(v["request_id"], "r1");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["prev"], GENESIS);
    assert_eq!(v["prev"], first["hash"]);
}

#[test]
fn the_ocsf_line_is_the_event_with_the_chain_closing_unmapped() {
    let lines = log_as(true, 1, Some(&key()));
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.first().unwrap(), "class_uid");
    assert_eq!(keys.last().unwrap(), "unmapped");
    let u: Vec<_> = v["unmapped"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(&u[u.len() - 4..], ["seq", "prev", "hash", "hmac"]);
    assert_eq!(v["metadata"]["uid"], "r1");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["metadata"]["event_code"], "log_opened");
    assert_eq!(first["unmapped"]["prev"], GENESIS);
    assert_eq!(v["unmapped"]["prev"], first["unmapped"]["hash"]);
    let r = check(&lines, Some(&key())).unwrap();
    assert_eq!((r.lines, r.hmac_checked), (2, true));
}

#[test]
fn a_log_whose_format_changed_on_reload_verifies_across_the_change() {
    let mut head = Head::default();
    let mut lines = lines_from(&mut head, Some(&key()), &events(3));
    lines.extend(ocsf_lines_from(&mut head, Some(&key()), &events(3)));
    lines.extend(lines_from(&mut head, Some(&key()), &[event(9)]));
    assert_eq!(check(&lines, Some(&key())).unwrap().lines, 9);
    lines[6] = lines[6].replace("alice", "mallory");
    assert_eq!(broken_at(&lines, Some(&key())), 7);
}

#[test]
fn an_edited_ocsf_line_is_caught_at_that_line_and_a_moved_chain_member_too() {
    let mut lines = log_as(true, 10, None);
    lines[4] = lines[4].replace("alice", "mallory");
    assert_eq!(broken_at(&lines, None), 5);
    // The chain members anywhere but at the end of unmapped: not a line the writer writes.
    let lines = log_as(true, 3, None);
    let v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    let mut moved = serde_json::Map::new();
    moved.insert("unmapped".into(), v["unmapped"].clone());
    for (k, x) in v.as_object().unwrap() {
        if k != "unmapped" {
            moved.insert(k.clone(), x.clone());
        }
    }
    let mut edited = lines;
    edited[2] = serde_json::Value::Object(moved).to_string();
    let err = check(&edited, None).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.reason.contains("not a chained audit line"), "{err}");
}

#[test]
fn an_edited_line_is_caught_at_that_line() {
    let mut lines = log(10, None);
    lines[4] = lines[4].replace("alice", "mallory");
    assert_eq!(broken_at(&lines, None), 5);
    let mut lines = log(10, None);
    lines[10] = lines[10].replace("200", "403");
    assert_eq!(broken_at(&lines, None), 11, "the last line too");
}

#[test]
fn a_deleted_line_is_caught_where_it_was() {
    let mut lines = log(10, None);
    lines.remove(3);
    let err = check(&lines, None).unwrap_err();
    assert_eq!(err.line, 4);
    assert!(err.reason.contains("deleted"), "{err}");
    // The head too: the log must begin at a log_opened record.
    let mut lines = log(10, None);
    lines.remove(0);
    assert_eq!(broken_at(&lines, None), 1);
}

#[test]
fn reordered_lines_are_caught_at_the_first_one_out_of_place() {
    let mut lines = log(10, None);
    lines.swap(5, 6);
    assert_eq!(broken_at(&lines, None), 6);
}

#[test]
fn an_inserted_line_is_caught_at_that_line() {
    // A copy of an earlier line.
    let mut lines = log(10, None);
    let copy = lines[2].clone();
    lines.insert(6, copy);
    let err = check(&lines, None).unwrap_err();
    assert_eq!(err.line, 7);
    assert!(err.reason.contains("out of order or inserted"), "{err}");
    // Made up by hand.
    let mut lines = log(10, None);
    lines.insert(6, event(99));
    assert_eq!(broken_at(&lines, None), 7);
}

#[test]
fn a_truncated_tail_is_reported_as_such() {
    let lines = log(5, None);
    let path = tmp("audit.log");
    let mut text = lines.join("\n");
    text.truncate(text.len() - 20);
    std::fs::write(&path, text).unwrap();
    let err = verify(std::slice::from_ref(&path), None, None).unwrap_err();
    assert_eq!(err.line, 6);
    assert!(err.reason.contains("truncated tail"), "{err}");
}

/// What an attacker without the key can do: edit line `k` and recompute every hash after it.
fn recomputed(lines: &[String], k: usize, key: Option<&HmacKey>) -> Vec<String> {
    let prev: serde_json::Value = serde_json::from_str(&lines[k - 1]).unwrap();
    let mut head = Head {
        next_seq: prev["seq"].as_u64().unwrap() + 1,
        last_hash: prev["hash"].as_str().unwrap().to_owned(),
    };
    let rest: Vec<String> = lines[k..]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for f in ["seq", "prev", "hash", "hmac"] {
                o.remove(f);
            }
            if i == 0 {
                o.insert("subject".into(), "mallory".into());
            }
            v.to_string()
        })
        .collect();
    let mut out = lines[..k].to_vec();
    out.extend(lines_from(&mut head, key, &rest));
    out
}

#[test]
fn a_recomputed_chain_passes_the_hashes_but_not_the_hmac() {
    let lines = log(10, Some(&key()));
    let forged = recomputed(&lines, 4, None);
    assert_ne!(forged[4], lines[4]);
    // The hash chain alone cannot tell: this is what the HMAC is for.
    check(&forged, None).unwrap();
    let err = check(&forged, Some(&key())).unwrap_err();
    assert_eq!(err.line, 5);
    // Recomputed with a guessed key: caught at the same line.
    let wrong = HmacKey::new(b"another key that is long enough to be accepted!").unwrap();
    let forged = recomputed(&lines, 4, Some(&wrong));
    let err = check(&forged, Some(&key())).unwrap_err();
    assert_eq!(err.line, 5);
    assert!(err.reason.contains("HMAC"), "{err}");
}

#[test]
fn a_recomputed_ocsf_chain_passes_the_hashes_but_not_the_hmac() {
    let lines = log_as(true, 10, Some(&key()));
    let mut head = head_after(&lines[3]);
    let rest: Vec<String> = (4..=10)
        .map(|i| event(i).replace("alice", if i == 4 { "mallory" } else { "alice" }))
        .collect();
    let mut forged = lines[..4].to_vec();
    forged.extend(ocsf_lines_from(&mut head, None, &rest));
    assert_ne!(forged[4], lines[4]);
    check(&forged, None).unwrap();
    let err = check(&forged, Some(&key())).unwrap_err();
    assert_eq!(err.line, 5);
    assert!(err.reason.contains("HMAC"), "{err}");
}

#[test]
fn a_short_key_is_refused() {
    assert!(HmacKey::new(b"short").is_err());
}

#[test]
fn files_given_out_of_order_or_with_a_gap_are_caught() {
    let all = log(10, None);
    let (a, b) = (tmp("a.log"), tmp("b.log"));
    write(&a, &all[..5]);
    write(&b, &all[5..]);
    // b alone does not begin at a log_opened record.
    assert!(verify(std::slice::from_ref(&b), None, None).is_err());
    verify(&[a.clone(), b.clone()], None, None).unwrap();
    assert_eq!(verify(&[b, a], None, None).unwrap_err().line, 1);
}

// === the writer ===

fn sink_events(sink: &Sink, from: usize, n: usize) {
    for i in from..from + n {
        sink.write(event(i));
    }
    assert!(sink.flush_blocking(Duration::from_secs(5)));
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_chain_continues_across_a_restart() {
    let path = tmp("audit.log");
    let sink = Sink::open(Some(&path), Some(key())).unwrap();
    sink_events(&sink, 0, 5);
    drop(sink);
    let sink = Sink::open(Some(&path), Some(key())).unwrap();
    sink_events(&sink, 5, 5);
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 12);
    assert_eq!(lines[6]["event"], "log_opened");
    assert_eq!(lines[6]["reason"], "restart");
    assert_eq!(lines[6]["seq"], 6);
    assert_eq!(lines[6]["prev"], lines[5]["hash"]);
    let r = verify(std::slice::from_ref(&path), Some(&key()), None).unwrap();
    assert_eq!(r.lines, 12);
}

#[test]
fn the_chain_continues_into_a_file_rotated_by_rename() {
    let path = tmp("audit.log");
    let rotated = path.with_extension("log.1");
    let sink = Sink::open(Some(&path), Some(key())).unwrap();
    sink_events(&sink, 0, 3);
    std::fs::rename(&path, &rotated).unwrap();
    sink_events(&sink, 3, 3);
    let new = read_lines(&path);
    assert_eq!(new[0]["event"], "log_opened");
    assert_eq!(new[0]["reason"], "rotated");
    verify(&[rotated.clone(), path.clone()], Some(&key()), None).unwrap();
    // On its own the new file does not begin the chain: it verifies only after its anchor.
    let err = verify(std::slice::from_ref(&path), Some(&key()), None).unwrap_err();
    assert_eq!(err.line, 1);
    assert!(err.reason.contains("does not begin the chain"), "{err}");
    let last = verify(std::slice::from_ref(&rotated), Some(&key()), None)
        .unwrap()
        .last;
    let r = verify(std::slice::from_ref(&path), Some(&key()), last).unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("follows the anchor")),
        "{r:?}"
    );
    // SIGHUP / reload after a rename: the same, without waiting for the writer to notice.
    let second = path.with_extension("log.2");
    std::fs::rename(&path, &second).unwrap();
    sink.reopen();
    sink_events(&sink, 6, 2);
    verify(&[rotated, second, path], Some(&key()), None).unwrap();
}

#[test]
fn the_chain_continues_after_copytruncate() {
    let path = tmp("audit.log");
    let copy = path.with_extension("log.1");
    let sink = Sink::open(Some(&path), None).unwrap();
    sink_events(&sink, 0, 3);
    std::fs::copy(&path, &copy).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    sink_events(&sink, 3, 3);
    let new = read_lines(&path);
    assert_eq!(new[0]["reason"], "truncated");
    assert_eq!(new.len(), 4);
    verify(&[copy, path], None, None).unwrap();
}

/// `lines` as a file's text, and the byte offset where each line starts.
fn offsets(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .scan(0u64, |at, l| {
            let here = *at;
            *at += l.len() as u64 + 1;
            Some(here)
        })
        .collect()
}

fn restart_record(damage: Option<(u64, u64)>) -> String {
    let mut v = serde_json::json!({
        "time": "2026-01-01T00:00:01Z", "event": "log_opened", "reason": "restart",
    });
    if let Some((offset, bytes)) = damage {
        v["crash_damage"] = serde_json::json!({"offset": offset, "bytes": bytes});
    }
    v.to_string()
}

/// A log whose writer crashed in the middle of its line `k` (0-based) and restarted: the
/// partial line, then a `log_opened` record naming `damage`, then more events. What the
/// writer does on opening such a file, done by hand so the record can be forged too.
fn crashed_log(
    key: Option<&HmacKey>,
    damage: impl Fn(u64, u64) -> Option<(u64, u64)>,
) -> Vec<String> {
    let mut head = Head::default();
    let mut lines = lines_from(&mut head, key, &events(4));
    let partial = lines_from(&mut head.clone(), key, &[event(5)])[0][..40].to_owned();
    let at = offsets(&lines).last().unwrap() + lines.last().unwrap().len() as u64 + 1;
    lines.push(partial.clone());
    let record = restart_record(damage(at, partial.len() as u64));
    lines.extend(lines_from(&mut head, key, &[record, event(6), event(7)]));
    lines
}

#[test]
fn crash_damage_named_by_the_next_log_opened_is_reported_and_skipped() {
    let lines = crashed_log(Some(&key()), |o, b| Some((o, b)));
    let r = check(&lines, Some(&key())).unwrap();
    assert_eq!(r.lines, 8, "every line but the damaged one");
    assert!(r.notes.iter().any(|n| n.contains(":6, 40 bytes")), "{r:?}");
    // The chain goes on from the line before the damage: a later edit is found at its line.
    let mut edited = lines;
    edited[8] = edited[8].replace("alice", "mallory");
    assert_eq!(broken_at(&edited, Some(&key())), 9);
    assert_eq!(broken_at(&edited, None), 9);
}

#[test]
fn ocsf_crash_damage_named_by_the_next_log_opened_is_skipped_and_only_that() {
    let crashed = |damage: &dyn Fn(u64, u64) -> Option<(u64, u64)>| {
        let mut head = Head::default();
        let mut lines = ocsf_lines_from(&mut head, Some(&key()), &events(4));
        let partial =
            ocsf_lines_from(&mut head.clone(), Some(&key()), &[event(5)])[0][..40].to_owned();
        let at = offsets(&lines).last().unwrap() + lines.last().unwrap().len() as u64 + 1;
        lines.push(partial.clone());
        let record = restart_record(damage(at, partial.len() as u64));
        lines.extend(ocsf_lines_from(
            &mut head,
            Some(&key()),
            &[record, event(6), event(7)],
        ));
        lines
    };
    let lines = crashed(&|o, b| Some((o, b)));
    let r = check(&lines, Some(&key())).unwrap();
    assert_eq!(r.lines, 8, "every line but the damaged one");
    assert!(r.notes.iter().any(|n| n.contains(":6, 40 bytes")), "{r:?}");
    let err = check(&crashed(&|o, b| Some((o + 1, b))), Some(&key())).unwrap_err();
    assert_eq!(err.line, 6, "{err}");
}

#[test]
fn a_forged_crash_damage_record_does_not_excuse_a_line() {
    // The record names another offset or length: the damaged line is a break.
    for forged in [
        crashed_log(Some(&key()), |o, b| Some((o + 1, b))),
        crashed_log(Some(&key()), |o, b| Some((o, b - 1))),
        crashed_log(Some(&key()), |o, _| Some((o, 4096))),
    ] {
        let err = check(&forged, Some(&key())).unwrap_err();
        assert_eq!(err.line, 6, "{err}");
        assert!(err.reason.contains("not a chained audit line"), "{err}");
    }
    // The record names it, but was written without the key: caught at the record.
    let mut forged = crashed_log(Some(&key()), |o, b| Some((o, b)));
    let prev: serde_json::Value = serde_json::from_str(&forged[4]).unwrap();
    let mut head = Head {
        next_seq: prev["seq"].as_u64().unwrap() + 1,
        last_hash: prev["hash"].as_str().unwrap().to_owned(),
    };
    let at = offsets(&forged)[5];
    let record = restart_record(Some((at, forged[5].len() as u64)));
    let wrong = HmacKey::new(b"another key that is long enough to be accepted!").unwrap();
    forged[6] = lines_from(&mut head, Some(&wrong), &[record]).remove(0);
    let err = check(&forged, Some(&key())).unwrap_err();
    assert_eq!(err.line, 7, "{err}");
    assert!(
        err.reason.contains("HMAC") && err.reason.contains("line 6"),
        "{err}"
    );
}

#[test]
fn a_bad_line_without_a_record_naming_it_breaks_at_that_line() {
    // A restart record that says nothing about it (what a writer before this fix wrote).
    let lines = crashed_log(None, |_, _| None);
    assert_eq!(broken_at(&lines, None), 6);
    // Garbage put in the middle of a log: the line after it is an event, not a record.
    let mut lines = log(6, None);
    lines.insert(3, "{\"seq\":3,\"prev\":\"ab".into());
    assert_eq!(broken_at(&lines, None), 4);
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_restart_after_a_partial_line_records_it_and_the_rest_is_still_checked() {
    let path = tmp("audit.log");
    let sink = Sink::open(Some(&path), Some(key())).unwrap();
    sink_events(&sink, 0, 2);
    drop(sink);
    // A crash in the middle of a write.
    let before = std::fs::metadata(&path).unwrap().len();
    append(&path, b"{\"seq\":3,\"prev\":\"ab");
    let sink = Sink::open(Some(&path), Some(key())).unwrap();
    sink_events(&sink, 2, 3);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[3], "{\"seq\":3,\"prev\":\"ab", "ended with a newline");
    let record: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
    assert_eq!(record["reason"], "restart");
    assert_eq!(record["crash_damage"]["offset"], before);
    assert_eq!(record["crash_damage"]["bytes"], 19);
    let previous: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(record["prev"], previous["hash"]);
    let r = verify(std::slice::from_ref(&path), Some(&key()), None).unwrap();
    assert_eq!(r.lines, 7, "every line but the damaged one");
    assert!(r.notes.iter().any(|n| n.contains(":4, 19 bytes")), "{r:?}");
    // An edit after the damage is found at its own line.
    let edited = text.replacen("\"request_id\":\"r3\"", "\"request_id\":\"r9\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    let err = verify(std::slice::from_ref(&path), Some(&key()), None).unwrap_err();
    assert_eq!(err.line, 7, "{err}");
}

#[test]
fn a_long_partial_line_and_a_whole_line_without_its_newline() {
    // Part of a line longer than a read-back block: the line before it is still found.
    let path = tmp("audit.log");
    let sink = Sink::open(Some(&path), None).unwrap();
    sink_events(&sink, 0, 2);
    drop(sink);
    append(&path, &vec![b'x'; 200 * 1024]);
    let sink = Sink::open(Some(&path), None).unwrap();
    sink_events(&sink, 2, 1);
    drop(sink);
    let r = verify(std::slice::from_ref(&path), None, None).unwrap();
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains(&format!(":4, {} bytes", 200 * 1024))),
        "{r:?}"
    );
    // A write cut exactly before its newline left a whole line: it is the chain's last line.
    let path = tmp("audit.log");
    let sink = Sink::open(Some(&path), None).unwrap();
    sink_events(&sink, 0, 2);
    drop(sink);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.pop();
    std::fs::write(&path, &text).unwrap();
    let sink = Sink::open(Some(&path), None).unwrap();
    sink_events(&sink, 2, 1);
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[3]["prev"], lines[2]["hash"]);
    assert!(lines[3].get("crash_damage").is_none());
    let r = verify(std::slice::from_ref(&path), None, None).unwrap();
    assert!(r.notes.is_empty(), "{r:?}");
}

#[test]
fn a_log_cut_before_its_latest_restart_fails_unless_anchored() {
    let path = tmp("audit.log");
    let sink = Sink::open(Some(&path), Some(key())).unwrap();
    sink_events(&sink, 0, 3);
    drop(sink);
    let sink = Sink::open(Some(&path), Some(key())).unwrap();
    sink_events(&sink, 3, 2);
    drop(sink);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let anchor: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
    let anchor = (
        anchor["seq"].as_u64().unwrap(),
        anchor["hash"].as_str().unwrap().to_owned(),
    );
    // Everything before the restart cut: the rest is a well-formed chain, but not a start.
    std::fs::write(&path, lines[4..].join("\n") + "\n").unwrap();
    let err = verify(std::slice::from_ref(&path), Some(&key()), None).unwrap_err();
    assert_eq!(err.line, 1);
    assert!(err.reason.contains("does not begin the chain"), "{err}");
    let r = verify(
        std::slice::from_ref(&path),
        Some(&key()),
        Some(anchor.clone()),
    )
    .unwrap();
    assert_eq!(r.lines, 3);
    // The wrong anchor, or more cut than the anchor says: a break at line 1.
    for wrong in [
        (anchor.0 - 1, anchor.1.clone()),
        (anchor.0, GENESIS.to_owned()),
    ] {
        let err = verify(std::slice::from_ref(&path), Some(&key()), Some(wrong)).unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.reason.contains("does not follow the anchor"), "{err}");
    }
    std::fs::write(&path, lines[5..].join("\n") + "\n").unwrap();
    assert!(verify(std::slice::from_ref(&path), Some(&key()), Some(anchor)).is_err());
    // A whole log given with an anchor is not the log after it.
    std::fs::write(&path, text).unwrap();
    let err = verify(
        std::slice::from_ref(&path),
        None,
        Some((0, GENESIS.to_owned())),
    )
    .unwrap_err();
    assert_eq!(err.line, 1);
}

// === properties ===

#[derive(Debug, Clone)]
enum Tamper {
    Edit,
    Delete,
    Swap,
    InsertCopy(usize),
    InsertForged,
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        Just(Tamper::Edit),
        Just(Tamper::Delete),
        Just(Tamper::Swap),
        (0usize..64).prop_map(Tamper::InsertCopy),
        Just(Tamper::InsertForged),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any single edit, deletion, swap or insertion is reported at the line where it
    /// happened (0-based `k` is 1-based line `k + 1`). Deleting the last line is the one
    /// change a chain cannot see (anchor the last hash elsewhere), so it is not generated.
    #[test]
    fn any_single_change_is_caught_at_its_line(
        n in 2usize..40, k in 0usize..40, t in tamper(), keyed: bool, ocsf: bool,
    ) {
        let key = key();
        let key = keyed.then_some(&key);
        let mut lines = log_as(ocsf, n, key);
        let k = k % lines.len();
        let expected = match &t {
            Tamper::Edit => {
                lines[k] = if ocsf {
                    lines[k].replacen("\"version\":\"1.8.0\"", "\"version\":\"1.8.1\"", 1)
                } else {
                    lines[k].replacen("\"time\":\"2026", "\"time\":\"2025", 1)
                };
                k
            }
            Tamper::Delete => {
                let k = k.min(lines.len() - 2);
                lines.remove(k);
                k
            }
            Tamper::Swap => {
                let k = k.min(lines.len() - 2);
                lines.swap(k, k + 1);
                k
            }
            Tamper::InsertCopy(j) => {
                let j = j % lines.len();
                let copy = lines[j].clone();
                lines.insert(k, copy);
                // A copy of line k put before it is the same file as one put after it.
                if j == k { k + 1 } else { k }
            }
            Tamper::InsertForged => {
                // A line with the right seq and prev, hashed correctly (without the key).
                if k == 0 {
                    lines.insert(0, log_as(ocsf, 0, None).remove(0));
                    // A forged start: only the HMAC or the next line's link can tell.
                    if key.is_some() { 0 } else { 1 }
                } else {
                    let mut head = head_after(&lines[k - 1]);
                    let forged = lines_as(ocsf, &mut head, None, &[event(77)]);
                    lines.insert(k, forged[0].clone());
                    if key.is_some() { k } else { k + 1 }
                }
            }
        };
        let got = match check(&lines, key) {
            Ok(r) => return Err(TestCaseError::fail(format!("{t:?} at {k} not caught: {r:?}"))),
            Err(b) => b.line,
        };
        prop_assert_eq!(got, expected as u64 + 1, "{:?} at {}", t, k);
    }

    /// With the key, rewriting everything from any line on (hashes recomputed, HMACs
    /// without the key) is caught at the first rewritten line.
    #[test]
    fn a_recomputed_tail_is_caught_with_the_key(n in 2usize..30, k in 1usize..30) {
        let lines = log(n, Some(&key()));
        let k = 1 + (k - 1) % (lines.len() - 1);
        let forged = recomputed(&lines, k, None);
        prop_assert!(check(&forged, None).is_ok());
        prop_assert_eq!(check(&forged, Some(&key())).unwrap_err().line, k as u64 + 1);
    }
}
