//! The ratelimit theme's invariants, over TCP: against minikv always, and against a real
//! `redis-server` when it is installed (each test says when it skipped that).
//!
//! - token-bucket: 100 clients with a connection each never admit more than
//!   `capacity + rate × (t_last − t_first)` (server clock), and the same code without
//!   WATCH is caught over-admitting; a full burst admits exactly the capacity; an empty
//!   bucket's retry-after is honest; an idle key's TTL is its refill time.
//! - sliding-window: concurrent clients never get more than `limit` into any window
//!   of its length, and the unwatched variant is caught.
//! - distributed-limiter: the deterministic simulator's error bounds (no server).
//! - each scenario at `Scale::Quick` passes its own checks.

use std::time::Duration;

use exercises::framework::backends::{MiniKv, RealRedis};
use exercises::framework::{self, DemoOptions, Scale};
use exercises::ratelimit::decision::connect;
use exercises::ratelimit::distributed_limiter::{self, ClusterConfig, Counting};
use exercises::ratelimit::gossip_sim::{self, Arrival, ClockModel, NetworkModel};
use exercises::ratelimit::hammer::hammer;
use exercises::ratelimit::sliding_window::{SlidingWindowLog, WindowLimit};
use exercises::ratelimit::token_bucket::{self, Limit, TokenBucket};
use exercises::ratelimit::{LimitError, Variant};

/// A KV server to run against and what keeps it alive.
enum Server {
    Mini(MiniKv),
    Real(RealRedis),
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::Mini(m) => m.url(),
            Server::Real(r) => r.url(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Server::Mini(_) => "minikv",
            Server::Real(_) => "redis-server",
        }
    }
}

/// minikv, and redis-server when installed. Started from the test's own thread (see
/// `backends.rs` about PDEATHSIG).
async fn servers(test: &str) -> Vec<Server> {
    let mut servers = vec![Server::Mini(MiniKv::start().await.expect("minikv starts"))];
    match RealRedis::start().await.expect("redis-server starts when installed") {
        Some(real) => servers.push(Server::Real(real)),
        None => println!("{test}: redis-server is not installed; skipped the real-server comparison"),
    }
    servers
}

fn unique(prefix: &str) -> String {
    format!("test:{prefix}:{:016x}", fastrand::u64(..))
}

// ---------------------------------------------------------------------------------
// token-bucket
// ---------------------------------------------------------------------------------

const CLIENTS: usize = 100;

/// The headline invariant: 100 clients, each on its own connection, hammering one key.
/// The bound's fencepost: from the first admission to the last (server times, as the
/// bucket stored them), `admitted ≤ capacity + floor(rate × span)`; no "+1", because
/// the first admission is paid from the initial capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_never_over_admit_and_without_watch_they_do() {
    let limit = Limit::per_second(20, 100).unwrap();
    for server in servers("hundred_clients").await {
        let url = server.url();
        let buckets = token_bucket::connect_many(&url, limit, Variant::Watched, CLIENTS, 1).await.unwrap();
        let key = unique("tb-watched");
        let mut watched = hammer(buckets, &key, Duration::from_millis(1_200)).await.unwrap();
        let check = token_bucket::bound_check(&limit, &mut watched);
        println!(
            "{}: WATCH: {} decisions, admitted {} <= bound {} over {} µs; {} aborted EXECs (worst {}), {} gave up",
            server.name(),
            watched.decisions,
            check.admitted,
            check.bound,
            check.span_micros,
            watched.aborted,
            watched.max_aborted,
            watched.contended
        );
        assert!(check.admitted <= check.bound, "{}: over-admitted {} > {}", server.name(), check.admitted, check.bound);
        assert!(
            check.worst_excess <= 0,
            "{}: a stretch of the run exceeded its bound by {}",
            server.name(),
            check.worst_excess
        );
        assert!(
            check.admitted >= limit.capacity(),
            "{}: admitted only {}: is the load running?",
            server.name(),
            check.admitted
        );
        assert!(
            watched.aborted > 0,
            "{}: 100 clients on one key and no EXEC ever aborted: is WATCH on?",
            server.name()
        );

        let buckets = token_bucket::connect_many(&url, limit, Variant::Unwatched, CLIENTS, 2).await.unwrap();
        let mut unwatched = hammer(buckets, &unique("tb-unwatched"), Duration::from_millis(600)).await.unwrap();
        let broken = token_bucket::bound_check(&limit, &mut unwatched);
        println!("{}: no WATCH: admitted {} vs bound {}", server.name(), broken.admitted, broken.bound);
        assert!(
            broken.admitted > broken.bound,
            "{}: the check missed the broken variant: admitted {} <= bound {}",
            server.name(),
            broken.admitted,
            broken.bound
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_burst_admits_exactly_the_capacity_and_zero_tokens_say_when() {
    for server in servers("full_burst").await {
        let url = server.url();
        // One token a minute: nothing refills during the burst.
        let slow = Limit::new(7, 1, Duration::from_secs(60)).unwrap();
        let mut bucket = TokenBucket::connect(&url, slow).await.unwrap();
        let key = unique("tb-burst");
        for expected_left in (0..7).rev() {
            let d = bucket.acquire(&key, 1).await.unwrap();
            assert!(d.admitted && d.remaining == expected_left, "{}: {d:?}", server.name());
        }
        let refused = bucket.acquire(&key, 1).await.unwrap();
        assert!(!refused.admitted, "{}: the 8th request of a 7-token burst: {refused:?}", server.name());
        assert_eq!(refused.remaining, 0);
        assert!(
            refused.retry_after > Duration::from_secs(59) && refused.retry_after <= Duration::from_secs(60),
            "{}: one token takes 60 s, retry after {:?}",
            server.name(),
            refused.retry_after
        );
        assert_eq!(refused.round_trips, 1, "a refusal writes nothing: one round trip");
        // A cost above the capacity can never be admitted: an error, not a refusal.
        assert!(matches!(bucket.acquire(&key, 8).await, Err(LimitError::CostAboveCapacity { .. })));

        // Empty, with a quick refill: early is refused, at retry_after is admitted.
        let quick = Limit::new(2, 1, Duration::from_millis(300)).unwrap();
        let mut bucket = TokenBucket::connect(&url, quick).await.unwrap();
        let key = unique("tb-zero");
        assert!(bucket.acquire(&key, 2).await.unwrap().admitted);
        let refused = bucket.acquire(&key, 1).await.unwrap();
        assert!(!refused.admitted && refused.retry_after <= Duration::from_millis(300), "{refused:?}");
        tokio::time::sleep(refused.retry_after / 3).await;
        let early = bucket.acquire(&key, 1).await.unwrap();
        assert!(!early.admitted, "{}: admitted at a third of retry_after: {early:?}", server.name());
        tokio::time::sleep(early.retry_after).await;
        let on_time = bucket.acquire(&key, 1).await.unwrap();
        assert!(on_time.admitted, "{}: refused after waiting retry_after: {on_time:?}", server.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_key_expires_when_it_would_be_full() {
    for server in servers("ttl_reset").await {
        let url = server.url();
        let mut admin = connect(&url).await.unwrap();
        let limit = Limit::new(4, 1, Duration::from_millis(100)).unwrap(); // full after 400 ms
        let mut bucket = TokenBucket::connect(&url, limit).await.unwrap();
        let key = unique("tb-ttl");
        assert!(bucket.acquire(&key, 3).await.unwrap().admitted);
        let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut admin).await.unwrap();
        // 3 tokens short of full: 300 ms, minus the time the reply took.
        assert!(pttl > 100 && pttl <= 300, "{}: PTTL {pttl} ms for 3 missing tokens at 10/s", server.name());
        tokio::time::sleep(Duration::from_millis(pttl as u64 + 60)).await;
        let exists: i64 = redis::cmd("EXISTS").arg(&key).query_async(&mut admin).await.unwrap();
        assert_eq!(exists, 0, "{}: the key outlived its refill time", server.name());
        // Absent is full: a whole-capacity request goes through.
        assert!(bucket.acquire(&key, 4).await.unwrap().admitted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_in_the_key_is_an_error_not_a_panic() {
    for server in servers("foreign_data").await {
        let url = server.url();
        let mut admin = connect(&url).await.unwrap();
        let limit = Limit::per_second(5, 5).unwrap();
        let mut bucket = TokenBucket::connect(&url, limit).await.unwrap();
        let hash = unique("tb-corrupt");
        let _: () = redis::cmd("HSET")
            .arg(&hash)
            .arg("micro_tokens")
            .arg("lots")
            .arg("at_us")
            .arg(1)
            .query_async(&mut admin)
            .await
            .unwrap();
        let err = bucket.acquire(&hash, 1).await.unwrap_err();
        assert!(matches!(err, LimitError::Corrupt { .. }), "{}: {err}", server.name());
        assert!(err.to_string().contains("delete it"), "the message says what to do: {err}");
        let string = unique("tb-string");
        let _: () = redis::cmd("SET").arg(&string).arg("x").query_async(&mut admin).await.unwrap();
        assert!(matches!(bucket.acquire(&string, 1).await, Err(LimitError::Corrupt { .. })));
        let mut log =
            SlidingWindowLog::connect(&url, WindowLimit::new(3, Duration::from_secs(1)).unwrap()).await.unwrap();
        assert!(matches!(log.acquire(&string).await, Err(LimitError::Corrupt { .. })));
    }
}

// ---------------------------------------------------------------------------------
// sliding-window
// ---------------------------------------------------------------------------------

/// Concurrent clients on one key: no window of the limit's length ever holds more than
/// `limit` admissions (server times, the log's own scores), and without WATCH it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_log_never_admits_more_than_its_limit_in_any_window() {
    let window = WindowLimit::new(10, Duration::from_millis(200)).unwrap();
    let clients = 20;
    for server in servers("sliding_log").await {
        let url = server.url();
        for variant in [Variant::Watched, Variant::Unwatched] {
            let mut logs = Vec::new();
            for _ in 0..clients {
                logs.push(SlidingWindowLog::connect(&url, window).await.unwrap().with_variant(variant));
            }
            let mut outcome = hammer(logs, &unique("sw"), Duration::from_millis(1_000)).await.unwrap();
            let (max, at) = outcome.admitted.max_in_window(window.window_micros());
            println!(
                "{} {variant:?}: {} decisions, {} admitted, at most {max} in one window (ending {at:?}), {} aborted",
                server.name(),
                outcome.decisions,
                outcome.admitted.len(),
                outcome.aborted
            );
            match variant {
                Variant::Watched => {
                    assert!(max as u64 <= window.limit(), "{}: {max} admissions in one window", server.name());
                    // About five windows' worth went through: the limiter is not just refusing.
                    assert!(
                        outcome.admitted.len() as u64 >= 3 * window.limit(),
                        "{}: {}",
                        server.name(),
                        outcome.admitted.len()
                    );
                }
                Variant::Unwatched => {
                    assert!(max as u64 > window.limit(), "{}: the check missed the unwatched log: {max}", server.name())
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_log_at_its_edges() {
    for server in servers("sliding_edges").await {
        let url = server.url();
        let mut admin = connect(&url).await.unwrap();
        let window = WindowLimit::new(5, Duration::from_millis(300)).unwrap();
        let mut log = SlidingWindowLog::connect(&url, window).await.unwrap();
        let key = unique("sw-edge");
        let mut first_at = None;
        for left in (0..5).rev() {
            let d = log.acquire(&key).await.unwrap();
            assert!(d.admitted && d.remaining == left, "{}: {d:?}", server.name());
            first_at.get_or_insert(d.at_micros);
        }
        let refused = log.acquire(&key).await.unwrap();
        let first_at = first_at.unwrap();
        assert!(!refused.admitted, "{}: the 6th of 5: {refused:?}", server.name());
        // Retry exactly when the oldest admission leaves the window.
        let expected = Duration::from_micros((first_at + 300_000 - refused.at_micros) as u64);
        assert_eq!(refused.retry_after, expected, "{}", server.name());
        let entries: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut admin).await.unwrap();
        assert_eq!(entries, 5, "refusals add nothing to the log");
        let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut admin).await.unwrap();
        assert!(pttl > 0 && pttl <= 300, "{}: PTTL {pttl}", server.name());
        tokio::time::sleep(refused.retry_after).await;
        let again = log.acquire(&key).await.unwrap();
        assert!(again.admitted, "{}: refused after retry_after: {again:?}", server.name());
        let entries: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut admin).await.unwrap();
        assert!(entries <= 5, "{}: the trim keeps the log at most the limit: {entries}", server.name());
    }
}

// ---------------------------------------------------------------------------------
// distributed-limiter (the deterministic simulator: no server)
// ---------------------------------------------------------------------------------

/// Eight simulated seconds of the scenario's cluster and load, for one seed.
struct Fixture {
    limit: Limit,
    arrivals: Vec<Arrival>,
    /// What one exact bucket on true time admits of the same arrivals.
    ideal: u64,
    seed: u64,
}

impl Fixture {
    fn new(seed: u64) -> Fixture {
        let limit = distributed_limiter::demo_limit();
        let arrivals = distributed_limiter::demo_arrivals(&limit, 8_000_000, &mut fastrand::Rng::with_seed(seed));
        let ideal = gossip_sim::ideal(&limit, &arrivals).admitted;
        Fixture { limit, arrivals, ideal, seed }
    }

    fn run(
        &self,
        interval_micros: Option<i64>,
        counting: Counting,
        clocks: &[ClockModel],
        network: &NetworkModel,
    ) -> gossip_sim::Accuracy {
        let config = ClusterConfig::new(self.limit, clocks.len(), interval_micros).unwrap().with_counting(counting);
        let run = gossip_sim::simulate(config, clocks, network, &self.arrivals, self.seed);
        gossip_sim::accuracy(&self.limit, &run.admitted_at, self.ideal)
    }
}

const SEEDS: std::ops::RangeInclusive<u64> = 1..=6;

/// The stated bound: with true clocks, a LAN and an exchange every 10 or 50 ms, the
/// total is within 1% of the exact bucket's and no stretch of time runs more than
/// `capacity + rate × (interval + worst delay)` ahead of it. Every seed.
#[test]
fn gossip_with_true_clocks_and_a_short_interval_stays_within_its_bound() {
    let network = NetworkModel::lan();
    let clocks = vec![ClockModel::default(); distributed_limiter::DEMO_INSTANCES];
    for seed in SEEDS {
        let fixture = Fixture::new(seed);
        let limit = fixture.limit;
        for interval in [10_000, 50_000] {
            let acc = fixture.run(Some(interval), Counting::Totals, &clocks, &network);
            let bound = distributed_limiter::in_flight_bound(&limit, interval, &network);
            println!("seed {seed}, every {interval} µs: {acc:?} (bound {bound})");
            assert!(acc.error_pct() <= 1.0, "seed {seed}, {interval} µs: {:.2}% off the ideal", acc.error_pct());
            assert!(acc.worst_excess <= bound, "seed {seed}, {interval} µs: excess {} > {bound}", acc.worst_excess);
        }
    }
}

/// The error grows with drift (the fastest clock sets the rate) and with the exchange
/// interval (more is in flight), on every seed; offsets alone change next to nothing.
#[test]
fn gossip_error_grows_with_drift_and_with_the_interval() {
    let network = NetworkModel::lan();
    let n = distributed_limiter::DEMO_INSTANCES;
    let interval = Some(distributed_limiter::DEMO_INTERVAL_MICROS);
    for seed in SEEDS {
        let fixture = Fixture::new(seed);
        let ideal = fixture.ideal;
        let over = |drift_ppm: i64| {
            let clocks = distributed_limiter::skewed_clocks(n, 2_000_000, drift_ppm);
            fixture.run(interval, Counting::Totals, &clocks, &network)
        };
        let true_clocks = vec![ClockModel::default(); n];
        let none = fixture.run(interval, Counting::Totals, &true_clocks, &network);
        let (offsets, d5, d20) = (over(0), over(50_000), over(200_000));
        println!("seed {seed}: none {none:?}\n offsets {offsets:?}\n ±5% {d5:?}\n ±20% {d20:?}");
        assert!(
            d5.over_pct > none.over_pct + 0.5,
            "seed {seed}: ±5% drift {:.2}% vs {:.2}%",
            d5.over_pct,
            none.over_pct
        );
        assert!(
            d20.over_pct > d5.over_pct + 1.0,
            "seed {seed}: ±20% drift {:.2}% vs ±5% {:.2}%",
            d20.over_pct,
            d5.over_pct
        );
        assert!(
            offsets.admitted.abs_diff(none.admitted) * 100 <= ideal,
            "seed {seed}: offsets moved the total from {} to {}",
            none.admitted,
            offsets.admitted
        );
        let short = fixture.run(Some(10_000), Counting::Totals, &true_clocks, &network);
        let long = fixture.run(Some(1_000_000), Counting::Totals, &true_clocks, &network);
        assert!(
            long.worst_excess > 4 * short.worst_excess.max(1),
            "seed {seed}: worst excess {} at 1 s vs {} at 10 ms",
            long.worst_excess,
            short.worst_excess
        );
    }
}

/// Running totals make lost messages harmless; the deltas variant (broken on purpose)
/// is caught over-admitting by what was lost.
#[test]
fn running_totals_survive_message_loss_and_deltas_do_not() {
    let lossy = NetworkModel { loss: 0.2, ..NetworkModel::lan() };
    let clocks = vec![ClockModel::default(); distributed_limiter::DEMO_INSTANCES];
    let interval = Some(distributed_limiter::DEMO_INTERVAL_MICROS);
    for seed in SEEDS {
        let fixture = Fixture::new(seed);
        let totals = fixture.run(interval, Counting::Totals, &clocks, &lossy);
        let deltas = fixture.run(interval, Counting::Deltas, &clocks, &lossy);
        assert!(totals.error_pct() <= 1.0, "seed {seed}: totals under loss {:.2}% off", totals.error_pct());
        assert!(
            deltas.over_pct > 5.0,
            "seed {seed}: the check missed the deltas variant: {:.2}% over",
            deltas.over_pct
        );
    }
}

// ---------------------------------------------------------------------------------
// The scenarios, at Scale::Quick.
// ---------------------------------------------------------------------------------

async fn quick(name: &str) {
    let exercise = exercises::find(name).unwrap();
    let report = framework::run(exercise, DemoOptions { scale: Scale::Quick, ..Default::default() }).await.unwrap();
    println!("{report}");
    assert!(report.passed(), "{name} failed its checks:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_bucket_scenario_passes() {
    quick("token-bucket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_window_scenario_passes() {
    quick("sliding-window").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_limiter_scenario_passes() {
    quick("distributed-limiter").await;
}
