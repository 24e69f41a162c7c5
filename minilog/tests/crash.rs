//! Crash and recovery of the real `minilog` binary, checked with clients we did not write.
//!
//! - `acknowledged_records_survive_kill_9_and_a_torn_tail`: a confluent-kafka producer
//!   (librdkafka) writes to a `--flush always` broker and prints every acknowledgement; the
//!   broker is killed with SIGKILL mid-load and restarted, and kcat must read back every
//!   acknowledged record at its acknowledged offset, with offsets contiguous from 0. Then
//!   half a batch of garbage is appended to the active `.log` while the broker is down (a
//!   torn write); the restarted broker must say it truncated it, serve the same records,
//!   and give the next produce the next offset.
//! - `missing_and_corrupt_indexes_are_rebuilt`: a segment's `.index` is deleted, and
//!   (in a second restart) another's is overwritten with garbage, while the broker is
//!   stopped; fetches from the start, middle and end of those segments must still return
//!   the right records, and the index must be there again.
//! - `checker_*`: the history checker itself catches a lost, altered or duplicated
//!   acknowledged record and a gap in what was read back, so the crash test can fail.
//!
//! Needs `kcat` (Debian: `apt-get install kcat`) and a Python with `confluent-kafka`:
//! `$MINILOG_PYTHON`, else `<repo>/.venv-tests/bin/python` (which `./test.sh` creates),
//! else `python3`. The kill point and the garbage come from a seed that every failure
//! prints; `MINILOG_CRASH_SEED=<n>` replays it. Run: `cargo test -p minilog --test crash`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a broker may take to answer its first ApiVersions after a start or a
/// recovery. A debug build needs well under a second; this only bounds a hang.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd broker may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound for one kcat run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// The producer stops by itself after this long, whatever happens to the test.
const PRODUCER_SECONDS: u32 = 30;

/// The load generator: confluent-kafka, one line on stdout per delivery report.
const PRODUCER_PY: &str = r#"
import sys, time
from confluent_kafka import Producer
bootstrap, topic, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
out = sys.stdout
def report(err, msg):
    if err is None:
        out.write(f"ack {msg.partition()} {msg.offset()} {msg.value().decode()}\n")
    else:
        out.write(f"err {msg.value().decode()} {err}\n")
    out.flush()
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "retries": 0,
              "message.timeout.ms": 5000, "socket.timeout.ms": 5000,
              "queue.buffering.max.messages": 2000})
deadline = time.monotonic() + seconds
seq = 0
while time.monotonic() < deadline:
    try:
        p.produce(topic, value=f"m-{seq}".encode(), partition=0, on_delivery=report)
        seq += 1
        p.poll(0)
    except BufferError:
        p.poll(0.01)
p.flush(5)
"#;

// ---- the history checker ----------------------------------------------------

/// What was read back must contain every acknowledged record, at the offset its
/// acknowledgement named and with its value; offsets must run 0, 1, 2, ... with no gap.
/// Returns every problem found (empty when the history is clean).
fn check_history(acked: &[(i64, String)], read: &[(i64, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (offset, _)) in read.iter().enumerate() {
        if *offset != i as i64 {
            problems.push(format!("read back offset {offset} at position {i}: offsets are not contiguous from 0"));
            break;
        }
    }
    let stored: BTreeMap<i64, &str> = read.iter().map(|(o, v)| (*o, v.as_str())).collect();
    let mut seen = BTreeMap::new();
    for (offset, value) in acked {
        if let Some(other) = seen.insert(*offset, value.as_str()) {
            problems.push(format!("offset {offset} was acknowledged twice, for {other:?} and {value:?}"));
        }
        match stored.get(offset) {
            None => problems.push(format!("acknowledged offset {offset} ({value:?}) is missing after recovery")),
            Some(got) if got != value => {
                problems.push(format!("acknowledged offset {offset} should hold {value:?} but holds {got:?}"))
            }
            Some(_) => {}
        }
    }
    problems
}

#[test]
fn checker_accepts_a_clean_history() {
    let acked = history(&[0, 1, 2]);
    let read = history(&[0, 1, 2, 3]); // an unacknowledged record may survive too
    assert_eq!(check_history(&acked, &read), Vec::<String>::new());
}

#[test]
fn checker_reports_a_lost_acknowledged_record() {
    let acked = history(&[0, 1, 2, 3]);
    let read = history(&[0, 1, 2]);
    let problems = check_history(&acked, &read);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("acknowledged offset 3"), "{problems:?}");
}

#[test]
fn checker_reports_a_gap_an_altered_value_and_a_double_ack() {
    let acked = vec![(0, "m-0".to_string()), (1, "m-1".to_string()), (1, "m-9".to_string())];
    let read = vec![(0, "m-0".to_string()), (1, "m-x".to_string()), (3, "m-3".to_string())];
    let problems = check_history(&acked, &read);
    assert!(problems.iter().any(|p| p.contains("not contiguous")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("acknowledged twice")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("should hold \"m-1\" but holds \"m-x\"")), "{problems:?}");
}

#[test]
fn torn_tail_message_must_name_the_byte_count() {
    assert!(mentions_number("recovered partition truncated_bytes=162 rebuilt_indexes=0", 162));
    assert!(!mentions_number("opened partition log truncated_bytes=1620", 162));
    assert!(!mentions_number("opened partition log truncated_bytes=0", 162));
}

fn history(offsets: &[i64]) -> Vec<(i64, String)> {
    offsets.iter().map(|o| (*o, format!("m-{o}"))).collect()
}

// ---- crash tests -------------------------------------------------------------

#[test]
fn acknowledged_records_survive_kill_9_and_a_torn_tail() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let python = python_with_confluent_kafka();
    let kcat = kcat();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = Broker::start(dir.path(), &["--flush", "always"]);
    let topic = "crash";

    // Phase 1: kill -9 in the middle of an acknowledged load.
    let kill_after = 1_000 + rng.below(3_000) as usize;
    let mut producer = Command::new(&python)
        .args(["-c", PRODUCER_PY, &broker.bootstrap(), topic, &PRODUCER_SECONDS.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("can't run {}: {e}", python.display()));
    let (lines, stdout_reader) = lines_of(producer.stdout.take().expect("piped stdout"));
    let stderr_reader = collect(producer.stderr.take().expect("piped stderr"));
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(PRODUCER_SECONDS as u64);
    while acked.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                parse_report(&line, &mut acked, &mut errors);
                assert!(
                    errors.is_empty(),
                    "seed {seed}: produce failed before the kill: {errors:?}\n{}",
                    broker.log_tail()
                );
            }
            Err(_) => panic!(
                "seed {seed}: the producer stopped after {} acknowledgements, before the kill point {kill_after}; \
                 errors: {errors:?}\n{}",
                acked.len(),
                broker.log_tail()
            ),
        }
    }
    broker.kill9();
    // Reports already on their way were acknowledged before the kill; take them too.
    thread::sleep(Duration::from_millis(300));
    let _ = producer.kill();
    let _ = producer.wait();
    for line in lines.try_iter() {
        parse_report(&line, &mut acked, &mut errors);
    }
    let _ = stdout_reader.join();
    let _ = stderr_reader.join();
    let acked: Vec<(i64, String)> = acked
        .into_iter()
        .map(|(partition, offset, value)| {
            assert_eq!(partition, 0, "seed {seed}: an acknowledgement for partition {partition}");
            (offset, value)
        })
        .collect();

    broker.restart();
    let read = kcat_read(&kcat, &broker, topic, "0", None);
    let problems = check_history(&acked, &read);
    assert!(
        problems.is_empty(),
        "seed {seed}: after kill -9 at {} acknowledged records ({} read back):\n{}\n{}",
        acked.len(),
        read.len(),
        problems.join("\n"),
        broker.log_tail()
    );
    eprintln!("seed {seed}: {} acknowledged, {} read back after kill -9", acked.len(), read.len());

    // Phase 2: a torn write at the end of the active segment.
    broker.kill9();
    let partition_dir = broker.dir.join(format!("{topic}-0"));
    let active = segments(&partition_dir).pop().expect("at least one segment");
    let log_file = active.with_extension("log");
    let clean_len = fs::metadata(&log_file).expect("active .log").len();
    let torn = torn_batch(read.len() as i64, &mut rng);
    fs::OpenOptions::new()
        .append(true)
        .open(&log_file)
        .and_then(|mut f| f.write_all(&torn))
        .expect("append the torn batch");
    broker.restart();
    let said = broker.log_since_start();
    let truncated =
        said.lines().find(|l| l.to_lowercase().contains("truncat") && mentions_number(l, torn.len() as u64));
    eprintln!("seed {seed}: after a torn tail of {} bytes the broker said: {truncated:?}", torn.len());
    assert!(
        truncated.is_some(),
        "seed {seed}: after {} torn bytes were appended to {}, the broker's log should say it truncated them:\n{said}",
        torn.len(),
        log_file.display()
    );
    assert_eq!(
        fs::metadata(&log_file).expect("active .log").len(),
        clean_len,
        "seed {seed}: the torn tail is still in {}",
        log_file.display()
    );
    let reread = kcat_read(&kcat, &broker, topic, "0", None);
    assert_eq!(reread, read, "seed {seed}: the partition reads differently after the torn tail was cut");

    let next = read.len() as i64;
    run(Command::new(&kcat).args(kcat_args(&broker, &["-P", "-t", topic, "-p", "0"])), Some(b"after-recovery\n"));
    let tail = kcat_read(&kcat, &broker, topic, &next.to_string(), None);
    assert_eq!(tail, vec![(next, "after-recovery".to_string())], "seed {seed}: the first produce after recovery");
    broker.stop();
}

#[test]
fn missing_and_corrupt_indexes_are_rebuilt() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let kcat = kcat();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = Broker::start(dir.path(), &["--segment-bytes", "24576"]);
    let topic = "indexed";
    let count = 3_000;
    let value = |i: i64| format!("r-{i:05}-{}", "y".repeat(30));
    let input: String = (0..count).map(|i| value(i) + "\n").collect();
    // Small batches, so each segment holds many and its index several entries.
    run(
        Command::new(&kcat).args(kcat_args(
            &broker,
            &["-P", "-t", topic, "-p", "0", "-X", "batch.num.messages=40", "-X", "linger.ms=1"],
        )),
        Some(input.as_bytes()),
    );
    let all = kcat_read(&kcat, &broker, topic, "0", None);
    let expected: Vec<(i64, String)> = (0..count).map(|i| (i, value(i))).collect();
    assert_eq!(all.len(), expected.len());
    assert!(all == expected, "the partition does not read back what was produced");
    broker.stop();

    let partition_dir = broker.dir.join(format!("{topic}-0"));
    let bases: Vec<i64> = segments(&partition_dir).iter().map(|s| base_offset(s)).collect();
    assert!(bases.len() >= 4, "expected at least 4 segments with --segment-bytes 24576, got {bases:?}");

    for (victim, how) in [(1, "deleted"), (2, "corrupted")] {
        let (base, next) = (bases[victim], bases[victim + 1]);
        let stem = partition_dir.join(format!("{base:020}"));
        let index = stem.with_extension("index");
        let original = fs::read(&index).unwrap_or_else(|e| panic!("{}: {e}", index.display()));
        assert!(original.len() >= 16, "{} has {} bytes, expected several entries", index.display(), original.len());
        let garbage: Vec<u8> = (0..original.len()).map(|_| rng.below(256) as u8).collect();
        match how {
            "deleted" => fs::remove_file(&index).expect("delete the index"),
            _ => fs::write(&index, &garbage).expect("corrupt the index"),
        }
        broker.restart();
        for from in [base, (base + next) / 2, next - 1] {
            let got = kcat_read(&kcat, &broker, topic, &from.to_string(), Some(3));
            let want: Vec<(i64, String)> = (from..from + 3).map(|i| (i, value(i))).collect();
            assert_eq!(
                got,
                want,
                "seed {seed}: reading 3 records from offset {from} after segment {base}'s index was {how}\n{}",
                broker.log_tail()
            );
        }
        let rebuilt = fs::read(&index).unwrap_or_else(|e| {
            panic!("seed {seed}: {} is not there again after it was {how}: {e}\n{}", index.display(), broker.log_tail())
        });
        if how == "corrupted" {
            assert_ne!(rebuilt, garbage, "seed {seed}: {} still holds the garbage", index.display());
        }
        broker.stop();
    }
    broker.restart();
    assert!(kcat_read(&kcat, &broker, topic, "0", None) == expected, "the whole partition after the rebuilds");
    broker.stop();
}

// ---- the broker process --------------------------------------------------------

/// A `minilog` child process with its data directory and a log file of its stderr.
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    flags: Vec<String>,
}

impl Broker {
    fn start(dir: &Path, flags: &[&str]) -> Broker {
        let mut broker = Broker {
            child: None,
            port: 0,
            dir: dir.join("data"),
            log: dir.join("minilog.log"),
            flags: flags.iter().map(|s| s.to_string()).collect(),
        };
        broker.spawn();
        broker
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the binary on a free port (retrying if the port was taken in between) and
    /// waits until it answers ApiVersions.
    fn spawn(&mut self) {
        let mut last = String::new();
        for _attempt in 0..3 {
            self.port = free_port();
            let mut log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("broker log");
            writeln!(log, "===== start on port {}", self.port).expect("write the broker log");
            let child = Command::new(env!("CARGO_BIN_EXE_minilog"))
                .args(["--listen", &self.bootstrap(), "--dir"])
                .arg(&self.dir)
                .args(["--admin-port", "0"])
                .args(&self.flags)
                .env("RUST_LOG", std::env::var("MINILOG_RUST_LOG").unwrap_or_else(|_| "debug".into()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("start minilog");
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    self.kill9();
                }
            }
        }
        panic!("minilog did not start: {last}\n{}", self.log_tail());
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = "timed out".to_string();
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("exited with {status}"));
            }
            match api_versions_answers(self.port) {
                Ok(true) => return Ok(()),
                Ok(false) => last = "ApiVersions v0 got an unexpected answer".into(),
                Err(e) => last = e.to_string(),
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(last)
    }

    /// SIGKILL, as a crash would.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (through kill(1), by pid) and wait for a clean exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(sent.as_ref().is_ok_and(|s| s.success()), "kill -TERM {} failed: {sent:?}", child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for minilog") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("minilog ignored SIGTERM for {STOP_TIMEOUT:?}\n{}", self.log_tail());
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "minilog exited with {status} on SIGTERM\n{}", self.log_tail());
    }

    fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// The broker's log since its latest start.
    fn log_since_start(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        match text.rfind("===== start") {
            Some(at) => text[at..].to_string(),
            None => text,
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("--- last lines of {} ---\n{}", self.log.display(), lines[from..].join("\n"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Whether the port answers a Kafka ApiVersions v0 request; for readiness only, every
/// check of behaviour goes through kcat or librdkafka.
fn api_versions_answers(port: u16) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let client_id = b"minilog-crash-test";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // v0
    body.extend_from_slice(&0x5eedi32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if !(6..=1 << 20).contains(&size) {
        return Ok(false);
    }
    let mut reply = vec![0u8; size as usize];
    stream.read_exact(&mut reply)?;
    Ok(reply[0..4] == 0x5eedi32.to_be_bytes() && reply[4..6] == [0, 0])
}

// ---- data files ----------------------------------------------------------------

/// The segments of a partition directory, as paths without extension, oldest first.
fn segments(partition_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(partition_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", partition_dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| p.with_extension(""))
        .collect();
    found.sort();
    for s in &found {
        let name = s.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()), "segment name {name:?}");
    }
    found
}

fn base_offset(segment: &Path) -> i64 {
    segment.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("a 20-digit base offset")
}

/// Whether `line` has `n` as a whole number (not as part of a longer one).
fn mentions_number(line: &str, n: u64) -> bool {
    line.split(|c: char| !c.is_ascii_digit()).any(|word| word.parse() == Ok(n))
}

/// The first part of a record batch whose header claims more bytes than follow: what a
/// crash in the middle of a write leaves. Its base offset is the next offset, so only
/// its length gives it away.
fn torn_batch(next_offset: i64, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&next_offset.to_be_bytes());
    bytes.extend_from_slice(&400i32.to_be_bytes()); // batchLength: 400 bytes follow, supposedly
    bytes.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
    bytes.push(2); // magic
    bytes.extend_from_slice(&rng.below(u32::MAX as u64).to_be_bytes()[4..]); // crc
    while bytes.len() < 12 + 150 {
        bytes.push(rng.below(256) as u8);
    }
    bytes
}

// ---- client tools --------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn python_with_confluent_kafka() -> PathBuf {
    let venv = workspace_root().join(".venv-tests/bin/python");
    let python = match std::env::var_os("MINILOG_PYTHON") {
        Some(p) => PathBuf::from(p),
        None if venv.is_file() => venv,
        None => PathBuf::from("python3"),
    };
    let works = Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works,
        "{} cannot import confluent_kafka: run ./test.sh (it installs confluent-kafka into .venv-tests), or \
         `pip install confluent-kafka` and set MINILOG_PYTHON to that python",
        python.display()
    );
    python
}

fn kcat() -> PathBuf {
    let works = Command::new("kcat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(works.is_ok_and(|s| s.success()), "kcat is not installed: apt-get install kcat (./test.sh does)");
    PathBuf::from("kcat")
}

fn kcat_args(broker: &Broker, args: &[&str]) -> Vec<String> {
    let mut all = vec!["-b".to_string(), broker.bootstrap()];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend(["-X", "socket.timeout.ms=10000", "-X", "message.timeout.ms=20000"].map(String::from));
    all
}

/// Reads partition 0 from `offset` to its end (or `count` records) with kcat.
fn kcat_read(kcat: &Path, broker: &Broker, topic: &str, offset: &str, count: Option<usize>) -> Vec<(i64, String)> {
    let count = count.map(|c| c.to_string());
    let mut args = vec!["-C", "-t", topic, "-p", "0", "-o", offset, "-e", "-q", "-f", "%o %s\\n"];
    if let Some(c) = &count {
        args.extend(["-c", c]);
    }
    let out = run(Command::new(kcat).args(kcat_args(broker, &args)), None);
    out.lines()
        .map(|line| {
            let (offset, value) = line.split_once(' ').unwrap_or_else(|| panic!("kcat printed {line:?}"));
            (offset.parse().unwrap_or_else(|_| panic!("kcat printed {line:?}")), value.to_string())
        })
        .collect()
}

/// Runs a tool to completion within [`TOOL_TIMEOUT`]; a failure panics with its stderr.
fn run(command: &mut Command, input: Option<&[u8]>) -> String {
    let mut child = command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("can't run {command:?}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = collect(child.stdout.take().expect("piped stdout"));
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let status = wait_with_timeout(&mut child, TOOL_TIMEOUT);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => String::from_utf8_lossy(&stdout).into_owned(),
        Some(s) => panic!("{command:?} exited with {s}\nstderr: {}", String::from_utf8_lossy(&stderr)),
        None => panic!("{command:?} did not finish in {TOOL_TIMEOUT:?}\nstderr: {}", String::from_utf8_lossy(&stderr)),
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// Sends each line of `pipe` down a channel, from a thread.
fn lines_of(pipe: impl Read + Send + 'static) -> (mpsc::Receiver<String>, thread::JoinHandle<()>) {
    let (send, receive) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (receive, reader)
}

/// `ack <partition> <offset> <value>` or `err <value> <error>` from the producer script.
fn parse_report(line: &str, acked: &mut Vec<(i32, i64, String)>, errors: &mut Vec<String>) {
    let mut words = line.splitn(4, ' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("ack"), Some(p), Some(o), Some(v)) => {
            let parse = || Some((p.parse().ok()?, o.parse().ok()?));
            let (p, o) = parse().unwrap_or_else(|| panic!("the producer printed {line:?}"));
            acked.push((p, o, v.to_string()));
        }
        (Some("err"), ..) => errors.push(line[4..].to_string()),
        _ => panic!("the producer printed {line:?}"),
    }
}

// ---- seeded randomness -----------------------------------------------------------

fn seed() -> u64 {
    match std::env::var("MINILOG_CRASH_SEED") {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("MINILOG_CRASH_SEED={s:?} is not a number")),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        }
    }
}

/// xorshift64*: tiny, and enough to pick a kill point and garbage bytes reproducibly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // xorshift gets stuck at zero; any other state is fine.
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}
