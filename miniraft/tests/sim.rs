//! The deterministic simulation as CI runs it.
//!
//! - `batch`: as many seeds as fit in `MINIRAFT_SIM_SECONDS` (default 100 s, sized for the
//!   debug build CI uses), alternating 3- and 5-node clusters, every fault on, every fourth
//!   seed with lease reads. It stops starting seeds once the budget is spent, and fails as
//!   "too slow" if that was fewer than [`MIN_SEEDS`]. `MINIRAFT_SIM_START_SEED` moves the
//!   window (default 0, so CI runs the same seeds every time and a red build replays).
//! - `replay`: runs the one seed that `MINIRAFT_SIM_SEED` names (with the other
//!   `MINIRAFT_SIM_*` variables a failure's report prints), with the event trace on, and
//!   prints its report. Without `MINIRAFT_SIM_SEED` it does nothing.
//! - `same_seed_same_run`: one seed twice gives the same trace hash, event for event.
//! - `fault_free_runs_are_linearizable`: with no faults, every seed passes and the checker
//!   proves every history linearizable (a checker that cannot decide easy histories, or a
//!   cluster that cannot serve clients, fails here first).

use std::time::{Duration, Instant};

use miniraft::check::CheckResult;
use miniraft::sim::{parse_read_mode, run_seed, Faults, SeedReport, SimOptions, Summary};
use miniraft::ReadMode;

/// The fewest seeds the batch must get through in its budget.
const MIN_SEEDS: u64 = 50;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

fn env_number(name: &str) -> Option<u64> {
    env(name).map(|value| value.trim().parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// The options of the batch's seed `seed`.
fn batch_options(seed: u64) -> SimOptions {
    SimOptions {
        seed,
        nodes: if seed.is_multiple_of(2) { 3 } else { 5 },
        faults: Faults::all(),
        read_mode: if seed % 4 == 3 { ReadMode::Lease } else { ReadMode::ReadIndex },
        ..SimOptions::default()
    }
}

#[test]
fn batch() {
    let budget = Duration::from_secs(env_number("MINIRAFT_SIM_SECONDS").unwrap_or(100));
    let start_seed = env_number("MINIRAFT_SIM_START_SEED").unwrap_or(0);
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut seed = start_seed;
    while started.elapsed() < budget {
        let report = run_seed(&batch_options(seed));
        if !report.passed() {
            eprintln!("{report}");
        }
        summary.add(report);
        seed += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "sim batch: {summary} (seeds {start_seed}..{seed}, {elapsed:.1}s, {:.2} seeds/s)",
        summary.seeds as f64 / elapsed
    );
    if !summary.failures.is_empty() {
        let replays: Vec<String> = summary.failures.iter().map(|report| report.replay_cargo.clone()).collect();
        panic!("{summary}: the simulation found violations; replay each with:\n{}", replays.join("\n"));
    }
    assert!(
        summary.seeds >= MIN_SEEDS,
        "too slow: only {} seeds ran in {}s (at least {MIN_SEEDS} must); profile a seed with \
         `cargo run --release -p mini-cli -- sim raft --seeds 20`",
        summary.seeds,
        budget.as_secs()
    );
    // Most histories must be decided; an undecided checker proves nothing.
    assert!(
        summary.linearizable * 10 >= summary.seeds * 9,
        "only {} of {} histories were proved linearizable: the checker's budget is too small for them",
        summary.linearizable,
        summary.seeds
    );
}

#[test]
fn replay() {
    let Some(seed) = env_number("MINIRAFT_SIM_SEED") else {
        eprintln!("replay: set MINIRAFT_SIM_SEED (and the other MINIRAFT_SIM_* a report prints) to replay a seed");
        return;
    };
    let defaults = SimOptions::default();
    let faults = env("MINIRAFT_SIM_FAULTS").map_or(Ok(defaults.faults), |list| Faults::parse(&list));
    let read_mode = env("MINIRAFT_SIM_READ_MODE").map_or(Ok(defaults.read_mode), |mode| parse_read_mode(&mode));
    let options = SimOptions {
        seed,
        nodes: env_number("MINIRAFT_SIM_NODES").map_or(defaults.nodes, |n| n as usize),
        clients: env_number("MINIRAFT_SIM_CLIENTS").map_or(defaults.clients, |n| n as usize),
        ops_per_client: env_number("MINIRAFT_SIM_OPS").map_or(defaults.ops_per_client, |n| n as usize),
        faults: faults.unwrap_or_else(|problem| panic!("MINIRAFT_SIM_FAULTS: {problem}")),
        read_mode: read_mode.unwrap_or_else(|problem| panic!("MINIRAFT_SIM_READ_MODE: {problem}")),
        clock_skew_percent: env_number("MINIRAFT_SIM_CLOCK_SKEW").map(|percent| {
            u32::try_from(percent).unwrap_or_else(|_| panic!("MINIRAFT_SIM_CLOCK_SKEW={percent} is out of range"))
        }),
        bugs: bugs_from_env(),
        check_persistence: env("MINIRAFT_SIM_PERSISTENCE_CHECK").is_none_or(|value| value != "off"),
        trace: true,
    };
    let report = run_seed(&options);
    eprintln!("{report}");
    assert!(report.passed(), "seed {seed} failed: {:?}", report.violations);
}

#[cfg(feature = "broken")]
fn bugs_from_env() -> Vec<miniraft::Bug> {
    env("MINIRAFT_SIM_BUG")
        .map(|list| {
            list.split(',')
                .map(|name| {
                    miniraft::sim::parse_bug(name).unwrap_or_else(|problem| panic!("MINIRAFT_SIM_BUG: {problem}"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(not(feature = "broken"))]
fn bugs_from_env() -> Vec<miniraft::Bug> {
    assert!(
        env("MINIRAFT_SIM_BUG").is_none(),
        "MINIRAFT_SIM_BUG needs the broken feature: cargo test -p miniraft --features broken --test sim replay"
    );
    Vec::new()
}

#[test]
fn same_seed_same_run() {
    for nodes in [3, 5] {
        let options = SimOptions { seed: 4242, nodes, ops_per_client: 20, ..SimOptions::default() };
        let first = run_seed(&options);
        let second = run_seed(&options);
        assert!(first.stats.events > 1_000, "the run did something: {first}");
        assert_eq!(first.trace_hash, second.trace_hash, "one seed, two different runs:\n{first}\n{second}");
        assert_eq!(first.ops, second.ops);
        assert_eq!(first.stats.events, second.stats.events);
        // The replay turns the trace on: that must not change the run.
        let traced = run_seed(&SimOptions { trace: true, ..options.clone() });
        assert_eq!(first.trace_hash, traced.trace_hash, "tracing changed the run");
        assert!(!traced.trace.is_empty());
        let other = run_seed(&SimOptions { seed: 4243, ..options });
        assert_ne!(first.trace_hash, other.trace_hash, "the hash does not depend on the run");
    }
}

#[test]
fn fault_free_runs_are_linearizable() {
    for seed in 0..6 {
        let options =
            SimOptions { seed, nodes: 3 + (seed as usize % 2) * 2, faults: Faults::none(), ..SimOptions::default() };
        let report = run_seed(&options);
        assert!(report.passed(), "{report}");
        assert_eq!(report.check, Some(CheckResult::Linearizable), "{report}");
        assert_eq!(report.stats.crashes, 0);
        // Without faults every operation returns (refusals from non-leaders are retried).
        let planned = (options.clients * options.ops_per_client) as u64;
        assert!(report.stats.ops_returned >= planned, "{} of {planned} returned: {report}", report.stats.ops_returned);
    }
}

/// The lease tests' options: lease reads (or ReadIndex, the control) with every clock
/// drawn from 100% ± 80%, far beyond the lease's drift budget of ±4.7% (`election_ticks`
/// 10, `lease_ticks` 8), on 3 nodes under partitions, which isolate leaders (the
/// partition fault itself and its leader churn) so that a new leader is elected while the
/// old one, its clock slow, still trusts its lease. 16 clients, because a stale read needs
/// one client to finish an operation at the new leader and another to read at the old one
/// within that window, while clients that were writing to the old leader are stuck there
/// until they time out.
fn lease_beyond_budget(seed: u64, read_mode: ReadMode) -> SimOptions {
    SimOptions {
        seed,
        nodes: 3,
        clients: 16,
        ops_per_client: 40,
        faults: Faults::parse("partition,clock-skew").expect("fault list"),
        read_mode,
        clock_skew_percent: Some(80),
        ..SimOptions::default()
    }
}

/// The first seed from 1 at which [`lease_beyond_budget`] catches a stale lease read, as
/// `lease_reads_beyond_their_drift_budget_hunt` finds it (2 of seeds 1 to 2,000 catch it).
const LEASE_CATCHING_SEED: u64 = 509;

#[test]
fn lease_reads_beyond_their_drift_budget_are_caught() {
    let report = run_seed(&lease_beyond_budget(LEASE_CATCHING_SEED, ReadMode::Lease));
    assert!(
        !report.passed(),
        "seed {LEASE_CATCHING_SEED} no longer catches lease reads beyond their drift budget: a change to \
         the simulator or the core changed the run. Find the first catching seed with `cargo test --release \
         -p miniraft --test sim lease_reads_beyond_their_drift_budget_hunt -- --ignored --nocapture` and \
         update LEASE_CATCHING_SEED:\n{report}"
    );
    assert!(
        report.violations.iter().any(|v| v.contains("linearizability")),
        "a stale lease read is only visible in the history: {:?}",
        report.violations
    );
    eprintln!("lease reads beyond the drift budget caught by seed {LEASE_CATCHING_SEED}:");
    for violation in &report.violations {
        eprintln!("  {}", violation.lines().next().unwrap_or_default());
    }
    eprintln!("  replay: {}\n      or: {}", report.replay, report.replay_cargo);
    // ReadIndex proves leadership with a round trip, not a clock: the same seed and skew
    // pass.
    let control = run_seed(&lease_beyond_budget(LEASE_CATCHING_SEED, ReadMode::ReadIndex));
    assert!(control.passed(), "ReadIndex fails the same seed and skew, so it was not the lease:\n{control}");
    assert_eq!(control.check, Some(CheckResult::Linearizable), "{control}");
}

/// The hunt behind [`LEASE_CATCHING_SEED`]: seeds from 1 until lease mode fails (at most
/// `MINIRAFT_SIM_LEASE_SEEDS`, 2,000 by default), then every one of those seeds with
/// ReadIndex, which must show no safety violation. About 20 s in release; a debug build
/// needs minutes, so it is not part of the default run.
///
/// Two of seeds 1 to 509 (192 and 255) fail *liveness* with ReadIndex, no safety
/// property: both draw pre-vote off (lease mode forces it on), and their three nodes end
/// in term 1,370 and 1,103 with no leader, an election livelock once clocks run up to 9
/// times apart (Raft's timing assumption, heartbeats well inside the election timeout,
/// stops holding). Their histories are not checked (a run stops at its first violation),
/// so they are printed, not counted as passes.
#[test]
#[ignore = "hunts ~500 seeds in each read mode; run it with --release -- --ignored"]
fn lease_reads_beyond_their_drift_budget_hunt() {
    let max_seeds = env_number("MINIRAFT_SIM_LEASE_SEEDS").unwrap_or(2_000);
    let started = Instant::now();
    let Some(caught) = (1..=max_seeds).find(|&seed| !run_seed(&lease_beyond_budget(seed, ReadMode::Lease)).passed())
    else {
        panic!("lease reads beyond their drift budget were not caught in seeds 1 to {max_seeds}");
    };
    let report = run_seed(&lease_beyond_budget(caught, ReadMode::Lease));
    eprintln!("caught by seed {caught} (seeds 1 to {caught} tried, {:.1}s):", started.elapsed().as_secs_f64());
    for violation in &report.violations {
        eprintln!("  {}", violation.lines().next().unwrap_or_default());
    }
    eprintln!("  replay: {}\n      or: {}", report.replay, report.replay_cargo);
    let mut summary = Summary::default();
    for seed in 1..=caught {
        summary.add(run_seed(&lease_beyond_budget(seed, ReadMode::ReadIndex)));
    }
    eprintln!("the same seeds with ReadIndex: {summary} ({:.1}s in all)", started.elapsed().as_secs_f64());
    let is_liveness = |report: &SeedReport| report.violations.iter().all(|v| v.contains("liveness:"));
    for report in summary.failures.iter().filter(|report| is_liveness(report)) {
        eprintln!(
            "  liveness only (pre_vote={}): {}\n    {}",
            report.scenario.pre_vote,
            report.violations.first().map_or("", |v| v.as_str()).chars().take(160).collect::<String>(),
            report.replay_cargo
        );
    }
    let unsafe_runs: Vec<&str> =
        summary.failures.iter().filter(|report| !is_liveness(report)).map(|r| r.replay_cargo.as_str()).collect();
    assert!(
        unsafe_runs.is_empty(),
        "ReadIndex is unsafe under the same skew; replay with:\n{}",
        unsafe_runs.join("\n")
    );
    assert_eq!(caught, LEASE_CATCHING_SEED, "the first catching seed moved: update LEASE_CATCHING_SEED");
}
