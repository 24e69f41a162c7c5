//! Server-assisted client-side caching: `CLIENT TRACKING`, as Redis 6+ does it.
//!
//! A client that caches values locally asks the server to tell it when they change.
//! In the **default mode** the server remembers which keys each tracking client read
//! and sends that client one invalidation the next time such a key changes, then
//! forgets the pair until the key is read again. In **BCAST** mode the server remembers
//! nothing per key: a client subscribes to key prefixes and hears about every change
//! under them. OPTIN/OPTOUT (with `CLIENT CACHING`) choose per command whether reads
//! are remembered; NOLOOP leaves out the client's own writes; REDIRECT sends the
//! invalidations to another connection (the only way a RESP2 client can get them, as
//! pub/sub messages on `__redis__:invalidate`).
//!
//! ```text
//!   reader: GET k ──(shard lock of k)──> value; remember k → reader   in Shard::tracking
//!   writer: SET k ──(shard lock of k)──> change; take k's readers     (same lock)
//!            └─ before its reply: queue `invalidate [k]` in each reader's outbox
//!   reader's connection: drains its outbox between replies (connection.rs)
//! ```
//!
//! **Where the table lives.** The key → readers table is split like the keyspace: each
//! [`crate::keyspace::Shard`] holds the entries for the keys that hash to it, and they
//! are read and written under that shard's lock, the lock the command already holds.
//! That is the whole correctness argument for "no lost invalidation": a read remembers
//! its key under the same lock a later write must take to change the key, so the write
//! finds the reader; a write that came first was seen by the read. The table is keyed
//! by key name only, not by database, as in Redis (a write to `k` in db 1 invalidates a
//! read of `k` in db 0).
//!
//! **How a push reaches a connection.** An entry holds the reader's `Arc<ClientInfo>`,
//! so the writer needs no registry lookup: it reads the reader's mode (atomics in
//! [`ClientTracking`]) and queues a [`Push`] in the reader's (or redirect target's)
//! outbox ([`crate::outbox`]), before its own reply goes out. The owner encodes it in
//! its protocol between two replies, never inside one. Invalidations a client causes
//! for itself are in its own outbox when its command returns, and the connection
//! drains the outbox right after each command, so they follow that command's reply as
//! in Redis. BCAST changes are gathered per batch of pipelined commands (Redis gathers
//! them per event-loop iteration) and sent once per prefix with the keys sorted.
//!
//! **Locks.** Default-mode invalidations are queued while the writer still holds its
//! shard locks; under them it takes, briefly, a tracking client's redirect slot and an
//! outbox queue. BCAST ones are sent at the end of the batch, with no shard lock held,
//! under the prefix table's read lock. None of these locks is ever held while a shard
//! lock is taken, so they cannot deadlock with the shards. The prefix table is written
//! by CLIENT TRACKING on/off and disconnects, which hold no shard lock (inside EXEC
//! they do, but never wait for another while holding the table).
//!
//! **Cost when nobody tracks.** A write checks `Shard::tracking.is_empty()` (a length,
//! under the lock it already holds) and [`Tracking::bcast_active`] (one relaxed load of
//! a counter nobody writes while no client uses BCAST). A read checks the client's own
//! mode in its session. Nothing else happens on the command path.
//!
//! **Bounds.** `tracking-table-max-keys` (default 1,000,000, 0 = unlimited) caps the
//! keys in the table. Over it, random keys are evicted from the table with an
//! invalidation to their readers, as Redis's `trackingLimitUsedSlots` does: right after
//! the command that added keys, and from the cron after a CONFIG SET lowers the limit.
//!
//! **Disconnects.** Redis leaves a gone client's ids in the table and skips them lazily.
//! Here a disconnecting client sweeps itself out of the shards it registered keys in,
//! so the table holds only live clients (and `tracking_total_items` is exact).
//! `CLIENT TRACKING off` keeps Redis's lazy behaviour: the entries stay, are skipped
//! while tracking is off, and still fire if it is turned on again before the key
//! changes.
//!
//! Left out: tracking keys read by scripts (minikv has no scripting). Two DEBUG
//! switches break the design on purpose, for the tests that must show they would
//! notice: `TRACKING-DROP-INVALIDATIONS` and `TRACKING-REGISTER-LATE`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use crate::clients::ClientInfo;
use crate::config::OutputLimit;
use crate::keyspace::{CompactBytes, Dict, SHARDS};
use crate::outbox::{Delivery, Push};
use crate::resp::{Protocol, Reply};
use crate::server::Server;
use crate::session::Session;

/// A client's tracking mode bits (Redis's `CLIENT_TRACKING_*` flags).
pub mod flag {
    pub const ON: u32 = 1 << 0;
    pub const BCAST: u32 = 1 << 1;
    pub const OPTIN: u32 = 1 << 2;
    pub const OPTOUT: u32 = 1 << 3;
    pub const NOLOOP: u32 = 1 << 4;
    /// The redirect target was gone when an invalidation was due.
    pub const BROKEN_REDIRECT: u32 = 1 << 5;
}

/// Keys evicted from the table per [`enforce_limit`] call at most, so that a CONFIG SET
/// that lowers the limit by a million does not stall one command; the cron finishes
/// the job over the next ticks (Redis bounds its effort the same way).
const MAX_EVICTIONS_PER_CALL: usize = 1000;

/// Readers of one key kept in a plain vector up to this many, then in a hash map: a
/// hot key read by thousands of near-caches must not cost a linear scan per read.
const FEW_READERS: usize = 16;

/// The null payload of a flush invalidation, in the tracking client's protocol.
const NULL_RESP2: &[u8] = b"$-1\r\n";
const NULL_RESP3: &[u8] = b"_\r\n";

// ----- per-client state ---------------------------------------------------------

/// The part of a client's tracking mode that other connections read when they
/// invalidate keys for it. Written only by the client's own connection (except
/// [`flag::BROKEN_REDIRECT`], which a writer sets when it finds the target gone).
#[derive(Debug, Default)]
pub struct ClientTracking {
    /// [`flag`] bits. Atomics, because writers on every core read them.
    flags: AtomicU32,
    /// The REDIRECT client id, 0 for none (Redis's `client_tracking_redirection`).
    redirect_id: AtomicU64,
    /// The redirect target, resolved once at CLIENT TRACKING time so that a writer
    /// needs no lookup. Weak: two clients redirecting to each other must not keep each
    /// other alive.
    redirect: Mutex<Weak<ClientInfo>>,
    /// Shards in which this client may have table entries (bit per shard), so that a
    /// disconnect sweeps only those.
    shards: AtomicU64,
}

impl ClientTracking {
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    pub fn is_on(&self) -> bool {
        self.flags() & flag::ON != 0
    }

    /// CLIENT GETREDIR / TRACKINGINFO / LIST `redir=`: the target id, 0 without one,
    /// -1 when tracking is off.
    pub fn redirect_for_display(&self) -> i64 {
        if self.is_on() {
            self.redirect_id.load(Ordering::Relaxed) as i64
        } else {
            -1
        }
    }

    /// The live redirect target, if there is one and it is still connected.
    fn redirect_target(&self) -> Option<Arc<ClientInfo>> {
        self.redirect.lock().upgrade().filter(|t| !t.is_gone())
    }

    fn note_shard(&self, shard: usize) {
        let bit = 1u64 << shard;
        if self.shards.load(Ordering::Relaxed) & bit == 0 {
            self.shards.fetch_or(bit, Ordering::Relaxed);
        }
    }
}

/// Tracking state that only the client's own connection reads.
#[derive(Debug, Default)]
pub struct SessionTracking {
    /// A copy of the [`flag`] bits the connection itself set (all but
    /// [`flag::BROKEN_REDIRECT`]), so that a read asks its session, not an atomic, whether
    /// to remember its keys: 0 for a client that does not track.
    pub mode: u32,
    /// `CLIENT CACHING yes|no` was given and applies to the next command, or to the
    /// whole transaction when given before MULTI (Redis's `CLIENT_TRACKING_CACHING`).
    pub caching: bool,
    /// The client's BCAST prefixes, as a set in byte order (what TRACKINGINFO prints
    /// and the overlap checks walk).
    pub prefixes: BTreeSet<Vec<u8>>,
    /// The emptied [`Changes`] of the last command that recorded any, for the next one.
    pub spare: Option<Box<Changes>>,
}

/// Whether a read-only command's keys are remembered for a client in mode `flags`:
/// tracking on, not BCAST, and OPTIN/OPTOUT agreeing with `CLIENT CACHING`.
#[inline]
pub fn wants_keys(flags: u32, caching: bool) -> bool {
    if flags & flag::ON == 0 || flags & flag::BCAST != 0 {
        return false;
    }
    if flags & flag::OPTIN != 0 {
        return caching;
    }
    if flags & flag::OPTOUT != 0 {
        return !caching;
    }
    true
}

// ----- the per-shard table ------------------------------------------------------

/// The clients that read one key since it last changed.
#[derive(Debug)]
pub enum Readers {
    One(Arc<ClientInfo>),
    Few(Vec<Arc<ClientInfo>>),
    Many(HashMap<u64, Arc<ClientInfo>, foldhash::fast::FixedState>),
}

impl Readers {
    fn len(&self) -> usize {
        match self {
            Readers::One(_) => 1,
            Readers::Few(v) => v.len(),
            Readers::Many(m) => m.len(),
        }
    }

    /// Adds `client`; false if it was there already.
    fn insert(&mut self, client: &Arc<ClientInfo>) -> bool {
        match self {
            Readers::One(c) if c.id == client.id => false,
            Readers::One(c) => {
                *self = Readers::Few(vec![c.clone(), client.clone()]);
                true
            }
            Readers::Few(v) => {
                if v.iter().any(|c| c.id == client.id) {
                    return false;
                }
                if v.len() < FEW_READERS {
                    v.push(client.clone());
                } else {
                    let mut m: HashMap<u64, Arc<ClientInfo>, _> = v.drain(..).map(|c| (c.id, c)).collect();
                    m.insert(client.id, client.clone());
                    *self = Readers::Many(m);
                }
                true
            }
            Readers::Many(m) => m.insert(client.id, client.clone()).is_none(),
        }
    }

    /// Removes client `id`; returns whether it was a reader. May leave `Few` empty.
    fn remove(&mut self, id: u64) -> bool {
        match self {
            Readers::One(c) if c.id == id => {
                *self = Readers::Few(Vec::new());
                true
            }
            Readers::One(_) => false,
            Readers::Few(v) => {
                let before = v.len();
                v.retain(|c| c.id != id);
                v.len() != before
            }
            Readers::Many(m) => m.remove(&id).is_some(),
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = &Arc<ClientInfo>> + '_> {
        match self {
            Readers::One(c) => Box::new(std::iter::once(c)),
            Readers::Few(v) => Box::new(v.iter()),
            Readers::Many(m) => Box::new(m.values()),
        }
    }
}

/// One shard's slice of the tracking table: keys of this shard that tracking clients
/// read, each with its readers. Only touched under the shard's lock.
#[derive(Default)]
pub struct ShardTable {
    /// A dense dict, so that evicting a random key (the max-keys bound) is O(1).
    keys: Dict<CompactBytes, Readers>,
    /// (key, reader) pairs here, for INFO's `tracking_total_items`.
    items: usize,
}

impl ShardTable {
    /// Whether no key of this shard is tracked: the whole cost of tracking for a write
    /// when nobody tracks.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn items(&self) -> usize {
        self.items
    }

    /// The readers of `key`, if any (tests and assertions).
    pub fn readers(&self, key: &[u8]) -> Option<&Readers> {
        self.keys.get(key)
    }

    /// Checks the counts against the entries (tests).
    pub fn check_invariants(&self) {
        let items: usize = self.keys.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(items, self.items, "tracking table item count");
        assert!(self.keys.iter().all(|(_, r)| r.len() > 0), "tracking table holds a key without readers");
    }
}

/// A key taken out of the table because it changed, with the clients to tell.
#[derive(Debug)]
pub struct Invalidated {
    pub key: CompactBytes,
    pub readers: Readers,
}

/// What a command (or an expiry cycle, or an eviction) changed that tracking clients
/// must hear about. Filled under the shard locks, delivered before the locks go.
#[derive(Debug, Default)]
pub struct Changes {
    /// Default mode: keys that had readers.
    pub invalidated: Vec<Invalidated>,
    /// BCAST mode: every changed key (only while some client uses BCAST), with the id
    /// of the client whose command changed it (0 for expiry and eviction), for NOLOOP.
    pub broadcast: Vec<(CompactBytes, u64)>,
    /// Keys read that `DEBUG TRACKING-REGISTER-LATE` wants remembered only after the
    /// locks are released (the deliberately broken variant; empty otherwise).
    pub late: Vec<CompactBytes>,
}

/// [`Changes`], allocated on first use. Every command carries one in its effects, so
/// when nothing tracked changes (nobody tracks, or not these keys) it must cost one
/// `None`, not three empty vectors built, moved and dropped per command (measured:
/// that was ~300 instructions a request). A connection whose commands do record
/// changes (while a BCAST client exists, every write does) keeps the emptied box for
/// its next command ([`SessionTracking::spare`]) instead of allocating one each time.
#[derive(Debug, Default)]
pub struct Pending(Option<Box<Changes>>);

impl Pending {
    /// Starts with `spare`, an emptied box from an earlier command, if there is one.
    #[inline]
    pub fn reusing(spare: Option<Box<Changes>>) -> Pending {
        debug_assert!(spare.as_ref().is_none_or(|c| c.is_empty()), "a spare box must be empty");
        Pending(spare)
    }

    /// The changes, created empty if there were none yet.
    #[inline]
    pub fn changes(&mut self) -> &mut Changes {
        self.0.get_or_insert_with(Default::default)
    }

    /// The changes so far, if any, without taking them.
    #[inline]
    pub fn get_mut(&mut self) -> Option<&mut Changes> {
        self.0.as_deref_mut()
    }

    #[inline]
    pub fn take(&mut self) -> Option<Box<Changes>> {
        self.0.take()
    }

    /// The emptied box, to keep for the next command: dropped instead when a big
    /// command grew it, so that a connection does not hold that memory for life.
    #[inline]
    pub fn into_spare(&mut self) -> Option<Box<Changes>> {
        const KEEP: usize = 256;
        self.0.take().filter(|c| c.invalidated.capacity() <= KEEP && c.broadcast.capacity() <= KEEP)
    }

    /// Whether reads wait to be remembered after the locks go (the test switch).
    #[inline]
    pub fn has_late(&self) -> bool {
        self.0.as_ref().is_some_and(|c| !c.late.is_empty())
    }
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.invalidated.is_empty() && self.broadcast.is_empty() && self.late.is_empty()
    }
}

// ----- the server-wide part ------------------------------------------------------

/// Tracking state shared by all shards: counters and the BCAST prefix table.
#[derive(Default)]
pub struct Tracking {
    /// Clients with tracking on (INFO `tracking_clients`).
    clients_on: AtomicUsize,
    /// Clients in BCAST mode. While it is 0 a write does no prefix matching at all.
    bcast_clients: AtomicUsize,
    /// Keys in all shard tables (INFO `tracking_total_keys`, the max-keys bound).
    keys: AtomicUsize,
    /// BCAST prefix → the clients subscribed to it. Read by every batch that changed
    /// keys while a BCAST client exists, written by CLIENT TRACKING: a read-write lock.
    /// A `BTreeMap`, so that a client with several prefixes hears about them in byte
    /// order, as Redis's radix tree gives it.
    prefixes: RwLock<BTreeMap<Vec<u8>, Vec<Arc<ClientInfo>>>>,
    /// A test switch (`DEBUG TRACKING-DROP-INVALIDATIONS n`): drop the next `n`
    /// default-mode invalidations, to show that the tests catch a lost one.
    drop_next: AtomicU64,
    /// A test switch (`DEBUG TRACKING-REGISTER-LATE 1`): remember reads only after the
    /// command has released its shard locks, the race this design exists to avoid, to
    /// show that the concurrency test catches it.
    register_late: AtomicBool,
}

/// INFO's tracking fields.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrackingStats {
    pub clients: usize,
    pub keys: usize,
    pub prefixes: usize,
}

impl Tracking {
    /// Whether any client is in BCAST mode, i.e. whether writes must record the keys
    /// they change. One relaxed load.
    #[inline]
    pub fn bcast_active(&self) -> bool {
        self.bcast_clients.load(Ordering::Relaxed) > 0
    }

    pub fn stats(&self) -> TrackingStats {
        TrackingStats {
            clients: self.clients_on.load(Ordering::Relaxed),
            keys: self.keys.load(Ordering::Relaxed),
            prefixes: self.prefixes.read().len(),
        }
    }

    /// Whether the table holds more keys than `max` (0: unlimited).
    pub fn over_limit(&self, max: u64) -> bool {
        max != 0 && self.keys.load(Ordering::Relaxed) as u64 > max
    }

    /// DEBUG TRACKING-DROP-INVALIDATIONS: the next `n` invalidations are dropped.
    pub fn drop_next_invalidations(&self, n: u64) {
        self.drop_next.store(n, Ordering::Relaxed);
    }

    /// DEBUG TRACKING-REGISTER-LATE: see [`remember_late`].
    pub fn set_register_late(&self, on: bool) {
        self.register_late.store(on, Ordering::Relaxed);
    }

    pub fn register_late(&self) -> bool {
        self.register_late.load(Ordering::Relaxed)
    }

    fn should_drop(&self) -> bool {
        self.drop_next.load(Ordering::Relaxed) > 0
            && self.drop_next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// Remembers that `client` read `key`, whose shard is `shard` (its lock held).
    pub fn remember(&self, shard: usize, table: &mut ShardTable, key: &[u8], client: &Arc<ClientInfo>) {
        match table.keys.get_mut(key) {
            Some(readers) => {
                if readers.insert(client) {
                    table.items += 1;
                }
            }
            None => {
                table.keys.insert(CompactBytes::new(key), Readers::One(client.clone()));
                table.items += 1;
                self.keys.fetch_add(1, Ordering::Relaxed);
            }
        }
        client.tracking.note_shard(shard);
    }

    /// Takes `key` out of the table because it changed; its readers are to be told.
    pub fn take(&self, table: &mut ShardTable, key: &[u8]) -> Option<Readers> {
        let pos = table.keys.find(key)?;
        let ((_, readers), _) = table.keys.swap_remove_index(pos);
        self.forget_entry(table, &readers);
        Some(readers)
    }

    /// Takes a random key out of the table (the max-keys bound).
    fn take_random(&self, table: &mut ShardTable, rand: u64) -> Option<Invalidated> {
        if table.keys.is_empty() {
            return None;
        }
        let pos = (rand % table.keys.len() as u64) as usize;
        let ((key, readers), _) = table.keys.swap_remove_index(pos);
        self.forget_entry(table, &readers);
        Some(Invalidated { key, readers })
    }

    fn forget_entry(&self, table: &mut ShardTable, readers: &Readers) {
        debug_assert!(table.items >= readers.len());
        table.items -= readers.len();
        self.keys.fetch_sub(1, Ordering::Relaxed);
    }

    /// Empties a shard's table (FLUSHDB/FLUSHALL, which forget everything, as Redis does).
    pub fn clear(&self, table: &mut ShardTable) {
        let keys = table.keys.len();
        table.keys.clear();
        table.items = 0;
        self.keys.fetch_sub(keys, Ordering::Relaxed);
    }

    /// Removes client `id` from every entry of a shard's table (a disconnect).
    fn forget_client(&self, table: &mut ShardTable, id: u64) {
        let mut pos = table.keys.len();
        // Downwards: a removal moves the last entry (already visited) into the hole.
        while pos > 0 {
            pos -= 1;
            let (_, readers) = table.keys.at_mut(pos);
            if !readers.remove(id) {
                continue;
            }
            table.items -= 1;
            if readers.len() == 0 {
                table.keys.swap_remove_index(pos);
                self.keys.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

// ----- CLIENT TRACKING: parsing and validation ------------------------------------

/// A parsed `CLIENT TRACKING on|off [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN]
/// [OPTOUT] [NOLOOP]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackingRequest {
    pub on: bool,
    /// The REDIRECT client id; 0 for none (a valid id is never 0).
    pub redirect: u64,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    /// In the order given, repeats included (Redis checks them for overlaps as given).
    pub prefixes: Vec<Vec<u8>>,
}

/// Why CLIENT TRACKING was refused, with Redis 7.0's exact messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingError {
    Syntax,
    NotInteger,
    RedirectTwice,
    NoSuchRedirect,
    PrefixWithoutBcast,
    SwitchBcast,
    OptWithBcast,
    OptinAndOptout,
    SwitchOpt,
    /// A new prefix and an existing one of this client are prefixes of each other.
    OverlapsExisting {
        prefix: Vec<u8>,
        existing: Vec<u8>,
    },
    /// Two prefixes given in the same command are prefixes of each other.
    OverlapsGiven {
        prefix: Vec<u8>,
        other: Vec<u8>,
    },
}

impl TrackingError {
    /// The error reply, code included. Prefixes are printed as Redis's `%s` prints
    /// them: the bytes up to the first NUL.
    pub fn message(&self) -> Vec<u8> {
        let fixed = match self {
            TrackingError::Syntax => "ERR syntax error",
            TrackingError::NotInteger => "ERR value is not an integer or out of range",
            TrackingError::RedirectTwice => "ERR A client can only redirect to a single other client",
            TrackingError::NoSuchRedirect => "ERR The client ID you want redirect to does not exist",
            TrackingError::PrefixWithoutBcast => "ERR PREFIX option requires BCAST mode to be enabled",
            TrackingError::SwitchBcast => {
                "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."
            }
            TrackingError::OptWithBcast => "ERR OPTIN and OPTOUT are not compatible with BCAST",
            TrackingError::OptinAndOptout => "ERR You can't specify both OPTIN mode and OPTOUT mode",
            TrackingError::SwitchOpt => {
                "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode."
            }
            TrackingError::OverlapsExisting { prefix, existing } => {
                return overlap_message(prefix, "an existing prefix", existing);
            }
            TrackingError::OverlapsGiven { prefix, other } => {
                return overlap_message(prefix, "another provided prefix", other);
            }
        };
        fixed.as_bytes().to_vec()
    }
}

impl std::fmt::Display for TrackingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.message()))
    }
}

impl std::error::Error for TrackingError {}

fn overlap_message(prefix: &[u8], what: &str, other: &[u8]) -> Vec<u8> {
    let mut m = b"ERR Prefix '".to_vec();
    m.extend_from_slice(c_string(prefix));
    m.extend_from_slice(format!("' overlaps with {what} '").as_bytes());
    m.extend_from_slice(c_string(other));
    m.extend_from_slice(b"'. Prefixes for a single client must not overlap.");
    m
}

/// The bytes a C `%s` prints: up to the first NUL.
fn c_string(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// Parses the arguments after `CLIENT TRACKING` (`on|off` first), in Redis's order:
/// the options left to right (a REDIRECT is checked as it is met, so a missing client
/// is reported before a later syntax error), then `on|off`. `client_exists` answers
/// whether a client id is connected. Never panics, whatever the arguments.
pub fn parse_tracking(args: &[&[u8]], client_exists: impl Fn(u64) -> bool) -> Result<TrackingRequest, TrackingError> {
    let Some((&status, options)) = args.split_first() else {
        return Err(TrackingError::Syntax);
    };
    let mut req = TrackingRequest::default();
    let mut j = 0;
    while j < options.len() {
        let opt = options[j];
        let more = j + 1 < options.len();
        if opt.eq_ignore_ascii_case(b"redirect") && more {
            j += 1;
            if req.redirect != 0 {
                return Err(TrackingError::RedirectTwice);
            }
            let id = crate::resp::parse_i64_strict(options[j]).ok_or(TrackingError::NotInteger)?;
            match u64::try_from(id) {
                Ok(id) if id != 0 && client_exists(id) => req.redirect = id,
                _ => return Err(TrackingError::NoSuchRedirect),
            }
        } else if opt.eq_ignore_ascii_case(b"bcast") {
            req.bcast = true;
        } else if opt.eq_ignore_ascii_case(b"optin") {
            req.optin = true;
        } else if opt.eq_ignore_ascii_case(b"optout") {
            req.optout = true;
        } else if opt.eq_ignore_ascii_case(b"noloop") {
            req.noloop = true;
        } else if opt.eq_ignore_ascii_case(b"prefix") && more {
            j += 1;
            req.prefixes.push(options[j].to_vec());
        } else {
            return Err(TrackingError::Syntax);
        }
        j += 1;
    }
    if status.eq_ignore_ascii_case(b"on") {
        req.on = true;
    } else if !status.eq_ignore_ascii_case(b"off") {
        return Err(TrackingError::Syntax);
    }
    Ok(req)
}

/// Redis's `stringCheckPrefix`: whether one of `a`, `b` is a prefix of the other.
fn overlap(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Checks a `CLIENT TRACKING on` request against itself and the client's current mode
/// (`current` flags and BCAST prefixes), in Redis 7.0's order.
///
/// One deliberate difference: Redis 7.0 reports two given prefixes that overlap and
/// then, when the first of them is not the first prefix given, enables tracking anyway
/// and also replies `+OK` (two replies to one command). minikv refuses the command
/// with the error alone.
pub fn check_enable(req: &TrackingRequest, current: u32, existing: &BTreeSet<Vec<u8>>) -> Result<(), TrackingError> {
    if !req.bcast && !req.prefixes.is_empty() {
        return Err(TrackingError::PrefixWithoutBcast);
    }
    if current & flag::ON != 0 && (current & flag::BCAST != 0) != req.bcast {
        return Err(TrackingError::SwitchBcast);
    }
    if req.bcast && (req.optin || req.optout) {
        return Err(TrackingError::OptWithBcast);
    }
    if req.optin && req.optout {
        return Err(TrackingError::OptinAndOptout);
    }
    if (req.optin && current & flag::OPTOUT != 0) || (req.optout && current & flag::OPTIN != 0) {
        return Err(TrackingError::SwitchOpt);
    }
    if req.bcast {
        for (i, prefix) in req.prefixes.iter().enumerate() {
            if let Some(existing) = existing.iter().find(|e| overlap(e, prefix)) {
                return Err(TrackingError::OverlapsExisting { prefix: prefix.clone(), existing: existing.clone() });
            }
            if let Some(other) = req.prefixes[i + 1..].iter().find(|o| overlap(prefix, o)) {
                return Err(TrackingError::OverlapsGiven { prefix: prefix.clone(), other: other.clone() });
            }
        }
    }
    Ok(())
}

// ----- turning tracking on and off ----------------------------------------------

/// Turns tracking on with a request [`check_enable`] accepted (Redis's
/// `enableTracking`). `target` is the REDIRECT client, looked up by the caller.
pub fn enable(server: &Server, session: &mut Session, req: &TrackingRequest, target: Option<Arc<ClientInfo>>) {
    debug_assert!(req.on);
    debug_assert_eq!(req.redirect != 0, target.is_some());
    let tracking = &server.keyspace.tracking;
    let info = session.info.clone();
    let state = &info.tracking;
    let old = state.flags();
    if old & flag::ON == 0 {
        tracking.clients_on.fetch_add(1, Ordering::Relaxed);
    }
    // The redirect first: a writer that sees the new flags must find the new target.
    *state.redirect.lock() = target.as_ref().map_or_else(Weak::new, Arc::downgrade);
    state.redirect_id.store(req.redirect, Ordering::Release);
    let mut flags = flag::ON;
    if req.bcast {
        flags |= flag::BCAST;
        if old & flag::BCAST == 0 {
            tracking.bcast_clients.fetch_add(1, Ordering::Relaxed);
        }
        let mut table = tracking.prefixes.write();
        let empty: [Vec<u8>; 1] = [Vec::new()];
        let wanted = if req.prefixes.is_empty() { &empty[..] } else { &req.prefixes[..] };
        for prefix in wanted {
            if session.tracking.prefixes.insert(prefix.clone()) {
                table.entry(prefix.clone()).or_default().push(info.clone());
            }
        }
    }
    if req.optin {
        flags |= flag::OPTIN;
    }
    if req.optout {
        flags |= flag::OPTOUT;
    }
    if req.noloop {
        flags |= flag::NOLOOP;
    }
    state.flags.store(flags, Ordering::Release);
    session.tracking.mode = flags;
}

/// Turns tracking off (Redis's `disableTracking`): leaves the BCAST prefixes, clears
/// the mode. The client's table entries stay and are skipped, as in Redis.
pub fn disable(server: &Server, session: &mut Session) {
    let tracking = &server.keyspace.tracking;
    let state = &session.info.tracking;
    let old = state.flags();
    if old & flag::BCAST != 0 {
        let mut table = tracking.prefixes.write();
        for prefix in std::mem::take(&mut session.tracking.prefixes) {
            if let Some(clients) = table.get_mut(&prefix) {
                clients.retain(|c| c.id != session.id);
                if clients.is_empty() {
                    table.remove(&prefix);
                }
            }
        }
        tracking.bcast_clients.fetch_sub(1, Ordering::Relaxed);
    }
    debug_assert!(session.tracking.prefixes.is_empty() || old & flag::BCAST != 0);
    if old & flag::ON != 0 {
        tracking.clients_on.fetch_sub(1, Ordering::Relaxed);
        state.flags.store(0, Ordering::Release);
        session.tracking.caching = false;
    }
    session.tracking.mode = 0;
}

/// A connection is ending: tracking off, and its entries swept out of every shard it
/// registered keys in, so that the table never holds a client that is gone.
pub fn forget_client(server: &Server, session: &mut Session) {
    disable(server, session);
    let shards = session.info.tracking.shards.swap(0, Ordering::Relaxed);
    if shards == 0 {
        return;
    }
    let tracking = &server.keyspace.tracking;
    for idx in 0..SHARDS {
        if shards & (1 << idx) != 0 {
            let mut shard = server.keyspace.lock_shard(idx);
            tracking.forget_client(&mut shard.tracking, session.id);
        }
    }
}

// ----- sending invalidations ------------------------------------------------------

/// The output buffer limits a delivery applies: the pub/sub class for a subscribed
/// receiver, the normal class otherwise, as Redis classifies clients.
struct Sending {
    pubsub: OutputLimit,
    normal: OutputLimit,
    now_ms: u64,
    /// Receivers over their limit, disconnected once the delivery is done.
    too_slow: Vec<Arc<ClientInfo>>,
}

impl Sending {
    fn new(server: &Server) -> Sending {
        let (pubsub, normal) = server.config.with_settings(|s| (s.pubsub_output_limit, s.normal_output_limit));
        Sending { pubsub, normal, now_ms: crate::server::unix_ms(), too_slow: Vec::new() }
    }

    fn queue(&mut self, target: &Arc<ClientInfo>, push: Push) {
        let limit = if target.is_subscribed() { self.pubsub } else { self.normal };
        if target.outbox.send(push, Some(limit), self.now_ms) == Delivery::OverLimit {
            self.too_slow.push(target.clone());
        }
    }

    /// Redis's `sendTrackingMessage`: `keys` (encoded RESP) to the tracking client, or
    /// to its redirect target; a gone target marks the redirect broken and, in RESP3,
    /// tells the tracking client so.
    fn send(&mut self, tracker: &Arc<ClientInfo>, keys: &Arc<[u8]>) {
        let redirect = tracker.tracking.redirect_id.load(Ordering::Acquire);
        if redirect == 0 {
            if tracker.resp() == 3 {
                self.queue(tracker, Push::Invalidate { keys: keys.clone(), redirected: false });
            }
            // RESP2 without a redirect: nothing can carry it (the keys stay forgotten).
            return;
        }
        match tracker.tracking.redirect_target() {
            Some(target) => self.queue(&target, Push::Invalidate { keys: keys.clone(), redirected: true }),
            None => {
                tracker.tracking.flags.fetch_or(flag::BROKEN_REDIRECT, Ordering::AcqRel);
                if tracker.resp() == 3 {
                    self.queue(tracker, Push::RedirectBroken { id: redirect });
                }
            }
        }
    }

    fn finish(self, server: &Server) {
        if self.too_slow.is_empty() {
            return;
        }
        server.stats.output_limit_disconnections.fetch_add(self.too_slow.len() as u64, Ordering::Relaxed);
        for c in self.too_slow {
            tracing::warn!(client = c.id, pending = c.outbox.queued(), "closing client over its output buffer limit");
            c.kill();
        }
    }
}

/// Sends the default-mode invalidations in `invalidated` and empties it. `by` is the
/// client whose command changed the keys (NOLOOP leaves it out), 0 for none.
pub fn deliver(server: &Server, invalidated: &mut Vec<Invalidated>, by: u64) {
    if invalidated.is_empty() {
        return;
    }
    let tracking = &server.keyspace.tracking;
    let mut sending: Option<Sending> = None;
    for inv in invalidated.drain(..) {
        let mut payload: Option<Arc<[u8]>> = None;
        for reader in inv.readers.iter() {
            let flags = reader.tracking.flags();
            // Off now, or switched to BCAST since the read: skipped, as in Redis.
            if flags & flag::ON == 0 || flags & flag::BCAST != 0 || reader.is_gone() {
                continue;
            }
            if flags & flag::NOLOOP != 0 && reader.id == by {
                continue;
            }
            if tracking.should_drop() {
                continue;
            }
            let keys = payload.get_or_insert_with(|| crate::outbox::one_key(&inv.key));
            sending.get_or_insert_with(|| Sending::new(server)).send(reader, keys);
        }
    }
    if let Some(sending) = sending {
        sending.finish(server);
    }
}

/// Sends BCAST clients the keys changed under their prefixes and empties `changed`
/// (`(key, id of the client that changed it)`, in change order). One push per client
/// and prefix, keys sorted and unique; with NOLOOP a client does not hear about keys
/// it was the last to change. Redis's `trackingBroadcastInvalidationMessages`.
pub fn broadcast(server: &Server, changed: &mut Vec<(CompactBytes, u64)>) {
    if changed.is_empty() {
        return;
    }
    // Created at the first push: most batches match no prefix and send nothing.
    let mut sending: Option<Sending> = None;
    {
        let table = server.keyspace.tracking.prefixes.read();
        for (prefix, clients) in table.iter() {
            // Later changes of a key overwrite earlier ones: the last modifier counts.
            let mut keys: BTreeMap<&[u8], u64> = BTreeMap::new();
            for (key, by) in changed.iter() {
                if key.as_slice().starts_with(prefix) {
                    keys.insert(key.as_slice(), *by);
                }
            }
            if keys.is_empty() {
                continue;
            }
            let sending = sending.get_or_insert_with(|| Sending::new(server));
            let mut everyone: Option<Arc<[u8]>> = None;
            for client in clients {
                let flags = client.tracking.flags();
                if flags & flag::BCAST == 0 || client.is_gone() {
                    continue;
                }
                if flags & flag::NOLOOP != 0 {
                    let others: Vec<&[u8]> = keys.iter().filter(|(_, by)| **by != client.id).map(|(k, _)| *k).collect();
                    if !others.is_empty() {
                        sending.send(client, &key_array(others.iter().copied(), others.len()));
                    }
                    continue;
                }
                let payload = everyone.get_or_insert_with(|| key_array(keys.keys().copied(), keys.len()));
                sending.send(client, payload);
            }
        }
    }
    changed.clear();
    if let Some(sending) = sending {
        sending.finish(server);
    }
}

/// A RESP array of key names.
fn key_array<'k>(keys: impl Iterator<Item = &'k [u8]>, n: usize) -> Arc<[u8]> {
    let mut out = Vec::new();
    let mut r = Reply::new(&mut out, Protocol::Resp2);
    r.array(n);
    let mut written = 0;
    for k in keys {
        r.bulk(k);
        written += 1;
    }
    debug_assert_eq!(written, n);
    out.into()
}

/// After FLUSHDB/FLUSHALL (the flush holds every shard lock and has emptied each
/// shard's table with [`Tracking::clear`]): tells every tracking client, BCAST ones
/// included, that every key may have changed, with a null (Redis's
/// `trackingInvalidateKeysOnFlush`).
pub fn flushed(server: &Server) {
    if server.keyspace.tracking.clients_on.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut sending = Sending::new(server);
    let nulls: [Arc<[u8]>; 2] = [NULL_RESP2.into(), NULL_RESP3.into()];
    for client in server.clients.all() {
        if client.tracking.is_on() && !client.is_gone() {
            // The null is in the tracking client's protocol, wherever it is sent.
            let null = &nulls[(client.resp() == 3) as usize];
            sending.send(&client, null);
        }
    }
    sending.finish(server);
}

/// The broken variant behind `DEBUG TRACKING-REGISTER-LATE`: remembers keys a command
/// read after it released its locks, so a write can slip in between the read and the
/// registration and go unnoticed. Never used unless a test asks for it.
pub fn remember_late(server: &Server, client: &Arc<ClientInfo>, keys: Vec<CompactBytes>) {
    let tracking = &server.keyspace.tracking;
    for key in keys {
        // Widen the window the way a busy machine would.
        std::thread::yield_now();
        let shard = crate::keyspace::shard_of(crate::keyspace::hash_bytes(&key));
        tracking.remember(shard, &mut server.keyspace.lock_shard(shard).tracking, &key, client);
    }
}

/// Keeps the table within `tracking-table-max-keys`: evicts random keys, telling their
/// readers as if the keys had changed (they did not, but the readers must learn that
/// nobody watches them any more). Must be called with no shard lock held.
pub fn enforce_limit(server: &Server) {
    let max = server.config.live.tracking_table_max_keys.load(Ordering::Relaxed);
    let tracking = &server.keyspace.tracking;
    let mut evicted = 0;
    while tracking.over_limit(max) && evicted < MAX_EVICTIONS_PER_CALL {
        let start = fastrand::usize(..SHARDS);
        let mut found = false;
        for i in 0..SHARDS {
            let idx = (start + i) % SHARDS;
            let mut shard = server.keyspace.lock_shard(idx);
            if let Some(inv) = tracking.take_random(&mut shard.tracking, fastrand::u64(..)) {
                deliver(server, &mut vec![inv], 0);
                found = true;
                break;
            }
        }
        if !found {
            // The count says over, the shards say empty: concurrent removals raced us.
            break;
        }
        evicted += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(words: &[&str]) -> Result<TrackingRequest, TrackingError> {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        parse_tracking(&args, |id| id == 5 || id == 6)
    }

    fn check(words: &[&str], current: u32, existing: &[&str]) -> Result<TrackingRequest, TrackingError> {
        let req = parse(words)?;
        let existing: BTreeSet<Vec<u8>> = existing.iter().map(|e| e.as_bytes().to_vec()).collect();
        if req.on {
            check_enable(&req, current, &existing)?;
        }
        Ok(req)
    }

    fn msg(e: TrackingError) -> String {
        e.to_string()
    }

    #[test]
    fn options_parse_like_redis() {
        let req = parse(&["on", "REDIRECT", "5", "bcast", "PREFIX", "a", "prefix", "b", "NOLOOP"]).unwrap();
        assert_eq!(
            req,
            TrackingRequest {
                on: true,
                redirect: 5,
                bcast: true,
                noloop: true,
                prefixes: vec![b"a".to_vec(), b"b".to_vec()],
                ..Default::default()
            }
        );
        assert!(!parse(&["OFF", "optin", "optout"]).unwrap().on, "OFF does not validate the modes");
        assert_eq!(parse(&["maybe"]), Err(TrackingError::Syntax));
        assert_eq!(parse(&["on", "REDIRECT"]), Err(TrackingError::Syntax), "REDIRECT without a value");
        assert_eq!(parse(&["on", "PREFIX"]), Err(TrackingError::Syntax));
        assert_eq!(parse(&["on", "bogus"]), Err(TrackingError::Syntax));
        assert_eq!(parse(&["on", "REDIRECT", "abc"]), Err(TrackingError::NotInteger));
        for missing in ["999", "0", "-1"] {
            assert_eq!(parse(&["on", "REDIRECT", missing]), Err(TrackingError::NoSuchRedirect), "{missing}");
        }
        assert_eq!(parse(&["on", "REDIRECT", "5", "REDIRECT", "6"]), Err(TrackingError::RedirectTwice));
        // Options are checked left to right, before on/off.
        assert_eq!(parse(&["on", "REDIRECT", "999", "bogus"]), Err(TrackingError::NoSuchRedirect));
        assert_eq!(parse(&["on", "bogus", "REDIRECT", "999"]), Err(TrackingError::Syntax));
        assert_eq!(parse(&["off", "REDIRECT", "999"]), Err(TrackingError::NoSuchRedirect));
        assert_eq!(parse(&[]), Err(TrackingError::Syntax));
    }

    #[test]
    fn bad_combinations_get_redis_messages() {
        let on = flag::ON;
        assert_eq!(
            msg(check(&["on", "PREFIX", "a"], 0, &[]).unwrap_err()),
            "ERR PREFIX option requires BCAST mode to be enabled"
        );
        assert_eq!(
            msg(check(&["on", "OPTIN", "OPTOUT"], 0, &[]).unwrap_err()),
            "ERR You can't specify both OPTIN mode and OPTOUT mode"
        );
        assert_eq!(check(&["on", "BCAST", "OPTIN"], 0, &[]), Err(TrackingError::OptWithBcast));
        assert_eq!(check(&["on", "BCAST"], on, &[]), Err(TrackingError::SwitchBcast));
        assert_eq!(check(&["on"], on | flag::BCAST, &[""]), Err(TrackingError::SwitchBcast));
        assert_eq!(check(&["on", "OPTOUT"], on | flag::OPTIN, &[]), Err(TrackingError::SwitchOpt));
        assert!(check(&["on", "NOLOOP"], on | flag::OPTIN, &[]).is_ok(), "dropping OPTIN is allowed");
        assert_eq!(
            msg(check(&["on", "BCAST", "PREFIX", "ab", "PREFIX", "a"], 0, &[]).unwrap_err()),
            "ERR Prefix 'ab' overlaps with another provided prefix 'a'. Prefixes for a single client must not overlap."
        );
        assert_eq!(
            msg(check(&["on", "BCAST", "PREFIX", "ac"], on | flag::BCAST, &["a", "b"]).unwrap_err()),
            "ERR Prefix 'ac' overlaps with an existing prefix 'a'. Prefixes for a single client must not overlap."
        );
        assert_eq!(
            msg(check(&["on", "BCAST", "PREFIX", "x"], on | flag::BCAST, &[""]).unwrap_err()),
            "ERR Prefix 'x' overlaps with an existing prefix ''. Prefixes for a single client must not overlap."
        );
        // Adding BCAST without prefixes to a BCAST client adds "" unchecked, as Redis.
        assert!(check(&["on", "BCAST"], on | flag::BCAST, &["a"]).is_ok());
        assert!(check(&["on", "BCAST", "PREFIX", "a", "PREFIX", "b"], 0, &[]).is_ok());
    }

    #[test]
    fn error_prefixes_print_as_c_strings() {
        let e = TrackingError::OverlapsGiven { prefix: b"a\0b".to_vec(), other: b"a\xff".to_vec() };
        assert_eq!(
            e.message(),
            b"ERR Prefix 'a' overlaps with another provided prefix 'a\xff'. Prefixes for a single client must not overlap."
                .to_vec()
        );
    }

    #[test]
    fn caching_rules_choose_what_is_remembered() {
        let on = flag::ON;
        assert!(wants_keys(on, false));
        assert!(!wants_keys(0, false));
        assert!(!wants_keys(on | flag::BCAST, false));
        assert!(!wants_keys(on | flag::OPTIN, false));
        assert!(wants_keys(on | flag::OPTIN, true));
        assert!(wants_keys(on | flag::OPTOUT, false));
        assert!(!wants_keys(on | flag::OPTOUT, true));
    }

    /// `n` registered clients (ids 1..=n) of a registry of their own.
    fn clients(n: usize) -> Vec<Arc<ClientInfo>> {
        let registry = crate::clients::Clients::new();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        (0..n).map(|_| registry.register(addr, addr, -1)).collect()
    }

    #[test]
    fn table_counts_follow_reads_changes_and_disconnects() {
        let tracking = Tracking::default();
        let mut table = ShardTable::default();
        let both = clients(2);
        let (a, b) = (&both[0], &both[1]);
        tracking.remember(3, &mut table, b"k", a);
        tracking.remember(3, &mut table, b"k", a);
        tracking.remember(3, &mut table, b"k", b);
        tracking.remember(3, &mut table, b"j", a);
        table.check_invariants();
        assert_eq!((table.len(), table.items(), tracking.stats().keys), (2, 3, 2));
        assert_eq!(a.tracking.shards.load(Ordering::Relaxed), 1 << 3);
        let readers = tracking.take(&mut table, b"k").unwrap();
        assert_eq!(readers.len(), 2);
        assert!(tracking.take(&mut table, b"k").is_none(), "a change forgets the key until it is read again");
        tracking.forget_client(&mut table, a.id);
        table.check_invariants();
        assert_eq!((table.len(), table.items(), tracking.stats().keys), (0, 0, 0));
    }

    #[test]
    fn many_readers_of_one_key_stay_unique() {
        let tracking = Tracking::default();
        let mut table = ShardTable::default();
        let clients = clients(40);
        for round in 0..2 {
            for c in &clients {
                tracking.remember(0, &mut table, b"hot", c);
            }
            assert_eq!(table.items(), clients.len(), "round {round}");
        }
        assert!(matches!(table.readers(b"hot"), Some(Readers::Many(_))));
        tracking.forget_client(&mut table, clients[7].id);
        assert_eq!(table.items(), clients.len() - 1);
        table.check_invariants();
    }

    fn arg_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"on".to_vec()),
            Just(b"OFF".to_vec()),
            Just(b"REDIRECT".to_vec()),
            Just(b"bcast".to_vec()),
            Just(b"PREFIX".to_vec()),
            Just(b"optin".to_vec()),
            Just(b"OPTOUT".to_vec()),
            Just(b"noloop".to_vec()),
            Just(b"5".to_vec()),
            Just(b"-9223372036854775808".to_vec()),
            Just(b"99999999999999999999".to_vec()),
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ]
    }

    proptest! {
        /// Whatever the arguments, parsing and validation answer Ok or a typed error,
        /// never panic, and an accepted request is consistent.
        #[test]
        fn any_arguments_parse_without_panic(
            args in proptest::collection::vec(arg_strategy(), 0..10),
            current in 0u32..64,
            existing in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..3), 0..4),
        ) {
            let slices: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            if let Ok(req) = parse_tracking(&slices, |id| id == 5) {
                prop_assert!(req.redirect == 0 || req.redirect == 5);
                if req.on && check_enable(&req, current, &existing).is_ok() {
                    prop_assert!(!(req.optin && req.optout));
                    prop_assert!(req.bcast || req.prefixes.is_empty());
                    for (i, p) in req.prefixes.iter().enumerate() {
                        prop_assert!(req.prefixes[i + 1..].iter().all(|q| !overlap(p, q)));
                        prop_assert!(existing.iter().all(|e| !overlap(e, p)));
                    }
                }
            }
        }
    }
}
