//! Server commands: INFO, CONFIG, CLIENT, COMMAND, ...

use super::{cmd, container, flag, Command, Ctx, KeySpec};
use crate::resp::Args;

const ADM: u32 = flag::ADMIN | flag::NOSCRIPT | flag::LOADING | flag::STALE;

pub static COMMANDS: &[Command] = &[
    cmd(
        "info",
        -1,
        flag::LOADING | flag::STALE,
        KeySpec::None,
        info,
        "server",
        "Returns information and statistics about the server.",
        "1.0.0",
    ),
    container(
        "config",
        "server",
        "A container for server configuration commands.",
        "2.0.0",
        CONFIG_SUBCOMMANDS,
    ),
];

static CONFIG_SUBCOMMANDS: &[Command] = &[cmd(
    "config|get",
    -3,
    ADM,
    KeySpec::None,
    config_get,
    "server",
    "Returns the effective values of configuration parameters.",
    "2.0.0",
)];

pub static CLIENT_SUBCOMMANDS: &[Command] = &[];

/// CLIENT SETNAME rules: no spaces, newlines or other special characters.
pub fn validate_client_name(name: &[u8]) -> Result<(), &'static str> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err("ERR Client names cannot contain spaces, newlines or special characters.");
    }
    Ok(())
}

fn info(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sections: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let text = crate::info::info_text(ctx.server, &sections);
    ctx.reply.verbatim(text.as_bytes());
}

fn config_get(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut names: Vec<&'static str> = Vec::new();
    for pattern in args.iter().skip(2) {
        for n in ctx.server.config.matching(pattern) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    ctx.reply.map(names.len());
    for n in names {
        ctx.reply.bulk(n.as_bytes());
        let v = ctx.server.config.get(n).unwrap_or_default();
        ctx.reply.bulk(v.as_bytes());
    }
}
