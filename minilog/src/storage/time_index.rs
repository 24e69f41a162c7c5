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
//! The file handling (mmap, preallocation, trimming) is the offset index's [`IndexFile`].

use std::io;
use std::path::Path;

use super::index::{IndexFile, IndexProblem};

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

/// The `.timeindex` of one segment.
pub(crate) struct TimeIndex {
    /// The entries on disk.
    file: IndexFile,
    /// The segment's base offset; entries store offsets relative to it.
    base_offset: i64,
}

impl TimeIndex {
    /// A new, empty time index preallocated to `max_index_bytes`.
    pub(crate) fn create(path: &Path, base_offset: i64, max_index_bytes: usize) -> io::Result<TimeIndex> {
        Ok(TimeIndex { file: IndexFile::create(path, TIME_ENTRY_BYTES, max_index_bytes)?, base_offset })
    }

    /// Opens the time index at `path` with every entry in the file counted; `Ok(None)` when
    /// it is missing or its length is wrong. The caller runs [`TimeIndex::check`].
    pub(crate) fn open(path: &Path, base_offset: i64) -> io::Result<Option<TimeIndex>> {
        Ok(IndexFile::open(path, TIME_ENTRY_BYTES)?.map(|file| TimeIndex { file, base_offset }))
    }

    /// The underlying file.
    pub(crate) fn file(&self) -> &IndexFile {
        &self.file
    }

    /// The underlying file, for resizing and trimming.
    pub(crate) fn file_mut(&mut self) -> &mut IndexFile {
        &mut self.file
    }

    /// Entries in use.
    pub(crate) fn len(&self) -> usize {
        self.file.len()
    }

    /// True when only the slot kept for the final entry (see [`TimeIndex::seal_entry`]) is left.
    pub(crate) fn is_full(&self) -> bool {
        self.file.len() + 1 >= self.file.capacity()
    }

    /// Entry `index`, made absolute.
    pub(crate) fn entry(&self, index: usize) -> TimestampOffset {
        let bytes = self.file.entry(index);
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&bytes[..8]);
        let relative = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        TimestampOffset { timestamp: i64::from_be_bytes(timestamp), offset: self.base_offset + i64::from(relative) }
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<TimestampOffset> {
        self.len().checked_sub(1).map(|index| self.entry(index))
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
        if self.file.len() < self.file.capacity() {
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
        if !newer {
            return;
        }
        if let Some(last) = self.last() {
            assert!(offset > last.offset, "time index offsets must increase: {offset} after {}", last.offset);
        }
        let relative = u32::try_from(offset - self.base_offset)
            .expect("the segment rolls before a relative offset overflows u32 (validated at append)");
        let mut entry = [0u8; TIME_ENTRY_BYTES];
        entry[..8].copy_from_slice(&timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&relative.to_be_bytes());
        self.file.push(&entry);
    }

    /// The entry with the largest timestamp `<= target`, as (entry index, entry); `None`
    /// when every entry is later (the scan then starts at the segment's first byte).
    pub(crate) fn lookup(&self, target: i64) -> Option<(usize, TimestampOffset)> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.entry(middle).timestamp <= target {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1).map(|index| (index, self.entry(index)))
    }

    /// The sanity check on open: timestamps and offsets strictly increase, timestamps are
    /// not negative, and every offset is inside `base..end_offset`.
    pub(crate) fn check(&self, end_offset: i64) -> Result<(), IndexProblem> {
        let mut previous: Option<TimestampOffset> = None;
        for index in 0..self.len() {
            let entry = self.entry(index);
            let increasing = match previous {
                Some(previous) => entry.timestamp > previous.timestamp && entry.offset > previous.offset,
                None => entry.timestamp >= 0,
            };
            if !increasing {
                return Err(IndexProblem::NotIncreasing { entry: index });
            }
            if entry.offset >= end_offset {
                return Err(IndexProblem::OffsetOutOfSegment {
                    entry: index,
                    offset: entry.offset,
                    base: self.base_offset,
                    end: end_offset,
                });
            }
            previous = Some(entry);
        }
        Ok(())
    }

    /// Drops every entry for an offset at or past `end_offset`: what recovery does after it
    /// cut the log.
    pub(crate) fn truncate_to_offset(&mut self, end_offset: i64) {
        let keep = (0..self.len()).position(|index| self.entry(index).offset >= end_offset).unwrap_or(self.len());
        self.file.truncate(keep);
    }
}

#[cfg(test)]
mod tests {
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
        reopened.file_mut().strip_trailing_zeroes();
        assert_eq!(reopened.check(100), Ok(()));
        reopened.truncate_to_offset(55);
        assert_eq!(reopened.len(), 1);
    }
}
