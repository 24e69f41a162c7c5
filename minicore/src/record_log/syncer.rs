//! Group commit: the background syncer and writer threads, and how callers wait for them.
//!
//! The **syncer** thread loops: take everything pending, write it, fsync, publish the
//! durable LSN. Callers of `sync` (and `commit` under `FsyncPolicy::Always`) only raise a
//! request and wait. While one fsync runs, the `io` mutex is free, so new appends and
//! commits pile up and the next loop covers all of them with one fsync. That is group
//! commit: N concurrent committers cost about as many fsyncs as the disk can do in the time
//! they took, not N. Under `FsyncPolicy::EveryMillis(n)` the same thread also wakes every
//! `n` ms and syncs if anything was written since the last fsync.
//!
//! The **writer** thread only does write(2). It serves async callers that need `Written`
//! when the write cannot be done inline without risking a block (the `io` mutex is busy,
//! or a segment roll with its fsync is due), and `append`'s write-behind nudge. It is a
//! separate thread so a write never queues behind the syncer's fsync.
//!
//! Blocking callers wait on a condvar; async callers wait on a `tokio::sync::watch` of the
//! same watermarks, so no runtime thread is ever parked on disk I/O.
//!
//! Left out: fsync batching across several logs, and adaptive delays that wait a little for
//! more committers before fsyncing (PostgreSQL's `commit_delay`): the natural batching
//! while an fsync is in flight is enough here. An event loop that gathers its own batches
//! can skip this thread altogether with [`RecordLog::sync_here`](super::RecordLog::sync_here),
//! which fsyncs on the caller's thread (miniqueue's `-f 0` does).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::LogError;
use super::options::FsyncPolicy;
use super::segment;
use super::writer::{LogCore, Progress, Rolling, WriteOutcome};
use super::Lsn;

impl LogCore {
    /// Writes everything pending and fsyncs the active segment, then publishes the new
    /// durable LSN. The fsync runs *outside* the `io` mutex.
    pub(crate) fn sync_now(&self) -> Result<(), LogError> {
        let (target, file, base_lsn) = {
            let mut io = self.io.lock();
            let WriteOutcome::Written(written) = self.write_pending(&mut io, Rolling::Allowed)? else {
                unreachable!("rolling is allowed, so everything pending is written");
            };
            (written, Arc::clone(&io.file), io.base_lsn)
        };
        // Every record before `target` is either in `file` or in an older segment, and
        // older segments were fsynced when they were closed. A roll after we let go of
        // `io` fsyncs `file` again, which is harmless.
        if target <= self.durable_lsn.load(Ordering::Acquire) {
            return Ok(());
        }
        let started = Instant::now();
        if let Err(source) = file.sync_data() {
            let path = segment::path(&self.dir, base_lsn);
            return Err(self.fail(LogError::io("fsync a segment", &path, source)));
        }
        self.note_fsync(started);
        self.publish_durable(target);
        Ok(())
    }

    /// Blocks until every record through `through` is covered by an fsync.
    pub(crate) fn sync_through(&self, through: Lsn) -> Result<(), LogError> {
        self.check_appended(through)?;
        let target = through + 1;
        if self.durable_lsn.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        if self.options.debug_ack_before_sync {
            return self.claim_durable_without_fsync(target);
        }
        let mut background = self.background.lock();
        if background.sync_requested < target {
            background.sync_requested = target;
            self.sync_wanted.notify_one();
        }
        loop {
            if self.durable_lsn.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            if let Some(cause) = self.failure.get() {
                return Err(self.failed_error(cause));
            }
            self.durable_advanced.wait(&mut background);
        }
    }

    /// The deliberately broken variant (`LogOptions::debug_ack_before_sync`): writes
    /// through `target`, then claims durability with no fsync.
    pub(crate) fn claim_durable_without_fsync(&self, target: Lsn) -> Result<(), LogError> {
        self.write_through(target)?;
        self.publish_durable(target);
        Ok(())
    }

    /// Asks the syncer to make `target` durable, without waiting.
    pub(crate) fn request_sync(&self, target: Lsn) {
        let mut background = self.background.lock();
        if background.sync_requested < target {
            background.sync_requested = target;
            self.sync_wanted.notify_one();
        }
    }

    /// Asks the writer thread to make `target` written, without waiting.
    pub(crate) fn request_write(&self, target: Lsn) {
        let mut background = self.background.lock();
        if background.write_requested < target {
            background.write_requested = target;
            self.write_wanted.notify_one();
        }
    }

    /// Writes inline if that cannot block for long: only when nobody holds the `io` mutex
    /// and no segment roll (with its fsync) is due. Then the cost is one write(2) into the
    /// page cache, which is what Redis does on its event loop. Returns whether `target` is
    /// now written; `false` means "ask the writer thread".
    pub(crate) fn try_write_inline(&self, target: Lsn) -> Result<bool, LogError> {
        let Some(mut io) = self.io.try_lock() else {
            return Ok(false);
        };
        if io.written_lsn >= target {
            return Ok(true);
        }
        match self.write_pending(&mut io, Rolling::Deferred)? {
            WriteOutcome::Written(written) => Ok(written >= target),
            WriteOutcome::RollDeferred => Ok(false),
        }
    }

    /// Waits, without blocking the runtime thread, until `done` holds for the watermarks
    /// or the log fails.
    pub(crate) async fn wait_for_progress(&self, done: impl Fn(&Progress) -> bool) -> Result<(), LogError> {
        let mut receiver = self.progress.subscribe();
        let reached = match receiver.wait_for(|progress| done(progress) || progress.failed).await {
            Ok(progress) => done(&progress),
            // The sender lives in `self`, so it cannot be gone while we borrow `self`.
            Err(_) => false,
        };
        if reached {
            return Ok(());
        }
        match self.failure.get() {
            Some(cause) => Err(self.failed_error(cause)),
            None => Err(LogError::Failed {
                dir: self.dir.clone(),
                cause: Arc::from("the durability watch closed while the log was open (a bug in record_log)"),
            }),
        }
    }
}

/// The syncer thread's loop; see the module docs.
pub(crate) fn run_syncer(core: Arc<LogCore>) {
    let interval = match core.options.fsync {
        FsyncPolicy::EveryMillis(millis) => Some(Duration::from_millis(millis)),
        FsyncPolicy::Always | FsyncPolicy::Never => None,
    };
    let mut next_tick = interval.map(|interval| Instant::now() + interval);
    loop {
        let shutting_down = {
            let mut background = core.background.lock();
            loop {
                if background.shutdown {
                    break true;
                }
                let failed = core.failure.get().is_some();
                if !failed && background.sync_requested > core.durable_lsn.load(Ordering::Acquire) {
                    break false;
                }
                match next_tick {
                    Some(deadline) if Instant::now() >= deadline => break false,
                    Some(deadline) => {
                        core.sync_wanted.wait_until(&mut background, deadline);
                    }
                    None => core.sync_wanted.wait(&mut background),
                }
            }
        };
        if shutting_down {
            // Final write and fsync of everything appended, so a clean drop loses nothing.
            if core.failure.get().is_none() {
                if let Err(error) = core.sync_now() {
                    tracing::error!(dir = %core.dir.display(), "record log final sync failed: {error}");
                }
            }
            return;
        }
        if let (Some(interval), Some(deadline)) = (interval, next_tick) {
            if Instant::now() >= deadline {
                next_tick = Some(Instant::now() + interval);
            }
        }
        // On error the log is already marked failed and every waiter woken; keep looping
        // so the thread still exits on shutdown.
        if let Err(error) = core.sync_now() {
            tracing::debug!(dir = %core.dir.display(), "record log sync failed: {error}");
        }
    }
}

/// The writer thread's loop; see the module docs.
pub(crate) fn run_writer(core: Arc<LogCore>) {
    loop {
        {
            let mut background = core.background.lock();
            loop {
                if background.shutdown {
                    return;
                }
                let failed = core.failure.get().is_some();
                let behind = background.write_requested > core.written_lsn.load(Ordering::Acquire);
                if !failed && (behind || background.write_behind) {
                    background.write_behind = false;
                    break;
                }
                core.write_wanted.wait(&mut background);
            }
        }
        let result = {
            let mut io = core.io.lock();
            core.write_pending(&mut io, Rolling::Allowed)
        };
        if let Err(error) = result {
            tracing::debug!(dir = %core.dir.display(), "record log background write failed: {error}");
        }
    }
}
