//! The values a key can hold, and how each is encoded in memory.
//!
//! | type   | minikv encoding                        | OBJECT ENCODING |
//! |--------|----------------------------------------|-----------------|
//! | string | `i64` when it is a canonical integer   | `int`           |
//! | string | inline bytes, up to 22                 | `embstr`        |
//! | string | boxed bytes                            | `raw`           |
//! | list   | ring buffer of compact strings         | `deque`         |
//! | hash   | [`Dict`] of field to value             | `hashtable`     |
//! | set    | [`Dict`] of members                    | `hashtable`     |
//! | zset   | skiplist with spans plus a dict        | `skiplist`      |
//!
//! Redis has more compact encodings for small aggregates (listpack, intset). We leave
//! them out for now and answer OBJECT ENCODING truthfully about what we do store.

use std::collections::VecDeque;

use super::compact::CompactBytes;
use super::dict::Dict;
use super::zset::ZSet;

/// A string value. Integers are kept as integers, as Redis's `int` encoding does,
/// so INCR does not parse and print on every call.
#[derive(Clone, Debug, PartialEq)]
pub enum Str {
    Int(i64),
    Bytes(CompactBytes),
}

impl Str {
    /// Stores `bytes`, as an integer when it is the canonical decimal form of one
    /// (what Redis's `tryObjectEncoding` does: "12" yes, "012" or "+12" no).
    pub fn from_bytes(bytes: &[u8]) -> Str {
        if bytes.len() <= 20 {
            if let Some(v) = crate::resp::parse_i64_strict(bytes) {
                return Str::Int(v);
            }
        }
        Str::Bytes(CompactBytes::new(bytes))
    }

    pub fn from_vec(bytes: Vec<u8>) -> Str {
        if bytes.len() <= 20 {
            if let Some(v) = crate::resp::parse_i64_strict(&bytes) {
                return Str::Int(v);
            }
        }
        Str::Bytes(CompactBytes::from_vec(bytes))
    }

    /// The value's bytes. Integers are formatted into `scratch`.
    pub fn as_bytes<'a>(&'a self, scratch: &'a mut itoa::Buffer) -> &'a [u8] {
        match self {
            Str::Int(v) => scratch.format(*v).as_bytes(),
            Str::Bytes(b) => b.as_slice(),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut scratch = itoa::Buffer::new();
        self.as_bytes(&mut scratch).to_vec()
    }

    pub fn len(&self) -> usize {
        match self {
            Str::Int(v) => itoa::Buffer::new().format(*v).len(),
            Str::Bytes(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            Str::Int(_) => "int",
            Str::Bytes(b) if b.is_inline() => "embstr",
            Str::Bytes(_) => "raw",
        }
    }
}

pub type ListValue = VecDeque<CompactBytes>;
pub type HashValue = Dict<CompactBytes, CompactBytes>;
pub type SetValue = Dict<CompactBytes, ()>;

/// The value stored under a key. Aggregates are boxed so that every variant fits in
/// 24 bytes; the keyspace stores millions of these.
#[derive(Clone)]
pub enum Value {
    Str(Str),
    List(Box<ListValue>),
    Hash(Box<HashValue>),
    Set(Box<SetValue>),
    ZSet(Box<ZSet>),
}

const _: () = assert!(std::mem::size_of::<Value>() == 24);

impl Value {
    pub fn str(bytes: &[u8]) -> Value {
        Value::Str(Str::from_bytes(bytes))
    }

    /// The name TYPE reports.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    /// The name OBJECT ENCODING reports; see the table in the module docs.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) => s.encoding(),
            Value::List(_) => "deque",
            Value::Hash(_) => "hashtable",
            Value::Set(_) => "hashtable",
            Value::ZSet(z) => z.encoding(),
        }
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(s) => write!(f, "Str({s:?})"),
            Value::List(l) => write!(f, "List(len {})", l.len()),
            Value::Hash(h) => write!(f, "Hash(len {})", h.len()),
            Value::Set(s) => write!(f, "Set(len {})", s.len()),
            Value::ZSet(z) => write!(f, "ZSet(len {})", z.len()),
        }
    }
}
