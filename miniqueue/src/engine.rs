//! The queue's state machine: jobs, tubes, reservations and timers, with no sockets and
//! no clock of its own.
//!
//! Every operation takes `now` (wall-clock nanoseconds) as an argument and returns what
//! the client should hear; work for *other* connections (a blocked `reserve` that now
//! gets a job, a `reserve-with-timeout` that timed out) is queued as [`Wakeup`]s for the
//! server to deliver. Timers are not threads: [`Engine::next_wakeup`] says when the next
//! deadline is due (a delayed job, a TTR, a reserve timeout, the one-second
//! `DEADLINE_SOON` margin, a paused tube) and [`Engine::tick`] processes everything due.
//! That is what lets the unit tests drive hours of queue time in microseconds.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> ready: put
//!     [*] --> delayed: put with delay
//!     delayed --> ready: deadline
//!     ready --> reserved: reserve
//!     reserved --> ready: release / TTR / disconnect
//!     reserved --> delayed: release with delay, or a failure under a policy (backoff)
//!     reserved --> buried: bury
//!     reserved --> dead: failure after max attempts
//!     buried --> ready: kick
//!     dead --> ready: kick (replay)
//!     reserved --> [*]: delete
//!     ready --> [*]: delete
//!     buried --> [*]: delete
//!     dead --> [*]: delete / purge
//! ```
//!
//! Durability: with a journal attached, every acknowledged change appends its
//! [`Record`] *before* the in-memory state changes, so a failed append leaves the state
//! as it was and the client gets `INTERNAL_ERROR`, never a half-applied write. The engine
//! only appends (a memcpy under the record log's short mutex); the server waits for the
//! fsync that [`Engine::take_lsn`] says it needs before it sends the reply.
//!
//! Where this differs from beanstalkd's scheduling, it is in the order waiting clients are
//! served (here: first come, first served per tube; beanstalkd: a rotating pick), which no
//! single client can observe.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use minicore::record_log::{LogError, RecordLog};

use crate::job::{ConnId, Counters, DeadMark, History, Job, Nanos, State, NANOS_PER_SEC, URGENT_THRESHOLD};
use crate::retry::{RetryPolicy, Verdict};
use crate::tube::Tube;
use crate::wal::{FailOutcome, ImageState, JobImage, Record};

/// A hash map with a fast, DoS-resistant hasher (keys come from clients).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// beanstalkd's `SAFETY_MARGIN`: a worker blocked in `reserve` is told `DEADLINE_SOON`
/// this long before one of its jobs' TTR runs out.
pub const SAFETY_MARGIN: Nanos = NANOS_PER_SEC;

/// How often expired `put-unique` keys are swept (lookups ignore expired keys anyway).
const UNIQUE_SWEEP_EVERY: Nanos = 10 * NANOS_PER_SEC;

/// What a blocked connection is told when its wait ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    Reserved { id: u64, body: Bytes },
    TimedOut,
    DeadlineSoon,
}

/// The outcome of `reserve` and `reserve-with-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved {
        id: u64,
        body: Bytes,
    },
    DeadlineSoon,
    TimedOut,
    /// The connection now waits; a [`Wakeup`] for it will follow.
    Waiting,
}

/// What a client gives `put`.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub pri: u32,
    pub delay: Nanos,
    /// At least a second (the parser raises it, as beanstalkd does).
    pub ttr: Nanos,
    pub body: Bytes,
    /// `put-unique`'s key and how long it stays taken.
    pub unique: Option<(String, Nanos)>,
}

/// The outcome of `put` and `put-unique`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Inserted(u64),
    /// `put-unique` with a key another live put holds: that job's id.
    Duplicate(u64),
}

/// The outcome of `fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReply {
    RetryingMs(u64),
    Dead,
    NotFound,
}

/// The write-ahead log failed; the change was not made.
#[derive(Debug, thiserror::Error)]
#[error("write-ahead log: {0}")]
pub struct JournalError(#[from] pub LogError);

/// The record log and what the engine tracks about it.
pub struct Journal {
    pub log: Arc<RecordLog>,
    /// Reused encoding buffer.
    scratch: Vec<u8>,
    /// The last LSN appended since [`Engine::take_lsn`] was last called.
    pending_lsn: Option<u64>,
    /// Records appended since start (stats: `binlog-records-written`).
    pub records_written: u64,
    /// Records rewritten by compaction (stats: `binlog-records-migrated`).
    pub records_migrated: u64,
}

impl Journal {
    pub fn new(log: Arc<RecordLog>) -> Self {
        Journal { log, scratch: Vec::with_capacity(256), pending_lsn: None, records_written: 0, records_migrated: 0 }
    }

    fn append(&mut self, record: &Record) -> Result<u64, JournalError> {
        self.scratch.clear();
        record.encode(&mut self.scratch);
        let lsn = self.log.append(&self.scratch)?;
        self.pending_lsn = Some(lsn);
        self.records_written += 1;
        Ok(lsn)
    }
}

/// Per-connection state the engine needs: which tubes it uses and watches, what it has
/// reserved, and whether it is blocked in `reserve`.
#[derive(Debug)]
pub struct Conn {
    pub use_tube: Arc<str>,
    /// In watch order; `ignore` swap-removes, as beanstalkd's `ms_remove` does, so
    /// `list-tubes-watched` lists tubes in the same order.
    pub watch: Vec<Arc<str>>,
    /// Reserved jobs as (TTR deadline, id).
    pub reserved: BTreeSet<(Nanos, u64)>,
    pub waiting: Option<Waiting>,
    /// The id a `put` line took before its body arrived (see [`Engine::begin_put`]).
    pub put_id: Option<u64>,
    pub producer: bool,
    pub worker: bool,
}

/// A blocked `reserve`.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    /// When `reserve-with-timeout` gives up; None waits forever.
    pub timeout_at: Option<Nanos>,
    /// When the `DEADLINE_SOON` check is due (entry in `Engine::soon_checks`).
    pub soon_at: Option<Nanos>,
}

/// Server-wide counters for `stats` (the per-command `cmd-*` counters live in the
/// server, as atomics).
#[derive(Debug, Default)]
pub struct Totals {
    pub job_timeouts: u64,
    pub total_jobs: u64,
    pub total_connections: u64,
}

/// The whole queue.
pub struct Engine {
    pub(crate) jobs: FastMap<u64, Job>,
    pub(crate) tubes: FastMap<Arc<str>, Tube>,
    /// Tubes in creation order, swap-removed on drop: `list-tubes` order, as beanstalkd.
    pub(crate) tube_order: Vec<Arc<str>>,
    pub(crate) conns: FastMap<ConnId, Conn>,
    next_conn: ConnId,
    pub(crate) next_id: u64,
    /// Every delayed job as (deadline, id), for the timer.
    delayed: BTreeSet<(Nanos, u64)>,
    /// Every reserved job as (TTR deadline, id), for the timer.
    reserved: BTreeSet<(Nanos, u64)>,
    /// Blocked reserves with a timeout, as (timeout, conn).
    wait_timeouts: BTreeSet<(Nanos, ConnId)>,
    /// Blocked reserves of connections holding jobs, as (deadline - margin, conn).
    soon_checks: BTreeSet<(Nanos, ConnId)>,
    /// Paused tubes as (unpause time, name).
    pauses: BTreeSet<(Nanos, Arc<str>)>,
    bury_seq: u64,
    pub(crate) totals: Totals,
    wakeups: Vec<(ConnId, Wakeup)>,
    rng: fastrand::Rng,
    pub(crate) journal: Option<Journal>,
    /// Bytes of live jobs, roughly: what a compacted log would hold.
    pub(crate) live_bytes: u64,
    last_unique_sweep: Nanos,
    /// Jobs deleted since start, per tube, with the put-to-delete latency, for metrics.
    deleted_latencies: Vec<(Arc<str>, Nanos)>,
    pub(crate) default_tube: Arc<str>,
}

impl Engine {
    /// An empty queue. `seed` drives the backoff jitter.
    pub fn new(seed: u64) -> Self {
        let default_tube: Arc<str> = Arc::from("default");
        let mut engine = Engine {
            jobs: FastMap::default(),
            tubes: FastMap::default(),
            tube_order: Vec::new(),
            conns: FastMap::default(),
            next_conn: 1,
            next_id: 1,
            delayed: BTreeSet::new(),
            reserved: BTreeSet::new(),
            wait_timeouts: BTreeSet::new(),
            soon_checks: BTreeSet::new(),
            pauses: BTreeSet::new(),
            bury_seq: 0,
            totals: Totals::default(),
            wakeups: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
            journal: None,
            live_bytes: 0,
            last_unique_sweep: 0,
            deleted_latencies: Vec::new(),
            default_tube: default_tube.clone(),
        };
        engine.tube_entry(&default_tube);
        engine
    }

    /// Attaches the write-ahead log: from now on every change is journaled.
    pub fn attach_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// The last LSN appended since the previous call: what the caller must make durable
    /// before replying.
    pub fn take_lsn(&mut self) -> Option<u64> {
        self.journal.as_mut().and_then(|j| j.pending_lsn.take())
    }

    /// Wakeups for other connections produced since the last call.
    pub fn take_wakeups(&mut self) -> Vec<(ConnId, Wakeup)> {
        std::mem::take(&mut self.wakeups)
    }

    /// (tube, put-to-delete nanoseconds) for each delete since the last call.
    pub fn take_deleted_latencies(&mut self) -> Vec<(Arc<str>, Nanos)> {
        std::mem::take(&mut self.deleted_latencies)
    }

    fn journal(&mut self, record: &Record) -> Result<Option<u64>, JournalError> {
        match &mut self.journal {
            Some(journal) => journal.append(record).map(Some),
            None => Ok(None),
        }
    }

    /// For changes no client waits on (a reservation's attempt count, a TTR expiry): a
    /// failed log is reported and the change made anyway, since refusing it would only
    /// strand the job.
    fn journal_best_effort(&mut self, record: &Record) -> Option<u64> {
        self.journal(record).unwrap_or_else(|e| {
            tracing::error!(error = %e, "write-ahead log append failed");
            None
        })
    }

    // ---- tubes -------------------------------------------------------------------

    fn tube_entry(&mut self, name: &str) -> Arc<str> {
        if let Some(tube) = self.tubes.get(name) {
            return tube.name.clone();
        }
        let name: Arc<str> = Arc::from(name);
        self.tubes.insert(name.clone(), Tube::new(name.clone()));
        self.tube_order.push(name.clone());
        name
    }

    fn tube(&mut self, name: &str) -> &mut Tube {
        self.tubes.get_mut(name).expect("a referenced tube exists")
    }

    /// Drops a tube once nothing refers to it.
    fn release_tube(&mut self, name: &str) {
        let Some(tube) = self.tubes.get(name) else { return };
        if tube.in_use() {
            return;
        }
        debug_assert!(tube.ready.is_empty() && tube.delayed.is_empty() && tube.buried.is_empty());
        if tube.pause > 0 {
            let key = (tube.unpause_at, tube.name.clone());
            self.pauses.remove(&key);
        }
        self.tubes.remove(name);
        if let Some(i) = self.tube_order.iter().position(|t| &**t == name) {
            self.tube_order.swap_remove(i);
        }
    }

    // ---- connections -------------------------------------------------------------

    /// A new client connection, using and watching `default`.
    pub fn connect(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.totals.total_connections += 1;
        let default = self.default_tube.clone();
        let tube = self.tube(&default);
        tube.using_ct += 1;
        tube.watching_ct += 1;
        self.conns.insert(
            id,
            Conn {
                use_tube: default.clone(),
                watch: vec![default],
                reserved: BTreeSet::new(),
                waiting: None,
                put_id: None,
                producer: false,
                worker: false,
            },
        );
        id
    }

    /// The connection closed: its reserved jobs go back to ready at once (beanstalkd's
    /// rule), counted as failures on tubes with a retry policy.
    pub fn disconnect(&mut self, conn: ConnId, now: Nanos) {
        self.stop_waiting(conn);
        let Some(state) = self.conns.get(&conn) else { return };
        let reserved: Vec<u64> = state.reserved.iter().map(|&(_, id)| id).collect();
        for id in reserved {
            self.take_reserved(id);
            let tube = self.jobs[&id].tube.clone();
            if self.tubes[&tube].policy.is_some() {
                self.fail_job(id, now, "connection closed");
            } else {
                self.make_ready(id, now);
            }
        }
        let state = self.conns.remove(&conn).expect("checked above");
        let use_tube = state.use_tube;
        self.tube(&use_tube).using_ct -= 1;
        self.release_tube(&use_tube);
        for name in state.watch {
            self.tube(&name).watching_ct -= 1;
            self.release_tube(&name);
        }
    }

    fn conn(&mut self, conn: ConnId) -> &mut Conn {
        self.conns.get_mut(&conn).expect("commands come from connected clients")
    }

    pub fn use_tube(&mut self, conn: ConnId, name: &str) -> Arc<str> {
        let name = self.tube_entry(name);
        self.tube(&name).using_ct += 1;
        let old = std::mem::replace(&mut self.conn(conn).use_tube, name.clone());
        self.tube(&old).using_ct -= 1;
        self.release_tube(&old);
        name
    }

    /// Returns the number of watched tubes.
    pub fn watch(&mut self, conn: ConnId, name: &str) -> usize {
        let name = self.tube_entry(name);
        let state = self.conn(conn);
        if !state.watch.contains(&name) {
            state.watch.push(name.clone());
            let len = state.watch.len();
            self.tube(&name).watching_ct += 1;
            return len;
        }
        let len = state.watch.len();
        self.release_tube(&name);
        len
    }

    /// Returns the number of watched tubes, or None for `NOT_IGNORED` (the last one).
    pub fn ignore(&mut self, conn: ConnId, name: &str) -> Option<usize> {
        let state = self.conn(conn);
        let Some(i) = state.watch.iter().position(|t| &**t == name) else {
            return Some(state.watch.len());
        };
        if state.watch.len() < 2 {
            return None;
        }
        let name = state.watch.swap_remove(i);
        let len = state.watch.len();
        self.tube(&name).watching_ct -= 1;
        self.release_tube(&name);
        Some(len)
    }

    // ---- put ---------------------------------------------------------------------

    /// A `put` line arrived (its body has not): as beanstalkd does, the connection is a
    /// producer from now on and the job gets its id now, so a body that then fails
    /// (`EXPECTED_CRLF`, `DRAINING`) has used up that id.
    pub fn begin_put(&mut self, conn: ConnId) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let state = self.conn(conn);
        state.producer = true;
        state.put_id = Some(id);
        id
    }

    /// `put` (and `put-unique`) into the connection's used tube, with the id
    /// [`begin_put`](Self::begin_put) gave it (or a fresh one).
    pub fn put(&mut self, conn: ConnId, new: NewJob, now: Nanos) -> Result<PutOutcome, JournalError> {
        let NewJob { pri, delay, ttr, body, unique } = new;
        let state = self.conn(conn);
        state.producer = true;
        let taken = state.put_id.take();
        let tube_name = state.use_tube.clone();
        // The id: the one the put line took, or the next one (taken below, once the put
        // is sure to happen, so a refused duplicate uses up nothing).
        let id = taken.unwrap_or(self.next_id);
        if let Some((key, ttl)) = &unique {
            if let Some(&(until, holder)) = self.tubes[&tube_name].unique.get(key) {
                if until > now {
                    return Ok(PutOutcome::Duplicate(holder));
                }
            }
            let record =
                Record::Unique { tube: tube_name.to_string(), key: key.clone(), expires_at: now + ttl, job: id };
            self.journal(&record)?;
        }
        let job_state = if delay > 0 { State::Delayed { deadline: now + delay } } else { State::Ready };
        let mut job = Job {
            id,
            tube: tube_name.clone(),
            pri,
            delay,
            ttr,
            created_at: now,
            body,
            state: job_state,
            counters: Counters::default(),
            history: History::default(),
            image_lsn: 0,
        };
        if let Some(lsn) = self.journal(&Record::Image(image_of(&job)))? {
            job.image_lsn = lsn;
        }
        if taken.is_none() {
            self.next_id += 1;
        }
        if let Some((key, ttl)) = unique {
            self.tube(&tube_name).unique.insert(key, (now + ttl, id));
        }
        self.totals.total_jobs += 1;
        let tube = self.tube(&tube_name);
        tube.total_jobs += 1;
        tube.jobs_ct += 1;
        self.live_bytes += job.footprint();
        job.state = State::Ready; // placed below
        self.jobs.insert(id, job);
        match job_state {
            State::Delayed { deadline } => self.make_delayed(id, deadline),
            _ => self.make_ready(id, now),
        }
        Ok(PutOutcome::Inserted(id))
    }

    // ---- placing jobs ------------------------------------------------------------

    /// Puts a job (not in any index) into its tube's ready set, and hands it to a
    /// blocked `reserve` if one waits.
    fn make_ready(&mut self, id: u64, now: Nanos) {
        let job = self.jobs.get_mut(&id).expect("job exists");
        job.state = State::Ready;
        let (pri, tube_name) = (job.pri, job.tube.clone());
        let tube = self.tube(&tube_name);
        tube.ready.insert((pri, id));
        if pri < URGENT_THRESHOLD {
            tube.urgent_ct += 1;
        }
        self.dispatch(&tube_name, now);
    }

    fn make_delayed(&mut self, id: u64, deadline: Nanos) {
        let job = self.jobs.get_mut(&id).expect("job exists");
        job.state = State::Delayed { deadline };
        let tube_name = job.tube.clone();
        self.tube(&tube_name).delayed.insert((deadline, id));
        self.delayed.insert((deadline, id));
    }

    /// `lsn` is the record that buried the job (`Bury`, or a `Fail` that killed it): the
    /// buried list is ordered by it, so kick's order survives restarts and compaction
    /// (images carry it). Without a journal, a counter stands in.
    fn make_buried(&mut self, id: u64, lsn: Option<u64>) {
        let seq = lsn.unwrap_or_else(|| {
            self.bury_seq += 1;
            self.bury_seq - 1
        });
        let job = self.jobs.get_mut(&id).expect("job exists");
        job.state = State::Buried { seq };
        let (dead, tube_name) = (job.is_dead(), job.tube.clone());
        let tube = self.tube(&tube_name);
        tube.buried.insert((seq, id));
        if dead {
            tube.dead_ct += 1;
        }
    }

    /// Takes a job out of whatever index its state puts it in. Returns its old state.
    fn detach(&mut self, id: u64) -> State {
        let job = &self.jobs[&id];
        let (state, pri, dead, tube_name) = (job.state, job.pri, job.is_dead(), job.tube.clone());
        match state {
            State::Ready => {
                let tube = self.tube(&tube_name);
                let removed = tube.ready.remove(&(pri, id));
                debug_assert!(removed, "ready job {id} missing from its tube");
                if pri < URGENT_THRESHOLD {
                    tube.urgent_ct -= 1;
                }
            }
            State::Delayed { deadline } => {
                self.tube(&tube_name).delayed.remove(&(deadline, id));
                self.delayed.remove(&(deadline, id));
            }
            State::Reserved { .. } => self.take_reserved(id),
            State::Buried { seq } => {
                let tube = self.tube(&tube_name);
                tube.buried.remove(&(seq, id));
                if dead {
                    tube.dead_ct -= 1;
                }
            }
        }
        state
    }

    /// Removes a reserved job from its connection's and the timer's sets.
    fn take_reserved(&mut self, id: u64) {
        let job = &self.jobs[&id];
        let State::Reserved { by, deadline } = job.state else {
            return;
        };
        let tube_name = job.tube.clone();
        self.reserved.remove(&(deadline, id));
        self.tube(&tube_name).reserved_ct -= 1;
        if let Some(conn) = self.conns.get_mut(&by) {
            conn.reserved.remove(&(deadline, id));
        }
        // Mark it unplaced; the caller places it.
        self.jobs.get_mut(&id).expect("job exists").state = State::Ready;
        self.refresh_soon_check(by);
    }

    /// Reserves ready job `id` (already detached) for `conn`.
    fn reserve_to(&mut self, conn: ConnId, id: u64, now: Nanos) -> Bytes {
        let job = self.jobs.get_mut(&id).expect("job exists");
        let deadline = now + job.ttr;
        job.state = State::Reserved { by: conn, deadline };
        job.counters.reserves += 1;
        job.history.attempts += 1;
        let (body, tube_name) = (job.body.clone(), job.tube.clone());
        self.tube(&tube_name).reserved_ct += 1;
        self.reserved.insert((deadline, id));
        self.conn(conn).reserved.insert((deadline, id));
        self.journal_best_effort(&Record::Reserve { id });
        body
    }

    /// Hands ready jobs of `tube_name` to its blocked connections.
    fn dispatch(&mut self, tube_name: &str, now: Nanos) {
        loop {
            let Some(tube) = self.tubes.get_mut(tube_name) else { return };
            if tube.waiting.is_empty() || tube.ready.is_empty() || tube.is_paused(now) {
                return;
            }
            let conn = *tube.waiting.front().expect("checked non-empty");
            let &(pri, id) = tube.ready.first().expect("checked non-empty");
            tube.ready.remove(&(pri, id));
            if pri < URGENT_THRESHOLD {
                tube.urgent_ct -= 1;
            }
            self.stop_waiting(conn);
            let body = self.reserve_to(conn, id, now);
            self.wakeups.push((conn, Wakeup::Reserved { id, body }));
        }
    }

    // ---- reserve -----------------------------------------------------------------

    /// beanstalkd's `conndeadlinesoon`: a reserved job's TTR ends within the margin.
    fn deadline_soon(&self, conn: ConnId, now: Nanos) -> bool {
        self.conns[&conn].reserved.first().is_some_and(|&(deadline, _)| deadline <= now + SAFETY_MARGIN)
    }

    /// The best ready job in the connection's watched, unpaused tubes: lowest priority,
    /// then lowest id.
    fn best_ready(&self, conn: ConnId, now: Nanos) -> Option<(u32, u64)> {
        let mut best: Option<(u32, u64)> = None;
        for name in &self.conns[&conn].watch {
            let tube = &self.tubes[name];
            if tube.is_paused(now) {
                continue;
            }
            if let Some(&candidate) = tube.ready.first() {
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
        best
    }

    /// `reserve` (timeout None) and `reserve-with-timeout` (seconds; negative waits
    /// forever, 0 answers at once).
    pub fn reserve(&mut self, conn: ConnId, timeout: Option<i32>, now: Nanos) -> ReserveOutcome {
        self.conn(conn).worker = true;
        let any_ready = self.conns[&conn].watch.iter().any(|t| !self.tubes[t].ready.is_empty());
        if self.deadline_soon(conn, now) && !any_ready {
            return ReserveOutcome::DeadlineSoon;
        }
        if let Some((_, id)) = self.best_ready(conn, now) {
            self.detach(id);
            let body = self.reserve_to(conn, id, now);
            return ReserveOutcome::Reserved { id, body };
        }
        let timeout_at = match timeout {
            Some(0) => return ReserveOutcome::TimedOut,
            Some(seconds) if seconds > 0 => Some(now + i64::from(seconds) * NANOS_PER_SEC),
            _ => None,
        };
        let watch = self.conns[&conn].watch.clone();
        for name in &watch {
            self.tube(name).waiting.push_back(conn);
        }
        if let Some(at) = timeout_at {
            self.wait_timeouts.insert((at, conn));
        }
        self.conn(conn).waiting = Some(Waiting { timeout_at, soon_at: None });
        self.refresh_soon_check(conn);
        ReserveOutcome::Waiting
    }

    /// Ends a blocked reserve (served, timed out, or the client went away). Returns
    /// whether the connection was waiting.
    pub fn stop_waiting(&mut self, conn: ConnId) -> bool {
        let Some(state) = self.conns.get_mut(&conn) else { return false };
        let Some(waiting) = state.waiting.take() else { return false };
        let watch = state.watch.clone();
        for name in &watch {
            let tube = self.tube(name);
            if let Some(i) = tube.waiting.iter().position(|&c| c == conn) {
                tube.waiting.remove(i);
            }
        }
        if let Some(at) = waiting.timeout_at {
            self.wait_timeouts.remove(&(at, conn));
        }
        if let Some(at) = waiting.soon_at {
            self.soon_checks.remove(&(at, conn));
        }
        true
    }

    /// Keeps the `DEADLINE_SOON` check of a waiting connection in step with its
    /// soonest reserved job.
    fn refresh_soon_check(&mut self, conn: ConnId) {
        let Some(state) = self.conns.get_mut(&conn) else { return };
        let Some(waiting) = &mut state.waiting else { return };
        let want = state.reserved.first().map(|&(deadline, _)| deadline - SAFETY_MARGIN);
        if waiting.soon_at != want {
            if let Some(old) = waiting.soon_at {
                self.soon_checks.remove(&(old, conn));
            }
            if let Some(new) = want {
                self.soon_checks.insert((new, conn));
            }
            waiting.soon_at = want;
        }
    }

    /// `reserve-job <id>`: a ready, delayed or buried job, reserved by id.
    pub fn reserve_job(&mut self, conn: ConnId, id: u64, now: Nanos) -> Option<Bytes> {
        let job = self.jobs.get(&id)?;
        if matches!(job.state, State::Reserved { .. }) {
            return None;
        }
        self.conn(conn).worker = true;
        self.detach(id);
        // Out of the buried list, out of the dead-letter state (the mark means "buried
        // and dead"); replaying the Reserve record does the same.
        self.jobs.get_mut(&id).expect("checked").history.dead = None;
        Some(self.reserve_to(conn, id, now))
    }

    fn reserved_by(&self, conn: ConnId, id: u64) -> bool {
        self.jobs.get(&id).is_some_and(|job| matches!(job.state, State::Reserved { by, .. } if by == conn))
    }

    // ---- finishing jobs ----------------------------------------------------------

    /// `delete`: a job this connection reserved, or any ready, delayed or buried job.
    pub fn delete(&mut self, conn: ConnId, id: u64, now: Nanos) -> Result<bool, JournalError> {
        let Some(job) = self.jobs.get(&id) else { return Ok(false) };
        if matches!(job.state, State::Reserved { .. }) && !self.reserved_by(conn, id) {
            return Ok(false);
        }
        self.journal(&Record::Delete { id })?;
        self.remove_job(id, now);
        Ok(true)
    }

    /// Removes a job for good (delete, purge).
    fn remove_job(&mut self, id: u64, now: Nanos) {
        self.detach(id);
        let job = self.jobs.remove(&id).expect("job exists");
        self.live_bytes -= job.footprint();
        let tube = self.tube(&job.tube);
        tube.total_deletes += 1;
        tube.jobs_ct -= 1;
        self.deleted_latencies.push((job.tube.clone(), now - job.created_at));
        self.release_tube(&job.tube);
    }

    /// `release <id> <pri> <delay>`.
    pub fn release(&mut self, conn: ConnId, id: u64, pri: u32, delay: Nanos, now: Nanos) -> Result<bool, JournalError> {
        if !self.reserved_by(conn, id) {
            return Ok(false);
        }
        let deadline = (delay > 0).then_some(now + delay);
        self.journal(&Record::Release { id, pri, delay, deadline })?;
        self.apply_release(id, pri, delay, deadline, now);
        Ok(true)
    }

    /// The change a release makes, live and at replay.
    fn apply_release(&mut self, id: u64, pri: u32, delay: Nanos, deadline: Option<Nanos>, now: Nanos) {
        self.detach(id);
        let job = self.jobs.get_mut(&id).expect("released job exists");
        job.pri = pri;
        job.delay = delay;
        job.counters.releases += 1;
        match deadline {
            Some(deadline) => self.make_delayed(id, deadline),
            None => self.make_ready(id, now),
        }
    }

    /// `bury <id> <pri>`.
    pub fn bury(&mut self, conn: ConnId, id: u64, pri: u32) -> Result<bool, JournalError> {
        if !self.reserved_by(conn, id) {
            return Ok(false);
        }
        let lsn = self.journal(&Record::Bury { id, pri })?;
        self.apply_bury(id, pri, lsn);
        Ok(true)
    }

    /// The change a bury makes, live and at replay; `lsn` orders the buried list.
    fn apply_bury(&mut self, id: u64, pri: u32, lsn: Option<u64>) {
        self.detach(id);
        let job = self.jobs.get_mut(&id).expect("buried job exists");
        job.pri = pri;
        job.counters.buries += 1;
        self.make_buried(id, lsn);
    }

    /// `touch <id>`: the TTR starts over.
    pub fn touch(&mut self, conn: ConnId, id: u64, now: Nanos) -> bool {
        if !self.reserved_by(conn, id) {
            return false;
        }
        self.take_reserved(id);
        let job = self.jobs.get_mut(&id).expect("reserved job exists");
        let deadline = now + job.ttr;
        job.state = State::Reserved { by: conn, deadline };
        self.reserved.insert((deadline, id));
        self.tube_of_mut(id).reserved_ct += 1;
        self.conn(conn).reserved.insert((deadline, id));
        self.refresh_soon_check(conn);
        true
    }

    fn tube_of_mut(&mut self, id: u64) -> &mut Tube {
        let name = self.jobs[&id].tube.clone();
        self.tube(&name)
    }

    // ---- failures and the dead-letter state --------------------------------------

    /// `fail <id> <reason>` from the worker holding the job.
    pub fn fail(&mut self, conn: ConnId, id: u64, reason: &str, now: Nanos) -> Result<FailReply, JournalError> {
        if !self.reserved_by(conn, id) {
            return Ok(FailReply::NotFound);
        }
        let outcome = self.fail_outcome(id, now);
        let lsn = self.journal(&Record::Fail { id, at: now, error: reason.to_owned(), outcome: outcome.clone() })?;
        self.take_reserved(id);
        Ok(self.apply_failure(id, now, reason, outcome, lsn))
    }

    /// A failure no client reports (TTR expiry, lost connection) on a job already
    /// detached from its reservation.
    fn fail_job(&mut self, id: u64, now: Nanos, error: &str) {
        let outcome = self.fail_outcome(id, now);
        let lsn =
            self.journal_best_effort(&Record::Fail { id, at: now, error: error.to_owned(), outcome: outcome.clone() });
        self.apply_failure(id, now, error, outcome, lsn);
    }

    /// What the tube's policy does with a failure of job `id`.
    fn fail_outcome(&mut self, id: u64, now: Nanos) -> FailOutcome {
        let job = &self.jobs[&id];
        let attempts = job.history.attempts;
        match self.tubes[&job.tube].policy {
            None => FailOutcome::Ready,
            Some(policy) => match policy.decide(attempts, job.history.failures, &mut self.rng) {
                Verdict::Dead => {
                    FailOutcome::Dead { reason: format!("max attempts ({}) reached", policy.max_attempts) }
                }
                Verdict::RetryAfterMs(0) => FailOutcome::Ready,
                Verdict::RetryAfterMs(ms) => FailOutcome::Delayed { deadline: now + ms as i64 * 1_000_000 },
            },
        }
    }

    /// Records a failure and places the (unplaced) job where `outcome` says.
    fn apply_failure(&mut self, id: u64, now: Nanos, error: &str, outcome: FailOutcome, lsn: Option<u64>) -> FailReply {
        let job = self.jobs.get_mut(&id).expect("job exists");
        let history = &mut job.history;
        if history.failures == 0 {
            history.first_failed_at = now;
        }
        history.failures += 1;
        history.last_failed_at = now;
        history.last_error = Some(error.to_owned());
        let tube = self.tube_of_mut(id);
        match outcome {
            FailOutcome::Ready => {
                tube.total_retries += 1;
                self.make_ready(id, now);
                FailReply::RetryingMs(0)
            }
            FailOutcome::Delayed { deadline } => {
                tube.total_retries += 1;
                self.make_delayed(id, deadline);
                FailReply::RetryingMs(((deadline - now) / 1_000_000).max(0) as u64)
            }
            FailOutcome::Dead { reason } => {
                tube.total_dead += 1;
                self.jobs.get_mut(&id).expect("job exists").history.dead = Some(DeadMark { at: now, reason });
                self.make_buried(id, lsn);
                FailReply::Dead
            }
        }
    }

    /// `tube-policy`: sets (or with None clears) a tube's retry policy.
    pub fn set_policy(&mut self, name: &str, policy: Option<RetryPolicy>) -> Result<(), JournalError> {
        self.journal(&Record::Policy { tube: name.to_owned(), policy })?;
        let name = self.tube_entry(name);
        self.tube(&name).policy = policy;
        self.release_tube(&name);
        Ok(())
    }

    /// `purge-dead <tube>` and the HTTP purge: deletes every dead job of the tube.
    pub fn purge_dead(&mut self, name: &str, now: Nanos) -> Result<usize, JournalError> {
        let ids = self.dead_jobs(Some(name));
        for &id in &ids {
            self.journal(&Record::Delete { id })?;
            self.remove_job(id, now);
        }
        Ok(ids.len())
    }

    /// Dead jobs, oldest first, of one tube or all.
    pub fn dead_jobs(&self, tube: Option<&str>) -> Vec<u64> {
        let mut ids = Vec::new();
        for name in &self.tube_order {
            if tube.is_some_and(|t| t != &**name) {
                continue;
            }
            let t = &self.tubes[name];
            if t.dead_ct == 0 {
                continue;
            }
            ids.extend(t.buried.iter().map(|&(_, id)| id).filter(|id| self.jobs[id].is_dead()));
        }
        ids
    }

    pub fn job(&self, id: u64) -> Option<&Job> {
        self.jobs.get(&id)
    }

    // ---- kick --------------------------------------------------------------------

    /// `kick <bound>` on the used tube: buried jobs if there are any, else delayed ones.
    pub fn kick(&mut self, conn: ConnId, bound: u32, now: Nanos) -> Result<u32, JournalError> {
        let name = self.conns[&conn].use_tube.clone();
        let mut kicked = 0;
        let from_buried = !self.tubes[&name].buried.is_empty();
        while kicked < bound {
            let tube = &self.tubes[&name];
            let next = if from_buried {
                tube.buried.first().map(|&(_, id)| id)
            } else {
                tube.delayed.first().map(|&(_, id)| id)
            };
            let Some(id) = next else { break };
            self.kick_one(id, now)?;
            kicked += 1;
        }
        Ok(kicked)
    }

    /// `kick-job <id>`: a buried (or dead) or delayed job to ready.
    pub fn kick_job(&mut self, id: u64, now: Nanos) -> Result<bool, JournalError> {
        match self.jobs.get(&id).map(|j| j.state) {
            Some(State::Buried { .. } | State::Delayed { .. }) => {
                self.kick_one(id, now)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Replays every dead job of one tube or all; returns how many.
    pub fn replay_dead(&mut self, tube: Option<&str>, now: Nanos) -> Result<usize, JournalError> {
        let ids = self.dead_jobs(tube);
        for &id in &ids {
            self.kick_one(id, now)?;
        }
        Ok(ids.len())
    }

    fn kick_one(&mut self, id: u64, now: Nanos) -> Result<(), JournalError> {
        self.journal(&Record::Kick { id })?;
        self.apply_kick(id, now);
        Ok(())
    }

    /// The change a kick makes, live and at replay.
    fn apply_kick(&mut self, id: u64, now: Nanos) {
        self.detach(id);
        let job = self.jobs.get_mut(&id).expect("kicked job exists");
        job.counters.kicks += 1;
        if job.history.dead.take().is_some() {
            // A replay from the dead-letter state: a fresh set of attempts.
            job.history.attempts = 0;
        }
        self.make_ready(id, now);
    }

    // ---- peek --------------------------------------------------------------------

    pub fn peek(&self, id: u64) -> Option<Bytes> {
        self.jobs.get(&id).map(|j| j.body.clone())
    }

    pub fn peek_ready(&self, conn: ConnId) -> Option<(u64, Bytes)> {
        let tube = &self.tubes[&self.conns[&conn].use_tube];
        tube.ready.first().map(|&(_, id)| (id, self.jobs[&id].body.clone()))
    }

    pub fn peek_delayed(&self, conn: ConnId) -> Option<(u64, Bytes)> {
        let tube = &self.tubes[&self.conns[&conn].use_tube];
        tube.delayed.first().map(|&(_, id)| (id, self.jobs[&id].body.clone()))
    }

    pub fn peek_buried(&self, conn: ConnId) -> Option<(u64, Bytes)> {
        let tube = &self.tubes[&self.conns[&conn].use_tube];
        tube.buried.first().map(|&(_, id)| (id, self.jobs[&id].body.clone()))
    }

    /// `pause-tube <name> <seconds>`: false if no such tube.
    pub fn pause_tube(&mut self, name: &str, delay: Nanos, now: Nanos) -> bool {
        let Some(tube) = self.tubes.get_mut(name) else { return false };
        // beanstalkd pauses for at least a nanosecond so waiters wake when it ends.
        let delay = delay.max(1);
        if tube.pause > 0 {
            self.pauses.remove(&(tube.unpause_at, tube.name.clone()));
        }
        tube.pause = delay;
        tube.unpause_at = now + delay;
        tube.pause_ct += 1;
        self.pauses.insert((tube.unpause_at, tube.name.clone()));
        true
    }

    // ---- timers ------------------------------------------------------------------

    /// When [`tick`](Self::tick) next has work, if ever.
    pub fn next_wakeup(&self) -> Option<Nanos> {
        [
            self.delayed.first().map(|&(at, _)| at),
            self.reserved.first().map(|&(at, _)| at),
            self.wait_timeouts.first().map(|&(at, _)| at),
            self.soon_checks.first().map(|&(at, _)| at),
            self.pauses.first().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Processes everything due at `now`: delayed jobs become ready, paused tubes
    /// resume, reservations whose TTR ran out are taken back (and fail under a policy),
    /// and blocked reserves hear `DEADLINE_SOON` or `TIMED_OUT`.
    pub fn tick(&mut self, now: Nanos) {
        while let Some(&(deadline, id)) = self.delayed.first() {
            if deadline > now {
                break;
            }
            self.detach(id);
            self.make_ready(id, now);
        }
        while let Some((at, name)) = self.pauses.first().cloned() {
            if at > now {
                break;
            }
            self.pauses.remove(&(at, name.clone()));
            if let Some(tube) = self.tubes.get_mut(&name) {
                tube.pause = 0;
                self.dispatch(&name, now);
            }
        }
        // DEADLINE_SOON for waiting connections, checked before expiring jobs as
        // beanstalkd's conn_timeout does.
        while let Some(&(at, conn)) = self.soon_checks.first() {
            if at > now {
                break;
            }
            self.stop_waiting(conn);
            self.wakeups.push((conn, Wakeup::DeadlineSoon));
        }
        while let Some(&(deadline, id)) = self.reserved.first() {
            if deadline > now {
                break;
            }
            self.take_reserved(id);
            self.totals.job_timeouts += 1;
            self.jobs.get_mut(&id).expect("reserved job exists").counters.timeouts += 1;
            let tube = self.jobs[&id].tube.clone();
            // Journaled under a policy too: the Fail record below does not count timeouts.
            self.journal_best_effort(&Record::Timeout { id });
            if self.tubes[&tube].policy.is_some() {
                self.fail_job(id, now, "TTR expired");
            } else {
                self.make_ready(id, now);
            }
        }
        while let Some(&(at, conn)) = self.wait_timeouts.first() {
            if at > now {
                break;
            }
            self.stop_waiting(conn);
            self.wakeups.push((conn, Wakeup::TimedOut));
        }
        if now - self.last_unique_sweep >= UNIQUE_SWEEP_EVERY {
            self.last_unique_sweep = now;
            self.sweep_unique_keys(now);
        }
    }

    fn sweep_unique_keys(&mut self, now: Nanos) {
        let names: Vec<Arc<str>> =
            self.tubes.values().filter(|t| !t.unique.is_empty()).map(|t| t.name.clone()).collect();
        for name in names {
            self.tube(&name).unique.retain(|_, &mut (until, _)| until > now);
            self.release_tube(&name);
        }
    }

    // ---- recovery and compaction -------------------------------------------------

    /// Applies one record read back from the log at start. `lsn` is its position.
    /// Records about jobs that no longer exist are skipped: compaction can leave a
    /// change record behind whose job image it has already rewritten further on.
    pub fn replay(&mut self, record: Record, lsn: u64) {
        let now = 0; // nothing is dispatched during replay: no connection exists yet
        match record {
            Record::Image(image) => {
                // A compaction rewrite of a job whose earlier image is still here
                // replaces it; it is not a new job.
                let rewrite = self.jobs.contains_key(&image.id);
                if rewrite {
                    self.remove_job_silently(image.id);
                }
                let tube = self.tube_entry(&image.tube);
                let job = Job {
                    id: image.id,
                    tube: tube.clone(),
                    pri: image.pri,
                    delay: image.delay,
                    ttr: image.ttr,
                    created_at: image.created_at,
                    body: image.body,
                    state: State::Ready,
                    counters: image.counters,
                    history: image.history,
                    image_lsn: lsn,
                };
                self.next_id = self.next_id.max(image.id + 1);
                self.live_bytes += job.footprint();
                self.jobs.insert(image.id, job);
                let t = self.tube(&tube);
                t.jobs_ct += 1;
                if !rewrite {
                    t.total_jobs += 1;
                    self.totals.total_jobs += 1;
                }
                match image.state {
                    ImageState::Ready => self.make_ready(image.id, now),
                    ImageState::Delayed { deadline } => self.make_delayed(image.id, deadline),
                    ImageState::Buried { order } => self.make_buried(image.id, Some(order)),
                }
            }
            Record::Delete { id } => {
                if self.jobs.contains_key(&id) {
                    self.remove_job_silently(id);
                }
            }
            Record::Release { id, pri, delay, deadline } => {
                if self.jobs.contains_key(&id) {
                    self.apply_release(id, pri, delay, deadline, now);
                }
            }
            Record::Bury { id, pri } => {
                if self.jobs.contains_key(&id) {
                    self.apply_bury(id, pri, Some(lsn));
                }
            }
            Record::Kick { id } => {
                if self.jobs.contains_key(&id) {
                    self.apply_kick(id, now);
                }
            }
            Record::Reserve { id } => {
                let Some(job) = self.jobs.get(&id) else { return };
                if job.state != State::Ready {
                    // reserve-job from delayed or buried (or a delayed job the timer made
                    // ready, which writes no record): a reserved job comes back ready.
                    self.detach(id);
                    self.jobs.get_mut(&id).expect("checked").history.dead = None;
                    self.make_ready(id, now);
                }
                let job = self.jobs.get_mut(&id).expect("checked");
                job.counters.reserves += 1;
                job.history.attempts += 1;
            }
            Record::Timeout { id } => {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.counters.timeouts += 1;
                    self.totals.job_timeouts += 1;
                }
            }
            Record::Fail { id, at, error, outcome } => {
                if !self.jobs.contains_key(&id) {
                    return;
                }
                self.detach(id);
                self.apply_failure(id, at, &error, outcome, Some(lsn));
            }
            Record::Policy { tube, policy } => {
                let name = self.tube_entry(&tube);
                self.tube(&name).policy = policy;
                self.release_tube(&name);
            }
            Record::Unique { tube, key, expires_at, job } => {
                let name = self.tube_entry(&tube);
                self.tube(&name).unique.insert(key, (expires_at, job));
            }
            Record::NextId { next } => self.next_id = self.next_id.max(next),
        }
    }

    /// Removes a job during replay without counting a delete.
    fn remove_job_silently(&mut self, id: u64) {
        self.detach(id);
        let job = self.jobs.remove(&id).expect("caller checked");
        self.live_bytes -= job.footprint();
        let tube = self.tube(&job.tube);
        tube.jobs_ct -= 1;
        self.release_tube(&job.tube);
    }

    /// After replay: the counters a restart should not inherit start from zero, and the
    /// unique-key sweep starts now.
    pub fn finish_recovery(&mut self, now: Nanos) {
        self.deleted_latencies.clear();
        self.last_unique_sweep = now;
        self.sweep_unique_keys(now);
    }

    /// Jobs whose whole image lies before `lsn`: what compaction must rewrite before the
    /// segments before `lsn` can be deleted.
    pub fn jobs_imaged_before(&self, lsn: u64) -> Vec<u64> {
        self.jobs.values().filter(|j| j.image_lsn < lsn).map(|j| j.id).collect()
    }

    /// Compaction: appends the current image of job `id` (if it still exists and still
    /// needs it) and points the job at it.
    pub fn rewrite_image(&mut self, id: u64, before: u64) -> Result<(), JournalError> {
        let Some(job) = self.jobs.get(&id) else { return Ok(()) };
        if job.image_lsn >= before {
            return Ok(());
        }
        let record = Record::Image(image_of(job));
        if let Some(lsn) = self.journal(&record)? {
            self.jobs.get_mut(&id).expect("checked").image_lsn = lsn;
            if let Some(journal) = &mut self.journal {
                journal.records_migrated += 1;
            }
        }
        Ok(())
    }

    /// Compaction: appends the state that lives outside job images (policies, unique
    /// keys, the id counter). Returns the last LSN written.
    pub fn rewrite_metadata(&mut self, now: Nanos) -> Result<Option<u64>, JournalError> {
        let mut records = vec![Record::NextId { next: self.next_id }];
        for name in &self.tube_order {
            let tube = &self.tubes[name];
            if tube.policy.is_some() {
                records.push(Record::Policy { tube: name.to_string(), policy: tube.policy });
            }
            for (key, &(until, job)) in &tube.unique {
                if until > now {
                    records.push(Record::Unique { tube: name.to_string(), key: key.clone(), expires_at: until, job });
                }
            }
        }
        let mut last = None;
        for record in &records {
            last = self.journal(record)?;
        }
        Ok(last)
    }

    /// Checks the indexes against the jobs: every job is in exactly the index its state
    /// names, and the counters agree. For tests and debug builds; O(jobs).
    pub fn check_invariants(&self) {
        let mut ready = 0;
        let mut reserved = 0;
        let mut delayed = 0;
        let mut buried = 0;
        for job in self.jobs.values() {
            let tube = &self.tubes[&job.tube];
            match job.state {
                State::Ready => {
                    ready += 1;
                    assert!(tube.ready.contains(&(job.pri, job.id)), "ready job {} not in its tube", job.id);
                }
                State::Delayed { deadline } => {
                    delayed += 1;
                    assert!(tube.delayed.contains(&(deadline, job.id)));
                    assert!(self.delayed.contains(&(deadline, job.id)));
                }
                State::Reserved { by, deadline } => {
                    reserved += 1;
                    assert!(self.reserved.contains(&(deadline, job.id)));
                    assert!(self.conns[&by].reserved.contains(&(deadline, job.id)));
                }
                State::Buried { seq } => {
                    buried += 1;
                    assert!(tube.buried.contains(&(seq, job.id)));
                }
            }
        }
        let sum = |f: fn(&Tube) -> usize| self.tubes.values().map(f).sum::<usize>();
        assert_eq!(ready, sum(|t| t.ready.len()));
        assert_eq!(delayed, sum(|t| t.delayed.len()));
        assert_eq!(delayed, self.delayed.len());
        assert_eq!(buried, sum(|t| t.buried.len()));
        assert_eq!(reserved, self.reserved.len());
        assert_eq!(reserved as u64, self.tubes.values().map(|t| t.reserved_ct).sum::<u64>());
        assert_eq!(self.jobs.len() as u64, self.tubes.values().map(|t| t.jobs_ct).sum::<u64>());
        assert_eq!(self.tube_order.len(), self.tubes.len());
        for tube in self.tubes.values() {
            assert_eq!(tube.dead_ct as usize, tube.buried.iter().filter(|(_, id)| self.jobs[id].is_dead()).count());
        }
    }
}

/// The record that holds a job whole. Reserved jobs are imaged as ready: that is what
/// they become after a restart.
fn image_of(job: &Job) -> JobImage {
    let state = match job.state {
        State::Ready | State::Reserved { .. } => ImageState::Ready,
        State::Delayed { deadline } => ImageState::Delayed { deadline },
        State::Buried { seq } => ImageState::Buried { order: seq },
    };
    JobImage {
        id: job.id,
        tube: job.tube.to_string(),
        pri: job.pri,
        delay: job.delay,
        ttr: job.ttr,
        created_at: job.created_at,
        state,
        counters: job.counters,
        history: job.history.clone(),
        body: job.body.clone(),
    }
}
