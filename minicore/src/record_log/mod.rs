//! A segmented, append-only record log with CRC-checked frames, group commit and crash
//! recovery: the write-ahead log under minikv's AOF, and later the job queue, the log
//! broker and Raft.
//!
//! # Example
//!
//! ```
//! use minicore::record_log::{Durability, FsyncPolicy, LogOptions, RecordLog};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let options = LogOptions { fsync: FsyncPolicy::Always, ..LogOptions::default() };
//! let (log, report) = RecordLog::open(dir.path(), options)?;
//! assert_eq!(report.records, 0);
//!
//! let first = log.append(b"SET greeting hello")?; // Buffered: in memory only
//! let second = log.append(b"INCR visits")?;
//! assert_eq!((first, second), (0, 1));
//!
//! // Under FsyncPolicy::Always, commit returns once an fsync covers both records.
//! assert_eq!(log.commit(second)?, Durability::Synced);
//!
//! let records: Vec<(u64, Vec<u8>)> = log.reader(0)?.collect::<Result<_, _>>()?;
//! assert_eq!(records, vec![(0, b"SET greeting hello".to_vec()), (1, b"INCR visits".to_vec())]);
//! drop(log);
//!
//! // Reopening recovers the same records and says the log was clean.
//! let (log, report) = RecordLog::open(dir.path(), LogOptions::default())?;
//! assert_eq!((report.records, report.truncated), (2, None));
//! assert_eq!(log.next_lsn(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # On-disk format
//!
//! A log is a directory of segment files. Each is named by the LSN (log sequence number:
//! the index of a record, starting at 0) of its first record, zero-padded to 20 digits:
//!
//! ```text
//! wal/
//!   00000000000000000000.log   records 0..42
//!   00000000000000000042.log   records 42..97
//!   00000000000000000097.log   records 97..     <- the active segment, the only one written
//! ```
//!
//! A segment is nothing but frames, back to back, with no file header:
//!
//! ```text
//! +----------------+----------------+---------------------------+
//! | len: u32 LE    | crc: u32 LE    | payload: len bytes        |
//! +----------------+----------------+---------------------------+
//!   crc = CRC32 (crc32fast) over the 4 len bytes followed by the payload
//! ```
//!
//! A new segment starts before a record that would take the active one past
//! [`LogOptions::segment_bytes`] (so rolls happen at record boundaries; a record larger
//! than that gets a segment to itself). Before the new file is created the old one is
//! fsynced, and the directory is fsynced after every file creation or removal.
//!
//! # Durability
//!
//! A record moves through three [`Durability`] levels, and every call says which one it
//! reaches:
//!
//! | level      | survives               | reached by                                             |
//! |------------|------------------------|--------------------------------------------------------|
//! | `Buffered` | nothing                | [`RecordLog::append`] (memcpy under a short mutex)     |
//! | `Written`  | the process dying      | [`RecordLog::write_out`]; `commit` under `EveryMillis`/`Never` |
//! | `Synced`   | power loss             | [`RecordLog::sync`]; `commit` under `Always`           |
//!
//! [`RecordLog::commit`] is "as durable as the [`FsyncPolicy`] promises" and returns the
//! level it reached. Concurrent `Always` committers share fsyncs (group commit, see the
//! `syncer` module): one background thread writes everything pending, fsyncs, and
//! publishes the durable LSN, while the next batch accumulates. Under `EveryMillis(n)` the
//! same thread syncs every `n` ms when something is new. Dropping the log writes and
//! fsyncs everything appended. "fsync" here is `fdatasync(2)` (`File::sync_data`), which
//! also persists the file length an append changes.
//!
//! `write_out`, `sync` and `commit` take `through`: the LSN that `append` returned, and
//! cover every record up to *and including* it. The watermarks (`written_lsn`,
//! `durable_lsn`) are one past the last record, so record `n` is durable once
//! `durable_lsn() > n`.
//!
//! # Recovery and the crash model
//!
//! A crash (process kill or power loss) can only damage the end of what was being written:
//! the last segment can end in a partial frame, zeros, or garbage. That is a **torn
//! tail**, and [`RecordLog::open`] cuts it, reporting the bytes and records dropped in the
//! [`RecoveryReport`]. Nothing in a torn tail was ever synced, so nothing acknowledged as
//! `Synced` is lost.
//!
//! A bad frame *followed by a valid frame* is different: a hole in data that had been
//! written completely, which our crash model cannot produce (a disk error, a stray write,
//! an operator's mistake can). So is a bad frame in any segment but the last (it was
//! fsynced before its successor existed), a complete frame with a matching CRC that is
//! only over `max_record_bytes` (the log was written with a larger limit), and a gap in
//! segment base LSNs. These are **corruption**, never silently skipped:
//! [`RecoveryMode::Strict`] (the default) refuses to open with an error naming the file
//! and byte offset, and [`RecoveryMode::TruncateAtCorruption`] keeps the valid prefix,
//! removes everything after it and says so loudly in the report.
//!
//! Filesystems that can leave a zeroed page *before* a written one after a power loss
//! (ext4 `data=writeback`) would surface as corruption here, which is the safe reading.
//!
//! # What it leaves out
//!
//! - No index: a reader starting mid-segment walks headers from the segment's start.
//! - No compression, checksummed batches, or record types; payloads are opaque bytes.
//! - No inter-process lock: two processes (or two `open`s) on one directory corrupt it.
//! - No preallocation or O_DIRECT; the page cache does the buffering.
//! - Frames carry no per-segment salt, so a payload that itself embeds a valid frame of
//!   this format can make a torn tail look like corruption (a strict open then refuses,
//!   and `TruncateAtCorruption` recovers).

mod error;
mod frame;
mod options;
mod reader;
mod recovery;
mod segment;
mod syncer;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

pub use error::LogError;
pub use frame::{encode_frame, FrameProblem};
pub use options::{Durability, FsyncObserver, FsyncPolicy, LogOptions, RecoveryMode};
pub use reader::LogReader;
pub use recovery::{RecoveryReport, Truncation, TruncationReason};

use writer::LogCore;

/// A log sequence number: the index of a record in the log, starting at 0.
///
/// Watermarks such as [`RecordLog::durable_lsn`] are "one past the last record" at that
/// level, so an empty log has all of them at 0.
pub type Lsn = u64;

/// A segmented append-only record log. `Send + Sync`: share it with `Arc` and call every
/// method through `&self` from as many threads (or tasks) as you like.
pub struct RecordLog {
    /// State shared with readers and the background threads.
    core: Arc<LogCore>,
    /// The syncer and writer threads, joined on drop.
    threads: Vec<JoinHandle<()>>,
}

/// Counters and watermarks, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended since open.
    pub appends: u64,
    /// Payload bytes appended since open (frame headers not included).
    pub appended_bytes: u64,
    /// write(2) calls into segment files since open.
    pub writes: u64,
    /// fsyncs of segment data since open, from the syncer and from segment rolls. Fewer
    /// than the number of `Synced` commits means group commit is working.
    pub fsyncs: u64,
    /// fsyncs of the log directory since open (segment creation and removal).
    pub dir_fsyncs: u64,
    /// Segment rolls since open.
    pub rolls: u64,
    /// Segment files on disk now.
    pub segments: usize,
    /// Bytes in segment files now.
    pub size_bytes: u64,
    /// Bytes appended but not yet written to the OS.
    pub buffered_bytes: u64,
    /// Oldest LSN still on disk.
    pub first_lsn: Lsn,
    /// LSN the next append gets.
    pub next_lsn: Lsn,
    /// One past the last record written to the OS.
    pub written_lsn: Lsn,
    /// One past the last record covered by an fsync.
    pub durable_lsn: Lsn,
}

impl RecordLog {
    /// Opens the log in `dir` (creating the directory and an empty first segment if
    /// needed), recovers it, and starts the background syncer and writer threads.
    ///
    /// Recovery cuts a torn tail in every mode and reports it; corruption in the middle is
    /// an error under [`RecoveryMode::Strict`] and a reported truncation under
    /// [`RecoveryMode::TruncateAtCorruption`]. Everything on disk after `open` is synced,
    /// so `durable_lsn() == next_lsn()` to start with.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<(RecordLog, RecoveryReport), LogError> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let recovered = recovery::recover(&dir, &options)?;
        let core = Arc::new(LogCore::new(dir, options, &recovered)?);
        let mut log = RecordLog { core, threads: Vec::with_capacity(2) };
        // If spawning the second thread fails, dropping `log` stops the first.
        log.spawn("record-log-sync", syncer::run_syncer)?;
        log.spawn("record-log-write", syncer::run_writer)?;
        Ok((log, recovered.report))
    }

    fn spawn(&mut self, name: &str, body: fn(Arc<LogCore>)) -> Result<(), LogError> {
        let core = Arc::clone(&self.core);
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || body(core))
            .map_err(|source| LogError::io("start a record log background thread", &self.core.dir, source))?;
        self.threads.push(handle);
        Ok(())
    }

    /// Appends a record and returns its LSN. **Durability: `Buffered`** (process memory
    /// only) until `write_out`, `sync` or `commit` covers it.
    ///
    /// Never blocks on disk I/O: it frames the payload and copies it into a shared buffer
    /// under a short mutex, so it is safe to call while holding other locks. Fails with
    /// [`LogError::RecordTooLarge`] over `max_record_bytes`, and with
    /// [`LogError::Failed`] once an I/O error has stopped the log.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, LogError> {
        self.core.append(payload)
    }

    /// Closes the active segment now (after writing everything pending to it) and
    /// starts a new one, unless the active segment is still empty. Returns the LSN the
    /// new active segment starts at: every earlier record is then in a closed, fsynced
    /// segment.
    ///
    /// For compaction: minikv's AOF rewrite rolls just before it notes where its
    /// snapshot ends, so that afterwards [`delete_segments_before`](Self::delete_segments_before)
    /// can remove every record the snapshot replaced, not only whole 64 MiB segments.
    /// Blocks for one write(2) and one fsync; appenders are not blocked.
    pub fn roll_segment(&self) -> Result<Lsn, LogError> {
        self.core.roll_now()
    }

    /// Ensures every record through `through` is **`Written`** (handed to the OS: survives
    /// a process kill, not a power loss). Blocks for the write(2), not for an fsync, except
    /// that a segment roll on the way fsyncs the closed segment.
    ///
    /// One call writes everything pending, so concurrent callers share syscalls, and it
    /// returns without any syscall when `through` is already written.
    pub fn write_out(&self, through: Lsn) -> Result<(), LogError> {
        self.core.check_appended(through)?;
        self.core.write_through(through + 1)
    }

    /// Ensures every record through `through` is **`Synced`** (covered by an fsync:
    /// survives power loss), blocking until it is. Works under every [`FsyncPolicy`].
    ///
    /// Group commit: the request goes to the syncer thread, which covers every caller
    /// waiting at that moment with one fsync.
    pub fn sync(&self, through: Lsn) -> Result<(), LogError> {
        self.core.sync_through(through)
    }

    /// Writes and fsyncs everything appended so far **on the calling thread**, and returns
    /// the durable watermark (one past the last LSN an fsync now covers).
    ///
    /// [`sync`](Self::sync) hands the work to the syncer thread and waits to be woken; each
    /// hand-off is a thread wake-up in each direction. An event loop that gathers a batch
    /// of commits and then makes them durable in one go (Redis's `appendfsync always`
    /// fsyncs before its loop sleeps) is better served doing the fsync itself: it blocks
    /// its thread for one fsync, with nothing else to do meanwhile. Safe to call while the
    /// syncer also runs: the durable watermark only ever grows.
    pub fn sync_here(&self) -> Result<Lsn, LogError> {
        if self.core.options.debug_ack_before_sync {
            let target = self.core.next_lsn.load(Ordering::Acquire);
            self.core.claim_durable_without_fsync(target)?;
            return Ok(target);
        }
        self.core.sync_now()?;
        Ok(self.core.durable_lsn.load(Ordering::Acquire))
    }

    /// Asks the syncer thread to fsync every record through `through`, and returns at once:
    /// the caller watches [`durable_lsn`](Self::durable_lsn) itself. For an event loop that
    /// keeps serving while the fsync runs and polls for its end rather than sleeping
    /// until woken (a wake-up from another thread is what this avoids). Together with
    /// [`check_failed`](Self::check_failed), so a failed fsync does not leave the
    /// caller polling forever.
    pub fn request_sync(&self, through: Lsn) -> Result<(), LogError> {
        self.core.check_appended(through)?;
        self.core.check_not_failed()?;
        let target = through + 1;
        if self.core.options.debug_ack_before_sync {
            return self.core.claim_durable_without_fsync(target);
        }
        self.core.request_sync(target);
        Ok(())
    }

    /// Errors with [`LogError::Failed`] once an I/O error has stopped the log (then
    /// nothing more becomes durable).
    pub fn check_failed(&self) -> Result<(), LogError> {
        self.core.check_not_failed()
    }

    /// Makes every record through `through` as durable as the [`FsyncPolicy`] promises and
    /// returns the level reached: **`Synced`** under `Always` (waits for the group fsync),
    /// at least **`Written`** under `EveryMillis` and `Never` (`Synced` if an fsync
    /// already covered it). Acknowledge a client only after this returns.
    pub fn commit(&self, through: Lsn) -> Result<Durability, LogError> {
        match self.core.options.fsync {
            FsyncPolicy::Always => {
                self.sync(through)?;
                Ok(Durability::Synced)
            }
            FsyncPolicy::EveryMillis(_) | FsyncPolicy::Never => {
                self.write_out(through)?;
                Ok(self.durability_of(through))
            }
        }
    }

    /// [`commit`](Self::commit) for async callers, with the same durability promise. It
    /// never parks a runtime thread on disk I/O: under `Always` it waits on a
    /// `tokio::sync::watch` fed by the syncer thread; otherwise it does the write(2) inline
    /// only when the file mutex is free and no segment roll is due, and hands it to the
    /// background writer thread otherwise. Works on current-thread and multi-thread
    /// runtimes.
    pub async fn commit_async(&self, through: Lsn) -> Result<Durability, LogError> {
        self.core.check_appended(through)?;
        let target = through + 1;
        match self.core.options.fsync {
            FsyncPolicy::Always => {
                if self.core.durable_lsn.load(Ordering::Acquire) < target {
                    if self.core.options.debug_ack_before_sync {
                        // The deliberately broken variant; see `LogOptions`.
                        self.core.sync_through(through)?;
                    } else {
                        self.core.request_sync(target);
                        self.core.wait_for_progress(|progress| progress.durable >= target).await?;
                    }
                }
                Ok(Durability::Synced)
            }
            FsyncPolicy::EveryMillis(_) | FsyncPolicy::Never => {
                if self.core.written_lsn.load(Ordering::Acquire) < target && !self.core.try_write_inline(target)? {
                    self.core.request_write(target);
                    self.core.wait_for_progress(|progress| progress.written >= target).await?;
                }
                Ok(self.durability_of(through))
            }
        }
    }

    /// How far record `lsn` has got right now. An LSN not yet appended reports `Buffered`,
    /// which is as far as it will get until it is appended.
    pub fn durability_of(&self, lsn: Lsn) -> Durability {
        if lsn < self.core.durable_lsn.load(Ordering::Acquire) {
            Durability::Synced
        } else if lsn < self.core.written_lsn.load(Ordering::Acquire) {
            Durability::Written
        } else {
            Durability::Buffered
        }
    }

    /// The LSN the next `append` returns (one past the last buffered record).
    pub fn next_lsn(&self) -> Lsn {
        self.core.next_lsn.load(Ordering::Acquire)
    }

    /// One past the last record written to the OS.
    pub fn written_lsn(&self) -> Lsn {
        self.core.written_lsn.load(Ordering::Acquire)
    }

    /// One past the last record covered by an fsync: everything below survives power loss.
    pub fn durable_lsn(&self) -> Lsn {
        self.core.durable_lsn.load(Ordering::Acquire)
    }

    /// The oldest LSN still on disk (0 until `delete_segments_before` removes something).
    pub fn first_lsn(&self) -> Lsn {
        self.core.first_lsn()
    }

    /// An iterator over `(lsn, payload)` starting at `from`, over records **written to the
    /// OS** (call `write_out` first to include buffered ones). Each record's CRC is checked
    /// again as it is read. `from` may be anything from [`first_lsn`](Self::first_lsn) to
    /// [`next_lsn`](Self::next_lsn).
    pub fn reader(&self, from: Lsn) -> Result<LogReader, LogError> {
        LogReader::new(Arc::clone(&self.core), from)
    }

    /// Deletes whole segments whose records all lie before `lsn` and returns how many. The
    /// active segment is never deleted, so every record at or after `lsn` stays readable.
    /// Removal goes oldest first and the directory is fsynced afterwards.
    pub fn delete_segments_before(&self, lsn: Lsn) -> Result<usize, LogError> {
        self.core.delete_segments_before(lsn)
    }

    /// Bytes in segment files on disk (written data; buffered records are not counted).
    pub fn size_bytes(&self) -> u64 {
        self.core.disk_bytes.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters and watermarks.
    pub fn stats(&self) -> LogStats {
        let counters = &self.core.counters;
        let (segments, first_lsn) = {
            let catalog = self.core.catalog.lock();
            (catalog.len(), catalog.first().map_or(0, |entry| entry.base_lsn))
        };
        let buffered_bytes = self.core.pending.lock().buf.len() as u64;
        LogStats {
            appends: counters.appends.load(Ordering::Relaxed),
            appended_bytes: counters.appended_bytes.load(Ordering::Relaxed),
            writes: counters.writes.load(Ordering::Relaxed),
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            dir_fsyncs: counters.dir_fsyncs.load(Ordering::Relaxed),
            rolls: counters.rolls.load(Ordering::Relaxed),
            segments,
            size_bytes: self.size_bytes(),
            buffered_bytes,
            first_lsn,
            next_lsn: self.next_lsn(),
            written_lsn: self.written_lsn(),
            durable_lsn: self.durable_lsn(),
        }
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.core.options
    }

    /// Writes and fsyncs everything appended, stops the background threads, and reports
    /// whether that final sync worked (dropping the log does the same but can only log a
    /// failure).
    pub fn close(self) -> Result<(), LogError> {
        let result = self.core.sync_now();
        drop(self);
        result
    }
}

impl Drop for RecordLog {
    /// Stops the background threads; the syncer writes and fsyncs everything appended on
    /// its way out.
    fn drop(&mut self) {
        {
            let mut background = self.core.background.lock();
            background.shutdown = true;
            self.core.sync_wanted.notify_all();
            self.core.write_wanted.notify_all();
        }
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                tracing::error!(dir = %self.core.dir.display(), "a record log background thread panicked");
            }
        }
    }
}

impl fmt::Debug for RecordLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordLog")
            .field("dir", &self.core.dir)
            .field("options", &self.core.options)
            .field("next_lsn", &self.next_lsn())
            .field("written_lsn", &self.written_lsn())
            .field("durable_lsn", &self.durable_lsn())
            .finish()
    }
}
