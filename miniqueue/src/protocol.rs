//! The beanstalkd wire protocol: framing a byte stream into commands, and parsing each
//! command line exactly as beanstalkd 1.12 does, quirks included.
//!
//! beanstalkd is a line protocol: a command is one line ending in `\r\n`, and `put` is
//! followed by a body of the announced size plus `\r\n`. Compatibility here means
//! byte-for-byte the same replies for the same input, so the rules below follow
//! beanstalkd's `prot.c`, not a cleaner reading of `protocol.txt`:
//!
//! - A command line is looked for only in the first [`LINE_BUF_SIZE`] (224) bytes of
//!   pending input, and only at the *first* `\r` in them: a stray `\r` not followed by
//!   `\n` hides every later line end until the window fills. A window of 224 bytes with
//!   no line end switches to discard mode, which throws input away 224 bytes at a time
//!   until a line end turns up, then answers `BAD_FORMAT`.
//! - Commands are recognised by prefix (`strncmp`), in beanstalkd's order, so
//!   `reserveX` is `reserve` with trailing garbage (`BAD_FORMAT`) and `quitX` quits.
//! - Numbers are read like `read_u32`/`read_u64`: spaces skipped, a digit required,
//!   overflow rejected. `reserve-with-timeout` uses `strtol` and `kick` uses `strtoul`,
//!   with their leniency (trailing garbage and signs accepted).
//! - A `put` whose size is over the limit has its body (and CRLF) discarded before
//!   `JOB_TOO_BIG` is sent; a body not ending in `\r\n` gets `EXPECTED_CRLF`.
//!
//! The extension commands of miniqueue (`tube-policy`, `fail`, `purge-dead`,
//! `put-unique`) are tried only after every beanstalkd prefix fails, so nothing a
//! beanstalkd client sends is read differently.
//!
//! This module does no I/O: [`Framer::next_frame`] takes bytes from a buffer and says
//! what arrived. It is tested against arbitrary bytes in `tests` (proptest).

use bytes::{Buf, Bytes, BytesMut};

/// beanstalkd's command buffer: the longest command line, CRLF included, is 223 bytes.
pub const LINE_BUF_SIZE: usize = 224;
/// Tube names are 1..=200 bytes (beanstalkd's `MAX_TUBE_NAME_LEN - 1`).
pub const MAX_TUBE_NAME: usize = 200;
/// The longest reason `fail` accepts (it must fit a command line anyway).
pub const MAX_FAIL_REASON: usize = 200;
/// The longest key `put-unique` accepts.
pub const MAX_UNIQUE_KEY: usize = 200;
/// The characters a tube name (and a unique key) may contain.
const NAME_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()";
/// Seconds to nanoseconds, for durations read off the wire.
const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The replies that carry no data, byte for byte as beanstalkd sends them.
pub mod msg {
    pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
    pub const DEADLINE_SOON: &[u8] = b"DEADLINE_SOON\r\n";
    pub const TIMED_OUT: &[u8] = b"TIMED_OUT\r\n";
    pub const DELETED: &[u8] = b"DELETED\r\n";
    pub const RELEASED: &[u8] = b"RELEASED\r\n";
    pub const BURIED: &[u8] = b"BURIED\r\n";
    pub const KICKED: &[u8] = b"KICKED\r\n";
    pub const TOUCHED: &[u8] = b"TOUCHED\r\n";
    pub const NOT_IGNORED: &[u8] = b"NOT_IGNORED\r\n";
    pub const PAUSED: &[u8] = b"PAUSED\r\n";
    pub const OUT_OF_MEMORY: &[u8] = b"OUT_OF_MEMORY\r\n";
    pub const INTERNAL_ERROR: &[u8] = b"INTERNAL_ERROR\r\n";
    pub const DRAINING: &[u8] = b"DRAINING\r\n";
    pub const BAD_FORMAT: &[u8] = b"BAD_FORMAT\r\n";
    pub const UNKNOWN_COMMAND: &[u8] = b"UNKNOWN_COMMAND\r\n";
    pub const EXPECTED_CRLF: &[u8] = b"EXPECTED_CRLF\r\n";
    pub const JOB_TOO_BIG: &[u8] = b"JOB_TOO_BIG\r\n";
    /// Extension: `tube-policy` accepted.
    pub const POLICY_SET: &[u8] = b"POLICY_SET\r\n";
    /// Extension: `fail` moved the job to the dead-letter state.
    pub const DEAD: &[u8] = b"DEAD\r\n";
}

/// Which backoff a `tube-policy` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    None,
    Exponential,
    Polynomial,
}

/// The header of a `put` (or `put-unique`) whose body follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutHeader {
    pub pri: u32,
    /// Nanoseconds.
    pub delay: i64,
    /// Nanoseconds, already raised to beanstalkd's minimum of one second.
    pub ttr: i64,
    /// Body bytes, not counting the trailing CRLF.
    pub size: usize,
    /// `put-unique`: the key and how long it stays taken, in nanoseconds.
    pub unique: Option<(String, i64)>,
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Put(PutHeader),
    Use(String),
    /// `reserve` (None) or `reserve-with-timeout` (Some(seconds); negative waits forever,
    /// as in beanstalkd).
    Reserve(Option<i32>),
    ReserveJob(u64),
    Delete(u64),
    Release {
        id: u64,
        pri: u32,
        delay: i64,
    },
    Bury {
        id: u64,
        pri: u32,
    },
    Touch(u64),
    Watch(String),
    Ignore(String),
    Peek(u64),
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Kick(u32),
    KickJob(u64),
    StatsJob(u64),
    StatsTube(String),
    Stats,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube {
        tube: String,
        delay: i64,
    },
    Quit,
    // ---- extensions ----
    TubePolicy {
        tube: String,
        max_attempts: u32,
        backoff: BackoffKind,
        base_ms: u64,
        cap_ms: u64,
    },
    Fail {
        id: u64,
        reason: String,
    },
    PurgeDead(String),
}

/// The beanstalkd commands that `stats` counts (`cmd-*`), in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Peek,
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Reserve,
    ReserveWithTimeout,
    Delete,
    Release,
    Use,
    Watch,
    Ignore,
    Bury,
    Kick,
    Touch,
    Stats,
    StatsJob,
    StatsTube,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube,
    /// Counted nowhere in `stats`, but kept so every command has an op.
    Other,
}

/// How many [`Op`] values there are.
pub const OP_COUNT: usize = Op::Other as usize + 1;

impl Command {
    /// The `stats` counter this command bumps.
    pub fn op(&self) -> Op {
        match self {
            Command::Put(h) if h.unique.is_none() => Op::Put,
            Command::Put(_) => Op::Other,
            Command::Use(_) => Op::Use,
            Command::Reserve(None) => Op::Reserve,
            Command::Reserve(Some(_)) => Op::ReserveWithTimeout,
            Command::Delete(_) => Op::Delete,
            Command::Release { .. } => Op::Release,
            Command::Bury { .. } => Op::Bury,
            Command::Touch(_) => Op::Touch,
            Command::Watch(_) => Op::Watch,
            Command::Ignore(_) => Op::Ignore,
            Command::Peek(_) => Op::Peek,
            Command::PeekReady => Op::PeekReady,
            Command::PeekDelayed => Op::PeekDelayed,
            Command::PeekBuried => Op::PeekBuried,
            Command::Kick(_) => Op::Kick,
            Command::StatsJob(_) => Op::StatsJob,
            Command::StatsTube(_) => Op::StatsTube,
            Command::Stats => Op::Stats,
            Command::ListTubes => Op::ListTubes,
            Command::ListTubeUsed => Op::ListTubeUsed,
            Command::ListTubesWatched => Op::ListTubesWatched,
            Command::PauseTube { .. } => Op::PauseTube,
            Command::ReserveJob(_)
            | Command::KickJob(_)
            | Command::Quit
            | Command::TubePolicy { .. }
            | Command::Fail { .. }
            | Command::PurgeDead(_) => Op::Other,
        }
    }
}

/// What one complete command line turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Command(Command),
    /// A reply to send without touching the queue (`BAD_FORMAT`, `UNKNOWN_COMMAND`).
    /// `counted` names the op beanstalkd counts before failing (only `put` does).
    Error {
        reply: &'static [u8],
        counted: Option<Op>,
    },
}

/// What arrived on a connection, as far as the bytes so far tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Any command but `put` and `put-unique`.
    Command(Command),
    /// A `put` line whose numbers parsed: beanstalkd counts the command (`cmd-put`) at
    /// this point, and unless the size is over the limit it also marks the connection a
    /// producer and gives the job its id, before the body arrives. So a body that then
    /// fails `EXPECTED_CRLF` has used up an id.
    PutLine { unique: bool, too_big: bool },
    /// A complete `put` or `put-unique`: its header and its body (CRLF stripped).
    Job(PutHeader, Bytes),
    /// A reply decided by the framing and parsing alone. `counted` is the `stats`
    /// counter beanstalkd bumps anyway (a `put` that fails after its numbers parsed).
    Reply { reply: &'static [u8], counted: Option<Op> },
}

/// Where the framer is in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReadState {
    /// Looking for a command line.
    Command,
    /// A line overflowed the buffer; discard up to the next line end, then `BAD_FORMAT`.
    EndLine,
    /// A `put` header arrived; waiting for `size + 2` body bytes.
    Body(PutHeader),
    /// Throwing away this many bytes (an oversized body), then `JOB_TOO_BIG`.
    Discard { remaining: u64 },
}

/// Splits a connection's input into frames, one call per frame.
#[derive(Debug)]
pub struct Framer {
    state: ReadState,
    /// `-z`: the largest body a `put` may announce.
    max_job_size: usize,
}

impl Framer {
    pub fn new(max_job_size: usize) -> Self {
        Framer { state: ReadState::Command, max_job_size }
    }

    /// Takes the next frame off the front of `buf`, or returns `None` when more bytes are
    /// needed. May consume bytes and still return `None` (a body still arriving, or a
    /// discard in progress).
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            match &mut self.state {
                ReadState::Command => match find_line(buf) {
                    LineScan::Line(len) => {
                        let line = buf.split_to(len + 2);
                        match parse_line(&line[..len], self.max_job_size) {
                            LineOutcome::Parsed(Parsed::Command(Command::Put(header))) => {
                                let unique = header.unique.is_some();
                                self.state = ReadState::Body(header);
                                return Some(Frame::PutLine { unique, too_big: false });
                            }
                            LineOutcome::Parsed(Parsed::Command(command)) => return Some(Frame::Command(command)),
                            LineOutcome::Parsed(Parsed::Error { reply, counted }) => {
                                return Some(Frame::Reply { reply, counted })
                            }
                            LineOutcome::TooBig { body_bytes, unique } => {
                                self.state = ReadState::Discard { remaining: body_bytes + 2 };
                                return Some(Frame::PutLine { unique, too_big: true });
                            }
                        }
                    }
                    LineScan::Overflow => {
                        buf.advance(LINE_BUF_SIZE);
                        self.state = ReadState::EndLine;
                    }
                    LineScan::Incomplete => return None,
                },
                ReadState::EndLine => match find_line(buf) {
                    LineScan::Line(len) => {
                        buf.advance(len + 2);
                        self.state = ReadState::Command;
                        return Some(Frame::Reply { reply: msg::BAD_FORMAT, counted: None });
                    }
                    LineScan::Overflow => buf.advance(LINE_BUF_SIZE),
                    LineScan::Incomplete => return None,
                },
                ReadState::Body(header) => {
                    let need = header.size + 2;
                    if buf.len() < need {
                        return None;
                    }
                    let ReadState::Body(header) = std::mem::replace(&mut self.state, ReadState::Command) else {
                        unreachable!("matched Body above");
                    };
                    let mut body = buf.split_to(need);
                    if &body[header.size..] != b"\r\n" {
                        return Some(Frame::Reply { reply: msg::EXPECTED_CRLF, counted: None });
                    }
                    body.truncate(header.size);
                    return Some(Frame::Job(header, body.freeze()));
                }
                ReadState::Discard { remaining } => {
                    let take = (*remaining).min(buf.len() as u64);
                    buf.advance(take as usize);
                    *remaining -= take;
                    if *remaining > 0 {
                        return None;
                    }
                    self.state = ReadState::Command;
                    return Some(Frame::Reply { reply: msg::JOB_TOO_BIG, counted: None });
                }
            }
        }
    }

    /// True while a `put` body is awaited or an oversized one is being thrown away.
    pub fn mid_body(&self) -> bool {
        matches!(self.state, ReadState::Body(_) | ReadState::Discard { .. })
    }
}

/// The result of looking for a line end.
enum LineScan {
    /// A line of this many bytes (CRLF not counted) is at the front.
    Line(usize),
    /// The window is full and holds no line end.
    Overflow,
    /// Not enough bytes yet.
    Incomplete,
}

/// beanstalkd's `scan_line_end` over its 224-byte command buffer.
fn find_line(buf: &[u8]) -> LineScan {
    let window = &buf[..buf.len().min(LINE_BUF_SIZE)];
    if window.len() >= 2 {
        // memchr over size - 1 bytes, and only the first '\r' counts.
        if let Some(i) = window[..window.len() - 1].iter().position(|&b| b == b'\r') {
            if window[i + 1] == b'\n' {
                return LineScan::Line(i);
            }
        }
    }
    if window.len() == LINE_BUF_SIZE {
        LineScan::Overflow
    } else {
        LineScan::Incomplete
    }
}

/// A line's meaning, plus the oversized-put case that needs the framer's help.
#[derive(Debug)]
enum LineOutcome {
    Parsed(Parsed),
    /// `put` with a size over the limit: discard `body_bytes + 2` bytes, then `JOB_TOO_BIG`.
    TooBig {
        body_bytes: u64,
        unique: bool,
    },
}

/// Parses one command line (without its CRLF). Public for the property tests and for
/// callers that already have lines.
pub fn parse_command(line: &[u8], max_job_size: usize) -> Parsed {
    match parse_line(line, max_job_size) {
        LineOutcome::Parsed(parsed) => parsed,
        LineOutcome::TooBig { .. } => Parsed::Error { reply: msg::JOB_TOO_BIG, counted: Some(Op::Put) },
    }
}

fn bad() -> LineOutcome {
    LineOutcome::Parsed(Parsed::Error { reply: msg::BAD_FORMAT, counted: None })
}

fn ok(command: Command) -> LineOutcome {
    LineOutcome::Parsed(Parsed::Command(command))
}

fn parse_line(line: &[u8], max_job_size: usize) -> LineOutcome {
    // "check for possible maliciousness": an embedded NUL.
    if line.contains(&0) {
        return bad();
    }
    let rest = |prefix: &[u8]| line.strip_prefix(prefix);
    // The order is beanstalkd's `which_cmd`: a longer command must be tried before any
    // command that is its prefix.
    if let Some(args) = rest(b"put ") {
        return parse_put(args, max_job_size, None);
    }
    if let Some(args) = rest(b"peek ") {
        return read_u64_all(args).map_or_else(bad, |id| ok(Command::Peek(id)));
    }
    if line.starts_with(b"peek-ready") {
        return exact(line, b"peek-ready", Command::PeekReady);
    }
    if line.starts_with(b"peek-delayed") {
        return exact(line, b"peek-delayed", Command::PeekDelayed);
    }
    if line.starts_with(b"peek-buried") {
        return exact(line, b"peek-buried", Command::PeekBuried);
    }
    if let Some(args) = rest(b"reserve-with-timeout ") {
        return match strtol(args) {
            Some(seconds) => ok(Command::Reserve(Some(seconds as i32))),
            None => bad(),
        };
    }
    if let Some(args) = rest(b"reserve-job ") {
        return read_u64_all(args).map_or_else(bad, |id| ok(Command::ReserveJob(id)));
    }
    if line.starts_with(b"reserve") {
        return exact(line, b"reserve", Command::Reserve(None));
    }
    if let Some(args) = rest(b"delete ") {
        return read_u64_all(args).map_or_else(bad, |id| ok(Command::Delete(id)));
    }
    if let Some(args) = rest(b"release ") {
        let parsed = (|| {
            let (id, args) = read_u64(args)?;
            let (pri, args) = read_u32(args)?;
            let delay = read_duration_all(args)?;
            Some(Command::Release { id, pri, delay })
        })();
        return parsed.map_or_else(bad, ok);
    }
    if let Some(args) = rest(b"bury ") {
        let parsed = (|| {
            let (id, args) = read_u64(args)?;
            let pri = read_u32_all(args)?;
            Some(Command::Bury { id, pri })
        })();
        return parsed.map_or_else(bad, ok);
    }
    if let Some(args) = rest(b"kick ") {
        return strtoul(args).map_or_else(bad, |count| ok(Command::Kick(count as u32)));
    }
    if let Some(args) = rest(b"kick-job ") {
        return read_u64_all(args).map_or_else(bad, |id| ok(Command::KickJob(id)));
    }
    if let Some(args) = rest(b"touch ") {
        return read_u64_all(args).map_or_else(bad, |id| ok(Command::Touch(id)));
    }
    if let Some(args) = rest(b"stats-job ") {
        return read_u64_all(args).map_or_else(bad, |id| ok(Command::StatsJob(id)));
    }
    if let Some(args) = rest(b"stats-tube ") {
        return valid_tube(args).map_or_else(bad, |name| ok(Command::StatsTube(name)));
    }
    if line.starts_with(b"stats") {
        return exact(line, b"stats", Command::Stats);
    }
    if let Some(args) = rest(b"use ") {
        return valid_tube(args).map_or_else(bad, |name| ok(Command::Use(name)));
    }
    if let Some(args) = rest(b"watch ") {
        return valid_tube(args).map_or_else(bad, |name| ok(Command::Watch(name)));
    }
    if let Some(args) = rest(b"ignore ") {
        return valid_tube(args).map_or_else(bad, |name| ok(Command::Ignore(name)));
    }
    if line.starts_with(b"list-tubes-watched") {
        return exact(line, b"list-tubes-watched", Command::ListTubesWatched);
    }
    if line.starts_with(b"list-tube-used") {
        return exact(line, b"list-tube-used", Command::ListTubeUsed);
    }
    if line.starts_with(b"list-tubes") {
        return exact(line, b"list-tubes", Command::ListTubes);
    }
    if line.starts_with(b"quit") {
        return ok(Command::Quit);
    }
    if let Some(args) = rest(b"pause-tube") {
        return parse_pause_tube(args);
    }
    // ---- miniqueue's extensions, never reached by a beanstalkd command ----
    if let Some(args) = rest(b"put-unique ") {
        return parse_put_unique(args, max_job_size);
    }
    if let Some(args) = rest(b"fail ") {
        return parse_fail(args).map_or_else(bad, ok);
    }
    if let Some(args) = rest(b"tube-policy ") {
        return parse_tube_policy(args).map_or_else(bad, ok);
    }
    if let Some(args) = rest(b"purge-dead ") {
        return valid_tube(args).map_or_else(bad, |name| ok(Command::PurgeDead(name)));
    }
    LineOutcome::Parsed(Parsed::Error { reply: msg::UNKNOWN_COMMAND, counted: None })
}

/// A command that takes no arguments: anything after its name is `BAD_FORMAT`.
fn exact(line: &[u8], name: &[u8], command: Command) -> LineOutcome {
    if line.len() == name.len() {
        ok(command)
    } else {
        bad()
    }
}

fn parse_put(args: &[u8], max_job_size: usize, unique: Option<(String, i64)>) -> LineOutcome {
    let header = (|| {
        let (pri, args) = read_u32(args)?;
        let (delay, args) = read_duration(args)?;
        let (ttr, args) = read_duration(args)?;
        let (size, args) = read_u32(args)?;
        Some((pri, delay, ttr, size, args))
    })();
    let Some((pri, delay, ttr, size, trailing)) = header else {
        return bad();
    };
    // beanstalkd checks the size before the trailing garbage, and discards the body.
    if size as usize > max_job_size {
        return LineOutcome::TooBig { body_bytes: u64::from(size), unique: unique.is_some() };
    }
    if !trailing.is_empty() {
        let counted = unique.is_none().then_some(Op::Put);
        return LineOutcome::Parsed(Parsed::Error { reply: msg::BAD_FORMAT, counted });
    }
    let ttr = ttr.max(NANOS_PER_SEC);
    ok(Command::Put(PutHeader { pri, delay, ttr, size: size as usize, unique }))
}

/// `put-unique <key> <ttl-seconds> <pri> <delay> <ttr> <bytes>`.
fn parse_put_unique(args: &[u8], max_job_size: usize) -> LineOutcome {
    let Some(space) = args.iter().position(|&b| b == b' ') else {
        return bad();
    };
    let (key, args) = args.split_at(space);
    if key.is_empty() || key.len() > MAX_UNIQUE_KEY || !key.iter().all(|b| NAME_CHARS.contains(b)) {
        return bad();
    }
    let Some((ttl, args)) = read_duration(args) else {
        return bad();
    };
    let key = String::from_utf8_lossy(key).into_owned();
    parse_put(args, max_job_size, Some((key, ttl)))
}

/// `fail <id> <reason>`: the reason is the rest of the line.
fn parse_fail(args: &[u8]) -> Option<Command> {
    let (id, rest) = read_u64(args)?;
    let reason = rest.strip_prefix(b" ")?;
    if reason.is_empty() || reason.len() > MAX_FAIL_REASON {
        return None;
    }
    Some(Command::Fail { id, reason: String::from_utf8_lossy(reason).into_owned() })
}

/// `tube-policy <tube> <max-attempts> <none|exponential|polynomial> <base-ms> <cap-ms>`.
fn parse_tube_policy(args: &[u8]) -> Option<Command> {
    let mut words = args.split(|&b| b == b' ');
    let tube = valid_tube(words.next()?)?;
    let max_attempts = read_u32_all(words.next()?)?;
    let backoff = match words.next()? {
        b"none" => BackoffKind::None,
        b"exponential" => BackoffKind::Exponential,
        b"polynomial" => BackoffKind::Polynomial,
        _ => return None,
    };
    let base_ms = read_u64_all(words.next()?)?;
    let cap_ms = read_u64_all(words.next()?)?;
    if words.next().is_some() || cap_ms < base_ms {
        return None;
    }
    Some(Command::TubePolicy { tube, max_attempts, backoff, base_ms, cap_ms })
}

/// `pause-tube<spaces><name><spaces><seconds>`, read as beanstalkd's `read_tube_name`
/// then `read_duration` (no space is required after the command name). beanstalkd
/// counts the command before it checks the name's length and leading '-', so such a
/// name is a counted `BAD_FORMAT`.
fn parse_pause_tube(args: &[u8]) -> LineOutcome {
    let args = skip_spaces(args);
    let len = args.iter().take_while(|b| NAME_CHARS.contains(b)).count();
    if len == 0 {
        return bad();
    }
    let (name, rest) = args.split_at(len);
    let Some(delay) = read_duration_all(rest) else {
        return bad();
    };
    match valid_tube(name) {
        Some(tube) => ok(Command::PauseTube { tube, delay }),
        None => LineOutcome::Parsed(Parsed::Error { reply: msg::BAD_FORMAT, counted: Some(Op::PauseTube) }),
    }
}

/// beanstalkd's `is_valid_tube`: 1..=200 name characters, not starting with '-'.
fn valid_tube(name: &[u8]) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TUBE_NAME
        && name.iter().all(|b| NAME_CHARS.contains(b))
        && name[0] != b'-';
    // Every name character is ASCII, so this never replaces anything.
    valid.then(|| String::from_utf8_lossy(name).into_owned())
}

fn skip_spaces(buf: &[u8]) -> &[u8] {
    let n = buf.iter().take_while(|&&b| b == b' ').count();
    &buf[n..]
}

/// beanstalkd's `read_u64` with an end pointer: spaces, then at least one digit, no
/// overflow. Returns the value and what follows the digits.
fn read_u64(buf: &[u8]) -> Option<(u64, &[u8])> {
    let buf = skip_spaces(buf);
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &buf[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &buf[digits..]))
}

/// `read_u64` without an end pointer: the digits must be the whole rest.
fn read_u64_all(buf: &[u8]) -> Option<u64> {
    match read_u64(buf)? {
        (value, []) => Some(value),
        _ => None,
    }
}

fn read_u32(buf: &[u8]) -> Option<(u32, &[u8])> {
    let (value, rest) = read_u64(buf)?;
    Some((u32::try_from(value).ok()?, rest))
}

fn read_u32_all(buf: &[u8]) -> Option<u32> {
    u32::try_from(read_u64_all(buf)?).ok()
}

/// Seconds as a u32, returned in nanoseconds.
fn read_duration(buf: &[u8]) -> Option<(i64, &[u8])> {
    let (seconds, rest) = read_u32(buf)?;
    Some((i64::from(seconds) * NANOS_PER_SEC, rest))
}

fn read_duration_all(buf: &[u8]) -> Option<i64> {
    Some(i64::from(read_u32_all(buf)?) * NANOS_PER_SEC)
}

/// C's isspace in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// glibc `strtol(s, &end, 10)` as beanstalkd uses it: whitespace and a sign accepted,
/// trailing garbage ignored, no digits gives 0; only overflow (ERANGE) is an error.
fn strtol(buf: &[u8]) -> Option<i64> {
    let (negative, digits) = signed_digits(buf);
    let mut magnitude: u64 = 0;
    for &b in digits {
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        if magnitude > i64::MAX as u64 + 1 {
            return None;
        }
        Some((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// glibc `strtoul(s, &end, 10)` with beanstalkd's check that something was consumed:
/// no digits is an error, overflow is an error, a minus sign negates modulo 2^64.
fn strtoul(buf: &[u8]) -> Option<u64> {
    let (negative, digits) = signed_digits(buf);
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &b in digits {
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(if negative { magnitude.wrapping_neg() } else { magnitude })
}

/// Leading whitespace and an optional sign, then the run of digits.
fn signed_digits(buf: &[u8]) -> (bool, &[u8]) {
    let start = buf.iter().take_while(|&&b| is_c_space(b)).count();
    let mut rest = &buf[start..];
    let mut negative = false;
    if let Some((&sign, after)) = rest.split_first() {
        if sign == b'-' || sign == b'+' {
            negative = sign == b'-';
            rest = after;
        }
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    (negative, &rest[..digits])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut framer = Framer::new(65535);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(frame) = framer.next_frame(&mut buf) {
            out.push(frame);
        }
        out
    }

    #[test]
    fn parses_every_beanstalkd_command() {
        let cases: &[(&[u8], Command)] = &[
            (b"use foo", Command::Use("foo".into())),
            (b"reserve", Command::Reserve(None)),
            (b"reserve-with-timeout 5", Command::Reserve(Some(5))),
            (b"reserve-with-timeout -1", Command::Reserve(Some(-1))),
            (b"reserve-job 7", Command::ReserveJob(7)),
            (b"delete 1", Command::Delete(1)),
            (b"release 1 2 3", Command::Release { id: 1, pri: 2, delay: 3 * NANOS_PER_SEC }),
            (b"bury 1 2", Command::Bury { id: 1, pri: 2 }),
            (b"touch 9", Command::Touch(9)),
            (b"watch a", Command::Watch("a".into())),
            (b"ignore a", Command::Ignore("a".into())),
            (b"peek 3", Command::Peek(3)),
            (b"peek-ready", Command::PeekReady),
            (b"peek-delayed", Command::PeekDelayed),
            (b"peek-buried", Command::PeekBuried),
            (b"kick 10", Command::Kick(10)),
            (b"kick -1", Command::Kick(u32::MAX)),
            (b"kick-job 4", Command::KickJob(4)),
            (b"stats-job 4", Command::StatsJob(4)),
            (b"stats-tube default", Command::StatsTube("default".into())),
            (b"stats", Command::Stats),
            (b"list-tubes", Command::ListTubes),
            (b"list-tube-used", Command::ListTubeUsed),
            (b"list-tubes-watched", Command::ListTubesWatched),
            (b"pause-tube foo 10", Command::PauseTube { tube: "foo".into(), delay: 10 * NANOS_PER_SEC }),
            (b"pause-tubefoo 1", Command::PauseTube { tube: "foo".into(), delay: NANOS_PER_SEC }),
            (b"quit", Command::Quit),
            (b"quitnow", Command::Quit),
        ];
        for (line, want) in cases {
            assert_eq!(parse_command(line, 65535), Parsed::Command(want.clone()), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn rejects_like_beanstalkd() {
        let bad_format: &[&[u8]] = &[
            b"reserveX",
            b"reserve-job",
            b"stats-tubes",
            b"use -foo",
            b"use foo bar",
            b"use ",
            b"delete 1x",
            b"delete -1",
            b"delete 18446744073709551616",
            b"release 1 2",
            b"bury 1 4294967296",
            b"kick x",
            b"kick ",
            b"peek-readyX",
            b"list-tubesX",
            b"reserve-with-timeout 99999999999999999999",
            b"stats\0",
        ];
        for line in bad_format {
            assert_eq!(
                parse_command(line, 65535),
                Parsed::Error { reply: msg::BAD_FORMAT, counted: None },
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [&b"peek"[..], b"put", b"", b"hello", b" reserve", b"RESERVE"] {
            assert_eq!(parse_command(line, 65535), Parsed::Error { reply: msg::UNKNOWN_COMMAND, counted: None });
        }
        let long_name = format!("use {}", "a".repeat(201));
        assert_eq!(parse_command(long_name.as_bytes(), 65535), Parsed::Error { reply: msg::BAD_FORMAT, counted: None });
        // strtol's leniency: no digits is a timeout of 0, trailing garbage is ignored.
        assert_eq!(parse_command(b"reserve-with-timeout x", 65535), Parsed::Command(Command::Reserve(Some(0))));
        assert_eq!(parse_command(b"reserve-with-timeout 3s", 65535), Parsed::Command(Command::Reserve(Some(3))));
    }

    #[test]
    fn put_frames_header_then_body() {
        let got = frames(b"put 1 0 0 5\r\nhello\r\nstats\r\n");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Frame::PutLine { unique: false, too_big: false });
        let Frame::Job(header, body) = &got[1] else { panic!("{got:?}") };
        assert_eq!((header.pri, header.ttr, header.size), (1, NANOS_PER_SEC, 5));
        assert_eq!(body, &Bytes::from_static(b"hello"));
        assert_eq!(got[2], Frame::Command(Command::Stats));
    }

    #[test]
    fn framing_errors() {
        // Body without its CRLF.
        let bad_format = Frame::Reply { reply: msg::BAD_FORMAT, counted: None };
        // Body without its CRLF.
        let got = frames(b"put 0 0 1 2\r\nabcd");
        assert_eq!(
            got,
            vec![
                Frame::PutLine { unique: false, too_big: false },
                Frame::Reply { reply: msg::EXPECTED_CRLF, counted: None }
            ]
        );
        // Too big: the body and CRLF are discarded, then JOB_TOO_BIG, then the next command.
        let mut framer = Framer::new(3);
        let mut buf = BytesMut::from(&b"put 0 0 1 4\r\nabcd\r\nstats\r\n"[..]);
        assert_eq!(framer.next_frame(&mut buf), Some(Frame::PutLine { unique: false, too_big: true }));
        assert_eq!(framer.next_frame(&mut buf), Some(Frame::Reply { reply: msg::JOB_TOO_BIG, counted: None }));
        assert_eq!(framer.next_frame(&mut buf), Some(Frame::Command(Command::Stats)));
        // An overlong line: discarded, then BAD_FORMAT once its end arrives.
        let mut long = vec![b'x'; 500];
        long.extend_from_slice(b"\r\nstats\r\n");
        assert_eq!(frames(&long), vec![bad_format.clone(), Frame::Command(Command::Stats)]);
        // A lone CR hides later line ends until the window fills.
        assert_eq!(frames(b"stats\rx\r\n"), vec![]);
        // The longest line that fits is 222 bytes plus CRLF; one more byte overflows.
        let mut max = b"peek ".to_vec();
        max.extend(std::iter::repeat_n(b'0', 216));
        max.extend_from_slice(b"1\r\n");
        assert_eq!(max.len(), LINE_BUF_SIZE);
        assert_eq!(frames(&max), vec![Frame::Command(Command::Peek(1))]);
        // 225 bytes: the CR is the window's last byte, which is not scanned, and the LF
        // alone after the discarded window is no line end either (beanstalkd waits too).
        max.insert(5, b'0');
        assert_eq!(frames(&max), vec![]);
        max.insert(5, b'0');
        assert_eq!(frames(&max), vec![bad_format]);
    }

    #[test]
    fn extensions() {
        assert_eq!(
            parse_command(b"fail 3 it broke badly", 100),
            Parsed::Command(Command::Fail { id: 3, reason: "it broke badly".into() })
        );
        assert_eq!(
            parse_command(b"tube-policy emails 5 exponential 100 60000", 100),
            Parsed::Command(Command::TubePolicy {
                tube: "emails".into(),
                max_attempts: 5,
                backoff: BackoffKind::Exponential,
                base_ms: 100,
                cap_ms: 60000
            })
        );
        assert_eq!(
            parse_command(b"tube-policy emails 5 linear 1 2", 100),
            Parsed::Error { reply: msg::BAD_FORMAT, counted: None }
        );
        assert_eq!(parse_command(b"purge-dead emails", 100), Parsed::Command(Command::PurgeDead("emails".into())));
        let Parsed::Command(Command::Put(header)) = parse_command(b"put-unique order-7 30 1 0 60 3", 100) else {
            panic!()
        };
        assert_eq!(header.unique, Some(("order-7".into(), 30 * NANOS_PER_SEC)));
    }

    proptest! {
        /// Arbitrary bytes never panic, and every byte is accounted for: the framer either
        /// consumes input or asks for more.
        #[test]
        fn framer_survives_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
            let mut framer = Framer::new(64);
            let mut buf = BytesMut::new();
            for piece in input.chunks(chunk) {
                buf.extend_from_slice(piece);
                let mut guard = 0;
                while let Some(_frame) = framer.next_frame(&mut buf) {
                    guard += 1;
                    prop_assert!(guard < 10_000);
                }
                // Without a frame, a command-state buffer never holds a full window.
                if !framer.mid_body() {
                    prop_assert!(buf.len() < LINE_BUF_SIZE || find_line(&buf).is_line());
                }
            }
        }

        /// Splitting the same input at different points gives the same frames.
        #[test]
        fn framing_does_not_depend_on_chunking(input in proptest::collection::vec(prop_oneof![
            Just(b"put 0 0 1 3\r\nabc\r\n".to_vec()),
            Just(b"reserve\r\n".to_vec()),
            Just(b"stats\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"use x\r\n".to_vec()),
            Just(b"put 0 0 1 99\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ], 0..12), chunk in 1usize..50) {
            let whole: Vec<u8> = input.concat();
            let all_at_once = frames(&whole);
            let mut framer = Framer::new(65535);
            let mut buf = BytesMut::new();
            let mut chunked = Vec::new();
            for piece in whole.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(frame) = framer.next_frame(&mut buf) {
                    chunked.push(frame);
                }
            }
            prop_assert_eq!(all_at_once, chunked);
        }

        #[test]
        fn parse_command_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_command(&line, 1000);
        }
    }

    impl LineScan {
        fn is_line(&self) -> bool {
            matches!(self, LineScan::Line(_))
        }
    }
}
