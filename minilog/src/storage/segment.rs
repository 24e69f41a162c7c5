//! One segment of a partition log: `{base:020}.log` with the batches exactly as received
//! (after offset assignment), and its two sparse indexes `{base:020}.index` and
//! `{base:020}.timeindex`. The file names are Kafka's: the 20-digit zero-padded offset of
//! the segment's first batch, so `ls` sorts them in offset order.
//!
//! Writes are one positional `write` of the whole append at the end of the `.log`, with no
//! fsync ([`PartitionLog`](super::log::PartitionLog) owns durability). Reads are positional
//! (`pread`) and need only `&self`, so they never disturb a file cursor.
//!
//! The indexing rule, shared by appends, recovery and rebuilds so that all three agree: a
//! batch gets an offset-index entry when at least `index_interval_bytes` of log were written
//! since the last entry, and the time index gets one at the same moment if the segment's
//! running max timestamp has grown. The first batch of a segment needs no entry: "no entry
//! at or before the target" means "start at byte 0".
//!
//! Left out: Kafka's producer-state snapshots and leader-epoch cache, and its lazy opening
//! of segment indexes (here every segment's indexes are mapped at open).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use tracing::{error, info, warn};

use super::batch::{BatchError, BatchHeader, CRC_COVERED_FROM, HEADER_BYTES};
use super::index::{OffsetIndex, OffsetPosition};
use super::sparse_index::IndexProblem;
use super::time_index::{TimeIndex, TimestampOffset};

/// Extension of a segment's record file.
pub(crate) const LOG_EXTENSION: &str = "log";
/// Extension of a segment's offset index.
pub(crate) const INDEX_EXTENSION: &str = "index";
/// Extension of a segment's time index.
pub(crate) const TIME_INDEX_EXTENSION: &str = "timeindex";

/// Largest byte position an index entry can hold: positions are `u32`, so a segment rolls
/// before its `.log` would pass 4 GiB (Kafka's `segment.bytes` is an `int` for the same reason).
pub(crate) const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// How much of the `.log` a recovery or rebuild scan reads per `pread`. Big enough that a
/// scan runs at disk speed, small enough not to matter next to the page cache.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// How much a time lookup reads per `pread`: it scans at most about one index interval.
const LOOKUP_CHUNK_BYTES: usize = 64 << 10;

/// How much a header-only walk reads per `pread`: a few headers of small batches at
/// once, and about one header of a big batch, whose body it jumps over.
const HEADER_WALK_CHUNK_BYTES: usize = 4 << 10;

/// The name of a segment file: the base offset, zero-padded to 20 digits, then the extension.
pub(crate) fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// The index settings a segment needs from [`LogConfig`](super::log::LogConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexConfig {
    /// Bytes of log between index entries.
    pub(crate) interval_bytes: usize,
    /// Size each index file is preallocated to while its segment is active.
    pub(crate) max_index_bytes: usize,
}

/// What opening one segment found and did.
#[derive(Debug, Default)]
pub(crate) struct SegmentRecovery {
    /// Bytes cut from the end of the `.log`.
    pub(crate) truncated_bytes: u64,
    /// Index files rebuilt from the `.log`.
    pub(crate) rebuilt_indexes: Vec<PathBuf>,
}

/// One segment: a `.log` and its two indexes, plus what is known about them in memory.
pub(crate) struct Segment {
    /// Offset of the segment's first batch; also its file names.
    base_offset: i64,
    /// One past the last offset in the segment. For a sealed segment opened from disk this
    /// is the next segment's base, which is what the segment covers.
    next_offset: i64,
    /// Bytes of whole batches in the `.log`. Reads never look past this, so a write in
    /// progress (or a failed one) is invisible.
    log_bytes: u64,
    /// The `.log`. An `Arc` so that a [`FlushTarget`](super::log::FlushTarget) can fsync it
    /// without holding the partition's lock, even if retention deletes the segment meanwhile.
    log: Arc<File>,
    /// Where the `.log` is, for errors, log lines and deletion.
    log_path: PathBuf,
    /// Byte position of batches by offset.
    index: OffsetIndex,
    /// Offset of batches by max timestamp.
    time_index: TimeIndex,
    /// Largest batch max timestamp seen in the segment; -1 (Kafka's "no timestamp") if none.
    max_timestamp: i64,
    /// Base offset of the first batch that carried `max_timestamp`.
    offset_of_max_timestamp: i64,
    /// Log bytes written since the last offset-index entry: the indexing rule's counter.
    bytes_since_index_entry: u64,
    /// Wall-clock time (the caller's `now_ms`) of the first append into this segment, for
    /// `segment_ms`. After a restart, the time the log was opened: the true time is not on disk.
    first_append_ms: Option<i64>,
    /// Index interval and preallocation size.
    config: IndexConfig,
}

impl Segment {
    /// Creates an empty segment at `base_offset` in `dir`, with preallocated indexes, and
    /// fsyncs the directory so the new files survive a crash.
    pub(crate) fn create(dir: &Path, base_offset: i64, config: IndexConfig) -> io::Result<Segment> {
        assert!(base_offset >= 0, "segment base offsets are not negative: {base_offset}");
        let log_path = dir.join(file_name(base_offset, LOG_EXTENSION));
        let log = OpenOptions::new().read(true).write(true).create_new(true).open(&log_path)?;
        let segment = Segment::with_fresh_indexes(dir, base_offset, log, log_path, 0, config)?;
        sync_dir(dir)?;
        Ok(segment)
    }

    /// Opens a segment that is not the last one. Its `.log` was fsynced when it was sealed,
    /// so it is trusted as it is; its indexes get the sanity check (entries increasing,
    /// inside the log and the segment's offsets, the last one pointing at a batch with that
    /// offset) and are rebuilt from the `.log` if they fail it.
    pub(crate) fn open_sealed(
        dir: &Path,
        base_offset: i64,
        end_offset: i64,
        config: IndexConfig,
    ) -> io::Result<(Segment, SegmentRecovery)> {
        let log_path = dir.join(file_name(base_offset, LOG_EXTENSION));
        let log = File::open(&log_path)?;
        let log_bytes = log.metadata()?.len();
        let index_path = dir.join(file_name(base_offset, INDEX_EXTENSION));
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_EXTENSION));
        let index = OffsetIndex::open(&index_path, base_offset)?;
        let time_index = TimeIndex::open(&time_path, base_offset)?;

        let problem = match (&index, &time_index) {
            (None, _) => Some((index_path.clone(), IndexProblem::Unreadable)),
            (_, None) => Some((time_path.clone(), IndexProblem::Unreadable)),
            (Some(index), Some(time_index)) => index
                .check(log_bytes, end_offset)
                .and_then(|()| last_entry_matches_log(&log, log_bytes, index))
                .map_err(|problem| (index_path.clone(), problem))
                .and_then(|()| time_index.check(end_offset).map_err(|problem| (time_path.clone(), problem)))
                .err(),
        };

        let mut recovery = SegmentRecovery::default();
        let segment = match (problem, index, time_index) {
            (None, Some(index), Some(time_index)) => {
                let last_time = time_index.last();
                Segment {
                    base_offset,
                    next_offset: end_offset,
                    log_bytes,
                    log: Arc::new(log),
                    log_path,
                    index,
                    time_index,
                    max_timestamp: last_time.map_or(-1, |entry| entry.timestamp),
                    offset_of_max_timestamp: last_time.map_or(base_offset, |entry| entry.offset),
                    bytes_since_index_entry: 0,
                    first_append_ms: None,
                    config,
                }
            }
            (problem, _, _) => {
                if let Some((path, problem)) = &problem {
                    warn!(index = %path.display(), %problem, "rebuilding the indexes of a sealed segment from its log");
                }
                let mut segment = Segment::with_fresh_indexes(dir, base_offset, log, log_path, log_bytes, config)?;
                segment.replay_log()?;
                segment.next_offset = end_offset;
                // As at a roll: the final time entry, then trimmed files on disk.
                segment.seal_indexes()?;
                recovery.rebuilt_indexes = vec![index_path, time_path];
                segment
            }
        };
        Ok((segment, recovery))
    }

    /// Opens the last segment, the only one a crash can have torn: scans its `.log` from the
    /// start, checking every batch's length, magic, CRC-32C and offset, cuts the file at the
    /// first one that fails, checks every index entry against the batches on the way, and
    /// rebuilds the indexes if any entry disagrees. The indexes end up preallocated again.
    ///
    /// Costs one read of the whole active `.log` (at disk speed, hardware CRC) and one fsync.
    pub(crate) fn open_active(
        dir: &Path,
        base_offset: i64,
        config: IndexConfig,
        now_ms: i64,
    ) -> io::Result<(Segment, SegmentRecovery)> {
        let log_path = dir.join(file_name(base_offset, LOG_EXTENSION));
        let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let file_bytes = log.metadata()?.len();
        let index_path = dir.join(file_name(base_offset, INDEX_EXTENSION));
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_EXTENSION));
        let mut index = OffsetIndex::open(&index_path, base_offset)?;
        let mut time_index = TimeIndex::open(&time_path, base_offset)?;

        // The active segment's files may still be preallocated: zero entries at the end are
        // empty slots, not damage.
        let mut problem: Option<(PathBuf, IndexProblem)> = None;
        match &mut index {
            None => problem = Some((index_path.clone(), IndexProblem::Unreadable)),
            Some(index) => {
                index.strip_trailing_zeroes();
                if let Err(found) = index.check(file_bytes, i64::MAX) {
                    problem = Some((index_path.clone(), found));
                }
            }
        }
        match &mut time_index {
            None => problem = problem.or(Some((time_path.clone(), IndexProblem::Unreadable))),
            Some(time_index) => {
                time_index.strip_trailing_zeroes();
                if let Err(found) = time_index.check(i64::MAX) {
                    problem = problem.or(Some((time_path.clone(), found)));
                }
            }
        }

        let mut scan = ScanState::new(base_offset);
        let mut offset_cursor = 0;
        let mut time_cursor = 0;
        let mut scanner = BatchScanner::new(&log, 0, file_bytes, CrcCheck::Yes, SCAN_CHUNK_BYTES);
        let valid_bytes = loop {
            let batch = match scanner.next_batch()? {
                Scanned::End => break file_bytes,
                Scanned::Bad { position, problem } => {
                    warn!(log = %log_path.display(), position, %problem, "torn or corrupt batch in the active segment");
                    break position;
                }
                Scanned::Batch(batch) => batch,
            };
            if let Err(reason) = scan.accepts(batch.position, &batch.header) {
                warn!(
                    log = %log_path.display(),
                    position = batch.position,
                    reason,
                    "batch does not continue the segment"
                );
                break batch.position;
            }
            if problem.is_none() {
                if let (Some(index), Some(time_index)) = (&index, &time_index) {
                    problem = verify_offset_entries(index, &mut offset_cursor, &batch)
                        .map_err(|found| (index_path.clone(), found))
                        .and_then(|()| {
                            verify_time_entries(time_index, &mut time_cursor, &batch, scan.max_timestamp)
                                .map_err(|found| (time_path.clone(), found))
                        })
                        .err();
                }
            }
            scan.observe(&batch.header);
        };
        drop(scanner);

        let mut recovery = SegmentRecovery::default();
        if valid_bytes < file_bytes {
            log.set_len(valid_bytes)?;
            log.sync_all()?;
            recovery.truncated_bytes = file_bytes - valid_bytes;
            warn!(
                log = %log_path.display(),
                kept_bytes = valid_bytes,
                truncated_bytes = recovery.truncated_bytes,
                log_end_offset = scan.next_offset,
                "cut the torn tail of the active segment"
            );
        }

        // Entries past the cut are dropped; entries before it that no batch start matched
        // mean the index is wrong.
        if let (None, Some(index), Some(time_index)) = (&problem, &mut index, &mut time_index) {
            if offset_cursor < index.len() && index.entry(offset_cursor).position < valid_bytes {
                let entry = index.entry(offset_cursor);
                let detail = format!("position {} is not the start of a batch", entry.position);
                problem = Some((index_path.clone(), IndexProblem::DisagreesWithLog { entry: offset_cursor, detail }));
            } else if time_cursor < time_index.len() && time_index.entry(time_cursor).offset < scan.next_offset {
                let entry = time_index.entry(time_cursor);
                let detail = format!("offset {} is not the base offset of a batch", entry.offset);
                problem = Some((time_path.clone(), IndexProblem::DisagreesWithLog { entry: time_cursor, detail }));
            } else {
                index.truncate_to_log_bytes(valid_bytes);
                time_index.truncate_to_offset(scan.next_offset);
            }
        }

        let mut segment = match (problem, index, time_index) {
            (None, Some(index), Some(time_index)) => {
                let last_entry_position = index.last().map_or(0, |entry| entry.position);
                Segment {
                    base_offset,
                    next_offset: scan.next_offset,
                    log_bytes: valid_bytes,
                    log: Arc::new(log),
                    log_path,
                    index,
                    time_index,
                    max_timestamp: scan.max_timestamp,
                    offset_of_max_timestamp: scan.offset_of_max_timestamp,
                    bytes_since_index_entry: valid_bytes - last_entry_position,
                    first_append_ms: None,
                    config,
                }
            }
            (problem, _, _) => {
                if let Some((path, problem)) = &problem {
                    warn!(
                        index = %path.display(),
                        %problem,
                        "rebuilding the indexes of the active segment from its log"
                    );
                }
                let mut segment = Segment::with_fresh_indexes(dir, base_offset, log, log_path, valid_bytes, config)?;
                segment.replay_log()?;
                assert_eq!(segment.next_offset, scan.next_offset, "a rebuild must find the batches the CRC scan found");
                recovery.rebuilt_indexes = vec![index_path, time_path];
                segment
            }
        };
        segment.index.resize(config.max_index_bytes)?;
        segment.time_index.resize(config.max_index_bytes)?;
        segment.first_append_ms = (segment.log_bytes > 0).then_some(now_ms);
        // Whatever a crashed process left in the page cache is on disk from here on, which
        // is what lets the log report everything it recovered as flushed.
        segment.log.sync_data()?;
        if recovery.truncated_bytes > 0 || !recovery.rebuilt_indexes.is_empty() {
            info!(
                log = %segment.log_path.display(),
                log_end_offset = segment.next_offset,
                truncated_bytes = recovery.truncated_bytes,
                rebuilt_indexes = recovery.rebuilt_indexes.len(),
                "recovered the active segment"
            );
        }
        Ok((segment, recovery))
    }

    /// A segment over a `.log` of `log_bytes` bytes with new, empty indexes: a new segment
    /// (`log_bytes` 0), or an existing one ready for [`Segment::replay_log`].
    fn with_fresh_indexes(
        dir: &Path,
        base_offset: i64,
        log: File,
        log_path: PathBuf,
        log_bytes: u64,
        config: IndexConfig,
    ) -> io::Result<Segment> {
        let index = OffsetIndex::create(
            &dir.join(file_name(base_offset, INDEX_EXTENSION)),
            base_offset,
            config.max_index_bytes,
        )?;
        let time_index = TimeIndex::create(
            &dir.join(file_name(base_offset, TIME_INDEX_EXTENSION)),
            base_offset,
            config.max_index_bytes,
        )?;
        Ok(Segment {
            base_offset,
            next_offset: base_offset,
            log_bytes,
            log: Arc::new(log),
            log_path,
            index,
            time_index,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            bytes_since_index_entry: 0,
            first_append_ms: None,
            config,
        })
    }

    /// Rebuilds both indexes by reading the batch headers of the `.log` and applying the
    /// indexing rule to each, as if the batches were being appended again. Stops (loudly) at
    /// a header that cannot be read or does not continue the segment: the batches after it
    /// stay in the file but cannot be found through the index.
    fn replay_log(&mut self) -> io::Result<()> {
        let mut scan = ScanState::new(self.base_offset);
        // A second handle to the file, so that the scan can borrow it while the indexes change.
        let log = Arc::clone(&self.log);
        let mut scanner = BatchScanner::new(&log, 0, self.log_bytes, CrcCheck::No, SCAN_CHUNK_BYTES);
        loop {
            let batch = match scanner.next_batch()? {
                Scanned::End => return Ok(()),
                Scanned::Bad { position, problem } => {
                    error!(
                        log = %self.log_path.display(),
                        position,
                        %problem,
                        "unreadable batch while rebuilding indexes; later batches are not indexed"
                    );
                    return Ok(());
                }
                Scanned::Batch(batch) => batch,
            };
            if let Err(reason) = scan.accepts(batch.position, &batch.header) {
                error!(
                    log = %self.log_path.display(),
                    position = batch.position,
                    reason,
                    "bad batch while rebuilding indexes; later batches are not indexed"
                );
                return Ok(());
            }
            scan.observe(&batch.header);
            self.index_batch(batch.position, &batch.header);
            self.next_offset = batch.header.last_offset() + 1;
        }
    }

    /// The indexing rule (see the module docs), for the batch at byte `position`.
    fn index_batch(&mut self, position: u64, header: &BatchHeader) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_index_entry >= self.config.interval_bytes as u64 {
            self.index.append(header.base_offset, position);
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.batch_len as u64;
    }

    /// Appends already-validated batches, whose offsets were assigned to continue this
    /// segment, with one positional write at the end of the `.log`. Not fsynced.
    ///
    /// On a failed write nothing changes in memory, and the file is cut back so that a
    /// partial write cannot sit in front of the next append.
    pub(crate) fn append(&mut self, records: &[u8], batches: &[BatchHeader], now_ms: i64) -> io::Result<()> {
        assert!(!batches.is_empty(), "an append carries at least one batch");
        assert_eq!(batches[0].base_offset, self.next_offset, "appends continue the segment's offsets");
        assert!(
            self.log_bytes + records.len() as u64 <= MAX_SEGMENT_BYTES,
            "the log rolls before positions overflow u32"
        );
        let start = self.log_bytes;
        if let Err(write_error) = self.log.write_all_at(records, start) {
            if let Err(cut_error) = self.log.set_len(start) {
                error!(log = %self.log_path.display(), %cut_error, "could not cut a failed write back; recovery will");
            }
            return Err(write_error);
        }
        let mut position = start;
        for header in batches {
            assert!(
                header.base_offset == self.next_offset
                    && header.last_offset() - self.base_offset <= i64::from(u32::MAX),
                "batch offsets were assigned to continue the segment"
            );
            self.index_batch(position, header);
            self.next_offset = header.last_offset() + 1;
            position += header.batch_len as u64;
        }
        assert_eq!(position, start + records.len() as u64, "the batch headers cover exactly the bytes written");
        self.log_bytes = position;
        self.first_append_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// Ends the segment's active life: records its max timestamp in the time index, trims
    /// both indexes, writes them back, and fsyncs the `.log`. After this the segment is
    /// complete on disk, which is why recovery only ever scans the last segment.
    pub(crate) fn seal(&mut self) -> io::Result<()> {
        self.seal_indexes()?;
        self.log.sync_data()
    }

    /// The index half of [`Segment::seal`].
    fn seal_indexes(&mut self) -> io::Result<()> {
        self.time_index.seal_entry(self.max_timestamp, self.offset_of_max_timestamp);
        self.index.trim_and_flush()?;
        self.time_index.trim_and_flush()
    }

    /// Whole batches starting with the one that holds `target` (or, past a gap, the first
    /// one after it), as many as fit in `max_bytes` but always at least one. `Ok(None)` if
    /// the segment has no batch at or after `target`.
    ///
    /// Usually one `pread`: the index gives a batch boundary at most about one index
    /// interval before the target, and the read covers that gap plus `max_bytes`.
    pub(crate) fn read(&self, target: i64, max_bytes: usize) -> io::Result<Option<Bytes>> {
        let start = self.index.lookup(target);
        match self.read_from(start, target, max_bytes)? {
            ReadOutcome::Found(bytes) => Ok(Some(bytes)),
            ReadOutcome::NotInSegment => Ok(None),
            ReadOutcome::IndexDisagrees(problem) => {
                // The index is only an accelerator: fall back to a scan from the start and
                // say so. Recovery would rebuild the index on the next open.
                warn!(
                    log = %self.log_path.display(),
                    %problem,
                    "offset index entry does not match the log; scanning from the segment start"
                );
                match self.read_from(None, target, max_bytes)? {
                    ReadOutcome::Found(bytes) => Ok(Some(bytes)),
                    ReadOutcome::NotInSegment => Ok(None),
                    ReadOutcome::IndexDisagrees(problem) => Err(self.corrupt(0, problem)),
                }
            }
        }
    }

    /// [`Segment::read`] starting at an index entry (or the segment's first byte).
    fn read_from(
        &self,
        start: Option<(usize, OffsetPosition)>,
        target: i64,
        max_bytes: usize,
    ) -> io::Result<ReadOutcome> {
        let (mut position, expected_base) = match start {
            Some((_, entry)) => (entry.position, entry.offset),
            None => (0, self.base_offset),
        };
        // Until the first header has been read and matched, a failure blames the index
        // entry (when there was one); after that, it is the log that is wrong.
        let mut first_unchecked = true;
        let fail = |first_unchecked: bool, at: u64, detail: String| -> io::Result<ReadOutcome> {
            if first_unchecked && start.is_some() {
                Ok(ReadOutcome::IndexDisagrees(index_problem(start, detail)))
            } else {
                Err(self.corrupt(at, detail))
            }
        };
        let slack = self.config.interval_bytes.saturating_add(HEADER_BYTES);
        let wanted = max_bytes.max(HEADER_BYTES).saturating_add(slack);
        loop {
            if position >= self.log_bytes {
                return Ok(ReadOutcome::NotInSegment);
            }
            let chunk = self.pread(position, wanted)?;
            let mut cursor = 0;
            while cursor + HEADER_BYTES <= chunk.len() {
                let batch_start = position + cursor as u64;
                let header = match BatchHeader::parse(&chunk[cursor..]) {
                    Ok(header) => header,
                    Err(problem) => {
                        return fail(first_unchecked, batch_start, format!("no batch header here: {problem}"))
                    }
                };
                if first_unchecked {
                    if header.base_offset != expected_base {
                        let detail = format!(
                            "expected offset {expected_base}, the batch has base offset {}",
                            header.base_offset
                        );
                        return fail(true, batch_start, detail);
                    }
                    first_unchecked = false;
                }
                if batch_start + header.batch_len as u64 > self.log_bytes {
                    return Err(self.corrupt(batch_start, "batch runs past the end of the segment's whole batches"));
                }
                if header.last_offset() >= target {
                    return self
                        .whole_batches_from(chunk, cursor, batch_start, header, max_bytes)
                        .map(ReadOutcome::Found);
                }
                cursor += header.batch_len;
            }
            if cursor == 0 {
                let detail = "fewer bytes than a batch header before the end of the segment".to_string();
                return fail(first_unchecked, position, detail);
            }
            position += cursor as u64;
        }
    }

    /// The run of whole batches that starts at `chunk[cursor..]` (file position
    /// `batch_start`, header `first`) and fits in `max_bytes`, at least the first batch
    /// (KIP-74). Reads again only when the chunk does not hold that much.
    fn whole_batches_from(
        &self,
        chunk: Vec<u8>,
        cursor: usize,
        batch_start: u64,
        first: BatchHeader,
        max_bytes: usize,
    ) -> io::Result<Bytes> {
        let remaining_in_segment = usize::try_from(self.log_bytes - batch_start).unwrap_or(usize::MAX);
        let wanted = first.batch_len.max(max_bytes.min(remaining_in_segment));
        let (chunk, cursor) =
            if chunk.len() - cursor >= wanted { (chunk, cursor) } else { (self.pread(batch_start, wanted)?, 0) };
        let mut taken = first.batch_len;
        while cursor + taken + HEADER_BYTES <= chunk.len() {
            let header = BatchHeader::parse(&chunk[cursor + taken..])
                .map_err(|problem| self.corrupt(batch_start + taken as u64, problem))?;
            if taken + header.batch_len > max_bytes || cursor + taken + header.batch_len > chunk.len() {
                break;
            }
            taken += header.batch_len;
        }
        assert!(cursor + taken <= chunk.len(), "a read returns whole batches only");
        Ok(Bytes::from(chunk).slice(cursor..cursor + taken))
    }

    /// Reads up to `len` bytes at `position`, stopping at the end of the whole batches.
    ///
    /// The bytes go straight into the vector's spare capacity: a fetch reads up to
    /// `max.partition.fetch.bytes` (often 10 MiB) per call, and zero-filling a buffer
    /// that the read overwrites anyway cost more than the read's own copy.
    fn pread(&self, position: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let available = usize::try_from(self.log_bytes.saturating_sub(position)).unwrap_or(usize::MAX);
        let len = len.min(available);
        let mut buffer: Vec<u8> = Vec::with_capacity(len);
        let mut filled = 0usize;
        while filled < len {
            let at = libc::off_t::try_from(position + filled as u64)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file position beyond off_t"))?;
            // SAFETY: the destination is the vector's own allocation, `len` bytes long,
            // and pread writes at most `len - filled` bytes after `filled`.
            let n =
                unsafe { libc::pread(self.log.as_raw_fd(), buffer.as_mut_ptr().add(filled).cast(), len - filled, at) };
            match n {
                n if n > 0 => filled += n as usize,
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment file shorter than its batches")),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        // SAFETY: the loop above wrote every one of the first `len` bytes.
        unsafe { buffer.set_len(len) };
        Ok(buffer)
    }

    /// Calls `visit` with every batch header of the segment, in order, reading only the
    /// headers (one small `pread` per big batch), not the records.
    pub(crate) fn for_each_header(&self, mut visit: impl FnMut(&BatchHeader)) -> io::Result<()> {
        let mut scanner = BatchScanner::new(&self.log, 0, self.log_bytes, CrcCheck::No, HEADER_WALK_CHUNK_BYTES);
        loop {
            match scanner.next_batch()? {
                Scanned::End => return Ok(()),
                Scanned::Batch(batch) => visit(&batch.header),
                Scanned::Bad { position, problem } => return Err(self.corrupt(position, problem)),
            }
        }
    }

    /// The first batch whose max timestamp is at least `timestamp`, as (base offset, max
    /// timestamp): the time index gives the starting offset, the offset index its position,
    /// then a header scan. `Ok(None)` if no batch in the segment qualifies.
    pub(crate) fn find_offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64)>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let start = self.time_index.lookup(timestamp).map(|(_, entry)| entry);
        match self.scan_for_timestamp(start, timestamp)? {
            TimeOutcome::Found(found) => Ok(Some(found)),
            TimeOutcome::NotInSegment => Ok(None),
            TimeOutcome::IndexDisagrees(detail) => {
                warn!(
                    log = %self.log_path.display(),
                    detail,
                    "time index entry does not match the log; scanning from the segment start"
                );
                match self.scan_for_timestamp(None, timestamp)? {
                    TimeOutcome::Found(found) => Ok(Some(found)),
                    TimeOutcome::NotInSegment => Ok(None),
                    TimeOutcome::IndexDisagrees(detail) => Err(self.corrupt(0, detail)),
                }
            }
        }
    }

    /// [`Segment::find_offset_for_timestamp`] from a time index entry (or from byte 0),
    /// checking on the way that the entry is right: the batch at its offset must carry its
    /// timestamp, and no batch before it may qualify.
    fn scan_for_timestamp(&self, start: Option<TimestampOffset>, timestamp: i64) -> io::Result<TimeOutcome> {
        let start_position = match start {
            Some(entry) => self.index.lookup(entry.offset).map_or(0, |(_, found)| found.position),
            None => 0,
        };
        let mut verified = start.is_none();
        let mut scanner =
            BatchScanner::new(&self.log, start_position, self.log_bytes, CrcCheck::No, LOOKUP_CHUNK_BYTES);
        loop {
            let batch = match scanner.next_batch()? {
                Scanned::End if verified => return Ok(TimeOutcome::NotInSegment),
                Scanned::End => return Ok(TimeOutcome::IndexDisagrees("its offset is not in the segment".to_string())),
                Scanned::Bad { position, problem } if verified && start.is_none() => {
                    return Err(self.corrupt(position, problem));
                }
                Scanned::Bad { problem, .. } => {
                    return Ok(TimeOutcome::IndexDisagrees(format!("the scan from it found no batch: {problem}")))
                }
                Scanned::Batch(batch) => batch,
            };
            if let (Some(entry), false) = (start, verified) {
                if batch.header.base_offset == entry.offset {
                    if batch.header.max_timestamp != entry.timestamp {
                        return Ok(TimeOutcome::IndexDisagrees(format!(
                            "says offset {} has timestamp {}, the batch says {}",
                            entry.offset, entry.timestamp, batch.header.max_timestamp
                        )));
                    }
                    verified = true;
                } else if batch.header.base_offset > entry.offset {
                    return Ok(TimeOutcome::IndexDisagrees(format!("no batch starts at offset {}", entry.offset)));
                }
            }
            if batch.header.max_timestamp >= timestamp {
                return Ok(if verified {
                    TimeOutcome::Found((batch.header.base_offset, batch.header.max_timestamp))
                } else {
                    TimeOutcome::IndexDisagrees(format!(
                        "a batch before offset {} already qualifies",
                        start.map_or(0, |e| e.offset)
                    ))
                });
            }
        }
    }

    /// An `InvalidData` error naming this segment and a byte position.
    fn corrupt(&self, position: u64, problem: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "segment {} is corrupt at byte {position}: {problem}. Stop the broker and remove the segment and the \
                 ones after it (the data in them is lost), or restore the partition from a replica",
                self.log_path.display()
            ),
        )
    }

    /// True if this segment should roll before an append of `append_bytes` bytes whose last
    /// offset is `append_last_offset`; the reason, for the log line.
    pub(crate) fn roll_reason(
        &self,
        append_bytes: u64,
        append_last_offset: i64,
        segment_bytes: u64,
        segment_ms: i64,
        now_ms: i64,
    ) -> Option<&'static str> {
        if self.log_bytes == 0 {
            return None; // a fresh segment takes any append, even one bigger than segment_bytes
        }
        let after = self.log_bytes.saturating_add(append_bytes);
        if after > segment_bytes {
            Some("segment_bytes reached")
        } else if after > MAX_SEGMENT_BYTES {
            Some("4 GiB position limit reached")
        } else if self.age_exceeds(now_ms, segment_ms) {
            Some("segment_ms reached")
        } else if self.index.is_full() || self.time_index.is_full() {
            Some("index full")
        } else if append_last_offset - self.base_offset > i64::from(u32::MAX) {
            Some("relative offsets would overflow u32")
        } else {
            None
        }
    }

    /// True if the segment has data and its first append is more than `segment_ms` ago.
    pub(crate) fn age_exceeds(&self, now_ms: i64, segment_ms: i64) -> bool {
        self.first_append_ms.is_some_and(|first| now_ms.saturating_sub(first) > segment_ms)
    }

    /// The timestamp retention judges the segment by: its largest batch timestamp, or the
    /// `.log`'s modification time when no batch carried one (Kafka does the same).
    pub(crate) fn largest_timestamp(&self) -> io::Result<i64> {
        if self.max_timestamp >= 0 {
            return Ok(self.max_timestamp);
        }
        let modified = self.log.metadata()?.modified()?;
        let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// Removes the segment's three files: the `.log` first, so that a crash halfway leaves
    /// at worst orphan indexes, which the next open removes.
    pub(crate) fn delete(self) -> io::Result<()> {
        let log_path = self.log_path.clone();
        let index_path = self.index.path().to_path_buf();
        let time_path = self.time_index.path().to_path_buf();
        drop(self);
        for path in [log_path, index_path, time_path] {
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    /// Offset of the segment's first batch.
    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// One past the segment's last offset.
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes in the `.log`.
    pub(crate) fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// The `.log`'s handle, for a flush.
    pub(crate) fn log_file(&self) -> &Arc<File> {
        &self.log
    }

    /// Largest batch max timestamp in the segment, -1 if none.
    #[cfg(test)]
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Entries in the offset index.
    #[cfg(test)]
    pub(crate) fn index_entries(&self) -> usize {
        self.index.len()
    }
}

/// Result of one attempt at [`Segment::read`].
enum ReadOutcome {
    /// Whole batches, starting with the one holding the target.
    Found(Bytes),
    /// The segment ends before the target.
    NotInSegment,
    /// The index entry the read started from does not match the log.
    IndexDisagrees(IndexProblem),
}

/// Result of one attempt at [`Segment::find_offset_for_timestamp`].
enum TimeOutcome {
    /// (base offset, max timestamp) of the first qualifying batch.
    Found((i64, i64)),
    /// No batch in the segment qualifies.
    NotInSegment,
    /// The time index entry the scan started from is wrong, and why.
    IndexDisagrees(String),
}

/// An [`IndexProblem`] about the entry a read started from.
fn index_problem(start: Option<(usize, OffsetPosition)>, detail: String) -> IndexProblem {
    IndexProblem::DisagreesWithLog { entry: start.map_or(0, |(index, _)| index), detail }
}

/// Part of the sanity check of a sealed segment's index: its last entry must point at a
/// batch with that base offset. One `pread`.
fn last_entry_matches_log(log: &File, log_bytes: u64, index: &OffsetIndex) -> Result<(), IndexProblem> {
    let Some(last) = index.last() else { return Ok(()) };
    let entry = index.len() - 1;
    let available = usize::try_from(log_bytes - last.position).unwrap_or(usize::MAX).min(HEADER_BYTES);
    let mut header = vec![0u8; available];
    if let Err(error) = log.read_exact_at(&mut header, last.position) {
        return Err(IndexProblem::DisagreesWithLog {
            entry,
            detail: format!("could not read the batch it points at: {error}"),
        });
    }
    match BatchHeader::parse(&header) {
        Ok(header) if header.base_offset == last.offset => Ok(()),
        Ok(header) => Err(IndexProblem::DisagreesWithLog {
            entry,
            detail: format!("says offset {}, the batch has base offset {}", last.offset, header.base_offset),
        }),
        Err(problem) => Err(IndexProblem::DisagreesWithLog {
            entry,
            detail: format!("no batch at position {}: {problem}", last.position),
        }),
    }
}

/// During recovery's scan: the next offset-index entry must sit on this batch or later.
fn verify_offset_entries(index: &OffsetIndex, cursor: &mut usize, batch: &ScannedBatch) -> Result<(), IndexProblem> {
    if *cursor >= index.len() {
        return Ok(());
    }
    let entry = index.entry(*cursor);
    if entry.position < batch.position {
        let detail = format!("position {} is not the start of a batch", entry.position);
        return Err(IndexProblem::DisagreesWithLog { entry: *cursor, detail });
    }
    if entry.position == batch.position {
        if entry.offset != batch.header.base_offset {
            let detail =
                format!("says offset {}, the batch has base offset {}", entry.offset, batch.header.base_offset);
            return Err(IndexProblem::DisagreesWithLog { entry: *cursor, detail });
        }
        *cursor += 1;
    }
    Ok(())
}

/// During recovery's scan: the next time-index entry must name this batch or a later one,
/// and if it names this one, this batch must be where the running max first reached the
/// entry's timestamp (`max_before` is the running max before this batch).
fn verify_time_entries(
    index: &TimeIndex,
    cursor: &mut usize,
    batch: &ScannedBatch,
    max_before: i64,
) -> Result<(), IndexProblem> {
    if *cursor >= index.len() {
        return Ok(());
    }
    let entry = index.entry(*cursor);
    if entry.offset < batch.header.base_offset {
        let detail = format!("offset {} is not the base offset of a batch", entry.offset);
        return Err(IndexProblem::DisagreesWithLog { entry: *cursor, detail });
    }
    if entry.offset == batch.header.base_offset {
        if entry.timestamp != batch.header.max_timestamp || entry.timestamp <= max_before {
            let detail = format!(
                "says timestamp {} first reached at offset {}; the batch has {} after a max of {max_before}",
                entry.timestamp, entry.offset, batch.header.max_timestamp
            );
            return Err(IndexProblem::DisagreesWithLog { entry: *cursor, detail });
        }
        *cursor += 1;
    }
    Ok(())
}

/// What a scan of a segment from its first byte has established so far.
struct ScanState {
    /// The segment's base offset.
    base_offset: i64,
    /// The base offset the next batch must have.
    next_offset: i64,
    /// Running max timestamp, -1 if none yet.
    max_timestamp: i64,
    /// Base offset of the first batch that carried `max_timestamp`.
    offset_of_max_timestamp: i64,
}

impl ScanState {
    fn new(base_offset: i64) -> ScanState {
        ScanState { base_offset, next_offset: base_offset, max_timestamp: -1, offset_of_max_timestamp: base_offset }
    }

    /// Whether the batch at `position` continues the segment: its base offset is the next
    /// one (the CRC does not cover base offsets, so a flipped bit there is only caught
    /// here), and its offsets and position fit the index's `u32` fields.
    fn accepts(&self, position: u64, header: &BatchHeader) -> Result<(), &'static str> {
        if header.base_offset != self.next_offset {
            Err("base offset does not follow the previous batch")
        } else if header.last_offset() - self.base_offset > i64::from(u32::MAX) || position > MAX_SEGMENT_BYTES {
            Err("offsets or position past what a segment can address")
        } else {
            Ok(())
        }
    }

    fn observe(&mut self, header: &BatchHeader) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        self.next_offset = header.last_offset() + 1;
    }
}

/// Whether a [`BatchScanner`] checks each batch's CRC (recovery) or only its header (rebuilds, lookups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrcCheck {
    Yes,
    No,
}

/// A batch the scanner found, and where.
struct ScannedBatch {
    /// Byte position of the batch's first byte in the `.log`.
    position: u64,
    /// Its parsed header.
    header: BatchHeader,
}

/// One step of a [`BatchScanner`].
enum Scanned {
    /// A whole batch (with a matching CRC, if checked).
    Batch(ScannedBatch),
    /// The scan reached its end exactly at a batch boundary.
    End,
    /// The bytes at `position` are not a whole, intact batch. The caller stops here.
    Bad { position: u64, problem: BatchError },
}

/// Walks the batches of a `.log` between two byte positions with buffered positional reads,
/// never holding more than one chunk however large a batch is (CRCs are computed
/// incrementally), and never moving the file's cursor.
struct BatchScanner<'a> {
    file: &'a File,
    /// Where the next batch starts.
    position: u64,
    /// Where the scan stops.
    end: u64,
    crc: CrcCheck,
    /// Bytes read ahead, starting at file position `buffer_start`.
    buffer: Vec<u8>,
    buffer_start: u64,
    /// Bytes per `pread`.
    chunk_bytes: usize,
}

impl<'a> BatchScanner<'a> {
    fn new(file: &'a File, start: u64, end: u64, crc: CrcCheck, chunk_bytes: usize) -> BatchScanner<'a> {
        BatchScanner { file, position: start, end, crc, buffer: Vec::new(), buffer_start: start, chunk_bytes }
    }

    /// File bytes `start .. start + len`, which must lie before `end`; `len` at most a chunk.
    fn window(&mut self, start: u64, len: usize) -> io::Result<&[u8]> {
        debug_assert!(start + len as u64 <= self.end);
        let buffered_end = self.buffer_start + self.buffer.len() as u64;
        if start < self.buffer_start || start + len as u64 > buffered_end {
            let read_len = usize::try_from(self.end - start).unwrap_or(usize::MAX).min(len.max(self.chunk_bytes));
            self.buffer.resize(read_len, 0);
            self.file.read_exact_at(&mut self.buffer, start)?;
            self.buffer_start = start;
        }
        let offset = (start - self.buffer_start) as usize;
        Ok(&self.buffer[offset..offset + len])
    }

    fn next_batch(&mut self) -> io::Result<Scanned> {
        let position = self.position;
        if position >= self.end {
            return Ok(Scanned::End);
        }
        let available = self.end - position;
        let header_len = usize::try_from(available).unwrap_or(usize::MAX).min(HEADER_BYTES);
        let header = match BatchHeader::parse(self.window(position, header_len)?) {
            Ok(header) => header,
            Err(problem) => return Ok(Scanned::Bad { position, problem }),
        };
        let batch_end = position + header.batch_len as u64;
        if batch_end > self.end {
            let problem = BatchError::Truncated {
                needed: header.batch_len,
                available: usize::try_from(available).unwrap_or(usize::MAX),
            };
            return Ok(Scanned::Bad { position, problem });
        }
        if self.crc == CrcCheck::Yes {
            let mut crc = 0;
            let mut at = position + CRC_COVERED_FROM as u64;
            while at < batch_end {
                let len = usize::try_from(batch_end - at).unwrap_or(usize::MAX).min(self.chunk_bytes);
                crc = crc32c::crc32c_append(crc, self.window(at, len)?);
                at += len as u64;
            }
            if crc != header.crc {
                return Ok(Scanned::Bad {
                    position,
                    problem: BatchError::CrcMismatch { expected: header.crc, actual: crc },
                });
            }
        }
        self.position = batch_end;
        Ok(Scanned::Batch(ScannedBatch { position, header }))
    }
}

/// Fsyncs a directory, so that files created or removed in it stay so after a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::testing::{build_batch, BatchSpec};
    use crate::storage::batch::{assign_offsets, validate_batches};

    const CONFIG: IndexConfig = IndexConfig { interval_bytes: 256, max_index_bytes: 4096 };

    /// Appends `batches` batches of `records` records each, one batch per append.
    fn fill(segment: &mut Segment, batches: usize, records: usize) {
        for i in 0..batches {
            let mut bytes = build_batch(&BatchSpec::new(records, 40, 1_000 + 10 * i as i64));
            let next = assign_offsets(&mut bytes, segment.next_offset()).expect("assign");
            let headers = validate_batches(&bytes, usize::MAX).expect("valid");
            segment.append(&bytes, &headers, 0).expect("append");
            assert_eq!(segment.next_offset(), next);
        }
    }

    #[test]
    fn file_names_are_kafkas() {
        assert_eq!(file_name(0, LOG_EXTENSION), "00000000000000000000.log");
        assert_eq!(file_name(368_769, INDEX_EXTENSION), "00000000000000368769.index");
        assert_eq!(file_name(i64::MAX, TIME_INDEX_EXTENSION), "09223372036854775807.timeindex");
    }

    #[test]
    fn every_offset_reads_back_from_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut segment = Segment::create(dir.path(), 0, CONFIG).expect("create");
        fill(&mut segment, 50, 3);
        assert!(segment.index_entries() > 5, "the index is sparse but not empty");
        for offset in 0..150 {
            let bytes = segment.read(offset, 1).expect("read").expect("present");
            let headers = validate_batches(&bytes, usize::MAX).expect("whole batches");
            assert_eq!(headers.len(), 1, "max_bytes 1 still returns one whole batch");
            assert!(headers[0].base_offset <= offset && offset <= headers[0].last_offset());
        }
        assert!(segment.read(150, 1024).expect("read").is_none());
        let all = segment.read(0, usize::MAX).expect("read").expect("present");
        assert_eq!(all.len() as u64, segment.log_bytes());
    }

    #[test]
    fn the_time_index_finds_the_first_batch_at_or_after_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut segment = Segment::create(dir.path(), 0, CONFIG).expect("create");
        fill(&mut segment, 30, 2); // batch i has max timestamp 1_000 + 10 i + 1
        assert_eq!(segment.find_offset_for_timestamp(0).expect("find"), Some((0, 1_001)));
        assert_eq!(segment.find_offset_for_timestamp(1_001).expect("find"), Some((0, 1_001)));
        assert_eq!(segment.find_offset_for_timestamp(1_002).expect("find"), Some((2, 1_011)));
        assert_eq!(segment.find_offset_for_timestamp(1_291).expect("find"), Some((58, 1_291)));
        assert_eq!(segment.find_offset_for_timestamp(1_292).expect("find"), None);
    }

    #[test]
    fn sealed_segments_reopen_with_their_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut segment = Segment::create(dir.path(), 0, CONFIG).expect("create");
        fill(&mut segment, 40, 2);
        let (entries, bytes) = (segment.index_entries(), segment.log_bytes());
        segment.seal().expect("seal");
        drop(segment);

        let (reopened, recovery) = Segment::open_sealed(dir.path(), 0, 80, CONFIG).expect("open");
        assert!(recovery.rebuilt_indexes.is_empty(), "{:?}", recovery.rebuilt_indexes);
        assert_eq!((reopened.index_entries(), reopened.log_bytes(), reopened.max_timestamp()), (entries, bytes, 1_391));
        assert_eq!(reopened.find_offset_for_timestamp(1_100).expect("find"), Some((20, 1_101)));
    }

    /// An index that passes the sanity check on open but points into the middle of a batch
    /// is caught at lookup time, and the read still returns the right batch.
    #[test]
    fn a_wrong_index_entry_is_caught_at_read_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut segment = Segment::create(dir.path(), 0, CONFIG).expect("create");
        fill(&mut segment, 20, 2);
        let (_, entry) = segment.index.lookup(39).expect("an entry");
        // Move the last entry one byte forward: still increasing, still inside the log.
        let last = segment.index.len() - 1;
        segment.index.truncate(last);
        assert!(segment.index.append(entry.offset, entry.position + 1));
        let bytes = segment.read(39, 1).expect("read").expect("present");
        let headers = validate_batches(&bytes, usize::MAX).expect("whole batches");
        assert_eq!(headers[0].last_offset(), 39);
    }

    #[test]
    fn the_scanner_reports_a_torn_tail_and_checks_crcs_in_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut segment = Segment::create(dir.path(), 0, CONFIG).expect("create");
        fill(&mut segment, 3, 20);
        let size = segment.log_bytes();
        // A chunk smaller than a batch exercises the incremental CRC.
        let mut scanner = BatchScanner::new(&segment.log, 0, size - 7, CrcCheck::Yes, 100);
        assert!(matches!(scanner.next_batch().expect("read"), Scanned::Batch(_)));
        assert!(matches!(scanner.next_batch().expect("read"), Scanned::Batch(_)));
        assert!(matches!(
            scanner.next_batch().expect("read"),
            Scanned::Bad { problem: BatchError::Truncated { .. }, .. }
        ));
        segment.log.write_all_at(&[0xff], size - 1).expect("damage the last byte");
        let mut scanner = BatchScanner::new(&segment.log, 0, size, CrcCheck::Yes, 100);
        scanner.next_batch().expect("read");
        scanner.next_batch().expect("read");
        assert!(matches!(
            scanner.next_batch().expect("read"),
            Scanned::Bad { problem: BatchError::CrcMismatch { .. }, .. }
        ));
    }
}
