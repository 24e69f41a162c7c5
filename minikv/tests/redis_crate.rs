//! minikv through the `redis` crate (0.32, sync API), in RESP2 and in RESP3.
//!
//! A real client library is pickier than redis-cli: it decodes every RESP3 type into
//! its own `Value`, maps error prefixes to error kinds, pipelines, wraps MULTI/EXEC,
//! and keeps a subscribed connection in a special mode. Each test here runs the same
//! steps over a RESP2 and a RESP3 connection (`?protocol=resp3` makes the crate send
//! `HELLO 3` on connect) and checks what the application sees.
//!
//! Left out: the async API (same codec and parser as the sync one) and cluster mode.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::{Commands, ErrorKind, Value};
use support::{wait_until, Server};

/// Both protocols, named for assertion messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Resp2,
    Resp3,
}

const PROTOCOLS: [Proto; 2] = [Proto::Resp2, Proto::Resp3];

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    (dir, server)
}

fn connect(server: &Server, proto: Proto) -> redis::Connection {
    match proto {
        Proto::Resp2 => server.client(),
        Proto::Resp3 => server.client_resp3(),
    }
}

/// Keys are prefixed by protocol so the two passes never see each other's data.
fn key(proto: Proto, name: &str) -> String {
    format!("{proto:?}:{name}")
}

#[test]
fn strings_round_trip() {
    let (_dir, server) = start();
    for proto in PROTOCOLS {
        let mut con = connect(&server, proto);
        let k = |n: &str| key(proto, n);

        let () = con.set(k("s"), "hello").unwrap();
        let got: String = con.get(k("s")).unwrap();
        assert_eq!(got, "hello", "{proto:?}");
        let missing: Option<String> = con.get(k("missing")).unwrap();
        assert_eq!(missing, None, "{proto:?}: GET of a missing key is nil");
        let raw: Value = redis::cmd("GET").arg(k("missing")).query(&mut con).unwrap();
        assert_eq!(raw, Value::Nil, "{proto:?}");

        // Binary safety: every byte value, including CR, LF and NUL.
        let bytes: Vec<u8> = (0..=255u8).collect();
        let () = con.set(k("bin"), &bytes[..]).unwrap();
        let back: Vec<u8> = con.get(k("bin")).unwrap();
        assert_eq!(back, bytes, "{proto:?}: binary value round trip");

        assert_eq!(con.incr::<_, _, i64>(k("n"), 1).unwrap(), 1);
        assert_eq!(con.incr::<_, _, i64>(k("n"), 41).unwrap(), 42);
        assert_eq!(con.decr::<_, _, i64>(k("n"), 2).unwrap(), 40);
        let f: f64 = con.incr(k("f"), 1.5f64).unwrap();
        assert_eq!(f, 1.5, "{proto:?}: INCRBYFLOAT");
        assert_eq!(con.append::<_, _, i64>(k("s"), " world").unwrap(), 11);
        assert_eq!(con.strlen::<_, i64>(k("s")).unwrap(), 11);
        let range: String = con.getrange(k("s"), 0, 4).unwrap();
        assert_eq!(range, "hello");

        let () = con.mset(&[(k("m1"), "a"), (k("m2"), "b")]).unwrap();
        let many: Vec<Option<String>> = con.mget(&[k("m1"), k("nope"), k("m2")]).unwrap();
        assert_eq!(many, vec![Some("a".into()), None, Some("b".into())], "{proto:?}: MGET keeps nil holes");
        let set_nx: bool = con.set_nx(k("m1"), "z").unwrap();
        assert!(!set_nx, "{proto:?}: SETNX on an existing key");
        let old: String = con.getset(k("m1"), "c").unwrap();
        assert_eq!(old, "a");
        let gone: Option<String> = redis::cmd("GETDEL").arg(k("m1")).query(&mut con).unwrap();
        assert_eq!(gone.as_deref(), Some("c"));
        let after: Option<String> = con.get(k("m1")).unwrap();
        assert_eq!(after, None);
    }
}

/// TTLs through the crate's typed commands. Needs EXPIRE/TTL/PERSIST (keys family).
#[test]
fn expiry() {
    let (_dir, server) = start();
    for proto in PROTOCOLS {
        let mut con = connect(&server, proto);
        let k = |n: &str| key(proto, n);

        let () = con.set_ex(k("ex"), "v", 100).unwrap();
        let ttl: i64 = con.ttl(k("ex")).unwrap();
        assert!((99..=100).contains(&ttl), "{proto:?}: TTL after SETEX 100 is {ttl}");
        let pttl: i64 = con.pttl(k("ex")).unwrap();
        assert!((98_000..=100_000).contains(&pttl), "{proto:?}: PTTL {pttl}");
        let persisted: bool = con.persist(k("ex")).unwrap();
        assert!(persisted);
        assert_eq!(con.ttl::<_, i64>(k("ex")).unwrap(), -1, "{proto:?}: no TTL");
        assert_eq!(con.ttl::<_, i64>(k("none")).unwrap(), -2, "{proto:?}: no key");

        // A short TTL really expires, without anyone deleting the key.
        let () = con.pset_ex(k("short"), "v", 150).unwrap();
        let present: Option<String> = con.get(k("short")).unwrap();
        assert_eq!(present.as_deref(), Some("v"));
        std::thread::sleep(Duration::from_millis(300));
        let expired: Option<String> = con.get(k("short")).unwrap();
        assert_eq!(expired, None, "{proto:?}: key outlived PX 150");

        let () = con.set(k("e2"), "v").unwrap();
        let set: bool = con.pexpire(k("e2"), 150).unwrap();
        assert!(set);
        std::thread::sleep(Duration::from_millis(300));
        let exists: bool = con.exists(k("e2")).unwrap();
        assert!(!exists, "{proto:?}: key outlived PEXPIRE 150");
    }
}

/// 1000 commands in one pipeline: replies come back complete and in order.
#[test]
fn pipeline_of_1000_commands() {
    let (_dir, server) = start();
    for proto in PROTOCOLS {
        let mut con = connect(&server, proto);
        let counter = key(proto, "counter");
        let mut pipe = redis::pipe();
        for i in 0..500 {
            pipe.cmd("INCR").arg(&counter);
            pipe.cmd("SET").arg(key(proto, &format!("p:{i}"))).arg(i).ignore();
        }
        let replies: Vec<i64> = pipe.query(&mut con).unwrap();
        assert_eq!(replies, (1..=500).collect::<Vec<i64>>(), "{proto:?}");

        // Read them back in a second pipeline of 1000 GETs.
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("GET").arg(key(proto, &format!("p:{}", i % 500)));
        }
        let values: Vec<i64> = pipe.query(&mut con).unwrap();
        let expected: Vec<i64> = (0..1000).map(|i| i % 500).collect();
        assert_eq!(values, expected, "{proto:?}");
    }
}

#[test]
fn transactions_with_pipe_atomic() {
    let (_dir, server) = start();
    for proto in PROTOCOLS {
        let mut con = connect(&server, proto);
        let k = |n: &str| key(proto, n);

        let (set, n, got): (bool, i64, String) =
            redis::pipe().atomic().set(k("a"), "1").incr(k("a"), 10).get(k("a")).query(&mut con).unwrap();
        assert!(set);
        assert_eq!((n, got.as_str()), (11, "11"), "{proto:?}");

        // An error at run time inside EXEC: the other commands still apply (Redis has
        // no rollback), and the crate reports the error.
        let err = redis::pipe()
            .atomic()
            .set(k("b"), "not a number")
            .incr(k("b"), 1)
            .set(k("c"), "applied")
            .query::<()>(&mut con)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResponseError, "{proto:?}: {err}");
        let c: Option<String> = con.get(k("c")).unwrap();
        assert_eq!(c.as_deref(), Some("applied"), "{proto:?}: EXEC ran the rest");

        // An error at queue time aborts the whole transaction: EXECABORT.
        let () = redis::cmd("MULTI").query(&mut con).unwrap();
        let queued: String = redis::cmd("SET").arg(k("d")).arg("x").query(&mut con).unwrap();
        assert_eq!(queued, "QUEUED");
        let bad = redis::cmd("SET").arg(k("d")).query::<()>(&mut con).unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::ResponseError, "{proto:?}: {bad}");
        let abort = redis::cmd("EXEC").query::<()>(&mut con).unwrap_err();
        assert_eq!(abort.kind(), ErrorKind::ExecAbortError, "{proto:?}: {abort}");
        let d: Option<String> = con.get(k("d")).unwrap();
        assert_eq!(d, None, "{proto:?}: nothing of an aborted transaction applies");

        // WATCH: a change by another client makes EXEC return nil, which the crate
        // turns into `None` for an atomic pipeline.
        let mut other = connect(&server, proto);
        let () = redis::cmd("WATCH").arg(k("w")).query(&mut con).unwrap();
        let () = other.set(k("w"), "changed").unwrap();
        let result: Option<(bool,)> = redis::pipe().atomic().set(k("w"), "mine").query(&mut con).unwrap();
        assert_eq!(result, None, "{proto:?}: EXEC after a watched change");
        let w: String = con.get(k("w")).unwrap();
        assert_eq!(w, "changed");
    }
}

/// Hashes, lists, sets and sorted sets round trip through the crate's typed API.
/// Needs the hash, list, set and zset families.
#[test]
fn aggregates_round_trip() {
    let (_dir, server) = start();
    for proto in PROTOCOLS {
        let mut con = connect(&server, proto);
        let k = |n: &str| key(proto, n);

        // Hash.
        let () = con.hset_multiple(k("h"), &[("f1", "v1"), ("f2", "v2"), ("f3", "v3")]).unwrap();
        let all: HashMap<String, String> = con.hgetall(k("h")).unwrap();
        let expected: HashMap<String, String> = [("f1", "v1"), ("f2", "v2"), ("f3", "v3")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(all, expected, "{proto:?}: HGETALL");
        let v: Option<String> = con.hget(k("h"), "f2").unwrap();
        assert_eq!(v.as_deref(), Some("v2"));
        assert_eq!(con.hincr::<_, _, _, i64>(k("h"), "n", 5).unwrap(), 5);
        assert_eq!(con.hlen::<_, i64>(k("h")).unwrap(), 4);
        assert_eq!(con.hdel::<_, _, i64>(k("h"), "f1").unwrap(), 1);
        let exists: bool = con.hexists(k("h"), "f1").unwrap();
        assert!(!exists);

        // List.
        assert_eq!(con.rpush::<_, _, i64>(k("l"), &["a", "b", "c"]).unwrap(), 3);
        assert_eq!(con.lpush::<_, _, i64>(k("l"), "z").unwrap(), 4);
        let items: Vec<String> = con.lrange(k("l"), 0, -1).unwrap();
        assert_eq!(items, ["z", "a", "b", "c"], "{proto:?}: LRANGE");
        let popped: Option<String> = con.rpop(k("l"), None).unwrap();
        assert_eq!(popped.as_deref(), Some("c"));
        assert_eq!(con.llen::<_, i64>(k("l")).unwrap(), 3);
        let idx: String = con.lindex(k("l"), -1).unwrap();
        assert_eq!(idx, "b");

        // Set.
        assert_eq!(con.sadd::<_, _, i64>(k("s"), &["x", "y", "z", "x"]).unwrap(), 3);
        let members: HashSet<String> = con.smembers(k("s")).unwrap();
        assert_eq!(members, ["x", "y", "z"].into_iter().map(String::from).collect(), "{proto:?}: SMEMBERS");
        let is: bool = con.sismember(k("s"), "y").unwrap();
        assert!(is);
        assert_eq!(con.srem::<_, _, i64>(k("s"), "y").unwrap(), 1);
        assert_eq!(con.scard::<_, i64>(k("s")).unwrap(), 2);

        // Sorted set.
        let added: i64 = con.zadd_multiple(k("z"), &[(1.5, "one"), (2.5, "two"), (-3.0, "neg")]).unwrap();
        assert_eq!(added, 3);
        let ranked: Vec<(String, f64)> = con.zrange_withscores(k("z"), 0, -1).unwrap();
        assert_eq!(
            ranked,
            vec![("neg".to_string(), -3.0), ("one".to_string(), 1.5), ("two".to_string(), 2.5)],
            "{proto:?}: ZRANGE WITHSCORES"
        );
        let score: Option<f64> = con.zscore(k("z"), "two").unwrap();
        assert_eq!(score, Some(2.5));
        let rank: Option<i64> = con.zrank(k("z"), "one").unwrap();
        assert_eq!(rank, Some(1));
        let inc: f64 = con.zincr(k("z"), "one", 10).unwrap();
        assert_eq!(inc, 11.5);
        let by_score: Vec<String> = con.zrangebyscore(k("z"), "(0", "+inf").unwrap();
        assert_eq!(by_score, ["two", "one"]);
    }
}

/// RESP3 replies decode to the crate's RESP3 types (maps, sets, doubles, verbatim
/// strings), RESP2 replies to their flat RESP2 forms, and both decode to the same Rust
/// types. HELLO answers with the server's identity.
#[test]
fn hello_and_resp3_types() {
    let (_dir, server) = start();

    // HELLO from each protocol. The crate already sent HELLO 3 for the RESP3
    // connection; sending it again must answer the same map.
    for (proto, version) in [(Proto::Resp2, 2), (Proto::Resp3, 3)] {
        let mut con = connect(&server, proto);
        let raw: Value = redis::cmd("HELLO").arg(version).query(&mut con).unwrap();
        match (proto, &raw) {
            (Proto::Resp3, Value::Map(_)) | (Proto::Resp2, Value::Array(_)) => {}
            _ => panic!("{proto:?}: HELLO {version} replied {raw:?}"),
        }
        let hello: HashMap<String, Value> = redis::from_redis_value(&raw).unwrap();
        let text = |f: &str| -> String { redis::from_redis_value(&hello[f]).unwrap() };
        assert_eq!(text("server"), "redis", "{proto:?}: {hello:?}");
        assert_eq!(text("version"), minikv::REDIS_VERSION);
        assert_eq!(text("mode"), "standalone");
        assert_eq!(text("role"), "master");
        let p: i64 = redis::from_redis_value(&hello["proto"]).unwrap();
        assert_eq!(p, version);
        let id: i64 = redis::from_redis_value(&hello["id"]).unwrap();
        assert!(id > 0);
    }

    // CONFIG GET: a map in RESP3, a flat array in RESP2.
    let mut c2 = connect(&server, Proto::Resp2);
    let mut c3 = connect(&server, Proto::Resp3);
    let v2: Value = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").arg("maxmemory").query(&mut c2).unwrap();
    let v3: Value = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").arg("maxmemory").query(&mut c3).unwrap();
    assert!(matches!(&v2, Value::Array(a) if a.len() == 4), "RESP2 CONFIG GET: {v2:?}");
    assert!(matches!(&v3, Value::Map(m) if m.len() == 2), "RESP3 CONFIG GET: {v3:?}");
    let m2: HashMap<String, String> = redis::from_redis_value(&v2).unwrap();
    let m3: HashMap<String, String> = redis::from_redis_value(&v3).unwrap();
    assert_eq!(m2, m3);
    assert_eq!(m3["maxmemory-policy"], "noeviction");

    // INFO: a verbatim string in RESP3, a bulk string in RESP2; same text either way.
    let i3: Value = redis::cmd("INFO").arg("server").query(&mut c3).unwrap();
    assert!(matches!(i3, Value::VerbatimString { .. }), "RESP3 INFO: {i3:?}");
    let i2: Value = redis::cmd("INFO").arg("server").query(&mut c2).unwrap();
    assert!(matches!(i2, Value::BulkString(_)), "RESP2 INFO: {i2:?}");
    let text: String = redis::from_redis_value(&i3).unwrap();
    assert!(text.contains("redis_version:"), "{text}");

    // Aggregates (need the hash, set and zset families).
    let () = c3.hset_multiple("h", &[("a", "1"), ("b", "2")]).unwrap();
    let h3: Value = redis::cmd("HGETALL").arg("h").query(&mut c3).unwrap();
    let h2: Value = redis::cmd("HGETALL").arg("h").query(&mut c2).unwrap();
    assert!(matches!(&h3, Value::Map(m) if m.len() == 2), "RESP3 HGETALL: {h3:?}");
    assert!(matches!(&h2, Value::Array(a) if a.len() == 4), "RESP2 HGETALL: {h2:?}");
    let hm3: HashMap<String, String> = redis::from_redis_value(&h3).unwrap();
    let hm2: HashMap<String, String> = redis::from_redis_value(&h2).unwrap();
    assert_eq!(hm3, hm2);

    let _: i64 = c3.sadd("s", &["a", "b"]).unwrap();
    let s3: Value = redis::cmd("SMEMBERS").arg("s").query(&mut c3).unwrap();
    assert!(matches!(&s3, Value::Set(s) if s.len() == 2), "RESP3 SMEMBERS: {s3:?}");
    let s2: Value = redis::cmd("SMEMBERS").arg("s").query(&mut c2).unwrap();
    assert!(matches!(&s2, Value::Array(a) if a.len() == 2), "RESP2 SMEMBERS: {s2:?}");

    let _: i64 = c3.zadd("z", "m", 2.5).unwrap();
    let d3: Value = redis::cmd("ZSCORE").arg("z").arg("m").query(&mut c3).unwrap();
    assert_eq!(d3, Value::Double(2.5), "RESP3 ZSCORE is a double");
    let d2: Value = redis::cmd("ZSCORE").arg("z").arg("m").query(&mut c2).unwrap();
    assert_eq!(d2, Value::BulkString(b"2.5".to_vec()), "RESP2 ZSCORE is a bulk");
    let missing3: Value = redis::cmd("ZSCORE").arg("z").arg("nope").query(&mut c3).unwrap();
    assert_eq!(missing3, Value::Nil);
}

/// Pub/sub through the crate's PubSub API: channel and pattern messages, in both
/// protocols (RESP3 delivers them as push frames).
#[test]
fn pubsub() {
    let (_dir, server) = start();
    for proto in PROTOCOLS {
        let mut sub_con = connect(&server, proto);
        let mut publisher = connect(&server, Proto::Resp2);
        let channel = key(proto, "news");
        let pattern = format!("{proto:?}:n*");

        let mut sub = sub_con.as_pubsub();
        sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        sub.subscribe(&channel).unwrap();
        sub.psubscribe(&pattern).unwrap();
        // In RESP3 the crate does not wait for the confirmation; wait for the server
        // to have registered both before publishing.
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
                let n: Vec<(String, i64)> =
                    redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query(&mut publisher).unwrap();
                let p: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut publisher).unwrap();
                n[0].1 == 1 && p >= 1
            }),
            "{proto:?}: subscription never registered"
        );

        let receivers: i64 = publisher.publish(&channel, "hello").unwrap();
        assert_eq!(receivers, 2, "{proto:?}: channel + pattern subscriber");
        let mut got = Vec::new();
        for _ in 0..2 {
            let msg = sub.get_message().unwrap();
            let payload: String = msg.get_payload().unwrap();
            let pat: Option<String> = msg.from_pattern().then(|| msg.get_pattern().unwrap());
            got.push((msg.get_channel_name().to_string(), payload, pat));
        }
        got.sort();
        let mut expected = vec![
            (channel.clone(), "hello".to_string(), None),
            (channel.clone(), "hello".to_string(), Some(pattern.clone())),
        ];
        expected.sort();
        assert_eq!(got, expected, "{proto:?}");

        // A binary payload arrives intact.
        let payload: Vec<u8> = (0..=255u8).rev().collect();
        let _: i64 = publisher.publish(&channel, &payload[..]).unwrap();
        for _ in 0..2 {
            let msg = sub.get_message().unwrap();
            let p: Vec<u8> = msg.get_payload().unwrap();
            assert_eq!(p, payload, "{proto:?}");
        }

        sub.unsubscribe(&channel).unwrap();
        sub.punsubscribe(&pattern).unwrap();
        drop(sub);
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
                let n: Vec<(String, i64)> =
                    redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query(&mut publisher).unwrap();
                n[0].1 == 0
            }),
            "{proto:?}: unsubscribe not registered"
        );
        // The connection works normally again after leaving pub/sub mode.
        let pong: String = redis::cmd("PING").query(&mut sub_con).unwrap();
        assert_eq!(pong, "PONG", "{proto:?}");
        let receivers: i64 = publisher.publish(&channel, "nobody").unwrap();
        assert_eq!(receivers, 0);
    }
}

/// Server errors arrive as the crate's error kinds, with Redis's code and text.
#[test]
fn server_errors_map_to_error_kinds() {
    let (_dir, server) = start();
    for proto in PROTOCOLS {
        let mut con = connect(&server, proto);
        let k = |n: &str| key(proto, n);

        // -ERR: ResponseError.
        let () = con.set(k("str"), "abc").unwrap();
        let e = con.incr::<_, _, i64>(k("str"), 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResponseError, "{proto:?}: {e}");
        assert_eq!(e.code(), Some("ERR"));
        assert_eq!(e.detail(), Some("value is not an integer or out of range"));

        let e = redis::cmd("NOSUCHCOMMAND").arg("x").query::<()>(&mut con).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResponseError, "{proto:?}: {e}");
        assert!(e.detail().unwrap_or("").starts_with("unknown command 'NOSUCHCOMMAND'"), "{proto:?}: {e}");

        let e = redis::cmd("GET").query::<()>(&mut con).unwrap_err();
        assert_eq!(e.detail(), Some("wrong number of arguments for 'get' command"), "{proto:?}");

        // -EXECABORT: ExecAbortError (a queued command had the wrong arity).
        let () = redis::cmd("MULTI").query(&mut con).unwrap();
        let _ = redis::cmd("INCR").query::<()>(&mut con).unwrap_err();
        let e = redis::cmd("EXEC").query::<()>(&mut con).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ExecAbortError, "{proto:?}: {e}");

        // A client-side type mismatch is the crate's TypeError, not a server error.
        let e = con.get::<_, i64>(k("str")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TypeError, "{proto:?}: {e}");

        // -WRONGTYPE: an extension error with the code (needs the list family).
        let e = con.lpush::<_, _, i64>(k("str"), "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ExtensionError, "{proto:?}: {e}");
        assert_eq!(e.code(), Some("WRONGTYPE"));
        assert_eq!(e.detail(), Some("Operation against a key holding the wrong kind of value"));
        // The connection is still usable after every error above.
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
    }
}

/// requirepass as the crate sees it: NOAUTH, a failed login, a good one.
#[test]
fn authentication() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--requirepass", "s3cret"]);
    for proto in PROTOCOLS {
        // No password: connecting works (the crate sends nothing that needs auth in
        // RESP2), but commands get -NOAUTH, an extension error.
        if proto == Proto::Resp2 {
            let mut con = connect(&server, proto);
            let e = con.get::<_, Option<String>>("k").unwrap_err();
            assert_eq!(e.code(), Some("NOAUTH"), "{proto:?}: {e}");
            assert_eq!(e.kind(), ErrorKind::ExtensionError);
        } else {
            // RESP3: the crate's HELLO 3 without AUTH is refused, so connecting fails.
            let client = redis::Client::open(server.url_resp3()).unwrap();
            assert!(client.get_connection().is_err(), "{proto:?}: HELLO 3 without AUTH");
        }

        let suffix = if proto == Proto::Resp3 { "?protocol=resp3" } else { "" };
        let wrong = format!("redis://:nope@127.0.0.1:{}/{suffix}", server.port);
        let Err(e) = redis::Client::open(wrong).unwrap().get_connection() else {
            panic!("{proto:?}: a wrong password was accepted");
        };
        if proto == Proto::Resp2 {
            assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{proto:?}: {e}");
        }

        let good = format!("redis://:s3cret@127.0.0.1:{}/{suffix}", server.port);
        let mut con = redis::Client::open(good).unwrap().get_connection().unwrap();
        let () = con.set(key(proto, "k"), "v").unwrap();
        let v: String = con.get(key(proto, "k")).unwrap();
        assert_eq!(v, "v", "{proto:?}");
    }
}
