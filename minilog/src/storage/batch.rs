//! The Kafka record batch (magic v2) as raw bytes: parse its 61-byte header, check a
//! producer's batches before anything is written, and give them offsets in place.
//!
//! A Produce request carries, for each partition, one or more v2 batches laid end to end.
//! The broker never decodes the records inside: it checks each header and the CRC, writes
//! the bytes to the log exactly as they came, and serves them back exactly as stored. That
//! is what lets a fetch be one `pread` and what keeps compressed batches compressed.
//!
//! ```text
//!  offset  size  field                 covered by the CRC?
//!   0      8     baseOffset            no  (the broker overwrites it)
//!   8      4     batchLength           no  (bytes after this field)
//!  12      4     partitionLeaderEpoch  no
//!  16      1     magic (= 2)           no
//!  17      4     crc (CRC-32C)         -
//!  21      2     attributes            yes (bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control)
//!  23      4     lastOffsetDelta       yes
//!  27      8     baseTimestamp         yes
//!  35      8     maxTimestamp          yes
//!  43      8     producerId            yes
//!  51      2     producerEpoch         yes
//!  53      4     baseSequence          yes
//!  57      4     recordCount           yes
//!  61      ...   records (varint-encoded, possibly compressed)
//! ```
//!
//! Left out, each on purpose:
//! - The records themselves are never parsed, so the broker cannot check that
//!   `lastOffsetDelta` matches the record count or that record offset deltas are
//!   0, 1, 2...; real Kafka decompresses to check (and to rewrite v0/v1 message sets). We
//!   trust `lastOffsetDelta` and bound the damage a lying client can do
//!   ([`BatchError::TooManyOffsets`]).
//! - Legacy message sets (magic 0 and 1) are refused, not converted.
//! - `LogAppendTime` topics (where the broker rewrites `maxTimestamp`, which the CRC
//!   covers, so it would have to recompute the CRC) and the leader epoch stamp.
//! - Idempotent-producer sequence checks and transaction markers: such batches are stored
//!   like any other.

use std::ops::Range;

/// Bytes in front of the part that `batchLength` counts: baseOffset (8) and batchLength (4).
/// Kafka calls this `LOG_OVERHEAD`.
pub const LOG_OVERHEAD: usize = 12;

/// Bytes in a v2 batch header, from baseOffset through recordCount.
pub const HEADER_BYTES: usize = 61;

/// The smallest legal `batchLength`: a header with no records after it.
pub const MIN_BATCH_LENGTH: usize = HEADER_BYTES - LOG_OVERHEAD;

/// The only batch format this broker stores (Kafka 0.11 and later).
pub const MAGIC_V2: i8 = 2;

/// The most offsets one append may claim: a segment addresses its batches by a `u32`
/// offset relative to the segment's base, so one append must fit in a fresh segment.
pub const MAX_OFFSETS_PER_APPEND: u64 = u32::MAX as u64;

/// Where the CRC's coverage starts (the attributes field); it runs to the end of the batch.
pub(crate) const CRC_COVERED_FROM: usize = field::CRC_COVERED_FROM;

/// Byte ranges of the header fields, named after Kafka's `DefaultRecordBatch`.
mod field {
    use std::ops::Range;

    pub(super) const BASE_OFFSET: Range<usize> = 0..8;
    pub(super) const BATCH_LENGTH: Range<usize> = 8..12;
    pub(super) const PARTITION_LEADER_EPOCH: Range<usize> = 12..16;
    pub(super) const MAGIC: usize = 16;
    pub(super) const CRC: Range<usize> = 17..21;
    /// The CRC covers everything from here to the end of the batch.
    pub(super) const CRC_COVERED_FROM: usize = 21;
    pub(super) const ATTRIBUTES: Range<usize> = 21..23;
    pub(super) const LAST_OFFSET_DELTA: Range<usize> = 23..27;
    pub(super) const BASE_TIMESTAMP: Range<usize> = 27..35;
    pub(super) const MAX_TIMESTAMP: Range<usize> = 35..43;
    pub(super) const PRODUCER_ID: Range<usize> = 43..51;
    pub(super) const PRODUCER_EPOCH: Range<usize> = 51..53;
    pub(super) const BASE_SEQUENCE: Range<usize> = 53..57;
    pub(super) const RECORD_COUNT: Range<usize> = 57..61;
}

/// Attribute bits 0-2: the compression codec.
const COMPRESSION_MASK: i16 = 0b111;
/// Attribute bit 3: set when timestamps are the broker's append time.
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
/// Attribute bit 4: the batch belongs to a transaction.
const TRANSACTIONAL_BIT: i16 = 1 << 4;
/// Attribute bit 5: the batch holds control records (transaction markers).
const CONTROL_BIT: i16 = 1 << 5;

/// What can be wrong with the bytes a producer sent (or, during recovery, with the bytes
/// found in a segment file). Every variant means "this is not a batch we can store".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes remain than the header (or the batch length) needs.
    #[error(
        "record batch is cut short: {needed} bytes are needed but only {available} remain. \
         The producer sent a partial batch, or the log file was cut in the middle of a write"
    )]
    Truncated {
        /// Bytes the header or the batch length calls for, counted from the batch's first byte.
        needed: usize,
        /// Bytes that were actually there.
        available: usize,
    },

    /// The magic byte is not 2.
    #[error(
        "record batch has magic {0}, but only magic 2 (the record batch format of Kafka 0.11 and later) \
         is supported. Upgrade the client, or stop forcing an old message format"
    )]
    BadMagic(i8),

    /// The stored CRC-32C does not match the bytes it covers.
    #[error(
        "record batch CRC-32C mismatch: the header says {expected:#010x} but the bytes hash to {actual:#010x}. \
         The batch was damaged in transit or on disk"
    )]
    CrcMismatch {
        /// The CRC in the header.
        expected: u32,
        /// The CRC of bytes 21..end of the batch.
        actual: u32,
    },

    /// `batchLength` is negative or too small to hold a v2 header.
    #[error(
        "record batch length {batch_length} is below the {MIN_BATCH_LENGTH} bytes a v2 header needs; \
         these bytes are not a record batch"
    )]
    BadLength {
        /// The `batchLength` field as found.
        batch_length: i32,
    },

    /// The batch is over the configured limit (Kafka's `max.message.bytes`).
    #[error(
        "record batch of {size} bytes is over the {max}-byte limit (max.message.bytes). \
         Lower the producer's batch.size, or raise the topic's max.message.bytes"
    )]
    TooLarge {
        /// The whole batch, the 12-byte prefix included.
        size: usize,
        /// The limit it broke.
        max: usize,
    },

    /// `recordCount` or `lastOffsetDelta` is negative.
    #[error(
        "record batch has recordCount {record_count} and lastOffsetDelta {last_offset_delta}; \
         neither may be negative"
    )]
    BadCounts {
        /// The `recordCount` field.
        record_count: i32,
        /// The `lastOffsetDelta` field.
        last_offset_delta: i32,
    },

    /// Attribute bits 0-2 name a codec Kafka does not define.
    #[error(
        "record batch uses compression codec {0}, which Kafka does not define \
         (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)"
    )]
    UnknownCompression(u8),

    /// The batches together claim more offsets than one segment can address.
    #[error(
        "the record batches claim {offsets} offsets in total, more than the {max} one append may take; \
         their lastOffsetDelta fields cannot be right"
    )]
    TooManyOffsets {
        /// Sum of `lastOffsetDelta + 1` over the batches.
        offsets: u64,
        /// [`MAX_OFFSETS_PER_APPEND`].
        max: u64,
    },

    /// Giving the batches offsets from `first_offset` would pass `i64::MAX`.
    #[error("assigning offsets from {first_offset} would overflow a 64-bit offset")]
    OffsetOverflow {
        /// The first offset that was asked for.
        first_offset: i64,
    },
}

/// A batch's compression codec. The broker never decompresses; it only reports the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing).
    Snappy,
    /// LZ4 frames.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Decodes attribute bits 0-2.
    fn from_attributes(attributes: i16) -> Result<Compression, BatchError> {
        match attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            // The mask keeps the value in 0..=7, so the cast cannot truncate.
            other => Err(BatchError::UnknownCompression(other as u8)),
        }
    }
}

/// Where a batch's timestamps come from (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer when it created each record.
    CreateTime,
    /// Set by the broker when it appended the batch.
    LogAppendTime,
}

/// The parsed header of one v2 batch. Parsing has checked the magic byte, the length's
/// lower bound, the counts and the codec; it has *not* checked that the whole batch is
/// present or that the CRC matches (see [`validate_batches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the batch's first record. Producers send 0; the broker overwrites it.
    pub base_offset: i64,
    /// The whole batch in bytes, the 12-byte prefix included (`batchLength + 12`), so that
    /// `position + batch_len` is where the next batch starts.
    pub batch_len: usize,
    /// Stamped by the leader in real Kafka; stored as sent here.
    pub partition_leader_epoch: i32,
    /// Always [`MAGIC_V2`] once parsed.
    pub magic: i8,
    /// CRC-32C of bytes 21..end of the batch.
    pub crc: u32,
    /// Codec, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Last record's offset minus `base_offset`: the batch takes offsets
    /// `base_offset ..= base_offset + last_offset_delta`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch; what the time index and retention use.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when the producer is not idempotent.
    pub producer_id: i64,
    /// Epoch of that producer id.
    pub producer_epoch: i16,
    /// Sequence number of the first record, for idempotent producers.
    pub base_sequence: i32,
    /// Records in the batch, as the producer counted them.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `bytes`, which holds whatever is available from
    /// the batch's first byte on (it may be shorter than a header, or longer than the batch).
    ///
    /// The checks run in the order that gives the most useful error: a v0/v1 message set
    /// shorter than 61 bytes reports its magic, not "truncated".
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let truncated = |needed: usize| BatchError::Truncated { needed, available: bytes.len() };
        if bytes.len() <= field::MAGIC {
            return Err(truncated(HEADER_BYTES));
        }
        let magic = bytes[field::MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        if bytes.len() < HEADER_BYTES {
            return Err(truncated(HEADER_BYTES));
        }
        let batch_length = read_i32(bytes, field::BATCH_LENGTH);
        let batch_len = match usize::try_from(batch_length) {
            Ok(len) if len >= MIN_BATCH_LENGTH => len + LOG_OVERHEAD,
            _ => return Err(BatchError::BadLength { batch_length }),
        };
        let record_count = read_i32(bytes, field::RECORD_COUNT);
        let last_offset_delta = read_i32(bytes, field::LAST_OFFSET_DELTA);
        if record_count < 0 || last_offset_delta < 0 {
            return Err(BatchError::BadCounts { record_count, last_offset_delta });
        }
        let attributes = read_i16(bytes, field::ATTRIBUTES);
        Compression::from_attributes(attributes)?;
        Ok(BatchHeader {
            base_offset: read_i64(bytes, field::BASE_OFFSET),
            batch_len,
            partition_leader_epoch: read_i32(bytes, field::PARTITION_LEADER_EPOCH),
            magic,
            crc: read_u32(bytes, field::CRC),
            attributes,
            last_offset_delta,
            base_timestamp: read_i64(bytes, field::BASE_TIMESTAMP),
            max_timestamp: read_i64(bytes, field::MAX_TIMESTAMP),
            producer_id: read_i64(bytes, field::PRODUCER_ID),
            producer_epoch: read_i16(bytes, field::PRODUCER_EPOCH),
            base_sequence: read_i32(bytes, field::BASE_SEQUENCE),
            record_count,
        })
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// How many offsets the batch takes: `lastOffsetDelta + 1`. This, not `record_count`,
    /// is what moves the log end offset, exactly as in Kafka (the two differ only for
    /// batches that compaction emptied, or for a lying client).
    pub fn offset_count(&self) -> u64 {
        // Parsing rejected a negative delta, so the sum is in 1..=2^31.
        self.last_offset_delta as u64 + 1
    }

    /// The codec in attribute bits 0-2. Parsing rejected unknown codecs, so this cannot fail.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes).unwrap_or(Compression::None)
    }

    /// Attribute bit 3.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT == 0 {
            TimestampType::CreateTime
        } else {
            TimestampType::LogAppendTime
        }
    }

    /// Attribute bit 4.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Attribute bit 5.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Checks that `records` is one or more whole, intact v2 batches and returns their headers
/// in order. Nothing is modified, so on `Err` the caller can refuse the whole request.
///
/// Checked for every batch: complete, magic 2, `batchLength` at least 49, whole batch at
/// most `max_batch_bytes` (else [`BatchError::TooLarge`]), CRC-32C, non-negative
/// `recordCount` and `lastOffsetDelta`, a known codec. Across batches: no trailing bytes,
/// and no more than [`MAX_OFFSETS_PER_APPEND`] offsets in total. Empty input is valid and
/// yields no headers.
///
/// Cost: one header parse per batch plus one CRC pass over the bytes (hardware CRC-32C).
pub fn validate_batches(records: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchHeader>, BatchError> {
    let mut headers = Vec::new();
    let mut position = 0;
    let mut offsets: u64 = 0;
    while position < records.len() {
        let rest = &records[position..];
        let header = BatchHeader::parse(rest)?;
        if header.batch_len > max_batch_bytes {
            return Err(BatchError::TooLarge { size: header.batch_len, max: max_batch_bytes });
        }
        if header.batch_len > rest.len() {
            return Err(BatchError::Truncated { needed: header.batch_len, available: rest.len() });
        }
        let actual = crc32c::crc32c(&rest[field::CRC_COVERED_FROM..header.batch_len]);
        if actual != header.crc {
            return Err(BatchError::CrcMismatch { expected: header.crc, actual });
        }
        offsets += header.offset_count();
        if offsets > MAX_OFFSETS_PER_APPEND {
            return Err(BatchError::TooManyOffsets { offsets, max: MAX_OFFSETS_PER_APPEND });
        }
        position += header.batch_len;
        headers.push(header);
    }
    debug_assert_eq!(position, records.len(), "the loop only stops at the end of the input");
    Ok(headers)
}

/// Overwrites each batch's baseOffset in place so that the batches take contiguous offsets
/// starting at `first_offset`: batch k starts right after batch k-1's last offset
/// (`base + lastOffsetDelta + 1`). Returns the offset after the last batch, which becomes
/// the log end offset.
///
/// The CRC does not cover baseOffset, so the producer's CRC stays valid and compressed
/// batches are never opened. Meant for input that [`validate_batches`] accepted; on other
/// input it stops at the first bad header with an error and may have rewritten the
/// batches before it.
pub fn assign_offsets(records: &mut [u8], first_offset: i64) -> Result<i64, BatchError> {
    let mut position = 0;
    let mut next_offset = first_offset;
    while position < records.len() {
        let header = BatchHeader::parse(&records[position..])?;
        let available = records.len() - position;
        if header.batch_len > available {
            return Err(BatchError::Truncated { needed: header.batch_len, available });
        }
        let after_batch = next_offset
            .checked_add(i64::from(header.last_offset_delta))
            .and_then(|last| last.checked_add(1))
            .ok_or(BatchError::OffsetOverflow { first_offset })?;
        records[position + field::BASE_OFFSET.start..position + field::BASE_OFFSET.end]
            .copy_from_slice(&next_offset.to_be_bytes());
        next_offset = after_batch;
        position += header.batch_len;
    }
    Ok(next_offset)
}

/// The `N` bytes of the header field at `bytes[range]`; the caller has checked the length,
/// and `range` is one of the [`field`] ranges, `N` bytes long.
fn field_bytes<const N: usize>(bytes: &[u8], range: Range<usize>) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[range]);
    array
}

/// Reads a big-endian `i64` from `bytes[range]`; the caller has checked the length.
fn read_i64(bytes: &[u8], range: Range<usize>) -> i64 {
    i64::from_be_bytes(field_bytes(bytes, range))
}

/// Reads a big-endian `i32` from `bytes[range]`; the caller has checked the length.
fn read_i32(bytes: &[u8], range: Range<usize>) -> i32 {
    i32::from_be_bytes(field_bytes(bytes, range))
}

/// Reads a big-endian `u32` from `bytes[range]`; the caller has checked the length.
fn read_u32(bytes: &[u8], range: Range<usize>) -> u32 {
    u32::from_be_bytes(field_bytes(bytes, range))
}

/// Reads a big-endian `i16` from `bytes[range]`; the caller has checked the length.
fn read_i16(bytes: &[u8], range: Range<usize>) -> i16 {
    i16::from_be_bytes(field_bytes(bytes, range))
}

/// Reads a zigzag varint (Kafka's record fields) from `bytes` at `*at`, moving `*at` past it.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// The exact record for ListOffsets by timestamp: in one *uncompressed* batch (as the
/// first bytes of `batch`), the offset and timestamp of the first record whose timestamp
/// is at least `timestamp`. `None` if the batch is compressed (its records are not
/// readable without decompressing, which the broker never does), malformed, or has no
/// such record.
///
/// A record is: length varint, attributes i8, timestampDelta varint, offsetDelta varint,
/// then key, value and headers, which are skipped by the length.
pub fn first_record_at_or_after(batch: &[u8], timestamp: i64) -> Option<(i64, i64)> {
    let header = BatchHeader::parse(batch).ok()?;
    if header.compression() != Compression::None || header.batch_len > batch.len() {
        return None;
    }
    let end = header.batch_len;
    let mut at = HEADER_BYTES;
    for _ in 0..header.record_count.max(0) {
        let length = read_varint(batch, &mut at)?;
        let record_start = at;
        let record_end = record_start.checked_add(usize::try_from(length).ok()?)?;
        if record_end > end {
            return None;
        }
        at += 1; // attributes
        let timestamp_delta = read_varint(batch, &mut at)?;
        let offset_delta = read_varint(batch, &mut at)?;
        let record_timestamp = header.base_timestamp.checked_add(timestamp_delta)?;
        if record_timestamp >= timestamp {
            return Some((header.base_offset.checked_add(offset_delta)?, record_timestamp));
        }
        at = record_end;
    }
    None
}

/// Hand-built batches for the storage unit tests, independent of any Kafka client library
/// (the integration tests build theirs with `kafka-protocol`, and one test here checks
/// that the two agree).
#[cfg(test)]
pub(crate) mod testing {
    use super::{field, HEADER_BYTES, LOG_OVERHEAD, MAGIC_V2};

    /// What to put in a hand-built batch.
    #[derive(Debug, Clone)]
    pub(crate) struct BatchSpec {
        /// Number of records; each gets `value_len` bytes of value and no key.
        pub(crate) records: usize,
        /// Bytes in each record's value.
        pub(crate) value_len: usize,
        /// Timestamp of record 0; record i gets `base_timestamp + i`.
        pub(crate) base_timestamp: i64,
        /// Attribute bits as sent (compression bits here make the records "compressed"
        /// in name only: the test bytes are not really compressed, which the broker can't tell).
        pub(crate) attributes: i16,
    }

    impl BatchSpec {
        /// An uncompressed batch of `records` records with `value_len`-byte values.
        pub(crate) fn new(records: usize, value_len: usize, base_timestamp: i64) -> BatchSpec {
            BatchSpec { records, value_len, base_timestamp, attributes: 0 }
        }
    }

    /// Builds one valid v2 batch with base offset 0, records varint-encoded as Kafka does.
    pub(crate) fn build_batch(spec: &BatchSpec) -> Vec<u8> {
        let mut body = Vec::new();
        for index in 0..spec.records {
            encode_record(&mut body, index, spec);
        }
        let last_offset_delta = spec.records.saturating_sub(1);
        let max_timestamp = spec.base_timestamp + last_offset_delta as i64;
        build_raw_batch(
            spec.attributes,
            last_offset_delta as i32,
            spec.records as i32,
            spec.base_timestamp,
            max_timestamp,
            &body,
        )
    }

    /// Builds a batch around an arbitrary body with the given header fields and a correct
    /// CRC: for batches whose body the broker must not look into.
    pub(crate) fn build_raw_batch(
        attributes: i16,
        last_offset_delta: i32,
        record_count: i32,
        base_timestamp: i64,
        max_timestamp: i64,
        body: &[u8],
    ) -> Vec<u8> {
        let mut batch = vec![0u8; HEADER_BYTES];
        let batch_length = i32::try_from(HEADER_BYTES - LOG_OVERHEAD + body.len()).expect("test batch under 2 GiB");
        batch[field::BATCH_LENGTH].copy_from_slice(&batch_length.to_be_bytes());
        batch[field::PARTITION_LEADER_EPOCH].copy_from_slice(&(-1i32).to_be_bytes());
        batch[field::MAGIC] = MAGIC_V2 as u8;
        batch[field::ATTRIBUTES].copy_from_slice(&attributes.to_be_bytes());
        batch[field::LAST_OFFSET_DELTA].copy_from_slice(&last_offset_delta.to_be_bytes());
        batch[field::BASE_TIMESTAMP].copy_from_slice(&base_timestamp.to_be_bytes());
        batch[field::MAX_TIMESTAMP].copy_from_slice(&max_timestamp.to_be_bytes());
        batch[field::PRODUCER_ID].copy_from_slice(&(-1i64).to_be_bytes());
        batch[field::PRODUCER_EPOCH].copy_from_slice(&(-1i16).to_be_bytes());
        batch[field::BASE_SEQUENCE].copy_from_slice(&(-1i32).to_be_bytes());
        batch[field::RECORD_COUNT].copy_from_slice(&record_count.to_be_bytes());
        batch.extend_from_slice(body);
        let crc = crc32c::crc32c(&batch[field::CRC_COVERED_FROM..]);
        batch[field::CRC].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// One v2 record: length, attributes, timestampDelta, offsetDelta, key, value, headers.
    fn encode_record(out: &mut Vec<u8>, index: usize, spec: &BatchSpec) {
        let mut record = Vec::new();
        record.push(0); // record attributes: unused by Kafka
        put_varint(&mut record, index as i64); // timestampDelta
        put_varint(&mut record, index as i64); // offsetDelta
        put_varint(&mut record, -1); // key: null
        put_varint(&mut record, spec.value_len as i64);
        record.extend((0..spec.value_len).map(|byte| (index + byte) as u8));
        put_varint(&mut record, 0); // no headers
        put_varint(out, record.len() as i64);
        out.extend_from_slice(&record);
    }

    /// Kafka's zigzag varint (the same encoding protobuf uses for sint64).
    fn put_varint(out: &mut Vec<u8>, value: i64) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        while zigzag >= 0x80 {
            out.push((zigzag as u8) | 0x80);
            zigzag >>= 7;
        }
        out.push(zigzag as u8);
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::{
        Compression as KafkaCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType as KafkaTimestampType,
    };
    use proptest::prelude::*;

    use super::testing::{build_batch, build_raw_batch, BatchSpec};
    use super::*;

    /// Kafka's default `max.message.bytes`.
    const MAX: usize = 1_048_588;

    fn batch(records: usize) -> Vec<u8> {
        build_batch(&BatchSpec::new(records, 10, 1_000))
    }

    fn concat(batches: &[Vec<u8>]) -> Vec<u8> {
        batches.iter().flatten().copied().collect()
    }

    /// One v2 batch of `records` keyless records encoded by kafka-protocol, a client library,
    /// so that the broker's side is checked against code it does not share: record `i` gets
    /// `timestamp(i)` and `value(i)`. (The integration tests have their own builder in
    /// `tests/support`, which unit tests cannot reach.)
    fn kafka_protocol_batch(
        records: i64,
        compression: KafkaCompression,
        timestamp: impl Fn(i64) -> i64,
        value: impl Fn(i64) -> Vec<u8>,
    ) -> Vec<u8> {
        let records: Vec<Record> = (0..records)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: KafkaTimestampType::Creation,
                offset: i,
                // kafka-protocol starts a new batch whenever offset - sequence changes.
                sequence: (i - 1) as i32,
                timestamp: timestamp(i),
                key: None,
                value: Some(bytes::Bytes::from(value(i))),
                headers: Default::default(),
            })
            .collect();
        let mut buffer = bytes::BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression };
        RecordBatchEncoder::encode(&mut buffer, &records, &options).expect("kafka-protocol encodes the batch");
        buffer.to_vec()
    }

    #[test]
    fn parses_a_hand_built_batch() {
        let bytes = batch(3);
        let headers = validate_batches(&bytes, MAX).expect("valid batch");
        assert_eq!(headers.len(), 1);
        let header = headers[0];
        assert_eq!(header.batch_len, bytes.len());
        assert_eq!(header.magic, MAGIC_V2);
        assert_eq!((header.record_count, header.last_offset_delta), (3, 2));
        assert_eq!((header.base_timestamp, header.max_timestamp), (1_000, 1_002));
        assert_eq!(header.compression(), Compression::None);
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        assert!(!header.is_transactional() && !header.is_control());
        assert_eq!(header.offset_count(), 3);
    }

    /// Our hand builder and the `kafka-protocol` decoder agree on the format, so the unit
    /// tests here are not checking the code against its own misunderstanding.
    #[test]
    fn kafka_protocol_decodes_the_hand_built_batch() {
        let mut bytes = bytes::Bytes::from(batch(4));
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).expect("kafka-protocol decodes it");
        assert_eq!(set.records.len(), 4);
        assert_eq!(set.records[3].offset, 3);
        assert_eq!(set.records[3].timestamp, 1_003);
        assert_eq!(set.records[3].value.as_deref().map(<[u8]>::len), Some(10));
    }

    #[test]
    fn kafka_protocol_batches_validate() {
        let bytes = kafka_protocol_batch(5, KafkaCompression::None, |i| 5_000 + i, |_| vec![7u8; 100]);
        let headers = validate_batches(&bytes, MAX).expect("kafka-protocol's batch validates");
        assert_eq!(headers.len(), 1);
        assert_eq!((headers[0].record_count, headers[0].last_offset_delta, headers[0].max_timestamp), (5, 4, 5_004));
    }

    #[test]
    fn assigns_contiguous_offsets_and_keeps_crcs_valid() {
        let mut bytes = concat(&[batch(3), batch(1), batch(5)]);
        let next = assign_offsets(&mut bytes, 100).expect("assign");
        assert_eq!(next, 109);
        let headers = validate_batches(&bytes, MAX).expect("still valid: the CRC does not cover baseOffset");
        let bases: Vec<i64> = headers.iter().map(|h| h.base_offset).collect();
        assert_eq!(bases, vec![100, 103, 104]);
        assert_eq!(headers[2].last_offset(), 108);
    }

    #[test]
    fn compressed_batches_are_accepted_without_being_opened() {
        // A "zstd" batch whose body is noise: the broker must not care.
        let noise: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
        let mut bytes = build_raw_batch(4, 9, 10, 1, 2, &noise);
        let headers = validate_batches(&bytes, MAX).expect("valid");
        assert_eq!(headers[0].compression(), Compression::Zstd);
        let before = bytes.clone();
        assert_eq!(assign_offsets(&mut bytes, 42), Ok(52));
        assert_eq!(&bytes[8..], &before[8..], "only baseOffset changes");
        assert_eq!(&bytes[..8], &42i64.to_be_bytes());
    }

    #[test]
    fn rejects_each_kind_of_damage() {
        let good = batch(2);

        let mut flipped = good.clone();
        flipped[HEADER_BYTES + 3] ^= 0x01;
        assert!(matches!(validate_batches(&flipped, MAX), Err(BatchError::CrcMismatch { .. })));

        let mut old_magic = good.clone();
        old_magic[field::MAGIC] = 1;
        assert_eq!(validate_batches(&old_magic, MAX), Err(BatchError::BadMagic(1)));

        let cut = &good[..good.len() - 1];
        assert_eq!(
            validate_batches(cut, MAX),
            Err(BatchError::Truncated { needed: good.len(), available: good.len() - 1 })
        );

        assert_eq!(
            validate_batches(&good[..20], MAX),
            Err(BatchError::Truncated { needed: HEADER_BYTES, available: 20 })
        );

        let mut short_length = good.clone();
        short_length[field::BATCH_LENGTH].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(validate_batches(&short_length, MAX), Err(BatchError::BadLength { batch_length: 48 }));

        let mut negative_length = good.clone();
        negative_length[field::BATCH_LENGTH].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(validate_batches(&negative_length, MAX), Err(BatchError::BadLength { batch_length: -5 }));

        assert_eq!(
            validate_batches(&good, good.len() - 1),
            Err(BatchError::TooLarge { size: good.len(), max: good.len() - 1 })
        );
        assert!(validate_batches(&good, good.len()).is_ok(), "the limit is inclusive");

        let negative_count = build_raw_batch(0, 0, -1, 0, 0, &[]);
        assert_eq!(
            validate_batches(&negative_count, MAX),
            Err(BatchError::BadCounts { record_count: -1, last_offset_delta: 0 })
        );

        let bad_codec = build_raw_batch(5, 0, 1, 0, 0, &[]);
        assert_eq!(validate_batches(&bad_codec, MAX), Err(BatchError::UnknownCompression(5)));

        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(validate_batches(&trailing, MAX), Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn lying_offset_deltas_are_bounded() {
        let huge = build_raw_batch(0, i32::MAX, 1, 0, 0, &[]);
        let two = concat(&[huge.clone(), huge.clone()]);
        assert!(validate_batches(&huge, MAX).is_ok(), "one batch alone fits a segment");
        assert!(matches!(validate_batches(&two, MAX), Err(BatchError::TooManyOffsets { .. })));
        let mut one = huge;
        assert_eq!(
            assign_offsets(&mut one, i64::MAX - 5),
            Err(BatchError::OffsetOverflow { first_offset: i64::MAX - 5 })
        );
    }

    #[test]
    fn empty_input_is_zero_batches() {
        assert_eq!(validate_batches(&[], MAX), Ok(vec![]));
        assert_eq!(assign_offsets(&mut [], 7), Ok(7));
    }

    /// Errors read as sentences a user can act on.
    #[test]
    fn error_messages_say_what_is_wrong() {
        let message = BatchError::BadMagic(1).to_string();
        assert!(message.contains("magic 1") && message.contains("Kafka 0.11"), "{message}");
        let message = BatchError::TooLarge { size: 2_000_000, max: MAX }.to_string();
        assert!(message.contains("2000000") && message.contains("max.message.bytes"), "{message}");
    }

    /// A batch spec from which proptest builds whole valid batches.
    fn arb_batch() -> impl Strategy<Value = Vec<u8>> {
        (0usize..20, 0usize..64, any::<i64>(), 0i16..5).prop_map(|(records, value_len, ts, codec)| {
            let ts = ts / 4; // keep base + count from overflowing
            build_batch(&BatchSpec { records, value_len, base_timestamp: ts, attributes: codec })
        })
    }

    proptest! {
        /// Arbitrary bytes never panic the validator or the offset assigner, and whatever
        /// is accepted round-trips: offsets assign, the result still validates with the same
        /// headers apart from baseOffset, and the batches tile the input exactly.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), first in any::<i64>()) {
            let mut copy = bytes.clone();
            let _ = assign_offsets(&mut copy, first);
            if let Ok(headers) = validate_batches(&bytes, MAX) {
                prop_assert_eq!(headers.iter().map(|h| h.batch_len).sum::<usize>(), bytes.len());
                let mut assigned = bytes.clone();
                if assign_offsets(&mut assigned, 0).is_ok() {
                    let again = validate_batches(&assigned, MAX).expect("assigned batches still validate");
                    prop_assert_eq!(again.len(), headers.len());
                }
            }
        }

        /// Valid batches, then one flipped byte: the validator never panics, and a flip in
        /// the CRC-covered part or the CRC itself is always caught.
        #[test]
        fn one_flipped_byte_is_caught(
            batches in proptest::collection::vec(arb_batch(), 1..5),
            flip_at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let bytes = concat(&batches);
            let headers = validate_batches(&bytes, MAX).expect("built batches are valid");
            prop_assert_eq!(headers.len(), batches.len());

            let mut assigned = bytes.clone();
            let next = assign_offsets(&mut assigned, 1_000).expect("assign");
            let reparsed = validate_batches(&assigned, MAX).expect("valid after assign");
            let mut expected_base = 1_000;
            for (before, after) in headers.iter().zip(&reparsed) {
                prop_assert_eq!(after.base_offset, expected_base);
                prop_assert_eq!(BatchHeader { base_offset: before.base_offset, ..*after }, *before);
                expected_base = after.last_offset() + 1;
            }
            prop_assert_eq!(next, expected_base);

            let at = flip_at.index(bytes.len());
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            let result = validate_batches(&damaged, MAX);
            let mut start = 0;
            for header in &headers {
                if at >= start + field::CRC.start && at < start + header.batch_len {
                    prop_assert!(result.is_err(), "flip at {} inside the CRC-covered bytes was accepted", at);
                }
                start += header.batch_len;
            }
        }
    }

    /// A batch built by kafka-protocol with timestamps 100, 110, ... 190.
    fn timestamped_batch(compression: KafkaCompression) -> Vec<u8> {
        let mut batch = kafka_protocol_batch(10, compression, |i| 100 + 10 * i, |i| vec![b'v'; i as usize * 3]);
        assign_offsets(&mut batch, 1000).expect("a valid batch takes offsets");
        batch
    }

    #[test]
    fn finds_the_exact_record_by_timestamp_in_uncompressed_batches() {
        let batch = timestamped_batch(KafkaCompression::None);
        assert_eq!(first_record_at_or_after(&batch, 0), Some((1000, 100)));
        assert_eq!(first_record_at_or_after(&batch, 100), Some((1000, 100)));
        assert_eq!(first_record_at_or_after(&batch, 101), Some((1001, 110)));
        assert_eq!(first_record_at_or_after(&batch, 150), Some((1005, 150)));
        assert_eq!(first_record_at_or_after(&batch, 190), Some((1009, 190)));
        assert_eq!(first_record_at_or_after(&batch, 191), None);
        // Cut anywhere: never a panic, never a record past the cut.
        for cut in 0..batch.len() {
            assert_eq!(first_record_at_or_after(&batch[..cut], 150), None, "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_record_finder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), ts: i64) {
            let _ = first_record_at_or_after(&bytes, ts);
        }
    }
}
