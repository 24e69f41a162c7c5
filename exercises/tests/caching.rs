//! The cache-aside exercise's invariants, over TCP: always against minikv served
//! in-process, and against a real `redis-server` when one is installed.
//!
//! Each property is checked at the origin (its own count of queries), not only by the
//! cache's counters, and each is paired with the variant that breaks it, so the check is
//! seen to fail: the naive pattern stampedes, single-flight alone loads once per
//! process, no negative caching loads per read, a naive stale read refreshes per reader,
//! an unconditional unlock deletes another holder's lease.
//!
//! Timing: TTLs here are hundreds of milliseconds with wide margins, and no assertion is
//! about speed (latencies go in the scenario's report).

use std::future::Future;
use std::time::Duration;

use exercises::caching::cache_aside::{CacheAside, CacheAsideError, Config, Protection, Source};
use exercises::caching::kv_lock::KvLock;
use exercises::caching::origin::Origin;
use exercises::caching::scenario::{self, negative_load_bound};
use exercises::framework::backends::{MiniKv, RealRedis};
use exercises::framework::{self, DemoOptions, Scale};

const MS: Duration = Duration::from_millis(1);

/// Runs `test` against minikv, then against redis-server if it is installed. Real
/// servers are started here, on the test's own thread (see backends.rs on PDEATHSIG).
async fn on_each_backend<F, Fut>(test: F)
where
    F: Fn(String, &'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    let mini = MiniKv::start().await.expect("minikv starts in-process");
    test(mini.url(), "minikv").await;
    drop(mini);
    match RealRedis::start().await.expect("redis-server starts when installed") {
        Some(real) => test(real.url(), "redis-server").await,
        None => println!("redis-server is not installed: skipped the real-server comparison"),
    }
}

/// A key prefix unique to this test and run.
fn prefix(test: &str) -> String {
    format!("cache-aside-test:{test}:{:08x}:", fastrand::u32(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_reads_make_exactly_one_origin_load() {
    on_each_backend(|url, server| async move {
        let config = Config::new(prefix("one-load"), Duration::from_secs(30));
        let outcome = scenario::stampede(&url, &config, 1, 1_000, 50 * MS, None).await.expect("the stampede runs");
        assert_eq!(outcome.origin_loads, 1, "{server}: single-flight must make one origin load: {outcome:?}");
        assert_eq!((outcome.wrong_answers, outcome.errors), (0, 0), "{server}: {outcome:?}");
        assert_eq!(outcome.stats.reads(Source::Loaded), 1, "{server}: one reader loaded");
        assert_eq!(outcome.stats.total_reads(), 1_000, "{server}: every read counted once");
        assert_eq!(outcome.stats.origin_loads, 1, "{server}: the cache's count agrees with the origin's");

        // The same thousand reads with the naive pattern: the check above would fail.
        let naive = config.clone().with_protection(Protection::None);
        let naive = Config { prefix: prefix("naive"), ..naive };
        let outcome = scenario::stampede(&url, &naive, 1, 1_000, 50 * MS, None).await.expect("the stampede runs");
        assert!(outcome.origin_loads > 1, "{server}: the unprotected variant must stampede: {outcome:?}");
        assert_eq!(outcome.wrong_answers, 0, "{server}: a stampede is slow, not wrong");
        println!(
            "{server}: 1000 cold reads, naive: {} origin loads (peak {} at once); single-flight: 1",
            outcome.origin_loads, outcome.peak_concurrent_loads
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_processes_single_flight_loads_once_each_and_the_kv_lock_once_in_all() {
    on_each_backend(|url, server| async move {
        let processes = 4;
        let alone = Config::new(prefix("procs"), Duration::from_secs(30));
        let outcome = scenario::stampede(&url, &alone, processes, 400, 200 * MS, None).await.expect("runs");
        assert!(
            outcome.origin_loads > 1 && outcome.origin_loads <= processes as u64,
            "{server}: single-flight alone: one load per process at most, and it cannot see the others: {outcome:?}"
        );
        let locked =
            Config::new(prefix("locked"), Duration::from_secs(30)).with_protection(Protection::SingleFlightAndKvLock);
        let outcome = scenario::stampede(&url, &locked, processes, 400, 200 * MS, None).await.expect("runs");
        assert_eq!(outcome.origin_loads, 1, "{server}: with the KV lock one process loads: {outcome:?}");
        assert_eq!((outcome.wrong_answers, outcome.errors), (0, 0), "{server}: {outcome:?}");
        assert!(outcome.stats.reads(Source::Polled) >= 1, "{server}: the other processes polled: {outcome:?}");
        assert_eq!(outcome.stats.leases_lost, 0, "{server}: the lease outlived the load");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_caching_bounds_the_origin_loads_of_a_missing_key() {
    on_each_backend(|url, server| async move {
        let negative_ttl = 200 * MS;
        let on = Config::new(prefix("neg"), Duration::from_secs(30)).with_negative_ttl(negative_ttl);
        let outcome = scenario::missing_key(&url, &on, 20 * MS, 16, 800 * MS, 5 * MS).await.expect("runs");
        let bound = negative_load_bound(outcome.elapsed, negative_ttl);
        assert!(outcome.reads > 100, "{server}: enough reads to mean something: {outcome:?}");
        assert_eq!(outcome.not_found, outcome.reads, "{server}: every read says not found");
        assert!(outcome.origin_loads <= bound, "{server}: {} loads > bound {bound}: {outcome:?}", outcome.origin_loads);
        assert!(outcome.stats.reads(Source::NegativeHit) > 0, "{server}: answered from the negative entry");

        let off = Config::new(prefix("neg-off"), Duration::from_secs(30));
        let outcome = scenario::missing_key(&url, &off, 20 * MS, 16, 800 * MS, 5 * MS).await.expect("runs");
        let bound = negative_load_bound(outcome.elapsed, negative_ttl);
        assert!(outcome.origin_loads > bound, "{server}: without negative caching the bound must fail: {outcome:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_within_the_grace_and_not_after() {
    on_each_backend(|url, server| async move {
        let config = Config::new(prefix("swr"), 200 * MS).with_stale_grace(800 * MS);
        let outcome = scenario::stale_while_revalidate(&url, &config, 300 * MS, 100, true).await.expect("runs");
        assert_eq!(outcome.stale_reads, 100, "{server}: every reader in the grace gets the stale value: {outcome:?}");
        assert_eq!((outcome.misses, outcome.errors), (0, 0), "{server}: nobody waits for the origin");
        assert_eq!(outcome.refresh_loads, 1, "{server}: one refresh for a hundred stale reads");
        assert_eq!(outcome.stats.refreshes_started, 1, "{server}: {:?}", outcome.stats);
        assert_eq!(outcome.after_refresh.source, Source::Fresh, "{server}");
        assert_eq!(outcome.after_refresh.value.as_deref(), Some(scenario::SWR_NEW_VALUE), "{server}: the new value");
        let after_grace = outcome.after_grace.expect("asked for");
        assert_eq!(after_grace.source, Source::Loaded, "{server}: past the grace the stale value is not served");

        // The naive variant serves stale too, but every stale reader refreshes.
        let naive = Config { prefix: prefix("swr-naive"), ..config.clone().with_protection(Protection::None) };
        let outcome = scenario::stale_while_revalidate(&url, &naive, 300 * MS, 100, false).await.expect("runs");
        assert!(outcome.refresh_loads > 1, "{server}: without single-flight, one refresh per reader: {outcome:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_stale_value_until_the_grace_ends() {
    on_each_backend(|url, server| async move {
        let origin = Origin::new(20 * MS);
        origin.put("k", "v1");
        let config = Config::new(prefix("stale-if-error"), 150 * MS).with_stale_grace(600 * MS);
        let cache = CacheAside::connect(&url, origin.clone(), config).await.expect("connects");
        assert_eq!(cache.get("k").await.expect("loads").source, Source::Loaded);
        origin.set_unavailable(true);
        tokio::time::sleep(200 * MS).await; // past the soft expiry
        for _ in 0..5 {
            let read = cache.get("k").await.expect("a stale value hides the failure");
            assert_eq!((read.source, read.value.as_deref()), (Source::Stale, Some("v1")), "{server}");
            assert!(cache.wait_for_refreshes(Duration::from_secs(5)).await);
        }
        assert!(cache.stats().refresh_failures >= 1, "{server}: {:?}", cache.stats());
        tokio::time::sleep(700 * MS).await; // past the grace
        match cache.get("k").await {
            Err(CacheAsideError::Origin(_)) => {}
            other => panic!("{server}: past the grace the origin's failure shows: {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_keeps_a_hot_key_loaded_across_its_ttl() {
    on_each_backend(|url, server| async move {
        let ttl = 600 * MS;
        let on = Config::new(prefix("hot"), ttl).with_refresh_ahead(400 * MS);
        let outcome = scenario::hot_key(&url, &on, 30 * MS, 8, 1_500 * MS, 5 * MS).await.expect("runs");
        assert_eq!(outcome.misses, 0, "{server}: no reader waits for the origin: {outcome:?}");
        assert_eq!(outcome.errors, 0, "{server}: {outcome:?}");
        let periods = (outcome.elapsed.as_millis() / ttl.as_millis()) as u64;
        assert!(outcome.origin_loads >= periods, "{server}: kept loaded by refreshes, not by a long TTL: {outcome:?}");

        let off = Config::new(prefix("hot-off"), ttl);
        let outcome = scenario::hot_key(&url, &off, 30 * MS, 8, 1_500 * MS, 5 * MS).await.expect("runs");
        assert!(outcome.misses > 0, "{server}: without refresh-ahead the key expires under its readers");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_failure_reaches_every_waiter_once_and_is_not_cached() {
    on_each_backend(|url, server| async move {
        let origin = Origin::new(100 * MS);
        origin.put("k", "v");
        origin.set_unavailable(true);
        let config = Config::new(prefix("fail"), Duration::from_secs(30)).with_negative_ttl(Duration::from_secs(30));
        let cache = CacheAside::connect(&url, origin.clone(), config).await.expect("connects");
        let readers: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get("k").await })
            })
            .collect();
        for reader in readers {
            let result = reader.await.expect("no panic");
            assert!(matches!(result, Err(CacheAsideError::Origin(_))), "{server}: {result:?}");
        }
        assert!(origin.loads() <= 2, "{server}: the waiters shared the failed load: {}", origin.loads());
        origin.set_unavailable(false);
        let read = cache.get("k").await.expect("the origin is back");
        assert_eq!(
            (read.source, read.value.as_deref()),
            (Source::Loaded, Some("v")),
            "{server}: failures are not cached"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_its_load_to_a_waiting_reader() {
    on_each_backend(|url, server| async move {
        let origin = Origin::new(300 * MS);
        origin.put("k", "v");
        let cache = CacheAside::connect(&url, origin.clone(), Config::new(prefix("cancel"), Duration::from_secs(30)))
            .await
            .expect("connects");
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get("k").await })
        };
        while origin.loads() == 0 {
            tokio::time::sleep(MS).await;
        }
        let follower = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get("k").await })
        };
        tokio::time::sleep(50 * MS).await; // the follower is waiting on the leader's flight
        leader.abort();
        assert!(leader.await.is_err_and(|e| e.is_cancelled()));
        let read = follower.await.expect("no panic").expect("the follower takes over");
        assert_eq!((read.source, read.value.as_deref()), (Source::Loaded, Some("v")), "{server}");
        assert_eq!(origin.loads(), 2, "{server}: the cancelled load, and the follower's own");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_and_foreign_values() {
    on_each_backend(|url, server| async move {
        let origin = Origin::new(5 * MS);
        origin.put("k", "v1");
        let cache = CacheAside::connect(&url, origin.clone(), Config::new(prefix("inval"), Duration::from_secs(30)))
            .await
            .expect("connects");
        assert_eq!(cache.get("k").await.expect("loads").value.as_deref(), Some("v1"));
        origin.put("k", "v2");
        assert_eq!(
            cache.get("k").await.expect("hit").value.as_deref(),
            Some("v1"),
            "{server}: cached until invalidated"
        );
        assert!(cache.invalidate("k").await.expect("DEL"));
        let read = cache.get("k").await.expect("loads");
        assert_eq!((read.source, read.value.as_deref()), (Source::Loaded, Some("v2")), "{server}");

        // Something else wrote under our key: it is a miss, never served, and overwritten.
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connects");
        redis::cmd("SET")
            .arg(cache.value_key("k"))
            .arg("not an envelope")
            .query_async::<()>(&mut conn)
            .await
            .expect("SET");
        let read = cache.get("k").await.expect("loads");
        assert_eq!((read.source, read.value.as_deref()), (Source::Loaded, Some("v2")), "{server}");
        assert!(cache.stats().corrupt_entries >= 1, "{server}: seen and counted");
        assert_eq!(cache.get("k").await.expect("hit").source, Source::Fresh, "{server}: overwritten with an envelope");
        assert!(matches!(cache.get("").await, Err(CacheAsideError::BadKey(_))));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_released_only_by_its_holder_and_the_plain_del_is_caught() {
    on_each_backend(|url, server| async move {
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connects");
        let first_conn = client.get_multiplexed_async_connection().await.expect("connects");
        let second_conn = client.get_multiplexed_async_connection().await.expect("connects");
        let first = KvLock::new(first_conn, 100 * MS, 1);
        let second = KvLock::new(second_conn, Duration::from_secs(10), 2);
        let key = format!("{}lock", prefix("lease"));
        let exists = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            let key = key.clone();
            async move { redis::cmd("EXISTS").arg(key).query_async::<i64>(&mut conn).await.expect("EXISTS") == 1 }
        };

        let lease = first.try_acquire(&mut conn, &key).await.expect("SET NX").expect("free");
        assert!(second.try_acquire(&mut conn, &key).await.expect("SET NX").is_none(), "{server}: held");
        assert!(first.release(lease).await.expect("release"), "{server}: the holder releases");
        assert!(!exists(&mut conn).await, "{server}: released");

        // The first holder stalls past its lease; the second takes it; the first's late
        // release must leave the second's lease alone.
        let stale = first.try_acquire(&mut conn, &key).await.expect("SET NX").expect("free");
        tokio::time::sleep(250 * MS).await;
        let current = second.try_acquire(&mut conn, &key).await.expect("SET NX").expect("expired, so free");
        assert!(!first.release(stale.clone()).await.expect("release"), "{server}: not ours any more");
        assert!(exists(&mut conn).await, "{server}: the compare-and-delete kept the new holder's lease");

        // The broken release deletes it, which would let a third process in.
        assert!(first.release_unconditionally_broken(stale).await.expect("DEL"), "{server}");
        assert!(!exists(&mut conn).await, "{server}: the plain DEL removed another holder's lease");
        assert!(!second.release(current).await.expect("release"), "{server}: the second holder lost it");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_passes_at_quick_scale() {
    let exercise = exercises::find("cache-aside").expect("in the catalogue");
    let options = DemoOptions { scale: Scale::Quick, ..Default::default() };
    let report = framework::run(exercise, options).await.expect("the scenario runs");
    println!("{report}");
    assert!(report.passed(), "{report}");
    let loads = |label: &str| report.value(label).and_then(|v| v.parse::<u64>().ok());
    assert_eq!(loads("origin loads, single-flight"), Some(1), "{report}");
    assert!(loads("origin loads, naive").is_some_and(|n| n > 1), "{report}");

    match RealRedis::start().await.expect("redis-server starts when installed") {
        Some(real) => {
            let options = DemoOptions { kv: Some(real.url()), scale: Scale::Quick, ..Default::default() };
            let report = framework::run(exercise, options).await.expect("the scenario runs against redis-server");
            println!("{report}");
            assert!(report.passed(), "{report}");
        }
        None => println!("redis-server is not installed: skipped the real-server run of the scenario"),
    }
}
