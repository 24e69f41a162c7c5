//! Deterministic simulation: a whole Raft cluster in one thread, with virtual time, a
//! seeded random generator and injected faults, its safety invariants checked after every
//! event and its clients' history checked for linearizability.
//!
//! One seed is one run, exactly: the same seed and options give the same events in the
//! same order, on any machine (the determinism test compares trace hashes). So every
//! failure is a seed, and every report carries the one-line command that replays it:
//!
//! ```text
//! mini sim raft --seed 1234 --nodes 5 --clients 4 --ops 40 --faults all --read-mode read-index
//! MINIRAFT_SIM_SEED=1234 MINIRAFT_SIM_NODES=5 ... cargo test -p miniraft --test sim replay -- --nocapture
//! ```
//!
//! The pieces: [`rng`] (the only randomness), [`network`] (delays, drops, duplicates,
//! reordering, partitions and one-way cuts), [`disk`] (what a crash keeps, torn writes
//! included), [`node`] (the driver loop of `ready.rs` on the virtual disk), [`workload`]
//! (the clients and their history), [`invariants`] (Figure 3's properties and the
//! persistence contract), and [`cluster`] (the event loop and the fault scheduler).
//!
//! ```
//! use miniraft::sim::{run_seed, Faults, SimOptions};
//!
//! let options = SimOptions { seed: 7, nodes: 3, faults: Faults::all(), ..SimOptions::default() };
//! # let options = SimOptions { ops_per_client: 5, ..options };
//! let report = run_seed(&options);
//! assert!(report.passed(), "{report}");
//! ```
//!
//! What it leaves out: performance (virtual time says nothing about real speed: that is
//! the benchmark's job) and the real I/O code (`storage.rs` and `transport.rs` have their
//! own tests; the process test runs the real binary under kill -9).

pub mod cluster;
pub mod disk;
pub mod invariants;
pub mod network;
pub mod node;
pub mod rng;
pub mod workload;

use std::fmt;

use crate::check::{check_kv, CheckBudget, CheckResult};
use crate::config::{Bug, ReadMode};

pub use cluster::{RunStats, Scenario};

/// The most nodes a simulated cluster may have: enough for every interesting quorum shape,
/// few enough that a seed stays fast.
pub const MAX_NODES: usize = 9;

/// The most clients; each has one operation in flight.
pub const MAX_CLIENTS: usize = 64;

/// The most operations per client.
pub const MAX_OPS_PER_CLIENT: usize = 10_000;

/// The largest clock skew `--clock-skew` accepts, in percent either way: a node at -90%
/// still ticks (at a tenth of the rate); at -100% it would never tick again.
pub const MAX_CLOCK_SKEW_PERCENT: u32 = 90;

/// What a simulated run does. Everything else (timeouts, batch sizes, fault rates) the
/// seed draws, so that the seed plus these options replay the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    pub seed: u64,
    /// Cluster size (1 to [`MAX_NODES`]).
    pub nodes: usize,
    pub faults: Faults,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations each client runs (retries after a refusal do not count).
    pub ops_per_client: usize,
    pub read_mode: ReadMode,
    /// Overrides the seed's clock skew: every node's clock runs at a rate drawn from
    /// `100% ± this` (and the clock-skew fault re-draws in that range), even when that
    /// breaks the lease reads' drift budget. `None` is the seed's own choice: ±5–25%, or
    /// within the budget in lease mode, so that a correct configuration passes. It exists
    /// to show that lease reads really depend on that budget (`tests/sim.rs`).
    pub clock_skew_percent: Option<u32>,
    /// Deliberately broken core behaviour; non-empty only with the `broken` feature.
    pub bugs: Vec<Bug>,
    /// Check that a restarted node kept every term and vote it sent (on by default). Off,
    /// a core that sends before it persists is caught only by what that leads to, such as
    /// two leaders in one term: the broken tests show both.
    pub check_persistence: bool,
    /// Keep the last events as readable lines, for the report (slower).
    pub trace: bool,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            seed: 0,
            nodes: 3,
            faults: Faults::all(),
            clients: 4,
            ops_per_client: 100,
            read_mode: ReadMode::ReadIndex,
            clock_skew_percent: None,
            bugs: Vec::new(),
            check_persistence: true,
            trace: false,
        }
    }
}

impl SimOptions {
    /// Checks the options; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(format!("--nodes must be 1 to {MAX_NODES}, not {}", self.nodes));
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return Err(format!("--clients must be 1 to {MAX_CLIENTS}, not {}", self.clients));
        }
        if self.ops_per_client > MAX_OPS_PER_CLIENT {
            return Err(format!("--ops must be at most {MAX_OPS_PER_CLIENT}, not {}", self.ops_per_client));
        }
        if let Some(percent) = self.clock_skew_percent.filter(|p| *p > MAX_CLOCK_SKEW_PERCENT) {
            return Err(format!("--clock-skew must be 0 to {MAX_CLOCK_SKEW_PERCENT} (percent), not {percent}"));
        }
        if !self.bugs.is_empty() && !cfg!(feature = "broken") {
            return Err("injecting bugs needs miniraft's `broken` cargo feature (test builds only)".into());
        }
        Ok(())
    }

    /// The settings a replay must carry, once for both replay lines: the `mini sim raft`
    /// flag, the `MINIRAFT_SIM_*` variable `tests/sim.rs` reads, and the value.
    fn replay_settings(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut settings = vec![
            ("seed", "SEED", self.seed.to_string()),
            ("nodes", "NODES", self.nodes.to_string()),
            ("clients", "CLIENTS", self.clients.to_string()),
            ("ops", "OPS", self.ops_per_client.to_string()),
            ("faults", "FAULTS", self.faults.to_string()),
            ("read-mode", "READ_MODE", read_mode_name(self.read_mode).to_string()),
        ];
        if let Some(percent) = self.clock_skew_percent {
            settings.push(("clock-skew", "CLOCK_SKEW", percent.to_string()));
        }
        settings
    }

    /// The command that replays this run with the `mini` binary.
    pub fn replay_command(&self) -> String {
        let mut line = String::from("mini sim raft");
        for (flag, _, value) in self.replay_settings() {
            line.push_str(&format!(" --{flag} {value}"));
        }
        if !self.check_persistence {
            line.push_str(" --no-persistence-check");
        }
        for bug in &self.bugs {
            line.push_str(&format!(" --bug {}", bug_name(*bug)));
        }
        line
    }

    /// The same replay through `cargo test` (the `replay` test of `tests/sim.rs`).
    pub fn replay_cargo(&self) -> String {
        let settings: Vec<String> =
            self.replay_settings().into_iter().map(|(_, var, value)| format!("MINIRAFT_SIM_{var}={value}")).collect();
        let mut line = settings.join(" ");
        if !self.check_persistence {
            line.push_str(" MINIRAFT_SIM_PERSISTENCE_CHECK=off");
        }
        if !self.bugs.is_empty() {
            let bugs: Vec<&str> = self.bugs.iter().map(|bug| bug_name(*bug)).collect();
            line.push_str(&format!(" MINIRAFT_SIM_BUG={}", bugs.join(",")));
            line.push_str(" cargo test -p miniraft --features broken --test sim replay -- --nocapture");
        } else {
            line.push_str(" cargo test -p miniraft --test sim replay -- --nocapture");
        }
        line
    }
}

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Messages lost.
    pub drop: bool,
    /// Messages delayed by up to many election timeouts.
    pub delay: bool,
    /// Messages on one link overtaking each other.
    pub reorder: bool,
    /// Messages delivered twice.
    pub duplicate: bool,
    /// The cluster split in two, both ways.
    pub partition: bool,
    /// Links cut in one direction only.
    pub one_way: bool,
    /// Nodes crashing and restarting, losing what was not fsynced.
    pub crash: bool,
    /// A crash during a write keeps a random prefix of it (needs `crash`).
    pub torn_write: bool,
    /// Nodes' clocks running fast or slow, re-drawn during the run (bounded; within the
    /// lease's drift budget in lease read mode, unless `SimOptions::clock_skew_percent`
    /// says otherwise).
    pub clock_skew: bool,
    /// Nodes removed, re-added as learners and promoted.
    pub membership: bool,
    /// Log compaction with small, chunked InstallSnapshot transfers.
    pub snapshot: bool,
    /// Leadership transfers.
    pub transfer: bool,
}

/// Every fault name, in the order `Display` prints them.
const FAULT_NAMES: [&str; 12] = [
    "drop",
    "delay",
    "reorder",
    "duplicate",
    "partition",
    "one-way",
    "crash",
    "torn-write",
    "clock-skew",
    "membership",
    "snapshot",
    "transfer",
];

impl Faults {
    /// Every fault.
    pub fn all() -> Faults {
        Faults {
            drop: true,
            delay: true,
            reorder: true,
            duplicate: true,
            partition: true,
            one_way: true,
            crash: true,
            torn_write: true,
            clock_skew: true,
            membership: true,
            snapshot: true,
            transfer: true,
        }
    }

    /// No faults: the happy path, which must pass too.
    pub fn none() -> Faults {
        Faults::default()
    }

    fn flag(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "drop" => &mut self.drop,
            "delay" => &mut self.delay,
            "reorder" => &mut self.reorder,
            "duplicate" => &mut self.duplicate,
            "partition" => &mut self.partition,
            "one-way" => &mut self.one_way,
            "crash" => &mut self.crash,
            "torn-write" => &mut self.torn_write,
            "clock-skew" => &mut self.clock_skew,
            "membership" => &mut self.membership,
            "snapshot" => &mut self.snapshot,
            "transfer" => &mut self.transfer,
            _ => return None,
        })
    }

    fn get(&self, name: &str) -> bool {
        let mut copy = *self;
        copy.flag(name).is_some_and(|flag| *flag)
    }

    /// Parses a comma-separated list (`drop,partition,crash`), or `all` / `none`. `all`
    /// may be followed by exclusions: `all,-membership`. Underscores read as dashes.
    pub fn parse(list: &str) -> Result<Faults, String> {
        let mut faults = Faults::none();
        for (position, raw) in list.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
            let name = raw.to_ascii_lowercase().replace('_', "-");
            match name.as_str() {
                "all" if position == 0 => faults = Faults::all(),
                "none" if position == 0 => faults = Faults::none(),
                "all" | "none" => return Err(format!("`{name}` must come first in the fault list")),
                _ => {
                    let (enable, bare) = match name.strip_prefix('-') {
                        Some(bare) => (false, bare),
                        None => (true, name.as_str()),
                    };
                    match faults.flag(bare) {
                        Some(flag) => *flag = enable,
                        None => {
                            return Err(format!(
                                "unknown fault `{raw}`; the faults are {}, or all / none",
                                FAULT_NAMES.join(", ")
                            ))
                        }
                    }
                }
            }
        }
        Ok(faults)
    }

    /// Whether any fault needs the fault scheduler (the message faults work per message).
    pub fn any_scheduled(&self) -> bool {
        self.partition || self.one_way || self.crash || self.clock_skew || self.membership || self.transfer
    }
}

impl fmt::Display for Faults {
    /// `all`, `none`, or the names of the enabled faults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Faults::all() {
            return f.write_str("all");
        }
        if *self == Faults::none() {
            return f.write_str("none");
        }
        let names: Vec<&str> = FAULT_NAMES.iter().copied().filter(|name| self.get(name)).collect();
        f.write_str(&names.join(","))
    }
}

/// The name of a bug on the command line.
pub fn bug_name(bug: Bug) -> &'static str {
    match bug {
        Bug::CommitPreviousTermByCounting => "commit-previous-term",
        Bug::VoteBeforePersist => "vote-before-persist",
        Bug::ReadWithoutReadIndex => "read-without-read-index",
    }
}

/// Every bug, for `--bug` help and the broken tests.
pub const BUGS: [Bug; 3] = [Bug::CommitPreviousTermByCounting, Bug::VoteBeforePersist, Bug::ReadWithoutReadIndex];

/// Parses a bug's command-line name.
pub fn parse_bug(name: &str) -> Result<Bug, String> {
    BUGS.iter().copied().find(|bug| bug_name(*bug) == name.trim()).ok_or_else(|| {
        let names: Vec<&str> = BUGS.iter().map(|bug| bug_name(*bug)).collect();
        format!("unknown bug `{name}`; the bugs are {}", names.join(", "))
    })
}

/// The name of a read mode on the command line (the server's `--read-mode` spelling).
pub fn read_mode_name(mode: ReadMode) -> &'static str {
    match mode {
        ReadMode::ReadIndex => "read-index",
        ReadMode::Lease => "lease",
    }
}

/// Parses `read-index` or `lease`.
pub fn parse_read_mode(name: &str) -> Result<ReadMode, String> {
    match name.trim() {
        "read-index" | "readindex" => Ok(ReadMode::ReadIndex),
        "lease" => Ok(ReadMode::Lease),
        other => Err(format!("unknown read mode `{other}`; use read-index or lease")),
    }
}

/// What one seed found.
#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    /// Broken invariants, liveness failures and the linearizability verdict if it failed.
    /// Empty when the run passed.
    pub violations: Vec<String>,
    /// Whether the checker proved the history linearizable (false when it found a
    /// violation, and also when its budget ran out).
    pub linearizable: bool,
    /// The checker's verdict (None when the run stopped at an invariant before checking).
    pub check: Option<CheckResult>,
    /// Operations in the history.
    pub ops: usize,
    /// The `mini` command that replays the run.
    pub replay: String,
    /// The same through `cargo test`.
    pub replay_cargo: String,
    /// A digest of every event in order: equal for two runs of one seed.
    pub trace_hash: u64,
    pub stats: RunStats,
    pub scenario: Scenario,
    /// The nodes' state when the run stopped.
    pub nodes: Vec<String>,
    /// The last events, when `SimOptions::trace` was set.
    pub trace: Vec<String>,
}

impl SeedReport {
    /// Whether the seed found nothing wrong (an undecided checker is not a failure).
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for SeedReport {
    /// A failure as a user reads it: what broke, then how to replay it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        let check = match self.check {
            Some(CheckResult::Linearizable) => "linearizable",
            Some(CheckResult::NotLinearizable) => "NOT linearizable",
            Some(CheckResult::Unknown) => "undecided (the checker's budget ran out)",
            None => "not checked (an invariant broke first)",
        };
        writeln!(
            f,
            "seed {} {verdict}: {} ops, {} events, {:.3}s virtual, {} crashes ({} torn writes), {} partitions, \
             {} one-way cuts, {} transfers, {} membership changes, {} leaders, {} compactions, {} snapshots \
             installed; history {check}",
            self.seed,
            self.ops,
            self.stats.events,
            self.stats.virtual_us as f64 / 1e6,
            self.stats.crashes,
            self.stats.torn_writes,
            self.stats.partitions,
            self.stats.one_way_cuts,
            self.stats.transfers,
            self.stats.membership_changes,
            self.stats.leaders,
            self.stats.compactions,
            self.stats.snapshots_installed,
        )?;
        for violation in &self.violations {
            writeln!(f, "  violation: {violation}")?;
        }
        if !self.passed() {
            writeln!(f, "  scenario: {:?}", self.scenario)?;
            for node in &self.nodes {
                writeln!(f, "  node {node}")?;
            }
            if !self.trace.is_empty() {
                writeln!(f, "  last {} events:", self.trace.len())?;
                for line in &self.trace {
                    writeln!(f, "    {line}")?;
                }
            }
        }
        writeln!(f, "  replay: {}", self.replay)?;
        write!(f, "      or: {}", self.replay_cargo)
    }
}

/// Runs one seed.
pub fn run_seed(options: &SimOptions) -> SeedReport {
    let replay = options.replay_command();
    let replay_cargo = options.replay_cargo();
    if let Err(problem) = options.validate() {
        return SeedReport {
            seed: options.seed,
            violations: vec![format!("invalid options: {problem}")],
            linearizable: false,
            check: None,
            ops: 0,
            replay,
            replay_cargo,
            trace_hash: 0,
            stats: RunStats::default(),
            scenario: Scenario::default(),
            nodes: Vec::new(),
            trace: Vec::new(),
        };
    }
    let mut cluster = cluster::Cluster::new(options);
    cluster.run();
    let mut violations: Vec<String> = cluster.checker.violations().to_vec();
    let mut check = None;
    if violations.is_empty() {
        let report = check_kv(&cluster.workload.history, CheckBudget::default());
        if report.result == CheckResult::NotLinearizable {
            for violation in &report.violations {
                violations.push(format!("linearizability: {violation}"));
            }
            if report.violations.is_empty() {
                violations.push("linearizability: the history has no linearization".into());
            }
        }
        check = Some(report.result);
    }
    SeedReport {
        seed: options.seed,
        linearizable: check == Some(CheckResult::Linearizable),
        violations,
        check,
        ops: cluster.workload.history.len(),
        replay,
        replay_cargo,
        trace_hash: cluster.trace_hash(),
        stats: cluster.stats,
        scenario: cluster.scenario.clone(),
        nodes: cluster.node_summary(),
        trace: cluster.trace_lines(),
    }
}

/// The totals over many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    /// Seeds that found a violation.
    pub violations: u64,
    /// Seeds whose history was proved linearizable.
    pub linearizable: u64,
    /// Operations over all histories.
    pub ops: u64,
    /// The failing seeds' reports.
    pub failures: Vec<SeedReport>,
}

impl Summary {
    /// Adds one seed's report.
    pub fn add(&mut self, report: SeedReport) {
        self.seeds += 1;
        self.ops += report.ops as u64;
        if report.linearizable {
            self.linearizable += 1;
        }
        if !report.passed() {
            self.violations += 1;
            self.failures.push(report);
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seeds={} violations={} linearizable={} ops={}",
            self.seeds, self.violations, self.linearizable, self.ops
        )
    }
}

/// Runs `count` seeds from `start`, with `options` for everything but the seed, calling
/// `each` after every seed (progress bars, early stops are the caller's).
pub fn run_seeds(options: &SimOptions, start: u64, count: u64, mut each: impl FnMut(&SeedReport)) -> Summary {
    let mut summary = Summary::default();
    for seed in start..start.saturating_add(count) {
        let report = run_seed(&SimOptions { seed, ..options.clone() });
        each(&report);
        summary.add(report);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_print_back() {
        assert_eq!(Faults::parse("all"), Ok(Faults::all()));
        assert_eq!(Faults::parse("none"), Ok(Faults::none()));
        assert_eq!(Faults::parse(""), Ok(Faults::none()));
        let some = Faults::parse("drop, partition,one_way,crash").unwrap();
        assert!(some.drop && some.partition && some.one_way && some.crash && !some.delay);
        assert_eq!(some.to_string(), "drop,partition,one-way,crash");
        assert_eq!(Faults::parse(&some.to_string()), Ok(some));
        let most = Faults::parse("all,-membership").unwrap();
        assert!(!most.membership && most.transfer);
        assert_eq!(Faults::parse(&most.to_string()), Ok(most));
        assert!(Faults::parse("drop,bogus").unwrap_err().contains("unknown fault `bogus`"));
        assert!(Faults::parse("drop,all").is_err());
    }

    #[test]
    fn bug_and_read_mode_names_round_trip() {
        for bug in BUGS {
            assert_eq!(parse_bug(bug_name(bug)), Ok(bug));
        }
        assert!(parse_bug("nope").is_err());
        assert_eq!(parse_read_mode("lease"), Ok(ReadMode::Lease));
        assert_eq!(parse_read_mode(read_mode_name(ReadMode::ReadIndex)), Ok(ReadMode::ReadIndex));
        assert!(parse_read_mode("fast").is_err());
    }

    #[test]
    fn bad_options_are_reported_not_run() {
        let report = run_seed(&SimOptions { nodes: 0, ..SimOptions::default() });
        assert!(!report.passed());
        assert!(report.violations[0].contains("--nodes"), "{:?}", report.violations);
    }

    #[test]
    fn the_replay_line_carries_every_option() {
        let options = SimOptions {
            seed: 99,
            nodes: 5,
            clients: 2,
            ops_per_client: 7,
            faults: Faults::parse("drop,crash").unwrap(),
            read_mode: ReadMode::Lease,
            ..SimOptions::default()
        };
        assert_eq!(
            options.replay_command(),
            "mini sim raft --seed 99 --nodes 5 --clients 2 --ops 7 --faults drop,crash --read-mode lease"
        );
        assert!(options.replay_cargo().starts_with("MINIRAFT_SIM_SEED=99 MINIRAFT_SIM_NODES=5"));
        let skewed = SimOptions { clock_skew_percent: Some(60), ..options };
        assert!(skewed.replay_command().ends_with("--read-mode lease --clock-skew 60"), "{}", skewed.replay_command());
        assert!(skewed.replay_cargo().contains(" MINIRAFT_SIM_CLOCK_SKEW=60 "), "{}", skewed.replay_cargo());
    }

    #[test]
    fn an_explicit_clock_skew_sets_the_scenario_and_is_bounded() {
        let options = SimOptions { clock_skew_percent: Some(50), ops_per_client: 5, ..SimOptions::default() };
        let report = run_seed(&options);
        assert_eq!(report.scenario.max_skew_ppm, 500_000, "{report}");
        // Lease mode would otherwise stay within the drift budget; the override wins.
        let lease = run_seed(&SimOptions { read_mode: ReadMode::Lease, ..options.clone() });
        assert_eq!(lease.scenario.max_skew_ppm, 500_000, "{lease}");
        assert!(lease.scenario.pre_vote && lease.scenario.check_quorum);
        let too_much = SimOptions { clock_skew_percent: Some(MAX_CLOCK_SKEW_PERCENT + 1), ..options };
        assert!(too_much.validate().unwrap_err().contains("--clock-skew"));
    }

    #[test]
    fn the_lease_budget_shrinks_with_the_margin() {
        // election 10, lease 8: (9 - 8) / (9 + 8) = 5.9%, 80% of it.
        assert_eq!(cluster::lease_drift_budget_ppm(10, 8), 47_058);
        assert_eq!(cluster::lease_drift_budget_ppm(10, 9), 0);
        assert!(cluster::lease_drift_budget_ppm(20, 8) > 200_000);
    }
}
