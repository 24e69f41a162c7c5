//! The `circuit-breaker` scenario: the same open-loop load against the same outage,
//! three times: with naive retries, with a retry budget, and with the budget and a
//! circuit breaker. The upstream counts what it receives.
//!
//! ```text
//!  offered load   200 calls/s, open loop (a call starts every 5 ms, whatever the last did)
//!  upstream       healthy 1 s → slow 1 s (40 ms a call) → failing 2 s (503) → recovered 1.5 s
//!  client         4 attempts, full-jitter backoff 10..100 ms, bulkhead of 6 (20 ms wait)
//!    naive          retries every failure
//!    budget         retries at most 10 % of calls over a 2 s window (+ 2/s)
//!    budget+breaker and a breaker: 5 failures in a row or 50 % of 20 open it for 400 ms
//! ```
//!
//! `Scale::Quick` shortens every phase (and the budget window and the open timeout)
//! to 30 %. Open loop matters: a closed-loop load generator slows down when the
//! upstream does, which hides exactly the amplification this shows. The report has
//! a per-configuration table, the upstream's load over time, the client's latency,
//! and the breaker's transitions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::{decorrelated_jitter, exponential, full_jitter, Backoff, Jitter};
use super::breaker::{BreakerConfig, BreakerStats, State};
use super::client::{BulkheadConfig, CallReport, ClientStats, Protection, ResilientClient, RetryPolicy};
use super::retry_budget::RetryBudgetConfig;
use super::upstream::{Faults, FlakyUpstream};
use crate::framework::histogram::format_duration;
use crate::framework::{Demo, DemoError, LatencyHistogram, Report};

/// Calls started per second, in every configuration and phase.
const OFFERED_PER_SECOND: f64 = 200.0;
const MAX_ATTEMPTS: u32 = 4;
const BULKHEAD_LIMIT: usize = 6;
const BUDGET_RATIO: f64 = 0.1;
const BUDGET_MIN_PER_SECOND: f64 = 2.0;
/// Slack on the budget's amplification bound for calls near the phase's edges (the
/// client and the upstream see the switch a few ms apart).
const EDGE_SLACK: f64 = 0.05;

/// One stretch of the outage, as offsets from the run's start.
#[derive(Clone, Copy, Debug)]
struct Phase {
    name: &'static str,
    faults: Faults,
    starts: Duration,
    ends: Duration,
}

impl Phase {
    fn contains(&self, at: Duration) -> bool {
        at >= self.starts && at < self.ends
    }

    fn length(&self) -> Duration {
        self.ends - self.starts
    }
}

/// The schedule and the protections, at one scale.
struct Plan {
    phases: Vec<Phase>,
    total: Duration,
    /// The width of one row of the load timeline.
    bucket: Duration,
    backoff: Backoff,
    budget: RetryBudgetConfig,
    breaker: BreakerConfig,
}

impl Plan {
    fn new(unit: f64) -> Plan {
        let secs = |s: f64| Duration::from_secs_f64(s * unit);
        let shape = [
            ("healthy", Faults::HEALTHY, 1.0),
            ("slow", Faults::slow(Duration::from_millis(40)), 1.0),
            ("failing", Faults::FAILING, 2.0),
            ("recovered", Faults::HEALTHY, 1.5),
        ];
        let mut phases = Vec::new();
        let mut at = Duration::ZERO;
        for (name, faults, length) in shape {
            let ends = at + secs(length);
            phases.push(Phase { name, faults, starts: at, ends });
            at = ends;
        }
        Plan {
            phases,
            total: at,
            bucket: secs(0.5),
            backoff: Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(100), jitter: Jitter::Full },
            budget: RetryBudgetConfig { window: secs(2.0), ratio: BUDGET_RATIO, min_per_second: BUDGET_MIN_PER_SECOND },
            breaker: BreakerConfig {
                consecutive_failures: 5,
                failure_rate: 0.5,
                window: 20,
                min_calls: 10,
                open_timeout: secs(0.4),
                half_open_max_probes: 2,
                success_threshold: 3,
            },
        }
    }

    fn phase(&self, name: &str) -> Phase {
        match self.phases.iter().find(|p| p.name == name) {
            Some(phase) => *phase,
            None => unreachable!("the plan has no phase {name}"),
        }
    }
}

/// The three configurations compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    NaiveRetries,
    Budget,
    BudgetAndBreaker,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::NaiveRetries, Setup::Budget, Setup::BudgetAndBreaker];

    fn name(self) -> &'static str {
        match self {
            Setup::NaiveRetries => "naive retries",
            Setup::Budget => "retry budget",
            Setup::BudgetAndBreaker => "budget + breaker",
        }
    }

    fn protection(self, plan: &Plan) -> Protection {
        Protection {
            attempt_timeout: Duration::from_secs(1),
            retry: RetryPolicy { max_attempts: MAX_ATTEMPTS, backoff: plan.backoff },
            budget: (self != Setup::NaiveRetries).then_some(plan.budget),
            breaker: (self == Setup::BudgetAndBreaker).then_some(plan.breaker),
            bulkhead: Some(BulkheadConfig { max_concurrent: BULKHEAD_LIMIT, max_wait: Duration::from_millis(20) }),
        }
    }
}

/// One call as the caller saw it.
struct Sample {
    /// When it started, from the run's start.
    arrival: Duration,
    latency: Duration,
    report: CallReport,
}

/// What one configuration's run measured.
struct SetupRun {
    setup: Setup,
    samples: Vec<Sample>,
    /// When each request reached the upstream, from the run's start.
    upstream_arrivals: Vec<Duration>,
    upstream_max_in_flight: usize,
    client: ClientStats,
    breaker: Option<BreakerStats>,
    /// The breaker clock's reading at the run's start (to print transitions on the run's).
    breaker_offset: Duration,
}

impl SetupRun {
    fn offered_in(&self, phase: &Phase) -> usize {
        self.samples.iter().filter(|s| phase.contains(s.arrival)).count()
    }

    fn upstream_in(&self, phase: &Phase) -> usize {
        self.upstream_arrivals.iter().filter(|&&at| phase.contains(at)).count()
    }

    /// Upstream requests per call offered, during `phase`.
    fn amplification(&self, phase: &Phase) -> f64 {
        self.upstream_in(phase) as f64 / self.offered_in(phase).max(1) as f64
    }

    /// The share of calls that started in `phase` and succeeded.
    fn success_in(&self, phase: &Phase) -> f64 {
        let calls: Vec<&Sample> = self.samples.iter().filter(|s| phase.contains(s.arrival)).collect();
        calls.iter().filter(|s| s.report.result.is_ok()).count() as f64 / calls.len().max(1) as f64
    }

    fn latency_in(&self, phase: Option<&Phase>) -> LatencyHistogram {
        let mut histogram = LatencyHistogram::new();
        for sample in self.samples.iter().filter(|s| phase.is_none_or(|p| p.contains(s.arrival))) {
            histogram.record(sample.latency);
        }
        histogram
    }

    fn success_overall(&self) -> f64 {
        self.samples.iter().filter(|s| s.report.result.is_ok()).count() as f64 / self.samples.len().max(1) as f64
    }
}

pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let plan = Plan::new(demo.scale.pick(1.0, 0.3));
    let mut report =
        demo.report("circuit-breaker", "a retry storm against a failing upstream, with a budget and a breaker");
    report.line("offered load", format!("{OFFERED_PER_SECOND} calls/s, open loop"));
    let schedule: Vec<String> =
        plan.phases.iter().map(|p| format!("{} {}", p.name, format_duration(p.length()))).collect();
    report.line("upstream phases", schedule.join(" → "));
    report.line(
        "retries",
        format!(
            "{MAX_ATTEMPTS} attempts, full jitter {}..{}",
            format_duration(plan.backoff.base),
            format_duration(plan.backoff.cap)
        ),
    );
    report.line(
        "retry budget",
        format!(
            "{:.0}% of calls over {} + {BUDGET_MIN_PER_SECOND}/s",
            BUDGET_RATIO * 100.0,
            format_duration(plan.budget.window)
        ),
    );
    let breaker = plan.breaker;
    report.line(
        "breaker",
        format!(
            "opens on {} in a row or {:.0}% of {}; open {}; {} probes, {} to close",
            breaker.consecutive_failures,
            breaker.failure_rate * 100.0,
            breaker.window,
            format_duration(breaker.open_timeout),
            breaker.half_open_max_probes,
            breaker.success_threshold
        ),
    );
    report.line("bulkhead", format!("{BULKHEAD_LIMIT} concurrent attempts, 20 ms wait"));

    let mut runs = Vec::new();
    for (index, setup) in Setup::ALL.into_iter().enumerate() {
        runs.push(run_setup(&demo, &plan, setup, index as u64).await?);
    }

    let failing = plan.phase("failing");
    let healthy = plan.phase("healthy");
    let recovered = plan.phase("recovered");
    let recovered_late = Phase { starts: recovered.starts + recovered.length() / 2, ..recovered };

    report.section("the upstream's load");
    let rows = runs
        .iter()
        .map(|run| {
            vec![
                run.setup.name().to_string(),
                run.samples.len().to_string(),
                run.upstream_arrivals.len().to_string(),
                format!("{:.0}", run.upstream_in(&failing) as f64 / failing.length().as_secs_f64()),
                format!("{:.2}x", run.amplification(&failing)),
                run.client.retries.to_string(),
                run.client.retries_denied_by_budget.to_string(),
                run.client.breaker_rejections.to_string(),
                run.client.bulkhead_rejections.to_string(),
                run.upstream_max_in_flight.to_string(),
            ]
        })
        .collect();
    report.table(
        &[
            "configuration",
            "calls",
            "upstream reqs",
            "failing: req/s",
            "failing: amplification",
            "retries",
            "denied by budget",
            "breaker rejects",
            "bulkhead rejects",
            "max in flight",
        ],
        rows,
    );

    report.section("what the callers saw (success by the phase a call started in)");
    let rows = runs
        .iter()
        .map(|run| {
            let mut failing_latency = run.latency_in(Some(&failing));
            let mut all = run.latency_in(None);
            let mut row = vec![run.setup.name().to_string()];
            row.extend(plan.phases.iter().map(|phase| percent(run.success_in(phase))));
            row.push(percent(run.success_overall()));
            row.push(format_duration(failing_latency.quantile(0.5)));
            row.push(format_duration(all.quantile(0.5)));
            row.push(format_duration(all.quantile(0.99)));
            row
        })
        .collect();
    let mut headers = vec!["configuration"];
    headers.extend(plan.phases.iter().map(|p| p.name));
    headers.extend(["all", "failing: p50", "p50", "p99"]);
    report.table(&headers, rows);

    report.section("upstream load over time (requests/s it received)");
    let mut rows = Vec::new();
    let mut at = Duration::ZERO;
    while at < plan.total {
        let end = (at + plan.bucket).min(plan.total);
        let phase = plan.phases.iter().find(|p| p.contains(at)).map_or("", |p| p.name);
        let mut row = vec![format!("{:.2}–{:.2}s", at.as_secs_f64(), end.as_secs_f64()), phase.to_string()];
        for run in &runs {
            let count = run.upstream_arrivals.iter().filter(|&&a| a >= at && a < end).count();
            row.push(format!("{:.0}", count as f64 / (end - at).as_secs_f64()));
        }
        rows.push(row);
        at = end;
    }
    let mut headers = vec!["time", "phase"];
    headers.extend(runs.iter().map(|r| r.setup.name()));
    report.table(&headers, rows);

    report.section("client-visible latency");
    for run in &runs {
        report.histogram(run.setup.name(), &mut run.latency_in(None));
    }

    let breaker_run = runs.iter().find(|r| r.setup == Setup::BudgetAndBreaker);
    let breaker_stats = breaker_run.and_then(|r| r.breaker.clone());
    if let (Some(run), Some(stats)) = (breaker_run, &breaker_stats) {
        report.section("the breaker's transitions");
        for t in &stats.transitions {
            let at = t.at.saturating_sub(run.breaker_offset);
            report.text(format!("  {:>6.3}s  {:<9} → {:<9}  {}", at.as_secs_f64(), t.from, t.to, t.cause));
        }
        report.line("final state", stats.state);
        report.line(
            "admitted / rejected",
            format!(
                "{} / {} ({} probes, at most {} at once)",
                stats.admitted, stats.rejected, stats.probes, stats.max_probes_in_flight
            ),
        );
    }

    report.section("backoff: 10,000 draws per retry (base 10 ms, cap 100 ms)");
    report.table(
        &["retry", "full: bound", "full: mean", "decorrelated: bound", "decorrelated: mean"],
        jitter_rows(&demo, &plan),
    );

    // The checks.
    let naive = &runs[0];
    let budget = &runs[1];
    let guarded = &runs[2];
    report.check(
        naive.amplification(&failing) >= 0.8 * f64::from(MAX_ATTEMPTS),
        format!(
            "naive retries amplify the failing phase's load {:.2}x (≥ {:.1}x, near max attempts {MAX_ATTEMPTS})",
            naive.amplification(&failing),
            0.8 * f64::from(MAX_ATTEMPTS)
        ),
    );
    // The budget allows ratio × (a window's calls) + the reserve per window. The
    // failing phase is one window long, so that allowance is spent at most twice in
    // it: at the start, and again as the first slot slides out at the end.
    let per_call_allowance = BUDGET_RATIO + BUDGET_MIN_PER_SECOND / OFFERED_PER_SECOND;
    let budget_bound = 1.0 + 2.0 * per_call_allowance + EDGE_SLACK;
    report.check(
        budget.amplification(&failing) <= budget_bound,
        format!(
            "the retry budget holds the failing phase's amplification to {:.2}x (≤ {budget_bound:.2}x)",
            budget.amplification(&failing)
        ),
    );
    report.check(
        guarded.amplification(&failing) <= 0.25,
        format!(
            "with the breaker the upstream gets {:.2} requests per call while failing (≤ 0.25: probes only)",
            guarded.amplification(&failing)
        ),
    );
    let breaker_cycle = breaker_stats.as_ref().is_some_and(|s| {
        s.opened >= 1
            && s.state == State::Closed
            && s.transitions.iter().any(|t| t.from == State::HalfOpen && t.to == State::Closed)
            && s.max_probes_in_flight <= plan.breaker.half_open_max_probes
    });
    report.check(
        breaker_cycle,
        match &breaker_stats {
            Some(s) => format!(
                "the breaker opened {}×, probed (at most {} at once, limit {}), and ended {}",
                s.opened, s.max_probes_in_flight, plan.breaker.half_open_max_probes, s.state
            ),
            None => "the breaker configuration has no breaker".to_string(),
        },
    );
    for run in &runs {
        let limit = BULKHEAD_LIMIT + run.client.timeouts as usize;
        report.check(
            run.upstream_max_in_flight <= limit,
            format!(
                "{}: at most {} requests in the upstream at once (bulkhead {BULKHEAD_LIMIT}, {} timed out)",
                run.setup.name(),
                run.upstream_max_in_flight,
                run.client.timeouts
            ),
        );
    }
    for run in &runs {
        report.check(
            run.success_in(&healthy) >= 0.99 && run.success_in(&recovered_late) >= 0.95,
            format!(
                "{}: {} of calls succeed while healthy (≥ 99%), {} in the second half of recovery (≥ 95%)",
                run.setup.name(),
                percent(run.success_in(&healthy)),
                percent(run.success_in(&recovered_late))
            ),
        );
    }
    let naive_p50 = naive.latency_in(Some(&failing)).quantile(0.5);
    let guarded_p50 = guarded.latency_in(Some(&failing)).quantile(0.5);
    report.check(
        guarded_p50 < naive_p50,
        format!(
            "the breaker fails fast: failing-phase p50 {} against {} with naive retries",
            format_duration(guarded_p50),
            format_duration(naive_p50)
        ),
    );

    report.verdict(format!(
        "during the outage naive retries sent {:.1}x the load, the budget {:.2}x, budget + breaker {:.2}x; all recovered",
        naive.amplification(&failing),
        budget.amplification(&failing),
        guarded.amplification(&failing)
    ));
    Ok(report)
}

/// One configuration against a fresh upstream: the open-loop load through the whole
/// schedule, then every call awaited.
async fn run_setup(demo: &Demo, plan: &Plan, setup: Setup, index: u64) -> Result<SetupRun, DemoError> {
    let upstream = FlakyUpstream::start(demo.seed ^ (index + 1).wrapping_mul(0x9E37_79B9)).await?;
    upstream.set_faults(plan.phases[0].faults);
    let client = Arc::new(ResilientClient::new(upstream.url(), setup.protection(plan), demo.rng(10 + index).u64(..)));
    let client_made = Instant::now();
    // A short lead so the first tick does not fire while this task is still setting up.
    let start = Instant::now() + Duration::from_millis(20);
    let period = Duration::from_secs_f64(1.0 / OFFERED_PER_SECOND);
    let calls = (plan.total.as_secs_f64() * OFFERED_PER_SECOND).round() as usize;
    // Missed ticks fire at once (the default), so the offered count stays the same on
    // a loaded machine; only their spacing suffers.
    let mut ticker = tokio::time::interval_at(start.into(), period);
    let mut phase = 0;
    let mut tasks = Vec::with_capacity(calls);
    for _ in 0..calls {
        ticker.tick().await;
        let arrival = start.elapsed();
        while phase + 1 < plan.phases.len() && arrival >= plan.phases[phase + 1].starts {
            phase += 1;
            upstream.set_faults(plan.phases[phase].faults);
        }
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let report = client.call().await;
            Sample { arrival, latency: began.elapsed(), report }
        }));
    }
    let mut samples = Vec::with_capacity(calls);
    for task in tasks {
        samples.push(task.await?);
    }
    let upstream_arrivals = upstream.arrivals().into_iter().map(|at| at.saturating_duration_since(start)).collect();
    let run = SetupRun {
        setup,
        samples,
        upstream_arrivals,
        upstream_max_in_flight: upstream.max_in_flight(),
        client: client.stats(),
        breaker: client.breaker().map(|b| b.stats()),
        breaker_offset: start.saturating_duration_since(client_made),
    };
    upstream.stop().await;
    Ok(run)
}

/// For retries 1..=4: full jitter's bound and mean, and decorrelated jitter's, each
/// over 10,000 draws (decorrelated as sequences, since each sleep grows from the last).
fn jitter_rows(demo: &Demo, plan: &Plan) -> Vec<Vec<String>> {
    const DRAWS: usize = 10_000;
    const RETRIES: usize = 4;
    let (base, cap) = (plan.backoff.base, plan.backoff.cap);
    let mut rng = demo.rng(99);
    let mut decorrelated_sum = [Duration::ZERO; RETRIES];
    let mut decorrelated_bound = [Duration::ZERO; RETRIES];
    for _ in 0..DRAWS {
        let mut previous = base;
        for retry in 0..RETRIES {
            decorrelated_bound[retry] = decorrelated_bound[retry].max(previous.saturating_mul(3).min(cap));
            previous = decorrelated_jitter(base, cap, previous, &mut rng);
            decorrelated_sum[retry] += previous;
        }
    }
    (0..RETRIES)
        .map(|retry| {
            let bound = exponential(base, cap, retry as u32);
            let full_mean =
                (0..DRAWS).map(|_| full_jitter(base, cap, retry as u32, &mut rng)).sum::<Duration>() / DRAWS as u32;
            vec![
                (retry + 1).to_string(),
                format!("0..{}", format_duration(bound)),
                format_duration(full_mean),
                format!("{}..{}", format_duration(base), format_duration(decorrelated_bound[retry])),
                format_duration(decorrelated_sum[retry] / DRAWS as u32),
            ]
        })
        .collect()
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_covers_its_phases_back_to_back() {
        for unit in [1.0, 0.3] {
            let plan = Plan::new(unit);
            assert_eq!(plan.phases[0].starts, Duration::ZERO);
            for pair in plan.phases.windows(2) {
                assert_eq!(pair[0].ends, pair[1].starts);
            }
            assert_eq!(plan.phases.last().map(|p| p.ends), Some(plan.total));
            let failing = plan.phase("failing").length();
            assert!(plan.breaker.open_timeout < failing / 2, "the breaker must cycle while failing");
            assert!(plan.budget.window >= failing, "the budget check's bound assumes one window covers the outage");
        }
    }
}
