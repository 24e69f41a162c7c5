//! [`PartitionLog`]: one partition's log on disk, a directory of segments in offset order.
//! The last segment is the active one and takes every append; the others are sealed,
//! read-only and complete on disk.
//!
//! # Durability
//!
//! [`PartitionLog::append`] returns once the batches are in the page cache (one `write`),
//! with no fsync: an acknowledged append survives the broker being killed (`kill -9`) but
//! not a power loss or kernel crash. Getting past that is the caller's choice, made with
//! [`PartitionLog::flush_target`] and [`PartitionLog::mark_flushed`]: the broker acks a
//! produce only after an fsync covers its offsets (Kafka's `acks=all` with a flush policy),
//! or right after the append (Kafka's default, which leans on replication instead; here
//! there is no replication, so say so to users). Two fsyncs happen inside the log itself,
//! because recovery depends on them: sealing a segment when it rolls (so only the last
//! segment can ever have a torn tail) and the directory after a segment is created or
//! deleted.
//!
//! # Recovery
//!
//! [`PartitionLog::open`] scans the active segment batch by batch, checking length, magic,
//! CRC-32C and offsets, and cuts the `.log` at the first batch that fails, the torn tail of
//! a crash. Every segment's indexes get a sanity check and are rebuilt from the `.log` when
//! they fail it or are missing. Index files without a `.log` are removed.
//!
//! Left out: compaction, `DeleteRecords` (a log start offset inside a segment), truncation
//! for replication (there is no follower), Kafka's recovery-point checkpoint (we rescan the
//! whole active segment instead) and its asynchronous deletion of `.deleted` files.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use super::batch::{assign_offsets, first_record_at_or_after, validate_batches, BatchError, BatchHeader, HEADER_BYTES};
use super::segment::{
    self, sync_dir, IndexConfig, Segment, INDEX_EXTENSION, LOG_EXTENSION, MAX_SEGMENT_BYTES, TIME_INDEX_EXTENSION,
};
use super::time_index::TIME_ENTRY_BYTES;

/// The smallest `max_index_bytes` that works: two time index entries, one for appends and
/// one kept for the entry a segment gets when it is sealed.
pub const MIN_INDEX_BYTES: usize = 2 * TIME_ENTRY_BYTES;

/// How a partition log rolls, indexes and retains. The defaults are Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll before an append would make the active `.log` larger than this (Kafka's
    /// `segment.bytes`). An append bigger than this on its own still goes, whole, into a
    /// fresh segment. Segments never pass 4 GiB, since index positions are `u32`.
    pub segment_bytes: u64,
    /// Roll when the active segment's first append is more than this long ago (Kafka's
    /// `segment.ms`). Measured from the wall-clock `now_ms` of the first append into the
    /// segment, not from record timestamps, so a producer's clock cannot force rolls; an
    /// empty segment never rolls; after a restart the age restarts from the `now_ms` given
    /// to [`PartitionLog::open`] (the first-append time is not on disk).
    pub segment_ms: i64,
    /// Delete sealed segments whose largest timestamp is more than this long ago (Kafka's
    /// `retention.ms`). `None` keeps them forever (Kafka's -1).
    pub retention_ms: Option<i64>,
    /// Delete the oldest sealed segments while the rest would still hold at least this many
    /// bytes (Kafka's `retention.bytes`). `None` means no size limit (Kafka's -1).
    pub retention_bytes: Option<u64>,
    /// Bytes of log between offset-index entries (Kafka's `index.interval.bytes`).
    pub index_interval_bytes: usize,
    /// Size each index file is preallocated to while its segment is active; a full index
    /// rolls the segment (Kafka's `segment.index.bytes`).
    pub max_index_bytes: usize,
    /// The largest batch an append accepts, prefix included (Kafka's `max.message.bytes`).
    pub max_batch_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        /// Kafka's seven days, in milliseconds.
        const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: SEVEN_DAYS_MS,
            retention_ms: Some(SEVEN_DAYS_MS),
            retention_bytes: None,
            index_interval_bytes: 4096,
            max_index_bytes: 10 << 20,
            max_batch_bytes: 1_048_588,
        }
    }
}

impl LogConfig {
    /// The part of the config a segment needs.
    fn index_config(&self) -> IndexConfig {
        IndexConfig { interval_bytes: self.index_interval_bytes, max_index_bytes: self.max_index_bytes }
    }

    /// Refuses settings the log cannot work with.
    fn check(&self) -> io::Result<()> {
        if self.max_index_bytes < MIN_INDEX_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "max_index_bytes {} is below the minimum of {MIN_INDEX_BYTES}; Kafka's default is 10485760",
                    self.max_index_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first batch: the log end offset before the append.
    pub base_offset: i64,
    /// Last offset of the last batch (`base_offset - 1` when the records held no batch).
    pub last_offset: i64,
    /// Records in the batches, as the producer counted them.
    pub record_count: u64,
    /// Bytes written.
    pub bytes: usize,
    /// Largest batch max timestamp, -1 if none.
    pub max_timestamp: i64,
}

/// Why an append was refused. In every case nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The records are not whole, intact v2 batches (Kafka's `CORRUPT_MESSAGE`, or
    /// `UNSUPPORTED_FOR_MESSAGE_FORMAT` for [`BatchError::BadMagic`]).
    #[error("the records were refused and nothing was appended: {0}")]
    Corrupt(BatchError),
    /// A batch is over `max_batch_bytes` (Kafka's `MESSAGE_TOO_LARGE`).
    #[error(
        "a record batch of {size} bytes is over the {max}-byte limit (max.message.bytes) and nothing was appended. \
         Lower the producer's batch.size, or raise the limit"
    )]
    TooLarge {
        /// The batch's size, prefix included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Writing failed (disk full, I/O error). The `.log` was cut back to where it was.
    #[error("could not append to the partition log, and nothing was appended: {0}")]
    Io(#[from] io::Error),
}

impl From<BatchError> for AppendError {
    fn from(error: BatchError) -> AppendError {
        match error {
            BatchError::TooLarge { size, max } => AppendError::TooLarge { size, max },
            other => AppendError::Corrupt(other),
        }
    }
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The offset is before the log start or past the log end (Kafka's `OFFSET_OUT_OF_RANGE`,
    /// after which a consumer applies its `auto.offset.reset`).
    #[error(
        "offset {requested} is out of range: the log holds offsets {log_start} to {log_end} (exclusive). \
         Reset the consumer's position (auto.offset.reset)"
    )]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: i64,
        /// The first offset still in the log.
        log_start: i64,
        /// The log end offset.
        log_end: i64,
    },
    /// Reading the file failed, or what it holds is not whole batches (`InvalidData`).
    #[error("could not read the partition log: {0}")]
    Io(#[from] io::Error),
}

/// What [`PartitionLog::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after opening.
    pub segments: usize,
    /// Bytes cut from the end of the active segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Index files rebuilt from their `.log` because they were missing or failed the check.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Index files removed because their `.log` was gone.
    pub removed_orphans: Vec<PathBuf>,
    /// The first offset in the log.
    pub log_start_offset: i64,
    /// The next offset an append will get.
    pub log_end_offset: i64,
}

/// What an fsync must cover to make the log durable up to `end_offset`: run
/// [`FlushTarget::sync`] *without* holding the log's lock, then call
/// [`PartitionLog::mark_flushed`]`(end_offset)`. Appends can go on meanwhile, and every
/// produce waiting for an offset below `end_offset` is covered by this one fsync (group commit).
#[derive(Debug, Clone)]
pub struct FlushTarget {
    /// Every segment `.log` written since the last flush. Usually just the active one.
    pub files: Vec<Arc<File>>,
    /// The log end offset when the target was taken: everything below it is covered.
    pub end_offset: i64,
}

impl FlushTarget {
    /// Fsyncs (`fdatasync`) every file. A file whose segment was deleted meanwhile still
    /// syncs harmlessly through its open handle.
    pub fn sync(&self) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        Ok(())
    }

    /// True if there is nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// A segment `.log` written since the last flush.
#[derive(Debug)]
struct UnflushedSegment {
    /// Which segment, so retention can forget it.
    base_offset: i64,
    /// Its `.log`.
    file: Arc<File>,
    /// The log end offset right after the last write to it: a flush up to here covers it.
    written_through: i64,
}

/// One partition's log. See the module docs for the layout, durability and recovery.
///
/// `Send + Sync`, with `read`, `flush_target` and the getters on `&self`: the broker keeps
/// each log behind a `parking_lot::Mutex` and can fsync a [`FlushTarget`] outside it.
pub struct PartitionLog {
    /// The partition's directory (`<topic>-<partition>` under the broker's data dir).
    dir: PathBuf,
    /// Rolling, indexing and retention settings.
    config: LogConfig,
    /// Segments in offset order; never empty; the last is the active one. A `VecDeque`
    /// because retention removes from the front.
    segments: VecDeque<Segment>,
    /// Sum of the segments' `.log` sizes, kept so that `size_bytes` and retention are O(1).
    size_bytes: u64,
    /// Everything below this offset is on disk.
    flushed_offset: i64,
    /// Segment files written since the last flush, each with the offset its writes reach.
    unflushed: Vec<UnflushedSegment>,
}

// The broker shares logs across threads; fail the build, not the broker, if that breaks.
const _: fn() = || {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<PartitionLog>();
};

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory and a first segment if missing, and
    /// recovers it (see the module docs). `now_ms` starts the active segment's age.
    ///
    /// Costs a read of the whole active segment and one fsync; sealed segments cost a
    /// stat and an index check each, unless an index must be rebuilt.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> io::Result<(PartitionLog, RecoveryReport)> {
        config.check()?;
        fs::create_dir_all(dir).map_err(|error| with_path(error, "create the log directory", dir))?;
        let listing = list_segment_files(dir).map_err(|error| with_path(error, "list the log directory", dir))?;

        for orphan in &listing.orphans {
            warn!(file = %orphan.display(), "removing an index file whose .log is gone");
            fs::remove_file(orphan).map_err(|error| with_path(error, "remove an orphan index", orphan))?;
        }
        if !listing.orphans.is_empty() {
            sync_dir(dir)?;
        }

        let index_config = config.index_config();
        let mut segments = VecDeque::with_capacity(listing.log_bases.len().max(1));
        let mut truncated_bytes = 0;
        let mut rebuilt_indexes = Vec::new();
        match listing.log_bases.split_last() {
            None => segments.push_back(
                Segment::create(dir, 0, index_config)
                    .map_err(|error| with_path(error, "create the first segment", dir))?,
            ),
            Some((&active_base, sealed_bases)) => {
                for (position, &base) in sealed_bases.iter().enumerate() {
                    let end = listing.log_bases[position + 1];
                    let (segment, recovery) = Segment::open_sealed(dir, base, end, index_config)
                        .map_err(|error| with_path(error, "open a sealed segment", &segment_path(dir, base)))?;
                    rebuilt_indexes.extend(recovery.rebuilt_indexes);
                    segments.push_back(segment);
                }
                let (segment, recovery) = Segment::open_active(dir, active_base, index_config, now_ms)
                    .map_err(|error| with_path(error, "recover the active segment", &segment_path(dir, active_base)))?;
                truncated_bytes = recovery.truncated_bytes;
                rebuilt_indexes.extend(recovery.rebuilt_indexes);
                segments.push_back(segment);
            }
        }

        let size_bytes = segments.iter().map(Segment::log_bytes).sum();
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            size_bytes,
            flushed_offset: 0,
            unflushed: Vec::new(),
        };
        // open_active fsynced the active segment and every sealed one was fsynced when it
        // was sealed, so everything recovered is on disk.
        log.flushed_offset = log.log_end_offset();
        log.check_segments_line_up();

        let report = RecoveryReport {
            segments: log.segments.len(),
            truncated_bytes,
            rebuilt_indexes,
            removed_orphans: listing.orphans,
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.log_end_offset(),
        };
        info!(
            dir = %dir.display(),
            segments = report.segments,
            log_start_offset = report.log_start_offset,
            log_end_offset = report.log_end_offset,
            truncated_bytes = report.truncated_bytes,
            rebuilt_indexes = report.rebuilt_indexes.len(),
            "opened partition log"
        );
        Ok((log, report))
    }

    /// Appends one or more v2 batches: all or nothing. Every batch is validated first (see
    /// [`validate_batches`]); on any error nothing is written. Then the batches get offsets
    /// in place from the log end offset (the caller's buffer is changed, CRCs stay valid),
    /// the log rolls if it must, and the bytes go to the active `.log` in one `write`,
    /// with no fsync (see the module docs on durability).
    ///
    /// Records holding no batch at all append nothing and return a zero-record `AppendInfo`.
    pub fn append(&mut self, records: &mut [u8], now_ms: i64) -> Result<AppendInfo, AppendError> {
        let mut batches = validate_batches(records, self.config.max_batch_bytes)?;
        let base_offset = self.log_end_offset();
        if batches.is_empty() {
            return Ok(AppendInfo {
                base_offset,
                last_offset: base_offset - 1,
                record_count: 0,
                bytes: 0,
                max_timestamp: -1,
            });
        }
        if records.len() as u64 > MAX_SEGMENT_BYTES {
            // Only reachable with thousands of batches in one request; a segment cannot hold it.
            return Err(AppendError::TooLarge { size: records.len(), max: MAX_SEGMENT_BYTES as usize });
        }
        let next_offset = assign_offsets(records, base_offset)?;
        // The same offsets a second way, from the validated headers; the two must agree.
        let mut offset = base_offset;
        for header in &mut batches {
            header.base_offset = offset;
            offset = header.last_offset() + 1;
        }
        assert_eq!(offset, next_offset, "assign_offsets and the validated headers disagree on the offsets");
        let last_offset = next_offset - 1;

        let roll_reason = self.active().roll_reason(
            records.len() as u64,
            last_offset,
            self.config.segment_bytes,
            self.config.segment_ms,
            now_ms,
        );
        if let Some(reason) = roll_reason {
            self.roll(reason)?;
        }
        self.active_mut().append(records, &batches, now_ms)?;
        self.size_bytes += records.len() as u64;
        self.note_written(next_offset);
        assert_eq!(self.log_end_offset(), next_offset, "the log end moved by exactly the appended offsets");

        Ok(AppendInfo {
            base_offset,
            last_offset,
            record_count: batches.iter().map(|header| header.record_count as u64).sum(),
            bytes: records.len(),
            max_timestamp: batches.iter().map(|header| header.max_timestamp).max().unwrap_or(-1),
        })
    }

    /// Whole batches, starting with the one that contains `offset`, from one segment: as
    /// many as fit in `max_bytes`, but always at least one whole batch even if it is bigger
    /// (Kafka's KIP-74, so a consumer can never get stuck behind a large batch). The bytes
    /// come straight from the file, never decoded or re-encoded; the first batch may start
    /// before `offset` (the consumer skips the records it did not ask for, as with Kafka).
    ///
    /// Empty at `offset == log_end_offset`; [`ReadError::OffsetOutOfRange`] below the log
    /// start or past the log end. Usually one `pread`.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, ReadError> {
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        if offset < log_start || offset > log_end {
            return Err(ReadError::OffsetOutOfRange { requested: offset, log_start, log_end });
        }
        if offset == log_end {
            return Ok(Bytes::new());
        }
        // The last segment whose base is at or below the offset; it exists since offset >= log start.
        let first = self.segments.partition_point(|segment| segment.base_offset() <= offset).saturating_sub(1);
        // A later segment only comes into play past a gap in the offsets, which this log
        // never writes but a damaged one might hold.
        for segment in self.segments.range(first..) {
            if let Some(bytes) = segment.read(offset, max_bytes)? {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
    }

    /// The first offset in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.segments.front().map_or(0, Segment::base_offset)
    }

    /// The next offset an append will get.
    pub fn log_end_offset(&self) -> i64 {
        self.segments.back().map_or(0, Segment::next_offset)
    }

    /// Bytes in every segment's `.log`.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Calls `visit` with the header of every batch in the log, oldest first, reading
    /// only headers: what the broker needs to rebuild idempotent producers' state at
    /// start without reading every record.
    pub fn for_each_batch_header(&self, mut visit: impl FnMut(&BatchHeader)) -> io::Result<()> {
        for segment in &self.segments {
            segment.for_each_header(&mut visit)?;
        }
        Ok(())
    }

    /// Segments in the log, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Kafka's ListOffsets by timestamp: the first record whose timestamp is at least
    /// `timestamp`, as (offset, timestamp); `None` if there is none. The batch is found
    /// through the time index, the offset index and a short header scan; inside an
    /// uncompressed batch the records' timestamps pick the exact record, as Kafka does.
    ///
    /// In a compressed batch the answer is the batch's base offset and max timestamp:
    /// finding the exact record would mean decompressing, which the broker never does.
    /// That offset is at or before the exact one, so a consumer that seeks by time
    /// misses nothing; it may see up to one batch of older records first.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64)>> {
        for segment in &self.segments {
            if let Some((batch_offset, max_timestamp)) = segment.find_offset_for_timestamp(timestamp)? {
                let exact = match self.read(batch_offset, HEADER_BYTES) {
                    Ok(bytes) => first_record_at_or_after(&bytes, timestamp),
                    Err(ReadError::Io(e)) => return Err(e),
                    Err(ReadError::OffsetOutOfRange { .. }) => None,
                };
                return Ok(Some(exact.unwrap_or((batch_offset, max_timestamp))));
            }
        }
        Ok(None)
    }

    /// What an fsync must cover now; see [`FlushTarget`].
    pub fn flush_target(&self) -> FlushTarget {
        FlushTarget {
            files: self.unflushed.iter().map(|segment| Arc::clone(&segment.file)).collect(),
            end_offset: self.log_end_offset(),
        }
    }

    /// Records that an fsync covered everything below `end_offset` (a [`FlushTarget`]'s).
    /// Flushes may finish out of order; the flushed offset only moves forward.
    pub fn mark_flushed(&mut self, end_offset: i64) {
        assert!(
            end_offset <= self.log_end_offset(),
            "mark_flushed({end_offset}) past the log end {}: pass the FlushTarget's end_offset",
            self.log_end_offset()
        );
        self.flushed_offset = self.flushed_offset.max(end_offset);
        self.unflushed.retain(|segment| segment.written_through > end_offset);
    }

    /// Everything below this offset is on disk.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    /// Rolls the active segment if it is older than `segment_ms`, then deletes whole sealed
    /// segments that break retention, oldest first: by age while the oldest segment's
    /// largest timestamp is more than `retention_ms` before `now_ms`, then by size while the
    /// log minus the oldest segment still holds at least `retention_bytes` (Kafka's rules).
    /// Never deletes the active segment. Advances the log start offset; returns the number
    /// of segments deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> io::Result<usize> {
        if self.active().age_exceeds(now_ms, self.config.segment_ms) {
            self.roll("segment_ms reached")?;
        }
        let mut deleted = 0;
        if let Some(retention_ms) = self.config.retention_ms {
            while self.segments.len() > 1 {
                let largest_timestamp = self.segments[0].largest_timestamp()?;
                if now_ms.saturating_sub(largest_timestamp) <= retention_ms {
                    break;
                }
                self.delete_oldest_segment("retention_ms")?;
                deleted += 1;
            }
        }
        if let Some(retention_bytes) = self.config.retention_bytes {
            while self.segments.len() > 1 && self.size_bytes - self.segments[0].log_bytes() >= retention_bytes {
                self.delete_oldest_segment("retention_bytes")?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
            info!(
                dir = %self.dir.display(),
                deleted,
                log_start_offset = self.log_start_offset(),
                size_bytes = self.size_bytes,
                "retention deleted segments"
            );
        }
        Ok(deleted)
    }

    /// Seals the active segment (its indexes trimmed, everything fsynced) and closes the
    /// log. Dropping the log without this is a crash as far as the files are concerned,
    /// which the next open handles.
    pub fn close(mut self) -> io::Result<()> {
        self.active_mut().seal()?;
        sync_dir(&self.dir)
    }

    /// Removes the partition's directory and everything in it (DeleteTopics).
    pub fn delete(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(|error| with_path(error, "remove the log directory", &dir))?;
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
            _ => sync_dir(Path::new(".")),
        }
    }

    /// The segment that takes appends.
    fn active(&self) -> &Segment {
        self.segments.back().expect("a partition log always has an active segment")
    }

    /// The segment that takes appends.
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("a partition log always has an active segment")
    }

    /// Seals the active segment and starts a new one at the log end offset.
    fn roll(&mut self, reason: &'static str) -> io::Result<()> {
        let sealed = self.active_mut();
        sealed.seal()?;
        let (sealed_base, sealed_end) = (sealed.base_offset(), sealed.next_offset());
        let segment = Segment::create(&self.dir, sealed_end, self.config.index_config())?;
        info!(dir = %self.dir.display(), sealed_base, new_base = sealed_end, reason, "rolled to a new segment");
        self.segments.push_back(segment);
        // Sealing fsynced the old segment, and every segment before it was fsynced when it
        // was sealed: everything below the new segment is on disk.
        self.mark_flushed(sealed_end);
        Ok(())
    }

    /// Removes the oldest segment, which must not be the active one.
    fn delete_oldest_segment(&mut self, reason: &'static str) -> io::Result<()> {
        assert!(self.segments.len() > 1, "retention never deletes the active segment");
        let Some(segment) = self.segments.pop_front() else { return Ok(()) };
        self.size_bytes -= segment.log_bytes();
        self.unflushed.retain(|unflushed| unflushed.base_offset != segment.base_offset());
        info!(
            dir = %self.dir.display(),
            base_offset = segment.base_offset(),
            next_offset = segment.next_offset(),
            bytes = segment.log_bytes(),
            reason,
            "deleting segment"
        );
        segment.delete()
    }

    /// Notes that the active segment was written up to `next_offset`, for the next flush.
    fn note_written(&mut self, next_offset: i64) {
        let base_offset = self.active().base_offset();
        match self.unflushed.iter_mut().find(|segment| segment.base_offset == base_offset) {
            Some(segment) => segment.written_through = next_offset,
            None => {
                let file = Arc::clone(self.active().log_file());
                self.unflushed.push(UnflushedSegment { base_offset, file, written_through: next_offset });
            }
        }
    }

    /// Segments are in offset order and each ends where the next begins.
    fn check_segments_line_up(&self) {
        for (earlier, later) in self.segments.iter().zip(self.segments.iter().skip(1)) {
            assert!(
                earlier.base_offset() < later.base_offset() && earlier.next_offset() == later.base_offset(),
                "segments out of order in {}: {}..{} then {}",
                self.dir.display(),
                earlier.base_offset(),
                earlier.next_offset(),
                later.base_offset()
            );
        }
    }
}

/// The segment files found in a partition directory.
struct SegmentListing {
    /// Base offsets of the `.log` files, ascending.
    log_bases: Vec<i64>,
    /// `.index` and `.timeindex` files whose `.log` is missing.
    orphans: Vec<PathBuf>,
}

/// Lists the segment files in `dir`. Other files (the broker's own metadata, say) are ignored.
fn list_segment_files(dir: &Path) -> io::Result<SegmentListing> {
    let mut log_bases = Vec::new();
    let mut index_files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some((base, extension)) = name.to_str().and_then(parse_segment_file_name) else { continue };
        match extension {
            LOG_EXTENSION => log_bases.push(base),
            _ => index_files.push((base, entry.path())),
        }
    }
    log_bases.sort_unstable();
    let orphans = index_files
        .into_iter()
        .filter(|(base, _)| log_bases.binary_search(base).is_err())
        .map(|(_, path)| path)
        .collect();
    Ok(SegmentListing { log_bases, orphans })
}

/// `"00000000000000000042.log"` → `(42, "log")`; `None` for any other name.
fn parse_segment_file_name(name: &str) -> Option<(i64, &'static str)> {
    let (stem, extension) = name.split_once('.')?;
    let extension =
        [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION].into_iter().find(|known| *known == extension)?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let base = stem.parse::<i64>().ok()?;
    Some((base, extension))
}

/// The `.log` path of the segment at `base`.
fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(segment::file_name(base, LOG_EXTENSION))
}

/// `error` with what was being done and to which path, keeping its kind.
fn with_path(error: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("could not {doing} ({}): {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::testing::{build_batch, BatchSpec};

    fn small_config() -> LogConfig {
        LogConfig { segment_bytes: 2_000, index_interval_bytes: 300, max_index_bytes: 1_200, ..LogConfig::default() }
    }

    fn append(log: &mut PartitionLog, records: usize, timestamp: i64) -> AppendInfo {
        let mut bytes = build_batch(&BatchSpec::new(records, 50, timestamp));
        log.append(&mut bytes, 0).expect("append")
    }

    #[test]
    fn segment_file_names_parse_and_others_do_not() {
        assert_eq!(parse_segment_file_name("00000000000000000042.log"), Some((42, "log")));
        assert_eq!(parse_segment_file_name("00000000000000000042.timeindex"), Some((42, "timeindex")));
        assert_eq!(parse_segment_file_name("0000000000000000042.log"), None, "19 digits");
        assert_eq!(parse_segment_file_name("99999999999999999999.log"), None, "past i64");
        assert_eq!(parse_segment_file_name("00000000000000000042.log.deleted"), None);
        assert_eq!(parse_segment_file_name("partition.metadata"), None);
    }

    #[test]
    fn appends_roll_and_flush_targets_track_what_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
        assert_eq!((report.segments, report.log_end_offset), (1, 0));
        assert!(log.flush_target().is_empty());

        let first = append(&mut log, 5, 100);
        assert_eq!((first.base_offset, first.last_offset, first.record_count), (0, 4, 5));
        let target = log.flush_target();
        assert_eq!((target.files.len(), target.end_offset), (1, 5));
        append(&mut log, 5, 200);
        target.sync().expect("fsync");
        log.mark_flushed(target.end_offset);
        assert_eq!(log.flushed_offset(), 5);
        assert_eq!(log.flush_target().files.len(), 1, "the second append still needs a flush");

        while log.segment_count() < 3 {
            append(&mut log, 5, 300);
        }
        assert!(log.flushed_offset() >= log.segments[1].base_offset(), "a roll fsyncs the sealed segment");
        assert_eq!(log.size_bytes(), log.segments.iter().map(Segment::log_bytes).sum::<u64>());
    }

    #[test]
    fn an_empty_append_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
        let info = log.append(&mut [], 0).expect("append nothing");
        assert_eq!((info.base_offset, info.last_offset, info.record_count), (0, -1, 0));
        assert_eq!(log.log_end_offset(), 0);
    }

    #[test]
    fn refused_appends_write_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig { max_batch_bytes: 500, ..small_config() };
        let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
        let good = build_batch(&BatchSpec::new(2, 10, 0));
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut records = [good.clone(), bad].concat();
        assert!(matches!(log.append(&mut records, 0), Err(AppendError::Corrupt(BatchError::CrcMismatch { .. }))));
        let mut big = build_batch(&BatchSpec::new(20, 50, 0));
        assert!(matches!(log.append(&mut big, 0), Err(AppendError::TooLarge { max: 500, .. })));
        assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0), "the good batch in front was not written either");
    }

    #[test]
    fn a_tiny_index_limit_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig { max_index_bytes: 10, ..LogConfig::default() };
        let error = PartitionLog::open(dir.path(), config, 0).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("max_index_bytes 10"), "{error}");
    }

    #[test]
    fn segment_ms_rolls_from_the_first_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig { segment_ms: 1_000, ..LogConfig::default() };
        let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
        assert_eq!(log.enforce_retention(10_000).expect("retention"), 0);
        assert_eq!(log.segment_count(), 1, "an empty segment never rolls by time");
        let mut bytes = build_batch(&BatchSpec::new(1, 10, 0));
        log.append(&mut bytes, 5_000).expect("append");
        let mut bytes = build_batch(&BatchSpec::new(1, 10, 0));
        log.append(&mut bytes, 6_000).expect("append");
        assert_eq!(log.segment_count(), 1, "exactly segment_ms old is not older than segment_ms");
        let mut bytes = build_batch(&BatchSpec::new(1, 10, 0));
        log.append(&mut bytes, 6_001).expect("append");
        assert_eq!(log.segment_count(), 2);
        log.enforce_retention(7_002).expect("retention");
        assert_eq!(log.segment_count(), 3, "enforce_retention rolls an old active segment too");
    }
}
