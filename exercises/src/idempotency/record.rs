//! What the KV store holds under an idempotency key: an in-flight claim or a finished
//! response, each with the fingerprint of the request that made it.
//!
//! ```text
//!  (absent) ──SET NX PX lock_ttl──> InFlight { fingerprint, owner, started_ms }
//!                                      │ the handler finished: the owner replaces it
//!                                      ▼ (WATCH/MULTI, with the full TTL)
//!                                   Completed { fingerprint, response, completed_ms }
//!  an InFlight whose owner crashed expires after lock_ttl; a Completed after the TTL
//! ```
//!
//! A record is one JSON string value, so one `GET` reads all of it and one `SET`
//! replaces all of it; nothing is ever half-written.
//!
//! The [`Fingerprint`] is how a reused key with a *different* request is told apart from
//! a retry (422 instead of a replay). It is a 128-bit FNV-1a digest of the method, the
//! path and the *canonical* body (the parsed request serialised again, so whitespace
//! and field order do not count). FNV is stable across processes, versions and
//! machines, which a fingerprint stored in a shared KV store must be (std's
//! `DefaultHasher` promises none of that). It is not collision-resistant against an
//! adversary; that matters only if keys are shared between tenants, and then a
//! collision would only let a client replay its *own* earlier response. A service that
//! scopes keys per tenant can live with it; one that does not should use SHA-256.
//!
//! Left out: storing non-UTF-8 bodies (the order handler answers JSON; a binary body
//! would need base64 here).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The largest response body a record may hold: a replay serves it from the KV store,
/// and a record is read whole on every retry.
pub const MAX_STORED_BODY_BYTES: usize = 64 * 1024;

/// A request's identity for "same key, same request?".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u128);

impl Fingerprint {
    /// The fingerprint of `method path` with `canonical_body`. Each part is
    /// length-prefixed, so ("POST", "/a", "b") and ("POST", "/ab", "") differ.
    pub fn of(method: &str, path: &str, canonical_body: &[u8]) -> Fingerprint {
        let mut hash = Fnv1a128::new();
        for part in [method.as_bytes(), path.as_bytes(), canonical_body] {
            hash.write(&(part.len() as u64).to_le_bytes());
            hash.write(part);
        }
        Fingerprint(hash.finish())
    }

    /// 32 hex digits, as stored.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    pub fn from_hex(text: &str) -> Option<Fingerprint> {
        if text.len() != 32 {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// FNV-1a with the 128-bit parameters from the FNV spec (draft-eastlake-fnv).
struct Fnv1a128(u128);

impl Fnv1a128 {
    const OFFSET_BASIS: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;

    fn new() -> Self {
        Fnv1a128(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u128 {
        self.0
    }
}

/// The response a handler produced, as it is stored and replayed: status, the headers
/// the *handler* set (not the ones the HTTP layer adds, like `date` and
/// `content-length`), and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// Lower-case names, in the order the handler set them.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl StoredResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One record under one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A request holds the key and is running the handler. `owner` is a random token
    /// only that request knows: completion checks it, so a request whose claim expired
    /// (it ran longer than the lock TTL) cannot overwrite the claim of the one that
    /// took over.
    InFlight { fingerprint: Fingerprint, owner: String, started_ms: u64 },
    /// The handler finished; every retry with the same request gets `response` back.
    Completed { fingerprint: Fingerprint, response: StoredResponse, completed_ms: u64 },
}

/// Why a stored value is not a record. The scenario reports it; a service answers 500
/// and names the key, so an operator can look at (and delete) the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a JSON idempotency record: {0}")]
    Json(String),
    #[error("bad fingerprint {0:?}: expected 32 hex digits")]
    Fingerprint(String),
    #[error("stored body is {0} bytes, over the {MAX_STORED_BODY_BYTES}-byte limit")]
    BodyTooLarge(usize),
}

/// The JSON form, kept apart from [`Record`] so the fingerprint is validated on the
/// way in rather than trusted as a string.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Wire {
    InFlight { fingerprint: String, owner: String, started_ms: u64 },
    Completed { fingerprint: String, response: StoredResponse, completed_ms: u64 },
}

impl Record {
    pub fn fingerprint(&self) -> Fingerprint {
        match self {
            Record::InFlight { fingerprint, .. } | Record::Completed { fingerprint, .. } => *fingerprint,
        }
    }

    pub fn encode(&self) -> Result<String, RecordError> {
        let wire = match self {
            Record::InFlight { fingerprint, owner, started_ms } => {
                Wire::InFlight { fingerprint: fingerprint.to_hex(), owner: owner.clone(), started_ms: *started_ms }
            }
            Record::Completed { fingerprint, response, completed_ms } => {
                if response.body.len() > MAX_STORED_BODY_BYTES {
                    return Err(RecordError::BodyTooLarge(response.body.len()));
                }
                Wire::Completed {
                    fingerprint: fingerprint.to_hex(),
                    response: response.clone(),
                    completed_ms: *completed_ms,
                }
            }
        };
        serde_json::to_string(&wire).map_err(|e| RecordError::Json(e.to_string()))
    }

    pub fn decode(text: &str) -> Result<Record, RecordError> {
        let wire: Wire = serde_json::from_str(text).map_err(|e| RecordError::Json(e.to_string()))?;
        let parse = |hex: String| Fingerprint::from_hex(&hex).ok_or(RecordError::Fingerprint(hex));
        Ok(match wire {
            Wire::InFlight { fingerprint, owner, started_ms } => {
                Record::InFlight { fingerprint: parse(fingerprint)?, owner, started_ms }
            }
            Wire::Completed { fingerprint, response, completed_ms } => {
                if response.body.len() > MAX_STORED_BODY_BYTES {
                    return Err(RecordError::BodyTooLarge(response.body.len()));
                }
                Record::Completed { fingerprint: parse(fingerprint)?, response, completed_ms }
            }
        })
    }
}

/// Wall-clock milliseconds since the Unix epoch, for the records' timestamps (which
/// are for people reading the store; no decision is made on them, the TTLs decide).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_fingerprint_is_pinned_so_stored_records_stay_valid_across_versions() {
        // FNV-1a 128 of the empty string is the offset basis; a changed algorithm or
        // framing would make every key in a live store answer 422, so pin one value.
        assert_eq!(Fnv1a128::new().finish(), Fnv1a128::OFFSET_BASIS);
        let mut a = Fnv1a128::new();
        a.write(b"a");
        assert_eq!(a.finish(), 0xd228cb696f1a8caf78912b704e4a8964, "FNV-1a 128 of \"a\" from the spec's test vectors");
        let fp = Fingerprint::of("POST", "/orders", br#"{"item":"book"}"#);
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
        assert_ne!(fp, Fingerprint::of("POST", "/orders", br#"{"item":"boot"}"#));
        assert_ne!(Fingerprint::of("POST", "/a", b"b"), Fingerprint::of("POST", "/ab", b""), "parts are framed");
    }

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let fingerprint = Fingerprint(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let in_flight = Record::InFlight { fingerprint, owner: "o1".into(), started_ms: 7 };
        let response = StoredResponse {
            status: 201,
            headers: vec![("location".into(), "/orders/ord_1".into())],
            body: "{\"id\":\"ord_1\"}".into(),
        };
        let completed = Record::Completed { fingerprint, response, completed_ms: 9 };
        for record in [in_flight, completed] {
            let text = record.encode().expect("encodes");
            assert_eq!(Record::decode(&text), Ok(record));
        }
        assert!(matches!(Record::decode("hello"), Err(RecordError::Json(_))));
        assert!(matches!(
            Record::decode(r#"{"state":"in_flight","fingerprint":"xyz","owner":"o","started_ms":1}"#),
            Err(RecordError::Fingerprint(_))
        ));
        let huge = StoredResponse { status: 200, headers: vec![], body: "x".repeat(MAX_STORED_BODY_BYTES + 1) };
        let record = Record::Completed { fingerprint, response: huge, completed_ms: 1 };
        assert!(matches!(record.encode(), Err(RecordError::BodyTooLarge(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_stored_text_never_panics(text in ".{0,200}") {
            let _ = Record::decode(&text);
        }
    }
}
