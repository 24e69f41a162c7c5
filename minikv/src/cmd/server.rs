//! Server and introspection commands: INFO, CONFIG, CLIENT, COMMAND, TIME, LASTSAVE,
//! BGREWRITEAOF, SHUTDOWN, DEBUG, MEMORY and ROLE.
//!
//! These commands read the server rather than the keyspace, so most of them have no
//! key spec and take no shard lock. Their replies follow Redis 7.0 field for field,
//! because tools parse them: redis-cli builds its hints from COMMAND DOCS,
//! redis-benchmark reads CONFIG GET save/appendonly, redis-py parses INFO and CLIENT
//! LIST, cluster-aware clients read key positions from COMMAND.
//!
//! COMMAND INFO and COMMAND DOCS are generated from the command table
//! ([`crate::cmd::table`]): flags, arity and key positions are the ones the dispatcher
//! actually uses, and the ACL categories are derived from the flags and the group by
//! Redis's own rules (plus the few categories Redis declares by hand, see
//! `redis_extras`). What the table does not hold is left out rather than invented:
//! command tips, argument lists, complexity strings and history. Key specs are
//! simplified (one spec per command, with generic access flags).
//!
//! Left out, with the error a client gets:
//! - SAVE and BGSAVE: minikv has no RDB snapshots; it persists with the AOF only.
//! - MONITOR, SLOWLOG, LATENCY, CLIENT PAUSE/UNPAUSE/REPLY/UNBLOCK, MEMORY
//!   STATS/DOCTOR: unknown command or subcommand.
//!
//! CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO (client-side caching) are here
//! as commands; the machinery is [`crate::tracking`].
//! - Replication: ROLE always answers "master" with no replicas.
//! - CONFIG REWRITE: minikv never rewrites a config file.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;

use super::{
    cmd, container, flag, int_arg, is, range, table, Action, Command, Ctx, KeySpec, ERR_NOT_INTEGER, ERR_SYNTAX,
};
use crate::clients::ClientInfo;
use crate::config::ConfigError;
use crate::keyspace::{CompactBytes, Value};
use crate::resp::{Args, Reply};
use crate::tracking::flag as tracking_flag;

/// Flags of the administrative commands (CONFIG SET, CLIENT KILL, DEBUG ...).
const ADM: u32 = flag::ADMIN | flag::NOSCRIPT | flag::LOADING | flag::STALE;
/// Flags of the harmless per-connection CLIENT subcommands.
const CONN: u32 = flag::NOSCRIPT | flag::LOADING | flag::STALE;
/// Flags of the HELP subcommands and of COMMAND.
const HELPFUL: u32 = flag::LOADING | flag::STALE;

const HELP_SUMMARY: &str = "Show helpful text about the different subcommands";

pub static COMMANDS: &[Command] = &[
    cmd(
        "info",
        -1,
        flag::LOADING | flag::STALE,
        KeySpec::Walk,
        info,
        "server",
        "Get information and statistics about the server",
        "1.0.0",
    ),
    container("config", "server", "A container for server configuration commands", "2.0.0", CONFIG_SUBCOMMANDS),
    // COMMAND is a container that also runs on its own (`COMMAND` lists everything),
    // so it is spelled out instead of built with `container`.
    Command {
        name: "command",
        arity: -1,
        flags: HELPFUL,
        keys: KeySpec::None,
        handler: command_all,
        group: "server",
        summary: "Get array of Redis command details",
        since: "2.8.13",
        subcommands: COMMAND_SUBCOMMANDS,
    },
    cmd(
        "time",
        1,
        flag::LOADING | flag::STALE | flag::FAST,
        KeySpec::None,
        time,
        "server",
        "Return the current server time",
        "2.6.0",
    ),
    cmd(
        "lastsave",
        1,
        flag::LOADING | flag::STALE | flag::FAST,
        KeySpec::None,
        lastsave,
        "server",
        "Get the UNIX time stamp of the last successful save to disk",
        "1.0.0",
    ),
    cmd(
        "bgrewriteaof",
        1,
        flag::ADMIN | flag::NOSCRIPT,
        KeySpec::None,
        bgrewriteaof,
        "server",
        "Asynchronously rewrite the append-only file",
        "1.0.0",
    ),
    cmd(
        "save",
        1,
        flag::ADMIN | flag::NOSCRIPT | flag::NO_MULTI,
        KeySpec::None,
        save,
        "server",
        "Synchronously save the dataset to disk",
        "1.0.0",
    ),
    cmd(
        "bgsave",
        -1,
        flag::ADMIN | flag::NOSCRIPT,
        KeySpec::None,
        bgsave,
        "server",
        "Asynchronously save the dataset to disk",
        "1.0.0",
    ),
    cmd(
        "shutdown",
        -1,
        ADM | flag::NO_MULTI,
        KeySpec::None,
        shutdown,
        "server",
        "Synchronously save the dataset to disk and then shut down the server",
        "1.0.0",
    ),
    cmd("debug", -2, ADM, KeySpec::None, debug, "server", "A container for debugging commands", "1.0.0"),
    container("memory", "server", "A container for memory diagnostics commands", "4.0.0", MEMORY_SUBCOMMANDS),
    cmd(
        "monitor",
        1,
        ADM,
        KeySpec::None,
        monitor,
        "server",
        "Listen for all requests received by the server in real time",
        "1.0.0",
    ),
    cmd(
        "role",
        1,
        flag::NOSCRIPT | flag::LOADING | flag::STALE | flag::FAST,
        KeySpec::None,
        role,
        "server",
        "Return the role of the instance in the context of replication",
        "2.8.12",
    ),
];

static CONFIG_SUBCOMMANDS: &[Command] = &[
    cmd(
        "config|get",
        -3,
        ADM,
        KeySpec::None,
        config_get,
        "server",
        "Get the values of configuration parameters",
        "2.0.0",
    ),
    cmd(
        "config|set",
        -4,
        ADM,
        KeySpec::None,
        config_set,
        "server",
        "Set configuration parameters to the given values",
        "2.0.0",
    ),
    cmd(
        "config|resetstat",
        2,
        ADM,
        KeySpec::Walk,
        config_resetstat,
        "server",
        "Reset the stats returned by INFO",
        "2.0.0",
    ),
    cmd(
        "config|rewrite",
        2,
        ADM,
        KeySpec::None,
        config_rewrite,
        "server",
        "Rewrite the configuration file with the in memory configuration",
        "2.8.0",
    ),
    cmd("config|help", 2, HELPFUL, KeySpec::None, config_help, "server", HELP_SUMMARY, "5.0.0"),
];

/// CLIENT's subcommands. The CLIENT container itself is declared with the connection
/// commands (`cmd/connection.rs`).
pub static CLIENT_SUBCOMMANDS: &[Command] = &[
    cmd(
        "client|id",
        2,
        CONN,
        KeySpec::None,
        client_id,
        "connection",
        "Returns the client ID for the current connection",
        "5.0.0",
    ),
    cmd(
        "client|setname",
        3,
        CONN,
        KeySpec::None,
        client_setname,
        "connection",
        "Set the current connection name",
        "2.6.9",
    ),
    cmd(
        "client|getname",
        2,
        CONN,
        KeySpec::None,
        client_getname,
        "connection",
        "Get the current connection name",
        "2.6.9",
    ),
    cmd(
        "client|list",
        -2,
        ADM,
        KeySpec::None,
        client_list,
        "connection",
        "Get the list of client connections",
        "2.4.0",
    ),
    cmd(
        "client|info",
        2,
        CONN,
        KeySpec::None,
        client_info,
        "connection",
        "Returns information about the current client connection.",
        "6.2.0",
    ),
    cmd("client|kill", -3, ADM, KeySpec::None, client_kill, "connection", "Kill the connection of a client", "2.4.0"),
    // Redis 7.2's; 7.0 does not have it, but redis-py and redis-rs send it on connect.
    cmd(
        "client|setinfo",
        4,
        CONN,
        KeySpec::None,
        client_setinfo,
        "connection",
        "Set client or connection specific info",
        "7.2.0",
    ),
    cmd(
        "client|no-evict",
        3,
        ADM,
        KeySpec::None,
        client_no_evict,
        "connection",
        "Set client eviction mode for the current connection",
        "7.0.0",
    ),
    cmd(
        "client|tracking",
        -3,
        CONN,
        KeySpec::None,
        client_tracking,
        "connection",
        "Enable or disable server assisted client side caching support",
        "6.0.0",
    ),
    cmd(
        "client|caching",
        3,
        CONN,
        KeySpec::None,
        client_caching,
        "connection",
        "Instruct the server about tracking or not keys in the next request",
        "6.0.0",
    ),
    cmd(
        "client|getredir",
        2,
        CONN,
        KeySpec::None,
        client_getredir,
        "connection",
        "Get tracking notifications redirection client ID if any",
        "6.0.0",
    ),
    cmd(
        "client|trackinginfo",
        2,
        CONN,
        KeySpec::None,
        client_trackinginfo,
        "connection",
        "Return information about server assisted client side caching for the current connection",
        "6.2.0",
    ),
    cmd("client|help", 2, HELPFUL, KeySpec::None, client_help, "connection", HELP_SUMMARY, "5.0.0"),
];

static COMMAND_SUBCOMMANDS: &[Command] = &[
    cmd(
        "command|count",
        2,
        HELPFUL,
        KeySpec::None,
        command_count,
        "server",
        "Get total number of Redis commands",
        "2.8.13",
    ),
    cmd(
        "command|docs",
        -2,
        HELPFUL,
        KeySpec::None,
        command_docs,
        "server",
        "Get array of specific Redis command documentation",
        "7.0.0",
    ),
    cmd(
        "command|getkeys",
        -4,
        HELPFUL,
        KeySpec::None,
        command_getkeys,
        "server",
        "Extract keys given a full Redis command",
        "2.8.13",
    ),
    cmd(
        "command|getkeysandflags",
        -4,
        HELPFUL,
        KeySpec::None,
        command_getkeysandflags,
        "server",
        "Extract keys and access flags given a full Redis command",
        "7.0.0",
    ),
    cmd(
        "command|info",
        -2,
        HELPFUL,
        KeySpec::None,
        command_info,
        "server",
        "Get array of specific Redis command details, or all when no argument is given.",
        "2.8.13",
    ),
    cmd(
        "command|list",
        -2,
        HELPFUL,
        KeySpec::None,
        command_list,
        "server",
        "Get an array of Redis command names",
        "7.0.0",
    ),
    cmd("command|help", 2, HELPFUL, KeySpec::None, command_help, "server", HELP_SUMMARY, "5.0.0"),
];

static MEMORY_SUBCOMMANDS: &[Command] = &[
    cmd(
        "memory|usage",
        -3,
        flag::READONLY,
        range(2, 2, 1),
        memory_usage,
        "server",
        "Estimate the memory usage of a key",
        "4.0.0",
    ),
    cmd("memory|purge", 2, 0, KeySpec::None, memory_purge, "server", "Ask the allocator to release memory", "4.0.0"),
    cmd(
        "memory|malloc-stats",
        2,
        0,
        KeySpec::None,
        memory_malloc_stats,
        "server",
        "Show allocator internal stats",
        "4.0.0",
    ),
    cmd("memory|help", 2, HELPFUL, KeySpec::None, memory_help, "server", HELP_SUMMARY, "4.0.0"),
];

/// CLIENT SETNAME rules: no spaces, newlines or other special characters.
pub fn validate_client_name(name: &[u8]) -> Result<(), &'static str> {
    if !is_printable_word(name) {
        return Err("ERR Client names cannot contain spaces, newlines or special characters.");
    }
    Ok(())
}

/// Redis's rule for names and library attributes: printable ASCII, no spaces. CLIENT
/// LIST separates fields with spaces and clients with newlines, so anything else would
/// break every parser of it.
fn is_printable_word(s: &[u8]) -> bool {
    s.iter().all(|c| (b'!'..=b'~').contains(c))
}

/// Replies with a HELP text in Redis's layout: a header line naming the command, the
/// lines given, then HELP itself; every line a simple string.
fn reply_help(reply: &mut Reply<'_>, command: &str, lines: &[&str]) {
    reply.array(lines.len() + 3);
    reply.simple(&format!("{command} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"));
    for l in lines {
        reply.simple(l);
    }
    reply.simple("HELP");
    reply.simple("    Prints this help.");
}

/// Arguments as text for messages (`%s` of an sds in Redis): lossy, never fails.
fn text(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

// ----- INFO -----

/// INFO [section ...]. Declared as walking the keyspace (for its key counts and
/// keyspace counters), so that inside EXEC it runs with every shard already locked and
/// reads them through its guards instead of locking them a second time.
fn info(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sections: Vec<String> = args.iter().skip(1).map(|a| String::from_utf8_lossy(a).to_lowercase()).collect();
    let mut keyspace = crate::info::KeyspaceSnapshot::default();
    ctx.keys.for_each_shard(|_, shard| {
        keyspace.add_shard(shard);
        true
    });
    let text = crate::info::info_text(ctx.server, &sections, &keyspace);
    ctx.reply.verbatim(text.as_bytes());
}

// ----- CONFIG -----

fn config_get(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let config = &ctx.server.config;
    // (name as replied, canonical name). Like Redis, a pattern without glob characters
    // is a direct lookup and is answered with the name as the client spelled it; a
    // glob answers with the canonical names. A parameter is listed once. (Redis lists
    // them in the order of a hash table; we keep the order they were found in.)
    let mut found: Vec<(String, String)> = Vec::new();
    for pattern in args.iter().skip(2) {
        if !pattern.iter().any(|c| matches!(c, b'[' | b'*' | b'?')) {
            let typed = text(pattern);
            if let Some(canonical) = canonical_name(&typed) {
                if !found.iter().any(|(_, c)| *c == canonical) {
                    found.push((typed, canonical));
                }
            }
            continue;
        }
        for canonical in config.matching(pattern) {
            if !found.iter().any(|(_, c)| c == canonical) {
                found.push((canonical.to_string(), canonical.to_string()));
            }
        }
    }
    ctx.reply.map(found.len());
    for (name, canonical) in found {
        ctx.reply.bulk(name.as_bytes());
        let value = config.get(&canonical).unwrap_or_default();
        ctx.reply.bulk(value.as_bytes());
    }
}

/// The table's name for a parameter as a client typed it (names are case-insensitive).
fn canonical_name(typed: &str) -> Option<String> {
    crate::config::Config::is_known(typed).then(|| typed.to_ascii_lowercase())
}

/// Serialises CONFIG SETs: each one backs up, sets and maybe restores several
/// parameters, and two of them interleaving could restore each other's values.
static CONFIG_SET_LOCK: Mutex<()> = Mutex::new(());

/// CONFIG SET name value [name value ...], all or nothing, as in Redis 7.0: every name
/// is checked first (unknown, immutable, given twice), then the values are set in
/// order; if one is refused, the ones set before it get their old values back.
fn config_set(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if !args.len().is_multiple_of(2) {
        return ctx.reply.error(ERR_SYNTAX);
    }
    let config = &ctx.server.config;
    let _serial = CONFIG_SET_LOCK.lock();
    // (canonical name, new value). The parameter table holds text: bytes that are not
    // UTF-8 become U+FFFD, so a binary requirepass is not stored as sent.
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in 0..(args.len() - 2) / 2 {
        let typed = text(args.get(2 + pair * 2));
        let Some(canonical) = canonical_name(&typed) else {
            return ctx.reply.error(&format!("ERR {}", ConfigError::Unknown(typed)));
        };
        if !crate::config::Config::is_mutable(&canonical) {
            return ctx.reply.error(&format!("ERR {}", ConfigError::Immutable(typed)));
        }
        if params.iter().any(|(c, _)| *c == canonical) {
            let dup = ConfigError::Invalid { name: typed, reason: "duplicate parameter".to_string() };
            return ctx.reply.error(&format!("ERR {dup}"));
        }
        params.push((canonical, text(args.get(3 + pair * 2))));
    }
    let old: Vec<String> = params.iter().map(|(name, _)| config.get(name).unwrap_or_default()).collect();
    for (i, (name, value)) in params.iter().enumerate() {
        if let Err(e) = config.set(name, value, true) {
            for (j, (restore, _)) in params.iter().enumerate().take(i) {
                if let Err(again) = config.set(restore, &old[j], false) {
                    tracing::warn!(param = restore, error = %again, "restoring a parameter after a failed CONFIG SET");
                }
            }
            return ctx.reply.error(&format!("ERR {e}"));
        }
    }
    // Apply what lives outside the parameter table.
    if params.iter().any(|(name, _)| name == "maxclients") {
        let max = config.live.maxclients.load(Ordering::Relaxed);
        ctx.server.limit.set_max(max);
    }
    // A lower tracking-table-max-keys takes effect at once, as in Redis. Inside EXEC
    // the shard locks are held (evicting would lock them again): the cron does it.
    if params.iter().any(|(name, _)| name == "tracking-table-max-keys") && ctx.keys.guards.is_empty() {
        crate::tracking::enforce_limit(ctx.server);
    }
    ctx.reply.ok();
}

fn config_resetstat(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let server = ctx.server;
    server.commands.reset();
    let stats = &server.stats;
    for counter in [
        &stats.net_input_bytes,
        &stats.net_output_bytes,
        &stats.expire_cycles,
        &stats.expire_cycle_time_us,
        &stats.pubsub_messages,
        &stats.output_limit_disconnections,
        &server.clients.total_connections,
        &server.clients.rejected_connections,
    ] {
        counter.store(0, Ordering::Relaxed);
    }
    // The keyspace counters live under the shard locks. RESETSTAT is declared as a
    // walk: it takes them one at a time, or inside EXEC uses the ones already held.
    ctx.keys.for_each_shard(|_, shard| {
        shard.stats = Default::default();
        true
    });
    ctx.reply.ok();
}

fn config_rewrite(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.error(
        "ERR minikv does not rewrite config files: CONFIG SET changes last until restart; edit the file to keep them",
    );
}

fn config_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    reply_help(
        &mut ctx.reply,
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
        ],
    );
}

// ----- CLIENT -----

fn client_id(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.int(ctx.session.id as i64);
}

fn client_setname(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let name = args.get(2);
    if let Err(e) = validate_client_name(name) {
        return ctx.reply.error(e);
    }
    *ctx.session.info.name.lock() = if name.is_empty() { None } else { Some(name.to_vec()) };
    ctx.reply.ok();
}

fn client_getname(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let name = ctx.session.info.name.lock().clone();
    match name {
        Some(n) => ctx.reply.bulk(&n),
        None => ctx.reply.null_bulk(),
    }
}

/// Redis's client types, as CLIENT LIST TYPE and CLIENT KILL TYPE name them. minikv has
/// no replication, so no client is ever a master or a replica.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientType {
    Normal,
    Replica,
    Master,
    PubSub,
}

impl ClientType {
    fn parse(name: &[u8]) -> Option<ClientType> {
        if is(name, "normal") {
            Some(ClientType::Normal)
        } else if is(name, "slave") || is(name, "replica") {
            Some(ClientType::Replica)
        } else if is(name, "master") {
            Some(ClientType::Master)
        } else if is(name, "pubsub") {
            Some(ClientType::PubSub)
        } else {
            None
        }
    }

    fn of(c: &ClientInfo) -> ClientType {
        if subscription_count(c) > 0 {
            ClientType::PubSub
        } else {
            ClientType::Normal
        }
    }
}

fn subscription_count(c: &ClientInfo) -> usize {
    c.subscriptions.load(Ordering::Relaxed) + c.pattern_subscriptions.load(Ordering::Relaxed)
}

fn unknown_type(name: &[u8]) -> String {
    format!("ERR Unknown client type '{}'", text(name))
}

/// One CLIENT LIST line, in Redis 7.0's field order:
///
/// ```text
/// id=7 addr=127.0.0.1:50510 laddr=127.0.0.1:6379 fd=8 name= age=3 idle=0 flags=N db=0
/// sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0
/// obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|list user=default redir=-1 resp=2
/// ```
///
/// Flags are Redis's letters for what minikv has: `P` subscribed, `x` in MULTI, `b`
/// blocked, `t` tracking, `R` tracking with a broken redirect, `B` BCAST tracking, `N`
/// none of these. `redir` is the tracking redirect (0 without one, -1 not tracking).
///
/// Every field a client may parse is present. The buffer and memory fields (`qbuf`
/// to `tot-mem`) are 0: the connection does not account its buffers per client.
/// `multi` is the number of queued commands for the calling client; for another
/// client in MULTI we only know that it is queueing, and print 0. `fd` is -1: the
/// registry keeps the descriptor private. `lib-name=` and `lib-ver=` (Redis 7.2's
/// trailing fields) are added only once a client has sent CLIENT SETINFO, so a client
/// that never does sees exactly Redis 7.0's line.
fn client_line(out: &mut String, c: &ClientInfo, now_ms: u64, own_multi: Option<i64>) {
    let name = c.name.lock().clone().unwrap_or_default();
    let age = now_ms.saturating_sub(c.created_ms) / 1000;
    let idle = now_ms.saturating_sub(c.last_interaction_ms.load(Ordering::Relaxed)) / 1000;
    let in_multi = c.in_multi.load(Ordering::Relaxed);
    let mut flags = String::new();
    if ClientType::of(c) == ClientType::PubSub {
        flags.push('P');
    }
    if in_multi {
        flags.push('x');
    }
    if c.blocked.load(Ordering::Relaxed) {
        flags.push('b');
    }
    let tracking = c.tracking.flags();
    if tracking & tracking_flag::ON != 0 {
        flags.push('t');
    }
    if tracking & tracking_flag::BROKEN_REDIRECT != 0 {
        flags.push('R');
    }
    if tracking & tracking_flag::BCAST != 0 {
        flags.push('B');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let multi = own_multi.unwrap_or(if in_multi { 0 } else { -1 });
    let last = c.last_cmd.load(Ordering::Relaxed);
    let cmd = table().commands.get(last).map_or("NULL", |c| c.name);
    let _ = write!(
        out,
        "id={} addr={} laddr={} fd={} name={} age={age} idle={idle} flags={flags} db={} sub={} psub={} ssub=0 multi={multi} \
         qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={cmd} user=default redir={} resp={}",
        c.id,
        c.peer,
        c.local,
        c.fd().unwrap_or(-1),
        String::from_utf8_lossy(&name),
        c.db.load(Ordering::Relaxed),
        c.subscriptions.load(Ordering::Relaxed),
        c.pattern_subscriptions.load(Ordering::Relaxed),
        c.tracking.redirect_for_display(),
        c.resp.load(Ordering::Relaxed),
    );
    let lib_name = c.lib_name.lock().clone();
    let lib_ver = c.lib_ver.lock().clone();
    if lib_name.is_some() || lib_ver.is_some() {
        let _ = write!(
            out,
            " lib-name={} lib-ver={}",
            String::from_utf8_lossy(&lib_name.unwrap_or_default()),
            String::from_utf8_lossy(&lib_ver.unwrap_or_default()),
        );
    }
    out.push('\n');
}

/// The calling client's own line: unlike other clients, its queue length is known.
fn own_line(ctx: &Ctx<'_>, out: &mut String, c: &ClientInfo) {
    let multi = ctx.session.multi.as_ref().map_or(-1, |m| m.queued.len() as i64);
    client_line(out, c, ctx.keys.now_ms, Some(multi));
}

fn client_info(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let mut out = String::new();
    let me = ctx.session.info.clone();
    own_line(ctx, &mut out, &me);
    ctx.reply.verbatim(out.as_bytes());
}

/// CLIENT LIST [TYPE type] | [ID id [id ...]], parsed like Redis 7.0: TYPE must be the
/// only option, ID takes every argument after it.
fn client_list(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut only_type = None;
    let mut only_ids: Option<Vec<i64>> = None;
    if args.len() == 4 && is(args.get(2), "type") {
        match ClientType::parse(args.get(3)) {
            Some(t) => only_type = Some(t),
            None => return ctx.reply.error(&unknown_type(args.get(3))),
        }
    } else if args.len() > 3 && is(args.get(2), "id") {
        let mut ids = Vec::with_capacity(args.len() - 3);
        for a in args.iter().skip(3) {
            match int_arg(a) {
                Some(id) => ids.push(id),
                None => return ctx.reply.error("ERR Invalid client ID"),
            }
        }
        only_ids = Some(ids);
    } else if args.len() != 2 {
        return ctx.reply.error(ERR_SYNTAX);
    }
    let mut out = String::new();
    let my_id = ctx.session.id;
    let line = |ctx: &Ctx<'_>, out: &mut String, c: &ClientInfo| {
        if c.id == my_id {
            own_line(ctx, out, c);
        } else {
            client_line(out, c, ctx.keys.now_ms, None);
        }
    };
    match only_ids {
        // Redis answers in the order asked, repeats included.
        Some(ids) => {
            for id in ids {
                if let Some(c) = u64::try_from(id).ok().and_then(|id| ctx.server.clients.get(id)) {
                    line(ctx, &mut out, &c);
                }
            }
        }
        None => {
            for c in ctx.server.clients.all() {
                if only_type.is_none_or(|t| t == ClientType::of(&c)) {
                    line(ctx, &mut out, &c);
                }
            }
        }
    }
    ctx.reply.verbatim(out.as_bytes());
}

/// Which clients CLIENT KILL's new form targets; every filter given must match.
struct KillFilter {
    id: Option<u64>,
    addr: Option<String>,
    laddr: Option<String>,
    kind: Option<ClientType>,
    skip_me: bool,
}

impl KillFilter {
    fn matches(&self, c: &ClientInfo, my_id: u64) -> bool {
        self.id.is_none_or(|id| id == c.id)
            && self.addr.as_ref().is_none_or(|a| *a == c.peer.to_string())
            && self.laddr.as_ref().is_none_or(|a| *a == c.local.to_string())
            && self.kind.is_none_or(|k| k == ClientType::of(c))
            && !(self.skip_me && c.id == my_id)
    }
}

/// CLIENT KILL addr:port (old form: +OK or an error) or CLIENT KILL <filter> <value>
/// ... (new form: the number killed; SKIPME defaults to yes). A killed client's socket
/// is shut down ([`ClientInfo::kill`]); the caller itself, when it is a target, gets its
/// reply first and is closed after, as Redis does.
fn client_kill(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let old_form = args.len() == 3;
    let mut filter = KillFilter { id: None, addr: None, laddr: None, kind: None, skip_me: true };
    if old_form {
        filter.addr = Some(text(args.get(2)));
        filter.skip_me = false;
    } else {
        let mut i = 2;
        while i < args.len() {
            if i + 1 >= args.len() {
                return ctx.reply.error(ERR_SYNTAX);
            }
            let (opt, value) = (args.get(i), args.get(i + 1));
            if is(opt, "id") {
                match int_arg(value) {
                    Some(id) if id >= 1 => filter.id = Some(id as u64),
                    _ => return ctx.reply.error("ERR client-id should be greater than 0"),
                }
            } else if is(opt, "type") {
                match ClientType::parse(value) {
                    Some(t) => filter.kind = Some(t),
                    None => return ctx.reply.error(&unknown_type(value)),
                }
            } else if is(opt, "addr") {
                filter.addr = Some(text(value));
            } else if is(opt, "laddr") {
                filter.laddr = Some(text(value));
            } else if is(opt, "user") {
                // Without ACLs every client is the default user.
                if value != b"default" {
                    return ctx.reply.error(&format!("ERR No such user '{}'", text(value)));
                }
            } else if is(opt, "skipme") {
                if is(value, "yes") {
                    filter.skip_me = true;
                } else if is(value, "no") {
                    filter.skip_me = false;
                } else {
                    return ctx.reply.error(ERR_SYNTAX);
                }
            } else {
                return ctx.reply.error(ERR_SYNTAX);
            }
            i += 2;
        }
    }
    let my_id = ctx.session.id;
    let mut killed = 0;
    let mut close_me = false;
    for c in ctx.server.clients.all() {
        if !filter.matches(&c, my_id) {
            continue;
        }
        if c.id == my_id {
            close_me = true;
        } else {
            c.kill();
        }
        killed += 1;
    }
    if old_form {
        if killed == 0 {
            ctx.reply.error("ERR No such client");
        } else {
            ctx.reply.ok();
        }
    } else {
        ctx.reply.int(killed);
    }
    if close_me {
        ctx.action = Some(Action::Close);
    }
}

/// CLIENT SETINFO LIB-NAME|LIB-VER value (Redis 7.2). An empty value clears it.
fn client_setinfo(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (attr, value) = (args.get(2), args.get(3));
    let slot = if is(attr, "lib-name") {
        &ctx.session.info.lib_name
    } else if is(attr, "lib-ver") {
        &ctx.session.info.lib_ver
    } else {
        return ctx.reply.error(&format!("ERR Unrecognized option '{}'", text(attr)));
    };
    if !is_printable_word(value) {
        return ctx.reply.error(&format!("ERR {} cannot contain spaces, newlines or special characters.", text(attr)));
    }
    *slot.lock() = if value.is_empty() { None } else { Some(value.to_vec()) };
    ctx.reply.ok();
}

/// CLIENT NO-EVICT on|off. minikv never evicts clients (there is no maxmemory-clients),
/// so every client is already protected; the switch is validated and accepted.
fn client_no_evict(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if is(args.get(2), "on") || is(args.get(2), "off") {
        ctx.reply.ok();
    } else {
        ctx.reply.error(ERR_SYNTAX);
    }
}

/// CLIENT TRACKING on|off [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN] [OPTOUT]
/// [NOLOOP]: parsed and checked by [`crate::tracking`] in Redis 7.0's order, with its
/// messages.
fn client_tracking(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let words: Vec<&[u8]> = args.iter().skip(2).collect();
    let clients = &ctx.server.clients;
    let parsed = crate::tracking::parse_tracking(&words, |id| clients.get(id).is_some_and(|c| !c.is_gone()));
    let req = match parsed {
        Ok(req) => req,
        Err(e) => return ctx.reply.error_bytes(&e.message()),
    };
    if !req.on {
        crate::tracking::disable(ctx.server, ctx.session);
        return ctx.reply.ok();
    }
    let current = ctx.session.info.tracking.flags();
    if let Err(e) = crate::tracking::check_enable(&req, current, &ctx.session.tracking.prefixes) {
        return ctx.reply.error_bytes(&e.message());
    }
    let target = match req.redirect {
        0 => None,
        // Checked while parsing; it may have left since.
        id => match clients.get(id) {
            Some(c) => Some(c),
            None => return ctx.reply.error_bytes(&crate::tracking::TrackingError::NoSuchRedirect.message()),
        },
    };
    crate::tracking::enable(ctx.server, ctx.session, &req, target);
    ctx.reply.ok();
}

/// CLIENT CACHING yes|no: whether the next command's reads are remembered, for a client
/// tracking in OPTIN (yes) or OPTOUT (no) mode.
fn client_caching(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let flags = ctx.session.info.tracking.flags();
    if flags & tracking_flag::ON == 0 {
        return ctx.reply.error(
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        );
    }
    let opt = args.get(2);
    if is(opt, "yes") {
        if flags & tracking_flag::OPTIN == 0 {
            return ctx.reply.error("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.");
        }
    } else if is(opt, "no") {
        if flags & tracking_flag::OPTOUT == 0 {
            return ctx.reply.error("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.");
        }
    } else {
        return ctx.reply.error(ERR_SYNTAX);
    }
    ctx.session.tracking.caching = true;
    ctx.reply.ok();
}

fn client_getredir(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.int(ctx.session.info.tracking.redirect_for_display());
}

/// CLIENT TRACKINGINFO: flags (a set), redirect and prefixes, as Redis 7.0 prints them.
fn client_trackinginfo(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let flags = ctx.session.info.tracking.flags();
    let caching = ctx.session.tracking.caching;
    let mut names: Vec<&str> = vec![if flags & tracking_flag::ON != 0 { "on" } else { "off" }];
    if flags & tracking_flag::BCAST != 0 {
        names.push("bcast");
    }
    if flags & tracking_flag::OPTIN != 0 {
        names.push("optin");
        if caching {
            names.push("caching-yes");
        }
    }
    if flags & tracking_flag::OPTOUT != 0 {
        names.push("optout");
        if caching {
            names.push("caching-no");
        }
    }
    if flags & tracking_flag::NOLOOP != 0 {
        names.push("noloop");
    }
    if flags & tracking_flag::BROKEN_REDIRECT != 0 {
        names.push("broken_redirect");
    }
    let redirect = ctx.session.info.tracking.redirect_for_display();
    let r = &mut ctx.reply;
    r.map(3);
    r.bulk(b"flags");
    r.set(names.len());
    for n in names {
        r.bulk(n.as_bytes());
    }
    r.bulk(b"redirect");
    r.int(redirect);
    r.bulk(b"prefixes");
    r.array(ctx.session.tracking.prefixes.len());
    for p in &ctx.session.tracking.prefixes {
        r.bulk(p);
    }
}

fn client_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    reply_help(
        &mut ctx.reply,
        "CLIENT",
        &[
            "CACHING (YES|NO)",
            "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
            "GETREDIR",
            "    Return the client ID we are redirecting to when tracking is enabled.",
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are:",
            "    * ADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made from the specified address",
            "    * LADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made to specified local address",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Kill connections by type.",
            "    * USER <username>",
            "      Kill connections authenticated by <username>.",
            "    * SKIPME (YES|NO)",
            "      Skip killing current connection (default: yes).",
            "LIST [options ...]",
            "    Return information about client connections. Options:",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Return clients of specified type.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are:",
            "    * LIB-NAME: the client lib name.",
            "    * LIB-VER: the client lib version.",
            "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
            "         [OPTIN] [OPTOUT] [NOLOOP]",
            "    Control server assisted client side caching.",
            "TRACKINGINFO",
            "    Report tracking status for the current connection.",
            "NO-EVICT (ON|OFF)",
            "    Protect current client connection from eviction.",
        ],
    );
}

// ----- COMMAND -----

/// Command flags Redis reports that have no bit in our table, because they describe
/// machinery minikv does not have (scripts that keep the server busy, asynchronous
/// replica loading, the slow log). They sit above our 32 bits.
mod redis_flag {
    pub const SKIP_SLOWLOG: u64 = 1 << 32;
    pub const MAY_REPLICATE: u64 = 1 << 33;
    pub const NO_MANDATORY_KEYS: u64 = 1 << 34;
    pub const NO_ASYNC_LOADING: u64 = 1 << 35;
    pub const ALLOW_BUSY: u64 = 1 << 37;
}

/// Flag names in the order Redis 7.0 prints them (`addReplyFlagsForCommand`).
const FLAG_NAMES: &[(u64, &str)] = &[
    (flag::WRITE as u64, "write"),
    (flag::READONLY as u64, "readonly"),
    (flag::DENYOOM as u64, "denyoom"),
    (flag::ADMIN as u64, "admin"),
    (flag::PUBSUB as u64, "pubsub"),
    (flag::NOSCRIPT as u64, "noscript"),
    (flag::BLOCKING as u64, "blocking"),
    (flag::LOADING as u64, "loading"),
    (flag::STALE as u64, "stale"),
    (redis_flag::SKIP_SLOWLOG, "skip_slowlog"),
    (flag::FAST as u64, "fast"),
    (flag::NO_AUTH as u64, "no_auth"),
    (redis_flag::MAY_REPLICATE, "may_replicate"),
    (redis_flag::NO_MANDATORY_KEYS, "no_mandatory_keys"),
    (redis_flag::NO_ASYNC_LOADING, "no_async_loading"),
    (flag::NO_MULTI as u64, "no_multi"),
    (flag::MOVABLE_KEYS as u64, "movablekeys"),
    (redis_flag::ALLOW_BUSY, "allow_busy"),
];

/// ACL categories, in the order Redis lists them (and prints them in COMMAND INFO).
const CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Bit of a category in [`CATEGORIES`].
const fn cat(name: &str) -> u32 {
    let mut i = 0;
    while i < CATEGORIES.len() {
        if const_eq(CATEGORIES[i], name) {
            return 1 << i;
        }
        i += 1;
    }
    panic!("unknown ACL category");
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// What Redis declares by hand for a command, beyond what its flags and group imply.
struct Extras {
    flags: u64,
    add: u32,
    remove: u32,
    /// The legacy (first, last, step) of a command whose keys we find by a function
    /// but whose first key spec Redis declares as a plain range (the destination of
    /// ZUNIONSTORE, the key of SORT).
    legacy: Option<(i64, i64, i64)>,
}

/// The hand-written part of Redis's command metadata, for commands whose flags and
/// group do not give Redis's answer: extra categories (`@dangerous` on KEYS, `@admin`
/// on LASTSAVE), categories a group would imply but Redis leaves out (SORT is generic
/// but not `@keyspace`), and the flags of [`redis_flag`].
fn redis_extras(name: &str) -> Extras {
    const DANGEROUS: u32 = cat("dangerous");
    const ADMIN_DANGEROUS: u32 = cat("admin") | cat("dangerous");
    if matches!(name, "zunionstore" | "zinterstore" | "zdiffstore") {
        return Extras { flags: 0, add: 0, remove: 0, legacy: Some((1, 1, 1)) };
    }
    let (flags, add, remove) = match name {
        // COMMAND and its subcommands are in the server group but declare @connection.
        n if n == "command" || n.starts_with("command|") => (0, cat("connection"), 0),
        // Server-group commands that act on the keyspace declare @keyspace.
        "dbsize" => (0, cat("keyspace"), 0),
        "flushdb" | "flushall" | "swapdb" => (0, cat("keyspace") | DANGEROUS, 0),
        "info" | "keys" => (0, DANGEROUS, 0),
        "sort" | "sort_ro" => {
            return Extras { flags: 0, add: DANGEROUS, remove: cat("keyspace"), legacy: Some((1, 1, 1)) };
        }
        "lastsave" | "role" => (0, ADMIN_DANGEROUS, 0),
        "bgrewriteaof" | "bgsave" => (redis_flag::NO_ASYNC_LOADING, 0, 0),
        "save" => (redis_flag::NO_ASYNC_LOADING, 0, 0),
        "shutdown" => (redis_flag::ALLOW_BUSY, 0, 0),
        "multi" | "discard" | "watch" | "unwatch" | "quit" | "reset" | "hello" | "auth" => {
            (redis_flag::ALLOW_BUSY, 0, 0)
        }
        "exec" => (redis_flag::SKIP_SLOWLOG, 0, 0),
        _ => (0, 0, 0),
    };
    Extras { flags, add, remove, legacy: None }
}

/// The flags COMMAND INFO reports for `c`.
fn info_flags(c: &Command) -> u64 {
    // NO_MULTI and PUBSUB_CONTEXT are dispatcher bits with no Redis flag of that meaning.
    let mut flags = (c.flags & !(flag::NOT_QUEUED | flag::PUBSUB_CONTEXT)) as u64;
    if matches!(c.keys, KeySpec::Find(_)) {
        flags |= flag::MOVABLE_KEYS as u64;
    }
    flags | redis_extras(c.name).flags
}

/// The category a group gives its commands (Redis declares these per command; they
/// follow the group, except where [`redis_extras`] says otherwise).
fn group_category(group: &str) -> u32 {
    match group {
        "generic" => cat("keyspace"),
        "string" => cat("string"),
        "list" => cat("list"),
        "hash" => cat("hash"),
        "set" => cat("set"),
        "sorted-set" | "sorted_set" | "zset" => cat("sortedset"),
        "bitmap" => cat("bitmap"),
        "hyperloglog" => cat("hyperloglog"),
        "geo" => cat("geo"),
        "stream" => cat("stream"),
        "connection" => cat("connection"),
        "transactions" => cat("transaction"),
        "scripting" => cat("scripting"),
        _ => 0,
    }
}

/// ACL categories of `c`, by Redis's rules (`setImplicitACLCategories`): write ->
/// @write, readonly -> @read, admin -> @admin @dangerous, pubsub -> @pubsub, fast ->
/// @fast or else @slow, blocking -> @blocking; plus the group's category for commands
/// (containers have none).
fn categories(c: &Command) -> u32 {
    let mut cats = 0;
    if c.subcommands.is_empty() {
        cats |= group_category(c.group);
    }
    let f = c.flags;
    if f & flag::WRITE != 0 {
        cats |= cat("write");
    }
    if f & flag::READONLY != 0 {
        cats |= cat("read");
    }
    if f & flag::ADMIN != 0 {
        cats |= cat("admin") | cat("dangerous");
    }
    if f & flag::PUBSUB != 0 {
        cats |= cat("pubsub");
    }
    if f & flag::FAST != 0 {
        cats |= cat("fast");
    } else {
        cats |= cat("slow");
    }
    if f & flag::BLOCKING != 0 {
        cats |= cat("blocking");
    }
    let extras = redis_extras(c.name);
    (cats | extras.add) & !extras.remove
}

/// Key access flags of a key spec. The table does not say how each key is used, so
/// this is coarser than Redis (which tells insert from update from delete): keys of
/// a write command are "RW update", of a read command "RO access".
fn key_flags(c: &Command) -> &'static [&'static str] {
    if c.flags & flag::WRITE != 0 {
        &["RW", "update"]
    } else if c.flags & flag::READONLY != 0 {
        &["RO", "access"]
    } else {
        &["RO"]
    }
}

/// The legacy (first key, last key, step) triple. Commands whose keys are found by a
/// function (the numkeys forms) report 0 0 0 with `movablekeys`, and clients ask
/// COMMAND GETKEYS.
fn legacy_range(c: &Command) -> (i64, i64, i64) {
    match c.keys {
        KeySpec::Range { first, last, step } => (first as i64, last as i64, step as i64),
        KeySpec::Find(_) => redis_extras(c.name).legacy.unwrap_or((0, 0, 0)),
        KeySpec::None | KeySpec::Walk | KeySpec::All => (0, 0, 0),
    }
}

fn reply_flag_set(reply: &mut Reply<'_>, flags: u64) {
    let names: Vec<&str> = FLAG_NAMES.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect();
    reply.set(names.len());
    for n in names {
        reply.simple(n);
    }
}

fn reply_key_specs(reply: &mut Reply<'_>, c: &Command) {
    match c.keys {
        KeySpec::Range { first, last, step } => {
            reply.set(1);
            reply.map(3);
            reply.bulk(b"flags");
            let flags = key_flags(c);
            reply.set(flags.len());
            for f in flags {
                reply.simple(f);
            }
            reply.bulk(b"begin_search");
            reply.map(2);
            reply.bulk(b"type");
            reply.bulk(b"index");
            reply.bulk(b"spec");
            reply.map(1);
            reply.bulk(b"index");
            reply.int(first as i64);
            reply.bulk(b"find_keys");
            reply.map(2);
            reply.bulk(b"type");
            reply.bulk(b"range");
            reply.bulk(b"spec");
            reply.map(3);
            reply.bulk(b"lastkey");
            // Relative to the first key when counting from the front, as Redis has it.
            reply.int(if last >= 0 { last as i64 - first as i64 } else { last as i64 });
            reply.bulk(b"keystep");
            reply.int(step as i64);
            reply.bulk(b"limit");
            reply.int(0);
        }
        KeySpec::Find(_) => {
            reply.set(1);
            reply.map(3);
            reply.bulk(b"flags");
            let flags = key_flags(c);
            reply.set(flags.len());
            for f in flags {
                reply.simple(f);
            }
            for part in [&b"begin_search"[..], b"find_keys"] {
                reply.bulk(part);
                reply.map(2);
                reply.bulk(b"type");
                reply.bulk(b"unknown");
                reply.bulk(b"spec");
                reply.map(0);
            }
        }
        KeySpec::None | KeySpec::Walk | KeySpec::All => reply.set(0),
    }
}

/// One command's COMMAND INFO entry: the 10-element array of Redis 7.0.
fn reply_command_info(reply: &mut Reply<'_>, c: &Command) {
    reply.array(10);
    reply.bulk(c.name.as_bytes());
    reply.int(c.arity as i64);
    reply_flag_set(reply, info_flags(c));
    let (first, last, step) = legacy_range(c);
    reply.int(first);
    reply.int(last);
    reply.int(step);
    let cats = categories(c);
    reply.set(cats.count_ones() as usize);
    for (i, name) in CATEGORIES.iter().enumerate() {
        if cats & (1 << i) != 0 {
            reply.simple(&format!("@{name}"));
        }
    }
    reply.set(0); // tips: not in our table
    reply_key_specs(reply, c);
    if c.subcommands.is_empty() {
        reply.set(0);
    } else {
        reply.array(c.subcommands.len());
        for sub in c.subcommands {
            reply_command_info(reply, sub);
        }
    }
}

/// One command's COMMAND DOCS map: summary, since, group, and the subcommands' docs.
/// Complexity, arguments and history are not in our table and are left out (all three
/// are optional in Redis's reply; redis-cli then shows no argument hints).
fn reply_command_docs(reply: &mut Reply<'_>, c: &Command) {
    let has_subs = !c.subcommands.is_empty();
    reply.map(3 + has_subs as usize);
    reply.bulk(b"summary");
    reply.bulk(c.summary.as_bytes());
    reply.bulk(b"since");
    reply.bulk(c.since.as_bytes());
    reply.bulk(b"group");
    reply.bulk(c.group.as_bytes());
    if has_subs {
        reply.bulk(b"subcommands");
        reply.map(c.subcommands.len());
        for sub in c.subcommands {
            reply.bulk(sub.name.as_bytes());
            reply_command_docs(reply, sub);
        }
    }
}

/// A command by the name COMMAND INFO/DOCS take: `get`, or `client|list` for a
/// subcommand.
fn lookup(name: &[u8]) -> Option<&'static Command> {
    let t = table();
    t.find(name).map(|i| t.commands[i])
}

fn command_all(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let t = table();
    let all: Vec<&Command> = t.top_level().collect();
    ctx.reply.array(all.len());
    for c in all {
        reply_command_info(&mut ctx.reply, c);
    }
}

fn command_count(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.int(table().top_level().count() as i64);
}

fn command_info(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() == 2 {
        return command_all(ctx, args);
    }
    ctx.reply.array(args.len() - 2);
    for name in args.iter().skip(2) {
        match lookup(name) {
            Some(c) => reply_command_info(&mut ctx.reply, c),
            None => ctx.reply.null_bulk(),
        }
    }
}

fn command_docs(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let found: Vec<&Command> =
        if args.len() == 2 { table().top_level().collect() } else { args.iter().skip(2).filter_map(lookup).collect() };
    ctx.reply.map(found.len());
    for c in found {
        ctx.reply.bulk(c.name.as_bytes());
        reply_command_docs(&mut ctx.reply, c);
    }
}

/// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]: every
/// command and subcommand name. minikv has no modules, so a module filter matches
/// nothing; so does an unknown category.
fn command_list(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    enum Filter<'a> {
        All,
        Nothing,
        Category(u32),
        Pattern(&'a [u8]),
    }
    let mut filter = Filter::All;
    let mut i = 2;
    while i < args.len() {
        // Redis takes FILTERBY only as the last three arguments.
        if is(args.get(i), "filterby") && args.len() - 1 - i == 2 {
            let (kind, arg) = (args.get(i + 1), args.get(i + 2));
            filter = if is(kind, "module") {
                Filter::Nothing
            } else if is(kind, "aclcat") {
                match CATEGORIES.iter().position(|c| is(arg, c)) {
                    Some(bit) => Filter::Category(1 << bit),
                    None => Filter::Nothing,
                }
            } else if is(kind, "pattern") {
                Filter::Pattern(arg)
            } else {
                return ctx.reply.error(ERR_SYNTAX);
            };
            i += 3;
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
    }
    let names: Vec<&str> = table()
        .commands
        .iter()
        .filter(|c| match filter {
            Filter::All => true,
            Filter::Nothing => false,
            Filter::Category(bit) => categories(c) & bit != 0,
            Filter::Pattern(p) => crate::glob::matches(p, c.name.as_bytes(), true),
        })
        .map(|c| c.name)
        .collect();
    ctx.reply.array(names.len());
    for n in names {
        ctx.reply.bulk(n.as_bytes());
    }
}

/// The keys of a full command given to COMMAND GETKEYS, with Redis's errors.
fn keys_of_command<'a>(args: &Args<'a>) -> Result<(&'static Command, Vec<&'a [u8]>), &'static str> {
    let target = args.slice_from(2);
    let t = table();
    let mut command = lookup(target.get(0)).ok_or("ERR Invalid command specified")?;
    if !command.subcommands.is_empty() && target.len() >= 2 {
        let sub = t.find_sub(command, target.get(1)).ok_or("ERR Invalid command specified")?;
        command = t.commands[sub];
    }
    if matches!(command.keys, KeySpec::None | KeySpec::Walk | KeySpec::All) {
        return Err("ERR The command has no key arguments");
    }
    if !super::arity_ok(command.arity, target.len()) {
        return Err("ERR Invalid number of arguments specified for command");
    }
    let mut positions = Vec::new();
    command.keys.positions(&target, &mut positions);
    if positions.is_empty() {
        return Err("ERR Invalid arguments specified for command");
    }
    Ok((command, positions.into_iter().map(|p| target.get(p)).collect()))
}

fn command_getkeys(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match keys_of_command(args) {
        Ok((_, keys)) => {
            ctx.reply.array(keys.len());
            for k in keys {
                ctx.reply.bulk(k);
            }
        }
        Err(e) => ctx.reply.error(e),
    }
}

fn command_getkeysandflags(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match keys_of_command(args) {
        Ok((command, keys)) => {
            let flags = key_flags(command);
            ctx.reply.array(keys.len());
            for k in keys {
                ctx.reply.array(2);
                ctx.reply.bulk(k);
                ctx.reply.set(flags.len());
                for f in flags {
                    ctx.reply.simple(f);
                }
            }
        }
        Err(e) => ctx.reply.error(e),
    }
}

fn command_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    reply_help(
        &mut ctx.reply,
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "GETKEYS <full-command>",
            "    Return the keys from a full Redis command.",
            "GETKEYSANDFLAGS <full-command>",
            "    Return the keys and the access flags from a full Redis command.",
        ],
    );
}

// ----- TIME, LASTSAVE, persistence, SHUTDOWN, ROLE, MONITOR -----

fn time(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let us = crate::server::unix_us();
    ctx.reply.array(2);
    ctx.reply.bulk_int((us / 1_000_000) as i64);
    ctx.reply.bulk_int((us % 1_000_000) as i64);
}

/// LASTSAVE: Redis answers the time of the last RDB save, which at start is the start
/// time. minikv never writes an RDB, so it is always the start time.
fn lastsave(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.int((ctx.server.started_unix_ms / 1000) as i64);
}

fn bgrewriteaof(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let Some(aof) = ctx.server.aof() else {
        return ctx.reply.error("ERR minikv can only rewrite the AOF when appendonly is yes");
    };
    match aof.start_rewrite(ctx.server) {
        Ok(()) => ctx.reply.simple("Background append only file rewriting started"),
        Err(e) => ctx.reply.error(&e),
    }
}

const NO_RDB: &str = "ERR minikv has no RDB snapshots; enable appendonly yes and use BGREWRITEAOF";

fn save(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.error(NO_RDB);
}

/// BGSAVE [SCHEDULE]: the argument is checked as Redis does, then refused.
fn bgsave(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 2 || (args.len() == 2 && !is(args.get(1), "schedule")) {
        return ctx.reply.error(ERR_SYNTAX);
    }
    ctx.reply.error(NO_RDB);
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]. There is no RDB to save and no
/// replica to wait for, so the modifiers change nothing: the server stops accepting,
/// lets connected clients finish what they sent, fsyncs the AOF and exits. Like Redis,
/// the caller gets no reply; its connection just closes. Shutdown starts at once, so
/// there is never one in progress to ABORT.
fn shutdown(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (mut save, mut nosave, mut abort, mut other) = (false, false, false, false);
    for a in args.iter().skip(1) {
        if is(a, "nosave") {
            nosave = true;
        } else if is(a, "save") {
            save = true;
        } else if is(a, "now") || is(a, "force") {
            other = true;
        } else if is(a, "abort") {
            abort = true;
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
    }
    if (abort && (save || nosave || other)) || (save && nosave) {
        return ctx.reply.error(ERR_SYNTAX);
    }
    if abort {
        return ctx.reply.error("ERR No shutdown in progress.");
    }
    if ctx.in_exec {
        // Redis refuses SHUTDOWN while queueing (it is `no_multi`); our dispatcher
        // queues it, so it is refused here, when EXEC reaches it, with Redis's words.
        return ctx.reply.error("ERR Command not allowed inside a transaction");
    }
    tracing::warn!(client = ctx.session.id, "SHUTDOWN requested by a client");
    ctx.action = Some(Action::Shutdown);
}

fn role(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.array(3);
    ctx.reply.bulk(b"master");
    ctx.reply.int(0);
    ctx.reply.array(0);
}

fn monitor(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.error("ERR MONITOR is not supported by minikv");
}

// ----- DEBUG -----

/// DEBUG SLEEP seconds | SET-ACTIVE-EXPIRE 0|1 | HELP. Redis leaves DEBUG disabled
/// unless `enable-debug-command` is set; minikv allows the two harmless subcommands
/// test suites use.
///
/// SLEEP differs on purpose: Redis blocks its whole event loop and then replies; we
/// reply +OK and stall only the calling connection, since there is no single loop to
/// block. A test that uses DEBUG SLEEP to hold other clients off will not see that
/// here.
fn debug(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = args.get(1);
    if is(sub, "sleep") && args.len() == 3 {
        let secs = strtod_prefix(args.get(2));
        let duration = if secs.is_finite() && secs > 0.0 {
            // Microsecond resolution, like Redis's `dtime * 1000000`.
            Duration::from_micros((secs * 1e6).min(u64::MAX as f64) as u64)
        } else {
            Duration::ZERO
        };
        ctx.reply.ok();
        ctx.action = Some(Action::Sleep(duration));
    } else if is(sub, "set-active-expire") && args.len() == 3 {
        let on = atoi(args.get(2)) != 0;
        ctx.server.config.live.active_expire.store(on, Ordering::Relaxed);
        ctx.reply.ok();
    } else if is(sub, "tracking-drop-invalidations") && args.len() == 3 {
        // minikv only, for tests: proves that a lost invalidation is noticed.
        match int_arg(args.get(2)) {
            Some(n) if n >= 0 => {
                ctx.server.keyspace.tracking.drop_next_invalidations(n as u64);
                ctx.reply.ok();
            }
            _ => ctx.reply.error(ERR_NOT_INTEGER),
        }
    } else if is(sub, "tracking-register-late") && args.len() == 3 {
        // minikv only, for tests: the race the tracking design avoids, to show it is caught.
        ctx.server.keyspace.tracking.set_register_late(atoi(args.get(2)) != 0);
        ctx.reply.ok();
    } else if is(sub, "help") && args.len() == 2 {
        reply_help(
            &mut ctx.reply,
            "DEBUG",
            &[
                "SET-ACTIVE-EXPIRE <0|1>",
                "    Setting it to 0 disables expiring keys in background when they are not",
                "    accessed (otherwise the Redis behavior). Setting it to 1 reenables back the",
                "    default.",
                "SLEEP <seconds>",
                "    Stop the server for <seconds>. Decimals allowed.",
                "TRACKING-DROP-INVALIDATIONS <count>",
                "    minikv only, for tests: drop the next <count> client-side caching",
                "    invalidations.",
                "TRACKING-REGISTER-LATE <0|1>",
                "    minikv only, for tests: remember tracked reads after the command's shard",
                "    locks are released (a race that loses invalidations).",
            ],
        );
    } else {
        let msg = format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try DEBUG HELP.",
            truncate_chars(&text(sub), 128)
        );
        ctx.reply.error(&msg);
    }
}

fn truncate_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// C's `strtod` as Redis uses it for DEBUG SLEEP: the longest prefix that is a number,
/// 0 when there is none ("abc" sleeps 0 seconds, "1.5s" sleeps 1.5).
fn strtod_prefix(arg: &[u8]) -> f64 {
    let s = String::from_utf8_lossy(arg);
    let s = s.trim_start();
    // A float literal is short; looking at more than 64 characters gains nothing.
    let head: String = s.chars().take(64).collect();
    let mut end = head.len();
    while end > 0 {
        if head.is_char_boundary(end) {
            if let Ok(v) = head[..end].parse::<f64>() {
                return v;
            }
        }
        end -= 1;
    }
    0.0
}

/// C's `atoi`: optional sign and leading digits, 0 when there are none.
fn atoi(arg: &[u8]) -> i64 {
    let s = String::from_utf8_lossy(arg);
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for d in digits.bytes().take_while(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add((d - b'0') as i64);
    }
    if neg {
        -v
    } else {
        v
    }
}

// ----- MEMORY -----

/// MEMORY USAGE key [SAMPLES count]: an estimate of the bytes the key costs, from our
/// own encodings (see `keyspace/value.rs`), not from the allocator. Like Redis, the
/// elements of an aggregate are sampled (5 by default, SAMPLES 0 = all) and the
/// average is multiplied out, so the answer is cheap on huge keys.
fn memory_usage(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut samples: usize = 5;
    let mut i = 3;
    while i < args.len() {
        if is(args.get(i), "samples") && i + 1 < args.len() {
            match int_arg(args.get(i + 1)) {
                None => return ctx.reply.error(ERR_NOT_INTEGER),
                Some(n) if n < 0 => return ctx.reply.error(ERR_SYNTAX),
                Some(0) => samples = usize::MAX,
                Some(n) => samples = usize::try_from(n).unwrap_or(usize::MAX),
            }
            i += 2;
        } else {
            return ctx.reply.error(ERR_SYNTAX);
        }
    }
    let key = args.get(2);
    let Some(loc) = ctx.keys.lookup(key) else {
        return ctx.reply.null_bulk();
    };
    let value = &ctx.keys.entry(loc).value;
    let bytes = key_overhead(key) + value_bytes(value, samples);
    ctx.reply.int(bytes as i64);
}

/// What a key costs before its value: its slot in the table (an `Entry` plus the key's
/// `CompactBytes`), the heap copy of a long key name, and about 8 bytes of hash index
/// per entry.
fn key_overhead(key: &[u8]) -> usize {
    std::mem::size_of::<crate::keyspace::table::Entry>() + std::mem::size_of::<CompactBytes>() + heap_len(key.len()) + 8
}

/// Heap bytes of a `CompactBytes` of `len` bytes (0 when stored inline).
fn heap_len(len: usize) -> usize {
    if len <= crate::keyspace::compact::INLINE_CAP {
        0
    } else {
        len
    }
}

/// Estimated bytes of a value beyond the 24 bytes of the `Value` itself (counted in
/// the entry), sampling at most `samples` elements of an aggregate.
fn value_bytes(value: &Value, samples: usize) -> usize {
    /// Average of `per_item` over the first `samples` items, times the item count.
    fn sampled<I>(items: impl Iterator<Item = I>, len: usize, samples: usize, per_item: impl Fn(I) -> usize) -> usize {
        let (mut seen, mut total) = (0usize, 0usize);
        for item in items.take(samples) {
            seen += 1;
            total += per_item(item);
        }
        // In u128 so that `total * len` cannot overflow; an empty aggregate costs 0.
        (total as u128 * len as u128).checked_div(seen as u128).map_or(0, |v| v as usize)
    }
    let cb = std::mem::size_of::<CompactBytes>();
    match value {
        Value::Str(crate::keyspace::Str::Int(_)) => 0,
        Value::Str(crate::keyspace::Str::Bytes(b)) => b.heap_bytes(),
        Value::List(l) => l.capacity() * cb + sampled(l.iter(), l.len(), samples, |b| b.heap_bytes()),
        Value::Hash(h) => {
            h.table_bytes() + sampled(h.iter(), h.len(), samples, |(f, v)| f.heap_bytes() + v.heap_bytes())
        }
        Value::Set(s) => s.table_bytes() + sampled(s.keys(), s.len(), samples, |m| m.heap_bytes()),
        Value::ZSet(z) => {
            let members = z.members();
            // Each member sits in the dict and again in a skiplist node: the member, its
            // score, the level-0 links and, for one node in four, higher levels.
            let node = cb + 8 + 16 + 16 / 3;
            members.table_bytes()
                + z.len() * node
                + sampled(members.keys(), members.len(), samples, |m| 2 * m.heap_bytes())
        }
    }
}

/// MEMORY PURGE: Redis asks jemalloc to return dirty pages; we use the system
/// allocator, whose equivalent is `malloc_trim`.
fn memory_purge(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory back to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
    ctx.reply.ok();
}

/// MEMORY MALLOC-STATS: what Redis answers when its allocator is not jemalloc.
fn memory_malloc_stats(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.verbatim(b"Stats not supported for the current allocator");
}

fn memory_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    reply_help(
        &mut ctx.reply,
        "MEMORY",
        &[
            "MALLOC-STATS",
            "    Return internal statistics report from the memory allocator.",
            "PURGE",
            "    Attempt to purge dirty pages for reclamation by the allocator.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Nested values are",
            "    sampled up to <count> times (default: 5, 0 means sample all).",
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtod_takes_the_longest_numeric_prefix() {
        assert_eq!(strtod_prefix(b"0.5"), 0.5);
        assert_eq!(strtod_prefix(b"1e-3"), 0.001);
        assert_eq!(strtod_prefix(b"  2.5s"), 2.5);
        assert_eq!(strtod_prefix(b"abc"), 0.0);
        assert_eq!(strtod_prefix(b""), 0.0);
        assert_eq!(strtod_prefix(b"-1"), -1.0);
        assert!(strtod_prefix(b"inf").is_infinite());
    }

    #[test]
    fn atoi_reads_leading_digits() {
        assert_eq!(atoi(b"1"), 1);
        assert_eq!(atoi(b"12abc"), 12);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atoi(b"-3"), -3);
        assert_eq!(atoi(b"99999999999999999999999"), i64::MAX);
    }

    #[test]
    fn categories_follow_redis_rules() {
        let t = table();
        let get = |name: &str| t.commands[t.find(name.as_bytes()).expect(name)];
        let names = |c: &Command| -> Vec<&str> {
            let cats = categories(c);
            CATEGORIES.iter().enumerate().filter(|(i, _)| cats & (1 << i) != 0).map(|(_, n)| *n).collect()
        };
        assert_eq!(names(get("get")), ["read", "string", "fast"]);
        assert_eq!(names(get("config|get")), ["admin", "slow", "dangerous"]);
        assert_eq!(names(get("client|kill")), ["admin", "slow", "dangerous", "connection"]);
        assert_eq!(names(get("client")), ["slow"]);
        assert_eq!(names(get("command")), ["slow", "connection"]);
        assert_eq!(names(get("lastsave")), ["admin", "fast", "dangerous"]);
    }

    #[test]
    fn flags_hide_dispatcher_bits_and_add_redis_ones() {
        let t = table();
        let shutdown = t.commands[t.find(b"shutdown").expect("shutdown")];
        let flags = info_flags(shutdown);
        let names: Vec<&str> = FLAG_NAMES.iter().filter(|(b, _)| flags & b != 0).map(|(_, n)| *n).collect();
        assert_eq!(names, ["admin", "noscript", "loading", "stale", "no_multi", "allow_busy"]);
    }

    #[test]
    fn sampling_scales_the_average() {
        let mut list = crate::keyspace::ListValue::new();
        for i in 0..100 {
            list.push_back(CompactBytes::new(&vec![b'x'; 30 + (i % 2)]));
        }
        let v = Value::List(Box::new(list));
        let all = value_bytes(&v, usize::MAX);
        let five = value_bytes(&v, 5);
        // 50 elements of 30 bytes, 50 of 31, plus the ring buffer.
        let ring = match &v {
            Value::List(l) => l.capacity() * std::mem::size_of::<CompactBytes>(),
            _ => unreachable!(),
        };
        assert_eq!(all, ring + 50 * 30 + 50 * 31);
        assert!(five.abs_diff(all) <= 100);
    }

    #[test]
    fn client_names_must_be_printable_words() {
        assert!(validate_client_name(b"worker-1").is_ok());
        assert!(validate_client_name(b"").is_ok());
        assert!(validate_client_name(b"a b").is_err());
        assert!(validate_client_name(b"a\nb").is_err());
        assert!(validate_client_name(&[0xc3, 0xa9]).is_err());
    }
}
