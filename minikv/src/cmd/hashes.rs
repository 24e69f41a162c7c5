//! Hash commands: fields set and read one or many at a time, counters on fields,
//! random fields (HRANDFIELD) and HSCAN.
//!
//! A hash is a [`Dict`](crate::keyspace::Dict) of field to value ([`HashValue`]).
//! Redis keeps small hashes as a listpack (a flat array in insertion order) and
//! converts them to a hash table past `hash-max-listpack-entries` fields or
//! `hash-max-listpack-value` bytes; we always use the dict, whose iteration order is
//! also insertion order until a field is deleted. The one place the difference shows
//! is HSCAN, which Redis answers in a single call for a listpack hash, so we do the
//! same for hashes that would be one (see [`scan_returns_whole`]).
//!
//! Values are stored as bytes. HINCRBY parses them with Redis's strict integer syntax
//! on each call rather than keeping an integer encoding, and HINCRBYFLOAT computes in
//! C `long double` like Redis (through [`long_double_incr`]) and is written to the AOF
//! as the HSET of its result, so replay never depends on float formatting.
//!
//! Left out: keyspace notifications, and the hash-field expiry commands of Redis 7.4.

use super::sets::{parse_scan_options, random_count_arg, reply_scan_header, sample_distinct, scan_dict, Replied};
use super::{cmd, flag, int_arg, is, range, Command, Ctx, ERR_NOT_FLOAT, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::keyspace::{kind, CompactBytes, HashValue, Keys, Loc, WRONGTYPE};
use crate::numeric::{long_double_incr, FloatIncrError};
use crate::resp::{parse_i64_strict, Args, Reply};

const W: u32 = flag::WRITE;
const R: u32 = flag::READONLY;
const F: u32 = flag::FAST;
const M: u32 = flag::DENYOOM;

// Summaries are the ones redis-server 7.0 reports in COMMAND DOCS.
#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("hset", -4, W | M | F, range(1, 1, 1), hset, "hash", "Set the string value of a hash field", "2.0.0"),
    cmd("hsetnx", 4, W | M | F, range(1, 1, 1), hsetnx, "hash", "Set the value of a hash field, only if the field does not exist", "2.0.0"),
    cmd("hmset", -4, W | M | F, range(1, 1, 1), hmset, "hash", "Set multiple hash fields to multiple values", "2.0.0"),
    cmd("hget", 3, R | F, range(1, 1, 1), hget, "hash", "Get the value of a hash field", "2.0.0"),
    cmd("hmget", -3, R | F, range(1, 1, 1), hmget, "hash", "Get the values of all the given hash fields", "2.0.0"),
    cmd("hdel", -3, W | F, range(1, 1, 1), hdel, "hash", "Delete one or more hash fields", "2.0.0"),
    cmd("hexists", 3, R | F, range(1, 1, 1), hexists, "hash", "Determine if a hash field exists", "2.0.0"),
    cmd("hgetall", 2, R, range(1, 1, 1), hgetall, "hash", "Get all the fields and values in a hash", "2.0.0"),
    cmd("hkeys", 2, R, range(1, 1, 1), hkeys, "hash", "Get all the fields in a hash", "2.0.0"),
    cmd("hvals", 2, R, range(1, 1, 1), hvals, "hash", "Get all the values in a hash", "2.0.0"),
    cmd("hlen", 2, R | F, range(1, 1, 1), hlen, "hash", "Get the number of fields in a hash", "2.0.0"),
    cmd("hincrby", 4, W | M | F, range(1, 1, 1), hincrby, "hash", "Increment the integer value of a hash field by the given number", "2.0.0"),
    cmd("hincrbyfloat", 4, W | M | F, range(1, 1, 1), hincrbyfloat, "hash", "Increment the float value of a hash field by the given amount", "2.6.0"),
    cmd("hstrlen", 3, R | F, range(1, 1, 1), hstrlen, "hash", "Get the length of the value of a hash field", "3.2.0"),
    cmd("hrandfield", -2, R, range(1, 1, 1), hrandfield, "hash", "Get one or multiple random fields from a hash", "6.2.0"),
    cmd("hscan", -3, R, range(1, 1, 1), hscan, "hash", "Incrementally iterate hash fields and associated values", "2.8.0"),
];

/// Redis 7.0's compiled-in defaults for `hash-max-listpack-entries` and
/// `hash-max-listpack-value` (the sample redis.conf lowers the first to 128): a hash
/// within both limits is a listpack there, which HSCAN returns whole.
const LISTPACK_MAX_ENTRIES: usize = 512;
const LISTPACK_MAX_VALUE: usize = 64;

/// The hash at `loc`, whose type the caller checked.
fn hash_at<'k>(keys: &'k mut Keys<'_>, loc: Loc) -> &'k mut HashValue {
    keys.value(loc).as_hash_mut()
}

/// The hash at `key` (looked up as a read or a write, for the keyspace statistics):
/// `Ok(None)` when missing, `Err` (WRONGTYPE already replied) for another type.
fn find_hash(ctx: &mut Ctx<'_>, key: &[u8], read: bool) -> Result<Option<Loc>, Replied> {
    match ctx.keys.typed(key, kind::hash, read) {
        Ok(found) => Ok(found),
        Err(_) => {
            ctx.reply.error(WRONGTYPE);
            Err(Replied)
        }
    }
}

/// A field's value, or the "no value" reply.
fn reply_field(reply: &mut Reply<'_>, value: Option<&CompactBytes>) {
    match value {
        Some(v) => reply.bulk(v),
        None => reply.null_bulk(),
    }
}

// ----- setting fields -----

/// HSET and HMSET (which differ only in the reply): any number of field/value pairs.
/// Every pair counts as a change, even one that rewrites the same value, as in Redis.
fn hset_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, name: &str) {
    if args.len() % 2 == 1 {
        return ctx.reply.error(&format!("ERR wrong number of arguments for '{name}' command"));
    }
    let key = args.get(1);
    let (loc, _) = match ctx.keys.get_or_create(key, kind::hash, kind::new_hash) {
        Ok(found) => found,
        Err(_) => return ctx.reply.error(WRONGTYPE),
    };
    let hash = hash_at(&mut ctx.keys, loc);
    let mut created = 0;
    for i in (2..args.len()).step_by(2) {
        let (field, value) = (args.get(i), args.get(i + 1));
        match hash.get_mut(field) {
            Some(old) => *old = CompactBytes::new(value),
            None => {
                hash.insert(CompactBytes::new(field), CompactBytes::new(value));
                created += 1;
            }
        }
    }
    let pairs = ((args.len() - 2) / 2) as u64;
    ctx.keys.modified_by(key, pairs);
    if name == "hset" {
        ctx.reply.int(created);
    } else {
        ctx.reply.ok();
    }
}

fn hset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    hset_generic(ctx, args, "hset");
}

fn hmset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    hset_generic(ctx, args, "hmset");
}

fn hsetnx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, field) = (args.get(1), args.get(2));
    let loc = match find_hash(ctx, key, false) {
        Ok(Some(loc)) => {
            if hash_at(&mut ctx.keys, loc).contains(field) {
                return ctx.reply.int(0);
            }
            loc
        }
        Ok(None) => ctx.keys.insert_new(key, kind::new_hash()),
        Err(Replied) => return,
    };
    hash_at(&mut ctx.keys, loc).insert(CompactBytes::new(field), CompactBytes::new(args.get(3)));
    ctx.keys.modified_by(key, 1);
    ctx.reply.int(1);
}

// ----- reading fields -----

fn hget(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match find_hash(ctx, args.get(1), true) {
        Ok(Some(loc)) => {
            let value = hash_at(&mut ctx.keys, loc).get(args.get(2));
            reply_field(&mut ctx.reply, value)
        }
        Ok(None) => ctx.reply.null_bulk(),
        Err(Replied) => {}
    }
}

fn hmget(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // A missing key is an empty hash: a nil for every field.
    let found = match find_hash(ctx, args.get(1), true) {
        Ok(found) => found,
        Err(Replied) => return,
    };
    ctx.reply.array(args.len() - 2);
    for field in args.iter().skip(2) {
        match found {
            Some(loc) => {
                let value = hash_at(&mut ctx.keys, loc).get(field);
                reply_field(&mut ctx.reply, value)
            }
            None => ctx.reply.null_bulk(),
        }
    }
}

fn hdel(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let loc = match find_hash(ctx, key, false) {
        Ok(Some(loc)) => loc,
        Ok(None) => return ctx.reply.int(0),
        Err(Replied) => return,
    };
    let hash = hash_at(&mut ctx.keys, loc);
    let mut deleted = 0;
    for field in args.iter().skip(2) {
        if hash.remove(field).is_some() {
            deleted += 1;
            if hash.is_empty() {
                break;
            }
        }
    }
    if deleted > 0 {
        ctx.keys.delete_if_empty(loc);
        ctx.keys.modified_by(key, deleted);
    }
    ctx.reply.int(deleted as i64);
}

fn hexists(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match find_hash(ctx, args.get(1), true) {
        Ok(Some(loc)) => {
            let found = hash_at(&mut ctx.keys, loc).contains(args.get(2));
            ctx.reply.int(found as i64)
        }
        Ok(None) => ctx.reply.int(0),
        Err(Replied) => {}
    }
}

fn hlen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match find_hash(ctx, args.get(1), true) {
        Ok(Some(loc)) => {
            let len = hash_at(&mut ctx.keys, loc).len();
            ctx.reply.int(len as i64)
        }
        Ok(None) => ctx.reply.int(0),
        Err(Replied) => {}
    }
}

fn hstrlen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match find_hash(ctx, args.get(1), true) {
        Ok(Some(loc)) => {
            let len = hash_at(&mut ctx.keys, loc).get(args.get(2)).map_or(0, |v| v.len());
            ctx.reply.int(len as i64)
        }
        Ok(None) => ctx.reply.int(0),
        Err(Replied) => {}
    }
}

/// What HGETALL, HKEYS and HVALS return of each field.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Fields,
    Values,
    Both,
}

/// HGETALL (a map: `%n` in RESP3), HKEYS and HVALS (arrays).
fn getall_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, part: Part) {
    let loc = match find_hash(ctx, args.get(1), true) {
        Ok(Some(loc)) => loc,
        Ok(None) if part == Part::Both => return ctx.reply.map(0),
        Ok(None) => return ctx.reply.array(0),
        Err(Replied) => return,
    };
    let hash = hash_at(&mut ctx.keys, loc);
    if part == Part::Both {
        ctx.reply.map(hash.len());
    } else {
        ctx.reply.array(hash.len());
    }
    for (field, value) in hash.iter() {
        if part != Part::Values {
            ctx.reply.bulk(field);
        }
        if part != Part::Fields {
            ctx.reply.bulk(value);
        }
    }
}

fn hgetall(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    getall_generic(ctx, args, Part::Both);
}

fn hkeys(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    getall_generic(ctx, args, Part::Fields);
}

fn hvals(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    getall_generic(ctx, args, Part::Values);
}

// ----- counters -----

/// HINCRBY key field increment. The increment is checked before the key's type, the
/// field's value before the sum, as Redis does; nothing is created unless the
/// increment succeeds.
fn hincrby(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, field) = (args.get(1), args.get(2));
    let Some(incr) = int_arg(args.get(3)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let found = match find_hash(ctx, key, false) {
        Ok(found) => found,
        Err(Replied) => return,
    };
    let current = match found.and_then(|loc| hash_at(&mut ctx.keys, loc).get(field).cloned()) {
        None => 0,
        Some(v) => match parse_i64_strict(&v) {
            Some(n) => n,
            None => return ctx.reply.error("ERR hash value is not an integer"),
        },
    };
    let Some(new) = current.checked_add(incr) else {
        return ctx.reply.error("ERR increment or decrement would overflow");
    };
    let loc = found.unwrap_or_else(|| ctx.keys.insert_new(key, kind::new_hash()));
    let mut b = itoa::Buffer::new();
    hash_at(&mut ctx.keys, loc).insert(CompactBytes::new(field), CompactBytes::new(b.format(new).as_bytes()));
    ctx.keys.modified_by(key, 1);
    ctx.reply.int(new);
}

/// HINCRBYFLOAT key field increment, in `long double` like Redis. Checks, in Redis
/// 7.0.15's order: the increment parses, the increment is finite, the key's type, the
/// field's value parses, the sum is finite. Logged as `HSET key field <result>`.
fn hincrbyfloat(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, field, incr) = (args.get(1), args.get(2), args.get(3));
    // Adding to 0 validates the increment alone: only an infinite one overflows.
    match long_double_incr(None, incr) {
        Ok(_) => {}
        Err(FloatIncrError::NanOrInfinity) => return ctx.reply.error("ERR value is NaN or Infinity"),
        Err(FloatIncrError::BaseNotFloat | FloatIncrError::IncrNotFloat) => return ctx.reply.error(ERR_NOT_FLOAT),
    }
    let found = match find_hash(ctx, key, false) {
        Ok(found) => found,
        Err(Replied) => return,
    };
    let current = found.and_then(|loc| hash_at(&mut ctx.keys, loc).get(field).cloned());
    let new = match long_double_incr(current.as_deref(), incr) {
        Ok(v) => v,
        Err(FloatIncrError::BaseNotFloat) => return ctx.reply.error("ERR hash value is not a float"),
        Err(FloatIncrError::NanOrInfinity) => return ctx.reply.error("ERR increment would produce NaN or Infinity"),
        // Validated above; kept as an answer rather than a panic.
        Err(FloatIncrError::IncrNotFloat) => return ctx.reply.error(ERR_NOT_FLOAT),
    };
    let loc = found.unwrap_or_else(|| ctx.keys.insert_new(key, kind::new_hash()));
    hash_at(&mut ctx.keys, loc).insert(CompactBytes::new(field), CompactBytes::new(&new));
    ctx.keys.modified_by(key, 1);
    ctx.reply.bulk(&new);
    ctx.keys.propagate([&b"HSET"[..], key, field, &new].into_iter());
}

// ----- HRANDFIELD -----

/// Replies one field, with its value when asked: a 2-element array in RESP3, two flat
/// elements in RESP2 (the caller sized the outer array accordingly).
fn reply_random_field(reply: &mut Reply<'_>, field: &CompactBytes, value: &CompactBytes, with_values: bool) {
    if with_values && reply.resp3() {
        reply.array(2);
    }
    reply.bulk(field);
    if with_values {
        reply.bulk(value);
    }
}

/// The outer array of HRANDFIELD with a count: flat (twice as long) in RESP2 when
/// values are included.
fn random_reply_header(reply: &mut Reply<'_>, fields: u64, with_values: bool) {
    let n = if with_values && !reply.resp3() { fields * 2 } else { fields };
    reply.array(n as usize);
}

/// HRANDFIELD key [count [WITHVALUES]], with Redis 7.0's count semantics: a positive
/// count gives distinct fields (at most the whole hash), a negative one `|count|`
/// fields that may repeat, 0 an empty array.
fn hrandfield(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut count = None;
    let mut with_values = false;
    if args.len() >= 3 {
        let n = match random_count_arg(args.get(2)) {
            Ok(n) => n,
            Err(e) => return ctx.reply.error(e),
        };
        if args.len() > 4 || (args.len() == 4 && !is(args.get(3), "withvalues")) {
            return ctx.reply.error(ERR_SYNTAX);
        }
        with_values = args.len() == 4;
        // Redis refuses counts whose RESP2 reply length (2 * |count|) would overflow.
        if with_values && n < -(i64::MAX / 2) {
            return ctx.reply.error("ERR value is out of range");
        }
        count = Some(n);
    }
    let loc = match find_hash(ctx, args.get(1), true) {
        Ok(Some(loc)) => loc,
        Ok(None) if count.is_some() => return ctx.reply.array(0),
        Ok(None) => return ctx.reply.null_bulk(),
        Err(Replied) => return,
    };
    let mut rng = fastrand::Rng::new();
    let hash = hash_at(&mut ctx.keys, loc);
    let size = hash.len();
    let Some(count) = count else {
        let (field, _) = hash.at(rng.usize(..size));
        return ctx.reply.bulk(field);
    };
    let (wanted, distinct) = (count.unsigned_abs(), count > 0);
    if wanted == 0 {
        return ctx.reply.array(0);
    }
    if !distinct || wanted == 1 {
        random_reply_header(&mut ctx.reply, wanted, with_values);
        for _ in 0..wanted {
            let (field, value) = hash.at(rng.usize(..size));
            reply_random_field(&mut ctx.reply, field, value, with_values);
        }
        return;
    }
    if wanted >= size as u64 {
        random_reply_header(&mut ctx.reply, size as u64, with_values);
        for (field, value) in hash.iter() {
            reply_random_field(&mut ctx.reply, field, value, with_values);
        }
        return;
    }
    let picked = sample_distinct(size, wanted as usize, &mut rng);
    random_reply_header(&mut ctx.reply, picked.len() as u64, with_values);
    for pos in picked {
        let (field, value) = hash.at(pos);
        reply_random_field(&mut ctx.reply, field, value, with_values);
    }
}

// ----- HSCAN -----

/// Whether Redis 7.0 would hold this hash as a listpack, which HSCAN returns whole.
fn scan_returns_whole(hash: &HashValue) -> bool {
    hash.len() <= LISTPACK_MAX_ENTRIES
        && hash.iter().all(|(f, v)| f.len() <= LISTPACK_MAX_VALUE && v.len() <= LISTPACK_MAX_VALUE)
}

/// HSCAN key cursor [MATCH pattern] [COUNT count]: `[cursor, [field, value, ...]]`.
/// The pattern applies to fields. Redis checks the cursor, then the key, then the
/// options (a missing key answers an empty scan even with bad options).
fn hscan(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(cursor) = super::parse_cursor(args.get(2)) else {
        return ctx.reply.error("ERR invalid cursor");
    };
    let loc = match find_hash(ctx, args.get(1), true) {
        Ok(Some(loc)) => loc,
        Ok(None) => return reply_scan_header(&mut ctx.reply, 0, 0),
        Err(Replied) => return,
    };
    let opts = match parse_scan_options(args, 3) {
        Ok(o) => o,
        Err(e) => return ctx.reply.error(e),
    };
    let hash = hash_at(&mut ctx.keys, loc);
    let (next, found) = scan_dict(hash, cursor, &opts, scan_returns_whole(hash));
    reply_scan_header(&mut ctx.reply, next, found.len() * 2);
    for (field, value) in &found {
        ctx.reply.bulk(field);
        ctx.reply.bulk(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Protocol;

    #[test]
    fn listpack_like_hashes_scan_whole() {
        let mut hash = HashValue::new();
        for i in 0..LISTPACK_MAX_ENTRIES {
            hash.insert(CompactBytes::new(format!("f{i}").as_bytes()), CompactBytes::new(b"v"));
        }
        assert!(scan_returns_whole(&hash));
        hash.insert(CompactBytes::new(b"one-more"), CompactBytes::new(b"v"));
        assert!(!scan_returns_whole(&hash), "one past the entry limit");

        let mut long = HashValue::new();
        long.insert(CompactBytes::new(b"f"), CompactBytes::new(&[b'x'; LISTPACK_MAX_VALUE]));
        assert!(scan_returns_whole(&long));
        long.insert(CompactBytes::new(&[b'y'; LISTPACK_MAX_VALUE + 1]), CompactBytes::new(b"v"));
        assert!(!scan_returns_whole(&long), "a field past the value limit");
    }

    /// HRANDFIELD WITHVALUES: a flat array in RESP2, an array of pairs in RESP3.
    #[test]
    fn random_fields_with_values_nest_only_in_resp3() {
        let (f, v) = (CompactBytes::new(b"f"), CompactBytes::new(b"v"));
        let encode = |proto| {
            let mut out = Vec::new();
            let mut reply = Reply::new(&mut out, proto);
            random_reply_header(&mut reply, 2, true);
            reply_random_field(&mut reply, &f, &v, true);
            reply_random_field(&mut reply, &f, &v, true);
            out
        };
        assert_eq!(encode(Protocol::Resp2), b"*4\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\nf\r\n$1\r\nv\r\n");
        assert_eq!(encode(Protocol::Resp3), b"*2\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
        let mut out = Vec::new();
        let mut reply = Reply::new(&mut out, Protocol::Resp3);
        random_reply_header(&mut reply, 1, false);
        reply_random_field(&mut reply, &f, &v, false);
        assert_eq!(out, b"*1\r\n$1\r\nf\r\n");
    }
}
