//! The job payload: one notification to send, as JSON, and the parser that tells a
//! well-formed one from poison.
//!
//! ```json
//! {"id": 17, "to": "ana@mail.example", "text": "your order shipped"}
//! ```
//!
//! `id` is the producer's notification id, not the queue's job id: a replayed message
//! is a fresh job with a new job id, and the provider's ledger (which counts deliveries
//! per notification) must still see it as the same notification.
//!
//! A payload that does not parse, misses a field, or breaks a limit is **malformed**:
//! no retry will ever make it parse, so the worker dead-letters it on the first attempt.
//! Left out: schema versions (a real payload carries one, so a worker can refuse a
//! version it does not know as poison too) and templating.

use serde::{Deserialize, Serialize};

/// The largest payload a worker accepts, so a dead-letter envelope (the body, hex
/// encoded at worst, plus the metadata) fits in beanstalkd's default 65,535-byte job.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// The longest recipient address (RFC 5321's limit on a forward path).
pub const MAX_RECIPIENT_BYTES: usize = 256;

/// One notification to deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// The producer's id for this notification, stable across replays.
    pub id: u64,
    /// `user@domain`; the provider routes (and fails) by domain.
    pub to: String,
    pub text: String,
}

/// Why a payload is poison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the payload is {0} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("the payload is not a notification: {0}")]
    NotJson(String),
    #[error("the recipient {0:?} is not user@domain (at most {MAX_RECIPIENT_BYTES} bytes)")]
    BadRecipient(String),
}

impl Notification {
    /// The domain the recipient's mail goes to (`mail.example`).
    pub fn domain(&self) -> &str {
        self.to.rsplit_once('@').map(|(_, domain)| domain).unwrap_or("")
    }

    /// The payload as the producer puts it on the queue.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of integers and strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a job body; any failure is a [`Malformed`] payload.
    pub fn parse(body: &[u8]) -> Result<Notification, Malformed> {
        if body.len() > MAX_PAYLOAD_BYTES {
            return Err(Malformed::TooLarge(body.len()));
        }
        let notification: Notification = serde_json::from_slice(body).map_err(|e| Malformed::NotJson(e.to_string()))?;
        let valid_recipient = notification.to.len() <= MAX_RECIPIENT_BYTES
            && notification.to.split_once('@').is_some_and(|(user, domain)| {
                !user.is_empty() && !domain.is_empty() && !domain.contains('@') && !notification.to.contains(' ')
            });
        if !valid_recipient {
            return Err(Malformed::BadRecipient(notification.to));
        }
        Ok(notification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_notification_reads_back_and_poison_is_named() {
        let n = Notification { id: 17, to: "ana@mail.example".into(), text: "shipped".into() };
        assert_eq!(Notification::parse(&n.encode()), Ok(n.clone()));
        assert_eq!(n.domain(), "mail.example");
        assert!(matches!(Notification::parse(b"\xff\xfe not json"), Err(Malformed::NotJson(_))));
        assert!(matches!(Notification::parse(br#"{"id": 3, "text": "no recipient"}"#), Err(Malformed::NotJson(_))));
        assert!(matches!(
            Notification::parse(br#"{"id": 3, "to": "nobody", "text": "x"}"#),
            Err(Malformed::BadRecipient(_))
        ));
        assert!(matches!(
            Notification::parse(br#"{"id": 3, "to": "a@b@c", "text": "x"}"#),
            Err(Malformed::BadRecipient(_))
        ));
        assert!(matches!(
            Notification::parse(br#"{"id": 3, "to": "a@b", "text": "x", "extra": 1}"#),
            Err(Malformed::NotJson(_))
        ));
        assert!(matches!(Notification::parse(&vec![b' '; MAX_PAYLOAD_BYTES + 1]), Err(Malformed::TooLarge(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Notification::parse(&body);
        }

        #[test]
        fn every_valid_notification_round_trips(id in any::<u64>(), user in "[a-z0-9.]{1,20}",
                                                domain in "[a-z0-9.-]{1,30}", text in ".{0,100}") {
            let n = Notification { id, to: format!("{user}@{domain}"), text };
            prop_assert_eq!(Notification::parse(&n.encode()), Ok(n));
        }
    }
}
