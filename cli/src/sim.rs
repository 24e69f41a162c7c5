//! `mini sim raft ...`: runs miniraft's deterministic simulation over many seeds, or
//! replays one. The simulator is `miniraft::sim`; this module turns flags into its options
//! and its reports into output.
//!
//! ```text
//! mini sim raft --seeds 500                       seeds 0..500, 3 nodes, every fault
//! mini sim raft --seeds 200 --nodes 5 --faults drop,partition,crash
//! mini sim raft --seed 1234 --nodes 5 --trace     replay one seed and show its last events
//! mini sim raft --seed 509 --clients 16 --ops 40 --faults partition,clock-skew \
//!     --read-mode lease --clock-skew 80           a stale lease read, clocks far beyond
//!                                                 the lease's drift budget
//! ```
//!
//! Every failing seed is printed with the command that replays it, then the summary line
//! `seeds=N violations=V linearizable=L ops=O`. The exit code is 1 if any seed found a
//! violation, 2 for bad flags.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use miniraft::sim::{parse_read_mode, run_seed, Faults, SimOptions, Summary};

#[derive(clap::Subcommand, Debug)]
pub enum SimCommand {
    /// Simulates a miniraft cluster in one thread with virtual time and injected faults:
    /// messages dropped, delayed, reordered and duplicated; partitions and one-way cuts;
    /// crashes that lose unsynced writes, torn writes; clock skew; membership changes,
    /// snapshots and leader transfers. Checks election safety, log matching, leader
    /// completeness, state-machine safety and commit monotonicity after every event, and the
    /// clients' history for linearizability at the end of each seed.
    Raft(RaftArgs),
}

#[derive(clap::Args, Debug)]
pub struct RaftArgs {
    /// How many seeds to run, from --start-seed.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Runs this one seed only (a failure's replay line), with its full report.
    #[arg(long, value_name = "S", conflicts_with_all = ["seeds", "start_seed"])]
    seed: Option<u64>,
    /// The first seed of the batch.
    #[arg(long, value_name = "S", default_value_t = 0)]
    start_seed: u64,
    /// Nodes in the cluster.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=miniraft::sim::MAX_NODES as u64))]
    nodes: u64,
    /// Faults to inject: a comma-separated list of drop, delay, reorder, duplicate,
    /// partition, one-way, crash, torn-write, clock-skew, membership, snapshot, transfer;
    /// or `all`, `none`, or `all,-membership` to leave some out.
    #[arg(long, value_name = "LIST", default_value = "all", value_parser = Faults::parse)]
    faults: Faults,
    /// Concurrent clients.
    #[arg(long, value_name = "N", default_value_t = SimOptions::default().clients as u64, value_parser = clap::value_parser!(u64).range(1..=miniraft::sim::MAX_CLIENTS as u64))]
    clients: u64,
    /// Operations per client.
    #[arg(long, value_name = "N", default_value_t = SimOptions::default().ops_per_client as u64, value_parser = clap::value_parser!(u64).range(0..=miniraft::sim::MAX_OPS_PER_CLIENT as u64))]
    ops: u64,
    /// How leaders serve reads: read-index or lease (clock skew then stays within the
    /// lease's drift budget, unless --clock-skew says otherwise).
    #[arg(long, value_name = "MODE", default_value = "read-index", value_parser = parse_read_mode)]
    read_mode: miniraft::ReadMode,
    /// Overrides the seeds' clock skew: every node's clock runs at 100% ± PERCENT, even in
    /// lease mode beyond the lease's drift budget (which lease reads do not survive; that
    /// is what it is for). Without it, the seed draws ±5–25%, or stays within the budget.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(0..=miniraft::sim::MAX_CLOCK_SKEW_PERCENT as i64))]
    clock_skew: Option<u32>,
    /// Keeps the last events of each run and prints them with a failure (slower).
    #[arg(long)]
    trace: bool,
    /// Stops at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
    /// Skips the check that a restarted node kept every term and vote it sent, so that a
    /// core that sends before persisting is caught only by its consequences.
    #[arg(long)]
    no_persistence_check: bool,
    /// Injects a deliberately broken core behaviour (repeatable): commit-previous-term,
    /// vote-before-persist, read-without-read-index. Test builds only.
    #[cfg(feature = "broken")]
    #[arg(long = "bug", value_name = "BUG", value_parser = miniraft::sim::parse_bug)]
    bugs: Vec<miniraft::Bug>,
}

impl RaftArgs {
    fn options(&self, seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: self.nodes as usize,
            faults: self.faults,
            clients: self.clients as usize,
            ops_per_client: self.ops as usize,
            read_mode: self.read_mode,
            clock_skew_percent: self.clock_skew,
            #[cfg(feature = "broken")]
            bugs: self.bugs.clone(),
            #[cfg(not(feature = "broken"))]
            bugs: Vec::new(),
            check_persistence: !self.no_persistence_check,
            trace: self.trace || self.seed.is_some(),
        }
    }
}

/// Runs the command; returns the process exit code.
pub fn run(command: SimCommand) -> i32 {
    match command {
        SimCommand::Raft(args) => run_raft(&args),
    }
}

fn run_raft(args: &RaftArgs) -> i32 {
    if let Err(problem) = args.options(args.seed.unwrap_or(args.start_seed)).validate() {
        eprintln!("mini sim raft: {problem}");
        return 2;
    }
    let started = Instant::now();
    let summary = match args.seed {
        Some(seed) => {
            let report = run_seed(&args.options(seed));
            println!("{report}");
            let mut summary = Summary::default();
            summary.add(report);
            summary
        }
        None => run_batch(args),
    };
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("{:.1}s, {:.2} seeds/s", elapsed, summary.seeds as f64 / elapsed.max(1e-9));
    println!("{summary}");
    if summary.violations > 0 {
        1
    } else {
        0
    }
}

fn run_batch(args: &RaftArgs) -> Summary {
    let progress = ProgressBar::new(args.seeds);
    progress.set_style(
        ProgressStyle::with_template("{spinner} seeds {pos}/{len} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    for seed in args.start_seed..args.start_seed.saturating_add(args.seeds) {
        let report = run_seed(&args.options(seed));
        progress.inc(1);
        let failed = !report.passed();
        if failed {
            // Each failure prints as soon as it is found, with its replay line.
            progress.suspend(|| println!("{report}"));
        }
        summary.add(report);
        progress.set_message(format!("{} failing", summary.violations));
        if failed && args.fail_fast {
            break;
        }
    }
    progress.finish_and_clear();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: SimCommand,
    }

    fn parse(line: &[&str]) -> Result<RaftArgs, clap::Error> {
        Wrapper::try_parse_from(["sim", "raft"].into_iter().chain(line.iter().copied())).map(|w| match w.command {
            SimCommand::Raft(args) => args,
        })
    }

    #[test]
    fn clock_skew_reaches_the_options_and_the_replay_line() {
        let args = parse(&["--seed", "509", "--read-mode", "lease", "--clock-skew", "80"]).unwrap();
        let options = args.options(509);
        assert_eq!(options.clock_skew_percent, Some(80));
        assert!(options.replay_command().ends_with("--read-mode lease --clock-skew 80"));
        assert_eq!(parse(&[]).unwrap().options(0).clock_skew_percent, None);
        assert!(parse(&["--clock-skew", "91"]).is_err(), "beyond MAX_CLOCK_SKEW_PERCENT");
        assert!(parse(&["--clock-skew", "-5"]).is_err());
    }
}
