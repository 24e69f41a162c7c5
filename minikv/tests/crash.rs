//! The durability promise, checked with `kill -9`.
//!
//! minikv's AOF documents when a reply is sent relative to fsync (see the table in
//! `src/aof.rs`): with `appendfsync always` the records of a reply are fsynced before
//! it leaves; with `everysec` they are written to the OS before it leaves and fsynced
//! about once a second. A process kill loses neither: what the OS holds survives the
//! process. So, for both policies, every write a client saw acknowledged must be there
//! after `kill -9` and a restart. Writes that were sent but not acknowledged may or
//! may not be there; only acknowledged ones count.
//!
//! The ledger of a run records, per counter, how many INCRs were acknowledged (a lower
//! bound for the value after restart) and how many were sent at all (an upper bound:
//! replay must not apply a command twice), and every acknowledged SET.
//!
//! Also here: a torn AOF tail (what a crash mid-write leaves) is cut and reported;
//! corruption in the middle refuses to start unless `aof-load-corrupt yes`; a rewrite
//! under load keeps every acknowledged write; TTLs are absolute across restarts.
//!
//! Left out: power loss (the page cache surviving is what `kill -9` cannot test;
//! that needs a VM or a fault-injecting file system).

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Value;
use support::{info_u64, wait_until, Server};

const COUNTERS: usize = 8;
/// Client threads of the write load (the machine has 2 cores; more threads than that
/// still help group commit by overlapping the fsync waits).
const LOAD_THREADS: usize = 4;
/// Acknowledged writes to wait for before the kill can happen.
const MIN_ACKS_BEFORE_KILL: u64 = 300;

fn counter_key(c: usize) -> String {
    format!("counter:{c}")
}

/// What the clients of a load saw acknowledged.
#[derive(Default)]
struct Ledger {
    acked_incrs: [AtomicU64; COUNTERS],
    sent_incrs: [AtomicU64; COUNTERS],
    /// Highest INCR reply per counter: also a lower bound for the value.
    max_reply: [AtomicI64; COUNTERS],
    acked_total: AtomicU64,
}

/// A write load running on background threads until stopped or until the server dies.
struct Load {
    stop: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
    /// The ledger's total when this cycle's load started.
    acked_before: u64,
    threads: Vec<JoinHandle<Vec<(String, String)>>>,
}

enum Op {
    Incr(usize),
    Set(String, String),
}

impl Load {
    fn start(server: &Server, seed: u64) -> Load {
        Load::start_cycle(server, seed, 0, Arc::new(Ledger::default()))
    }

    /// Starts the load of crash cycle `cycle`, adding to `ledger` (the counters carry
    /// over from cycle to cycle; SET keys are new in each).
    fn start_cycle(server: &Server, seed: u64, cycle: u64, ledger: Arc<Ledger>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked_before = ledger.acked_total.load(Ordering::Relaxed);
        let threads = (0..LOAD_THREADS)
            .map(|t| {
                let url = server.url();
                let stop = stop.clone();
                let ledger = ledger.clone();
                let tag = format!("c{cycle}t{t}");
                let seed = seed.wrapping_add(cycle * 1_000_003 + t as u64 * 7919);
                std::thread::spawn(move || write_loop(&url, &tag, seed, &stop, &ledger))
            })
            .collect();
        Load { stop, ledger, acked_before, threads }
    }

    /// Writes acknowledged in this cycle.
    fn acked(&self) -> u64 {
        self.ledger.acked_total.load(Ordering::Relaxed) - self.acked_before
    }

    fn wait_for_acks(&self, n: u64) {
        assert!(
            wait_until(Duration::from_secs(30), Duration::from_millis(5), || self.acked() >= n),
            "the load got only {} acknowledgements in 30 s",
            self.acked()
        );
    }

    /// Stops the clients and returns the ledger and the acknowledged SETs.
    fn finish(self) -> (Arc<Ledger>, Vec<(String, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut keys = Vec::new();
        for t in self.threads {
            keys.extend(t.join().expect("load thread panicked"));
        }
        (self.ledger, keys)
    }
}

/// One client: single commands and pipelines of INCRs and SETs, until stopped or
/// until the connection fails (the server was killed). Returns its acknowledged SETs.
fn write_loop(url: &str, tag: &str, seed: u64, stop: &AtomicBool, ledger: &Ledger) -> Vec<(String, String)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acked = Vec::new();
    let Ok(client) = redis::Client::open(url) else {
        return acked;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(10)) else {
        return acked;
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = if rng.u8(..) < 64 { rng.usize(2..=16) } else { 1 };
        let mut ops = Vec::with_capacity(n);
        let mut pipe = redis::pipe();
        for _ in 0..n {
            if rng.bool() {
                let c = rng.usize(..COUNTERS);
                ledger.sent_incrs[c].fetch_add(1, Ordering::Relaxed);
                pipe.cmd("INCR").arg(counter_key(c));
                ops.push(Op::Incr(c));
            } else {
                seq += 1;
                let key = format!("{tag}:{seq}");
                let value = format!("{seed}-{tag}-{seq}-{}", rng.u32(..));
                pipe.cmd("SET").arg(&key).arg(&value);
                ops.push(Op::Set(key, value));
            }
        }
        let replies = match pipe.query::<Vec<Value>>(&mut con) {
            Ok(replies) => replies,
            // An error reply (MISCONF, OOM...) is a failure of the server, not a crash.
            Err(e) if e.code().is_some() => panic!("{tag}: the server answered {e}"),
            Err(_) => break, // the server is gone; nothing of this batch counts
        };
        assert_eq!(replies.len(), ops.len());
        for (op, reply) in ops.into_iter().zip(replies) {
            match (op, reply) {
                (Op::Incr(c), Value::Int(v)) => {
                    ledger.acked_incrs[c].fetch_add(1, Ordering::Relaxed);
                    ledger.max_reply[c].fetch_max(v, Ordering::Relaxed);
                }
                (Op::Set(k, v), Value::Okay) => acked.push((k, v)),
                (_, other) => panic!("unexpected reply {other:?}"),
            }
            ledger.acked_total.fetch_add(1, Ordering::Relaxed);
        }
    }
    acked
}

/// Checks that every acknowledged write is present, and that no counter is higher
/// than the INCRs sent (a command replayed twice would show up here).
fn verify(server: &Server, ledger: &Ledger, keys: &[(String, String)]) {
    let mut con = server.client();
    for c in 0..COUNTERS {
        let value: Option<i64> = redis::cmd("GET").arg(counter_key(c)).query(&mut con).unwrap();
        let value = value.unwrap_or(0);
        let acked = ledger.acked_incrs[c].load(Ordering::Relaxed) as i64;
        let max_reply = ledger.max_reply[c].load(Ordering::Relaxed);
        let sent = ledger.sent_incrs[c].load(Ordering::Relaxed) as i64;
        assert!(
            value >= acked && value >= max_reply,
            "counter {c} is {value} after restart, but {acked} INCRs were acknowledged \
             (highest reply {max_reply}): acknowledged writes were lost"
        );
        assert!(
            value <= sent,
            "counter {c} is {value} but only {sent} INCRs were ever sent: a command was replayed twice"
        );
    }
    let mut lost = Vec::new();
    for chunk in keys.chunks(500) {
        let names: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&names).query(&mut con).unwrap();
        for ((k, want), got) in chunk.iter().zip(values) {
            if got.as_deref() != Some(want.as_str()) {
                lost.push(format!("{k}: want {want}, got {got:?}"));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged SETs are missing or wrong after restart, e.g. {:?}",
        lost.len(),
        keys.len(),
        &lost[..lost.len().min(5)]
    );
}

/// Crash cycles per kill -9 test: each restart recovers a log whose tail the previous
/// kill may have torn, and the next load appends after it. `MINIKV_CRASH_CYCLES=100`
/// makes it a soak.
const CYCLES: usize = 3;

/// The shared shape of the two kill -9 tests: `CYCLES` times, run the load, kill -9 at
/// a random moment, restart, and check every write acknowledged so far.
fn kill_under_load(fsync: &str, test: &str, check_during_load: impl FnOnce(&Server)) {
    let seed = support::seed(test);
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--appendonly", "yes", "--appendfsync", fsync]);
    let mut ledger = Arc::new(Ledger::default());
    let mut keys = Vec::new();
    let mut check = Some(check_during_load);
    for cycle in 0..support::env_count("MINIKV_CRASH_CYCLES", CYCLES) as u64 {
        let load = Load::start_cycle(&server, seed, cycle, ledger);
        load.wait_for_acks(MIN_ACKS_BEFORE_KILL);
        if let Some(check) = check.take() {
            check(&server);
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..=400)));
        server.kill9();
        let (cycle_ledger, cycle_keys) = load.finish();
        ledger = cycle_ledger;
        eprintln!(
            "{test}: cycle {cycle}: killed after {} acknowledged writes in total ({} SETs this cycle)",
            ledger.acked_total.load(Ordering::Relaxed),
            cycle_keys.len()
        );
        keys.extend(cycle_keys);
        server.restart();
        verify(&server, &ledger, &keys);
    }
}

/// The AOF fsync counter of INFO persistence. Redis has no such field, so minikv may
/// name it with its own prefix; accept both spellings.
fn aof_fsyncs(con: &mut redis::Connection) -> u64 {
    ["aof_fsyncs", "minikv_aof_fsyncs"]
        .iter()
        .find_map(|f| support::info_field(con, "persistence", f))
        .unwrap_or_else(|| panic!("INFO persistence has no aof_fsyncs / minikv_aof_fsyncs field"))
        .parse()
        .expect("a number")
}

/// `appendfsync always`: replies leave after their records are fsynced.
#[test]
fn kill9_with_appendfsync_always_loses_no_acknowledged_write() {
    kill_under_load("always", "kill9_always", |server| {
        // The contrast with everysec below: here the fsync count follows the writes
        // (one per group commit), far more than one a second.
        let mut con = server.client();
        let before = aof_fsyncs(&mut con);
        std::thread::sleep(Duration::from_millis(1000));
        let delta = aof_fsyncs(&mut con) - before;
        assert!(delta > 10, "only {delta} fsyncs in 1 s of writes with appendfsync always");
    });
}

/// The checker itself: the same load against a server that keeps nothing across a
/// restart (`appendonly no`, the "broken variant") must be caught losing writes.
#[test]
fn verify_catches_lost_writes() {
    let seed = support::seed("verify_catches_lost_writes");
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--appendonly", "no"]);
    let load = Load::start(&server, seed);
    load.wait_for_acks(MIN_ACKS_BEFORE_KILL);
    server.kill9();
    let (ledger, keys) = load.finish();
    server.restart();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify(&server, &ledger, &keys)));
    assert!(caught.is_err(), "verify() accepted a server that lost every write");
}

/// `appendfsync everysec`: replies leave after their records are written to the OS, so
/// a process kill loses nothing; the fsync happens in the background about once a
/// second, which we watch happen while the load runs.
#[test]
fn kill9_with_appendfsync_everysec_loses_no_acknowledged_write() {
    kill_under_load("everysec", "kill9_everysec", |server| {
        let mut con = server.client();
        let window = Duration::from_millis(3500);
        let before = aof_fsyncs(&mut con);
        let started = Instant::now();
        std::thread::sleep(window);
        let after = aof_fsyncs(&mut con);
        let secs = started.elapsed().as_secs_f64();
        let delta = after - before;
        // About one per second: 0 would mean no background fsync at all, dozens
        // would mean it fsyncs per write (what `always` does).
        assert!(
            (2..=6).contains(&delta),
            "aof_fsyncs grew by {delta} in {secs:.1} s of writes with everysec (expected about one a second)"
        );
    });
}

// ---- torn tail and corruption ----------------------------------------------------

fn last_segment(aof_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = fs::read_dir(aof_dir.join("log"))
        .expect("appendonlydir/log exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("at least one log segment")
}

fn set_keys(server: &Server, prefix: &str, range: std::ops::Range<usize>) {
    let mut con = server.client();
    for i in range {
        let () = redis::cmd("SET").arg(format!("{prefix}:{i:03}")).arg(format!("value-{i}")).query(&mut con).unwrap();
    }
}

fn check_keys(server: &Server, prefix: &str, range: std::ops::Range<usize>, present: bool) {
    let mut con = server.client();
    for i in range {
        let got: Option<String> = redis::cmd("GET").arg(format!("{prefix}:{i:03}")).query(&mut con).unwrap();
        let want = present.then(|| format!("value-{i}"));
        assert_eq!(got, want, "{prefix}:{i:03} after restart");
    }
}

fn stop_cleanly(server: &mut Server) {
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM exit status {status:?}");
}

/// A crash in the middle of an append leaves a partial record at the end of the last
/// segment. Recovery cuts exactly those bytes, says so in the log, and keeps
/// everything before them.
#[test]
fn torn_tail_is_cut_and_reported() {
    let seed = support::seed("torn_tail");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--appendonly", "yes", "--appendfsync", "always"]);

    // A frame header claiming a 100-byte payload, followed by only part of it.
    let mut partial_frame = Vec::new();
    partial_frame.extend_from_slice(&100u32.to_le_bytes());
    partial_frame.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    partial_frame.extend_from_slice(b"\x00\x00*3\r\n$3\r\nSET\r\n$5\r\nhal");
    let random: Vec<u8> = (0..1000).map(|_| rng.u8(..)).collect();
    let tails: [(&str, Vec<u8>); 3] = [
        ("partial RESP command", b"*3\r\n$3\r\nSET\r\n$4\r\ntorn\r\n$5\r\nval".to_vec()),
        ("partial frame", partial_frame),
        ("random bytes", random),
    ];

    let mut written = 0;
    for (round, (what, garbage)) in tails.iter().enumerate() {
        set_keys(&server, "k", written..written + 20);
        written += 20;
        stop_cleanly(&mut server);

        let segment = last_segment(&server.aof_dir());
        let clean_len = fs::metadata(&segment).unwrap().len();
        fs::OpenOptions::new().append(true).open(&segment).unwrap().write_all(garbage).unwrap();

        server.restart();
        check_keys(&server, "k", 0..written, true);
        let log = server.stderr();
        assert!(log.contains("torn tail"), "round {round} ({what}): the log does not mention the torn tail:\n{log}");
        let dropped = format!("dropping {} bytes", garbage.len());
        assert!(
            log.contains(&dropped) && log.contains(&format!("offset {clean_len}")),
            "round {round} ({what}): the log should say '{dropped}' at offset {clean_len}:\n{log}"
        );
        assert_eq!(
            fs::metadata(&segment).unwrap().len(),
            clean_len,
            "round {round} ({what}): the segment was not cut back to its clean length"
        );
    }
    // The log is clean again: one more restart reports nothing.
    set_keys(&server, "k", written..written + 5);
    stop_cleanly(&mut server);
    server.restart();
    check_keys(&server, "k", 0..written + 5, true);
    assert!(!server.stderr().contains("torn tail"), "a clean log was reported torn:\n{}", server.stderr());
}

/// Splits a segment into frames: `[len u32 LE][crc u32 LE][payload]`. Returns
/// (offset, payload range).
fn frames(bytes: &[u8]) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let end = at + 8 + len;
        assert!(end <= bytes.len(), "segment ends in a partial frame at {at}");
        out.push((at, at + 8..end));
        at = end;
    }
    assert_eq!(at, bytes.len());
    out
}

/// A damaged record followed by good ones is not a torn tail: something other than
/// our crash changed written data. The server refuses to start, naming the file and
/// offset; `--aof-load-corrupt yes` loads the records before it and drops the rest.
#[test]
fn corruption_in_the_middle_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--appendonly", "yes", "--appendfsync", "always"]);
    set_keys(&server, "c", 0..100);
    stop_cleanly(&mut server);

    let segment = last_segment(&server.aof_dir());
    let mut bytes = fs::read(&segment).unwrap();
    let frames = frames(&bytes);
    let needle = b"c:050";
    let (offset, payload) = frames
        .iter()
        .find(|(_, p)| bytes[p.clone()].windows(needle.len()).any(|w| w == needle))
        .cloned()
        .expect("a record holding c:050");
    let index = frames.iter().position(|(o, _)| *o == offset).unwrap();
    assert!(index > 0 && index + 1 < frames.len(), "the record is in the middle");
    let middle = payload.start + payload.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&segment, &bytes).unwrap();

    let refused = match server.try_restart_with(&[]) {
        Ok(_) => panic!("minikv started on an AOF corrupt in the middle"),
        Err(e) => e,
    };
    assert!(refused.status.is_some_and(|s| !s.success()), "expected a failed exit, got {:?}", refused.status);
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        refused.stderr.contains(&name) && refused.stderr.contains(&format!("offset {offset}")),
        "the error should name {name} and offset {offset}:\n{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("aof-load-corrupt"),
        "the error should say how to start anyway:\n{}",
        refused.stderr
    );
    // Refusing must not have changed the file.
    assert_eq!(fs::read(&segment).unwrap(), bytes);

    let server = server
        .try_restart_with(&["--aof-load-corrupt", "yes"])
        .unwrap_or_else(|e| panic!("did not start with aof-load-corrupt yes: {}", e.stderr));
    check_keys(&server, "c", 0..50, true);
    check_keys(&server, "c", 50..100, false);
    let log = server.stderr();
    assert!(
        log.contains(&format!("offset {offset}")) && log.contains("dropping"),
        "the log should report what was dropped:\n{log}"
    );
}

// ---- rewrite -----------------------------------------------------------------------

fn read_manifest(aof_dir: &Path) -> (u64, u64) {
    let text = fs::read_to_string(aof_dir.join("manifest")).expect("a manifest after a rewrite");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("manifest has no '{name}':\n{text}"))
    };
    (field("base "), field("log-start "))
}

/// BGREWRITEAOF a few times while clients write, then kill -9: the new base plus the
/// log from the manifest's position hold every acknowledged write.
#[test]
fn rewrite_under_load_then_kill9_keeps_acknowledged_writes() {
    const REWRITES: u64 = 3;
    let seed = support::seed("rewrite_under_load");
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--appendonly", "yes", "--appendfsync", "everysec"]);
    let load = Load::start(&server, seed);
    let mut con = server.client();
    for round in 1..=REWRITES {
        load.wait_for_acks(round * 500);
        let reply: String = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap();
        assert_eq!(reply, "Background append only file rewriting started");
        assert!(
            wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
                info_u64(&mut con, "persistence", "aof_rewrite_in_progress") == 0
                    && info_u64(&mut con, "persistence", "aof_rewrites") >= round
            }),
            "rewrite {round} did not finish in 30 s"
        );
        let status = support::info_field(&mut con, "persistence", "aof_last_bgrewrite_status");
        assert_eq!(status.as_deref(), Some("ok"), "rewrite {round}");
    }
    // Let the log grow past the last base a little, then crash.
    let after = load.acked() + 200;
    load.wait_for_acks(after);
    server.kill9();
    let (ledger, keys) = load.finish();

    let (base, log_start) = read_manifest(&server.aof_dir());
    assert_eq!(base, REWRITES, "manifest names the latest base");
    assert!(log_start > 0, "manifest log-start must move past the rewritten records");
    assert!(server.aof_dir().join(format!("base-{base}")).is_dir());
    for old in 1..base {
        assert!(!server.aof_dir().join(format!("base-{old}")).exists(), "old base-{old} was not removed");
    }
    server.restart();
    verify(&server, &ledger, &keys);
}

// ---- expiry across restarts --------------------------------------------------------

/// TTLs are absolute deadlines in the AOF: a restart does not extend them.
#[test]
fn ttl_is_absolute_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = server.client();
    let () = redis::cmd("SET").arg("short").arg("v").arg("PX").arg(1500).query(&mut con).unwrap();
    let () = redis::cmd("SET").arg("long").arg("v").arg("EX").arg(100).query(&mut con).unwrap();
    let () = redis::cmd("SETEX").arg("setex").arg(100).arg("v").query(&mut con).unwrap();
    let () = redis::cmd("SET").arg("expire").arg("v").query(&mut con).unwrap();
    let set: bool = redis::cmd("EXPIRE").arg("expire").arg(100).query(&mut con).unwrap();
    assert!(set);
    let since = Instant::now();
    drop(con);
    std::thread::sleep(Duration::from_millis(2000));
    server.kill9();
    server.restart();

    let mut con = server.client();
    let short: Option<String> = redis::cmd("GET").arg("short").query(&mut con).unwrap();
    assert_eq!(short, None, "SET PX 1500 is still there 2 s later: the restart restarted its TTL");
    let elapsed = since.elapsed().as_millis() as i64;
    for key in ["long", "setex", "expire"] {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
        assert!(
            pttl > 0 && pttl <= 100_000 - elapsed + 50,
            "{key}: PTTL {pttl} after {elapsed} ms: a TTL of 100 s was reset by the restart"
        );
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut con).unwrap();
        assert!((90..=98).contains(&ttl), "{key}: TTL {ttl}");
    }
}
