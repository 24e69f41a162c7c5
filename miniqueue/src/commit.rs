//! The commit relay: one task waits on the write-ahead log for every client.
//!
//! Under `-f 0` every reply waits for an fsync. If each connection task awaited the
//! record log itself, every fsync would end with the log's syncer thread waking each of
//! those tasks one by one, and on tokio's current-thread runtime each wake from another
//! thread is an eventfd write and another trip through epoll: measured, the syncer spent
//! more time writing wake-ups (about eleven per fsync at 64 clients) than fsyncing. So
//! connections register here instead, and one relay task awaits the log: one
//! cross-thread wake per fsync, then the relay wakes every covered connection from
//! inside the runtime, which is a queue push. It tells the log how many clients it
//! waits for, so the group-commit window still sees them (see
//! [`RecordLog::commit_async_shared`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use minicore::lifecycle::Shutdown;
use minicore::record_log::RecordLog;
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
    /// One past the highest LSN a client waits for.
    wanted: AtomicU64,
    /// Clients that started waiting since the relay last asked the log.
    waiting: AtomicU64,
    /// Wakes the relay when a client starts waiting.
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
        loop {
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = shutdown.wait() => return,
            }
            loop {
                let target = self.wanted.load(Ordering::SeqCst);
                let durable = self.log.durable_lsn();
                if durable >= target {
                    self.published.send_replace(Published { durable, failed: false });
                    break;
                }
                let committers = self.waiting.swap(0, Ordering::SeqCst);
                match self.log.commit_async_shared(target - 1, committers).await {
                    Ok(_) => {
                        self.published.send_replace(Published { durable: self.log.durable_lsn(), failed: false });
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
}
