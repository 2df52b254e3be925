//! The hash chain that makes the audit log evidence.
//!
//! Every line the writer emits is the event's JSON object with four keys around it:
//!
//! ```text
//! {"seq":41,"prev":"<sha256 of line 40>", ...event..., "hash":"<sha256>","hmac":"<hmac-sha256>"}
//! ```
//!
//! The *canonical bytes* of a line are the line without its `hash` and `hmac` members (the
//! text up to them, then `}`); `hash` is their SHA-256 and `hmac` (present only when a key is
//! configured) the HMAC-SHA256 of that hash (hash-then-MAC: one SHA-256 pass over the line,
//! then two blocks for the MAC). The next line's `prev` is this line's `hash`, so a line
//! edited, deleted, reordered or inserted breaks the chain where it happened, and without
//! the key nobody can recompute a chain that still verifies.
//!
//! An OCSF line (`[audit] format = "ocsf"`, [`seal_ocsf`]) carries the same four members as
//! the last ones of its `unmapped` object, itself the line's last member:
//!
//! ```text
//! {...event...,"unmapped":{...,"seq":41,"prev":"<sha256>","hash":"<sha256>","hmac":"<mac>"}}
//! ```
//!
//! and its canonical bytes are the line up to its `hash` member, then `}}`. [`verify`] tells
//! the formats apart line by line (`seq` first, or `unmapped` last), so a log whose format
//! changed on a reload verifies across the change.
//!
//! Whenever the writer opens a file (start, restart, reload/SIGHUP, rotation detected) it
//! first writes a `log_opened` record that links to the last line written before, possibly
//! in another file: the chain runs across restarts and rotated files. A file that ends in
//! part of a line (a crash mid-write) gets its newline first, and the record names that
//! line (`"crash_damage":{"offset":O,"bytes":N}`) so that a verifier can tell it from an edit.
//!
//! [`verify`] walks one or more files in order and reports the first line that breaks: the
//! first line given must begin the chain, or follow an anchor kept elsewhere.

use std::io::{BufRead, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `prev` of the very first line of a log: there is nothing before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` + 64 hex digits + `"`.
const HASH_MEMBER: usize = 9 + 64 + 1;
/// `,"hmac":"` + 64 hex digits + `"`.
const HMAC_MEMBER: usize = 9 + 64 + 1;

/// The key that authenticates each line, from `[audit] hmac_key_env` / `hmac_key_file`.
#[derive(Clone)]
pub struct HmacKey(Hmac<Sha256>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

/// Keys shorter than this are refused: the HMAC is only as strong as its key.
pub(crate) const MIN_KEY_BYTES: usize = 32;

impl HmacKey {
    /// Wraps key material (at least [`MIN_KEY_BYTES`] bytes).
    ///
    /// # Errors
    /// When the key is too short.
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the audit HMAC key must be at least {MIN_KEY_BYTES} bytes"
            ));
        }
        // HMAC accepts keys of any length: this cannot fail. The keyed state is computed once.
        <Hmac<Sha256> as Mac>::new_from_slice(bytes)
            .map(Self)
            .map_err(|_| "unusable HMAC key".to_owned())
    }

    /// Reads key material from a file (a trailing newline is not part of the key).
    ///
    /// # Errors
    /// When the file cannot be read or the key is too short.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        Self::new(&bytes[..end])
    }

    fn mac(&self, digest: &[u8; 32]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(digest);
        mac.finalize().into_bytes().into()
    }
}

/// The writer's position in the chain: the next sequence number and the last line's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The sequence number the next line gets.
    pub next_seq: u64,
    /// The hash of the last line written (hex), [`GENESIS`] before the first.
    pub last_hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            next_seq: 0,
            last_hash: GENESIS.to_owned(),
        }
    }
}

/// Appends the chained form of `event` (a serialised JSON object) to `out`, newline included,
/// and advances `head`. The writer thread's whole per-line cost (public for the benchmark).
pub fn seal(head: &mut Head, key: Option<&HmacKey>, event: &str, out: &mut Vec<u8>) {
    let inner = event
        .trim_end()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or("");
    let start = out.len();
    out.push(b'{');
    push_seq_prev(head, out);
    if !inner.is_empty() {
        out.push(b',');
        out.extend_from_slice(inner.as_bytes());
    }
    out.push(b'}');
    finish(head, key, out, start, b"}");
}

/// Appends the chained form of an OCSF event to `out`, newline included, and advances `head`:
/// `event` is the event without `unmapped` (a JSON object), `unmapped` the members that go
/// there (a JSON object, possibly empty). The chain's members close `unmapped`:
///
/// ```text
/// {...event...,"unmapped":{...,"seq":41,"prev":"<sha256>","hash":"<sha256>","hmac":"<mac>"}}
/// ```
///
/// The canonical bytes are the line without its `hash` and `hmac` members, as in [`seal`].
pub fn seal_ocsf(
    head: &mut Head,
    key: Option<&HmacKey>,
    event: &str,
    unmapped: &str,
    out: &mut Vec<u8>,
) {
    let inner = |s: &str| -> String {
        s.trim()
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or("")
            .to_owned()
    };
    let (event, unmapped) = (inner(event), inner(unmapped));
    let start = out.len();
    out.push(b'{');
    if !event.is_empty() {
        out.extend_from_slice(event.as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"unmapped\":{");
    if !unmapped.is_empty() {
        out.extend_from_slice(unmapped.as_bytes());
        out.push(b',');
    }
    push_seq_prev(head, out);
    out.extend_from_slice(b"}}");
    finish(head, key, out, start, b"}}");
}

/// Appends the chain's leading members, `"seq":N,"prev":"<hash>"`, for the line `head` is at.
fn push_seq_prev(head: &Head, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"seq\":");
    let _ = write!(out, "{}", head.next_seq);
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(head.last_hash.as_bytes());
    out.push(b'"');
}

/// Seals the line being built in `out[start..]`, both formats: those bytes are its canonical
/// form, ending in `closing` (`}` for entitygate's, `}}` for OCSF's). Hashes (and MACs) them,
/// puts `hash` and `hmac` before `closing`, ends the line and advances `head`.
fn finish(head: &mut Head, key: Option<&HmacKey>, out: &mut Vec<u8>, start: usize, closing: &[u8]) {
    let digest: [u8; 32] = Sha256::digest(&out[start..]).into();
    let mac = key.map(|k| k.mac(&digest));
    out.truncate(out.len() - closing.len());
    let hash = hex(&digest);
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hash.as_bytes());
    out.push(b'"');
    if let Some(mac) = mac {
        out.extend_from_slice(b",\"hmac\":\"");
        out.extend_from_slice(hex(&mac).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(closing);
    out.push(b'\n');
    head.next_seq += 1;
    head.last_hash = hash;
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The parts of one chained line, split without trusting it.
struct Parsed<'a> {
    seq: u64,
    prev: String,
    hash: &'a str,
    hmac: Option<&'a str>,
    canonical: Vec<u8>,
    opened: bool,
}

/// Splits a line (no newline) into its canonical bytes and chain fields, in either format:
/// entitygate's (`seq` and `prev` first, `hash` and `hmac` last) or OCSF (all four ending
/// `unmapped`, the last member).
fn parse(line: &str) -> Result<Parsed<'_>, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object ({e})"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let opened = obj
        .get("event")
        .or_else(|| value.pointer("/metadata/event_code"))
        .and_then(serde_json::Value::as_str)
        == Some("log_opened");
    let parsed = if obj.keys().next().map(String::as_str) == Some("seq") {
        parse_members(line, obj, 1)
    } else {
        let (last, unmapped) = obj.iter().next_back().ok_or("an empty object")?;
        let unmapped = unmapped
            .as_object()
            .filter(|_| last == "unmapped")
            .ok_or("neither an entitygate line (seq first) nor an OCSF one (unmapped last)")?;
        parse_members(line, unmapped, 2)
    };
    parsed.map(|p| Parsed { opened, ..p })
}

/// Reads the chain members of `obj` (the line itself, or its `unmapped`), whose text ends
/// the line followed by `closing` closing braces.
fn parse_members<'a>(
    line: &'a str,
    obj: &serde_json::Map<String, serde_json::Value>,
    closing: usize,
) -> Result<Parsed<'a>, String> {
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let has_hmac = keys.last() == Some(&"hmac");
    let hash_at = if has_hmac {
        keys.len().checked_sub(2)
    } else {
        keys.len().checked_sub(1)
    };
    let Some(hash_at) = hash_at.filter(|&i| keys.get(i) == Some(&"hash")) else {
        return Err("does not end with its hash".into());
    };
    // entitygate's lines start with seq and prev; OCSF's have them just before the hash.
    let (seq_at, prev_at) = if closing == 1 {
        (Some(0), Some(1))
    } else {
        (hash_at.checked_sub(2), hash_at.checked_sub(1))
    };
    if seq_at.and_then(|i| keys.get(i)) != Some(&"seq")
        || prev_at.and_then(|i| keys.get(i)) != Some(&"prev")
    {
        return Err(if closing == 1 {
            "does not start with seq and prev".into()
        } else {
            "unmapped does not end with seq, prev and hash".into()
        });
    }
    let seq = obj
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .ok_or("seq is not a number")?;
    let prev = obj
        .get("prev")
        .and_then(serde_json::Value::as_str)
        .filter(|p| is_hex64(p))
        .ok_or("prev is not a SHA-256")?
        .to_owned();
    // The members are at the end of the text too (serde_json would have accepted spaces or
    // escapes): take them by position and check they are exactly what the writer writes.
    let suffix = HASH_MEMBER + if has_hmac { HMAC_MEMBER } else { 0 } + closing;
    let cut = line
        .len()
        .checked_sub(suffix)
        .filter(|&c| line.is_char_boundary(c))
        .ok_or("too short")?;
    let tail = &line[cut..];
    let hash = tail
        .strip_prefix(",\"hash\":\"")
        .map(|t| &t[..64.min(t.len())])
        .filter(|h| is_hex64(h))
        .ok_or("hash member is not in canonical form")?;
    let hmac = if has_hmac {
        let t = &tail[HASH_MEMBER..];
        Some(
            t.strip_prefix(",\"hmac\":\"")
                .map(|t| &t[..64.min(t.len())])
                .filter(|h| is_hex64(h))
                .ok_or("hmac member is not in canonical form")?,
        )
    } else {
        None
    };
    let braces = &"}}"[..closing];
    if tail.get(tail.len() - closing - 1..) != Some(&format!("\"{braces}")) {
        return Err("hash member is not in canonical form".into());
    }
    let mut canonical = Vec::with_capacity(cut + closing);
    canonical.extend_from_slice(&line.as_bytes()[..cut]);
    canonical.extend_from_slice(braces.as_bytes());
    Ok(Parsed {
        seq,
        prev,
        hash,
        hmac,
        canonical,
        opened: false,
    })
}

/// A last line cut short (a crash in the middle of a write): where it starts in the file and
/// its length, without the newline the writer adds after it on the next open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// Its length in bytes.
    pub bytes: u64,
}

/// What the end of an existing file holds, read before appending to it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Where the chain stands after the last intact line, `None` when there is none.
    pub head: Option<Head>,
    /// The file does not end with a newline: the next write must start with one, or the
    /// first line appended would be glued to the bytes before it.
    pub unterminated: bool,
    /// The last bytes are a line cut short, to be recorded in the next `log_opened`.
    pub damage: Option<Damage>,
}

/// The longest line read back whole from the end of a file: far above any line the writer
/// makes (a query is cut at 2 KiB), small enough that opening a strange file costs little.
const MAX_TAIL_LINE: u64 = 1 << 20;

/// Reads where the chain of an existing file stands: its last intact line's `seq + 1` and
/// hash, and whether a crash left part of a line after it. An empty or missing file gives
/// no head; a last line that is not a chained line (a log written before chaining, or
/// damaged) gives its SHA-256 so the link is still recorded, and sequence numbers start
/// again at 0.
pub(crate) fn tail_of(path: &Path) -> std::io::Result<Tail> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tail::default()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Tail::default());
    }
    let mut tail = Tail::default();
    // The end of the last newline-terminated line (the position of its newline).
    let mut complete_end = Some(len - 1);
    if read_range(&mut file, len - 1, len)? != b"\n" {
        tail.unterminated = true;
        let newline = rfind_newline(&mut file, len)?;
        let start = newline.map_or(0, |i| i + 1);
        let rest = len - start;
        // A write cut exactly before its newline left a whole line: nothing is damaged.
        let whole = if rest <= MAX_TAIL_LINE {
            intact(&read_range(&mut file, start, len)?)
        } else {
            None
        };
        match whole {
            Some(head) => {
                tail.head = Some(head);
                return Ok(tail);
            }
            None => {
                tail.damage = Some(Damage {
                    offset: start,
                    bytes: rest,
                });
                complete_end = newline;
            }
        }
    }
    let Some(end) = complete_end else {
        return Ok(tail);
    };
    let start = rfind_newline(&mut file, end)?.map_or(0, |i| i + 1);
    let last = read_range(&mut file, start.max(end.saturating_sub(MAX_TAIL_LINE)), end)?;
    tail.head = Some(
        match std::str::from_utf8(&last).ok().and_then(|l| parse(l).ok()) {
            Some(p) => Head {
                next_seq: p.seq + 1,
                last_hash: p.hash.to_owned(),
            },
            None => Head {
                next_seq: 0,
                last_hash: hex(&Sha256::digest(&last)),
            },
        },
    );
    Ok(tail)
}

/// The chain position after `line` when it is a chained line whose hash matches.
fn intact(line: &[u8]) -> Option<Head> {
    let p = parse(std::str::from_utf8(line).ok()?).ok()?;
    (hex(&Sha256::digest(&p.canonical)) == p.hash).then(|| Head {
        next_seq: p.seq + 1,
        last_hash: p.hash.to_owned(),
    })
}

fn read_range(file: &mut std::fs::File, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    Read::take(&mut *file, to - from).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The position of the last newline before `end`, read backwards a block at a time, so a
/// file of any size is searched in constant memory.
fn rfind_newline(file: &mut std::fs::File, end: u64) -> std::io::Result<Option<u64>> {
    const BLOCK: u64 = 64 * 1024;
    let mut to = end;
    while to > 0 {
        let from = to.saturating_sub(BLOCK);
        let block = read_range(file, from, to)?;
        if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(from + i as u64));
        }
        to = from;
    }
    Ok(None)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lines checked, in all files.
    pub lines: u64,
    /// The last line's sequence number and hash (anchor them elsewhere: a chain cannot prove
    /// that lines were not cut off its end).
    pub last: Option<(u64, String)>,
    /// Whether HMACs were checked.
    pub hmac_checked: bool,
    /// Things worth saying that do not break the chain.
    pub notes: Vec<String>,
}

/// The first place a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The file.
    pub file: PathBuf,
    /// The line number in that file (1-based).
    pub line: u64,
    /// What is wrong there.
    pub reason: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Verifies the chain through `files`, in the order given (oldest first), and with `key`
/// the HMAC of every line.
///
/// The first line must begin the chain (`seq` 0, `prev` [`GENESIS`]): a file whose start
/// was cut, or that continues a file not given, fails at its line 1. With `after` (the `seq`
/// and hash of the line just before the first one given, kept elsewhere: a checkpoint, an
/// earlier `verify`), the first line must be the one that follows it instead.
///
/// A line that cannot be read as a chained line is crash damage, reported in
/// [`Report::notes`] and skipped, only when the next line is a `log_opened` record naming
/// exactly its offset and length (`crash_damage`): that record is itself hashed (and
/// HMAC'd), so the excuse cannot be written for an edited line without breaking the chain
/// there.
///
/// # Errors
/// The first line that breaks the chain, or a file that cannot be read.
pub fn verify(
    files: &[PathBuf],
    key: Option<&HmacKey>,
    after: Option<(u64, String)>,
) -> Result<Report, Break> {
    let mut walk = Walk {
        key,
        after,
        report: Report {
            lines: 0,
            last: None,
            hmac_checked: key.is_some(),
            notes: Vec::new(),
        },
        unkeyed_hmac_seen: false,
    };
    for file in files {
        walk.file(file)?;
    }
    let mut report = walk.report;
    if walk.unkeyed_hmac_seen {
        report
            .notes
            .push("lines carry HMACs that were not checked (no key given)".into());
    }
    Ok(report)
}

/// One line as read from a file.
struct RawLine {
    /// Its number in the file (1-based).
    n: u64,
    /// The byte offset of its first byte.
    offset: u64,
    /// Its bytes, without the newline.
    bytes: Vec<u8>,
    /// Whether it ended with a newline (only the last line of a file may not).
    terminated: bool,
}

fn read_line(
    reader: &mut impl BufRead,
    n: &mut u64,
    offset: &mut u64,
) -> std::io::Result<Option<RawLine>> {
    let mut bytes = Vec::new();
    let read = reader.read_until(b'\n', &mut bytes)?;
    if read == 0 {
        return Ok(None);
    }
    *n += 1;
    let line_offset = *offset;
    *offset += read as u64;
    let terminated = bytes.last() == Some(&b'\n');
    if terminated {
        bytes.pop();
    }
    Ok(Some(RawLine {
        n: *n,
        offset: line_offset,
        bytes,
        terminated,
    }))
}

/// Whether `next` is a `log_opened` record naming a damaged line at `offset` of `bytes`
/// bytes. Only what it claims: the record itself is checked as the next line.
fn records_damage(next: &RawLine, offset: u64, bytes: usize) -> bool {
    use serde_json::Value;
    if !next.terminated {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&next.bytes) else {
        return false;
    };
    let (kind, damage) = match v.get("unmapped") {
        // OCSF: the kind in metadata.event_code, the damage kept under unmapped.
        Some(u) => (v.pointer("/metadata/event_code"), u.get("crash_damage")),
        None => (v.get("event"), v.get("crash_damage")),
    };
    kind.and_then(Value::as_str) == Some("log_opened")
        && damage.and_then(|d| d.get("offset")).and_then(Value::as_u64) == Some(offset)
        && damage.and_then(|d| d.get("bytes")).and_then(Value::as_u64) == Some(bytes as u64)
}

/// The state of one `verify` across its files.
struct Walk<'k> {
    key: Option<&'k HmacKey>,
    after: Option<(u64, String)>,
    report: Report,
    unkeyed_hmac_seen: bool,
}

impl Walk<'_> {
    fn file(&mut self, file: &Path) -> Result<(), Break> {
        let brk = |line: u64, reason: String| Break {
            file: file.to_owned(),
            line,
            reason,
        };
        let f = std::fs::File::open(file).map_err(|e| brk(0, format!("cannot read: {e}")))?;
        let mut reader = std::io::BufReader::new(f);
        let (mut n, mut offset) = (0u64, 0u64);
        let mut read = |reader: &mut std::io::BufReader<std::fs::File>| {
            let at = n + 1;
            read_line(reader, &mut n, &mut offset).map_err(|e| brk(at, format!("cannot read: {e}")))
        };
        // One line ahead: a damaged line is judged by the record that follows it.
        let mut next = read(&mut reader)?;
        // The damaged line the current one excuses, if any.
        let mut excused: Option<u64> = None;
        while let Some(line) = next.take() {
            next = read(&mut reader)?;
            let n = line.n;
            if !line.terminated {
                return Err(brk(
                    n,
                    "truncated tail: the last line is incomplete (no newline)".into(),
                ));
            }
            let parsed = std::str::from_utf8(&line.bytes)
                .map_err(|_| "not UTF-8: edited or damaged".to_owned())
                .and_then(|l| parse(l).map_err(|e| format!("not a chained audit line: {e}")));
            let p = match parsed {
                Ok(p) => p,
                Err(reason) => {
                    if next
                        .as_ref()
                        .is_some_and(|r| records_damage(r, line.offset, line.bytes.len()))
                    {
                        self.report.notes.push(format!(
                            "crash damage at {}:{n}, {} bytes (a write cut short; recorded by \
                             the log_opened record on the next line)",
                            file.display(),
                            line.bytes.len()
                        ));
                        excused = Some(n);
                        continue;
                    }
                    return Err(brk(n, reason));
                }
            };
            if let Err(reason) = self.check(&p, file, n) {
                return Err(brk(
                    n,
                    match excused {
                        Some(d) => format!(
                            "{reason}; this record names line {d} as crash damage, so that \
                             line is not excused"
                        ),
                        None => reason,
                    },
                ));
            }
            excused = None;
            self.report.lines += 1;
            self.report.last = Some((p.seq, p.hash.to_owned()));
        }
        Ok(())
    }

    /// Checks one parsed line: its hash, its HMAC, and its link to the line before.
    fn check(&mut self, p: &Parsed<'_>, file: &Path, n: u64) -> Result<(), String> {
        let raw: [u8; 32] = Sha256::digest(&p.canonical).into();
        if hex(&raw) != p.hash {
            return Err("edited: the line's content does not match its hash".into());
        }
        match (self.key, p.hmac) {
            (Some(k), Some(mac)) => {
                if hex(&k.mac(&raw)) != mac {
                    return Err(
                        "HMAC does not match: the line was not written with this key \
                                (edited, inserted, or the chain recomputed)"
                            .into(),
                    );
                }
            }
            (Some(_), None) => {
                return Err("no HMAC, but a key was given: written without the key".into())
            }
            (None, Some(_)) => self.unkeyed_hmac_seen = true,
            (None, None) => {}
        }
        let Some((last_seq, last_hash)) = &self.report.last else {
            return self.check_first(p, file, n);
        };
        if p.seq == 0 && p.prev == GENESIS {
            return Err("a new chain starts here: the log before it was lost or replaced".into());
        }
        let expected = last_seq + 1;
        if p.seq > expected {
            return Err(format!(
                "seq {} where {expected} was expected: {} line(s) before this one were deleted \
                 (or moved)",
                p.seq,
                p.seq - expected
            ));
        }
        if p.seq < expected {
            return Err(format!(
                "seq {} where {expected} was expected: this line is out of order or inserted",
                p.seq
            ));
        }
        if &p.prev != last_hash {
            return Err(if n == 1 {
                format!(
                    "does not follow the previous file's last line (prev {}, expected \
                     {last_hash}): lines were lost at rotation, or the files are out of order",
                    p.prev
                )
            } else {
                "does not follow the line before it: that line was edited, or this one was \
                 inserted"
                    .into()
            });
        }
        Ok(())
    }

    /// The first line given: the start of the chain, or the line after the anchor.
    fn check_first(&mut self, p: &Parsed<'_>, file: &Path, n: u64) -> Result<(), String> {
        match &self.after {
            None => {
                if !p.opened {
                    return Err(
                        "the log does not begin with a log_opened record: lines before \
                                this one were removed"
                            .into(),
                    );
                }
                if p.seq != 0 || p.prev != GENESIS {
                    // A restart or rotation record: what came before it is not here.
                    return Err(format!(
                        "does not begin the chain (seq {}, prev {}): the lines before it were \
                         cut, or it continues a file not given; give the earlier file first, \
                         or the anchor it must follow with --after SEQ:HASH",
                        p.seq, p.prev
                    ));
                }
            }
            Some((seq, hash)) => {
                if Some(p.seq) != seq.checked_add(1) || &p.prev != hash {
                    return Err(format!(
                        "does not follow the anchor {seq}:{hash} (seq {}, prev {}): lines after \
                         the anchor were cut, or the anchor is from another log",
                        p.seq, p.prev
                    ));
                }
                self.report.notes.push(format!(
                    "{}:{n}: follows the anchor {seq}:{hash}",
                    file.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
