//! `mini bench queue`: miniqueue against beanstalkd 1.12, side by side, in one run,
//! both driven by the same client ([`client`], written here from the protocol text).
//!
//! Every run starts a fresh server on an empty directory, runs the [`cycle`] workload
//! (N clients, each put → reserve → delete in a loop on 100-byte jobs), and kills the
//! server:
//!
//! ```text
//!  round 1: memory   1 client   beanstalkd  miniqueue
//!                   16 clients  beanstalkd  miniqueue
//!                   64 clients  beanstalkd  miniqueue
//!           durable  1 client   ...
//!  round 2: memory   1 client   miniqueue  beanstalkd      (the order rotates)
//!  ...
//! ```
//!
//! The servers alternate, and which goes first rotates from round to round, so a
//! machine that warms up or slows down hurts both alike; each figure is the median over
//! the rounds. Both get beanstalkd's own flags ([`servers`]): nothing for in memory,
//! `-b DIR -f 0` (fsync before every reply) for durable.
//!
//! Fair by construction where it can be: one client implementation, the same jobs, the
//! same connections, the same bounds. Where it cannot be, the report says so: client
//! and servers share the machine (two cores here), beanstalkd runs on one thread and
//! miniqueue on as many as it likes, and the cores-busy table shows which side ran out.
//!
//! Bounded: a run ends at its job count or its time bound ([`Options::max_run`]); one
//! that hangs past that fails; Ctrl-C stops everything; every server is a guarded
//! child process, killed by pid when its run ends, on an error and on Ctrl-C.
//!
//! Left out: delayed jobs, priorities, TTR expiry, retries and the dead-letter queue
//! (all correctness, tested in miniqueue's own suite), bodies other than 100 bytes,
//! other machines.

pub mod client;
pub mod cycle;
pub mod report;
pub mod servers;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;

use self::cycle::{Tubes, Workload};
use self::report::{Comparison, Environment, QueueReport, Run, RunFigures, Settings, SystemRuns};
use self::servers::{Durability, System};
use crate::environment::{cores, cpu_model, data_dir, version_line_with};
use crate::log::cpu;
use crate::process::{find_on_path, locate_built};
use crate::{interrupt, progress, BenchError};

/// The client counts the issue asks for.
pub const CLIENTS: [usize; 3] = [1, 16, 64];

/// The job size the issue asks for.
pub const JOB_BYTES: usize = 100;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The count bound of a run: jobs for all its clients together.
    pub jobs: u64,
    /// The time bound of a run.
    pub max_run: Duration,
    pub rounds: usize,
    /// Client counts, in the order they run.
    pub clients: Vec<usize>,
    pub durabilities: Vec<Durability>,
    /// The systems to run, in [`System::ALL`] order; both for a comparison. One leaves
    /// the ratios and bars unmet, and needs only its own binary.
    pub systems: Vec<System>,
    pub tubes: Tubes,
    /// Commands per write (1: request/reply; more pipelines each client's puts, then
    /// its reserves, then its deletes).
    pub pipeline: usize,
    /// Threads of the client runtime; 1 keeps every client on one core, leaving the
    /// other to the server.
    pub client_threads: usize,
    pub job_bytes: usize,
    /// The miniqueue binary; `None` finds it with [`locate_miniqueue`].
    pub miniqueue_bin: Option<PathBuf>,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Options {
    /// The full benchmark: 3 rounds of both durabilities at 1, 16 and 64 clients, runs
    /// bounded by 200,000 jobs or 5 s: 36 runs, at most three minutes. A durable
    /// beanstalkd hits the time bound (it does hundreds of jobs a second, one fsync
    /// at a time), an in-memory run the count or the time, whichever is first.
    pub fn full() -> Options {
        Options {
            jobs: 200_000,
            max_run: Duration::from_secs(5),
            rounds: 3,
            clients: CLIENTS.to_vec(),
            durabilities: Durability::ALL.to_vec(),
            systems: System::ALL.to_vec(),
            tubes: Tubes::PerClient,
            pipeline: 1,
            client_threads: 1,
            job_bytes: JOB_BYTES,
            miniqueue_bin: None,
            progress: true,
        }
    }

    /// A smoke test of a few seconds: every code path, 640 jobs or 0.5 s per run, one
    /// round.
    pub fn quick() -> Options {
        Options { jobs: 640, max_run: Duration::from_millis(500), rounds: 1, ..Options::full() }
    }

    fn workload(&self, clients: usize) -> Workload {
        Workload {
            clients,
            jobs: self.jobs,
            max_time: self.max_run,
            job_bytes: self.job_bytes,
            tubes: self.tubes,
            pipeline: self.pipeline,
        }
    }
}

/// Why `mini bench queue` could not run at all. A run that fails is not one of these:
/// it is a result, shown in the report.
#[derive(Debug, thiserror::Error)]
pub enum QueueBenchError {
    #[error("`beanstalkd` was not found on PATH; install it (Debian/Ubuntu: apt-get install beanstalkd)")]
    BeanstalkdMissing,

    #[error("the miniqueue binary was not found at {}; build it with `cargo build --release -p miniqueue` (it must sit next to `mini`), or point --miniqueue-bin or MINIQUEUE_BIN at it, or run only beanstalkd with --systems beanstalkd", .0.display())]
    MiniqueueMissing(PathBuf),

    #[error("{0}")]
    BadOptions(String),

    #[error(transparent)]
    Bench(#[from] BenchError),
}

impl QueueBenchError {
    pub fn is_interrupted(&self) -> bool {
        matches!(self, QueueBenchError::Bench(BenchError::Interrupted))
    }
}

/// The miniqueue binary: `$MINIQUEUE_BIN`, else `miniqueue` next to the running
/// executable (`cargo build --release -p miniqueue -p mini-cli` puts both in
/// target/release).
pub fn locate_miniqueue() -> Result<PathBuf, BenchError> {
    locate_built("miniqueue", "MINIQUEUE_BIN")
}

/// The binaries of the systems to run, found once (see [`crate::server::Binaries`]).
type Binaries = crate::server::Binaries<System>;

fn find_binaries(options: &Options) -> Result<Binaries, QueueBenchError> {
    let mut servers = Vec::new();
    for system in System::ALL.into_iter().filter(|s| options.systems.contains(s)) {
        let binary = match system {
            System::Beanstalkd => find_on_path("beanstalkd").ok_or(QueueBenchError::BeanstalkdMissing)?,
            System::Miniqueue => {
                let path = match &options.miniqueue_bin {
                    Some(path) => path.clone(),
                    None => locate_miniqueue()?,
                };
                if !path.is_file() {
                    return Err(QueueBenchError::MiniqueueMissing(path));
                }
                // Absolute: the server runs in its own temporary directory.
                std::path::absolute(&path).map_err(BenchError::io(format!("can't resolve {}", path.display())))?
            }
        };
        // Both print their version with -v, as beanstalkd does.
        let version = version_line_with(&binary, "-v")?;
        eprintln!("{version} ({})", binary.display());
        servers.push((system, binary, version));
    }
    Ok(Binaries { servers })
}

fn check_options(options: &Options) -> Result<(), QueueBenchError> {
    let bad = |why: String| Err(QueueBenchError::BadOptions(why));
    if options.rounds == 0 || options.systems.is_empty() || options.durabilities.is_empty() {
        return bad("at least one round, one system and one durability setting".into());
    }
    if options.clients.is_empty() || options.clients.contains(&0) {
        return bad("client counts are at least 1".into());
    }
    if let Some(&most) = options.clients.iter().max() {
        if options.jobs < most as u64 {
            return bad(format!("{} jobs per run cannot give each of {most} clients one", options.jobs));
        }
    }
    if options.pipeline == 0 || options.client_threads == 0 {
        return bad("a pipeline depth and a client thread count of at least 1".into());
    }
    if options.job_bytes < crate::log::payload::MIN_RECORD_BYTES {
        return bad(format!("jobs of at least {} bytes (each carries a stamp)", crate::log::payload::MIN_RECORD_BYTES));
    }
    Ok(())
}

/// Runs the whole comparison. Prints the versions to stderr on the way, and a
/// progress bar when asked.
pub fn run(options: &Options) -> Result<QueueReport, QueueBenchError> {
    check_options(options)?;
    interrupt::install();
    let binaries = find_binaries(options)?;
    let environment = Environment {
        beanstalkd_version: binaries.version(System::Beanstalkd),
        miniqueue_version: binaries.version(System::Miniqueue),
        cpu: cpu_model(),
        cores: cores(),
        data_dir: data_dir(),
    };
    let steps = options.rounds * options.durabilities.len() * options.clients.len() * options.systems.len();
    let bar = progress::bar(steps, options.progress);
    let result = measure(&binaries, options, &bar);
    bar.finish_and_clear();
    let comparisons = result?;
    let settings = Settings {
        rounds: options.rounds,
        jobs_per_run: options.jobs,
        max_run_seconds: options.max_run.as_secs_f64(),
        job_bytes: options.job_bytes,
        tubes: options.tubes,
        pipeline: options.pipeline,
        client_threads: options.client_threads,
        priority: cycle::PRIORITY,
        ttr: cycle::TTR,
    };
    Ok(QueueReport::new(environment, settings, comparisons))
}

/// Every round of every setting and system, alternating; one [`Comparison`] per
/// durability and client count.
fn measure(binaries: &Binaries, options: &Options, bar: &ProgressBar) -> Result<Vec<Comparison>, BenchError> {
    let systems: Vec<System> = System::ALL.into_iter().filter(|s| options.systems.contains(s)).collect();
    let settings: Vec<(Durability, usize)> =
        options.durabilities.iter().flat_map(|&d| options.clients.iter().map(move |&c| (d, c))).collect();
    // runs[setting][system]: one Run per round so far.
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); systems.len()]; settings.len()];
    for round in 0..options.rounds {
        for (i, &(durability, clients)) in settings.iter().enumerate() {
            for turn in 0..systems.len() {
                let s = (turn + round) % systems.len();
                let system = systems[s];
                let label = format!(
                    "round {}/{}, {}, {clients} client(s), {}",
                    round + 1,
                    options.rounds,
                    durability.name(),
                    system.name()
                );
                bar.set_message(label);
                let run = run_one(system, binaries.of(system), durability, &options.workload(clients), options)?;
                bar.inc(1);
                runs[i][s].push(run);
            }
        }
    }
    Ok(settings
        .iter()
        .zip(runs)
        .map(|(&(durability, clients), per_system)| {
            let sides = systems.iter().zip(per_system).map(|(&system, r)| SystemRuns::new(system, r)).collect();
            Comparison::new(durability, clients, sides)
        })
        .collect())
}

/// One run: a fresh server, the workload, the server killed and its data removed. A
/// failure is a [`Run`] with an error; only Ctrl-C and harness errors are `Err`.
fn run_one(
    system: System,
    binary: &Path,
    durability: Durability,
    workload: &Workload,
    options: &Options,
) -> Result<Run, BenchError> {
    let mut server = match servers::start(system, binary, durability) {
        Ok(server) => server,
        Err(e @ BenchError::ServerStart { .. }) => return Ok(Run::failed(e.to_string())),
        Err(e) => return Err(e),
    };
    let runtime = client_runtime(options.client_threads)?;
    let before = cpu::Sample::take(server.pid());
    let measured = runtime.block_on(cycle::run(server.port, workload));
    let after = cpu::Sample::take(server.pid());
    // Whatever the run left running (a client stuck in reserve) goes with the runtime.
    drop(runtime);
    interrupt::check()?;
    Ok(match measured {
        Ok(measured) => {
            let cores = before.zip(after).and_then(|(before, after)| before.cores_until(&after));
            Run { figures: Some(RunFigures::new(&measured, cores)), error: None }
        }
        Err(e) => Run::failed(match servers::health(&mut server) {
            Ok(()) => e,
            Err(dead) => format!("{e} ({dead})"),
        }),
    })
}

/// The runtime the clients run on: a current-thread one for one thread (every client
/// on one core, the other left to the server), else a multi-threaded one.
fn client_runtime(threads: usize) -> Result<tokio::runtime::Runtime, BenchError> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().map_err(BenchError::io("can't start the client runtime"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_small_and_full_is_the_issues_settings() {
        let full = Options::full();
        assert_eq!((full.rounds, full.job_bytes, full.clients.as_slice()), (3, 100, &[1, 16, 64][..]));
        assert_eq!(full.durabilities, [Durability::Memory, Durability::Durable]);
        let quick = Options::quick();
        assert_eq!(quick.rounds, 1);
        assert!(quick.jobs < full.jobs && quick.max_run < full.max_run);
        assert!(check_options(&quick).is_ok() && check_options(&full).is_ok());
    }

    #[test]
    fn nonsense_options_are_refused() {
        let refused = |change: fn(&mut Options)| {
            let mut o = Options::quick();
            change(&mut o);
            check_options(&o).is_err()
        };
        assert!(refused(|o| o.rounds = 0));
        assert!(refused(|o| o.clients = vec![0]));
        assert!(refused(|o| o.jobs = 63));
        assert!(refused(|o| o.pipeline = 0));
        assert!(refused(|o| o.systems.clear()));
        assert!(refused(|o| o.job_bytes = 4));
    }

    #[test]
    fn names_the_filesystem_under_the_temporary_directory() {
        let dir = data_dir();
        assert!(dir.contains('(') && !dir.contains("unknown"), "{dir}");
    }

    /// The real thing, tiny: a beanstalkd run through the whole harness, when one is
    /// installed.
    #[test]
    fn a_tiny_beanstalkd_only_run_checks_every_job() {
        if find_on_path("beanstalkd").is_none() {
            eprintln!("skipped: beanstalkd is not on PATH (apt-get install beanstalkd)");
            return;
        }
        let options = Options {
            jobs: 200,
            max_run: Duration::from_secs(2),
            clients: vec![1, 4],
            systems: vec![System::Beanstalkd],
            pipeline: 3,
            progress: false,
            ..Options::quick()
        };
        let report = run(&options).expect("the run completes");
        assert_eq!(report.comparisons.len(), 4, "two durabilities x two client counts");
        for c in &report.comparisons {
            let side = &c.systems[0];
            assert!(side.error.is_none(), "{:?} {}: {:?}", c.durability, c.clients, side.error);
            let figures = side.rounds[0].figures.as_ref().expect("figures");
            assert!(figures.jobs > 0 && figures.p99_ms > 0.0, "{figures:?}");
            if figures.stopped_by == cycle::StoppedBy::Count {
                assert_eq!(figures.jobs, 200);
            }
        }
        assert!(report.bars.iter().all(|b| !b.met), "no miniqueue, no bar met");
    }
}
