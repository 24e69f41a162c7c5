//! The `retry-dlq` scenario: a batch of notifications through workers that retry with
//! full-jitter backoff, a provider that fails on purpose, workers that crash and hang
//! between delivery and delete, a DLQ that fills, and a replay through its HTTP endpoint
//! once the outage is fixed.
//!
//! ```text
//!  phase 1  publish N ──> workers (correct scheduler) ──> provider ──> settled: delivered or DLQ
//!           alongside, on their own tubes: the broken variants (no poison detection,
//!           no attempt limit), which the same checks must catch
//!  phase 2  heal the down domain ──> POST /dlq/{id}/replay, POST /dlq/replay
//!           ──> healed messages delivered, poison back in the DLQ at attempt 1
//!           ──> POST /dlq/purge ──> GET /dlq is empty
//! ```
//!
//! Every message's fate is decided up front by the seed: its kind (flaky, rejected,
//! down, malformed), which provider calls fail ([`Provider::flaky_call_fails`] is a pure
//! function), and which messages get a worker fault. [`predict`] turns that into the
//! attempts, provider calls, deliveries and end state the pattern must produce, and the
//! checks compare the run with it, so a worker that retried one time too many, lost a
//! message or delivered one twice more than the faults explain fails a check.
//!
//! Left out: a durable queue (the in-process miniqueue runs without its WAL; the doc's
//! durability section says what a real deployment relies on) and producer retries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::dlq::{dlq_tube, DeadLetterQueue, Listing};
use super::letter::{unix_ms, DeadLetter};
use super::notification::Notification;
use super::provider::{Ledger, Provider, ProviderConfig};
use super::replay_endpoint::{router, DlqApi};
use super::retry::{DeadReason, RetryPolicy, Variant};
use super::worker::{spawn_pool, tube_counts, Attempt, Fault, Faults, Outcome, Timeline, WorkerConfig, HANG_MARGIN};
use crate::framework::http::serve;
use crate::framework::{Demo, DemoError, LatencyHistogram, Report, Scale, Served};
use minibench::queue::client::Client;

/// The priority every notification is put with (beanstalk's conventional default).
pub const PRIORITY: u32 = 1024;

/// The provider's domains, one per behaviour.
pub const FLAKY_DOMAIN: &str = "mail.example";
pub const REJECTED_DOMAIN: &str = "bounce.example";
pub const DOWN_DOMAIN: &str = "down.example";

/// How early a delayed job may come back (the release is timed when its reply arrives,
/// a little after the server started the delay).
const EARLY_TOLERANCE: Duration = Duration::from_millis(500);
/// How late it may come back: generous, for a loaded 2-core machine.
const LATE_TOLERANCE: Duration = Duration::from_millis(1_500);
/// Slack on top of the worst-case wait before a phase is declared stuck.
const PHASE_SLACK: Duration = Duration::from_secs(15);

/// What a message is, which decides what must happen to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// To a healthy domain: each provider call fails transiently with the flaky rate.
    Flaky,
    /// To a domain the provider refuses for good: poison.
    Rejected,
    /// To a domain that is down until phase 2: every call fails transiently.
    Down,
    /// A payload that does not parse: poison.
    Malformed,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Flaky => "flaky",
            Kind::Rejected => "rejected",
            Kind::Down => "down",
            Kind::Malformed => "malformed",
        }
    }
}

/// One message of the plan.
#[derive(Clone, Debug)]
pub struct Planned {
    pub kind: Kind,
    /// The notification id (malformed payloads have one too, for the report, but the
    /// worker cannot read it).
    pub id: u64,
    pub body: Vec<u8>,
    pub fault: Option<Fault>,
}

impl Planned {
    /// The id the provider's ledger knows it by (`None`: never reaches the provider).
    fn ledger_id(&self) -> Option<u64> {
        (self.kind != Kind::Malformed).then_some(self.id)
    }
}

/// How a message ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Delivered,
    Dead(DeadReason),
}

/// What the pattern must do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Attempts (reservations) of its job.
    pub attempts: u32,
    /// Provider calls it causes.
    pub calls: u32,
    /// Deliveries the provider accepts.
    pub deliveries: u32,
    pub end: End,
}

/// The reference model: what the correct scheduler does with `message`, given which
/// provider calls fail. `calls_before` is how many calls the provider has already seen
/// for it (a replay continues the count); `healed` says the down domain is back.
pub fn predict(
    message: &Planned,
    provider: &Provider,
    policy: &RetryPolicy,
    calls_before: u32,
    healed: bool,
) -> Expected {
    let max = policy.max_attempts;
    let dead = |attempts, calls, deliveries, reason| Expected { attempts, calls, deliveries, end: End::Dead(reason) };
    match message.kind {
        Kind::Malformed => dead(1, 0, 0, DeadReason::MalformedPayload),
        Kind::Rejected => dead(1, 1, 0, DeadReason::PermanentError),
        Kind::Down if !healed => dead(max, max, 0, DeadReason::AttemptsExhausted),
        Kind::Down => Expected { attempts: 1, calls: 1, deliveries: 1, end: End::Delivered },
        Kind::Flaky => {
            let (mut attempt, mut calls, mut deliveries) = (1, 0, 0);
            let mut fault = message.fault;
            loop {
                if attempt > max {
                    // Reserved once too often (a fault on the last attempt): dead untried.
                    return dead(attempt, calls, deliveries, DeadReason::AttemptsExhausted);
                }
                calls += 1;
                if provider.flaky_call_fails(message.id, calls_before + calls) {
                    if attempt >= max {
                        return dead(attempt, calls, deliveries, DeadReason::AttemptsExhausted);
                    }
                    attempt += 1;
                    continue;
                }
                deliveries += 1;
                if fault.take().is_some() {
                    attempt += 1;
                    continue;
                }
                return Expected { attempts: attempt, calls, deliveries, end: End::Delivered };
            }
        }
    }
}

/// A scenario's sizes, both scales side by side.
struct Settings {
    flaky: usize,
    rejected: usize,
    down: usize,
    malformed: usize,
    workers: usize,
    policy: RetryPolicy,
    ttr: u32,
    transient_rate: f64,
    crashes: usize,
    hangs: usize,
}

fn settings(scale: Scale) -> Result<Settings, DemoError> {
    let policy = |max, base, cap| RetryPolicy::new(max, base, cap).map_err(|e| DemoError::Scenario(e.to_string()));
    Ok(Settings {
        flaky: scale.pick(27, 7),
        rejected: scale.pick(3, 1),
        down: scale.pick(3, 1),
        malformed: scale.pick(3, 1),
        workers: scale.pick(3, 2),
        // Full: ceilings 1, 2, 4, 4 (the cap shows); quick: 1, 2. Whole seconds, because
        // beanstalk delays are.
        policy: scale.pick(policy(5, 1, 4)?, policy(3, 1, 2)?),
        ttr: scale.pick(3, 2),
        transient_rate: 0.3,
        crashes: scale.pick(2, 1),
        hangs: 1,
    })
}

fn provider_config(seed: u64, transient_rate: f64) -> ProviderConfig {
    ProviderConfig {
        seed,
        transient_rate,
        latency: (Duration::from_millis(2), Duration::from_millis(15)),
        rejected_domains: vec![REJECTED_DOMAIN.into()],
        down_domains: vec![DOWN_DOMAIN.into()],
    }
}

/// A notification of `kind` with id `id`, as its producer would put it.
pub fn message(kind: Kind, id: u64) -> Planned {
    let notification = |domain: &str| {
        Notification { id, to: format!("user{id}@{domain}"), text: format!("notification {id}: your order shipped") }
            .encode()
    };
    let body = match kind {
        Kind::Flaky => notification(FLAKY_DOMAIN),
        Kind::Rejected => notification(REJECTED_DOMAIN),
        Kind::Down => notification(DOWN_DOMAIN),
        Kind::Malformed => malformed_body(id, id % 3),
    };
    Planned { kind, id, body, fault: None }
}

/// One of three kinds of poison payload (`which` modulo 3): not UTF-8, a missing field,
/// a recipient that is not an address.
pub fn malformed_body(id: u64, which: u64) -> Vec<u8> {
    match which % 3 {
        0 => [b"\xff\xfe\x00 binary junk " as &[u8], id.to_string().as_bytes()].concat(),
        1 => format!(r#"{{"id": {id}, "text": "no recipient"}}"#).into_bytes(),
        _ => format!(r#"{{"id": {id}, "to": "not-an-address", "text": "x"}}"#).into_bytes(),
    }
}

/// The plan: the mix, shuffled by the seed, with faults on flaky messages whose first
/// provider call succeeds (so each fault fires right after a delivery).
fn plan(settings: &Settings, provider: &Provider, rng: &mut fastrand::Rng) -> Vec<Planned> {
    let mut kinds = Vec::new();
    for (kind, count) in [
        (Kind::Flaky, settings.flaky),
        (Kind::Rejected, settings.rejected),
        (Kind::Down, settings.down),
        (Kind::Malformed, settings.malformed),
    ] {
        kinds.extend(std::iter::repeat_n(kind, count));
    }
    rng.shuffle(&mut kinds);
    let mut messages: Vec<Planned> =
        kinds.into_iter().enumerate().map(|(i, kind)| message(kind, 1_000 + i as u64)).collect();
    // Every kind of poison payload, whatever ids the shuffle gave the malformed ones.
    for (which, m) in messages.iter_mut().filter(|m| m.kind == Kind::Malformed).enumerate() {
        m.body = malformed_body(m.id, which as u64);
    }
    let mut faults = std::iter::repeat_n(Fault::CrashAfterDelivery, settings.crashes)
        .chain(std::iter::repeat_n(Fault::HangAfterDelivery, settings.hangs));
    for m in messages.iter_mut().filter(|m| m.kind == Kind::Flaky && !provider.flaky_call_fails(m.id, 1)) {
        match faults.next() {
            Some(fault) => m.fault = Some(fault),
            None => break,
        }
    }
    messages
}

/// One run of workers on one tube: the main one, or a broken variant's.
struct Run {
    tube: String,
    provider: Arc<Provider>,
    timeline: Arc<Timeline>,
    stop: watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<Result<super::worker::WorkerSummary, super::worker::WorkerError>>>,
    /// Job id -> index into the plan, for every job of this run (replays included).
    job_index: HashMap<u64, usize>,
    /// When each message was published.
    published_at: Vec<Instant>,
}

impl Run {
    #[allow(clippy::too_many_arguments)]
    async fn start(
        demo: &Demo,
        tube: String,
        policy: RetryPolicy,
        variant: Variant,
        provider: Arc<Provider>,
        faults: Faults,
        workers: usize,
        timeline: Arc<Timeline>,
        stream: u64,
    ) -> Result<Run, DemoError> {
        let config = WorkerConfig {
            addr: demo.queue_addr()?.to_string(),
            tube: tube.clone(),
            dlq_tube: dlq_tube(&tube),
            policy,
            variant,
        };
        let pool = spawn_pool(workers, config, &provider, faults, &timeline, |w| demo.rng(stream + w as u64));
        Ok(Run {
            tube,
            provider,
            timeline,
            stop: pool.stop,
            workers: pool.handles,
            job_index: HashMap::new(),
            published_at: Vec::new(),
        })
    }

    /// Puts every message, one `put` each, noting when each put was sent (a worker may
    /// deliver a message before the rest are published).
    async fn publish(&mut self, addr: &str, messages: &[Planned], ttr: u32) -> Result<(), DemoError> {
        let mut producer = Client::connect(addr).await?;
        producer.use_tube(&self.tube).await?;
        for (index, m) in messages.iter().enumerate() {
            let sent = Instant::now();
            let id = producer.put(PRIORITY, 0, ttr, &m.body).await?;
            self.job_index.insert(id, index);
            self.published_at.push(sent);
        }
        Ok(())
    }

    /// Stops the workers and waits for them; a worker that failed fails the scenario.
    async fn stop(&mut self) -> Result<(u64, u64), DemoError> {
        let _ = self.stop.send(true);
        let (mut attempts, mut restarts) = (0, 0);
        for handle in self.workers.drain(..) {
            let summary = handle.await??;
            attempts += summary.attempts;
            restarts += summary.restarts;
        }
        Ok((attempts, restarts))
    }

    /// The attempts of each message, in time order, by plan index.
    fn attempts_by_message(&self) -> BTreeMap<usize, Vec<Attempt>> {
        let mut by_message: BTreeMap<usize, Vec<Attempt>> = BTreeMap::new();
        for attempt in self.timeline.attempts() {
            if let Some(&index) = self.job_index.get(&attempt.job_id) {
                by_message.entry(index).or_default().push(attempt);
            }
        }
        for attempts in by_message.values_mut() {
            attempts.sort_by_key(|a| a.reserved_at);
        }
        by_message
    }
}

/// The DLQ listing's envelopes by plan index.
fn letters_by_message(run: &Run, listing: &Listing) -> HashMap<usize, Vec<(u64, DeadLetter)>> {
    let mut by_message: HashMap<usize, Vec<(u64, DeadLetter)>> = HashMap::new();
    for entry in &listing.entries {
        if let Some(letter) = &entry.letter {
            if let Some(&index) = run.job_index.get(&letter.source_job_id) {
                by_message.entry(index).or_default().push((entry.dlq_job_id, letter.clone()));
            }
        }
    }
    by_message
}

/// Check 2: every poison message went to the DLQ at its first attempt, and the provider
/// saw a rejected message once and a malformed one never. Returns (holds, detail).
fn poison_invariant(
    run: &Run,
    messages: &[Planned],
    listing: &Listing,
    ledger_before: &HashMap<u64, Ledger>,
) -> (bool, String) {
    let attempts = run.attempts_by_message();
    let letters = letters_by_message(run, listing);
    let (mut held, mut total) = (0, 0);
    let mut seen_attempts = Vec::new();
    let mut rejected_calls = 0;
    for (index, m) in messages.iter().enumerate().filter(|(_, m)| matches!(m.kind, Kind::Rejected | Kind::Malformed)) {
        total += 1;
        let tries = attempts.get(&index).map_or(0, |a| a.iter().map(|a| a.attempt).max().unwrap_or(0));
        seen_attempts.push(tries);
        let calls = calls_since(run, m, ledger_before);
        if m.kind == Kind::Rejected {
            rejected_calls += calls;
        }
        let expected_calls = if m.kind == Kind::Rejected { 1 } else { 0 };
        let letter_ok = letters.get(&index).is_some_and(|l| {
            l.len() == 1
                && l[0].1.attempts == 1
                && l[0].1.reason.is_poison()
                && l[0].1.body.bytes().as_ref() == Some(&m.body)
        });
        if tries == 1 && calls == expected_calls && letter_ok {
            held += 1;
        }
    }
    let rejected = messages.iter().filter(|m| m.kind == Kind::Rejected).count();
    (
        held == total && total > 0,
        format!(
            "{held}/{total} poison messages dead-lettered at attempt 1 (attempts seen {seen_attempts:?}); \
             provider calls for {rejected} rejected: {rejected_calls} (expected {rejected}), for malformed: 0 expected"
        ),
    )
}

/// Check 3: every message that must exhaust its attempts is in the DLQ with exactly
/// `max_attempts` attempts and as many provider calls.
fn exhaustion_invariant(
    run: &Run,
    messages: &[Planned],
    expected: &[Expected],
    listing: &Listing,
    max: u32,
) -> (bool, String) {
    let attempts = run.attempts_by_message();
    let letters = letters_by_message(run, listing);
    let (mut held, mut total, mut in_dlq) = (0, 0, 0);
    let mut seen = Vec::new();
    for (index, m) in messages.iter().enumerate() {
        if expected[index].end != End::Dead(DeadReason::AttemptsExhausted) {
            continue;
        }
        total += 1;
        let tries = attempts.get(&index).map_or(0, |a| a.iter().map(|a| a.attempt).max().unwrap_or(0));
        seen.push(tries);
        let calls = m.ledger_id().map_or(0, |id| run.provider.ledger(id).calls);
        let letter = letters.get(&index).and_then(|l| l.first()).map(|(_, l)| l);
        if letter.is_some() {
            in_dlq += 1;
        }
        if letter.is_some_and(|l| l.attempts == max && l.reason == DeadReason::AttemptsExhausted)
            && tries == max
            && calls == expected[index].calls
        {
            held += 1;
        }
    }
    (
        held == total && total > 0,
        format!(
            "{held}/{total} exhausted messages in the DLQ after exactly {max} attempts ({in_dlq} in the DLQ; \
             attempts seen {seen:?})"
        ),
    )
}

/// What a message's attempts (in time order) and provider counts add up to, in the
/// model's terms; `None` while its last attempt did not end it (no delivery, no DLQ).
fn observed<'a>(attempts: impl IntoIterator<Item = &'a Attempt>, calls: u32, deliveries: u32) -> Option<Expected> {
    let (mut most, mut last) = (0, None);
    for attempt in attempts {
        most = most.max(attempt.attempt);
        last = Some(&attempt.outcome);
    }
    let end = match last? {
        Outcome::Delivered => End::Delivered,
        Outcome::DeadLettered { reason, .. } | Outcome::Buried { reason, .. } => End::Dead(*reason),
        _ => return None,
    };
    Some(Expected { attempts: most, calls, deliveries, end })
}

/// Provider calls for `m` since `before` was taken.
fn calls_since(run: &Run, m: &Planned, before: &HashMap<u64, Ledger>) -> u32 {
    m.ledger_id().map_or(0, |id| run.provider.ledger(id).calls.saturating_sub(before.get(&id).map_or(0, |l| l.calls)))
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The scenario behind `mini demo retry-dlq`.
pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let settings = settings(demo.scale)?;
    let policy = settings.policy;
    let max = policy.max_attempts;
    let addr = demo.queue_addr()?.to_string();
    let mut report = demo.report("retry-dlq", "a notification worker with full-jitter retries and a dead-letter queue");

    // Names unique to this run, so a shared server's leftovers never mix in.
    let prefix = format!("retry-dlq-{}-{:06x}", demo.seed, fastrand::u32(..0xff_ffff));
    let tube = format!("{prefix}.notify");
    let provider = Arc::new(Provider::new(provider_config(demo.seed, settings.transient_rate)));
    let messages = plan(&settings, &provider, &mut demo.rng(1));
    let expected: Vec<Expected> = messages.iter().map(|m| predict(m, &provider, &policy, 0, false)).collect();
    let count = |kind| messages.iter().filter(|m| m.kind == kind).count();

    report.line("tube", format!("{tube} (dead letters: {})", dlq_tube(&tube)));
    report.line(
        "policy",
        format!(
            "{max} attempts; retry n waits a uniform whole number of seconds in [0, min({} s, {} s × 2^n)]",
            policy.backoff.cap_secs, policy.backoff.base_secs
        ),
    );
    report.line("attempt number", "stats-job `reserves` (counts crashed and timed-out attempts too)");
    report.line(
        "messages",
        format!(
            "{}: {} to {FLAKY_DOMAIN} ({:.0}% transient failures per call), {} to {REJECTED_DOMAIN} (550, permanent), \
             {} to {DOWN_DOMAIN} (503 until healed), {} malformed",
            messages.len(),
            count(Kind::Flaky),
            settings.transient_rate * 100.0,
            count(Kind::Rejected),
            count(Kind::Down),
            count(Kind::Malformed)
        ),
    );
    report.line(
        "workers",
        format!(
            "{}, TTR {} s; injected between delivery and delete: {} crash(es), {} hang(s)",
            settings.workers, settings.ttr, settings.crashes, settings.hangs
        ),
    );

    // The DLQ endpoint, over HTTP like an operator would use it.
    let dlq = Arc::new(DeadLetterQueue::new(&addr, &tube)?);
    let server = serve(router(dlq.clone())).await?;
    let api = DlqApi::new(server.url(""));

    // Phase 1, with the broken variants alongside on their own tubes.
    let start = Instant::now();
    let faults = Faults::new(messages.iter().filter_map(|m| m.fault.map(|f| (m.id, f))));
    let mut main = Run::start(
        &demo,
        tube.clone(),
        policy,
        Variant::Correct,
        provider.clone(),
        faults,
        settings.workers,
        Arc::new(Timeline::new(start)),
        100,
    )
    .await?;
    let poison: Vec<Planned> =
        messages.iter().filter(|m| matches!(m.kind, Kind::Rejected | Kind::Malformed)).cloned().collect();
    let down: Vec<Planned> = messages.iter().filter(|m| m.kind == Kind::Down).cloned().collect();
    let mut broken_poison = Run::start(
        &demo,
        format!("{prefix}.broken-poison"),
        policy,
        Variant::NoPoisonDetection,
        Arc::new(Provider::new(provider_config(demo.seed, settings.transient_rate))),
        Faults::default(),
        1,
        Arc::new(Timeline::new(start)),
        200,
    )
    .await?;
    let mut broken_limit = Run::start(
        &demo,
        format!("{prefix}.broken-limit"),
        policy,
        Variant::NoAttemptLimit,
        Arc::new(Provider::new(provider_config(demo.seed, settings.transient_rate))),
        Faults::default(),
        1,
        Arc::new(Timeline::new(start)),
        300,
    )
    .await?;
    main.publish(&addr, &messages, settings.ttr).await?;
    broken_poison.publish(&addr, &poison, settings.ttr).await?;
    broken_limit.publish(&addr, &down, settings.ttr).await?;

    let worst_wait = Duration::from_secs(policy.backoff.worst_case_wait_secs(max));
    let phase_deadline = Instant::now() + worst_wait + Duration::from_secs(u64::from(settings.ttr)) + PHASE_SLACK;
    let settled = main.timeline.wait_settled(messages.len(), phase_deadline).await;
    let phase1_took = start.elapsed();
    // A correct worker would have dead-lettered every exhausted message by now; the
    // broken runs get as long as the correct one could need, then are judged.
    let broken_deadline = start + worst_wait + Duration::from_secs(1);
    broken_poison.timeline.wait_settled(poison.len(), phase_deadline).await;
    tokio::time::sleep_until(broken_deadline.into()).await;
    let broken_poison_listing = DeadLetterQueue::new(&addr, &broken_poison.tube)?.list().await?;
    let broken_limit_dlq = DeadLetterQueue::new(&addr, &broken_limit.tube)?;
    let broken_limit_listing = broken_limit_dlq.list().await?;
    let broken_limit_elapsed = start.elapsed();
    broken_poison.stop().await?;
    broken_limit.stop().await?;

    let listing = api.list().await?;
    let ledger_after_phase1: HashMap<u64, Ledger> =
        messages.iter().filter_map(|m| m.ledger_id()).map(|id| (id, provider.ledger(id))).collect();
    let phase1_attempts = main.attempts_by_message();

    // ---- phase 1 report ----
    report.section("phase 1: deliver, retrying with backoff");
    report.line("settled", format!("{} of {} in {}", main.timeline.settled(), messages.len(), secs(phase1_took)));
    let all_attempts: Vec<Attempt> = phase1_attempts.values().flatten().cloned().collect();
    let outcome_count = |f: &dyn Fn(&Outcome) -> bool| all_attempts.iter().filter(|a| f(&a.outcome)).count();
    report.line(
        "attempts",
        format!(
            "{} (delivered {}, retried {}, dead-lettered {}, crashed {}, hung {})",
            all_attempts.len(),
            outcome_count(&|o| *o == Outcome::Delivered),
            outcome_count(&|o| matches!(o, Outcome::Retrying { .. })),
            outcome_count(&|o| matches!(o, Outcome::DeadLettered { .. } | Outcome::Buried { .. })),
            outcome_count(&|o| *o == Outcome::CrashedAfterDelivery),
            outcome_count(&|o| matches!(o, Outcome::HungAfterDelivery { .. })),
        ),
    );
    let totals = provider.totals();
    report.line(
        "provider",
        format!(
            "{} calls: {} deliveries, {} transient failures, {} permanent",
            totals.calls, totals.deliveries, totals.transient_failures, totals.permanent_failures
        ),
    );
    let mut to_delivery = LatencyHistogram::new();
    for (index, m) in messages.iter().enumerate() {
        if let Some(first) = m.ledger_id().and_then(|id| provider.ledger(id).first_delivery) {
            to_delivery.record(first.saturating_duration_since(main.published_at[index]));
        }
    }
    report.histogram("publish → first delivery", &mut to_delivery);

    let at_once = phase1_attempts
        .iter()
        .filter(|(_, a)| a.len() == 1 && a[0].outcome == Outcome::Delivered && a[0].attempt == 1)
        .count();
    report.text(format!(
        "\nattempts timeline (the {at_once} messages delivered at their first attempt are left out; \
         t is since the start of phase 1):"
    ));
    let rows = timeline_rows(&messages, &phase1_attempts);
    report.table(&["t", "msg", "kind", "job", "try", "outcome", "next delay", "error"], rows);

    report.section("the DLQ after phase 1 (GET /dlq)");
    let letters = letters_by_message(&main, &listing);
    let dlq_rows = dlq_rows(&main, &messages, &listing);
    report.table(&["dlq id", "msg", "kind", "reason", "attempts", "in queue", "last error"], dlq_rows);

    // ---- phase 1 checks ----
    report.check(
        settled,
        format!(
            "every message settled (delivered, or dead-lettered): {}/{} in {}",
            main.timeline.settled(),
            messages.len(),
            secs(phase1_took)
        ),
    );
    let no_ledger = HashMap::new();
    let (holds, detail) = poison_invariant(&main, &messages, &listing, &no_ledger);
    report.check(holds, format!("poison skips the retries: {detail}"));
    let (holds, detail) = exhaustion_invariant(&main, &messages, &expected, &listing, max);
    report.check(holds, format!("DLQ after exactly max attempts: {detail}"));

    let mut mismatches = Vec::new();
    for (index, m) in messages.iter().enumerate() {
        let attempts = phase1_attempts.get(&index).map(Vec::as_slice).unwrap_or(&[]);
        let ledger = m.ledger_id().map(|id| provider.ledger(id)).unwrap_or_default();
        let actual = observed(attempts, ledger.calls, ledger.deliveries);
        if actual != Some(expected[index]) {
            mismatches.push(format!("{} ({}): expected {:?}, got {actual:?}", m.id, m.kind.word(), expected[index]));
        }
    }
    report.check(
        mismatches.is_empty(),
        format!(
            "every message's attempts, provider calls, deliveries and end match the model: {}/{}{}",
            messages.len() - mismatches.len(),
            messages.len(),
            mismatches.first().map(|m| format!("; first mismatch {m}")).unwrap_or_default()
        ),
    );

    let faulted = messages.iter().filter(|m| m.fault.is_some()).count() as u32;
    let delivered_messages = expected.iter().filter(|e| e.end == End::Delivered).count() as u32;
    report.check(
        totals.deliveries == delivered_messages + faulted
            && messages
                .iter()
                .zip(&expected)
                .all(|(m, e)| m.ledger_id().map_or(0, |id| provider.ledger(id).deliveries) == e.deliveries),
        format!(
            "at-least-once, duplicates exactly where a worker died after delivering: {} deliveries = {} messages + {} \
             injected faults",
            totals.deliveries, delivered_messages, faulted
        ),
    );

    // Backoff bounds, from each release to the job's next reservation.
    let (mut retries, mut within, mut worst_early, mut worst_late) = (0, 0, Duration::ZERO, Duration::ZERO);
    let mut capped = true;
    let mut hang_gaps = Vec::new();
    let mut crash_gaps = Vec::new();
    for attempts in phase1_attempts.values() {
        for pair in attempts.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let gap = b.reserved_at.saturating_sub(a.finished_at);
            match &a.outcome {
                Outcome::Retrying { delay_secs, ceiling_secs, .. } => {
                    retries += 1;
                    let delay = Duration::from_secs(u64::from(*delay_secs));
                    capped &= delay_secs <= ceiling_secs && *ceiling_secs <= policy.backoff.cap_secs;
                    worst_early = worst_early.max(delay.saturating_sub(gap));
                    worst_late = worst_late.max(gap.saturating_sub(delay));
                    if gap + EARLY_TOLERANCE >= delay && gap <= delay + LATE_TOLERANCE {
                        within += 1;
                    }
                }
                Outcome::HungAfterDelivery { .. } => hang_gaps.push(b.reserved_at.saturating_sub(a.reserved_at)),
                Outcome::CrashedAfterDelivery => crash_gaps.push(gap),
                _ => {}
            }
        }
    }
    report.check(
        capped && within == retries && retries > 0,
        format!(
            "every retry inside its full-jitter window: {within}/{retries} came back within [delay − {}, delay + {}] \
             (earliest −{}, latest +{}), every delay ≤ its ceiling ≤ the {} s cap: {capped}",
            secs(EARLY_TOLERANCE),
            secs(LATE_TOLERANCE),
            secs(worst_early),
            secs(worst_late),
            policy.backoff.cap_secs
        ),
    );
    // A hung worker's job must never come back before its TTR. It should come back *at*
    // the TTR; a real beanstalkd 1.12 sometimes misses that and frees the job only when
    // the hung worker's connection closes (TTR + HANG_MARGIN here; see the doc's "What
    // can go wrong?"), so only the in-process miniqueue is held to "at the TTR".
    let ttr = Duration::from_secs(u64::from(settings.ttr));
    let closed_at = ttr + HANG_MARGIN;
    let strict_ttr = demo.queue.as_ref().is_some_and(|q| q.served == Served::InProcess("miniqueue"));
    let at_ttr = |g: Duration| g + EARLY_TOLERANCE >= ttr && g + Duration::from_millis(200) < closed_at;
    let hung_ok = hang_gaps.len() == settings.hangs
        && hang_gaps.iter().all(|&g| g + EARLY_TOLERANCE >= ttr && (!strict_ttr || at_ttr(g)));
    let crash_ok = crash_gaps.len() == settings.crashes && crash_gaps.iter().all(|&g| g + EARLY_TOLERANCE < ttr);
    let describe_hang = |&g: &Duration| {
        let how = if at_ttr(g) { "at the TTR" } else { "only when the hung connection closed" };
        format!("{} ({how})", secs(g))
    };
    report.check(
        hung_ok && crash_ok,
        format!(
            "a hung worker's job came back no earlier than its TTR ({}{}): {}; a crashed worker's at once: {:?}",
            secs(ttr),
            if strict_ttr { ", and at it" } else { "" },
            hang_gaps.iter().map(describe_hang).collect::<Vec<_>>().join(", "),
            crash_gaps.iter().map(|&g| secs(g)).collect::<Vec<_>>()
        ),
    );
    let complete = listing.entries.iter().filter(|e| {
        e.letter.as_ref().is_some_and(|l| {
            let index = main.job_index.get(&l.source_job_id);
            index.is_some_and(|&i| l.body.bytes().as_ref() == Some(&messages[i].body))
                && !l.last_error.is_empty()
                && l.enqueued_at_unix_s * 1000 <= l.dead_lettered_at_unix_ms + 1000
                && l.dead_lettered_at_unix_ms <= unix_ms()
                && l.source_tube == tube
        })
    });
    let complete = complete.count();
    let dead_expected = expected.iter().filter(|e| e.end != End::Delivered).count();
    report.check(
        complete == listing.entries.len()
            && listing.entries.len() == dead_expected
            && letters.values().all(|l| l.len() == 1),
        format!(
            "the DLQ holds one complete envelope per dead message (original body byte for byte, reason, attempts, last \
             error, timestamps): {complete}/{} complete, {dead_expected} expected",
            listing.entries.len()
        ),
    );

    // ---- the broken variants ----
    report.section("broken variants, run alongside on their own tubes");
    let broken_expected: Vec<Expected> =
        down.iter().map(|m| predict(m, &broken_limit.provider, &policy, 0, false)).collect();
    let (poison_holds, poison_detail) = poison_invariant(&broken_poison, &poison, &broken_poison_listing, &no_ledger);
    let (limit_holds, limit_detail) =
        exhaustion_invariant(&broken_limit, &down, &broken_expected, &broken_limit_listing, max);
    report.line(Variant::NoPoisonDetection.name(), &poison_detail);
    report.line(Variant::NoAttemptLimit.name(), format!("after {}: {limit_detail}", secs(broken_limit_elapsed)));
    report.check(
        !poison_holds,
        format!("the poison check catches the '{}' variant: {poison_detail}", Variant::NoPoisonDetection.name()),
    );
    report.check(
        !limit_holds,
        format!("the max-attempts check catches the '{}' variant: {limit_detail}", Variant::NoAttemptLimit.name()),
    );
    cleanup(&addr, &broken_poison).await?;
    cleanup(&addr, &broken_limit).await?;

    // ---- phase 2: fix the cause, replay through the endpoint ----
    report.section("phase 2: the outage is fixed; replay through the endpoint");
    provider.heal(DOWN_DOMAIN);
    report.line("healed", format!("{DOWN_DOMAIN} answers again"));
    let phase2_start = Instant::now();
    let settled_before = main.timeline.settled();
    let first = listing
        .entries
        .iter()
        .find(|e| {
            e.letter
                .as_ref()
                .and_then(|l| main.job_index.get(&l.source_job_id))
                .is_some_and(|&i| messages[i].kind == Kind::Down)
        })
        .or(listing.entries.first());
    let mut replayed = Vec::new();
    if let Some(entry) = first {
        let one = api.replay(entry.dlq_job_id).await?;
        report.line(
            format!("POST /dlq/{}/replay", entry.dlq_job_id),
            format!("job {} → new job {}", one.source_job_id, one.new_job_id),
        );
        replayed.push(one);
    }
    let all = api.replay_all().await?;
    report.line("POST /dlq/replay", format!("{} replayed, {} skipped", all.replayed.len(), all.skipped.len()));
    replayed.extend(all.replayed.iter().cloned());
    let phase1_jobs: HashSet<u64> = main.job_index.keys().copied().collect();
    for r in &replayed {
        if let Some(&index) = main.job_index.get(&r.source_job_id) {
            main.job_index.insert(r.new_job_id, index);
        }
    }
    let phase2_deadline = Instant::now() + worst_wait + PHASE_SLACK;
    let phase2_settled = main.timeline.wait_settled(settled_before + replayed.len(), phase2_deadline).await;
    report.line(
        "settled",
        format!(
            "{} of {} replayed in {}",
            main.timeline.settled().saturating_sub(settled_before),
            replayed.len(),
            secs(phase2_start.elapsed())
        ),
    );
    let after_replay = api.list().await?;
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    for letter in after_replay.entries.iter().filter_map(|e| e.letter.as_ref()) {
        *remaining.entry(format!("{} at attempt {}", letter.reason.describe(), letter.attempts)).or_default() += 1;
    }
    let remaining: Vec<String> = remaining.into_iter().map(|(what, n)| format!("{n} × {what}")).collect();
    report.line("GET /dlq", format!("{} entries: {}", after_replay.entries.len(), remaining.join(", ")));
    let purged = api.purge().await?;
    report.line("POST /dlq/purge", format!("{} purged", purged.purged));
    let after_purge = api.list().await?;
    report.line("GET /dlq", format!("{} entries", after_purge.entries.len()));
    let mut queue = Client::connect(&addr).await?;
    let main_counts = tube_counts(&mut queue, &tube).await?;
    let dlq_counts = tube_counts(&mut queue, &dlq_tube(&tube)).await?;

    // ---- phase 2 checks ----
    let fresh = replayed.iter().all(|r| !phase1_jobs.contains(&r.new_job_id));
    let attempts = main.attempts_by_message();
    let replayed_indexes: Vec<usize> =
        replayed.iter().filter_map(|r| main.job_index.get(&r.source_job_id).copied()).collect();
    let mut phase2_mismatches = Vec::new();
    let mut delivered_after_replay = 0;
    for &index in &replayed_indexes {
        let m = &messages[index];
        let before = m.ledger_id().and_then(|id| ledger_after_phase1.get(&id)).cloned().unwrap_or_default();
        let want = predict(m, &provider, &policy, before.calls, true);
        let new_jobs: HashSet<u64> = replayed
            .iter()
            .filter(|r| main.job_index.get(&r.source_job_id) == Some(&index))
            .map(|r| r.new_job_id)
            .collect();
        let tries: Vec<&Attempt> = attempts
            .get(&index)
            .map(|a| a.iter().filter(|a| new_jobs.contains(&a.job_id)).collect())
            .unwrap_or_default();
        let now = m.ledger_id().map(|id| provider.ledger(id)).unwrap_or_default();
        let got = observed(
            tries.iter().copied(),
            now.calls.saturating_sub(before.calls),
            now.deliveries.saturating_sub(before.deliveries),
        );
        let starts_fresh = tries.first().is_some_and(|a| a.attempt == 1);
        if got.is_some_and(|g| g.end == End::Delivered) {
            delivered_after_replay += 1;
        }
        if got != Some(want) || !starts_fresh {
            phase2_mismatches.push(format!("{} ({}): expected {want:?}, got {got:?}", m.id, m.kind.word()));
        }
    }
    let down_delivered_once =
        messages.iter().filter(|m| m.kind == Kind::Down).all(|m| provider.ledger(m.id).deliveries == 1);
    report.check(
        fresh && all.skipped.is_empty() && replayed.len() == listing.entries.len() && phase2_settled,
        format!(
            "replay returns every dead letter to the main tube as a fresh job: {} of {} replayed with new ids, {} \
             skipped, all settled: {phase2_settled}",
            replayed.len(),
            listing.entries.len(),
            all.skipped.len()
        ),
    );
    report.check(
        phase2_mismatches.is_empty() && down_delivered_once && count(Kind::Down) > 0,
        format!(
            "after the fix the replayed messages end as the model says, from attempt 1: {}/{} ({} delivered; every \
             {DOWN_DOMAIN} message delivered exactly once; poison back in the DLQ at attempt 1){}",
            replayed_indexes.len() - phase2_mismatches.len(),
            replayed_indexes.len(),
            delivered_after_replay,
            phase2_mismatches.first().map(|m| format!("; first mismatch {m}")).unwrap_or_default()
        ),
    );
    report.check(
        purged.purged == after_replay.entries.len() as u64
            && after_purge.entries.is_empty()
            && main_counts.total() == 0
            && dlq_counts.total() == 0,
        format!(
            "purge empties the DLQ: {} purged of {}, then {} listed; jobs left: {} in the tube, {} in the DLQ",
            purged.purged,
            after_replay.entries.len(),
            after_purge.entries.len(),
            main_counts.total(),
            dlq_counts.total()
        ),
    );

    let (worker_attempts, restarts) = main.stop().await?;
    report.line("workers", format!("{worker_attempts} attempts in all, {restarts} restart(s) after injected faults"));
    server.stop().await;
    report.verdict(
        "retries back off inside their full-jitter windows, poison skips them, exhausted jobs reach the DLQ after \
         exactly max attempts, delivery is at-least-once exactly where workers died, and replay brings jobs back fresh",
    );
    Ok(report)
}

/// The timeline table's rows: every attempt of every message that was not delivered at
/// its first attempt, message by message.
fn timeline_rows(messages: &[Planned], attempts_by_message: &BTreeMap<usize, Vec<Attempt>>) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (&index, attempts) in attempts_by_message {
        if attempts.len() == 1 && attempts[0].outcome == Outcome::Delivered && attempts[0].attempt == 1 {
            continue;
        }
        let m = &messages[index];
        for a in attempts {
            let (next, error) = match &a.outcome {
                Outcome::Retrying { error, delay_secs, ceiling_secs } => {
                    (format!("{delay_secs}s of [0,{ceiling_secs}]"), error.clone())
                }
                Outcome::DeadLettered { error, .. } | Outcome::Buried { error, .. } => ("-".into(), error.clone()),
                Outcome::CrashedAfterDelivery => ("at once".into(), "connection closed, no delete".into()),
                Outcome::HungAfterDelivery { ttr_secs } => (format!("after TTR {ttr_secs}s"), "no delete".into()),
                Outcome::Delivered => ("-".into(), String::new()),
            };
            let mut error = error;
            if error.len() > 48 {
                error = format!("{}…", error.chars().take(47).collect::<String>());
            }
            rows.push(vec![
                format!("+{:.2}s", a.reserved_at.as_secs_f64()),
                m.id.to_string(),
                m.kind.word().to_string(),
                a.job_id.to_string(),
                a.attempt.to_string(),
                a.outcome.word().to_string(),
                next,
                error,
            ]);
        }
    }
    rows
}

/// The DLQ table's rows, one per envelope in `listing`.
fn dlq_rows(run: &Run, messages: &[Planned], listing: &Listing) -> Vec<Vec<String>> {
    let mut dlq_rows = Vec::new();
    for entry in &listing.entries {
        let Some(letter) = &entry.letter else {
            let unreadable = entry.unreadable.clone().unwrap_or_default();
            dlq_rows.push(vec![
                entry.dlq_job_id.to_string(),
                "?".into(),
                "?".into(),
                "unreadable".into(),
                "-".into(),
                "-".into(),
                unreadable,
            ]);
            continue;
        };
        let index = run.job_index.get(&letter.source_job_id).copied();
        let (msg, kind) = index.map_or(("?".into(), "?"), |i| (messages[i].id.to_string(), messages[i].kind.word()));
        // Enqueued is known to the second (stats-job `age`), so whole seconds.
        let waited_secs = letter.dead_lettered_at_unix_ms.saturating_sub(letter.enqueued_at_unix_s * 1000) / 1000;
        let mut error = letter.last_error.clone();
        if error.len() > 44 {
            error = format!("{}…", error.chars().take(43).collect::<String>());
        }
        dlq_rows.push(vec![
            entry.dlq_job_id.to_string(),
            msg,
            kind.to_string(),
            letter.reason.describe().to_string(),
            letter.attempts.to_string(),
            format!("{waited_secs}s"),
            error,
        ]);
    }
    dlq_rows
}

/// Deletes what a broken run left behind (its workers are stopped, so nothing is
/// reserved): its jobs by id, and its DLQ.
async fn cleanup(addr: &str, run: &Run) -> Result<(), DemoError> {
    let mut client = Client::connect(addr).await?;
    for &id in run.job_index.keys() {
        match client.delete(id).await {
            Ok(()) | Err(minibench::queue::client::Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let dlq = DeadLetterQueue::new(addr, &run.tube)?;
    dlq.purge().await?;
    Ok(())
}
