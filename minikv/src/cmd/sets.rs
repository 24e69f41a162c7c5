//! Set commands: membership, random members, the algebra (SINTER, SUNION, SDIFF and
//! their STORE forms, SINTERCARD), SMOVE and SSCAN.
//!
//! A set is a [`Dict`] of members ([`SetValue`]): O(1) membership, an unbiased random
//! member in O(1) (the entries are dense), and a SCAN cursor that survives changes.
//! Redis keeps small all-integer sets as a sorted `intset` and big ones as a hash
//! table; we always use the dict. The one place the difference shows is SSCAN, which
//! Redis answers in a single call for an intset, so we do the same for sets that would
//! be one (see [`scan_returns_whole`]).
//!
//! Multi-key commands read every source set first, then compute the result outside the
//! keyspace, then write the destination, so a destination that is also a source
//! (`SINTERSTORE a a b`) sees the sources as they were. Random commands (SPOP,
//! SRANDMEMBER, and HRANDFIELD through [`sample_distinct`]) draw from `fastrand`; SPOP
//! is written to the AOF as the SREM of what it actually removed, so replay is exact.
//!
//! This file also holds the two helpers HSCAN and HRANDFIELD share with their set
//! counterparts: the cursor and option parsing of the SCAN family, and sampling
//! without repeats.
//!
//! Left out: keyspace notifications (minikv has none), and Redis's intset ordering
//! (SMEMBERS of a small all-integer set comes sorted from Redis, in insertion order
//! from us; Redis documents the order as unspecified).

use std::collections::HashSet;

use super::{cmd, flag, int_arg, is, range, Command, Ctx, KeySpec, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::keyspace::{kind, CompactBytes, Dict, Keys, Loc, SetValue, Value, WRONGTYPE};
use crate::resp::{parse_i64_strict, Args, Reply};

const W: u32 = flag::WRITE;
const R: u32 = flag::READONLY;
const F: u32 = flag::FAST;
const M: u32 = flag::DENYOOM;
const MK: u32 = flag::MOVABLE_KEYS;

// Summaries are the ones redis-server 7.0 reports in COMMAND DOCS.
#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("sadd", -3, W | M | F, range(1, 1, 1), sadd, "set", "Add one or more members to a set", "1.0.0"),
    cmd("srem", -3, W | F, range(1, 1, 1), srem, "set", "Remove one or more members from a set", "1.0.0"),
    cmd("smembers", 2, R, range(1, 1, 1), smembers, "set", "Get all the members in a set", "1.0.0"),
    cmd("sismember", 3, R | F, range(1, 1, 1), sismember, "set", "Determine if a given value is a member of a set", "1.0.0"),
    cmd("smismember", -3, R | F, range(1, 1, 1), smismember, "set", "Returns the membership associated with the given elements for a set", "6.2.0"),
    cmd("scard", 2, R | F, range(1, 1, 1), scard, "set", "Get the number of members in a set", "1.0.0"),
    cmd("spop", -2, W | F, range(1, 1, 1), spop, "set", "Remove and return one or multiple random members from a set", "1.0.0"),
    cmd("srandmember", -2, R, range(1, 1, 1), srandmember, "set", "Get one or multiple random members from a set", "1.0.0"),
    cmd("smove", 4, W | F, range(1, 2, 1), smove, "set", "Move a member from one set to another", "1.0.0"),
    cmd("sinter", -2, R, range(1, -1, 1), sinter, "set", "Intersect multiple sets", "1.0.0"),
    cmd("sintercard", -3, R | MK, KeySpec::Find(sintercard_keys), sintercard, "set", "Intersect multiple sets and return the cardinality of the result", "7.0.0"),
    cmd("sinterstore", -3, W | M, range(1, -1, 1), sinterstore, "set", "Intersect multiple sets and store the resulting set in a key", "1.0.0"),
    cmd("sunion", -2, R, range(1, -1, 1), sunion, "set", "Add multiple sets", "1.0.0"),
    cmd("sunionstore", -3, W | M, range(1, -1, 1), sunionstore, "set", "Add multiple sets and store the resulting set in a key", "1.0.0"),
    cmd("sdiff", -2, R, range(1, -1, 1), sdiff, "set", "Subtract multiple sets", "1.0.0"),
    cmd("sdiffstore", -3, W | M, range(1, -1, 1), sdiffstore, "set", "Subtract multiple sets and store the resulting set in a key", "1.0.0"),
    cmd("sscan", -3, R, range(1, 1, 1), sscan, "set", "Incrementally iterate Set elements", "2.8.0"),
];

/// Redis's wording for a count that must not be negative
/// (`getPositiveLongFromObjectOrReply`, which uses it for a non-integer too).
const ERR_NOT_POSITIVE: &str = "ERR value is out of range, must be positive";
/// Redis 7.0.8+ refuses `i64::MIN` as a random count (its negation overflows), with the
/// generic message of `getRangeLongFromObjectOrReply`.
pub(super) const ERR_COUNT_RANGE: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";

/// The biggest set Redis 7.0 keeps as an intset (`set-max-intset-entries` default),
/// which SSCAN returns whole.
const INTSET_MAX_ENTRIES: usize = 512;

/// The set at `loc`, whose type the caller checked.
fn set_at<'k>(keys: &'k mut Keys<'_>, loc: Loc) -> &'k mut SetValue {
    keys.value(loc).as_set_mut()
}

/// The set at `key` (looked up as a read or a write, for the keyspace statistics):
/// `Ok(None)` when missing, `Err` (WRONGTYPE already replied) for another type.
fn find_set(ctx: &mut Ctx<'_>, key: &[u8], read: bool) -> Result<Option<Loc>, Replied> {
    match ctx.keys.typed(key, kind::set, read) {
        Ok(found) => Ok(found),
        Err(_) => {
            ctx.reply.error(WRONGTYPE);
            Err(Replied)
        }
    }
}

/// The handler already sent its reply (an error); it must return without changes.
pub(super) struct Replied;

// ----- single-set commands -----

fn sadd(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let (loc, _) = match ctx.keys.get_or_create(key, kind::set, kind::new_set) {
        Ok(found) => found,
        Err(_) => return ctx.reply.error(WRONGTYPE),
    };
    let set = set_at(&mut ctx.keys, loc);
    let mut added = 0;
    for member in args.iter().skip(2) {
        if !set.contains(member) {
            set.insert(CompactBytes::new(member), ());
            added += 1;
        }
    }
    debug_assert!(!set.is_empty());
    if added > 0 {
        ctx.keys.modified_by(key, added);
    }
    ctx.reply.int(added as i64);
}

fn srem(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let loc = match find_set(ctx, key, false) {
        Ok(Some(loc)) => loc,
        Ok(None) => return ctx.reply.int(0),
        Err(Replied) => return,
    };
    let set = set_at(&mut ctx.keys, loc);
    let mut removed = 0;
    for member in args.iter().skip(2) {
        if set.remove(member).is_some() {
            removed += 1;
            if set.is_empty() {
                break;
            }
        }
    }
    if removed > 0 {
        ctx.keys.delete_if_empty(loc);
        ctx.keys.modified_by(key, removed);
    }
    ctx.reply.int(removed as i64);
}

fn smembers(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let loc = match find_set(ctx, args.get(1), true) {
        Ok(Some(loc)) => loc,
        Ok(None) => return ctx.reply.set(0),
        Err(Replied) => return,
    };
    let set = set_at(&mut ctx.keys, loc);
    ctx.reply.set(set.len());
    for member in set.keys() {
        ctx.reply.bulk(member);
    }
}

fn sismember(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match find_set(ctx, args.get(1), true) {
        Ok(Some(loc)) => {
            let found = set_at(&mut ctx.keys, loc).contains(args.get(2));
            ctx.reply.int(found as i64)
        }
        Ok(None) => ctx.reply.int(0),
        Err(Replied) => {}
    }
}

fn smismember(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // A missing key is an empty set: a zero for every member.
    let found = match find_set(ctx, args.get(1), true) {
        Ok(found) => found,
        Err(Replied) => return,
    };
    ctx.reply.array(args.len() - 2);
    for member in args.iter().skip(2) {
        let is_member = match found {
            Some(loc) => set_at(&mut ctx.keys, loc).contains(member),
            None => false,
        };
        ctx.reply.int(is_member as i64);
    }
}

fn scard(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match find_set(ctx, args.get(1), true) {
        Ok(Some(loc)) => {
            let len = set_at(&mut ctx.keys, loc).len();
            ctx.reply.int(len as i64)
        }
        Ok(None) => ctx.reply.int(0),
        Err(Replied) => {}
    }
}

// ----- random members -----

/// A random count argument of SRANDMEMBER/HRANDFIELD: any i64 but `i64::MIN`, whose
/// magnitude does not fit (Redis's range is `-LONG_MAX..=LONG_MAX`).
pub(super) fn random_count_arg(arg: &[u8]) -> Result<i64, &'static str> {
    match int_arg(arg) {
        None => Err(ERR_NOT_INTEGER),
        Some(i64::MIN) => Err(ERR_COUNT_RANGE),
        Some(n) if n < -MAX_RANDOM_REPEATS => Err(ERR_TOO_MANY_REPEATS),
        Some(n) => Ok(n),
    }
}

/// The most elements a negative count (picks may repeat) can ask for.
///
/// A negative count is not bounded by the size of the set, so `SRANDMEMBER k -4e18`
/// asks for a reply no machine can hold; Redis 7.0 tries and dies (7.2 added a similar
/// bound). minikv refuses it: nothing a client sends may take the server down.
/// 64M elements is far beyond any sane use and fits in memory.
pub(super) const MAX_RANDOM_REPEATS: i64 = 64 * 1024 * 1024;
const ERR_TOO_MANY_REPEATS: &str = "ERR value is out of range, a negative count can ask for at most 67108864 elements";

/// `count` distinct positions out of `0..len`, in random order (`count <= len`).
///
/// Like Redis's SRANDMEMBER and HRANDFIELD, the method depends on how much of the
/// whole is wanted: close to all of it, shuffling the front of a list of every
/// position (a partial Fisher–Yates) costs `len`; a small part, drawing positions and
/// rejecting repeats costs about `count` (at most one draw in three is a repeat,
/// because `count * 3 <= len`).
pub(super) fn sample_distinct(len: usize, count: usize, rng: &mut fastrand::Rng) -> Vec<usize> {
    assert!(count <= len, "cannot pick {count} distinct out of {len}");
    let picked = if count.saturating_mul(3) > len {
        let mut all: Vec<usize> = (0..len).collect();
        for i in 0..count {
            let j = rng.usize(i..len);
            all.swap(i, j);
        }
        all.truncate(count);
        all
    } else {
        let mut seen = HashSet::with_capacity(count);
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let pos = rng.usize(..len);
            if seen.insert(pos) {
                out.push(pos);
            }
        }
        out
    };
    debug_assert_eq!(picked.len(), count);
    picked
}

/// SPOP key [count]. Written to the AOF as SREM of the members removed, or as DEL when
/// the count takes the whole set, as Redis does.
fn spop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 3 {
        return ctx.reply.error(ERR_SYNTAX);
    }
    let key = args.get(1);
    let count = if args.len() == 3 {
        match int_arg(args.get(2)) {
            Some(n) if n >= 0 => Some(n as u64),
            _ => return ctx.reply.error(ERR_NOT_POSITIVE),
        }
    } else {
        None
    };
    let loc = match find_set(ctx, key, false) {
        Ok(Some(loc)) => loc,
        Ok(None) if count.is_some() => return ctx.reply.set(0),
        Ok(None) => return ctx.reply.null_bulk(),
        Err(Replied) => return,
    };
    let mut rng = fastrand::Rng::new();
    let set = set_at(&mut ctx.keys, loc);
    let size = set.len();
    let Some(count) = count else {
        let pos = rng.usize(..size);
        let ((member, ()), _) = set.swap_remove_index(pos);
        ctx.reply.bulk(&member);
        ctx.keys.delete_if_empty(loc);
        ctx.keys.modified_by(key, 1);
        ctx.keys.propagate([&b"SREM"[..], key, &member].into_iter());
        return;
    };
    if count == 0 {
        return ctx.reply.set(0);
    }
    if count >= size as u64 {
        ctx.reply.set(size);
        for member in set.keys() {
            ctx.reply.bulk(member);
        }
        ctx.keys.remove(loc);
        ctx.keys.modified_by(key, size as u64);
        ctx.keys.propagate([&b"DEL"[..], key].into_iter());
        return;
    }
    // Each removal draws uniformly among the members still there, so the popped
    // members are a uniform sample without repeats.
    let count = count as usize;
    let mut popped = Vec::with_capacity(count);
    for _ in 0..count {
        let pos = rng.usize(..set.len());
        let ((member, ()), _) = set.swap_remove_index(pos);
        popped.push(member);
    }
    debug_assert_eq!(set.len(), size - count);
    debug_assert!(!set.is_empty());
    ctx.reply.set(count);
    for member in &popped {
        ctx.reply.bulk(member);
    }
    ctx.keys.modified_by(key, count as u64);
    let mut srem: Vec<&[u8]> = Vec::with_capacity(count + 2);
    srem.push(b"SREM");
    srem.push(key);
    srem.extend(popped.iter().map(|m| m.as_slice()));
    ctx.keys.propagate(srem.into_iter());
}

/// SRANDMEMBER key [count], with Redis 7.0's count semantics: a positive count gives
/// distinct members (at most the whole set), a negative one `|count|` members that may
/// repeat.
fn srandmember(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 3 {
        return ctx.reply.error(ERR_SYNTAX);
    }
    let count = if args.len() == 3 {
        match random_count_arg(args.get(2)) {
            Ok(n) => Some(n),
            Err(e) => return ctx.reply.error(e),
        }
    } else {
        None
    };
    let loc = match find_set(ctx, args.get(1), true) {
        Ok(Some(loc)) => loc,
        Ok(None) if count.is_some() => return ctx.reply.array(0),
        Ok(None) => return ctx.reply.null_bulk(),
        Err(Replied) => return,
    };
    let mut rng = fastrand::Rng::new();
    let set = set_at(&mut ctx.keys, loc);
    let size = set.len();
    let Some(count) = count else {
        let (member, ()) = set.at(rng.usize(..size));
        return ctx.reply.bulk(member);
    };
    let (wanted, distinct) = (count.unsigned_abs(), count > 0);
    if wanted == 0 {
        return ctx.reply.array(0);
    }
    if !distinct || wanted == 1 {
        ctx.reply.array(wanted as usize);
        for _ in 0..wanted {
            let (member, ()) = set.at(rng.usize(..size));
            ctx.reply.bulk(member);
        }
        return;
    }
    if wanted >= size as u64 {
        ctx.reply.array(size);
        for member in set.keys() {
            ctx.reply.bulk(member);
        }
        return;
    }
    let picked = sample_distinct(size, wanted as usize, &mut rng);
    ctx.reply.array(picked.len());
    for pos in picked {
        ctx.reply.bulk(set.at(pos).0);
    }
}

// ----- SMOVE -----

fn smove(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (src, dst, member) = (args.get(1), args.get(2), args.get(3));
    // Look the destination up first: a lookup may expire a key, which moves another
    // entry of its shard, so no location is kept across lookups.
    let dst_is_set = ctx.keys.lookup_write(dst).map(|loc| kind::set(&ctx.keys.entry(loc).value));
    let Some(src_loc) = ctx.keys.lookup_write(src) else {
        // Redis answers 0 for a missing source before it checks the destination.
        return ctx.reply.int(0);
    };
    if !kind::set(&ctx.keys.entry(src_loc).value) || dst_is_set == Some(false) {
        return ctx.reply.error(WRONGTYPE);
    }
    if src == dst {
        let found = set_at(&mut ctx.keys, src_loc).contains(member);
        return ctx.reply.int(found as i64);
    }
    if set_at(&mut ctx.keys, src_loc).remove(member).is_none() {
        return ctx.reply.int(0);
    }
    ctx.keys.delete_if_empty(src_loc);
    ctx.keys.modified_by(src, 1);
    let dst_loc = match ctx.keys.lookup_write(dst) {
        Some(loc) => loc,
        None => ctx.keys.insert_new(dst, kind::new_set()),
    };
    let dst_set = set_at(&mut ctx.keys, dst_loc);
    if !dst_set.contains(member) {
        dst_set.insert(CompactBytes::new(member), ());
        ctx.keys.modified_by(dst, 1);
    }
    ctx.reply.int(1);
}

// ----- SINTER, SUNION, SDIFF and their STORE forms -----

/// The source sets of a multi-set command, in argument order; `None` for a missing key.
///
/// Every key is checked, in order, and any key of another type is WRONGTYPE even when
/// an earlier key is missing (Redis's `sinterGenericCommand` and
/// `sunionDiffGenericCommand` check all of them before computing anything). Keys are
/// expired in a first pass so that the locations returned stay valid.
fn source_sets(ctx: &mut Ctx<'_>, keys: &[&[u8]]) -> Result<Vec<Option<Loc>>, Replied> {
    for key in keys {
        ctx.keys.lookup(key);
    }
    let mut sets = Vec::with_capacity(keys.len());
    for key in keys {
        sets.push(find_set(ctx, key, true)?);
    }
    Ok(sets)
}

/// Arguments `from..to`: the source keys of a multi-set command.
fn key_args<'a>(args: &Args<'a>, from: usize, to: usize) -> Vec<&'a [u8]> {
    (from..to).map(|i| args.get(i)).collect()
}

/// Same location: the same key named twice.
fn same(a: Loc, b: Loc) -> bool {
    a.shard == b.shard && a.pos == b.pos
}

/// The members of the intersection, stopping at `limit` members (0: no limit). Empty
/// as soon as one source is missing, whatever the others hold.
fn intersect(keys: &mut Keys<'_>, sets: &[Option<Loc>], limit: usize) -> Vec<CompactBytes> {
    assert!(!sets.is_empty(), "the arity guarantees a source");
    let Some(mut locs) = sets.iter().copied().collect::<Option<Vec<Loc>>>() else {
        return Vec::new();
    };
    // Walk the smallest set, probe the others.
    locs.sort_by_key(|&loc| set_at(keys, loc).len());
    let smallest = locs[0];
    let candidates: Vec<CompactBytes> = set_at(keys, smallest).keys().cloned().collect();
    let mut out = Vec::new();
    for member in candidates {
        let everywhere = locs[1..].iter().all(|&loc| same(loc, smallest) || set_at(keys, loc).contains(&member));
        if everywhere {
            out.push(member);
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// Which algebra operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Union,
    Diff,
}

/// The union of the sources, or the first minus all the others.
fn union_or_diff(keys: &mut Keys<'_>, sets: &[Option<Loc>], op: SetOp) -> SetValue {
    assert!(!sets.is_empty(), "the arity guarantees a source");
    let mut out = SetValue::new();
    match op {
        SetOp::Union => {
            for &loc in sets.iter().flatten() {
                for member in set_at(keys, loc).keys() {
                    if !out.contains(member) {
                        out.insert(member.clone(), ());
                    }
                }
            }
        }
        SetOp::Diff => {
            let Some(first) = sets[0] else {
                return out;
            };
            out = set_at(keys, first).clone();
            for &loc in sets[1..].iter().flatten() {
                if out.is_empty() {
                    break;
                }
                if same(loc, first) {
                    out.clear();
                    break;
                }
                let other = set_at(keys, loc);
                if other.len() < out.len() {
                    for member in other.keys() {
                        out.remove(member);
                    }
                } else {
                    // Cheaper to probe the other set than to walk it.
                    let kept = out.keys().filter(|m| !other.contains(m)).cloned();
                    let mut next = SetValue::new();
                    for member in kept {
                        next.insert(member, ());
                    }
                    out = next;
                }
            }
        }
    }
    out
}

/// Writes the result of a STORE command: replaces `dst` (dropping its TTL, like
/// Redis's `setKey`), or deletes it when the result is empty. Replies the cardinality.
fn store(ctx: &mut Ctx<'_>, dst: &[u8], result: SetValue) {
    let len = result.len();
    if len > 0 {
        ctx.keys.set(dst, Value::Set(Box::new(result)));
        ctx.keys.modified_by(dst, 1);
    } else if ctx.keys.delete(dst) {
        ctx.keys.modified_by(dst, 1);
    }
    ctx.reply.int(len as i64);
}

fn reply_members<'m>(ctx: &mut Ctx<'_>, members: impl ExactSizeIterator<Item = &'m CompactBytes>) {
    ctx.reply.set(members.len());
    for member in members {
        ctx.reply.bulk(member);
    }
}

fn sinter(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(sets) = source_sets(ctx, &key_args(args, 1, args.len())) else {
        return;
    };
    let result = intersect(&mut ctx.keys, &sets, 0);
    reply_members(ctx, result.iter());
}

fn sinterstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(sets) = source_sets(ctx, &key_args(args, 2, args.len())) else {
        return;
    };
    let members = intersect(&mut ctx.keys, &sets, 0);
    let mut result = SetValue::with_capacity(members.len());
    for member in members {
        result.insert(member, ());
    }
    store(ctx, args.get(1), result);
}

fn sunion(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(sets) = source_sets(ctx, &key_args(args, 1, args.len())) else {
        return;
    };
    let result = union_or_diff(&mut ctx.keys, &sets, SetOp::Union);
    reply_members(ctx, result.keys());
}

fn sunionstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(sets) = source_sets(ctx, &key_args(args, 2, args.len())) else {
        return;
    };
    let result = union_or_diff(&mut ctx.keys, &sets, SetOp::Union);
    store(ctx, args.get(1), result);
}

fn sdiff(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(sets) = source_sets(ctx, &key_args(args, 1, args.len())) else {
        return;
    };
    let result = union_or_diff(&mut ctx.keys, &sets, SetOp::Diff);
    reply_members(ctx, result.keys());
}

fn sdiffstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(sets) = source_sets(ctx, &key_args(args, 2, args.len())) else {
        return;
    };
    let result = union_or_diff(&mut ctx.keys, &sets, SetOp::Diff);
    store(ctx, args.get(1), result);
}

/// SINTERCARD's `numkeys` when it is valid: at least 1 and no more than the arguments
/// after it.
fn sintercard_numkeys(args: &Args<'_>) -> Result<usize, &'static str> {
    match int_arg(args.get(1)) {
        Some(n) if n >= 1 => {
            if n as u64 > (args.len() - 2) as u64 {
                Err("ERR Number of keys can't be greater than number of args")
            } else {
                Ok(n as usize)
            }
        }
        _ => Err("ERR numkeys should be greater than 0"),
    }
}

/// The key spec of SINTERCARD numkeys key [key ...]: nothing when `numkeys` is bad
/// (the handler then refuses the command before touching a key).
fn sintercard_keys(args: &Args<'_>, out: &mut Vec<usize>) {
    if args.len() < 2 {
        return;
    }
    if let Ok(n) = sintercard_numkeys(args) {
        out.extend(2..2 + n);
    }
}

fn sintercard(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let numkeys = match sintercard_numkeys(args) {
        Ok(n) => n,
        Err(e) => return ctx.reply.error(e),
    };
    let mut limit = 0usize;
    let mut i = 2 + numkeys;
    while i < args.len() {
        if is(args.get(i), "limit") && i + 1 < args.len() {
            match int_arg(args.get(i + 1)) {
                Some(n) if n >= 0 => limit = n as usize,
                _ => return ctx.reply.error("ERR LIMIT can't be negative"),
            }
            i += 2;
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
    }
    let Ok(sets) = source_sets(ctx, &key_args(args, 2, 2 + numkeys)) else {
        return;
    };
    let n = intersect(&mut ctx.keys, &sets, limit).len();
    ctx.reply.int(n as i64);
}

// ----- SSCAN (and the SCAN-family parsing HSCAN shares) -----

/// The options of HSCAN/SSCAN: `[MATCH pattern] [COUNT count]`, any order, repeats
/// allowed (the last wins). TYPE is SCAN's alone.
pub(super) struct ScanOptions<'a> {
    /// How many entries to visit (a hint in Redis; exact here, except for aggregates
    /// returned whole).
    pub count: usize,
    /// `None` for no pattern (also when it is `*`, which matches everything).
    pub pattern: Option<&'a [u8]>,
}

/// Parses the options that start at argument `from`, with Redis's errors: a COUNT
/// that is not an integer, a COUNT below 1 (a syntax error), an unknown word.
pub(super) fn parse_scan_options<'a>(args: &Args<'a>, from: usize) -> Result<ScanOptions<'a>, &'static str> {
    let mut opts = ScanOptions { count: 10, pattern: None };
    let mut i = from;
    while i < args.len() {
        let (opt, has_value) = (args.get(i), i + 1 < args.len());
        if is(opt, "count") && has_value {
            match int_arg(args.get(i + 1)) {
                Some(n) if n >= 1 => opts.count = usize::try_from(n).unwrap_or(usize::MAX),
                Some(_) => return Err(ERR_SYNTAX),
                None => return Err(ERR_NOT_INTEGER),
            }
        } else if is(opt, "match") && has_value {
            opts.pattern = Some(args.get(i + 1)).filter(|p| *p != b"*");
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 2;
    }
    Ok(opts)
}

/// One HSCAN/SSCAN call over `dict`: the matching entries and the cursor to resume
/// from (0 when done). The cursor is a position in the dict, walked downwards with
/// [`crate::keyspace::dict::scan_positions`], which keeps Redis's guarantee that an
/// entry present for the whole scan is returned.
///
/// `whole` answers in one call with cursor 0, which is what Redis does for small
/// aggregates (listpack hashes, intsets) whatever the cursor and COUNT.
pub(super) fn scan_dict<V: Clone>(
    dict: &Dict<CompactBytes, V>,
    cursor: u64,
    opts: &ScanOptions<'_>,
    whole: bool,
) -> (u64, Vec<(CompactBytes, V)>) {
    let matches = |k: &CompactBytes| opts.pattern.is_none_or(|p| crate::glob::matches(p, k, false));
    let mut found = Vec::new();
    if whole {
        for (k, v) in dict.iter() {
            if matches(k) {
                found.push((k.clone(), v.clone()));
            }
        }
        return (0, found);
    }
    let remaining = usize::try_from(cursor).unwrap_or(usize::MAX);
    let next = crate::keyspace::dict::scan_positions(dict, remaining, opts.count, |k, v| {
        if matches(k) {
            found.push((k.clone(), v.clone()));
        }
    });
    (next as u64, found)
}

/// Whether Redis 7.0 would hold this set as an intset, which SSCAN returns whole:
/// every member an integer in canonical form, and few enough of them.
fn scan_returns_whole(set: &SetValue) -> bool {
    set.len() <= INTSET_MAX_ENTRIES && set.keys().all(|m| parse_i64_strict(m).is_some())
}

/// The `[cursor, [...]]` reply of the SCAN family.
pub(super) fn reply_scan_header(reply: &mut Reply<'_>, cursor: u64, elements: usize) {
    let mut b = itoa::Buffer::new();
    reply.array(2);
    reply.bulk(b.format(cursor).as_bytes());
    reply.array(elements);
}

fn sscan(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(cursor) = super::parse_cursor(args.get(2)) else {
        return ctx.reply.error("ERR invalid cursor");
    };
    // Redis checks the key before the options: a missing key answers an empty scan
    // even with bad options.
    let loc = match find_set(ctx, args.get(1), true) {
        Ok(Some(loc)) => loc,
        Ok(None) => return reply_scan_header(&mut ctx.reply, 0, 0),
        Err(Replied) => return,
    };
    let opts = match parse_scan_options(args, 3) {
        Ok(o) => o,
        Err(e) => return ctx.reply.error(e),
    };
    let set = set_at(&mut ctx.keys, loc);
    let (next, found) = scan_dict(set, cursor, &opts, scan_returns_whole(set));
    reply_scan_header(&mut ctx.reply, next, found.len());
    for (member, ()) in &found {
        ctx.reply.bulk(member);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::AccessClock;
    use crate::keyspace::{Effects, Keyspace};
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};
    use std::ops::Range;

    /// Argument storage for building an [`Args`] in tests.
    fn owned_args(parts: &[&[u8]]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut data = Vec::new();
        let mut spans = Vec::new();
        for p in parts {
            let start = data.len();
            data.extend_from_slice(p);
            spans.push(start..data.len());
        }
        (data, spans)
    }

    proptest! {
        #[test]
        fn sample_distinct_gives_count_distinct_positions(len in 0usize..300, pct in 0usize..=100, seed: u64) {
            let count = len * pct / 100;
            let mut rng = fastrand::Rng::with_seed(seed);
            let picked = sample_distinct(len, count, &mut rng);
            prop_assert_eq!(picked.len(), count);
            prop_assert!(picked.iter().all(|&p| p < len));
            let unique: HashSet<usize> = picked.iter().copied().collect();
            prop_assert_eq!(unique.len(), count);
        }

        /// The finder of SINTERCARD never panics and names exactly the keys the handler
        /// will touch (none when the handler refuses the command).
        #[test]
        fn sintercard_finder_agrees_with_the_handler(
            numkeys in prop_oneof![Just(b"0".to_vec()), Just(b"-1".to_vec()), Just(b"x".to_vec()),
                                   Just(b"9223372036854775807".to_vec()), (1u8..6).prop_map(|n| vec![b'0' + n])],
            rest in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4), 0..6),
        ) {
            let mut parts: Vec<&[u8]> = vec![b"sintercard", &numkeys];
            parts.extend(rest.iter().map(|r| r.as_slice()));
            let (data, spans) = owned_args(&parts);
            let args = Args::new(&data, &spans);
            let mut found = Vec::new();
            sintercard_keys(&args, &mut found);
            match sintercard_numkeys(&args) {
                Ok(n) => prop_assert_eq!(found, (2..2 + n).collect::<Vec<_>>()),
                Err(_) => prop_assert!(found.is_empty()),
            }
        }

        /// SINTER, SUNION and SDIFF agree with a model on BTreeSets, including missing
        /// keys and the same key named twice.
        #[test]
        fn algebra_matches_a_model(
            contents in prop::collection::vec(prop::option::of(prop::collection::btree_set(0u8..8, 1..6)), 4),
            named in prop::collection::vec(0usize..4, 1..5),
            limit in 0usize..4,
        ) {
            let space = Keyspace::new(1);
            let mut keys = Keys::new(&space, space.lock_all(), 0, 0, AccessClock::at(0, false, 10, 1), Effects::new(false));
            let name = |i: usize| format!("k{i}").into_bytes();
            for (i, members) in contents.iter().enumerate() {
                if let Some(members) = members {
                    let mut set = SetValue::new();
                    for m in members {
                        set.insert(CompactBytes::new(&[*m]), ());
                    }
                    keys.insert_new(&name(i), Value::Set(Box::new(set)));
                }
            }
            let locs: Vec<Option<Loc>> = named.iter().map(|&i| keys.typed(&name(i), kind::set, true).ok().flatten()).collect();
            let model: Vec<BTreeSet<u8>> = named.iter().map(|&i| contents[i].clone().unwrap_or_default()).collect();
            let as_model = |members: Vec<&CompactBytes>| -> BTreeSet<u8> { members.iter().map(|m| m[0]).collect() };

            let inter = intersect(&mut keys, &locs, 0);
            let expect_inter = model[1..].iter().fold(model[0].clone(), |acc, s| &acc & s);
            prop_assert_eq!(inter.len(), expect_inter.len(), "no duplicates in the intersection");
            prop_assert_eq!(as_model(inter.iter().collect()), expect_inter.clone());

            let limited = intersect(&mut keys, &locs, limit);
            let want = if limit == 0 { expect_inter.len() } else { expect_inter.len().min(limit) };
            prop_assert_eq!(limited.len(), want);
            prop_assert!(as_model(limited.iter().collect()).is_subset(&expect_inter));

            let union = union_or_diff(&mut keys, &locs, SetOp::Union);
            let expect_union = model.iter().fold(BTreeSet::new(), |acc, s| &acc | s);
            prop_assert_eq!(as_model(union.keys().collect()), expect_union);
            union.check_invariants();

            let diff = union_or_diff(&mut keys, &locs, SetOp::Diff);
            let expect_diff = model[1..].iter().fold(model[0].clone(), |acc, s| &acc - s);
            prop_assert_eq!(as_model(diff.keys().collect()), expect_diff);
            diff.check_invariants();
        }

        /// Following the cursor from 0 to 0 visits every entry exactly once when nothing
        /// changes, whatever the COUNT; a whole scan is one call.
        #[test]
        fn scan_dict_visits_everything_once(n in 0usize..300, count in 1usize..50, pattern in prop::option::of(Just(b"m1*".to_vec()))) {
            let mut dict = SetValue::new();
            for i in 0..n {
                dict.insert(CompactBytes::new(format!("m{i}").as_bytes()), ());
            }
            let opts = ScanOptions { count, pattern: pattern.as_deref() };
            let expect: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("m{i}").into_bytes())
                .filter(|m| pattern.is_none() || m.starts_with(b"m1"))
                .collect();
            let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
            let mut cursor = 0;
            let mut calls = 0;
            loop {
                let (next, found) = scan_dict(&dict, cursor, &opts, false);
                calls += 1;
                for (m, ()) in found {
                    *seen.entry(m.to_vec()).or_default() += 1;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
                prop_assert!(calls <= n + 1, "the scan must end");
            }
            prop_assert_eq!(seen.len(), expect.len());
            prop_assert!(seen.values().all(|&c| c == 1));
            prop_assert!(expect.iter().all(|m| seen.contains_key(m)));

            let (next, found) = scan_dict(&dict, 12345, &opts, true);
            prop_assert_eq!(next, 0);
            prop_assert_eq!(found.len(), expect.len());
        }
    }

    /// Each position is picked equally often, in both of `sample_distinct`'s methods
    /// (shuffle for a large share, rejection for a small one). A sampler that favoured
    /// the low positions, as `rng.usize(..count)` would, fails this.
    #[test]
    fn sample_distinct_is_uniform() {
        let mut rng = fastrand::Rng::with_seed(7);
        for (len, count) in [(5usize, 2usize), (5, 4), (12, 2), (30, 3)] {
            let trials = 60_000;
            let mut hits = vec![0u32; len];
            for _ in 0..trials {
                for p in sample_distinct(len, count, &mut rng) {
                    hits[p] += 1;
                }
            }
            let expected = trials as f64 * count as f64 / len as f64;
            for (pos, &h) in hits.iter().enumerate() {
                let off = (h as f64 - expected).abs() / expected;
                assert!(off < 0.05, "len {len} count {count}: position {pos} hit {h} times, expected {expected}");
            }
        }
    }

    #[test]
    fn scan_options_follow_redis() {
        let parse = |parts: &[&[u8]]| {
            let (data, spans) = owned_args(parts);
            let args = Args::new(&data, &spans);
            parse_scan_options(&args, 3).map(|o| (o.count, o.pattern.map(|p| p.to_vec())))
        };
        assert_eq!(parse(&[b"sscan", b"k", b"0"]), Ok((10, None)));
        assert_eq!(parse(&[b"sscan", b"k", b"0", b"MATCH", b"*", b"count", b"3"]), Ok((3, None)));
        assert_eq!(parse(&[b"sscan", b"k", b"0", b"match", b"a*", b"match", b"b*"]), Ok((10, Some(b"b*".to_vec()))));
        assert_eq!(parse(&[b"sscan", b"k", b"0", b"count", b"0"]), Err(ERR_SYNTAX));
        assert_eq!(parse(&[b"sscan", b"k", b"0", b"count", b"x"]), Err(ERR_NOT_INTEGER));
        assert_eq!(parse(&[b"sscan", b"k", b"0", b"count"]), Err(ERR_SYNTAX));
        assert_eq!(parse(&[b"sscan", b"k", b"0", b"type", b"set"]), Err(ERR_SYNTAX));
    }

    #[test]
    fn intset_like_sets_scan_whole() {
        let mut set = SetValue::new();
        for i in 0..INTSET_MAX_ENTRIES {
            set.insert(CompactBytes::new(i.to_string().as_bytes()), ());
        }
        assert!(scan_returns_whole(&set));
        set.insert(CompactBytes::new(b"-1"), ());
        assert!(!scan_returns_whole(&set), "one past the intset limit");
        let mut small = SetValue::new();
        small.insert(CompactBytes::new(b"1"), ());
        small.insert(CompactBytes::new(b"01"), ());
        assert!(!scan_returns_whole(&small), "01 is not an integer Redis would put in an intset");
    }
}
