//! Blocking commands: BLPOP, BRPOP, BLMPOP, BLMOVE, BRPOPLPUSH, BZPOPMIN, BZPOPMAX,
//! BZMPOP.
//!
//! A client that finds every key empty registers a [`Waiter`] in the shard of each key
//! **while still holding the command's shard locks**, so a push cannot slip in between
//! "the list is empty" and "I am waiting" (no lost wake-ups). Waiters queue per key,
//! oldest first.
//!
//! When a command adds data to a key that has waiters, [`crate::keyspace::Keys::modified`]
//! marks the key ready. Before the pushing command releases its locks, the dispatcher
//! calls [`serve_ready`], which pops on behalf of the oldest waiter, writes the waiter's
//! reply into it and wakes its connection. The element never becomes visible to anyone
//! else, which is Redis's guarantee: a blocked client is served before any other command
//! runs, in FIFO order.
//!
//! A waiter can be blocked on several keys in several shards, so it is claimed with a
//! compare-and-swap (`WAITING -> SERVED`); a timeout or a disconnect races for the same
//! CAS (`WAITING -> CANCELLED`). Stale entries left in other keys' queues are skipped
//! and dropped when met.
//!
//! The waiter's [`BlockKind`] says what serving it means: pop one element (BLPOP,
//! BZPOPMIN: replied `[key, element]` or `[key, member, score]`), pop up to a count
//! (BLMPOP, BZMPOP: replied `[key, [elements...]]`, taking what the key holds when it
//! holds fewer), or move one element to another list (BLMOVE). What is logged to the
//! AOF is the plain pop that was performed (`LPOP key`, `LPOP key 2`, `ZPOPMIN key 3`,
//! `LMOVE ...`), with the count actually popped, so a replay never waits.
//!
//! One case cannot be served in place: BLMOVE whose destination lives in a shard the
//! pusher has not locked. Taking that lock could deadlock, so we only *try* it; if it
//! is busy, the waiter is poked and moves the element itself (see the connection loop).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::keyspace::{hash_bytes, kind, shard_of, CompactBytes, Keys, Value};
use crate::numeric::{long_double_incr, parse_double, parse_score_bound, FloatIncrError};
use crate::resp::{Protocol, Reply};

const WAITING: u8 = 0;
/// Claimed by a server; its reply is being prepared.
const SERVED: u8 = 1;
const CANCELLED: u8 = 2;
/// Claimed and the reply is in `reply`.
const DELIVERED: u8 = 3;

pub const ERR_TIMEOUT_NOT_FLOAT: &str = "ERR timeout is not a float or out of range";
pub const ERR_TIMEOUT_NEGATIVE: &str = "ERR timeout is negative";

/// Parses a blocking command's timeout, in seconds, like Redis 7.0's
/// `getTimeoutFromObjectOrReply`: a long double, turned into milliseconds rounded up
/// (`ceill(t * 1000)`), then cast to a 64-bit integer. `Ok(None)` means block forever.
///
/// The cast explains the odd corners this reproduces: `inf` or `1e20` are "negative"
/// (an out-of-range cast gives `LLONG_MIN` on x86-64), `-0.0001` rounds up to 0 and
/// blocks forever, `0.0001` is one millisecond. Redis adds the timeout to the current
/// time in a signed 64-bit integer; when that overflows the deadline is never reached,
/// which is forever here too. We compute in f64, so a timeout may differ from Redis's
/// by one millisecond where the last bits of long double precision matter.
pub fn parse_timeout(arg: &[u8], now_ms: u64) -> Result<Option<Duration>, &'static str> {
    let secs = match parse_double(arg) {
        Some(v) => v,
        // Outside f64's range, but maybe inside long double's ("1e400", "1e-400").
        None => match long_double_incr(None, arg) {
            Ok(_) | Err(FloatIncrError::NanOrInfinity) => match parse_score_bound(arg) {
                // Underflowed to zero: a tiny non-zero number. Rounded up to a
                // millisecond when positive, to zero (forever) when negative.
                Some((v, false)) if v == 0.0 => {
                    if v.is_sign_negative() {
                        -0.0
                    } else {
                        f64::MIN_POSITIVE
                    }
                }
                Some((v, false)) => v,
                _ => return Err(ERR_TIMEOUT_NOT_FLOAT),
            },
            Err(_) => return Err(ERR_TIMEOUT_NOT_FLOAT),
        },
    };
    let ms = (secs * 1000.0).ceil();
    // 2^63: the first value a cast to i64 cannot hold.
    if !(0.0..9_223_372_036_854_775_808.0).contains(&ms) {
        return Err(ERR_TIMEOUT_NEGATIVE);
    }
    let ms = ms as u64;
    if ms == 0 || ms > i64::MAX as u64 - now_ms.min(i64::MAX as u64) {
        return Ok(None);
    }
    Ok(Some(Duration::from_millis(ms)))
}

/// What the blocked command does once data arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockKind {
    /// BLPOP (`left`) or BRPOP with `count: None`: one element, replied as
    /// `[key, element]`. BLMPOP with `count: Some(n)`: up to `n` elements, replied
    /// as `[key, [element, ...]]`.
    Pop { left: bool, count: Option<usize> },
    /// BLMOVE / BRPOPLPUSH: pop from the ready key, push to `dst`.
    Move { from_left: bool, to_left: bool, dst: CompactBytes },
    /// BZPOPMIN (`min`) or BZPOPMAX with `count: None`: one member, replied flat as
    /// `[key, member, score]`. BZMPOP with `count: Some(n)`: up to `n` members,
    /// replied as `[key, [[member, score], ...]]` in both protocols.
    ZPop { min: bool, count: Option<usize> },
}

/// A blocked client, shared between its connection and the shards it waits in.
#[derive(Debug)]
pub struct Waiter {
    pub kind: BlockKind,
    pub db: usize,
    pub keys: Vec<CompactBytes>,
    pub proto: Protocol,
    state: AtomicU8,
    /// The reply written by whoever served the waiter.
    reply: Mutex<Vec<u8>>,
    pub notify: Notify,
}

impl Waiter {
    pub fn new(kind: BlockKind, db: usize, keys: Vec<CompactBytes>, proto: Protocol) -> Self {
        Waiter {
            kind,
            db,
            keys,
            proto,
            state: AtomicU8::new(WAITING),
            reply: Mutex::new(Vec::new()),
            notify: Notify::new(),
        }
    }

    pub fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Claims the waiter for serving. Only one claimant (server or timeout) wins.
    pub fn claim(&self) -> bool {
        self.state.compare_exchange(WAITING, SERVED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Gives up waiting (timeout, disconnect). False if it was served first.
    pub fn cancel(&self) -> bool {
        self.state.compare_exchange(WAITING, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Claimed by a server (its reply may still be on the way).
    pub fn is_claimed(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), SERVED | DELIVERED)
    }

    /// The reply is ready to be taken.
    pub fn is_delivered(&self) -> bool {
        self.state.load(Ordering::Acquire) == DELIVERED
    }

    /// Hands over the reply of a claimed waiter and wakes its connection.
    pub fn deliver(&self, reply: Vec<u8>) {
        debug_assert_eq!(self.state.load(Ordering::Acquire), SERVED);
        *self.reply.lock() = reply;
        self.state.store(DELIVERED, Ordering::Release);
        self.notify.notify_one();
    }

    /// Wakes the waiter without serving it: it should retry by itself.
    pub fn poke(&self) {
        self.notify.notify_one();
    }

    pub fn take_reply(&self) -> Vec<u8> {
        std::mem::take(&mut *self.reply.lock())
    }
}

/// Serves waiters on the keys `keys.effects.ready`, oldest first, while the command's
/// locks are still held. Called by the dispatcher after every command that marked a
/// key ready (and by EXEC once, at the end).
pub fn serve_ready(keys: &mut Keys<'_>) {
    let saved_db = keys.db;
    let mut i = 0;
    // Serving a BLMOVE pushes to its destination, which can make more keys ready.
    while i < keys.effects.ready.len() {
        let (db, key) = keys.effects.ready[i].clone();
        keys.db = db;
        serve_key(keys, &key);
        i += 1;
    }
    keys.effects.ready.clear();
    keys.db = saved_db;
}

fn serve_key(keys: &mut Keys<'_>, key: &CompactBytes) {
    let shard_idx = shard_of(hash_bytes(key));
    let db = keys.db;
    loop {
        // The oldest waiter still waiting on this key.
        let waiter = {
            let shard = keys.shard(shard_idx);
            let Some(queue) = shard.blocked.get_mut(&(db, key.clone())) else {
                return;
            };
            while queue.front().is_some_and(|w| !w.is_waiting()) {
                queue.pop_front();
            }
            match queue.front() {
                Some(w) => w.clone(),
                None => {
                    shard.blocked.remove(&(db, key.clone()));
                    return;
                }
            }
        };
        let Some(loc) = keys.lookup(key) else { return };
        let has_data = match (&waiter.kind, &keys.entry(loc).value) {
            (BlockKind::Pop { .. } | BlockKind::Move { .. }, Value::List(l)) => !l.is_empty(),
            (BlockKind::ZPop { .. }, Value::ZSet(z)) => !z.is_empty(),
            _ => false,
        };
        if !has_data {
            return;
        }
        if let BlockKind::Move { dst, .. } = &waiter.kind {
            let dst_shard = shard_of(hash_bytes(dst));
            if !keys.try_lock_extra(dst_shard) {
                // Cannot take the destination's lock without risking a deadlock; let
                // the waiter do the move itself, and stop serving this key for now.
                waiter.poke();
                return;
            }
            // The destination must hold a list (or nothing). Otherwise Redis 7.0
            // unblocks this client with WRONGTYPE, leaves the element where it is,
            // and goes on with the next waiter.
            if keys.typed(dst, kind::list, false).is_err() {
                if waiter.claim() {
                    let mut out = Vec::new();
                    Reply::new(&mut out, waiter.proto).error(crate::keyspace::WRONGTYPE);
                    waiter.deliver(out);
                }
                continue;
            }
        }
        if !waiter.claim() {
            continue;
        }
        let reply = perform(keys, &waiter, key);
        waiter.deliver(reply);
    }
}

/// Pops for a claimed waiter: changes the keyspace, propagates the equivalent
/// non-blocking command, and returns the reply bytes for the waiter's protocol.
pub fn perform(keys: &mut Keys<'_>, waiter: &Waiter, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut reply = Reply::new(&mut out, waiter.proto);
    let Some(loc) = keys.lookup_write(key) else {
        debug_assert!(false, "perform on a missing key");
        reply.null_array();
        return out;
    };
    match &waiter.kind {
        BlockKind::Pop { left, count } => {
            let list = keys.value(loc).as_list_mut();
            let n = count.unwrap_or(1).min(list.len());
            assert!(n >= 1, "serve checked the list is not empty");
            let popped: Vec<CompactBytes> =
                (0..n).filter_map(|_| if *left { list.pop_front() } else { list.pop_back() }).collect();
            assert_eq!(popped.len(), n, "popped past the length of the list");
            let pop: &[u8] = if *left { b"LPOP" } else { b"RPOP" };
            reply.array(2);
            reply.bulk(key);
            match count {
                None => {
                    reply.bulk(&popped[0]);
                    keys.propagate([pop, key].into_iter());
                }
                Some(_) => {
                    reply.array(n);
                    for elem in &popped {
                        reply.bulk(elem);
                    }
                    let mut b = itoa::Buffer::new();
                    keys.propagate([pop, key, b.format(n).as_bytes()].into_iter());
                }
            }
            keys.modified_by(key, n as u64);
            keys.delete_if_empty(loc);
        }
        BlockKind::ZPop { min, count } => {
            let zset = keys.value(loc).as_zset_mut();
            let n = count.unwrap_or(1).min(zset.len());
            assert!(n >= 1, "serve checked the zset is not empty");
            let popped: Vec<(CompactBytes, f64)> =
                (0..n).filter_map(|_| if *min { zset.pop_min() } else { zset.pop_max() }).collect();
            assert_eq!(popped.len(), n, "popped past the length of the sorted set");
            let pop: &[u8] = if *min { b"ZPOPMIN" } else { b"ZPOPMAX" };
            match count {
                None => {
                    let (member, score) = &popped[0];
                    reply.array(3);
                    reply.bulk(key);
                    reply.bulk(member);
                    reply.double(*score);
                    keys.propagate([pop, key].into_iter());
                }
                Some(_) => {
                    reply.array(2);
                    reply.bulk(key);
                    reply.array(n);
                    for (member, score) in &popped {
                        reply.array(2);
                        reply.bulk(member);
                        reply.double(*score);
                    }
                    let mut b = itoa::Buffer::new();
                    keys.propagate([pop, key, b.format(n).as_bytes()].into_iter());
                }
            }
            keys.modified_by(key, n as u64);
            keys.delete_if_empty(loc);
        }
        BlockKind::Move { from_left, to_left, dst } => {
            let list = keys.value(loc).as_list_mut();
            let elem = if *from_left { list.pop_front() } else { list.pop_back() };
            let elem = elem.expect("serve checked the list is not empty");
            keys.modified(key);
            keys.delete_if_empty(loc);
            let (dloc, _) =
                keys.get_or_create(dst, kind::list, kind::new_list).expect("serve checked the destination type");
            let dlist = keys.value(dloc).as_list_mut();
            if *to_left {
                dlist.push_front(elem.clone());
            } else {
                dlist.push_back(elem.clone());
            }
            keys.modified(dst);
            keys.propagate(
                [
                    &b"LMOVE"[..],
                    key,
                    dst,
                    if *from_left { b"LEFT" } else { b"RIGHT" },
                    if *to_left { b"LEFT" } else { b"RIGHT" },
                ]
                .into_iter(),
            );
            reply.bulk(&elem);
        }
    }
    out
}

/// Adds `waiter` to the queue of each of its keys. The caller holds the locks of all
/// those shards (the blocking command's key spec names them).
pub fn register(keys: &mut Keys<'_>, waiter: &std::sync::Arc<Waiter>) {
    for key in &waiter.keys {
        let shard = keys.shard(shard_of(hash_bytes(key)));
        shard.blocked.entry((waiter.db, key.clone())).or_default().push_back(waiter.clone());
    }
}

/// Removes `waiter` from every queue it is in (after it was served, timed out or its
/// client left). Locks the shards one at a time.
pub fn unregister(space: &crate::keyspace::Keyspace, waiter: &std::sync::Arc<Waiter>) {
    for key in &waiter.keys {
        let mut shard = space.lock_shard(shard_of(hash_bytes(key)));
        let k = (waiter.db, key.clone());
        if let Some(queue) = shard.blocked.get_mut(&k) {
            queue.retain(|w| !std::sync::Arc::ptr_eq(w, waiter));
            if queue.is_empty() {
                shard.blocked.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_like_redis_7_0() {
        let now = 1_700_000_000_000;
        let ms = |v: u64| Ok(Some(Duration::from_millis(v)));
        assert_eq!(parse_timeout(b"0", now), Ok(None));
        assert_eq!(parse_timeout(b"0.2", now), ms(200));
        assert_eq!(parse_timeout(b"1.5", now), ms(1500));
        assert_eq!(parse_timeout(b"0x10", now), ms(16_000));
        // Rounded up to the millisecond, so a tiny positive timeout is not "forever"
        // and a tiny negative one is.
        assert_eq!(parse_timeout(b"0.0001", now), ms(1));
        assert_eq!(parse_timeout(b"1e-400", now), ms(1));
        assert_eq!(parse_timeout(b"-0.0001", now), Ok(None));
        assert_eq!(parse_timeout(b"-1e-400", now), Ok(None));
        assert_eq!(parse_timeout(b"-0", now), Ok(None));
        // Past what a 64-bit millisecond count holds: Redis's cast makes it negative.
        for huge in [&b"1e20"[..], b"inf", b"-inf", b"1e400", b"9.3e15", b"-1"] {
            assert_eq!(parse_timeout(huge, now), Err(ERR_TIMEOUT_NEGATIVE), "{huge:?}");
        }
        // Fits, but the deadline would overflow: never reached, so forever.
        assert_eq!(parse_timeout(b"9.2233720368547e15", now), Ok(None));
        for bad in [&b"nan"[..], b" 1", b"1 ", b"abc", b"", b"1e5000", b"(1"] {
            assert_eq!(parse_timeout(bad, now), Err(ERR_TIMEOUT_NOT_FLOAT), "{bad:?}");
        }
    }
}
