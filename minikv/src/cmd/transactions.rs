//! MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Between MULTI and EXEC commands are checked (name, arity, OOM) and queued; an error
//! at that point makes EXEC answer EXECABORT, as in Redis. EXEC locks the union of all
//! the shards the queued commands name (every shard if one of them walks the whole
//! keyspace), runs them back to back under those locks, and writes everything they
//! changed to the AOF as a single record, so a crash can never keep half of a
//! transaction. See [`crate::transaction`] for WATCH.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{cmd, flag, table, Batch, Command, Ctx, KeySpec};
use crate::keyspace::{hash_bytes, shard_of, CompactBytes, Effects, Keys};
use crate::resp::{Args, OwnedArgs, Reply};
use crate::server::Server;
use crate::session::Session;
use crate::transaction::{MultiState, WatchState, WatchedKey};

/// MULTI, DISCARD, WATCH, UNWATCH: run at once inside MULTI.
const NQ: u32 = flag::NOT_QUEUED | flag::NOSCRIPT | flag::FAST | flag::LOADING | flag::STALE;

// Flags, arity and summaries are redis-server 7.0's. `NOT_QUEUED`: these run at once
// inside MULTI instead of being queued.
#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("multi", 1, NQ, KeySpec::None, multi, "transactions", "Mark the start of a transaction block", "1.2.0"),
    // EXEC is run by the dispatcher through `exec` below; its handler only runs when
    // there is no transaction.
    cmd("exec", 1, flag::NOT_QUEUED | flag::NOSCRIPT | flag::LOADING | flag::STALE, KeySpec::None, exec_without_multi, "transactions", "Execute all commands issued after MULTI", "1.2.0"),
    cmd("discard", 1, NQ, KeySpec::None, discard, "transactions", "Discard all commands issued after MULTI", "2.0.0"),
    cmd("watch", -2, NQ, super::range(1, -1, 1), watch, "transactions", "Watch the given keys to determine execution of the MULTI/EXEC block", "2.2.0"),
    cmd("unwatch", 1, NQ, KeySpec::None, unwatch, "transactions", "Forget about all watched keys", "2.2.0"),
];

fn multi(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    if ctx.session.multi.is_some() {
        return ctx.reply.error("ERR MULTI calls can not be nested");
    }
    ctx.session.multi = Some(MultiState::default());
    ctx.session.info.in_multi.store(true, Ordering::Relaxed);
    ctx.reply.ok();
}

/// Queues a command inside MULTI (the dispatcher already checked name and arity).
pub fn queue(session: &mut Session, args: &Args<'_>, flags: u32, out: &mut Vec<u8>) {
    if let Some(multi) = &mut session.multi {
        multi.queued.push(OwnedArgs::from_args(args));
        multi.flags |= flags;
    }
    Reply::new(out, session.proto).simple("QUEUED");
}

fn exec_without_multi(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.error("ERR EXEC without MULTI");
}

fn discard(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    if ctx.session.multi.take().is_none() {
        return ctx.reply.error("ERR DISCARD without MULTI");
    }
    ctx.session.info.in_multi.store(false, Ordering::Relaxed);
    unwatch_all(ctx.server, ctx.session);
    ctx.reply.ok();
}

fn watch(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if ctx.session.multi.is_some() {
        return ctx.reply.error("ERR WATCH inside MULTI is not allowed");
    }
    let db = ctx.session.db;
    let state = ctx.session.watch.get_or_insert_with(WatchState::default);
    let now = ctx.keys.now_ms;
    for key in args.iter().skip(1) {
        if state.keys.iter().any(|w| w.db == db && *w.key == *key) {
            continue;
        }
        let hash = hash_bytes(key);
        let shard = ctx.keys.shard(shard_of(hash));
        let table = &shard.dbs[db];
        let expired_at_watch = table.find(hash, key).and_then(|pos| table.expire_at(pos)).is_some_and(|at| at <= now);
        let ckey = CompactBytes::new(key);
        shard.watched.entry((db, ckey.clone())).or_default().push(state.flag.clone());
        state.keys.push(WatchedKey { db, key: ckey, expired_at_watch });
    }
    ctx.reply.ok();
}

fn unwatch(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    unwatch_all(ctx.server, ctx.session);
    ctx.reply.ok();
}

/// Forgets every watched key (UNWATCH, EXEC, DISCARD, RESET, disconnect).
pub fn unwatch_all(server: &Server, session: &mut Session) {
    let Some(state) = session.watch.take() else {
        return;
    };
    for w in &state.keys {
        let mut shard = server.keyspace.lock_shard(shard_of(hash_bytes(&w.key)));
        let k = (w.db, w.key.clone());
        if let Some(flags) = shard.watched.get_mut(&k) {
            flags.retain(|f| !Arc::ptr_eq(f, &state.flag));
            if flags.is_empty() {
                shard.watched.remove(&k);
            }
        }
    }
}

/// Runs a queued transaction.
pub fn exec(server: &Server, session: &mut Session, out: &mut Vec<u8>, batch: &mut Batch) -> Option<super::Action> {
    let proto = session.proto;
    let Some(multi) = session.multi.take() else {
        Reply::new(out, proto).error("ERR EXEC without MULTI");
        return None;
    };
    session.info.in_multi.store(false, Ordering::Relaxed);
    if multi.errored {
        unwatch_all(server, session);
        Reply::new(out, proto).error("EXECABORT Transaction discarded because of previous errors.");
        return None;
    }
    let table = table();
    // Lock every shard the transaction names, once, in ascending order.
    let mut whole_keyspace = false;
    let mut shards: Vec<usize> = Vec::new();
    let mut positions = Vec::new();
    for q in &multi.queued {
        let args = q.as_args();
        let Some((_, command)) = resolve(table, &args) else {
            continue;
        };
        match command.keys {
            KeySpec::Walk | KeySpec::All => whole_keyspace = true,
            spec => {
                positions.clear();
                spec.positions(&args, &mut positions);
                shards.extend(positions.iter().map(|&i| shard_of(hash_bytes(args.get(i)))));
            }
        }
    }
    // Watched keys are checked under the same locks, so nothing can change them
    // between the check and the commands.
    if let Some(w) = &session.watch {
        shards.extend(w.keys.iter().map(|k| shard_of(hash_bytes(&k.key))));
    }
    shards.sort_unstable();
    shards.dedup();
    let guards = if whole_keyspace { server.keyspace.lock_all() } else { server.keyspace.lock_indices(&shards) };
    let mut effects = Effects::new(batch.aof.is_some());
    effects.client = session.id;
    let mut keys = Keys::new(&server.keyspace, guards, session.db, batch.now_ms, batch.clock, effects);
    keys.loading = batch.loading;

    if watch_broken(&mut keys, session) {
        drop(keys);
        unwatch_all(server, session);
        Reply::new(out, proto).null_array();
        return None;
    }

    let mut ctx = Ctx { server, session, keys, reply: Reply::new(out, proto), action: None, in_exec: true };
    ctx.reply.array(multi.queued.len());
    for q in &multi.queued {
        let args = q.as_args();
        let Some((idx, command)) = resolve(table, &args) else {
            ctx.reply.error("ERR unknown command");
            continue;
        };
        ctx.keys.db = ctx.session.db;
        ctx.reply.proto = ctx.session.proto;
        super::run(&mut ctx, idx, command, &args, batch);
        // Commands that would block (BLPOP on an empty list) answer like their
        // non-blocking form inside EXEC; any follow-up action is dropped.
        ctx.action = None;
    }
    super::finish(&mut ctx, batch);
    let registered = ctx.keys.effects.tracking_registered;
    drop(ctx);
    unwatch_all(server, session);
    if registered {
        crate::tracking::enforce_limit(server);
    }
    None
}

/// Finds a queued command (and its subcommand) in the table.
fn resolve(table: &'static super::Table, args: &Args<'_>) -> Option<(usize, &'static Command)> {
    let mut idx = table.find(args.get(0))?;
    let mut command = table.commands[idx];
    if !command.subcommands.is_empty() && args.len() >= 2 {
        idx = table.find_sub(command, args.get(1))?;
        command = table.commands[idx];
    }
    Some((idx, command))
}

/// Whether a watched key changed: its flag was marked, or it expired since WATCH.
fn watch_broken(keys: &mut Keys<'_>, session: &Session) -> bool {
    let Some(w) = &session.watch else {
        return false;
    };
    if w.flag.is_dirty() {
        return true;
    }
    let now = keys.now_ms;
    for k in &w.keys {
        if k.expired_at_watch {
            continue;
        }
        let hash = hash_bytes(&k.key);
        let table = &keys.shard(shard_of(hash)).dbs[k.db];
        if let Some(pos) = table.find(hash, &k.key) {
            if table.expire_at(pos).is_some_and(|at| at <= now) {
                return true;
            }
        }
    }
    false
}
