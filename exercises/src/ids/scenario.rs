//! The `snowflake-ids` scenario: several generators lease node ids from the KV store,
//! issue millions of IDs in parallel while their clocks are stepped back, and hand a
//! node id over from a paused holder to a new one; the audit counts duplicates and
//! order violations.
//!
//! ```text
//!  1. leases     N workers race `acquire_any` from node 0: N distinct node ids;
//!                a contender for a held one is refused
//!  2. issue      each worker issues its quota on its own thread; at 1/4, 2/4, 3/4
//!                of it, its clock steps back: a few ms (waited out) or 100+ ms
//!                (refused; the worker backs off and retries)
//!  3. handover   A (clock 8 ms ahead) issues, then "pauses" (no renewals); B
//!                takes the node id after the lease runs out and starts above A's
//!                ceiling; A, waking, is refused
//! ```
//!
//! Each part's IDs go through [`super::audit`]. The keys are under
//! `idgen:<seed><random>:` and are deleted at the end (the ceilings too), so runs
//! against a shared server leave nothing behind unless they crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audit::{audit, IdAudit, NodeBatch};
use super::clock::SteppableClock;
use super::generator::{ClockEvent, Generator, GeneratorConfig, GeneratorStats};
use super::node_lease::{LeaseConfig, LeaseError, NodeLease};
use super::snowflake::{IdError, SnowflakeId, DEFAULT_MAX_BACKWARD_WAIT_MS, MAX_SEQUENCE};
use crate::framework::histogram::format_duration;
use crate::framework::{Demo, DemoError, Report};

/// How long a worker backs off after a refusal before it asks again. Real callers would
/// fail the request instead, or route it to another generator.
const REFUSAL_BACKOFF: Duration = Duration::from_millis(5);
/// How long the handover's successor polls for the paused holder's node id.
const TAKEOVER_PATIENCE: Duration = Duration::from_secs(10);
/// How far the handover's first holder's clock runs ahead of its successor's.
const HANDOVER_SKEW_MS: i64 = 8;
/// The node id the handover uses (far from the ones part 1 leases).
const HANDOVER_NODE: u16 = 1_000;

/// One clock step a worker makes, at a point in its quota.
#[derive(Clone, Copy, Debug)]
struct Injection {
    /// The step happens just before the worker asks for ID number `at_issued`.
    at_issued: u64,
    step_ms: u64,
}

/// What one worker did.
struct WorkerRun {
    batch: NodeBatch,
    stats: GeneratorStats,
    events: Vec<ClockEvent>,
    injections: Vec<Injection>,
    elapsed: Duration,
    last_unix_ms: u64,
    /// Set when the generator stopped for a reason other than a clock refusal.
    stopped: Option<IdError>,
}

pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let nodes: usize = demo.scale.pick(4, 3);
    let per_node: u64 = demo.scale.pick(4_000_000, 150_000);
    // Short enough that the full run sees its renewals; long enough that a loaded
    // debug build (the tests) never misses one.
    let ttl = demo.scale.pick(Duration::from_millis(1_500), Duration::from_secs(1));
    let bound = DEFAULT_MAX_BACKWARD_WAIT_MS;
    let client = redis::Client::open(demo.kv_url()?)?;
    let mut rng = demo.rng(0);
    let run = format!("{:x}{:04x}", demo.seed, rng.u16(..));
    let mut config = LeaseConfig::new(format!("idgen:{run}:"));
    config.ttl = ttl;

    let mut report = demo.report("snowflake-ids", "64-bit IDs from leased node ids, with clocks stepped back");
    report.line("layout", "41-bit ms since 2024-01-01 | 10-bit node | 12-bit sequence");
    report.line("key prefix", &config.prefix);
    report.line("nodes", nodes);
    report.line("IDs per node", thousands(per_node));
    report.line("lease ttl", format!("{} (renewed every {})", format_duration(ttl), format_duration(ttl / 3)));
    report.line("regression bound", format!("{bound} ms: waited out up to it, refused beyond"));

    // 1. Leases: every worker scans from node 0 at once, so they contend for each id.
    report.section("node-id leases");
    let mut acquiring = Vec::new();
    for worker in 0..nodes {
        let (client, config) = (client.clone(), config.clone());
        acquiring.push(tokio::spawn(async move {
            let clock = Arc::new(SteppableClock::new());
            let lease = NodeLease::acquire_any(&client, &config, 0, &format!("worker-{worker}"), clock.clone()).await;
            lease.map(|lease| (lease, clock))
        }));
    }
    let mut leases = Vec::new();
    for task in acquiring {
        leases.push(task.await??);
    }
    let mut node_ids: Vec<u16> = leases.iter().map(|(lease, _)| lease.node()).collect();
    report.line("leased node ids", format!("{node_ids:?}"));
    node_ids.sort_unstable();
    node_ids.dedup();
    let distinct = node_ids.len() == nodes;
    let held = leases[0].0.node();
    let contender =
        NodeLease::try_acquire(&client, &config, held, "contender", Arc::new(SteppableClock::new())).await?;
    let contender_refused = contender.is_none();
    report.line(
        format!("contender for node {held}"),
        if contender_refused { "refused: SET NX found the key" } else { "GRANTED (two holders!)" },
    );

    // 2. Issue, with clock steps.
    report.section("issuing, with clocks stepped back");
    let mut workers = Vec::new();
    for (index, (lease, clock)) in leases.into_iter().enumerate() {
        let injections = plan_injections(index, per_node, bound, &mut demo.rng(1 + index as u64));
        let generator = Generator::for_lease(&lease, GeneratorConfig::default());
        let node = lease.node();
        let renewer = lease.spawn_renewer();
        let task = tokio::task::spawn_blocking(move || issue(generator, clock, node, per_node, injections));
        workers.push((task, renewer));
    }
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut released = Vec::new();
    for (task, renewer) in workers {
        let run = task.await?;
        let renewals = (
            renewer.counts().succeeded.load(std::sync::atomic::Ordering::Relaxed),
            renewer.counts().failed.load(std::sync::atomic::Ordering::Relaxed),
        );
        let lease = renewer.stop().await?;
        released.push((lease, run.last_unix_ms));
        runs.push((run, renewals));
    }
    let wall = started.elapsed();
    for (lease, last) in released {
        lease.release(last).await?;
    }

    let batches: Vec<NodeBatch> = runs.iter().map(|(run, _)| run.batch.clone()).collect();
    let found = audit(&batches);
    let rows = runs
        .iter()
        .map(|(run, (renewed, failed))| {
            vec![
                run.batch.node.to_string(),
                thousands(run.batch.ids.len() as u64),
                thousands(per_second(run.batch.ids.len() as u64, run.elapsed)),
                run.stats.sequence_waits.to_string(),
                run.stats.regression_waits.to_string(),
                run.stats.refusals.to_string(),
                format!("{renewed} ok / {failed} failed"),
            ]
        })
        .collect();
    report.table(&["node", "IDs", "IDs/s", "full-ms waits", "regression waits", "refusals", "renewals"], rows);
    report.line("total IDs", thousands(found.total as u64));
    report.line("total rate", format!("{} IDs/s over {wall:.2?}", thousands(per_second(found.total as u64, wall))));
    report.line("layout's limit per node", format!("{} IDs/s", thousands((u64::from(MAX_SEQUENCE) + 1) * 1_000)));
    report.line("duplicates", found.duplicates);
    report.line("order violations", found.order_violations);
    report.line("IDs with a wrong node id", found.wrong_node);

    let (event_rows, events_ok) = clock_events(&runs, bound);
    report.text("");
    report.text("clock steps injected, and how the generator handled each:");
    report.table(&["node", "before ID #", "step back", "seen behind", "handled"], event_rows.rows);

    report.check(distinct, format!("{nodes} workers leased {} distinct node ids", node_ids.len()));
    report.check(contender_refused, format!("a second holder for node {held} was refused"));
    report.check(
        found.duplicates == 0,
        format!("{} duplicates among {} IDs", found.duplicates, thousands(found.total as u64)),
    );
    report.check(found.order_violations == 0, format!("{} per-node order violations", found.order_violations));
    report.check(found.wrong_node == 0, format!("{} IDs carry another node's id", found.wrong_node));
    let stopped: Vec<String> = runs
        .iter()
        .filter_map(|(run, _)| run.stopped.as_ref().map(|e| format!("node {}: {e}", run.batch.node)))
        .collect();
    report.check(
        stopped.is_empty() && runs.iter().all(|(run, _)| run.batch.ids.len() as u64 == per_node),
        if stopped.is_empty() { "every generator issued its quota".to_string() } else { stopped.join("; ") },
    );
    report.check(
        events_ok.small_ok && events_ok.small_seen > 0,
        format!(
            "{} of {} small steps (≤ {bound} ms) seen; every one seen was waited out, none refused",
            events_ok.small_seen, events_ok.small_injected
        ),
    );
    report.check(
        events_ok.big_ok && events_ok.big_seen > 0,
        format!(
            "{} of {} big steps seen; every one seen was refused with a typed error, then issuing resumed",
            events_ok.big_seen, events_ok.big_injected
        ),
    );

    // 3. Handover from a paused holder.
    report.section("handover: a paused holder and its successor");
    let handover_ttl = demo.scale.pick(Duration::from_millis(600), Duration::from_millis(400));
    let mut handover_config = config.clone();
    handover_config.ttl = handover_ttl;
    let outcome = handover(&client, &handover_config, demo.scale.pick(200_000, 50_000)).await?;
    report.line("node id", HANDOVER_NODE);
    report.line("lease ttl", format_duration(handover_ttl));
    report.line("A's clock", format!("{HANDOVER_SKEW_MS} ms ahead of B's"));
    report.line("A issued", format!("{} IDs, last at {} ms", thousands(outcome.a_ids.len() as u64), outcome.a_last_ms));
    report.line("A's published ceiling", format!("{} ms", outcome.a_ceiling_ms));
    report.line("B acquired after", format!("{:.0?} of A not renewing", outcome.takeover_after));
    report.line("B's floor (read from the KV)", format!("{} ms", outcome.b_floor_ms));
    report.line(
        "B's clock at first",
        format!("{} ms behind the floor (the skew, less the time to take over)", outcome.b_behind_ms),
    );
    report.line(
        "B's first ID at",
        format!("{} ms, after waiting {} ms for the floor", outcome.b_first_ms, outcome.b_waited_ms),
    );
    report.line("A on waking", outcome.a_on_waking.clone());
    report.line("A's next renewal", outcome.a_renewal.clone());
    let handover_audit = audit(&[
        NodeBatch { node: HANDOVER_NODE, ids: outcome.a_ids.clone() },
        NodeBatch { node: HANDOVER_NODE, ids: outcome.b_ids.clone() },
    ]);
    report.line("duplicates across A and B", handover_audit.duplicates);
    report.check(outcome.a_refused, format!("A refused to issue after its lease ran out ({})", outcome.a_on_waking));
    report.check(outcome.a_renewal_lost, format!("A's late renewal found B's lease: {}", outcome.a_renewal));
    report.check(
        outcome.b_floor_ms == outcome.a_ceiling_ms && outcome.a_last_ms <= outcome.a_ceiling_ms,
        format!(
            "A's IDs ≤ its ceiling {} = B's floor {} (A's last at {})",
            outcome.a_ceiling_ms, outcome.b_floor_ms, outcome.a_last_ms
        ),
    );
    report.check(
        outcome.b_first_ms > outcome.b_floor_ms,
        format!("B's first ID ({} ms) is above the floor ({} ms)", outcome.b_first_ms, outcome.b_floor_ms),
    );
    report.check(
        handover_is_clean(&handover_audit),
        format!("{} duplicates across the handover", handover_audit.duplicates),
    );

    // Leave nothing behind on a shared server.
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut keys: Vec<String> = runs.iter().map(|(run, _)| config.ceiling_key(run.batch.node)).collect();
    keys.push(config.ceiling_key(HANDOVER_NODE));
    keys.push(config.node_key(HANDOVER_NODE));
    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;

    report.verdict(format!(
        "{} IDs from {nodes} leased nodes with {} clock steps: no duplicate, no order violation; a paused holder is fenced by its ceiling",
        thousands(found.total as u64),
        events_ok.small_injected + events_ok.big_injected,
    ));
    Ok(report)
}

fn handover_is_clean(found: &IdAudit) -> bool {
    found.is_clean() && found.total > 0
}

/// Three steps per worker, at 1/4, 2/4 and 3/4 of its quota; one of the three is big
/// (which one rotates between workers, so big and small steps meet every phase).
fn plan_injections(worker: usize, per_node: u64, bound: u64, rng: &mut fastrand::Rng) -> Vec<Injection> {
    (1..=3u64)
        .map(|quarter| {
            let big = (worker as u64 + quarter).is_multiple_of(3);
            let step_ms = if big { rng.u64(100..=200) } else { rng.u64(3..=bound.saturating_sub(2).max(3)) };
            Injection { at_issued: per_node * quarter / 4, step_ms }
        })
        .collect()
}

/// A worker: issue `quota` IDs, stepping the clock back where planned, and backing off
/// after each refusal. Runs on a blocking thread.
fn issue(
    mut generator: Generator,
    clock: Arc<SteppableClock>,
    node: u16,
    quota: u64,
    injections: Vec<Injection>,
) -> WorkerRun {
    let mut ids = Vec::with_capacity(usize::try_from(quota).unwrap_or(0));
    let mut pending = injections.iter().peekable();
    let started = Instant::now();
    let mut stopped = None;
    while (ids.len() as u64) < quota {
        if let Some(injection) = pending.next_if(|i| i.at_issued == ids.len() as u64) {
            clock.step_back(injection.step_ms);
        }
        match generator.next_id() {
            Ok(id) => ids.push(id.0),
            Err(IdError::ClockMovedBackwards { .. }) => std::thread::sleep(REFUSAL_BACKOFF),
            Err(other) => {
                stopped = Some(other);
                break;
            }
        }
    }
    WorkerRun {
        batch: NodeBatch { node, ids },
        stats: generator.stats().clone(),
        events: generator.events().to_vec(),
        injections,
        elapsed: started.elapsed(),
        last_unix_ms: generator.last_unix_ms(),
        stopped,
    }
}

struct EventRows {
    rows: Vec<Vec<String>>,
}

#[derive(Default)]
struct EventTally {
    small_injected: usize,
    small_seen: usize,
    small_ok: bool,
    big_injected: usize,
    big_seen: usize,
    big_ok: bool,
}

/// Lines each injected step up with the clock event that began right after it. A step
/// can go unseen: if the worker's thread is descheduled for longer than the step right
/// after making it, the clock has caught up by the time it asks.
fn clock_events(runs: &[(WorkerRun, (u64, u64))], bound: u64) -> (EventRows, EventTally) {
    let mut rows = Vec::new();
    let mut tally = EventTally { small_ok: true, big_ok: true, ..EventTally::default() };
    for (run, _) in runs {
        for injection in &run.injections {
            let big = injection.step_ms > bound;
            let seen = run.events.iter().find(|e| e.issued_before == injection.at_issued);
            let handled = match seen {
                None => "not seen: the clock caught up before the next call".to_string(),
                Some(e) if e.refusals == 0 => format!("waited {} ms", e.waited_ms),
                Some(e) => format!(
                    "refused {}× over {:.0?}, then waited {} ms{}",
                    e.refusals,
                    e.lasted,
                    e.waited_ms,
                    if e.resolved { "" } else { " (never resumed)" }
                ),
            };
            if big {
                tally.big_injected += 1;
            } else {
                tally.small_injected += 1;
            }
            if let Some(e) = seen {
                if big {
                    tally.big_seen += 1;
                    tally.big_ok &= e.refusals > 0 && e.resolved;
                } else {
                    tally.small_seen += 1;
                    tally.small_ok &= e.refusals == 0 && e.waited_ms > 0 && e.resolved;
                }
            }
            rows.push(vec![
                run.batch.node.to_string(),
                thousands(injection.at_issued),
                format!("{} ms", injection.step_ms),
                seen.map_or("-".to_string(), |e| format!("{} ms", e.max_behind_ms)),
                handled,
            ]);
        }
    }
    (EventRows { rows }, tally)
}

/// What the handover part saw.
struct Handover {
    a_ids: Vec<u64>,
    a_last_ms: u64,
    a_ceiling_ms: u64,
    takeover_after: Duration,
    b_floor_ms: u64,
    b_ids: Vec<u64>,
    b_first_ms: u64,
    /// How far B's clock was behind the floor when it first asked (0: not behind).
    b_behind_ms: u64,
    b_waited_ms: u64,
    a_refused: bool,
    a_on_waking: String,
    a_renewal_lost: bool,
    a_renewal: String,
}

/// A leases [`HANDOVER_NODE`] with a clock running ahead, issues `count` IDs, and stops
/// renewing (paused); B polls until the lease is free, takes it, and issues `count`; A
/// wakes and tries to issue and to renew.
async fn handover(client: &redis::Client, config: &LeaseConfig, count: usize) -> Result<Handover, DemoError> {
    let a_clock = Arc::new(SteppableClock::skewed(HANDOVER_SKEW_MS));
    let a_lease =
        NodeLease::try_acquire(client, config, HANDOVER_NODE, "holder-a", a_clock).await?.ok_or_else(|| {
            DemoError::Scenario(format!("node id {HANDOVER_NODE} is already leased under this run's prefix"))
        })?;
    let a_generator = Generator::for_lease(&a_lease, GeneratorConfig::default());
    let a_state = a_lease.state();
    let a_renewer = a_lease.spawn_renewer();
    let (a_generator, a_ids) = issue_blocking(a_generator, count).await?;
    let a_ids = a_ids?;
    // A is now "paused": it neither issues nor renews.
    a_renewer.pause();
    let paused_at = Instant::now();
    let a_ceiling_ms = a_state.ceiling_unix_ms();
    let a_last_ms = a_ids.last().map_or(0, |&id| SnowflakeId(id).unix_ms());

    let b_clock = Arc::new(SteppableClock::new());
    let b_lease = loop {
        if let Some(lease) = NodeLease::try_acquire(client, config, HANDOVER_NODE, "holder-b", b_clock.clone()).await? {
            break lease;
        }
        if paused_at.elapsed() > TAKEOVER_PATIENCE {
            return Err(DemoError::Scenario(format!(
                "B could not take node id {HANDOVER_NODE} within {TAKEOVER_PATIENCE:?} of A pausing: did the lease not expire?"
            )));
        }
        // Polled often, so B takes over within a few ms of the expiry, as a standby
        // would: the clock skew then shows as a wait for A's ceiling.
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let takeover_after = paused_at.elapsed();
    let b_floor_ms = b_lease.floor_unix_ms();
    let b_generator = Generator::for_lease(&b_lease, GeneratorConfig::default());
    let (b_generator, b_ids) = issue_blocking(b_generator, count).await?;
    let b_ids = b_ids?;
    let b_first_ms = b_ids.first().map_or(0, |&id| SnowflakeId(id).unix_ms());
    // Behind the floor shows as a clock event; at the floor millisecond itself it is a
    // plain wait for the next one.
    let b_behind_ms = b_generator.events().first().map_or(0, |e| e.max_behind_ms);
    let b_waited_ms = b_generator.events().iter().map(|e| e.waited_ms).sum::<u64>();

    // A wakes up.
    let mut a_generator = a_generator;
    let woke = a_generator.next_id();
    let a_refused = matches!(woke, Err(IdError::LeaseExpired { .. }) | Err(IdError::LeaseLost { .. }));
    let a_on_waking = match woke {
        Ok(id) => format!("ISSUED {id} after its lease ran out"),
        Err(e) => format!("refused: {e}"),
    };
    let mut a_lease = a_renewer.stop().await?;
    let renewal = a_lease.renew().await;
    let a_renewal_lost = matches!(renewal, Err(LeaseError::Lost { .. }));
    let a_renewal = match renewal {
        Ok(()) => "RENEWED a lease B holds".to_string(),
        Err(e) => format!("{e}"),
    };
    b_lease.release(b_generator.last_unix_ms()).await?;
    Ok(Handover {
        a_ids,
        a_last_ms,
        a_ceiling_ms,
        takeover_after,
        b_floor_ms,
        b_ids,
        b_first_ms,
        b_behind_ms,
        b_waited_ms,
        a_refused,
        a_on_waking,
        a_renewal_lost,
        a_renewal,
    })
}

/// Issues `count` IDs on a blocking thread; hands the generator back for more.
async fn issue_blocking(
    mut generator: Generator,
    count: usize,
) -> Result<(Generator, Result<Vec<u64>, DemoError>), DemoError> {
    Ok(tokio::task::spawn_blocking(move || {
        let mut ids = Vec::with_capacity(count);
        let mut result = Ok(());
        while ids.len() < count {
            match generator.next_id() {
                Ok(id) => ids.push(id.0),
                Err(e) => {
                    result = Err(DemoError::Scenario(format!("node {} stopped issuing: {e}", generator.node())));
                    break;
                }
            }
        }
        (generator, result.map(|()| ids))
    })
    .await?)
}

fn per_second(count: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0
    } else {
        (count as f64 / secs) as u64
    }
}

/// `1234567` as `1,234,567` (the benchmark reports' formatting; counts here stay far
/// below 2^53, where the f64 it takes is exact).
fn thousands(n: u64) -> String {
    minibench::report::thousands(n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(4_096_000), "4,096,000");
    }

    #[test]
    fn every_worker_gets_one_big_step_and_two_small_ones() {
        for worker in 0..8 {
            let plan = plan_injections(worker, 1_000, 10, &mut fastrand::Rng::with_seed(worker as u64));
            assert_eq!(plan.iter().filter(|i| i.step_ms > 10).count(), 1, "{plan:?}");
            assert!(plan.iter().all(|i| i.step_ms >= 3));
            assert_eq!(plan.iter().map(|i| i.at_issued).collect::<Vec<_>>(), vec![250, 500, 750]);
        }
    }
}
