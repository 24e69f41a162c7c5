//! List commands: pushes and pops at both ends, indexed access, ranges, moves
//! between lists, the multi-key pops (LMPOP) and the blocking pops (BLPOP, BRPOP,
//! BLMPOP, BLMOVE, BRPOPLPUSH).
//!
//! A list is a `VecDeque` of compact strings ([`ListValue`]): O(1) at both ends, O(1)
//! by index, O(n) in the middle (LINSERT, LREM). Redis uses a quicklist (a linked list
//! of listpacks) to save memory on long lists; we trade that memory for simplicity.
//! Redis never stores an empty list, and neither do we: every command that removes
//! elements deletes the key when the list becomes empty.
//!
//! The blocking commands first try to serve themselves like their non-blocking form,
//! on the first non-empty key in argument order. When every key is empty they
//! register a [`Waiter`] in the keys' shards while the command still holds their locks
//! (so no push can slip in between "empty" and "waiting") and ask the connection to
//! block. A later push marks the key ready ([`crate::keyspace::Keys::modified`]) and
//! [`crate::blocking`] serves the oldest waiter before the pusher releases its locks.
//!
//! LMPOP and BLMPOP (Redis 7.0) pop up to COUNT elements from the first non-empty
//! list and reply `[key, [element, ...]]`; they are logged as the `LPOP key n` /
//! `RPOP key n` they amount to, with the number actually popped, so a replay neither
//! waits nor depends on which keys were empty. Their `numkeys` parser and key finder
//! are shared with ZMPOP and BZMPOP (`zsets.rs`).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::{cmd, flag, int_arg, is, range, Action, Command, Ctx, KeySpec, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::blocking::{self, parse_timeout, BlockKind, Waiter};
use crate::keyspace::{kind, CompactBytes, Keys, ListValue, Loc, WRONGTYPE};
use crate::resp::{Args, OwnedArgs};

const W: u32 = flag::WRITE;
const R: u32 = flag::READONLY;
const F: u32 = flag::FAST;
const M: u32 = flag::DENYOOM;
const B: u32 = flag::BLOCKING;
const NS: u32 = flag::NOSCRIPT;
const MK: u32 = flag::MOVABLE_KEYS;

// Summaries are the ones redis-server 7.0 reports in COMMAND DOCS.
#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("lpush", -3, W | M | F, range(1, 1, 1), lpush, "list", "Prepend one or multiple elements to a list", "1.0.0"),
    cmd("rpush", -3, W | M | F, range(1, 1, 1), rpush, "list", "Append one or multiple elements to a list", "1.0.0"),
    cmd("lpushx", -3, W | M | F, range(1, 1, 1), lpushx, "list", "Prepend an element to a list, only if the list exists", "2.2.0"),
    cmd("rpushx", -3, W | M | F, range(1, 1, 1), rpushx, "list", "Append an element to a list, only if the list exists", "2.2.0"),
    cmd("lpop", -2, W | F, range(1, 1, 1), lpop, "list", "Remove and get the first elements in a list", "1.0.0"),
    cmd("rpop", -2, W | F, range(1, 1, 1), rpop, "list", "Remove and get the last elements in a list", "1.0.0"),
    cmd("llen", 2, R | F, range(1, 1, 1), llen, "list", "Get the length of a list", "1.0.0"),
    cmd("lrange", 4, R, range(1, 1, 1), lrange, "list", "Get a range of elements from a list", "1.0.0"),
    cmd("lindex", 3, R, range(1, 1, 1), lindex, "list", "Get an element from a list by its index", "1.0.0"),
    cmd("lset", 4, W | M, range(1, 1, 1), lset, "list", "Set the value of an element in a list by its index", "1.0.0"),
    cmd("linsert", 5, W | M, range(1, 1, 1), linsert, "list", "Insert an element before or after another element in a list", "2.2.0"),
    cmd("lrem", 4, W, range(1, 1, 1), lrem, "list", "Remove elements from a list", "1.0.0"),
    cmd("ltrim", 4, W, range(1, 1, 1), ltrim, "list", "Trim a list to the specified range", "1.0.0"),
    cmd("lpos", -3, R, range(1, 1, 1), lpos, "list", "Return the index of matching elements on a list", "6.0.6"),
    cmd("lmove", 5, W | M, range(1, 2, 1), lmove, "list", "Pop an element from a list, push it to another list and return it", "6.2.0"),
    cmd("rpoplpush", 3, W | M, range(1, 2, 1), rpoplpush, "list", "Remove the last element in a list, prepend it to another list and return it", "1.2.0"),
    cmd("blpop", -3, W | NS | B, range(1, -2, 1), blpop, "list", "Remove and get the first element in a list, or block until one is available", "2.0.0"),
    cmd("brpop", -3, W | NS | B, range(1, -2, 1), brpop, "list", "Remove and get the last element in a list, or block until one is available", "2.0.0"),
    cmd("blmove", 6, W | M | NS | B, range(1, 2, 1), blmove, "list", "Pop an element from a list, push it to another list and return it; or block until one is available", "6.2.0"),
    cmd("brpoplpush", 4, W | M | NS | B, range(1, 2, 1), brpoplpush, "list", "Pop an element from a list, push it to another list and return it; or block until one is available", "2.2.0"),
    cmd("lmpop", -4, W | MK, KeySpec::Find(lmpop_keys), lmpop, "list", "Pop elements from a list", "7.0.0"),
    cmd("blmpop", -5, W | B | MK, KeySpec::Find(blmpop_keys), blmpop, "list", "Pop elements from a list, or block until one is available", "7.0.0"),
];

/// Redis's wording when a count must not be negative (`getPositiveLongFromObjectOrReply`,
/// which uses it for a non-integer too).
const ERR_NOT_POSITIVE: &str = "ERR value is out of range, must be positive";

/// One end of a list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// The head: index 0, where LPUSH and LPOP work.
    Left,
    /// The tail: index -1, where RPUSH and RPOP work.
    Right,
}

impl End {
    /// LEFT or RIGHT, case-insensitively (Redis's `getListPositionFromObjectOrReply`).
    fn parse(arg: &[u8]) -> Option<End> {
        if is(arg, "right") {
            Some(End::Right)
        } else if is(arg, "left") {
            Some(End::Left)
        } else {
            None
        }
    }

    fn is_left(self) -> bool {
        self == End::Left
    }
}

fn push_at(list: &mut ListValue, end: End, elem: CompactBytes) {
    match end {
        End::Left => list.push_front(elem),
        End::Right => list.push_back(elem),
    }
}

fn pop_at(list: &mut ListValue, end: End) -> Option<CompactBytes> {
    match end {
        End::Left => list.pop_front(),
        End::Right => list.pop_back(),
    }
}

/// The list at `loc`, whose type the caller checked.
fn list_at<'k>(keys: &'k mut Keys<'_>, loc: Loc) -> &'k mut ListValue {
    keys.value(loc).as_list_mut()
}

/// Resolves a Redis index (negative counts from the tail) into a position, if it is
/// inside a list of `len` elements.
fn position(index: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if index < 0 { index + len } else { index };
    (0..len).contains(&i).then_some(i as usize)
}

/// Clamps a `start..=end` range with Redis's rules (LRANGE, LTRIM): negative indexes
/// count from the tail, `start` below 0 becomes 0, `end` past the tail becomes the
/// tail. `None` when the range is empty.
fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 { (start + len).max(0) } else { start };
    let end = if end < 0 { end + len } else { end };
    if start > end || start >= len {
        return None;
    }
    let end = end.min(len - 1);
    debug_assert!(0 <= start && start <= end && end < len);
    Some((start as usize, end as usize))
}

// ----- pushes -----

/// LPUSH/RPUSH, and with `only_existing` LPUSHX/RPUSHX (Redis's `pushGenericCommand`).
fn push_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, end: End, only_existing: bool) {
    let key = args.get(1);
    let loc = match ctx.keys.typed(key, kind::list, false) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(Some(loc)) => loc,
        Ok(None) if only_existing => return ctx.reply.int(0),
        Ok(None) => ctx.keys.insert_new(key, kind::new_list()),
    };
    let list = list_at(&mut ctx.keys, loc);
    for elem in args.iter().skip(2) {
        push_at(list, end, CompactBytes::new(elem));
    }
    let len = list.len();
    // The reply is the length right after the push: clients blocked on the key are
    // served after this command, as in Redis.
    ctx.keys.modified_by(key, (args.len() - 2) as u64);
    ctx.reply.int(len as i64);
}

fn lpush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    push_generic(ctx, args, End::Left, false);
}

fn rpush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    push_generic(ctx, args, End::Right, false);
}

fn lpushx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    push_generic(ctx, args, End::Left, true);
}

fn rpushx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    push_generic(ctx, args, End::Right, true);
}

// ----- pops -----

/// LPOP/RPOP `key [count]`. Without a count the reply is one bulk string (or nil);
/// with one it is an array, even for a count of 0, and a null array for a missing key.
fn pop_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, end: End) {
    if args.len() > 3 {
        let name = if end.is_left() { "lpop" } else { "rpop" };
        return ctx.reply.error(&format!("ERR wrong number of arguments for '{name}' command"));
    }
    let count = if args.len() == 3 {
        match int_arg(args.get(2)) {
            Some(n) if n >= 0 => Some(n as u64),
            _ => return ctx.reply.error(ERR_NOT_POSITIVE),
        }
    } else {
        None
    };
    let key = args.get(1);
    let loc = match ctx.keys.typed(key, kind::list, false) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(Some(loc)) => loc,
        Ok(None) if count.is_some() => return ctx.reply.null_array(),
        Ok(None) => return ctx.reply.null_bulk(),
    };
    let popped = match count {
        Some(0) => return ctx.reply.array(0),
        None => {
            let elem = pop_at(list_at(&mut ctx.keys, loc), end);
            debug_assert!(elem.is_some(), "an empty list was stored");
            match elem {
                Some(e) => ctx.reply.bulk(&e),
                None => ctx.reply.null_bulk(),
            }
            1
        }
        Some(n) => {
            let list = list_at(&mut ctx.keys, loc);
            let n = n.min(list.len() as u64) as usize;
            ctx.reply.array(n);
            for _ in 0..n {
                if let Some(e) = pop_at(list, end) {
                    ctx.reply.bulk(&e);
                }
            }
            n
        }
    };
    ctx.keys.modified_by(key, popped as u64);
    ctx.keys.delete_if_empty(loc);
}

fn lpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_generic(ctx, args, End::Left);
}

fn rpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_generic(ctx, args, End::Right);
}

// ----- reads -----

fn llen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match ctx.keys.typed(args.get(1), kind::list, true) {
        Err(_) => ctx.reply.error(WRONGTYPE),
        Ok(None) => ctx.reply.int(0),
        Ok(Some(loc)) => {
            let len = list_at(&mut ctx.keys, loc).len();
            ctx.reply.int(len as i64);
        }
    }
}

fn lrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // Redis parses the indexes before it looks at the key.
    let (Some(start), Some(end)) = (int_arg(args.get(2)), int_arg(args.get(3))) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let loc = match ctx.keys.typed(args.get(1), kind::list, true) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(None) => return ctx.reply.array(0),
        Ok(Some(loc)) => loc,
    };
    let list = ctx.keys.value(loc).as_list_mut();
    match clamp_range(start, end, list.len()) {
        None => ctx.reply.array(0),
        Some((from, to)) => {
            ctx.reply.array(to - from + 1);
            for e in list.range(from..=to) {
                ctx.reply.bulk(e);
            }
        }
    }
}

fn lindex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // Redis looks the key up (and checks its type) before it parses the index.
    let loc = match ctx.keys.typed(args.get(1), kind::list, true) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(None) => return ctx.reply.null_bulk(),
        Ok(Some(loc)) => loc,
    };
    let Some(index) = int_arg(args.get(2)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let list = ctx.keys.value(loc).as_list_mut();
    match position(index, list.len()).and_then(|i| list.get(i)) {
        Some(e) => ctx.reply.bulk(e),
        None => ctx.reply.null_bulk(),
    }
}

/// LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len].
///
/// RANK picks the n-th match (negative: scanning from the tail), COUNT asks for up to
/// that many positions as an array (0: all of them), MAXLEN bounds how many elements
/// are compared. Positions are always counted from the head, as LINDEX counts them.
fn lpos(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let elem = args.get(2);
    let mut rank: i64 = 1;
    let mut count: Option<u64> = None;
    let mut maxlen: u64 = 0;
    let mut i = 3;
    while i < args.len() {
        let opt = args.get(i);
        let has_value = i + 1 < args.len();
        if !has_value || !(is(opt, "rank") || is(opt, "count") || is(opt, "maxlen")) {
            return ctx.reply.error(ERR_SYNTAX);
        }
        // Redis parses COUNT and MAXLEN with a range check whose message covers
        // unparsable values too ("COUNT can't be negative" for "abc").
        let Some(v) = int_arg(args.get(i + 1)) else {
            return ctx.reply.error(if is(opt, "count") {
                "ERR COUNT can't be negative"
            } else if is(opt, "maxlen") {
                "ERR MAXLEN can't be negative"
            } else {
                ERR_NOT_INTEGER
            });
        };
        if is(opt, "rank") {
            if v == 0 {
                return ctx.reply.error(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... \
                     or use negative to start from the end of the list",
                );
            }
            rank = v;
        } else if is(opt, "count") {
            if v < 0 {
                return ctx.reply.error("ERR COUNT can't be negative");
            }
            count = Some(v as u64);
        } else {
            if v < 0 {
                return ctx.reply.error("ERR MAXLEN can't be negative");
            }
            maxlen = v as u64;
        }
        i += 2;
    }
    let loc = match ctx.keys.typed(args.get(1), kind::list, true) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(None) if count.is_some() => return ctx.reply.array(0),
        Ok(None) => return ctx.reply.null_bulk(),
        Ok(Some(loc)) => loc,
    };
    let list = ctx.keys.value(loc).as_list_mut();
    let matches = lpos_scan(list, elem, rank, count.unwrap_or(1), maxlen);
    match count {
        Some(_) => {
            ctx.reply.array(matches.len());
            for m in matches {
                ctx.reply.int(m as i64);
            }
        }
        None => match matches.first() {
            Some(&m) => ctx.reply.int(m as i64),
            None => ctx.reply.null_bulk(),
        },
    }
}

/// The positions LPOS reports: matches number `|rank|`, `|rank| + 1`, ... (at most
/// `count` of them, all when 0), scanning from the tail when `rank` is negative and
/// comparing at most `maxlen` elements (all when 0).
fn lpos_scan(list: &ListValue, elem: &[u8], rank: i64, count: u64, maxlen: u64) -> Vec<usize> {
    debug_assert!(rank != 0);
    // Redis negates a negative rank in a C `long`, so RANK -2^63 stays negative: every
    // match then counts as past the rank and COUNT never stops the scan.
    let (skip, count) = if rank == i64::MIN { (0, 0) } else { (rank.unsigned_abs() - 1, count) };
    let limit = if maxlen == 0 { list.len() } else { (maxlen.min(list.len() as u64)) as usize };
    let from_tail = rank < 0;
    let mut seen = 0u64;
    let mut found = Vec::new();
    for step in 0..limit {
        let pos = if from_tail { list.len() - 1 - step } else { step };
        if list[pos].as_slice() != elem {
            continue;
        }
        seen += 1;
        if seen > skip {
            found.push(pos);
            if count != 0 && found.len() as u64 >= count {
                break;
            }
        }
    }
    found
}

// ----- writes in place -----

fn lset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let loc = match ctx.keys.typed(key, kind::list, false) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(None) => return ctx.reply.error("ERR no such key"),
        Ok(Some(loc)) => loc,
    };
    let Some(index) = int_arg(args.get(2)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let list = list_at(&mut ctx.keys, loc);
    let Some(slot) = position(index, list.len()).and_then(|i| list.get_mut(i)) else {
        return ctx.reply.error("ERR index out of range");
    };
    *slot = CompactBytes::new(args.get(3));
    ctx.keys.modified_by(key, 1);
    ctx.reply.ok();
}

fn linsert(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let after = if is(args.get(2), "after") {
        true
    } else if is(args.get(2), "before") {
        false
    } else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    let key = args.get(1);
    let loc = match ctx.keys.typed(key, kind::list, false) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(None) => return ctx.reply.int(0),
        Ok(Some(loc)) => loc,
    };
    let (pivot, elem) = (args.get(3), args.get(4));
    let list = list_at(&mut ctx.keys, loc);
    let Some(at) = list.iter().position(|e| e.as_slice() == pivot) else {
        return ctx.reply.int(-1);
    };
    list.insert(at + after as usize, CompactBytes::new(elem));
    let len = list.len();
    ctx.keys.modified_by(key, 1);
    ctx.reply.int(len as i64);
}

fn lrem(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(count) = int_arg(args.get(2)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let key = args.get(1);
    let loc = match ctx.keys.typed(key, kind::list, false) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(None) => return ctx.reply.int(0),
        Ok(Some(loc)) => loc,
    };
    let removed = remove_matches(list_at(&mut ctx.keys, loc), args.get(3), count);
    if removed > 0 {
        ctx.keys.modified_by(key, removed as u64);
        ctx.keys.delete_if_empty(loc);
    }
    ctx.reply.int(removed as i64);
}

/// Removes elements equal to `elem`: the first `count` from the head when positive,
/// the last `-count` from the tail when negative, all of them when 0. Returns how
/// many were removed.
fn remove_matches(list: &mut ListValue, elem: &[u8], count: i64) -> usize {
    let before = list.len();
    let wanted = if count == 0 { usize::MAX } else { usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX) };
    if count >= 0 {
        let mut left = wanted;
        list.retain(|e| {
            if left > 0 && e.as_slice() == elem {
                left -= 1;
                false
            } else {
                true
            }
        });
    } else {
        // The position of the `wanted`-th match from the tail; every match at or
        // after it goes.
        let mut first_removed = list.len();
        let mut seen = 0;
        for (pos, e) in list.iter().enumerate().rev() {
            if e.as_slice() == elem {
                first_removed = pos;
                seen += 1;
                if seen == wanted {
                    break;
                }
            }
        }
        let mut pos = 0;
        list.retain(|e| {
            let keep = pos < first_removed || e.as_slice() != elem;
            pos += 1;
            keep
        });
    }
    before - list.len()
}

fn ltrim(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (Some(start), Some(end)) = (int_arg(args.get(2)), int_arg(args.get(3))) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let key = args.get(1);
    let loc = match ctx.keys.typed(key, kind::list, false) {
        Err(_) => return ctx.reply.error(WRONGTYPE),
        Ok(None) => return ctx.reply.ok(),
        Ok(Some(loc)) => loc,
    };
    let list = list_at(&mut ctx.keys, loc);
    let before = list.len();
    match clamp_range(start, end, before) {
        None => list.clear(),
        Some((from, to)) => {
            list.truncate(to + 1);
            list.drain(..from);
        }
    }
    let trimmed = before - list.len();
    ctx.keys.modified_by(key, trimmed as u64);
    ctx.keys.delete_if_empty(loc);
    ctx.reply.ok();
}

// ----- moves -----

/// LMOVE's work once the arguments are parsed (Redis's `lmoveGenericCommand`): pops
/// from `src` at `from`, pushes to `dst` at `to`, replies with the element. A missing
/// source answers nil; a wrong type on either key answers WRONGTYPE before anything
/// moves. Returns whether an element moved.
fn move_element(ctx: &mut Ctx<'_>, src: &[u8], dst: &[u8], from: End, to: End) -> bool {
    let sloc = match ctx.keys.typed(src, kind::list, false) {
        Err(_) => {
            ctx.reply.error(WRONGTYPE);
            return false;
        }
        Ok(None) => {
            ctx.reply.null_bulk();
            return false;
        }
        Ok(Some(loc)) => loc,
    };
    if src == dst {
        // A rotation: the list never becomes empty, so the key (and its TTL) stays.
        let list = list_at(&mut ctx.keys, sloc);
        let Some(elem) = pop_at(list, from) else {
            debug_assert!(false, "an empty list was stored");
            ctx.reply.null_bulk();
            return false;
        };
        push_at(list, to, elem.clone());
        ctx.keys.modified_by(src, 1);
        ctx.reply.bulk(&elem);
        return true;
    }
    if ctx.keys.typed(dst, kind::list, false).is_err() {
        ctx.reply.error(WRONGTYPE);
        return false;
    }
    // Looking `dst` up may have deleted it (expired), moving other keys of the same
    // table: find the source again.
    let Some(sloc) = ctx.keys.lookup(src) else {
        unreachable!("the source was found under the same locks");
    };
    let Some(elem) = pop_at(list_at(&mut ctx.keys, sloc), from) else {
        debug_assert!(false, "an empty list was stored");
        ctx.reply.null_bulk();
        return false;
    };
    ctx.keys.modified_by(src, 1);
    // Deleting the source can move other keys of its table, so `dst` is looked up
    // again afterwards.
    ctx.keys.delete_if_empty(sloc);
    let Ok((dloc, _)) = ctx.keys.get_or_create(dst, kind::list, kind::new_list) else {
        unreachable!("the destination's type was checked under the same locks");
    };
    push_at(list_at(&mut ctx.keys, dloc), to, elem.clone());
    // Redis counts one change for the whole move.
    ctx.keys.modified_by(dst, 0);
    ctx.reply.bulk(&elem);
    true
}

fn lmove(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(from) = End::parse(args.get(3)) else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    let Some(to) = End::parse(args.get(4)) else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    move_element(ctx, args.get(1), args.get(2), from, to);
}

fn rpoplpush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    move_element(ctx, args.get(1), args.get(2), End::Right, End::Left);
}

// ----- blocking commands -----

/// Registers the client as a waiter on `keys` and asks the connection to block. The
/// command's locks are still held, so no push can come between the emptiness check
/// and the registration. Nothing is replied now: the connection writes the waiter's
/// reply, or a null array at the timeout.
fn block(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: BlockKind, keys: Vec<CompactBytes>, timeout: Option<Duration>) {
    debug_assert!(!ctx.in_exec, "a transaction must never block");
    debug_assert!(!keys.is_empty());
    let waiter = Arc::new(Waiter::new(kind, ctx.keys.db, keys, ctx.session.proto));
    blocking::register(&mut ctx.keys, &waiter);
    ctx.action = Some(Action::Block { waiter, timeout, retry: OwnedArgs::from_args(args) });
}

/// Pops from the first non-empty list among the arguments `keys`, in argument order,
/// and replies; a key of another type met before it is WRONGTYPE. With `count: None`
/// (BLPOP) one element, replied `[key, element]` and logged `LPOP key`; with
/// `Some(n)` (LMPOP, BLMPOP) up to `n`, replied `[key, [element, ...]]` and logged
/// `LPOP key m` with the number `m` actually popped. Returns whether it replied;
/// `false` means every key was missing.
fn pop_first_nonempty(ctx: &mut Ctx<'_>, args: &Args<'_>, keys: Range<usize>, end: End, count: Option<usize>) -> bool {
    for i in keys {
        let key = args.get(i);
        let loc = match ctx.keys.typed(key, kind::list, false) {
            Err(_) => {
                ctx.reply.error(WRONGTYPE);
                return true;
            }
            Ok(None) => continue,
            Ok(Some(loc)) => loc,
        };
        let list = list_at(&mut ctx.keys, loc);
        let n = count.unwrap_or(1).min(list.len());
        if n == 0 {
            debug_assert!(false, "an empty list was stored");
            continue;
        }
        ctx.reply.array(2);
        ctx.reply.bulk(key);
        if count.is_some() {
            ctx.reply.array(n);
        }
        for _ in 0..n {
            match pop_at(list, end) {
                Some(e) => ctx.reply.bulk(&e),
                None => unreachable!("popped past the length of the list"),
            }
        }
        ctx.keys.modified_by(key, n as u64);
        ctx.keys.delete_if_empty(loc);
        let pop: &[u8] = if end.is_left() { b"LPOP" } else { b"RPOP" };
        let mut b = itoa::Buffer::new();
        match count {
            None => ctx.keys.propagate([pop, key].into_iter()),
            Some(_) => ctx.keys.propagate([pop, key, b.format(n).as_bytes()].into_iter()),
        }
        return true;
    }
    false
}

/// BLPOP/BRPOP key [key ...] timeout (Redis's `blockingPopGenericCommand`).
fn blocking_pop(ctx: &mut Ctx<'_>, args: &Args<'_>, end: End) {
    let last = args.len() - 1;
    let timeout = match parse_timeout(args.get(last), ctx.keys.now_ms) {
        Ok(t) => t,
        Err(e) => return ctx.reply.error(e),
    };
    if pop_first_nonempty(ctx, args, 1..last, end, None) {
        return;
    }
    if ctx.in_exec {
        // A transaction cannot wait: Redis answers as if the timeout had passed.
        return ctx.reply.null_array();
    }
    let keys = (1..last).map(|i| CompactBytes::new(args.get(i))).collect();
    block(ctx, args, BlockKind::Pop { left: end.is_left(), count: None }, keys, timeout);
}

fn blpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    blocking_pop(ctx, args, End::Left);
}

fn brpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    blocking_pop(ctx, args, End::Right);
}

// ----- LMPOP, BLMPOP -----

/// The key positions of a `numkeys key [key ...]` command whose `numkeys` is argument
/// `at` (LMPOP: 1, BLMPOP: 2, and the sorted set commands that share this shape). A
/// key finder must not fail: a bad `numkeys` names no key (the handler replies with
/// the error) and one larger than what follows names the keys that are there.
pub(super) fn keys_after_numkeys(args: &Args<'_>, at: usize, out: &mut Vec<usize>) {
    if at >= args.len() {
        return;
    }
    let Some(n) = int_arg(args.get(at)).filter(|&n| n >= 1) else {
        return;
    };
    let present = args.len() - at - 1;
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(present);
    out.extend(at + 1..at + 1 + n);
}

fn lmpop_keys(args: &Args<'_>, out: &mut Vec<usize>) {
    keys_after_numkeys(args, 1, out);
}

fn blmpop_keys(args: &Args<'_>, out: &mut Vec<usize>) {
    keys_after_numkeys(args, 2, out);
}

const ERR_NUMKEYS: &str = "ERR numkeys should be greater than 0";
const ERR_COUNT: &str = "ERR count should be greater than 0";

/// What `numkeys key [key ...] <side> [COUNT count]` asks for (LMPOP, BLMPOP, and
/// with MIN|MAX as the side ZMPOP, BZMPOP).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Mpop<S> {
    /// The argument positions of the keys.
    pub keys: Range<usize>,
    /// Which end to pop from.
    pub side: S,
    /// How many elements at most; 1 when COUNT is not given (the reply is nested
    /// either way).
    pub count: usize,
}

/// Parses `numkeys key [key ...] <side> [COUNT count]`, with `numkeys` at argument
/// `numkeys_at`, in Redis 7.0's order (`lmpopGenericCommand`, `zmpopGenericCommand`):
/// numkeys, then the side, then COUNT, each with its own message. A second COUNT is
/// a syntax error.
pub(super) fn parse_mpop<S>(
    args: &Args<'_>,
    numkeys_at: usize,
    side: fn(&[u8]) -> Option<S>,
) -> Result<Mpop<S>, &'static str> {
    let numkeys = match int_arg(args.get(numkeys_at)) {
        Some(n) if n >= 1 => n as u64,
        _ => return Err(ERR_NUMKEYS),
    };
    // The side comes right after the keys; it must be there.
    let first_key = numkeys_at + 1;
    if numkeys >= (args.len() - first_key) as u64 {
        return Err(ERR_SYNTAX);
    }
    let side_at = first_key + numkeys as usize;
    let side = side(args.get(side_at)).ok_or(ERR_SYNTAX)?;
    let mut count = None;
    let mut j = side_at + 1;
    while j < args.len() {
        if count.is_none() && is(args.get(j), "count") && j + 1 < args.len() {
            j += 1;
            match int_arg(args.get(j)) {
                Some(n) if n >= 1 => count = Some(usize::try_from(n).unwrap_or(usize::MAX)),
                _ => return Err(ERR_COUNT),
            }
        } else {
            return Err(ERR_SYNTAX);
        }
        j += 1;
    }
    Ok(Mpop { keys: first_key..side_at, side, count: count.unwrap_or(1) })
}

/// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]: pops from the first
/// non-empty list, replies `[key, [element, ...]]`, or a null array when all are
/// empty. Logged as the `LPOP key n` / `RPOP key n` it amounts to.
fn lmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mpop = match parse_mpop(args, 1, End::parse) {
        Ok(m) => m,
        Err(e) => return ctx.reply.error(e),
    };
    if !pop_first_nonempty(ctx, args, mpop.keys, mpop.side, Some(mpop.count)) {
        ctx.reply.null_array();
    }
}

/// BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]: LMPOP, or wait for
/// one of the keys. The timeout is checked after the other arguments, as in Redis.
fn blmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mpop = match parse_mpop(args, 2, End::parse) {
        Ok(m) => m,
        Err(e) => return ctx.reply.error(e),
    };
    let timeout = match parse_timeout(args.get(1), ctx.keys.now_ms) {
        Ok(t) => t,
        Err(e) => return ctx.reply.error(e),
    };
    if pop_first_nonempty(ctx, args, mpop.keys.clone(), mpop.side, Some(mpop.count)) {
        return;
    }
    if ctx.in_exec {
        return ctx.reply.null_array();
    }
    let keys = mpop.keys.map(|i| CompactBytes::new(args.get(i))).collect();
    block(ctx, args, BlockKind::Pop { left: mpop.side.is_left(), count: Some(mpop.count) }, keys, timeout);
}

/// BLMOVE and BRPOPLPUSH once parsed (Redis's `blmoveGenericCommand`): move now when
/// the source has data, else block on the source alone. The destination's type is
/// only checked when something moves.
fn blocking_move(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    nonblocking: &[u8],
    from: End,
    to: End,
    timeout: Option<Duration>,
) {
    let (src, dst) = (args.get(1), args.get(2));
    match ctx.keys.typed(src, kind::list, false) {
        Err(_) => ctx.reply.error(WRONGTYPE),
        Ok(Some(_)) => {
            if move_element(ctx, src, dst, from, to) {
                // Logged as the non-blocking form, which replays without waiting: the
                // same arguments without the timeout.
                let mut parts = vec![nonblocking];
                parts.extend(args.iter().skip(1).take(args.len() - 2));
                ctx.keys.propagate(parts.into_iter());
            }
        }
        // Unlike BLPOP, Redis answers a plain nil here inside a transaction.
        Ok(None) if ctx.in_exec => ctx.reply.null_bulk(),
        Ok(None) => {
            let kind =
                BlockKind::Move { from_left: from.is_left(), to_left: to.is_left(), dst: CompactBytes::new(dst) };
            block(ctx, args, kind, vec![CompactBytes::new(src)], timeout);
        }
    }
}

fn blmove(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(from) = End::parse(args.get(3)) else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    let Some(to) = End::parse(args.get(4)) else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    match parse_timeout(args.get(5), ctx.keys.now_ms) {
        Ok(timeout) => blocking_move(ctx, args, b"LMOVE", from, to, timeout),
        Err(e) => ctx.reply.error(e),
    }
}

fn brpoplpush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match parse_timeout(args.get(3), ctx.keys.now_ms) {
        Ok(timeout) => blocking_move(ctx, args, b"RPOPLPUSH", End::Right, End::Left, timeout),
        Err(e) => ctx.reply.error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(items: &[&str]) -> ListValue {
        items.iter().map(|s| CompactBytes::new(s.as_bytes())).collect()
    }

    fn strings(l: &ListValue) -> Vec<String> {
        l.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect()
    }

    /// Arguments as the parser would hand them over: one buffer and the spans in it.
    fn with_args<T>(parts: &[&[u8]], f: impl FnOnce(&Args<'_>) -> T) -> T {
        let mut data = Vec::new();
        let mut spans = Vec::new();
        for p in parts {
            spans.push(data.len()..data.len() + p.len());
            data.extend_from_slice(p);
        }
        f(&Args::new(&data, &spans))
    }

    fn finder_keys(parts: &[&str], at: usize) -> Vec<usize> {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        with_args(&parts, |args| {
            let mut out = Vec::new();
            keys_after_numkeys(args, at, &mut out);
            out
        })
    }

    fn mpop(parts: &[&str]) -> Result<Mpop<End>, &'static str> {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        with_args(&parts, |args| parse_mpop(args, 1, End::parse))
    }

    #[test]
    fn numkeys_finder_names_the_keys_that_are_there() {
        assert_eq!(finder_keys(&["LMPOP", "2", "a", "b", "LEFT"], 1), [2, 3]);
        assert_eq!(finder_keys(&["BLMPOP", "0", "1", "a", "LEFT"], 2), [3]);
        // More keys announced than given: the ones present (the handler errors).
        assert_eq!(finder_keys(&["LMPOP", "9", "a"], 1), [2]);
        assert_eq!(finder_keys(&["LMPOP", "9223372036854775807", "a"], 1), [2]);
        for bad in ["0", "-1", "abc", ""] {
            assert!(finder_keys(&["LMPOP", bad, "a", "LEFT"], 1).is_empty(), "{bad:?}");
        }
        assert!(finder_keys(&["LMPOP"], 1).is_empty());
        assert!(finder_keys(&["BLMPOP", "0"], 2).is_empty());
    }

    #[test]
    fn mpop_arguments_fail_in_redis_order() {
        assert_eq!(mpop(&["LMPOP", "2", "a", "b", "right"]), Ok(Mpop { keys: 2..4, side: End::Right, count: 1 }));
        assert_eq!(
            mpop(&["LMPOP", "1", "a", "LEFT", "count", "7"]),
            Ok(Mpop { keys: 2..3, side: End::Left, count: 7 })
        );
        assert_eq!(mpop(&["LMPOP", "0", "a", "MIDDLE", "COUNT", "0"]), Err(ERR_NUMKEYS));
        assert_eq!(mpop(&["LMPOP", "abc", "a", "LEFT"]), Err(ERR_NUMKEYS));
        assert_eq!(mpop(&["LMPOP", "2", "a", "LEFT"]), Err(ERR_SYNTAX), "the side must follow the keys");
        assert_eq!(mpop(&["LMPOP", "9223372036854775807", "a", "LEFT"]), Err(ERR_SYNTAX));
        assert_eq!(mpop(&["LMPOP", "1", "a", "MIDDLE", "COUNT", "0"]), Err(ERR_SYNTAX));
        assert_eq!(mpop(&["LMPOP", "1", "a", "LEFT", "COUNT", "0"]), Err(ERR_COUNT));
        assert_eq!(mpop(&["LMPOP", "1", "a", "LEFT", "COUNT", "-1"]), Err(ERR_COUNT));
        assert_eq!(mpop(&["LMPOP", "1", "a", "LEFT", "COUNT"]), Err(ERR_SYNTAX));
        assert_eq!(mpop(&["LMPOP", "1", "a", "LEFT", "COUNT", "1", "COUNT", "2"]), Err(ERR_SYNTAX));
    }

    #[test]
    fn ranges_follow_redis_rules() {
        assert_eq!(clamp_range(0, -1, 5), Some((0, 4)));
        assert_eq!(clamp_range(-100, 100, 5), Some((0, 4)));
        assert_eq!(clamp_range(-2, -1, 5), Some((3, 4)));
        assert_eq!(clamp_range(3, 1, 5), None);
        assert_eq!(clamp_range(5, 10, 5), None);
        assert_eq!(clamp_range(-1, -3, 5), None);
        assert_eq!(clamp_range(0, -1, 0), None);
        assert_eq!(clamp_range(i64::MIN, i64::MAX, 3), Some((0, 2)));
        assert_eq!(position(-1, 3), Some(2));
        assert_eq!(position(3, 3), None);
        assert_eq!(position(-4, 3), None);
        assert_eq!(position(i64::MIN, 3), None);
    }

    #[test]
    fn lrem_from_either_end() {
        let mut l = list(&["a", "b", "a", "c", "a"]);
        assert_eq!(remove_matches(&mut l, b"a", -2), 2);
        assert_eq!(strings(&l), ["a", "b", "c"]);
        let mut l = list(&["a", "b", "a", "c", "a"]);
        assert_eq!(remove_matches(&mut l, b"a", 2), 2);
        assert_eq!(strings(&l), ["b", "c", "a"]);
        assert_eq!(remove_matches(&mut l, b"a", 0), 1);
        assert_eq!(remove_matches(&mut l, b"zz", i64::MIN), 0);
        assert_eq!(strings(&l), ["b", "c"]);
    }

    /// LPOS as Redis's loop computes it, step by step.
    fn lpos_model(list: &[u8], elem: u8, rank: i64, count: u64, maxlen: u64) -> Vec<usize> {
        let from_tail = rank < 0;
        let rank = rank.unsigned_abs();
        let mut out = Vec::new();
        let mut matches = 0;
        let order: Vec<usize> = if from_tail { (0..list.len()).rev().collect() } else { (0..list.len()).collect() };
        for (index, &pos) in order.iter().enumerate() {
            if maxlen != 0 && index as u64 >= maxlen {
                break;
            }
            if list[pos] == elem {
                matches += 1;
                if matches >= rank {
                    out.push(pos);
                    if count != 0 && matches - rank + 1 >= count {
                        break;
                    }
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn lpos_matches_the_model(
            items in prop::collection::vec(0u8..3, 0..20),
            elem in 0u8..3,
            rank in prop_oneof![-6i64..=-1, 1i64..=6],
            count in 0u64..5,
            maxlen in 0u64..25,
        ) {
            let l: ListValue = items.iter().map(|b| CompactBytes::new(&[*b])).collect();
            prop_assert_eq!(lpos_scan(&l, &[elem], rank, count, maxlen), lpos_model(&items, elem, rank, count, maxlen));
        }

        #[test]
        fn lrem_matches_the_model(items in prop::collection::vec(0u8..3, 0..20), elem in 0u8..3, count in -5i64..5) {
            let mut l: ListValue = items.iter().map(|b| CompactBytes::new(&[*b])).collect();
            // The model: delete matches one at a time, scanning from the chosen end.
            let mut model = items.clone();
            let mut removed = 0;
            let limit = if count == 0 { usize::MAX } else { count.unsigned_abs() as usize };
            if count >= 0 {
                let mut i = 0;
                while i < model.len() && removed < limit {
                    if model[i] == elem { model.remove(i); removed += 1; } else { i += 1; }
                }
            } else {
                let mut i = model.len();
                while i > 0 && removed < limit {
                    i -= 1;
                    if model[i] == elem { model.remove(i); removed += 1; }
                }
            }
            prop_assert_eq!(remove_matches(&mut l, &[elem], count), removed);
            let left: Vec<u8> = l.iter().map(|e| e[0]).collect();
            prop_assert_eq!(left, model);
        }

        /// A key finder runs before any validation: whatever the arguments, it must
        /// not panic and must name only arguments that exist, after `numkeys`.
        #[test]
        fn numkeys_finder_never_panics(
            parts in prop::collection::vec(prop_oneof![
                Just(b"1".to_vec()), Just(b"3".to_vec()), Just(b"-1".to_vec()), Just(b"0".to_vec()),
                Just(b"99999999999999999999".to_vec()), prop::collection::vec(any::<u8>(), 0..4),
            ], 0..8),
            at in 0usize..4,
        ) {
            let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            let found = with_args(&parts, |args| {
                let mut out = Vec::new();
                keys_after_numkeys(args, at, &mut out);
                out
            });
            prop_assert!(found.iter().all(|&i| i > at && i < parts.len()));
            let found_mpop = with_args(&parts, |args| {
                if args.len() > at { parse_mpop(args, at, End::parse).ok().map(|m| m.keys) } else { None }
            });
            if let Some(keys) = found_mpop {
                prop_assert!(keys.start == at + 1 && keys.end < parts.len());
                prop_assert_eq!(keys.collect::<Vec<_>>(), found);
            }
        }

        #[test]
        fn ranges_stay_inside_the_list(start in -30i64..30, end in -30i64..30, len in 0usize..20) {
            if let Some((from, to)) = clamp_range(start, end, len) {
                prop_assert!(from <= to && to < len);
            }
        }
    }
}
