//! Client-side caching under concurrency, through the `redis` crate over TCP.
//!
//! The promise checked: **every write that completes after a tracked read yields an
//! invalidation to the reader**, with many readers and writers on many connections at
//! once, spread over minikv's shards and I/O threads. Each reader is a near-cache: a
//! RESP3 multiplexed connection with `CLIENT TRACKING on`, a local map filled from its
//! GET replies, and the crate's push channel emptying the map on `invalidate` pushes.
//! If an invalidation were lost, a reader would keep a value older than a write the
//! server has already acknowledged. Each key has one writer writing increasing sequence
//! numbers, and publishes each number once the write is answered; every few reads a
//! reader takes those numbers, lets the pushes queued by then arrive (two PINGs), and
//! checks that no cached value is older. A final write round also checks the promise
//! directly: every key written after all readers read it must be gone from every
//! reader's map.
//!
//! `a_lost_invalidation_is_caught` runs the same check with minikv told to drop a few
//! invalidations (`DEBUG TRACKING-DROP-INVALIDATIONS`) and expects it to fail: the
//! check can see a lost invalidation.
//!
//! Left out: timing. Nothing here measures speed; the loads are bounded by counts.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, PushInfo, PushKind, Value};
use support::{seed, Server};
use tokio::sync::mpsc::UnboundedReceiver;

const READERS: usize = 4;
const WRITERS: usize = 4;
/// Few keys, so that reads and writes of the same key collide often.
const KEYS: usize = 16;
/// Operations per reader and per writer in the concurrent phase.
const OPS: usize = 2000;
/// A reader checks its cache against the acknowledged writes every this many reads.
const CHECK_EVERY: usize = 25;

fn key(i: usize) -> String {
    format!("near:{i}")
}

/// A near-cache over one tracking connection.
struct NearCache {
    con: MultiplexedConnection,
    pushes: UnboundedReceiver<PushInfo>,
    /// Values as last read, until an invalidation removes them.
    cached: HashMap<String, Option<String>>,
    invalidations: usize,
}

impl NearCache {
    async fn connect(server: &Server) -> NearCache {
        let (tx, pushes) = tokio::sync::mpsc::unbounded_channel();
        let client = redis::Client::open(server.url_resp3()).expect("client");
        let config = AsyncConnectionConfig::new().set_push_sender(tx);
        let mut con = client.get_multiplexed_async_connection_with_config(&config).await.expect("connect");
        let ok: String = redis::cmd("CLIENT").arg("TRACKING").arg("on").query_async(&mut con).await.expect("tracking");
        assert_eq!(ok, "OK");
        NearCache { con, pushes, cached: HashMap::new(), invalidations: 0 }
    }

    /// Reads `k` from the server and caches it, then applies the pushes received so
    /// far. In that order: a push that arrived before the reply (for an older read) may
    /// then remove a fresh value, which is harmless; one that belongs to this read can
    /// only come after the reply, so it is never applied before the insert.
    async fn read(&mut self, k: &str) {
        let v: Option<String> = self.con.get(k).await.expect("GET");
        self.cached.insert(k.to_string(), v);
        self.apply_pushes();
    }

    fn apply_pushes(&mut self) {
        while let Ok(push) = self.pushes.try_recv() {
            if push.kind != PushKind::Invalidate {
                continue;
            }
            self.invalidations += 1;
            match push.data.first() {
                Some(Value::Array(keys)) => {
                    for k in keys {
                        if let Value::BulkString(k) = k {
                            self.cached.remove(&String::from_utf8_lossy(k).into_owned());
                        }
                    }
                }
                // A null: everything may have changed (a flush).
                _ => self.cached.clear(),
            }
        }
    }

    /// Makes sure every push the server queued before now has been applied: minikv
    /// writes queued pushes before the reply to a later command, and the crate hands a
    /// push to the channel before it resolves the reply that follows it.
    async fn settle(&mut self) {
        for _ in 0..2 {
            let _: String = redis::cmd("PING").query_async(&mut self.con).await.expect("PING");
        }
        self.apply_pushes();
    }
}

/// What went wrong, if anything: stale cached values, or keys written after every
/// reader had read them that a reader still holds.
#[derive(Debug, Default)]
struct Findings {
    stale: Vec<String>,
    kept_after_write: Vec<String>,
    invalidations: usize,
    checks: usize,
}

/// The sequence number a value holds (values are `<seq>` or `<seq>:tx`); a missing key
/// is 0, the state before the first write.
fn seq_of(v: &Option<String>) -> u64 {
    v.as_deref().and_then(|s| s.split(':').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Acknowledged writes: for each key, the highest sequence number whose write has been
/// answered. Each key has one writer, which writes increasing numbers.
type Acked = Arc<Vec<AtomicU64>>;

impl NearCache {
    /// The check at the heart of the test. Take the writes acknowledged so far; let
    /// every push the server queued by then arrive; then no cached value may be older
    /// than an acknowledged write of its key. A read that ran before such a write must
    /// have been invalidated by it, because the server queues the invalidation before it
    /// answers the write, and a read that ran after it saw it.
    async fn check(&mut self, acked: &Acked, reader: usize, findings: &mut Vec<String>) {
        let snapshot: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
        self.settle().await;
        for (k, v) in &self.cached {
            let Some(i) = k.strip_prefix("near:").and_then(|i| i.parse::<usize>().ok()) else { continue };
            if seq_of(v) < snapshot[i] {
                findings
                    .push(format!("reader {reader}: {k} cached {v:?} after write {} was acknowledged", snapshot[i]));
            }
        }
    }
}

/// The whole scenario: concurrent readers and writers, each reader checking its cache
/// against the acknowledged writes every few reads; then a read-everything round, a
/// final write round on half the keys, and the direct check of those.
async fn run_scenario(server: &Server, seed: u64) -> Findings {
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(NearCache::connect(server).await);
    }
    let client = redis::Client::open(server.url()).expect("client");
    let mut admin = client.get_multiplexed_async_connection().await.expect("connect");
    let acked: Acked = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());

    // Phase 1: everybody at once.
    let mut tasks = Vec::new();
    for (r, mut reader) in readers.into_iter().enumerate() {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ (r as u64 + 1));
            let mut stale = Vec::new();
            let mut checks = 0;
            for n in 0..OPS {
                reader.read(&key(rng.usize(..KEYS))).await;
                if n % CHECK_EVERY == CHECK_EVERY - 1 {
                    reader.check(&acked, r, &mut stale).await;
                    checks += 1;
                }
            }
            (reader, stale, checks)
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut con = client.get_multiplexed_async_connection().await.expect("connect");
            let mut rng = fastrand::Rng::with_seed(seed ^ (0x100 + w as u64));
            let mine: Vec<usize> = (0..KEYS).filter(|i| i % WRITERS == w).collect();
            let mut next = [0u64; KEYS];
            for _ in 0..OPS {
                let a = mine[rng.usize(..mine.len())];
                next[a] += 1;
                if rng.u8(..8) == 0 {
                    // Two keys in one transaction (they may sit in different shards).
                    let b = mine[rng.usize(..mine.len())];
                    if b != a {
                        next[b] += 1;
                    }
                    let _: () = redis::pipe()
                        .atomic()
                        .set(key(a), format!("{}:tx", next[a]))
                        .set(key(b), format!("{}:tx", next[b]))
                        .query_async(&mut con)
                        .await
                        .expect("MULTI/EXEC");
                    acked[b].store(next[b], Ordering::Release);
                } else {
                    let _: () = con.set(key(a), next[a].to_string()).await.expect("SET");
                }
                acked[a].store(next[a], Ordering::Release);
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let mut findings = Findings::default();
    let mut readers = Vec::new();
    for t in tasks {
        let (mut reader, stale, checks) = t.await.expect("reader");
        findings.stale.extend(stale);
        findings.checks += checks;
        // Once more with every write acknowledged.
        reader.check(&acked, readers.len(), &mut findings.stale).await;
        readers.push(reader);
    }

    // Phase 2: every reader reads every key, then half of them are written.
    for reader in readers.iter_mut() {
        for i in 0..KEYS {
            reader.read(&key(i)).await;
        }
    }
    let written: Vec<String> = (0..KEYS).filter(|i| i % 2 == 0).map(key).collect();
    for k in &written {
        let _: () = admin.set(k, "final").await.expect("SET");
    }
    for (r, reader) in readers.iter_mut().enumerate() {
        reader.settle().await;
        for k in &written {
            if reader.cached.contains_key(k) {
                findings.kept_after_write.push(format!("reader {r}: {k}"));
            }
        }
        findings.invalidations += reader.invalidations;
    }
    findings
}

/// INFO's `tracking_total_items`.
async fn tracking_items(server: &Server) -> i64 {
    let client = redis::Client::open(server.url()).expect("client");
    let mut con = client.get_multiplexed_async_connection().await.expect("connect");
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut con).await.expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("tracking_total_items:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("tracking_total_items in INFO stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_after_a_tracked_read_is_invalidated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let seed = seed("every_write_after_a_tracked_read_is_invalidated");
    let findings = run_scenario(&server, seed).await;
    assert!(findings.stale.is_empty(), "seed {seed}: stale values (lost invalidations): {:?}", findings.stale);
    assert!(
        findings.kept_after_write.is_empty(),
        "seed {seed}: keys written after every reader read them, still cached: {:?}",
        findings.kept_after_write
    );
    assert!(findings.invalidations > READERS * KEYS / 2, "seed {seed}: too few invalidations: {findings:?}");
    assert!(findings.checks >= READERS * (OPS / CHECK_EVERY), "seed {seed}: the checks did not run: {findings:?}");
    // The readers are gone (dropped with the scenario): nothing of them stays behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let items = tracking_items(&server).await;
        if items == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{items} tracking entries left after the readers disconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invalidation_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let seed = seed("a_lost_invalidation_is_caught");
    // Dropped in the final round, where each one must show: 24 keys × 4 readers are due.
    let findings = run_scenario_with_late_drop(&server, seed).await;
    assert!(
        !findings.kept_after_write.is_empty() || !findings.stale.is_empty(),
        "seed {seed}: invalidations were dropped and the check saw nothing: {findings:?}"
    );
}

/// [`run_scenario`] with the drops armed right before the final write round, so that
/// they hit invalidations whose loss the check must see.
async fn run_scenario_with_late_drop(server: &Server, seed: u64) -> Findings {
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(NearCache::connect(server).await);
    }
    for reader in readers.iter_mut() {
        for i in 0..KEYS {
            reader.read(&key(i)).await;
        }
    }
    let client = redis::Client::open(server.url()).expect("client");
    let mut admin = client.get_multiplexed_async_connection().await.expect("connect");
    let ok: String =
        redis::cmd("DEBUG").arg("TRACKING-DROP-INVALIDATIONS").arg(3).query_async(&mut admin).await.expect("DEBUG");
    assert_eq!(ok, "OK");
    let mut rng = fastrand::Rng::with_seed(seed);
    let written: Vec<String> = (0..KEYS).filter(|_| rng.bool()).map(key).collect();
    for k in &written {
        let _: () = admin.set(k, "final").await.expect("SET");
    }
    let mut findings = Findings::default();
    for (r, reader) in readers.iter_mut().enumerate() {
        reader.settle().await;
        for k in &written {
            if reader.cached.contains_key(k) {
                findings.kept_after_write.push(format!("reader {r}: {k}"));
            }
        }
        findings.invalidations += reader.invalidations;
    }
    findings
}

/// The deliberately broken design: reads remembered only after the command released its
/// shard locks, so a write can fall between the read and the registration and find no
/// reader to tell. The check above must catch it (it is a race, so a few rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembering_reads_outside_the_lock_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let seed = seed("remembering_reads_outside_the_lock_is_caught");
    let client = redis::Client::open(server.url()).expect("client");
    let mut admin = client.get_multiplexed_async_connection().await.expect("connect");
    let ok: String =
        redis::cmd("DEBUG").arg("TRACKING-REGISTER-LATE").arg(1).query_async(&mut admin).await.expect("DEBUG");
    assert_eq!(ok, "OK");
    for round in 0..5 {
        let findings = run_scenario(&server, seed.wrapping_add(round)).await;
        if !findings.stale.is_empty() || !findings.kept_after_write.is_empty() {
            eprintln!("caught in round {round}: {}", findings.stale.first().map_or("", |s| s.as_str()));
            return;
        }
    }
    panic!("seed {seed}: reads remembered outside the lock went unnoticed in 5 rounds");
}

/// RESP2 clients get invalidations through a redirect to a `__redis__:invalidate`
/// subscriber, as pub/sub messages whose payload is the array of keys (the form the
/// crate's `Msg` decodes).
#[test]
fn resp2_redirect_delivers_messages_to_a_subscriber() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut subscriber = server.client();
    let sub_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut subscriber).expect("CLIENT ID");
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("__redis__:invalidate").expect("SUBSCRIBE");
    pubsub.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");

    let mut tracker = server.client();
    let ok: String =
        redis::cmd("CLIENT").arg("TRACKING").arg("on").arg("REDIRECT").arg(sub_id).query(&mut tracker).expect("on");
    assert_eq!(ok, "OK");
    let redirect: i64 = redis::cmd("CLIENT").arg("GETREDIR").query(&mut tracker).expect("GETREDIR");
    assert_eq!(redirect, sub_id);
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut tracker).expect("GET");

    let mut writer = server.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut writer).expect("SET");
    let msg = pubsub.get_message().expect("invalidation message");
    assert_eq!(msg.get_channel_name(), "__redis__:invalidate");
    let keys: Vec<String> = msg.get_payload().expect("payload is an array of keys");
    assert_eq!(keys, vec!["k".to_string()]);

    let _: () = redis::cmd("FLUSHALL").query(&mut writer).expect("FLUSHALL");
    let msg = pubsub.get_message().expect("flush message");
    assert_eq!(msg.get_payload::<Value>().expect("payload"), Value::Nil, "a flush invalidates everything: null");
}
