//! The keyspace: all databases, split into shards that are locked independently.
//!
//! ```text
//!   key --hash--> shard = bits 32..38 of the hash --> Mutex<Shard>
//!                                                       dbs[0..16]: Table
//!                                                       watched keys, blocked clients
//! ```
//!
//! A command locks the shards of the keys it names (one shard for GET and SET), in
//! ascending shard order, so two multi-key commands can never deadlock. Commands on
//! different shards run in parallel on different cores; there is no global lock on the
//! way from a socket to a value. A multi-key command (MSET, RENAME, SUNIONSTORE) or a
//! whole MULTI/EXEC holds all of its shards at once, which is what makes it atomic:
//! no other command can observe it half done.
//!
//! The shard index uses hash bits 32..38, bits the per-shard hash tables do not use
//! for bucket selection (low bits) or for their SIMD tags (top 7 bits); using the low
//! bits would make every key in a shard collide.
//!
//! Commands never touch a [`Table`] directly. They go through [`Keys`], which does the
//! bookkeeping Redis spreads over `lookupKey*`, `dbAdd`, `signalModifiedKey` and
//! `propagate`:
//!
//! - lazy expiry: a key past its deadline is deleted on access (never while the AOF is
//!   being replayed, as Redis does, so replay reproduces history exactly);
//! - WATCH: any change to a key (including expiry, eviction and FLUSH) marks the
//!   transactions watching it;
//! - blocked clients: a push to a key that someone is BLPOP-ing marks the key ready;
//! - client-side caching: a change to a key that tracking clients read takes it out of
//!   the shard's tracking table, to invalidate it for them ([`crate::tracking`]);
//! - the AOF: what a command changed is encoded for the append-only file.

pub mod compact;
pub mod dict;
pub mod table;
pub mod value;
pub mod zset;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crossbeam::utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};

use crate::blocking::Waiter;
use crate::eviction::AccessClock;
use crate::resp::encode_command;
use crate::tracking::{Invalidated, Pending, Tracking};
use crate::transaction::WatchFlag;
pub use compact::CompactBytes;
pub use dict::{hash_bytes, Dict};
pub use table::{Entry, Table};
pub use value::{HashValue, ListValue, SetValue, Str, Value};
pub use zset::ZSet;

/// Number of shards. A power of two; 64 keeps lock contention negligible on the
/// machines this runs on while keeping each shard's tables small enough that a resize
/// is a short pause. Real deployments with many cores would raise it.
pub const SHARDS: usize = 64;
const SHARD_SHIFT: u32 = 32;

#[inline]
pub fn shard_of(hash: u64) -> usize {
    ((hash >> SHARD_SHIFT) as usize) & (SHARDS - 1)
}

/// Counters kept under the shard lock, so they cost no atomic operations.
#[derive(Default, Clone, Copy, Debug)]
pub struct ShardStats {
    pub expired_keys: u64,
    pub evicted_keys: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
}

/// One shard: a slice of every database, plus the clients waiting on its keys.
pub struct Shard {
    pub dbs: Box<[Table]>,
    /// Transactions WATCHing keys of this shard: `(db, key)` to their flags.
    pub watched: HashMap<(usize, CompactBytes), Vec<Arc<WatchFlag>>>,
    /// Clients blocked (BLPOP and friends) on keys of this shard, oldest first.
    pub blocked: HashMap<(usize, CompactBytes), std::collections::VecDeque<Arc<Waiter>>>,
    /// Keys of this shard that tracking clients read, with their readers. Under the
    /// shard lock, so a read and a later write of the same key are ordered by the lock
    /// both take (see `tracking.rs`).
    pub tracking: crate::tracking::ShardTable,
    pub stats: ShardStats,
}

impl Shard {
    fn new(databases: usize) -> Self {
        Shard {
            dbs: (0..databases).map(|_| Table::default()).collect(),
            watched: HashMap::new(),
            blocked: HashMap::new(),
            tracking: Default::default(),
            stats: ShardStats::default(),
        }
    }

    /// Everything that follows a change to `key` besides the change itself, as Redis's
    /// `signalModifiedKey`: WATCHes break, and tracking clients that read it get an
    /// invalidation (collected in `changes`, sent by the caller before it unlocks).
    /// `by` is the client whose command changed it, 0 for expiry and eviction.
    #[inline(always)]
    pub fn key_changed(&mut self, db: usize, key: &[u8], tracking: &Tracking, pending: &mut Pending, by: u64) {
        self.touch_watchers(db, key);
        // The whole cost of tracking for a write when nobody tracks: a length under the
        // lock already held, and one relaxed load.
        if !self.tracking.is_empty() || tracking.bcast_active() {
            self.key_changed_for_tracking(key, tracking, pending, by);
        }
    }

    #[inline(never)]
    fn key_changed_for_tracking(&mut self, key: &[u8], tracking: &Tracking, pending: &mut Pending, by: u64) {
        if !self.tracking.is_empty() {
            if let Some(readers) = tracking.take(&mut self.tracking, key) {
                pending.changes().invalidated.push(Invalidated { key: CompactBytes::new(key), readers });
            }
        }
        if tracking.bcast_active() {
            pending.changes().broadcast.push((CompactBytes::new(key), by));
        }
    }

    /// Marks the transactions watching `key` as dirty.
    #[inline]
    pub fn touch_watchers(&mut self, db: usize, key: &[u8]) {
        if self.watched.is_empty() {
            return;
        }
        if let Some(flags) = self.watched.get(&(db, CompactBytes::new(key))) {
            for f in flags {
                f.mark_dirty();
            }
        }
    }

    /// FLUSHDB/FLUSHALL: marks watchers of keys that exist in `db` (Redis's
    /// `touchAllWatchedKeysInDb`: watching a key that does not exist is not broken by
    /// a flush).
    pub fn touch_watchers_of_existing(&mut self, db: usize) {
        if self.watched.is_empty() {
            return;
        }
        for ((wdb, key), flags) in &self.watched {
            if *wdb == db && self.dbs[db].find(hash_bytes(key), key).is_some() {
                for f in flags {
                    f.mark_dirty();
                }
            }
        }
    }
}

pub struct Keyspace {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    databases: usize,
    /// Keys changed since start (INFO's `rdb_changes_since_last_save` analogue).
    pub dirty: AtomicU64,
    /// Client-side caching: counters and BCAST prefixes (the per-key tables are in the
    /// shards). Here rather than in `Server` because every write path reaches it.
    pub tracking: Tracking,
}

impl Keyspace {
    pub fn new(databases: usize) -> Self {
        assert!(databases >= 1);
        Keyspace {
            shards: (0..SHARDS).map(|_| CachePadded::new(Mutex::new(Shard::new(databases)))).collect(),
            databases,
            dirty: AtomicU64::new(0),
            tracking: Tracking::default(),
        }
    }

    pub fn databases(&self) -> usize {
        self.databases
    }

    #[inline]
    pub fn lock_shard(&self, idx: usize) -> MutexGuard<'_, Shard> {
        self.shards[idx].lock()
    }

    pub fn try_lock_shard(&self, idx: usize) -> Option<MutexGuard<'_, Shard>> {
        self.shards[idx].try_lock()
    }

    /// Locks the shards holding `keys`, in ascending order (the deadlock-free order).
    pub fn lock_keys<'a, 'k>(&'a self, keys: impl Iterator<Item = &'k [u8]>) -> Guards<'a> {
        let mut idx: Vec<usize> = keys.map(|k| shard_of(hash_bytes(k))).collect();
        idx.sort_unstable();
        idx.dedup();
        self.lock_indices(&idx)
    }

    /// Locks one shard; the fast path of single-key commands.
    #[inline]
    pub fn lock_one(&self, shard: usize) -> Guards<'_> {
        Guards { one: Some((shard, self.shards[shard].lock())), rest: Vec::new(), all: false }
    }

    /// Locks the given shard indices, which must be sorted and unique.
    pub fn lock_indices(&self, idx: &[usize]) -> Guards<'_> {
        debug_assert!(idx.windows(2).all(|w| w[0] < w[1]), "shards must be locked in order");
        let mut guards = Guards::none();
        if idx.len() == SHARDS {
            return self.lock_all();
        }
        for &i in idx {
            let g = self.shards[i].lock();
            if guards.one.is_none() {
                guards.one = Some((i, g));
            } else {
                guards.rest.push((i, g));
            }
        }
        guards
    }

    /// Locks every shard: FLUSHALL, and transactions that contain whole-keyspace
    /// commands. This is the one place a global pause happens.
    pub fn lock_all(&self) -> Guards<'_> {
        let rest = (0..SHARDS).map(|i| (i, self.shards[i].lock())).collect();
        Guards { one: None, rest, all: true }
    }

    /// Number of keys in `db` (DBSIZE), summed shard by shard.
    pub fn db_len(&self, db: usize) -> usize {
        (0..SHARDS).map(|i| self.shards[i].lock().dbs[db].len()).sum()
    }

    /// `(keys, keys with a TTL)` of each database, for INFO keyspace and /metrics.
    pub fn db_sizes(&self) -> Vec<(usize, usize)> {
        let mut sizes = vec![(0, 0); self.databases];
        for i in 0..SHARDS {
            let shard = self.shards[i].lock();
            for (db, t) in shard.dbs.iter().enumerate() {
                sizes[db].0 += t.len();
                sizes[db].1 += t.volatile_len();
            }
        }
        sizes
    }

    pub fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for i in 0..SHARDS {
            let s = self.shards[i].lock().stats;
            total.expired_keys += s.expired_keys;
            total.evicted_keys += s.evicted_keys;
            total.keyspace_hits += s.keyspace_hits;
            total.keyspace_misses += s.keyspace_misses;
        }
        total
    }
}

/// The shard locks a command holds. Single-key commands hold one, without allocating.
pub struct Guards<'a> {
    one: Option<(usize, MutexGuard<'a, Shard>)>,
    rest: Vec<(usize, MutexGuard<'a, Shard>)>,
    /// `rest` holds every shard, indexed by shard number.
    all: bool,
}

impl<'a> Guards<'a> {
    pub fn none() -> Self {
        Guards { one: None, rest: Vec::new(), all: false }
    }

    pub fn is_empty(&self) -> bool {
        self.one.is_none() && self.rest.is_empty()
    }

    pub fn holds_all(&self) -> bool {
        self.all
    }

    pub fn holds(&self, shard: usize) -> bool {
        if self.all {
            return true;
        }
        matches!(&self.one, Some((i, _)) if *i == shard) || self.rest.iter().any(|(i, _)| *i == shard)
    }

    /// The locked shard `idx`. Touching a shard the command did not lock is a bug in
    /// the command's key specification, so it panics rather than racing.
    #[inline]
    pub fn shard(&mut self, idx: usize) -> &mut Shard {
        if self.all {
            return &mut self.rest[idx].1;
        }
        if let Some((i, g)) = &mut self.one {
            if *i == idx {
                return g;
            }
        }
        for (i, g) in &mut self.rest {
            if *i == idx {
                return g;
            }
        }
        panic!("shard {idx} is not locked by this command (key spec bug)");
    }

    /// Every locked shard, with its index.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Shard)> + use<'_, 'a> {
        self.one.iter_mut().map(|(i, g)| (*i, &mut **g)).chain(self.rest.iter_mut().map(|(i, g)| (*i, &mut **g)))
    }
}

/// WRONGTYPE: the key holds another type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Side effects a command produced, applied by the dispatcher after it returns and
/// before the locks are released.
#[derive(Default)]
pub struct Effects {
    /// Number of changes (Redis's `server.dirty` delta). A write command that changed
    /// nothing (SADD of an existing member) is not written to the AOF.
    pub dirty: u64,
    /// Whether to encode AOF records at all (false with `appendonly no`).
    pub record_aof: bool,
    /// Commands to append to the AOF, RESP encoded. The first byte pair holds the
    /// database they start in (see [`crate::aof`]).
    pub aof: Vec<u8>,
    /// The database the last command in `aof` ran in.
    aof_db: Option<usize>,
    /// The running command logged itself in a rewritten form; do not log it as sent.
    pub command_propagated: bool,
    /// Keys that received data while clients are blocked on them.
    pub ready: Vec<(usize, CompactBytes)>,
    /// The client running the command, 0 for none: NOLOOP tracking clients are not
    /// told about their own changes.
    pub client: u64,
    /// Invalidations the changes call for, sent by the dispatcher before unlocking.
    pub tracking: Pending,
    /// The command remembered keys for a tracking client: the table may be over
    /// `tracking-table-max-keys` once the locks are released.
    pub tracking_registered: bool,
}

impl Effects {
    pub fn new(record_aof: bool) -> Self {
        Effects { record_aof, ..Default::default() }
    }

    /// Appends one command, as it should be replayed, to the AOF record.
    pub fn propagate<'a>(&mut self, db: usize, parts: impl ExactSizeIterator<Item = &'a [u8]>) {
        if !self.record_aof {
            return;
        }
        match self.aof_db {
            None => {
                self.aof.extend_from_slice(&(db as u16).to_le_bytes());
            }
            Some(current) if current != db => {
                let mut b = itoa::Buffer::new();
                encode_command([&b"SELECT"[..], b.format(db).as_bytes()].into_iter(), &mut self.aof);
            }
            Some(_) => {}
        }
        self.aof_db = Some(db);
        encode_command(parts, &mut self.aof);
    }

    pub fn take_aof(&mut self) -> Vec<u8> {
        self.aof_db = None;
        std::mem::take(&mut self.aof)
    }

    pub fn clear_aof(&mut self) {
        self.aof_db = None;
        self.aof.clear();
    }
}

/// Where a key was found: its shard and its position in that shard's table.
#[derive(Clone, Copy, Debug)]
pub struct Loc {
    pub shard: usize,
    pub pos: usize,
}

/// A command's view of the keyspace: the locked shards, the selected database and the
/// time the command runs at. See the module docs for what it does behind each call.
pub struct Keys<'a> {
    space: &'a Keyspace,
    pub guards: Guards<'a>,
    pub db: usize,
    /// The command's notion of "now", in Unix ms. Fixed for the whole command (and the
    /// whole EXEC), as Redis does, so a key cannot expire half way through.
    pub now_ms: u64,
    /// Replaying the AOF: keys never expire and nothing is propagated.
    pub loading: bool,
    pub clock: AccessClock,
    pub effects: Effects,
}

impl<'a> Keys<'a> {
    pub fn new(
        space: &'a Keyspace,
        guards: Guards<'a>,
        db: usize,
        now_ms: u64,
        clock: AccessClock,
        effects: Effects,
    ) -> Self {
        Keys { space, guards, db, now_ms, loading: false, clock, effects }
    }

    /// Takes shard `idx` too if it is free, without waiting: waiting while holding
    /// other shard locks out of order could deadlock. Used to serve BLMOVE in place.
    pub fn try_lock_extra(&mut self, idx: usize) -> bool {
        if self.guards.holds(idx) {
            return true;
        }
        match self.space.try_lock_shard(idx) {
            Some(g) => {
                self.guards.rest.push((idx, g));
                true
            }
            None => false,
        }
    }

    #[inline]
    pub fn table(&mut self, shard: usize) -> &mut Table {
        let db = self.db;
        &mut self.guards.shard(shard).dbs[db]
    }

    /// Finds a live key: expired keys are deleted here (lazy expiry).
    /// Does not count hits or update the access clock; see [`Keys::lookup_read`].
    pub fn lookup(&mut self, key: &[u8]) -> Option<Loc> {
        let hash = hash_bytes(key);
        let shard = shard_of(hash);
        let db = self.db;
        let now = self.now_ms;
        let table = &mut self.guards.shard(shard).dbs[db];
        let pos = table.find(hash, key)?;
        if !self.loading {
            if let Some(at) = table.expire_at(pos) {
                if at <= now {
                    self.delete_expired(shard, pos);
                    return None;
                }
            }
        }
        Some(Loc { shard, pos })
    }

    /// `lookup` for read commands: counts keyspace hits and misses and records the
    /// access for LRU/LFU eviction.
    pub fn lookup_read(&mut self, key: &[u8]) -> Option<Loc> {
        let found = self.lookup(key);
        let clock = self.clock;
        match found {
            Some(loc) => {
                let shard = self.guards.shard(loc.shard);
                shard.stats.keyspace_hits += 1;
                let e = shard.dbs[self.db].entry_mut(loc.pos);
                e.lru = clock.touch(e.lru);
            }
            None => {
                let shard = shard_of(hash_bytes(key));
                self.guards.shard(shard).stats.keyspace_misses += 1;
            }
        }
        found
    }

    /// `lookup` for write commands: records the access, no hit/miss counting.
    pub fn lookup_write(&mut self, key: &[u8]) -> Option<Loc> {
        let found = self.lookup(key);
        if let Some(loc) = found {
            let clock = self.clock;
            let e = self.table(loc.shard).entry_mut(loc.pos);
            e.lru = clock.touch(e.lru);
        }
        found
    }

    #[inline]
    pub fn entry(&mut self, loc: Loc) -> &mut Entry {
        self.table(loc.shard).entry_mut(loc.pos)
    }

    #[inline]
    pub fn value(&mut self, loc: Loc) -> &mut Value {
        &mut self.table(loc.shard).entry_mut(loc.pos).value
    }

    pub fn expire_at(&mut self, loc: Loc) -> Option<u64> {
        self.table(loc.shard).expire_at(loc.pos)
    }

    /// Deletes an expired key with everything Redis does around it: count it, break
    /// WATCHes, and write a DEL to the AOF so a replay does not resurrect it.
    fn delete_expired(&mut self, shard: usize, pos: usize) {
        let db = self.db;
        let s = self.guards.shard(shard);
        let (key, _) = s.dbs[db].remove_at(pos);
        s.stats.expired_keys += 1;
        // An expiry has no author for BCAST's NOLOOP (Redis passes no client), but
        // default-mode NOLOOP still leaves out the client whose access expired it.
        s.key_changed(db, &key, &self.space.tracking, &mut self.effects.tracking, 0);
        self.effects.propagate(db, [&b"DEL"[..], &key].into_iter());
    }

    /// Writes `value` under `key`, replacing any value and clearing any TTL (SET).
    /// Returns the key's location.
    pub fn set(&mut self, key: &[u8], value: Value) -> Loc {
        self.set_keep_ttl(key, value, false)
    }

    /// Like [`Keys::set`]; with `keep_ttl` an existing TTL survives (SET KEEPTTL).
    pub fn set_keep_ttl(&mut self, key: &[u8], value: Value, keep_ttl: bool) -> Loc {
        let hash = hash_bytes(key);
        let shard = shard_of(hash);
        let clock = self.clock;
        let found = self.lookup(key);
        let table = self.table(shard);
        match found {
            Some(loc) => {
                table.replace_value(loc.pos, value);
                if !keep_ttl {
                    table.set_expire(loc.pos, None);
                }
                let e = table.entry_mut(loc.pos);
                e.lru = clock.touch(e.lru);
                loc
            }
            None => {
                let pos = table.insert_new(hash, key, value, clock.new_entry());
                Loc { shard, pos }
            }
        }
    }

    /// Adds a key that `lookup` just reported missing. Returns its location.
    pub fn insert_new(&mut self, key: &[u8], value: Value) -> Loc {
        let hash = hash_bytes(key);
        let shard = shard_of(hash);
        let lru = self.clock.new_entry();
        let pos = self.table(shard).insert_new(hash, key, value, lru);
        Loc { shard, pos }
    }

    pub fn set_expire(&mut self, loc: Loc, at: Option<u64>) {
        self.table(loc.shard).set_expire(loc.pos, at);
    }

    /// Removes a live key. Returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        match self.lookup(key) {
            Some(loc) => {
                self.remove(loc);
                true
            }
            None => false,
        }
    }

    /// Removes the key at `loc` and returns its entry (RENAME, MOVE, GETDEL).
    pub fn remove(&mut self, loc: Loc) -> (CompactBytes, Entry) {
        self.table(loc.shard).remove_at(loc.pos)
    }

    /// Records that `key` changed: one unit of dirtiness (so the command goes to the
    /// AOF), broken WATCHes, invalidations for tracking clients, and a wake-up for
    /// clients blocked on it.
    #[inline]
    pub fn modified(&mut self, key: &[u8]) {
        self.modified_by(key, 1);
    }

    /// [`Keys::modified`] for a command that made `changes` changes to one key (SADD
    /// of three new members counts three, as Redis's `server.dirty` does). Zero is
    /// allowed: the key was touched (WATCH breaks, as Redis's `signalModifiedKey`
    /// does) but nothing needs logging, as for an LTRIM that removed nothing.
    #[inline]
    pub fn modified_by(&mut self, key: &[u8], changes: u64) {
        self.effects.dirty += changes;
        let db = self.db;
        let by = self.effects.client;
        let shard = self.guards.shard(shard_of(hash_bytes(key)));
        shard.key_changed(db, key, &self.space.tracking, &mut self.effects.tracking, by);
        if !shard.blocked.is_empty() {
            let k = CompactBytes::new(key);
            if shard.blocked.contains_key(&(db, k.clone()))
                && !self.effects.ready.iter().any(|(d, r)| *d == db && *r == k)
            {
                self.effects.ready.push((db, k));
            }
        }
    }

    /// Deletes `key` if its aggregate became empty (Redis never stores empty lists,
    /// sets, hashes or sorted sets). Returns whether it was deleted.
    pub fn delete_if_empty(&mut self, loc: Loc) -> bool {
        let empty = match &self.entry(loc).value {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        };
        if empty {
            self.remove(loc);
        }
        empty
    }

    /// Logs `parts` instead of the command as it was sent (SET EX as SET PXAT, SPOP as
    /// SREM...). A command that calls this is not logged in its original form.
    pub fn propagate<'p>(&mut self, parts: impl ExactSizeIterator<Item = &'p [u8]>) {
        let db = self.db;
        self.effects.command_propagated = true;
        self.effects.propagate(db, parts);
    }

    /// Logs the command as it was sent (the default for a write that changed something).
    pub fn propagate_args<'p>(&mut self, parts: impl ExactSizeIterator<Item = &'p [u8]>) {
        let db = self.db;
        self.effects.propagate(db, parts);
    }

    /// The locked shard at `idx` (whole-keyspace commands walk all of them).
    pub fn shard(&mut self, idx: usize) -> &mut Shard {
        self.guards.shard(idx)
    }

    /// Visits every shard in order, for commands whose key spec is `Walk` or `All`.
    /// Inside EXEC (or for `All`) the command already holds every lock; otherwise
    /// (`Walk`: KEYS, SCAN, DBSIZE, RANDOMKEY) each shard is locked for its own visit,
    /// so a long walk never stops the whole server. Returning `false` from `f` stops.
    pub fn for_each_shard(&mut self, mut f: impl FnMut(usize, &mut Shard) -> bool) {
        if self.guards.holds_all() {
            for (i, s) in self.guards.iter_mut() {
                if !f(i, s) {
                    return;
                }
            }
        } else {
            assert!(self.guards.is_empty(), "a walking command must not hold shard locks");
            for i in 0..SHARDS {
                let mut g = self.space.lock_shard(i);
                if !f(i, &mut g) {
                    return;
                }
            }
        }
    }

    /// Runs `f` on one shard, whether or not this command holds its lock (see
    /// [`Keys::for_each_shard`]). SCAN uses it to resume at the shard its cursor names.
    pub fn with_shard<T>(&mut self, idx: usize, f: impl FnOnce(&mut Shard) -> T) -> T {
        if self.guards.holds(idx) {
            f(self.guards.shard(idx))
        } else {
            assert!(self.guards.is_empty(), "a walking command must not hold shard locks");
            f(&mut self.space.lock_shard(idx))
        }
    }

    // ----- typed access, with WRONGTYPE checks -----

    /// A string value for reading.
    pub fn get_str(&mut self, key: &[u8]) -> Result<Option<&Str>, WrongType> {
        let Some(loc) = self.lookup_read(key) else {
            return Ok(None);
        };
        match &self.entry(loc).value {
            Value::Str(s) => Ok(Some(s)),
            _ => Err(WrongType),
        }
    }

    /// The aggregate at `key` for writing, created empty by `make` when missing.
    /// Returns the location and whether it was created.
    pub fn get_or_create(
        &mut self,
        key: &[u8],
        kind: fn(&Value) -> bool,
        make: fn() -> Value,
    ) -> Result<(Loc, bool), WrongType> {
        match self.lookup_write(key) {
            Some(loc) => {
                if kind(&self.entry(loc).value) {
                    Ok((loc, false))
                } else {
                    Err(WrongType)
                }
            }
            None => Ok((self.insert_new(key, make()), true)),
        }
    }

    /// Checks the type of an existing key: `Ok(None)` when missing.
    pub fn typed(&mut self, key: &[u8], kind: fn(&Value) -> bool, read: bool) -> Result<Option<Loc>, WrongType> {
        let found = if read { self.lookup_read(key) } else { self.lookup_write(key) };
        match found {
            Some(loc) if kind(&self.entry(loc).value) => Ok(Some(loc)),
            Some(_) => Err(WrongType),
            None => Ok(None),
        }
    }
}

/// Type predicates for [`Keys::typed`] and [`Keys::get_or_create`].
pub mod kind {
    use super::Value;
    pub fn string(v: &Value) -> bool {
        matches!(v, Value::Str(_))
    }
    pub fn list(v: &Value) -> bool {
        matches!(v, Value::List(_))
    }
    pub fn hash(v: &Value) -> bool {
        matches!(v, Value::Hash(_))
    }
    pub fn set(v: &Value) -> bool {
        matches!(v, Value::Set(_))
    }
    pub fn zset(v: &Value) -> bool {
        matches!(v, Value::ZSet(_))
    }
    pub fn new_list() -> Value {
        Value::List(Box::default())
    }
    pub fn new_hash() -> Value {
        Value::Hash(Box::default())
    }
    pub fn new_set() -> Value {
        Value::Set(Box::default())
    }
    pub fn new_zset() -> Value {
        Value::ZSet(Box::default())
    }
}

/// Typed accessors that unwrap a value the caller already type-checked.
impl Value {
    pub fn as_list_mut(&mut self) -> &mut ListValue {
        match self {
            Value::List(l) => l,
            other => panic!("expected a list, found {}", other.type_name()),
        }
    }
    pub fn as_hash_mut(&mut self) -> &mut HashValue {
        match self {
            Value::Hash(h) => h,
            other => panic!("expected a hash, found {}", other.type_name()),
        }
    }
    pub fn as_set_mut(&mut self) -> &mut SetValue {
        match self {
            Value::Set(s) => s,
            other => panic!("expected a set, found {}", other.type_name()),
        }
    }
    pub fn as_zset_mut(&mut self) -> &mut ZSet {
        match self {
            Value::ZSet(z) => z,
            other => panic!("expected a zset, found {}", other.type_name()),
        }
    }
}
