//! `mini bench ...`: the side-by-side benchmarks. The harness is `minibench`; this
//! module turns flags into its options and its report into output.

use std::path::PathBuf;

use minibench::log::brokers::System;
use minibench::queue::cycle::Tubes;
use minibench::queue::servers::{Durability, System as QueueSystem};
use minibench::{cache, kv, log, queue, raft, report, BenchError};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// minikv vs redis-server 7.0 with redis-benchmark, persistence off and AOF everysec,
    /// -P 1 and -P 16, plus memory for 1M keys. Needs redis-server, redis-benchmark and
    /// redis-cli on PATH and the minikv binary next to `mini` (or MINIKV_BIN).
    Kv(KvArgs),
    /// minilog vs Redis Streams (redis-server 7.0) vs NATS JetStream (nats-server 2.9):
    /// produce and consume throughput and produce latency for 100-byte and 1 KiB records,
    /// one producer and one consumer, minilog driven by librdkafka. Needs redis-server and
    /// nats-server on PATH and the minilog binary next to `mini` (or MINILOG_BIN).
    Log(LogArgs),
    /// miniqueue vs beanstalkd 1.12: put → reserve → delete cycles of 100-byte jobs from
    /// 1, 16 and 64 clients, in memory and durable (-b DIR -f 0 on both): jobs/s and the
    /// cycle's p50/p99. Needs beanstalkd on PATH and the miniqueue binary next to `mini`
    /// (or --miniqueue-bin, or MINIQUEUE_BIN).
    Queue(QueueArgs),
    /// Hit ratios: minicache (W-TinyLFU, S3-FIFO, LRU) vs moka 0.12, quick_cache 0.7, an
    /// exact LRU and Bélády's optimum, replaying key traces single-threaded and
    /// read-through (get; on a miss, count it and insert).
    ///
    /// Without --trace, the default suite: the LIRS traces loop (at 256, 512, 1024 entries),
    /// glimpse and multi1 (500, 1000, 2000) from --traces-dir, and a seeded Zipf trace (1M
    /// requests over 100k keys, s = 0.9) at 1000 and 10000. With --trace FILE (repeatable),
    /// each file at every --capacity.
    ///
    /// How each cache is set up: minicache with `.max_capacity(N).shards(1)` ("minicache" is
    /// its default policy); moka as `moka::sync::Cache`; quick_cache as `sync::Cache` with
    /// its default sharding. moka applies its reads and writes lazily (every 64 operations or
    /// so), which would blur its policy with its batching, so the replay calls
    /// `run_pending_tasks()` after every request, on moka and on minicache alike. moka and
    /// quick_cache hash with a random seed per cache, which alone moves moka's hit ratio on
    /// glimpse by over ten points; so they are built with seeded hashers (seeds 1..=R) and
    /// every cache but lru and optimal shows the median of R replays.
    ///
    /// Bars (checked and printed): minicache within 0.5 points of the better of moka and
    /// quick_cache on every trace and capacity; on loop at 512, 20 points over LRU; no
    /// replay above the optimum (one that is means the replayer is broken, and the command
    /// fails after printing the report).
    Cache(CacheArgs),
    /// miniraft: a 3-node cluster on loopback, SETs of 100-byte values from 1, 16 and 256
    /// concurrent proposers (one connection each, the `redis` crate) to the leader for
    /// --seconds each: committed writes/s and p50/p99/max latency per level. A write is
    /// acknowledged once committed on a majority (fsynced on each, unless
    /// --unsafe-no-fsync) and applied. Needs the miniraft binary next to `mini` (or
    /// --miniraft-bin, or MINIRAFT_BIN).
    Raft(RaftArgs),
}

#[derive(clap::Args, Debug)]
pub struct KvArgs {
    /// Requests per test at -P 1; -P 16 runs ten times as many [default: 500000, or
    /// 2000 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Rounds per server; each test reports the median [default: 3, or 1 with --quick].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: Option<u64>,
    /// redis-benchmark client threads (--threads T), 2 as the benchmark is specified.
    /// With --threads, redis-benchmark 7.0 rounds each test's duration up to a
    /// multiple of 250 ms, so short runs are coarse; 1 runs its classic
    /// single-threaded client, whose timing is exact.
    #[arg(long, value_name = "T", default_value_t = kv::CLIENT_THREADS, value_parser = clap::value_parser!(u32).range(1..=64))]
    client_threads: u32,
    /// A smoke test: tiny loads, one round, 20000 keys for the memory test.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Records per run at 100 bytes; the 1 KiB runs get a fifth as many [default:
    /// 3000000, or 20000 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(5..))]
    records: Option<u64>,
    /// Rounds per system and size; each figure is the median [default: 3, or 1 with --quick].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: Option<u64>,
    /// Records any producer may have sent but not yet seen acknowledged, the same for
    /// every system.
    #[arg(long, value_name = "W", default_value_t = log::WINDOW, value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    /// The systems to run (comma-separated); fewer than all three leave ratios and bars
    /// unmet.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_system,
          default_value = "minilog,redis-streams,jetstream")]
    systems: Vec<System>,
    /// A smoke test: 20000 records of 100 B and 5000 of 1 KiB, one round.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct QueueArgs {
    /// The count bound of a run: jobs for all its clients together [default: 200000, or
    /// 640 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// The time bound of a run, in seconds; a run ends at whichever bound comes first
    /// [default: 5, or 0.5 with --quick].
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Rounds per system and setting; each figure is the median [default: 3, or 1 with --quick].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: Option<u64>,
    /// Concurrent clients, one connection each (comma-separated).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,16,64",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    clients: Vec<u64>,
    /// Durability settings to run (comma-separated): memory (no -b), durable (-b DIR -f 0).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_durability,
          default_value = "memory,durable")]
    durability: Vec<Durability>,
    /// The systems to run (comma-separated); one alone leaves ratios and bars unmet.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_queue_system,
          default_value = "beanstalkd,miniqueue")]
    systems: Vec<QueueSystem>,
    /// Put every client on one tube instead of a tube each (the contended case; the job
    /// check is weaker).
    #[arg(long)]
    shared_tube: bool,
    /// Commands per write: each client pipelines N puts, then N reserves, then N deletes.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pipeline: u64,
    /// Threads of the client runtime (1 keeps every client on one core).
    #[arg(long, value_name = "T", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    client_threads: u64,
    /// The miniqueue binary [default: $MINIQUEUE_BIN, else `miniqueue` next to `mini`].
    #[arg(long, value_name = "PATH")]
    miniqueue_bin: Option<PathBuf>,
    /// A smoke test: 640 jobs or 0.5 s per run, one round.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    /// A trace to replay: one integer key per line, plain text or gzip (told by its first
    /// bytes, not its name); blank lines are skipped, any other bad line is an error. Repeat
    /// for several. Without it, the default suite runs.
    #[arg(long, value_name = "FILE", requires = "capacity")]
    trace: Vec<PathBuf>,
    /// Cache capacities in entries (comma-separated or repeated), each trace at every one.
    /// Only with --trace: the default suite has its own.
    #[arg(long, value_name = "N", value_delimiter = ',', requires = "trace",
          value_parser = clap::value_parser!(u64).range(1..=cache::lru::MAX_CAPACITY))]
    capacity: Vec<u64>,
    /// Where the default suite finds loop.trace.gz, gli.trace.gz and multi1.trace.gz (read
    /// there, never copied): shared/data/traces beside the repository.
    #[arg(long, value_name = "DIR", conflicts_with = "trace", default_value_os_t = cache::default_traces_dir())]
    traces_dir: PathBuf,
    /// Replays of each cache that varies from one instance to the next (seeds 1..=R); each
    /// figure is their median [default: 9, or 3 with --quick].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..=cache::MAX_REPEATS as u64))]
    repeats: Option<u64>,
    /// A smoke test: 3 replays per cache, and the suite's Zipf trace a tenth the size
    /// (100k requests over 10k keys, at 100 and 1000 entries).
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct RaftArgs {
    /// How long each proposer count runs, in seconds [default: 10, or 1 with --quick].
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Concurrent proposers, one connection each (comma-separated).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,16,256",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    proposers: Vec<u64>,
    /// Start the nodes with --unsafe-no-fsync (etcd's flag): writes reach the OS but are
    /// never fsynced.
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// The miniraft binary [default: $MINIRAFT_BIN, else `miniraft` next to `mini`].
    #[arg(long, value_name = "PATH")]
    miniraft_bin: Option<PathBuf>,
    /// A smoke test: one second per proposer count.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// How a benchmark's report is shown, the same for every benchmark.
#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    /// Print the results as JSON on stdout instead of markdown tables.
    #[arg(long)]
    json: bool,
    /// Also write the markdown tables to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn parse_system(name: &str) -> Result<System, String> {
    System::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
        let names: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
        format!("unknown system '{name}'; expected one of {}", names.join(", "))
    })
}

fn parse_durability(name: &str) -> Result<Durability, String> {
    Durability::ALL.into_iter().find(|d| d.name() == name).ok_or_else(|| {
        let names: Vec<&str> = Durability::ALL.iter().map(|d| d.name()).collect();
        format!("unknown durability '{name}'; expected one of {}", names.join(", "))
    })
}

fn parse_queue_system(name: &str) -> Result<QueueSystem, String> {
    QueueSystem::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
        let names: Vec<&str> = QueueSystem::ALL.iter().map(|s| s.name()).collect();
        format!("unknown system '{name}'; expected one of {}", names.join(", "))
    })
}

/// A positive number of seconds, at most an hour (a bound, not a soak test).
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!("'{text}' is not a number of seconds between 0 and 3600")),
    }
}

/// Runs a benchmark; returns the process exit code.
pub fn run(command: BenchCommand) -> i32 {
    match command {
        BenchCommand::Kv(args) => exit_code("kv", bench_kv(&args), |e| matches!(e, BenchError::Interrupted)),
        BenchCommand::Log(args) => exit_code("log", bench_log(&args), log::LogBenchError::is_interrupted),
        BenchCommand::Queue(args) => exit_code("queue", bench_queue(&args), queue::QueueBenchError::is_interrupted),
        // A replay starts no process and holds nothing to clean up: Ctrl-C just ends it.
        BenchCommand::Cache(args) => exit_code("cache", bench_cache(&args), |_| false),
        BenchCommand::Raft(args) => exit_code("raft", bench_raft(&args), raft::RaftBenchError::is_interrupted),
    }
}

/// 0, or the error on stderr and 130 for a Ctrl-C, 1 for anything else.
fn exit_code<E: std::fmt::Display>(name: &str, result: Result<(), E>, interrupted: fn(&E) -> bool) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mini bench {name}: {e}");
            if interrupted(&e) {
                130
            } else {
                1
            }
        }
    }
}

fn options(args: &KvArgs) -> kv::Options {
    let mut options = if args.quick { kv::Options::quick() } else { kv::Options::full() };
    if let Some(n) = args.requests {
        options.requests_p1 = n;
        options.requests_p16 = n.saturating_mul(10);
    }
    if let Some(r) = args.rounds {
        options.rounds = r as usize;
    }
    options.client_threads = args.client_threads;
    options
}

fn bench_kv(args: &KvArgs) -> Result<(), BenchError> {
    let report = kv::run(&options(args))?;
    emit(|| serde_json::to_string_pretty(&report), &report::render_markdown(&report), &args.output)
}

fn log_options(args: &LogArgs) -> log::Options {
    let mut options = if args.quick { log::Options::quick() } else { log::Options::full() };
    if let Some(n) = args.records {
        options.small_records = n;
        options.large_records = n / 5;
    }
    if let Some(r) = args.rounds {
        options.rounds = r as usize;
    }
    options.window = args.window;
    options.systems = args.systems.clone();
    options
}

fn bench_log(args: &LogArgs) -> Result<(), log::LogBenchError> {
    let report = log::run(&log_options(args))?;
    let markdown = log::report::render_markdown(&report);
    Ok(emit(|| serde_json::to_string_pretty(&report), &markdown, &args.output)?)
}

fn queue_options(args: &QueueArgs) -> queue::Options {
    let mut options = if args.quick { queue::Options::quick() } else { queue::Options::full() };
    if let Some(n) = args.jobs {
        options.jobs = n;
    }
    if let Some(s) = args.seconds {
        options.max_run = std::time::Duration::from_secs_f64(s);
    }
    if let Some(r) = args.rounds {
        options.rounds = r as usize;
    }
    options.clients = args.clients.iter().map(|&c| c as usize).collect();
    options.durabilities = args.durability.clone();
    options.systems = args.systems.clone();
    options.tubes = if args.shared_tube { Tubes::Shared } else { Tubes::PerClient };
    options.pipeline = args.pipeline as usize;
    options.client_threads = args.client_threads as usize;
    options.miniqueue_bin = args.miniqueue_bin.clone();
    options
}

fn bench_queue(args: &QueueArgs) -> Result<(), queue::QueueBenchError> {
    let report = queue::run(&queue_options(args))?;
    let markdown = queue::report::render_markdown(&report);
    Ok(emit(|| serde_json::to_string_pretty(&report), &markdown, &args.output)?)
}

fn cache_options(args: &CacheArgs) -> cache::Options {
    let mut options = match (args.trace.is_empty(), args.quick) {
        (false, _) => cache::Options::files(&args.trace, &args.capacity),
        (true, false) => cache::Options::suite(&args.traces_dir),
        (true, true) => cache::Options::quick_suite(&args.traces_dir),
    };
    if args.quick {
        options.repeats = cache::QUICK_REPEATS;
    }
    if let Some(r) = args.repeats {
        options.repeats = r as usize;
    }
    options
}

fn bench_cache(args: &CacheArgs) -> Result<(), cache::CacheBenchError> {
    let options = cache_options(args);
    if args.trace.is_empty() {
        cache::check_suite_files(&options)?;
    }
    let report = cache::run(&options)?;
    let markdown = cache::report::render_markdown(&report);
    emit(|| cache::report::render_json_lines(&report), &markdown, &args.output)?;
    if args.output.json {
        // The JSON lines carry hit ratios only; the bars go where a person looks.
        eprintln!("{}", cache::report::render_bars_table(&report));
    }
    cache::check_ceiling(&report)
}

fn raft_options(args: &RaftArgs) -> raft::Options {
    let mut options = if args.quick { raft::Options::quick() } else { raft::Options::full() };
    if let Some(s) = args.seconds {
        options.seconds = std::time::Duration::from_secs_f64(s);
    }
    options.proposers = args.proposers.iter().map(|&p| p as usize).collect();
    options.fsync = !args.unsafe_no_fsync;
    options.miniraft_bin = args.miniraft_bin.clone();
    options
}

fn bench_raft(args: &RaftArgs) -> Result<(), raft::RaftBenchError> {
    let report = raft::run(&raft_options(args))?;
    let markdown = raft::render_markdown(&report);
    Ok(emit(|| serde_json::to_string_pretty(&report), &markdown, &args.output)?)
}

/// Prints a report: its JSON (from `to_json`) with `--json`, else the markdown; the
/// markdown also to `--out`.
fn emit(
    to_json: impl FnOnce() -> serde_json::Result<String>,
    markdown: &str,
    output: &OutputArgs,
) -> Result<(), BenchError> {
    if let Some(path) = &output.out {
        std::fs::write(path, markdown).map_err(BenchError::io(format!("can't write {}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    if output.json {
        let json =
            to_json().map_err(|e| BenchError::Io { context: "can't encode the report".into(), source: e.into() })?;
        println!("{json}");
    } else {
        println!("{markdown}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn parse_command(line: &[&str]) -> BenchCommand {
        let argv = std::iter::once("bench").chain(line.iter().copied());
        Wrapper::try_parse_from(argv).map(|w| w.command).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse(line: &[&str]) -> KvArgs {
        match parse_command(line) {
            BenchCommand::Kv(args) => args,
            other => panic!("not kv: {other:?}"),
        }
    }

    fn parse_log(line: &[&str]) -> LogArgs {
        match parse_command(line) {
            BenchCommand::Log(args) => args,
            other => panic!("not log: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_full_benchmark() {
        let o = options(&parse(&["kv"]));
        assert_eq!((o.requests_p1, o.requests_p16, o.rounds, o.memory_keys), (500_000, 5_000_000, 3, 1_000_000));
        assert_eq!(o.client_threads, 2);
        assert_eq!(options(&parse(&["kv", "--client-threads", "1"])).client_threads, 1);
    }

    #[test]
    fn requests_scale_the_pipelined_run_and_quick_can_be_overridden() {
        let o = options(&parse(&["kv", "--requests", "5000", "--rounds", "2"]));
        assert_eq!((o.requests_p1, o.requests_p16, o.rounds), (5000, 50_000, 2));
        let o = options(&parse(&["kv", "--quick", "--rounds", "2"]));
        assert_eq!((o.rounds, o.requests_p1), (2, kv::Options::quick().requests_p1));
    }

    #[test]
    fn zero_rounds_or_requests_are_refused() {
        let refused =
            |line: &[&str]| Wrapper::try_parse_from(std::iter::once("bench").chain(line.iter().copied())).is_err();
        assert!(refused(&["kv", "--rounds", "0"]));
        assert!(refused(&["kv", "--requests", "0"]));
        assert!(refused(&["kv", "--client-threads", "0"]));
    }

    #[test]
    fn log_defaults_are_the_full_benchmark_with_every_system() {
        let o = log_options(&parse_log(&["log"]));
        assert_eq!((o.small_records, o.large_records, o.rounds, o.window), (3_000_000, 600_000, 3, log::WINDOW));
        assert_eq!(o.systems, System::ALL);
        let quick = log_options(&parse_log(&["log", "--quick"]));
        assert_eq!((quick.small_records, quick.rounds), (log::Options::quick().small_records, 1));
    }

    fn parse_queue(line: &[&str]) -> QueueArgs {
        match parse_command(line) {
            BenchCommand::Queue(args) => args,
            other => panic!("not queue: {other:?}"),
        }
    }

    #[test]
    fn queue_defaults_are_the_issues_benchmark() {
        let o = queue_options(&parse_queue(&["queue"]));
        assert_eq!((o.jobs, o.rounds, o.clients.as_slice()), (200_000, 3, &[1, 16, 64][..]));
        assert_eq!(o.durabilities, [Durability::Memory, Durability::Durable]);
        assert_eq!(o.systems, QueueSystem::ALL);
        assert_eq!((o.tubes, o.pipeline, o.client_threads, o.miniqueue_bin), (Tubes::PerClient, 1, 1, None));
        let quick = queue_options(&parse_queue(&["queue", "--quick"]));
        assert_eq!((quick.jobs, quick.rounds), (queue::Options::quick().jobs, 1));
    }

    #[test]
    fn queue_flags_pick_settings_and_bad_ones_are_refused() {
        let o = queue_options(&parse_queue(&[
            "queue",
            "--jobs",
            "100",
            "--seconds",
            "0.25",
            "--clients",
            "2,4",
            "--durability",
            "durable",
            "--systems",
            "beanstalkd",
            "--shared-tube",
            "--pipeline",
            "8",
            "--miniqueue-bin",
            "/x/miniqueue",
        ]));
        assert_eq!(
            (o.jobs, o.max_run, o.clients.as_slice()),
            (100, std::time::Duration::from_millis(250), &[2, 4][..])
        );
        assert_eq!(
            (o.durabilities.as_slice(), o.systems.as_slice()),
            (&[Durability::Durable][..], &[QueueSystem::Beanstalkd][..])
        );
        assert_eq!((o.tubes, o.pipeline), (Tubes::Shared, 8));
        assert_eq!(o.miniqueue_bin.as_deref(), Some(std::path::Path::new("/x/miniqueue")));
        let refused =
            |line: &[&str]| Wrapper::try_parse_from(std::iter::once("bench").chain(line.iter().copied())).is_err();
        assert!(refused(&["queue", "--systems", "redis"]));
        assert!(refused(&["queue", "--durability", "aof"]));
        assert!(refused(&["queue", "--clients", "0"]));
        assert!(refused(&["queue", "--seconds", "0"]));
        assert!(refused(&["queue", "--seconds", "forever"]));
        assert!(refused(&["queue", "--jobs", "0"]));
        assert!(refused(&["queue", "--pipeline", "0"]));
    }

    fn parse_cache(line: &[&str]) -> CacheArgs {
        match parse_command(line) {
            BenchCommand::Cache(args) => args,
            other => panic!("not cache: {other:?}"),
        }
    }

    #[test]
    fn cache_defaults_to_the_suite_and_takes_traces_with_capacities() {
        let o = cache_options(&parse_cache(&["cache"]));
        assert_eq!(o.traces.len(), 4);
        assert_eq!(o.repeats, cache::REPEATS);
        assert_eq!(o.traces[0].source, cache::TraceSource::File(cache::default_traces_dir().join("loop.trace.gz")));
        let o = cache_options(&parse_cache(&["cache", "--quick", "--traces-dir", "/d"]));
        assert_eq!(o.traces[1].source, cache::TraceSource::File(PathBuf::from("/d/gli.trace.gz")));
        assert_eq!(o.repeats, cache::QUICK_REPEATS);
        let o = cache_options(&parse_cache(&[
            "cache",
            "--trace",
            "a.gz",
            "--trace",
            "b",
            "--capacity",
            "10,20",
            "--capacity",
            "30",
            "--repeats",
            "5",
        ]));
        let traces: Vec<(&str, &[u64])> = o.traces.iter().map(|t| (t.name.as_str(), t.capacities.as_slice())).collect();
        assert_eq!(traces, [("a.gz", &[10, 20, 30][..]), ("b", &[10, 20, 30][..])]);
        assert_eq!(o.repeats, 5);
        let refused =
            |line: &[&str]| Wrapper::try_parse_from(std::iter::once("bench").chain(line.iter().copied())).is_err();
        assert!(refused(&["cache", "--trace", "a"]), "a trace needs a capacity");
        assert!(refused(&["cache", "--capacity", "10"]), "the suite has its own capacities");
        assert!(refused(&["cache", "--trace", "a", "--capacity", "0"]));
        assert!(refused(&["cache", "--trace", "a", "--capacity", "x"]));
        assert!(refused(&["cache", "--trace", "a", "--capacity", "1", "--traces-dir", "/d"]));
        assert!(refused(&["cache", "--repeats", "0"]));
    }

    #[test]
    fn log_flags_scale_the_run_and_pick_systems() {
        let o = log_options(&parse_log(&["log", "--records", "1000", "--rounds", "2", "--window", "10"]));
        assert_eq!((o.small_records, o.large_records, o.rounds, o.window), (1000, 200, 2, 10));
        let o = log_options(&parse_log(&["log", "--systems", "redis-streams,jetstream"]));
        assert_eq!(o.systems, [System::RedisStreams, System::Jetstream]);
        let refused =
            |line: &[&str]| Wrapper::try_parse_from(std::iter::once("bench").chain(line.iter().copied())).is_err();
        assert!(refused(&["log", "--systems", "kafka"]));
        assert!(refused(&["log", "--records", "0"]));
        assert!(refused(&["log", "--window", "0"]));
        assert!(refused(&["log", "--rounds", "0"]));
    }
    #[test]
    fn raft_defaults_are_the_issues_benchmark_and_flags_change_them() {
        let parse_raft = |line: &[&str]| match parse_command(line) {
            BenchCommand::Raft(args) => raft_options(&args),
            other => panic!("not raft: {other:?}"),
        };
        let o = parse_raft(&["raft"]);
        assert_eq!((o.seconds.as_secs(), o.proposers.as_slice(), o.fsync), (10, &[1, 16, 256][..], true));
        let o = parse_raft(&["raft", "--quick", "--proposers", "4,8", "--unsafe-no-fsync", "--miniraft-bin", "/x"]);
        assert_eq!((o.seconds.as_secs(), o.proposers.as_slice(), o.fsync), (1, &[4, 8][..], false));
        assert_eq!(o.miniraft_bin.as_deref(), Some(std::path::Path::new("/x")));
        assert_eq!(parse_raft(&["raft", "--seconds", "2.5"]).seconds.as_secs_f64(), 2.5);
        let argv = ["bench", "raft", "--proposers", "0"];
        assert!(Wrapper::try_parse_from(argv).is_err(), "zero proposers is refused");
    }
}
