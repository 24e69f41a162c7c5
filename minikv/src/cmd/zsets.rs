//! Sorted set commands: ZADD and its options, scores, ranks, the three kinds of range
//! (by rank, by score, by lex) to read, store or remove, pops (multi-key and blocking
//! too), the set algebra (ZUNION, ZINTER, ZDIFF, their STORE forms, ZINTERCARD),
//! ZRANDMEMBER and ZSCAN.
//!
//! The data structure is [`ZSet`] (a skiplist with spans plus a dict); this file is
//! Redis 7.0's `t_zset.c` command layer: each handler parses and checks every argument
//! first, in Redis's order so that the same error wins, then looks the key up, then
//! applies. The range commands share one parser ([`zrange_generic`]), as ZRANGE,
//! ZRANGEBYSCORE, ZREVRANGEBYLEX... share `zrangeGenericCommand` in Redis, so their
//! options and messages cannot drift apart; ZRANGESTORE is the same parser with a
//! destination.
//!
//! The set algebra is Redis's `zunionInterDiffGenericCommand`: plain sets are accepted
//! as sorted sets whose members all score 1; inputs are visited smallest first (as
//! Redis sorts them, which fixes the order in which a member's scores are summed);
//! `inf * 0` weights count as 0 and `inf + -inf` sums as 0. The inputs live in
//! several shards of one keyspace, so the first one is copied before the others are
//! read. A STORE result replaces its destination with the encoding Redis would pick
//! (which decides what ZSCAN and a `-0` score look like later).
//!
//! Reply shapes follow Redis 7.0 in both protocols: scores are doubles (a bulk string
//! "%.17g" in RESP2, a `,` double in RESP3); WITHSCORES and counted pops give a flat
//! array in RESP2 and an array of `[member, score]` pairs in RESP3. ZSCAN is the
//! exception: its scores are always bulk strings.
//!
//! ZMPOP and BZMPOP reply `[key, [[member, score], ...]]`, nested in both protocols.
//!
//! Propagation: ZADD, ZINCRBY, ZREM, the ZREMRANGEBY* commands, ZPOPMIN/ZPOPMAX and the
//! STORE forms are deterministic and go to the AOF as sent. BZPOPMIN/BZPOPMAX are
//! logged as the plain ZPOPMIN/ZPOPMAX they performed, ZMPOP/BZMPOP as
//! `ZPOPMIN key n` with the number of members actually popped.
//!
//! Left out: nothing of Redis 7.0's sorted set commands; ZRANK's WITHSCORE came in 7.2.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::lists::{keys_after_numkeys, parse_mpop};
use super::{cmd, flag, int_arg, is, range, Action, Command, Ctx, KeySpec, ERR_NOT_FLOAT, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::blocking::{self, parse_timeout, BlockKind, Waiter};
use crate::keyspace::zset::{Bounds, LexRange, ScoreRange};
use crate::keyspace::{kind, CompactBytes, Keys, Loc, Value, ZSet, WRONGTYPE};
use crate::numeric::{format_double, parse_double, parse_score_bound};
use crate::resp::{Args, OwnedArgs, Reply};

const W: u32 = flag::WRITE;
const R: u32 = flag::READONLY;
const F: u32 = flag::FAST;
const M: u32 = flag::DENYOOM;
const B: u32 = flag::BLOCKING;
const NS: u32 = flag::NOSCRIPT;
const MK: u32 = flag::MOVABLE_KEYS;

const G: &str = "sorted-set";

// Summaries are the ones redis-server 7.0 reports in COMMAND DOCS.
#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("zadd", -4, W | M | F, range(1, 1, 1), zadd, G, "Add one or more members to a sorted set, or update its score if it already exists", "1.2.0"),
    cmd("zincrby", 4, W | M | F, range(1, 1, 1), zincrby, G, "Increment the score of a member in a sorted set", "1.2.0"),
    cmd("zrem", -3, W | F, range(1, 1, 1), zrem, G, "Remove one or more members from a sorted set", "1.2.0"),
    cmd("zcard", 2, R | F, range(1, 1, 1), zcard, G, "Get the number of members in a sorted set", "1.2.0"),
    cmd("zscore", 3, R | F, range(1, 1, 1), zscore, G, "Get the score associated with the given member in a sorted set", "1.2.0"),
    cmd("zmscore", -3, R | F, range(1, 1, 1), zmscore, G, "Get the score associated with the given members in a sorted set", "6.2.0"),
    cmd("zrank", 3, R | F, range(1, 1, 1), zrank, G, "Determine the index of a member in a sorted set", "2.0.0"),
    cmd("zrevrank", 3, R | F, range(1, 1, 1), zrevrank, G, "Determine the index of a member in a sorted set, with scores ordered from high to low", "2.0.0"),
    cmd("zcount", 4, R | F, range(1, 1, 1), zcount, G, "Count the members in a sorted set with scores within the given values", "2.0.0"),
    cmd("zlexcount", 4, R | F, range(1, 1, 1), zlexcount, G, "Count the number of members in a sorted set between a given lexicographical range", "2.8.9"),
    cmd("zrange", -4, R, range(1, 1, 1), zrange, G, "Return a range of members in a sorted set", "1.2.0"),
    cmd("zrevrange", -4, R, range(1, 1, 1), zrevrange, G, "Return a range of members in a sorted set, by index, with scores ordered from high to low", "1.2.0"),
    cmd("zrangebyscore", -4, R, range(1, 1, 1), zrangebyscore, G, "Return a range of members in a sorted set, by score", "1.0.5"),
    cmd("zrevrangebyscore", -4, R, range(1, 1, 1), zrevrangebyscore, G, "Return a range of members in a sorted set, by score, with scores ordered from high to low", "2.2.0"),
    cmd("zrangebylex", -4, R, range(1, 1, 1), zrangebylex, G, "Return a range of members in a sorted set, by lexicographical range", "2.8.9"),
    cmd("zrevrangebylex", -4, R, range(1, 1, 1), zrevrangebylex, G, "Return a range of members in a sorted set, by lexicographical range, ordered from higher to lower strings.", "2.8.9"),
    cmd("zremrangebyrank", 4, W, range(1, 1, 1), zremrangebyrank, G, "Remove all members in a sorted set within the given indexes", "2.0.0"),
    cmd("zremrangebyscore", 4, W, range(1, 1, 1), zremrangebyscore, G, "Remove all members in a sorted set within the given scores", "1.2.0"),
    cmd("zremrangebylex", 4, W, range(1, 1, 1), zremrangebylex, G, "Remove all members in a sorted set between the given lexicographical range", "2.8.9"),
    cmd("zpopmin", -2, W | F, range(1, 1, 1), zpopmin, G, "Remove and return members with the lowest scores in a sorted set", "5.0.0"),
    cmd("zpopmax", -2, W | F, range(1, 1, 1), zpopmax, G, "Remove and return members with the highest scores in a sorted set", "5.0.0"),
    cmd("bzpopmin", -3, W | NS | B | F, range(1, -2, 1), bzpopmin, G, "Remove and return the member with the lowest score from one or more sorted sets, or block until one is available", "5.0.0"),
    cmd("bzpopmax", -3, W | NS | B | F, range(1, -2, 1), bzpopmax, G, "Remove and return the member with the highest score from one or more sorted sets, or block until one is available", "5.0.0"),
    cmd("zmpop", -4, W | MK, KeySpec::Find(zmpop_keys), zmpop, G, "Remove and return members with scores in a sorted set", "7.0.0"),
    cmd("bzmpop", -5, W | B | MK, KeySpec::Find(bzmpop_keys), bzmpop, G, "Remove and return members with scores in a sorted set or block until one is available", "7.0.0"),
    cmd("zunion", -3, R | MK, KeySpec::Find(algebra_keys), zunion, G, "Add multiple sorted sets", "6.2.0"),
    cmd("zinter", -3, R | MK, KeySpec::Find(algebra_keys), zinter, G, "Intersect multiple sorted sets", "6.2.0"),
    cmd("zdiff", -3, R | MK, KeySpec::Find(algebra_keys), zdiff, G, "Subtract multiple sorted sets", "6.2.0"),
    cmd("zintercard", -3, R | MK, KeySpec::Find(algebra_keys), zintercard, G, "Intersect multiple sorted sets and return the cardinality of the result", "7.0.0"),
    cmd("zunionstore", -4, W | M | MK, KeySpec::Find(store_algebra_keys), zunionstore, G, "Add multiple sorted sets and store the resulting sorted set in a new key", "2.0.0"),
    cmd("zinterstore", -4, W | M | MK, KeySpec::Find(store_algebra_keys), zinterstore, G, "Intersect multiple sorted sets and store the resulting sorted set in a new key", "2.0.0"),
    cmd("zdiffstore", -4, W | M | MK, KeySpec::Find(store_algebra_keys), zdiffstore, G, "Subtract multiple sorted sets and store the resulting sorted set in a new key", "6.2.0"),
    cmd("zrangestore", -5, W | M, range(1, 2, 1), zrangestore, G, "Store a range of members from sorted set into another key", "6.2.0"),
    cmd("zrandmember", -2, R, range(1, 1, 1), zrandmember, G, "Get one or multiple random elements from a sorted set", "6.2.0"),
    cmd("zscan", -3, R, range(1, 1, 1), zscan, G, "Incrementally iterate sorted sets elements and associated scores", "2.8.0"),
];

const ERR_SCORE_RANGE: &str = "ERR min or max is not a float";
const ERR_LEX_RANGE: &str = "ERR min or max not valid string range item";
const ERR_NAN: &str = "ERR resulting score is not a number (NaN)";
/// Redis's wording when a count must not be negative (`getPositiveLongFromObjectOrReply`).
const ERR_NOT_POSITIVE: &str = "ERR value is out of range, must be positive";

/// The sorted set at `loc`, which the caller has type-checked.
fn zset_at<'k>(keys: &'k mut crate::keyspace::Keys<'_>, loc: Loc) -> &'k mut ZSet {
    keys.value(loc).as_zset_mut()
}

/// Looks a sorted set up: `Ok(None)` when missing; replies WRONGTYPE and returns
/// `Err` when the key holds something else.
fn lookup(ctx: &mut Ctx<'_>, key: &[u8], read: bool) -> Result<Option<Loc>, ()> {
    ctx.keys.typed(key, kind::zset, read).map_err(|_| ctx.reply.error(WRONGTYPE))
}

/// The reply Redis calls `shared.emptyarray`: `*0` in both protocols.
fn empty_array(reply: &mut Reply<'_>) {
    reply.array(0);
}

// ----- ZADD, ZINCRBY -----

/// ZADD's options (Redis's `ZADD_IN_*` flags).
#[derive(Default, Clone, Copy)]
struct ZaddOptions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

fn zadd(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    zadd_generic(ctx, args, false);
}

/// ZINCRBY is ZADD INCR, as in Redis (which even parses ZADD's options in it, so
/// `ZINCRBY key nx member` is a syntax error rather than a bad float).
fn zincrby(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    zadd_generic(ctx, args, true);
}

/// Redis's `zaddGenericCommand`.
fn zadd_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, incr: bool) {
    let mut o = ZaddOptions { incr, ..ZaddOptions::default() };
    let mut first = 2;
    while first < args.len() {
        let a = args.get(first);
        if is(a, "nx") {
            o.nx = true;
        } else if is(a, "xx") {
            o.xx = true;
        } else if is(a, "ch") {
            o.ch = true;
        } else if is(a, "incr") {
            o.incr = true;
        } else if is(a, "gt") {
            o.gt = true;
        } else if is(a, "lt") {
            o.lt = true;
        } else {
            break;
        }
        first += 1;
    }
    let rest = args.len() - first;
    if rest == 0 || rest % 2 == 1 {
        return ctx.reply.error(ERR_SYNTAX);
    }
    if o.nx && o.xx {
        return ctx.reply.error("ERR XX and NX options at the same time are not compatible");
    }
    if ((o.gt || o.lt) && o.nx) || (o.gt && o.lt) {
        return ctx.reply.error("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if o.incr && rest > 2 {
        return ctx.reply.error("ERR INCR option supports a single increment-element pair");
    }
    // Every score is parsed before anything changes: all or nothing.
    let mut scores = Vec::with_capacity(rest / 2);
    for i in (first..args.len()).step_by(2) {
        match parse_double(args.get(i)) {
            Some(s) => scores.push(s),
            None => return ctx.reply.error(ERR_NOT_FLOAT),
        }
    }
    let key = args.get(1);
    let loc = match lookup(ctx, key, false) {
        Err(()) => return,
        Ok(Some(loc)) => loc,
        Ok(None) if o.xx => {
            // XX on a missing key: nothing to do, and no key is created.
            return if o.incr { ctx.reply.null_bulk() } else { ctx.reply.int(0) };
        }
        Ok(None) => {
            let first_len = args.get(first + 1).len();
            let zset = ZSet::for_new_key(scores.len(), first_len);
            ctx.keys.insert_new(key, Value::ZSet(Box::new(zset)))
        }
    };
    let zset = zset_at(&mut ctx.keys, loc);
    let (mut added, mut updated, mut processed) = (0i64, 0i64, 0i64);
    let mut last_score = 0.0;
    for (j, &score) in scores.iter().enumerate() {
        let member = args.get(first + 1 + 2 * j);
        let new = match zset.score(member) {
            Some(_) if o.nx => continue,
            Some(current) => {
                let new = if o.incr { current + score } else { score };
                if new.is_nan() {
                    // Only INCR can get here (inf + -inf), and INCR has one pair, so
                    // nothing has been changed yet.
                    debug_assert!(added + updated == 0);
                    return ctx.reply.error(ERR_NAN);
                }
                if (o.lt && new >= current) || (o.gt && new <= current) {
                    continue;
                }
                if new != current {
                    zset.insert(member, new);
                    updated += 1;
                }
                new
            }
            None if o.xx => continue,
            None => {
                zset.insert(member, score);
                added += 1;
                score
            }
        };
        processed += 1;
        last_score = new;
    }
    if o.incr {
        if processed > 0 {
            ctx.reply.double(last_score);
        } else {
            ctx.reply.null_bulk();
        }
    } else {
        ctx.reply.int(if o.ch { added + updated } else { added });
    }
    if added + updated > 0 {
        ctx.keys.modified(key);
    }
    // A new key always receives its members (only XX, handled above, could leave
    // it empty), but never leave an empty set behind whatever happens.
    ctx.keys.delete_if_empty(loc);
}

// ----- ZREM, ZCARD, ZSCORE, ZMSCORE, ZRANK, ZREVRANK -----

fn zrem(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let loc = match lookup(ctx, key, false) {
        Err(()) => return,
        Ok(None) => return ctx.reply.int(0),
        Ok(Some(loc)) => loc,
    };
    let zset = zset_at(&mut ctx.keys, loc);
    let mut deleted = 0;
    for member in args.iter().skip(2) {
        if zset.remove(member).is_some() {
            deleted += 1;
        }
        if zset.is_empty() {
            break;
        }
    }
    if deleted > 0 {
        ctx.keys.modified(key);
        ctx.keys.delete_if_empty(loc);
    }
    ctx.reply.int(deleted);
}

fn zcard(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match lookup(ctx, args.get(1), true) {
        Err(()) => {}
        Ok(None) => ctx.reply.int(0),
        Ok(Some(loc)) => {
            let n = zset_at(&mut ctx.keys, loc).len();
            ctx.reply.int(n as i64);
        }
    }
}

fn zscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match lookup(ctx, args.get(1), true) {
        Err(()) => {}
        Ok(None) => ctx.reply.null_bulk(),
        Ok(Some(loc)) => match zset_at(&mut ctx.keys, loc).score(args.get(2)) {
            Some(s) => ctx.reply.double(s),
            None => ctx.reply.null_bulk(),
        },
    }
}

fn zmscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(loc) = lookup(ctx, args.get(1), true) else { return };
    ctx.reply.array(args.len() - 2);
    for member in args.iter().skip(2) {
        // A missing key answers like an empty set.
        let score = loc.and_then(|loc| zset_at(&mut ctx.keys, loc).score(member));
        match score {
            Some(s) => ctx.reply.double(s),
            None => ctx.reply.null_bulk(),
        }
    }
}

fn zrank(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    rank_generic(ctx, args, false);
}

fn zrevrank(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    rank_generic(ctx, args, true);
}

/// ZRANK/ZREVRANK as in 7.0: `key member`, no WITHSCORE (that came in 7.2).
fn rank_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, rev: bool) {
    let loc = match lookup(ctx, args.get(1), true) {
        Err(()) => return,
        Ok(None) => return ctx.reply.null_bulk(),
        Ok(Some(loc)) => loc,
    };
    let zset = zset_at(&mut ctx.keys, loc);
    match zset.rank(args.get(2)) {
        Some(rank) if rev => ctx.reply.int((zset.len() - 1 - rank) as i64),
        Some(rank) => ctx.reply.int(rank as i64),
        None => ctx.reply.null_bulk(),
    }
}

// ----- counts in ranges -----

/// Parses `min max` of ZRANGEBYSCORE and friends (Redis's `zslParseRange`).
fn score_range(min: &[u8], max: &[u8]) -> Option<ScoreRange> {
    let (min, min_exclusive) = parse_score_bound(min)?;
    let (max, max_exclusive) = parse_score_bound(max)?;
    Some(ScoreRange { min, min_exclusive, max, max_exclusive })
}

fn zcount(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(range) = score_range(args.get(2), args.get(3)) else {
        return ctx.reply.error(ERR_SCORE_RANGE);
    };
    count_generic(ctx, args.get(1), &range);
}

fn zlexcount(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(range) = LexRange::parse(args.get(2), args.get(3)) else {
        return ctx.reply.error(ERR_LEX_RANGE);
    };
    count_generic(ctx, args.get(1), &range);
}

fn count_generic<Bd: Bounds>(ctx: &mut Ctx<'_>, key: &[u8], bounds: &Bd) {
    match lookup(ctx, key, true) {
        Err(()) => {}
        Ok(None) => ctx.reply.int(0),
        Ok(Some(loc)) => {
            let n = zset_at(&mut ctx.keys, loc).count(bounds);
            ctx.reply.int(n as i64);
        }
    }
}

// ----- ZRANGE and its older forms -----

/// What a range command's `start stop` (or `min max`) mean.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RangeKind {
    Rank,
    Score,
    Lex,
}

fn zrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    zrange_generic(ctx, args, None, None);
}

fn zrevrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    zrange_generic(ctx, args, Some(RangeKind::Rank), Some(true));
}

fn zrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    zrange_generic(ctx, args, Some(RangeKind::Score), Some(false));
}

fn zrevrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    zrange_generic(ctx, args, Some(RangeKind::Score), Some(true));
}

fn zrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    zrange_generic(ctx, args, Some(RangeKind::Lex), Some(false));
}

fn zrevrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    zrange_generic(ctx, args, Some(RangeKind::Lex), Some(true));
}

/// ZRANGE and its older forms, which reply with the range.
fn zrange_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: Option<RangeKind>, rev: Option<bool>) {
    range_command(ctx, args, 1, None, kind, rev);
}

/// ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]: ZRANGE
/// without WITHSCORES, whose result replaces `dst` (deleting it when empty); the
/// reply is the number of members stored.
fn zrangestore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_command(ctx, args, 2, Some(args.get(1)), None, None);
}

/// Redis 7.0's `zrangeGenericCommand`: the source key is argument `src_at`, then
/// `min max` and the options. `kind` and `rev` are fixed by the older commands
/// (ZRANGEBYSCORE, ZREVRANGE...) and `None` for ZRANGE and ZRANGESTORE, where BYSCORE,
/// BYLEX and REV choose them; an option that is fixed, or given twice, is a syntax
/// error, as in Redis. With `dst` (ZRANGESTORE) WITHSCORES is not an option.
fn range_command(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    src_at: usize,
    dst: Option<&[u8]>,
    mut kind: Option<RangeKind>,
    mut rev: Option<bool>,
) {
    let mut withscores = false;
    let (mut offset, mut limit) = (0i64, -1i64);
    let mut j = src_at + 3;
    while j < args.len() {
        let a = args.get(j);
        let left = args.len() - j - 1;
        if dst.is_none() && is(a, "withscores") {
            withscores = true;
        } else if is(a, "limit") && left >= 2 {
            let (Some(o), Some(l)) = (int_arg(args.get(j + 1)), int_arg(args.get(j + 2))) else {
                return ctx.reply.error(ERR_NOT_INTEGER);
            };
            (offset, limit) = (o, l);
            j += 2;
        } else if rev.is_none() && is(a, "rev") {
            rev = Some(true);
        } else if kind.is_none() && is(a, "bylex") {
            kind = Some(RangeKind::Lex);
        } else if kind.is_none() && is(a, "byscore") {
            kind = Some(RangeKind::Score);
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
        j += 1;
    }
    let kind = kind.unwrap_or(RangeKind::Rank);
    let rev = rev.unwrap_or(false);
    // Redis checks "was LIMIT given" as "is the count not -1", so LIMIT 0 -1 passes.
    if limit != -1 && kind == RangeKind::Rank {
        return ctx
            .reply
            .error("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX");
    }
    if withscores && kind == RangeKind::Lex {
        return ctx.reply.error("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
    }
    // Reversed score and lex ranges are written `max min`.
    let (min_arg, max_arg) = match (rev, kind) {
        (true, RangeKind::Score | RangeKind::Lex) => (args.get(src_at + 2), args.get(src_at + 1)),
        _ => (args.get(src_at + 1), args.get(src_at + 2)),
    };
    let query = match kind {
        RangeKind::Rank => {
            let (Some(start), Some(end)) = (int_arg(min_arg), int_arg(max_arg)) else {
                return ctx.reply.error(ERR_NOT_INTEGER);
            };
            RangeQuery::Rank { start, end }
        }
        RangeKind::Score => match score_range(min_arg, max_arg) {
            Some(bounds) => RangeQuery::Score(bounds),
            None => return ctx.reply.error(ERR_SCORE_RANGE),
        },
        RangeKind::Lex => match LexRange::parse(min_arg, max_arg) {
            Some(bounds) => RangeQuery::Lex(bounds),
            None => return ctx.reply.error(ERR_LEX_RANGE),
        },
    };
    let src = args.get(src_at);
    let loc = match lookup(ctx, src, true) {
        Err(()) => return,
        Ok(loc) => loc,
    };
    let Some(dst) = dst else {
        let Some(loc) = loc else { return empty_array(&mut ctx.reply) };
        let zset = zset_at(&mut ctx.keys, loc);
        let found = select_range(zset, &query, rev, offset, limit);
        range_header(&mut ctx.reply, found.len(), withscores);
        for (member, score) in found {
            emit(&mut ctx.reply, member, score, withscores);
        }
        return;
    };
    let found: Vec<(CompactBytes, f64)> = match loc {
        None => Vec::new(),
        Some(loc) => {
            let zset = zset_at(&mut ctx.keys, loc);
            select_range(zset, &query, rev, offset, limit).into_iter().map(|(m, s)| (m.clone(), s)).collect()
        }
    };
    // Redis sizes the new set by the length it knows up front: a rank range's, none
    // for a score or lex range (it starts small and grows).
    let size_hint = if kind == RangeKind::Rank { found.len() } else { 0 };
    store_result(ctx, dst, &found, ZSet::for_new_key(size_hint, 0));
}

/// A parsed range: ranks, or score or lex bounds.
enum RangeQuery<'a> {
    Rank { start: i64, end: i64 },
    Score(ScoreRange),
    Lex(LexRange<'a>),
}

/// The elements a range selects, in reply order: Redis's `genericZrangebyrankCommand`
/// (negative indexes count from the end; with `rev` index 0 is the highest element)
/// or `genericZrangebyscoreCommand` / `genericZrangebylexCommand` (walk from the
/// first, or with `rev` the last, element in range, skip `offset`, then take up to
/// `limit`, all when negative, while they stay in range).
fn select_range<'z>(
    zset: &'z ZSet,
    query: &RangeQuery<'_>,
    rev: bool,
    offset: i64,
    limit: i64,
) -> Vec<(&'z CompactBytes, f64)> {
    match query {
        RangeQuery::Rank { start, end } => {
            let len = zset.len() as i64;
            let Some((start, end)) = clamp_ranks(*start, *end, len) else {
                return Vec::new();
            };
            if rev {
                let (lo, hi) = (len as usize - 1 - end, len as usize - 1 - start);
                zset.range_by_rank(lo, hi).rev().collect()
            } else {
                zset.range_by_rank(start, end).collect()
            }
        }
        RangeQuery::Score(bounds) => select_by_bounds(zset, *bounds, rev, offset, limit),
        RangeQuery::Lex(bounds) => select_by_bounds(zset, *bounds, rev, offset, limit),
    }
}

/// Score and lex ranges, with LIMIT.
fn select_by_bounds<Bd: Bounds>(
    zset: &ZSet,
    bounds: Bd,
    rev: bool,
    offset: i64,
    limit: i64,
) -> Vec<(&CompactBytes, f64)> {
    // An offset past the end selects nothing; a negative one walks off the end in
    // Redis (its `while (offset--)` never reaches zero), which is also nothing.
    if offset < 0 || (offset > 0 && offset as u64 >= zset.len() as u64) {
        return Vec::new();
    }
    let mut walk = zset.range(bounds, rev);
    walk.skip_unchecked(offset as usize);
    let take = if limit < 0 { usize::MAX } else { limit as usize };
    walk.take(take).collect()
}

/// Writes one element of a range reply: the member, and with scores the score, as a
/// `[member, score]` pair in RESP3.
fn emit(reply: &mut Reply<'_>, member: &[u8], score: f64, withscores: bool) {
    if withscores && reply.resp3() {
        reply.array(2);
    }
    reply.bulk(member);
    if withscores {
        reply.double(score);
    }
}

/// The array header for `n` elements (flat member/score pairs in RESP2).
fn range_header(reply: &mut Reply<'_>, n: usize, withscores: bool) {
    reply.array(if withscores && !reply.resp3() { n * 2 } else { n });
}

/// Turns `start stop` indexes (negative from the end) into a non-empty inclusive
/// range of positions, or `None` when it selects nothing; Redis's sanitising.
fn clamp_ranks(mut start: i64, mut end: i64, len: i64) -> Option<(usize, usize)> {
    if start < 0 {
        start = start.saturating_add(len);
    }
    if end < 0 {
        end = end.saturating_add(len);
    }
    start = start.max(0);
    if start > end || start >= len {
        return None;
    }
    end = end.min(len - 1);
    Some((start as usize, end as usize))
}

// ----- removing ranges -----

fn zremrangebyrank(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (Some(start), Some(end)) = (int_arg(args.get(2)), int_arg(args.get(3))) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let key = args.get(1);
    let Some(loc) = remove_source(ctx, key) else { return };
    let zset = zset_at(&mut ctx.keys, loc);
    let removed = match clamp_ranks(start, end, zset.len() as i64) {
        Some((start, end)) => zset.remove_range_by_rank(start, end),
        None => 0,
    };
    removed_reply(ctx, key, loc, removed);
}

fn zremrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(bounds) = score_range(args.get(2), args.get(3)) else {
        return ctx.reply.error(ERR_SCORE_RANGE);
    };
    remove_bounds(ctx, args.get(1), &bounds);
}

fn zremrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(bounds) = LexRange::parse(args.get(2), args.get(3)) else {
        return ctx.reply.error(ERR_LEX_RANGE);
    };
    remove_bounds(ctx, args.get(1), &bounds);
}

fn remove_bounds<Bd: Bounds>(ctx: &mut Ctx<'_>, key: &[u8], bounds: &Bd) {
    let Some(loc) = remove_source(ctx, key) else { return };
    let removed = zset_at(&mut ctx.keys, loc).remove_range(bounds);
    removed_reply(ctx, key, loc, removed);
}

/// The set a ZREMRANGEBY* command removes from; replies 0 or WRONGTYPE when none.
fn remove_source(ctx: &mut Ctx<'_>, key: &[u8]) -> Option<Loc> {
    match lookup(ctx, key, false) {
        Err(()) => None,
        Ok(None) => {
            ctx.reply.int(0);
            None
        }
        Ok(Some(loc)) => Some(loc),
    }
}

fn removed_reply(ctx: &mut Ctx<'_>, key: &[u8], loc: Loc, removed: usize) {
    if removed > 0 {
        ctx.keys.modified(key);
        ctx.keys.delete_if_empty(loc);
    }
    ctx.reply.int(removed as i64);
}

// ----- pops -----

fn zpopmin(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_generic(ctx, args, true);
}

fn zpopmax(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_generic(ctx, args, false);
}

/// ZPOPMIN/ZPOPMAX key [count] (Redis 7.0's `zpopMinMaxCommand`). Without a count:
/// a flat `[member, score]`. With one: a flat array in RESP2, pairs in RESP3.
fn pop_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, min: bool) {
    if args.len() > 3 {
        return ctx.reply.error(ERR_SYNTAX);
    }
    let count = if args.len() == 3 {
        // Redis words a bad integer and a negative one the same way here.
        match int_arg(args.get(2)) {
            Some(c) if c >= 0 => Some(c as u64),
            _ => return ctx.reply.error(ERR_NOT_POSITIVE),
        }
    } else {
        None
    };
    let key = args.get(1);
    let loc = match lookup(ctx, key, false) {
        Err(()) => return,
        Ok(None) => return empty_array(&mut ctx.reply),
        Ok(Some(loc)) => loc,
    };
    if count == Some(0) {
        return empty_array(&mut ctx.reply);
    }
    let nested = ctx.reply.resp3() && count.is_some();
    let zset = zset_at(&mut ctx.keys, loc);
    let n = count.unwrap_or(1).min(zset.len() as u64) as usize;
    ctx.reply.array(if nested { n } else { n * 2 });
    for _ in 0..n {
        let popped = if min { zset.pop_min() } else { zset.pop_max() };
        let Some((member, score)) = popped else { unreachable!("popped past the length of the set") };
        if nested {
            ctx.reply.array(2);
        }
        ctx.reply.bulk(&member);
        ctx.reply.double(score);
    }
    ctx.keys.modified(key);
    ctx.keys.delete_if_empty(loc);
}

fn bzpopmin(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    blocking_pop(ctx, args, true);
}

fn bzpopmax(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    blocking_pop(ctx, args, false);
}

/// Pops from the first sorted set among the arguments `keys`, in argument order, and
/// replies; a key of another type met before it is WRONGTYPE (Redis's
/// `genericZpopCommand` with `emitkey`). With `count: None` (BZPOPMIN) one member,
/// replied flat as `[key, member, score]` and logged `ZPOPMIN key`; with `Some(n)`
/// (ZMPOP, BZMPOP) up to `n`, replied `[key, [[member, score], ...]]` in both
/// protocols and logged `ZPOPMIN key m` with the number `m` actually popped. Returns
/// whether it replied; `false` means every key was missing.
fn zpop_first_nonempty(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    keys: Range<usize>,
    min: bool,
    count: Option<usize>,
) -> bool {
    for i in keys {
        let key = args.get(i);
        let loc = match lookup(ctx, key, false) {
            Err(()) => return true,
            Ok(None) => continue,
            Ok(Some(loc)) => loc,
        };
        let zset = zset_at(&mut ctx.keys, loc);
        let n = count.unwrap_or(1).min(zset.len());
        if n == 0 {
            debug_assert!(false, "an empty sorted set was stored");
            continue;
        }
        match count {
            None => ctx.reply.array(3),
            Some(_) => ctx.reply.array(2),
        }
        ctx.reply.bulk(key);
        if count.is_some() {
            ctx.reply.array(n);
        }
        for _ in 0..n {
            let popped = if min { zset.pop_min() } else { zset.pop_max() };
            let Some((member, score)) = popped else { unreachable!("popped past the length of the set") };
            if count.is_some() {
                ctx.reply.array(2);
            }
            ctx.reply.bulk(&member);
            ctx.reply.double(score);
        }
        ctx.keys.modified_by(key, n as u64);
        ctx.keys.delete_if_empty(loc);
        let pop: &[u8] = if min { b"ZPOPMIN" } else { b"ZPOPMAX" };
        let mut b = itoa::Buffer::new();
        match count {
            None => ctx.keys.propagate([pop, key].into_iter()),
            Some(_) => ctx.keys.propagate([pop, key, b.format(n).as_bytes()].into_iter()),
        }
        return true;
    }
    false
}

/// Registers the client as a waiter on `keys` (the command's locks are still held,
/// so no ZADD can slip in) and asks the connection to block. No reply now: the
/// connection writes the waiter's reply, or a null array at the timeout.
fn block(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: BlockKind, keys: Vec<CompactBytes>, timeout: Option<Duration>) {
    debug_assert!(!ctx.in_exec, "a transaction must never block");
    debug_assert!(!keys.is_empty());
    let waiter = Arc::new(Waiter::new(kind, ctx.keys.db, keys, ctx.session.proto));
    blocking::register(&mut ctx.keys, &waiter);
    ctx.action = Some(Action::Block { waiter, timeout, retry: OwnedArgs::from_args(args) });
}

/// BZPOPMIN/BZPOPMAX key [key ...] timeout (Redis's `blockingGenericZpopCommand`):
/// pop from the first non-empty key in argument order, or wait.
fn blocking_pop(ctx: &mut Ctx<'_>, args: &Args<'_>, min: bool) {
    let last = args.len() - 1;
    let timeout = match parse_timeout(args.get(last), ctx.keys.now_ms) {
        Ok(t) => t,
        Err(e) => return ctx.reply.error(e),
    };
    if zpop_first_nonempty(ctx, args, 1..last, min, None) {
        return;
    }
    if ctx.in_exec {
        // A transaction cannot wait: Redis answers as if the timeout had passed.
        return ctx.reply.null_array();
    }
    let keys = (1..last).map(|i| CompactBytes::new(args.get(i))).collect();
    block(ctx, args, BlockKind::ZPop { min, count: None }, keys, timeout);
}

// ----- ZMPOP, BZMPOP -----

fn zmpop_keys(args: &Args<'_>, out: &mut Vec<usize>) {
    keys_after_numkeys(args, 1, out);
}

fn bzmpop_keys(args: &Args<'_>, out: &mut Vec<usize>) {
    keys_after_numkeys(args, 2, out);
}

/// MIN or MAX, case-insensitively: `Some(true)` for MIN.
fn parse_min_max(arg: &[u8]) -> Option<bool> {
    if is(arg, "min") {
        Some(true)
    } else if is(arg, "max") {
        Some(false)
    } else {
        None
    }
}

/// ZMPOP numkeys key [key ...] MIN|MAX [COUNT count] (Redis 7.0's
/// `zmpopGenericCommand`): pops from the first existing sorted set, or replies a
/// null array. Logged as the `ZPOPMIN key n` / `ZPOPMAX key n` it amounts to.
fn zmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mpop = match parse_mpop(args, 1, parse_min_max) {
        Ok(m) => m,
        Err(e) => return ctx.reply.error(e),
    };
    if !zpop_first_nonempty(ctx, args, mpop.keys, mpop.side, Some(mpop.count)) {
        ctx.reply.null_array();
    }
}

/// BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]: ZMPOP, or wait for one
/// of the keys. The timeout is checked after the other arguments, as in Redis.
fn bzmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mpop = match parse_mpop(args, 2, parse_min_max) {
        Ok(m) => m,
        Err(e) => return ctx.reply.error(e),
    };
    let timeout = match parse_timeout(args.get(1), ctx.keys.now_ms) {
        Ok(t) => t,
        Err(e) => return ctx.reply.error(e),
    };
    if zpop_first_nonempty(ctx, args, mpop.keys.clone(), mpop.side, Some(mpop.count)) {
        return;
    }
    if ctx.in_exec {
        return ctx.reply.null_array();
    }
    let keys = mpop.keys.map(|i| CompactBytes::new(args.get(i))).collect();
    block(ctx, args, BlockKind::ZPop { min: mpop.side, count: Some(mpop.count) }, keys, timeout);
}

// ----- ZUNION, ZINTER, ZDIFF, ZINTERCARD and the STORE forms -----

/// Which set operation (Redis's `SET_OP_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

/// How the scores of a member found in several inputs combine (AGGREGATE).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    /// Folds `value` into `target` (Redis's `zunionInterAggregate`). A sum of `inf`
    /// and `-inf` is NaN, which Redis turns into 0; a NaN `value` (a weight of `inf`
    /// times a score of 0) never wins MIN or MAX, because every comparison with NaN
    /// is false.
    fn fold(self, target: &mut f64, value: f64) {
        match self {
            Aggregate::Sum => {
                *target += value;
                if target.is_nan() {
                    *target = 0.0;
                }
            }
            Aggregate::Min => {
                if value < *target {
                    *target = value;
                }
            }
            Aggregate::Max => {
                if value > *target {
                    *target = value;
                }
            }
        }
    }
}

/// A weighted score, with Redis's convention that `inf * 0` (NaN) counts as 0.
fn weighted(score: f64, weight: f64) -> f64 {
    let v = score * weight;
    if v.is_nan() {
        0.0
    } else {
        v
    }
}

/// One input of the set algebra. Sets are accepted as sorted sets whose members all
/// score 1, as in Redis.
#[derive(Clone, Copy, Debug)]
struct Input {
    /// Where the key is, `None` when it does not exist (an empty input).
    loc: Option<Loc>,
    len: usize,
    weight: f64,
}

fn zset_or_set(v: &Value) -> bool {
    matches!(v, Value::ZSet(_) | Value::Set(_))
}

/// The score of `member` in the input at `loc` (1 for a set member).
fn input_score(keys: &mut Keys<'_>, loc: Loc, member: &[u8]) -> Option<f64> {
    match keys.value(loc) {
        Value::ZSet(z) => z.score(member),
        Value::Set(s) => s.contains(member).then_some(1.0),
        other => unreachable!("the set algebra read a {}", other.type_name()),
    }
}

/// Calls `f` with every member and score of the input at `loc`.
fn input_each(keys: &mut Keys<'_>, loc: Loc, mut f: impl FnMut(&CompactBytes, f64)) {
    match keys.value(loc) {
        Value::ZSet(z) => z.iter().for_each(|(m, s)| f(m, s)),
        Value::Set(s) => s.keys().for_each(|m| f(m, 1.0)),
        other => unreachable!("the set algebra read a {}", other.type_name()),
    }
}

fn input_len(keys: &mut Keys<'_>, loc: Loc) -> usize {
    match keys.value(loc) {
        Value::ZSet(z) => z.len(),
        Value::Set(s) => s.len(),
        other => unreachable!("the set algebra read a {}", other.type_name()),
    }
}

/// The input keys of the ZUNIONSTORE family: the destination, then the sources.
fn store_algebra_keys(args: &Args<'_>, out: &mut Vec<usize>) {
    if args.len() > 1 {
        out.push(1);
    }
    keys_after_numkeys(args, 2, out);
}

/// The input keys of ZUNION, ZINTER, ZDIFF and ZINTERCARD.
fn algebra_keys(args: &Args<'_>, out: &mut Vec<usize>) {
    keys_after_numkeys(args, 1, out);
}

fn zunion(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    algebra_generic(ctx, args, "zunion", None, SetOp::Union, false);
}

fn zinter(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    algebra_generic(ctx, args, "zinter", None, SetOp::Inter, false);
}

fn zdiff(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    algebra_generic(ctx, args, "zdiff", None, SetOp::Diff, false);
}

fn zintercard(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    algebra_generic(ctx, args, "zintercard", None, SetOp::Inter, true);
}

fn zunionstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    algebra_generic(ctx, args, "zunionstore", Some(args.get(1)), SetOp::Union, false);
}

fn zinterstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    algebra_generic(ctx, args, "zinterstore", Some(args.get(1)), SetOp::Inter, false);
}

fn zdiffstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    algebra_generic(ctx, args, "zdiffstore", Some(args.get(1)), SetOp::Diff, false);
}

/// Redis 7.0's `zunionInterDiffGenericCommand`, checks in its order: `numkeys` (an
/// integer, at least 1, no more than the arguments that follow), then the type of
/// every input (WRONGTYPE wins over a bad option), then the options: WEIGHTS and
/// AGGREGATE (not for ZDIFF or ZINTERCARD), WITHSCORES (not for the STORE forms),
/// LIMIT (ZINTERCARD only). Then the operation, and the reply: the members in
/// (score, member) order, the cardinality (ZINTERCARD), or for the STORE forms the
/// size of the result, which replaces `dst` (deleting it when empty).
fn algebra_generic(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    name: &str,
    dst: Option<&[u8]>,
    op: SetOp,
    cardinality_only: bool,
) {
    debug_assert!(!cardinality_only || (op == SetOp::Inter && dst.is_none()));
    let numkeys_at = if dst.is_some() { 2 } else { 1 };
    let Some(setnum) = int_arg(args.get(numkeys_at)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    if setnum < 1 {
        return ctx.reply.error(&format!("ERR at least 1 input key is needed for '{name}' command"));
    }
    let first = numkeys_at + 1;
    if setnum as u64 > (args.len() - first) as u64 {
        return ctx.reply.error(ERR_SYNTAX);
    }
    let setnum = setnum as usize;
    let sources = first..first + setnum;
    // Redis reads the inputs before it parses the options, so WRONGTYPE wins.
    for i in sources.clone() {
        if ctx.keys.typed(args.get(i), zset_or_set, dst.is_none()).is_err() {
            return ctx.reply.error(WRONGTYPE);
        }
    }
    // Looking a key up may have deleted it (expired), moving others in its table:
    // find them all again, now that none of them can expire any more.
    let mut inputs: Vec<Input> = Vec::with_capacity(setnum);
    for i in sources.clone() {
        let loc = ctx.keys.lookup(args.get(i));
        let len = loc.map_or(0, |loc| input_len(&mut ctx.keys, loc));
        inputs.push(Input { loc, len, weight: 1.0 });
    }

    let mut aggregate = Aggregate::Sum;
    let mut withscores = false;
    let mut limit = 0usize;
    let mut j = sources.end;
    while j < args.len() {
        let remaining = args.len() - j;
        let opt = args.get(j);
        if op != SetOp::Diff && !cardinality_only && remaining > setnum && is(opt, "weights") {
            for (k, input) in inputs.iter_mut().enumerate() {
                match parse_double(args.get(j + 1 + k)) {
                    Some(w) => input.weight = w,
                    None => return ctx.reply.error("ERR weight value is not a float"),
                }
            }
            j += 1 + setnum;
        } else if op != SetOp::Diff && !cardinality_only && remaining >= 2 && is(opt, "aggregate") {
            let how = args.get(j + 1);
            aggregate = if is(how, "sum") {
                Aggregate::Sum
            } else if is(how, "min") {
                Aggregate::Min
            } else if is(how, "max") {
                Aggregate::Max
            } else {
                return ctx.reply.error(ERR_SYNTAX);
            };
            j += 2;
        } else if dst.is_none() && !cardinality_only && is(opt, "withscores") {
            withscores = true;
            j += 1;
        } else if cardinality_only && remaining >= 2 && is(opt, "limit") {
            match int_arg(args.get(j + 1)) {
                Some(l) if l >= 0 => limit = usize::try_from(l).unwrap_or(usize::MAX),
                _ => return ctx.reply.error("ERR LIMIT can't be negative"),
            }
            j += 2;
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
    }

    if op != SetOp::Diff {
        // Smallest first, as Redis sorts them: it decides the order in which a
        // member's scores are summed, which the last bits of a sum can depend on.
        // A stable sort, like the merge sort behind glibc's qsort.
        inputs.sort_by_key(|input| input.len);
    }
    if cardinality_only {
        let n = inter_cardinality(&mut ctx.keys, &inputs, limit);
        return ctx.reply.int(n as i64);
    }
    let mut result = match op {
        SetOp::Union => union_of(&mut ctx.keys, &inputs, aggregate),
        SetOp::Inter => inter_of(&mut ctx.keys, &inputs, aggregate),
        SetOp::Diff => diff_of(&mut ctx.keys, &inputs),
    };
    // The order of a sorted set; scores are never NaN here.
    result.sort_by(zset_order);
    match dst {
        Some(dst) => {
            // Redis builds the result as a skiplist, then converts it to a listpack
            // when it is small enough: its final size and longest member decide.
            let longest = result.iter().map(|(m, _)| m.len()).max().unwrap_or(0);
            store_result(ctx, dst, &result, ZSet::for_new_key(result.len(), longest));
        }
        None => {
            range_header(&mut ctx.reply, result.len(), withscores);
            for (member, score) in &result {
                emit(&mut ctx.reply, member, *score, withscores);
            }
        }
    }
}

/// The order of a sorted set: by score as IEEE doubles (so `-0` and `0` tie), then by
/// member, bytewise. Scores here are never NaN.
fn zset_order(a: &(CompactBytes, f64), b: &(CompactBytes, f64)) -> std::cmp::Ordering {
    debug_assert!(!a.1.is_nan() && !b.1.is_nan(), "sorted set scores are never NaN");
    a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.0.as_slice().cmp(b.0.as_slice()))
}

/// ZUNION: every member of every input, its weighted scores folded in input order.
fn union_of(keys: &mut Keys<'_>, inputs: &[Input], aggregate: Aggregate) -> Vec<(CompactBytes, f64)> {
    let mut acc: crate::keyspace::Dict<CompactBytes, f64> = crate::keyspace::Dict::new();
    for input in inputs {
        let Some(loc) = input.loc else { continue };
        input_each(keys, loc, |member, score| {
            let value = weighted(score, input.weight);
            match acc.get_mut(member) {
                Some(target) => aggregate.fold(target, value),
                None => {
                    acc.insert(member.clone(), value);
                }
            }
        });
    }
    acc.into_entries()
}

/// The members of the first (smallest) input, copied: the others are read while
/// walking it, and all of them are borrowed from the same keyspace.
fn first_members(keys: &mut Keys<'_>, input: &Input) -> Vec<(CompactBytes, f64)> {
    let mut members = Vec::with_capacity(input.len);
    if let Some(loc) = input.loc {
        input_each(keys, loc, |m, s| members.push((m.clone(), s)));
    }
    members
}

/// ZINTER: the members of the smallest input found in every other one. The first
/// score is weighted with NaN as 0; the others are folded in as they are, as Redis
/// does.
fn inter_of(keys: &mut Keys<'_>, inputs: &[Input], aggregate: Aggregate) -> Vec<(CompactBytes, f64)> {
    let mut out = Vec::new();
    'members: for (member, score) in first_members(keys, &inputs[0]) {
        let mut total = weighted(score, inputs[0].weight);
        for input in &inputs[1..] {
            let found = input.loc.and_then(|loc| input_score(keys, loc, &member));
            match found {
                Some(s) => aggregate.fold(&mut total, s * input.weight),
                None => continue 'members,
            }
        }
        out.push((member, total));
    }
    out
}

/// ZINTERCARD: how many members of the smallest input are in every other one,
/// counting no further than `limit` (0: no limit).
fn inter_cardinality(keys: &mut Keys<'_>, inputs: &[Input], limit: usize) -> usize {
    let mut n = 0;
    for (member, _) in first_members(keys, &inputs[0]) {
        let everywhere =
            inputs[1..].iter().all(|input| input.loc.is_some_and(|loc| input_score(keys, loc, &member).is_some()));
        if everywhere {
            n += 1;
            if limit != 0 && n >= limit {
                break;
            }
        }
    }
    n
}

/// ZDIFF: the members of the first input (in argument order) found in no other one,
/// with their own scores (ZDIFF takes no weights).
fn diff_of(keys: &mut Keys<'_>, inputs: &[Input]) -> Vec<(CompactBytes, f64)> {
    let mut members = first_members(keys, &inputs[0]);
    members.retain(|(member, _)| {
        !inputs[1..].iter().any(|input| input.loc.is_some_and(|loc| input_score(keys, loc, member).is_some()))
    });
    members
}

/// Replaces `dst` with a sorted set of `result` (Redis's `setKey`: any old value and
/// its TTL go), or deletes `dst` when the result is empty, and replies the result's
/// size. `zset` is the empty set to fill, created with the encoding Redis would
/// pick for it (see [`ZSet::for_new_key`]).
fn store_result(ctx: &mut Ctx<'_>, dst: &[u8], result: &[(CompactBytes, f64)], mut zset: ZSet) {
    if result.is_empty() {
        if ctx.keys.delete(dst) {
            ctx.keys.modified(dst);
        }
        return ctx.reply.int(0);
    }
    debug_assert!(zset.is_empty());
    for (member, score) in result {
        let before = zset.insert(member, *score);
        debug_assert!(before.is_none(), "a result holds each member once");
    }
    let n = zset.len();
    debug_assert_eq!(n, result.len());
    ctx.keys.set(dst, Value::ZSet(Box::new(zset)));
    ctx.keys.modified(dst);
    ctx.reply.int(n as i64);
}

// ----- ZRANDMEMBER -----

/// ZRANDMEMBER key [count [WITHSCORES]] (Redis 7.0's `zrandmemberCommand`).
fn zrandmember(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() < 3 {
        let loc = match lookup(ctx, args.get(1), true) {
            Err(()) => return,
            Ok(None) => return ctx.reply.null_bulk(),
            Ok(Some(loc)) => loc,
        };
        let members = zset_at(&mut ctx.keys, loc).members();
        let (member, _) = members.at(fastrand::usize(..members.len()));
        return ctx.reply.bulk(member);
    }
    let Some(count) = int_arg(args.get(2)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    if count == i64::MIN {
        return ctx
            .reply
            .error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807");
    }
    if args.len() > 4 || (args.len() == 4 && !is(args.get(3), "withscores")) {
        return ctx.reply.error(ERR_SYNTAX);
    }
    let withscores = args.len() == 4;
    // Redis keeps count * 2 (the RESP2 reply length) from overflowing.
    if withscores && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return ctx.reply.error("ERR value is out of range");
    }
    let loc = match lookup(ctx, args.get(1), true) {
        Err(()) => return,
        Ok(None) => return empty_array(&mut ctx.reply),
        Ok(Some(loc)) => loc,
    };
    let zset = zset_at(&mut ctx.keys, loc);
    let reply = &mut ctx.reply;
    let (wanted, unique) = (count.unsigned_abs(), count >= 0);
    if wanted == 0 {
        return empty_array(reply);
    }
    let size = zset.len();
    let members = zset.members();
    if !unique || wanted == 1 {
        // Sampling with replacement, in random order (repeats allowed).
        range_header(reply, wanted as usize, withscores);
        for _ in 0..wanted {
            let (member, score) = members.at(fastrand::usize(..size));
            emit(reply, member, *score, withscores);
        }
    } else if wanted >= size as u64 {
        // Asking for at least everything: the whole set, in order, as Redis does.
        range_header(reply, size, withscores);
        for (member, score) in zset.iter() {
            emit(reply, member, score, withscores);
        }
    } else {
        let wanted = wanted as usize;
        range_header(reply, wanted, withscores);
        for pos in distinct_positions(size, wanted) {
            let (member, score) = members.at(pos);
            emit(reply, member, *score, withscores);
        }
    }
}

/// `wanted` distinct positions out of `0..size` (`wanted < size`), in random order.
/// Like Redis, a large share is taken by shuffling everything and a small one by
/// drawing until enough distinct positions came up.
fn distinct_positions(size: usize, wanted: usize) -> Vec<usize> {
    debug_assert!(wanted < size);
    if wanted * 3 > size {
        let mut all: Vec<usize> = (0..size).collect();
        for i in 0..wanted {
            let j = fastrand::usize(i..size);
            all.swap(i, j);
        }
        all.truncate(wanted);
        all
    } else {
        let mut seen = HashSet::with_capacity(wanted);
        let mut picked = Vec::with_capacity(wanted);
        while picked.len() < wanted {
            let pos = fastrand::usize(..size);
            if seen.insert(pos) {
                picked.push(pos);
            }
        }
        picked
    }
}

// ----- ZSCAN -----

/// ZSCAN key cursor [MATCH pattern] [COUNT count] (Redis's `zscanCommand` and
/// `scanGenericCommand`). The cursor is a position in the member dict
/// ([`crate::keyspace::dict::scan_positions`]), which keeps SCAN's guarantee: a
/// member present for the whole iteration is returned at least once.
fn zscan(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(cursor) = super::parse_cursor(args.get(2)) else {
        return ctx.reply.error("ERR invalid cursor");
    };
    let loc = match lookup(ctx, args.get(1), true) {
        Err(()) => return,
        Ok(None) => {
            ctx.reply.array(2);
            ctx.reply.bulk(b"0");
            return ctx.reply.array(0);
        }
        Ok(Some(loc)) => loc,
    };
    // Options are parsed after the key lookup, as in Redis.
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 3;
    while i < args.len() {
        let has_value = args.len() - i >= 2;
        if is(args.get(i), "count") && has_value {
            match int_arg(args.get(i + 1)) {
                None => return ctx.reply.error(ERR_NOT_INTEGER),
                Some(c) if c < 1 => return ctx.reply.error(ERR_SYNTAX),
                Some(c) => count = usize::try_from(c).unwrap_or(usize::MAX),
            }
        } else if is(args.get(i), "match") && has_value {
            let p = args.get(i + 1);
            pattern = (p != b"*").then_some(p);
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
        i += 2;
    }
    let zset = zset_at(&mut ctx.keys, loc);
    // Owned copies: the dict walk lends its members only for the visit.
    let mut found: Vec<(CompactBytes, f64)> = Vec::new();
    // Redis returns a listpack-encoded set whole, in order, with cursor 0; a set of
    // that shape is answered the same way, so clients see the same pages.
    let listpack = zset.listpack_sized();
    let next = if listpack {
        found.extend(zset.iter().map(|(m, s)| (m.clone(), s)));
        0
    } else {
        let start = usize::try_from(cursor).unwrap_or(usize::MAX);
        crate::keyspace::dict::scan_positions(zset.members(), start, count, |m, s| found.push((m.clone(), *s)))
    };
    if let Some(p) = pattern {
        found.retain(|(m, _)| crate::glob::matches(p, m, false));
    }
    let reply = &mut ctx.reply;
    reply.array(2);
    reply.bulk(itoa::Buffer::new().format(next).as_bytes());
    reply.array(found.len() * 2);
    let mut text = [0u8; 64];
    for (member, score) in &found {
        reply.bulk(member);
        // Scores in ZSCAN are plain strings, in RESP3 too, printed the way Redis's
        // encoding of the set stores them.
        let n = if listpack { listpack_score_text(*score, &mut text) } else { format_double(*score, &mut text) };
        reply.bulk(&text[..n]);
    }
}

/// A score as a listpack stores it (Redis's `d2string`): an integral value within
/// ±2^62 as an integer ("123456789012345680", where `%.17g` gives
/// "1.2345678901234568e+17"), anything else as `%.17g`, `inf` or `-inf`. ZSCAN of a
/// listpack-encoded set returns this text.
fn listpack_score_text(score: f64, out: &mut [u8; 64]) -> usize {
    /// `(double)(LLONG_MAX / 2)`: past this, d2string stops printing integers.
    const INTEGER_LIMIT: f64 = 4_611_686_018_427_387_904.0;
    if score.is_finite() && score.fract() == 0.0 && (-INTEGER_LIMIT..=INTEGER_LIMIT).contains(&score) {
        let mut b = itoa::Buffer::new();
        let text = b.format(score as i64).as_bytes();
        out[..text.len()].copy_from_slice(text);
        return text.len();
    }
    format_double(score, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listpack_scores_print_like_d2string() {
        let text = |v: f64| {
            let mut buf = [0u8; 64];
            let n = listpack_score_text(v, &mut buf);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert_eq!(text(123456789012345678.0), "123456789012345680");
        assert_eq!(text(-3.0), "-3");
        assert_eq!(text(0.1), "0.10000000000000001");
        assert_eq!(text(4611686018427387904.0), "4611686018427387904");
        assert_eq!(text(9223372036854775807.0), "9.2233720368547758e+18");
        assert_eq!(text(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn aggregates_follow_redis_nan_conventions() {
        let fold = |how: Aggregate, start: f64, value: f64| {
            let mut target = start;
            how.fold(&mut target, value);
            target
        };
        assert_eq!(fold(Aggregate::Sum, f64::INFINITY, f64::NEG_INFINITY), 0.0, "inf - inf is 0");
        assert_eq!(fold(Aggregate::Sum, 1.5, 2.0), 3.5);
        assert_eq!(fold(Aggregate::Min, 3.0, f64::NAN), 3.0, "NaN never wins MIN");
        assert_eq!(fold(Aggregate::Max, 3.0, f64::NAN), 3.0, "NaN never wins MAX");
        assert_eq!(fold(Aggregate::Min, 3.0, -1.0), -1.0);
        assert_eq!(fold(Aggregate::Max, 3.0, 7.0), 7.0);
        assert_eq!(weighted(0.0, f64::INFINITY), 0.0, "inf * 0 counts as 0");
        assert_eq!(weighted(2.0, f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert!(weighted(0.0, -1.0).is_sign_negative(), "-0 stays -0 (ZUNION replies it)");
    }

    #[test]
    fn results_sort_like_a_skiplist() {
        let m = |s: &str| CompactBytes::new(s.as_bytes());
        let mut v = [(m("b"), 0.0), (m("a"), -0.0), (m("c"), -1.0), (m("a2"), f64::INFINITY)];
        v.sort_by(zset_order);
        let order: Vec<&[u8]> = v.iter().map(|(k, _)| k.as_slice()).collect();
        // -0 and 0 tie, so the members decide.
        assert_eq!(order, [&b"c"[..], b"a", b"b", b"a2"]);
    }

    #[test]
    fn store_key_finder_names_destination_and_sources() {
        let parts: [&[u8]; 6] = [b"ZUNIONSTORE", b"dst", b"2", b"a", b"b", b"WEIGHTS"];
        let mut data = Vec::new();
        let mut spans = Vec::new();
        for p in parts {
            spans.push(data.len()..data.len() + p.len());
            data.extend_from_slice(p);
        }
        let mut out = Vec::new();
        store_algebra_keys(&Args::new(&data, &spans), &mut out);
        assert_eq!(out, [1, 3, 4]);
        out.clear();
        store_algebra_keys(&Args::new(&data, &spans[..1]), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn rank_ranges_clamp_like_redis() {
        assert_eq!(clamp_ranks(0, -1, 3), Some((0, 2)));
        assert_eq!(clamp_ranks(-100, 100, 3), Some((0, 2)));
        assert_eq!(clamp_ranks(2, 1, 3), None);
        assert_eq!(clamp_ranks(3, 5, 3), None);
        assert_eq!(clamp_ranks(0, -4, 3), None);
        assert_eq!(clamp_ranks(i64::MIN, i64::MAX, 3), Some((0, 2)));
        assert_eq!(clamp_ranks(0, 0, 0), None);
    }

    #[test]
    fn distinct_positions_are_distinct_and_in_bounds() {
        for (size, wanted) in [(10, 9), (10, 2), (100, 1), (1000, 5)] {
            let picked = distinct_positions(size, wanted);
            assert_eq!(picked.len(), wanted);
            let unique: HashSet<_> = picked.iter().collect();
            assert_eq!(unique.len(), wanted);
            assert!(picked.iter().all(|&p| p < size));
        }
    }
}
