//! The `Idempotency-Key` request header: what a valid key is, and the 400 a bad one gets.
//!
//! The IETF draft (draft-ietf-httpapi-idempotency-key-header) makes the header a
//! Structured Field *String*, so on the wire it is quoted: `Idempotency-Key: "8e03…"`.
//! Stripe, and most clients in practice, send the bare token: `Idempotency-Key: 8e03…`.
//! Both are accepted here and name the same key (the quotes are stripped), so a client
//! written for either works.
//!
//! A key is 1 to [`MAX_KEY_BYTES`] visible ASCII characters (`!` to `~`) other than `"`
//! and `\`: enough for a UUID, a ULID or `order-<client>-<n>`, and nothing that needs
//! escaping in a header, a KV key or a log line. Stripe's limit is the same 255.
//!
//! Left out: the sf-string escapes (`\"` and `\\` inside the quotes; a key that needs
//! them is refused, not unescaped), and scoping keys per client. A real service
//! namespaces keys by the authenticated account (Stripe does), so two customers that
//! pick the same key never see each other's responses; this exercise has one tenant.

use std::fmt;

/// Stripe's limit, and far more than a UUID (36) needs.
pub const MAX_KEY_BYTES: usize = 255;

/// The header's name, lower case as HTTP/1.1 header maps store it.
pub const HEADER: &str = "idempotency-key";

/// A validated idempotency key, without the sf-string quotes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

/// Why a request's key was refused. Every message says what to send instead; all of
/// them are answered with 400 Bad Request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("missing Idempotency-Key header: send one unique key per logical request (a UUID, for example) and the same key on every retry of it")]
    Missing,
    #[error("{0} Idempotency-Key headers: send exactly one")]
    Repeated(usize),
    #[error("empty Idempotency-Key: send 1 to {MAX_KEY_BYTES} visible ASCII characters")]
    Empty,
    #[error("Idempotency-Key is {0} bytes: the limit is {MAX_KEY_BYTES} (a UUID is 36)")]
    TooLong(usize),
    #[error("Idempotency-Key has byte {byte:#04x} at position {position}: use visible ASCII other than '\"' and '\\' (letters, digits, '-', '_', ...)")]
    InvalidByte { position: usize, byte: u8 },
    #[error("Idempotency-Key starts a quoted string but does not end it: send \"key\" or key")]
    UnbalancedQuote,
}

impl IdempotencyKey {
    /// Parses the values of every `Idempotency-Key` header a request carried.
    pub fn from_header_values(values: &[&[u8]]) -> Result<IdempotencyKey, KeyError> {
        match values {
            [] => Err(KeyError::Missing),
            [one] => IdempotencyKey::parse(one),
            many => Err(KeyError::Repeated(many.len())),
        }
    }

    /// Parses one header value: `key` or `"key"`.
    pub fn parse(value: &[u8]) -> Result<IdempotencyKey, KeyError> {
        let inner = match value {
            [b'"', inner @ .., b'"'] => inner,
            [b'"', ..] => return Err(KeyError::UnbalancedQuote),
            bare => bare,
        };
        if inner.is_empty() {
            return Err(KeyError::Empty);
        }
        if inner.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(inner.len()));
        }
        if let Some(position) = inner.iter().position(|&b| !is_key_byte(b)) {
            return Err(KeyError::InvalidByte { position, byte: inner[position] });
        }
        // Every byte is ASCII, so this cannot fail; the fallback keeps it panic-free.
        let text = std::str::from_utf8(inner).map_err(|_| KeyError::InvalidByte { position: 0, byte: inner[0] })?;
        let key = IdempotencyKey(text.to_string());
        debug_assert!(key.0.len() <= MAX_KEY_BYTES && !key.0.is_empty());
        Ok(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Visible ASCII, without the two characters a quoted string would have to escape.
fn is_key_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bare_and_quoted_keys_are_the_same_key() {
        let bare = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").expect("a UUID");
        let quoted = IdempotencyKey::parse(b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\"").expect("quoted");
        assert_eq!(bare, quoted);
        assert_eq!(bare.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
    }

    #[test]
    fn bad_keys_get_a_reason() {
        assert_eq!(IdempotencyKey::from_header_values(&[]), Err(KeyError::Missing));
        assert_eq!(IdempotencyKey::from_header_values(&[b"a", b"b"]), Err(KeyError::Repeated(2)));
        assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"\"\""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"\"abc"), Err(KeyError::UnbalancedQuote));
        assert_eq!(IdempotencyKey::parse(&[b'k'; 256]), Err(KeyError::TooLong(256)));
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok(), "the limit itself is allowed");
        assert_eq!(IdempotencyKey::parse(b"a b"), Err(KeyError::InvalidByte { position: 1, byte: b' ' }));
        assert_eq!(IdempotencyKey::parse(b"a\\b"), Err(KeyError::InvalidByte { position: 1, byte: b'\\' }));
        assert_eq!(IdempotencyKey::parse("ké".as_bytes()), Err(KeyError::InvalidByte { position: 1, byte: 0xc3 }));
        let message = KeyError::TooLong(300).to_string();
        assert!(message.contains("255"), "{message}");
    }

    proptest! {
        #[test]
        fn arbitrary_header_bytes_never_panic_and_valid_keys_are_visible_ascii(
            value in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            if let Ok(key) = IdempotencyKey::parse(&value) {
                prop_assert!(!key.as_str().is_empty() && key.as_str().len() <= MAX_KEY_BYTES);
                prop_assert!(key.as_str().bytes().all(is_key_byte));
            }
        }
    }
}
