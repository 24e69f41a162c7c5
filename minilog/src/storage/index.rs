//! The sparse offset index (`.index`) of one segment: where in the `.log` to start reading
//! for some offset.
//!
//! An entry is 8 bytes, big-endian as in Kafka: the offset of a batch relative to the
//! segment's base (`u32`) and the byte position of that batch in the `.log` (`u32`). The
//! segment adds one entry every `index_interval_bytes` of log, so the index stays small
//! (a 1 GiB segment at 4 KiB intervals has 256 Ki entries, 2 MiB) and a lookup is a
//! binary search followed by a short forward scan of the log.
//!
//! One difference from Kafka: an entry names the batch's *base* offset, where Kafka names
//! its last offset. Either lets a lookup start at a batch boundary at or before the target;
//! the base offset also lets a reader check an entry against the batch header it points at.
//!
//! The file handling (mmap, preallocation, trimming, lookup) is [`SparseIndex`]'s.

use super::sparse_index::{relative_offset, IndexEntry, IndexProblem, SparseIndex};

/// Bytes in one offset index entry: relative offset (4) and position (4).
pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;

/// One offset index entry, with the offset made absolute again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetPosition {
    /// Base offset of the batch.
    pub(crate) offset: i64,
    /// Byte position of the batch in the `.log`.
    pub(crate) position: u64,
}

impl IndexEntry for OffsetPosition {
    const BYTES: usize = OFFSET_ENTRY_BYTES;

    fn decode(bytes: &[u8], base_offset: i64) -> OffsetPosition {
        let relative = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let position = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        OffsetPosition { offset: base_offset + i64::from(relative), position: u64::from(position) }
    }

    fn encode(&self, base_offset: i64, bytes: &mut [u8]) {
        let position = u32::try_from(self.position).expect("the segment rolls before a position overflows u32");
        bytes[..4].copy_from_slice(&relative_offset(self.offset, base_offset).to_be_bytes());
        bytes[4..].copy_from_slice(&position.to_be_bytes());
    }

    fn offset(&self) -> i64 {
        self.offset
    }

    /// A lookup is by offset.
    fn key(&self) -> i64 {
        self.offset
    }

    /// Offsets and positions both strictly increase: batches are indexed in log order.
    fn follows(&self, previous: Option<OffsetPosition>) -> bool {
        previous.is_none_or(|previous| self.offset > previous.offset && self.position > previous.position)
    }
}

/// The `.index` of one segment. Its lookup ([`SparseIndex::lookup`]) finds the entry with
/// the largest offset at or below the target.
pub(crate) type OffsetIndex = SparseIndex<OffsetPosition>;

impl OffsetIndex {
    /// True when no entry can be added.
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.capacity()
    }

    /// Records that the batch with base offset `offset` starts at byte `position`. Returns
    /// false (and records nothing) when the index is full: the index is only an accelerator,
    /// and the segment rolls before its next append.
    pub(crate) fn append(&mut self, offset: i64, position: u64) -> bool {
        if self.is_full() {
            return false;
        }
        self.push(OffsetPosition { offset, position });
        true
    }

    /// The sanity check on open: offsets and positions strictly increase, every position is
    /// inside the log, and every offset inside `base..end_offset`.
    pub(crate) fn check(&self, log_bytes: u64, end_offset: i64) -> Result<(), IndexProblem> {
        self.check_entries(end_offset, |index, entry| {
            if entry.position >= log_bytes {
                return Err(IndexProblem::PastLogEnd { entry: index, position: entry.position, log_bytes });
            }
            Ok(())
        })
    }

    /// Drops every entry at or past byte `log_bytes`: what recovery does after it cut the log.
    pub(crate) fn truncate_to_log_bytes(&mut self, log_bytes: u64) {
        self.truncate_from_first(|entry| entry.position >= log_bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn new_index(dir: &Path, max_bytes: usize) -> OffsetIndex {
        OffsetIndex::create(&dir.join("00000000000000000100.index"), 100, max_bytes).expect("create")
    }

    #[test]
    fn lookup_finds_the_floor_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = new_index(dir.path(), 1024);
        for (offset, position) in [(110, 4_000), (125, 8_100), (140, 12_500)] {
            assert!(index.append(offset, position));
        }
        assert_eq!(index.lookup(105), None, "before the first entry: scan from byte 0");
        assert_eq!(index.lookup(110).map(|(_, e)| e.position), Some(4_000));
        assert_eq!(index.lookup(124).map(|(_, e)| e.position), Some(4_000));
        assert_eq!(index.lookup(125).map(|(_, e)| e.position), Some(8_100));
        assert_eq!(index.lookup(1_000_000).map(|(i, e)| (i, e.offset)), Some((2, 140)));
    }

    #[test]
    fn preallocates_then_trims_and_reopens_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.index");
        let mut index = new_index(dir.path(), 1024);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 1024, "preallocated");
        index.append(101, 10);
        index.append(102, 20);
        index.trim_and_flush().expect("trim");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 16, "trimmed to its two entries");
        assert!(index.is_full(), "a trimmed index takes no more entries");
        drop(index);

        let reopened = OffsetIndex::open(&path, 100).expect("open").expect("exists");
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.check(100, 200), Ok(()));
        assert_eq!(reopened.entry(1), OffsetPosition { offset: 102, position: 20 });
    }

    /// The crash case: the file is still preallocated, with zero entries after the real ones.
    #[test]
    fn trailing_zero_entries_of_a_crashed_preallocated_file_are_stripped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.index");
        let mut index = new_index(dir.path(), 800);
        index.append(105, 500);
        index.append(109, 900);
        drop(index); // no trim: as after kill -9

        let mut reopened = OffsetIndex::open(&path, 100).expect("open").expect("exists");
        assert_eq!(reopened.len(), 100, "every slot counts until stripped");
        assert!(matches!(reopened.check(1_000, 200), Err(IndexProblem::NotIncreasing { entry: 2 })));
        reopened.strip_trailing_zeroes();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.check(1_000, 200), Ok(()));
    }

    #[test]
    fn check_rejects_what_cannot_be_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = new_index(dir.path(), 1024);
        index.append(105, 500);
        index.append(109, 900);
        assert!(matches!(index.check(900, 200), Err(IndexProblem::PastLogEnd { entry: 1, .. })));
        assert!(matches!(index.check(1_000, 109), Err(IndexProblem::OffsetOutOfSegment { entry: 1, .. })));

        let path = dir.path().join("bad.index");
        std::fs::write(&path, [0u8; 12]).expect("write");
        assert!(OffsetIndex::open(&path, 0).expect("open").is_none(), "12 bytes is not a whole number of entries");
        assert!(OffsetIndex::open(&dir.path().join("missing.index"), 0).expect("open").is_none());
    }

    #[test]
    fn truncation_zeroes_dropped_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = new_index(dir.path(), 1024);
        for (offset, position) in [(101, 100), (102, 200), (103, 300)] {
            index.append(offset, position);
        }
        index.truncate_to_log_bytes(200);
        assert_eq!(index.len(), 1);
        assert!(index.append(102, 250), "appends continue after the cut");
    }

    /// The order `check` enforces on open is also asserted at every append, so a bug in
    /// the indexing rule crashes instead of writing an index that the next open rebuilds.
    #[test]
    #[should_panic(expected = "index entries must increase")]
    fn an_entry_out_of_order_is_refused_loudly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = new_index(dir.path(), 1024);
        assert!(index.append(105, 500));
        index.append(106, 400);
    }

    #[test]
    fn a_full_index_refuses_entries_instead_of_panicking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = new_index(dir.path(), 16);
        assert!(index.append(101, 1));
        assert!(index.append(102, 2));
        assert!(index.is_full());
        assert!(!index.append(103, 3));
        assert_eq!(index.len(), 2);
    }
}
