//! What cache-aside stores in the KV store under a key, and how fresh a stored entry is.
//!
//! One KV string per cached key, an *envelope* around the origin's answer:
//!
//! ```text
//!  ca1:V:<grace_ms>:<ahead_ms>:<payload>     a value the origin returned
//!  ca1:N:0:0:                                the origin said "not found" (negative entry)
//! ```
//!
//! The entry carries no timestamps. Its age is read from the KV store's own clock: the
//! writer sets the key's expiry to `ttl + grace` (`SET key envelope PX ttl+grace`), and a
//! reader asks for the value and its remaining time to live in one transaction
//! (`MULTI GET PTTL EXEC`). With the remaining time `r` and the two windows the writer
//! recorded in the envelope, [`Freshness::classify`] places the entry on its timeline:
//!
//! ```text
//!  written                           soft expiry                hard expiry (PX)
//!  |<──────── ttl − ahead ───────>|<── ahead ──>|<──── grace ────>|
//!  |          Fresh               | RefreshDue  |     Stale       |  gone: a miss
//!  r = ttl+grace        r = grace+ahead     r = grace             r = 0
//! ```
//!
//! Why the server's clock rather than a "fresh until" timestamp in the value: every
//! process that reads the entry agrees on its age, whatever their own clocks say, and the
//! hard expiry is enforced by the store even if no reader ever looks. Why the windows
//! are in the envelope rather than only in the reader's configuration: a process running
//! with another configuration (during a deploy that changes the TTL, say) still reads an
//! entry the way its writer meant it.
//!
//! This module is pure (no I/O, no clock): [`encode`], [`decode`] and
//! [`Freshness::classify`] are what `cache_aside.rs` calls around its KV round trips, and
//! what the property tests below drive with arbitrary input. Left out: compression, and
//! any payload other than UTF-8 text (the simulated origin's rows are text).

use std::time::Duration;

/// The format tag every envelope starts with. A value without it was not written by this
/// pattern (or by an older format), and is treated as a miss, never served.
pub const FORMAT_TAG: &str = "ca1";

/// The longest payload an envelope carries. The store would accept more (Redis takes
/// 512 MB strings), but a cache entry that large is a design mistake: every read of it
/// moves the whole value. A larger origin answer is served but not cached.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The largest window, in milliseconds, a header may name (about 31 years): big enough
/// for any TTL, small enough that `grace + ahead` cannot overflow.
pub const MAX_WINDOW_MS: u64 = 1 << 40;

/// What the origin answered, as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// A value.
    Value(String),
    /// "Not found": cached so that a missing key does not send every read to the origin.
    Missing,
}

/// A decoded entry: the answer, and the two windows its writer used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub cached: Cached,
    /// How long past its soft expiry the entry may be served stale (the key's PX includes
    /// it). Zero: no stale serving.
    pub grace_ms: u64,
    /// How long before its soft expiry a read starts a refresh (refresh-ahead). Zero: off.
    pub ahead_ms: u64,
}

/// Why a KV value is not an envelope this module can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the value does not start with {FORMAT_TAG:?}: it was written by something else (use another key prefix)")]
    NotAnEnvelope,
    #[error("the envelope is cut short ({0})")]
    Truncated(&'static str),
    #[error("unknown entry kind {0:?} (expected V or N)")]
    UnknownKind(String),
    #[error("the {0} window is not a number of milliseconds below 2^40")]
    BadWindow(&'static str),
    #[error("a negative entry carries a payload or windows")]
    NegativeWithPayload,
    #[error("the payload is not UTF-8")]
    NotUtf8,
    #[error("the payload is {0} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
}

/// The envelope for `cached`, or `None` when the value is over [`MAX_PAYLOAD_BYTES`]
/// (the caller serves it without caching it).
pub fn encode(envelope: &Envelope) -> Option<String> {
    assert!(envelope.grace_ms <= MAX_WINDOW_MS && envelope.ahead_ms <= MAX_WINDOW_MS, "windows are validated first");
    match &envelope.cached {
        Cached::Value(payload) if payload.len() > MAX_PAYLOAD_BYTES => None,
        Cached::Value(payload) => Some(format!("{FORMAT_TAG}:V:{}:{}:{payload}", envelope.grace_ms, envelope.ahead_ms)),
        Cached::Missing => {
            // A negative entry is never served stale nor refreshed: it just expires.
            assert!(envelope.grace_ms == 0 && envelope.ahead_ms == 0, "a negative entry has no windows");
            Some(format!("{FORMAT_TAG}:N:0:0:"))
        }
    }
}

/// Reads an envelope back. Any byte string is accepted as input; what is not an
/// envelope is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let mut fields = bytes.splitn(5, |&b| b == b':');
    if fields.next() != Some(FORMAT_TAG.as_bytes()) {
        return Err(DecodeError::NotAnEnvelope);
    }
    let kind = fields.next().ok_or(DecodeError::Truncated("no kind"))?;
    let grace_ms = window(fields.next().ok_or(DecodeError::Truncated("no grace"))?, "grace")?;
    let ahead_ms = window(fields.next().ok_or(DecodeError::Truncated("no refresh-ahead"))?, "refresh-ahead")?;
    let payload = fields.next().ok_or(DecodeError::Truncated("no payload"))?;
    let cached = match kind {
        b"V" => {
            if payload.len() > MAX_PAYLOAD_BYTES {
                return Err(DecodeError::TooLarge(payload.len()));
            }
            let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
            Cached::Value(text.to_string())
        }
        b"N" => {
            if !payload.is_empty() || grace_ms != 0 || ahead_ms != 0 {
                return Err(DecodeError::NegativeWithPayload);
            }
            Cached::Missing
        }
        other => return Err(DecodeError::UnknownKind(String::from_utf8_lossy(other).into_owned())),
    };
    Ok(Envelope { cached, grace_ms, ahead_ms })
}

fn window(field: &[u8], name: &'static str) -> Result<u64, DecodeError> {
    // Digits only: `u64::from_str` would also take a leading '+'.
    if field.is_empty() || field.len() > 20 || !field.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::BadWindow(name));
    }
    let text = std::str::from_utf8(field).map_err(|_| DecodeError::BadWindow(name))?;
    match text.parse::<u64>() {
        Ok(ms) if ms <= MAX_WINDOW_MS => Ok(ms),
        _ => Err(DecodeError::BadWindow(name)),
    }
}

/// What `PTTL` said about the key, in the store's own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remaining {
    /// This many milliseconds until the store drops the key.
    Millis(u64),
    /// The key has no expiry (written by something that set no TTL): never stale.
    Forever,
    /// The key is gone (`PTTL` answered -2).
    Gone,
}

impl Remaining {
    /// From `PTTL`'s integer reply: -2 gone, -1 no expiry, otherwise milliseconds.
    pub fn from_pttl(reply: i64) -> Remaining {
        match reply {
            -1 => Remaining::Forever,
            ms if ms >= 0 => Remaining::Millis(ms.unsigned_abs()),
            _ => Remaining::Gone,
        }
    }
}

/// Where a stored entry is on its timeline (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Freshness {
    /// Serve it; nothing to do.
    Fresh,
    /// Serve it, and start one refresh: it is within `ahead` of its soft expiry.
    RefreshDue,
    /// Past its soft expiry, inside the grace: serve it stale and start one refresh.
    Stale,
}

impl Freshness {
    /// Where an entry with these windows and this much time left is; `None`: it is
    /// expired for serving (a miss), even if the store still holds it for a moment.
    pub fn classify(grace_ms: u64, ahead_ms: u64, remaining: Remaining) -> Option<Freshness> {
        let r = match remaining {
            Remaining::Forever => return Some(Freshness::Fresh),
            Remaining::Gone => return None,
            Remaining::Millis(ms) => ms,
        };
        if r > grace_ms.saturating_add(ahead_ms) {
            Some(Freshness::Fresh)
        } else if r > grace_ms {
            Some(Freshness::RefreshDue)
        } else if grace_ms > 0 && r > 0 {
            Some(Freshness::Stale)
        } else {
            None
        }
    }
}

/// A duration as whole milliseconds for `PX`, rounded up (a 0.4 ms TTL must not become
/// "0", which the store rejects) and capped at [`MAX_WINDOW_MS`].
pub fn millis_for_px(duration: Duration) -> u64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).min(MAX_WINDOW_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_value_and_a_negative_entry_round_trip() {
        let value = Envelope { cached: Cached::Value("row: a:b:c".into()), grace_ms: 1_000, ahead_ms: 250 };
        let encoded = encode(&value).expect("small");
        assert_eq!(encoded, "ca1:V:1000:250:row: a:b:c");
        assert_eq!(decode(encoded.as_bytes()), Ok(value));
        let missing = Envelope { cached: Cached::Missing, grace_ms: 0, ahead_ms: 0 };
        assert_eq!(decode(encode(&missing).expect("small").as_bytes()), Ok(missing));
    }

    #[test]
    fn foreign_and_damaged_values_are_errors() {
        assert_eq!(decode(b"hello"), Err(DecodeError::NotAnEnvelope));
        assert_eq!(decode(b"ca1:V:10"), Err(DecodeError::Truncated("no refresh-ahead")));
        assert_eq!(decode(b"ca1:X:0:0:"), Err(DecodeError::UnknownKind("X".into())));
        assert_eq!(decode(b"ca1:V:+5:0:x"), Err(DecodeError::BadWindow("grace")));
        assert_eq!(decode(b"ca1:V:0:99999999999999999999:x"), Err(DecodeError::BadWindow("refresh-ahead")));
        assert_eq!(decode(b"ca1:N:0:0:x"), Err(DecodeError::NegativeWithPayload));
        assert_eq!(decode(b"ca1:V:0:0:\xff"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn an_oversized_value_is_not_encoded() {
        let big = Envelope { cached: Cached::Value("x".repeat(MAX_PAYLOAD_BYTES + 1)), grace_ms: 0, ahead_ms: 0 };
        assert_eq!(encode(&big), None);
    }

    #[test]
    fn the_timeline_has_its_four_parts() {
        // ttl 1000, ahead 300, grace 500: PX 1500.
        let at = |r| Freshness::classify(500, 300, Remaining::Millis(r));
        assert_eq!(at(1_500), Some(Freshness::Fresh));
        assert_eq!(at(801), Some(Freshness::Fresh));
        assert_eq!(at(800), Some(Freshness::RefreshDue));
        assert_eq!(at(501), Some(Freshness::RefreshDue));
        assert_eq!(at(500), Some(Freshness::Stale));
        assert_eq!(at(1), Some(Freshness::Stale));
        assert_eq!(at(0), None);
        assert_eq!(Freshness::classify(500, 300, Remaining::Gone), None);
        assert_eq!(Freshness::classify(0, 0, Remaining::Forever), Some(Freshness::Fresh));
        // Without grace, an entry is never stale: past the soft expiry it is a miss.
        assert_eq!(Freshness::classify(0, 0, Remaining::Millis(0)), None);
        assert_eq!(Freshness::classify(0, 0, Remaining::Millis(1)), Some(Freshness::Fresh));
    }

    #[test]
    fn pttl_replies_and_px_rounding() {
        assert_eq!(Remaining::from_pttl(-2), Remaining::Gone);
        assert_eq!(Remaining::from_pttl(-1), Remaining::Forever);
        assert_eq!(Remaining::from_pttl(-7), Remaining::Gone);
        assert_eq!(Remaining::from_pttl(40), Remaining::Millis(40));
        assert_eq!(millis_for_px(Duration::from_micros(400)), 1);
        assert_eq!(millis_for_px(Duration::from_millis(250)), 250);
        assert_eq!(millis_for_px(Duration::MAX), MAX_WINDOW_MS);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let mut tagged = b"ca1:".to_vec();
            tagged.extend_from_slice(&bytes);
            let _ = decode(&tagged);
        }

        #[test]
        fn every_value_round_trips(payload in ".{0,40}", grace in 0..=MAX_WINDOW_MS, ahead in 0..=MAX_WINDOW_MS) {
            let envelope = Envelope { cached: Cached::Value(payload), grace_ms: grace, ahead_ms: ahead };
            let encoded = encode(&envelope).expect("small");
            prop_assert_eq!(decode(encoded.as_bytes()), Ok(envelope));
        }

        /// As the remaining time falls, an entry only moves forward on its timeline:
        /// Fresh, then RefreshDue, then Stale, then a miss, never back.
        #[test]
        fn freshness_only_moves_forward(grace in 0..5_000u64, ahead in 0..5_000u64, r in 0..20_000u64) {
            let now = Freshness::classify(grace, ahead, Remaining::Millis(r));
            let later = Freshness::classify(grace, ahead, Remaining::Millis(r.saturating_sub(1)));
            // `None` (a miss) sorts last: map it above every state.
            let rank = |f: Option<Freshness>| f.map_or(3, |f| f as u8);
            prop_assert!(rank(later) >= rank(now), "r={} {:?} then {:?}", r, now, later);
            if r > grace + ahead { prop_assert_eq!(now, Some(Freshness::Fresh)); }
            if r == 0 { prop_assert_eq!(now, None); }
        }
    }
}
