//! A beanstalk client on tokio, written from the protocol text (beanstalkd 1.12
//! `doc/protocol.txt`) plus miniqueue's extensions: `put-unique`, `tube-policy`,
//! `fail` and `purge-dead`.
//!
//! One [`Client`] is one TCP connection, and beanstalkd's state is per connection (the
//! used tube, the watch list, the jobs it reserved), so the client is `&mut self`
//! throughout and never shared.
//!
//! The protocol is text lines plus length-prefixed bodies, and a reply can be read
//! without knowing which command it answers: its first word says whether a body
//! follows (`RESERVED <id> <bytes>`, `FOUND <id> <bytes>`, `OK <bytes>`). So the
//! client is two halves:
//!
//! ```text
//!  Command ──encode──> bytes ──> server ──> line [+ body] ──parse──> Reply | Error
//!      (pure, tested on its own)                (pure line parser, property-tested)
//! ```
//!
//! and the typed methods ([`Client::put`], [`Client::reserve`], ...) only map the
//! generic [`Reply`] to what their command can answer. The server's error words
//! (`NOT_FOUND`, `TIMED_OUT`, `DEADLINE_SOON`, `BAD_FORMAT`, ...) become variants of
//! [`Error`], each saying what to do next.
//!
//! **Pipelining.** [`Client::pipeline`] writes N commands in one `write` and then reads
//! N replies: the server answers in order, so reply i belongs to command i. A server
//! error word answers one command and leaves the stream in step, so it is that
//! command's result, not the pipeline's; an I/O or parse error ends the pipeline.
//!
//! **Cancellation.** Dropping a request's future half-way (a `tokio::time::timeout`
//! firing) leaves unread replies on the socket. The client notices at the next call and
//! answers [`Error::Desynchronised`] instead of handing out another command's reply:
//! reconnect.
//!
//! Left out: a connection pool, reconnecting, TLS (beanstalkd has none), and `quit`
//! waiting for the close (it just sends the line).

use std::fmt;
use std::io::Write as _;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::yaml::{self, Dict};

/// beanstalkd's port, and miniqueue's.
pub const DEFAULT_PORT: u16 = 11300;

/// The longest tube name (and `put-unique` key) the protocol allows.
pub const MAX_NAME_BYTES: usize = 200;

/// The longest `fail` reason miniqueue accepts.
pub const MAX_REASON_BYTES: usize = 200;

/// The longest reply line this client reads. The longest beanstalkd sends is `USING`
/// with a 200-byte name; anything much longer is not a beanstalk server talking.
pub const MAX_REPLY_LINE_BYTES: usize = 1024;

/// The largest body this client accepts: beanstalkd's own ceiling for `-z`. The body is
/// read as it arrives, never allocated up front from the length a server claims.
pub const MAX_BODY_BYTES: usize = 1 << 30;

/// How long [`Client::connect`] waits for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Read buffer per connection: a reply, or a pipeline's worth of small ones, in one
/// `read` syscall.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Everything a call can fail with. The server's own error replies come first, named
/// by their protocol word ([`Error::word`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NOT_FOUND: no such job or tube, or the job is not in a state this command acts on (reserved by another connection, for one)")]
    NotFound,
    #[error("TIMED_OUT: no job became ready within the timeout")]
    TimedOut,
    #[error(
        "DEADLINE_SOON: a job this connection reserved is within a second of its TTR; delete, release or touch it"
    )]
    DeadlineSoon,
    #[error("BAD_FORMAT: the server could not parse the command (a client bug: please report it)")]
    BadFormat,
    #[error("UNKNOWN_COMMAND: the server does not know this command (plain beanstalkd has no put-unique, tube-policy, fail or purge-dead: those need miniqueue)")]
    UnknownCommand,
    #[error("OUT_OF_MEMORY: the server cannot allocate the job; try again later")]
    OutOfMemory,
    #[error("INTERNAL_ERROR: the server hit a bug")]
    InternalError,
    #[error("EXPECTED_CRLF: the server did not find CRLF after the job body (a client bug: please report it)")]
    ExpectedCrlf,
    #[error("JOB_TOO_BIG: the body is larger than the server's max job size (beanstalkd -z)")]
    JobTooBig,
    #[error("DRAINING: the server is in drain mode and takes no new jobs; use another server")]
    Draining,
    #[error("NOT_IGNORED: a connection must watch at least one tube")]
    NotIgnored,
    /// `BURIED [<id>]` where the command hoped for success: the server ran out of memory
    /// growing a priority queue and buried the job instead (after `put`, with its id).
    #[error("BURIED: the server was out of memory and buried the job{}", .0.map(|id| format!(" (id {id})")).unwrap_or_default())]
    Buried(Option<u64>),

    #[error("can't connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server's reply is not beanstalk protocol: {0}")]
    Protocol(String),
    #[error("{command}: unexpected reply {reply}")]
    Unexpected { command: &'static str, reply: String },
    #[error("an earlier request on this connection failed or was abandoned half-way, so replies would no longer match commands; reconnect")]
    Desynchronised,
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// The protocol word of a server error reply (`"NOT_FOUND"`), `None` for errors of
    /// the connection or of this client.
    pub fn word(&self) -> Option<&'static str> {
        Some(match self {
            Error::NotFound => "NOT_FOUND",
            Error::TimedOut => "TIMED_OUT",
            Error::DeadlineSoon => "DEADLINE_SOON",
            Error::BadFormat => "BAD_FORMAT",
            Error::UnknownCommand => "UNKNOWN_COMMAND",
            Error::OutOfMemory => "OUT_OF_MEMORY",
            Error::InternalError => "INTERNAL_ERROR",
            Error::ExpectedCrlf => "EXPECTED_CRLF",
            Error::JobTooBig => "JOB_TOO_BIG",
            Error::Draining => "DRAINING",
            Error::NotIgnored => "NOT_IGNORED",
            Error::Buried(_) => "BURIED",
            _ => return None,
        })
    }

    /// Whether this is a reply from the server (the connection is still in step and
    /// usable), as opposed to a broken connection or a refused argument.
    pub fn is_server_reply(&self) -> bool {
        self.word().is_some()
    }

    fn from_word(word: &str) -> Option<Error> {
        Some(match word {
            "NOT_FOUND" => Error::NotFound,
            "TIMED_OUT" => Error::TimedOut,
            "DEADLINE_SOON" => Error::DeadlineSoon,
            "BAD_FORMAT" => Error::BadFormat,
            "UNKNOWN_COMMAND" => Error::UnknownCommand,
            "OUT_OF_MEMORY" => Error::OutOfMemory,
            "INTERNAL_ERROR" => Error::InternalError,
            "EXPECTED_CRLF" => Error::ExpectedCrlf,
            "JOB_TOO_BIG" => Error::JobTooBig,
            "DRAINING" => Error::Draining,
            "NOT_IGNORED" => Error::NotIgnored,
            _ => return None,
        })
    }
}

/// A job as `reserve` and the `peek` commands return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub body: Vec<u8>,
}

/// How a tube with a retry policy spaces out its retries (miniqueue's `tube-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Retry at once.
    None,
    /// Capped exponential with full jitter: uniform in `[0, min(cap, base * 2^n)]` ms.
    Exponential,
    /// Sidekiq's: `min(cap, base * (n^4 + 15 + r * (n + 1)))` ms, `r` in `0..=9`.
    Polynomial,
}

impl Backoff {
    pub fn word(self) -> &'static str {
        match self {
            Backoff::None => "none",
            Backoff::Exponential => "exponential",
            Backoff::Polynomial => "polynomial",
        }
    }

    pub fn from_word(word: &str) -> Option<Backoff> {
        [Backoff::None, Backoff::Exponential, Backoff::Polynomial].into_iter().find(|b| b.word() == word)
    }
}

/// A tube's retry policy (miniqueue's `tube-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Reservations a job gets before it is dead-lettered; 0 retries for ever.
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub base_ms: u64,
    pub cap_ms: u64,
}

/// What `put-unique` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    Inserted(u64),
    /// A put with the same key was made within its TTL; the id is that job's.
    Duplicate(u64),
}

/// What `fail` did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Back to ready after this delay (0 on a tube with no policy).
    Retrying(Duration),
    /// Out of attempts: the job is in the dead-letter state (buried, marked dead).
    Dead,
}

/// One command, borrowing its arguments. Sent with [`Client::request`] or, several at
/// once, with [`Client::pipeline`]. Seconds and priorities are `u32`, as the protocol
/// bounds them (< 2^32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Use(&'a str),
    Watch(&'a str),
    Ignore(&'a str),
    Put { pri: u32, delay: u32, ttr: u32, body: &'a [u8] },
    PutUnique { key: &'a str, ttl: u32, pri: u32, delay: u32, ttr: u32, body: &'a [u8] },
    Reserve,
    ReserveWithTimeout(u32),
    ReserveJob(u64),
    Delete(u64),
    Release { id: u64, pri: u32, delay: u32 },
    Bury { id: u64, pri: u32 },
    Touch(u64),
    Kick(u32),
    KickJob(u64),
    Peek(u64),
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Stats,
    StatsTube(&'a str),
    StatsJob(u64),
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube { tube: &'a str, delay: u32 },
    TubePolicy { tube: &'a str, policy: Policy },
    Fail { id: u64, reason: &'a str },
    PurgeDead(&'a str),
    Quit,
}

impl Command<'_> {
    /// The command's protocol word, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Use(_) => "use",
            Command::Watch(_) => "watch",
            Command::Ignore(_) => "ignore",
            Command::Put { .. } => "put",
            Command::PutUnique { .. } => "put-unique",
            Command::Reserve => "reserve",
            Command::ReserveWithTimeout(_) => "reserve-with-timeout",
            Command::ReserveJob(_) => "reserve-job",
            Command::Delete(_) => "delete",
            Command::Release { .. } => "release",
            Command::Bury { .. } => "bury",
            Command::Touch(_) => "touch",
            Command::Kick(_) => "kick",
            Command::KickJob(_) => "kick-job",
            Command::Peek(_) => "peek",
            Command::PeekReady => "peek-ready",
            Command::PeekDelayed => "peek-delayed",
            Command::PeekBuried => "peek-buried",
            Command::Stats => "stats",
            Command::StatsTube(_) => "stats-tube",
            Command::StatsJob(_) => "stats-job",
            Command::ListTubes => "list-tubes",
            Command::ListTubeUsed => "list-tube-used",
            Command::ListTubesWatched => "list-tubes-watched",
            Command::PauseTube { .. } => "pause-tube",
            Command::TubePolicy { .. } => "tube-policy",
            Command::Fail { .. } => "fail",
            Command::PurgeDead(_) => "purge-dead",
            Command::Quit => "quit",
        }
    }

    /// Refuses what would not be one well-formed command line: a bad tube name, a
    /// reason with a line break. Checked before anything is sent, because a malformed
    /// `put` line makes the server read its body as the next command.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            Command::Use(t)
            | Command::Watch(t)
            | Command::Ignore(t)
            | Command::StatsTube(t)
            | Command::PurgeDead(t)
            | Command::PauseTube { tube: t, .. }
            | Command::TubePolicy { tube: t, .. } => check_name("tube name", t),
            Command::PutUnique { key, .. } => check_name("put-unique key", key),
            Command::Fail { reason, .. } => {
                if reason.is_empty() || reason.len() > MAX_REASON_BYTES {
                    Err(Error::InvalidArgument(format!(
                        "a fail reason is 1 to {MAX_REASON_BYTES} bytes, this one is {}",
                        reason.len()
                    )))
                } else if reason.contains(['\r', '\n']) {
                    Err(Error::InvalidArgument("a fail reason is one line: no CR or LF".into()))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Appends the command's bytes, body included, to `out`. Call [`Command::validate`]
    /// first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Writes into a Vec cannot fail.
        let _ = match *self {
            Command::Use(t) => write!(out, "use {t}\r\n"),
            Command::Watch(t) => write!(out, "watch {t}\r\n"),
            Command::Ignore(t) => write!(out, "ignore {t}\r\n"),
            Command::Put { pri, delay, ttr, body } => {
                let _ = write!(out, "put {pri} {delay} {ttr} {}\r\n", body.len());
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
            Command::PutUnique { key, ttl, pri, delay, ttr, body } => {
                let _ = write!(out, "put-unique {key} {ttl} {pri} {delay} {ttr} {}\r\n", body.len());
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
            Command::Reserve => write!(out, "reserve\r\n"),
            Command::ReserveWithTimeout(s) => write!(out, "reserve-with-timeout {s}\r\n"),
            Command::ReserveJob(id) => write!(out, "reserve-job {id}\r\n"),
            Command::Delete(id) => write!(out, "delete {id}\r\n"),
            Command::Release { id, pri, delay } => write!(out, "release {id} {pri} {delay}\r\n"),
            Command::Bury { id, pri } => write!(out, "bury {id} {pri}\r\n"),
            Command::Touch(id) => write!(out, "touch {id}\r\n"),
            Command::Kick(bound) => write!(out, "kick {bound}\r\n"),
            Command::KickJob(id) => write!(out, "kick-job {id}\r\n"),
            Command::Peek(id) => write!(out, "peek {id}\r\n"),
            Command::PeekReady => write!(out, "peek-ready\r\n"),
            Command::PeekDelayed => write!(out, "peek-delayed\r\n"),
            Command::PeekBuried => write!(out, "peek-buried\r\n"),
            Command::Stats => write!(out, "stats\r\n"),
            Command::StatsTube(t) => write!(out, "stats-tube {t}\r\n"),
            Command::StatsJob(id) => write!(out, "stats-job {id}\r\n"),
            Command::ListTubes => write!(out, "list-tubes\r\n"),
            Command::ListTubeUsed => write!(out, "list-tube-used\r\n"),
            Command::ListTubesWatched => write!(out, "list-tubes-watched\r\n"),
            Command::PauseTube { tube, delay } => write!(out, "pause-tube {tube} {delay}\r\n"),
            Command::TubePolicy { tube, policy } => write!(
                out,
                "tube-policy {tube} {} {} {} {}\r\n",
                policy.max_attempts,
                policy.backoff.word(),
                policy.base_ms,
                policy.cap_ms
            ),
            Command::Fail { id, reason } => write!(out, "fail {id} {reason}\r\n"),
            Command::PurgeDead(t) => write!(out, "purge-dead {t}\r\n"),
            Command::Quit => write!(out, "quit\r\n"),
        };
    }
}

/// Whether `name` is a beanstalk name: 1 to 200 bytes of letters, digits and
/// `-+/;.$_()`, not starting with a hyphen.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b))
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {name:?} is not a beanstalk name: 1 to {MAX_NAME_BYTES} bytes of letters, digits and -+/;.$_(), \
             not starting with -"
        )))
    }
}

/// A successful reply, whichever command it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Inserted(u64),
    /// `BURIED <id>` after a put, `BURIED` after bury or release.
    Buried(Option<u64>),
    Duplicate(u64),
    Using(String),
    Watching(u64),
    Reserved(Job),
    Found(Job),
    Deleted,
    Released,
    Touched,
    /// `KICKED <count>` after kick, `KICKED` after kick-job.
    Kicked(Option<u64>),
    /// `OK <bytes>` and its YAML body.
    Ok(Vec<u8>),
    Paused,
    PolicySet,
    /// `RETRYING <delay-ms>`.
    Retrying(u64),
    Dead,
    Purged(u64),
}

impl fmt::Display for Reply {
    /// The reply's line as the server sent it, bodies left out, for error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Inserted(id) => write!(f, "INSERTED {id}"),
            Reply::Buried(Some(id)) => write!(f, "BURIED {id}"),
            Reply::Buried(None) => write!(f, "BURIED"),
            Reply::Duplicate(id) => write!(f, "DUPLICATE {id}"),
            Reply::Using(t) => write!(f, "USING {t}"),
            Reply::Watching(n) => write!(f, "WATCHING {n}"),
            Reply::Reserved(j) => write!(f, "RESERVED {} {}", j.id, j.body.len()),
            Reply::Found(j) => write!(f, "FOUND {} {}", j.id, j.body.len()),
            Reply::Deleted => write!(f, "DELETED"),
            Reply::Released => write!(f, "RELEASED"),
            Reply::Touched => write!(f, "TOUCHED"),
            Reply::Kicked(Some(n)) => write!(f, "KICKED {n}"),
            Reply::Kicked(None) => write!(f, "KICKED"),
            Reply::Ok(body) => write!(f, "OK {}", body.len()),
            Reply::Paused => write!(f, "PAUSED"),
            Reply::PolicySet => write!(f, "POLICY_SET"),
            Reply::Retrying(ms) => write!(f, "RETRYING {ms}"),
            Reply::Dead => write!(f, "DEAD"),
            Reply::Purged(n) => write!(f, "PURGED {n}"),
        }
    }
}

/// A reply line, parsed: either complete, or the head of a reply whose body comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Done(Reply),
    /// A server error word: one line, the stream stays in step.
    Error(String),
    /// `RESERVED`/`FOUND <id> <bytes>` (with the id) or `OK <bytes>` (without).
    Body {
        word: BodyWord,
        id: u64,
        bytes: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyWord {
    Reserved,
    Found,
    Ok,
}

/// Parses one reply line, without its CRLF. Pure, so it is property-tested on
/// arbitrary bytes.
pub fn parse_head(line: &[u8]) -> Result<Head, Error> {
    let bad = || Error::Protocol(format!("{:?}", String::from_utf8_lossy(line)));
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let words: Vec<&str> = text.split(' ').collect();
    let number = |i: usize| -> Result<u64, Error> {
        let w = words.get(i).ok_or_else(bad)?;
        // `u64::from_str` takes a leading '+', which no beanstalk server writes.
        if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        w.parse().map_err(|_| bad())
    };
    let arity = |n: usize| if words.len() == n { Ok(()) } else { Err(bad()) };
    let done = |reply: Reply| Ok(Head::Done(reply));
    match words[0] {
        "INSERTED" => arity(2).and_then(|_| done(Reply::Inserted(number(1)?))),
        "DUPLICATE" => arity(2).and_then(|_| done(Reply::Duplicate(number(1)?))),
        "BURIED" if words.len() == 1 => done(Reply::Buried(None)),
        "BURIED" => arity(2).and_then(|_| done(Reply::Buried(Some(number(1)?)))),
        "USING" => {
            let tube = text.strip_prefix("USING ").filter(|t| is_valid_name(t)).ok_or_else(bad)?;
            done(Reply::Using(tube.to_string()))
        }
        "WATCHING" => arity(2).and_then(|_| done(Reply::Watching(number(1)?))),
        "DELETED" => arity(1).and_then(|_| done(Reply::Deleted)),
        "RELEASED" => arity(1).and_then(|_| done(Reply::Released)),
        "TOUCHED" => arity(1).and_then(|_| done(Reply::Touched)),
        "KICKED" if words.len() == 1 => done(Reply::Kicked(None)),
        "KICKED" => arity(2).and_then(|_| done(Reply::Kicked(Some(number(1)?)))),
        "PAUSED" => arity(1).and_then(|_| done(Reply::Paused)),
        "POLICY_SET" => arity(1).and_then(|_| done(Reply::PolicySet)),
        "RETRYING" => arity(2).and_then(|_| done(Reply::Retrying(number(1)?))),
        "DEAD" => arity(1).and_then(|_| done(Reply::Dead)),
        "PURGED" => arity(2).and_then(|_| done(Reply::Purged(number(1)?))),
        "RESERVED" | "FOUND" => {
            arity(3)?;
            let word = if words[0] == "RESERVED" { BodyWord::Reserved } else { BodyWord::Found };
            let bytes = body_length(number(2)?)?;
            Ok(Head::Body { word, id: number(1)?, bytes })
        }
        "OK" => {
            arity(2)?;
            Ok(Head::Body { word: BodyWord::Ok, id: 0, bytes: body_length(number(1)?)? })
        }
        word if words.len() == 1 && Error::from_word(word).is_some() => Ok(Head::Error(word.to_string())),
        _ => Err(bad()),
    }
}

fn body_length(bytes: u64) -> Result<usize, Error> {
    usize::try_from(bytes).ok().filter(|&b| b <= MAX_BODY_BYTES).ok_or_else(|| {
        Error::Protocol(format!("a {bytes}-byte body, over this client's limit of {MAX_BODY_BYTES} bytes"))
    })
}

/// One connection to a beanstalk server.
pub struct Client {
    /// Reads are buffered (a pipeline's replies arrive together); writes go straight
    /// to the socket from `out`, once per request.
    stream: BufReader<TcpStream>,
    /// The encoded commands of the request being sent, reused from call to call.
    out: Vec<u8>,
    /// The reply line being read, reused.
    line: Vec<u8>,
    /// Set while a request is between its write and its last reply: still set at the
    /// start of the next call means that one was dropped half-way, or failed.
    busy: bool,
}

impl Client {
    /// Connects (with [`CONNECT_TIMEOUT`]) and turns Nagle off: every request is one
    /// write that waits for its reply, so delaying it helps nothing.
    pub async fn connect<A: ToSocketAddrs + fmt::Display>(addr: A) -> Result<Client, Error> {
        let failed = |source| Error::Connect { addr: addr.to_string(), source };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => return Err(failed(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))),
        };
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Result<Client, Error> {
        stream.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::with_capacity(READ_BUFFER_BYTES, stream),
            out: Vec::with_capacity(4096),
            line: Vec::with_capacity(128),
            busy: false,
        })
    }

    /// Sends one command and reads its reply. Server error words are `Err`.
    pub async fn request(&mut self, command: &Command<'_>) -> Result<Reply, Error> {
        let mut replies = self.pipeline(std::slice::from_ref(command)).await?;
        // Only `quit` gets no reply: the server closes the connection instead.
        replies.pop().unwrap_or(Err(Error::Closed))
    }

    /// Sends every command in one write, then reads one reply each, in order. The outer
    /// `Err` is a broken connection (or a refused argument, before anything was sent);
    /// each inner `Result` is that command's own outcome.
    pub async fn pipeline(&mut self, commands: &[Command<'_>]) -> Result<Vec<Result<Reply, Error>>, Error> {
        if self.busy {
            return Err(Error::Desynchronised);
        }
        self.out.clear();
        for command in commands {
            command.validate()?;
            command.encode(&mut self.out);
        }
        self.busy = true;
        self.stream.get_mut().write_all(&self.out).await?;
        let mut replies = Vec::with_capacity(commands.len());
        for command in commands {
            if matches!(command, Command::Quit) {
                // The server closes instead of answering.
                continue;
            }
            replies.push(self.read_reply().await?);
        }
        self.busy = false;
        Ok(replies)
    }

    /// Reads one reply: `Ok(Err(_))` for a server error word.
    async fn read_reply(&mut self) -> Result<Result<Reply, Error>, Error> {
        self.read_line().await?;
        match parse_head(&self.line)? {
            Head::Done(reply) => Ok(Ok(reply)),
            Head::Error(word) => Ok(Err(Error::from_word(&word).unwrap_or(Error::Protocol(word)))),
            Head::Body { word, id, bytes } => {
                let body = self.read_body(bytes).await?;
                Ok(Ok(match word {
                    BodyWord::Reserved => Reply::Reserved(Job { id, body }),
                    BodyWord::Found => Reply::Found(Job { id, body }),
                    BodyWord::Ok => Reply::Ok(body),
                }))
            }
        }
    }

    /// Reads a line into `self.line`, without its CRLF, refusing lines longer than
    /// [`MAX_REPLY_LINE_BYTES`] (a stream that is not beanstalk would never end one).
    async fn read_line(&mut self) -> Result<(), Error> {
        self.line.clear();
        loop {
            let available = self.stream.fill_buf().await?;
            if available.is_empty() {
                return Err(if self.line.is_empty() {
                    Error::Closed
                } else {
                    Error::Protocol("cut off mid-line".into())
                });
            }
            let (taken, done) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            self.line.extend_from_slice(&available[..taken]);
            self.stream.consume(taken);
            if self.line.len() > MAX_REPLY_LINE_BYTES + 2 {
                return Err(Error::Protocol(format!("a reply line over {MAX_REPLY_LINE_BYTES} bytes")));
            }
            if done {
                break;
            }
        }
        if !self.line.ends_with(b"\r\n") {
            return Err(Error::Protocol(format!(
                "a reply line not ended by CRLF: {:?}",
                String::from_utf8_lossy(&self.line)
            )));
        }
        self.line.truncate(self.line.len() - 2);
        Ok(())
    }

    /// Reads a body of `bytes` and its CRLF. The buffer grows as data arrives, so a
    /// lying length costs no more memory than the bytes actually sent.
    async fn read_body(&mut self, bytes: usize) -> Result<Vec<u8>, Error> {
        let wanted = bytes + 2;
        let mut body = Vec::with_capacity(wanted.min(READ_BUFFER_BYTES));
        let read = (&mut self.stream).take(wanted as u64).read_to_end(&mut body).await?;
        if read < wanted {
            return Err(Error::Closed);
        }
        if !body.ends_with(b"\r\n") {
            return Err(Error::Protocol(format!("a {bytes}-byte body not followed by CRLF")));
        }
        body.truncate(bytes);
        Ok(body)
    }

    // The commands, each mapping the replies it can get. `unexpected` covers a server
    // that answers with a reply of another command.

    /// `use <tube>`: later puts go to `tube`.
    pub async fn use_tube(&mut self, tube: &str) -> Result<(), Error> {
        match self.request(&Command::Use(tube)).await? {
            Reply::Using(t) if t == tube => Ok(()),
            other => Err(unexpected("use", other)),
        }
    }

    /// `watch <tube>`: returns the number of tubes watched.
    pub async fn watch(&mut self, tube: &str) -> Result<u64, Error> {
        match self.request(&Command::Watch(tube)).await? {
            Reply::Watching(n) => Ok(n),
            other => Err(unexpected("watch", other)),
        }
    }

    /// `ignore <tube>`: returns the number of tubes still watched.
    pub async fn ignore(&mut self, tube: &str) -> Result<u64, Error> {
        match self.request(&Command::Ignore(tube)).await? {
            Reply::Watching(n) => Ok(n),
            other => Err(unexpected("ignore", other)),
        }
    }

    /// `put`: returns the new job's id.
    pub async fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &[u8]) -> Result<u64, Error> {
        inserted("put", self.request(&Command::Put { pri, delay, ttr, body }).await?)
    }

    /// miniqueue's `put-unique`: a put unless one with `key` was made in the same tube
    /// less than `ttl` seconds ago.
    pub async fn put_unique(
        &mut self,
        key: &str,
        ttl: u32,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: &[u8],
    ) -> Result<Unique, Error> {
        match self.request(&Command::PutUnique { key, ttl, pri, delay, ttr, body }).await? {
            Reply::Inserted(id) => Ok(Unique::Inserted(id)),
            Reply::Duplicate(id) => Ok(Unique::Duplicate(id)),
            Reply::Buried(id) => Err(Error::Buried(id)),
            other => Err(unexpected("put-unique", other)),
        }
    }

    /// `reserve`: waits for a job from the watched tubes, as long as it takes.
    pub async fn reserve(&mut self) -> Result<Job, Error> {
        reserved("reserve", self.request(&Command::Reserve).await?)
    }

    /// `reserve-with-timeout`: [`Error::TimedOut`] when no job came within `seconds`.
    pub async fn reserve_with_timeout(&mut self, seconds: u32) -> Result<Job, Error> {
        reserved("reserve-with-timeout", self.request(&Command::ReserveWithTimeout(seconds)).await?)
    }

    /// `reserve-job <id>`: reserves that job, whatever its state but reserved.
    pub async fn reserve_job(&mut self, id: u64) -> Result<Job, Error> {
        reserved("reserve-job", self.request(&Command::ReserveJob(id)).await?)
    }

    pub async fn delete(&mut self, id: u64) -> Result<(), Error> {
        match self.request(&Command::Delete(id)).await? {
            Reply::Deleted => Ok(()),
            other => Err(unexpected("delete", other)),
        }
    }

    pub async fn release(&mut self, id: u64, pri: u32, delay: u32) -> Result<(), Error> {
        match self.request(&Command::Release { id, pri, delay }).await? {
            Reply::Released => Ok(()),
            Reply::Buried(None) => Err(Error::Buried(None)),
            other => Err(unexpected("release", other)),
        }
    }

    pub async fn bury(&mut self, id: u64, pri: u32) -> Result<(), Error> {
        match self.request(&Command::Bury { id, pri }).await? {
            Reply::Buried(None) => Ok(()),
            other => Err(unexpected("bury", other)),
        }
    }

    pub async fn touch(&mut self, id: u64) -> Result<(), Error> {
        match self.request(&Command::Touch(id)).await? {
            Reply::Touched => Ok(()),
            other => Err(unexpected("touch", other)),
        }
    }

    /// `kick <bound>` on the used tube: buried jobs if there are any, else delayed
    /// ones. Returns how many were kicked.
    pub async fn kick(&mut self, bound: u32) -> Result<u64, Error> {
        match self.request(&Command::Kick(bound)).await? {
            Reply::Kicked(Some(n)) => Ok(n),
            other => Err(unexpected("kick", other)),
        }
    }

    /// `kick-job <id>`: a buried or delayed job back to ready; on miniqueue, a dead job
    /// is replayed (attempts reset).
    pub async fn kick_job(&mut self, id: u64) -> Result<(), Error> {
        match self.request(&Command::KickJob(id)).await? {
            Reply::Kicked(None) => Ok(()),
            other => Err(unexpected("kick-job", other)),
        }
    }

    pub async fn peek(&mut self, id: u64) -> Result<Job, Error> {
        found("peek", self.request(&Command::Peek(id)).await?)
    }

    pub async fn peek_ready(&mut self) -> Result<Job, Error> {
        found("peek-ready", self.request(&Command::PeekReady).await?)
    }

    pub async fn peek_delayed(&mut self) -> Result<Job, Error> {
        found("peek-delayed", self.request(&Command::PeekDelayed).await?)
    }

    /// `peek-buried` on the used tube: the next buried (or dead) job.
    pub async fn peek_buried(&mut self) -> Result<Job, Error> {
        found("peek-buried", self.request(&Command::PeekBuried).await?)
    }

    pub async fn stats(&mut self) -> Result<Dict, Error> {
        dict("stats", self.request(&Command::Stats).await?)
    }

    pub async fn stats_tube(&mut self, tube: &str) -> Result<Dict, Error> {
        dict("stats-tube", self.request(&Command::StatsTube(tube)).await?)
    }

    pub async fn stats_job(&mut self, id: u64) -> Result<Dict, Error> {
        dict("stats-job", self.request(&Command::StatsJob(id)).await?)
    }

    pub async fn list_tubes(&mut self) -> Result<Vec<String>, Error> {
        list("list-tubes", self.request(&Command::ListTubes).await?)
    }

    pub async fn list_tube_used(&mut self) -> Result<String, Error> {
        match self.request(&Command::ListTubeUsed).await? {
            Reply::Using(t) => Ok(t),
            other => Err(unexpected("list-tube-used", other)),
        }
    }

    pub async fn list_tubes_watched(&mut self) -> Result<Vec<String>, Error> {
        list("list-tubes-watched", self.request(&Command::ListTubesWatched).await?)
    }

    pub async fn pause_tube(&mut self, tube: &str, delay: u32) -> Result<(), Error> {
        match self.request(&Command::PauseTube { tube, delay }).await? {
            Reply::Paused => Ok(()),
            other => Err(unexpected("pause-tube", other)),
        }
    }

    /// miniqueue's `tube-policy`.
    pub async fn tube_policy(&mut self, tube: &str, policy: Policy) -> Result<(), Error> {
        match self.request(&Command::TubePolicy { tube, policy }).await? {
            Reply::PolicySet => Ok(()),
            other => Err(unexpected("tube-policy", other)),
        }
    }

    /// miniqueue's `fail`: this connection's reserved job failed, for `reason`.
    pub async fn fail(&mut self, id: u64, reason: &str) -> Result<Failed, Error> {
        match self.request(&Command::Fail { id, reason }).await? {
            Reply::Retrying(ms) => Ok(Failed::Retrying(Duration::from_millis(ms))),
            Reply::Dead => Ok(Failed::Dead),
            other => Err(unexpected("fail", other)),
        }
    }

    /// miniqueue's `purge-dead`: deletes the tube's dead jobs, returns how many.
    pub async fn purge_dead(&mut self, tube: &str) -> Result<u64, Error> {
        match self.request(&Command::PurgeDead(tube)).await? {
            Reply::Purged(n) => Ok(n),
            other => Err(unexpected("purge-dead", other)),
        }
    }

    /// `quit`: the server closes the connection.
    pub async fn quit(mut self) -> Result<(), Error> {
        self.pipeline(&[Command::Quit]).await.map(|_| ())
    }
}

fn unexpected(command: &'static str, reply: Reply) -> Error {
    Error::Unexpected { command, reply: reply.to_string() }
}

fn inserted(command: &'static str, reply: Reply) -> Result<u64, Error> {
    match reply {
        Reply::Inserted(id) => Ok(id),
        Reply::Buried(id @ Some(_)) => Err(Error::Buried(id)),
        other => Err(unexpected(command, other)),
    }
}

fn reserved(command: &'static str, reply: Reply) -> Result<Job, Error> {
    match reply {
        Reply::Reserved(job) => Ok(job),
        other => Err(unexpected(command, other)),
    }
}

fn found(command: &'static str, reply: Reply) -> Result<Job, Error> {
    match reply {
        Reply::Found(job) => Ok(job),
        other => Err(unexpected(command, other)),
    }
}

fn dict(command: &'static str, reply: Reply) -> Result<Dict, Error> {
    match reply {
        Reply::Ok(body) => yaml::parse_dict(&body).map_err(|e| Error::Protocol(format!("{command}: {e}"))),
        other => Err(unexpected(command, other)),
    }
}

fn list(command: &'static str, reply: Reply) -> Result<Vec<String>, Error> {
    match reply {
        Reply::Ok(body) => yaml::parse_list(&body).map_err(|e| Error::Protocol(format!("{command}: {e}"))),
        other => Err(unexpected(command, other)),
    }
}

impl Reply {
    /// The id of an `INSERTED` reply (a pipelined put), or the error it stands for.
    pub fn into_inserted(self) -> Result<u64, Error> {
        inserted("put", self)
    }

    /// The job of a `RESERVED` reply (a pipelined reserve).
    pub fn into_reserved(self) -> Result<Job, Error> {
        reserved("reserve", self)
    }

    /// `Ok` for `DELETED` (a pipelined delete).
    pub fn into_deleted(self) -> Result<(), Error> {
        match self {
            Reply::Deleted => Ok(()),
            other => Err(unexpected("delete", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn encoded(command: Command<'_>) -> String {
        let mut out = Vec::new();
        command.encode(&mut out);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn encodes_commands_as_the_protocol_spells_them() {
        assert_eq!(encoded(Command::Put { pri: 1, delay: 2, ttr: 3, body: b"hi" }), "put 1 2 3 2\r\nhi\r\n");
        assert_eq!(
            encoded(Command::PutUnique { key: "k", ttl: 9, pri: 0, delay: 0, ttr: 60, body: b"" }),
            "put-unique k 9 0 0 60 0\r\n\r\n"
        );
        assert_eq!(encoded(Command::Release { id: 7, pri: 5, delay: 0 }), "release 7 5 0\r\n");
        assert_eq!(encoded(Command::ReserveWithTimeout(0)), "reserve-with-timeout 0\r\n");
        let policy = Policy { max_attempts: 3, backoff: Backoff::Exponential, base_ms: 100, cap_ms: 60_000 };
        assert_eq!(encoded(Command::TubePolicy { tube: "t", policy }), "tube-policy t 3 exponential 100 60000\r\n");
        assert_eq!(encoded(Command::Fail { id: 4, reason: "disk full" }), "fail 4 disk full\r\n");
        assert_eq!(encoded(Command::PauseTube { tube: "t", delay: 5 }), "pause-tube t 5\r\n");
    }

    #[test]
    fn refuses_bad_names_and_reasons_before_sending() {
        for bad in ["", "-x", "a b", "a\r\nput", &"x".repeat(201)] {
            assert!(matches!(Command::Use(bad).validate(), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
        for good in ["default", "a-b+c/d;e.f$g_h(i)", &"x".repeat(200)] {
            assert!(Command::Watch(good).validate().is_ok(), "{good:?}");
        }
        assert!(Command::Fail { id: 1, reason: "" }.validate().is_err());
        assert!(Command::Fail { id: 1, reason: "a\nb" }.validate().is_err());
        assert!(Command::Fail { id: 1, reason: &"r".repeat(201) }.validate().is_err());
        assert!(Command::PutUnique { key: "no spaces", ttl: 1, pri: 0, delay: 0, ttr: 1, body: b"" }
            .validate()
            .is_err());
    }

    #[test]
    fn parses_every_reply_line() {
        let done = |line: &str| match parse_head(line.as_bytes()) {
            Ok(Head::Done(reply)) => reply,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(done("INSERTED 12"), Reply::Inserted(12));
        assert_eq!(done("BURIED 3"), Reply::Buried(Some(3)));
        assert_eq!(done("BURIED"), Reply::Buried(None));
        assert_eq!(done("USING a-b"), Reply::Using("a-b".into()));
        assert_eq!(done("KICKED"), Reply::Kicked(None));
        assert_eq!(done("KICKED 4"), Reply::Kicked(Some(4)));
        assert_eq!(done("RETRYING 250"), Reply::Retrying(250));
        assert_eq!(done("PURGED 0"), Reply::Purged(0));
        assert_eq!(done("DUPLICATE 9"), Reply::Duplicate(9));
        assert_eq!(
            parse_head(b"RESERVED 5 100").ok(),
            Some(Head::Body { word: BodyWord::Reserved, id: 5, bytes: 100 })
        );
        assert_eq!(parse_head(b"OK 20").ok(), Some(Head::Body { word: BodyWord::Ok, id: 0, bytes: 20 }));
        assert_eq!(parse_head(b"NOT_FOUND").ok(), Some(Head::Error("NOT_FOUND".into())));
        for bad in
            ["", "INSERTED", "INSERTED x", "INSERTED +1", "INSERTED 1 2", "DELETED x", "NOT_FOUND x", "HELLO", "USING"]
        {
            assert!(matches!(parse_head(bad.as_bytes()), Err(Error::Protocol(_))), "{bad:?}");
        }
        assert!(parse_head(b"OK 99999999999").is_err(), "a body over the limit is refused");
    }

    proptest! {
        #[test]
        fn arbitrary_reply_lines_never_panic(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_head(&line);
        }

        #[test]
        fn every_success_reply_reads_back_from_its_line(id in any::<u64>(), n in 0u64..1_000_000) {
            for reply in [Reply::Inserted(id), Reply::Buried(Some(id)), Reply::Watching(n), Reply::Kicked(Some(n)),
                          Reply::Retrying(n), Reply::Purged(n), Reply::Duplicate(id), Reply::Deleted, Reply::Dead] {
                let line = reply.to_string();
                prop_assert_eq!(parse_head(line.as_bytes()).ok(), Some(Head::Done(reply)));
            }
        }
    }

    /// A one-connection fake server: reads until it has seen `expect`, then writes
    /// `reply` in pieces of `chunk` bytes (a reply split over many reads), then holds
    /// the connection until the test ends.
    async fn fake_server(
        expect: &'static [u8],
        reply: &'static [u8],
        chunk: usize,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while seen.len() < expect.len() {
                let n = socket.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            assert_eq!(String::from_utf8_lossy(&seen), String::from_utf8_lossy(expect), "what the client sent");
            for piece in reply.chunks(chunk.max(1)) {
                socket.write_all(piece).await.expect("write");
                socket.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Keep the socket open a little: a client that reads past its replies hangs
            // here rather than seeing a clean close.
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_pipeline_is_one_write_and_replies_in_order_even_when_split() {
        let expect = b"put 0 0 60 3\r\nabc\r\nreserve\r\ndelete 1\r\ndelete 1\r\n";
        let reply = b"INSERTED 1\r\nRESERVED 1 3\r\nabc\r\nDELETED\r\nNOT_FOUND\r\n";
        let (addr, server) = fake_server(expect, reply, 3).await;
        let mut client = Client::connect(&addr).await.expect("connect");
        let commands = [
            Command::Put { pri: 0, delay: 0, ttr: 60, body: b"abc" },
            Command::Reserve,
            Command::Delete(1),
            Command::Delete(1),
        ];
        let mut replies = client.pipeline(&commands).await.expect("the pipeline completes").into_iter();
        assert_eq!(replies.next().map(|r| r.and_then(Reply::into_inserted).ok()), Some(Some(1)));
        let job = replies.next().map(|r| r.and_then(Reply::into_reserved).ok());
        assert_eq!(job, Some(Some(Job { id: 1, body: b"abc".to_vec() })));
        assert!(matches!(replies.next(), Some(Ok(Reply::Deleted))));
        assert!(matches!(replies.next(), Some(Err(Error::NotFound))), "an error word answers its own command");
        server.await.expect("the fake server saw what it expected");
    }

    #[tokio::test]
    async fn stats_come_back_as_a_dict_and_lists_as_names() {
        let (addr, server) = fake_server(b"stats-job 3\r\n", b"OK 26\r\n---\nid: 3\nlast-error: \"x\"\n\r\n", 7).await;
        let mut client = Client::connect(&addr).await.expect("connect");
        let stats = client.stats_job(3).await.expect("stats-job");
        assert_eq!((stats.get_u64("id"), stats.get("last-error")), (Some(3), Some("x")));
        server.await.expect("server");

        let (addr, server) = fake_server(b"list-tubes\r\n", b"OK 20\r\n---\n- default\n- foo\n\r\n", 100).await;
        let mut client = Client::connect(&addr).await.expect("connect");
        assert_eq!(client.list_tubes().await.expect("list-tubes"), ["default", "foo"]);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn the_servers_error_words_are_typed_errors() {
        let (addr, server) = fake_server(b"reserve-with-timeout 0\r\n", b"TIMED_OUT\r\n", 100).await;
        let mut client = Client::connect(&addr).await.expect("connect");
        let err = client.reserve_with_timeout(0).await.expect_err("timed out");
        assert!(matches!(err, Error::TimedOut) && err.word() == Some("TIMED_OUT") && err.is_server_reply());
        server.await.expect("server");

        let (addr, server) = fake_server(b"kick-job 5\r\n", b"KICKED 1\r\n", 100).await;
        let mut client = Client::connect(&addr).await.expect("connect");
        let err = client.kick_job(5).await.expect_err("KICKED 1 does not answer kick-job");
        assert!(matches!(err, Error::Unexpected { command: "kick-job", .. }), "{err}");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_cut_off_body_or_a_garbled_line_breaks_the_connection() {
        let (addr, server) = fake_server(b"peek 1\r\n", b"FOUND 1 10\r\nabc", 100).await;
        let mut client = Client::connect(&addr).await.expect("connect");
        let read = tokio::time::timeout(Duration::from_secs(5), client.peek(1)).await.expect("no hang");
        assert!(matches!(read, Err(Error::Closed)), "{read:?}");
        assert!(matches!(client.stats().await, Err(Error::Desynchronised)), "the connection is spent");
        server.await.expect("server");

        let (addr, server) = fake_server(b"stats\r\n", b"HTTP/1.1 400 Bad Request\r\n", 100).await;
        let mut client = Client::connect(&addr).await.expect("connect");
        assert!(matches!(client.stats().await, Err(Error::Protocol(_))));
        server.await.expect("server");
    }

    /// A real beanstalkd on a free loopback port, killed when dropped; `None` (the test
    /// then skips) when it is not installed.
    fn real_beanstalkd() -> Option<crate::server::ServerProcess> {
        let Some(binary) = crate::process::find_on_path("beanstalkd") else {
            eprintln!("skipped: beanstalkd is not on PATH (apt-get install beanstalkd)");
            return None;
        };
        let args =
            |port: u16, _: &std::path::Path| vec!["-l".into(), "127.0.0.1".into(), "-p".into(), port.to_string()];
        let server = crate::server::ServerProcess::start("beanstalkd", &binary, args, crate::server::Ready::Listening);
        Some(server.expect("beanstalkd starts"))
    }

    #[tokio::test]
    async fn every_command_against_a_real_beanstalkd() {
        let Some(server) = real_beanstalkd() else { return };
        let mut c = Client::connect(format!("127.0.0.1:{}", server.port)).await.expect("connect");
        c.use_tube("jobs").await.expect("use");
        assert_eq!(c.list_tube_used().await.expect("list-tube-used"), "jobs");
        assert_eq!(c.watch("jobs").await.expect("watch"), 2);
        assert_eq!(c.ignore("default").await.expect("ignore"), 1);
        assert!(matches!(c.ignore("jobs").await, Err(Error::NotIgnored)));
        assert_eq!(c.list_tubes_watched().await.expect("list-tubes-watched"), ["jobs"]);
        assert_eq!(c.list_tubes().await.expect("list-tubes"), ["default", "jobs"]);

        let first = c.put(10, 0, 60, b"first").await.expect("put");
        let second = c.put(5, 0, 60, b"second\r\nwith a line break").await.expect("put");
        let delayed = c.put(0, 100, 60, b"later").await.expect("put");
        assert_eq!(c.peek_ready().await.expect("peek-ready").id, second, "the smaller priority first");
        assert_eq!(c.peek_delayed().await.expect("peek-delayed").id, delayed);
        let tube = c.stats_tube("jobs").await.expect("stats-tube");
        assert_eq!((tube.get("name"), tube.get_u64("current-jobs-ready")), (Some("jobs"), Some(2)));
        assert_eq!(tube.get_u64("current-jobs-delayed"), Some(1));

        let job = c.reserve_with_timeout(0).await.expect("reserve-with-timeout");
        assert_eq!(job, Job { id: second, body: b"second\r\nwith a line break".to_vec() });
        let stats = c.stats_job(second).await.expect("stats-job");
        assert_eq!(
            (stats.get("state"), stats.get_u64("pri"), stats.get("tube")),
            (Some("reserved"), Some(5), Some("jobs"))
        );
        c.touch(second).await.expect("touch");
        c.release(second, 7, 0).await.expect("release");
        assert_eq!(c.stats_job(second).await.expect("stats-job").get_u64("releases"), Some(1));
        assert_eq!(c.reserve().await.expect("reserve").id, second);
        c.bury(second, 1).await.expect("bury");
        assert_eq!(c.peek_buried().await.expect("peek-buried").id, second);
        assert_eq!(c.kick(10).await.expect("kick"), 1, "kicks the buried job, not the delayed one");
        c.kick_job(delayed).await.expect("kick-job moves the delayed job to ready");
        assert!(matches!(c.kick_job(delayed).await, Err(Error::NotFound)), "it is ready now");
        assert_eq!(c.reserve_job(first).await.expect("reserve-job").body, b"first");
        assert!(matches!(c.touch(999).await, Err(Error::NotFound)));
        for id in [first, second, delayed] {
            c.delete(id).await.expect("delete");
        }
        assert!(matches!(c.peek(first).await, Err(Error::NotFound)));
        assert!(matches!(c.reserve_with_timeout(0).await, Err(Error::TimedOut)));

        // The safety margin: with a TTR of 1 s a reserved job is always within its last second.
        c.put(0, 0, 1, b"short").await.expect("put");
        let short = c.reserve().await.expect("reserve");
        assert!(matches!(c.reserve().await, Err(Error::DeadlineSoon)));
        c.delete(short.id).await.expect("delete");

        c.pause_tube("jobs", 0).await.expect("pause-tube");
        assert!(matches!(c.pause_tube("nosuchtube", 1).await, Err(Error::NotFound)));
        assert!(matches!(c.put(0, 0, 60, &vec![b'x'; 70_000]).await, Err(Error::JobTooBig)), "over -z 65535");
        // miniqueue's extensions are unknown to beanstalkd, and the connection stays in step.
        let policy = Policy { max_attempts: 3, backoff: Backoff::Exponential, base_ms: 10, cap_ms: 1000 };
        assert!(matches!(c.tube_policy("jobs", policy).await, Err(Error::UnknownCommand)));
        assert!(matches!(c.fail(1, "boom").await, Err(Error::UnknownCommand)));
        assert!(matches!(c.purge_dead("jobs").await, Err(Error::UnknownCommand)));

        // A pipeline of 100 puts, then 100 reserves, then 100 deletes.
        let bodies: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_string().into_bytes()).collect();
        let puts: Vec<Command> = bodies.iter().map(|b| Command::Put { pri: 0, delay: 0, ttr: 60, body: b }).collect();
        let ids: Vec<u64> = c
            .pipeline(&puts)
            .await
            .expect("puts")
            .into_iter()
            .map(|r| r.and_then(Reply::into_inserted).expect("inserted"))
            .collect();
        let reserved = c.pipeline(&[Command::Reserve; 100]).await.expect("reserves");
        let jobs: Vec<Job> =
            reserved.into_iter().map(|r| r.and_then(Reply::into_reserved).expect("reserved")).collect();
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids, "FIFO within a priority");
        assert!(jobs.iter().zip(&bodies).all(|(j, b)| &j.body == b));
        let deletes: Vec<Command> = ids.iter().map(|&id| Command::Delete(id)).collect();
        assert!(c.pipeline(&deletes).await.expect("deletes").into_iter().all(|r| matches!(r, Ok(Reply::Deleted))));

        let stats = c.stats().await.expect("stats");
        assert_eq!(stats.get("version"), Some("1.12"));
        assert_eq!(stats.get_u64("current-jobs-ready"), Some(0));
        assert_eq!(stats.get_u64("total-jobs"), Some(104));
        c.quit().await.expect("quit");
    }

    #[tokio::test]
    async fn an_abandoned_request_is_not_mistaken_for_the_next_ones_reply() {
        // The server answers the reserve only after the client gave up on it.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 64];
            let _ = socket.read(&mut buf).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = socket.write_all(b"RESERVED 1 1\r\nx\r\n").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let mut client = Client::connect(addr).await.expect("connect");
        let gave_up = tokio::time::timeout(Duration::from_millis(50), client.reserve()).await;
        assert!(gave_up.is_err(), "the reserve was still waiting");
        assert!(matches!(client.delete(1).await, Err(Error::Desynchronised)));
        server.await.expect("server");
    }
}
