//! The idempotency theme over TCP: `POST /orders` with idempotency keys in the KV store,
//! and the payment processor under kills, each against minikv / miniqueue and, where
//! installed, against a real redis-server / beanstalkd.
//!
//! The invariants are asserted from two sides: what the clients saw (statuses, bodies,
//! headers) and what the store holds (the commit counts each `MULTI` increments, the
//! ledger's journal, the provider's books). Each broken variant runs through the same
//! harness as the correct pattern, and the test asserts the check catches it.
//!
//! Timing-based tests (TTL expiry, a crashed claim expiring, a handler outliving its
//! lock) use margins of hundreds of milliseconds so a loaded machine does not flip
//! them; no test asserts a latency.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exercises::framework::backends::{MiniKv, MiniQueue, RealBeanstalkd, RealRedis};
use exercises::framework::http::{self, HttpClient, HttpResponse, HttpServer};
use exercises::framework::{self, DemoOptions, Scale};
use exercises::idempotency::ledger::{Ledger, LedgerEntry, LedgerKeys, LedgerWrite, Recorded};
use exercises::idempotency::orders::{OrderService, OrdersConfig, PATH, REPLAYED_HEADER};
use exercises::idempotency::payment::{run_payments, KillPoint, PaymentConfig, Variant as PaymentVariant};
use exercises::idempotency::pool::ConnectionPool;
use exercises::idempotency::record::Record;
use exercises::idempotency::store::{StoreConfig, Variant};
use exercises::idempotency::{keys::IdempotencyKey, ledger};

/// Runs `check` against minikv, then against a real redis-server when it is installed.
async fn on_each_kv<F, Fut>(test: &str, check: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mini = MiniKv::start().await.expect("minikv starts");
    check(mini.url()).await;
    drop(mini);
    match RealRedis::start().await.expect("redis-server starts") {
        Some(real) => check(real.url()).await,
        None => eprintln!("{test}: redis-server is not installed; skipped the real-Redis comparison"),
    }
}

/// A fresh order service on its own namespace, served on a loopback port.
async fn serve(kv_url: &str, config: OrdersConfig) -> (Arc<OrderService>, HttpServer, String) {
    serve_in(kv_url, &format!("test-{:08x}", fastrand::u32(..)), config).await
}

/// An order service on `namespace`: two of them on one namespace are two replicas of
/// one service sharing its KV store.
async fn serve_in(kv_url: &str, namespace: &str, config: OrdersConfig) -> (Arc<OrderService>, HttpServer, String) {
    let service = OrderService::connect(kv_url, namespace, config).await.expect("the service connects");
    let server = http::serve(service.router()).await.expect("serves");
    let url = server.url(PATH);
    (service, server, url)
}

fn config(work_ms: u64, lock_ttl: Duration, response_ttl: Duration) -> OrdersConfig {
    OrdersConfig {
        store: StoreConfig { lock_ttl, response_ttl },
        work: (Duration::from_millis(work_ms), Duration::from_millis(work_ms)),
        ..OrdersConfig::default()
    }
}

/// A bad-key request: what it is, its headers, and a word its 400 must contain.
type BadKeyCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

const ORDER: &str = r#"{"customer":"ada","item":"book","quantity":2}"#;

async fn post(http: &HttpClient, url: &str, key: &str, body: &str) -> HttpResponse {
    http.post(url, &[("idempotency-key", key), ("content-type", "application/json")], body.to_string())
        .await
        .expect("the service answers")
}

/// Resends until a 201, backing off on 409 and 500.
async fn post_until_created(http: &HttpClient, url: &str, key: &str, body: &str) -> HttpResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = post(http, url, key, body).await;
        if response.status == 201 {
            return response;
        }
        assert!(matches!(response.status, 409 | 500), "unexpected {}: {}", response.status, response.text());
        assert!(Instant::now() < deadline, "{key} never got its 201");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_the_first_response_again_with_one_added_header() {
    on_each_kv("replay", |url| async move {
        let (service, _server, url) = serve(&url, config(1, Duration::from_secs(5), Duration::from_secs(60))).await;
        let http = HttpClient::new();
        let first = post(&http, &url, "order-1", ORDER).await;
        assert_eq!(first.status, 201, "{}", first.text());
        assert_eq!(first.header(REPLAYED_HEADER), None, "a first response is not marked");
        let location = first.header("location").expect("a Location header").to_string();
        assert!(location.starts_with("/orders/ord_"), "{location}");

        // The same order with its fields reordered and re-spaced, and the key quoted
        // the IETF way: the same request, so the same response.
        let reordered = r#"{ "quantity": 2, "item": "book", "customer": "ada" }"#;
        for key in ["order-1", "\"order-1\""] {
            let replay = post(&http, &url, key, reordered).await;
            assert_eq!(replay.status, first.status);
            assert_eq!(replay.body, first.body, "byte for byte");
            assert_eq!(replay.header("location"), Some(location.as_str()));
            assert_eq!(replay.header("content-type"), first.header("content-type"));
            assert_eq!(replay.header(REPLAYED_HEADER), Some("true"));
        }
        let executions = service.executions()["order-1"];
        assert_eq!((executions.started, executions.committed), (1, 1));
        let ledger = service.committed().await.expect("ledger");
        assert_eq!((ledger.commits.get("order-1"), ledger.orders), (Some(&1), 1));
        assert_eq!(service.stats().replays, 2);

        // The stored record is the completed response, with the response TTL on it.
        let key = IdempotencyKey::parse(b"order-1").expect("key");
        assert!(matches!(service.store().peek(&key).await.expect("peek"), Some(Record::Completed { .. })));
        let mut conn = service.store().connection();
        let pttl: i64 =
            redis::cmd("PTTL").arg(service.store().kv_key(&key)).query_async(&mut conn).await.expect("PTTL");
        assert!(pttl > 50_000 && pttl <= 60_000, "PTTL {pttl}");
        service.clear_ledger().await.expect("clean up");
    })
    .await;
}

/// `keys` keys, `senders` concurrent requests each released by one barrier, every
/// sender retrying until its 201. Returns the service (for its counters) and, per
/// key, the distinct 201 bodies seen and how many were first (not replayed).
async fn burst(
    kv_url: &str,
    variant: Variant,
    keys: usize,
    senders: usize,
) -> (Arc<OrderService>, Vec<(HashSet<String>, usize, usize)>) {
    let mut config = config(100, Duration::from_secs(5), Duration::from_secs(60));
    config.variant = variant;
    let (service, _server, url) = serve(kv_url, config).await;
    let http = HttpClient::new();
    let mut per_key = Vec::new();
    for k in 0..keys {
        let key = format!("burst-{k}");
        let barrier = Arc::new(tokio::sync::Barrier::new(senders));
        let tasks: Vec<_> = (0..senders)
            .map(|_| {
                let (http, url, key, barrier) = (http.clone(), url.clone(), key.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let response = post(&http, &url, &key, ORDER).await;
                    let conflicted = response.status == 409;
                    let created = if response.status == 201 {
                        response
                    } else {
                        post_until_created(&http, &url, &key, ORDER).await
                    };
                    (created, conflicted)
                })
            })
            .collect();
        let mut bodies = HashSet::new();
        let (mut firsts, mut conflicts) = (0, 0);
        for task in tasks {
            let (created, conflicted) = task.await.expect("sender");
            firsts += usize::from(created.header(REPLAYED_HEADER).is_none());
            conflicts += usize::from(conflicted);
            bodies.insert(created.text());
        }
        per_key.push((bodies, firsts, conflicts));
    }
    (service, per_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_run_the_handler_once_and_the_rest_get_409() {
    on_each_kv("concurrent duplicates", |url| async move {
        let (service, per_key) = burst(&url, Variant::Correct, 4, 12).await;
        for (k, (bodies, firsts, conflicts)) in per_key.iter().enumerate() {
            assert_eq!(*firsts, 1, "key {k}: the handler answered {firsts} senders itself");
            assert_eq!(bodies.len(), 1, "key {k}: every sender got the same order");
            assert!(*conflicts >= 1, "key {k}: the handler runs 100 ms, so some sender hit it in flight");
        }
        let stats = service.stats();
        assert_eq!((stats.executions_started, stats.executions_committed, stats.lost_claims), (4, 4, 0));
        let ledger = service.committed().await.expect("ledger");
        assert!(ledger.commits.values().all(|&n| n == 1) && ledger.commits.len() == 4, "{ledger:?}");
        service.clear_ledger().await.expect("clean up");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_then_set_claim_is_caught_running_the_handler_twice() {
    // The broken claim (GET, then SET without NX) lets concurrent senders all see the key
    // absent. The fenced commit still lets only the last claimer commit, so the ledger
    // stays at one per key; what gives it away is the handler running more than once,
    // which for any effect outside the MULTI (an email, a charge) is the bug.
    on_each_kv("check-then-set", |url| async move {
        let (service, per_key) = burst(&url, Variant::CheckThenSet, 4, 8).await;
        let stats = service.stats();
        assert!(stats.executions_started > 4, "the race was not caught: {stats:?}");
        assert!(stats.lost_claims > 0, "{stats:?}");
        let ran_twice = service.executions().values().filter(|e| e.started > 1).count();
        assert!(ran_twice > 0, "no key ran its handler twice");
        assert!(per_key.iter().all(|(_, firsts, _)| *firsts >= 1), "every key was answered");
        service.clear_ledger().await.expect("clean up");
    })
    .await;
}

/// One request whose handler outlives its lock on a slow replica, and a retry that a
/// fast replica (same namespace, same KV store) answers meanwhile. Returns the slow
/// replica, the fast one, and both responses.
async fn outlived_lock(
    kv_url: &str,
    variant: Variant,
) -> (Arc<OrderService>, Arc<OrderService>, HttpResponse, HttpResponse) {
    let namespace = format!("test-{:08x}", fastrand::u32(..));
    let mut slow_config = config(600, Duration::from_millis(100), Duration::from_secs(60));
    slow_config.variant = variant;
    let mut fast_config = config(1, Duration::from_secs(5), Duration::from_secs(60));
    fast_config.variant = variant;
    let (slow_replica, _slow_server, slow_url) = serve_in(kv_url, &namespace, slow_config).await;
    let (fast_replica, _fast_server, fast_url) = serve_in(kv_url, &namespace, fast_config).await;
    let http = HttpClient::new();
    let slow = {
        let http = http.clone();
        tokio::spawn(async move { post(&http, &slow_url, "slow", ORDER).await })
    };
    // The slow claim expires at 100 ms; its handler finishes at 600 ms.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let takeover = post(&http, &fast_url, "slow", ORDER).await;
    let slow = slow.await.expect("the first request");
    (slow_replica, fast_replica, slow, takeover)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_outlives_its_lock_commits_nothing_and_the_unfenced_commit_is_caught() {
    on_each_kv("outlived lock", |url| async move {
        let (slow_replica, fast_replica, slow, takeover) = outlived_lock(&url, Variant::Correct).await;
        assert_eq!(takeover.status, 201, "{}", takeover.text());
        assert_eq!(slow.status, 409, "the late handler lost its claim: {}", slow.text());
        assert_eq!(slow_replica.stats().lost_claims, 1);
        assert_eq!(fast_replica.stats().executions_committed, 1);
        let ledger = slow_replica.committed().await.expect("ledger");
        assert_eq!((ledger.commits.get("slow"), ledger.orders), (Some(&1), 1));
        slow_replica.clear_ledger().await.expect("clean up");

        // Without the fence the late handler commits on top: the ledger has two orders
        // for one key, and the stored response is no longer the one the client got.
        let (slow_replica, _fast_replica, slow, takeover) = outlived_lock(&url, Variant::Unfenced).await;
        assert_eq!((slow.status, takeover.status), (201, 201));
        assert_ne!(slow.body, takeover.body, "two different orders for one key");
        let ledger = slow_replica.committed().await.expect("ledger");
        assert_eq!((ledger.commits.get("slow"), ledger.orders), (Some(&2), 2), "the double commit is caught");
        slow_replica.clear_ledger().await.expect("clean up");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misuse_gets_400_409_413_and_422() {
    on_each_kv("misuse", |url| async move {
        let (service, _server, url) = serve(&url, config(300, Duration::from_secs(5), Duration::from_secs(60))).await;
        let http = HttpClient::new();

        // In flight, the same key: 409 for the same body, 422 for another one.
        let first = {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { post(&http, &url, "k1", ORDER).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let same = post(&http, &url, "k1", ORDER).await;
        assert_eq!(same.status, 409, "{}", same.text());
        assert_eq!(same.header("retry-after"), Some("1"));
        let other = r#"{"customer":"ada","item":"book","quantity":3}"#;
        assert_eq!(post(&http, &url, "k1", other).await.status, 422, "another body while in flight");
        assert_eq!(first.await.expect("first").status, 201);
        let reused = post(&http, &url, "k1", other).await;
        assert_eq!(reused.status, 422, "another body after completion");
        assert!(reused.text().contains("new key"), "{}", reused.text());

        // Bad keys: 400 with a reason.
        let json = ("content-type", "application/json");
        let long = "k".repeat(256);
        let bad: [BadKeyCase; 6] = [
            ("missing", vec![json], "missing"),
            ("empty", vec![("idempotency-key", ""), json], "empty"),
            ("too long", vec![("idempotency-key", long.as_str()), json], "255"),
            ("a space", vec![("idempotency-key", "a b"), json], "visible ASCII"),
            ("unbalanced quote", vec![("idempotency-key", "\"abc"), json], "quoted"),
            ("repeated", vec![("idempotency-key", "a"), ("idempotency-key", "b"), json], "exactly one"),
        ];
        for (what, headers, reason) in bad {
            let response = http.post(&url, &headers, ORDER.to_string()).await.expect("answers");
            assert_eq!(response.status, 400, "{what}: {}", response.text());
            assert!(response.text().contains(reason), "{what}: {}", response.text());
        }

        // A bad body is refused without using the key up.
        for body in [
            "not json",
            r#"{"customer":"ada","item":"book","quantity":0}"#,
            r#"{"customer":"a","item":"b","quantity":1,"extra":1}"#,
        ] {
            assert_eq!(post(&http, &url, "k2", body).await.status, 400, "{body}");
        }
        assert_eq!(post(&http, &url, "k2", ORDER).await.status, 201, "k2 was not used by the refused bodies");
        let oversized = "x".repeat(exercises::idempotency::orders::MAX_REQUEST_BODY_BYTES + 1);
        assert_eq!(post(&http, &url, "k3", &oversized).await.status, 413);

        let stats = service.stats();
        assert_eq!((stats.executions_committed, stats.mismatch_422, stats.bad_request_400), (2, 2, 9));
        service.clear_ledger().await.expect("clean up");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_response_ttl_the_same_key_runs_the_handler_again() {
    on_each_kv("ttl", |url| async move {
        let (service, _server, url) = serve(&url, config(1, Duration::from_secs(5), Duration::from_millis(300))).await;
        let http = HttpClient::new();
        let first = post(&http, &url, "expiring", ORDER).await;
        let replay = post(&http, &url, "expiring", ORDER).await;
        assert_eq!((first.status, replay.header(REPLAYED_HEADER)), (201, Some("true")));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let again = post(&http, &url, "expiring", ORDER).await;
        assert_eq!((again.status, again.header(REPLAYED_HEADER)), (201, None), "ran again, not replayed");
        assert_ne!(again.body, first.body, "a new order");
        let executions = service.executions()["expiring"];
        assert_eq!((executions.started, executions.committed), (2, 2));
        assert_eq!(service.committed().await.expect("ledger").commits.get("expiring"), Some(&2));
        service.clear_ledger().await.expect("clean up");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_claim_and_commit_blocks_the_key_until_the_lock_expires() {
    on_each_kv("crash", |url| async move {
        let lock_ttl = Duration::from_millis(500);
        let mut config = config(1, lock_ttl, Duration::from_secs(60));
        config.crash_probability = 1.0; // every key's first execution crashes; later ones do not
        let (service, _server, url) = serve(&url, config).await;
        let http = HttpClient::new();
        let crashed = post(&http, &url, "doomed", ORDER).await;
        let crashed_at = Instant::now();
        assert_eq!(crashed.status, 500, "{}", crashed.text());
        assert!(crashed.text().contains("same Idempotency-Key"), "{}", crashed.text());

        // The in-flight record outlives its handler: retries get 409 until it expires.
        let key = IdempotencyKey::parse(b"doomed").expect("key");
        assert!(matches!(service.store().peek(&key).await.expect("peek"), Some(Record::InFlight { .. })));
        assert_eq!(post(&http, &url, "doomed", ORDER).await.status, 409);
        let created = post_until_created(&http, &url, "doomed", ORDER).await;
        let blocked_for = crashed_at.elapsed();
        assert_eq!(created.header(REPLAYED_HEADER), None, "the retry ran the handler");
        assert!(blocked_for >= lock_ttl.mul_f64(0.6), "unblocked after {blocked_for:?}, lock TTL {lock_ttl:?}");

        let executions = service.executions()["doomed"];
        assert_eq!((executions.started, executions.crashed, executions.committed), (2, 1, 1));
        assert_eq!(service.committed().await.expect("ledger").commits.get("doomed"), Some(&1));
        service.clear_ledger().await.expect("clean up");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_left_mid_watch_is_closed_not_pooled() {
    let kv = MiniKv::start().await.expect("minikv starts");
    let pool = ConnectionPool::new(&kv.url()).expect("pool");
    let exclusive = pool.checkout().await.expect("checkout");
    exclusive.release();
    assert_eq!(pool.idle_count(), 1, "a released connection is kept");
    let mut exclusive = pool.checkout().await.expect("checkout");
    let _: () = redis::cmd("WATCH").arg("k").query_async(exclusive.conn()).await.expect("WATCH");
    drop(exclusive);
    assert_eq!(pool.idle_count(), 0, "a connection with a pending WATCH is not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_appends_once_per_payment_even_when_two_workers_race() {
    on_each_kv("ledger race", |url| async move {
        for (write, expect_duplicates) in [(LedgerWrite::Checked, false), (LedgerWrite::Blind, true)] {
            let keys = LedgerKeys::new(&format!("test-ledger-{:08x}", fastrand::u32(..)));
            let mut a = Ledger::connect(&url, keys.clone(), write).await.expect("ledger a");
            let mut b = Ledger::connect(&url, keys.clone(), write).await.expect("ledger b");
            let ids: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
            for id in &ids {
                let entry = LedgerEntry {
                    payment_id: id.clone(),
                    account: "acct".into(),
                    amount_cents: 100,
                    charge_id: format!("ch-{id}"),
                };
                let (ra, rb) = tokio::join!(a.record(&entry), b.record(&entry));
                let appended = [ra.expect("a"), rb.expect("b")].iter().filter(|r| **r == Recorded::Appended).count();
                if write == LedgerWrite::Checked {
                    assert_eq!(appended, 1, "{id}: exactly one of the racing writers appends");
                }
            }
            let mut conn =
                redis::Client::open(url.as_str()).expect("url").get_multiplexed_async_connection().await.expect("kv");
            let journal = ledger::read_journal(&mut conn, &keys).await.expect("journal");
            assert_eq!(
                journal.len() > ids.len(),
                expect_duplicates,
                "{write:?}: {} entries for {} payments",
                journal.len(),
                ids.len()
            );
            if !expect_duplicates {
                assert_eq!(journal.len(), ids.len());
            }
            ledger::delete(&mut conn, &keys, &ids).await.expect("clean up");
        }
    })
    .await;
}

/// Runs `check` with minikv + miniqueue, then with redis-server + beanstalkd when both
/// are installed.
async fn on_each_backend_pair<F, Fut>(test: &str, check: F)
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let (kv, queue) = (MiniKv::start().await.expect("minikv"), MiniQueue::start().await.expect("miniqueue"));
    check(kv.url(), queue.addr()).await;
    drop((kv, queue));
    let redis = RealRedis::start().await.expect("redis-server starts");
    let beanstalkd = RealBeanstalkd::start().await.expect("beanstalkd starts");
    match (redis, beanstalkd) {
        (Some(redis), Some(beanstalkd)) => check(redis.url(), beanstalkd.addr()).await,
        _ => eprintln!("{test}: redis-server or beanstalkd is not installed; skipped the real-server comparison"),
    }
}

/// The demo's quick configuration (planned kills at every point, random-moment kills,
/// lost replies) with `payments` payments.
fn payment_config(variant: PaymentVariant, payments: usize) -> PaymentConfig {
    PaymentConfig { payments, ..PaymentConfig::for_scale(Scale::Quick, variant, 7) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_charged_and_recorded_exactly_once_under_kills() {
    on_each_backend_pair("payments under kills", |kv, queue| async move {
        let config = payment_config(PaymentVariant::Correct, 100);
        let run = run_payments(&kv, &queue, config).await.expect("the run completes");
        assert!(
            run.finished,
            "{kv}: the queue did not drain in {:?}: {:?} left, hung {:?}, live workers {:?}, errors {:?}",
            run.elapsed, run.left, run.hung_payments, run.live_workers, run.worker_errors
        );
        for point in KillPoint::PLANNED {
            assert!(run.kills.get(&point).copied().unwrap_or(0) >= 1, "no worker died at {point:?}: {:?}", run.kills);
        }
        let audit = &run.audit;
        assert!(audit.is_clean(), "{audit:#?}");
        assert_eq!((audit.charged_once, audit.recorded_once, audit.jobs_left), (100, 100, 0));
        assert_eq!(run.provider.charges, 100, "the provider moved money once per payment");
        assert!(run.stats.provider_replays > 0, "redeliveries after the charge were answered by key");
        assert!(run.stats.already_recorded > 0, "redeliveries after the ledger write appended nothing");
        assert!(run.workers_started > config.workers as u64, "killed workers were replaced");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_catches_the_keyless_worker_double_charging() {
    on_each_backend_pair("keyless worker", |kv, queue| async move {
        let config = payment_config(PaymentVariant::ChargeWithoutKey, 80);
        let run = run_payments(&kv, &queue, config).await.expect("the run completes");
        assert!(
            run.finished,
            "{kv}: the queue did not drain in {:?}: {:?} left, hung {:?}, live workers {:?}, errors {:?}",
            run.elapsed, run.left, run.hung_payments, run.live_workers, run.worker_errors
        );
        // Every payment planned to die after its charge, after its ledger write, or to
        // hang after its charge is charged again by its redelivery.
        let floor = [KillPoint::AfterCharge, KillPoint::AfterLedger, KillPoint::HangAfterCharge]
            .iter()
            .map(|p| run.kills.get(p).copied().unwrap_or(0))
            .sum::<u64>() as usize;
        assert!(floor >= 3, "{:?}", run.kills);
        assert!(
            run.audit.double_charged >= floor,
            "{} double charges, at least {floor} expected",
            run.audit.double_charged
        );
        assert!(!run.audit.is_clean());
        assert_eq!(run.audit.never_charged, 0, "the broken worker loses nothing, it pays twice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_catches_the_unchecked_ledger_write_recording_twice() {
    let kv = MiniKv::start().await.expect("minikv");
    let queue = MiniQueue::start().await.expect("miniqueue");
    let config = payment_config(PaymentVariant::RecordWithoutCheck, 80);
    let run = run_payments(&kv.url(), &queue.addr(), config).await.expect("the run completes");
    assert!(run.finished);
    let after_ledger = run.kills.get(&KillPoint::AfterLedger).copied().unwrap_or(0) as usize;
    assert!(after_ledger >= 1);
    assert!(run.audit.double_recorded >= after_ledger, "{:#?}", run.audit);
    assert_eq!(run.audit.double_charged, 0, "the provider's key still held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_scenarios_pass_at_quick_scale_on_the_mini_systems_and_the_real_ones() {
    for name in ["idempotency-keys", "payment"] {
        let exercise = exercises::find(name).expect("in the catalogue");
        let report =
            framework::run(exercise, DemoOptions { scale: Scale::Quick, ..Default::default() }).await.expect("runs");
        assert!(report.passed(), "{report}");
    }
    let redis = RealRedis::start().await.expect("redis-server starts");
    let beanstalkd = RealBeanstalkd::start().await.expect("beanstalkd starts");
    let (Some(redis), Some(beanstalkd)) = (redis, beanstalkd) else {
        eprintln!("scenarios: redis-server or beanstalkd is not installed; skipped the real-server runs");
        return;
    };
    let keys = exercises::find("idempotency-keys").expect("in the catalogue");
    let options = DemoOptions { kv: Some(redis.url()), scale: Scale::Quick, ..Default::default() };
    let report = framework::run(keys, options).await.expect("runs against redis-server");
    assert!(report.passed(), "{report}");
    let payment = exercises::find("payment").expect("in the catalogue");
    let options = DemoOptions {
        kv: Some(redis.url()),
        queue: Some(format!("beanstalk://{}", beanstalkd.addr())),
        scale: Scale::Quick,
        ..Default::default()
    };
    let report = framework::run(payment, options).await.expect("runs against redis-server and beanstalkd");
    assert!(report.passed(), "{report}");
}
