//! `mini bench kv`: minikv against redis-server 7.0, side by side, in one run.
//!
//! For each durability setting (persistence off, AOF everysec) a fresh pair of
//! servers is started, then for each pipeline depth (`-P 1`, `-P 16`) the rounds run,
//! alternating between the servers:
//!
//! ```text
//!  round 1: redis  [set get incr lpush lpop sadd zadd hset]  FLUSHALL
//!           minikv [set get incr lpush lpop sadd zadd hset]  FLUSHALL
//!  round 2: redis  [...]                                     FLUSHALL
//!           minikv [...]                                     FLUSHALL
//!  ...
//! ```
//!
//! Alternating matters: a machine slows down and speeds up (thermal limits, other
//! work), and interleaving spreads that over both servers instead of handing it all
//! to whichever ran second. Each test reports the median over the rounds.
//!
//! Then a third, fresh pair (persistence off) is measured for memory: RSS when empty,
//! then RSS and `used_memory` after 1M `SET key:<n> <100 bytes>` through
//! `redis-cli --pipe` (see [`crate::mass_insert`]).
//!
//! Bounded: every redis-benchmark run has a deadline ([`redis_benchmark::deadline`]);
//! a server that dies or stops answering has its remaining runs skipped (and
//! reported); a test that hung is not retried in later rounds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;

use crate::environment::{cores, cpu_model, version_line};
use crate::process::{find_on_path, locate_built};
use crate::redis_benchmark::{self, Failure, Load};
use crate::report::{
    Comparison, Environment, MemoryComparison, MemorySide, Report, Round, Settings, Side, TestComparison,
};
use crate::server::{server_args, Durability, Kind, Ready, ServerProcess};
use crate::{interrupt, BenchError};
use crate::{mass_insert, progress};

/// The redis-benchmark tests, in the order they run (LPOP after LPUSH, GET after SET).
pub const TESTS: [&str; 8] = ["set", "get", "incr", "lpush", "lpop", "sadd", "zadd", "hset"];

/// Concurrent connections of redis-benchmark: enough to keep a server busy.
pub const CLIENTS: u32 = 50;

/// Default client threads of redis-benchmark: `--threads 2`, the command line the
/// benchmark is specified with. In that mode redis-benchmark 7.0 notices the end of a
/// test on a 250 ms timer, so every test's duration is rounded up to a multiple of
/// 250 ms; the default request counts ([`Options::full`]) make each test run for
/// several seconds so that the grid costs a few percent at most, and alike for both
/// servers. `--client-threads 1` runs the classic single-threaded client, whose timing
/// is exact (see [`redis_benchmark::args`]).
pub const CLIENT_THREADS: u32 = 2;

/// Size of each value in the memory test: a typical small cached object.
pub const VALUE_BYTES: usize = 100;

/// How long loading the memory test's keys may take: a healthy server takes seconds.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// How long to let a server settle after a load before reading its RSS, so that
/// allocator caches and lazily freed buffers are counted the same way for both.
const SETTLE: Duration = Duration::from_millis(500);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests per test at `-P 1`.
    pub requests_p1: u64,
    /// Requests per test at `-P 16`.
    pub requests_p16: u64,
    pub rounds: usize,
    /// redis-benchmark's `--threads`; 1 leaves the flag out (single-threaded client).
    pub client_threads: u32,
    /// Keys loaded for the memory comparison.
    pub memory_keys: u64,
    /// The minikv server binary; `None` finds it with [`locate_minikv`].
    pub minikv_bin: Option<PathBuf>,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Options {
    /// The full benchmark: 500k requests a test at -P 1, 5M at -P 16, 3 rounds, 1M
    /// keys. On a 2-core machine a test then lasts 5 to 10 s, so the 250 ms grid of
    /// the threaded client (see [`CLIENT_THREADS`]) moves a figure by 5% at worst;
    /// the whole run takes about 25 minutes.
    pub fn full() -> Options {
        Options {
            requests_p1: 500_000,
            requests_p16: 5_000_000,
            rounds: 3,
            client_threads: CLIENT_THREADS,
            memory_keys: 1_000_000,
            minikv_bin: None,
            progress: true,
        }
    }

    /// A smoke test that finishes in well under a minute: every code path, tiny loads.
    pub fn quick() -> Options {
        Options { requests_p1: 2_000, requests_p16: 20_000, rounds: 1, memory_keys: 20_000, ..Options::full() }
    }

    fn runs(&self) -> [(u32, u64); 2] {
        [(1, self.requests_p1), (16, self.requests_p16)]
    }
}

/// The two durability settings compared, in order.
pub const DURABILITIES: [Durability; 2] = [Durability::Off, Durability::AofEverysec];

/// The external tools, found once.
struct Tools {
    redis_server: PathBuf,
    redis_benchmark: PathBuf,
    redis_cli: PathBuf,
    minikv: PathBuf,
}

/// The minikv binary: `$MINIKV_BIN`, else `minikv` next to the running executable
/// (`cargo build --release -p minikv -p mini-cli` puts both in target/release).
pub fn locate_minikv() -> Result<PathBuf, BenchError> {
    locate_built("minikv", "MINIKV_BIN")
}

fn find_tools(options: &Options) -> Result<Tools, BenchError> {
    let tool = |name: &'static str| find_on_path(name).ok_or(BenchError::ToolMissing { tool: name });
    let minikv = match &options.minikv_bin {
        Some(p) => p.clone(),
        None => locate_minikv()?,
    };
    if !minikv.is_file() {
        return Err(BenchError::MinikvMissing(minikv));
    }
    Ok(Tools {
        redis_server: tool("redis-server")?,
        redis_benchmark: tool("redis-benchmark")?,
        redis_cli: tool("redis-cli")?,
        minikv,
    })
}

/// "7.0.15 (jemalloc-5.3.0)" from `Redis server v=7.0.15 sha=... malloc=jemalloc-5.3.0 ...`.
pub fn parse_redis_version(line: &str) -> Option<String> {
    let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name));
    let version = field("v=")?;
    Some(match field("malloc=") {
        Some(malloc) => format!("{version} ({malloc})"),
        None => version.to_string(),
    })
}

/// Runs the whole comparison. Prints a line or two to stderr on the way (versions,
/// where the binaries are) and a progress bar when asked.
pub fn run(options: &Options) -> Result<Report, BenchError> {
    assert!(options.rounds >= 1, "at least one round");
    assert!(options.client_threads >= 1, "at least one client thread");
    interrupt::install();
    let tools = find_tools(options)?;
    let redis_line = version_line(&tools.redis_server)?;
    let redis_version = parse_redis_version(&redis_line).unwrap_or(redis_line);
    eprintln!("redis-server {redis_version} ({})", tools.redis_server.display());
    if !redis_version.starts_with("7.0.") {
        eprintln!(
            "warning: minikv follows Redis 7.0 and this comparison is meant against redis-server 7.0.x \
             (Debian 12's); found {redis_version}"
        );
    }
    let minikv_version = version_line(&tools.minikv)?;
    eprintln!("{minikv_version} ({})", tools.minikv.display());

    let environment = Environment { redis_version, minikv_version, cpu: cpu_model(), cores: cores() };
    let settings = Settings {
        clients: CLIENTS,
        threads: options.client_threads,
        rounds: options.rounds,
        tests: TESTS.iter().map(|t| t.to_string()).collect(),
        memory_keys: options.memory_keys,
        value_bytes: VALUE_BYTES,
    };

    let steps = DURABILITIES.len() * options.runs().len() * options.rounds * 2 * TESTS.len() + 3;
    let bar = progress::bar(steps, options.progress);
    let scratch = tempfile::Builder::new()
        .prefix("minibench-")
        .tempdir()
        .map_err(BenchError::io("can't create a temporary directory"))?;

    let result = (|| {
        let mut comparisons = Vec::new();
        for durability in DURABILITIES {
            comparisons.extend(compare_throughput(&tools, options, durability, &bar, scratch.path())?);
        }
        let memory = compare_memory(&tools, options, &bar, scratch.path())?;
        Ok(Report::new(environment, settings, comparisons, Some(memory)))
    })();
    bar.finish_and_clear();
    result
}

/// One server of a pair, with the reason it is out of the game if it is.
struct Contender {
    server: ServerProcess,
    /// Set when the server died or stopped answering: its remaining runs are skipped.
    broken: Option<String>,
}

impl Contender {
    /// After a failure: is the server still alive and answering?
    fn check_health(&mut self) {
        if self.broken.is_none() {
            if let Err(e) = self.server.health() {
                self.broken = Some(e);
            }
        }
    }

    fn flush(&mut self) {
        if self.broken.is_none() {
            if let Err(e) = self.server.flushall() {
                self.broken = Some(format!("FLUSHALL failed: {e}"));
            }
        }
    }
}

fn start_pair(tools: &Tools, durability: Durability) -> Result<[Contender; 2], BenchError> {
    let start = |kind: Kind, binary: &Path| {
        ServerProcess::start(kind.name(), binary, |port, dir| server_args(kind, port, durability, dir), Ready::Pong)
    };
    let redis = start(Kind::Redis, &tools.redis_server)?;
    let minikv = start(Kind::Minikv, &tools.minikv)?;
    Ok([Contender { server: redis, broken: None }, Contender { server: minikv, broken: None }])
}

/// The throughput comparisons for one durability setting: one per pipeline depth.
fn compare_throughput(
    tools: &Tools,
    options: &Options,
    durability: Durability,
    bar: &ProgressBar,
    scratch: &Path,
) -> Result<Vec<Comparison>, BenchError> {
    bar.set_message(format!("{}: starting redis-server and minikv", durability.describe()));
    let mut pair = start_pair(tools, durability)?;
    let mut comparisons = Vec::new();
    for (pipeline, requests) in options.runs() {
        // rounds[side][test]: the results so far.
        let mut rounds: [Vec<Vec<Round>>; 2] = std::array::from_fn(|_| vec![Vec::new(); TESTS.len()]);
        let mut hung = [[false; TESTS.len()]; 2];
        for round in 0..options.rounds {
            for (side, contender) in pair.iter_mut().enumerate() {
                contender.flush();
                for (t, test) in TESTS.iter().enumerate() {
                    bar.set_message(format!(
                        "{}, -P {pipeline}, round {}/{}: {} {}",
                        durability.describe(),
                        round + 1,
                        options.rounds,
                        contender.server.name,
                        test.to_uppercase()
                    ));
                    let load = Load { test, requests, pipeline, clients: CLIENTS, threads: options.client_threads };
                    let outcome = run_one(&tools.redis_benchmark, contender, &load, &mut hung[side][t], scratch)?;
                    rounds[side][t].push(outcome);
                    bar.inc(1);
                }
                contender.flush();
            }
        }
        let [redis_rounds, minikv_rounds] = rounds;
        let tests = TESTS
            .iter()
            .zip(redis_rounds.into_iter().zip(minikv_rounds))
            .map(|(test, (r, m))| TestComparison::new(test, Side::from_rounds(r), Side::from_rounds(m)))
            .collect();
        comparisons.push(Comparison { durability, pipeline, requests, tests });
    }
    Ok(comparisons)
}

/// One redis-benchmark run of one test against one server, or the reason it was
/// skipped. `hung` says whether this test already hung against this server in an
/// earlier round (it is then not run again: it would likely hang again, for as long).
fn run_one(
    redis_benchmark: &Path,
    contender: &mut Contender,
    load: &Load<'_>,
    hung: &mut bool,
    scratch: &Path,
) -> Result<Round, BenchError> {
    let skipped = |why: String| Ok(Round { row: None, error: Some(why) });
    if let Some(why) = &contender.broken {
        return skipped(format!("skipped: {why}"));
    }
    if *hung {
        return skipped("skipped: it hung in an earlier round".to_string());
    }
    match redis_benchmark::run(redis_benchmark, contender.server.port, load, scratch)? {
        Ok(row) => Ok(Round { row: Some(row), error: None }),
        Err(failure) => {
            *hung = matches!(failure, Failure::TimedOut(_));
            // An error reply leaves the server healthy; anything else may not have.
            if !matches!(failure, Failure::ServerError(_)) {
                contender.check_health();
            }
            Ok(Round { row: None, error: Some(failure.to_string()) })
        }
    }
}

/// RSS empty and loaded, for a fresh pair with persistence off.
fn compare_memory(
    tools: &Tools,
    options: &Options,
    bar: &ProgressBar,
    scratch: &Path,
) -> Result<MemoryComparison, BenchError> {
    bar.set_message("memory: starting fresh servers");
    let pair = start_pair(tools, Durability::Off)?;
    crate::process::sleep(SETTLE)?;
    let mut sides: [MemorySide; 2] = Default::default();
    for (side, contender) in sides.iter_mut().zip(&pair) {
        match contender.server.rss_bytes() {
            Ok(rss) => side.rss_empty_bytes = Some(rss),
            Err(e) => side.error = Some(format!("can't read RSS: {e}")),
        }
    }

    bar.set_message(format!("memory: writing {} SET commands", options.memory_keys));
    let file = scratch.join("mass-insert.resp");
    {
        let out = std::fs::File::create(&file).map_err(BenchError::io("can't create the mass-insert file"))?;
        mass_insert::write_set_commands(out, options.memory_keys, VALUE_BYTES)?;
    }
    bar.inc(1);

    for (side, contender) in sides.iter_mut().zip(&pair) {
        let name = contender.server.name;
        bar.set_message(format!("memory: loading {} keys into {name}", options.memory_keys));
        let loaded = mass_insert::pipe(&tools.redis_cli, contender.server.port, &file, LOAD_TIMEOUT, scratch)?;
        bar.inc(1);
        if let Err(e) = loaded {
            side.error.get_or_insert(e);
            continue;
        }
        crate::process::sleep(SETTLE)?;
        let server = &contender.server;
        let measured = (|| -> Result<(), String> {
            side.keys_loaded = Some(server.dbsize()?);
            side.rss_loaded_bytes = Some(server.rss_bytes()?);
            side.used_memory_loaded_bytes = Some(server.used_memory()?);
            Ok(())
        })();
        if let Err(e) = measured {
            side.error.get_or_insert(e);
        }
        if side.keys_loaded.is_some_and(|k| k != options.memory_keys) && side.error.is_none() {
            side.error = Some(format!("DBSIZE says {:?} keys after loading {}", side.keys_loaded, options.memory_keys));
        }
    }
    let _ = std::fs::remove_file(&file);
    let [redis, minikv] = sides;
    Ok(MemoryComparison::new(options.memory_keys, VALUE_BYTES, redis, minikv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_redis_version_line() {
        let line = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=e08dbad3e06f3fb";
        assert_eq!(parse_redis_version(line), Some("7.0.15 (jemalloc-5.3.0)".to_string()));
        assert_eq!(parse_redis_version("Redis server v=7.2.4"), Some("7.2.4".to_string()));
        assert_eq!(parse_redis_version("redis-server: command not found"), None);
    }

    #[test]
    fn quick_is_small_and_full_is_the_documented_size() {
        let full = Options::full();
        assert_eq!(
            (full.requests_p1, full.requests_p16, full.rounds, full.memory_keys),
            (500_000, 5_000_000, 3, 1_000_000)
        );
        let quick = Options::quick();
        assert_eq!(quick.rounds, 1);
        assert!(quick.requests_p1 < full.requests_p1 && quick.memory_keys < full.memory_keys);
    }
}
