//! Generic key commands: existence and type, deletion, TTLs, renaming and moving,
//! whole-keyspace walks (KEYS, SCAN, RANDOMKEY, DBSIZE), FLUSHDB/FLUSHALL, SWAPDB and
//! OBJECT.
//!
//! These commands do not care what a key holds; they work on the keyspace's
//! bookkeeping: deadlines, the access clock, which database a key lives in. Three
//! things need more care than in a single-type family:
//!
//! - **Time.** EXPIRE and friends turn relative times into absolute Unix milliseconds
//!   and log `PEXPIREAT key ms`, so replaying the AOF later does not extend a TTL. A
//!   deadline already in the past deletes the key and logs `DEL` (Redis's
//!   `checkAlreadyExpired`), except while the AOF is being replayed.
//! - **SCAN's cursor.** The keyspace is split into shards and each shard's table is
//!   walked from its last position downwards (see `keyspace/dict.rs` for why that gives
//!   Redis's guarantee). A key never changes shard, so the cursor only needs to name a
//!   shard and a position inside it: see [`ScanCursor`].
//! - **Walks hold one shard at a time.** KEYS, SCAN, RANDOMKEY and DBSIZE lock each
//!   shard only while they look at it, so a big keyspace never stops the server. An
//!   expired key they delete is logged to the AOF right there, under that shard's lock
//!   (see [`WalkExpiry`]).
//!
//! Left out: Redis's lazy-free thread for UNLINK (it frees inline, like DEL; only
//! `FLUSHDB/FLUSHALL ASYNC` hand the old tables to a helper thread), the
//! `lazyfree-lazy-*` settings, keyspace notifications, and cluster-mode restrictions
//! on MOVE/COPY.

use std::sync::Arc;

use super::{cmd, container, flag, int_arg, is, range, Command, Ctx, KeySpec, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::aof::Aof;
use crate::keyspace::{dict, hash_bytes, shard_of, CompactBytes, Loc, Shard, Table, SHARDS};
use crate::resp::Args;
use crate::tracking::{Pending, Tracking};

const W: u32 = flag::WRITE;
const R: u32 = flag::READONLY;
const F: u32 = flag::FAST;
const M: u32 = flag::DENYOOM;

#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("del", -2, W, range(1, -1, 1), del, "generic", "Delete a key", "1.0.0"),
    cmd("unlink", -2, W | F, range(1, -1, 1), del, "generic", "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.", "4.0.0"),
    cmd("exists", -2, R | F, range(1, -1, 1), exists, "generic", "Determine if a key exists", "1.0.0"),
    cmd("type", 2, R | F, range(1, 1, 1), type_, "generic", "Determine the type stored at key", "1.0.0"),
    cmd("expire", -3, W | F, range(1, 1, 1), expire, "generic", "Set a key's time to live in seconds", "1.0.0"),
    cmd("pexpire", -3, W | F, range(1, 1, 1), pexpire, "generic", "Set a key's time to live in milliseconds", "2.6.0"),
    cmd("expireat", -3, W | F, range(1, 1, 1), expireat, "generic", "Set the expiration for a key as a UNIX timestamp", "1.2.0"),
    cmd("pexpireat", -3, W | F, range(1, 1, 1), pexpireat, "generic", "Set the expiration for a key as a UNIX timestamp specified in milliseconds", "2.6.0"),
    cmd("ttl", 2, R | F, range(1, 1, 1), ttl, "generic", "Get the time to live for a key in seconds", "1.0.0"),
    cmd("pttl", 2, R | F, range(1, 1, 1), pttl, "generic", "Get the time to live for a key in milliseconds", "2.6.0"),
    cmd("expiretime", 2, R | F, range(1, 1, 1), expiretime, "generic", "Get the expiration Unix timestamp for a key", "7.0.0"),
    cmd("pexpiretime", 2, R | F, range(1, 1, 1), pexpiretime, "generic", "Get the expiration Unix timestamp for a key in milliseconds", "7.0.0"),
    cmd("persist", 2, W | F, range(1, 1, 1), persist, "generic", "Remove the expiration from a key", "2.2.0"),
    cmd("keys", 2, R, KeySpec::Walk, keys, "generic", "Find all keys matching the given pattern", "1.0.0"),
    cmd("scan", -2, R, KeySpec::Walk, scan, "generic", "Incrementally iterate the keys space", "2.8.0"),
    cmd("rename", 3, W, range(1, 2, 1), rename, "generic", "Rename a key", "1.0.0"),
    cmd("renamenx", 3, W | F, range(1, 2, 1), renamenx, "generic", "Rename a key, only if the new key does not exist", "1.0.0"),
    cmd("randomkey", 1, R, KeySpec::Walk, randomkey, "generic", "Return a random key from the keyspace", "1.0.0"),
    cmd("dbsize", 1, R | F, KeySpec::Walk, dbsize, "server", "Return the number of keys in the selected database", "1.0.0"),
    cmd("flushdb", -1, W, KeySpec::All, flushdb, "server", "Remove all keys from the current database", "1.0.0"),
    cmd("flushall", -1, W, KeySpec::All, flushall, "server", "Remove all keys from all databases", "1.0.0"),
    cmd("swapdb", 3, W | F, KeySpec::All, swapdb, "server", "Swaps two Redis databases", "4.0.0"),
    // MOVE names one key: its shard is the same in every database (shards go by hash).
    cmd("move", 3, W | F, range(1, 1, 1), move_, "generic", "Move a key to another database", "1.0.0"),
    cmd("copy", -3, W | M, range(1, 2, 1), copy, "generic", "Copy a key", "6.2.0"),
    cmd("touch", -2, R | F, range(1, -1, 1), touch, "generic", "Alters the last access time of a key(s). Returns the number of existing keys specified.", "3.2.1"),
    container("object", "generic", "A container for object introspection commands", "2.2.3", OBJECT_SUBCOMMANDS),
];

#[rustfmt::skip]
static OBJECT_SUBCOMMANDS: &[Command] = &[
    cmd("object|encoding", 3, R, range(2, 2, 1), object_encoding, "generic", "Inspect the internal encoding of a Redis object", "2.2.3"),
    cmd("object|freq", 3, R, range(2, 2, 1), object_freq, "generic", "Get the logarithmic access frequency counter of a Redis object", "4.0.0"),
    cmd("object|idletime", 3, R, range(2, 2, 1), object_idletime, "generic", "Get the time since a Redis object was last accessed", "2.2.3"),
    cmd("object|refcount", 3, R, range(2, 2, 1), object_refcount, "generic", "Get the number of references to the value of the key", "2.2.3"),
    cmd("object|help", 2, flag::LOADING | flag::STALE, KeySpec::None, object_help, "generic", "Show helpful text about the different subcommands", "6.2.0"),
];

const ERR_NO_SUCH_KEY: &str = "ERR no such key";
const ERR_SAME_OBJECT: &str = "ERR source and destination objects are the same";
const ERR_DB_RANGE: &str = "ERR DB index is out of range";

/// Redis's `LOOKUP_NOTOUCH` read (TYPE, EXISTS, TTL, OBJECT): expires the key if its
/// deadline passed and counts a keyspace hit or miss, but does not count as an access
/// for LRU/LFU, so inspecting a key does not save it from eviction.
fn lookup_notouch(ctx: &mut Ctx<'_>, key: &[u8]) -> Option<Loc> {
    let found = ctx.keys.lookup(key);
    let stats = &mut ctx.keys.shard(shard_of(hash_bytes(key))).stats;
    match found {
        Some(_) => stats.keyspace_hits += 1,
        None => stats.keyspace_misses += 1,
    }
    found
}

// ----- existence, type, deletion -----

/// DEL and UNLINK. Values are freed inline either way; see the module docs.
fn del(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut deleted = 0;
    for key in args.iter().skip(1) {
        if ctx.keys.delete(key) {
            ctx.keys.modified(key);
            deleted += 1;
        }
    }
    ctx.reply.int(deleted);
}

/// EXISTS counts a key once per time it is named (`EXISTS k k` is 2).
fn exists(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut found = 0;
    for key in args.iter().skip(1) {
        if lookup_notouch(ctx, key).is_some() {
            found += 1;
        }
    }
    ctx.reply.int(found);
}

fn touch(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut found = 0;
    for key in args.iter().skip(1) {
        if ctx.keys.lookup_read(key).is_some() {
            found += 1;
        }
    }
    ctx.reply.int(found);
}

fn type_(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let name = match lookup_notouch(ctx, args.get(1)) {
        Some(loc) => ctx.keys.entry(loc).value.type_name(),
        None => "none",
    };
    ctx.reply.simple(name);
}

// ----- TTLs -----

/// The EXPIRE options. Redis 7.0 allows NX alone, XX with GT or LT, or GT/LT alone.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct ExpireFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

/// Parses the options after the time argument, with Redis's messages: an unknown
/// word first, then the incompatible combinations.
fn parse_expire_flags(args: &Args<'_>) -> Result<ExpireFlags, String> {
    let mut f = ExpireFlags::default();
    for opt in args.iter().skip(3) {
        if is(opt, "nx") {
            f.nx = true;
        } else if is(opt, "xx") {
            f.xx = true;
        } else if is(opt, "gt") {
            f.gt = true;
        } else if is(opt, "lt") {
            f.lt = true;
        } else {
            // Redis prints the option with %s: it stops at a NUL byte.
            let end = opt.iter().position(|&b| b == 0).unwrap_or(opt.len());
            return Err(format!("ERR Unsupported option {}", String::from_utf8_lossy(&opt[..end])));
        }
    }
    if f.nx && (f.xx || f.gt || f.lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if f.gt && f.lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    Ok(f)
}

/// The deadline an EXPIRE-family command asks for, in Unix ms, or `None` when the
/// conversion overflows. `base_ms` is "now" for the relative forms, 0 for the absolute
/// ones. Negative results are allowed: they mean "already expired".
fn expire_deadline(time: i64, seconds: bool, base_ms: i64) -> Option<i64> {
    let ms = if seconds { time.checked_mul(1000)? } else { time };
    ms.checked_add(base_ms)
}

/// Whether the options let a key with `current` deadline (`None`: no TTL) take `when`.
/// A missing TTL counts as infinite: GT never beats it, LT always does.
fn expire_allowed(f: ExpireFlags, current: Option<i64>, when: i64) -> bool {
    if f.nx && current.is_some() {
        return false;
    }
    if f.xx && current.is_none() {
        return false;
    }
    if f.gt && current.is_none_or(|c| when <= c) {
        return false;
    }
    if f.lt && current.is_some_and(|c| when >= c) {
        return false;
    }
    true
}

/// EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT (Redis's `expireGenericCommand`).
fn expire_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, seconds: bool, relative: bool, name: &str) {
    let flags = match parse_expire_flags(args) {
        Ok(f) => f,
        Err(e) => return ctx.reply.error(&e),
    };
    let Some(time) = int_arg(args.get(2)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let base = if relative { ctx.keys.now_ms as i64 } else { 0 };
    let Some(when) = expire_deadline(time, seconds, base) else {
        return ctx.reply.error(&format!("ERR invalid expire time in '{name}' command"));
    };
    let key = args.get(1);
    let Some(loc) = ctx.keys.lookup_write(key) else {
        return ctx.reply.int(0);
    };
    let current = ctx.keys.expire_at(loc).map(|at| at as i64);
    if !expire_allowed(flags, current, when) {
        return ctx.reply.int(0);
    }
    if when <= ctx.keys.now_ms as i64 && !ctx.keys.loading {
        // A deadline in the past deletes the key now, logged as the DEL it amounts to.
        ctx.keys.remove(loc);
        ctx.keys.modified(key);
        ctx.keys.propagate([&b"DEL"[..], key].into_iter());
    } else {
        // While replaying, a past deadline is stored as is (the logged DEL follows).
        let at = when.max(0) as u64;
        ctx.keys.set_expire(loc, Some(at));
        ctx.keys.modified(key);
        let mut b = itoa::Buffer::new();
        ctx.keys.propagate([&b"PEXPIREAT"[..], key, b.format(at).as_bytes()].into_iter());
    }
    ctx.reply.int(1);
}

fn expire(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    expire_generic(ctx, args, true, true, "expire");
}

fn pexpire(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    expire_generic(ctx, args, false, true, "pexpire");
}

fn expireat(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    expire_generic(ctx, args, true, false, "expireat");
}

fn pexpireat(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    expire_generic(ctx, args, false, false, "pexpireat");
}

/// TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 for a missing key, -1 for a key without a
/// TTL. Seconds are rounded to the nearest second, as Redis does.
fn ttl_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, millis: bool, absolute: bool) {
    let Some(loc) = lookup_notouch(ctx, args.get(1)) else {
        return ctx.reply.int(-2);
    };
    let Some(at) = ctx.keys.expire_at(loc) else {
        return ctx.reply.int(-1);
    };
    let ms = if absolute { at as i64 } else { (at as i64 - ctx.keys.now_ms as i64).max(0) };
    ctx.reply.int(if millis { ms } else { (ms + 500) / 1000 });
}

fn ttl(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ttl_generic(ctx, args, false, false);
}

fn pttl(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ttl_generic(ctx, args, true, false);
}

fn expiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ttl_generic(ctx, args, false, true);
}

fn pexpiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ttl_generic(ctx, args, true, true);
}

fn persist(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let Some(loc) = ctx.keys.lookup_write(key) else {
        return ctx.reply.int(0);
    };
    if ctx.keys.expire_at(loc).is_none() {
        return ctx.reply.int(0);
    }
    ctx.keys.set_expire(loc, None);
    ctx.keys.modified(key);
    ctx.reply.int(1);
}

// ----- RENAME, MOVE, COPY -----

fn rename(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    rename_generic(ctx, args, false);
}

fn renamenx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    rename_generic(ctx, args, true);
}

/// RENAME and RENAMENX: the value, its TTL and its access clock move to the new name.
fn rename_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, nx: bool) {
    let (src, dst) = (args.get(1), args.get(2));
    let Some(loc) = ctx.keys.lookup_write(src) else {
        return ctx.reply.error(ERR_NO_SUCH_KEY);
    };
    if src == dst {
        // Nothing to do, but the source still had to exist.
        return if nx { ctx.reply.int(0) } else { ctx.reply.ok() };
    }
    let expire = ctx.keys.expire_at(loc);
    // Looking `dst` up may delete it if it expired, which can move `src` inside its
    // table: `loc` is not used past this point.
    if ctx.keys.lookup_write(dst).is_some() {
        if nx {
            return ctx.reply.int(0);
        }
        ctx.keys.delete(dst);
    }
    let loc = ctx.keys.lookup(src).expect("the source of RENAME exists under the command's locks");
    let (_, entry) = ctx.keys.remove(loc);
    let new = insert_entry(ctx, dst, entry.value, entry.lru, expire);
    debug_assert_eq!(ctx.keys.expire_at(new), expire);
    ctx.keys.modified(src);
    ctx.keys.modified(dst);
    if nx {
        ctx.reply.int(1);
    } else {
        ctx.reply.ok();
    }
}

/// Adds `key` (known to be absent in the current database) with a given access clock
/// and deadline: the value keeps its history when it is renamed or moved.
fn insert_entry(ctx: &mut Ctx<'_>, key: &[u8], value: crate::keyspace::Value, lru: u32, expire: Option<u64>) -> Loc {
    let hash = hash_bytes(key);
    let shard = shard_of(hash);
    let pos = ctx.keys.table(shard).insert_new(hash, key, value, lru);
    let loc = Loc { shard, pos };
    if expire.is_some() {
        ctx.keys.set_expire(loc, expire);
    }
    loc
}

/// A database index argument (MOVE, COPY DB): an `int`, then a valid database.
fn parse_db(ctx: &Ctx<'_>, arg: &[u8]) -> Result<usize, &'static str> {
    let v = int_arg(arg).ok_or(ERR_NOT_INTEGER)?;
    if v < i32::MIN as i64 || v > i32::MAX as i64 {
        return Err("ERR value is out of range, value must between -2147483648 and 2147483647");
    }
    if v < 0 || v as usize >= ctx.server.keyspace.databases() {
        return Err(ERR_DB_RANGE);
    }
    Ok(v as usize)
}

/// Runs `f` with `db` selected in the command's view of the keyspace, then restores
/// the client's database. Lookups, `modified` (WATCH) and logged commands all follow
/// `ctx.keys.db`.
fn in_db<T>(ctx: &mut Ctx<'_>, db: usize, f: impl FnOnce(&mut Ctx<'_>) -> T) -> T {
    let saved = ctx.keys.db;
    ctx.keys.db = db;
    let out = f(ctx);
    ctx.keys.db = saved;
    out
}

fn move_(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let target = match parse_db(ctx, args.get(2)) {
        Ok(db) => db,
        Err(e) => return ctx.reply.error(e),
    };
    if target == ctx.keys.db {
        return ctx.reply.error(ERR_SAME_OBJECT);
    }
    let Some(loc) = ctx.keys.lookup_write(key) else {
        return ctx.reply.int(0);
    };
    let expire = ctx.keys.expire_at(loc);
    // Another database's table: `loc` in this one stays valid.
    if in_db(ctx, target, |ctx| ctx.keys.lookup_write(key).is_some()) {
        return ctx.reply.int(0);
    }
    let (_, entry) = ctx.keys.remove(loc);
    ctx.keys.modified(key);
    in_db(ctx, target, |ctx| {
        insert_entry(ctx, key, entry.value, entry.lru, expire);
        ctx.keys.modified(key);
    });
    ctx.reply.int(1);
}

/// COPY source destination [DB destination-db] [REPLACE]: a deep copy, TTL included.
/// The copy is a new object to the access clock, as in Redis.
fn copy(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (src, dst) = (args.get(1), args.get(2));
    let mut replace = false;
    let mut target = ctx.keys.db;
    let mut i = 3;
    while i < args.len() {
        let opt = args.get(i);
        if is(opt, "replace") {
            replace = true;
        } else if is(opt, "db") && i + 1 < args.len() {
            target = match parse_db(ctx, args.get(i + 1)) {
                Ok(db) => db,
                Err(e) => return ctx.reply.error(e),
            };
            i += 1;
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
        i += 1;
    }
    if target == ctx.keys.db && src == dst {
        return ctx.reply.error(ERR_SAME_OBJECT);
    }
    let Some(loc) = ctx.keys.lookup_read(src) else {
        return ctx.reply.int(0);
    };
    let expire = ctx.keys.expire_at(loc);
    let value = ctx.keys.entry(loc).value.clone();
    in_db(ctx, target, |ctx| {
        if ctx.keys.lookup_write(dst).is_some() {
            if !replace {
                return ctx.reply.int(0);
            }
            ctx.keys.delete(dst);
        }
        let lru = ctx.keys.clock.new_entry();
        insert_entry(ctx, dst, value, lru, expire);
        ctx.keys.modified(dst);
        ctx.reply.int(1);
    });
}

// ----- whole-keyspace walks -----

/// How a walking command (SCAN, RANDOMKEY) deletes and logs the expired keys it meets.
///
/// Outside a transaction a walk holds one shard lock, and only while it looks at that
/// shard. The `DEL` must reach the AOF while that lock is held, as the expiry cron does:
/// appended at the end of the command, it could land after another client re-created
/// the key, and a replay would then delete the new key. Inside EXEC every shard stays
/// locked until the transaction's record is appended, so the `DEL` joins that record
/// and keeps its place among the transaction's other commands.
///
/// An expired key is a change for tracking clients too: the invalidations are gathered
/// here and handed to the command's effects, which the dispatcher delivers.
struct WalkExpiry<'s> {
    /// Append each `DEL` at once (a walk outside EXEC, with the AOF on).
    aof_now: Option<Arc<Aof>>,
    tracking: &'s Tracking,
    /// Invalidations for the keys this walk expired.
    changes: Pending,
    /// Keys deleted whose `DEL` goes with the command's own record (inside EXEC).
    deferred: Vec<CompactBytes>,
    in_exec: bool,
    /// Replaying the AOF: keys never expire.
    loading: bool,
    now_ms: u64,
}

impl<'s> WalkExpiry<'s> {
    fn new(ctx: &Ctx<'s>) -> Self {
        let in_exec = ctx.keys.guards.holds_all();
        let aof_now = if in_exec || !ctx.keys.effects.record_aof { None } else { ctx.server.aof().cloned() };
        WalkExpiry {
            aof_now,
            tracking: &ctx.server.keyspace.tracking,
            changes: Pending::default(),
            deferred: Vec::new(),
            in_exec,
            loading: ctx.keys.loading,
            now_ms: ctx.keys.now_ms,
        }
    }

    /// Whether the entry at `pos` is past its deadline and may be deleted.
    fn is_expired(&self, table: &Table, pos: usize) -> bool {
        !self.loading && table.expire_at(pos).is_some_and(|at| at <= self.now_ms)
    }

    /// Deletes the expired entry at `pos` of `shard.dbs[db]` with the bookkeeping of
    /// lazy expiry: the count, broken WATCHes and a logged `DEL`.
    fn delete(&mut self, shard: &mut Shard, db: usize, pos: usize) {
        debug_assert!(self.is_expired(&shard.dbs[db], pos));
        let (key, _) = shard.dbs[db].remove_at(pos);
        shard.stats.expired_keys += 1;
        shard.key_changed(db, &key, self.tracking, &mut self.changes, 0);
        if let Some(aof) = &self.aof_now {
            let mut record = (db as u16).to_le_bytes().to_vec();
            crate::resp::encode_command([&b"DEL"[..], &key].into_iter(), &mut record);
            if let Err(e) = aof.append(&record) {
                tracing::error!(error = %e, "AOF append failed");
                aof.mark_failed(&e);
            }
        } else if self.in_exec {
            self.deferred.push(key);
        }
    }

    /// Logs the deferred `DEL`s with the command's record (inside EXEC).
    fn finish(mut self, ctx: &mut Ctx<'_>) {
        let db = ctx.keys.db;
        if let Some(mut expired) = self.changes.take() {
            let effects = ctx.keys.effects.tracking.changes();
            effects.invalidated.append(&mut expired.invalidated);
            effects.broadcast.append(&mut expired.broadcast);
        }
        for key in &self.deferred {
            ctx.keys.effects.propagate(db, [&b"DEL"[..], key.as_slice()].into_iter());
        }
    }
}

/// KEYS pattern. Expired keys are skipped but not deleted (Redis's `keyIsExpired`).
fn keys(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let pattern = args.get(1);
    let all = pattern == b"*";
    let db = ctx.keys.db;
    let (now, loading) = (ctx.keys.now_ms, ctx.keys.loading);
    let mut found: Vec<CompactBytes> = Vec::new();
    ctx.keys.for_each_shard(|_, shard| {
        let table = &shard.dbs[db];
        for pos in 0..table.len() {
            let key = table.key_at(pos);
            if !(all || crate::glob::matches(pattern, key.as_slice(), false)) {
                continue;
            }
            if !loading && table.expire_at(pos).is_some_and(|at| at <= now) {
                continue;
            }
            found.push(key.clone());
        }
        true
    });
    ctx.reply.array(found.len());
    for key in &found {
        ctx.reply.bulk(key.as_slice());
    }
}

fn dbsize(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let db = ctx.keys.db;
    let mut total = 0;
    ctx.keys.for_each_shard(|_, shard| {
        total += shard.dbs[db].len();
        true
    });
    ctx.reply.int(total as i64);
}

/// RANDOMKEY, like Redis's `dbRandomKey`: pick a key uniformly; if it is expired,
/// delete it and pick again.
///
/// A shard is chosen with probability proportional to its size (sizes are read first,
/// one shard at a time), then a uniform position inside it, so every key is equally
/// likely. Every round either returns a key or deletes an expired one, so the loop ends
/// even when every key has expired: then the database is empty and the answer is nil.
/// (Redis's 100-tries limit exists for replicas, which may not delete; we have none.)
/// Outside EXEC other clients may empty a shard between the size reading and the
/// pick; the sizes are then read again, at most [`RANDOMKEY_REREADS`] times.
fn randomkey(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let db = ctx.keys.db;
    let mut expiry = WalkExpiry::new(ctx);
    let mut sizes = [0usize; SHARDS];
    let read_sizes = |ctx: &mut Ctx<'_>, sizes: &mut [usize; SHARDS]| {
        ctx.keys.for_each_shard(|i, shard| {
            sizes[i] = shard.dbs[db].len();
            true
        });
    };
    read_sizes(ctx, &mut sizes);
    let mut rereads = 0;
    let picked = loop {
        let total: usize = sizes.iter().sum();
        let Some(shard_idx) = (total > 0).then(|| pick_weighted(&sizes, fastrand::usize(..total))).flatten() else {
            break None;
        };
        let pick = ctx.keys.with_shard(shard_idx, |shard| {
            let table = &shard.dbs[db];
            let Some(pos) = table.random_pos(fastrand::u64(..)) else {
                return Pick::Empty;
            };
            if expiry.is_expired(table, pos) {
                expiry.delete(shard, db, pos);
                Pick::Expired { left: shard.dbs[db].len() }
            } else {
                Pick::Key(table.key_at(pos).clone())
            }
        });
        match pick {
            Pick::Key(key) => break Some(key),
            Pick::Expired { left } => sizes[shard_idx] = left,
            Pick::Empty if rereads < RANDOMKEY_REREADS => {
                rereads += 1;
                read_sizes(ctx, &mut sizes);
            }
            Pick::Empty => break None,
        }
    };
    expiry.finish(ctx);
    match picked {
        Some(key) => ctx.reply.bulk(key.as_slice()),
        None => ctx.reply.null_bulk(),
    }
}

/// How many times RANDOMKEY reads the shard sizes again after finding a shard emptied
/// by another client. Only a keyspace being emptied as fast as it is read gets there.
const RANDOMKEY_REREADS: usize = 64;

/// What one RANDOMKEY round found in the chosen shard.
enum Pick {
    Key(CompactBytes),
    /// An expired key, now deleted; `left` keys remain in that shard's table.
    Expired {
        left: usize,
    },
    /// The shard was emptied since its size was read.
    Empty,
}

/// The index `i` such that `r` falls in the `i`-th run of `sizes` (runs laid end to
/// end), or `None` when `r` is past the total.
fn pick_weighted(sizes: &[usize], mut r: usize) -> Option<usize> {
    for (i, &n) in sizes.iter().enumerate() {
        if r < n {
            return Some(i);
        }
        r -= n;
    }
    None
}

/// Bits of the cursor that hold the shard index.
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
const _: () = assert!(1 << SHARD_BITS == SHARDS, "SHARDS must be a power of two");

/// Where a SCAN stands: a shard, and how far down that shard's table it has come.
///
/// Encoded as `remaining << SHARD_BITS | shard`. `remaining` follows
/// [`dict::scan_positions`]: positions below it are still to visit, and 0 means "this
/// shard not started yet" (start from its end). So cursor 0 is "shard 0, not started",
/// the start of a scan; when the last shard is done the walk answers 0 again. Because a
/// key never changes shard and each shard's walk keeps the dict's guarantee, every key
/// present for the whole scan is returned at least once.
///
/// A table holds at most 2^32 entries, so a real cursor fits easily. Any other value a
/// client sends decodes to some shard and a position clamped to that table's length: a
/// nonsense cursor gives a partial scan, never an error, as in Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScanCursor {
    shard: usize,
    remaining: u64,
}

impl ScanCursor {
    const START: ScanCursor = ScanCursor { shard: 0, remaining: 0 };

    fn decode(cursor: u64) -> ScanCursor {
        ScanCursor { shard: (cursor & (SHARDS as u64 - 1)) as usize, remaining: cursor >> SHARD_BITS }
    }

    fn encode(self) -> u64 {
        assert!(self.shard < SHARDS);
        assert!(self.remaining <= u64::MAX >> SHARD_BITS);
        self.remaining << SHARD_BITS | self.shard as u64
    }
}

/// One SCAN call over the shards, independent of what a shard is.
///
/// `step(shard, remaining, budget)` visits up to `budget` entries of that shard below
/// `remaining` (0: from the end) and returns `(next remaining, visited)`, with a next
/// remaining of 0 when the shard is finished. The walk moves on to the next shard while
/// budget is left, and returns the cursor to resume from: [`ScanCursor::START`] once the
/// last shard is finished. `count` is a hint, as in Redis: the walk stops after about
/// that many entries, and always makes progress.
fn scan_walk(mut at: ScanCursor, count: usize, mut step: impl FnMut(usize, u64, usize) -> (u64, usize)) -> ScanCursor {
    assert!(at.shard < SHARDS);
    let mut budget = count.max(1);
    loop {
        let (next, visited) = step(at.shard, at.remaining, budget);
        if next != 0 {
            // Stopped inside the shard: the budget is spent.
            debug_assert!(visited >= budget);
            return ScanCursor { shard: at.shard, remaining: next };
        }
        budget = budget.saturating_sub(visited);
        if at.shard + 1 == SHARDS {
            return ScanCursor::START;
        }
        at = ScanCursor { shard: at.shard + 1, remaining: 0 };
        if budget == 0 {
            return at;
        }
    }
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
///
/// Filters apply in Redis's order: the pattern, then expiry (an expired key is deleted
/// and skipped), then the type. With TYPE, Redis looks each matching key up, which
/// counts a keyspace hit or miss; so do we.
fn scan(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(cursor) = super::parse_cursor(args.get(1)) else {
        return ctx.reply.error("ERR invalid cursor");
    };
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut type_name: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        let (opt, has_value) = (args.get(i), i + 1 < args.len());
        if is(opt, "count") && has_value {
            match int_arg(args.get(i + 1)) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return ctx.reply.error(ERR_SYNTAX),
                None => return ctx.reply.error(ERR_NOT_INTEGER),
            }
        } else if is(opt, "match") && has_value {
            pattern = Some(args.get(i + 1)).filter(|p| *p != b"*");
        } else if is(opt, "type") && has_value {
            type_name = Some(args.get(i + 1));
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
        i += 2;
    }

    let db = ctx.keys.db;
    let mut expiry = WalkExpiry::new(ctx);
    let mut found: Vec<CompactBytes> = Vec::new();
    let keys = &mut ctx.keys;
    let next = scan_walk(ScanCursor::decode(cursor), count, |shard_idx, remaining, budget| {
        keys.with_shard(shard_idx, |shard| {
            // Collect this shard's candidates first, then filter: expiring a key
            // moves entries, which must not happen under the walk.
            let mut visited = 0;
            let mut candidates: Vec<(CompactBytes, bool)> = Vec::new();
            let next = dict::scan_positions(shard.dbs[db].dict(), remaining as usize, budget, |key, entry| {
                visited += 1;
                if pattern.is_none_or(|p| crate::glob::matches(p, key.as_slice(), false)) {
                    candidates.push((key.clone(), entry.has_ttl()));
                }
            });
            for (key, has_ttl) in candidates {
                let table = &shard.dbs[db];
                let Some(pos) = table.find(hash_bytes(key.as_slice()), key.as_slice()) else {
                    continue;
                };
                if has_ttl && expiry.is_expired(table, pos) {
                    expiry.delete(shard, db, pos);
                    if type_name.is_some() {
                        shard.stats.keyspace_misses += 1;
                    }
                    continue;
                }
                if let Some(wanted) = type_name {
                    shard.stats.keyspace_hits += 1;
                    let actual = shard.dbs[db].entry(pos).value.type_name();
                    if !wanted.eq_ignore_ascii_case(actual.as_bytes()) {
                        continue;
                    }
                }
                found.push(key);
            }
            (next as u64, visited)
        })
    });
    expiry.finish(ctx);
    let mut b = itoa::Buffer::new();
    ctx.reply.array(2);
    ctx.reply.bulk(b.format(next.encode()).as_bytes());
    ctx.reply.array(found.len());
    for key in &found {
        ctx.reply.bulk(key.as_slice());
    }
}

// ----- FLUSHDB, FLUSHALL -----

/// The optional ASYNC|SYNC argument: `Ok(true)` for ASYNC.
fn parse_flush_mode(args: &Args<'_>) -> Result<bool, ()> {
    match args.len() {
        1 => Ok(false),
        2 if is(args.get(1), "sync") => Ok(false),
        2 if is(args.get(1), "async") => Ok(true),
        _ => Err(()),
    }
}

/// Empties `db` in every shard (all are locked) and returns how many keys went.
/// Transactions watching keys that existed are broken first (Redis's
/// `touchAllWatchedKeysInDb`). The old tables are handed to `dropped`.
fn flush_db(ctx: &mut Ctx<'_>, db: usize, dropped: &mut Vec<Table>) -> u64 {
    let mut removed = 0;
    for i in 0..SHARDS {
        let shard = ctx.keys.shard(i);
        if shard.dbs[db].is_empty() {
            continue;
        }
        shard.touch_watchers_of_existing(db);
        removed += shard.dbs[db].len() as u64;
        dropped.push(std::mem::take(&mut shard.dbs[db]));
    }
    removed
}

/// Frees flushed tables. With ASYNC a helper thread does it, so the global pause of a
/// flush is only the time to detach the tables, as with Redis's lazy-free thread.
fn free_tables(tables: Vec<Table>, background: bool) {
    if background && !tables.is_empty() {
        let spawned = std::thread::Builder::new().name("minikv-lazyfree".into()).spawn(move || drop(tables));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a lazy-free thread; freeing inline");
        }
    } else {
        drop(tables);
    }
}

/// FLUSHDB [ASYNC|SYNC]. Always logged (as plain FLUSHDB), even when the database was
/// already empty, as Redis 7.0 does.
fn flushdb(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(background) = parse_flush_mode(args) else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    let mut dropped = Vec::new();
    let db = ctx.keys.db;
    ctx.keys.effects.dirty += flush_db(ctx, db, &mut dropped);
    ctx.keys.propagate([&b"FLUSHDB"[..]].into_iter());
    free_tables(dropped, background);
    forget_tracked_keys(ctx);
    ctx.reply.ok();
}

/// After a flush: the tracking table forgets every key (of every database, even for
/// FLUSHDB, since it is keyed by name only) and every tracking client is told that
/// everything may have changed, as Redis's `trackingInvalidateKeysOnFlush` does.
fn forget_tracked_keys(ctx: &mut Ctx<'_>) {
    let tracking = &ctx.server.keyspace.tracking;
    for i in 0..SHARDS {
        let shard = ctx.keys.shard(i);
        if !shard.tracking.is_empty() {
            tracking.clear(&mut shard.tracking);
        }
    }
    crate::tracking::flushed(ctx.server);
}

/// FLUSHALL [ASYNC|SYNC]. Always logged, as plain FLUSHALL.
fn flushall(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(background) = parse_flush_mode(args) else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    let mut dropped = Vec::new();
    let mut removed = 0;
    for db in 0..ctx.server.keyspace.databases() {
        removed += flush_db(ctx, db, &mut dropped);
    }
    // Redis counts one more change for the flush itself.
    ctx.keys.effects.dirty += removed + 1;
    ctx.keys.propagate([&b"FLUSHALL"[..]].into_iter());
    free_tables(dropped, background);
    forget_tracked_keys(ctx);
    ctx.reply.ok();
}

// ----- SWAPDB -----

/// A SWAPDB index: an integer that fits a C `int` (Redis's `getIntFromObjectOrReply`,
/// which words a bad value and an out-of-range one the same way).
fn parse_swap_index(arg: &[u8]) -> Option<i64> {
    int_arg(arg).filter(|v| (i32::MIN as i64..=i32::MAX as i64).contains(v))
}

/// SWAPDB index1 index2: the two databases trade their contents, in every shard at
/// once (the command holds every lock), as Redis 7.0's `dbSwapDatabases` does:
///
/// - clients stay on their database *number*: a client on database 0 now sees what
///   was in database 1, and WATCHes and blocked clients stay with their number too;
/// - a transaction WATCHing a key that exists in either database is broken (Redis's
///   `touchAllWatchedKeysInDb`), since the key's value may have changed under it;
/// - a client blocked on a key that holds data after the swap is served, as if the
///   data had just been pushed (Redis's `scanDatabaseForReadyKeys`);
/// - tracking clients are told nothing: Redis 7.0's SWAPDB sends no invalidation (the
///   tracking table is keyed by name only, and the names did not change).
///
/// Swapping a database with itself does nothing but is still a change, logged as
/// sent like every successful SWAPDB.
fn swapdb(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(first) = parse_swap_index(args.get(1)) else {
        return ctx.reply.error("ERR invalid first DB index");
    };
    let Some(second) = parse_swap_index(args.get(2)) else {
        return ctx.reply.error("ERR invalid second DB index");
    };
    let databases = ctx.server.keyspace.databases() as i64;
    if !(0..databases).contains(&first) || !(0..databases).contains(&second) {
        return ctx.reply.error(ERR_DB_RANGE);
    }
    let (a, b) = (first as usize, second as usize);
    if a != b {
        let mut ready: Vec<(usize, CompactBytes)> = Vec::new();
        for i in 0..SHARDS {
            let shard = ctx.keys.shard(i);
            touch_watchers_of_swapped(shard, a, b);
            shard.dbs.swap(a, b);
            ready_after_swap(shard, a, b, &mut ready);
        }
        let pending = &mut ctx.keys.effects.ready;
        for key in ready {
            if !pending.contains(&key) {
                pending.push(key);
            }
        }
    }
    ctx.keys.effects.dirty += 1;
    ctx.reply.ok();
}

/// Breaks the transactions WATCHing, in database `a` or `b`, a key that exists in
/// either of them. Only this shard's keys: the caller visits every shard.
fn touch_watchers_of_swapped(shard: &mut Shard, a: usize, b: usize) {
    for ((db, key), flags) in &shard.watched {
        if *db != a && *db != b {
            continue;
        }
        let hash = hash_bytes(key);
        if shard.dbs[a].find(hash, key).is_some() || shard.dbs[b].find(hash, key).is_some() {
            for f in flags {
                f.mark_dirty();
            }
        }
    }
}

/// Collects the keys of databases `a` and `b` that clients are blocked on and that
/// exist after the swap: the dispatcher serves their waiters before the locks go
/// ([`crate::blocking::serve_ready`] checks each waiter's type and skips the others).
fn ready_after_swap(shard: &Shard, a: usize, b: usize, ready: &mut Vec<(usize, CompactBytes)>) {
    for (db, key) in shard.blocked.keys() {
        if (*db == a || *db == b) && shard.dbs[*db].find(hash_bytes(key), key).is_some() {
            ready.push((*db, key.clone()));
        }
    }
}

// ----- OBJECT -----

/// The key OBJECT asks about, or a nil reply when it is missing.
fn object_lookup(ctx: &mut Ctx<'_>, args: &Args<'_>) -> Option<Loc> {
    let found = lookup_notouch(ctx, args.get(2));
    if found.is_none() {
        ctx.reply.null_bulk();
    }
    found
}

fn object_encoding(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if let Some(loc) = object_lookup(ctx, args) {
        let encoding = ctx.keys.entry(loc).value.encoding();
        ctx.reply.bulk(encoding.as_bytes());
    }
}

/// Values are never shared between keys here, so every value has one reference.
fn object_refcount(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if object_lookup(ctx, args).is_some() {
        ctx.reply.int(1);
    }
}

const ERR_LFU_SELECTED: &str = "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
const ERR_LFU_NOT_SELECTED: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";

/// Seconds since the last access. Under an LFU policy the `lru` field holds a counter,
/// not a time, so there is nothing to report.
fn object_idletime(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(loc) = object_lookup(ctx, args) else {
        return;
    };
    if ctx.server.config.live.policy().is_lfu() {
        return ctx.reply.error(ERR_LFU_SELECTED);
    }
    let lru = ctx.keys.entry(loc).lru;
    let idle = ctx.keys.clock.idle_secs(lru);
    ctx.reply.int(idle as i64);
}

/// The LFU counter, decayed for the time since it was last updated (but not stored
/// back: looking does not count as an access).
fn object_freq(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(loc) = object_lookup(ctx, args) else {
        return;
    };
    if !ctx.server.config.live.policy().is_lfu() {
        return ctx.reply.error(ERR_LFU_NOT_SELECTED);
    }
    let lru = ctx.keys.entry(loc).lru;
    let freq = ctx.keys.clock.lfu_decayed_counter(lru);
    ctx.reply.int(freq as i64);
}

const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

fn object_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.array(OBJECT_HELP.len());
    for line in OBJECT_HELP {
        ctx.reply.simple(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Dict;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn cursor_zero_is_the_start_and_round_trips() {
        assert_eq!(ScanCursor::decode(0), ScanCursor::START);
        assert_eq!(ScanCursor::START.encode(), 0);
        for c in [
            ScanCursor { shard: 5, remaining: 0 },
            ScanCursor { shard: SHARDS - 1, remaining: 1 },
            ScanCursor { shard: 0, remaining: u32::MAX as u64 },
        ] {
            assert_ne!(c.encode(), 0);
            assert_eq!(ScanCursor::decode(c.encode()), c);
        }
    }

    #[test]
    fn expire_options_follow_redis_rules() {
        let none = ExpireFlags::default();
        let nx = ExpireFlags { nx: true, ..none };
        let xx = ExpireFlags { xx: true, ..none };
        let gt = ExpireFlags { gt: true, ..none };
        let lt = ExpireFlags { lt: true, ..none };
        assert!(expire_allowed(none, Some(5), 1));
        assert!(expire_allowed(nx, None, 1));
        assert!(!expire_allowed(nx, Some(5), 1));
        assert!(!expire_allowed(xx, None, 1));
        assert!(expire_allowed(xx, Some(5), 1));
        assert!(!expire_allowed(gt, None, 100), "no TTL is infinite: GT fails");
        assert!(!expire_allowed(gt, Some(5), 5));
        assert!(expire_allowed(gt, Some(5), 6));
        assert!(expire_allowed(lt, None, 100), "no TTL is infinite: LT wins");
        assert!(!expire_allowed(lt, Some(5), 5));
        assert!(expire_allowed(lt, Some(5), 4));
        assert_eq!(expire_deadline(i64::MAX / 1000 + 1, true, 0), None);
        assert_eq!(expire_deadline(i64::MAX, false, 1), None);
        assert_eq!(expire_deadline(-10, true, 5000), Some(-5000));
    }

    #[test]
    fn swapdb_indexes_are_c_ints() {
        assert_eq!(parse_swap_index(b"0"), Some(0));
        assert_eq!(parse_swap_index(b"-1"), Some(-1), "negative is range-checked later");
        assert_eq!(parse_swap_index(b"2147483647"), Some(2147483647));
        assert_eq!(parse_swap_index(b"-2147483648"), Some(-2147483648));
        for bad in [&b"2147483648"[..], b"-2147483649", b"1.5", b"", b" 1", b"abc"] {
            assert_eq!(parse_swap_index(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn weighted_pick_covers_each_run() {
        let sizes = [0, 2, 0, 1];
        let picks: Vec<_> = (0..4).map(|r| pick_weighted(&sizes, r)).collect();
        assert_eq!(picks, [Some(1), Some(1), Some(3), None]);
    }

    /// A model keyspace: one dict per shard.
    fn model_scan(shards: &[Dict<Vec<u8>, ()>], at: ScanCursor, count: usize, seen: &mut Vec<Vec<u8>>) -> ScanCursor {
        scan_walk(at, count, |s, remaining, budget| {
            let mut visited = 0;
            let next = dict::scan_positions(&shards[s], remaining as usize, budget, |k, _| {
                visited += 1;
                seen.push(k.clone());
            });
            (next as u64, visited)
        })
    }

    #[test]
    fn a_quiet_keyspace_is_returned_exactly_once() {
        let mut shards: Vec<Dict<Vec<u8>, ()>> = (0..SHARDS).map(|_| Dict::new()).collect();
        for i in 0..1000u32 {
            let key = format!("key:{i}").into_bytes();
            shards[shard_of(hash_bytes(&key))].insert(key, ());
        }
        for count in [1, 7, 10, 5000] {
            let mut seen = Vec::new();
            let mut at = ScanCursor::START;
            let mut calls = 0;
            loop {
                at = model_scan(&shards, at, count, &mut seen);
                calls += 1;
                assert!(calls <= 1000 + SHARDS, "the scan must terminate");
                if at == ScanCursor::START {
                    break;
                }
            }
            let unique: HashSet<_> = seen.iter().cloned().collect();
            assert_eq!(seen.len(), 1000, "count {count}");
            assert_eq!(unique.len(), 1000, "count {count}");
        }
    }

    proptest! {
        /// Redis's SCAN guarantee across shards: a key present for the whole scan is
        /// returned, whatever is added and removed between calls, and the cursor comes
        /// back to 0.
        #[test]
        fn scan_returns_every_key_present_throughout(
            initial in 1usize..300,
            churn in prop::collection::vec((any::<bool>(), any::<u16>()), 0..300),
            count in 1usize..40,
        ) {
            let mut shards: Vec<Dict<Vec<u8>, ()>> = (0..SHARDS).map(|_| Dict::new()).collect();
            let put = |shards: &mut Vec<Dict<Vec<u8>, ()>>, key: Vec<u8>| {
                shards[shard_of(hash_bytes(&key))].insert(key, ());
            };
            for i in 0..initial {
                put(&mut shards, format!("k{i}").into_bytes());
            }
            let stable: Vec<Vec<u8>> =
                (0..initial).step_by(3).map(|i| format!("k{i}").into_bytes()).collect();
            let mut seen = Vec::new();
            let mut at = ScanCursor::decode(0);
            let mut churn = churn.into_iter();
            let mut calls = 0;
            loop {
                // Through the wire form, as a client would send it back.
                at = ScanCursor::decode(model_scan(&shards, at, count, &mut seen).encode());
                calls += 1;
                prop_assert!(calls < 100_000);
                if at.encode() == 0 { break; }
                if let Some((add, n)) = churn.next() {
                    if add {
                        put(&mut shards, format!("new{n}").into_bytes());
                    } else {
                        let victim = format!("k{}", n as usize % initial).into_bytes();
                        if !stable.contains(&victim) {
                            shards[shard_of(hash_bytes(&victim))].remove(&victim);
                        }
                    }
                }
            }
            let seen: HashSet<_> = seen.into_iter().collect();
            for k in &stable {
                prop_assert!(seen.contains(k), "missed {:?}", String::from_utf8_lossy(k));
            }
        }
    }
}
