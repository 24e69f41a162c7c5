//! The commit relay: under `-f 0`, one task makes every waiting connection's records
//! durable, a batch per fsync, without any thread having to wake another.
//!
//! Every reply under `-f 0` waits for an fsync. A connection appends its record, registers
//! here and sleeps. The relay wakes, yields once so that every connection the last poll of
//! the sockets made ready runs (and appends) first, and then makes the batch durable in
//! one of two ways:
//!
//! - **Alone** (this batch and the one before it each had at most one committer: one
//!   client, or a quiet server), the relay writes and fsyncs on the event loop's own
//!   thread ([`RecordLog::sync_here`]). Nothing else is waiting, so blocking the loop
//!   for the fsync costs nobody, and no other thread is involved at all.
//! - **Under load**, it hands the fsync to the record log's syncer thread
//!   ([`RecordLog::request_sync`]) and keeps the loop serving other connections while the
//!   fsync runs, yielding between passes; it looks at the durable watermark after each
//!   pass instead of sleeping until the syncer wakes it. Commits that arrive meanwhile
//!   form the next batch, which is requested the moment this one lands, so fsyncs run
//!   back to back.
//!
//! Why not sleep and be woken, as the first design did (each batch went to the syncer
//! behind a 250 µs gathering window, and the syncer's eventfd woke the runtime): on this
//! 2-vCPU VM, waking a thread whose vCPU is idle waits for the host to run that vCPU.
//! `strace` showed the syncer idle for about 2 ms between 0.4 ms fsyncs at 64 clients.
//! Measured with `mini bench queue --durability durable`, alternating runs of a minute or
//! so each: the first design gave about 8–11k jobs/s at 64 clients; fsyncing inline
//! always, 14–16k (but 16 clients fell to 2–8k, because the loop stops while it fsyncs
//! and half the clients' next commands then wait a whole extra fsync); this hybrid, 15–19k
//! at 64 and 8–12k at 16. Yielding more than once before a batch, or gathering for
//! 100–500 µs, measured the same as once, within the noise.
//!
//! The price of the loop not sleeping: while an fsync is in flight and commits wait, it
//! polls its sockets with a zero timeout on every pass, burning its core for the length
//! of the fsync. It sleeps as usual once nobody waits.
//!
//! On a multi-thread runtime (`--threads N`) the inline fsync runs in
//! [`tokio::task::block_in_place`], so the worker's other tasks move to another worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use minicore::lifecycle::Shutdown;
use minicore::record_log::{LogError, RecordLog};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{watch, Notify};

/// What the relay last published: one past the last durable LSN, and whether the log
/// has failed (then nothing more will become durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Published {
    durable: u64,
    failed: bool,
}

pub struct CommitRelay {
    log: Arc<RecordLog>,
    /// One past the highest LSN a connection waits for.
    wanted: AtomicU64,
    /// Connections that started waiting since the relay last fsynced.
    waiting: AtomicU64,
    /// Wakes the relay when a connection starts waiting.
    kick: Notify,
    published: watch::Sender<Published>,
}

impl CommitRelay {
    pub fn new(log: Arc<RecordLog>) -> Arc<Self> {
        let durable = log.durable_lsn();
        let (published, _) = watch::channel(Published { durable, failed: false });
        Arc::new(CommitRelay {
            log,
            wanted: AtomicU64::new(durable),
            waiting: AtomicU64::new(0),
            kick: Notify::new(),
            published,
        })
    }

    /// Waits until record `lsn` is fsynced.
    pub async fn wait(&self, lsn: u64) -> Result<(), String> {
        let target = lsn + 1;
        if self.log.durable_lsn() >= target {
            return Ok(());
        }
        let mut rx = self.published.subscribe();
        self.wanted.fetch_max(target, Ordering::SeqCst);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.kick.notify_one();
        let seen = rx
            .wait_for(|p| p.durable >= target || p.failed)
            .await
            .map_err(|_| "the commit relay stopped".to_owned())?;
        if seen.durable >= target {
            Ok(())
        } else {
            Err("the write-ahead log failed; the change is not durable".into())
        }
    }

    /// The relay's loop, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        // How many connections the previous batch answered.
        let mut last_batch = 0u64;
        loop {
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = shutdown.wait() => return,
            }
            loop {
                let durable = self.log.durable_lsn();
                if durable >= self.wanted.load(Ordering::SeqCst) {
                    self.published.send_replace(Published { durable, failed: false });
                    break;
                }
                // Let the connections that the last poll of the sockets made ready run
                // first: their records join this fsync instead of waiting for the next.
                tokio::task::yield_now().await;
                let batch = self.waiting.swap(0, Ordering::SeqCst);
                let alone = batch <= 1 && last_batch <= 1;
                last_batch = batch;
                let synced = if alone { self.sync_here() } else { self.sync_while_serving().await };
                match synced {
                    Ok(durable) => {
                        self.published.send_replace(Published { durable, failed: false });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "write-ahead log commit failed");
                        self.published.send_replace(Published { durable: self.log.durable_lsn(), failed: true });
                        return;
                    }
                }
            }
        }
    }

    /// Has the syncer fsync everything wanted so far, and serves the other connections
    /// until it has; returns the new durable watermark.
    async fn sync_while_serving(&self) -> Result<u64, LogError> {
        let target = self.wanted.load(Ordering::SeqCst);
        self.log.request_sync(target - 1)?;
        loop {
            let durable = self.log.durable_lsn();
            if durable >= target {
                return Ok(durable);
            }
            self.log.check_failed()?;
            tokio::task::yield_now().await;
        }
    }

    /// Writes and fsyncs everything appended so far, on this thread; returns the new
    /// durable watermark.
    fn sync_here(&self) -> Result<u64, LogError> {
        let durable = match Handle::current().runtime_flavor() {
            RuntimeFlavor::CurrentThread => self.log.sync_here()?,
            _ => tokio::task::block_in_place(|| self.log.sync_here())?,
        };
        debug_assert!(durable >= self.published.borrow().durable, "the durable watermark never moves back");
        Ok(durable)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use minicore::record_log::{FsyncPolicy, LogOptions};

    use super::*;

    /// How a committer acknowledges: the real relay, or the forgotten-wait bug.
    #[derive(Clone, Copy, PartialEq)]
    enum Ack {
        AfterRelay,
        BeforeFsync,
    }

    fn open_log(dir: &std::path::Path) -> Arc<RecordLog> {
        let options = LogOptions { fsync: FsyncPolicy::Always, ..LogOptions::default() };
        Arc::new(RecordLog::open(dir, options).expect("open the log").0)
    }

    /// `committers` tasks each append and acknowledge `rounds` records; returns how many
    /// acknowledgements came while their record was not yet fsynced.
    async fn acknowledgements_before_fsync(log: Arc<RecordLog>, committers: usize, rounds: usize, ack: Ack) -> usize {
        let relay = CommitRelay::new(log.clone());
        let shutdown = Shutdown::new();
        let relay_task = tokio::spawn(relay.clone().run(shutdown.clone()));
        let early = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for committer in 0..committers {
            let (log, relay, early) = (log.clone(), relay.clone(), early.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..rounds {
                    let lsn = log.append(format!("{committer}/{round}").as_bytes()).expect("append");
                    if ack == Ack::AfterRelay {
                        relay.wait(lsn).await.expect("commit");
                    }
                    if log.durable_lsn() <= lsn {
                        early.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        for task in tasks {
            task.await.expect("a committer panicked");
        }
        shutdown.trigger();
        relay_task.await.expect("the relay panicked");
        early.load(Ordering::SeqCst)
    }

    #[test]
    fn every_acknowledgement_follows_its_fsync_on_the_current_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // One committer takes the inline path, many the syncer path; both must hold.
        assert_eq!(runtime.block_on(acknowledgements_before_fsync(log.clone(), 1, 50, Ack::AfterRelay)), 0);
        assert_eq!(runtime.block_on(acknowledgements_before_fsync(log.clone(), 24, 20, Ack::AfterRelay)), 0);
        assert_eq!(log.durable_lsn(), log.next_lsn(), "every record was fsynced");
        assert!(log.stats().fsyncs < 50 + 24 * 20, "concurrent committers shared fsyncs");
    }

    #[test]
    fn every_acknowledgement_follows_its_fsync_on_a_multi_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        assert_eq!(runtime.block_on(acknowledgements_before_fsync(log.clone(), 1, 30, Ack::AfterRelay)), 0);
        assert_eq!(runtime.block_on(acknowledgements_before_fsync(log.clone(), 16, 20, Ack::AfterRelay)), 0);
        assert_eq!(log.durable_lsn(), log.next_lsn());
    }

    /// The check above can fail: acknowledging without waiting for the relay is caught.
    #[test]
    fn acknowledging_before_the_fsync_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let early = runtime.block_on(acknowledgements_before_fsync(log, 8, 10, Ack::BeforeFsync));
        assert!(early > 0, "acknowledgements before the fsync went unnoticed");
    }
}
