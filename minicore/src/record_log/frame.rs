//! The on-disk frame of one record: `[len: u32 LE][crc: u32 LE][payload]`.
//!
//! This module is pure: it turns a payload into header bytes and checks whether the bytes at
//! some offset of a buffer form a valid frame. It never touches files, so recovery, the
//! reader and the property tests all judge frames with the same code.
//!
//! The CRC covers the four length bytes *and* the payload. Covering the length matters: a
//! torn or bit-flipped length would otherwise make us read a "valid" payload of the wrong
//! size and lose sync with every frame after it.
//!
//! Left out: compression, a per-frame magic number, a record type or timestamp. Callers put
//! whatever structure they need inside the payload.

use std::fmt;

/// Bytes in a frame header: 4 for the length, 4 for the CRC.
pub(crate) const HEADER_BYTES: usize = 8;

/// Bytes in a frame header, as a file offset.
pub(crate) const HEADER_BYTES_U64: u64 = HEADER_BYTES as u64;

/// Builds the header for `payload`.
///
/// The caller has already checked `payload.len()` against `max_record_bytes`, which is a
/// `u32`, so the length always fits; the assertion turns a broken caller into a crash
/// instead of a silently wrapped length on disk.
pub(crate) fn encode_header(payload: &[u8]) -> [u8; HEADER_BYTES] {
    let len = u32::try_from(payload.len()).expect("caller checked len against max_record_bytes (a u32)");
    let len_bytes = len.to_le_bytes();
    let crc = checksum(len_bytes, payload);
    let crc_bytes = crc.to_le_bytes();
    [len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3], crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]
}

/// Appends one whole frame (header and payload) to `out`.
///
/// For writers that produce a segment file without a [`RecordLog`](super::RecordLog):
/// minikv's AOF rewrite runs in a forked child, which must not start threads, and
/// writes its base this way. The result opens as an ordinary one-segment log.
/// Panics if the payload is longer than `u32::MAX` bytes.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&encode_header(payload));
    out.extend_from_slice(payload);
}

/// The CRC32 of the length bytes followed by the payload.
pub(crate) fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// A decoded header whose length has been checked against the limit, but whose CRC has not
/// been checked yet (that needs the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Payload length in bytes.
    pub(crate) len: u32,
    /// The CRC stored on disk, over the length bytes and the payload.
    pub(crate) crc: u32,
}

impl Header {
    /// Bytes the whole frame occupies, header included.
    pub(crate) fn frame_bytes(&self) -> u64 {
        HEADER_BYTES_U64 + u64::from(self.len)
    }
}

/// Decodes a header and rejects lengths over `max_record_bytes`.
///
/// A length over the limit can only come from a torn write, a bit flip, or a log written
/// with a larger limit; in every case the frame cannot be trusted as is.
pub(crate) fn decode_header(bytes: [u8; HEADER_BYTES], max_record_bytes: u32) -> Result<Header, FrameProblem> {
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > max_record_bytes {
        return Err(FrameProblem::LengthOverLimit { len, max_record_bytes });
    }
    Ok(Header { len, crc })
}

/// Checks the payload against the CRC stored in its header.
pub(crate) fn verify_payload(header: Header, payload: &[u8]) -> Result<(), FrameProblem> {
    assert_eq!(payload.len() as u64, u64::from(header.len), "caller passes exactly the payload");
    let computed = checksum(header.len.to_le_bytes(), payload);
    if computed != header.crc {
        return Err(FrameProblem::ChecksumMismatch { stored: header.crc, computed });
    }
    Ok(())
}

/// Checks whether `buf[offset..]` starts with a complete, valid frame.
///
/// Returns the payload's byte range within `buf` on success. This is the one definition of
/// "a frame that validates": length within the limit, the whole frame within `buf`, and the
/// CRC matching.
pub(crate) fn check_frame_at(
    buf: &[u8],
    offset: usize,
    max_record_bytes: u32,
) -> Result<std::ops::Range<usize>, FrameProblem> {
    assert!(offset <= buf.len(), "offset {offset} is past the buffer end {}", buf.len());
    let available = buf.len() - offset;
    let Some(header_bytes) = buf.get(offset..offset + HEADER_BYTES) else {
        return Err(FrameProblem::HeaderCutShort { available: available as u64 });
    };
    let mut fixed = [0u8; HEADER_BYTES];
    fixed.copy_from_slice(header_bytes);
    let header = decode_header(fixed, max_record_bytes)?;
    let payload_start = offset + HEADER_BYTES;
    // Cannot overflow: len <= u32::MAX and payload_start <= buf.len() <= isize::MAX.
    let payload_end = payload_start + header.len as usize;
    if payload_end > buf.len() {
        return Err(FrameProblem::PayloadCutShort { len: header.len, available: (buf.len() - payload_start) as u64 });
    }
    verify_payload(header, &buf[payload_start..payload_end])?;
    Ok(payload_start..payload_end)
}

/// Why the bytes at some offset are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameProblem {
    /// Fewer than 8 bytes remain, so not even the header is complete.
    HeaderCutShort {
        /// Bytes left in the file at this offset.
        available: u64,
    },
    /// The header claims a payload longer than `max_record_bytes`.
    LengthOverLimit {
        /// The length the header claims.
        len: u32,
        /// The limit the log was opened with.
        max_record_bytes: u32,
    },
    /// The header is fine but the file ends before the payload does.
    PayloadCutShort {
        /// The length the header claims.
        len: u32,
        /// Payload bytes actually present.
        available: u64,
    },
    /// Every byte is present but the CRC does not match.
    ChecksumMismatch {
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC of the bytes actually on disk.
        computed: u32,
    },
}

impl fmt::Display for FrameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameProblem::HeaderCutShort { available } => {
                write!(f, "the file ends {available} bytes into an 8-byte frame header")
            }
            FrameProblem::LengthOverLimit { len, max_record_bytes } => write!(
                f,
                "the frame claims {len} payload bytes, over max_record_bytes ({max_record_bytes}); \
                 if the log was written with a larger limit, reopen it with that limit"
            ),
            FrameProblem::PayloadCutShort { len, available } => {
                write!(f, "the frame claims {len} payload bytes but only {available} remain in the file")
            }
            FrameProblem::ChecksumMismatch { stored, computed } => {
                write!(f, "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = encode_header(payload).to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_frame_round_trips() {
        let bytes = frame(b"hello");
        assert_eq!(check_frame_at(&bytes, 0, 1024), Ok(8..13));
        assert_eq!(&bytes[8..13], b"hello");
    }

    #[test]
    fn an_empty_payload_is_a_valid_eight_byte_frame() {
        let bytes = frame(b"");
        assert_eq!(bytes.len(), HEADER_BYTES);
        assert_eq!(check_frame_at(&bytes, 0, 0), Ok(8..8));
    }

    #[test]
    fn zeros_never_form_a_valid_frame() {
        // Preallocated or never-written pages read back as zeros after a crash; they must
        // look like a torn tail, not like an empty record.
        let zeros = [0u8; 64];
        for offset in 0..zeros.len() {
            assert!(check_frame_at(&zeros, offset, 1024).is_err());
        }
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let good = frame(b"payload");
        assert_eq!(check_frame_at(&good[..5], 0, 1024), Err(FrameProblem::HeaderCutShort { available: 5 }));
        assert_eq!(check_frame_at(&good[..10], 0, 1024), Err(FrameProblem::PayloadCutShort { len: 7, available: 2 }));
        assert_eq!(check_frame_at(&good, 0, 3), Err(FrameProblem::LengthOverLimit { len: 7, max_record_bytes: 3 }));
        let mut flipped = good.clone();
        flipped[9] ^= 0x40;
        assert!(matches!(check_frame_at(&flipped, 0, 1024), Err(FrameProblem::ChecksumMismatch { .. })));
        // The CRC covers the length: a flipped length bit is caught even when the new
        // length still fits in the buffer.
        let mut long = frame(b"abcdefgh");
        long[0] = 4;
        assert!(matches!(check_frame_at(&long, 0, 1024), Err(FrameProblem::ChecksumMismatch { .. })));
    }
}
