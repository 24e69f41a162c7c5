//! The binary encoding of log entries and messages: what the storage writes to disk and
//! what the transport writes to TCP.
//!
//! Everything is little-endian and fixed-width, with no varints and no schema, so that a
//! reader can check every length against the bytes that are really there before it trusts
//! it. Decoding untrusted bytes never panics, and never allocates more than the input
//! could hold: a count that claims a million entries in a 40-byte body is an error after a
//! bounded preallocation, never a million-slot vector.
//!
//! ```text
//! frame:   len: u32 LE | crc: u32 LE | body: len bytes
//!          crc = CRC32 (crc32fast) over the 4 len bytes then the body; len <= MAX_FRAME_BYTES
//! message: from: u64 | to: u64 | term: u64 | kind: u8 | the kind's fields, in this order:
//!   1 PreVote                  last_log_index u64, last_log_term u64
//!   2 PreVoteResponse          granted u8
//!   3 RequestVote              last_log_index u64, last_log_term u64, transfer u8
//!   4 RequestVoteResponse      granted u8
//!   5 AppendEntries            prev_log_index u64, prev_log_term u64, leader_commit u64,
//!                              round u64, count u32, count x entry
//!   6 AppendEntriesResponse    success u8, match_index u64, conflict, round u64
//!   7 InstallSnapshot          meta, offset u64, done u8, round u64, data_len u32, data
//!   8 InstallSnapshotResponse  snapshot_index u64, next_offset u64, done u8, round u64
//!   9 TimeoutNow               (nothing)
//! entry:   term u64 | index u64 | payload tag u8 | payload
//!   0 Noop   1 Command: len u32, bytes   2 Membership: change u8 (1 AddLearner,
//!   2 PromoteLearner, 3 AddVoter, 4 Remove), node u64
//! conflict: present u8 [term_present u8 [term u64] first_index u64]
//! meta:    index u64 | term u64 | voters: count u32, ids u64 ascending | learners: same
//! flags (u8) are 0 or 1; node ids on the wire are nonzero; no trailing bytes anywhere.
//! ```
//!
//! The frame is the record log's frame (see `minicore::record_log`): the CRC covers the
//! length so that a flipped length bit cannot make the reader lose sync silently. TCP
//! already checksums segments, but weakly (16 bits, and not across a buggy middlebox or a
//! proxy); 4 bytes per message buy an end-to-end check.
//!
//! Left out: versioning (every node runs the same build), compression, and zero-copy
//! decoding (command bytes are copied out of the read buffer; a `Bytes`-slicing decoder
//! would save that copy for large entries).

use bytes::Bytes;

use crate::message::{Conflict, Message, MessageBody};
use crate::types::{Entry, EntryPayload, Membership, MembershipChange, NodeId, SnapshotMeta};

/// The largest frame body accepted, in bytes. A frame header claiming more is rejected
/// before anything is allocated, so a corrupt or hostile length cannot make a node
/// allocate gigabytes. 64 MiB holds the largest entry the key-value map allows (a 16 MiB
/// key plus a 16 MiB value) with room to spare; the core's own limits
/// (`max_bytes_per_message`, `snapshot_chunk_bytes`) keep real messages far smaller.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Bytes in a frame header: the length and the CRC.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The smallest encoded entry (a Noop: term, index, tag), used to bound preallocation.
const MIN_ENTRY_BYTES: usize = 8 + 8 + 1;

const KIND_PRE_VOTE: u8 = 1;
const KIND_PRE_VOTE_RESPONSE: u8 = 2;
const KIND_REQUEST_VOTE: u8 = 3;
const KIND_REQUEST_VOTE_RESPONSE: u8 = 4;
const KIND_APPEND_ENTRIES: u8 = 5;
const KIND_APPEND_ENTRIES_RESPONSE: u8 = 6;
const KIND_INSTALL_SNAPSHOT: u8 = 7;
const KIND_INSTALL_SNAPSHOT_RESPONSE: u8 = 8;
const KIND_TIMEOUT_NOW: u8 = 9;

const PAYLOAD_NOOP: u8 = 0;
const PAYLOAD_COMMAND: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;

const CHANGE_ADD_LEARNER: u8 = 1;
const CHANGE_PROMOTE_LEARNER: u8 = 2;
const CHANGE_ADD_VOTER: u8 = 3;
const CHANGE_REMOVE: u8 = 4;

/// Bytes that are not a valid frame, message or entry. The transport closes a connection
/// that sends one (a byte stream cannot be resynchronised after a bad frame); the storage
/// treats one in the log as corruption.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame header claims a body over [`MAX_FRAME_BYTES`].
    #[error(
        "a frame claims {len} bytes, over MAX_FRAME_BYTES ({max}); the peer is not a miniraft node of this build, or the stream is corrupt"
    )]
    FrameTooLarge { len: usize, max: usize },
    /// The frame's CRC does not match its length and body.
    #[error("frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x}); the bytes were damaged in transit or on disk")]
    Checksum { stored: u32, computed: u32 },
    /// The bytes end inside a field.
    #[error("malformed {what}: truncated (the bytes end inside a field)")]
    Truncated { what: &'static str },
    /// Bytes are left over after a complete value.
    #[error("malformed {what}: {extra} trailing bytes after a complete value")]
    TrailingBytes { what: &'static str, extra: usize },
    /// A tag byte names no known variant.
    #[error("malformed {what}: unknown tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    /// A flag byte is neither 0 nor 1.
    #[error("malformed {what}: flag byte {value} is neither 0 nor 1")]
    BadFlag { what: &'static str, value: u8 },
    /// A node id of 0 (reserved for "nobody") where a real node is needed.
    #[error("malformed {what}: node id 0 is reserved")]
    ZeroNodeId { what: &'static str },
    /// Membership ids out of order or repeated (the encoding is canonical: ascending).
    #[error("malformed membership: node ids must be strictly ascending")]
    MembershipNotAscending,
}

// ---- frames ------------------------------------------------------------------

/// Appends one whole frame carrying `message` to `out`: header, then body.
///
/// Panics if the body is over [`MAX_FRAME_BYTES`], which the core's message-size limits
/// rule out: such a message is a bug in its producer, not an input.
pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    encode_message_body(message, out);
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    assert!(body_len <= MAX_FRAME_BYTES, "a message of {body_len} bytes is over MAX_FRAME_BYTES");
    let len_bytes = (body_len as u32).to_le_bytes();
    let crc = frame_crc(len_bytes, &out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame at the start of `buf`. `Ok(None)`: `buf` holds only part of a frame
/// (read more and call again). `Ok(Some((message, used)))`: the first `used` bytes were
/// that frame. An error means the stream is unusable from here on.
///
/// The length is checked against [`MAX_FRAME_BYTES`] as soon as the header is in, so a
/// reader never buffers more than that waiting for a frame that will be rejected.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, CodecError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_FRAME_BYTES {
        return Err(CodecError::FrameTooLarge { len, max: MAX_FRAME_BYTES });
    }
    let Some(body) = buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Ok(None);
    };
    let computed = frame_crc(len_bytes, body);
    if computed != stored {
        return Err(CodecError::Checksum { stored, computed });
    }
    let message = decode_message_body(body)?;
    Ok(Some((message, FRAME_HEADER_BYTES + len)))
}

/// The CRC of a frame: over the length bytes, then the body.
fn frame_crc(len_bytes: [u8; 4], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(body);
    hasher.finalize()
}

// ---- entries -----------------------------------------------------------------

/// Appends `entry`'s encoding to `out` (no frame: the record log frames its records).
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    let mut writer = Writer { out };
    writer.entry(entry);
}

/// Decodes one entry that fills `bytes` exactly.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, CodecError> {
    let mut reader = Reader { bytes, what: "entry" };
    let entry = reader.entry()?;
    reader.finish()?;
    Ok(entry)
}

/// Appends a snapshot's metadata (for the storage's snapshot files).
pub(crate) fn encode_snapshot_meta(meta: &SnapshotMeta, out: &mut Vec<u8>) {
    Writer { out }.meta(meta);
}

/// A little-endian reader over untrusted bytes, for the storage's file formats too.
pub(crate) struct Reader<'a> {
    /// What is left to read.
    pub(crate) bytes: &'a [u8],
    /// What is being decoded, for error messages.
    pub(crate) what: &'static str,
}

/// Appends little-endian fields to a vector.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

// ---- messages ----------------------------------------------------------------

fn encode_message_body(message: &Message, out: &mut Vec<u8>) {
    let mut w = Writer { out };
    w.u64(message.from);
    w.u64(message.to);
    w.u64(message.term);
    match &message.body {
        MessageBody::PreVote { last_log_index, last_log_term } => {
            w.u8(KIND_PRE_VOTE);
            w.u64(*last_log_index);
            w.u64(*last_log_term);
        }
        MessageBody::PreVoteResponse { granted } => {
            w.u8(KIND_PRE_VOTE_RESPONSE);
            w.flag(*granted);
        }
        MessageBody::RequestVote { last_log_index, last_log_term, transfer } => {
            w.u8(KIND_REQUEST_VOTE);
            w.u64(*last_log_index);
            w.u64(*last_log_term);
            w.flag(*transfer);
        }
        MessageBody::RequestVoteResponse { granted } => {
            w.u8(KIND_REQUEST_VOTE_RESPONSE);
            w.flag(*granted);
        }
        MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit, round } => {
            w.u8(KIND_APPEND_ENTRIES);
            w.u64(*prev_log_index);
            w.u64(*prev_log_term);
            w.u64(*leader_commit);
            w.u64(*round);
            w.u32(u32::try_from(entries.len()).expect("an AppendEntries holds far fewer than 2^32 entries"));
            for entry in entries {
                w.entry(entry);
            }
        }
        MessageBody::AppendEntriesResponse { success, match_index, conflict, round } => {
            w.u8(KIND_APPEND_ENTRIES_RESPONSE);
            w.flag(*success);
            w.u64(*match_index);
            match conflict {
                None => w.flag(false),
                Some(Conflict { term, first_index }) => {
                    w.flag(true);
                    match term {
                        None => w.flag(false),
                        Some(term) => {
                            w.flag(true);
                            w.u64(*term);
                        }
                    }
                    w.u64(*first_index);
                }
            }
            w.u64(*round);
        }
        MessageBody::InstallSnapshot { meta, offset, data, done, round } => {
            w.u8(KIND_INSTALL_SNAPSHOT);
            w.meta(meta);
            w.u64(*offset);
            w.flag(*done);
            w.u64(*round);
            w.bytes(data);
        }
        MessageBody::InstallSnapshotResponse { snapshot_index, next_offset, done, round } => {
            w.u8(KIND_INSTALL_SNAPSHOT_RESPONSE);
            w.u64(*snapshot_index);
            w.u64(*next_offset);
            w.flag(*done);
            w.u64(*round);
        }
        MessageBody::TimeoutNow => w.u8(KIND_TIMEOUT_NOW),
    }
}

fn decode_message_body(body: &[u8]) -> Result<Message, CodecError> {
    let mut r = Reader { bytes: body, what: "message" };
    let from = r.node_id()?;
    let to = r.node_id()?;
    let term = r.u64()?;
    let body = match r.u8()? {
        KIND_PRE_VOTE => MessageBody::PreVote { last_log_index: r.u64()?, last_log_term: r.u64()? },
        KIND_PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse { granted: r.flag()? },
        KIND_REQUEST_VOTE => {
            MessageBody::RequestVote { last_log_index: r.u64()?, last_log_term: r.u64()?, transfer: r.flag()? }
        }
        KIND_REQUEST_VOTE_RESPONSE => MessageBody::RequestVoteResponse { granted: r.flag()? },
        KIND_APPEND_ENTRIES => {
            let prev_log_index = r.u64()?;
            let prev_log_term = r.u64()?;
            let leader_commit = r.u64()?;
            let round = r.u64()?;
            let count = r.u32()? as usize;
            // Never trust the count for the allocation: at most what the bytes can hold.
            let mut entries = Vec::with_capacity(count.min(r.bytes.len() / MIN_ENTRY_BYTES));
            for _ in 0..count {
                entries.push(r.entry()?);
            }
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit, round }
        }
        KIND_APPEND_ENTRIES_RESPONSE => {
            let success = r.flag()?;
            let match_index = r.u64()?;
            let conflict = if r.flag()? {
                let term = if r.flag()? { Some(r.u64()?) } else { None };
                Some(Conflict { term, first_index: r.u64()? })
            } else {
                None
            };
            MessageBody::AppendEntriesResponse { success, match_index, conflict, round: r.u64()? }
        }
        KIND_INSTALL_SNAPSHOT => {
            let meta = r.meta()?;
            let offset = r.u64()?;
            let done = r.flag()?;
            let round = r.u64()?;
            let data = r.bytes()?;
            MessageBody::InstallSnapshot { meta, offset, data, done, round }
        }
        KIND_INSTALL_SNAPSHOT_RESPONSE => MessageBody::InstallSnapshotResponse {
            snapshot_index: r.u64()?,
            next_offset: r.u64()?,
            done: r.flag()?,
            round: r.u64()?,
        },
        KIND_TIMEOUT_NOW => MessageBody::TimeoutNow,
        tag => return Err(CodecError::UnknownTag { what: "message kind", tag }),
    };
    r.finish()?;
    Ok(Message { from, to, term, body })
}

// ---- field-level encoding ------------------------------------------------------

impl Writer<'_> {
    fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn flag(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    /// A length-prefixed byte string (u32 length).
    fn bytes(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).expect("a byte string over 4 GiB cannot fit a frame"));
        self.out.extend_from_slice(bytes);
    }

    fn ids(&mut self, ids: &std::collections::BTreeSet<NodeId>) {
        self.u32(u32::try_from(ids.len()).expect("fewer than 2^32 members"));
        for id in ids {
            self.u64(*id);
        }
    }

    fn meta(&mut self, meta: &SnapshotMeta) {
        self.u64(meta.index);
        self.u64(meta.term);
        self.ids(&meta.membership.voters);
        self.ids(&meta.membership.learners);
    }

    fn entry(&mut self, entry: &Entry) {
        self.u64(entry.term);
        self.u64(entry.index);
        match &entry.payload {
            EntryPayload::Noop => self.u8(PAYLOAD_NOOP),
            EntryPayload::Command(command) => {
                self.u8(PAYLOAD_COMMAND);
                self.bytes(command);
            }
            EntryPayload::Membership(change) => {
                self.u8(PAYLOAD_MEMBERSHIP);
                let (tag, node) = match change {
                    MembershipChange::AddLearner(node) => (CHANGE_ADD_LEARNER, node),
                    MembershipChange::PromoteLearner(node) => (CHANGE_PROMOTE_LEARNER, node),
                    MembershipChange::AddVoter(node) => (CHANGE_ADD_VOTER, node),
                    MembershipChange::Remove(node) => (CHANGE_REMOVE, node),
                };
                self.u8(tag);
                self.u64(*node);
            }
        }
    }
}

impl<'a> Reader<'a> {
    /// The next `n` bytes, or `Truncated` when fewer are left.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated { what: self.what });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        let raw = self.take(4)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        let raw = self.take(8)?;
        let mut fixed = [0u8; 8];
        fixed.copy_from_slice(raw);
        Ok(u64::from_le_bytes(fixed))
    }

    fn flag(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(CodecError::BadFlag { what: self.what, value }),
        }
    }

    fn node_id(&mut self) -> Result<NodeId, CodecError> {
        match self.u64()? {
            0 => Err(CodecError::ZeroNodeId { what: self.what }),
            id => Ok(id),
        }
    }

    /// A u32-length-prefixed byte string; the length is checked against what is left
    /// before anything is copied.
    fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let len = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    fn ids(&mut self) -> Result<std::collections::BTreeSet<NodeId>, CodecError> {
        let count = self.u32()?;
        let mut ids = std::collections::BTreeSet::new();
        let mut previous = 0;
        for _ in 0..count {
            let id = self.node_id()?;
            if id <= previous {
                return Err(CodecError::MembershipNotAscending);
            }
            previous = id;
            ids.insert(id);
        }
        Ok(ids)
    }

    pub(crate) fn meta(&mut self) -> Result<SnapshotMeta, CodecError> {
        let index = self.u64()?;
        let term = self.u64()?;
        let voters = self.ids()?;
        let learners = self.ids()?;
        Ok(SnapshotMeta { index, term, membership: Membership { voters, learners } })
    }

    fn entry(&mut self) -> Result<Entry, CodecError> {
        let term = self.u64()?;
        let index = self.u64()?;
        let payload = match self.u8()? {
            PAYLOAD_NOOP => EntryPayload::Noop,
            PAYLOAD_COMMAND => EntryPayload::Command(self.bytes()?),
            PAYLOAD_MEMBERSHIP => {
                let tag = self.u8()?;
                let node = self.node_id()?;
                EntryPayload::Membership(match tag {
                    CHANGE_ADD_LEARNER => MembershipChange::AddLearner(node),
                    CHANGE_PROMOTE_LEARNER => MembershipChange::PromoteLearner(node),
                    CHANGE_ADD_VOTER => MembershipChange::AddVoter(node),
                    CHANGE_REMOVE => MembershipChange::Remove(node),
                    tag => return Err(CodecError::UnknownTag { what: "membership change", tag }),
                })
            }
            tag => return Err(CodecError::UnknownTag { what: "entry payload", tag }),
        };
        Ok(Entry { term, index, payload })
    }

    /// Succeeds only when every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), CodecError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes { what: self.what, extra: self.bytes.len() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> impl Strategy<Value = NodeId> {
        prop_oneof![1..8u64, 1..u64::MAX]
    }

    fn small_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let payload = prop_oneof![
            Just(EntryPayload::Noop),
            small_bytes().prop_map(EntryPayload::Command),
            node().prop_map(|n| EntryPayload::Membership(MembershipChange::AddLearner(n))),
            node().prop_map(|n| EntryPayload::Membership(MembershipChange::PromoteLearner(n))),
            node().prop_map(|n| EntryPayload::Membership(MembershipChange::AddVoter(n))),
            node().prop_map(|n| EntryPayload::Membership(MembershipChange::Remove(n))),
        ];
        (any::<u64>(), any::<u64>(), payload).prop_map(|(term, index, payload)| Entry { term, index, payload })
    }

    fn meta() -> impl Strategy<Value = SnapshotMeta> {
        let ids = || proptest::collection::btree_set(node(), 0..5);
        (any::<u64>(), any::<u64>(), ids(), ids()).prop_map(|(index, term, voters, learners)| SnapshotMeta {
            index,
            term,
            membership: Membership { voters, learners },
        })
    }

    fn conflict() -> impl Strategy<Value = Option<Conflict>> {
        proptest::option::of(
            (proptest::option::of(any::<u64>()), any::<u64>())
                .prop_map(|(term, first_index)| Conflict { term, first_index }),
        )
    }

    fn body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            (any::<u64>(), any::<u64>())
                .prop_map(|(last_log_index, last_log_term)| MessageBody::PreVote { last_log_index, last_log_term }),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(last_log_index, last_log_term, transfer)| {
                MessageBody::RequestVote { last_log_index, last_log_term, transfer }
            }),
            any::<bool>().prop_map(|granted| MessageBody::RequestVoteResponse { granted }),
            (any::<u64>(), any::<u64>(), proptest::collection::vec(entry(), 0..6), any::<u64>(), any::<u64>())
                .prop_map(|(prev_log_index, prev_log_term, entries, leader_commit, round)| {
                    MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit, round }
                }),
            (any::<bool>(), any::<u64>(), conflict(), any::<u64>()).prop_map(
                |(success, match_index, conflict, round)| MessageBody::AppendEntriesResponse {
                    success,
                    match_index,
                    conflict,
                    round
                }
            ),
            (meta(), any::<u64>(), small_bytes(), any::<bool>(), any::<u64>()).prop_map(
                |(meta, offset, data, done, round)| MessageBody::InstallSnapshot { meta, offset, data, done, round }
            ),
            (any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>()).prop_map(
                |(snapshot_index, next_offset, done, round)| MessageBody::InstallSnapshotResponse {
                    snapshot_index,
                    next_offset,
                    done,
                    round
                }
            ),
            Just(MessageBody::TimeoutNow),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (node(), node(), any::<u64>(), body()).prop_map(|(from, to, term, body)| Message { from, to, term, body })
    }

    fn frame_of(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode_message(message, &mut out);
        out
    }

    proptest! {
        #[test]
        fn messages_round_trip(message in message()) {
            let frame = frame_of(&message);
            prop_assert_eq!(decode_frame(&frame), Ok(Some((message, frame.len()))));
        }

        #[test]
        fn entries_round_trip(entry in entry()) {
            let mut out = Vec::new();
            encode_entry(&entry, &mut out);
            prop_assert_eq!(decode_entry(&out), Ok(entry));
        }

        /// Every proper prefix of a frame asks for more bytes; it is never an error or a
        /// message, so a reader can feed the decoder whatever one read(2) returned.
        #[test]
        fn a_partial_frame_asks_for_more(message in message(), cut in any::<prop::sample::Index>()) {
            let frame = frame_of(&message);
            let cut = cut.index(frame.len());
            prop_assert_eq!(decode_frame(&frame[..cut]), Ok(None));
        }

        /// Frames back to back decode one at a time, each reporting its own length.
        #[test]
        fn frames_back_to_back_decode_in_order(messages in proptest::collection::vec(message(), 1..5)) {
            let mut stream = Vec::new();
            for message in &messages {
                encode_message(message, &mut stream);
            }
            let mut offset = 0;
            for message in &messages {
                let (decoded, used) = decode_frame(&stream[offset..]).expect("valid").expect("complete");
                prop_assert_eq!(&decoded, message);
                offset += used;
            }
            prop_assert_eq!(offset, stream.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&raw);
            let _ = decode_entry(&raw);
            let _ = decode_message_body(&raw);
        }

        /// Arbitrary bodies under a *valid* header and CRC reach the body decoder, which
        /// must reject or accept them without panicking (a CRC only guards against damage,
        /// not against a peer that encodes garbage).
        #[test]
        fn arbitrary_bodies_in_valid_frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = Vec::new();
            let len_bytes = (body.len() as u32).to_le_bytes();
            frame.extend_from_slice(&len_bytes);
            frame.extend_from_slice(&frame_crc(len_bytes, &body).to_le_bytes());
            frame.extend_from_slice(&body);
            if let Ok(Some((message, used))) = decode_frame(&frame) {
                prop_assert_eq!(used, frame.len());
                // Whatever decodes re-encodes to the same bytes: the encoding is canonical.
                prop_assert_eq!(frame_of(&message), frame);
            }
        }

        /// One flipped bit anywhere in a frame is caught: by the CRC, or (for a bit in the
        /// length) by the length check or a CRC over the wrong bytes; never a message.
        #[test]
        fn a_flipped_bit_is_rejected(message in message(), bit in any::<prop::sample::Index>()) {
            let mut frame = frame_of(&message);
            let bit = bit.index(frame.len() * 8);
            frame[bit / 8] ^= 1 << (bit % 8);
            match decode_frame(&frame) {
                Ok(Some(decoded)) => prop_assert!(false, "a damaged frame decoded as {:?}", decoded),
                // A length made larger waits for bytes that never come; the transport's
                // connection then ends with a partial frame, which it reports.
                Ok(None) => prop_assert!(bit < 32, "only a length bit can make the decoder wait"),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn a_huge_length_is_refused_before_buffering() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&(MAX_FRAME_BYTES as u32 + 1).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        assert_eq!(
            decode_frame(&frame),
            Err(CodecError::FrameTooLarge { len: MAX_FRAME_BYTES + 1, max: MAX_FRAME_BYTES })
        );
    }

    #[test]
    fn a_lying_entry_count_allocates_only_what_the_bytes_hold() {
        // An AppendEntries claiming u32::MAX entries with no entry bytes: an error, and the
        // preallocation is bounded by the (empty) remainder, not by the count.
        let heartbeat = Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: Vec::new(),
                leader_commit: 0,
                round: 0,
            },
        };
        let mut body = Vec::new();
        encode_message_body(&heartbeat, &mut body);
        let count_at = body.len() - 4;
        body[count_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_message_body(&body), Err(CodecError::Truncated { what: "message" }));
    }

    #[test]
    fn canonical_form_is_enforced() {
        let message = Message { from: 1, to: 2, term: 3, body: MessageBody::PreVoteResponse { granted: true } };
        let mut body = Vec::new();
        encode_message_body(&message, &mut body);
        let mut bad_flag = body.clone();
        *bad_flag.last_mut().expect("nonempty") = 2;
        assert_eq!(decode_message_body(&bad_flag), Err(CodecError::BadFlag { what: "message", value: 2 }));
        let mut trailing = body.clone();
        trailing.push(0);
        assert_eq!(decode_message_body(&trailing), Err(CodecError::TrailingBytes { what: "message", extra: 1 }));
        let mut zero_from = body;
        zero_from[..8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(decode_message_body(&zero_from), Err(CodecError::ZeroNodeId { what: "message" }));
    }
}
