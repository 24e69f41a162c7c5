//! MULTI/EXEC/WATCH state of one client.
//!
//! A transaction queues commands (owned copies of their arguments) until EXEC. EXEC
//! then locks the union of the shards every queued command touches, runs them back to
//! back and releases the locks: no other client can run a command on those keys in
//! between, which is Redis's isolation guarantee. See `cmd/transactions.rs`.
//!
//! WATCH is optimistic locking. Each client that watches keys owns one [`WatchFlag`];
//! the flag is registered in the shard of every watched key. Anything that changes a
//! watched key — a write, an expiry, an eviction, a FLUSH — marks the flag dirty
//! (`Shard::touch_watchers`), and EXEC of a dirty transaction returns a null array.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::keyspace::CompactBytes;
use crate::resp::OwnedArgs;

/// Set when a watched key changes. Shared between the client and the shards.
#[derive(Debug, Default)]
pub struct WatchFlag {
    dirty: AtomicBool,
}

impl WatchFlag {
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }
}

/// One watched key.
#[derive(Debug, Clone)]
pub struct WatchedKey {
    pub db: usize,
    pub key: CompactBytes,
    /// The key existed but was already past its deadline when WATCHed. Redis does not
    /// count such a key as "expired during the transaction".
    pub expired_at_watch: bool,
}

/// The keys a client watches and the flag they share.
#[derive(Debug)]
pub struct WatchState {
    pub flag: Arc<WatchFlag>,
    pub keys: Vec<WatchedKey>,
}

impl Default for WatchState {
    fn default() -> Self {
        WatchState { flag: Arc::new(WatchFlag::default()), keys: Vec::new() }
    }
}

/// A transaction being queued between MULTI and EXEC.
#[derive(Debug, Default)]
pub struct MultiState {
    pub queued: Vec<OwnedArgs>,
    /// The union of the queued commands' flags: EXEC of a transaction that may grow
    /// memory is refused under OOM, as in Redis.
    pub flags: u32,
    /// A command failed to queue (unknown, wrong arity, OOM): EXEC answers EXECABORT.
    pub errored: bool,
}
