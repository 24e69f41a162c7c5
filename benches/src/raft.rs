//! `mini bench raft`: a 3-node `miniraft` cluster on loopback, written to by 1, 16 and
//! 256 concurrent proposers, reporting committed writes/s and the latency of each write.
//!
//! ```text
//!  3 x miniraft (server.rs: temp dir, free ports, killed by pid)  ──RAFT.STATUS──> leader?
//!  for each proposer count N:
//!      N connections (redis crate, async), each: SET key value ── +OK ──> latency histogram
//!      for --seconds; then writes/s = acknowledged writes / elapsed
//! ```
//!
//! What an acknowledgement means here: `miniraft` answers `+OK` to a `SET` once the entry
//! is committed (on a majority's log, fsynced on each before it acknowledged, unless
//! `--unsafe-no-fsync`) and applied on the leader. So a write costs a leader fsync and a
//! follower fsync in parallel plus a round trip, and concurrent proposers share both:
//! the leader batches what arrives while its disk is busy (group commit through Raft),
//! which is what the 16 and 256 rows show.
//!
//! Bounded: each level runs for a fixed time, every write has a deadline, the leader
//! wait has a deadline, Ctrl-C stops everything, and the three servers are guarded
//! children killed by pid when the run ends (or fails).
//!
//! Left out: etcd, which a later issue compares side by side with the same client and the
//! same fsync setting; reads (ReadIndex or the lease) and mixed loads; following a leader
//! change during a run (writes to a deposed leader count as errors, and the next level
//! finds the new leader).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::environment::{cores, cpu_model, data_dir, version_line};
use crate::log::latency::Histogram;
use crate::process::locate_built;
use crate::report::thousands;
use crate::server::{free_port, Ready, ServerProcess};
use crate::{interrupt, process, progress, BenchError};

/// The proposer counts the issue asks for.
pub const PROPOSERS: [usize; 3] = [1, 16, 256];

/// The value size of every SET, the same as the other benchmarks' 100-byte records.
pub const VALUE_BYTES: usize = 100;

/// Nodes in the cluster.
pub const NODES: u64 = 3;

/// How long the cluster may take to elect a leader after it starts (the election timeout
/// is 1 s, randomized up to 2 s, and a split vote costs another round).
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The deadline of one SET. A healthy cluster answers in milliseconds; a write that takes
/// this long counts as an error and its proposer moves on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline of a RAFT.STATUS while looking for the leader.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a proposer waits after an error before its next write, so that a cluster
/// without a leader is not hammered by a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long each proposer count runs.
    pub seconds: Duration,
    /// Proposer counts, in the order they run; one connection each.
    pub proposers: Vec<usize>,
    /// fsync on every node (`--unsafe-no-fsync` when false).
    pub fsync: bool,
    /// Bytes per SET value.
    pub value_bytes: usize,
    /// The miniraft binary; `None` finds it with [`locate_miniraft`].
    pub miniraft_bin: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Options {
    /// The benchmark as the issue states it: 10 s at each of 1, 16 and 256 proposers,
    /// fsync on.
    pub fn full() -> Options {
        Options {
            seconds: Duration::from_secs(10),
            proposers: PROPOSERS.to_vec(),
            fsync: true,
            value_bytes: VALUE_BYTES,
            miniraft_bin: None,
            progress: true,
        }
    }

    /// A smoke test: one second per level.
    pub fn quick() -> Options {
        Options { seconds: Duration::from_secs(1), ..Options::full() }
    }
}

/// Why `mini bench raft` could not run at all. A level whose writes fail is not one of
/// these: it is a result, shown in the report.
#[derive(Debug, thiserror::Error)]
pub enum RaftBenchError {
    #[error("the miniraft binary was not found at {}; build it with `cargo build --release -p miniraft` (it must sit next to `mini`), or point --miniraft-bin or MINIRAFT_BIN at it", .0.display())]
    MiniraftMissing(PathBuf),

    #[error("{0}")]
    BadOptions(String),

    #[error("the cluster elected no leader within {} s: {last}", LEADER_TIMEOUT.as_secs())]
    NoLeader { last: String },

    #[error(transparent)]
    Bench(#[from] BenchError),
}

impl RaftBenchError {
    pub fn is_interrupted(&self) -> bool {
        matches!(self, RaftBenchError::Bench(BenchError::Interrupted))
    }
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct RaftReport {
    pub environment: Environment,
    pub settings: Settings,
    /// What a `+OK` promises under these settings.
    pub durability: String,
    /// One per proposer count, in the order they ran.
    pub levels: Vec<Level>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// `miniraft --version`.
    pub miniraft_version: String,
    /// The CPU model, from /proc/cpuinfo.
    pub cpu: String,
    /// Cores shared by the three nodes and the client.
    pub cores: usize,
    /// Where the nodes keep their data, and its filesystem (fsync costs what it costs
    /// there; on tmpfs it costs nothing).
    pub data_dir: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Nodes in the cluster (voters).
    pub nodes: u64,
    /// How long each proposer count ran.
    pub seconds_per_level: f64,
    /// Bytes per SET value.
    pub value_bytes: usize,
    /// Whether the nodes fsynced (false: `--unsafe-no-fsync`).
    pub fsync: bool,
}

/// One proposer count's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// Concurrent proposers, one connection each.
    pub proposers: usize,
    /// The node the writes went to.
    pub leader: u64,
    /// Writes acknowledged with +OK.
    pub writes: u64,
    /// Writes answered with an error or not answered within the deadline.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// From the first write to the last acknowledgement.
    pub seconds: f64,
    /// `writes / seconds`: acknowledged (committed and applied) writes per second.
    pub writes_per_sec: f64,
    /// Latency of an acknowledged SET, from sending it to its +OK (None without any).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The miniraft binary: `$MINIRAFT_BIN`, else `miniraft` next to the running executable
/// (`cargo build --release -p miniraft -p mini-cli` puts both in target/release).
pub fn locate_miniraft() -> Result<PathBuf, BenchError> {
    locate_built("miniraft", "MINIRAFT_BIN")
}

fn check_options(options: &Options) -> Result<(), RaftBenchError> {
    let bad = |why: &str| Err(RaftBenchError::BadOptions(why.to_string()));
    if options.proposers.is_empty() || options.proposers.contains(&0) {
        return bad("at least one proposer count, each at least 1");
    }
    if options.seconds.is_zero() {
        return bad("a positive number of seconds per level");
    }
    if options.value_bytes == 0 {
        return bad("values of at least one byte");
    }
    Ok(())
}

/// Runs the benchmark: starts the cluster, waits for a leader, runs every level, stops
/// the cluster.
pub fn run(options: &Options) -> Result<RaftReport, RaftBenchError> {
    check_options(options)?;
    interrupt::install();
    let binary = match &options.miniraft_bin {
        Some(path) => path.clone(),
        None => locate_miniraft()?,
    };
    if !binary.is_file() {
        return Err(RaftBenchError::MiniraftMissing(binary));
    }
    // Absolute: each node runs in its own temporary directory.
    let binary = std::path::absolute(&binary).map_err(BenchError::io(format!("can't resolve {}", binary.display())))?;
    let version = version_line(&binary).unwrap_or_else(|_| "miniraft (version unknown)".to_string());
    eprintln!("{version} ({})", binary.display());
    let environment = Environment { miniraft_version: version, cpu: cpu_model(), cores: cores(), data_dir: data_dir() };

    let bar = progress::bar(options.proposers.len() + 1, options.progress);
    bar.set_message("starting 3 nodes");
    let result = start_and_measure(&binary, options, &bar);
    bar.finish_and_clear();
    let levels = result?;
    let durability = if options.fsync {
        "+OK once the entry is committed (appended and fsynced on a majority, the leader included) and applied on the leader"
    } else {
        "+OK once the entry is committed on a majority and applied on the leader; --unsafe-no-fsync: written to the OS, never fsynced, so a power loss on a majority can lose acknowledged writes"
    };
    Ok(RaftReport {
        environment,
        settings: Settings {
            nodes: NODES,
            seconds_per_level: options.seconds.as_secs_f64(),
            value_bytes: options.value_bytes,
            fsync: options.fsync,
        },
        durability: durability.to_string(),
        levels,
    })
}

fn start_and_measure(binary: &Path, options: &Options, bar: &ProgressBar) -> Result<Vec<Level>, RaftBenchError> {
    let cluster = Cluster::start(binary, options.fsync)?;
    bar.inc(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::io("can't start the client runtime"))?;
    let mut levels = Vec::with_capacity(options.proposers.len());
    for &proposers in &options.proposers {
        interrupt::check()?;
        let leader = cluster.wait_for_leader()?;
        bar.set_message(format!("{proposers} proposer(s) writing to node {leader} for {:?}", options.seconds));
        let port = cluster.client_port(leader);
        let measured = runtime.block_on(measure(port, proposers, options));
        interrupt::check()?;
        levels.push(measured.into_level(proposers, leader));
        bar.inc(1);
    }
    drop(runtime);
    drop(cluster); // kills the three nodes by pid and removes their directories
    Ok(levels)
}

// ---- the cluster -----------------------------------------------------------------------

/// Three running nodes, killed when dropped.
struct Cluster {
    /// `nodes[k]` is node id `k + 1`.
    nodes: Vec<ServerProcess>,
}

impl Cluster {
    fn start(binary: &Path, fsync: bool) -> Result<Cluster, RaftBenchError> {
        let peer_ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect::<Result<_, _>>()?;
        let initial_cluster =
            peer_ports.iter().enumerate().map(|(k, port)| format!("{}=127.0.0.1:{port}", k + 1)).collect::<Vec<_>>();
        let initial_cluster = initial_cluster.join(",");
        let mut nodes = Vec::with_capacity(NODES as usize);
        for id in 1..=NODES {
            let peer_port = peer_ports[id as usize - 1];
            let initial_cluster = initial_cluster.clone();
            let args = move |client_port: u16, data: &Path| {
                node_args(id, client_port, peer_port, &initial_cluster, data, fsync)
            };
            nodes.push(ServerProcess::start("miniraft", binary, args, Ready::Pong)?);
        }
        Ok(Cluster { nodes })
    }

    fn client_port(&self, id: u64) -> u16 {
        self.nodes[id as usize - 1].port
    }

    /// Polls RAFT.STATUS on every node until one says it leads.
    fn wait_for_leader(&self) -> Result<u64, RaftBenchError> {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        loop {
            interrupt::check()?;
            for (k, node) in self.nodes.iter().enumerate() {
                match status(node.port) {
                    Ok(line) => {
                        if parse_status(&line, "role") == Some("leader") {
                            return Ok(k as u64 + 1);
                        }
                        last = format!("node {}: {line}", k + 1);
                    }
                    Err(e) => last = format!("node {}: {e}", k + 1),
                }
            }
            if start.elapsed() > LEADER_TIMEOUT {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(k, n)| format!("--- node {} ---\n{}", k + 1, n.log_tail(10)))
                    .collect();
                return Err(RaftBenchError::NoLeader { last: format!("{last}\n{}", logs.join("\n")) });
            }
            process::sleep(Duration::from_millis(100))?;
        }
    }
}

/// The command line of node `id` (the contract's etcd-style flags).
fn node_args(
    id: u64,
    client_port: u16,
    peer_port: u16,
    initial_cluster: &str,
    data: &Path,
    fsync: bool,
) -> Vec<String> {
    let mut args = vec![
        "--name".to_string(),
        id.to_string(),
        "--data-dir".to_string(),
        data.display().to_string(),
        "--listen-client-urls".to_string(),
        format!("127.0.0.1:{client_port}"),
        "--listen-peer-urls".to_string(),
        format!("127.0.0.1:{peer_port}"),
        "--initial-cluster".to_string(),
        initial_cluster.to_string(),
    ];
    if !fsync {
        args.push("--unsafe-no-fsync".to_string());
    }
    args
}

/// One RAFT.STATUS, on a fresh connection with deadlines.
fn status(port: u16) -> Result<String, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut con = client.get_connection_with_timeout(STATUS_TIMEOUT).map_err(|e| e.to_string())?;
    con.set_read_timeout(Some(STATUS_TIMEOUT)).map_err(|e| e.to_string())?;
    con.set_write_timeout(Some(STATUS_TIMEOUT)).map_err(|e| e.to_string())?;
    redis::cmd("RAFT.STATUS").query::<String>(&mut con).map_err(|e| e.to_string())
}

/// The value of `field` in a RAFT.STATUS line (`id=1 role=leader term=3 ...`).
fn parse_status<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|pair| pair.strip_prefix(field)?.strip_prefix('='))
}

// ---- the load ----------------------------------------------------------------------------

/// What the proposers of one level measured together.
#[derive(Debug, Default)]
struct Measured {
    /// Every acknowledged write's latency.
    latencies: Histogram,
    /// Writes that failed or timed out (and connections that failed).
    errors: u64,
    /// The first of those, for the report.
    first_error: Option<String>,
    /// From the common start to the last proposer's end.
    elapsed: Duration,
}

impl Measured {
    fn merge(&mut self, other: Proposer) {
        for (nanos, count) in other.latencies {
            self.latencies.record(nanos, count);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn into_level(self, proposers: usize, leader: u64) -> Level {
        let ms = |nanos: Option<u64>| nanos.map(|n| n as f64 / 1e6);
        let writes = self.latencies.count();
        let seconds = self.elapsed.as_secs_f64();
        Level {
            proposers,
            leader,
            writes,
            errors: self.errors,
            first_error: self.first_error,
            seconds,
            writes_per_sec: if seconds > 0.0 { writes as f64 / seconds } else { 0.0 },
            p50_ms: ms(self.latencies.quantile(0.50)),
            p99_ms: ms(self.latencies.quantile(0.99)),
            max_ms: ms(self.latencies.max()),
        }
    }
}

/// One proposer's results: latencies as (nanos, 1) pairs merged into the level's
/// histogram afterwards, so that no lock is shared in the hot loop.
#[derive(Debug, Default)]
struct Proposer {
    /// (latency in nanoseconds, 1) per acknowledged write.
    latencies: Vec<(u64, u64)>,
    /// Writes that failed or timed out.
    errors: u64,
    /// The first of those.
    first_error: Option<String>,
}

/// `proposers` connections to the leader's client `port`, each writing SETs back to back
/// until the level's time is up.
async fn measure(port: u16, proposers: usize, options: &Options) -> Measured {
    let mut measured = Measured::default();
    // Connect everyone first, so that the clock measures writes, not handshakes.
    let mut connections = Vec::with_capacity(proposers);
    for _ in 0..proposers {
        match connect(port).await {
            Ok(connection) => connections.push(connection),
            Err(e) => {
                measured.errors += 1;
                measured.first_error.get_or_insert(format!("connect: {e}"));
            }
        }
    }
    let start = Instant::now();
    let deadline = start + options.seconds;
    let value = vec![b'v'; options.value_bytes];
    let mut tasks = tokio::task::JoinSet::new();
    for (p, connection) in connections.into_iter().enumerate() {
        tasks.spawn(propose(p, connection, value.clone(), deadline));
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(proposer) => measured.merge(proposer),
            Err(e) => {
                measured.errors += 1;
                measured.first_error.get_or_insert(format!("a proposer task failed: {e}"));
            }
        }
    }
    measured.elapsed = start.elapsed();
    measured
}

async fn connect(port: u16) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(WRITE_TIMEOUT);
    client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())
}

/// One proposer: SET p:<proposer>:<n> to the value, one at a time, until `deadline`.
async fn propose(
    proposer: usize,
    mut connection: redis::aio::MultiplexedConnection,
    value: Vec<u8>,
    deadline: Instant,
) -> Proposer {
    let mut result = Proposer::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let key = format!("p:{proposer}:{n}");
        n += 1;
        let sent = Instant::now();
        let reply = tokio::time::timeout(
            WRITE_TIMEOUT,
            redis::cmd("SET").arg(&key).arg(&value[..]).query_async::<redis::Value>(&mut connection),
        )
        .await;
        let problem = match reply {
            Ok(Ok(redis::Value::Okay)) => {
                result.latencies.push((sent.elapsed().as_nanos() as u64, 1));
                continue;
            }
            Ok(Ok(other)) => format!("SET answered {other:?}"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no reply within {} s", WRITE_TIMEOUT.as_secs()),
        };
        result.errors += 1;
        result.first_error.get_or_insert(problem);
        tokio::time::sleep(ERROR_PAUSE).await;
    }
    result
}

// ---- the report ----------------------------------------------------------------------------

/// The report as markdown: the setting, then a row per proposer count.
pub fn render_markdown(report: &RaftReport) -> String {
    let e = &report.environment;
    let s = &report.settings;
    let mut out = String::new();
    out.push_str(&format!(
        "## mini bench raft: {}-node miniraft on loopback, SET of {}-byte values to the leader, fsync {}\n\n",
        s.nodes,
        s.value_bytes,
        if s.fsync { "on" } else { "off (--unsafe-no-fsync)" }
    ));
    out.push_str(&format!(
        "{}; {}, {} cores shared by the three nodes and the client; data in {}; {} s per level.\n\n",
        e.miniraft_version, e.cpu, e.cores, e.data_dir, s.seconds_per_level
    ));
    out.push_str(&format!("Acknowledgement: {}.\n\n", report.durability));
    out.push_str("| proposers | committed writes/s | p50 ms | p99 ms | max ms | writes | errors |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for level in &report.levels {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            level.proposers,
            thousands(level.writes_per_sec),
            cell(level.p50_ms),
            cell(level.p99_ms),
            cell(level.max_ms),
            thousands(level.writes as f64),
            level.errors
        ));
    }
    let errors: Vec<String> = report
        .levels
        .iter()
        .filter_map(|l| l.first_error.as_ref().map(|e| format!("- {} proposer(s): {e}", l.proposers)))
        .collect();
    if !errors.is_empty() {
        out.push_str("\nFirst error per level:\n\n");
        out.push_str(&errors.join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_fields_exactly() {
        let line = "id=2 role=leader term=3 leader=2 commit=42 applied=42 last=42";
        assert_eq!(parse_status(line, "role"), Some("leader"));
        assert_eq!(parse_status(line, "leader"), Some("2"));
        assert_eq!(parse_status(line, "last"), Some("42"));
        assert_eq!(parse_status(line, "lea"), None);
        assert_eq!(parse_status("garbage", "role"), None);
    }

    #[test]
    fn node_args_are_the_contract_flags() {
        let args = node_args(2, 7001, 8002, "1=127.0.0.1:8001,2=127.0.0.1:8002", Path::new("/d"), false).join(" ");
        assert_eq!(
            args,
            "--name 2 --data-dir /d --listen-client-urls 127.0.0.1:7001 --listen-peer-urls 127.0.0.1:8002 \
             --initial-cluster 1=127.0.0.1:8001,2=127.0.0.1:8002 --unsafe-no-fsync"
        );
        assert!(!node_args(1, 1, 2, "", Path::new("/d"), true).contains(&"--unsafe-no-fsync".to_string()));
    }

    #[test]
    fn nonsense_options_are_refused() {
        assert!(check_options(&Options::quick()).is_ok());
        assert!(check_options(&Options { proposers: vec![], ..Options::quick() }).is_err());
        assert!(check_options(&Options { proposers: vec![1, 0], ..Options::quick() }).is_err());
        assert!(check_options(&Options { seconds: Duration::ZERO, ..Options::quick() }).is_err());
    }

    #[test]
    fn a_level_reports_percentiles_and_rate() {
        let mut measured = Measured { elapsed: Duration::from_secs(2), ..Measured::default() };
        let proposer = Proposer {
            latencies: (1..=100).map(|ms| (ms * 1_000_000, 1)).collect(),
            errors: 1,
            first_error: Some("NOTLEADER".into()),
        };
        measured.merge(proposer);
        let level = measured.into_level(16, 1);
        assert_eq!((level.writes, level.errors), (100, 1));
        assert_eq!(level.writes_per_sec, 50.0);
        let p50 = level.p50_ms.expect("p50");
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert_eq!(level.max_ms, Some(100.0));
        let markdown = render_markdown(&RaftReport {
            environment: Environment {
                miniraft_version: "v".into(),
                cpu: "c".into(),
                cores: 2,
                data_dir: "/tmp".into(),
            },
            settings: Settings { nodes: 3, seconds_per_level: 2.0, value_bytes: 100, fsync: true },
            durability: "d".into(),
            levels: vec![level],
        });
        assert!(markdown.contains("| 16 | 50 | "), "{markdown}");
        assert!(markdown.contains("- 16 proposer(s): NOTLEADER"), "{markdown}");
    }

    /// The whole harness against the real binary, when it has been built.
    #[test]
    fn a_tiny_run_against_the_built_binary() {
        let Some(binary) = built_miniraft() else {
            eprintln!("skipped: no miniraft binary in target/ (cargo build -p miniraft)");
            return;
        };
        let options = Options {
            seconds: Duration::from_millis(500),
            proposers: vec![1, 4],
            miniraft_bin: Some(binary),
            progress: false,
            ..Options::quick()
        };
        let report = run(&options).expect("the run completes");
        assert_eq!(report.levels.len(), 2);
        for level in &report.levels {
            assert!(level.writes > 0, "{level:?}");
            assert!(level.p99_ms.is_some_and(|p| p > 0.0), "{level:?}");
        }
    }

    /// target/debug/miniraft or target/release/miniraft, beside this test binary.
    fn built_miniraft() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let target = exe.ancestors().find(|p| p.file_name().is_some_and(|n| n == "target"))?;
        ["release", "debug"].iter().map(|profile| target.join(profile).join("miniraft")).find(|p| p.is_file())
    }
}
