//! The write-ahead log: what an engine journals is what a fresh engine rebuilds.
//!
//! Three layers:
//! - `random_runs_recover_what_was_acknowledged`: random operations on an engine with a
//!   real `minicore::record_log::RecordLog` in a tempdir, compactions in steps with
//!   other operations between them, and restarts (close the log, replay every record
//!   into a fresh engine, compare, carry on with the new engine);
//! - the comparison is shown to fail: every single record of a scripted log is needed
//!   (dropping any one is reported), and deliberately broken replays and compactions
//!   are caught (`broken_variants_are_caught`);
//! - compaction end to end through the server over TCP, then a restart on the same
//!   directory (`compaction_through_the_server_keeps_every_live_job`).
//!
//! What is compared after a restart (the spec's "Recovery after kill -9"): the same job
//! ids, tubes, priorities, delays, TTRs, creation times, bodies and per-job counters;
//! delayed jobs with the same absolute deadline; buried and dead jobs still buried (and
//! in the same bury order); retry histories; tube policies; live `put-unique` keys;
//! reserved jobs come back ready; and `next_id` never goes down.
//!
//! Tests named `bug_*` fail against the engine as committed; see their comments.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use minicore::record_log::{FsyncPolicy, LogOptions, RecordLog};
use miniqueue::engine::{Engine, Journal, ReserveOutcome};
use miniqueue::job::{ConnId, Counters, History, Nanos, State};
use miniqueue::protocol::BackoffKind;
use miniqueue::retry::RetryPolicy;
use miniqueue::wal::{FailOutcome, ImageState, Record};
use proptest::prelude::*;
use support::*;

/// Small segments, so a few dozen records already span several files and compaction
/// has whole segments to delete. No fsync: a clean close writes everything, and power
/// loss is not what these tests are about.
fn log_options() -> LogOptions {
    LogOptions { segment_bytes: 4096, fsync: FsyncPolicy::Never, ..LogOptions::default() }
}

/// A temporary directory, on tmpfs when there is one: these tests open, fsync and close
/// hundreds of small logs, and nothing they check depends on the disk.
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fn open_log(dir: &Path) -> Arc<RecordLog> {
    let (log, report) = RecordLog::open(dir, log_options()).expect("open the record log");
    assert!(report.truncated.is_none(), "a cleanly closed log has no torn tail: {report:?}");
    Arc::new(log)
}

/// Closes a log whose last handle this is (so nothing else can still append to it).
fn close_log(log: Arc<RecordLog>) {
    let log = Arc::try_unwrap(log).unwrap_or_else(|_| panic!("someone still holds the record log"));
    log.close().expect("close the record log");
}

/// Replays every record in `dir` into a fresh engine, each passed through `mutate`
/// first (the identity for the real thing; the broken variants drop or rewrite
/// records). Returns the engine, with the log attached as its journal, as the server
/// does after recovery.
fn recover(dir: &Path, now: Nanos, mutate: &mut dyn FnMut(u64, Record) -> Option<Record>) -> (Engine, Arc<RecordLog>) {
    let log = open_log(dir);
    let mut engine = Engine::new(99);
    for item in log.reader(log.first_lsn()).expect("reader") {
        let (lsn, payload) = item.expect("read a record");
        let record = Record::decode(&payload).unwrap_or_else(|e| panic!("record {lsn}: {e}"));
        if let Some(record) = mutate(lsn, record) {
            engine.replay(record, lsn);
        }
    }
    engine.check_invariants();
    engine.finish_recovery(now);
    engine.check_invariants();
    engine.attach_journal(Journal::new(log.clone()));
    (engine, log)
}

fn faithful(_: u64, record: Record) -> Option<Record> {
    Some(record)
}

// ---- what a restart must keep --------------------------------------------------------

/// Where a job is, as a restart sees it: reserved is ready, and so is delayed with its
/// deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Ready,
    Delayed(Nanos),
    Buried,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct JobView {
    tube: String,
    pri: u32,
    delay: Nanos,
    ttr: Nanos,
    created_at: Nanos,
    body: Vec<u8>,
    place: Place,
    counters: Counters,
    history: History,
}

/// Everything a restart promises to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    jobs: BTreeMap<u64, JobView>,
    /// Buried jobs of each tube, oldest bury first (kick and peek-buried order).
    bury_order: BTreeMap<String, Vec<u64>>,
    policies: BTreeMap<String, RetryPolicy>,
    /// (tube, key) -> (taken until, holder), for keys still taken.
    unique: BTreeMap<(String, String), (Nanos, u64)>,
    next_id: u64,
}

impl Snapshot {
    /// The tubes a restarted engine (with no connections yet) must have: default, and
    /// every tube a job, a policy or a live unique key refers to.
    fn tubes(&self) -> BTreeSet<String> {
        let mut tubes: BTreeSet<String> = ["default".to_owned()].into();
        tubes.extend(self.jobs.values().map(|j| j.tube.clone()));
        tubes.extend(self.policies.keys().cloned());
        tubes.extend(self.unique.keys().map(|(t, _)| t.clone()));
        tubes
    }
}

/// Reads an engine's state through its public API. Jobs come from `job()`; policies,
/// unique keys and the id counter from `rewrite_metadata`, which compaction uses to
/// write exactly that state, pointed at a scratch log for the occasion (and the
/// engine's own journal, `journal`, put back afterwards).
fn snapshot(engine: &mut Engine, now: Nanos, journal: &Arc<RecordLog>) -> Snapshot {
    let mut jobs = BTreeMap::new();
    let mut buried: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for id in job_ids(engine) {
        let j = engine.job(id).expect("listed");
        let place = match j.state {
            State::Ready | State::Reserved { .. } => Place::Ready,
            // Overdue: ready at the next tick, which a server runs as soon as it starts
            // (and a delayed job becoming ready writes no record, by design).
            State::Delayed { deadline } if deadline <= now => Place::Ready,
            State::Delayed { deadline } => Place::Delayed(deadline),
            State::Buried { seq } => {
                buried.entry(j.tube.to_string()).or_default().push((seq, id));
                Place::Buried
            }
        };
        let view = JobView {
            tube: j.tube.to_string(),
            pri: j.pri,
            delay: j.delay,
            ttr: j.ttr,
            created_at: j.created_at,
            body: j.body.to_vec(),
            place,
            counters: j.counters,
            history: j.history.clone(),
        };
        jobs.insert(id, view);
    }
    let bury_order = buried
        .into_iter()
        .map(|(tube, mut list)| {
            list.sort_unstable();
            (tube, list.into_iter().map(|(_, id)| id).collect())
        })
        .collect();

    let scratch_dir = tempdir();
    let scratch = open_log(scratch_dir.path());
    engine.attach_journal(Journal::new(scratch.clone()));
    let last = engine.rewrite_metadata(now).expect("scratch log append");
    engine.attach_journal(Journal::new(journal.clone()));
    if let Some(last) = last {
        scratch.write_out(last).expect("write out");
    }
    let (mut policies, mut unique, mut next_id) = (BTreeMap::new(), BTreeMap::new(), None);
    for item in scratch.reader(0).expect("reader") {
        let (_, payload) = item.expect("read back");
        match Record::decode(&payload).expect("decode") {
            Record::Policy { tube, policy: Some(p) } => {
                policies.insert(tube, p);
            }
            Record::Unique { tube, key, expires_at, job } => {
                unique.insert((tube, key), (expires_at, job));
            }
            Record::NextId { next } => next_id = Some(next),
            other => panic!("rewrite_metadata wrote {other:?}"),
        }
    }
    close_log(scratch);
    Snapshot { jobs, bury_order, policies, unique, next_id: next_id.expect("rewrite_metadata writes NextId") }
}

/// What differs between the state before a restart and after it, one line each.
fn differences(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (id, b) in &before.jobs {
        match after.jobs.get(id) {
            None => out.push(format!("job {id} lost ({b:?})")),
            Some(a) if a != b => out.push(format!("job {id}: before {b:?}\n        after  {a:?}")),
            Some(_) => {}
        }
    }
    for id in after.jobs.keys().filter(|id| !before.jobs.contains_key(id)) {
        out.push(format!("job {id} came back from the dead: {:?}", after.jobs[id]));
    }
    if before.bury_order != after.bury_order {
        out.push(format!("bury order: before {:?}, after {:?}", before.bury_order, after.bury_order));
    }
    if before.policies != after.policies {
        out.push(format!("policies: before {:?}, after {:?}", before.policies, after.policies));
    }
    if before.unique != after.unique {
        out.push(format!("unique keys: before {:?}, after {:?}", before.unique, after.unique));
    }
    if after.next_id < before.next_id {
        out.push(format!("next id went down: {} -> {}", before.next_id, after.next_id));
    } else if after.next_id != before.next_id {
        out.push(format!("next id changed: {} -> {}", before.next_id, after.next_id));
    }
    out
}

fn assert_same(before: &Snapshot, after: &Snapshot) {
    let diff = differences(before, after);
    assert!(diff.is_empty(), "the restart changed the queue:\n  {}", diff.join("\n  "));
}

/// What a restarted engine must look like on its own: no reserved jobs (no connection
/// survives a restart) and exactly the tubes its state refers to.
fn check_fresh(engine: &Engine, snap: &Snapshot) {
    assert_eq!(stat(engine, "current-jobs-reserved"), 0);
    assert_eq!(stat(engine, "current-tubes"), snap.tubes().len() as u64, "tubes after recovery: {:?}", snap.tubes());
}

// ---- compaction, as server::compact does it ------------------------------------------

/// How a compaction goes about it: the real thing, or a deliberately broken variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compactor {
    Faithful,
    /// Does not rewrite delayed jobs (they are "not ready yet", so someone might think
    /// they can wait).
    SkipsDelayedJobs,
    /// Does not rewrite policies, unique keys and the id counter.
    SkipsMetadata,
}

/// A compaction in progress: the boundary its roll made and the jobs to rewrite.
struct Compaction {
    boundary: u64,
    ids: Vec<u64>,
    done: usize,
}

fn compaction_start(engine: &Engine, log: &RecordLog, compactor: Compactor) -> Compaction {
    let boundary = log.roll_segment().expect("roll");
    let mut ids = engine.jobs_imaged_before(boundary);
    if compactor == Compactor::SkipsDelayedJobs {
        ids.retain(|&id| !matches!(engine.job(id).map(|j| j.state), Some(State::Delayed { .. })));
    }
    Compaction { boundary, ids, done: 0 }
}

fn compaction_chunk(engine: &mut Engine, c: &mut Compaction, n: usize) {
    let end = c.done.saturating_add(n).min(c.ids.len());
    for &id in &c.ids[c.done..end] {
        engine.rewrite_image(id, c.boundary).expect("append");
    }
    c.done = end;
    engine.check_invariants();
}

fn compaction_finish(engine: &mut Engine, log: &RecordLog, mut c: Compaction, compactor: Compactor, now: Nanos) {
    compaction_chunk(engine, &mut c, usize::MAX);
    if compactor != Compactor::SkipsMetadata {
        engine.rewrite_metadata(now).expect("append");
    }
    let next = log.next_lsn();
    if next > 0 {
        log.sync(next - 1).expect("sync");
    }
    log.delete_segments_before(c.boundary).expect("delete segments");
    assert!(log.first_lsn() <= c.boundary, "records at or after the boundary stay");
}

fn compact(engine: &mut Engine, log: &RecordLog, compactor: Compactor, now: Nanos) {
    let c = compaction_start(engine, log, compactor);
    compaction_finish(engine, log, c, compactor, now);
}

// ---- the random run ------------------------------------------------------------------

/// KNOWN BUG, see `bug_ttr_expiry_under_a_policy_is_not_a_timeout_after_restart`: a TTR
/// running out on a tube with a policy journals only a `Fail` record, so the job's
/// `timeouts` counter is lower after a restart. While that stands the comparison
/// ignores `timeouts` of jobs with failures. Set to `true` once fixed.
const STRICT_TIMEOUTS: bool = true;

/// KNOWN BUG, see `bug_a_job_reserved_by_id_comes_back_ready`: `reserve-job` on a
/// delayed or buried job journals only a `Reserve` record, so after a restart the job is
/// back where it was instead of ready. While that stands the random run uses
/// `reserve-job` on ready jobs only. Set to `true` once fixed.
const STRICT_RESERVE_JOB: bool = true;

/// KNOWN BUG, see `bug_compaction_keeps_the_bury_order`: compaction rewrites jobs in
/// hash-map order, and replay buries imaged jobs in log order (also when a restart
/// interrupts a compaction and a job's new image replaces its old one), so after a
/// compaction and a restart kick and peek-buried take a different job first. While that
/// stands the comparison ignores the bury order when images were rewritten since the
/// last restart. Set to `true` once fixed.
const STRICT_BURY_ORDER: bool = true;

/// An engine journaling into a log in a tempdir, driven by random operations.
struct Run {
    dir: tempfile::TempDir,
    log: Option<Arc<RecordLog>>,
    engine: Engine,
    conns: [ConnId; SLOTS],
    waiting: [bool; SLOTS],
    now: Nanos,
    compaction: Option<Compaction>,
    /// Images were rewritten since the last restart (for STRICT_BURY_ORDER).
    compacted: bool,
    /// The highest id ever handed out: a restart must continue above it.
    max_id: u64,
    restarts: u32,
}

impl Run {
    fn new(seed: u64) -> Self {
        let dir = tempdir();
        let log = open_log(dir.path());
        let mut engine = Engine::new(seed);
        engine.attach_journal(Journal::new(log.clone()));
        let conns = std::array::from_fn(|_| engine.connect());
        Run {
            dir,
            log: Some(log),
            engine,
            conns,
            waiting: [false; SLOTS],
            now: T0,
            compaction: None,
            compacted: false,
            max_id: 0,
            restarts: 0,
        }
    }

    fn log(&self) -> &Arc<RecordLog> {
        self.log.as_ref().expect("open")
    }

    /// Connections blocked in reserve are told what the engine handed them.
    fn collect_wakeups(&mut self) {
        for (conn, _) in self.engine.take_wakeups() {
            if let Some(slot) = self.conns.iter().position(|&c| c == conn) {
                self.waiting[slot] = false;
            }
        }
    }

    fn step(&mut self, op: &Op) {
        let now = self.now;
        // A connection blocked in reserve sends nothing but can hang up (see engine.rs).
        let waiting = self.waiting;
        let free = |slot: usize| !waiting[slot];
        let e = &mut self.engine;
        match *op {
            Op::Put { conn, pri, delay_ms, ttr_s, body } if free(conn) => {
                let job = new_job(pri, ms(i64::from(delay_ms)), secs(i64::from(ttr_s)), &format!("body {body}"));
                if let Ok(miniqueue::engine::PutOutcome::Inserted(id)) = e.put(self.conns[conn], job, now) {
                    self.max_id = self.max_id.max(id);
                }
            }
            Op::PutUnique { conn, key, ttl_s } if free(conn) => {
                let job = unique_job(&format!("key-{key}"), secs(i64::from(ttl_s)), &format!("unique {key}"));
                if let Ok(miniqueue::engine::PutOutcome::Inserted(id)) = e.put(self.conns[conn], job, now) {
                    self.max_id = self.max_id.max(id);
                }
            }
            Op::Use { conn, tube } if free(conn) => {
                e.use_tube(self.conns[conn], TUBES[tube]);
            }
            Op::Watch { conn, tube } if free(conn) => {
                e.watch(self.conns[conn], TUBES[tube]);
            }
            Op::Ignore { conn, tube } if free(conn) => {
                e.ignore(self.conns[conn], TUBES[tube]);
            }
            Op::Reserve { conn, wait } if free(conn) => {
                let outcome = e.reserve(self.conns[conn], wait.timeout(), now);
                self.waiting[conn] = outcome == ReserveOutcome::Waiting;
            }
            Op::ReserveJob { conn, job } if free(conn) => {
                let id = job.resolve(e, self.conns[conn]);
                let ready = matches!(e.job(id).map(|j| j.state), Some(State::Ready));
                if STRICT_RESERVE_JOB || ready {
                    e.reserve_job(self.conns[conn], id, now);
                }
            }
            Op::Delete { conn, job } if free(conn) => {
                let id = job.resolve(e, self.conns[conn]);
                e.delete(self.conns[conn], id, now).expect("append");
            }
            Op::Release { conn, job, pri, delay_ms } if free(conn) => {
                let id = job.resolve(e, self.conns[conn]);
                e.release(self.conns[conn], id, pri, ms(i64::from(delay_ms)), now).expect("append");
            }
            Op::Bury { conn, job, pri } if free(conn) => {
                let id = job.resolve(e, self.conns[conn]);
                e.bury(self.conns[conn], id, pri).expect("append");
            }
            Op::Touch { conn, job } if free(conn) => {
                let id = job.resolve(e, self.conns[conn]);
                e.touch(self.conns[conn], id, now);
            }
            Op::Fail { conn, job } if free(conn) => {
                let id = job.resolve(e, self.conns[conn]);
                e.fail(self.conns[conn], id, "boom", now).expect("append");
            }
            Op::Kick { conn, bound } if free(conn) => {
                e.kick(self.conns[conn], u32::from(bound), now).expect("append");
            }
            Op::KickJob { job } => {
                let id = job.resolve(e, 0);
                e.kick_job(id, now).expect("append");
            }
            Op::Pause { tube, secs: s } => {
                e.pause_tube(TUBES[tube], secs(i64::from(s)), now);
            }
            Op::Policy { tube, policy } => e.set_policy(TUBES[tube], policy).expect("append"),
            Op::PurgeDead { tube } => {
                e.purge_dead(TUBES[tube], now).expect("append");
            }
            Op::Disconnect { conn } => {
                e.disconnect(self.conns[conn], now);
                self.conns[conn] = e.connect();
                self.waiting[conn] = false;
            }
            Op::Advance { ms: step, tick } => {
                self.now += ms(i64::from(step));
                if tick {
                    e.tick(self.now);
                }
            }
            Op::CompactStart if self.compaction.is_none() => {
                self.compaction = Some(compaction_start(&self.engine, self.log(), Compactor::Faithful));
            }
            Op::CompactChunk { jobs } => {
                if let Some(c) = &mut self.compaction {
                    compaction_chunk(&mut self.engine, c, usize::from(jobs));
                    self.compacted = true;
                }
            }
            Op::CompactFinish => {
                if let Some(c) = self.compaction.take() {
                    let log = self.log().clone();
                    compaction_finish(&mut self.engine, &log, c, Compactor::Faithful, now);
                    self.compacted = true;
                }
            }
            Op::Restart => self.restart(),
            _ => {} // a blocked connection's command, or a compaction step out of turn
        }
        self.collect_wakeups();
        self.engine.check_invariants();
    }

    /// Closes the log (abandoning a compaction in progress, as a crash would), replays
    /// it into a fresh engine, compares, and carries on with that engine.
    fn restart(&mut self) {
        let now = self.now;
        let log = self.log.take().expect("open");
        let mut before = snapshot(&mut self.engine, now, &log);
        // The old engine goes, and with it the journal's handle on the log.
        drop(std::mem::replace(&mut self.engine, Engine::new(0)));
        self.compaction = None;
        close_log(log);

        let (mut engine, log) = recover(self.dir.path(), now, &mut faithful);
        let mut after = snapshot(&mut engine, now, &log);
        check_fresh(&engine, &after);
        assert!(
            after.next_id > self.max_id,
            "next id {} after restart, but id {} was handed out",
            after.next_id,
            self.max_id
        );
        if !STRICT_TIMEOUTS {
            for (id, job) in before.jobs.iter_mut() {
                if let Some(a) = after.jobs.get_mut(id).filter(|_| job.history.failures > 0) {
                    a.counters.timeouts = job.counters.timeouts;
                }
            }
        }
        if !STRICT_BURY_ORDER && self.compacted {
            after.bury_order = before.bury_order.clone();
        }
        assert_same(&before, &after);

        self.conns = std::array::from_fn(|_| engine.connect());
        self.waiting = [false; SLOTS];
        self.engine = engine;
        self.log = Some(log);
        self.compacted = false;
        self.restarts += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random operations, compactions in steps and restarts: every restart rebuilds
    /// exactly the state that was acknowledged (see `Snapshot`).
    #[test]
    fn random_runs_recover_what_was_acknowledged(
        seed in any::<u64>(),
        ops in proptest::collection::vec(recovery_op(), 1..150),
    ) {
        let mut run = Run::new(seed);
        for op in &ops {
            run.step(op);
        }
        run.step(&Op::Restart);
        // The restarted engine goes on working, journaling into the same log.
        for op in ops.iter().take(40) {
            run.step(op);
        }
        run.step(&Op::CompactStart);
        run.step(&Op::CompactFinish);
        run.step(&Op::Restart);
    }
}

// ---- the comparison can fail ---------------------------------------------------------

/// A scripted history in which every record matters. Returns the engine that wrote
/// it, the log (still open, attached to the engine) and the time it ended at.
///
/// | job | history                                          | records                        |
/// |-----|--------------------------------------------------|--------------------------------|
/// | 1   | put, reserve, release with a 30 s delay          | Image Reserve Release          |
/// | 2   | put, reserve, bury, kick                         | Image Reserve Bury Kick        |
/// |     | tube-policy p 2 none                             | Policy                         |
/// | 3   | put in p, reserve, fail, reserve, fail: dead     | Image Reserve Fail Reserve Fail|
/// | 4   | put (TTR 1 s), reserve, the TTR runs out         | Image Reserve Timeout          |
/// | 5   | put-unique k                                     | Unique Image                   |
/// | 6   | put, delete (the highest id: next_id needs it)   | Image Delete                   |
fn scripted(dir: &Path) -> (Engine, Arc<RecordLog>, Nanos) {
    let log = open_log(dir);
    let mut e = Engine::new(1);
    e.attach_journal(Journal::new(log.clone()));
    let c = e.connect();
    let mut now = T0;
    let put = |e: &mut Engine, job, now| match e.put(c, job, now).expect("append") {
        miniqueue::engine::PutOutcome::Inserted(id) => id,
        other => panic!("{other:?}"),
    };
    let j1 = put(&mut e, new_job(1, 0, secs(60), "one"), now);
    e.reserve_job(c, j1, now).expect("ready");
    assert!(e.release(c, j1, 2, secs(30), now).unwrap());
    let j2 = put(&mut e, new_job(3, 0, secs(60), "two"), now);
    e.reserve_job(c, j2, now).expect("ready");
    assert!(e.bury(c, j2, 4).unwrap());
    assert!(e.kick_job(j2, now).unwrap());
    e.set_policy("p", Some(policy(2, BackoffKind::None, 0, 0))).unwrap();
    e.use_tube(c, "p");
    let j3 = put(&mut e, new_job(5, 0, secs(60), "three"), now);
    for _ in 0..2 {
        e.reserve_job(c, j3, now).expect("ready");
        e.fail(c, j3, "boom", now).unwrap();
        now += secs(1);
    }
    assert!(e.job(j3).unwrap().is_dead());
    e.use_tube(c, "default");
    let j4 = put(&mut e, new_job(6, 0, secs(1), "four"), now);
    e.reserve_job(c, j4, now).expect("ready");
    now += secs(1);
    e.tick(now);
    assert_eq!(e.job(j4).unwrap().counters.timeouts, 1);
    put(&mut e, unique_job("k", secs(3600), "five"), now);
    let j6 = put(&mut e, new_job(7, 0, secs(60), "six"), now);
    assert!(e.delete(c, j6, now).unwrap());
    e.check_invariants();
    e.disconnect(c, now);
    (e, log, now)
}

/// Runs the script, closes the log and returns the state the script left plus the
/// directory holding its log.
fn scripted_log(compaction: Option<Compactor>) -> (Snapshot, tempfile::TempDir, Nanos) {
    let dir = tempdir();
    let (mut e, log, now) = scripted(dir.path());
    if let Some(compactor) = compaction {
        compact(&mut e, &log, compactor, now);
    }
    let before = snapshot(&mut e, now, &log);
    drop(e);
    close_log(log);
    (before, dir, now)
}

/// What a replay through `mutate` rebuilds from the log in `dir`.
fn replayed(dir: &Path, now: Nanos, mutate: &mut dyn FnMut(u64, Record) -> Option<Record>) -> Snapshot {
    let (mut e, log) = recover(dir, now, mutate);
    let snap = snapshot(&mut e, now, &log);
    drop(e);
    close_log(log);
    snap
}

#[test]
fn the_script_recovers_exactly_with_and_without_compaction() {
    for compaction in [None, Some(Compactor::Faithful)] {
        let (before, dir, now) = scripted_log(compaction);
        assert_eq!(before.jobs.len(), 5);
        let after = replayed(dir.path(), now, &mut faithful);
        assert_same(&before, &after);
    }
}

/// Every record of the script is needed: replaying the log with any single record
/// left out is reported as a difference. This is what makes the random run's
/// comparison worth something: a replay (or a writer) that forgets any kind of record
/// fails it.
#[test]
fn every_single_record_is_needed() {
    let (before, dir, now) = scripted_log(None);
    let total = replayed(dir.path(), now, &mut faithful);
    assert_same(&before, &total);
    let records = {
        let log = open_log(dir.path());
        let n = log.next_lsn();
        close_log(log);
        n
    };
    assert_eq!(records, 20, "the script's table");
    for dropped in 0..records {
        let mut kind = String::new();
        let after = replayed(dir.path(), now, &mut |lsn, record| {
            if lsn == dropped {
                kind = format!("{record:?}");
                None
            } else {
                Some(record)
            }
        });
        let diff = differences(&before, &after);
        assert!(!diff.is_empty(), "dropping record {dropped} ({kind}) went unnoticed");
    }
}

/// Deliberately broken replays and compactions, each of which the comparison reports.
#[test]
fn broken_variants_are_caught() {
    let (before, dir, now) = scripted_log(None);
    type Mutant = Box<dyn FnMut(u64, Record) -> Option<Record>>;
    let mut mutants: Vec<(&str, Mutant)> = vec![
        (
            "a replay that ignores Release deadlines",
            Box::new(|_, r| match r {
                Record::Release { id, pri, delay, .. } => Some(Record::Release { id, pri, delay, deadline: None }),
                r => Some(r),
            }),
        ),
        (
            "a replay that forgets dead marks",
            Box::new(|_, r| match r {
                Record::Fail { id, at, error, outcome: FailOutcome::Dead { .. } } => {
                    Some(Record::Fail { id, at, error, outcome: FailOutcome::Ready })
                }
                r => Some(r),
            }),
        ),
        (
            "a replay that skips Reserve records",
            Box::new(|_, r| Some(r).filter(|r| !matches!(r, Record::Reserve { .. }))),
        ),
    ];
    for (name, mutate) in mutants.iter_mut() {
        let after = replayed(dir.path(), now, mutate.as_mut());
        assert!(!differences(&before, &after).is_empty(), "{name} went unnoticed");
    }

    // After a compaction the delayed job 1 lives in an image, not in a Release record.
    let (before, dir, now) = scripted_log(Some(Compactor::Faithful));
    let after = replayed(dir.path(), now, &mut |_, r| match r {
        Record::Image(mut image) => {
            if let ImageState::Delayed { .. } = image.state {
                image.state = ImageState::Ready;
            }
            Some(Record::Image(image))
        }
        r => Some(r),
    });
    assert!(!differences(&before, &after).is_empty(), "a replay that brings delayed images back ready went unnoticed");

    // The script's job 1 is delayed when the compaction runs: skipping it loses it.
    // Skipping the metadata loses policy p and, since job 6 (the highest id) was
    // deleted, lets the id counter go down.
    for compactor in [Compactor::SkipsDelayedJobs, Compactor::SkipsMetadata] {
        let (before, dir, now) = scripted_log(Some(compactor));
        let diff = differences(&before, &replayed(dir.path(), now, &mut faithful));
        assert!(!diff.is_empty(), "{compactor:?} went unnoticed");
        if compactor == Compactor::SkipsMetadata {
            assert!(diff.iter().any(|d| d.contains("next id went down")), "{diff:?}");
        }
    }
}

// ---- bugs (engine level) -------------------------------------------------------------

/// A TTR that runs out counts in the job's `timeouts` (and `job-timeouts`) whether or
/// not the tube has a policy; beanstalkd keeps per-job counters across a restart, and
/// so does miniqueue for every other counter. Under a policy the engine journals only
/// the `Fail`, so the restart forgets the timeout.
#[test]
fn bug_ttr_expiry_under_a_policy_is_not_a_timeout_after_restart() {
    let dir = tempdir();
    let log = open_log(dir.path());
    let mut e = Engine::new(1);
    e.attach_journal(Journal::new(log.clone()));
    e.set_policy("default", Some(policy(5, BackoffKind::None, 0, 0))).unwrap();
    let c = e.connect();
    e.put(c, new_job(0, 0, secs(1), "x"), T0).unwrap();
    assert!(matches!(e.reserve(c, Some(0), T0), ReserveOutcome::Reserved { id: 1, .. }));
    e.tick(T0 + secs(1));
    assert_eq!(e.job(1).unwrap().counters.timeouts, 1);
    assert_eq!(e.job(1).unwrap().history.failures, 1);
    drop(e);
    close_log(log);
    let (e, log) = recover(dir.path(), T0 + secs(2), &mut faithful);
    let timeouts = e.job(1).unwrap().counters.timeouts;
    drop(e);
    close_log(log);
    assert_eq!(timeouts, 1, "stats-job timeouts after a restart");
}

/// The spec: "reserved jobs come back **ready**". A job reserved with `reserve-job`
/// from the delayed or buried state journals only a `Reserve` record, which replay
/// reads as "attempts + 1, stays where it is": after a restart the job is delayed
/// (with its old deadline) or buried again. (A compaction while it is reserved images
/// it as ready, so the outcome even depends on whether one ran.)
#[test]
fn bug_a_job_reserved_by_id_comes_back_ready() {
    let dir = tempdir();
    let log = open_log(dir.path());
    let mut e = Engine::new(1);
    e.attach_journal(Journal::new(log.clone()));
    let c = e.connect();
    e.put(c, new_job(0, secs(3600), secs(60), "delayed"), T0).unwrap();
    e.put(c, new_job(0, 0, secs(60), "buried"), T0).unwrap();
    e.reserve_job(c, 2, T0).unwrap();
    e.bury(c, 2, 0).unwrap();
    e.reserve_job(c, 1, T0).expect("a delayed job can be reserved by id");
    e.reserve_job(c, 2, T0).expect("a buried job can be reserved by id");
    drop(e); // a crash while both are reserved
    close_log(log);
    let (e, log) = recover(dir.path(), T0 + secs(1), &mut faithful);
    let states = (e.job(1).unwrap().state, e.job(2).unwrap().state);
    drop(e);
    close_log(log);
    assert_eq!(states, (State::Ready, State::Ready), "reserved jobs come back ready");
}

/// Compaction rewrites live jobs in `jobs_imaged_before` order (a HashMap's), and
/// replay buries imaged jobs in log order: after a compaction and a restart the buried
/// list (what `kick` and `peek-buried` take first, and the DLQ's "oldest first") is
/// shuffled.
#[test]
fn bug_compaction_keeps_the_bury_order() {
    let dir = tempdir();
    let log = open_log(dir.path());
    let mut e = Engine::new(1);
    e.attach_journal(Journal::new(log.clone()));
    let c = e.connect();
    for i in 0..8 {
        e.put(c, new_job(0, 0, secs(60), &format!("{i}")), T0).unwrap();
    }
    // Bury newest first, so neither id order nor put order is the bury order.
    for id in (1..=8).rev() {
        e.reserve_job(c, id, T0).unwrap();
        e.bury(c, id, 0).unwrap();
    }
    compact(&mut e, &log, Compactor::Faithful, T0);
    let before = snapshot(&mut e, T0, &log);
    assert_eq!(before.bury_order["default"], (1..=8).rev().collect::<Vec<u64>>());
    drop(e);
    close_log(log);
    let after = replayed(dir.path(), T0, &mut faithful);
    assert_eq!(after.bury_order, before.bury_order, "kick order after compaction and restart");
}

// ---- through the server --------------------------------------------------------------

/// A tiny beanstalk client over a blocking socket: one command, one reply.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { reader: BufReader::new(stream.try_clone().expect("clone")), writer: stream }
    }

    /// Sends `line` and returns the reply line and, for replies that carry one (`OK`,
    /// `FOUND`, `RESERVED`), the data after it.
    fn call(&mut self, line: &str, body: Option<&[u8]>) -> (String, Vec<u8>) {
        let mut out = Vec::from(format!("{line}\r\n"));
        if let Some(body) = body {
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("send");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("reply");
        let reply =
            reply.strip_suffix("\r\n").unwrap_or_else(|| panic!("{line}: reply {reply:?} not CRLF-ended")).to_owned();
        let mut data = Vec::new();
        if ["OK ", "FOUND ", "RESERVED "].iter().any(|w| reply.starts_with(w)) {
            let len: usize = reply.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a byte count");
            data.resize(len + 2, 0);
            self.reader.read_exact(&mut data).expect("data");
            assert_eq!(data.split_off(len), b"\r\n");
        }
        (reply, data)
    }

    fn cmd(&mut self, line: &str) -> String {
        self.call(line, None).0
    }

    fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &str) -> u64 {
        let reply = self.call(&format!("put {pri} {delay} {ttr} {}", body.len()), Some(body.as_bytes())).0;
        reply.strip_prefix("INSERTED ").and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("put: {reply}"))
    }

    fn expect(&mut self, line: &str, reply: &str) {
        assert_eq!(self.cmd(line), reply, "{line}");
    }

    fn yaml(&mut self, line: &str) -> BTreeMap<String, String> {
        let (reply, data) = self.call(line, None);
        assert!(reply.starts_with("OK "), "{line}: {reply}");
        parse_yaml_map(&String::from_utf8(data).expect("utf-8")).into_iter().collect()
    }
}

/// A server in its own runtime, so that stopping it drops every task and with them the
/// last handle on the write-ahead log before the next server opens the directory.
struct Server {
    rt: tokio::runtime::Runtime,
    running: miniqueue::Running,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let mut config = miniqueue::config::Config::in_memory("127.0.0.1:0".parse().expect("addr"));
        config.wal_dir = Some(dir.to_path_buf());
        config.wal_file_size = 4096;
        config.never_fsync = true; // acknowledged = written to the OS; a clean stop is what we test
        let running = rt.block_on(miniqueue::start(config)).expect("start");
        Server { rt, running }
    }

    fn log(&self) -> Arc<RecordLog> {
        self.running.shared.log.clone().expect("-b")
    }

    fn stop(self) {
        let Server { rt, running } = self;
        running.shutdown.trigger();
        rt.block_on(running.wait());
        drop(rt);
    }
}

/// `stats-job` keys that must survive a restart unchanged (everything but `age`, the
/// state of a reserved job, and `time-left`, which is compared with a tolerance).
const STABLE_JOB_KEYS: &[&str] = &[
    "id",
    "tube",
    "pri",
    "delay",
    "ttr",
    "reserves",
    "timeouts",
    "releases",
    "buries",
    "kicks",
    "attempts",
    "failures",
    "last-error",
    "first-failed-at",
    "last-failed-at",
    "dead",
    "dead-at",
    "dead-reason",
];

/// Puts many jobs over TCP, deletes most, compacts through `server::compact`, checks
/// the log shrank, makes more changes, stops, restarts on the same directory, and
/// checks every live job is back in the right state (and the deleted ones are not).
///
/// What a broken compaction would do here: one that does not rewrite delayed jobs loses
/// `delayed` (NOT_FOUND after the restart); one that does not rewrite metadata loses the
/// `retry` tube's policy and the unique key, and hands out an id already used; one that
/// deletes segments from the wrong boundary loses the jobs put after it.
#[test]
fn compaction_through_the_server_keeps_every_live_job() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let log = server.log();
    let mut c = Client::connect(server.running.addr);

    c.expect("tube-policy retry 1 none 0 0", "POLICY_SET");
    c.expect("use work", "USING work");
    let filler = "x".repeat(100);
    let ids: Vec<u64> = (0..400).map(|i| c.put(i % 5, 0, 60, &format!("job-{i:03}-{filler}"))).collect();
    let (size_full, segments_full) = (log.size_bytes(), log.stats().segments);
    assert!(segments_full > 10, "4 KiB segments: {segments_full}");
    let mut live: BTreeSet<u64> = ids.iter().copied().step_by(20).collect();
    let mut gone: BTreeSet<u64> = BTreeSet::new();
    for id in &ids {
        if !live.contains(id) {
            c.expect(&format!("delete {id}"), "DELETED");
            gone.insert(*id);
        }
    }
    // One job in each interesting state.
    let delayed = c.put(1, 3600, 60, "delayed");
    c.expect("use graves", "USING graves");
    let graves: Vec<u64> = (0..5).map(|i| c.put(0, 0, 60, &format!("grave {i}"))).collect();
    for &i in &[3, 1, 4, 0, 2] {
        let (reply, _) = c.call(&format!("reserve-job {}", graves[i]), None);
        assert!(reply.starts_with("RESERVED "), "{reply}");
        c.expect(&format!("bury {} 7", graves[i]), "BURIED");
    }
    c.expect("use retry", "USING retry");
    let dead = c.put(0, 0, 60, "dead");
    assert!(c.call(&format!("reserve-job {dead}"), None).0.starts_with("RESERVED "));
    c.expect(&format!("fail {dead} it broke"), "DEAD");
    c.expect("use held", "USING held");
    let held = c.put(0, 0, 60, "held");
    let mut worker = Client::connect(server.running.addr);
    worker.expect("watch held", "WATCHING 2");
    worker.expect("ignore default", "WATCHING 1");
    let (reply, body) = worker.call("reserve-with-timeout 0", None);
    assert_eq!((reply, body), (format!("RESERVED {held} 4"), b"held".to_vec()));
    c.expect("use default", "USING default");
    let unique = c.call("put-unique order-7 3600 0 0 60 1", Some(b"u")).0;
    let unique: u64 = unique.strip_prefix("INSERTED ").and_then(|id| id.parse().ok()).expect("INSERTED");
    live.extend([delayed, dead, held, unique]);
    live.extend(&graves);

    let stats = c.yaml("stats");
    let live_count: u64 = ["ready", "reserved", "delayed", "buried"]
        .iter()
        .map(|s| stats[&format!("current-jobs-{s}")].parse::<u64>().expect("number"))
        .sum();
    assert_eq!(live_count, live.len() as u64);

    let next_before = log.next_lsn();
    let (rewritten, deleted) =
        server.rt.block_on(miniqueue::server::compact(&server.running.shared, &log)).expect("compaction");
    assert_eq!(rewritten, live.len(), "every live job is rewritten, nothing else");
    assert!(deleted >= 1);
    assert!(log.first_lsn() >= next_before, "every record from before the compaction is gone");
    let (size_compact, segments_compact) = (log.size_bytes(), log.stats().segments);
    assert!(size_compact < size_full / 4, "log {size_full} -> {size_compact} bytes");
    assert!(segments_compact < segments_full / 4, "{segments_full} -> {segments_compact} segments");

    // Changes after the compaction are ordinary records after the rewritten images.
    let released = *live.iter().next().expect("a job from the first batch");
    assert!(c.call(&format!("reserve-job {released}"), None).0.starts_with("RESERVED "));
    c.expect(&format!("release {released} 9 1800"), "RELEASED");
    let deleted_late = *live.iter().nth(1).expect("another");
    c.expect(&format!("delete {deleted_late}"), "DELETED");
    live.remove(&deleted_late);
    gone.insert(deleted_late);
    let late = c.put(2, 0, 60, "put after the compaction");
    live.insert(late);

    let expected: BTreeMap<u64, (BTreeMap<String, String>, Vec<u8>)> = live
        .iter()
        .map(|&id| {
            let stats = c.yaml(&format!("stats-job {id}"));
            let (reply, body) = c.call(&format!("peek {id}"), None);
            assert!(reply.starts_with("FOUND "), "{reply}");
            (id, (stats, body))
        })
        .collect();
    assert_eq!(expected[&held].0["state"], "reserved");
    let retry_tube = c.yaml("stats-tube retry");
    let peek_buried = c.call("use graves", None).0 + &c.call("peek-buried", None).0;
    drop(worker); // holding `held` until the end
    drop(c);
    server.stop();

    let server = Server::start(dir.path());
    let mut c = Client::connect(server.running.addr);
    for (&id, (before, body)) in &expected {
        let after = c.yaml(&format!("stats-job {id}"));
        for key in STABLE_JOB_KEYS {
            assert_eq!(after.get(*key), before.get(*key), "job {id}: {key} after the restart");
        }
        let state = if id == held { "ready" } else { before["state"].as_str() };
        assert_eq!(after["state"], state, "job {id}: reserved jobs come back ready, the rest as they were");
        if state == "delayed" {
            let (b, a): (i64, i64) = (before["time-left"].parse().expect("n"), after["time-left"].parse().expect("n"));
            assert!((b - a).abs() <= 2, "job {id}: the deadline is absolute: time-left {b} -> {a}");
        }
        let (reply, got) = c.call(&format!("peek {id}"), None);
        assert!(reply.starts_with("FOUND "), "{reply}");
        assert_eq!(&got, body, "job {id}: body");
    }
    for id in &gone {
        c.expect(&format!("peek {id}"), "NOT_FOUND");
    }
    let after_tube = c.yaml("stats-tube retry");
    for key in ["retry-max-attempts", "retry-backoff", "retry-base-ms", "retry-cap-ms", "current-jobs-dead"] {
        assert_eq!(after_tube.get(key), retry_tube.get(key), "stats-tube retry: {key}");
    }
    assert_eq!(c.call("put-unique order-7 3600 0 0 60 1", Some(b"u")).0, format!("DUPLICATE {unique}"));
    let max_id = *expected.keys().chain(gone.iter()).max().expect("ids");
    assert!(c.put(0, 0, 60, "new") > max_id, "ids continue above the highest id seen");
    let list = c.call("list-tubes", None).1;
    let list = String::from_utf8(list).expect("utf-8");
    for tube in ["default", "work", "graves", "retry", "held"] {
        assert!(list.contains(&format!("- {tube}\n")), "list-tubes: {list}");
    }
    // Last, as it fails for a known reason (bug_compaction_keeps_the_bury_order):
    // the oldest buried job is still the one peek-buried (and kick) take first.
    let peek_buried_after = c.call("use graves", None).0 + &c.call("peek-buried", None).0;
    drop(c);
    server.stop();
    assert_eq!(peek_buried_after, peek_buried, "peek-buried after compaction and restart");
}

/// After `Running::wait()` the server should let go of its write-ahead log, so that a
/// restart in the same process (an embedder, `mini up`, a test) does not open the
/// directory a second time while the first `RecordLog` is still alive (minicore's
/// record log has no lock and says two opens on one directory corrupt it). The
/// SIGUSR1 drain task never ends and keeps `Shared`, and so the log, alive.
#[test]
fn bug_shutdown_lets_go_of_the_log() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let weak = Arc::downgrade(&server.log());
    let Server { rt, running } = server;
    running.shutdown.trigger();
    rt.block_on(running.wait());
    let left = rt.block_on(async {
        for _ in 0..100 {
            if weak.strong_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        weak.strong_count()
    });
    drop(rt); // only now do the server's tasks go, and the log with them
    assert_eq!(left, 0, "handles on the record log one second after Running::wait returned");
}
