//! The `idempotency-keys` scenario: clients that time out, retry and send twice, and
//! bursts of concurrent duplicates, against `POST /orders` ([`super::orders`]) with its
//! keys in the KV store; then an audit of what ran against what was asked.
//!
//! ```text
//!  phase 1  retrying clients   each order: send (25 ms timeout, 20% sent twice at once),
//!                              on timeout / 409 / 500 back off and resend the same key,
//!                              until a 201 (first or replayed)
//!  phase 2  duplicates         per key, a dozen senders released by one barrier,
//!                              a few keys at a time
//!  phase 3  misuse             same key + other body (422), bad keys (400), bad body
//!                              (400, key not used up), oversized body (413)
//!  phase 4  expiry             a service with a short response TTL: after it, the
//!                              same key runs the handler again
//!  audit    the service's execution counts and the KV ledger (HINCRBY per commit)
//!           against the distinct keys sent: one commit per key, one distinct 201 per key
//! ```
//!
//! The service crashes some keys' first execution between claim and commit, so the
//! "stuck in-flight record expires" path runs too. Clients here back off for 10–200 ms
//! rather than the `Retry-After: 1` the 409 carries, to keep the run short; a real
//! client honours the header.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::framework::http::{self, HttpClient, HttpError, HttpResponse};
use crate::framework::{Demo, DemoError, LatencyHistogram, Report, Scale};

use super::orders::{OrderService, OrdersConfig, REPLAYED_HEADER};
use super::store::{StoreConfig, Variant};

/// A client gives one order up after this long without a 201; far beyond what a
/// healthy run needs (a crashed key costs one lock TTL).
const ORDER_DEADLINE: Duration = Duration::from_secs(20);

/// Unexpected responses kept for the report, at most.
const MAX_UNEXPECTED_SHOWN: usize = 5;

/// The scenario's sizes, picked by [`Scale`].
#[derive(Clone, Copy, Debug)]
struct Sizes {
    clients: usize,
    orders_per_client: usize,
    duplicate_probability: f64,
    attempt_timeout: Duration,
    concurrent_keys: usize,
    senders_per_key: usize,
    wave_keys: usize,
    reused_keys: usize,
    crash_probability: f64,
    work: (Duration, Duration),
    lock_ttl: Duration,
    short_response_ttl: Duration,
}

impl Sizes {
    fn for_scale(scale: Scale) -> Sizes {
        Sizes {
            clients: scale.pick(64, 8),
            orders_per_client: scale.pick(50, 10),
            duplicate_probability: 0.2,
            attempt_timeout: Duration::from_millis(25),
            concurrent_keys: scale.pick(120, 15),
            senders_per_key: scale.pick(12, 6),
            wave_keys: scale.pick(8, 5),
            reused_keys: scale.pick(50, 10),
            // Quick runs have few keys, so a higher rate still crashes some.
            crash_probability: scale.pick(0.03, 0.1),
            work: (Duration::from_millis(2), Duration::from_millis(40)),
            lock_ttl: Duration::from_millis(400),
            short_response_ttl: Duration::from_millis(300),
        }
    }
}

/// What a 201 looked like, minus what the HTTP layer adds: status, the handler's
/// headers, the body. Two responses for a key with different signatures mean the
/// handler ran twice (or a replay was not identical).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Signature {
    status: u16,
    content_type: Option<String>,
    location: Option<String>,
    body: String,
}

impl Signature {
    fn of(response: &HttpResponse) -> Signature {
        Signature {
            status: response.status,
            content_type: response.header("content-type").map(str::to_string),
            location: response.header("location").map(str::to_string),
            body: response.text(),
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    requests: u64,
    duplicated_sends: u64,
    timeouts: u64,
    transport_errors: u64,
    created: u64,
    replayed: u64,
    conflicts: u64,
    server_errors: u64,
    gave_up: u64,
    unexpected: Vec<String>,
    first: LatencyHistogram,
    replay: LatencyHistogram,
    conflict: LatencyHistogram,
    completion: LatencyHistogram,
    /// Per key, the distinct 201s seen.
    signatures: HashMap<String, HashSet<Signature>>,
    /// Per key, 201s without the replay header (the handler ran for them).
    firsts: HashMap<String, u32>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.duplicated_sends += other.duplicated_sends;
        self.timeouts += other.timeouts;
        self.transport_errors += other.transport_errors;
        self.created += other.created;
        self.replayed += other.replayed;
        self.conflicts += other.conflicts;
        self.server_errors += other.server_errors;
        self.gave_up += other.gave_up;
        for line in other.unexpected {
            if self.unexpected.len() < MAX_UNEXPECTED_SHOWN {
                self.unexpected.push(line);
            }
        }
        self.first.merge(&other.first);
        self.replay.merge(&other.replay);
        self.conflict.merge(&other.conflict);
        self.completion.merge(&other.completion);
        for (key, set) in other.signatures {
            self.signatures.entry(key).or_default().extend(set);
        }
        for (key, n) in other.firsts {
            *self.firsts.entry(key).or_default() += n;
        }
    }

    /// Files one response; `true` when it was a 201.
    fn classify(&mut self, key: &str, result: Result<HttpResponse, HttpError>, latency: Duration) -> bool {
        self.requests += 1;
        let response = match result {
            Ok(response) => response,
            Err(HttpError::Timeout(_)) => {
                self.timeouts += 1;
                return false;
            }
            Err(_) => {
                self.transport_errors += 1;
                return false;
            }
        };
        match response.status {
            201 => {
                if response.header(REPLAYED_HEADER) == Some("true") {
                    self.replayed += 1;
                    self.replay.record(latency);
                } else {
                    self.created += 1;
                    self.first.record(latency);
                    *self.firsts.entry(key.to_string()).or_default() += 1;
                }
                self.signatures.entry(key.to_string()).or_default().insert(Signature::of(&response));
                true
            }
            409 => {
                self.conflicts += 1;
                self.conflict.record(latency);
                false
            }
            500 | 503 => {
                self.server_errors += 1;
                false
            }
            status => {
                if self.unexpected.len() < MAX_UNEXPECTED_SHOWN {
                    self.unexpected.push(format!("{key}: {status} {}", response.text()));
                }
                false
            }
        }
    }
}

/// Capped exponential backoff with jitter in [50%, 100%]: 10 ms doubling to 200 ms.
fn backoff(attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let ceiling = (10u64 << attempt.min(5)).min(200);
    Duration::from_millis(rng.u64(ceiling / 2..=ceiling))
}

fn order_body(customer: &str, n: usize) -> String {
    format!(r#"{{"customer":"{customer}","item":"item-{}","quantity":{}}}"#, n % 7, n % 5 + 1)
}

/// One order from one client: resends the same key until a 201 or the deadline.
async fn place_order(
    http: &HttpClient,
    url: &str,
    key: &str,
    body: &str,
    duplicate_probability: f64,
    rng: &mut fastrand::Rng,
    tally: &mut Tally,
) {
    let started = Instant::now();
    let headers = [("idempotency-key", key), ("content-type", "application/json")];
    let mut attempt = 0u32;
    while started.elapsed() < ORDER_DEADLINE {
        let timed = || async {
            let sent = Instant::now();
            let result = http.post(url, &headers, body.to_string()).await;
            (result, sent.elapsed())
        };
        let answered = if rng.f64() < duplicate_probability {
            // The network (or an impatient client) sends the request twice at once.
            tally.duplicated_sends += 1;
            let ((a, a_latency), (b, b_latency)) = tokio::join!(timed(), timed());
            let a = tally.classify(key, a, a_latency);
            let b = tally.classify(key, b, b_latency);
            a || b
        } else {
            let (result, latency) = timed().await;
            tally.classify(key, result, latency)
        };
        if answered {
            tally.completion.record(started.elapsed());
            return;
        }
        tokio::time::sleep(backoff(attempt, rng)).await;
        attempt += 1;
    }
    tally.gave_up += 1;
}

/// Phase 1: `clients` tasks, each placing its orders one after another.
async fn retrying_clients(demo: &Demo, url: &str, run: &str, sizes: Sizes) -> Result<(Tally, Vec<String>), DemoError> {
    let http = HttpClient::new().with_timeout(sizes.attempt_timeout);
    let mut tasks = Vec::new();
    let mut keys = Vec::new();
    for client in 0..sizes.clients {
        let orders: Vec<(String, String)> = (0..sizes.orders_per_client)
            .map(|n| (format!("{run}-c{client}-o{n}"), order_body(&format!("client-{client}"), n)))
            .collect();
        keys.extend(orders.iter().map(|(key, _)| key.clone()));
        let (http, url) = (http.clone(), url.to_string());
        let mut rng = demo.rng(1_000 + client as u64);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for (key, body) in &orders {
                place_order(&http, &url, key, body, sizes.duplicate_probability, &mut rng, &mut tally).await;
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await?);
    }
    Ok((tally, keys))
}

/// Phase 2: per key, `senders_per_key` requests released at once by a barrier; each
/// sender then retries its 409s until it gets the 201. Keys go in waves of
/// `wave_keys`, so the latencies measure the pattern rather than a thousand
/// simultaneous TCP handshakes.
async fn concurrent_duplicates(
    demo: &Demo,
    url: &str,
    run: &str,
    sizes: Sizes,
) -> Result<(Tally, Vec<String>), DemoError> {
    let http = HttpClient::new().with_timeout(Duration::from_secs(5));
    let keys: Vec<String> = (0..sizes.concurrent_keys).map(|k| format!("{run}-dup{k}")).collect();
    let mut tally = Tally::default();
    for (wave, wave_keys) in keys.chunks(sizes.wave_keys).enumerate() {
        let mut tasks = Vec::new();
        for (i, key) in wave_keys.iter().enumerate() {
            let k = wave * sizes.wave_keys + i;
            let body = order_body("burst", k);
            let barrier = Arc::new(tokio::sync::Barrier::new(sizes.senders_per_key));
            for s in 0..sizes.senders_per_key {
                let (http, url, key, body, barrier) =
                    (http.clone(), url.to_string(), key.clone(), body.clone(), Arc::clone(&barrier));
                let mut rng = demo.rng(100_000 + (k * sizes.senders_per_key + s) as u64);
                tasks.push(tokio::spawn(async move {
                    let mut tally = Tally::default();
                    barrier.wait().await;
                    place_order(&http, &url, &key, &body, 0.0, &mut rng, &mut tally).await;
                    tally
                }));
            }
        }
        for task in tasks {
            tally.merge(task.await?);
        }
    }
    Ok((tally, keys))
}

/// Phase 3's findings.
#[derive(Default)]
struct Misuse {
    reused: usize,
    reused_422: usize,
    bad_keys: Vec<(&'static str, u16)>,
    bad_body_status: u16,
    fixed_body_status: u16,
    fixed_key: String,
    oversized_status: u16,
}

async fn misuse(url: &str, run: &str, reuse: &[String]) -> Result<Misuse, DemoError> {
    let http = HttpClient::new();
    let json = ("content-type", "application/json");
    let mut found = Misuse { reused: reuse.len(), ..Misuse::default() };
    for key in reuse {
        // Same key, another order: the client reused a key it should not have.
        let other = r#"{"customer":"someone-else","item":"piano","quantity":1}"#;
        let response = http.post(url, &[("idempotency-key", key), json], other).await?;
        found.reused_422 += usize::from(response.status == 422);
    }
    let body = order_body("misuse", 1);
    let long_key = "k".repeat(super::keys::MAX_KEY_BYTES + 1);
    let cases: [(&'static str, Vec<(&str, &str)>); 4] = [
        ("missing key", vec![json]),
        ("256-byte key", vec![("idempotency-key", long_key.as_str()), json]),
        ("key with a space", vec![("idempotency-key", "has space"), json]),
        ("two keys", vec![("idempotency-key", "a"), ("idempotency-key", "b"), json]),
    ];
    for (what, headers) in cases {
        let response = http.post(url, &headers, body.clone()).await?;
        found.bad_keys.push((what, response.status));
    }
    found.fixed_key = format!("{run}-fixed");
    let headers = [("idempotency-key", found.fixed_key.as_str()), json];
    found.bad_body_status = http.post(url, &headers, r#"{"customer":"c","item":"i","quantity":0}"#).await?.status;
    found.fixed_body_status = http.post(url, &headers, body.clone()).await?.status;
    let oversized = "x".repeat(super::orders::MAX_REQUEST_BODY_BYTES + 1);
    found.oversized_status =
        http.post(url, &[("idempotency-key", &format!("{run}-big")), json], oversized).await?.status;
    Ok(found)
}

/// Phase 4's findings.
struct Expiry {
    first: HttpResponse,
    replay: HttpResponse,
    after: HttpResponse,
    started: u32,
    committed: u32,
}

async fn expiry(kv_url: &str, namespace: &str, sizes: Sizes, seed: u64) -> Result<Expiry, DemoError> {
    let config = OrdersConfig {
        store: StoreConfig { lock_ttl: sizes.lock_ttl, response_ttl: sizes.short_response_ttl },
        seed,
        ..OrdersConfig::default()
    };
    let service = OrderService::connect(kv_url, namespace, config).await.map_err(kv_error)?;
    let server = http::serve(service.router()).await?;
    let http = HttpClient::new();
    let url = server.url(super::orders::PATH);
    let headers = [("idempotency-key", "expiring"), ("content-type", "application/json")];
    let body = order_body("expiry", 3);
    let first = http.post(&url, &headers, body.clone()).await?;
    let replay = http.post(&url, &headers, body.clone()).await?;
    tokio::time::sleep(sizes.short_response_ttl + Duration::from_millis(200)).await;
    let after = http.post(&url, &headers, body).await?;
    server.stop().await;
    let executions = service.executions().get("expiring").copied().unwrap_or_default();
    service.clear_ledger().await.map_err(kv_error)?;
    Ok(Expiry { first, replay, after, started: executions.started, committed: executions.committed })
}

fn kv_error(e: super::store::StoreError) -> DemoError {
    DemoError::Scenario(format!("the order service's KV store: {e}"))
}

/// Runs the scenario; see the module docs.
pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let kv_url = demo.kv_url()?.to_string();
    let sizes = Sizes::for_scale(demo.scale);
    let run = format!("idem-{}-{:08x}", demo.seed, fastrand::u32(..));
    let mut report = demo.report("idempotency-keys", "POST /orders runs once per Idempotency-Key under retries");

    let config = OrdersConfig {
        store: StoreConfig { lock_ttl: sizes.lock_ttl, response_ttl: Duration::from_secs(600) },
        variant: Variant::Correct,
        work: sizes.work,
        crash_probability: sizes.crash_probability,
        seed: demo.seed,
    };
    let service = OrderService::connect(&kv_url, &run, config).await.map_err(kv_error)?;
    let server = http::serve(service.router()).await?;
    let url = server.url(super::orders::PATH);
    report.line("namespace", &run);
    report.line("lock ttl / response ttl", format!("{:?} / {:?}", config.store.lock_ttl, config.store.response_ttl));
    report.line("handler work", format!("{:?}..{:?}", sizes.work.0, sizes.work.1));
    report.line("first-execution crash rate", format!("{:.0}%", sizes.crash_probability * 100.0));

    let started = Instant::now();
    let (mut retrying, retry_keys) = retrying_clients(&demo, &url, &run, sizes).await?;
    let retry_elapsed = started.elapsed();
    let started = Instant::now();
    let (mut bursts, burst_keys) = concurrent_duplicates(&demo, &url, &run, sizes).await?;
    let burst_elapsed = started.elapsed();
    let found = misuse(&url, &run, &retry_keys[..sizes.reused_keys.min(retry_keys.len())]).await?;
    server.stop().await;
    let expired = expiry(&kv_url, &format!("{run}-ttl"), sizes, demo.seed).await?;

    let stats = service.stats();
    let executions = service.executions();
    let ledger = service.committed().await.map_err(kv_error)?;
    service.clear_ledger().await.map_err(kv_error)?;

    // Every key that should have committed once: phases 1 and 2, and the key whose
    // first body was refused.
    let mut expected: Vec<&str> = retry_keys.iter().chain(&burst_keys).map(String::as_str).collect();
    expected.push(&found.fixed_key);
    let distinct: HashSet<&str> = expected.iter().copied().collect();
    assert_eq!(distinct.len(), expected.len(), "the scenario generated a key twice");
    let committed_once = distinct.iter().filter(|k| executions.get(**k).is_some_and(|e| e.committed == 1)).count();
    let ledger_once = distinct.iter().filter(|k| ledger.commits.get(**k) == Some(&1)).count();
    let ledger_extra = ledger.commits.keys().filter(|k| !distinct.contains(k.as_str())).count();
    let crashed_keys: Vec<&str> = executions.iter().filter(|(_, e)| e.crashed > 0).map(|(k, _)| k.as_str()).collect();
    let crashed_recovered = crashed_keys.iter().filter(|k| ledger.commits.get(**k) == Some(&1)).count();

    report.section("phase 1: retrying clients (timeouts, duplicated sends)");
    report.line("clients x orders", format!("{} x {}", sizes.clients, sizes.orders_per_client));
    report.line("attempt timeout", format!("{:?}", sizes.attempt_timeout));
    report.line("requests sent", retrying.requests);
    report.line("duplicated sends", retrying.duplicated_sends);
    report.line("client timeouts", retrying.timeouts);
    report.line("201 first / replayed", format!("{} / {}", retrying.created, retrying.replayed));
    report.line("409 in flight", retrying.conflicts);
    report.line("500 (injected crash)", retrying.server_errors);
    report.line("elapsed", format!("{retry_elapsed:.1?}"));
    report.histogram("latency: first (ran)", &mut retrying.first);
    report.histogram("latency: replayed", &mut retrying.replay);
    report.histogram("latency: 409", &mut retrying.conflict);
    report.histogram("order done (incl. retries)", &mut retrying.completion);

    report.section("phase 2: concurrent duplicates");
    report.line(
        "keys x senders",
        format!("{} x {}, {} keys at a time", sizes.concurrent_keys, sizes.senders_per_key, sizes.wave_keys),
    );
    report.line("201 first / replayed", format!("{} / {}", bursts.created, bursts.replayed));
    report.line("409 in flight", bursts.conflicts);
    report.line("elapsed", format!("{burst_elapsed:.1?}"));
    report.histogram("latency: first (ran)", &mut bursts.first);
    report.histogram("latency: replayed", &mut bursts.replay);

    report.section("phase 3: misuse");
    let mut rows =
        vec![vec!["same key, other body".to_string(), format!("{}/{} got 422", found.reused_422, found.reused)]];
    for (what, status) in &found.bad_keys {
        rows.push(vec![what.to_string(), status.to_string()]);
    }
    rows.push(vec![
        "invalid body, then fixed".into(),
        format!("{} then {}", found.bad_body_status, found.fixed_body_status),
    ]);
    rows.push(vec!["oversized body".into(), found.oversized_status.to_string()]);
    report.table(&["request", "answer"], rows);

    report.section("phase 4: response TTL");
    report.line("response ttl", format!("{:?}", sizes.short_response_ttl));
    report.line(
        "first / replay / after ttl",
        format!(
            "{} / {}{} / {}{}",
            expired.first.status,
            expired.replay.status,
            if expired.replay.header(REPLAYED_HEADER).is_some() { " (replayed)" } else { "" },
            expired.after.status,
            if expired.after.header(REPLAYED_HEADER).is_some() { " (replayed)" } else { " (ran again)" },
        ),
    );

    let mut all = Tally::default();
    all.merge(retrying);
    all.merge(bursts);
    let not_identical = all.signatures.values().filter(|set| set.len() > 1).count();
    let burst_not_once = burst_keys.iter().filter(|k| all.firsts.get(k.as_str()) != Some(&1)).count();

    report.section("audit");
    report.line("distinct keys", distinct.len());
    report.line("handler executions", stats.executions_committed);
    report.line("executions started", stats.executions_started);
    report.line("crashed (rolled back)", stats.crashes);
    report.line("lost claims", stats.lost_claims);
    report.line("replays served", stats.replays);
    report.line(
        "409 / 422 / 400 / 413",
        format!(
            "{} / {} / {} / {}",
            stats.in_flight_409, stats.mismatch_422, stats.bad_request_400, stats.too_large_413
        ),
    );
    report.line("ledger commits", ledger.commits.values().sum::<u64>());
    report.line("orders stored", ledger.orders);
    for line in &all.unexpected {
        report.text(format!("unexpected answer: {line}"));
    }

    report.check(
        stats.executions_committed == distinct.len() as u64,
        format!("handler executions {} == distinct keys {}", stats.executions_committed, distinct.len()),
    );
    report.check(
        committed_once == distinct.len(),
        format!("{committed_once}/{} keys ran the handler to a commit exactly once", distinct.len()),
    );
    report.check(
        ledger_once == distinct.len() && ledger_extra == 0 && ledger.orders == distinct.len() as u64,
        format!(
            "KV ledger: {ledger_once}/{} keys committed once, {ledger_extra} unknown keys, {} orders stored",
            distinct.len(),
            ledger.orders
        ),
    );
    report.check(
        all.gave_up == 0 && all.signatures.len() == retry_keys.len() + burst_keys.len(),
        format!("every order got its 201 ({} gave up)", all.gave_up),
    );
    report.check(
        not_identical == 0,
        format!("replays identical: {not_identical} keys saw two different 201s (status, headers, body)"),
    );
    report.check(
        burst_not_once == 0 && stats.in_flight_409 > 0,
        format!(
            "concurrent duplicates: {burst_not_once} of {} keys did not run exactly once; {} answered 409 meanwhile",
            burst_keys.len(),
            stats.in_flight_409
        ),
    );
    report.check(
        stats.crashes > 0 && crashed_recovered == crashed_keys.len(),
        format!(
            "{} crashed first executions: {crashed_recovered}/{} keys committed once after their claim expired",
            stats.crashes,
            crashed_keys.len()
        ),
    );
    report.check(
        found.reused_422 == found.reused,
        format!("a reused key with another body gets 422: {}/{}", found.reused_422, found.reused),
    );
    report.check(
        found.bad_keys.iter().all(|(_, status)| *status == 400) && found.oversized_status == 413,
        format!(
            "bad keys get 400 ({}); an oversized body gets 413 ({})",
            found.bad_keys.iter().map(|(_, s)| s.to_string()).collect::<Vec<_>>().join(" "),
            found.oversized_status
        ),
    );
    report.check(
        found.bad_body_status == 400 && found.fixed_body_status == 201,
        format!("an invalid body does not use the key up: {} then {}", found.bad_body_status, found.fixed_body_status),
    );
    let ran_again = expired.first.status == 201
        && expired.replay.header(REPLAYED_HEADER) == Some("true")
        && expired.replay.body == expired.first.body
        && expired.after.status == 201
        && expired.after.header(REPLAYED_HEADER).is_none()
        && expired.after.body != expired.first.body
        && (expired.started, expired.committed) == (2, 2);
    report.check(
        ran_again,
        format!("after the response TTL the key runs the handler again ({} executions committed)", expired.committed),
    );
    report.verdict(if report.passed() {
        "every key's handler committed exactly once, replays were identical, and misuse got 4xx"
    } else {
        "the pattern did not hold: see the failed checks"
    });
    Ok(report)
}
