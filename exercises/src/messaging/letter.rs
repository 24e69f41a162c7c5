//! The dead letter: the envelope a failed job is wrapped in when it moves to the DLQ
//! tube, with everything an operator needs to decide whether to replay it.
//!
//! Plain `bury` keeps a job's body but has nowhere to put *why*: beanstalkd's
//! `stats-job` shows counters, not the last error. So a dead job becomes a new job in the
//! tube `<tube>.dlq` whose body is this envelope, as JSON:
//!
//! ```json
//! {"source_tube": "notify", "source_job_id": 7, "body": {"utf8": "{\"id\":3,...}"},
//!  "pri": 1024, "ttr": 3, "reason": "attempts_exhausted", "attempts": 5,
//!  "last_error": "503 service unavailable", "enqueued_at_unix_s": 1764590000,
//!  "dead_lettered_at_unix_ms": 1764590012345}
//! ```
//!
//! The original body is kept byte for byte: as text when it is UTF-8, as hex when it is
//! not (a malformed payload can be any bytes). Left out: compression, and a history of
//! every attempt's error (only the last one is kept; the report's timeline has them all).

use serde::{Deserialize, Serialize};

use super::retry::DeadReason;

/// The longest `last_error` kept, so a provider that answers with a page of HTML does
/// not push the envelope over the server's job size.
pub const MAX_ERROR_BYTES: usize = 500;

/// A job body, kept exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// The body was valid UTF-8 (readable in a listing).
    Utf8(String),
    /// It was not: lower-case hex, two digits a byte.
    Hex(String),
}

impl Body {
    pub fn new(bytes: &[u8]) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Utf8(text.to_string()),
            Err(_) => Body::Hex(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }

    /// The original bytes; `None` when a hex body is not hex (a hand-edited envelope).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Body::Utf8(text) => Some(text.as_bytes().to_vec()),
            Body::Hex(hex) => {
                if hex.len() % 2 != 0 {
                    return None;
                }
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
            }
        }
    }
}

/// A job in the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where a replay puts the job back.
    pub source_tube: String,
    /// The job's id in `source_tube` when it died (gone now: the job was deleted once
    /// the envelope was safely in the DLQ). Two letters with the same source id are one
    /// job dead-lettered twice, by a worker that crashed between the put and the delete.
    pub source_job_id: u64,
    pub body: Body,
    /// The job's priority and TTR, so a replay puts it back as it was.
    pub pri: u32,
    pub ttr: u32,
    pub reason: DeadReason,
    /// How many times the job was reserved, this last attempt included (`stats-job`
    /// `reserves`).
    pub attempts: u32,
    /// The last attempt's error, cut to [`MAX_ERROR_BYTES`].
    pub last_error: String,
    /// When the job was first put, to the second (now minus `stats-job` `age`).
    pub enqueued_at_unix_s: u64,
    pub dead_lettered_at_unix_ms: u64,
}

impl DeadLetter {
    /// The envelope's JSON, as the DLQ tube holds it.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, integers and unit enum variants always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<DeadLetter, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a dead-letter envelope: {e}"))
    }
}

/// `error` cut to at most [`MAX_ERROR_BYTES`] bytes, on a character boundary.
pub fn clip_error(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_string();
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn errors_are_clipped_on_a_character_boundary() {
        assert_eq!(clip_error("short"), "short");
        let long = "é".repeat(400);
        let clipped = clip_error(&long);
        assert!(clipped.len() <= MAX_ERROR_BYTES + "…".len() && clipped.ends_with('…'));
        assert_eq!(Body::Hex("abc".into()).bytes(), None);
        assert_eq!(Body::Hex("zz".into()).bytes(), None);
    }

    proptest! {
        /// The envelope keeps any body byte for byte, through JSON and back.
        #[test]
        fn any_body_survives_the_envelope(body in proptest::collection::vec(any::<u8>(), 0..300), id in any::<u64>()) {
            let letter = DeadLetter {
                source_tube: "notify".into(),
                source_job_id: id,
                body: Body::new(&body),
                pri: 1024,
                ttr: 3,
                reason: DeadReason::MalformedPayload,
                attempts: 1,
                last_error: clip_error("not json"),
                enqueued_at_unix_s: 1,
                dead_lettered_at_unix_ms: 2,
            };
            let back = DeadLetter::parse(&letter.encode()).expect("parses");
            prop_assert_eq!(back.body.bytes(), Some(body));
            prop_assert_eq!(back, letter);
        }
    }
}
