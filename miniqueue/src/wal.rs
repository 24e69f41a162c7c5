//! The write-ahead log's records: what each state change writes, and how it is encoded.
//!
//! The log itself is minicore's record log (CRC-framed records in segment files, group
//! commit, torn-tail recovery); this module only says what goes in a record. Every state
//! change the queue acknowledges is one record, appended under the engine's lock so the
//! log's order is the order the changes happened in:
//!
//! | record    | written by                                   | replay                          |
//! |-----------|----------------------------------------------|---------------------------------|
//! | `Image`   | put, and compaction rewriting a live job     | the job, whole, in its state    |
//! | `Delete`  | delete, purge-dead                           | the job is gone                 |
//! | `Release` | release                                      | ready, or delayed to a deadline |
//! | `Bury`    | bury                                         | buried                          |
//! | `Kick`    | kick, kick-job, replays                      | ready (a dead job: attempts reset) |
//! | `Reserve` | reserve, reserve-job (not waited for: below) | attempts + 1; ready             |
//! | `Timeout` | a TTR running out (a policy adds a `Fail`)   | timeouts + 1; ready             |
//! | `Fail`    | fail, TTR expiry or lost connection under a policy | ready, delayed, or dead   |
//! | `Policy`  | tube-policy, compaction                      | the tube's retry policy         |
//! | `Unique`  | put-unique, compaction                       | a taken unique key              |
//! | `NextId`  | compaction                                   | ids continue above it           |
//!
//! Recovery rules follow from the table: a reserved job comes back **ready** (a
//! reservation belongs to a connection, and connections do not survive a restart), and
//! a delayed job keeps its **absolute** deadline. `Reserve` records are appended but no
//! reply waits for them: losing one in a crash loses one attempt from the count, never a
//! job.
//!
//! Encoding: a tag byte, then fixed-width little-endian integers; strings are a u16
//! length and bytes, the body a u32 length and bytes. Decoding checks every length and
//! never panics (a property test feeds it arbitrary bytes); the CRC of the record log
//! already caught torn and corrupted records before this code sees them.

use bytes::Bytes;

use crate::job::{Counters, DeadMark, History, Nanos};
use crate::protocol::BackoffKind;
use crate::retry::RetryPolicy;

/// Where a job is in its `Image` record. Reserved jobs are imaged as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    Ready,
    Delayed {
        deadline: Nanos,
    },
    /// `order`: the LSN of the record that buried it, which orders the buried list.
    Buried {
        order: u64,
    },
}

/// A job, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobImage {
    pub id: u64,
    pub tube: String,
    pub pri: u32,
    pub delay: Nanos,
    pub ttr: Nanos,
    pub created_at: Nanos,
    pub state: ImageState,
    pub counters: Counters,
    pub history: History,
    pub body: Bytes,
}

/// Where a failure sent a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    Ready,
    Delayed { deadline: Nanos },
    Dead { reason: String },
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Image(JobImage),
    Delete { id: u64 },
    Release { id: u64, pri: u32, delay: Nanos, deadline: Option<Nanos> },
    Bury { id: u64, pri: u32 },
    Kick { id: u64 },
    Reserve { id: u64 },
    Timeout { id: u64 },
    Fail { id: u64, at: Nanos, error: String, outcome: FailOutcome },
    Policy { tube: String, policy: Option<RetryPolicy> },
    Unique { tube: String, key: String, expires_at: Nanos, job: u64 },
    NextId { next: u64 },
}

/// A record that does not decode: the log's CRC matched, so this is a bug or a log
/// written by another program, never a torn write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable write-ahead log record: {0}")]
pub struct DecodeError(pub &'static str);

mod tag {
    pub const IMAGE: u8 = 1;
    pub const DELETE: u8 = 2;
    pub const RELEASE: u8 = 3;
    pub const BURY: u8 = 4;
    pub const KICK: u8 = 5;
    pub const RESERVE: u8 = 6;
    pub const TIMEOUT: u8 = 7;
    pub const FAIL: u8 = 8;
    pub const POLICY: u8 = 9;
    pub const UNIQUE: u8 = 10;
    pub const NEXT_ID: u8 = 11;
}

impl Record {
    /// Appends the encoding of this record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Image(image) => {
                out.push(tag::IMAGE);
                put_u64(out, image.id);
                put_str(out, &image.tube);
                put_u32(out, image.pri);
                put_i64(out, image.delay);
                put_i64(out, image.ttr);
                put_i64(out, image.created_at);
                match image.state {
                    ImageState::Ready => out.push(0),
                    ImageState::Delayed { deadline } => {
                        out.push(1);
                        put_i64(out, deadline);
                    }
                    ImageState::Buried { order } => {
                        out.push(2);
                        put_u64(out, order);
                    }
                }
                let c = &image.counters;
                for v in [c.reserves, c.timeouts, c.releases, c.buries, c.kicks] {
                    put_u32(out, v);
                }
                let h = &image.history;
                put_u32(out, h.attempts);
                put_u32(out, h.failures);
                put_i64(out, h.first_failed_at);
                put_i64(out, h.last_failed_at);
                put_opt_str(out, h.last_error.as_deref());
                match &h.dead {
                    None => out.push(0),
                    Some(mark) => {
                        out.push(1);
                        put_i64(out, mark.at);
                        put_str(out, &mark.reason);
                    }
                }
                put_u32(out, image.body.len() as u32);
                out.extend_from_slice(&image.body);
            }
            Record::Delete { id } => id_record(out, tag::DELETE, *id),
            Record::Release { id, pri, delay, deadline } => {
                out.push(tag::RELEASE);
                put_u64(out, *id);
                put_u32(out, *pri);
                put_i64(out, *delay);
                put_i64(out, deadline.unwrap_or(0));
            }
            Record::Bury { id, pri } => {
                out.push(tag::BURY);
                put_u64(out, *id);
                put_u32(out, *pri);
            }
            Record::Kick { id } => id_record(out, tag::KICK, *id),
            Record::Reserve { id } => id_record(out, tag::RESERVE, *id),
            Record::Timeout { id } => id_record(out, tag::TIMEOUT, *id),
            Record::Fail { id, at, error, outcome } => {
                out.push(tag::FAIL);
                put_u64(out, *id);
                put_i64(out, *at);
                put_str(out, error);
                match outcome {
                    FailOutcome::Ready => out.push(0),
                    FailOutcome::Delayed { deadline } => {
                        out.push(1);
                        put_i64(out, *deadline);
                    }
                    FailOutcome::Dead { reason } => {
                        out.push(2);
                        put_str(out, reason);
                    }
                }
            }
            Record::Policy { tube, policy } => {
                out.push(tag::POLICY);
                put_str(out, tube);
                match policy {
                    None => out.push(0),
                    Some(p) => {
                        out.push(match p.backoff {
                            BackoffKind::None => 1,
                            BackoffKind::Exponential => 2,
                            BackoffKind::Polynomial => 3,
                        });
                        put_u32(out, p.max_attempts);
                        put_u64(out, p.base_ms);
                        put_u64(out, p.cap_ms);
                    }
                }
            }
            Record::Unique { tube, key, expires_at, job } => {
                out.push(tag::UNIQUE);
                put_str(out, tube);
                put_str(out, key);
                put_i64(out, *expires_at);
                put_u64(out, *job);
            }
            Record::NextId { next } => id_record(out, tag::NEXT_ID, *next),
        }
    }

    /// Decodes one record; the whole input must be consumed.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader { buf: bytes };
        let record = match r.u8()? {
            tag::IMAGE => {
                let id = r.u64()?;
                let tube = r.string()?;
                let pri = r.u32()?;
                let delay = r.i64()?;
                let ttr = r.i64()?;
                let created_at = r.i64()?;
                let state = match r.u8()? {
                    0 => ImageState::Ready,
                    1 => ImageState::Delayed { deadline: r.i64()? },
                    2 => ImageState::Buried { order: r.u64()? },
                    _ => return Err(DecodeError("bad image state")),
                };
                let counters = Counters {
                    reserves: r.u32()?,
                    timeouts: r.u32()?,
                    releases: r.u32()?,
                    buries: r.u32()?,
                    kicks: r.u32()?,
                };
                let attempts = r.u32()?;
                let failures = r.u32()?;
                let first_failed_at = r.i64()?;
                let last_failed_at = r.i64()?;
                let last_error = r.opt_string()?;
                let dead = match r.u8()? {
                    0 => None,
                    1 => Some(DeadMark { at: r.i64()?, reason: r.string()? }),
                    _ => return Err(DecodeError("bad dead mark")),
                };
                let history = History { attempts, failures, first_failed_at, last_failed_at, last_error, dead };
                let len = r.u32()? as usize;
                let body = Bytes::copy_from_slice(r.take(len)?);
                Record::Image(JobImage { id, tube, pri, delay, ttr, created_at, state, counters, history, body })
            }
            tag::DELETE => Record::Delete { id: r.u64()? },
            tag::RELEASE => {
                let id = r.u64()?;
                let pri = r.u32()?;
                let delay = r.i64()?;
                let deadline = r.i64()?;
                Record::Release { id, pri, delay, deadline: (deadline != 0).then_some(deadline) }
            }
            tag::BURY => Record::Bury { id: r.u64()?, pri: r.u32()? },
            tag::KICK => Record::Kick { id: r.u64()? },
            tag::RESERVE => Record::Reserve { id: r.u64()? },
            tag::TIMEOUT => Record::Timeout { id: r.u64()? },
            tag::FAIL => {
                let id = r.u64()?;
                let at = r.i64()?;
                let error = r.string()?;
                let outcome = match r.u8()? {
                    0 => FailOutcome::Ready,
                    1 => FailOutcome::Delayed { deadline: r.i64()? },
                    2 => FailOutcome::Dead { reason: r.string()? },
                    _ => return Err(DecodeError("bad failure outcome")),
                };
                Record::Fail { id, at, error, outcome }
            }
            tag::POLICY => {
                let tube = r.string()?;
                let backoff = match r.u8()? {
                    0 => None,
                    1 => Some(BackoffKind::None),
                    2 => Some(BackoffKind::Exponential),
                    3 => Some(BackoffKind::Polynomial),
                    _ => return Err(DecodeError("bad backoff kind")),
                };
                let policy = match backoff {
                    None => None,
                    Some(backoff) => {
                        let max_attempts = r.u32()?;
                        let base_ms = r.u64()?;
                        let cap_ms = r.u64()?;
                        Some(RetryPolicy { max_attempts, backoff, base_ms, cap_ms })
                    }
                };
                Record::Policy { tube, policy }
            }
            tag::UNIQUE => {
                let tube = r.string()?;
                let key = r.string()?;
                let expires_at = r.i64()?;
                let job = r.u64()?;
                Record::Unique { tube, key, expires_at, job }
            }
            tag::NEXT_ID => Record::NextId { next: r.u64()? },
            _ => return Err(DecodeError("unknown record tag")),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError("trailing bytes after a record"));
        }
        Ok(record)
    }
}

fn id_record(out: &mut Vec<u8>, tag: u8, id: u64) {
    out.push(tag);
    put_u64(out, id);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Strings in records are tube names, keys and reasons, all well under 64 KiB; longer
/// ones are cut (at a character boundary) rather than written wrong.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// `u16::MAX` as the length marks "none".
fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(&u16::MAX.to_le_bytes()),
        Some(s) => put_str(out, s),
    }
}

/// A bounds-checked cursor over a record.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("record ends early"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()?;
        if len == u16::MAX {
            return Err(DecodeError("missing string"));
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        let len = self.u16()?;
        if len == u16::MAX {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| DecodeError("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_history() -> impl Strategy<Value = History> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(".{0,20}"),
            proptest::option::of((any::<i64>(), ".{0,20}")),
        )
            .prop_map(|(attempts, failures, first_failed_at, last_failed_at, last_error, dead)| History {
                attempts,
                failures,
                first_failed_at,
                last_failed_at,
                last_error,
                dead: dead.map(|(at, reason)| DeadMark { at, reason }),
            })
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let image = (
            any::<u64>(),
            "[a-z]{1,10}",
            any::<u32>(),
            any::<i64>(),
            any::<i64>(),
            prop_oneof![
                Just(ImageState::Ready),
                any::<i64>().prop_map(|d| ImageState::Delayed { deadline: d }),
                any::<u64>().prop_map(|order| ImageState::Buried { order })
            ],
            arb_history(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(id, tube, pri, delay, ttr, state, history, body)| {
                Record::Image(JobImage {
                    id,
                    tube,
                    pri,
                    delay,
                    ttr,
                    created_at: delay ^ ttr,
                    state,
                    counters: Counters { reserves: pri, timeouts: 1, releases: 2, buries: 3, kicks: 4 },
                    history,
                    body: Bytes::from(body),
                })
            });
        prop_oneof![
            image,
            any::<u64>().prop_map(|id| Record::Delete { id }),
            (any::<u64>(), any::<u32>(), any::<i64>(), proptest::option::of(1i64..))
                .prop_map(|(id, pri, delay, deadline)| Record::Release { id, pri, delay, deadline }),
            (any::<u64>(), any::<u32>()).prop_map(|(id, pri)| Record::Bury { id, pri }),
            any::<u64>().prop_map(|id| Record::Kick { id }),
            any::<u64>().prop_map(|id| Record::Reserve { id }),
            any::<u64>().prop_map(|id| Record::Timeout { id }),
            (
                any::<u64>(),
                any::<i64>(),
                ".{0,30}",
                prop_oneof![
                    Just(FailOutcome::Ready),
                    any::<i64>().prop_map(|deadline| FailOutcome::Delayed { deadline }),
                    ".{0,30}".prop_map(|reason| FailOutcome::Dead { reason }),
                ]
            )
                .prop_map(|(id, at, error, outcome)| Record::Fail { id, at, error, outcome }),
            ("[a-z]{1,8}", proptest::option::of((any::<u32>(), 0u8..3, any::<u64>(), any::<u64>()))).prop_map(
                |(tube, p)| Record::Policy {
                    tube,
                    policy: p.map(|(max_attempts, kind, base_ms, cap_ms)| RetryPolicy {
                        max_attempts,
                        backoff: [BackoffKind::None, BackoffKind::Exponential, BackoffKind::Polynomial][kind as usize],
                        base_ms,
                        cap_ms,
                    }),
                }
            ),
            ("[a-z]{1,8}", "[a-z0-9-]{1,20}", any::<i64>(), any::<u64>())
                .prop_map(|(tube, key, expires_at, job)| Record::Unique { tube, key, expires_at, job }),
            any::<u64>().prop_map(|next| Record::NextId { next }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(record in arb_record()) {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            prop_assert_eq!(Record::decode(&bytes), Ok(record));
        }

        /// Arbitrary bytes decode to a record or an error, never a panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Record::decode(&bytes);
        }

        /// Every strict prefix of a valid record is an error, not a different record.
        #[test]
        fn truncation_is_detected(record in arb_record(), cut in any::<prop::sample::Index>()) {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            let cut = cut.index(bytes.len());
            prop_assert!(Record::decode(&bytes[..cut]).is_err());
        }
    }
}
