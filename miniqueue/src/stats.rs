//! The YAML bodies of `stats`, `stats-tube`, `stats-job` and the `list-tubes` family,
//! formatted exactly as beanstalkd 1.12 formats them (same keys, same order, same
//! number formats, a `---` header and no trailing CRLF: the reply adds it).
//!
//! miniqueue's own keys (retry history, dead-letter state, retry policy) are appended
//! after beanstalkd's, and only for jobs and tubes that use those features, so a plain
//! beanstalk workload sees byte-identical stats.

use std::fmt::Write;

use crate::engine::Engine;
use crate::job::{Job, Nanos, State, NANOS_PER_SEC};
use crate::protocol::{Op, OP_COUNT};
use crate::tube::Tube;

/// Facts about the process and its write-ahead log that `stats` reports but the engine
/// does not own.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub pid: u32,
    pub version: String,
    pub started_at: Nanos,
    /// `-z`.
    pub max_job_size: usize,
    /// `-s`.
    pub wal_file_size: u64,
    pub draining: bool,
    /// 16 hex digits, random per start.
    pub instance_id: String,
    pub hostname: String,
    pub os: String,
    pub platform: String,
    /// Oldest and current WAL segment numbers (0 without `-b`).
    pub wal_oldest: u64,
    pub wal_current: u64,
    /// (current, total) client connections as the server counts them, at accept; None
    /// counts the engine's (tests that drive an engine without a server).
    pub connections: Option<(usize, u64)>,
}

/// Seconds, truncated toward zero like beanstalkd's integer division.
fn secs(nanos: Nanos) -> i64 {
    nanos / NANOS_PER_SEC
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `stats-job`.
pub fn job_yaml(job: &Job, now: Nanos) -> String {
    let time_left = match job.state {
        State::Reserved { deadline, .. } | State::Delayed { deadline } => secs(deadline - now),
        _ => 0,
    };
    let c = &job.counters;
    let mut out = format!(
        "---\nid: {}\ntube: {}\nstate: {}\npri: {}\nage: {}\ndelay: {}\nttr: {}\ntime-left: {}\nfile: 0\nreserves: {}\ntimeouts: {}\nreleases: {}\nburies: {}\nkicks: {}\n",
        job.id,
        job.tube,
        job.state_name(),
        job.pri,
        secs(now - job.created_at),
        secs(job.delay),
        secs(job.ttr),
        time_left,
        c.reserves,
        c.timeouts,
        c.releases,
        c.buries,
        c.kicks,
    );
    let h = &job.history;
    if h.is_visible() {
        let _ = write!(
            out,
            "attempts: {}\nfailures: {}\nlast-error: {}\nfirst-failed-at: {}\nlast-failed-at: {}\ndead: {}\n",
            h.attempts,
            h.failures,
            quoted(h.last_error.as_deref().unwrap_or("")),
            secs(h.first_failed_at),
            secs(h.last_failed_at),
            h.dead.is_some(),
        );
        if let Some(mark) = &h.dead {
            let _ = write!(out, "dead-at: {}\ndead-reason: {}\n", secs(mark.at), quoted(&mark.reason));
        }
    }
    out
}

/// `stats-tube`.
pub fn tube_yaml(tube: &Tube, now: Nanos) -> String {
    let pause_time_left = if tube.pause > 0 { secs(tube.unpause_at - now) } else { 0 };
    let waiting = tube.waiting.len();
    let mut out = format!(
        "---\nname: {}\ncurrent-jobs-urgent: {}\ncurrent-jobs-ready: {}\ncurrent-jobs-reserved: {}\ncurrent-jobs-delayed: {}\ncurrent-jobs-buried: {}\ntotal-jobs: {}\ncurrent-using: {}\ncurrent-watching: {}\ncurrent-waiting: {}\ncmd-delete: {}\ncmd-pause-tube: {}\npause: {}\npause-time-left: {}\n",
        tube.name,
        tube.urgent_ct,
        tube.ready.len(),
        tube.reserved_ct,
        tube.delayed.len(),
        tube.buried.len(),
        tube.total_jobs,
        tube.using_ct,
        tube.watching_ct,
        waiting,
        tube.total_deletes,
        tube.pause_ct,
        secs(tube.pause),
        pause_time_left,
    );
    if tube.shows_extensions() {
        let _ = writeln!(out, "current-jobs-dead: {}", tube.dead_ct);
        match &tube.policy {
            Some(p) => {
                let _ = write!(
                    out,
                    "retry-max-attempts: {}\nretry-backoff: {}\nretry-base-ms: {}\nretry-cap-ms: {}\n",
                    p.max_attempts,
                    p.backoff_name(),
                    p.base_ms,
                    p.cap_ms
                );
            }
            None => out.push_str("retry-max-attempts: 0\nretry-backoff: none\nretry-base-ms: 0\nretry-cap-ms: 0\n"),
        }
        let _ = write!(out, "total-retries: {}\ntotal-dead: {}\n", tube.total_retries, tube.total_dead);
    }
    out
}

/// `list-tubes` and `list-tubes-watched`.
pub fn list_yaml<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("---\n");
    for name in names {
        let _ = writeln!(out, "- {name}");
    }
    out
}

/// CPU time of this process, as (user, system) `seconds.micros` strings.
fn rusage() -> (String, String) {
    // SAFETY: getrusage writes into the zeroed struct we pass and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer; a failure leaves zeros, which is fine.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let fmt = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
    (fmt(usage.ru_utime), fmt(usage.ru_stime))
}

/// `stats`.
pub fn server_yaml(engine: &Engine, ops: &[u64; OP_COUNT], facts: &ServerFacts, now: Nanos) -> String {
    let op = |o: Op| ops[o as usize];
    let (mut urgent, mut ready, mut reserved, mut delayed, mut buried, mut waiting) =
        (0u64, 0usize, 0u64, 0usize, 0usize, 0usize);
    for tube in engine.tubes.values() {
        urgent += tube.urgent_ct;
        ready += tube.ready.len();
        reserved += tube.reserved_ct;
        delayed += tube.delayed.len();
        buried += tube.buried.len();
    }
    let (mut producers, mut workers) = (0, 0);
    for conn in engine.conns.values() {
        producers += usize::from(conn.producer);
        workers += usize::from(conn.worker);
        waiting += usize::from(conn.waiting.is_some());
    }
    let (records_written, records_migrated) =
        engine.journal.as_ref().map_or((0, 0), |j| (j.records_written, j.records_migrated));
    let (utime, stime) = rusage();
    format!(
        "---\n\
         current-jobs-urgent: {urgent}\n\
         current-jobs-ready: {ready}\n\
         current-jobs-reserved: {reserved}\n\
         current-jobs-delayed: {delayed}\n\
         current-jobs-buried: {buried}\n\
         cmd-put: {}\n\
         cmd-peek: {}\n\
         cmd-peek-ready: {}\n\
         cmd-peek-delayed: {}\n\
         cmd-peek-buried: {}\n\
         cmd-reserve: {}\n\
         cmd-reserve-with-timeout: {}\n\
         cmd-delete: {}\n\
         cmd-release: {}\n\
         cmd-use: {}\n\
         cmd-watch: {}\n\
         cmd-ignore: {}\n\
         cmd-bury: {}\n\
         cmd-kick: {}\n\
         cmd-touch: {}\n\
         cmd-stats: {}\n\
         cmd-stats-job: {}\n\
         cmd-stats-tube: {}\n\
         cmd-list-tubes: {}\n\
         cmd-list-tube-used: {}\n\
         cmd-list-tubes-watched: {}\n\
         cmd-pause-tube: {}\n\
         job-timeouts: {}\n\
         total-jobs: {}\n\
         max-job-size: {}\n\
         current-tubes: {}\n\
         current-connections: {}\n\
         current-producers: {producers}\n\
         current-workers: {workers}\n\
         current-waiting: {waiting}\n\
         total-connections: {}\n\
         pid: {}\n\
         version: \"{}\"\n\
         rusage-utime: {utime}\n\
         rusage-stime: {stime}\n\
         uptime: {}\n\
         binlog-oldest-index: {}\n\
         binlog-current-index: {}\n\
         binlog-records-migrated: {records_migrated}\n\
         binlog-records-written: {records_written}\n\
         binlog-max-size: {}\n\
         draining: {}\n\
         id: {}\n\
         hostname: {}\n\
         os: {}\n\
         platform: {}\n",
        op(Op::Put),
        op(Op::Peek),
        op(Op::PeekReady),
        op(Op::PeekDelayed),
        op(Op::PeekBuried),
        op(Op::Reserve),
        op(Op::ReserveWithTimeout),
        op(Op::Delete),
        op(Op::Release),
        op(Op::Use),
        op(Op::Watch),
        op(Op::Ignore),
        op(Op::Bury),
        op(Op::Kick),
        op(Op::Touch),
        op(Op::Stats),
        op(Op::StatsJob),
        op(Op::StatsTube),
        op(Op::ListTubes),
        op(Op::ListTubeUsed),
        op(Op::ListTubesWatched),
        op(Op::PauseTube),
        engine.totals.job_timeouts,
        engine.totals.total_jobs,
        facts.max_job_size,
        engine.tubes.len(),
        facts.connections.map_or(engine.conns.len(), |(current, _)| current),
        facts.connections.map_or(engine.totals.total_connections, |(_, total)| total),
        facts.pid,
        facts.version,
        secs(now - facts.started_at).max(0),
        facts.wal_oldest,
        facts.wal_current,
        facts.wal_file_size,
        facts.draining,
        facts.instance_id,
        facts.hostname,
        facts.os,
        facts.platform,
    )
}

/// `uname(2)`'s node name, version and machine, as beanstalkd reports them.
pub fn uname() -> (String, String, String) {
    // SAFETY: uname fills the zeroed struct; on failure it stays zeroed (empty strings).
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname.
    unsafe { libc::uname(&mut name) };
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&name.nodename), field(&name.version), field(&name.machine))
}
