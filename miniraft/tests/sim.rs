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
use miniraft::sim::{parse_read_mode, run_seed, Faults, SimOptions, Summary};
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
