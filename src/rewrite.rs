//! Pinning identity in request bodies and queries.
//!
//! Bodies are parsed strictly ([`JsonObject::parse_with`]): one JSON object, no byte-order
//! mark, no trailing data, no key repeated in any object at any depth (parsers disagree on
//! which copy wins, so a repeated key is refused rather than guessed), at most
//! [`JsonLimits::max_keys_per_object`] keys in any object and nesting at most
//! [`JsonLimits::max_depth`] deep. Every check is linear in the body's size (repeated keys are
//! found with a hash set once an object grows past a few keys), so a body of the maximum size
//! costs milliseconds whatever its shape. Top-level values are kept as raw JSON text, so tool arguments are forwarded
//! byte for byte (no float rounding of large integers) while identity fields are replaced.
//! Keys are compared after JSON unescaping, so `"user\u005fid"` is `user_id`.
//!
//! Identity fields are recognised by their *folded* name (ASCII lower-case with `_` and `-`
//! removed), so `user_id`, `userId`, `User_Id` and `USER-ID` are one field: every spelling is
//! removed and the one spelling the route uses is set to the subject. The same folding finds
//! caller-supplied credentials and connected-account ids.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;

/// Folded names that carry a user identity.
const IDENTITY_KEYS: &[&str] = &[
    "userid",
    "userids",
    "entityid",
    "entityids",
    "useruuid",
    "clientuniqueuserid",
];

/// Folded names that carry caller-supplied credentials on execution routes.
const CUSTOM_AUTH_KEYS: &[&str] = &["customauthparams", "customconnectiondata", "authconfig"];

/// Folded names of a single connected-account id: the one list every carrier reads (a REST
/// body, a session call, MCP arguments and server URLs; `account` of a session call is
/// `invocation`'s own addition).
const ACCOUNT_KEYS: &[&str] = &["connectedaccountid", "connectedauthid"];
/// Folded names of a list of connected-account ids.
const ACCOUNT_LIST_KEYS: &[&str] = &["connectedaccountids", "connectedaccounts"];

/// `name` lower-cased with every byte that is not an ASCII letter or digit removed, compared
/// without allocating. Dropping all punctuation (not just `_` and `-`) also catches the
/// bracket and dot forms that query parsers fold into one name (`user_ids[]`, `user.id`).
pub(crate) fn folded_eq(name: &str, folded: &str) -> bool {
    let mut it = name
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase());
    let mut want = folded.bytes();
    loop {
        match (it.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn folded_in(name: &str, set: &[&str]) -> bool {
    set.iter().any(|f| folded_eq(name, f))
}

/// Whether `name` is any spelling of a user-identity field.
pub fn is_identity_key(name: &str) -> bool {
    folded_in(name, IDENTITY_KEYS)
}

/// Whether `name` is any spelling of one connected-account id (`connected_account_id`,
/// `connectedAccountId`, the old `connectedAuthId`).
pub fn is_account_key(name: &str) -> bool {
    folded_in(name, ACCOUNT_KEYS)
}

/// Whether `name` is any spelling of a list of connected-account ids
/// (`connected_account_ids`, `connectedAccounts`).
pub fn is_account_list_key(name: &str) -> bool {
    folded_in(name, ACCOUNT_LIST_KEYS)
}

/// Shape limits of a strictly parsed body (`[limits] max_json_keys_per_object` and
/// `max_json_depth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Keys allowed in any one object.
    pub max_keys_per_object: usize,
    /// Nesting allowed: the top-level object is depth 1.
    pub max_depth: usize,
}

impl JsonLimits {
    /// serde_json refuses anything deeper itself; a configured depth may not exceed it.
    pub const MAX_DEPTH: usize = 128;
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            max_keys_per_object: 10_000,
            max_depth: 64,
        }
    }
}

/// A parsed JSON object whose top-level values are kept as raw text.
///
/// The object owns the body's text; a top-level value the gateway did not touch is a span of
/// it (not a copy), so a large argument costs nothing after the one strict pass.
#[derive(Debug)]
pub struct JsonObject {
    text: String,
    entries: Vec<(String, Slot)>,
}

/// Where a top-level value's raw JSON is.
#[derive(Debug)]
enum Slot {
    /// `text[start..end]`, exactly as the client sent it.
    Span(usize, usize),
    /// A value the gateway set, or one taken from a body whose spans could not be found.
    Owned(Box<RawValue>),
}

/// A top-level value's raw JSON text, already checked by the strict parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// The raw JSON text.
    pub fn get(self) -> &'a str {
        self.0
    }
}

/// The result of pinning identity in a body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pinned {
    /// The caller named some user other than the subject (already overwritten).
    pub mismatch: bool,
    /// Connected-account ids the body names (any spelling), for the ownership check.
    pub accounts: Vec<String>,
}

// === impl JsonObject ===

impl JsonObject {
    /// Parses `body` strictly.
    ///
    /// # Errors
    /// [`Error::BodyInvalid`] for anything but one JSON object, [`Error::DuplicateKey`] when an
    /// object repeats a key.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        Self::parse_with(body, JsonLimits::default())
    }

    /// Parses `body` strictly within `limits`.
    ///
    /// # Errors
    /// As [`JsonObject::parse`], and [`Error::TooManyKeys`] or [`Error::TooDeep`] past `limits`.
    pub fn parse_with(body: &[u8], limits: JsonLimits) -> Result<Self, Error> {
        let text = std::str::from_utf8(body).map_err(|_| not_utf8())?;
        Self::parse_text(text.to_owned(), limits)
    }

    /// [`JsonObject::parse_with`] taking the body itself, without copying it when it is not
    /// shared (a body read in several chunks by [`crate::body::read_limited`] is not).
    ///
    /// # Errors
    /// As [`JsonObject::parse_with`].
    pub fn parse_owned(body: bytes::Bytes, limits: JsonLimits) -> Result<Self, Error> {
        let text = String::from_utf8(Vec::from(body)).map_err(|_| not_utf8())?;
        Self::parse_text(text, limits)
    }

    /// The strict pass alone, on any one JSON value (an MCP body may be an array): no key
    /// repeated in any object at any depth, and `limits` (the top-level value is depth 1).
    ///
    /// # Errors
    /// As [`JsonObject::parse_with`], except that the value need not be an object.
    pub fn check_value(text: &str, limits: JsonLimits) -> Result<(), Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let pool = KeySets::default();
        Strict {
            limits,
            depth: 0,
            pool: &pool,
            top: None,
        }
        .deserialize(&mut de)
        .map_err(map_parse_error)?;
        de.end().map_err(map_parse_error)
    }

    fn parse_text(text: String, limits: JsonLimits) -> Result<Self, Error> {
        // One pass: structure, duplicates and limits at any depth; the top-level keys are
        // recorded as they go by. UTF-8 was checked once for the whole body above, so the
        // `str` reader does not check each string again.
        let top = std::cell::RefCell::new(Vec::new());
        let spans = {
            let mut de = serde_json::Deserializer::from_str(&text);
            let pool = KeySets::default();
            Strict {
                limits,
                depth: 0,
                pool: &pool,
                top: Some(&top),
            }
            .deserialize(&mut de)
            .map_err(map_parse_error)?;
            de.end().map_err(map_parse_error)?;
            // The pass accepts any JSON value; the body must be an object.
            let first = text.bytes().find(|b| !is_json_space(*b));
            if first != Some(b'{') {
                return Err(Error::BodyInvalid("the body is not a JSON object".into()));
            }
            top_level_spans(&text, &top.into_inner())
        };
        let entries = match spans {
            Some(spans) => spans
                .into_iter()
                .map(|(k, start, end)| (k, Slot::Span(start, end)))
                .collect(),
            // A top-level key with escapes is not a span of the text: a second pass takes
            // the raw values (rare; only a client's own escaping leads here).
            None => {
                let entries: TopLevel = serde_json::from_str(&text).map_err(map_parse_error)?;
                entries
                    .0
                    .into_iter()
                    .map(|(k, v)| (k, Slot::Owned(v)))
                    .collect()
            }
        };
        Ok(Self { text, entries })
    }

    fn raw<'a>(&'a self, slot: &'a Slot) -> Raw<'a> {
        match slot {
            // Every span was checked to be a slice of this text when it was made.
            Slot::Span(start, end) => Raw(self.text.get(*start..*end).unwrap_or_default()),
            Slot::Owned(v) => Raw(v.get()),
        }
    }

    /// Iterates keys and raw values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Raw<'_>)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), self.raw(v)))
    }

    /// The raw value of the first key whose folded name is `folded`.
    pub fn get_folded(&self, folded: &str) -> Option<Raw<'_>> {
        self.iter()
            .find(|(k, _)| folded_eq(k, folded))
            .map(|(_, v)| v)
    }

    /// The string value of exactly `key`, if it is a string.
    pub fn get_str(&self, key: &str) -> Option<String> {
        let (_, raw) = self.iter().find(|(k, _)| *k == key)?;
        serde_json::from_str::<String>(raw.get()).ok()
    }

    /// Removes every key for which `pred` holds; returns the removed entries.
    fn take_where(&mut self, pred: impl Fn(&str) -> bool) -> Vec<(String, Slot)> {
        let (taken, kept) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|(k, _)| pred(k));
        self.entries = kept;
        taken
    }

    /// Sets `key` (exact spelling) to the raw JSON `value`, replacing any existing copy.
    pub fn set_raw(&mut self, key: &str, value: Box<RawValue>) {
        if let Some(slot) = self.entries.iter_mut().find(|(k, _)| k == key) {
            slot.1 = Slot::Owned(value);
        } else {
            self.entries.push((key.to_owned(), Slot::Owned(value)));
        }
    }

    /// Removes every key whose folded name is `folded` and sets `key` (exact spelling) to
    /// `value`; answers the raw values removed, so the caller can judge what was asked.
    pub fn replace_folded(&mut self, folded: &str, key: &str, value: Box<RawValue>) -> Vec<String> {
        let taken = self.take_where(|k| folded_eq(k, folded));
        let old = taken
            .iter()
            .map(|(_, v)| self.raw(v).get().to_owned())
            .collect();
        self.entries.push((key.to_owned(), Slot::Owned(value)));
        old
    }

    /// Sets `key` to a JSON string.
    pub fn set_str(&mut self, key: &str, value: &str) -> Result<(), Error> {
        let raw = serde_json::value::to_raw_value(value).map_err(|_| Error::Internal)?;
        self.set_raw(key, raw);
        Ok(())
    }

    /// Removes every spelling of the user identity and sets `canonical` to the subject.
    /// `as_list` writes `[subject]` instead of a string (e.g. MCP `user_ids`).
    ///
    /// Reports a mismatch when any removed spelling held something other than the subject
    /// (or `null`, or a list of only the subject).
    pub fn pin_identity(
        &mut self,
        canonical: &str,
        subject: &str,
        as_list: bool,
    ) -> Result<bool, Error> {
        let removed = self.take_where(is_identity_key);
        let mismatch = removed
            .iter()
            .any(|(_, v)| !names_only(self.raw(v), subject));
        let raw = if as_list {
            serde_json::value::to_raw_value(&[subject])
        } else {
            serde_json::value::to_raw_value(subject)
        }
        .map_err(|_| Error::Internal)?;
        self.set_raw(canonical, raw);
        Ok(mismatch)
    }

    /// Removes every spelling of the user identity; reports whether any named someone other
    /// than the subject.
    pub fn strip_identity(&mut self, subject: &str) -> bool {
        self.take_where(is_identity_key)
            .iter()
            .any(|(_, v)| !names_only(self.raw(v), subject))
    }

    /// Removes every spelling of the user identity from the objects nested in the body, at
    /// any depth (`{"config": {"user_id": ..}}`); reports whether any named someone other than
    /// the subject. For bodies that carry no tool arguments (sessions' own settings), where a
    /// nested user id can only be one more place Composio might read the user from.
    ///
    /// # Errors
    /// [`Error::Internal`] if a changed value cannot be written back (it was parsed strictly).
    pub fn strip_nested_identity(&mut self, subject: &str) -> Result<bool, Error> {
        let mut mismatch = false;
        let mut changed = Vec::new();
        for (k, raw) in self.iter() {
            let text = raw.get();
            // Only containers can nest a key; most values are skipped without a parse.
            if !(text.starts_with('{') || text.starts_with('[')) {
                continue;
            }
            let mut v: serde_json::Value =
                serde_json::from_str(text).map_err(|_| Error::Internal)?;
            let mut removed = Vec::new();
            strip_identity_deep(&mut v, &mut removed);
            if !removed.is_empty() {
                mismatch |= removed.iter().any(|r| !names_only_value(r, subject));
                changed.push((k.to_owned(), v));
            }
        }
        for (k, v) in changed {
            let raw = serde_json::value::to_raw_value(&v).map_err(|_| Error::Internal)?;
            self.set_raw(&k, raw);
        }
        Ok(mismatch)
    }

    /// Refuses caller-supplied credentials unless allowed. `null` counts as absent (the old
    /// SDK always sends `"authConfig": null`).
    pub fn check_custom_auth(&self, allow: bool) -> Result<(), Error> {
        if allow {
            return Ok(());
        }
        match self
            .iter()
            .find(|(k, v)| folded_in(k, CUSTOM_AUTH_KEYS) && v.get() != "null")
        {
            Some((k, _)) => Err(Error::CustomAuthNotAllowed(k.to_owned())),
            None => Ok(()),
        }
    }

    /// Every connected-account id named at the top level, in any spelling. A non-string,
    /// non-null value is refused: the gateway must be able to read what Composio will read.
    pub fn account_ids(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for (k, v) in self.iter() {
            if folded_in(k, ACCOUNT_KEYS) {
                match serde_json::from_str::<Option<String>>(v.get()) {
                    Ok(Some(id)) => {
                        if !out.contains(&id) {
                            out.push(id);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => {
                        return Err(Error::BodyInvalid(format!("`{k}` must be a string")));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Serialises back to compact JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        let cap = self
            .entries
            .iter()
            .map(|(k, v)| k.len() + self.raw(v).get().len() + 4)
            .sum::<usize>()
            + 2;
        let mut out = Vec::with_capacity(cap);
        out.push(b'{');
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a String to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, k);
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// Whether a raw identity value names nobody but `subject`.
fn names_only(v: Raw<'_>, subject: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(v.get()).is_ok_and(|v| names_only_value(&v, subject))
}

/// Whether an identity value names nobody but `subject` (`null`, the subject, or a list of it).
pub(crate) fn names_only_value(v: &serde_json::Value, subject: &str) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s == subject,
        serde_json::Value::Array(a) => a.iter().all(|x| x.as_str() == Some(subject)),
        _ => false,
    }
}

/// Removes identity keys from every object in `v`, collecting what they held.
fn strip_identity_deep(v: &mut serde_json::Value, removed: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            let keys: Vec<String> = m.keys().filter(|k| is_identity_key(k)).cloned().collect();
            for k in keys {
                if let Some(old) = m.shift_remove(&k) {
                    removed.push(old);
                }
            }
            for child in m.values_mut() {
                strip_identity_deep(child, removed);
            }
        }
        serde_json::Value::Array(a) => {
            for child in a {
                strip_identity_deep(child, removed);
            }
        }
        _ => {}
    }
}

fn map_parse_error(e: serde_json::Error) -> Error {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUP_MARK) {
        let key = rest.split(DUP_END).next().unwrap_or_default();
        return Error::DuplicateKey(key.chars().take(64).collect());
    }
    if let Some(rest) = msg.strip_prefix(KEYS_MARK) {
        let n = rest.split(DUP_END).next().unwrap_or_default();
        return Error::TooManyKeys(n.parse().unwrap_or_default());
    }
    if let Some(rest) = msg.strip_prefix(DEPTH_MARK) {
        let n = rest.split(DUP_END).next().unwrap_or_default();
        return Error::TooDeep(n.parse().unwrap_or_default());
    }
    if msg.starts_with("recursion limit exceeded") {
        return Error::TooDeep(JsonLimits::MAX_DEPTH);
    }
    let msg = match e.classify() {
        serde_json::error::Category::Eof => "the body ends early".to_owned(),
        serde_json::error::Category::Data => "the body is not a JSON object".to_owned(),
        _ => format!("malformed JSON at line {} column {}", e.line(), e.column()),
    };
    Error::BodyInvalid(msg)
}

const DUP_MARK: &str = "\u{1}dup:";
const KEYS_MARK: &str = "\u{1}keys:";
const DEPTH_MARK: &str = "\u{1}depth:";
const DUP_END: char = '\u{2}';

/// Objects up to this many keys are checked for repeats by a linear scan (cheaper than
/// hashing); larger ones with a hash set, so the check is linear in the body, not quadratic.
const SCAN_KEYS: usize = 16;

/// Hash sets of keys kept for reuse by the objects of one body, so that sibling objects do not
/// each grow a set from nothing (growing rehashes every key again).
type KeySets<'de> = std::cell::RefCell<Vec<HashSet<Cow<'de, str>>>>;

/// A visitor that accepts any JSON value but refuses repeated keys in any object, objects
/// with too many keys and nesting that is too deep.
#[derive(Clone, Copy)]
struct Strict<'p, 'de> {
    limits: JsonLimits,
    /// Depth of the value being visited's container (0 for the top-level value).
    depth: usize,
    pool: &'p KeySets<'de>,
    /// Where the keys of the top-level object are recorded (only for the top-level value).
    top: Option<&'p TopKeys<'de>>,
}

impl Strict<'_, '_> {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.limits.max_depth {
            return Err(E::custom(format!(
                "{DEPTH_MARK}{}{DUP_END}",
                self.limits.max_depth
            )));
        }
        Ok(Self {
            depth,
            top: None,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let max = self.limits.max_keys_per_object;
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        let mut n = 0usize;
        let result = loop {
            let key = match map.next_key::<Key<'de>>() {
                Ok(Some(Key(key))) => key,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            n += 1;
            if n > max {
                break Err(de::Error::custom(format!("{KEYS_MARK}{max}{DUP_END}")));
            }
            if let Some(top) = self.top {
                top.borrow_mut().push(key.clone());
            }
            let fresh = if n <= SCAN_KEYS {
                let fresh = !few.contains(&key);
                few.push(key.clone());
                fresh
            } else {
                let set = many.get_or_insert_with(|| {
                    let mut set = self.pool.borrow_mut().pop().unwrap_or_default();
                    set.extend(few.drain(..));
                    set
                });
                // One hash per key: `insert` says whether it was there.
                set.insert(key.clone())
            };
            if !fresh {
                break Err(de::Error::custom(format!("{DUP_MARK}{key}{DUP_END}")));
            }
            if let Err(e) = map.next_value_seed(inner) {
                break Err(e);
            }
        };
        if let Some(mut set) = many {
            set.clear();
            self.pool.borrow_mut().push(set);
        }
        result
    }
}

/// The keys of the top-level object in order, as the strict pass saw them.
type TopKeys<'de> = std::cell::RefCell<Vec<Cow<'de, str>>>;

fn not_utf8() -> Error {
    Error::BodyInvalid("the body is not valid UTF-8".into())
}

/// JSON's insignificant whitespace.
fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The span of each top-level value of `text`, a JSON object the strict pass accepted, from
/// where its keys lie in the text: a value runs from after its key's `:` to before the `,`
/// that precedes the next key (the last one to before the closing `}`).
///
/// `None` when a key is not borrowed from `text` (it had escapes, so the reader unescaped it
/// elsewhere) or the bytes around a key are not exactly what JSON puts there: the caller then
/// takes the values with a second pass. Only ever a slower path, never a different answer.
fn top_level_spans(text: &str, keys: &[Cow<'_, str>]) -> Option<Vec<(String, usize, usize)>> {
    let bytes = text.as_bytes();
    let base = text.as_ptr() as usize;
    // (start of the opening quote, end after the closing quote) of each key.
    let mut at = Vec::with_capacity(keys.len());
    for key in keys {
        let Cow::Borrowed(k) = key else { return None };
        let start = (k.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(k.len())?;
        if start == 0 || bytes.get(start - 1) != Some(&b'"') || bytes.get(end) != Some(&b'"') {
            return None;
        }
        at.push((start - 1, end + 1));
    }
    let skip_space = |mut i: usize| {
        while bytes.get(i).copied().is_some_and(is_json_space) {
            i += 1;
        }
        i
    };
    let trim_back = |mut i: usize| {
        while i > 0 && bytes.get(i - 1).copied().is_some_and(is_json_space) {
            i -= 1;
        }
        i
    };
    let mut out = Vec::with_capacity(keys.len());
    for (i, (key, &(_, key_end))) in keys.iter().zip(&at).enumerate() {
        let colon = skip_space(key_end);
        if bytes.get(colon) != Some(&b':') {
            return None;
        }
        let start = skip_space(colon + 1);
        // What follows the value: the `,` before the next key, or the object's closing `}`.
        let (after, sep) = match at.get(i + 1) {
            Some(&(next_start, _)) => (trim_back(next_start), b','),
            None => (trim_back(bytes.len()), b'}'),
        };
        if after == 0 || bytes.get(after - 1) != Some(&sep) {
            return None;
        }
        let end = trim_back(after - 1);
        // Cut at ASCII structure, so always a slice of `text`; checked all the same, so that
        // reading a span later cannot fail.
        if end <= start || text.get(start..end).is_none() {
            return None;
        }
        out.push((key.to_string(), start, end));
    }
    Some(out)
}

/// An object key, borrowed from the body when it has no escapes (serde's own `Cow` always
/// allocates): one allocation per key would dominate the check of a body of short keys.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Top-level object as ordered (key, raw value) pairs.
struct TopLevel(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut v = Vec::new();
                while let Some((k, raw)) = map.next_entry::<String, Box<RawValue>>()? {
                    v.push((k, raw));
                }
                Ok(TopLevel(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// The one query-scoping function of the gateway: every route's query passes through it.
///
/// Rebuilds a query string with every spelling of a user identity removed and, when
/// `canonical` is given, that parameter set to the subject alone. Returns the new query
/// (`None` when empty) and whether the caller had named another user.
///
/// Refused on every route, whatever `refuse_identity` says:
/// - `_method` in any spelling (`_method`, `_METHOD`, `_method[]`): a method override;
/// - an identity key in bracket, dotted or indexed form (`user_id[0]`, `user_ids[]`,
///   `user_id.0`, `user_id0`, `entityId[x]`): query parsers disagree on whether these are the
///   plain name (PHP, Rails and `qs` read `user_ids[]` as `user_ids`), so the gateway cannot
///   know what Composio will read and does not guess.
///
/// # Errors
/// [`Error::MethodOverride`] for `_method`; [`Error::QueryNotAllowed`] for a bracketed or
/// indexed identity key, and for any identity parameter when `refuse_identity`.
pub fn scope_query(
    query: Option<&str>,
    canonical: Option<&str>,
    subject: &str,
    refuse_identity: bool,
) -> Result<(Option<String>, bool), Error> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut mismatch = false;
    let mut any = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        check_query_key(&k)?;
        if is_identity_key(&k) {
            if refuse_identity {
                return Err(Error::QueryNotAllowed(k.chars().take(64).collect()));
            }
            if v.split(',').any(|u| u != subject) {
                mismatch = true;
            }
            continue;
        }
        out.append_pair(&k, &v);
        any = true;
    }
    if let Some(name) = canonical {
        out.append_pair(name, subject);
        any = true;
    }
    let q = out.finish();
    Ok((any.then_some(q), mismatch))
}

/// The refusals of [`scope_query`] that hold on every route, checked for the whole query
/// before a route's handler runs (and so before any lookup it makes upstream).
///
/// # Errors
/// As [`scope_query`]: `_method`, or a bracketed or indexed identity key.
pub fn check_query(query: Option<&str>) -> Result<(), Error> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .try_for_each(|(k, _)| check_query_key(&k))
}

fn check_query_key(k: &str) -> Result<(), Error> {
    let base = query_base_key(k);
    if folded_eq(base, "method") && base != "method" {
        return Err(Error::MethodOverride);
    }
    if is_indexed_identity_key(k) {
        return Err(Error::QueryNotAllowed(k.chars().take(64).collect()));
    }
    Ok(())
}

/// A query key without its bracket or dotted suffix (`user_ids[0]` → `user_ids`).
pub fn query_base_key(k: &str) -> &str {
    k.split(['[', '.']).next().unwrap_or(k)
}

/// Whether `k` names a user identity with an index or a suffix that a lenient query parser
/// may drop: a bracket or dotted suffix (`user_id[0]`, `user_ids[]`, `user_id.x`) or digits
/// after the name (`user_id0`, `user_ids_1`).
fn is_indexed_identity_key(k: &str) -> bool {
    let base = query_base_key(k);
    if base.len() != k.len() && is_identity_key(base) {
        return true;
    }
    let trimmed = k.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_' || c == '-');
    trimmed.len() != k.len() && is_identity_key(trimmed)
}

/// Checks a raw query for `_method` and identity parameters without rebuilding it.
pub fn query_has_identity(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(k, _)| is_identity_key(&k))
}

#[cfg(test)]
mod tests;
