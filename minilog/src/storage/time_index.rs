//! The time index (`.timeindex`) of one segment: which offset to start from to find the
//! first batch whose max timestamp is at least some time `t` (Kafka's ListOffsets by time).
//!
//! An entry is 12 bytes, big-endian: a timestamp (`i64`) and an offset relative to the
//! segment's base (`u32`). Each entry `(T, O)` says "the largest timestamp in this segment
//! up to and including the batch at base offset `O` is `T`, and `O` is the first batch
//! that reached it". Entries are added alongside offset-index entries, only when the
//! segment's running max timestamp has grown since the last one, plus a final entry when
//! the segment is sealed so that its last entry is the segment's true max timestamp.
//! So timestamps and offsets both strictly increase, and a lookup for `t` takes the entry
//! with the largest `T <= t`: every batch before `O` has a max timestamp below `T`, so none
//! can be the answer, and the scan starts at `O`.
//!
//! Timestamps are the producers' (CreateTime); a client with a skewed clock makes the
//! running max jump, which is also how Kafka behaves. Left out: LogAppendTime.
//!
//! The file handling (mmap, preallocation, trimming, lookup) is [`SparseIndex`]'s.

use super::sparse_index::{relative_offset, IndexEntry, IndexProblem, SparseIndex};

/// Bytes in one time index entry: timestamp (8) and relative offset (4).
pub(crate) const TIME_ENTRY_BYTES: usize = 12;

/// One time index entry, with the offset made absolute again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimestampOffset {
    /// The segment's running max timestamp at `offset`.
    pub(crate) timestamp: i64,
    /// Base offset of the first batch that carried `timestamp`.
    pub(crate) offset: i64,
}

impl IndexEntry for TimestampOffset {
    const BYTES: usize = TIME_ENTRY_BYTES;

    fn decode(bytes: &[u8], base_offset: i64) -> TimestampOffset {
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&bytes[..8]);
        let relative = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        TimestampOffset { timestamp: i64::from_be_bytes(timestamp), offset: base_offset + i64::from(relative) }
    }

    fn encode(&self, base_offset: i64, bytes: &mut [u8]) {
        bytes[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        bytes[8..].copy_from_slice(&relative_offset(self.offset, base_offset).to_be_bytes());
    }

    fn offset(&self) -> i64 {
        self.offset
    }

    /// A lookup is by timestamp.
    fn key(&self) -> i64 {
        self.timestamp
    }

    /// Timestamps and offsets both strictly increase, and no timestamp is negative (Kafka's
    /// -1 means "no timestamp", which is never recorded).
    fn follows(&self, previous: Option<TimestampOffset>) -> bool {
        match previous {
            Some(previous) => self.timestamp > previous.timestamp && self.offset > previous.offset,
            None => self.timestamp >= 0,
        }
    }
}

/// The `.timeindex` of one segment. Its lookup ([`SparseIndex::lookup`]) finds the entry
/// with the largest timestamp at or below the target.
pub(crate) type TimeIndex = SparseIndex<TimestampOffset>;

impl TimeIndex {
    /// True when only the slot kept for the final entry (see [`TimeIndex::seal_entry`]) is left.
    pub(crate) fn is_full(&self) -> bool {
        self.len() + 1 >= self.capacity()
    }

    /// Adds `(timestamp, offset)` if `timestamp` is above the last entry's. Keeps the last
    /// slot free for the seal entry; a full index just stops growing (it is an accelerator).
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        if !self.is_full() {
            self.append_if_newer(timestamp, offset);
        }
    }

    /// The entry added when the segment is sealed: its true max timestamp, so that a sealed
    /// segment's max timestamp is its time index's last entry. May use the reserved slot.
    pub(crate) fn seal_entry(&mut self, timestamp: i64, offset: i64) {
        if self.len() < self.capacity() {
            self.append_if_newer(timestamp, offset);
        }
    }

    fn append_if_newer(&mut self, timestamp: i64, offset: i64) {
        // A segment's running max starts at -1 (Kafka's "no timestamp"), so there is nothing
        // to record until some batch carries a real one.
        let newer = match self.last() {
            Some(last) => timestamp > last.timestamp,
            None => timestamp >= 0,
        };
        if newer {
            // A newer max always comes from a later batch; `push` asserts that.
            self.push(TimestampOffset { timestamp, offset });
        }
    }

    /// The sanity check on open: timestamps and offsets strictly increase, timestamps are
    /// not negative, and every offset is inside `base..end_offset`.
    pub(crate) fn check(&self, end_offset: i64) -> Result<(), IndexProblem> {
        self.check_entries(end_offset, |_, _| Ok(()))
    }

    /// Drops every entry for an offset at or past `end_offset`: what recovery does after it
    /// cut the log.
    pub(crate) fn truncate_to_offset(&mut self, end_offset: i64) {
        self.truncate_from_first(|entry| entry.offset >= end_offset);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn new_index(dir: &Path, max_bytes: usize) -> TimeIndex {
        TimeIndex::create(&dir.join("00000000000000000050.timeindex"), 50, max_bytes).expect("create")
    }

    #[test]
    fn only_a_growing_max_adds_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = new_index(dir.path(), 1200);
        index.maybe_append(-1, 50); // no timestamps yet
        index.maybe_append(1_000, 51);
        index.maybe_append(1_000, 52); // not newer
        index.maybe_append(900, 53); // older
        index.maybe_append(2_000, 60);
        assert_eq!(index.len(), 2);
        assert_eq!(index.last(), Some(TimestampOffset { timestamp: 2_000, offset: 60 }));
        assert_eq!(index.check(61), Ok(()));
    }

    #[test]
    fn lookup_takes_the_largest_timestamp_at_or_below_the_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = new_index(dir.path(), 1200);
        for (timestamp, offset) in [(100, 50), (200, 55), (300, 70)] {
            index.maybe_append(timestamp, offset);
        }
        assert_eq!(index.lookup(99), None);
        assert_eq!(index.lookup(100).map(|(_, e)| e.offset), Some(50));
        assert_eq!(index.lookup(250).map(|(_, e)| e.offset), Some(55));
        assert_eq!(index.lookup(i64::MAX).map(|(i, e)| (i, e.offset)), Some((2, 70)));
    }

    #[test]
    fn the_last_slot_is_kept_for_the_seal_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = new_index(dir.path(), 36); // three entries
        index.maybe_append(10, 50);
        index.maybe_append(20, 51);
        assert!(index.is_full());
        index.maybe_append(30, 52);
        assert_eq!(index.len(), 2, "the third slot is reserved");
        index.seal_entry(40, 53);
        assert_eq!(index.last(), Some(TimestampOffset { timestamp: 40, offset: 53 }));
    }

    #[test]
    fn check_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000050.timeindex");
        let mut index = new_index(dir.path(), 1200);
        index.maybe_append(100, 50);
        index.maybe_append(200, 55);
        assert!(matches!(index.check(55), Err(IndexProblem::OffsetOutOfSegment { entry: 1, .. })));
        drop(index);

        let mut reopened = TimeIndex::open(&path, 50).expect("open").expect("exists");
        assert!(reopened.check(100).is_err(), "preallocated zero entries do not increase");
        reopened.strip_trailing_zeroes();
        assert_eq!(reopened.check(100), Ok(()));
        reopened.truncate_to_offset(55);
        assert_eq!(reopened.len(), 1);
    }
}
