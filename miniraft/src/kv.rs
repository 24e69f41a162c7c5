//! A replicated key-value map: the state machine that the simulator, the `miniraft`
//! server and the benchmark run, and whose histories the linearizability checker reads.
//!
//! Commands and responses have a small binary encoding (below). Every decoder returns an
//! error on bad bytes, never panics; a command that does not decode is applied as a no-op
//! that answers `KvResponse::Invalid`, so all replicas stay identical.
//!
//! ```text
//! command:  op: u8 | key_len: u32 BE | key | [value_len: u32 BE | value]...
//!   1 PUT key value      2 DELETE key      3 CAS key expected_flag:u8 [expected] new
//!   4 GET key            (GET is a query, never in the log)
//! response: tag: u8 | ...
//!   1 OK   2 VALUE flag:u8 [len value]   3 DELETED flag:u8   4 CAS flag:u8   5 INVALID
//! ```

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::state_machine::{RestoreError, StateMachine};
use crate::types::{Index, Snapshot};

/// The longest key or value a command may carry. Bigger ones are refused at decode, so a
/// corrupt length cannot make a replica allocate gigabytes.
pub const MAX_KV_BYTES: usize = 16 * 1024 * 1024;

/// An operation on the map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put { key: Bytes, value: Bytes },
    /// Removes `key`.
    Delete { key: Bytes },
    /// Sets `key` to `new` if its value is `expected` (None: if it is absent).
    Cas { key: Bytes, expected: Option<Bytes>, new: Bytes },
    /// Reads `key`. Served as a query (ReadIndex), not through the log.
    Get { key: Bytes },
}

/// What a command answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResponse {
    /// A `Put` was applied.
    Ok,
    /// A `Get`'s answer.
    Value(Option<Bytes>),
    /// A `Delete`'s answer: whether the key existed.
    Deleted(bool),
    /// A `Cas`'s answer: whether it swapped.
    Cas(bool),
    /// The command did not decode.
    Invalid,
}

/// Bytes that are not a valid command, response or snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed key-value {what}: {problem}")]
pub struct DecodeError {
    what: &'static str,
    problem: &'static str,
}

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CAS: u8 = 3;
const OP_GET: u8 = 4;

const RE_OK: u8 = 1;
const RE_VALUE: u8 = 2;
const RE_DELETED: u8 = 3;
const RE_CAS: u8 = 4;
const RE_INVALID: u8 = 5;

impl KvCommand {
    /// The key the command touches (the checker partitions histories by it).
    pub fn key(&self) -> &Bytes {
        match self {
            KvCommand::Put { key, .. }
            | KvCommand::Delete { key }
            | KvCommand::Cas { key, .. }
            | KvCommand::Get { key } => key,
        }
    }

    /// Whether the command only reads (and so goes through ReadIndex, not the log).
    pub fn is_read(&self) -> bool {
        matches!(self, KvCommand::Get { .. })
    }

    /// The command's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            KvCommand::Put { key, value } => {
                out.put_u8(OP_PUT);
                put_field(&mut out, key);
                put_field(&mut out, value);
            }
            KvCommand::Delete { key } => {
                out.put_u8(OP_DELETE);
                put_field(&mut out, key);
            }
            KvCommand::Cas { key, expected, new } => {
                out.put_u8(OP_CAS);
                put_field(&mut out, key);
                put_optional(&mut out, expected.as_ref());
                put_field(&mut out, new);
            }
            KvCommand::Get { key } => {
                out.put_u8(OP_GET);
                put_field(&mut out, key);
            }
        }
        out.freeze()
    }

    /// Parses a command; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, DecodeError> {
        let mut cursor = Cursor { bytes, what: "command" };
        let command = match cursor.u8()? {
            OP_PUT => KvCommand::Put { key: cursor.field()?, value: cursor.field()? },
            OP_DELETE => KvCommand::Delete { key: cursor.field()? },
            OP_CAS => KvCommand::Cas { key: cursor.field()?, expected: cursor.optional()?, new: cursor.field()? },
            OP_GET => KvCommand::Get { key: cursor.field()? },
            _ => return Err(cursor.error("unknown operation")),
        };
        cursor.finish()?;
        Ok(command)
    }
}

impl KvResponse {
    /// The response's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            KvResponse::Ok => out.put_u8(RE_OK),
            KvResponse::Value(value) => {
                out.put_u8(RE_VALUE);
                put_optional(&mut out, value.as_ref());
            }
            KvResponse::Deleted(existed) => {
                out.put_u8(RE_DELETED);
                out.put_u8(u8::from(*existed));
            }
            KvResponse::Cas(swapped) => {
                out.put_u8(RE_CAS);
                out.put_u8(u8::from(*swapped));
            }
            KvResponse::Invalid => out.put_u8(RE_INVALID),
        }
        out.freeze()
    }

    /// Parses a response; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<KvResponse, DecodeError> {
        let mut cursor = Cursor { bytes, what: "response" };
        let response = match cursor.u8()? {
            RE_OK => KvResponse::Ok,
            RE_VALUE => KvResponse::Value(cursor.optional()?),
            RE_DELETED => KvResponse::Deleted(cursor.flag()?),
            RE_CAS => KvResponse::Cas(cursor.flag()?),
            RE_INVALID => KvResponse::Invalid,
            _ => return Err(cursor.error("unknown response tag")),
        };
        cursor.finish()?;
        Ok(response)
    }
}

/// The replicated map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    /// Ordered, so that snapshots are byte-identical on every replica.
    map: BTreeMap<Bytes, Bytes>,
    /// The last applied index.
    applied: Index,
}

impl KvStateMachine {
    /// An empty map.
    pub fn new() -> KvStateMachine {
        KvStateMachine::default()
    }

    /// The value of `key`, for inspection.
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies a decoded command (a `Get` reads without changing anything).
    pub fn execute(&mut self, command: &KvCommand) -> KvResponse {
        match command {
            KvCommand::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                KvResponse::Ok
            }
            KvCommand::Delete { key } => KvResponse::Deleted(self.map.remove(key).is_some()),
            KvCommand::Cas { key, expected, new } => {
                if self.map.get(key) == expected.as_ref() {
                    self.map.insert(key.clone(), new.clone());
                    KvResponse::Cas(true)
                } else {
                    KvResponse::Cas(false)
                }
            }
            KvCommand::Get { key } => KvResponse::Value(self.map.get(key).cloned()),
        }
    }
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: Index, command: &[u8]) -> Bytes {
        assert!(index > self.applied, "apply out of order: index {index} after {}", self.applied);
        self.applied = index;
        match KvCommand::decode(command) {
            // A Get in the log (a client may send one through `propose`) just reads.
            Ok(command) => self.execute(&command).encode(),
            Err(_) => KvResponse::Invalid.encode(),
        }
    }

    fn query(&self, query: &[u8]) -> Bytes {
        match KvCommand::decode(query) {
            Ok(KvCommand::Get { key }) => KvResponse::Value(self.map.get(&key).cloned()).encode(),
            _ => KvResponse::Invalid.encode(),
        }
    }

    fn applied_index(&self) -> Index {
        self.applied
    }

    /// `count: u64 BE`, then `key_len key value_len value` per entry in key order.
    fn snapshot(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u64(self.map.len() as u64);
        for (key, value) in &self.map {
            put_field(&mut out, key);
            put_field(&mut out, value);
        }
        out.freeze()
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), RestoreError> {
        let mut cursor = Cursor { bytes: &snapshot.data, what: "snapshot" };
        let count = cursor.u64().map_err(|e| RestoreError(e.to_string()))?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let key = cursor.field().map_err(|e| RestoreError(e.to_string()))?;
            let value = cursor.field().map_err(|e| RestoreError(e.to_string()))?;
            map.insert(key, value);
        }
        cursor.finish().map_err(|e| RestoreError(e.to_string()))?;
        self.map = map;
        self.applied = snapshot.meta.index;
        Ok(())
    }
}

fn put_field(out: &mut BytesMut, field: &[u8]) {
    assert!(field.len() <= MAX_KV_BYTES, "a key or value of {} bytes is over MAX_KV_BYTES", field.len());
    out.put_u32(field.len() as u32);
    out.put_slice(field);
}

fn put_optional(out: &mut BytesMut, field: Option<&Bytes>) {
    match field {
        Some(field) => {
            out.put_u8(1);
            put_field(out, field);
        }
        None => out.put_u8(0),
    }
}

/// A reader over untrusted bytes: every read checks the length first.
struct Cursor<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl Cursor<'_> {
    fn error(&self, problem: &'static str) -> DecodeError {
        DecodeError { what: self.what, problem }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(self.error("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let raw = self.take(8)?;
        Ok(u64::from_be_bytes(raw.try_into().map_err(|_| self.error("truncated"))?))
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.error("a flag byte is neither 0 nor 1")),
        }
    }

    fn field(&mut self) -> Result<Bytes, DecodeError> {
        let raw = self.take(4)?;
        let len = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        if len > MAX_KV_BYTES {
            return Err(self.error("a key or value is over MAX_KV_BYTES"));
        }
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    fn optional(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if self.flag()? {
            Ok(Some(self.field()?))
        } else {
            Ok(None)
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.error("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
    }

    fn command() -> impl Strategy<Value = KvCommand> {
        prop_oneof![
            (bytes(), bytes()).prop_map(|(key, value)| KvCommand::Put { key, value }),
            bytes().prop_map(|key| KvCommand::Delete { key }),
            (bytes(), proptest::option::of(bytes()), bytes()).prop_map(|(key, expected, new)| KvCommand::Cas {
                key,
                expected,
                new
            }),
            bytes().prop_map(|key| KvCommand::Get { key }),
        ]
    }

    proptest! {
        #[test]
        fn commands_round_trip(command in command()) {
            prop_assert_eq!(KvCommand::decode(&command.encode()), Ok(command));
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = KvCommand::decode(&raw);
            let _ = KvResponse::decode(&raw);
            let mut machine = KvStateMachine::new();
            let _ = machine.apply(1, &raw);
            let snapshot = Snapshot { data: Bytes::from(raw), ..Snapshot::default() };
            let _ = machine.restore(&snapshot);
        }

        #[test]
        fn snapshots_restore_the_same_map(commands in proptest::collection::vec(command(), 0..32)) {
            let mut machine = KvStateMachine::new();
            for (i, command) in commands.iter().enumerate() {
                machine.apply(i as Index + 1, &command.encode());
            }
            let mut restored = KvStateMachine::new();
            let snapshot = Snapshot { meta: crate::types::SnapshotMeta { index: machine.applied_index(), ..Default::default() }, data: machine.snapshot() };
            restored.restore(&snapshot).expect("own snapshot restores");
            prop_assert_eq!(restored, machine);
        }
    }

    #[test]
    fn cas_swaps_only_on_a_match() {
        let mut machine = KvStateMachine::new();
        let key = Bytes::from_static(b"k");
        let cas = |expected: Option<&'static [u8]>, new: &'static [u8]| KvCommand::Cas {
            key: key.clone(),
            expected: expected.map(Bytes::from_static),
            new: Bytes::from_static(new),
        };
        assert_eq!(machine.execute(&cas(Some(b"x"), b"a")), KvResponse::Cas(false));
        assert_eq!(machine.execute(&cas(None, b"a")), KvResponse::Cas(true));
        assert_eq!(machine.execute(&cas(None, b"b")), KvResponse::Cas(false));
        assert_eq!(machine.execute(&cas(Some(b"a"), b"b")), KvResponse::Cas(true));
        assert_eq!(machine.get(b"k"), Some(&Bytes::from_static(b"b")));
    }
}
