//! The near cache against both L2 servers: minikv (in-process, on loopback) and a real
//! redis-server 7.0 (a child process on a free port). Every scenario runs unchanged on both,
//! which is the promise: the same code works against either.
//!
//! Scenarios: a write from another connection, FLUSHALL and FLUSHDB, a dropped connection,
//! a key created after its absence was cached, broadcast mode with a prefix, and a race of
//! writers against readers that must end coherent.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minicache::tiered::{TieredCache, TrackingMode};
use redis::Value;

/// How long a pushed invalidation may take to arrive when no round trip forces it (only
/// the dropped-connection case waits; the rest use `ping`, which bounds it exactly).
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local_addr").port()
}

/// A redis-server child process, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (./test.sh installs Debian's redis-server 7.0)");
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = redis::Client::open(server.url()) {
                if let Ok(mut conn) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return server;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// minikv served in-process on a free port, for the life of the runtime.
async fn start_minikv() -> String {
    let config = minikv::config::Config::new();
    config.set("port", "0", false).expect("port");
    config.set("bind", "127.0.0.1", false).expect("bind");
    let running = minikv::start(config).await.expect("minikv starts");
    let url = format!("redis://{}", running.addr);
    // Keep it serving until the test's runtime ends.
    std::mem::forget(running);
    url
}

/// A plain second client: "another application" writing to L2.
async fn other(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("second connection")
}

async fn set(conn: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("SET").arg(key).arg(value).query_async(conn).await.expect("SET");
}

async fn cache(url: &str) -> TieredCache<String> {
    TieredCache::builder(url).l1_capacity(1_000).connect().await.expect("tiered cache connects")
}

// ---- the scenarios, each run on both servers ------------------------------------------

async fn write_from_another_connection_invalidates(url: &str) {
    let near = cache(url).await;
    let mut writer = other(url).await;
    set(&mut writer, "user:1", "ada").await;
    assert_eq!(near.get("user:1").await.unwrap().as_deref(), Some("ada"));
    assert!(near.in_l1("user:1"), "a read from L2 is cached");
    assert_eq!(near.get("user:1").await.unwrap().as_deref(), Some("ada"));
    assert_eq!(near.stats().l1_hits, 1);

    set(&mut writer, "user:1", "grace").await;
    near.ping().await.unwrap();
    assert!(!near.in_l1("user:1"), "one round trip after the write, L1 no longer holds the key");
    assert_eq!(near.get("user:1").await.unwrap().as_deref(), Some("grace"));
    assert!(near.stats().invalidated_keys >= 1);

    // Expiry on the server is a change too.
    let _: () = redis::cmd("SET").arg("session").arg("x").arg("PX").arg(100).query_async(&mut writer).await.unwrap();
    assert_eq!(near.get("session").await.unwrap().as_deref(), Some("x"));
    let deadline = Instant::now() + PUSH_TIMEOUT;
    while near.in_l1("session") {
        assert!(Instant::now() < deadline, "an expired key was never invalidated");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A read of another key makes the server run lazy expiry paths and flushes pushes.
        let _ = near.get("session-probe").await.unwrap();
        let _: Option<String> = redis::cmd("GET").arg("session").query_async(&mut writer).await.unwrap();
        near.ping().await.unwrap();
    }
    assert_eq!(near.get("session").await.unwrap(), None);
}

async fn absent_key_is_cached_and_invalidated_on_creation(url: &str) {
    let near = cache(url).await;
    let mut writer = other(url).await;
    assert_eq!(near.get("later").await.unwrap(), None);
    assert!(near.in_l1("later"), "the absence is cached");
    set(&mut writer, "later", "now").await;
    near.ping().await.unwrap();
    assert!(!near.in_l1("later"));
    assert_eq!(near.get("later").await.unwrap().as_deref(), Some("now"));
}

async fn flushall_and_flushdb_empty_l1(url: &str) {
    let near = cache(url).await;
    let mut writer = other(url).await;
    for flush in ["FLUSHALL", "FLUSHDB"] {
        for i in 0..10 {
            set(&mut writer, &format!("k{i}"), "v").await;
            assert!(near.get(&format!("k{i}")).await.unwrap().is_some());
        }
        near.l1().run_pending_tasks();
        assert_eq!(near.l1().entry_count(), 10);
        let flushes = near.stats().flushes;
        let _: () = redis::cmd(flush).query_async(&mut writer).await.unwrap();
        near.ping().await.unwrap();
        assert!(near.stats().flushes > flushes, "{flush} sends a null invalidation");
        for i in 0..10 {
            assert!(!near.in_l1(&format!("k{i}")), "{flush} left k{i} in L1");
        }
    }
}

async fn dropped_connection_flushes_l1_and_reconnects(url: &str) {
    let near = cache(url).await;
    let mut writer = other(url).await;
    set(&mut writer, "config", "v1").await;
    assert_eq!(near.get("config").await.unwrap().as_deref(), Some("v1"));
    assert!(near.in_l1("config"));
    assert_eq!(near.stats().connects, 1);

    // Kill every other normal client: the near cache's connection among them.
    let _: Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut writer)
        .await
        .unwrap();
    let deadline = Instant::now() + PUSH_TIMEOUT;
    while near.in_l1("config") {
        assert!(Instant::now() < deadline, "L1 was not flushed after its connection dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A write while we were disconnected is not missed: the next read reconnects first.
    set(&mut writer, "config", "v2").await;
    assert_eq!(near.get("config").await.unwrap().as_deref(), Some("v2"));
    assert_eq!(near.stats().connects, 2);
    // And the new connection is tracked again.
    set(&mut writer, "config", "v3").await;
    near.ping().await.unwrap();
    assert!(!near.in_l1("config"));
    assert_eq!(near.get("config").await.unwrap().as_deref(), Some("v3"));
}

async fn broadcast_mode_with_a_prefix(url: &str) {
    let near: TieredCache<String> = TieredCache::builder(url)
        .mode(TrackingMode::Broadcast { prefixes: vec!["user:".into()] })
        .connect()
        .await
        .unwrap();
    let mut writer = other(url).await;
    set(&mut writer, "user:7", "a").await;
    set(&mut writer, "order:7", "a").await;
    assert!(near.get("user:7").await.unwrap().is_some());
    set(&mut writer, "user:7", "b").await;
    near.ping().await.unwrap();
    assert!(!near.in_l1("user:7"), "a change under the prefix is broadcast");
    // A key outside every prefix is not tracked in BCAST mode: the documented trade-off.
    assert!(near.get("order:7").await.unwrap().is_some());
    set(&mut writer, "order:7", "b").await;
    near.ping().await.unwrap();
    assert!(near.in_l1("order:7"), "BCAST with a prefix says nothing about other keys");
}

/// Writers and readers race on a few keys; once the writers stop and one round trip has
/// passed, everything L1 still holds must equal L2. A near cache without the in-flight
/// check (a fetch caching a value an invalidation already overtook) fails this: with that
/// check removed from `end_fetch`, 5 runs of 5 against redis-server ended with a stale key.
async fn racing_writers_end_coherent(url: &str) {
    let near = cache(url).await;
    let keys: Vec<String> = (0..4).map(|i| format!("race:{i}")).collect();
    let mut writer = other(url).await;
    for key in &keys {
        set(&mut writer, key, "0").await;
    }
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let url = url.to_owned();
            let keys = keys.clone();
            tokio::spawn(async move {
                let mut conn = other(&url).await;
                for round in 0..300 {
                    let key = &keys[(round + w) % keys.len()];
                    set(&mut conn, key, &format!("{w}-{round}")).await;
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let near = near.clone();
            let keys = keys.clone();
            tokio::spawn(async move {
                for round in 0..600 {
                    let _ = near.get(&keys[(round + r) % keys.len()]).await.unwrap();
                }
            })
        })
        .collect();
    for task in writers.into_iter().chain(readers) {
        task.await.unwrap();
    }
    near.ping().await.unwrap();
    for key in &keys {
        let truth: Option<String> = redis::cmd("GET").arg(key).query_async(&mut writer).await.unwrap();
        if near.in_l1(key) {
            assert_eq!(near.get(key).await.unwrap(), truth, "L1 holds a stale {key}");
        }
    }
}

macro_rules! on_both_servers {
    ($($scenario:ident),* $(,)?) => {
        mod against_minikv {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let url = super::start_minikv().await;
                    super::$scenario(&url).await;
                }
            )*
        }
        mod against_redis_server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let server = super::RedisServer::start();
                    super::$scenario(&server.url()).await;
                }
            )*
        }
    };
}

on_both_servers!(
    write_from_another_connection_invalidates,
    absent_key_is_cached_and_invalidated_on_creation,
    flushall_and_flushdb_empty_l1,
    dropped_connection_flushes_l1_and_reconnects,
    broadcast_mode_with_a_prefix,
    racing_writers_end_coherent,
);
