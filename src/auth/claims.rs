//! The claims of a verified token, read in one pass over the payload: the few that decisions
//! judge (`exp`, `nbf`, `iat`, `iss`, `aud`, `jti` and the subject claim) into a typed
//! [`Claims`], the ones an [`super::Identity`] keeps (what the tool policy reads) as JSON
//! values, every other claim skipped without building anything.
//!
//! jsonwebtoken's `decode` parsed the payload twice (its own typed view for validation, then
//! the caller's map of every claim) after parsing the header a second time; the cold path now
//! pays one header parse ([`super::read_header`]), one signature check and this one pass.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::rewrite::Key;

/// A claim's value as far as a decision needs to know it. Arrays of strings are kept (`iss`
/// and `aud` may be lists); any other array, and every object, is only [`Loose::Compound`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Loose {
    Null,
    Bool,
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(String),
    /// An array whose items are all strings.
    Strings(Vec<String>),
    /// Any other array, or an object.
    Compound,
}

impl Loose {
    /// A NumericDate: a non-negative number (fractions rounded toward refusal).
    pub(super) fn numeric_date(&self, round_up: bool) -> Option<u64> {
        let f = match *self {
            Loose::Unsigned(u) => return Some(u),
            Loose::Float(f) if f.is_finite() && (0.0..1.8e19).contains(&f) => f,
            _ => return None,
        };
        let f = if round_up { f.ceil() } else { f.floor() };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f as u64)
    }

    /// A string, or a list of strings (`iss`, `aud`).
    pub(super) fn str_or_list(&self) -> Option<&[String]> {
        match self {
            Loose::Str(s) => Some(std::slice::from_ref(s)),
            Loose::Strings(list) => Some(list),
            _ => None,
        }
    }

    /// An array (of strings or not) or an object.
    pub(super) fn is_compound(&self) -> bool {
        matches!(self, Loose::Strings(_) | Loose::Compound)
    }

    /// A `jti` has one text form: strings and integers only.
    pub(super) fn is_jti(&self) -> bool {
        matches!(self, Loose::Str(_) | Loose::Unsigned(_) | Loose::Signed(_))
    }

    fn from_value(v: &Value) -> Self {
        match v {
            Value::Null => Loose::Null,
            Value::Bool(_) => Loose::Bool,
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Loose::Unsigned(u),
                (None, Some(i), _) => Loose::Signed(i),
                (None, None, Some(f)) => Loose::Float(f),
                (None, None, None) => Loose::Compound,
            },
            Value::String(s) => Loose::Str(s.clone()),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map_or(Loose::Compound, Loose::Strings),
            Value::Object(_) => Loose::Compound,
        }
    }
}

impl<'de> de::Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Loose, E> {
        Ok(Loose::Bool)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Loose, E> {
        Ok(Loose::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Loose, E> {
        Ok(u64::try_from(v).map_or(Loose::Signed(v), Loose::Unsigned))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Loose, E> {
        Ok(Loose::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Loose, E> {
        Ok(Loose::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        let mut strings = Some(Vec::new());
        while let Some(item) = seq.next_element::<Loose>()? {
            match (item, &mut strings) {
                (Loose::Str(s), Some(list)) => list.push(s),
                _ => strings = None,
            }
        }
        Ok(strings.map_or(Loose::Compound, Loose::Strings))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Compound)
    }
}

/// What one pass over a verified payload found.
#[derive(Debug, Default)]
pub(super) struct Claims {
    pub(super) exp: Option<Loose>,
    pub(super) nbf: Option<Loose>,
    pub(super) iat: Option<Loose>,
    pub(super) iss: Option<Loose>,
    pub(super) aud: Option<Loose>,
    pub(super) jti: Option<Loose>,
    /// The configured subject claim.
    pub(super) subject: Option<Loose>,
    /// The registered `sub` claim was an array or an object (also when the subject is read
    /// from another claim).
    pub(super) sub_compound: bool,
    /// The claims the identity keeps, as JSON.
    pub(super) kept: Map<String, Value>,
    /// A claim read here appeared more than once.
    duplicate: bool,
}

/// How to read one payload: the subject claim's name, and which claims to keep (`None`: all).
pub(super) struct Reader<'a> {
    pub(super) subject_claim: &'a str,
    pub(super) keep: Option<&'a [String]>,
}

impl Reader<'_> {
    /// Parses the payload (the JSON, base64url already undone).
    ///
    /// # Errors
    /// [`Error::TokenMalformed`] when it is not one JSON object, or names a claim a decision
    /// reads twice (an ambiguity that parsers resolve differently: refused).
    pub(super) fn read(&self, payload: &[u8]) -> Result<Claims, Error> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let claims = self
            .deserialize(&mut de)
            .and_then(|c| de.end().map(|()| c))
            .map_err(|_| Error::TokenMalformed("the claims are not a JSON object"))?;
        if claims.duplicate {
            return Err(Error::TokenMalformed("a claim appears twice"));
        }
        Ok(claims)
    }

    fn kept(&self, name: &str) -> bool {
        self.keep.is_none_or(|k| k.iter().any(|n| n == name))
    }
}

impl<'de> DeserializeSeed<'de> for &Reader<'_> {
    type Value = Claims;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Claims, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &Reader<'_> {
    type Value = Claims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        let mut c = Claims::default();
        let mut sub_seen = false;
        while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
            let name: &str = &name;
            let registered = matches!(name, "exp" | "nbf" | "iat" | "iss" | "aud" | "jti" | "sub");
            let typed = registered || name == self.subject_claim;
            let loose = if self.kept(name) {
                let v: Value = map.next_value()?;
                let loose = typed.then(|| Loose::from_value(&v));
                c.kept.insert(name.to_owned(), v);
                loose
            } else if typed {
                Some(map.next_value::<Loose>()?)
            } else {
                map.next_value::<IgnoredAny>()?;
                None
            };
            let Some(loose) = loose else { continue };
            if name == self.subject_claim {
                c.duplicate |= c.subject.replace(loose.clone()).is_some();
            }
            let slot = match name {
                "exp" => &mut c.exp,
                "nbf" => &mut c.nbf,
                "iat" => &mut c.iat,
                "iss" => &mut c.iss,
                "aud" => &mut c.aud,
                "jti" => &mut c.jti,
                "sub" => {
                    c.duplicate |= std::mem::replace(&mut sub_seen, true);
                    c.sub_compound = loose.is_compound();
                    continue;
                }
                _ => continue,
            };
            c.duplicate |= slot.replace(loose).is_some();
        }
        Ok(c)
    }
}
