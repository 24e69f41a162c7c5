//! The knobs of a record log, the durability levels, and the recovery modes.
//!
//! Every limit is a named field with a default that suits a development box; real
//! deployments tune `segment_bytes` and `max_record_bytes` to their record sizes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::LogError;

/// When the log fsyncs on its own, and therefore what [`commit`](super::RecordLog::commit)
/// promises. These are Redis's three `appendfsync` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `commit` waits for an fsync covering the record (Redis `appendfsync always`).
    /// Concurrent committers share one fsync (group commit).
    Always,
    /// `commit` waits only for the write(2); a background thread writes and fsyncs every
    /// `n` milliseconds when something is new (Redis `appendfsync everysec` is
    /// `EveryMillis(1000)`). A power loss can lose about the last `n` ms of commits.
    EveryMillis(u64),
    /// `commit` waits only for the write(2); the log never fsyncs on its own and the OS
    /// flushes when it likes (Redis `appendfsync no`). [`sync`](super::RecordLog::sync)
    /// still works when a caller needs it.
    Never,
}

/// How far a record has travelled toward the disk. Ordered: `Buffered < Written < Synced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Durability {
    /// In this process's memory only. Lost if the process dies.
    Buffered,
    /// Handed to the OS with write(2). Survives the process being killed (`kill -9`),
    /// lost on power loss or kernel crash.
    Written,
    /// Covered by an fsync. Survives power loss, as far as the disk keeps its promises.
    Synced,
}

/// What `open` does with corruption that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open and name the file and offset. Torn tails are still cut, because a
    /// crash leaves them and they never held synced data.
    #[default]
    Strict,
    /// Keep the valid prefix: cut at the first bad frame (or segment gap), remove every
    /// later segment, and describe the loss in
    /// [`RecoveryReport::truncated`](super::RecoveryReport::truncated). Data that was
    /// acknowledged as durable may be lost; use it when a partial log beats no log.
    TruncateAtCorruption,
}

/// Called with the duration of every segment fsync, from whichever thread ran it (usually
/// the background syncer), so servers can export fsync latency as a metric. Keep it cheap.
pub type FsyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// How to open a record log. Build with struct-update syntax:
/// `LogOptions { fsync: FsyncPolicy::Always, ..LogOptions::default() }`.
#[derive(Clone)]
pub struct LogOptions {
    /// A segment is closed and a new one started before a record would take it past this
    /// many bytes (a single record larger than this gets a segment of its own). Smaller
    /// segments let `delete_segments_before` reclaim space sooner; larger ones mean fewer
    /// files. Recovery reads one segment into memory at a time, so this also bounds that.
    pub segment_bytes: u64,
    /// When the log fsyncs; see [`FsyncPolicy`].
    pub fsync: FsyncPolicy,
    /// The largest payload `append` accepts. A named limit so that a corrupt length field
    /// cannot make recovery or a reader allocate gigabytes; a log must be read with a limit
    /// at least as large as the one it was written with.
    pub max_record_bytes: u32,
    /// What `open` does with corruption; see [`RecoveryMode`].
    pub recovery: RecoveryMode,
    /// Observer for fsync latency; see [`FsyncObserver`].
    pub on_fsync: Option<FsyncObserver>,
    /// Create every segment at its full `segment_bytes`, filled with zeros, and write
    /// records over the zeros. An fsync then only flushes data blocks: the file's size
    /// never changes, so the inode (and on a journaling filesystem, a journal commit)
    /// is not written with every fsync, which roughly halves the I/O an fsync costs on
    /// small appends. The price: each roll writes `segment_bytes` of zeros up front, a
    /// closed segment is trimmed to its records, and recovery treats an all-zero tail of
    /// the active segment as unused space rather than a torn tail. Off by default.
    pub preallocate: bool,
    /// BROKEN ON PURPOSE, for tests only: `sync` and an `Always` commit write the records
    /// and then report `Synced` *without fsyncing*, the classic forgotten-fsync bug that
    /// survives every `kill -9` test. It exists so a test can show that the power-loss
    /// crash property catches it. Never set it.
    #[doc(hidden)]
    pub debug_ack_before_sync: bool,
}

impl LogOptions {
    /// Default segment size: 64 MiB, so recovery holds at most that much in memory at once.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
    /// Default record limit: 16 MiB, well above a typical AOF command and small enough that
    /// a corrupt length cannot cause a huge allocation.
    pub const DEFAULT_MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;

    /// Rejects values the log cannot work with, before any file is touched.
    pub(crate) fn validate(&self) -> Result<(), LogError> {
        if self.segment_bytes == 0 {
            return Err(LogError::InvalidOptions {
                reason: "segment_bytes is 0; use at least a few KiB (the default is 64 MiB)",
            });
        }
        if self.fsync == FsyncPolicy::EveryMillis(0) {
            return Err(LogError::InvalidOptions {
                reason: "FsyncPolicy::EveryMillis(0) would fsync in a busy loop; use FsyncPolicy::Always to sync every commit",
            });
        }
        Ok(())
    }
}

impl Default for LogOptions {
    /// 64 MiB segments, fsync every second, 16 MiB records, strict recovery.
    fn default() -> Self {
        LogOptions {
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            fsync: FsyncPolicy::EveryMillis(1000),
            max_record_bytes: Self::DEFAULT_MAX_RECORD_BYTES,
            recovery: RecoveryMode::Strict,
            on_fsync: None,
            preallocate: false,
            debug_ack_before_sync: false,
        }
    }
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("LogOptions");
        debug
            .field("segment_bytes", &self.segment_bytes)
            .field("fsync", &self.fsync)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("recovery", &self.recovery)
            .field("on_fsync", &self.on_fsync.as_ref().map(|_| "Fn(Duration)"))
            .field("preallocate", &self.preallocate);
        if self.debug_ack_before_sync {
            debug.field("debug_ack_before_sync", &true);
        }
        debug.finish()
    }
}
