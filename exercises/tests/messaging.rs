//! The messaging theme's invariants, over TCP, against miniqueue always and against a
//! real beanstalkd 1.12 when it is installed (each test runs the same body on both, at
//! the same time, and says when it skipped the real one).
//!
//! - backoff delays stay inside their full-jitter windows, and a message that keeps
//!   failing reaches the DLQ after exactly `max_attempts` attempts;
//! - poison (a malformed payload, a permanent provider error) is dead-lettered at its
//!   first attempt, and the broken `NoPoisonDetection` variant is caught by that check;
//! - the broken `NoAttemptLimit` variant is caught by the max-attempts check;
//! - the attempt number survives worker crashes (`reserves`, not `releases + timeouts`),
//!   so a crash loop ends in the DLQ;
//! - replay (over HTTP) returns dead letters to ready as fresh jobs, which then succeed;
//!   purge empties the DLQ; the endpoint's errors say what to do;
//! - a hung worker's job comes back after its TTR, a crashed worker's at once, and each
//!   is delivered twice (at-least-once);
//! - an envelope too big for the server falls back to burying the original;
//! - the `retry-dlq` scenario passes at `Scale::Quick`.
//!
//! Delays are whole seconds, so the policies here are small (bases of 0 or 1 s, two to
//! four attempts). Timing assertions have wide tolerances: the machine is loaded.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exercises::framework::backends::{MiniQueue, RealBeanstalkd};
use exercises::framework::http::serve;
use exercises::framework::{self, DemoOptions, Scale};
use exercises::messaging::dlq::{dlq_tube, DeadLetterQueue, Listing};
use exercises::messaging::letter::Body;
use exercises::messaging::provider::{Provider, ProviderConfig};
use exercises::messaging::replay_endpoint::{router, DlqApi};
use exercises::messaging::retry::{DeadReason, RetryPolicy, Variant};
use exercises::messaging::retry_dlq::{message, Kind, Planned, DOWN_DOMAIN};
use exercises::messaging::worker::{
    publish, spawn_pool, tube_counts, Attempt, Fault, Faults, Outcome, Timeline, WorkerConfig, WorkerError,
    WorkerSummary, HANG_MARGIN,
};
use minibench::queue::client::{self, Client};
use tokio::sync::watch;

/// The servers a test runs against. The real one is started here, on the test's own
/// thread (see backends.rs about PDEATHSIG), and killed when this is dropped.
struct Backends {
    _mini: MiniQueue,
    _real: Option<RealBeanstalkd>,
    /// (name, host:port)
    addrs: Vec<(&'static str, String)>,
}

async fn backends(test: &str) -> Backends {
    let mini = MiniQueue::start().await.expect("miniqueue starts");
    let mut addrs = vec![("miniqueue", mini.addr())];
    let real = RealBeanstalkd::start().await.expect("beanstalkd starts when installed");
    match &real {
        Some(real) => addrs.push(("beanstalkd", real.addr())),
        None => eprintln!("{test}: skipped the real-server comparison: beanstalkd is not installed"),
    }
    Backends { _mini: mini, _real: real, addrs }
}

/// Runs `body(server name, addr)` against every backend at once; a panic in any fails
/// the test with that backend's name in front.
async fn on_every_backend<F, Fut>(test: &str, body: F)
where
    F: Fn(&'static str, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let backends = backends(test).await;
    let runs: Vec<_> =
        backends.addrs.iter().map(|(name, addr)| (*name, tokio::spawn(body(name, addr.clone())))).collect();
    for (name, run) in runs {
        if let Err(e) = run.await {
            panic!("{test} against {name}: {e}");
        }
    }
    drop(backends);
}

fn unique_tube(what: &str) -> String {
    format!("test-{what}-{:08x}", fastrand::u32(..))
}

fn provider(rate: f64) -> Arc<Provider> {
    Arc::new(Provider::new(ProviderConfig {
        seed: 5,
        transient_rate: rate,
        latency: (Duration::from_millis(1), Duration::from_millis(3)),
        rejected_domains: vec!["bounce.example".into()],
        down_domains: vec![DOWN_DOMAIN.into()],
    }))
}

fn policy(max: u32, base: u32, cap: u32) -> RetryPolicy {
    RetryPolicy::new(max, base, cap).expect("a valid policy")
}

/// Workers on one tube, and what they saw.
struct Workers {
    addr: String,
    tube: String,
    provider: Arc<Provider>,
    timeline: Arc<Timeline>,
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<Result<WorkerSummary, WorkerError>>>,
    /// The messages published, and their job ids.
    messages: Vec<Planned>,
    job_ids: Vec<u64>,
}

impl Workers {
    /// `count` workers with a provider that never fails, no injected faults and a fresh
    /// timeline: what most tests need.
    async fn start_plain(addr: &str, tube: &str, policy: RetryPolicy, variant: Variant, count: usize) -> Workers {
        Workers::start(
            addr,
            tube,
            policy,
            variant,
            provider(0.0),
            Faults::default(),
            count,
            Arc::new(Timeline::new(Instant::now())),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        addr: &str,
        tube: &str,
        policy: RetryPolicy,
        variant: Variant,
        provider: Arc<Provider>,
        faults: Faults,
        count: usize,
        timeline: Arc<Timeline>,
    ) -> Workers {
        let config =
            WorkerConfig { addr: addr.to_string(), tube: tube.to_string(), dlq_tube: dlq_tube(tube), policy, variant };
        let pool = spawn_pool(count, config, &provider, faults, &timeline, |w| fastrand::Rng::with_seed(w as u64 + 1));
        Workers {
            addr: addr.to_string(),
            tube: tube.to_string(),
            provider,
            timeline,
            stop: pool.stop,
            handles: pool.handles,
            messages: Vec::new(),
            job_ids: Vec::new(),
        }
    }

    async fn publish(&mut self, messages: &[Planned], ttr: u32) {
        let bodies: Vec<Vec<u8>> = messages.iter().map(|m| m.body.clone()).collect();
        let ids = publish(&self.addr, &self.tube, &bodies, 1024, ttr).await.expect("publish");
        self.messages.extend(messages.iter().cloned());
        self.job_ids.extend(ids);
    }

    async fn settle(&self, count: usize, within: Duration) -> bool {
        self.timeline.wait_settled(count, Instant::now() + within).await
    }

    async fn stop(mut self) -> Arc<Timeline> {
        let _ = self.stop.send(true);
        for handle in self.handles.drain(..) {
            handle.await.expect("the worker task ends").expect("the worker ran without a queue error");
        }
        self.timeline
    }

    /// The attempts at the job of `messages[index]` (its first job, not replays), in
    /// time order.
    fn attempts_of(&self, index: usize) -> Vec<Attempt> {
        let job = self.job_ids[index];
        let mut attempts: Vec<Attempt> = self.timeline.attempts().into_iter().filter(|a| a.job_id == job).collect();
        attempts.sort_by_key(|a| a.reserved_at);
        attempts
    }

    fn dlq(&self) -> DeadLetterQueue {
        DeadLetterQueue::new(&self.addr, &self.tube).expect("a valid tube")
    }
}

fn messages(kinds: &[Kind], first_id: u64) -> Vec<Planned> {
    kinds.iter().enumerate().map(|(i, &kind)| message(kind, first_id + i as u64)).collect()
}

/// The poison check, as a function the broken variant can fail: every poison message
/// is in the DLQ after exactly one attempt, and the provider saw a rejected message
/// once and a malformed one never.
fn poison_dead_lettered_at_first_attempt(workers: &Workers, listing: &Listing) -> Result<(), String> {
    for (index, m) in workers.messages.iter().enumerate() {
        let attempts = workers.attempts_of(index);
        let calls = workers.provider.ledger(m.id).calls;
        let expected_calls = if m.kind == Kind::Rejected { 1 } else { 0 };
        let letter = listing
            .entries
            .iter()
            .filter_map(|e| e.letter.as_ref())
            .find(|l| l.source_job_id == workers.job_ids[index])
            .ok_or(format!("message {} ({}) is not in the DLQ", m.id, m.kind.word()))?;
        if attempts.len() != 1 || letter.attempts != 1 || calls != expected_calls || !letter.reason.is_poison() {
            return Err(format!(
                "message {} ({}): {} attempts, envelope says {} ({:?}), {calls} provider calls (want 1 attempt, {expected_calls} calls)",
                m.id,
                m.kind.word(),
                attempts.len(),
                letter.attempts,
                letter.reason
            ));
        }
    }
    Ok(())
}

/// The max-attempts check: every message is in the DLQ as exhausted, after exactly
/// `max` attempts and `max` provider calls.
fn dead_lettered_after_exactly(workers: &Workers, listing: &Listing, max: u32) -> Result<(), String> {
    for (index, m) in workers.messages.iter().enumerate() {
        let tries: Vec<u32> = workers.attempts_of(index).iter().map(|a| a.attempt).collect();
        let calls = workers.provider.ledger(m.id).calls;
        let letter = listing
            .entries
            .iter()
            .filter_map(|e| e.letter.as_ref())
            .find(|l| l.source_job_id == workers.job_ids[index]);
        let Some(letter) = letter else {
            return Err(format!("message {} is not in the DLQ after {} attempts", m.id, tries.len()));
        };
        let want: Vec<u32> = (1..=max).collect();
        if tries != want || letter.attempts != max || calls != max || letter.reason != DeadReason::AttemptsExhausted {
            return Err(format!(
                "message {}: attempts {tries:?}, envelope {} ({:?}), {calls} calls; want attempts {want:?}",
                m.id, letter.attempts, letter.reason
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_delays_stay_in_their_windows_and_the_dlq_comes_after_exactly_max_attempts() {
    on_every_backend("backoff", |server, addr| async move {
        // Ceilings 1 s, then capped at 1 s twice: at most 3 s of waiting.
        let policy = policy(4, 1, 1);
        let tube = unique_tube("backoff");
        let mut workers = Workers::start_plain(&addr, &tube, policy, Variant::Correct, 2).await;
        workers.publish(&messages(&[Kind::Down, Kind::Down, Kind::Down], 10), 5).await;
        assert!(workers.settle(3, Duration::from_secs(20)).await, "{server}: three exhausted messages settle");

        let listing = workers.dlq().list().await.expect("list");
        dead_lettered_after_exactly(&workers, &listing, 4).unwrap_or_else(|e| panic!("{server}: {e}"));
        let mut retries = 0;
        for index in 0..3 {
            let attempts = workers.attempts_of(index);
            for (retry, pair) in attempts.windows(2).enumerate() {
                let Outcome::Retrying { delay_secs, ceiling_secs, .. } = pair[0].outcome else {
                    panic!("{server}: attempt {} should be a retry: {:?}", pair[0].attempt, pair[0].outcome);
                };
                retries += 1;
                assert_eq!(ceiling_secs, policy.backoff.ceiling(retry as u32), "{server}: retry {retry}'s window");
                assert!(
                    delay_secs <= ceiling_secs && ceiling_secs <= 1,
                    "{server}: {delay_secs} s of [0, {ceiling_secs}]"
                );
                let delay = Duration::from_secs(u64::from(delay_secs));
                let gap = pair[1].reserved_at.saturating_sub(pair[0].finished_at);
                assert!(
                    gap + Duration::from_millis(500) >= delay && gap <= delay + Duration::from_millis(1_500),
                    "{server}: a {delay_secs} s release came back after {gap:?}"
                );
            }
        }
        assert_eq!(retries, 9, "{server}: three retries for each of three messages");
        assert_eq!(
            tube_counts(&mut Client::connect(&addr).await.expect("connect"), &tube).await.expect("stats").total(),
            0
        );
        workers.dlq().purge().await.expect("purge");
        workers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_at_its_first_attempt_and_the_broken_variant_is_caught() {
    on_every_backend("poison", |server, addr| async move {
        // Delays of 0 s, so the broken variant burns its attempts at once.
        let policy = policy(3, 0, 0);
        let poison = messages(&[Kind::Malformed, Kind::Rejected, Kind::Malformed, Kind::Rejected], 30);
        let mut runs = Vec::new();
        for variant in [Variant::Correct, Variant::NoPoisonDetection] {
            let tube = unique_tube("poison");
            let mut workers = Workers::start_plain(&addr, &tube, policy, variant, 1).await;
            workers.publish(&poison, 5).await;
            assert!(workers.settle(poison.len(), Duration::from_secs(10)).await, "{server} {variant:?}: settles");
            let listing = workers.dlq().list().await.expect("list");
            runs.push((variant, workers, listing));
        }
        let (_, correct, listing) = &runs[0];
        poison_dead_lettered_at_first_attempt(correct, listing).unwrap_or_else(|e| panic!("{server}: {e}"));
        // Message 30 is id % 3 == 0: the non-UTF-8 payload, kept as hex, byte for byte.
        let binary =
            listing.entries.iter().filter_map(|e| e.letter.as_ref()).find(|l| l.source_job_id == correct.job_ids[0]);
        let binary = binary.expect("the binary payload's letter");
        assert!(matches!(binary.body, Body::Hex(_)), "{server}: a non-UTF-8 body is kept as hex");
        assert_eq!(binary.body.bytes().as_ref(), Some(&poison[0].body), "{server}: byte for byte");
        assert!(binary.last_error.contains("not a notification"), "{server}: {}", binary.last_error);

        let (_, broken, broken_listing) = &runs[1];
        let caught = poison_dead_lettered_at_first_attempt(broken, broken_listing);
        assert!(caught.is_err(), "{server}: the check must catch the NoPoisonDetection variant");
        println!("{server}: the poison check catches NoPoisonDetection: {}", caught.unwrap_err());
        assert_eq!(broken.provider.ledger(31).calls, 3, "{server}: the broken variant calls the provider 3 times");
        for (_, workers, _) in runs {
            workers.dlq().purge().await.expect("purge");
            workers.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_without_an_attempt_limit_is_caught_by_the_max_attempts_check() {
    on_every_backend("no-limit", |server, addr| async move {
        let policy = policy(2, 0, 0);
        let mut runs = Vec::new();
        for variant in [Variant::Correct, Variant::NoAttemptLimit] {
            let tube = unique_tube("limit");
            let mut workers = Workers::start_plain(&addr, &tube, policy, variant, 1).await;
            workers.publish(&messages(&[Kind::Down], 40), 5).await;
            // The correct run settles at once; the broken one never does.
            workers.settle(1, Duration::from_millis(1_500)).await;
            let listing = workers.dlq().list().await.expect("list");
            runs.push((workers, listing));
        }
        dead_lettered_after_exactly(&runs[0].0, &runs[0].1, 2).unwrap_or_else(|e| panic!("{server}: {e}"));
        let caught = dead_lettered_after_exactly(&runs[1].0, &runs[1].1, 2);
        assert!(caught.is_err(), "{server}: the check must catch NoAttemptLimit");
        let attempts = runs[1].0.attempts_of(0).len();
        assert!(attempts > 2, "{server}: the broken variant kept retrying: {attempts} attempts");
        println!("{server}: the max-attempts check catches NoAttemptLimit: {}", caught.unwrap_err());
        for (workers, _) in runs {
            let (addr, job) = (workers.addr.clone(), workers.job_ids[0]);
            workers.dlq().purge().await.expect("purge");
            workers.stop().await;
            // The broken run's job is still cycling; delete it by id.
            match Client::connect(&addr).await.expect("connect").delete(job).await {
                Ok(()) | Err(client::Error::NotFound) => {}
                Err(e) => panic!("{server}: delete: {e}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_number_survives_worker_crashes_so_a_crash_loop_ends_in_the_dlq() {
    on_every_backend("crash-loop", |server, addr| async move {
        let tube = unique_tube("crash-loop");
        let m = message(Kind::Flaky, 50);
        let ids = publish(&addr, &tube, std::slice::from_ref(&m.body), 1024, 5).await.expect("publish");
        // Three workers "crash" while holding the job: each reserves it and drops its
        // connection, and the server puts it back without touching releases or timeouts.
        for _ in 0..3 {
            let mut c = Client::connect(&addr).await.expect("connect");
            c.watch(&tube).await.expect("watch");
            c.ignore("default").await.expect("ignore");
            assert_eq!(c.reserve_with_timeout(5).await.expect("reserve").id, ids[0]);
            drop(c);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stats = Client::connect(&addr).await.expect("connect").stats_job(ids[0]).await.expect("stats-job");
        let counter = |k: &str| stats.get_u64(k).unwrap_or(u64::MAX);
        assert_eq!(
            (counter("reserves"), counter("releases"), counter("timeouts")),
            (3, 0, 0),
            "{server}: crashes show only in reserves; releases + timeouts would call the next attempt number 1"
        );
        let mut workers = Workers::start_plain(&addr, &tube, policy(3, 0, 0), Variant::Correct, 1).await;
        workers.messages.push(m.clone());
        workers.job_ids.push(ids[0]);
        assert!(workers.settle(1, Duration::from_secs(10)).await, "{server}: settles");
        let attempts = workers.attempts_of(0);
        assert_eq!(attempts.len(), 1, "{server}: {attempts:?}");
        assert_eq!(attempts[0].attempt, 4, "{server}: the fourth reservation");
        assert!(
            matches!(attempts[0].outcome, Outcome::DeadLettered { reason: DeadReason::AttemptsExhausted, .. }),
            "{server}: dead-lettered untried: {:?}",
            attempts[0].outcome
        );
        assert_eq!(workers.provider.ledger(50).calls, 0, "{server}: the provider was not called");
        workers.dlq().purge().await.expect("purge");
        workers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_returns_dead_letters_to_ready_as_fresh_jobs_and_purge_empties_the_dlq() {
    on_every_backend("replay", |server, addr| async move {
        let tube = unique_tube("replay");
        // One attempt each: the down messages go to the DLQ at their first failure.
        let policy = policy(1, 0, 0);
        let batch = messages(&[Kind::Down, Kind::Rejected, Kind::Down, Kind::Malformed], 60);
        let timeline = Arc::new(Timeline::new(Instant::now()));
        let shared_provider = provider(0.0);
        let mut workers = Workers::start(
            &addr,
            &tube,
            policy,
            Variant::Correct,
            shared_provider.clone(),
            Faults::default(),
            2,
            timeline.clone(),
        )
        .await;
        workers.publish(&batch, 5).await;
        assert!(workers.settle(4, Duration::from_secs(10)).await, "{server}: settles");
        let job_ids = workers.job_ids.clone();
        workers.stop().await;

        let dlq = Arc::new(DeadLetterQueue::new(&addr, &tube).expect("a valid tube"));
        let server_http = serve(router(dlq.clone())).await.expect("serve");
        let api = DlqApi::new(server_http.url(""));
        let listing = api.list().await.expect("GET /dlq");
        assert_eq!(listing.entries.len(), 4, "{server}: {listing:?}");
        let letter_of = |source: u64| {
            listing.entries.iter().find(|e| e.letter.as_ref().is_some_and(|l| l.source_job_id == source)).cloned()
        };
        let first_down = letter_of(job_ids[0]).expect("the first down message is in the DLQ");

        // Replay one, with no worker running: it must be a fresh, ready job in the main tube.
        shared_provider.heal(DOWN_DOMAIN);
        let replayed = api.replay(first_down.dlq_job_id).await.expect("POST /dlq/{id}/replay");
        assert_eq!(replayed.source_job_id, job_ids[0]);
        assert!(!job_ids.contains(&replayed.new_job_id), "{server}: a new job id");
        let mut raw = Client::connect(&addr).await.expect("connect");
        let stats = raw.stats_job(replayed.new_job_id).await.expect("stats-job");
        assert_eq!(stats.get("tube"), Some(tube.as_str()), "{server}");
        assert_eq!(stats.get("state"), Some("ready"), "{server}");
        assert_eq!(stats.get_u64("reserves"), Some(0), "{server}: counters start again");
        assert_eq!(raw.peek(replayed.new_job_id).await.expect("peek").body, batch[0].body, "{server}: the same body");
        assert_eq!(api.list().await.expect("GET /dlq").entries.len(), 3);

        // The endpoint's errors.
        let gone = api.post(&format!("/dlq/{}/replay", first_down.dlq_job_id)).await.expect("answer");
        assert_eq!(gone.status, 404, "{server}: replaying twice: {}", gone.text());
        assert!(gone.text().contains("list the DLQ"), "{server}: says what to do: {}", gone.text());
        let not_dlq = api.post(&format!("/dlq/{}/replay", replayed.new_job_id)).await.expect("answer");
        assert_eq!(not_dlq.status, 404, "{server}: a main-tube job is not a dead letter: {}", not_dlq.text());
        assert_eq!(raw.stats_job(replayed.new_job_id).await.expect("stats-job").get("state"), Some("ready"));
        assert_eq!(api.post("/dlq/abc/replay").await.expect("answer").status, 400);
        // A job in the DLQ tube that is not an envelope is listed as unreadable, refused
        // by a replay, skipped by replay-all, and deleted by purge.
        raw.use_tube(&dlq_tube(&tube)).await.expect("use");
        let foreign = raw.put(1024, 0, 3600, b"not an envelope").await.expect("put");
        let unreadable = api.post(&format!("/dlq/{foreign}/replay")).await.expect("answer");
        assert_eq!(unreadable.status, 422, "{server}: {}", unreadable.text());

        let all = api.replay_all().await.expect("POST /dlq/replay");
        assert_eq!(all.replayed.len(), 3, "{server}: {all:?}");
        assert_eq!(all.skipped, vec![foreign], "{server}");
        let counts = tube_counts(&mut raw, &tube).await.expect("stats-tube");
        assert_eq!((counts.ready, counts.total()), (4, 4), "{server}: four fresh jobs are ready");

        // Workers again: the healed messages succeed, the poison comes back at attempt 1.
        let mut workers = Workers::start(
            &addr,
            &tube,
            policy,
            Variant::Correct,
            shared_provider.clone(),
            Faults::default(),
            2,
            timeline.clone(),
        )
        .await;
        workers.job_ids = job_ids.clone();
        workers.messages = batch.clone();
        assert!(workers.settle(8, Duration::from_secs(10)).await, "{server}: the replays settle");
        workers.stop().await;
        for m in batch.iter().filter(|m| m.kind == Kind::Down) {
            assert_eq!(shared_provider.ledger(m.id).deliveries, 1, "{server}: {} delivered once", m.id);
        }
        let after = api.list().await.expect("GET /dlq");
        let letters: Vec<_> = after.entries.iter().filter_map(|e| e.letter.as_ref()).collect();
        assert_eq!(letters.len(), 2, "{server}: the two poison messages are back: {after:?}");
        assert!(letters.iter().all(|l| l.attempts == 1 && l.reason.is_poison()), "{server}: {letters:?}");
        assert_eq!(after.entries.iter().filter(|e| e.unreadable.is_some()).count(), 1);

        let purged = api.purge().await.expect("POST /dlq/purge");
        assert_eq!(purged.purged, 3, "{server}: two letters and the foreign job");
        assert!(api.list().await.expect("GET /dlq").entries.is_empty());
        assert_eq!(tube_counts(&mut raw, &dlq_tube(&tube)).await.expect("stats-tube").total(), 0);
        assert_eq!(tube_counts(&mut raw, &tube).await.expect("stats-tube").total(), 0);
        server_http.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_loses_its_job_after_the_ttr_a_crashed_one_at_once_and_both_deliver_twice() {
    on_every_backend("ttr", |server, addr| async move {
        let tube = unique_tube("ttr");
        let ttr = Duration::from_secs(2);
        let batch = messages(&[Kind::Flaky, Kind::Flaky], 70);
        let faults = Faults::new([(70, Fault::HangAfterDelivery), (71, Fault::CrashAfterDelivery)]);
        let mut workers = Workers::start(
            &addr,
            &tube,
            policy(3, 0, 0),
            Variant::Correct,
            provider(0.0),
            faults,
            3,
            Arc::new(Timeline::new(Instant::now())),
        )
        .await;
        workers.publish(&batch, 2).await;
        assert!(workers.settle(2, Duration::from_secs(15)).await, "{server}: both settle");

        let hung = workers.attempts_of(0);
        let crashed = workers.attempts_of(1);
        assert!(matches!(hung[0].outcome, Outcome::HungAfterDelivery { ttr_secs: 2 }), "{server}: {hung:?}");
        assert!(matches!(crashed[0].outcome, Outcome::CrashedAfterDelivery), "{server}: {crashed:?}");
        assert_eq!((hung.len(), hung[1].attempt, &hung[1].outcome), (2, 2, &Outcome::Delivered), "{server}");
        assert_eq!((crashed.len(), crashed[1].attempt, &crashed[1].outcome), (2, 2, &Outcome::Delivered), "{server}");

        let hang_gap = hung[1].reserved_at - hung[0].reserved_at;
        let crash_gap = crashed[1].reserved_at.saturating_sub(crashed[0].finished_at);
        // Never before the TTR: that would be two workers holding one job.
        assert!(hang_gap + Duration::from_millis(300) >= ttr, "{server}: came back after {hang_gap:?}, before the TTR");
        let closed_at = ttr + HANG_MARGIN;
        if server == "miniqueue" {
            assert!(hang_gap < closed_at, "{server}: back at the TTR, before the hung connection closed: {hang_gap:?}");
        } else {
            // beanstalkd 1.12 sometimes misses an idle connection's TTR and frees the job
            // only when that connection closes (docs/exercises/retry-dlq.md).
            assert!(hang_gap < closed_at + Duration::from_millis(1_500), "{server}: {hang_gap:?}");
            let how = if hang_gap < closed_at { "at the TTR" } else { "only when the hung connection closed" };
            println!("{server}: the hung worker's job came back after {hang_gap:?}, {how}");
        }
        assert!(
            crash_gap < Duration::from_secs(1),
            "{server}: a closed connection frees its job at once: {crash_gap:?}"
        );
        // At-least-once: each was delivered before its worker died, and again after.
        assert_eq!(workers.provider.ledger(70).deliveries, 2, "{server}");
        assert_eq!(workers.provider.ledger(71).deliveries, 2, "{server}");
        workers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_too_big_for_the_server_buries_the_original_instead() {
    on_every_backend("too-big", |server, addr| async move {
        let tube = unique_tube("too-big");
        // 40,000 bytes that are not UTF-8: hex in the envelope doubles them past 65,535.
        let body: Vec<u8> = (0..40_000u32).map(|i| if i % 7 == 0 { 0xff } else { b'a' }).collect();
        let big = Planned { kind: Kind::Malformed, id: 80, body: body.clone(), fault: None };
        let mut workers = Workers::start_plain(&addr, &tube, policy(3, 0, 0), Variant::Correct, 1).await;
        workers.publish(&[big], 5).await;
        assert!(workers.settle(1, Duration::from_secs(10)).await, "{server}: settles");
        let attempts = workers.attempts_of(0);
        assert!(
            matches!(attempts[0].outcome, Outcome::Buried { reason: DeadReason::MalformedPayload, .. }),
            "{server}"
        );
        let mut raw = Client::connect(&addr).await.expect("connect");
        raw.use_tube(&tube).await.expect("use");
        let buried = raw.peek_buried().await.expect("peek-buried");
        assert_eq!((buried.id, buried.body == body), (workers.job_ids[0], true), "{server}: the body is safe");
        raw.delete(buried.id).await.expect("delete");
        workers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_passes_at_quick_scale() {
    let exercise = exercises::find("retry-dlq").expect("retry-dlq is in the catalogue");
    let backends = backends("scenario").await;
    let runs: Vec<_> = backends
        .addrs
        .iter()
        .map(|(name, addr)| {
            // The in-process miniqueue is what `run` starts when no URL is given.
            let queue = (*name != "miniqueue").then(|| format!("beanstalk://{addr}"));
            let options = DemoOptions { scale: Scale::Quick, queue, ..Default::default() };
            (*name, tokio::spawn(framework::run(exercise, options)))
        })
        .collect();
    for (name, run) in runs {
        let report = run.await.expect("the scenario task").unwrap_or_else(|e| panic!("{name}: could not run: {e}"));
        println!("{report}");
        assert!(report.passed(), "{name}: failed checks: {:?}", report.failures().collect::<Vec<_>>());
    }
    drop(backends);
}
