//! The snowflake-ids exercise over TCP: node ids leased from minikv (and from a real
//! redis-server where installed), millions of IDs from parallel nodes with no duplicate
//! and per-node order kept, the clock going back (a small step waits, a big one
//! refuses), lease uniqueness, a paused holder fenced by its ceiling, and the broken
//! variants of the generator caught by the same audit.
//!
//! Sizes: 4 nodes × 500,000 IDs against minikv (2 million, debug build), and 4 × 100,000
//! against redis-server, whose part in this is only the leases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use exercises::framework::backends::{MiniKv, RealRedis};
use exercises::framework::{self, DemoOptions, Scale};
use exercises::ids::audit::{audit, NodeBatch};
use exercises::ids::clock::{ManualClock, SteppableClock, SystemClock, WallClock};
use exercises::ids::generator::{Generator, GeneratorConfig};
use exercises::ids::node_lease::{LeaseConfig, LeaseError, NodeLease};
use exercises::ids::snowflake::{IdError, SnowflakeId, Variant, EPOCH_UNIX_MS};

/// A manual clock's starting point: any time after the epoch.
const T0: u64 = EPOCH_UNIX_MS + 86_400_000;

fn unique_prefix(test: &str) -> String {
    format!("idgen:test-{test}-{:08x}:", fastrand::u32(..))
}

fn client(url: &str) -> redis::Client {
    redis::Client::open(url).expect("a redis:// URL")
}

fn config(prefix: String, ttl: Duration) -> LeaseConfig {
    let mut config = LeaseConfig::new(prefix);
    config.ttl = ttl;
    config
}

/// Issues `count` IDs on a blocking thread.
async fn issue(mut generator: Generator, count: usize) -> (Generator, Vec<u64>) {
    tokio::task::spawn_blocking(move || {
        let mut ids = Vec::with_capacity(count);
        while ids.len() < count {
            ids.push(generator.next_id().expect("the generator issues").0);
        }
        (generator, ids)
    })
    .await
    .expect("the issuing thread finishes")
}

/// `nodes` workers lease node ids concurrently, then issue `per_node` IDs each in
/// parallel while their leases are renewed; the audit must find nothing.
async fn parallel_nodes_are_unique_and_ordered(url: &str, nodes: usize, per_node: usize) {
    let client = client(url);
    let config = config(unique_prefix("parallel"), Duration::from_secs(3));
    let mut leasing = Vec::new();
    for worker in 0..nodes {
        let (client, config) = (client.clone(), config.clone());
        leasing.push(tokio::spawn(async move {
            NodeLease::acquire_any(&client, &config, 0, &format!("w{worker}"), Arc::new(SystemClock)).await
        }));
    }
    let mut running = Vec::new();
    for task in leasing {
        let lease = task.await.expect("joins").expect("a node id is free");
        let generator = Generator::for_lease(&lease, GeneratorConfig::default());
        let node = lease.node();
        running.push((node, lease.spawn_renewer(), tokio::spawn(issue(generator, per_node))));
    }
    let mut batches = Vec::new();
    for (node, renewer, task) in running {
        let (generator, ids) = task.await.expect("joins");
        let lease = renewer.stop().await.expect("the renewer stops");
        lease.release(generator.last_unix_ms()).await.expect("released");
        batches.push(NodeBatch { node, ids });
    }
    let mut node_ids: Vec<u16> = batches.iter().map(|b| b.node).collect();
    node_ids.sort_unstable();
    node_ids.dedup();
    assert_eq!(node_ids.len(), nodes, "two workers got the same node id: {node_ids:?}");
    let found = audit(&batches);
    assert_eq!(found.total, nodes * per_node);
    assert!(found.is_clean(), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_ids_from_parallel_leased_nodes_have_no_duplicate_and_keep_order() {
    let kv = MiniKv::start().await.expect("minikv starts");
    let started = Instant::now();
    parallel_nodes_are_unique_and_ordered(&kv.url(), 4, 500_000).await;
    eprintln!("minikv: 4 × 500,000 IDs issued and audited in {:.2?}", started.elapsed());
    match RealRedis::start().await.expect("redis-server starts") {
        Some(redis) => parallel_nodes_are_unique_and_ordered(&redis.url(), 4, 100_000).await,
        None => eprintln!("redis-server is not installed: skipped the real-server comparison"),
    }
}

#[test]
fn a_small_clock_step_back_waits_and_stays_monotonic() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut generator = Generator::unleased(5, clock.clone(), GeneratorConfig::default());
    let before = generator.next_id().expect("issues");
    clock.step_back(7);
    let after = generator.next_id().expect("a 7 ms step is within the 10 ms bound: it waits, then issues");
    assert!(after > before, "{after} must be above {before}");
    assert_eq!(clock.waited_ms(), 7, "it waited until the clock was back at the last millisecond");
    assert_eq!(SnowflakeId(after.0).unix_ms(), T0, "and went on in the same millisecond");
    assert_eq!(generator.stats().regression_waits, 1);

    // The same in real time: a stepped-back system clock is waited out with a sleep.
    // Timed from before the first ID: the clock must get back to that ID's millisecond,
    // so at least about 6 ms pass however slowly the machine runs in between.
    let clock = Arc::new(SteppableClock::new());
    let mut generator = Generator::unleased(5, clock.clone(), GeneratorConfig::default());
    let started = Instant::now();
    let before = generator.next_id().expect("issues");
    clock.step_back(6);
    let after = generator.next_id().expect("waits out 6 ms");
    assert!(after > before);
    assert_eq!(generator.stats().regression_waits, 1, "the step back was seen and waited out");
    assert!(
        started.elapsed() >= Duration::from_millis(5),
        "it returned after {:?}, without waiting",
        started.elapsed()
    );
}

#[test]
fn a_big_clock_step_back_is_refused_with_a_typed_error() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut generator = Generator::unleased(5, clock.clone(), GeneratorConfig::default());
    let before = generator.next_id().expect("issues");
    clock.step_back(250);
    let refusal = generator.next_id().expect_err("250 ms back is over the bound");
    assert_eq!(refusal, IdError::ClockMovedBackwards { behind_ms: 250, bound_ms: 10 });
    assert!(refusal.to_string().contains("retry after the clock catches up"), "{refusal}");
    assert_eq!(clock.waited_ms(), 0, "a refusal does not block");
    // Refused again while still too far behind; issuing resumes, still in order, once
    // the clock is within the bound.
    clock.advance(200);
    assert!(matches!(generator.next_id(), Err(IdError::ClockMovedBackwards { behind_ms: 50, .. })));
    clock.advance(45);
    let after = generator.next_id().expect("5 ms behind: waits, then issues");
    assert!(after > before);
    assert_eq!(generator.stats().refusals, 2);
}

#[test]
fn the_broken_variants_are_caught_by_the_audit() {
    // Drives a generator through a run with one clock step back, as the demo does.
    fn run(variant: Variant, node: u16, step_back: u64) -> NodeBatch {
        let clock = Arc::new(ManualClock::new(T0));
        let mut generator =
            Generator::unleased(node, clock.clone(), GeneratorConfig { variant, ..GeneratorConfig::default() });
        let mut ids = Vec::new();
        for i in 0..20_000 {
            if i == 10_000 {
                clock.step_back(step_back);
            }
            ids.push(generator.next_id().expect("issues").0);
        }
        NodeBatch { node, ids }
    }

    let correct = audit(&[run(Variant::Correct, 1, 2), run(Variant::Correct, 2, 2)]);
    assert!(correct.is_clean(), "{correct:?}");

    let no_wait = audit(&[run(Variant::NoWaitOnRegression, 1, 2)]);
    assert!(no_wait.duplicates > 0 && no_wait.order_violations > 0, "not caught: {no_wait:?}");

    let no_node = audit(&[run(Variant::NoNodeId, 1, 2), run(Variant::NoNodeId, 2, 2)]);
    assert_eq!(no_node.duplicates, 20_000, "every ID of the second node repeats one of the first: {no_node:?}");
    assert_eq!(no_node.wrong_node, 40_000);
}

/// Many contenders for one node id: exactly one wins; a full node space refuses the
/// rest; after a release the id is free again and the floor moved to the last ID.
async fn leases_are_exclusive(url: &str) {
    let client = client(url);
    let mut config = config(unique_prefix("exclusive"), Duration::from_secs(5));
    let mut contenders = Vec::new();
    for i in 0..16 {
        let (client, config) = (client.clone(), config.clone());
        contenders.push(tokio::spawn(async move {
            NodeLease::try_acquire(&client, &config, 3, &format!("c{i}"), Arc::new(SystemClock)).await
        }));
    }
    let mut winners = Vec::new();
    for task in contenders {
        if let Some(lease) = task.await.expect("joins").expect("the KV answers") {
            winners.push(lease);
        }
    }
    assert_eq!(winners.len(), 1, "{} generators hold node id 3", winners.len());
    let winner = winners.pop().expect("one winner");

    let clock = Arc::new(ManualClock::new(SystemClock.now_unix_ms()));
    let mut generator = Generator::for_lease(&winner, GeneratorConfig::default());
    let _ = generator.next_id().expect("issues");
    let last = generator.last_unix_ms();
    winner.release(last).await.expect("released");
    let again = NodeLease::try_acquire(&client, &config, 3, "next", clock)
        .await
        .expect("the KV answers")
        .expect("node id 3 is free after the release");
    assert_eq!(again.floor_unix_ms(), last, "the next holder starts above the released holder's last ID");
    again.release(last).await.expect("released");

    config.node_space = 4;
    let mut scans = Vec::new();
    for i in 0..6 {
        let (client, config) = (client.clone(), config.clone());
        scans.push(tokio::spawn(async move {
            NodeLease::acquire_any(&client, &config, 0, &format!("s{i}"), Arc::new(SystemClock)).await
        }));
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    for task in scans {
        match task.await.expect("joins") {
            Ok(lease) => held.push(lease.node()),
            Err(LeaseError::NoFreeNode { tried: 4 }) => refused += 1,
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    held.sort_unstable();
    assert_eq!(held, vec![0, 1, 2, 3], "four node ids, each held once");
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_generators_cannot_hold_the_same_node_id() {
    let kv = MiniKv::start().await.expect("minikv starts");
    leases_are_exclusive(&kv.url()).await;
    match RealRedis::start().await.expect("redis-server starts") {
        Some(redis) => leases_are_exclusive(&redis.url()).await,
        None => eprintln!("redis-server is not installed: skipped the real-server comparison"),
    }
}

/// A holder whose renewals stop (a paused process) stops issuing once its lease runs
/// out, and its late renewal finds the successor's lease. Meanwhile the successor,
/// whose clock reads *the same* as the paused holder's (so it is far behind the
/// ceiling), refuses rather than reuse the holder's milliseconds; without the fence
/// (`Variant::NoLeaseFence`) it duplicates them.
async fn a_paused_holder_is_fenced(url: &str) {
    let client = client(url);
    let ttl = Duration::from_millis(300);
    let config = config(unique_prefix("fence"), ttl);
    let a_clock = Arc::new(ManualClock::new(T0));
    let a_lease = NodeLease::try_acquire(&client, &config, 7, "a", a_clock.clone()).await.expect("KV").expect("free");
    let ceiling = a_lease.state().ceiling_unix_ms();
    assert_eq!(ceiling, T0 + 300, "A's ceiling is its clock plus the TTL");
    let a_generator = Generator::for_lease(&a_lease, GeneratorConfig::default());
    let renewer = a_lease.spawn_renewer();
    renewer.pause();
    let (mut a_generator, a_ids) = issue(a_generator, 10_000).await;

    // A is paused: no renewals. Its lease runs out on the server.
    let b_clock = Arc::new(ManualClock::new(T0));
    let started = Instant::now();
    let b_lease = loop {
        match NodeLease::try_acquire(&client, &config, 7, "b", b_clock.clone()).await.expect("KV") {
            Some(lease) => break lease,
            None => {
                assert!(started.elapsed() < Duration::from_secs(10), "A's lease never expired");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(b_lease.floor_unix_ms(), ceiling, "B read A's ceiling as its floor");
    assert_eq!(
        a_generator.next_id(),
        Err(IdError::LeaseExpired { node: 7 }),
        "A, waking after its lease ran out, must not issue"
    );
    let mut a_lease = renewer.stop().await.expect("stops");
    assert!(matches!(a_lease.renew().await, Err(LeaseError::Lost { node: 7, owner: Some(ref o) }) if o == "b"));

    // B's clock is 300 ms behind the floor: refused, not duplicated.
    let mut b_generator = Generator::for_lease(&b_lease, GeneratorConfig::default());
    assert!(matches!(b_generator.next_id(), Err(IdError::ClockMovedBackwards { behind_ms: 300, .. })));
    // Its own ceiling (its clock + TTL) was no higher than the floor, so once its clock
    // is nearly there it needs a renewal before it can issue: the renewer's job.
    b_clock.set(ceiling - 4);
    let mut b_lease = b_lease;
    b_lease.renew().await.expect("B renews");
    let (b_generator, b_ids) = issue(b_generator, 10_000).await;
    assert!(SnowflakeId(b_ids[0]).unix_ms() > ceiling, "B starts above A's ceiling");
    let found = audit(&[NodeBatch { node: 7, ids: a_ids.clone() }, NodeBatch { node: 7, ids: b_ids }]);
    assert!(found.is_clean(), "{found:?}");
    b_lease.release(b_generator.last_unix_ms()).await.expect("released");

    // The same handover without the fence: the successor reuses A's milliseconds.
    let c_clock = Arc::new(ManualClock::new(T0));
    let c_lease = NodeLease::try_acquire(&client, &config, 7, "c", c_clock).await.expect("KV").expect("free");
    let broken =
        Generator::for_lease(&c_lease, GeneratorConfig { variant: Variant::NoLeaseFence, ..Default::default() });
    let (_, c_ids) = issue(broken, 10_000).await;
    let found = audit(&[NodeBatch { node: 7, ids: a_ids }, NodeBatch { node: 7, ids: c_ids }]);
    assert!(found.duplicates > 0, "the unfenced successor was not caught: {found:?}");
    c_lease.release(T0).await.expect("released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_cannot_renew_stops_and_its_successor_is_fenced() {
    let kv = MiniKv::start().await.expect("minikv starts");
    a_paused_holder_is_fenced(&kv.url()).await;
    match RealRedis::start().await.expect("redis-server starts") {
        Some(redis) => a_paused_holder_is_fenced(&redis.url()).await,
        None => eprintln!("redis-server is not installed: skipped the real-server comparison"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_at_quick_scale() {
    let exercise = exercises::find("snowflake-ids").expect("in the catalogue");
    let report = framework::run(exercise, DemoOptions { scale: Scale::Quick, ..Default::default() })
        .await
        .expect("the scenario runs");
    println!("{report}");
    assert!(report.passed(), "{report}");
    match RealRedis::start().await.expect("redis-server starts") {
        Some(redis) => {
            let options = DemoOptions { kv: Some(redis.url()), scale: Scale::Quick, ..Default::default() };
            let report = framework::run(exercise, options).await.expect("the scenario runs against redis-server");
            println!("{report}");
            assert!(report.passed(), "{report}");
        }
        None => eprintln!("redis-server is not installed: skipped the real-server comparison"),
    }
}
