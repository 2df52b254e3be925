//! The console's view of recent decisions: a copy of each audit line, handed from the request
//! path to one consumer task over a bounded channel, kept in a ring of bounded size, counted
//! into per-minute refusal buckets for the last hour, and broadcast to the live pages. The
//! consumer only skims a line for its decision and toolkit; a line is read in full when a
//! page shows it or an open Live decisions page is sent it.
//!
//! The request path pays for one copy of the line it has already serialised and one
//! `try_send` (lock-free unless the channel is full; never waits). Until a console is
//! started the feed is off and costs one relaxed atomic load. A full channel drops the copy
//! and counts it: the audit log still has the line, the console says how many it missed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// Lines waiting for the consumer task before new ones are dropped.
const CHANNEL: usize = 1024;
/// Longest line copied into the feed (the audit log keeps longer ones).
pub const MAX_LINE: usize = 8 * 1024;
/// Longest line kept as it is; a longer one is kept with its fields cut (see [`MAX_FIELD`]).
pub const MAX_KEPT: usize = 4608;
/// Longest value kept of any one field of a decision.
pub const MAX_FIELD: usize = 256;
/// Longest path or query kept.
pub const MAX_TARGET: usize = 512;
/// Minutes of refusal counts kept.
const MINUTES: u64 = 60;
/// Distinct slugs or toolkits counted per minute; the rest are counted as `(other)`.
const MAX_KEYS: usize = 200;
/// Live subscribers' backlog before they skip ahead.
const LIVE_BACKLOG: usize = 256;

/// One decision as the console shows it (fields capped, see [`MAX_FIELD`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Decision {
    /// Position in the feed (assigned by the consumer, increasing).
    pub seq: u64,
    /// RFC 3339 time of the decision.
    pub time: String,
    /// The `x-request-id`.
    pub request_id: String,
    /// The verified subject.
    pub subject: Option<String>,
    /// HTTP method.
    pub method: String,
    /// The canonical path, when it was canonical.
    pub path: Option<String>,
    /// The query as sent (secrets redacted by the audit record).
    pub query: Option<String>,
    /// Matched route pattern.
    pub route: String,
    /// The route's policy.
    pub policy: String,
    /// Tool slug.
    pub tool: Option<String>,
    /// Toolkit slug.
    pub toolkit: Option<String>,
    /// Connected account named.
    pub connected_account_id: Option<String>,
    /// `allow`, or the refusal's slug.
    pub decision: String,
    /// Composio error code (0 when allowed).
    pub code: u32,
    /// The caller named another user.
    pub identity_rewritten: bool,
    /// The tool-policy rule that decided.
    pub rule: Option<String>,
    /// Status answered.
    pub status: u16,
    /// Composio's status.
    pub upstream_status: Option<u16>,
    /// Latency in milliseconds.
    pub latency_ms: f64,
    /// W3C trace id.
    pub trace_id: Option<String>,
}

impl Decision {
    /// Whether this decision refused the request.
    pub fn refused(&self) -> bool {
        self.decision != "allow"
    }

    fn cap(&mut self) {
        for f in [&mut self.time, &mut self.request_id, &mut self.method]
            .into_iter()
            .chain([&mut self.route, &mut self.policy, &mut self.decision])
        {
            cut(f, MAX_FIELD);
        }
        for f in [
            &mut self.subject,
            &mut self.tool,
            &mut self.toolkit,
            &mut self.connected_account_id,
            &mut self.rule,
            &mut self.trace_id,
        ]
        .into_iter()
        .flatten()
        {
            cut(f, MAX_FIELD);
        }
        for f in [&mut self.path, &mut self.query].into_iter().flatten() {
            cut(f, MAX_TARGET);
        }
    }

    /// Whether the decision matches every non-empty filter (case-insensitive substring).
    pub fn matches(&self, f: &Filter) -> bool {
        fn has(value: Option<&str>, want: &str) -> bool {
            want.is_empty()
                || value.is_some_and(|v| v.to_lowercase().contains(&want.to_lowercase()))
        }
        has(self.subject.as_deref(), &f.subject)
            && has(Some(&self.decision), &f.slug)
            && has(self.toolkit.as_deref(), &f.toolkit)
            && has(self.tool.as_deref(), &f.tool)
            && (!f.refused_only || self.refused())
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
    s.shrink_to_fit();
}

/// What the Live decisions page filters on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// Part of the subject.
    pub subject: String,
    /// Part of the decision (`allow` or a refusal slug).
    pub slug: String,
    /// Part of the toolkit.
    pub toolkit: String,
    /// Part of the tool slug.
    pub tool: String,
    /// Refusals only.
    #[serde(deserialize_with = "checkbox")]
    pub refused_only: bool,
}

fn checkbox<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    Ok(matches!(s.as_str(), "on" | "true" | "1"))
}

/// Refusal counts of one minute.
#[derive(Debug, Default)]
struct Minute {
    at: u64,
    by_slug: HashMap<String, u64>,
    by_toolkit: HashMap<String, u64>,
    total: u64,
    decisions: u64,
}

fn bump(map: &mut HashMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_KEYS {
        map.insert(key.to_owned(), 1);
    } else {
        *map.entry("(other)".to_owned()).or_default() += 1;
    }
}

/// The refusal counts of the last hour.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Refusals {
    /// `(slug, count)`, largest first.
    pub by_slug: Vec<(String, u64)>,
    /// `(toolkit, count)`, largest first (`(none)` for refusals before a toolkit was known).
    pub by_toolkit: Vec<(String, u64)>,
    /// Refusals counted.
    pub total: u64,
    /// Decisions counted (allowed ones included).
    pub decisions: u64,
    /// Refusals per minute, oldest first (60 values).
    pub per_minute: Vec<u64>,
}

/// One kept decision: the audit line itself (read into a [`Decision`] only when a page or a
/// live subscriber needs it, so a console nobody watches costs a skim of each line).
#[derive(Debug)]
struct Entry {
    seq: u64,
    line: Arc<str>,
}

impl Entry {
    fn footprint(&self) -> usize {
        std::mem::size_of::<Self>() + 2 * std::mem::size_of::<usize>() + self.line.len()
    }

    fn decision(&self) -> Option<Decision> {
        let mut d = serde_json::from_str::<Decision>(&self.line).ok()?;
        d.cap();
        d.seq = self.seq;
        Some(d)
    }
}

/// The two fields the refusal counts need, borrowed from the line.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    decision: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    toolkit: Option<std::borrow::Cow<'a, str>>,
}

/// What the consumer keeps, behind one lock that only it and page readers take.
#[derive(Debug, Default)]
struct Kept {
    ring: VecDeque<Entry>,
    capacity: usize,
    bytes: usize,
    minutes: VecDeque<Minute>,
    next_seq: u64,
}

/// The feed. Owned by the audit sink (so every decision reaches it) and shared with the
/// console.
#[derive(Debug)]
pub struct Feed {
    on: AtomicBool,
    tx: mpsc::Sender<String>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
    /// Lines not taken because the channel was full or the line too long.
    missed: AtomicU64,
    kept: Mutex<Kept>,
    live: broadcast::Sender<Arc<Decision>>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    /// A feed that is off until [`Feed::start`].
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        Self {
            on: AtomicBool::new(false),
            tx,
            rx: Mutex::new(Some(rx)),
            missed: AtomicU64::new(0),
            kept: Mutex::new(Kept::default()),
            live,
        }
    }

    /// Whether a console consumes the feed.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The request path: offers one serialised audit line. Never waits.
    #[inline]
    pub fn offer(&self, line: &str) {
        if !self.is_on() {
            return;
        }
        if line.len() > MAX_LINE || self.tx.try_send(line.to_owned()).is_err() {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the ring's size without starting the consumer (tests and benchmarks).
    #[doc(hidden)]
    pub fn set_capacity(&self, capacity: usize) {
        self.lock().capacity = capacity.max(1);
    }

    /// Starts the consumer task keeping the last `capacity` decisions (once; later calls
    /// only resize). Needs a Tokio runtime.
    pub fn start(self: &Arc<Self>, capacity: usize) {
        self.lock().capacity = capacity.max(1);
        let Some(mut rx) = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let feed = Arc::downgrade(self);
        self.on.store(true, Ordering::Relaxed);
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let Some(feed) = feed.upgrade() else { return };
                feed.consume(&line, crate::clock::unix_now());
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one line (the consumer task; tests and benchmarks call it directly).
    #[doc(hidden)]
    pub fn consume(&self, line: &str, now_secs: u64) {
        let Ok(peek) = serde_json::from_str::<Peek<'_>>(line) else {
            self.missed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A long line is kept with its fields cut, so the ring's bound holds.
        let line: Arc<str> = if line.len() > MAX_KEPT {
            let Ok(mut d) = serde_json::from_str::<Decision>(line) else {
                self.missed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            d.cap();
            Arc::from(serde_json::to_string(&d).unwrap_or_default())
        } else {
            Arc::from(line)
        };
        let refused = peek.decision != "allow";
        let entry = {
            let mut k = self.lock();
            k.next_seq += 1;
            let entry = Entry {
                seq: k.next_seq,
                line,
            };
            let minute = now_secs / 60;
            if k.minutes.back().is_none_or(|m| m.at != minute) {
                k.minutes.push_back(Minute {
                    at: minute,
                    ..Minute::default()
                });
            }
            while k.minutes.front().is_some_and(|m| m.at + MINUTES <= minute) {
                k.minutes.pop_front();
            }
            if let Some(m) = k.minutes.back_mut() {
                m.decisions += 1;
                if refused {
                    m.total += 1;
                    bump(&mut m.by_slug, &peek.decision);
                    bump(
                        &mut m.by_toolkit,
                        peek.toolkit.as_deref().unwrap_or("(none)"),
                    );
                }
            }
            k.bytes += entry.footprint();
            let live = Entry {
                seq: entry.seq,
                line: entry.line.clone(),
            };
            k.ring.push_back(entry);
            while k.ring.len() > k.capacity {
                if let Some(old) = k.ring.pop_front() {
                    k.bytes -= old.footprint();
                }
            }
            live
        };
        // Read in full only for an open Live decisions page.
        if self.live.receiver_count() > 0 {
            if let Some(d) = entry.decision() {
                let _ = self.live.send(Arc::new(d));
            }
        }
    }

    /// The kept lines, oldest first (cheap: reference counts), read outside the lock.
    fn snapshot(&self) -> Vec<Entry> {
        let k = self.lock();
        k.ring
            .iter()
            .map(|e| Entry {
                seq: e.seq,
                line: e.line.clone(),
            })
            .collect()
    }

    /// The most recent decisions matching `filter`, newest first, at most `limit`.
    pub fn recent(&self, filter: &Filter, limit: usize) -> Vec<Arc<Decision>> {
        self.snapshot()
            .iter()
            .rev()
            .filter_map(Entry::decision)
            .filter(|d| d.matches(filter))
            .take(limit)
            .map(Arc::new)
            .collect()
    }

    /// The decisions after `seq`, oldest first.
    pub fn after(&self, seq: u64) -> Vec<Arc<Decision>> {
        self.snapshot()
            .iter()
            .filter(|e| e.seq > seq)
            .filter_map(Entry::decision)
            .map(Arc::new)
            .collect()
    }

    /// The decision of a request, if it is still in the ring.
    pub fn by_request_id(&self, id: &str) -> Option<Arc<Decision>> {
        self.snapshot()
            .iter()
            .rev()
            .filter(|e| e.line.contains(id))
            .filter_map(Entry::decision)
            .find(|d| d.request_id == id)
            .map(Arc::new)
    }

    /// The last sequence number given.
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Decisions kept, their approximate bytes, the capacity, and lines missed.
    pub fn usage(&self) -> (usize, usize, usize, u64) {
        let k = self.lock();
        (
            k.ring.len(),
            k.bytes,
            k.capacity,
            self.missed.load(Ordering::Relaxed),
        )
    }

    /// New decisions as they are kept.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Decision>> {
        self.live.subscribe()
    }

    /// Refusal counts over the last hour, as of `now_secs`.
    pub fn refusals(&self, now_secs: u64) -> Refusals {
        let k = self.lock();
        let minute = now_secs / 60;
        let mut out = Refusals {
            per_minute: vec![0; MINUTES as usize],
            ..Refusals::default()
        };
        let (mut slugs, mut toolkits) = (HashMap::new(), HashMap::new());
        for m in k.minutes.iter().filter(|m| m.at + MINUTES > minute) {
            out.total += m.total;
            out.decisions += m.decisions;
            let age = (minute - m.at.min(minute)) as usize;
            if let Some(slot) = out.per_minute.get_mut(MINUTES as usize - 1 - age) {
                *slot += m.total;
            }
            for (s, n) in &m.by_slug {
                *slugs.entry(s.clone()).or_insert(0) += n;
            }
            for (t, n) in &m.by_toolkit {
                *toolkits.entry(t.clone()).or_insert(0) += n;
            }
        }
        let sorted = |m: HashMap<String, u64>| {
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v
        };
        out.by_slug = sorted(slugs);
        out.by_toolkit = sorted(toolkits);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize, decision: &str, toolkit: &str) -> String {
        serde_json::json!({
            "time": "2026-12-01T03:00:00Z", "request_id": format!("r{i}"), "subject": "alice",
            "method": "POST", "path": "/api/v3/tools/execute/GITHUB_STAR", "route": "x",
            "policy": "p", "tool": "GITHUB_STAR", "toolkit": toolkit, "decision": decision,
            "code": 0, "identity_rewritten": false, "status": 200, "latency_ms": 1.5,
            "query": "q=".to_owned() + &"x".repeat(i % 2000),
        })
        .to_string()
    }

    #[test]
    fn the_ring_is_bounded_in_entries_and_bytes() {
        let feed = Feed::new();
        feed.lock().capacity = 100;
        for i in 0..10_000 {
            feed.consume(&line(i, "allow", "github"), 0);
        }
        // A line far over the bound is kept with its fields cut.
        let huge = line(10_000, "allow", &"t".repeat(100_000));
        feed.consume(&huge, 0);
        let cut = feed.recent(&Filter::default(), 1);
        assert_eq!(
            cut[0].toolkit.as_deref().map(str::len),
            Some(MAX_FIELD + '…'.len_utf8())
        );
        let (n, bytes, cap, _) = feed.usage();
        assert_eq!((n, cap), (100, 100));
        // Every kept line is at most MAX_KEPT bytes, whatever the audit line held.
        assert!(
            bytes <= 100 * (MAX_KEPT + 64),
            "{bytes} bytes for 100 decisions"
        );
        feed.consume(&line(10_001, "allow", "github"), 0);
        assert_eq!(feed.recent(&Filter::default(), 1)[0].request_id, "r10001");
        assert_eq!(feed.last_seq(), 10_002);
        assert!(feed.by_request_id("r9999").is_some() && feed.by_request_id("r1").is_none());
    }

    #[test]
    fn refusals_are_counted_per_slug_and_toolkit_for_an_hour() {
        let feed = Feed::new();
        feed.lock().capacity = 10;
        let t0 = 1_000_000 * 60;
        feed.consume(&line(1, "tool_not_connected", "gmail"), t0);
        feed.consume(&line(2, "tool_not_connected", "gmail"), t0 + 60);
        feed.consume(&line(3, "policy_denied", "slack"), t0 + 120);
        feed.consume(&line(4, "allow", "slack"), t0 + 120);
        let r = feed.refusals(t0 + 120);
        assert_eq!(r.total, 3);
        assert_eq!(r.decisions, 4);
        assert_eq!(r.by_slug[0], ("tool_not_connected".to_owned(), 2));
        assert_eq!(r.by_toolkit[0], ("gmail".to_owned(), 2));
        assert_eq!(r.per_minute[59], 1);
        // An hour later the first minute has left the window.
        let later = feed.refusals(t0 + 3600);
        assert_eq!(later.total, 2);
    }

    #[test]
    fn filters_match_parts_of_fields_case_insensitively() {
        let feed = Feed::new();
        feed.lock().capacity = 10;
        feed.consume(&line(1, "tool_not_connected", "gmail"), 0);
        feed.consume(&line(2, "allow", "github"), 0);
        let f = |slug: &str, toolkit: &str| Filter {
            slug: slug.into(),
            toolkit: toolkit.into(),
            ..Filter::default()
        };
        assert_eq!(feed.recent(&f("NOT_CONN", ""), 10).len(), 1);
        assert_eq!(feed.recent(&f("", "git"), 10).len(), 1);
        assert_eq!(feed.recent(&f("allow", "gmail"), 10).len(), 0);
        let refused = Filter {
            refused_only: true,
            ..Filter::default()
        };
        assert_eq!(feed.recent(&refused, 10)[0].request_id, "r1");
    }

    #[test]
    fn an_off_feed_takes_nothing_and_a_full_one_counts_what_it_missed() {
        let feed = Feed::new();
        feed.offer("{}");
        assert_eq!(feed.tx.capacity(), CHANNEL);
        feed.on.store(true, Ordering::Relaxed);
        for _ in 0..CHANNEL + 5 {
            feed.offer("{}");
        }
        feed.offer(&"x".repeat(MAX_LINE + 1));
        assert_eq!(feed.usage().3, 6);
    }
}
