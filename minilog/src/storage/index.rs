//! The sparse offset index (`.index`) of one segment, and the memory-mapped file of
//! fixed-size entries that it and the time index share.
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
//! While its segment is active the file is preallocated to `max_index_bytes` and mapped
//! once, so an append is a store into memory. Sealing a segment trims the file to the
//! entries in use. A crash before that leaves zero entries at the end, which opening strips.
//!
//! Left out: Kafka's lazy mmap and its warm-section binary search (which keeps the lookups
//! of tailing consumers on pages that are always resident); with sealed indexes trimmed
//! and small, a plain binary search is enough here.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

/// Bytes in one offset index entry: relative offset (4) and position (4).
pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;

/// A file of fixed-size entries, memory-mapped in full. The offset index and the time index
/// differ only in what an entry means, so the mapping, preallocation and trimming live here.
pub(crate) struct IndexFile {
    /// Where the file is, for errors and log lines.
    path: PathBuf,
    /// Kept open so the mapping can be resized (`set_len`, then remap).
    file: File,
    /// The whole file. `MmapMut` rather than `Mmap` because the active segment's index is
    /// written in place; sealed segments just never write.
    map: MmapMut,
    /// Bytes per entry: 8 for the offset index, 12 for the time index.
    entry_bytes: usize,
    /// Entries in use, from the start of the file; the rest of the mapping is zeroes.
    entries: usize,
}

impl IndexFile {
    /// Creates (or empties) the file at `path`, preallocated to hold `capacity_bytes`.
    pub(crate) fn create(path: &Path, entry_bytes: usize, capacity_bytes: usize) -> io::Result<IndexFile> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        let length = round_down(capacity_bytes, entry_bytes);
        file.set_len(length as u64)?;
        let map = map_file(&file)?;
        Ok(IndexFile { path: path.to_path_buf(), file, map, entry_bytes, entries: 0 })
    }

    /// Opens an existing file and maps all of it, counting every entry as in use; the
    /// caller checks the entries and strips trailing zeroes where that is right. `Ok(None)`
    /// if the file does not exist or its length is not a whole number of entries.
    pub(crate) fn open(path: &Path, entry_bytes: usize) -> io::Result<Option<IndexFile>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let length = file.metadata()?.len();
        let Ok(length) = usize::try_from(length) else { return Ok(None) };
        if length % entry_bytes != 0 {
            return Ok(None);
        }
        let map = map_file(&file)?;
        Ok(Some(IndexFile { path: path.to_path_buf(), file, map, entry_bytes, entries: length / entry_bytes }))
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Entries in use.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Entries the current mapping can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.map.len() / self.entry_bytes
    }

    /// The bytes of entry `index`, which must be in use.
    pub(crate) fn entry(&self, index: usize) -> &[u8] {
        assert!(
            index < self.entries,
            "index entry {index} of {} read past the end ({})",
            self.entries,
            self.path.display()
        );
        &self.map[index * self.entry_bytes..(index + 1) * self.entry_bytes]
    }

    /// Appends one entry. The caller has checked there is room.
    pub(crate) fn push(&mut self, entry: &[u8]) {
        assert_eq!(entry.len(), self.entry_bytes, "entry of the wrong size for {}", self.path.display());
        assert!(self.entries < self.capacity(), "push into a full index {}", self.path.display());
        let start = self.entries * self.entry_bytes;
        self.map[start..start + self.entry_bytes].copy_from_slice(entry);
        self.entries += 1;
    }

    /// Drops the entries from `keep` on, zeroing them so that a crash cannot bring them back.
    pub(crate) fn truncate(&mut self, keep: usize) {
        if keep >= self.entries {
            return;
        }
        self.map[keep * self.entry_bytes..self.entries * self.entry_bytes].fill(0);
        self.entries = keep;
    }

    /// Forgets trailing all-zero entries: what a preallocated file holds past its last
    /// real entry. Only right for the active segment, whose file may still be preallocated;
    /// a sealed segment's file was trimmed, so a zero entry there is damage.
    pub(crate) fn strip_trailing_zeroes(&mut self) {
        while self.entries > 0 && self.entry(self.entries - 1).iter().all(|&byte| byte == 0) {
            self.entries -= 1;
        }
    }

    /// Resizes the file (and the mapping) to hold `capacity_bytes`, never less than the
    /// entries in use. Used to preallocate an active segment's index and to trim a sealed one.
    pub(crate) fn resize(&mut self, capacity_bytes: usize) -> io::Result<()> {
        let length = round_down(capacity_bytes, self.entry_bytes).max(self.entries * self.entry_bytes);
        if length == self.map.len() {
            return Ok(());
        }
        self.map.flush()?;
        self.file.set_len(length as u64)?;
        // The old mapping is dropped by the assignment, before anything touches the pages
        // a shrink just cut off.
        self.map = map_file(&self.file)?;
        Ok(())
    }

    /// Trims the file to the entries in use and writes the mapping back to disk.
    pub(crate) fn trim_and_flush(&mut self) -> io::Result<()> {
        self.resize(self.entries * self.entry_bytes)?;
        self.map.flush()?;
        self.file.sync_all()
    }
}

/// Maps all of `file` read-write.
fn map_file(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the index files belong to this partition's directory and are mapped only by
    // this process, through this one `IndexFile`; every access is bounds-checked against the
    // mapping's length, and the file is never shrunk while a mapping of the old length is
    // in use. Another process truncating the file underneath us would make accesses fault
    // (SIGBUS); Kafka has the same exposure and so do we.
    unsafe { MmapMut::map_mut(file) }
}

/// `value` rounded down to a multiple of `unit`.
fn round_down(value: usize, unit: usize) -> usize {
    value - value % unit
}

/// One offset index entry, with the offset made absolute again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetPosition {
    /// Base offset of the batch.
    pub(crate) offset: i64,
    /// Byte position of the batch in the `.log`.
    pub(crate) position: u64,
}

/// Why an index file on disk was not trusted (and so was rebuilt from the `.log`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IndexProblem {
    /// Missing, or its length is not a whole number of entries.
    #[error("missing, or its length is not a whole number of entries")]
    Unreadable,
    /// Entries out of order.
    #[error("entry {entry} does not increase over the entry before it")]
    NotIncreasing {
        /// Index of the offending entry.
        entry: usize,
    },
    /// An entry points at or past the end of the log.
    #[error("entry {entry} points at byte {position}, but the log holds only {log_bytes} bytes")]
    PastLogEnd {
        /// Index of the offending entry.
        entry: usize,
        /// The position it holds.
        position: u64,
        /// The log's length.
        log_bytes: u64,
    },
    /// An entry names an offset outside the segment.
    #[error("entry {entry} names offset {offset}, outside the segment's offsets {base}..{end}")]
    OffsetOutOfSegment {
        /// Index of the offending entry.
        entry: usize,
        /// The absolute offset it holds.
        offset: i64,
        /// The segment's base offset.
        base: i64,
        /// One past the segment's last offset.
        end: i64,
    },
    /// An entry does not point at the start of a batch with that offset (found by reading
    /// the log, either in recovery's scan or at a lookup).
    #[error("entry {entry} ({detail}) does not match the batch in the log")]
    DisagreesWithLog {
        /// Index of the offending entry.
        entry: usize,
        /// What it says and what the log says.
        detail: String,
    },
}

/// The `.index` of one segment.
pub(crate) struct OffsetIndex {
    /// The entries on disk.
    file: IndexFile,
    /// The segment's base offset; entries store offsets relative to it.
    base_offset: i64,
}

impl OffsetIndex {
    /// A new, empty index preallocated to `max_index_bytes`.
    pub(crate) fn create(path: &Path, base_offset: i64, max_index_bytes: usize) -> io::Result<OffsetIndex> {
        Ok(OffsetIndex { file: IndexFile::create(path, OFFSET_ENTRY_BYTES, max_index_bytes)?, base_offset })
    }

    /// Opens the index at `path` with every entry in the file counted; `Ok(None)` when it
    /// is missing or its length is wrong. The caller runs [`OffsetIndex::check`].
    pub(crate) fn open(path: &Path, base_offset: i64) -> io::Result<Option<OffsetIndex>> {
        Ok(IndexFile::open(path, OFFSET_ENTRY_BYTES)?.map(|file| OffsetIndex { file, base_offset }))
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

    /// True when no entry can be added.
    pub(crate) fn is_full(&self) -> bool {
        self.file.len() >= self.file.capacity()
    }

    /// Entry `index`, made absolute.
    pub(crate) fn entry(&self, index: usize) -> OffsetPosition {
        let bytes = self.file.entry(index);
        let relative = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let position = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        OffsetPosition { offset: self.base_offset + i64::from(relative), position: u64::from(position) }
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<OffsetPosition> {
        self.len().checked_sub(1).map(|index| self.entry(index))
    }

    /// Records that the batch with base offset `offset` starts at byte `position`. Returns
    /// false (and records nothing) when the index is full: the index is only an accelerator,
    /// and the segment rolls before its next append.
    pub(crate) fn append(&mut self, offset: i64, position: u64) -> bool {
        if self.is_full() {
            return false;
        }
        if let Some(last) = self.last() {
            assert!(
                offset > last.offset && position > last.position,
                "offset index entries must increase: ({offset}, {position}) after ({}, {})",
                last.offset,
                last.position
            );
        }
        let relative = u32::try_from(offset - self.base_offset)
            .expect("the segment rolls before a relative offset overflows u32 (validated at append)");
        let position = u32::try_from(position).expect("the segment rolls before a position overflows u32");
        let mut entry = [0u8; OFFSET_ENTRY_BYTES];
        entry[..4].copy_from_slice(&relative.to_be_bytes());
        entry[4..].copy_from_slice(&position.to_be_bytes());
        self.file.push(&entry);
        true
    }

    /// Where to start scanning for `target`: the entry with the largest offset at or below
    /// it, as (entry index, entry), or `None` when the target is before every entry (then
    /// the scan starts at the segment's first byte).
    pub(crate) fn lookup(&self, target: i64) -> Option<(usize, OffsetPosition)> {
        // partition_point: the number of entries whose offset is <= target.
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.entry(middle).offset <= target {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1).map(|index| (index, self.entry(index)))
    }

    /// The sanity check on open: offsets and positions strictly increase, every position is
    /// inside the log, and every offset inside `base..end_offset`.
    pub(crate) fn check(&self, log_bytes: u64, end_offset: i64) -> Result<(), IndexProblem> {
        let mut previous: Option<OffsetPosition> = None;
        for index in 0..self.len() {
            let entry = self.entry(index);
            if let Some(previous) = previous {
                if entry.offset <= previous.offset || entry.position <= previous.position {
                    return Err(IndexProblem::NotIncreasing { entry: index });
                }
            }
            if entry.position >= log_bytes {
                return Err(IndexProblem::PastLogEnd { entry: index, position: entry.position, log_bytes });
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

    /// Drops every entry at or past byte `log_bytes`: what recovery does after it cut the log.
    pub(crate) fn truncate_to_log_bytes(&mut self, log_bytes: u64) {
        let keep = (0..self.len()).position(|index| self.entry(index).position >= log_bytes).unwrap_or(self.len());
        self.file.truncate(keep);
    }
}

#[cfg(test)]
mod tests {
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
        index.file_mut().trim_and_flush().expect("trim");
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
        reopened.file_mut().strip_trailing_zeroes();
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
