//! Sorted set commands: ZADD and its options, scores, ranks, the three kinds of range
//! (by rank, by score, by lex) to read or remove, pops (blocking too), ZRANDMEMBER and
//! ZSCAN.
//!
//! The data structure is [`ZSet`] (a skiplist with spans plus a dict); this file is
//! Redis 7.0's `t_zset.c` command layer: each handler parses and checks every argument
//! first, in Redis's order so that the same error wins, then looks the key up, then
//! applies. The range commands share one parser ([`zrange_generic`]), as ZRANGE,
//! ZRANGEBYSCORE, ZREVRANGEBYLEX... share `zrangeGenericCommand` in Redis, so their
//! options and messages cannot drift apart.
//!
//! Reply shapes follow Redis 7.0 in both protocols: scores are doubles (a bulk string
//! "%.17g" in RESP2, a `,` double in RESP3); WITHSCORES and counted pops give a flat
//! array in RESP2 and an array of `[member, score]` pairs in RESP3. ZSCAN is the
//! exception: its scores are always bulk strings.
//!
//! Propagation: ZADD, ZINCRBY, ZREM, the ZREMRANGEBY* commands and ZPOPMIN/ZPOPMAX are
//! deterministic and go to the AOF as sent. BZPOPMIN/BZPOPMAX are logged as the plain
//! ZPOPMIN/ZPOPMAX they performed.
//!
//! Left out: the multi-key commands (ZUNION, ZINTER, ZDIFF and their STORE forms,
//! ZINTERCARD, ZRANGESTORE) and ZMPOP/BZMPOP, which `blocking` has no waiter kind for.

use std::collections::HashSet;
use std::sync::Arc;

use super::{cmd, flag, int_arg, is, range, Action, Command, Ctx, ERR_NOT_FLOAT, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::blocking::{self, parse_timeout, BlockKind, Waiter};
use crate::keyspace::zset::{Bounds, LexRange, ScoreRange};
use crate::keyspace::{kind, CompactBytes, Loc, Value, ZSet, WRONGTYPE};
use crate::numeric::{format_double, parse_double, parse_score_bound};
use crate::resp::{Args, OwnedArgs, Reply};

const W: u32 = flag::WRITE;
const R: u32 = flag::READONLY;
const F: u32 = flag::FAST;
const M: u32 = flag::DENYOOM;
const B: u32 = flag::BLOCKING;
const NS: u32 = flag::NOSCRIPT;

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

/// Redis 7.0's `zrangeGenericCommand`. `kind` and `rev` are fixed by the older
/// commands (ZRANGEBYSCORE, ZREVRANGE...) and `None` for ZRANGE, where BYSCORE,
/// BYLEX and REV choose them; an option that is fixed, or given twice, is a syntax
/// error, as in Redis.
fn zrange_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, mut kind: Option<RangeKind>, mut rev: Option<bool>) {
    let mut withscores = false;
    let (mut offset, mut limit) = (0i64, -1i64);
    let mut j = 4;
    while j < args.len() {
        let a = args.get(j);
        let left = args.len() - j - 1;
        if is(a, "withscores") {
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
        (true, RangeKind::Score | RangeKind::Lex) => (args.get(3), args.get(2)),
        _ => (args.get(2), args.get(3)),
    };
    match kind {
        RangeKind::Rank => {
            let (Some(start), Some(end)) = (int_arg(min_arg), int_arg(max_arg)) else {
                return ctx.reply.error(ERR_NOT_INTEGER);
            };
            let Some(loc) = range_source(ctx, args.get(1)) else { return };
            range_by_rank(ctx, loc, start, end, withscores, rev);
        }
        RangeKind::Score => {
            let Some(bounds) = score_range(min_arg, max_arg) else {
                return ctx.reply.error(ERR_SCORE_RANGE);
            };
            let Some(loc) = range_source(ctx, args.get(1)) else { return };
            range_by_bounds(ctx, loc, bounds, rev, offset, limit, withscores);
        }
        RangeKind::Lex => {
            let Some(bounds) = LexRange::parse(min_arg, max_arg) else {
                return ctx.reply.error(ERR_LEX_RANGE);
            };
            let Some(loc) = range_source(ctx, args.get(1)) else { return };
            range_by_bounds(ctx, loc, bounds, rev, offset, limit, false);
        }
    }
}

/// The set a range reads from; replies (empty array or WRONGTYPE) when there is none.
fn range_source(ctx: &mut Ctx<'_>, key: &[u8]) -> Option<Loc> {
    match lookup(ctx, key, true) {
        Err(()) => None,
        Ok(None) => {
            empty_array(&mut ctx.reply);
            None
        }
        Ok(Some(loc)) => Some(loc),
    }
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

/// Redis's `genericZrangebyrankCommand`: negative indexes count from the end; with
/// `rev` index 0 is the highest element.
fn range_by_rank(ctx: &mut Ctx<'_>, loc: Loc, start: i64, end: i64, withscores: bool, rev: bool) {
    let zset = zset_at(&mut ctx.keys, loc);
    let len = zset.len() as i64;
    let Some((start, end)) = clamp_ranks(start, end, len) else {
        return empty_array(&mut ctx.reply);
    };
    range_header(&mut ctx.reply, end - start + 1, withscores);
    if rev {
        let (lo, hi) = (len as usize - 1 - end, len as usize - 1 - start);
        for (member, score) in zset.range_by_rank(lo, hi).rev() {
            emit(&mut ctx.reply, member, score, withscores);
        }
    } else {
        for (member, score) in zset.range_by_rank(start, end) {
            emit(&mut ctx.reply, member, score, withscores);
        }
    }
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

/// Redis's `genericZrangebyscoreCommand` / `genericZrangebylexCommand`: walk from the
/// first (or with `rev` the last) element in range, skip `offset` elements, then
/// return up to `limit` (all when negative) while they stay in range.
fn range_by_bounds<Bd: Bounds>(
    ctx: &mut Ctx<'_>,
    loc: Loc,
    bounds: Bd,
    rev: bool,
    offset: i64,
    limit: i64,
    withscores: bool,
) {
    let zset = zset_at(&mut ctx.keys, loc);
    // An offset past the end selects nothing; a negative one walks off the end in
    // Redis (its `while (offset--)` never reaches zero), which is also nothing.
    if offset < 0 || (offset > 0 && offset as u64 >= zset.len() as u64) {
        return empty_array(&mut ctx.reply);
    }
    let mut walk = zset.range(bounds, rev);
    walk.skip_unchecked(offset as usize);
    let take = if limit < 0 { usize::MAX } else { limit as usize };
    // Redis writes the length after the elements; we collect them first.
    let found: Vec<(&CompactBytes, f64)> = walk.take(take).collect();
    range_header(&mut ctx.reply, found.len(), withscores);
    for (member, score) in found {
        emit(&mut ctx.reply, member, score, withscores);
    }
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

/// BZPOPMIN/BZPOPMAX key [key ...] timeout (Redis's `blockingGenericZpopCommand`):
/// pop from the first non-empty key in argument order, or wait.
fn blocking_pop(ctx: &mut Ctx<'_>, args: &Args<'_>, min: bool) {
    let last = args.len() - 1;
    let timeout = match parse_timeout(args.get(last), ctx.keys.now_ms) {
        Ok(t) => t,
        Err(e) => return ctx.reply.error(e),
    };
    for i in 1..last {
        let key = args.get(i);
        let loc = match lookup(ctx, key, false) {
            Err(()) => return,
            Ok(None) => continue,
            Ok(Some(loc)) => loc,
        };
        let zset = zset_at(&mut ctx.keys, loc);
        let popped = if min { zset.pop_min() } else { zset.pop_max() };
        let Some((member, score)) = popped else {
            debug_assert!(false, "an empty sorted set was stored");
            continue;
        };
        ctx.reply.array(3);
        ctx.reply.bulk(key);
        ctx.reply.bulk(&member);
        ctx.reply.double(score);
        ctx.keys.modified(key);
        ctx.keys.delete_if_empty(loc);
        let pop: &[u8] = if min { b"ZPOPMIN" } else { b"ZPOPMAX" };
        ctx.keys.propagate([pop, key].into_iter());
        return;
    }
    if ctx.in_exec {
        // A transaction cannot wait: Redis answers as if the timeout had passed.
        return ctx.reply.null_array();
    }
    let keys = (1..last).map(|i| CompactBytes::new(args.get(i))).collect();
    let waiter = Arc::new(Waiter::new(BlockKind::ZPop { min }, ctx.keys.db, keys, ctx.session.proto));
    blocking::register(&mut ctx.keys, &waiter);
    // No reply now: the connection writes the waiter's reply, or a null array at the
    // timeout.
    ctx.action = Some(Action::Block { waiter, timeout, retry: OwnedArgs::from_args(args) });
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
