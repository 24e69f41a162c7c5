//! The write path: the state every handle and background thread shares, `append` into a
//! memory buffer, and moving that buffer into segment files (rolling to a new segment at
//! record boundaries).
//!
//! Two mutexes keep appenders away from disk latency:
//!
//! - `pending` guards the in-memory buffer of framed records. `append` holds it for one
//!   memcpy, so callers can append while holding their own locks.
//! - `io` guards the active segment file. Whoever holds it swaps the whole pending buffer
//!   out (one short `pending` lock) and writes it with one write(2) per segment touched, so
//!   concurrent `write_out` callers share syscalls instead of queueing one each.
//!
//! Lock order is `io` → `pending` → `catalog` → `background`; nothing takes `io` while
//! holding a later one.
//!
//! Left out: vectored writes, O_DIRECT, and preallocation. A single growing `Vec` is
//! swapped with a spare so the steady state allocates nothing.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::error::LogError;
use super::frame::{self, HEADER_BYTES};
use super::options::LogOptions;
use super::recovery::Recovered;
use super::segment;
use super::Lsn;

/// When the pending buffer grows past this many bytes, `append` nudges the background
/// writer so memory stays bounded even if nobody commits for a while. 1 MiB is a few
/// hundred typical AOF commands; real systems tune it alongside the socket buffers.
pub(crate) const WRITE_BEHIND_BYTES: usize = 1024 * 1024;

/// The spare write buffer is shrunk back to this capacity after a burst, so one huge batch
/// does not pin its memory forever.
const SPARE_BUFFER_KEEP_BYTES: usize = 4 * WRITE_BEHIND_BYTES;

/// Framed records that `append` accepted but nobody has written to a file yet.
#[derive(Debug)]
pub(crate) struct PendingRecords {
    /// The frames, back to back, exactly as they will appear on disk.
    pub(crate) buf: Vec<u8>,
    /// LSN of the first frame in `buf` (equals `next_lsn` when `buf` is empty).
    pub(crate) first_lsn: Lsn,
    /// LSN the next `append` gets.
    pub(crate) next_lsn: Lsn,
}

/// The segment being appended to, and the write-side bookkeeping that changes with it.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    /// The open file, in append mode. An `Arc` so the syncer can fsync it *without*
    /// holding the `io` mutex: writes continue while an fsync runs, which is what lets the
    /// next group of commits accumulate.
    pub(crate) file: Arc<File>,
    /// LSN of the segment's first record (its name).
    pub(crate) base_lsn: Lsn,
    /// Bytes in the file, which is where the next write lands.
    pub(crate) bytes: u64,
    /// One past the last record written to the OS. The authoritative copy; the atomic in
    /// `LogCore` is for lock-free readers.
    pub(crate) written_lsn: Lsn,
    /// The buffer swapped with `PendingRecords::buf`, kept to reuse its allocation.
    pub(crate) spare: Vec<u8>,
}

/// A segment on disk, as readers and deletion see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CatalogEntry {
    /// LSN of its first record.
    pub(crate) base_lsn: Lsn,
    /// Its size, kept up to date for closed segments only (the active one grows under
    /// `io`); used to keep `size_bytes` right when segments are deleted.
    pub(crate) closed_bytes: u64,
}

/// Requests to the background threads, and the flag that stops them. Guarded by one mutex
/// with three condvars, so a waiter can never miss the notification it waits for.
#[derive(Debug, Default)]
pub(crate) struct BackgroundRequests {
    /// The syncer should make `durable_lsn` at least this.
    pub(crate) sync_requested: Lsn,
    /// The writer should make `written_lsn` at least this.
    pub(crate) write_requested: Lsn,
    /// `append` saw the pending buffer pass `WRITE_BEHIND_BYTES`.
    pub(crate) write_behind: bool,
    /// The log is being dropped.
    pub(crate) shutdown: bool,
}

/// The watermarks async waiters watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Progress {
    /// One past the last record written to the OS.
    pub(crate) written: Lsn,
    /// One past the last record covered by an fsync.
    pub(crate) durable: Lsn,
    /// The log has stopped after an I/O error.
    pub(crate) failed: bool,
}

/// Plain counters for `stats()`. Relaxed atomics: they are for humans and tests, and no
/// decision is made from them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records appended: the denominator for every "per record" figure.
    pub(crate) appends: AtomicU64,
    /// Payload bytes appended, to compare with bytes on disk (header overhead).
    pub(crate) appended_bytes: AtomicU64,
    /// write(2) calls: fewer than appends means writes are being batched.
    pub(crate) writes: AtomicU64,
    /// Segment fsyncs: fewer than `Synced` commits means group commit is working.
    pub(crate) fsyncs: AtomicU64,
    /// Directory fsyncs, the hidden cost of creating and removing segments.
    pub(crate) dir_fsyncs: AtomicU64,
    /// Segment rolls, each of which costs one fsync and one directory fsync.
    pub(crate) rolls: AtomicU64,
}

/// Whether a write may roll to a new segment, which costs an fsync and a file creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rolling {
    /// Roll as needed (background threads and blocking callers).
    Allowed,
    /// Do nothing if a roll would be needed (an async task that must not block).
    Deferred,
}

/// The outcome of one `write_pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// Everything pending is written; `written_lsn` is now this.
    Written(Lsn),
    /// Nothing was written because a roll would be needed and rolling was deferred.
    RollDeferred,
}

/// Everything a `RecordLog` handle, its readers and its background threads share.
pub(crate) struct LogCore {
    /// The log directory.
    pub(crate) dir: PathBuf,
    /// The options it was opened with.
    pub(crate) options: LogOptions,
    /// Appended, not yet written. Held only for memcpys.
    pub(crate) pending: Mutex<PendingRecords>,
    /// The active segment. Held across write(2) and segment rolls, never across the
    /// syncer's fsync.
    pub(crate) io: Mutex<ActiveSegment>,
    /// The segments on disk, oldest first; the last one is the active segment.
    pub(crate) catalog: Mutex<Vec<CatalogEntry>>,
    /// Mirror of `PendingRecords::next_lsn` for lock-free reads.
    pub(crate) next_lsn: AtomicU64,
    /// Mirror of `ActiveSegment::written_lsn` for lock-free reads (the fast path of
    /// `write_out` and readers' bound).
    pub(crate) written_lsn: AtomicU64,
    /// One past the last record covered by an fsync. Only ever grows (`fetch_max`).
    pub(crate) durable_lsn: AtomicU64,
    /// Bytes in all segment files.
    pub(crate) disk_bytes: AtomicU64,
    /// Counters for `stats()`.
    pub(crate) counters: Counters,
    /// The first I/O error; once set the log accepts no more writes.
    pub(crate) failure: OnceLock<Arc<str>>,
    /// Requests for the background threads.
    pub(crate) background: Mutex<BackgroundRequests>,
    /// Wakes the syncer thread.
    pub(crate) sync_wanted: Condvar,
    /// Wakes the writer thread.
    pub(crate) write_wanted: Condvar,
    /// Wakes blocking `sync` callers when `durable_lsn` grows or the log fails.
    pub(crate) durable_advanced: Condvar,
    /// The same watermarks for async callers: a tokio watch, because async tasks cannot
    /// wait on a condvar without blocking a runtime thread.
    pub(crate) progress: watch::Sender<Progress>,
}

impl LogCore {
    /// Builds the shared state from what recovery left on disk, and fsyncs the active
    /// segment so everything already in it really is durable (a previous process may
    /// have been killed after write(2) but before fsync).
    pub(crate) fn new(dir: PathBuf, options: LogOptions, recovered: &Recovered) -> Result<LogCore, LogError> {
        let Some(last) = recovered.segments.last() else {
            unreachable!("recovery always leaves at least one segment");
        };
        let file = segment::open_for_append(&dir, last.base_lsn)?;
        if options.preallocate && last.bytes < options.segment_bytes {
            segment::preallocate(&dir, last.base_lsn, &file, last.bytes, options.segment_bytes)?;
        }
        file.sync_all().map_err(|source| {
            LogError::io("fsync the active segment on open", &segment::path(&dir, last.base_lsn), source)
        })?;
        let next_lsn = recovered.report.next_lsn;
        let catalog: Vec<CatalogEntry> =
            recovered.segments.iter().map(|s| CatalogEntry { base_lsn: s.base_lsn, closed_bytes: s.bytes }).collect();
        let disk_bytes = recovered.segments.iter().map(|s| s.bytes).sum();
        let (progress, _) = watch::channel(Progress { written: next_lsn, durable: next_lsn, failed: false });
        Ok(LogCore {
            dir,
            options,
            pending: Mutex::new(PendingRecords { buf: Vec::new(), first_lsn: next_lsn, next_lsn }),
            io: Mutex::new(ActiveSegment {
                file: Arc::new(file),
                base_lsn: last.base_lsn,
                bytes: last.bytes,
                written_lsn: next_lsn,
                spare: Vec::new(),
            }),
            catalog: Mutex::new(catalog),
            next_lsn: AtomicU64::new(next_lsn),
            written_lsn: AtomicU64::new(next_lsn),
            durable_lsn: AtomicU64::new(next_lsn),
            disk_bytes: AtomicU64::new(disk_bytes),
            counters: Counters::default(),
            failure: OnceLock::new(),
            background: Mutex::new(BackgroundRequests {
                sync_requested: next_lsn,
                write_requested: next_lsn,
                ..BackgroundRequests::default()
            }),
            sync_wanted: Condvar::new(),
            write_wanted: Condvar::new(),
            durable_advanced: Condvar::new(),
            progress,
        })
    }

    /// Frames `payload` into the pending buffer and returns its LSN. Memory only.
    pub(crate) fn append(&self, payload: &[u8]) -> Result<Lsn, LogError> {
        let max_record_bytes = self.options.max_record_bytes;
        if payload.len() > max_record_bytes as usize {
            return Err(LogError::RecordTooLarge { len: payload.len(), max_record_bytes });
        }
        self.check_not_failed()?;
        // The CRC is computed before taking the lock: it depends only on the payload.
        let header = frame::encode_header(payload);
        let (lsn, crossed_write_behind) = {
            let mut pending = self.pending.lock();
            let lsn = pending.next_lsn;
            let Some(next) = lsn.checked_add(1).filter(|next| *next < Lsn::MAX) else {
                return Err(LogError::LsnExhausted { dir: self.dir.clone() });
            };
            let before = pending.buf.len();
            pending.buf.extend_from_slice(&header);
            pending.buf.extend_from_slice(payload);
            pending.next_lsn = next;
            self.next_lsn.store(next, Ordering::Release);
            (lsn, before < WRITE_BEHIND_BYTES && pending.buf.len() >= WRITE_BEHIND_BYTES)
        };
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        self.counters.appended_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
        if crossed_write_behind {
            let mut background = self.background.lock();
            background.write_behind = true;
            self.write_wanted.notify_one();
        }
        Ok(lsn)
    }

    /// Errors unless `through` is an LSN that `append` has returned.
    pub(crate) fn check_appended(&self, through: Lsn) -> Result<(), LogError> {
        let next_lsn = self.next_lsn.load(Ordering::Acquire);
        if through >= next_lsn {
            return Err(LogError::NotAppended { lsn: through, next_lsn });
        }
        Ok(())
    }

    /// Errors with [`LogError::Failed`] once an I/O error has stopped the log.
    pub(crate) fn check_not_failed(&self) -> Result<(), LogError> {
        match self.failure.get() {
            None => Ok(()),
            Some(cause) => Err(self.failed_error(cause)),
        }
    }

    pub(crate) fn failed_error(&self, cause: &Arc<str>) -> LogError {
        LogError::Failed { dir: self.dir.clone(), cause: Arc::clone(cause) }
    }

    /// Stops the log after an I/O error and wakes everyone waiting, then hands the error
    /// back for the caller that hit it.
    ///
    /// After a failed write the file may end in a partial frame, and after a failed fsync
    /// the kernel may have dropped the dirty pages while marking them clean; either way the
    /// only honest next step is to stop and let recovery sort the file out on reopen.
    pub(crate) fn fail(&self, error: LogError) -> LogError {
        let cause: Arc<str> = Arc::from(error.to_string());
        if self.failure.set(cause).is_ok() {
            tracing::error!(dir = %self.dir.display(), "record log stopped after an I/O error: {error}");
        }
        {
            let _background = self.background.lock();
            self.durable_advanced.notify_all();
            self.sync_wanted.notify_all();
            self.write_wanted.notify_all();
        }
        self.progress.send_if_modified(|progress| !std::mem::replace(&mut progress.failed, true));
        error
    }

    /// Makes sure every record before `target` is written to the OS, writing everything
    /// pending if needed. The fast path (already written) takes no lock at all.
    pub(crate) fn write_through(&self, target: Lsn) -> Result<(), LogError> {
        if self.written_lsn.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let mut io = self.io.lock();
        // Someone else may have written our records while we waited for the lock.
        if io.written_lsn >= target {
            return Ok(());
        }
        let outcome = self.write_pending(&mut io, Rolling::Allowed)?;
        assert!(
            matches!(outcome, WriteOutcome::Written(written) if written >= target),
            "writing everything pending covers every appended LSN"
        );
        Ok(())
    }

    /// Moves the whole pending buffer into segment files, rolling as needed.
    pub(crate) fn write_pending(&self, io: &mut ActiveSegment, rolling: Rolling) -> Result<WriteOutcome, LogError> {
        self.check_not_failed()?;
        assert!(io.spare.is_empty(), "the spare buffer is emptied after every write");
        let (first_lsn, end_lsn) = {
            let mut pending = self.pending.lock();
            if pending.buf.is_empty() {
                return Ok(WriteOutcome::Written(io.written_lsn));
            }
            let would_roll = io.bytes + pending.buf.len() as u64 > self.options.segment_bytes;
            if would_roll && rolling == Rolling::Deferred {
                return Ok(WriteOutcome::RollDeferred);
            }
            std::mem::swap(&mut pending.buf, &mut io.spare);
            let range = (pending.first_lsn, pending.next_lsn);
            pending.first_lsn = pending.next_lsn;
            range
        };
        assert_eq!(first_lsn, io.written_lsn, "pending records start where written ones end");
        let batch = std::mem::take(&mut io.spare);
        let result = self.write_batch(io, &batch, first_lsn, end_lsn);
        io.spare = batch;
        io.spare.clear();
        if io.spare.capacity() > SPARE_BUFFER_KEEP_BYTES {
            io.spare.shrink_to(SPARE_BUFFER_KEEP_BYTES);
        }
        match result {
            Ok(()) => Ok(WriteOutcome::Written(end_lsn)),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Writes `batch` (the frames of LSNs `first_lsn..end_lsn`), starting a new segment
    /// before any frame that would push the active one past `segment_bytes`.
    fn write_batch(&self, io: &mut ActiveSegment, batch: &[u8], first_lsn: Lsn, end_lsn: Lsn) -> Result<(), LogError> {
        let segment_bytes = self.options.segment_bytes;
        let mut chunk_start = 0usize;
        let mut offset = 0usize;
        let mut lsn = first_lsn;
        while offset < batch.len() {
            // We framed these bytes ourselves in `append`, so the header is trusted here;
            // the CRC is checked again when the record is read back.
            let mut header = [0u8; HEADER_BYTES];
            header.copy_from_slice(&batch[offset..offset + HEADER_BYTES]);
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let frame_bytes = HEADER_BYTES + len as usize;
            let segment_used = io.bytes + (offset - chunk_start) as u64;
            if segment_used > 0 && segment_used + frame_bytes as u64 > segment_bytes {
                self.write_chunk(io, &batch[chunk_start..offset], lsn)?;
                self.roll(io, lsn)?;
                chunk_start = offset;
            }
            offset += frame_bytes;
            lsn += 1;
        }
        assert_eq!(offset, batch.len(), "frames tile the pending buffer exactly");
        assert_eq!(lsn, end_lsn, "the pending buffer holds exactly the records it claims");
        self.write_chunk(io, &batch[chunk_start..], end_lsn)
    }

    /// One write(2) (retried by `write_all` if short) of whole frames into the active
    /// segment, then publishes the new written watermark.
    fn write_chunk(&self, io: &mut ActiveSegment, chunk: &[u8], end_lsn: Lsn) -> Result<(), LogError> {
        if !chunk.is_empty() {
            io.file.write_all_at(chunk, io.bytes).map_err(|source| {
                LogError::io("write records to a segment", &segment::path(&self.dir, io.base_lsn), source)
            })?;
            io.bytes += chunk.len() as u64;
            self.disk_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            self.counters.writes.fetch_add(1, Ordering::Relaxed);
        }
        assert!(end_lsn >= io.written_lsn, "the written watermark never moves back");
        io.written_lsn = end_lsn;
        self.written_lsn.store(end_lsn, Ordering::Release);
        self.progress.send_if_modified(|progress| {
            let grew = progress.written < end_lsn;
            progress.written = progress.written.max(end_lsn);
            grew
        });
        Ok(())
    }

    /// Writes everything pending and, if the active segment holds any record, closes
    /// it and starts a new one. Returns the first LSN of the (new) active segment.
    pub(crate) fn roll_now(&self) -> Result<Lsn, LogError> {
        let mut io = self.io.lock();
        self.write_pending(&mut io, Rolling::Allowed)?;
        let next = io.written_lsn;
        if next > io.base_lsn {
            if let Err(error) = self.roll(&mut io, next) {
                return Err(self.fail(error));
            }
        }
        Ok(next)
    }

    /// Closes the active segment and starts one whose first record is `next_base`.
    ///
    /// The old segment is fsynced *before* the new one exists. That is what makes "only
    /// the last segment can have a torn tail" true, and it means every record before
    /// `next_base` is durable once this returns.
    fn roll(&self, io: &mut ActiveSegment, next_base: Lsn) -> Result<(), LogError> {
        assert_eq!(io.written_lsn, next_base, "a segment is closed only after all its records are written");
        assert!(next_base > io.base_lsn, "a closed segment holds at least one record");
        let old_path = segment::path(&self.dir, io.base_lsn);
        if self.options.preallocate {
            // Trim the unused zeros, so that a closed segment ends at its last record.
            io.file
                .set_len(io.bytes)
                .map_err(|source| LogError::io("trim a preallocated segment", &old_path, source))?;
        }
        let started = Instant::now();
        io.file.sync_data().map_err(|source| LogError::io("fsync a segment before closing it", &old_path, source))?;
        self.note_fsync(started);
        let file = segment::create(&self.dir, next_base)?;
        if self.options.preallocate {
            segment::preallocate(&self.dir, next_base, &file, 0, self.options.segment_bytes)?;
        }
        self.counters.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
        {
            let mut catalog = self.catalog.lock();
            let Some(closing) = catalog.last_mut() else {
                unreachable!("the catalog always holds the active segment");
            };
            assert_eq!(closing.base_lsn, io.base_lsn, "the catalog's last entry is the active segment");
            closing.closed_bytes = io.bytes;
            catalog.push(CatalogEntry { base_lsn: next_base, closed_bytes: 0 });
        }
        io.file = Arc::new(file);
        io.base_lsn = next_base;
        io.bytes = 0;
        self.counters.rolls.fetch_add(1, Ordering::Relaxed);
        self.publish_durable(next_base);
        Ok(())
    }

    /// Counts an fsync of segment data and tells the observer how long it took.
    pub(crate) fn note_fsync(&self, started: Instant) {
        let elapsed = started.elapsed();
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.options.on_fsync {
            observer(elapsed);
        }
    }

    /// Raises the durable watermark to `lsn` (never lowers it) and wakes both kinds of
    /// waiters. The atomic is updated under the `background` mutex so a blocking waiter,
    /// which checks it under the same mutex, cannot miss the wake-up.
    pub(crate) fn publish_durable(&self, lsn: Lsn) {
        assert!(
            lsn <= self.written_lsn.load(Ordering::Acquire),
            "durability is never claimed for records not yet written"
        );
        {
            let _background = self.background.lock();
            self.durable_lsn.fetch_max(lsn, Ordering::AcqRel);
            self.durable_advanced.notify_all();
        }
        self.progress.send_if_modified(|progress| {
            let grew = progress.durable < lsn;
            progress.durable = progress.durable.max(lsn);
            grew
        });
    }

    /// Removes closed segments whose records all lie before `lsn`, oldest first, and
    /// returns how many. The active segment is never removed.
    pub(crate) fn delete_segments_before(&self, lsn: Lsn) -> Result<usize, LogError> {
        let doomed: Vec<CatalogEntry> = {
            let mut catalog = self.catalog.lock();
            // Segment k may go when segment k+1 starts at or before `lsn`: then all of k's
            // records are below `lsn`. The last entry has no successor, so it always stays.
            let removable = catalog.windows(2).take_while(|pair| pair[1].base_lsn <= lsn).count();
            catalog.drain(..removable).collect()
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        // Oldest first: a crash part way leaves a contiguous suffix, which opens cleanly.
        for entry in &doomed {
            segment::remove(&self.dir, entry.base_lsn)?;
            self.disk_bytes.fetch_sub(entry.closed_bytes, Ordering::Relaxed);
        }
        segment::sync_dir(&self.dir)?;
        self.counters.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(doomed.len())
    }

    /// The LSN of the oldest record still on disk.
    pub(crate) fn first_lsn(&self) -> Lsn {
        let catalog = self.catalog.lock();
        catalog.first().map_or(0, |entry| entry.base_lsn)
    }
}
