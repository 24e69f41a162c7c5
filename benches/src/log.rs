//! `mini bench log`: minilog against Redis Streams and NATS JetStream, side by side,
//! in one run, each driven by a client we did not write.
//!
//! For each round, each record size (100 B and 1 KiB) and each system, a fresh server
//! is started on an empty directory, one producer writes N records and waits for every
//! acknowledgement, one consumer reads them back from the start, and the server is
//! killed and its directory removed:
//!
//! ```text
//!  round 1: 100 B   minilog [produce, consume]  redis [...]  jetstream [...]
//!           1 KiB   minilog [...]               redis [...]  jetstream [...]
//!  round 2: 100 B   redis [...]  jetstream [...]  minilog [...]     (the order rotates)
//!  ...
//! ```
//!
//! The systems alternate, and the one that goes first rotates from round to round, so
//! a machine that warms up or slows down hurts all three alike; each figure is the
//! median over the rounds. Every record carries its sequence number
//! ([`payload`]), checked again when it is read back, so a fast but lossy run fails
//! instead of winning.
//!
//! | system  | client                         | produce                                | consume                         |
//! |---------|--------------------------------|----------------------------------------|---------------------------------|
//! | minilog | librdkafka ([`kafka`])         | acks=1, linger 5 ms, 1 MB batches      | assign from offset 0, prefetch  |
//! | Redis   | redis-rs ([`redis_streams`])   | pipelined `XADD`                       | `XRANGE ... COUNT 10000`        |
//! | NATS    | async-nats ([`jetstream`])     | async publish, PubAcks in a window     | pull consumer, big batches      |
//!
//! Fair by construction where it can be: the same records, one producer and one
//! consumer each, the same bound on unacknowledged records ([`Options::window`]), the
//! same durability promise (acknowledged once in the page cache; see
//! [`brokers::System::durability`]), compression off everywhere. Where it cannot be, the
//! report says so: the clients differ (each system's own), and so do their costs.
//!
//! Bounded: every phase has a deadline ([`phase_timeout`]) and stops on Ctrl-C; every
//! server is a guarded child process, killed by pid when its run ends.
//!
//! Left out: more producers, consumers or partitions; replication; consumer groups.

pub mod brokers;
pub mod cpu;
pub mod jetstream;
pub mod kafka;
pub mod latency;
pub mod payload;
pub mod phase;
pub mod redis_streams;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;

use self::brokers::{Broker, System};
use self::phase::{Consumed, Produced, Watch, Workload};
use self::report::{ConsumeFigures, Environment, LogReport, ProduceFigures, Run, Settings, SizeComparison, SystemRuns};
use crate::environment::{cores, cpu_model, version_line};
use crate::kv::parse_redis_version;
use crate::process::{find_on_path, locate_built};
use crate::{interrupt, progress, BenchError};

/// The two record sizes, in bytes: a small event and a typical log line or JSON document.
pub const RECORD_SIZES: [usize; 2] = [100, 1024];

/// Default records a producer may have sent and not yet seen acknowledged, for every
/// system: enough for librdkafka to keep two or more 1 MB batches in flight, for Redis
/// to always have the next pipelines queued and for JetStream to stream its PubAcks.
/// On two cores, windows of 50k and 100k records made none of the three measurably
/// faster, only slower to acknowledge (latency is about window / throughput).
pub const WINDOW: u64 = 20_000;

/// The slowest a phase may average before its deadline stops it (records/s); far below
/// what any of the three does on a laptop, so only a hang or a collapse trips it.
const MIN_RATE: u64 = 20_000;

/// Fixed slack on top of a phase's deadline, for connecting and creating topics.
const PHASE_SLACK: Duration = Duration::from_secs(30);

/// The deadline of one produce or consume phase of `records`.
pub fn phase_timeout(records: u64) -> Duration {
    PHASE_SLACK + Duration::from_secs(records.div_ceil(MIN_RATE))
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Records per run at 100 bytes.
    pub small_records: u64,
    /// Records per run at 1 KiB.
    pub large_records: u64,
    pub rounds: usize,
    /// Records any producer may have unacknowledged; see [`WINDOW`].
    pub window: u64,
    /// The systems to run, in [`System::ALL`] order; all three for a comparison. Fewer
    /// leave the missing ratios and bars unmet, and need fewer servers installed.
    pub systems: Vec<System>,
    /// The minilog binary; `None` finds it with [`locate_minilog`].
    pub minilog_bin: Option<PathBuf>,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Options {
    /// The full benchmark: 3M records of 100 B and 600k of 1 KiB per run, 3 rounds: about
    /// four minutes on two cores, three of them spent on Redis and JetStream (at 5M and
    /// 1M it took 6m40s). Even so, minilog's shortest phase lasts about a second.
    pub fn full() -> Options {
        Options {
            small_records: 3_000_000,
            large_records: 600_000,
            rounds: 3,
            window: WINDOW,
            systems: System::ALL.to_vec(),
            minilog_bin: None,
            progress: true,
        }
    }

    /// A smoke test that finishes in well under a minute: every code path, tiny loads.
    pub fn quick() -> Options {
        Options { small_records: 20_000, large_records: 5_000, rounds: 1, ..Options::full() }
    }

    /// (record bytes, records per run), in the order they run.
    pub fn sizes(&self) -> [(usize, u64); 2] {
        [(RECORD_SIZES[0], self.small_records), (RECORD_SIZES[1], self.large_records)]
    }
}

/// Why `mini bench log` could not run at all. A run that fails is not one of these: it
/// is a result, shown in the report.
#[derive(Debug, thiserror::Error)]
pub enum LogBenchError {
    #[error("`{tool}` was not found on PATH; install it (Debian/Ubuntu: apt-get install {package})")]
    ToolMissing { tool: &'static str, package: &'static str },

    #[error("the minilog binary was not found at {}; build it with `cargo build --release -p minilog` (it must sit next to `mini`), or point MINILOG_BIN at it", .0.display())]
    MinilogMissing(PathBuf),

    #[error(transparent)]
    Bench(#[from] BenchError),
}

impl LogBenchError {
    pub fn is_interrupted(&self) -> bool {
        matches!(self, LogBenchError::Bench(BenchError::Interrupted))
    }
}

/// The binaries of the systems to run, found once (see [`crate::server::Binaries`]).
type Binaries = crate::server::Binaries<System>;

/// The minilog binary: `$MINILOG_BIN`, else `minilog` next to the running executable
/// (`cargo build --release -p minilog -p mini-cli` puts both in target/release).
pub fn locate_minilog() -> Result<PathBuf, BenchError> {
    locate_built("minilog", "MINILOG_BIN")
}

fn find_binaries(options: &Options) -> Result<Binaries, LogBenchError> {
    let mut servers = Vec::new();
    for system in System::ALL.into_iter().filter(|s| options.systems.contains(s)) {
        let binary = match system {
            System::Minilog => {
                let minilog = match &options.minilog_bin {
                    Some(path) => path.clone(),
                    None => locate_minilog()?,
                };
                if !minilog.is_file() {
                    return Err(LogBenchError::MinilogMissing(minilog));
                }
                // Absolute: the server runs in its own temporary directory.
                std::path::absolute(&minilog).map_err(BenchError::io(format!("can't resolve {}", minilog.display())))?
            }
            // Debian's packages are named after their servers.
            other => find_on_path(other.binary())
                .ok_or(LogBenchError::ToolMissing { tool: other.binary(), package: other.binary() })?,
        };
        let version = version_line(&binary)?;
        eprintln!("{version} ({})", binary.display());
        servers.push((system, binary, version));
    }
    Ok(Binaries { servers })
}

/// "2.9.10" from `nats-server: v2.9.10`.
pub fn parse_nats_version(line: &str) -> Option<String> {
    let version = line.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    version.starts_with(|c: char| c.is_ascii_digit()).then(|| version.to_string())
}

fn environment(binaries: &Binaries) -> Environment {
    let redis_line = binaries.version(System::RedisStreams);
    let nats_line = binaries.version(System::Jetstream);
    let environment = Environment {
        minilog_version: binaries.version(System::Minilog),
        redis_version: parse_redis_version(&redis_line).unwrap_or(redis_line),
        nats_version: parse_nats_version(&nats_line).unwrap_or(nats_line),
        librdkafka_version: kafka::librdkafka_version(),
        cpu: cpu_model(),
        cores: cores(),
    };
    eprintln!("librdkafka {}", environment.librdkafka_version);
    environment
}

fn settings(options: &Options) -> Settings {
    let pairs = |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Settings {
        rounds: options.rounds,
        window: options.window,
        kafka_producer: pairs(&kafka::PRODUCER_CONFIG),
        kafka_consumer: pairs(&kafka::CONSUMER_CONFIG),
        redis_pipeline: redis_streams::PIPELINE,
        redis_read_batch: redis_streams::READ_BATCH,
        jetstream_pull_batch: jetstream::PULL_BATCH,
    }
}

/// Runs the whole comparison. Prints the versions to stderr on the way, and a
/// progress bar when asked.
pub fn run(options: &Options) -> Result<LogReport, LogBenchError> {
    assert!(options.rounds >= 1, "at least one round");
    assert!(options.window >= 1, "a window of at least one record");
    assert!(!options.systems.is_empty(), "at least one system");
    for (bytes, records) in options.sizes() {
        assert!(records >= 1 && bytes >= payload::MIN_RECORD_BYTES, "{records} records of {bytes} bytes");
    }
    interrupt::install();
    let binaries = find_binaries(options)?;
    let environment = environment(&binaries);

    let steps = options.rounds * options.sizes().len() * options.systems.len() * 2;
    let bar = progress::bar(steps, options.progress);
    let result = measure(&binaries, options, &bar);
    bar.finish_and_clear();
    let sizes = result?;
    Ok(LogReport::new(environment, settings(options), sizes))
}

/// Every round of every size and system, alternating; one [`SizeComparison`] per size.
fn measure(binaries: &Binaries, options: &Options, bar: &ProgressBar) -> Result<Vec<SizeComparison>, BenchError> {
    let systems: Vec<System> = System::ALL.into_iter().filter(|s| options.systems.contains(s)).collect();
    let workloads: Vec<Workload> = options
        .sizes()
        .iter()
        .map(|&(record_bytes, records)| Workload { records, record_bytes, window: options.window })
        .collect();
    // runs[size][system]: one Run per round so far.
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); systems.len()]; workloads.len()];
    for round in 0..options.rounds {
        for (w, workload) in workloads.iter().enumerate() {
            for turn in 0..systems.len() {
                let s = (turn + round) % systems.len();
                let system = systems[s];
                let label =
                    format!("round {}/{}, {} B, {}", round + 1, options.rounds, workload.record_bytes, system.name());
                let run = run_one(system, binaries.of(system), workload, bar, &label)?;
                runs[w][s].push(run);
            }
        }
    }
    Ok(workloads
        .iter()
        .zip(runs)
        .map(|(workload, per_system)| {
            let runs = systems.iter().zip(per_system).map(|(&system, r)| SystemRuns::new(system, r)).collect();
            SizeComparison::new(workload, runs)
        })
        .collect())
}

/// One run: a fresh server, produce, consume, the server killed and its data removed.
/// A failure is a [`Run`] with an error; only Ctrl-C and harness errors are `Err`.
fn run_one(
    system: System,
    binary: &Path,
    workload: &Workload,
    bar: &ProgressBar,
    label: &str,
) -> Result<Run, BenchError> {
    bar.set_message(format!("{label}: starting {}", system.binary()));
    let mut broker = match Broker::start(system, binary) {
        Ok(broker) => broker,
        Err(e @ BenchError::ServerStart { .. }) => {
            bar.inc(2);
            return Ok(Run::failed(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    let mut run = Run::default();
    let timeout = phase_timeout(workload.records);
    let mut watch = Watch::new(bar, format!("{label} produce"), workload.records, timeout);
    let (produced, cores) = counting_cores(&broker, produce(system, broker.server.port, workload, &mut watch))?;
    bar.inc(1);
    match produced {
        Ok(produced) => run.produce = Some(ProduceFigures::new(&produced, workload.record_bytes, cores)),
        Err(e) => {
            bar.inc(1);
            return failed(run, "produce", e, &mut broker);
        }
    }
    let mut watch = Watch::new(bar, format!("{label} consume"), workload.records, timeout);
    let (consumed, cores) = counting_cores(&broker, consume(system, broker.server.port, workload, &mut watch))?;
    bar.inc(1);
    match consumed {
        Ok(consumed) => run.consume = Some(ConsumeFigures::new(&consumed, workload.record_bytes, cores)),
        Err(e) => return failed(run, "consume", e, &mut broker),
    }
    Ok(run)
}

/// Runs one phase with [`in_runtime`], and counts the cores server and harness kept
/// busy meanwhile (`None` when /proc could not be read), to show which side ran out.
fn counting_cores<T>(
    broker: &Broker,
    phase: impl std::future::Future<Output = T>,
) -> Result<(T, Option<cpu::Cores>), BenchError> {
    let before = cpu::Sample::take(broker.server.pid());
    let outcome = in_runtime(phase)?;
    let after = cpu::Sample::take(broker.server.pid());
    Ok((outcome, before.zip(after).and_then(|(before, after)| before.cores_until(&after))))
}

/// Records a failed phase, with the server's state, unless the user pressed Ctrl-C.
fn failed(mut run: Run, phase: &str, error: String, broker: &mut Broker) -> Result<Run, BenchError> {
    interrupt::check()?;
    let error = match broker.health() {
        Ok(()) => format!("{phase}: {error}"),
        Err(dead) => format!("{phase}: {error} ({dead})"),
    };
    run.error = Some(error);
    Ok(run)
}

/// Runs one phase on a fresh single-threaded runtime: the client takes one core at most
/// and leaves the other to the server, and whatever the phase left running (a pipeline
/// task, a connection) is dropped with the runtime when it ends. The client libraries'
/// own log lines (async-nats logs every connect at INFO) are silenced on this thread
/// meanwhile: they would tear through the progress bar, and a phase reports its
/// failures itself.
fn in_runtime<T>(phase: impl std::future::Future<Output = T>) -> Result<T, BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::io("can't start the client runtime"))?;
    let _quiet = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    Ok(runtime.block_on(phase))
}

async fn produce(system: System, port: u16, workload: &Workload, watch: &mut Watch) -> Result<Produced, String> {
    match system {
        System::Minilog => kafka::produce(port, workload, watch).await,
        System::RedisStreams => redis_streams::produce(port, workload, watch).await,
        System::Jetstream => jetstream::produce(port, workload, watch).await,
    }
}

async fn consume(system: System, port: u16, workload: &Workload, watch: &mut Watch) -> Result<Consumed, String> {
    match system {
        System::Minilog => kafka::consume(port, workload, watch).await,
        System::RedisStreams => redis_streams::consume(port, workload, watch).await,
        System::Jetstream => jetstream::consume(port, workload, watch).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_nats_version_line() {
        assert_eq!(parse_nats_version("nats-server: v2.9.10"), Some("2.9.10".to_string()));
        assert_eq!(parse_nats_version("nats-server: version unknown"), None);
    }

    #[test]
    fn quick_is_small_and_full_is_the_documented_size() {
        let full = Options::full();
        assert_eq!((full.small_records, full.large_records, full.rounds), (3_000_000, 600_000, 3));
        assert_eq!(full.sizes(), [(100, 3_000_000), (1024, 600_000)]);
        let quick = Options::quick();
        assert_eq!(quick.rounds, 1);
        assert!(quick.small_records < full.small_records && quick.large_records < full.large_records);
    }

    #[test]
    fn deadlines_grow_with_the_workload() {
        assert_eq!(phase_timeout(0), PHASE_SLACK);
        assert_eq!(phase_timeout(5_000_000), PHASE_SLACK + Duration::from_secs(250));
        assert!(phase_timeout(20_000) < Duration::from_secs(60), "a quick run's phase is bounded tightly");
    }
}
