//! What the two sparse indexes of a segment have in common: a memory-mapped file of
//! fixed-width entries, kept in order, that names batches by their offset relative to the
//! segment's base. [`SparseIndex`] is that file; what an entry holds, how it is laid out
//! and which order it keeps is the entry type's, in [`index`](super::index) (offset →
//! position) and [`time_index`](super::time_index) (timestamp → offset).
//!
//! While its segment is active the file is preallocated to `max_index_bytes` and mapped
//! once, so an append is a store into memory. Sealing a segment trims the file to the
//! entries in use. A crash before that leaves zero entries at the end, which opening the
//! active segment strips.
//!
//! Left out: Kafka's lazy mmap and its warm-section binary search (which keeps the lookups
//! of tailing consumers on pages that are always resident); with sealed indexes trimmed
//! and small, a plain binary search is enough here.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

/// One entry of a sparse index: its layout on disk and the order entries keep.
pub(crate) trait IndexEntry: Copy + Debug {
    /// Bytes per entry on disk.
    const BYTES: usize;

    /// Decodes an entry from exactly [`IndexEntry::BYTES`] bytes, making its offset absolute
    /// again with the segment's `base_offset`.
    fn decode(bytes: &[u8], base_offset: i64) -> Self;

    /// Encodes the entry into exactly [`IndexEntry::BYTES`] bytes, its offset relative to
    /// `base_offset`.
    fn encode(&self, base_offset: i64, bytes: &mut [u8]);

    /// The (absolute) offset of the batch the entry names, which must lie inside the segment.
    fn offset(&self) -> i64;

    /// What a lookup searches by: the offset in the offset index, the timestamp in the
    /// time index. Strictly increases from entry to entry (see [`IndexEntry::follows`]).
    fn key(&self) -> i64;

    /// Whether the entry may come after `previous` (`None` for the first entry). Checked
    /// twice: when an entry is added, and for every entry of a file opened from disk.
    fn follows(&self, previous: Option<Self>) -> bool;
}

/// An entry's offset as stored: relative to the segment's base. Appends are validated so
/// that this cannot fail (a segment rolls before a relative offset would pass `u32`).
pub(crate) fn relative_offset(offset: i64, base_offset: i64) -> u32 {
    u32::try_from(offset - base_offset)
        .expect("the segment rolls before a relative offset overflows u32 (validated at append)")
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

/// A sparse index file of `E` entries, memory-mapped in full.
pub(crate) struct SparseIndex<E> {
    /// Where the file is, for errors, log lines and deletion.
    path: PathBuf,
    /// Kept open so the mapping can be resized (`set_len`, then remap).
    file: File,
    /// The whole file. `MmapMut` rather than `Mmap` because the active segment's index is
    /// written in place; sealed segments just never write.
    map: MmapMut,
    /// Entries in use, from the start of the file; the rest of the mapping is zeroes.
    entries: usize,
    /// The segment's base offset; entries store offsets relative to it.
    base_offset: i64,
    /// The entry type, which the file stores only as bytes.
    entry: PhantomData<E>,
}

impl<E: IndexEntry> SparseIndex<E> {
    /// Creates (or empties) the file at `path`, preallocated to hold `capacity_bytes`.
    pub(crate) fn create(path: &Path, base_offset: i64, capacity_bytes: usize) -> io::Result<SparseIndex<E>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        file.set_len(round_down(capacity_bytes, E::BYTES) as u64)?;
        let map = map_file(&file)?;
        Ok(SparseIndex { path: path.to_path_buf(), file, map, entries: 0, base_offset, entry: PhantomData })
    }

    /// Opens an existing file and maps all of it, counting every entry as in use; the
    /// caller checks the entries ([`SparseIndex::check_entries`]) and strips trailing zeroes
    /// where that is right. `Ok(None)` if the file does not exist or its length is not a
    /// whole number of entries.
    pub(crate) fn open(path: &Path, base_offset: i64) -> io::Result<Option<SparseIndex<E>>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let length = file.metadata()?.len();
        let Ok(length) = usize::try_from(length) else { return Ok(None) };
        if length % E::BYTES != 0 {
            return Ok(None);
        }
        let map = map_file(&file)?;
        let entries = length / E::BYTES;
        Ok(Some(SparseIndex { path: path.to_path_buf(), file, map, entries, base_offset, entry: PhantomData }))
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
        self.map.len() / E::BYTES
    }

    /// The bytes of entry `index`, which must be in use.
    fn entry_bytes(&self, index: usize) -> &[u8] {
        assert!(
            index < self.entries,
            "index entry {index} of {} read past the end ({})",
            self.entries,
            self.path.display()
        );
        &self.map[index * E::BYTES..(index + 1) * E::BYTES]
    }

    /// Entry `index`, which must be in use, with its offset made absolute.
    pub(crate) fn entry(&self, index: usize) -> E {
        E::decode(self.entry_bytes(index), self.base_offset)
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<E> {
        self.entries.checked_sub(1).map(|index| self.entry(index))
    }

    /// Appends one entry, which must follow the last one. The caller has checked there is
    /// room.
    pub(crate) fn push(&mut self, entry: E) {
        let last = self.last();
        assert!(entry.follows(last), "index entries must increase: {entry:?} after {last:?} ({})", self.path.display());
        assert!(self.entries < self.capacity(), "push into a full index {}", self.path.display());
        let start = self.entries * E::BYTES;
        entry.encode(self.base_offset, &mut self.map[start..start + E::BYTES]);
        self.entries += 1;
    }

    /// The entry with the largest key at or below `target`, as (entry index, entry), or
    /// `None` when every entry's key is above it (then a scan starts at the segment's
    /// first byte).
    pub(crate) fn lookup(&self, target: i64) -> Option<(usize, E)> {
        // partition_point: the number of entries whose key is <= target.
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.entry(middle).key() <= target {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1).map(|index| (index, self.entry(index)))
    }

    /// The part of the sanity check on open that both indexes share: every entry follows
    /// the one before it, passes the index's own `check_entry`, and names an offset inside
    /// `base..end_offset`. Reports the first entry that fails, in that order of checks.
    pub(crate) fn check_entries(
        &self,
        end_offset: i64,
        mut check_entry: impl FnMut(usize, E) -> Result<(), IndexProblem>,
    ) -> Result<(), IndexProblem> {
        let mut previous: Option<E> = None;
        for index in 0..self.len() {
            let entry = self.entry(index);
            if !entry.follows(previous) {
                return Err(IndexProblem::NotIncreasing { entry: index });
            }
            check_entry(index, entry)?;
            if entry.offset() >= end_offset {
                return Err(IndexProblem::OffsetOutOfSegment {
                    entry: index,
                    offset: entry.offset(),
                    base: self.base_offset,
                    end: end_offset,
                });
            }
            previous = Some(entry);
        }
        Ok(())
    }

    /// Drops the first entry for which `past_the_cut` holds and every entry after it: what
    /// recovery does after it cut the log.
    pub(crate) fn truncate_from_first(&mut self, past_the_cut: impl Fn(E) -> bool) {
        let keep = (0..self.len()).position(|index| past_the_cut(self.entry(index))).unwrap_or(self.len());
        self.truncate(keep);
    }

    /// Drops the entries from `keep` on, zeroing them so that a crash cannot bring them back.
    pub(crate) fn truncate(&mut self, keep: usize) {
        if keep >= self.entries {
            return;
        }
        self.map[keep * E::BYTES..self.entries * E::BYTES].fill(0);
        self.entries = keep;
    }

    /// Forgets trailing all-zero entries: what a preallocated file holds past its last
    /// real entry. Only right for the active segment, whose file may still be preallocated;
    /// a sealed segment's file was trimmed, so a zero entry there is damage.
    pub(crate) fn strip_trailing_zeroes(&mut self) {
        while self.entries > 0 && self.entry_bytes(self.entries - 1).iter().all(|&byte| byte == 0) {
            self.entries -= 1;
        }
    }

    /// Resizes the file (and the mapping) to hold `capacity_bytes`, never less than the
    /// entries in use. Used to preallocate an active segment's index and to trim a sealed one.
    pub(crate) fn resize(&mut self, capacity_bytes: usize) -> io::Result<()> {
        let length = round_down(capacity_bytes, E::BYTES).max(self.entries * E::BYTES);
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
        self.resize(self.entries * E::BYTES)?;
        self.map.flush()?;
        self.file.sync_all()
    }
}

/// Maps all of `file` read-write.
fn map_file(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the index files belong to this partition's directory and are mapped only by
    // this process, through this one `SparseIndex`; every access is bounds-checked against
    // the mapping's length, and the file is never shrunk while a mapping of the old length
    // is in use. Another process truncating the file underneath us would make accesses
    // fault (SIGBUS); Kafka has the same exposure and so do we.
    unsafe { MmapMut::map_mut(file) }
}

/// `value` rounded down to a multiple of `unit`.
fn round_down(value: usize, unit: usize) -> usize {
    value - value % unit
}
