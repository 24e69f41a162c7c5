//! Bad input and limits: each is answered in the protocol's own form, never a panic.
//!
//! - Protocol errors get `-ERR Protocol error: ...` and the connection is closed (the
//!   stream cannot be resynchronised); other clients never notice.
//! - Every limit is a named parameter (`proto-max-bulk-len`, `maxclients`,
//!   `client-query-buffer-limit`, `client-output-buffer-limit`, `maxmemory`), and
//!   reaching it gives the error Redis gives, or a disconnect where Redis disconnects.
//! - A seeded fuzz loop over TCP: whatever arrives, every reply is well-formed RESP and
//!   the server keeps answering.
//! - SIGTERM drains: a client with a pipeline in flight gets the reply of every
//!   command the server executed, the process exits 0, and the data is on disk.
//!
//! Left out: limits whose only effect is a number in INFO (they are checked where the
//! behaviour is), and TLS.

mod support;

use std::time::{Duration, Instant};

use support::{encode, info_u64, parse, parse_all, wait_until, Raw, Resp, Server};

fn start(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), args);
    (dir, server)
}

fn err(text: &str) -> Resp {
    Resp::Error(text.to_string())
}

fn ok() -> Resp {
    Resp::Simple("OK".to_string())
}

/// Sends `bytes` on a fresh connection (ignoring write errors: the server may close
/// before it has read everything) and returns what came back until the server closed.
fn send_and_drain(server: &Server, bytes: &[u8]) -> (Vec<Resp>, bool) {
    let mut raw = server.raw();
    let _ = raw.send(bytes);
    let drained = raw.drain(Duration::from_secs(5));
    let (replies, leftover) = parse_all(&drained.bytes).unwrap_or_else(|e| {
        panic!("invalid RESP ({e}) in reply to {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(60)]))
    });
    assert_eq!(leftover, 0, "a partial reply before the close");
    (replies, drained.closed)
}

#[test]
fn resp_parser_of_the_tests_is_strict() {
    // The fuzz test trusts this parser to reject malformed replies; check that it does.
    let good: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR x\r\n",
        b":-12\r\n",
        b"$3\r\nabc\r\n",
        b"$-1\r\n",
        b"*2\r\n$1\r\na\r\n:1\r\n",
        b"*-1\r\n",
        b"%1\r\n+a\r\n,1.5\r\n",
        b"~1\r\n#t\r\n",
        b">2\r\n+a\r\n_\r\n",
        b"=8\r\ntxt:abcd\r\n",
        b"(123\r\n",
        b",inf\r\n",
    ];
    for case in good {
        let (value, used) = parse(case).unwrap().unwrap();
        assert_eq!(used, case.len(), "{value:?}");
    }
    let bad: &[&[u8]] = &[b"?x\r\n", b"$3\r\nabcd\r\n", b":1x\r\n", b"+a\n", b"#x\r\n", b":01\r\n"];
    for case in bad {
        assert!(parse(case).is_err(), "{:?}", String::from_utf8_lossy(case));
    }
    assert_eq!(parse(b"$3\r\nab").unwrap(), None);
    assert_eq!(parse(b"*2\r\n:1\r\n").unwrap(), None);
}

/// Each malformed request gets Redis's exact protocol error, then the connection is
/// closed; a client connected all along is unaffected.
#[test]
fn protocol_errors_close_only_the_offending_connection() {
    let (_dir, server) = start(&[]);
    let mut bystander = server.raw();
    assert_eq!(bystander.cmd(&["SET", "still", "here"]), ok());

    let too_big_inline = vec![b'a'; 64 * 1024 + 100];
    let cases: Vec<(&str, Vec<u8>, Vec<Resp>)> = vec![
        ("bad multibulk count", b"*x\r\n".to_vec(), vec![err("ERR Protocol error: invalid multibulk length")]),
        (
            "huge multibulk count",
            b"*2000000000000\r\n".to_vec(),
            vec![err("ERR Protocol error: invalid multibulk length")],
        ),
        (
            "not a bulk inside a multibulk",
            b"*1\r\n+foo\r\n".to_vec(),
            vec![err("ERR Protocol error: expected '$', got '+'")],
        ),
        ("negative bulk length", b"*1\r\n$-5\r\n".to_vec(), vec![err("ERR Protocol error: invalid bulk length")]),
        (
            "bulk over proto-max-bulk-len (512mb)",
            b"*1\r\n$600000000\r\n".to_vec(),
            vec![err("ERR Protocol error: invalid bulk length")],
        ),
        (
            "unbalanced quotes inline",
            b"set \"foo bar\r\n".to_vec(),
            vec![err("ERR Protocol error: unbalanced quotes in request")],
        ),
        (
            "inline request over 64 KiB without a newline",
            too_big_inline,
            vec![err("ERR Protocol error: too big inline request")],
        ),
        (
            "good command, then garbage",
            b"PING\r\n*x\r\n".to_vec(),
            vec![Resp::Simple("PONG".into()), err("ERR Protocol error: invalid multibulk length")],
        ),
    ];
    for (what, bytes, expected) in cases {
        let (replies, closed) = send_and_drain(&server, &bytes);
        assert_eq!(replies, expected, "{what}");
        assert!(closed, "{what}: the connection stayed open after a protocol error");
    }
    // `$-5` as the first byte of a request is not a multibulk at all: Redis reads it
    // as an inline command name, answers, and keeps the connection.
    let mut raw = server.raw();
    raw.send(b"$-5\r\nPING\r\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), err("ERR unknown command '$-5', with args beginning with: "));
    assert_eq!(raw.read_reply().unwrap(), Resp::Simple("PONG".into()));

    assert_eq!(bystander.cmd(&["GET", "still"]), Resp::Bulk(b"here".to_vec()));
}

/// `proto-max-bulk-len` changed at run time: exactly the limit is accepted, one byte
/// more is a protocol error.
#[test]
fn proto_max_bulk_len_set_at_run_time() {
    let (_dir, server) = start(&[]);
    let mut admin = server.raw();
    assert_eq!(admin.cmd(&["CONFIG", "SET", "proto-max-bulk-len", "1mb"]), ok());
    assert_eq!(
        admin.cmd(&["CONFIG", "GET", "proto-max-bulk-len"]),
        Resp::Array(vec![Resp::Bulk(b"proto-max-bulk-len".to_vec()), Resp::Bulk(b"1048576".to_vec())])
    );

    let at_limit = vec![b'x'; 1 << 20];
    let mut raw = server.raw();
    raw.send(&encode(&[b"SET", b"k", &at_limit])).unwrap();
    assert_eq!(raw.read_reply().unwrap(), ok(), "a bulk of exactly 1mb");

    let mut request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2097152\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'y', 2 << 20));
    request.extend_from_slice(b"\r\n");
    let (replies, closed) = send_and_drain(&server, &request);
    assert_eq!(replies, vec![err("ERR Protocol error: invalid bulk length")]);
    assert!(closed);
    assert_eq!(admin.cmd(&["STRLEN", "k"]), Resp::Int(1 << 20), "k is unchanged");
}

/// `maxclients 3`: the fourth connection is told so and closed; a place frees up
/// when a client leaves.
#[test]
fn maxclients_rejects_the_extra_client() {
    let (_dir, server) = start(&["--maxclients", "3"]);
    // The start-up probe's connection may still count for a moment: retry until
    // three clients are in.
    let mut clients: Vec<Raw> = Vec::new();
    let all_in = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        clients.clear();
        for _ in 0..3 {
            let mut c = server.raw();
            match c.cmd(&["PING"]) {
                Resp::Simple(s) if s == "PONG" => clients.push(c),
                _ => return false,
            }
        }
        true
    });
    assert!(all_in, "three clients could not connect with maxclients 3");

    let (replies, closed) = send_and_drain(&server, b"PING\r\n");
    assert_eq!(replies, vec![err("ERR max number of clients reached")]);
    assert!(closed, "the rejected client was not disconnected");

    let mut first = clients.remove(0);
    assert!(info_u64_raw(&mut first, "stats", "rejected_connections") >= 1);
    drop(first);
    let freed = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let mut c = server.raw();
        matches!(c.cmd(&["PING"]), Resp::Simple(s) if s == "PONG")
    });
    assert!(freed, "a place did not free up after a client left");
}

fn info_u64_raw(raw: &mut Raw, section: &str, field: &str) -> u64 {
    let text = match raw.cmd(&["INFO", section]) {
        Resp::Bulk(b) => String::from_utf8(b).unwrap(),
        Resp::Verbatim(_, b) => String::from_utf8(b).unwrap(),
        other => panic!("INFO replied {other:?}"),
    };
    support::info_lookup(&text, field).unwrap_or_else(|| panic!("INFO {section} has no {field}")).parse().unwrap()
}

#[test]
fn requirepass() {
    let (_dir, server) = start(&["--requirepass", "s3cret"]);
    let noauth = err("NOAUTH Authentication required.");
    let wrongpass = err("WRONGPASS invalid username-password pair or user is disabled.");

    let mut c = server.raw();
    assert_eq!(c.cmd(&["GET", "k"]), noauth);
    assert_eq!(c.cmd(&["PING"]), noauth);
    assert_eq!(c.cmd(&["SET", "k", "v"]), noauth);
    assert_eq!(c.cmd(&["AUTH", "wrong"]), wrongpass);
    assert_eq!(c.cmd(&["AUTH", "default", "wrong"]), wrongpass);
    assert_eq!(
        c.cmd(&["HELLO", "3"]),
        err("NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO AUTH <user> <pass> option can be used to authenticate the client and select \
             the RESP protocol version at the same time")
    );
    match c.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]) {
        Resp::Map(pairs) => {
            let proto = pairs.iter().find(|(k, _)| *k == Resp::Bulk(b"proto".to_vec())).map(|(_, v)| v.clone());
            assert_eq!(proto, Some(Resp::Int(3)));
        }
        other => panic!("HELLO 3 AUTH replied {other:?}"),
    }
    assert_eq!(c.cmd(&["GET", "k"]), Resp::Null, "authenticated, RESP3 null");

    let mut d = server.raw();
    assert_eq!(d.cmd(&["AUTH", "s3cret"]), ok());
    assert_eq!(d.cmd(&["SET", "k", "v"]), ok());
    assert_eq!(d.cmd(&["AUTH", "default", "s3cret"]), ok());
    assert_eq!(d.cmd(&["GET", "k"]), Resp::Bulk(b"v".to_vec()));
}

/// An incomplete command bigger than `client-query-buffer-limit` closes the
/// connection (Redis sends nothing first); nothing of it is applied.
#[test]
fn query_buffer_limit_closes_the_client() {
    let (_dir, server) = start(&[]);
    let mut admin = server.raw();
    assert_eq!(admin.cmd(&["CONFIG", "SET", "client-query-buffer-limit", "1mb"]), ok());

    // A 3 MB value announced, 2 MB of it sent: the command never completes.
    let mut request = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$3000000\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'x', 2_000_000));
    let (replies, closed) = send_and_drain(&server, &request);
    assert!(closed, "a client over the query buffer limit stayed connected");
    assert!(replies.is_empty(), "unexpected replies {replies:?}");
    assert_eq!(admin.cmd(&["EXISTS", "big"]), Resp::Int(0));
    assert_eq!(admin.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

/// A subscriber that never reads is disconnected once its pending output passes the
/// pub/sub hard limit, instead of growing the server's memory without bound.
#[test]
fn pubsub_output_buffer_limit_disconnects_a_slow_subscriber() {
    let (_dir, server) = start(&["--client-output-buffer-limit", "pubsub", "256kb", "128kb", "1"]);
    let mut slow = server.raw();
    assert_eq!(
        slow.cmd(&["SUBSCRIBE", "firehose"]),
        Resp::Array(vec![Resp::Bulk(b"subscribe".to_vec()), Resp::Bulk(b"firehose".to_vec()), Resp::Int(1)])
    );
    // A well-behaved subscriber on another channel, which must keep working.
    let mut good = server.raw();
    good.cmd(&["SUBSCRIBE", "calm"]);

    let mut publisher = server.raw();
    let payload = "p".repeat(64 * 1024);
    let numsub = |p: &mut Raw| match p.cmd(&["PUBSUB", "NUMSUB", "firehose"]) {
        Resp::Array(v) => match v.get(1) {
            Some(Resp::Int(n)) => *n,
            other => panic!("NUMSUB count {other:?}"),
        },
        other => panic!("PUBSUB NUMSUB replied {other:?}"),
    };
    // Up to 64 MB: far more than the kernel's socket buffers plus the 256 KiB limit.
    let mut published = 0usize;
    let mut disconnected = false;
    for i in 0..1024 {
        publisher.cmd(&["PUBLISH", "firehose", &payload]);
        published += payload.len();
        if i % 8 == 7 && numsub(&mut publisher) == 0 {
            disconnected = true;
            break;
        }
    }
    assert!(
        disconnected || wait_until(Duration::from_secs(3), Duration::from_millis(20), || numsub(&mut publisher) == 0),
        "a subscriber that never reads is still subscribed after {published} bytes"
    );
    eprintln!("slow subscriber dropped after {} KiB published", published / 1024);

    // The slow client's socket ends (after whatever the kernel had buffered).
    let drained = slow.drain(Duration::from_secs(5));
    assert!(drained.closed, "the slow subscriber's connection is still open");

    // Everyone else is fine.
    assert_eq!(publisher.cmd(&["PING"]), Resp::Simple("PONG".into()));
    assert_eq!(publisher.cmd(&["PUBLISH", "calm", "hello"]), Resp::Int(1));
    assert_eq!(
        good.read_reply().unwrap(),
        Resp::Array(vec![Resp::Bulk(b"message".to_vec()), Resp::Bulk(b"calm".to_vec()), Resp::Bulk(b"hello".to_vec())])
    );
    // minikv reports these disconnections in INFO stats (a field of newer Redis versions,
    // redis/redis#12476; 7.0 has none), so the counter must count them.
    assert!(
        info_u64_raw(&mut publisher, "stats", "client_output_buffer_limit_disconnections") >= 1,
        "INFO stats client_output_buffer_limit_disconnections did not count the disconnection"
    );
}

// ---- maxmemory ---------------------------------------------------------------------

const MAXMEMORY: u64 = 20 << 20;

fn value_of(len: usize, i: usize) -> String {
    let mut v = format!("{i:08}-");
    v.extend(std::iter::repeat_n('v', len - v.len()));
    v
}

/// Writes keys `prefix:i` for `range` with `len`-byte values, in pipelines of 100,
/// with `extra` args after the value (e.g. EX). Returns the errors, if any.
fn write_keys(
    con: &mut redis::Connection,
    prefix: &str,
    range: std::ops::Range<usize>,
    len: usize,
    extra: impl Fn(usize) -> Vec<String>,
) -> Vec<redis::RedisError> {
    let mut errors = Vec::new();
    let ends: Vec<usize> = range.clone().step_by(100).collect();
    for start in ends {
        let mut pipe = redis::pipe();
        for i in start..(start + 100).min(range.end) {
            pipe.cmd("SET").arg(format!("{prefix}:{i}")).arg(value_of(len, i)).arg(extra(i)).ignore();
        }
        if let Err(e) = pipe.query::<()>(con) {
            errors.push(e);
        }
    }
    errors
}

/// Fraction of `prefix:i` for `range` that still exist (MGET, so no keys family).
fn surviving(con: &mut redis::Connection, prefix: &str, range: std::ops::Range<usize>) -> f64 {
    let total = range.len();
    let mut alive = 0;
    let names: Vec<String> = range.map(|i| format!("{prefix}:{i}")).collect();
    for chunk in names.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(con).unwrap();
        alive += values.iter().filter(|v| v.is_some()).count();
    }
    alive as f64 / total as f64
}

#[test]
fn maxmemory_noeviction_refuses_writes_with_oom() {
    let (_dir, server) = start(&["--maxmemory", "20mb", "--maxmemory-policy", "noeviction"]);
    let mut con = server.client();
    let mut oom = None;
    let mut written = 0;
    // 10 KB values: 20 MB is reached after about 2000; stop at 5000 (50 MB).
    for i in 0..5000 {
        let r: redis::RedisResult<()> =
            redis::cmd("SET").arg(format!("k:{i}")).arg(value_of(10_000, i)).query(&mut con);
        match r {
            Ok(()) => written += 1,
            Err(e) => {
                oom = Some(e);
                break;
            }
        }
    }
    let e = oom.expect("no write was refused with maxmemory 20mb and 50 MB written");
    assert_eq!(e.code(), Some("OOM"), "{e}");
    assert_eq!(e.detail(), Some("command not allowed when used memory > 'maxmemory'."), "{e}");
    let used = info_u64(&mut con, "memory", "used_memory");
    assert!(written > 1000 && used > MAXMEMORY * 8 / 10, "refused after only {written} writes, used_memory {used}");
    assert_eq!(info_u64(&mut con, "stats", "evicted_keys"), 0);

    // Reads and deletes still work (they are not DENYOOM), and free room for writes.
    let v: String = redis::cmd("GET").arg("k:0").query(&mut con).unwrap();
    assert_eq!(v, value_of(10_000, 0));
    let names: Vec<String> = (0..written / 2).map(|i| format!("k:{i}")).collect();
    let deleted: usize = redis::cmd("DEL").arg(&names).query(&mut con).unwrap();
    assert_eq!(deleted, written / 2);
    let () = redis::cmd("SET").arg("after-del").arg("fits again").query(&mut con).unwrap();
}

/// allkeys-lru: writes never fail, used_memory stays near the limit, and keys read
/// recently survive far better than keys nobody touched (a coarse statistical check
/// of the approximate LRU; the clock has 1 s resolution, hence the pauses).
#[test]
fn maxmemory_allkeys_lru_evicts_cold_keys_first() {
    let (_dir, server) = start(&["--maxmemory", "20mb", "--maxmemory-policy", "allkeys-lru"]);
    let mut con = server.client();
    const HOT: usize = 200;
    const COLD: usize = 4000;
    const PHASE: usize = 8000;
    let no_ttl = |_| Vec::new();
    assert!(write_keys(&mut con, "hot", 0..HOT, 1000, no_ttl).is_empty());
    assert!(write_keys(&mut con, "cold", 0..COLD, 1000, no_ttl).is_empty());
    let hot_names: Vec<String> = (0..HOT).map(|i| format!("hot:{i}")).collect();
    let touch_hot = |con: &mut redis::Connection| {
        let _: Vec<Option<String>> = redis::cmd("MGET").arg(&hot_names).query(con).unwrap();
    };
    for phase in 0..4 {
        // A new LRU second, so that "touched now" and "written earlier" differ.
        std::thread::sleep(Duration::from_millis(1050));
        for chunk in (0..PHASE).step_by(500) {
            touch_hot(&mut con);
            let start = phase * PHASE + chunk;
            let errors = write_keys(&mut con, "fill", start..start + 500, 1000, no_ttl);
            assert!(errors.is_empty(), "a write failed under allkeys-lru: {:?}", errors[0]);
        }
    }
    let evicted = info_u64(&mut con, "stats", "evicted_keys");
    let used = info_u64(&mut con, "memory", "used_memory");
    let hot = surviving(&mut con, "hot", 0..HOT);
    let cold = surviving(&mut con, "cold", 0..COLD);
    let first_fill = surviving(&mut con, "fill", 0..PHASE);
    let last_fill = surviving(&mut con, "fill", 3 * PHASE..4 * PHASE);
    eprintln!(
        "allkeys-lru: evicted {evicted}, used_memory {used}; surviving: hot {hot:.2}, \
         cold {cold:.2}, first fill phase {first_fill:.2}, last fill phase {last_fill:.2}"
    );
    assert!(evicted > 0, "nothing was evicted after writing ~40 MB into 20 MB");
    assert!(
        (MAXMEMORY / 2..=MAXMEMORY + MAXMEMORY / 10).contains(&used),
        "used_memory {used} is not near maxmemory {MAXMEMORY}"
    );
    assert!(hot >= 0.8 && hot >= cold + 0.5, "recently read keys did not survive better: hot {hot:.2}, cold {cold:.2}");
    assert!(
        last_fill > first_fill,
        "older writes survived better than newer ones: first {first_fill:.2}, last {last_fill:.2}"
    );
}

/// volatile-ttl: only keys with a TTL are evicted, shortest TTL first; keys without
/// a TTL all survive.
#[test]
fn maxmemory_volatile_ttl_evicts_only_keys_with_ttl() {
    let (_dir, server) = start(&["--maxmemory", "20mb", "--maxmemory-policy", "volatile-ttl"]);
    let mut con = server.client();
    const PERSISTENT: usize = 6000;
    const VOLATILE: usize = 30_000;
    assert!(write_keys(&mut con, "p", 0..PERSISTENT, 1000, |_| Vec::new()).is_empty());
    // Later keys get shorter TTLs, so "shortest TTL first" and "oldest first" disagree.
    let errors = write_keys(&mut con, "v", 0..VOLATILE, 1000, |i| vec!["EX".to_string(), (100_000 - i).to_string()]);
    assert!(errors.is_empty(), "a write failed under volatile-ttl: {:?}", errors[0]);
    let evicted = info_u64(&mut con, "stats", "evicted_keys");
    let persistent = surviving(&mut con, "p", 0..PERSISTENT);
    let early = surviving(&mut con, "v", 0..VOLATILE / 4);
    let late = surviving(&mut con, "v", VOLATILE * 3 / 4..VOLATILE);
    eprintln!(
        "volatile-ttl: evicted {evicted}; surviving: persistent {persistent:.2}, \
         long-TTL (early) {early:.2}, short-TTL (late) {late:.2}"
    );
    assert!(evicted > 0, "nothing was evicted");
    assert_eq!(persistent, 1.0, "a key without a TTL was evicted under volatile-ttl");
    assert!(early > late, "keys with the longest TTLs did not survive better: early {early:.2}, late {late:.2}");
}

// ---- fuzz --------------------------------------------------------------------------

/// Commands the fuzzer builds requests from. Nothing that stops the server, sleeps,
/// or allocates by an argument's value (SETRANGE, DEBUG, SHUTDOWN, CONFIG...).
const VOCABULARY: &[&[&str]] = &[
    &["SET", "k", "v"],
    &["GET", "k"],
    &["INCR", "n"],
    &["DEL", "k", "n"],
    &["MSET", "a", "1", "b", "2"],
    &["MGET", "a", "b", "c"],
    &["APPEND", "k", "tail"],
    &["LPUSH", "l", "x", "y"],
    &["LRANGE", "l", "0", "-1"],
    &["HSET", "h", "f", "v"],
    &["HGETALL", "h"],
    &["SADD", "s", "m1", "m2"],
    &["SMEMBERS", "s"],
    &["ZADD", "z", "1.5", "m"],
    &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
    &["EXPIRE", "k", "100"],
    &["TTL", "k"],
    &["PING"],
    &["ECHO", "hello"],
    &["HELLO", "3"],
    &["SELECT", "1"],
    &["MULTI"],
    &["EXEC"],
    &["SUBSCRIBE", "ch"],
];

fn fuzz_request(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut out = Vec::new();
    match rng.u8(0..4) {
        // Random bytes.
        0 => out.extend((0..rng.usize(1..512)).map(|_| rng.u8(..))),
        // Valid commands, then cut anywhere.
        1 => {
            for _ in 0..rng.usize(1..4) {
                let cmd = VOCABULARY[rng.usize(..VOCABULARY.len())];
                let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
                out.extend(encode(&args));
            }
            out.truncate(rng.usize(0..=out.len()));
        }
        // Valid commands with a few bytes flipped, inserted or removed.
        2 => {
            for _ in 0..rng.usize(1..4) {
                let cmd = VOCABULARY[rng.usize(..VOCABULARY.len())];
                let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
                out.extend(encode(&args));
            }
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..out.len());
                match rng.u8(0..3) {
                    0 => out[at] = rng.u8(..),
                    1 => out.insert(at, rng.u8(..)),
                    _ => {
                        out.remove(at);
                    }
                }
                if out.is_empty() {
                    out.push(b'*');
                }
            }
        }
        // Inline commands with quotes, escapes and stray bytes.
        _ => {
            const PIECES: &[&str] = &[
                "set", "get", "ping", " ", "  ", "\"", "'", "\\x4", "\\x41", "\\n", "k", "v", "\r\n", "\n", "\"a b\"",
                "'c d'", "\t", "\0",
            ];
            for _ in 0..rng.usize(1..24) {
                out.extend_from_slice(PIECES[rng.usize(..PIECES.len())].as_bytes());
            }
        }
    }
    out
}

/// Random and malformed requests on fresh connections: every reply is valid RESP, the
/// server closes each connection after the client's end-of-file, and it answers PING
/// at the end.
#[test]
fn fuzz_over_tcp_never_breaks_the_server() {
    // Each closed connection leaves a TIME_WAIT on our side (we send EOF first); 10k
    // stays well inside the ~28k ephemeral ports towards one server port.
    const CONNECTIONS: usize = 10_000;
    const BUDGET_SECS: usize = 12;
    let connections = support::env_count("MINIKV_FUZZ_CONNECTIONS", CONNECTIONS);
    let budget = Duration::from_secs(support::env_count("MINIKV_FUZZ_SECONDS", BUDGET_SECS) as u64);
    let seed = support::seed("fuzz_over_tcp");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (_dir, mut server) = start(&[]);
    let started = Instant::now();
    let mut sent = 0;
    for i in 0..connections {
        if started.elapsed() > budget {
            break;
        }
        let request = fuzz_request(&mut rng);
        let mut raw = server.raw();
        let _ = raw.send(&request);
        raw.shutdown_write();
        let drained = raw.drain(Duration::from_secs(5));
        let shown = || String::from_utf8_lossy(&request[..request.len().min(200)]).into_owned();
        assert!(
            drained.closed,
            "seed {seed}, case {i}: the server kept the connection open 5 s after EOF; sent {:?}",
            shown()
        );
        match parse_all(&drained.bytes) {
            Ok((_, 0)) => {}
            Ok((_, left)) => panic!("seed {seed}, case {i}: {left} bytes of a partial reply; sent {:?}", shown()),
            Err(e) => panic!(
                "seed {seed}, case {i}: invalid RESP ({e}) in {:?}; sent {:?}",
                String::from_utf8_lossy(&drained.bytes),
                shown()
            ),
        }
        sent += 1;
    }
    eprintln!("fuzz: {sent} connections in {:?}", started.elapsed());
    assert!(server.is_running(), "the server died during the fuzz loop:\n{}", server.stderr());
    let mut raw = server.raw();
    assert_eq!(raw.cmd(&["PING"]), Resp::Simple("PONG".into()));
    // Every fuzz connection was cleaned up: only this one is left.
    let leaked = !wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        info_u64_raw(&mut raw, "clients", "connected_clients") == 1
    });
    assert!(
        !leaked,
        "{} clients still registered after the fuzz connections closed",
        info_u64_raw(&mut raw, "clients", "connected_clients")
    );
}

// ---- graceful shutdown -------------------------------------------------------------

/// SIGTERM while a client is in the middle of a long pipeline: the server stops
/// reading, answers every command it read, syncs the AOF and exits 0. After a restart
/// exactly the acknowledged commands are there: no reply was lost for a command that
/// ran, and nothing ran without its reply.
///
/// This is a promise redis-server 7.0 does not make: it closes clients at shutdown
/// without answering what they sent, and fails this test (run it with
/// `MINIKV_TEST_BINARY` pointing at a wrapper that starts redis-server: hundreds of
/// SETs applied without a reply). That is the broken variant this test catches.
#[test]
fn sigterm_drains_in_flight_pipeline_and_syncs_the_aof() {
    const COMMANDS: usize = 50_000;
    let (_dir, mut server) = start(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let raw = server.raw();
    let mut writer = raw.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        for chunk in (0..COMMANDS).step_by(100) {
            let mut bytes = Vec::new();
            for i in chunk..chunk + 100 {
                let key = format!("g:{i}");
                let value = i.to_string();
                bytes.extend(encode(&[b"SET", key.as_bytes(), value.as_bytes()]));
            }
            if writer.write_all(&bytes).is_err() {
                return; // the server stopped reading and closed
            }
        }
    });
    let receiver = std::thread::spawn(move || {
        let mut raw = raw;
        let mut replies = 0usize;
        loop {
            match raw.read_reply() {
                Ok(Resp::Simple(s)) if s == "OK" => replies += 1,
                Ok(other) => panic!("unexpected reply {other:?} after {replies} replies"),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    panic!("invalid RESP after {replies} replies: {e}")
                }
                Err(_) => return replies, // closed
            }
        }
    });
    // Let the pipeline get going, then stop the server in the middle of it.
    let mut probe = server.client();
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(5), || {
            let n: u64 = redis::cmd("DBSIZE").query(&mut probe).unwrap();
            n >= 2000
        }),
        "the pipeline did not get going"
    );
    drop(probe);
    let status = server.terminate(Duration::from_secs(20));
    let acknowledged = receiver.join().expect("receiver");
    sender.join().expect("sender");
    assert!(status.success(), "exit status {status:?} after SIGTERM");
    assert!(acknowledged < COMMANDS, "the whole pipeline finished before SIGTERM; the test proved nothing");
    eprintln!("sigterm: {acknowledged} of {COMMANDS} commands acknowledged");

    server.restart();
    let mut con = server.client();
    let keys: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(
        keys,
        acknowledged,
        "after restart {keys} keys exist but {acknowledged} SETs were acknowledged: \
         {} commands ran without their reply reaching the client",
        keys as i64 - acknowledged as i64
    );
    let last = format!("g:{}", acknowledged - 1);
    let v: Option<String> = redis::cmd("GET").arg(&last).query(&mut con).unwrap();
    assert_eq!(v, Some((acknowledged - 1).to_string()));
}
