//! Pub/sub commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB.
//!
//! Confirmations (`subscribe`, `unsubscribe`, ...) are written as push messages: plain
//! arrays in RESP2, `>` pushes in RESP3. Messages themselves are delivered by the
//! connection loop from the subscriber's queue; see [`crate::pubsub`].

use std::sync::atomic::Ordering;

use super::{cmd, container, flag, Command, Ctx, KeySpec};
use crate::pubsub::Subscriber;
use crate::resp::Args;
use crate::server::Server;
use crate::session::{Session, Subscriptions};

const PS: u32 = flag::PUBSUB | flag::LOADING | flag::STALE;
/// (P)SUBSCRIBE and (P)UNSUBSCRIBE, the commands a subscribed RESP2 client may run.
const CTX: u32 = PS | flag::NOSCRIPT | flag::PUBSUB_CONTEXT;

// Flags, arity and summaries are redis-server 7.0's.
#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("subscribe", -2, CTX, KeySpec::None, subscribe, "pubsub", "Listen for messages published to the given channels", "2.0.0"),
    cmd("unsubscribe", -1, CTX, KeySpec::None, unsubscribe, "pubsub", "Stop listening for messages posted to the given channels", "2.0.0"),
    cmd("psubscribe", -2, CTX, KeySpec::None, psubscribe, "pubsub", "Listen for messages published to channels matching the given patterns", "2.0.0"),
    cmd("punsubscribe", -1, CTX, KeySpec::None, punsubscribe, "pubsub", "Stop listening for messages posted to channels matching the given patterns", "2.0.0"),
    cmd("publish", 3, PS | flag::FAST, KeySpec::None, publish, "pubsub", "Post a message to a channel", "2.0.0"),
    container("pubsub", "pubsub", "A container for Pub/Sub commands", "2.8.0", PUBSUB_SUBCOMMANDS),
];

#[rustfmt::skip]
static PUBSUB_SUBCOMMANDS: &[Command] = &[
    cmd("pubsub|channels", -2, PS, KeySpec::None, pubsub_channels, "pubsub", "List active channels", "2.8.0"),
    cmd("pubsub|numsub", -2, PS, KeySpec::None, pubsub_numsub, "pubsub", "Get the count of subscribers for channels", "2.8.0"),
    cmd("pubsub|numpat", 2, PS, KeySpec::None, pubsub_numpat, "pubsub", "Get the count of unique patterns pattern subscriptions", "2.8.0"),
    cmd("pubsub|shardchannels", -2, PS, KeySpec::None, pubsub_shardchannels, "pubsub", "List active shard channels", "7.0.0"),
    cmd("pubsub|shardnumsub", -2, PS, KeySpec::None, pubsub_shardnumsub, "pubsub", "Get the count of subscribers for shard channels", "7.0.0"),
    cmd("pubsub|help", 2, flag::LOADING | flag::STALE, KeySpec::None, pubsub_help, "pubsub", "Show helpful text about the different subcommands", "6.2.0"),
];

/// The client's subscription state, created on first use. Messages arrive in the
/// session's outbox, which the connection loop drains.
fn subs(session: &mut Session) -> &mut Subscriptions {
    let info = session.info.clone();
    session.subs.get_or_insert_with(|| Subscriptions {
        subscriber: Subscriber::new(info),
        channels: Default::default(),
        patterns: Default::default(),
    })
}

fn confirm(ctx: &mut Ctx<'_>, kind: &[u8], name: Option<&[u8]>, count: usize) {
    ctx.reply.push(3);
    ctx.reply.bulk(kind);
    match name {
        Some(n) => ctx.reply.bulk(n),
        None => ctx.reply.null_bulk(),
    }
    ctx.reply.int(count as i64);
}

fn update_counts(session: &Session) {
    if let Some(s) = &session.subs {
        session.info.subscriptions.store(s.channels.len(), Ordering::Relaxed);
        session.info.pattern_subscriptions.store(s.patterns.len(), Ordering::Relaxed);
    }
}

fn subscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // Redis 7.0 allows SUBSCRIBE inside MULTI (it only refuses it to scripts).
    for ch in args.iter().skip(1) {
        let server = ctx.server;
        let s = subs(ctx.session);
        if server.pubsub.subscribe(ch, &s.subscriber) {
            s.channels.insert(ch.to_vec());
        }
        let count = s.count();
        confirm(ctx, b"subscribe", Some(ch), count);
    }
    update_counts(ctx.session);
}

fn psubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    for pat in args.iter().skip(1) {
        let server = ctx.server;
        let s = subs(ctx.session);
        if server.pubsub.psubscribe(pat, &s.subscriber) {
            s.patterns.insert(pat.to_vec());
        }
        let count = s.count();
        confirm(ctx, b"psubscribe", Some(pat), count);
    }
    update_counts(ctx.session);
}

fn unsubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let server = ctx.server;
    let names: Vec<Vec<u8>> = if args.len() > 1 {
        args.iter().skip(1).map(|a| a.to_vec()).collect()
    } else {
        ctx.session.subs.as_ref().map(|s| s.channels.iter().cloned().collect()).unwrap_or_default()
    };
    if names.is_empty() {
        let count = ctx.session.subs.as_ref().map_or(0, |s| s.count());
        return confirm(ctx, b"unsubscribe", None, count);
    }
    for ch in names {
        let count = match &mut ctx.session.subs {
            Some(s) => {
                if s.channels.remove(&ch) {
                    server.pubsub.unsubscribe(&ch, &s.subscriber);
                }
                s.count()
            }
            None => 0,
        };
        confirm(ctx, b"unsubscribe", Some(&ch), count);
    }
    update_counts(ctx.session);
}

fn punsubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let server = ctx.server;
    let names: Vec<Vec<u8>> = if args.len() > 1 {
        args.iter().skip(1).map(|a| a.to_vec()).collect()
    } else {
        ctx.session.subs.as_ref().map(|s| s.patterns.iter().cloned().collect()).unwrap_or_default()
    };
    if names.is_empty() {
        let count = ctx.session.subs.as_ref().map_or(0, |s| s.count());
        return confirm(ctx, b"punsubscribe", None, count);
    }
    for pat in names {
        let count = match &mut ctx.session.subs {
            Some(s) => {
                if s.patterns.remove(&pat) {
                    server.pubsub.punsubscribe(&pat, &s.subscriber);
                }
                s.count()
            }
            None => 0,
        };
        confirm(ctx, b"punsubscribe", Some(&pat), count);
    }
    update_counts(ctx.session);
}

/// Drops every subscription (RESET, disconnect).
pub fn unsubscribe_everything(server: &Server, session: &mut Session) {
    if let Some(s) = session.subs.take() {
        for ch in &s.channels {
            server.pubsub.unsubscribe(ch, &s.subscriber);
        }
        for p in &s.patterns {
            server.pubsub.punsubscribe(p, &s.subscriber);
        }
        session.info.subscriptions.store(0, Ordering::Relaxed);
        session.info.pattern_subscriptions.store(0, Ordering::Relaxed);
    }
}

fn publish(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let limit = ctx.server.config.with_settings(|s| s.pubsub_output_limit);
    let (receivers, dropped) = ctx.server.pubsub.publish(args.get(1), args.get(2), limit, ctx.keys.now_ms);
    let stats = &ctx.server.stats;
    stats.pubsub_messages.fetch_add(1, Ordering::Relaxed);
    if dropped > 0 {
        stats.output_limit_disconnections.fetch_add(dropped as u64, Ordering::Relaxed);
    }
    ctx.reply.int(receivers as i64);
}

/// Redis's `addReplySubcommandSyntaxError`, for a subcommand's own argument check.
fn subcommand_syntax_error(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let msg = format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
        String::from_utf8_lossy(&args.get(1)[..args.get(1).len().min(128)]),
        String::from_utf8_lossy(args.get(0)).to_uppercase()
    );
    ctx.reply.error(&msg);
}

fn pubsub_channels(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 3 {
        return subcommand_syntax_error(ctx, args);
    }
    let pattern = (args.len() == 3).then(|| args.get(2));
    let chans = ctx.server.pubsub.channels(pattern);
    ctx.reply.array(chans.len());
    for c in chans {
        ctx.reply.bulk(&c);
    }
}

fn pubsub_numsub(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // A flat array of channel, count pairs, in RESP3 too (Redis 7.0 does not use a
    // map here, and redis-py's parser expects the array).
    ctx.reply.array((args.len() - 2) * 2);
    for ch in args.iter().skip(2) {
        ctx.reply.bulk(ch);
        let n = ctx.server.pubsub.numsub(ch);
        ctx.reply.int(n as i64);
    }
}

/// Sharded pub/sub (SSUBSCRIBE) is not supported, so there are never shard channels:
/// these answer truthfully with none.
fn pubsub_shardchannels(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 3 {
        return subcommand_syntax_error(ctx, args);
    }
    ctx.reply.array(0);
}

fn pubsub_shardnumsub(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ctx.reply.array((args.len() - 2) * 2);
    for ch in args.iter().skip(2) {
        ctx.reply.bulk(ch);
        ctx.reply.int(0);
    }
}

fn pubsub_numpat(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let n = ctx.server.pubsub.numpat();
    ctx.reply.int(n as i64);
}

fn pubsub_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let lines = [
        "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CHANNELS [<pattern>]",
        "    Return the currently active channels matching a <pattern> (default: '*').",
        "NUMPAT",
        "    Return number of subscriptions to patterns.",
        "NUMSUB [<channel> ...]",
        "    Return the number of subscribers for the specified channels, excluding",
        "    pattern subscriptions(default: no channels).",
        "SHARDCHANNELS [<pattern>]",
        "    Return the currently active shard level channels matching a <pattern> (default: '*').",
        "SHARDNUMSUB [<shardchannel> ...]",
        "    Return the number of subscribers for the specified shard level channel(s)",
        "HELP",
        "    Prints this help.",
    ];
    ctx.reply.array(lines.len());
    for l in lines {
        ctx.reply.simple(l);
    }
}
