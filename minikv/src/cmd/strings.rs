//! String commands: GET, SET and its variants, counters, ranges.
//!
//! Every handler parses and validates all of its arguments before it changes
//! anything, so a bad option never leaves a half-applied write. Relative TTLs are
//! turned into absolute Unix milliseconds before they are stored and before they go to
//! the AOF (`SET k v EX 10` is logged as `SET k v PXAT <ms>`), so replaying the AOF
//! later does not extend them.

use super::{cmd, flag, int_arg, is, range, Command, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::keyspace::{Loc, Str, Value, WRONGTYPE};
use crate::numeric::{long_double_incr, FloatIncrError};
use crate::resp::Args;

const W: u32 = flag::WRITE;
const R: u32 = flag::READONLY;
const F: u32 = flag::FAST;
const M: u32 = flag::DENYOOM;

// Flags, arity and summaries are redis-server 7.0's (COMMAND INFO / COMMAND DOCS); a
// test compares them with the real server.
#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("get", 2, R | F, range(1, 1, 1), get, "string", "Get the value of a key", "1.0.0"),
    cmd("set", -3, W | M, range(1, 1, 1), set, "string", "Set the string value of a key", "1.0.0"),
    cmd("setnx", 3, W | M | F, range(1, 1, 1), setnx, "string", "Set the value of a key, only if the key does not exist", "1.0.0"),
    cmd("setex", 4, W | M, range(1, 1, 1), setex, "string", "Set the value and expiration of a key", "2.0.0"),
    cmd("psetex", 4, W | M, range(1, 1, 1), psetex, "string", "Set the value and expiration in milliseconds of a key", "2.6.0"),
    cmd("getset", 3, W | M | F, range(1, 1, 1), getset, "string", "Set the string value of a key and return its old value", "1.0.0"),
    cmd("getdel", 2, W | F, range(1, 1, 1), getdel, "string", "Get the value of a key and delete the key", "6.2.0"),
    cmd("getex", -2, W | F, range(1, 1, 1), getex, "string", "Get the value of a key and optionally set its expiration", "6.2.0"),
    cmd("mget", -2, R | F, range(1, -1, 1), mget, "string", "Get the values of all the given keys", "1.0.0"),
    cmd("mset", -3, W | M, range(1, -1, 2), mset, "string", "Set multiple keys to multiple values", "1.0.1"),
    cmd("msetnx", -3, W | M, range(1, -1, 2), msetnx, "string", "Set multiple keys to multiple values, only if none of the keys exist", "1.0.1"),
    cmd("incr", 2, W | M | F, range(1, 1, 1), incr, "string", "Increment the integer value of a key by one", "1.0.0"),
    cmd("decr", 2, W | M | F, range(1, 1, 1), decr, "string", "Decrement the integer value of a key by one", "1.0.0"),
    cmd("incrby", 3, W | M | F, range(1, 1, 1), incrby, "string", "Increment the integer value of a key by the given amount", "1.0.0"),
    cmd("decrby", 3, W | M | F, range(1, 1, 1), decrby, "string", "Decrement the integer value of a key by the given number", "1.0.0"),
    cmd("incrbyfloat", 3, W | M | F, range(1, 1, 1), incrbyfloat, "string", "Increment the float value of a key by the given amount", "2.6.0"),
    cmd("append", 3, W | M | F, range(1, 1, 1), append, "string", "Append a value to a key", "2.0.0"),
    cmd("strlen", 2, R | F, range(1, 1, 1), strlen, "string", "Get the length of the value stored in a key", "2.2.0"),
    cmd("getrange", 4, R, range(1, 1, 1), getrange, "string", "Get a substring of the string stored at a key", "2.4.0"),
    cmd("setrange", 4, W | M, range(1, 1, 1), setrange, "string", "Overwrite part of a string at key starting at the specified offset", "2.2.0"),
];

fn get(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match ctx.keys.get_str(args.get(1)) {
        Ok(Some(s)) => reply_str(&mut ctx.reply, s),
        Ok(None) => ctx.reply.null_bulk(),
        Err(_) => ctx.reply.error(WRONGTYPE),
    }
}

fn reply_str(reply: &mut crate::resp::Reply<'_>, s: &Str) {
    match s {
        Str::Int(v) => reply.bulk_int(*v),
        Str::Bytes(b) => reply.bulk(b),
    }
}

/// How a SET-like command sets the TTL.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ttl {
    /// Remove any TTL (plain SET).
    Clear,
    /// SET ... KEEPTTL.
    Keep,
    /// An absolute deadline in Unix ms.
    At(u64),
}

/// Units of an expire argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ExpireUnit {
    Seconds,
    Millis,
}

/// Turns an EX/PX/EXAT/PXAT argument into an absolute deadline, with Redis's checks
/// and message ("invalid expire time in 'set' command").
fn deadline(ctx: &Ctx<'_>, arg: &[u8], unit: ExpireUnit, relative: bool, cmd_name: &str) -> Result<u64, String> {
    let v = int_arg(arg).ok_or_else(|| ERR_NOT_INTEGER.to_string())?;
    let invalid = || format!("ERR invalid expire time in '{cmd_name}' command");
    if v <= 0 || (unit == ExpireUnit::Seconds && v > i64::MAX / 1000) {
        return Err(invalid());
    }
    let mut ms = if unit == ExpireUnit::Seconds { v * 1000 } else { v };
    if relative {
        ms = ms.checked_add(ctx.keys.now_ms as i64).ok_or_else(invalid)?;
    }
    if ms <= 0 {
        return Err(invalid());
    }
    Ok(ms as u64)
}

/// The TTL option of SET or GETEX.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ExpireKind {
    Ex,
    Px,
    ExAt,
    PxAt,
    KeepTtl,
    Persist,
}

impl ExpireKind {
    fn unit(self) -> ExpireUnit {
        match self {
            ExpireKind::Ex | ExpireKind::ExAt => ExpireUnit::Seconds,
            _ => ExpireUnit::Millis,
        }
    }

    fn relative(self) -> bool {
        matches!(self, ExpireKind::Ex | ExpireKind::Px)
    }
}

/// Options of SET (`for_set`) or GETEX, parsed like Redis's
/// `parseExtendedStringArgumentsOrReply`: NX and XX exclude each other, the TTL
/// options exclude each other, and repeating the same option is allowed (the last
/// value wins).
struct Extended<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    expire: Option<ExpireKind>,
    expire_arg: &'a [u8],
}

fn parse_extended<'a>(args: &Args<'a>, from: usize, for_set: bool) -> Result<Extended<'a>, ()> {
    let mut o = Extended { nx: false, xx: false, get: false, expire: None, expire_arg: b"" };
    let mut i = from;
    while i < args.len() {
        let a = args.get(i);
        let has_next = i + 1 < args.len();
        let free_for = |kind: ExpireKind| o.expire.is_none() || o.expire == Some(kind);
        let ttl_kind = if is(a, "ex") {
            Some(ExpireKind::Ex)
        } else if is(a, "px") {
            Some(ExpireKind::Px)
        } else if is(a, "exat") {
            Some(ExpireKind::ExAt)
        } else if is(a, "pxat") {
            Some(ExpireKind::PxAt)
        } else {
            None
        };
        if for_set && is(a, "nx") && !o.xx {
            o.nx = true;
        } else if for_set && is(a, "xx") && !o.nx {
            o.xx = true;
        } else if for_set && is(a, "get") {
            o.get = true;
        } else if for_set && is(a, "keepttl") && free_for(ExpireKind::KeepTtl) {
            o.expire = Some(ExpireKind::KeepTtl);
        } else if !for_set && is(a, "persist") && free_for(ExpireKind::Persist) {
            o.expire = Some(ExpireKind::Persist);
        } else if let Some(kind) = ttl_kind.filter(|k| free_for(*k) && has_next) {
            o.expire = Some(kind);
            o.expire_arg = args.get(i + 1);
            i += 1;
        } else {
            return Err(());
        }
        i += 1;
    }
    Ok(o)
}

impl Extended<'_> {
    /// The TTL to apply, validating the expire value (errors as Redis words them).
    fn ttl(&self, ctx: &Ctx<'_>, cmd_name: &str) -> Result<Ttl, String> {
        match self.expire {
            None | Some(ExpireKind::Persist) => Ok(Ttl::Clear),
            Some(ExpireKind::KeepTtl) => Ok(Ttl::Keep),
            Some(kind) => Ok(Ttl::At(deadline(ctx, self.expire_arg, kind.unit(), kind.relative(), cmd_name)?)),
        }
    }
}

fn set(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(opts) = parse_extended(args, 3, true) else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    let ttl = match opts.ttl(ctx, "set") {
        Ok(t) => t,
        Err(e) => return ctx.reply.error(&e),
    };
    let key = args.get(1);
    if opts.get {
        match ctx.keys.get_str(key) {
            Ok(Some(s)) => reply_str(&mut ctx.reply, s),
            Ok(None) => ctx.reply.null_bulk(),
            Err(_) => return ctx.reply.error(WRONGTYPE),
        }
    }
    let found = ctx.keys.lookup_write(key).is_some();
    if (opts.nx && found) || (opts.xx && !found) {
        if !opts.get {
            ctx.reply.null_bulk();
        }
        return;
    }
    store(ctx, key, args.get(2), ttl);
    if !opts.get {
        ctx.reply.ok();
    }
    propagate_set(ctx, args, ttl);
}

/// Writes a string with the given TTL treatment and marks the key modified.
fn store(ctx: &mut Ctx<'_>, key: &[u8], value: &[u8], ttl: Ttl) -> Loc {
    let loc = ctx.keys.set_keep_ttl(key, Value::str(value), ttl == Ttl::Keep);
    if let Ttl::At(at) = ttl {
        ctx.keys.set_expire(loc, Some(at));
    }
    ctx.keys.modified(key);
    loc
}

/// Logs a successful SET in its replay-safe form: `SET k v PXAT <ms>` when it had a
/// TTL, `SET k v [KEEPTTL]` otherwise (NX/XX/GET held, so they are dropped).
fn propagate_set(ctx: &mut Ctx<'_>, args: &Args<'_>, ttl: Ttl) {
    let (key, value) = (args.get(1), args.get(2));
    match ttl {
        Ttl::At(at) => {
            let mut b = itoa::Buffer::new();
            ctx.keys.propagate([&b"SET"[..], key, value, b"PXAT", b.format(at).as_bytes()].into_iter());
        }
        Ttl::Keep => ctx.keys.propagate([&b"SET"[..], key, value, b"KEEPTTL"].into_iter()),
        Ttl::Clear => ctx.keys.propagate([&b"SET"[..], key, value].into_iter()),
    }
}

fn setnx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    if ctx.keys.lookup_write(key).is_some() {
        return ctx.reply.int(0);
    }
    store(ctx, key, args.get(2), Ttl::Clear);
    ctx.reply.int(1);
}

fn setex_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, unit: ExpireUnit, name: &str) {
    let at = match deadline(ctx, args.get(2), unit, true, name) {
        Ok(at) => at,
        Err(e) => return ctx.reply.error(&e),
    };
    let key = args.get(1);
    store(ctx, key, args.get(3), Ttl::At(at));
    ctx.reply.ok();
    let mut b = itoa::Buffer::new();
    ctx.keys.propagate([&b"SET"[..], key, args.get(3), b"PXAT", b.format(at).as_bytes()].into_iter());
}

fn setex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    setex_generic(ctx, args, ExpireUnit::Seconds, "setex");
}

fn psetex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    setex_generic(ctx, args, ExpireUnit::Millis, "psetex");
}

fn getset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    match ctx.keys.get_str(key) {
        Ok(Some(s)) => reply_str(&mut ctx.reply, s),
        Ok(None) => ctx.reply.null_bulk(),
        Err(_) => return ctx.reply.error(WRONGTYPE),
    }
    store(ctx, key, args.get(2), Ttl::Clear);
    ctx.keys.propagate([&b"SET"[..], key, args.get(2)].into_iter());
}

fn getdel(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let Some(loc) = ctx.keys.lookup_read(key) else {
        return ctx.reply.null_bulk();
    };
    match &ctx.keys.entry(loc).value {
        Value::Str(s) => reply_str(&mut ctx.reply, s),
        _ => return ctx.reply.error(WRONGTYPE),
    }
    ctx.keys.remove(loc);
    ctx.keys.modified(key);
    ctx.keys.propagate([&b"DEL"[..], key].into_iter());
}

fn getex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Ok(opts) = parse_extended(args, 2, false) else {
        return ctx.reply.error(ERR_SYNTAX);
    };
    let key = args.get(1);
    // Redis looks the key up and checks its type before it validates the TTL value.
    let Some(loc) = ctx.keys.lookup_read(key) else {
        return ctx.reply.null_bulk();
    };
    if !matches!(ctx.keys.entry(loc).value, Value::Str(_)) {
        return ctx.reply.error(WRONGTYPE);
    }
    let ttl = match opts.ttl(ctx, "getex") {
        Ok(t) => t,
        Err(e) => return ctx.reply.error(&e),
    };
    if let Value::Str(s) = &ctx.keys.entry(loc).value {
        reply_str(&mut ctx.reply, s);
    }
    match (opts.expire, ttl) {
        // PERSIST on a key without a TTL changes nothing and logs nothing. (Persist
        // always comes with `Ttl::Clear`, so the arms below never see it.)
        (Some(ExpireKind::Persist), _) if ctx.keys.expire_at(loc).is_some() => {
            ctx.keys.set_expire(loc, None);
            ctx.keys.modified(key);
            ctx.keys.propagate([&b"PERSIST"[..], key].into_iter());
        }
        (_, Ttl::At(at)) if at <= ctx.keys.now_ms => {
            // A deadline in the past deletes the key now, as Redis does.
            ctx.keys.remove(loc);
            ctx.keys.modified(key);
            ctx.keys.propagate([&b"DEL"[..], key].into_iter());
        }
        (_, Ttl::At(at)) => {
            ctx.keys.set_expire(loc, Some(at));
            ctx.keys.modified(key);
            let mut b = itoa::Buffer::new();
            ctx.keys.propagate([&b"PEXPIREAT"[..], key, b.format(at).as_bytes()].into_iter());
        }
        _ => {}
    }
}

fn mget(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ctx.reply.array(args.len() - 1);
    for key in args.iter().skip(1) {
        match ctx.keys.get_str(key) {
            Ok(Some(s)) => reply_str(&mut ctx.reply, s),
            // MGET answers nil for keys of another type instead of failing.
            _ => ctx.reply.null_bulk(),
        }
    }
}

fn mset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len().is_multiple_of(2) {
        return ctx.reply.error("ERR wrong number of arguments for 'mset' command");
    }
    for i in (1..args.len()).step_by(2) {
        store(ctx, args.get(i), args.get(i + 1), Ttl::Clear);
    }
    ctx.reply.ok();
}

fn msetnx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len().is_multiple_of(2) {
        return ctx.reply.error("ERR wrong number of arguments for 'msetnx' command");
    }
    for i in (1..args.len()).step_by(2) {
        if ctx.keys.lookup_write(args.get(i)).is_some() {
            return ctx.reply.int(0);
        }
    }
    for i in (1..args.len()).step_by(2) {
        store(ctx, args.get(i), args.get(i + 1), Ttl::Clear);
    }
    ctx.reply.int(1);
}

/// The integer held by a string value, if it is one (Redis's `getLongLongFromObject`).
fn as_integer(s: &Str) -> Option<i64> {
    match s {
        Str::Int(v) => Some(*v),
        Str::Bytes(b) => crate::resp::parse_i64_strict(b),
    }
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], delta: i64) {
    let found = ctx.keys.lookup_write(key);
    let current = match found {
        Some(loc) => match &ctx.keys.entry(loc).value {
            Value::Str(s) => match as_integer(s) {
                Some(v) => v,
                None => return ctx.reply.error(ERR_NOT_INTEGER),
            },
            _ => return ctx.reply.error(WRONGTYPE),
        },
        None => 0,
    };
    let Some(new) = current.checked_add(delta) else {
        return ctx.reply.error("ERR increment or decrement would overflow");
    };
    match found {
        Some(loc) => {
            ctx.keys.table(loc.shard).replace_value(loc.pos, Value::Str(Str::Int(new)));
        }
        None => {
            ctx.keys.insert_new(key, Value::Str(Str::Int(new)));
        }
    }
    ctx.keys.modified(key);
    ctx.reply.int(new);
}

fn incr(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    incr_by(ctx, args.get(1), 1);
}

fn decr(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    incr_by(ctx, args.get(1), -1);
}

fn incrby(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match int_arg(args.get(2)) {
        Some(d) => incr_by(ctx, args.get(1), d),
        None => ctx.reply.error(ERR_NOT_INTEGER),
    }
}

fn decrby(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match int_arg(args.get(2)) {
        Some(i64::MIN) => ctx.reply.error("ERR decrement would overflow"),
        Some(d) => incr_by(ctx, args.get(1), -d),
        None => ctx.reply.error(ERR_NOT_INTEGER),
    }
}

fn incrbyfloat(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let found = ctx.keys.lookup_write(key);
    let current = match found {
        Some(loc) => match &ctx.keys.entry(loc).value {
            Value::Str(s) => Some(s.to_vec()),
            _ => return ctx.reply.error(WRONGTYPE),
        },
        None => None,
    };
    let new = match long_double_incr(current.as_deref(), args.get(2)) {
        Ok(v) => v,
        Err(FloatIncrError::BaseNotFloat | FloatIncrError::IncrNotFloat) => {
            return ctx.reply.error(super::ERR_NOT_FLOAT)
        }
        Err(FloatIncrError::NanOrInfinity) => return ctx.reply.error("ERR increment would produce NaN or Infinity"),
    };
    match found {
        Some(loc) => {
            ctx.keys.table(loc.shard).replace_value(loc.pos, Value::str(&new));
        }
        None => {
            ctx.keys.insert_new(key, Value::str(&new));
        }
    }
    ctx.keys.modified(key);
    ctx.reply.bulk(&new);
    // Logged as the resulting value, so float formatting can never drift on replay.
    ctx.keys.propagate([&b"SET"[..], key, &new, b"KEEPTTL"].into_iter());
}

/// Redis's `checkStringLength`: a string may not grow past `proto-max-bulk-len`.
fn check_length(ctx: &mut Ctx<'_>, size: usize, append: usize) -> bool {
    let max = ctx.server.config.live.proto_max_bulk_len.load(std::sync::atomic::Ordering::Relaxed);
    match size.checked_add(append) {
        Some(total) if total <= max => true,
        _ => {
            ctx.reply.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
            false
        }
    }
}

fn append(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, suffix) = (args.get(1), args.get(2));
    match ctx.keys.lookup_write(key) {
        None => {
            ctx.keys.insert_new(key, Value::str(suffix));
            ctx.keys.modified(key);
            ctx.reply.int(suffix.len() as i64);
        }
        Some(loc) => {
            let mut bytes = match &ctx.keys.entry(loc).value {
                Value::Str(s) => s.to_vec(),
                _ => return ctx.reply.error(WRONGTYPE),
            };
            if !check_length(ctx, bytes.len(), suffix.len()) {
                return;
            }
            bytes.extend_from_slice(suffix);
            let len = bytes.len();
            ctx.keys.table(loc.shard).replace_value(loc.pos, Value::Str(Str::from_vec(bytes)));
            ctx.keys.modified(key);
            ctx.reply.int(len as i64);
        }
    }
}

fn strlen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match ctx.keys.get_str(args.get(1)) {
        Ok(Some(s)) => {
            let n = s.len();
            ctx.reply.int(n as i64)
        }
        Ok(None) => ctx.reply.int(0),
        Err(_) => ctx.reply.error(WRONGTYPE),
    }
}

fn getrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (Some(mut start), Some(mut end)) = (int_arg(args.get(2)), int_arg(args.get(3))) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    let bytes = match ctx.keys.get_str(args.get(1)) {
        Ok(Some(s)) => s.to_vec(),
        Ok(None) => return ctx.reply.bulk(b""),
        Err(_) => return ctx.reply.error(WRONGTYPE),
    };
    let len = bytes.len() as i64;
    if start < 0 && end < 0 && start > end {
        return ctx.reply.bulk(b"");
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        ctx.reply.bulk(b"");
    } else {
        ctx.reply.bulk(&bytes[start as usize..=end as usize]);
    }
}

fn setrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(offset) = int_arg(args.get(2)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    if offset < 0 {
        return ctx.reply.error("ERR offset is out of range");
    }
    let offset = offset as usize;
    let (key, value) = (args.get(1), args.get(3));
    let (loc, mut bytes) = match ctx.keys.lookup_write(key) {
        None => {
            if value.is_empty() {
                return ctx.reply.int(0);
            }
            if !check_length(ctx, offset, value.len()) {
                return;
            }
            (None, Vec::new())
        }
        Some(loc) => {
            let bytes = match &ctx.keys.entry(loc).value {
                Value::Str(s) => s.to_vec(),
                _ => return ctx.reply.error(WRONGTYPE),
            };
            if value.is_empty() {
                return ctx.reply.int(bytes.len() as i64);
            }
            if !check_length(ctx, offset, value.len()) {
                return;
            }
            (Some(loc), bytes)
        }
    };
    if bytes.len() < offset + value.len() {
        bytes.resize(offset + value.len(), 0);
    }
    bytes[offset..offset + value.len()].copy_from_slice(value);
    let len = bytes.len();
    let new = Value::Str(Str::from_vec(bytes));
    match loc {
        Some(loc) => {
            ctx.keys.table(loc.shard).replace_value(loc.pos, new);
        }
        None => {
            ctx.keys.insert_new(key, new);
        }
    }
    ctx.keys.modified(key);
    ctx.reply.int(len as i64);
}
