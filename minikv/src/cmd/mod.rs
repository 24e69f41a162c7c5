//! Commands: the table, and the path every command takes from parsed arguments to reply.
//!
//! Each family lives in its own file (`strings.rs`, `lists.rs`, ...) and exports a
//! `COMMANDS` array of [`Command`]s. A command handler has mini-redis's two steps:
//! parse the arguments into values (and reply with an error if they are bad, before
//! touching anything), then apply.
//!
//! [`execute`] runs one command:
//!
//! ```text
//!  args ─> lookup ─> arity ─> auth ─> pub/sub context ─> MULTI? queue : ─> OOM check
//!       ─> lock the shards named by the key spec (ascending order)
//!       ─> handler(ctx, args): reads/writes through ctx.keys, replies through ctx.reply
//!       ─> a read by a tracking client: remember its keys          (locks still held)
//!       ─> effects: blocked clients served, invalidations queued, AOF record appended
//!       ─> unlock, record latency
//! ```
//!
//! Appending to the AOF while the shard locks are held is what makes the file's order
//! match the order in which changes became visible.

pub mod connection;
pub mod hashes;
pub mod keys;
pub mod lists;
pub mod pubsub;
pub mod server;
pub mod sets;
pub mod strings;
pub mod transactions;
pub mod zsets;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::aof::Aof;
use crate::blocking::Waiter;
use crate::eviction::AccessClock;
use crate::keyspace::{hash_bytes, shard_of, CompactBytes, Effects, Guards, Keys};
use crate::resp::{Args, Reply};
use crate::server::Server;
use crate::session::Session;

/// A command's flags (Redis's `CMD_*`), as a bit set.
pub mod flag {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    /// May use more memory: refused with OOM when over maxmemory.
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const FAST: u32 = 1 << 9;
    /// Allowed before AUTH (AUTH, HELLO, QUIT, RESET).
    pub const NO_AUTH: u32 = 1 << 10;
    /// Runs at once inside MULTI instead of being queued (EXEC, DISCARD, WATCH, ...).
    /// A dispatcher bit, not a Redis flag: Redis's `no_multi` means the opposite
    /// ("refused inside MULTI").
    pub const NOT_QUEUED: u32 = 1 << 11;
    /// Allowed while a RESP2 client has subscriptions.
    pub const PUBSUB_CONTEXT: u32 = 1 << 12;
    pub const MOVABLE_KEYS: u32 = 1 << 13;
    /// Refused inside MULTI (Redis's `no_multi`: SAVE, SHUTDOWN).
    pub const NO_MULTI: u32 = 1 << 14;
}

pub type Handler = fn(&mut Ctx<'_>, &Args<'_>);

/// Which arguments are keys, so the dispatcher can lock their shards up front.
#[derive(Clone, Copy)]
pub enum KeySpec {
    /// No keys (PING, CONFIG).
    None,
    /// Arguments `first`, `first + step`, ... up to `last` (negative: from the end,
    /// -1 is the last argument). Redis's (first, last, step) triple.
    Range { first: usize, last: isize, step: usize },
    /// Keys found by a function of the arguments (the `numkeys` forms). It must not
    /// fail on bad input: it returns the keys it can find, the handler validates.
    Find(fn(&Args<'_>, &mut Vec<usize>)),
    /// Walks the whole keyspace one shard at a time (KEYS, SCAN, DBSIZE, RANDOMKEY).
    Walk,
    /// Needs every shard at once (FLUSHDB, FLUSHALL, SWAPDB).
    All,
}

impl KeySpec {
    /// Positions of the key arguments.
    pub fn positions(&self, args: &Args<'_>, out: &mut Vec<usize>) {
        match *self {
            KeySpec::Range { first, last, step } => {
                let n = args.len() as isize;
                let last = if last < 0 { n + last } else { last };
                let mut i = first as isize;
                while i <= last && i < n {
                    out.push(i as usize);
                    i += step as isize;
                }
            }
            KeySpec::Find(f) => f(args, out),
            KeySpec::None | KeySpec::Walk | KeySpec::All => {}
        }
    }
}

pub const fn range(first: usize, last: isize, step: usize) -> KeySpec {
    KeySpec::Range { first, last, step }
}

/// One command or subcommand.
pub struct Command {
    /// Lower case; subcommands are `parent|sub`, as Redis 7 names them.
    pub name: &'static str,
    /// Redis arity: exact count when positive, minimum when negative, name included.
    pub arity: i32,
    pub flags: u32,
    pub keys: KeySpec,
    pub handler: Handler,
    /// COMMAND DOCS group (`string`, `generic`, `list`, ...).
    pub group: &'static str,
    pub summary: &'static str,
    pub since: &'static str,
    pub subcommands: &'static [Command],
}

/// Declares a command with the fields most commands use.
///
/// Positional on purpose: each command table line reads like a row of Redis's own
/// command table (name, arity, flags, keys, handler, group, summary, since).
#[allow(clippy::too_many_arguments)]
pub const fn cmd(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: KeySpec,
    handler: Handler,
    group: &'static str,
    summary: &'static str,
    since: &'static str,
) -> Command {
    Command { name, arity, flags, keys, handler, group, summary, since, subcommands: &[] }
}

/// A parent command whose first argument names a subcommand (CLIENT, CONFIG, ...).
pub const fn container(
    name: &'static str,
    group: &'static str,
    summary: &'static str,
    since: &'static str,
    subcommands: &'static [Command],
) -> Command {
    Command {
        name,
        arity: -2,
        flags: 0,
        keys: KeySpec::None,
        handler: no_subcommand,
        group,
        summary,
        since,
        subcommands,
    }
}

fn no_subcommand(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.error("ERR this command needs a subcommand");
}

/// All commands, with an index each (for per-command statistics).
pub struct Table {
    pub commands: Vec<&'static Command>,
    /// foldhash rather than SipHash: looked up on every command, and names are not
    /// attacker-chosen keys that need DoS resistance (the table is fixed).
    by_name: HashMap<&'static str, usize, foldhash::fast::FixedState>,
}

impl Table {
    fn build() -> Table {
        let families: [&'static [Command]; 10] = [
            strings::COMMANDS,
            keys::COMMANDS,
            hashes::COMMANDS,
            lists::COMMANDS,
            sets::COMMANDS,
            zsets::COMMANDS,
            transactions::COMMANDS,
            pubsub::COMMANDS,
            connection::COMMANDS,
            server::COMMANDS,
        ];
        let mut commands = Vec::new();
        let mut by_name = HashMap::with_hasher(foldhash::fast::FixedState::default());
        for family in families {
            for c in family {
                assert!(by_name.insert(c.name, commands.len()).is_none(), "duplicate command {}", c.name);
                commands.push(c);
                for sub in c.subcommands {
                    assert!(
                        sub.name.starts_with(c.name) && sub.name.as_bytes()[c.name.len()] == b'|',
                        "subcommand {} of {}",
                        sub.name,
                        c.name
                    );
                    assert!(by_name.insert(sub.name, commands.len()).is_none(), "duplicate command {}", sub.name);
                    commands.push(sub);
                }
            }
        }
        Table { commands, by_name }
    }

    pub fn names(&self) -> Vec<String> {
        self.commands.iter().map(|c| c.name.to_string()).collect()
    }

    /// Finds a command by name, case-insensitively.
    #[inline]
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        let mut buf = [0u8; 48];
        if name.len() > buf.len() {
            return None;
        }
        for (d, s) in buf.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        let lower = std::str::from_utf8(&buf[..name.len()]).ok()?;
        self.by_name.get(lower).copied()
    }

    /// Finds `parent|sub`.
    pub fn find_sub(&self, parent: &Command, sub: &[u8]) -> Option<usize> {
        let mut full = Vec::with_capacity(parent.name.len() + 1 + sub.len());
        full.extend_from_slice(parent.name.as_bytes());
        full.push(b'|');
        full.extend_from_slice(sub);
        self.find(&full)
    }

    /// Top-level commands (not subcommands), for COMMAND and COMMAND COUNT.
    pub fn top_level(&self) -> impl Iterator<Item = &'static Command> + '_ {
        self.commands.iter().copied().filter(|c| !c.name.contains('|'))
    }
}

pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Table::build)
}

/// What the connection must do after a command, beyond sending its reply.
pub enum Action {
    /// Close the connection once the replies so far are written (QUIT, protocol errors).
    Close,
    /// Wait for data on keys (BLPOP...), up to the timeout. `retry` is the command
    /// itself, run again if the waiter is poked instead of served (see `blocking`).
    Block { waiter: Arc<Waiter>, timeout: Option<Duration>, retry: crate::resp::OwnedArgs },
    /// DEBUG SLEEP: stall this connection (the server keeps serving others).
    Sleep(Duration),
    /// SHUTDOWN was accepted.
    Shutdown,
}

/// State shared by the commands of one read batch: the time, the AOF, and the
/// highest AOF position written (the connection makes it durable before replying).
pub struct Batch<'s> {
    pub now_ms: u64,
    pub clock: AccessClock,
    pub aof: Option<&'s Aof>,
    /// One past the last AOF record this batch appended; 0 when none.
    pub aof_lsn: u64,
    pub last_tick: Instant,
    /// Reused buffer for key positions.
    pub key_positions: Vec<usize>,
    /// Replaying the AOF: no expiry, no logging, no eviction.
    pub loading: bool,
    /// Keys changed while some client is in BCAST mode, with who changed them: sent
    /// once for the whole batch ([`crate::tracking::broadcast`]), as Redis sends them
    /// once per event-loop iteration.
    pub bcast: Vec<(CompactBytes, u64)>,
}

impl<'s> Batch<'s> {
    pub fn new(server: &'s Server) -> Batch<'s> {
        let now_ms = crate::server::unix_ms();
        let live = &server.config.live;
        let clock = AccessClock::at(
            now_ms,
            live.policy().is_lfu(),
            live.lfu_log_factor.load(Ordering::Relaxed),
            live.lfu_decay_time.load(Ordering::Relaxed),
        );
        Batch {
            now_ms,
            clock,
            aof: server.aof().map(|a| &**a),
            aof_lsn: 0,
            last_tick: Instant::now(),
            key_positions: Vec::new(),
            loading: false,
            bcast: Vec::new(),
        }
    }

    /// Sends the BCAST invalidations the batch's changes call for. The connection
    /// calls it once the batch's commands have run, before it writes their replies.
    pub fn broadcast(&mut self, server: &Server) {
        if !self.bcast.is_empty() {
            crate::tracking::broadcast(server, &mut self.bcast);
        }
    }

    /// A batch for AOF replay.
    pub fn loading(server: &'s Server) -> Batch<'s> {
        Batch { aof: None, loading: true, ..Batch::new(server) }
    }
}

/// Everything a handler can reach.
pub struct Ctx<'a> {
    pub server: &'a Server,
    pub session: &'a mut Session,
    pub keys: Keys<'a>,
    pub reply: Reply<'a>,
    pub action: Option<Action>,
    /// Running inside EXEC: blocking commands must not block.
    pub in_exec: bool,
}

/// Runs one command and appends its reply to `out`.
pub fn execute(
    server: &Server,
    session: &mut Session,
    args: &Args<'_>,
    out: &mut Vec<u8>,
    batch: &mut Batch<'_>,
) -> Option<Action> {
    let action = dispatch(server, session, args, out, batch);
    if session.tracking.caching && !keeps_caching_flag(session, args) {
        session.tracking.caching = false;
    }
    action
}

/// Whether `CLIENT CACHING yes|no` still applies after this command: it lasts through
/// the CLIENT subcommands (so `CLIENT CACHING yes` can precede `CLIENT TRACKINGINFO`)
/// and through a whole transaction, and ends after anything else, as Redis's
/// `resetClient` has it. An unknown CLIENT subcommand ends it too.
fn keeps_caching_flag(session: &Session, args: &Args<'_>) -> bool {
    if session.multi.is_some() {
        return true;
    }
    if args.len() < 2 || !is(args.get(0), "client") {
        return false;
    }
    let t = table();
    t.find(args.get(0)).is_some_and(|i| t.find_sub(t.commands[i], args.get(1)).is_some())
}

fn dispatch(
    server: &Server,
    session: &mut Session,
    args: &Args<'_>,
    out: &mut Vec<u8>,
    batch: &mut Batch<'_>,
) -> Option<Action> {
    let table = table();
    let mut idx = match table.find(args.get(0)) {
        Some(i) => i,
        None => {
            reject_unknown(session, args, out);
            return None;
        }
    };
    let mut command = table.commands[idx];
    if !command.subcommands.is_empty() && args.len() >= 2 {
        match table.find_sub(command, args.get(1)) {
            Some(sub) => {
                idx = sub;
                command = table.commands[sub];
            }
            None => {
                let parent = String::from_utf8_lossy(args.get(0)).to_uppercase();
                let msg = format!("ERR unknown subcommand '{}'. Try {parent} HELP.", truncate(args.get(1), 128));
                reject(session, out, &msg);
                return None;
            }
        }
    }
    if !arity_ok(command.arity, args.len()) {
        server.commands.record_rejected(idx);
        let msg = format!("ERR wrong number of arguments for '{}' command", command.name);
        reject_command(server, session, command, out, &msg);
        return None;
    }
    if !session.authenticated
        && command.flags & flag::NO_AUTH == 0
        && server.config.live.auth_required.load(Ordering::Relaxed)
    {
        server.commands.record_rejected(idx);
        reject_command(server, session, command, out, "NOAUTH Authentication required.");
        return None;
    }
    if session.in_pubsub_context() && command.flags & flag::PUBSUB_CONTEXT == 0 {
        server.commands.record_rejected(idx);
        let msg = format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            command.name
        );
        Reply::new(out, session.proto).error(&msg);
        return None;
    }
    if session.multi.is_some() && command.flags & flag::NO_MULTI != 0 {
        server.commands.record_rejected(idx);
        reject(session, out, "ERR Command not allowed inside a transaction");
        return None;
    }
    if session.multi.is_some() && command.flags & flag::NOT_QUEUED == 0 {
        // Queuing costs memory too, so under OOM Redis refuses to queue anything.
        if !crate::eviction::make_room(server, batch) {
            server.commands.record_rejected(idx);
            reject(session, out, crate::eviction::OOM_ERROR);
            return None;
        }
        session.info.touch(idx, batch.now_ms);
        transactions::queue(session, args, command.flags, out);
        return None;
    }
    if command.flags & flag::DENYOOM != 0 && !crate::eviction::make_room(server, batch) {
        server.commands.record_rejected(idx);
        Reply::new(out, session.proto).error(crate::eviction::OOM_ERROR);
        return None;
    }
    if command.flags & flag::WRITE != 0 {
        if let Some(why) = batch.aof.and_then(|a| a.failure()) {
            // Like Redis's MISCONF: a write that cannot be logged is not accepted.
            server.commands.record_rejected(idx);
            Reply::new(out, session.proto).error(&why);
            return None;
        }
    }
    if command.name == "exec" {
        let may_grow = session.multi.as_ref().is_some_and(|m| m.flags & flag::DENYOOM != 0);
        if may_grow && !crate::eviction::make_room(server, batch) {
            server.commands.record_rejected(idx);
            reject_command(server, session, command, out, crate::eviction::OOM_ERROR);
            return None;
        }
        session.info.touch(idx, batch.now_ms);
        return transactions::exec(server, session, out, batch);
    }
    session.info.touch(idx, batch.now_ms);
    let guards = lock_for(server, command, args, batch);
    let mut effects = Effects::new(batch.aof.is_some());
    effects.client = session.id;
    effects.tracking = crate::tracking::Pending::reusing(session.tracking.spare.take());
    let mut keys = Keys::new(&server.keyspace, guards, session.db, batch.now_ms, batch.clock, effects);
    keys.loading = batch.loading;
    let mut ctx = Ctx {
        server,
        session,
        keys,
        reply: Reply::new(out, crate::resp::Protocol::Resp2),
        action: None,
        in_exec: false,
    };
    ctx.reply.proto = ctx.session.proto;
    run(&mut ctx, idx, command, args, batch);
    finish(&mut ctx, batch);
    if ctx.keys.effects.tracking_registered || ctx.keys.effects.tracking.has_late() {
        return after_tracked_command(ctx);
    }
    // `finish` emptied it: the next command reuses the box.
    ctx.session.tracking.spare = ctx.keys.effects.tracking.into_spare();
    ctx.action
}

/// What a command that touched the tracking table leaves to do once its locks are
/// released: keep the table within `tracking-table-max-keys`, and (test switch only)
/// remember reads late. Out of line, so that the common path returns as before.
#[cold]
#[inline(never)]
fn after_tracked_command(mut ctx: Ctx<'_>) -> Option<Action> {
    let server = ctx.server;
    let action = ctx.action.take();
    let registered = ctx.keys.effects.tracking_registered;
    let late = ctx.keys.effects.tracking.take().map(|c| c.late).filter(|l| !l.is_empty());
    let reader = late.as_ref().map(|_| ctx.session.info.clone());
    drop(ctx);
    if let (Some(keys), Some(reader)) = (late, reader) {
        crate::tracking::remember_late(server, &reader, keys);
    }
    if registered {
        crate::tracking::enforce_limit(server);
    }
    action
}

/// Runs a command whose shards are locked, and records its latency.
pub fn run(ctx: &mut Ctx<'_>, idx: usize, command: &'static Command, args: &Args<'_>, batch: &mut Batch<'_>) {
    let reply_start = ctx.reply.buf.len();
    let dirty_before = ctx.keys.effects.dirty;
    ctx.keys.effects.command_propagated = false;
    (command.handler)(ctx, args);
    if ctx.keys.effects.dirty > dirty_before && !ctx.keys.effects.command_propagated && command.flags & flag::WRITE != 0
    {
        ctx.keys.propagate_args(args.iter());
    }
    // A session-local field first: nothing more for a client that does not track.
    if command.flags & flag::READONLY != 0
        && ctx.session.tracking.mode != 0
        && crate::tracking::wants_keys(ctx.session.tracking.mode, ctx.session.tracking.caching)
    {
        remember_keys(ctx, command, args, batch);
    }
    let now = Instant::now();
    let nanos = now.duration_since(batch.last_tick).as_nanos() as u64;
    batch.last_tick = now;
    let failed = ctx.reply.buf.get(reply_start) == Some(&b'-');
    ctx.server.commands.record(idx, nanos, failed);
}

/// A tracking client ran a read-only command: remember that it read the command's
/// keys, under the locks the command still holds (Redis's `trackingRememberKeys`,
/// which also counts reads that failed, WRONGTYPE included, and keys that do not exist).
fn remember_keys(ctx: &mut Ctx<'_>, command: &Command, args: &Args<'_>, batch: &mut Batch<'_>) {
    batch.key_positions.clear();
    command.keys.positions(args, &mut batch.key_positions);
    if batch.key_positions.is_empty() {
        return;
    }
    let tracking = &ctx.server.keyspace.tracking;
    for &i in &batch.key_positions {
        let key = args.get(i);
        if tracking.register_late() {
            ctx.keys.effects.tracking.changes().late.push(CompactBytes::new(key));
            continue;
        }
        let shard = shard_of(hash_bytes(key));
        tracking.remember(shard, &mut ctx.keys.shard(shard).tracking, key, &ctx.session.info);
    }
    ctx.keys.effects.tracking_registered = true;
}

/// Applies a command's (or a transaction's) effects while its locks are still held:
/// serves blocked clients, queues invalidations for tracking clients, then appends the
/// AOF record.
pub fn finish(ctx: &mut Ctx<'_>, batch: &mut Batch<'_>) {
    if !ctx.keys.effects.ready.is_empty() {
        crate::blocking::serve_ready(&mut ctx.keys);
    }
    // After serving blocked clients, whose pops are changes too. Queued before the
    // reply goes out, so a writer that got its reply knows the readers are told.
    let client = ctx.keys.effects.client;
    if let Some(changes) = ctx.keys.effects.tracking.get_mut() {
        crate::tracking::deliver(ctx.server, &mut changes.invalidated, client);
        batch.bcast.append(&mut changes.broadcast);
    }
    if ctx.keys.effects.dirty > 0 {
        ctx.server.keyspace.dirty.fetch_add(ctx.keys.effects.dirty, Ordering::Relaxed);
    }
    if !ctx.keys.effects.aof.is_empty() {
        if let Some(aof) = batch.aof {
            let record = ctx.keys.effects.take_aof();
            match aof.append(&record) {
                Ok(lsn) => batch.aof_lsn = batch.aof_lsn.max(lsn + 1),
                Err(e) => {
                    // The change is applied in memory but not logged. Redis answers
                    // MISCONF-like errors from then on; we log loudly and mark the AOF
                    // broken so that writes are refused until it is fixed.
                    tracing::error!(error = %e, "AOF append failed");
                    aof.mark_failed(&e.to_string());
                }
            }
        }
    }
}

/// Locks the shards a command needs.
pub fn lock_for<'a>(server: &'a Server, command: &Command, args: &Args<'_>, batch: &mut Batch<'_>) -> Guards<'a> {
    match command.keys {
        KeySpec::None | KeySpec::Walk => Guards::none(),
        KeySpec::All => server.keyspace.lock_all(),
        KeySpec::Range { first, last: l, step: _ } if l == first as isize && args.len() > first => {
            // The common single-key case: no allocation, one lock.
            server.keyspace.lock_one(shard_of(hash_bytes(args.get(first))))
        }
        spec => {
            batch.key_positions.clear();
            spec.positions(args, &mut batch.key_positions);
            server.keyspace.lock_keys(batch.key_positions.iter().map(|&i| args.get(i)))
        }
    }
}

pub fn arity_ok(arity: i32, argc: usize) -> bool {
    if arity >= 0 {
        argc == arity as usize
    } else {
        argc >= (-arity) as usize
    }
}

fn truncate(b: &[u8], n: usize) -> String {
    // Redis prints these with %.128s, which also stops at a NUL byte.
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(n);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Redis's `rejectCommand`: like [`reject`], except that a refused EXEC also discards
/// the transaction and says so (`EXECABORT Transaction discarded because of: ...`).
fn reject_command(server: &Server, session: &mut Session, command: &Command, out: &mut Vec<u8>, msg: &str) {
    if command.name != "exec" {
        return reject(session, out, msg);
    }
    if session.multi.take().is_some() {
        session.info.in_multi.store(false, Ordering::Relaxed);
    }
    transactions::unwatch_all(server, session);
    let reason = msg.strip_prefix("ERR ").unwrap_or(msg);
    Reply::new(out, session.proto).error(&format!("EXECABORT Transaction discarded because of: {reason}"));
}

/// A refusal that also aborts a transaction being queued (EXECABORT at EXEC).
fn reject(session: &mut Session, out: &mut Vec<u8>, msg: &str) {
    if let Some(multi) = &mut session.multi {
        multi.errored = true;
    }
    Reply::new(out, session.proto).error(msg);
}

fn reject_unknown(session: &mut Session, args: &Args<'_>, out: &mut Vec<u8>) {
    let mut rest = String::new();
    for a in args.iter().skip(1) {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        rest.push('\'');
        rest.push_str(&truncate(a, room));
        rest.push_str("' ");
    }
    let msg = format!("ERR unknown command '{}', with args beginning with: {rest}", truncate(args.get(0), 128));
    reject(session, out, &msg);
}

// ----- argument helpers shared by the command families -----

pub const ERR_SYNTAX: &str = "ERR syntax error";
pub const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const ERR_NOT_FLOAT: &str = "ERR value is not a valid float";

/// An integer argument in Redis's strict syntax.
pub fn int_arg(arg: &[u8]) -> Option<i64> {
    crate::resp::parse_i64_strict(arg)
}

/// A SCAN cursor as Redis reads it (`strtoul`, base 10): no leading space, an
/// optional sign (`-1` wraps around, as in C), digits up to 2^64 - 1. The text ends
/// at a NUL byte, as a C string does, and an empty cursor is 0.
pub fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let arg = match arg.iter().position(|&b| b == 0) {
        Some(nul) => &arg[..nul],
        None => arg,
    };
    let Some(&first) = arg.first() else { return Some(0) };
    if matches!(first, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        return None;
    }
    let (negative, digits) = match first {
        b'-' => (true, &arg[1..]),
        b'+' => (false, &arg[1..]),
        _ => (false, arg),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if negative { value.wrapping_neg() } else { value })
}

/// Case-insensitive comparison of an argument with an option name.
#[inline]
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_like_strtoul() {
        for (text, cursor) in [
            (&b"0"[..], 0),
            (b"", 0),
            (b"+5", 5),
            (b"007", 7),
            (b"-1", u64::MAX),
            (b"18446744073709551615", u64::MAX),
            // A C string ends at NUL, so Redis reads "5\0junk" as 5.
            (b"5\0junk", 5),
        ] {
            assert_eq!(parse_cursor(text), Some(cursor), "{:?}", String::from_utf8_lossy(text));
        }
        for bad in [&b"18446744073709551616"[..], b" 5", b"5 ", b"+", b"-", b"abc", b"1.5"] {
            assert_eq!(parse_cursor(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn key_specs_find_keys() {
        let spans = [0..3usize, 3..4, 4..5, 5..6, 6..7];
        let args = Args::new(b"DELabcd", &spans);
        let mut out = Vec::new();
        range(1, -1, 1).positions(&args, &mut out);
        assert_eq!(out, vec![1, 2, 3, 4]);
        out.clear();
        range(1, -1, 2).positions(&args, &mut out);
        assert_eq!(out, vec![1, 3]);
        out.clear();
        range(1, -2, 1).positions(&args, &mut out);
        assert_eq!(out, vec![1, 2, 3]);
    }
}
