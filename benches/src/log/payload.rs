//! The records every system is sent: `record_bytes` of payload whose first eight bytes
//! are the record's sequence number (little endian), the rest a fixed filler.
//!
//! The number is what lets a run check itself in two places, as TigerBeetle would:
//! the producer stamps it before the record is sent, and the consumer reads it back
//! and insists on 0, 1, 2, ... in order, each once, at full length. A broker that
//! loses, duplicates, reorders or truncates a record fails the run instead of
//! posting a good number. Compression is off everywhere, so the filler's
//! compressibility changes nothing.

/// The smallest record: the sequence number must fit.
pub const MIN_RECORD_BYTES: usize = 8;

/// A record buffer, filled, with sequence number 0; [`stamp`] it before each send.
pub fn template(record_bytes: usize) -> Vec<u8> {
    assert!(record_bytes >= MIN_RECORD_BYTES, "a record holds at least its 8-byte sequence number");
    (0..record_bytes).map(|i| if i < 8 { 0 } else { b'a' + (i % 26) as u8 }).collect()
}

/// Writes `seq` into the record.
pub fn stamp(record: &mut [u8], seq: u64) {
    record[..8].copy_from_slice(&seq.to_le_bytes());
}

/// The sequence number a record carries, if it is long enough to carry one.
pub fn sequence(record: &[u8]) -> Option<u64> {
    let head: [u8; 8] = record.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// Checks that `record` is the one expected next: the right size and sequence number.
pub fn check(record: &[u8], record_bytes: usize, expected: u64) -> Result<(), String> {
    if record.len() != record_bytes {
        return Err(format!("record {expected} came back with {} bytes, not {record_bytes}", record.len()));
    }
    match sequence(record) {
        Some(seq) if seq == expected => Ok(()),
        Some(seq) => Err(format!("expected record {expected} next, got record {seq} (lost, duplicated or reordered)")),
        None => Err(format!("record {expected} is too short to carry its sequence number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_record_reads_back() {
        let mut record = template(100);
        assert_eq!(record.len(), 100);
        stamp(&mut record, 123_456_789);
        assert_eq!(sequence(&record), Some(123_456_789));
        assert_eq!(check(&record, 100, 123_456_789), Ok(()));
    }

    #[test]
    fn a_wrong_record_is_caught() {
        let mut record = template(100);
        stamp(&mut record, 7);
        assert!(check(&record, 100, 6).is_err_and(|e| e.contains("got record 7")));
        assert!(check(&record[..99], 100, 7).is_err_and(|e| e.contains("99 bytes")));
        assert!(check(&record[..4], 4, 7).is_err_and(|e| e.contains("too short")));
    }
}
