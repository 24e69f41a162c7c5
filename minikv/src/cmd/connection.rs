//! Connection commands: PING, ECHO, SELECT, HELLO, AUTH, QUIT, RESET, CLIENT.

use std::sync::atomic::Ordering;

use super::{cmd, container, flag, int_arg, is, Action, Command, Ctx, KeySpec, ERR_NOT_INTEGER};
use crate::resp::{Args, Protocol};

const F: u32 = flag::FAST;
const CONN: u32 = flag::FAST | flag::LOADING | flag::STALE;

// Flags, arity and summaries are redis-server 7.0's; `NOT_QUEUED` and `PUBSUB_CONTEXT`
// are dispatcher bits (see `cmd::flag`).
#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("ping", -1, F | flag::PUBSUB_CONTEXT, KeySpec::None, ping, "connection", "Ping the server", "1.0.0"),
    cmd("echo", 2, CONN, KeySpec::None, echo, "connection", "Echo the given string", "1.0.0"),
    cmd("select", 2, CONN, KeySpec::None, select, "connection", "Change the selected database for the current connection", "1.0.0"),
    cmd("hello", -1, CONN | flag::NO_AUTH | flag::NOSCRIPT, KeySpec::None, hello, "connection", "Handshake with Redis", "6.0.0"),
    cmd("auth", -2, CONN | flag::NO_AUTH | flag::NOSCRIPT, KeySpec::None, auth, "connection", "Authenticate to the server", "1.0.0"),
    cmd("quit", -1, CONN | flag::NO_AUTH | flag::NOSCRIPT | flag::NOT_QUEUED | flag::PUBSUB_CONTEXT, KeySpec::None, quit, "connection", "Close the connection", "1.0.0"),
    cmd("reset", 1, CONN | flag::NO_AUTH | flag::NOSCRIPT | flag::NOT_QUEUED | flag::PUBSUB_CONTEXT, KeySpec::None, reset, "connection", "Reset the connection", "6.2.0"),
    container("client", "connection", "A container for client connection commands", "2.4.0", crate::cmd::server::CLIENT_SUBCOMMANDS),
];

fn ping(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 2 {
        return ctx.reply.error("ERR wrong number of arguments for 'ping' command");
    }
    if ctx.session.in_pubsub_context() {
        // In RESP2 subscribed mode PING answers as a pub/sub message.
        ctx.reply.array(2);
        ctx.reply.bulk(b"pong");
        ctx.reply.bulk(if args.len() == 2 { args.get(1) } else { b"" });
    } else if args.len() == 2 {
        ctx.reply.bulk(args.get(1));
    } else {
        ctx.reply.simple("PONG");
    }
}

fn echo(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ctx.reply.bulk(args.get(1));
}

fn select(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(db) = int_arg(args.get(1)) else {
        return ctx.reply.error(ERR_NOT_INTEGER);
    };
    if db < 0 || db as usize >= ctx.server.keyspace.databases() {
        return ctx.reply.error("ERR DB index is out of range");
    }
    ctx.session.select(db as usize);
    ctx.keys.db = db as usize;
    ctx.reply.ok();
}

/// Checks a password; `None` username means the default user.
fn password_ok(ctx: &Ctx<'_>, user: Option<&[u8]>, pass: &[u8]) -> bool {
    let required = ctx.server.config.with_settings(|s| s.requirepass.clone());
    let user_ok = user.is_none_or(|u| u == b"default");
    match required {
        Some(p) => user_ok && p.as_bytes() == pass,
        // Without requirepass Redis's default user has no password ("nopass"): any
        // password is accepted for it.
        None => user_ok,
    }
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn auth(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 3 {
        return ctx.reply.error(super::ERR_SYNTAX);
    }
    let required = ctx.server.config.live.auth_required.load(Ordering::Relaxed);
    if args.len() == 2 && !required {
        return ctx.reply.error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    }
    let (user, pass) = if args.len() == 3 { (Some(args.get(1)), args.get(2)) } else { (None, args.get(1)) };
    if password_ok(ctx, user, pass) {
        ctx.session.authenticated = true;
        ctx.reply.ok();
    } else {
        ctx.reply.error(WRONGPASS);
    }
}

fn hello(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut proto = ctx.session.proto;
    let mut i = 1;
    if args.len() >= 2 {
        match int_arg(args.get(1)) {
            Some(2) => proto = Protocol::Resp2,
            Some(3) => proto = Protocol::Resp3,
            Some(_) => return ctx.reply.error("NOPROTO unsupported protocol version"),
            None => return ctx.reply.error("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    let mut new_name = None;
    while i < args.len() {
        let more = args.len() - i - 1;
        if is(args.get(i), "auth") && more >= 2 {
            let (user, pass) = (args.get(i + 1), args.get(i + 2));
            if !password_ok(ctx, Some(user), pass) {
                return ctx.reply.error(WRONGPASS);
            }
            ctx.session.authenticated = true;
            i += 3;
        } else if is(args.get(i), "setname") && more >= 1 {
            let name = args.get(i + 1);
            if let Err(e) = super::server::validate_client_name(name) {
                return ctx.reply.error(e);
            }
            new_name = Some(name.to_vec());
            i += 2;
        } else {
            return ctx
                .reply
                .error(&format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(args.get(i))));
        }
    }
    if !ctx.session.authenticated && ctx.server.config.live.auth_required.load(Ordering::Relaxed) {
        return ctx.reply.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(name) = new_name {
        *ctx.session.info.name.lock() = if name.is_empty() { None } else { Some(name) };
    }
    ctx.session.set_proto(proto);
    ctx.reply.proto = proto;
    let r = &mut ctx.reply;
    r.map(7);
    r.bulk(b"server");
    r.bulk(b"redis");
    r.bulk(b"version");
    r.bulk(crate::REDIS_VERSION.as_bytes());
    r.bulk(b"proto");
    r.int(if proto == Protocol::Resp3 { 3 } else { 2 });
    r.bulk(b"id");
    r.int(ctx.session.id as i64);
    r.bulk(b"mode");
    r.bulk(b"standalone");
    r.bulk(b"role");
    r.bulk(b"master");
    r.bulk(b"modules");
    r.array(0);
}

fn quit(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.reply.ok();
    ctx.action = Some(Action::Close);
}

fn reset(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let server = ctx.server;
    if ctx.session.multi.take().is_some() {
        ctx.session.info.in_multi.store(false, Ordering::Relaxed);
    }
    super::transactions::unwatch_all(server, ctx.session);
    crate::cmd::pubsub::unsubscribe_everything(server, ctx.session);
    crate::tracking::disable(server, ctx.session);
    ctx.session.select(0);
    ctx.keys.db = 0;
    ctx.session.set_proto(Protocol::Resp2);
    ctx.reply.proto = Protocol::Resp2;
    *ctx.session.info.name.lock() = None;
    ctx.session.authenticated = !server.config.live.auth_required.load(Ordering::Relaxed);
    ctx.reply.simple("RESET");
}
